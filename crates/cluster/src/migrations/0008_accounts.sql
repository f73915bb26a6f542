-- User accounts of the cluster API (the embedded server's model): a user belongs to an
-- organisation, has a role and optionally a password (argon2id PHC string), signs in for a
-- session, and may own API keys. A user's id comes from the keys' sequence, so principal ids
-- (keys without a user, and users) never collide in the audit log and in `case_file.created_by`.
CREATE TABLE app_user (
    id BIGINT PRIMARY KEY DEFAULT nextval('api_key_id_seq'),
    org_id BIGINT NOT NULL REFERENCES organisation (id),
    username TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'investigator', 'auditor', 'compliance')),
    password_hash TEXT,
    disabled BOOLEAN NOT NULL DEFAULT false,
    -- Unix seconds.
    created_at BIGINT NOT NULL
);
-- A key owned by a user acts as that user (the key's role, the user's organisation) and stops
-- working while the user is disabled.
ALTER TABLE api_key ADD COLUMN user_id BIGINT REFERENCES app_user (id);
-- Sessions of `POST /v1/auth/login`, shared by every API process: only the token's SHA-256.
CREATE TABLE web_session (
    token_sha256 TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES app_user (id),
    -- Unix seconds.
    expires_at BIGINT NOT NULL
);
CREATE INDEX web_session_user ON web_session (user_id);
