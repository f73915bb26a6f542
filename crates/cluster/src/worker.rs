//! `visage worker`: takes ingest items from the PostgreSQL queue and stores their faces in
//! the cluster. One thread per face pipeline; each claims a few items at a time under a lease
//! and finishes them one by one (see `queue`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use std::ops::ControlFlow;

use visage_engine::ingest::{process_input, IngestCounts, ItemOutcome};
use visage_engine::optout::SuppressionList;
use visage_engine::IngestOptions;
use visage_gallery::{FaceStore, NewImage, Source};
use visage_vision::{FacePipeline, PipelinePool};

use crate::queue::{self, Claimed, ItemResult};
use crate::store::ClusterStore;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Names this process in claims (`host:pid`); threads add `/N`.
    pub name: String,
    /// Items claimed at a time per thread.
    pub batch: usize,
    /// Seconds a claim holds before another worker may take the item.
    pub lease_s: i64,
    /// Exit when nothing is queued or claimed, instead of waiting for work.
    pub exit_when_idle: bool,
    pub poll: Duration,
    /// Limits, analysis options, keep_originals and excluded jurisdictions for every item
    /// (collection and source come from each job).
    pub ingest: IngestOptions,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerReport {
    /// Queue items finished (input files).
    pub items: u64,
    /// Their units: images, videos, archive members, manifest rows.
    pub units: u64,
    pub indexed: u64,
    pub known: u64,
    pub failed: u64,
    pub faces: u64,
    /// Items another worker finished after this one's lease ran out.
    pub lost_leases: u64,
    pub elapsed_s: f64,
}

/// What a job's items share: collection, source, options and the opt-out list.
struct JobCtx {
    collection_id: i64,
    source: Source,
    opts: IngestOptions,
    supp: SuppressionList,
    excluded: Vec<String>,
}

pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}:{}", std::process::id())
}

pub fn run(
    store: &ClusterStore,
    pool: &PipelinePool,
    opts: &WorkerOptions,
    stop: &AtomicBool,
    progress: &(dyn Fn(&WorkerReport) + Sync),
) -> Result<WorkerReport> {
    let t0 = Instant::now();
    let report = Mutex::new(WorkerReport::default());
    let result: Result<()> = std::thread::scope(|s| {
        let handles: Vec<_> = pool
            .workers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let name = format!("{}/{i}", opts.name);
                let report = &report;
                s.spawn(move || thread_loop(store, p, opts, &name, stop, report, progress))
            })
            .collect();
        let mut first_err = None;
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    stop.store(true, Ordering::Relaxed);
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    stop.store(true, Ordering::Relaxed);
                    first_err.get_or_insert(anyhow::anyhow!("a worker thread panicked"));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    });
    let mut r = report.into_inner().unwrap_or_else(|e| e.into_inner());
    r.elapsed_s = t0.elapsed().as_secs_f64();
    result.map(|_| r)
}

/// A job as this worker finds it: ready, or one it cannot run (its items fail with the code
/// and message instead of stopping the worker).
enum Setup {
    Ready(Box<JobCtx>),
    Refused { code: &'static str, message: String },
}

fn job_ctx(
    store: &ClusterStore,
    p: &FacePipeline,
    base: &IngestOptions,
    job_id: i64,
) -> Result<Setup> {
    let (collection, source, args) = queue::job_source(store.pool(), job_id)?;
    let (pack, dim) = (p.pack_id(), p.pack.recogniser.embedding_dim);
    // A collection pinned to another model pack takes none of this worker's embeddings.
    if let Some(c) = store.collection(&collection)? {
        if let Err(e) = c.check_pinned(&pack, dim) {
            return Ok(Setup::Refused {
                code: "pack_mismatch",
                message: format!("{e:#} (this worker runs {pack})"),
            });
        }
    }
    let coll = store.ensure_collection(&collection, &pack, dim)?;
    let source = store.ensure_source(coll.id, &source)?;
    let mut opts = base.clone();
    opts.collection = collection;
    opts.subject_from_parent = args
        .get("subject_from_parent")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    // Originals are kept when the job asked for it (HTTP `options.keep_originals`) or the
    // worker runs with `--keep-originals`.
    opts.keep_originals |= args
        .get("keep_originals")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let excluded = opts
        .excluded_jurisdictions
        .iter()
        .map(|j| visage_gallery::normalize_jurisdiction(j))
        .collect::<Result<_>>()?;
    Ok(Setup::Ready(Box::new(JobCtx {
        collection_id: coll.id,
        source,
        opts,
        supp: SuppressionList::from_store(store, p)?,
        excluded,
    })))
}

/// The end of an item whose job this worker cannot run: failed as a whole with `code`.
fn refused_item(code: &str, message: &str) -> ItemResult {
    ItemResult {
        outcome: "failed",
        units: 1,
        error_code: Some(code.to_string()),
        error: Some(message.to_string()),
        counts: IngestCounts {
            images_seen: 1,
            errors: 1,
            errors_by_code: [(code.to_string(), 1)].into(),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn thread_loop(
    store: &ClusterStore,
    p: &FacePipeline,
    opts: &WorkerOptions,
    name: &str,
    stop: &AtomicBool,
    report: &Mutex<WorkerReport>,
    progress: &(dyn Fn(&WorkerReport) + Sync),
) -> Result<()> {
    let mut jobs: HashMap<i64, Setup> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let claimed = retry("claiming items", stop, || {
            queue::claim(store.pool(), name, opts.batch.max(1), opts.lease_s)
        })?;
        if claimed.is_empty() {
            // Idle: remove the uploads of items that ended without their worker removing
            // them (cancelled, given up, a worker that died after finishing),
            if let Err(e) = queue::sweep_staged(store.pool(), store.blobs(), None) {
                tracing::warn!(error = ?e, "cannot remove staged uploads of ended items");
            }
            // and the points and blobs of committed deletions whose removal failed.
            if let Err(e) = store.finish_pending_deletes() {
                tracing::warn!(error = ?e, "cannot finish owed deletions of points and blobs");
            }
            if opts.exit_when_idle
                && retry("counting open items", stop, || {
                    queue::open_items(store.pool())
                })? == 0
            {
                break;
            }
            std::thread::sleep(opts.poll);
            continue;
        }
        let mut held: Vec<i64> = claimed.iter().map(|c| c.id).collect();
        // Jobs of the held items whose cancellation was asked for, as of the last extension.
        let mut cancelled = retry("extending leases", stop, || {
            queue::extend(store.pool(), name, &held, opts.lease_s)
        })?;
        for item in claimed {
            if stop.load(Ordering::Relaxed) {
                // Unfinished claims return to the queue when their lease runs out.
                break;
            }
            let setup = match jobs.entry(item.job_id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    // Idempotent (collection and source are ensured by name): retried.
                    e.insert(retry("reading a job's setup", stop, || {
                        job_ctx(store, p, &opts.ingest, item.job_id)
                    })?)
                }
            };
            let r = match setup {
                // Claimed with others before its job was cancelled: ends unread, as the
                // job's queued items did.
                _ if cancelled.contains(&item.job_id) => ItemResult {
                    outcome: "failed",
                    error_code: Some("cancelled".into()),
                    error: Some(queue::CANCELLED_ITEM.into()),
                    ..Default::default()
                },
                // A job this worker cannot run: the item fails as a whole, the worker goes on.
                Setup::Refused { code, message } => {
                    tracing::warn!(job = item.job_id, item = item.id, "{message}");
                    refused_item(code, message)
                }
                Setup::Ready(ctx) => {
                    match run_item(store, p, ctx, &item, opts, name, &held, stop) {
                        Ok(Some(r)) => r,
                        Ok(None) => {
                            // Stopped half way: back to the queue at once; what was stored
                            // is known by content hash to whoever takes it next.
                            retry("releasing an item", stop, || {
                                queue::release(store.pool(), name, item.id)
                            })?;
                            break;
                        }
                        Err(e) => {
                            // The storage failed, not the item: back to the queue for another
                            // try (its attempts still count, so a persistent failure ends as
                            // `attempts_exhausted`).
                            tracing::warn!(item = item.id, error = ?e, "storage error; item re-queued");
                            retry("releasing an item", stop, || {
                                queue::release(store.pool(), name, item.id)
                            })?;
                            held.retain(|i| *i != item.id);
                            continue;
                        }
                    }
                }
            };
            let mine = retry("finishing an item", stop, || {
                queue::finish(store.pool(), name, item.id, &r)
            })?;
            held.retain(|i| *i != item.id);
            if let (true, Some(key)) = (mine, &item.staged_key) {
                // The upload has served: removed now (else by an idle worker's sweep).
                let gone = store
                    .blobs()
                    .delete_staged(key)
                    .and_then(|_| queue::clear_staged(store.pool(), &[item.id]));
                if let Err(e) = gone {
                    tracing::warn!(item = item.id, error = ?e, "cannot remove a staged upload");
                }
            }
            cancelled = retry("extending leases", stop, || {
                queue::extend(store.pool(), name, &held, opts.lease_s)
            })?;
            let mut rep = report.lock().unwrap_or_else(|e| e.into_inner());
            rep.items += 1;
            rep.units += r.units as u64;
            if !mine {
                rep.lost_leases += 1;
            }
            match r.outcome {
                "failed" => rep.failed += 1,
                "known" => rep.known += 1,
                _ => {
                    rep.indexed += 1;
                    rep.faces += r.faces as u64;
                }
            }
            progress(&rep);
        }
    }
    Ok(())
}

/// One item of a job this worker can run: read from its path, or from a local copy of its
/// upload, while the claims on `held` are kept alive. `None`: stopped half way; `Err`: the
/// storage failed (the item goes back to the queue).
#[allow(clippy::too_many_arguments)]
fn run_item(
    store: &ClusterStore,
    p: &FacePipeline,
    ctx: &mut JobCtx,
    item: &Claimed,
    opts: &WorkerOptions,
    name: &str,
    held: &[i64],
    stop: &AtomicBool,
) -> Result<Option<ItemResult>> {
    let (_copy, path) = match local_input(store, item)? {
        Local::Path(dir, path) => (dir, path),
        Local::Gone(r) => return Ok(Some(*r)),
    };
    // A long input (an archive, a video) keeps its claims alive while it runs.
    let mut last_extend = Instant::now();
    // The extension tells whether the job was cancelled meanwhile (`true`: stop).
    let mut keep_lease = || -> Result<bool> {
        if last_extend.elapsed().as_secs() as i64 >= (opts.lease_s / 3).max(1) {
            let cancelled = queue::extend(store.pool(), name, held, opts.lease_s)?;
            last_extend = Instant::now();
            return Ok(cancelled.contains(&item.job_id));
        }
        Ok(false)
    };
    process(store, p, ctx, item, &path, stop, &mut keep_lease)
}

/// Where a claimed item is read from.
enum Local {
    /// Its path: the queued path, or a copy of its upload in a temporary folder (removed
    /// when dropped).
    Path(Option<tempfile::TempDir>, std::path::PathBuf),
    /// Its upload is gone from the bucket: the item fails with this result.
    Gone(Box<ItemResult>),
}

/// The local path of `item`: its own, or for an upload a fresh copy of the staged object
/// (named as staged, so its extension still tells its kind).
fn local_input(store: &ClusterStore, item: &Claimed) -> Result<Local> {
    let Some(key) = &item.staged_key else {
        return Ok(Local::Path(None, item.location.clone().into()));
    };
    let dir = tempfile::Builder::new()
        .prefix("visage-upload-")
        .tempdir()?;
    let name = key.rsplit('/').next().unwrap_or("upload");
    let path = dir.path().join(name);
    match store.blobs().fetch_staged(key, &path)? {
        Some(_) => Ok(Local::Path(Some(dir), path)),
        None => Ok(Local::Gone(Box::new(refused_item(
            "upload_missing",
            &format!("the staged upload {key} is no longer in the bucket"),
        )))),
    }
}

/// Shows `local` (the path of a temporary copy) as `shown` in what a unit reports: its
/// image's URI, a video's frames and marker, a failure's location. Those start with the
/// path, or for an archive's members and a WARC's records with the file's name
/// (`name!member`, `name#offset`).
fn relocate(unit: &mut ItemOutcome, local: &Path, shown: &str) {
    let path = local.display().to_string();
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let fix = |s: &mut String| {
        let rest = s.strip_prefix(path.as_str()).or_else(|| {
            s.strip_prefix(name.as_str())
                .filter(|r| r.is_empty() || r.starts_with(['!', '#']))
        });
        if let Some(rest) = rest {
            *s = format!("{shown}{rest}");
        }
    };
    match unit {
        ItemOutcome::Known => {}
        ItemOutcome::Failed(f) => fix(&mut f.location),
        ItemOutcome::Image(img, _) => img.uri.iter_mut().for_each(fix),
        ItemOutcome::Video(v) => {
            for f in v.frames.iter_mut().chain(std::iter::once(&mut v.marker)) {
                f.uri.iter_mut().for_each(fix);
            }
            if let Some(w) = &mut v.warning {
                fix(&mut w.location);
            }
        }
    }
}

/// How long a queue operation is retried while PostgreSQL is unreachable (a restart, a
/// failover, a dropped connection) before the worker thread gives up.
const RETRY_FOR: Duration = Duration::from_secs(120);

/// Runs a queue operation, retrying failures with backoff (0.5 s doubling to 10 s) for up to
/// `RETRY_FOR`, or until a stop is asked for. Retrying is safe: a claim whose answer was lost
/// is taken again when its lease runs out, and a finish that had committed answers "not this
/// worker's any more" the second time.
fn retry<T>(what: &str, stop: &AtomicBool, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    retry_for(what, stop, RETRY_FOR, &mut f)
}

fn retry_for<T>(
    what: &str,
    stop: &AtomicBool,
    limit: Duration,
    f: &mut dyn FnMut() -> Result<T>,
) -> Result<T> {
    let t0 = Instant::now();
    let mut wait = Duration::from_millis(500);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if t0.elapsed() + wait < limit && !stop.load(Ordering::Relaxed) => {
                tracing::warn!(error = ?e, "{what} failed; trying again in {wait:?}");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(e) => {
                return Err(e.context(format!(
                    "{what} failed for {:.0} s",
                    t0.elapsed().as_secs_f64()
                )))
            }
        }
    }
}

/// One input, start to end: its units (the image, the video, an archive's members, a
/// manifest's rows) analysed and stored one by one. A unit that cannot be read or analysed is
/// a failure of that unit only; a storage error ends the item with `Err` (re-queued). `None`:
/// stopped on request half way.
fn process(
    store: &ClusterStore,
    p: &FacePipeline,
    ctx: &mut JobCtx,
    item: &Claimed,
    path: &Path,
    stop: &AtomicBool,
    keep_lease: &mut dyn FnMut() -> Result<bool>,
) -> Result<Option<ItemResult>> {
    // An upload's copy is shown as the item's location.
    let shown = (item.staged_key.is_some()).then_some(item.location.as_str());
    let mut r = ItemResult::default();
    let mut stored_new = 0usize;
    let mut stopped = false;
    // The job was cancelled while this input was read: the rest of it is left unread.
    let mut cut = false;
    // Units are analysed against the job's opt-out list; one that grew since is loaded into
    // `fresh` and checked again at store time.
    let analysed = ctx.supp.generation;
    let mut fresh: Option<SuppressionList> = None;
    let mut each = |mut unit: ItemOutcome| -> Result<ControlFlow<()>> {
        if let Some(shown) = shown {
            relocate(&mut unit, path, shown);
        }
        r.units += 1;
        // The embedded ingest's counters, counted as it counts them.
        let c = &mut r.counts;
        c.images_seen += 1;
        match unit {
            ItemOutcome::Known => {
                r.units_known += 1;
                c.images_skipped_known += 1;
            }
            ItemOutcome::Failed(f) => {
                c.errors += 1;
                *c.errors_by_code.entry(f.code.clone()).or_default() += 1;
                r.failures.push(f);
            }
            ItemOutcome::Image(img, rejected) => {
                for (_, reasons) in &rejected {
                    if let Some(why) = reasons.first() {
                        *c.faces_rejected.entry(why.clone()).or_default() += 1;
                    }
                }
                let found = img.faces.len();
                match store_checked(store, p, analysed, &mut fresh, *img)? {
                    Some(faces) => {
                        stored_new += 1;
                        r.faces += faces as i32;
                        count_stored(&mut r.counts, found, faces);
                    }
                    None => {
                        r.units_known += 1;
                        r.counts.images_skipped_known += 1;
                    }
                }
            }
            ItemOutcome::Video(v) => {
                let v = *v;
                c.videos += 1;
                c.video_frames_sampled += v.frames_sampled;
                for (why, n) in &v.rejected {
                    *c.faces_rejected.entry(why.clone()).or_default() += n;
                }
                let mut new = 0;
                for frame in v.frames {
                    let found = frame.faces.len();
                    match store_checked(store, p, analysed, &mut fresh, frame)? {
                        Some(faces) => {
                            new += 1;
                            r.faces += faces as i32;
                            count_stored(&mut r.counts, found, faces);
                        }
                        None => r.counts.images_skipped_known += 1,
                    }
                    cut |= keep_lease()?;
                }
                // The marker last: a video is known only once every frame is stored.
                if store_checked(store, p, analysed, &mut fresh, v.marker)?.is_some() || new > 0 {
                    stored_new += 1;
                } else {
                    r.units_known += 1;
                }
                if let Some(w) = v.warning {
                    // Decoding stopped early: the frames before are stored; say so.
                    r.warnings.push(w);
                }
            }
        }
        cut |= keep_lease()?;
        if cut {
            return Ok(ControlFlow::Break(()));
        }
        if stop.load(Ordering::Relaxed) {
            stopped = true;
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    };
    let done = process_input(
        store,
        p,
        path,
        item.kind,
        ctx.collection_id,
        &ctx.source,
        &ctx.opts,
        &ctx.supp,
        &ctx.excluded,
        &mut each,
    );
    if let Some(f) = fresh {
        ctx.supp = f;
    }
    done?;
    if stopped {
        return Ok(None);
    }
    if cut {
        // What was read is stored and counted; the report says where it stopped.
        r.warnings.push(visage_engine::ingest::ItemFailure {
            location: item.location.clone(),
            code: "cancelled".into(),
            message: format!(
                "the job was cancelled while this input was read: {} entries were read, the \
                 rest (if any) were not",
                r.units
            ),
        });
    }
    r.outcome = if stored_new > 0 || (r.units == 0) {
        "indexed"
    } else if r.units_known > 0 {
        "known"
    } else {
        "failed"
    };
    if r.outcome == "failed" {
        if let Some(f) = r.failures.first() {
            r.error_code = Some(f.code.clone());
            r.error = Some(if r.units <= 1 {
                f.message.clone()
            } else {
                format!(
                    "{} of {} entries failed; first: {}: {}",
                    r.failures.len(),
                    r.units,
                    f.location,
                    f.message
                )
            });
        }
    }
    Ok(Some(r))
}

/// Counts an image stored with `stored` of the `found` faces it was analysed with (the others
/// matched opt-outs that arrived meanwhile).
fn count_stored(c: &mut IngestCounts, found: usize, stored: usize) {
    c.images_indexed += 1;
    c.faces_indexed += stored as u64;
    if stored == 0 {
        c.images_without_faces += 1;
    }
    if found > stored {
        *c.faces_rejected.entry("opted_out".into()).or_default() += (found - stored) as u64;
    }
}

/// Stores one image unless people opted out since it was analysed (against the list of
/// generation `analysed`): then its faces are checked against the grown list, kept in
/// `fresh`, and those that match are dropped before it is stored. Returns the faces stored,
/// or `None` when the image was already stored.
fn store_checked(
    store: &ClusterStore,
    p: &FacePipeline,
    analysed: i64,
    fresh: &mut Option<SuppressionList>,
    mut img: NewImage,
) -> Result<Option<usize>> {
    let drop_suppressed = |img: &mut NewImage, list: &SuppressionList| {
        let before = img.faces.len();
        img.faces.retain(|f| !list.matches(&f.vector));
        img.faces_rejected += (before - img.faces.len()) as u32;
    };
    let mut generation = analysed;
    if let Some(list) = fresh.as_ref() {
        drop_suppressed(&mut img, list);
        generation = list.generation;
    }
    for _ in 0..3 {
        match store.add_image_checked(&img, generation)? {
            Some(o) if o.duplicate => return Ok(None),
            Some(o) => return Ok(Some(o.face_ids.len())),
            None => {
                tracing::info!(uri = ?img.uri, "opt-outs arrived meanwhile; checking again");
                let list = SuppressionList::from_store(store, p)?;
                drop_suppressed(&mut img, &list);
                generation = list.generation;
                *fresh = Some(list);
            }
        }
    }
    anyhow::bail!("the opt-out list changed during three tries to store this image")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relocate_names_the_upload() {
        use visage_engine::ingest::ItemFailure;
        let local = Path::new("/tmp/visage-upload-x/00002-a.zip");
        let shown = "upload:7/00002-a.zip";
        let failed = |loc: &str| {
            ItemOutcome::Failed(ItemFailure {
                location: loc.into(),
                code: "c".into(),
                message: "m".into(),
            })
        };
        for (loc, want) in [
            ("/tmp/visage-upload-x/00002-a.zip", shown.to_string()),
            ("00002-a.zip!b/c.jpg", format!("{shown}!b/c.jpg")),
            ("00002-a.zip#120", format!("{shown}#120")),
            // Not this file's: left alone.
            ("00002-a.zipper!x", "00002-a.zipper!x".into()),
            ("/elsewhere/00002-a.zip", "/elsewhere/00002-a.zip".into()),
        ] {
            let mut u = failed(loc);
            relocate(&mut u, local, shown);
            let ItemOutcome::Failed(f) = u else {
                unreachable!()
            };
            assert_eq!(f.location, want, "{loc}");
        }
    }

    #[test]
    fn retry_rides_out_failures_then_gives_up() {
        let stop = AtomicBool::new(false);
        let mut calls = 0;
        let v = retry_for("x", &stop, Duration::from_secs(5), &mut || {
            calls += 1;
            if calls < 3 {
                anyhow::bail!("connection refused")
            }
            Ok(calls)
        });
        assert_eq!(v.unwrap(), 3);
        // Within a 1 s limit: the first try and one after 0.5 s, then the error.
        let mut calls = 0;
        let e = retry_for(
            "claiming items",
            &stop,
            Duration::from_secs(1),
            &mut || -> Result<()> {
                calls += 1;
                Err(anyhow::anyhow!("connection refused"))
            },
        )
        .unwrap_err();
        assert_eq!(calls, 2);
        assert!(format!("{e:#}").contains("claiming items failed"), "{e:#}");
        // A stop asked for ends the retries at once.
        stop.store(true, Ordering::Relaxed);
        let mut calls = 0;
        assert!(retry_for(
            "x",
            &stop,
            Duration::from_secs(60),
            &mut || -> Result<()> {
                calls += 1;
                Err(anyhow::anyhow!("down"))
            }
        )
        .is_err());
        assert_eq!(calls, 1);
    }
}
