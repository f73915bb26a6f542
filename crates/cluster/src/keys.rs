//! API keys of the cluster HTTP API, in PostgreSQL so every API process sees the same ones.
//! Only the sha256 of a key is stored; the key is shown once when created. A key has a
//! governance role (admin, investigator, auditor, compliance) and belongs to an organisation
//! (`gov.rs`); what it may do is the policy's decision.

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};
use visage_gallery::gallery::now;
use visage_governance::{Organisation, Principal, Role};

use crate::gov::{org_from_row, ORG_COLS_O};
use crate::pg::Pool;

fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A live key as looked up: its id, name, role and organisation (none for keys made before
/// organisations existed, until given one).
#[derive(Debug, Clone)]
pub struct KeyIdentity {
    pub key_id: i64,
    pub name: String,
    pub role: Role,
    pub org: Option<Organisation>,
}

impl KeyIdentity {
    /// The governance principal of a key with an organisation: `user_id` is the key's id,
    /// `username` `key:NAME` (what the audit log records as the actor).
    pub fn principal(&self) -> Option<Principal> {
        Some(Principal {
            user_id: self.key_id,
            username: format!("key:{}", self.name),
            org: self.org.clone()?,
            role: self.role,
        })
    }
}

/// Creates a key in an organisation; returns it (shown once).
pub fn create(pool: &Pool, name: &str, role: Role, org_id: i64) -> Result<String> {
    if name.trim().is_empty() {
        bail!("a key needs a name");
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("OS randomness: {e}"))?;
    let key = format!("vsk_{}", hex::encode(raw));
    let n = pool.get()?.execute(
        "INSERT INTO api_key (name, key_sha256, role, org_id, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        &[&name, &digest(&key), &role.as_str(), &org_id, &now()],
    )?;
    if n == 0 {
        bail!("a key named {name:?} exists already");
    }
    Ok(key)
}

/// The identity of a live key, with its organisation as it is now.
pub fn lookup(pool: &Pool, key: &str) -> Result<Option<KeyIdentity>> {
    let row = pool.get()?.query_opt(
        &format!(
            "SELECT k.id, k.name, k.role, k.org_id, {ORG_COLS_O} FROM api_key k \
             LEFT JOIN organisation o ON o.id = k.org_id \
             WHERE k.key_sha256 = $1 AND k.revoked_at IS NULL"
        ),
        &[&digest(key)],
    )?;
    let Some(r) = row else { return Ok(None) };
    let role: String = r.get(2);
    let Some(role) = Role::parse(&role) else {
        bail!(
            "key {:?} has an unknown role {role:?}",
            r.get::<_, String>(1)
        );
    };
    let org = match r.get::<_, Option<i64>>(3) {
        Some(_) => Some(org_from_row(&r, 4)?),
        None => None,
    };
    Ok(Some(KeyIdentity {
        key_id: r.get(0),
        name: r.get(1),
        role,
        org,
    }))
}

/// The actor name (`key:NAME`) of key `id`, revoked or not (reports name who opened a case).
pub fn actor_name(pool: &Pool, id: i64) -> Result<Option<String>> {
    Ok(pool
        .get()?
        .query_opt("SELECT name FROM api_key WHERE id = $1", &[&id])?
        .map(|r| format!("key:{}", r.get::<_, String>(0))))
}

pub fn revoke(pool: &Pool, name: &str) -> Result<bool> {
    Ok(pool.get()?.execute(
        "UPDATE api_key SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
        &[&name, &now()],
    )? > 0)
}
