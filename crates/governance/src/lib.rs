//! Governance for visage: organisations, users, API keys, the policy file and authorisation,
//! cases, the hash-chained and signed audit log, signed receipts, and changes to other stores
//! announced before they are made (`pending_change`: an erasure is never left unrecorded).
//!
//! Synchronous and storage-only: one SQLite file (`governance.sqlite`) and one Ed25519 key
//! (`audit-signing.key`) in a directory. [`Governance`] is `Send + Sync`; its connection sits
//! behind a mutex and writes use IMMEDIATE transactions, so several processes may share the
//! directory too.

mod accounts;
mod audit;
mod cases;
mod error;
mod pending;
mod policy;
mod receipt;
mod schema;
mod util;

pub use accounts::{
    check_password, hash_password, validate_name, validate_username, ApiKeyInfo, InitialAdmin,
    NewApiKey, NewOrg, OrgKind, OrgStatus, OrgUpdate, Organisation, Principal, Role, User,
    MIN_PASSWORD_CHARS,
};
/// A seq range as inclusive SQL bounds, for other audit stores (the cluster's PostgreSQL log).
pub use audit::range_to_sql as audit_range_to_sql;
pub use audit::{
    checkpoint_message, verify_with_public_key, Actor, AuditEvent, AuditRecord, BadRecord,
    Checkpoint, ExportSummary, ExportWriter, TamperKind, VerifyReport, CHECKPOINT_INTERVAL,
    GENESIS_HASH,
};
pub use cases::{format_utc_ms, Case, CaseReport, CaseSearch, CaseStatus, NewCase};
pub use error::{AuthError, GovError, PolicyError, Result};
pub use pending::{PendingChange, ReceiptOrder};
pub use policy::{
    decide, policy_file, quota_for, Action, ActionPattern, AuthzContext, AuthzFacts, DataPolicy,
    Decision, Effect, Jurisdiction, Policy, Rule, SearchPolicy, DEFAULT_POLICY_TOML, POLICY_FILE,
};
pub use receipt::{Receipt, ReceiptError};
pub use util::{canonical_json, jurisdiction_matches, normalise_jurisdiction};

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use rusqlite::Connection;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// File names inside the governance directory.
pub const DB_FILE: &str = "governance.sqlite";
pub const KEY_FILE: &str = "audit-signing.key";

/// The governance store of one installation.
pub struct Governance {
    conn: Mutex<Connection>,
    signing: SigningKey,
    policy: RwLock<Arc<Policy>>,
    dir: PathBuf,
}

impl std::fmt::Debug for Governance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governance")
            .field("dir", &self.dir)
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl Governance {
    /// Opens (creating when absent) `dir/governance.sqlite` and `dir/audit-signing.key`, with
    /// the shipped default policy in force.
    pub fn open(dir: &Path) -> Result<Governance> {
        Self::open_with_policy(dir, Policy::default_policy())
    }

    /// As [`Governance::open`], with `policy` in force.
    pub fn open_with_policy(dir: &Path, policy: Policy) -> Result<Governance> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating governance directory {}", dir.display()))?;
        let signing = load_or_create_key(&dir.join(KEY_FILE))?;
        let path = dir.join(DB_FILE);
        let mut conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        schema::configure(&conn)?;
        schema::migrate(&mut conn)?;
        Ok(Governance {
            conn: Mutex::new(conn),
            signing,
            policy: RwLock::new(Arc::new(policy)),
            dir: dir.to_path_buf(),
        })
    }

    /// The directory holding the database and key.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the SQLite database.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join(DB_FILE)
    }

    /// This installation's Ed25519 public key (hex): give it to auditors for offline checks.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().to_bytes())
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back on
        // drop), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads the 32-byte Ed25519 seed (64 hex digits), or creates it: written to a temporary file
/// with mode 0600, synced, then hard-linked into place (fails if another process won the
/// race, whose key is then read), so the key file is never seen half-written. Public for
/// other audit stores that sign checkpoints (the cluster's shared `audit_key_file`).
pub fn load_or_create_key(path: &Path) -> anyhow::Result<SigningKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => return parse_key_file(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let seed = util::random_bytes::<32>()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{KEY_FILE}.{}.tmp",
        hex::encode(util::random_bytes::<6>()?)
    ));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(format!("{}\n", hex::encode(seed)).as_bytes())?;
        f.sync_all()?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path)?;
            parse_key_file(path, &text)
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

fn parse_key_file(path: &Path, text: &str) -> anyhow::Result<SigningKey> {
    let bytes = hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok());
    match bytes {
        Some(seed) => Ok(SigningKey::from_bytes(&seed)),
        None => bail!(
            "{} is not a visage audit signing key (64 hex digits)",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn governance_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Governance>();
    }

    #[test]
    fn default_policy_parses() {
        let p = Policy::default_policy();
        assert!(p.rules.len() >= 5);
        assert_eq!(p.default_effect, Effect::Deny);
    }

    #[test]
    fn key_file_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Governance::open(dir.path()).unwrap().public_key_hex();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let b = Governance::open(dir.path()).unwrap().public_key_hex();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
    }
}
