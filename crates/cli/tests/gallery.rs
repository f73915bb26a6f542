//! The gallery through the `visage` binary on real faces: crash safety (kill -9 during
//! ingest), real deletion, and jurisdiction filtering.

use std::path::{Path, PathBuf};
use std::process::Stdio;

mod common;
use common::*;
use std::time::{Duration, Instant};

/// Copies photos `range` of each person into `dest/<person>/`.
fn copy_people(
    lfw: &Path,
    people: &[&str],
    range: std::ops::Range<usize>,
    dest: &Path,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in people {
        let mut files: Vec<PathBuf> = std::fs::read_dir(lfw.join(p))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        std::fs::create_dir_all(dest.join(p)).unwrap();
        for f in files.iter().skip(range.start).take(range.end - range.start) {
            let to = dest.join(p).join(f.file_name().unwrap());
            std::fs::copy(f, &to).unwrap();
            out.push(to);
        }
    }
    out
}

fn ingest(dir: &Path, data: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "ingest",
        dir.to_str().unwrap(),
        "--collection",
        "main",
        "--json",
    ];
    args.extend_from_slice(extra);
    run_json(&args, data)
}

#[test]
fn kill_9_during_ingest_loses_and_duplicates_nothing() {
    let Some(lfw) = lfw() else { return };
    if !installed("open") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    let people = [
        "Colin_Powell",
        "Tony_Blair",
        "Donald_Rumsfeld",
        "Gerhard_Schroeder",
        "Ariel_Sharon",
        "Hugo_Chavez",
        "Junichiro_Koizumi",
        "Jean_Chretien",
    ];
    copy_people(&lfw, &people, 0..20, &photos);
    // Reference: one uninterrupted run.
    let reference = tmp.path().join("reference");
    let t = Instant::now();
    ingest(&photos, &reference, &["--chunk", "2"]);
    eprintln!("uninterrupted ingest: {:.1} s", t.elapsed().as_secs_f64());
    let expect = run_json(&["stats", "--json"], &reference);
    assert!(expect["faces"].as_u64().unwrap() >= 90, "{expect}");

    // 20 runs killed with SIGKILL at pseudo-random instants within the work left, each
    // followed by a check. (Model loading comes first: `startup` is the time before the first
    // image, `work` the time for all images.)
    // Each run waits until this run has written something (a new blob file appears), then
    // lets it go on for a pseudo-random 0-200 ms before SIGKILL, so kills land anywhere in the
    // analyse/write cycle; a check follows every kill.
    let data = tmp.path().join("crashed");
    let blob_count = |d: &Path| -> usize {
        let b = d.join("blobs");
        if b.is_dir() {
            walk(&b).len()
        } else {
            0
        }
    };
    let mut seed: u64 = 0x5EED_1234;
    let mut killed_mid_run = 0;
    let mut recovered_blobs = 0;
    for round in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 200);
        let before = blob_count(&data);
        let mut child = visage()
            .args([
                "ingest",
                photos.to_str().unwrap(),
                "--collection",
                "main",
                "--chunk",
                "2",
                "--data-dir",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while blob_count(&data) == before
            && child.try_wait().unwrap().is_none()
            && t.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().ok(); // SIGKILL
        child.wait().unwrap();
        if !data.join("gallery.sqlite").exists() {
            continue;
        }
        let check = run_json(&["check", "--json", "--deep"], &data);
        assert_eq!(
            check["inconsistencies"].as_array().unwrap().len(),
            0,
            "round {round}: check after kill -9 found: {check}"
        );
        recovered_blobs += check["recovery"]["uncommitted_blobs_removed"]
            .as_u64()
            .unwrap();
    }
    eprintln!(
        "{killed_mid_run}/20 kills interrupted a run; recovery removed {recovered_blobs} blobs \
         of uncommitted writes"
    );
    assert!(
        killed_mid_run >= 18,
        "only {killed_mid_run} of 20 kills interrupted a run"
    );
    ingest(&photos, &data, &["--chunk", "2"]);
    let got = run_json(&["stats", "--json"], &data);
    for key in ["faces", "images", "subjects"] {
        assert_eq!(
            got[key], expect[key],
            "{key}: crashed {got} vs reference {expect}"
        );
    }
    // A second identical run changes nothing.
    ingest(&photos, &data, &["--chunk", "2"]);
    let again = run_json(&["stats", "--json"], &data);
    assert_eq!(again, got, "a second identical ingest changed the gallery");
    assert_consistent(&data);
}

#[test]
fn deleting_a_subject_removes_every_trace() {
    let Some(lfw) = lfw() else { return };
    if !installed("open") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let gallery_photos = tmp.path().join("gallery");
    let people = [
        "Tony_Blair",
        "Donald_Rumsfeld",
        "Gerhard_Schroeder",
        "Jean_Chretien",
        "John_Ashcroft",
    ];
    copy_people(&lfw, &people, 0..10, &gallery_photos);
    let probes = copy_people(&lfw, &["Tony_Blair"], 20..30, &tmp.path().join("probes"));
    let data = tmp.path().join("data");
    ingest(&gallery_photos, &data, &["--subject-from-parent"]);
    let victim: Vec<serde_json::Value> = run_json(
        &[
            "faces",
            "list",
            "--collection",
            "main",
            "--subject",
            "Tony_Blair",
            "--json",
        ],
        &data,
    )
    .as_array()
    .unwrap()
    .clone();
    assert!(victim.len() >= 9, "{} Tony_Blair faces", victim.len());
    let ids: Vec<i64> = victim.iter().map(|f| f["id"].as_i64().unwrap()).collect();
    let crops: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| {
            let p = tmp.path().join(format!("crop{id}.png"));
            run_json(
                &[
                    "faces",
                    "show",
                    &id.to_string(),
                    "--json",
                    "--crop",
                    p.to_str().unwrap(),
                    "--thumb",
                    p.with_extension("jpg").to_str().unwrap(),
                ],
                &data,
            );
            std::fs::read(&p).unwrap()
        })
        .collect();
    // Hits of the probe's main face; None when the probe has no usable face.
    let search = |probe: &Path| -> Option<Vec<i64>> {
        let r = run_json(
            &["search", probe.to_str().unwrap(), "--k", "1000", "--json"],
            &data,
        );
        let f = &r["probe_faces"][0];
        if !f["unusable"].is_null() || f.is_null() {
            return None;
        }
        Some(
            f["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["face"]["id"].as_i64().unwrap())
                .collect(),
        )
    };
    // Before: his other photos find him first.
    let mut top_is_him = 0;
    for p in &probes {
        if search(p).is_some_and(|h| h.first().is_some_and(|id| ids.contains(id))) {
            top_is_him += 1;
        }
    }
    assert!(
        top_is_him >= 8,
        "only {top_is_him}/10 probes found the subject before deletion"
    );

    let refused = visage()
        .args([
            "faces",
            "delete",
            "--subject",
            "Tony_Blair",
            "--collection",
            "main",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "bulk delete without --yes must be refused"
    );
    let rep = run_json(
        &[
            "faces",
            "delete",
            "--subject",
            "Tony_Blair",
            "--collection",
            "main",
            "--yes",
            "--json",
        ],
        &data,
    );
    assert_eq!(rep[0]["faces"].as_u64().unwrap() as usize, ids.len());

    let mut searched = 0;
    for p in &probes {
        let Some(found) = search(p) else { continue };
        searched += 1;
        assert!(
            !found.is_empty(),
            "the rest of the gallery is still searchable"
        );
        assert!(
            found.iter().all(|id| !ids.contains(id)),
            "a deleted face came back: {found:?}"
        );
    }
    assert!(searched >= 8, "only {searched} probes had a usable face");
    for id in &ids {
        let out = visage()
            .args(["faces", "show", &id.to_string(), "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(!out.status.success());
    }
    // The crop bytes are nowhere under the data directory (SQLite files and indexes included).
    for file in walk(&data) {
        let bytes = std::fs::read(&file).unwrap();
        for (id, crop) in ids.iter().zip(&crops) {
            assert!(
                !bytes.windows(crop.len()).any(|w| w == crop.as_slice()),
                "crop of deleted face {id} found in {}",
                file.display()
            );
        }
    }
    assert_consistent(&data);
}

#[test]
fn jurisdiction_filter_never_returns_another_jurisdiction() {
    let Some(lfw) = lfw() else { return };
    if !installed("open") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let people = [
        "Colin_Powell",
        "Tony_Blair",
        "Hugo_Chavez",
        "Junichiro_Koizumi",
    ];
    // The same people in both jurisdictions, so unfiltered searches mix them.
    copy_people(&lfw, &people, 0..6, &tmp.path().join("fr"));
    copy_people(&lfw, &people, 6..12, &tmp.path().join("il"));
    let probes = copy_people(&lfw, &people, 12..15, &tmp.path().join("probes"));
    let data = tmp.path().join("data");
    ingest(
        &tmp.path().join("fr"),
        &data,
        &["--jurisdiction", "FR", "--source-name", "paris"],
    );
    ingest(
        &tmp.path().join("il"),
        &data,
        &["--jurisdiction", "US-NY", "--source-name", "new-york"],
    );
    let mut unfiltered_mixed = false;
    for p in &probes {
        let p = p.to_str().unwrap();
        let all = run_json(&["search", p, "--k", "20", "--json"], &data);
        let jur = |r: &serde_json::Value| -> Vec<String> {
            r["probe_faces"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|f| f["hits"].as_array().unwrap().iter())
                .map(|h| {
                    h["face"]["image"]["jurisdiction"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        let j = jur(&all);
        unfiltered_mixed |= j.iter().any(|x| x == "FR") && j.iter().any(|x| x == "US-NY");
        for (code, expect) in [("FR", "FR"), ("US", "US-NY"), ("US-NY", "US-NY")] {
            let r = run_json(
                &[
                    "search",
                    p,
                    "--k",
                    "20",
                    "--all-faces",
                    "--jurisdiction",
                    code,
                    "--json",
                ],
                &data,
            );
            let j = jur(&r);
            assert!(!j.is_empty(), "{code}: no results");
            assert!(
                j.iter().all(|x| x == expect),
                "{code} filter returned {j:?}"
            );
        }
        let r = run_json(
            &[
                "search",
                p,
                "--k",
                "20",
                "--exclude-jurisdiction",
                "US",
                "--json",
            ],
            &data,
        );
        assert!(jur(&r).iter().all(|x| x == "FR"));
    }
    assert!(
        unfiltered_mixed,
        "unfiltered searches should mix jurisdictions (else the test proves nothing)"
    );
}

/// Every match carries its estimated false match rate and the false matches a search of this
/// size should expect; `--max-fmr` keeps only matches at least that unlikely to be false.
#[test]
fn matches_carry_calibrated_false_match_rates() {
    let Some(lfw) = lfw() else { return };
    if !calibrated("open") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let people = ["Colin_Powell", "Tony_Blair", "Hugo_Chavez", "Ariel_Sharon"];
    let photos = tmp.path().join("photos");
    copy_people(&lfw, &people, 0..8, &photos);
    let probe = copy_people(&lfw, &["Colin_Powell"], 30..31, &tmp.path().join("probe"));
    let data = tmp.path().join("data");
    ingest(&photos, &data, &["--subject-from-parent"]);
    let probe = probe[0].to_str().unwrap();
    let r = run_json(&["search", probe, "--k", "50", "--json"], &data);
    assert!(
        r["calibration"]["impostor_pairs"].as_u64().unwrap() > 1_000_000,
        "{r}"
    );
    assert!(r["warnings"].as_array().unwrap().is_empty());
    let searched = r["faces_searched"].as_f64().unwrap();
    let hits = r["probe_faces"][0]["hits"].as_array().unwrap().clone();
    assert!(hits.len() >= 20, "{} hits", hits.len());
    let mut prev = 0.0;
    for h in &hits {
        let fmr = h["fmr"].as_f64().unwrap();
        assert!(fmr > 0.0 && fmr <= 1.0, "{h}");
        assert!(fmr >= prev, "false match rates must rise as scores fall");
        prev = fmr;
        let efm = h["expected_false_matches"].as_f64().unwrap();
        assert!(
            (efm - fmr * searched).abs() <= 1e-9 * searched.max(1.0),
            "{h}"
        );
    }
    // The best match is Colin Powell, and it is unlikely to be a false match.
    assert_eq!(hits[0]["face"]["subject"]["label"], "Colin_Powell");
    assert!(hits[0]["fmr"].as_f64().unwrap() < 1e-3, "{}", hits[0]);

    let strict = run_json(
        &["search", probe, "--k", "50", "--max-fmr", "1e-4", "--json"],
        &data,
    );
    let t = strict["threshold"].as_f64().unwrap();
    let t4 = strict["calibration"]["score_at_fmr_1e_4"].as_f64().unwrap();
    assert!((t - t4).abs() < 1e-6, "threshold {t} vs calibration {t4}");
    let kept = strict["probe_faces"][0]["hits"].as_array().unwrap();
    assert!(
        !kept.is_empty() && kept.len() < hits.len(),
        "{} of {}",
        kept.len(),
        hits.len()
    );
    for h in kept {
        assert!(h["fmr"].as_f64().unwrap() <= 1e-4 * 1.0001, "{h}");
        assert_eq!(h["face"]["subject"]["label"], "Colin_Powell", "{h}");
    }
    let bad = visage()
        .args(["search", probe, "--max-fmr", "3", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("max_fmr"));
}

/// Policy at ingest: the default policy refuses Illinois (a source declared US-IL, and a photo
/// whose EXIF GPS is in Chicago); a data-directory policy excluding FR refuses FR sources;
/// after an FR erasure no FR face is returned or stored.
#[test]
fn excluded_jurisdictions_are_refused_and_erasure_removes_them() {
    let Some(lfw) = lfw() else { return };
    if !installed("open") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let people = ["Colin_Powell", "Tony_Blair", "Hugo_Chavez"];
    let photos = tmp.path().join("photos");
    copy_people(&lfw, &people, 0..4, &photos);
    let data = tmp.path().join("data");
    let refused = |extra: &[&str], data: &Path| {
        let out = visage()
            .args([
                "ingest",
                photos.to_str().unwrap(),
                "--collection",
                "main",
                "--json",
            ])
            .args(extra)
            .arg("--data-dir")
            .arg(data)
            .output()
            .unwrap();
        assert!(!out.status.success(), "ingest {extra:?} should be refused");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("jurisdiction_excluded"), "{err}");
    };
    // Default policy: Illinois is refused, whole source or single photo.
    refused(&["--jurisdiction", "US-IL"], &data);
    let gps = tmp.path().join("gps");
    std::fs::create_dir_all(gps.join("Colin_Powell")).unwrap();
    let jpeg = std::fs::read(lfw.join("Colin_Powell/Colin_Powell_0010.jpg")).unwrap();
    std::fs::write(
        gps.join("Colin_Powell/chicago.jpg"),
        visage_engine::geo::with_exif(&jpeg, 41.8781, -87.6298, "2019:05:04 12:30:00"),
    )
    .unwrap();
    std::fs::copy(
        lfw.join("Colin_Powell/Colin_Powell_0011.jpg"),
        gps.join("Colin_Powell/plain.jpg"),
    )
    .unwrap();
    // Exit code 3: some items were refused, the rest indexed.
    let out = visage()
        .args([
            "ingest",
            gps.to_str().unwrap(),
            "--collection",
            "main",
            "--jurisdiction",
            "US",
        ])
        .args(["--json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["errors_by_code"]["jurisdiction_excluded"], 1, "{r}");
    assert_eq!(r["images_indexed"], 1, "{r}");
    // FR and DE are allowed by default; ingest both.
    ingest(
        &photos,
        &data,
        &["--jurisdiction", "FR", "--source-name", "paris"],
    );
    let de = tmp.path().join("de");
    copy_people(&lfw, &people, 4..8, &de);
    ingest(
        &de,
        &data,
        &["--jurisdiction", "DE", "--source-name", "berlin"],
    );
    // A policy in the data directory that excludes FR refuses new FR sources.
    std::fs::write(
        data.join("policy.toml"),
        "version = 1\n[data]\nexcluded_jurisdictions = [\"FR\"]\n",
    )
    .unwrap();
    let fr2 = tmp.path().join("fr2");
    copy_people(&lfw, &people, 8..10, &fr2);
    let out = visage()
        .args([
            "ingest",
            fr2.to_str().unwrap(),
            "--collection",
            "main",
            "--jurisdiction",
            "FR",
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("jurisdiction_excluded"));
    // Erasure of FR: nothing FR is returned or stored afterwards.
    let fr_faces = run_json(
        &[
            "faces",
            "list",
            "--collection",
            "main",
            "--jurisdiction",
            "FR",
            "--json",
        ],
        &data,
    );
    assert!(!fr_faces.as_array().unwrap().is_empty());
    let fr_crops: Vec<String> = fr_faces
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["crop_sha"].as_str().unwrap().to_string())
        .collect();
    // Governance in the data directory: the erasure gets a signed receipt.
    let init = visage()
        .args(["admin", "init", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let receipt = tmp.path().join("erasure-receipt.json");
    let del = run_json(
        &[
            "faces",
            "delete",
            "--jurisdiction",
            "FR",
            "--yes",
            "--json",
            "--receipt",
            receipt.to_str().unwrap(),
        ],
        &data,
    );
    let check = visage()
        .args(["receipt", "verify"])
        .arg(&receipt)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let signed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    assert_eq!(signed["kind"], "erasure");
    assert_eq!(signed["body"]["faces"], del[0]["faces"], "{signed}");
    assert_eq!(
        del[0]["faces"].as_u64().unwrap() as usize,
        fr_faces.as_array().unwrap().len(),
        "{del}"
    );
    let left = run_json(
        &[
            "faces",
            "list",
            "--collection",
            "main",
            "--jurisdiction",
            "FR",
            "--json",
        ],
        &data,
    );
    assert!(left.as_array().unwrap().is_empty(), "{left}");
    for p in ["Colin_Powell", "Tony_Blair", "Hugo_Chavez"] {
        let probe = lfw.join(format!("{p}/{p}_0012.jpg"));
        let r = run_json(
            &["search", probe.to_str().unwrap(), "--k", "100", "--json"],
            &data,
        );
        for f in r["probe_faces"].as_array().unwrap() {
            for h in f["hits"].as_array().unwrap() {
                assert_ne!(h["face"]["image"]["jurisdiction"], "FR", "{h}");
            }
        }
    }
    let names: Vec<String> = walk(&data)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for sha in &fr_crops {
        assert!(
            !names.iter().any(|n| n.contains(sha.as_str())),
            "crop {sha} still stored"
        );
    }
    assert_consistent(&data);
}
