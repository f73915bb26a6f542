//! The audit log detects tampering at the exact record, in the database and in exports.

mod common;

use rusqlite::{params, Connection};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::OnceLock;
use visage_governance::*;

const N: u64 = 250;

/// A template directory holding a 250-record log, built once and copied per test case.
fn template() -> &'static Path {
    static T: OnceLock<tempfile::TempDir> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        {
            let gov = Governance::open(dir.path()).unwrap();
            for i in 1..=N {
                let actor = if i % 7 == 0 {
                    Actor::public()
                } else {
                    Actor::user(i as i64 % 5 + 1, "inv")
                };
                let mut ev = AuditEvent::new(
                    &actor,
                    if i % 3 == 0 { "search" } else { "read_face" },
                )
                .objects([format!("face:{i}"), format!("face:{}", i + 1)])
                .details(
                    json!({"purpose": format!("purpose {i}"), "nested": {"b": i, "a": [1, 2]}}),
                )
                .decided(i % 11 != 0, "investigator", "investigator permissions");
                if i % 2 == 0 {
                    ev = ev.org(1).case(i as i64 / 10).result_count(i);
                }
                if i % 3 == 0 {
                    ev = ev.probe_sha256(format!("{:064x}", i));
                }
                let rec = gov.append(ev).unwrap();
                assert_eq!(rec.seq, i);
            }
        }
        dir
    })
    .path()
}

/// A fresh copy of the template; returns (dir, connection with the triggers dropped).
fn copy() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    for f in [DB_FILE, KEY_FILE] {
        std::fs::copy(template().join(f), dir.path().join(f)).unwrap();
    }
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;
         DROP TRIGGER audit_checkpoint_no_update; DROP TRIGGER audit_checkpoint_no_delete;",
    )
    .unwrap();
    (dir, conn)
}

fn verify_dir(dir: &Path) -> VerifyReport {
    Governance::open(dir).unwrap().verify().unwrap()
}

fn assert_bad(r: &VerifyReport, seq: u64, kind: TamperKind, what: &str) {
    assert!(!r.ok, "{what}: tampering not detected: {r:?}");
    let b = r.first_bad.as_ref().unwrap();
    assert_eq!((b.seq, b.kind), (seq, kind), "{what}: {}", b.message);
}

#[test]
fn clean_chain_verifies() {
    let (dir, _conn) = copy();
    let gov = Governance::open(dir.path()).unwrap();
    let r = gov.verify().unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!((r.records, r.checkpoints), (N, 2));
    assert_eq!(
        (r.head_seq, r.last_checkpoint, r.unsigned_tail),
        (Some(N), Some(200), 50)
    );
    let cp = gov.checkpoint().unwrap().unwrap();
    assert_eq!(cp.seq, N);
    let r = gov.verify().unwrap();
    assert!(r.ok);
    assert_eq!(
        (r.checkpoints, r.last_checkpoint, r.unsigned_tail),
        (3, Some(N), 0)
    );
    // Checkpoints are at 100, 200 and the explicit one.
    let seqs: Vec<u64> = gov.checkpoints().unwrap().iter().map(|c| c.seq).collect();
    assert_eq!(seqs, vec![100, 200, 250]);
    // Records are readable.
    let recs = gov.audit_records(3..=3, 10).unwrap();
    assert_eq!(
        recs[0].probe_sha256.as_deref(),
        Some(format!("{:064x}", 3).as_str())
    );
    assert_eq!(recs[0].compute_hash().unwrap(), recs[0].hash);
}

#[test]
fn triggers_refuse_update_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let gov = Governance::open(dir.path()).unwrap();
    gov.append(AuditEvent::new(&Actor::system(), "x")).unwrap();
    gov.checkpoint().unwrap();
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    assert!(conn.execute("UPDATE audit SET actor = 'x'", []).is_err());
    assert!(conn.execute("DELETE FROM audit", []).is_err());
    assert!(conn
        .execute("UPDATE audit_checkpoint SET hash = 'x'", [])
        .is_err());
    assert!(conn.execute("DELETE FROM audit_checkpoint", []).is_err());
}

/// SQL that changes one column of one row, for every column but seq.
const FIELD_EDITS: &[(&str, &str)] = &[
    ("ts", "ts = ts + 1"),
    ("actor_user_id", "actor_user_id = coalesce(actor_user_id, 0) + 1"),
    ("actor", "actor = 'mallory'"),
    ("org_id", "org_id = coalesce(org_id, 0) + 1"),
    ("case_id", "case_id = coalesce(case_id, 0) + 1"),
    ("case_id null", "case_id = CASE WHEN case_id IS NULL THEN 5 ELSE NULL END"),
    ("action", "action = 'tampered'"),
    ("object_ids", "object_ids = '[\"face:999\"]'"),
    ("object_ids order", "object_ids = (SELECT json_array(json_extract(object_ids, '$[1]'), json_extract(object_ids, '$[0]')))"),
    ("allowed", "allowed = 1 - allowed"),
    ("rule", "rule = 'admin'"),
    ("reason", "reason = reason || '.'"),
    ("result_count", "result_count = coalesce(result_count, 0) + 1"),
    ("probe_sha256", "probe_sha256 = CASE WHEN probe_sha256 IS NULL THEN printf('%064d', 1) ELSE NULL END"),
    ("details", "details = '{\"purpose\":\"nothing to see\"}'"),
    ("details invalid", "details = '{not json'"),
    ("prev_hash", "prev_hash = printf('%064d', 7)"),
    ("prev_hash garbage", "prev_hash = 'zz'"),
    ("hash", "hash = printf('%064d', 7)"),
    ("ts type", "ts = 'yesterday'"),
];

#[test]
fn every_single_field_edit_is_found_at_its_record() {
    for &seq in &[1u64, 2, 99, 100, 150, 201, N] {
        for (name, set) in FIELD_EDITS {
            let (dir, conn) = copy();
            let n = conn
                .execute(&format!("UPDATE audit SET {set} WHERE seq = ?1"), [seq])
                .unwrap();
            assert_eq!(n, 1);
            assert_bad(
                &verify_dir(dir.path()),
                seq,
                TamperKind::Altered,
                &format!("{name} of {seq}"),
            );
        }
    }
}

#[test]
fn deletion_is_found_at_the_first_missing_record() {
    for seq in [1u64, 2, 100, 150, 199, 200, 249] {
        let (dir, conn) = copy();
        conn.execute("DELETE FROM audit WHERE seq = ?1", [seq])
            .unwrap();
        assert_bad(
            &verify_dir(dir.path()),
            seq,
            TamperKind::Deleted,
            &format!("delete {seq}"),
        );
    }
    // Several consecutive records.
    let (dir, conn) = copy();
    conn.execute("DELETE FROM audit WHERE seq BETWEEN 120 AND 130", [])
        .unwrap();
    assert_bad(
        &verify_dir(dir.path()),
        120,
        TamperKind::Deleted,
        "delete 120..=130",
    );
    // Deleted and the later records renumbered to close the gap.
    let (dir, conn) = copy();
    conn.execute("DELETE FROM audit WHERE seq = 150", [])
        .unwrap();
    conn.execute("UPDATE audit SET seq = seq - 1 WHERE seq > 150", [])
        .unwrap();
    assert_bad(
        &verify_dir(dir.path()),
        150,
        TamperKind::Deleted,
        "delete 150 and renumber",
    );
}

#[test]
fn swapping_adjacent_records_is_found() {
    for seq in [1u64, 99, 100, 150, N - 1] {
        let (dir, conn) = copy();
        conn.execute_batch(&format!(
            "UPDATE audit SET seq = -1 WHERE seq = {seq};
             UPDATE audit SET seq = {seq} WHERE seq = {};
             UPDATE audit SET seq = {} WHERE seq = -1;",
            seq + 1,
            seq + 1
        ))
        .unwrap();
        assert_bad(
            &verify_dir(dir.path()),
            seq,
            TamperKind::Reordered,
            &format!("swap {seq}"),
        );
    }
}

#[test]
fn tail_truncation_after_a_checkpoint_is_found() {
    for keep in [0u64, 1, 99, 150, 199] {
        let (dir, conn) = copy();
        conn.execute("DELETE FROM audit WHERE seq > ?1", [keep])
            .unwrap();
        let r = verify_dir(dir.path());
        assert_bad(
            &r,
            keep + 1,
            TamperKind::Deleted,
            &format!("truncate after {keep}"),
        );
    }
    // Cut exactly at the last checkpoint: nothing signed is missing, but the report says the
    // log now ends there with no unsigned tail (the limit of signed checkpoints).
    let (dir, conn) = copy();
    conn.execute("DELETE FROM audit WHERE seq > 200", [])
        .unwrap();
    let r = verify_dir(dir.path());
    assert!(r.ok);
    assert_eq!((r.head_seq, r.unsigned_tail), (Some(200), 0));
}

#[test]
fn checkpoint_tampering_is_found() {
    let (dir, conn) = copy();
    conn.execute(
        "UPDATE audit_checkpoint SET signature = printf('%0128d', 0) WHERE seq = 100",
        [],
    )
    .unwrap();
    assert_bad(
        &verify_dir(dir.path()),
        100,
        TamperKind::BadSignature,
        "signature",
    );
    let (dir, conn) = copy();
    conn.execute(
        "UPDATE audit_checkpoint SET hash = printf('%064d', 1) WHERE seq = 200",
        [],
    )
    .unwrap();
    assert_bad(
        &verify_dir(dir.path()),
        200,
        TamperKind::BadSignature,
        "checkpoint hash",
    );
    let (dir, conn) = copy();
    conn.execute("DELETE FROM audit_checkpoint WHERE seq = 200", [])
        .unwrap();
    assert_bad(
        &verify_dir(dir.path()),
        200,
        TamperKind::CheckpointMissing,
        "checkpoint deleted",
    );
    // A key swapped for another: every old checkpoint fails.
    let (dir, _conn) = copy();
    std::fs::write(dir.path().join(KEY_FILE), format!("{}\n", "11".repeat(32))).unwrap();
    assert_bad(
        &verify_dir(dir.path()),
        100,
        TamperKind::BadSignature,
        "other key",
    );
}

fn read_all(conn: &Connection) -> Vec<AuditRecord> {
    let mut st = conn
        .prepare(
            "SELECT seq, ts, actor_user_id, actor, org_id, case_id, action, object_ids, allowed, rule,
                    reason, result_count, probe_sha256, details, prev_hash, hash
             FROM audit ORDER BY seq",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok(AuditRecord {
            seq: r.get::<_, i64>(0)? as u64,
            ts: r.get(1)?,
            actor_user_id: r.get(2)?,
            actor: r.get(3)?,
            org_id: r.get(4)?,
            case_id: r.get(5)?,
            action: r.get(6)?,
            object_ids: serde_json::from_str(&r.get::<_, String>(7)?).unwrap(),
            allowed: r.get(8)?,
            rule: r.get(9)?,
            reason: r.get(10)?,
            result_count: r.get::<_, Option<i64>>(11)?.map(|n| n as u64),
            probe_sha256: r.get(12)?,
            details: serde_json::from_str(&r.get::<_, String>(13)?).unwrap(),
            prev_hash: r.get(14)?,
            hash: r.get(15)?,
        })
    })
    .unwrap()
    .collect::<Result<Vec<_>, _>>()
    .unwrap()
}

#[test]
fn edits_with_recomputed_hashes_are_found() {
    // The attacker edits record 150 and recomputes its hash: record 151 no longer links to it.
    let (dir, conn) = copy();
    let mut recs = read_all(&conn);
    let r = &mut recs[149];
    r.actor = "mallory".into();
    r.hash = r.compute_hash().unwrap();
    conn.execute(
        "UPDATE audit SET actor = ?2, hash = ?3 WHERE seq = ?1",
        params![150, r.actor, r.hash],
    )
    .unwrap();
    assert_bad(
        &verify_dir(dir.path()),
        150,
        TamperKind::Altered,
        "edit 150 + own hash",
    );

    // The attacker rewrites the whole chain from 150 on: consistent, but the signed
    // checkpoint at 200 no longer matches. The report names the checkpoint.
    let (dir, conn) = copy();
    let mut recs = read_all(&conn);
    recs[149].actor = "mallory".into();
    for i in 149..recs.len() {
        if i > 149 {
            recs[i].prev_hash = recs[i - 1].hash.clone();
        }
        recs[i].hash = recs[i].compute_hash().unwrap();
        conn.execute(
            "UPDATE audit SET actor = ?2, prev_hash = ?3, hash = ?4 WHERE seq = ?1",
            params![
                recs[i].seq as i64,
                recs[i].actor,
                recs[i].prev_hash,
                recs[i].hash
            ],
        )
        .unwrap();
    }
    assert_bad(
        &verify_dir(dir.path()),
        200,
        TamperKind::Altered,
        "rewritten chain",
    );
    // ... and with the checkpoint deleted too, the missing checkpoint shows.
    conn.execute("DELETE FROM audit_checkpoint WHERE seq = 200", [])
        .unwrap();
    assert_bad(
        &verify_dir(dir.path()),
        200,
        TamperKind::CheckpointMissing,
        "rewritten, cp deleted",
    );
}

// ---- exports and the offline verifier ------------------------------------------------------

fn export(range: impl std::ops::RangeBounds<u64>) -> (String, Vec<Value>, String) {
    let (dir, _conn) = copy();
    let gov = Governance::open(dir.path()).unwrap();
    let mut buf = Vec::new();
    let s = gov.export_jsonl(&mut buf, range).unwrap();
    assert!(s.records > 0);
    let text = String::from_utf8(buf).unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (text, lines, gov.public_key_hex())
}

fn to_text(lines: &[Value]) -> String {
    lines.iter().map(|v| format!("{v}\n")).collect()
}

fn offline(lines: &[Value], key: &str) -> VerifyReport {
    verify_with_public_key(to_text(lines).as_bytes(), key).unwrap()
}

/// Line index of record `seq` in a full export (line 0 is the header).
fn line_of(seq: u64) -> usize {
    seq as usize
}

#[test]
fn export_format_and_clean_offline_verification() {
    let (text, lines, key) = export(..);
    assert_eq!(lines[0]["type"], "header");
    assert_eq!(lines[0]["format"], "visage-audit-export");
    assert_eq!(lines[0]["public_key"], key.as_str());
    assert_eq!(
        (
            lines[0]["first_seq"].as_u64(),
            lines[0]["last_seq"].as_u64()
        ),
        (Some(1), Some(N))
    );
    assert_eq!(
        lines.iter().filter(|l| l["type"] == "record").count() as u64,
        N
    );
    assert_eq!(
        lines.iter().filter(|l| l["type"] == "checkpoint").count(),
        2
    );
    assert_eq!(lines[line_of(7)]["seq"], 7);
    let r = verify_with_public_key(text.as_bytes(), &key).unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(
        (r.records, r.checkpoints, r.last_checkpoint),
        (N, 2, Some(200))
    );

    // A partial export verifies on its own, with its checkpoints.
    let (text, lines, key) = export(101..=220);
    assert_eq!(lines.iter().filter(|l| l["type"] == "record").count(), 120);
    let r = verify_with_public_key(text.as_bytes(), &key).unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(
        (r.head_seq, r.last_checkpoint, r.unsigned_tail),
        (Some(220), Some(200), 20)
    );

    // Another installation's public key: no checkpoint verifies; a malformed key is an error.
    assert_eq!(
        verify_with_public_key(text.as_bytes(), "abcd")
            .unwrap_err()
            .code(),
        "invalid"
    );
    let (_t, lines, _key) = export(..);
    let other = tempfile::tempdir().unwrap();
    let other_key = Governance::open(other.path()).unwrap().public_key_hex();
    let r = offline(&lines, &other_key);
    assert_bad(&r, 100, TamperKind::BadSignature, "foreign key");
}

#[test]
fn offline_verifier_finds_every_field_edit() {
    let (_text, lines, key) = export(..);
    type Edit = Box<dyn Fn(&mut Value)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("seq", Box::new(|v| v["seq"] = json!(9999))),
        (
            "ts",
            Box::new(|v| v["ts"] = json!(v["ts"].as_i64().unwrap() - 1)),
        ),
        (
            "actor_user_id",
            Box::new(|v| v["actor_user_id"] = json!(42)),
        ),
        ("actor", Box::new(|v| v["actor"] = json!("mallory"))),
        ("org_id", Box::new(|v| v["org_id"] = json!(77))),
        ("case_id", Box::new(|v| v["case_id"] = json!(77))),
        ("action", Box::new(|v| v["action"] = json!("verify"))),
        (
            "object_ids",
            Box::new(|v| v["object_ids"] = json!(["face:1"])),
        ),
        (
            "allowed",
            Box::new(|v| v["allowed"] = json!(!v["allowed"].as_bool().unwrap())),
        ),
        ("rule", Box::new(|v| v["rule"] = json!("x"))),
        ("reason", Box::new(|v| v["reason"] = json!("x"))),
        (
            "result_count",
            Box::new(|v| v["result_count"] = json!(12345)),
        ),
        (
            "probe_sha256",
            Box::new(|v| v["probe_sha256"] = json!("0".repeat(64))),
        ),
        (
            "details",
            Box::new(|v| v["details"]["purpose"] = json!("other")),
        ),
        (
            "details added key",
            Box::new(|v| v["details"]["extra"] = json!(1)),
        ),
        (
            "prev_hash",
            Box::new(|v| v["prev_hash"] = json!("1".repeat(64))),
        ),
        ("hash", Box::new(|v| v["hash"] = json!("2".repeat(64)))),
        (
            "missing field",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("rule");
            }),
        ),
    ];
    for seq in [1u64, 100, 150, N] {
        for (name, edit) in &edits {
            let mut l = lines.clone();
            edit(&mut l[line_of(seq)]);
            assert_bad(
                &offline(&l, &key),
                seq,
                TamperKind::Altered,
                &format!("jsonl {name} of {seq}"),
            );
        }
    }
    // Garbage instead of a record line.
    let mut text = to_text(&lines);
    let target = format!("{}\n", lines[line_of(42)]);
    text = text.replace(&target, "{this is not json\n");
    let r = verify_with_public_key(text.as_bytes(), &key).unwrap();
    assert_bad(&r, 42, TamperKind::Altered, "garbage line");
}

#[test]
fn offline_verifier_finds_deletion_swap_insertion_truncation() {
    let (_text, lines, key) = export(..);
    // Deleted line.
    for seq in [1u64, 100, 150, N - 1] {
        let mut l = lines.clone();
        l.remove(line_of(seq));
        assert_bad(
            &offline(&l, &key),
            seq,
            TamperKind::Deleted,
            &format!("jsonl delete {seq}"),
        );
    }
    // Swapped lines (each keeps its seq).
    for seq in [1u64, 100, 150, N - 1] {
        let mut l = lines.clone();
        l.swap(line_of(seq), line_of(seq + 1));
        assert_bad(
            &offline(&l, &key),
            seq,
            TamperKind::Reordered,
            &format!("jsonl swap {seq}"),
        );
    }
    // Duplicated (re-inserted) line.
    let mut l = lines.clone();
    let dup = l[line_of(120)].clone();
    l.insert(line_of(121), dup);
    assert_bad(
        &offline(&l, &key),
        120,
        TamperKind::Inserted,
        "jsonl duplicate 120",
    );
    // Tail cut, checkpoint lines kept: the checkpoint at 200 names a missing record.
    let mut l = lines.clone();
    l.retain(|v| v["type"] != "record" || v["seq"].as_u64().unwrap() <= 180);
    assert_bad(
        &offline(&l, &key),
        181,
        TamperKind::Deleted,
        "jsonl truncate records",
    );
    // Tail cut including the checkpoints: the header's last_seq shows it.
    let mut l = lines.clone();
    l.retain(|v| {
        v["type"] == "header" || (v["type"] == "record" && v["seq"].as_u64().unwrap() <= 230)
    });
    assert_bad(
        &offline(&l, &key),
        100,
        TamperKind::CheckpointMissing,
        "jsonl truncate all",
    );
    let mut l = lines.clone();
    l.retain(|v| {
        v["type"] != "checkpoint" && (v["type"] != "record" || v["seq"].as_u64().unwrap() <= 230)
    });
    let mut with_cps: Vec<Value> = l.clone();
    with_cps.extend(
        lines
            .iter()
            .filter(|v| v["type"] == "checkpoint" && v["seq"] == 100)
            .cloned(),
    );
    let r = offline(&with_cps, &key);
    assert_bad(
        &r,
        200,
        TamperKind::CheckpointMissing,
        "jsonl truncate, checkpoint 200 dropped",
    );
    // Checkpoint signature edited.
    let mut l = lines.clone();
    let cp = l
        .iter_mut()
        .find(|v| v["type"] == "checkpoint" && v["seq"] == 200)
        .unwrap();
    cp["hash"] = json!("3".repeat(64));
    assert_bad(
        &offline(&l, &key),
        200,
        TamperKind::BadSignature,
        "jsonl checkpoint",
    );
}

/// Floats in details survive storage bit for bit, so a clean log with them verifies (their
/// text is part of the hash).
#[test]
fn floats_in_details_verify() {
    let dir = tempfile::tempdir().unwrap();
    let gov = Governance::open(dir.path()).unwrap();
    for (i, x) in [
        0.9999997f64,
        1e-7,
        0.1 + 0.2,
        123456.789012345,
        -0.0,
        3.0e-310,
    ]
    .into_iter()
    .enumerate()
    {
        gov.append(
            AuditEvent::new(&Actor::system(), "verify")
                .details(json!({"similarity": x, "f32": (x as f32) as f64, "i": i})),
        )
        .unwrap();
    }
    let r = gov.verify().unwrap();
    assert!(r.ok, "{r:?}");
}
