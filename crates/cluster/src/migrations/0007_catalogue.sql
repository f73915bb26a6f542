-- The catalogue endpoints change a stored face's subject (assign, unassign, delete a subject
-- keeping its faces). PostgreSQL holds the truth; the vector indexes keep a copy of each
-- face's subject for subject filters, brought in step as follows.
--
-- Qdrant: one intent per changed face, written in the change's transaction and cleared once
-- the point's `subject_id` payload is set from the face row (`ClusterStore::
-- finish_pending_payloads`, also run by `visage cluster check --repair`).
CREATE TABLE pending_payload (
    id BIGSERIAL PRIMARY KEY,
    collection_id BIGINT NOT NULL,
    face_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
-- The exact scan's per-process mirrors: bumped by every such change in the collection; a
-- mirror that saw another value re-reads the collection's face subjects before searching.
ALTER TABLE collection ADD COLUMN subjects_gen BIGINT NOT NULL DEFAULT 0;
