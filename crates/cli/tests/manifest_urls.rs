//! `visage ingest MANIFEST --fetch-urls`: rows that give only a url are downloaded from a
//! small HTTP server the test runs on 127.0.0.1 (real LFW photos, a redirect, a 404, an
//! oversized answer, a server that never answers, a non-http url); without the flag they are
//! refused as `url_fetch_disabled`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::*;

/// Answers one request: GET /img/N.jpg (the photos), /redirect (302 to /img/0.jpg),
/// /huge.jpg (declares 200 MB), /slow.jpg (never answers), anything else 404.
fn answer(mut s: TcpStream, photos: &[Vec<u8>]) {
    let mut line = String::new();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let head = |status: &str, extra: &str, len: usize| {
        format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    let img = path
        .strip_prefix("/img/")
        .and_then(|p| p.strip_suffix(".jpg"))
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| photos.get(n));
    let _ = match (path.as_str(), img) {
        (_, Some(b)) => s
            .write_all(head("200 OK", "Content-Type: image/jpeg\r\n", b.len()).as_bytes())
            .and_then(|_| s.write_all(b)),
        ("/redirect", _) => {
            s.write_all(head("302 Found", "Location: /img/0.jpg\r\n", 0).as_bytes())
        }
        ("/huge.jpg", _) => s.write_all(head("200 OK", "", 200_000_000).as_bytes()),
        ("/slow.jpg", _) => {
            std::thread::sleep(Duration::from_secs(8));
            Ok(())
        }
        _ => s.write_all(head("404 Not Found", "", 0).as_bytes()),
    };
}

fn serve(photos: Vec<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let photos = Arc::new(photos);
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let photos = photos.clone();
            std::thread::spawn(move || answer(s, &photos));
        }
    });
    format!("http://{addr}")
}

fn ingest(
    manifest: &Path,
    data: &Path,
    fetch: bool,
) -> (Option<i32>, serde_json::Value, Vec<serde_json::Value>) {
    let report = data.with_extension("report.jsonl");
    let mut cmd = visage();
    cmd.args([
        "ingest",
        manifest.to_str().unwrap(),
        "--collection",
        "web",
        "--json",
    ])
    .args([
        "--legal-basis",
        "licence-agreement",
        "--report",
        report.to_str().unwrap(),
    ])
    .arg("--data-dir")
    .arg(data);
    if fetch {
        cmd.args(["--fetch-urls", "--fetch-timeout", "2"]);
    }
    let out = cmd.output().unwrap();
    let rep = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let failed = std::fs::read_to_string(&report)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "failed")
        .collect();
    (out.status.code(), rep, failed)
}

fn codes(failed: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = failed
        .iter()
        .map(|f| {
            let loc = f["location"].as_str().unwrap_or("");
            let line = loc.rsplit(':').next().unwrap_or("").to_string();
            (line, f["code"].as_str().unwrap_or("").to_string())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn manifest_urls_are_fetched_only_when_asked() {
    let Some(lfw) = lfw() else { return };
    if !installed("open") {
        return;
    }
    let people = ["Colin_Powell", "Tony_Blair", "Hugo_Chavez"];
    let photos: Vec<Vec<u8>> = people
        .iter()
        .map(|p| std::fs::read(lfw.join(p).join(format!("{p}_0001.jpg"))).unwrap())
        .collect();
    let base = serve(photos);
    let tmp = tempfile::tempdir().unwrap();
    let mut rows: Vec<String> = people
        .iter()
        .enumerate()
        .map(|(i, p)| {
            serde_json::json!({
                "url": format!("{base}/img/{i}.jpg"),
                "page_url": format!("{base}/page{i}.html"),
                "subject": p, "captured_at": 1_600_000_000 + i as i64,
            })
            .to_string()
        })
        .collect();
    for url in [
        format!("{base}/redirect"), // line 4: the same bytes as /img/0.jpg: a duplicate
        format!("{base}/missing.jpg"), // line 5: 404
        format!("{base}/huge.jpg"), // line 6: declares 200 MB
        format!("{base}/slow.jpg"), // line 7: never answers within --fetch-timeout 2
        "ftp://127.0.0.1/a.jpg".into(), // line 8: not http
    ] {
        rows.push(serde_json::json!({ "url": url }).to_string());
    }
    let manifest = tmp.path().join("photos.jsonl");
    std::fs::write(&manifest, rows.join("\n") + "\n").unwrap();

    // Without --fetch-urls nothing is downloaded and every row says why.
    let data = tmp.path().join("data");
    let (code, rep, failed) = ingest(&manifest, &data, false);
    assert_eq!(code, Some(3), "{rep}");
    assert_eq!(rep["images_indexed"], 0, "{rep}");
    let c = codes(&failed);
    assert_eq!(c.len(), 8, "{c:?}");
    assert!(
        c.iter().all(|(_, code)| code == "url_fetch_disabled"),
        "{c:?}"
    );

    // With it: the three photos are indexed with their urls; each bad row has its reason.
    let (code, rep, failed) = ingest(&manifest, &data, true);
    assert_eq!(code, Some(3), "{rep}");
    assert_eq!(rep["images_indexed"], 3, "{rep}");
    let want: Vec<(String, String)> = [
        ("5", "http_status"),
        ("6", "too_large"),
        ("7", "fetch_failed"),
        ("8", "bad_url"),
    ]
    .iter()
    .map(|(l, c)| (l.to_string(), c.to_string()))
    .collect();
    assert_eq!(codes(&failed), want);
    let faces = run_json(&["faces", "list", "--limit", "100", "--json"], &data);
    let faces = faces.as_array().unwrap();
    assert_eq!(faces.len(), 3, "{faces:?}");
    for (i, p) in people.iter().enumerate() {
        let f = faces
            .iter()
            .find(|f| f["subject"]["label"] == *p)
            .unwrap_or_else(|| panic!("no face of {p}: {faces:?}"));
        assert_eq!(f["image"]["uri"], format!("{base}/img/{i}.jpg"));
        assert_eq!(f["image"]["page_uri"], format!("{base}/page{i}.html"));
        assert_eq!(f["image"]["captured_at"], 1_600_000_000 + i as i64);
        assert_eq!(f["source"]["legal_basis"], "licence-agreement");
    }
    // A rerun downloads again but indexes nothing twice.
    let (_, rep, _) = ingest(&manifest, &data, true);
    assert_eq!(rep["images_indexed"], 0, "{rep}");
    assert_consistent(&data);
}
