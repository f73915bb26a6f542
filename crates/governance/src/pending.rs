//! Changes to another store announced before they are made, so that no interruption can
//! leave one done without its audit record (migration 2: `pending_change`).
//!
//! The embedded gallery and this database are two SQLite files: one transaction cannot span
//! both. An erasure therefore runs in three steps: [`Governance::begin_change`] stores what
//! is about to be done (the target, the record and receipt to write), the gallery deletes
//! and journals its report under the change's id in its own transaction
//! (`Gallery::delete_journaled`), and [`Governance::finish_change`] appends the records,
//! signs the receipt and drops the pending row in one transaction. Whoever opens the data
//! directory after an interruption finds the pending row and finishes it from the gallery's
//! journal (`visage_server::erasure::resume`); nothing the gallery did is left unrecorded.

use rusqlite::{params, OptionalExtension};
use serde_json::Value;

use crate::audit::{Actor, AuditEvent};
use crate::error::{GovError, Result};
use crate::receipt::Receipt;
use crate::util::{now_ms, random_bytes};
use crate::Governance;

/// A change announced and not yet finished.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingChange {
    /// 32 hex digits, random.
    pub id: String,
    /// What the change is (e.g. `erasure`, `delete`); the caller's vocabulary.
    pub kind: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// What the caller needs to finish it (target, records to write).
    pub json: Value,
}

/// A receipt to sign when a change is finished.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiptOrder {
    pub by: Actor,
    pub org_id: Option<i64>,
    pub kind: String,
    pub body: Value,
}

impl Governance {
    /// Announces a change before it is made; returns its id.
    pub fn begin_change(&self, kind: &str, json: &Value) -> Result<String> {
        let id = hex::encode(random_bytes::<16>()?);
        let text = serde_json::to_string(json).map_err(anyhow::Error::from)?;
        self.db().execute(
            "INSERT INTO pending_change (id, kind, created_at, json) VALUES (?1, ?2, ?3, ?4)",
            params![id, kind, now_ms(), text],
        )?;
        Ok(id)
    }

    /// Changes announced and not finished, oldest first.
    pub fn pending_changes(&self) -> Result<Vec<PendingChange>> {
        let conn = self.db();
        let mut st = conn
            .prepare("SELECT id, kind, created_at, json FROM pending_change ORDER BY created_at")?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(id, kind, created_at, json)| {
                Ok(PendingChange {
                    json: serde_json::from_str(&json).map_err(|e| {
                        GovError::Internal(anyhow::anyhow!(
                            "pending change {id} is unreadable: {e}"
                        ))
                    })?,
                    id,
                    kind,
                    created_at,
                })
            })
            .collect()
    }

    /// Finishes a change: signs and records the receipt if ordered, appends `events` (given
    /// the receipt, so they can name it), and drops the pending row, all in one transaction. [`GovError::NotFound`] when the change
    /// is not pending (finished or abandoned already, e.g. by another process): nothing is
    /// written then.
    pub fn finish_change(
        &self,
        id: &str,
        receipt: Option<ReceiptOrder>,
        events: impl FnOnce(Option<&Receipt>) -> Vec<AuditEvent>,
    ) -> Result<Option<Receipt>> {
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if tx.execute("DELETE FROM pending_change WHERE id = ?1", [id])? == 0 {
            return Err(GovError::NotFound(format!("no pending change {id}")));
        }
        let receipt = match receipt {
            Some(o) => Some(self.sign_receipt_tx(&tx, &o.by, o.org_id, &o.kind, o.body)?),
            None => None,
        };
        for ev in events(receipt.as_ref()) {
            self.append_tx(&tx, ev)?;
        }
        tx.commit()?;
        Ok(receipt)
    }

    /// Drops a change that was not made (nothing to record). `false` when it was not pending.
    pub fn abandon_change(&self, id: &str) -> Result<bool> {
        Ok(self
            .db()
            .execute("DELETE FROM pending_change WHERE id = ?1", [id])?
            > 0)
    }

    /// Whether a change is still pending.
    pub fn is_pending(&self, id: &str) -> Result<bool> {
        Ok(self
            .db()
            .query_row("SELECT 1 FROM pending_change WHERE id = ?1", [id], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }
}
