//! `ClusterStore`: the `FaceStore` over PostgreSQL (metadata, vectors as the source of truth,
//! deletion intents), an S3-compatible bucket (blobs) and a vector index: Qdrant when
//! configured, else an exact scan over vectors cached from PostgreSQL.
//!
//! Write order (docs/ARCHITECTURE.md, "Cluster mode"): blobs, then vector points under ids
//! reserved from `face_id_seq`, then one PostgreSQL transaction with the image and its faces.
//! The commit makes the face visible; a crash before it leaves only unreferenced blobs or
//! points, which searches never return (candidates are joined with live rows) and `check
//! --repair` removes. Deletion commits the row removals together with `pending_delete`
//! intents, then removes points and blobs and clears the intents.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use postgres::types::ToSql;
use postgres::Row;
use serde::Serialize;
use visage_gallery::blobs::sha256_hex;
use visage_gallery::filter::jurisdiction_within;
use visage_gallery::gallery::now;
use visage_gallery::{
    AddOutcome, Collection, DeleteReport, DeleteTarget, FaceRecord, FaceStore, Filter, Hit,
    ImageRecord, Neighbour, NewImage, NewSource, NewSuppression, SearchQuery, SearchTrace, Source,
    Suppression, TopK,
};

use crate::blobs::S3Blobs;
use crate::config::ClusterConfig;
use crate::pg::Pool;
use crate::qdrant::{QdrantVectors, VectorPoint};

pub(crate) enum Vectors {
    Qdrant(QdrantVectors),
    Exact(RwLock<HashMap<i64, ExactCollection>>),
}

/// One collection's vectors and filter attributes, mirrored from PostgreSQL.
#[derive(Default)]
pub(crate) struct ExactCollection {
    /// The collection's `subjects_gen` the attributes' subjects were read at.
    subjects_gen: i64,
    ids: Vec<i64>,
    attrs: Vec<Attr>,
    vectors: Vec<f32>,
    pos: HashMap<i64, usize>,
}

struct Attr {
    source_id: i64,
    subject_id: Option<i64>,
    captured_at: Option<i64>,
    jurisdiction: Option<String>,
}

fn accepts(f: &Filter, a: &Attr) -> bool {
    let within = |list: &[String]| {
        a.jurisdiction
            .as_deref()
            .is_some_and(|j| list.iter().any(|c| jurisdiction_within(j, c)))
    };
    (f.sources.is_empty() || f.sources.contains(&a.source_id))
        && (f.subjects.is_empty() || a.subject_id.is_some_and(|s| f.subjects.contains(&s)))
        && (f.jurisdictions.is_empty() || within(&f.jurisdictions))
        && (f.exclude_jurisdictions.is_empty() || !within(&f.exclude_jurisdictions))
        && ((f.captured_from.is_none() && f.captured_to.is_none())
            || a.captured_at.is_some_and(|t| {
                f.captured_from.is_none_or(|lo| t >= lo) && f.captured_to.is_none_or(|hi| t <= hi)
            }))
}

pub struct ClusterStore {
    pub(crate) pg: Pool,
    blobs: S3Blobs,
    pub(crate) vectors: Vectors,
    /// Qdrant collections known to exist.
    ensured: Mutex<HashSet<i64>>,
}

/// A staged upload that no item names yet is left alone this long (seconds): the API
/// process that staged it may still be queueing its job.
pub const STAGED_GRACE_S: i64 = 3600;

/// What `ClusterStore::check` found (and repaired).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterCheck {
    pub faces_checked: u64,
    pub blobs_checked: u64,
    pub points_checked: u64,
    pub inconsistencies: Vec<Finding>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: &'static str,
    pub detail: String,
    pub repaired: bool,
}

impl ClusterCheck {
    pub fn unrepaired(&self) -> usize {
        self.inconsistencies.iter().filter(|f| !f.repaired).count()
    }
}

/// A vector as stored in PostgreSQL (`bytea`, little-endian f32).
pub fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn bytes_vector(b: &[u8]) -> Result<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        bail!("stored vector has {} bytes, not a multiple of 4", b.len());
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

const FACE_RECORD_SQL: &str = "SELECT f.id, c.name, c.id, f.pack, f.bbox, f.landmarks, \
    f.det_score, f.quality, f.crop_sha, f.thumb_sha, f.created_at, sb.id, sb.label, \
    i.id, i.sha256, i.uri, i.page_uri, i.captured_at, i.gps_lat, i.gps_lon, i.jurisdiction, \
    i.jurisdiction_method, i.width, i.height, i.ingested_at, i.external_id, i.licence, \
    i.legal_basis, s.id, s.collection_id, s.name, s.kind, s.uri, s.legal_basis, s.licence, \
    s.jurisdiction, s.created_at \
    FROM face f JOIN collection c ON c.id = f.collection_id JOIN image i ON i.id = f.image_id \
    JOIN source s ON s.id = f.source_id LEFT JOIN subject sb ON sb.id = f.subject_id \
    WHERE f.id = ANY($1)";

fn face_record(r: &Row) -> Result<FaceRecord> {
    let lat: Option<f64> = r.get(18);
    let lon: Option<f64> = r.get(19);
    let subject = match (r.get::<_, Option<i64>>(11), r.get::<_, Option<String>>(12)) {
        (Some(id), Some(label)) => Some(visage_gallery::gallery::SubjectRef { id, label }),
        _ => None,
    };
    Ok(FaceRecord {
        id: r.get(0),
        collection: r.get(1),
        collection_id: r.get(2),
        pack: r.get(3),
        bbox: serde_json::from_value(r.get(4)).context("stored bbox")?,
        landmarks: serde_json::from_value(r.get(5)).context("stored landmarks")?,
        det_score: r.get(6),
        quality: r.get(7),
        crop_sha: r.get(8),
        thumb_sha: r.get(9),
        created_at: r.get(10),
        subject,
        image: ImageRecord {
            id: r.get(13),
            sha256: r.get(14),
            uri: r.get(15),
            page_uri: r.get(16),
            captured_at: r.get(17),
            gps: lat.zip(lon),
            jurisdiction: r.get(20),
            jurisdiction_method: r.get(21),
            width: r.get::<_, i32>(22) as u32,
            height: r.get::<_, i32>(23) as u32,
            ingested_at: r.get(24),
            external_id: r.get(25),
            licence: r.get(26),
            legal_basis: r.get(27),
        },
        source: Source {
            id: r.get(28),
            collection_id: r.get(29),
            name: r.get(30),
            kind: r.get(31),
            uri: r.get(32),
            legal_basis: r.get(33),
            licence: r.get(34),
            jurisdiction: r.get(35),
            created_at: r.get(36),
        },
    })
}

fn collection_row(r: &Row) -> Collection {
    Collection {
        id: r.get(0),
        name: r.get(1),
        pack: r.get(2),
        dim: r.get::<_, i32>(3) as usize,
        created_at: r.get(4),
    }
}

fn source_row(r: &Row) -> Source {
    Source {
        id: r.get(0),
        collection_id: r.get(1),
        name: r.get(2),
        kind: r.get(3),
        uri: r.get(4),
        legal_basis: r.get(5),
        licence: r.get(6),
        jurisdiction: r.get(7),
        created_at: r.get(8),
    }
}

const SOURCE_COLUMNS: &str =
    "id, collection_id, name, kind, uri, legal_basis, licence, jurisdiction, created_at";

impl ClusterStore {
    /// Connects to the three services and brings the PostgreSQL schema up to date.
    pub fn open(cfg: &ClusterConfig) -> Result<ClusterStore> {
        let pg = Pool::new(&cfg.postgres_url)?;
        pg.migrate()?;
        let blobs = S3Blobs::connect(&cfg.s3)?;
        let vectors = match &cfg.qdrant {
            Some(q) => Vectors::Qdrant(QdrantVectors::connect(q)?),
            None => Vectors::Exact(RwLock::new(HashMap::new())),
        };
        Ok(ClusterStore {
            pg,
            blobs,
            vectors,
            ensured: Mutex::new(HashSet::new()),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pg
    }

    pub fn blobs(&self) -> &S3Blobs {
        &self.blobs
    }

    fn collection_by_id(&self, id: i64) -> Result<Collection> {
        let mut c = self.pg.get()?;
        let r = c
            .query_opt(
                "SELECT id, name, pack, dim, created_at FROM collection WHERE id = $1",
                &[&id],
            )?
            .ok_or_else(|| anyhow!("no collection with id {id}"))?;
        Ok(collection_row(&r))
    }

    fn ensure_points_collection(
        &self,
        q: &QdrantVectors,
        collection_id: i64,
        dim: usize,
    ) -> Result<()> {
        let mut ensured = self.ensured.lock().unwrap_or_else(|e| e.into_inner());
        if !ensured.contains(&collection_id) {
            q.ensure_collection(collection_id, dim)?;
            ensured.insert(collection_id);
        }
        Ok(())
    }

    pub fn face_records(&self, ids: &[i64]) -> Result<HashMap<i64, FaceRecord>> {
        let mut out = HashMap::with_capacity(ids.len());
        let mut c = self.pg.get()?;
        for chunk in ids.chunks(1000) {
            for r in c.query(FACE_RECORD_SQL, &[&chunk])? {
                let rec = face_record(&r)?;
                out.insert(rec.id, rec);
            }
        }
        Ok(out)
    }

    /// Brings the exact-scan mirror of a collection up to date with PostgreSQL: ids gone from
    /// the face table are dropped, new ones loaded.
    fn refresh_exact(
        &self,
        cache: &RwLock<HashMap<i64, ExactCollection>>,
        collection_id: i64,
        dim: usize,
    ) -> Result<()> {
        let mut c = self.pg.get()?;
        let live: Vec<i64> = c
            .query(
                "SELECT id FROM face WHERE collection_id = $1",
                &[&collection_id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let live_set: HashSet<i64> = live.iter().copied().collect();
        let gen: i64 = c
            .query_one(
                "SELECT subjects_gen FROM collection WHERE id = $1",
                &[&collection_id],
            )?
            .get(0);
        let mut map = cache.write().unwrap_or_else(|e| e.into_inner());
        let e = map.entry(collection_id).or_default();
        if e.subjects_gen != gen {
            // A subject changed on stored faces (catalogue endpoints): re-read them all.
            for r in c.query(
                "SELECT id, subject_id FROM face WHERE collection_id = $1",
                &[&collection_id],
            )? {
                if let Some(&p) = e.pos.get(&r.get::<_, i64>(0)) {
                    e.attrs[p].subject_id = r.get(1);
                }
            }
            e.subjects_gen = gen;
        }
        // Drop what is gone (swap-remove keeps it O(removed)).
        let gone: Vec<i64> = e
            .ids
            .iter()
            .copied()
            .filter(|id| !live_set.contains(id))
            .collect();
        for id in gone {
            let Some(p) = e.pos.remove(&id) else { continue };
            let last = e.ids.len() - 1;
            e.ids.swap(p, last);
            e.attrs.swap(p, last);
            for k in 0..dim {
                e.vectors.swap(p * dim + k, last * dim + k);
            }
            e.ids.pop();
            e.attrs.pop();
            e.vectors.truncate(last * dim);
            if p < last {
                e.pos.insert(e.ids[p], p);
            }
        }
        let new: Vec<i64> = live
            .into_iter()
            .filter(|id| !e.pos.contains_key(id))
            .collect();
        for chunk in new.chunks(5000) {
            for r in c.query(
                "SELECT f.id, f.vector, f.source_id, f.subject_id, i.captured_at, i.jurisdiction \
                 FROM face f JOIN image i ON i.id = f.image_id WHERE f.id = ANY($1)",
                &[&chunk],
            )? {
                let v = bytes_vector(r.get(1))?;
                if v.len() != dim {
                    bail!(
                        "face {} has a {}-d vector in a {dim}-d collection",
                        r.get::<_, i64>(0),
                        v.len()
                    );
                }
                let id: i64 = r.get(0);
                e.pos.insert(id, e.ids.len());
                e.ids.push(id);
                e.vectors.extend_from_slice(&v);
                e.attrs.push(Attr {
                    source_id: r.get(2),
                    subject_id: r.get(3),
                    captured_at: r.get(4),
                    jurisdiction: r.get(5),
                });
            }
        }
        Ok(())
    }

    fn exact_search(
        &self,
        cache: &RwLock<HashMap<i64, ExactCollection>>,
        q: &SearchQuery,
        dim: usize,
        k: usize,
    ) -> Result<(Vec<Neighbour>, usize)> {
        self.refresh_exact(cache, q.collection_id, dim)?;
        let map = cache.read().unwrap_or_else(|e| e.into_inner());
        let Some(e) = map.get(&q.collection_id) else {
            return Ok((vec![], 0));
        };
        let mut top = TopK::new(k);
        let mut matched = 0;
        for (i, id) in e.ids.iter().enumerate() {
            if !accepts(&q.filter, &e.attrs[i]) {
                continue;
            }
            matched += 1;
            let s = visage_core::dot(q.vector, &e.vectors[i * dim..(i + 1) * dim]);
            top.push(Neighbour {
                id: *id as u64,
                score: s,
            });
        }
        Ok((top.into_sorted(), matched))
    }

    /// Faces of one collection committed in PostgreSQL (from the counts in `tally`).
    fn face_count_of(&self, collection_id: i64) -> Result<u64> {
        let n: i64 = self
            .pg
            .get()?
            .query_one(
                "SELECT COALESCE(SUM(faces), 0)::BIGINT FROM tally WHERE collection_id = $1",
                &[&collection_id],
            )?
            .get(0);
        Ok(n as u64)
    }

    /// Deletes `target` and, in the same transaction, lets `record` write what must commit
    /// with the deletion (its audit record, its receipt): an erasure is never done without
    /// its record, nor recorded without being done. `record` sees the report as it will be
    /// returned; `blobs_removed` counts the blobs no row uses any more, whose removal is
    /// scheduled in that transaction (`pending_delete`) and done after it commits. If that
    /// removal fails, the deletion stands (logged): the next deletion, an idle worker or
    /// `visage cluster check --repair` finishes it.
    pub fn delete_recorded<R>(
        &self,
        target: &DeleteTarget,
        record: impl FnOnce(&mut postgres::Transaction<'_>, &DeleteReport) -> Result<R>,
    ) -> Result<(DeleteReport, R)> {
        let mut report = DeleteReport::default();
        let recorded = {
            let mut c = self.pg.get()?;
            let mut tx = c.transaction()?;
            let face_ids: Vec<i64>;
            let mut image_ids: Vec<i64> = vec![];
            match target {
                DeleteTarget::Faces(ids) => {
                    face_ids = tx
                        .query("SELECT id FROM face WHERE id = ANY($1) ORDER BY id", &[ids])?
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                }
                DeleteTarget::Image(id) => {
                    face_ids = ids_of(&mut tx, "SELECT id FROM face WHERE image_id = $1", id)?;
                    image_ids = ids_of(&mut tx, "SELECT id FROM image WHERE id = $1", id)?;
                }
                DeleteTarget::Source(id) => {
                    face_ids = ids_of(&mut tx, "SELECT id FROM face WHERE source_id = $1", id)?;
                    image_ids = ids_of(&mut tx, "SELECT id FROM image WHERE source_id = $1", id)?;
                }
                DeleteTarget::Subject(id) => {
                    face_ids = ids_of(&mut tx, "SELECT id FROM face WHERE subject_id = $1", id)?;
                }
                DeleteTarget::Jurisdiction(code) => {
                    let c = visage_gallery::normalize_jurisdiction(code)?;
                    let like = format!("{c}-%");
                    face_ids = tx
                        .query(
                            "SELECT f.id FROM face f JOIN image i ON i.id = f.image_id \
                             WHERE i.jurisdiction = $1 OR i.jurisdiction LIKE $2",
                            &[&c, &like],
                        )?
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                    image_ids = tx
                        .query(
                            "SELECT id FROM image WHERE jurisdiction = $1 OR jurisdiction LIKE $2",
                            &[&c, &like],
                        )?
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                }
            }
            let t = now();
            let mut candidate_blobs: Vec<String> = Vec::new();
            let point_kind = matches!(self.vectors, Vectors::Qdrant(_));
            for r in tx.query(
                "DELETE FROM face WHERE id = ANY($1) RETURNING id, collection_id, crop_sha, thumb_sha",
                &[&face_ids],
            )? {
                candidate_blobs.push(r.get(2));
                candidate_blobs.push(r.get(3));
                if point_kind {
                    let (id, coll): (i64, i64) = (r.get(0), r.get(1));
                    tx.execute(
                        "INSERT INTO pending_delete (kind, collection_id, face_id, created_at) \
                         VALUES ('point', $1, $2, $3)",
                        &[&coll, &id, &t],
                    )?;
                }
            }
            for r in tx.query(
                "DELETE FROM image WHERE id = ANY($1) RETURNING original_sha",
                &[&image_ids],
            )? {
                if let Some(s) = r.get::<_, Option<String>>(0) {
                    candidate_blobs.push(s);
                }
            }
            match target {
                DeleteTarget::Source(id) => {
                    report.sources =
                        tx.execute("DELETE FROM source WHERE id = $1", &[id])? as usize;
                }
                DeleteTarget::Subject(id) => {
                    report.subjects =
                        tx.execute("DELETE FROM subject WHERE id = $1", &[id])? as usize;
                }
                _ => {}
            }
            candidate_blobs.sort();
            candidate_blobs.dedup();
            for sha in candidate_blobs {
                if !blob_referenced(&mut tx, &sha)? {
                    tx.execute(
                        "INSERT INTO pending_delete (kind, sha, created_at) VALUES ('blob', $1, $2)",
                        &[&sha, &t],
                    )?;
                    report.blobs_removed += 1;
                }
            }
            report.faces = face_ids.len();
            report.images = image_ids.len();
            report.face_ids = face_ids;
            let recorded = record(&mut tx, &report)?;
            tx.commit().context("committing the deletion")?;
            recorded
        };
        // The rows are gone (never returned again); now the points and blobs.
        if let Err(e) = self.finish_pending_deletes() {
            tracing::warn!(
                error = ?e,
                "deleted rows committed; removing their points and blobs failed and is retried \
                 by the next deletion, an idle worker or `visage cluster check --repair`"
            );
        }
        Ok((report, recorded))
    }

    /// Removes the points and blobs that committed deletions still owe. Returns the number of
    /// blobs removed.
    pub fn finish_pending_deletes(&self) -> Result<usize> {
        let mut removed = 0;
        loop {
            let mut c = self.pg.get()?;
            let mut tx = c.transaction()?;
            let rows = tx.query(
                "SELECT id, kind, collection_id, face_id, sha FROM pending_delete ORDER BY id \
                 LIMIT 500 FOR UPDATE SKIP LOCKED",
                &[],
            )?;
            if rows.is_empty() {
                return Ok(removed);
            }
            let mut points: HashMap<i64, Vec<i64>> = HashMap::new();
            for r in &rows {
                let kind: String = r.get(1);
                match kind.as_str() {
                    "point" => points
                        .entry(r.get::<_, Option<i64>>(2).unwrap_or_default())
                        .or_default()
                        .push(r.get::<_, Option<i64>>(3).unwrap_or_default()),
                    _ => {
                        let sha: Option<String> = r.get(4);
                        if let Some(sha) = sha {
                            // A face written since may use the same bytes again.
                            if !blob_referenced(&mut tx, &sha)? {
                                self.blobs.delete(&sha)?;
                                removed += 1;
                            }
                        }
                    }
                }
            }
            if let Vectors::Qdrant(q) = &self.vectors {
                for (coll, ids) in points {
                    q.delete(coll, &ids)?;
                }
            }
            let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            tx.execute("DELETE FROM pending_delete WHERE id = ANY($1)", &[&ids])?;
            tx.commit()?;
        }
    }

    /// Staged uploads (`uploads/` in the bucket) no open item needs: those of ended items
    /// (a worker died between finishing and removing, or the job was cancelled and no worker
    /// has swept since), and objects of no item older than `STAGED_GRACE_S` (an API process
    /// stopped between staging and queueing). With `repair`, removed.
    fn check_staged(&self, repair: bool, report: &mut ClusterCheck) -> Result<()> {
        let t = visage_gallery::gallery::now();
        for (key, modified) in self.blobs.list_staged()? {
            // Whether an open item needs it, and the ended items that name it.
            let (open, ended): (bool, Vec<i64>) = self
                .pg
                .get()?
                .query_one(
                    "SELECT COALESCE(bool_or(status IN ('queued', 'claimed')), false), \
                     COALESCE(array_agg(id) FILTER (WHERE status IN ('done', 'failed')), '{}') \
                     FROM ingest_item WHERE staged_key = $1",
                    &[&key],
                )
                .map(|r| (r.get(0), r.get(1)))?;
            let known = !ended.is_empty();
            if open || (!known && t - modified < STAGED_GRACE_S) {
                continue;
            }
            let mut f = Finding {
                kind: "stale_upload",
                detail: format!(
                    "staged upload {key} is needed by no queued item ({})",
                    if known {
                        "its item has ended"
                    } else {
                        "no item names it"
                    }
                ),
                repaired: false,
            };
            if repair {
                self.blobs.delete_staged(&key)?;
                crate::queue::clear_staged(&self.pg, &ended)?;
                f.repaired = true;
            }
            report.inconsistencies.push(f);
        }
        Ok(())
    }

    /// Compares the counts in `tally` with the rows they count, per source and jurisdiction,
    /// both read in one snapshot (the triggers move them in the writing transaction, so a
    /// concurrent ingest cannot make them differ). With `repair`, rebuilds the counts from
    /// the rows while writes wait.
    fn check_tally(&self, repair: bool, report: &mut ClusterCheck) -> Result<()> {
        type Counts = HashMap<(i64, String), (i64, i64)>;
        let mut c = self.pg.get()?;
        let mut tx = c
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let read = |tx: &mut postgres::Transaction<'_>, sql: &str| -> Result<Counts> {
            Ok(tx
                .query(sql, &[])?
                .iter()
                .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
                .filter(|(_, n)| *n != (0, 0))
                .collect())
        };
        let kept = read(
            &mut tx,
            "SELECT source_id, jurisdiction, SUM(images)::BIGINT, SUM(faces)::BIGINT \
             FROM tally GROUP BY 1, 2",
        )?;
        let rows = read(
            &mut tx,
            "SELECT COALESCE(i.source_id, f.source_id), COALESCE(i.jurisdiction, f.jurisdiction), \
             COALESCE(i.n, 0), COALESCE(f.n, 0) FROM \
             (SELECT source_id, COALESCE(jurisdiction, '') AS jurisdiction, COUNT(*) AS n \
              FROM image GROUP BY 1, 2) i FULL JOIN \
             (SELECT f.source_id, COALESCE(i.jurisdiction, '') AS jurisdiction, COUNT(*) AS n \
              FROM face f JOIN image i ON i.id = f.image_id GROUP BY 1, 2) f \
             ON f.source_id = i.source_id AND f.jurisdiction = i.jurisdiction",
        )?;
        tx.commit()?;
        let mut keys: Vec<&(i64, String)> = kept.keys().chain(rows.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut found = Vec::new();
        for key in keys {
            let (k, r) = (
                kept.get(key).copied().unwrap_or_default(),
                rows.get(key).copied().unwrap_or_default(),
            );
            if k != r {
                let j = if key.1.is_empty() { "none" } else { &key.1 };
                found.push(format!(
                    "source {} (jurisdiction {j}): counted {} images and {} faces, the rows \
                     hold {} and {}",
                    key.0, k.0, k.1, r.0, r.1
                ));
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        if repair {
            let mut tx = c.transaction()?;
            tx.batch_execute("LOCK TABLE image, face IN SHARE MODE; SELECT tally_rebuild()")?;
            tx.commit()?;
        }
        report
            .inconsistencies
            .extend(found.into_iter().map(|detail| Finding {
                kind: "tally_mismatch",
                detail,
                repaired: repair,
            }));
        Ok(())
    }

    /// Compares rows, blobs and vector points; with `repair`, removes orphans (blobs and
    /// points no row uses), re-creates missing points from the stored vectors, finishes owed
    /// deletions, and drops faces whose crop is gone (they can no longer be shown).
    pub fn check(&self, repair: bool) -> Result<ClusterCheck> {
        let mut report = ClusterCheck::default();
        let mut c = self.pg.get()?;
        let pending: i64 = c
            .query_one("SELECT COUNT(*) FROM pending_delete", &[])?
            .get(0);
        if pending > 0 {
            let mut f = Finding {
                kind: "pending_delete",
                detail: format!("{pending} deletions not yet applied to points or blobs"),
                repaired: false,
            };
            if repair {
                drop(c);
                self.finish_pending_deletes()?;
                c = self.pg.get()?;
                f.repaired = true;
            }
            report.inconsistencies.push(f);
        }
        let payloads = self.pending_payloads()?;
        if payloads > 0 {
            let mut f = Finding {
                kind: "pending_payload",
                detail: format!(
                    "{payloads} subject changes not yet applied to the vector index's payloads"
                ),
                repaired: false,
            };
            if repair {
                self.finish_pending_payloads()?;
                f.repaired = true;
            }
            report.inconsistencies.push(f);
        }
        let mut referenced: HashSet<String> = HashSet::new();
        let mut face_blobs: Vec<(i64, String, String)> = Vec::new();
        for r in c.query("SELECT id, crop_sha, thumb_sha FROM face", &[])? {
            let (id, crop, thumb): (i64, String, String) = (r.get(0), r.get(1), r.get(2));
            referenced.insert(crop.clone());
            referenced.insert(thumb.clone());
            face_blobs.push((id, crop, thumb));
        }
        for r in c.query(
            "SELECT original_sha FROM image WHERE original_sha IS NOT NULL",
            &[],
        )? {
            referenced.insert(r.get(0));
        }
        report.faces_checked = face_blobs.len() as u64;
        drop(c);
        let stored: HashSet<String> = self.blobs.list()?.into_iter().map(|(s, _)| s).collect();
        report.blobs_checked = stored.len() as u64;
        let mut drop_faces = Vec::new();
        for (id, crop, thumb) in &face_blobs {
            if !stored.contains(crop) || !stored.contains(thumb) {
                report.inconsistencies.push(Finding {
                    kind: "missing_blob",
                    detail: format!("face {id}: crop or thumbnail blob missing"),
                    repaired: repair,
                });
                drop_faces.push(*id);
            }
        }
        for sha in stored.difference(&referenced) {
            let mut f = Finding {
                kind: "orphan_blob",
                detail: format!("blob {sha} is used by no face or image"),
                repaired: false,
            };
            if repair {
                // Re-check under a fresh read: a writer may have just committed it.
                let mut c = self.pg.get()?;
                let mut tx = c.transaction()?;
                if !blob_referenced(&mut tx, sha)? {
                    self.blobs.delete(sha)?;
                    f.repaired = true;
                }
                tx.commit()?;
            }
            report.inconsistencies.push(f);
        }
        self.check_staged(repair, &mut report)?;
        self.check_tally(repair, &mut report)?;
        if let Vectors::Qdrant(q) = &self.vectors {
            let mut c = self.pg.get()?;
            let colls: Vec<(i64, i32)> = c
                .query("SELECT id, dim FROM collection", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            for (coll, dim) in colls {
                self.ensure_points_collection(q, coll, dim as usize)?;
                let points: HashSet<i64> = q.ids(coll)?.into_iter().collect();
                report.points_checked += points.len() as u64;
                let rows: HashSet<i64> = c
                    .query("SELECT id FROM face WHERE collection_id = $1", &[&coll])?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let orphans: Vec<i64> = points.difference(&rows).copied().collect();
                if !orphans.is_empty() {
                    // Points of a write still in flight have no row yet: only ids below the
                    // sequence's current value minus in-flight reservations could be judged;
                    // we re-read the rows right before removing to narrow the window.
                    let still: HashSet<i64> = c
                        .query("SELECT id FROM face WHERE id = ANY($1)", &[&orphans])?
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                    let orphans: Vec<i64> =
                        orphans.into_iter().filter(|i| !still.contains(i)).collect();
                    if repair && !orphans.is_empty() {
                        q.delete(coll, &orphans)?;
                    }
                    for id in &orphans {
                        report.inconsistencies.push(Finding {
                            kind: "orphan_point",
                            detail: format!(
                                "vector point {id} in collection {coll} has no face row"
                            ),
                            repaired: repair,
                        });
                    }
                }
                let missing: Vec<i64> = rows.difference(&points).copied().collect();
                if !missing.is_empty() {
                    if repair {
                        let mut pts = Vec::new();
                        for chunk in missing.chunks(1000) {
                            for r in c.query(
                                "SELECT f.id, f.vector, f.source_id, f.subject_id, i.captured_at, \
                                 i.jurisdiction FROM face f JOIN image i ON i.id = f.image_id \
                                 WHERE f.id = ANY($1)",
                                &[&chunk],
                            )? {
                                pts.push(VectorPoint {
                                    face_id: r.get(0),
                                    vector: bytes_vector(r.get(1))?,
                                    source_id: r.get(2),
                                    subject_id: r.get(3),
                                    captured_at: r.get(4),
                                    jurisdiction: r.get(5),
                                });
                            }
                        }
                        q.upsert(coll, &pts)?;
                    }
                    for id in &missing {
                        report.inconsistencies.push(Finding {
                            kind: "missing_point",
                            detail: format!("face {id} has no vector point"),
                            repaired: repair,
                        });
                    }
                }
            }
        }
        if repair && !drop_faces.is_empty() {
            self.delete(&DeleteTarget::Faces(drop_faces))?;
        }
        Ok(report)
    }

    /// Writes one image like [`FaceStore::add_images`], unless suppressions were added since
    /// the list its faces were checked against was read (`seen`, from
    /// [`FaceStore::suppression_generation`]): then nothing of it stays (points, blobs no row
    /// uses) and the answer is `None`: check the faces against the new list and try again.
    ///
    /// The check runs in the write's transaction under a shared advisory lock that
    /// `add_suppressions` takes exclusively, so a write either commits before the suppressions
    /// (and an opt-out's search that follows sees it) or sees them here.
    pub fn add_image_checked(&self, img: &NewImage, seen: i64) -> Result<Option<AddOutcome>> {
        let coll = self.collection_by_id(img.collection_id)?;
        self.add_one(img, &coll, Some(seen))
            .with_context(|| format!("storing image {}", img.sha256))
    }

    /// Removes blobs of a write that did not commit, where no row uses them.
    fn drop_unused_blobs(&self, shas: &[(String, String)], original: Option<&str>) -> Result<()> {
        let mut c = self.pg.get()?;
        let mut tx = c.transaction()?;
        let all = shas
            .iter()
            .flat_map(|(a, b)| [a.as_str(), b.as_str()])
            .chain(original);
        for sha in all {
            if !blob_referenced(&mut tx, sha)? {
                self.blobs.delete(sha)?;
            }
        }
        Ok(())
    }

    fn add_one(
        &self,
        img: &NewImage,
        coll: &Collection,
        seen: Option<i64>,
    ) -> Result<Option<AddOutcome>> {
        if let Some(id) = self.image_by_sha(img.collection_id, &img.sha256)? {
            return Ok(Some(AddOutcome {
                image_id: id,
                face_ids: vec![],
                duplicate: true,
            }));
        }
        // Stored normalised (`us-il` → `US-IL`), as filters and erasure by jurisdiction match.
        let jurisdiction = img.validated_for(coll)?;
        // 1. Blobs (content-addressed: a repeat is harmless).
        let mut shas = Vec::with_capacity(img.faces.len());
        for f in &img.faces {
            let crop = sha256_hex(&f.crop);
            let thumb = sha256_hex(&f.thumb);
            self.blobs.put(&crop, &f.crop)?;
            self.blobs.put(&thumb, &f.thumb)?;
            shas.push((crop, thumb));
        }
        let original_sha = match &img.original {
            Some(b) => {
                let s = sha256_hex(b);
                self.blobs.put(&s, b)?;
                Some(s)
            }
            None => None,
        };
        let mut c = self.pg.get()?;
        // 2. Ids, then vector points under them.
        let n = img.faces.len() as i64;
        let ids: Vec<i64> = if n == 0 {
            vec![]
        } else {
            c.query(
                "SELECT nextval('face_id_seq') FROM generate_series(1, $1::bigint)",
                &[&n],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
        };
        if let Vectors::Qdrant(q) = &self.vectors {
            if !ids.is_empty() {
                self.ensure_points_collection(q, coll.id, coll.dim)?;
                let pts: Vec<VectorPoint> = img
                    .faces
                    .iter()
                    .zip(&ids)
                    .map(|(f, id)| VectorPoint {
                        face_id: *id,
                        vector: f.vector.clone(),
                        source_id: img.source_id,
                        subject_id: f.subject_id,
                        captured_at: img.captured_at,
                        jurisdiction: jurisdiction.clone(),
                    })
                    .collect();
                q.upsert(coll.id, &pts)?;
            }
        }
        // 3. The rows, in one transaction: the commit is what makes the faces visible.
        let t = now();
        let mut tx = c.transaction()?;
        if let Some(seen) = seen {
            tx.execute(
                "SELECT pg_advisory_xact_lock_shared($1)",
                &[&SUPPRESSION_LOCK],
            )?;
            let now_gen: i64 = tx
                .query_one("SELECT coalesce(max(id), 0) FROM suppression", &[])?
                .get(0);
            if now_gen > seen {
                drop(tx);
                if let Vectors::Qdrant(q) = &self.vectors {
                    if !ids.is_empty() {
                        q.delete(coll.id, &ids)?;
                    }
                }
                drop(c);
                self.drop_unused_blobs(&shas, original_sha.as_deref())?;
                return Ok(None);
            }
        }
        let (lat, lon) = match img.gps {
            Some((a, b)) => (Some(a), Some(b)),
            None => (None, None),
        };
        let width = img.width as i32;
        let height = img.height as i32;
        let rejected = img.faces_rejected as i32;
        let params: [&(dyn ToSql + Sync); 18] = [
            &img.collection_id,
            &img.source_id,
            &img.sha256,
            &img.uri,
            &img.page_uri,
            &img.captured_at,
            &lat,
            &lon,
            &jurisdiction,
            &img.jurisdiction_method,
            &width,
            &height,
            &rejected,
            &original_sha,
            &img.external_id,
            &img.licence,
            &img.legal_basis,
            &t,
        ];
        let row = tx.query_opt(
            "INSERT INTO image (collection_id, source_id, sha256, uri, page_uri, captured_at, \
             gps_lat, gps_lon, jurisdiction, jurisdiction_method, width, height, faces_rejected, \
             original_sha, external_id, licence, legal_basis, ingested_at) VALUES ($1, $2, $3, \
             $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
             ON CONFLICT (collection_id, sha256) DO NOTHING RETURNING id",
            &params,
        )?;
        let Some(row) = row else {
            // Another process stored the same image first: undo our points.
            drop(tx);
            if let Vectors::Qdrant(q) = &self.vectors {
                if !ids.is_empty() {
                    q.delete(coll.id, &ids)?;
                }
            }
            let id = self
                .image_by_sha(img.collection_id, &img.sha256)?
                .ok_or_else(|| anyhow!("image {} vanished", img.sha256))?;
            return Ok(Some(AddOutcome {
                image_id: id,
                face_ids: vec![],
                duplicate: true,
            }));
        };
        let image_id: i64 = row.get(0);
        let st = tx.prepare(
            "INSERT INTO face (id, collection_id, image_id, source_id, subject_id, bbox, \
             landmarks, det_score, quality, pack, vector, crop_sha, thumb_sha, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )?;
        for ((f, id), (crop, thumb)) in img.faces.iter().zip(&ids).zip(&shas) {
            let bbox = serde_json::to_value(f.bbox)?;
            let lm = serde_json::to_value(f.landmarks)?;
            let v = vector_bytes(&f.vector);
            tx.execute(
                &st,
                &[
                    id,
                    &img.collection_id,
                    &image_id,
                    &img.source_id,
                    &f.subject_id,
                    &bbox,
                    &lm,
                    &f.det_score,
                    &f.quality,
                    &coll.pack,
                    &v,
                    crop,
                    thumb,
                    &t,
                ],
            )?;
        }
        tx.commit()?;
        Ok(Some(AddOutcome {
            image_id,
            face_ids: ids,
            duplicate: false,
        }))
    }
}

/// Whether any live row uses this blob.
fn blob_referenced(tx: &mut postgres::Transaction<'_>, sha: &str) -> Result<bool> {
    Ok(tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM face WHERE crop_sha = $1 OR thumb_sha = $1) \
             OR EXISTS (SELECT 1 FROM image WHERE original_sha = $1)",
            &[&sha],
        )?
        .get(0))
}

impl FaceStore for ClusterStore {
    fn backend(&self) -> String {
        match self.vectors {
            Vectors::Qdrant(_) => "cluster (postgres, s3, qdrant)".into(),
            Vectors::Exact(_) => "cluster (postgres, s3, exact)".into(),
        }
    }

    fn ensure_collection(&self, name: &str, pack: &str, dim: usize) -> Result<Collection> {
        if name.trim().is_empty() {
            bail!("a collection needs a name");
        }
        let mut c = self.pg.get()?;
        c.execute(
            "INSERT INTO collection (name, pack, dim, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
            &[&name, &pack, &(dim as i32), &now()],
        )?;
        drop(c);
        let coll = self
            .collection(name)?
            .ok_or_else(|| anyhow!("collection vanished"))?;
        coll.check_pinned(pack, dim)?;
        if let Vectors::Qdrant(q) = &self.vectors {
            self.ensure_points_collection(q, coll.id, dim)?;
        }
        Ok(coll)
    }

    fn collection(&self, name: &str) -> Result<Option<Collection>> {
        let mut c = self.pg.get()?;
        Ok(c.query_opt(
            "SELECT id, name, pack, dim, created_at FROM collection WHERE name = $1",
            &[&name],
        )?
        .map(|r| collection_row(&r)))
    }

    fn collections(&self) -> Result<Vec<Collection>> {
        let mut c = self.pg.get()?;
        Ok(c.query(
            "SELECT id, name, pack, dim, created_at FROM collection ORDER BY id",
            &[],
        )?
        .iter()
        .map(collection_row)
        .collect())
    }

    fn ensure_source(&self, collection_id: i64, s: &NewSource) -> Result<Source> {
        if s.name.trim().is_empty() {
            bail!("the source needs a name");
        }
        let jurisdiction = s
            .jurisdiction
            .as_deref()
            .map(visage_gallery::normalize_jurisdiction)
            .transpose()?;
        let mut c = self.pg.get()?;
        c.execute(
            "INSERT INTO source (collection_id, name, kind, uri, legal_basis, licence, \
             jurisdiction, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (collection_id, name) DO NOTHING",
            &[
                &collection_id,
                &s.name,
                &s.kind,
                &s.uri,
                &s.legal_basis,
                &s.licence,
                &jurisdiction,
                &now(),
            ],
        )?;
        let r = c.query_one(
            &format!("SELECT {SOURCE_COLUMNS} FROM source WHERE collection_id = $1 AND name = $2"),
            &[&collection_id, &s.name],
        )?;
        Ok(source_row(&r))
    }

    fn sources(&self, collection_id: i64) -> Result<Vec<Source>> {
        let mut c = self.pg.get()?;
        Ok(c.query(
            &format!("SELECT {SOURCE_COLUMNS} FROM source WHERE collection_id = $1 ORDER BY id"),
            &[&collection_id],
        )?
        .iter()
        .map(source_row)
        .collect())
    }

    fn ensure_subject(&self, collection_id: i64, label: &str) -> Result<i64> {
        let mut c = self.pg.get()?;
        c.execute(
            "INSERT INTO subject (collection_id, label, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (collection_id, label) DO NOTHING",
            &[&collection_id, &label, &now()],
        )?;
        Ok(c.query_one(
            "SELECT id FROM subject WHERE collection_id = $1 AND label = $2",
            &[&collection_id, &label],
        )?
        .get(0))
    }

    fn subject_by_label(&self, collection_id: i64, label: &str) -> Result<Option<i64>> {
        let mut c = self.pg.get()?;
        Ok(c.query_opt(
            "SELECT id FROM subject WHERE collection_id = $1 AND label = $2",
            &[&collection_id, &label],
        )?
        .map(|r| r.get(0)))
    }

    fn subject_faces(&self, subject_id: i64) -> Result<Vec<i64>> {
        let mut c = self.pg.get()?;
        Ok(c.query(
            "SELECT id FROM face WHERE subject_id = $1 ORDER BY id",
            &[&subject_id],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
    }

    fn image_by_sha(&self, collection_id: i64, sha256: &str) -> Result<Option<i64>> {
        let mut c = self.pg.get()?;
        Ok(c.query_opt(
            "SELECT id FROM image WHERE collection_id = $1 AND sha256 = $2",
            &[&collection_id, &sha256],
        )?
        .map(|r| r.get(0)))
    }

    fn add_images(&self, imgs: &[NewImage]) -> Result<Vec<AddOutcome>> {
        let mut colls: HashMap<i64, Collection> = HashMap::new();
        let mut out = Vec::with_capacity(imgs.len());
        for img in imgs {
            let coll = match colls.entry(img.collection_id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.collection_by_id(img.collection_id)?)
                }
            };
            let added = self
                .add_one(img, coll, None)
                .with_context(|| format!("storing image {}", img.sha256))?;
            out.push(added.expect("an unchecked write is never refused"));
        }
        Ok(out)
    }

    fn search_traced(&self, q: &SearchQuery) -> Result<(Vec<Hit>, SearchTrace)> {
        let coll = self.collection_by_id(q.collection_id)?;
        if q.vector.len() != coll.dim {
            bail!(
                "a {}-d probe cannot search collection {:?} ({}-d)",
                q.vector.len(),
                coll.name,
                coll.dim
            );
        }
        let filter = q.filter.clone().validated()?;
        let q = SearchQuery {
            filter,
            ..q.clone()
        };
        // As the embedded gallery: at least one hit, at most 10,000.
        let k = q.k.clamp(1, 10_000);
        // A few spare candidates cover points whose rows a deletion or an unfinished write
        // left without a live row.
        let want = k + 16;
        let mut trace = SearchTrace::default();
        let t0 = Instant::now();
        let cands = match &self.vectors {
            Vectors::Qdrant(v) => {
                trace.path = "qdrant";
                self.ensure_points_collection(v, coll.id, coll.dim)?;
                v.search(coll.id, q.vector, want, &q.filter, None)?
            }
            Vectors::Exact(cache) => {
                trace.path = "exact_scan";
                let (cands, matched) = self.exact_search(cache, &q, coll.dim, want)?;
                if !q.filter.is_empty() {
                    trace.filter_matches = Some(matched);
                }
                cands
            }
        };
        trace.candidates = cands.len();
        trace.index_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let ids: Vec<i64> = cands.iter().map(|n| n.id as i64).collect();
        let mut recs = self.face_records(&ids)?;
        let mut hits = Vec::new();
        for n in cands {
            if q.threshold.is_some_and(|t| n.score < t) {
                continue;
            }
            let Some(face) = recs.remove(&(n.id as i64)) else {
                continue;
            };
            if face.collection_id != coll.id {
                continue;
            }
            // The index's copy of the subject may lag a change not yet applied to it.
            if !q.filter.subjects.is_empty()
                && !face
                    .subject
                    .as_ref()
                    .is_some_and(|s| q.filter.subjects.contains(&s.id))
            {
                continue;
            }
            hits.push(Hit {
                score: n.score,
                fmr: None,
                fmr_extrapolated: None,
                expected_false_matches: None,
                face,
            });
            if hits.len() == k {
                break;
            }
        }
        trace.join_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok((hits, trace))
    }

    fn indexed_faces(&self, collection_id: i64) -> Result<u64> {
        match &self.vectors {
            Vectors::Qdrant(v) => match v.points_count(collection_id)? {
                Some(n) => Ok(n),
                None => self.face_count_of(collection_id),
            },
            Vectors::Exact(_) => self.face_count_of(collection_id),
        }
    }

    fn face(&self, id: i64) -> Result<Option<FaceRecord>> {
        Ok(self.face_records(&[id])?.remove(&id))
    }

    fn face_vector(&self, id: i64) -> Result<Option<Vec<f32>>> {
        let mut c = self.pg.get()?;
        match c.query_opt("SELECT vector FROM face WHERE id = $1", &[&id])? {
            Some(r) => Ok(Some(bytes_vector(r.get(0))?)),
            None => Ok(None),
        }
    }

    fn delete(&self, target: &DeleteTarget) -> Result<DeleteReport> {
        Ok(self.delete_recorded(target, |_, _| Ok(()))?.0)
    }

    fn blob(&self, sha: &str) -> Result<Vec<u8>> {
        self.blobs
            .get(sha)?
            .ok_or_else(|| anyhow!("blob {sha} not found"))
    }

    fn blob_names(&self) -> Result<Vec<String>> {
        Ok(self.blobs.list()?.into_iter().map(|(s, _)| s).collect())
    }

    fn face_count(&self) -> Result<u64> {
        let mut c = self.pg.get()?;
        Ok(
            c.query_one("SELECT COALESCE(SUM(faces), 0)::BIGINT FROM tally", &[])?
                .get::<_, i64>(0) as u64,
        )
    }

    fn image_count(&self) -> Result<u64> {
        let mut c = self.pg.get()?;
        Ok(
            c.query_one("SELECT COALESCE(SUM(images), 0)::BIGINT FROM tally", &[])?
                .get::<_, i64>(0) as u64,
        )
    }

    fn suppressions(&self, pack: &str) -> Result<Vec<Suppression>> {
        let mut c = self.pg.get()?;
        c.query(
            "SELECT id, pack, vector, z_median, z_mad, request_id, origin, created_at \
             FROM suppression WHERE pack = $1 ORDER BY id",
            &[&pack],
        )?
        .iter()
        .map(|r| {
            Ok(Suppression {
                id: r.get(0),
                pack: r.get(1),
                vector: bytes_vector(r.get(2))?,
                z_median: r.get(3),
                z_mad: r.get(4),
                request_id: r.get(5),
                origin: r.get(6),
                created_at: r.get(7),
            })
        })
        .collect()
    }

    fn add_suppressions_marked(
        &self,
        pack: &str,
        request_id: &str,
        entries: &[NewSuppression],
    ) -> Result<(usize, i64)> {
        let mut c = self.pg.get()?;
        let mut tx = c.transaction()?;
        // Waits for image writes in flight and holds new ones until this commits
        // (`add_image_checked`).
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SUPPRESSION_LOCK])?;
        let t = now();
        for e in entries {
            tx.execute(
                "INSERT INTO suppression (pack, vector, z_median, z_mad, request_id, origin, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &pack,
                    &vector_bytes(&e.vector),
                    &e.z_median,
                    &e.z_mad,
                    &request_id,
                    &e.origin,
                    &t,
                ],
            )?;
        }
        // The mark, read under the lock: a writer that read the older generation gives up
        // at its check (`add_image_checked`); one that reads the new generation does so
        // after this commits, so the ids it takes afterwards are above the mark.
        let mark: i64 = tx
            .query_one(
                "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END \
                 FROM face_id_seq",
                &[],
            )?
            .get(0);
        tx.commit()?;
        Ok((entries.len(), mark))
    }

    fn face_vectors_after(
        &self,
        pack: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<f32>)>> {
        let mut c = self.pg.get()?;
        c.query(
            "SELECT id, vector FROM face WHERE pack = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[&pack, &after, &(limit.min(i64::MAX as usize) as i64)],
        )?
        .iter()
        .map(|r| Ok((r.get(0), bytes_vector(r.get(1))?)))
        .collect()
    }

    fn suppression_generation(&self) -> Result<i64> {
        let mut c = self.pg.get()?;
        Ok(
            c.query_one("SELECT coalesce(max(id), 0) FROM suppression", &[])?
                .get(0),
        )
    }

    fn sample_vectors(&self, collection_id: i64, n: usize) -> Result<Vec<Vec<f32>>> {
        let total = self.face_count_of(collection_id)?;
        let mut c = self.pg.get()?;
        let step = (total as usize).div_ceil(n.max(1)).max(1) as i64;
        // Ids first (an index scan), then only the chosen rows' vectors.
        let ids: Vec<i64> = c
            .query(
                "SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM face \
                 WHERE collection_id = $1) s WHERE (rn - 1) % $2 = 0",
                &[&collection_id, &step],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            for r in c.query(
                "SELECT vector FROM face WHERE id = ANY($1) ORDER BY id",
                &[&chunk],
            )? {
                out.push(bytes_vector(r.get(0))?);
            }
        }
        Ok(out)
    }

    fn image_face_count(&self, image_id: i64) -> Result<u64> {
        let mut c = self.pg.get()?;
        Ok(c.query_one(
            "SELECT count(*) FROM face WHERE image_id = $1",
            &[&image_id],
        )?
        .get::<_, i64>(0) as u64)
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// Advisory lock key ("visage" + 1) serialising suppression additions against checked image
/// writes.
pub const SUPPRESSION_LOCK: i64 = 0x7669_7361_6765_0001;

fn ids_of(tx: &mut postgres::Transaction<'_>, sql: &str, id: &i64) -> Result<Vec<i64>> {
    Ok(tx.query(sql, &[id])?.iter().map(|r| r.get(0)).collect())
}
