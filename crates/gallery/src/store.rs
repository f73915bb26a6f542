//! `FaceStore`: the storage operations that both backends provide, the embedded gallery
//! (`Gallery`, SQLite + usearch + files) and the cluster one (`visage-cluster`: PostgreSQL +
//! Qdrant or an exact scan + S3-compatible blobs). Ingest workers, `visage migrate` and the
//! shared behavioural suite (`crates/cluster/tests/behaviour.rs`) are written against it.
//! See docs/ARCHITECTURE.md, "Cluster mode".

use anyhow::Result;

use crate::gallery::suppression::{NewSuppression, Suppression};
use crate::gallery::{
    AddOutcome, Collection, DeleteReport, DeleteTarget, FaceRecord, Gallery, Hit, NewImage,
    NewSource, SearchQuery, Source,
};

pub trait FaceStore: Send + Sync {
    /// `embedded`, or `cluster (postgres, s3, qdrant|exact)`.
    fn backend(&self) -> String;
    fn ensure_collection(&self, name: &str, pack: &str, dim: usize) -> Result<Collection>;
    fn collection(&self, name: &str) -> Result<Option<Collection>>;
    fn collections(&self) -> Result<Vec<Collection>>;
    fn ensure_source(&self, collection_id: i64, s: &NewSource) -> Result<Source>;
    fn sources(&self, collection_id: i64) -> Result<Vec<Source>>;
    fn ensure_subject(&self, collection_id: i64, label: &str) -> Result<i64>;
    fn subject_by_label(&self, collection_id: i64, label: &str) -> Result<Option<i64>>;
    fn subject_faces(&self, subject_id: i64) -> Result<Vec<i64>>;
    /// The image with this content hash in the collection, if stored.
    fn image_by_sha(&self, collection_id: i64, sha256: &str) -> Result<Option<i64>>;
    /// Writes each image with its faces atomically; an image whose sha256 is already in its
    /// collection is reported `duplicate` and nothing of it is written (so a redone item is a
    /// no-op, whichever process did it first).
    fn add_images(&self, imgs: &[NewImage]) -> Result<Vec<AddOutcome>>;
    /// k nearest faces (cosine on L2-normalised vectors), filtered, best first, joined with
    /// provenance. Only faces whose write committed are returned.
    fn search(&self, q: &SearchQuery) -> Result<Vec<Hit>>;
    fn face(&self, id: i64) -> Result<Option<FaceRecord>>;
    fn face_vector(&self, id: i64) -> Result<Option<Vec<f32>>>;
    /// Real deletion: rows, vectors and blobs no other face uses.
    fn delete(&self, target: &DeleteTarget) -> Result<DeleteReport>;
    /// A stored blob (crop, thumbnail, original) by sha256.
    fn blob(&self, sha: &str) -> Result<Vec<u8>>;
    /// Every stored blob's sha256 (for deletion checks and repair).
    fn blob_names(&self) -> Result<Vec<String>>;
    fn face_count(&self) -> Result<u64>;
    fn image_count(&self) -> Result<u64>;
    fn suppressions(&self, pack: &str) -> Result<Vec<Suppression>>;
    fn add_suppressions(
        &self,
        pack: &str,
        request_id: &str,
        entries: &[NewSuppression],
    ) -> Result<usize>;
    /// Makes written vectors durable where the backend buffers them.
    fn flush(&self) -> Result<()>;
}

impl FaceStore for Gallery {
    fn backend(&self) -> String {
        "embedded".into()
    }
    fn ensure_collection(&self, name: &str, pack: &str, dim: usize) -> Result<Collection> {
        Gallery::ensure_collection(self, name, pack, dim)
    }
    fn collection(&self, name: &str) -> Result<Option<Collection>> {
        Gallery::collection(self, name)
    }
    fn collections(&self) -> Result<Vec<Collection>> {
        Gallery::collections(self)
    }
    fn ensure_source(&self, collection_id: i64, s: &NewSource) -> Result<Source> {
        Gallery::ensure_source(self, collection_id, s)
    }
    fn sources(&self, collection_id: i64) -> Result<Vec<Source>> {
        Gallery::sources(self, collection_id)
    }
    fn ensure_subject(&self, collection_id: i64, label: &str) -> Result<i64> {
        Gallery::ensure_subject(self, collection_id, label)
    }
    fn subject_by_label(&self, collection_id: i64, label: &str) -> Result<Option<i64>> {
        Gallery::subject_by_label(self, collection_id, label)
    }
    fn subject_faces(&self, subject_id: i64) -> Result<Vec<i64>> {
        Gallery::subject_faces(self, subject_id)
    }
    fn image_by_sha(&self, collection_id: i64, sha256: &str) -> Result<Option<i64>> {
        Gallery::image_by_sha(self, collection_id, sha256)
    }
    fn add_images(&self, imgs: &[NewImage]) -> Result<Vec<AddOutcome>> {
        Gallery::add_images(self, imgs)
    }
    fn search(&self, q: &SearchQuery) -> Result<Vec<Hit>> {
        Ok(Gallery::search(self, q)?.0)
    }
    fn face(&self, id: i64) -> Result<Option<FaceRecord>> {
        Gallery::face(self, id)
    }
    fn face_vector(&self, id: i64) -> Result<Option<Vec<f32>>> {
        Gallery::face_vector(self, id)
    }
    fn delete(&self, target: &DeleteTarget) -> Result<DeleteReport> {
        Gallery::delete(self, target)
    }
    fn blob(&self, sha: &str) -> Result<Vec<u8>> {
        Gallery::blob(self, sha)
    }
    fn blob_names(&self) -> Result<Vec<String>> {
        Ok(self.blobs.list()?.into_iter().map(|(s, _, _)| s).collect())
    }
    fn face_count(&self) -> Result<u64> {
        Gallery::face_count(self)
    }
    fn image_count(&self) -> Result<u64> {
        Gallery::image_count(self)
    }
    fn suppressions(&self, pack: &str) -> Result<Vec<Suppression>> {
        Ok(Gallery::suppressions(self, pack)?.1.as_ref().clone())
    }
    fn add_suppressions(
        &self,
        pack: &str,
        request_id: &str,
        entries: &[NewSuppression],
    ) -> Result<usize> {
        Gallery::add_suppressions(self, pack, request_id, entries)
    }
    fn flush(&self) -> Result<()> {
        Gallery::flush(self)
    }
}
