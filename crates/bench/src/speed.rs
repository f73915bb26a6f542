//! Inference speed of the pack's models, measured the way `bench/speed_python.py` measures
//! onnxruntime's Python binding, so the two can be compared side by side: the bare model run
//! on a prepared tensor (pre-processing excluded), warm-up first, median of many runs.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use visage_vision::{DecodeLimits, FacePipeline};

#[derive(Debug, Clone, Serialize)]
pub struct SpeedReport {
    pub runtime: String,
    pub pack: String,
    pub threads: usize,
    pub detect_ms: f64,
    pub embed_ms_batch1: f64,
    pub embed_ms_per_face_batch16: f64,
    /// Whole `detect` call on the 640x480 image: resize, tensor packing, run, decode, NMS.
    pub detect_end_to_end_ms: f64,
    /// Alignment (similarity fit + bilinear warp) of one face.
    pub align_ms: f64,
}

pub fn median_ms(mut f: impl FnMut() -> Result<()>, warmup: usize, runs: usize) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

pub fn run(p: &FacePipeline, image: &Path, threads: usize, runs: usize) -> Result<SpeedReport> {
    let img = visage_vision::decode_file(image, &DecodeLimits::default())?.rgb;
    let img = image::imageops::resize(&img, 640, 480, image::imageops::FilterType::Triangle);
    let det_in = p.detector.prepare_whole(&img)?;
    let (cw, ch) = (
        p.detector.spec.input_width as usize,
        p.detector.spec.input_height as usize,
    );
    let detect_ms = median_ms(
        || {
            p.detector
                .model()
                .run([1, 3, ch, cw], &det_in)
                .map(|_| ())
                .map_err(Into::into)
        },
        10,
        runs,
    )?;
    let detect_end_to_end_ms = median_ms(
        || {
            p.detector
                .detect(&img, &Default::default())
                .map(|_| ())
                .map_err(Into::into)
        },
        5,
        runs,
    )?;
    let faces = p.analyze(
        &img,
        &visage_vision::AnalyzeOptions {
            embed: false,
            ..Default::default()
        },
    )?;
    let crop = faces
        .first()
        .map(|f| f.crop.clone())
        .unwrap_or_else(|| image::RgbImage::new(112, 112));
    let lm = faces
        .first()
        .map(|f| f.detection.landmarks)
        .unwrap_or(visage_vision::align::ARCFACE_112);
    let align_ms = median_ms(
        || {
            visage_vision::align::align_face(&img, &lm, 112)
                .map(|_| ())
                .ok_or_else(|| anyhow::anyhow!("degenerate"))
        },
        5,
        runs,
    )?;
    let s = p.recogniser.spec.input_size as usize;
    let one = visage_vision::detect::to_nchw_public(&crop, s, &p.recogniser.spec);
    let embed_ms_batch1 = median_ms(
        || {
            p.recogniser
                .model()
                .run([1, 3, s, s], &one)
                .map(|_| ())
                .map_err(Into::into)
        },
        10,
        runs,
    )?;
    let sixteen: Vec<f32> = (0..16).flat_map(|_| one.iter().copied()).collect();
    let b16 = median_ms(
        || {
            p.recogniser
                .model()
                .run([16, 3, s, s], &sixteen)
                .map(|_| ())
                .map_err(Into::into)
        },
        3,
        (runs / 4).max(10),
    )?;
    Ok(SpeedReport {
        runtime: "visage-rust-ort".into(),
        pack: p.pack_id(),
        threads,
        detect_ms,
        embed_ms_batch1,
        embed_ms_per_face_batch16: b16 / 16.0,
        detect_end_to_end_ms,
        align_ms,
    })
}
