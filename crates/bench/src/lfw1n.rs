//! LFW 1:N identification (open-set), through the same face path as ingest and search.
//!
//! Protocol, over the deep-funnelled LFW tree (`<DIR>/lfw-deepfunneled/<Person>/<Person>_NNNN.jpg`):
//! identities come from listing the tree (file names sorted byte-wise); for every person with
//! two or more images the first image is enrolled in the gallery and every other image is a
//! probe; every person with exactly one image is enrolled as a distractor. On the complete
//! tree that is 1,680 + 4,069 = 5,749 gallery images and 7,484 probes.
//!
//! Each image is decoded, analysed with [`FacePipeline::analyze`] (default options: the
//! quality gate decides which faces are embedded) and the photo's main face
//! ([`visage_vision::main_face`]) is kept, as the engine's search does with a probe photo. Scores are cosine similarities (embeddings are unit length, so the dot
//! product) computed exhaustively against the whole gallery.
//!
//! Every probe is used twice:
//! - as a *mated* search: where does its mate (the gallery image of the same person) rank?
//! - as a *non-mated* search, leave-one-out: the same search with its mate removed from the
//!   gallery, i.e. the top score over gallery entries of other identities.
//!
//! Failures: an image where no face could be used (decode error, no detection, or no face
//! passing the quality gate) is absent from the gallery when enrolled (its probes can then
//! never be found), and is a failed search when used as a probe. A failed search is a miss at
//! every rank and every threshold in the mated count, and it stays in the denominator of the
//! non-mated count without ever producing a false positive (it returned no candidate, which
//! for a non-mated search is the right answer; this is the convention of NIST FRVT 1:N).
//!
//! The pure parts (protocol split, metrics from a score matrix) are separate from the
//! embedding I/O and unit-tested below.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use visage_vision::{main_face, AnalyzeOptions, DecodeLimits, FacePipeline, PipelinePool};

/// Image folder inside the LFW directory.
pub const IMAGE_DIR: &str = "lfw-deepfunneled";
/// Optional `name<TAB>count` listing used to cross-check the tree.
pub const COUNTS_FILE: &str = "identities_counts.tsv";

/// One person of the tree: name and image paths relative to the image root, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub images: Vec<String>,
}

/// One image of the protocol: its path (relative to the image root) and identity index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub rel: String,
    pub id: usize,
}

/// The split of a list of identities into gallery and probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    /// Identity names; [`Entry::id`] indexes this.
    pub names: Vec<String>,
    /// First image of each person with two or more images, then the distractors.
    pub gallery: Vec<Entry>,
    /// Every other image of the people with two or more images.
    pub probes: Vec<Entry>,
    /// People with two or more images (each has exactly one mate in the gallery).
    pub mated_people: usize,
    /// People with exactly one image.
    pub distractors: usize,
}

fn is_image(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    l.ends_with(".jpg") || l.ends_with(".jpeg") || l.ends_with(".png")
}

/// Lists the identities under `root` (one folder per person, image files inside), both
/// sorted byte-wise by name. Hidden entries and non-image files are skipped; folders without
/// an image are skipped with a warning.
pub fn list_identities(root: &Path, warn: &mut dyn FnMut(String)) -> Result<Vec<Identity>> {
    let rd = std::fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))?;
    let mut out = Vec::new();
    let mut stray_files = 0usize;
    for e in rd {
        let e = e.with_context(|| format!("cannot list {}", root.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if !e.path().is_dir() {
            stray_files += 1;
            continue;
        }
        let dir = e.path();
        let mut images: Vec<String> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|f| f.ok())
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .filter(|f| !f.starts_with('.') && is_image(f))
            .collect();
        if images.is_empty() {
            warn(format!("{}: no image, skipped", dir.display()));
            continue;
        }
        images.sort();
        let images = images.into_iter().map(|f| format!("{name}/{f}")).collect();
        out.push(Identity { name, images });
    }
    if stray_files > 0 {
        warn(format!(
            "{}: {stray_files} file(s) outside person folders ignored",
            root.display()
        ));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Differences between the tree and an `identities_counts.tsv` text (`name<TAB>count` lines;
/// lines whose count does not parse, such as a header, are skipped). Empty when they agree.
pub fn cross_check_counts(identities: &[Identity], tsv: &str) -> Vec<String> {
    let listed: BTreeMap<&str, usize> = tsv
        .lines()
        .filter_map(|l| {
            let mut t = l.split('\t');
            let name = t.next()?.trim();
            let n = t.next()?.trim().parse().ok()?;
            Some((name, n))
        })
        .collect();
    let tree: BTreeMap<&str, usize> = identities
        .iter()
        .map(|i| (i.name.as_str(), i.images.len()))
        .collect();
    let mut out = Vec::new();
    let summarise = |what: &str, names: Vec<String>| {
        let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
        format!(
            "{} {what}: {}{}",
            names.len(),
            shown.join(", "),
            if names.len() > 5 { ", ..." } else { "" }
        )
    };
    let missing: Vec<String> = listed
        .keys()
        .filter(|n| !tree.contains_key(*n))
        .map(|n| n.to_string())
        .collect();
    if !missing.is_empty() {
        out.push(summarise(
            "people listed in the counts file but absent from the tree",
            missing,
        ));
    }
    let extra: Vec<String> = tree
        .keys()
        .filter(|n| !listed.contains_key(*n))
        .map(|n| n.to_string())
        .collect();
    if !extra.is_empty() {
        out.push(summarise(
            "people in the tree but not in the counts file",
            extra,
        ));
    }
    let differ: Vec<String> = tree
        .iter()
        .filter_map(|(n, c)| match listed.get(n) {
            Some(l) if l != c => Some(format!("{n} (tree {c}, file {l})")),
            _ => None,
        })
        .collect();
    if !differ.is_empty() {
        out.push(summarise("image counts differ", differ));
    }
    out
}

/// Splits identities (sorted by name) into gallery and probes; see the module documentation.
///
/// `limit_people`: a smoke-test option that changes the protocol: keep only the first N
/// people with two or more images and the first N people with one image (by name).
pub fn split(identities: &[Identity], limit_people: Option<usize>) -> Protocol {
    let lim = limit_people.unwrap_or(usize::MAX);
    let mated: Vec<&Identity> = identities
        .iter()
        .filter(|i| i.images.len() >= 2)
        .take(lim)
        .collect();
    let singles: Vec<&Identity> = identities
        .iter()
        .filter(|i| i.images.len() == 1)
        .take(lim)
        .collect();
    let mut names = Vec::new();
    let mut gallery = Vec::new();
    let mut probes = Vec::new();
    for i in &mated {
        let id = names.len();
        names.push(i.name.clone());
        gallery.push(Entry {
            rel: i.images[0].clone(),
            id,
        });
        probes.extend(i.images[1..].iter().map(|rel| Entry {
            rel: rel.clone(),
            id,
        }));
    }
    for i in &singles {
        let id = names.len();
        names.push(i.name.clone());
        gallery.push(Entry {
            rel: i.images[0].clone(),
            id,
        });
    }
    Protocol {
        names,
        gallery,
        probes,
        mated_people: mated.len(),
        distractors: singles.len(),
    }
}

/// What one probe's search found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Rank of the mate (1 = top) and its score; `None` when the probe failed or its mate is
    /// absent from the gallery.
    pub mate: Option<(usize, f32)>,
    /// Top score over gallery entries of other identities (the leave-one-out non-mated
    /// search); `None` when the probe failed or there is no such entry.
    pub nonmate_top: Option<f32>,
    /// Gallery index of that top-scoring other-identity entry.
    pub nonmate_best: Option<usize>,
}

impl Outcome {
    /// A probe without a usable face.
    pub const FAILED: Outcome = Outcome {
        mate: None,
        nonmate_top: None,
        nonmate_best: None,
    };
}

/// The outcome of one probe of identity `probe_id` from its scores against the gallery,
/// whose identities are `gallery_ids` (same order; the mate appears at most once).
///
/// Ties are counted against the probe: the mate's rank is 1 + the number of other-identity
/// entries scoring at least as high as the mate, so a mate tied with a non-mate at the top
/// has rank 2.
pub fn outcome(scores: &[f32], gallery_ids: &[usize], probe_id: usize) -> Outcome {
    debug_assert_eq!(scores.len(), gallery_ids.len());
    let mate_score = scores
        .iter()
        .zip(gallery_ids)
        .find(|(_, &g)| g == probe_id)
        .map(|(s, _)| *s);
    let mut top: Option<(f32, usize)> = None;
    let mut above = 0usize;
    for (i, (&s, &g)) in scores.iter().zip(gallery_ids).enumerate() {
        if g == probe_id {
            continue;
        }
        if top.is_none_or(|(t, _)| s > t) {
            top = Some((s, i));
        }
        if mate_score.is_some_and(|m| s >= m) {
            above += 1;
        }
    }
    Outcome {
        mate: mate_score.map(|m| (above + 1, m)),
        nonmate_top: top.map(|t| t.0),
        nonmate_best: top.map(|t| t.1),
    }
}

/// Outcomes of every probe from a score matrix (`scores[p][g]`); `None` rows are failed
/// probes.
pub fn outcomes(
    scores: &[Option<Vec<f32>>],
    gallery_ids: &[usize],
    probe_ids: &[usize],
) -> Vec<Outcome> {
    scores
        .iter()
        .zip(probe_ids)
        .map(|(row, &id)| match row {
            Some(r) => outcome(r, gallery_ids, id),
            None => Outcome::FAILED,
        })
        .collect()
}

/// Fraction of searches whose mate is within the top `k` (failed searches are misses).
pub fn rank_k(outcomes: &[Outcome], k: usize) -> f64 {
    let hits = outcomes
        .iter()
        .filter(|o| o.mate.is_some_and(|(r, _)| r <= k))
        .count();
    hits as f64 / outcomes.len().max(1) as f64
}

/// FPIR(T): fraction of non-mated searches whose top score is >= `t` (failed searches count
/// in the denominator, never in the numerator).
pub fn fpir(outcomes: &[Outcome], t: f32) -> f64 {
    let n = outcomes
        .iter()
        .filter(|o| o.nonmate_top.is_some_and(|s| s >= t))
        .count();
    n as f64 / outcomes.len().max(1) as f64
}

/// FNIR(T): fraction of mated searches where the mate is not at rank 1 with a score >= `t`.
pub fn fnir(outcomes: &[Outcome], t: f32) -> f64 {
    let hits = outcomes
        .iter()
        .filter(|o| o.mate.is_some_and(|(r, s)| r == 1 && s >= t))
        .count();
    1.0 - hits as f64 / outcomes.len().max(1) as f64
}

/// The threshold for a target FPIR: the smallest `T` with `FPIR(T) <= target`.
///
/// With `n` non-mated searches and their top scores sorted descending `s_1 >= s_2 >= ...`,
/// at most `a = floor(target * n)` of them may reach `T`. When fewer than `a + 1` searches
/// have a score, every threshold qualifies and the answer is `-inf` (everything is accepted).
/// Otherwise `T` is the next representable `f32` above `s_(a+1)`: any `T <= s_(a+1)` lets at
/// least `a + 1` searches through, and the next float above it lets through only the
/// searches scoring strictly above `s_(a+1)` (fewer than `a + 1`, fewer still when `s_a`
/// ties with `s_(a+1)`: ties are never split).
pub fn threshold_at_fpir(outcomes: &[Outcome], target: f64) -> f32 {
    let mut top: Vec<f32> = outcomes.iter().filter_map(|o| o.nonmate_top).collect();
    top.sort_by(|a, b| b.total_cmp(a));
    // The epsilon keeps e.g. 0.01 * 300 = 3.0000000000000004 or 2.9999999999999996 at 3.
    let allowed = (target * outcomes.len() as f64 + 1e-9).floor().max(0.0) as usize;
    match top.get(allowed) {
        Some(s) => s.next_up(),
        None => f32::NEG_INFINITY,
    }
}

/// One point of the DET curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DetPoint {
    /// The FPIR asked for.
    pub fpir_target: f64,
    /// The FPIR reached at `threshold` (<= `fpir_target`).
    pub fpir: f64,
    pub fnir: f64,
    /// `-1` (the cosine's lower bound) stands for "accept everything" (`-inf`).
    pub threshold: f64,
}

fn det_point(outcomes: &[Outcome], target: f64) -> DetPoint {
    let t = threshold_at_fpir(outcomes, target);
    DetPoint {
        fpir_target: target,
        fpir: fpir(outcomes, t),
        fnir: fnir(outcomes, t),
        threshold: (t as f64).max(-1.0),
    }
}

/// `n` FPIR values spaced evenly in log scale from `lo` to `hi` (both included).
pub fn log_space(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if n < 2 {
        return vec![lo];
    }
    let (a, b) = (lo.log10(), hi.log10());
    (0..n)
        .map(|i| 10f64.powf(a + (b - a) * i as f64 / (n - 1) as f64))
        .collect()
}

/// Identification metrics computed from the outcomes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub rank1: f64,
    pub rank10: f64,
    #[serde(rename = "fnir_at_fpir_0.01")]
    pub fnir_at_fpir_1e_2: f64,
    #[serde(rename = "threshold_at_fpir_0.01")]
    pub threshold_at_fpir_1e_2: f64,
    /// The FPIR actually reached at that threshold.
    #[serde(rename = "fpir_at_threshold_0.01")]
    pub fpir_reached_1e_2: f64,
    #[serde(rename = "fnir_at_fpir_0.001")]
    pub fnir_at_fpir_1e_3: f64,
    #[serde(rename = "threshold_at_fpir_0.001")]
    pub threshold_at_fpir_1e_3: f64,
    #[serde(rename = "fpir_at_threshold_0.001")]
    pub fpir_reached_1e_3: f64,
    /// FNIR against FPIR at 50 log-spaced FPIR targets from 1e-4 to 1.
    pub det: Vec<DetPoint>,
}

pub fn metrics(outcomes: &[Outcome]) -> Metrics {
    let p2 = det_point(outcomes, 1e-2);
    let p3 = det_point(outcomes, 1e-3);
    Metrics {
        rank1: rank_k(outcomes, 1),
        rank10: rank_k(outcomes, 10),
        fnir_at_fpir_1e_2: p2.fnir,
        threshold_at_fpir_1e_2: p2.threshold,
        fpir_reached_1e_2: p2.fpir,
        fnir_at_fpir_1e_3: p3.fnir,
        threshold_at_fpir_1e_3: p3.threshold,
        fpir_reached_1e_3: p3.fpir,
        det: log_space(1e-4, 1.0, 50)
            .into_iter()
            .map(|t| det_point(outcomes, t))
            .collect(),
    }
}

/// Why an image has no embedding.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub image: String,
    /// `gallery` or `probe`.
    pub role: &'static str,
    pub reason: String,
}

/// A leave-one-out search and the other-identity gallery image it scored highest.
#[derive(Debug, Clone, Serialize)]
pub struct NonMatedHit {
    pub probe: String,
    pub gallery: String,
    pub score: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Lfw1nReport {
    pub pack: String,
    pub protocol: String,
    pub data: PathBuf,
    /// Set when `--limit-people` restricted the protocol (a smoke test, not the protocol).
    pub limit_people: Option<usize>,
    /// People found in the tree, and among them those used.
    pub people_in_tree: usize,
    pub images_in_tree: usize,
    pub mated_people: usize,
    pub distractors: usize,
    /// Gallery images of the protocol (one per person used), enrolled or not.
    pub gallery_size: usize,
    /// Gallery images with a usable face (the gallery actually searched).
    pub gallery_enrolled: usize,
    /// Probe images (= mated searches = leave-one-out non-mated searches).
    pub probes: usize,
    pub probes_searched: usize,
    /// Probes whose mate is absent from the gallery (its gallery image failed).
    pub probes_without_mate: usize,
    pub gallery_failures: usize,
    pub probe_failures: usize,
    #[serde(flatten)]
    pub metrics: Metrics,
    pub failed_images: Vec<Failure>,
    /// The non-mated searches with the highest top scores (label noise and look-alikes
    /// show up here), highest first.
    pub highest_non_mated: Vec<NonMatedHit>,
    pub warnings: Vec<String>,
    pub failure_policy: String,
    pub images_per_second: f64,
    pub embed_seconds: f64,
    pub score_seconds: f64,
    pub elapsed_seconds: f64,
    pub threads: usize,
    pub workers: usize,
}

/// The embedding of the photo's main face ([`visage_vision::main_face`]), the way a search
/// picks its probe face. The inner `Err` says why the image has no usable main face (nothing
/// detected, or the main face failed the quality gate: another face of the photo would be
/// someone else); the outer one is a decode or inference error.
pub fn embed_image(p: &FacePipeline, path: &Path) -> Result<std::result::Result<Vec<f32>, String>> {
    let img = visage_vision::decode_file(path, &DecodeLimits::default())?.rgb;
    let faces = p.analyze(&img, &AnalyzeOptions::default())?;
    let main = main_face(&faces, img.width(), img.height());
    Ok(match main.and_then(|i| faces[i].embedding.as_ref()) {
        Some(e) => Ok(e.vector.clone()),
        None if faces.is_empty() => Err("no face detected".into()),
        None => {
            let i = main.expect("faces is not empty");
            let codes: Vec<&str> = faces[i].quality.reasons.iter().map(|r| r.code()).collect();
            Err(format!(
                "{} face(s) detected; the main one failed the quality gate ({})",
                faces.len(),
                codes.join(", ")
            ))
        }
    })
}

/// The image root `data/lfw-deepfunneled`, or an error naming the path that is missing.
pub fn image_root(data: &Path) -> Result<PathBuf> {
    if !data.is_dir() {
        bail!("LFW folder {} not found", data.display());
    }
    let root = data.join(IMAGE_DIR);
    if !root.is_dir() {
        bail!(
            "{} is not an LFW folder: {} not found (--data must be the folder holding \
             {IMAGE_DIR}/<Person>/<Person>_0001.jpg)",
            data.display(),
            root.display()
        );
    }
    Ok(root)
}

/// Runs the protocol on the LFW folder `data` (holding `lfw-deepfunneled/`).
/// `threads` is only reported. `warn` receives warnings as they arise; `progress` is called
/// with (images embedded, total).
pub fn run(
    pool: &PipelinePool,
    data: &Path,
    limit_people: Option<usize>,
    threads: usize,
    warn: &mut dyn FnMut(String),
    progress: impl Fn(usize, usize) + Sync,
) -> Result<Lfw1nReport> {
    let t_all = Instant::now();
    let root = image_root(data)?;
    let mut warnings = Vec::new();
    let mut warn_both = |w: String| {
        warn(w.clone());
        warnings.push(w);
    };
    let identities = list_identities(&root, &mut warn_both)?;
    if identities.is_empty() {
        bail!(
            "{} holds no person folder with images: not an LFW tree",
            root.display()
        );
    }
    let counts = data.join(COUNTS_FILE);
    match std::fs::read_to_string(&counts) {
        Ok(tsv) => {
            for w in cross_check_counts(&identities, &tsv) {
                warn_both(format!("{} disagrees with the tree: {w}", counts.display()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn_both(format!("cannot read {}: {e}", counts.display())),
    }
    let proto = split(&identities, limit_people);
    if proto.mated_people == 0 {
        bail!(
            "{}: no person has two or more images, nothing to search",
            root.display()
        );
    }

    // Embed gallery and probes in one pass over the pool.
    let rels: Vec<&str> = proto
        .gallery
        .iter()
        .chain(&proto.probes)
        .map(|e| e.rel.as_str())
        .collect();
    let paths: Vec<PathBuf> = rels.iter().map(|r| root.join(r)).collect();
    let total = paths.len();
    let t_embed = Instant::now();
    let results = pool.map(
        &paths,
        |p, path| match embed_image(p, path) {
            Ok(r) => r,
            Err(e) => Err(format!("{e:#}")),
        },
        |d| progress(d, total),
    );
    let embed_seconds = t_embed.elapsed().as_secs_f64();
    let n_gallery = proto.gallery.len();
    let mut failed_images = Vec::new();
    let mut gallery_vecs: Vec<Vec<f32>> = Vec::new();
    let mut gallery_ids: Vec<usize> = Vec::new();
    let mut gallery_rels: Vec<&str> = Vec::new();
    let mut probe_vecs: Vec<Option<Vec<f32>>> = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        let (entry, role) = if i < n_gallery {
            (&proto.gallery[i], "gallery")
        } else {
            (&proto.probes[i - n_gallery], "probe")
        };
        match r {
            Ok(v) if role == "gallery" => {
                gallery_vecs.push(v);
                gallery_ids.push(entry.id);
                gallery_rels.push(&entry.rel);
            }
            Ok(v) => probe_vecs.push(Some(v)),
            Err(reason) => {
                failed_images.push(Failure {
                    image: entry.rel.clone(),
                    role,
                    reason,
                });
                if role == "probe" {
                    probe_vecs.push(None);
                }
            }
        }
    }

    // Exhaustive cosine scores, one probe per task.
    let t_score = Instant::now();
    let probe_ids: Vec<usize> = proto.probes.iter().map(|e| e.id).collect();
    let outs: Vec<Outcome> = probe_vecs
        .par_iter()
        .zip(&probe_ids)
        .map(|(v, &id)| match v {
            Some(v) => {
                let scores: Vec<f32> = gallery_vecs
                    .iter()
                    .map(|g| visage_core::dot(v, g))
                    .collect();
                outcome(&scores, &gallery_ids, id)
            }
            None => Outcome::FAILED,
        })
        .collect();
    let score_seconds = t_score.elapsed().as_secs_f64();
    let mut highest: Vec<NonMatedHit> = outs
        .iter()
        .zip(&proto.probes)
        .filter_map(|(o, p)| {
            Some(NonMatedHit {
                probe: p.rel.clone(),
                gallery: gallery_rels[o.nonmate_best?].to_string(),
                score: o.nonmate_top?,
            })
        })
        .collect();
    highest.sort_by(|a, b| b.score.total_cmp(&a.score));
    highest.truncate(20);
    let enrolled: std::collections::HashSet<usize> = gallery_ids.iter().copied().collect();
    let gallery_failures = failed_images.iter().filter(|f| f.role == "gallery").count();
    let probe_failures = failed_images.len() - gallery_failures;
    Ok(Lfw1nReport {
        pack: pool.first().pack_id(),
        protocol: "lfw-1n: gallery = first image of each person with >=2 images + each \
                   single-image person (distractors); probes = the other images; \
                   non-mated = leave-one-out (mate removed)"
            .into(),
        data: data.to_path_buf(),
        limit_people,
        people_in_tree: identities.len(),
        images_in_tree: identities.iter().map(|i| i.images.len()).sum(),
        mated_people: proto.mated_people,
        distractors: proto.distractors,
        gallery_size: n_gallery,
        gallery_enrolled: gallery_vecs.len(),
        probes: proto.probes.len(),
        probes_searched: proto.probes.len() - probe_failures,
        probes_without_mate: probe_ids.iter().filter(|id| !enrolled.contains(id)).count(),
        gallery_failures,
        probe_failures,
        metrics: metrics(&outs),
        failed_images,
        highest_non_mated: highest,
        warnings,
        failure_policy: "image without a usable face: absent from the gallery when enrolled; \
                         as a probe a miss at every rank and threshold, and a non-mated search \
                         with no candidate (in the FPIR denominator, never a false positive)"
            .into(),
        images_per_second: total as f64 / embed_seconds.max(1e-9),
        embed_seconds,
        score_seconds,
        elapsed_seconds: t_all.elapsed().as_secs_f64(),
        threads,
        workers: pool.workers.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(name: &str, n: usize) -> Identity {
        Identity {
            name: name.into(),
            images: (1..=n)
                .map(|i| format!("{name}/{name}_{i:04}.jpg"))
                .collect(),
        }
    }

    #[test]
    fn split_follows_the_protocol() {
        let ids = vec![ident("A", 3), ident("B", 1), ident("C", 2), ident("D", 1)];
        let p = split(&ids, None);
        assert_eq!(p.names, ["A", "C", "B", "D"]);
        assert_eq!(p.mated_people, 2);
        assert_eq!(p.distractors, 2);
        let g: Vec<&str> = p.gallery.iter().map(|e| e.rel.as_str()).collect();
        assert_eq!(
            g,
            [
                "A/A_0001.jpg",
                "C/C_0001.jpg",
                "B/B_0001.jpg",
                "D/D_0001.jpg"
            ]
        );
        let pr: Vec<(&str, usize)> = p.probes.iter().map(|e| (e.rel.as_str(), e.id)).collect();
        assert_eq!(
            pr,
            [
                ("A/A_0002.jpg", 0),
                ("A/A_0003.jpg", 0),
                ("C/C_0002.jpg", 1)
            ]
        );
        let l = split(&ids, Some(1));
        assert_eq!(l.names, ["A", "B"]);
        assert_eq!(l.gallery.len(), 2);
        assert_eq!(l.probes.len(), 2);
    }

    #[test]
    fn counts_cross_check() {
        let ids = vec![ident("A", 3), ident("B", 1)];
        assert!(cross_check_counts(&ids, "A\t3\nB\t1\n").is_empty());
        assert!(cross_check_counts(&ids, "name\tcount\nA\t3\nB\t1\n").is_empty());
        let w = cross_check_counts(&ids, "A\t2\nC\t1\n");
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("absent from the tree: C"));
        assert!(w[1].contains("not in the counts file: B"));
        assert!(w[2].contains("A (tree 3, file 2)"));
    }

    #[test]
    fn lists_a_tree() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "B/B_0002.jpg",
            "B/B_0001.jpg",
            "A/A_0001.jpg",
            "A/notes.txt",
        ] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        std::fs::create_dir_all(d.path().join("Empty")).unwrap();
        std::fs::write(d.path().join("README"), b"x").unwrap();
        let mut w = Vec::new();
        let ids = list_identities(d.path(), &mut |s| w.push(s)).unwrap();
        assert_eq!(ids, vec![ident("A", 1), ident("B", 2)]);
        assert_eq!(w.len(), 2, "{w:?}");
    }

    // Gallery identities for the hand-made matrices: people 0, 1, 2 (mated), 3, 4 (distractors).
    const G: [usize; 5] = [0, 1, 2, 3, 4];

    #[test]
    fn ranks_and_ties() {
        // probe of 0: mate 0.9 beats everything -> rank 1, non-mated top 0.5
        let o = outcome(&[0.9, 0.5, 0.1, 0.2, 0.3], &G, 0);
        assert_eq!(o.mate, Some((1, 0.9)));
        assert_eq!(o.nonmate_top, Some(0.5));
        assert_eq!(o.nonmate_best, Some(1));
        // probe of 1: 0.7 and 0.6 above the mate 0.4 -> rank 3
        let o = outcome(&[0.7, 0.4, 0.6, 0.1, 0.0], &G, 1);
        assert_eq!(o.mate, Some((3, 0.4)));
        assert_eq!(o.nonmate_top, Some(0.7));
        // tie with a non-mate counts against the probe: rank 2
        let o = outcome(&[0.1, 0.2, 0.8, 0.8, 0.0], &G, 2);
        assert_eq!(o.mate, Some((2, 0.8)));
        assert_eq!(o.nonmate_top, Some(0.8));
        assert_eq!(o.nonmate_best, Some(3));
        // mate absent from the gallery (its gallery image failed)
        let o = outcome(&[0.3, 0.2], &[1, 3], 0);
        assert_eq!(o.mate, None);
        assert_eq!(o.nonmate_top, Some(0.3));
    }

    /// Six probes on the 5-entry gallery, answers computed by hand:
    ///
    /// | probe | id | row                         | mate rank, score | non-mated top |
    /// |-------|----|-----------------------------|------------------|---------------|
    /// | p0    | 0  | .90 .50 .10 .20 .30         | 1, .90           | .50           |
    /// | p1    | 0  | .60 .20 .10 .70 .65         | 3, .60           | .70           |
    /// | p2    | 1  | .10 .80 .30 .20 .00         | 1, .80           | .30           |
    /// | p3    | 2  | .10 .20 .40 .40 .00         | 2, .40 (tie)     | .40           |
    /// | p4    | 2  | failed                      | miss             | none          |
    /// | p5    | 1  | .20 .55 .10 .00 .00         | 1, .55           | .20           |
    fn matrix() -> Vec<Outcome> {
        let rows = vec![
            Some(vec![0.9, 0.5, 0.1, 0.2, 0.3]),
            Some(vec![0.6, 0.2, 0.1, 0.7, 0.65]),
            Some(vec![0.1, 0.8, 0.3, 0.2, 0.0]),
            Some(vec![0.1, 0.2, 0.4, 0.4, 0.0]),
            None,
            Some(vec![0.2, 0.55, 0.1, 0.0, 0.0]),
        ];
        outcomes(&rows, &G, &[0, 0, 1, 2, 2, 1])
    }

    #[test]
    fn rank_metrics_by_hand() {
        let o = matrix();
        assert_eq!(o[1].mate, Some((3, 0.6)));
        assert_eq!(o[3].mate, Some((2, 0.4)));
        assert_eq!(o[4], Outcome::FAILED);
        // rank 1: p0, p2, p5 = 3/6; rank 2 adds p3; rank 3 adds p1; p4 never.
        assert_eq!(rank_k(&o, 1), 0.5);
        assert_eq!(rank_k(&o, 2), 4.0 / 6.0);
        assert_eq!(rank_k(&o, 10), 5.0 / 6.0);
    }

    #[test]
    fn threshold_rule_by_hand() {
        let o = matrix();
        // non-mated tops: .70 .50 .40 .30 .20 (+ one failed search), n = 6
        assert_eq!(fpir(&o, 0.4), 3.0 / 6.0); // .70 .50 .40
        assert_eq!(fpir(&o, 0.71), 0.0);
        assert_eq!(fpir(&o, -1.0), 5.0 / 6.0); // the failed search never counts
                                               // FPIR <= 1/6: one search may pass -> T just above the 2nd highest (.50)
        let t = threshold_at_fpir(&o, 1.0 / 6.0);
        assert_eq!(t, 0.5f32.next_up());
        assert_eq!(fpir(&o, t), 1.0 / 6.0);
        // FNIR at T: rank-1 mates scoring > .50 are p0 (.90), p2 (.80), p5 (.55) -> 3/6 miss
        assert_eq!(fnir(&o, t), 0.5);
        // target 0.3 -> floor(1.8) = 1 allowed: same threshold
        assert_eq!(threshold_at_fpir(&o, 0.3), t);
        // FPIR <= 1% of 6 searches: none may pass -> just above .70; p0 and p2 pass
        let t0 = threshold_at_fpir(&o, 0.01);
        assert_eq!(t0, 0.7f32.next_up());
        assert_eq!(fpir(&o, t0), 0.0);
        assert!((fnir(&o, t0) - 4.0 / 6.0).abs() < 1e-12);
        // 5 scored searches; allowing 5 or more accepts everything
        assert_eq!(threshold_at_fpir(&o, 5.0 / 6.0), f32::NEG_INFINITY);
        assert_eq!(threshold_at_fpir(&o, 1.0), f32::NEG_INFINITY);
        assert_eq!(fnir(&o, f32::NEG_INFINITY), 0.5); // = 1 - rank1
    }

    #[test]
    fn threshold_ties_are_not_split() {
        // non-mated tops .8 .8 .5 .1 (n = 4); target 1/4 allows one search but the top two
        // tie, so the smallest T with FPIR <= 1/4 lies above both: FPIR 0.
        let o: Vec<Outcome> = [0.8f32, 0.8, 0.5, 0.1]
            .iter()
            .map(|&s| Outcome {
                mate: Some((1, 0.9)),
                nonmate_top: Some(s),
                nonmate_best: Some(0),
            })
            .collect();
        let t = threshold_at_fpir(&o, 0.25);
        assert_eq!(t, 0.8f32.next_up());
        assert_eq!(fpir(&o, t), 0.0);
        // allowing two: just above .5, and both .8 pass
        let t2 = threshold_at_fpir(&o, 0.5);
        assert_eq!(t2, 0.5f32.next_up());
        assert_eq!(fpir(&o, t2), 0.5);
        // a threshold equal to a score accepts it (>=)
        assert_eq!(fpir(&o, 0.5), 0.75);
    }

    #[test]
    fn metrics_and_det() {
        let o = matrix();
        let m = metrics(&o);
        assert_eq!(m.rank1, 0.5);
        assert_eq!(m.rank10, 5.0 / 6.0);
        // 1% and 0.1% of 6 searches: none may pass -> T above .70
        assert_eq!(m.threshold_at_fpir_1e_2, 0.7f32.next_up() as f64);
        assert!((m.fnir_at_fpir_1e_2 - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(m.fpir_reached_1e_3, 0.0);
        assert_eq!(m.det.len(), 50);
        assert!((m.det[0].fpir_target - 1e-4).abs() < 1e-12);
        assert!((m.det[49].fpir_target - 1.0).abs() < 1e-12);
        for w in m.det.windows(2) {
            assert!(w[1].fpir_target > w[0].fpir_target);
            assert!(w[1].fnir <= w[0].fnir, "FNIR falls as FPIR grows");
            assert!(w[1].threshold <= w[0].threshold);
        }
        for p in &m.det {
            assert!(p.fpir <= p.fpir_target + 1e-12);
            assert!((0.0..=1.0).contains(&p.fnir));
        }
        // at FPIR 1 everything is accepted: FNIR = 1 - rank1, threshold reported as -1
        assert_eq!(m.det[49].fnir, 0.5);
        assert_eq!(m.det[49].threshold, -1.0);
        let v = serde_json::to_value(&m).unwrap();
        for k in [
            "rank1",
            "rank10",
            "fnir_at_fpir_0.01",
            "fnir_at_fpir_0.001",
            "det",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }
}
