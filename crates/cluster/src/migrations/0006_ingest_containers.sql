-- Ingest items of every kind the embedded ingest reads: besides image files, videos (frames
-- sampled and tracked), archives and web archives (their members) and manifests (their
-- rows). A queue item is still one input file; its units (members, rows, the video) are
-- counted on the item and each unit that failed is listed in ingest_failure.
ALTER TABLE ingest_item ADD COLUMN kind TEXT NOT NULL DEFAULT 'file'
    CHECK (kind IN ('file', 'video', 'archive', 'warc', 'manifest'));
-- Units seen, already stored (content hash) and failed, once the item is finished.
ALTER TABLE ingest_item ADD COLUMN units INTEGER;
ALTER TABLE ingest_item ADD COLUMN units_known INTEGER;
ALTER TABLE ingest_item ADD COLUMN units_failed INTEGER;

-- One row per failed unit of a finished item, and per warning (a video whose decoding
-- stopped early: the frames before were stored); replaced when the item is done again.
CREATE TABLE ingest_failure (
    id BIGSERIAL PRIMARY KEY,
    item_id BIGINT NOT NULL REFERENCES ingest_item(id),
    job_id BIGINT NOT NULL REFERENCES ingest_job(id),
    severity TEXT NOT NULL DEFAULT 'failed' CHECK (severity IN ('failed', 'warning')),
    location TEXT NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX ingest_failure_item ON ingest_failure (item_id);
CREATE INDEX ingest_failure_job ON ingest_failure (job_id, id);
