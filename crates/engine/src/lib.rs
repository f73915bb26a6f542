//! Use cases joining the face pipeline (`visage-vision`) and the gallery (`visage-gallery`).
//! Front ends (CLI, HTTP server) call these and nothing below them.

pub mod encode;
pub mod files;
pub mod geo;
pub mod ingest;
pub mod optout;
pub mod search;
pub mod sources;
pub mod video;
pub mod video_search;

pub use ingest::{ingest_paths, IngestOptions, IngestReport};
pub use search::{search_image, ProbeFace, SearchOptions, SearchResult};
