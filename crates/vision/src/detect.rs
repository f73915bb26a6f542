//! Face detection for the supported detector kinds (YuNet, SCRFD), with a scale pyramid and
//! tiling so that faces from ~20 px to the full frame are found in images of any size.
//!
//! Every pass runs the model on one window of the image resized by a scale `s` into the
//! model's input canvas (top-left aligned, zero padding right and bottom, as the reference
//! implementations do). The first pass fits the whole image; when that scale makes the
//! smallest wanted face too small for the detector, further passes tile the image at larger
//! scales with overlapping windows. Detections from every pass are merged by NMS. A detection
//! that touches a tile edge inside the image is dropped: the overlap guarantees that face is
//! seen whole in a neighbouring tile (or, if larger than the overlap, by a coarser pass).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use visage_core::{BBox, Detection, Landmarks};

use crate::error::{Result, VisionError};
use crate::pack::{ChannelOrder, DetectorKind, DetectorSpec};
use crate::runtime::{load_model, InferenceOptions, Model};

/// The smallest face, in model-input pixels, the detectors find reliably (stride 8 heads).
const MIN_INPUT_FACE_PX: f32 = 12.0;
/// Overlap between neighbouring tiles, in model-input pixels.
const TILE_OVERLAP_PX: f32 = 160.0;

#[derive(Debug, Clone, Copy)]
pub struct DetectOptions {
    /// Smallest face (box width, original pixels) the caller wants found. Smaller values add
    /// tiled passes on large images.
    pub min_face_px: f32,
    /// Upper bound on model runs per image; beyond it the finest scale is coarsened.
    pub max_runs: usize,
    /// Overrides the pack's detector score threshold.
    pub score_threshold: Option<f32>,
    /// Largest factor by which a small image is enlarged to fill the model input.
    pub max_upscale: f32,
}

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions {
            min_face_px: 20.0,
            max_runs: 48,
            score_threshold: None,
            max_upscale: f32::INFINITY,
        }
    }
}

pub struct Detector {
    pub spec: DetectorSpec,
    model: Model,
}

/// One pass: a window of the original image and the scale it is resized by.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pass {
    x0: u32,
    y0: u32,
    w: u32,
    h: u32,
    scale: f32,
    /// Whether the window covers the whole image (then no tile-edge filtering).
    whole: bool,
}

impl Detector {
    pub fn load(
        spec: &DetectorSpec,
        path: &std::path::Path,
        opts: &InferenceOptions,
    ) -> Result<Detector> {
        let model = load_model("detector", path, opts)?;
        Ok(Detector {
            spec: spec.clone(),
            model,
        })
    }

    /// The underlying ONNX Runtime model (for benchmarks that time the bare run).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The normalised NCHW input tensor for `img` fitted whole into the canvas, as the first pass builds it.
    pub fn prepare_whole(&self, img: &RgbImage) -> Result<Vec<f32>> {
        let (w, h) = img.dimensions();
        let plan = plan_passes(
            w,
            h,
            self.spec.input_width,
            self.spec.input_height,
            &DetectOptions {
                min_face_px: 1e9,
                ..Default::default()
            },
        );
        Ok(self.prepare(img, &plan[0])?.0)
    }

    /// Detects faces in an RGB image. Boxes and landmarks are in the image's pixel coordinates.
    pub fn detect(&self, img: &RgbImage, opts: &DetectOptions) -> Result<Vec<Detection>> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        let thr = opts.score_threshold.unwrap_or(self.spec.score_threshold);
        let mut all = Vec::new();
        for pass in plan_passes(w, h, self.spec.input_width, self.spec.input_height, opts) {
            let mut dets = self.run_pass(img, &pass, thr)?;
            if !pass.whole {
                dets.retain(|d| !touches_inner_edge(&d.bbox, &pass, w, h));
            }
            all.extend(dets);
        }
        Ok(nms(all, self.spec.nms_iou))
    }

    /// Resizes the pass window into the canvas and packs the normalised NCHW tensor; also
    /// returns the resized size (the true per-axis scale after rounding).
    fn prepare(&self, img: &RgbImage, pass: &Pass) -> Result<(Vec<f32>, u32, u32)> {
        let (cw, ch) = (self.spec.input_width, self.spec.input_height);
        let rw = ((pass.w as f32 * pass.scale).round() as u32).clamp(1, cw);
        let rh = ((pass.h as f32 * pass.scale).round() as u32).clamp(1, ch);
        let resized = resize_window(img, pass, rw, rh)?;
        let input = to_nchw(
            &resized,
            rw as usize,
            rh as usize,
            cw as usize,
            ch as usize,
            self.spec.channel_order,
            &self.spec.mean,
            &self.spec.std,
        );
        Ok((input, rw, rh))
    }

    fn run_pass(&self, img: &RgbImage, pass: &Pass, thr: f32) -> Result<Vec<Detection>> {
        let (cw, ch) = (
            self.spec.input_width as usize,
            self.spec.input_height as usize,
        );
        let (input, rw, rh) = self.prepare(img, pass)?;
        let outputs = self.model.run([1, 3, ch, cw], &input)?;
        let named = |prefix: &str, stride: u32| -> Result<&[f32]> {
            let want = format!("{prefix}_{stride}");
            self.model
                .output_names
                .iter()
                .position(|n| *n == want)
                .map(|i| outputs[i].1.as_slice())
                .ok_or_else(|| VisionError::Inference {
                    model: "detector".into(),
                    detail: format!("no output named {want}"),
                })
        };
        let mut dets = Vec::new();
        for &s in &self.spec.strides {
            let cols = cw / s as usize;
            let rows = ch / s as usize;
            match self.spec.kind {
                DetectorKind::Yunet => decode_yunet(
                    named("cls", s)?,
                    named("obj", s)?,
                    named("bbox", s)?,
                    named("kps", s)?,
                    rows,
                    cols,
                    s as f32,
                    thr,
                    &mut dets,
                )?,
                DetectorKind::Scrfd => decode_scrfd(
                    named("score", s)?,
                    named("bbox", s)?,
                    named("kps", s)?,
                    rows,
                    cols,
                    self.spec.anchors_per_cell as usize,
                    s as f32,
                    thr,
                    &mut dets,
                )?,
            }
        }
        // Map from canvas to original coordinates. The true scale per axis accounts for rounding.
        let sx = rw as f32 / pass.w as f32;
        let sy = rh as f32 / pass.h as f32;
        for d in &mut dets {
            let map = |x: f32, y: f32| [x / sx + pass.x0 as f32, y / sy + pass.y0 as f32];
            let [x1, y1] = map(d.bbox.x1, d.bbox.y1);
            let [x2, y2] = map(d.bbox.x2, d.bbox.y2);
            d.bbox = BBox { x1, y1, x2, y2 };
            for p in d.landmarks.iter_mut() {
                *p = map(p[0], p[1]);
            }
        }
        Ok(dets)
    }
}

/// Which windows at which scales to run for an image of `w` x `h`.
fn plan_passes(w: u32, h: u32, cw: u32, ch: u32, opts: &DetectOptions) -> Vec<Pass> {
    let fit = (cw as f32 / w as f32)
        .min(ch as f32 / h as f32)
        .min(opts.max_upscale.max(0.01));
    let mut passes = vec![Pass {
        x0: 0,
        y0: 0,
        w,
        h,
        scale: fit,
        whole: true,
    }];
    let mut wanted = MIN_INPUT_FACE_PX / opts.min_face_px.max(1.0);
    if fit >= wanted {
        return passes;
    }
    // Coarsen the finest scale until the tiling fits the run budget.
    loop {
        let levels = pyramid(fit, wanted);
        let runs: usize = levels.iter().map(|&s| tiles(w, h, cw, ch, s).len()).sum();
        if runs < opts.max_runs.max(1) || wanted <= fit * 1.01 {
            for s in levels {
                passes.extend(tiles(w, h, cw, ch, s));
            }
            return passes;
        }
        wanted *= 0.8;
    }
}

/// Scales above `fit` up to `wanted`, at most 8x apart so every face size is covered by one level.
fn pyramid(fit: f32, wanted: f32) -> Vec<f32> {
    let mut levels = Vec::new();
    let mut s = fit;
    while s < wanted {
        s = (s * 8.0).min(wanted);
        levels.push(s);
    }
    levels
}

fn tiles(w: u32, h: u32, cw: u32, ch: u32, scale: f32) -> Vec<Pass> {
    let tw = ((cw as f32 / scale).floor() as u32).max(1);
    let th = ((ch as f32 / scale).floor() as u32).max(1);
    let ov = (TILE_OVERLAP_PX / scale) as u32;
    let starts = |total: u32, size: u32| -> Vec<u32> {
        if size >= total {
            return vec![0];
        }
        let step = size.saturating_sub(ov).max(1);
        let n = (total - size).div_ceil(step) + 1;
        // Spread tiles evenly so the last one ends exactly at the border.
        (0..n)
            .map(|i| ((total - size) as u64 * i as u64 / (n - 1).max(1) as u64) as u32)
            .collect()
    };
    let mut out = Vec::new();
    for &y0 in &starts(h, th) {
        for &x0 in &starts(w, tw) {
            out.push(Pass {
                x0,
                y0,
                w: tw.min(w - x0),
                h: th.min(h - y0),
                scale,
                whole: false,
            });
        }
    }
    out
}

fn touches_inner_edge(b: &BBox, p: &Pass, w: u32, h: u32) -> bool {
    let margin = 2.0 / p.scale;
    let (x0, y0, x1, y1) = (
        p.x0 as f32,
        p.y0 as f32,
        (p.x0 + p.w) as f32,
        (p.y0 + p.h) as f32,
    );
    (p.x0 > 0 && b.x1 <= x0 + margin)
        || (p.y0 > 0 && b.y1 <= y0 + margin)
        || (p.x0 + p.w < w && b.x2 >= x1 - margin)
        || (p.y0 + p.h < h && b.y2 >= y1 - margin)
}

/// Resizes the pass window of `img` to `rw` x `rh` (bilinear convolution, antialiased when shrinking).
fn resize_window(img: &RgbImage, pass: &Pass, rw: u32, rh: u32) -> Result<Vec<u8>> {
    let err = |e: String| VisionError::Inference {
        model: "detector".into(),
        detail: format!("resize: {e}"),
    };
    let src = ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
        .map_err(|e| err(e.to_string()))?;
    let mut dst = Image::new(rw, rh, PixelType::U8x3);
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(pass.x0 as f64, pass.y0 as f64, pass.w as f64, pass.h as f64);
    Resizer::new()
        .resize(&src, &mut dst, &opts)
        .map_err(|e| err(e.to_string()))?;
    Ok(dst.into_vec())
}

/// Packs an interleaved RGB buffer of `w` x `h` into a zero-padded `cw` x `ch` NCHW float
/// tensor with the given channel order and normalisation.
#[allow(clippy::too_many_arguments)]
pub(crate) fn to_nchw(
    rgb: &[u8],
    w: usize,
    h: usize,
    cw: usize,
    ch: usize,
    order: ChannelOrder,
    mean: &[f32; 3],
    std: &[f32; 3],
) -> Vec<f32> {
    let plane = cw * ch;
    let mut out = vec![0f32; 3 * plane];
    // Padding holds the value a zero pixel normalises to, as a zero-filled canvas would.
    for c in 0..3 {
        let v = (0.0 - mean[c]) / std[c];
        if v != 0.0 {
            out[c * plane..(c + 1) * plane]
                .iter_mut()
                .for_each(|x| *x = v);
        }
    }
    let src_channel = |c: usize| match order {
        ChannelOrder::Rgb => c,
        ChannelOrder::Bgr => 2 - c,
    };
    for c in 0..3 {
        let sc = src_channel(c);
        let (m, inv) = (mean[c], 1.0 / std[c]);
        let dst = &mut out[c * plane..(c + 1) * plane];
        for y in 0..h {
            let row = &rgb[y * w * 3..(y + 1) * w * 3];
            let drow = &mut dst[y * cw..y * cw + w];
            for (x, d) in drow.iter_mut().enumerate() {
                *d = (row[x * 3 + sc] as f32 - m) * inv;
            }
        }
    }
    out
}

fn check_len(name: &str, got: usize, want: usize) -> Result<()> {
    if got < want {
        return Err(VisionError::Inference {
            model: "detector".into(),
            detail: format!("output {name} has {got} values, expected {want}"),
        });
    }
    Ok(())
}

/// YuNet head: per cell one prediction; score = sqrt(cls * obj); box centre offsets and
/// log sizes in stride units; landmarks as offsets from the cell in stride units.
#[allow(clippy::too_many_arguments)]
fn decode_yunet(
    cls: &[f32],
    obj: &[f32],
    bbox: &[f32],
    kps: &[f32],
    rows: usize,
    cols: usize,
    s: f32,
    thr: f32,
    out: &mut Vec<Detection>,
) -> Result<()> {
    let n = rows * cols;
    check_len("cls", cls.len(), n)?;
    check_len("obj", obj.len(), n)?;
    check_len("bbox", bbox.len(), n * 4)?;
    check_len("kps", kps.len(), n * 10)?;
    for i in 0..n {
        let score = (cls[i].clamp(0.0, 1.0) * obj[i].clamp(0.0, 1.0)).sqrt();
        if score < thr || !score.is_finite() {
            continue;
        }
        let (r, c) = ((i / cols) as f32, (i % cols) as f32);
        let b = &bbox[i * 4..i * 4 + 4];
        let cx = (c + b[0]) * s;
        let cy = (r + b[1]) * s;
        let bw = b[2].exp() * s;
        let bh = b[3].exp() * s;
        let mut landmarks: Landmarks = [[0.0; 2]; 5];
        for (k, p) in landmarks.iter_mut().enumerate() {
            *p = [
                (kps[i * 10 + 2 * k] + c) * s,
                (kps[i * 10 + 2 * k + 1] + r) * s,
            ];
        }
        out.push(Detection {
            bbox: BBox {
                x1: cx - bw / 2.0,
                y1: cy - bh / 2.0,
                x2: cx + bw / 2.0,
                y2: cy + bh / 2.0,
            },
            landmarks,
            score,
        });
    }
    Ok(())
}

/// SCRFD head: `a` anchors per cell centred at (col*s, row*s); boxes as distances to the
/// four sides and landmarks as offsets, both in stride units; scores already sigmoid.
#[allow(clippy::too_many_arguments)]
fn decode_scrfd(
    score: &[f32],
    bbox: &[f32],
    kps: &[f32],
    rows: usize,
    cols: usize,
    a: usize,
    s: f32,
    thr: f32,
    out: &mut Vec<Detection>,
) -> Result<()> {
    let n = rows * cols * a;
    check_len("score", score.len(), n)?;
    check_len("bbox", bbox.len(), n * 4)?;
    check_len("kps", kps.len(), n * 10)?;
    for i in 0..n {
        let sc = score[i];
        if sc < thr || !sc.is_finite() {
            continue;
        }
        let cell = i / a;
        let ax = (cell % cols) as f32 * s;
        let ay = (cell / cols) as f32 * s;
        let b = &bbox[i * 4..i * 4 + 4];
        let mut landmarks: Landmarks = [[0.0; 2]; 5];
        for (k, p) in landmarks.iter_mut().enumerate() {
            *p = [
                ax + kps[i * 10 + 2 * k] * s,
                ay + kps[i * 10 + 2 * k + 1] * s,
            ];
        }
        out.push(Detection {
            bbox: BBox {
                x1: ax - b[0] * s,
                y1: ay - b[1] * s,
                x2: ax + b[2] * s,
                y2: ay + b[3] * s,
            },
            landmarks,
            score: sc,
        });
    }
    Ok(())
}

/// Greedy non-maximum suppression, highest score first.
pub fn nms(mut dets: Vec<Detection>, iou: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<Detection> = Vec::with_capacity(dets.len());
    for d in dets {
        if keep.iter().all(|k| k.bbox.iou(&d.bbox) <= iou) {
            keep.push(d);
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_image_is_one_pass() {
        let p = plan_passes(250, 250, 640, 640, &DetectOptions::default());
        assert_eq!(p.len(), 1);
        assert!((p[0].scale - 2.56).abs() < 1e-3);
    }

    #[test]
    fn large_image_is_tiled_and_tiles_cover_it() {
        let opts = DetectOptions::default();
        let p = plan_passes(4000, 3000, 640, 640, &opts);
        assert!(p.len() > 1 && p.len() <= opts.max_runs);
        let finest = p.iter().map(|p| p.scale).fold(0.0, f32::max);
        // Every pixel is covered by a tile of the finest scale.
        for (x, y) in [(0, 0), (3999, 2999), (2000, 1500), (3999, 0)] {
            assert!(p.iter().any(|t| t.scale == finest
                && x >= t.x0
                && x < t.x0 + t.w
                && y >= t.y0
                && y < t.y0 + t.h));
        }
    }

    #[test]
    fn extreme_aspect_ratio_is_bounded() {
        let opts = DetectOptions::default();
        let p = plan_passes(30000, 40, 640, 640, &opts);
        assert!(p.len() <= opts.max_runs, "{}", p.len());
    }

    #[test]
    fn nms_keeps_best_of_overlapping() {
        let d = |x: f32, s: f32| Detection {
            bbox: BBox {
                x1: x,
                y1: 0.0,
                x2: x + 10.0,
                y2: 10.0,
            },
            landmarks: [[0.0; 2]; 5],
            score: s,
        };
        let kept = nms(vec![d(0.0, 0.5), d(1.0, 0.9), d(50.0, 0.7)], 0.3);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.9);
    }
}

/// The recogniser's input tensor for one crop (exposed for benchmarks).
pub fn to_nchw_public(
    crop: &RgbImage,
    size: usize,
    spec: &crate::pack::RecogniserSpec,
) -> Vec<f32> {
    to_nchw(
        crop.as_raw(),
        size,
        size,
        size,
        size,
        spec.channel_order,
        &spec.mean,
        &spec.std,
    )
}
