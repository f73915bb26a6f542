//! The ingest queue in PostgreSQL: a job per request, an item per input file. Workers claim
//! items with `FOR UPDATE SKIP LOCKED` and a lease; an item whose worker died is claimed again
//! when its lease runs out, and storing by content hash makes the redo a no-op where the first
//! attempt had already committed. So no item is lost and no face is written twice.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use visage_engine::ingest::{IngestCounts, InputKind, ItemFailure};
use visage_gallery::gallery::now;
use visage_gallery::NewSource;

use crate::pg::Pool;

/// An item is given up (`failed`, code `attempts_exhausted`) after this many claims: a file
/// that kills its worker every time must not stop the queue.
pub const MAX_ATTEMPTS: i32 = 3;

#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub id: i64,
    pub collection: String,
    pub source: serde_json::Value,
    /// `queued` (nothing claimed yet), `running`, `completed` (every item done or failed),
    /// `cancelled` (cancelled, and the items in flight then have finished).
    pub status: String,
    pub items: i64,
    pub queued: i64,
    pub claimed: i64,
    pub done: i64,
    pub failed: i64,
    /// Of the failed items: those never read because the job was cancelled.
    pub cancelled: i64,
    pub faces: i64,
    /// Items whose every unit was already stored (content hash).
    pub known: i64,
    /// Units of the finished items: 1 per image or video, one per member or row of an
    /// archive, web archive or manifest.
    pub units: i64,
    pub units_known: i64,
    pub units_failed: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// When a worker first claimed one of its items.
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub cancel_requested: bool,
    /// What the job was queued with (path or paths, options, origin, who).
    pub args: serde_json::Value,
    /// Unfinished jobs queued before this one, while it waits.
    pub jobs_ahead: Option<i64>,
    /// The embedded ingest's counters summed over the finished items (items that failed as
    /// a whole, given up or skipped, count as errors by their code; cancelled ones do not).
    /// Items finished before schema 10 are not in them.
    pub counts: IngestCounts,
}

#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub job_id: i64,
    /// A path the workers read, or for an upload what reports and provenance show
    /// (`upload:{job}/{name}`).
    pub location: String,
    pub kind: InputKind,
    pub attempts: i32,
    /// An upload's object in the bucket (`S3Blobs::fetch_staged`), removed once the item ends.
    pub staged_key: Option<String>,
}

/// An input listed for the queue: a path, or an upload staged in the bucket.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The path, or what reports show for an upload (`upload_location`).
    pub location: String,
    pub kind: InputKind,
    pub staged_key: Option<String>,
}

/// What reports and provenance show for the upload `name` of job `job`.
pub fn upload_location(job: i64, name: &str) -> String {
    format!("upload:{job}/{name}")
}

/// How an item ended.
#[derive(Debug, Clone, Default)]
pub struct ItemResult {
    /// `indexed` (something new stored), `known` (every unit already stored) or `failed`
    /// (no unit stored or known, at least one failed).
    pub outcome: &'static str,
    pub faces: i32,
    /// Units of the input (1 for an image or a video; members or rows of a container).
    pub units: i32,
    pub units_known: i32,
    /// The units that failed, listed in `ingest_failure`.
    pub failures: Vec<ItemFailure>,
    /// Units stored with a problem worth telling (a video decoded only in part).
    pub warnings: Vec<ItemFailure>,
    /// For a failed item: the code and message (the first unit's failure, or the container's).
    pub error_code: Option<String>,
    pub error: Option<String>,
    /// What the item did, in the embedded ingest's counters (summed per job for its view).
    pub counts: IngestCounts,
}

/// The inputs under `inputs`, as the embedded ingest walks them (folders in name order,
/// hidden entries and links inside folders skipped), each with its kind, plus what was
/// skipped and why. A named input that cannot be read is an error: nothing is queued.
pub fn list_inputs(inputs: &[PathBuf]) -> Result<Inputs> {
    let listing = visage_engine::files::collect(inputs);
    if let Some((p, why)) = listing.skipped.iter().find(|(p, _)| inputs.contains(p)) {
        bail!("{}: {why}", p.display());
    }
    let files = listing
        .files
        .into_iter()
        .map(|f| {
            let kind = InputKind::of(&f, inputs.contains(&f));
            (f, kind)
        })
        .collect();
    Ok(Inputs {
        files,
        skipped: listing.skipped,
    })
}

/// What `list_inputs` found.
pub struct Inputs {
    /// Each input file with its kind.
    pub files: Vec<(PathBuf, InputKind)>,
    /// Entries of the folders not queued, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Queues one item per input file (an image, a video, an archive, a web archive or a named
/// manifest) in one transaction: the job is there whole or not at all. What the folder walk
/// skipped (links, unreadable entries) is queued as failed items (`skipped`), as the embedded
/// ingest reports them. Paths must be readable by the workers (a shared file system); they
/// are stored absolute.
pub fn enqueue(
    pool: &Pool,
    collection: &str,
    source: &NewSource,
    inputs: &[PathBuf],
    args: serde_json::Value,
) -> Result<i64> {
    enqueue_with(pool, collection, source, inputs, args, |_, _| Ok(()))
}

/// `enqueue`, with `also(tx, job_id)` run in the same transaction (the audit record of the
/// request, so a job exists exactly when its record does).
pub fn enqueue_with(
    pool: &Pool,
    collection: &str,
    source: &NewSource,
    inputs: &[PathBuf],
    args: serde_json::Value,
    also: impl FnOnce(&mut postgres::Transaction<'_>, i64) -> Result<()>,
) -> Result<i64> {
    let Inputs { files, skipped } = list_inputs(inputs)?;
    let abs = |p: &Path| std::path::absolute(p).map(|a| a.display().to_string());
    let listed = files
        .iter()
        .map(|(p, kind)| {
            Ok(Listed {
                location: abs(p)?,
                kind: *kind,
                staged_key: None,
            })
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let refused = skipped
        .iter()
        .map(|(p, why)| {
            Ok(ItemFailure {
                location: abs(p)?,
                code: "skipped".into(),
                message: why.clone(),
            })
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    enqueue_listed(
        pool, None, collection, source, &listed, &refused, args, also,
    )
}

/// A job id for `enqueue_listed`, taken before the job exists (uploads are staged under it).
pub fn reserve_job_id(pool: &Pool) -> Result<i64> {
    Ok(pool
        .get()?
        .query_one(
            "SELECT nextval(pg_get_serial_sequence('ingest_job', 'id'))",
            &[],
        )?
        .get(0))
}

/// Queues a job of inputs already listed, in one transaction, with the id `id` (from
/// `reserve_job_id`) or a new one. `refused` are queued as failed items with their code
/// (not read: a folder walk's skipped entries, uploads refused on arrival).
#[allow(clippy::too_many_arguments)]
pub fn enqueue_listed(
    pool: &Pool,
    id: Option<i64>,
    collection: &str,
    source: &NewSource,
    items: &[Listed],
    refused: &[ItemFailure],
    args: serde_json::Value,
    also: impl FnOnce(&mut postgres::Transaction<'_>, i64) -> Result<()>,
) -> Result<i64> {
    if collection.trim().is_empty() {
        bail!("a collection needs a name");
    }
    if source.name.trim().is_empty() {
        bail!("the source needs a name");
    }
    let mut c = pool.get()?;
    let mut tx = c.transaction()?;
    let t = now();
    let src = serde_json::json!({
        "name": source.name, "kind": source.kind, "uri": source.uri,
        "legal_basis": source.legal_basis, "licence": source.licence,
        "jurisdiction": source.jurisdiction,
    });
    let job: i64 = tx
        .query_one(
            "INSERT INTO ingest_job (id, collection, source, args, status, created_at, \
             updated_at) VALUES (COALESCE($5, nextval(pg_get_serial_sequence('ingest_job', \
             'id'))), $1, $2, $3, 'queued', $4, $4) RETURNING id",
            &[&collection, &src, &args, &t, &id],
        )?
        .get(0);
    for chunk in items.chunks(1000) {
        let locs: Vec<&str> = chunk.iter().map(|i| i.location.as_str()).collect();
        let kinds: Vec<&str> = chunk.iter().map(|i| i.kind.as_str()).collect();
        let keys: Vec<Option<&str>> = chunk.iter().map(|i| i.staged_key.as_deref()).collect();
        tx.execute(
            "INSERT INTO ingest_item (job_id, location, kind, staged_key, updated_at) \
             SELECT $1, loc, kind, key, $2 \
             FROM unnest($3::text[], $4::text[], $5::text[]) AS u(loc, kind, key)",
            &[&job, &t, &locs, &kinds, &keys],
        )?;
    }
    for f in refused {
        tx.execute(
            "INSERT INTO ingest_item (job_id, location, status, outcome, error_code, error, \
             units, units_known, units_failed, updated_at) \
             VALUES ($1, $2, 'failed', 'failed', $3, $4, 1, 0, 1, $5)",
            &[&job, &f.location, &f.code, &f.message, &t],
        )?;
    }
    also(&mut tx, job)?;
    tx.commit()?;
    Ok(job)
}

/// Claims up to `n` items for `worker`: queued ones, and claimed ones whose lease ran out.
pub fn claim(pool: &Pool, worker: &str, n: usize, lease_s: i64) -> Result<Vec<Claimed>> {
    let mut c = pool.get()?;
    let mut tx = c.transaction()?;
    let t = now();
    // Items of cancelled jobs that are still open (a claim whose worker died) end here,
    // then items that used up their attempts are given up; their jobs may end with them.
    let mut ended: Vec<i64> = tx
        .query(
            "UPDATE ingest_item SET status = 'failed', outcome = 'failed', \
             error_code = 'cancelled', error = $2, units = 0, units_known = 0, \
             units_failed = 0, lease_until = NULL, updated_at = $1 \
             WHERE id IN (SELECT i.id FROM ingest_item i JOIN ingest_job j ON j.id = i.job_id \
                          WHERE j.cancel_requested AND (i.status = 'queued' \
                          OR (i.status = 'claimed' AND i.lease_until < $1)) \
                          FOR UPDATE OF i SKIP LOCKED) RETURNING job_id",
            &[&t, &CANCELLED_ITEM],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    ended.extend(
        tx.query(
            "UPDATE ingest_item SET status = 'failed', outcome = 'failed', \
             error_code = 'attempts_exhausted', \
             error = 'claimed ' || attempts || ' times without finishing (worker died on it?)', \
             units = 1, units_known = 0, units_failed = 1, lease_until = NULL, updated_at = $2 \
             WHERE id IN (SELECT id FROM ingest_item WHERE attempts >= $1 AND (status = 'queued' \
                          OR (status = 'claimed' AND lease_until < $2)) FOR UPDATE SKIP LOCKED) \
             RETURNING job_id",
            &[&MAX_ATTEMPTS, &t],
        )?
        .iter()
        .map(|r| r.get::<_, i64>(0)),
    );
    if !ended.is_empty() {
        ended.sort_unstable();
        ended.dedup();
        end_jobs(&mut tx, &ended, t)?;
    }
    // Committed apart from the claim below: that one locks items, then job rows; holding the
    // rows `end_jobs` locked while taking items could deadlock with another worker's claim.
    tx.commit()?;
    let mut tx = c.transaction()?;
    let rows = tx.query(
        "UPDATE ingest_item SET status = 'claimed', claimed_by = $1, lease_until = $2, \
         attempts = attempts + 1, updated_at = $3 \
         WHERE id IN (SELECT id FROM ingest_item \
                      WHERE status = 'queued' OR (status = 'claimed' AND lease_until < $3) \
                      ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
         RETURNING id, job_id, location, kind, attempts, staged_key",
        &[&worker, &(t + lease_s), &t, &(n as i64)],
    )?;
    let claimed: Vec<Claimed> = rows
        .iter()
        .map(|r| Claimed {
            id: r.get(0),
            job_id: r.get(1),
            location: r.get(2),
            kind: InputKind::parse(r.get(3)).unwrap_or(InputKind::File),
            attempts: r.get(4),
            staged_key: r.get(5),
        })
        .collect();
    if !claimed.is_empty() {
        let jobs: Vec<i64> = claimed.iter().map(|c| c.job_id).collect();
        tx.execute(
            "UPDATE ingest_job SET status = 'running', updated_at = $2, \
             started_at = COALESCE(started_at, $2) WHERE id = ANY($1) AND status = 'queued'",
            &[&jobs, &t],
        )?;
    }
    tx.commit()?;
    Ok(claimed)
}

/// Extends the lease of items this worker still holds; returns the jobs of those items whose
/// cancellation was asked for (the worker ends or stops their items).
pub fn extend(pool: &Pool, worker: &str, ids: &[i64], lease_s: i64) -> Result<HashSet<i64>> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let mut c = pool.get()?;
    Ok(c.query(
        "WITH held AS (UPDATE ingest_item SET lease_until = $3 WHERE id = ANY($1) \
         AND claimed_by = $2 AND status = 'claimed' RETURNING job_id) \
         SELECT DISTINCT j.id FROM ingest_job j JOIN held h ON h.job_id = j.id \
         WHERE j.cancel_requested",
        &[&ids, &worker, &(now() + lease_s)],
    )?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// Failed units and warnings listed per item; further failures are counted only
/// (`units_failed`).
pub const FAILURES_KEPT: usize = 10_000;

/// Records an item's end, with its failed units. Returns false when the item was no longer
/// this worker's (its lease ran out and another worker took it; that worker's result counts).
pub fn finish(pool: &Pool, worker: &str, id: i64, r: &ItemResult) -> Result<bool> {
    let status = if r.outcome == "failed" {
        "failed"
    } else {
        "done"
    };
    let mut c = pool.get()?;
    let mut tx = c.transaction()?;
    let t = now();
    let failed = r.failures.len() as i32;
    let n = tx.execute(
        "UPDATE ingest_item SET status = $3, outcome = $4, faces = $5, error_code = $6, \
         error = $7, updated_at = $8, lease_until = NULL, units = $9, units_known = $10, \
         units_failed = $11, counts = $12 \
         WHERE id = $1 AND claimed_by = $2 AND status = 'claimed'",
        &[
            &id,
            &worker,
            &status,
            &r.outcome,
            &r.faces,
            &r.error_code,
            &r.error,
            &t,
            &r.units,
            &r.units_known,
            &failed,
            &serde_json::to_value(&r.counts)?,
        ],
    )?;
    if n > 0 {
        tx.execute("DELETE FROM ingest_failure WHERE item_id = $1", &[&id])?;
        let listed = r
            .failures
            .iter()
            .map(|f| ("failed", f))
            .chain(r.warnings.iter().map(|f| ("warning", f)))
            .take(FAILURES_KEPT)
            .collect::<Vec<_>>();
        for chunk in listed.chunks(1000) {
            let sev: Vec<&str> = chunk.iter().map(|(s, _)| *s).collect();
            let locs: Vec<&str> = chunk.iter().map(|(_, f)| f.location.as_str()).collect();
            let codes: Vec<&str> = chunk.iter().map(|(_, f)| f.code.as_str()).collect();
            let msgs: Vec<&str> = chunk.iter().map(|(_, f)| f.message.as_str()).collect();
            tx.execute(
                "INSERT INTO ingest_failure (item_id, job_id, severity, location, code, message) \
                 SELECT $1, i.job_id, u.sev, u.loc, u.code, u.msg FROM ingest_item i, \
                 unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(sev, loc, code, msg) \
                 WHERE i.id = $1",
                &[&id, &sev, &locs, &codes, &msgs],
            )?;
        }
        let job: i64 = tx
            .query_one("SELECT job_id FROM ingest_item WHERE id = $1", &[&id])?
            .get(0);
        end_jobs(&mut tx, &[job], t)?;
    }
    tx.commit()?;
    Ok(n > 0)
}

/// Why an item of a cancelled job was never read.
pub const CANCELLED_ITEM: &str = "the job was cancelled before this item was read";

/// Ends the jobs among `ids` that have nothing open any more: `completed`, or `cancelled`
/// when a cancellation was asked for. Call it after this transaction's item changes: the job
/// rows are locked first, in a statement of their own, so of two transactions ending a job's
/// last two items the second waits for the first and then (a new statement, a new snapshot
/// under READ COMMITTED) sees its item finished. Locks are taken items first, then jobs,
/// everywhere (claim, finish, cancel), so they cannot deadlock.
fn end_jobs(tx: &mut postgres::Transaction<'_>, ids: &[i64], t: i64) -> Result<()> {
    tx.execute(
        "SELECT id FROM ingest_job WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&ids],
    )?;
    tx.execute(
        "UPDATE ingest_job j SET status = CASE WHEN j.cancel_requested THEN 'cancelled' \
         ELSE 'completed' END, updated_at = $2, finished_at = $2 \
         WHERE j.id = ANY($1) AND j.status IN ('queued', 'running') \
         AND NOT EXISTS (SELECT 1 FROM ingest_item i \
                         WHERE i.job_id = j.id AND i.status IN ('queued', 'claimed'))",
        &[&ids, &t],
    )?;
    Ok(())
}

/// How a cancellation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// Asked for: the queued items are failed (`cancelled`), the ones in flight finish.
    Requested,
    /// The job had already ended (completed or cancelled).
    AlreadyEnded,
    NotFound,
}

/// Cancels a job: its queued items end at once as failed with code `cancelled` (not read;
/// not counted as errors), the items workers hold finish, and the job ends `cancelled` when
/// the last of them does (at once when none is claimed).
pub fn cancel(pool: &Pool, job_id: i64) -> Result<Cancel> {
    let mut c = pool.get()?;
    let mut tx = c.transaction()?;
    let t = now();
    let open = tx
        .query_opt(
            "SELECT status IN ('queued', 'running') FROM ingest_job WHERE id = $1",
            &[&job_id],
        )?
        .map(|r| r.get::<_, bool>(0));
    match open {
        None => return Ok(Cancel::NotFound),
        Some(false) => return Ok(Cancel::AlreadyEnded),
        Some(true) => {}
    }
    // Items first (a claim in flight holds its items, then takes the job row).
    tx.execute(
        "UPDATE ingest_item SET status = 'failed', outcome = 'failed', error_code = 'cancelled', \
         error = $3, units = 0, units_known = 0, units_failed = 0, updated_at = $2 \
         WHERE job_id = $1 AND status = 'queued'",
        &[&job_id, &t, &CANCELLED_ITEM],
    )?;
    let asked = tx.execute(
        "UPDATE ingest_job SET cancel_requested = true, updated_at = $2 \
         WHERE id = $1 AND status IN ('queued', 'running')",
        &[&job_id, &t],
    )?;
    if asked == 0 {
        // It ended meanwhile (its last item finished): nothing was queued any more.
        return Ok(Cancel::AlreadyEnded);
    }
    end_jobs(&mut tx, &[job_id], t)?;
    tx.commit()?;
    Ok(Cancel::Requested)
}

pub fn job_source(pool: &Pool, job_id: i64) -> Result<(String, NewSource, serde_json::Value)> {
    let mut c = pool.get()?;
    let r = c
        .query_opt(
            "SELECT collection, source, args FROM ingest_job WHERE id = $1",
            &[&job_id],
        )?
        .with_context(|| format!("no ingest job {job_id}"))?;
    let src: serde_json::Value = r.get(1);
    let s = |k: &str| src.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Ok((
        r.get(0),
        NewSource {
            name: s("name").unwrap_or_default(),
            kind: s("kind").unwrap_or_else(|| "folder".into()),
            uri: s("uri"),
            legal_basis: s("legal_basis"),
            licence: s("licence"),
            jurisdiction: s("jurisdiction"),
        },
        r.get(2),
    ))
}

/// A job with its item counts; the query's tail picks the jobs (`GROUP BY j.id` included).
const JOB_STATUS_SQL: &str = "SELECT j.id, j.collection, j.source, j.status, j.created_at, \
    j.updated_at, COUNT(i.id), \
    COUNT(*) FILTER (WHERE i.status = 'queued'), COUNT(*) FILTER (WHERE i.status = 'claimed'), \
    COUNT(*) FILTER (WHERE i.status = 'done'), COUNT(*) FILTER (WHERE i.status = 'failed'), \
    COALESCE(SUM(i.faces), 0)::BIGINT, COUNT(*) FILTER (WHERE i.outcome = 'known'), \
    COALESCE(MAX(i.updated_at), 0), COALESCE(SUM(i.units), 0)::BIGINT, \
    COALESCE(SUM(i.units_known), 0)::BIGINT, COALESCE(SUM(i.units_failed), 0)::BIGINT, \
    COUNT(*) FILTER (WHERE i.status = 'failed' AND i.error_code = 'cancelled'), \
    j.started_at, j.finished_at, j.cancel_requested, j.args, \
    CASE WHEN j.status = 'queued' THEN (SELECT COUNT(*) FROM ingest_job o \
        WHERE o.id < j.id AND o.status IN ('queued', 'running')) END \
    FROM ingest_job j LEFT JOIN ingest_item i ON i.job_id = j.id";

/// The finished items' counters per job, as (job, key, map key or '', sum) rows: plain
/// counters, then the two maps (faces rejected by reason, errors by code), then items that
/// failed as a whole without counters (given up, skipped), counted as errors.
const JOB_COUNTS_SQL: &str = "\
    SELECT i.job_id, k.key, ''::text, SUM((k.value)::bigint)::bigint \
    FROM ingest_item i CROSS JOIN LATERAL jsonb_each(i.counts) k \
    WHERE i.job_id = ANY($1) AND jsonb_typeof(k.value) = 'number' GROUP BY 1, 2 \
    UNION ALL \
    SELECT i.job_id, k.key, m.key, SUM((m.value)::bigint)::bigint \
    FROM ingest_item i CROSS JOIN LATERAL jsonb_each(i.counts) k \
    CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(k.value) = 'object' \
                                   THEN k.value ELSE '{}'::jsonb END) m \
    WHERE i.job_id = ANY($1) GROUP BY 1, 2, 3 \
    UNION ALL \
    SELECT job_id, 'errors_by_code', COALESCE(error_code, 'failed'), COUNT(*) \
    FROM ingest_item WHERE job_id = ANY($1) AND status = 'failed' AND counts IS NULL \
    AND error_code IS DISTINCT FROM 'cancelled' GROUP BY 1, 3";

fn statuses(
    pool: &Pool,
    tail: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<Vec<JobStatus>> {
    let mut c = pool.get()?;
    let mut out: Vec<JobStatus> = c
        .query(&format!("{JOB_STATUS_SQL} {tail}"), params)?
        .iter()
        .map(|r| JobStatus {
            id: r.get(0),
            collection: r.get(1),
            source: r.get(2),
            status: r.get(3),
            created_at: r.get(4),
            updated_at: r.get::<_, i64>(13).max(r.get(5)),
            items: r.get(6),
            queued: r.get(7),
            claimed: r.get(8),
            done: r.get(9),
            failed: r.get(10),
            faces: r.get(11),
            known: r.get(12),
            units: r.get(14),
            units_known: r.get(15),
            units_failed: r.get(16),
            cancelled: r.get(17),
            started_at: r.get(18),
            finished_at: r.get(19),
            cancel_requested: r.get(20),
            args: r.get(21),
            jobs_ahead: r.get(22),
            counts: IngestCounts::default(),
        })
        .collect();
    let ids: Vec<i64> = out.iter().map(|j| j.id).collect();
    let mut sums: std::collections::HashMap<i64, serde_json::Map<String, serde_json::Value>> =
        Default::default();
    for r in c.query(JOB_COUNTS_SQL, &[&ids])? {
        let (job, key, sub, n): (i64, String, String, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let m = sums.entry(job).or_default();
        if sub.is_empty() {
            m.insert(key, n.into());
        } else {
            let map = m
                .entry(key.clone())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if let Some(map) = map.as_object_mut() {
                let had = map.get(&sub).and_then(|v| v.as_i64()).unwrap_or(0);
                map.insert(sub, (had + n).into());
            }
        }
    }
    for j in &mut out {
        if let Some(m) = sums.remove(&j.id) {
            j.counts = serde_json::from_value(serde_json::Value::Object(m))
                .context("reading a job's counters")?;
        }
        // Every failed unit is in `errors_by_code`, and so is every item failed as a whole.
        j.counts.errors = j.counts.errors_by_code.values().sum();
    }
    Ok(out)
}

pub fn job_status(pool: &Pool, job_id: i64) -> Result<Option<JobStatus>> {
    Ok(statuses(pool, "WHERE j.id = $1 GROUP BY j.id", &[&job_id])?.pop())
}

/// The newest `limit` jobs, newest first.
/// Jobs newest first, only those with an id below `before` when given.
pub fn jobs_page(pool: &Pool, before: Option<i64>, limit: i64) -> Result<Vec<JobStatus>> {
    statuses(
        pool,
        "WHERE j.id < $1 GROUP BY j.id ORDER BY j.id DESC LIMIT $2",
        &[&before.unwrap_or(i64::MAX), &limit],
    )
}

/// A failed unit or a warning of a finished item, or an item that failed as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// `failed` or `warning`.
    pub severity: String,
    pub location: String,
    pub code: String,
    pub message: String,
}

/// Failures of a job, for reports: the failed units (and warnings) of finished items, and
/// items that failed as a whole (given up, skipped) with no unit listed.
pub fn failures(pool: &Pool, job_id: i64, limit: i64) -> Result<Vec<Failure>> {
    Ok(pool
        .get()?
        .query(
            "SELECT severity, location, code, message FROM ( \
               SELECT item_id AS ord, id AS sub, severity, location, code, message \
               FROM ingest_failure WHERE job_id = $1 \
               UNION ALL \
               SELECT i.id, 0, 'failed', i.location, COALESCE(i.error_code, ''), \
               COALESCE(i.error, '') FROM ingest_item i \
               WHERE i.job_id = $1 AND i.status = 'failed' \
               AND i.error_code IS DISTINCT FROM 'cancelled' \
               AND NOT EXISTS (SELECT 1 FROM ingest_failure f WHERE f.item_id = i.id) \
             ) u ORDER BY ord, sub LIMIT $2",
            &[&job_id, &limit],
        )?
        .iter()
        .map(|r| Failure {
            severity: r.get(0),
            location: r.get(1),
            code: r.get(2),
            message: r.get(3),
        })
        .collect())
}

/// Items queued or claimed, over all jobs.
pub fn open_items(pool: &Pool) -> Result<i64> {
    Ok(pool
        .get()?
        .query_one(
            "SELECT COUNT(*) FROM ingest_item WHERE status IN ('queued', 'claimed')",
            &[],
        )?
        .get(0))
}

/// Gives a claimed item back to the queue at once (a storage error, not the item's fault).
pub fn release(pool: &Pool, worker: &str, id: i64) -> Result<()> {
    pool.get()?.execute(
        "UPDATE ingest_item SET status = 'queued', claimed_by = NULL, lease_until = NULL, \
         updated_at = $3 WHERE id = $1 AND claimed_by = $2 AND status = 'claimed'",
        &[&id, &worker, &now()],
    )?;
    Ok(())
}

/// Staged uploads of items that have ended (done, failed, cancelled), of job `job` or of
/// every job: (item id, object key). Their objects are no longer needed.
fn ended_staged(pool: &Pool, job: Option<i64>) -> Result<Vec<(i64, String)>> {
    Ok(pool
        .get()?
        .query(
            "SELECT id, staged_key FROM ingest_item WHERE staged_key IS NOT NULL \
             AND status IN ('done', 'failed') AND ($1::BIGINT IS NULL OR job_id = $1) \
             ORDER BY id LIMIT 10000",
            &[&job],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Forgets the staged objects of ended items once they are removed from the bucket.
pub fn clear_staged(pool: &Pool, items: &[i64]) -> Result<()> {
    if !items.is_empty() {
        pool.get()?.execute(
            "UPDATE ingest_item SET staged_key = NULL WHERE id = ANY($1) \
             AND status IN ('done', 'failed')",
            &[&items],
        )?;
    }
    Ok(())
}

/// Removes the staged objects of ended items (of job `job`, or of every job) from the bucket
/// and forgets them. Returns how many were removed; a failure is left for the next sweep.
pub fn sweep_staged(pool: &Pool, blobs: &crate::blobs::S3Blobs, job: Option<i64>) -> Result<u64> {
    let mut removed = 0;
    loop {
        let ended = ended_staged(pool, job)?;
        if ended.is_empty() {
            return Ok(removed);
        }
        let mut done = Vec::new();
        for (id, key) in &ended {
            blobs.delete_staged(key)?;
            done.push(*id);
        }
        clear_staged(pool, &done)?;
        removed += done.len() as u64;
    }
}
