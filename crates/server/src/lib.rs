//! `visage serve`: an HTTP API over the engine (probe search, stored faces, stats).
//!
//! No authentication yet: every endpoint but `/healthz` will require an API key once the
//! governance issue lands; until then the server should only listen on loopback.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path as UrlPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tower_http::timeout::TimeoutLayer;
use utoipa::{OpenApi, ToSchema};
use visage_engine::SearchOptions;
use visage_gallery::{Access, Gallery};
use visage_vision::{DecodeError, FacePipeline, Home, InferenceOptions};

/// Largest request body (multipart or JSON, base64 included).
pub const BODY_LIMIT: usize = 32 * 1024 * 1024;
/// Longest time one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Hard cap on matches per probe face.
pub const MAX_K: usize = 100;

/// What the handlers share: the gallery (opened read-only once) and one face pipeline.
#[derive(Clone)]
pub struct AppState {
    gallery: Arc<Gallery>,
    pipeline: Arc<Mutex<FacePipeline>>,
}

impl AppState {
    pub fn new(gallery: Gallery, pipeline: FacePipeline) -> AppState {
        AppState {
            gallery: Arc::new(gallery),
            pipeline: Arc::new(Mutex::new(pipeline)),
        }
    }

    /// Opens the gallery in `data_dir` read-only and loads `pack`.
    pub fn load(
        data_dir: &Path,
        home: &Home,
        pack: &str,
        inference: &InferenceOptions,
    ) -> Result<AppState> {
        let gallery = Gallery::open(data_dir, Access::ReadOnly)
            .with_context(|| format!("cannot open the gallery in {}", data_dir.display()))?;
        let pipeline = FacePipeline::load(home, pack, inference)?;
        Ok(AppState::new(gallery, pipeline))
    }
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
    /// Stable machine-readable code, e.g. `bad_request`, `not_found`, `unsupported_format`.
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
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is over {BODY_LIMIT} bytes"),
        )
    }

    /// An unexpected failure: logged here, reported without internals.
    fn internal(e: anyhow::Error) -> ApiError {
        tracing::error!("internal error: {e:#}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }

    /// A body that could not be read: 413 when over the limit, else 400.
    fn body(status: StatusCode, message: String) -> ApiError {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large()
        } else {
            ApiError::bad_request(message)
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
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

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
async fn json_errors(req: Request, next: Next) -> Response {
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

/// Logs method, path, status and latency; never bodies.
async fn log_requests(req: Request, next: Next) -> Response {
    let t = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let res = next.run(req).await;
    tracing::info!(
        "{method} {path} {} {:.1} ms",
        res.status().as_u16(),
        t.elapsed().as_secs_f64() * 1e3
    );
    res
}

// ---------------------------------------------------------------------------------------------
// Handlers

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// Liveness probe (no authentication, ever).
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The OpenAPI 3 description of this API.
#[utoipa::path(get, path = "/v1/openapi.json",
    responses((status = 200, description = "OpenAPI 3 document", body = Object)))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Search by JSON: the probe photo encoded in base64.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchJson {
    /// The probe photo (JPEG, PNG, WebP, GIF, BMP or TIFF), standard base64.
    pub image_base64: String,
    /// Matches per probe face (1 to 100, default 10).
    pub k: Option<usize>,
    /// Only matches at or above this cosine similarity.
    pub threshold: Option<f32>,
    /// Collection to search (default: every collection of the server's pack).
    pub collection: Option<String>,
}

/// Search by multipart/form-data upload.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct SearchForm {
    /// The probe photo.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    k: Option<usize>,
    threshold: Option<f32>,
    collection: Option<String>,
}

struct SearchInput {
    image: Vec<u8>,
    k: Option<usize>,
    threshold: Option<f32>,
    collection: Option<String>,
}

fn parse_field<T: std::str::FromStr>(name: &str, text: &str) -> ApiResult<T> {
    text.trim()
        .parse()
        .map_err(|_| ApiError::bad_request(format!("field `{name}` is not a valid number")))
}

async fn read_multipart(mut mp: Multipart) -> ApiResult<SearchInput> {
    let mut input = SearchInput {
        image: vec![],
        k: None,
        threshold: None,
        collection: None,
    };
    let mut image = None;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(ApiError::body(e.status(), e.body_text())),
        };
        let name = field.name().unwrap_or("").to_string();
        let data = field
            .bytes()
            .await
            .map_err(|e| ApiError::body(e.status(), e.body_text()))?;
        let text = || String::from_utf8_lossy(&data).into_owned();
        match name.as_str() {
            "image" => image = Some(data.to_vec()),
            "k" => input.k = Some(parse_field("k", &text())?),
            "threshold" => input.threshold = Some(parse_field("threshold", &text())?),
            "collection" => input.collection = Some(text()),
            _ => {}
        }
    }
    input.image = image.ok_or_else(|| ApiError::bad_request("missing the `image` field"))?;
    Ok(input)
}

fn read_json(body: &[u8]) -> ApiResult<SearchInput> {
    let j: SearchJson = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("invalid JSON body: {e}"),
        )
    })?;
    let image = base64::engine::general_purpose::STANDARD
        .decode(j.image_base64.trim())
        .map_err(|e| ApiError::bad_request(format!("`image_base64` is not valid base64: {e}")))?;
    Ok(SearchInput {
        image,
        k: j.k,
        threshold: j.threshold,
        collection: j.collection,
    })
}

/// Searches the gallery with the most central usable face of a probe photo.
#[utoipa::path(post, path = "/v1/search",
    request_body(content(
        (SearchForm = "multipart/form-data"),
        (SearchJson = "application/json"),
    )),
    responses(
        (status = 200, description = "Probe faces with ranked matches (engine SearchResult)",
            body = Object),
        (status = 400, description = "`bad_request` or `bad_json`", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown collection", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`no_face_detected`, or the decoder's code \
            (`unsupported_format`, `corrupt_image`, `image_too_large`, `empty_file`)",
            body = ErrorBody),
    ))]
async fn search(State(st): State<AppState>, req: Request) -> ApiResult<Response> {
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let input = if ctype.starts_with("multipart/form-data") {
        let mp = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::body(e.status(), e.body_text()))?;
        read_multipart(mp).await?
    } else if ctype.starts_with("application/json") {
        let body = Bytes::from_request(req, &())
            .await
            .map_err(|e| ApiError::body(e.status(), e.body_text()))?;
        read_json(&body)?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send multipart/form-data with an `image` field, or application/json with \
             `image_base64`",
        ));
    };
    let k = input.k.unwrap_or(10);
    if k == 0 || k > MAX_K {
        return Err(ApiError::bad_request(format!(
            "`k` must be between 1 and {MAX_K}"
        )));
    }
    let opts = SearchOptions {
        collections: input.collection.into_iter().collect(),
        k,
        threshold: input.threshold,
        ..Default::default()
    };
    let result = tokio::task::spawn_blocking(move || run_search(&st, &input.image, &opts))
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("search task failed: {e}")))??;
    Ok(Json(result).into_response())
}

fn run_search(
    st: &AppState,
    image: &[u8],
    opts: &SearchOptions,
) -> ApiResult<visage_engine::SearchResult> {
    let pipeline = st
        .pipeline
        .lock()
        .map_err(|_| ApiError::internal(anyhow::anyhow!("pipeline lock poisoned")))?;
    let pack = pipeline.pack_id();
    // Checked here so that these client errors get their own codes.
    for name in &opts.collections {
        match st.gallery.collection(name).map_err(ApiError::internal)? {
            None => return Err(ApiError::not_found(format!("no collection named {name:?}"))),
            Some(c) if c.pack != pack => {
                return Err(ApiError::bad_request(format!(
                    "collection {name:?} uses pack {}, this server embeds with {pack}",
                    c.pack
                )))
            }
            Some(_) => {}
        }
    }
    if opts.collections.is_empty() {
        let any = st
            .gallery
            .collections()
            .map_err(ApiError::internal)?
            .iter()
            .any(|c| c.pack == pack);
        if !any {
            return Err(ApiError::not_found(format!(
                "no collection in this gallery uses pack {pack}"
            )));
        }
    }
    let result = visage_engine::search_image(&st.gallery, &pipeline, image, opts).map_err(|e| {
        match e.downcast_ref::<DecodeError>() {
            Some(d) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, d.code(), d.to_string()),
            None => ApiError::internal(e),
        }
    })?;
    if result.probe_faces.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_face_detected",
            "no face was detected in the probe image",
        ));
    }
    Ok(result)
}

fn face_id(raw: &str) -> ApiResult<i64> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("face id {raw:?} is not an integer")))
}

/// A stored face with its provenance (gallery FaceRecord).
#[utoipa::path(get, path = "/v1/faces/{id}",
    params(("id" = i64, Path, description = "Face id")),
    responses(
        (status = 200, description = "FaceRecord", body = Object),
        (status = 400, description = "`bad_request`: id is not an integer", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn get_face(
    State(st): State<AppState>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Response> {
    let id = face_id(&raw)?;
    let rec = tokio::task::spawn_blocking(move || st.gallery.face(id))
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("task failed: {e}")))?
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no face with id {id}")))?;
    Ok(Json(rec).into_response())
}

/// The face's thumbnail in its photo (JPEG).
#[utoipa::path(get, path = "/v1/faces/{id}/thumbnail",
    params(("id" = i64, Path, description = "Face id")),
    responses(
        (status = 200, description = "JPEG thumbnail", content_type = "image/jpeg", body = Vec<u8>),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn get_thumbnail(
    State(st): State<AppState>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Response> {
    let id = face_id(&raw)?;
    let bytes = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<Vec<u8>>> {
        match st.gallery.face(id)? {
            None => Ok(None),
            Some(f) => Ok(Some(st.gallery.blob(&f.thumb_sha)?)),
        }
    })
    .await
    .map_err(|e| ApiError::internal(anyhow::anyhow!("task failed: {e}")))?
    .map_err(ApiError::internal)?
    .ok_or_else(|| ApiError::not_found(format!("no face with id {id}")))?;
    let mut res = Body::from(bytes).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    Ok(res)
}

/// Counts per collection, source and jurisdiction; bytes on disk and in memory.
#[utoipa::path(get, path = "/v1/stats",
    responses((status = 200, description = "Gallery Stats", body = Object)))]
async fn stats(State(st): State<AppState>) -> ApiResult<Response> {
    let s = tokio::task::spawn_blocking(move || st.gallery.stats())
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("task failed: {e}")))?
        .map_err(ApiError::internal)?;
    Ok(Json(s).into_response())
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "visage",
        description = "Accountable face search. No authentication yet: \
        bind to loopback only."
    ),
    paths(healthz, openapi, search, get_face, get_thumbnail, stats),
    components(schemas(ErrorBody, ErrorDetail, Health, SearchJson, SearchForm))
)]
pub struct ApiDoc;

/// The routes with their limits, timeout, JSON errors and request log.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/search", post(search))
        .route("/v1/faces/{id}", get(get_face))
        .route("/v1/faces/{id}/thumbnail", get(get_thumbnail))
        .route("/v1/stats", get(stats))
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(log_requests))
}

/// Serves on `listener` until `shutdown` resolves, then lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
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
pub fn run(bind: SocketAddr, state: AppState, on_ready: impl FnOnce(SocketAddr)) -> Result<()> {
    if !bind.ip().is_loopback() {
        tracing::warn!(
            "listening on {bind}, which is not loopback: the API has no authentication yet"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        on_ready(listener.local_addr()?);
        serve(listener, state, shutdown_signal()).await?;
        Ok(())
    })
}
