//! Domain types shared by every visage crate.
//!
//! This crate has no I/O and no heavy dependencies: it is the vocabulary the pipeline
//! (`visage-vision`), the gallery and the front ends speak. Geometry is in pixel
//! coordinates of the *decoded, orientation-corrected* image, origin top-left, x right.

use serde::{Deserialize, Serialize};

/// An axis-aligned box in pixels: `(x1, y1)` top-left, `(x2, y2)` bottom-right.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }
    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }
    pub fn center(&self) -> [f32; 2] {
        [(self.x1 + self.x2) * 0.5, (self.y1 + self.y2) * 0.5]
    }
    /// Intersection over union; 0 when either box is empty.
    pub fn iou(&self, other: &BBox) -> f32 {
        let ix = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let iy = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = ix * iy;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
}

/// Five facial landmarks in the order used by every supported model:
/// right eye (image left), left eye, nose tip, right mouth corner, left mouth corner.
pub type Landmarks = [[f32; 2]; 5];

/// One detected face, before quality assessment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub bbox: BBox,
    pub landmarks: Landmarks,
    /// Detector confidence in [0, 1].
    pub score: f32,
}

/// Why a face is not good enough to index or to search with. Codes are stable API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum QualityReason {
    /// The face is narrower (inter-ocular or box) than the configured minimum.
    TooSmall,
    /// The detector is not confident this is a face.
    LowDetectorScore,
    /// The aligned crop has too little high-frequency energy.
    Blurred,
    /// The head is turned or tilted too far for reliable recognition.
    ExtremePose,
    /// A large part of the face box lies outside the image.
    Truncated,
}

impl QualityReason {
    pub fn code(&self) -> &'static str {
        match self {
            QualityReason::TooSmall => "too_small",
            QualityReason::LowDetectorScore => "low_detector_score",
            QualityReason::Blurred => "blurred",
            QualityReason::ExtremePose => "extreme_pose",
            QualityReason::Truncated => "truncated",
        }
    }
}

/// Per-face quality: a score in [0, 1] (higher is better) and the reasons it fails the gate,
/// if any. `reasons` empty means the face passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub score: f32,
    /// Measured properties, reported so operators can tune thresholds.
    pub face_px: f32,
    pub sharpness: f32,
    pub yaw: f32,
    pub roll_deg: f32,
    pub reasons: Vec<QualityReason>,
}

impl Quality {
    pub fn passes(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// An L2-normalised face embedding. The pack that produced it travels with it so vectors
/// from different packs are never compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    pub pack: String,
    pub vector: Vec<f32>,
}

impl Embedding {
    /// Cosine similarity of two embeddings of the same pack (both are unit length).
    pub fn cosine(&self, other: &Embedding) -> Result<f32, CoreError> {
        if self.pack != other.pack || self.vector.len() != other.vector.len() {
            return Err(CoreError::PackMismatch {
                a: self.pack.clone(),
                b: other.pack.clone(),
            });
        }
        Ok(dot(&self.vector, &other.vector))
    }
}

/// Dot product; for unit vectors this is the cosine similarity.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Scales `v` to unit length in place. Returns false (and leaves `v` unchanged) for a zero vector.
pub fn l2_normalize(v: &mut [f32]) -> bool {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !(n > 0.0 && n.is_finite()) {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= n);
    true
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("embeddings come from different model packs ({a} vs {b}) and cannot be compared")]
    PackMismatch { a: String, b: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_and_disjoint_boxes() {
        let a = BBox {
            x1: 0.0,
            y1: 0.0,
            x2: 10.0,
            y2: 10.0,
        };
        let b = BBox {
            x1: 20.0,
            y1: 20.0,
            x2: 30.0,
            y2: 30.0,
        };
        assert!((a.iou(&a) - 1.0).abs() < 1e-6);
        assert_eq!(a.iou(&b), 0.0);
        let c = BBox {
            x1: 5.0,
            y1: 0.0,
            x2: 15.0,
            y2: 10.0,
        };
        assert!((a.iou(&c) - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn normalize_and_cosine() {
        let mut v = vec![3.0, 4.0];
        assert!(l2_normalize(&mut v));
        assert!((v[0] - 0.6).abs() < 1e-6);
        let mut z = vec![0.0, 0.0];
        assert!(!l2_normalize(&mut z));
        let a = Embedding {
            pack: "open".into(),
            vector: v.clone(),
        };
        let b = Embedding {
            pack: "other".into(),
            vector: v,
        };
        assert!(a.cosine(&a).unwrap() > 0.999);
        assert!(a.cosine(&b).is_err());
    }
}
