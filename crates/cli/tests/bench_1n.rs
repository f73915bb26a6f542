//! `visage bench lfw-1n` on a small slice of LFW (--limit-people 40) with the open pack.

mod common;

use common::{installed, lfw, require, visage};

#[test]
fn lfw_1n_smoke_test_on_40_people() {
    let Some(images) = lfw() else {
        assert!(
            !require(),
            "../shared/data/lfw is required (VISAGE_REQUIRE_MODELS=1)"
        );
        return;
    };
    if !installed("open") {
        return;
    }
    let data = images.parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("lfw1n.json");
    let out = visage()
        .args([
            "bench",
            "lfw-1n",
            "--limit-people",
            "40",
            "--pack",
            "open",
            "--data",
        ])
        .arg(data)
        .arg("--json")
        .arg(&report)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench lfw-1n failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rank-1"), "summary on stdout: {stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    for k in [
        "pack",
        "rank1",
        "rank10",
        "fnir_at_fpir_0.01",
        "fnir_at_fpir_0.001",
        "gallery_size",
        "probes",
        "threshold_at_fpir_0.01",
        "threshold_at_fpir_0.001",
        "gallery_failures",
        "probe_failures",
        "det",
        "images_per_second",
        "elapsed_seconds",
        "threads",
    ] {
        assert!(v.get(k).is_some(), "missing key {k}: {v}");
    }
    assert!(v["pack"].as_str().unwrap().starts_with("open@"));
    let int = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("{k} is not an integer: {v}"))
    };
    let num = |k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("{k} is not a number: {v}"))
    };
    // 40 people with >= 2 images and 40 single-image people.
    assert_eq!(int("mated_people"), 40);
    assert_eq!(int("distractors"), 40);
    assert_eq!(int("gallery_size"), 80);
    assert_eq!(
        int("gallery_enrolled") + int("gallery_failures"),
        int("gallery_size")
    );
    assert_eq!(
        int("probes_searched") + int("probe_failures"),
        int("probes")
    );
    assert!(
        int("probes") >= 40,
        "each mated person has at least one probe"
    );
    assert_eq!(
        v["failed_images"].as_array().unwrap().len() as u64,
        int("gallery_failures") + int("probe_failures")
    );
    let (r1, r10) = (num("rank1"), num("rank10"));
    assert!(
        r1 > 0.8,
        "rank-1 {r1} implausibly low for the open pack on 40 people"
    );
    assert!(r10 >= r1 && r10 <= 1.0, "rank-10 {r10} vs rank-1 {r1}");
    for k in ["fnir_at_fpir_0.01", "fnir_at_fpir_0.001"] {
        let f = num(k);
        assert!((0.0..=1.0).contains(&f), "{k} = {f}");
        // FNIR can never beat the rank-1 miss rate.
        assert!(f >= 1.0 - r1 - 1e-9, "{k} = {f} below 1 - rank1");
    }
    assert!(num("fnir_at_fpir_0.001") >= num("fnir_at_fpir_0.01") - 1e-12);
    let det = v["det"].as_array().unwrap();
    assert_eq!(det.len(), 50);
    for p in det {
        for k in ["fpir", "fnir", "threshold"] {
            let x = p[k]
                .as_f64()
                .unwrap_or_else(|| panic!("det point lacks {k}: {p}"));
            if k != "threshold" {
                assert!((0.0..=1.0).contains(&x), "det {k} = {x}");
            }
        }
    }
}

#[test]
fn lfw_1n_names_a_missing_folder() {
    let missing = std::env::temp_dir().join("visage-no-such-lfw-folder");
    let out = visage()
        .args(["bench", "lfw-1n", "--pack", "open", "--data"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("visage-no-such-lfw-folder") && err.contains("not found"),
        "{err}"
    );
    // A folder that exists but is not an LFW tree.
    let dir = tempfile::tempdir().unwrap();
    let out = visage()
        .args(["bench", "lfw-1n", "--pack", "open", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not an LFW folder") && err.contains("lfw-deepfunneled"),
        "{err}"
    );
}
