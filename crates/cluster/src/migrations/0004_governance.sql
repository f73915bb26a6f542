-- Organisations, the keys' organisation and role, and cases of a cluster deployment: the
-- embedded governance model (crates/governance) in PostgreSQL, so every API process decides
-- by the same facts with the same code (`visage_governance::decide`).
CREATE TABLE organisation (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('law_enforcement', 'government', 'private', 'research')),
    -- ISO 3166-1 alpha-2 or ISO 3166-2, upper case.
    jurisdiction TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('trial', 'active', 'suspended')),
    -- Unix seconds.
    trial_expires_at BIGINT,
    -- Searches per calendar month (UTC); NULL: unlimited.
    search_quota BIGINT CHECK (search_quota >= 0),
    created_at BIGINT NOT NULL
);

-- Keys now carry a governance role and belong to an organisation. Keys made before this
-- migration keep working where the policy allows: admin and operator keys become admin,
-- viewer keys auditor; they belong to no organisation until given one, and a key without an
-- organisation is refused everything but health.
ALTER TABLE api_key DROP CONSTRAINT api_key_role_check;
UPDATE api_key SET role = CASE role WHEN 'viewer' THEN 'auditor' ELSE 'admin' END;
ALTER TABLE api_key ADD CONSTRAINT api_key_role_check
    CHECK (role IN ('admin', 'investigator', 'auditor', 'compliance'));
ALTER TABLE api_key ADD COLUMN org_id BIGINT REFERENCES organisation (id);

-- Every search is made under an open case of the caller's organisation.
CREATE TABLE case_file (
    id BIGSERIAL PRIMARY KEY,
    org_id BIGINT NOT NULL REFERENCES organisation (id),
    number TEXT NOT NULL,
    purpose TEXT NOT NULL,
    legal_basis TEXT NOT NULL,
    offence_category TEXT NOT NULL,
    -- The api_key id that opened it.
    created_by BIGINT NOT NULL,
    -- Unix seconds.
    created_at BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    closed_at BIGINT,
    UNIQUE (org_id, number)
);
