//! Ingest jobs over HTTP against the real server on 127.0.0.1 with real LFW photos: path jobs
//! inside `--ingest-root` (faces counted exactly as the engine's own ingest counts them, then
//! searchable; a second run finds only duplicates), refusals of paths outside the roots and of
//! symbolic links leading out, uploads with good and bad files (report with reason codes,
//! staging removed), live progress, cancellation of running and queued jobs, roles, a
//! read-only server, unknown jobs, malformed bodies, and jobs a stopped server left behind.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use visage_engine::{ingest_paths, IngestOptions};
use visage_gallery::{Access, Gallery, NewSource};
use visage_vision::pack::Home;
use visage_vision::PipelinePool;

const JOBS: &str = "/v1/ingest/jobs";

fn serve(home: &Home, data: &Path, roots: &[&Path]) -> Server {
    let opts = visage_server::ServeOptions {
        ingest_roots: roots.iter().map(|p| p.to_path_buf()).collect(),
        ingest_workers: 1,
        ..Default::default()
    };
    Server::start(home, data, opts)
}

/// Copies photos `1..=n` of each person into `dir/<person>/`.
fn copy_photos(dir: &Path, people: &[(&str, u32)]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (person, n) in people {
        let d = dir.join(person);
        std::fs::create_dir_all(&d).unwrap();
        for i in 1..=*n {
            let src = photo(person, i);
            let dst = d.join(src.file_name().unwrap());
            std::fs::copy(&src, &dst).unwrap();
            out.push(dst);
        }
    }
    out
}

/// Faces the engine's own ingest (what `visage ingest` runs) indexes from `inputs`, in a
/// scratch gallery: the number an HTTP job over the same files must report.
fn engine_faces(home: &Home, inputs: &[PathBuf], subject_from_parent: bool) -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    let g = Gallery::open(tmp.path(), Access::ReadWrite).unwrap();
    let pool = PipelinePool::load(home, "open", 1, 1).unwrap();
    let mut opts = IngestOptions::new(
        "scratch",
        NewSource {
            name: "scratch".into(),
            kind: "files".into(),
            ..Default::default()
        },
    );
    opts.subject_from_parent = subject_from_parent;
    let r = ingest_paths(&g, &pool, inputs, &opts, &AtomicBool::new(false), &|_| {}).unwrap();
    assert_eq!(r.counts.errors, 0, "{r:?}");
    r.counts.faces_indexed
}

fn job(c: &Client, id: i64) -> Value {
    let r = c.get(&format!("{JOBS}/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Polls the job until `done` holds (or panics after `secs`).
fn wait(c: &Client, id: i64, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let t = Instant::now();
    loop {
        let j = job(c, id);
        if done(&j) {
            return j;
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "job {id} still not there after {secs} s: {j}"
        );
        std::thread::sleep(Duration::from_millis(150));
    }
}

fn ended(j: &Value) -> bool {
    !matches!(j["status"].as_str(), Some("queued") | Some("running"))
}

fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.error_code(), code, "{}", r.text());
}

fn path_job(collection: &str, path: &Path, source: &str) -> Value {
    json!({
        "collection": collection,
        "path": path.display().to_string(),
        "source": {"name": source, "legal_basis": "consent of the people photographed",
                   "jurisdiction": "GB"},
        "options": {"subject_from_parent": true},
    })
}

fn started(r: &Reply) -> i64 {
    assert_eq!(r.status, 202, "{}", r.text());
    let v = r.json();
    assert!(
        matches!(v["status"].as_str(), Some("queued") | Some("running")),
        "{v}"
    );
    v["id"].as_i64().unwrap()
}

fn report_lines(c: &Client, id: i64) -> Vec<Value> {
    let r = c.get(&format!("{JOBS}/{id}/report"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.ctype, "application/x-ndjson");
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The audit records of `action` (as the operator admin), oldest first.
fn audit(c: &Client, action: &str) -> Vec<Value> {
    let r = c.get("/v1/audit?limit=500");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == action)
        .cloned()
        .collect()
}

/// An API key for the first admin (cookie sessions expire with the client, keys do not).
fn admin_key(server: &Server) -> Client {
    let admin = server.admin();
    let me = admin.get("/v1/auth/me").json();
    let key = admin.must(
        &format!("/v1/users/{}/keys", me["user_id"]),
        &json!({"name": "jobs"}),
        201,
    )["secret"]
        .as_str()
        .unwrap()
        .to_string();
    server.client(Auth::Key(key))
}

fn staging_entries(data: &Path) -> usize {
    match std::fs::read_dir(data.join("staging")) {
        Ok(rd) => rd.count(),
        Err(_) => 0,
    }
}

#[test]
fn path_job_indexes_faces_then_finds_duplicates() {
    let Some(home) = require() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let people = root.join("people");
    let files = copy_photos(&people, &[("Colin_Powell", 5), ("Tony_Blair", 4)]);
    let expected = engine_faces(&home, std::slice::from_ref(&people), true);
    assert!(expected >= 9, "one face per photo at least: {expected}");
    let data = tmp.path().join("data");
    let server = serve(&home, &data, &[&root]);
    let admin = admin_key(&server);

    // the Location header names the job
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let Auth::Key(key) = &admin.auth else {
        unreachable!()
    };
    let res = agent
        .post(format!("{}{JOBS}", admin.base))
        .header("Authorization", &format!("Bearer {key}"))
        .header("Content-Type", "application/json")
        .send(path_job("people", &people, "press").to_string())
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let location = res
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = serde_json::from_str(&res.into_body().read_to_string().unwrap()).unwrap();
    let id = body["id"].as_i64().unwrap();
    assert_eq!(location, format!("{JOBS}/{id}"));
    assert_eq!(body["origin"], "path");
    assert_eq!(body["created_by"], "admin");

    let j = wait(&admin, id, 180, ended);
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["items_seen"], 9);
    assert_eq!(j["items_total"], 9);
    assert_eq!(j["images_indexed"], 9);
    assert_eq!(j["duplicates"], 0);
    assert_eq!(j["errors"], 0);
    assert_eq!(j["faces_indexed"].as_u64(), Some(expected), "{j}");
    assert_eq!(j["collection"], "people");
    assert_eq!(j["source"], "press");
    assert_eq!(j["legal_basis"], "consent of the people photographed");
    assert_eq!(j["jurisdiction"], "GB");
    let canonical = std::fs::canonicalize(&people).unwrap();
    assert_eq!(j["path"], canonical.display().to_string());
    assert!(j["finished_at"].as_i64().unwrap() >= j["started_at"].as_i64().unwrap());
    assert_eq!(j["report"], format!("{JOBS}/{id}/report"));
    // the report: one line per rejected face, none for indexed ones, never image bytes
    let lines = report_lines(&admin, id);
    assert_eq!(
        lines.len() as u64,
        j["faces_rejected_total"].as_u64().unwrap(),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| l["kind"] == "face_rejected"));

    // the faces are there and searchable, labelled by folder
    let colls = admin.get("/v1/collections").json();
    let c = colls
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "people")
        .unwrap();
    assert_eq!(c["faces"].as_u64(), Some(expected));
    assert_eq!(c["images"], 9);
    assert_eq!(c["subjects"], 2);
    let org = create_org(&admin, "Jobs Police", "law_enforcement", "GB");
    let (_, inv_key) = create_user_key(&admin, org, "ines", "investigator");
    let inv = server.client(Auth::Key(inv_key));
    let case = create_case(&inv, "JOBS-1");
    let probe = read_photo("Colin_Powell", 7);
    let body = multipart(&[
        ("image", "probe.jpg", &probe),
        ("k", "", b"3"),
        ("case_id", "", case.to_string().as_bytes()),
        ("purpose", "", b"identify the man in the CCTV still"),
    ]);
    let r = inv.post("/v1/search", &multipart_ct(), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let hit = &r.json()["probe_faces"][0]["hits"][0]["face"];
    assert_eq!(hit["subject"]["label"], "Colin_Powell", "{hit}");
    let uri = hit["image"]["uri"].as_str().unwrap_or_default().to_string();
    assert!(
        files
            .iter()
            .any(|f| uri.ends_with(&*f.file_name().unwrap().to_string_lossy())),
        "{hit}"
    );

    // the same path again: everything is a duplicate, nothing new
    let id2 = started(&admin.post_json(JOBS, &path_job("people", &people, "press")));
    assert!(id2 > id);
    let j2 = wait(&admin, id2, 120, ended);
    assert_eq!(j2["status"], "completed", "{j2}");
    assert_eq!(j2["items_seen"], 9);
    assert_eq!(j2["duplicates"], 9);
    assert_eq!(j2["images_indexed"], 0);
    assert_eq!(j2["faces_indexed"], 0);
    assert_eq!(report_lines(&admin, id2).len(), 0);
    let colls = admin.get("/v1/collections").json();
    assert_eq!(colls[0]["faces"].as_u64(), Some(expected));

    // the list, newest first, paged
    let l = admin.get(JOBS).json();
    let ids: Vec<i64> = l["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![id2, id]);
    assert!(l["next_before"].is_null());
    let p1 = admin.get(&format!("{JOBS}?limit=1")).json();
    assert_eq!(p1["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(p1["next_before"].as_i64(), Some(id2));
    let p2 = admin.get(&format!("{JOBS}?limit=1&before={id2}")).json();
    assert_eq!(p2["jobs"][0]["id"].as_i64(), Some(id));
    assert!(p2["next_before"].is_null());
    assert_error(&admin.get(&format!("{JOBS}?limit=0")), 400, "bad_request");

    // the same source name with another legal basis is a conflict, not a silent reuse
    let mut other = path_job("people", &people, "press");
    other["source"]["legal_basis"] = json!("something else");
    assert_error(&admin.post_json(JOBS, &other), 409, "source_conflict");

    // audited: queued and finished with counts (decimal strings), never file names
    let recs = audit(&admin, "ingest");
    let queued: Vec<&Value> = recs
        .iter()
        .filter(|r| r["details"]["event"] == "queued")
        .collect();
    let finished: Vec<&Value> = recs
        .iter()
        .filter(|r| r["details"]["event"] == "finished")
        .collect();
    assert_eq!(queued.len(), 2, "{recs:?}");
    assert_eq!(finished.len(), 2, "{recs:?}");
    assert_eq!(queued[0]["details"]["job_id"], id.to_string());
    assert_eq!(queued[0]["allowed"], true);
    assert_eq!(queued[0]["rule"], "admin");
    assert_eq!(finished[0]["details"]["status"], "completed");
    assert_eq!(
        finished[0]["details"]["faces_indexed"],
        expected.to_string()
    );
    assert_eq!(finished[0]["result_count"].as_u64(), Some(expected));
    assert_eq!(finished[1]["details"]["duplicates"], "9");
    let text = serde_json::to_string(&recs).unwrap();
    assert!(!text.contains("Colin_Powell_0001"), "{text}");
    server.stop();
}

#[test]
fn paths_outside_the_roots_are_refused() {
    let Some(home) = require() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    copy_photos(&root, &[("Tony_Blair", 1)]);
    copy_photos(&outside, &[("Colin_Powell", 1)]);
    std::os::unix::fs::symlink(&outside, root.join("link-out")).unwrap();
    std::os::unix::fs::symlink(
        outside.join("Colin_Powell/Colin_Powell_0001.jpg"),
        root.join("file-out.jpg"),
    )
    .unwrap();
    std::fs::write(
        root.join("rows.csv"),
        "path\nTony_Blair/Tony_Blair_0001.jpg\n",
    )
    .unwrap();

    // no --ingest-root: no path job at all
    let data0 = tmp.path().join("data0");
    let s0 = serve(&home, &data0, &[]);
    let a0 = admin_key(&s0);
    let r = a0.post_json(JOBS, &path_job("c", &root, "s"));
    assert_error(&r, 403, "ingest_path_disabled");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--ingest-root"));
    assert_eq!(a0.get(JOBS).json()["jobs"], json!([]));
    s0.stop();

    let data = tmp.path().join("data");
    let server = serve(&home, &data, &[&root]);
    let admin = admin_key(&server);
    let refused = |p: &Path, status: u16, code: &str| {
        let r = admin.post_json(JOBS, &path_job("c", p, "s"));
        assert_error(&r, status, code);
    };
    refused(&outside, 403, "path_outside_roots");
    refused(Path::new("/etc"), 403, "path_outside_roots");
    refused(&root.join("../outside"), 403, "path_outside_roots");
    refused(
        &root.join("Tony_Blair/../../outside"),
        403,
        "path_outside_roots",
    );
    refused(&root.join("link-out"), 403, "path_outside_roots");
    refused(&root.join("file-out.jpg"), 403, "path_outside_roots");
    refused(&root.join("missing"), 400, "path_not_found");
    refused(&root.join("rows.csv"), 400, "manifest_not_allowed");
    refused(Path::new("relative/path"), 400, "bad_request");
    // a root's sibling sharing its name as a prefix is outside too
    let sibling = tmp.path().join("rootx");
    copy_photos(&sibling, &[("Tony_Blair", 1)]);
    refused(&sibling, 403, "path_outside_roots");

    // bad descriptions
    let mut j = path_job("c", &root, "s");
    j["source"]["jurisdiction"] = json!("US-IL");
    assert_error(&admin.post_json(JOBS, &j), 403, "jurisdiction_excluded");
    let mut j = path_job("c", &root, "s");
    j["source"]["jurisdiction"] = json!("Narnia");
    assert_error(&admin.post_json(JOBS, &j), 400, "bad_request");
    let mut j = path_job("c", &root, "s");
    j["source"].as_object_mut().unwrap().remove("legal_basis");
    assert_error(&admin.post_json(JOBS, &j), 400, "bad_json");
    let mut j = path_job("c", &root, "s");
    j["source"]["legal_basis"] = json!("   ");
    assert_error(&admin.post_json(JOBS, &j), 400, "bad_request");
    let mut j = path_job("c", &root, "s");
    j["collection"] = json!("");
    assert_error(&admin.post_json(JOBS, &j), 400, "bad_request");
    let mut j = path_job("c", &root, "s");
    j["collection"] = json!("no spaces, please");
    assert_error(&admin.post_json(JOBS, &j), 400, "invalid");
    let mut j = path_job("c", &root, "s");
    j["colection"] = json!("typo");
    assert_error(&admin.post_json(JOBS, &j), 400, "bad_json");
    let mut j = path_job("c", &root, "s");
    j["options"]["video_fps"] = json!(0);
    assert_error(&admin.post_json(JOBS, &j), 400, "bad_request");
    assert_error(
        &admin.post(JOBS, "application/json", b"{\"collection\": "),
        400,
        "bad_json",
    );
    assert_error(
        &admin.post(JOBS, "text/plain", b"hello"),
        415,
        "unsupported_media_type",
    );
    // a JSON description over 1 MiB is refused from its Content-Length
    let Auth::Key(key) = admin.auth.clone() else {
        unreachable!()
    };
    let (status, body) = raw_http(
        server.addr,
        format!(
            "POST {JOBS} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            server.addr,
            (1 << 20) + 10
        )
        .as_bytes(),
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    // nothing was queued
    assert_eq!(admin.get(JOBS).json()["jobs"], json!([]));

    // refusals of paths are audited with the rule
    let recs = audit(&admin, "ingest");
    let rules: Vec<&str> = recs.iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(
        rules
            .iter()
            .filter(|r| **r == "builtin:path_outside_roots")
            .count(),
        7,
        "{rules:?}"
    );
    assert!(rules.contains(&"policy:data.excluded_jurisdictions"));
    assert!(recs.iter().all(|r| r["allowed"] == false));

    // inside the root, through a file: a good job
    let id = started(&admin.post_json(
        JOBS,
        &path_job("c", &root.join("Tony_Blair/Tony_Blair_0001.jpg"), "s"),
    ));
    let j = wait(&admin, id, 120, ended);
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["images_indexed"], 1);
    server.stop();

    // a root holding the data directory: neither the data directory nor a folder holding it
    let data3 = tmp.path().join("data3");
    let server = serve(&home, &data3, &[tmp.path()]);
    let admin = admin_key(&server);
    for p in [tmp.path().to_path_buf(), data3.join("blobs"), data3.clone()] {
        let r = admin.post_json(JOBS, &path_job("c", &p, "s"));
        assert_error(&r, 403, "path_in_data_dir");
    }
    assert_eq!(admin.get(JOBS).json()["jobs"], json!([]));
    server.stop();
}

#[test]
fn upload_job_indexes_good_files_and_reports_bad_ones() {
    let Some(home) = require() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let opts = visage_server::ServeOptions {
        upload_limit: 48 << 20,
        ingest_workers: 1,
        ..Default::default()
    };
    let server = Server::start(&home, &data, opts);
    let admin = admin_key(&server);
    let ct = multipart_ct();
    let good: Vec<(String, Vec<u8>)> =
        [("Colin_Powell", 1), ("Colin_Powell", 2), ("Tony_Blair", 1)]
            .iter()
            .map(|(p, n)| (format!("{p}_{n:04}.jpg"), read_photo(p, *n)))
            .collect();
    let expected = engine_faces(
        &home,
        &[
            photo("Colin_Powell", 1),
            photo("Colin_Powell", 2),
            photo("Tony_Blair", 1),
        ],
        false,
    );
    let truncated = read_photo("George_W_Bush", 1)[..3000].to_vec();
    // over the normal 32 MiB body limit: the upload route has its own
    let junk = vec![b'x'; 40 << 20];
    let meta = json!({"collection": "uploads",
        "source": {"name": "tips", "legal_basis": "submitted by the public", "jurisdiction": "fr"}})
    .to_string();
    let mut fields: Vec<(&str, &str, &[u8])> = vec![("meta", "", meta.as_bytes())];
    for (name, bytes) in &good {
        fields.push(("file", name, bytes));
    }
    fields.push(("file", "../../etc/cut.jpg", &truncated));
    fields.push(("file", "notes.txt", b"not an image at all"));
    fields.push(("file", "rows.csv", b"path\n/etc/passwd\n"));
    fields.push(("file", "big.bin", &junk));
    let body = multipart(&fields);
    assert!(body.len() > 32 << 20);
    let r = admin.post(JOBS, &ct, &body);
    let id = started(&r);
    let v = r.json();
    assert_eq!(v["origin"], "upload");
    assert_eq!(v["files"], 7);
    let sent: usize = meta.len()
        + good.iter().map(|(_, b)| b.len()).sum::<usize>()
        + truncated.len()
        + 19
        + 17
        + junk.len();
    assert_eq!(v["upload_bytes"].as_u64(), Some(sent as u64));
    assert_eq!(v["jurisdiction"], "FR");

    let j = wait(&admin, id, 180, ended);
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["items_seen"], 7);
    assert_eq!(j["items_total"], 7);
    assert_eq!(j["images_indexed"], 3);
    assert_eq!(j["faces_indexed"].as_u64(), Some(expected), "{j}");
    assert_eq!(j["errors"], 4);
    assert_eq!(
        j["errors_by_code"],
        json!({"corrupt_image": 1, "unsupported_format": 2, "manifest_not_allowed": 1})
    );
    // the staged files are gone
    assert_eq!(staging_entries(&data), 0);
    // the report: one line per bad file with its code, the staged (safe) names
    let lines = report_lines(&admin, id);
    let failed: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["kind"] == "failed")
        .map(|l| {
            (
                l["location"].as_str().unwrap().to_string(),
                l["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        failed,
        vec![
            ("rows.csv".to_string(), "manifest_not_allowed".to_string()),
            ("00004-cut.jpg".to_string(), "corrupt_image".to_string()),
            (
                "00005-notes.txt".to_string(),
                "unsupported_format".to_string()
            ),
            (
                "00006-big.bin".to_string(),
                "unsupported_format".to_string()
            ),
        ]
    );
    let raw = admin.get(&format!("{JOBS}/{id}/report")).body;
    assert!(raw.len() < 4096, "no image bytes in the report");
    assert!(!String::from_utf8_lossy(&raw).contains("/etc"));
    let colls = admin.get("/v1/collections").json();
    assert_eq!(colls[0]["name"], "uploads");
    assert_eq!(colls[0]["faces"].as_u64(), Some(expected));

    // malformed uploads: nothing queued, nothing left in staging
    let n_jobs = || admin.get(JOBS).json()["jobs"].as_array().unwrap().len();
    let photo1 = &good[0].1;
    let bad_meta = multipart(&[("meta", "", b"{not json"), ("file", "a.jpg", photo1)]);
    assert_error(&admin.post(JOBS, &ct, &bad_meta), 400, "bad_json");
    let no_meta = multipart(&[("file", "a.jpg", photo1)]);
    assert_error(&admin.post(JOBS, &ct, &no_meta), 400, "bad_request");
    let no_file = multipart(&[("meta", "", meta.as_bytes())]);
    assert_error(&admin.post(JOBS, &ct, &no_file), 400, "bad_request");
    let only_manifest = multipart(&[("meta", "", meta.as_bytes()), ("file", "m.jsonl", b"{}")]);
    assert_error(&admin.post(JOBS, &ct, &only_manifest), 400, "bad_request");
    let with_path = json!({"collection": "uploads", "path": "/etc",
        "source": {"name": "tips", "legal_basis": "x"}})
    .to_string();
    let r = admin.post(
        JOBS,
        &ct,
        &multipart(&[
            ("meta", "", with_path.as_bytes()),
            ("file", "a.jpg", photo1),
        ]),
    );
    assert_error(&r, 400, "bad_json");
    let sfp = json!({"collection": "uploads", "options": {"subject_from_parent": true},
        "source": {"name": "tips", "legal_basis": "submitted by the public", "jurisdiction": "FR"}})
    .to_string();
    let r = admin.post(
        JOBS,
        &ct,
        &multipart(&[("meta", "", sfp.as_bytes()), ("file", "a.jpg", photo1)]),
    );
    assert_error(&r, 400, "bad_request");
    let other = multipart(&[("meta", "", meta.as_bytes()), ("image", "a.jpg", photo1)]);
    assert_error(&admin.post(JOBS, &ct, &other), 400, "bad_request");
    // truncated multipart: the closing boundary never comes
    let mut cut = multipart(&[("meta", "", meta.as_bytes()), ("file", "a.jpg", photo1)]);
    cut.truncate(cut.len() - 5000);
    assert_error(&admin.post(JOBS, &ct, &cut), 400, "bad_request");
    // excluded jurisdiction in meta: refused before the files are read
    let il = json!({"collection": "uploads",
        "source": {"name": "il", "legal_basis": "x", "jurisdiction": "US-IL"}})
    .to_string();
    let r = admin.post(
        JOBS,
        &ct,
        &multipart(&[("meta", "", il.as_bytes()), ("file", "a.jpg", photo1)]),
    );
    assert_error(&r, 403, "jurisdiction_excluded");
    assert_eq!(n_jobs(), 1);
    assert_eq!(staging_entries(&data), 0);
    server.stop();

    // over the upload limit: said by Content-Length (refused before the body is read), or
    // found while streaming a chunked body; nothing staged either way
    let data2 = tmp.path().join("data2");
    let opts = visage_server::ServeOptions {
        upload_limit: 64 << 10,
        ..Default::default()
    };
    let server = Server::start(&home, &data2, opts);
    let admin = admin_key(&server);
    let Auth::Key(key) = admin.auth.clone() else {
        unreachable!()
    };
    let head = |extra: &str| {
        format!(
            "POST {JOBS} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: {ct}\r\nConnection: close\r\n{extra}\r\n",
            server.addr
        )
    };
    let (status, body) = raw_http(
        server.addr,
        head(&format!("Content-Length: {}\r\n", 10u64 << 30)).as_bytes(),
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    let big = vec![7u8; 70 << 10];
    let form = multipart(&[("meta", "", meta.as_bytes()), ("file", "big.bin", &big)]);
    let mut req = head("Transfer-Encoding: chunked\r\n").into_bytes();
    for piece in form.chunks(16 << 10) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw_http(server.addr, &req);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    // under the limit, the same server takes it
    let small = multipart(&[("meta", "", meta.as_bytes()), ("file", "a.jpg", photo1)]);
    let id = started(&admin.post(JOBS, &ct, &small));
    assert_eq!(admin.get(JOBS).json()["upload_limit"], 64 << 10);
    let j = wait(&admin, id, 120, ended);
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(staging_entries(&data2), 0);
    server.stop();
}

/// Sends `req` as is and reads the answer to the end: (status, body).
fn raw_http(addr: std::net::SocketAddr, req: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn progress_is_visible_and_jobs_cancel() {
    let Some(home) = require() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // LFW itself is the root: a folder of 530 photos is a job long enough to watch.
    let lfw = Path::new(LFW);
    let server = serve(&home, &data, &[lfw]);
    let admin = admin_key(&server);
    let big = lfw.join("George_W_Bush");
    let total = std::fs::read_dir(&big).unwrap().count() as u64;
    assert!(total > 500);
    let id = started(&admin.post_json(JOBS, &path_job("bush", &big, "lfw")));
    // a second job waits its turn
    let queued =
        started(&admin.post_json(JOBS, &path_job("blair", &lfw.join("Tony_Blair"), "lfw")));
    // an upload job waits too, its files staged
    let meta = json!({"collection": "bush",
        "source": {"name": "tips", "legal_basis": "submitted by the public"}})
    .to_string();
    let p = read_photo("Colin_Powell", 1);
    let up = started(&admin.post(
        JOBS,
        &multipart_ct(),
        &multipart(&[("meta", "", meta.as_bytes()), ("file", "a.jpg", &p)]),
    ));
    assert_eq!(staging_entries(&data), 1);

    // running, with counts growing between two looks
    let first = wait(&admin, id, 120, |j| {
        j["status"] == "running" && j["items_seen"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(first["items_total"].as_u64(), Some(total), "{first}");
    let later = wait(&admin, id, 120, |j| {
        j["items_seen"].as_u64() > first["items_seen"].as_u64()
    });
    assert_eq!(later["status"], "running", "{later}");
    assert!(later["faces_indexed"].as_u64() >= first["faces_indexed"].as_u64());
    assert!(later["rate"].as_f64().unwrap() > 0.0, "{later}");
    assert!(later["eta_s"].as_f64().unwrap() > 0.0, "{later}");
    assert!(later["elapsed_s"].as_f64() > first["elapsed_s"].as_f64());
    let q = job(&admin, queued);
    assert_eq!(q["status"], "queued", "{q}");
    assert_eq!(q["queue_position"], 0);
    assert_eq!(job(&admin, up)["queue_position"], 1);
    let listed = admin.get(JOBS).json();
    assert_eq!(listed["jobs"][2]["status"], "running");

    // cancel the queued ones: at once, the upload's files removed
    let r = admin.post_json(&format!("{JOBS}/{queued}/cancel"), &json!({}));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["status"], "cancelled");
    let r = admin.post_json(&format!("{JOBS}/{up}/cancel"), &json!({}));
    assert_eq!(r.json()["status"], "cancelled");
    assert_eq!(staging_entries(&data), 0);
    let q = job(&admin, queued);
    assert_eq!(q["error"], "cancelled by admin before it started");
    assert_eq!(q["items_seen"], 0);

    // cancel the running one: it stops between items, what was written stays
    let r = admin.post_json(&format!("{JOBS}/{id}/cancel"), &json!({}));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["cancel_requested"], true);
    let j = wait(&admin, id, 120, ended);
    assert_eq!(j["status"], "cancelled", "{j}");
    let seen = j["items_seen"].as_u64().unwrap();
    assert!(
        seen >= later["items_seen"].as_u64().unwrap() && seen < total,
        "{j}"
    );
    let faces = j["faces_indexed"].as_u64().unwrap();
    let stats = admin.get("/v1/stats").json();
    assert_eq!(stats["faces"].as_u64(), Some(faces), "{stats}");
    assert_eq!(
        stats["images"].as_u64(),
        j["images_indexed"].as_u64(),
        "{stats}"
    );
    // the two queued jobs never ran
    assert!(admin
        .get("/v1/collections")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["name"] == "bush"));
    // an ended job cannot be cancelled again
    assert_error(
        &admin.post_json(&format!("{JOBS}/{id}/cancel"), &json!({})),
        409,
        "conflict",
    );
    let recs = audit(&admin, "ingest");
    let cancels: Vec<&Value> = recs
        .iter()
        .filter(|r| r["details"]["event"] == "cancel")
        .collect();
    assert_eq!(cancels.len(), 3);
    assert_eq!(cancels[2]["details"]["was"], "running");
    let fin = recs
        .iter()
        .find(|r| r["details"]["event"] == "finished")
        .unwrap();
    assert_eq!(fin["details"]["status"], "cancelled");
    assert_eq!(fin["details"]["faces_indexed"], faces.to_string());

    // a later job runs normally (the worker is not stuck)
    let again = started(&admin.post_json(JOBS, &path_job("blair", &lfw.join("Tony_Blair"), "lfw")));
    let j = wait(&admin, again, 240, ended);
    assert_eq!(j["status"], "completed", "{j}");
    server.stop();
}

#[test]
fn roles_read_only_unknown_jobs_and_restarts() {
    let Some(home) = require() else { return };
    // a gallery with a job the CLI ran, one a dead server left running, one left queued
    let (tmp, data) = temp_gallery(&home, &["Colin_Powell"], None);
    let (running, queued) = {
        let g = Gallery::open(&data, Access::ReadWrite).unwrap();
        let r = g
            .start_job(
                "ingest",
                Some("lfw"),
                &json!({"inputs": ["/x"], "source": "s"}),
            )
            .unwrap();
        let q = g
            .queue_job(
                "ingest",
                Some("lfw"),
                &json!({"origin": "upload", "collection": "lfw"}),
            )
            .unwrap();
        (r, q)
    };
    std::fs::create_dir_all(data.join("staging/12")).unwrap();
    std::fs::write(data.join("staging/12/00001-a.jpg"), b"x").unwrap();

    let server = serve(&home, &data, &[]);
    let admin = admin_key(&server);
    assert_eq!(staging_entries(&data), 0, "leftover uploads removed");
    let j = job(&admin, running);
    assert_eq!(j["status"], "interrupted", "{j}");
    assert_eq!(j["origin"], "cli");
    let j = job(&admin, queued);
    assert_eq!(j["status"], "interrupted", "{j}");
    assert_eq!(
        j["error"],
        "the server stopped before this job started; start it again"
    );
    let list = admin.get(JOBS).json();
    let cli = &list["jobs"][2];
    assert_eq!(cli["status"], "completed", "{list}");
    assert_eq!(cli["origin"], "cli");
    assert_eq!(cli["images_indexed"], 3);
    assert!(cli["report"].is_null());
    assert_error(
        &admin.get(&format!("{JOBS}/{}/report", cli["id"])),
        404,
        "not_found",
    );

    // unknown and malformed ids
    assert_error(&admin.get(&format!("{JOBS}/999")), 404, "not_found");
    assert_error(&admin.get(&format!("{JOBS}/999/report")), 404, "not_found");
    assert_error(
        &admin.post_json(&format!("{JOBS}/999/cancel"), &json!({})),
        404,
        "not_found",
    );
    assert_error(&admin.get(&format!("{JOBS}/abc")), 400, "bad_request");
    assert_error(
        &admin.post_json(&format!("{JOBS}/{running}/cancel"), &json!({})),
        409,
        "conflict",
    );

    // roles other than admin may not start or see jobs; refusals audited
    let org = create_org(&admin, "Roles Police", "law_enforcement", "GB");
    let meta = json!({"collection": "lfw",
        "source": {"name": "tips", "legal_basis": "submitted by the public"}})
    .to_string();
    let p = read_photo("Colin_Powell", 1);
    let upload = multipart(&[("meta", "", meta.as_bytes()), ("file", "a.jpg", &p)]);
    for role in ["investigator", "auditor", "compliance"] {
        let (_, key) = create_user_key(&admin, org, &format!("{role}-u"), role);
        let c = server.client(Auth::Key(key));
        assert_error(
            &c.post(JOBS, &multipart_ct(), &upload),
            403,
            "policy_denied",
        );
        assert_error(&c.get(JOBS), 403, "policy_denied");
        assert_error(&c.get(&format!("{JOBS}/{queued}")), 403, "policy_denied");
        assert_error(
            &c.get(&format!("{JOBS}/{queued}/report")),
            403,
            "policy_denied",
        );
        assert_error(
            &c.post_json(&format!("{JOBS}/{queued}/cancel"), &json!({})),
            403,
            "policy_denied",
        );
    }
    let anon = server.client(Auth::None);
    assert_error(&anon.get(JOBS), 401, "unauthorized");
    // described in the OpenAPI document, with their schemas
    let doc = anon.get("/v1/openapi.json").json();
    for p in [
        "/v1/ingest/jobs",
        "/v1/ingest/jobs/{id}",
        "/v1/ingest/jobs/{id}/report",
        "/v1/ingest/jobs/{id}/cancel",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi lacks {p}");
    }
    assert!(doc["paths"][JOBS]["post"]["requestBody"]["content"]
        .get("multipart/form-data")
        .is_some());
    for s in [
        "IngestJob",
        "JobList",
        "PathJobJson",
        "UploadMetaJson",
        "SourceJson",
    ] {
        assert!(
            doc["components"]["schemas"].get(s).is_some(),
            "openapi lacks schema {s}"
        );
    }
    assert_error(
        &anon.post(JOBS, &multipart_ct(), &upload),
        401,
        "unauthorized",
    );
    let denied = audit(&admin, "ingest");
    assert_eq!(denied.iter().filter(|r| r["allowed"] == false).count(), 15);
    assert_eq!(staging_entries(&data), 0);
    server.stop();

    // a read-only server: jobs are listed, none is started or cancelled
    let opts = visage_server::ServeOptions {
        read_only: true,
        ..Default::default()
    };
    let ro_data = tmp.path().join("ro");
    build_gallery(
        &home,
        &ro_data,
        &tmp.path().join("photos-ro"),
        &["Tony_Blair"],
        None,
    );
    let ro = Server::start(&home, &ro_data, opts);
    let admin = admin_key(&ro);
    let list = admin.get(JOBS).json();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
    let id = list["jobs"][0]["id"].as_i64().unwrap();
    assert_error(
        &admin.post(JOBS, &multipart_ct(), &upload),
        409,
        "read_only",
    );
    let r = admin.post_json(JOBS, &json!({"collection": "x"}));
    assert_error(&r, 409, "read_only");
    assert_error(
        &admin.post_json(&format!("{JOBS}/{id}/cancel"), &json!({})),
        409,
        "read_only",
    );
    assert!(!ro_data.join("staging").exists());
    ro.stop();
}
