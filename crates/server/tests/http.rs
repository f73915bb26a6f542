//! Starts the real server on 127.0.0.1 (free port) over a small LFW gallery and talks to it
//! with an HTTP client: authenticated, case-bound, audited search; verify; search by face;
//! reports; the error paths; public opt-out and access.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

fn top_label(result: &Value) -> String {
    result["probe_faces"][0]["hits"][0]["face"]["subject"]["label"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn http_api_end_to_end() {
    let Some(home) = require() else { return };
    let (_tmp, data) = temp_gallery(
        &home,
        &["George_W_Bush", "Colin_Powell", "Tony_Blair"],
        None,
    );
    let server = Server::start(&home, &data, Default::default());
    let admin = server.admin();
    let anon = server.client(Auth::None);

    // public: healthz and the OpenAPI document
    let r = anon.get("/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ok"}));
    let r = anon.get("/v1/openapi.json");
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/healthz",
        "/v1/openapi.json",
        "/v1/search",
        "/v1/search/face/{id}",
        "/v1/verify",
        "/v1/faces/{id}",
        "/v1/faces/{id}/thumbnail",
        "/v1/stats",
        "/v1/collections",
        "/v1/cases",
        "/v1/cases/{id}/report.html",
        "/v1/audit",
        "/v1/audit/verify",
        "/v1/audit/export",
        "/v1/orgs",
        "/v1/users",
        "/v1/keys/{id}",
        "/v1/policy",
        "/v1/erasures",
        "/v1/public/opt-out",
        "/v1/public/access",
        "/v1/public/requests/{id}",
        "/metrics",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi lacks {p}");
    }
    // everything else needs credentials
    let r = anon.get("/v1/stats");
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "unauthorized");

    // an agency with an investigator
    let org = create_org(&admin, "Metropolitan Agency", "law_enforcement", "GB");
    let (_, key) = create_user_key(&admin, org, "ivy", "investigator");
    let c = server.client(Auth::Key(key));
    let number = "CASE-<17>&\"x\"";
    let case = create_case(&c, number);

    let r = c.get("/v1/stats");
    assert_eq!(r.status, 200);
    assert!(r.json().is_object());
    let r = c.get("/v1/collections");
    assert_eq!(r.status, 200, "{}", r.text());
    let colls = r.json();
    assert_eq!(colls[0]["name"], "lfw");
    assert_eq!(colls[0]["faces"].as_u64(), Some(9));
    assert!(colls[0]["pack"].as_str().unwrap().starts_with("open@"));

    // multipart search with an unseen photo of a person in the gallery, under the case
    let probe = read_photo("Colin_Powell", 4);
    let probe_sha = visage_server_sha(&probe);
    let ct = multipart_ct();
    let purpose = "identify the man in the CCTV still";
    let body = multipart(&[
        ("image", "probe.jpg", &probe),
        ("k", "", b"3"),
        ("case_id", "", case.to_string().as_bytes()),
        ("purpose", "", purpose.as_bytes()),
    ]);
    let r = c.post("/v1/search", &ct, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let res = r.json();
    assert_eq!(top_label(&res), "Colin_Powell", "{res}");
    let hits = res["probe_faces"][0]["hits"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.len() <= 3);
    assert!(res["pack"].as_str().unwrap().starts_with("open"));
    if !res["calibration"].is_null() {
        for h in hits {
            assert!(h["fmr"].as_f64().is_some(), "hit without fmr: {h}");
            assert!(h["expected_false_matches"].as_f64().is_some());
        }
    } else {
        eprintln!("note: pack open is not calibrated here; fmr not checked");
    }
    // the same hits grouped by subject and by photo: every hit in exactly one group of each,
    // groups best first, the best subject group the top hit's subject
    let groups = &res["probe_faces"][0]["groups"];
    let ids = |v: &serde_json::Value| -> Vec<i64> {
        let mut ids: Vec<i64> = v
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| {
                g["face_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_i64().unwrap())
            })
            .collect();
        ids.sort();
        ids
    };
    let mut hit_ids: Vec<i64> = hits
        .iter()
        .map(|h| h["face"]["id"].as_i64().unwrap())
        .collect();
    hit_ids.sort();
    assert_eq!(ids(&groups["by_subject"]), hit_ids, "{groups}");
    assert_eq!(ids(&groups["by_image"]), hit_ids, "{groups}");
    let by_subject = groups["by_subject"].as_array().unwrap();
    assert_eq!(
        by_subject[0]["subject"]["label"], "Colin_Powell",
        "{groups}"
    );
    assert_eq!(by_subject[0]["best_score"], hits[0]["score"]);
    let labels: Vec<&str> = by_subject
        .iter()
        .filter_map(|g| g["subject"]["label"].as_str())
        .collect();
    let mut unique = labels.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        labels.len(),
        unique.len(),
        "a subject in two groups: {groups}"
    );
    let audit_id = res["audit_id"].as_u64().expect("audit_id");
    assert_eq!(res["case_id"].as_i64(), Some(case));
    let face_id = hits[0]["face"]["id"].as_i64().unwrap();

    // base64 JSON search
    let probe2 = read_photo("Tony_Blair", 4);
    let j = json!({
        "image_base64": base64::engine::general_purpose::STANDARD.encode(&probe2),
        "k": 5, "collection": "lfw", "case_id": case, "purpose": purpose,
    });
    let r = c.post_json("/v1/search", &j);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(top_label(&r.json()), "Tony_Blair");

    // no case, no purpose, a case of nobody
    let mut j2 = j.clone();
    j2.as_object_mut().unwrap().remove("case_id");
    let r = c.post_json("/v1/search", &j2);
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "case_required");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("builtin:case_required"));
    let mut j3 = j.clone();
    j3["purpose"] = json!("x");
    let r = c.post_json("/v1/search", &j3);
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "purpose_required");
    let mut j4 = j.clone();
    j4["case_id"] = json!(999_999);
    let r = c.post_json("/v1/search", &j4);
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "case_required");

    // search by stored face, and 1:1 verify
    let r = c.post_json(
        &format!("/v1/search/face/{face_id}"),
        &json!({"case_id": case, "purpose": purpose, "k": 3}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let fr = r.json();
    assert!(fr["audit_id"].as_u64().is_some());
    let fhits = fr["hits"].as_array().unwrap();
    assert!(fhits
        .iter()
        .all(|h| h["face"]["id"].as_i64() != Some(face_id)));
    assert_eq!(fhits[0]["face"]["subject"]["label"], "Colin_Powell", "{fr}");
    let same = multipart(&[
        ("a", "a.jpg", &read_photo("Colin_Powell", 1)),
        ("b", "b.jpg", &read_photo("Colin_Powell", 4)),
        ("case_id", "", case.to_string().as_bytes()),
        ("purpose", "", purpose.as_bytes()),
    ]);
    let r = c.post("/v1/verify", &ct, &same);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["same"], true, "{v}");
    assert!(v["threshold"].as_f64().is_some() && v["audit_id"].as_u64().is_some());
    let diff = json!({
        "a_base64": base64::engine::general_purpose::STANDARD.encode(read_photo("Colin_Powell", 1)),
        "b_base64": base64::engine::general_purpose::STANDARD.encode(read_photo("Tony_Blair", 1)),
        "case_id": case, "purpose": purpose,
    });
    let r = c.post_json("/v1/verify", &diff);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["same"], false);

    // the audit log holds the search with the probe hash, and verifies
    let auditor_key = create_user_key(&admin, org, "audrey", "auditor").1;
    let a = server.client(Auth::Key(auditor_key));
    let r = a.get("/v1/audit?limit=1000");
    assert_eq!(r.status, 200, "{}", r.text());
    let recs = r.json()["records"].as_array().unwrap().clone();
    let rec = recs
        .iter()
        .find(|x| x["seq"].as_u64() == Some(audit_id))
        .expect("the search's audit record");
    assert_eq!(rec["action"], "search");
    assert_eq!(rec["case_id"].as_i64(), Some(case));
    assert_eq!(rec["probe_sha256"].as_str(), Some(probe_sha.as_str()));
    assert_eq!(rec["allowed"], true);
    assert_eq!(rec["details"]["purpose"], purpose);
    assert!(rec["object_ids"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o.as_str() == Some(&face_id.to_string())));
    // refusals are audited too
    assert!(recs.iter().any(|x| x["action"] == "search"
        && x["allowed"] == false
        && x["rule"] == "builtin:case_required"));
    // no record holds image bytes
    let all = serde_json::to_string(&recs).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&probe);
    assert!(!all.contains(&b64[..64]));
    let r = a.get("/v1/audit/verify");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ok"], true, "{}", r.text());

    // the case report lists the search; the HTML escapes the case number
    let r = c.get(&format!("/v1/cases/{case}/report"));
    assert_eq!(r.status, 200, "{}", r.text());
    let rep = r.json();
    assert!(rep["searches"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["audit_seq"].as_u64() == Some(audit_id)
            && s["probe_sha256"].as_str() == Some(probe_sha.as_str())));
    let r = a.get(&format!("/v1/cases/{case}/report.html"));
    assert_eq!(r.status, 200);
    assert!(r.ctype.starts_with("text/html"));
    let html = r.text();
    assert!(
        html.contains("CASE-&lt;17&gt;&amp;"),
        "case number not escaped"
    );
    assert!(!html.contains("CASE-<17>"));

    // faces
    let r = c.get(&format!("/v1/faces/{face_id}"));
    assert_eq!(r.status, 200);
    let f = r.json();
    assert_eq!(f["id"].as_i64(), Some(face_id));
    assert_eq!(f["subject"]["label"], "Colin_Powell");
    let r = c.get(&format!("/v1/faces/{face_id}/thumbnail"));
    assert_eq!(r.status, 200);
    assert_eq!(r.ctype, "image/jpeg");
    assert!(r.body.starts_with(&[0xFF, 0xD8, 0xFF]), "not a JPEG");
    let r = c.get("/v1/faces/999999");
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
    let r = c.get("/v1/faces/999999/thumbnail");
    assert_eq!(r.status, 404);
    let r = c.get("/v1/faces/abc");
    assert_eq!(r.status, 400);

    // error paths of search
    let with_case = |extra: &[(&str, &str, &[u8])]| {
        let cs = case.to_string();
        let mut f: Vec<(&str, &str, &[u8])> = extra.to_vec();
        let cs: &'static str = Box::leak(cs.into_boxed_str());
        f.push(("case_id", "", cs.as_bytes()));
        f.push(("purpose", "", purpose.as_bytes()));
        multipart(&f)
    };
    let r = c.post(
        "/v1/search",
        &ct,
        &with_case(&[("image", "notes.txt", b"hello, not a photo\n")]),
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.error_code(), "unsupported_format");
    let mut png = Vec::new();
    image::RgbImage::from_pixel(200, 200, image::Rgb([128, 128, 128]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let r = c.post(
        "/v1/search",
        &ct,
        &with_case(&[("image", "grey.png", &png)]),
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.error_code(), "no_face_detected");
    let mut body = with_case(&[("image", "probe.jpg", &probe)]);
    body.truncate(body.len() / 2);
    let r = c.post("/v1/search", &ct, &body);
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "bad_request");
    let r = c.post("/v1/search", &ct, &with_case(&[("k", "", b"3")]));
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "bad_request");
    let r = c.post(
        "/v1/search",
        &ct,
        &with_case(&[("image", "p.jpg", &probe), ("k", "", b"0")]),
    );
    assert_eq!(r.status, 400);
    let r = c.post("/v1/search", "application/json", b"{\"image_base64\": ");
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "bad_json");
    let r = c.post("/v1/search", "text/plain", b"hello");
    assert_eq!(r.status, 415);
    assert_eq!(r.error_code(), "unsupported_media_type");
    let mut j5 = j.clone();
    j5["collection"] = json!("nope");
    let r = c.post_json("/v1/search", &j5);
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
    let big = vec![0u8; visage_server::BODY_LIMIT + 1024];
    let r = c.post("/v1/search", "application/json", &big);
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "payload_too_large");
    let r = c.get("/v1/nothing");
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
    let r = c.get("/v1/search");
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "method_not_allowed");

    // metrics
    let r = c.get("/metrics");
    assert_eq!(r.status, 200);
    let m = r.text();
    assert!(
        m.contains(
            "visage_http_requests_total{route=\"/v1/search\",method=\"POST\",status=\"200\"}"
        ),
        "{m}"
    );
    assert!(
        m.contains("visage_http_request_duration_seconds_bucket{route=\"/v1/search\",le=\"+Inf\"}")
    );
    assert!(m.contains("visage_searches_total{kind=\"photo\",outcome=\"ok\"}"));
    assert!(m.contains("visage_gallery_faces 9"));
    assert_eq!(anon.get("/metrics").status, 401);

    // public access and opt-out (no credentials)
    let r = anon.post(
        "/v1/public/access",
        &ct,
        &multipart(&[
            ("selfie", "me.jpg", &read_photo("Tony_Blair", 5)),
            ("contact", "", b"tony@example.org"),
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let acc = r.json();
    let receipt: visage_governance::Receipt =
        serde_json::from_value(acc["receipt"].clone()).expect("an access receipt");
    receipt.verify().expect("the access receipt verifies");
    assert_eq!(receipt.kind, "access");
    assert_eq!(
        receipt.body["faces"].as_u64().unwrap() as usize,
        acc["report"]["faces"].as_array().unwrap().len()
    );
    for f in acc["report"]["faces"].as_array().unwrap() {
        assert!(f["thumbnail"]
            .as_str()
            .unwrap()
            .starts_with("data:image/jpeg;base64,"));
        assert!(f["source"].is_object());
    }
    let r = anon.post(
        "/v1/public/opt-out",
        &ct,
        &multipart(&[
            ("selfie", "grey.png", &png),
            ("contact", "", b"x@example.org"),
        ]),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.error_code(), "no_usable_face");
    let r = anon.post(
        "/v1/public/opt-out",
        &ct,
        &multipart(&[("selfie", "me.jpg", &probe2)]),
    );
    assert_eq!(r.status, 400, "contact is required");
    let r = anon.post(
        "/v1/public/opt-out",
        &ct,
        &multipart(&[
            ("selfie", "me.jpg", &read_photo("Tony_Blair", 5)),
            ("contact", "", b"tony@example.org"),
        ]),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let oo = r.json();
    assert_eq!(oo["status"], "completed");
    let receipt: visage_governance::Receipt =
        serde_json::from_value(oo["receipt"].clone()).unwrap();
    assert_eq!(receipt.kind, "opt_out");
    receipt.verify().expect("opt-out receipt verifies");
    assert_eq!(receipt.public_key_hex, server.public_key_hex);
    assert!(!serde_json::to_string(&receipt.body)
        .unwrap()
        .contains("tony@example.org"));
    let rid = oo["request_id"].as_str().unwrap();
    let r = anon.get(&format!("/v1/public/requests/{rid}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["receipt"]["id"].as_str(),
        Some(receipt.id.as_str())
    );
    assert_eq!(
        anon.get("/v1/public/requests/0123456789abcdef0123456789abcdef")
            .status,
        404
    );

    // logout ends the session
    let r = admin.post("/v1/auth/logout", "application/json", b"");
    assert_eq!(r.status, 204);
    assert_eq!(admin.get("/v1/auth/me").status, 401);

    // login is rate-limited per address (10 a minute)
    let mut codes = vec![];
    for _ in 0..12 {
        let r = anon.post_json(
            "/v1/auth/login",
            &json!({"username": "admin", "password": "wrong password!!"}),
        );
        codes.push(r.status);
    }
    assert!(
        codes.contains(&401) && codes.last() == Some(&429),
        "{codes:?}"
    );

    server.stop();
}

fn visage_server_sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}
