//! Vector index benchmark on synthetic face-like embeddings: build rate, single-query latency,
//! recall@10 against exact search, RAM and disk bytes per face, save and load times.
//!
//! The data imitates ArcFace-type embeddings: about N/4 identities (1 to 7 samples each), each
//! a random unit centre; a sample is the centre plus isotropic gaussian noise, re-normalised,
//! scaled so that two samples of one identity have cosine similarity 0.54-0.71 (about 0.62 on
//! average) and samples of different identities about 0. Queries are new samples of enrolled
//! identities. Everything is deterministic from the seed, whatever the thread count (the HNSW
//! graph itself is not: parallel insertion order varies from run to run).
//!
//! Random centres fill all dimensions, so beyond an identity's own samples the nearest
//! neighbours are nearly equidistant strangers, which HNSW finds poorly: recall@10 here is a
//! harder test than on real embeddings, whose intrinsic dimension is lower. The report also
//! gives what face search needs: `identity_recall_at_1` and `mate_recall_at_10`.
//!
//! With real embeddings (`real`) the index holds a gallery's labelled faces; with
//! `mix_synthetic` as well, synthetic vectors are added until it holds `n` (real embeddings
//! mixed into synthetic ones), and half the queries are held-out real faces, half synthetic
//! ones (recall is then also given over the real queries alone).
//!
//! `export` writes the exact data of the run (rows, queries, exact top-10) as `.npy` files, so
//! that another index (FAISS in `bench/peers_faiss.py`) is measured on identical vectors.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use visage_gallery::{HnswParams, Neighbour, TopK, UsearchIndex, VectorIndex};

/// Neighbours compared for recall.
pub const K: usize = 10;
/// Vectors per `add_batch` call while building.
const BATCH: usize = 256;
/// Base rows per tile of the exact search (kept in cache while every query is scored).
const TILE: usize = 64;
/// Queries checked for identical answers after a save and load.
const RELOAD_CHECKS: usize = 10;

#[derive(Debug, Clone)]
pub struct IndexBenchOptions {
    /// Vectors in the index.
    pub n: usize,
    pub dim: usize,
    /// Queries timed and scored for recall.
    pub queries: usize,
    /// HNSW parameters; `expansion_search` is the ef of the main measurement.
    pub params: HnswParams,
    /// Threads for generation, building and exact search (0: all cores). Queries are timed on
    /// the calling thread, one at a time.
    pub threads: usize,
    pub seed: u64,
    /// Further ef values measured on the same index (latency and recall for each).
    pub ef_sweep: Vec<usize>,
    /// Candidates re-scored exactly in f32 per query when the index stores quantised vectors
    /// (ignored for f32 storage).
    pub rerank: usize,
    /// Where the index is saved and loaded from (default: the system temporary folder; on a
    /// tmpfs that measures memory, not disk).
    pub save_dir: Option<PathBuf>,
    /// Real embeddings with their subject labels instead of synthetic ones (`n` and `dim`
    /// are then taken from them): queries are faces of subjects with several faces, held out
    /// of the index.
    pub real: Option<Vec<(Option<i64>, Vec<f32>)>>,
    /// With `real`: add synthetic vectors until the index holds `n`; half the queries are
    /// then real held-out faces, the other half synthetic.
    pub mix_synthetic: bool,
    /// Write the rows, queries and exact top-10 of the run to this folder (`.npy` files, see
    /// [`export`]).
    pub export: Option<PathBuf>,
}

impl Default for IndexBenchOptions {
    fn default() -> Self {
        IndexBenchOptions {
            n: 100_000,
            dim: 512,
            queries: 1000,
            params: HnswParams::default(),
            threads: 0,
            seed: 42,
            ef_sweep: Vec::new(),
            rerank: 40,
            save_dir: None,
            real: None,
            mix_synthetic: false,
            export: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
}

/// Latency and recall at one ef.
#[derive(Debug, Clone, Serialize)]
pub struct EfPoint {
    pub ef: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub recall_at_10: f64,
    pub identity_recall_at_1: f64,
    pub mate_recall_at_10: f64,
    /// recall@10 over the real queries alone (runs on real embeddings mixed into synthetic
    /// ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real_recall_at_10: Option<f64>,
    /// Identity recall@1 over the real queries alone (mixed runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real_identity_recall_at_1: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IndexBenchReport {
    pub index: String,
    pub n: usize,
    pub dim: usize,
    pub identities: usize,
    pub queries: usize,
    pub seed: u64,
    pub threads: usize,
    pub connectivity: usize,
    pub expansion_add: usize,
    pub expansion_search: usize,
    /// Vector storage in the index (f32, f16, i8).
    pub storage: visage_gallery::Storage,
    /// Candidates re-scored exactly per query (0: none, f32 storage).
    pub rerank: usize,
    /// Mean cosine similarity of a query with the enrolled samples of its identity.
    pub same_identity_cos: f64,
    /// Mean cosine similarity of a query with a sample of another identity.
    pub other_identity_cos: f64,
    pub generate_s: f64,
    /// Reserving and inserting all N vectors with `threads` threads.
    pub build_s: f64,
    pub insert_per_s: f64,
    pub ground_truth_s: f64,
    /// Single-threaded, one query at a time, top-10, after a warm-up pass.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    /// Mean over queries of |approximate top-10 ∩ exact top-10| / 10.
    pub recall_at_10: f64,
    /// Share of queries whose first hit is a sample of their own identity.
    pub identity_recall_at_1: f64,
    /// Share of the enrolled samples of the query's identity found in the top 10 (what a face
    /// search needs; recall@10 also counts the near-equidistant strangers after them).
    pub mate_recall_at_10: f64,
    /// The same for exact search: the ceiling of `identity_recall_at_1` on this data.
    pub exact_identity_recall_at_1: f64,
    /// usearch's own account of the memory it holds, per vector (arena space reserved but not
    /// yet used included, which dominates at small N).
    pub bytes_per_face_ram: f64,
    /// Growth of the resident set size over the build, per vector (null off Linux).
    pub rss_bytes_per_face: Option<f64>,
    pub bytes_per_face_disk: f64,
    /// Writing the file and `fsync`.
    pub save_s: f64,
    /// Loading into memory (the file is still in the page cache).
    pub load_s: f64,
    /// The loaded index answered the first queries exactly as the built one did.
    pub reload_identical: bool,
    pub ef_sweep: Vec<EfPoint>,
    /// Smallest swept ef (the main one included) with recall@10 >= 0.99, if any.
    pub min_ef_recall_0_99: Option<usize>,
    /// Real embeddings in the index (runs on a gallery's faces), and the held-out real faces
    /// among the queries (the first `real_queries` queries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real_faces: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real_queries: Option<usize>,
    /// recall@10 and identity recall@1 over the real queries alone at the main ef (mixed runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real_recall_at_10: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real_identity_recall_at_1: Option<f64>,
    /// Folder the data was exported to (`export`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exported_to: Option<PathBuf>,
    pub machine: Machine,
}

/// SplitMix64: small, fast and good enough to drive Box-Muller; one stream per vector, so
/// generation is parallel and still deterministic.
struct Rng(u64);

impl Rng {
    const STREAM_COUNTS: u64 = 1;
    const STREAM_CENTRES: u64 = 2;
    const STREAM_ROWS: u64 = 3;
    const STREAM_QUERY_IDS: u64 = 4;
    const STREAM_QUERIES: u64 = 5;
    const STREAM_STRANGERS: u64 = 6;

    fn new(seed: u64, stream: u64, index: u64) -> Rng {
        let mut r = Rng(seed);
        let a = r.next_u64() ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        let mut r = Rng(a);
        let b = r.next_u64() ^ index.wrapping_mul(0xA076_1D64_78BD_642F);
        Rng(b)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Standard normal values (Box-Muller), `scale` times.
    fn fill_gaussian(&mut self, out: &mut [f32], scale: f64) {
        for pair in out.chunks_mut(2) {
            let r = (-2.0 * (1.0 - self.uniform()).ln()).sqrt() * scale;
            let (s, c) = (std::f64::consts::TAU * self.uniform()).sin_cos();
            pair[0] = (r * c) as f32;
            if let Some(x) = pair.get_mut(1) {
                *x = (r * s) as f32;
            }
        }
    }
}

/// `n` synthetic face-like unit vectors (identities of 1 to 7 faces with the spread of real
/// face embeddings; see `generated_data_is_deterministic_and_face_like`), row-major.
pub fn synthetic_vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    Data::generate(n, dim, 0, seed).rows
}

/// The synthetic gallery: rows of one identity are contiguous.
struct Data {
    dim: usize,
    /// Identity i owns rows `starts[i]..starts[i + 1]`.
    starts: Vec<usize>,
    rows: Vec<f32>,
    queries: Vec<f32>,
    query_identity: Vec<usize>,
}

impl Data {
    fn generate(n: usize, dim: usize, queries: usize, seed: u64) -> Data {
        let mut starts = vec![0];
        let mut total = 0;
        while total < n {
            let count = 1 + Rng::new(seed, Rng::STREAM_COUNTS, starts.len() as u64).below(7);
            total = (total + count).min(n);
            starts.push(total);
        }
        let identities = starts.len() - 1;

        let mut rows = vec![0f32; n * dim];
        let mut slices = Vec::with_capacity(identities);
        let mut rest = rows.as_mut_slice();
        for w in starts.windows(2) {
            let (own, tail) = rest.split_at_mut((w[1] - w[0]) * dim);
            slices.push(own);
            rest = tail;
        }
        slices.into_par_iter().enumerate().for_each(|(i, own)| {
            let c = centre(seed, i, dim);
            for (j, row) in own.chunks_mut(dim).enumerate() {
                sample(
                    &c,
                    &mut Rng::new(seed, Rng::STREAM_ROWS, (starts[i] + j) as u64),
                    row,
                );
            }
        });

        let query_identity: Vec<usize> = (0..queries)
            .map(|q| Rng::new(seed, Rng::STREAM_QUERY_IDS, q as u64).below(identities))
            .collect();
        let mut qs = vec![0f32; queries * dim];
        qs.par_chunks_mut(dim).enumerate().for_each(|(q, out)| {
            let c = centre(seed, query_identity[q], dim);
            sample(&c, &mut Rng::new(seed, Rng::STREAM_QUERIES, q as u64), out);
        });
        Data {
            dim,
            starts,
            rows,
            queries: qs,
            query_identity,
        }
    }

    /// Real labelled vectors: one identity per subject (unlabelled faces are identities of
    /// their own); for up to `queries` subjects with at least two faces, one face is held out
    /// of the rows as a query.
    fn from_labelled(v: &[(Option<i64>, Vec<f32>)], queries: usize, seed: u64) -> Result<Data> {
        let Some(dim) = v.first().map(|x| x.1.len()) else {
            bail!("no vectors to benchmark");
        };
        let mut groups: std::collections::BTreeMap<(i64, usize), Vec<&[f32]>> = Default::default();
        for (i, (s, x)) in v.iter().enumerate() {
            if x.len() != dim {
                bail!("vectors of different dimensions");
            }
            let key = match s {
                Some(s) => (*s, 0),
                None => (-1, i),
            };
            groups.entry(key).or_default().push(x);
        }
        let mut groups: Vec<Vec<&[f32]>> = groups.into_values().collect();
        let mut multi: Vec<usize> = (0..groups.len())
            .filter(|&g| groups[g].len() >= 2)
            .collect();
        // Deterministic shuffle, then the first `queries` subjects give up one face each.
        for i in (1..multi.len()).rev() {
            let j = Rng::new(seed, Rng::STREAM_QUERY_IDS, i as u64).below(i + 1);
            multi.swap(i, j);
        }
        multi.truncate(queries);
        multi.sort();
        let mut qs = Vec::new();
        let mut query_identity = Vec::new();
        for &g in &multi {
            let q = groups[g].pop().expect("two or more faces");
            qs.extend_from_slice(q);
            query_identity.push(g);
        }
        let mut starts = vec![0];
        let mut rows = Vec::with_capacity(v.len() * dim);
        for g in &groups {
            for x in g {
                rows.extend_from_slice(x);
            }
            starts.push(starts.last().unwrap() + g.len());
        }
        Ok(Data {
            dim,
            starts,
            rows,
            queries: qs,
            query_identity,
        })
    }

    /// `real` followed by `synthetic` (same dimension): identities, rows and queries of the
    /// second come after those of the first.
    fn concat(mut real: Data, synthetic: Data) -> Data {
        debug_assert_eq!(real.dim, synthetic.dim);
        let (rows, ids) = (real.n(), real.identities());
        real.starts
            .extend(synthetic.starts[1..].iter().map(|s| s + rows));
        real.rows.extend_from_slice(&synthetic.rows);
        real.queries.extend_from_slice(&synthetic.queries);
        real.query_identity
            .extend(synthetic.query_identity.iter().map(|i| i + ids));
        real
    }

    fn n(&self) -> usize {
        self.rows.len() / self.dim
    }

    fn identities(&self) -> usize {
        self.starts.len() - 1
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.dim..(i + 1) * self.dim]
    }

    fn query(&self, q: usize) -> &[f32] {
        &self.queries[q * self.dim..(q + 1) * self.dim]
    }

    fn query_count(&self) -> usize {
        self.query_identity.len()
    }

    /// Rows of the identity of query `q`.
    fn mates(&self, q: usize) -> std::ops::Range<usize> {
        let i = self.query_identity[q];
        self.starts[i]..self.starts[i + 1]
    }

    fn is_mate(&self, q: usize, id: u64) -> bool {
        self.mates(q).contains(&(id as usize))
    }
}

fn centre(seed: u64, identity: usize, dim: usize) -> Vec<f32> {
    let mut c = vec![0f32; dim];
    Rng::new(seed, Rng::STREAM_CENTRES, identity as u64).fill_gaussian(&mut c, 1.0);
    visage_core::l2_normalize(&mut c);
    c
}

/// normalize(centre + noise), where |noise|^2 = u is drawn in [0.4, 0.85]: the cosine with the
/// centre is 1/sqrt(1 + u), with another sample of the identity about 1/sqrt((1+u)(1+u')).
fn sample(centre: &[f32], rng: &mut Rng, out: &mut [f32]) {
    let u = 0.4 + 0.45 * rng.uniform();
    rng.fill_gaussian(out, (u / out.len() as f64).sqrt());
    for (x, c) in out.iter_mut().zip(centre) {
        *x += c;
    }
    visage_core::l2_normalize(out);
}

/// Dot product with independent lanes, so that the compiler vectorises it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Exact top-k of every query: base rows split among tasks, each task scoring tiles of rows
/// against all queries (a tile stays in cache), then the per-task lists are merged.
fn exact_top_k(data: &Data, k: usize, tasks: usize) -> Vec<Vec<Neighbour>> {
    let n = data.n();
    let per_task = n.div_ceil(tasks.max(1)).max(1);
    let partial: Vec<Vec<Vec<Neighbour>>> = (0..n.div_ceil(per_task))
        .into_par_iter()
        .map(|t| {
            let rows = t * per_task..((t + 1) * per_task).min(n);
            let mut tops: Vec<TopK> = (0..data.query_count()).map(|_| TopK::new(k)).collect();
            for tile_start in rows.clone().step_by(TILE) {
                let tile = tile_start..(tile_start + TILE).min(rows.end);
                for (q, top) in tops.iter_mut().enumerate() {
                    let query = data.query(q);
                    for r in tile.clone() {
                        top.push(Neighbour {
                            id: r as u64,
                            score: dot(query, data.row(r)),
                        });
                    }
                }
            }
            tops.into_iter().map(TopK::into_sorted).collect()
        })
        .collect();
    (0..data.query_count())
        .map(|q| {
            let mut top = TopK::new(k);
            for list in &partial {
                list[q].iter().for_each(|&nb| top.push(nb));
            }
            top.into_sorted()
        })
        .collect()
}

fn recall(approx: &[Neighbour], exact: &[Neighbour]) -> f64 {
    if exact.is_empty() {
        return 1.0;
    }
    let hits = exact
        .iter()
        .filter(|e| approx.iter().any(|a| a.id == e.id))
        .count();
    hits as f64 / exact.len() as f64
}

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    let rank = (p * sorted_ms.len() as f64).ceil() as usize;
    sorted_ms[rank.clamp(1, sorted_ms.len()) - 1]
}

/// Runs every query once, one at a time on this thread, and scores the answers.
fn measure(
    index: &UsearchIndex,
    data: &Data,
    exact: &[Vec<Neighbour>],
    k: usize,
    ef: usize,
    rerank: usize,
    real_queries: Option<usize>,
) -> Result<EfPoint> {
    let mut times = Vec::with_capacity(data.query_count());
    let (mut recall_sum, mut first_mates, mut mates_found, mut mates_total) = (0.0, 0, 0, 0);
    let (mut real_recall_sum, mut real_first_mates) = (0.0, 0usize);
    for (q, truth) in exact.iter().enumerate() {
        let query = data.query(q);
        let t = Instant::now();
        let hits = if rerank > k {
            // Quantised storage: take more candidates, re-score them exactly in f32.
            let mut c = index.search(query, rerank)?;
            for n in &mut c {
                n.score = dot(query, data.row(n.id as usize));
            }
            visage_gallery::index::top_k(&mut c, k);
            c
        } else {
            index.search(query, k)?
        };
        times.push(t.elapsed().as_secs_f64() * 1e3);
        let r = recall(&hits, truth);
        let first = hits.first().is_some_and(|h| data.is_mate(q, h.id)) as usize;
        recall_sum += r;
        first_mates += first;
        if real_queries.is_some_and(|n| q < n) {
            real_recall_sum += r;
            real_first_mates += first;
        }
        mates_found += hits.iter().filter(|h| data.is_mate(q, h.id)).count();
        mates_total += data.mates(q).len().min(k);
    }
    let count = times.len() as f64;
    let mean_ms = times.iter().sum::<f64>() / count;
    times.sort_by(f64::total_cmp);
    Ok(EfPoint {
        ef,
        p50_ms: percentile(&times, 0.5),
        p99_ms: percentile(&times, 0.99),
        mean_ms,
        recall_at_10: recall_sum / count,
        identity_recall_at_1: first_mates as f64 / count,
        mate_recall_at_10: mates_found as f64 / mates_total.max(1) as f64,
        real_recall_at_10: real_queries.map(|n| real_recall_sum / n.max(1) as f64),
        real_identity_recall_at_1: real_queries.map(|n| real_first_mates as f64 / n.max(1) as f64),
    })
}

fn point_line(e: &EfPoint) -> String {
    let real = match (e.real_recall_at_10, e.real_identity_recall_at_1) {
        (Some(r), Some(i)) => {
            format!(" (real queries: recall@10 {r:.4}, identity recall@1 {i:.4})")
        }
        _ => String::new(),
    };
    format!(
        "ef={}: p50 {:.3} ms, p99 {:.3} ms, recall@10 {:.4}, identity recall@1 {:.4}{real}",
        e.ef, e.p50_ms, e.p99_ms, e.recall_at_10, e.identity_recall_at_1
    )
}

/// Resident set size of this process (Linux).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    Machine {
        cpu,
        cores: cores(),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Inserts every row with the pool's threads; `progress` is called from this thread (every
/// ~5%) while the workers insert.
fn build(
    index: &UsearchIndex,
    data: &Data,
    pool: &rayon::ThreadPool,
    progress: &impl Fn(&str),
) -> Result<()> {
    let n = data.n();
    let done = AtomicUsize::new(0);
    let insert = || {
        pool.install(|| {
            (0..n.div_ceil(BATCH)).into_par_iter().try_for_each(|b| {
                let rows = b * BATCH..((b + 1) * BATCH).min(n);
                let items: Vec<(u64, &[f32])> =
                    rows.clone().map(|r| (r as u64, data.row(r))).collect();
                index.add_batch(&items)?;
                done.fetch_add(items.len(), Ordering::Relaxed);
                Ok::<_, anyhow::Error>(())
            })
        })
    };
    let start = Instant::now();
    std::thread::scope(|s| {
        let worker = s.spawn(insert);
        let mut next = 5;
        while !worker.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
            let d = done.load(Ordering::Relaxed);
            if d * 100 >= next * n && d < n {
                let rate = d as f64 / start.elapsed().as_secs_f64();
                progress(&format!(
                    "build: {d}/{n} ({}%), {rate:.0} vectors/s",
                    d * 100 / n
                ));
                next = d * 100 / n + 5;
            }
        }
        worker
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

pub fn run(opts: &IndexBenchOptions, progress: impl Fn(&str)) -> Result<IndexBenchReport> {
    let mix = opts.mix_synthetic && opts.real.is_some();
    let real_queries_wanted = if mix {
        opts.queries.div_ceil(2)
    } else {
        opts.queries
    };
    let real = match &opts.real {
        Some(v) => Some(Data::from_labelled(v, real_queries_wanted, opts.seed)?),
        None => None,
    };
    let real_faces = real.as_ref().map(Data::n);
    let real_queries = real.as_ref().map(Data::query_count);
    if mix && real_faces.is_some_and(|r| r > opts.n) {
        bail!(
            "--n {} is smaller than the {} real embeddings to mix in",
            opts.n,
            real_faces.unwrap_or(0)
        );
    }
    let (n, dim) = match &real {
        Some(d) if mix => (opts.n, d.dim),
        Some(d) => (d.n(), d.dim),
        None => (opts.n, opts.dim),
    };
    if n == 0 || dim == 0 || opts.queries == 0 {
        bail!("index benchmark: n, dim and queries must be positive");
    }
    let threads = if opts.threads == 0 {
        cores()
    } else {
        opts.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("cannot start the benchmark threads")?;
    let k = K.min(n);
    let p = opts.params;
    let rerank = if p.storage == visage_gallery::Storage::F32 {
        0
    } else {
        opts.rerank.max(k)
    };

    progress(&format!(
        "generating {n} vectors of dimension {dim} and {} queries",
        opts.queries
    ));
    let t = Instant::now();
    let data = match real {
        Some(d) if mix => {
            let synthetic_queries = opts.queries.saturating_sub(d.query_count());
            let fill = n - d.n();
            progress(&format!(
                "mixing {} real embeddings ({} real queries) with {fill} synthetic ones \
                 ({synthetic_queries} synthetic queries)",
                d.n(),
                d.query_count()
            ));
            let s = pool.install(|| Data::generate(fill, dim, synthetic_queries, opts.seed));
            Data::concat(d, s)
        }
        Some(d) => d,
        None => pool.install(|| Data::generate(n, dim, opts.queries, opts.seed)),
    };
    let queries = data.query_count();
    if queries == 0 {
        bail!("index benchmark: no query (no subject with two or more faces?)");
    }
    let generate_s = t.elapsed().as_secs_f64();
    let (same_identity_cos, other_identity_cos) = similarity_stats(&data, opts.seed);
    progress(&format!(
        "generated {} identities in {generate_s:.1} s; query cosine with own identity \
         {same_identity_cos:.3}, with others {other_identity_cos:.3}",
        data.identities()
    ));

    progress(&format!(
        "building HNSW (M={}, ef_add={}) on {threads} threads",
        p.connectivity, p.expansion_add
    ));
    let rss_before = rss_bytes();
    let t = Instant::now();
    let index = UsearchIndex::new(dim, &p)?;
    // Reserving the final size keeps concurrent batches from growing the index.
    index.reserve(n, threads)?;
    build(&index, &data, &pool, &progress)?;
    let build_s = t.elapsed().as_secs_f64();
    let rss_after = rss_bytes();
    if index.len() != n {
        bail!("index holds {} vectors after inserting {n}", index.len());
    }
    let memory = index.memory_bytes();
    progress(&format!(
        "built in {build_s:.1} s ({:.0} vectors/s)",
        n as f64 / build_s
    ));

    progress(&format!("exact top-{k} of {queries} queries"));
    let t = Instant::now();
    let exact = pool.install(|| exact_top_k(&data, k, threads * 4));
    let ground_truth_s = t.elapsed().as_secs_f64();
    if let Some(dir) = &opts.export {
        let t = Instant::now();
        export(dir, &data, &exact, real_faces, real_queries)?;
        progress(&format!(
            "exported rows, queries and exact top-{k} to {} in {:.1} s",
            dir.display(),
            t.elapsed().as_secs_f64()
        ));
    }
    // Recall over the real queries alone is worth giving only when synthetic ones are mixed in.
    let real_only = if mix { real_queries } else { None };
    let exact_identity_recall_at_1 = exact
        .iter()
        .enumerate()
        .filter(|(q, e)| e.first().is_some_and(|h| data.is_mate(*q, h.id)))
        .count() as f64
        / exact.len() as f64;

    progress(&format!("timing queries at ef={}", p.expansion_search));
    index.set_expansion_search(p.expansion_search);
    let measure_at = |ef: usize| measure(&index, &data, &exact, k, ef, rerank, real_only);
    measure_at(p.expansion_search)?; // warm-up
    let main = measure_at(p.expansion_search)?;
    progress(&point_line(&main));
    let mut ef_sweep = Vec::with_capacity(opts.ef_sweep.len());
    for &ef in &opts.ef_sweep {
        index.set_expansion_search(ef);
        let point = measure_at(ef)?;
        progress(&point_line(&point));
        ef_sweep.push(point);
    }
    index.set_expansion_search(p.expansion_search);
    let min_ef_recall_0_99 = ef_sweep
        .iter()
        .chain([&main])
        .filter(|e| e.recall_at_10 >= 0.99)
        .map(|e| e.ef)
        .min();

    let reference: Vec<Vec<Neighbour>> = (0..RELOAD_CHECKS.min(queries))
        .map(|q| index.search(data.query(q), k))
        .collect::<Result<_>>()?;
    let dir = match &opts.save_dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("cannot create a folder for the saved index")?;
    let path = dir.path().join("bench.usearch");
    let t = Instant::now();
    index.save(&path)?;
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", path.display()))?;
    let save_s = t.elapsed().as_secs_f64();
    let file_bytes = std::fs::metadata(&path)?.len();
    drop(index);
    let t = Instant::now();
    let loaded = UsearchIndex::load(&path, dim, &p)?;
    let load_s = t.elapsed().as_secs_f64();
    let mut reload_identical = loaded.len() == n;
    for (q, want) in reference.iter().enumerate() {
        reload_identical &= loaded.search(data.query(q), k)? == *want;
    }
    if !reload_identical {
        progress("WARNING: the loaded index does not answer as the saved one did");
    }
    progress(&format!(
        "saved {file_bytes} bytes in {save_s:.2} s, loaded in {load_s:.2} s"
    ));

    Ok(IndexBenchReport {
        index: format!(
            "usearch-hnsw-ip-{}",
            serde_json::to_value(p.storage)?.as_str().unwrap_or("?")
        ),
        n,
        dim,
        identities: data.identities(),
        queries,
        seed: opts.seed,
        threads,
        connectivity: p.connectivity,
        expansion_add: p.expansion_add,
        expansion_search: p.expansion_search,
        storage: p.storage,
        rerank,
        same_identity_cos,
        other_identity_cos,
        generate_s,
        build_s,
        insert_per_s: n as f64 / build_s,
        ground_truth_s,
        p50_ms: main.p50_ms,
        p99_ms: main.p99_ms,
        mean_ms: main.mean_ms,
        recall_at_10: main.recall_at_10,
        identity_recall_at_1: main.identity_recall_at_1,
        mate_recall_at_10: main.mate_recall_at_10,
        exact_identity_recall_at_1,
        bytes_per_face_ram: memory as f64 / n as f64,
        rss_bytes_per_face: rss_before
            .zip(rss_after)
            .map(|(b, a)| a.saturating_sub(b) as f64 / n as f64),
        bytes_per_face_disk: file_bytes as f64 / n as f64,
        save_s,
        load_s,
        reload_identical,
        ef_sweep,
        min_ef_recall_0_99,
        real_faces,
        real_queries,
        real_recall_at_10: main.real_recall_at_10,
        real_identity_recall_at_1: main.real_identity_recall_at_1,
        exported_to: opts.export.clone(),
        machine: machine(),
    })
}

/// The header of a version 1.0 `.npy` file holding an array of `descr` (e.g. `<f4`) and
/// `shape`, C order.
pub fn export_npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    let total = (10 + h.len() + 1).div_ceil(64) * 64;
    h.push_str(&" ".repeat(total - 10 - h.len() - 1));
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out
}

fn write_npy(
    path: &Path,
    descr: &str,
    shape: &[usize],
    bytes: impl Iterator<Item = [u8; 4]>,
) -> Result<()> {
    write_npy_raw(path, descr, shape, |w| {
        for b in bytes {
            w.write_all(&b)?;
        }
        Ok(())
    })
}

fn write_npy_raw(
    path: &Path,
    descr: &str,
    shape: &[usize],
    body: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    w.write_all(&export_npy_header(descr, shape))
        .and_then(|_| body(&mut w))
        .and_then(|_| w.flush())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `data` and its exact answers to `dir` (created if needed), as NumPy `.npy` files
/// (little-endian, C order):
/// - `base.npy`: the rows, float32 `[n, dim]`, in insertion order (row `i` has id `i`);
/// - `queries.npy`: float32 `[queries, dim]`;
/// - `gt.npy`: int64 `[queries, k]`, the exact top-k ids of each query, best first;
/// - `meta.json`: sizes, and how many rows and queries (the first ones) are real embeddings.
fn export(
    dir: &Path,
    data: &Data,
    exact: &[Vec<Neighbour>],
    real_faces: Option<usize>,
    real_queries: Option<usize>,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (n, dim, q) = (data.n(), data.dim, data.query_count());
    let k = exact.iter().map(Vec::len).max().unwrap_or(0);
    if exact.iter().any(|e| e.len() != k) {
        bail!("exact answers of different lengths");
    }
    write_npy(
        &dir.join("base.npy"),
        "<f4",
        &[n, dim],
        data.rows.iter().map(|x| x.to_le_bytes()),
    )?;
    write_npy(
        &dir.join("queries.npy"),
        "<f4",
        &[q, dim],
        data.queries.iter().map(|x| x.to_le_bytes()),
    )?;
    write_npy_raw(&dir.join("gt.npy"), "<i8", &[q, k], |w| {
        for e in exact {
            for nb in e {
                w.write_all(&(nb.id as i64).to_le_bytes())?;
            }
        }
        Ok(())
    })?;
    let meta = serde_json::json!({
        "n": n,
        "dim": dim,
        "queries": q,
        "k": k,
        "identities": data.identities(),
        "real_faces": real_faces,
        "real_queries": real_queries,
        "metric": "inner product of unit vectors (cosine)",
        "recall_at_10": "|approximate top-10 ∩ gt row| / 10, averaged over queries",
    });
    std::fs::write(
        dir.join("meta.json"),
        serde_json::to_string_pretty(&meta)? + "\n",
    )
    .with_context(|| format!("cannot write {}", dir.join("meta.json").display()))?;
    Ok(())
}

/// Mean cosine of each query with its identity's enrolled samples and with one random row
/// of another identity.
fn similarity_stats(data: &Data, seed: u64) -> (f64, f64) {
    let (mut same, mut same_n, mut other, mut other_n) = (0.0, 0usize, 0.0, 0usize);
    for q in 0..data.query_count() {
        for r in data.mates(q) {
            same += dot(data.query(q), data.row(r)) as f64;
            same_n += 1;
        }
        let r = Rng::new(seed, Rng::STREAM_STRANGERS, q as u64).below(data.n());
        if !data.is_mate(q, r as u64) {
            other += dot(data.query(q), data.row(r)) as f64;
            other_n += 1;
        }
    }
    (same / same_n.max(1) as f64, other / other_n.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_data_is_deterministic_and_face_like() {
        let a = Data::generate(2000, 64, 50, 7);
        let b = Data::generate(2000, 64, 50, 7);
        assert_eq!(a.rows, b.rows);
        assert_eq!(a.queries, b.queries);
        assert_ne!(a.rows, Data::generate(2000, 64, 50, 8).rows);
        assert_eq!(a.n(), 2000);
        assert!(
            (2000 / 6..2000 / 3).contains(&a.identities()),
            "{}",
            a.identities()
        );
        assert!((a.row(123).iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        let (same, other) = similarity_stats(&a, 7);
        assert!((0.55..0.7).contains(&same), "same-identity cosine {same}");
        assert!(other.abs() < 0.05, "other-identity cosine {other}");
    }

    #[test]
    fn exact_search_matches_a_plain_scan() {
        let data = Data::generate(1000, 24, 5, 3);
        let exact = exact_top_k(&data, 10, 7);
        for (q, got) in exact.iter().enumerate() {
            let mut all: Vec<Neighbour> = (0..data.n())
                .map(|r| Neighbour {
                    id: r as u64,
                    score: dot(data.query(q), data.row(r)),
                })
                .collect();
            visage_gallery::index::top_k(&mut all, 10);
            assert_eq!(got, &all);
        }
    }

    #[test]
    fn small_index_benchmark_has_high_recall_and_a_full_report() {
        let opts = IndexBenchOptions {
            n: 5000,
            dim: 32,
            queries: 200,
            threads: 2,
            ef_sweep: vec![16, 64],
            ..Default::default()
        };
        let lines = std::cell::RefCell::new(Vec::new());
        let r = run(&opts, |l| lines.borrow_mut().push(l.to_string())).unwrap();
        assert!(!lines.borrow().is_empty());
        assert_eq!((r.n, r.dim, r.queries, r.threads), (5000, 32, 200, 2));
        assert!(r.recall_at_10 > 0.9, "recall@10 {}", r.recall_at_10);
        // In 32 dimensions other identities come close to a query's own samples: exact
        // search is the ceiling.
        assert!(
            r.exact_identity_recall_at_1 > 0.75,
            "{}",
            r.exact_identity_recall_at_1
        );
        assert!(r.identity_recall_at_1 >= r.exact_identity_recall_at_1 - 0.02);
        assert!(r.reload_identical);
        assert!(r.insert_per_s > 0.0 && r.build_s > 0.0);
        assert!(r.p50_ms > 0.0 && r.p50_ms <= r.p99_ms);
        // 32 f32 alone are 128 bytes; the graph adds at least a few links per vector.
        assert!(r.bytes_per_face_ram > 128.0, "{}", r.bytes_per_face_ram);
        assert!(r.bytes_per_face_disk > 128.0, "{}", r.bytes_per_face_disk);
        assert_eq!(
            r.ef_sweep.iter().map(|e| e.ef).collect::<Vec<_>>(),
            [16, 64]
        );
        assert!(r.ef_sweep[1].recall_at_10 >= r.ef_sweep[0].recall_at_10 - 0.02);
        let json = serde_json::to_value(&r).unwrap();
        for key in [
            "n",
            "dim",
            "identities",
            "queries",
            "threads",
            "connectivity",
            "expansion_add",
            "expansion_search",
            "build_s",
            "insert_per_s",
            "p50_ms",
            "p99_ms",
            "mean_ms",
            "recall_at_10",
            "bytes_per_face_ram",
            "rss_bytes_per_face",
            "bytes_per_face_disk",
            "save_s",
            "load_s",
            "machine",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert!(json["machine"]["cores"].as_u64().unwrap() >= 1);
    }

    #[test]
    fn npy_header_is_aligned_and_readable() {
        let h = export_npy_header("<f4", &[3, 2]);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        assert_eq!(h.len() % 64, 0);
        let len = u16::from_le_bytes([h[8], h[9]]) as usize;
        assert_eq!(10 + len, h.len());
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }"));
        assert!(text.ends_with('\n'));
        let h1 = export_npy_header("<i8", &[7]);
        assert!(std::str::from_utf8(&h1[10..])
            .unwrap()
            .contains("'shape': (7,)"));
    }

    /// Real labelled vectors mixed into synthetic ones: sizes, query split, labels and the
    /// exported files.
    #[test]
    fn real_embeddings_mixed_into_synthetic_ones_and_exported() {
        let dim = 16;
        // 40 subjects of 3 faces (a tight cluster each) and 30 unlabelled faces.
        let mut real = Vec::new();
        for s in 0..40 {
            let c = centre(99, s, dim);
            for j in 0..3 {
                let mut v = vec![0f32; dim];
                sample(&c, &mut Rng::new(99, 9, (s * 3 + j) as u64), &mut v);
                real.push((Some(s as i64), v));
            }
        }
        for i in 0..30 {
            real.push((None, centre(98, i, dim)));
        }
        let dir = tempfile::tempdir().unwrap();
        let opts = IndexBenchOptions {
            n: 2000,
            dim: 999, // taken from the real vectors
            queries: 60,
            threads: 2,
            real: Some(real),
            mix_synthetic: true,
            export: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let r = run(&opts, |_| {}).unwrap();
        assert_eq!((r.n, r.dim, r.queries), (2000, 16, 60));
        assert_eq!(r.real_faces, Some(150 - 30));
        assert_eq!(r.real_queries, Some(30));
        assert!(r.real_recall_at_10.is_some());
        assert!(r.ef_sweep.is_empty());
        let base = std::fs::read(dir.path().join("base.npy")).unwrap();
        let gt = std::fs::read(dir.path().join("gt.npy")).unwrap();
        let q = std::fs::read(dir.path().join("queries.npy")).unwrap();
        let header = |b: &[u8]| 10 + u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!(base.len() - header(&base), 2000 * 16 * 4);
        assert_eq!(q.len() - header(&q), 60 * 16 * 4);
        assert_eq!(gt.len() - header(&gt), 60 * 10 * 8);
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("meta.json")).unwrap()).unwrap();
        assert_eq!(meta["real_queries"], 30);
        assert_eq!(meta["n"], 2000);
        // The first ground-truth answer of the first (real) query is one of its two enrolled
        // mates (unit vectors: the first row of gt is the highest inner product).
        let first = i64::from_le_bytes(gt[header(&gt)..header(&gt) + 8].try_into().unwrap());
        assert!((0..120).contains(&first), "{first}");
        // Too few rows for the real ones: refused.
        let small = IndexBenchOptions { n: 50, ..opts };
        assert!(run(&small, |_| {}).is_err());
    }

    #[test]
    fn concurrent_batches_fill_a_reserved_index() {
        let data = Data::generate(20_000, 16, 1, 5);
        let index = UsearchIndex::new(16, &HnswParams::default()).unwrap();
        index.reserve(data.n(), 4).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        build(&index, &data, &pool, &|_: &str| {}).unwrap();
        assert_eq!(index.len(), data.n());
    }
}
