//! API keys of the cluster HTTP API, in PostgreSQL so every API process sees the same ones.
//! Only the sha256 of a key is stored; the key is shown once when created.

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};
use visage_gallery::gallery::now;

use crate::pg::Pool;

pub const ROLES: &[&str] = &["admin", "operator", "viewer"];

fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Creates a key; returns it (shown once).
pub fn create(pool: &Pool, name: &str, role: &str) -> Result<String> {
    if !ROLES.contains(&role) {
        bail!("unknown role {role:?}: one of {}", ROLES.join(", "));
    }
    if name.trim().is_empty() {
        bail!("a key needs a name");
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("OS randomness: {e}"))?;
    let key = format!("vsk_{}", hex::encode(raw));
    let n = pool.get()?.execute(
        "INSERT INTO api_key (name, key_sha256, role, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO NOTHING",
        &[&name, &digest(&key), &role, &now()],
    )?;
    if n == 0 {
        bail!("a key named {name:?} exists already");
    }
    Ok(key)
}

/// The name and role of a live key.
pub fn lookup(pool: &Pool, key: &str) -> Result<Option<(String, String)>> {
    Ok(pool
        .get()?
        .query_opt(
            "SELECT name, role FROM api_key WHERE key_sha256 = $1 AND revoked_at IS NULL",
            &[&digest(key)],
        )?
        .map(|r| (r.get(0), r.get(1))))
}

pub fn revoke(pool: &Pool, name: &str) -> Result<bool> {
    Ok(pool.get()?.execute(
        "UPDATE api_key SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
        &[&name, &now()],
    )? > 0)
}
