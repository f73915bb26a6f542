//! Governance endpoints: cases and reports, the audit log, organisations, users, API keys,
//! the policy, face deletion and erasure with signed receipts.

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use visage_gallery::DeleteTarget;
use visage_governance::{
    Action, Actor, AuditEvent, AuditRecord, AuthzContext, Case, Decision, NewCase, Principal,
};

use crate::auth::{is_operator, Auth};
use crate::input;
use crate::{authorize, blocking, face_id, ApiError, ApiResult, AppState, ErrorBody};

fn none() -> AuthzContext {
    AuthzContext::default()
}

pub(crate) fn int_id(raw: &str, what: &str) -> ApiResult<i64> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("{what} id {raw:?} is not an integer")))
}

/// 403 for an admin of another organisation trying an operator-only change; audited.
fn operator_only(st: &AppState, p: &Principal, action: Action, what: &str) -> ApiResult<()> {
    if is_operator(st, p) {
        return Ok(());
    }
    let d = operator_only_refusal(what);
    st.gov.append(AuditEvent::decision(p, action, &d))?;
    Err(ApiError::denied(&d))
}

/// The refusal of an action reserved to the operator organisation's administrators.
pub(crate) fn operator_only_refusal(what: &str) -> Decision {
    Decision {
        allowed: false,
        rule: "builtin:operator_only".into(),
        reason: format!("only administrators of the operator organisation may {what}"),
    }
}

/// The audit log export as a download (`visage-audit.jsonl`).
pub(crate) fn audit_export_response(bytes: Vec<u8>) -> Response {
    let mut res = bytes.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"visage-audit.jsonl\""),
    );
    res
}

// ---- faces -----------------------------------------------------------------------------------

/// Deletes one face (row, vector, blobs no longer referenced; tombstoned). Audited with the
/// deletion report.
#[utoipa::path(delete, path = "/v1/faces/{id}", tag = "faces",
    params(("id" = i64, Path, description = "Face id")),
    responses(
        (status = 200, description = "DeleteReport", body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action delete)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`read_only`", body = ErrorBody),
    ))]
pub(crate) async fn delete_face(
    State(st): State<AppState>,
    Auth(p): Auth,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Response> {
    let id = face_id(&raw)?;
    let d = authorize(&st, &p, Action::Delete, &none())?;
    st.writable()?;
    blocking(&st, move |st| {
        if st.gallery.face(id).map_err(ApiError::internal)?.is_none() {
            return Err(ApiError::not_found(format!("no face with id {id}")));
        }
        let order = crate::erasure::Order {
            targets: vec![DeleteTarget::Faces(vec![id])],
            event: AuditEvent::decision(&p, Action::Delete, &d),
            report_in_details: true,
            counts_in_details: false,
            receipt: None,
        };
        let done = crate::erasure::run(&st.gallery, &st.gov, order).map_err(ApiError::internal)?;
        if done.report.faces == 0 {
            return Err(ApiError::not_found(format!("no face with id {id}")));
        }
        Ok(Json(done.report).into_response())
    })
    .await
}

/// The audit record of a face deletion by id.
pub(crate) fn delete_event(
    p: &Principal,
    d: &Decision,
    report: &visage_gallery::DeleteReport,
) -> AuditEvent {
    AuditEvent::decision(p, Action::Delete, d)
        .objects(report.face_ids.iter().map(|i| i.to_string()))
        .result_count(report.faces as u64)
        .details(serde_json::to_value(report).unwrap_or_default())
}

// ---- cases -----------------------------------------------------------------------------------

/// The case if it belongs to the caller's organisation (404 otherwise).
fn own_case(st: &AppState, p: &Principal, id: i64) -> ApiResult<Case> {
    match st.gov.get_case(id) {
        Ok(c) if c.org_id == p.org.id => Ok(c),
        Ok(_) | Err(visage_governance::GovError::NotFound(_)) => {
            Err(ApiError::not_found(format!("no case {id}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens a case in the caller's organisation.
#[utoipa::path(post, path = "/v1/cases", tag = "cases",
    request_body(content = Object, description = "NewCase: number, purpose, legal_basis, \
        offence_category"),
    responses(
        (status = 201, description = "Case", body = Object),
        (status = 400, description = "`bad_json` or `invalid`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action manage_cases)", body = ErrorBody),
        (status = 409, description = "`conflict`: number already used", body = ErrorBody),
    ))]
pub(crate) async fn create_case(
    State(st): State<AppState>,
    Auth(p): Auth,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    authorize(&st, &p, Action::ManageCases, &none())?;
    let new: NewCase = input::json(&body)?;
    let c = blocking(&st, move |st| Ok(st.gov.create_case(&p, &new)?)).await?;
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

/// The caller's organisation's cases.
#[utoipa::path(get, path = "/v1/cases", tag = "cases",
    responses(
        (status = 200, description = "Cases", body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action manage_cases)", body = ErrorBody),
    ))]
pub(crate) async fn list_cases(
    State(st): State<AppState>,
    Auth(p): Auth,
) -> ApiResult<Json<Vec<Case>>> {
    authorize(&st, &p, Action::ManageCases, &none())?;
    let org = p.org.id;
    Ok(Json(
        blocking(&st, move |st| Ok(st.gov.list_cases(org)?)).await?,
    ))
}

/// One case of the caller's organisation.
#[utoipa::path(get, path = "/v1/cases/{id}", tag = "cases",
    params(("id" = i64, Path, description = "Case id")),
    responses(
        (status = 200, description = "Case", body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action manage_cases)", body = ErrorBody),
        (status = 404, description = "`not_found` (also for other organisations' cases)",
            body = ErrorBody),
    ))]
pub(crate) async fn get_case(
    State(st): State<AppState>,
    Auth(p): Auth,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Json<Case>> {
    let id = int_id(&raw, "case")?;
    authorize(&st, &p, Action::ManageCases, &none())?;
    Ok(Json(own_case(&st, &p, id)?))
}

/// Closes a case: no further searches under it.
#[utoipa::path(post, path = "/v1/cases/{id}/close", tag = "cases",
    params(("id" = i64, Path, description = "Case id")),
    responses(
        (status = 200, description = "Case", body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action manage_cases)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: already closed", body = ErrorBody),
    ))]
pub(crate) async fn close_case(
    State(st): State<AppState>,
    Auth(p): Auth,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Json<Case>> {
    let id = int_id(&raw, "case")?;
    authorize(&st, &p, Action::ManageCases, &none())?;
    own_case(&st, &p, id)?;
    let c = blocking(&st, move |st| {
        Ok(st.gov.close_case(&Actor::from(&p), id)?)
    })
    .await?;
    Ok(Json(c))
}

fn report_of(
    st: &AppState,
    p: &Principal,
    d: &Decision,
    id: i64,
    format: &str,
) -> ApiResult<visage_governance::CaseReport> {
    own_case(st, p, id)?;
    let r = st.gov.case_report(id)?;
    st.gov.append(report_event(p, d, id, format))?;
    Ok(r)
}

/// Everything done under a case (searches with probe hashes, result ids, rules; other events)
/// from the audit log, with the audit head, as JSON.
#[utoipa::path(get, path = "/v1/cases/{id}/report", tag = "cases",
    params(("id" = i64, Path, description = "Case id")),
    responses(
        (status = 200, description = "CaseReport", body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action export_report)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn case_report(
    State(st): State<AppState>,
    Auth(p): Auth,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Response> {
    let id = int_id(&raw, "case")?;
    let d = authorize(&st, &p, Action::ExportReport, &none())?;
    let r = blocking(&st, move |st| report_of(st, &p, &d, id, "json")).await?;
    Ok(Json(r.to_json()).into_response())
}

/// The case report as a self-contained printable HTML page.
#[utoipa::path(get, path = "/v1/cases/{id}/report.html", tag = "cases",
    params(("id" = i64, Path, description = "Case id")),
    responses(
        (status = 200, description = "HTML page", content_type = "text/html"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action export_report)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn case_report_html(
    State(st): State<AppState>,
    Auth(p): Auth,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Response> {
    let id = int_id(&raw, "case")?;
    let d = authorize(&st, &p, Action::ExportReport, &none())?;
    let r = blocking(&st, move |st| report_of(st, &p, &d, id, "html")).await?;
    Ok(report_html(&r))
}

/// A case report as a printable HTML page: no scripts, nothing loaded from elsewhere.
pub(crate) fn report_html(r: &visage_governance::CaseReport) -> Response {
    let mut res = r.to_html().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    res
}

/// The record of a case report's export (either API's audit log).
pub(crate) fn report_event(p: &Principal, d: &Decision, id: i64, format: &str) -> AuditEvent {
    AuditEvent::decision(p, Action::ExportReport, d)
        .case(id)
        .details(serde_json::json!({"format": format}))
}

// ---- audit -----------------------------------------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct AuditQuery {
    /// Records with seq greater than this (default 0).
    after_seq: Option<u64>,
    /// At most this many (1 to 1000, default 100).
    limit: Option<usize>,
}

/// A page of audit records.
#[derive(Debug, Serialize)]
pub(crate) struct AuditPage {
    records: Vec<AuditRecord>,
    /// Pass as `after_seq` for the next page; absent at the end.
    next_after_seq: Option<u64>,
}

/// Audit records in seq order. Administrators of the operator organisation see every record;
/// everyone else sees their own organisation's.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses(
        (status = 200, description = "`records` and `next_after_seq`", body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action read_audit)", body = ErrorBody),
    ))]
pub(crate) async fn audit_records(
    State(st): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    authorize(&st, &p, Action::ReadAudit, &none())?;
    let all = is_operator(&st, &p);
    let org = p.org.id;
    let page = blocking(&st, move |st| {
        audit_page(
            &q,
            &|from| Ok(st.gov.audit_records(from.., 1000)?),
            &|| Ok(st.gov.audit_head()?.map(|(h, _)| h)),
            &|r| all || r.org_id == Some(org),
        )
    })
    .await?;
    Ok(Json(page))
}

/// One page of the records `visible` lets through, after `q.after_seq`: `fetch(from)` reads
/// records with seq >= from in order (up to 1000), `head` the last seq. Pages are scanned
/// until `q.limit` visible records are found or the log ends (both APIs).
pub(crate) fn audit_page(
    q: &AuditQuery,
    fetch: &dyn Fn(u64) -> ApiResult<Vec<AuditRecord>>,
    head: &dyn Fn() -> ApiResult<Option<u64>>,
    visible: &dyn Fn(&AuditRecord) -> bool,
) -> ApiResult<AuditPage> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let after = q.after_seq.unwrap_or(0);
    let mut out = Vec::new();
    let mut next = after.saturating_add(1);
    let mut scanned_to = after;
    loop {
        let page = fetch(next)?;
        let Some(last) = page.last().map(|r| r.seq) else {
            break;
        };
        for r in page {
            scanned_to = r.seq;
            if visible(&r) {
                out.push(r);
                if out.len() == limit {
                    break;
                }
            }
        }
        if out.len() == limit {
            break;
        }
        next = last + 1;
    }
    let more = out.len() == limit && head()?.is_some_and(|h| h > scanned_to);
    Ok(AuditPage {
        records: out,
        next_after_seq: more.then_some(scanned_to),
    })
}

/// Verifies the whole log: hash chain, checkpoint signatures, no missing checkpoint.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses(
        (status = 200, description = "VerifyReport (`ok`, `first_bad`, head, checkpoints)",
            body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action read_audit)", body = ErrorBody),
    ))]
pub(crate) async fn audit_verify(State(st): State<AppState>, Auth(p): Auth) -> ApiResult<Response> {
    authorize(&st, &p, Action::ReadAudit, &none())?;
    let mut v = blocking(&st, |st| {
        serde_json::to_value(st.gov.verify()?).map_err(|e| ApiError::internal(e.into()))
    })
    .await?;
    v["public_key_hex"] = st.gov.public_key_hex().into();
    Ok(Json(v).into_response())
}

/// The whole log with its signed checkpoints as JSON Lines, for offline verification with the
/// installation's public key. Every organisation's records are in it, so only administrators
/// of the operator organisation may export.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit",
    responses(
        (status = 200, description = "JSON Lines", content_type = "application/x-ndjson"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action read_audit, operator only)",
            body = ErrorBody),
    ))]
pub(crate) async fn audit_export(State(st): State<AppState>, Auth(p): Auth) -> ApiResult<Response> {
    let d = authorize(&st, &p, Action::ReadAudit, &none())?;
    operator_only(&st, &p, Action::ReadAudit, "export the whole audit log")?;
    let bytes = blocking(&st, move |st| {
        let mut buf = Vec::new();
        let summary = st.gov.export_jsonl(&mut buf, ..)?;
        st.gov.append(
            AuditEvent::decision(&p, Action::ReadAudit, &d)
                .details(serde_json::json!({"export": summary})),
        )?;
        Ok(buf)
    })
    .await?;
    Ok(audit_export_response(bytes))
}

// ---- erasure ---------------------------------------------------------------------------------

/// What to erase: exactly one of the three.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureJson {
    pub source_id: Option<i64>,
    pub subject_id: Option<i64>,
    /// ISO 3166 code; a country includes its subdivisions.
    pub jurisdiction: Option<String>,
}

/// Erases every face of a source, a subject or a jurisdiction (rows, vectors, blobs; ids
/// tombstoned so no index brings them back) and returns a signed receipt (kind `erasure`)
/// with the counts, verifiable with the installation's public key alone.
#[utoipa::path(post, path = "/v1/erasures", tag = "erasure", request_body = ErasureJson,
    responses(
        (status = 201, description = "`report` (counts) and `receipt` (signed)", body = Object),
        (status = 400, description = "`bad_json` or `bad_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action erase)", body = ErrorBody),
        (status = 409, description = "`read_only`", body = ErrorBody),
    ))]
pub(crate) async fn erase(
    State(st): State<AppState>,
    Auth(p): Auth,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let d = authorize(&st, &p, Action::Erase, &none())?;
    let (target, described) = erasure_target(&body)?;
    st.writable()?;
    let out = blocking(&st, move |st| {
        // Announced, done, then recorded with its receipt: never left unrecorded
        // (`crate::erasure`).
        let order = crate::erasure::Order {
            targets: vec![target],
            event: AuditEvent::decision(&p, Action::Erase, &d)
                .details(serde_json::json!({"target": described})),
            report_in_details: false,
            counts_in_details: false,
            receipt: Some(crate::erasure::ReceiptPlan {
                by: Actor::from(&p),
                org_id: Some(p.org.id),
                kind: "erasure".into(),
                body: erasure_receipt_base(&described, &p),
            }),
        };
        let done = crate::erasure::run(&st.gallery, &st.gov, order).map_err(ApiError::internal)?;
        Ok(serde_json::json!({"report": done.report, "receipt": done.receipt}))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// The target of an erasure request (`ErasureJson`), and how its receipt names it.
pub(crate) fn erasure_target(body: &[u8]) -> ApiResult<(DeleteTarget, serde_json::Value)> {
    let j: ErasureJson = input::json(body)?;
    Ok(match (j.source_id, j.subject_id, j.jurisdiction) {
        (Some(s), None, None) => (DeleteTarget::Source(s), serde_json::json!({"source_id": s})),
        (None, Some(s), None) => (
            DeleteTarget::Subject(s),
            serde_json::json!({"subject_id": s}),
        ),
        (None, None, Some(j)) => {
            let code = visage_governance::normalise_jurisdiction(&j)
                .ok_or_else(|| ApiError::bad_request(format!("{j:?} is not an ISO 3166 code")))?;
            (
                DeleteTarget::Jurisdiction(code.clone()),
                serde_json::json!({"jurisdiction": code}),
            )
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `source_id`, `subject_id`, `jurisdiction`",
            ))
        }
    })
}

/// The audit record of a completed erasure: the deleted face ids and the target.
pub(crate) fn erasure_event(
    p: &Principal,
    d: &visage_governance::Decision,
    report: &visage_gallery::DeleteReport,
    described: &serde_json::Value,
) -> AuditEvent {
    AuditEvent::decision(p, Action::Erase, d)
        .objects(report.face_ids.iter().map(|i| i.to_string()))
        .result_count(report.faces as u64)
        .details(serde_json::json!({"target": described}))
}

/// What an erasure receipt attests (counts, target, who and when; no face data).
pub(crate) fn erasure_receipt_body(
    described: &serde_json::Value,
    report: &visage_gallery::DeleteReport,
    p: &Principal,
) -> serde_json::Value {
    crate::erasure::with_counts(erasure_receipt_base(described, p), report)
}

/// An erasure receipt's body before the deletion: the target and who asked.
pub(crate) fn erasure_receipt_base(
    described: &serde_json::Value,
    p: &Principal,
) -> serde_json::Value {
    serde_json::json!({
        "target": described,
        "by": p.username,
        "org_id": p.org.id,
    })
}
