//! The catalogue endpoints over the cluster API (issue #7, "same API"), on real LFW faces
//! ingested by a worker: collections listed, created and described; subjects created,
//! listed a page at a time, renamed, deleted (faces kept, or deleted with them); faces
//! assigned, moved and unassigned, as `GET /v1/faces/{id}` shows. The policy decides (the
//! investigator reads but may not change; deleting faces is `delete`), every change lands in
//! the audit log with ids only (never a label), and the cluster checks clean afterwards: no
//! subject change is left unapplied to the vector index.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::*;
use common::{lfw, people_dirs, spread};
use serde_json::{json, Value};

/// Face ids per person (the photo's parent folder) in collection `main`.
fn faces_by_person(pg: &mut postgres::Client) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in pg
        .query(
            "SELECT f.id, i.uri FROM face f JOIN image i ON i.id = f.image_id \
             JOIN collection c ON c.id = f.collection_id WHERE c.name = 'main' ORDER BY f.id",
            &[],
        )
        .unwrap()
    {
        let uri: String = r.get(1);
        let person = uri.rsplit('/').nth(1).unwrap().to_string();
        out.entry(person).or_default().push(r.get(0));
    }
    out
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

#[test]
fn catalogue_over_the_cluster_api() {
    let Some(lfw) = lfw() else { return };
    let Some((pg, s3)) = servers() else { return };
    if !common::installed("open") {
        return;
    }
    let all = people_dirs(&lfw);
    // Three people, four photos each.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let photos = root.join("photos");
    for (name, files) in spread(&all, 3) {
        let dir = photos.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in files.iter().take(4) {
            std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap();
        }
    }
    let url = pg.create_database("catalogue").unwrap();
    let s3cfg = s3.create_bucket("catalogue").unwrap();
    let config = write_config(&root, &url, &s3cfg, "catalogue");
    add_agency(&config);
    let admin = add_key(&config, "admin", "admin", "agency");
    let inv = add_key(&config, "inv", "investigator", "agency");
    let dpo = add_key(&config, "dpo", "compliance", "agency");
    let (_api, a) = serve(&config, &root);
    let job = post(
        &format!("{a}/v1/ingest/jobs"),
        &admin,
        &json!({"collection": "main", "path": photos,
                "source": {"name": "photos", "legal_basis": "research licence (test)"}}),
    )["id"]
        .as_i64()
        .unwrap();
    let mut w = worker(&config, &root.join("worker.log"));
    assert!(w.0.wait().unwrap().success());
    wait_job(&a, &admin, job, Duration::from_secs(300));
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let people = faces_by_person(&mut db);
    assert_eq!(people.len(), 3, "{people:?}");
    let all_faces: usize = people.values().map(Vec::len).sum();
    let mut each = people.values();
    let (p0, p1) = (each.next().unwrap().clone(), each.next().unwrap().clone());
    assert!(p0.len() >= 2 && !p1.is_empty(), "{people:?}");
    let pack = get(&format!("{a}/v1/health"), "")["pack"]
        .as_str()
        .unwrap()
        .to_string();

    // ---- Collections ----
    let list = get(&format!("{a}/v1/collections"), &inv);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "main");
    assert_eq!(list[0]["faces"], all_faces as u64);
    assert_eq!(
        (list[0]["subjects"].as_u64(), list[0]["pack"].as_str()),
        (Some(0), Some(pack.as_str()))
    );
    let r = expect_refused(
        &format!("{a}/v1/collections"),
        &inv,
        &json!({"name": "watch"}),
        "policy_denied",
    );
    assert!(r["error"]["message"].is_string());
    let (st, w) = call(
        "POST",
        &format!("{a}/v1/collections"),
        &admin,
        Some(&json!({"name": "watch"})),
    );
    assert_eq!(st, 201, "{w}");
    assert_eq!(
        (w["faces"].as_u64(), w["pack"].as_str()),
        (Some(0), Some(pack.as_str()))
    );
    for (body, status, code) in [
        (json!({"name": "watch"}), 409, "conflict"),
        (json!({"name": "../x"}), 400, "invalid"),
        (
            json!({"name": "w2", "pack": "another@9"}),
            409,
            "pack_mismatch",
        ),
        (json!({"name": "w3", "extra": 1}), 400, "bad_json"),
    ] {
        let (st, r) = call("POST", &format!("{a}/v1/collections"), &admin, Some(&body));
        assert_eq!(
            (st, r["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {r}"
        );
    }
    let main = get(&format!("{a}/v1/collections/main"), &inv);
    assert_eq!(main["faces"], all_faces as u64);
    assert_eq!(main["images"], 12);
    assert_eq!(main["sources"][0]["name"], "photos");
    assert_eq!(main["sources"][0]["faces"], all_faces as u64);
    assert_eq!(main["sources"][0]["images"], 12);
    let (st, _) = call("GET", &format!("{a}/v1/collections/nope"), &inv, None);
    assert_eq!(st, 404);
    assert_eq!(
        get(&format!("{a}/v1/collections"), &inv)
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // ---- Subjects ----
    let subjects = format!("{a}/v1/collections/main/subjects");
    let (st, alpha) = call(
        "POST",
        &subjects,
        &admin,
        Some(&json!({"label": "Label-Alpha-7", "attributes": {"note": "Note-Secret-9"}})),
    );
    assert_eq!(st, 201, "{alpha}");
    let alpha_id = alpha["id"].as_i64().unwrap();
    let (st, r) = call(
        "POST",
        &subjects,
        &admin,
        Some(&json!({"label": "Label-Alpha-7"})),
    );
    assert_eq!((st, r["error"]["code"].as_str()), (409, Some("conflict")));
    expect_refused(&subjects, &inv, &json!({"label": "x"}), "policy_denied");
    let r = post(
        &format!("{a}/v1/subjects/{alpha_id}/faces"),
        &admin,
        &json!({"face_ids": p0}),
    );
    assert_eq!(
        (r["assigned"].as_u64(), r["moved"].as_u64()),
        (Some(p0.len() as u64), Some(0))
    );
    let face = get(&format!("{a}/v1/faces/{}", p0[0]), &inv);
    assert_eq!(face["subject"]["label"], "Label-Alpha-7", "{face}");
    let (st, beta) = call(
        "POST",
        &subjects,
        &admin,
        Some(&json!({"label": "Label-Beta-8"})),
    );
    assert_eq!(st, 201);
    let beta_id = beta["id"].as_i64().unwrap();
    let mut to_beta = p1.clone();
    to_beta.push(p0[0]);
    let r = post(
        &format!("{a}/v1/subjects/{beta_id}/faces"),
        &admin,
        &json!({"face_ids": to_beta}),
    );
    assert_eq!(
        (r["assigned"].as_u64(), r["moved"].as_u64()),
        (Some(p1.len() as u64 + 1), Some(1)),
        "{r}"
    );
    // All or none: a missing face changes nothing.
    let (st, r) = call(
        "POST",
        &format!("{a}/v1/subjects/{alpha_id}/faces"),
        &admin,
        Some(&json!({"face_ids": [p1[0], 999_999_999]})),
    );
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{r}"
    );
    let s = get(&format!("{a}/v1/subjects/{alpha_id}"), &inv);
    assert_eq!(ids(&s["face_ids"]), p0[1..].to_vec(), "{s}");
    assert_eq!(s["faces"], p0.len() as u64 - 1);
    assert_eq!(s["attributes"]["note"], "Note-Secret-9");
    let page = get(&format!("{subjects}?limit=1"), &inv);
    assert_eq!(page["subjects"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_after"], alpha_id);
    let page = get(&format!("{subjects}?after={alpha_id}"), &inv);
    assert_eq!(page["subjects"][0]["id"], beta_id);
    assert_eq!(page["subjects"][0]["faces"], p1.len() as u64 + 1);
    assert!(page["next_after"].is_null());
    let (st, r) = call("GET", &format!("{subjects}?limit=x"), &inv, None);
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );

    // Renaming, unassigning.
    let beta_url = format!("{a}/v1/subjects/{beta_id}");
    let (st, r) = call(
        "PATCH",
        &beta_url,
        &admin,
        Some(&json!({"label": "Label-Alpha-7"})),
    );
    assert_eq!((st, r["error"]["code"].as_str()), (409, Some("conflict")));
    let (st, _) = call(
        "PATCH",
        &beta_url,
        &inv,
        Some(&json!({"label": "Label-Gamma-9"})),
    );
    assert_eq!(st, 403);
    let (st, r) = call(
        "PATCH",
        &beta_url,
        &admin,
        Some(&json!({"label": "Label-Gamma-9"})),
    );
    assert_eq!(
        (st, r["label"].as_str()),
        (200, Some("Label-Gamma-9")),
        "{r}"
    );
    let (st, r) = call(
        "DELETE",
        &format!("{beta_url}/faces/{}", p0[0]),
        &admin,
        None,
    );
    assert_eq!(st, 200, "{r}");
    let (st, _) = call(
        "DELETE",
        &format!("{beta_url}/faces/{}", p0[0]),
        &admin,
        None,
    );
    assert_eq!(st, 404);
    assert!(get(&format!("{a}/v1/faces/{}", p0[0]), &inv)["subject"].is_null());

    // Deleting subjects: faces kept, or (action delete) deleted with it.
    let (st, r) = call(
        "DELETE",
        &format!("{a}/v1/subjects/{alpha_id}"),
        &admin,
        None,
    );
    assert_eq!(
        (st, r["faces_unassigned"].as_u64()),
        (200, Some(p0.len() as u64 - 1)),
        "{r}"
    );
    assert!(get(&format!("{a}/v1/faces/{}", p0[1]), &inv)["subject"].is_null());
    let (st, _) = call("GET", &format!("{a}/v1/subjects/{alpha_id}"), &inv, None);
    assert_eq!(st, 404);
    let (st, _) = call(
        "DELETE",
        &format!("{beta_url}?delete_faces=true"),
        &inv,
        None,
    );
    assert_eq!(st, 403);
    let (st, r) = call(
        "DELETE",
        &format!("{beta_url}?delete_faces=true"),
        &dpo,
        None,
    );
    assert_eq!(
        (st, r["faces_deleted"].as_u64()),
        (200, Some(p1.len() as u64)),
        "{r}"
    );
    let (st, _) = call("GET", &format!("{a}/v1/faces/{}", p1[0]), &inv, None);
    assert_eq!(st, 404);
    let main = get(&format!("{a}/v1/collections/main"), &inv);
    assert_eq!(main["faces"], (all_faces - p1.len()) as u64);
    assert_eq!(main["subjects"], 0);

    // The log: every change, with ids only; the cluster checks clean.
    let log = root.join("audit.jsonl");
    let key = audit_export(&config, &log);
    verify_offline(&log, &key);
    let text = std::fs::read_to_string(&log).unwrap();
    for op in [
        "create_collection",
        "create_subject",
        "assign_faces",
        "update_subject",
        "unassign_face",
        "delete_subject",
    ] {
        assert!(text.contains(&format!("\"op\":\"{op}\"")), "no {op} record");
    }
    // The subject deleted with its faces is recorded in the deletion's transaction, with
    // the faces' ids and the counts.
    let with_faces: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["details"]["op"] == "delete_subject" && r["details"]["delete_faces"] == true)
        .collect();
    assert_eq!(with_faces.len(), 1, "{with_faces:?}");
    assert_eq!(
        with_faces[0]["object_ids"].as_array().map(Vec::len),
        Some(p1.len()),
        "{}",
        with_faces[0]
    );
    assert_eq!(with_faces[0]["details"]["faces"], p1.len().to_string());
    for secret in ["Label-Alpha-7", "Label-Gamma-9", "Note-Secret-9"] {
        assert!(!text.contains(secret), "the audit log holds {secret}");
    }
    assert!(
        text.lines()
            .filter(|l| l.contains("policy_denied") || l.contains("\"allowed\":false"))
            .count()
            >= 3,
        "the refusals are recorded"
    );
    let (ok, check) = cluster_json(&config, &["check"]);
    assert!(ok, "{check}");
    assert_eq!(check["inconsistencies"], json!([]), "{check}");
}
