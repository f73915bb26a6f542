//! `visage serve`: the HTTP API over the engine and governance.
//!
//! Every endpoint but `/healthz`, `/v1/openapi.json` and the rate-limited public opt-out and
//! access endpoints needs credentials: `Authorization: Bearer vsk_...` (API key) or the
//! `visage_session` cookie from `POST /v1/auth/login`. Every action is authorised by the
//! policy (`visage-governance`); searches and verifications need an open case and a purpose,
//! and are written to the hash-chained audit log (allowed or refused) with the probe's
//! SHA-256, never the image. See docs/API.md.

mod accounts_api;
mod auth;
mod catalog;
pub mod cluster_api;
mod cluster_opt_outs;
pub mod erasure;
mod gov_api;
mod input;
mod jobs;
mod metrics;
pub mod opt_outs;
mod public;
mod search;
mod web;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path as UrlPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use visage_gallery::{Access, Gallery};
use visage_governance::{
    Action, AuthzContext, Decision, GovError, Governance, InitialAdmin, Policy, Principal,
    DEFAULT_POLICY_TOML,
};
use visage_vision::{FacePipeline, Home, InferenceOptions};

pub use auth::{SESSION_COOKIE, SESSION_TTL};

/// Largest request body (multipart or JSON, base64 included).
pub const BODY_LIMIT: usize = 32 * 1024 * 1024;
/// Longest time one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longer limit for opt-out and erasure (they rewrite the index).
pub const LONG_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Hard cap on matches per probe face.
pub const MAX_K: usize = 100;

/// How `visage serve` runs; `Default` is the normal writer with the default limits.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Open the gallery read-only (beside a CLI ingest); write endpoints answer 409 `read_only`.
    pub read_only: bool,
    /// Policy file; else `<data-dir>/policy.toml` when present; else the shipped default.
    pub policy: Option<PathBuf>,
    /// Jurisdiction of the `default` organisation created with the first admin.
    pub admin_jurisdiction: String,
    /// Login attempts per minute per client IP.
    pub login_per_minute: u32,
    /// Public opt-out/access requests per minute per client IP.
    pub public_per_minute: u32,
    /// Folders whose files `POST /v1/ingest/jobs` may ingest by server-side path
    /// (`--ingest-root`, repeatable); empty: path jobs are refused (`ingest_path_disabled`).
    pub ingest_roots: Vec<PathBuf>,
    /// Largest multipart upload to `POST /v1/ingest/jobs`, bytes (the other endpoints keep
    /// [`BODY_LIMIT`]).
    pub upload_limit: u64,
    /// Pipelines (one per core used) of a running ingest job; 0: every core but one.
    pub ingest_workers: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            read_only: false,
            policy: None,
            admin_jurisdiction: "ZZ".into(),
            login_per_minute: 10,
            public_per_minute: 20,
            ingest_roots: Vec::new(),
            upload_limit: jobs::DEFAULT_UPLOAD_LIMIT,
            ingest_workers: 0,
        }
    }
}

/// What the handlers share (cheap to clone).
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub(crate) gallery: Gallery,
    pub(crate) pipeline: Mutex<FacePipeline>,
    pub(crate) gov: Governance,
    pub(crate) read_only: bool,
    pub(crate) policy_text: String,
    pub(crate) policy_origin: String,
    /// The organisation created with the first admin: its admins manage every organisation.
    pub(crate) operator_org: Option<i64>,
    pub(crate) sessions: auth::Sessions,
    pub(crate) login_limit: auth::RateLimiter,
    pub(crate) public_limit: auth::RateLimiter,
    pub(crate) metrics: metrics::Metrics,
    /// One lock per organisation with a search quota: its searches run one at a time from
    /// decision to record, so concurrent requests cannot all pass the quota's last unit.
    pub(crate) quota_locks: Mutex<HashMap<i64, Arc<Mutex<()>>>>,
    pub(crate) requests: public::Requests,
    /// Ingest jobs: the queue, the running job's progress, their settings.
    pub(crate) jobs: jobs::Jobs,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Opens the gallery in `data_dir` (read-write unless `opts.read_only`), the governance
    /// store in the same directory with the policy, and loads `pack`. When no user exists yet
    /// the first admin is created and returned (its password exists only in the return value).
    pub fn open(
        data_dir: &Path,
        home: &Home,
        pack: &str,
        inference: &InferenceOptions,
        opts: &ServeOptions,
    ) -> Result<(AppState, Option<InitialAdmin>)> {
        let access = if opts.read_only {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        };
        let gallery = Gallery::open(data_dir, access)
            .with_context(|| format!("cannot open the gallery in {}", data_dir.display()))?;
        let pipeline = FacePipeline::load(home, pack, inference)?;
        AppState::with_parts(data_dir, gallery, pipeline, opts)
    }

    /// As [`AppState::open`] with an opened gallery and a loaded pipeline.
    pub fn with_parts(
        data_dir: &Path,
        gallery: Gallery,
        pipeline: FacePipeline,
        opts: &ServeOptions,
    ) -> Result<(AppState, Option<InitialAdmin>)> {
        let file = visage_governance::policy_file(data_dir, opts.policy.as_deref());
        let (policy, text, origin) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read the policy {}", path.display()))?;
                let policy = Policy::parse(&text, &path.display().to_string())?;
                (policy, text, path.display().to_string())
            }
            None => (
                Policy::default_policy(),
                DEFAULT_POLICY_TOML.to_string(),
                "built-in default policy".to_string(),
            ),
        };
        let gov = Governance::open_with_policy(data_dir, policy)?;
        if !opts.read_only {
            // Deletions an interruption left unrecorded are finished and recorded first.
            erasure::resume(&gallery, &gov)
                .context("finishing the deletions an interruption left unrecorded")?;
        }
        let requests = public::Requests::open(data_dir)?;
        if !opts.read_only {
            for r in opt_outs::resume(&gallery, &gov, &pipeline)
                .context("finishing the opt-outs an interruption left unrecorded")?
            {
                requests.insert_recorded(&r)?;
            }
        }
        let admin = gov.init_admin(&opts.admin_jurisdiction)?;
        let operator_org = match &admin {
            Some(a) => Some(a.org.id),
            None => gov.get_org_by_name("default").ok().map(|o| o.id),
        };
        let jobs = jobs::Jobs::open(data_dir, &gallery, pipeline.pack.clone(), opts)?;
        let inner = Inner {
            gallery,
            pipeline: Mutex::new(pipeline),
            gov,
            read_only: opts.read_only,
            policy_text: text,
            policy_origin: origin,
            operator_org,
            sessions: auth::Sessions::default(),
            login_limit: auth::RateLimiter::per_minute(opts.login_per_minute),
            public_limit: auth::RateLimiter::per_minute(opts.public_per_minute),
            metrics: metrics::Metrics::default(),
            quota_locks: Default::default(),
            requests,
            jobs,
        };
        Ok((AppState(Arc::new(inner)), admin))
    }

    /// The governance store (accounts, policy, audit log).
    pub fn governance(&self) -> &Governance {
        &self.gov
    }

    /// Fails with 409 `read_only` when the gallery was opened read-only.
    pub(crate) fn writable(&self) -> ApiResult<()> {
        if self.read_only {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "read_only",
                "the server runs with --read-only; the gallery cannot be changed",
            ));
        }
        Ok(())
    }

    /// The policy's excluded jurisdictions (hidden from every result).
    /// The lock of `p`'s organisation's search quota, when `action` counts against one.
    pub(crate) fn quota_lock(&self, p: &Principal, action: Action) -> Option<Arc<Mutex<()>>> {
        visage_governance::quota_for(&p.org, action)?;
        let mut m = self.quota_locks.lock().unwrap_or_else(|e| e.into_inner());
        Some(m.entry(p.org.id).or_default().clone())
    }

    pub(crate) fn excluded_jurisdictions(&self) -> Vec<String> {
        self.gov.policy().data.excluded_codes()
    }
}

/// Runs `f` on the blocking pool with a clone of the state (either API's).
pub(crate) async fn blocking<S: Clone + Send + 'static, T: Send + 'static>(
    st: &S,
    f: impl FnOnce(&S) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let st = st.clone();
    tokio::task::spawn_blocking(move || f(&st))
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("task failed: {e}")))?
}

// ---------------------------------------------------------------------------------------------
// Errors

/// The error body of every failed request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `bad_request`, `unauthorized`, `policy_denied`.
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn bad_json(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_json", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The one answer for every credential problem (which one is never revealed).
    pub(crate) fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing, invalid or revoked credentials",
        )
    }

    /// 403 with the decision's code and the rule that made it.
    pub(crate) fn denied(d: &Decision) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            d.error_code().unwrap_or("policy_denied"),
            format!("{} (rule {})", d.reason, d.rule),
        )
    }

    pub(crate) fn rate_limited() -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this address; try again in a minute",
        )
    }

    fn too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is over {BODY_LIMIT} bytes"),
        )
    }

    /// An unexpected failure: logged here, reported without internals.
    pub(crate) fn internal(e: anyhow::Error) -> ApiError {
        tracing::error!("internal error: {e:#}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }

    /// A body that could not be read: 413 when over the limit, else 400.
    pub(crate) fn body(status: StatusCode, message: String) -> ApiError {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large()
        } else {
            ApiError::bad_request(message)
        }
    }
}

impl From<GovError> for ApiError {
    fn from(e: GovError) -> ApiError {
        match e {
            GovError::NotFound(m) => ApiError::not_found(m),
            GovError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            GovError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid", m),
            GovError::Internal(e) => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut res = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"visage\""),
            );
        }
        res
    }
}

pub(crate) type ApiResult<T> = std::result::Result<T, ApiError>;

fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// Gives error responses made outside the handlers (timeout, unknown route, wrong method) the
/// same JSON error body.
pub(crate) async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
        return ApiError::new(status, code_for_status(status), reason).into_response();
    }
    res
}

/// A server state whose requests are counted for `/metrics` (embedded and cluster).
pub(crate) trait Observed: Clone + Send + Sync + 'static {
    fn metrics(&self) -> &metrics::Metrics;
}

impl Observed for AppState {
    fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }
}

/// Logs method, route, status and latency (never bodies, query strings or headers) and counts
/// them for `/metrics`.
pub(crate) async fn log_requests<S: Observed>(
    State(st): State<S>,
    req: Request,
    next: Next,
) -> Response {
    let t = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let path = req.uri().path().to_string();
    let res = next.run(req).await;
    let secs = t.elapsed().as_secs_f64();
    st.metrics()
        .record(&route, method.as_str(), res.status().as_u16(), secs);
    tracing::info!(
        "{method} {path} {} {:.1} ms",
        res.status().as_u16(),
        secs * 1e3
    );
    res
}

// ---------------------------------------------------------------------------------------------
// Small handlers

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// Liveness probe (no authentication, ever).
#[utoipa::path(get, path = "/healthz", tag = "public",
    responses((status = 200, body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The OpenAPI 3 description of this API. Public on purpose: it holds no data, only the shape
/// of the API.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "public",
    responses((status = 200, description = "OpenAPI 3 document", body = Object)))]
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(api_doc())
}

/// The whole OpenAPI document: the core paths plus each module's own `Doc`.
pub fn api_doc() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(catalog::Doc::openapi());
    doc.merge(jobs::Doc::openapi());
    doc.merge(search::VideoDoc::openapi());
    doc
}

pub(crate) fn face_id(raw: &str) -> ApiResult<i64> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("face id {raw:?} is not an integer")))
}

/// Checks `action` for the principal, auditing a refusal, and returns the decision.
pub(crate) fn authorize(
    st: &AppState,
    p: &visage_governance::Principal,
    action: Action,
    ctx: &AuthzContext,
) -> ApiResult<Decision> {
    auth::authorize_with(st, p, action, ctx, |ev| ev)
}

/// A stored face with its provenance (gallery FaceRecord). Faces in an excluded jurisdiction
/// are not found.
#[utoipa::path(get, path = "/v1/faces/{id}", tag = "faces",
    params(("id" = i64, Path, description = "Face id")),
    responses(
        (status = 200, description = "FaceRecord", body = Object),
        (status = 400, description = "`bad_request`: id is not an integer", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action read_face)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn get_face(
    State(st): State<AppState>,
    auth::Auth(p): auth::Auth,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Response> {
    let id = face_id(&raw)?;
    authorize(&st, &p, Action::ReadFace, &AuthzContext::default())?;
    let rec = blocking(&st, move |st| visible_face(st, id)).await?;
    Ok(Json(rec).into_response())
}

/// The face's record, unless absent or in an excluded jurisdiction.
pub(crate) fn visible_face(st: &AppState, id: i64) -> ApiResult<visage_gallery::FaceRecord> {
    visible_face_in(&st.gallery, &st.gov.policy(), id)
}

/// [`visible_face`] over any store and policy (both APIs); a storage error is `internal`.
pub(crate) fn visible_face_in(
    store: &dyn visage_gallery::FaceStore,
    policy: &visage_governance::Policy,
    id: i64,
) -> ApiResult<visage_gallery::FaceRecord> {
    let rec = store
        .face(id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no face with id {id}")))?;
    if let Some(j) = &rec.image.jurisdiction {
        if policy.jurisdiction_excluded(j).is_some() {
            return Err(ApiError::not_found(format!("no face with id {id}")));
        }
    }
    Ok(rec)
}

/// The face's thumbnail in its photo (JPEG).
#[utoipa::path(get, path = "/v1/faces/{id}/thumbnail", tag = "faces",
    params(("id" = i64, Path, description = "Face id")),
    responses(
        (status = 200, description = "JPEG thumbnail", content_type = "image/jpeg", body = Vec<u8>),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action read_face)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn get_thumbnail(
    State(st): State<AppState>,
    auth::Auth(p): auth::Auth,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Response> {
    let id = face_id(&raw)?;
    authorize(&st, &p, Action::ReadFace, &AuthzContext::default())?;
    let bytes = blocking(&st, move |st| {
        let f = visible_face(st, id)?;
        st.gallery.blob(&f.thumb_sha).map_err(ApiError::internal)
    })
    .await?;
    let mut res = Body::from(bytes).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    Ok(res)
}

/// Counts per collection, source and jurisdiction; bytes on disk and in memory.
#[utoipa::path(get, path = "/v1/stats", tag = "faces",
    responses(
        (status = 200, description = "Gallery Stats", body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action read_face)", body = ErrorBody),
    ))]
async fn stats(State(st): State<AppState>, auth::Auth(p): auth::Auth) -> ApiResult<Response> {
    authorize(&st, &p, Action::ReadFace, &AuthzContext::default())?;
    let s = blocking(&st, |st| st.gallery.stats().map_err(ApiError::internal)).await?;
    Ok(Json(s).into_response())
}

/// A collection with its model pack and counts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CollectionInfo {
    pub id: i64,
    pub name: String,
    /// Model pack `name@version` the collection is pinned to.
    pub pack: String,
    pub dim: usize,
    pub faces: u64,
    pub images: u64,
    pub subjects: u64,
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("vsk_<key id>_<secret>")
                    .build(),
            ),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(SESSION_COOKIE))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "visage",
        description = "Accountable face search. Every endpoint except /healthz, \
        /v1/openapi.json (this document, public on purpose) and /v1/public/* needs an API key \
        (`Authorization: Bearer vsk_...`) or the `visage_session` cookie from \
        POST /v1/auth/login. Errors are `{\"error\": {\"code\", \"message\"}}`; see docs/API.md."
    ),
    modifiers(&SecurityAddon),
    security(("api_key" = []), ("session" = [])),
    paths(
        healthz, openapi, get_face, get_thumbnail, stats,
        accounts_api::login, accounts_api::logout, accounts_api::me,
        search::search, search::search_face, search::verify,
        gov_api::delete_face, gov_api::create_case, gov_api::list_cases, gov_api::get_case,
        gov_api::close_case, gov_api::case_report, gov_api::case_report_html,
        gov_api::audit_records, gov_api::audit_verify, gov_api::audit_export,
        accounts_api::list_orgs, accounts_api::create_org, accounts_api::update_org,
        accounts_api::list_users, accounts_api::create_user, accounts_api::disable_user,
        accounts_api::enable_user, accounts_api::create_key, accounts_api::list_keys,
        accounts_api::revoke_key, accounts_api::get_policy,
        gov_api::erase,
        public::opt_out, public::request_status, public::access,
        metrics::metrics,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, Health, CollectionInfo,
        search::SearchJson, search::SearchForm, search::SearchFaceJson, search::VerifyJson,
        search::VerifyForm, accounts_api::LoginJson, accounts_api::NewUserJson,
        accounts_api::NewKeyJson,
        gov_api::ErasureJson, public::OptOutForm,
    ))
)]
pub struct ApiDoc;

/// The routes with their limits, timeout, JSON errors, metrics and request log.
pub fn router(state: AppState) -> Router {
    let long = Router::new()
        .route("/v1/erasures", post(gov_api::erase))
        .route("/v1/public/opt-out", post(public::opt_out))
        .route("/v1/public/access", post(public::access))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            LONG_REQUEST_TIMEOUT,
        ));
    let normal = Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/search", post(search::search))
        .route("/v1/search/face/{id}", post(search::search_face))
        .route("/v1/verify", post(search::verify))
        .route("/v1/faces/{id}", get(get_face).delete(gov_api::delete_face))
        .route("/v1/faces/{id}/thumbnail", get(get_thumbnail))
        .route("/v1/stats", get(stats))
        .route(
            "/v1/cases",
            post(gov_api::create_case).get(gov_api::list_cases),
        )
        .route("/v1/cases/{id}", get(gov_api::get_case))
        .route("/v1/cases/{id}/close", post(gov_api::close_case))
        .route("/v1/cases/{id}/report", get(gov_api::case_report))
        .route("/v1/cases/{id}/report.html", get(gov_api::case_report_html))
        .route("/v1/audit", get(gov_api::audit_records))
        .route("/v1/audit/verify", get(gov_api::audit_verify))
        .route("/v1/audit/export", get(gov_api::audit_export))
        .route("/v1/public/requests/{id}", get(public::request_status))
        .merge(accounts_api::login_route::<AppState>())
        .merge(accounts_api::routes::<AppState>())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    Router::new()
        .merge(long)
        .merge(normal)
        .merge(catalog::routes())
        .merge(jobs::routes())
        .merge(search::video_routes())
        .merge(web::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            log_requests::<AppState>,
        ))
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(json_errors))
}

/// Serves on `listener` until `shutdown` resolves, then lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Blocking entry point of `visage serve`: a 2-worker runtime, bound to `bind`, until Ctrl-C
/// or SIGTERM. `on_ready` gets the bound address.
/// A PEM certificate chain and private key for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Serves HTTPS on `listener` until `shutdown` resolves, then lets requests in flight finish
/// (up to 30 s).
pub async fn serve_tls(
    listener: std::net::TcpListener,
    state: AppState,
    tls: &TlsFiles,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // One process-wide crypto provider (ring); a second install is a harmless no-op error.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
        .await
        .with_context(|| {
            format!(
                "cannot load the TLS certificate {} and key {}",
                tls.cert.display(),
                tls.key.display()
            )
        })?;
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h.graceful_shutdown(Some(Duration::from_secs(30)));
    });
    listener.set_nonblocking(true)?;
    axum_server::from_tcp_rustls(listener, config)?
        .handle(handle)
        .serve(router(state).into_make_service_with_connect_info::<SocketAddr>())
        .await?;
    Ok(())
}

/// Runs the server until Ctrl-C or SIGTERM: HTTPS when `tls` is given, else plain HTTP.
pub fn run(
    bind: SocketAddr,
    state: AppState,
    tls: Option<TlsFiles>,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    if !bind.ip().is_loopback() && tls.is_none() {
        tracing::warn!(
            "listening on {bind}, which is not loopback, without TLS: use --tls-cert/--tls-key or \
             put TLS in front (session cookies and API keys travel in every request)"
        );
    }
    if let Some(tls) = tls {
        let rt = runtime()?;
        let listener = std::net::TcpListener::bind(bind)
            .with_context(|| format!("cannot listen on {bind}"))?;
        on_ready(listener.local_addr()?);
        return rt.block_on(serve_tls(listener, state, &tls, shutdown_signal()));
    }
    runtime()?.block_on(async move {
        let listener = listen(bind).await?;
        on_ready(listener.local_addr()?);
        serve(listener, state, shutdown_signal()).await?;
        Ok(())
    })
}

/// The server's async runtime (two workers: storage and inference run on blocking threads).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(crate) async fn listen(bind: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))
}
