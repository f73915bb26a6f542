//! Cluster ingest of every input kind the embedded ingest reads: a folder, a tar.gz and a zip
//! (with a path-traversal entry and a decompression bomb), a WARC.gz (with a truncated
//! record), a JSONL manifest (with provenance columns, a bad row and a missing file) and,
//! where ffmpeg and `../shared/data/e2e` are there, a video and a broken one. The workers must
//! store what `visage ingest` stores from the same files, image by image with the same
//! provenance, and report the same failures; a second job over the same files stores nothing.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::sources::{every_source_kind, videos_with_a_broken_one, HOSTILE_CODES};
use common::{installed, lfw, visage};
use serde_json::Value;

/// One stored image: uri, page uri, capture time, jurisdiction (and how it was set), legal
/// basis, licence, external id, and its faces' subject labels.
type ImageRow = (
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Vec<String>,
);

fn video_inputs(dir: &Path) -> Vec<PathBuf> {
    let clip = (
        "face_recognition/examples/short_hamilton_clip.mp4",
        "hamilton.mp4",
    );
    match videos_with_a_broken_one(dir, &[clip]) {
        Some(()) => vec![dir.to_path_buf()],
        None => vec![],
    }
}

/// The embedded gallery's images with faces, from `visage faces list`.
fn embedded_images(data: &Path) -> BTreeMap<String, ImageRow> {
    let faces = common::run_json(&["faces", "list", "--limit", "10000", "--json"], data);
    let mut out: BTreeMap<String, ImageRow> = BTreeMap::new();
    let s = |v: &Value| v.as_str().map(str::to_string);
    for f in faces.as_array().unwrap() {
        let i = &f["image"];
        let uri = i["uri"].as_str().unwrap().to_string();
        let row = out.entry(uri.clone()).or_insert_with(|| {
            (
                uri,
                s(&i["page_uri"]),
                i["captured_at"].as_i64(),
                s(&i["jurisdiction"]),
                s(&i["jurisdiction_method"]),
                s(&i["legal_basis"]),
                s(&i["licence"]),
                s(&i["external_id"]),
                vec![],
            )
        });
        row.8
            .push(s(&f["subject"]["label"]).unwrap_or_else(|| "-".into()));
    }
    for r in out.values_mut() {
        r.8.sort();
    }
    out
}

/// The cluster's images with faces, read from PostgreSQL.
fn cluster_images(db: &mut postgres::Client) -> BTreeMap<String, ImageRow> {
    let mut out: BTreeMap<String, ImageRow> = BTreeMap::new();
    for r in db
        .query(
            "SELECT i.uri, i.page_uri, i.captured_at, i.jurisdiction, i.jurisdiction_method, \
             i.legal_basis, i.licence, i.external_id, COALESCE(s.label, '-') \
             FROM face f JOIN image i ON i.id = f.image_id \
             LEFT JOIN subject s ON s.id = f.subject_id ORDER BY f.id",
            &[],
        )
        .unwrap()
    {
        let uri: String = r.get(0);
        let row = out.entry(uri.clone()).or_insert_with(|| {
            (
                uri,
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
                vec![],
            )
        });
        row.8.push(r.get(8));
    }
    for r in out.values_mut() {
        r.8.sort();
    }
    out
}

/// Runs one worker until the queue is empty; it must succeed.
fn drain(config: &Path, log: &Path) {
    let mut w = worker(config, log);
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(s) = w.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the worker did not finish");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        status.success(),
        "worker: {}",
        std::fs::read_to_string(log).unwrap()
    );
}

#[test]
fn every_input_kind_matches_embedded() {
    let Some(lfw) = lfw() else { return };
    if !installed("open") {
        return;
    }
    let Some((pg, s3)) = servers() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("inputs");
    let mut paths = every_source_kind(&lfw, &inputs);
    paths.extend(video_inputs(&inputs.join("videos")));
    let with_video = paths.len() > 5;

    // The embedded reference (one inference thread, as the test worker runs).
    let data = tmp.path().join("embedded");
    let report = tmp.path().join("report.jsonl");
    let out = visage()
        .args(["--threads", "1", "--data-dir"])
        .arg(&data)
        .args([
            "ingest",
            "--collection",
            "main",
            "--source-name",
            "mixed",
            "--jurisdiction",
            "US",
            "--subject-from-parent",
            "--json",
            "--report",
        ])
        .arg(&report)
        .args(&paths)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "partial failure: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let emb_report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let emb_failures: Vec<(String, String)> = std::fs::read_to_string(&report)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "failed")
        .map(|v| {
            (
                v["location"].as_str().unwrap().to_string(),
                v["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let emb_stats = common::run_json(&["stats", "--json"], &data);
    let emb_images = embedded_images(&data);

    // The cluster: the same files through the queue.
    let url = pg.create_database("sources").unwrap();
    let s3cfg = s3.create_bucket("sources").unwrap();
    let config = write_config(tmp.path(), &url, &s3cfg, "sources");
    let enqueue = |n: u32| -> i64 {
        let mut args: Vec<String> = [
            "enqueue",
            "--collection",
            "main",
            "--source",
            "mixed",
            "--legal-basis",
            "test",
            "--jurisdiction",
            "US",
            "--subject-from-parent",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(paths.iter().map(|p| p.to_string_lossy().into_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let id: i64 = cluster_ok(&config, &args).trim().parse().unwrap();
        drain(&config, &tmp.path().join(format!("worker{n}.log")));
        id
    };
    let job_id = enqueue(1);
    let (ok, job) = cluster_json(&config, &["job", &job_id.to_string()]);
    assert!(ok, "{job}");
    eprintln!("cluster job: {job}");
    assert_eq!(job["status"], "completed", "{job}");
    // Items: 5 in the folder, 3 containers, the manifest, and 2 videos.
    assert_eq!(job["items"], if with_video { 11 } else { 9 }, "{job}");
    let cl_failures: Vec<(String, String)> = job["failures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "failed")
        .map(|f| {
            (
                f["location"].as_str().unwrap().to_string(),
                f["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in HOSTILE_CODES {
        assert!(
            cl_failures.iter().any(|(_, c)| c == want),
            "no {want} in {cl_failures:?}"
        );
    }
    if with_video {
        assert!(cl_failures
            .iter()
            .any(|(l, c)| c == "corrupt_video" && l.ends_with("broken.mp4")));
    }
    let mut a = cl_failures.clone();
    let mut b = emb_failures.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same failures as the embedded ingest");
    assert_eq!(
        job["units_failed"].as_u64().unwrap(),
        emb_report["errors"].as_u64().unwrap(),
        "{job} vs {emb_report}"
    );
    assert_eq!(
        job["units"].as_u64().unwrap(),
        emb_report["images_seen"].as_u64().unwrap(),
        "{job} vs {emb_report}"
    );

    let (_, stats) = cluster_json(&config, &["stats"]);
    assert_eq!(stats["faces"], emb_stats["faces"], "{stats} vs {emb_stats}");
    assert_eq!(
        stats["images"], emb_stats["images"],
        "{stats} vs {emb_stats}"
    );
    assert_eq!(job["faces"], emb_stats["faces"]);
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let cl_images = cluster_images(&mut db);
    assert_eq!(
        cl_images.keys().collect::<Vec<_>>(),
        emb_images.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        cl_images, emb_images,
        "the same images, faces and provenance"
    );
    let kinds = |pat: &str| cl_images.keys().filter(|u| u.contains(pat)).count();
    for pat in [
        "people.tar.gz!people/",
        "people.zip!archive/",
        "http://news.example/img/",
        "manifest_files/",
        "/folder/",
    ] {
        assert!(
            kinds(pat) > 0,
            "no image from {pat}: {:?}",
            cl_images.keys()
        );
    }
    if with_video {
        assert!(kinds("hamilton.mp4#t=") > 0, "{:?}", cl_images.keys());
    }

    // The same files again: everything is known, nothing new is written.
    let again = enqueue(2);
    let (_, job2) = cluster_json(&config, &["job", &again.to_string()]);
    assert_eq!(job2["faces"], 0, "{job2}");
    assert_eq!(job2["units"], job["units"], "{job2}");
    assert_eq!(
        job2["units_known"].as_u64().unwrap() + job2["units_failed"].as_u64().unwrap(),
        job2["units"].as_u64().unwrap(),
        "{job2}"
    );
    let (_, stats2) = cluster_json(&config, &["stats"]);
    assert_eq!(stats2["faces"], stats["faces"]);
    assert_eq!(stats2["images"], stats["images"]);
    let (ok, check) = cluster_json(&config, &["check"]);
    assert!(ok, "{check}");

    if with_video {
        video_search_matches_embedded(&config, &data, &inputs.join("videos/hamilton.mp4"));
    }
}

/// A track of a video search: first time, last time, unusable?, hits as (image uri, score).
type Track = (f64, f64, bool, Vec<(String, f64)>);

fn tracks(r: &Value) -> Vec<Track> {
    r["tracks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tracks: {r}"))
        .iter()
        .map(|t| {
            let hits = t["hits"]
                .as_array()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h["face"]["image"]["uri"].as_str().unwrap().to_string(),
                                h["score"].as_f64().unwrap(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                t["first_t"].as_f64().unwrap(),
                t["last_t"].as_f64().unwrap(),
                !t["unusable"].is_null(),
                hits,
            )
        })
        .collect()
}

/// `POST /v1/search/video` on the cluster API answers what `visage search CLIP` answers on
/// the embedded gallery of the same inputs: the same tracks, each with the same hits.
fn video_search_matches_embedded(config: &Path, data: &Path, clip: &Path) {
    // The organisation that runs the deployment: its administrators manage the others.
    let toml = std::fs::read_to_string(config).unwrap();
    std::fs::write(config, format!("operator_org = \"agency\"\n{toml}")).unwrap();
    add_org(
        config,
        &[
            "--name",
            "agency",
            "--kind",
            "law_enforcement",
            "--jurisdiction",
            "US",
        ],
    );
    let key = add_key(config, "inv", "investigator", "agency");
    let (_api, a) = serve(config, data);
    let (st, case) = call(
        "POST",
        &format!("{a}/v1/cases"),
        &key,
        Some(
            &serde_json::json!({"number": "2026-V1", "purpose": "video lead",
            "legal_basis": "court order 7", "offence_category": "robbery"}),
        ),
    );
    assert_eq!(st, 201, "{case}");
    let case_id = case["id"].as_i64().unwrap();
    let boundary = "visage-test-boundary-7d3f";
    let mut body = Vec::new();
    for (name, value) in [
        ("case_id", case_id.to_string()),
        ("purpose", "video lead".to_string()),
        ("k", "3".to_string()),
    ] {
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .bytes(),
        );
    }
    body.extend(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; \
             filename=\"clip.mp4\"\r\nContent-Type: video/mp4\r\n\r\n"
        )
        .bytes(),
    );
    body.extend(std::fs::read(clip).unwrap());
    body.extend(format!("\r\n--{boundary}--\r\n").bytes());
    let text = ureq::post(&format!("{a}/v1/search/video"))
        .header("Authorization", &format!("Bearer {key}"))
        .content_type(&format!("multipart/form-data; boundary={boundary}"))
        .send(&body[..])
        .unwrap_or_else(|e| panic!("video search: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap();
    let cl: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(cl["case_id"].as_i64(), Some(case_id), "{cl}");
    assert!(cl["audit_id"].as_u64().is_some(), "{cl}");
    let emb = common::run_json(
        &["search", clip.to_str().unwrap(), "--k", "3", "--json"],
        data,
    );
    let (ct, et) = (tracks(&cl), tracks(&emb));
    eprintln!("video search: {} tracks", ct.len());
    assert!(
        ct.iter().any(|t| !t.2 && !t.3.is_empty()),
        "a usable track with hits: {cl}"
    );
    assert_eq!(ct.len(), et.len(), "cluster {cl}\nembedded {emb}");
    for (c, e) in ct.iter().zip(&et) {
        assert_eq!((c.0, c.1, c.2), (e.0, e.1, e.2));
        let uris = |t: &[(String, f64)]| t.iter().map(|h| h.0.clone()).collect::<Vec<_>>();
        assert_eq!(uris(&c.3), uris(&e.3), "hits of the track at {} s", c.0);
        for (hc, he) in c.3.iter().zip(&e.3) {
            assert!((hc.1 - he.1).abs() < 1e-3, "{hc:?} vs {he:?}");
        }
    }
    // The search is in the cluster's audit log under the case, with the clip's hash and the
    // faces it returned.
    let auditor = add_key(config, "aud", "auditor", "agency");
    let (st, page) = call("GET", &format!("{a}/v1/audit?limit=100"), &auditor, None);
    assert_eq!(st, 200, "{page}");
    let rec = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["seq"].as_u64() == cl["audit_id"].as_u64())
        .unwrap_or_else(|| panic!("no record {} in {page}", cl["audit_id"]))
        .clone();
    eprintln!("audit record: {rec}");
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(clip).unwrap()))
    };
    assert_eq!(rec["action"], "search", "{rec}");
    assert_eq!(rec["case_id"].as_i64(), Some(case_id), "{rec}");
    assert_eq!(rec["probe_sha256"].as_str(), Some(sha.as_str()), "{rec}");
    assert_eq!(rec["details"]["probe_kind"], "video", "{rec}");

    // The case report lists the search, from the same log.
    let (st, report) = call("GET", &format!("{a}/v1/cases/{case_id}/report"), &key, None);
    assert_eq!(st, 200, "{report}");
    assert_eq!(report["case"]["number"], "2026-V1", "{report}");
    assert_eq!(report["org_name"], "agency");
    assert_eq!(report["created_by_username"], "key:inv");
    let searches = report["searches"].as_array().unwrap();
    assert_eq!(searches.len(), 1, "{report}");
    assert_eq!(searches[0]["audit_seq"], cl["audit_id"]);
    assert_eq!(searches[0]["probe_sha256"].as_str(), Some(sha.as_str()));
    assert_eq!(searches[0]["purpose"], "video lead");
    assert!(report["audit_head_seq"].as_u64().unwrap() >= cl["audit_id"].as_u64().unwrap());
    let html = ureq::get(&format!("{a}/v1/cases/{case_id}/report.html"))
        .header("Authorization", &format!("Bearer {key}"))
        .call()
        .unwrap();
    assert!(html.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = html.into_body().read_to_string().unwrap();
    assert!(page.contains("2026-V1") && page.contains(&sha), "{page}");
    // Both exports are in the log, under the case.
    let (_, page2) = call("GET", &format!("{a}/v1/audit?limit=100"), &auditor, None);
    let exports = page2["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "export_report" && r["case_id"].as_i64() == Some(case_id))
        .count();
    assert_eq!(exports, 2, "{page2}");

    operator_actions(config, &a, &key, &auditor);
}

/// Organisation changes and the whole log's export over HTTP: administrators of the
/// operator organisation only, every refusal audited.
fn operator_actions(config: &Path, a: &str, investigator: &str, auditor: &str) {
    let press = add_org(
        config,
        &[
            "--name",
            "press",
            "--kind",
            "private",
            "--jurisdiction",
            "US",
        ],
    );
    let press_id = press["id"].as_i64().unwrap();
    let admin = add_key(config, "adm", "admin", "agency");
    let press_admin = add_key(config, "press-adm", "admin", "press");
    let url = format!("{a}/v1/orgs/{press_id}");
    let quota = serde_json::json!({"search_quota": 5});
    let (st, e) = call("PATCH", &url, &press_admin, Some(&quota));
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (403, Some("policy_denied")),
        "another organisation's administrator: {e}"
    );
    let (st, org) = call("PATCH", &url, &admin, Some(&quota));
    assert_eq!((st, org["search_quota"].as_u64()), (200, Some(5)), "{org}");
    let (st, e) = call(
        "PATCH",
        &url,
        &admin,
        Some(&serde_json::json!({"status": "trial"})),
    );
    assert_eq!(st, 400, "a trial needs an expiry: {e}");
    let (_, orgs) = cluster_json(config, &["orgs"]);
    let stored = orgs
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"].as_i64() == Some(press_id))
        .unwrap()
        .clone();
    assert_eq!(stored["search_quota"], 5, "{stored}");
    assert_eq!(stored["status"], "active", "{stored}");

    // Organisations over HTTP: the operator's administrators create and see them all,
    // another organisation's administrator sees only its own.
    let orgs_url = format!("{a}/v1/orgs");
    let archive = serde_json::json!({"name": "archive", "kind": "research",
        "jurisdiction": "de", "status": "active"});
    let (st, e) = call("POST", &orgs_url, &press_admin, Some(&archive));
    assert_eq!(st, 403, "{e}");
    let (st, org) = call("POST", &orgs_url, &admin, Some(&archive));
    assert_eq!(
        (st, org["jurisdiction"].as_str()),
        (201, Some("DE")),
        "{org}"
    );
    let (st, e) = call("POST", &orgs_url, &admin, Some(&archive));
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{e}"
    );
    let names = |key: &str| -> Vec<String> {
        let (st, v) = call("GET", &orgs_url, key, None);
        assert_eq!(st, 200, "{v}");
        v.as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&admin), ["agency", "press", "archive"]);
    assert_eq!(names(&press_admin), ["press"]);

    let export = format!("{a}/v1/audit/export");
    for (who, code) in [(investigator, 403), (auditor, 403), (&press_admin, 403)] {
        let (st, e) = call("GET", &export, who, None);
        assert_eq!(st, code, "{e}");
    }
    let res = ureq::get(&export)
        .header("Authorization", &format!("Bearer {admin}"))
        .call()
        .unwrap();
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let text = res.into_body().read_to_string().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, &text).unwrap();
    let (_, v) = call("GET", &format!("{a}/v1/audit/verify"), auditor, None);
    let public = v["public_key_hex"].as_str().unwrap();
    verify_offline(&file, public);
    // The log holds the change and every refusal (the export's own record follows it).
    let actions: Vec<(String, bool, String)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["seq"].is_u64())
        .map(|r| {
            (
                r["action"].as_str().unwrap_or("").to_string(),
                r["allowed"].as_bool().unwrap_or(false),
                r["rule"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let count = |action: &str, allowed: bool, rule: &str| {
        actions
            .iter()
            .filter(|(a, ok, r)| a == action && *ok == allowed && (rule.is_empty() || r == rule))
            .count()
    };
    assert_eq!(count("update_org", true, ""), 1, "{actions:?}");
    assert_eq!(
        count("manage_accounts", false, "builtin:operator_only"),
        2,
        "the press administrator's change and creation: {actions:?}"
    );
    assert_eq!(
        count("create_org", true, ""),
        3,
        "two on the command line, one over HTTP"
    );
    assert_eq!(
        count("read_audit", false, "builtin:operator_only"),
        2,
        "the auditor's and the press administrator's: {actions:?}"
    );
}
