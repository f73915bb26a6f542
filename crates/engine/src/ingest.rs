//! Ingest: items from folders, archives, manifests and web archives flow through
//! hash -> skip known -> decode -> detect -> quality gate -> align -> embed (on every core, one
//! pipeline per worker) -> writer thread (atomic batches, periodic index saves). Stages overlap
//! through bounded queues, so memory stays bounded whatever the input size.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use visage_gallery::{FaceStore, Gallery, NewFace, NewImage, NewSource};
use visage_vision::{AnalyzeOptions, DecodeLimits, FacePipeline, PipelinePool};

use crate::encode;
use crate::sources::manifest::UrlFetch;
use crate::sources::{self, ItemError, ItemMeta, ItemResult, ReadLimits, SourceItem};

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub collection: String,
    pub source: NewSource,
    /// Label faces with the name of the folder holding the photo (LFW-style galleries);
    /// a manifest's `subject` column takes precedence.
    pub subject_from_parent: bool,
    /// Keep a copy of every original photo in the blob store.
    pub keep_originals: bool,
    /// Most images per atomic write.
    pub chunk: usize,
    /// Save the vector index after this many new faces (bounds catch-up after a crash).
    pub flush_every_faces: usize,
    pub analyze: AnalyzeOptions,
    pub limits: DecodeLimits,
    pub read: ReadLimits,
    /// Write one JSON line per failed item and per rejected face here.
    pub report: Option<PathBuf>,
    /// Frames per second sampled from videos.
    pub video_fps: f32,
    /// Items whose jurisdiction is (inside) one of these are refused (`jurisdiction_excluded`):
    /// the policy's excluded jurisdictions.
    pub excluded_jurisdictions: Vec<String>,
    /// Download manifest rows that give a url but no path (`visage ingest --fetch-urls`);
    /// `None` refuses them as `url_fetch_disabled`.
    pub fetch_urls: Option<UrlFetch>,
    /// Run as this job, queued earlier with `Gallery::queue_job` (HTTP ingest jobs), instead
    /// of recording a new one.
    pub queued_job: Option<i64>,
}

impl IngestOptions {
    pub fn new(collection: &str, source: NewSource) -> IngestOptions {
        IngestOptions {
            collection: collection.to_string(),
            source,
            subject_from_parent: false,
            keep_originals: false,
            chunk: 32,
            flush_every_faces: 20_000,
            analyze: AnalyzeOptions::default(),
            limits: DecodeLimits::default(),
            read: ReadLimits::default(),
            report: None,
            video_fps: 2.0,
            excluded_jurisdictions: vec![],
            fetch_urls: None,
            queued_job: None,
        }
    }
}

/// An input that was not indexed, with a stable reason code.
#[derive(Debug, Clone, Serialize)]
pub struct ItemFailure {
    pub location: String,
    pub code: String,
    pub message: String,
}

impl From<ItemError> for ItemFailure {
    fn from(e: ItemError) -> Self {
        ItemFailure {
            location: e.location,
            code: e.code,
            message: e.message,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct IngestCounts {
    pub images_seen: u64,
    pub images_indexed: u64,
    /// Already in the collection (content hash), from an earlier run or earlier in this one.
    pub images_skipped_known: u64,
    pub images_without_faces: u64,
    /// Videos analysed; each kept face of a video is stored with its frame as an image.
    pub videos: u64,
    pub video_frames_sampled: u64,
    pub faces_indexed: u64,
    pub faces_rejected: BTreeMap<String, u64>,
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    pub job_id: i64,
    pub collection: String,
    pub source: String,
    /// completed, or interrupted (stopped on request; re-run to finish).
    pub status: String,
    #[serde(flatten)]
    pub counts: IngestCounts,
    /// The first failures (all of them are in the JSONL report when one was asked for).
    pub failures: Vec<ItemFailure>,
    pub elapsed_s: f64,
    pub images_per_s: f64,
    pub faces_per_s: f64,
    /// CPU time of this process / wall time (200% = both cores of a 2-core machine busy).
    pub cpu_percent: Option<f64>,
}

/// Progress, reported after every write.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: u64,
    /// Known when every input is a plain file or folder.
    pub total: Option<u64>,
    pub faces: u64,
}

/// Failures kept in the report in memory (the JSONL report has all of them).
const FAILURES_KEPT: usize = 1000;

enum Prepared {
    Known,
    Failed(ItemFailure),
    /// The image, its rejected faces (index, reason codes), its location, its subject label.
    Image(
        Box<NewImage>,
        Vec<(usize, Vec<String>)>,
        String,
        Option<String>,
    ),
    /// A video: one image per kept frame, then the marker row (the whole video, no faces)
    /// that makes a re-run skip it.
    Video(Box<VideoItem>),
}

/// A unit of work for the workers.
enum Work {
    Item(ItemResult),
    Video(PathBuf),
}

/// Ingests `inputs` into the gallery. `stop` ends the run early (finishing what is in flight);
/// everything written stays consistent and a re-run continues where this one stopped.
pub fn ingest_paths(
    gallery: &Gallery,
    pool: &PipelinePool,
    inputs: &[PathBuf],
    opts: &IngestOptions,
    stop: &AtomicBool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<IngestReport> {
    let t0 = Instant::now();
    let cpu0 = cpu_seconds();
    let pipeline = pool.first();
    let pack = pipeline.pack_id();
    let dim = pipeline.pack.recogniser.embedding_dim;
    let coll = gallery.ensure_collection(&opts.collection, &pack, dim)?;
    if opts.source.name.trim().is_empty() {
        bail!("the source needs a name");
    }
    let source = gallery.ensure_source(coll.id, &opts.source)?;
    let args = serde_json::json!({
        "inputs": inputs,
        "collection": opts.collection,
        "source": opts.source.name,
        "subject_from_parent": opts.subject_from_parent,
    });
    let excluded: Vec<String> = opts
        .excluded_jurisdictions
        .iter()
        .map(|j| visage_gallery::normalize_jurisdiction(j))
        .collect::<Result<_>>()?;
    if let Some(j) = &source.jurisdiction {
        if let Some(x) = excluded_by(j, &excluded) {
            bail!(
                "jurisdiction_excluded: the source's jurisdiction {j} is excluded by policy ({x})"
            );
        }
    }
    // Faces of people who opted out are dropped (loaded once: an opt-out needs the writer lock
    // this run holds, so the list cannot change under it).
    let supp = crate::optout::SuppressionList::load(gallery, pipeline)?;
    let job_id = match opts.queued_job {
        Some(id) => gallery.start_queued_job(id, "ingest")?,
        None => gallery.start_job("ingest", Some(&coll.name), &args)?,
    };
    let mut report_file = match &opts.report {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };

    let (items, total) = item_stream(inputs, &opts.read, opts.fetch_urls.as_ref());
    let items = Mutex::new(items);
    let counts = Mutex::new(IngestCounts::default());
    let mut failures: Vec<ItemFailure> = Vec::new();
    let workers = pool.workers.len();
    let (tx, rx) = sync_channel::<Prepared>(workers * 4);
    let result: Result<()> = std::thread::scope(|s| {
        for p in &pool.workers {
            let (tx, items) = (tx.clone(), &items);
            let (coll_id, src) = (coll.id, &source);
            let ctx = Ctx {
                supp: &supp,
                excluded: &excluded,
            };
            s.spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let next = items.lock().unwrap_or_else(|e| e.into_inner()).next();
                let Some(item) = next else { break };
                let out = match item {
                    Work::Item(Err(e)) => Prepared::Failed(e.into()),
                    Work::Item(Ok(item)) => prepare(gallery, p, item, coll_id, src, opts, ctx),
                    Work::Video(path) => prepare_video(gallery, p, &path, coll_id, src, opts, ctx),
                };
                if tx.send(out).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        // The writer: this thread.
        let mut batch: Vec<NewImage> = Vec::new();
        let mut labels: Vec<Option<String>> = Vec::new();
        // Video markers are written after (in a later transaction than) their frames.
        let mut pending_markers: Vec<NewImage> = Vec::new();
        let mut since_flush = 0usize;
        let mut last_job_update = Instant::now();
        let mut open = true;
        while open || !batch.is_empty() || !pending_markers.is_empty() {
            let msg = if open {
                match rx.recv_timeout(Duration::from_millis(250)) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        None
                    }
                }
            } else {
                None
            };
            // A partial batch is written when the queue goes quiet (timeout or end), which keeps
            // latency low for slow sources.
            let idle = msg.is_none();
            let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
            match msg {
                Some(Prepared::Known) => {
                    c.images_seen += 1;
                    c.images_skipped_known += 1;
                }
                Some(Prepared::Failed(f)) => {
                    c.images_seen += 1;
                    c.errors += 1;
                    *c.errors_by_code.entry(f.code.clone()).or_default() += 1;
                    if let Some(w) = report_file.as_mut() {
                        writeln!(
                            w,
                            "{}",
                            serde_json::json!({"kind": "failed", "location": f.location, "code": f.code, "message": f.message})
                        )?;
                    }
                    if failures.len() < FAILURES_KEPT {
                        failures.push(f);
                    }
                }
                Some(Prepared::Video(v)) => {
                    c.images_seen += 1;
                    c.videos += 1;
                    c.video_frames_sampled += v.frames_sampled;
                    for (reason, n) in &v.rejected {
                        *c.faces_rejected.entry(reason.clone()).or_default() += n;
                    }
                    if let Some(w) = &v.warning {
                        if let Some(f) = report_file.as_mut() {
                            writeln!(
                                f,
                                "{}",
                                serde_json::json!({"kind": "warning", "location": w.location, "code": w.code, "message": w.message})
                            )?;
                        }
                    }
                    let v = *v;
                    labels.extend(v.frames.iter().map(|_| None));
                    batch.extend(v.frames);
                    pending_markers.push(v.marker);
                }
                Some(Prepared::Image(img, rejects, location, label)) => {
                    c.images_seen += 1;
                    for (i, reasons) in &rejects {
                        *c.faces_rejected.entry(reasons[0].clone()).or_default() += 1;
                        if let Some(w) = report_file.as_mut() {
                            writeln!(
                                w,
                                "{}",
                                serde_json::json!({"kind": "face_rejected", "location": location, "face": i, "reasons": reasons})
                            )?;
                        }
                    }
                    batch.push(*img);
                    labels.push(label);
                }
                None => {}
            }
            drop(c);
            let full = batch.len() >= opts.chunk.max(1);
            if !pending_markers.is_empty() && batch.is_empty() {
                gallery.add_images(&pending_markers)?;
                pending_markers.clear();
            }
            if !batch.is_empty() && (full || idle || !pending_markers.is_empty()) {
                assign_subjects(gallery, coll.id, &mut batch, &labels, opts)?;
                let outcomes = gallery.add_images(&batch)?;
                let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
                for (img, out) in batch.iter().zip(outcomes) {
                    if out.duplicate {
                        c.images_skipped_known += 1;
                        continue;
                    }
                    c.images_indexed += 1;
                    if img.faces.is_empty() {
                        c.images_without_faces += 1;
                    }
                    c.faces_indexed += out.face_ids.len() as u64;
                    since_flush += out.face_ids.len();
                }
                let p = Progress {
                    done: c.images_seen,
                    total,
                    faces: c.faces_indexed,
                };
                let snapshot = c.clone();
                drop(c);
                batch.clear();
                labels.clear();
                if !pending_markers.is_empty() {
                    gallery.add_images(&pending_markers)?;
                    pending_markers.clear();
                }
                if since_flush >= opts.flush_every_faces {
                    gallery.flush()?;
                    since_flush = 0;
                }
                if last_job_update.elapsed() >= Duration::from_secs(2) {
                    gallery.update_job(job_id, &serde_json::to_value(&snapshot)?, None, None)?;
                    last_job_update = Instant::now();
                }
                progress(p);
            }
        }
        Ok(())
    });
    let stopped = stop.load(Ordering::Relaxed);
    let counts = counts.into_inner().unwrap_or_else(|e| e.into_inner());
    let status = match (&result, stopped) {
        (Err(_), _) => "failed",
        (Ok(()), true) => "interrupted",
        (Ok(()), false) => "completed",
    };
    let flushed = gallery.flush();
    let err = result.as_ref().err().map(|e| format!("{e:#}"));
    gallery.update_job(
        job_id,
        &serde_json::to_value(&counts)?,
        Some(status),
        err.as_deref(),
    )?;
    result?;
    flushed?;
    if let Some(mut w) = report_file {
        w.flush()?;
    }
    let elapsed_s = t0.elapsed().as_secs_f64();
    Ok(IngestReport {
        job_id,
        collection: coll.name.clone(),
        source: source.name.clone(),
        status: status.into(),
        images_per_s: counts.images_seen as f64 / elapsed_s.max(1e-9),
        faces_per_s: counts.faces_indexed as f64 / elapsed_s.max(1e-9),
        counts,
        failures,
        elapsed_s,
        cpu_percent: cpu_seconds()
            .zip(cpu0)
            .map(|(a, b)| 100.0 * (a - b) / elapsed_s.max(1e-9)),
    })
}

fn assign_subjects(
    gallery: &dyn FaceStore,
    collection_id: i64,
    batch: &mut [NewImage],
    labels: &[Option<String>],
    opts: &IngestOptions,
) -> Result<()> {
    for (img, label) in batch.iter_mut().zip(labels) {
        if img.faces.is_empty() {
            continue;
        }
        let label = label.clone().or_else(|| {
            if !opts.subject_from_parent {
                return None;
            }
            let uri = img.uri.as_deref()?;
            let inner = uri.rsplit_once('!').map(|(_, e)| e).unwrap_or(uri);
            Path::new(inner)
                .parent()?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        });
        if let Some(label) = label {
            let sid = gallery.ensure_subject(collection_id, &label)?;
            for f in &mut img.faces {
                f.subject_id = Some(sid);
            }
        }
    }
    Ok(())
}

/// CPU seconds used by this process so far (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Every item of every input, lazily. Folders are walked (links not followed); files that are
/// archives or web archives are opened; manifests are read when named directly.
fn item_stream(
    inputs: &[PathBuf],
    read: &ReadLimits,
    fetch: Option<&UrlFetch>,
) -> (Box<dyn Iterator<Item = Work> + Send>, Option<u64>) {
    let listing = crate::files::collect(inputs);
    let named: std::collections::HashSet<PathBuf> = inputs.iter().cloned().collect();
    let mut total = Some(listing.files.len() as u64 + listing.skipped.len() as u64);
    let mut kinds = Vec::with_capacity(listing.files.len());
    for f in &listing.files {
        let kind = InputKind::of(f, named.contains(f));
        if kind != InputKind::File && kind != InputKind::Video {
            total = None;
        }
        kinds.push(kind);
    }
    let read = *read;
    let fetch = fetch.cloned();
    let skipped = listing
        .skipped
        .into_iter()
        .map(|(p, why)| Work::Item(Err(ItemError::new(p.display().to_string(), "skipped", why))));
    let files = listing
        .files
        .into_iter()
        .zip(kinds)
        .flat_map(move |(f, kind)| {
            if kind == InputKind::Video {
                return Box::new(std::iter::once(Work::Video(f)))
                    as Box<dyn Iterator<Item = Work> + Send>;
            }
            Box::new(open_items(&f, kind, &read, fetch.as_ref()).map(Work::Item))
                as Box<dyn Iterator<Item = Work> + Send>
        });
    (Box::new(skipped.chain(files)), total)
}

/// How an input file is opened: one image, a video (frames sampled and tracked), an archive
/// or a web archive (their members), or a manifest (its rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    File,
    Video,
    Archive,
    Warc,
    Manifest,
}

impl InputKind {
    /// The kind of `path`; `named` says the path was given as an input itself (a manifest is
    /// read only then: a `.csv` found in a folder is just a file).
    pub fn of(path: &Path, named: bool) -> InputKind {
        // Videos are never read whole; WARC before archives: a .warc.gz is gzip too.
        if crate::video::is_video(path) {
            InputKind::Video
        } else if sources::warc::is_warc(path) {
            InputKind::Warc
        } else if sources::archive::is_archive(path) {
            InputKind::Archive
        } else if named && is_manifest_name(path) {
            InputKind::Manifest
        } else {
            InputKind::File
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InputKind::File => "file",
            InputKind::Video => "video",
            InputKind::Archive => "archive",
            InputKind::Warc => "warc",
            InputKind::Manifest => "manifest",
        }
    }

    pub fn parse(s: &str) -> Option<InputKind> {
        [
            InputKind::File,
            InputKind::Video,
            InputKind::Archive,
            InputKind::Warc,
            InputKind::Manifest,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// The items of one input that is not a video: the file itself, or the members or rows of a
/// container (a container that cannot be opened is one `unreadable_container` failure).
fn open_items(
    f: &Path,
    kind: InputKind,
    read: &ReadLimits,
    fetch: Option<&UrlFetch>,
) -> Box<dyn Iterator<Item = ItemResult> + Send> {
    let opened: Result<Box<dyn Iterator<Item = ItemResult> + Send>> = match kind {
        InputKind::Archive => sources::archive::read_archive(f, read),
        InputKind::Warc => sources::warc::read_warc(f, read),
        InputKind::Manifest => sources::manifest::read_manifest_with(f, read, fetch),
        InputKind::File | InputKind::Video => Ok(Box::new(std::iter::once(read_file(f, read)))),
    };
    match opened {
        Ok(it) => it,
        Err(e) => Box::new(std::iter::once(Err(ItemError::new(
            f.display().to_string(),
            "unreadable_container",
            format!("{e:#}"),
        )))),
    }
}

fn is_manifest_name(p: &Path) -> bool {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    n.ends_with(".jsonl") || n.ends_with(".ndjson") || n.ends_with(".csv")
}

fn read_file(path: &Path, read: &ReadLimits) -> ItemResult {
    let loc = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| ItemError::new(&loc, "io_error", e))?;
    if meta.len() > read.max_item_bytes {
        return Err(ItemError::new(
            &loc,
            "too_large",
            format!("{} bytes (limit {})", meta.len(), read.max_item_bytes),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| ItemError::new(&loc, "io_error", e))?;
    Ok(SourceItem {
        location: loc.clone(),
        bytes,
        meta: ItemMeta {
            uri: Some(loc),
            ..Default::default()
        },
    })
}

/// One unit of an input processed on its own (`process_input`): the cluster's ingest workers
/// take inputs one at a time from the shared queue.
pub enum ItemOutcome {
    /// An image (or video) with this content hash is already in the collection.
    Known,
    Failed(ItemFailure),
    /// The image and its faces, ready for `FaceStore::add_images` (subjects assigned), and
    /// the faces rejected (index, reason codes).
    Image(Box<NewImage>, Vec<(usize, Vec<String>)>),
    /// A video: store its frames, then (in a later write) its marker.
    Video(Box<VideoItem>),
}

/// A video analysed: one image per kept frame (`PATH#t=SECONDS`), and the marker row (the
/// whole video, no faces) whose content hash makes a re-run skip it. Write the marker only
/// once every frame is stored.
pub struct VideoItem {
    pub frames: Vec<NewImage>,
    pub marker: NewImage,
    pub frames_sampled: u64,
    /// Faces not kept, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Decoding stopped early; the frames before were analysed.
    pub warning: Option<ItemFailure>,
}

/// Reads, decodes and analyses one input of `kind` for `collection_id` and `source`, as the
/// folder ingest does (same limits, jurisdiction rules, opt-out and policy exclusions, subject
/// from a manifest row or, with `opts.subject_from_parent`, from the parent folder), handing
/// each unit to `each` in order: one for a file or a video, one per member or row of an
/// archive, web archive or manifest. `each` may stop early (`ControlFlow::Break`); its errors
/// end the input and are returned. `excluded` holds normalised jurisdiction codes.
#[allow(clippy::too_many_arguments)]
pub fn process_input(
    store: &dyn FaceStore,
    p: &FacePipeline,
    path: &Path,
    kind: InputKind,
    collection_id: i64,
    source: &visage_gallery::Source,
    opts: &IngestOptions,
    supp: &crate::optout::SuppressionList,
    excluded: &[String],
    each: &mut dyn FnMut(ItemOutcome) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let ctx = Ctx { supp, excluded };
    if kind == InputKind::Video {
        let video = prepare_video(store, p, path, collection_id, source, opts, ctx);
        let _ = each(outcome(store, collection_id, opts, video)?)?;
        return Ok(());
    }
    for item in open_items(path, kind, &opts.read, opts.fetch_urls.as_ref()) {
        let prepared = match item {
            Err(e) => Prepared::Failed(e.into()),
            Ok(item) => prepare(store, p, item, collection_id, source, opts, ctx),
        };
        if each(outcome(store, collection_id, opts, prepared)?)?.is_break() {
            break;
        }
    }
    Ok(())
}

fn outcome(
    store: &dyn FaceStore,
    collection_id: i64,
    opts: &IngestOptions,
    prepared: Prepared,
) -> Result<ItemOutcome> {
    Ok(match prepared {
        Prepared::Known => ItemOutcome::Known,
        Prepared::Failed(f) => ItemOutcome::Failed(f),
        Prepared::Image(img, rejected, _loc, label) => {
            let mut batch = vec![*img];
            assign_subjects(store, collection_id, &mut batch, &[label], opts)?;
            let img = batch.pop().expect("one image");
            ItemOutcome::Image(Box::new(img), rejected)
        }
        Prepared::Video(mut v) => {
            // As the folder ingest labels them: by parent folder when asked.
            let labels = vec![None; v.frames.len()];
            assign_subjects(store, collection_id, &mut v.frames, &labels, opts)?;
            ItemOutcome::Video(v)
        }
    })
}

/// What every worker checks besides image quality: policy exclusions and opt-outs.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    supp: &'a crate::optout::SuppressionList,
    excluded: &'a [String],
}

/// The excluded jurisdiction that `j` is (inside), if any.
fn excluded_by<'a>(j: &str, excluded: &'a [String]) -> Option<&'a str> {
    excluded
        .iter()
        .find(|x| visage_gallery::filter::jurisdiction_within(j, x))
        .map(|x| x.as_str())
}

fn prepare(
    gallery: &dyn FaceStore,
    p: &FacePipeline,
    item: SourceItem,
    collection_id: i64,
    source: &visage_gallery::Source,
    opts: &IngestOptions,
    ctx: Ctx<'_>,
) -> Prepared {
    let loc = item.location.clone();
    let fail = |code: &str, m: String| {
        Prepared::Failed(ItemFailure {
            location: loc.clone(),
            code: code.into(),
            message: m,
        })
    };
    let sha = visage_gallery::blobs::sha256_hex(&item.bytes);
    match gallery.image_by_sha(collection_id, &sha) {
        Ok(Some(_)) => return Prepared::Known,
        Ok(None) => {}
        Err(e) => return fail("gallery_error", format!("{e:#}")),
    }
    // Jurisdiction: the item's own declaration, else where its EXIF GPS places it, else the
    // source's declaration; the row records which.
    let exif = crate::geo::read_exif(&item.bytes);
    let jurisdiction = match &item.meta.jurisdiction {
        Some(j) => match visage_gallery::normalize_jurisdiction(j) {
            Ok(j) => Some((j, "declared_item")),
            Err(e) => return fail("bad_jurisdiction", format!("{e:#}")),
        },
        None => exif
            .gps
            .and_then(|(lat, lon)| crate::geo::jurisdiction_at(lat, lon))
            .map(|j| (j, "exif_gps"))
            .or_else(|| source.jurisdiction.clone().map(|j| (j, "declared_source"))),
    };
    if let Some((j, how)) = &jurisdiction {
        if let Some(x) = excluded_by(j, ctx.excluded) {
            return fail(
                "jurisdiction_excluded",
                format!("jurisdiction {j} ({how}) is excluded by policy ({x})"),
            );
        }
    }
    let img = match visage_vision::decode_bytes(&item.bytes, &opts.limits) {
        Ok(i) => i,
        Err(e) => return fail(e.code(), e.to_string()),
    };
    let faces = match p.analyze(&img.rgb, &opts.analyze) {
        Ok(f) => f,
        Err(e) => return fail(e.code(), e.to_string()),
    };
    let mut rejected = Vec::new();
    let mut out = Vec::new();
    for (i, f) in faces.into_iter().enumerate() {
        let Some(emb) = f.embedding else {
            let mut reasons: Vec<String> = f
                .quality
                .reasons
                .iter()
                .map(|r| r.code().to_string())
                .collect();
            if reasons.is_empty() {
                reasons.push("not_embedded".into());
            }
            rejected.push((i, reasons));
            continue;
        };
        if !ctx.supp.is_empty() && ctx.supp.matches(&emb.vector) {
            rejected.push((i, vec!["opted_out".into()]));
            continue;
        }
        let b = &f.detection.bbox;
        let (crop, thumb) = match (encode::png(&f.crop), encode::thumbnail(&img.rgb, b)) {
            (Ok(c), Ok(t)) => (c, t),
            (Err(e), _) | (_, Err(e)) => return fail("encode_error", format!("{e:#}")),
        };
        out.push(NewFace {
            bbox: [b.x1, b.y1, b.x2, b.y2],
            landmarks: f.detection.landmarks,
            det_score: f.detection.score,
            quality: serde_json::to_value(&f.quality).unwrap_or_default(),
            vector: emb.vector,
            crop,
            thumb,
            subject_id: None,
        });
    }
    let m = item.meta;
    Prepared::Image(
        Box::new(NewImage {
            collection_id,
            source_id: source.id,
            sha256: sha,
            uri: m.uri.or_else(|| Some(loc.clone())),
            page_uri: m.page_uri,
            captured_at: m.captured_at.or(exif.captured_at),
            gps: exif.gps,
            jurisdiction: jurisdiction.as_ref().map(|j| j.0.clone()),
            jurisdiction_method: jurisdiction.map(|j| j.1.to_string()),
            width: img.source_width,
            height: img.source_height,
            faces_rejected: rejected.len() as u32,
            original: opts.keep_originals.then_some(item.bytes),
            faces: out,
            external_id: m.external_id,
            licence: m.licence,
            legal_basis: m.legal_basis,
        }),
        rejected,
        loc,
        m.subject,
    )
}

/// Streams a file through sha256 (videos can be large).
fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// A video: sample frames, detect and track faces, keep the best faces of each track; one
/// image row per kept frame (`PATH#t=SECONDS`), then a marker row for the whole video.
fn prepare_video(
    gallery: &dyn FaceStore,
    p: &FacePipeline,
    path: &Path,
    collection_id: i64,
    source: &visage_gallery::Source,
    opts: &IngestOptions,
    ctx: Ctx<'_>,
) -> Prepared {
    let loc = path.display().to_string();
    let fail = |code: &str, m: String| {
        Prepared::Failed(ItemFailure {
            location: loc.clone(),
            code: code.into(),
            message: m,
        })
    };
    let video_sha = match sha256_file(path) {
        Ok(s) => s,
        Err(e) => return fail("io_error", e.to_string()),
    };
    match gallery.image_by_sha(collection_id, &video_sha) {
        Ok(Some(_)) => return Prepared::Known,
        Ok(None) => {}
        Err(e) => return fail("gallery_error", format!("{e:#}")),
    }
    let vopts = crate::video::VideoOptions {
        fps: opts.video_fps,
        analyze: opts.analyze,
        ..Default::default()
    };
    let a = match crate::video::analyze_video(p, path, &vopts) {
        Ok(a) => a,
        Err(e) => return fail(&e.code, e.message),
    };
    let jurisdiction = source.jurisdiction.clone();
    let method = jurisdiction.as_ref().map(|_| "declared_source".to_string());
    let mut opted_out = 0u64;
    // One image per distinct frame time (two tracks may keep faces of the same frame).
    let mut by_t: BTreeMap<String, NewImage> = BTreeMap::new();
    let mut first_dims = (0, 0);
    for track in &a.tracks {
        for tf in &track.best {
            let Some(emb) = &tf.face.embedding else {
                continue;
            };
            if !ctx.supp.is_empty() && ctx.supp.matches(&emb.vector) {
                opted_out += 1;
                continue;
            }
            let crop = match encode::png(&tf.face.crop) {
                Ok(c) => c,
                Err(e) => return fail("encode_error", format!("{e:#}")),
            };
            let t = format!("{:.2}", tf.t);
            if first_dims == (0, 0) {
                first_dims = (tf.frame_width, tf.frame_height);
            }
            let img = by_t.entry(t.clone()).or_insert_with(|| NewImage {
                collection_id,
                source_id: source.id,
                sha256: visage_gallery::blobs::sha256_hex(format!("{video_sha}#t={t}").as_bytes()),
                uri: Some(format!("{loc}#t={t}")),
                jurisdiction: jurisdiction.clone(),
                jurisdiction_method: method.clone(),
                width: tf.frame_width,
                height: tf.frame_height,
                ..Default::default()
            });
            let b = &tf.face.detection.bbox;
            img.faces.push(NewFace {
                bbox: [b.x1, b.y1, b.x2, b.y2],
                landmarks: tf.face.detection.landmarks,
                det_score: tf.face.detection.score,
                quality: serde_json::to_value(&tf.face.quality).unwrap_or_default(),
                vector: emb.vector.clone(),
                crop,
                thumb: tf.thumbnail.clone(),
                subject_id: None,
            });
        }
    }
    let mut faces_rejected = a.faces_rejected;
    if opted_out > 0 {
        *faces_rejected.entry("opted_out".into()).or_default() += opted_out;
    }
    let rejected: u64 = faces_rejected.values().sum();
    let marker = NewImage {
        collection_id,
        source_id: source.id,
        sha256: video_sha,
        uri: Some(loc.clone()),
        jurisdiction,
        jurisdiction_method: method,
        width: first_dims.0,
        height: first_dims.1,
        faces_rejected: rejected.min(u32::MAX as u64) as u32,
        ..Default::default()
    };
    Prepared::Video(Box::new(VideoItem {
        frames: by_t.into_values().collect(),
        marker,
        frames_sampled: a.frames_sampled,
        rejected: faces_rejected,
        warning: a.decode_error.map(ItemFailure::from),
    }))
}
