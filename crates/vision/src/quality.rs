//! Face quality: measured properties and the reasons a face fails the gate.
//!
//! Measures are cheap and model-independent: detector score, face size, sharpness (variance of
//! a 3x3 Laplacian over the central part of the aligned grey crop), yaw (nose offset from the
//! eye midpoint in the aligned crop, relative to half the eye distance) and roll (eye-line angle
//! in the image), plus how much of the box lies outside the image.

use image::RgbImage;
use visage_core::{Detection, Quality, QualityReason};

use crate::align::Similarity;
use crate::pack::QualitySpec;

pub fn assess(
    det: &Detection,
    crop: &RgbImage,
    m: &Similarity,
    img_w: u32,
    img_h: u32,
    spec: &QualitySpec,
) -> Quality {
    let face_px = det.bbox.width().min(det.bbox.height());
    let sharpness = laplacian_variance(crop);
    let lm = det.landmarks.map(|p| m.apply(p));
    let eye_mid = (lm[0][0] + lm[1][0]) / 2.0;
    let half_eye = ((lm[1][0] - lm[0][0]) / 2.0).abs().max(1e-3);
    let yaw = ((lm[2][0] - eye_mid) / half_eye).clamp(-1.0, 1.0);
    let (dx, dy) = (
        det.landmarks[1][0] - det.landmarks[0][0],
        det.landmarks[1][1] - det.landmarks[0][1],
    );
    let roll_deg = dy.atan2(dx).to_degrees();
    let inside = {
        let b = &det.bbox;
        let ix = (b.x2.min(img_w as f32) - b.x1.max(0.0)).max(0.0);
        let iy = (b.y2.min(img_h as f32) - b.y1.max(0.0)).max(0.0);
        if b.area() > 0.0 {
            ix * iy / b.area()
        } else {
            0.0
        }
    };
    let mut reasons = Vec::new();
    if face_px < spec.min_face_px {
        reasons.push(QualityReason::TooSmall);
    }
    if det.score < spec.min_detector_score {
        reasons.push(QualityReason::LowDetectorScore);
    }
    if sharpness < spec.min_sharpness {
        reasons.push(QualityReason::Blurred);
    }
    if yaw.abs() > spec.max_yaw || roll_deg.abs() > spec.max_roll_deg {
        reasons.push(QualityReason::ExtremePose);
    }
    if inside < 0.75 {
        reasons.push(QualityReason::Truncated);
    }
    // A single number to rank faces of one track or image: each factor in [0, 1].
    let size_f = (face_px / (3.0 * spec.min_face_px.max(1.0))).min(1.0);
    let sharp_f = (sharpness / 200.0).min(1.0);
    let pose_f = 1.0 - yaw.abs() * 0.7;
    let score = (det.score.clamp(0.0, 1.0) * size_f * (0.5 + 0.5 * sharp_f) * pose_f * inside)
        .clamp(0.0, 1.0);
    Quality {
        score,
        face_px,
        sharpness,
        yaw,
        roll_deg,
        reasons,
    }
}

/// Variance of the 3x3 Laplacian over the central 64x64 region of the (grey) crop.
pub fn laplacian_variance(crop: &RgbImage) -> f32 {
    let (w, h) = crop.dimensions();
    if w < 8 || h < 8 {
        return 0.0;
    }
    let grey = |x: u32, y: u32| {
        let p = crop.get_pixel(x, y).0;
        0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
    };
    let (x0, x1) = (w * 3 / 14, w * 11 / 14);
    let (y0, y1) = (h * 3 / 14, h * 11 / 14);
    let mut vals = Vec::with_capacity(((x1 - x0) * (y1 - y0)) as usize);
    for y in y0.max(1)..y1.min(h - 1) {
        for x in x0.max(1)..x1.min(w - 1) {
            vals.push(
                grey(x - 1, y) + grey(x + 1, y) + grey(x, y - 1) + grey(x, y + 1)
                    - 4.0 * grey(x, y),
            );
        }
    }
    let n = vals.len() as f32;
    let mean = vals.iter().sum::<f32>() / n;
    vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n
}
