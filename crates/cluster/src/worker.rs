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
use visage_engine::ingest::{process_file, ItemOutcome};
use visage_engine::optout::SuppressionList;
use visage_engine::IngestOptions;
use visage_gallery::{FaceStore, Source};
use visage_vision::{FacePipeline, PipelinePool};

use crate::queue::{self, ItemResult};
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
    pub items: u64,
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

fn job_ctx(
    store: &ClusterStore,
    p: &FacePipeline,
    base: &IngestOptions,
    job_id: i64,
) -> Result<JobCtx> {
    let (collection, source, args) = queue::job_source(store.pool(), job_id)?;
    let coll =
        store.ensure_collection(&collection, &p.pack_id(), p.pack.recogniser.embedding_dim)?;
    let source = store.ensure_source(coll.id, &source)?;
    let mut opts = base.clone();
    opts.collection = collection;
    opts.subject_from_parent = args
        .get("subject_from_parent")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let excluded = opts
        .excluded_jurisdictions
        .iter()
        .map(|j| visage_gallery::normalize_jurisdiction(j))
        .collect::<Result<_>>()?;
    Ok(JobCtx {
        collection_id: coll.id,
        source,
        opts,
        supp: SuppressionList::from_store(store, p)?,
        excluded,
    })
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
    let mut jobs: HashMap<i64, JobCtx> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let claimed = queue::claim(store.pool(), name, opts.batch.max(1), opts.lease_s)?;
        if claimed.is_empty() {
            if opts.exit_when_idle && queue::open_items(store.pool())? == 0 {
                break;
            }
            std::thread::sleep(opts.poll);
            continue;
        }
        let mut held: Vec<i64> = claimed.iter().map(|c| c.id).collect();
        for item in claimed {
            if stop.load(Ordering::Relaxed) {
                // Unfinished claims return to the queue when their lease runs out.
                break;
            }
            let ctx = match jobs.entry(item.job_id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(job_ctx(store, p, &opts.ingest, item.job_id)?)
                }
            };
            let r = process(store, p, ctx, &item.location);
            if r.error_code.as_deref() == Some("store_error") {
                // The storage failed, not the item: back to the queue for another try (its
                // attempts still count, so a persistent failure ends as `attempts_exhausted`).
                tracing::warn!(item = item.id, error = ?r.error, "storage error; item re-queued");
                queue::release(store.pool(), name, item.id)?;
                held.retain(|i| *i != item.id);
                continue;
            }
            let mine = queue::finish(store.pool(), name, item.id, &r)?;
            held.retain(|i| *i != item.id);
            queue::extend(store.pool(), name, &held, opts.lease_s)?;
            let mut rep = report.lock().unwrap_or_else(|e| e.into_inner());
            rep.items += 1;
            if !mine {
                rep.lost_leases += 1;
            }
            match r.outcome {
                "indexed" => {
                    rep.indexed += 1;
                    rep.faces += r.faces as u64;
                }
                "known" => rep.known += 1,
                _ => rep.failed += 1,
            }
            progress(&rep);
        }
    }
    Ok(())
}

/// One item, start to end. Storage errors are item failures too (the item can be retried by
/// re-queueing the job); they never stop the worker. When people opted out while the item was
/// analysed, its faces are checked again against the grown list before anything is stored.
fn process(store: &ClusterStore, p: &FacePipeline, ctx: &mut JobCtx, location: &str) -> ItemResult {
    let failed = |code: &str, msg: String| ItemResult {
        outcome: "failed",
        faces: 0,
        error_code: Some(code.into()),
        error: Some(msg),
    };
    let known = || ItemResult {
        outcome: "known",
        faces: 0,
        error_code: None,
        error: None,
    };
    for _ in 0..3 {
        let out = process_file(
            store,
            p,
            Path::new(location),
            ctx.collection_id,
            &ctx.source,
            &ctx.opts,
            &ctx.supp,
            &ctx.excluded,
        );
        let img = match out {
            Err(e) => return failed("store_error", format!("{e:#}")),
            Ok(ItemOutcome::Known) => return known(),
            Ok(ItemOutcome::Failed(f)) => return failed(&f.code, f.message),
            Ok(ItemOutcome::Image(img, _rejected)) => img,
        };
        match store.add_image_checked(&img, ctx.supp.generation) {
            Ok(Some(o)) if o.duplicate => return known(),
            Ok(Some(o)) => {
                return ItemResult {
                    outcome: "indexed",
                    faces: o.face_ids.len() as i32,
                    error_code: None,
                    error: None,
                }
            }
            Ok(None) => {
                tracing::info!(
                    item = location,
                    "opt-outs arrived meanwhile; checking again"
                );
                match SuppressionList::from_store(store, p) {
                    Ok(s) => ctx.supp = s,
                    Err(e) => return failed("store_error", format!("{e:#}")),
                }
            }
            Err(e) => return failed("store_error", format!("{e:#}")),
        }
    }
    failed(
        "store_error",
        "the opt-out list changed during three tries to store this item".into(),
    )
}
