-- Opt-outs announced before they change anything (visage_cluster::pending). An opt-out
-- changes the gallery in several transactions (suppression entries, then deletions); the
-- API process that runs it holds a session advisory lock named after the request and records
-- it (receipt, audit record, public request) in one transaction that also drops this row.
-- A row whose lock nobody holds belongs to a process that died: another API process finishes
-- and records it from the suppression list's entries of the request.
CREATE TABLE pending_opt_out (
    request_id TEXT PRIMARY KEY,
    pack TEXT NOT NULL,
    selfies BIGINT NOT NULL,
    contact TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The report of each deletion an opt-out made, written in that deletion's transaction, so
-- its record counts what left even across an interruption.
CREATE TABLE opt_out_journal (
    request_id TEXT NOT NULL,
    seq BIGSERIAL,
    report TEXT NOT NULL,
    PRIMARY KEY (request_id, seq)
);
