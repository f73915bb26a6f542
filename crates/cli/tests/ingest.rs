//! `visage ingest` on every source kind, built by the test from real LFW photos, with hostile
//! entries mixed in; and interruption by SIGINT then resume.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::sources::*;
use common::*;
use std::time::{Duration, Instant};

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

#[test]
fn every_source_kind_with_hostile_items() {
    let Some(lfw) = lfw() else { return };
    if !installed("open") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("inputs");
    let paths: Vec<String> = every_source_kind(&lfw, &inputs)
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let data = tmp.path().join("data");
    let report = tmp.path().join("report.jsonl");
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
    for want in HOSTILE_CODES {
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
    if !installed("open") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let videos = tmp.path().join("videos");
    let copied = videos_with_a_broken_one(
        &videos,
        &[
            (
                "face_recognition/examples/short_hamilton_clip.mp4",
                "hamilton.mp4",
            ),
            ("facenet-pytorch/video.mp4", "facenet.mp4"),
        ],
    );
    if copied.is_none() {
        eprintln!("skipping");
        return;
    }
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
