//! Searches (by photo, by stored face) and 1:1 verification: each authorised under a case
//! with a purpose and recorded in the audit log, refusals included.

use axum::extract::{Path as UrlPath, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use visage_engine::search::{calibrate_hits, effective_threshold, CalibrationInfo};
use visage_engine::SearchOptions;
use visage_gallery::{Filter, Hit, SearchQuery};
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
}

/// Search by multipart/form-data upload (same fields as JSON, `image` is the file).
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

fn ctx(case_id: Option<i64>, purpose: Option<String>) -> AuthzContext {
    AuthzContext {
        case_id,
        purpose,
        now: None,
    }
}

/// The search record: decision, case, results, purpose.
#[allow(clippy::too_many_arguments)]
fn record(
    st: &AppState,
    p: &Principal,
    action: Action,
    d: &visage_governance::Decision,
    case_id: i64,
    face_ids: &[i64],
    details: serde_json::Value,
    probe_sha: Option<&str>,
) -> ApiResult<u64> {
    let mut ev = AuditEvent::decision(p, action, d)
        .case(case_id)
        .result_count(face_ids.len() as u64)
        .objects(face_ids.iter().map(|i| i.to_string()))
        .details(details);
    if let Some(s) = probe_sha {
        ev = ev.probe_sha256(s);
    }
    Ok(st.gov.append(ev)?.seq)
}

fn decode_error(e: anyhow::Error) -> ApiError {
    match e.downcast_ref::<DecodeError>() {
        Some(d) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, d.code(), d.to_string()),
        None => ApiError::internal(e),
    }
}

fn no_face(which: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "no_face_detected",
        format!("no face was detected in the {which} image"),
    )
}

fn add_audit_id(v: impl Serialize, case_id: i64, audit_id: u64) -> ApiResult<Response> {
    let mut v = serde_json::to_value(v).map_err(|e| ApiError::internal(e.into()))?;
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("audit_id".into(), audit_id.into());
        m.insert("case_id".into(), case_id.into());
    }
    Ok(Json(v).into_response())
}

/// Searches the gallery with the most central usable face of a probe photo, under a case.
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
        (status = 400, description = "`bad_request` or `bad_json`", body = ErrorBody),
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
    let probe_sha = sha256_hex(&image);
    let details = serde_json::json!({
        "purpose": purpose, "k": k, "threshold": audit_num(threshold.map(f64::from)),
        "max_fmr": audit_num(max_fmr),
        "collection": collection,
    });
    let d = {
        let sha = probe_sha.clone();
        let details = details.clone();
        authorize_with(
            &st,
            &p,
            Action::Search,
            &ctx(case_id, purpose.clone()),
            move |ev| {
                let mut ev = ev.probe_sha256(sha);
                if let serde_json::Value::Object(extra) = details {
                    if let serde_json::Value::Object(m) = &mut ev.details {
                        m.extend(extra);
                    }
                }
                ev
            },
        )?
    };
    let case_id = case_id.expect("authorised searches carry a case");
    let mut opts = SearchOptions {
        collections: collection.into_iter().collect(),
        k,
        threshold,
        max_fmr,
        ..Default::default()
    };
    opts.filter.exclude_jurisdictions = st.excluded_jurisdictions();
    blocking(&st, move |st| {
        let res = run_search(st, &image, &opts);
        let (faces, mut details) = match &res {
            Ok(r) => (
                r.probe_faces
                    .iter()
                    .flat_map(|f| f.hits.iter().map(|h| h.face.id))
                    .collect::<Vec<_>>(),
                details,
            ),
            Err(e) => {
                let mut d = details;
                d["error"] = e.code.into();
                (vec![], d)
            }
        };
        if let Ok(r) = &res {
            details["pack"] = r.pack.clone().into();
        }
        let audit_id = record(
            st,
            &p,
            Action::Search,
            &d,
            case_id,
            &faces,
            details,
            Some(&probe_sha),
        )?;
        st.metrics.search("photo", res.is_ok());
        add_audit_id(res?, case_id, audit_id)
    })
    .await
}

fn lock_pipeline(st: &AppState) -> ApiResult<std::sync::MutexGuard<'_, FacePipeline>> {
    st.pipeline
        .lock()
        .map_err(|_| ApiError::internal(anyhow::anyhow!("pipeline lock poisoned")))
}

fn run_search(
    st: &AppState,
    image: &[u8],
    opts: &SearchOptions,
) -> ApiResult<visage_engine::SearchResult> {
    let pipeline = lock_pipeline(st)?;
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
    effective_threshold(
        pipeline.pack.calibration.as_ref(),
        opts.threshold,
        opts.max_fmr,
    )
    .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    let result =
        visage_engine::search_image(&st.gallery, &pipeline, image, opts).map_err(decode_error)?;
    if result.probe_faces.is_empty() {
        return Err(no_face("probe"));
    }
    Ok(result)
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

/// Searches with a stored face's vector (its own collection's pack), under a case.
pub(crate) fn search_by_face(
    st: &AppState,
    id: i64,
    k: usize,
    threshold: Option<f32>,
    max_fmr: Option<f64>,
    collection: Option<&str>,
) -> ApiResult<FaceSearchResult> {
    let face = crate::visible_face(st, id)?;
    let vector = st
        .gallery
        .face_vector(id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no face with id {id}")))?;
    let pipeline = lock_pipeline(st)?;
    // A pack's calibration applies only to its own scores.
    let cal = if pipeline.pack_id() == face.pack {
        pipeline.pack.calibration.clone()
    } else {
        None
    };
    drop(pipeline);
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
            let c = st
                .gallery
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
        None => st
            .gallery
            .collections()
            .map_err(ApiError::internal)?
            .into_iter()
            .filter(|c| c.pack == face.pack)
            .collect(),
    };
    let filter = Filter {
        exclude_jurisdictions: st.excluded_jurisdictions(),
        ..Default::default()
    };
    let mut hits = Vec::new();
    let mut searched = 0u64;
    for c in &colls {
        let (h, trace) = st
            .gallery
            .search(&SearchQuery {
                collection_id: c.id,
                vector: &vector,
                k: k + 1,
                threshold,
                filter: filter.clone(),
            })
            .map_err(ApiError::internal)?;
        searched += match trace.filter_matches {
            Some(n) => n as u64,
            None => st.gallery.indexed_faces(c.id).map_err(ApiError::internal)?,
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
    let id = face_id(&raw)?;
    let j: SearchFaceJson = input::json(&body)?;
    let k = check_k(j.k)?;
    let details = serde_json::json!({
        "purpose": j.purpose, "probe_face_id": id, "k": k,
        "threshold": audit_num(j.threshold.map(f64::from)), "max_fmr": audit_num(j.max_fmr),
        "collection": j.collection,
    });
    let d = {
        let details = details.clone();
        authorize_with(
            &st,
            &p,
            Action::Search,
            &ctx(j.case_id, j.purpose.clone()),
            move |mut ev| {
                if let (serde_json::Value::Object(m), serde_json::Value::Object(extra)) =
                    (&mut ev.details, details)
                {
                    m.extend(extra);
                }
                ev
            },
        )?
    };
    let case_id = j.case_id.expect("authorised searches carry a case");
    blocking(&st, move |st| {
        let res = search_by_face(st, id, k, j.threshold, j.max_fmr, j.collection.as_deref());
        let mut details = details;
        let faces: Vec<i64> = match &res {
            Ok(r) => r.hits.iter().map(|h| h.face.id).collect(),
            Err(e) => {
                details["error"] = e.code.into();
                vec![]
            }
        };
        let audit_id = record(st, &p, Action::Search, &d, case_id, &faces, details, None)?;
        st.metrics.search("face", res.is_ok());
        add_audit_id(res?, case_id, audit_id)
    })
    .await
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
struct VerifyResult {
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

fn run_verify(st: &AppState, a: &[u8], b: &[u8]) -> ApiResult<VerifyResult> {
    let p = lock_pipeline(st)?;
    let (fa, sa) = main_face(&p, a, "`a`")?;
    let (fb, sb) = main_face(&p, b, "`b`")?;
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
    let d = {
        let (sha_a, details) = (sha_a.clone(), details.clone());
        authorize_with(
            &st,
            &p,
            Action::Verify,
            &ctx(case_id, purpose.clone()),
            move |mut ev| {
                if let (serde_json::Value::Object(m), serde_json::Value::Object(extra)) =
                    (&mut ev.details, details)
                {
                    m.extend(extra);
                }
                ev.probe_sha256(sha_a)
            },
        )?
    };
    let case_id = case_id.expect("authorised verifications carry a case");
    blocking(&st, move |st| {
        let res = run_verify(st, &a, &b);
        let mut details = details;
        match &res {
            Ok(r) => {
                details["similarity"] = audit_num(Some(f64::from(r.similarity)));
                details["same"] = r.same.into();
            }
            Err(e) => details["error"] = e.code.into(),
        }
        let audit_id = record(
            st,
            &p,
            Action::Verify,
            &d,
            case_id,
            &[],
            details,
            Some(&sha_a),
        )?;
        st.metrics.search("verify", res.is_ok());
        add_audit_id(res?, case_id, audit_id)
    })
    .await
}

// ---- search by video ---------------------------------------------------------------------------

/// OpenAPI paths of the video search.
#[derive(utoipa::OpenApi)]
#[openapi(paths())]
pub(crate) struct VideoDoc;

/// Routes of the video search (merged into the server's router; own limits and timeout).
pub(crate) fn video_routes() -> axum::Router<crate::AppState> {
    axum::Router::new()
}
