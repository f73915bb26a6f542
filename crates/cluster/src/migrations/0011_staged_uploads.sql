-- Uploads over the cluster API: each uploaded file is staged in the bucket
-- (`{prefix}uploads/{job}/{name}`) and queued as an item that names its object. The
-- item's `location` is what reports and provenance show (`upload:{job}/{name}`); the worker
-- that claims it downloads the object, and the object is removed once the item has ended.
ALTER TABLE ingest_item ADD COLUMN staged_key TEXT;
CREATE INDEX ingest_item_staged ON ingest_item (staged_key) WHERE staged_key IS NOT NULL;
