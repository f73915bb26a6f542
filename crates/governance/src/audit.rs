//! The hash-chained, checkpoint-signed audit log: append, read, verify, export, offline verify.
//!
//! # Hash definition (format version 1)
//!
//! `hash = hex(SHA-256(prev_hash_bytes || canonical))` where `prev_hash_bytes` are the 32 raw
//! bytes of the previous record's hash (32 zero bytes for seq 1; hex form: [`GENESIS_HASH`])
//! and `canonical` is the compact `serde_json` serialisation of this struct, fields in this
//! order:
//!
//! ```text
//! {"v":1,"seq":u64,"ts":i64,"actor_user_id":i64|null,"actor":str,"org_id":i64|null,
//!  "case_id":i64|null,"action":str,"object_ids":[str],"allowed":bool,"rule":str,"reason":str,
//!  "result_count":u64|null,"probe_sha256":str|null,"details":str}
//! ```
//!
//! where `details` is the *text* of the canonical JSON of the details object (keys sorted by
//! bytes at every level, no whitespace; see [`crate::util::canonical_json`]), embedded as a
//! JSON string. Hashes are lower-case hex.
//!
//! Checkpoints sign `"visage-audit-checkpoint\n{seq}\n{hash}"` (UTF-8, decimal seq, hex hash)
//! with the installation's Ed25519 key; one is written in the same transaction as every
//! record whose seq is a multiple of [`CHECKPOINT_INTERVAL`], and on [`Governance::checkpoint`].
//!
//! # Export format (JSON Lines)
//!
//! One `{"type":"header","format":"visage-audit-export","version":1,"public_key":hex,
//! "exported_at":ms,"first_seq":n,"last_seq":m}` line, then one `{"type":"record",...}` line per
//! record in seq order (the [`AuditRecord`] fields), then one `{"type":"checkpoint",...}` line
//! per checkpoint whose seq lies in `first_seq..=last_seq`.

use crate::accounts::Principal;
use crate::error::{GovError, Result};
use crate::policy::{Action, Decision};
use crate::util::{canonical_json, now_ms};
use crate::Governance;
use anyhow::Context;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rusqlite::{params, OptionalExtension, Row, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::ops::{Bound, RangeBounds};

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// A checkpoint is signed at every seq that is a multiple of this.
pub const CHECKPOINT_INTERVAL: u64 = 100;
const EXPORT_FORMAT: &str = "visage-audit-export";
/// How far from its position a moved record's true seq is searched for when classifying.
const MOVE_WINDOW: u64 = 1024;

/// Who did something: a user, or `system` / `public` (no user id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub user_id: Option<i64>,
    pub name: String,
}

impl Actor {
    pub fn user(user_id: i64, username: &str) -> Actor {
        Actor {
            user_id: Some(user_id),
            name: username.to_string(),
        }
    }
    /// The installation itself (migrations, first start, scheduled jobs).
    pub fn system() -> Actor {
        Actor {
            user_id: None,
            name: "system".into(),
        }
    }
    /// An unauthenticated member of the public (opt-out portal).
    pub fn public() -> Actor {
        Actor {
            user_id: None,
            name: "public".into(),
        }
    }
}

impl From<&Principal> for Actor {
    fn from(p: &Principal) -> Actor {
        Actor::user(p.user_id, &p.username)
    }
}

/// What the caller asks to record; [`Governance::append`] adds seq, ts and the hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub actor: Actor,
    pub org_id: Option<i64>,
    pub case_id: Option<i64>,
    /// An [`Action`] name for authorised operations, or another snake_case verb
    /// (`create_user`, `receipt`, ...).
    pub action: String,
    /// Ids of the objects acted on; for `search` records, the result face ids.
    pub object_ids: Vec<String>,
    pub allowed: bool,
    /// The rule that decided ([`Decision::rule`]).
    pub rule: String,
    pub reason: String,
    pub result_count: Option<u64>,
    /// SHA-256 (hex) of the probe image; never the image.
    pub probe_sha256: Option<String>,
    /// A JSON object (or null, stored as `{}`).
    pub details: Value,
}

impl AuditEvent {
    /// An allowed event with empty rule and details; fill in with the builder methods.
    pub fn new(actor: &Actor, action: impl Into<String>) -> AuditEvent {
        AuditEvent {
            actor: actor.clone(),
            org_id: None,
            case_id: None,
            action: action.into(),
            object_ids: Vec::new(),
            allowed: true,
            rule: String::new(),
            reason: String::new(),
            result_count: None,
            probe_sha256: None,
            details: Value::Object(Default::default()),
        }
    }

    /// An event recording an authorisation decision for `principal` doing `action`.
    pub fn decision(principal: &Principal, action: Action, decision: &Decision) -> AuditEvent {
        let mut ev = AuditEvent::new(&Actor::from(principal), action.as_str());
        ev.org_id = Some(principal.org.id);
        ev.allowed = decision.allowed;
        ev.rule = decision.rule.clone();
        ev.reason = decision.reason.clone();
        ev
    }

    /// An administrative change made on behalf of a caller that already authorised it (rule
    /// `caller_authorized`).
    pub fn admin(actor: &Actor, org_id: Option<i64>, action: &str) -> AuditEvent {
        let mut ev = AuditEvent::new(actor, action);
        ev.org_id = org_id;
        ev.rule = "caller_authorized".into();
        ev
    }

    /// The record this event becomes when appended at `seq`, at `ts` (Unix ms), after the
    /// record whose hash is `prev_hash` ([`GENESIS_HASH`] for seq 1): checks the event (action
    /// 1-64 characters, `probe_sha256` 64 lower-case hex digits, details a JSON object, null
    /// stored as `{}`) and computes its hash. Every audit store (this crate's SQLite log, the
    /// cluster's PostgreSQL one) builds its records here, so they share one format.
    pub fn into_record(self, seq: u64, ts: i64, prev_hash: String) -> Result<AuditRecord> {
        let ev = self;
        if ev.action.is_empty() || ev.action.len() > 64 {
            return Err(GovError::Invalid(
                "audit action must be 1-64 characters".into(),
            ));
        }
        if let Some(p) = &ev.probe_sha256 {
            if !is_sha256_hex(p) {
                return Err(GovError::Invalid(
                    "probe_sha256 must be 64 lower-case hex digits".into(),
                ));
            }
        }
        let details = match ev.details {
            Value::Null => Value::Object(Default::default()),
            d @ Value::Object(_) => d,
            _ => {
                return Err(GovError::Invalid(
                    "audit details must be a JSON object".into(),
                ))
            }
        };
        let mut rec = AuditRecord {
            seq,
            ts,
            actor_user_id: ev.actor.user_id,
            actor: ev.actor.name,
            org_id: ev.org_id,
            case_id: ev.case_id,
            action: ev.action,
            object_ids: ev.object_ids,
            allowed: ev.allowed,
            rule: ev.rule,
            reason: ev.reason,
            result_count: ev.result_count,
            probe_sha256: ev.probe_sha256,
            details,
            prev_hash,
            hash: String::new(),
        };
        rec.hash = rec.compute_hash().ok_or_else(|| {
            GovError::Internal(anyhow::anyhow!(
                "the audit head's hash is not 64 hex digits"
            ))
        })?;
        Ok(rec)
    }

    pub fn org(mut self, org_id: i64) -> Self {
        self.org_id = Some(org_id);
        self
    }
    pub fn case(mut self, case_id: i64) -> Self {
        self.case_id = Some(case_id);
        self
    }
    pub fn objects<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ids: I) -> Self {
        self.object_ids = ids.into_iter().map(Into::into).collect();
        self
    }
    pub fn result_count(mut self, n: u64) -> Self {
        self.result_count = Some(n);
        self
    }
    pub fn probe_sha256(mut self, hex: impl Into<String>) -> Self {
        self.probe_sha256 = Some(hex.into());
        self
    }
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
    pub fn decided(mut self, allowed: bool, rule: &str, reason: &str) -> Self {
        self.allowed = allowed;
        self.rule = rule.into();
        self.reason = reason.into();
        self
    }
}

/// One stored audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    /// Unix milliseconds.
    pub ts: i64,
    pub actor_user_id: Option<i64>,
    pub actor: String,
    pub org_id: Option<i64>,
    pub case_id: Option<i64>,
    pub action: String,
    pub object_ids: Vec<String>,
    pub allowed: bool,
    pub rule: String,
    pub reason: String,
    pub result_count: Option<u64>,
    pub probe_sha256: Option<String>,
    pub details: Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Serialize)]
struct Hashed<'a> {
    v: u32,
    seq: u64,
    ts: i64,
    actor_user_id: Option<i64>,
    actor: &'a str,
    org_id: Option<i64>,
    case_id: Option<i64>,
    action: &'a str,
    object_ids: &'a [String],
    allowed: bool,
    rule: &'a str,
    reason: &'a str,
    result_count: Option<u64>,
    probe_sha256: Option<&'a str>,
    details: &'a str,
}

impl AuditRecord {
    /// The hash this record should have if its seq were `seq`; `None` when `prev_hash` is not
    /// 64 hex digits.
    fn hash_with_seq(&self, seq: u64) -> Option<String> {
        let prev = hex::decode(&self.prev_hash)
            .ok()
            .filter(|b| b.len() == 32)?;
        let details = canonical_json(&self.details);
        let canonical = serde_json::to_vec(&Hashed {
            v: 1,
            seq,
            ts: self.ts,
            actor_user_id: self.actor_user_id,
            actor: &self.actor,
            org_id: self.org_id,
            case_id: self.case_id,
            action: &self.action,
            object_ids: &self.object_ids,
            allowed: self.allowed,
            rule: &self.rule,
            reason: &self.reason,
            result_count: self.result_count,
            probe_sha256: self.probe_sha256.as_deref(),
            details: &details,
        })
        .ok()?;
        let mut h = Sha256::new();
        h.update(&prev);
        h.update(&canonical);
        Some(hex::encode(h.finalize()))
    }

    /// Recomputes the hash from the fields (see the module documentation).
    pub fn compute_hash(&self) -> Option<String> {
        self.hash_with_seq(self.seq)
    }
}

/// A signed statement that the chain had `hash` at `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    /// Unix milliseconds.
    pub ts: i64,
    /// Hex Ed25519 signature over [`checkpoint_message`].
    pub signature: String,
}

/// The signed message of a checkpoint.
pub fn checkpoint_message(seq: u64, hash: &str) -> String {
    format!("visage-audit-checkpoint\n{seq}\n{hash}")
}

impl Checkpoint {
    /// Signs [`checkpoint_message`]`(seq, hash)` with `key`; `ts` is when (Unix ms).
    pub fn sign(seq: u64, hash: &str, ts: i64, key: &SigningKey) -> Checkpoint {
        let sig = key.sign(checkpoint_message(seq, hash).as_bytes());
        Checkpoint {
            seq,
            hash: hash.to_string(),
            ts,
            signature: hex::encode(sig.to_bytes()),
        }
    }

    pub fn verify(&self, key: &VerifyingKey) -> bool {
        let Some(sig) = hex::decode(&self.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
        else {
            return false;
        };
        key.verify(
            checkpoint_message(self.seq, &self.hash).as_bytes(),
            &Signature::from_bytes(&sig),
        )
        .is_ok()
    }
}

/// What kind of tampering verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TamperKind {
    /// A record's content differs from what was hashed (or a chain was rewritten).
    Altered,
    /// A record is missing (gap, or the tail was cut after a signed checkpoint).
    Deleted,
    /// Records are out of order.
    Reordered,
    /// A record that was never appended (duplicate seq) appears.
    Inserted,
    /// A checkpoint's signature does not verify with the key.
    BadSignature,
    /// A checkpoint that must exist (every [`CHECKPOINT_INTERVAL`] records) is missing.
    CheckpointMissing,
}

impl TamperKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TamperKind::Altered => "altered",
            TamperKind::Deleted => "deleted",
            TamperKind::Reordered => "reordered",
            TamperKind::Inserted => "inserted",
            TamperKind::BadSignature => "bad_signature",
            TamperKind::CheckpointMissing => "checkpoint_missing",
        }
    }
}

/// The first problem found, at the lowest seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRecord {
    pub seq: u64,
    pub kind: TamperKind,
    pub message: String,
}

/// Result of [`Governance::verify`] and [`verify_with_public_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Records examined.
    pub records: u64,
    /// Checkpoints examined.
    pub checkpoints: u64,
    pub ok: bool,
    pub first_bad: Option<BadRecord>,
    /// Last record of the verified chain (seq, hash), when any.
    pub head_seq: Option<u64>,
    pub head_hash: Option<String>,
    /// Seq of the last checkpoint that verified against the chain.
    pub last_checkpoint: Option<u64>,
    /// Records after the last verified checkpoint: consistent, but not yet signed.
    pub unsigned_tail: u64,
}

/// One record as read back for verification: `rec` is `None` when it could not be read.
pub(crate) struct Item {
    seq: u64,
    rec: Option<AuditRecord>,
    problem: String,
}

fn bad(seq: u64, kind: TamperKind, message: impl Into<String>) -> BadRecord {
    BadRecord {
        seq,
        kind,
        message: message.into(),
    }
}

/// Verifies a sequence of records (in stored order) and checkpoints against `key`.
/// `start` is the seq the first record must have and the prev_hash it must link to
/// (`(1, GENESIS_HASH)` for a whole log).
fn verify_items(
    items: &[Item],
    checkpoints: &[Checkpoint],
    key: &VerifyingKey,
    start: (u64, String),
) -> VerifyReport {
    let (start_seq, start_prev) = start;
    let mut hash_pos: HashMap<&str, usize> = HashMap::new();
    let mut seq_pos: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        if let Some(r) = &it.rec {
            hash_pos.entry(r.hash.as_str()).or_insert(i);
        }
        seq_pos.entry(it.seq).or_default().push(i);
    }
    let later_seq =
        |seq: u64, i: usize| seq_pos.get(&seq).is_some_and(|v| v.iter().any(|&j| j > i));
    let later_hash = |h: &str, i: usize| hash_pos.get(h).is_some_and(|&j| j > i);

    let mut expected = start_seq;
    let mut prev = start_prev;
    let mut first_bad: Option<BadRecord> = None;
    for (i, it) in items.iter().enumerate() {
        let e = expected;
        let Some(r) = &it.rec else {
            first_bad = Some(bad(
                e,
                TamperKind::Altered,
                format!("record unreadable: {}", it.problem),
            ));
            break;
        };
        let self_ok = r.compute_hash().as_deref() == Some(r.hash.as_str());
        if r.seq == e && r.prev_hash == prev && self_ok {
            prev = r.hash.clone();
            expected += 1;
            continue;
        }
        let b = if !self_ok {
            if r.seq != e && r.hash_with_seq(e).as_deref() == Some(r.hash.as_str()) {
                bad(
                    e,
                    TamperKind::Altered,
                    format!("record {e} has its seq changed to {}", r.seq),
                )
            } else if let Some(s) = true_seq(r, e) {
                if later_hash(&r.prev_hash, i) || s < e {
                    bad(
                        e,
                        TamperKind::Reordered,
                        format!("record {s} is stored at seq {e}"),
                    )
                } else {
                    bad(
                        e,
                        TamperKind::Deleted,
                        format!(
                            "records {e}..{} are missing (later records renumbered)",
                            s - 1
                        ),
                    )
                }
            } else {
                bad(
                    e,
                    TamperKind::Altered,
                    format!("record {e}: stored hash does not match its content"),
                )
            }
        } else if r.seq == e {
            // Consistent in itself, but it does not link to the record before it.
            if later_hash(&r.prev_hash, i) {
                bad(
                    e,
                    TamperKind::Reordered,
                    format!("record {e} links to a later record"),
                )
            } else if e > start_seq {
                bad(
                    e - 1,
                    TamperKind::Altered,
                    format!(
                        "record {} does not match the prev_hash of record {e}: it was altered \
                         and its hash recomputed",
                        e - 1
                    ),
                )
            } else {
                bad(
                    e,
                    TamperKind::Altered,
                    format!("record {e} has a wrong prev_hash"),
                )
            }
        } else if r.seq > e {
            if later_seq(e, i) {
                bad(
                    e,
                    TamperKind::Reordered,
                    format!("record {} appears before record {e}", r.seq),
                )
            } else if r.seq - 1 == e {
                bad(e, TamperKind::Deleted, format!("record {e} is missing"))
            } else {
                bad(
                    e,
                    TamperKind::Deleted,
                    format!("records {e}..={} are missing", r.seq - 1),
                )
            }
        } else {
            bad(
                r.seq,
                TamperKind::Inserted,
                format!(
                    "a second record with seq {} appears after record {}",
                    r.seq,
                    e - 1
                ),
            )
        };
        first_bad = Some(b);
        break;
    }

    let verified_end = expected - 1; // last accepted seq (start_seq - 1 when none)
    let limit = first_bad.as_ref().map_or(u64::MAX, |b| b.seq);
    let mut cps: Vec<&Checkpoint> = checkpoints.iter().collect();
    cps.sort_by_key(|c| c.seq);
    let mut cp_bad: Option<BadRecord> = None;
    let mut last_checkpoint = None;
    for cp in &cps {
        if cp.seq >= limit || cp.seq < start_seq {
            continue;
        }
        if !cp.verify(key) {
            cp_bad = Some(bad(
                cp.seq,
                TamperKind::BadSignature,
                format!("checkpoint {} has a bad signature", cp.seq),
            ));
            break;
        }
        if cp.seq > verified_end {
            cp_bad = Some(bad(
                verified_end + 1,
                TamperKind::Deleted,
                format!(
                    "the log ends at {verified_end} but a signed checkpoint names record {}: \
                     the tail was cut",
                    cp.seq
                ),
            ));
            break;
        }
        let pos = (cp.seq - start_seq) as usize;
        let rec_hash = items[pos].rec.as_ref().map(|r| r.hash.as_str());
        if rec_hash != Some(cp.hash.as_str()) {
            cp_bad = Some(bad(
                cp.seq,
                TamperKind::Altered,
                format!(
                    "record {} differs from its signed checkpoint: the chain up to it was \
                     rewritten",
                    cp.seq
                ),
            ));
            break;
        }
        last_checkpoint = Some(cp.seq);
    }
    // Every multiple of the interval in the verified range must have a checkpoint.
    let have: HashSet<u64> = cps.iter().map(|c| c.seq).collect();
    let check_end = verified_end.min(limit.saturating_sub(1));
    let mut m = start_seq.div_ceil(CHECKPOINT_INTERVAL).max(1) * CHECKPOINT_INTERVAL;
    while m <= check_end {
        if !have.contains(&m) {
            let b = bad(
                m,
                TamperKind::CheckpointMissing,
                format!("checkpoint {m} is missing"),
            );
            if cp_bad.as_ref().is_none_or(|c| m < c.seq) {
                cp_bad = Some(b);
            }
            break;
        }
        m += CHECKPOINT_INTERVAL;
    }
    let first_bad = match (first_bad, cp_bad) {
        (Some(a), Some(c)) => Some(if c.seq < a.seq { c } else { a }),
        (a, c) => a.or(c),
    };
    let head = (verified_end >= start_seq).then(|| (verified_end, prev.clone()));
    VerifyReport {
        records: items.len() as u64,
        checkpoints: checkpoints.len() as u64,
        ok: first_bad.is_none(),
        first_bad,
        head_seq: head.as_ref().map(|h| h.0),
        head_hash: head.map(|h| h.1),
        last_checkpoint,
        unsigned_tail: verified_end.saturating_sub(last_checkpoint.unwrap_or(start_seq - 1)),
    }
}

/// The seq under which `r`'s content hashes to its stored hash, searched near `e`.
fn true_seq(r: &AuditRecord, e: u64) -> Option<u64> {
    (1..=MOVE_WINDOW).find_map(|d| {
        [e.checked_add(d), e.checked_sub(d).filter(|s| *s > 0)]
            .into_iter()
            .flatten()
            .find(|&s| r.hash_with_seq(s).as_deref() == Some(r.hash.as_str()))
    })
}

const RECORD_COLS: &str = "seq, ts, actor_user_id, actor, org_id, case_id, action, object_ids, \
                           allowed, rule, reason, result_count, probe_sha256, details, prev_hash, hash";

fn record_from_row(r: &Row) -> rusqlite::Result<AuditRecord> {
    let conv = |i: usize, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let object_ids: String = r.get(7)?;
    let details: String = r.get(13)?;
    let result_count: Option<i64> = r.get(11)?;
    let seq: i64 = r.get(0)?;
    Ok(AuditRecord {
        seq: u64::try_from(seq).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, seq))?,
        ts: r.get(1)?,
        actor_user_id: r.get(2)?,
        actor: r.get(3)?,
        org_id: r.get(4)?,
        case_id: r.get(5)?,
        action: r.get(6)?,
        object_ids: serde_json::from_str(&object_ids).map_err(|e| conv(7, e))?,
        allowed: r.get(8)?,
        rule: r.get(9)?,
        reason: r.get(10)?,
        result_count: result_count
            .map(|n| u64::try_from(n).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(11, n)))
            .transpose()?,
        probe_sha256: r.get(12)?,
        details: serde_json::from_str(&details).map_err(|e| conv(13, e))?,
        prev_hash: r.get(14)?,
        hash: r.get(15)?,
    })
}

fn checkpoint_from_row(r: &Row) -> rusqlite::Result<Checkpoint> {
    Ok(Checkpoint {
        seq: r.get::<_, i64>(0)? as u64,
        hash: r.get(1)?,
        ts: r.get(2)?,
        signature: r.get(3)?,
    })
}

/// A seq range as inclusive SQL bounds (unbounded: from 1, to `i64::MAX`).
pub fn range_to_sql(range: &impl RangeBounds<u64>) -> (i64, i64) {
    let lo = match range.start_bound() {
        Bound::Included(&a) => a,
        Bound::Excluded(&a) => a.saturating_add(1),
        Bound::Unbounded => 1,
    };
    let hi = match range.end_bound() {
        Bound::Included(&b) => b,
        Bound::Excluded(&b) => b.saturating_sub(1),
        Bound::Unbounded => u64::MAX,
    };
    (
        lo.min(i64::MAX as u64) as i64,
        hi.min(i64::MAX as u64) as i64,
    )
}

#[derive(Serialize, Deserialize)]
struct ExportHeader {
    format: String,
    version: u32,
    public_key: String,
    exported_at: i64,
    first_seq: u64,
    last_seq: u64,
}

/// Counts written by [`Governance::export_jsonl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSummary {
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
    pub checkpoints: u64,
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Governance {
    /// Appends one record (one writer at a time: the database's write lock is held from
    /// reading the head to commit). Signs a checkpoint when the new seq is a multiple of
    /// [`CHECKPOINT_INTERVAL`].
    pub fn append(&self, event: AuditEvent) -> Result<AuditRecord> {
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let rec = self.append_tx(&tx, event)?;
        tx.commit()?;
        Ok(rec)
    }

    /// Appends inside the caller's (IMMEDIATE) transaction, so a change and its record commit
    /// together.
    pub(crate) fn append_tx(&self, tx: &Transaction, ev: AuditEvent) -> Result<AuditRecord> {
        let head: Option<(i64, String)> = tx
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (head_seq, prev_hash) = head.unwrap_or((0, GENESIS_HASH.to_string()));
        let rec = ev.into_record(head_seq as u64 + 1, now_ms(), prev_hash)?;
        tx.execute(
            &format!("INSERT INTO audit ({RECORD_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"),
            params![
                rec.seq as i64,
                rec.ts,
                rec.actor_user_id,
                rec.actor,
                rec.org_id,
                rec.case_id,
                rec.action,
                serde_json::to_string(&rec.object_ids).context("object ids to JSON")?,
                rec.allowed,
                rec.rule,
                rec.reason,
                rec.result_count.map(|n| n.min(i64::MAX as u64) as i64),
                rec.probe_sha256,
                canonical_json(&rec.details),
                rec.prev_hash,
                rec.hash,
            ],
        )?;
        if rec.seq.is_multiple_of(CHECKPOINT_INTERVAL) {
            self.checkpoint_tx(tx, rec.seq, &rec.hash)?;
        }
        Ok(rec)
    }

    fn checkpoint_tx(&self, tx: &Transaction, seq: u64, hash: &str) -> Result<Checkpoint> {
        let cp = Checkpoint::sign(seq, hash, now_ms(), &self.signing);
        tx.execute(
            "INSERT OR IGNORE INTO audit_checkpoint (seq, hash, ts, signature) VALUES (?1, ?2, ?3, ?4)",
            params![cp.seq as i64, cp.hash, cp.ts, cp.signature],
        )?;
        Ok(cp)
    }

    /// Signs a checkpoint at the current head (if the log is not empty and the head has none).
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let head: Option<(i64, String)> = tx
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((seq, hash)) = head else {
            return Ok(None);
        };
        let existing = tx
            .query_row(
                "SELECT seq, hash, ts, signature FROM audit_checkpoint WHERE seq = ?1",
                [seq],
                checkpoint_from_row,
            )
            .optional()?;
        let cp = match existing {
            Some(cp) => cp,
            None => self.checkpoint_tx(&tx, seq as u64, &hash)?,
        };
        tx.commit()?;
        Ok(Some(cp))
    }

    /// The last record's (seq, hash), if any.
    pub fn audit_head(&self) -> Result<Option<(u64, String)>> {
        Ok(self
            .db()
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()?)
    }

    /// Records with seq in `range`, in seq order (at most `limit`).
    pub fn audit_records(
        &self,
        range: impl RangeBounds<u64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        let (lo, hi) = range_to_sql(&range);
        let conn = self.db();
        let mut st = conn.prepare(&format!(
            "SELECT {RECORD_COLS} FROM audit WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq LIMIT ?3"
        ))?;
        let rows = st
            .query_map(
                params![lo, hi, limit.min(i64::MAX as usize) as i64],
                record_from_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Records of one case, in seq order.
    pub fn audit_records_for_case(&self, case_id: i64) -> Result<Vec<AuditRecord>> {
        let conn = self.db();
        let mut st = conn.prepare(&format!(
            "SELECT {RECORD_COLS} FROM audit WHERE case_id = ?1 ORDER BY seq"
        ))?;
        let rows = st
            .query_map([case_id], record_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let conn = self.db();
        let mut st =
            conn.prepare("SELECT seq, hash, ts, signature FROM audit_checkpoint ORDER BY seq")?;
        let rows = st
            .query_map([], checkpoint_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Allowed records of `action` by `org_id` at or after `since_ms`.
    pub fn count_actions_since(&self, org_id: i64, action: &str, since_ms: i64) -> Result<u64> {
        let n: i64 = self.db().query_row(
            "SELECT count(*) FROM audit WHERE org_id = ?1 AND action = ?2 AND ts >= ?3 AND allowed = 1",
            params![org_id, action, since_ms],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Verifies the whole stored log: the hash chain record by record, every checkpoint's
    /// signature, that each checkpoint's hash is the chain's at its seq (so a cut tail or a
    /// rewritten chain shows), and that no due checkpoint is missing. Reads the rows directly,
    /// never trusting the triggers. Holds all records in memory.
    pub fn verify(&self) -> Result<VerifyReport> {
        let (items, cps) = {
            let conn = self.db();
            let mut st = conn.prepare(&format!("SELECT {RECORD_COLS} FROM audit ORDER BY seq"))?;
            let mut rows = st.query([])?;
            let mut items = Vec::new();
            while let Some(row) = rows.next()? {
                let seq = row.get::<_, i64>(0).map(|s| s.max(0) as u64).unwrap_or(0);
                items.push(match record_from_row(row) {
                    Ok(rec) => Item {
                        seq,
                        rec: Some(rec),
                        problem: String::new(),
                    },
                    Err(e) => Item {
                        seq,
                        rec: None,
                        problem: e.to_string(),
                    },
                });
            }
            drop(rows);
            let mut st =
                conn.prepare("SELECT seq, hash, ts, signature FROM audit_checkpoint ORDER BY seq")?;
            let mut cps = Vec::new();
            let mut rows = st.query([])?;
            while let Some(row) = rows.next()? {
                match checkpoint_from_row(row) {
                    Ok(cp) => cps.push(cp),
                    Err(e) => {
                        let seq = row.get::<_, i64>(0).unwrap_or(0).max(0) as u64;
                        // An unreadable checkpoint cannot verify.
                        cps.push(Checkpoint {
                            seq,
                            hash: String::new(),
                            ts: 0,
                            signature: e.to_string(),
                        })
                    }
                }
            }
            (items, cps)
        };
        Ok(verify_items(
            &items,
            &cps,
            &self.signing.verifying_key(),
            (1, GENESIS_HASH.to_string()),
        ))
    }

    /// Writes records with seq in `range` and their checkpoints as JSON Lines (see the module
    /// documentation), reading in pages so the database is not held while `w` is slow.
    pub fn export_jsonl<W: Write>(
        &self,
        w: W,
        range: impl RangeBounds<u64>,
    ) -> Result<ExportSummary> {
        let (lo, hi) = range_to_sql(&range);
        let head = self.audit_head()?.map_or(0, |h| h.0) as i64;
        let hi = hi.min(head);
        let (first, last) = if lo <= hi {
            (lo as u64, hi as u64)
        } else {
            (lo as u64, lo as u64 - 1)
        };
        let mut out = ExportWriter::new(w, &self.public_key_hex(), first, last)?;
        let mut next = first;
        while next <= last {
            let page = self.audit_records(next..=last, 1000)?;
            let Some(end) = page.last().map(|r| r.seq) else {
                break;
            };
            for r in &page {
                out.record(r)?;
            }
            next = end + 1;
        }
        for c in self
            .checkpoints()?
            .iter()
            .filter(|c| c.seq >= first && c.seq <= last)
        {
            out.checkpoint(c)?;
        }
        out.finish()
    }
}

/// Writes an export in the format of the module documentation: the header on
/// [`ExportWriter::new`], then [`record`](ExportWriter::record) lines in seq order, then
/// [`checkpoint`](ExportWriter::checkpoint) lines. Used by [`Governance::export_jsonl`] and by
/// other audit stores (the cluster's PostgreSQL log), so [`verify_with_public_key`] reads them
/// all.
pub struct ExportWriter<W: Write> {
    w: W,
    summary: ExportSummary,
}

impl<W: Write> ExportWriter<W> {
    /// Writes the header for records `first_seq..=last_seq` (`last_seq = first_seq - 1`: none)
    /// signed by the key whose public half is `public_key_hex`.
    pub fn new(w: W, public_key_hex: &str, first_seq: u64, last_seq: u64) -> Result<Self> {
        let header = ExportHeader {
            format: EXPORT_FORMAT.into(),
            version: 1,
            public_key: public_key_hex.to_string(),
            exported_at: now_ms(),
            first_seq,
            last_seq,
        };
        let mut out = ExportWriter {
            w,
            summary: ExportSummary {
                first_seq,
                last_seq,
                records: 0,
                checkpoints: 0,
            },
        };
        out.line("header", serde_json::to_value(&header).context("header")?)?;
        Ok(out)
    }

    pub fn record(&mut self, r: &AuditRecord) -> Result<()> {
        self.line("record", serde_json::to_value(r).context("record")?)?;
        self.summary.records += 1;
        Ok(())
    }

    /// A record line for a stored row that could not be read back as an [`AuditRecord`]
    /// (`seq`: its position): the verifier reports it as altered.
    pub fn unreadable_record(&mut self, seq: u64, problem: &str) -> Result<()> {
        self.line(
            "record",
            serde_json::json!({ "seq": seq, "unreadable": problem }),
        )?;
        self.summary.records += 1;
        Ok(())
    }

    pub fn checkpoint(&mut self, c: &Checkpoint) -> Result<()> {
        self.line("checkpoint", serde_json::to_value(c).context("checkpoint")?)?;
        self.summary.checkpoints += 1;
        Ok(())
    }

    /// Flushes the writer; the counts written.
    pub fn finish(mut self) -> Result<ExportSummary> {
        self.w.flush().map_err(export_io)?;
        Ok(self.summary)
    }

    fn line(&mut self, tag: &str, v: Value) -> Result<()> {
        let mut obj = serde_json::Map::new();
        obj.insert("type".into(), Value::String(tag.into()));
        if let Value::Object(m) = v {
            obj.extend(m);
        }
        serde_json::to_writer(&mut self.w, &Value::Object(obj)).context("writing export")?;
        self.w.write_all(b"\n").map_err(export_io)
    }
}

fn export_io(e: std::io::Error) -> GovError {
    GovError::Internal(anyhow::Error::new(e).context("writing export"))
}

/// Verifies an export written by [`Governance::export_jsonl`] with the installation's public
/// key (hex), without any database: an auditor's offline check. The key must come from a
/// trusted channel, not from the export's header. Extra checkpoints kept from earlier
/// exports can be appended to the input as further `checkpoint` lines.
pub fn verify_with_public_key<R: BufRead>(reader: R, public_key_hex: &str) -> Result<VerifyReport> {
    let key = parse_public_key(public_key_hex)?;
    let mut header: Option<ExportHeader> = None;
    let mut items = Vec::new();
    let mut cps = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| GovError::Invalid(format!("reading export: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                // Unparseable line: treat it as an unreadable record where it stands.
                items.push(Item {
                    seq: 0,
                    rec: None,
                    problem: format!("line {}: {e}", n + 1),
                });
                continue;
            }
        };
        let seq_hint = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
        match v.get("type").and_then(Value::as_str) {
            Some("header") if n == 0 => {
                let h: ExportHeader = serde_json::from_value(v)
                    .map_err(|e| GovError::Invalid(format!("export header: {e}")))?;
                if h.format != EXPORT_FORMAT || h.version != 1 {
                    return Err(GovError::Invalid(format!("not a {EXPORT_FORMAT} v1 file")));
                }
                header = Some(h);
            }
            Some("record") => match serde_json::from_value::<AuditRecord>(v) {
                Ok(rec) => items.push(Item {
                    seq: rec.seq,
                    rec: Some(rec),
                    problem: String::new(),
                }),
                Err(e) => items.push(Item {
                    seq: seq_hint,
                    rec: None,
                    problem: format!("line {}: {e}", n + 1),
                }),
            },
            Some("checkpoint") => match serde_json::from_value::<Checkpoint>(v) {
                Ok(cp) => cps.push(cp),
                Err(_) => cps.push(Checkpoint {
                    seq: seq_hint,
                    hash: String::new(),
                    ts: 0,
                    signature: String::new(),
                }),
            },
            other => {
                return Err(GovError::Invalid(format!(
                    "line {}: unexpected line type {other:?}",
                    n + 1
                )))
            }
        }
    }
    let first_seq = header
        .as_ref()
        .map(|h| h.first_seq)
        .or_else(|| items.first().map(|i| i.seq))
        .unwrap_or(1)
        .max(1);
    let start_prev = if first_seq == 1 {
        GENESIS_HASH.to_string()
    } else {
        // The link before a partial export cannot be checked here; checkpoints inside the
        // range authenticate everything up to them.
        items
            .first()
            .and_then(|i| i.rec.as_ref())
            .map_or_else(|| GENESIS_HASH.to_string(), |r| r.prev_hash.clone())
    };
    let mut report = verify_items(&items, &cps, &key, (first_seq, start_prev));
    // A tail cut from the file itself (no checkpoint after the cut) still shows against the
    // header's last_seq.
    if let (true, Some(h)) = (report.ok, &header) {
        let end = report.head_seq.unwrap_or(first_seq - 1);
        if end < h.last_seq {
            report.ok = false;
            report.first_bad = Some(bad(
                end + 1,
                TamperKind::Deleted,
                format!(
                    "the export header says records run to {} but they end at {end}",
                    h.last_seq
                ),
            ));
        }
    }
    Ok(report)
}

pub(crate) fn parse_public_key(hex_key: &str) -> Result<VerifyingKey> {
    let bytes = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| GovError::Invalid("public key must be 64 hex digits".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| GovError::Invalid(format!("bad public key: {e}")))
}
