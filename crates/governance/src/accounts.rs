//! Organisations, users, API keys, password and key authentication.

use crate::audit::{Actor, AuditEvent};
use crate::error::{AuthError, GovError, Result};
use crate::util::{normalise_jurisdiction, now_s, random_bytes};
use crate::Governance;
use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Defines a closed string enum with stable snake_case names, `as_str`, `parse` and `ALL`.
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = GovError;
            fn from_str(s: &str) -> Result<Self> {
                $name::parse(s).ok_or_else(|| GovError::Invalid(format!(
                    concat!("unknown ", stringify!($name), " '{}'; expected one of: {}"),
                    s,
                    [$($s),+].join(", ")
                )))
            }
        }
    };
}
pub(crate) use string_enum;

string_enum!(
    /// What kind of body an organisation is; the policy decides per kind.
    OrgKind {
        LawEnforcement = "law_enforcement",
        Government = "government",
        Private = "private",
        Research = "research",
    }
);

string_enum!(
    /// Account status; `suspended` organisations can do nothing.
    OrgStatus { Trial = "trial", Active = "active", Suspended = "suspended" }
);

string_enum!(
    /// A user's (and an API key's) role; the policy maps roles to actions.
    Role { Admin = "admin", Investigator = "investigator", Auditor = "auditor", Compliance = "compliance" }
);

/// An organisation (tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organisation {
    pub id: i64,
    pub name: String,
    pub kind: OrgKind,
    /// ISO 3166-1 alpha-2 or ISO 3166-2, upper case ("US-IL").
    pub jurisdiction: String,
    pub status: OrgStatus,
    /// Unix seconds; a `trial` organisation can do nothing from this instant on.
    pub trial_expires_at: Option<i64>,
    /// Searches allowed per calendar month (UTC); `None`: unlimited.
    pub search_quota: Option<u64>,
    pub created_at: i64,
}

/// Input of [`Governance::create_org`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewOrg {
    pub name: String,
    pub kind: OrgKind,
    pub jurisdiction: String,
    pub status: OrgStatus,
    #[serde(default)]
    pub trial_expires_at: Option<i64>,
    #[serde(default)]
    pub search_quota: Option<u64>,
}

impl NewOrg {
    /// Name trimmed (1-200 characters, no control characters), jurisdiction normalised (ISO
    /// 3166), a trial with its expiry, a quota that fits the database. Both governance stores
    /// (this crate's, a cluster's) create organisations from a validated `NewOrg`.
    pub fn validated(&self) -> Result<NewOrg> {
        let name = validate_name("organisation name", &self.name, 200)?;
        let jurisdiction = normalise_jurisdiction(&self.jurisdiction).ok_or_else(|| {
            GovError::Invalid(format!(
                "jurisdiction '{}' is not an ISO 3166-1 alpha-2 or ISO 3166-2 code",
                self.jurisdiction
            ))
        })?;
        if self.status == OrgStatus::Trial && self.trial_expires_at.is_none() {
            return Err(GovError::Invalid(
                "a trial organisation needs trial_expires_at".into(),
            ));
        }
        quota_to_sql(self.search_quota)?;
        Ok(NewOrg {
            name,
            jurisdiction,
            ..self.clone()
        })
    }
}

/// Changes applied by [`Governance::update_org`]; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OrgUpdate {
    #[serde(default)]
    pub status: Option<OrgStatus>,
    /// `Some(None)` clears the expiry.
    #[serde(default)]
    pub trial_expires_at: Option<Option<i64>>,
    /// `Some(None)` removes the quota.
    #[serde(default)]
    pub search_quota: Option<Option<u64>>,
}

impl OrgUpdate {
    /// Applies the change to `org`; a trial organisation needs an expiry.
    pub fn apply(&self, org: &mut Organisation) -> Result<()> {
        if let Some(s) = self.status {
            org.status = s;
        }
        if let Some(t) = self.trial_expires_at {
            org.trial_expires_at = t;
        }
        if let Some(q) = self.search_quota {
            org.search_quota = q;
        }
        if org.status == OrgStatus::Trial && org.trial_expires_at.is_none() {
            return Err(GovError::Invalid(
                "a trial organisation needs trial_expires_at".into(),
            ));
        }
        Ok(())
    }
}

/// A user account (never carries the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub org_id: i64,
    pub username: String,
    pub role: Role,
    pub disabled: bool,
    pub has_password: bool,
    pub created_at: i64,
}

/// An API key as listed (never carries the secret or its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub user_id: i64,
    pub role: Role,
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A newly created API key: `secret` is shown once and stored only as its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewApiKey {
    pub info: ApiKeyInfo,
    /// `vsk_<16 hex key id>_<43 base64url chars of 32 random bytes>`
    pub secret: String,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub user_id: i64,
    pub username: String,
    pub org: Organisation,
    /// The key's role for key authentication, the user's role for password authentication.
    pub role: Role,
}

/// What [`Governance::init_admin`] created; the password is shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitialAdmin {
    pub org: Organisation,
    pub user: User,
    pub password: String,
}

pub const MIN_PASSWORD_CHARS: usize = 12;
const KEY_PREFIX: &str = "vsk_";
const KEY_ID_HEX: usize = 16;
const KEY_SECRET_CHARS: usize = 43;

const ORG_COLS: &str =
    "id, name, kind, jurisdiction, status, trial_expires_at, search_quota, created_at";
const USER_COLS: &str =
    "id, org_id, username, role, disabled, password_hash IS NOT NULL, created_at";
const KEY_COLS: &str = "id, user_id, role, name, created_at, revoked_at";

fn bad_column(idx: usize, what: &str, v: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        idx,
        rusqlite::types::Type::Text,
        format!("unknown {what} '{v}' in database").into(),
    )
}

pub(crate) fn org_from_row(r: &Row) -> rusqlite::Result<Organisation> {
    let kind: String = r.get(2)?;
    let status: String = r.get(4)?;
    let quota: Option<i64> = r.get(6)?;
    Ok(Organisation {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: OrgKind::parse(&kind).ok_or_else(|| bad_column(2, "organisation kind", &kind))?,
        jurisdiction: r.get(3)?,
        status: OrgStatus::parse(&status)
            .ok_or_else(|| bad_column(4, "organisation status", &status))?,
        trial_expires_at: r.get(5)?,
        search_quota: quota.map(|q| q.max(0) as u64),
        created_at: r.get(7)?,
    })
}

fn user_from_row(r: &Row) -> rusqlite::Result<User> {
    let role: String = r.get(3)?;
    Ok(User {
        id: r.get(0)?,
        org_id: r.get(1)?,
        username: r.get(2)?,
        role: Role::parse(&role).ok_or_else(|| bad_column(3, "role", &role))?,
        disabled: r.get(4)?,
        has_password: r.get(5)?,
        created_at: r.get(6)?,
    })
}

fn key_from_row(r: &Row) -> rusqlite::Result<ApiKeyInfo> {
    let role: String = r.get(2)?;
    Ok(ApiKeyInfo {
        id: r.get(0)?,
        user_id: r.get(1)?,
        role: Role::parse(&role).ok_or_else(|| bad_column(2, "role", &role))?,
        name: r.get(3)?,
        created_at: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

/// A display name (key names, labels): trimmed, 1 to `max` characters, no control characters.
pub fn validate_name(what: &str, s: &str, max: usize) -> Result<String> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > max || t.chars().any(char::is_control) {
        return Err(GovError::Invalid(format!(
            "{what} must be 1-{max} characters without control characters"
        )));
    }
    Ok(t.to_string())
}

/// A username: 1 to 64 letters, digits and `. _ - @`.
pub fn validate_username(s: &str) -> Result<String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if !ok {
        return Err(GovError::Invalid(
            "username must be 1-64 characters of letters, digits and . _ - @".into(),
        ));
    }
    Ok(s.to_string())
}

/// An argon2id PHC string of a password of at least [`MIN_PASSWORD_CHARS`] characters.
pub fn hash_password(password: &str) -> Result<String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(GovError::Invalid(format!(
            "password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    let salt_bytes = random_bytes::<16>()?;
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| anyhow::anyhow!("encoding salt: {e}"))?;
    // Argon2id, version 0x13, OWASP-recommended defaults (19 MiB, t=2, p=1).
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))?;
    Ok(hash.to_string())
}

fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// Whether `password` matches the stored PHC string; with none (unknown user, or no password
/// set) a fixed hash is verified anyway, so every answer takes as long, and it is false.
pub fn check_password(password: &str, phc: Option<&str>) -> bool {
    match phc {
        Some(phc) => verify_password(password, phc),
        None => {
            let _ = verify_password(password, dummy_hash());
            false
        }
    }
}

/// A fixed hash verified when the user is unknown, so the answer takes as long either way.
fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let salt = SaltString::encode_b64(b"visage-dummy-salt").expect("static salt");
        Argon2::default()
            .hash_password(b"visage dummy password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

fn key_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Splits `vsk_<id>_<secret>` into the key id, or `Malformed`.
fn parse_key(s: &str) -> Result<&str, AuthError> {
    let rest = s.strip_prefix(KEY_PREFIX).ok_or(AuthError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(AuthError::Malformed)?;
    let id_ok = id.len() == KEY_ID_HEX
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok = secret.len() == KEY_SECRET_CHARS
        && base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(secret)
            .is_ok_and(|b| b.len() == 32);
    if id_ok && secret_ok {
        Ok(id)
    } else {
        Err(AuthError::Malformed)
    }
}

impl Governance {
    /// When no user exists: creates organisation "default" (government, active, in
    /// `jurisdiction`) and user "admin" with a random 20-character password, returned once.
    /// Returns `None` when any user already exists.
    pub fn init_admin(&self, jurisdiction: &str) -> Result<Option<InitialAdmin>> {
        let jurisdiction = normalise_jurisdiction(jurisdiction).ok_or_else(|| {
            GovError::Invalid(format!("'{jurisdiction}' is not an ISO 3166 code"))
        })?;
        let password = crate::util::random_password(20)?;
        let phc = hash_password(&password)?;
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let users: i64 = tx.query_row("SELECT count(*) FROM user", [], |r| r.get(0))?;
        if users > 0 {
            return Ok(None);
        }
        let now = now_s();
        let existing: Option<i64> = tx
            .query_row("SELECT id FROM org WHERE name = 'default'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let org_id = match existing {
            Some(id) => id,
            None => {
                tx.execute(
                    "INSERT INTO org (name, kind, jurisdiction, status, created_at)
                     VALUES ('default', 'government', ?1, 'active', ?2)",
                    params![jurisdiction, now],
                )?;
                tx.last_insert_rowid()
            }
        };
        tx.execute(
            "INSERT INTO user (org_id, username, role, password_hash, created_at)
             VALUES (?1, 'admin', 'admin', ?2, ?3)",
            params![org_id, phc, now],
        )?;
        let user_id = tx.last_insert_rowid();
        let org = tx.query_row(
            &format!("SELECT {ORG_COLS} FROM org WHERE id = ?1"),
            [org_id],
            org_from_row,
        )?;
        let user = tx.query_row(
            &format!("SELECT {USER_COLS} FROM user WHERE id = ?1"),
            [user_id],
            user_from_row,
        )?;
        self.append_tx(
            &tx,
            AuditEvent::admin(&Actor::system(), Some(org_id), "init_admin")
                .objects([format!("org:{org_id}"), format!("user:{user_id}")]),
        )?;
        tx.commit()?;
        Ok(Some(InitialAdmin {
            org,
            user,
            password,
        }))
    }

    // ---- organisations ------------------------------------------------------------------

    pub fn create_org(&self, by: &Actor, new: &NewOrg) -> Result<Organisation> {
        let new = new.validated()?;
        let (name, jurisdiction) = (&new.name, &new.jurisdiction);
        let quota = quota_to_sql(new.search_quota)?;
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO org (name, kind, jurisdiction, status, trial_expires_at, search_quota,
                              created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                name,
                new.kind.as_str(),
                jurisdiction,
                new.status.as_str(),
                new.trial_expires_at,
                quota,
                now_s()
            ],
        )
        .map_err(|e| conflict_or(e, format!("an organisation named '{name}' already exists")))?;
        let id = tx.last_insert_rowid();
        let org = tx.query_row(
            &format!("SELECT {ORG_COLS} FROM org WHERE id = ?1"),
            [id],
            org_from_row,
        )?;
        self.append_tx(
            &tx,
            AuditEvent::admin(by, Some(id), "create_org")
                .objects([format!("org:{id}")])
                .details(serde_json::to_value(&org).context("org to JSON")?),
        )?;
        tx.commit()?;
        Ok(org)
    }

    pub fn get_org(&self, id: i64) -> Result<Organisation> {
        self.db()
            .query_row(
                &format!("SELECT {ORG_COLS} FROM org WHERE id = ?1"),
                [id],
                org_from_row,
            )
            .optional()?
            .ok_or_else(|| GovError::NotFound(format!("no organisation {id}")))
    }

    pub fn get_org_by_name(&self, name: &str) -> Result<Organisation> {
        self.db()
            .query_row(
                &format!("SELECT {ORG_COLS} FROM org WHERE name = ?1"),
                [name],
                org_from_row,
            )
            .optional()?
            .ok_or_else(|| GovError::NotFound(format!("no organisation named '{name}'")))
    }

    pub fn list_orgs(&self) -> Result<Vec<Organisation>> {
        let conn = self.db();
        let mut st = conn.prepare(&format!("SELECT {ORG_COLS} FROM org ORDER BY id"))?;
        let rows = st
            .query_map([], org_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Changes status, trial expiry and/or quota.
    pub fn update_org(&self, by: &Actor, id: i64, update: &OrgUpdate) -> Result<Organisation> {
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut org = tx
            .query_row(
                &format!("SELECT {ORG_COLS} FROM org WHERE id = ?1"),
                [id],
                org_from_row,
            )
            .optional()?
            .ok_or_else(|| GovError::NotFound(format!("no organisation {id}")))?;
        update.apply(&mut org)?;
        tx.execute(
            "UPDATE org SET status = ?2, trial_expires_at = ?3, search_quota = ?4 WHERE id = ?1",
            params![
                id,
                org.status.as_str(),
                org.trial_expires_at,
                quota_to_sql(org.search_quota)?
            ],
        )?;
        self.append_tx(
            &tx,
            AuditEvent::admin(by, Some(id), "update_org")
                .objects([format!("org:{id}")])
                .details(serde_json::to_value(update).context("update to JSON")?),
        )?;
        tx.commit()?;
        Ok(org)
    }

    /// Shorthand for [`Governance::update_org`] with only a status.
    pub fn set_org_status(&self, by: &Actor, id: i64, status: OrgStatus) -> Result<Organisation> {
        self.update_org(
            by,
            id,
            &OrgUpdate {
                status: Some(status),
                ..Default::default()
            },
        )
    }

    // ---- users --------------------------------------------------------------------------

    /// Creates a user; `password` may be `None` for key-only accounts.
    pub fn create_user(
        &self,
        by: &Actor,
        org_id: i64,
        username: &str,
        role: Role,
        password: Option<&str>,
    ) -> Result<User> {
        let username = validate_username(username)?;
        let phc = password.map(hash_password).transpose()?;
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let org_exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM org WHERE id = ?1)",
            [org_id],
            |r| r.get(0),
        )?;
        if !org_exists {
            return Err(GovError::NotFound(format!("no organisation {org_id}")));
        }
        tx.execute(
            "INSERT INTO user (org_id, username, role, password_hash, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![org_id, username, role.as_str(), phc, now_s()],
        )
        .map_err(|e| conflict_or(e, format!("a user named '{username}' already exists")))?;
        let id = tx.last_insert_rowid();
        let user = tx.query_row(
            &format!("SELECT {USER_COLS} FROM user WHERE id = ?1"),
            [id],
            user_from_row,
        )?;
        self.append_tx(
            &tx,
            AuditEvent::admin(by, Some(org_id), "create_user")
                .objects([format!("user:{id}")])
                .details(serde_json::json!({"username": username, "role": role})),
        )?;
        tx.commit()?;
        Ok(user)
    }

    pub fn get_user(&self, id: i64) -> Result<User> {
        self.db()
            .query_row(
                &format!("SELECT {USER_COLS} FROM user WHERE id = ?1"),
                [id],
                user_from_row,
            )
            .optional()?
            .ok_or_else(|| GovError::NotFound(format!("no user {id}")))
    }

    /// Users of one organisation, or of all when `org_id` is `None`.
    pub fn list_users(&self, org_id: Option<i64>) -> Result<Vec<User>> {
        let conn = self.db();
        let mut st = conn.prepare(&format!(
            "SELECT {USER_COLS} FROM user WHERE ?1 IS NULL OR org_id = ?1 ORDER BY id"
        ))?;
        let rows = st
            .query_map([org_id], user_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Disables (or re-enables) a user; a disabled user's keys and password stop working.
    pub fn set_user_disabled(&self, by: &Actor, user_id: i64, disabled: bool) -> Result<User> {
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE user SET disabled = ?2 WHERE id = ?1",
            params![user_id, disabled],
        )?;
        if n == 0 {
            return Err(GovError::NotFound(format!("no user {user_id}")));
        }
        let user = tx.query_row(
            &format!("SELECT {USER_COLS} FROM user WHERE id = ?1"),
            [user_id],
            user_from_row,
        )?;
        let action = if disabled {
            "disable_user"
        } else {
            "enable_user"
        };
        self.append_tx(
            &tx,
            AuditEvent::admin(by, Some(user.org_id), action).objects([format!("user:{user_id}")]),
        )?;
        tx.commit()?;
        Ok(user)
    }

    /// Sets (replaces) a user's password; at least [`MIN_PASSWORD_CHARS`] characters.
    pub fn set_password(&self, by: &Actor, user_id: i64, password: &str) -> Result<()> {
        let phc = hash_password(password)?;
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let org_id: Option<i64> = tx
            .query_row("SELECT org_id FROM user WHERE id = ?1", [user_id], |r| {
                r.get(0)
            })
            .optional()?;
        let org_id = org_id.ok_or_else(|| GovError::NotFound(format!("no user {user_id}")))?;
        tx.execute(
            "UPDATE user SET password_hash = ?2 WHERE id = ?1",
            params![user_id, phc],
        )?;
        self.append_tx(
            &tx,
            AuditEvent::admin(by, Some(org_id), "set_password")
                .objects([format!("user:{user_id}")]),
        )?;
        tx.commit()?;
        Ok(())
    }

    // ---- API keys -----------------------------------------------------------------------

    /// Creates an API key for `user_id`. The key's role is the user's role; `role` may name a
    /// different one only when the user is an admin (e.g. an auditor key for a script).
    pub fn create_api_key(
        &self,
        by: &Actor,
        user_id: i64,
        name: &str,
        role: Option<Role>,
    ) -> Result<NewApiKey> {
        let name = validate_name("key name", name, 200)?;
        let user = self.get_user(user_id)?;
        let role = role.unwrap_or(user.role);
        if role != user.role && user.role != Role::Admin {
            return Err(GovError::Invalid(format!(
                "a {} user cannot hold a {} key",
                user.role, role
            )));
        }
        let id = hex::encode(random_bytes::<8>()?);
        let secret_part =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
        let secret = format!("{KEY_PREFIX}{id}_{secret_part}");
        debug_assert!(parse_key(&secret).is_ok());
        let digest = key_digest(&secret);
        let now = now_s();
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO api_key (id, user_id, role, name, secret_sha256, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, user_id, role.as_str(), name, &digest[..], now],
        )?;
        self.append_tx(
            &tx,
            AuditEvent::admin(by, Some(user.org_id), "create_api_key")
                .objects([format!("api_key:{id}"), format!("user:{user_id}")])
                .details(serde_json::json!({"name": name, "role": role})),
        )?;
        tx.commit()?;
        let info = ApiKeyInfo {
            id,
            user_id,
            role,
            name,
            created_at: now,
            revoked_at: None,
        };
        Ok(NewApiKey { info, secret })
    }

    /// Keys of one user, or all keys when `user_id` is `None`.
    pub fn list_api_keys(&self, user_id: Option<i64>) -> Result<Vec<ApiKeyInfo>> {
        let conn = self.db();
        let mut st = conn.prepare(&format!(
            "SELECT {KEY_COLS} FROM api_key WHERE ?1 IS NULL OR user_id = ?1 ORDER BY created_at, id"
        ))?;
        let rows = st
            .query_map([user_id], key_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Revokes a key (idempotent: revoking twice keeps the first time).
    pub fn revoke_api_key(&self, by: &Actor, key_id: &str) -> Result<ApiKeyInfo> {
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE api_key SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
            params![key_id, now_s()],
        )?;
        if n == 0 {
            return Err(GovError::NotFound(format!("no API key {key_id}")));
        }
        let info = tx.query_row(
            &format!("SELECT {KEY_COLS} FROM api_key WHERE id = ?1"),
            [key_id],
            key_from_row,
        )?;
        let org_id: i64 = tx.query_row(
            "SELECT org_id FROM user WHERE id = ?1",
            [info.user_id],
            |r| r.get(0),
        )?;
        self.append_tx(
            &tx,
            AuditEvent::admin(by, Some(org_id), "revoke_api_key")
                .objects([format!("api_key:{key_id}")]),
        )?;
        tx.commit()?;
        Ok(info)
    }

    // ---- authentication -----------------------------------------------------------------

    /// Authenticates an API key string: lookup by key id, then a constant-time comparison of
    /// the SHA-256 of the presented key with the stored one.
    pub fn authenticate_key(&self, key: &str) -> Result<Principal, AuthError> {
        let id = parse_key(key)?;
        let conn = self.db();
        let row: Option<(Vec<u8>, Option<i64>, String, i64)> = conn
            .query_row(
                "SELECT secret_sha256, revoked_at, role, user_id FROM api_key WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let (stored, revoked_at, role, user_id) = row.ok_or(AuthError::UnknownKey)?;
        let presented = key_digest(key);
        if !bool::from(presented.as_slice().ct_eq(stored.as_slice())) {
            return Err(AuthError::WrongSecret);
        }
        if revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        let role =
            Role::parse(&role).ok_or_else(|| AuthError::Internal(format!("bad role {role}")))?;
        principal_for(&conn, user_id, Some(role))
    }

    /// Authenticates a username and password (argon2id).
    pub fn authenticate_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Principal, AuthError> {
        let row: Option<(i64, Option<String>)> = self
            .db()
            .query_row(
                "SELECT id, password_hash FROM user WHERE username = ?1",
                [username],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        // Verify outside the database lock: argon2 takes tens of milliseconds on purpose.
        let Some((user_id, phc)) = row else {
            let _ = verify_password(password, dummy_hash());
            return Err(AuthError::UnknownUser);
        };
        let Some(phc) = phc else {
            let _ = verify_password(password, dummy_hash());
            return Err(AuthError::WrongPassword);
        };
        if !verify_password(password, &phc) {
            return Err(AuthError::WrongPassword);
        }
        principal_for(&self.db(), user_id, None)
    }
}

/// Loads the principal for `user_id` (refusing disabled users), with the key's role if any.
fn principal_for(
    conn: &rusqlite::Connection,
    user_id: i64,
    key_role: Option<Role>,
) -> Result<Principal, AuthError> {
    let user = conn
        .query_row(
            &format!("SELECT {USER_COLS} FROM user WHERE id = ?1"),
            [user_id],
            user_from_row,
        )
        .optional()?
        .ok_or(AuthError::UnknownUser)?;
    if user.disabled {
        return Err(AuthError::Disabled);
    }
    let org = conn.query_row(
        &format!("SELECT {ORG_COLS} FROM org WHERE id = ?1"),
        [user.org_id],
        org_from_row,
    )?;
    Ok(Principal {
        user_id,
        username: user.username,
        org,
        role: key_role.unwrap_or(user.role),
    })
}

fn quota_to_sql(q: Option<u64>) -> Result<Option<i64>> {
    q.map(|q| i64::try_from(q).map_err(|_| GovError::Invalid("search_quota too large".into())))
        .transpose()
}

fn conflict_or(e: rusqlite::Error, msg: String) -> GovError {
    match GovError::from(e) {
        GovError::Conflict(_) => GovError::Conflict(msg),
        other => other,
    }
}
