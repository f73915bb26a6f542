//! `visage ingest` on every source kind, built by the test from real LFW photos, with hostile
//! entries mixed in; and interruption by SIGINT then resume.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::*;
use std::time::{Duration, Instant};

/// The first `n` photos of `person` as (file name, bytes).
fn photos(lfw: &Path, person: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(lfw.join(person))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .take(n)
        .map(|f| {
            (
                f.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&f).unwrap(),
            )
        })
        .collect()
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn run(args: &[&str], data: &Path) -> std::process::Output {
    visage()
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

fn tar_gz(path: &Path, entries: &[(String, Vec<u8>)], hostile: bool) {
    let f = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    for (name, bytes) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, format!("people/{name}"), bytes.as_slice())
            .unwrap();
    }
    if hostile {
        // A path that climbs out of any extraction folder, written raw (the tar crate refuses
        // to build one through its safe API).
        let bytes = &entries[0].1;
        let mut h = tar::Header::new_old();
        {
            let raw = h.as_old_mut();
            raw.name[..14].copy_from_slice(b"../../evil.jpg");
        }
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        t.append(&h, bytes.as_slice()).unwrap();
    }
    t.into_inner().unwrap().finish().unwrap();
}

fn zip_file(path: &Path, entries: &[(String, Vec<u8>)], bomb: bool) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        z.start_file(format!("archive/{name}"), opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    if bomb {
        // 64 MiB of zeros deflate to ~64 KiB: ratio ~1000.
        z.start_file("bomb.jpg", opts).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            z.write_all(&zeros).unwrap();
        }
    }
    z.finish().unwrap();
}

fn warc_record(kind: &str, uri: &str, id: &str, content_type: &str, block: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Target-URI: {uri}\r\nWARC-Date: 2024-01-31T12:00:00Z\r\n\
         WARC-Record-ID: <urn:uuid:{id}>\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        block.len()
    )
    .into_bytes();
    r.extend_from_slice(block);
    r.extend_from_slice(b"\r\n\r\n");
    r
}

/// A WARC.gz (one gzip member per record) with a request + response per photo, an HTML page,
/// and a last response cut short.
fn warc_gz(path: &Path, entries: &[(String, Vec<u8>)]) {
    let mut out = Vec::new();
    let mut member = |rec: Vec<u8>| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&rec).unwrap();
        out.extend(gz.finish().unwrap());
    };
    member(warc_record(
        "warcinfo",
        "",
        "00000000-0000-0000-0000-000000000000",
        "application/warc-fields",
        b"software: visage test\r\n",
    ));
    let html =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>";
    member(warc_record(
        "response",
        "http://news.example/page.html",
        "00000000-0000-0000-0000-0000000000aa",
        "application/http; msgtype=response",
        html,
    ));
    for (i, (name, bytes)) in entries.iter().enumerate() {
        let uri = format!("http://news.example/img/{name}");
        let req = format!(
            "GET /img/{name} HTTP/1.1\r\nHost: news.example\r\nReferer: http://news.example/page.html\r\n\r\n"
        );
        member(warc_record(
            "request",
            &uri,
            &format!("00000000-0000-0000-0000-{:012}", 2 * i + 1),
            "application/http; msgtype=request",
            req.as_bytes(),
        ));
        let mut resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            bytes.len()
        )
        .into_bytes();
        resp.extend_from_slice(bytes);
        member(warc_record(
            "response",
            &uri,
            &format!("00000000-0000-0000-0000-{:012}", 2 * i + 2),
            "application/http; msgtype=response",
            &resp,
        ));
    }
    // Truncated: a record that announces more bytes than the file holds (uncompressed tail).
    let cut = warc_record(
        "response",
        "http://news.example/img/cut.jpg",
        "00000000-0000-0000-0000-00000000ffff",
        "application/http; msgtype=response",
        &entries[0].1,
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&cut[..cut.len() / 2]).unwrap();
    out.extend(gz.finish().unwrap());
    std::fs::write(path, out).unwrap();
}

#[test]
fn every_source_kind_with_hostile_items() {
    let Some(lfw) = lfw() else { return };
    if !installed("open") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("inputs");
    std::fs::create_dir_all(inputs.join("folder/Colin_Powell")).unwrap();
    for (name, b) in photos(&lfw, "Colin_Powell", 3) {
        std::fs::write(inputs.join("folder/Colin_Powell").join(name), b).unwrap();
    }
    // A photo whose EXIF GPS puts it in New York City: the source says US, the photo says US-NY.
    let (_, gps_photo) = photos(&lfw, "George_W_Bush", 1).remove(0);
    std::fs::create_dir_all(inputs.join("folder/George_W_Bush")).unwrap();
    std::fs::write(
        inputs.join("folder/George_W_Bush/new_york.jpg"),
        visage_engine::geo::with_exif(&gps_photo, 40.7128, -74.0060, "2019:05:04 12:30:00"),
    )
    .unwrap();
    std::fs::write(
        inputs.join("folder/broken.jpg"),
        b"\xff\xd8\xff\xe0 not really a jpeg",
    )
    .unwrap();
    tar_gz(
        &inputs.join("people.tar.gz"),
        &photos(&lfw, "Tony_Blair", 3),
        true,
    );
    zip_file(
        &inputs.join("people.zip"),
        &photos(&lfw, "Hugo_Chavez", 3),
        true,
    );
    warc_gz(
        &inputs.join("crawl.warc.gz"),
        &photos(&lfw, "Ariel_Sharon", 3),
    );
    let man_dir = inputs.join("manifest_files");
    std::fs::create_dir_all(&man_dir).unwrap();
    let mut lines = Vec::new();
    for (i, (name, b)) in photos(&lfw, "Junichiro_Koizumi", 3).into_iter().enumerate() {
        std::fs::write(man_dir.join(&name), b).unwrap();
        lines.push(serde_json::json!({
            "path": format!("manifest_files/{name}"), "page_url": format!("https://archive.example/p{i}"),
            "captured_at": 1_600_000_000 + i, "licence": "CC-BY-4.0", "legal_basis": "public-interest-archive",
            "jurisdiction": "FR", "subject": "Koizumi", "external_id": format!("K{i}")
        }).to_string());
    }
    lines.push("{not json".into());
    lines.push(serde_json::json!({"path": "manifest_files/missing.jpg"}).to_string());
    std::fs::write(inputs.join("manifest.jsonl"), lines.join("\n") + "\n").unwrap();

    let data = tmp.path().join("data");
    let report = tmp.path().join("report.jsonl");
    let paths: Vec<String> = [
        "folder",
        "people.tar.gz",
        "people.zip",
        "crawl.warc.gz",
        "manifest.jsonl",
    ]
    .iter()
    .map(|p| inputs.join(p).to_string_lossy().into_owned())
    .collect();
    let mut args: Vec<&str> = vec!["ingest"];
    args.extend(paths.iter().map(String::as_str));
    args.extend([
        "--collection",
        "main",
        "--jurisdiction",
        "US",
        "--subject-from-parent",
        "--json",
        "--report",
        report.to_str().unwrap(),
    ]);
    let before: Vec<PathBuf> = walk(tmp.path());
    let out = run(&args, &data);
    assert_eq!(
        out.status.code(),
        Some(3),
        "partial failure exits 3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep = json_of(&out);
    let codes: Vec<String> = std::fs::read_to_string(&report)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "failed")
        .map(|v| v["code"].as_str().unwrap().to_string())
        .collect();
    for want in [
        "path_traversal",
        "decompression_bomb",
        "truncated_record",
        "bad_row",
        "io_error",
    ] {
        assert!(codes.iter().any(|c| c == want), "no {want} in {codes:?}");
    }
    assert!(
        codes
            .iter()
            .any(|c| c == "corrupt_image" || c == "unsupported_format"),
        "{codes:?}"
    );
    // Nothing was written outside the data directory (no evil.jpg anywhere).
    let after: Vec<PathBuf> = walk(tmp.path())
        .into_iter()
        .filter(|p| !p.starts_with(&data) && *p != report)
        .collect();
    assert_eq!(
        after.len(),
        before.len(),
        "files appeared outside the data dir: {after:?}"
    );
    assert!(walk(tmp.path()).iter().all(|p| !p.ends_with("evil.jpg")));
    assert_eq!(rep["images_indexed"].as_u64().unwrap(), 16, "{rep}");

    // Provenance of each kind.
    let faces = json_of(&run(&["faces", "list", "--limit", "1000", "--json"], &data));
    let faces = faces.as_array().unwrap();
    let uri = |f: &serde_json::Value| f["image"]["uri"].as_str().unwrap_or("").to_string();
    assert!(faces
        .iter()
        .any(|f| uri(f).contains("people.tar.gz!people/")));
    assert!(faces.iter().any(|f| uri(f).contains("people.zip!archive/")));
    let web: Vec<&serde_json::Value> = faces
        .iter()
        .filter(|f| uri(f).starts_with("http://news.example/img/"))
        .collect();
    assert!(!web.is_empty());
    for f in &web {
        assert_eq!(f["image"]["page_uri"], "http://news.example/page.html");
        assert_eq!(f["image"]["captured_at"], 1_706_702_400);
    }
    let k: Vec<&serde_json::Value> = faces
        .iter()
        .filter(|f| f["subject"]["label"] == "Koizumi")
        .collect();
    assert!(!k.is_empty());
    for f in &k {
        assert_eq!(f["image"]["jurisdiction"], "FR");
        assert_eq!(f["image"]["jurisdiction_method"], "declared_item");
        assert_eq!(f["image"]["legal_basis"], "public-interest-archive");
        assert_eq!(f["image"]["licence"], "CC-BY-4.0");
        assert!(f["image"]["page_uri"]
            .as_str()
            .unwrap()
            .starts_with("https://archive.example/"));
    }
    let new_york: Vec<&serde_json::Value> = faces
        .iter()
        .filter(|f| uri(f).ends_with("new_york.jpg"))
        .collect();
    assert!(!new_york.is_empty());
    for f in &new_york {
        assert_eq!(f["image"]["jurisdiction"], "US-NY");
        assert_eq!(f["image"]["jurisdiction_method"], "exif_gps");
        assert_eq!(f["image"]["captured_at"], 1_556_973_000);
        assert!((f["image"]["gps"][0].as_f64().unwrap() - 40.7128).abs() < 1e-3);
    }
    assert!(faces
        .iter()
        .filter(|f| uri(f).contains("/folder/Colin_Powell"))
        .all(|f| f["image"]["jurisdiction"] == "US" && f["subject"]["label"] == "Colin_Powell"));

    // A second identical run changes nothing.
    let stats = json_of(&run(&["stats", "--json"], &data));
    let out = run(&args, &data);
    assert_eq!(out.status.code(), Some(3));
    let rep2 = json_of(&out);
    assert_eq!(rep2["images_indexed"], 0);
    assert_eq!(json_of(&run(&["stats", "--json"], &data)), stats);
    let jobs = json_of(&run(&["jobs", "--json"], &data));
    assert_eq!(jobs.as_array().unwrap().len(), 2);
    assert_eq!(jobs[0]["status"], "completed");
}

#[test]
fn sigint_stops_cleanly_and_a_rerun_finishes() {
    let Some(lfw) = lfw() else { return };
    if !installed("open") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let photos_dir = tmp.path().join("photos");
    for person in [
        "Colin_Powell",
        "Tony_Blair",
        "Donald_Rumsfeld",
        "Gerhard_Schroeder",
    ] {
        std::fs::create_dir_all(photos_dir.join(person)).unwrap();
        for (name, b) in photos(&lfw, person, 25) {
            std::fs::write(photos_dir.join(person).join(name), b).unwrap();
        }
    }
    let reference = tmp.path().join("reference");
    let out = run(
        &[
            "ingest",
            photos_dir.to_str().unwrap(),
            "--collection",
            "c",
            "--json",
        ],
        &reference,
    );
    assert!(out.status.success());
    let want = json_of(&run(&["stats", "--json"], &reference));

    let data = tmp.path().join("data");
    let child = visage()
        .args([
            "ingest",
            photos_dir.to_str().unwrap(),
            "--collection",
            "c",
            "--json",
            "--data-dir",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it has written something, then SIGINT.
    let t = Instant::now();
    while walk(&data.join("blobs")).is_empty() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "SIGINT exits 130");
    let rep = json_of(&out);
    assert_eq!(rep["status"], "interrupted");
    let partial = rep["images_indexed"].as_u64().unwrap();
    assert!(
        partial < 100,
        "the run was stopped early ({partial} images)"
    );
    let jobs = json_of(&run(&["jobs", "--json"], &data));
    assert_eq!(jobs[0]["status"], "interrupted");
    assert_consistent(&data);

    let out = run(
        &[
            "ingest",
            photos_dir.to_str().unwrap(),
            "--collection",
            "c",
            "--json",
        ],
        &data,
    );
    assert!(out.status.success());
    let rep = json_of(&out);
    assert_eq!(rep["images_skipped_known"].as_u64().unwrap(), partial);
    assert_eq!(
        json_of(&run(&["stats", "--json"], &data))["faces"],
        want["faces"]
    );
    assert_eq!(
        json_of(&run(&["stats", "--json"], &data))["images"],
        want["images"]
    );
}

#[test]
fn videos_are_tracked_and_resumable() {
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/e2e");
    if !e2e.is_dir() || !installed("open") {
        eprintln!("skipping: ../shared/data/e2e or the open pack missing");
        return;
    }
    let have_ffmpeg = Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_ffmpeg {
        assert!(
            !require(),
            "ffmpeg must be installed (scripts/setup.sh installs it)"
        );
        eprintln!("skipping: ffmpeg not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let videos = tmp.path().join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    std::fs::copy(
        e2e.join("face_recognition/examples/short_hamilton_clip.mp4"),
        videos.join("hamilton.mp4"),
    )
    .unwrap();
    std::fs::copy(
        e2e.join("facenet-pytorch/video.mp4"),
        videos.join("facenet.mp4"),
    )
    .unwrap();
    std::fs::write(
        videos.join("broken.mp4"),
        b"\x00\x00\x00\x18ftypmp42 this is not a video",
    )
    .unwrap();
    let data = tmp.path().join("data");
    let out = run(
        &[
            "ingest",
            videos.to_str().unwrap(),
            "--collection",
            "v",
            "--json",
        ],
        &data,
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "the broken video is a failure: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep = json_of(&out);
    assert_eq!(rep["videos"], 2, "{rep}");
    assert_eq!(rep["errors_by_code"]["corrupt_video"], 1, "{rep}");
    let faces = rep["faces_indexed"].as_u64().unwrap();
    let sampled = rep["video_frames_sampled"].as_u64().unwrap();
    assert!(sampled >= 28, "{rep}");
    assert!(faces >= 4, "{rep}");
    // Tracking keeps a few faces per appearance, far fewer than the detections in all frames.
    assert!(faces <= 2 * 23, "{faces} faces kept from {sampled} frames");
    let list = json_of(&run(&["faces", "list", "--limit", "1000", "--json"], &data));
    for f in list.as_array().unwrap() {
        let uri = f["image"]["uri"].as_str().unwrap();
        assert!(uri.contains(".mp4#t="), "{uri}");
    }
    let stats = json_of(&run(&["stats", "--json"], &data));
    let out = run(
        &[
            "ingest",
            videos.to_str().unwrap(),
            "--collection",
            "v",
            "--json",
        ],
        &data,
    );
    let rep2 = json_of(&out);
    assert_eq!(rep2["videos"], 0, "known videos are skipped: {rep2}");
    assert_eq!(rep2["images_skipped_known"], 2);
    assert_eq!(json_of(&run(&["stats", "--json"], &data)), stats);
}
