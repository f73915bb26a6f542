//! The HTTP API of a cluster deployment (`visage serve --config FILE`): stateless, any number
//! of processes over one PostgreSQL + S3 (+ Qdrant) cluster. Ingest jobs are queued in
//! PostgreSQL and done by `visage worker` processes.
//!
//! Governed like the embedded API, by the same code: keys belong to an organisation and carry
//! a role (`visage cluster add-org`, `add-key`), every action is decided by the policy
//! (`visage_governance::decide`, facts from PostgreSQL: `visage_cluster::gov::PgFacts`), and
//! every search, verification and refusal lands in the cluster's audit log (PostgreSQL, the
//! governance format: `visage cluster audit-export` + `visage audit verify --file`).
//!
//! Served: health, stats, ingest jobs by server-side path or by upload (the embedded API's
//! bodies; uploads are staged in the bucket for the workers, docs/CLUSTER.md "Uploads"), cases
//! (open, list, show, close, report as JSON or HTML), photo and video search, search by
//! stored face, 1:1 verification, faces (read, thumbnail, delete), collections and subjects
//! (the embedded handlers of `crate::catalog`, through `CatalogHost`), the organisation's audit
//! records, the log's verification and (for the operator organisation's administrators,
//! `operator_org` in the config) its export and organisations (list, create, change; others
//! see their own), erasure by source,
//! subject or jurisdiction with a signed receipt, and the public opt-out, access and
//! request-status endpoints, all with the embedded API's bodies, answers and audit records
//! (receipts and public requests: `visage_cluster::receipts`), and user accounts: password
//! login with sessions shared by every process, users and their keys, the policy in force
//! (`crate::accounts_api` through `cluster_accounts.rs`), and the web app (`crate::web`, the
//! same pages: the collections page shows the queue's jobs in the embedded job view, with
//! cancel and report, and both ingest forms).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::handler::Handler;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;
use visage_cluster::audit::{PgAudit, SigningKey};
use visage_cluster::gov::{self, PgFacts};
use visage_cluster::keys::KeyIdentity;
use visage_cluster::{queue, receipts, ClusterConfig, ClusterStore};
use visage_gallery::{FaceStore, NewSource};
use visage_governance::{
    decide, Action, Actor, AuditEvent, AuthzContext, Case, Decision, NewCase, Policy, Principal,
};
use visage_vision::FacePipeline;

use crate::auth::refusal_event;
use crate::gov_api::{
    audit_export_response, audit_page, delete_event, erasure_event, erasure_receipt_body,
    erasure_target, int_id, operator_only_refusal, report_event, report_html, AuditPage,
    AuditQuery,
};
use crate::jobs::resolve_under_roots;
use crate::public::{
    access_event, access_summary, add_thumbnails, engine_error, new_request_id, read_request,
    valid_request_id, RequestStatus,
};
use crate::search::{
    add_audit_id, ctx, pipeline_calibration, read_face_search, read_photo_search, read_verify,
    read_video_search, run_photo_search, run_verify, search_by_face_in, CaseRequest,
    VIDEO_BODY_LIMIT,
};
use crate::{ApiError, ApiResult, BODY_LIMIT};
use visage_engine::optout;

#[path = "cluster_accounts.rs"]
mod accounts;

#[derive(Clone)]
pub struct ClusterState(Arc<ClusterInner>);

/// What a cluster API process holds (fields private: use the handlers).
pub struct ClusterInner {
    store: ClusterStore,
    /// Canonical folders path jobs may name.
    roots: Vec<PathBuf>,
    /// Signs the audit log's checkpoints (shared by every API process of the cluster).
    audit_key: SigningKey,
    policy: Policy,
    /// The policy's text and where it came from (`GET /v1/policy`).
    policy_text: String,
    policy_origin: String,
    /// Password logins per client address and minute, all API processes together.
    login_per_minute: u32,
    /// The pipeline's pack id (health answers it without waiting for the pipeline).
    pack: String,
    /// One pipeline per API process; searches take turns on it (as the embedded server).
    pipeline: Mutex<FacePipeline>,
    /// Public endpoint requests per client address and minute, all API processes together.
    public_per_minute: u32,
    /// The config's `operator_org`: its administrators may change other organisations and
    /// export the whole audit log.
    operator_org: Option<String>,
    /// Requests and searches counted by this process (`/metrics`).
    metrics: crate::metrics::Metrics,
    /// Largest upload for an ingest job, bytes (0: none taken).
    upload_limit: u64,
    /// Where uploads are received before they are copied to the bucket.
    upload_dir: PathBuf,
}

impl crate::Observed for ClusterState {
    fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }
}

impl std::ops::Deref for ClusterState {
    type Target = ClusterInner;
    fn deref(&self) -> &ClusterInner {
        &self.0
    }
}

impl ClusterState {
    /// Opens the cluster named by `cfg` with the pipeline searches embed with and the policy
    /// in force (`policy_file`: the config's `policy_file`, or the built-in default).
    pub fn open(
        cfg: &ClusterConfig,
        ingest_roots: &[PathBuf],
        pipeline: FacePipeline,
        policy_file: Option<&Path>,
    ) -> Result<ClusterState> {
        let roots = ingest_roots
            .iter()
            .map(|r| {
                std::fs::canonicalize(r)
                    .with_context(|| format!("--ingest-root {} cannot be opened", r.display()))
            })
            .collect::<Result<_>>()?;
        let key_file = cfg.audit_key_file.as_ref().context(
            "the cluster API needs `audit_key_file` in the cluster config: the Ed25519 key that \
             signs its audit log (the same file for every API process; created if missing)",
        )?;
        let audit_key = visage_cluster::audit::load_or_create_key(key_file)?;
        let (policy, policy_text, policy_origin) = match policy_file.or(cfg.policy_file.as_deref())
        {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read the policy {}", f.display()))?;
                let policy = Policy::parse(&text, &f.display().to_string())?;
                (policy, text, f.display().to_string())
            }
            None => (
                Policy::default_policy(),
                visage_governance::DEFAULT_POLICY_TOML.to_string(),
                "built-in default policy".to_string(),
            ),
        };
        let defaults = crate::ServeOptions::default();
        let upload_dir = cfg
            .upload_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("visage-uploads"));
        remove_abandoned_uploads(&upload_dir);
        Ok(ClusterState(Arc::new(ClusterInner {
            store: ClusterStore::open(cfg)?,
            roots,
            audit_key,
            policy,
            policy_text,
            policy_origin,
            login_per_minute: cfg.login_per_minute.unwrap_or(defaults.login_per_minute),
            pack: pipeline.pack_id(),
            pipeline: Mutex::new(pipeline),
            public_per_minute: cfg.public_per_minute.unwrap_or(defaults.public_per_minute),
            operator_org: cfg.operator_org.clone(),
            metrics: Default::default(),
            upload_limit: cfg
                .upload_limit
                .unwrap_or(crate::jobs::DEFAULT_UPLOAD_LIMIT),
            upload_dir,
        })))
    }

    /// `authorize`, then `operator_only`: an action reserved to the operator organisation's
    /// administrators (`what` says which, in the refusal).
    fn authorize_operator(
        &self,
        who: &KeyIdentity,
        action: Action,
        what: &str,
    ) -> ApiResult<(Principal, Decision)> {
        let (p, d) = self.authorize(who, action, &AuthzContext::default(), |ev| ev)?;
        self.operator_only(&p, action, what)?;
        Ok((p, d))
    }

    /// Whether `p` is an administrator of the operator organisation (`operator_org`).
    fn is_operator(&self, p: &Principal) -> bool {
        p.role == visage_governance::Role::Admin
            && self.operator_org.as_deref() == Some(p.org.name.as_str())
    }

    /// Lets `p` go on only when it is an administrator of the operator organisation (the
    /// config's `operator_org`); otherwise the refusal is recorded and answered 403.
    fn operator_only(&self, p: &Principal, action: Action, what: &str) -> ApiResult<()> {
        if self.is_operator(p) {
            return Ok(());
        }
        let d = operator_only_refusal(what);
        self.append(AuditEvent::decision(p, action, &d))?;
        Err(ApiError::denied(&d))
    }

    fn audit(&self) -> PgAudit<'_> {
        PgAudit::new(self.store.pool(), self.audit_key.clone())
    }

    fn append(&self, ev: AuditEvent) -> ApiResult<u64> {
        Ok(self.audit().append(ev).map_err(storage)?.seq)
    }

    /// The policy's decision for this key, with the cluster's facts; a refusal is recorded
    /// (shaped by `shape`) and answered 403 with its code. A key without an organisation is
    /// refused everything (403 `no_organisation`).
    fn authorize(
        &self,
        who: &KeyIdentity,
        action: Action,
        ctx: &AuthzContext,
        shape: impl FnOnce(AuditEvent) -> AuditEvent,
    ) -> ApiResult<(Principal, Decision)> {
        let Some(p) = who.principal() else {
            let reason = format!(
                "key {:?} belongs to no organisation: create a key with \
                 `visage cluster add-key --org`",
                who.name
            );
            self.append(AuditEvent::new(&key_actor(who), action.as_str()).decided(
                false,
                "cluster:no_organisation",
                &reason,
            ))?;
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "no_organisation",
                reason,
            ));
        };
        let d = decide(&self.policy, &PgFacts(self.store.pool()), &p, action, ctx)?;
        if !d.allowed {
            self.append(shape(refusal_event(&p, action, &d, ctx)))?;
            return Err(ApiError::denied(&d));
        }
        Ok((p, d))
    }

    fn lock_pipeline(&self) -> ApiResult<std::sync::MutexGuard<'_, FacePipeline>> {
        self.pipeline
            .lock()
            .map_err(|_| ApiError::internal(anyhow::anyhow!("pipeline lock poisoned")))
    }
}

/// The catalogue endpoints (`crate::catalog`) over the cluster: keys from PostgreSQL, the
/// cluster's policy facts and audit log, `ClusterStore` as the `Catalog`.
impl crate::catalog::CatalogHost for ClusterState {
    type Caller = Extension<KeyIdentity>;
    fn authorize(
        &self,
        who: &Extension<KeyIdentity>,
        action: Action,
    ) -> ApiResult<(Principal, Decision)> {
        ClusterState::authorize(self, &who.0, action, &AuthzContext::default(), |ev| ev)
    }
    fn writable(&self) -> ApiResult<()> {
        Ok(())
    }
    fn catalog(&self) -> &dyn visage_gallery::Catalog {
        &self.store
    }
    fn hidden(&self) -> Vec<String> {
        self.policy.data.excluded_codes()
    }
    fn pack(&self) -> ApiResult<(String, String, usize)> {
        let pl = self.lock_pipeline()?;
        Ok((
            pl.pack_id(),
            pl.pack.name().to_string(),
            pl.pack.recogniser.embedding_dim,
        ))
    }
    fn append(&self, ev: AuditEvent) -> ApiResult<()> {
        ClusterState::append(self, ev).map(|_| ())
    }
    fn delete_recorded(
        &self,
        target: visage_gallery::DeleteTarget,
        event: AuditEvent,
    ) -> ApiResult<visage_gallery::DeleteReport> {
        let audit = self.audit();
        let (report, ()) = self
            .store
            .delete_recorded(&target, |tx, r| {
                let ev = event
                    .objects(r.face_ids.iter().map(|i| i.to_string()))
                    .result_count(r.faces as u64);
                audit.append_in(tx, crate::erasure::counts_in_details(ev, r))?;
                Ok(())
            })
            .map_err(storage)?;
        Ok(report)
    }
}

/// Removes what a stopped API process left in `upload_dir`: folders of uploads it was
/// receiving (`tmp-*`) older than the upload timeout, so no request can still be writing
/// them (other API processes may share the folder).
fn remove_abandoned_uploads(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let limit = crate::jobs::UPLOAD_TIMEOUT + std::time::Duration::from_secs(60);
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > limit);
        if old && e.file_name().to_string_lossy().starts_with("tmp-") {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => tracing::info!("removed an abandoned upload: {}", e.path().display()),
                Err(err) => tracing::warn!("cannot remove {}: {err}", e.path().display()),
            }
        }
    }
}

fn key_actor(who: &KeyIdentity) -> Actor {
    Actor {
        user_id: Some(who.key_id),
        name: format!("key:{}", who.name),
    }
}

/// A storage failure (PostgreSQL, S3, Qdrant): 503, the request may be retried.
fn storage(e: anyhow::Error) -> ApiError {
    tracing::error!("cluster storage: {e:#}");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        format!("the cluster storage failed: {e:#}"),
    )
}

fn joined(e: tokio::task::JoinError) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

/// Runs storage work on the blocking pool; its errors are 503 `storage_unavailable`.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(joined)?
        .map_err(storage)
}

/// Who calls (an API key, else the session cookie), as `KeyIdentity` and `Via` extensions;
/// 401 `unauthorized` otherwise, whatever the cause.
async fn authenticate(State(st): State<ClusterState>, mut req: Request, next: Next) -> Response {
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("").to_string());
    let session = crate::auth::cookie(req.headers(), crate::auth::SESSION_COOKIE).map(String::from);
    match crate::blocking(&st, move |st| {
        accounts::identify(st, key.as_deref(), session.as_deref())
    })
    .await
    {
        Ok(Some((who, via))) => {
            req.extensions_mut().insert(who);
            req.extensions_mut().insert(via);
            next.run(req).await
        }
        Ok(None) => ApiError::unauthorized().into_response(),
        Err(e) => e.into_response(),
    }
}

/// The cluster API's routes, with the embedded router's limits, timeouts, JSON errors (404
/// for unknown paths), request log and `/metrics` counts.
pub fn router(st: ClusterState) -> Router {
    let auth = || middleware::from_fn_with_state(st.clone(), authenticate);
    let timeout =
        |t| tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, t);
    let authed = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/stats", get(stats))
        .route("/v1/ingest/jobs/{id}", get(get_job))
        .route("/v1/ingest/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/ingest/jobs/{id}/report", get(job_report))
        .route("/v1/cases", get(list_cases).post(create_case))
        .route("/v1/cases/{id}", get(get_case))
        .route("/v1/cases/{id}/close", post(close_case))
        .route("/v1/cases/{id}/report", get(case_report))
        .route("/v1/cases/{id}/report.html", get(case_report_html))
        .route("/v1/search", post(search))
        .route("/v1/verify", post(verify))
        .route("/v1/search/face/{id}", post(search_face))
        .route("/v1/faces/{id}", get(get_face).delete(delete_face))
        .route("/v1/faces/{id}/thumbnail", get(get_thumbnail))
        .route("/v1/audit", get(audit_records))
        .route("/v1/audit/verify", get(audit_verify))
        .route("/v1/audit/export", get(audit_export))
        .merge(crate::accounts_api::routes::<ClusterState>())
        .merge(crate::catalog::routes::<ClusterState>())
        .route_layer(auth())
        .layer(timeout(crate::REQUEST_TIMEOUT));
    // Erasures and the public requests may touch many faces: the long timeout, as embedded.
    let long = Router::new()
        .route("/v1/erasures", post(erase))
        .route_layer(auth())
        .route("/v1/public/opt-out", post(public_opt_out))
        .route("/v1/public/access", post(public_access))
        .layer(timeout(crate::LONG_REQUEST_TIMEOUT));
    // `/v1/openapi.json` is the embedded document: every path in it is served here too.
    let public = Router::new()
        .route("/v1/health", get(health))
        .route("/healthz", get(crate::healthz))
        .route("/v1/openapi.json", get(crate::openapi))
        .merge(crate::accounts_api::login_route::<ClusterState>())
        .route("/v1/public/requests/{id}", get(public_request_status))
        .layer(timeout(crate::REQUEST_TIMEOUT))
        .merge(crate::web::routes());
    // Probe videos: uploads up to VIDEO_BODY_LIMIT and the long timeout, as embedded.
    let video = Router::new()
        .route("/v1/search/video", post(search_video))
        .route_layer(auth())
        .layer(DefaultBodyLimit::max(VIDEO_BODY_LIMIT))
        .layer(timeout(crate::LONG_REQUEST_TIMEOUT));
    // Ingest jobs: uploads without the body limit, for up to an hour, as embedded.
    let ingest = Router::new()
        .route(
            "/v1/ingest/jobs",
            get(list_jobs.layer(timeout(crate::REQUEST_TIMEOUT))).post(
                create_job
                    .layer(DefaultBodyLimit::disable())
                    .layer(timeout(crate::jobs::UPLOAD_TIMEOUT)),
            ),
        )
        .route_layer(auth());
    Router::new()
        .merge(public)
        .merge(authed)
        .merge(long)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .merge(video)
        .merge(ingest)
        .fallback(crate::not_found)
        .layer(middleware::from_fn_with_state(
            st.clone(),
            crate::log_requests::<ClusterState>,
        ))
        .with_state(st)
        .layer(middleware::from_fn(crate::json_errors))
}

/// `GET /metrics`: this process's request and search counts and the cluster's face count, in
/// Prometheus text (any role of an active organisation, as embedded).
async fn metrics(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
) -> ApiResult<Response> {
    let faces = crate::blocking(&st, move |st| {
        let Some(p) = who.principal() else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "no_organisation",
                format!("key {:?} belongs to no organisation", who.name),
            ));
        };
        crate::auth::general_access_under(&st.policy, &p)?;
        st.store.face_count().map_err(storage)
    })
    .await?;
    Ok(st.metrics.response(faces))
}

async fn health(State(st): State<ClusterState>) -> ApiResult<Json<serde_json::Value>> {
    let st2 = st.clone();
    let version = blocking(move || st2.store.pool().schema_version()).await?;
    Ok(Json(json!({
        "status": "ok",
        "backend": st.store.backend(),
        "schema_version": version,
        "pack": st.pack,
        "policy_sha256": st.policy.sha256,
    })))
}

/// `GET /v1/stats`: counts (action `read_face`, as the embedded server).
async fn stats(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
) -> ApiResult<Json<serde_json::Value>> {
    let s = crate::blocking(&st, move |st| {
        st.authorize(&who, Action::ReadFace, &AuthzContext::default(), |ev| ev)?;
        st.store.stats().map_err(storage)
    })
    .await?;
    // The embedded answer's fields; what the cluster does not measure (bytes on disk and in
    // memory: PostgreSQL, S3 and Qdrant report their own; tombstones: none kept) is null.
    Ok(Json(json!({
        "backend": st.store.backend(),
        "faces": s.faces,
        "images": s.images,
        "subjects": s.subjects,
        "tombstones": null,
        "bytes_on_disk": null,
        "bytes_in_memory": null,
        "collections": s.collections,
    })))
}

/// A job request checked: what to queue, and the audit record of its queueing.
struct CheckedJob {
    collection: String,
    source: NewSource,
    args: serde_json::Value,
    queued: AuditEvent,
}

/// Checks what both forms of a job share (collection, source, options) as the embedded
/// server does: a collection pinned to another pack is 409 `pack_mismatch`, an existing
/// source declared otherwise 409 `source_conflict`, a jurisdiction the policy excludes is
/// refused (audited). `what` names the inputs (`path`, or `files` of
/// an upload) in the job's arguments and its audit record.
#[allow(clippy::too_many_arguments)]
fn check_job(
    st: &ClusterState,
    p: &Principal,
    d: &Decision,
    collection: &str,
    src: &crate::jobs::SourceJson,
    options: Option<&crate::jobs::JobOptionsJson>,
    default_kind: &str,
    what: serde_json::Value,
) -> ApiResult<CheckedJob> {
    if collection.trim().is_empty() {
        return Err(ApiError::bad_request("`collection` must not be empty"));
    }
    if src.name.trim().is_empty() || src.legal_basis.trim().is_empty() {
        return Err(ApiError::bad_request(
            "`source.name` and `source.legal_basis` are required",
        ));
    }
    let jurisdiction = match &src.jurisdiction {
        Some(j) => Some(
            visage_gallery::normalize_jurisdiction(j)
                .map_err(|e| ApiError::bad_request(format!("source.jurisdiction: {e:#}")))?,
        ),
        None => None,
    };
    // A collection pinned to another model pack than this cluster's would take none of the
    // workers' embeddings: refused here, as the catalogue refuses it.
    if let Some(c) = st.store.collection(collection).map_err(storage)? {
        let (pack, _, dim) = crate::catalog::CatalogHost::pack(st)?;
        c.check_pinned(&pack, dim)
            .map_err(|e| ApiError::new(StatusCode::CONFLICT, "pack_mismatch", format!("{e:#}")))?;
        let sources = st.store.sources(c.id).map_err(storage)?;
        crate::jobs::same_declaration(
            collection,
            &sources,
            &src.name,
            &src.legal_basis,
            &jurisdiction,
        )?;
    }
    if let Some(j) = &jurisdiction {
        if let Some(x) = st.policy.jurisdiction_excluded(j) {
            let reason = format!("the source's jurisdiction {j} is excluded by policy ({x})");
            st.append(
                AuditEvent::decision(p, Action::Ingest, d)
                    .decided(false, "policy:data.excluded_jurisdictions", &reason)
                    .details(json!({"event": "refused", "collection": collection,
                        "source": src.name, "jurisdiction": j})),
            )?;
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "jurisdiction_excluded",
                reason,
            ));
        }
    }
    let path = what.get("path").and_then(|v| v.as_str()).map(String::from);
    let source = NewSource {
        name: src.name.clone(),
        kind: src.kind.clone().unwrap_or_else(|| default_kind.into()),
        uri: src.uri.clone().or(path),
        legal_basis: Some(src.legal_basis.clone()),
        licence: src.licence.clone(),
        jurisdiction,
    };
    let opts = options.cloned().unwrap_or_default();
    let mut args = json!({
        "subject_from_parent": opts.subject_from_parent.unwrap_or(false),
        "keep_originals": opts.keep_originals.unwrap_or(false),
        "created_by": {"user_id": p.user_id, "username": p.username, "org_id": p.org.id},
    });
    let mut details = json!({
        "event": "queued",
        "collection": collection,
        "source": src.name,
        "legal_basis": src.legal_basis,
    });
    for (k, v) in what.as_object().into_iter().flatten() {
        args[k] = v.clone();
        details[k] = v.clone();
    }
    Ok(CheckedJob {
        collection: collection.to_string(),
        source,
        args,
        queued: AuditEvent::decision(p, Action::Ingest, d).details(details),
    })
}

/// `POST /v1/ingest/jobs`: a server-side path (JSON, under the config's ingest roots) or
/// uploads (multipart, the embedded body), queued for the workers. Audited with the job.
async fn create_job(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    req: Request,
) -> ApiResult<Response> {
    let w = who.clone();
    let authorized = crate::blocking(&st, move |st| {
        st.authorize(&w, Action::Ingest, &AuthzContext::default(), |ev| ev)
    })
    .await;
    let (p, d) = match authorized {
        Ok(pd) => pd,
        Err(e) => return Err(crate::jobs::drained(req, e).await),
    };
    let job = match crate::jobs::job_form(req).await? {
        crate::jobs::JobForm::Upload(req) => return upload_job(st, p, d, req).await,
        crate::jobs::JobForm::Path(j) => j,
    };
    let path = resolve_under_roots(&st.roots, None, &job.path)?;
    let kind = if path.is_dir() { "directory" } else { "files" };
    let status = crate::blocking(&st, move |st| {
        let c = check_job(
            st,
            &p,
            &d,
            &job.collection,
            &job.source,
            job.options.as_ref(),
            kind,
            json!({"origin": "path", "path": job.path}),
        )?;
        let audit = st.audit();
        let id = queue::enqueue_with(
            st.store.pool(),
            &c.collection,
            &c.source,
            &[path],
            c.args,
            |tx, id| {
                audit
                    .append_in(tx, c.queued.objects([format!("job:{id}")]))
                    .map(|_| ())
            },
        )
        .map_err(storage)?;
        load_job(st, id)
    })
    .await?;
    Ok(job_accepted(status))
}

fn job_accepted(status: queue::JobStatus) -> Response {
    let loc = format!("/v1/ingest/jobs/{}", status.id);
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, loc)],
        Json(job_view(status)),
    )
        .into_response()
}

/// The `meta` field of an upload, checked (uploads have no folders to name subjects by).
fn upload_meta(
    st: &ClusterState,
    p: &Principal,
    d: &Decision,
    raw: &[u8],
    what: serde_json::Value,
) -> ApiResult<CheckedJob> {
    let m: crate::jobs::UploadMetaJson = serde_json::from_slice(raw)
        .map_err(|e| ApiError::bad_json(format!("invalid `meta` JSON: {e}")))?;
    if m.options.as_ref().and_then(|o| o.subject_from_parent) == Some(true) {
        return Err(ApiError::bad_request(
            "subject_from_parent applies to path jobs (uploads have no folders)",
        ));
    }
    check_job(
        st,
        p,
        d,
        &m.collection,
        &m.source,
        m.options.as_ref(),
        "upload",
        what,
    )
}

/// Uploads: received into a local folder (`upload_dir`), each file copied to the bucket
/// (`uploads/{job}/{name}`) and queued as an item naming its object; the local copies are
/// removed when the request ends, the objects by the workers once their items end. A job is
/// queued whole or not at all: on a failure the objects already copied are removed.
async fn upload_job(
    st: ClusterState,
    p: Principal,
    d: Decision,
    req: Request,
) -> ApiResult<Response> {
    let limit = st.upload_limit;
    if limit == 0 {
        let e = ApiError::new(
            StatusCode::FORBIDDEN,
            "uploads_disabled",
            "this cluster takes no uploads (`upload_limit = 0` in its config): queue a \
             server-side path",
        );
        return Err(crate::jobs::drained(req, e).await);
    }
    if crate::jobs::content_length(&req).is_some_and(|n| n > limit) {
        return Err(crate::jobs::too_large(limit));
    }
    let stage = crate::jobs::StagingDir::create(&st.upload_dir).await?;
    let got = crate::jobs::receive_upload(req, &stage.path, limit, |m| {
        let (p, d) = (p.clone(), d.clone());
        let st = st.clone();
        async move {
            crate::blocking(&st, move |st| {
                upload_meta(st, &p, &d, &m, json!({})).map(|_| ())
            })
            .await
        }
    })
    .await?;
    let dir = stage.path.clone();
    let status = crate::blocking(&st, move |st| {
        let mut what = json!({});
        crate::jobs::upload_args(&mut what, &got);
        let c = upload_meta(st, &p, &d, &got.meta, what)?;
        let pool = st.store.pool();
        let blobs = st.store.blobs();
        let id = queue::reserve_job_id(pool).map_err(storage)?;
        let mut listed = Vec::with_capacity(got.staged.len());
        let staged = (|| -> anyhow::Result<i64> {
            let mut copies = Vec::with_capacity(got.staged.len());
            for name in &got.staged {
                let key = blobs.staged_key(&id.to_string(), name)?;
                let local = dir.join(name);
                listed.push(queue::Listed {
                    location: queue::upload_location(id, name),
                    kind: visage_engine::ingest::InputKind::of(&local, false),
                    staged_key: Some(key.clone()),
                });
                copies.push((key, local));
            }
            blobs.stage_files(&copies)?;
            let refused: Vec<_> = got
                .refused
                .iter()
                .map(|f| visage_engine::ingest::ItemFailure {
                    location: queue::upload_location(id, &f.location),
                    ..f.clone()
                })
                .collect();
            let audit = st.audit();
            queue::enqueue_listed(
                pool,
                Some(id),
                &c.collection,
                &c.source,
                &listed,
                &refused,
                c.args,
                |tx, id| {
                    audit
                        .append_in(tx, c.queued.objects([format!("job:{id}")]))
                        .map(|_| ())
                },
            )
        })();
        if let Err(e) = staged {
            // Nothing was queued: the objects copied so far go too.
            for l in &listed {
                if let Some(k) = &l.staged_key {
                    let _ = blobs.delete_staged(k);
                }
            }
            return Err(storage(e));
        }
        load_job(st, id)
    })
    .await?;
    drop(stage);
    Ok(job_accepted(status))
}

/// A queued job as the embedded server shows its jobs (`crate::jobs::IngestJob`: the web
/// app's collections page reads it), with the queue's own counts beside (`items`, `queued`,
/// `claimed`, `done`, `failed`, `cancelled`, `faces`, `known`, `units`, `units_known`,
/// `units_failed`). Progress is over the queue's items (input files); the counters are the
/// embedded ingest's, summed over the finished items.
fn job_view(s: queue::JobStatus) -> serde_json::Value {
    use crate::jobs::str_at;
    use serde_json::Value;
    let a = &s.args;
    let (origin, path) = match a.get("paths").and_then(Value::as_array) {
        // `visage cluster enqueue`
        Some(paths) => (
            "cli".to_string(),
            Some(
                paths
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ),
        None => (
            str_at(a, &["origin"]).unwrap_or_else(|| "path".into()),
            str_at(a, &["path"]),
        ),
    };
    let ended = matches!(s.status.as_str(), "completed" | "cancelled");
    let seen = (s.done + s.failed - s.cancelled).max(0) as u64;
    let total = (s.items - s.cancelled).max(0) as u64;
    let elapsed = s.started_at.map(|t0| {
        let t1 = s.finished_at.unwrap_or_else(visage_gallery::gallery::now);
        (t1 - t0).max(0) as f64
    });
    let (elapsed_s, rate, eta_s) = crate::jobs::pace(&s.status, seen, Some(total), elapsed);
    let c = &s.counts;
    let view = crate::jobs::IngestJob {
        id: s.id,
        status: s.status.clone(),
        cancel_requested: s.cancel_requested && !ended,
        origin,
        collection: Some(s.collection.clone()),
        source: str_at(&s.source, &["name"]),
        legal_basis: str_at(&s.source, &["legal_basis"]),
        jurisdiction: str_at(&s.source, &["jurisdiction"]),
        path,
        files: a.get("files").and_then(|v| v.as_u64()),
        upload_bytes: a.get("bytes").and_then(|v| v.as_u64()),
        created_by: str_at(a, &["created_by", "username"]),
        queued_at: Some(s.created_at),
        started_at: s.started_at,
        updated_at: s.updated_at,
        finished_at: s.finished_at,
        queue_position: s.jobs_ahead.map(|n| n.max(0) as u64),
        items_seen: seen,
        items_total: Some(total),
        images_indexed: c.images_indexed,
        duplicates: c.images_skipped_known,
        images_without_faces: c.images_without_faces,
        videos: c.videos,
        // Items finished before the counters existed (schema 10) counted their faces only.
        faces_indexed: c.faces_indexed.max(s.faces.max(0) as u64),
        faces_rejected_total: c.faces_rejected.values().sum(),
        faces_rejected: c.faces_rejected.clone(),
        errors: c.errors,
        errors_by_code: c.errors_by_code.clone(),
        elapsed_s,
        rate,
        eta_s,
        error: None,
        report: Some(format!("/v1/ingest/jobs/{}/report", s.id)),
    };
    let mut v = serde_json::to_value(view).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        for (k, n) in [
            ("items", s.items),
            ("queued", s.queued),
            ("claimed", s.claimed),
            ("done", s.done),
            ("failed", s.failed),
            ("cancelled", s.cancelled),
            ("faces", s.faces),
            ("known", s.known),
            ("units", s.units),
            ("units_known", s.units_known),
            ("units_failed", s.units_failed),
            ("created_at", s.created_at),
        ] {
            m.insert(k.into(), n.into());
        }
    }
    v
}

fn load_job(st: &ClusterState, id: i64) -> ApiResult<queue::JobStatus> {
    queue::job_status(st.store.pool(), id)
        .map_err(storage)?
        .ok_or_else(|| ApiError::not_found(format!("no ingest job {id}")))
}

async fn get_job(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = crate::jobs::job_id(&raw)?;
    crate::blocking(&st, move |st| {
        st.authorize(&who, Action::Ingest, &AuthzContext::default(), |ev| ev)?;
        Ok(Json(job_view(load_job(st, id)?)))
    })
    .await
}

/// `GET /v1/ingest/jobs`: the embedded answer (`JobList`): the config's upload limit, path
/// jobs when the config names ingest roots.
async fn list_jobs(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    Query(q): Query<crate::jobs::JobsQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let limit = q.page_size()?;
    crate::blocking(&st, move |st| {
        st.authorize(&who, Action::Ingest, &AuthzContext::default(), |ev| ev)?;
        let rows =
            queue::jobs_page(st.store.pool(), q.before, limit as i64 + 1).map_err(storage)?;
        let more = rows.len() > limit;
        let jobs: Vec<_> = rows.into_iter().take(limit).collect();
        let next_before = if more {
            jobs.last().map(|j| j.id)
        } else {
            None
        };
        Ok(Json(json!({
            "jobs": jobs.into_iter().map(job_view).collect::<Vec<_>>(),
            "next_before": next_before,
            "upload_limit": st.upload_limit,
            "path_jobs": !st.roots.is_empty(),
        })))
    })
    .await
}

/// `POST /v1/ingest/jobs/{id}/cancel`: queued items end at once, items in flight finish,
/// then the job is `cancelled` (`queue::cancel`). Audited; 409 `conflict` once ended.
async fn cancel_job(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    UrlPath(raw): UrlPath<String>,
    _body: axum::body::Bytes,
) -> ApiResult<Response> {
    let id = crate::jobs::job_id(&raw)?;
    crate::blocking(&st, move |st| {
        let (p, d) = st.authorize(&who, Action::Ingest, &AuthzContext::default(), |ev| ev)?;
        let before = load_job(st, id)?;
        match queue::cancel(st.store.pool(), id).map_err(storage)? {
            queue::Cancel::Requested => {}
            queue::Cancel::NotFound => {
                return Err(ApiError::not_found(format!("no ingest job {id}")))
            }
            queue::Cancel::AlreadyEnded => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!(
                        "job {id} is {}; only queued and running jobs can be cancelled",
                        load_job(st, id)?.status
                    ),
                ))
            }
        }
        st.append(
            AuditEvent::decision(&p, Action::Ingest, &d)
                .details(json!({"event": "cancel", "job_id": id.to_string(),
                                "was": before.status}))
                .objects([format!("job:{id}")]),
        )?;
        // The uploads of the items that will not be read are no longer needed.
        if let Err(e) = queue::sweep_staged(st.store.pool(), st.store.blobs(), Some(id)) {
            tracing::warn!("cannot remove the staged uploads of cancelled job {id}: {e:#}");
        }
        Ok((StatusCode::ACCEPTED, Json(job_view(load_job(st, id)?))).into_response())
    })
    .await
}

/// Lines of a job's report at most (failed units and warnings; 10,000 kept per item).
const REPORT_LINES: i64 = 1_000_000;

/// `GET /v1/ingest/jobs/{id}/report`: JSON Lines, one per failed unit, warning or item failed
/// as a whole (`kind` `failed` or `warning`, `location`, `code`, `message`), as the embedded
/// report; faces rejected are counted in the job, not listed.
async fn job_report(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Response> {
    let id = crate::jobs::job_id(&raw)?;
    let body = crate::blocking(&st, move |st| {
        st.authorize(&who, Action::Ingest, &AuthzContext::default(), |ev| ev)?;
        load_job(st, id)?;
        let rows = queue::failures(st.store.pool(), id, REPORT_LINES + 1).map_err(storage)?;
        let mut out = String::new();
        for f in rows.iter().take(REPORT_LINES as usize) {
            let line = json!({"kind": f.severity, "location": f.location, "code": f.code,
                              "message": f.message});
            out.push_str(&line.to_string());
            out.push('\n');
        }
        if rows.len() as i64 > REPORT_LINES {
            let line = json!({"kind": "truncated", "message": format!(
                "the report stops after {REPORT_LINES} lines; `visage cluster job --json` \
                 and the ingest_failure table hold the rest")});
            out.push_str(&line.to_string());
            out.push('\n');
        }
        Ok(out)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

// ---- cases -----------------------------------------------------------------------------------

/// The case if it belongs to the caller's organisation (404 otherwise, as the embedded API).
fn own_case(st: &ClusterState, p: &Principal, id: i64) -> ApiResult<Case> {
    match gov::get_case(st.store.pool(), id) {
        Ok(c) if c.org_id == p.org.id => Ok(c),
        Ok(_) | Err(visage_governance::GovError::NotFound(_)) => {
            Err(ApiError::not_found(format!("no case {id}")))
        }
        Err(e) => Err(e.into()),
    }
}

fn manage_cases(st: &ClusterState, who: &KeyIdentity) -> ApiResult<Principal> {
    Ok(st
        .authorize(who, Action::ManageCases, &AuthzContext::default(), |ev| ev)?
        .0)
}

async fn create_case(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let new: NewCase = crate::input::json(&body)?;
    crate::blocking(&st, move |st| {
        let p = manage_cases(st, &who)?;
        let c = gov::create_case(st.store.pool(), &st.audit(), &p, &new)?;
        Ok((StatusCode::CREATED, Json(c)).into_response())
    })
    .await
}

async fn list_cases(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
) -> ApiResult<Json<Vec<Case>>> {
    crate::blocking(&st, move |st| {
        let p = manage_cases(st, &who)?;
        Ok(Json(gov::list_cases(st.store.pool(), p.org.id)?))
    })
    .await
}

async fn get_case(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Json<Case>> {
    let id = int_id(&raw, "case")?;
    crate::blocking(&st, move |st| {
        let p = manage_cases(st, &who)?;
        Ok(Json(own_case(st, &p, id)?))
    })
    .await
}

/// A case report from the cluster's audit log (action `export_report`, audited with the
/// format): the embedded API's report, the keys' names as the actors.
fn report_of(
    st: &ClusterState,
    who: &KeyIdentity,
    raw: &str,
    format: &str,
) -> ApiResult<visage_governance::CaseReport> {
    let id = int_id(raw, "case")?;
    let (p, d) = st.authorize(who, Action::ExportReport, &AuthzContext::default(), |ev| ev)?;
    let case = own_case(st, &p, id)?;
    let pool = st.store.pool();
    let created_by = visage_cluster::keys::actor_name(pool, case.created_by)
        .map_err(storage)?
        .unwrap_or_else(|| format!("key #{}", case.created_by));
    let audit = st.audit();
    let records = audit.records_for_case(id).map_err(storage)?;
    let head = audit.head().map_err(storage)?;
    let report = visage_governance::CaseReport::from_records(
        case,
        p.org.name.clone(),
        created_by,
        records,
        head,
    );
    st.append(report_event(&p, &d, id, format))?;
    Ok(report)
}

/// `GET /v1/cases/{id}/report`: everything done under the case, as JSON.
async fn case_report(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Response> {
    let r = crate::blocking(&st, move |st| report_of(st, &who, &raw, "json")).await?;
    Ok(Json(r.to_json()).into_response())
}

/// `GET /v1/cases/{id}/report.html`: the same report as a printable page.
async fn case_report_html(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Response> {
    let r = crate::blocking(&st, move |st| report_of(st, &who, &raw, "html")).await?;
    Ok(report_html(&r))
}

async fn close_case(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Json<Case>> {
    let id = int_id(&raw, "case")?;
    crate::blocking(&st, move |st| {
        let p = manage_cases(st, &who)?;
        own_case(st, &p, id)?;
        Ok(Json(gov::close_case(
            st.store.pool(),
            &st.audit(),
            &Actor::from(&p),
            id,
        )?))
    })
    .await
}

// ---- search ----------------------------------------------------------------------------------

/// Decides, runs and records a request under a case on the cluster API (the embedded API's
/// `search::under_case`, with the cluster's policy facts and audit log): the decision (a
/// refusal recorded), the policy's excluded jurisdictions, `run`, then the record whether
/// `run` answered or failed.
async fn under_case<Q: CaseRequest>(
    st: &ClusterState,
    who: KeyIdentity,
    mut q: Q,
    run: impl FnOnce(&ClusterState, &Q) -> ApiResult<Q::Out> + Send + 'static,
) -> ApiResult<Response> {
    crate::blocking(st, move |st| {
        // A quota is counted from the log's search records: one organisation's searches run
        // one at a time, from decision to record, across every API process.
        let quota_org = who
            .org
            .as_ref()
            .filter(|o| visage_governance::quota_for(o, Q::ACTION).is_some())
            .map(|o| o.id);
        let _held = match quota_org {
            Some(org) => Some(
                st.store
                    .pool()
                    .lock_session(visage_cluster::pg::QUOTA_LOCK_BASE + org)
                    .map_err(storage)?,
            ),
            None => None,
        };
        let (p, d) = st.authorize(
            &who,
            Q::ACTION,
            &ctx(q.case_id(), q.purpose()),
            q.refusal_shape(),
        )?;
        let case_id = q
            .case_id()
            .expect("authorised actions under a case carry one");
        q.exclude_jurisdictions(st.policy.data.excluded_codes());
        let res = run(st, &q);
        st.metrics.search(Q::KIND, res.is_ok());
        let audit_id = st.append(q.record(&p, &d, case_id, &res))?;
        add_audit_id(Q::answer(res?), case_id, audit_id)
    })
    .await
}

/// `POST /v1/search`: the embedded API's photo search (same body, same answer, same audit
/// record) over the cluster's store.
async fn search(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    req: Request,
) -> ApiResult<Response> {
    let q = read_photo_search(req).await?;
    under_case(&st, who, q, |st, q| {
        let pipeline = st.lock_pipeline()?;
        run_photo_search(&st.store, &pipeline, &q.image, &q.opts)
    })
    .await
}

/// `POST /v1/search/video`: the embedded API's probe-video search (same form, answer and
/// record). The clip is written to a temporary file (mode 0600) in the system's temporary
/// folder and removed when the request ends.
async fn search_video(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    req: Request,
) -> ApiResult<Response> {
    let q = read_video_search(req, &std::env::temp_dir().join("visage-probes")).await?;
    under_case(&st, who, q, |st, q| q.run(&st.store, &*st.lock_pipeline()?)).await
}

/// `POST /v1/verify`: the embedded API's 1:1 verification, audited in the cluster's log.
async fn verify(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    req: Request,
) -> ApiResult<Response> {
    let q = read_verify(req).await?;
    under_case(&st, who, q, |st, q| {
        run_verify(&*st.lock_pipeline()?, &q.a, &q.b)
    })
    .await
}

/// `POST /v1/search/face/{id}`: the embedded API's search with a stored face (same body,
/// answer and record), under a case.
async fn search_face(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    UrlPath(raw): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let q = read_face_search(&raw, &body)?;
    under_case(&st, who, q, |st, q| {
        search_by_face_in(
            &st.store,
            &st.policy,
            &|pack| pipeline_calibration(&st.pipeline, pack),
            q.args(),
        )
    })
    .await
}

// ---- faces and the audit log -----------------------------------------------------------------

/// `GET /v1/faces/{id}`: a face with its provenance (action `read_face`); faces in a
/// jurisdiction the policy excludes are 404.
async fn get_face(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Response> {
    let f = read_face(&st, who, &raw).await?;
    Ok(Json(f).into_response())
}

/// The face `raw` names, if the key may read faces and the policy lets it be seen.
async fn read_face(
    st: &ClusterState,
    who: KeyIdentity,
    raw: &str,
) -> ApiResult<visage_gallery::FaceRecord> {
    let id = crate::face_id(raw)?;
    crate::blocking(st, move |st| {
        st.authorize(&who, Action::ReadFace, &AuthzContext::default(), |ev| ev)?;
        crate::visible_face_in(&st.store, &st.policy, id)
    })
    .await
}

/// `GET /v1/faces/{id}/thumbnail`: the face's thumbnail (JPEG) from the bucket.
async fn get_thumbnail(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Response> {
    let f = read_face(&st, who, &raw).await?;
    let st2 = st.clone();
    let bytes = blocking(move || st2.store.blob(&f.thumb_sha)).await?;
    Ok(([(header::CONTENT_TYPE, "image/jpeg")], bytes).into_response())
}

/// `DELETE /v1/faces/{id}`: deletes one face (action `delete`), audited with the report.
async fn delete_face(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Response> {
    let id = crate::face_id(&raw)?;
    crate::blocking(&st, move |st| {
        let (p, d) = st.authorize(&who, Action::Delete, &AuthzContext::default(), |ev| ev)?;
        // The record commits with the deletion (none when there was nothing to delete).
        let audit = st.audit();
        let (report, _) = st
            .store
            .delete_recorded(&visage_gallery::DeleteTarget::Faces(vec![id]), |tx, r| {
                if r.faces > 0 {
                    audit.append_in(tx, delete_event(&p, &d, r))?;
                }
                Ok(())
            })
            .map_err(storage)?;
        if report.faces == 0 {
            return Err(ApiError::not_found(format!("no face with id {id}")));
        }
        Ok(Json(report).into_response())
    })
    .await
}

/// `GET /v1/audit`: the caller's organisation's audit records in seq order (action
/// `read_audit`), paged like the embedded API. The whole log, every organisation's records:
/// `GET /v1/audit/export` (operator) or `visage cluster audit-export`.
async fn audit_records(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    crate::blocking(&st, move |st| {
        let (p, _) = st.authorize(&who, Action::ReadAudit, &AuthzContext::default(), |ev| ev)?;
        let audit = st.audit();
        let org = p.org.id;
        Ok(Json(audit_page(
            &q,
            &|from| audit.records(from.., 1000).map_err(storage),
            &|| Ok(audit.head().map_err(storage)?.map(|(h, _)| h)),
            &|r| r.org_id == Some(org),
        )?))
    })
    .await
}

/// `GET /v1/audit/export`: the whole log as JSON lines with its signed checkpoints (the
/// `visage cluster audit-export` format, verifiable offline with `visage audit verify
/// --file`), for administrators of the operator organisation (action `read_audit`); the
/// export is audited after it is taken.
async fn audit_export(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
) -> ApiResult<Response> {
    let bytes = crate::blocking(&st, move |st| {
        let (p, d) =
            st.authorize_operator(&who, Action::ReadAudit, "export the whole audit log")?;
        let mut buf = Vec::new();
        let summary = st.audit().export_jsonl(&mut buf, ..).map_err(storage)?;
        st.append(
            AuditEvent::decision(&p, Action::ReadAudit, &d).details(json!({"export": summary})),
        )?;
        Ok(buf)
    })
    .await?;
    Ok(audit_export_response(bytes))
}

/// `GET /v1/audit/verify`: checks the whole chain, the signed checkpoints and the head in
/// place (action `read_audit`), with the public key to verify exports offline.
async fn audit_verify(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
) -> ApiResult<Json<serde_json::Value>> {
    crate::blocking(&st, move |st| {
        st.authorize(&who, Action::ReadAudit, &AuthzContext::default(), |ev| ev)?;
        let audit = st.audit();
        let mut v = serde_json::to_value(audit.verify().map_err(storage)?)
            .map_err(|e| ApiError::internal(e.into()))?;
        v["public_key_hex"] = audit.public_key_hex().into();
        Ok(Json(v))
    })
    .await
}

// ---- erasure and the public portal ----------------------------------------------------------

/// `POST /v1/erasures`: the embedded API's erasure (same body, answer and records): every face
/// of a source, subject or jurisdiction leaves PostgreSQL, the vector store and the bucket,
/// and a receipt signed with the cluster's audit key is issued; the rows' deletion, the
/// erasure's audit record and the receipt commit in one transaction
/// (`ClusterStore::delete_recorded`), so no erasure is done unrecorded.
async fn erase(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    crate::blocking(&st, move |st| {
        let (p, d) = st.authorize(&who, Action::Erase, &AuthzContext::default(), |ev| ev)?;
        let (target, described) = erasure_target(&body)?;
        let audit = st.audit();
        let (report, receipt) = st
            .store
            .delete_recorded(&target, |tx, report| {
                receipts::issue_in(
                    tx,
                    &audit,
                    &Actor::from(&p),
                    Some(p.org.id),
                    "erasure",
                    erasure_receipt_body(&described, report, &p),
                    Some(erasure_event(&p, &d, report, &described)),
                )
            })
            .map_err(storage)?;
        Ok((
            StatusCode::CREATED,
            Json(json!({"report": report, "receipt": receipt})),
        )
            .into_response())
    })
    .await
}

/// Takes one public request from the client's allowance, shared by every API process
/// (`visage_cluster::ratelimit`); 429 `rate_limited` when none is left.
async fn limited(st: &ClusterState, addr: SocketAddr) -> ApiResult<()> {
    let allowed = crate::blocking(st, move |st| {
        visage_cluster::ratelimit::take(
            st.store.pool(),
            "public",
            &addr.ip().to_string(),
            st.public_per_minute,
        )
        .map_err(storage)
    })
    .await?;
    if allowed {
        Ok(())
    } else {
        Err(ApiError::rate_limited())
    }
}

/// `POST /v1/public/opt-out`: the embedded portal's opt-out by selfie over the cluster. The
/// selfies go on the suppression list before the gallery is searched, so workers ingesting
/// at the same time drop the requester's new photos (`ClusterStore::add_image_checked`).
async fn public_opt_out(
    State(st): State<ClusterState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
) -> ApiResult<Response> {
    limited(&st, addr).await?;
    let (selfies, contact) = read_request(req).await?;
    let request_id = new_request_id()?;
    crate::blocking(&st, move |st| {
        let done = {
            let pipeline = st.lock_pipeline()?;
            let announced = visage_cluster::pending::PendingOptOut {
                request_id: request_id.clone(),
                pack: pipeline.pack_id(),
                selfies: selfies.len(),
                contact,
                created_at: visage_gallery::gallery::now(),
            };
            crate::cluster_opt_outs::run(&st.store, &st.audit(), &pipeline, announced, &selfies)
        }
        .map_err(opt_out_error)?;
        let (summary, receipt) = (done.summary, done.receipt);
        Ok((
            StatusCode::CREATED,
            Json(json!({
                "request_id": request_id,
                "status": "completed",
                "summary": summary,
                "receipt": receipt,
            })),
        )
            .into_response())
    })
    .await
}

/// A selfie problem is the requester's (422); anything else here is the storage's (503).
fn opt_out_error(e: anyhow::Error) -> ApiError {
    let api = engine_error(e);
    if api.status == StatusCode::INTERNAL_SERVER_ERROR {
        return storage(anyhow::anyhow!(api.message));
    }
    api
}

/// `POST /v1/public/access`: the faces the cluster holds that match the selfies, with
/// provenance and thumbnails; audited and receipted with counts only.
async fn public_access(
    State(st): State<ClusterState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
) -> ApiResult<Response> {
    limited(&st, addr).await?;
    let (selfies, contact) = read_request(req).await?;
    let request_id = new_request_id()?;
    crate::blocking(&st, move |st| {
        let report = {
            let pipeline = st.lock_pipeline()?;
            optout::access_report(&st.store, &pipeline, &selfies)
        }
        .map_err(opt_out_error)?;
        let mut report = serde_json::to_value(&report).map_err(|e| ApiError::internal(e.into()))?;
        let n = add_thumbnails(&|sha| st.store.blob(sha).ok(), &mut report);
        let summary = access_summary(&request_id, selfies.len(), n);
        let receipt = receipts::record_public_request(
            st.store.pool(),
            &st.audit(),
            &request_id,
            "access",
            &contact,
            summary,
            |r| access_event(&request_id, selfies.len(), n, &r.id),
        )
        .map_err(storage)?;
        Ok(Json(json!({
            "request_id": request_id,
            "status": "completed",
            "report": report,
            "receipt": receipt,
        }))
        .into_response())
    })
    .await
}

/// `GET /v1/public/requests/{id}`: a public request's status and receipt.
async fn public_request_status(
    State(st): State<ClusterState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<RequestStatus>> {
    limited(&st, addr).await?;
    if !valid_request_id(&id) {
        return Err(ApiError::not_found("no such request"));
    }
    crate::blocking(&st, move |st| {
        let r = receipts::public_request(st.store.pool(), &id)
            .map_err(storage)?
            .ok_or_else(|| ApiError::not_found("no such request"))?;
        let receipt = match &r.receipt_id {
            Some(rid) => receipts::get(st.store.pool(), rid).map_err(storage)?,
            None => None,
        };
        Ok(Json(RequestStatus {
            request_id: r.id,
            kind: r.kind,
            status: r.status,
            created_at: r.created_at,
            summary: r.summary,
            receipt,
        }))
    })
    .await
}

/// Serves the cluster API until Ctrl-C / SIGTERM.
pub fn run_cluster(
    bind: SocketAddr,
    st: ClusterState,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    if !bind.ip().is_loopback() {
        tracing::warn!(
            "listening on {bind}, which is not loopback, without TLS: put TLS in front \
             (API keys travel in every request)"
        );
    }
    crate::runtime()?.block_on(async move {
        let listener = crate::listen(bind).await?;
        // Opt-outs whose process died are finished and recorded by whichever API process
        // finds them first: now and every minute.
        let resumer = st.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                let st = resumer.clone();
                let res = tokio::task::spawn_blocking(move || {
                    // Searches take turns on the pipeline: take it only when there is work.
                    if visage_cluster::pending::pending_ids(st.store.pool())?.is_empty() {
                        return Ok(0);
                    }
                    let pipeline = st.lock_pipeline().map_err(|e| anyhow::anyhow!(e.message))?;
                    crate::cluster_opt_outs::resume_abandoned(&st.store, &st.audit(), &pipeline)
                })
                .await;
                match res {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"),
                        "finishing interrupted opt-outs failed; retried in a minute"),
                    Err(e) => tracing::error!(error = %e, "the opt-out resumer panicked"),
                }
            }
        });
        on_ready(listener.local_addr()?);
        axum::serve(
            listener,
            router(st).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(crate::shutdown_signal())
        .await?;
        Ok(())
    })
}
