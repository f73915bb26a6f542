//! Signed receipts and public requests of a cluster deployment (migration 5): the embedded
//! `Governance::sign_receipt` / `get_receipt` and the public portal's request table, in
//! PostgreSQL. A receipt row, its audit record (action `receipt`) and whatever it attests
//! (the public request and its own audit record) commit in one transaction, so there is never
//! a receipt without its record nor a request without its receipt.
//!
//! Receipts are signed with the cluster's audit key (`audit_key_file`), so they verify with
//! the public key auditors already hold (`visage_governance::Receipt::verify`).

use anyhow::{Context, Result};
use postgres::Transaction;
use serde_json::Value;
use visage_governance::{Actor, AuditEvent, Receipt};

use crate::audit::PgAudit;
use crate::pg::Pool;

/// Stores `receipt` and appends its audit record inside `tx`.
pub fn store_in(
    tx: &mut Transaction<'_>,
    audit: &PgAudit<'_>,
    receipt: &Receipt,
    by: &Actor,
    org_id: Option<i64>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO receipt (id, kind, issued_at, json) VALUES ($1, $2, $3, $4)",
        &[
            &receipt.id,
            &receipt.kind,
            &receipt.issued_at,
            &serde_json::to_string(receipt)?,
        ],
    )
    .context("storing the receipt")?;
    audit.append_in(tx, receipt.audit_event(by, org_id))?;
    Ok(())
}

/// Issues a receipt of `kind` for `body` and records it, together with `event` (the audit
/// record of what it attests, e.g. an erasure) in one transaction.
pub fn issue(
    pool: &Pool,
    audit: &PgAudit<'_>,
    by: &Actor,
    org_id: Option<i64>,
    kind: &str,
    body: Value,
    event: Option<AuditEvent>,
) -> Result<Receipt> {
    pool.in_transaction("the receipt", |tx| {
        issue_in(tx, audit, by, org_id, kind, body, event)
    })
}

/// [`issue`] inside the caller's transaction, so the receipt and its records commit with
/// what it attests (an erasure: `ClusterStore::delete_recorded`).
pub fn issue_in(
    tx: &mut Transaction<'_>,
    audit: &PgAudit<'_>,
    by: &Actor,
    org_id: Option<i64>,
    kind: &str,
    body: Value,
    event: Option<AuditEvent>,
) -> Result<Receipt> {
    let receipt = Receipt::issue(audit.key(), kind, body)?;
    if let Some(ev) = event {
        audit.append_in(tx, ev)?;
    }
    store_in(tx, audit, &receipt, by, org_id)?;
    Ok(receipt)
}

/// A receipt issued by this cluster, by id.
pub fn get(pool: &Pool, id: &str) -> Result<Option<Receipt>> {
    let mut c = pool.get()?;
    match c.query_opt("SELECT json FROM receipt WHERE id = $1", &[&id])? {
        Some(r) => Ok(Some(serde_json::from_str(r.get::<_, &str>(0))?)),
        None => Ok(None),
    }
}

/// A public request as stored (no selfies ever).
#[derive(Debug, Clone)]
pub struct PublicRequest {
    pub id: String,
    /// `opt_out` or `access`.
    pub kind: String,
    pub status: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub receipt_id: Option<String>,
    pub summary: Value,
}

/// Records a completed public request: a receipt of kind `request.kind` over `summary`, the
/// request's own audit record (`event`) and the request row with the contact, in one
/// transaction. The public actor signs nothing of its own: the receipt is the cluster's.
pub fn record_public_request(
    pool: &Pool,
    audit: &PgAudit<'_>,
    request_id: &str,
    kind: &str,
    contact: &str,
    summary: Value,
    event: impl FnOnce(&Receipt) -> AuditEvent,
) -> Result<Receipt> {
    pool.in_transaction("the public request", |tx| {
        record_public_request_in(tx, audit, request_id, kind, contact, summary, event)
    })
}

/// [`record_public_request`] inside the caller's transaction.
pub fn record_public_request_in(
    tx: &mut Transaction<'_>,
    audit: &PgAudit<'_>,
    request_id: &str,
    kind: &str,
    contact: &str,
    summary: Value,
    event: impl FnOnce(&Receipt) -> AuditEvent,
) -> Result<Receipt> {
    let receipt = Receipt::issue(audit.key(), kind, summary.clone())?;
    store_in(tx, audit, &receipt, &Actor::public(), None)?;
    audit.append_in(tx, event(&receipt))?;
    tx.execute(
        "INSERT INTO public_request (id, kind, status, created_at, contact, receipt_id, summary) \
         VALUES ($1, $2, 'completed', $3, $4, $5, $6)",
        &[
            &request_id,
            &kind,
            &receipt.issued_at,
            &contact,
            &receipt.id,
            &summary.to_string(),
        ],
    )
    .context("storing the public request")?;
    Ok(receipt)
}

/// A public request by id (the id is the requester's secret).
pub fn public_request(pool: &Pool, id: &str) -> Result<Option<PublicRequest>> {
    let mut c = pool.get()?;
    let row = c.query_opt(
        "SELECT kind, status, created_at, receipt_id, summary FROM public_request WHERE id = $1",
        &[&id],
    )?;
    Ok(row.map(|r| PublicRequest {
        id: id.to_string(),
        kind: r.get(0),
        status: r.get(1),
        created_at: r.get(2),
        receipt_id: r.get(3),
        summary: serde_json::from_str(r.get::<_, &str>(4)).unwrap_or(Value::Null),
    }))
}
