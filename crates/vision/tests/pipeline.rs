//! The face pipeline on real photos from ../shared/data/e2e, for every installed pack.

use image::{imageops, Rgb, RgbImage};
use visage_vision::testing::{pipelines, shared_data};
use visage_vision::{decode_file, most_central, AnalyzeOptions, DecodeLimits, FacePipeline};

fn load(rel: &str) -> Option<RgbImage> {
    let p = shared_data()?.join("e2e").join(rel);
    Some(
        decode_file(&p, &DecodeLimits::default())
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .rgb,
    )
}

fn main_embedding(p: &FacePipeline, img: &RgbImage) -> Vec<f32> {
    let faces = p
        .analyze(
            img,
            &AnalyzeOptions {
                embed_all: true,
                ..Default::default()
            },
        )
        .unwrap();
    let i = most_central(&faces, img.width(), img.height()).expect("a face");
    faces[i].embedding.clone().unwrap().vector
}

#[test]
fn finds_each_face_in_group_photos() {
    let Some(two) = load("face_recognition/examples/two_people.jpg") else {
        return;
    };
    for p in pipelines() {
        let faces = p
            .analyze(
                &two,
                &AnalyzeOptions {
                    embed: false,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(faces.len(), 2, "{}: two_people.jpg", p.pack_id());
        for f in &faces {
            // Landmarks lie inside their box, eyes above mouth.
            let b = f.detection.bbox;
            for l in f.detection.landmarks {
                assert!(
                    l[0] >= b.x1 - 5.0
                        && l[0] <= b.x2 + 5.0
                        && l[1] >= b.y1 - 5.0
                        && l[1] <= b.y2 + 5.0
                );
            }
            assert!(f.detection.landmarks[0][1] < f.detection.landmarks[3][1]);
            assert!(f.detection.landmarks[0][0] < f.detection.landmarks[1][0]);
        }
    }
}

#[test]
fn same_person_scores_above_threshold_and_strangers_below() {
    let (Some(a), Some(b), Some(c)) = (
        load("face_recognition/examples/obama.jpg"),
        load("face_recognition/examples/obama2.jpg"),
        load("face_recognition/examples/biden.jpg"),
    ) else {
        return;
    };
    for p in pipelines() {
        let (ea, eb, ec) = (
            main_embedding(&p, &a),
            main_embedding(&p, &b),
            main_embedding(&p, &c),
        );
        let t = p.pack.thresholds.verify;
        let same = visage_core::dot(&ea, &eb);
        let diff = visage_core::dot(&ea, &ec);
        assert!(
            same > t && diff < t,
            "{}: same {same}, different {diff}, threshold {t}",
            p.pack_id()
        );
        let n: f32 = ea.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
    }
}

#[test]
fn batched_embeddings_equal_single_ones() {
    let Some(img) = load("deepface/dataset/selfie-many-people.jpg") else {
        return;
    };
    for p in pipelines() {
        let faces = p
            .analyze(
                &img,
                &AnalyzeOptions {
                    embed: false,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(faces.len() >= 3, "{}", p.pack_id());
        let crops: Vec<&RgbImage> = faces.iter().map(|f| &f.crop).collect();
        let batch = p.embed_crops(&crops, false).unwrap();
        for (i, c) in crops.iter().enumerate() {
            let single = p.embed_crops(&[c], false).unwrap();
            let cos = visage_core::dot(&single[0].vector, &batch[i].vector);
            assert!(cos > 0.9999, "{} face {i}: cos {cos}", p.pack_id());
        }
    }
}

#[test]
fn rotated_and_mirrored_photos_still_match() {
    let Some(img) = load("face_recognition/examples/obama.jpg") else {
        return;
    };
    for p in pipelines() {
        let base = main_embedding(&p, &img);
        // Upright again after the rotation that EXIF orientation would undo: a 180° turn is
        // applied twice; a mirror image of a face is still the same person.
        let round_trip = imageops::rotate180(&imageops::rotate180(&img));
        assert!(visage_core::dot(&base, &main_embedding(&p, &round_trip)) > 0.999);
        let mirrored = imageops::flip_horizontal(&img);
        assert!(visage_core::dot(&base, &main_embedding(&p, &mirrored)) > p.pack.thresholds.verify);
    }
}

#[test]
fn small_faces_in_a_large_image_are_found_by_tiling() {
    let Some(two) = load("face_recognition/examples/two_people.jpg") else {
        return;
    };
    // Shrink the photo so each face is ~35 px wide and place it in a 3000x2000 canvas.
    let small = imageops::resize(&two, 270, 159, imageops::FilterType::Triangle);
    let mut canvas = RgbImage::from_pixel(3000, 2000, Rgb([120, 130, 140]));
    imageops::overlay(&mut canvas, &small, 2100, 1300);
    for p in pipelines() {
        let faces = p
            .analyze(
                &canvas,
                &AnalyzeOptions {
                    embed: false,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(
            faces.len(),
            2,
            "{}: {:?}",
            p.pack_id(),
            faces.iter().map(|f| f.detection.bbox).collect::<Vec<_>>()
        );
        for f in faces {
            assert!(f.detection.bbox.x1 > 2090.0 && f.detection.bbox.y1 > 1290.0);
        }
    }
}

#[test]
fn degenerate_images_give_no_faces_not_panics() {
    for p in pipelines() {
        for (w, h) in [(1, 1), (3, 5000), (6000, 2), (64, 64)] {
            let img = RgbImage::from_pixel(w, h, Rgb([200, 200, 200]));
            let faces = p.analyze(&img, &AnalyzeOptions::default()).unwrap();
            assert!(faces.is_empty(), "{} {w}x{h}", p.pack_id());
        }
    }
}
