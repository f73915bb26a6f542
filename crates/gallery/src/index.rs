//! The vector index behind a trait, so the embedded HNSW (usearch) and a cluster backend
//! (Qdrant, later) are interchangeable. Vectors are L2-normalised f32; similarity is the dot
//! product (cosine). Keys are face ids; metadata lives elsewhere.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

use anyhow::{anyhow, bail, Context, Result};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// One neighbour: key and cosine similarity (higher is closer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    pub id: u64,
    pub score: f32,
}

/// What every vector index backend provides.
pub trait VectorIndex: Send + Sync {
    fn dim(&self) -> usize;
    /// Live (not removed) vectors.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn contains(&self, id: u64) -> bool;
    /// Adds vectors; an id already present is replaced.
    fn add_batch(&self, items: &[(u64, &[f32])]) -> Result<()>;
    /// Removes an id; returns whether it was present.
    fn remove(&self, id: u64) -> Result<bool>;
    /// Approximate top-k by similarity, best first.
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Neighbour>>;
    /// Approximate top-k among ids the predicate accepts.
    fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        accept: &(dyn Fn(u64) -> bool + Sync),
    ) -> Result<Vec<Neighbour>>;
    /// Exact top-k over the given ids (the selective-filter path and re-ranking).
    fn exact_among(&self, query: &[f32], ids: &[u64], k: usize) -> Result<Vec<Neighbour>> {
        let mut buf = vec![0f32; self.dim()];
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            if self.get_into(id, &mut buf) {
                out.push(Neighbour {
                    id,
                    score: visage_core::dot(query, &buf),
                });
            }
        }
        top_k(&mut out, k);
        Ok(out)
    }
    /// Copies the stored vector of `id` into `out`; false when absent.
    fn get_into(&self, id: u64, out: &mut [f32]) -> bool;
    /// Overwrites the storage still held by removed vectors, so their bytes are neither in
    /// memory nor in the next saved file (`remove` alone is a soft delete in HNSW indexes).
    fn purge_removed(&self) -> Result<()>;
    /// Writes the index to `path` (the caller renames it into place).
    fn save(&self, path: &Path) -> Result<()>;
    /// Bytes of RAM the index holds.
    fn memory_bytes(&self) -> usize;
}

/// Sorts by descending score (ties: ascending id, for determinism) and truncates.
pub fn top_k(v: &mut Vec<Neighbour>, k: usize) {
    v.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    v.truncate(k);
}

/// How the index stores vectors. Below f32, scores from the index are approximate and callers
/// re-score candidates exactly from the f32 copy (SQLite in the gallery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    F32,
    F16,
    I8,
}

impl std::str::FromStr for Storage {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Storage> {
        match s {
            "f32" => Ok(Storage::F32),
            "f16" => Ok(Storage::F16),
            "i8" => Ok(Storage::I8),
            _ => bail!("unknown vector storage {s:?} (f32, f16, i8)"),
        }
    }
}

/// HNSW parameters of the embedded index (chosen with `visage bench index`; see
/// docs/BENCHMARKS.md).
#[derive(Debug, Clone, Copy)]
pub struct HnswParams {
    pub connectivity: usize,
    pub expansion_add: usize,
    pub expansion_search: usize,
    pub storage: Storage,
}

impl Default for HnswParams {
    fn default() -> Self {
        // 1M x 128 (docs/BENCHMARKS.md): identity recall@1 0.998 at p50 5.7 ms; 797 B/face.
        HnswParams {
            connectivity: 32,
            expansion_add: 256,
            expansion_search: 512,
            storage: Storage::I8,
        }
    }
}

/// Keys at and below this (downwards) are scratch keys used while purging; face ids never get
/// near them.
const SCRATCH_KEY_BASE: u64 = u64::MAX - 1;
/// Largest key callers may use.
pub const MAX_KEY: u64 = 1 << 62;

/// The embedded backend: usearch HNSW, f32 storage, inner-product metric.
pub struct UsearchIndex {
    index: Index,
    dim: usize,
    /// Adds and searches take the read side; growing the capacity takes the write side
    /// (usearch forbids reserving while other threads use the index).
    grow: RwLock<()>,
    /// Vectors being added right now by `add_batch` calls, so concurrent batches reserve for
    /// each other and none overruns the capacity.
    inflight: AtomicUsize,
}

/// Concurrent callers usearch is prepared for (each needs a reserved thread context; one
/// more fails with "Reserve capacity ahead of insertions!").
fn thread_slots() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(64)
}

fn options(dim: usize, p: &HnswParams) -> IndexOptions {
    IndexOptions {
        dimensions: dim,
        metric: MetricKind::IP,
        quantization: match p.storage {
            Storage::F32 => ScalarKind::F32,
            Storage::F16 => ScalarKind::F16,
            Storage::I8 => ScalarKind::I8,
        },
        connectivity: p.connectivity,
        expansion_add: p.expansion_add,
        expansion_search: p.expansion_search,
        multi: false,
    }
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("vector index: {e}")
}

impl UsearchIndex {
    pub fn new(dim: usize, params: &HnswParams) -> Result<UsearchIndex> {
        if dim == 0 {
            bail!("vector index: dimension must be positive");
        }
        let index = Index::new(&options(dim, params)).map_err(err)?;
        Self::ready(index, dim, 1024)
    }

    /// Loads a saved index into memory and checks its dimension.
    pub fn load(path: &Path, dim: usize, params: &HnswParams) -> Result<UsearchIndex> {
        let p = path.to_str().context("index path is not UTF-8")?;
        let meta = Index::metadata(p).map_err(err)?;
        if meta.dimensions as usize != dim {
            bail!(
                "vector index {}: dimension {} but {} expected",
                path.display(),
                meta.dimensions,
                dim
            );
        }
        let mut opts = options(dim, params);
        opts.quantization = meta.quantization;
        let index = Index::new(&opts).map_err(err)?;
        index.load(p).map_err(err)?;
        index.change_expansion_search(params.expansion_search);
        index.change_expansion_add(params.expansion_add);
        let cap = index.capacity().max(index.size() + 1024);
        Self::ready(index, dim, cap)
    }

    /// Reserves `capacity` and the thread contexts, and wraps the native index.
    fn ready(index: Index, dim: usize, capacity: usize) -> Result<UsearchIndex> {
        index
            .reserve_capacity_and_threads(capacity, thread_slots())
            .map_err(err)?;
        Ok(UsearchIndex {
            index,
            dim,
            grow: RwLock::new(()),
            inflight: AtomicUsize::new(0),
        })
    }

    pub fn set_expansion_search(&self, ef: usize) {
        self.index.change_expansion_search(ef);
    }

    /// Reserves room for `capacity` vectors and for `threads` callers adding or searching at
    /// the same time (0: one per core; usearch's own default is one per hardware thread, and
    /// a caller beyond the reserved count fails with "Reserve capacity ahead of insertions!").
    /// Reserving the final size up front keeps concurrent `add_batch` calls from ever growing
    /// the index. Never shrinks.
    pub fn reserve(&self, capacity: usize, threads: usize) -> Result<()> {
        let threads = match threads {
            0 => thread_slots(),
            t => t,
        };
        let _w = self.grow.write().unwrap_or_else(|e| e.into_inner());
        let capacity = capacity.max(self.index.capacity());
        self.index
            .reserve_capacity_and_threads(capacity, threads)
            .map_err(err)
    }

    /// Grows the capacity so that every vector now being added fits. Call with `extra`
    /// already counted in `inflight`.
    fn ensure_capacity(&self) -> Result<()> {
        let need = || self.index.size() + self.inflight.load(Ordering::SeqCst);
        if need() <= self.index.capacity() {
            return Ok(());
        }
        let _w = self.grow.write().unwrap_or_else(|e| e.into_inner());
        let n = need();
        if n > self.index.capacity() {
            let cap = n.max(self.index.capacity() * 2).max(1024);
            self.index
                .reserve_capacity_and_threads(cap, thread_slots())
                .map_err(err)?;
        }
        Ok(())
    }

    fn check_dim(&self, v: &[f32]) -> Result<()> {
        if v.len() != self.dim {
            bail!(
                "vector of dimension {} given to an index of dimension {}",
                v.len(),
                self.dim
            );
        }
        Ok(())
    }

    fn matches(m: usearch::ffi::Matches) -> Vec<Neighbour> {
        m.keys
            .into_iter()
            .zip(m.distances)
            .map(|(id, d)| Neighbour { id, score: 1.0 - d })
            .collect()
    }
}

impl VectorIndex for UsearchIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.index.size()
    }

    fn contains(&self, id: u64) -> bool {
        self.index.contains(id)
    }

    fn add_batch(&self, items: &[(u64, &[f32])]) -> Result<()> {
        for (_, v) in items {
            self.check_dim(v)?;
        }
        if items.iter().any(|(id, _)| *id > MAX_KEY) {
            bail!("vector index: keys above {MAX_KEY} are reserved");
        }
        self.inflight.fetch_add(items.len(), Ordering::SeqCst);
        let result = self.ensure_capacity().and_then(|()| {
            let _r = self.grow.read().unwrap_or_else(|e| e.into_inner());
            for (id, v) in items {
                if self.index.contains(*id) {
                    self.index.remove(*id).map_err(err)?;
                }
                self.index.add(*id, v).map_err(err)?;
            }
            Ok(())
        });
        self.inflight.fetch_sub(items.len(), Ordering::SeqCst);
        result
    }

    fn remove(&self, id: u64) -> Result<bool> {
        Ok(self.index.remove(id).map_err(err)? > 0)
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Neighbour>> {
        self.check_dim(query)?;
        if k == 0 || self.index.size() == 0 {
            return Ok(Vec::new());
        }
        let _r = self.grow.read().unwrap_or_else(|e| e.into_inner());
        Ok(Self::matches(self.index.search(query, k).map_err(err)?))
    }

    fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        accept: &(dyn Fn(u64) -> bool + Sync),
    ) -> Result<Vec<Neighbour>> {
        self.check_dim(query)?;
        if k == 0 || self.index.size() == 0 {
            return Ok(Vec::new());
        }
        let _r = self.grow.read().unwrap_or_else(|e| e.into_inner());
        let m = self.index.filtered_search(query, k, accept).map_err(err)?;
        Ok(Self::matches(m))
    }

    fn get_into(&self, id: u64, out: &mut [f32]) -> bool {
        if out.len() != self.dim {
            return false;
        }
        matches!(self.index.get(id, out), Ok(n) if n > 0)
    }

    fn purge_removed(&self) -> Result<()> {
        // usearch keeps a removed vector in its slot until an insertion reuses the slot, and
        // an insertion always takes a free slot first and copies the new vector over it.
        // So: fill every free slot with a zero vector under a scratch key, then remove those
        // keys again. `compact()` does not do this (it keeps removed slots; tested below).
        let _w = self.grow.write().unwrap_or_else(|e| e.into_inner());
        let free = self.index.stats().nodes.saturating_sub(self.index.size());
        if free == 0 {
            return Ok(());
        }
        let zeros = vec![0f32; self.dim];
        let scratch: Vec<u64> = (0..free as u64).map(|i| SCRATCH_KEY_BASE - i).collect();
        for &key in &scratch {
            self.index.add(key, &zeros).map_err(err)?;
        }
        for &key in &scratch {
            self.index.remove(key).map_err(err)?;
        }
        Ok(())
    }

    fn save(&self, path: &Path) -> Result<()> {
        let p = path.to_str().context("index path is not UTF-8")?;
        self.index.save(p).map_err(err)
    }

    fn memory_bytes(&self) -> usize {
        self.index.memory_usage()
    }
}

/// Exact brute-force index: the reference for recall measurements and a backend for tiny
/// galleries and tests.
pub struct FlatIndex {
    dim: usize,
    rows: RwLock<FlatRows>,
}

#[derive(Default)]
struct FlatRows {
    ids: Vec<u64>,
    data: Vec<f32>,
    pos: std::collections::HashMap<u64, usize>,
}

impl FlatIndex {
    pub fn new(dim: usize) -> FlatIndex {
        FlatIndex {
            dim,
            rows: RwLock::new(FlatRows::default()),
        }
    }

    fn scan(&self, query: &[f32], k: usize, accept: &dyn Fn(u64) -> bool) -> Vec<Neighbour> {
        let rows = self.rows.read().unwrap_or_else(|e| e.into_inner());
        let mut heap = TopK::new(k);
        for (i, id) in rows.ids.iter().enumerate() {
            if accept(*id) {
                let s = visage_core::dot(query, &rows.data[i * self.dim..(i + 1) * self.dim]);
                heap.push(Neighbour { id: *id, score: s });
            }
        }
        heap.into_sorted()
    }
}

/// Bounded top-k collector (min-heap on score).
pub struct TopK {
    k: usize,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Scored>>,
}

#[derive(PartialEq)]
struct Scored(Neighbour);
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scored {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0
            .score
            .total_cmp(&o.0.score)
            .then(o.0.id.cmp(&self.0.id))
    }
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: std::collections::BinaryHeap::with_capacity(k + 1),
        }
    }
    pub fn push(&mut self, n: Neighbour) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(std::cmp::Reverse(Scored(n)));
        } else if let Some(min) = self.heap.peek() {
            if Scored(n) > min.0 {
                self.heap.pop();
                self.heap.push(std::cmp::Reverse(Scored(n)));
            }
        }
    }
    pub fn into_sorted(self) -> Vec<Neighbour> {
        let mut v: Vec<Neighbour> = self.heap.into_iter().map(|r| r.0 .0).collect();
        top_k(&mut v, usize::MAX);
        v
    }
}

impl VectorIndex for FlatIndex {
    fn dim(&self) -> usize {
        self.dim
    }
    fn len(&self) -> usize {
        self.rows
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .ids
            .len()
    }
    fn contains(&self, id: u64) -> bool {
        self.rows
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .pos
            .contains_key(&id)
    }
    fn add_batch(&self, items: &[(u64, &[f32])]) -> Result<()> {
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        for (id, v) in items {
            if v.len() != self.dim {
                bail!(
                    "vector of dimension {} given to an index of dimension {}",
                    v.len(),
                    self.dim
                );
            }
            if let Some(&p) = rows.pos.get(id) {
                rows.data[p * self.dim..(p + 1) * self.dim].copy_from_slice(v);
            } else {
                let p = rows.ids.len();
                rows.ids.push(*id);
                rows.data.extend_from_slice(v);
                rows.pos.insert(*id, p);
            }
        }
        Ok(())
    }
    fn remove(&self, id: u64) -> Result<bool> {
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        let Some(p) = rows.pos.remove(&id) else {
            return Ok(false);
        };
        let last = rows.ids.len() - 1;
        let d = self.dim;
        if p != last {
            let moved = rows.ids[last];
            rows.ids[p] = moved;
            rows.data.copy_within(last * d..(last + 1) * d, p * d);
            rows.pos.insert(moved, p);
        }
        rows.ids.pop();
        rows.data.truncate(last * d);
        Ok(true)
    }
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Neighbour>> {
        Ok(self.scan(query, k, &|_| true))
    }
    fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        accept: &(dyn Fn(u64) -> bool + Sync),
    ) -> Result<Vec<Neighbour>> {
        Ok(self.scan(query, k, accept))
    }
    fn get_into(&self, id: u64, out: &mut [f32]) -> bool {
        let rows = self.rows.read().unwrap_or_else(|e| e.into_inner());
        match rows.pos.get(&id) {
            Some(&p) if out.len() == self.dim => {
                out.copy_from_slice(&rows.data[p * self.dim..(p + 1) * self.dim]);
                true
            }
            _ => false,
        }
    }
    fn purge_removed(&self) -> Result<()> {
        Ok(()) // removal already drops the data
    }
    fn save(&self, _path: &Path) -> Result<()> {
        bail!("the flat index is not persisted")
    }
    fn memory_bytes(&self) -> usize {
        let rows = self.rows.read().unwrap_or_else(|e| e.into_inner());
        rows.data.capacity() * 4 + rows.ids.capacity() * 8 + rows.pos.capacity() * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        visage_core::l2_normalize(&mut v);
        v
    }

    #[test]
    fn usearch_matches_flat_on_small_data_and_honours_filters() {
        let dim = 32;
        let f32_params = HnswParams {
            storage: Storage::F32,
            ..Default::default()
        };
        let hnsw = UsearchIndex::new(dim, &f32_params).unwrap();
        let flat = FlatIndex::new(dim);
        let vs: Vec<Vec<f32>> = (0..3000).map(|i| unit(i, dim)).collect();
        let items: Vec<(u64, &[f32])> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64 + 1, &v[..]))
            .collect();
        hnsw.add_batch(&items).unwrap();
        flat.add_batch(&items).unwrap();
        assert_eq!(hnsw.len(), 3000);
        let q = unit(99_999, dim);
        let a = hnsw.search(&q, 5).unwrap();
        let b = flat.search(&q, 5).unwrap();
        assert_eq!(
            a.iter().map(|n| n.id).collect::<Vec<_>>(),
            b.iter().map(|n| n.id).collect::<Vec<_>>()
        );
        assert!((a[0].score - b[0].score).abs() < 1e-5);
        let even = |id: u64| id.is_multiple_of(2);
        for n in hnsw.search_filtered(&q, 10, &even).unwrap() {
            assert!(n.id % 2 == 0);
        }
        let ex = hnsw.exact_among(&q, &[2, 4, 6, 8], 2).unwrap();
        assert_eq!(ex.len(), 2);
        assert!(ex[0].score >= ex[1].score);
    }

    #[test]
    fn removed_vectors_leave_the_saved_file_after_purge() {
        for storage in [Storage::F32, Storage::I8] {
            let dim = 16;
            let params = HnswParams {
                storage,
                ..Default::default()
            };
            let idx = UsearchIndex::new(dim, &params).unwrap();
            let vs: Vec<Vec<f32>> = (0..200).map(|i| unit(i + 7, dim)).collect();
            let items: Vec<(u64, &[f32])> = vs
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u64 + 1, &v[..]))
                .collect();
            idx.add_batch(&items).unwrap();
            // The bytes as stored: f32 as given, or usearch's int8 quantisation of them.
            let victim: Vec<u8> = match storage {
                Storage::I8 => {
                    let mut q = vec![0i8; dim];
                    idx.index.get(42, &mut q).unwrap();
                    q.iter().map(|&x| x as u8).collect()
                }
                _ => vs[41].iter().flat_map(|f| f.to_le_bytes()).collect(),
            };
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("a.usearch");
            idx.save(&p).unwrap();
            let has = |p: &Path| {
                std::fs::read(p)
                    .unwrap()
                    .windows(victim.len())
                    .any(|w| w == victim.as_slice())
            };
            assert!(
                has(&p),
                "{storage:?}: the vector is in the file before deletion"
            );
            assert!(idx.remove(42).unwrap());
            assert!(!idx.contains(42));
            idx.save(&p).unwrap();
            assert!(
                has(&p),
                "usearch changed: a soft-deleted vector is no longer saved"
            );
            idx.index.compact().unwrap();
            idx.save(&p).unwrap();
            assert!(
                has(&p),
                "usearch changed: compact() now drops removed vectors"
            );
            idx.purge_removed().unwrap();
            idx.save(&p).unwrap();
            assert!(
                !has(&p),
                "{storage:?}: the deleted vector's bytes are still saved"
            );
            assert_eq!(idx.len(), 199);
            // The freed slot is reused by later insertions.
            idx.add_batch(&[(500, &vs[0][..])]).unwrap();
            assert_eq!(idx.len(), 200);
            let back = UsearchIndex::load(&p, dim, &params).unwrap();
            assert_eq!(back.len(), 199);
            assert!(!back.contains(42) && back.contains(43));
            let hits = back.search(&vs[41], 3).unwrap();
            assert!(hits.iter().all(|n| n.id != 42));
        }
    }

    #[test]
    fn concurrent_batches_without_reserve_all_land() {
        let dim = 8;
        let idx = UsearchIndex::new(dim, &HnswParams::default()).unwrap();
        let vs: Vec<Vec<f32>> = (0..8000).map(|i| unit(i + 3, dim)).collect();
        std::thread::scope(|s| {
            for t in 0..4 {
                let (idx, vs) = (&idx, &vs);
                s.spawn(move || {
                    for c in (t * 2000..(t + 1) * 2000).collect::<Vec<_>>().chunks(500) {
                        let items: Vec<(u64, &[f32])> =
                            c.iter().map(|&i| (i as u64 + 1, &vs[i][..])).collect();
                        idx.add_batch(&items).unwrap();
                        idx.search(&vs[c[0]], 3).unwrap();
                    }
                });
            }
        });
        assert_eq!(idx.len(), 8000);
    }

    #[test]
    fn wrong_dimension_is_an_error_not_a_crash() {
        let idx = UsearchIndex::new(8, &HnswParams::default()).unwrap();
        assert!(idx.add_batch(&[(1, &[0.0; 4][..])]).is_err());
        assert!(idx.search(&[0.0; 3], 1).is_err());
    }
}
