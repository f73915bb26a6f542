//! The audit log of a cluster deployment, in PostgreSQL: one hash chain that every API process
//! appends to, in exactly the governance crate's format (`visage_governance`, module `audit`:
//! the hash definition, checkpoints, the JSON Lines export), so an export verifies offline with
//! [`visage_governance::verify_with_public_key`], i.e.
//! `visage audit verify --file EXPORT.jsonl --public-key HEX`.
//!
//! # Total order
//!
//! An append is one transaction: `SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE`
//! (the row lock serialises appenders across processes), the record built by
//! [`AuditEvent::into_record`] at `seq + 1` after `hash`, the row inserted, the head moved, and
//! at every multiple of [`CHECKPOINT_INTERVAL`] a signed checkpoint inserted, then commit. A
//! record is visible exactly when the head names it.
//!
//! # Key
//!
//! Checkpoints are signed with one Ed25519 key shared by every API process of the cluster
//! (the `audit_key_file`; [`load_or_create_key`]). The first append stores its public key in
//! `audit_head.public_key`; a process with another key is refused (its checkpoints would not
//! verify). Auditors must get the public key from a trusted channel, not from an export.
//!
//! # Tampering
//!
//! Triggers (migration 3) refuse UPDATE, DELETE and TRUNCATE on `audit_log` and
//! `audit_checkpoint` and DELETE on `audit_head`. A superuser, or the role owning the tables,
//! can still disable them (`ALTER TABLE ... DISABLE TRIGGER`, `session_replication_role`) and
//! change rows; that is what [`PgAudit::verify`] and the offline verifier detect (the hash chain,
//! the signed checkpoints, and here also the head row). For the triggers to bind, run the API
//! processes as a role that does not own the tables.

use std::io::{BufReader, BufWriter, Seek, Write};
use std::ops::RangeBounds;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
pub use ed25519_dalek::SigningKey;
use postgres::{GenericClient, Row, Transaction};
use serde_json::Value;
use visage_governance::{
    audit_range_to_sql as range_to_sql, verify_with_public_key, AuditEvent, AuditRecord, BadRecord,
    Checkpoint, ExportSummary, ExportWriter, TamperKind, VerifyReport, CHECKPOINT_INTERVAL,
};

use crate::pg::Pool;

/// Reads the cluster's audit signing key (32-byte Ed25519 seed: 64 hex digits, or the 32 raw
/// bytes), or creates it (64 hex digits, mode 0600, never seen half-written) when absent. Every
/// API process of a cluster must use the same file: create it once and copy it to each.
pub fn load_or_create_key(path: &Path) -> Result<SigningKey> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == 32 => {
            let seed: [u8; 32] = bytes.as_slice().try_into().expect("32 bytes");
            return Ok(SigningKey::from_bytes(&seed));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    visage_governance::load_or_create_key(path)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const RECORD_COLS: &str = "seq, ts, actor_user_id, actor, org_id, case_id, action, object_ids, \
                           allowed, rule, reason, result_count, probe_sha256, details, prev_hash, hash";

/// Records are read in pages of this many.
const PAGE: i64 = 1000;

fn record_from_row(r: &Row) -> Result<AuditRecord> {
    let object_ids: Value = r.try_get(7)?;
    let details: String = r.try_get(13)?;
    let seq: i64 = r.try_get(0)?;
    let result_count: Option<i64> = r.try_get(11)?;
    Ok(AuditRecord {
        seq: u64::try_from(seq).context("negative seq")?,
        ts: r.try_get(1)?,
        actor_user_id: r.try_get(2)?,
        actor: r.try_get(3)?,
        org_id: r.try_get(4)?,
        case_id: r.try_get(5)?,
        action: r.try_get(6)?,
        object_ids: serde_json::from_value(object_ids).context("object_ids")?,
        allowed: r.try_get(8)?,
        rule: r.try_get(9)?,
        reason: r.try_get(10)?,
        result_count: result_count
            .map(u64::try_from)
            .transpose()
            .context("negative result_count")?,
        probe_sha256: r.try_get(12)?,
        details: serde_json::from_str(&details).context("details")?,
        prev_hash: r.try_get(14)?,
        hash: r.try_get(15)?,
    })
}

fn checkpoint_from_row(r: &Row) -> Result<Checkpoint> {
    let seq: i64 = r.try_get(0)?;
    Ok(Checkpoint {
        seq: u64::try_from(seq).context("negative checkpoint seq")?,
        hash: r.try_get(1)?,
        ts: r.try_get(3)?,
        signature: r.try_get(2)?,
    })
}

/// The head row: (seq, hash).
struct Head {
    seq: u64,
    hash: String,
}

/// The cluster's audit log (see the module documentation). Cheap to build per use: a pool
/// reference and a signing key.
pub struct PgAudit<'a> {
    pool: &'a Pool,
    key: SigningKey,
}

impl std::fmt::Debug for PgAudit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAudit")
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl<'a> PgAudit<'a> {
    /// The log in `pool`'s database (migrated to schema 3 or later), signing with `key`.
    pub fn new(pool: &'a Pool, key: SigningKey) -> PgAudit<'a> {
        PgAudit { pool, key }
    }

    /// The key that signs the log's checkpoints, and the cluster's receipts.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The signing key's public half (hex): give it to auditors for offline checks.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// Appends one record in a transaction of its own; signs a checkpoint when its seq is a
    /// multiple of [`CHECKPOINT_INTERVAL`]. An invalid event fails with a
    /// [`visage_governance::GovError::Invalid`] inside the error.
    pub fn append(&self, event: AuditEvent) -> Result<AuditRecord> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        let rec = self.append_in(&mut tx, event)?;
        tx.commit().context("committing the audit record")?;
        Ok(rec)
    }

    /// Appends inside the caller's transaction, so a change and its record commit together.
    /// The chain's head stays locked until that transaction ends: keep it short.
    pub fn append_in(&self, tx: &mut Transaction<'_>, event: AuditEvent) -> Result<AuditRecord> {
        let head = self.lock_head(tx)?;
        let rec = event.into_record(head.seq + 1, now_ms(), head.hash)?;
        let seq = i64::try_from(rec.seq).context("audit seq out of range")?;
        let result_count = rec.result_count.map(|n| n.min(i64::MAX as u64) as i64);
        tx.execute(
            &format!(
                "INSERT INTO audit_log ({RECORD_COLS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
            ),
            &[
                &seq,
                &rec.ts,
                &rec.actor_user_id,
                &rec.actor,
                &rec.org_id,
                &rec.case_id,
                &rec.action,
                &serde_json::to_value(&rec.object_ids)?,
                &rec.allowed,
                &rec.rule,
                &rec.reason,
                &result_count,
                &rec.probe_sha256,
                &visage_governance::canonical_json(&rec.details),
                &rec.prev_hash,
                &rec.hash,
            ],
        )
        .context("inserting the audit record")?;
        tx.execute(
            "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
            &[&seq, &rec.hash],
        )?;
        if rec.seq.is_multiple_of(CHECKPOINT_INTERVAL) {
            self.insert_checkpoint(tx, rec.seq, &rec.hash)?;
        }
        Ok(rec)
    }

    /// Locks the head row for the rest of `tx` and checks (or, on first use, records) the
    /// signing key's public half.
    fn lock_head(&self, tx: &mut Transaction<'_>) -> Result<Head> {
        let row = tx
            .query_opt(
                "SELECT seq, hash, public_key FROM audit_head WHERE id = 1 FOR UPDATE",
                &[],
            )
            .context("locking the audit head")?
            .context("the audit_head row is missing (cluster migration 3 not applied?)")?;
        let seq: i64 = row.get(0);
        let mine = self.public_key_hex();
        match row.get::<_, Option<String>>(2) {
            None => {
                tx.execute(
                    "UPDATE audit_head SET public_key = $1 WHERE id = 1",
                    &[&mine],
                )?;
            }
            Some(theirs) if theirs == mine => {}
            Some(theirs) => bail!(
                "this process's audit signing key (public {mine}) is not the cluster's \
                 (public {theirs}): every API process must use the same audit_key_file"
            ),
        }
        Ok(Head {
            seq: u64::try_from(seq).context("negative audit head seq")?,
            hash: row.get(1),
        })
    }

    fn insert_checkpoint(
        &self,
        tx: &mut Transaction<'_>,
        seq: u64,
        hash: &str,
    ) -> Result<Checkpoint> {
        let cp = Checkpoint::sign(seq, hash, now_ms(), &self.key);
        tx.execute(
            "INSERT INTO audit_checkpoint (seq, hash, signature, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (seq) DO NOTHING",
            &[&(seq as i64), &cp.hash, &cp.signature, &cp.ts],
        )
        .context("inserting the audit checkpoint")?;
        Ok(cp)
    }

    /// Signs a checkpoint at the current head (`None` while the log is empty); the existing one
    /// when the head has one already.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        let head = self.lock_head(&mut tx)?;
        if head.seq == 0 {
            return Ok(None);
        }
        let existing = tx.query_opt(
            "SELECT seq, hash, signature, created_at FROM audit_checkpoint WHERE seq = $1",
            &[&(head.seq as i64)],
        )?;
        let cp = match existing {
            Some(row) => checkpoint_from_row(&row)?,
            None => self.insert_checkpoint(&mut tx, head.seq, &head.hash)?,
        };
        tx.commit()?;
        Ok(Some(cp))
    }

    /// The last record's (seq, hash) as the head row names it; `None` while the log is empty.
    pub fn head(&self) -> Result<Option<(u64, String)>> {
        let head = read_head(&mut *self.pool.get()?)?;
        Ok((head.seq > 0).then_some((head.seq, head.hash)))
    }

    /// Records with seq in `range`, in seq order (at most `limit`). Fails on a row that cannot
    /// be read back (see [`PgAudit::verify`]).
    pub fn records(&self, range: impl RangeBounds<u64>, limit: usize) -> Result<Vec<AuditRecord>> {
        let (lo, hi) = range_to_sql(&range);
        let limit = limit.min(i64::MAX as usize) as i64;
        self.pool
            .get()?
            .query(
                &format!(
                    "SELECT {RECORD_COLS} FROM audit_log WHERE seq BETWEEN $1 AND $2 \
                     ORDER BY seq LIMIT $3"
                ),
                &[&lo, &hi, &limit],
            )?
            .iter()
            .map(|r| {
                let seq: Option<i64> = r.try_get(0).ok();
                record_from_row(r)
                    .with_context(|| format!("audit record {seq:?} cannot be read back"))
            })
            .collect()
    }

    /// Every record of a case (`case_id`), in seq order: what its report is made of.
    pub fn records_for_case(&self, case_id: i64) -> Result<Vec<AuditRecord>> {
        self.pool
            .get()?
            .query(
                &format!("SELECT {RECORD_COLS} FROM audit_log WHERE case_id = $1 ORDER BY seq"),
                &[&case_id],
            )?
            .iter()
            .map(|r| {
                let seq: Option<i64> = r.try_get(0).ok();
                record_from_row(r)
                    .with_context(|| format!("audit record {seq:?} cannot be read back"))
            })
            .collect()
    }

    /// Every checkpoint, in seq order.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.pool
            .get()?
            .query(
                "SELECT seq, hash, signature, created_at FROM audit_checkpoint ORDER BY seq",
                &[],
            )?
            .iter()
            .map(checkpoint_from_row)
            .collect()
    }

    /// Writes records with seq in `range` and their checkpoints as JSON Lines in the governance
    /// export format (`visage audit verify --file` reads it), reading in pages. The export runs
    /// to the head, or past it to the last stored record if rows lie beyond it. A row that
    /// cannot be read back is written as a record line the verifier reports as altered.
    pub fn export_jsonl<W: Write>(
        &self,
        w: W,
        range: impl RangeBounds<u64>,
    ) -> Result<ExportSummary> {
        self.write_export(w, range, false)
    }

    /// As [`PgAudit::export_jsonl`]; with `later_checkpoints`, also the checkpoints past the
    /// range (so a verifier sees a tail cut together with the head row).
    fn write_export<W: Write>(
        &self,
        w: W,
        range: impl RangeBounds<u64>,
        later_checkpoints: bool,
    ) -> Result<ExportSummary> {
        let (lo, hi) = range_to_sql(&range);
        let (head, stored_end) = self.ends()?;
        let hi = hi.min(head.seq.max(stored_end) as i64);
        let (first, last) = if lo <= hi {
            (lo as u64, hi as u64)
        } else {
            (lo as u64, lo as u64 - 1)
        };
        let mut out = ExportWriter::new(w, &self.public_key_hex(), first, last)?;
        let mut conn = self.pool.get()?;
        let mut next = first as i64;
        while next <= last as i64 {
            let rows = conn.query(
                &format!(
                    "SELECT {RECORD_COLS} FROM audit_log WHERE seq BETWEEN $1 AND $2 \
                     ORDER BY seq LIMIT $3"
                ),
                &[&next, &(last as i64), &PAGE],
            )?;
            let Some(end) = rows.last().map(|r| r.get::<_, i64>(0)) else {
                break;
            };
            for row in &rows {
                match record_from_row(row) {
                    Ok(rec) => out.record(&rec)?,
                    Err(e) => {
                        out.unreadable_record(row.get::<_, i64>(0) as u64, &format!("{e:#}"))?
                    }
                }
            }
            next = end + 1;
        }
        let cps = conn.query(
            "SELECT seq, hash, signature, created_at FROM audit_checkpoint \
             WHERE seq BETWEEN $1 AND $2 ORDER BY seq",
            &[
                &(first as i64),
                &(if later_checkpoints {
                    i64::MAX
                } else {
                    last as i64
                }),
            ],
        )?;
        for row in &cps {
            out.checkpoint(&checkpoint_from_row(row)?)?;
        }
        Ok(out.finish()?)
    }

    /// The head row, and the highest seq stored in `audit_log` (one snapshot).
    fn ends(&self) -> Result<(Head, u64)> {
        let row = self
            .pool
            .get()?
            .query_opt(
                "SELECT seq, hash, (SELECT COALESCE(MAX(seq), 0) FROM audit_log) \
                 FROM audit_head WHERE id = 1",
                &[],
            )?
            .context("the audit_head row is missing: the audit tables were tampered with")?;
        Ok((
            Head {
                seq: row.get::<_, i64>(0).max(0) as u64,
                hash: row.get(1),
            },
            row.get::<_, i64>(2).max(0) as u64,
        ))
    }

    /// Verifies the whole log with this process's key, as an auditor would: exports it with
    /// every checkpoint (to a temporary file) and runs [`verify_with_public_key`] on that, so
    /// the hash chain, every checkpoint's signature and position, due checkpoints and a cut
    /// tail are checked by the same code as offline. Then checks that the head row names the
    /// chain's last record.
    pub fn verify(&self) -> Result<VerifyReport> {
        let head = self.ends()?.0;
        let mut file = tempfile::tempfile().context("temporary file for the audit export")?;
        {
            let mut w = BufWriter::new(&mut file);
            self.write_export(&mut w, .., true)?;
            w.flush()?;
        }
        file.rewind()?;
        let mut report = verify_with_public_key(BufReader::new(file), &self.public_key_hex())?;
        if report.ok {
            let end = report.head_seq.unwrap_or(0);
            let end_hash = report.head_hash.clone().unwrap_or_default();
            let b = if end > head.seq {
                Some(BadRecord {
                    seq: head.seq + 1,
                    kind: TamperKind::Inserted,
                    message: format!(
                        "records {}..={end} lie past the chain head (seq {}): written \
                         around the append path",
                        head.seq + 1,
                        head.seq
                    ),
                })
            } else if end > 0 && end_hash != head.hash {
                Some(BadRecord {
                    seq: end,
                    kind: TamperKind::Altered,
                    message: format!("record {end}'s hash differs from the chain head's"),
                })
            } else {
                None
            };
            if let Some(b) = b {
                report.ok = false;
                report.first_bad = Some(b);
            }
        }
        Ok(report)
    }
}

/// The head row through any client.
fn read_head(c: &mut impl GenericClient) -> Result<Head> {
    let row = c
        .query_opt("SELECT seq, hash FROM audit_head WHERE id = 1", &[])?
        .context("the audit_head row is missing (cluster migration 3 not applied?)")?;
    Ok(Head {
        seq: row.get::<_, i64>(0).max(0) as u64,
        hash: row.get(1),
    })
}
