//! The embedded gallery: metadata and vectors in SQLite, an HNSW index derived from them, and
//! content-addressed blobs (face crops, thumbnails). See docs/ARCHITECTURE.md, "Gallery".

pub mod blobs;
pub mod check;
pub mod filter;
pub mod gallery;
pub mod index;
pub mod schema;
pub mod store;

pub use check::{CheckOptions, CheckReport, Inconsistency};
pub use filter::{normalize_jurisdiction, Filter};
pub use gallery::subjects::Catalog;
pub use gallery::suppression::{NewSuppression, Suppression};
pub use gallery::{
    Access, AddOutcome, Collection, DeleteReport, DeleteTarget, FaceRecord, Gallery, Hit,
    ImageRecord, Job, NewFace, NewImage, NewSource, Recovery, SearchQuery, SearchTrace, Source,
    Stats, DEFAULT_DATA_DIR,
};
pub use index::{FlatIndex, HnswParams, Neighbour, Storage, TopK, UsearchIndex, VectorIndex};
pub use store::FaceStore;
