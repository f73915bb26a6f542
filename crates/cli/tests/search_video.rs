//! `visage search` with a probe video (tracks, each with its matches) and with a chosen probe
//! face (`--face N|all|main`), through the binary on real data: a clip from
//! ../shared/data/e2e (Lin-Manuel Miranda, whose portrait is in the gallery), a clip made
//! here with ffmpeg from LFW photos of two people not in the gallery, and a group photo of
//! Obama and Biden.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::*;
use serde_json::Value;

const E2E: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/e2e");

fn e2e(rel: &str) -> PathBuf {
    Path::new(E2E).join(rel)
}

fn ffmpeg() -> bool {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !require(),
            "ffmpeg must be installed (VISAGE_REQUIRE_MODELS=1)"
        );
        eprintln!("skipping: ffmpeg not found; run scripts/setup.sh");
    }
    ok
}

fn run(args: &[&str], data: &Path) -> Output {
    visage()
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

fn label(hit: &Value) -> &str {
    hit["face"]["subject"]["label"].as_str().unwrap_or("")
}

/// LFW photo 4 of `a` for 2 s, 3 s of black, photo 4 of `b` for 2 s (MPEG-4 in MP4).
fn two_people_clip(lfw: &Path, dir: &Path, a: &str, b: &str) -> PathBuf {
    let out = dir.join("two-people.mp4");
    let p = |who: &str| lfw.join(who).join(format!("{who}_0004.jpg"));
    let ok = Command::new("ffmpeg")
        .args([
            "-nostdin", "-v", "error", "-y", "-loop", "1", "-t", "2", "-i",
        ])
        .arg(p(a))
        .args([
            "-f",
            "lavfi",
            "-t",
            "3",
            "-i",
            "color=c=black:s=250x250:r=10",
        ])
        .args(["-loop", "1", "-t", "2", "-i"])
        .arg(p(b))
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

#[test]
fn search_by_video_and_chosen_face() {
    let Some(lfw) = lfw() else { return };
    if !installed("open") || !ffmpeg() {
        return;
    }
    if !e2e("face_recognition/examples/short_hamilton_clip.mp4").is_file() {
        assert!(
            !require(),
            "../shared/data/e2e is required (VISAGE_REQUIRE_MODELS=1)"
        );
        eprintln!("skipping: ../shared/data/e2e not found");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    let ex = e2e("face_recognition/examples");
    for (who, files) in [
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
        std::fs::create_dir_all(photos.join(who)).unwrap();
        for f in files {
            std::fs::copy(&f, photos.join(who).join(f.file_name().unwrap())).unwrap();
        }
    }
    for who in ["Colin_Powell", "Tony_Blair", "George_W_Bush"] {
        std::fs::create_dir_all(photos.join(who)).unwrap();
        for n in 1..=3 {
            let name = format!("{who}_{n:04}.jpg");
            std::fs::copy(lfw.join(who).join(&name), photos.join(who).join(&name)).unwrap();
        }
    }
    let data = tmp.path().join("data");
    let r = run_json(
        &[
            "ingest",
            photos.to_str().unwrap(),
            "--collection",
            "main",
            "--subject-from-parent",
            "--json",
        ],
        &data,
    );
    assert!(r["faces_indexed"].as_u64().unwrap() >= 14, "{r}");

    // --- a video made of two LFW people not in the gallery: one track each, right person first
    let clip = two_people_clip(&lfw, tmp.path(), "Colin_Powell", "Tony_Blair");
    let clip = clip.to_str().unwrap();
    let r = run_json(&["search", clip, "--k", "3", "--json"], &data);
    assert_eq!(
        r["video"]["frames_sampled"].as_u64(),
        Some(14),
        "{}",
        r["video"]
    );
    let usable: Vec<&Value> = r["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["unusable"].is_null())
        .collect();
    assert_eq!(usable.len(), 2, "{}", r["tracks"]);
    assert_eq!(
        label(&usable[0]["hits"][0]),
        "Colin_Powell",
        "{}",
        usable[0]
    );
    assert_eq!(label(&usable[1]["hits"][0]), "Tony_Blair", "{}", usable[1]);
    assert!(usable[1]["first_t"].as_f64().unwrap() >= 4.9);
    // the thumbnail bytes stay out of the CLI's JSON
    assert!(usable[0].get("thumbnail_jpeg").is_none());
    // --video-fps changes the sampling
    let r = run_json(&["search", clip, "--video-fps", "1", "--json"], &data);
    assert_eq!(
        r["video"]["frames_sampled"].as_u64(),
        Some(7),
        "{}",
        r["video"]
    );

    // --- the e2e clip: Lin-Manuel Miranda's appearances rank him first ----------------------
    let ham = ex.join("short_hamilton_clip.mp4");
    let ham = ham.to_str().unwrap();
    let r = run_json(&["search", ham, "--k", "5", "--json"], &data);
    eprintln!("short_hamilton_clip.mp4: {}", r["timings_ms"]);
    let tracks = r["tracks"].as_array().unwrap();
    let best = tracks
        .iter()
        .filter(|t| t["unusable"].is_null())
        .max_by(|a, b| {
            let s = |t: &Value| t["hits"][0]["score"].as_f64().unwrap_or(-1.0);
            s(a).total_cmp(&s(b))
        })
        .expect("a usable track");
    assert_eq!(label(&best["hits"][0]), "Lin_Manuel_Miranda", "{best}");
    for t in tracks {
        if t["hits"][0]["score"].as_f64().is_some_and(|s| s >= 0.35) {
            assert_eq!(label(&t["hits"][0]), "Lin_Manuel_Miranda", "{t}");
        }
    }
    assert!(tracks.iter().any(|t| !t["unusable"].is_null()));
    // text output: one line per track
    let out = run(&["search", ham, "--k", "1"], &data);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("track #0 ") && text.contains("Lin_Manuel_Miranda"),
        "{text}"
    );
    assert!(text.contains("unusable (extreme_pose)"), "{text}");

    // --- video errors: too long, not a video, --face on a video -------------------------------
    let out = run(&["search", ham, "--max-duration", "5"], &data);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("video_too_long"));
    let fake = tmp.path().join("fake.mp4");
    std::fs::write(&fake, "this is not a video").unwrap();
    let out = run(&["search", fake.to_str().unwrap()], &data);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid_video"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["search", clip, "--face", "1"], &data);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--face applies to photos"));

    // --- a chosen face of a group photo --------------------------------------------------------
    let group = ex.join("knn_examples/test/obama_and_biden.jpg");
    let group = group.to_str().unwrap();
    let main = run_json(&["search", group, "--json", "--k", "2"], &data);
    assert_eq!(main["faces"], "main");
    assert_eq!(main["detected_faces"].as_array().unwrap().len(), 3);
    assert_eq!(main["probe_faces"].as_array().unwrap().len(), 1);
    for (i, who) in [(0, "Joe_Biden"), (1, "Barack_Obama")] {
        let r = run_json(
            &["search", group, "--face", &i.to_string(), "--json"],
            &data,
        );
        assert_eq!(r["faces"].as_u64(), Some(i));
        assert_eq!(r["probe_faces"][0]["index"].as_u64(), Some(i));
        assert_eq!(label(&r["probe_faces"][0]["hits"][0]), who, "face {i}");
    }
    let all = run_json(&["search", group, "--face", "all", "--json"], &data);
    assert_eq!(all["probe_faces"].as_array().unwrap().len(), 3);
    let legacy = run_json(&["search", group, "--all-faces", "--json"], &data);
    assert_eq!(legacy["faces"], "all");
    let out = run(&["search", group, "--face", "3"], &data);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("face index 3 is out of range") && err.contains("0 to 2"),
        "{err}"
    );
    let out = run(&["search", group, "--face", "left"], &data);
    assert!(!out.status.success());
    let out = run(&["search", group, "--face", "1", "--all-faces"], &data);
    assert!(!out.status.success(), "--face and --all-faces conflict");
    // text output lists the faces to choose from
    let out = run(&["search", group, "--face", "1", "--k", "1"], &data);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 face(s) detected"), "{text}");
    assert!(
        text.contains("#1 [") && text.contains("<- searched"),
        "{text}"
    );
    assert!(text.contains("(unusable)"), "{text}");
}
