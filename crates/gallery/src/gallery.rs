//! The gallery: one data directory, one writer process, any number of readers.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

#[path = "export.rs"]
pub mod export;
#[path = "subjects.rs"]
pub mod subjects;
#[path = "suppression.rs"]
pub mod suppression;

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::blobs::{sync_dir, write_atomic, BlobStore};
use crate::filter::{AttrTable, FaceAttr, Filter};
use crate::index::{HnswParams, Neighbour, UsearchIndex, VectorIndex};
use crate::schema;

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "visage-data";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Searches and listings; no lock, no recovery, nothing written.
    ReadOnly,
    /// Takes the directory's writer lock and recovers unfinished work on open.
    ReadWrite,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Collection {
    pub id: i64,
    pub name: String,
    pub pack: String,
    pub dim: usize,
    pub created_at: i64,
}

impl Collection {
    /// A collection takes embeddings of the pack (and dimension) it was created with only.
    pub fn check_pinned(&self, pack: &str, dim: usize) -> Result<()> {
        if self.pack != pack || self.dim != dim {
            bail!(
                "collection {:?} is pinned to pack {} ({}-d); it cannot take {pack} ({dim}-d) \
                 embeddings",
                self.name,
                self.pack,
                self.dim
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NewSource {
    pub name: String,
    pub kind: String,
    pub uri: Option<String>,
    pub legal_basis: Option<String>,
    pub licence: Option<String>,
    pub jurisdiction: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Source {
    pub id: i64,
    pub collection_id: i64,
    pub name: String,
    pub kind: String,
    pub uri: Option<String>,
    pub legal_basis: Option<String>,
    pub licence: Option<String>,
    pub jurisdiction: Option<String>,
    pub created_at: i64,
}

/// One face to store with its image.
#[derive(Debug, Clone)]
pub struct NewFace {
    pub bbox: [f32; 4],
    pub landmarks: [[f32; 2]; 5],
    pub det_score: f32,
    /// JSON of `visage_core::Quality`.
    pub quality: serde_json::Value,
    pub vector: Vec<f32>,
    /// Aligned 112x112 crop, encoded (PNG).
    pub crop: Vec<u8>,
    /// Thumbnail, encoded (JPEG).
    pub thumb: Vec<u8>,
    pub subject_id: Option<i64>,
}

/// One image and its faces, written atomically.
#[derive(Debug, Clone, Default)]
pub struct NewImage {
    pub collection_id: i64,
    pub source_id: i64,
    pub sha256: String,
    pub uri: Option<String>,
    pub page_uri: Option<String>,
    pub captured_at: Option<i64>,
    pub gps: Option<(f64, f64)>,
    pub jurisdiction: Option<String>,
    pub jurisdiction_method: Option<String>,
    pub width: u32,
    pub height: u32,
    pub faces_rejected: u32,
    pub original: Option<Vec<u8>>,
    pub faces: Vec<NewFace>,
    /// Per-item provenance (manifest columns); the source's values apply when absent.
    pub external_id: Option<String>,
    pub licence: Option<String>,
    pub legal_basis: Option<String>,
}

impl NewImage {
    /// Checks the image can go into `coll` (every vector of its dimension and finite) and
    /// returns its jurisdiction normalised (`us-il` → `US-IL`), as both backends store it.
    pub fn validated_for(&self, coll: &Collection) -> Result<Option<String>> {
        for f in &self.faces {
            if f.vector.len() != coll.dim {
                bail!(
                    "face vector has {} dimensions, collection {} needs {}",
                    f.vector.len(),
                    coll.name,
                    coll.dim
                );
            }
            if f.vector.iter().any(|x| !x.is_finite()) {
                bail!("face vector holds a non-finite value");
            }
        }
        self.jurisdiction
            .as_deref()
            .map(crate::filter::normalize_jurisdiction)
            .transpose()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AddOutcome {
    pub image_id: i64,
    pub face_ids: Vec<i64>,
    /// The image (same sha256) was already in the collection; nothing was written.
    pub duplicate: bool,
}

/// A stored face with its provenance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaceRecord {
    pub id: i64,
    pub collection: String,
    pub collection_id: i64,
    pub pack: String,
    pub bbox: [f32; 4],
    pub landmarks: [[f32; 2]; 5],
    pub det_score: f32,
    pub quality: serde_json::Value,
    pub crop_sha: String,
    pub thumb_sha: String,
    pub created_at: i64,
    pub subject: Option<SubjectRef>,
    pub image: ImageRecord,
    pub source: Source,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubjectRef {
    pub id: i64,
    pub label: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub id: i64,
    pub sha256: String,
    pub uri: Option<String>,
    pub page_uri: Option<String>,
    pub captured_at: Option<i64>,
    pub gps: Option<(f64, f64)>,
    pub jurisdiction: Option<String>,
    pub jurisdiction_method: Option<String>,
    pub width: u32,
    pub height: u32,
    pub ingested_at: i64,
    pub external_id: Option<String>,
    /// Item-level licence and legal basis (from a manifest); the source's apply otherwise.
    pub licence: Option<String>,
    pub legal_basis: Option<String>,
}

/// A search match: similarity and the face with its provenance.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hit {
    pub score: f32,
    /// Estimated probability that a face of a different person scores this high (from the
    /// pack's calibration; `None` when the pack has none). Filled in by the engine.
    pub fmr: Option<f64>,
    /// True where `fmr` comes from the calibration's tail fit, not observed pairs.
    pub fmr_extrapolated: Option<bool>,
    /// `fmr` x the number of faces searched: how many false matches at least this strong a
    /// search of this size should be expected to return.
    pub expected_false_matches: Option<f64>,
    pub face: FaceRecord,
}

#[derive(Debug, Clone)]
pub struct SearchQuery<'a> {
    pub collection_id: i64,
    pub vector: &'a [f32],
    pub k: usize,
    pub threshold: Option<f32>,
    pub filter: Filter,
}

/// How a search ran (for latency breakdowns and tests).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SearchTrace {
    /// Embedded: `hnsw`, `hnsw_filtered` or `exact_filtered`; cluster: `qdrant` or `exact_scan`.
    pub path: &'static str,
    pub candidates: usize,
    pub filter_matches: Option<usize>,
    pub index_ms: f64,
    pub join_ms: f64,
}

/// What to delete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteTarget {
    Faces(Vec<i64>),
    Image(i64),
    Source(i64),
    Subject(i64),
    /// Every image in this jurisdiction or a subdivision of it, across collections.
    Jurisdiction(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeleteReport {
    pub faces: usize,
    pub images: usize,
    pub sources: usize,
    pub subjects: usize,
    pub blobs_removed: usize,
    pub face_ids: Vec<i64>,
}

impl DeleteReport {
    /// Adds another deletion's counts and face ids to these.
    pub fn add(&mut self, r: DeleteReport) {
        self.faces += r.faces;
        self.images += r.images;
        self.sources += r.sources;
        self.subjects += r.subjects;
        self.blobs_removed += r.blobs_removed;
        self.face_ids.extend(r.face_ids);
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub schema_version: i64,
    pub collections: Vec<CollectionStats>,
    pub faces: u64,
    pub images: u64,
    pub subjects: u64,
    pub tombstones: u64,
    pub bytes_on_disk: BytesOnDisk,
    /// RAM held by loaded vector indexes and their attribute tables.
    pub bytes_in_memory: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BytesOnDisk {
    pub total: u64,
    pub metadata: u64,
    pub blobs: u64,
    pub index: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CollectionStats {
    pub id: i64,
    pub name: String,
    pub pack: String,
    pub dim: usize,
    pub faces: u64,
    pub images: u64,
    pub subjects: u64,
    pub sources: Vec<NamedCount>,
    pub jurisdictions: Vec<NamedCount>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct NamedCount {
    pub name: String,
    pub faces: u64,
    pub images: u64,
}

/// Saved-index bookkeeping (`index/c<id>.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct IndexMeta {
    generation: u64,
    dim: usize,
    /// Highest face id the saved index holds; later faces are added on load.
    max_face_id: i64,
    /// Last tombstone applied; later tombstones are applied on load.
    tombstone_seq: i64,
    count: usize,
}

pub(crate) struct CollectionState {
    pub(crate) id: i64,
    pub(crate) dim: usize,
    pub(crate) index: UsearchIndex,
    pub(crate) attrs: RwLock<AttrTable>,
    meta: Mutex<IndexMeta>,
    dirty: AtomicBool,
    removed_since_save: AtomicBool,
}

pub struct Gallery {
    dir: PathBuf,
    pub(crate) conn: Mutex<Connection>,
    /// `jobs.sqlite`: the job log (absent until the first job in a read-only open).
    jobs_conn: Mutex<Option<Connection>>,
    pub(crate) blobs: BlobStore,
    states: RwLock<HashMap<i64, Arc<CollectionState>>>,
    access: Access,
    params: HnswParams,
    /// Serialises mutations inside this process (one writer).
    write: Mutex<()>,
    _lock: Option<File>,
    recovery: Mutex<Recovery>,
    /// The suppression list per pack, with the generation it was read at.
    suppression_cache: Mutex<HashMap<String, (i64, Arc<Vec<suppression::Suppression>>)>>,
}

/// Work an interrupted process left and a writable open finished.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Recovery {
    /// Blobs written for faces whose transaction never committed.
    pub uncommitted_blobs_removed: usize,
    /// Blobs of committed deletions that were not yet unlinked.
    pub deleted_blobs_unlinked: usize,
    pub staging_files_removed: usize,
    /// Jobs left `running` by a process that died, now marked `interrupted`.
    pub jobs_interrupted: usize,
}

/// A long-running operation (an ingest) with its persisted status and counts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub collection: Option<String>,
    pub args: serde_json::Value,
    /// queued, running, completed, failed, interrupted, cancelled
    pub status: String,
    pub pid: Option<i64>,
    pub counts: serde_json::Value,
    pub error: Option<String>,
    /// When it started (for a queued job: when it was queued).
    pub started_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

const JOB_COLUMNS: &str = "id, kind, collection, args, status, pid, counts, error, started_at, \
    updated_at, finished_at";

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    let args: String = r.get(3)?;
    let counts: String = r.get(6)?;
    Ok(Job {
        id: r.get(0)?,
        kind: r.get(1)?,
        collection: r.get(2)?,
        args: serde_json::from_str(&args).unwrap_or(serde_json::Value::Null),
        status: r.get(4)?,
        pid: r.get(5)?,
        counts: serde_json::from_str(&counts).unwrap_or(serde_json::Value::Null),
        error: r.get(7)?,
        started_at: r.get(8)?,
        updated_at: r.get(9)?,
        finished_at: r.get(10)?,
    })
}

/// A read-only view cannot run recovery: a running (or queued) job whose process is gone is
/// shown as interrupted.
fn show_dead_running(jobs: &mut [Job]) {
    for j in jobs {
        if (j.status == "running" || j.status == "queued")
            && j.pid
                .is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists())
        {
            j.status = "interrupted".into();
        }
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn vector_to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

pub(crate) fn blob_to_vector(b: &[u8]) -> Option<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return None;
    }
    Some(
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Candidates re-scored exactly per search when the index stores quantised vectors.
const RERANK_CANDIDATES: usize = 40;

/// Selective filters (at most this many matching faces) are answered by an exact scan.
const EXACT_SCAN_MAX: usize = 20_000;

impl Gallery {
    /// Opens (creating when writable) the data directory.
    pub fn open(dir: &Path, access: Access) -> Result<Gallery> {
        Self::open_with(dir, access, HnswParams::default())
    }

    pub fn open_with(dir: &Path, access: Access, params: HnswParams) -> Result<Gallery> {
        let db = dir.join("gallery.sqlite");
        let lock_file = match access {
            Access::ReadWrite => {
                for sub in ["", "blobs", "index", "tmp"] {
                    let p = dir.join(sub);
                    fs::create_dir_all(&p)
                        .with_context(|| format!("creating data directory {}", p.display()))?;
                }
                let f = File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join("LOCK"))
                    .with_context(|| format!("opening {}", dir.join("LOCK").display()))?;
                match f.try_lock() {
                    Ok(()) => Some(f),
                    Err(fs::TryLockError::WouldBlock) => bail!(
                        "data directory {} is in use by another visage process that writes to it",
                        dir.display()
                    ),
                    Err(fs::TryLockError::Error(e)) => {
                        return Err(e).context("locking the data directory")
                    }
                }
            }
            Access::ReadOnly => {
                if !db.exists() {
                    bail!(
                        "no gallery in {} (create one with `visage ingest DIR --data-dir {}`)",
                        dir.display(),
                        dir.display()
                    );
                }
                None
            }
        };
        let mut conn =
            Connection::open(&db).with_context(|| format!("opening {}", db.display()))?;
        schema::configure(&conn)?;
        if access == Access::ReadWrite {
            schema::migrate(&mut conn)?;
        } else {
            let v = schema::version(&conn)?;
            if v != schema::SCHEMA_VERSION {
                bail!(
                    "gallery schema version {v}, this visage expects {} (open it once for \
                     writing to migrate)",
                    schema::SCHEMA_VERSION
                );
            }
        }
        let jobs_path = dir.join("jobs.sqlite");
        let jobs_conn = if access == Access::ReadWrite || jobs_path.exists() {
            let c = Connection::open(&jobs_path)
                .with_context(|| format!("opening {}", jobs_path.display()))?;
            schema::configure(&c)?;
            if access == Access::ReadWrite {
                c.execute_batch(schema::JOBS_SCHEMA)?;
            }
            Some(c)
        } else {
            None
        };
        let g = Gallery {
            dir: dir.to_path_buf(),
            conn: Mutex::new(conn),
            jobs_conn: Mutex::new(jobs_conn),
            blobs: BlobStore::new(dir.join("blobs"), dir.join("tmp")),
            states: RwLock::new(HashMap::new()),
            access,
            params,
            write: Mutex::new(()),
            _lock: lock_file,
            recovery: Mutex::new(Recovery::default()),
            suppression_cache: Mutex::new(HashMap::new()),
        };
        if access == Access::ReadWrite {
            let r = g.recover().context("recovering unfinished work")?;
            *lock(&g.recovery) = r;
        }
        Ok(g)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn access(&self) -> Access {
        self.access
    }

    fn require_writable(&self) -> Result<()> {
        if self.access != Access::ReadWrite {
            bail!("the gallery was opened read-only");
        }
        Ok(())
    }

    /// Finishes what a crash interrupted: blobs of uncommitted writes, unlinks of committed
    /// deletions, staging files, superseded index files.
    fn recover(&self) -> Result<Recovery> {
        let _w = lock(&self.write);
        let mut r = Recovery::default();
        if let Ok(rd) = fs::read_dir(self.dir.join("tmp")) {
            for e in rd.flatten() {
                if fs::remove_file(e.path()).is_ok() {
                    r.staging_files_removed += 1;
                }
            }
        }
        let conn = lock(&self.conn);
        for table in ["pending_blob", "pending_unlink"] {
            let shas: Vec<String> = conn
                .prepare(&format!("SELECT sha FROM {table}"))?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for sha in shas {
                if !blob_referenced(&conn, &sha)?
                    && crate::blobs::is_sha256_hex(&sha)
                    && self.blobs.remove(&sha)?
                {
                    if table == "pending_blob" {
                        r.uncommitted_blobs_removed += 1;
                    } else {
                        r.deleted_blobs_unlinked += 1;
                    }
                }
                conn.execute(&format!("DELETE FROM {table} WHERE sha = ?1"), [&sha])?;
            }
        }
        drop(conn);
        if let Some(j) = lock(&self.jobs_conn).as_ref() {
            r.jobs_interrupted = j.execute(
                "UPDATE job SET status = 'interrupted', updated_at = ?1 WHERE status = 'running'",
                [now()],
            )?;
        }
        self.remove_stale_index_files()?;
        if r != Recovery::default() {
            tracing::info!("recovered unfinished work: {r:?}");
        }
        Ok(r)
    }

    /// What opening for writing had to finish after an interruption.
    pub fn recovery(&self) -> Recovery {
        lock(&self.recovery).clone()
    }

    fn remove_stale_index_files(&self) -> Result<()> {
        let idx_dir = self.dir.join("index");
        let mut keep = HashSet::new();
        if let Ok(rd) = fs::read_dir(&idx_dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_prefix('c').and_then(|s| s.strip_suffix(".json")) {
                    if let Ok(m) = read_meta(&e.path()) {
                        keep.insert(format!("c{id}-g{}.usearch", m.generation));
                    }
                    keep.insert(name);
                }
            }
        }
        if let Ok(rd) = fs::read_dir(&idx_dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    // ---- collections, sources, subjects ---------------------------------------------------

    /// Returns the named collection, creating it with `pack`/`dim` if absent; an existing
    /// collection pinned to another pack is an error.
    pub fn ensure_collection(&self, name: &str, pack: &str, dim: usize) -> Result<Collection> {
        if let Some(c) = self.collection(name)? {
            c.check_pinned(pack, dim)?;
            return Ok(c);
        }
        self.require_writable()?;
        if name.trim().is_empty() {
            bail!("a collection needs a name");
        }
        let conn = lock(&self.conn);
        conn.execute(
            "INSERT INTO collection (name, pack, dim, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, pack, dim as i64, now()],
        )?;
        drop(conn);
        self.collection(name)?
            .ok_or_else(|| anyhow!("collection vanished"))
    }

    pub fn collection(&self, name: &str) -> Result<Option<Collection>> {
        self.collection_where("name", &name)
    }

    pub fn collection_by_id(&self, id: i64) -> Result<Option<Collection>> {
        self.collection_where("id", &id)
    }

    fn collection_where(
        &self,
        column: &str,
        value: &dyn rusqlite::ToSql,
    ) -> Result<Option<Collection>> {
        let conn = lock(&self.conn);
        Ok(conn
            .query_row(
                &format!(
                    "SELECT id, name, pack, dim, created_at FROM collection WHERE {column} = ?1"
                ),
                [value],
                row_collection,
            )
            .optional()?)
    }

    pub fn collections(&self) -> Result<Vec<Collection>> {
        let conn = lock(&self.conn);
        let mut st =
            conn.prepare("SELECT id, name, pack, dim, created_at FROM collection ORDER BY id")?;
        let v = st
            .query_map([], row_collection)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }

    /// Returns the collection's source with this name, creating it if absent. A declared
    /// jurisdiction must be an ISO 3166 code.
    pub fn ensure_source(&self, collection_id: i64, s: &NewSource) -> Result<Source> {
        let jurisdiction = s
            .jurisdiction
            .as_deref()
            .map(crate::filter::normalize_jurisdiction)
            .transpose()?;
        let conn = lock(&self.conn);
        let existing = conn
            .query_row(
                "SELECT id FROM source WHERE collection_id = ?1 AND name = ?2",
                params![collection_id, s.name],
                |r| r.get::<_, i64>(0),
            )
            .optional()?;
        drop(conn);
        let id = match existing {
            Some(id) => id,
            None => {
                self.require_writable()?;
                let conn = lock(&self.conn);
                conn.execute(
                    "INSERT INTO source (collection_id, name, kind, uri, legal_basis, licence, \
                     jurisdiction, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        collection_id,
                        s.name,
                        s.kind,
                        s.uri,
                        s.legal_basis,
                        s.licence,
                        jurisdiction,
                        now()
                    ],
                )?;
                conn.last_insert_rowid()
            }
        };
        self.source(id)?.ok_or_else(|| anyhow!("source vanished"))
    }

    pub fn source(&self, id: i64) -> Result<Option<Source>> {
        let conn = lock(&self.conn);
        Ok(conn
            .query_row(
                "SELECT id, collection_id, name, kind, uri, legal_basis, licence, jurisdiction, \
                 created_at FROM source WHERE id = ?1",
                [id],
                row_source,
            )
            .optional()?)
    }

    pub fn sources(&self, collection_id: i64) -> Result<Vec<Source>> {
        let conn = lock(&self.conn);
        let mut st = conn.prepare(
            "SELECT id, collection_id, name, kind, uri, legal_basis, licence, jurisdiction, \
             created_at FROM source WHERE collection_id = ?1 ORDER BY id",
        )?;
        let v = st
            .query_map([collection_id], row_source)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }

    pub fn ensure_subject(&self, collection_id: i64, label: &str) -> Result<i64> {
        if let Some(id) = self.subject_by_label(collection_id, label)? {
            return Ok(id);
        }
        self.require_writable()?;
        let conn = lock(&self.conn);
        conn.execute(
            "INSERT INTO subject (collection_id, label, created_at) VALUES (?1, ?2, ?3)",
            params![collection_id, label, now()],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn subject_by_label(&self, collection_id: i64, label: &str) -> Result<Option<i64>> {
        let conn = lock(&self.conn);
        Ok(conn
            .query_row(
                "SELECT id FROM subject WHERE collection_id = ?1 AND label = ?2",
                params![collection_id, label],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The image with this content hash in the collection, if already ingested.
    pub fn image_by_sha(&self, collection_id: i64, sha256: &str) -> Result<Option<i64>> {
        let conn = lock(&self.conn);
        Ok(conn
            .query_row(
                "SELECT id FROM image WHERE collection_id = ?1 AND sha256 = ?2",
                params![collection_id, sha256],
                |r| r.get(0),
            )
            .optional()?)
    }

    // ---- writing --------------------------------------------------------------------------

    /// Stores an image and its faces atomically; an image already in the collection (same
    /// sha256) is left as it is.
    pub fn add_image(&self, img: &NewImage) -> Result<AddOutcome> {
        Ok(self.add_images(std::slice::from_ref(img))?.remove(0))
    }

    /// Stores several images and their faces in one atomic step (one set of fsyncs): after a
    /// crash either all of them exist, with vectors and blobs, or none does. Images already in
    /// their collection (same sha256, also earlier in `imgs`) are reported as duplicates.
    pub fn add_images(&self, imgs: &[NewImage]) -> Result<Vec<AddOutcome>> {
        self.require_writable()?;
        let mut colls: HashMap<i64, Collection> = HashMap::new();
        let mut jurisdictions = Vec::with_capacity(imgs.len());
        for img in imgs {
            if !colls.contains_key(&img.collection_id) {
                let c = self
                    .collection_by_id(img.collection_id)?
                    .ok_or_else(|| anyhow!("no collection with id {}", img.collection_id))?;
                colls.insert(c.id, c);
            }
            jurisdictions.push(img.validated_for(&colls[&img.collection_id])?);
        }
        let mut states: HashMap<i64, Arc<CollectionState>> = HashMap::new();
        for img in imgs.iter().filter(|i| !i.faces.is_empty()) {
            if let std::collections::hash_map::Entry::Vacant(e) = states.entry(img.collection_id) {
                e.insert(self.state(img.collection_id)?);
            }
        }
        let _w = lock(&self.write);
        // Which images are new.
        let mut seen: HashSet<(i64, &str)> = HashSet::new();
        let mut existing: Vec<Option<i64>> = Vec::with_capacity(imgs.len());
        for img in imgs {
            let dup_in_batch = !seen.insert((img.collection_id, img.sha256.as_str()));
            existing.push(if dup_in_batch {
                Some(-1)
            } else {
                self.image_by_sha(img.collection_id, &img.sha256)?
            });
        }
        // Blobs each new image references: crop and thumbnail per face, then the original.
        let mut shas: Vec<Vec<String>> = Vec::with_capacity(imgs.len());
        for (img, ex) in imgs.iter().zip(&existing) {
            let mut v = Vec::new();
            if ex.is_none() {
                for f in &img.faces {
                    v.push(crate::blobs::sha256_hex(&f.crop));
                    v.push(crate::blobs::sha256_hex(&f.thumb));
                }
                if let Some(o) = &img.original {
                    v.push(crate::blobs::sha256_hex(o));
                }
            }
            shas.push(v);
        }
        // (1) intents.
        if shas.iter().any(|v| !v.is_empty()) {
            let mut conn = lock(&self.conn);
            let tx = conn.transaction()?;
            for s in shas.iter().flatten() {
                tx.execute("INSERT OR IGNORE INTO pending_blob (sha) VALUES (?1)", [s])?;
            }
            tx.commit()?;
        }
        // (2) blobs, durable.
        let mut dirs: HashSet<PathBuf> = HashSet::new();
        for (img, ex) in imgs.iter().zip(&existing) {
            if ex.is_some() {
                continue;
            }
            let mut put = |b: &[u8]| -> Result<()> {
                if let Some(d) = self.blobs.put_nosync_dir(b)? {
                    dirs.insert(d);
                }
                Ok(())
            };
            for f in &img.faces {
                put(&f.crop)?;
                put(&f.thumb)?;
            }
            if let Some(o) = &img.original {
                put(o)?;
            }
        }
        for d in &dirs {
            sync_dir(d)?;
        }
        // (3) rows: the commit makes the faces exist.
        let t = now();
        let mut outcomes = Vec::with_capacity(imgs.len());
        {
            let mut conn = lock(&self.conn);
            let tx = conn.transaction()?;
            for (n, (img, ex)) in imgs.iter().zip(&existing).enumerate() {
                if let Some(id) = ex {
                    let id = if *id == -1 {
                        tx.query_row(
                            "SELECT id FROM image WHERE collection_id = ?1 AND sha256 = ?2",
                            params![img.collection_id, img.sha256],
                            |r| r.get(0),
                        )?
                    } else {
                        *id
                    };
                    outcomes.push(AddOutcome {
                        image_id: id,
                        face_ids: vec![],
                        duplicate: true,
                    });
                    continue;
                }
                let s = &shas[n];
                tx.execute(
                    "INSERT INTO image (collection_id, source_id, sha256, uri, page_uri, \
                     captured_at, gps_lat, gps_lon, jurisdiction, jurisdiction_method, width, \
                     height, original_blob, faces_rejected, ingested_at, external_id, licence, \
                     legal_basis) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
                     ?13, ?14, ?15, ?16, ?17, ?18)",
                    params![
                        img.collection_id,
                        img.source_id,
                        img.sha256,
                        img.uri,
                        img.page_uri,
                        img.captured_at,
                        img.gps.map(|g| g.0),
                        img.gps.map(|g| g.1),
                        jurisdictions[n],
                        img.jurisdiction_method,
                        img.width,
                        img.height,
                        img.original.as_ref().and_then(|_| s.last().cloned()),
                        img.faces_rejected,
                        t,
                        img.external_id,
                        img.licence,
                        img.legal_basis
                    ],
                )?;
                let image_id = tx.last_insert_rowid();
                let mut face_ids = Vec::with_capacity(img.faces.len());
                let mut st = tx.prepare_cached(
                    "INSERT INTO face (collection_id, image_id, subject_id, bbox, landmarks, \
                     det_score, quality, pack, vector, crop_sha, thumb_sha, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?;
                for (i, f) in img.faces.iter().enumerate() {
                    st.execute(params![
                        img.collection_id,
                        image_id,
                        f.subject_id,
                        serde_json::to_string(&f.bbox)?,
                        serde_json::to_string(&f.landmarks)?,
                        f.det_score,
                        f.quality.to_string(),
                        colls[&img.collection_id].pack,
                        vector_to_blob(&f.vector),
                        s[2 * i],
                        s[2 * i + 1],
                        t
                    ])?;
                    face_ids.push(tx.last_insert_rowid());
                }
                outcomes.push(AddOutcome {
                    image_id,
                    face_ids,
                    duplicate: false,
                });
            }
            for s in shas.iter().flatten() {
                tx.execute("DELETE FROM pending_blob WHERE sha = ?1", [s])?;
            }
            tx.commit()?;
        }
        // (4) searchable in this process.
        for ((img, out), j) in imgs.iter().zip(&outcomes).zip(&jurisdictions) {
            if out.duplicate || out.face_ids.is_empty() {
                continue;
            }
            let state = &states[&img.collection_id];
            let items: Vec<(u64, &[f32])> = out
                .face_ids
                .iter()
                .zip(&img.faces)
                .map(|(id, f)| (*id as u64, &f.vector[..]))
                .collect();
            state.index.add_batch(&items)?;
            let mut attrs = write(&state.attrs);
            let ji = attrs.intern(j.as_deref());
            for (id, f) in out.face_ids.iter().zip(&img.faces) {
                attrs.faces.insert(
                    *id as u64,
                    FaceAttr {
                        source_id: img.source_id,
                        subject_id: f.subject_id,
                        captured_at: img.captured_at,
                        jurisdiction: ji,
                    },
                );
            }
            let mut meta = lock(&state.meta);
            meta.max_face_id = meta
                .max_face_id
                .max(*out.face_ids.iter().max().unwrap_or(&0));
            state.dirty.store(true, Ordering::Release);
        }
        Ok(outcomes)
    }

    /// Deletes for real: rows (secure_delete), vectors (purged from the index and its file),
    /// crops and thumbnails (unlinked). Deleted face ids never come back. `blobs_removed`
    /// counts the files no row uses any more: unlinked now, or, if that fails after the rows
    /// left, at the next open (`pending_unlink`).
    pub fn delete(&self, target: &DeleteTarget) -> Result<DeleteReport> {
        self.delete_inner(target, None)
    }

    /// [`Gallery::delete`], writing its report to the deletion journal under `intent` in the
    /// deletion's own transaction: whoever recorded the intent first (an erasure's audit
    /// record and receipt, in governance.sqlite) can learn after any interruption whether
    /// the rows left and what left ([`Gallery::journaled`]), and record exactly that. An
    /// intent already journaled deletes nothing again: its report is returned.
    pub fn delete_journaled(&self, target: &DeleteTarget, intent: &str) -> Result<DeleteReport> {
        self.delete_inner(target, Some(intent))
    }

    /// The report journaled under `intent`, if that deletion committed.
    pub fn journaled(&self, intent: &str) -> Result<Option<DeleteReport>> {
        let json: Option<String> = lock(&self.conn)
            .query_row(
                "SELECT report FROM deletion_journal WHERE intent = ?1",
                [intent],
                |r| r.get(0),
            )
            .optional()?;
        json.map(|j| serde_json::from_str(&j).context("reading a journaled deletion report"))
            .transpose()
    }

    /// Intents journaled and not yet forgotten (oldest first).
    pub fn journaled_intents(&self) -> Result<Vec<String>> {
        let conn = lock(&self.conn);
        let mut st = conn.prepare("SELECT intent FROM deletion_journal ORDER BY created_at")?;
        let out = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(out)
    }

    /// Drops a journaled report once its caller has recorded it.
    pub fn forget_journaled(&self, intent: &str) -> Result<()> {
        self.require_writable()?;
        lock(&self.conn).execute("DELETE FROM deletion_journal WHERE intent = ?1", [intent])?;
        Ok(())
    }

    fn delete_inner(&self, target: &DeleteTarget, intent: Option<&str>) -> Result<DeleteReport> {
        self.require_writable()?;
        let _w = lock(&self.write);
        let mut report = DeleteReport::default();
        let mut unlink: Vec<String> = Vec::new();
        let mut touched: HashSet<i64> = HashSet::new();
        {
            let mut conn = lock(&self.conn);
            let tx = conn.transaction()?;
            if let Some(intent) = intent {
                let done: Option<String> = tx
                    .query_row(
                        "SELECT report FROM deletion_journal WHERE intent = ?1",
                        [intent],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(j) = done {
                    return serde_json::from_str(&j).context("reading a journaled deletion report");
                }
            }
            let (face_sql, image_sql, extra): (String, Option<String>, Option<String>) =
                match target {
                    DeleteTarget::Faces(ids) => {
                        let list = id_list(ids);
                        (
                            format!("SELECT id FROM face WHERE id IN ({list})"),
                            None,
                            None,
                        )
                    }
                    DeleteTarget::Image(id) => (
                        format!("SELECT id FROM face WHERE image_id = {id}"),
                        Some(format!("SELECT id FROM image WHERE id = {id}")),
                        None,
                    ),
                    DeleteTarget::Source(id) => (
                        format!(
                            "SELECT f.id FROM face f JOIN image i ON i.id = f.image_id \
                         WHERE i.source_id = {id}"
                        ),
                        Some(format!("SELECT id FROM image WHERE source_id = {id}")),
                        Some(format!("DELETE FROM source WHERE id = {id}")),
                    ),
                    DeleteTarget::Subject(id) => (
                        format!("SELECT id FROM face WHERE subject_id = {id}"),
                        None,
                        Some(format!("DELETE FROM subject WHERE id = {id}")),
                    ),
                    DeleteTarget::Jurisdiction(code) => {
                        // Validated code: letters, digits and one dash; safe to inline.
                        let c = crate::filter::normalize_jurisdiction(code)?;
                        (
                        format!(
                            "SELECT f.id FROM face f JOIN image i ON i.id = f.image_id \
                             WHERE i.jurisdiction = '{c}' OR i.jurisdiction LIKE '{c}-%'"
                        ),
                        Some(format!(
                            "SELECT id FROM image WHERE jurisdiction = '{c}' OR jurisdiction LIKE '{c}-%'"
                        )),
                        None,
                    )
                    }
                };
            let face_ids: Vec<i64> = tx
                .prepare(&face_sql)?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let image_ids: Vec<i64> = match &image_sql {
                Some(q) => tx
                    .prepare(q)?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?,
                None => vec![],
            };
            let mut candidate_blobs: Vec<String> = Vec::new();
            let t = now();
            for chunk in face_ids.chunks(500) {
                let list = id_list(chunk);
                let mut st = tx.prepare(&format!(
                    "SELECT id, collection_id, crop_sha, thumb_sha FROM face WHERE id IN ({list})"
                ))?;
                let rows: Vec<(i64, i64, String, String)> = st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                drop(st);
                for (id, coll, crop, thumb) in rows {
                    tx.execute(
                        "INSERT INTO tombstone (face_id, collection_id, deleted_at) VALUES (?1, ?2, ?3)",
                        params![id, coll, t],
                    )?;
                    touched.insert(coll);
                    candidate_blobs.push(crop);
                    candidate_blobs.push(thumb);
                }
                tx.execute(&format!("DELETE FROM face WHERE id IN ({list})"), [])?;
            }
            for chunk in image_ids.chunks(500) {
                let list = id_list(chunk);
                let originals: Vec<String> = tx
                    .prepare(&format!(
                        "SELECT original_blob FROM image WHERE id IN ({list}) AND original_blob IS NOT NULL"
                    ))?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                candidate_blobs.extend(originals);
                tx.execute(&format!("DELETE FROM image WHERE id IN ({list})"), [])?;
            }
            if let Some(q) = &extra {
                let n = tx.execute(q, [])?;
                match target {
                    DeleteTarget::Source(_) => report.sources = n,
                    DeleteTarget::Subject(_) => report.subjects = n,
                    _ => {}
                }
            }
            candidate_blobs.sort();
            candidate_blobs.dedup();
            for sha in candidate_blobs {
                if !blob_referenced(&tx, &sha)? {
                    tx.execute(
                        "INSERT OR IGNORE INTO pending_unlink (sha) VALUES (?1)",
                        [&sha],
                    )?;
                    unlink.push(sha);
                }
            }
            report.faces = face_ids.len();
            report.images = image_ids.len();
            report.face_ids = face_ids;
            report.blobs_removed = unlink.len();
            if let Some(intent) = intent {
                tx.execute(
                    "INSERT INTO deletion_journal (intent, report, created_at) VALUES (?1, ?2, ?3)",
                    params![intent, serde_json::to_string(&report)?, t],
                )?;
            }
            tx.commit()?;
        }
        // The rows are gone; now the vectors and files.
        let seq: i64 =
            lock(&self.conn).query_row("SELECT COALESCE(MAX(seq), 0) FROM tombstone", [], |r| {
                r.get(0)
            })?;
        let loaded: Vec<Arc<CollectionState>> = {
            let states = read(&self.states);
            touched
                .iter()
                .filter_map(|c| states.get(c).cloned())
                .collect()
        };
        for state in &loaded {
            let mut attrs = write(&state.attrs);
            for id in &report.face_ids {
                if attrs.faces.remove(&(*id as u64)).is_some() {
                    state.index.remove(*id as u64)?;
                }
            }
            lock(&state.meta).tombstone_seq = seq;
            state.removed_since_save.store(true, Ordering::Release);
            state.dirty.store(true, Ordering::Release);
        }
        for sha in &unlink {
            self.blobs.remove(sha)?;
        }
        {
            let conn = lock(&self.conn);
            for sha in &unlink {
                conn.execute("DELETE FROM pending_unlink WHERE sha = ?1", [sha])?;
            }
            // Old page images of the deleted rows may sit in the WAL: checkpoint and truncate.
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        // Saved index files still hold the vectors: rewrite those of touched collections now
        // (loading them first if needed, which applies the new tombstones).
        for c in touched {
            let state = self.state_locked(c)?;
            self.save_state(&state)?;
        }
        Ok(report)
    }

    /// Saves every modified vector index (atomically, with its watermarks).
    pub fn flush(&self) -> Result<()> {
        if self.access != Access::ReadWrite {
            return Ok(());
        }
        let _w = lock(&self.write);
        let states: Vec<Arc<CollectionState>> = read(&self.states).values().cloned().collect();
        for s in states {
            if s.dirty.load(Ordering::Acquire) {
                self.save_state(&s)?;
            }
        }
        Ok(())
    }

    /// Call with the write lock held.
    fn save_state(&self, s: &CollectionState) -> Result<()> {
        if s.removed_since_save.swap(false, Ordering::AcqRel) {
            s.index.purge_removed()?;
        }
        let mut meta = lock(&s.meta).clone();
        let old_gen = meta.generation;
        meta.generation += 1;
        meta.count = s.index.len();
        meta.dim = s.dim;
        let idx_dir = self.dir.join("index");
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("c{}-g{}.usearch", s.id, meta.generation));
        s.index.save(&tmp)?;
        File::open(&tmp)?.sync_all()?;
        let dest = idx_dir.join(format!("c{}-g{}.usearch", s.id, meta.generation));
        fs::rename(&tmp, &dest)?;
        write_atomic(
            &self.dir.join("tmp"),
            &idx_dir.join(format!("c{}.json", s.id)),
            &serde_json::to_vec_pretty(&meta)?,
            meta.generation,
        )?;
        sync_dir(&idx_dir)?;
        let old = idx_dir.join(format!("c{}-g{old_gen}.usearch", s.id));
        if old_gen > 0 && old.exists() {
            fs::remove_file(&old)?;
            sync_dir(&idx_dir)?;
        }
        *lock(&s.meta) = meta;
        s.dirty.store(false, Ordering::Release);
        Ok(())
    }

    // ---- vector index state ---------------------------------------------------------------

    pub(crate) fn state(&self, collection_id: i64) -> Result<Arc<CollectionState>> {
        if let Some(s) = read(&self.states).get(&collection_id) {
            return Ok(s.clone());
        }
        let _w = lock(&self.write);
        self.state_locked(collection_id)
    }

    /// Loads (or rebuilds) a collection's index; call with the write lock held.
    fn state_locked(&self, collection_id: i64) -> Result<Arc<CollectionState>> {
        if let Some(s) = read(&self.states).get(&collection_id) {
            return Ok(s.clone());
        }
        let coll = self
            .collection_by_id(collection_id)?
            .ok_or_else(|| anyhow!("no collection with id {collection_id}"))?;
        let idx_dir = self.dir.join("index");
        let meta_path = idx_dir.join(format!("c{collection_id}.json"));
        let loaded = read_meta(&meta_path).ok().and_then(|m| {
            if m.dim != coll.dim {
                return None;
            }
            let p = idx_dir.join(format!("c{collection_id}-g{}.usearch", m.generation));
            match UsearchIndex::load(&p, coll.dim, &self.params) {
                Ok(ix) => Some((ix, m)),
                Err(e) => {
                    tracing::warn!("vector index {} unusable ({e:#}); rebuilding", p.display());
                    None
                }
            }
        });
        let (index, mut meta, fresh) = match loaded {
            Some((ix, m)) => (ix, m, false),
            None => (
                UsearchIndex::new(coll.dim, &self.params)?,
                IndexMeta {
                    dim: coll.dim,
                    ..Default::default()
                },
                true,
            ),
        };
        let conn = lock(&self.conn);
        // Faces newer than the saved index (all of them for a fresh one).
        let mut added = 0usize;
        {
            let mut st = conn.prepare(
                "SELECT id, vector FROM face WHERE collection_id = ?1 AND id > ?2 ORDER BY id",
            )?;
            let mut rows = st.query(params![collection_id, meta.max_face_id])?;
            let mut batch: Vec<(u64, Vec<f32>)> = Vec::with_capacity(4096);
            let flush = |batch: &mut Vec<(u64, Vec<f32>)>| -> Result<()> {
                batch.par_chunks(256).try_for_each(|c| {
                    let items: Vec<(u64, &[f32])> = c
                        .iter()
                        .filter(|(id, _)| !index.contains(*id))
                        .map(|(id, v)| (*id, &v[..]))
                        .collect();
                    index.add_batch(&items)
                })?;
                batch.clear();
                Ok(())
            };
            while let Some(r) = rows.next()? {
                let id: i64 = r.get(0)?;
                let v = blob_to_vector(&r.get::<_, Vec<u8>>(1)?)
                    .filter(|v| v.len() == coll.dim)
                    .ok_or_else(|| {
                        anyhow!("face {id} has a malformed vector (run `visage check`)")
                    })?;
                meta.max_face_id = meta.max_face_id.max(id);
                batch.push((id as u64, v));
                added += 1;
                if batch.len() == 4096 {
                    // Reserve before parallel insertion so no thread grows the index.
                    index.reserve(index.len() + batch.len(), 0)?;
                    flush(&mut batch)?;
                }
            }
            index.reserve(index.len() + batch.len(), 0)?;
            flush(&mut batch)?;
        }
        // Deletions newer than the saved index.
        let mut removed = 0usize;
        {
            let mut st = conn.prepare(
                "SELECT seq, face_id FROM tombstone WHERE collection_id = ?1 AND seq > ?2",
            )?;
            let rows: Vec<(i64, i64)> = st
                .query_map(params![collection_id, meta.tombstone_seq], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            for (seq, face_id) in rows {
                if index.remove(face_id as u64)? {
                    removed += 1;
                }
                meta.tombstone_seq = meta.tombstone_seq.max(seq);
            }
        }
        if fresh {
            meta.tombstone_seq = conn.query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM tombstone WHERE collection_id = ?1",
                [collection_id],
                |r| r.get(0),
            )?;
        }
        // Attributes for filtering.
        let mut attrs = AttrTable::default();
        {
            let mut st = conn.prepare(
                "SELECT f.id, i.source_id, f.subject_id, i.captured_at, i.jurisdiction \
                 FROM face f JOIN image i ON i.id = f.image_id WHERE f.collection_id = ?1",
            )?;
            let mut rows = st.query([collection_id])?;
            while let Some(r) = rows.next()? {
                let j: Option<String> = r.get(4)?;
                let a = FaceAttr {
                    source_id: r.get(1)?,
                    subject_id: r.get(2)?,
                    captured_at: r.get(3)?,
                    jurisdiction: attrs.intern(j.as_deref()),
                };
                attrs.faces.insert(r.get::<_, i64>(0)? as u64, a);
            }
        }
        drop(conn);
        if attrs.faces.len() != index.len() {
            tracing::warn!(
                "collection {}: index holds {} vectors but {} faces exist (run `visage check --repair`)",
                coll.name,
                index.len(),
                attrs.faces.len()
            );
        }
        let state = Arc::new(CollectionState {
            id: collection_id,
            dim: coll.dim,
            index,
            attrs: RwLock::new(attrs),
            meta: Mutex::new(meta),
            dirty: AtomicBool::new(fresh || added > 0 || removed > 0),
            removed_since_save: AtomicBool::new(removed > 0),
        });
        write(&self.states).insert(collection_id, state.clone());
        Ok(state)
    }

    /// Drops a collection's index and rebuilds it from SQLite (used by `check --repair`).
    pub fn rebuild_index(&self, collection_id: i64) -> Result<()> {
        self.require_writable()?;
        let _w = lock(&self.write);
        write(&self.states).remove(&collection_id);
        let _ = fs::remove_file(
            self.dir
                .join("index")
                .join(format!("c{collection_id}.json")),
        );
        let s = self.state_locked(collection_id)?;
        self.save_state(&s)
    }

    /// Loads a collection's vector index now (otherwise it loads on first use).
    pub fn load_index(&self, collection_id: i64) -> Result<()> {
        self.state(collection_id).map(|_| ())
    }

    pub fn set_expansion_search(&self, collection_id: i64, ef: usize) -> Result<()> {
        self.state(collection_id)?.index.set_expansion_search(ef);
        Ok(())
    }

    // ---- reading --------------------------------------------------------------------------

    /// k nearest faces by cosine similarity, best first, filtered, joined with provenance.
    pub fn search(&self, q: &SearchQuery) -> Result<(Vec<Hit>, SearchTrace)> {
        let filter = q.filter.clone().validated()?;
        let state = self.state(q.collection_id)?;
        if q.vector.len() != state.dim {
            bail!(
                "probe vector has {} dimensions, the collection needs {}",
                q.vector.len(),
                state.dim
            );
        }
        let k = q.k.clamp(1, 10_000);
        // Quantised index storage ranks approximately: take more candidates and let the exact
        // re-score below (f32 vectors from SQLite) pick the final k.
        let want = if self.params.storage == crate::index::Storage::F32 {
            k
        } else {
            k.max(RERANK_CANDIDATES)
        };
        let t0 = std::time::Instant::now();
        let mut trace = SearchTrace::default();
        let cands: Vec<Neighbour> = if filter.is_empty() {
            trace.path = "hnsw";
            state.index.search(q.vector, want)?
        } else {
            let attrs = read(&state.attrs);
            let compiled = attrs.compile(&filter);
            let mut matching: Vec<u64> = Vec::new();
            let mut over = false;
            for (id, a) in &attrs.faces {
                if compiled.accepts(a) {
                    if matching.len() == EXACT_SCAN_MAX {
                        over = true;
                        break;
                    }
                    matching.push(*id);
                }
            }
            if !over {
                trace.path = "exact_filtered";
                trace.filter_matches = Some(matching.len());
                state.index.exact_among(q.vector, &matching, want)?
            } else {
                trace.path = "hnsw_filtered";
                let accept = |id: u64| attrs.faces.get(&id).is_some_and(|a| compiled.accepts(a));
                state.index.search_filtered(q.vector, want, &accept)?
            }
        };
        trace.candidates = cands.len();
        trace.index_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = std::time::Instant::now();
        // Exact re-score from the stored f32 vectors (the authoritative copy), then the top k
        // are joined with their provenance, the filter applied once more in SQL.
        let ids: Vec<i64> = cands.iter().map(|n| n.id as i64).collect();
        let vectors = self.vectors(&ids)?;
        let mut scored: Vec<Neighbour> = cands
            .iter()
            .filter_map(|n| {
                let v = vectors.get(&(n.id as i64))?;
                Some(Neighbour {
                    id: n.id,
                    score: visage_core::dot(q.vector, v),
                })
            })
            .filter(|n| q.threshold.is_none_or(|t| n.score >= t))
            .collect();
        crate::index::top_k(&mut scored, k);
        let ids: Vec<i64> = scored.iter().map(|n| n.id as i64).collect();
        let records = self.face_records(&ids, Some(&filter), Some(q.collection_id))?;
        let mut by_id: HashMap<i64, FaceRecord> = records.into_iter().map(|r| (r.id, r)).collect();
        let hits: Vec<Hit> = scored
            .into_iter()
            .filter_map(|n| {
                Some(Hit {
                    score: n.score,
                    fmr: None,
                    fmr_extrapolated: None,
                    expected_false_matches: None,
                    face: by_id.remove(&(n.id as i64))?,
                })
            })
            .collect();
        trace.join_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok((hits, trace))
    }

    fn vectors(&self, ids: &[i64]) -> Result<HashMap<i64, Vec<f32>>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let conn = lock(&self.conn);
        let mut st = conn.prepare(&format!(
            "SELECT id, vector FROM face WHERE id IN ({})",
            id_list(ids)
        ))?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        let mut out = HashMap::new();
        for r in rows {
            let (id, b) = r?;
            if let Some(v) = blob_to_vector(&b) {
                out.insert(id, v);
            }
        }
        Ok(out)
    }

    /// Stored vector of a face.
    pub fn face_vector(&self, id: i64) -> Result<Option<Vec<f32>>> {
        Ok(self.vectors(&[id])?.remove(&id))
    }

    pub fn face(&self, id: i64) -> Result<Option<FaceRecord>> {
        Ok(self.face_records(&[id], None, None)?.into_iter().next())
    }

    /// Faces in id order, optionally filtered; `after` pages by id.
    pub fn list_faces(
        &self,
        collection_id: Option<i64>,
        filter: &Filter,
        after: i64,
        limit: usize,
    ) -> Result<Vec<FaceRecord>> {
        let filter = filter.clone().validated()?;
        let (w, mut p) = filter.sql();
        let coll = match collection_id {
            Some(c) => {
                p.push(rusqlite::types::Value::Integer(c));
                "AND f.collection_id = ?"
            }
            None => "",
        };
        p.push(rusqlite::types::Value::Integer(after));
        p.push(rusqlite::types::Value::Integer(limit.min(100_000) as i64));
        let ids: Vec<i64> = {
            let conn = lock(&self.conn);
            let mut st = conn.prepare(&format!(
                "SELECT f.id FROM face f JOIN image i ON i.id = f.image_id WHERE {w} {coll} \
                 AND f.id > ? ORDER BY f.id LIMIT ?"
            ))?;
            let v = st
                .query_map(rusqlite::params_from_iter(p), |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            v
        };
        let mut recs = self.face_records(&ids, None, None)?;
        recs.sort_by_key(|r| r.id);
        Ok(recs)
    }

    /// Face ids of a subject.
    pub fn subject_faces(&self, subject_id: i64) -> Result<Vec<i64>> {
        let conn = lock(&self.conn);
        let mut st = conn.prepare("SELECT id FROM face WHERE subject_id = ?1 ORDER BY id")?;
        let v = st
            .query_map([subject_id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }

    fn face_records(
        &self,
        ids: &[i64],
        filter: Option<&Filter>,
        collection_id: Option<i64>,
    ) -> Result<Vec<FaceRecord>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let (w, mut p) = filter
            .map(|f| f.sql())
            .unwrap_or_else(|| ("1".into(), vec![]));
        let coll = match collection_id {
            Some(c) => {
                p.push(rusqlite::types::Value::Integer(c));
                "AND f.collection_id = ?"
            }
            None => "",
        };
        let conn = lock(&self.conn);
        let mut st = conn.prepare(&format!(
            "SELECT f.id, c.name, c.id, f.pack, f.bbox, f.landmarks, f.det_score, f.quality, \
             f.crop_sha, f.thumb_sha, f.created_at, f.subject_id, sj.label, \
             i.id, i.sha256, i.uri, i.page_uri, i.captured_at, i.gps_lat, i.gps_lon, \
             i.jurisdiction, i.jurisdiction_method, i.width, i.height, i.ingested_at, \
             s.id, s.collection_id, s.name, s.kind, s.uri, s.legal_basis, s.licence, \
             s.jurisdiction, s.created_at, i.external_id, i.licence, i.legal_basis \
             FROM face f JOIN image i ON i.id = f.image_id JOIN source s ON s.id = i.source_id \
             JOIN collection c ON c.id = f.collection_id LEFT JOIN subject sj ON sj.id = f.subject_id \
             WHERE f.id IN ({}) AND {w} {coll}",
            id_list(ids)
        ))?;
        let rows = st.query_map(rusqlite::params_from_iter(p), |r| {
            let bbox: String = r.get(4)?;
            let lm: String = r.get(5)?;
            let q: String = r.get(7)?;
            let lat: Option<f64> = r.get(18)?;
            let lon: Option<f64> = r.get(19)?;
            let subject_id: Option<i64> = r.get(11)?;
            let label: Option<String> = r.get(12)?;
            Ok(FaceRecord {
                id: r.get(0)?,
                collection: r.get(1)?,
                collection_id: r.get(2)?,
                pack: r.get(3)?,
                bbox: serde_json::from_str(&bbox).unwrap_or_default(),
                landmarks: serde_json::from_str(&lm).unwrap_or_default(),
                det_score: r.get(6)?,
                quality: serde_json::from_str(&q).unwrap_or(serde_json::Value::Null),
                crop_sha: r.get(8)?,
                thumb_sha: r.get(9)?,
                created_at: r.get(10)?,
                subject: subject_id
                    .zip(label)
                    .map(|(id, label)| SubjectRef { id, label }),
                image: ImageRecord {
                    id: r.get(13)?,
                    sha256: r.get(14)?,
                    uri: r.get(15)?,
                    page_uri: r.get(16)?,
                    captured_at: r.get(17)?,
                    gps: lat.zip(lon),
                    jurisdiction: r.get(20)?,
                    jurisdiction_method: r.get(21)?,
                    width: r.get(22)?,
                    height: r.get(23)?,
                    ingested_at: r.get(24)?,
                    external_id: r.get(34)?,
                    licence: r.get(35)?,
                    legal_basis: r.get(36)?,
                },
                source: Source {
                    id: r.get(25)?,
                    collection_id: r.get(26)?,
                    name: r.get(27)?,
                    kind: r.get(28)?,
                    uri: r.get(29)?,
                    legal_basis: r.get(30)?,
                    licence: r.get(31)?,
                    jurisdiction: r.get(32)?,
                    created_at: r.get(33)?,
                },
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Bytes of a stored blob (crop or thumbnail).
    pub fn blob(&self, sha: &str) -> Result<Vec<u8>> {
        self.blobs.get(sha)
    }

    /// Every face vector of a collection with its subject (benchmarks on real embeddings).
    pub fn labelled_vectors(&self, collection_id: i64) -> Result<Vec<(Option<i64>, Vec<f32>)>> {
        let conn = lock(&self.conn);
        let mut st = conn
            .prepare("SELECT subject_id, vector FROM face WHERE collection_id = ?1 ORDER BY id")?;
        let rows = st.query_map([collection_id], |r| {
            Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (s, b) = r?;
            if let Some(v) = blob_to_vector(&b) {
                out.push((s, v));
            }
        }
        Ok(out)
    }

    /// Records a new running job; returns its id.
    pub fn start_job(
        &self,
        kind: &str,
        collection: Option<&str>,
        args: &serde_json::Value,
    ) -> Result<i64> {
        self.insert_job(kind, collection, args, "running")
    }

    /// Starts the job `id` recorded earlier by [`Gallery::queue_job`] (it keeps the arguments
    /// it was queued with); fails when it is no longer queued.
    pub fn start_queued_job(&self, id: i64, kind: &str) -> Result<i64> {
        self.require_writable()?;
        let guard = lock(&self.jobs_conn);
        let conn = guard.as_ref().ok_or_else(|| anyhow!("no job log"))?;
        let n = conn.execute(
            "UPDATE job SET status = 'running', kind = ?2, pid = ?3, started_at = ?4, \
             updated_at = ?4 WHERE id = ?1 AND status = 'queued'",
            params![id, kind, std::process::id(), now()],
        )?;
        if n == 0 {
            bail!("job {id} is no longer queued");
        }
        Ok(id)
    }

    /// Updates a job's counts (and, when `status` is given, ends it).
    pub fn update_job(
        &self,
        id: i64,
        counts: &serde_json::Value,
        status: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        let guard = lock(&self.jobs_conn);
        let conn = guard.as_ref().ok_or_else(|| anyhow!("no job log"))?;
        let t = now();
        match status {
            None => conn.execute(
                "UPDATE job SET counts = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, counts.to_string(), t],
            )?,
            Some(st) => conn.execute(
                "UPDATE job SET counts = ?2, updated_at = ?3, status = ?4, error = ?5, \
                 finished_at = ?3 WHERE id = ?1",
                params![id, counts.to_string(), t, st, error],
            )?,
        };
        Ok(())
    }

    /// Records a job that will start later (status `queued`; `started_at` is the time it was
    /// queued until it starts); returns its id. Start it with [`Gallery::start_queued_job`]
    /// (the ingest does, given `IngestOptions::queued_job`).
    pub fn queue_job(
        &self,
        kind: &str,
        collection: Option<&str>,
        args: &serde_json::Value,
    ) -> Result<i64> {
        self.insert_job(kind, collection, args, "queued")
    }

    fn insert_job(
        &self,
        kind: &str,
        collection: Option<&str>,
        args: &serde_json::Value,
        status: &str,
    ) -> Result<i64> {
        self.require_writable()?;
        let guard = lock(&self.jobs_conn);
        let conn = guard.as_ref().ok_or_else(|| anyhow!("no job log"))?;
        let t = now();
        conn.execute(
            "INSERT INTO job (kind, collection, args, status, pid, started_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![
                kind,
                collection,
                args.to_string(),
                status,
                std::process::id(),
                t
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Ends every job still `queued` (their process stopped before running them) as
    /// `interrupted` with `error`; returns how many.
    pub fn interrupt_queued_jobs(&self, error: &str) -> Result<usize> {
        self.require_writable()?;
        let guard = lock(&self.jobs_conn);
        let Some(conn) = guard.as_ref() else {
            return Ok(0);
        };
        let t = now();
        Ok(conn.execute(
            "UPDATE job SET status = 'interrupted', error = ?1, updated_at = ?2, \
             finished_at = ?2 WHERE status = 'queued'",
            params![error, t],
        )?)
    }

    /// One job, or `None`.
    pub fn job(&self, id: i64) -> Result<Option<Job>> {
        let guard = lock(&self.jobs_conn);
        let Some(conn) = guard.as_ref() else {
            return Ok(None);
        };
        let j = conn
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM job WHERE id = ?1"),
                [id],
                job_row,
            )
            .optional()?;
        Ok(j.map(|mut j| {
            show_dead_running(std::slice::from_mut(&mut j));
            j
        }))
    }

    /// Jobs, newest first.
    pub fn jobs(&self, limit: usize) -> Result<Vec<Job>> {
        self.jobs_page(None, None, limit)
    }

    /// Jobs of `kind` (all kinds when `None`) with an id below `before`, newest first.
    pub fn jobs_page(
        &self,
        kind: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let guard = lock(&self.jobs_conn);
        let Some(conn) = guard.as_ref() else {
            return Ok(vec![]);
        };
        let mut st = conn.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM job WHERE (?2 IS NULL OR kind = ?2) \
             AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = st.query_map(params![limit as i64, kind, before], job_row)?;
        let mut v: Vec<Job> = rows.collect::<rusqlite::Result<_>>()?;
        show_dead_running(&mut v);
        Ok(v)
    }

    /// Faces searchable in one collection (from the loaded index's attribute table, so no
    /// table scan on the search path).
    pub fn indexed_faces(&self, collection_id: i64) -> Result<u64> {
        Ok(read(&self.state(collection_id)?.attrs).faces.len() as u64)
    }

    pub fn face_count(&self) -> Result<u64> {
        let conn = lock(&self.conn);
        Ok(conn.query_row("SELECT COUNT(*) FROM face", [], |r| r.get::<_, i64>(0))? as u64)
    }

    pub fn image_count(&self) -> Result<u64> {
        let conn = lock(&self.conn);
        Ok(conn.query_row("SELECT COUNT(*) FROM image", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Counts per collection, source and jurisdiction; bytes on disk and in memory.
    pub fn stats(&self) -> Result<Stats> {
        let mut st = Stats::default();
        let colls = self.collections()?;
        {
            let conn = lock(&self.conn);
            st.schema_version = schema::version(&conn)?;
            let count = |sql: &str| -> Result<u64> {
                Ok(conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64)
            };
            st.faces = count("SELECT COUNT(*) FROM face")?;
            st.images = count("SELECT COUNT(*) FROM image")?;
            st.subjects = count("SELECT COUNT(*) FROM subject")?;
            st.tombstones = count("SELECT COUNT(*) FROM tombstone")?;
            for c in &colls {
                let one = |sql: &str| -> Result<u64> {
                    Ok(conn.query_row(sql, [c.id], |r| r.get::<_, i64>(0))? as u64)
                };
                let grouped = |sql: &str| -> Result<Vec<NamedCount>> {
                    let mut s = conn.prepare(sql)?;
                    let v = s
                        .query_map([c.id], |r| {
                            Ok(NamedCount {
                                name: r
                                    .get::<_, Option<String>>(0)?
                                    .unwrap_or_else(|| "unknown".into()),
                                images: r.get::<_, i64>(1)? as u64,
                                faces: r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64,
                            })
                        })?
                        .collect::<rusqlite::Result<_>>()?;
                    Ok(v)
                };
                st.collections.push(CollectionStats {
                    id: c.id,
                    name: c.name.clone(),
                    pack: c.pack.clone(),
                    dim: c.dim,
                    faces: one("SELECT COUNT(*) FROM face WHERE collection_id = ?1")?,
                    images: one("SELECT COUNT(*) FROM image WHERE collection_id = ?1")?,
                    subjects: one("SELECT COUNT(*) FROM subject WHERE collection_id = ?1")?,
                    sources: grouped(
                        "SELECT s.name, COUNT(i.id), SUM(i.nf) FROM source s LEFT JOIN \
                         (SELECT i.id, i.source_id, (SELECT COUNT(*) FROM face f WHERE f.image_id = i.id) nf \
                          FROM image i) i ON i.source_id = s.id \
                         WHERE s.collection_id = ?1 GROUP BY s.id ORDER BY s.name",
                    )?,
                    jurisdictions: grouped(
                        "SELECT i.jurisdiction, COUNT(*), SUM((SELECT COUNT(*) FROM face f WHERE f.image_id = i.id)) \
                         FROM image i WHERE i.collection_id = ?1 GROUP BY i.jurisdiction ORDER BY i.jurisdiction",
                    )?,
                });
            }
        }
        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        for f in ["gallery.sqlite", "gallery.sqlite-wal", "gallery.sqlite-shm"] {
            st.bytes_on_disk.metadata += size(&self.dir.join(f));
        }
        st.bytes_on_disk.blobs = self.blobs.list()?.iter().map(|b| b.2).sum();
        if let Ok(rd) = fs::read_dir(self.dir.join("index")) {
            st.bytes_on_disk.index = rd.flatten().map(|e| size(&e.path())).sum();
        }
        st.bytes_on_disk.total =
            st.bytes_on_disk.metadata + st.bytes_on_disk.blobs + st.bytes_on_disk.index;
        for s in read(&self.states).values() {
            let attrs = read(&s.attrs);
            st.bytes_in_memory += (s.index.memory_bytes() + attrs.memory_bytes()) as u64;
        }
        Ok(st)
    }

    pub(crate) fn forget_state(&self, collection_id: i64) {
        write(&self.states).remove(&collection_id);
    }
}

impl Drop for Gallery {
    fn drop(&mut self) {
        if self.access == Access::ReadWrite {
            if let Err(e) = self.flush() {
                tracing::warn!("saving the vector index on close failed: {e:#}");
            }
        }
    }
}

fn read_meta(p: &Path) -> Result<IndexMeta> {
    Ok(serde_json::from_slice(&fs::read(p)?)?)
}

pub(crate) fn blob_referenced(conn: &Connection, sha: &str) -> Result<bool> {
    let n: i64 = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM face WHERE crop_sha = ?1 OR thumb_sha = ?1) + \
                (SELECT COUNT(*) FROM image WHERE original_blob = ?1)",
        [sha],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

pub(crate) fn id_list(ids: &[i64]) -> String {
    if ids.is_empty() {
        return "NULL".into();
    }
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn row_collection(r: &rusqlite::Row) -> rusqlite::Result<Collection> {
    Ok(Collection {
        id: r.get(0)?,
        name: r.get(1)?,
        pack: r.get(2)?,
        dim: r.get::<_, i64>(3)? as usize,
        created_at: r.get(4)?,
    })
}

fn row_source(r: &rusqlite::Row) -> rusqlite::Result<Source> {
    Ok(Source {
        id: r.get(0)?,
        collection_id: r.get(1)?,
        name: r.get(2)?,
        kind: r.get(3)?,
        uri: r.get(4)?,
        legal_basis: r.get(5)?,
        licence: r.get(6)?,
        jurisdiction: r.get(7)?,
        created_at: r.get(8)?,
    })
}
