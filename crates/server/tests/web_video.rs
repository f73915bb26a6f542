//! The search page with a chosen face and with a video, in a browser (`web-tests/video.mjs`,
//! Playwright driving the system Chromium) over a real server on 127.0.0.1: a group photo
//! (Obama and Biden) searched with its main face, then another face chosen with the keyboard
//! (each finding the right person first, each a search of its own in the audit log); a short
//! video (Lin-Manuel Miranda, portrait in the gallery) shown track by track.
//!
//! Needs `node`, `/usr/bin/chromium`, `web-tests/node_modules/playwright-core`, ffmpeg and
//! ../shared/data/e2e; without them it is skipped with a message, except under
//! VISAGE_REQUIRE_MODELS=1 (CI), where it fails. VISAGE_WEB_SCREENSHOTS=DIR keeps the
//! screenshots (`video-NN-*.png`; default: a temporary folder).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;

const E2E: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/e2e");

/// Why the browser test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if let Some(why) = browser_missing() {
        return Some(why);
    }
    if !visage_engine::video::ffmpeg_available() {
        return Some("ffmpeg is not installed".into());
    }
    if !Path::new(E2E).is_dir() {
        return Some("../shared/data/e2e is missing".into());
    }
    None
}

#[test]
fn web_search_by_chosen_face_and_video() {
    let Some(home) = require() else { return };
    if let Some(why) = missing() {
        let strict = std::env::var("VISAGE_REQUIRE_MODELS").is_ok_and(|v| v == "1");
        assert!(
            !strict,
            "the browser video test needs node, {CHROMIUM}, playwright-core, ffmpeg and the e2e \
             data under VISAGE_REQUIRE_MODELS=1: {why} (run scripts/setup.sh)"
        );
        eprintln!("skipping the browser video test: {why}; run scripts/setup.sh");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ex = Path::new(E2E).join("face_recognition/examples");
    let photos = tmp.path().join("photos");
    for (label, files) in [
        ("Lin_Manuel_Miranda", vec!["lin-manuel-miranda.png"]),
        ("Alex_Lacamoire", vec!["alex-lacamoire.png"]),
        (
            "Barack_Obama",
            vec![
                "knn_examples/train/obama/obama.jpg",
                "knn_examples/train/obama/obama2.jpg",
            ],
        ),
        (
            "Joe_Biden",
            vec![
                "knn_examples/train/biden/biden.jpg",
                "knn_examples/train/biden/biden2.jpg",
            ],
        ),
    ] {
        let dir = photos.join(label);
        std::fs::create_dir_all(&dir).unwrap();
        for f in files {
            let src = ex.join(f);
            std::fs::copy(&src, dir.join(src.file_name().unwrap())).unwrap();
        }
    }
    let data = tmp.path().join("data");
    build_gallery(
        &home,
        &data,
        &photos,
        &["George_W_Bush", "Colin_Powell", "Tony_Blair"],
        None,
    );
    let server = Server::start(&home, &data, Default::default());
    let base = format!("http://{}", server.addr);
    let admin = server.admin();
    let org = create_org(&admin, "Web Video Police", "law_enforcement", "GB");
    let pass = "investigator passphrase 7";
    admin.must(
        "/v1/users",
        &json!({"org_id": org, "username": "vera", "role": "investigator", "password": pass}),
        201,
    );

    let shots = match std::env::var_os("VISAGE_WEB_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => tmp.path().join("screenshots"),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let mut node = node_script("video.mjs");
    node.env("VISAGE_URL", &base)
        .env("VISAGE_INV_USER", "vera")
        .env("VISAGE_INV_PASS", pass)
        .env(
            "VISAGE_GROUP",
            ex.join("knn_examples/test/obama_and_biden.jpg"),
        )
        // left to right: Biden, Obama, a face turned away (unusable)
        .env("VISAGE_GROUP_LABELS", "Joe_Biden,Barack_Obama,")
        .env("VISAGE_VIDEO", ex.join("short_hamilton_clip.mp4"))
        .env("VISAGE_VIDEO_LABEL", "Lin_Manuel_Miranda")
        .env("VISAGE_SCREENSHOTS", &shots);
    let status = run_node(node);
    let pngs = std::fs::read_dir(&shots)
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("video-") && n.ends_with(".png") && n != "video-failure.png"
        })
        .count();
    eprintln!("screenshots: {pngs} in {}", shots.display());
    assert!(
        status.success(),
        "web-tests/video.mjs failed ({status}); see its output above and {}",
        shots.display()
    );
    assert!(
        pngs >= 2,
        "a screenshot of the chosen face and of the video tracks"
    );

    // What the page did is in the audit log: the main face, a chosen face, the video.
    let r = admin.get("/v1/audit?limit=1000");
    assert_eq!(r.status, 200);
    let recs = r.json()["records"].as_array().unwrap().clone();
    let searches: Vec<&serde_json::Value> = recs
        .iter()
        .filter(|r| r["action"] == "search" && r["allowed"] == true)
        .collect();
    let faces: Vec<String> = searches
        .iter()
        .map(|r| r["details"]["faces"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(faces.iter().any(|f| f == "main"), "{faces:?}");
    assert!(faces.iter().any(|f| f == "1" || f == "0"), "{faces:?}");
    assert!(
        searches
            .iter()
            .any(|r| r["details"]["probe_kind"] == "video" && r["details"]["error"].is_null()),
        "no video search in the audit log"
    );
    assert!(
        searches
            .iter()
            .any(|r| r["details"]["probe_kind"] == "video"
                && r["details"]["error"] == "invalid_video")
    );
    server.stop();
}
