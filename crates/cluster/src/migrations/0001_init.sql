-- visage cluster metadata, version 1. Vectors are kept here too (the source of truth; the
-- vector index is derived from them), blobs live in the S3 bucket under their sha256.
CREATE TABLE collection (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    pack TEXT NOT NULL,
    dim INTEGER NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE source (
    id BIGSERIAL PRIMARY KEY,
    collection_id BIGINT NOT NULL REFERENCES collection(id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    uri TEXT,
    legal_basis TEXT,
    licence TEXT,
    jurisdiction TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (collection_id, name)
);
CREATE TABLE subject (
    id BIGSERIAL PRIMARY KEY,
    collection_id BIGINT NOT NULL REFERENCES collection(id),
    label TEXT NOT NULL,
    attributes JSONB NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    UNIQUE (collection_id, label)
);
CREATE TABLE image (
    id BIGSERIAL PRIMARY KEY,
    collection_id BIGINT NOT NULL REFERENCES collection(id),
    source_id BIGINT NOT NULL REFERENCES source(id),
    sha256 TEXT NOT NULL,
    uri TEXT,
    page_uri TEXT,
    captured_at BIGINT,
    gps_lat DOUBLE PRECISION,
    gps_lon DOUBLE PRECISION,
    jurisdiction TEXT,
    jurisdiction_method TEXT,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    faces_rejected INTEGER NOT NULL DEFAULT 0,
    original_sha TEXT,
    external_id TEXT,
    licence TEXT,
    legal_basis TEXT,
    ingested_at BIGINT NOT NULL,
    UNIQUE (collection_id, sha256)
);
CREATE INDEX image_source ON image (source_id);
CREATE INDEX image_jurisdiction ON image (jurisdiction);
CREATE INDEX image_original ON image (original_sha) WHERE original_sha IS NOT NULL;
-- Face ids come from this sequence before the row is written (the vector index is written
-- first under the same id); ids are never reused, so a deleted id never comes back.
CREATE SEQUENCE face_id_seq;
CREATE TABLE face (
    id BIGINT PRIMARY KEY,
    collection_id BIGINT NOT NULL REFERENCES collection(id),
    image_id BIGINT NOT NULL REFERENCES image(id),
    source_id BIGINT NOT NULL REFERENCES source(id),
    subject_id BIGINT REFERENCES subject(id),
    bbox JSONB NOT NULL,
    landmarks JSONB NOT NULL,
    det_score REAL NOT NULL,
    quality JSONB NOT NULL,
    pack TEXT NOT NULL,
    vector BYTEA NOT NULL,
    crop_sha TEXT NOT NULL,
    thumb_sha TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX face_collection ON face (collection_id, id);
CREATE INDEX face_image ON face (image_id);
CREATE INDEX face_subject ON face (subject_id) WHERE subject_id IS NOT NULL;
CREATE INDEX face_crop ON face (crop_sha);
CREATE INDEX face_thumb ON face (thumb_sha);
-- Work a committed deletion still owes: vector points and blobs to remove. Written in the
-- deleting transaction, removed when done; `check --repair` and every later delete retry.
CREATE TABLE pending_delete (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('point', 'blob')),
    collection_id BIGINT,
    face_id BIGINT,
    sha TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE suppression (
    id BIGSERIAL PRIMARY KEY,
    pack TEXT NOT NULL,
    vector BYTEA NOT NULL,
    z_median REAL NOT NULL,
    z_mad REAL NOT NULL,
    request_id TEXT NOT NULL,
    origin TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX suppression_pack ON suppression (pack);
-- The ingest queue: one row per input file, claimed with FOR UPDATE SKIP LOCKED and a lease.
CREATE TABLE ingest_job (
    id BIGSERIAL PRIMARY KEY,
    collection TEXT NOT NULL,
    source JSONB NOT NULL,
    args JSONB NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE TABLE ingest_item (
    id BIGSERIAL PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES ingest_job(id),
    location TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'claimed', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    lease_until BIGINT,
    outcome TEXT,
    faces INTEGER,
    error_code TEXT,
    error TEXT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX ingest_item_open ON ingest_item (id) WHERE status IN ('queued', 'claimed');
CREATE INDEX ingest_item_job ON ingest_item (job_id, status);
