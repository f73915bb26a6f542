//! The ingest queue (`visage_cluster::queue`) on a real PostgreSQL (`testkit`), without models:
//! a job ends exactly when its last item does, even when two workers finish its last two items
//! at the same instant; cancelling fails the queued items, lets claimed ones finish, and ends
//! the job `cancelled` (also when the claim's worker died); items given up end their job; and
//! the job's counters are its items' embedded-ingest counters summed. Skips with a message
//! when PostgreSQL is not installed (unless `VISAGE_REQUIRE_CLUSTER=1`).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Barrier;

use visage_cluster::pg::Pool;
use visage_cluster::queue::{self, Cancel, ItemResult};
use visage_engine::ingest::{IngestCounts, ItemFailure};
use visage_gallery::NewSource;

fn pool(test: &str) -> Option<Pool> {
    common::fresh_pool(&format!("queue_{test}"))
}

/// A job of `n` image files (their content is never read here).
fn job(pool: &Pool, dir: &std::path::Path, n: usize) -> i64 {
    let sub = dir.join(format!("j{}", rand_suffix()));
    std::fs::create_dir_all(&sub).unwrap();
    let files: Vec<PathBuf> = (0..n)
        .map(|i| {
            let f = sub.join(format!("{i:03}.jpg"));
            std::fs::write(&f, b"x").unwrap();
            f
        })
        .collect();
    let source = NewSource {
        name: "s".into(),
        kind: "files".into(),
        uri: None,
        legal_basis: Some("test".into()),
        licence: None,
        jurisdiction: None,
    };
    queue::enqueue(pool, "c", &source, &files, serde_json::json!({})).unwrap()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn indexed(faces: u64, rejected: &[(&str, u64)]) -> ItemResult {
    ItemResult {
        outcome: "indexed",
        faces: faces as i32,
        units: 1,
        counts: IngestCounts {
            images_seen: 1,
            images_indexed: 1,
            faces_indexed: faces,
            faces_rejected: rejected.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn status(pool: &Pool, id: i64) -> queue::JobStatus {
    queue::job_status(pool, id).unwrap().unwrap()
}

#[test]
fn the_last_of_two_concurrent_finishes_ends_the_job() {
    let Some(pool) = pool("race") else { return };
    let dir = tempfile::tempdir().unwrap();
    const JOBS: usize = 40;
    let mut ended = 0;
    for _ in 0..JOBS {
        let id = job(&pool, dir.path(), 2);
        let a = queue::claim(&pool, "w1", 1, 60).unwrap();
        let b = queue::claim(&pool, "w2", 1, 60).unwrap();
        assert_eq!((a.len(), b.len()), (1, 1));
        let barrier = Barrier::new(2);
        std::thread::scope(|s| {
            for (w, item) in [("w1", &a[0]), ("w2", &b[0])] {
                let (pool, barrier) = (&pool, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    assert!(queue::finish(pool, w, item.id, &indexed(1, &[])).unwrap());
                });
            }
        });
        let st = status(&pool, id);
        assert_eq!((st.done, st.queued, st.claimed), (2, 0, 0));
        if st.status == "completed" {
            ended += 1;
        }
    }
    assert_eq!(ended, JOBS, "jobs left `running` with every item done");
}

#[test]
fn cancelling_fails_the_queued_items_and_lets_claimed_ones_finish() {
    let Some(pool) = pool("cancel") else { return };
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(queue::cancel(&pool, 999).unwrap(), Cancel::NotFound);
    let id = job(&pool, dir.path(), 3);
    let held = queue::claim(&pool, "w1", 1, 60).unwrap();
    assert_eq!(queue::cancel(&pool, id).unwrap(), Cancel::Requested);
    let st = status(&pool, id);
    assert_eq!(
        (
            st.status.as_str(),
            st.cancel_requested,
            st.cancelled,
            st.claimed
        ),
        ("running", true, 2, 1)
    );
    // Nothing more is claimed; the held item finishes and ends the job.
    assert!(queue::claim(&pool, "w2", 5, 60).unwrap().is_empty());
    assert!(queue::finish(&pool, "w1", held[0].id, &indexed(2, &[("too_small", 1)])).unwrap());
    let st = status(&pool, id);
    assert_eq!(
        (st.status.as_str(), st.done, st.failed, st.cancelled),
        ("cancelled", 1, 2, 2)
    );
    assert!(st.finished_at.is_some());
    // Items never read are neither errors nor in the report.
    assert_eq!(st.counts.errors, 0);
    assert!(queue::failures(&pool, id, 100).unwrap().is_empty());
    assert_eq!(queue::cancel(&pool, id).unwrap(), Cancel::AlreadyEnded);

    // A queued job ends at once.
    let id = job(&pool, dir.path(), 2);
    assert_eq!(status(&pool, id).jobs_ahead, Some(0));
    assert_eq!(queue::cancel(&pool, id).unwrap(), Cancel::Requested);
    assert_eq!(status(&pool, id).status, "cancelled");

    // A claim whose worker died (lease run out) is not taken again: it ends `cancelled`.
    let id = job(&pool, dir.path(), 2);
    assert_eq!(queue::claim(&pool, "dead", 2, -1).unwrap().len(), 2);
    assert_eq!(queue::cancel(&pool, id).unwrap(), Cancel::Requested);
    assert_eq!(status(&pool, id).status, "running");
    assert!(queue::claim(&pool, "w2", 5, 60).unwrap().is_empty());
    let st = status(&pool, id);
    assert_eq!((st.status.as_str(), st.cancelled), ("cancelled", 2));
}

#[test]
fn counters_are_summed_and_given_up_items_end_their_job() {
    let Some(pool) = pool("counts") else { return };
    let dir = tempfile::tempdir().unwrap();
    let id = job(&pool, dir.path(), 4);
    let items = queue::claim(&pool, "w1", 3, 60).unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(
        status(&pool, id).jobs_ahead,
        None,
        "a running job waits for nothing"
    );
    assert!(queue::finish(&pool, "w1", items[0].id, &indexed(2, &[("too_small", 1)])).unwrap());
    assert!(queue::finish(
        &pool,
        "w1",
        items[1].id,
        &indexed(1, &[("too_small", 2), ("blurred", 1)])
    )
    .unwrap());
    // An archive: two members stored, one already known, one unreadable.
    let archive = ItemResult {
        outcome: "indexed",
        faces: 3,
        units: 4,
        units_known: 1,
        failures: vec![ItemFailure {
            location: "a.zip!/x.jpg".into(),
            code: "corrupt_image".into(),
            message: "truncated".into(),
        }],
        counts: IngestCounts {
            images_seen: 4,
            images_indexed: 2,
            images_skipped_known: 1,
            images_without_faces: 1,
            faces_indexed: 3,
            errors: 1,
            errors_by_code: BTreeMap::from([("corrupt_image".into(), 1)]),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(queue::finish(&pool, "w1", items[2].id, &archive).unwrap());
    // The last item kills its worker every time: given up after MAX_ATTEMPTS claims.
    for _ in 0..queue::MAX_ATTEMPTS {
        assert_eq!(queue::claim(&pool, "dying", 1, -1).unwrap().len(), 1);
    }
    assert!(queue::claim(&pool, "w2", 1, 60).unwrap().is_empty());
    let st = status(&pool, id);
    assert_eq!(st.status, "completed", "the give-up ends the job");
    let c = &st.counts;
    assert_eq!(
        (
            c.images_seen,
            c.images_indexed,
            c.images_skipped_known,
            c.images_without_faces
        ),
        (6, 4, 1, 1)
    );
    assert_eq!(c.faces_indexed, 6);
    assert_eq!(
        c.faces_rejected,
        BTreeMap::from([("blurred".into(), 1), ("too_small".into(), 3)])
    );
    assert_eq!(
        c.errors_by_code,
        BTreeMap::from([
            ("attempts_exhausted".into(), 1),
            ("corrupt_image".into(), 1)
        ])
    );
    assert_eq!(c.errors, 2);
    let listed: Vec<String> = queue::failures(&pool, id, 100)
        .unwrap()
        .into_iter()
        .map(|f| f.code)
        .collect();
    assert_eq!(listed, ["corrupt_image", "attempts_exhausted"]);
}
