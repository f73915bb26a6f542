//! The cluster configuration file (`--config FILE`, `VISAGE_CONFIG`): which backends, where.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::blobs::S3Config;
use crate::qdrant::QdrantConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `postgres://user:password@host:port/dbname`
    pub postgres_url: String,
    pub s3: S3Config,
    /// Absent: vectors are searched by an exact scan cached from PostgreSQL.
    #[serde(default)]
    pub qdrant: Option<QdrantConfig>,
    /// Ed25519 seed that signs the audit log's checkpoints; every API process of the cluster
    /// must use the same file (created on first use, mode 0600). Required by `visage serve`.
    #[serde(default)]
    pub audit_key_file: Option<PathBuf>,
    /// The policy file (`policy/default.toml` format) every API process decides by; absent:
    /// the built-in default policy. All API processes of a cluster should read the same
    /// file; `/v1/health` shows its SHA-256 so a mismatch is visible.
    #[serde(default)]
    pub policy_file: Option<PathBuf>,
    /// The organisation that runs the deployment (`visage cluster add-org`): its
    /// administrators' keys may create, list and change organisations (`/v1/orgs`) and
    /// export the whole audit log (`GET /v1/audit/export`), as the embedded server's
    /// operator organisation. Absent: nobody may, over HTTP.
    #[serde(default)]
    pub operator_org: Option<String>,
    /// Password logins per client address and minute, for all API processes together
    /// (default 10).
    #[serde(default)]
    pub login_per_minute: Option<u32>,
    /// Public endpoint requests (opt-out, access, request status) per client address and
    /// minute, for all API processes together (default 20).
    #[serde(default)]
    pub public_per_minute: Option<u32>,
    /// Largest upload an API process takes for an ingest job (multipart
    /// `POST /v1/ingest/jobs`), bytes (default 2 GiB, as `visage serve --upload-limit`);
    /// 0: no uploads, jobs name server-side paths only.
    #[serde(default)]
    pub upload_limit: Option<u64>,
    /// Local folder where an API process receives an upload before copying it to the
    /// bucket's `uploads/` (default: the system's temporary folder). Needs room for the
    /// uploads received at once.
    #[serde(default)]
    pub upload_dir: Option<PathBuf>,
}

impl ClusterConfig {
    pub fn load(path: &Path) -> Result<ClusterConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading cluster config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing cluster config {}", path.display()))
    }
}
