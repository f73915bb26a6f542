//! Vectors in Qdrant over gRPC (`qdrant-client`, pinned to the server's 1.16 line).
//!
//! One Qdrant collection per visage collection, named `{collection_prefix}c{collection_id}`,
//! cosine distance, point id = face id. The payload carries what filters need, each with a
//! payload index so filtering runs inside Qdrant:
//!
//! - `source_id` (integer), `subject_id` (integer, absent when unknown),
//! - `jurisdiction` (keyword array: the code and its parent, `US-IL` → `["US-IL", "US"]`, so a
//!   `match any` on the key finds a code and everything inside it),
//! - `captured_at` (integer unix seconds, absent when unknown: a range condition never matches
//!   a point without the key).
//!
//! The API is synchronous. Futures run on a private two-thread tokio runtime (`spawn`, then a
//! wait on a std channel), so the methods may be called from any thread, a tokio worker
//! included, without nesting `block_on`.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use qdrant_client::qdrant::{
    point_id::PointIdOptions, vectors_config, Condition, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeleteCollectionBuilder, DeletePayloadPointsBuilder,
    DeletePointsBuilder, Distance, FieldType, Filter as QFilter, PointId, PointStruct,
    PointsIdsList, Query, QueryPointsBuilder, Range, ScrollPointsBuilder, SearchParamsBuilder,
    SetPayloadPointsBuilder, UpsertPointsBuilder, Value, VectorParamsBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use serde::{Deserialize, Serialize};
use visage_gallery::{Filter, Neighbour};

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QdrantConfig {
    /// gRPC url, e.g. `http://127.0.0.1:6334`
    pub url: String,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default = "one")]
    pub shards: u32,
    #[serde(default = "one")]
    pub replicas: u32,
    /// Qdrant collection names are `{prefix}c{collection_id}`.
    #[serde(default = "default_prefix")]
    pub collection_prefix: String,
}

/// Never prints the api key.
impl fmt::Debug for QdrantConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantConfig")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("shards", &self.shards)
            .field("replicas", &self.replicas)
            .field("collection_prefix", &self.collection_prefix)
            .finish()
    }
}

fn one() -> u32 {
    1
}
fn default_prefix() -> String {
    "visage_".into()
}

/// One face's point: id = face id, payload = the filterable attributes.
#[derive(Debug, Clone)]
pub struct VectorPoint {
    pub face_id: i64,
    pub vector: Vec<f32>,
    pub source_id: i64,
    pub subject_id: Option<i64>,
    /// ISO 3166 code (`US-IL`); filters match it and its parents (`US`).
    pub jurisdiction: Option<String>,
    pub captured_at: Option<i64>,
}

/// Points per upsert request.
const UPSERT_CHUNK: usize = 256;
/// Ids per delete request.
const DELETE_CHUNK: usize = 1024;
/// Points per scroll page in `ids`.
const SCROLL_PAGE: u32 = 4096;
/// Per-request gRPC timeout; writes wait for the points to be applied.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const PAYLOAD_INDEXES: [(&str, FieldType); 4] = [
    ("source_id", FieldType::Integer),
    ("subject_id", FieldType::Integer),
    ("jurisdiction", FieldType::Keyword),
    ("captured_at", FieldType::Integer),
];

/// Synchronous API, safe to call from any thread, including a tokio runtime's worker thread.
pub struct QdrantVectors {
    client: Arc<Qdrant>,
    /// `Some` until drop (taken there to shut it down without blocking).
    rt: Option<tokio::runtime::Runtime>,
    url: String,
    prefix: String,
    shards: u32,
    replicas: u32,
}

impl Drop for QdrantVectors {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime's async context.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// `US-IL` → `["US-IL", "US"]`; `US` → `["US"]`.
pub fn jurisdiction_terms(code: &str) -> Vec<String> {
    match code.split_once('-') {
        Some((parent, _)) if !parent.is_empty() => vec![code.to_string(), parent.to_string()],
        _ => vec![code.to_string()],
    }
}

/// The visage filter as a Qdrant filter (None: no condition).
pub fn qdrant_filter(filter: &Filter) -> Option<QFilter> {
    let mut must: Vec<Condition> = Vec::new();
    let mut must_not: Vec<Condition> = Vec::new();
    if !filter.sources.is_empty() {
        must.push(Condition::matches("source_id", filter.sources.clone()));
    }
    if !filter.subjects.is_empty() {
        must.push(Condition::matches("subject_id", filter.subjects.clone()));
    }
    if !filter.jurisdictions.is_empty() {
        must.push(Condition::matches(
            "jurisdiction",
            filter.jurisdictions.clone(),
        ));
    }
    if !filter.exclude_jurisdictions.is_empty() {
        must_not.push(Condition::matches(
            "jurisdiction",
            filter.exclude_jurisdictions.clone(),
        ));
    }
    if filter.captured_from.is_some() || filter.captured_to.is_some() {
        // Unix seconds are far below 2^53, so f64 bounds are exact.
        must.push(Condition::range(
            "captured_at",
            Range {
                gte: filter.captured_from.map(|t| t as f64),
                lte: filter.captured_to.map(|t| t as f64),
                ..Default::default()
            },
        ));
    }
    if must.is_empty() && must_not.is_empty() {
        return None;
    }
    Some(QFilter {
        must,
        must_not,
        ..Default::default()
    })
}

fn point_id(face_id: i64) -> Result<PointId> {
    if face_id <= 0 {
        bail!("face id {face_id} is not a positive integer");
    }
    Ok(PointId::from(face_id as u64))
}

fn face_id_of(id: Option<PointId>) -> Result<u64> {
    match id.and_then(|p| p.point_id_options) {
        Some(PointIdOptions::Num(n)) => Ok(n),
        Some(PointIdOptions::Uuid(u)) => bail!("unexpected UUID point id {u} (not a face id)"),
        None => bail!("point without an id in Qdrant's answer"),
    }
}

fn payload_of(p: &VectorPoint) -> Payload {
    let mut payload = Payload::new();
    payload.insert("source_id", p.source_id);
    if let Some(s) = p.subject_id {
        payload.insert("subject_id", s);
    }
    if let Some(j) = &p.jurisdiction {
        payload.insert("jurisdiction", Value::from(jurisdiction_terms(j)));
    }
    if let Some(t) = p.captured_at {
        payload.insert("captured_at", t);
    }
    payload
}

impl QdrantVectors {
    pub fn connect(cfg: &QdrantConfig) -> Result<QdrantVectors> {
        if cfg.shards == 0 || cfg.replicas == 0 {
            bail!(
                "Qdrant at {}: shards and replicas must be at least 1 (got {} and {})",
                cfg.url,
                cfg.shards,
                cfg.replicas
            );
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("visage-qdrant")
            .enable_all()
            .build()
            .context("starting the Qdrant client's tokio runtime")?;
        // The client's own version check prints to stdout and uses a runtime of its own; the
        // health check below reports the server's version instead.
        let client = Qdrant::from_url(&cfg.url)
            .api_key(cfg.api_key.clone())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .skip_compatibility_check()
            .build()
            .with_context(|| format!("Qdrant client for {}", cfg.url))?;
        let v = QdrantVectors {
            client: Arc::new(client),
            rt: Some(rt),
            url: cfg.url.clone(),
            prefix: cfg.collection_prefix.clone(),
            shards: cfg.shards,
            replicas: cfg.replicas,
        };
        let health = v
            .run(|c| async move { c.health_check().await })
            .with_context(|| format!("connecting to Qdrant at {}", v.url))?;
        tracing::debug!(url = %v.url, version = %health.version, "connected to Qdrant");
        Ok(v)
    }

    /// The Qdrant collection name of a visage collection.
    pub fn collection_name(&self, collection_id: i64) -> String {
        format!("{}c{}", self.prefix, collection_id)
    }

    /// Runs a client future on the private runtime and waits for it on this thread.
    fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Qdrant>) -> Fut,
        Fut: Future<Output = Result<T, QdrantError>> + Send + 'static,
    {
        let fut = f(self.client.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let rt = self.rt.as_ref().expect("runtime present until drop");
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        match rx.recv() {
            Ok(r) => r.map_err(anyhow::Error::new),
            // The task was dropped without sending (runtime shutting down, or a panic in it).
            Err(_) => bail!("the Qdrant client task ended without an answer"),
        }
    }

    fn ctx(&self, what: &str, collection: &str) -> String {
        format!("Qdrant at {}, collection {collection}: {what}", self.url)
    }

    /// Creates the collection (cosine distance, `dim`) with payload indexes if missing.
    pub fn ensure_collection(&self, collection_id: i64, dim: usize) -> Result<()> {
        let name = self.collection_name(collection_id);
        if dim == 0 {
            bail!("{}", self.ctx("vector dimension 0", &name));
        }
        let mut info = self.collection_info(&name)?;
        if info.is_none() {
            let req = CreateCollectionBuilder::new(name.clone())
                .vectors_config(VectorParamsBuilder::new(dim as u64, Distance::Cosine))
                .shard_number(self.shards)
                .replication_factor(self.replicas)
                .on_disk_payload(true)
                .build();
            let created = self.run(|c| async move { c.create_collection(req).await });
            match created {
                Ok(_) => {}
                // Another process may have created it in the meantime: look again below.
                Err(e) => {
                    if self.collection_info(&name)?.is_none() {
                        return Err(e.context(self.ctx("creating", &name)));
                    }
                }
            }
            info = self.collection_info(&name)?;
        }
        let info = info.ok_or_else(|| anyhow!("{}", self.ctx("missing after creation", &name)))?;
        let (have_dim, distance) = info
            .config
            .as_ref()
            .and_then(|c| c.params.as_ref())
            .and_then(|p| p.vectors_config.as_ref())
            .and_then(|v| v.config.as_ref())
            .and_then(|c| match c {
                vectors_config::Config::Params(p) => Some((p.size, p.distance)),
                vectors_config::Config::ParamsMap(_) => None,
            })
            .ok_or_else(|| {
                anyhow!(
                    "{}",
                    self.ctx("exists but has no single unnamed vector", &name)
                )
            })?;
        if have_dim != dim as u64 {
            bail!(
                "{}",
                self.ctx(
                    &format!("exists with vector dimension {have_dim}, expected {dim}"),
                    &name
                )
            );
        }
        if distance != Distance::Cosine as i32 {
            bail!(
                "{}",
                self.ctx(
                    &format!(
                        "exists with distance {:?}, expected Cosine",
                        Distance::try_from(distance).ok()
                    ),
                    &name
                )
            );
        }
        for (field, ty) in PAYLOAD_INDEXES {
            if info.payload_schema.contains_key(field) {
                continue;
            }
            let req = CreateFieldIndexCollectionBuilder::new(name.clone(), field, ty)
                .wait(true)
                .build();
            self.run(|c| async move { c.create_field_index(req).await })
                .with_context(|| self.ctx(&format!("creating payload index {field}"), &name))?;
        }
        Ok(())
    }

    /// Points in the collection as Qdrant counts them (`None` when it does not say, or the
    /// collection does not exist). Includes points of writes that never committed, so an
    /// upper estimate of the faces a search compares with.
    pub fn points_count(&self, collection_id: i64) -> Result<Option<u64>> {
        let name = self.collection_name(collection_id);
        Ok(self.collection_info(&name)?.and_then(|i| i.points_count))
    }

    /// `None` when the collection does not exist.
    fn collection_info(&self, name: &str) -> Result<Option<qdrant_client::qdrant::CollectionInfo>> {
        let n = name.to_string();
        let exists = self
            .run(|c| async move { c.collection_exists(n).await })
            .with_context(|| self.ctx("checking existence", name))?;
        if !exists {
            return Ok(None);
        }
        let n = name.to_string();
        let r = self
            .run(|c| async move { c.collection_info(n).await })
            .with_context(|| self.ctx("reading its info", name))?;
        Ok(r.result)
    }

    /// Upsert (idempotent by face id), waiting until the points are searchable.
    pub fn upsert(&self, collection_id: i64, points: &[VectorPoint]) -> Result<()> {
        let name = self.collection_name(collection_id);
        for chunk in points.chunks(UPSERT_CHUNK) {
            let structs = chunk
                .iter()
                .map(|p| {
                    Ok(PointStruct::new(
                        point_id(p.face_id)?,
                        p.vector.clone(),
                        payload_of(p),
                    ))
                })
                .collect::<Result<Vec<_>>>()
                .with_context(|| self.ctx("upsert", &name))?;
            let n = structs.len();
            let req = UpsertPointsBuilder::new(name.clone(), structs)
                .wait(true)
                .build();
            self.run(|c| async move { c.upsert_points(req).await })
                .with_context(|| self.ctx(&format!("upserting {n} points"), &name))?;
        }
        Ok(())
    }

    /// Point ids of these face ids (`what` and `name` say where, in the error).
    fn point_ids(&self, face_ids: &[i64], what: &str, name: &str) -> Result<Vec<PointId>> {
        face_ids
            .iter()
            .map(|&id| point_id(id))
            .collect::<Result<Vec<_>>>()
            .with_context(|| self.ctx(what, name))
    }

    /// Sets the `subject_id` payload of these points to `subject` (removes it for `None`),
    /// waiting until searches see it; ids that are absent are skipped by Qdrant.
    pub fn set_subject(
        &self,
        collection_id: i64,
        face_ids: &[i64],
        subject: Option<i64>,
    ) -> Result<()> {
        let name = self.collection_name(collection_id);
        for chunk in face_ids.chunks(DELETE_CHUNK) {
            let ids = self.point_ids(chunk, "set subject", &name)?;
            let n = ids.len();
            let what = format!("setting the subject of {n} points");
            match subject {
                Some(s) => {
                    let mut payload = Payload::new();
                    payload.insert("subject_id", s);
                    let req = SetPayloadPointsBuilder::new(name.clone(), payload)
                        .points_selector(PointsIdsList { ids })
                        .wait(true)
                        .build();
                    self.run(|c| async move { c.set_payload(req).await })
                        .with_context(|| self.ctx(&what, &name))?;
                }
                None => {
                    let req =
                        DeletePayloadPointsBuilder::new(name.clone(), vec!["subject_id".into()])
                            .points_selector(PointsIdsList { ids })
                            .wait(true)
                            .build();
                    self.run(|c| async move { c.delete_payload(req).await })
                        .with_context(|| self.ctx(&what, &name))?;
                }
            }
        }
        Ok(())
    }

    /// Ok for ids that are absent.
    pub fn delete(&self, collection_id: i64, face_ids: &[i64]) -> Result<()> {
        let name = self.collection_name(collection_id);
        for chunk in face_ids.chunks(DELETE_CHUNK) {
            let ids = self.point_ids(chunk, "delete", &name)?;
            let n = ids.len();
            let req = DeletePointsBuilder::new(name.clone())
                .points(PointsIdsList { ids })
                .wait(true)
                .build();
            self.run(|c| async move { c.delete_points(req).await })
                .with_context(|| self.ctx(&format!("deleting {n} points"), &name))?;
        }
        Ok(())
    }

    /// Up to `k` neighbours (id = face id, score = cosine), best first, filter applied
    /// inside Qdrant. `ef` is the HNSW search breadth (None: Qdrant's default).
    pub fn search(
        &self,
        collection_id: i64,
        vector: &[f32],
        k: usize,
        filter: &Filter,
        ef: Option<usize>,
    ) -> Result<Vec<Neighbour>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let name = self.collection_name(collection_id);
        let mut req = QueryPointsBuilder::new(name.clone())
            .query(Query::new_nearest(vector.to_vec()))
            .limit(k as u64)
            .with_payload(false)
            .with_vectors(false);
        if let Some(f) = qdrant_filter(filter) {
            req = req.filter(f);
        }
        if let Some(ef) = ef {
            req = req.params(SearchParamsBuilder::default().hnsw_ef(ef as u64));
        }
        let req = req.build();
        let resp = self
            .run(|c| async move { c.query(req).await })
            .with_context(|| self.ctx("search", &name))?;
        let mut out = resp
            .result
            .into_iter()
            .map(|p| {
                Ok(Neighbour {
                    id: face_id_of(p.id)?,
                    score: p.score,
                })
            })
            .collect::<Result<Vec<_>>>()
            .with_context(|| self.ctx("search", &name))?;
        // Qdrant answers best first already; keep it so even if a future server does not.
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Every point id in the collection (scroll), for `check`.
    pub fn ids(&self, collection_id: i64) -> Result<Vec<i64>> {
        let name = self.collection_name(collection_id);
        let mut out: Vec<i64> = Vec::new();
        let mut offset: Option<PointId> = None;
        loop {
            let mut req = ScrollPointsBuilder::new(name.clone())
                .limit(SCROLL_PAGE)
                .with_payload(false)
                .with_vectors(false);
            if let Some(o) = offset.take() {
                req = req.offset(o);
            }
            let req = req.build();
            let resp = self
                .run(|c| async move { c.scroll(req).await })
                .with_context(|| self.ctx("listing point ids", &name))?;
            for p in resp.result {
                let id = face_id_of(p.id).with_context(|| self.ctx("listing point ids", &name))?;
                let id = i64::try_from(id).map_err(|_| {
                    anyhow!(
                        "{}",
                        self.ctx(&format!("point id {id} is not a face id"), &name)
                    )
                })?;
                out.push(id);
            }
            match resp.next_page_offset {
                Some(o) => offset = Some(o),
                None => break,
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Drops the whole Qdrant collection (tests).
    pub fn drop_collection(&self, collection_id: i64) -> Result<()> {
        let name = self.collection_name(collection_id);
        let n = name.clone();
        let exists = self
            .run(|c| async move { c.collection_exists(n).await })
            .with_context(|| self.ctx("checking existence", &name))?;
        if !exists {
            return Ok(());
        }
        let n = name.clone();
        self.run(|c| async move { c.delete_collection(DeleteCollectionBuilder::new(n)).await })
            .with_context(|| self.ctx("dropping", &name))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jurisdiction_terms_include_the_parent() {
        assert_eq!(jurisdiction_terms("US-IL"), vec!["US-IL", "US"]);
        assert_eq!(jurisdiction_terms("US"), vec!["US"]);
        assert_eq!(jurisdiction_terms("GB-ENG"), vec!["GB-ENG", "GB"]);
    }

    #[test]
    fn empty_filter_is_no_condition() {
        assert!(qdrant_filter(&Filter::default()).is_none());
        let f = Filter {
            exclude_jurisdictions: vec!["FR".into()],
            captured_to: Some(10),
            ..Default::default()
        };
        let q = qdrant_filter(&f).unwrap();
        assert_eq!(q.must.len(), 1);
        assert_eq!(q.must_not.len(), 1);
    }

    #[test]
    fn debug_hides_the_api_key() {
        let c = QdrantConfig {
            url: "http://127.0.0.1:6334".into(),
            api_key: Some("s3cret".into()),
            shards: 1,
            replicas: 1,
            collection_prefix: "p_".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
