//! Data-subject requests and erasure over the cluster API (issue #7, "same guarantees"), on
//! real LFW faces, against an embedded gallery of the same photos:
//!
//! - an opt-out by selfie through `POST /v1/public/opt-out` deletes the person's faces from
//!   the cluster (PostgreSQL, bucket, vector store) as the embedded opt-out does from the
//!   embedded gallery, answers a receipt signed with the cluster's audit key, and its status
//!   is readable by request id;
//! - afterwards a governed search with another photo of the person returns none of their
//!   faces, and a worker re-ingesting their photos stores none of their faces;
//! - a data-subject access request reports another person's faces with thumbnails; a
//!   governed search with one of those stored faces finds the person's other faces; faces
//!   are read, their thumbnails fetched, and deleted (compliance role only);
//! - erasure by jurisdiction (compliance role only) removes exactly that source's faces and
//!   answers a signed receipt; the store checks clean and the audit log verifies, holding one
//!   record per request and per receipt; over HTTP an auditor pages through exactly the
//!   organisation's records and verifies the log.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cluster::*;
use common::{calibrated, copy_people, lfw, people_dirs, spread};
use serde_json::{json, Value};

fn b64(path: &Path) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

/// Faces per subject label in the cluster's collection `main`.
fn cluster_subjects(pg: &mut postgres::Client) -> BTreeMap<String, i64> {
    pg.query(
        "SELECT s.label, count(*) FROM face f JOIN subject s ON s.id = f.subject_id \
         JOIN collection c ON c.id = f.collection_id WHERE c.name = 'main' GROUP BY s.label",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Faces per subject label in the embedded gallery's collection `main` (labelled only).
fn embedded_subjects(data: &Path) -> BTreeMap<String, i64> {
    common::faces_per_subject(data, "main")
        .into_iter()
        .filter(|(l, _)| l != "-")
        .map(|(l, n)| (l, n as i64))
        .collect()
}

/// Runs one worker until the queue is empty.
fn drain(config: &Path, log: &Path) {
    let mut w = worker(config, log);
    let status = w.0.wait().unwrap();
    assert!(
        status.success(),
        "worker: {}",
        std::fs::read_to_string(log).unwrap()
    );
}

/// A receipt from an answer: it verifies with its own key, which is the cluster's audit key,
/// and an edited copy does not.
fn check_receipt(v: &Value, kind: &str, public_key: &str) -> visage_governance::Receipt {
    let r: visage_governance::Receipt =
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"));
    assert_eq!(r.kind, kind);
    r.verify().expect("the receipt verifies");
    assert_eq!(
        r.public_key_hex, public_key,
        "signed with the cluster's audit key"
    );
    let mut forged = r.clone();
    forged.body["faces_deleted"] = json!(0);
    forged.body["faces"] = json!(0);
    assert!(
        forged.verify().is_err(),
        "an edited receipt does not verify"
    );
    r
}

#[test]
fn opt_out_access_and_erasure_over_the_cluster_api() {
    let Some(lfw) = lfw() else { return };
    if !calibrated("open") {
        return;
    }
    let Some((pg, s3)) = servers() else { return };
    let all = people_dirs(&lfw);
    // Three people with 8 to 30 photos (spread over the alphabet), 120 others, and 20 more
    // as a second source in another jurisdiction.
    let three = spread(&all, 3);
    let rest: Vec<&(String, Vec<PathBuf>)> = all
        .iter()
        .filter(|p| !three.iter().any(|t| t.0 == p.0))
        .collect();
    let others: Vec<&(String, Vec<PathBuf>)> = rest.iter().take(120).copied().collect();
    let extra: Vec<&(String, Vec<PathBuf>)> = rest.iter().rev().take(20).copied().collect();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let photos = root.join("photos");
    copy_people(&three, &photos);
    copy_people(&others, &photos);
    let extra_dir = root.join("extra");
    copy_people(&extra, &extra_dir);
    let (leaver, asker) = (three[0], three[1]);

    // The embedded reference: the same photos, the same opt-out.
    let data = root.join("embedded");
    common::run_json(
        &[
            "ingest",
            photos.to_str().unwrap(),
            "--collection",
            "main",
            "--subject-from-parent",
            "--json",
        ],
        &data,
    );
    let emb_before = embedded_subjects(&data);
    let emb_out = common::run_json(
        &[
            "opt-out",
            leaver.1[0].to_str().unwrap(),
            "--request-id",
            "reference",
            "--json",
        ],
        &data,
    );
    let emb_after = embedded_subjects(&data);

    // The cluster: one API server, one worker at a time.
    let url = pg.create_database("requests").unwrap();
    let s3cfg = s3.create_bucket("requests").unwrap();
    let config = write_config(&root, &url, &s3cfg, "requests");
    add_agency(&config);
    let admin = add_key(&config, "admin", "admin", "agency");
    let investigator = add_key(&config, "inv", "investigator", "agency");
    let dpo = add_key(&config, "dpo", "compliance", "agency");
    let (_api, a) = serve(&config, &root);
    let job = |path: &Path, source: Value| -> i64 {
        post(
            &format!("{a}/v1/ingest/jobs"),
            &admin,
            &json!({"collection": "main", "path": path, "source": source,
                    "options": {"subject_from_parent": true}}),
        )["id"]
            .as_i64()
            .unwrap()
    };
    let main_job = job(
        &photos,
        json!({"name": "photos", "legal_basis": "research licence (test)"}),
    );
    let extra_job = job(
        &extra_dir,
        json!({"name": "extra", "legal_basis": "research licence (test)", "jurisdiction": "DE"}),
    );
    drain(&config, &root.join("w1.log"));
    let limit = Duration::from_secs(600);
    wait_job(&a, &admin, main_job, limit);
    wait_job(&a, &admin, extra_job, limit);
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let before = cluster_subjects(&mut db);
    let extra_labels: Vec<&str> = extra.iter().map(|p| p.0.as_str()).collect();
    let main_before: BTreeMap<String, i64> = before
        .iter()
        .filter(|(l, _)| !extra_labels.contains(&l.as_str()))
        .map(|(l, n)| (l.clone(), *n))
        .collect();
    assert_eq!(main_before, emb_before, "both backends hold the same faces");
    let stats0 = get(&format!("{a}/v1/stats"), &admin);

    // ---- Opt-out by selfie ----
    let public_key = audit_export(&config, &root.join("audit0.jsonl"));
    let (st, r) = call(
        "POST",
        &format!("{a}/v1/public/opt-out"),
        "",
        Some(&json!({"selfie_base64": b64(&leaver.1[0]), "contact": "leaver@example.org"})),
    );
    assert_eq!(st, 201, "{r}");
    let receipt = check_receipt(&r["receipt"], "opt_out", &public_key);
    let deleted = r["summary"]["faces_deleted"].as_u64().unwrap();
    eprintln!(
        "{} ({} faces) opted out: cluster deleted {deleted} faces, embedded {}; \
         suppressed embeddings: cluster {}, embedded {}",
        leaver.0,
        emb_before[&leaver.0],
        emb_out["faces_deleted"],
        r["summary"]["suppressed_embeddings"],
        emb_out["suppressed_embeddings"]
    );
    assert_eq!(
        receipt.body, r["summary"],
        "the receipt attests the summary"
    );
    let after = cluster_subjects(&mut db);
    assert_eq!(after.get(&leaver.0), None, "{} kept faces", leaver.0);
    // Everyone else keeps what the embedded opt-out left them.
    let main_after: BTreeMap<String, i64> = after
        .iter()
        .filter(|(l, _)| !extra_labels.contains(&l.as_str()))
        .map(|(l, n)| (l.clone(), *n))
        .collect();
    assert_eq!(
        main_after, emb_after,
        "the same faces remain on both backends"
    );
    assert_eq!(Some(deleted), emb_out["faces_deleted"].as_u64());
    let stats1 = get(&format!("{a}/v1/stats"), &admin);
    assert_eq!(
        stats1["faces"].as_u64().unwrap(),
        stats0["faces"].as_u64().unwrap() - deleted
    );
    // The request's status, by its id (no key needed; the id is the secret).
    let rid = r["request_id"].as_str().unwrap();
    let (st, s) = call("GET", &format!("{a}/v1/public/requests/{rid}"), "", None);
    assert_eq!(st, 200, "{s}");
    assert_eq!(s["kind"], "opt_out");
    assert_eq!(s["receipt"]["id"].as_str(), Some(receipt.id.as_str()));
    assert_eq!(s["summary"], r["summary"]);
    let (st, _) = call(
        "GET",
        &format!("{a}/v1/public/requests/{}", "0".repeat(32)),
        "",
        None,
    );
    assert_eq!(st, 404);
    // A selfie without a face is the requester's problem, and changes nothing.
    let (st, e) = call(
        "POST",
        &format!("{a}/v1/public/opt-out"),
        "",
        Some(&json!({"selfie_base64": "aGVsbG8=", "contact": "x@example.org"})),
    );
    assert_eq!(st, 422, "{e}");

    // A search with another photo of the person finds none of their faces.
    let (st, case) = call(
        "POST",
        &format!("{a}/v1/cases"),
        &investigator,
        Some(
            &json!({"number": "R-1", "purpose": "missing person inquiry",
                      "legal_basis": "court order 9", "offence_category": "missing_person"}),
        ),
    );
    assert_eq!(st, 201, "{case}");
    let (st, s) = call(
        "POST",
        &format!("{a}/v1/search"),
        &investigator,
        Some(
            &json!({"image_base64": b64(&leaver.1[1]), "case_id": case["id"],
                      "purpose": "missing person inquiry"}),
        ),
    );
    assert_eq!(st, 200, "{s}");
    for pf in s["probe_faces"].as_array().unwrap() {
        for h in pf["hits"].as_array().unwrap() {
            assert_ne!(h["face"]["subject"]["label"], leaver.0.as_str(), "{h}");
        }
    }

    // Re-ingesting their photos stores none of their faces.
    let again = root.join("again");
    copy_people(&[leaver], &again);
    let again_job = job(
        &again,
        json!({"name": "photos", "legal_basis": "research licence (test)"}),
    );
    drain(&config, &root.join("w2.log"));
    let j = wait_job(&a, &admin, again_job, limit);
    assert_eq!(
        j["done"].as_u64(),
        Some(leaver.1.len() as u64),
        "every photo was processed again: {j}"
    );
    eprintln!("re-ingest of {} photos: {j}", leaver.1.len());
    assert_eq!(
        cluster_subjects(&mut db).get(&leaver.0),
        None,
        "re-ingest brought {} back: {j}",
        leaver.0
    );

    // ---- An opt-out whose API process dies half way ----
    // A second API process, killed (by the test hook) right after the opt-out's first
    // deletion committed: the requester gets no answer, and nothing is recorded yet.
    let third = three[2];
    let emb3 = common::run_json(
        &[
            "opt-out",
            third.1[0].to_str().unwrap(),
            "--request-id",
            "reference-3",
            "--json",
        ],
        &data,
    );
    let emb_after3 = embedded_subjects(&data);
    let (mut doomed, d) = serve_with_env(
        &config,
        &root,
        &[("VISAGE_TEST_ABORT_OPT_OUT_AFTER_DELETIONS", "1")],
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let answer = agent
        .post(&format!("{d}/v1/public/opt-out"))
        .content_type("application/json")
        .send(
            json!({"selfie_base64": b64(&third.1[0]), "contact": "third@example.org"}).to_string(),
        );
    assert!(answer.is_err(), "the doomed process answered: {answer:?}");
    let status = doomed.0.wait().unwrap();
    assert!(!status.success(), "the doomed process exited cleanly");
    let pending: Vec<String> = db
        .query("SELECT request_id FROM pending_opt_out", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(pending.len(), 1, "the opt-out is announced: {pending:?}");
    let rid3 = pending[0].clone();
    let partly = cluster_subjects(&mut db)
        .get(&third.0)
        .copied()
        .unwrap_or(0);
    assert!(
        partly < emb_before[&third.0],
        "the doomed process deleted nothing"
    );
    let (st, _) = call("GET", &format!("{a}/v1/public/requests/{rid3}"), "", None);
    assert_eq!(st, 404, "recorded before it was done");
    // The running API process takes it over within a minute (its resumer runs every
    // minute); a process that starts takes it over at once.
    let (_api2, a2) = serve(&config, &root);
    let t0 = std::time::Instant::now();
    loop {
        let n: i64 = db
            .query_one("SELECT count(*) FROM pending_opt_out", &[])
            .unwrap()
            .get(0);
        if n == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the interrupted opt-out was not finished"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (st, s3r) = call("GET", &format!("{a2}/v1/public/requests/{rid3}"), "", None);
    assert_eq!(st, 200, "{s3r}");
    let receipt3 = check_receipt(&s3r["receipt"], "opt_out", &public_key);
    assert_eq!(receipt3.body, s3r["summary"]);
    assert_eq!(s3r["summary"]["resumed_after_interruption"], true, "{s3r}");
    eprintln!(
        "{} ({} faces): the killed process deleted {} before it died; recorded after the \
         takeover: {} faces deleted (embedded, uninterrupted: {})",
        third.0,
        emb_before[&third.0],
        emb_before[&third.0] - partly,
        s3r["summary"]["faces_deleted"],
        emb3["faces_deleted"]
    );
    assert_eq!(
        s3r["summary"]["faces_deleted"], emb3["faces_deleted"],
        "the record counts the faces of both runs"
    );
    let main_after3: BTreeMap<String, i64> = cluster_subjects(&mut db)
        .into_iter()
        .filter(|(l, _)| !extra_labels.contains(&l.as_str()))
        .collect();
    assert_eq!(
        main_after3, emb_after3,
        "the same faces remain on both backends"
    );
    let journal: i64 = db
        .query_one("SELECT count(*) FROM opt_out_journal", &[])
        .unwrap()
        .get(0);
    assert_eq!(journal, 0, "the journal is dropped with the record");

    // ---- Access ----
    let (st, acc) = call(
        "POST",
        &format!("{a}/v1/public/access"),
        "",
        Some(&json!({"selfie_base64": b64(&asker.1[0]), "contact": "asker@example.org"})),
    );
    assert_eq!(st, 200, "{acc}");
    check_receipt(&acc["receipt"], "access", &public_key);
    let faces = acc["report"]["faces"].as_array().unwrap();
    let theirs = faces
        .iter()
        .filter(|f| f["subject"]["label"] == asker.0.as_str())
        .count();
    eprintln!(
        "access request of {} ({} faces): {} faces reported, {theirs} of them labelled theirs",
        asker.0,
        before[&asker.0],
        faces.len()
    );
    assert!(theirs >= 1, "{acc}");
    assert!(faces.iter().all(|f| f["thumbnail"]
        .as_str()
        .is_some_and(|t| t.starts_with("data:image/jpeg;base64,"))));
    assert_eq!(
        acc["receipt"]["body"]["faces"].as_u64(),
        Some(faces.len() as u64)
    );
    assert_eq!(
        cluster_subjects(&mut db).get(&asker.0),
        before.get(&asker.0),
        "access deletes nothing"
    );

    // ---- Faces: search with a stored face, read, thumbnail, delete ----
    let probe_face = faces
        .iter()
        .find(|f| f["subject"]["label"] == asker.0.as_str())
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let face_url = format!("{a}/v1/search/face/{probe_face}");
    let no_case = json!({"purpose": "missing person inquiry", "k": 5});
    expect_refused(&face_url, &investigator, &no_case, "case_required");
    let (st, fs) = call(
        "POST",
        &face_url,
        &investigator,
        Some(&json!({"case_id": case["id"], "purpose": "missing person inquiry", "k": 5})),
    );
    assert_eq!(st, 200, "{fs}");
    let hits = fs["hits"].as_array().unwrap();
    assert!(hits.iter().all(|h| h["face"]["id"] != probe_face), "{fs}");
    let same = hits
        .iter()
        .filter(|h| h["face"]["subject"]["label"] == asker.0.as_str())
        .count();
    eprintln!(
        "search with stored face {probe_face} of {}: {} hits, {same} of them theirs, \
         {} faces searched",
        asker.0,
        hits.len(),
        fs["faces_searched"]
    );
    assert!(same >= 1, "{fs}");
    assert!(fs["audit_id"].as_u64().is_some(), "{fs}");
    let (st, f) = call(
        "GET",
        &format!("{a}/v1/faces/{probe_face}"),
        &investigator,
        None,
    );
    assert_eq!((st, f["id"].as_i64()), (200, Some(probe_face)), "{f}");
    assert_eq!(f["subject"]["label"], asker.0.as_str());
    let thumb = ureq::get(&format!("{a}/v1/faces/{probe_face}/thumbnail"))
        .header("Authorization", &format!("Bearer {investigator}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap();
    assert_eq!(&thumb[..3], &[0xff, 0xd8, 0xff], "a JPEG thumbnail");
    let victim = hits[0]["face"]["id"].as_i64().unwrap();
    let (st, e) = call(
        "DELETE",
        &format!("{a}/v1/faces/{victim}"),
        &investigator,
        None,
    );
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (403, Some("policy_denied")),
        "{e}"
    );
    let (st, del) = call("DELETE", &format!("{a}/v1/faces/{victim}"), &dpo, None);
    assert_eq!((st, del["faces"].as_u64()), (200, Some(1)), "{del}");
    let (st, _) = call(
        "GET",
        &format!("{a}/v1/faces/{victim}"),
        &investigator,
        None,
    );
    assert_eq!(st, 404, "a deleted face is gone");
    let (st, _) = call("DELETE", &format!("{a}/v1/faces/{victim}"), &dpo, None);
    assert_eq!(st, 404, "deleting it again");

    // ---- Erasure by jurisdiction ----
    let extra_faces: i64 = extra_labels
        .iter()
        .map(|l| before.get(*l).copied().unwrap_or(0))
        .sum();
    let unlabelled_extra: i64 = db
        .query_one(
            "SELECT count(*) FROM face f JOIN source s ON s.id = f.source_id \
             WHERE s.name = 'extra' AND f.subject_id IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    let erase_body = json!({"jurisdiction": "de"});
    expect_refused(
        &format!("{a}/v1/erasures"),
        &investigator,
        &erase_body,
        "policy_denied",
    );
    let (st, e) = call(
        "POST",
        &format!("{a}/v1/erasures"),
        &dpo,
        Some(&json!({"jurisdiction": "DE", "source_id": 1})),
    );
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{e}"
    );
    let (st, e) = call("POST", &format!("{a}/v1/erasures"), &dpo, Some(&erase_body));
    assert_eq!(st, 201, "{e}");
    let receipt = check_receipt(&e["receipt"], "erasure", &public_key);
    assert_eq!(receipt.body["target"], json!({"jurisdiction": "DE"}));
    assert_eq!(
        e["report"]["faces"].as_i64(),
        Some(extra_faces + unlabelled_extra),
        "{e}"
    );
    eprintln!(
        "erasure of DE: {} faces, {} images, {} blobs removed",
        e["report"]["faces"], e["report"]["images"], e["report"]["blobs_removed"]
    );
    let left: i64 = db
        .query_one(
            "SELECT count(*) FROM face f JOIN image i ON i.id = f.image_id \
             WHERE i.jurisdiction LIKE 'DE%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let remaining = cluster_subjects(&mut db);
    for l in &extra_labels {
        assert_eq!(remaining.get(*l), None, "{l} survived the erasure");
    }

    // The store is consistent (rows, vectors and blobs agree) and the audit log holds the
    // requests, the erasure and their receipts, and verifies.
    let (ok, c) = cluster_json(&config, &["check"]);
    assert!(ok, "{c}");
    assert_eq!(c["inconsistencies"].as_array().unwrap().len(), 0, "{c}");
    let (ok, v) = cluster_json(&config, &["audit-verify"]);
    assert!(ok && v["ok"] == true, "{v}");
    let export = root.join("audit.jsonl");
    audit_export(&config, &export);
    let recs: Vec<Value> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r.get("action").is_some())
        .collect();
    let count = |action: &str| recs.iter().filter(|r| r["action"] == action).count();
    assert_eq!(count("opt_out"), 2);
    assert_eq!(count("access_request"), 1);
    assert_eq!(
        count("receipt"),
        4,
        "two opt-outs, access and erasure receipts"
    );
    let erase_recs: Vec<&Value> = recs.iter().filter(|r| r["action"] == "erase").collect();
    assert_eq!(erase_recs.len(), 2, "the refusal and the erasure");
    assert_eq!(erase_recs[1]["allowed"], true);
    assert_eq!(
        erase_recs[1]["result_count"].as_i64(),
        Some(extra_faces + unlabelled_extra)
    );
    let opt = recs.iter().find(|r| r["action"] == "opt_out").unwrap();
    assert_eq!(
        opt["object_ids"].as_array().unwrap().len() as u64,
        deleted,
        "the opt-out's record lists the deleted faces"
    );
    let resumed: Vec<&Value> = recs
        .iter()
        .filter(|r| r["action"] == "opt_out" && r["details"]["resumed_after_interruption"] == true)
        .collect();
    assert_eq!(resumed.len(), 1, "the interrupted opt-out is recorded once");
    assert_eq!(
        resumed[0]["details"]["request_id"].as_str(),
        Some(rid3.as_str())
    );
    assert_eq!(
        resumed[0]["object_ids"].as_array().unwrap().len() as u64,
        emb3["faces_deleted"].as_u64().unwrap(),
        "its record lists the faces of both runs"
    );
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(
        !text.contains("leaver@example.org") && !text.contains("third@example.org"),
        "contacts stay out of the log"
    );

    // The audit log over HTTP: the organisation's records, paged, and a verification.
    let auditor = add_key(&config, "aud", "auditor", "agency");
    let (st, e) = call("GET", &format!("{a}/v1/audit"), &investigator, None);
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (403, Some("policy_denied")),
        "{e}"
    );
    let mut seen = Vec::new();
    let mut after = 0u64;
    loop {
        let (st, page) = call(
            "GET",
            &format!("{a}/v1/audit?after_seq={after}&limit=5"),
            &auditor,
            None,
        );
        assert_eq!(st, 200, "{page}");
        let recs = page["records"].as_array().unwrap();
        assert!(recs.len() <= 5);
        seen.extend(recs.iter().map(|r| r["seq"].as_u64().unwrap()));
        match page["next_after_seq"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    // Every record of the organisation, each once, in order; the public requests (no
    // organisation) are not among them.
    audit_export(&config, &export);
    let agency_id = recs
        .iter()
        .find(|r| r["action"] == "search")
        .and_then(|r| r["org_id"].as_i64())
        .expect("the searches' organisation");
    let want: Vec<u64> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["org_id"].as_i64() == Some(agency_id))
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(want.len() > 10, "more than two pages: {}", want.len());
    assert_eq!(seen, want, "the organisation's records over HTTP");
    let (st, v) = call("GET", &format!("{a}/v1/audit/verify"), &auditor, None);
    assert_eq!((st, v["ok"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(v["public_key_hex"].as_str(), Some(public_key.as_str()));
}
