//! Gallery behaviour on synthetic vectors: atomic adds, filters, real deletion, reopen, check.

use std::path::Path;

use visage_gallery::{
    Access, CheckOptions, DeleteTarget, Filter, Gallery, NewFace, NewImage, NewSource, SearchQuery,
};

const DIM: usize = 16;

fn unit(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    visage_core::l2_normalize(&mut v);
    v
}

fn face(seed: u64) -> NewFace {
    NewFace {
        bbox: [1.0, 2.0, 30.0, 40.0],
        landmarks: [[1.0, 1.0]; 5],
        det_score: 0.9,
        quality: serde_json::json!({"score": 1.0}),
        vector: unit(seed),
        crop: format!("crop-bytes-{seed}-unique-marker").into_bytes(),
        thumb: format!("thumb-bytes-{seed}").into_bytes(),
        subject_id: None,
    }
}

fn fill(g: &Gallery, n: u64) -> (i64, Vec<i64>) {
    let c = g.ensure_collection("main", "test@1", DIM).unwrap();
    let us = g
        .ensure_source(
            c.id,
            &NewSource {
                name: "us".into(),
                kind: "directory".into(),
                jurisdiction: Some("US-IL".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let fr = g
        .ensure_source(
            c.id,
            &NewSource {
                name: "fr".into(),
                kind: "directory".into(),
                jurisdiction: Some("FR".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let (src, jur) = if i % 2 == 0 {
            (&us, "US-IL")
        } else {
            (&fr, "FR")
        };
        let out = g
            .add_image(&NewImage {
                collection_id: c.id,
                source_id: src.id,
                sha256: format!("{i:064x}"),
                uri: Some(format!("/photos/{i}.jpg")),
                jurisdiction: Some(jur.into()),
                jurisdiction_method: Some("declared_source".into()),
                captured_at: Some(1_000 + i as i64),
                width: 100,
                height: 100,
                faces: vec![face(i)],
                ..Default::default()
            })
            .unwrap();
        ids.extend(out.face_ids);
    }
    (c.id, ids)
}

/// A search without threshold: hits and how the search ran.
fn search(
    g: &Gallery,
    collection_id: i64,
    vector: &[f32],
    k: usize,
    filter: Filter,
) -> (Vec<visage_gallery::Hit>, visage_gallery::SearchTrace) {
    g.search(&SearchQuery {
        collection_id,
        vector,
        k,
        threshold: None,
        filter,
    })
    .unwrap()
}

fn contains_bytes(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in walk(dir) {
        if let Ok(b) = std::fs::read(&e) {
            if b.windows(needle.len()).any(|w| w == needle) {
                hits.push(e.display().to_string());
            }
        }
    }
    hits
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn add_search_reopen_and_duplicate_images() {
    let d = tempfile::tempdir().unwrap();
    let (cid, ids) = {
        let g = Gallery::open(d.path(), Access::ReadWrite).unwrap();
        let (cid, ids) = fill(&g, 200);
        // Same image again: nothing new.
        let again = g
            .add_image(&NewImage {
                collection_id: cid,
                source_id: 1,
                sha256: format!("{:064x}", 3),
                faces: vec![face(3)],
                ..Default::default()
            })
            .unwrap();
        assert!(again.duplicate && again.face_ids.is_empty());
        (cid, ids)
    };
    assert_eq!(ids.len(), 200);
    let g = Gallery::open(d.path(), Access::ReadOnly).unwrap();
    let probe = unit(77);
    let (hits, trace) = search(&g, cid, &probe, 5, Filter::default());
    assert_eq!(trace.path, "hnsw");
    assert_eq!(hits[0].face.id, ids[77]);
    assert!((hits[0].score - 1.0).abs() < 1e-5);
    assert_eq!(hits[0].face.image.uri.as_deref(), Some("/photos/77.jpg"));
    assert_eq!(hits[0].face.source.name, "fr");
    assert_eq!(g.stats().unwrap().faces, 200);
    let rep = g
        .check(CheckOptions {
            repair: false,
            deep: true,
        })
        .unwrap();
    assert_eq!(rep.count(), 0, "{:?}", rep.inconsistencies);
}

#[test]
fn jurisdiction_filter_never_leaks() {
    let d = tempfile::tempdir().unwrap();
    let g = Gallery::open(d.path(), Access::ReadWrite).unwrap();
    let (cid, _) = fill(&g, 300);
    for seed in 0..50u64 {
        let probe = unit(seed);
        for (codes, excl) in [
            (vec!["US"], vec![]),
            (vec!["FR"], vec![]),
            (vec![], vec!["US"]),
        ] {
            let filter = Filter {
                jurisdictions: codes.iter().map(|s| s.to_string()).collect(),
                exclude_jurisdictions: excl.iter().map(|s: &&str| s.to_string()).collect(),
                ..Default::default()
            };
            let (hits, _) = search(&g, cid, &probe, 10, filter);
            assert_eq!(hits.len(), 10);
            for h in hits {
                let j = h.face.image.jurisdiction.unwrap();
                if codes == ["US"] {
                    assert_eq!(j, "US-IL");
                } else {
                    assert_eq!(j, "FR");
                }
            }
        }
    }
}

#[test]
fn deletion_is_real_and_survives_reopen_and_rebuild() {
    let d = tempfile::tempdir().unwrap();
    let victim_vec: Vec<u8>;
    let victim;
    {
        let g = Gallery::open(d.path(), Access::ReadWrite).unwrap();
        let (cid, ids) = fill(&g, 100);
        g.flush().unwrap();
        victim = ids[10];
        victim_vec = g
            .face_vector(victim)
            .unwrap()
            .unwrap()
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        assert!(!contains_bytes(d.path(), b"crop-bytes-10-unique-marker").is_empty());
        let rep = g.delete(&DeleteTarget::Faces(vec![victim])).unwrap();
        assert_eq!(rep.faces, 1);
        assert_eq!(rep.blobs_removed, 2);
        let (hits, _) = search(&g, cid, &unit(10), 100, Filter::default());
        assert!(hits.iter().all(|h| h.face.id != victim));
        assert!(g.face(victim).unwrap().is_none());
    }
    assert_eq!(
        contains_bytes(d.path(), b"crop-bytes-10-unique-marker"),
        Vec::<String>::new()
    );
    assert_eq!(
        contains_bytes(d.path(), &victim_vec),
        Vec::<String>::new(),
        "vector bytes remain"
    );
    let g = Gallery::open(d.path(), Access::ReadWrite).unwrap();
    let c = g.collection("main").unwrap().unwrap();
    for _ in 0..2 {
        let (hits, _) = search(&g, c.id, &unit(10), 100, Filter::default());
        assert_eq!(hits.len(), 99);
        assert!(hits.iter().all(|h| h.face.id != victim));
        g.rebuild_index(c.id).unwrap();
    }
    // Jurisdiction erasure: no FR face remains anywhere.
    let rep = g.delete(&DeleteTarget::Jurisdiction("FR".into())).unwrap();
    assert_eq!(rep.faces, 50);
    let (hits, _) = search(&g, c.id, &unit(11), 100, Filter::default());
    assert_eq!(hits.len(), 49);
    assert!(hits
        .iter()
        .all(|h| h.face.image.jurisdiction.as_deref() == Some("US-IL")));
    let rep = g
        .check(CheckOptions {
            repair: false,
            deep: true,
        })
        .unwrap();
    assert_eq!(rep.count(), 0, "{:?}", rep.inconsistencies);
}

#[test]
fn check_finds_and_repairs_damage() {
    let d = tempfile::tempdir().unwrap();
    let g = Gallery::open(d.path(), Access::ReadWrite).unwrap();
    let (cid, ids) = fill(&g, 20);
    g.flush().unwrap();
    drop(g);
    // An orphan blob, a missing crop, and a stale index (saved index lost).
    std::fs::create_dir_all(d.path().join("blobs/ff")).unwrap();
    std::fs::write(d.path().join("blobs/ff").join("f".repeat(64)), b"orphan").unwrap();
    let g = Gallery::open(d.path(), Access::ReadWrite).unwrap();
    let rec = g.face(ids[3]).unwrap().unwrap();
    std::fs::remove_file(
        d.path()
            .join("blobs")
            .join(&rec.crop_sha[..2])
            .join(&rec.crop_sha),
    )
    .unwrap();
    let rep = g.check(CheckOptions::default()).unwrap();
    let kinds: Vec<&str> = rep.inconsistencies.iter().map(|i| i.kind).collect();
    assert!(
        kinds.contains(&"orphan_blob") && kinds.contains(&"missing_blob"),
        "{kinds:?}"
    );
    let rep = g
        .check(CheckOptions {
            repair: true,
            deep: false,
        })
        .unwrap();
    assert_eq!(rep.faces_dropped, vec![ids[3]]);
    let rep = g.check(CheckOptions::default()).unwrap();
    assert_eq!(rep.count(), 0, "{:?}", rep.inconsistencies);
    assert_eq!(g.stats().unwrap().faces, 19);
    let _ = cid;
}

#[test]
fn second_writer_is_refused_and_readers_are_not() {
    let d = tempfile::tempdir().unwrap();
    let _g = Gallery::open(d.path(), Access::ReadWrite).unwrap();
    let e = Gallery::open(d.path(), Access::ReadWrite).err().unwrap();
    assert!(format!("{e:#}").contains("in use"), "{e:#}");
    Gallery::open(d.path(), Access::ReadOnly).unwrap();
}
