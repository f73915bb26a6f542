//! Collections (create, describe) and subjects (create, update, delete, assign faces), on
//! either backend: the handlers are written once over [`CatalogHost`], which the embedded
//! server's `AppState` and the cluster API's `ClusterState` implement (how the caller is
//! authenticated and authorised, where records go, which `Catalog` store).
//!
//! Reads are `read_face`; creating collections and subjects, changing, deleting subjects and
//! (un)assigning faces are `ingest`; deleting a subject together with its faces is `delete`.
//! Every change is written to the audit log with ids only: subject labels and attributes may
//! name a person, and the audit log outlives any erasure.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_http::timeout::TimeoutLayer;
use utoipa::{IntoParams, OpenApi, ToSchema};
use visage_gallery::gallery::subjects::{CatalogError, CollectionSummary, Subject, MAX_PAGE};
use visage_gallery::{Catalog, DeleteReport, DeleteTarget};
use visage_governance::{Action, AuditEvent, AuthzContext, Decision, Principal};

use crate::auth::Auth;
use crate::{authorize, face_id, input, ApiError, ApiResult, AppState, ErrorBody, REQUEST_TIMEOUT};

/// What the catalogue endpoints need from a server: who calls, the policy's decision, where
/// records go, and the store. Implemented by the embedded `AppState` (below) and the
/// cluster API's `ClusterState`.
pub(crate) trait CatalogHost: Clone + Send + Sync + 'static {
    /// The authenticated caller, as the request carries it.
    type Caller: FromRequestParts<Self> + Send + 'static;
    /// The policy's decision for `action` (no case); a refusal is recorded and is the error.
    /// Runs on the blocking pool.
    fn authorize(&self, who: &Self::Caller, action: Action) -> ApiResult<(Principal, Decision)>;
    /// 409 `read_only` when the store may not be changed.
    fn writable(&self) -> ApiResult<()>;
    fn catalog(&self) -> &dyn Catalog;
    /// The policy's excluded jurisdictions: faces there are hidden.
    fn hidden(&self) -> Vec<String>;
    /// The model pack this server embeds with: (`name@version`, name, dimension).
    fn pack(&self) -> ApiResult<(String, String, usize)>;
    fn append(&self, ev: AuditEvent) -> ApiResult<()>;
    /// Deletes `target` and appends its audit record (`event`, to which the deleted face ids,
    /// their count and the counts in its details are added: `erasure::counts_in_details`) so
    /// that neither is kept without the other, whatever interrupts it (embedded:
    /// `erasure::run`; cluster: `ClusterStore::delete_recorded`).
    fn delete_recorded(&self, target: DeleteTarget, event: AuditEvent) -> ApiResult<DeleteReport>;
}

impl CatalogHost for AppState {
    type Caller = Auth;
    fn authorize(&self, who: &Auth, action: Action) -> ApiResult<(Principal, Decision)> {
        let d = authorize(self, &who.0, action, &none())?;
        Ok((who.0.clone(), d))
    }
    fn writable(&self) -> ApiResult<()> {
        AppState::writable(self)
    }
    fn catalog(&self) -> &dyn Catalog {
        &self.gallery
    }
    fn hidden(&self) -> Vec<String> {
        self.excluded_jurisdictions()
    }
    fn pack(&self) -> ApiResult<(String, String, usize)> {
        let pl = self
            .pipeline
            .lock()
            .map_err(|_| ApiError::internal(anyhow::anyhow!("pipeline lock poisoned")))?;
        Ok((
            pl.pack_id(),
            pl.pack.name().to_string(),
            pl.pack.recogniser.embedding_dim,
        ))
    }
    fn append(&self, ev: AuditEvent) -> ApiResult<()> {
        self.gov.append(ev)?;
        Ok(())
    }
    fn delete_recorded(&self, target: DeleteTarget, event: AuditEvent) -> ApiResult<DeleteReport> {
        let order = crate::erasure::Order {
            targets: vec![target],
            event,
            report_in_details: false,
            counts_in_details: true,
            receipt: None,
        };
        crate::erasure::run(&self.gallery, &self.gov, order)
            .map(|done| done.report)
            .map_err(ApiError::internal)
    }
}

/// Runs a handler's work on the blocking pool: the caller's authorisation for `action`,
/// then `f` with the state, the principal and the decision.
async fn as_caller<H: CatalogHost, T: Send + 'static>(
    st: H,
    who: H::Caller,
    action: Action,
    f: impl FnOnce(&H, Principal, Decision) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    crate::blocking(&st, move |st| {
        let (p, d) = st.authorize(&who, action)?;
        f(st, p, d)
    })
    .await
}

#[derive(OpenApi)]
#[openapi(
    paths(
        list_collections,
        create_collection,
        describe_collection,
        list_subjects,
        create_subject,
        get_subject,
        update_subject,
        delete_subject,
        assign_faces,
        unassign_face,
    ),
    components(schemas(
        NewCollectionJson,
        CollectionDescription,
        SourceInfo,
        NewSubjectJson,
        SubjectUpdateJson,
        SubjectInfo,
        SubjectPage,
        AssignJson,
        AssignResult,
        UnassignResult,
        SubjectDeleted,
    ))
)]
pub(crate) struct Doc;

/// Routes of this module (merged into either server's router; they carry their own timeout).
pub(crate) fn routes<H: CatalogHost>() -> Router<H> {
    Router::new()
        .route(
            "/v1/collections",
            get(list_collections::<H>).post(create_collection::<H>),
        )
        .route("/v1/collections/{name}", get(describe_collection::<H>))
        .route(
            "/v1/collections/{name}/subjects",
            get(list_subjects::<H>).post(create_subject::<H>),
        )
        .route(
            "/v1/subjects/{id}",
            get(get_subject::<H>)
                .patch(update_subject::<H>)
                .delete(delete_subject::<H>),
        )
        .route("/v1/subjects/{id}/faces", post(assign_faces::<H>))
        .route(
            "/v1/subjects/{id}/faces/{face_id}",
            delete(unassign_face::<H>),
        )
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> ApiError {
        match e {
            CatalogError::NotFound(m) => ApiError::not_found(m),
            CatalogError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            CatalogError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid", m),
            CatalogError::Other(e) => ApiError::internal(e),
        }
    }
}

fn none() -> AuthzContext {
    AuthzContext::default()
}

fn subject_id(raw: &str) -> ApiResult<i64> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("subject id {raw:?} is not an integer")))
}

/// The collection `name` (404 when there is none).
fn named_collection<H: CatalogHost>(st: &H, name: &str) -> ApiResult<visage_gallery::Collection> {
    st.catalog()
        .collection(name)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no collection named {name:?}")))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
}

/// Appends the record of one allowed change: ids only, never labels or attributes.
fn record<H: CatalogHost>(
    st: &H,
    p: &Principal,
    action: Action,
    d: &Decision,
    objects: &[i64],
    details: serde_json::Value,
) -> ApiResult<()> {
    st.append(
        AuditEvent::decision(p, action, d)
            .objects(objects.iter().map(|i| i.to_string()))
            .result_count(objects.len() as u64)
            .details(details),
    )
}

// ---- collections -----------------------------------------------------------------------------

/// A new collection.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCollectionJson {
    /// 1 to 64 ASCII letters, digits, `.`, `_` or `-`, starting with a letter or digit.
    pub name: String,
    /// Optional: the model pack (`name` or `name@version`); must be the pack the server runs,
    /// which the collection is pinned to in any case.
    pub pack: Option<String>,
}

/// A collection: its pinned model pack, counts and sources.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CollectionDescription {
    pub id: i64,
    pub name: String,
    /// Model pack `name@version` the collection is pinned to.
    pub pack: String,
    pub pack_name: String,
    pub pack_version: String,
    /// Embedding dimension.
    pub dim: usize,
    /// Unix seconds.
    pub created_at: i64,
    pub faces: u64,
    pub images: u64,
    pub subjects: u64,
    pub sources: Vec<SourceInfo>,
}

/// A source of a collection with its image and face counts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SourceInfo {
    pub id: i64,
    pub name: String,
    /// directory, archive, manifest, warc, video, upload, ...
    pub kind: String,
    pub uri: Option<String>,
    pub legal_basis: Option<String>,
    pub licence: Option<String>,
    /// ISO 3166 code declared for the source.
    pub jurisdiction: Option<String>,
    pub created_at: i64,
    pub images: u64,
    pub faces: u64,
}

impl From<CollectionSummary> for CollectionDescription {
    fn from(s: CollectionSummary) -> CollectionDescription {
        let c = s.collection;
        let (pack_name, pack_version) = match c.pack.split_once('@') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => (c.pack.clone(), String::new()),
        };
        CollectionDescription {
            id: c.id,
            name: c.name,
            pack: c.pack,
            pack_name,
            pack_version,
            dim: c.dim,
            created_at: c.created_at,
            faces: s.faces,
            images: s.images,
            subjects: s.subjects,
            sources: s
                .sources
                .into_iter()
                .map(|x| SourceInfo {
                    id: x.source.id,
                    name: x.source.name,
                    kind: x.source.kind,
                    uri: x.source.uri,
                    legal_basis: x.source.legal_basis,
                    licence: x.source.licence,
                    jurisdiction: x.source.jurisdiction,
                    created_at: x.source.created_at,
                    images: x.images,
                    faces: x.faces,
                })
                .collect(),
        }
    }
}

/// Collections with their pack and face, image and subject counts.
#[utoipa::path(get, path = "/v1/collections", tag = "collections",
    responses(
        (status = 200, description = "Collections", body = Vec<crate::CollectionInfo>),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action read_face)", body = ErrorBody),
    ))]
pub(crate) async fn list_collections<H: CatalogHost>(
    State(st): State<H>,
    who: H::Caller,
) -> ApiResult<Json<Vec<crate::CollectionInfo>>> {
    let out = as_caller(st, who, Action::ReadFace, move |st, _, _| {
        let mut out = Vec::new();
        for c in st.catalog().collections().map_err(ApiError::internal)? {
            // A collection created and removed meanwhile is simply not listed.
            let s = match st.catalog().describe_collection(&c.name) {
                Ok(s) => s,
                Err(CatalogError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            out.push(crate::CollectionInfo {
                id: s.collection.id,
                name: s.collection.name,
                pack: s.collection.pack,
                dim: s.collection.dim,
                faces: s.faces,
                images: s.images,
                subjects: s.subjects,
            });
        }
        Ok(out)
    })
    .await?;
    Ok(Json(out))
}

/// Creates an empty collection pinned to the model pack this server runs.
#[utoipa::path(post, path = "/v1/collections", tag = "collections",
    request_body = NewCollectionJson,
    responses(
        (status = 201, description = "The new collection", body = CollectionDescription),
        (status = 400, description = "`bad_json`, or `invalid`: the name breaks the rules", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action ingest)", body = ErrorBody),
        (status = 409, description = "`conflict`: the name is taken; `pack_mismatch`: `pack` is \
            not the server's pack; `read_only`", body = ErrorBody),
    ))]
pub(crate) async fn create_collection<H: CatalogHost>(
    State(st): State<H>,
    who: H::Caller,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let out = as_caller(st, who, Action::Ingest, move |st, p, d| {
        let j: NewCollectionJson = input::json(&body)?;
        st.writable()?;
        let (pack, pack_name, dim) = st.pack()?;
        if let Some(want) = j.pack.as_deref() {
            if want != pack && want != pack_name {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "pack_mismatch",
                    format!(
                        "this server runs model pack {pack}; a collection it creates is pinned \
                         to that pack, not {want:?}"
                    ),
                ));
            }
        }
        let c = st.catalog().create_collection(&j.name, &pack, dim)?;
        record(
            st,
            &p,
            Action::Ingest,
            &d,
            &[c.id],
            json!({"op": "create_collection", "collection": c.name, "pack": c.pack}),
        )?;
        Ok(CollectionDescription::from(
            st.catalog().describe_collection(&c.name)?,
        ))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// A collection: pack name and version, dimension, face, image and subject counts, and its
/// sources (kind, legal basis, jurisdiction, image and face counts).
#[utoipa::path(get, path = "/v1/collections/{name}", tag = "collections",
    params(("name" = String, Path, description = "Collection name")),
    responses(
        (status = 200, description = "The collection", body = CollectionDescription),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action read_face)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn describe_collection<H: CatalogHost>(
    State(st): State<H>,
    who: H::Caller,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<CollectionDescription>> {
    let out = as_caller(st, who, Action::ReadFace, move |st, _, _| {
        Ok(CollectionDescription::from(
            st.catalog().describe_collection(&name)?,
        ))
    })
    .await?;
    Ok(Json(out))
}

// ---- subjects --------------------------------------------------------------------------------

/// A subject: a label and attributes grouping faces of one collection.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubjectInfo {
    pub id: i64,
    pub collection_id: i64,
    pub collection: String,
    pub label: String,
    /// A JSON object.
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    /// Unix seconds.
    pub created_at: i64,
    /// Number of faces assigned (faces in policy-excluded jurisdictions are not counted).
    pub faces: u64,
    /// The assigned faces' ids (single-subject responses only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_ids: Option<Vec<i64>>,
}

impl SubjectInfo {
    fn from(s: Subject, face_ids: Option<Vec<i64>>) -> SubjectInfo {
        SubjectInfo {
            id: s.id,
            collection_id: s.collection_id,
            collection: s.collection,
            label: s.label,
            attributes: s.attributes,
            created_at: s.created_at,
            faces: s.faces,
            face_ids,
        }
    }
}

/// The subject with its face ids.
fn subject_detail<H: CatalogHost>(st: &H, id: i64) -> ApiResult<SubjectInfo> {
    let hide = st.hidden();
    let s = st.catalog().subject(id, &hide)?;
    let ids = st.catalog().subject_face_ids(id, &hide)?;
    Ok(SubjectInfo::from(s, Some(ids)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SubjectsQuery {
    /// Subjects with an id greater than this (default 0): the previous page's `next_after`.
    after: Option<i64>,
    /// At most this many (1 to 1000, default 100).
    limit: Option<usize>,
}

/// A page of subjects, by id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubjectPage {
    pub subjects: Vec<SubjectInfo>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<i64>,
}

/// A collection's subjects with their face counts, by id, a page at a time.
#[utoipa::path(get, path = "/v1/collections/{name}/subjects", tag = "collections",
    params(("name" = String, Path, description = "Collection name"), SubjectsQuery),
    responses(
        (status = 200, description = "A page of subjects", body = SubjectPage),
        (status = 400, description = "`bad_request`: malformed query", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action read_face)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such collection", body = ErrorBody),
    ))]
pub(crate) async fn list_subjects<H: CatalogHost>(
    State(st): State<H>,
    who: H::Caller,
    UrlPath(name): UrlPath<String>,
    q: Result<Query<SubjectsQuery>, QueryRejection>,
) -> ApiResult<Json<SubjectPage>> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let after = q.after.unwrap_or(0);
    let page = as_caller(st, who, Action::ReadFace, move |st, _, _| {
        let c = named_collection(st, &name)?;
        let hide = st.hidden();
        // One more than asked tells whether another page follows.
        let mut v = st.catalog().list_subjects(c.id, after, limit + 1, &hide)?;
        let more = v.len() > limit;
        v.truncate(limit);
        Ok(SubjectPage {
            next_after: if more { v.last().map(|s| s.id) } else { None },
            subjects: v.into_iter().map(|s| SubjectInfo::from(s, None)).collect(),
        })
    })
    .await?;
    Ok(Json(page))
}

/// A new subject.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubjectJson {
    /// Unique in the collection; 1 to 200 characters (trimmed), no control characters.
    pub label: String,
    /// A JSON object of at most 64 KiB (default `{}`).
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
}

/// Creates a subject in a collection.
#[utoipa::path(post, path = "/v1/collections/{name}/subjects", tag = "collections",
    params(("name" = String, Path, description = "Collection name")),
    request_body = NewSubjectJson,
    responses(
        (status = 201, description = "The new subject", body = SubjectInfo),
        (status = 400, description = "`bad_json`, or `invalid`: label or attributes break the \
            rules", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action ingest)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such collection", body = ErrorBody),
        (status = 409, description = "`conflict`: the label is taken in the collection; \
            `read_only`", body = ErrorBody),
    ))]
pub(crate) async fn create_subject<H: CatalogHost>(
    State(st): State<H>,
    who: H::Caller,
    UrlPath(name): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let out = as_caller(st, who, Action::Ingest, move |st, p, d| {
        let j: NewSubjectJson = input::json(&body)?;
        st.writable()?;
        let c = named_collection(st, &name)?;
        let attrs = j.attributes.unwrap_or_else(|| json!({}));
        let s = st.catalog().create_subject(c.id, &j.label, &attrs)?;
        record(
            st,
            &p,
            Action::Ingest,
            &d,
            &[s.id],
            json!({"op": "create_subject", "collection": c.name, "subject_id": s.id.to_string()}),
        )?;
        Ok(SubjectInfo::from(s, Some(vec![])))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// A subject with its label, attributes, collection and face ids.
#[utoipa::path(get, path = "/v1/subjects/{id}", tag = "collections",
    params(("id" = i64, Path, description = "Subject id")),
    responses(
        (status = 200, description = "The subject", body = SubjectInfo),
        (status = 400, description = "`bad_request`: id is not an integer", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action read_face)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn get_subject<H: CatalogHost>(
    State(st): State<H>,
    who: H::Caller,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Json<SubjectInfo>> {
    let id = subject_id(&raw)?;
    let out = as_caller(st, who, Action::ReadFace, move |st, _, _| {
        subject_detail(st, id)
    })
    .await?;
    Ok(Json(out))
}

/// Changes to a subject; at least one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectUpdateJson {
    /// A new label, unique in the collection.
    pub label: Option<String>,
    /// Replaces the attributes (a JSON object; `{}` clears them).
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
}

/// Renames a subject and/or replaces its attributes.
#[utoipa::path(patch, path = "/v1/subjects/{id}", tag = "collections",
    params(("id" = i64, Path, description = "Subject id")),
    request_body = SubjectUpdateJson,
    responses(
        (status = 200, description = "The changed subject", body = SubjectInfo),
        (status = 400, description = "`bad_request`: nothing to change; `bad_json`; `invalid`",
            body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action ingest)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: the label is taken; `read_only`", body = ErrorBody),
    ))]
pub(crate) async fn update_subject<H: CatalogHost>(
    State(st): State<H>,
    who: H::Caller,
    UrlPath(raw): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<SubjectInfo>> {
    let id = subject_id(&raw)?;
    let out = as_caller(st, who, Action::Ingest, move |st, p, d| {
        let j: SubjectUpdateJson = input::json(&body)?;
        if j.label.is_none() && j.attributes.is_none() {
            return Err(ApiError::bad_request(
                "give `label` and/or `attributes` to change",
            ));
        }
        st.writable()?;
        let hide = st.hidden();
        st.catalog()
            .update_subject(id, j.label.as_deref(), j.attributes.as_ref(), &hide)?;
        let mut fields = Vec::new();
        if j.label.is_some() {
            fields.push("label");
        }
        if j.attributes.is_some() {
            fields.push("attributes");
        }
        record(
            st,
            &p,
            Action::Ingest,
            &d,
            &[id],
            json!({"op": "update_subject", "subject_id": id.to_string(), "fields": fields}),
        )?;
        subject_detail(st, id)
    })
    .await?;
    Ok(Json(out))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteSubjectQuery {
    /// `true`: delete the subject's faces for real (rows, vectors, crops; ids tombstoned);
    /// needs action `delete`. Default `false`: the faces stay, unassigned.
    delete_faces: Option<bool>,
}

/// What deleting a subject did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubjectDeleted {
    pub subject_id: i64,
    /// Faces left in the gallery without a subject (0 with `delete_faces=true`).
    pub faces_unassigned: usize,
    /// Faces deleted (only with `delete_faces=true`).
    pub faces_deleted: usize,
    /// With `delete_faces=true`: the gallery's deletion report (`faces`, `images`, `sources`,
    /// `subjects`, `blobs_removed`, `face_ids`).
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
}

/// Deletes a subject. Its faces stay, unassigned; with `delete_faces=true` they are deleted
/// for real (as `DELETE /v1/faces/{id}` does) and the deletion report is returned.
#[utoipa::path(delete, path = "/v1/subjects/{id}", tag = "collections",
    params(("id" = i64, Path, description = "Subject id"), DeleteSubjectQuery),
    responses(
        (status = 200, description = "What was deleted", body = SubjectDeleted),
        (status = 400, description = "`bad_request`: id or query malformed", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action ingest; delete with \
            `delete_faces=true`)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`read_only`", body = ErrorBody),
    ))]
pub(crate) async fn delete_subject<H: CatalogHost>(
    State(st): State<H>,
    who: H::Caller,
    UrlPath(raw): UrlPath<String>,
    q: Result<Query<DeleteSubjectQuery>, QueryRejection>,
) -> ApiResult<Json<SubjectDeleted>> {
    let id = subject_id(&raw)?;
    let with_faces = query(q)?.delete_faces.unwrap_or(false);
    let action = if with_faces {
        Action::Delete
    } else {
        Action::Ingest
    };
    let out = as_caller(st, who, action, move |st, p, d| {
        st.writable()?;
        if !with_faces {
            let r = st.catalog().delete_subject(id)?;
            record(
                st,
                &p,
                action,
                &d,
                &r.face_ids,
                json!({"op": "delete_subject", "subject_id": id.to_string(),
                       "faces_unassigned": r.faces_unassigned.to_string()}),
            )?;
            return Ok(SubjectDeleted {
                subject_id: id,
                faces_unassigned: r.faces_unassigned,
                faces_deleted: 0,
                report: None,
            });
        }
        st.catalog().subject(id, &[])?;
        // Deleted and recorded together (a subject deleted meanwhile by another request is
        // recorded with nothing deleted, and answered 404).
        let report = st.delete_recorded(
            DeleteTarget::Subject(id),
            AuditEvent::decision(&p, action, &d).details(
                json!({"op": "delete_subject", "subject_id": id.to_string(), "delete_faces": true}),
            ),
        )?;
        if report.subjects == 0 {
            return Err(ApiError::not_found(format!("no subject with id {id}")));
        }
        Ok(SubjectDeleted {
            subject_id: id,
            faces_unassigned: 0,
            faces_deleted: report.faces,
            report: Some(serde_json::to_value(&report).map_err(|e| ApiError::internal(e.into()))?),
        })
    })
    .await?;
    Ok(Json(out))
}

/// Faces to assign to a subject.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignJson {
    /// 1 to 10,000 face ids, all in the subject's collection.
    pub face_ids: Vec<i64>,
}

/// What an assignment changed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AssignResult {
    pub subject_id: i64,
    /// Faces newly assigned to the subject (`moved` included).
    pub assigned: usize,
    /// Of those, faces taken from another subject.
    pub moved: usize,
    /// Faces that already belonged to the subject.
    pub unchanged: usize,
    /// The faces named, sorted, without repeats.
    pub face_ids: Vec<i64>,
}

/// Assigns faces to a subject, all or none: every face must exist and be in the subject's
/// collection, else nothing changes. Faces of another subject move to this one.
#[utoipa::path(post, path = "/v1/subjects/{id}/faces", tag = "collections",
    params(("id" = i64, Path, description = "Subject id")),
    request_body = AssignJson,
    responses(
        (status = 200, description = "What changed", body = AssignResult),
        (status = 400, description = "`bad_json`; `invalid`: no faces, too many, or faces of \
            another collection", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action ingest)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such subject or face", body = ErrorBody),
        (status = 409, description = "`read_only`", body = ErrorBody),
    ))]
pub(crate) async fn assign_faces<H: CatalogHost>(
    State(st): State<H>,
    who: H::Caller,
    UrlPath(raw): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<AssignResult>> {
    let id = subject_id(&raw)?;
    let out = as_caller(st, who, Action::Ingest, move |st, p, d| {
        let j: AssignJson = input::json(&body)?;
        st.writable()?;
        let hide = st.hidden();
        let r = st.catalog().assign_faces(id, &j.face_ids, &hide)?;
        record(
            st,
            &p,
            Action::Ingest,
            &d,
            &r.face_ids,
            json!({"op": "assign_faces", "subject_id": id.to_string(),
                   "assigned": r.assigned.to_string(), "moved": r.moved.to_string()}),
        )?;
        Ok(AssignResult {
            subject_id: r.subject_id,
            assigned: r.assigned,
            moved: r.moved,
            unchanged: r.unchanged,
            face_ids: r.face_ids,
        })
    })
    .await?;
    Ok(Json(out))
}

/// A face taken out of a subject.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UnassignResult {
    pub subject_id: i64,
    pub face_id: i64,
}

/// Takes a face out of a subject (the face stays in the gallery).
#[utoipa::path(delete, path = "/v1/subjects/{id}/faces/{face_id}", tag = "collections",
    params(
        ("id" = i64, Path, description = "Subject id"),
        ("face_id" = i64, Path, description = "Face id"),
    ),
    responses(
        (status = 200, description = "Unassigned", body = UnassignResult),
        (status = 400, description = "`bad_request`: an id is not an integer", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action ingest)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such subject or face, or the face is not \
            the subject's", body = ErrorBody),
        (status = 409, description = "`read_only`", body = ErrorBody),
    ))]
pub(crate) async fn unassign_face<H: CatalogHost>(
    State(st): State<H>,
    who: H::Caller,
    UrlPath((raw_subject, raw_face)): UrlPath<(String, String)>,
) -> ApiResult<Json<UnassignResult>> {
    let id = subject_id(&raw_subject)?;
    let fid = face_id(&raw_face)?;
    as_caller(st, who, Action::Ingest, move |st, p, d| {
        st.writable()?;
        let hide = st.hidden();
        st.catalog().unassign_face(id, fid, &hide)?;
        record(
            st,
            &p,
            Action::Ingest,
            &d,
            &[fid],
            json!({"op": "unassign_face", "subject_id": id.to_string()}),
        )?;
        Ok(())
    })
    .await?;
    Ok(Json(UnassignResult {
        subject_id: id,
        face_id: fid,
    }))
}
