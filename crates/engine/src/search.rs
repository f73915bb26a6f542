//! Probe search: a photo in, its faces out, each with ranked matches and provenance.

use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;
use visage_gallery::{Filter, Gallery, Hit, SearchQuery, SearchTrace};
use visage_vision::{AnalyzeOptions, Calibration, DecodeLimits, FacePipeline};

#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Collections to search (default: every collection pinned to the pipeline's pack).
    pub collections: Vec<String>,
    pub k: usize,
    pub threshold: Option<f32>,
    /// Return only matches whose estimated false match rate is at most this (needs a
    /// calibrated pack; combined with `threshold`, the stricter wins).
    pub max_fmr: Option<f64>,
    pub filter: Filter,
    /// Search with every usable probe face (default: only the most central one).
    pub all_faces: bool,
    pub analyze: AnalyzeOptions,
    pub limits: DecodeLimits,
}

/// Smallest probe face looked for by default, in pixels. Smaller faces are too small to
/// identify reliably, and looking for them tiles a 1080p photo into many detector passes
/// (p50 detection 92 ms at 20 px vs 11 ms at 40 px on 2 cores, docs/BENCHMARKS.md).
pub const PROBE_MIN_FACE_PX: f32 = 40.0;

impl Default for SearchOptions {
    fn default() -> Self {
        let mut analyze = AnalyzeOptions::default();
        analyze.detect.min_face_px = PROBE_MIN_FACE_PX;
        SearchOptions {
            collections: vec![],
            k: 10,
            threshold: None,
            max_fmr: None,
            filter: Filter::default(),
            all_faces: false,
            analyze,
            limits: DecodeLimits::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeFace {
    pub bbox: [f32; 4],
    pub det_score: f32,
    pub quality: visage_core::Quality,
    /// Present when the face could not be used, with its quality reason codes.
    pub unusable: Option<Vec<String>>,
    pub hits: Vec<Hit>,
    pub traces: Vec<SearchTrace>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    pub pack: String,
    pub collections: Vec<String>,
    pub faces_searched: u64,
    /// Where the false match rates come from; `None` when the pack is not calibrated.
    pub calibration: Option<CalibrationInfo>,
    /// The similarity threshold applied (from `threshold` and `max_fmr`).
    pub threshold: Option<f32>,
    pub warnings: Vec<String>,
    pub probe_faces: Vec<ProbeFace>,
    pub timings_ms: Timings,
}

/// A summary of a pack's calibration, reported with every search.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationInfo {
    pub source: String,
    pub impostor_pairs: u64,
    /// Scores at which the estimated false match rate reaches 1e-3, 1e-4, 1e-5.
    pub score_at_fmr_1e_3: f32,
    pub score_at_fmr_1e_4: f32,
    pub score_at_fmr_1e_5: f32,
}

impl CalibrationInfo {
    pub fn of(c: &Calibration) -> CalibrationInfo {
        CalibrationInfo {
            source: c.source.clone(),
            impostor_pairs: c.impostor_pairs,
            score_at_fmr_1e_3: c.score_at_fmr(1e-3),
            score_at_fmr_1e_4: c.score_at_fmr(1e-4),
            score_at_fmr_1e_5: c.score_at_fmr(1e-5),
        }
    }
}

/// The threshold `threshold` and `max_fmr` ask for together (the stricter one).
pub fn effective_threshold(
    cal: Option<&Calibration>,
    threshold: Option<f32>,
    max_fmr: Option<f64>,
) -> Result<Option<f32>> {
    let from_fmr = match max_fmr {
        None => None,
        Some(f) if !(f > 0.0 && f <= 1.0) => bail!("max_fmr must be in (0, 1], got {f}"),
        Some(f) => match cal {
            Some(c) => Some(c.score_at_fmr(f)),
            None => bail!(
                "max_fmr needs a calibrated pack; run `visage models calibrate` (or use a similarity threshold)"
            ),
        },
    };
    Ok(match (threshold, from_fmr) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    })
}

/// Fills in each hit's false match rate and expected false matches for a search over
/// `searched` faces.
pub fn calibrate_hits(cal: Option<&Calibration>, hits: &mut [Hit], searched: u64) {
    let Some(c) = cal else { return };
    for h in hits {
        let e = c.fmr(h.score);
        h.fmr = Some(e.fmr);
        h.fmr_extrapolated = Some(e.extrapolated);
        h.expected_false_matches = Some(e.fmr * searched as f64);
    }
}

/// Where a search's time went, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub decode: f64,
    /// Detection, alignment and quality assessment of every face in the photo.
    pub detect: f64,
    /// Embedding of the probe faces searched with.
    pub embed: f64,
    /// Gallery search in all: vector index, exact re-scoring, provenance joins, opt-out checks.
    pub search: f64,
    /// Of which: the vector index (or the exact scan of filtered candidates).
    pub index: f64,
    /// Of which: loading the matches' provenance from SQLite.
    pub join: f64,
    pub total: f64,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Searches the gallery with the faces of an encoded photo.
pub fn search_image(
    gallery: &Gallery,
    p: &FacePipeline,
    bytes: &[u8],
    opts: &SearchOptions,
) -> Result<SearchResult> {
    let pack = p.pack_id();
    let mut colls = Vec::new();
    if opts.collections.is_empty() {
        colls.extend(
            gallery
                .collections()?
                .into_iter()
                .filter(|c| c.pack == pack),
        );
        if colls.is_empty() {
            bail!("no collection in this gallery uses pack {pack}");
        }
    } else {
        for name in &opts.collections {
            let Some(c) = gallery.collection(name)? else {
                bail!("no collection named {name:?}")
            };
            if c.pack != pack {
                bail!(
                    "collection {name:?} uses pack {}, the probe was embedded with {pack}",
                    c.pack
                );
            }
            colls.push(c);
        }
    }
    let cal = p.pack.calibration.as_ref();
    let supp = crate::optout::SuppressionList::load(gallery, p)?;
    let threshold = effective_threshold(cal, opts.threshold, opts.max_fmr)?;
    let mut warnings = Vec::new();
    if cal.is_none() {
        warnings.push(format!(
            "pack {pack} is not calibrated: matches carry no false match rate (`visage models calibrate`)"
        ));
    }
    let mut timings = Timings::default();
    let t_all = Instant::now();
    let t = Instant::now();
    let img = visage_vision::decode_bytes(bytes, &opts.limits)?;
    timings.decode = ms(t);
    let t = Instant::now();
    let analyze = AnalyzeOptions {
        embed: false,
        ..opts.analyze
    };
    let mut faces = p.analyze(&img.rgb, &analyze)?;
    timings.detect = ms(t);
    // The main face, usable or not: falling back to another face of a group photo would
    // answer for someone else; an unusable main face is reported with its reasons.
    let chosen: Vec<usize> = if opts.all_faces {
        (0..faces.len()).collect()
    } else {
        visage_vision::main_face(&faces, img.rgb.width(), img.rgb.height())
            .into_iter()
            .collect()
    };
    // Only the faces searched with are embedded (a crowd photo costs one embedding).
    let t = Instant::now();
    let usable: Vec<usize> = chosen
        .iter()
        .copied()
        .filter(|&i| faces[i].quality.passes())
        .collect();
    if !usable.is_empty() {
        let crops: Vec<&image::RgbImage> = usable.iter().map(|&i| &faces[i].crop).collect();
        let embs = p.embed_crops(&crops, opts.analyze.flip)?;
        for (i, e) in usable.into_iter().zip(embs) {
            faces[i].embedding = Some(e);
        }
    }
    timings.embed = ms(t);
    let t = Instant::now();
    let mut faces_searched = 0u64;
    for c in &colls {
        faces_searched += gallery.indexed_faces(c.id)?;
    }
    let mut probe_faces = Vec::new();
    for i in chosen {
        let f = &faces[i];
        let b = &f.detection.bbox;
        let mut pf = ProbeFace {
            bbox: [b.x1, b.y1, b.x2, b.y2],
            det_score: f.detection.score,
            quality: f.quality.clone(),
            unusable: None,
            hits: vec![],
            traces: vec![],
        };
        match &f.embedding {
            None => {
                pf.unusable = Some(
                    f.quality
                        .reasons
                        .iter()
                        .map(|r| r.code().to_string())
                        .collect(),
                )
            }
            // Someone who opted out is not searched for.
            Some(e) if !supp.is_empty() && supp.matches(&e.vector) => {
                pf.unusable = Some(vec!["opted_out".into()]);
            }
            Some(e) => {
                let mut searched = 0u64;
                for c in &colls {
                    let (hits, trace) = gallery.search(&SearchQuery {
                        collection_id: c.id,
                        vector: &e.vector,
                        k: opts.k,
                        threshold,
                        filter: opts.filter.clone(),
                    })?;
                    searched += match trace.filter_matches {
                        Some(n) => n as u64,
                        None => gallery.indexed_faces(c.id)?,
                    };
                    pf.hits.extend(hits);
                    pf.traces.push(trace);
                }
                if !supp.is_empty() {
                    let mut kept = Vec::with_capacity(pf.hits.len());
                    for h in std::mem::take(&mut pf.hits) {
                        if !gallery
                            .face_vector(h.face.id)?
                            .is_some_and(|v| supp.matches(&v))
                        {
                            kept.push(h);
                        }
                    }
                    pf.hits = kept;
                }
                calibrate_hits(cal, &mut pf.hits, searched);
                pf.hits
                    .sort_by(|a, b| b.score.total_cmp(&a.score).then(a.face.id.cmp(&b.face.id)));
                pf.hits.truncate(opts.k);
            }
        }
        probe_faces.push(pf);
    }
    timings.search = ms(t);
    for pf in &probe_faces {
        for tr in &pf.traces {
            timings.index += tr.index_ms;
            timings.join += tr.join_ms;
        }
    }
    timings.total = ms(t_all);
    Ok(SearchResult {
        pack,
        collections: colls.into_iter().map(|c| c.name).collect(),
        faces_searched,
        calibration: cal.map(CalibrationInfo::of),
        threshold,
        warnings,
        probe_faces,
        timings_ms: timings,
    })
}
