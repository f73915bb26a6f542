//! Governance of a cluster deployment in PostgreSQL (migration 4): organisations, cases and
//! the facts the policy decision needs (`visage_governance::AuthzFacts`), so every API
//! process decides with the same code as the embedded server (`visage_governance::decide`)
//! over the same rows. Keys and their organisation: `keys.rs`; user accounts and sessions:
//! `accounts.rs`; the audit log: `audit.rs`. Organisation and case changes commit in one
//! transaction with their audit record.

use postgres::Row;
use visage_governance::{
    Actor, AuditEvent, AuthzFacts, Case, CaseStatus, GovError, NewCase, NewOrg, OrgKind, OrgStatus,
    OrgUpdate, Organisation, Principal, Result,
};

use crate::audit::PgAudit;
use crate::pg::Pool;

/// The organisation columns, unqualified and as `o.` for joins; [`org_from_row`] reads them.
pub const ORG_COLS: &str =
    "id, name, kind, jurisdiction, status, trial_expires_at, search_quota, created_at";
pub const ORG_COLS_O: &str = "o.id, o.name, o.kind, o.jurisdiction, o.status, \
                              o.trial_expires_at, o.search_quota, o.created_at";
const CASE_COLS: &str = "id, org_id, number, purpose, legal_basis, offence_category, \
                         created_by, created_at, status, closed_at";

pub(crate) fn internal(e: impl Into<anyhow::Error>) -> GovError {
    GovError::Internal(e.into())
}

/// A unique violation becomes `Conflict(msg)`; anything else is internal.
pub(crate) fn pg_err(e: postgres::Error, conflict: impl FnOnce() -> String) -> GovError {
    if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) {
        GovError::Conflict(conflict())
    } else {
        internal(e)
    }
}

fn bad(what: &str, v: &str) -> GovError {
    internal(anyhow::anyhow!("unknown {what} {v:?} in the database"))
}

/// A search quota as PostgreSQL's BIGINT (one past its range is refused, not wrapped).
fn quota_sql(q: Option<u64>) -> Result<Option<i64>> {
    q.map(|q| {
        i64::try_from(q).map_err(|_| GovError::Invalid(format!("search_quota {q} is too large")))
    })
    .transpose()
}

/// The organisation whose columns start at `at` ([`ORG_COLS`] order).
pub fn org_from_row(r: &Row, at: usize) -> anyhow::Result<Organisation> {
    let kind: String = r.get(at + 2);
    let status: String = r.get(at + 4);
    Ok(Organisation {
        id: r.get(at),
        name: r.get(at + 1),
        kind: OrgKind::parse(&kind).ok_or_else(|| anyhow::anyhow!("unknown kind {kind:?}"))?,
        jurisdiction: r.get(at + 3),
        status: OrgStatus::parse(&status)
            .ok_or_else(|| anyhow::anyhow!("unknown status {status:?}"))?,
        trial_expires_at: r.get(at + 5),
        search_quota: r.get::<_, Option<i64>>(at + 6).map(|q| q as u64),
        created_at: r.get(at + 7),
    })
}

fn case_from_row(r: &Row) -> Result<Case> {
    let status: String = r.get(8);
    Ok(Case {
        id: r.get(0),
        org_id: r.get(1),
        number: r.get(2),
        purpose: r.get(3),
        legal_basis: r.get(4),
        offence_category: r.get(5),
        created_by: r.get(6),
        created_at: r.get(7),
        status: CaseStatus::parse(&status).ok_or_else(|| bad("case status", &status))?,
        closed_at: r.get(9),
    })
}

/// Creates an organisation (same rules as the embedded store: `NewOrg::validated`), audited
/// as `create_org` in the same transaction.
pub fn create_org(pool: &Pool, audit: &PgAudit, by: &Actor, new: &NewOrg) -> Result<Organisation> {
    let new = new.validated()?;
    let quota = quota_sql(new.search_quota)?;
    let mut c = pool.get().map_err(internal)?;
    let mut tx = c.transaction().map_err(internal)?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO organisation (name, kind, jurisdiction, status, trial_expires_at, \
                 search_quota, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 RETURNING {ORG_COLS}"
            ),
            &[
                &new.name,
                &new.kind.as_str(),
                &new.jurisdiction,
                &new.status.as_str(),
                &new.trial_expires_at,
                &quota,
                &visage_gallery::gallery::now(),
            ],
        )
        .map_err(|e| {
            pg_err(e, || {
                format!("an organisation named '{}' already exists", new.name)
            })
        })?;
    let org = org_from_row(&row, 0)?;
    audit
        .append_in(
            &mut tx,
            AuditEvent::admin(by, Some(org.id), "create_org")
                .objects([format!("org:{}", org.id)])
                .details(serde_json::to_value(&org).map_err(internal)?),
        )
        .map_err(internal)?;
    tx.commit().map_err(internal)?;
    Ok(org)
}

pub fn orgs(pool: &Pool) -> Result<Vec<Organisation>> {
    let rows = pool
        .get()
        .map_err(internal)?
        .query(
            &format!("SELECT {ORG_COLS} FROM organisation ORDER BY id"),
            &[],
        )
        .map_err(internal)?;
    rows.iter()
        .map(|r| org_from_row(r, 0).map_err(GovError::Internal))
        .collect()
}

pub fn org_by_name(pool: &Pool, name: &str) -> Result<Organisation> {
    let row = pool
        .get()
        .map_err(internal)?
        .query_opt(
            &format!("SELECT {ORG_COLS} FROM organisation WHERE name = $1"),
            &[&name.trim()],
        )
        .map_err(internal)?
        .ok_or_else(|| GovError::NotFound(format!("no organisation named '{}'", name.trim())))?;
    org_from_row(&row, 0).map_err(GovError::Internal)
}

/// Sets an organisation's status (`suspended` stops everything it does), audited.
pub fn set_org_status(
    pool: &Pool,
    audit: &PgAudit,
    by: &Actor,
    id: i64,
    status: OrgStatus,
) -> Result<Organisation> {
    let mut c = pool.get().map_err(internal)?;
    let mut tx = c.transaction().map_err(internal)?;
    let row = tx
        .query_opt(
            &format!("UPDATE organisation SET status = $2 WHERE id = $1 RETURNING {ORG_COLS}"),
            &[&id, &status.as_str()],
        )
        .map_err(internal)?
        .ok_or_else(|| GovError::NotFound(format!("no organisation {id}")))?;
    let org = org_from_row(&row, 0)?;
    audit
        .append_in(
            &mut tx,
            AuditEvent::admin(by, Some(id), "set_org_status")
                .objects([format!("org:{id}")])
                .details(serde_json::json!({ "status": status.as_str() })),
        )
        .map_err(internal)?;
    tx.commit().map_err(internal)?;
    Ok(org)
}

/// Changes an organisation's status, trial expiry or search quota (the embedded
/// `Governance::update_org`: a trial needs an expiry), audited as `update_org` with the change
/// in the same transaction.
pub fn update_org(
    pool: &Pool,
    audit: &PgAudit,
    by: &Actor,
    id: i64,
    update: &OrgUpdate,
) -> Result<Organisation> {
    let mut c = pool.get().map_err(internal)?;
    let mut tx = c.transaction().map_err(internal)?;
    let row = tx
        .query_opt(
            &format!("SELECT {ORG_COLS} FROM organisation WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .map_err(internal)?
        .ok_or_else(|| GovError::NotFound(format!("no organisation {id}")))?;
    let mut org = org_from_row(&row, 0)?;
    update.apply(&mut org)?;
    let quota = quota_sql(org.search_quota)?;
    tx.execute(
        "UPDATE organisation SET status = $2, trial_expires_at = $3, search_quota = $4 \
         WHERE id = $1",
        &[&id, &org.status.as_str(), &org.trial_expires_at, &quota],
    )
    .map_err(internal)?;
    audit
        .append_in(
            &mut tx,
            AuditEvent::admin(by, Some(id), "update_org")
                .objects([format!("org:{id}")])
                .details(serde_json::to_value(update).map_err(internal)?),
        )
        .map_err(internal)?;
    tx.commit().map_err(internal)?;
    Ok(org)
}

/// The organisation with this id.
pub fn get_org(pool: &Pool, id: i64) -> Result<Organisation> {
    let row = pool
        .get()
        .map_err(internal)?
        .query_opt(
            &format!("SELECT {ORG_COLS} FROM organisation WHERE id = $1"),
            &[&id],
        )
        .map_err(internal)?
        .ok_or_else(|| GovError::NotFound(format!("no organisation {id}")))?;
    Ok(org_from_row(&row, 0)?)
}

/// Opens a case in the principal's organisation (same rules as the embedded store:
/// `NewCase::validated`, numbers unique per organisation), audited as `create_case`.
pub fn create_case(pool: &Pool, audit: &PgAudit, by: &Principal, new: &NewCase) -> Result<Case> {
    let new = new.validated()?;
    let mut c = pool.get().map_err(internal)?;
    let mut tx = c.transaction().map_err(internal)?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO case_file (org_id, number, purpose, legal_basis, offence_category, \
                 created_by, created_at, status) VALUES ($1, $2, $3, $4, $5, $6, $7, 'open') \
                 RETURNING {CASE_COLS}"
            ),
            &[
                &by.org.id,
                &new.number,
                &new.purpose,
                &new.legal_basis,
                &new.offence_category,
                &by.user_id,
                &visage_gallery::gallery::now(),
            ],
        )
        .map_err(|e| pg_err(e, || format!("case number '{}' already exists", new.number)))?;
    let case = case_from_row(&row)?;
    audit
        .append_in(
            &mut tx,
            AuditEvent::admin(&Actor::from(by), Some(by.org.id), "create_case")
                .case(case.id)
                .objects([format!("case:{}", case.id)])
                .details(serde_json::json!({
                    "number": case.number,
                    "purpose": case.purpose,
                    "legal_basis": case.legal_basis,
                    "offence_category": case.offence_category,
                })),
        )
        .map_err(internal)?;
    tx.commit().map_err(internal)?;
    Ok(case)
}

pub fn get_case(pool: &Pool, id: i64) -> Result<Case> {
    let row = pool
        .get()
        .map_err(internal)?
        .query_opt(
            &format!("SELECT {CASE_COLS} FROM case_file WHERE id = $1"),
            &[&id],
        )
        .map_err(internal)?
        .ok_or_else(|| GovError::NotFound(format!("no case {id}")))?;
    case_from_row(&row)
}

/// Cases of one organisation, newest first.
pub fn list_cases(pool: &Pool, org_id: i64) -> Result<Vec<Case>> {
    let rows = pool
        .get()
        .map_err(internal)?
        .query(
            &format!("SELECT {CASE_COLS} FROM case_file WHERE org_id = $1 ORDER BY id DESC"),
            &[&org_id],
        )
        .map_err(internal)?;
    rows.iter().map(case_from_row).collect()
}

/// Closes a case (no further searches under it); closing a closed case is a conflict.
pub fn close_case(pool: &Pool, audit: &PgAudit, by: &Actor, id: i64) -> Result<Case> {
    let mut c = pool.get().map_err(internal)?;
    let mut tx = c.transaction().map_err(internal)?;
    let row = tx
        .query_opt(
            &format!("SELECT {CASE_COLS} FROM case_file WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .map_err(internal)?
        .ok_or_else(|| GovError::NotFound(format!("no case {id}")))?;
    if case_from_row(&row)?.status == CaseStatus::Closed {
        return Err(GovError::Conflict(format!("case {id} is already closed")));
    }
    let row = tx
        .query_one(
            &format!(
                "UPDATE case_file SET status = 'closed', closed_at = $2 WHERE id = $1 \
                 RETURNING {CASE_COLS}"
            ),
            &[&id, &visage_gallery::gallery::now()],
        )
        .map_err(internal)?;
    let case = case_from_row(&row)?;
    audit
        .append_in(
            &mut tx,
            AuditEvent::admin(by, Some(case.org_id), "close_case")
                .case(id)
                .objects([format!("case:{id}")]),
        )
        .map_err(internal)?;
    tx.commit().map_err(internal)?;
    Ok(case)
}

/// The policy decision's facts from PostgreSQL: cases from `case_file`, the monthly search
/// count from the audit log (index `audit_log_org_action_ts`).
pub struct PgFacts<'a>(pub &'a Pool);

impl AuthzFacts for PgFacts<'_> {
    fn case_org_status(&self, case_id: i64) -> Result<Option<(i64, String)>> {
        Ok(self
            .0
            .get()
            .map_err(internal)?
            .query_opt(
                "SELECT org_id, status FROM case_file WHERE id = $1",
                &[&case_id],
            )
            .map_err(internal)?
            .map(|r| (r.get(0), r.get(1))))
    }

    fn allowed_actions_since(&self, org_id: i64, action: &str, since_ms: i64) -> Result<u64> {
        let n: i64 = self
            .0
            .get()
            .map_err(internal)?
            .query_one(
                "SELECT COUNT(*) FROM audit_log WHERE org_id = $1 AND action = $2 \
                 AND ts >= $3 AND allowed",
                &[&org_id, &action, &since_ms],
            )
            .map_err(internal)?
            .get(0);
        Ok(n as u64)
    }
}
