//! Cases (every search is made under one) and case reports built from the audit log.

use crate::accounts::{string_enum, Principal};
use crate::audit::{Actor, AuditEvent};
use crate::error::{GovError, Result};
use crate::util::{html_escape, now_ms, now_s};
use crate::Governance;
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

string_enum!(
    /// A case is open until closed; closed cases allow no further searches.
    CaseStatus { Open = "open", Closed = "closed" }
);

/// An investigation case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub id: i64,
    pub org_id: i64,
    /// Unique within the organisation (e.g. the agency's own case number).
    pub number: String,
    pub purpose: String,
    pub legal_basis: String,
    pub offence_category: String,
    pub created_by: i64,
    pub created_at: i64,
    pub status: CaseStatus,
    pub closed_at: Option<i64>,
}

/// Input of [`Governance::create_case`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewCase {
    pub number: String,
    pub purpose: String,
    pub legal_basis: String,
    pub offence_category: String,
}

/// One search (or verification) recorded under a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseSearch {
    /// Audit record seq (the search's `audit_id`).
    pub audit_seq: u64,
    /// Unix milliseconds.
    pub ts: i64,
    pub actor_user_id: Option<i64>,
    pub actor: String,
    pub action: String,
    pub probe_sha256: Option<String>,
    pub result_count: Option<u64>,
    /// The face ids returned (the record's object ids).
    pub face_ids: Vec<String>,
    pub allowed: bool,
    pub rule: String,
    pub reason: String,
    /// The purpose given with the search, if recorded in the details.
    pub purpose: Option<String>,
    pub record_hash: String,
}

/// Everything done under a case, from the audit log; serialisable to JSON, printable as HTML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseReport {
    pub case: Case,
    pub org_name: String,
    pub created_by_username: String,
    /// Unix milliseconds.
    pub generated_at: i64,
    pub searches: Vec<CaseSearch>,
    /// Other audit records of the case (creation, closing, exports...): (seq, ts, actor, action).
    pub other_events: Vec<(u64, i64, String, String)>,
    /// The audit chain head when the report was made, so it can be checked against the log.
    pub audit_head_seq: Option<u64>,
    pub audit_head_hash: Option<String>,
}

const CASE_COLS: &str = "id, org_id, number, purpose, legal_basis, offence_category, created_by, \
                         created_at, status, closed_at";

fn case_from_row(r: &Row) -> rusqlite::Result<Case> {
    let status: String = r.get(8)?;
    Ok(Case {
        id: r.get(0)?,
        org_id: r.get(1)?,
        number: r.get(2)?,
        purpose: r.get(3)?,
        legal_basis: r.get(4)?,
        offence_category: r.get(5)?,
        created_by: r.get(6)?,
        created_at: r.get(7)?,
        status: CaseStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                8,
                rusqlite::types::Type::Text,
                format!("unknown case status '{status}'").into(),
            )
        })?,
        closed_at: r.get(9)?,
    })
}

fn required(what: &str, s: &str, max: usize) -> Result<String> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > max {
        return Err(GovError::Invalid(format!(
            "{what} must be 1-{max} characters"
        )));
    }
    Ok(t.to_string())
}

impl NewCase {
    /// The fields trimmed and checked: each is required, with a maximum length (number 100,
    /// purpose 2000, legal basis 500, offence category 200 characters). Both governance
    /// stores (this crate's, a cluster's) open cases from a validated `NewCase`.
    pub fn validated(&self) -> Result<NewCase> {
        Ok(NewCase {
            number: required("case number", &self.number, 100)?,
            purpose: required("purpose", &self.purpose, 2000)?,
            legal_basis: required("legal basis", &self.legal_basis, 500)?,
            offence_category: required("offence category", &self.offence_category, 200)?,
        })
    }
}

impl Governance {
    /// Opens a case in the principal's organisation, created by the principal.
    pub fn create_case(&self, by: &Principal, new: &NewCase) -> Result<Case> {
        let NewCase {
            number,
            purpose,
            legal_basis,
            offence_category: offence,
        } = new.validated()?;
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO case_file (org_id, number, purpose, legal_basis, offence_category,
                                    created_by, created_at, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open')",
            params![
                by.org.id,
                number,
                purpose,
                legal_basis,
                offence,
                by.user_id,
                now_s()
            ],
        )
        .map_err(|e| match GovError::from(e) {
            GovError::Conflict(_) => {
                GovError::Conflict(format!("case number '{number}' already exists"))
            }
            other => other,
        })?;
        let id = tx.last_insert_rowid();
        let case = tx.query_row(
            &format!("SELECT {CASE_COLS} FROM case_file WHERE id = ?1"),
            [id],
            case_from_row,
        )?;
        self.append_tx(
            &tx,
            AuditEvent::admin(&Actor::from(by), Some(by.org.id), "create_case")
                .case(id)
                .objects([format!("case:{id}")])
                .details(serde_json::json!({
                    "number": case.number,
                    "purpose": case.purpose,
                    "legal_basis": case.legal_basis,
                    "offence_category": case.offence_category,
                })),
        )?;
        tx.commit()?;
        Ok(case)
    }

    pub fn get_case(&self, id: i64) -> Result<Case> {
        self.db()
            .query_row(
                &format!("SELECT {CASE_COLS} FROM case_file WHERE id = ?1"),
                [id],
                case_from_row,
            )
            .optional()?
            .ok_or_else(|| GovError::NotFound(format!("no case {id}")))
    }

    /// Cases of one organisation, newest first.
    pub fn list_cases(&self, org_id: i64) -> Result<Vec<Case>> {
        let conn = self.db();
        let mut st = conn.prepare(&format!(
            "SELECT {CASE_COLS} FROM case_file WHERE org_id = ?1 ORDER BY id DESC"
        ))?;
        let rows = st
            .query_map([org_id], case_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Closes a case; closing a closed case is a conflict.
    pub fn close_case(&self, by: &Actor, id: i64) -> Result<Case> {
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let case = tx
            .query_row(
                &format!("SELECT {CASE_COLS} FROM case_file WHERE id = ?1"),
                [id],
                case_from_row,
            )
            .optional()?
            .ok_or_else(|| GovError::NotFound(format!("no case {id}")))?;
        if case.status == CaseStatus::Closed {
            return Err(GovError::Conflict(format!("case {id} is already closed")));
        }
        tx.execute(
            "UPDATE case_file SET status = 'closed', closed_at = ?2 WHERE id = ?1",
            params![id, now_s()],
        )?;
        let case = tx.query_row(
            &format!("SELECT {CASE_COLS} FROM case_file WHERE id = ?1"),
            [id],
            case_from_row,
        )?;
        self.append_tx(
            &tx,
            AuditEvent::admin(by, Some(case.org_id), "close_case")
                .case(id)
                .objects([format!("case:{id}")]),
        )?;
        tx.commit()?;
        Ok(case)
    }

    /// Builds the report of a case from the audit log: every `search` and `verify` record
    /// with the case's id (allowed or denied), and the other events of the case.
    pub fn case_report(&self, case_id: i64) -> Result<CaseReport> {
        let case = self.get_case(case_id)?;
        let org_name = self.get_org(case.org_id)?.name;
        let created_by_username = self.get_user(case.created_by)?.username;
        let records = self.audit_records_for_case(case_id)?;
        let head = self.audit_head()?;
        Ok(CaseReport::from_records(
            case,
            org_name,
            created_by_username,
            records,
            head,
        ))
    }
}

impl CaseReport {
    /// The report of `case` from its audit records (every record with its id, in seq order)
    /// and the log's head (seq, hash) when they were read; either deployment's log.
    pub fn from_records(
        case: Case,
        org_name: String,
        created_by_username: String,
        records: Vec<crate::AuditRecord>,
        head: Option<(u64, String)>,
    ) -> CaseReport {
        let mut searches = Vec::new();
        let mut other_events = Vec::new();
        for r in records {
            if r.action == "search" || r.action == "verify" {
                searches.push(CaseSearch {
                    audit_seq: r.seq,
                    ts: r.ts,
                    actor_user_id: r.actor_user_id,
                    actor: r.actor,
                    action: r.action,
                    probe_sha256: r.probe_sha256,
                    result_count: r.result_count,
                    face_ids: r.object_ids,
                    allowed: r.allowed,
                    rule: r.rule,
                    reason: r.reason,
                    purpose: r
                        .details
                        .get("purpose")
                        .and_then(|v| v.as_str())
                        .map(String::from),
                    record_hash: r.hash,
                });
            } else {
                other_events.push((r.seq, r.ts, r.actor, r.action));
            }
        }
        CaseReport {
            case,
            org_name,
            created_by_username,
            generated_at: now_ms(),
            searches,
            other_events,
            audit_head_seq: head.as_ref().map(|h| h.0),
            audit_head_hash: head.map(|h| h.1),
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of unix milliseconds.
pub fn format_utc_ms(ms: i64) -> String {
    let s = ms.div_euclid(1000);
    let days = s.div_euclid(86_400);
    let secs = s.rem_euclid(86_400);
    // civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

impl CaseReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// A self-contained printable HTML page (inline CSS, no scripts, no external resources);
    /// every piece of text is escaped.
    pub fn to_html(&self) -> String {
        let e = html_escape;
        let c = &self.case;
        let mut h = String::new();
        h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
        h.push_str(&format!("<title>Case report {}</title>", e(&c.number)));
        h.push_str(
            "<style>body{font-family:system-ui,sans-serif;margin:2em;color:#111}\
             table{border-collapse:collapse;width:100%;margin:1em 0}\
             th,td{border:1px solid #999;padding:4px 6px;text-align:left;vertical-align:top;\
             font-size:0.9em}th{background:#eee}code{font-size:0.85em;word-break:break-all}\
             .deny{color:#a00}dl{display:grid;grid-template-columns:max-content auto;gap:2px 1em}\
             dt{font-weight:bold}@media print{body{margin:0}}</style></head><body>\n",
        );
        h.push_str(&format!("<h1>Case {}</h1>\n<dl>", e(&c.number)));
        let rows: [(&str, String); 9] = [
            ("Organisation", self.org_name.clone()),
            ("Status", c.status.to_string()),
            ("Purpose", c.purpose.clone()),
            ("Legal basis", c.legal_basis.clone()),
            ("Offence category", c.offence_category.clone()),
            ("Opened by", self.created_by_username.clone()),
            ("Opened", format_utc_ms(c.created_at * 1000)),
            (
                "Closed",
                c.closed_at
                    .map(|t| format_utc_ms(t * 1000))
                    .unwrap_or_else(|| "-".into()),
            ),
            ("Report generated", format_utc_ms(self.generated_at)),
        ];
        for (k, v) in rows {
            h.push_str(&format!("<dt>{}</dt><dd>{}</dd>", e(k), e(&v)));
        }
        h.push_str("</dl>\n");
        h.push_str(&format!("<h2>Searches ({})</h2>\n", self.searches.len()));
        h.push_str(
            "<table><thead><tr><th>Audit #</th><th>When</th><th>Who</th><th>Action</th>\
             <th>Purpose</th><th>Probe SHA-256</th><th>Results</th><th>Face ids</th>\
             <th>Decision</th></tr></thead><tbody>\n",
        );
        for s in &self.searches {
            let decision = format!(
                "{} ({}){}",
                if s.allowed { "allowed" } else { "denied" },
                s.rule,
                if s.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", s.reason)
                }
            );
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td>\
                 <td>{}</td><td><code>{}</code></td><td class=\"{}\">{}</td></tr>\n",
                s.audit_seq,
                e(&format_utc_ms(s.ts)),
                e(&s.actor),
                e(&s.action),
                e(s.purpose.as_deref().unwrap_or("")),
                e(s.probe_sha256.as_deref().unwrap_or("-")),
                s.result_count.map_or("-".to_string(), |n| n.to_string()),
                e(&s.face_ids.join(", ")),
                if s.allowed { "allow" } else { "deny" },
                e(&decision),
            ));
        }
        h.push_str("</tbody></table>\n");
        if !self.other_events.is_empty() {
            h.push_str(
                "<h2>Other events</h2>\n<table><thead><tr><th>Audit #</th><th>When</th>\
                        <th>Who</th><th>Action</th></tr></thead><tbody>\n",
            );
            for (seq, ts, actor, action) in &self.other_events {
                h.push_str(&format!(
                    "<tr><td>{seq}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                    e(&format_utc_ms(*ts)),
                    e(actor),
                    e(action)
                ));
            }
            h.push_str("</tbody></table>\n");
        }
        if let (Some(seq), Some(hash)) = (self.audit_head_seq, &self.audit_head_hash) {
            h.push_str(&format!(
                "<p>Audit log head when generated: record {seq}, hash <code>{}</code>. \
                 Check with <code>visage audit verify</code>.</p>\n",
                e(hash)
            ));
        }
        h.push_str("</body></html>\n");
        h
    }
}
