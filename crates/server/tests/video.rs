//! Search by video and with a chosen probe face, over the real server on 127.0.0.1: a clip
//! from ../shared/data/e2e (Lin-Manuel Miranda in `short_hamilton_clip.mp4`, his portrait in
//! the gallery) and a clip made here with ffmpeg from LFW photos of two people not in the
//! gallery, each track ranking the right person first; a group photo (Obama and Biden)
//! searched with its main face, all faces and each face by index; the audit records; the
//! opt-out suppression; every error path (not a video, truncated, too long, too large, no
//! case, no credentials, bad face index) and the temporary files removed each time.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const E2E: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/e2e");
const HAMILTON: &str = "face_recognition/examples/short_hamilton_clip.mp4";
const GROUP: &str = "face_recognition/examples/knn_examples/test/obama_and_biden.jpg";

fn e2e(rel: &str) -> PathBuf {
    Path::new(E2E).join(rel)
}

/// ffmpeg and the e2e data, or false (skip; a failure under VISAGE_REQUIRE_MODELS=1).
fn video_tools() -> bool {
    let strict = std::env::var("VISAGE_REQUIRE_MODELS").is_ok_and(|v| v == "1");
    if !visage_engine::video::ffmpeg_available() {
        assert!(
            !strict,
            "ffmpeg must be installed (VISAGE_REQUIRE_MODELS=1)"
        );
        eprintln!("skipping: ffmpeg not found; run scripts/setup.sh");
        return false;
    }
    if !e2e(HAMILTON).is_file() {
        assert!(
            !strict,
            "../shared/data/e2e is required (VISAGE_REQUIRE_MODELS=1)"
        );
        eprintln!("skipping: ../shared/data/e2e not found");
        return false;
    }
    true
}

/// The gallery: LFW photos 1-3 of three people, Lin-Manuel Miranda's and Alex Lacamoire's
/// portraits, Obama's and Biden's training photos of face_recognition's kNN example, each
/// labelled with its folder's name.
fn gallery(home: &visage_vision::pack::Home, root: &Path) -> PathBuf {
    let photos = root.join("photos");
    let ex = e2e("face_recognition/examples");
    for (label, files) in [
        (
            "Lin_Manuel_Miranda",
            vec![ex.join("lin-manuel-miranda.png")],
        ),
        ("Alex_Lacamoire", vec![ex.join("alex-lacamoire.png")]),
        (
            "Barack_Obama",
            vec![
                ex.join("knn_examples/train/obama/obama.jpg"),
                ex.join("knn_examples/train/obama/obama2.jpg"),
            ],
        ),
        (
            "Joe_Biden",
            vec![
                ex.join("knn_examples/train/biden/biden.jpg"),
                ex.join("knn_examples/train/biden/biden2.jpg"),
            ],
        ),
    ] {
        let dir = photos.join(label);
        std::fs::create_dir_all(&dir).unwrap();
        for f in files {
            std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
    }
    let data = root.join("data");
    build_gallery(
        home,
        &data,
        &photos,
        &["George_W_Bush", "Colin_Powell", "Tony_Blair"],
        None,
    );
    data
}

/// A 7 s clip: LFW photo 4 of `a` for 2 s, 3 s of black (longer than the tracker's 2 s gap),
/// photo 4 of `b` for 2 s; MPEG-4 part 2 in MP4 (ffmpeg's own encoder).
fn two_people_clip(dir: &Path, a: &str, b: &str) -> PathBuf {
    let out = dir.join("two-people.mp4");
    let ok = Command::new("ffmpeg")
        .args([
            "-nostdin", "-v", "error", "-y", "-loop", "1", "-t", "2", "-i",
        ])
        .arg(photo(a, 4))
        .args([
            "-f",
            "lavfi",
            "-t",
            "3",
            "-i",
            "color=c=black:s=250x250:r=10",
        ])
        .args(["-loop", "1", "-t", "2", "-i"])
        .arg(photo(b, 4))
        .args([
            "-filter_complex",
            "[0:v]fps=10,format=yuv420p,setsar=1[a];[1:v]format=yuv420p,setsar=1[b];\
             [2:v]fps=10,format=yuv420p,setsar=1[c];[a][b][c]concat=n=3:v=1:a=0[v]",
            "-map",
            "[v]",
            "-c:v",
            "mpeg4",
            "-q:v",
            "2",
        ])
        .arg(&out)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ffmpeg could not make the test clip");
    out
}

/// A black clip of `seconds` (tiny: 64x64 at 1 fps).
fn black_clip(dir: &Path, seconds: u32) -> PathBuf {
    let out = dir.join(format!("black-{seconds}.mp4"));
    let ok = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("color=c=black:s=64x64:r=1:d={seconds}"))
        .args(["-c:v", "mpeg4"])
        .arg(&out)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ffmpeg could not make the black clip");
    out
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn label(hit: &Value) -> String {
    hit["face"]["subject"]["label"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn top(hits: &Value) -> String {
    label(&hits[0])
}

/// Leftover probe videos in the data directory's tmp/.
fn temp_files(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("tmp"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("probe-video-"))
                .collect()
        })
        .unwrap_or_default()
}

struct Ctx {
    c: Client,
    case: i64,
    ct: String,
}

const PURPOSE: &str = "identify the people in the station CCTV clip";

impl Ctx {
    fn video(&self, name: &str, bytes: &[u8], extra: &[(&str, &str)]) -> Reply {
        let case = self.case.to_string();
        let mut fields: Vec<(&str, &str, &[u8])> = vec![
            ("case_id", "", case.as_bytes()),
            ("purpose", "", PURPOSE.as_bytes()),
        ];
        for (k, v) in extra {
            fields.push((k, "", v.as_bytes()));
        }
        fields.push(("video", name, bytes));
        self.c
            .post("/v1/search/video", &self.ct, &multipart(&fields))
    }

    fn photo(&self, bytes: &[u8], faces: Option<&str>) -> Reply {
        let case = self.case.to_string();
        let mut fields: Vec<(&str, &str, &[u8])> = vec![
            ("image", "group.jpg", bytes),
            ("case_id", "", case.as_bytes()),
            ("purpose", "", PURPOSE.as_bytes()),
            ("k", "", b"3"),
        ];
        if let Some(f) = faces {
            fields.push(("faces", "", f.as_bytes()));
        }
        self.c.post("/v1/search", &self.ct, &multipart(&fields))
    }
}

/// A POST that declares `length` body bytes and sends none: the answer to the headers alone.
fn declared_only(addr: std::net::SocketAddr, path: &str, key: &str, length: u64) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: {}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
        multipart_ct()
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.ends_with(b"}") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// A chunked multipart upload of a `video` field of `size` bytes (no Content-Length), written
/// on a thread while the answer is read: the server must stop it at its limit.
fn chunked_upload(addr: std::net::SocketAddr, key: &str, case: i64, size: usize) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut w = s.try_clone().unwrap();
    let head = format!(
        "POST /v1/search/video HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        multipart_ct()
    );
    let fields = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"case_id\"\r\n\r\n{case}\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{PURPOSE}\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"big.mp4\"\r\n\
         Content-Type: video/mp4\r\n\r\n"
    );
    let writer = std::thread::spawn(move || -> usize {
        let chunk = |w: &mut TcpStream, b: &[u8]| -> std::io::Result<()> {
            write!(w, "{:x}\r\n", b.len())?;
            w.write_all(b)?;
            w.write_all(b"\r\n")
        };
        let mut sent = 0usize;
        if w.write_all(head.as_bytes()).is_err() || chunk(&mut w, fields.as_bytes()).is_err() {
            return 0;
        }
        let block = vec![0u8; 1 << 20];
        while sent < size {
            if chunk(&mut w, &block).is_err() {
                return sent;
            }
            sent += block.len();
        }
        let _ = chunk(&mut w, format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let _ = w.write_all(b"0\r\n\r\n");
        sent
    });
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let sent = writer.join().unwrap();
    eprintln!("chunked upload: {} MiB sent before the answer", sent >> 20);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn search_by_video_and_chosen_face() {
    let Some(home) = require() else { return };
    if !video_tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = gallery(&home, tmp.path());
    let server = Server::start(&home, &data, Default::default());
    let admin = server.admin();
    let org = create_org(&admin, "Video Agency", "law_enforcement", "GB");
    let (_, key) = create_user_key(&admin, org, "vic", "investigator");
    let c = server.client(Auth::Key(key));
    let case = create_case(&c, "VID-1");
    let x = Ctx {
        c,
        case,
        ct: multipart_ct(),
    };

    // --- a chosen face of a group photo --------------------------------------------------------
    let group = std::fs::read(e2e(GROUP)).unwrap();
    let r = x.photo(&group, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let res = r.json();
    assert_eq!(res["faces"], "main");
    let detected = res["detected_faces"].as_array().unwrap();
    assert_eq!(detected.len(), 3, "{}", res["detected_faces"]);
    // numbered left to right, each with its box and whether it was searched
    for (i, f) in detected.iter().enumerate() {
        assert_eq!(f["index"].as_u64(), Some(i as u64));
        assert_eq!(f["bbox"].as_array().unwrap().len(), 4);
        if i > 0 {
            assert!(f["bbox"][0].as_f64() >= detected[i - 1]["bbox"][0].as_f64());
        }
    }
    let probe = res["probe_faces"].as_array().unwrap();
    assert_eq!(probe.len(), 1, "the main face only");
    let main = probe[0]["index"].as_u64().unwrap() as usize;
    assert_eq!(detected[main]["searched"], true);
    assert_eq!(detected.iter().filter(|f| f["searched"] == true).count(), 1);
    assert!(!probe[0]["hits"].as_array().unwrap().is_empty());
    let main_audit = res["audit_id"].as_u64().unwrap();
    // faces 0 and 1 are Biden (left) and Obama; face 2 (bottom right) is turned away
    let expect = ["Joe_Biden", "Barack_Obama"];
    for (i, who) in expect.iter().enumerate() {
        let r = x.photo(&group, Some(&i.to_string()));
        assert_eq!(r.status, 200, "{}", r.text());
        let res = r.json();
        assert_eq!(res["faces"].as_u64(), Some(i as u64));
        assert_eq!(res["probe_faces"].as_array().unwrap().len(), 1);
        assert_eq!(res["probe_faces"][0]["index"].as_u64(), Some(i as u64));
        assert_eq!(
            res["probe_faces"][0]["bbox"],
            res["detected_faces"][i]["bbox"]
        );
        assert_eq!(top(&res["probe_faces"][0]["hits"]), *who, "face {i}: {res}");
    }
    assert_eq!(top(&probe[0]["hits"]), expect[main], "the main face");
    let r = x.photo(&group, Some("2"));
    assert_eq!(r.status, 200, "{}", r.text());
    let unusable = &r.json()["probe_faces"][0];
    assert!(
        unusable["unusable"]
            .as_array()
            .is_some_and(|u| u.iter().any(|c| c == "extreme_pose")),
        "{unusable}"
    );
    let r = x.photo(&group, Some("all"));
    assert_eq!(r.status, 200, "{}", r.text());
    let all = r.json();
    assert_eq!(all["faces"], "all");
    let pf = all["probe_faces"].as_array().unwrap();
    assert_eq!(pf.len(), 3);
    assert_eq!(top(&pf[0]["hits"]), "Joe_Biden");
    assert_eq!(top(&pf[1]["hits"]), "Barack_Obama");
    assert!(pf[2]["unusable"].is_array() && pf[2]["hits"].as_array().unwrap().is_empty());
    // JSON: the index as a number
    let j = json!({
        "image_base64": base64::engine::general_purpose::STANDARD.encode(&group),
        "case_id": case, "purpose": PURPOSE, "k": 2, "faces": 1,
    });
    let r = x.c.post_json("/v1/search", &j);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(top(&r.json()["probe_faces"][0]["hits"]), "Barack_Obama");
    // out of range and malformed
    let r = x.photo(&group, Some("3"));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error_code(), "face_index_out_of_range");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("0 to 2"));
    for bad in ["-1", "first", "1.5"] {
        let r = x.photo(&group, Some(bad));
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.error_code(), "bad_request", "{bad}");
    }
    let mut j2 = j.clone();
    j2["faces"] = json!(7);
    let r = x.c.post_json("/v1/search", &j2);
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "face_index_out_of_range");

    // --- video: two people made from LFW photos not in the gallery ------------------------------
    let clip = two_people_clip(tmp.path(), "Colin_Powell", "Tony_Blair");
    let clip_bytes = std::fs::read(&clip).unwrap();
    let t = Instant::now();
    let r = x.video("two.mp4", &clip_bytes, &[("k", "3")]);
    let wall = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let res = r.json();
    eprintln!(
        "two-people clip: {:.0} ms over HTTP, engine {}",
        wall.as_secs_f64() * 1e3,
        res["timings_ms"]
    );
    assert!(res["pack"].as_str().unwrap().starts_with("open"));
    assert_eq!(res["case_id"].as_i64(), Some(case));
    let two_audit = res["audit_id"].as_u64().unwrap();
    assert_eq!(
        res["video"]["frames_sampled"].as_u64(),
        Some(14),
        "{}",
        res["video"]
    );
    let tracks = res["tracks"].as_array().unwrap();
    let usable: Vec<&Value> = tracks.iter().filter(|t| t["unusable"].is_null()).collect();
    assert_eq!(usable.len(), 2, "two appearances: {}", res["tracks"]);
    assert!(usable[0]["first_t"].as_f64().unwrap() < 1.0);
    assert!(usable[0]["last_t"].as_f64().unwrap() <= 2.0);
    assert!(usable[1]["first_t"].as_f64().unwrap() >= 4.9);
    assert_eq!(top(&usable[0]["hits"]), "Colin_Powell", "{}", usable[0]);
    assert_eq!(top(&usable[1]["hits"]), "Tony_Blair", "{}", usable[1]);
    for t in usable {
        assert!(t["hits"].as_array().unwrap().len() <= 3);
        assert!(t["frames_seen"].as_u64().unwrap() >= 3);
        assert!(t["faces_used"].as_u64().unwrap() >= 1);
        let bf = &t["best_face"];
        assert_eq!(bf["bbox"].as_array().unwrap().len(), 4);
        assert_eq!(
            (bf["frame_width"].as_u64(), bf["frame_height"].as_u64()),
            (Some(250), Some(250))
        );
        let th = t["thumbnail"].as_str().unwrap();
        let jpeg = base64::engine::general_purpose::STANDARD
            .decode(
                th.strip_prefix("data:image/jpeg;base64,")
                    .expect("a JPEG data URL"),
            )
            .unwrap();
        assert!(jpeg.starts_with(&[0xFF, 0xD8]));
        if !res["calibration"].is_null() {
            assert!(t["hits"][0]["fmr"].as_f64().unwrap() < 1e-4, "{t}");
            assert!(t["hits"][0]["expected_false_matches"].as_f64().is_some());
        }
        // provenance like a photo search
        assert!(t["hits"][0]["face"]["source"]["name"].is_string());
        assert!(t["hits"][0]["face"]["image"]["uri"].is_string());
    }

    // --- video: a real clip (Lin-Manuel Miranda, portrait in the gallery) ----------------------
    let ham = std::fs::read(e2e(HAMILTON)).unwrap();
    let t = Instant::now();
    let r = x.video("hamilton.mp4", &ham, &[("k", "5")]);
    let wall = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let res = r.json();
    eprintln!(
        "short_hamilton_clip.mp4 ({:.1} s, {} frames): {:.0} ms over HTTP, engine {}",
        res["video"]["duration_s"].as_f64().unwrap_or(0.0),
        res["video"]["frames_sampled"],
        wall.as_secs_f64() * 1e3,
        res["timings_ms"]
    );
    let ham_audit = res["audit_id"].as_u64().unwrap();
    let tracks = res["tracks"].as_array().unwrap();
    for t in tracks {
        eprintln!(
            "  track {} {:.1}-{:.1} s: {}",
            t["track_id"],
            t["first_t"].as_f64().unwrap(),
            t["last_t"].as_f64().unwrap(),
            match t["unusable"].as_array() {
                Some(u) => format!("unusable {u:?}"),
                None => format!(
                    "{} {:.3}",
                    top(&t["hits"]),
                    t["hits"][0]["score"].as_f64().unwrap_or(0.0)
                ),
            }
        );
    }
    // his appearances rank him first, clearly; no other track has a strong match
    let strong: Vec<&Value> = tracks
        .iter()
        .filter(|t| t["hits"][0]["score"].as_f64().is_some_and(|s| s >= 0.35))
        .collect();
    assert!(!strong.is_empty(), "no strong match: {}", res["tracks"]);
    for t in &strong {
        assert_eq!(top(&t["hits"]), "Lin_Manuel_Miranda", "{t}");
    }
    let best = tracks
        .iter()
        .max_by(|a, b| {
            let s = |t: &Value| t["hits"][0]["score"].as_f64().unwrap_or(-1.0);
            s(a).total_cmp(&s(b))
        })
        .unwrap();
    assert_eq!(top(&best["hits"]), "Lin_Manuel_Miranda");
    assert!(best["hits"][0]["score"].as_f64().unwrap() >= 0.5, "{best}");
    // faces turned away are listed, with their reasons
    assert!(
        tracks.iter().any(|t| t["unusable"]
            .as_array()
            .is_some_and(|u| u.iter().any(|c| c == "extreme_pose"))),
        "no unusable track listed"
    );
    for t in tracks {
        assert!(t["first_t"].as_f64() <= t["last_t"].as_f64());
        assert!(t["unusable"].is_null() || t["hits"].as_array().unwrap().is_empty());
    }
    assert!(temp_files(&data).is_empty(), "{:?}", temp_files(&data));

    // --- over 32 MiB (the API's default limit) is accepted for videos -------------------------
    let mut big = clip_bytes.clone();
    big.resize(clip_bytes.len() + 40 * 1024 * 1024, 0);
    let r = x.video("big.mp4", &big, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tracks"].as_array().unwrap().len(), 2);

    // --- the audit log: the video's SHA-256, counts, never the bytes ----------------------------
    let auditor = create_user_key(&admin, org, "aude", "auditor").1;
    let a = server.client(Auth::Key(auditor));
    let r = a.get("/v1/audit?limit=1000");
    assert_eq!(r.status, 200);
    let recs = r.json()["records"].as_array().unwrap().clone();
    let find = |seq: u64| {
        recs.iter()
            .find(|r| r["seq"].as_u64() == Some(seq))
            .unwrap_or_else(|| panic!("audit record {seq}"))
            .clone()
    };
    let rec = find(ham_audit);
    assert_eq!(rec["action"], "search");
    assert_eq!(rec["allowed"], true);
    assert_eq!(rec["case_id"].as_i64(), Some(case));
    assert_eq!(
        rec["probe_sha256"].as_str(),
        Some(sha256_hex(&ham).as_str())
    );
    assert_eq!(rec["details"]["probe_kind"], "video");
    assert_eq!(rec["details"]["purpose"], PURPOSE);
    assert_eq!(rec["details"]["tracks"].as_u64(), Some(tracks.len() as u64));
    assert!(rec["result_count"].as_u64().unwrap() >= 1);
    let rec = find(two_audit);
    assert_eq!(
        rec["probe_sha256"].as_str(),
        Some(sha256_hex(&clip_bytes).as_str())
    );
    let rec = find(main_audit);
    assert_eq!(rec["details"]["faces"], "main");
    let text = serde_json::to_string(&recs).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&ham[..3000]);
    assert!(!text.contains(&b64[..200]), "video bytes in the audit log");
    let r = a.get("/v1/audit/verify");
    assert_eq!(r.json()["ok"], true, "{}", r.text());

    // --- an opted-out person is not searched for ----------------------------------------------
    let anon = server.client(Auth::None);
    let body = multipart(&[
        ("selfie", "me.jpg", &read_photo("Tony_Blair", 5)),
        ("contact", "", b"tony@example.org"),
    ]);
    let r = anon.post("/v1/public/opt-out", &multipart_ct(), &body);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = x.video("two.mp4", &clip_bytes, &[("k", "3")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let res = r.json();
    let tracks = res["tracks"].as_array().unwrap();
    for t in tracks {
        for h in t["hits"].as_array().unwrap() {
            assert_ne!(label(h), "Tony_Blair", "an opted-out person was returned");
        }
    }
    let late = tracks
        .iter()
        .find(|t| t["first_t"].as_f64().unwrap() >= 4.9)
        .expect("the second appearance");
    assert_eq!(late["unusable"], json!(["opted_out"]), "{late}");
    let early = tracks
        .iter()
        .find(|t| t["first_t"].as_f64().unwrap() < 1.0 && t["unusable"].is_null())
        .unwrap();
    assert_eq!(top(&early["hits"]), "Colin_Powell");

    // the OpenAPI document lists the endpoint
    let doc = anon.get("/v1/openapi.json").json();
    assert!(doc["paths"]["/v1/search/video"]["post"].is_object());
    assert!(temp_files(&data).is_empty(), "{:?}", temp_files(&data));
    server.stop();
}

#[test]
fn video_search_errors() {
    let Some(home) = require() else { return };
    if !video_tools() {
        return;
    }
    let (tmp, data) = temp_gallery(&home, &["Colin_Powell", "Tony_Blair"], None);
    let server = Server::start(&home, &data, Default::default());
    let admin = server.admin();
    let org = create_org(&admin, "Errors Agency", "law_enforcement", "GB");
    let (_, key) = create_user_key(&admin, org, "eve", "investigator");
    let (_, aud_key) = create_user_key(&admin, org, "otto", "auditor");
    let c = server.client(Auth::Key(key.clone()));
    let case = create_case(&c, "VID-ERR");
    let x = Ctx {
        c,
        case,
        ct: multipart_ct(),
    };
    let ham = std::fs::read(e2e(HAMILTON)).unwrap();
    let expect = |r: Reply, status: u16, code: &str| {
        assert_eq!(r.status, status, "{code}: {}", r.text());
        assert_eq!(r.error_code(), code, "{}", r.text());
        assert!(
            !r.text().contains(data.to_str().unwrap()),
            "a server path leaked: {}",
            r.text()
        );
    };

    // not a video: a photo, text, nothing
    expect(
        x.video("p.mp4", &read_photo("Colin_Powell", 4), &[]),
        400,
        "invalid_video",
    );
    expect(
        x.video("t.mp4", b"just some text, not a video", &[]),
        400,
        "invalid_video",
    );
    expect(x.video("e.mp4", b"", &[]), 400, "invalid_video");
    // truncated: the first 40% of an MP4 whose index is at the end decodes to nothing
    expect(
        x.video("cut.mp4", &ham[..ham.len() * 2 / 5], &[]),
        400,
        "corrupt_video",
    );
    // a container header and garbage
    expect(
        x.video(
            "junk.mp4",
            b"\0\0\0\x20ftypisom garbage garbage garbage garbage",
            &[],
        ),
        400,
        "corrupt_video",
    );
    // too long
    let long = std::fs::read(black_clip(tmp.path(), 130)).unwrap();
    expect(x.video("long.mp4", &long, &[]), 400, "video_too_long");
    // a clip without any face
    let black = std::fs::read(black_clip(tmp.path(), 3)).unwrap();
    expect(x.video("black.mp4", &black, &[]), 422, "no_face_detected");
    // over the upload limit: refused on the declared length, before the body is read
    let (status, body) = declared_only(server.addr, "/v1/search/video", &key, 300 << 20);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    // and while streaming, without a declared length
    let (status, body) = chunked_upload(server.addr, &key, case, 260 << 20);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    // bad fields
    expect(x.video("h.mp4", &ham, &[("k", "0")]), 400, "bad_request");
    expect(x.video("h.mp4", &ham, &[("fps", "60")]), 400, "bad_request");
    expect(
        x.video("h.mp4", &ham, &[("faces", "1")]),
        400,
        "bad_request",
    );
    expect(
        x.video("h.mp4", &ham, &[("jurisdiction", "not a code")]),
        400,
        "bad_request",
    );
    expect(
        x.video("h.mp4", &ham, &[("collection", "nope")]),
        404,
        "not_found",
    );
    let body = multipart(&[
        ("case_id", "", case.to_string().as_bytes()),
        ("purpose", "", PURPOSE.as_bytes()),
    ]);
    expect(
        x.c.post("/v1/search/video", &x.ct, &body),
        400,
        "bad_request",
    );
    expect(
        x.c.post_json("/v1/search/video", &json!({"case_id": case})),
        415,
        "unsupported_media_type",
    );
    // governance: no case, no purpose, another role, no credentials
    let body = multipart(&[
        ("purpose", "", PURPOSE.as_bytes()),
        ("video", "h.mp4", &ham),
    ]);
    expect(
        x.c.post("/v1/search/video", &x.ct, &body),
        403,
        "case_required",
    );
    let body = multipart(&[
        ("case_id", "", case.to_string().as_bytes()),
        ("purpose", "", b"x"),
        ("video", "h.mp4", &ham),
    ]);
    expect(
        x.c.post("/v1/search/video", &x.ct, &body),
        403,
        "purpose_required",
    );
    let aud = x.c.with(Auth::Key(aud_key));
    let body = multipart(&[
        ("case_id", "", case.to_string().as_bytes()),
        ("purpose", "", PURPOSE.as_bytes()),
        ("video", "h.mp4", &ham),
    ]);
    expect(
        aud.post("/v1/search/video", &x.ct, &body),
        403,
        "policy_denied",
    );
    // (a small body: the credentials are refused before the body is read)
    let small = multipart(&[
        ("case_id", "", case.to_string().as_bytes()),
        ("purpose", "", PURPOSE.as_bytes()),
        ("video", "h.mp4", &ham[..1000]),
    ]);
    expect(
        x.c.with(Auth::None).post("/v1/search/video", &x.ct, &small),
        401,
        "unauthorized",
    );
    let last = if key.ends_with('x') { "y" } else { "x" };
    let bad_key = Auth::Key(format!("{}{last}", &key[..key.len() - 1]));
    expect(
        x.c.with(bad_key).post("/v1/search/video", &x.ct, &small),
        401,
        "unauthorized",
    );

    // the refusal and the failures are audited, with the video's hash
    let r = admin.get("/v1/audit?limit=1000");
    let recs = r.json()["records"].as_array().unwrap().clone();
    let ham_sha = sha256_hex(&ham);
    assert!(recs.iter().any(|r| r["action"] == "search"
        && r["allowed"] == false
        && r["rule"] == "builtin:case_required"
        && r["probe_sha256"].as_str() == Some(ham_sha.as_str())));
    assert!(recs
        .iter()
        .any(|r| r["details"]["error"] == "video_too_long"));
    assert!(recs
        .iter()
        .any(|r| r["details"]["error"] == "corrupt_video"));
    assert!(temp_files(&data).is_empty(), "{:?}", temp_files(&data));
    server.stop();
}
