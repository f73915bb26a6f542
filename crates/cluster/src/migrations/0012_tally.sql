-- Counts of images and faces per source and jurisdiction, kept by triggers on `image` and
-- `face`, so that statistics, collection summaries and `/metrics` read a few rows instead of
-- grouping the whole tables (seconds at 100M faces). Every insert and delete of a row,
-- whatever statement does it, moves the counts in the same transaction.
--
-- Each (source, jurisdiction) has up to 16 rows ("slots"): a writing connection updates
-- the slot of its backend process, so workers ingesting into one source at once do not wait
-- on one row. Readers sum the slots. A slot can go negative (a face stored through one
-- connection and deleted through another); only the sums mean anything.
LOCK TABLE image, face IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE tally (
    source_id BIGINT NOT NULL REFERENCES source(id) ON DELETE CASCADE,
    jurisdiction TEXT NOT NULL,          -- the image's jurisdiction, '' when it has none
    slot SMALLINT NOT NULL,
    collection_id BIGINT NOT NULL,       -- the source's collection
    images BIGINT NOT NULL DEFAULT 0,
    faces BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (source_id, jurisdiction, slot)
);
CREATE INDEX tally_collection ON tally (collection_id);

-- Statement-level triggers: one upsert per statement and key, whatever the number of rows
-- (row-level ones updating one count row thousands of times in a transaction grow its
-- version chain quadratically: a bulk insert of 1M faces did not finish in 5 minutes).
-- Keys are upserted in order, so two statements touching several keys in one slot take
-- their locks in the same order.
CREATE FUNCTION tally_images_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally AS t (source_id, jurisdiction, slot, collection_id, images)
    SELECT source_id, COALESCE(jurisdiction, ''), (pg_backend_pid() % 16)::SMALLINT,
           min(collection_id), count(*)
    FROM added GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (source_id, jurisdiction, slot)
    DO UPDATE SET images = t.images + EXCLUDED.images;
    RETURN NULL;
END $$;

CREATE FUNCTION tally_images_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally AS t (source_id, jurisdiction, slot, collection_id, images)
    SELECT source_id, COALESCE(jurisdiction, ''), (pg_backend_pid() % 16)::SMALLINT,
           min(collection_id), -count(*)
    FROM removed GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (source_id, jurisdiction, slot)
    DO UPDATE SET images = t.images + EXCLUDED.images;
    RETURN NULL;
END $$;

-- A face counts under its own source and its image's jurisdiction. Faces are deleted by
-- statements of their own before their images (the foreign key demands it), so the image
-- is still there to read.
CREATE FUNCTION tally_faces_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally AS t (source_id, jurisdiction, slot, collection_id, faces)
    SELECT a.source_id, COALESCE(i.jurisdiction, ''), (pg_backend_pid() % 16)::SMALLINT,
           min(a.collection_id), count(*)
    FROM added a JOIN image i ON i.id = a.image_id GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (source_id, jurisdiction, slot)
    DO UPDATE SET faces = t.faces + EXCLUDED.faces;
    RETURN NULL;
END $$;

CREATE FUNCTION tally_faces_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally AS t (source_id, jurisdiction, slot, collection_id, faces)
    SELECT r.source_id, COALESCE(i.jurisdiction, ''), (pg_backend_pid() % 16)::SMALLINT,
           min(r.collection_id), -count(*)
    FROM removed r JOIN image i ON i.id = r.image_id GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (source_id, jurisdiction, slot)
    DO UPDATE SET faces = t.faces + EXCLUDED.faces;
    RETURN NULL;
END $$;

CREATE TRIGGER image_tally_insert AFTER INSERT ON image
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION tally_images_added();
CREATE TRIGGER image_tally_delete AFTER DELETE ON image
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION tally_images_removed();
CREATE TRIGGER face_tally_insert AFTER INSERT ON face
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION tally_faces_added();
CREATE TRIGGER face_tally_delete AFTER DELETE ON face
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION tally_faces_removed();
-- A truncated table's counts go with it.
CREATE FUNCTION tally_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'face' THEN
        UPDATE tally SET faces = 0;
    ELSE
        UPDATE tally SET images = 0;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER image_tally_truncate AFTER TRUNCATE ON image
    FOR EACH STATEMENT EXECUTE FUNCTION tally_truncated();
CREATE TRIGGER face_tally_truncate AFTER TRUNCATE ON face
    FOR EACH STATEMENT EXECUTE FUNCTION tally_truncated();

-- The counts from the rows themselves, in slot 0: the migration's starting point, and what
-- `visage cluster check --repair` restores when the counts disagree with the rows.
CREATE FUNCTION tally_rebuild() RETURNS void LANGUAGE sql AS $$
    DELETE FROM tally;
    INSERT INTO tally (source_id, jurisdiction, slot, collection_id, images)
    SELECT source_id, COALESCE(jurisdiction, ''), 0, min(collection_id), count(*)
    FROM image GROUP BY 1, 2;
    INSERT INTO tally AS t (source_id, jurisdiction, slot, collection_id, faces)
    SELECT f.source_id, COALESCE(i.jurisdiction, ''), 0, min(f.collection_id), count(*)
    FROM face f JOIN image i ON i.id = f.image_id GROUP BY 1, 2
    ON CONFLICT (source_id, jurisdiction, slot) DO UPDATE SET faces = EXCLUDED.faces;
$$;
SELECT tally_rebuild();
