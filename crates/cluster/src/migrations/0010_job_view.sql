-- The embedded server's job view on the cluster (web app's collections page): what each
-- finished item did, in the embedded ingest's counters (`visage_engine::IngestCounts`:
-- images indexed, duplicates, images without faces, videos, faces indexed, faces rejected
-- by reason, errors by code), summed per job when read.
ALTER TABLE ingest_item ADD COLUMN counts JSONB;
-- When a worker first claimed one of the job's items.
ALTER TABLE ingest_job ADD COLUMN started_at BIGINT;
-- Cancellation: queued items end as failed (`cancelled`), items in flight finish, and the
-- job's status becomes `cancelled` once nothing of it is open.
ALTER TABLE ingest_job ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false;
