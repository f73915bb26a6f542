-- Signed receipts (erasure, opt-out, access) and the public portal's requests of a cluster
-- deployment: the embedded governance.sqlite `receipt` table and public_requests.sqlite in
-- PostgreSQL. Every receipt is also in the audit log (action `receipt`), written in the same
-- transaction.
CREATE TABLE receipt (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    -- Unix milliseconds.
    issued_at BIGINT NOT NULL,
    -- The whole signed receipt (visage_governance::Receipt) as JSON.
    json TEXT NOT NULL
);

-- Receipts are statements already given out: never changed.
CREATE FUNCTION visage_receipt_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'receipts cannot be changed or deleted';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER receipt_immutable BEFORE UPDATE OR DELETE ON receipt
    FOR EACH ROW EXECUTE FUNCTION visage_receipt_immutable();

-- Public opt-out and access requests: id (the requester's secret), what was done, the
-- contact address (erasable, unlike the audit log), never the selfies.
CREATE TABLE public_request (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('opt_out', 'access')),
    status TEXT NOT NULL,
    -- Unix milliseconds.
    created_at BIGINT NOT NULL,
    contact TEXT NOT NULL,
    receipt_id TEXT REFERENCES receipt (id),
    summary TEXT NOT NULL
);
