//! `FaceStore`: the storage operations that both backends provide, the embedded gallery
//! (`Gallery`, SQLite + usearch + files) and the cluster one (`visage-cluster`: PostgreSQL +
//! Qdrant or an exact scan + S3-compatible blobs). Ingest workers, `visage migrate` and the
//! shared behavioural suite (`crates/cluster/tests/behaviour.rs`) are written against it.
//! See docs/ARCHITECTURE.md, "Cluster mode".

use anyhow::Result;

use crate::gallery::suppression::{NewSuppression, Suppression};
use crate::gallery::{
    AddOutcome, Collection, DeleteReport, DeleteTarget, FaceRecord, Gallery, Hit, NewImage,
    NewSource, SearchQuery, SearchTrace, Source,
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
    fn search(&self, q: &SearchQuery) -> Result<Vec<Hit>> {
        Ok(self.search_traced(q)?.0)
    }
    /// `search`, with the path it took, its timings and, where the backend counted them, the
    /// faces that passed the filter (`filter_matches`): the comparisons a false match rate is
    /// calibrated for. `None` there means all of [`FaceStore::indexed_faces`].
    fn search_traced(&self, q: &SearchQuery) -> Result<(Vec<Hit>, SearchTrace)>;
    /// Faces a search of the collection compares with (an upper estimate where the backend's
    /// count may include points of unfinished writes).
    fn indexed_faces(&self, collection_id: i64) -> Result<u64>;
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
    /// The same list, shared: the embedded gallery hands out its cached copy, so a search
    /// does not copy every entry.
    fn suppression_list(&self, pack: &str) -> Result<std::sync::Arc<Vec<Suppression>>> {
        Ok(std::sync::Arc::new(self.suppressions(pack)?))
    }
    /// Adds entries to the suppression list. Once this returns, every image write that
    /// commits later was checked against a list holding them (the embedded gallery: one
    /// writer; the cluster: `ClusterStore::add_image_checked`'s lock and generation check).
    fn add_suppressions(
        &self,
        pack: &str,
        request_id: &str,
        entries: &[NewSuppression],
    ) -> Result<usize> {
        Ok(self.add_suppressions_marked(pack, request_id, entries)?.0)
    }
    /// `add_suppressions`, also answering a face id mark: a face stored at or below the mark
    /// had committed before the entries did (a search that follows sees it); a face stored
    /// above it was checked against a list holding them (though perhaps not entries added
    /// after them). An opt-out re-checks the faces above the mark of its first entries once
    /// all of its entries are in (`visage_engine::optout::late_matches`).
    fn add_suppressions_marked(
        &self,
        pack: &str,
        request_id: &str,
        entries: &[NewSuppression],
    ) -> Result<(usize, i64)>;
    /// Faces of `pack` with an id above `after`, in id order, at most `limit`: (id, vector).
    fn face_vectors_after(
        &self,
        pack: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<f32>)>>;
    /// A number that grows whenever suppressions are added (0 while there are none).
    fn suppression_generation(&self) -> Result<i64>;
    /// Up to `n` stored vectors of a collection, spread evenly over its face ids (the sample
    /// an opt-out normalises scores with).
    fn sample_vectors(&self, collection_id: i64, n: usize) -> Result<Vec<Vec<f32>>>;
    /// Faces an image still has.
    fn image_face_count(&self, image_id: i64) -> Result<u64>;
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
    fn search_traced(&self, q: &SearchQuery) -> Result<(Vec<Hit>, SearchTrace)> {
        Gallery::search(self, q)
    }
    fn indexed_faces(&self, collection_id: i64) -> Result<u64> {
        Gallery::indexed_faces(self, collection_id)
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
    fn suppression_list(&self, pack: &str) -> Result<std::sync::Arc<Vec<Suppression>>> {
        Ok(Gallery::suppressions(self, pack)?.1)
    }
    fn add_suppressions_marked(
        &self,
        pack: &str,
        request_id: &str,
        entries: &[NewSuppression],
    ) -> Result<(usize, i64)> {
        Gallery::add_suppressions_marked(self, pack, request_id, entries)
    }
    fn face_vectors_after(
        &self,
        pack: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<f32>)>> {
        Gallery::face_vectors_after(self, pack, after, limit)
    }
    fn suppression_generation(&self) -> Result<i64> {
        Gallery::suppression_generation(self)
    }
    fn sample_vectors(&self, collection_id: i64, n: usize) -> Result<Vec<Vec<f32>>> {
        Gallery::sample_vectors(self, collection_id, n)
    }
    fn image_face_count(&self, image_id: i64) -> Result<u64> {
        Gallery::image_face_count(self, image_id)
    }
    fn flush(&self) -> Result<()> {
        Gallery::flush(self)
    }
}
