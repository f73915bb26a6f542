//! The standard LFW verification protocol (`pairs.txt`, 10 folds x 600 pairs) through the full
//! pipeline: detect on the 250x250 deep-funnelled image, keep the face nearest the centre,
//! align, embed; for each fold the threshold is chosen on the other nine and accuracy measured
//! on the held-out one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::RgbImage;
use serde::Serialize;
use visage_vision::{
    align, most_central, AnalyzeOptions, DecodeLimits, FacePipeline, PipelinePool,
};

/// One pair of the protocol: two image paths (relative to the image root) and whether they
/// show the same person.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub a: String,
    pub b: String,
    pub same: bool,
    pub fold: usize,
}

fn image_rel(name: &str, idx: &str) -> Result<String> {
    let n: u32 = idx
        .parse()
        .with_context(|| format!("bad image number `{idx}`"))?;
    Ok(format!("{name}/{name}_{n:04}.jpg"))
}

/// The distinct images of `pairs`, sorted.
pub fn distinct_images(pairs: &[Pair]) -> Vec<String> {
    let mut rels: Vec<String> = pairs
        .iter()
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .collect();
    rels.sort();
    rels.dedup();
    rels
}

/// Parses `pairs.txt` (header `folds n`, then per fold n same pairs and n different pairs),
/// or the single-set development files (`pairsDevTrain.txt`: header `n`).
pub fn parse_pairs(text: &str) -> Result<Vec<Pair>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<usize> = lines
        .next()
        .context("empty pairs file")?
        .split_whitespace()
        .map(|t| t.parse().context("bad header"))
        .collect::<Result<_>>()?;
    let (folds, n) = match header.as_slice() {
        [f, n] => (*f, *n),
        [n] => (1, *n),
        _ => bail!("pairs header must be `folds n` or `n`"),
    };
    let mut pairs = Vec::with_capacity(folds * n * 2);
    for fold in 0..folds {
        for k in 0..2 * n {
            let line = lines
                .next()
                .with_context(|| format!("pairs file ends early in fold {fold}"))?;
            let t: Vec<&str> = line.split_whitespace().collect();
            let (a, b, same) = match t.as_slice() {
                [name, i, j] => (image_rel(name, i)?, image_rel(name, j)?, true),
                [n1, i, n2, j] => (image_rel(n1, i)?, image_rel(n2, j)?, false),
                _ => bail!("bad pairs line: {line}"),
            };
            if same != (k < n) {
                bail!(
                    "fold {fold}: expected {} pairs first: {line}",
                    if k < n { "same" } else { "different" }
                );
            }
            pairs.push(Pair { a, b, same, fold });
        }
    }
    Ok(pairs)
}

#[derive(Debug, Clone, Serialize)]
pub struct LfwReport {
    pub pack: String,
    pub protocol: String,
    pub pairs: usize,
    pub images: usize,
    pub flip: bool,
    pub max_upscale: f32,
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    pub fold_accuracies: Vec<f64>,
    pub threshold_mean: f64,
    #[serde(rename = "tar_at_far_1e-3")]
    pub tar_at_far_1e_3: f64,
    pub threshold_at_far_1e_3: f64,
    pub images_per_second: f64,
    /// Images where no face passed the default threshold and a lower one was used.
    pub low_threshold_detections: usize,
    /// Images where nothing was detected and a fixed central alignment was used.
    pub central_fallbacks: usize,
    pub failed_images: Vec<String>,
    pub threads: usize,
}

/// Embedding of the face nearest the centre, with the detection fallback used.
fn embed_central(
    p: &FacePipeline,
    path: &Path,
    flip: bool,
    max_upscale: f32,
) -> Result<(Vec<f32>, u8)> {
    let img = visage_vision::decode_file(path, &DecodeLimits::default())?.rgb;
    let mut opts = AnalyzeOptions {
        embed: false,
        ..Default::default()
    };
    opts.detect.max_upscale = max_upscale;
    for (level, thr) in [(0u8, None), (1, Some(0.3)), (1, Some(0.1))] {
        opts.detect.score_threshold = thr;
        let faces = p.analyze(&img, &opts)?;
        if let Some(i) = most_central(&faces, img.width(), img.height()) {
            let v = p.embed_crops(&[&faces[i].crop], flip)?;
            return Ok((v[0].vector.clone(), level));
        }
    }
    // Deep-funnelled LFW centres the face; map the template onto the central region.
    let crop = central_crop(&img, p.pack.recogniser.input_size);
    let v = p.embed_crops(&[&crop], flip)?;
    Ok((v[0].vector.clone(), 2))
}

fn central_crop(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let side = w.min(h) * 0.45;
    let (x0, y0) = (w / 2.0 - side / 2.0, h / 2.0 - side / 2.0);
    let lm = align::ARCFACE_112.map(|p| [x0 + p[0] / 112.0 * side, y0 + p[1] / 112.0 * side]);
    align::align_face(img, &lm, size)
        .map(|(c, _)| c)
        .unwrap_or_else(|| RgbImage::new(size, size))
}

/// Embeds every distinct image of `pairs` (relative to `root`) on the pool.
pub fn embed_images(
    pool: &PipelinePool,
    root: &Path,
    rels: &[String],
    flip: bool,
    max_upscale: f32,
    progress: impl Fn(usize) + Sync,
) -> (BTreeMap<String, (Vec<f32>, u8)>, Vec<String>) {
    let paths: Vec<PathBuf> = rels.iter().map(|r| root.join(r)).collect();
    let results = pool.map(
        &paths,
        |p, path| embed_central(p, path, flip, max_upscale),
        progress,
    );
    let mut ok = BTreeMap::new();
    let mut failed = Vec::new();
    for (rel, r) in rels.iter().zip(results) {
        match r {
            Ok(v) => {
                ok.insert(rel.clone(), v);
            }
            Err(e) => failed.push(format!("{rel}: {e}")),
        }
    }
    (ok, failed)
}

/// Accuracy of "same iff sim >= t".
fn accuracy(scores: &[(f32, bool)], t: f32) -> f64 {
    let correct = scores.iter().filter(|(s, same)| (*s >= t) == *same).count();
    correct as f64 / scores.len().max(1) as f64
}

/// The threshold with the best accuracy on `scores` (candidates: midpoints of sorted scores).
pub fn best_threshold(scores: &[(f32, bool)]) -> f32 {
    let mut best = (f64::MIN, 0.0f32);
    // Sweep: count correct as the threshold passes each score.
    let mut sorted: Vec<(f32, bool)> = scores.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total_same = sorted.iter().filter(|s| s.1).count();
    // threshold below everything: all predicted same
    let mut correct = total_same as i64;
    let n = sorted.len();
    let mut i = 0;
    let mut cand = sorted.first().map(|s| s.0 - 1e-4).unwrap_or(0.0);
    loop {
        let acc = correct as f64 / n.max(1) as f64;
        if acc > best.0 {
            best = (acc, cand);
        }
        if i >= n {
            break;
        }
        // Move threshold above the group of equal scores at i.
        let s = sorted[i].0;
        while i < n && sorted[i].0 == s {
            correct += if sorted[i].1 { -1 } else { 1 };
            i += 1;
        }
        cand = if i < n {
            (s + sorted[i].0) / 2.0
        } else {
            s + 1e-4
        };
    }
    best.1
}

/// Genuine acceptance rate at the threshold where at most `far` of impostor pairs pass.
pub fn tar_at_far(scores: &[(f32, bool)], far: f64) -> (f64, f32) {
    let mut imp: Vec<f32> = scores.iter().filter(|s| !s.1).map(|s| s.0).collect();
    imp.sort_by(|a, b| b.total_cmp(a));
    let allowed = (far * imp.len() as f64).floor() as usize;
    // Threshold strictly above the (allowed+1)-th highest impostor score.
    let t = imp.get(allowed).map(|s| s.next_up()).unwrap_or(f32::MIN);
    let gen: Vec<f32> = scores.iter().filter(|s| s.1).map(|s| s.0).collect();
    let tar = gen.iter().filter(|&&s| s >= t).count() as f64 / gen.len().max(1) as f64;
    (tar, t)
}

/// Runs the 10-fold protocol.
pub fn run(
    pool: &PipelinePool,
    data: &Path,
    pairs_file: &str,
    flip: bool,
    max_upscale: f32,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<LfwReport> {
    let pairs_path = data.join(pairs_file);
    let text = std::fs::read_to_string(&pairs_path)
        .with_context(|| format!("cannot read {}", pairs_path.display()))?;
    let pairs = parse_pairs(&text)?;
    let root = data.join("lfw-deepfunneled");
    if !root.is_dir() {
        bail!(
            "{} not found (expected the deep-funnelled LFW tree there)",
            root.display()
        );
    }
    let rels = distinct_images(&pairs);
    let total = rels.len();
    let t0 = Instant::now();
    let (emb, failed) = embed_images(pool, &root, &rels, flip, max_upscale, |d| {
        progress(d, total)
    });
    let ips = rels.len() as f64 / t0.elapsed().as_secs_f64();
    let first = pool.first();
    let mut scores_by_fold: BTreeMap<usize, Vec<(f32, bool)>> = BTreeMap::new();
    for p in &pairs {
        // A pair with a failed image counts as a wrong answer: score below every threshold
        // for a same pair, above for a different pair.
        let s = match (emb.get(&p.a), emb.get(&p.b)) {
            (Some(a), Some(b)) => visage_core::dot(&a.0, &b.0),
            _ => {
                if p.same {
                    -2.0
                } else {
                    2.0
                }
            }
        };
        scores_by_fold.entry(p.fold).or_default().push((s, p.same));
    }
    let folds: Vec<usize> = scores_by_fold.keys().copied().collect();
    let mut accs = Vec::new();
    let mut thrs = Vec::new();
    for &k in &folds {
        let train: Vec<(f32, bool)> = folds
            .iter()
            .filter(|&&f| f != k)
            .flat_map(|f| scores_by_fold[f].iter().copied())
            .collect();
        let t = if train.is_empty() {
            best_threshold(&scores_by_fold[&k])
        } else {
            best_threshold(&train)
        };
        thrs.push(t as f64);
        accs.push(accuracy(&scores_by_fold[&k], t));
    }
    let mean = accs.iter().sum::<f64>() / accs.len() as f64;
    let std = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / accs.len() as f64).sqrt();
    let all: Vec<(f32, bool)> = scores_by_fold.values().flatten().copied().collect();
    let (tar, t_far) = tar_at_far(&all, 1e-3);
    Ok(LfwReport {
        pack: first.pack_id(),
        protocol: pairs_file.to_string(),
        pairs: pairs.len(),
        images: rels.len(),
        flip,
        max_upscale,
        accuracy_mean: mean,
        accuracy_std: std,
        fold_accuracies: accs,
        threshold_mean: thrs.iter().sum::<f64>() / thrs.len() as f64,
        tar_at_far_1e_3: tar,
        threshold_at_far_1e_3: t_far as f64,
        images_per_second: ips,
        low_threshold_detections: emb.values().filter(|v| v.1 == 1).count(),
        central_fallbacks: emb.values().filter(|v| v.1 == 2).count(),
        failed_images: failed,
        threads: pool.workers.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_pair_formats() {
        let t = "2 1\nA 1 2\nB 1 C 3\nD 4 5\nE 1 F 2\n";
        let p = parse_pairs(t).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(
            p[0],
            Pair {
                a: "A/A_0001.jpg".into(),
                b: "A/A_0002.jpg".into(),
                same: true,
                fold: 0
            }
        );
        assert!(!p[1].same && p[1].b == "C/C_0003.jpg");
        assert_eq!(p[3].fold, 1);
        assert!(parse_pairs("1\nA 1 2\nB 1 C 2\n").is_ok());
        assert!(parse_pairs("2 1\nA 1 2\n").is_err());
        assert!(parse_pairs("1 1\nB 1 C 2\nA 1 2\n").is_err());
    }

    #[test]
    fn threshold_and_far() {
        let s = vec![
            (0.9, true),
            (0.8, true),
            (0.4, true),
            (0.5, false),
            (0.1, false),
            (0.2, false),
        ];
        let t = best_threshold(&s);
        assert!((accuracy(&s, t) - 5.0 / 6.0).abs() < 1e-9, "t={t}");
        let perfect = vec![(0.9, true), (0.1, false)];
        assert_eq!(accuracy(&perfect, best_threshold(&perfect)), 1.0);
        let (tar, thr) = tar_at_far(&s, 0.0);
        assert!(thr > 0.5);
        assert!((tar - 2.0 / 3.0).abs() < 1e-9);
    }
}
