//! `QdrantVectors` against a real Qdrant server (v1.16). Runs only when `QDRANT_URL` is set to
//! the server's gRPC url (e.g. `http://127.0.0.1:6334`); otherwise every test prints why and
//! passes. Each test uses its own collection prefix and drops its collections at the end.
//! docs/CLUSTER-QDRANT.md says how to build and start the server.

mod common;

use common::{dot, Rng};
use std::collections::{HashMap, HashSet};

use visage_cluster::qdrant::{QdrantConfig, QdrantVectors, VectorPoint};
use visage_gallery::filter::{AttrTable, FaceAttr};
use visage_gallery::{Filter, Neighbour};

const COLL: i64 = 7;

fn config(test: &str) -> Option<QdrantConfig> {
    match std::env::var("QDRANT_URL") {
        Ok(url) if !url.trim().is_empty() => Some(QdrantConfig {
            url: url.trim().to_string(),
            api_key: std::env::var("QDRANT_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            shards: 1,
            replicas: 1,
            collection_prefix: format!("visage_test_{}_{test}_", std::process::id()),
        }),
        _ => {
            eprintln!(
                "skipping qdrant test {test}: QDRANT_URL is not set \
                 (gRPC url of a Qdrant 1.16 server, e.g. http://127.0.0.1:6334; \
                 see docs/CLUSTER-QDRANT.md)"
            );
            None
        }
    }
}

/// The client plus the collections to drop when the test ends (also on panic).
struct Fixture {
    q: QdrantVectors,
    collections: Vec<i64>,
}

impl Fixture {
    fn new(test: &str) -> Option<Fixture> {
        let cfg = config(test)?;
        let q = QdrantVectors::connect(&cfg).expect("connect to QDRANT_URL");
        Some(Fixture {
            q,
            collections: vec![COLL],
        })
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for &c in &self.collections {
            if let Err(e) = self.q.drop_collection(c) {
                eprintln!("dropping test collection {c}: {e:#}");
            }
        }
    }
}

fn point(face_id: i64, vector: Vec<f32>) -> VectorPoint {
    VectorPoint {
        face_id,
        vector,
        source_id: 1,
        subject_id: None,
        jurisdiction: None,
        captured_at: None,
    }
}

fn brute_force(points: &HashMap<i64, Vec<f32>>, q: &[f32], k: usize) -> Vec<(i64, f32)> {
    let mut all: Vec<(i64, f32)> = points.iter().map(|(&id, v)| (id, dot(v, q))).collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

fn ids_of(ns: &[Neighbour]) -> Vec<i64> {
    ns.iter().map(|n| n.id as i64).collect()
}

#[test]
fn top_k_agrees_with_brute_force() {
    let Some(f) = Fixture::new("topk") else {
        return;
    };
    let dim = 64;
    let mut rng = Rng(1);
    f.q.ensure_collection(COLL, dim).unwrap();
    let points: HashMap<i64, Vec<f32>> = (1..=400).map(|id| (id, rng.vector(dim))).collect();
    let batch: Vec<VectorPoint> = points.iter().map(|(&id, v)| point(id, v.clone())).collect();
    f.q.upsert(COLL, &batch).unwrap(); // 400 points: two chunks
    assert_eq!(f.q.ids(COLL).unwrap(), (1..=400).collect::<Vec<i64>>());

    let k = 10;
    let (mut hit, mut total) = (0usize, 0usize);
    for (i, ef) in [None, Some(16), Some(256)]
        .into_iter()
        .cycle()
        .take(30)
        .enumerate()
    {
        // Half the queries are stored vectors (their own id must come first).
        let q = if i % 2 == 0 {
            rng.vector(dim)
        } else {
            points[&(i as i64 * 7 + 1)].clone()
        };
        let got = f.q.search(COLL, &q, k, &Filter::default(), ef).unwrap();
        let want = brute_force(&points, &q, k);
        assert_eq!(got.len(), k);
        assert!(
            got.windows(2).all(|w| w[0].score >= w[1].score),
            "best first: {got:?}"
        );
        if i % 2 == 1 {
            assert_eq!(got[0].id as i64, i as i64 * 7 + 1);
            assert!((got[0].score - 1.0).abs() < 1e-4, "{got:?}");
        }
        for n in &got {
            let exact = dot(&points[&(n.id as i64)], &q);
            assert!(
                (n.score - exact).abs() < 1e-4,
                "score {} is the cosine {exact}",
                n.score
            );
        }
        let want_ids: HashSet<i64> = want.iter().map(|w| w.0).collect();
        hit += got
            .iter()
            .filter(|n| want_ids.contains(&(n.id as i64)))
            .count();
        total += k;
    }
    let recall = hit as f64 / total as f64;
    assert!(recall >= 0.99, "recall@{k} = {recall}");
}

#[test]
fn upsert_and_ensure_are_idempotent() {
    let Some(f) = Fixture::new("idem") else {
        return;
    };
    let dim = 16;
    let mut rng = Rng(2);
    f.q.ensure_collection(COLL, dim).unwrap();
    f.q.ensure_collection(COLL, dim).unwrap();
    let batch: Vec<VectorPoint> = (1..=50).map(|id| point(id, rng.vector(dim))).collect();
    f.q.upsert(COLL, &batch).unwrap();
    f.q.upsert(COLL, &batch).unwrap();
    f.q.upsert(COLL, &[]).unwrap();
    assert_eq!(f.q.ids(COLL).unwrap(), (1..=50).collect::<Vec<i64>>());

    // A re-upsert replaces the vector and the payload.
    let v = rng.vector(dim);
    let mut p = point(7, v.clone());
    p.source_id = 99;
    f.q.upsert(COLL, &[p]).unwrap();
    let got = f.q.search(COLL, &v, 1, &Filter::default(), None).unwrap();
    assert_eq!(ids_of(&got), vec![7]);
    assert!((got[0].score - 1.0).abs() < 1e-4);
    let only99 = Filter {
        sources: vec![99],
        ..Default::default()
    };
    let got = f.q.search(COLL, &v, 50, &only99, None).unwrap();
    assert_eq!(ids_of(&got), vec![7]);
    assert_eq!(f.q.ids(COLL).unwrap().len(), 50);
}

#[test]
fn deleted_ids_never_come_back() {
    let Some(f) = Fixture::new("delete") else {
        return;
    };
    let dim = 32;
    let mut rng = Rng(3);
    f.q.ensure_collection(COLL, dim).unwrap();
    let points: HashMap<i64, Vec<f32>> = (1..=300).map(|id| (id, rng.vector(dim))).collect();
    let batch: Vec<VectorPoint> = points.iter().map(|(&id, v)| point(id, v.clone())).collect();
    f.q.upsert(COLL, &batch).unwrap();

    let deleted: Vec<i64> = (1..=300).filter(|id| id % 3 == 0).collect();
    f.q.delete(COLL, &deleted).unwrap();
    f.q.delete(COLL, &deleted).unwrap(); // again: no-op
    f.q.delete(COLL, &[100_000, 100_001]).unwrap(); // never there
    f.q.delete(COLL, &[]).unwrap();
    let live: Vec<i64> = (1..=300).filter(|id| id % 3 != 0).collect();
    assert_eq!(f.q.ids(COLL).unwrap(), live);

    let gone: HashSet<i64> = deleted.iter().copied().collect();
    for &id in deleted.iter().take(20) {
        // Query with the deleted vector itself, asking for everything.
        let got =
            f.q.search(COLL, &points[&id], 300, &Filter::default(), None)
                .unwrap();
        assert_eq!(got.len(), live.len());
        assert!(got.iter().all(|n| !gone.contains(&(n.id as i64))));
    }
}

/// Face attributes for the filter test: (face id, source, subject, jurisdiction, captured_at).
type Row = (i64, i64, Option<i64>, Option<&'static str>, Option<i64>);

const ROWS: &[Row] = &[
    (1, 1, Some(10), Some("US"), Some(100)),
    (2, 1, Some(11), Some("US-IL"), Some(200)),
    (3, 2, None, Some("US-ILX"), Some(300)),
    (4, 2, Some(10), Some("US-CA"), None),
    (5, 3, Some(12), Some("FR"), Some(150)),
    (6, 3, None, Some("FR-75"), Some(250)),
    (7, 1, Some(11), None, Some(100)),
    (8, 2, Some(12), None, None),
    (9, 1, None, Some("USX"), Some(50)),
    (10, 3, Some(10), Some("GB-ENG"), Some(1_700_000_000)),
    (11, 2, Some(13), Some("US-IL"), None),
    (12, 1, Some(13), Some("DE"), Some(300)),
];

#[test]
fn every_filter_kind_runs_inside_qdrant() {
    let Some(f) = Fixture::new("filters") else {
        return;
    };
    let dim = 8;
    let mut rng = Rng(4);
    f.q.ensure_collection(COLL, dim).unwrap();
    let batch: Vec<VectorPoint> = ROWS
        .iter()
        .map(|&(id, source, subject, jur, t)| VectorPoint {
            face_id: id,
            vector: rng.vector(dim),
            source_id: source,
            subject_id: subject,
            jurisdiction: jur.map(str::to_string),
            captured_at: t,
        })
        .collect();
    f.q.upsert(COLL, &batch).unwrap();

    // The in-memory evaluation of the gallery is the reference.
    let mut table = AttrTable::default();
    for &(id, source, subject, jur, t) in ROWS {
        let j = table.intern(jur);
        table.faces.insert(
            id as u64,
            FaceAttr {
                source_id: source,
                subject_id: subject,
                captured_at: t,
                jurisdiction: j,
            },
        );
    }
    let run = |filter: &Filter| -> Vec<i64> {
        let q = rng_query(dim);
        let mut got = ids_of(&f.q.search(COLL, &q, 100, filter, None).unwrap());
        got.sort_unstable();
        got
    };
    let expect = |filter: &Filter| -> Vec<i64> {
        let c = table.compile(filter);
        let mut ids: Vec<i64> = table
            .faces
            .iter()
            .filter(|(_, a)| c.accepts(a))
            .map(|(&id, _)| id as i64)
            .collect();
        ids.sort_unstable();
        ids
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let cases: Vec<(&str, Filter, Vec<i64>)> = vec![
        ("none", Filter::default(), (1..=12).collect()),
        (
            "sources",
            Filter {
                sources: vec![2, 3],
                ..Default::default()
            },
            vec![3, 4, 5, 6, 8, 10, 11],
        ),
        (
            "US contains US-IL, not USX",
            Filter {
                jurisdictions: s(&["US"]),
                ..Default::default()
            },
            vec![1, 2, 3, 4, 11],
        ),
        (
            "US-IL is not US-ILX",
            Filter {
                jurisdictions: s(&["US-IL"]),
                ..Default::default()
            },
            vec![2, 11],
        ),
        (
            "any of several",
            Filter {
                jurisdictions: s(&["FR", "US-CA", "GB"]),
                ..Default::default()
            },
            vec![4, 5, 6, 10],
        ),
        (
            "exclude keeps faces without jurisdiction",
            Filter {
                exclude_jurisdictions: s(&["US"]),
                ..Default::default()
            },
            vec![5, 6, 7, 8, 9, 10, 12],
        ),
        (
            "include US exclude US-IL",
            Filter {
                jurisdictions: s(&["US"]),
                exclude_jurisdictions: s(&["US-IL"]),
                ..Default::default()
            },
            vec![1, 3, 4],
        ),
        (
            "subjects",
            Filter {
                subjects: vec![10, 13],
                ..Default::default()
            },
            vec![1, 4, 10, 11, 12],
        ),
        (
            "from: missing capture time excluded",
            Filter {
                captured_from: Some(200),
                ..Default::default()
            },
            vec![2, 3, 6, 10, 12],
        ),
        (
            "to (inclusive)",
            Filter {
                captured_to: Some(150),
                ..Default::default()
            },
            vec![1, 5, 7, 9],
        ),
        (
            "from..to (inclusive both ends)",
            Filter {
                captured_from: Some(100),
                captured_to: Some(250),
                ..Default::default()
            },
            vec![1, 2, 5, 6, 7],
        ),
        (
            "empty range result",
            Filter {
                captured_from: Some(400),
                captured_to: Some(500),
                ..Default::default()
            },
            vec![],
        ),
        (
            "everything at once",
            Filter {
                sources: vec![1, 2],
                jurisdictions: s(&["US", "DE"]),
                exclude_jurisdictions: s(&["US-CA"]),
                subjects: vec![10, 11, 13],
                captured_from: Some(100),
                captured_to: Some(300),
            },
            vec![1, 2, 12],
        ),
    ];
    for (name, filter, want) in cases {
        assert_eq!(expect(&filter), want, "reference for {name}");
        assert_eq!(run(&filter), want, "qdrant for {name}");
    }
}

fn rng_query(dim: usize) -> Vec<f32> {
    Rng(99).vector(dim)
}

#[test]
fn ids_lists_exactly_the_live_points() {
    let Some(f) = Fixture::new("ids") else { return };
    let dim = 4;
    let mut rng = Rng(5);
    f.q.ensure_collection(COLL, dim).unwrap();
    assert!(f.q.ids(COLL).unwrap().is_empty());
    // More than one scroll page would need > 4096 points; sparse, large ids instead.
    let ids: Vec<i64> = (0..600).map(|i| 1 + i * 1_000_003).collect();
    let batch: Vec<VectorPoint> = ids.iter().map(|&id| point(id, rng.vector(dim))).collect();
    f.q.upsert(COLL, &batch).unwrap();
    assert_eq!(f.q.ids(COLL).unwrap(), ids);
    f.q.upsert(COLL, &[point(i64::MAX, rng.vector(dim))])
        .unwrap();
    let mut want = ids.clone();
    want.push(i64::MAX);
    assert_eq!(f.q.ids(COLL).unwrap(), want);
}

#[test]
fn ids_scrolls_past_one_page() {
    let Some(f) = Fixture::new("scroll") else {
        return;
    };
    let dim = 2;
    let mut rng = Rng(6);
    f.q.ensure_collection(COLL, dim).unwrap();
    let ids: Vec<i64> = (1..=9000).collect();
    let batch: Vec<VectorPoint> = ids.iter().map(|&id| point(id, rng.vector(dim))).collect();
    f.q.upsert(COLL, &batch).unwrap();
    assert_eq!(f.q.ids(COLL).unwrap(), ids);
}

#[test]
fn dimension_mismatch_is_an_error() {
    let Some(f) = Fixture::new("dim") else { return };
    f.q.ensure_collection(COLL, 8).unwrap();
    let e = f.q.ensure_collection(COLL, 16).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("dimension 8"), "{msg}");
    assert!(msg.contains(&f.q.collection_name(COLL)), "{msg}");
    // The collection is untouched.
    f.q.ensure_collection(COLL, 8).unwrap();
    assert!(f.q.ensure_collection(COLL, 0).is_err());
}

#[test]
fn zero_k_and_bad_ids() {
    let Some(f) = Fixture::new("kzero") else {
        return;
    };
    let dim = 4;
    let mut rng = Rng(7);
    f.q.ensure_collection(COLL, dim).unwrap();
    f.q.upsert(COLL, &[point(1, rng.vector(dim))]).unwrap();
    assert!(f
        .q
        .search(COLL, &rng.vector(dim), 0, &Filter::default(), None)
        .unwrap()
        .is_empty());
    assert!(f.q.upsert(COLL, &[point(0, rng.vector(dim))]).is_err());
    assert!(f.q.upsert(COLL, &[point(-5, rng.vector(dim))]).is_err());
    // A vector of the wrong length is refused by the server, with context.
    let e =
        f.q.search(COLL, &[1.0, 0.0], 1, &Filter::default(), None)
            .unwrap_err();
    assert!(format!("{e:#}").contains(&f.q.collection_name(COLL)));
}

#[test]
fn drop_collection_of_an_absent_collection_is_ok() {
    let Some(f) = Fixture::new("dropabsent") else {
        return;
    };
    f.q.drop_collection(COLL).unwrap();
    f.q.ensure_collection(COLL, 4).unwrap();
    f.q.drop_collection(COLL).unwrap();
    f.q.drop_collection(COLL).unwrap();
}

fn exercise(test: &str) {
    let Some(f) = Fixture::new(test) else { return };
    let dim = 8;
    let mut rng = Rng(8);
    f.q.ensure_collection(COLL, dim).unwrap();
    let v = rng.vector(dim);
    f.q.upsert(COLL, &[point(3, v.clone()), point(4, rng.vector(dim))])
        .unwrap();
    let got = f.q.search(COLL, &v, 2, &Filter::default(), None).unwrap();
    assert_eq!(got[0].id, 3);
    f.q.delete(COLL, &[4]).unwrap();
    assert_eq!(f.q.ids(COLL).unwrap(), vec![3]);
    // `f` (and its runtime) is dropped here, inside the caller's runtime.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_inside_a_multi_thread_runtime() {
    exercise("insidemt");
}

#[tokio::test(flavor = "current_thread")]
async fn works_inside_a_current_thread_runtime() {
    exercise("insidect");
}

#[test]
fn works_from_many_threads() {
    let Some(f) = Fixture::new("threads") else {
        return;
    };
    let dim = 8;
    f.q.ensure_collection(COLL, dim).unwrap();
    let q = std::sync::Arc::new(f);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(100 + t);
                let pts: Vec<VectorPoint> = (0..25)
                    .map(|i| point(1 + t as i64 * 25 + i, rng.vector(dim)))
                    .collect();
                q.q.upsert(COLL, &pts).unwrap();
                q.q.search(COLL, &rng.vector(dim), 5, &Filter::default(), None)
                    .unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(q.q.ids(COLL).unwrap(), (1..=100).collect::<Vec<i64>>());
}

#[test]
fn unreachable_server_is_an_error_with_the_url() {
    // Needs no server: a closed loopback port.
    let cfg = QdrantConfig {
        url: "http://127.0.0.1:9".into(),
        api_key: Some("never-printed".into()),
        shards: 1,
        replicas: 1,
        collection_prefix: "x_".into(),
    };
    let e = match QdrantVectors::connect(&cfg) {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("127.0.0.1:9"), "{e}");
    assert!(!e.contains("never-printed"), "{e}");
}
