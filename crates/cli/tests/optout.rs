//! Opt-out end to end (issue 5): 10 enrolled LFW people with all their photos plus 1,000
//! other people; 3 of the 10 opt out with one selfie each. Afterwards no search with any of
//! their photos returns their faces, re-ingesting their photos indexes none of them, and the
//! faces of everyone else are untouched (the figure is printed; a small number of wrongly
//! suppressed faces is tolerated and reported).

mod common;
use common::*;
use std::path::PathBuf;

/// Copies the people's photos under `tmp` and ingests them into `data`, labelled by folder.
fn ingest_people(
    people: &[&(String, Vec<PathBuf>)],
    tmp: &std::path::Path,
    data: &std::path::Path,
) -> serde_json::Value {
    let photos = tmp.join("photos");
    copy_people(people, &photos);
    run_json(
        &[
            "ingest",
            photos.to_str().unwrap(),
            "--collection",
            "main",
            "--subject-from-parent",
            "--json",
        ],
        data,
    )
}

#[test]
fn opted_out_people_disappear_and_stay_out() {
    let Some(lfw) = lfw() else { return };
    if !calibrated("open") {
        return;
    }
    let all = people_dirs(&lfw);
    // The 10: evenly spread over people with 8 to 30 photos; the 1,000: the first others by name.
    let ten = spread(&all, 10);
    let others: Vec<&(String, Vec<PathBuf>)> = all
        .iter()
        .filter(|p| !ten.iter().any(|t| t.0 == p.0))
        .take(1000)
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let r = ingest_people(&[&ten[..], &others[..]].concat(), tmp.path(), &data);
    eprintln!(
        "ingested {} images, {} faces",
        r["images_indexed"], r["faces_indexed"]
    );
    let before = faces_per_subject(&data, "main");
    let opting: Vec<&(String, Vec<PathBuf>)> = ten[..3].to_vec();
    for (name, files) in &opting {
        assert!(
            before.get(name).copied().unwrap_or(0) >= 5,
            "{name}: {:?}",
            before.get(name)
        );
        let out = run_json(
            &[
                "opt-out",
                files[0].to_str().unwrap(),
                "--request-id",
                &format!("test-{name}"),
                "--json",
            ],
            &data,
        );
        eprintln!(
            "{name} opted out: {} faces deleted, {} embeddings suppressed",
            out["faces_deleted"], out["suppressed_embeddings"]
        );
        assert_eq!(out["selfies_used"], 1, "{out}");
    }
    let after = faces_per_subject(&data, "main");

    // 1. No search with any of their photos returns their faces.
    let mut searches = 0;
    let mut refused = 0;
    for (name, files) in &opting {
        assert_eq!(after.get(name), None, "{name} still has faces: {after:?}");
        for f in &files[1..] {
            let r = run_json(
                &["search", f.to_str().unwrap(), "--k", "10", "--json"],
                &data,
            );
            for pf in r["probe_faces"].as_array().unwrap() {
                searches += 1;
                if pf["unusable"]
                    .as_array()
                    .is_some_and(|u| u.iter().any(|c| c == "opted_out"))
                {
                    refused += 1;
                }
                for h in pf["hits"].as_array().unwrap() {
                    assert_ne!(
                        h["face"]["subject"]["label"],
                        name.as_str(),
                        "{f:?} found {h}"
                    );
                }
            }
        }
    }
    eprintln!("{searches} searches with opted-out people's photos: {refused} refused as opted_out, none returned them");

    // 2. Re-ingesting their photos indexes none of them.
    let again = tmp.path().join("again");
    copy_people(&opting, &again);
    let r = run_json(
        &[
            "ingest",
            again.to_str().unwrap(),
            "--collection",
            "main",
            "--subject-from-parent",
            "--json",
        ],
        &data,
    );
    let readded = faces_per_subject(&data, "main");
    for (name, _) in &opting {
        assert_eq!(
            readded.get(name),
            None,
            "re-ingest brought {name} back: {}",
            r["counts"]
        );
    }
    eprintln!(
        "re-ingest of their photos: {} images, {} faces added, faces rejected {}",
        r["images_indexed"], r["faces_indexed"], r["faces_rejected"]
    );
    assert!(
        r["faces_rejected"]["opted_out"].as_u64().unwrap_or(0) > 0,
        "{r}"
    );

    // 3. Everyone else is untouched, or nearly: count and bound the wrongly suppressed.
    let mut wrongly = 0;
    let mut total = 0;
    for (name, n) in &before {
        if opting.iter().any(|o| &o.0 == name) {
            continue;
        }
        total += n;
        let m = after.get(name).copied().unwrap_or(0);
        if m < *n {
            eprintln!("wrongly deleted: {} face(s) of {name}", n - m);
            wrongly += n - m;
        }
    }
    eprintln!("faces of people who did not opt out: {total}; wrongly deleted: {wrongly}");
    assert!(
        wrongly * 100 <= total,
        "{wrongly} of {total} faces of other people were deleted"
    );
}

/// Faces of a gallery by id (the whole set, to compare two galleries).
fn face_ids(data: &std::path::Path) -> Vec<i64> {
    faces_of(data, "main")
        .iter()
        .map(|f| f["id"].as_i64().unwrap())
        .collect()
}

/// The audit records with `action`.
fn audit_records(data: &std::path::Path, action: &str) -> Vec<serde_json::Value> {
    let all = run_json(&["audit", "show", "--limit", "1000", "--json"], data);
    all.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == action)
        .cloned()
        .collect()
}

/// An opt-out interrupted half way (the process aborts after its first deletion committed, as
/// if killed) is finished and recorded by the next opt-out on the data directory: the same
/// faces are gone as after an uninterrupted run of the same request on a copy of the gallery,
/// and the audit log holds one record of it, counting the faces of both runs, marked resumed.
#[test]
fn interrupted_opt_out_is_finished_and_recorded() {
    let Some(lfw) = lfw() else { return };
    if !calibrated("open") {
        return;
    }
    let all = people_dirs(&lfw);
    let two = spread(&all, 2);
    let others: Vec<&(String, Vec<PathBuf>)> = all
        .iter()
        .filter(|p| !two.iter().any(|t| t.0 == p.0))
        .take(150)
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let init = visage()
        .args(["admin", "init", "--jurisdiction", "gb-eng", "--data-dir"])
        .arg(&a)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    ingest_people(&[&two[..], &others[..]].concat(), tmp.path(), &a);
    let b = tmp.path().join("b");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&b)
        .status()
        .unwrap();
    assert!(cp.success());
    let (x, y) = (&two[0], &two[1]);
    let opt_out = |who: &(String, Vec<PathBuf>), data: &std::path::Path, abort: bool| {
        let mut c = visage();
        c.args(["opt-out"])
            .arg(&who.1[0])
            .args(["--request-id", &format!("test-{}", who.0), "--json"])
            .arg("--data-dir")
            .arg(data);
        if abort {
            c.env("VISAGE_TEST_ABORT_OPT_OUT_AFTER_DELETIONS", "1");
        }
        c.output().unwrap()
    };
    // The reference: both opt-outs uninterrupted.
    let ax = opt_out(x, &a, false);
    assert!(ax.status.success(), "{ax:?}");
    let ax: serde_json::Value = serde_json::from_slice(&ax.stdout).unwrap();
    assert!(ax["faces_deleted"].as_u64().unwrap() >= 2, "{ax}");
    assert!(opt_out(y, &a, false).status.success());

    // The same on the copy, the first one killed after its first deletion.
    let n0 = face_ids(&b).len();
    let bx = opt_out(x, &b, true);
    assert!(!bx.status.success(), "the hook did not abort: {bx:?}");
    assert!(
        audit_records(&b, "opt_out").is_empty(),
        "recorded before it was done"
    );
    let partly = face_ids(&b).len();
    let by = opt_out(y, &b, false);
    assert!(by.status.success(), "{by:?}");
    let stderr = String::from_utf8_lossy(&by.stderr);
    assert!(
        stderr.contains(&format!("finished and recorded opt-out test-{}", x.0)),
        "{stderr}"
    );
    let (fa, fb) = (face_ids(&a), face_ids(&b));
    eprintln!(
        "{}: {} faces deleted uninterrupted; the interrupted run deleted {} before it died",
        x.0,
        ax["faces_deleted"],
        n0 - partly
    );
    assert!(n0 > partly, "the interrupted run deleted nothing");
    assert_eq!(fa, fb, "the resumed opt-out deleted other faces");

    // One record per opt-out; the resumed one counts every face it deleted, in both runs.
    let recs = audit_records(&b, "opt_out");
    assert_eq!(recs.len(), 2, "{recs:?}");
    let rx = recs
        .iter()
        .find(|r| r["details"]["request_id"] == format!("test-{}", x.0))
        .unwrap();
    assert_eq!(rx["details"]["resumed_after_interruption"], true, "{rx}");
    assert_eq!(rx["result_count"], ax["faces_deleted"], "{rx}");
    let ry = recs
        .iter()
        .find(|r| r["details"]["request_id"] == format!("test-{}", y.0))
        .unwrap();
    assert_eq!(ry["details"]["resumed_after_interruption"], false, "{ry}");
    assert_eq!(audit_records(&b, "receipt").len(), 2);
    let verify = visage()
        .args(["audit", "verify", "--data-dir"])
        .arg(&b)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
    assert_consistent(&b);
}
