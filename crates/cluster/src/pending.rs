//! Opt-outs announced before they change anything (migration 13), so that none is left done
//! and unrecorded by a process that dies half way.
//!
//! An opt-out writes the suppression list, then deletes in several transactions
//! (`visage_engine::optout`); its receipt, audit record and public request are written at the
//! end, in one transaction ([`Held::finish`]). The API process that runs it:
//!
//! 1. takes a session advisory lock named after the request and, holding it, inserts the
//!    `pending_opt_out` row ([`announce`]);
//! 2. journals each deletion's report in that deletion's transaction ([`journal_in`], from
//!    `ClusterStore::delete_recorded`);
//! 3. records the opt-out from the journal and drops the row and the journal, in one
//!    transaction on the lock's connection ([`Held::finish`]); the lock goes with the
//!    connection.
//!
//! The lock lives as long as the process's connection: a process that dies releases it.
//! Any API process that finds a pending row whose lock it can take ([`claim`]) owns the
//! opt-out from then on and finishes it (`visage_server::cluster_api` does so at start and
//! every minute).

use anyhow::{Context, Result};
use postgres::Transaction;
use sha2::{Digest, Sha256};
use visage_gallery::DeleteReport;

use crate::pg::{Pool, SessionLock};

/// High half of the advisory lock keys of opt-outs (the low half hashes the request id).
const OPT_OUT_LOCK_BASE: i64 = 0x7669_7362_0000_0000;

/// An opt-out as announced.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingOptOut {
    pub request_id: String,
    /// The pack whose embeddings its suppression entries hold.
    pub pack: String,
    /// Selfies submitted.
    pub selfies: usize,
    pub contact: String,
    /// Unix seconds.
    pub created_at: i64,
}

fn lock_key(request_id: &str) -> i64 {
    let h = Sha256::digest(request_id.as_bytes());
    OPT_OUT_LOCK_BASE | i64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]]))
}

/// An opt-out this process owns: its lock and the connection that holds it.
pub struct Held {
    lock: SessionLock,
    pub opt_out: PendingOptOut,
}

/// Takes the opt-out's lock and announces it (see the module documentation).
pub fn announce(pool: &Pool, o: &PendingOptOut) -> Result<Held> {
    let mut lock = pool.lock_session(lock_key(&o.request_id))?;
    lock.client()
        .execute(
            "INSERT INTO pending_opt_out (request_id, pack, selfies, contact, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &o.request_id,
                &o.pack,
                &(o.selfies as i64),
                &o.contact,
                &o.created_at,
            ],
        )
        .context("announcing the opt-out")?;
    Ok(Held {
        lock,
        opt_out: o.clone(),
    })
}

/// Request ids of the pending opt-outs, oldest first (running ones included).
pub fn pending_ids(pool: &Pool) -> Result<Vec<String>> {
    Ok(pool
        .get()?
        .query(
            "SELECT request_id FROM pending_opt_out ORDER BY created_at, request_id",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Takes over a pending opt-out whose process is gone: `None` when it is running (its lock
/// is held) or no longer pending.
pub fn claim(pool: &Pool, request_id: &str) -> Result<Option<Held>> {
    let Some(mut lock) = pool.try_lock_session(lock_key(request_id))? else {
        return Ok(None);
    };
    // Read under the lock: an owner that finished meanwhile dropped the row.
    let row = lock.client().query_opt(
        "SELECT pack, selfies, contact, created_at FROM pending_opt_out WHERE request_id = $1",
        &[&request_id],
    )?;
    Ok(row.map(|r| Held {
        lock,
        opt_out: PendingOptOut {
            request_id: request_id.to_string(),
            pack: r.get(0),
            selfies: r.get::<_, i64>(1).max(0) as usize,
            contact: r.get(2),
            created_at: r.get(3),
        },
    }))
}

/// Journals a deletion of opt-out `request_id` inside the deletion's transaction.
pub fn journal_in(tx: &mut Transaction<'_>, request_id: &str, report: &DeleteReport) -> Result<()> {
    tx.execute(
        "INSERT INTO opt_out_journal (request_id, report) VALUES ($1, $2)",
        &[&request_id, &serde_json::to_string(report)?],
    )
    .context("journaling the opt-out's deletion")?;
    Ok(())
}

impl Held {
    /// Records the opt-out: `record` gets the transaction and the journaled deletions added
    /// up (face ids sorted); the pending row and the journal are dropped in the same
    /// transaction, which then commits.
    pub fn finish<T>(
        &mut self,
        record: impl FnOnce(&mut Transaction<'_>, DeleteReport) -> Result<T>,
    ) -> Result<T> {
        let id = self.opt_out.request_id.clone();
        let mut tx = self.lock.client().transaction()?;
        let mut total = DeleteReport::default();
        for r in tx.query(
            "SELECT report FROM opt_out_journal WHERE request_id = $1 ORDER BY seq",
            &[&id],
        )? {
            let r: DeleteReport = serde_json::from_str(r.get::<_, &str>(0))
                .context("reading a journaled opt-out deletion")?;
            total.add(r);
        }
        total.face_ids.sort_unstable();
        let out = record(&mut tx, total)?;
        tx.execute("DELETE FROM opt_out_journal WHERE request_id = $1", &[&id])?;
        tx.execute("DELETE FROM pending_opt_out WHERE request_id = $1", &[&id])?;
        tx.commit().context("committing the opt-out's record")?;
        Ok(out)
    }

    /// Drops an opt-out that changed nothing (nothing to record).
    pub fn drop_unstarted(&mut self) -> Result<()> {
        self.finish(|_, _| Ok(()))
    }
}
