//! API keys of the cluster HTTP API, in PostgreSQL so every API process sees the same ones.
//! Only the sha256 of a key is stored; the key is shown once when created. A key has a
//! governance role (admin, investigator, auditor, compliance) and belongs to an organisation
//! (`gov.rs`); what it may do is the policy's decision. A key may instead be owned by a user
//! (`accounts.rs`): it then acts as that user, with the key's role.

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};
use visage_gallery::gallery::now;
use visage_governance::{Organisation, Principal, Role};

use crate::gov::{org_from_row, ORG_COLS_O};
use crate::pg::Pool;

/// The hex SHA-256 stored for a key or session token.
pub(crate) fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Who calls the cluster API: a live key (its id, name, role and organisation: none for keys
/// made before organisations existed, until given one), or a user (signed in, or through a
/// key the user owns: the user's id and name, the role in force, the user's organisation).
#[derive(Debug, Clone)]
pub struct KeyIdentity {
    /// The principal id: the key's id, or the user's (one sequence, so they never collide).
    pub key_id: i64,
    pub name: String,
    pub role: Role,
    pub org: Option<Organisation>,
    /// A user account rather than a key of its own.
    pub user: bool,
}

impl KeyIdentity {
    /// The governance principal of a key with an organisation: `user_id` is the key's id,
    /// `username` `key:NAME` (what the audit log records as the actor); of a user, the user.
    pub fn principal(&self) -> Option<Principal> {
        Some(Principal {
            user_id: self.key_id,
            username: if self.user {
                self.name.clone()
            } else {
                format!("key:{}", self.name)
            },
            org: self.org.clone()?,
            role: self.role,
        })
    }
}

/// A new key (`vsk_` and 64 hex digits of 32 random bytes) and the SHA-256 stored for it.
pub fn new_secret() -> Result<(String, String)> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("OS randomness: {e}"))?;
    let key = format!("vsk_{}", hex::encode(raw));
    let sha = digest(&key);
    Ok((key, sha))
}

/// Creates a key in an organisation; returns it (shown once).
pub fn create(pool: &Pool, name: &str, role: Role, org_id: i64) -> Result<String> {
    if name.trim().is_empty() {
        bail!("a key needs a name");
    }
    let (key, sha) = new_secret()?;
    let n = pool.get()?.execute(
        "INSERT INTO api_key (name, key_sha256, role, org_id, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        &[&name, &sha, &role.as_str(), &org_id, &now()],
    )?;
    if n == 0 {
        bail!("a key named {name:?} exists already");
    }
    Ok(key)
}

/// The identity of a live key, with its organisation as it is now; a key owned by a user
/// acts as the user (none while the user is disabled). One query: this runs on every request.
pub fn lookup(pool: &Pool, key: &str) -> Result<Option<KeyIdentity>> {
    let row = pool.get()?.query_opt(
        &format!(
            "SELECT k.id, k.name, k.role, k.user_id, u.username, u.disabled, {ORG_COLS_O} \
             FROM api_key k LEFT JOIN app_user u ON u.id = k.user_id \
             LEFT JOIN organisation o ON o.id = COALESCE(u.org_id, k.org_id) \
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
    let org = match r.get::<_, Option<i64>>(6) {
        Some(_) => Some(org_from_row(&r, 6)?),
        None => None,
    };
    // A user's key: the user, with the key's role.
    if let Some(user_id) = r.get::<_, Option<i64>>(3) {
        if r.get::<_, bool>(5) {
            return Ok(None);
        }
        return Ok(Some(KeyIdentity {
            key_id: user_id,
            name: r.get(4),
            role,
            org,
            user: true,
        }));
    }
    Ok(Some(KeyIdentity {
        key_id: r.get(0),
        name: r.get(1),
        role,
        org,
        user: false,
    }))
}

/// The actor name of principal `id`: `key:NAME` for a key of its own, revoked or not, or
/// the username (reports name who opened a case).
pub fn actor_name(pool: &Pool, id: i64) -> Result<Option<String>> {
    Ok(pool
        .get()?
        .query_opt(
            "SELECT 'key:' || name FROM api_key WHERE id = $1 AND user_id IS NULL \
             UNION ALL SELECT username FROM app_user WHERE id = $1",
            &[&id],
        )?
        .map(|r| r.get::<_, String>(0)))
}

pub fn revoke(pool: &Pool, name: &str) -> Result<bool> {
    Ok(pool.get()?.execute(
        "UPDATE api_key SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
        &[&name, &now()],
    )? > 0)
}
