//! Alignment: a least-squares similarity transform (rotation, uniform scale, translation) of
//! the five detected landmarks onto the ArcFace 112x112 template, then a bilinear warp.
//!
//! For 2-D point sets the Umeyama solution without reflection has a closed form:
//! with centred points p (source) and q (target), `a = Σ(p·q) / Σ|p|²`,
//! `b = Σ(p×q) / Σ|p|²`, and the transform is `[a -b; b a] p + t`. This is what
//! `skimage.transform.SimilarityTransform.estimate` (used by InsightFace) returns whenever the
//! best fit is a proper rotation, which is always the case for real faces.

use image::{Rgb, RgbImage};
use visage_core::Landmarks;

/// The ArcFace reference landmarks for a 112x112 crop (InsightFace `arcface_dst`).
pub const ARCFACE_112: Landmarks = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// A similarity transform `dst = [a -b; b a] src + [tx, ty]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f64,
    pub b: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Similarity {
    /// Least-squares fit mapping `src` onto `dst`. `None` when the source points coincide.
    pub fn estimate(src: &Landmarks, dst: &Landmarks) -> Option<Similarity> {
        let n = src.len() as f64;
        let mean = |pts: &Landmarks| {
            let (sx, sy) = pts
                .iter()
                .fold((0.0, 0.0), |(x, y), p| (x + p[0] as f64, y + p[1] as f64));
            (sx / n, sy / n)
        };
        let (msx, msy) = mean(src);
        let (mdx, mdy) = mean(dst);
        let (mut dot, mut cross, mut norm) = (0.0, 0.0, 0.0);
        for (s, d) in src.iter().zip(dst) {
            let (px, py) = (s[0] as f64 - msx, s[1] as f64 - msy);
            let (qx, qy) = (d[0] as f64 - mdx, d[1] as f64 - mdy);
            dot += px * qx + py * qy;
            cross += px * qy - py * qx;
            norm += px * px + py * py;
        }
        if !(norm > 1e-9) || !dot.is_finite() || !cross.is_finite() {
            return None;
        }
        let a = dot / norm;
        let b = cross / norm;
        Some(Similarity {
            a,
            b,
            tx: mdx - (a * msx - b * msy),
            ty: mdy - (b * msx + a * msy),
        })
    }

    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        let (x, y) = (p[0] as f64, p[1] as f64);
        [
            (self.a * x - self.b * y + self.tx) as f32,
            (self.b * x + self.a * y + self.ty) as f32,
        ]
    }

    pub fn scale(&self) -> f64 {
        (self.a * self.a + self.b * self.b).sqrt()
    }

    /// The inverse transform (dst -> src).
    pub fn inverse(&self) -> Similarity {
        let k = self.a * self.a + self.b * self.b;
        let (ia, ib) = (self.a / k, -self.b / k);
        Similarity {
            a: ia,
            b: ib,
            tx: -(ia * self.tx - ib * self.ty),
            ty: -(ib * self.tx + ia * self.ty),
        }
    }

    /// The 2x3 matrix `[[a, -b, tx], [b, a, ty]]`, as OpenCV's `warpAffine` takes it.
    pub fn matrix(&self) -> [[f64; 3]; 2] {
        [[self.a, -self.b, self.tx], [self.b, self.a, self.ty]]
    }
}

/// Warps `img` with `m` (source -> crop) into a `size` x `size` crop; bilinear, pixels that
/// fall outside the source are black (as `cv2.warpAffine` with a zero constant border).
pub fn warp(img: &RgbImage, m: &Similarity, size: u32) -> RgbImage {
    let inv = m.inverse();
    let (w, h) = (img.width() as i64, img.height() as i64);
    let raw = img.as_raw();
    let mut out = RgbImage::new(size, size);
    for v in 0..size {
        for u in 0..size {
            let [sx, sy] = inv.apply([u as f32, v as f32]);
            let (sx, sy) = (sx as f64, sy as f64);
            let x0 = sx.floor();
            let y0 = sy.floor();
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let mut acc = [0.0f64; 3];
            for (dy, wy) in [(0, 1.0 - fy), (1, fy)] {
                for (dx, wx) in [(0, 1.0 - fx), (1, fx)] {
                    let (x, y) = (x0 + dx, y0 + dy);
                    if x < 0 || y < 0 || x >= w || y >= h {
                        continue;
                    }
                    let i = ((y * w + x) * 3) as usize;
                    let wgt = wx * wy;
                    for c in 0..3 {
                        acc[c] += raw[i + c] as f64 * wgt;
                    }
                }
            }
            out.put_pixel(u, v, Rgb(acc.map(|x| x.round().clamp(0.0, 255.0) as u8)));
        }
    }
    out
}

/// Aligns one face: returns the 112x112 crop and the transform used. `None` for degenerate
/// landmarks (all in one point).
pub fn align_face(
    img: &RgbImage,
    landmarks: &Landmarks,
    size: u32,
) -> Option<(RgbImage, Similarity)> {
    let scale = size as f32 / 112.0;
    let dst: Landmarks = ARCFACE_112.map(|p| [p[0] * scale, p[1] * scale]);
    let m = Similarity::estimate(landmarks, &dst)?;
    Some((warp(img, &m, size), m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_similarity() {
        let truth = Similarity {
            a: 0.8 * 0.3f64.cos(),
            b: 0.8 * 0.3f64.sin(),
            tx: 12.0,
            ty: -7.0,
        };
        let src: Landmarks = [
            [100.0, 120.0],
            [160.0, 118.0],
            [130.0, 150.0],
            [108.0, 180.0],
            [155.0, 178.0],
        ];
        let dst = src.map(|p| truth.apply(p));
        let m = Similarity::estimate(&src, &dst).unwrap();
        assert!((m.a - truth.a).abs() < 1e-6 && (m.b - truth.b).abs() < 1e-6);
        assert!((m.tx - truth.tx).abs() < 1e-4 && (m.ty - truth.ty).abs() < 1e-4);
        let back = m.inverse().apply(m.apply([3.0, 4.0]));
        assert!((back[0] - 3.0).abs() < 1e-4 && (back[1] - 4.0).abs() < 1e-4);
    }

    #[test]
    fn degenerate_landmarks_are_refused() {
        let p = [[5.0, 5.0]; 5];
        assert!(Similarity::estimate(&p, &ARCFACE_112).is_none());
    }

    #[test]
    fn identity_warp_copies_pixels() {
        let mut img = RgbImage::new(112, 112);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = Rgb([x as u8, y as u8, (x ^ y) as u8]);
        }
        let id = Similarity {
            a: 1.0,
            b: 0.0,
            tx: 0.0,
            ty: 0.0,
        };
        assert_eq!(warp(&img, &id, 112), img);
    }
}
