//! Ingest jobs over HTTP: started from a server-side path (inside a folder the operator allowed
//! with `--ingest-root`) or from uploads (streamed to `<data>/staging/<job>/`), run in the
//! background by the engine's ingest (`visage_engine::ingest_paths`, the pipeline of
//! `visage ingest`), one at a time; status with live progress, a JSONL report of the items that
//! were not indexed, and cancellation.
//!
//! Every job is a row of the gallery's job log (`jobs.sqlite`) from the moment it is queued
//! (`queued`, then `running`, then `completed`, `failed`, `cancelled` or `interrupted`); the
//! engine's own job record is that same row (`IngestOptions::queued_job`). The
//! running job's progress lives in memory ([`Jobs`]) and is merged into what the status shows.
//! Jobs run on a dedicated thread with their own pipelines, loaded from the server's pack for
//! each job, so searches keep their pipeline while an ingest runs.
//!
//! Every endpoint is the policy action `ingest` (reading jobs too: job records hold server
//! paths, sources and legal bases, which are the ingesting administrators' business). Start,
//! cancel and end are written to the audit log with counts, never file contents or names.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::panic::AssertUnwindSafe;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::extract::{multipart::MultipartError, State};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path as UrlPath, Query, Request};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tower_http::timeout::TimeoutLayer;
use utoipa::{IntoParams, OpenApi, ToSchema};
use visage_engine::ingest::{ItemFailure, Progress};
use visage_engine::IngestOptions;
use visage_gallery::{Gallery, Job, NewSource};
use visage_governance::{Action, AuditEvent, AuthzContext, Decision, Principal};
use visage_vision::{FacePipeline, InferenceOptions, Pack, PipelinePool};

use crate::auth::Auth;
use crate::{authorize, blocking, ApiError, ApiResult, AppState, ErrorBody, ServeOptions};

/// Default largest upload (`ServeOptions::upload_limit`, `visage serve --upload-limit`).
pub const DEFAULT_UPLOAD_LIMIT: u64 = 2 << 30;
/// Longest time one upload request may take.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(3600);
/// Largest JSON job description.
const JSON_LIMIT: usize = 1 << 20;
/// Largest `meta` field of an upload.
const META_LIMIT: usize = 64 << 10;
/// Jobs waiting at most; more are refused with 503 `ingest_queue_full`.
const MAX_QUEUED: usize = 32;
/// Most `file` fields in one upload.
const MAX_FILES: usize = 100_000;
/// Largest report answered (a longer one ends with a `truncated` line).
const REPORT_LIMIT: u64 = 64 << 20;
/// Progress from the engine is kept at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Staged upload files are written in pieces of this size.
const WRITE_CHUNK: usize = 1 << 20;
/// Most jobs in one listing.
const MAX_LIST: usize = 200;

// ---------------------------------------------------------------------------------------------
// Shared state

/// Ingest settings and the in-memory side of the jobs: the queue and what is running.
pub(crate) struct Jobs {
    /// Canonical `--ingest-root` folders.
    roots: Vec<PathBuf>,
    upload_limit: u64,
    workers: usize,
    /// Canonical data directory.
    data_dir: PathBuf,
    pack: Pack,
    reg: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    queue: VecDeque<i64>,
    live: HashMap<i64, Live>,
    /// A worker thread is running (it exits when the queue is empty).
    worker: bool,
}

/// A job queued or running in this process.
struct Live {
    principal: Principal,
    decision: Decision,
    /// What to run; taken by the worker when the job starts (`None`: running).
    spec: Option<Spec>,
    stop: Arc<AtomicBool>,
    cancel_requested: bool,
    started: Option<Instant>,
    progress: Option<Progress>,
    progress_at: Option<Instant>,
}

struct Spec {
    inputs: Vec<PathBuf>,
    opts: IngestOptions,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Jobs {
    /// Checks the ingest roots; on a writable server, ends jobs a stopped server left queued
    /// (`interrupted`; running ones were ended by the gallery's recovery) and removes their
    /// staged uploads.
    pub(crate) fn open(
        data_dir: &Path,
        gallery: &Gallery,
        pack: Pack,
        opts: &ServeOptions,
    ) -> anyhow::Result<Jobs> {
        let mut roots = Vec::new();
        for r in &opts.ingest_roots {
            let c = std::fs::canonicalize(r)
                .with_context(|| format!("--ingest-root {}: cannot resolve it", r.display()))?;
            if !c.is_dir() {
                bail!("--ingest-root {} is not a folder", r.display());
            }
            roots.push(c);
        }
        if opts.upload_limit == 0 {
            bail!("the upload limit must be at least 1 byte");
        }
        let data_dir = std::fs::canonicalize(data_dir)
            .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
        if !opts.read_only {
            let n = gallery.interrupt_queued_jobs(
                "the server stopped before this job started; start it again",
            )?;
            if n > 0 {
                tracing::warn!("{n} queued ingest jobs of a stopped server marked interrupted");
            }
            let staging = data_dir.join("staging");
            if staging.exists() {
                std::fs::remove_dir_all(&staging)
                    .with_context(|| format!("cannot empty {}", staging.display()))?;
            }
        }
        let workers = match opts.ingest_workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .saturating_sub(1)
                .max(1),
            n => n,
        };
        Ok(Jobs {
            roots,
            upload_limit: opts.upload_limit,
            workers,
            data_dir,
            pack,
            reg: Mutex::new(Registry::default()),
        })
    }

    fn staging_root(&self) -> PathBuf {
        self.data_dir.join("staging")
    }

    fn staging(&self, id: i64) -> PathBuf {
        self.staging_root().join(id.to_string())
    }

    fn reports_dir(&self) -> PathBuf {
        self.data_dir.join("reports")
    }

    /// The job's report: lines written when it was queued, then the engine's.
    fn report_path(&self, id: i64) -> PathBuf {
        self.reports_dir().join(format!("ingest-{id}.jsonl"))
    }

    /// The engine's report while the job runs (appended to the report at the end).
    fn engine_report_path(&self, id: i64) -> PathBuf {
        self.reports_dir().join(format!("ingest-{id}.part.jsonl"))
    }

    /// One pipeline per worker, one intra-op thread each (the search pipeline is untouched).
    fn pool(&self) -> anyhow::Result<PipelinePool> {
        let opts = InferenceOptions {
            intra_threads: 1,
            spinning: false,
        };
        let workers = (0..self.workers)
            .map(|_| FacePipeline::from_pack(self.pack.clone(), &opts))
            .collect::<visage_vision::Result<Vec<_>>>()?;
        Ok(PipelinePool { workers })
    }

    fn record_progress(&self, id: i64, p: Progress) {
        let mut reg = lock(&self.reg);
        if let Some(l) = reg.live.get_mut(&id) {
            let due = l.progress_at.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
            if due || p.total == Some(p.done) {
                l.progress = Some(p);
                l.progress_at = Some(Instant::now());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request and response bodies

/// Where the images come from and on what basis they are held.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceJson {
    /// Name of the source within the collection (an existing source of that name is reused;
    /// its legal basis and jurisdiction must then be the same).
    pub name: String,
    /// Kind of source (default `directory` or `files` for a path, `upload` for uploads).
    pub kind: Option<String>,
    /// The legal basis the operator declares for holding these images (required).
    pub legal_basis: String,
    pub licence: Option<String>,
    /// ISO 3166-1 alpha-2 or ISO 3166-2 code (`FR`, `US-IL`); a jurisdiction the policy
    /// excludes is refused (403 `jurisdiction_excluded`).
    pub jurisdiction: Option<String>,
    /// Where the source came from (default: the path, for path jobs).
    pub uri: Option<String>,
}

/// Options of the engine's ingest.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobOptionsJson {
    /// Label faces with the name of the folder holding each photo (path jobs only).
    pub subject_from_parent: Option<bool>,
    /// Keep a copy of each original photo in the blob store.
    pub keep_originals: Option<bool>,
    /// Frames per second sampled from videos, in (0, 60] (default 2).
    pub video_fps: Option<f32>,
}

/// A job that ingests a server-side file or folder (inside an `--ingest-root`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PathJobJson {
    /// Collection to fill (created on first use, pinned to the server's pack).
    pub collection: String,
    /// Absolute server-side path of an image, video, archive, WARC file or folder (walked,
    /// symbolic links not followed). Manifests are not read over HTTP.
    pub path: String,
    pub source: SourceJson,
    pub options: Option<JobOptionsJson>,
}

/// The `meta` field of an upload job.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadMetaJson {
    pub collection: String,
    pub source: SourceJson,
    pub options: Option<JobOptionsJson>,
}

/// An upload job (multipart/form-data).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// JSON: `{"collection", "source": {...}, "options"?}` (UploadMetaJson); send it first.
    meta: String,
    /// Images, videos, tar/tar.gz/zip archives or WARC files (repeat the field). Manifests
    /// (`.csv`, `.jsonl`, `.ndjson`) are refused item by item (`manifest_not_allowed`).
    #[schema(value_type = Vec<String>, format = Binary)]
    file: Vec<Vec<u8>>,
}

/// An ingest job: what was asked, its status and its counts so far.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IngestJob {
    pub id: i64,
    /// queued, running, completed, failed, interrupted (the server stopped), cancelled.
    pub status: String,
    /// A cancellation was asked for; the job stops after the items in flight.
    pub cancel_requested: bool,
    /// `path`, `upload`, or `cli` (a `visage ingest` run).
    pub origin: String,
    pub collection: Option<String>,
    pub source: Option<String>,
    pub legal_basis: Option<String>,
    pub jurisdiction: Option<String>,
    /// The server-side path (path jobs; the inputs of a CLI run).
    pub path: Option<String>,
    /// Files received (upload jobs).
    pub files: Option<u64>,
    /// Bytes received (upload jobs).
    pub upload_bytes: Option<u64>,
    pub created_by: Option<String>,
    /// Unix seconds.
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    /// Jobs ahead of this one (queued jobs).
    pub queue_position: Option<u64>,
    /// Items (photos, videos, archive members, refused uploads) seen so far.
    pub items_seen: u64,
    /// Items in all, when known (plain files and folders; not inside archives).
    pub items_total: Option<u64>,
    pub images_indexed: u64,
    /// Images already in the collection (same content), skipped.
    pub duplicates: u64,
    pub images_without_faces: u64,
    pub videos: u64,
    pub faces_indexed: u64,
    /// Faces not indexed, by reason (`too_small`, `blurred`, `opted_out`, ...).
    pub faces_rejected: BTreeMap<String, u64>,
    pub faces_rejected_total: u64,
    /// Items that could not be read or decoded.
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub elapsed_s: Option<f64>,
    /// Items per second.
    pub rate: Option<f64>,
    /// Seconds left, while running with a known total.
    pub eta_s: Option<f64>,
    /// Why the job failed or was interrupted.
    pub error: Option<String>,
    /// The JSONL report (`/v1/ingest/jobs/{id}/report`), when one is kept.
    pub report: Option<String>,
}

/// Recent jobs, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<IngestJob>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<i64>,
    /// Largest upload this server takes, bytes.
    pub upload_limit: u64,
    /// Whether jobs may name server-side paths (`--ingest-root` given).
    pub path_jobs: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct JobsQuery {
    /// Jobs per page, 1 to 200 (default 50).
    pub(crate) limit: Option<usize>,
    /// Only jobs with an id below this (the previous page's `next_before`).
    pub(crate) before: Option<i64>,
}

impl JobsQuery {
    /// The page size asked for (400 outside 1 to MAX_LIST).
    pub(crate) fn page_size(&self) -> ApiResult<usize> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=MAX_LIST).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "limit must be 1 to {MAX_LIST}"
            )));
        }
        Ok(limit)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

fn none() -> AuthzContext {
    AuthzContext::default()
}

pub(crate) fn job_id(raw: &str) -> ApiResult<i64> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("job id {raw:?} is not an integer")))
}

fn text(name: &str, v: &str, max: usize) -> ApiResult<String> {
    let t = v.trim();
    if t.is_empty() {
        return Err(ApiError::bad_request(format!("`{name}` must not be empty")));
    }
    if t.chars().count() > max || t.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "`{name}` must be at most {max} characters, without control characters"
        )));
    }
    Ok(t.to_string())
}

fn opt_text(name: &str, v: &Option<String>, max: usize) -> ApiResult<Option<String>> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => text(name, s, max).map(Some),
    }
}

/// What the checks of a job description make of it.
struct Checked {
    opts: IngestOptions,
    /// The job row's arguments (what was asked; no file contents).
    args: Value,
}

/// Checks the collection, the source and the options common to both forms; refuses a source
/// in a jurisdiction the policy excludes (audited), exactly as `visage ingest` does.
fn check_meta(
    st: &AppState,
    p: &Principal,
    d: &Decision,
    meta: &UploadMetaJson,
    default_kind: &str,
    default_uri: Option<String>,
) -> ApiResult<Checked> {
    let (source, options) = (&meta.source, meta.options.as_ref());
    let collection = text("collection", &meta.collection, 100)?;
    let name = text("source.name", &source.name, 200)?;
    let legal_basis = text("source.legal_basis", &source.legal_basis, 1000)?;
    let kind = opt_text("source.kind", &source.kind, 50)?.unwrap_or_else(|| default_kind.into());
    let licence = opt_text("source.licence", &source.licence, 200)?;
    let uri = opt_text("source.uri", &source.uri, 2000)?.or(default_uri);
    let jurisdiction = match opt_text("source.jurisdiction", &source.jurisdiction, 20)? {
        None => None,
        Some(j) => Some(
            visage_gallery::normalize_jurisdiction(&j)
                .map_err(|e| ApiError::bad_request(format!("source.jurisdiction: {e:#}")))?,
        ),
    };
    if let Some(j) = &jurisdiction {
        if let Some(x) = st.gov.policy().jurisdiction_excluded(j) {
            let reason = format!("the source's jurisdiction {j} is excluded by policy ({x})");
            st.gov.append(
                AuditEvent::decision(p, Action::Ingest, d)
                    .decided(false, "policy:data.excluded_jurisdictions", &reason)
                    .details(json!({"event": "refused", "collection": collection,
                        "source": name, "jurisdiction": j})),
            )?;
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "jurisdiction_excluded",
                reason,
            ));
        }
    }
    let o = options.cloned().unwrap_or_default();
    let video_fps = o.video_fps.unwrap_or(2.0);
    if !(video_fps > 0.0 && video_fps <= 60.0) {
        return Err(ApiError::bad_request(
            "options.video_fps must be in (0, 60]",
        ));
    }
    // The collection must use this server's pack; an existing source must be the same
    // declaration (the engine would reuse the stored one silently).
    let pack = st.jobs.pack.id();
    let existing = st
        .gallery
        .collections()
        .map_err(ApiError::internal)?
        .into_iter()
        .find(|c| c.name == collection);
    if existing.is_none() {
        // A new collection follows the rule of POST /v1/collections.
        visage_gallery::gallery::subjects::validate_collection_name(&collection)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))?;
    }
    if let Some(c) = existing {
        if c.pack != pack {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "pack_mismatch",
                format!(
                    "collection {collection} uses the pack {}, this server runs {pack}",
                    c.pack
                ),
            ));
        }
        let sources = st.gallery.sources(c.id).map_err(ApiError::internal)?;
        same_declaration(&collection, &sources, &name, &legal_basis, &jurisdiction)?;
    }
    let source = NewSource {
        name: name.clone(),
        kind: kind.clone(),
        uri: uri.clone(),
        legal_basis: Some(legal_basis.clone()),
        licence: licence.clone(),
        jurisdiction: jurisdiction.clone(),
    };
    let mut opts = IngestOptions::new(&collection, source);
    opts.excluded_jurisdictions = st.excluded_jurisdictions();
    opts.subject_from_parent = o.subject_from_parent.unwrap_or(false);
    opts.keep_originals = o.keep_originals.unwrap_or(false);
    opts.video_fps = video_fps;
    let args = json!({
        "collection": collection,
        "source": {"name": name, "kind": kind, "legal_basis": legal_basis, "licence": licence,
                   "jurisdiction": jurisdiction, "uri": uri},
        "options": {"subject_from_parent": opts.subject_from_parent,
                    "keep_originals": opts.keep_originals, "video_fps": video_fps},
        "created_by": {"user_id": p.user_id, "username": p.username, "org_id": p.org.id},
        "queued_at": unix_now(),
    });
    Ok(Checked { opts, args })
}

/// An existing source of that name must have been declared with the same legal basis and
/// jurisdiction (the stores reuse a source by name, so a new declaration would otherwise be
/// dropped silently and the photos held under the old one): 409 `source_conflict`.
pub(crate) fn same_declaration(
    collection: &str,
    sources: &[visage_gallery::Source],
    name: &str,
    legal_basis: &str,
    jurisdiction: &Option<String>,
) -> ApiResult<()> {
    let Some(s) = sources.iter().find(|s| s.name == name) else {
        return Ok(());
    };
    if s.legal_basis.as_deref() == Some(legal_basis) && &s.jurisdiction == jurisdiction {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "source_conflict",
        format!(
            "source {name} of collection {collection} was declared with legal basis {:?} and \
             jurisdiction {:?}; declare the same, or use another source name",
            s.legal_basis.as_deref().unwrap_or_default(),
            s.jurisdiction.as_deref().unwrap_or_default()
        ),
    ))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn is_manifest_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with(".jsonl") || n.ends_with(".ndjson") || n.ends_with(".csv")
}

/// `path` removed of `.` and `..` without touching the file system (`None`: it climbs above
/// the root).
fn lexical(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => out.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Some(out)
}

fn outside(path: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "path_outside_roots",
        format!("{path} is not inside a folder this server may ingest from (--ingest-root)"),
    )
}

/// Resolves a path job's path: inside a root, lexically and once every link is resolved.
fn resolve_path(jobs: &Jobs, raw: &str) -> ApiResult<PathBuf> {
    resolve_under_roots(&jobs.roots, Some(&jobs.data_dir), raw)
}

/// `raw` resolved inside one of `roots` (canonical folders), lexically and once every link is
/// resolved; never in or above `data_dir`; never a manifest.
pub(crate) fn resolve_under_roots(
    roots: &[PathBuf],
    data_dir: Option<&Path>,
    raw: &str,
) -> ApiResult<PathBuf> {
    if roots.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ingest_path_disabled",
            "this server ingests no server-side paths (start it with --ingest-root DIR); \
             upload the files instead",
        ));
    }
    let path = Path::new(raw);
    if raw.trim().is_empty() || !path.is_absolute() || raw.contains('\0') {
        return Err(ApiError::bad_request("`path` must be an absolute path"));
    }
    let inside = |p: &Path| roots.iter().any(|r| p.starts_with(r));
    // Refused before any file system access, so nothing is learnt about paths elsewhere.
    match lexical(path) {
        Some(l) if inside(&l) => {}
        _ => return Err(outside(raw)),
    }
    let canonical = std::fs::canonicalize(path).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "path_not_found",
            format!("{raw} cannot be opened: {e}"),
        )
    })?;
    if !inside(&canonical) {
        return Err(outside(raw));
    }
    if data_dir.is_some_and(|d| canonical.starts_with(d) || d.starts_with(&canonical)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "path_in_data_dir",
            format!("{raw} is in or holds the data directory, which is never ingested"),
        ));
    }
    if canonical.is_file()
        && canonical
            .file_name()
            .is_some_and(|n| is_manifest_name(&n.to_string_lossy()))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "manifest_not_allowed",
            "manifests are not read over HTTP (their rows can name any file on the server); \
             ingest the folder, or use `visage ingest` with the manifest",
        ));
    }
    Ok(canonical)
}

// ---------------------------------------------------------------------------------------------
// Queue and worker

impl AppState {
    /// Records the job (`queued`), registers it and makes sure a worker runs it.
    fn enqueue(
        &self,
        p: &Principal,
        d: &Decision,
        args: Value,
        collection: &str,
        spec: impl FnOnce(i64) -> anyhow::Result<Spec>,
    ) -> ApiResult<i64> {
        if lock(&self.jobs.reg).queue.len() >= MAX_QUEUED {
            return Err(queue_full());
        }
        let id = self
            .gallery
            .queue_job("ingest", Some(collection), &args)
            .map_err(ApiError::internal)?;
        let spec = match spec(id) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.gallery.update_job(
                    id,
                    &json!({}),
                    Some("failed"),
                    Some("could not be staged"),
                );
                return Err(ApiError::internal(e));
            }
        };
        let mut reg = lock(&self.jobs.reg);
        reg.queue.push_back(id);
        reg.live.insert(
            id,
            Live {
                principal: p.clone(),
                decision: d.clone(),
                spec: Some(spec),
                stop: Arc::new(AtomicBool::new(false)),
                cancel_requested: false,
                started: None,
                progress: None,
                progress_at: None,
            },
        );
        if !reg.worker {
            let st = self.clone();
            let spawned = std::thread::Builder::new()
                .name("visage-ingest".into())
                .spawn(move || worker(st));
            match spawned {
                Ok(_) => reg.worker = true,
                Err(e) => {
                    reg.queue.pop_back();
                    reg.live.remove(&id);
                    drop(reg);
                    let _ = self.gallery.update_job(
                        id,
                        &json!({}),
                        Some("failed"),
                        Some("no worker thread"),
                    );
                    return Err(ApiError::internal(anyhow::anyhow!(
                        "cannot start the ingest thread: {e}"
                    )));
                }
            }
        }
        Ok(id)
    }
}

fn queue_full() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ingest_queue_full",
        format!("{MAX_QUEUED} ingest jobs are already waiting; try again when some have run"),
    )
}

/// Runs queued jobs one after the other; exits when the queue is empty (so an idle server
/// holds no worker and no pipelines).
fn worker(st: AppState) {
    loop {
        let next = {
            let mut reg = lock(&st.jobs.reg);
            let Some(id) = reg.queue.pop_front() else {
                reg.worker = false;
                return;
            };
            match reg.live.get_mut(&id) {
                Some(l) => {
                    l.started = Some(Instant::now());
                    l.spec.take().map(|s| (id, s, l.stop.clone()))
                }
                None => None,
            }
        };
        let Some((id, spec, stop)) = next else {
            continue;
        };
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| run_job(&st, id, &spec, &stop)));
        let outcome = run.unwrap_or_else(|_| Err(anyhow::anyhow!("the ingest panicked")));
        finish(&st, id, outcome);
    }
}

fn run_job(
    st: &AppState,
    id: i64,
    spec: &Spec,
    stop: &AtomicBool,
) -> anyhow::Result<visage_engine::IngestReport> {
    let pool = st.jobs.pool()?;
    let mut opts = spec.opts.clone();
    opts.report = Some(st.jobs.engine_report_path(id));
    opts.queued_job = Some(id);
    let progress = |p: Progress| st.jobs.record_progress(id, p);
    visage_engine::ingest_paths(&st.gallery, &pool, &spec.inputs, &opts, stop, &progress)
}

/// Ends a job: final status and counts in its row, the report completed, the staged uploads
/// removed, the end audited.
fn finish(st: &AppState, id: i64, outcome: anyhow::Result<visage_engine::IngestReport>) {
    // The job stays in the registry (shown `running`) until its row has its final status, so
    // whoever sees the end also sees the report complete and the staged files gone.
    let (cancelled, total, who) = {
        let reg = lock(&st.jobs.reg);
        match reg.live.get(&id) {
            Some(l) => (
                l.cancel_requested,
                l.progress.and_then(|p| p.total),
                Some((l.principal.clone(), l.decision.clone())),
            ),
            None => (false, None, None),
        }
    };
    let row = st.gallery.job(id).ok().flatten();
    let (status, counts, error) = match outcome {
        Ok(r) => {
            let status = match r.status.as_str() {
                "interrupted" if cancelled => "cancelled",
                s => s,
            }
            .to_string();
            let mut counts = serde_json::to_value(&r.counts).unwrap_or_else(|_| json!({}));
            counts["elapsed_s"] = json!(r.elapsed_s);
            if status == "completed" {
                counts["items_total"] = json!(r.counts.images_seen);
            } else if let Some(t) = total {
                counts["items_total"] = json!(t);
            }
            (status, counts, None)
        }
        Err(e) => {
            tracing::warn!("ingest job {id} failed: {e:#}");
            let counts = row
                .as_ref()
                .map(|j| j.counts.clone())
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            ("failed".to_string(), counts, Some(format!("{e:#}")))
        }
    };
    if let Err(e) = append_engine_report(&st.jobs, id) {
        tracing::error!("cannot complete the report of ingest job {id}: {e:#}");
    }
    let staging = st.jobs.staging(id);
    if staging.exists() {
        if let Err(e) = std::fs::remove_dir_all(&staging) {
            tracing::error!("cannot remove {}: {e}", staging.display());
        }
    }
    if let (Some((principal, decision)), Some(row)) = (who, row) {
        let v = view(
            &Job {
                status: status.clone(),
                counts: counts.clone(),
                error: error.clone(),
                ..row
            },
            None,
        );
        let details = json!({
            "event": "finished", "job_id": id.to_string(), "status": status,
            "collection": v.collection, "source": v.source,
            "items_seen": v.items_seen.to_string(),
            "images_indexed": v.images_indexed.to_string(),
            "duplicates": v.duplicates.to_string(),
            "faces_indexed": v.faces_indexed.to_string(),
            "faces_rejected": v.faces_rejected_total.to_string(),
            "errors": v.errors.to_string(),
        });
        let ev = AuditEvent::decision(&principal, Action::Ingest, &decision)
            .result_count(v.faces_indexed)
            .details(details);
        if let Err(e) = st.gov.append(ev) {
            tracing::error!("cannot audit the end of ingest job {id}: {e:#}");
        }
    }
    if let Err(e) = st
        .gallery
        .update_job(id, &counts, Some(&status), error.as_deref())
    {
        tracing::error!("cannot record the end of ingest job {id}: {e:#}");
    }
    lock(&st.jobs.reg).live.remove(&id);
}

/// Moves the engine's report lines to the end of the job's report.
fn append_engine_report(jobs: &Jobs, id: i64) -> anyhow::Result<()> {
    let part = jobs.engine_report_path(id);
    if !part.exists() {
        return Ok(());
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(jobs.report_path(id))?;
    std::io::copy(&mut std::fs::File::open(&part)?, &mut out)?;
    out.sync_all()?;
    std::fs::remove_file(&part)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Views

fn count(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn count_map(v: &Value, k: &str) -> BTreeMap<String, u64> {
    v.get(k)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n)))
                .collect()
        })
        .unwrap_or_default()
}

/// A job's elapsed seconds, rate (items per second) and seconds left, rounded as the API
/// shows them: no rate while queued, a time left only while running with a known total.
pub(crate) fn pace(
    status: &str,
    seen: u64,
    total: Option<u64>,
    elapsed: Option<f64>,
) -> (Option<f64>, Option<f64>, Option<f64>) {
    let rate = elapsed
        .filter(|e| *e > 0.0 && status != "queued")
        .map(|e| seen as f64 / e);
    let eta = match (status == "running", total, rate) {
        (true, Some(t), Some(r)) if r > 0.0 => Some((t.saturating_sub(seen) as f64 / r).round()),
        _ => None,
    };
    (
        elapsed.map(|e| (e * 10.0).round() / 10.0),
        rate.map(|r| (r * 100.0).round() / 100.0),
        eta,
    )
}

pub(crate) fn str_at(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for k in path {
        cur = cur.get(k)?;
    }
    cur.as_str().map(String::from)
}

/// What the in-memory registry adds to a row.
#[derive(Clone, Copy)]
struct LiveView {
    /// Taken by the worker (its row may already hold the engine's end status while the
    /// job is being finished).
    running: bool,
    cancel_requested: bool,
    started: Option<Instant>,
    progress: Option<Progress>,
    queue_position: Option<u64>,
}

fn live_view(jobs: &Jobs, id: i64) -> Option<LiveView> {
    let reg = lock(&jobs.reg);
    let l = reg.live.get(&id)?;
    Some(LiveView {
        running: l.spec.is_none(),
        cancel_requested: l.cancel_requested,
        started: l.started,
        progress: l.progress,
        queue_position: reg.queue.iter().position(|q| *q == id).map(|n| n as u64),
    })
}

/// The job row (and, while it runs here, its live progress) as the API shows it.
fn view(j: &Job, live: Option<LiveView>) -> IngestJob {
    let a = &j.args;
    let c = &j.counts;
    let origin = str_at(a, &["origin"]).unwrap_or_else(|| "cli".into());
    let (source, path) = if origin == "cli" {
        let inputs = a.get("inputs").and_then(Value::as_array).map(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        });
        (str_at(a, &["source"]), inputs)
    } else {
        (str_at(a, &["source", "name"]), str_at(a, &["path"]))
    };
    // Uploads refused before the engine saw them (manifests) count as failed items.
    let refused = count(a, "refused");
    let mut errors_by_code = count_map(c, "errors_by_code");
    for (k, n) in count_map(a, "refused_by_code") {
        *errors_by_code.entry(k).or_default() += n;
    }
    let faces_rejected = count_map(c, "faces_rejected");
    let mut seen = count(c, "images_seen");
    let mut faces = count(c, "faces_indexed");
    let mut total = c.get("items_total").and_then(Value::as_u64);
    let live_progress = live.and_then(|l| l.progress);
    if let Some(p) = live_progress {
        seen = seen.max(p.done);
        faces = faces.max(p.faces);
        total = p.total;
    }
    let status = match live {
        Some(l) if l.running => "running".to_string(),
        Some(_) => "queued".to_string(),
        None => j.status.clone(),
    };
    let elapsed = match (live.and_then(|l| l.started), status == "running") {
        (Some(t), true) => Some(t.elapsed().as_secs_f64()),
        _ => c.get("elapsed_s").and_then(Value::as_f64).or_else(|| {
            j.finished_at
                .filter(|_| status != "queued")
                .map(|f| (f - j.started_at).max(0) as f64)
        }),
    };
    let (elapsed_s, rate, eta_s) = pace(&status, seen, total, elapsed);
    let report = (origin != "cli").then(|| format!("/v1/ingest/jobs/{}/report", j.id));
    IngestJob {
        id: j.id,
        status: status.clone(),
        cancel_requested: live.is_some_and(|l| l.cancel_requested),
        origin,
        collection: j.collection.clone(),
        source,
        legal_basis: str_at(a, &["source", "legal_basis"]),
        jurisdiction: str_at(a, &["source", "jurisdiction"]),
        path,
        files: a.get("files").and_then(Value::as_u64),
        upload_bytes: a.get("bytes").and_then(Value::as_u64),
        created_by: str_at(a, &["created_by", "username"]),
        queued_at: a.get("queued_at").and_then(Value::as_i64),
        started_at: (j.status != "queued").then_some(j.started_at),
        updated_at: j.updated_at,
        finished_at: j.finished_at.filter(|_| live.is_none()),
        queue_position: live.and_then(|l| l.queue_position),
        items_seen: seen + refused,
        items_total: total.map(|t| t + refused),
        images_indexed: count(c, "images_indexed"),
        duplicates: count(c, "images_skipped_known"),
        images_without_faces: count(c, "images_without_faces"),
        videos: count(c, "videos"),
        faces_indexed: faces,
        faces_rejected_total: faces_rejected.values().sum(),
        faces_rejected,
        errors: count(c, "errors") + refused,
        errors_by_code,
        elapsed_s,
        rate,
        eta_s,
        error: j.error.clone(),
        report,
    }
}

fn load_view(st: &AppState, id: i64) -> ApiResult<IngestJob> {
    let j = st
        .gallery
        .job(id)
        .map_err(ApiError::internal)?
        .filter(|j| j.kind == "ingest")
        .ok_or_else(|| ApiError::not_found(format!("no ingest job with id {id}")))?;
    Ok(view(&j, live_view(&st.jobs, id)))
}

fn accepted(v: IngestJob) -> Response {
    let loc = format!("/v1/ingest/jobs/{}", v.id);
    let mut res = (StatusCode::ACCEPTED, Json(v)).into_response();
    if let Ok(h) = HeaderValue::from_str(&loc) {
        res.headers_mut().insert(header::LOCATION, h);
    }
    res
}

fn audit_started(st: &AppState, p: &Principal, d: &Decision, id: i64, args: &Value) {
    let mut details = json!({"event": "queued", "job_id": id.to_string()});
    for k in ["origin", "collection", "path"] {
        if let Some(v) = args.get(k) {
            details[k] = v.clone();
        }
    }
    for k in ["files", "bytes", "refused"] {
        if let Some(n) = args.get(k).and_then(Value::as_u64) {
            details[k] = json!(n.to_string());
        }
    }
    if let Some(s) = args.get("source") {
        details["source"] = s.get("name").cloned().unwrap_or(Value::Null);
        details["legal_basis"] = s.get("legal_basis").cloned().unwrap_or(Value::Null);
        details["jurisdiction"] = s.get("jurisdiction").cloned().unwrap_or(Value::Null);
    }
    let ev = AuditEvent::decision(p, Action::Ingest, d).details(details);
    if let Err(e) = st.gov.append(ev) {
        tracing::error!("cannot audit ingest job {id}: {e:#}");
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// Starts an ingest job: JSON with a server-side `path` inside an `--ingest-root`, or
/// multipart/form-data with a `meta` field and `file` fields (staged under the data
/// directory, removed when the job ends). Answers 202 with the job and its `Location`; the
/// job runs in the background, one at a time.
#[utoipa::path(post, path = "/v1/ingest/jobs", tag = "ingest",
    request_body(content(
        (PathJobJson = "application/json"),
        (UploadForm = "multipart/form-data"),
    )),
    responses(
        (status = 202, description = "The job, queued; `Location` is its address",
            body = IngestJob),
        (status = 400, description = "`bad_request`, `bad_json`, `path_not_found`, \
            `manifest_not_allowed`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action ingest), `ingest_path_disabled` \
            (no --ingest-root), `path_outside_roots`, `jurisdiction_excluded`",
            body = ErrorBody),
        (status = 408, description = "`timeout` (3600 s for uploads)", body = ErrorBody),
        (status = 409, description = "`read_only`, `pack_mismatch`, `source_conflict`",
            body = ErrorBody),
        (status = 413, description = "`payload_too_large` (the upload limit, default 2 GiB; \
            1 MiB for JSON)", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 503, description = "`ingest_queue_full`", body = ErrorBody),
    ))]
pub(crate) async fn start_job(
    State(st): State<AppState>,
    auth: Result<Auth, ApiError>,
    req: Request,
) -> ApiResult<Response> {
    let p = match auth {
        Ok(Auth(p)) => p,
        Err(e) => return Err(drained(req, e).await),
    };
    let d = match authorize(&st, &p, Action::Ingest, &none()).and_then(|d| {
        st.writable()?;
        Ok(d)
    }) {
        Ok(d) => d,
        Err(e) => return Err(drained(req, e).await),
    };
    match job_form(req).await? {
        JobForm::Upload(req) => upload_job(st, p, d, req).await,
        JobForm::Path(j) => path_job(st, p, d, j).await,
    }
}

/// A job request: uploads (the request, its body unread) or a server-side path (read).
pub(crate) enum JobForm {
    Upload(Request),
    Path(PathJobJson),
}

/// Tells the two forms of a job request apart by their content type: multipart/form-data
/// (uploads) or JSON (a path, at most 1 MiB); anything else is 415.
pub(crate) async fn job_form(req: Request) -> ApiResult<JobForm> {
    let ctype = crate::input::content_type(&req);
    if ctype.starts_with("multipart/form-data") {
        return Ok(JobForm::Upload(req));
    }
    if !ctype.starts_with("application/json") {
        let e = ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json (a server-side path) or multipart/form-data (uploads)",
        );
        return Err(drained(req, e).await);
    }
    if content_length(&req).is_some_and(|n| n > JSON_LIMIT as u64) {
        return Err(too_large(JSON_LIMIT as u64));
    }
    let body = axum::body::to_bytes(req.into_body(), JSON_LIMIT)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
    Ok(JobForm::Path(crate::input::json(&body)?))
}

/// Reads and drops a small refused body (up to 1 MiB, for 5 s at most) before answering, so
/// the client gets the answer instead of a connection reset while it is still sending.
pub(crate) async fn drained(req: Request, e: ApiError) -> ApiError {
    const DRAIN: usize = 1 << 20;
    if content_length(&req).is_some_and(|n| n <= DRAIN as u64) {
        let body = axum::body::to_bytes(req.into_body(), DRAIN);
        let _ = tokio::time::timeout(Duration::from_secs(5), body).await;
    }
    e
}

pub(crate) fn content_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

pub(crate) fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is over {limit} bytes"),
    )
}

async fn path_job(st: AppState, p: Principal, d: Decision, j: PathJobJson) -> ApiResult<Response> {
    let v = blocking(&st, move |st| {
        let path = match resolve_path(&st.jobs, &j.path) {
            Ok(p) => p,
            Err(e) => {
                // Paths outside the roots are worth knowing about: audited.
                if e.code == "path_outside_roots" || e.code == "ingest_path_disabled" {
                    st.gov.append(
                        AuditEvent::decision(&p, Action::Ingest, &d)
                            .decided(false, &format!("builtin:{}", e.code), &e.message)
                            .details(json!({"event": "refused", "path": j.path})),
                    )?;
                }
                return Err(e);
            }
        };
        let kind = if path.is_dir() { "directory" } else { "files" };
        let shown = path.display().to_string();
        let meta = UploadMetaJson {
            collection: j.collection.clone(),
            source: j.source.clone(),
            options: j.options.clone(),
        };
        let mut c = check_meta(st, &p, &d, &meta, kind, Some(shown.clone()))?;
        c.args["origin"] = json!("path");
        c.args["path"] = json!(shown);
        c.args["inputs"] = json!([shown]); // what `visage jobs` shows
        let collection = c.opts.collection.clone();
        let opts = c.opts;
        let id = st.enqueue(&p, &d, c.args.clone(), &collection, |id| {
            create_report(&st.jobs, id, &[])?;
            Ok(Spec {
                inputs: vec![path],
                opts,
            })
        })?;
        audit_started(st, &p, &d, id, &c.args);
        load_view(st, id)
    })
    .await?;
    Ok(accepted(v))
}

/// Creates the job's report with the lines known when it is queued.
fn create_report(jobs: &Jobs, id: i64, refused: &[ItemFailure]) -> anyhow::Result<()> {
    std::fs::create_dir_all(jobs.reports_dir())?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(jobs.report_path(id))?);
    for r in refused {
        writeln!(
            f,
            "{}",
            json!({"kind": "failed", "location": r.location, "code": r.code, "message": r.message})
        )?;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// A staging folder that is removed when dropped, unless kept.
pub(crate) struct StagingDir {
    pub(crate) path: PathBuf,
    pub(crate) keep: bool,
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One staged file, written in 1 MiB pieces on the blocking pool.
struct StagedFile {
    file: Option<std::fs::File>,
    buf: Vec<u8>,
}

impl StagedFile {
    async fn create(path: PathBuf) -> ApiResult<StagedFile> {
        let file = tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))
        })
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("task failed: {e}")))?
        .map_err(ApiError::internal)?;
        Ok(StagedFile {
            file: Some(file),
            buf: Vec::with_capacity(WRITE_CHUNK),
        })
    }

    async fn flush(&mut self) -> ApiResult<()> {
        let Some(mut f) = self.file.take() else {
            return Ok(());
        };
        let mut buf = std::mem::take(&mut self.buf);
        let (f, mut buf) = tokio::task::spawn_blocking(move || {
            f.write_all(&buf)?;
            buf.clear();
            Ok::<_, std::io::Error>((f, buf))
        })
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("task failed: {e}")))?
        .map_err(|e| ApiError::internal(anyhow::anyhow!("cannot write a staged upload: {e}")))?;
        buf.reserve(WRITE_CHUNK);
        self.buf = buf;
        self.file = Some(f);
        Ok(())
    }

    async fn push(&mut self, b: &[u8]) -> ApiResult<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= WRITE_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }
}

fn multipart_error(e: MultipartError) -> ApiError {
    ApiError::body(
        e.status(),
        format!("malformed multipart body: {}", e.body_text()),
    )
}

/// The client's file name as shown in reports: its last component, printable, at most 200
/// characters.
fn display_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    last.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// A safe file name made from the client's: `[A-Za-z0-9._-]` only, no leading dot, at most
/// 80 characters (the end kept, for the extension).
fn safe_name(shown: &str) -> String {
    let s: String = shown
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches(['.', '-']);
    let n = s.chars().count();
    let s: String = s.chars().skip(n.saturating_sub(80)).collect();
    if s.is_empty() {
        "file".into()
    } else {
        s
    }
}

/// An upload read to its end.
pub(crate) struct Received {
    /// The `meta` field, as sent.
    pub(crate) meta: Vec<u8>,
    /// Names of the files staged in the folder (`NNNNN-name`, `safe_name`), in the order
    /// received.
    pub(crate) staged: Vec<String>,
    /// Files refused on arrival (manifests), located by the client's file name.
    pub(crate) refused: Vec<ItemFailure>,
    /// Bytes of the body's fields.
    pub(crate) bytes: u64,
}

impl StagingDir {
    /// A new folder `tmp-<random>` under `root` (created as needed), removed when dropped.
    pub(crate) async fn create(root: &Path) -> ApiResult<StagingDir> {
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
        let path = root.join(format!("tmp-{}", hex::encode(rnd)));
        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))
        })
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("task failed: {e}")))?
        .map_err(ApiError::internal)?;
        Ok(StagingDir { path, keep: false })
    }
}

/// Reads a multipart upload: one `meta` field, passed to `check` as soon as it is read (so a
/// bad description fails before the files are read), and `file` fields, each streamed into
/// `dir`, `limit` bytes in all (413 `payload_too_large` beyond). Manifests are refused file
/// by file (`manifest_not_allowed`); an upload without `meta` or without files is a 400.
pub(crate) async fn receive_upload<F, Fut>(
    req: Request,
    dir: &Path,
    limit: u64,
    mut check: F,
) -> ApiResult<Received>
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ApiResult<()>>,
{
    let mut mp = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::body(e.status(), e.body_text()))?;
    let mut meta: Option<Vec<u8>> = None;
    let mut staged: Vec<String> = Vec::new();
    let mut refused: Vec<ItemFailure> = Vec::new();
    let mut bytes: u64 = 0;
    let mut n = 0usize;
    loop {
        let mut field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e)),
        };
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "meta" => {
                if meta.is_some() {
                    return Err(ApiError::bad_request("send one `meta` field"));
                }
                let mut m = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    bytes += chunk.len() as u64;
                    m.extend_from_slice(&chunk);
                    if m.len() > META_LIMIT {
                        return Err(ApiError::bad_request(format!(
                            "the `meta` field is over {META_LIMIT} bytes"
                        )));
                    }
                }
                check(m.clone()).await?;
                meta = Some(m);
            }
            "file" => {
                let shown = display_name(field.file_name().unwrap_or(""));
                if staged.len() + refused.len() >= MAX_FILES {
                    return Err(ApiError::bad_request(format!(
                        "at most {MAX_FILES} files per upload"
                    )));
                }
                if is_manifest_name(&shown) {
                    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                        bytes += chunk.len() as u64;
                        if bytes > limit {
                            return Err(too_large(limit));
                        }
                    }
                    refused.push(ItemFailure {
                        location: shown,
                        code: "manifest_not_allowed".into(),
                        message: "manifests are not read over HTTP (their rows can name any \
                                  file on the server); upload the photos themselves"
                            .into(),
                    });
                    continue;
                }
                n += 1;
                let fname = format!("{n:05}-{}", safe_name(&shown));
                let path = dir.join(&fname);
                let mut out = StagedFile::create(path.clone()).await?;
                let mut size = 0u64;
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    bytes += chunk.len() as u64;
                    size += chunk.len() as u64;
                    if bytes > limit {
                        return Err(too_large(limit));
                    }
                    out.push(&chunk).await?;
                }
                out.flush().await?;
                drop(out);
                if size == 0 && shown.is_empty() {
                    // A form's file input left empty sends an empty, nameless part.
                    let _ = std::fs::remove_file(&path);
                    n -= 1;
                    continue;
                }
                staged.push(fname);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown field {other:?}: send `meta` and `file` fields"
                )))
            }
        }
    }
    let Some(meta) = meta else {
        return Err(ApiError::bad_request(
            "the `meta` field (JSON: collection, source) is missing",
        ));
    };
    if staged.is_empty() {
        return Err(ApiError::bad_request(if refused.is_empty() {
            "no `file` field: send the photos, videos or archives to ingest".to_string()
        } else {
            "nothing to ingest: manifests are not read over HTTP".to_string()
        }));
    }
    Ok(Received {
        meta,
        staged,
        refused,
        bytes,
    })
}

/// What an upload job's record says it received (`args`): files, bytes, refused by code.
pub(crate) fn upload_args(args: &mut Value, r: &Received) {
    let files = r.staged.len() + r.refused.len();
    args["origin"] = json!("upload");
    args["files"] = json!(files);
    args["inputs"] = json!([format!("{files} uploaded files")]);
    args["bytes"] = json!(r.bytes);
    if !r.refused.is_empty() {
        let mut by: BTreeMap<&str, u64> = BTreeMap::new();
        for f in &r.refused {
            *by.entry(&f.code).or_default() += 1;
        }
        args["refused"] = json!(r.refused.len());
        args["refused_by_code"] = json!(by);
    }
}

async fn upload_job(st: AppState, p: Principal, d: Decision, req: Request) -> ApiResult<Response> {
    let limit = st.jobs.upload_limit;
    if content_length(&req).is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    // Refused before the upload is read, not after.
    if lock(&st.jobs.reg).queue.len() >= MAX_QUEUED {
        return Err(queue_full());
    }
    let mut stage = StagingDir::create(&st.jobs.staging_root()).await?;
    let got = receive_upload(req, &stage.path, limit, |m| {
        let (st2, p2, d2) = (st.clone(), p.clone(), d.clone());
        async move { blocking(&st2, move |st| parse_meta(st, &p2, &d2, &m).map(|_| ())).await }
    })
    .await?;
    let tmp = stage.path.clone();
    let v = blocking(&st, move |st| {
        let mut c = parse_meta(st, &p, &d, &got.meta)?;
        upload_args(&mut c.args, &got);
        let collection = c.opts.collection.clone();
        let opts = c.opts;
        let id = st.enqueue(&p, &d, c.args.clone(), &collection, |id| {
            let dir = st.jobs.staging(id);
            std::fs::rename(&tmp, &dir)
                .with_context(|| format!("cannot move the upload to {}", dir.display()))?;
            create_report(&st.jobs, id, &got.refused)?;
            Ok(Spec {
                inputs: vec![dir],
                opts,
            })
        })?;
        audit_started(st, &p, &d, id, &c.args);
        load_view(st, id)
    })
    .await;
    match v {
        Ok(v) => {
            // Renamed into the job's folder: the job removes it when it ends.
            stage.keep = true;
            Ok(accepted(v))
        }
        Err(e) => Err(e),
    }
}

fn parse_meta(st: &AppState, p: &Principal, d: &Decision, raw: &[u8]) -> ApiResult<Checked> {
    let m: UploadMetaJson = serde_json::from_slice(raw)
        .map_err(|e| ApiError::bad_json(format!("invalid `meta` JSON: {e}")))?;
    if m.options
        .as_ref()
        .and_then(|o| o.subject_from_parent)
        .unwrap_or(false)
    {
        return Err(ApiError::bad_request(
            "subject_from_parent applies to path jobs (uploads have no folders)",
        ));
    }
    check_meta(st, p, d, &m, "upload", None)
}

/// Recent ingest jobs (HTTP and `visage ingest` runs), newest first.
#[utoipa::path(get, path = "/v1/ingest/jobs", tag = "ingest", params(JobsQuery),
    responses(
        (status = 200, description = "Jobs, newest first", body = JobList),
        (status = 400, description = "`bad_request`: limit out of range", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action ingest)", body = ErrorBody),
    ))]
pub(crate) async fn list_jobs(
    State(st): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<JobsQuery>,
) -> ApiResult<Json<JobList>> {
    authorize(&st, &p, Action::Ingest, &none())?;
    let limit = q.page_size()?;
    let list = blocking(&st, move |st| {
        let rows = st
            .gallery
            .jobs_page(Some("ingest"), q.before, limit + 1)
            .map_err(ApiError::internal)?;
        let more = rows.len() > limit;
        let jobs: Vec<IngestJob> = rows
            .iter()
            .take(limit)
            .map(|j| view(j, live_view(&st.jobs, j.id)))
            .collect();
        let next_before = if more {
            jobs.last().map(|j| j.id)
        } else {
            None
        };
        Ok(JobList {
            jobs,
            next_before,
            upload_limit: st.jobs.upload_limit,
            path_jobs: !st.jobs.roots.is_empty(),
        })
    })
    .await?;
    Ok(Json(list))
}

/// One ingest job: status, counts so far, rate and ETA while it runs.
#[utoipa::path(get, path = "/v1/ingest/jobs/{id}", tag = "ingest",
    params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = IngestJob),
        (status = 400, description = "`bad_request`: id is not an integer", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action ingest)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn get_job(
    State(st): State<AppState>,
    Auth(p): Auth,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Json<IngestJob>> {
    let id = job_id(&raw)?;
    authorize(&st, &p, Action::Ingest, &none())?;
    Ok(Json(blocking(&st, move |st| load_view(st, id)).await?))
}

/// The job's report: one JSON line per item not indexed (`kind` `failed`, with `location`,
/// `code`, `message`), per face rejected (`face_rejected`, with `reasons`) and per warning.
/// Never image bytes. Upload locations are the staged names (`00003-photo.jpg`); while the job
/// runs, the lines so far.
#[utoipa::path(get, path = "/v1/ingest/jobs/{id}/report", tag = "ingest",
    params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "JSON Lines", content_type = "application/x-ndjson",
            body = String),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action ingest)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job, or no report kept (CLI runs)",
            body = ErrorBody),
    ))]
pub(crate) async fn get_report(
    State(st): State<AppState>,
    Auth(p): Auth,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Response> {
    let id = job_id(&raw)?;
    authorize(&st, &p, Action::Ingest, &none())?;
    let body = blocking(&st, move |st| {
        let v = load_view(st, id)?;
        let main = st.jobs.report_path(id);
        if v.report.is_none() || !main.exists() {
            return Err(ApiError::not_found(format!(
                "no report is kept for job {id} (jobs run with `visage ingest` write theirs \
                 where --report says)"
            )));
        }
        let prefix = format!("{}/", st.jobs.staging(id).display());
        let mut out = Vec::new();
        for f in [main, st.jobs.engine_report_path(id)] {
            if !read_report(&f, &prefix, &mut out).map_err(ApiError::internal)? {
                let line = json!({"kind": "truncated", "message": format!(
                    "the report is longer than {REPORT_LIMIT} bytes; the rest is in {}",
                    f.display())});
                out.extend_from_slice(format!("{line}\n").as_bytes());
                break;
            }
        }
        Ok(out)
    })
    .await?;
    let mut res = body.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(res)
}

/// Appends `path`'s lines to `out`, staging paths shortened to the staged names; `false` when
/// the size limit was reached.
fn read_report(path: &Path, prefix: &str, out: &mut Vec<u8>) -> anyhow::Result<bool> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e.into()),
    };
    for line in std::io::BufReader::new(f).lines() {
        // A line being written by the running engine may be cut: it is left for later.
        let Ok(line) = line else { break };
        let Ok(mut v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(loc) = v.get("location").and_then(Value::as_str) {
            if let Some(rest) = loc.strip_prefix(prefix) {
                v["location"] = json!(rest);
            }
        }
        let s = v.to_string();
        if (out.len() + s.len() + 1) as u64 > REPORT_LIMIT {
            return Ok(false);
        }
        out.extend_from_slice(s.as_bytes());
        out.push(b'\n');
    }
    Ok(true)
}

/// Cancels a job: a queued one at once (`cancelled`), a running one after the items in flight
/// (what was written stays, consistent; the status becomes `cancelled`). Audited.
#[utoipa::path(post, path = "/v1/ingest/jobs/{id}/cancel", tag = "ingest",
    params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 202, description = "The job (`cancelled`, or `running` with \
            `cancel_requested`)", body = IngestJob),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action ingest)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`read_only`, `conflict` (the job has ended)",
            body = ErrorBody),
    ))]
pub(crate) async fn cancel_job(
    State(st): State<AppState>,
    Auth(p): Auth,
    UrlPath(raw): UrlPath<String>,
    // Read (and ignored) so the connection stays usable for the next request.
    _body: axum::body::Bytes,
) -> ApiResult<Response> {
    let id = job_id(&raw)?;
    let d = authorize(&st, &p, Action::Ingest, &none())?;
    st.writable()?;
    let v = blocking(&st, move |st| {
        let mut reg = lock(&st.jobs.reg);
        let was = match reg.live.get_mut(&id) {
            Some(l) if l.spec.is_some() => {
                reg.queue.retain(|q| *q != id);
                reg.live.remove(&id);
                "queued"
            }
            Some(l) => {
                l.cancel_requested = true;
                l.stop.store(true, Ordering::SeqCst);
                "running"
            }
            None => {
                drop(reg);
                let v = load_view(st, id)?;
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!(
                        "job {id} is {}; only queued and running jobs can be cancelled",
                        v.status
                    ),
                ));
            }
        };
        drop(reg);
        if was == "queued" {
            let msg = format!("cancelled by {} before it started", p.username);
            st.gallery
                .update_job(id, &json!({}), Some("cancelled"), Some(&msg))
                .map_err(ApiError::internal)?;
            let _ = std::fs::remove_dir_all(st.jobs.staging(id));
        }
        st.gov.append(
            AuditEvent::decision(&p, Action::Ingest, &d)
                .details(json!({"event": "cancel", "job_id": id.to_string(), "was": was})),
        )?;
        load_view(st, id)
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(v)).into_response())
}

#[derive(OpenApi)]
#[openapi(
    paths(start_job, list_jobs, get_job, get_report, cancel_job),
    components(schemas(
        PathJobJson,
        UploadMetaJson,
        UploadForm,
        SourceJson,
        JobOptionsJson,
        IngestJob,
        JobList
    ))
)]
pub(crate) struct Doc;

/// Routes of this module (merged into the server's router; they carry their own limits): the
/// upload has its own size limit (checked while streaming) and a one-hour timeout; the others
/// the normal 30 s.
pub(crate) fn routes() -> Router<AppState> {
    let normal =
        || TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, crate::REQUEST_TIMEOUT);
    let upload = TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, UPLOAD_TIMEOUT);
    Router::new()
        .route(
            "/v1/ingest/jobs",
            post(start_job.layer(DefaultBodyLimit::disable()).layer(upload))
                .get(list_jobs.layer(normal())),
        )
        .route("/v1/ingest/jobs/{id}", get(get_job.layer(normal())))
        .route(
            "/v1/ingest/jobs/{id}/report",
            get(get_report.layer(normal())),
        )
        .route(
            "/v1/ingest/jobs/{id}/cancel",
            post(cancel_job.layer(normal())),
        )
}
