//! SQLite schema and its versioned migrations (`PRAGMA user_version`).

use anyhow::{bail, Context, Result};
use rusqlite::Connection;

/// Migration `i` brings the schema from version `i` to `i + 1`. Append only; never edit a
/// migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the gallery.
    r#"
    CREATE TABLE collection (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        name        TEXT NOT NULL UNIQUE,
        pack        TEXT NOT NULL,          -- model pack identity, name@version
        dim         INTEGER NOT NULL CHECK (dim > 0),
        created_at  INTEGER NOT NULL        -- unix seconds
    );
    CREATE TABLE source (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        collection_id INTEGER NOT NULL REFERENCES collection(id),
        name          TEXT NOT NULL,
        kind          TEXT NOT NULL,        -- directory, archive, manifest, warc, video, upload
        uri           TEXT,
        legal_basis   TEXT,
        licence       TEXT,
        jurisdiction  TEXT,                 -- ISO 3166-1 alpha-2 or ISO 3166-2
        created_at    INTEGER NOT NULL,
        UNIQUE (collection_id, name)
    );
    CREATE TABLE subject (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        collection_id INTEGER NOT NULL REFERENCES collection(id),
        label         TEXT NOT NULL,
        attributes    TEXT NOT NULL DEFAULT '{}',
        created_at    INTEGER NOT NULL,
        UNIQUE (collection_id, label)
    );
    CREATE TABLE image (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        collection_id       INTEGER NOT NULL REFERENCES collection(id),
        source_id           INTEGER NOT NULL REFERENCES source(id),
        sha256              TEXT NOT NULL,
        uri                 TEXT,
        page_uri            TEXT,
        captured_at         INTEGER,
        gps_lat             REAL,
        gps_lon             REAL,
        jurisdiction        TEXT,
        jurisdiction_method TEXT,          -- declared_source, declared_item, exif_gps
        width               INTEGER,
        height              INTEGER,
        original_blob       TEXT,
        faces_rejected      INTEGER NOT NULL DEFAULT 0,
        ingested_at         INTEGER NOT NULL,
        UNIQUE (collection_id, sha256)
    );
    CREATE INDEX image_source ON image(source_id);
    CREATE INDEX image_jurisdiction ON image(jurisdiction);
    CREATE TABLE face (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        collection_id INTEGER NOT NULL REFERENCES collection(id),
        image_id      INTEGER NOT NULL REFERENCES image(id),
        subject_id    INTEGER REFERENCES subject(id),
        bbox          TEXT NOT NULL,        -- JSON [x0, y0, x1, y1]
        landmarks     TEXT NOT NULL,        -- JSON [[x, y] x 5]
        det_score     REAL NOT NULL,
        quality       TEXT NOT NULL,        -- JSON visage_core::Quality
        pack          TEXT NOT NULL,
        vector        BLOB NOT NULL,        -- little-endian f32, L2-normalised
        crop_sha      TEXT NOT NULL,
        thumb_sha     TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    );
    CREATE INDEX face_collection ON face(collection_id);
    CREATE INDEX face_image ON face(image_id);
    CREATE INDEX face_subject ON face(subject_id);
    CREATE INDEX face_crop ON face(crop_sha);
    CREATE INDEX face_thumb ON face(thumb_sha);
    -- Ids of deleted faces, kept forever (no biometric data), so a cached vector index older
    -- than a deletion is corrected when loaded.
    CREATE TABLE tombstone (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        face_id       INTEGER NOT NULL,
        collection_id INTEGER NOT NULL,
        deleted_at    INTEGER NOT NULL
    );
    CREATE INDEX tombstone_collection ON tombstone(collection_id, seq);
    -- Write intents: blobs being written (unlinked on recovery unless a row references them)
    -- and blobs to unlink after a committed deletion.
    CREATE TABLE pending_blob (sha TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE pending_unlink (sha TEXT PRIMARY KEY) WITHOUT ROWID;
    "#,
    // 1 -> 2: per-item provenance from manifests and web archives.
    r#"
    -- Per-item provenance from manifests and web archives.
    ALTER TABLE image ADD COLUMN external_id TEXT;
    ALTER TABLE image ADD COLUMN licence TEXT;
    ALTER TABLE image ADD COLUMN legal_basis TEXT;
    "#,
    // 2 -> 3: the opt-out suppression list.
    r#"
    -- Embeddings (never photos) of people who opted out, with the median and scaled MAD of
    -- their scores against the gallery when added (score normalisation).
    CREATE TABLE suppression (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        pack       TEXT NOT NULL,
        vector     BLOB NOT NULL,
        z_median   REAL NOT NULL,
        z_mad      REAL NOT NULL,
        request_id TEXT NOT NULL,
        origin     TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX suppression_pack ON suppression(pack);
    "#,
    // 3 -> 4: deletions journaled under an intent id, so an erasure interrupted after its
    // rows left can still be recorded with its counts (`Gallery::delete_journaled`).
    r#"
    -- The report of a deletion, written in the deletion's own transaction under the id of
    -- the intent the caller recorded first (governance.sqlite `pending_change`); removed
    -- once the caller has recorded it.
    CREATE TABLE deletion_journal (
        intent     TEXT PRIMARY KEY,
        report     TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The job log lives in its own database (`jobs.sqlite`), so recording a run that changes
/// nothing leaves the gallery's files byte for byte as they were.
pub const JOBS_SCHEMA: &str = r#"
    CREATE TABLE IF NOT EXISTS job (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        kind        TEXT NOT NULL,              -- ingest
        collection  TEXT,
        args        TEXT NOT NULL,              -- JSON: what was asked
        status      TEXT NOT NULL,              -- running, completed, failed, interrupted
        pid         INTEGER,
        counts      TEXT NOT NULL DEFAULT '{}', -- JSON: progress and results
        error       TEXT,
        started_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        finished_at INTEGER
    );
"#;

/// Connection settings every gallery connection uses.
pub fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA secure_delete = ON;",
    )
    .context("configuring SQLite")?;
    Ok(())
}

/// Applies pending migrations, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        bail!(
            "this data directory has schema version {current}, newer than this visage \
             understands ({SCHEMA_VERSION}); upgrade visage"
        );
    }
    for (v, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("schema migration {v} -> {}", v + 1))?;
        tx.pragma_update(None, "user_version", v as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

pub fn version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}
