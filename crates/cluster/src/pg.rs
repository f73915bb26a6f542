//! PostgreSQL: a small connection pool and the numbered migrations.
//!
//! The synchronous `postgres` client drives its own runtime, so every call here must come from
//! a plain thread (the server calls storage from `spawn_blocking`).

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use postgres::{Client, NoTls};

/// Numbered migrations, applied in order, each in its own transaction.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_api_keys.sql")),
    (3, include_str!("migrations/0003_audit.sql")),
    (4, include_str!("migrations/0004_governance.sql")),
    (5, include_str!("migrations/0005_receipts.sql")),
    (6, include_str!("migrations/0006_ingest_containers.sql")),
    (7, include_str!("migrations/0007_catalogue.sql")),
    (8, include_str!("migrations/0008_accounts.sql")),
    (9, include_str!("migrations/0009_rate_limits.sql")),
    (10, include_str!("migrations/0010_job_view.sql")),
    (11, include_str!("migrations/0011_staged_uploads.sql")),
    (12, include_str!("migrations/0012_tally.sql")),
    (13, include_str!("migrations/0013_pending_opt_out.sql")),
];

/// Newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 13;

/// Key of the advisory lock that serialises migrations across processes.
const MIGRATION_LOCK: i64 = 0x7669_7361_6765_0001;
/// Advisory lock keys of per-organisation search quotas: this base plus the organisation id.
pub const QUOTA_LOCK_BASE: i64 = 0x7669_7361_0000_0000;

/// A session advisory lock, held on a connection of its own until dropped. The connection is
/// closed then (never returned to the pool), which releases the lock whatever happened.
pub struct SessionLock(Client);

impl SessionLock {
    /// The connection that holds the lock (work done on it keeps the lock).
    pub fn client(&mut self) -> &mut Client {
        &mut self.0
    }
}

pub struct Pool {
    url: String,
    idle: Mutex<Vec<Client>>,
    max_idle: usize,
}

/// A connection borrowed from the pool; returned on drop unless it broke.
pub struct Conn<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("connection present until drop")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("connection present until drop")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            if !c.is_closed() {
                let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < self.pool.max_idle {
                    idle.push(c);
                }
            }
        }
    }
}

/// The url without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((u, _)) => format!("{}{u}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Pool {
    pub fn new(url: &str) -> Result<Pool> {
        let pool = Pool {
            url: url.to_string(),
            idle: Mutex::new(Vec::new()),
            max_idle: 16,
        };
        drop(pool.get()?);
        Ok(pool)
    }

    pub fn get(&self) -> Result<Conn<'_>> {
        let reused = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let client = match reused {
            Some(c) => c,
            None => {
                let mut cfg: postgres::Config = self
                    .url
                    .parse()
                    .with_context(|| format!("bad postgres url {}", redact(&self.url)))?;
                cfg.connect_timeout(Duration::from_secs(10));
                cfg.application_name("visage");
                cfg.connect(NoTls)
                    .with_context(|| format!("connecting to {}", redact(&self.url)))?
            }
        };
        Ok(Conn {
            pool: self,
            client: Some(client),
        })
    }

    /// Waits for the session advisory lock `key` (every process of the cluster sees it).
    pub fn lock_session(&self, key: i64) -> Result<SessionLock> {
        let mut c = self.get()?;
        let mut client = c.client.take().context("pooled connection already taken")?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .context("taking an advisory lock")?;
        Ok(SessionLock(client))
    }

    /// Runs `f` in a transaction of a pooled connection and commits (`what` names it in the
    /// error); rolled back if `f` fails.
    pub fn in_transaction<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut c = self.get()?;
        let mut tx = c.transaction()?;
        let out = f(&mut tx)?;
        tx.commit().with_context(|| format!("committing {what}"))?;
        Ok(out)
    }

    /// The session advisory lock `key` if nobody holds it now; `None` otherwise.
    pub fn try_lock_session(&self, key: i64) -> Result<Option<SessionLock>> {
        let mut c = self.get()?;
        let got: bool = c
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .context("trying an advisory lock")?
            .get(0);
        if !got {
            return Ok(None);
        }
        let client = c.client.take().context("pooled connection already taken")?;
        Ok(Some(SessionLock(client)))
    }

    /// The schema version of the database (0: empty).
    pub fn schema_version(&self) -> Result<i32> {
        let mut c = self.get()?;
        let exists: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = 'schema_version')",
                &[],
            )?
            .get(0);
        if !exists {
            return Ok(0);
        }
        Ok(
            c.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?
                .get(0),
        )
    }

    /// Applies the migrations this database lacks; safe when several processes start at once
    /// (an advisory lock serialises them). Returns the versions applied.
    pub fn migrate(&self) -> Result<Vec<i32>> {
        let mut c = self.get()?;
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, \
             applied_at BIGINT NOT NULL)",
        )?;
        let have: i32 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?
            .get(0);
        if have > SCHEMA_VERSION {
            bail!(
                "the database has schema version {have}; this build knows up to \
                 {SCHEMA_VERSION}: upgrade visage"
            );
        }
        let mut applied = Vec::new();
        for (v, sql) in MIGRATIONS {
            if *v <= have {
                continue;
            }
            tx.batch_execute(sql)
                .with_context(|| format!("applying cluster migration {v}"))?;
            tx.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                &[v, &visage_gallery::gallery::now()],
            )?;
            applied.push(*v);
        }
        tx.commit()?;
        Ok(applied)
    }
}
