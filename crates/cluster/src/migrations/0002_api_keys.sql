-- API keys of the cluster HTTP API (stored as sha256; the key itself is shown once).
CREATE TABLE api_key (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_sha256 TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
