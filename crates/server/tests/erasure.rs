//! Deletions of the embedded gallery are never left unrecorded (`visage_server::erasure`):
//! the state an interruption leaves at each step (announced only; rows deleted, not
//! recorded; recorded, journal not forgotten) is produced here step by step, as a process
//! dying there would leave it, and `resume` must finish it with the right counts, once.

use serde_json::json;
use tempfile::TempDir;
use visage_gallery::{Access, DeleteTarget, Gallery, NewFace, NewImage, NewSource};
use visage_governance::{Actor, AuditEvent, Governance};
use visage_server::erasure::{self, Order, ReceiptPlan};

const DIM: usize = 8;

fn unit(seed: u64) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM)
        .map(|k| ((seed * 31 + k as u64 * 17) % 23) as f32 - 11.0)
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// A gallery with sources `a` (6 images) and `b` (4 images), one face each; governance beside.
fn setup() -> (TempDir, Gallery, Governance, i64, i64) {
    let dir = TempDir::new().unwrap();
    let g = Gallery::open(dir.path(), Access::ReadWrite).unwrap();
    let gov = Governance::open(dir.path()).unwrap();
    let c = g.ensure_collection("main", "test@1", DIM).unwrap();
    let mut ids = vec![];
    for name in ["a", "b"] {
        let s = g
            .ensure_source(
                c.id,
                &NewSource {
                    name: name.into(),
                    kind: "directory".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        ids.push(s.id);
    }
    for i in 0..10u64 {
        g.add_image(&NewImage {
            collection_id: c.id,
            source_id: ids[usize::from(i >= 6)],
            sha256: format!("{i:064x}"),
            width: 10,
            height: 10,
            faces: vec![NewFace {
                bbox: [1.0, 2.0, 3.0, 4.0],
                landmarks: [[1.0, 1.0]; 5],
                det_score: 0.9,
                quality: json!({"score": 1.0}),
                vector: unit(i),
                crop: format!("crop-{i}").into_bytes(),
                thumb: format!("thumb-{i}").into_bytes(),
                subject_id: None,
            }],
            ..Default::default()
        })
        .unwrap();
    }
    (dir, g, gov, ids[0], ids[1])
}

fn order(targets: Vec<DeleteTarget>) -> Order {
    Order {
        targets,
        event: AuditEvent::admin(&Actor::system(), None, "erase").details(json!({"why": "test"})),
        report_in_details: false,
        counts_in_details: false,
        receipt: Some(ReceiptPlan {
            by: Actor::system(),
            org_id: None,
            kind: "erasure".into(),
            body: json!({"target": "test"}),
        }),
    }
}

/// The audit records other than receipts', and the receipts' bodies.
fn recorded(gov: &Governance) -> (Vec<visage_governance::AuditRecord>, Vec<serde_json::Value>) {
    let all = gov.audit_records(.., 1000).unwrap();
    let receipts = all
        .iter()
        .filter(|r| r.action == "receipt")
        .map(|r| {
            let id = r.object_ids[0].trim_start_matches("receipt:");
            gov.get_receipt(id).unwrap().body
        })
        .collect();
    let events = all.into_iter().filter(|r| r.action != "receipt").collect();
    (events, receipts)
}

fn settled(g: &Gallery, gov: &Governance) {
    assert!(gov.pending_changes().unwrap().is_empty(), "nothing pending");
    assert!(g.journaled_intents().unwrap().is_empty(), "journal empty");
    assert!(gov.verify().unwrap().ok, "audit chain verifies");
}

#[test]
fn an_erasure_is_recorded_with_its_receipt() {
    let (_d, g, gov, a, _) = setup();
    let done = erasure::run(&g, &gov, order(vec![DeleteTarget::Source(a)])).unwrap();
    assert_eq!((done.report.faces, done.report.images), (6, 6));
    assert_eq!(done.report.blobs_removed, 12, "6 crops and 6 thumbnails");
    let (events, receipts) = recorded(&gov);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].result_count, Some(6));
    assert_eq!(events[0].object_ids.len(), 6);
    assert_eq!(events[0].details["why"], "test");
    assert!(events[0]
        .details
        .get("resumed_after_interruption")
        .is_none());
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0]["faces"], 6);
    assert_eq!(receipts[0]["target"], "test");
    assert_eq!(done.receipt.unwrap().body, receipts[0]);
    settled(&g, &gov);
}

#[test]
fn a_deletion_that_fails_before_any_row_left_is_not_recorded() {
    let (_d, g, gov, _, _) = setup();
    let e = erasure::run(
        &g,
        &gov,
        order(vec![DeleteTarget::Jurisdiction("not a code".into())]),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("not a code"), "{e:#}");
    assert_eq!(g.stats().unwrap().collections[0].faces, 10);
    assert!(gov.audit_records(.., 10).unwrap().is_empty());
    settled(&g, &gov);
}

#[test]
fn interrupted_after_the_rows_left_is_recorded_with_their_counts() {
    let (_d, g, gov, a, b) = setup();
    let o = order(vec![DeleteTarget::Source(a), DeleteTarget::Source(b)]);
    // The process dies after the first target's rows left (journaled), before the second.
    let id = gov
        .begin_change("gallery_deletion", &serde_json::to_value(&o).unwrap())
        .unwrap();
    g.delete_journaled(&DeleteTarget::Source(a), &format!("{id}/0"))
        .unwrap();
    assert!(
        gov.audit_records(.., 10).unwrap().is_empty(),
        "nothing recorded yet"
    );
    drop((g, gov));

    let (dir, g, gov) = {
        let dir = _d;
        let g = Gallery::open(dir.path(), Access::ReadWrite).unwrap();
        let gov = Governance::open(dir.path()).unwrap();
        (dir, g, gov)
    };
    let r = erasure::resume(&g, &gov).unwrap();
    assert_eq!(r.recorded, vec![id]);
    let (events, receipts) = recorded(&gov);
    assert_eq!(events.len(), 1, "recorded once");
    // Both targets' faces: the first from the journal (not 0 because its rows had left
    // already), the second deleted by the resumption.
    assert_eq!(events[0].result_count, Some(10));
    assert_eq!(events[0].details["resumed_after_interruption"], true);
    assert_eq!(receipts[0]["faces"], 10);
    assert_eq!(receipts[0]["sources"], 2);
    assert_eq!(g.stats().unwrap().collections[0].faces, 0);
    settled(&g, &gov);
    // Nothing left to resume.
    assert!(erasure::resume(&g, &gov).unwrap().recorded.is_empty());
    assert_eq!(recorded(&gov).0.len(), 1);
    drop(dir);
}

#[test]
fn interrupted_before_the_gallery_is_finished_by_the_next_opener() {
    let (_d, g, gov, a, _) = setup();
    let o = order(vec![DeleteTarget::Source(a)]);
    gov.begin_change("gallery_deletion", &serde_json::to_value(&o).unwrap())
        .unwrap();
    // A second writer process is refused (the data directory's lock); two threads resuming
    // at once record it once.
    assert!(Gallery::open(_d.path(), Access::ReadWrite).is_err());
    let (r1, r2) = std::thread::scope(|s| {
        let t = s.spawn(|| erasure::resume(&g, &gov));
        (erasure::resume(&g, &gov), t.join().unwrap())
    });
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert!(!r1.recorded.is_empty() || !r2.recorded.is_empty());
    let (events, receipts) = recorded(&gov);
    assert_eq!((events.len(), receipts.len()), (1, 1), "recorded once");
    assert_eq!(events[0].result_count, Some(6));
    assert_eq!(g.stats().unwrap().collections[0].faces, 4);
    settled(&g, &gov);
}

#[test]
fn a_journal_left_after_the_record_is_forgotten_without_a_second_record() {
    let (_d, g, gov, a, _) = setup();
    let o = order(vec![DeleteTarget::Source(a)]);
    let id = gov
        .begin_change("gallery_deletion", &serde_json::to_value(&o).unwrap())
        .unwrap();
    g.delete_journaled(&DeleteTarget::Source(a), &format!("{id}/0"))
        .unwrap();
    // Recorded, then the process dies before forgetting the journal.
    gov.finish_change(&id, None, |_| vec![o.event.clone()])
        .unwrap();
    assert_eq!(g.journaled_intents().unwrap().len(), 1);
    let r = erasure::resume(&g, &gov).unwrap();
    assert!(r.recorded.is_empty());
    assert_eq!(r.stale_journal, 1);
    assert_eq!(recorded(&gov).0.len(), 1);
    settled(&g, &gov);
}
