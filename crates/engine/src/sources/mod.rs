//! Where ingest items come from: folders, archives, manifests, web archives. Every reader
//! yields items one at a time (bounded memory whatever the input size) and reports a bad
//! item as an `ItemFailure` without stopping.

pub mod archive;
pub mod manifest;
pub mod warc;

use serde::{Deserialize, Serialize};

/// Limits every reader enforces on untrusted containers.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Largest single item, bytes (after decompression).
    pub max_item_bytes: u64,
    /// Largest total of decompressed bytes read from one container.
    pub max_total_bytes: u64,
    /// Most entries read from one container.
    pub max_entries: u64,
    /// Largest ratio of decompressed to compressed size of one entry (zip bomb guard);
    /// entries small enough (below 1 MiB) are exempt.
    pub max_ratio: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_item_bytes: 64 << 20,
            max_total_bytes: 64 << 30,
            max_entries: 10_000_000,
            max_ratio: 200,
        }
    }
}

/// Provenance an item carries from its container (all optional; the ingest fills defaults
/// from the source).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemMeta {
    /// Where the image itself came from (file path, archive member path, URL).
    pub uri: Option<String>,
    /// The page that showed or referred to the image (WARC `Referer`, manifest `page_url`).
    pub page_uri: Option<String>,
    /// Capture time, unix seconds (WARC-Date, manifest `captured_at`).
    pub captured_at: Option<i64>,
    pub licence: Option<String>,
    pub legal_basis: Option<String>,
    /// ISO 3166-1 alpha-2 or ISO 3166-2, as declared by the item.
    pub jurisdiction: Option<String>,
    pub subject: Option<String>,
    pub external_id: Option<String>,
}

/// One image to ingest.
#[derive(Debug, Clone)]
pub struct SourceItem {
    /// Human-readable location for reports (e.g. `archive.tar.gz!dir/a.jpg`, `manifest.csv:17`).
    pub location: String,
    pub bytes: Vec<u8>,
    pub meta: ItemMeta,
}

/// An item that could not be read, with a stable reason code (e.g. `path_traversal`,
/// `decompression_bomb`, `truncated_record`, `bad_row`, `io_error`, `too_large`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemError {
    pub location: String,
    pub code: String,
    pub message: String,
}

impl ItemError {
    pub fn new(location: impl Into<String>, code: &str, message: impl ToString) -> ItemError {
        ItemError {
            location: location.into(),
            code: code.into(),
            message: message.to_string(),
        }
    }
}

pub type ItemResult = Result<SourceItem, ItemError>;
