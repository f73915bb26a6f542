//! Collections and subjects over HTTP, against the real server on 127.0.0.1 with an LFW
//! gallery: create and describe collections, create, list, read, change and delete subjects,
//! assign and unassign faces (all or nothing), deletion of a subject with its faces, roles,
//! the audit log and a read-only server.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use common::*;
use serde_json::{json, Value};
use visage_engine::{ingest_paths, IngestOptions};
use visage_gallery::{Access, Gallery, NewSource};
use visage_vision::pack::Home;
use visage_vision::PipelinePool;

/// Photos 1..=3 of each person into `collection` (source `<collection>-src`, subjects from
/// folder names).
fn ingest(home: &Home, data: &Path, photos: &Path, collection: &str, people: &[&str]) {
    for person in people {
        let dir = photos.join(person);
        std::fs::create_dir_all(&dir).unwrap();
        for n in 1..=3 {
            let src = photo(person, n);
            std::fs::copy(&src, dir.join(src.file_name().unwrap())).unwrap();
        }
    }
    let g = Gallery::open(data, Access::ReadWrite).unwrap();
    let pool = PipelinePool::load(home, "open", 1, 1).unwrap();
    let mut opts = IngestOptions::new(
        collection,
        NewSource {
            name: format!("{collection}-src"),
            kind: "folder".into(),
            legal_basis: Some("public_interest".into()),
            jurisdiction: Some("FR".into()),
            ..Default::default()
        },
    );
    opts.subject_from_parent = true;
    let report = ingest_paths(
        &g,
        &pool,
        &[photos.to_path_buf()],
        &opts,
        &AtomicBool::new(false),
        &|_| {},
    )
    .unwrap();
    eprintln!(
        "ingest {collection}: {}",
        serde_json::to_value(&report).unwrap()
    );
}

/// The subject of `collection` labelled `label`, from the listing.
fn subject_by_label(c: &Client, collection: &str, label: &str) -> Value {
    let r = c.get(&format!("/v1/collections/{collection}/subjects?limit=1000"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == label)
        .unwrap_or_else(|| panic!("no subject {label} in {collection}"))
        .clone()
}

fn face_ids(subject: &Value) -> Vec<i64> {
    subject["face_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no face_ids in {subject}"))
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

fn subject_detail(c: &Client, id: i64) -> Value {
    let r = c.get(&format!("/v1/subjects/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The subject id a face belongs to (`GET /v1/faces/{id}`).
fn subject_of(c: &Client, face: i64) -> Option<i64> {
    let r = c.get(&format!("/v1/faces/{face}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["subject"]["id"].as_i64()
}

fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.error_code(), code, "{}", r.text());
}

#[test]
fn collections_and_subjects_over_http() {
    let Some(home) = require() else { return };
    let (tmp, data) = temp_gallery(
        &home,
        &["George_W_Bush", "Colin_Powell", "Tony_Blair"],
        None,
    );
    ingest(
        &home,
        &data,
        &tmp.path().join("photos-other"),
        "other",
        &["Hugo_Chavez"],
    );
    let server = Server::start(&home, &data, Default::default());
    let admin = server.admin();
    let org = create_org(&admin, "Catalog Police", "law_enforcement", "GB");
    let (_, inv_key) = create_user_key(&admin, org, "c-inv", "investigator");
    let (_, aud_key) = create_user_key(&admin, org, "c-aud", "auditor");
    let (_, comp_key) = create_user_key(&admin, org, "c-comp", "compliance");
    let inv = server.client(Auth::Key(inv_key));
    let aud = server.client(Auth::Key(aud_key));
    let comp = server.client(Auth::Key(comp_key));
    let anon = server.client(Auth::None);

    // the OpenAPI document lists every endpoint of this family
    let doc = anon.get("/v1/openapi.json").json();
    for (p, m) in [
        ("/v1/collections", "post"),
        ("/v1/collections", "get"),
        ("/v1/collections/{name}", "get"),
        ("/v1/collections/{name}/subjects", "get"),
        ("/v1/collections/{name}/subjects", "post"),
        ("/v1/subjects/{id}", "get"),
        ("/v1/subjects/{id}", "patch"),
        ("/v1/subjects/{id}", "delete"),
        ("/v1/subjects/{id}/faces", "post"),
        ("/v1/subjects/{id}/faces/{face_id}", "delete"),
    ] {
        assert!(doc["paths"][p].get(m).is_some(), "openapi lacks {m} {p}");
    }
    for s in [
        "CollectionDescription",
        "SubjectInfo",
        "SubjectPage",
        "AssignJson",
    ] {
        assert!(
            doc["components"]["schemas"].get(s).is_some(),
            "openapi lacks schema {s}"
        );
    }

    // ---- collections ----
    let r = admin.get("/v1/collections");
    assert_eq!(r.status, 200, "{}", r.text());
    let listed = r.json();
    let lfw_pack = listed[0]["pack"].as_str().unwrap().to_string();
    assert!(lfw_pack.starts_with("open@"), "{lfw_pack}");
    let (pack_name, pack_version) = lfw_pack.split_once('@').unwrap();

    let r = admin.get("/v1/collections/lfw");
    assert_eq!(r.status, 200, "{}", r.text());
    let d = r.json();
    assert_eq!(d["name"], "lfw");
    assert_eq!(d["pack"], lfw_pack.as_str());
    assert_eq!(d["pack_name"], pack_name);
    assert_eq!(d["pack_version"], pack_version);
    assert_eq!(d["dim"], listed[0]["dim"]);
    assert!(d["created_at"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(
        (&d["faces"], &d["images"], &d["subjects"]),
        (&json!(9), &json!(9), &json!(3))
    );
    let srcs = d["sources"].as_array().unwrap();
    assert_eq!(srcs.len(), 1, "{d}");
    assert_eq!(srcs[0]["name"], "lfw");
    assert_eq!(srcs[0]["kind"], "folder");
    assert_eq!(
        (&srcs[0]["faces"], &srcs[0]["images"]),
        (&json!(9), &json!(9))
    );
    let d = inv.get("/v1/collections/other").json();
    assert_eq!(d["sources"][0]["legal_basis"], "public_interest");
    assert_eq!(d["sources"][0]["jurisdiction"], "FR");
    let other_faces = d["faces"].as_u64().unwrap();
    assert!(other_faces >= 2, "{d}");
    assert_error(&admin.get("/v1/collections/nope"), 404, "not_found");

    let r = admin.post_json("/v1/collections", &json!({"name": "watch-list_2024"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let w = r.json();
    assert_eq!(w["name"], "watch-list_2024");
    assert_eq!(w["pack"], lfw_pack.as_str());
    assert_eq!(w["dim"], listed[0]["dim"]);
    assert_eq!(
        (&w["faces"], &w["images"], &w["subjects"]),
        (&json!(0), &json!(0), &json!(0))
    );
    assert_eq!(w["sources"], json!([]));
    let w_id = w["id"].as_i64().unwrap();
    assert_eq!(admin.get("/v1/collections/watch-list_2024").json(), w);
    // the pack may be named, by name or identity, only if it is the server's
    let r = admin.post_json(
        "/v1/collections",
        &json!({"name": "by-name", "pack": pack_name}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = admin.post_json(
        "/v1/collections",
        &json!({"name": "by-id", "pack": lfw_pack.as_str()}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_error(
        &admin.post_json(
            "/v1/collections",
            &json!({"name": "wrong-pack", "pack": "insightface-s"}),
        ),
        409,
        "pack_mismatch",
    );
    assert_error(
        &admin.post_json("/v1/collections", &json!({"name": "watch-list_2024"})),
        409,
        "conflict",
    );
    assert_error(
        &admin.post_json("/v1/collections", &json!({"name": "lfw"})),
        409,
        "conflict",
    );
    let long = "x".repeat(65);
    for bad in ["", "a b", "../etc", "-dash", "naïve", long.as_str()] {
        assert_error(
            &admin.post_json("/v1/collections", &json!({ "name": bad })),
            400,
            "invalid",
        );
    }
    assert_error(
        &admin.post("/v1/collections", "application/json", b"{\"name\": "),
        400,
        "bad_json",
    );
    assert_error(
        &admin.post_json("/v1/collections", &json!({"name": "x", "colour": "red"})),
        400,
        "bad_json",
    );
    assert_error(
        &admin.post_json("/v1/collections", &json!({"name": 5})),
        400,
        "bad_json",
    );
    // the list still answers, with the new collections
    let names: Vec<String> = admin
        .get("/v1/collections")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["lfw", "other", "watch-list_2024", "by-name", "by-id"]
    );
    assert_error(&admin.delete("/v1/collections"), 405, "method_not_allowed");
    // roles: creating is ingest (admin only), describing is read_face
    assert_error(
        &inv.post_json("/v1/collections", &json!({"name": "inv-coll"})),
        403,
        "policy_denied",
    );
    assert_error(
        &comp.post_json("/v1/collections", &json!({"name": "comp-coll"})),
        403,
        "policy_denied",
    );
    assert_error(&anon.get("/v1/collections/lfw"), 401, "unauthorized");
    assert_error(
        &anon.post_json("/v1/collections", &json!({"name": "anon"})),
        401,
        "unauthorized",
    );
    assert_eq!(aud.get("/v1/collections/lfw").status, 200);
    assert!(admin.get("/v1/collections/inv-coll").status == 404);

    // ---- subjects: list ----
    let r = aud.get("/v1/collections/lfw/subjects");
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.json();
    let subs = page["subjects"].as_array().unwrap();
    let mut labels: Vec<&str> = subs.iter().map(|s| s["label"].as_str().unwrap()).collect();
    labels.sort();
    assert_eq!(labels, ["Colin_Powell", "George_W_Bush", "Tony_Blair"]);
    assert!(subs
        .windows(2)
        .all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()));
    assert!(subs
        .iter()
        .all(|s| s["faces"] == 3 && s["collection"] == "lfw"));
    assert!(subs.iter().all(|s| s["attributes"] == json!({})));
    assert!(subs.iter().all(|s| s.get("face_ids").is_none()));
    assert_eq!(page["next_after"], Value::Null);
    let p1 = aud.get("/v1/collections/lfw/subjects?limit=2").json();
    assert_eq!(p1["subjects"].as_array().unwrap().len(), 2);
    let after = p1["next_after"].as_i64().expect("a second page");
    assert_eq!(after, subs[1]["id"].as_i64().unwrap());
    let p2 = aud
        .get(&format!(
            "/v1/collections/lfw/subjects?limit=2&after={after}"
        ))
        .json();
    assert_eq!(p2["subjects"].as_array().unwrap().len(), 1);
    assert_eq!(p2["subjects"][0], subs[2]);
    assert_eq!(p2["next_after"], Value::Null);
    assert_error(
        &aud.get("/v1/collections/lfw/subjects?limit=many"),
        400,
        "bad_request",
    );
    assert_error(&aud.get("/v1/collections/nope/subjects"), 404, "not_found");
    let r = admin.get("/v1/collections/watch-list_2024/subjects");
    assert_eq!(r.json(), json!({"subjects": [], "next_after": null}));

    let colin = subject_by_label(&admin, "lfw", "Colin_Powell");
    let colin_id = colin["id"].as_i64().unwrap();
    let colin_faces = face_ids(&subject_detail(&admin, colin_id));
    assert_eq!(colin_faces.len(), 3);
    let tony_id = subject_by_label(&admin, "lfw", "Tony_Blair")["id"]
        .as_i64()
        .unwrap();
    let tony_faces = face_ids(&subject_detail(&inv, tony_id));
    assert_eq!(tony_faces.len(), 3);
    let george_id = subject_by_label(&admin, "lfw", "George_W_Bush")["id"]
        .as_i64()
        .unwrap();
    let hugo_id = subject_by_label(&admin, "other", "Hugo_Chavez")["id"]
        .as_i64()
        .unwrap();
    let hugo_faces = face_ids(&subject_detail(&admin, hugo_id));
    assert!(!hugo_faces.is_empty());

    // ---- subjects: create, read ----
    let attrs = json!({"record": "R-17", "notes": {"seen": ["2024-05-01"]}});
    let r = admin.post_json(
        "/v1/collections/lfw/subjects",
        &json!({"label": "Suspect A", "attributes": attrs}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let a = r.json();
    let a_id = a["id"].as_i64().unwrap();
    assert_eq!(a["label"], "Suspect A");
    assert_eq!(a["attributes"], attrs);
    assert_eq!(a["collection"], "lfw");
    assert_eq!((&a["faces"], &a["face_ids"]), (&json!(0), &json!([])));
    assert_eq!(subject_detail(&aud, a_id), a);
    let r = admin.post_json(
        "/v1/collections/lfw/subjects",
        &json!({"label": "No attrs"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["attributes"], json!({}));
    assert_error(
        &admin.post_json(
            "/v1/collections/lfw/subjects",
            &json!({"label": "Suspect A"}),
        ),
        409,
        "conflict",
    );
    assert_error(
        &admin.post_json(
            "/v1/collections/lfw/subjects",
            &json!({"label": "Tony_Blair"}),
        ),
        409,
        "conflict",
    );
    // the same label in another collection is fine
    let r = admin.post_json(
        "/v1/collections/watch-list_2024/subjects",
        &json!({"label": "Suspect A"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["collection_id"].as_i64(), Some(w_id));
    for bad in [
        json!({"label": ""}),
        json!({"label": "   "}),
        json!({"label": "x".repeat(201)}),
        json!({"label": "B", "attributes": [1, 2]}),
        json!({"label": "B", "attributes": "text"}),
    ] {
        assert_error(
            &admin.post_json("/v1/collections/lfw/subjects", &bad),
            400,
            "invalid",
        );
    }
    assert_error(
        &admin.post_json("/v1/collections/lfw/subjects", &json!({"attributes": {}})),
        400,
        "bad_json",
    );
    assert_error(
        &admin.post("/v1/collections/lfw/subjects", "application/json", b"[}"),
        400,
        "bad_json",
    );
    assert_error(
        &admin.post_json("/v1/collections/nope/subjects", &json!({"label": "B"})),
        404,
        "not_found",
    );
    assert_error(
        &aud.post_json("/v1/collections/lfw/subjects", &json!({"label": "Aud"})),
        403,
        "policy_denied",
    );
    assert_error(
        &inv.post_json("/v1/collections/lfw/subjects", &json!({"label": "Inv"})),
        403,
        "policy_denied",
    );
    assert_error(&admin.get("/v1/subjects/999999"), 404, "not_found");
    assert_error(&admin.get("/v1/subjects/abc"), 400, "bad_request");
    assert_error(
        &anon.get(&format!("/v1/subjects/{a_id}")),
        401,
        "unauthorized",
    );

    // ---- assign: all or nothing ----
    let path = format!("/v1/subjects/{a_id}/faces");
    let r = admin.post_json(
        &path,
        &json!({"face_ids": [colin_faces[0], 999_999, colin_faces[1]]}),
    );
    assert_error(&r, 404, "not_found");
    assert!(r.text().contains("999999"), "{}", r.text());
    let r = admin.post_json(&path, &json!({"face_ids": [colin_faces[0], hugo_faces[0]]}));
    assert_error(&r, 400, "invalid");
    assert!(
        r.text().contains(&hugo_faces[0].to_string()),
        "{}",
        r.text()
    );
    assert_error(
        &admin.post_json(&path, &json!({"face_ids": []})),
        400,
        "invalid",
    );
    assert_error(
        &admin.post_json(&path, &json!({"face_ids": ["one"]})),
        400,
        "bad_json",
    );
    assert_error(
        &admin.post(&path, "application/json", b"{"),
        400,
        "bad_json",
    );
    assert_error(
        &admin.post_json(
            "/v1/subjects/999999/faces",
            &json!({"face_ids": [colin_faces[0]]}),
        ),
        404,
        "not_found",
    );
    assert_error(
        &aud.post_json(&path, &json!({"face_ids": [colin_faces[0]]})),
        403,
        "policy_denied",
    );
    // nothing changed
    assert_eq!(subject_detail(&admin, a_id)["face_ids"], json!([]));
    assert_eq!(face_ids(&subject_detail(&admin, colin_id)), colin_faces);
    assert_eq!(subject_of(&admin, hugo_faces[0]), Some(hugo_id));

    let r = admin.post_json(
        &path,
        &json!({"face_ids": [colin_faces[1], colin_faces[0], colin_faces[1]]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"subject_id": a_id, "assigned": 2, "moved": 2, "unchanged": 0,
               "face_ids": [colin_faces[0], colin_faces[1]]})
    );
    let r = admin.post_json(&path, &json!({"face_ids": colin_faces}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (&v["assigned"], &v["moved"], &v["unchanged"]),
        (&json!(1), &json!(1), &json!(2))
    );
    let a_now = subject_detail(&admin, a_id);
    assert_eq!(face_ids(&a_now), colin_faces);
    assert_eq!(a_now["faces"], 3);
    assert_eq!(subject_detail(&admin, colin_id)["faces"], 0);
    let f = admin.get(&format!("/v1/faces/{}", colin_faces[0])).json();
    assert_eq!(f["subject"]["label"], "Suspect A");

    // ---- unassign ----
    let one = format!("/v1/subjects/{a_id}/faces/{}", colin_faces[2]);
    assert_error(&aud.delete(&one), 403, "policy_denied");
    let r = admin.delete(&one);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"subject_id": a_id, "face_id": colin_faces[2]})
    );
    assert_eq!(subject_of(&admin, colin_faces[2]), None);
    assert_eq!(face_ids(&subject_detail(&admin, a_id)), &colin_faces[..2]);
    assert_error(&admin.delete(&one), 404, "not_found");
    assert_error(
        &admin.delete(&format!("/v1/subjects/{a_id}/faces/999999")),
        404,
        "not_found",
    );
    assert_error(
        &admin.delete(&format!("/v1/subjects/{a_id}/faces/{}", tony_faces[0])),
        404,
        "not_found",
    );
    assert_error(
        &admin.delete(&format!("/v1/subjects/999999/faces/{}", colin_faces[0])),
        404,
        "not_found",
    );
    assert_error(
        &admin.delete(&format!("/v1/subjects/{a_id}/faces/x")),
        400,
        "bad_request",
    );

    // ---- update ----
    let sp = format!("/v1/subjects/{a_id}");
    let r = admin.patch_json(&sp, &json!({"label": "Suspect A (named)"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let u = r.json();
    assert_eq!(u["label"], "Suspect A (named)");
    assert_eq!(u["attributes"], attrs);
    assert_eq!(face_ids(&u), &colin_faces[..2]);
    let r = admin.patch_json(&sp, &json!({"attributes": {"record": "R-18"}}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["attributes"], json!({"record": "R-18"}));
    assert_eq!(r.json()["label"], "Suspect A (named)");
    assert_error(
        &admin.patch_json(&sp, &json!({"label": "Tony_Blair", "attributes": {}})),
        409,
        "conflict",
    );
    let unchanged = subject_detail(&admin, a_id);
    assert_eq!(unchanged["label"], "Suspect A (named)");
    assert_eq!(unchanged["attributes"], json!({"record": "R-18"}));
    assert_error(&admin.patch_json(&sp, &json!({})), 400, "bad_request");
    assert_error(
        &admin.patch_json(&sp, &json!({"label": ""})),
        400,
        "invalid",
    );
    assert_error(
        &admin.patch_json(&sp, &json!({"attributes": 3})),
        400,
        "invalid",
    );
    assert_error(
        &admin.patch_json(&sp, &json!({"lable": "x"})),
        400,
        "bad_json",
    );
    assert_error(
        &admin.patch_json("/v1/subjects/999999", &json!({"label": "x"})),
        404,
        "not_found",
    );
    assert_error(
        &aud.patch_json(&sp, &json!({"label": "by auditor"})),
        403,
        "policy_denied",
    );

    // ---- delete a subject, keeping its faces ----
    assert_error(&comp.delete(&sp), 403, "policy_denied");
    assert_error(&inv.delete(&sp), 403, "policy_denied");
    assert_error(
        &admin.delete(&format!("{sp}?delete_faces=maybe")),
        400,
        "bad_request",
    );
    let r = admin.delete(&sp);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"subject_id": a_id, "faces_unassigned": 2, "faces_deleted": 0, "report": null})
    );
    assert_error(&admin.get(&sp), 404, "not_found");
    assert_error(&admin.delete(&sp), 404, "not_found");
    for f in &colin_faces[..2] {
        assert_eq!(subject_of(&admin, *f), None);
    }
    assert_eq!(admin.get("/v1/collections/lfw").json()["faces"], 9);

    // ---- delete a subject with its faces ----
    let tp = format!("/v1/subjects/{tony_id}?delete_faces=true");
    assert_error(&inv.delete(&tp), 403, "policy_denied");
    assert_error(&aud.delete(&tp), 403, "policy_denied");
    // compliance may delete faces (action delete), though not manage subjects (ingest)
    let r = comp.delete(&tp);
    assert_eq!(r.status, 200, "{}", r.text());
    let del = r.json();
    assert_eq!(del["subject_id"].as_i64(), Some(tony_id));
    assert_eq!(
        (&del["faces_deleted"], &del["faces_unassigned"]),
        (&json!(3), &json!(0))
    );
    assert_eq!(del["report"]["faces"], 3);
    assert_eq!(del["report"]["subjects"], 1);
    let mut deleted: Vec<i64> = del["report"]["face_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    deleted.sort();
    assert_eq!(deleted, tony_faces);
    assert_error(&admin.delete(&tp), 404, "not_found");
    assert_error(
        &admin.get(&format!("/v1/subjects/{tony_id}")),
        404,
        "not_found",
    );
    for f in &tony_faces {
        assert_error(&admin.get(&format!("/v1/faces/{f}")), 404, "not_found");
    }
    // George, Colin (now empty) and "No attrs" remain
    let d = admin.get("/v1/collections/lfw").json();
    assert_eq!((&d["faces"], &d["subjects"]), (&json!(6), &json!(3)));
    // searches no longer find them
    let case = create_case(&inv, "CAT-1");
    let purpose = "find the man in the photograph";
    for n in [1, 4] {
        let body = multipart(&[
            ("image", "probe.jpg", &read_photo("Tony_Blair", n)),
            ("k", "", b"20"),
            ("collection", "", b"lfw"),
            ("case_id", "", case.to_string().as_bytes()),
            ("purpose", "", purpose.as_bytes()),
        ]);
        let r = inv.post("/v1/search", &multipart_ct(), &body);
        assert_eq!(r.status, 200, "{}", r.text());
        let res = r.json();
        let hits = res["probe_faces"][0]["hits"].as_array().unwrap();
        assert_eq!(
            hits.len(),
            6,
            "every remaining face, none of the deleted: {res}"
        );
        for h in hits {
            let id = h["face"]["id"].as_i64().unwrap();
            assert!(!tony_faces.contains(&id), "deleted face {id} found");
            assert_ne!(h["face"]["subject"]["label"], "Tony_Blair");
        }
    }
    // the other subjects are untouched
    assert_eq!(subject_detail(&admin, george_id)["faces"], 3);

    // ---- the audit log: changes recorded, with ids, never labels or attributes ----
    let recs = admin.get("/v1/audit?limit=1000").json()["records"]
        .as_array()
        .unwrap()
        .clone();
    let ops = |op: &str| -> Vec<Value> {
        recs.iter()
            .filter(|r| r["details"]["op"] == op && r["allowed"] == true)
            .cloned()
            .collect()
    };
    let cc = ops("create_collection");
    assert_eq!(cc.len(), 3);
    assert!(cc.iter().all(|r| r["action"] == "ingest"));
    assert_eq!(cc[0]["details"]["collection"], "watch-list_2024");
    assert_eq!(cc[0]["object_ids"], json!([w_id.to_string()]));
    assert_eq!(ops("create_subject").len(), 3);
    assert_eq!(ops("update_subject").len(), 2);
    let asg = ops("assign_faces");
    assert_eq!(asg.len(), 2);
    assert_eq!(asg[0]["details"]["subject_id"], a_id.to_string());
    assert_eq!(
        asg[0]["object_ids"],
        json!([colin_faces[0].to_string(), colin_faces[1].to_string()])
    );
    assert_eq!(ops("unassign_face").len(), 1);
    let ds = ops("delete_subject");
    assert_eq!(ds.len(), 2);
    assert_eq!(ds[0]["action"], "ingest");
    assert_eq!(ds[1]["action"], "delete");
    assert_eq!(ds[1]["actor"], "c-comp");
    assert_eq!(ds[1]["result_count"], 3);
    // Recorded with the deletion (erasure::run): the faces' ids and the counts.
    assert_eq!(ds[1]["details"]["delete_faces"], true);
    assert_eq!(ds[1]["details"]["faces"], "3");
    assert_eq!(
        ds[1]["object_ids"],
        json!(tony_faces.iter().map(|f| f.to_string()).collect::<Vec<_>>())
    );
    // refusals are recorded too
    assert!(recs
        .iter()
        .any(|r| r["action"] == "ingest" && r["allowed"] == false && r["actor"] == "c-aud"));
    let all = serde_json::to_string(&recs).unwrap();
    for secret in ["Suspect A", "R-17", "R-18", "2024-05-01"] {
        assert!(!all.contains(secret), "the audit log holds {secret:?}");
    }
    let r = admin.get("/v1/audit/verify");
    assert_eq!(r.json()["ok"], true, "{}", r.text());

    server.stop();
}

#[test]
fn read_only_server_refuses_catalog_changes() {
    let Some(home) = require() else { return };
    let (_tmp, data) = temp_gallery(&home, &["Colin_Powell"], None);
    let opts = visage_server::ServeOptions {
        read_only: true,
        ..Default::default()
    };
    let server = Server::start(&home, &data, opts);
    let admin = server.admin();
    let colin = subject_by_label(&admin, "lfw", "Colin_Powell");
    let id = colin["id"].as_i64().unwrap();
    let faces = face_ids(&subject_detail(&admin, id));
    assert_eq!(faces.len(), 3);

    let s = format!("/v1/subjects/{id}");
    let refused = [
        admin.post_json("/v1/collections", &json!({"name": "ro"})),
        admin.post_json("/v1/collections/lfw/subjects", &json!({"label": "ro"})),
        admin.patch_json(&s, &json!({"label": "ro"})),
        admin.post_json(&format!("{s}/faces"), &json!({"face_ids": [faces[0]]})),
        admin.delete(&format!("{s}/faces/{}", faces[0])),
        admin.delete(&s),
        admin.delete(&format!("{s}?delete_faces=true")),
    ];
    for r in &refused {
        assert_error(r, 409, "read_only");
    }
    // reads work and nothing changed
    let d = admin.get("/v1/collections/lfw").json();
    assert_eq!((&d["faces"], &d["subjects"]), (&json!(3), &json!(1)));
    assert_eq!(
        admin
            .get("/v1/collections")
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let again = subject_detail(&admin, id);
    assert_eq!(again["label"], "Colin_Powell");
    assert_eq!(face_ids(&again), faces);
    assert_eq!(
        admin.get("/v1/collections/lfw/subjects").json()["subjects"][0]["faces"],
        3
    );
    server.stop();
}
