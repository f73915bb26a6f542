//! The cluster audit log (`visage_cluster::audit::PgAudit`) on a real PostgreSQL
//! (`visage_cluster::testkit`): the governance format end to end (its offline verifier reads
//! our exports), one total order under concurrent appenders in two pools ("processes"), and
//! tampering by a superuser found by verification. Skips with a message when PostgreSQL is not
//! installed (unless `VISAGE_REQUIRE_CLUSTER=1`).

use std::collections::BTreeSet;
use std::io::BufReader;
use std::sync::{Barrier, LazyLock};

use ed25519_dalek::SigningKey;
use serde_json::json;
use visage_cluster::audit::{load_or_create_key, PgAudit};
use visage_cluster::pg::Pool;
use visage_cluster::testkit::Postgres;
use visage_governance::{
    verify_with_public_key, Actor, AuditEvent, GovError, TamperKind, VerifyReport,
    CHECKPOINT_INTERVAL, GENESIS_HASH,
};

static PG: LazyLock<Option<Postgres>> =
    LazyLock::new(|| Postgres::start().expect("starting the PostgreSQL test server"));

/// A migrated fresh database's url, or `None` (skip) without PostgreSQL.
fn database(test: &str) -> Option<String> {
    let Some(pg) = PG.as_ref() else {
        eprintln!("skipped {test}: PostgreSQL is not installed");
        return None;
    };
    let url = pg
        .create_database(&format!("audit_{test}"))
        .expect("creating the test database");
    let pool = Pool::new(&url).expect("connecting");
    pool.migrate().expect("migrating");
    assert_eq!(pool.migrate().expect("migrating again"), Vec::<i32>::new());
    assert_eq!(
        pool.schema_version().unwrap(),
        visage_cluster::pg::SCHEMA_VERSION
    );
    Some(url)
}

fn key(byte: u8) -> SigningKey {
    SigningKey::from_bytes(&[byte; 32])
}

fn event(n: usize) -> AuditEvent {
    let actor = if n.is_multiple_of(3) {
        Actor::system()
    } else {
        Actor::user(n as i64, &format!("user{n}"))
    };
    let mut ev = AuditEvent::new(
        &actor,
        if n.is_multiple_of(2) {
            "search"
        } else {
            "verify"
        },
    )
    .org(1 + (n % 4) as i64)
    .objects([format!("face:{n}"), format!("face:{}", n + 1)])
    .result_count(n as u64)
    .details(json!({"z": n, "a": {"y": [1.5, null, "é"], "b": true}, "k": 0.1}));
    if n.is_multiple_of(5) {
        ev = ev.case(7).probe_sha256(format!("{:064x}", n)).decided(
            false,
            "deny_rule",
            "no case \"quoted\"",
        );
    }
    ev
}

fn export(audit: &PgAudit) -> Vec<u8> {
    let mut buf = Vec::new();
    audit.export_jsonl(&mut buf, ..).expect("exporting");
    buf
}

fn offline(buf: &[u8], public_key: &str) -> VerifyReport {
    verify_with_public_key(BufReader::new(buf), public_key).expect("verifying the export")
}

fn assert_bad(r: &VerifyReport, seq: u64, kind: TamperKind) {
    assert!(!r.ok, "expected tampering at {seq} ({kind:?}), got {r:?}");
    let b = r.first_bad.as_ref().unwrap();
    assert_eq!((b.seq, b.kind), (seq, kind), "{r:?}");
}

#[test]
fn append_export_verify() {
    let Some(url) = database("append_export_verify") else {
        return;
    };
    let pool = Pool::new(&url).unwrap();
    let audit = PgAudit::new(&pool, key(1));
    assert_eq!(audit.head().unwrap(), None);
    assert_eq!(audit.checkpoint().unwrap(), None);
    let r = audit.verify().unwrap();
    assert!(r.ok && r.records == 0, "{r:?}");

    let mut recs = Vec::new();
    for n in 1..=7 {
        recs.push(audit.append(event(n)).unwrap());
    }
    let mut prev = GENESIS_HASH.to_string();
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        assert_eq!(r.prev_hash, prev);
        assert_eq!(r.compute_hash().as_deref(), Some(r.hash.as_str()));
        prev = r.hash.clone();
    }
    assert_eq!(audit.head().unwrap(), Some((7, prev.clone())));
    // Read back exactly as appended (details included: canonical text round trip).
    assert_eq!(audit.records(.., 100).unwrap(), recs);
    assert_eq!(audit.records(3..=4, 100).unwrap(), recs[2..4].to_vec());
    assert_eq!(audit.records(2.., 2).unwrap(), recs[1..3].to_vec());

    // Invalid events are refused as governance refuses them, and append nothing.
    let e = audit
        .append(AuditEvent::new(&Actor::system(), ""))
        .unwrap_err();
    assert!(
        matches!(e.downcast_ref::<GovError>(), Some(GovError::Invalid(_))),
        "{e:#}"
    );
    let e = audit
        .append(AuditEvent::new(&Actor::system(), "x").details(json!([1])))
        .unwrap_err();
    assert!(matches!(
        e.downcast_ref::<GovError>(),
        Some(GovError::Invalid(_))
    ));
    assert_eq!(audit.head().unwrap().unwrap().0, 7);

    let r = offline(&export(&audit), &audit.public_key_hex());
    assert!(r.ok, "{r:?}");
    assert_eq!((r.records, r.checkpoints, r.head_seq), (7, 0, Some(7)));
    assert_eq!(r.head_hash.as_deref(), Some(prev.as_str()));
    assert_eq!(r.unsigned_tail, 7);

    // A checkpoint at the head signs it; asking again returns the same one.
    let cp = audit.checkpoint().unwrap().unwrap();
    assert_eq!((cp.seq, cp.hash.as_str()), (7, prev.as_str()));
    assert!(cp.verify(&key(1).verifying_key()));
    assert_eq!(audit.checkpoint().unwrap(), Some(cp.clone()));
    assert_eq!(audit.checkpoints().unwrap(), vec![cp]);
    let r = audit.verify().unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!((r.last_checkpoint, r.unsigned_tail), (Some(7), 0));

    // A partial export verifies too.
    let mut buf = Vec::new();
    let s = audit.export_jsonl(&mut buf, 3..=5).unwrap();
    assert_eq!(
        (s.first_seq, s.last_seq, s.records, s.checkpoints),
        (3, 5, 3, 0)
    );
    assert!(offline(&buf, &audit.public_key_hex()).ok);

    // A process with another key is refused: its checkpoints would not verify.
    let other = PgAudit::new(&pool, key(2));
    let e = other.append(event(8)).unwrap_err();
    assert!(format!("{e:#}").contains("audit_key_file"), "{e:#}");
    assert!(other.checkpoint().is_err());
    assert_eq!(audit.head().unwrap().unwrap().0, 7);
}

#[test]
fn key_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys/audit.key");
    let a = load_or_create_key(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim(), hex::encode(a.to_bytes()));
    assert_eq!(load_or_create_key(&path).unwrap().to_bytes(), a.to_bytes());
    // The raw 32-byte seed is accepted too.
    let raw = dir.path().join("raw.key");
    std::fs::write(&raw, [9u8; 32]).unwrap();
    assert_eq!(load_or_create_key(&raw).unwrap().to_bytes(), [9u8; 32]);
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "not a key").unwrap();
    assert!(load_or_create_key(&bad).is_err());
}

#[test]
fn concurrent_appends_from_two_pools() {
    let Some(url) = database("concurrent") else {
        return;
    };
    const TOTAL: usize = 250;
    const THREADS_PER_POOL: usize = 4;
    let pools = [Pool::new(&url).unwrap(), Pool::new(&url).unwrap()];
    let threads = pools.len() * THREADS_PER_POOL;
    let barrier = Barrier::new(threads);
    let mut seqs: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let pool = &pools[t / THREADS_PER_POOL];
                let barrier = &barrier;
                s.spawn(move || {
                    let audit = PgAudit::new(pool, key(3));
                    barrier.wait();
                    (t..TOTAL)
                        .step_by(threads)
                        .map(|n| audit.append(event(n)).expect("appending").seq)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    seqs.sort();
    assert_eq!(seqs, (1..=TOTAL as u64).collect::<Vec<_>>());

    let audit = PgAudit::new(&pools[0], key(3));
    let recs = audit.records(.., 1000).unwrap();
    assert_eq!(recs.len(), TOTAL);
    let actions: BTreeSet<&str> = recs.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, BTreeSet::from(["search", "verify"]));
    let cps = audit.checkpoints().unwrap();
    assert_eq!(
        cps.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![CHECKPOINT_INTERVAL, 2 * CHECKPOINT_INTERVAL]
    );
    for cp in &cps {
        assert!(cp.verify(&key(3).verifying_key()));
        assert_eq!(cp.hash, recs[cp.seq as usize - 1].hash);
    }
    let r = audit.verify().unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(
        (r.records, r.checkpoints, r.last_checkpoint, r.unsigned_tail),
        (TOTAL as u64, 2, Some(200), 50)
    );
    let r = offline(&export(&audit), &audit.public_key_hex());
    assert!(r.ok, "{r:?}");
    assert_eq!(r.head_seq, Some(TOTAL as u64));
}

/// As the superuser, with `sql` run with the append-only trigger disabled.
fn tamper(url: &str, sql: &str) {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.batch_execute(&format!(
        "BEGIN; ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only; {sql}; \
         ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only; COMMIT;"
    ))
    .unwrap();
}

#[test]
fn tampering_is_found() {
    let Some(url) = database("tampering") else {
        return;
    };
    let pool = Pool::new(&url).unwrap();
    let audit = PgAudit::new(&pool, key(4));
    for n in 1..=150 {
        audit.append(event(n)).unwrap();
    }
    assert!(audit.verify().unwrap().ok);
    let pk = audit.public_key_hex();

    // The triggers refuse changes (even to the superuser while they are enabled).
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for sql in [
        "UPDATE audit_log SET reason = 'x' WHERE seq = 42",
        "DELETE FROM audit_log WHERE seq = 42",
        "TRUNCATE audit_log",
        "DELETE FROM audit_checkpoint",
        "DELETE FROM audit_head",
    ] {
        let e = c.batch_execute(sql).unwrap_err();
        assert!(format!("{e:?}").contains("append-only"), "{sql}: {e:?}");
    }

    // Altered content: found at that seq, here and offline.
    tamper(
        &url,
        "UPDATE audit_log SET reason = 'nothing to see' WHERE seq = 42",
    );
    assert_bad(&audit.verify().unwrap(), 42, TamperKind::Altered);
    assert_bad(&offline(&export(&audit), &pk), 42, TamperKind::Altered);
    let original = event(42).reason;
    tamper(
        &url,
        &format!("UPDATE audit_log SET reason = '{original}' WHERE seq = 42"),
    );
    assert!(audit.verify().unwrap().ok);

    // Details that are no longer JSON: reported as altered, not an error.
    tamper(
        &url,
        "UPDATE audit_log SET details = 'garbage' WHERE seq = 17",
    );
    let r = audit.verify().unwrap();
    assert_bad(&r, 17, TamperKind::Altered);
    assert!(audit.records(17..=17, 1).is_err());

    // Deleted records: the last one (the head still names it), then one in the middle.
    let Some(url2) = database("tampering_delete") else {
        return;
    };
    let pool2 = Pool::new(&url2).unwrap();
    let audit2 = PgAudit::new(&pool2, key(4));
    for n in 1..=150 {
        audit2.append(event(n)).unwrap();
    }
    tamper(&url2, "DELETE FROM audit_log WHERE seq = 150");
    assert_bad(&audit2.verify().unwrap(), 150, TamperKind::Deleted);
    assert_bad(&offline(&export(&audit2), &pk), 150, TamperKind::Deleted);
    tamper(&url2, "DELETE FROM audit_log WHERE seq = 120");
    assert_bad(&audit2.verify().unwrap(), 120, TamperKind::Deleted);
    assert_bad(&offline(&export(&audit2), &pk), 120, TamperKind::Deleted);

    // The tail cut and the head moved back to match: the signed checkpoint at 100 shows it.
    let Some(url3) = database("tampering_cut") else {
        return;
    };
    let pool3 = Pool::new(&url3).unwrap();
    let audit3 = PgAudit::new(&pool3, key(4));
    for n in 1..=120 {
        audit3.append(event(n)).unwrap();
    }
    tamper(&url3, "DELETE FROM audit_log WHERE seq = 120");
    assert_bad(&audit3.verify().unwrap(), 120, TamperKind::Deleted);
    tamper(
        &url3,
        "DELETE FROM audit_log WHERE seq >= 90; \
         UPDATE audit_head SET (seq, hash) = \
         (89, (SELECT hash FROM audit_log WHERE seq = 89))",
    );
    assert_bad(&audit3.verify().unwrap(), 90, TamperKind::Deleted);

    // A record written around the append path (past the head).
    let Some(url4) = database("tampering_insert") else {
        return;
    };
    let pool4 = Pool::new(&url4).unwrap();
    let audit4 = PgAudit::new(&pool4, key(4));
    for n in 1..=5 {
        audit4.append(event(n)).unwrap();
    }
    tamper(
        &url4,
        "UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit_log WHERE seq = 4)",
    );
    assert_bad(&audit4.verify().unwrap(), 5, TamperKind::Inserted);
}

#[test]
fn export_file_verifies_offline_only_with_the_right_key() {
    let Some(url) = database("offline") else {
        return;
    };
    let pool = Pool::new(&url).unwrap();
    let audit = PgAudit::new(&pool, key(5));
    for n in 1..=130 {
        audit.append(event(n)).unwrap();
    }
    audit.checkpoint().unwrap().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let s = audit
        .export_jsonl(std::fs::File::create(&path).unwrap(), ..)
        .unwrap();
    assert_eq!(
        (s.first_seq, s.last_seq, s.records, s.checkpoints),
        (1, 130, 130, 2)
    );

    // What `visage audit verify --file audit.jsonl --public-key HEX` runs.
    let read = || BufReader::new(std::fs::File::open(&path).unwrap());
    let r = verify_with_public_key(read(), &audit.public_key_hex()).unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(
        (r.records, r.checkpoints, r.last_checkpoint, r.unsigned_tail),
        (130, 2, Some(130), 0)
    );
    let wrong = hex::encode(key(6).verifying_key().to_bytes());
    let r = verify_with_public_key(read(), &wrong).unwrap();
    assert_bad(&r, 100, TamperKind::BadSignature);
}
