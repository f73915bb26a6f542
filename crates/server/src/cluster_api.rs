//! The HTTP API of a cluster deployment (`visage serve --config FILE`): stateless, any number
//! of processes over one PostgreSQL + S3 (+ Qdrant) cluster. Ingest jobs are queued in
//! PostgreSQL and done by `visage worker` processes.
//!
//! What is served so far: health, stats, and ingest jobs by server-side path (the same body
//! as the embedded server's `POST /v1/ingest/jobs` path jobs). Search, governance (accounts,
//! policy, audit log, cases, opt-out, erasure) and the web app run on the embedded backend
//! only until governance moves to PostgreSQL (docs/ARCHITECTURE.md, "Cluster mode"); this API
//! answers 404 for them rather than searching without an audit trail. Keys are the cluster's
//! own (`visage cluster add-key`), roles admin/operator (may queue jobs) and viewer. Every job
//! request, allowed or refused, lands in the cluster's audit log (PostgreSQL, the governance
//! format: `visage cluster audit-export` + `visage audit verify --file`), a queued job in the
//! same transaction as its record.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use visage_cluster::audit::PgAudit;
use visage_cluster::{queue, ClusterConfig, ClusterStore};
use visage_gallery::{FaceStore, NewSource};
use visage_governance::{Actor, AuditEvent};

use crate::jobs::{resolve_under_roots, PathJobJson};
use crate::{ApiError, ApiResult};

#[derive(Clone)]
pub struct ClusterState {
    store: Arc<ClusterStore>,
    /// Canonical folders path jobs may name.
    roots: Arc<Vec<PathBuf>>,
    /// Signs the audit log's checkpoints (shared by every API process of the cluster).
    audit_key: Arc<visage_cluster::audit::SigningKey>,
}

/// The caller, from its bearer key: key name and role.
#[derive(Clone)]
struct Caller {
    name: String,
    role: String,
}

impl Caller {
    fn actor(&self) -> Actor {
        Actor {
            user_id: None,
            name: format!("key:{}", self.name),
        }
    }
}

impl ClusterState {
    pub fn open(cfg: &ClusterConfig, ingest_roots: &[PathBuf]) -> Result<ClusterState> {
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
        Ok(ClusterState {
            store: Arc::new(ClusterStore::open(cfg)?),
            roots: Arc::new(roots),
            audit_key: Arc::new(audit_key),
        })
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| {
            tracing::error!("cluster storage: {e:#}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                format!("the cluster storage failed: {e:#}"),
            )
        })
}

async fn authenticate(State(st): State<ClusterState>, mut req: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_string());
    let Some(key) = key else {
        return ApiError::unauthorized().into_response();
    };
    let store = st.store.clone();
    match blocking(move || visage_cluster::keys::lookup(store.pool(), &key)).await {
        Ok(Some((name, role))) => {
            req.extensions_mut().insert(Caller { name, role });
            next.run(req).await
        }
        Ok(None) => ApiError::unauthorized().into_response(),
        Err(e) => e.into_response(),
    }
}

pub fn router(st: ClusterState) -> Router {
    let authed = Router::new()
        .route("/v1/stats", get(stats))
        .route("/v1/ingest/jobs", get(list_jobs).post(create_job))
        .route("/v1/ingest/jobs/{id}", get(get_job))
        .route_layer(middleware::from_fn_with_state(st.clone(), authenticate));
    Router::new()
        .route("/v1/health", get(health))
        .merge(authed)
        .with_state(st)
}

async fn health(State(st): State<ClusterState>) -> ApiResult<Json<serde_json::Value>> {
    let store = st.store.clone();
    let version = blocking(move || store.pool().schema_version()).await?;
    Ok(Json(json!({
        "status": "ok",
        "backend": st.store.backend(),
        "schema_version": version,
    })))
}

async fn stats(State(st): State<ClusterState>) -> ApiResult<Json<serde_json::Value>> {
    let store = st.store.clone();
    let (faces, images, colls) = blocking(move || {
        Ok((
            store.face_count()?,
            store.image_count()?,
            store.collections()?,
        ))
    })
    .await?;
    Ok(Json(json!({
        "backend": st.store.backend(),
        "faces": faces,
        "images": images,
        "collections": colls,
    })))
}

async fn create_job(
    State(st): State<ClusterState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<PathJobJson>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<queue::JobStatus>)> {
    if caller.role == "viewer" {
        let (store, key) = (st.store.clone(), st.audit_key.clone());
        let ev = AuditEvent::new(&caller.actor(), "ingest_job_create").decided(
            false,
            "cluster_role",
            "queuing ingest jobs needs an operator or admin key",
        );
        blocking(move || PgAudit::new(store.pool(), (*key).clone()).append(ev)).await?;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "role_denied",
            "queuing ingest jobs needs an operator or admin key",
        ));
    }
    let Json(job) = body.map_err(|e| ApiError::bad_json(e.body_text()))?;
    if job.collection.trim().is_empty() {
        return Err(ApiError::bad_request("`collection` must not be empty"));
    }
    if job.source.name.trim().is_empty() || job.source.legal_basis.trim().is_empty() {
        return Err(ApiError::bad_request(
            "`source.name` and `source.legal_basis` are required",
        ));
    }
    if let Some(j) = &job.source.jurisdiction {
        visage_gallery::normalize_jurisdiction(j)
            .map_err(|e| ApiError::bad_request(format!("source.jurisdiction: {e:#}")))?;
    }
    let path = resolve_under_roots(&st.roots, None, &job.path)?;
    let source = NewSource {
        name: job.source.name.clone(),
        kind: job
            .source
            .kind
            .clone()
            .unwrap_or_else(|| if path.is_dir() { "directory" } else { "files" }.into()),
        uri: job.source.uri.clone().or_else(|| Some(job.path.clone())),
        legal_basis: Some(job.source.legal_basis.clone()),
        licence: job.source.licence.clone(),
        jurisdiction: job.source.jurisdiction.clone(),
    };
    let opts = job.options.clone().unwrap_or_default();
    let args = json!({
        "path": job.path,
        "subject_from_parent": opts.subject_from_parent.unwrap_or(false),
        "keep_originals": opts.keep_originals.unwrap_or(false),
    });
    let ev = AuditEvent::new(&caller.actor(), "ingest_job_create")
        .decided(true, "cluster_role", &format!("role {}", caller.role))
        .details(json!({
            "collection": job.collection,
            "path": job.path,
            "source": job.source.name,
            "legal_basis": job.source.legal_basis,
        }));
    let (store, key) = (st.store.clone(), st.audit_key.clone());
    let collection = job.collection.clone();
    let status = blocking(move || {
        let audit = PgAudit::new(store.pool(), (*key).clone());
        let id = queue::enqueue_with(
            store.pool(),
            &collection,
            &source,
            &[path],
            args,
            |tx, id| {
                audit
                    .append_in(tx, ev.objects([format!("job:{id}")]))
                    .map(|_| ())
            },
        )?;
        queue::job_status(store.pool(), id)?.context("job vanished")
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(status)))
}

async fn get_job(
    State(st): State<ClusterState>,
    UrlPath(id): UrlPath<i64>,
) -> ApiResult<Json<queue::JobStatus>> {
    let store = st.store.clone();
    blocking(move || queue::job_status(store.pool(), id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no ingest job {id}")))
}

async fn list_jobs(State(st): State<ClusterState>) -> ApiResult<Json<serde_json::Value>> {
    let store = st.store.clone();
    let jobs = blocking(move || queue::jobs(store.pool(), 100)).await?;
    Ok(Json(json!({ "jobs": jobs })))
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
        on_ready(listener.local_addr()?);
        axum::serve(listener, router(st))
            .with_graceful_shutdown(crate::shutdown_signal())
            .await?;
        Ok(())
    })
}
