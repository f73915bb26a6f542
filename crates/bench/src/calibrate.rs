//! Score calibration on LFW: build a pack's impostor distribution from the development split
//! and check it on the evaluation protocol.
//!
//! Both steps embed images the way ingest and search do (default detection, the usable face
//! nearest the centre, no flip), so the distribution describes the scores users will see.
//! An image where no usable face is found is left out and counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use visage_vision::{
    main_face, AnalyzeOptions, Calibration, DecodeLimits, FacePipeline, PipelinePool,
};

use crate::lfw::{distinct_images, parse_pairs};

/// The calibration split: LFW's View 1 training pairs.
pub const CALIBRATION_PAIRS: &str = "pairsDevTrain.txt";
/// The evaluation split the calibration is checked on.
pub const VALIDATION_PAIRS: &str = "pairs.txt";

/// One embedded image: its path relative to the image root, its person, its vector.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub rel: String,
    pub person: String,
    pub vector: Vec<f32>,
}

fn person_of(rel: &str) -> &str {
    rel.split('/').next().unwrap_or(rel)
}

/// The embedding search would compute for an image's main face (`None` when that face is
/// unusable: another face of the photo would be someone else).
fn embed_main_face(p: &FacePipeline, path: &Path) -> Result<Option<Vec<f32>>> {
    let img = visage_vision::decode_file(path, &DecodeLimits::default())?.rgb;
    let faces = p.analyze(&img, &AnalyzeOptions::default())?;
    Ok(main_face(&faces, img.width(), img.height())
        .and_then(|i| faces[i].embedding.as_ref().map(|e| e.vector.clone())))
}

/// The distinct images of a pairs file, sorted.
fn images_of(data: &Path, pairs_file: &str) -> Result<Vec<String>> {
    let path = data.join(pairs_file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(distinct_images(&parse_pairs(&text)?))
}

fn image_root(data: &Path) -> Result<std::path::PathBuf> {
    let root = data.join("lfw-deepfunneled");
    if !root.is_dir() {
        bail!(
            "{} not found (expected the deep-funnelled LFW tree there)",
            root.display()
        );
    }
    Ok(root)
}

/// Embeds `rels` on the pool; returns the embedded images and the number without a usable face.
pub fn embed_all(
    pool: &PipelinePool,
    root: &Path,
    rels: &[String],
    progress: impl Fn(usize) + Sync,
) -> (Vec<Embedded>, Vec<String>) {
    let paths: Vec<_> = rels.iter().map(|r| root.join(r)).collect();
    let results = pool.map(&paths, |p, path| embed_main_face(p, path), progress);
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (rel, r) in rels.iter().zip(results) {
        match r {
            Ok(Some(v)) => ok.push(Embedded {
                rel: rel.clone(),
                person: person_of(rel).to_string(),
                vector: v,
            }),
            Ok(None) => failed.push(format!("{rel}: no usable face")),
            Err(e) => failed.push(format!("{rel}: {e}")),
        }
    }
    (ok, failed)
}

/// Similarities of every pair of images of different people.
pub fn impostor_scores(items: &[Embedded]) -> Vec<f32> {
    (0..items.len())
        .into_par_iter()
        .flat_map_iter(|i| {
            let a = &items[i];
            items[i + 1..]
                .iter()
                .filter(move |b| b.person != a.person)
                .map(move |b| visage_core::dot(&a.vector, &b.vector))
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct CalibrateReport {
    pub pack: String,
    pub source: String,
    pub images: usize,
    pub identities: usize,
    pub impostor_pairs: u64,
    pub failed_images: Vec<String>,
    /// Scores at which the estimate reaches common false match rates.
    pub score_at_fmr: BTreeMap<String, f32>,
    pub seconds: f64,
}

fn fmr_key(f: f64) -> String {
    format!("{f:e}")
}

const FMR_LEVELS: [f64; 5] = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6];

/// Builds the calibration of the pool's pack from every different-person pair among the
/// images of `pairsDevTrain.txt`.
pub fn calibrate(
    pool: &PipelinePool,
    data: &Path,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<(Calibration, CalibrateReport)> {
    let t0 = Instant::now();
    let root = image_root(data)?;
    let rels = images_of(data, CALIBRATION_PAIRS)?;
    let total = rels.len();
    let (items, failed) = embed_all(pool, &root, &rels, |d| progress(d, total));
    if items.len() < 100 {
        bail!(
            "only {} of {total} calibration images gave a usable face; is {} the LFW tree?",
            items.len(),
            root.display()
        );
    }
    let identities = items
        .iter()
        .map(|e| &e.person)
        .collect::<BTreeSet<_>>()
        .len();
    let scores = impostor_scores(&items);
    let source = format!(
        "LFW {CALIBRATION_PAIRS}: every different-person pair among its {} images with a usable face",
        items.len()
    );
    let pack = pool.first().pack_id();
    let cal = Calibration::from_impostor_scores(&pack, &source, items.len(), identities, &scores);
    let report = CalibrateReport {
        pack,
        source,
        images: items.len(),
        identities,
        impostor_pairs: cal.impostor_pairs,
        failed_images: failed,
        score_at_fmr: FMR_LEVELS
            .iter()
            .map(|&f| (fmr_key(f), cal.score_at_fmr(f)))
            .collect(),
        seconds: t0.elapsed().as_secs_f64(),
    };
    Ok((cal, report))
}

/// Observed false matches among a set of impostor scores at one threshold.
#[derive(Debug, Clone, Serialize)]
pub struct Observed {
    pub impostor_pairs: u64,
    pub false_matches: u64,
    pub observed_fmr: f64,
    /// observed / estimated (1.0 is perfect calibration).
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LevelCheck {
    pub estimated_fmr: f64,
    pub threshold: f32,
    pub extrapolated: bool,
    /// The 3,000 different-person pairs of the protocol.
    pub protocol_pairs: Observed,
    /// Every different-person pair among the protocol's images that are not in the
    /// calibration set.
    pub all_pairs: Observed,
}

#[derive(Debug, Clone, Serialize)]
pub struct ValidationReport {
    pub pack: String,
    pub calibration_source: String,
    pub validation_source: String,
    pub images: usize,
    /// Protocol images left out of `all_pairs` because the calibration used them.
    pub images_shared_with_calibration: usize,
    pub failed_images: Vec<String>,
    pub levels: Vec<LevelCheck>,
    pub seconds: f64,
}

fn observe(scores: &[f32], threshold: f32, estimated: f64) -> Observed {
    let fm = scores.iter().filter(|&&s| s >= threshold).count() as u64;
    let n = scores.len() as u64;
    let fmr = fm as f64 / n.max(1) as f64;
    Observed {
        impostor_pairs: n,
        false_matches: fm,
        observed_fmr: fmr,
        ratio: fmr / estimated,
    }
}

/// Checks a calibration on `pairs.txt`: at the score where the estimate says `fmr`, how often
/// do different people actually reach it? `folds` limits the check to the protocol's first
/// folds (its folds hold disjoint sets of people), `None` takes them all.
pub fn validate(
    pool: &PipelinePool,
    data: &Path,
    cal: &Calibration,
    folds: Option<usize>,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<ValidationReport> {
    let t0 = Instant::now();
    let root = image_root(data)?;
    let path = data.join(VALIDATION_PAIRS);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let all_pairs = parse_pairs(&text)?;
    let in_protocol = all_pairs.iter().map(|p| p.fold + 1).max().unwrap_or(0);
    let folds = match folds {
        None => in_protocol,
        Some(0) => bail!("--folds must be at least 1"),
        Some(f) if f > in_protocol => {
            bail!("--folds {f}: {VALIDATION_PAIRS} has {in_protocol} folds")
        }
        Some(f) => f,
    };
    let pairs: Vec<_> = all_pairs.into_iter().filter(|p| p.fold < folds).collect();
    let rels = distinct_images(&pairs);
    let total = rels.len();
    let (items, failed) = embed_all(pool, &root, &rels, |d| progress(d, total));
    let by_rel: BTreeMap<&str, &Embedded> = items.iter().map(|e| (e.rel.as_str(), e)).collect();
    let protocol: Vec<f32> = pairs
        .iter()
        .filter(|p| !p.same)
        .filter_map(
            |p| match (by_rel.get(p.a.as_str()), by_rel.get(p.b.as_str())) {
                (Some(a), Some(b)) => Some(visage_core::dot(&a.vector, &b.vector)),
                _ => None,
            },
        )
        .collect();
    let calibration_images: BTreeSet<String> =
        images_of(data, CALIBRATION_PAIRS)?.into_iter().collect();
    let unseen: Vec<Embedded> = items
        .iter()
        .filter(|e| !calibration_images.contains(&e.rel))
        .cloned()
        .collect();
    let all = impostor_scores(&unseen);
    let levels = [1e-2, 1e-3, 1e-4]
        .iter()
        .map(|&f| {
            let t = cal.score_at_fmr(f);
            LevelCheck {
                estimated_fmr: f,
                threshold: t,
                extrapolated: cal.fmr(t).extrapolated,
                protocol_pairs: observe(&protocol, t, f),
                all_pairs: observe(&all, t, f),
            }
        })
        .collect();
    Ok(ValidationReport {
        pack: pool.first().pack_id(),
        calibration_source: cal.source.clone(),
        validation_source: format!(
            "LFW {VALIDATION_PAIRS} ({}): its different-person pairs, and every different-person pair among its images not used for calibration",
            if folds == in_protocol {
                format!("all {folds} folds")
            } else {
                format!("folds 1-{folds} of {in_protocol}")
            }
        ),
        images: items.len(),
        images_shared_with_calibration: items.len() - unseen.len(),
        failed_images: failed,
        levels,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impostor_scores_skip_same_person_pairs() {
        let e = |rel: &str, v: [f32; 2]| Embedded {
            rel: rel.into(),
            person: person_of(rel).into(),
            vector: v.to_vec(),
        };
        let items = vec![
            e("A/A_0001.jpg", [1.0, 0.0]),
            e("A/A_0002.jpg", [0.0, 1.0]),
            e("B/B_0001.jpg", [0.6, 0.8]),
        ];
        let mut s = impostor_scores(&items);
        s.sort_by(f32::total_cmp);
        assert_eq!(s, vec![0.6, 0.8]);
    }
}
