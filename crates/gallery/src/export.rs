//! Reading a collection back out whole, image by image (`visage migrate` copies an embedded
//! gallery into a cluster one with it).

use anyhow::{Context, Result};
use rusqlite::params;

use super::{blob_to_vector, lock, Gallery, NewFace, NewImage};

/// One stored image with everything needed to write it elsewhere: the image and its faces
/// (vectors, crop and thumbnail bytes, original when kept) and each face's subject label
/// (subject ids are per store; the label carries over).
pub struct ExportedImage {
    pub image_id: i64,
    /// `subject_id` of the faces is left `None`; see `labels`.
    pub image: NewImage,
    pub labels: Vec<Option<String>>,
    pub source_id: i64,
}

impl Gallery {
    /// Up to `limit` images of the collection with ids above `after`, in id order.
    pub fn export_images(
        &self,
        collection_id: i64,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ExportedImage>> {
        let conn = lock(&self.conn);
        let mut st = conn.prepare(
            "SELECT id, source_id, sha256, uri, page_uri, captured_at, gps_lat, gps_lon, \
             jurisdiction, jurisdiction_method, width, height, original_blob, faces_rejected, \
             external_id, licence, legal_basis FROM image \
             WHERE collection_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = st
            .query_map(params![collection_id, after, limit as i64], |r| {
                let lat: Option<f64> = r.get(6)?;
                let lon: Option<f64> = r.get(7)?;
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(12)?,
                    NewImage {
                        collection_id,
                        source_id: r.get(1)?,
                        sha256: r.get(2)?,
                        uri: r.get(3)?,
                        page_uri: r.get(4)?,
                        captured_at: r.get(5)?,
                        gps: lat.zip(lon),
                        jurisdiction: r.get(8)?,
                        jurisdiction_method: r.get(9)?,
                        width: r.get::<_, Option<i64>>(10)?.unwrap_or(0) as u32,
                        height: r.get::<_, Option<i64>>(11)?.unwrap_or(0) as u32,
                        faces_rejected: r.get::<_, i64>(13)? as u32,
                        original: None,
                        faces: vec![],
                        external_id: r.get(14)?,
                        licence: r.get(15)?,
                        legal_basis: r.get(16)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut fst = conn.prepare(
            "SELECT f.bbox, f.landmarks, f.det_score, f.quality, f.vector, f.crop_sha, \
             f.thumb_sha, s.label FROM face f LEFT JOIN subject s ON s.id = f.subject_id \
             WHERE f.image_id = ?1 ORDER BY f.id",
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for (image_id, original, mut image) in rows {
            let faces = fst
                .query_map([image_id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, f32>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut labels = Vec::with_capacity(faces.len());
            for (bbox, lm, det, quality, vector, crop, thumb, label) in faces {
                image.faces.push(NewFace {
                    bbox: serde_json::from_str(&bbox).context("stored bbox")?,
                    landmarks: serde_json::from_str(&lm).context("stored landmarks")?,
                    det_score: det,
                    quality: serde_json::from_str(&quality).unwrap_or_default(),
                    vector: blob_to_vector(&vector).context("stored vector")?,
                    crop: self.blobs.get(&crop)?,
                    thumb: self.blobs.get(&thumb)?,
                    subject_id: None,
                });
                labels.push(label);
            }
            if let Some(sha) = original {
                image.original = Some(self.blobs.get(&sha)?);
            }
            out.push(ExportedImage {
                image_id,
                source_id: image.source_id,
                image,
                labels,
            });
        }
        Ok(out)
    }
}
