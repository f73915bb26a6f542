//! Searches (by photo, by stored face) and 1:1 verification: each authorised under a case
//! with a purpose and recorded in the audit log, refusals included.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use axum::body::Bytes;
use axum::extract::multipart::MultipartError;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tower_http::timeout::TimeoutLayer;
use utoipa::ToSchema;
use visage_engine::search::{
    calibrate_hits, effective_threshold, CalibrationInfo, FaceChoice, FaceIndexError,
};
use visage_engine::video_search::{VideoProbeError, VideoSearchOptions, VideoSearchResult};
use visage_engine::SearchOptions;
use visage_gallery::{FaceStore, Filter, Hit, SearchQuery};
use visage_governance::{Action, AuditEvent, AuthzContext, Principal};
use visage_vision::{AnalyzeOptions, DecodeError, DecodeLimits, FacePipeline};

use crate::auth::{authorize_with, Auth};
use crate::input::{self, Input};
use crate::{blocking, face_id, ApiError, ApiResult, AppState, ErrorBody, MAX_K};

/// Search by JSON: the probe photo encoded in base64.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchJson {
    /// The probe photo (JPEG, PNG, WebP, GIF, BMP or TIFF), standard base64.
    pub image_base64: String,
    /// Open case of the caller's organisation (required).
    pub case_id: i64,
    /// Why this search is made (required, at least the policy's minimum length).
    pub purpose: String,
    /// Matches per probe face (1 to 100, default 10).
    pub k: Option<usize>,
    /// Only matches at or above this cosine similarity.
    pub threshold: Option<f32>,
    /// Only matches whose estimated false match rate is at most this, e.g. 1e-4.
    pub max_fmr: Option<f64>,
    /// Collection to search (default: every collection of the server's pack).
    pub collection: Option<String>,
    /// Which probe faces to search with: `main` (default: the main face, among the largest
    /// the nearest the centre), `all`, or one face by its index in the response's
    /// `detected_faces` (faces are numbered left to right; re-send the same photo with the
    /// index to search with another face). An index beyond the faces detected is 400
    /// `face_index_out_of_range`.
    #[schema(value_type = Option<String>, example = "main")]
    pub faces: Option<serde_json::Value>,
    /// Only faces from these source ids.
    pub source: Option<Vec<i64>>,
    /// Only faces from these jurisdictions or inside them (`US` matches `US-IL`).
    pub jurisdiction: Option<Vec<String>>,
    /// Never faces from these jurisdictions (the policy's exclusions always apply).
    pub exclude_jurisdiction: Option<Vec<String>>,
    /// Only faces captured at or after this time (unix seconds); faces without a capture
    /// time are left out when either bound is given.
    pub captured_from: Option<i64>,
    /// Only faces captured at or before this time (unix seconds).
    pub captured_to: Option<i64>,
}

/// Search by multipart/form-data upload (same fields as JSON, `image` is the file; list
/// fields repeat or hold comma-separated values).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct SearchForm {
    /// The probe photo.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    case_id: i64,
    purpose: String,
    k: Option<usize>,
    threshold: Option<f32>,
    max_fmr: Option<f64>,
    collection: Option<String>,
    /// `main` (default), `all` or a face index.
    faces: Option<String>,
    source: Option<Vec<i64>>,
    jurisdiction: Option<Vec<String>>,
    exclude_jurisdiction: Option<Vec<String>>,
    captured_from: Option<i64>,
    captured_to: Option<i64>,
}

/// Search with a stored face's vector.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct SearchFaceJson {
    pub case_id: Option<i64>,
    pub purpose: Option<String>,
    pub k: Option<usize>,
    pub threshold: Option<f32>,
    pub max_fmr: Option<f64>,
    /// Collection to search (default: every collection of the face's pack).
    pub collection: Option<String>,
}

/// 1:1 verification by JSON: two photos in base64.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifyJson {
    pub a_base64: String,
    pub b_base64: String,
    pub case_id: i64,
    pub purpose: String,
}

/// 1:1 verification by multipart/form-data: files `a` and `b`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct VerifyForm {
    #[schema(value_type = String, format = Binary)]
    a: Vec<u8>,
    #[schema(value_type = String, format = Binary)]
    b: Vec<u8>,
    case_id: i64,
    purpose: String,
}

/// Numbers in audit details are written as decimal strings: a float does not always survive
/// the store-and-reparse round trip bit for bit, and the record's hash covers its text.
fn audit_num(v: Option<f64>) -> serde_json::Value {
    match v {
        Some(x) => format!("{x:.6e}").into(),
        None => serde_json::Value::Null,
    }
}

pub(crate) fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn check_k(k: Option<usize>) -> ApiResult<usize> {
    let k = k.unwrap_or(10);
    if k == 0 || k > MAX_K {
        return Err(ApiError::bad_request(format!(
            "`k` must be between 1 and {MAX_K}"
        )));
    }
    Ok(k)
}

pub(crate) fn ctx(case_id: Option<i64>, purpose: Option<String>) -> AuthzContext {
    AuthzContext {
        case_id,
        purpose,
        now: None,
    }
}

/// Shapes the record of a refused request: the probe's SHA-256 (never the probe) and the
/// request's details added to the refusal's.
fn shape_refusal(
    probe_sha: Option<String>,
    details: serde_json::Value,
) -> impl FnOnce(AuditEvent) -> AuditEvent {
    move |mut ev| {
        if let (serde_json::Value::Object(m), serde_json::Value::Object(extra)) =
            (&mut ev.details, details)
        {
            m.extend(extra);
        }
        match probe_sha {
            Some(sha) => ev.probe_sha256(sha),
            None => ev,
        }
    }
}

/// The record of an authorised search or verification (either API's audit log).
pub(crate) fn search_event(
    p: &Principal,
    action: Action,
    d: &visage_governance::Decision,
    case_id: i64,
    face_ids: &[i64],
    details: serde_json::Value,
    probe_sha: Option<&str>,
) -> AuditEvent {
    let mut ev = AuditEvent::decision(p, action, d)
        .case(case_id)
        .result_count(face_ids.len() as u64)
        .objects(face_ids.iter().map(|i| i.to_string()))
        .details(details);
    if let Some(s) = probe_sha {
        ev = ev.probe_sha256(s);
    }
    ev
}

fn decode_error(e: anyhow::Error) -> ApiError {
    if let Some(d) = e.downcast_ref::<DecodeError>() {
        return ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, d.code(), d.to_string());
    }
    if let Some(f) = e.downcast_ref::<FaceIndexError>() {
        return ApiError::new(StatusCode::BAD_REQUEST, FaceIndexError::CODE, f.to_string());
    }
    if let Some(v) = e.downcast_ref::<VideoProbeError>() {
        let status = match v.code {
            "decoder_missing" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        return ApiError::new(status, v.code, v.message.clone());
    }
    ApiError::internal(e)
}

/// The values of a list field: multipart fields repeat and may hold comma-separated values;
/// JSON takes a string, a number or an array of them.
fn list(input: &Input, name: &str) -> ApiResult<Vec<String>> {
    use serde_json::Value as V;
    let raw: Vec<String> = match input {
        Input::Form(f) => f
            .get(name)
            .map(|v| {
                v.iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect()
            })
            .unwrap_or_default(),
        Input::Json(m) => match m.get(name) {
            None | Some(V::Null) => vec![],
            Some(V::String(s)) => vec![s.clone()],
            Some(V::Number(n)) => vec![n.to_string()],
            Some(V::Array(a)) => a
                .iter()
                .map(|v| match v {
                    V::String(s) => Ok(s.clone()),
                    V::Number(n) => Ok(n.to_string()),
                    _ => Err(ApiError::bad_json(format!(
                        "`{name}` must hold strings or numbers"
                    ))),
                })
                .collect::<ApiResult<_>>()?,
            Some(_) => {
                return Err(ApiError::bad_json(format!(
                    "`{name}` must be a string, a number or an array"
                )))
            }
        },
    };
    Ok(raw
        .iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// The caller's result filter (`source`, `jurisdiction`, `exclude_jurisdiction`,
/// `captured_from`, `captured_to`); the policy's exclusions are added by the caller.
fn parse_filter(input: &Input) -> ApiResult<Filter> {
    let jurisdictions = |name: &str| -> ApiResult<Vec<String>> {
        list(input, name)?
            .iter()
            .map(|j| {
                visage_gallery::normalize_jurisdiction(j)
                    .map_err(|e| ApiError::bad_request(format!("`{name}`: {e:#}")))
            })
            .collect()
    };
    let sources = list(input, "source")?
        .iter()
        .map(|s| {
            s.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("`source` must hold source ids, got {s:?}"))
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let f = Filter {
        sources,
        jurisdictions: jurisdictions("jurisdiction")?,
        exclude_jurisdictions: jurisdictions("exclude_jurisdiction")?,
        subjects: vec![],
        captured_from: input.num("captured_from")?,
        captured_to: input.num("captured_to")?,
    };
    if let (Some(a), Some(b)) = (f.captured_from, f.captured_to) {
        if a > b {
            return Err(ApiError::bad_request(
                "`captured_from` is after `captured_to`",
            ));
        }
    }
    Ok(f)
}

/// `faces`: `main` (default), `all` or a face index (a string or, in JSON, a number).
fn parse_faces(input: &Input) -> ApiResult<FaceChoice> {
    let raw = match input {
        Input::Json(m) => match m.get("faces") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(_) => {
                return Err(ApiError::bad_json(
                    "`faces` must be \"main\", \"all\" or a face index",
                ))
            }
        },
        Input::Form(_) => input.text("faces")?,
    };
    match raw {
        None => Ok(FaceChoice::Main),
        Some(s) => s.parse().map_err(|e: String| ApiError::bad_request(e)),
    }
}

/// The filter as recorded in the audit log (only what the caller asked for).
fn filter_details(f: &Filter) -> serde_json::Value {
    serde_json::json!({
        "source": f.sources, "jurisdiction": f.jurisdictions,
        "exclude_jurisdiction": f.exclude_jurisdictions,
        "captured_from": f.captured_from, "captured_to": f.captured_to,
    })
}

fn no_face(which: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "no_face_detected",
        format!("no face was detected in the {which} image"),
    )
}

/// A request made under a case, on either API (photo, video and stored-face search,
/// 1:1 verification): what the policy decides on, and how its refusal, its record and its
/// answer are made. [`under_case`] (and the cluster API's own) runs one.
pub(crate) trait CaseRequest: Send + 'static {
    /// What running the request gives.
    type Out;
    /// The action the policy decides.
    const ACTION: Action;
    /// The request's label in the metrics.
    const KIND: &'static str;
    fn case_id(&self) -> Option<i64>;
    fn purpose(&self) -> Option<String>;
    /// Adds the policy's excluded jurisdictions to a search's filters (others ignore them).
    fn exclude_jurisdictions(&mut self, _codes: Vec<String>) {}
    /// Shapes the record of a refusal with the request's details.
    fn refusal_shape(&self) -> impl FnOnce(AuditEvent) -> AuditEvent + Send + 'static;
    /// The record of the authorised request, answered or failed.
    fn record(
        &self,
        p: &Principal,
        d: &visage_governance::Decision,
        case_id: i64,
        res: &ApiResult<Self::Out>,
    ) -> AuditEvent;
    /// The answer's body (the record's seq and the case are added to it).
    fn answer(out: Self::Out) -> impl Serialize;
}

/// Decides, runs and records a request under a case on the embedded API, on the blocking
/// pool: the policy's decision (a refusal recorded), the policy's excluded jurisdictions,
/// `run`, then the record (whether `run` answered or failed) and the metrics. Searches of an
/// organisation with a quota hold its lock throughout (`AppState::quota_lock`).
async fn under_case<Q: CaseRequest>(
    st: AppState,
    p: Principal,
    mut q: Q,
    run: impl FnOnce(&AppState, &Q) -> ApiResult<Q::Out> + Send + 'static,
) -> ApiResult<Response> {
    blocking(&st, move |st| {
        // A quota is counted from the log's search records: decision to record, one search of
        // the organisation at a time.
        let lock = st.quota_lock(&p, Q::ACTION);
        let _held = lock
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()));
        let d = authorize_with(
            st,
            &p,
            Q::ACTION,
            &ctx(q.case_id(), q.purpose()),
            q.refusal_shape(),
        )?;
        let case_id = q
            .case_id()
            .expect("authorised actions under a case carry one");
        q.exclude_jurisdictions(st.excluded_jurisdictions());
        let res = run(st, &q);
        let audit_id = st.gov.append(q.record(&p, &d, case_id, &res))?.seq;
        st.metrics.search(Q::KIND, res.is_ok());
        add_audit_id(Q::answer(res?), case_id, audit_id)
    })
    .await
}

pub(crate) fn add_audit_id(v: impl Serialize, case_id: i64, audit_id: u64) -> ApiResult<Response> {
    let mut v = serde_json::to_value(v).map_err(|e| ApiError::internal(e.into()))?;
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("audit_id".into(), audit_id.into());
        m.insert("case_id".into(), case_id.into());
    }
    Ok(Json(v).into_response())
}

/// Searches the gallery with the faces of a probe photo chosen by `faces` (default: the main
/// face), under a case. The response lists every detected face (`detected_faces`, with index
/// and box) and the searched ones with their matches (`probe_faces`); to search with another
/// face, send the same photo again with `faces` set to its index (a new, audited search).
/// The probe's SHA-256 (never the image) and the returned face ids go to the audit log; the
/// response's `audit_id` is that record's seq.
#[utoipa::path(post, path = "/v1/search", tag = "search",
    request_body(content(
        (SearchForm = "multipart/form-data"),
        (SearchJson = "application/json"),
    )),
    responses(
        (status = 200, description = "Probe faces with ranked matches (engine SearchResult) \
            plus `audit_id` and `case_id`", body = Object),
        (status = 400, description = "`bad_request`, `bad_json`, `face_index_out_of_range`",
            body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied`, `case_required`, `purpose_required`, \
            `quota_exceeded`", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown collection", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`no_face_detected`, or the decoder's code \
            (`unsupported_format`, `corrupt_image`, `image_too_large`, `empty_file`)",
            body = ErrorBody),
    ))]
pub(crate) async fn search(
    State(st): State<AppState>,
    Auth(p): Auth,
    req: Request,
) -> ApiResult<Response> {
    let q = read_photo_search(req).await?;
    under_case(st, p, q, |st, q| {
        let pipeline = lock_pipeline(st)?;
        run_photo_search(&st.gallery, &pipeline, &q.image, &q.opts)
    })
    .await
}

/// A photo search as read from the request body (multipart or JSON): the same fields and
/// checks for the embedded and the cluster API (`cluster_api.rs`).
pub(crate) struct PhotoSearch {
    pub(crate) image: Vec<u8>,
    pub(crate) case_id: Option<i64>,
    pub(crate) purpose: Option<String>,
    /// Without the policy's jurisdiction exclusions: the caller adds them.
    pub(crate) opts: SearchOptions,
    pub(crate) probe_sha: String,
    /// What the audit record details: purpose, k, thresholds, collection, faces, filter.
    details: serde_json::Value,
}

pub(crate) async fn read_photo_search(req: Request) -> ApiResult<PhotoSearch> {
    let input = input::read(
        req,
        "a multipart `image` field, or JSON with `image_base64`",
    )
    .await?;
    let image = input
        .image("image")?
        .ok_or_else(|| ApiError::bad_request("missing the `image` field (or `image_base64`)"))?;
    let case_id: Option<i64> = input.num("case_id")?;
    let purpose = input.text("purpose")?;
    let k = check_k(input.num("k")?)?;
    let threshold: Option<f32> = input.num("threshold")?;
    let max_fmr: Option<f64> = input.num("max_fmr")?;
    let collection = input.text("collection")?;
    let faces = parse_faces(&input)?;
    let filter = parse_filter(&input)?;
    let probe_sha = sha256_hex(&image);
    let details = serde_json::json!({
        "purpose": purpose, "k": k, "threshold": audit_num(threshold.map(f64::from)),
        "max_fmr": audit_num(max_fmr),
        "collection": collection,
        "faces": faces.to_string(),
        "filter": filter_details(&filter),
    });
    Ok(PhotoSearch {
        image,
        case_id,
        purpose,
        opts: SearchOptions {
            collections: collection.into_iter().collect(),
            k,
            threshold,
            max_fmr,
            filter,
            faces,
            ..Default::default()
        },
        probe_sha,
        details,
    })
}

impl CaseRequest for PhotoSearch {
    type Out = visage_engine::SearchResult;
    const ACTION: Action = Action::Search;
    const KIND: &'static str = "photo";

    fn case_id(&self) -> Option<i64> {
        self.case_id
    }

    fn purpose(&self) -> Option<String> {
        self.purpose.clone()
    }

    fn exclude_jurisdictions(&mut self, codes: Vec<String>) {
        self.opts.filter.exclude_jurisdictions.extend(codes);
    }

    /// Shapes the record of a refused search: the probe's hash and the request's details.
    fn refusal_shape(&self) -> impl FnOnce(AuditEvent) -> AuditEvent + Send + 'static {
        shape_refusal(Some(self.probe_sha.clone()), self.details.clone())
    }

    /// The record of an authorised search, made or failed: the returned face ids, the pack
    /// or the error's code.
    fn record(
        &self,
        p: &Principal,
        d: &visage_governance::Decision,
        case_id: i64,
        res: &ApiResult<Self::Out>,
    ) -> AuditEvent {
        let mut details = self.details.clone();
        let faces: Vec<i64> = match res {
            Ok(r) => {
                details["pack"] = r.pack.clone().into();
                r.probe_faces
                    .iter()
                    .flat_map(|f| f.hits.iter().map(|h| h.face.id))
                    .collect()
            }
            Err(e) => {
                details["error"] = e.code.into();
                vec![]
            }
        };
        search_event(
            p,
            Action::Search,
            d,
            case_id,
            &faces,
            details,
            Some(&self.probe_sha),
        )
    }

    fn answer(out: Self::Out) -> impl Serialize {
        out
    }
}

fn lock_pipeline(st: &AppState) -> ApiResult<std::sync::MutexGuard<'_, FacePipeline>> {
    st.pipeline
        .lock()
        .map_err(|_| ApiError::internal(anyhow::anyhow!("pipeline lock poisoned")))
}

/// A photo search on either backend: the request's client errors first (unknown collection,
/// another pack, `max_fmr` without calibration), then the search; no face is 422.
pub(crate) fn run_photo_search(
    store: &dyn FaceStore,
    pipeline: &FacePipeline,
    image: &[u8],
    opts: &SearchOptions,
) -> ApiResult<visage_engine::SearchResult> {
    check_search(store, pipeline, opts)?;
    let result = visage_engine::search_image(store, pipeline, image, opts).map_err(decode_error)?;
    if result.probe_faces.is_empty() {
        return Err(no_face("probe"));
    }
    Ok(result)
}

/// The collections and threshold of a search, checked so that these client errors get their
/// own codes (404 unknown collection, 400 another pack or `max_fmr` without calibration).
fn check_search(
    store: &dyn FaceStore,
    pipeline: &FacePipeline,
    opts: &SearchOptions,
) -> ApiResult<()> {
    let pack = pipeline.pack_id();
    // Checked here so that these client errors get their own codes.
    for name in &opts.collections {
        match store.collection(name).map_err(ApiError::internal)? {
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
        let any = store
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
    effective_threshold(
        pipeline.pack.calibration.as_ref(),
        opts.threshold,
        opts.max_fmr,
    )
    .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    Ok(())
}

/// The result of a search by stored face.
#[derive(Debug, Serialize)]
pub struct FaceSearchResult {
    pub pack: String,
    pub probe_face_id: i64,
    pub collections: Vec<String>,
    pub faces_searched: u64,
    pub calibration: Option<CalibrationInfo>,
    pub threshold: Option<f32>,
    pub warnings: Vec<String>,
    /// Matches, best first; the probe face itself is left out.
    pub hits: Vec<Hit>,
}

/// The serving pipeline's calibration, when `pack` is its pack (a pack's calibration applies
/// only to its own scores): the `calibration` argument of [`search_by_face_in`] (both APIs).
pub(crate) fn pipeline_calibration(
    pipeline: &std::sync::Mutex<FacePipeline>,
    pack: &str,
) -> ApiResult<Option<visage_vision::Calibration>> {
    let p = pipeline
        .lock()
        .map_err(|_| ApiError::internal(anyhow::anyhow!("pipeline lock poisoned")))?;
    Ok((p.pack_id() == pack)
        .then(|| p.pack.calibration.clone())
        .flatten())
}

/// What a search by stored face asks.
pub(crate) struct FaceSearchArgs<'a> {
    pub id: i64,
    pub k: usize,
    pub threshold: Option<f32>,
    pub max_fmr: Option<f64>,
    pub collection: Option<&'a str>,
}

/// Searches with a stored face's vector every collection of its pack (or `collection`), the
/// probe face left out, over any store (both APIs); `calibration(pack)` gives the serving
/// pipeline's calibration ([`pipeline_calibration`]); storage errors are `internal`.
pub(crate) fn search_by_face_in(
    store: &dyn FaceStore,
    policy: &visage_governance::Policy,
    calibration: &dyn Fn(&str) -> ApiResult<Option<visage_vision::Calibration>>,
    a: FaceSearchArgs<'_>,
) -> ApiResult<FaceSearchResult> {
    let FaceSearchArgs {
        id,
        k,
        threshold,
        max_fmr,
        collection,
    } = a;
    let face = crate::visible_face_in(store, policy, id)?;
    let vector = store
        .face_vector(id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no face with id {id}")))?;
    let cal = calibration(&face.pack)?;
    let cal = cal.as_ref();
    let mut warnings = Vec::new();
    if cal.is_none() {
        warnings.push(format!(
            "no calibration for pack {}: matches carry no false match rate",
            face.pack
        ));
    }
    let threshold = effective_threshold(cal, threshold, max_fmr)
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    let colls: Vec<_> = match collection {
        Some(name) => {
            let c = store
                .collection(name)
                .map_err(ApiError::internal)?
                .ok_or_else(|| ApiError::not_found(format!("no collection named {name:?}")))?;
            if c.pack != face.pack {
                return Err(ApiError::bad_request(format!(
                    "collection {name:?} uses pack {}, face {id} was embedded with {}",
                    c.pack, face.pack
                )));
            }
            vec![c]
        }
        None => store
            .collections()
            .map_err(ApiError::internal)?
            .into_iter()
            .filter(|c| c.pack == face.pack)
            .collect(),
    };
    let filter = Filter {
        exclude_jurisdictions: policy.data.excluded_codes(),
        ..Default::default()
    };
    let mut hits = Vec::new();
    let mut searched = 0u64;
    for c in &colls {
        let (h, trace) = store
            .search_traced(&SearchQuery {
                collection_id: c.id,
                vector: &vector,
                k: k + 1,
                threshold,
                filter: filter.clone(),
            })
            .map_err(ApiError::internal)?;
        searched += match trace.filter_matches {
            Some(n) => n as u64,
            None => store.indexed_faces(c.id).map_err(ApiError::internal)?,
        };
        hits.extend(h.into_iter().filter(|h| h.face.id != id));
    }
    calibrate_hits(cal, &mut hits, searched);
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.face.id.cmp(&b.face.id)));
    hits.truncate(k);
    Ok(FaceSearchResult {
        pack: face.pack,
        probe_face_id: id,
        collections: colls.into_iter().map(|c| c.name).collect(),
        faces_searched: searched,
        calibration: cal.map(CalibrationInfo::of),
        threshold,
        warnings,
        hits,
    })
}

/// Searches with a stored face's vector (e.g. to follow a candidate), under a case; audited
/// like a photo search, with the probe face id in the record's details.
#[utoipa::path(post, path = "/v1/search/face/{id}", tag = "search",
    params(("id" = i64, Path, description = "Probe face id")),
    request_body = SearchFaceJson,
    responses(
        (status = 200, description = "`hits` best first (the probe face left out), `audit_id`",
            body = Object),
        (status = 400, description = "`bad_request` or `bad_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied`, `case_required`, `purpose_required`, \
            `quota_exceeded`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn search_face(
    State(st): State<AppState>,
    Auth(p): Auth,
    UrlPath(raw): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let q = read_face_search(&raw, &body)?;
    under_case(st, p, q, |st, q| {
        search_by_face_in(
            &st.gallery,
            &st.gov.policy(),
            &|pack| pipeline_calibration(&st.pipeline, pack),
            q.args(),
        )
    })
    .await
}

/// A search-by-stored-face request, parsed (both APIs).
pub(crate) struct FaceSearch {
    pub id: i64,
    pub j: SearchFaceJson,
    pub k: usize,
    /// What the audit record's details say about the request.
    details: serde_json::Value,
}

/// Parses `POST /v1/search/face/{id}`: the face id from the path, the JSON body.
pub(crate) fn read_face_search(raw_id: &str, body: &[u8]) -> ApiResult<FaceSearch> {
    let id = face_id(raw_id)?;
    let j: SearchFaceJson = input::json(body)?;
    let k = check_k(j.k)?;
    let details = serde_json::json!({
        "purpose": j.purpose, "probe_face_id": id, "k": k,
        "threshold": audit_num(j.threshold.map(f64::from)), "max_fmr": audit_num(j.max_fmr),
        "collection": j.collection,
    });
    Ok(FaceSearch { id, j, k, details })
}

impl FaceSearch {
    pub(crate) fn args(&self) -> FaceSearchArgs<'_> {
        FaceSearchArgs {
            id: self.id,
            k: self.k,
            threshold: self.j.threshold,
            max_fmr: self.j.max_fmr,
            collection: self.j.collection.as_deref(),
        }
    }
}

impl CaseRequest for FaceSearch {
    type Out = FaceSearchResult;
    const ACTION: Action = Action::Search;
    const KIND: &'static str = "face";

    fn case_id(&self) -> Option<i64> {
        self.j.case_id
    }

    fn purpose(&self) -> Option<String> {
        self.j.purpose.clone()
    }

    /// Adds the request's details to a refusal's record.
    fn refusal_shape(&self) -> impl FnOnce(AuditEvent) -> AuditEvent + Send + 'static {
        shape_refusal(None, self.details.clone())
    }

    /// The audit record of the authorised search: returned face ids, or the error's code.
    fn record(
        &self,
        p: &Principal,
        d: &visage_governance::Decision,
        case_id: i64,
        res: &ApiResult<Self::Out>,
    ) -> AuditEvent {
        let mut details = self.details.clone();
        let faces: Vec<i64> = match res {
            Ok(r) => r.hits.iter().map(|h| h.face.id).collect(),
            Err(e) => {
                details["error"] = e.code.into();
                vec![]
            }
        };
        search_event(p, Action::Search, d, case_id, &faces, details, None)
    }

    fn answer(out: Self::Out) -> impl Serialize {
        out
    }
}

/// One side of a verification.
#[derive(Debug, Serialize)]
struct VerifySide {
    bbox: [f32; 4],
    det_score: f32,
    quality: visage_core::Quality,
    faces_detected: usize,
    sha256: String,
}

/// The main face (most central usable) of an image, embedded.
fn main_face(p: &FacePipeline, bytes: &[u8], which: &str) -> ApiResult<(VisageFace, VerifySide)> {
    let img = visage_vision::decode_bytes(bytes, &DecodeLimits::default())
        .map_err(|e| decode_error(e.into()))?;
    let faces = p
        .analyze(&img.rgb, &AnalyzeOptions::default())
        .map_err(|e| ApiError::internal(e.into()))?;
    let usable: Vec<visage_vision::Face> = faces
        .iter()
        .filter(|f| f.embedding.is_some())
        .cloned()
        .collect();
    let i = visage_vision::most_central(&usable, img.rgb.width(), img.rgb.height())
        .ok_or_else(|| no_face(which))?;
    let f = usable[i].clone();
    let b = &f.detection.bbox;
    let side = VerifySide {
        bbox: [b.x1, b.y1, b.x2, b.y2],
        det_score: f.detection.score,
        quality: f.quality.clone(),
        faces_detected: faces.len(),
        sha256: sha256_hex(bytes),
    };
    Ok((f, side))
}

type VisageFace = visage_vision::Face;

/// The answer of a verification.
#[derive(Debug, Serialize)]
pub(crate) struct VerifyResult {
    pack: String,
    similarity: f32,
    /// The pack's verification threshold.
    threshold: f32,
    same: bool,
    /// Estimated false match rate at this similarity (pack calibration), if calibrated.
    fmr: Option<f64>,
    fmr_extrapolated: Option<bool>,
    a: VerifySide,
    b: VerifySide,
}

pub(crate) fn run_verify(p: &FacePipeline, a: &[u8], b: &[u8]) -> ApiResult<VerifyResult> {
    let (fa, sa) = main_face(p, a, "`a`")?;
    let (fb, sb) = main_face(p, b, "`b`")?;
    let (Some(ea), Some(eb)) = (&fa.embedding, &fb.embedding) else {
        return Err(no_face("probe"));
    };
    let similarity = ea
        .cosine(eb)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
    let threshold = p.pack.thresholds.verify;
    let est = p.pack.calibration.as_ref().map(|c| c.fmr(similarity));
    Ok(VerifyResult {
        pack: p.pack_id(),
        similarity,
        threshold,
        same: similarity >= threshold,
        fmr: est.as_ref().map(|e| e.fmr),
        fmr_extrapolated: est.as_ref().map(|e| e.extrapolated),
        a: sa,
        b: sb,
    })
}

/// 1:1 verification of two photos (most central usable face of each) under a case: the
/// similarity, the pack's threshold, same or different, and the false match rate of that
/// similarity. Audited like a search (probe_sha256 is `a`'s; `b`'s is in the details).
#[utoipa::path(post, path = "/v1/verify", tag = "search",
    request_body(content(
        (VerifyForm = "multipart/form-data"),
        (VerifyJson = "application/json"),
    )),
    responses(
        (status = 200, description = "similarity, threshold, same, fmr, both faces, audit_id",
            body = Object),
        (status = 400, description = "`bad_request` or `bad_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied`, `case_required`, `purpose_required`",
            body = ErrorBody),
        (status = 422, description = "`no_face_detected` or a decoder code", body = ErrorBody),
    ))]
pub(crate) async fn verify(
    State(st): State<AppState>,
    Auth(p): Auth,
    req: Request,
) -> ApiResult<Response> {
    let q = read_verify(req).await?;
    under_case(st, p, q, |st, q| {
        run_verify(&*lock_pipeline(st)?, &q.a, &q.b)
    })
    .await
}

/// A 1:1 verification as read from the request body (both APIs).
pub(crate) struct VerifyRequest {
    pub(crate) a: Vec<u8>,
    pub(crate) b: Vec<u8>,
    pub(crate) case_id: Option<i64>,
    pub(crate) purpose: Option<String>,
    sha_a: String,
    details: serde_json::Value,
}

pub(crate) async fn read_verify(req: Request) -> ApiResult<VerifyRequest> {
    let input: Input =
        input::read(req, "multipart `a` and `b`, or JSON `a_base64`, `b_base64`").await?;
    let a = input
        .image("a")?
        .ok_or_else(|| ApiError::bad_request("missing the `a` image"))?;
    let b = input
        .image("b")?
        .ok_or_else(|| ApiError::bad_request("missing the `b` image"))?;
    let case_id: Option<i64> = input.num("case_id")?;
    let purpose = input.text("purpose")?;
    let (sha_a, sha_b) = (sha256_hex(&a), sha256_hex(&b));
    let details = serde_json::json!({"purpose": purpose, "probe_b_sha256": sha_b});
    Ok(VerifyRequest {
        a,
        b,
        case_id,
        purpose,
        sha_a,
        details,
    })
}

impl CaseRequest for VerifyRequest {
    type Out = VerifyResult;
    const ACTION: Action = Action::Verify;
    const KIND: &'static str = "verify";

    fn case_id(&self) -> Option<i64> {
        self.case_id
    }

    fn purpose(&self) -> Option<String> {
        self.purpose.clone()
    }

    /// Shapes the record of a refused verification: `a`'s hash, `b`'s in the details.
    fn refusal_shape(&self) -> impl FnOnce(AuditEvent) -> AuditEvent + Send + 'static {
        shape_refusal(Some(self.sha_a.clone()), self.details.clone())
    }

    /// The record of an authorised verification: similarity and decision, or the error.
    fn record(
        &self,
        p: &Principal,
        d: &visage_governance::Decision,
        case_id: i64,
        res: &ApiResult<Self::Out>,
    ) -> AuditEvent {
        let mut details = self.details.clone();
        match res {
            Ok(r) => {
                details["similarity"] = audit_num(Some(f64::from(r.similarity)));
                details["same"] = r.same.into();
            }
            Err(e) => details["error"] = e.code.into(),
        }
        search_event(
            p,
            Action::Verify,
            d,
            case_id,
            &[],
            details,
            Some(&self.sha_a),
        )
    }

    fn answer(out: Self::Out) -> impl Serialize {
        out
    }
}

// ---- search by video ---------------------------------------------------------------------------

/// Largest probe video upload (the whole multipart body).
pub const VIDEO_BODY_LIMIT: usize = 256 * 1024 * 1024;
/// Largest text field of a video search (the fields beside the video), and all of them.
const VIDEO_TEXT_FIELD_LIMIT: usize = 64 * 1024;
const VIDEO_TEXT_TOTAL_LIMIT: usize = 1024 * 1024;
/// Highest sampling rate a video search may ask for (frames per second).
const VIDEO_MAX_FPS: f32 = 5.0;

/// Search by video: multipart/form-data with the clip in `video` and the photo search's
/// fields (no `faces`: every face track is searched).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct VideoSearchForm {
    /// The probe video (MP4/MOV, Matroska/WebM, AVI or MPEG-TS; at most 256 MiB and
    /// 120 s).
    #[schema(value_type = String, format = Binary)]
    video: Vec<u8>,
    /// Open case of the caller's organisation (required).
    case_id: i64,
    /// Why this search is made (required).
    purpose: String,
    /// Matches per track (1 to 100, default 10).
    k: Option<usize>,
    threshold: Option<f32>,
    max_fmr: Option<f64>,
    collection: Option<String>,
    source: Option<Vec<i64>>,
    jurisdiction: Option<Vec<String>>,
    exclude_jurisdiction: Option<Vec<String>>,
    captured_from: Option<i64>,
    captured_to: Option<i64>,
    /// Frames sampled per second (default 2, at most 5).
    fps: Option<f32>,
}

/// A file in the data directory's `tmp/` (emptied when the gallery opens), removed when
/// dropped, whatever happened.
struct TempFile(PathBuf);

impl TempFile {
    fn create(dir: &Path) -> anyhow::Result<(TempFile, std::fs::File)> {
        std::fs::create_dir_all(dir)?;
        let mut rnd = [0u8; 16];
        getrandom::fill(&mut rnd).map_err(|e| anyhow::anyhow!("random name: {e}"))?;
        let path = dir.join(format!("probe-video-{}.tmp", hex::encode(rnd)));
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let f = o.open(&path)?;
        Ok((TempFile(path), f))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn video_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the upload is over {} MiB, the limit for probe videos; cut the part with the person",
            VIDEO_BODY_LIMIT >> 20
        ),
    )
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        video_too_large()
    } else {
        ApiError::bad_request(e.body_text())
    }
}

/// The upload: text fields, and the video written to `file` with its size and SHA-256.
struct VideoUpload {
    fields: HashMap<String, Vec<Bytes>>,
    video: Option<(u64, String)>,
}

/// Reads the multipart body, streaming the `video` field to `file` (never held in memory)
/// and hashing it on the way.
async fn read_video_upload(req: Request, file: std::fs::File) -> ApiResult<VideoUpload> {
    let mut mp = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::body(e.status(), e.body_text()))?;
    let mut out = VideoUpload {
        fields: HashMap::new(),
        video: None,
    };
    let mut file = Some(file);
    let mut text_bytes = 0usize;
    while let Some(mut field) = mp.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or("").to_string();
        if name == "video" {
            let Some(mut f) = file.take() else {
                return Err(ApiError::bad_request("send one `video` field"));
            };
            // Chunks go to a blocking writer thread; the SHA-256 is computed on the way.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
            let writer = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
                let mut h = Sha256::new();
                let mut n = 0u64;
                while let Some(b) = rx.blocking_recv() {
                    h.update(&b);
                    f.write_all(&b)?;
                    n += b.len() as u64;
                }
                f.flush()?;
                Ok((n, hex::encode(h.finalize())))
            });
            let read = loop {
                match field.chunk().await {
                    Ok(Some(b)) => {
                        if tx.send(b).await.is_err() {
                            break Ok(());
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(multipart_error(e)),
                }
            };
            drop(tx);
            let written = writer
                .await
                .map_err(|e| ApiError::internal(anyhow::anyhow!("writer task: {e}")))?;
            read?;
            let written = written
                .map_err(|e| ApiError::internal(anyhow::anyhow!("writing the upload: {e}")))?;
            out.video = Some(written);
        } else {
            let mut buf = Vec::new();
            while let Some(b) = field.chunk().await.map_err(multipart_error)? {
                if buf.len() + b.len() > VIDEO_TEXT_FIELD_LIMIT {
                    return Err(ApiError::bad_request(format!(
                        "field `{name}` is over {VIDEO_TEXT_FIELD_LIMIT} bytes (the clip goes in \
                         the `video` field)"
                    )));
                }
                buf.extend_from_slice(&b);
            }
            text_bytes += buf.len();
            if text_bytes > VIDEO_TEXT_TOTAL_LIMIT {
                return Err(ApiError::bad_request(format!(
                    "the fields beside the video are over {VIDEO_TEXT_TOTAL_LIMIT} bytes"
                )));
            }
            out.fields.entry(name).or_default().push(Bytes::from(buf));
        }
    }
    Ok(out)
}

/// The video search's answer: the engine's result with each track's best-face thumbnail as a
/// `data:` URL, the temporary file's name replaced in messages.
fn video_response(r: &VideoSearchResult, tmp: &Path) -> ApiResult<serde_json::Value> {
    let mut v = serde_json::to_value(r).map_err(|e| ApiError::internal(e.into()))?;
    if let Some(tracks) = v["tracks"].as_array_mut() {
        for (t, tr) in tracks.iter_mut().zip(&r.tracks) {
            t["thumbnail"] = if tr.thumbnail_jpeg.is_empty() {
                serde_json::Value::Null
            } else {
                format!(
                    "data:image/jpeg;base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(&tr.thumbnail_jpeg)
                )
                .into()
            };
        }
    }
    let name = tmp.display().to_string();
    if let Some(w) = v["warnings"].as_array_mut() {
        for s in w.iter_mut() {
            if let Some(t) = s.as_str() {
                *s = t.replace(&name, "the video").into();
            }
        }
    }
    if let Some(t) = v["video"]["decode_error"].as_str() {
        v["video"]["decode_error"] = t.replace(&name, "the video").into();
    }
    Ok(v)
}

fn run_video_search(
    store: &dyn FaceStore,
    pipeline: &FacePipeline,
    path: &Path,
    opts: &VideoSearchOptions,
) -> ApiResult<VideoSearchResult> {
    check_search(store, pipeline, &opts.search)?;
    let name = path.display().to_string();
    let r =
        visage_engine::video_search::search_video(store, pipeline, path, opts).map_err(|e| {
            // Messages from ffmpeg name the file: never show the server's paths.
            let mut err = decode_error(e);
            err.message = err.message.replace(&name, "the video");
            err
        })?;
    if r.tracks.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_face_detected",
            format!(
                "no face was detected in the probe video ({} frames sampled)",
                r.video.frames_sampled
            ),
        ));
    }
    Ok(r)
}

/// Searches the gallery with the faces of a probe video, under a case: the clip is sampled
/// (2 frames per second by default), its faces are tracked, and each track is searched with
/// its best usable faces, with the same threshold, calibration, filters and opt-out
/// suppression as `POST /v1/search`. The upload is written to a temporary file in the data
/// directory and removed afterwards; the audit log gets its SHA-256, never the video.
#[utoipa::path(post, path = "/v1/search/video", tag = "search",
    request_body(content((VideoSearchForm = "multipart/form-data"))),
    responses(
        (status = 200, description = "`tracks[]` (track_id, first_t, last_t, frames_seen, \
            best_face with bbox, t and quality, `thumbnail` data URL, `unusable` reasons, \
            `hits[]` as in a photo search), `video` (duration, frames sampled), `pack`, \
            `calibration`, `threshold`, `warnings`, `timings_ms`, `audit_id`, `case_id`",
            body = Object),
        (status = 400, description = "`bad_request`; `invalid_video` (not a video \
            container, or frames too large), `corrupt_video` (nothing decodes), \
            `video_too_long` (over 120 s)", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied`, `case_required`, `purpose_required`, \
            `quota_exceeded`", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown collection", body = ErrorBody),
        (status = 408, description = "`timeout` (300 s)", body = ErrorBody),
        (status = 413, description = "`payload_too_large` (256 MiB)", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not multipart/form-data",
            body = ErrorBody),
        (status = 422, description = "`no_face_detected` in any sampled frame",
            body = ErrorBody),
        (status = 503, description = "`decoder_missing`: ffmpeg is not installed",
            body = ErrorBody),
    ))]
pub(crate) async fn search_video(
    State(st): State<AppState>,
    Auth(p): Auth,
    req: Request,
) -> ApiResult<Response> {
    let q = read_video_search(req, &st.gallery.dir().join("tmp")).await?;
    under_case(st, p, q, |st, q| q.run(&st.gallery, &*lock_pipeline(st)?)).await
}

/// A probe video upload, read and checked (`POST /v1/search/video` on either API). The clip
/// lies in a temporary file, removed when this is dropped.
pub(crate) struct VideoSearch {
    tmp: TempFile,
    video_sha: String,
    pub(crate) case_id: Option<i64>,
    pub(crate) purpose: Option<String>,
    /// Without the policy's jurisdiction exclusions: the caller adds them.
    pub(crate) opts: VideoSearchOptions,
    /// What the audit record details: purpose, k, thresholds, collection, filter, video.
    details: serde_json::Value,
}

/// Reads a multipart probe video upload into a temporary file under `tmp_dir` (refused
/// before a byte is read when the declared length is over [`VIDEO_BODY_LIMIT`]).
pub(crate) async fn read_video_search(req: Request, tmp_dir: &Path) -> ApiResult<VideoSearch> {
    let ctype = crate::input::content_type(&req);
    if !ctype.starts_with("multipart/form-data") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send multipart/form-data with the clip in a `video` field",
        ));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > VIDEO_BODY_LIMIT as u64) {
        return Err(video_too_large());
    }
    let (tmp, file) = TempFile::create(tmp_dir).map_err(|e| {
        ApiError::internal(e.context("cannot create a temporary file for the video"))
    })?;
    let upload = read_video_upload(req, file).await?;
    let input = Input::Form(upload.fields);
    let (size, video_sha) = upload
        .video
        .ok_or_else(|| ApiError::bad_request("missing the `video` field"))?;
    let case_id: Option<i64> = input.num("case_id")?;
    let purpose = input.text("purpose")?;
    let k = check_k(input.num("k")?)?;
    let threshold: Option<f32> = input.num("threshold")?;
    let max_fmr: Option<f64> = input.num("max_fmr")?;
    let collection = input.text("collection")?;
    let filter = parse_filter(&input)?;
    if input.text("faces")?.is_some() {
        return Err(ApiError::bad_request(
            "`faces` applies to photos: every face track of a video is searched",
        ));
    }
    let fps: f32 = input.num("fps")?.unwrap_or(2.0);
    if !(fps.is_finite() && fps > 0.0 && fps <= VIDEO_MAX_FPS) {
        return Err(ApiError::bad_request(format!(
            "`fps` must be above 0 and at most {VIDEO_MAX_FPS}"
        )));
    }
    let details = serde_json::json!({
        "purpose": purpose, "k": k, "threshold": audit_num(threshold.map(f64::from)),
        "max_fmr": audit_num(max_fmr),
        "collection": collection,
        "filter": filter_details(&filter),
        "probe_kind": "video", "video_bytes": size, "fps": audit_num(Some(f64::from(fps))),
    });
    let opts = VideoSearchOptions {
        search: SearchOptions {
            collections: collection.into_iter().collect(),
            k,
            threshold,
            max_fmr,
            filter,
            ..Default::default()
        },
        fps,
        ..Default::default()
    };
    Ok(VideoSearch {
        tmp,
        video_sha,
        case_id,
        purpose,
        opts,
        details,
    })
}

impl VideoSearch {
    /// Runs the search in `store`: the answer (tracks with their hits), or the error.
    pub(crate) fn run(
        &self,
        store: &dyn FaceStore,
        pipeline: &FacePipeline,
    ) -> ApiResult<(VideoSearchResult, serde_json::Value)> {
        let r = run_video_search(store, pipeline, &self.tmp.0, &self.opts)?;
        let v = video_response(&r, &self.tmp.0)?;
        Ok((r, v))
    }
}

impl CaseRequest for VideoSearch {
    type Out = (VideoSearchResult, serde_json::Value);
    const ACTION: Action = Action::Search;
    const KIND: &'static str = "video";

    fn case_id(&self) -> Option<i64> {
        self.case_id
    }

    fn purpose(&self) -> Option<String> {
        self.purpose.clone()
    }

    fn exclude_jurisdictions(&mut self, codes: Vec<String>) {
        self.opts.search.filter.exclude_jurisdictions.extend(codes);
    }

    /// Shapes the record of a refused search: the video's SHA-256 and the request's details.
    fn refusal_shape(&self) -> impl FnOnce(AuditEvent) -> AuditEvent + Send + 'static {
        shape_refusal(Some(self.video_sha.clone()), self.details.clone())
    }

    /// The record of an authorised search, made or failed: the returned face ids, tracks and
    /// frames, or the error's code.
    fn record(
        &self,
        p: &Principal,
        d: &visage_governance::Decision,
        case_id: i64,
        res: &ApiResult<Self::Out>,
    ) -> AuditEvent {
        let mut details = self.details.clone();
        let mut faces: Vec<i64> = Vec::new();
        match res {
            Ok((r, _)) => {
                for h in r.tracks.iter().flat_map(|t| &t.hits) {
                    if !faces.contains(&h.face.id) {
                        faces.push(h.face.id);
                    }
                }
                details["pack"] = r.pack.clone().into();
                details["tracks"] = r.tracks.len().into();
                details["tracks_unusable"] = r
                    .tracks
                    .iter()
                    .filter(|t| t.unusable.is_some())
                    .count()
                    .into();
                details["frames_sampled"] = r.video.frames_sampled.into();
            }
            Err(e) => details["error"] = e.code.into(),
        }
        search_event(
            p,
            Action::Search,
            d,
            case_id,
            &faces,
            details,
            Some(&self.video_sha),
        )
    }

    fn answer(out: Self::Out) -> impl Serialize {
        out.1
    }
}

/// OpenAPI paths of the video search.
#[derive(utoipa::OpenApi)]
#[openapi(paths(search_video), components(schemas(VideoSearchForm)))]
pub(crate) struct VideoDoc;

/// Routes of the video search (merged into the server's router): uploads up to
/// [`VIDEO_BODY_LIMIT`] and the long timeout (300 s), as analysing a clip takes seconds.
pub(crate) fn video_routes() -> axum::Router<crate::AppState> {
    axum::Router::new()
        .route("/v1/search/video", axum::routing::post(search_video))
        .layer(DefaultBodyLimit::max(VIDEO_BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            crate::LONG_REQUEST_TIMEOUT,
        ))
}
