//! The public portal's endpoints (no authentication, rate-limited per client IP): opt-out by
//! selfie, data-subject access, and the status of a request.
//!
//! Requests are kept in `public_requests.sqlite` in the data directory (request id, kind,
//! status, time, contact, receipt id, counts), never the selfies: the governance database
//! belongs to another crate and its audit log cannot be edited, whereas a contact address must
//! be erasable. The status endpoint reads the row and the signed receipt.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use axum::extract::{ConnectInfo, Path as UrlPath, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use visage_governance::{Actor, AuditEvent};

use crate::input;

use crate::{blocking, ApiError, ApiResult, AppState, ErrorBody};
use visage_engine::optout;

/// Most selfies in one request.
pub const MAX_SELFIES: usize = 5;
/// Longest contact string.
pub const MAX_CONTACT_CHARS: usize = 320;

/// The public request table.
pub struct Requests {
    conn: Mutex<rusqlite::Connection>,
}

/// A public request as its status endpoint shows it (no contact, no images).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RequestStatus {
    pub request_id: String,
    /// `opt_out` or `access`.
    pub kind: String,
    /// `completed`.
    pub status: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Counts of what was done.
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
    /// The signed receipt (opt-out), verifiable with the installation's public key.
    #[schema(value_type = Object)]
    pub receipt: Option<visage_governance::Receipt>,
}

impl Requests {
    pub fn open(dir: &Path) -> anyhow::Result<Requests> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("public_requests.sqlite");
        let conn = rusqlite::Connection::open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA secure_delete=ON; PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS public_request (
                 id TEXT PRIMARY KEY,
                 kind TEXT NOT NULL,
                 status TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 contact TEXT NOT NULL,
                 receipt_id TEXT,
                 summary TEXT NOT NULL
             );",
        )?;
        Ok(Requests {
            conn: Mutex::new(conn),
        })
    }

    /// Stores a recorded opt-out (one resumed after an interruption too).
    pub(crate) fn insert_recorded(&self, r: &crate::opt_outs::Recorded) -> anyhow::Result<()> {
        self.insert(
            &r.pending.request_id,
            "opt_out",
            &r.pending.contact,
            r.receipt.as_ref().map(|r| r.id.as_str()),
            &r.summary,
        )
    }

    fn insert(
        &self,
        id: &str,
        kind: &str,
        contact: &str,
        receipt_id: Option<&str>,
        summary: &serde_json::Value,
    ) -> anyhow::Result<()> {
        let c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        c.execute(
            "INSERT INTO public_request (id, kind, status, created_at, contact, receipt_id, summary)
             VALUES (?1, ?2, 'completed', ?3, ?4, ?5, ?6)",
            params![
                id,
                kind,
                now_ms(),
                contact,
                receipt_id,
                summary.to_string()
            ],
        )?;
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    fn get(
        &self,
        id: &str,
    ) -> anyhow::Result<Option<(String, String, i64, Option<String>, String)>> {
        let c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        Ok(c.query_row(
            "SELECT kind, status, created_at, receipt_id, summary FROM public_request WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn new_request_id() -> ApiResult<String> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("no OS randomness: {e}")))?;
    Ok(hex::encode(raw))
}

/// Opt-out or access request: one or more selfies and a contact address.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct OptOutForm {
    /// A photo of the requester's face (repeat the field for up to 5).
    #[schema(value_type = String, format = Binary)]
    selfie: Vec<u8>,
    /// How to reach the requester (e-mail or postal address), kept with the request only.
    contact: String,
}

/// Selfies and contact of a public request.
pub(crate) async fn read_request(req: Request) -> ApiResult<(Vec<Vec<u8>>, String)> {
    let input = input::read(req, "multipart `selfie` fields and `contact`").await?;
    let selfies = input.images("selfie")?;
    if selfies.is_empty() {
        return Err(ApiError::bad_request("send at least one `selfie`"));
    }
    if selfies.len() > MAX_SELFIES {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_SELFIES} selfies per request"
        )));
    }
    let contact = input.text("contact")?.unwrap_or_default();
    let contact = contact.trim();
    if contact.is_empty()
        || contact.chars().count() > MAX_CONTACT_CHARS
        || contact.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(format!(
            "`contact` is required: 1-{MAX_CONTACT_CHARS} characters"
        )));
    }
    Ok((selfies, contact.to_string()))
}

/// An engine error: `no_usable_face` (422) when no selfie shows a usable face.
pub(crate) fn engine_error(e: anyhow::Error) -> ApiError {
    let msg = format!("{e:#}");
    if msg.contains("no_usable_face") {
        return ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_usable_face",
            "no selfie shows a usable face; send a sharp, frontal, well-lit photo",
        );
    }
    if let Some(d) = e.downcast_ref::<visage_vision::DecodeError>() {
        return ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, d.code(), d.to_string());
    }
    ApiError::internal(e)
}

fn limited(st: &AppState, addr: SocketAddr) -> ApiResult<()> {
    if st.public_limit.allow(addr.ip()) {
        Ok(())
    } else {
        Err(ApiError::rate_limited())
    }
}

/// Opt-out by selfie (public, rate-limited): every matching face is deleted from the gallery
/// and the face is put on the suppression list so it is not ingested or returned again. The
/// answer carries a signed receipt (`opt_out`, counts only). Selfies are not kept.
#[utoipa::path(post, path = "/v1/public/opt-out", tag = "public", security(()),
    request_body(content = OptOutForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "`request_id`, `status`, `receipt`, counts", body = Object),
        (status = 400, description = "`bad_request`", body = ErrorBody),
        (status = 409, description = "`read_only`", body = ErrorBody),
        (status = 422, description = "`no_usable_face` or a decoder code", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
    ))]
pub(crate) async fn opt_out(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
) -> ApiResult<Response> {
    limited(&st, addr)?;
    st.writable()?;
    let (selfies, contact) = read_request(req).await?;
    let request_id = new_request_id()?;
    let out = blocking(&st, move |st| {
        let done = {
            let p = st
                .pipeline
                .lock()
                .map_err(|_| ApiError::internal(anyhow::anyhow!("pipeline lock poisoned")))?;
            let pending = crate::opt_outs::Pending {
                request_id: request_id.clone(),
                pack: p.pack_id(),
                selfies: selfies.len(),
                contact: contact.clone(),
                by: Actor::public(),
            };
            crate::opt_outs::run(&st.gallery, &st.gov, &p, pending, &selfies)
                .map_err(engine_error)?
        };
        st.requests
            .insert_recorded(&done)
            .map_err(ApiError::internal)?;
        let (summary, receipt) = (done.summary, done.receipt);
        Ok(serde_json::json!({
            "request_id": request_id,
            "status": "completed",
            "summary": summary,
            "receipt": receipt,
        }))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// The status of a public request, with its receipt (public; the request id is the secret).
#[utoipa::path(get, path = "/v1/public/requests/{id}", tag = "public", security(()),
    params(("id" = String, Path, description = "Request id from the submission")),
    responses(
        (status = 200, description = "RequestStatus", body = RequestStatus),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
    ))]
pub(crate) async fn request_status(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<RequestStatus>> {
    limited(&st, addr)?;
    if !valid_request_id(&id) {
        return Err(ApiError::not_found("no such request"));
    }
    blocking(&st, move |st| {
        let (kind, status, created_at, receipt_id, summary) = st
            .requests
            .get(&id)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("no such request"))?;
        let receipt = match receipt_id {
            Some(r) => Some(st.gov.get_receipt(&r)?),
            None => None,
        };
        Ok(Json(RequestStatus {
            request_id: id,
            kind,
            status,
            created_at,
            summary: serde_json::from_str(&summary).unwrap_or_default(),
            receipt,
        }))
    })
    .await
}

/// Data-subject access (public, rate-limited): the faces the gallery holds that match the
/// selfies, each with its provenance and thumbnail (a `data:image/jpeg;base64,` URL).
/// Audited with actor `public` and counts only.
#[utoipa::path(post, path = "/v1/public/access", tag = "public", security(()),
    request_body(content = OptOutForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "`request_id` and the access report", body = Object),
        (status = 400, description = "`bad_request`", body = ErrorBody),
        (status = 422, description = "`no_usable_face` or a decoder code", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
    ))]
pub(crate) async fn access(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
) -> ApiResult<Response> {
    limited(&st, addr)?;
    let (selfies, contact) = read_request(req).await?;
    let request_id = new_request_id()?;
    let out = blocking(&st, move |st| {
        let report = {
            let p = st
                .pipeline
                .lock()
                .map_err(|_| ApiError::internal(anyhow::anyhow!("pipeline lock poisoned")))?;
            optout::access_report(&st.gallery, &p, &selfies).map_err(engine_error)?
        };
        let mut report = serde_json::to_value(&report).map_err(|e| ApiError::internal(e.into()))?;
        let n = add_thumbnails(&|sha| st.gallery.blob(sha).ok(), &mut report);
        let summary = access_summary(&request_id, selfies.len(), n);
        // What was disclosed, signed (counts only; no images, no face data).
        let receipt = st.gov.sign_receipt_recorded(
            &Actor::public(),
            None,
            "access",
            summary.clone(),
            |r| vec![access_event(&request_id, selfies.len(), n, &r.id)],
        )?;
        st.requests
            .insert(&request_id, "access", &contact, Some(&receipt.id), &summary)
            .map_err(ApiError::internal)?;
        Ok(serde_json::json!({
            "request_id": request_id,
            "status": "completed",
            "report": report,
            "receipt": receipt,
        }))
    })
    .await?;
    Ok(Json(out).into_response())
}

/// Whether `id` can be a request id (32 hex digits); anything else is answered 404 unread.
pub(crate) fn valid_request_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What an opt-out receipt attests (counts only).
pub(crate) fn opt_out_summary(
    request_id: &str,
    selfies: usize,
    o: &optout::OptOutOutcome,
    resumed: bool,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "request_id": request_id,
        "selfies": selfies,
        "faces_deleted": o.faces_deleted,
        "suppressed_embeddings": o.suppressed_embeddings,
        "unusable_selfies": o.unusable_selfies,
    });
    if resumed {
        // Finished by another run after an interruption; the counts are of both runs.
        v["resumed_after_interruption"] = true.into();
    }
    v
}

/// The audit record of an opt-out: the deleted face ids, the request and its receipt.
pub(crate) fn opt_out_event(
    by: &Actor,
    request_id: &str,
    receipt_id: &str,
    o: &optout::OptOutOutcome,
    resumed: bool,
) -> AuditEvent {
    let (rule, reason) = if *by == Actor::public() {
        ("public:opt_out", "public opt-out request")
    } else {
        (
            "operator:opt_out",
            "opt-out request carried out by the operator",
        )
    };
    AuditEvent::new(by, "opt_out")
        .decided(true, rule, reason)
        .result_count(o.face_ids.len() as u64)
        .objects(o.face_ids.iter().map(|i| i.to_string()))
        .details(
            serde_json::json!({"request_id": request_id, "receipt_id": receipt_id,
            "resumed_after_interruption": resumed}),
        )
}

/// What an access receipt attests (counts only; no images, no face data).
pub(crate) fn access_summary(request_id: &str, selfies: usize, faces: usize) -> serde_json::Value {
    serde_json::json!({"request_id": request_id, "selfies": selfies, "faces": faces})
}

/// The audit record of an access request (counts only).
pub(crate) fn access_event(
    request_id: &str,
    selfies: usize,
    faces: usize,
    receipt_id: &str,
) -> AuditEvent {
    AuditEvent::new(&Actor::public(), "access_request")
        .decided(true, "public:access", "public data-subject access request")
        .result_count(faces as u64)
        .details(
            serde_json::json!({"request_id": request_id, "selfies": selfies,
            "faces": faces, "receipt_id": receipt_id}),
        )
}

/// Adds `thumbnail` data URLs to every object in the report that has a `thumb_sha` and lacks
/// one (`blob` reads it); returns the number of faces (objects with a `thumb_sha`).
pub(crate) fn add_thumbnails(
    blob: &dyn Fn(&str) -> Option<Vec<u8>>,
    v: &mut serde_json::Value,
) -> usize {
    use base64::Engine as _;
    match v {
        serde_json::Value::Object(m) => {
            let mut n = 0;
            if let Some(sha) = m
                .get("thumb_sha")
                .and_then(|s| s.as_str())
                .map(String::from)
            {
                n += 1;
                if !m.contains_key("thumbnail") {
                    if let Some(bytes) = blob(&sha) {
                        let url = format!(
                            "data:image/jpeg;base64,{}",
                            base64::engine::general_purpose::STANDARD.encode(bytes)
                        );
                        m.insert("thumbnail".into(), url.into());
                    }
                }
            }
            for (_, x) in m.iter_mut() {
                n += add_thumbnails(blob, x);
            }
            n
        }
        serde_json::Value::Array(a) => a.iter_mut().map(|x| add_thumbnails(blob, x)).sum(),
        _ => 0,
    }
}
