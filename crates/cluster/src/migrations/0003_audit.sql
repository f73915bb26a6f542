-- The audit log of a cluster deployment: one hash chain shared by every API process, in the
-- governance crate's format (crates/governance/src/audit.rs), so an export verifies with
-- `visage audit verify --file EXPORT.jsonl --public-key HEX`. Appends lock `audit_head`
-- (SELECT ... FOR UPDATE), which gives the chain one total order.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY CHECK (seq > 0),
    ts BIGINT NOT NULL,
    actor_user_id BIGINT,
    actor TEXT NOT NULL,
    org_id BIGINT,
    case_id BIGINT,
    action TEXT NOT NULL,
    object_ids JSONB NOT NULL,
    allowed BOOLEAN NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    result_count BIGINT,
    probe_sha256 TEXT,
    -- The canonical JSON text of the details object, exactly as hashed.
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_case ON audit_log (case_id) WHERE case_id IS NOT NULL;
CREATE INDEX audit_log_org_action_ts ON audit_log (org_id, action, ts);

-- The chain's head: the last record's seq and hash (seq 0 and the genesis hash when empty),
-- and the public key (hex) of the checkpoint signing key, set by the first append: a process
-- with another key is refused, since its checkpoints would not verify.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    public_key TEXT
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Signed checkpoints: Ed25519 over "visage-audit-checkpoint\n{seq}\n{hash}".
CREATE TABLE audit_checkpoint (
    seq BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Append-only for the application: records and checkpoints cannot be changed or removed, nor
-- the tables truncated, nor the head row removed. A superuser (or the tables' owner) can still disable the triggers and
-- tamper; that is what verification (the hash chain and the signed checkpoints) detects.
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only (% on %)', TG_OP, TG_TABLE_NAME;
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoint_append_only BEFORE UPDATE OR DELETE ON audit_checkpoint
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON audit_checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
