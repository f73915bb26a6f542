//! The opt-out suppression list: embeddings (never photos) of people who asked not to be in
//! the gallery. The engine decides what matches (`visage_engine::optout`); the gallery only
//! stores the entries durably and hands them out, with a cheap generation check so callers can
//! cache them.

use std::sync::Arc;

use anyhow::Result;
use rusqlite::params;
use serde::Serialize;

use super::{blob_to_vector, lock, now, vector_to_blob, Gallery};

/// One suppressed embedding with the score statistics of its comparison against the gallery
/// when it was added (median and scaled MAD), used to normalise later scores against it.
#[derive(Debug, Clone, Serialize)]
pub struct Suppression {
    pub id: i64,
    pub pack: String,
    #[serde(skip)]
    pub vector: Vec<f32>,
    pub z_median: f32,
    pub z_mad: f32,
    pub request_id: String,
    /// `selfie` (the requester's photo) or `matched_face` (a gallery face it matched).
    pub origin: String,
    pub created_at: i64,
}

/// A suppression to add.
#[derive(Debug, Clone)]
pub struct NewSuppression {
    pub vector: Vec<f32>,
    pub z_median: f32,
    pub z_mad: f32,
    pub origin: String,
}

impl Gallery {
    /// Adds suppressions for `request_id` in one transaction.
    pub fn add_suppressions(
        &self,
        pack: &str,
        request_id: &str,
        entries: &[NewSuppression],
    ) -> Result<usize> {
        Ok(self.add_suppressions_marked(pack, request_id, entries)?.0)
    }

    /// `add_suppressions`, with the highest face id handed out so far (`FaceStore::
    /// add_suppressions_marked`; face ids are never reused).
    pub fn add_suppressions_marked(
        &self,
        pack: &str,
        request_id: &str,
        entries: &[NewSuppression],
    ) -> Result<(usize, i64)> {
        self.require_writable()?;
        let mut conn = lock(&self.conn);
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare(
                "INSERT INTO suppression (pack, vector, z_median, z_mad, request_id, origin, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let t = now();
            for e in entries {
                st.execute(params![
                    pack,
                    vector_to_blob(&e.vector),
                    e.z_median,
                    e.z_mad,
                    request_id,
                    e.origin,
                    t
                ])?;
            }
        }
        let mark: i64 = tx.query_row(
            "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'face'), 0)",
            [],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok((entries.len(), mark))
    }

    /// Faces of `pack` with an id above `after`, in id order (at most `limit`).
    pub fn face_vectors_after(
        &self,
        pack: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<f32>)>> {
        let conn = lock(&self.conn);
        let mut st = conn.prepare(
            "SELECT id, vector FROM face WHERE pack = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = st.query_map(
            params![pack, after, limit.min(i64::MAX as usize) as i64],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )?;
        let mut out = Vec::new();
        for r in rows {
            let (id, b) = r?;
            if let Some(v) = blob_to_vector(&b) {
                out.push((id, v));
            }
        }
        Ok(out)
    }

    /// A number that changes whenever suppressions are added (for cache invalidation).
    pub fn suppression_generation(&self) -> Result<i64> {
        let conn = lock(&self.conn);
        Ok(
            conn.query_row("SELECT coalesce(max(id), 0) FROM suppression", [], |r| {
                r.get(0)
            })?,
        )
    }

    /// Every suppression for embeddings of `pack`, and the generation it was read at. Read
    /// from SQLite only when suppressions were added since the last call (searches ask for
    /// it every time; another process may have added some).
    pub fn suppressions(&self, pack: &str) -> Result<(i64, Arc<Vec<Suppression>>)> {
        let generation = self.suppression_generation()?;
        if let Some((g, list)) = lock(&self.suppression_cache).get(pack) {
            if *g == generation {
                return Ok((generation, list.clone()));
            }
        }
        let list = Arc::new(self.read_suppressions(pack)?);
        lock(&self.suppression_cache).insert(pack.to_string(), (generation, list.clone()));
        Ok((generation, list))
    }

    fn read_suppressions(&self, pack: &str) -> Result<Vec<Suppression>> {
        let conn = lock(&self.conn);
        let mut st = conn.prepare(
            "SELECT id, pack, vector, z_median, z_mad, request_id, origin, created_at
             FROM suppression WHERE pack = ?1 ORDER BY id",
        )?;
        let rows = st.query_map([pack], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, f64>(3)?,
                r.get::<_, f64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (id, pack, b, med, mad, request_id, origin, created_at) = r?;
            if let Some(vector) = blob_to_vector(&b) {
                out.push(Suppression {
                    id,
                    pack,
                    vector,
                    z_median: med as f32,
                    z_mad: mad as f32,
                    request_id,
                    origin,
                    created_at,
                });
            }
        }
        Ok(out)
    }

    /// Faces stored for an image.
    pub fn image_face_count(&self, image_id: i64) -> Result<u64> {
        let conn = lock(&self.conn);
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM face WHERE image_id = ?1",
            [image_id],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Up to `n` stored vectors of a collection, spread evenly over its face ids (a sample of
    /// the gallery for score normalisation).
    pub fn sample_vectors(&self, collection_id: i64, n: usize) -> Result<Vec<Vec<f32>>> {
        let conn = lock(&self.conn);
        let total: i64 = conn.query_row(
            "SELECT count(*) FROM face WHERE collection_id = ?1",
            [collection_id],
            |r| r.get(0),
        )?;
        let step = (total as usize).div_ceil(n.max(1)).max(1) as i64;
        let mut st = conn.prepare(
            "SELECT vector FROM (SELECT vector, row_number() OVER (ORDER BY id) AS rn
             FROM face WHERE collection_id = ?1) WHERE (rn - 1) % ?2 = 0",
        )?;
        let rows = st.query_map(params![collection_id, step], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for r in rows {
            if let Some(v) = blob_to_vector(&r?) {
                out.push(v);
            }
        }
        Ok(out)
    }
}
