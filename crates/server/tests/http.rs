//! Starts the real server on 127.0.0.1 (free port) over a small LFW gallery and talks to it
//! with an HTTP client.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use base64::Engine as _;
use serde_json::Value;
use visage_engine::{ingest_paths, IngestOptions};
use visage_gallery::{Access, Gallery, NewSource};
use visage_vision::pack::{self, Home};
use visage_vision::PipelinePool;

const LFW: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/lfw/lfw-deepfunneled"
);

/// Whether the `open` pack and the runtime are installed (skip, or fail under
/// VISAGE_REQUIRE_MODELS=1).
fn installed(home: &Home) -> bool {
    let m = pack::builtin_manifest("open").expect("open pack manifest");
    let ok = home.runtime_lib().exists()
        && pack::verify_dir(&m, &home.pack_dir("open"))
            .iter()
            .all(|s| s.ok);
    if !ok {
        assert!(
            std::env::var("VISAGE_REQUIRE_MODELS").map_or(true, |v| v != "1"),
            "pack open must be installed (VISAGE_REQUIRE_MODELS=1)"
        );
        eprintln!("skipping: pack open not installed; run scripts/setup.sh");
    }
    ok
}

fn photo(person: &str, n: u32) -> PathBuf {
    Path::new(LFW)
        .join(person)
        .join(format!("{person}_{n:04}.jpg"))
}

/// Three photos of three people each, labelled by folder.
fn build_gallery(home: &Home, data: &Path, photos: &Path) {
    for person in ["George_W_Bush", "Colin_Powell", "Tony_Blair"] {
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
    let faces = serde_json::to_value(&report).unwrap();
    eprintln!("ingest: {faces}");
}

struct Client {
    agent: ureq::Agent,
    base: String,
}

struct Reply {
    status: u16,
    ctype: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

impl Client {
    fn reply(res: ureq::http::Response<ureq::Body>) -> Reply {
        let status = res.status().as_u16();
        let ctype = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = res
            .into_body()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap();
        Reply {
            status,
            ctype,
            body,
        }
    }

    fn get(&self, path: &str) -> Reply {
        Client::reply(
            self.agent
                .get(format!("{}{path}", self.base))
                .call()
                .unwrap(),
        )
    }

    fn post(&self, path: &str, ctype: &str, body: &[u8]) -> Reply {
        Client::reply(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("Content-Type", ctype)
                .send(body)
                .unwrap(),
        )
    }
}

const BOUNDARY: &str = "visage-test-boundary-7f3a";

fn multipart(fields: &[(&str, &str, &[u8])]) -> Vec<u8> {
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

fn top_label(result: &Value) -> String {
    result["probe_faces"][0]["hits"][0]["face"]["subject"]["label"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn http_api_end_to_end() {
    if !Path::new(LFW).is_dir() {
        eprintln!("skipping: ../shared/data/lfw not found");
        return;
    }
    let home = Home::from_env();
    if !installed(&home) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    build_gallery(&home, &data, &tmp.path().join("photos"));

    let state = visage_server::AppState::load(&data, &home, "open", &Default::default()).unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
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
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let c = Client {
        agent,
        base: format!("http://{addr}"),
    };

    // healthz
    let r = c.get("/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"status": "ok"}));

    // openapi lists every endpoint
    let r = c.get("/v1/openapi.json");
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/healthz",
        "/v1/openapi.json",
        "/v1/search",
        "/v1/faces/{id}",
        "/v1/faces/{id}/thumbnail",
        "/v1/stats",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi lacks {p}");
    }

    // stats
    let r = c.get("/v1/stats");
    assert_eq!(r.status, 200);
    assert!(r.json().is_object());

    // multipart search with an unseen photo of a person in the gallery
    let probe = std::fs::read(photo("Colin_Powell", 4)).unwrap();
    let body = multipart(&[("image", "probe.jpg", &probe), ("k", "", b"3")]);
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let r = c.post("/v1/search", &ct, &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let res = r.json();
    assert_eq!(top_label(&res), "Colin_Powell", "{res}");
    assert!(res["probe_faces"][0]["hits"].as_array().unwrap().len() <= 3);
    assert!(res["pack"].as_str().unwrap().starts_with("open"));
    let face_id = res["probe_faces"][0]["hits"][0]["face"]["id"]
        .as_i64()
        .unwrap();

    // base64 JSON search
    let probe = std::fs::read(photo("Tony_Blair", 4)).unwrap();
    let j = serde_json::json!({
        "image_base64": base64::engine::general_purpose::STANDARD.encode(&probe),
        "k": 5,
        "collection": "lfw",
    });
    let r = c.post("/v1/search", "application/json", j.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let res = r.json();
    assert_eq!(top_label(&res), "Tony_Blair", "{res}");

    // a text file is not an image
    let body = multipart(&[("image", "notes.txt", b"hello, this is not a photo\n")]);
    let r = c.post("/v1/search", &ct, &body);
    assert_eq!(r.status, 422);
    assert_eq!(r.error_code(), "unsupported_format");

    // a photo without a face
    let mut png = Vec::new();
    image::RgbImage::from_pixel(200, 200, image::Rgb([128, 128, 128]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let body = multipart(&[("image", "grey.png", &png)]);
    let r = c.post("/v1/search", &ct, &body);
    assert_eq!(r.status, 422);
    assert_eq!(r.error_code(), "no_face_detected");

    // truncated multipart
    let mut body = multipart(&[("image", "probe.jpg", &probe)]);
    body.truncate(body.len() / 2);
    let r = c.post("/v1/search", &ct, &body);
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "bad_request");

    // multipart without the image field
    let body = multipart(&[("k", "", b"3")]);
    let r = c.post("/v1/search", &ct, &body);
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "bad_request");

    // malformed JSON
    let r = c.post("/v1/search", "application/json", b"{\"image_base64\": ");
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "bad_json");

    // unknown collection
    let j = serde_json::json!({
        "image_base64": base64::engine::general_purpose::STANDARD.encode(&probe),
        "collection": "nope",
    });
    let r = c.post("/v1/search", "application/json", j.to_string().as_bytes());
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");

    // over the body limit
    let big = vec![0u8; visage_server::BODY_LIMIT + 1024];
    let r = c.post("/v1/search", "application/json", &big);
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "payload_too_large");

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
    assert_eq!(r.error_code(), "not_found");
    let r = c.get("/v1/faces/abc");
    assert_eq!(r.status, 400);

    // unknown route and wrong method get JSON errors too
    let r = c.get("/v1/nothing");
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
    let r = c.get("/v1/search");
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "method_not_allowed");

    stop_tx.send(()).unwrap();
    server.join().unwrap();
}
