//! Decodes every real photo in the shared end-to-end data set, when it is present.
//!
//! Generated test files exercise the edge cases; real files catch what generators do not
//! write: camera makers' EXIF blocks, restart markers, odd sampling factors, ICC chunks.

use std::path::{Path, PathBuf};

use visage_decode::{decode_file, DecodeLimits};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        {
            out.push(path);
        }
    }
}

#[test]
fn every_e2e_photo_decodes() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let e2e = data.join("e2e");
    if !e2e.is_dir() {
        println!("skipping: ../shared/data not found");
        return;
    }
    let mut files = Vec::new();
    collect(&e2e, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no .jpg/.png under {}", e2e.display());

    let limits = DecodeLimits::default();
    let mut failures = Vec::new();
    let mut rotated = 0;
    for path in &files {
        match decode_file(path, &limits) {
            Ok(img) => {
                let (w, h) = img.rgb.dimensions();
                assert!(
                    (16..=20_000).contains(&w) && (16..=20_000).contains(&h),
                    "{}: implausible size {w}x{h}",
                    path.display()
                );
                let expected_ext = match img.format {
                    "jpeg" => ["jpg", "jpeg"].as_slice(),
                    "png" => ["png"].as_slice(),
                    // A file named .jpg that holds something else is worth knowing about,
                    // but it is the data set's problem, not a decode failure.
                    _ => [].as_slice(),
                };
                let ext = path.extension().unwrap().to_string_lossy().to_lowercase();
                if !expected_ext.contains(&ext.as_str()) {
                    println!("note: {} is really {}", path.display(), img.format);
                }
                if img.exif_orientation >= 5 {
                    assert_eq!((w, h), (img.source_height, img.source_width));
                    rotated += 1;
                } else {
                    assert_eq!((w, h), (img.source_width, img.source_height));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    println!(
        "decoded {} real photos ({rotated} with a 90-degree EXIF rotation)",
        files.len() - failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed to decode:\n{}",
        failures.join("\n")
    );
}
