//! User accounts of the cluster API in PostgreSQL (migration 8), the embedded server's model
//! (`visage_governance` accounts) on shared rows so every API process sees them:
//!
//! - users belong to an organisation, have a role and optionally a password (argon2id, the
//!   governance crate's `hash_password` / `check_password`), and may be disabled;
//! - `POST /v1/auth/login` sessions: 32 random bytes, only their SHA-256 stored
//!   (`web_session`), 12 hours;
//! - keys owned by a user (`api_key.user_id`) act as that user with the key's role, and stop
//!   working while the user is disabled. Keys made with `visage cluster add-key` belong to
//!   an organisation directly (`keys.rs`).
//!
//! A user's id comes from the keys' sequence, so a principal id names one key or one user.
//! Every change commits in one transaction with its audit record, as on the embedded server.

use base64::Engine as _;
use postgres::Row;
use visage_gallery::gallery::now;
use visage_governance::{
    check_password, hash_password, validate_name, validate_username, Actor, ApiKeyInfo, AuditEvent,
    AuthError, GovError, NewApiKey, Result, Role, User,
};

use crate::audit::PgAudit;
use crate::gov::{internal, org_from_row, pg_err, ORG_COLS_O};
use crate::keys::{digest, KeyIdentity};
use crate::pg::Pool;

/// How long a session lasts after login (as the embedded server).
pub const SESSION_TTL_S: i64 = 12 * 3600;

const USER_COLS: &str =
    "id, org_id, username, role, disabled, password_hash IS NOT NULL, created_at";

fn role_of(s: &str) -> Result<Role> {
    Role::parse(s).ok_or_else(|| internal(anyhow::anyhow!("unknown role {s:?} in the database")))
}

fn user_row(r: &Row) -> Result<User> {
    Ok(User {
        id: r.get(0),
        org_id: r.get(1),
        username: r.get(2),
        role: role_of(r.get(3))?,
        disabled: r.get(4),
        has_password: r.get(5),
        created_at: r.get(6),
    })
}

fn random_token() -> Result<String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| internal(anyhow::anyhow!("OS randomness: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// Creates a user in an organisation (a password of at least 12 characters, or none for a
/// key-only account); `Conflict` when the username is taken.
pub fn create_user(
    pool: &Pool,
    audit: &PgAudit,
    by: &Actor,
    org_id: i64,
    username: &str,
    role: Role,
    password: Option<&str>,
) -> Result<User> {
    let username = validate_username(username)?;
    let phc = password.map(hash_password).transpose()?;
    let mut c = pool.get().map_err(internal)?;
    let mut tx = c.transaction().map_err(internal)?;
    if tx
        .query_opt("SELECT 1 FROM organisation WHERE id = $1", &[&org_id])
        .map_err(internal)?
        .is_none()
    {
        return Err(GovError::NotFound(format!("no organisation {org_id}")));
    }
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO app_user (org_id, username, role, password_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING {USER_COLS}"
            ),
            &[&org_id, &username, &role.as_str(), &phc, &now()],
        )
        .map_err(|e| pg_err(e, || format!("a user named '{username}' already exists")))?;
    let user = user_row(&row)?;
    audit
        .append_in(
            &mut tx,
            AuditEvent::admin(by, Some(org_id), "create_user")
                .objects([format!("user:{}", user.id)])
                .details(serde_json::json!({"username": user.username, "role": role})),
        )
        .map_err(internal)?;
    tx.commit().map_err(internal)?;
    Ok(user)
}

pub fn get_user(pool: &Pool, id: i64) -> Result<User> {
    let row = pool
        .get()
        .map_err(internal)?
        .query_opt(
            &format!("SELECT {USER_COLS} FROM app_user WHERE id = $1"),
            &[&id],
        )
        .map_err(internal)?
        .ok_or_else(|| GovError::NotFound(format!("no user {id}")))?;
    user_row(&row)
}

/// The user named `username`.
pub fn user_by_name(pool: &Pool, username: &str) -> Result<User> {
    let row = pool
        .get()
        .map_err(internal)?
        .query_opt(
            &format!("SELECT {USER_COLS} FROM app_user WHERE username = $1"),
            &[&username],
        )
        .map_err(internal)?
        .ok_or_else(|| GovError::NotFound(format!("no user named '{username}'")))?;
    user_row(&row)
}

/// Users of one organisation, or of all when `org_id` is `None`, by id.
pub fn list_users(pool: &Pool, org_id: Option<i64>) -> Result<Vec<User>> {
    pool.get()
        .map_err(internal)?
        .query(
            &format!(
                "SELECT {USER_COLS} FROM app_user WHERE $1::BIGINT IS NULL OR org_id = $1 \
                 ORDER BY id"
            ),
            &[&org_id],
        )
        .map_err(internal)?
        .iter()
        .map(user_row)
        .collect()
}

/// Disables (or re-enables) a user. Disabling ends the user's sessions; their keys and
/// password stop working on the next request.
pub fn set_user_disabled(
    pool: &Pool,
    audit: &PgAudit,
    by: &Actor,
    id: i64,
    disabled: bool,
) -> Result<User> {
    let mut c = pool.get().map_err(internal)?;
    let mut tx = c.transaction().map_err(internal)?;
    let row = tx
        .query_opt(
            &format!("UPDATE app_user SET disabled = $2 WHERE id = $1 RETURNING {USER_COLS}"),
            &[&id, &disabled],
        )
        .map_err(internal)?
        .ok_or_else(|| GovError::NotFound(format!("no user {id}")))?;
    let user = user_row(&row)?;
    if disabled {
        tx.execute("DELETE FROM web_session WHERE user_id = $1", &[&id])
            .map_err(internal)?;
    }
    let action = if disabled {
        "disable_user"
    } else {
        "enable_user"
    };
    audit
        .append_in(
            &mut tx,
            AuditEvent::admin(by, Some(user.org_id), action).objects([format!("user:{id}")]),
        )
        .map_err(internal)?;
    tx.commit().map_err(internal)?;
    Ok(user)
}

/// Sets (replaces) a user's password and ends their sessions.
pub fn set_password(
    pool: &Pool,
    audit: &PgAudit,
    by: &Actor,
    id: i64,
    password: &str,
) -> Result<()> {
    let phc = hash_password(password)?;
    let mut c = pool.get().map_err(internal)?;
    let mut tx = c.transaction().map_err(internal)?;
    let org_id: i64 = tx
        .query_opt(
            "UPDATE app_user SET password_hash = $2 WHERE id = $1 RETURNING org_id",
            &[&id, &phc],
        )
        .map_err(internal)?
        .ok_or_else(|| GovError::NotFound(format!("no user {id}")))?
        .get(0);
    tx.execute("DELETE FROM web_session WHERE user_id = $1", &[&id])
        .map_err(internal)?;
    audit
        .append_in(
            &mut tx,
            AuditEvent::admin(by, Some(org_id), "set_password").objects([format!("user:{id}")]),
        )
        .map_err(internal)?;
    tx.commit().map_err(internal)?;
    Ok(())
}

// ---- keys owned by users -----------------------------------------------------------------

const KEY_COLS: &str =
    "k.id, COALESCE(k.user_id, k.id), k.role, k.name, k.created_at, k.revoked_at";

fn key_row(r: &Row) -> Result<ApiKeyInfo> {
    Ok(ApiKeyInfo {
        id: r.get::<_, i64>(0).to_string(),
        user_id: r.get(1),
        role: role_of(r.get(2))?,
        name: r.get(3),
        created_at: r.get(4),
        revoked_at: r.get(5),
    })
}

/// The stored name of a user's key: `USERNAME/LABEL` (key names are unique in the cluster,
/// so one user's label does not take another user's).
fn owned_key_name(username: &str, label: &str) -> String {
    format!("{username}/{label}")
}

/// Creates a key for a user. Its role is the user's; another only for admin users (e.g. an
/// auditor key for a script). The secret (`vsk_...`) is in the answer only.
pub fn create_user_key(
    pool: &Pool,
    audit: &PgAudit,
    by: &Actor,
    user_id: i64,
    label: &str,
    role: Option<Role>,
) -> Result<NewApiKey> {
    let label = validate_name("key name", label, 200)?;
    let user = get_user(pool, user_id)?;
    let role = role.unwrap_or(user.role);
    if role != user.role && user.role != Role::Admin {
        return Err(GovError::Invalid(format!(
            "a {} user cannot hold a {} key",
            user.role, role
        )));
    }
    let (secret, digest) = crate::keys::new_secret().map_err(internal)?;
    let name = owned_key_name(&user.username, &label);
    let mut c = pool.get().map_err(internal)?;
    let mut tx = c.transaction().map_err(internal)?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO api_key AS k (name, key_sha256, role, org_id, user_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {KEY_COLS}"
            ),
            &[
                &name,
                &digest,
                &role.as_str(),
                &user.org_id,
                &user_id,
                &now(),
            ],
        )
        .map_err(|e| {
            pg_err(e, || {
                format!("user {user_id} already has a key named '{label}'")
            })
        })?;
    let info = key_row(&row)?;
    audit
        .append_in(
            &mut tx,
            AuditEvent::admin(by, Some(user.org_id), "create_api_key")
                .objects([format!("api_key:{}", info.id), format!("user:{user_id}")])
                .details(serde_json::json!({"name": label, "role": role})),
        )
        .map_err(internal)?;
    tx.commit().map_err(internal)?;
    Ok(NewApiKey { info, secret })
}

/// Keys (never secrets) of one user, of one organisation (its users' keys and the keys made
/// for it on the command line), or all. A key without a user lists its own id as `user_id`
/// (the principal id it acts as).
pub fn list_keys(
    pool: &Pool,
    user_id: Option<i64>,
    org_id: Option<i64>,
) -> Result<Vec<ApiKeyInfo>> {
    pool.get()
        .map_err(internal)?
        .query(
            &format!(
                "SELECT {KEY_COLS} FROM api_key k LEFT JOIN app_user u ON u.id = k.user_id \
                 WHERE ($1::BIGINT IS NULL OR k.user_id = $1) \
                 AND ($2::BIGINT IS NULL OR COALESCE(u.org_id, k.org_id) = $2) \
                 ORDER BY k.created_at, k.id"
            ),
            &[&user_id, &org_id],
        )
        .map_err(internal)?
        .iter()
        .map(key_row)
        .collect()
}

/// The organisation a key acts for (its user's, or its own), if the key exists.
pub fn key_org(pool: &Pool, key_id: i64) -> Result<Option<i64>> {
    Ok(pool
        .get()
        .map_err(internal)?
        .query_opt(
            "SELECT COALESCE(u.org_id, k.org_id) FROM api_key k \
             LEFT JOIN app_user u ON u.id = k.user_id WHERE k.id = $1",
            &[&key_id],
        )
        .map_err(internal)?
        .and_then(|r| r.get(0)))
}

/// Revokes a key (idempotent: revoking twice keeps the first time).
pub fn revoke_key(pool: &Pool, audit: &PgAudit, by: &Actor, key_id: i64) -> Result<ApiKeyInfo> {
    let org_id = key_org(pool, key_id)?;
    let mut c = pool.get().map_err(internal)?;
    let mut tx = c.transaction().map_err(internal)?;
    let row = tx
        .query_opt(
            &format!(
                "UPDATE api_key AS k SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
                 RETURNING {KEY_COLS}"
            ),
            &[&key_id, &now()],
        )
        .map_err(internal)?
        .ok_or_else(|| GovError::NotFound(format!("no API key {key_id}")))?;
    let info = key_row(&row)?;
    audit
        .append_in(
            &mut tx,
            AuditEvent::admin(by, org_id, "revoke_api_key").objects([format!("api_key:{key_id}")]),
        )
        .map_err(internal)?;
    tx.commit().map_err(internal)?;
    Ok(info)
}

// ---- authentication -----------------------------------------------------------------------

const IDENTITY_COLS: &str = "u.id, u.username, u.role, u.disabled";

/// The identity of a user row read with [`IDENTITY_COLS`] then [`ORG_COLS_O`]; `None` when
/// the user is disabled.
fn user_identity(r: &Row) -> Result<Option<KeyIdentity>> {
    if r.get::<_, bool>(3) {
        return Ok(None);
    }
    Ok(Some(KeyIdentity {
        key_id: r.get(0),
        name: r.get(1),
        role: role_of(r.get(2))?,
        org: Some(org_from_row(r, 4).map_err(internal)?),
        user: true,
    }))
}

/// A username and password: the user's identity, or why not (a disabled user, an unknown
/// one, a wrong or missing password: argon2 runs in every case, so all take as long).
pub fn authenticate_password(
    pool: &Pool,
    username: &str,
    password: &str,
) -> std::result::Result<KeyIdentity, AuthError> {
    let row = pool
        .get()
        .and_then(|mut c| {
            Ok(c.query_opt(
                &format!(
                    "SELECT {IDENTITY_COLS}, {ORG_COLS_O}, u.password_hash FROM app_user u \
                     JOIN organisation o ON o.id = u.org_id WHERE u.username = $1"
                ),
                &[&username],
            )?)
        })
        .map_err(|e| AuthError::Internal(format!("{e:#}")))?;
    let Some(row) = row else {
        check_password(password, None);
        return Err(AuthError::UnknownUser);
    };
    let phc: Option<String> = row.get(12);
    if !check_password(password, phc.as_deref()) {
        return Err(AuthError::WrongPassword);
    }
    user_identity(&row)
        .map_err(|e| AuthError::Internal(format!("{e:#}")))?
        .ok_or(AuthError::Disabled)
}

/// Starts a session for a user: the token for the cookie (only its SHA-256 is stored).
/// Expired sessions are cleared on the way.
pub fn create_session(pool: &Pool, user_id: i64) -> Result<String> {
    let token = random_token()?;
    let mut c = pool.get().map_err(internal)?;
    c.execute("DELETE FROM web_session WHERE expires_at <= $1", &[&now()])
        .map_err(internal)?;
    c.execute(
        "INSERT INTO web_session (token_sha256, user_id, expires_at) VALUES ($1, $2, $3)",
        &[&digest(&token), &user_id, &(now() + SESSION_TTL_S)],
    )
    .map_err(internal)?;
    Ok(token)
}

/// The identity of a live session's user, as the user is now (`None`: unknown or expired
/// token, or the user is disabled).
pub fn session_identity(pool: &Pool, token: &str) -> anyhow::Result<Option<KeyIdentity>> {
    let row = pool.get()?.query_opt(
        &format!(
            "SELECT {IDENTITY_COLS}, {ORG_COLS_O} FROM web_session s \
             JOIN app_user u ON u.id = s.user_id JOIN organisation o ON o.id = u.org_id \
             WHERE s.token_sha256 = $1 AND s.expires_at > $2"
        ),
        &[&digest(token), &now()],
    )?;
    match row {
        Some(r) => Ok(user_identity(&r)?),
        None => Ok(None),
    }
}

/// Ends a session (nothing when the token is unknown).
pub fn end_session(pool: &Pool, token: &str) -> anyhow::Result<()> {
    pool.get()?.execute(
        "DELETE FROM web_session WHERE token_sha256 = $1",
        &[&digest(token)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_url_safe() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(digest("x").len(), 64);
    }

    #[test]
    fn owned_key_names_carry_the_user() {
        assert_eq!(owned_key_name("ana", "script"), "ana/script");
    }
}
