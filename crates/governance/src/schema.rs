//! SQLite schema of `governance.sqlite` and its versioned migrations (`PRAGMA user_version`).

use anyhow::{bail, Context, Result};
use rusqlite::Connection;

/// Migration `i` brings the schema from version `i` to `i + 1`. Append only; never edit a
/// migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: accounts, cases, audit log, checkpoints, receipts.
    r#"
    CREATE TABLE org (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        name             TEXT NOT NULL UNIQUE,
        kind             TEXT NOT NULL CHECK (kind IN
                             ('law_enforcement', 'government', 'private', 'research')),
        jurisdiction     TEXT NOT NULL,          -- ISO 3166-1 alpha-2 or ISO 3166-2, upper case
        status           TEXT NOT NULL CHECK (status IN ('trial', 'active', 'suspended')),
        trial_expires_at INTEGER,                -- unix seconds
        search_quota     INTEGER CHECK (search_quota IS NULL OR search_quota >= 0),
        created_at       INTEGER NOT NULL
    );
    CREATE TABLE user (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        org_id        INTEGER NOT NULL REFERENCES org(id),
        username      TEXT NOT NULL UNIQUE,
        role          TEXT NOT NULL CHECK (role IN ('admin', 'investigator', 'auditor', 'compliance')),
        password_hash TEXT,                      -- argon2id PHC string; NULL: no password login
        disabled      INTEGER NOT NULL DEFAULT 0,
        created_at    INTEGER NOT NULL
    );
    CREATE INDEX user_org ON user(org_id);
    CREATE TABLE api_key (
        id            TEXT PRIMARY KEY,          -- public key id, 16 hex digits
        user_id       INTEGER NOT NULL REFERENCES user(id),
        role          TEXT NOT NULL,
        name          TEXT NOT NULL,
        secret_sha256 BLOB NOT NULL,             -- SHA-256 of the whole key string
        created_at    INTEGER NOT NULL,
        revoked_at    INTEGER
    );
    CREATE INDEX api_key_user ON api_key(user_id);
    CREATE TABLE case_file (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        org_id           INTEGER NOT NULL REFERENCES org(id),
        number           TEXT NOT NULL,
        purpose          TEXT NOT NULL,
        legal_basis      TEXT NOT NULL,
        offence_category TEXT NOT NULL,
        created_by       INTEGER NOT NULL REFERENCES user(id),
        created_at       INTEGER NOT NULL,
        status           TEXT NOT NULL CHECK (status IN ('open', 'closed')),
        closed_at        INTEGER,
        UNIQUE (org_id, number)
    );
    -- The audit log. Append only: the triggers refuse UPDATE and DELETE, but verification never
    -- relies on them (whoever holds the file can drop them); it relies on the hash chain and on
    -- the signed checkpoints.
    CREATE TABLE audit (
        seq           INTEGER PRIMARY KEY,       -- 1..n, contiguous
        ts            INTEGER NOT NULL,          -- unix milliseconds
        actor_user_id INTEGER,
        actor         TEXT NOT NULL,             -- username, 'system' or 'public'
        org_id        INTEGER,
        case_id       INTEGER,
        action        TEXT NOT NULL,
        object_ids    TEXT NOT NULL,             -- JSON array of strings
        allowed       INTEGER NOT NULL,
        rule          TEXT NOT NULL,
        reason        TEXT NOT NULL,
        result_count  INTEGER,
        probe_sha256  TEXT,
        details       TEXT NOT NULL,             -- canonical JSON object
        prev_hash     TEXT NOT NULL,
        hash          TEXT NOT NULL
    );
    CREATE INDEX audit_org_action_ts ON audit(org_id, action, ts);
    CREATE INDEX audit_case ON audit(case_id);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TABLE audit_checkpoint (
        seq       INTEGER PRIMARY KEY,
        hash      TEXT NOT NULL,
        ts        INTEGER NOT NULL,              -- unix milliseconds
        signature TEXT NOT NULL                  -- hex Ed25519 over "visage-audit-checkpoint\n{seq}\n{hash}"
    );
    CREATE TRIGGER audit_checkpoint_no_update BEFORE UPDATE ON audit_checkpoint
        BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
    CREATE TRIGGER audit_checkpoint_no_delete BEFORE DELETE ON audit_checkpoint
        BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
    CREATE TABLE receipt (
        id        TEXT PRIMARY KEY,
        kind      TEXT NOT NULL,
        issued_at INTEGER NOT NULL,              -- unix milliseconds
        json      TEXT NOT NULL                  -- the whole signed receipt
    );
    CREATE TRIGGER receipt_no_update BEFORE UPDATE ON receipt
        BEGIN SELECT RAISE(ABORT, 'receipts are append-only'); END;
    CREATE TRIGGER receipt_no_delete BEFORE DELETE ON receipt
        BEGIN SELECT RAISE(ABORT, 'receipts are append-only'); END;
    "#,
    // 1 -> 2: changes to other stores announced before they are made (an erasure of the
    // gallery), finished with their records in one transaction (`Governance::finish_change`).
    r#"
    CREATE TABLE pending_change (
        id         TEXT PRIMARY KEY,
        kind       TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        json       TEXT NOT NULL
    ) WITHOUT ROWID;
    "#,
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Connection settings every governance connection uses.
pub fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA secure_delete = ON;",
    )
    .context("configuring SQLite")?;
    Ok(())
}

/// Applies pending migrations, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        bail!(
            "this governance database has schema version {current}, newer than this visage \
             understands ({SCHEMA_VERSION}); upgrade visage"
        );
    }
    for (v, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the write lock.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now > v as i64 {
            continue;
        }
        tx.execute_batch(sql)
            .with_context(|| format!("governance schema migration {v} -> {}", v + 1))?;
        tx.pragma_update(None, "user_version", v as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
