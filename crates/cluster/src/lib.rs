//! The cluster backend of visage (issue #7). See docs/ARCHITECTURE.md, "Cluster mode", and
//! docs/CLUSTER.md for running it.
//!
//! - `pg`: metadata (collections, sources, subjects, images, faces with their vectors,
//!   suppressions), deletion intents and the ingest queue in PostgreSQL, with numbered
//!   migrations.
//! - `blobs`: crops, thumbnails and originals in an S3-compatible bucket (`object_store`).
//! - `qdrant`: the vector index in Qdrant over gRPC, when configured; otherwise `exact`, an
//!   exact scan over vectors cached from PostgreSQL (small galleries and tests).
//! - `store`: `ClusterStore`, the `FaceStore` over those three; `catalog`: its `Catalog`
//!   (collections and subjects for the catalogue endpoints).
//! - `gov` / `keys` / `accounts` / `audit`: organisations, cases, API keys, user accounts and
//!   sessions, and the audit log (governance).
//! - `queue` / `worker`: ingest items claimed with `FOR UPDATE SKIP LOCKED` and a lease.
//! - `testkit`: starts PostgreSQL and an S3-compatible server on loopback for the tests.

pub mod accounts;
pub mod audit;
pub mod blobs;
pub mod catalog;
pub mod config;
pub mod gov;
pub mod keys;
pub mod migrate;
pub mod pending;
pub mod pg;
pub mod qdrant;
pub mod queue;
pub mod ratelimit;
pub mod receipts;
pub mod store;
pub mod testkit;
pub mod worker;

pub use config::ClusterConfig;
pub use store::ClusterStore;
