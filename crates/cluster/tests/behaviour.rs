//! One behavioural suite for `visage_gallery::FaceStore`, written once over `&dyn FaceStore` and
//! run against every backend (docs/ARCHITECTURE.md, "Cluster mode", "Tests"):
//!
//! - `embedded`: `visage_gallery::Gallery` in a temporary directory;
//! - `cluster_exact`: `ClusterStore` on PostgreSQL + S3 (moto) with the exact vector scan;
//! - `cluster_qdrant`: the same with Qdrant, only when `QDRANT_URL` (gRPC url) is set.
//!
//! Each test gets a fresh store: its own database and bucket on servers started once per test
//! process (`visage_cluster::testkit`), its own Qdrant collection prefix. Missing servers skip
//! with a message (unless `VISAGE_REQUIRE_CLUSTER=1`). The data is synthetic: face-like
//! embeddings (identity centres plus noise) and opaque byte strings as crops and thumbnails.
//!
//! Test names are `<scenario>::<backend>`, e.g. `filters::cluster_exact`.

mod common;

use common::{dot, normalised, Rng, PG};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tempfile::TempDir;
use visage_cluster::blobs::S3Config;
use visage_cluster::qdrant::{QdrantConfig, QdrantVectors};
use visage_cluster::testkit::S3Server;
use visage_cluster::{ClusterConfig, ClusterStore};
use visage_gallery::gallery::subjects::CatalogError;
use visage_gallery::{
    Access, AddOutcome, Catalog, Collection, DeleteTarget, FaceStore, Filter, Gallery, Hit,
    NewFace, NewImage, NewSource, NewSuppression, SearchQuery, Source,
};

const DIM: usize = 128;
const PACK: &str = "synthetic-128";

// ---------------------------------------------------------------------------------------------
// Backends

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Embedded,
    ClusterExact,
    ClusterQdrant,
}

impl Kind {
    fn from_name(name: &str) -> Kind {
        match name {
            "embedded" => Kind::Embedded,
            "cluster_exact" => Kind::ClusterExact,
            "cluster_qdrant" => Kind::ClusterQdrant,
            other => panic!("unknown backend {other}"),
        }
    }
}

/// One S3 server per test process (and `common::PG`), shared by its tests.
static S3: LazyLock<Option<S3Server>> =
    LazyLock::new(|| S3Server::start().expect("starting the S3 test server"));
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// What a scenario may need besides the store.
struct Ctx {
    kind: Kind,
    /// The cluster configuration (cluster backends): a second "process" opens it again.
    cluster: Option<ClusterConfig>,
}

impl Ctx {
    /// The point ids Qdrant holds for a collection (the Qdrant backend only).
    fn qdrant_ids(&self, collection_id: i64) -> Option<Vec<i64>> {
        let q = self.cluster.as_ref()?.qdrant.as_ref()?;
        let v = QdrantVectors::connect(q).expect("connecting to Qdrant");
        Some(v.ids(collection_id).expect("listing Qdrant point ids"))
    }
}

struct Fixture {
    // Dropped in this order: the store before its directory.
    store: Box<dyn Catalog>,
    ctx: Ctx,
    _dir: Option<TempDir>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Qdrant is shared between test runs: drop this test's collections.
        let Some(q) = self.ctx.cluster.as_ref().and_then(|c| c.qdrant.as_ref()) else {
            return;
        };
        let Ok(colls) = self.store.collections() else {
            return;
        };
        if let Ok(v) = QdrantVectors::connect(q) {
            for c in colls {
                if let Err(e) = v.drop_collection(c.id) {
                    eprintln!("dropping Qdrant collection of {}: {e:#}", c.name);
                }
            }
        }
    }
}

fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}_{n}", std::process::id())
}

fn qdrant_url() -> Option<String> {
    std::env::var("QDRANT_URL")
        .ok()
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
}

/// A cluster configuration on a fresh database and bucket; `None` (with a message) when the
/// servers are not installed.
fn cluster_config(test: &str, qdrant: Option<String>) -> Option<ClusterConfig> {
    // Start both servers side by side (each takes a second or two).
    let (pg_ok, s3_ok) = std::thread::scope(|s| {
        let s3 = s.spawn(|| S3.is_some());
        let pg = PG.is_some();
        (pg, s3.join().expect("S3 start-up thread"))
    });
    if !pg_ok || !s3_ok {
        eprintln!("skipped {test}: PostgreSQL or the S3 server is not installed");
        return None;
    }
    let pg = PG.as_ref().unwrap();
    let s3 = S3.as_ref().unwrap();
    let base: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let suffix = unique_suffix();
    let mut db = format!("beh_{base}");
    db.truncate(63 - suffix.len() - 1);
    let db = format!("{db}_{suffix}");
    let bucket = db.replace('_', "-");
    let postgres_url = pg.create_database(&db).expect("creating the test database");
    let s3: S3Config = s3.create_bucket(&bucket).expect("creating the test bucket");
    let qdrant = qdrant.map(|url| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        QdrantConfig {
            url,
            api_key: None,
            shards: 1,
            replicas: 1,
            collection_prefix: format!("visage_beh_{}_{nanos}_", std::process::id()),
        }
    });
    Some(ClusterConfig {
        postgres_url,
        s3,
        qdrant,
        audit_key_file: None,
        policy_file: None,
        operator_org: None,
        login_per_minute: None,
        public_per_minute: None,
        upload_limit: None,
        upload_dir: None,
    })
}

fn fixture(kind: Kind, test: &str) -> Option<Fixture> {
    match kind {
        Kind::Embedded => {
            let dir = tempfile::tempdir().expect("temporary directory");
            let g = Gallery::open(dir.path(), Access::ReadWrite).expect("opening the gallery");
            Some(Fixture {
                store: Box::new(g),
                ctx: Ctx {
                    kind,
                    cluster: None,
                },
                _dir: Some(dir),
            })
        }
        Kind::ClusterExact | Kind::ClusterQdrant => {
            let qdrant = if kind == Kind::ClusterQdrant {
                match qdrant_url() {
                    Some(u) => Some(u),
                    None => {
                        eprintln!(
                            "skipped {test}: QDRANT_URL is not set (gRPC url of a Qdrant 1.16 \
                             server, e.g. http://127.0.0.1:6334; see docs/CLUSTER-QDRANT.md)"
                        );
                        return None;
                    }
                }
            } else {
                None
            };
            let cfg = cluster_config(test, qdrant)?;
            let store = ClusterStore::open(&cfg).expect("opening the cluster store");
            Some(Fixture {
                store: Box::new(store),
                ctx: Ctx {
                    kind,
                    cluster: Some(cfg),
                },
                _dir: None,
            })
        }
    }
}

fn run(backend: &str, test: &str, scenario: fn(&dyn Catalog, &Ctx)) {
    let kind = Kind::from_name(backend);
    let Some(fx) = fixture(kind, test) else {
        return;
    };
    let started = std::time::Instant::now();
    scenario(fx.store.as_ref(), &fx.ctx);
    eprintln!(
        "{test} on {}: ok in {:.2}s",
        fx.store.backend(),
        started.elapsed().as_secs_f64()
    );
}

/// One `#[test]` for a scenario on one backend, optionally with attributes (`#[ignore = ...]`
/// for a known bug).
macro_rules! on {
    ($scenario:ident => $f:ident, $backend:ident $(, #[$m:meta])*) => {
        $(#[$m])*
        #[test]
        fn $backend() {
            super::run(
                stringify!($backend),
                concat!(stringify!($scenario), "::", stringify!($backend)),
                |store: &dyn visage_gallery::Catalog, ctx: &super::Ctx| super::$f(store, ctx),
            );
        }
    };
}

/// `scenario => function`: one test per backend, named `scenario::backend`.
macro_rules! behaviour {
    ($($scenario:ident => $f:ident),* $(,)?) => {
        $(
            mod $scenario {
                on!($scenario => $f, embedded);
                on!($scenario => $f, cluster_exact);
                on!($scenario => $f, cluster_qdrant);
            }
        )*
    };
}

behaviour! {
    add_search => suite_add_search,
    duplicates => suite_duplicates,
    filters => suite_filters,
    deletion => suite_deletion,
    blobs => suite_blobs,
    suppressions => suite_suppressions,
    pinning => suite_pinning,
    subjects => suite_subjects,
    catalogue => suite_catalogue,
}

// Jurisdiction codes are normalised and validated on write, and non-finite vector components
// refused, by both backends.
mod jurisdiction_codes {
    on!(jurisdiction_codes => suite_jurisdiction_codes, embedded);
    on!(jurisdiction_codes => suite_jurisdiction_codes, cluster_exact);
    on!(jurisdiction_codes => suite_jurisdiction_codes, cluster_qdrant);
}

mod non_finite_vectors {
    on!(non_finite_vectors => suite_non_finite_vectors, embedded);
    on!(non_finite_vectors => suite_non_finite_vectors, cluster_exact);
    on!(non_finite_vectors => suite_non_finite_vectors, cluster_qdrant);
}

/// Two `ClusterStore`s ("processes") on one configuration: the cluster backends only.
mod concurrent_adds {
    on!(concurrent_adds => suite_concurrent_adds, cluster_exact);
    on!(concurrent_adds => suite_concurrent_adds, cluster_qdrant);
}

mod optout_reads {
    on!(optout_reads => suite_optout_reads, embedded);
    on!(optout_reads => suite_optout_reads, cluster_exact);
    on!(optout_reads => suite_optout_reads, cluster_qdrant);
}

mod late_matches {
    on!(late_matches => suite_late_matches, embedded);
    on!(late_matches => suite_late_matches, cluster_exact);
    on!(late_matches => suite_late_matches, cluster_qdrant);
}

/// The worker's writes against a growing opt-out list: the cluster backends only.
mod checked_writes {
    on!(checked_writes => suite_checked_writes, cluster_exact);
    on!(checked_writes => suite_checked_writes, cluster_qdrant);
}

/// The counts the triggers of migration 12 keep (`tally`): the cluster backends only.
mod tally {
    on!(tally => suite_tally, cluster_exact);
    on!(tally => suite_tally, cluster_qdrant);
}

/// A deletion and its records commit together (`ClusterStore::delete_recorded`): the
/// cluster backends only.
mod recorded_deletion {
    on!(recorded_deletion => suite_recorded_deletion, cluster_exact);
    on!(recorded_deletion => suite_recorded_deletion, cluster_qdrant);
}

/// `visage migrate`: an embedded gallery copied into the cluster store under test.
mod migrate {
    on!(migrate => suite_migrate, cluster_exact);
    on!(migrate => suite_migrate, cluster_qdrant);
}

// ---------------------------------------------------------------------------------------------
// Synthetic data

/// Identities shaped like face embeddings: a random unit centre each; a sample is the centre
/// plus Gaussian noise (sigma 0.3/sqrt(d) per component), normalised. Same-identity cosine is
/// about 0.92, different identities about 0 ± 0.09.
struct People {
    rng: Rng,
    centres: Vec<Vec<f32>>,
}

impl People {
    fn new(seed: u64, n: usize) -> People {
        let mut rng = Rng(seed);
        let centres = (0..n)
            .map(|_| normalised((0..DIM).map(|_| rng.gauss() as f32).collect()))
            .collect();
        People { rng, centres }
    }

    fn sample(&mut self, who: usize) -> Vec<f32> {
        let sigma = 0.3 / (DIM as f64).sqrt();
        let c = &self.centres[who];
        let v = (0..DIM)
            .map(|k| c[k] + (self.rng.gauss() * sigma) as f32)
            .collect();
        normalised(v)
    }
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Opaque "PNG" bytes, distinct per tag.
fn crop_bytes(tag: &str) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    b.extend_from_slice(&Sha256::digest(format!("crop:{tag}").as_bytes()));
    b.extend_from_slice(tag.as_bytes());
    b
}

/// Opaque "JPEG" bytes, distinct per tag.
fn thumb_bytes(tag: &str) -> Vec<u8> {
    let mut b = b"\xff\xd8\xff\xe0".to_vec();
    b.extend_from_slice(&Sha256::digest(format!("thumb:{tag}").as_bytes()));
    b.extend_from_slice(tag.as_bytes());
    b
}

fn image_sha(tag: &str) -> String {
    sha_hex(format!("image:{tag}").as_bytes())
}

fn new_face(vector: Vec<f32>, tag: &str, subject_id: Option<i64>) -> NewFace {
    NewFace {
        bbox: [10.0, 20.0, 110.0, 140.0],
        landmarks: [
            [40.0, 60.0],
            [80.0, 60.0],
            [60.0, 80.0],
            [45.0, 100.0],
            [75.0, 100.0],
        ],
        det_score: 0.875,
        quality: serde_json::json!({ "sharpness": 0.5, "tag": tag }),
        vector,
        crop: crop_bytes(tag),
        thumb: thumb_bytes(tag),
        subject_id,
    }
}

fn new_image(coll: &Collection, src: &Source, tag: &str, faces: Vec<NewFace>) -> NewImage {
    NewImage {
        collection_id: coll.id,
        source_id: src.id,
        sha256: image_sha(tag),
        uri: Some(format!("file:///photos/{tag}.jpg")),
        width: 640,
        height: 480,
        faces,
        ..Default::default()
    }
}

/// One planned face: whose, with which subject, optionally with given crop bytes.
struct FacePlan {
    ident: usize,
    subject: Option<(i64, String)>,
    crop: Option<Vec<u8>>,
}

fn fp(ident: usize, subject: Option<(i64, String)>) -> FacePlan {
    FacePlan {
        ident,
        subject,
        crop: None,
    }
}

/// One planned image.
struct ImgPlan {
    tag: String,
    source: Source,
    jurisdiction: Option<String>,
    captured_at: Option<i64>,
    original: Option<Vec<u8>>,
    faces: Vec<FacePlan>,
}

fn plan(tag: impl Into<String>, source: &Source, faces: Vec<FacePlan>) -> ImgPlan {
    ImgPlan {
        tag: tag.into(),
        source: source.clone(),
        jurisdiction: None,
        captured_at: None,
        original: None,
        faces,
    }
}

/// What the test knows about a stored face (the reference model).
#[derive(Debug, Clone)]
struct Stored {
    face_id: i64,
    image_id: i64,
    image_sha: String,
    image_tag: String,
    face_tag: String,
    collection_id: i64,
    collection: String,
    ident: usize,
    source_id: i64,
    source_name: String,
    subject: Option<(i64, String)>,
    jurisdiction: Option<String>,
    captured_at: Option<i64>,
    vector: Vec<f32>,
    crop_sha: String,
    thumb_sha: String,
}

/// The images of `plans` as `NewImage`s (vectors drawn from `people`), with the reference
/// records minus the ids.
fn build(
    coll: &Collection,
    people: &mut People,
    plans: &[ImgPlan],
) -> Vec<(NewImage, Vec<Stored>)> {
    plans
        .iter()
        .map(|p| {
            let mut faces = Vec::new();
            let mut stored = Vec::new();
            for (n, f) in p.faces.iter().enumerate() {
                let tag = format!("{}/{}/{n}", coll.name, p.tag);
                let mut nf = new_face(
                    people.sample(f.ident),
                    &tag,
                    f.subject.as_ref().map(|s| s.0),
                );
                if let Some(c) = &f.crop {
                    nf.crop = c.clone();
                }
                stored.push(Stored {
                    face_id: 0,
                    image_id: 0,
                    image_sha: image_sha(&p.tag),
                    image_tag: p.tag.clone(),
                    face_tag: tag.clone(),
                    collection_id: coll.id,
                    collection: coll.name.clone(),
                    ident: f.ident,
                    source_id: p.source.id,
                    source_name: p.source.name.clone(),
                    subject: f.subject.clone(),
                    jurisdiction: p.jurisdiction.clone(),
                    captured_at: p.captured_at,
                    vector: nf.vector.clone(),
                    crop_sha: sha_hex(&nf.crop),
                    thumb_sha: sha_hex(&nf.thumb),
                });
                faces.push(nf);
            }
            let mut img = new_image(coll, &p.source, &p.tag, faces);
            img.jurisdiction = p.jurisdiction.clone();
            img.captured_at = p.captured_at;
            img.original = p.original.clone();
            (img, stored)
        })
        .collect()
}

/// Stores the planned images (batches of 25), checks the outcomes, returns the faces.
fn store_images(
    store: &dyn FaceStore,
    coll: &Collection,
    people: &mut People,
    plans: &[ImgPlan],
) -> Vec<Stored> {
    let built = build(coll, people, plans);
    let mut out = Vec::new();
    for chunk in built.chunks(25) {
        let imgs: Vec<NewImage> = chunk.iter().map(|(i, _)| i.clone()).collect();
        let outcomes = store.add_images(&imgs).expect("add_images");
        assert_eq!(outcomes.len(), imgs.len(), "one outcome per image");
        for ((img, stored), o) in chunk.iter().zip(outcomes) {
            assert!(!o.duplicate, "new image {} reported duplicate", img.sha256);
            assert_eq!(o.face_ids.len(), img.faces.len(), "one face id per face");
            for (mut s, id) in stored.iter().cloned().zip(&o.face_ids) {
                s.face_id = *id;
                s.image_id = o.image_id;
                out.push(s);
            }
        }
    }
    let ids: HashSet<i64> = out.iter().map(|s| s.face_id).collect();
    assert_eq!(ids.len(), out.len(), "face ids are distinct");
    out
}

fn source(store: &dyn FaceStore, coll: &Collection, name: &str, j: Option<&str>) -> Source {
    store
        .ensure_source(
            coll.id,
            &NewSource {
                name: name.into(),
                kind: "folder".into(),
                uri: Some(format!("file:///{name}")),
                jurisdiction: j.map(String::from),
                ..Default::default()
            },
        )
        .expect("ensure_source")
}

fn subject(store: &dyn FaceStore, coll: &Collection, label: &str) -> (i64, String) {
    let id = store
        .ensure_subject(coll.id, label)
        .expect("ensure_subject");
    (id, label.to_string())
}

fn filter() -> Filter {
    Filter::default()
}

/// A search with the invariants every answer must hold: at most k hits, best first, all at
/// or above the threshold, all in the collection, no face twice, scores the cosine of the
/// probe and the stored vector (checked where the test knows the vector).
fn search(
    store: &dyn FaceStore,
    coll: &Collection,
    probe: &[f32],
    k: usize,
    threshold: Option<f32>,
    f: &Filter,
    known: &HashMap<i64, Stored>,
) -> Vec<Hit> {
    let hits = store
        .search(&SearchQuery {
            collection_id: coll.id,
            vector: probe,
            k,
            threshold,
            filter: f.clone(),
        })
        .unwrap_or_else(|e| panic!("search with {f:?}: {e:#}"));
    assert!(hits.len() <= k, "{} hits for k={k}", hits.len());
    for w in hits.windows(2) {
        assert!(
            w[0].score >= w[1].score,
            "hits not best first: {} then {}",
            w[0].score,
            w[1].score
        );
    }
    let mut seen = HashSet::new();
    for h in &hits {
        assert!(seen.insert(h.face.id), "face {} returned twice", h.face.id);
        assert_eq!(h.face.collection_id, coll.id, "hit from another collection");
        assert_eq!(h.face.collection, coll.name);
        if let Some(t) = threshold {
            assert!(h.score >= t, "hit score {} below threshold {t}", h.score);
        }
        if let Some(s) = known.get(&h.face.id) {
            let want = dot(probe, &s.vector);
            assert!(
                (h.score - want).abs() < 2e-3,
                "face {}: score {} but cosine {want}",
                h.face.id,
                h.score
            );
        }
    }
    hits
}

fn by_id(faces: &[Stored]) -> HashMap<i64, Stored> {
    faces.iter().map(|s| (s.face_id, s.clone())).collect()
}

fn ids(hits: &[Hit]) -> Vec<i64> {
    hits.iter().map(|h| h.face.id).collect()
}

fn blob_set(store: &dyn FaceStore) -> HashSet<String> {
    store
        .blob_names()
        .expect("blob_names")
        .into_iter()
        .collect()
}

/// Panics inside a store call are failures of their own kind: report them as such.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => panic!("{what} panicked instead of returning an error"),
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// 1. add + search: identity, order, k, threshold, provenance.
fn suite_add_search(store: &dyn FaceStore, _ctx: &Ctx) {
    let coll = store.ensure_collection("people", PACK, DIM).unwrap();
    assert_eq!(coll.dim, DIM);
    assert_eq!(coll.pack, PACK);
    let alpha = source(store, &coll, "alpha", Some("US"));
    let beta = source(store, &coll, "beta", None);
    assert_eq!(alpha.jurisdiction.as_deref(), Some("US"));
    let mut people = People::new(1, 40);
    let mut plans = Vec::new();
    for i in 0..40 {
        let subj = (i % 2 == 0).then(|| subject(store, &coll, &format!("person-{i:02}")));
        for s in 0..3 {
            let src = if i % 3 == 0 { &beta } else { &alpha };
            let mut p = plan(format!("p{i}-s{s}"), src, vec![fp(i, subj.clone())]);
            p.jurisdiction = (i % 4 == 0).then(|| "US-IL".to_string());
            p.captured_at = (s != 2).then_some(1_600_000_000 + (i * 1000 + s) as i64);
            plans.push(p);
        }
    }
    // Two images with two faces each.
    plans.push(plan("pair-a", &alpha, vec![fp(1, None), fp(2, None)]));
    plans.push(plan("pair-b", &beta, vec![fp(3, None), fp(4, None)]));
    let faces = store_images(store, &coll, &mut people, &plans);
    let known = by_id(&faces);
    assert_eq!(faces.len(), 124);
    assert_eq!(store.face_count().unwrap(), 124);
    assert_eq!(store.image_count().unwrap(), 122);
    store.flush().unwrap();

    // Every stored face reads back with its provenance and vector.
    for s in &faces {
        let r = store.face(s.face_id).unwrap().expect("stored face");
        assert_eq!(r.id, s.face_id);
        assert_eq!(r.collection, "people");
        assert_eq!(r.collection_id, coll.id);
        assert_eq!(r.pack, PACK);
        assert_eq!(r.bbox, [10.0, 20.0, 110.0, 140.0]);
        assert_eq!(r.landmarks[2], [60.0, 80.0]);
        assert_eq!(r.det_score, 0.875);
        assert_eq!(r.quality["tag"], serde_json::json!(s.face_tag));
        assert_eq!(r.crop_sha, s.crop_sha);
        assert_eq!(r.thumb_sha, s.thumb_sha);
        assert_eq!(r.image.id, s.image_id);
        assert_eq!(r.image.sha256, s.image_sha);
        assert_eq!(
            r.image.uri.as_deref(),
            Some(&*format!("file:///photos/{}.jpg", s.image_tag))
        );
        assert_eq!(r.image.captured_at, s.captured_at);
        assert_eq!(r.image.jurisdiction, s.jurisdiction);
        assert_eq!((r.image.width, r.image.height), (640, 480));
        assert_eq!(r.source.id, s.source_id);
        assert_eq!(r.source.name, s.source_name);
        assert_eq!(
            r.subject.as_ref().map(|x| (x.id, x.label.clone())),
            s.subject
        );
        assert_eq!(
            store.face_vector(s.face_id).unwrap().as_deref(),
            Some(&s.vector[..])
        );
        assert_eq!(
            store.image_by_sha(coll.id, &s.image_sha).unwrap(),
            Some(s.image_id)
        );
    }
    assert_eq!(store.face(i64::MAX / 2).unwrap(), None);
    assert_eq!(store.face_vector(i64::MAX / 2).unwrap(), None);

    for who in 0..40 {
        let probe = people.sample(who);
        let mine: BTreeSet<i64> = faces
            .iter()
            .filter(|s| s.ident == who)
            .map(|s| s.face_id)
            .collect();
        // Top hit is one of X's faces; k respected.
        let hits = search(store, &coll, &probe, 5, None, &filter(), &known);
        assert_eq!(hits.len(), 5, "k=5 over 124 faces");
        assert!(
            mine.contains(&hits[0].face.id),
            "identity {who}: top hit face {} is identity {}",
            hits[0].face.id,
            known[&hits[0].face.id].ident
        );
        // Provenance joined on the hits.
        for h in &hits {
            let s = &known[&h.face.id];
            assert_eq!(h.face.image.sha256, s.image_sha);
            assert_eq!(h.face.source.name, s.source_name);
            assert_eq!(h.face.collection, s.collection);
            assert_eq!(
                h.face.subject.as_ref().map(|x| x.label.clone()),
                s.subject.as_ref().map(|x| x.1.clone())
            );
        }
        // Threshold: exactly X's faces are above 0.5.
        let hits = search(store, &coll, &probe, 50, Some(0.5), &filter(), &known);
        let got: BTreeSet<i64> = ids(&hits).into_iter().collect();
        assert_eq!(got, mine, "identity {who}: faces at or above 0.5");
        let k1 = search(store, &coll, &probe, 1, None, &filter(), &known);
        assert_eq!(k1.len(), 1);
        assert!(mine.contains(&k1[0].face.id));
    }
    // A threshold no face reaches.
    let probe = people.sample(7);
    assert!(search(store, &coll, &probe, 10, Some(0.999), &filter(), &known).is_empty());
    // k larger than the collection: everything, once.
    let all = search(store, &coll, &probe, 500, None, &filter(), &known);
    assert_eq!(all.len(), 124);
}

/// 2. duplicate images: same sha in the same collection writes nothing; in another
///    collection it is new.
fn suite_duplicates(store: &dyn FaceStore, _ctx: &Ctx) {
    let main = store.ensure_collection("main", PACK, DIM).unwrap();
    let other = store.ensure_collection("other", PACK, DIM).unwrap();
    assert_ne!(main.id, other.id);
    let src = source(store, &main, "alpha", None);
    let src_o = source(store, &other, "alpha", None);
    assert_ne!(src.id, src_o.id, "sources belong to their collection");
    let mut people = People::new(2, 5);
    let plans: Vec<ImgPlan> = (0..5)
        .map(|i| {
            plan(
                format!("img{i}"),
                &src,
                vec![fp(i, None), fp((i + 1) % 5, None)],
            )
        })
        .collect();
    let faces = store_images(store, &main, &mut people, &plans);
    let known = by_id(&faces);
    let (fc, ic, blobs) = (
        store.face_count().unwrap(),
        store.image_count().unwrap(),
        blob_set(store),
    );
    assert_eq!((fc, ic), (10, 5));

    // The same sha again, with other faces and bytes: duplicate, nothing written.
    let first_image = faces[0].image_id;
    let again = new_image(
        &main,
        &src,
        "img0",
        vec![new_face(people.sample(3), "dup-face", None)],
    );
    let out = store.add_images(std::slice::from_ref(&again)).unwrap();
    assert_eq!(
        out,
        vec![AddOutcome {
            image_id: first_image,
            face_ids: vec![],
            duplicate: true
        }]
    );
    assert_eq!(store.face_count().unwrap(), fc);
    assert_eq!(store.image_count().unwrap(), ic);
    assert_eq!(blob_set(store), blobs, "a duplicate writes no blob");
    // Its face is not searchable.
    let hits = search(
        store,
        &main,
        &again.faces[0].vector,
        20,
        None,
        &filter(),
        &known,
    );
    assert!(hits.iter().all(|h| known.contains_key(&h.face.id)));

    // A batch holding a new image twice and an old one: one new, two duplicates.
    let fresh = new_image(
        &main,
        &src,
        "img-new",
        vec![new_face(people.sample(4), "img-new-face", None)],
    );
    let out = store
        .add_images(&[fresh.clone(), fresh.clone(), again.clone()])
        .unwrap();
    assert_eq!(out.len(), 3);
    assert!(!out[0].duplicate);
    assert_eq!(out[0].face_ids.len(), 1);
    assert!(
        out[1].duplicate,
        "second copy in the same batch is a duplicate"
    );
    assert_eq!(out[1].image_id, out[0].image_id);
    assert!(out[1].face_ids.is_empty());
    assert!(out[2].duplicate);
    assert_eq!(store.face_count().unwrap(), fc + 1);
    assert_eq!(store.image_count().unwrap(), ic + 1);

    // The same sha in another collection is a new image.
    let mut there = again.clone();
    there.collection_id = other.id;
    there.source_id = src_o.id;
    let out = store.add_images(std::slice::from_ref(&there)).unwrap();
    assert!(!out[0].duplicate, "same sha in another collection is new");
    assert_eq!(out[0].face_ids.len(), 1);
    assert_ne!(out[0].image_id, first_image);
    assert_eq!(
        store.image_by_sha(other.id, &again.sha256).unwrap(),
        Some(out[0].image_id)
    );
    assert_eq!(
        store.image_by_sha(main.id, &again.sha256).unwrap(),
        Some(first_image)
    );
    assert_eq!(store.face_count().unwrap(), fc + 2);
    assert_eq!(store.image_count().unwrap(), ic + 2);
    // Found in "other", and only there.
    let hits = search(
        store,
        &other,
        &there.faces[0].vector,
        5,
        None,
        &filter(),
        &HashMap::new(),
    );
    assert_eq!(ids(&hits), out[0].face_ids);
    // Adding it there again: duplicate.
    let out2 = store.add_images(std::slice::from_ref(&there)).unwrap();
    assert!(out2[0].duplicate);
    assert_eq!(out2[0].image_id, out[0].image_id);
    assert_eq!(store.face_count().unwrap(), fc + 2);
}

/// The reference filter semantics (docs of `visage_gallery::Filter`).
fn within(value: &str, code: &str) -> bool {
    let code = code.to_ascii_uppercase();
    value == code || value.starts_with(&format!("{code}-"))
}

fn accepts(f: &Filter, s: &Stored) -> bool {
    let j = s.jurisdiction.as_deref();
    (f.sources.is_empty() || f.sources.contains(&s.source_id))
        && (f.subjects.is_empty()
            || s.subject
                .as_ref()
                .is_some_and(|x| f.subjects.contains(&x.0)))
        && (f.jurisdictions.is_empty()
            || j.is_some_and(|j| f.jurisdictions.iter().any(|c| within(j, c))))
        && !j.is_some_and(|j| f.exclude_jurisdictions.iter().any(|c| within(j, c)))
        && ((f.captured_from.is_none() && f.captured_to.is_none())
            || s.captured_at.is_some_and(|t| {
                f.captured_from.is_none_or(|a| t >= a) && f.captured_to.is_none_or(|b| t <= b)
            }))
}

/// 3. filters: a filtered search never returns a face outside the filter and returns the
///    matching ones.
fn suite_filters(store: &dyn FaceStore, _ctx: &Ctx) {
    let coll = store.ensure_collection("filtered", PACK, DIM).unwrap();
    let alpha = source(store, &coll, "alpha", None);
    let beta = source(store, &coll, "beta", Some("FR"));
    let subjects: Vec<(i64, String)> = (0..8)
        .map(|i| subject(store, &coll, &format!("s{i}")))
        .collect();
    const T0: i64 = 1_700_000_000;
    let codes = [
        Some("US"),
        Some("US-IL"),
        Some("US-ILX"),
        Some("FR"),
        Some("FR-75"),
        None,
        Some("DE"),
    ];
    let mut people = People::new(3, 12);
    let mut plans = Vec::new();
    let mut n = 0usize;
    for i in 0..12 {
        for s in 0..7 {
            let src = if (n / 2).is_multiple_of(2) {
                &alpha
            } else {
                &beta
            };
            let subj = (i < 8).then(|| subjects[i].clone());
            let mut p = plan(format!("f{i}-{s}"), src, vec![fp(i, subj)]);
            p.jurisdiction = codes[(i + s) % codes.len()].map(String::from);
            p.captured_at = (!n.is_multiple_of(3)).then_some(T0 + n as i64 * 3600);
            plans.push(p);
            n += 1;
        }
    }
    let faces = store_images(store, &coll, &mut people, &plans);
    let known = by_id(&faces);
    assert_eq!(
        store.indexed_faces(coll.id).unwrap(),
        faces.len() as u64,
        "faces a search compares with"
    );
    let t = |n: i64| T0 + n * 3600;
    let f = |g: fn(&mut Filter)| {
        let mut x = Filter::default();
        g(&mut x);
        x
    };
    let mut filters: Vec<Filter> = vec![
        f(|x| x.jurisdictions = vec!["US".into()]),
        f(|x| x.jurisdictions = vec!["us".into()]),
        f(|x| x.jurisdictions = vec!["US-IL".into()]),
        f(|x| x.jurisdictions = vec!["FR".into(), "DE".into()]),
        f(|x| x.jurisdictions = vec!["FR-75".into()]),
        f(|x| x.exclude_jurisdictions = vec!["US".into()]),
        f(|x| x.exclude_jurisdictions = vec!["US-IL".into()]),
        f(|x| x.exclude_jurisdictions = vec!["FR".into(), "US".into()]),
        f(|x| {
            x.jurisdictions = vec!["US".into()];
            x.exclude_jurisdictions = vec!["US-IL".into()];
        }),
        f(|x| x.jurisdictions = vec!["GB".into()]),
    ];
    filters.push(Filter {
        sources: vec![beta.id],
        ..filter()
    });
    filters.push(Filter {
        sources: vec![alpha.id, beta.id],
        ..filter()
    });
    filters.push(Filter {
        subjects: vec![subjects[1].0, subjects[5].0],
        ..filter()
    });
    filters.push(Filter {
        captured_from: Some(t(30)),
        ..filter()
    });
    filters.push(Filter {
        captured_to: Some(t(20)),
        ..filter()
    });
    filters.push(Filter {
        captured_from: Some(t(10)),
        captured_to: Some(t(40)),
        ..filter()
    });
    filters.push(Filter {
        captured_from: Some(t(0)),
        ..filter()
    });
    filters.push(Filter {
        sources: vec![alpha.id],
        jurisdictions: vec!["US".into(), "FR".into()],
        captured_from: Some(t(5)),
        captured_to: Some(t(70)),
        ..filter()
    });
    filters.push(Filter {
        subjects: vec![subjects[2].0],
        exclude_jurisdictions: vec!["DE".into()],
        captured_to: Some(t(60)),
        ..filter()
    });

    for flt in &filters {
        let expected: BTreeSet<i64> = faces
            .iter()
            .filter(|s| accepts(flt, s))
            .map(|s| s.face_id)
            .collect();
        // Everything that matches, nothing else.
        let probe = people.sample(0);
        let all = search(store, &coll, &probe, 1000, None, flt, &known);
        let got: BTreeSet<i64> = ids(&all).into_iter().collect();
        let wrong: Vec<i64> = got.difference(&expected).copied().collect();
        assert!(
            wrong.is_empty(),
            "{flt:?} returned faces outside the filter: {:?}",
            wrong.iter().map(|i| &known[i]).collect::<Vec<_>>()
        );
        assert_eq!(got, expected, "{flt:?}: every matching face");
        // The traced search answers the same; a backend that counts the faces passing the
        // filter (the comparisons a false match rate is calibrated for) counts them right.
        let (traced, trace) = store
            .search_traced(&SearchQuery {
                collection_id: coll.id,
                vector: &probe,
                k: 1000,
                threshold: None,
                filter: flt.clone(),
            })
            .unwrap();
        assert_eq!(ids(&traced), ids(&all), "{flt:?}: search_traced");
        if let Some(n) = trace.filter_matches {
            assert_eq!(n, expected.len(), "{flt:?}: {} counted", trace.path);
        }
        // Small k: only matching faces, the nearest matching one first.
        for who in [0, 3, 9] {
            let probe = people.sample(who);
            let hits = search(store, &coll, &probe, 5, None, flt, &known);
            assert_eq!(hits.len(), expected.len().min(5), "{flt:?}: k=5");
            for h in &hits {
                assert!(
                    accepts(flt, &known[&h.face.id]),
                    "{flt:?}: face outside the filter {:?}",
                    known[&h.face.id]
                );
            }
            if let Some(best) = expected.iter().max_by(|a, b| {
                dot(&probe, &known[a].vector).total_cmp(&dot(&probe, &known[b].vector))
            }) {
                assert_eq!(
                    hits[0].face.id, *best,
                    "{flt:?}: nearest matching face first"
                );
            }
        }
    }
    // The US filter: US, US-IL and US-ILX images, never FR, DE or none.
    let us: Vec<&Stored> = faces.iter().filter(|s| accepts(&filters[0], s)).collect();
    let codes_seen: BTreeSet<&str> = us
        .iter()
        .filter_map(|s| s.jurisdiction.as_deref())
        .collect();
    assert_eq!(
        codes_seen,
        ["US", "US-IL", "US-ILX"]
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    // Malformed filters are errors, not panics or empty answers.
    let probe = people.sample(1);
    for bad in [
        f(|x| x.jurisdictions = vec!["USX".into()]),
        f(|x| x.exclude_jurisdictions = vec!["U".into()]),
        Filter {
            captured_from: Some(t(10)),
            captured_to: Some(t(5)),
            ..filter()
        },
    ] {
        let r = no_panic("search with a malformed filter", || {
            store.search(&SearchQuery {
                collection_id: coll.id,
                vector: &probe,
                k: 5,
                threshold: None,
                filter: bad.clone(),
            })
        });
        assert!(r.is_err(), "{bad:?} should be rejected");
    }
}

// 4. deletion by subject, image, source, jurisdiction and faces; counts, blobs, ids.

/// An image as the test models it.
#[derive(Debug, Clone)]
struct Img {
    collection_id: i64,
    source_id: i64,
    jurisdiction: Option<String>,
}

/// The model after a deletion.
struct Model {
    faces: HashMap<i64, Stored>,
    images: HashMap<i64, Img>,
    deleted: BTreeSet<i64>,
}

fn suite_deletion(store: &dyn FaceStore, ctx: &Ctx) {
    let main = store.ensure_collection("main", PACK, DIM).unwrap();
    let second = store.ensure_collection("second", PACK, DIM).unwrap();
    let alpha = source(store, &main, "alpha", None);
    let beta = source(store, &main, "beta", None);
    let gamma = source(store, &second, "gamma", None);
    let subjects: Vec<(i64, String)> = (0..10)
        .map(|i| subject(store, &main, &format!("person-{i}")))
        .collect();
    let mut people = People::new(4, 12);
    let codes = [Some("FR"), Some("US"), Some("FR-75"), None, Some("DE")];
    let mut plans = Vec::new();
    for i in 0..10 {
        for s in 0..4 {
            let src = if s == 3 { &beta } else { &alpha };
            let mut p = plan(
                format!("m{i}-{s}"),
                src,
                vec![fp(i, Some(subjects[i].clone()))],
            );
            p.jurisdiction = codes[(i + s) % codes.len()].map(String::from);
            plans.push(p);
        }
    }
    // Two-face images: a subject's face next to an unlabelled one.
    for (n, (a, b)) in [(0, 10), (1, 11), (2, 10)].into_iter().enumerate() {
        let mut p = plan(
            format!("pair{n}"),
            &alpha,
            vec![fp(a, Some(subjects[a].clone())), fp(b, None)],
        );
        p.jurisdiction = Some("US".into());
        plans.push(p);
    }
    let mut faces = store_images(store, &main, &mut people, &plans);
    let plans2: Vec<ImgPlan> = (0..10)
        .map(|i| {
            let mut p = plan(format!("o{i}"), &gamma, vec![fp(11, None)]);
            p.jurisdiction = Some(if i % 2 == 0 { "FR-13" } else { "IT" }.into());
            p
        })
        .collect();
    faces.extend(store_images(store, &second, &mut people, &plans2));
    let known = by_id(&faces);
    let mut m = Model {
        faces: known.clone(),
        images: faces
            .iter()
            .map(|s| {
                (
                    s.image_id,
                    Img {
                        collection_id: s.collection_id,
                        source_id: s.source_id,
                        jurisdiction: s.jurisdiction.clone(),
                    },
                )
            })
            .collect(),
        deleted: BTreeSet::new(),
    };

    // The store agrees with the model: counts, blobs, (Qdrant) points, searches.
    let verify = |m: &Model, what: &str| {
        assert_eq!(
            store.face_count().unwrap(),
            m.faces.len() as u64,
            "{what}: face_count"
        );
        assert_eq!(
            store.image_count().unwrap(),
            m.images.len() as u64,
            "{what}: image_count"
        );
        for id in &m.deleted {
            assert_eq!(store.face(*id).unwrap(), None, "{what}: deleted face {id}");
            assert_eq!(
                store.face_vector(*id).unwrap(),
                None,
                "{what}: deleted vector {id}"
            );
        }
        let want: HashSet<String> = m
            .faces
            .values()
            .flat_map(|s| [s.crop_sha.clone(), s.thumb_sha.clone()])
            .collect();
        assert_eq!(
            blob_set(store),
            want,
            "{what}: stored blobs are exactly the live faces'"
        );
        if ctx.kind == Kind::ClusterQdrant {
            for c in [&main, &second] {
                let want: BTreeSet<i64> = m
                    .faces
                    .values()
                    .filter(|s| s.collection_id == c.id)
                    .map(|s| s.face_id)
                    .collect();
                let got: BTreeSet<i64> = ctx.qdrant_ids(c.id).unwrap().into_iter().collect();
                assert_eq!(got, want, "{what}: Qdrant points of {}", c.name);
            }
        }
        // Every deleted face's own vector as a probe: never returned.
        for id in &m.deleted {
            let s = &known[id];
            let c = if s.collection_id == main.id {
                &main
            } else {
                &second
            };
            let hits = search(store, c, &s.vector, 30, None, &filter(), &known);
            assert!(
                hits.iter().all(|h| !m.deleted.contains(&h.face.id)),
                "{what}: deleted faces returned: {:?}",
                ids(&hits)
            );
        }
    };
    // Deletes `target`; `faces`/`images` say which faces and images of the model it takes.
    let apply = |m: &mut Model,
                 target: DeleteTarget,
                 faces: &dyn Fn(&Stored) -> bool,
                 images: &dyn Fn(i64, &Img) -> bool,
                 sources: usize,
                 subjects: usize| {
        let gone: BTreeSet<i64> = m
            .faces
            .values()
            .filter(|s| faces(s))
            .map(|s| s.face_id)
            .collect();
        let gone_images: Vec<i64> = m
            .images
            .iter()
            .filter(|(id, i)| images(**id, i))
            .map(|(id, _)| *id)
            .collect();
        let blobs_before = blob_set(store);
        let r = store.delete(&target).unwrap();
        let got: BTreeSet<i64> = r.face_ids.iter().copied().collect();
        assert_eq!(got, gone, "{target:?}: deleted face ids");
        assert_eq!(r.faces, gone.len(), "{target:?}: faces");
        assert_eq!(r.images, gone_images.len(), "{target:?}: images");
        assert_eq!(r.sources, sources, "{target:?}: sources");
        assert_eq!(r.subjects, subjects, "{target:?}: subjects");
        for id in &gone {
            m.faces.remove(id);
            m.deleted.insert(*id);
        }
        for id in &gone_images {
            m.images.remove(id);
        }
        let still: HashSet<String> = m
            .faces
            .values()
            .flat_map(|s| [s.crop_sha.clone(), s.thumb_sha.clone()])
            .collect();
        let removed = blobs_before.difference(&still).count();
        assert_eq!(r.blobs_removed, removed, "{target:?}: blobs_removed");
        verify(m, &format!("{target:?}"));
    };

    verify(&m, "initial");
    assert_eq!(store.face_count().unwrap(), 56);
    assert_eq!(store.image_count().unwrap(), 53);

    // Subject: its faces and the subject row; images stay (some now without faces).
    let s0 = subjects[0].0;
    apply(
        &mut m,
        DeleteTarget::Subject(s0),
        &|s| s.subject.as_ref().is_some_and(|x| x.0 == s0),
        &|_, _| false,
        0,
        1,
    );
    assert_eq!(store.subject_by_label(main.id, "person-0").unwrap(), None);
    assert!(store.subject_faces(s0).unwrap().is_empty());
    // The identity's other (fresh) samples find none of the deleted faces.
    for _ in 0..5 {
        let probe = people.sample(0);
        let hits = search(store, &main, &probe, 20, None, &filter(), &known);
        assert!(hits.iter().all(|h| !m.deleted.contains(&h.face.id)));
        assert!(hits.iter().all(|h| known[&h.face.id].ident != 0));
    }
    // Again: nothing left to delete.
    let r = store.delete(&DeleteTarget::Subject(s0)).unwrap();
    assert_eq!(
        (r.faces, r.images, r.subjects, r.blobs_removed),
        (0, 0, 0, 0)
    );

    // Image: a two-face image.
    let pair = faces
        .iter()
        .find(|s| s.image_tag == "pair1")
        .unwrap()
        .clone();
    apply(
        &mut m,
        DeleteTarget::Image(pair.image_id),
        &|s| s.image_id == pair.image_id,
        &|id, _| id == pair.image_id,
        0,
        0,
    );
    assert_eq!(store.image_by_sha(main.id, &pair.image_sha).unwrap(), None);
    let r = store.delete(&DeleteTarget::Image(pair.image_id)).unwrap();
    assert_eq!((r.faces, r.images), (0, 0));

    // Source: its images (with faces or not) and faces, the source row.
    apply(
        &mut m,
        DeleteTarget::Source(beta.id),
        &|s| s.source_id == beta.id,
        &|_, i| i.source_id == beta.id,
        1,
        0,
    );
    let names: Vec<String> = store
        .sources(main.id)
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["alpha".to_string()]);
    let only_beta = Filter {
        sources: vec![beta.id],
        ..filter()
    };
    assert!(search(
        store,
        &main,
        &people.sample(3),
        10,
        None,
        &only_beta,
        &known
    )
    .is_empty());

    // Jurisdiction FR: FR and FR-* images in both collections.
    let fr = |j: &Option<String>| j.as_deref().is_some_and(|j| within(j, "FR"));
    assert!(m.images.values().filter(|i| fr(&i.jurisdiction)).count() > 5);
    assert!(m
        .images
        .values()
        .any(|i| fr(&i.jurisdiction) && i.collection_id == second.id));
    apply(
        &mut m,
        DeleteTarget::Jurisdiction("FR".into()),
        &|s| fr(&s.jurisdiction),
        &|_, i| fr(&i.jurisdiction),
        0,
        0,
    );
    for c in [&main, &second] {
        let only_fr = Filter {
            jurisdictions: vec!["FR".into()],
            ..filter()
        };
        assert!(search(store, c, &people.sample(11), 50, None, &only_fr, &known).is_empty());
    }

    // Faces: one face of a two-face image (and an id that never existed); the image stays.
    let pair2 = m
        .faces
        .values()
        .find(|s| s.image_tag == "pair2" && s.ident == 10)
        .unwrap()
        .clone();
    apply(
        &mut m,
        DeleteTarget::Faces(vec![pair2.face_id, i64::MAX / 2]),
        &|s| s.face_id == pair2.face_id,
        &|_, _| false,
        0,
        0,
    );
    assert!(store
        .image_by_sha(main.id, &pair2.image_sha)
        .unwrap()
        .is_some());

    // Deleted ids never come back: re-adding a deleted image is new, with new face ids.
    let max_deleted = *m.deleted.iter().max().unwrap();
    let max_live = *m.faces.keys().max().unwrap();
    let mut more = vec![plan("pair1", &alpha, vec![fp(1, None), fp(11, None)])];
    for i in 0..5 {
        more.push(plan(format!("late{i}"), &alpha, vec![fp(i, None)]));
    }
    let added = store_images(store, &main, &mut people, &more);
    for s in &added {
        assert!(
            !m.deleted.contains(&s.face_id),
            "deleted id {} reused",
            s.face_id
        );
        assert!(
            s.face_id > max_deleted && s.face_id > max_live,
            "new face id {} not above the deleted ({max_deleted}) and live ({max_live}) ids",
            s.face_id
        );
        m.faces.insert(s.face_id, s.clone());
        m.images.insert(
            s.image_id,
            Img {
                collection_id: s.collection_id,
                source_id: s.source_id,
                jurisdiction: None,
            },
        );
    }
    let hits = search(
        store,
        &main,
        &added[0].vector,
        1,
        None,
        &filter(),
        &by_id(&added),
    );
    assert_eq!(ids(&hits), vec![added[0].face_id]);
    verify(&m, "after re-adding");
}

/// 5. blobs: exact bytes; a crop shared by two faces outlives the first deletion.
fn suite_blobs(store: &dyn FaceStore, _ctx: &Ctx) {
    let coll = store.ensure_collection("blobs", PACK, DIM).unwrap();
    let src = source(store, &coll, "alpha", None);
    let mut people = People::new(5, 3);
    let shared = crop_bytes("shared crop");
    let original = b"GIF89a original image bytes".to_vec();
    let mut p1 = plan(
        "one",
        &src,
        vec![FacePlan {
            ident: 0,
            subject: None,
            crop: Some(shared.clone()),
        }],
    );
    p1.original = Some(original.clone());
    let p2 = plan(
        "two",
        &src,
        vec![FacePlan {
            ident: 1,
            subject: None,
            crop: Some(shared.clone()),
        }],
    );
    let p3 = plan("three", &src, vec![fp(2, None)]);
    let faces = store_images(store, &coll, &mut people, &[p1, p2, p3]);
    let (a, b, c) = (&faces[0], &faces[1], &faces[2]);
    let shared_sha = sha_hex(&shared);
    let original_sha = sha_hex(&original);
    assert_eq!(a.crop_sha, shared_sha);
    assert_eq!(b.crop_sha, shared_sha);
    assert_eq!(store.face(a.face_id).unwrap().unwrap().crop_sha, shared_sha);

    // Exact bytes back.
    assert_eq!(store.blob(&shared_sha).unwrap(), shared);
    assert_eq!(store.blob(&original_sha).unwrap(), original);
    for s in [a, b, c] {
        assert_eq!(store.blob(&s.thumb_sha).unwrap(), thumb_bytes(&s.face_tag));
    }
    assert_eq!(store.blob(&c.crop_sha).unwrap(), crop_bytes(&c.face_tag));
    let missing = sha_hex(b"never stored");
    assert!(no_panic("blob of a missing sha", || store.blob(&missing)).is_err());
    let all: HashSet<String> = [
        shared_sha.clone(),
        original_sha.clone(),
        a.thumb_sha.clone(),
        b.thumb_sha.clone(),
        c.crop_sha.clone(),
        c.thumb_sha.clone(),
    ]
    .into_iter()
    .collect();
    assert_eq!(blob_set(store), all);

    // Deleting the first image: its thumbnail and original go, the shared crop stays.
    let r = store.delete(&DeleteTarget::Image(a.image_id)).unwrap();
    assert_eq!((r.faces, r.images), (1, 1));
    assert_eq!(r.blobs_removed, 2, "thumbnail and original");
    let now = blob_set(store);
    assert!(
        now.contains(&shared_sha),
        "shared crop still used by face {}",
        b.face_id
    );
    assert!(!now.contains(&a.thumb_sha));
    assert!(!now.contains(&original_sha));
    assert_eq!(store.blob(&shared_sha).unwrap(), shared);
    assert!(store.blob(&a.thumb_sha).is_err());
    assert!(store.blob(&original_sha).is_err());

    // Deleting the second: the shared crop goes too.
    let r = store.delete(&DeleteTarget::Faces(vec![b.face_id])).unwrap();
    assert_eq!((r.faces, r.images), (1, 0));
    assert_eq!(r.blobs_removed, 2, "shared crop and thumbnail");
    let now = blob_set(store);
    assert!(!now.contains(&shared_sha));
    assert!(!now.contains(&b.thumb_sha));
    assert!(store.blob(&shared_sha).is_err());
    assert_eq!(
        now,
        [c.crop_sha.clone(), c.thumb_sha.clone()]
            .into_iter()
            .collect()
    );

    // The shared bytes come back with a new face: stored again.
    let p4 = plan(
        "four",
        &src,
        vec![FacePlan {
            ident: 0,
            subject: None,
            crop: Some(shared.clone()),
        }],
    );
    store_images(store, &coll, &mut people, &[p4]);
    assert_eq!(store.blob(&shared_sha).unwrap(), shared);
}

/// 6. suppressions by pack.
fn suite_suppressions(store: &dyn FaceStore, _ctx: &Ctx) {
    let mut people = People::new(6, 5);
    let entries = |n: usize, people: &mut People| -> Vec<NewSuppression> {
        (0..n)
            .map(|i| NewSuppression {
                vector: people.sample(i),
                z_median: 0.1 * i as f32,
                z_mad: 0.05 + i as f32,
                origin: if i % 2 == 0 { "selfie" } else { "matched_face" }.into(),
            })
            .collect()
    };
    assert!(store.suppressions("p1").unwrap().is_empty());
    assert_eq!(
        store.suppression_generation().unwrap(),
        0,
        "no suppressions yet"
    );
    let e1 = entries(3, &mut people);
    let e2 = entries(2, &mut people);
    assert_eq!(store.add_suppressions("p1", "req-1", &e1).unwrap(), 3);
    let g1 = store.suppression_generation().unwrap();
    assert!(g1 > 0, "the generation grows with the list");
    assert_eq!(store.add_suppressions("p2", "req-2", &e2).unwrap(), 2);
    let g2 = store.suppression_generation().unwrap();
    assert!(g2 > g1, "any pack's addition grows it: {g1} then {g2}");
    let e3 = entries(1, &mut people);
    assert_eq!(store.add_suppressions("p1", "req-3", &e3).unwrap(), 1);
    assert!(store.suppression_generation().unwrap() > g2);

    let got = store.suppressions("p1").unwrap();
    assert_eq!(got.len(), 4);
    let want: Vec<(&NewSuppression, &str)> = e1
        .iter()
        .map(|e| (e, "req-1"))
        .chain(e3.iter().map(|e| (e, "req-3")))
        .collect();
    for (s, (e, req)) in got.iter().zip(&want) {
        assert_eq!(s.pack, "p1");
        assert_eq!(s.vector, e.vector, "vector round trip");
        assert_eq!(s.z_median, e.z_median);
        assert_eq!(s.z_mad, e.z_mad);
        assert_eq!(s.origin, e.origin);
        assert_eq!(s.request_id, *req);
        assert!(s.created_at > 0);
    }
    let ids: HashSet<i64> = got.iter().map(|s| s.id).collect();
    assert_eq!(ids.len(), 4);
    let got2 = store.suppressions("p2").unwrap();
    assert_eq!(got2.len(), 2);
    assert_eq!(
        got2.iter().map(|s| s.vector.clone()).collect::<Vec<_>>(),
        e2.iter().map(|e| e.vector.clone()).collect::<Vec<_>>()
    );
    assert!(got2
        .iter()
        .all(|s| s.pack == "p2" && s.request_id == "req-2"));
    assert!(store.suppressions("p3").unwrap().is_empty());
    let g = store.suppression_generation().unwrap();
    assert_eq!(store.add_suppressions("p3", "req-4", &[]).unwrap(), 0);
    assert!(store.suppressions("p3").unwrap().is_empty());
    assert_eq!(store.suppression_generation().unwrap(), g, "nothing added");
}

/// An opt-out's window: faces stored after its first suppression entries (above their mark)
/// and matched by its later ones are found by `late_matches`; faces at or below the mark,
/// faces of other people and faces of another pack are not.
fn suite_late_matches(store: &dyn FaceStore, _ctx: &Ctx) {
    use visage_engine::optout::{late_matches, MatchRule, SuppressionList};
    let coll = store.ensure_collection("late", PACK, DIM).unwrap();
    let other_pack = store
        .ensure_collection("late-other", "other@1", DIM)
        .unwrap();
    let src = source(store, &coll, "s", None);
    let src2 = source(store, &other_pack, "s2", None);
    let mut people = People::new(21, 3);
    let add = |people: &mut People, tag: &str, who: &[usize]| -> Vec<i64> {
        let faces = who
            .iter()
            .enumerate()
            .map(|(k, w)| new_face(people.sample(*w), &format!("{tag}-{k}"), None))
            .collect();
        store
            .add_images(&[new_image(&coll, &src, tag, faces)])
            .unwrap()[0]
            .face_ids
            .clone()
    };
    let before = add(&mut people, "before", &[0, 1]);
    let entry = |v: Vec<f32>, origin: &str| NewSuppression {
        vector: v,
        z_median: 0.0,
        z_mad: 0.0,
        origin: origin.into(),
    };
    let selfie = entry(people.sample(2), "selfie");
    let (n, mark) = store
        .add_suppressions_marked(PACK, "req-late", &[selfie])
        .unwrap();
    assert_eq!(n, 1);
    assert!(
        before.iter().all(|id| *id <= mark),
        "faces stored before the entries are at or below the mark {mark}: {before:?}"
    );
    // Stored while the opt-out searched: person 0 and person 1, above the mark.
    let during = add(&mut people, "during", &[0, 1]);
    assert!(during.iter().all(|id| *id > mark), "{during:?} vs {mark}");
    store
        .add_images(&[new_image(
            &other_pack,
            &src2,
            "other-pack",
            vec![new_face(people.sample(0), "other-pack-0", None)],
        )])
        .unwrap();
    // The opt-out's matched-face entries: person 0's stored face.
    let v0 = store.face_vector(before[0]).unwrap().unwrap();
    store
        .add_suppressions(PACK, "req-late", &[entry(v0, "matched_face")])
        .unwrap();
    let rule = MatchRule {
        min_score: 0.6,
        min_z: 0.0,
    };
    let list = SuppressionList::from_store_with(store, PACK, rule).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        late_matches(store, &list, PACK, mark).unwrap(),
        vec![during[0]],
        "only person 0's face stored in the window"
    );
    // Paging and the pack: one at a time, this pack only.
    let page = store.face_vectors_after(PACK, mark, 1).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].0, during[0]);
    let rest = store.face_vectors_after(PACK, page[0].0, 10).unwrap();
    assert_eq!(
        rest.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![during[1]]
    );
    assert_eq!(
        store.face_vectors_after("other@1", mark, 10).unwrap().len(),
        1
    );
    assert!(store
        .face_vectors_after(PACK, i64::MAX - 1, 10)
        .unwrap()
        .is_empty());
}

/// What an opt-out reads besides search: an even sample of a collection's vectors and the
/// faces an image has left.
fn suite_optout_reads(store: &dyn FaceStore, _ctx: &Ctx) {
    let coll = store.ensure_collection("sampled", PACK, DIM).unwrap();
    let other = store.ensure_collection("other", PACK, DIM).unwrap();
    let src = source(store, &coll, "s", None);
    let src2 = source(store, &other, "s2", None);
    let mut people = People::new(11, 40);
    let mut stored: Vec<(i64, Vec<f32>)> = Vec::new();
    let mut images = Vec::new();
    for i in 0..30 {
        let faces: Vec<NewFace> = (0..3)
            .map(|k| new_face(people.sample(i), &format!("samp-{i}-{k}"), None))
            .collect();
        let vecs: Vec<Vec<f32>> = faces.iter().map(|f| f.vector.clone()).collect();
        let out = store
            .add_images(&[new_image(&coll, &src, &format!("samp-{i}"), faces)])
            .unwrap();
        images.push((out[0].image_id, out[0].face_ids.clone()));
        stored.extend(out[0].face_ids.iter().copied().zip(vecs));
    }
    store
        .add_images(&[new_image(
            &other,
            &src2,
            "elsewhere",
            vec![new_face(people.sample(39), "elsewhere-0", None)],
        )])
        .unwrap();
    stored.sort_by_key(|(id, _)| *id);
    // 90 faces: a sample of 30 takes every third by id, a sample of 1000 takes them all.
    let s30 = store.sample_vectors(coll.id, 30).unwrap();
    let want30: Vec<Vec<f32>> = stored.iter().step_by(3).map(|(_, v)| v.clone()).collect();
    assert_eq!(s30, want30, "every third vector by face id");
    let all = store.sample_vectors(coll.id, 1000).unwrap();
    assert_eq!(all.len(), 90, "only this collection's faces");
    assert_eq!(store.sample_vectors(other.id, 10).unwrap().len(), 1);
    let empty = store.ensure_collection("empty", PACK, DIM).unwrap();
    assert!(store.sample_vectors(empty.id, 10).unwrap().is_empty());

    let (img, faces) = &images[4];
    assert_eq!(store.image_face_count(*img).unwrap(), 3);
    store
        .delete(&DeleteTarget::Faces(vec![faces[0], faces[2]]))
        .unwrap();
    assert_eq!(store.image_face_count(*img).unwrap(), 1);
    store.delete(&DeleteTarget::Image(*img)).unwrap();
    assert_eq!(store.image_face_count(*img).unwrap(), 0);
    assert_eq!(store.sample_vectors(coll.id, 1000).unwrap().len(), 87);
}

/// A checked write (`ClusterStore::add_image_checked`, the worker's) against a suppression
/// list that grew since it was read stores nothing: no row, no point, no blob. And an
/// opt-out's addition in flight holds checked writes until it commits, which they then see.
fn suite_checked_writes(store: &dyn FaceStore, ctx: &Ctx) {
    let cfg = ctx.cluster.as_ref().expect("cluster backends only");
    let cs = ClusterStore::open(cfg).unwrap();
    let coll = cs.ensure_collection("checked", PACK, DIM).unwrap();
    let src = source(&cs, &coll, "s", None);
    let mut people = People::new(12, 4);
    let blobs_before = blob_set(store);
    let g0 = cs.suppression_generation().unwrap();
    let supp = |people: &mut People| NewSuppression {
        vector: people.sample(3),
        z_median: 0.0,
        z_mad: 0.0,
        origin: "selfie".into(),
    };
    cs.add_suppressions(PACK, "req-a", &[supp(&mut people)])
        .unwrap();
    let stale = new_image(
        &coll,
        &src,
        "stale",
        vec![new_face(people.sample(0), "stale-0", None)],
    );
    assert!(
        cs.add_image_checked(&stale, g0).unwrap().is_none(),
        "suppressions were added since generation {g0}"
    );
    assert_eq!(cs.image_by_sha(coll.id, &stale.sha256).unwrap(), None);
    assert_eq!(cs.face_count().unwrap(), 0);
    assert_eq!(
        cs.indexed_faces(coll.id).unwrap(),
        0,
        "its points were removed"
    );
    if let Some(ids) = ctx.qdrant_ids(coll.id) {
        assert!(ids.is_empty(), "Qdrant kept points {ids:?}");
    }
    assert_eq!(
        blob_set(store),
        blobs_before,
        "its crop and thumbnail were removed"
    );
    let g1 = cs.suppression_generation().unwrap();
    let ok = cs
        .add_image_checked(&stale, g1)
        .unwrap()
        .expect("current list");
    assert_eq!(ok.face_ids.len(), 1);
    assert!(!ok.duplicate);

    // An addition in flight: its transaction holds the lock, a checked write waits for it.
    let pool = visage_cluster::pg::Pool::new(&cfg.postgres_url).unwrap();
    let mut conn = pool.get().unwrap();
    let mut tx = conn.transaction().unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&visage_cluster::store::SUPPRESSION_LOCK],
    )
    .unwrap();
    let g2 = cs.suppression_generation().unwrap();
    let waiting = new_image(
        &coll,
        &src,
        "waiting",
        vec![new_face(people.sample(1), "waiting-0", None)],
    );
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let r = cs.add_image_checked(&waiting, g2).unwrap();
            done_tx.send(r.is_some()).unwrap();
        });
        assert!(
            done_rx
                .recv_timeout(std::time::Duration::from_millis(1500))
                .is_err(),
            "a checked write went ahead while suppressions were being added"
        );
        let v = visage_cluster::store::vector_bytes(&people.sample(2));
        tx.execute(
            "INSERT INTO suppression (pack, vector, z_median, z_mad, request_id, origin, \
             created_at) VALUES ($1, $2, 0, 0, 'req-b', 'selfie', 0)",
            &[&PACK, &v],
        )
        .unwrap();
        tx.commit().unwrap();
        let stored = done_rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the write finishes once the addition commits");
        assert!(
            !stored,
            "the write saw the new suppression and stored nothing"
        );
    });
    assert_eq!(cs.image_by_sha(coll.id, &waiting.sha256).unwrap(), None);
    assert_eq!(cs.face_count().unwrap(), 1);
}

/// 7. collections are pinned to their pack and dimension; wrong dimensions are errors.
fn suite_pinning(store: &dyn FaceStore, _ctx: &Ctx) {
    let c = store.ensure_collection("pinned", PACK, DIM).unwrap();
    assert_eq!(store.ensure_collection("pinned", PACK, DIM).unwrap(), c);
    assert!(no_panic("ensure_collection, other dim", || store
        .ensure_collection("pinned", PACK, 64))
    .is_err());
    assert!(
        no_panic("ensure_collection, other pack", || store.ensure_collection(
            "pinned",
            "other-pack",
            DIM
        ))
        .is_err()
    );
    assert!(no_panic("ensure_collection, empty name", || store
        .ensure_collection("  ", PACK, DIM))
    .is_err());
    assert_eq!(store.collection("pinned").unwrap(), Some(c.clone()));
    assert_eq!(store.collection("absent").unwrap(), None);
    let small = store.ensure_collection("small", "small-pack", 64).unwrap();
    assert_eq!(store.collections().unwrap(), vec![c.clone(), small.clone()]);

    let src = source(store, &c, "alpha", None);
    let mut people = People::new(7, 3);
    let faces = store_images(
        store,
        &c,
        &mut people,
        &[plan("ok", &src, vec![fp(0, None)])],
    );

    // Probes of the wrong dimension: errors.
    let short = vec![0.125f32; 64];
    let r = no_panic("search with a 64-d probe", || {
        store.search(&SearchQuery {
            collection_id: c.id,
            vector: &short,
            k: 5,
            threshold: None,
            filter: filter(),
        })
    });
    assert!(r.is_err(), "64-d probe in a {DIM}-d collection");
    let long = normalised(vec![1.0f32; DIM + 1]);
    let r = no_panic("search with a 129-d probe", || {
        store.search(&SearchQuery {
            collection_id: c.id,
            vector: &long,
            k: 5,
            threshold: None,
            filter: Filter {
                sources: vec![src.id],
                ..filter()
            },
        })
    });
    assert!(r.is_err(), "129-d probe (filtered) in a {DIM}-d collection");
    // An unknown collection: error.
    let probe = people.sample(0);
    let r = no_panic("search in an unknown collection", || {
        store.search(&SearchQuery {
            collection_id: small.id + 1000,
            vector: &probe,
            k: 5,
            threshold: None,
            filter: filter(),
        })
    });
    assert!(r.is_err(), "search in an unknown collection");

    // A face of the wrong dimension: error, nothing written.
    let before = (
        store.face_count().unwrap(),
        store.image_count().unwrap(),
        blob_set(store),
    );
    let bad = new_image(&c, &src, "bad", vec![new_face(vec![0.1; 64], "bad", None)]);
    let r = no_panic("add_images with a 64-d face", || store.add_images(&[bad]));
    assert!(r.is_err(), "64-d face in a {DIM}-d collection");
    let bad = new_image(
        &c,
        &src,
        "bad-coll",
        vec![new_face(people.sample(1), "bad-coll", None)],
    );
    let mut bad = bad;
    bad.collection_id = small.id + 1000;
    let r = no_panic("add_images into an unknown collection", || {
        store.add_images(&[bad])
    });
    assert!(r.is_err(), "unknown collection");
    let after = (
        store.face_count().unwrap(),
        store.image_count().unwrap(),
        blob_set(store),
    );
    assert_eq!(after, before, "a rejected image writes nothing");
    assert_eq!(store.image_by_sha(c.id, &image_sha("bad")).unwrap(), None);

    // The right dimension still works.
    let hits = search(
        store,
        &c,
        &faces[0].vector,
        5,
        None,
        &filter(),
        &by_id(&faces),
    );
    assert_eq!(ids(&hits), vec![faces[0].face_id]);
    // The 64-d collection takes 64-d faces.
    let s2 = source(store, &small, "alpha", None);
    let v = normalised((0..64).map(|i| (i as f32).sin()).collect());
    let out = store
        .add_images(&[new_image(
            &small,
            &s2,
            "small-ok",
            vec![new_face(v.clone(), "small-ok", None)],
        )])
        .unwrap();
    let hits = store
        .search(&SearchQuery {
            collection_id: small.id,
            vector: &v,
            k: 3,
            threshold: None,
            filter: filter(),
        })
        .unwrap();
    assert_eq!(ids(&hits), out[0].face_ids);
}

/// 8. subjects: idempotent, per collection, with their faces.
fn suite_subjects(store: &dyn FaceStore, _ctx: &Ctx) {
    let c = store.ensure_collection("subj", PACK, DIM).unwrap();
    let d = store.ensure_collection("subj2", PACK, DIM).unwrap();
    let alice = store.ensure_subject(c.id, "alice").unwrap();
    assert_eq!(
        store.ensure_subject(c.id, "alice").unwrap(),
        alice,
        "idempotent"
    );
    let bob = store.ensure_subject(c.id, "bob").unwrap();
    let carol = store.ensure_subject(c.id, "carol").unwrap();
    assert_ne!(alice, bob);
    let alice_d = store.ensure_subject(d.id, "alice").unwrap();
    assert_ne!(alice, alice_d, "subjects belong to their collection");
    assert_eq!(store.subject_by_label(c.id, "alice").unwrap(), Some(alice));
    assert_eq!(
        store.subject_by_label(d.id, "alice").unwrap(),
        Some(alice_d)
    );
    assert_eq!(store.subject_by_label(c.id, "dave").unwrap(), None);
    assert_eq!(store.subject_by_label(d.id, "bob").unwrap(), None);

    let src = source(store, &c, "alpha", None);
    let src_d = source(store, &d, "alpha", None);
    let mut people = People::new(8, 4);
    let a = (alice, "alice".to_string());
    let b = (bob, "bob".to_string());
    let plans = vec![
        plan("a1", &src, vec![fp(0, Some(a.clone()))]),
        plan(
            "a2",
            &src,
            vec![fp(0, Some(a.clone())), fp(1, Some(b.clone()))],
        ),
        plan("a3", &src, vec![fp(2, None), fp(0, Some(a.clone()))]),
        plan("b1", &src, vec![fp(1, Some(b.clone()))]),
        plan("x1", &src, vec![fp(3, None)]),
    ];
    let faces = store_images(store, &c, &mut people, &plans);
    let faces_d = store_images(
        store,
        &d,
        &mut people,
        &[plan(
            "da",
            &src_d,
            vec![fp(0, Some((alice_d, "alice".into())))],
        )],
    );
    let of = |id: i64| -> Vec<i64> {
        let mut v: Vec<i64> = faces
            .iter()
            .chain(&faces_d)
            .filter(|s| s.subject.as_ref().is_some_and(|x| x.0 == id))
            .map(|s| s.face_id)
            .collect();
        v.sort();
        v
    };
    let sorted = |mut v: Vec<i64>| {
        v.sort();
        v
    };
    assert_eq!(of(alice).len(), 3);
    assert_eq!(sorted(store.subject_faces(alice).unwrap()), of(alice));
    assert_eq!(sorted(store.subject_faces(bob).unwrap()), of(bob));
    assert_eq!(sorted(store.subject_faces(alice_d).unwrap()), of(alice_d));
    assert!(store.subject_faces(carol).unwrap().is_empty());
    assert!(store.subject_faces(carol + 1000).unwrap().is_empty());
    // The subject shows on the faces and filters by it.
    let known = by_id(&faces);
    for id in of(alice) {
        let r = store.face(id).unwrap().unwrap();
        let sr = r.subject.unwrap();
        assert_eq!((sr.id, sr.label.as_str()), (alice, "alice"));
    }
    let hits = search(
        store,
        &c,
        &people.sample(0),
        10,
        None,
        &Filter {
            subjects: vec![alice],
            ..filter()
        },
        &known,
    );
    assert_eq!(sorted(ids(&hits)), of(alice));
    // Deleting a face takes it off the subject's list.
    let first = of(alice)[0];
    store.delete(&DeleteTarget::Faces(vec![first])).unwrap();
    assert_eq!(
        sorted(store.subject_faces(alice).unwrap()),
        of(alice)[1..].to_vec()
    );
    assert_eq!(store.ensure_subject(c.id, "alice").unwrap(), alice);
}

/// The catalogue (`Catalog`: the catalogue endpoints' store): collections created and
/// described, subjects created, listed, renamed and deleted, faces assigned and unassigned,
/// faces in hidden jurisdictions neither counted nor assignable. Subject filters follow every
/// change at once, in this store and (cluster backends) in a second one on the same cluster
/// whose vector mirror was loaded before the change.
fn suite_catalogue(store: &dyn Catalog, ctx: &Ctx) {
    let c = store.create_collection("cat", PACK, DIM).unwrap();
    assert!(matches!(
        store.create_collection("cat", PACK, DIM),
        Err(CatalogError::Conflict(_))
    ));
    for bad in ["", "../x", "a b", "-x"] {
        assert!(
            matches!(
                store.create_collection(bad, PACK, DIM),
                Err(CatalogError::Invalid(_))
            ),
            "collection name {bad:?} accepted"
        );
    }
    let other = store.create_collection("cat-other", PACK, DIM).unwrap();
    let de = source(store, &c, "de-photos", None);
    let fr = source(store, &c, "fr-photos", None);
    let src_o = source(store, &other, "o", None);
    let mut people = People::new(21, 4);
    let mut plans = vec![
        plan("p1", &de, vec![fp(0, None)]),
        plan("p2", &de, vec![fp(0, None), fp(1, None)]),
        plan("p3", &fr, vec![fp(0, None)]),
        plan("p4", &fr, vec![fp(2, None)]),
    ];
    plans[0].jurisdiction = Some("DE".into());
    plans[1].jurisdiction = Some("DE-BY".into());
    plans[2].jurisdiction = Some("FR".into());
    plans[3].jurisdiction = Some("FR".into());
    let faces = store_images(store, &c, &mut people, &plans);
    let faces_o = store_images(
        store,
        &other,
        &mut people,
        &[plan("o1", &src_o, vec![fp(0, None)])],
    );
    let known = by_id(&faces);
    let id_of = |tag: &str| {
        faces
            .iter()
            .find(|s| s.face_tag == format!("cat/{tag}"))
            .unwrap_or_else(|| panic!("no face {tag}"))
            .face_id
    };
    let (p1, p2a, p3, p4) = (id_of("p1/0"), id_of("p2/0"), id_of("p3/0"), id_of("p4/0"));
    // A second store on the same cluster ("another API process"), its mirror loaded now.
    let second = ctx
        .cluster
        .as_ref()
        .map(|cfg| ClusterStore::open(cfg).expect("a second store on the cluster"));
    let probe = people.sample(0);
    let by_subject = |st: &dyn FaceStore, subject: i64| -> Vec<i64> {
        let f = Filter {
            subjects: vec![subject],
            ..filter()
        };
        let mut v = ids(&search(st, &c, &probe, 50, None, &f, &known));
        v.sort();
        v
    };
    let everyone =
        |st: &dyn FaceStore| ids(&search(st, &c, &probe, 50, None, &filter(), &known)).len();
    assert_eq!(everyone(store), 5);
    if let Some(s2) = &second {
        assert_eq!(everyone(s2), 5);
    }

    // Subjects: rules, then assignment.
    let alice = store
        .create_subject(c.id, "  alice ", &serde_json::json!({"case": "2026-7"}))
        .unwrap();
    assert_eq!(alice.label, "alice", "labels are trimmed");
    assert_eq!(alice.attributes["case"], "2026-7");
    assert_eq!((alice.faces, alice.collection.as_str()), (0, "cat"));
    assert!(matches!(
        store.create_subject(c.id, "alice", &serde_json::json!({})),
        Err(CatalogError::Conflict(_))
    ));
    assert!(matches!(
        store.create_subject(c.id, " ", &serde_json::json!({})),
        Err(CatalogError::Invalid(_))
    ));
    assert!(matches!(
        store.create_subject(c.id, "x", &serde_json::json!([1])),
        Err(CatalogError::Invalid(_))
    ));
    assert!(matches!(
        store.create_subject(c.id + 1000, "x", &serde_json::json!({})),
        Err(CatalogError::NotFound(_))
    ));
    let r = store.assign_faces(alice.id, &[p2a, p1, p1], &[]).unwrap();
    assert_eq!(
        (r.assigned, r.moved, r.unchanged, r.face_ids.clone()),
        (2, 0, 0, {
            let mut v = vec![p1, p2a];
            v.sort();
            v
        })
    );
    let mut want_alice = vec![p1, p2a];
    want_alice.sort();
    assert_eq!(by_subject(store, alice.id), want_alice);
    if let Some(s2) = &second {
        assert_eq!(by_subject(s2, alice.id), want_alice, "second process");
    }
    // All or none: a face of another collection, or a missing one, changes nothing.
    assert!(matches!(
        store.assign_faces(alice.id, &[p3, faces_o[0].face_id], &[]),
        Err(CatalogError::Invalid(_))
    ));
    assert!(matches!(
        store.assign_faces(alice.id, &[p3, p4 + 100_000], &[]),
        Err(CatalogError::NotFound(_))
    ));
    assert!(matches!(
        store.assign_faces(alice.id, &[], &[]),
        Err(CatalogError::Invalid(_))
    ));
    assert_eq!(by_subject(store, alice.id), want_alice);
    // Hidden jurisdictions (DE and its subdivisions): not counted, listed nor assignable.
    let hide = vec!["DE".to_string()];
    assert_eq!(store.subject(alice.id, &[]).unwrap().faces, 2);
    assert_eq!(store.subject(alice.id, &hide).unwrap().faces, 0);
    assert!(store.subject_face_ids(alice.id, &hide).unwrap().is_empty());
    assert_eq!(store.subject_face_ids(alice.id, &[]).unwrap(), want_alice);
    let bob = store
        .create_subject(c.id, "bob", &serde_json::json!({}))
        .unwrap();
    assert!(matches!(
        store.assign_faces(bob.id, &[p2a], &hide),
        Err(CatalogError::NotFound(_))
    ));
    // Moving a face from alice to bob.
    let r = store.assign_faces(bob.id, &[p2a, p3, p4], &[]).unwrap();
    assert_eq!((r.assigned, r.moved, r.unchanged), (3, 1, 0));
    let r = store.assign_faces(bob.id, &[p3], &[]).unwrap();
    assert_eq!((r.assigned, r.moved, r.unchanged), (0, 0, 1));
    let mut want_bob = vec![p2a, p3, p4];
    want_bob.sort();
    assert_eq!(by_subject(store, alice.id), vec![p1]);
    assert_eq!(by_subject(store, bob.id), want_bob);
    if let Some(s2) = &second {
        assert_eq!(by_subject(s2, alice.id), vec![p1], "second process");
        assert_eq!(by_subject(s2, bob.id), want_bob, "second process");
    }
    let rec = store.face(p2a).unwrap().unwrap().subject.unwrap();
    assert_eq!((rec.id, rec.label.as_str()), (bob.id, "bob"));
    // Listing, a page at a time.
    let page = store.list_subjects(c.id, 0, 1, &[]).unwrap();
    assert_eq!(
        page.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![alice.id]
    );
    let page = store.list_subjects(c.id, alice.id, 10, &hide).unwrap();
    assert_eq!(
        page.iter().map(|s| (s.id, s.faces)).collect::<Vec<_>>(),
        vec![(bob.id, 2)]
    );
    assert!(store
        .list_subjects(other.id, 0, 10, &[])
        .unwrap()
        .is_empty());
    // Renaming: a taken label is a conflict; attributes are replaced.
    assert!(matches!(
        store.update_subject(bob.id, Some("alice"), None, &[]),
        Err(CatalogError::Conflict(_))
    ));
    let robert = store
        .update_subject(
            bob.id,
            Some("robert"),
            Some(&serde_json::json!({"n": 2})),
            &[],
        )
        .unwrap();
    assert_eq!((robert.label.as_str(), robert.faces), ("robert", 3));
    assert_eq!(robert.attributes, serde_json::json!({"n": 2}));
    assert!(matches!(
        store.update_subject(bob.id + 1000, Some("x"), None, &[]),
        Err(CatalogError::NotFound(_))
    ));
    // Unassigning: only the subject's own faces.
    assert!(matches!(
        store.unassign_face(bob.id, p1, &[]),
        Err(CatalogError::NotFound(_))
    ));
    store.unassign_face(bob.id, p4, &[]).unwrap();
    let mut want_bob = vec![p2a, p3];
    want_bob.sort();
    assert_eq!(by_subject(store, bob.id), want_bob);
    assert!(store.face(p4).unwrap().unwrap().subject.is_none());
    // Deleting a subject keeps its faces, unassigned.
    let gone = store.delete_subject(alice.id).unwrap();
    assert_eq!(
        (gone.faces_unassigned, gone.face_ids.clone()),
        (1, vec![p1])
    );
    assert!(matches!(
        store.subject(alice.id, &[]),
        Err(CatalogError::NotFound(_))
    ));
    assert!(matches!(
        store.delete_subject(alice.id),
        Err(CatalogError::NotFound(_))
    ));
    assert!(store.face(p1).unwrap().unwrap().subject.is_none());
    assert!(by_subject(store, alice.id).is_empty());
    if let Some(s2) = &second {
        assert!(by_subject(s2, alice.id).is_empty(), "second process");
        assert_eq!(by_subject(s2, bob.id), want_bob, "second process");
    }
    assert_eq!(everyone(store), 5, "no face lost by subject changes");
    // The description: counts per collection and source.
    let d = store.describe_collection("cat").unwrap();
    assert_eq!((d.faces, d.images, d.subjects), (5, 4, 1));
    let per: Vec<(String, u64, u64)> = d
        .sources
        .iter()
        .map(|s| (s.source.name.clone(), s.images, s.faces))
        .collect();
    assert_eq!(
        per,
        vec![("de-photos".into(), 2, 3), ("fr-photos".into(), 2, 2)]
    );
    assert!(matches!(
        store.describe_collection("nope"),
        Err(CatalogError::NotFound(_))
    ));
    // The vector index has no change left to apply.
    if let Some(s2) = &second {
        let check = s2.check(false).expect("cluster check");
        assert_eq!(
            check.inconsistencies.len(),
            0,
            "{:?}",
            check.inconsistencies
        );
    }
}

/// Image jurisdiction codes are normalised on write as in filters and deletions: a lower-case
/// code is stored upper-case (so filters and `Delete Jurisdiction` find it), a malformed one is
/// rejected. Every check runs; the failure lists all that did not hold.
fn suite_jurisdiction_codes(store: &dyn FaceStore, _ctx: &Ctx) {
    let mut problems: Vec<String> = Vec::new();
    let c = store.ensure_collection("codes", PACK, DIM).unwrap();
    let src = source(store, &c, "alpha", Some("us-il"));
    if src.jurisdiction.as_deref() != Some("US-IL") {
        problems.push(format!(
            "source code stored as {:?}, not US-IL",
            src.jurisdiction
        ));
    }
    let mut people = People::new(9, 3);
    let mut lower = new_image(
        &c,
        &src,
        "lower",
        vec![new_face(people.sample(0), "lower", None)],
    );
    lower.jurisdiction = Some("us-il".into());
    let out = store.add_images(&[lower]).unwrap();
    let id = out[0].face_ids[0];
    let rec = store.face(id).unwrap().unwrap();
    if rec.image.jurisdiction.as_deref() != Some("US-IL") {
        problems.push(format!(
            "image jurisdiction \"us-il\" stored as {:?}, not \"US-IL\"",
            rec.image.jurisdiction
        ));
    }
    let centre0 = people.centres[0].clone();
    let in_us = |store: &dyn FaceStore| {
        let hits = store
            .search(&SearchQuery {
                collection_id: c.id,
                vector: &centre0,
                k: 5,
                threshold: None,
                filter: Filter {
                    jurisdictions: vec!["US".into()],
                    ..filter()
                },
            })
            .unwrap();
        ids(&hits)
    };
    if in_us(store) != vec![id] {
        problems.push(format!(
            "filter jurisdictions=[US] does not find the \"us-il\" image's face {id} (got {:?})",
            in_us(store)
        ));
    }

    let before = (
        store.face_count().unwrap(),
        store.image_count().unwrap(),
        blob_set(store),
    );
    let mut bad = new_image(
        &c,
        &src,
        "usx",
        vec![new_face(people.sample(1), "usx", None)],
    );
    bad.jurisdiction = Some("USX".into());
    let r = no_panic("add_images with jurisdiction USX", || {
        store.add_images(&[bad])
    });
    match r {
        Err(_) => {
            let after = (
                store.face_count().unwrap(),
                store.image_count().unwrap(),
                blob_set(store),
            );
            if after != before {
                problems.push("a rejected image (USX) wrote something".into());
            }
        }
        Ok(o) => {
            problems.push("a malformed image jurisdiction (USX) was accepted".into());
            // Accepted: at least it must stay outside US.
            if o[0].face_ids.iter().any(|f| in_us(store).contains(f)) {
                problems.push("the USX image's face is inside the US filter".into());
            }
        }
    }
    // Erasure by jurisdiction must take the "us-il" image.
    let r = store
        .delete(&DeleteTarget::Jurisdiction("US".into()))
        .unwrap();
    if !r.face_ids.contains(&id) || store.face(id).unwrap().is_some() {
        problems.push(format!(
            "Delete Jurisdiction(US) left the \"us-il\" image's face {id} in place (deleted {:?})",
            r.face_ids
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Non-finite vector components are rejected on write (they would poison every ranking).
/// Every check runs; the failure lists all that did not hold.
fn suite_non_finite_vectors(store: &dyn FaceStore, _ctx: &Ctx) {
    let mut problems: Vec<String> = Vec::new();
    let c = store.ensure_collection("finite", PACK, DIM).unwrap();
    let src = source(store, &c, "alpha", None);
    let mut people = People::new(10, 2);
    let good = store_images(
        store,
        &c,
        &mut people,
        &[
            plan("good", &src, vec![fp(0, None)]),
            plan("other", &src, vec![fp(1, None)]),
        ],
    );
    let before = (
        store.face_count().unwrap(),
        store.image_count().unwrap(),
        blob_set(store),
    );
    for (tag, x) in [("nan", f32::NAN), ("inf", f32::INFINITY)] {
        let mut v = people.sample(1);
        v[7] = x;
        let img = new_image(&c, &src, tag, vec![new_face(v, tag, None)]);
        if let Ok(o) = no_panic("add_images with a non-finite vector", || {
            store.add_images(&[img])
        }) {
            problems.push(format!(
                "a vector holding {x} was accepted (face ids {:?})",
                o[0].face_ids
            ));
        }
    }
    let after = (
        store.face_count().unwrap(),
        store.image_count().unwrap(),
        blob_set(store),
    );
    if after != before {
        problems.push(format!(
            "rejected images wrote something: (faces, images) {:?} -> {:?}",
            (before.0, before.1),
            (after.0, after.1)
        ));
    }
    // Whatever was stored, searches must still rank the real faces correctly.
    for s in &good {
        match store.search(&SearchQuery {
            collection_id: c.id,
            vector: &s.vector,
            k: 5,
            threshold: None,
            filter: filter(),
        }) {
            Ok(hits) => {
                if hits.first().map(|h| h.face.id) != Some(s.face_id) {
                    problems.push(format!(
                        "probe = face {}'s own vector: top hit is {:?} (scores {:?})",
                        s.face_id,
                        hits.first().map(|h| h.face.id),
                        hits.iter().map(|h| h.score).collect::<Vec<_>>()
                    ));
                }
                if hits.iter().any(|h| !h.score.is_finite()) {
                    problems.push(format!(
                        "non-finite scores returned: {:?}",
                        hits.iter().map(|h| h.score).collect::<Vec<_>>()
                    ));
                }
            }
            Err(e) => problems.push(format!("search fails after the attempt: {e:#}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Two cluster stores ("processes") on one configuration add the same 50 images at once.
fn suite_concurrent_adds(store: &dyn FaceStore, ctx: &Ctx) {
    let cfg = ctx.cluster.as_ref().expect("cluster backends only");
    let other = ClusterStore::open(cfg).expect("opening a second store on the same config");
    let stores: [&dyn FaceStore; 2] = [store, &other];

    // Set-up races: both create the same collection, source and subject.
    let barrier = Barrier::new(2);
    let made: Vec<(Collection, Source, i64)> = std::thread::scope(|s| {
        let hs: Vec<_> = stores
            .iter()
            .map(|st| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let c = st.ensure_collection("race", PACK, DIM).unwrap();
                    let src = source(*st, &c, "alpha", Some("US"));
                    let subj = st.ensure_subject(c.id, "racer").unwrap();
                    (c, src, subj)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        made[0], made[1],
        "both processes see one collection, source, subject"
    );
    let (coll, src, subj) = made[0].clone();

    let mut people = People::new(11, 50);
    let plans: Vec<ImgPlan> = (0..50)
        .map(|i| {
            let mut faces = vec![fp(i, (i % 5 == 0).then(|| (subj, "racer".to_string())))];
            if i % 3 == 0 {
                faces.push(fp((i + 17) % 50, None));
            }
            let mut p = plan(format!("race{i}"), &src, faces);
            p.jurisdiction = Some("US-CA".into());
            p.captured_at = Some(1_650_000_000 + i as i64);
            p
        })
        .collect();
    let built = build(&coll, &mut people, &plans);
    let expected_faces: usize = built.iter().map(|(i, _)| i.faces.len()).sum();

    let barrier = Barrier::new(2);
    let outcomes: Vec<Vec<AddOutcome>> = std::thread::scope(|s| {
        let hs: Vec<_> = stores
            .iter()
            .map(|st| {
                let (barrier, built) = (&barrier, &built);
                s.spawn(move || {
                    barrier.wait();
                    built
                        .iter()
                        .map(|(img, _)| {
                            let mut o = st.add_images(std::slice::from_ref(img)).unwrap();
                            assert_eq!(o.len(), 1);
                            o.remove(0)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut faces: Vec<Stored> = Vec::new();
    let mut wins = [0usize; 2];
    for (n, (img, stored)) in built.iter().enumerate() {
        let (a, b) = (&outcomes[0][n], &outcomes[1][n]);
        assert!(
            a.duplicate != b.duplicate,
            "image {n}: exactly one process stores it (duplicate flags {} and {})",
            a.duplicate,
            b.duplicate
        );
        assert_eq!(
            a.image_id, b.image_id,
            "image {n}: both report the same image"
        );
        let (win, lose) = if a.duplicate { (b, a) } else { (a, b) };
        wins[if a.duplicate { 1 } else { 0 }] += 1;
        assert!(lose.face_ids.is_empty());
        assert_eq!(win.face_ids.len(), img.faces.len());
        for (mut s, id) in stored.iter().cloned().zip(&win.face_ids) {
            s.face_id = *id;
            s.image_id = win.image_id;
            faces.push(s);
        }
    }
    eprintln!("images stored first by each process: {wins:?}");
    let known = by_id(&faces);
    for st in stores {
        assert_eq!(st.image_count().unwrap(), 50, "every image once");
        assert_eq!(
            st.face_count().unwrap(),
            expected_faces as u64,
            "no face twice"
        );
        for (img, _) in &built {
            assert!(st.image_by_sha(coll.id, &img.sha256).unwrap().is_some());
        }
    }
    let want_blobs: HashSet<String> = faces
        .iter()
        .flat_map(|s| [s.crop_sha.clone(), s.thumb_sha.clone()])
        .collect();
    assert_eq!(blob_set(store), want_blobs);
    if ctx.kind == Kind::ClusterQdrant {
        let got: BTreeSet<i64> = ctx.qdrant_ids(coll.id).unwrap().into_iter().collect();
        let want: BTreeSet<i64> = known.keys().copied().collect();
        assert_eq!(
            got, want,
            "Qdrant holds exactly the committed faces' points"
        );
    }
    // Each face is found by both processes, once.
    for s in &faces {
        for st in stores {
            let hits = search(st, &coll, &s.vector, 3, None, &filter(), &known);
            assert_eq!(hits[0].face.id, s.face_id);
            assert_eq!(hits[0].face.image.sha256, s.image_sha);
        }
    }
    let racer = Filter {
        subjects: vec![subj],
        jurisdictions: vec!["US".into()],
        ..filter()
    };
    let hits = search(&other, &coll, &people.sample(0), 100, None, &racer, &known);
    assert_eq!(hits.len(), 10);
    // A deletion by one process is seen by the other.
    let victim = faces[0].clone();
    store.delete(&DeleteTarget::Image(victim.image_id)).unwrap();
    assert_eq!(other.face(victim.face_id).unwrap(), None);
    let hits = search(&other, &coll, &victim.vector, 5, None, &filter(), &known);
    assert!(hits.iter().all(|h| h.face.image.id != victim.image_id));
}

/// An embedded gallery (40 people, 3 photos each, one photo with two faces, subjects, an
/// original kept, a suppression) is copied into the cluster store: same counts, same blobs,
/// same subjects, same search answers (by image); a second run copies nothing.
fn suite_migrate(store: &dyn FaceStore, ctx: &Ctx) {
    let cluster = ClusterStore::open(ctx.cluster.as_ref().expect("cluster backends only"))
        .expect("opening the cluster store");
    let dir = tempfile::tempdir().unwrap();
    let g = Gallery::open(dir.path(), Access::ReadWrite).unwrap();
    let coll = g.ensure_collection("archive", PACK, DIM).unwrap();
    let src = source(&g, &coll, "scans", Some("FR"));
    let mut people = People::new(7, 40);
    let mut probes = Vec::new();
    for who in 0..40 {
        let subj = g.ensure_subject(coll.id, &format!("person {who}")).unwrap();
        for k in 0..3 {
            let tag = format!("m{who}-{k}");
            let mut faces = vec![new_face(people.sample(who), &tag, Some(subj))];
            if who == 0 && k == 0 {
                faces.push(new_face(people.sample(1), &format!("{tag}-b"), None));
            }
            let mut img = new_image(&coll, &src, &tag, faces);
            if who == 2 && k == 1 {
                img.original = Some(format!("original bytes of {tag}").into_bytes());
            }
            g.add_images(&[img]).unwrap();
        }
        probes.push(people.sample(who));
    }
    g.add_suppressions(
        PACK,
        "optout-1",
        &[NewSuppression {
            vector: people.sample(39),
            z_median: 0.01,
            z_mad: 0.05,
            origin: "selfie".into(),
        }],
    )
    .unwrap();
    g.flush().unwrap();

    let r = visage_cluster::migrate::migrate(&g, &cluster, None, &|_, _| {}).unwrap();
    assert_eq!((r.collections, r.sources, r.subjects), (1, 1, 40), "{r:?}");
    assert_eq!((r.images_copied, r.images_already_there), (120, 0), "{r:?}");
    assert_eq!(r.faces_copied, 121);
    assert_eq!(r.suppressions_copied, 1);
    assert_eq!(store.face_count().unwrap(), 121);
    assert_eq!(store.image_count().unwrap(), 120);
    let a: BTreeSet<String> = FaceStore::blob_names(&g).unwrap().into_iter().collect();
    let b: BTreeSet<String> = store.blob_names().unwrap().into_iter().collect();
    assert_eq!(a, b, "the same blobs, crops, thumbnails and the original");
    let target = store
        .collection("archive")
        .unwrap()
        .expect("collection copied");
    assert_eq!((target.pack.as_str(), target.dim), (PACK, DIM));
    let sid = store
        .subject_by_label(target.id, "person 5")
        .unwrap()
        .unwrap();
    assert_eq!(store.subject_faces(sid).unwrap().len(), 3);
    assert_eq!(store.suppressions(PACK).unwrap().len(), 1);
    for (who, probe) in probes.iter().enumerate() {
        let q = |c: i64| SearchQuery {
            collection_id: c,
            vector: probe,
            k: 5,
            threshold: None,
            filter: Filter::default(),
        };
        let from: Vec<String> = FaceStore::search(&g, &q(coll.id))
            .unwrap()
            .iter()
            .map(|h| h.face.image.sha256.clone())
            .collect();
        let to: Vec<(String, Option<String>)> = store
            .search(&q(target.id))
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h.face.image.sha256.clone(),
                    h.face.subject.as_ref().map(|s| s.label.clone()),
                )
            })
            .collect();
        assert_eq!(
            from,
            to.iter().map(|t| t.0.clone()).collect::<Vec<_>>(),
            "person {who}: the same answers before and after"
        );
        assert_eq!(to[0].1.as_deref(), Some(format!("person {who}").as_str()));
    }
    // Idempotent.
    let again = visage_cluster::migrate::migrate(&g, &cluster, None, &|_, _| {}).unwrap();
    assert_eq!((again.images_copied, again.images_already_there), (0, 120));
    assert_eq!(again.suppressions_copied, 0);
    assert_eq!(store.face_count().unwrap(), 121);
}

/// Images and faces per source and jurisdiction, as `ClusterStore::stats` answers them.
type Tallies = BTreeMap<(String, String), (u64, u64)>;

fn stats_tallies(cluster: &ClusterStore, coll: &Collection) -> (Tallies, Tallies) {
    let st = cluster.stats().expect("stats");
    let c = st
        .collections
        .iter()
        .find(|c| c.id == coll.id)
        .expect("the collection in stats");
    let by_name = |v: &[visage_gallery::gallery::NamedCount]| -> Tallies {
        v.iter()
            .filter(|n| (n.images, n.faces) != (0, 0))
            .map(|n| ((n.name.clone(), String::new()), (n.images, n.faces)))
            .collect()
    };
    (by_name(&c.sources), by_name(&c.jurisdictions))
}

/// Expected per-source and per-jurisdiction counts of the images still held.
fn expected_tallies(plans: &[ImgPlan], held: impl Fn(&ImgPlan) -> bool) -> (Tallies, Tallies) {
    let (mut by_source, mut by_j) = (Tallies::new(), Tallies::new());
    for p in plans.iter().filter(|p| held(p)) {
        let j = p.jurisdiction.clone().unwrap_or_else(|| "unknown".into());
        for e in [
            by_source
                .entry((p.source.name.clone(), String::new()))
                .or_default(),
            by_j.entry((j, String::new())).or_default(),
        ] {
            e.0 += 1;
            e.1 += p.faces.len() as u64;
        }
    }
    (by_source, by_j)
}

/// The counts behind `/v1/stats`, collection summaries and `/metrics` are kept by triggers
/// (migration 12), not counted from the rows: they follow concurrent writes from two
/// processes, duplicates, erasure by jurisdiction and by source; `visage cluster check` finds
/// counts that disagree with the rows (`tally_mismatch`) and `--repair` rebuilds them.
fn suite_tally(store: &dyn FaceStore, ctx: &Ctx) {
    let cfg = ctx.cluster.as_ref().expect("cluster backends only");
    let one = ClusterStore::open(cfg).expect("opening a store");
    let two = ClusterStore::open(cfg).expect("opening a second store");
    let coll = store.ensure_collection("tally", PACK, DIM).unwrap();
    let a = source(store, &coll, "a", None);
    let b = source(store, &coll, "b", Some("DE"));
    let juris = [None, Some("DE"), Some("US-CA"), Some("US-NY")];
    let plans: Vec<ImgPlan> = (0..80)
        .map(|i| {
            let src = if i % 2 == 0 { &a } else { &b };
            let faces = (0..i % 3).map(|k| fp((i + k) % 30, None)).collect();
            let mut p = plan(format!("tally{i}"), src, faces);
            p.jurisdiction = juris[(i / 2) % 4].map(String::from);
            p
        })
        .collect();
    let mut people = People::new(23, 30);
    let built = build(&coll, &mut people, &plans);
    // Both stores write every image at once (one of each pair is a duplicate), each through
    // its own connections (so its own slots).
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        for st in [&one, &two] {
            let (barrier, built) = (&barrier, &built);
            s.spawn(move || {
                barrier.wait();
                for (img, _) in built {
                    st.add_images(std::slice::from_ref(img)).unwrap();
                }
            });
        }
    });
    let want = expected_tallies(&plans, |_| true);
    assert_eq!(stats_tallies(&one, &coll), want);
    let faces: u64 = want.0.values().map(|v| v.1).sum();
    assert_eq!(store.face_count().unwrap(), faces);
    assert_eq!(store.image_count().unwrap(), 80);
    let summary = Catalog::describe_collection(&two, "tally").unwrap();
    assert_eq!((summary.images, summary.faces), (80, faces));
    let per_source: Tallies = summary
        .sources
        .iter()
        .map(|s| ((s.source.name.clone(), String::new()), (s.images, s.faces)))
        .collect();
    assert_eq!(per_source, want.0);

    // Erasure by jurisdiction (US covers US-CA and US-NY).
    store
        .delete(&DeleteTarget::Jurisdiction("US".into()))
        .unwrap();
    let not_us = |p: &ImgPlan| !p.jurisdiction.as_deref().unwrap_or("").starts_with("US");
    let want = expected_tallies(&plans, not_us);
    assert_eq!(stats_tallies(&two, &coll), want);
    let check = one.check(false).unwrap();
    assert!(
        check
            .inconsistencies
            .iter()
            .all(|f| f.kind != "tally_mismatch"),
        "{:?}",
        check.inconsistencies
    );

    // Counts that disagree with the rows are reported, then rebuilt.
    one.pool()
        .get()
        .unwrap()
        .execute(
            "INSERT INTO tally (source_id, jurisdiction, slot, collection_id, faces) \
             VALUES ($1, 'DE', 99, $2, 3)",
            &[&b.id, &coll.id],
        )
        .unwrap();
    let (by_source, _) = stats_tallies(&one, &coll);
    assert_eq!(
        by_source[&("b".to_string(), String::new())].1,
        want.0[&("b".to_string(), String::new())].1 + 3,
        "stats read the kept counts"
    );
    let check = one.check(false).unwrap();
    let found: Vec<_> = check
        .inconsistencies
        .iter()
        .filter(|f| f.kind == "tally_mismatch")
        .collect();
    assert_eq!(found.len(), 1, "{:?}", check.inconsistencies);
    assert!(
        found[0]
            .detail
            .contains(&format!("source {} (jurisdiction DE)", b.id))
            && !found[0].repaired,
        "{:?}",
        found[0]
    );
    let repaired = one.check(true).unwrap();
    assert!(repaired
        .inconsistencies
        .iter()
        .any(|f| f.kind == "tally_mismatch" && f.repaired));
    assert_eq!(one.check(false).unwrap().unrepaired(), 0);
    assert_eq!(stats_tallies(&two, &coll), want);

    // Erasing a source removes its counts with it.
    store.delete(&DeleteTarget::Source(b.id)).unwrap();
    let n: i64 = one
        .pool()
        .get()
        .unwrap()
        .query_one("SELECT COUNT(*) FROM tally WHERE source_id = $1", &[&b.id])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let want = expected_tallies(&plans, |p| not_us(p) && p.source.id == a.id);
    assert_eq!(stats_tallies(&one, &coll), want);
    assert_eq!(one.check(false).unwrap().unrepaired(), 0);
}

/// An erasure and its audit record and receipt commit in one transaction: a record that
/// cannot be written (an error, or a process dying in the middle: a panic here) leaves every
/// row, blob and point in place and owes no removal; a written one commits with the
/// deletion, and `blobs_removed` counts the blobs that left the bucket.
fn suite_recorded_deletion(store: &dyn FaceStore, ctx: &Ctx) {
    let cfg = ctx.cluster.as_ref().expect("cluster backends only");
    let cluster = ClusterStore::open(cfg).expect("opening a store");
    let audit = visage_cluster::audit::PgAudit::new(
        cluster.pool(),
        ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
    );
    let coll = store.ensure_collection("recorded", PACK, DIM).unwrap();
    let a = source(store, &coll, "a", None);
    let b = source(store, &coll, "b", None);
    let plans: Vec<ImgPlan> = (0..12)
        .map(|i| {
            let src = if i < 8 { &a } else { &b };
            plan(
                format!("rec{i}"),
                src,
                vec![fp(i % 5, None), fp(5 + i % 3, None)],
            )
        })
        .collect();
    let mut people = People::new(31, 8);
    let faces = store_images(store, &coll, &mut people, &plans);
    let of_a: Vec<&Stored> = faces.iter().filter(|f| f.source_id == a.id).collect();
    let pending = || -> i64 {
        cluster
            .pool()
            .get()
            .unwrap()
            .query_one("SELECT COUNT(*) FROM pending_delete", &[])
            .unwrap()
            .get(0)
    };
    let unchanged = |what: &str| {
        assert_eq!(store.face_count().unwrap(), faces.len() as u64, "{what}");
        assert_eq!(store.image_count().unwrap(), 12, "{what}");
        assert!(
            store.sources(coll.id).unwrap().iter().any(|s| s.id == a.id),
            "{what}: source a"
        );
        for f in &of_a {
            assert!(
                store.face(f.face_id).unwrap().is_some(),
                "{what}: face kept"
            );
        }
        assert_eq!(audit.head().unwrap(), None, "{what}: no record");
        assert_eq!(pending(), 0, "{what}: no removal owed");
        let known = by_id(&faces);
        let hits = search(store, &coll, &of_a[0].vector, 5, None, &filter(), &known);
        assert!(ids(&hits).contains(&of_a[0].face_id), "{what}: still found");
    };
    let blobs_before = blob_set(store);
    let event = |n: usize| {
        visage_governance::AuditEvent::new(&visage_governance::Actor::system(), "erase")
            .result_count(n as u64)
    };

    let failed =
        cluster.delete_recorded(&DeleteTarget::Source(a.id), |tx, r| -> anyhow::Result<()> {
            audit.append_in(tx, event(r.faces))?;
            anyhow::bail!("the receipt cannot be stored")
        });
    assert!(
        format!("{:#}", failed.unwrap_err()).contains("the receipt cannot be stored"),
        "the record's error is returned"
    );
    unchanged("after a failed record");
    assert_eq!(blob_set(store), blobs_before);

    let died = catch_unwind(AssertUnwindSafe(|| {
        cluster.delete_recorded(&DeleteTarget::Source(a.id), |tx, r| -> anyhow::Result<()> {
            audit.append_in(tx, event(r.faces)).unwrap();
            panic!("the process dies before the commit")
        })
    }));
    assert!(died.is_err());
    unchanged("after a death before the commit");

    let (report, receipt) = cluster
        .delete_recorded(&DeleteTarget::Source(a.id), |tx, r| {
            visage_cluster::receipts::issue_in(
                tx,
                &audit,
                &visage_governance::Actor::system(),
                None,
                "erasure",
                serde_json::json!({"faces": r.faces, "blobs_removed": r.blobs_removed}),
                Some(event(r.faces)),
            )
        })
        .unwrap();
    assert_eq!(
        (report.faces, report.images, report.sources),
        (of_a.len(), 8, 1)
    );
    let mut want_ids: Vec<i64> = of_a.iter().map(|f| f.face_id).collect();
    want_ids.sort();
    assert_eq!(report.face_ids, want_ids);
    let records = audit.records(.., 10).unwrap();
    assert_eq!(records.len(), 2, "the erasure's record and the receipt's");
    assert_eq!(records[0].result_count, Some(of_a.len() as u64));
    assert_eq!(
        visage_cluster::receipts::get(cluster.pool(), &receipt.id)
            .unwrap()
            .expect("the receipt is stored")
            .body["faces"],
        serde_json::json!(of_a.len())
    );
    assert_eq!(
        store.face_count().unwrap(),
        (faces.len() - of_a.len()) as u64
    );
    assert_eq!(pending(), 0, "removals done after the commit");
    let gone = blobs_before.difference(&blob_set(store)).count();
    assert!(gone > 0);
    assert_eq!(report.blobs_removed, gone, "blobs_removed counts what left");
    assert_eq!(receipt.body["blobs_removed"], serde_json::json!(gone));
    if let Some(points) = ctx.qdrant_ids(coll.id) {
        assert!(
            points.iter().all(|p| !want_ids.contains(p)),
            "points removed"
        );
    }
    assert_eq!(cluster.check(false).unwrap().unrepaired(), 0);
}
