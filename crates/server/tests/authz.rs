//! The authorisation matrix: every endpoint x every principal (operator admin, an
//! organisation's admin, investigator, auditor, compliance officer, a revoked key, no
//! credentials), with the exact status each must get; then jurisdiction rules, suspension,
//! disabled users, and erasure receipts.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

const OP: usize = 0;
const OADMIN: usize = 1;
const INV: usize = 2;
const AUD: usize = 3;
const COMP: usize = 4;
const WHO: [&str; 7] = [
    "operator-admin",
    "org-admin",
    "investigator",
    "auditor",
    "compliance",
    "revoked",
    "none",
];

enum Body {
    None,
    Json(Value),
    Form(Vec<u8>),
}

struct Row {
    method: &'static str,
    path: Box<dyn Fn(usize) -> String>,
    body: Box<dyn Fn(usize) -> Body>,
    expect: [u16; 7],
}

fn send(c: &Client, method: &str, path: &str, body: Body) -> Reply {
    match body {
        Body::None => c.request(method, path, None, &[]),
        Body::Json(v) => c.request(
            method,
            path,
            Some("application/json"),
            v.to_string().as_bytes(),
        ),
        Body::Form(b) => c.request(method, path, Some(&multipart_ct()), &b),
    }
}

#[test]
fn authorisation_matrix() {
    let Some(home) = require() else { return };
    let (tmp, data) = temp_gallery(
        &home,
        &["George_W_Bush", "Colin_Powell", "Tony_Blair"],
        None,
    );
    let server = Server::start(&home, &data, Default::default());
    let admin = server.admin();

    // principals
    let me = admin.get("/v1/auth/me").json();
    assert_eq!(me["operator"], true);
    let admin_id = me["user_id"].as_i64().unwrap();
    let op_key = admin.must(
        &format!("/v1/users/{admin_id}/keys"),
        &json!({"name": "ops"}),
        201,
    )["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let org = create_org(&admin, "Matrix Police", "law_enforcement", "GB");
    let (_, oadmin_key) = create_user_key(&admin, org, "m-admin", "admin");
    let (_, inv_key) = create_user_key(&admin, org, "m-inv", "investigator");
    let (_, aud_key) = create_user_key(&admin, org, "m-aud", "auditor");
    let (_, comp_key) = create_user_key(&admin, org, "m-comp", "compliance");
    let (inv2, revoked_key) = create_user_key(&admin, org, "m-inv2", "investigator");
    let revoked_id = revoked_key[4..20].to_string();
    let r = admin.delete(&format!("/v1/keys/{revoked_id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["revoked_at"].is_i64());
    let _ = inv2;
    let keys = [
        Some(op_key),
        Some(oadmin_key),
        Some(inv_key),
        Some(aud_key),
        Some(comp_key),
        Some(revoked_key),
        None,
    ];
    let clients: Vec<Client> = keys
        .iter()
        .map(|k| server.client(k.clone().map_or(Auth::None, Auth::Key)))
        .collect();
    let op = &clients[OP];
    let inv = &clients[INV];

    // fixtures, one per principal where the call changes something
    let case = create_case(inv, "M-1");
    let op_case = create_case(op, "OP-1");
    let close_cases: Vec<i64> = (0..7)
        .map(|i| {
            if i == OP {
                create_case(op, "OP-CLOSE")
            } else {
                create_case(inv, &format!("CLOSE-{i}"))
            }
        })
        .collect();
    let _ = op_case;
    let spare_users: Vec<i64> = (0..7)
        .map(|i| {
            admin.must(
                "/v1/users",
                &json!({"org_id": org, "username": format!("spare-{i}"), "role": "investigator"}),
                201,
            )["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let spare_keys: Vec<String> = (0..7)
        .map(|i| {
            let s = admin.must(
                &format!("/v1/users/{}/keys", spare_users[i]),
                &json!({"name": "spare"}),
                201,
            )["secret"]
                .as_str()
                .unwrap()
                .to_string();
            s[4..20].to_string()
        })
        .collect();
    // faces: ids 1..=9 in a fresh gallery; 7, 8, 9 are deleted by the principals allowed to
    let stats = inv.get("/v1/stats").json();
    assert_eq!(stats["faces"].as_u64(), Some(9), "{stats}");
    let delete_id = |i: usize| match i {
        OP => 7,
        OADMIN => 8,
        COMP => 9,
        _ => 6,
    };

    let probe = read_photo("Colin_Powell", 4);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&probe);
    // one subject per principal to update, assign to and delete; another to erase with its
    // (no) faces
    let subject = |label: String| {
        admin.must(
            "/v1/collections/lfw/subjects",
            &json!({ "label": label }),
            201,
        )["id"]
            .as_i64()
            .unwrap()
    };
    let subjects: Vec<i64> = (0..7).map(|i| subject(format!("fx-{i}"))).collect();
    let erase_subjects: Vec<i64> = (0..7).map(|i| subject(format!("fx-erase-{i}"))).collect();
    let (subjects, erase_subjects) = (subjects.leak() as &[i64], erase_subjects.leak() as &[i64]);
    let purpose = "matrix test: identify the suspect";
    let search_form = {
        let f = multipart(&[
            ("image", "p.jpg", &probe),
            ("case_id", "", case.to_string().as_bytes()),
            ("purpose", "", purpose.as_bytes()),
        ]);
        move |_: usize| Body::Form(f.clone())
    };
    // a 1 s clip of the probe photo (ffmpeg is installed by setup; without it the row is
    // expected to answer 503 decoder_missing to the investigator)
    let clip = tmp.path().join("probe.mp4");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin", "-v", "error", "-y", "-loop", "1", "-t", "1", "-i",
        ])
        .arg(photo("Colin_Powell", 4))
        .args(["-vf", "fps=2,format=yuv420p", "-c:v", "mpeg4"])
        .arg(&clip)
        .status()
        .is_ok_and(|s| s.success());
    let video_ok = if made { 200 } else { 503 };
    let video_form = {
        let v = std::fs::read(&clip).unwrap_or_else(|_| b"no ffmpeg here".to_vec());
        let f = multipart(&[
            ("video", "probe.mp4", &v),
            ("case_id", "", case.to_string().as_bytes()),
            ("purpose", "", purpose.as_bytes()),
        ]);
        move |_: usize| Body::Form(f.clone())
    };
    let ingest_photo = read_photo("Tony_Blair", 5);
    let verify_json = move |_: usize| {
        Body::Json(json!({"a_base64": b64, "b_base64": b64, "case_id": case, "purpose": purpose}))
    };

    const A: u16 = 401;
    const F: u16 = 403;
    let p = |s: &'static str| -> Box<dyn Fn(usize) -> String> { Box::new(move |_| s.to_string()) };
    let none = || -> Box<dyn Fn(usize) -> Body> { Box::new(|_| Body::None) };
    let rows: Vec<Row> = vec![
        //                                                             op   oadm  inv  aud  comp  rev  none
        Row {
            method: "GET",
            path: p("/healthz"),
            body: none(),
            expect: [200, 200, 200, 200, 200, 200, 200],
        },
        Row {
            method: "GET",
            path: p("/v1/openapi.json"),
            body: none(),
            expect: [200, 200, 200, 200, 200, 200, 200],
        },
        Row {
            method: "GET",
            path: p("/v1/auth/me"),
            body: none(),
            expect: [200, 200, 200, 200, 200, A, A],
        },
        Row {
            method: "GET",
            path: p("/metrics"),
            body: none(),
            expect: [200, 200, 200, 200, 200, A, A],
        },
        Row {
            method: "POST",
            path: p("/v1/search"),
            body: Box::new(search_form),
            expect: [F, F, 200, F, F, A, A],
        },
        Row {
            method: "POST",
            path: p("/v1/search/video"),
            body: Box::new(video_form),
            expect: [F, F, video_ok, F, F, A, A],
        },
        Row {
            method: "POST",
            path: p("/v1/search/face/1"),
            body: Box::new(move |_| Body::Json(json!({"case_id": case, "purpose": purpose}))),
            expect: [F, F, 200, F, F, A, A],
        },
        Row {
            method: "POST",
            path: p("/v1/verify"),
            body: Box::new(verify_json),
            expect: [F, F, 200, F, F, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/faces/1"),
            body: none(),
            expect: [200, 200, 200, 200, 200, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/faces/1/thumbnail"),
            body: none(),
            expect: [200, 200, 200, 200, 200, A, A],
        },
        Row {
            method: "DELETE",
            path: Box::new(move |i| format!("/v1/faces/{}", delete_id(i))),
            body: none(),
            expect: [200, 200, F, F, 200, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/stats"),
            body: none(),
            expect: [200, 200, 200, 200, 200, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/collections"),
            body: none(),
            expect: [200, 200, 200, 200, 200, A, A],
        },
        Row {
            method: "POST",
            path: p("/v1/cases"),
            body: Box::new(|i| {
                Body::Json(
                    json!({"number": format!("NEW-{i}"), "purpose": "p", "legal_basis": "l", "offence_category": "o"}),
                )
            }),
            expect: [201, 201, 201, F, F, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/cases"),
            body: none(),
            expect: [200, 200, 200, F, F, A, A],
        },
        // the operator's admin belongs to another organisation: the case does not exist for it
        Row {
            method: "GET",
            path: Box::new(move |_| format!("/v1/cases/{case}")),
            body: none(),
            expect: [404, 200, 200, F, F, A, A],
        },
        Row {
            method: "GET",
            path: Box::new(move |_| format!("/v1/cases/{case}/report")),
            body: none(),
            expect: [404, 200, 200, 200, F, A, A],
        },
        Row {
            method: "GET",
            path: Box::new(move |_| format!("/v1/cases/{case}/report.html")),
            body: none(),
            expect: [404, 200, 200, 200, F, A, A],
        },
        Row {
            method: "POST",
            path: Box::new(move |i| format!("/v1/cases/{}/close", close_cases[i])),
            body: none(),
            expect: [200, 200, 200, F, F, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/audit"),
            body: none(),
            expect: [200, 200, F, 200, 200, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/audit/verify"),
            body: none(),
            expect: [200, 200, F, 200, 200, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/audit/export"),
            body: none(),
            expect: [200, F, F, F, F, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/orgs"),
            body: none(),
            expect: [200, 200, F, F, F, A, A],
        },
        Row {
            method: "POST",
            path: p("/v1/orgs"),
            body: Box::new(|i| {
                Body::Json(
                    json!({"name": format!("org-{i}"), "kind": "research", "jurisdiction": "FR", "status": "active"}),
                )
            }),
            expect: [201, F, F, F, F, A, A],
        },
        Row {
            method: "PATCH",
            path: Box::new(move |_| format!("/v1/orgs/{org}")),
            body: Box::new(|_| Body::Json(json!({"status": "active"}))),
            expect: [200, F, F, F, F, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/users"),
            body: none(),
            expect: [200, 200, F, F, F, A, A],
        },
        Row {
            method: "POST",
            path: p("/v1/users"),
            body: Box::new(move |i| {
                Body::Json(
                    json!({"org_id": org, "username": format!("new-{i}"), "role": "auditor"}),
                )
            }),
            expect: [201, 201, F, F, F, A, A],
        },
        Row {
            method: "POST",
            path: {
                let u = spare_users.clone();
                Box::new(move |i| format!("/v1/users/{}/disable", u[i]))
            },
            body: none(),
            expect: [200, 200, F, F, F, A, A],
        },
        Row {
            method: "POST",
            path: {
                let u = spare_users.clone();
                Box::new(move |i| format!("/v1/users/{}/enable", u[i]))
            },
            body: none(),
            expect: [200, 200, F, F, F, A, A],
        },
        Row {
            method: "POST",
            path: {
                let u = spare_users.clone();
                Box::new(move |i| format!("/v1/users/{}/keys", u[i]))
            },
            body: Box::new(|_| Body::Json(json!({"name": "k"}))),
            expect: [201, 201, F, F, F, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/keys"),
            body: none(),
            expect: [200, 200, F, F, F, A, A],
        },
        Row {
            method: "DELETE",
            path: {
                let k = spare_keys.clone();
                Box::new(move |i| format!("/v1/keys/{}", k[i]))
            },
            body: none(),
            expect: [200, 200, F, F, F, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/policy"),
            body: none(),
            expect: [200, 200, F, F, F, A, A],
        },
        Row {
            method: "POST",
            path: p("/v1/erasures"),
            body: Box::new(|_| Body::Json(json!({"jurisdiction": "FR"}))),
            expect: [201, 201, F, F, 201, A, A],
        },
        // ingest jobs (jobs.rs); job 1 is build_gallery's CLI run: no report, already ended
        Row {
            method: "POST",
            path: p("/v1/ingest/jobs"),
            body: Box::new(move |i| {
                let meta = json!({"collection": "lfw",
                    "source": {"name": format!("mx-{i}"), "legal_basis": "matrix test"}});
                Body::Form(multipart(&[
                    ("meta", "", meta.to_string().as_bytes()),
                    ("file", "p.jpg", &ingest_photo),
                ]))
            }),
            expect: [202, 202, F, F, F, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/ingest/jobs"),
            body: none(),
            expect: [200, 200, F, F, F, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/ingest/jobs/1"),
            body: none(),
            expect: [200, 200, F, F, F, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/ingest/jobs/1/report"),
            body: none(),
            expect: [404, 404, F, F, F, A, A],
        },
        Row {
            method: "POST",
            path: p("/v1/ingest/jobs/1/cancel"),
            body: none(),
            expect: [409, 409, F, F, F, A, A],
        },
        // collections and subjects (catalog.rs)
        Row {
            method: "POST",
            path: p("/v1/collections"),
            body: Box::new(|i| Body::Json(json!({"name": format!("mx-{i}")}))),
            expect: [201, 201, F, F, F, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/collections/lfw"),
            body: none(),
            expect: [200, 200, 200, 200, 200, A, A],
        },
        Row {
            method: "GET",
            path: p("/v1/collections/lfw/subjects"),
            body: none(),
            expect: [200, 200, 200, 200, 200, A, A],
        },
        Row {
            method: "POST",
            path: p("/v1/collections/lfw/subjects"),
            body: Box::new(|i| Body::Json(json!({"label": format!("mx-{i}")}))),
            expect: [201, 201, F, F, F, A, A],
        },
        Row {
            method: "GET",
            path: Box::new(move |i| format!("/v1/subjects/{}", subjects[i])),
            body: none(),
            expect: [200, 200, 200, 200, 200, A, A],
        },
        Row {
            method: "PATCH",
            path: Box::new(move |i| format!("/v1/subjects/{}", subjects[i])),
            body: Box::new(|_| Body::Json(json!({"attributes": {"note": "matrix"}}))),
            expect: [200, 200, F, F, F, A, A],
        },
        Row {
            method: "POST",
            path: Box::new(move |i| format!("/v1/subjects/{}/faces", subjects[i])),
            body: Box::new(|i| Body::Json(json!({"face_ids": [i + 1]}))),
            expect: [200, 200, F, F, F, A, A],
        },
        Row {
            method: "DELETE",
            path: Box::new(move |i| format!("/v1/subjects/{}/faces/{}", subjects[i], i + 1)),
            body: none(),
            expect: [200, 200, F, F, F, A, A],
        },
        Row {
            method: "DELETE",
            path: Box::new(move |i| format!("/v1/subjects/{}", subjects[i])),
            body: none(),
            expect: [200, 200, F, F, F, A, A],
        },
        Row {
            method: "DELETE",
            path: Box::new(move |i| {
                format!("/v1/subjects/{}?delete_faces=true", erase_subjects[i])
            }),
            body: none(),
            expect: [200, 200, F, F, 200, A, A],
        },
        Row {
            method: "POST",
            path: p("/v1/auth/logout"),
            body: none(),
            expect: [204, 204, 204, 204, 204, A, A],
        },
    ];
    // Every operation of the OpenAPI document has a row: a new endpoint without one fails here.
    let doc = clients[OP].get("/v1/openapi.json").json();
    let matches = |template: &str, path: &str| {
        let path = path.split('?').next().unwrap();
        let t: Vec<&str> = template.split('/').collect();
        let p: Vec<&str> = path.split('/').collect();
        t.len() == p.len() && t.iter().zip(&p).all(|(a, b)| a.starts_with('{') || a == b)
    };
    let mut missing = Vec::new();
    for (template, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let m = method.to_ascii_uppercase();
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()) {
                continue;
            }
            // Public on purpose (no credentials; rate-limited): tested in http.rs.
            if template == "/v1/auth/login" || template.starts_with("/v1/public/") {
                continue;
            }
            if !rows
                .iter()
                .any(|r| r.method == m && matches(template, &(r.path)(INV)))
            {
                missing.push(format!("{m} {template}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "endpoints without a row in the authorisation matrix: {missing:?}"
    );

    let mut failures = Vec::new();
    for row in &rows {
        for (i, c) in clients.iter().enumerate() {
            let path = (row.path)(i);
            let r = send(c, row.method, &path, (row.body)(i));
            if r.status != row.expect[i] {
                failures.push(format!(
                    "{} {path} as {}: got {} want {}: {}",
                    row.method,
                    WHO[i],
                    r.status,
                    row.expect[i],
                    r.text()
                ));
            }
            if r.status == 401 {
                assert_eq!(r.error_code(), "unauthorized");
                assert_eq!(
                    r.json()["error"]["message"],
                    "missing, invalid or revoked credentials"
                );
            }
            if r.status == 403 {
                let code = r.error_code();
                assert!(
                    [
                        "policy_denied",
                        "case_required",
                        "purpose_required",
                        "quota_exceeded"
                    ]
                    .contains(&code.as_str()),
                    "{code}"
                );
                assert!(
                    r.json()["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("(rule "),
                    "{}",
                    r.text()
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "authorisation matrix mismatches:\n{}",
        failures.join("\n")
    );

    // a wrong secret for a real key id, and a malformed header, get the same 401
    let k = keys[INV].clone().unwrap();
    let mut bad = k.clone();
    bad.replace_range(bad.len() - 3.., "AAA");
    for c in [
        server.client(Auth::Key(bad)),
        server.client(Auth::Key("nonsense".into())),
        server.client(Auth::Cookie("visage_session=forged".into())),
    ] {
        let r = c.get("/v1/stats");
        assert_eq!(r.status, 401);
        assert_eq!(r.error_code(), "unauthorized");
    }

    // search without a case
    let r = inv.post_json("/v1/search", &json!({"image_base64": base64::engine::general_purpose::STANDARD.encode(&probe), "purpose": purpose}));
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "case_required");

    // a private company in the US cannot search, even with a case
    let shop = create_org(&admin, "Shop Inc", "private", "US");
    let (_, shop_key) = create_user_key(&admin, shop, "shop-inv", "investigator");
    let shop_c = server.client(Auth::Key(shop_key));
    let shop_case = create_case(&shop_c, "S-1");
    let r = shop_c.post_json("/v1/search", &json!({"image_base64": base64::engine::general_purpose::STANDARD.encode(&probe), "case_id": shop_case, "purpose": purpose}));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.error_code(), "policy_denied");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("us-private-no-search"));

    // an organisation in Illinois gets 403 everywhere (its admin and its investigator)
    let il = create_org(&admin, "Chicago PD", "law_enforcement", "US-IL");
    let (_, il_inv) = create_user_key(&admin, il, "il-inv", "investigator");
    let (_, il_admin) = create_user_key(&admin, il, "il-admin", "admin");
    for key in [il_inv, il_admin] {
        let c = server.client(Auth::Key(key));
        for row in &rows {
            let path = (row.path)(INV);
            if ["/healthz", "/v1/openapi.json", "/v1/auth/logout"].contains(&path.as_str()) {
                continue;
            }
            let r = send(&c, row.method, &path, (row.body)(INV));
            assert_eq!(
                r.status,
                403,
                "{} {path} from US-IL: {}",
                row.method,
                r.text()
            );
            assert_eq!(r.error_code(), "policy_denied");
        }
    }

    // suspension takes effect on the next request, and so does reactivation
    assert_eq!(inv.get("/v1/stats").status, 200);
    let r = admin.patch_json(&format!("/v1/orgs/{org}"), &json!({"status": "suspended"}));
    assert_eq!(r.status, 200, "{}", r.text());
    for path in ["/v1/stats", "/v1/auth/me", "/metrics", "/v1/cases"] {
        let r = inv.get(path);
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert!(r.text().contains("org_suspended"), "{}", r.text());
    }
    let r = admin.patch_json(&format!("/v1/orgs/{org}"), &json!({"status": "active"}));
    assert_eq!(r.status, 200);
    assert_eq!(inv.get("/v1/stats").status, 200);

    // a disabled user's key stops working at once
    let users = admin.get(&format!("/v1/users?org_id={org}")).json();
    let inv_id = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "m-inv")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        admin
            .post_json(&format!("/v1/users/{inv_id}/disable"), &json!({}))
            .status,
        200
    );
    assert_eq!(inv.get("/v1/stats").status, 401);
    assert_eq!(
        admin
            .post_json(&format!("/v1/users/{inv_id}/enable"), &json!({}))
            .status,
        200
    );
    assert_eq!(inv.get("/v1/stats").status, 200);

    // an organisation's admin sees only its own organisation
    let oa = &clients[OADMIN];
    let orgs = oa.get("/v1/orgs").json();
    assert_eq!(orgs.as_array().unwrap().len(), 1);
    assert_eq!(orgs[0]["id"].as_i64(), Some(org));
    let users = oa.get(&format!("/v1/users?org_id={shop}")).json();
    assert!(users
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["org_id"].as_i64() == Some(org)));
    let r = oa.post_json(
        "/v1/users",
        &json!({"org_id": shop, "username": "intruder", "role": "admin"}),
    );
    assert_eq!(r.status, 404);
    // and an org's audit view holds only its own records
    let recs = oa.get("/v1/audit?limit=1000").json();
    assert!(recs["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["org_id"].as_i64() == Some(org)));

    // erasure by source returns a signed receipt that verifies offline
    let comp = &clients[COMP];
    // the matrix's two ingest jobs (sources mx-0, mx-1) finish first; their faces are not
    // in source 1
    let t = std::time::Instant::now();
    let added = loop {
        let jobs = op.get("/v1/ingest/jobs").json();
        let http: Vec<&Value> = jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["id"].as_i64() != Some(1))
            .collect();
        assert_eq!(http.len(), 2, "{jobs}");
        if http
            .iter()
            .all(|j| !matches!(j["status"].as_str(), Some("queued" | "running")))
        {
            assert!(http.iter().all(|j| j["status"] == "completed"), "{jobs}");
            break http
                .iter()
                .map(|j| j["faces_indexed"].as_u64().unwrap())
                .sum::<u64>();
        }
        assert!(
            t.elapsed().as_secs() < 120,
            "ingest jobs still running: {jobs}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(added >= 1, "the uploaded photo gave no face");
    let before = inv.get("/v1/stats").json()["faces"].as_u64().unwrap() - added;
    assert_eq!(before, 6, "three faces were deleted in the matrix");
    let r = comp.post_json("/v1/erasures", &json!({"source_id": 1}));
    assert_eq!(r.status, 201, "{}", r.text());
    let out = r.json();
    assert_eq!(out["report"]["faces"].as_u64(), Some(before));
    let receipt: visage_governance::Receipt =
        serde_json::from_value(out["receipt"].clone()).unwrap();
    assert_eq!(receipt.kind, "erasure");
    receipt.verify().expect("erasure receipt verifies");
    assert_eq!(receipt.public_key_hex, server.public_key_hex);
    assert_eq!(receipt.body["faces"].as_u64(), Some(before));
    assert_eq!(receipt.body["target"]["source_id"].as_i64(), Some(1));
    let mut forged = receipt.clone();
    forged.body["faces"] = json!(0);
    assert!(forged.verify().is_err());
    assert_eq!(inv.get("/v1/stats").json()["faces"].as_u64(), Some(added));
    let r = comp.post_json(
        "/v1/erasures",
        &json!({"source_id": 1, "jurisdiction": "FR"}),
    );
    assert_eq!(r.status, 400);

    // the audit log still verifies after all of this
    let v = clients[AUD].get("/v1/audit/verify").json();
    if v["ok"] != true {
        let seq = v["first_bad"]["seq"].as_u64().unwrap_or(1);
        let bad = clients[OP]
            .get(&format!("/v1/audit?after_seq={}&limit=1", seq - 1))
            .text();
        panic!("audit log does not verify: {v}\nrecord: {bad}");
    }

    server.stop();
}

#[test]
fn read_only_server_refuses_writes() {
    let Some(home) = require() else { return };
    let (_tmp, data) = temp_gallery(&home, &["Colin_Powell"], None);
    let opts = visage_server::ServeOptions {
        read_only: true,
        ..Default::default()
    };
    let server = Server::start(&home, &data, opts);
    let admin = server.admin();
    let me = admin.get("/v1/auth/me").json();
    let key = admin.must(
        &format!("/v1/users/{}/keys", me["user_id"]),
        &json!({"name": "k"}),
        201,
    )["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let c = server.client(Auth::Key(key));
    let r = c.delete("/v1/faces/1");
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.error_code(), "read_only");
    let r = c.post_json("/v1/erasures", &json!({"jurisdiction": "FR"}));
    assert_eq!(r.status, 409);
    assert_eq!(r.error_code(), "read_only");
    assert_eq!(c.get("/v1/faces/1").status, 200);
    server.stop();
}

/// An organisation's monthly quota holds when its searches arrive at once: each search
/// holds the organisation's quota lock from decision to record, so exactly the quota's
/// worth are answered and the rest refused `quota_exceeded`.
#[test]
fn a_quota_holds_under_concurrent_searches() {
    let Some(home) = require() else { return };
    let (_tmp, data) = temp_gallery(&home, &["George_W_Bush", "Colin_Powell"], None);
    let server = Server::start(&home, &data, Default::default());
    let admin = server.admin();
    let org = create_org(&admin, "Trial Police", "law_enforcement", "GB");
    let r = admin.patch_json(&format!("/v1/orgs/{org}"), &json!({"search_quota": 2}));
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, key) = create_user_key(&admin, org, "trial-inv", "investigator");
    let case = create_case(&server.client(Auth::Key(key.clone())), "T-1");
    let body = json!({
        "image_base64": base64::engine::general_purpose::STANDARD.encode(read_photo("Colin_Powell", 4)),
        "case_id": case, "purpose": "identify the suspect (quota test)"});
    let clients: Vec<Client> = (0..6)
        .map(|_| server.client(Auth::Key(key.clone())))
        .collect();
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .map(|c| {
                let body = &body;
                s.spawn(move || {
                    let r = c.post_json("/v1/search", body);
                    let code = if r.status == 200 {
                        String::new()
                    } else {
                        r.error_code()
                    };
                    (r.status, code)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 2, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(s, c)| *s == 200 || (*s == 403 && c == "quota_exceeded")),
        "{answers:?}"
    );
    server.stop();
}
