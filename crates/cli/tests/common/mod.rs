//! Helpers shared by the binary's integration tests.
#![allow(dead_code)]

pub mod cluster;
pub mod sources;

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn visage() -> Command {
    Command::new(env!("CARGO_BIN_EXE_visage"))
}

/// `../shared/data/lfw/lfw-deepfunneled`, or `None` (with a message) when absent.
pub fn lfw() -> Option<PathBuf> {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/lfw/lfw-deepfunneled");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("skipping: ../shared/data/lfw not found");
        None
    }
}

/// Whether CI asked for every model-dependent test to run (VISAGE_REQUIRE_MODELS=1).
pub fn require() -> bool {
    std::env::var("VISAGE_REQUIRE_MODELS").is_ok_and(|v| v == "1")
}

/// Whether `pack` is installed (skip, or fail under VISAGE_REQUIRE_MODELS=1).
pub fn installed(pack: &str) -> bool {
    let ok = visage()
        .args(["models", "verify", pack])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("VISAGE_REQUIRE_MODELS")
                .map(|v| v != "1")
                .unwrap_or(true),
            "pack {pack} must be installed (VISAGE_REQUIRE_MODELS=1)"
        );
        eprintln!("skipping: pack {pack} not installed; run scripts/setup.sh");
    }
    ok
}

/// Every file under `dir`, recursively (nothing when it does not exist).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Runs `visage ARGS --data-dir DATA`, asserts success, parses stdout as JSON.
pub fn run_json(args: &[&str], data: &Path) -> serde_json::Value {
    let out = visage()
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "visage {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "visage {args:?}: bad JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `visage check --deep` on `data` finds nothing wrong.
pub fn assert_consistent(data: &Path) {
    let check = run_json(&["check", "--json", "--deep"], data);
    assert_eq!(
        check["inconsistencies"].as_array().unwrap().len(),
        0,
        "{check}"
    );
}

/// Whether `pack` is installed and calibrated (`visage models calibrate`, which setup runs when
/// LFW is present); skip, or fail under VISAGE_REQUIRE_MODELS=1.
pub fn calibrated(pack: &str) -> bool {
    if !installed(pack) {
        return false;
    }
    let out = visage()
        .args(["models", "list", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ok = list
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == pack && p["calibrated"] == true);
    if !ok {
        assert!(
            !require(),
            "pack {pack} must be calibrated (VISAGE_REQUIRE_MODELS=1)"
        );
        eprintln!(
            "skipping: pack {pack} is not calibrated; run `visage models calibrate --pack {pack}`"
        );
    }
    ok
}

/// Every LFW person's folder name and photos, sorted by name.
pub fn people_dirs(lfw: &Path) -> Vec<(String, Vec<PathBuf>)> {
    let mut out: Vec<(String, Vec<PathBuf>)> = std::fs::read_dir(lfw)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let mut files: Vec<PathBuf> = walk(&e.path())
                .into_iter()
                .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
                .collect();
            files.sort();
            (e.file_name().to_string_lossy().into_owned(), files)
        })
        .collect();
    out.sort();
    out
}

/// Copies each person's photos into `dest/NAME/`.
pub fn copy_people(people: &[&(String, Vec<PathBuf>)], dest: &Path) {
    for (name, files) in people {
        let d = dest.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in files {
            std::fs::copy(f, d.join(f.file_name().unwrap())).unwrap();
        }
    }
}

/// Every face of an embedded gallery's collection (`visage faces list`, paged), in id order.
pub fn faces_of(data: &Path, collection: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let page = run_json(
            &[
                "faces",
                "list",
                "--collection",
                collection,
                "--after",
                &after.to_string(),
                "--limit",
                "1000",
                "--json",
            ],
            data,
        );
        let page = page.as_array().unwrap();
        if page.is_empty() {
            return out;
        }
        for f in page {
            after = after.max(f["id"].as_i64().unwrap());
            out.push(f.clone());
        }
    }
}

/// Faces per subject label (`-` for none) in an embedded gallery's collection.
pub fn faces_per_subject(
    data: &Path,
    collection: &str,
) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for f in faces_of(data, collection) {
        let label = f["subject"]["label"].as_str().unwrap_or("-").to_string();
        *out.entry(label).or_default() += 1;
    }
    out
}

/// `n` people with 8 to 30 photos, evenly spread over the alphabet.
pub fn spread(all: &[(String, Vec<PathBuf>)], n: usize) -> Vec<&(String, Vec<PathBuf>)> {
    let mid: Vec<&(String, Vec<PathBuf>)> = all
        .iter()
        .filter(|p| (8..=30).contains(&p.1.len()))
        .collect();
    (0..n).map(|i| mid[i * mid.len() / n]).collect()
}
