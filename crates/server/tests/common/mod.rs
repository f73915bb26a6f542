//! Shared helpers: finding data and packs (skip, or fail under VISAGE_REQUIRE_MODELS=1),
//! building a small LFW gallery, starting the real server on 127.0.0.1, and an HTTP client.
#![allow(dead_code)]

pub mod browser;
#[allow(unused_imports)]
pub use browser::*;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde_json::{json, Value};
use visage_engine::{ingest_paths, IngestOptions};
use visage_gallery::{Access, Gallery, NewSource};
use visage_vision::pack::{self, Home};
use visage_vision::PipelinePool;

pub const LFW: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/lfw/lfw-deepfunneled"
);

/// The `open` pack's home, or `None` (skip; a failure under VISAGE_REQUIRE_MODELS=1) when
/// the LFW data or the pack and runtime are missing.
pub fn require() -> Option<Home> {
    let strict = std::env::var("VISAGE_REQUIRE_MODELS").is_ok_and(|v| v == "1");
    if !Path::new(LFW).is_dir() {
        assert!(
            !strict,
            "../shared/data/lfw is required (VISAGE_REQUIRE_MODELS=1)"
        );
        eprintln!("skipping: ../shared/data/lfw not found");
        return None;
    }
    let home = Home::from_env();
    let m = pack::builtin_manifest("open").expect("open pack manifest");
    let ok = home.runtime_lib().exists()
        && pack::verify_dir(&m, &home.pack_dir("open"))
            .iter()
            .all(|s| s.ok);
    if !ok {
        assert!(
            !strict,
            "pack open must be installed (VISAGE_REQUIRE_MODELS=1)"
        );
        eprintln!("skipping: pack open not installed; run scripts/setup.sh");
        return None;
    }
    Some(home)
}

pub fn photo(person: &str, n: u32) -> PathBuf {
    Path::new(LFW)
        .join(person)
        .join(format!("{person}_{n:04}.jpg"))
}

pub fn read_photo(person: &str, n: u32) -> Vec<u8> {
    std::fs::read(photo(person, n)).unwrap()
}

/// Photos 1..=3 of each person, labelled by folder, ingested into collection `lfw` with
/// source `lfw` (jurisdiction `jurisdiction` when given).
/// A temporary folder holding an LFW gallery of `people` (see [`build_gallery`]) in `data/`:
/// the folder (keep it alive) and the data directory.
pub fn temp_gallery(
    home: &Home,
    people: &[&str],
    jurisdiction: Option<&str>,
) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    build_gallery(
        home,
        &data,
        &tmp.path().join("photos"),
        people,
        jurisdiction,
    );
    (tmp, data)
}

pub fn build_gallery(
    home: &Home,
    data: &Path,
    photos: &Path,
    people: &[&str],
    jurisdiction: Option<&str>,
) {
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
        "lfw",
        NewSource {
            name: "lfw".into(),
            kind: "folder".into(),
            jurisdiction: jurisdiction.map(String::from),
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
    eprintln!("ingest: {}", serde_json::to_value(&report).unwrap());
}

pub struct Server {
    pub addr: std::net::SocketAddr,
    pub admin_password: String,
    pub public_key_hex: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(home: &Home, data: &Path, opts: visage_server::ServeOptions) -> Server {
        let (state, admin) =
            visage_server::AppState::open(data, home, "open", &Default::default(), &opts).unwrap();
        let admin = admin.expect("a fresh data dir creates the first admin");
        assert_eq!(admin.user.username, "admin");
        let public_key_hex = state.governance().public_key_hex();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                visage_server::serve(listener, state, async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        Server {
            addr,
            admin_password: admin.password,
            public_key_hex,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn client(&self, auth: Auth) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            agent,
            base: format!("http://{}", self.addr),
            auth,
        }
    }

    /// Logs in as the first admin and returns a client with the session cookie.
    pub fn admin(&self) -> Client {
        let c = self.client(Auth::None);
        let r = c.post_json(
            "/v1/auth/login",
            &json!({"username": "admin", "password": self.admin_password}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let cookie = r.set_cookie.clone().expect("login sets a cookie");
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let token = cookie.split(';').next().unwrap().to_string();
        self.client(Auth::Cookie(token))
    }

    pub fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Key(String),
    /// `visage_session=...`
    Cookie(String),
}

pub struct Client {
    agent: ureq::Agent,
    pub base: String,
    pub auth: Auth,
}

pub struct Reply {
    pub status: u16,
    pub ctype: String,
    pub set_cookie: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

pub const BOUNDARY: &str = "visage-test-boundary-7f3a";

pub fn multipart_ct() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

pub fn multipart(fields: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, filename, data) in fields {
        b.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        if filename.is_empty() {
            b.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            );
        } else {
            b.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
        }
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

impl Client {
    pub fn with(&self, auth: Auth) -> Client {
        Client {
            agent: self.agent.clone(),
            base: self.base.clone(),
            auth,
        }
    }

    fn reply(res: ureq::http::Response<ureq::Body>) -> Reply {
        let status = res.status().as_u16();
        let header = |n: &str| {
            res.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let ctype = header("content-type").unwrap_or_default();
        let set_cookie = header("set-cookie");
        let body = res
            .into_body()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap();
        Reply {
            status,
            ctype,
            set_cookie,
            body,
        }
    }

    fn auth_header(&self) -> Option<(&'static str, String)> {
        match &self.auth {
            Auth::None => None,
            Auth::Key(k) => Some(("Authorization", format!("Bearer {k}"))),
            Auth::Cookie(c) => Some(("Cookie", c.clone())),
        }
    }

    pub fn request(&self, method: &str, path: &str, ctype: Option<&str>, body: &[u8]) -> Reply {
        let uri = format!("{}{path}", self.base);
        let mut b = ureq::http::Request::builder().method(method).uri(uri);
        if let Some((k, v)) = self.auth_header() {
            b = b.header(k, v);
        }
        if let Some(ct) = ctype {
            b = b.header("Content-Type", ct);
        }
        let req = b.body(body.to_vec()).unwrap();
        Client::reply(self.agent.run(req).unwrap())
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, &[])
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, None, &[])
    }

    pub fn post(&self, path: &str, ctype: &str, body: &[u8]) -> Reply {
        self.request("POST", path, Some(ctype), body)
    }

    pub fn post_json(&self, path: &str, v: &Value) -> Reply {
        self.request(
            "POST",
            path,
            Some("application/json"),
            v.to_string().as_bytes(),
        )
    }

    pub fn patch_json(&self, path: &str, v: &Value) -> Reply {
        self.request(
            "PATCH",
            path,
            Some("application/json"),
            v.to_string().as_bytes(),
        )
    }

    /// POST expecting `status`; returns the JSON body.
    pub fn must(&self, path: &str, v: &Value, status: u16) -> Value {
        let r = self.post_json(path, v);
        assert_eq!(r.status, status, "POST {path}: {}", r.text());
        r.json()
    }
}

/// Creates an organisation through the API (as an operator admin) and returns its id.
pub fn create_org(admin: &Client, name: &str, kind: &str, jurisdiction: &str) -> i64 {
    admin.must(
        "/v1/orgs",
        &json!({"name": name, "kind": kind, "jurisdiction": jurisdiction, "status": "active"}),
        201,
    )["id"]
        .as_i64()
        .unwrap()
}

/// Creates a user with `role` in `org` and an API key for it; returns (user id, secret).
pub fn create_user_key(admin: &Client, org: i64, username: &str, role: &str) -> (i64, String) {
    let u = admin.must(
        "/v1/users",
        &json!({"org_id": org, "username": username, "role": role}),
        201,
    );
    let id = u["id"].as_i64().unwrap();
    let k = admin.must(
        &format!("/v1/users/{id}/keys"),
        &json!({"name": "test"}),
        201,
    );
    let secret = k["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("vsk_"));
    (id, secret)
}

/// Opens a case as `c` and returns its id.
pub fn create_case(c: &Client, number: &str) -> i64 {
    c.must(
        "/v1/cases",
        &json!({"number": number, "purpose": "identify a suspect in a robbery",
                "legal_basis": "warrant 2024/17", "offence_category": "robbery"}),
        201,
    )["id"]
        .as_i64()
        .unwrap()
}
