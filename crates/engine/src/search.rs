//! Probe search: a photo in, its faces out, each with ranked matches and provenance.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{bail, Result};
use serde::{Serialize, Serializer};
use visage_gallery::{Collection, FaceStore, Filter, Hit, SearchQuery, SearchTrace};
use visage_vision::{AnalyzeOptions, Calibration, DecodeLimits, FacePipeline};

use crate::optout::SuppressionList;

/// Which faces of a probe photo are searched with.
///
/// The default is [`FaceChoice::Main`]: an investigator searches for one person, and searching
/// every face of a group or crowd photo would also search the bystanders (more people looked
/// up than the case needs, more candidates to review, and every returned face is written to
/// the audit log). The result lists every detected face with its index, so another face can
/// be chosen and searched explicitly with [`FaceChoice::Index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaceChoice {
    /// The photo's main face (among the largest, the nearest the centre), usable or not.
    #[default]
    Main,
    /// Every detected face.
    All,
    /// One face, by its `index` in the result's `detected_faces` (faces are numbered left to
    /// right, then top to bottom, so the same photo gives the same numbers).
    Index(usize),
}

impl FromStr for FaceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<FaceChoice, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "main" | "" => Ok(FaceChoice::Main),
            "all" => Ok(FaceChoice::All),
            n => n.parse().map(FaceChoice::Index).map_err(|_| {
                format!("faces must be `main`, `all` or a face index (0, 1, ...), got {s:?}")
            }),
        }
    }
}

impl fmt::Display for FaceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaceChoice::Main => f.write_str("main"),
            FaceChoice::All => f.write_str("all"),
            FaceChoice::Index(i) => write!(f, "{i}"),
        }
    }
}

/// `"main"`, `"all"` or the index as a number.
impl Serialize for FaceChoice {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            FaceChoice::Index(i) => s.serialize_u64(*i as u64),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

/// A face index beyond the faces detected in the probe photo.
#[derive(Debug, Clone)]
pub struct FaceIndexError {
    pub index: usize,
    pub detected: usize,
}

impl FaceIndexError {
    /// The stable error code.
    pub const CODE: &'static str = "face_index_out_of_range";
}

impl fmt::Display for FaceIndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "face index {} is out of range: {} face(s) were detected in the probe (indexes 0 to {})",
            self.index,
            self.detected,
            self.detected.saturating_sub(1)
        )
    }
}

impl std::error::Error for FaceIndexError {}

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
    /// Which probe faces to search with (default: the main face).
    pub faces: FaceChoice,
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
            faces: FaceChoice::Main,
            analyze,
            limits: DecodeLimits::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeFace {
    /// The face's index in `detected_faces`.
    pub index: usize,
    pub bbox: [f32; 4],
    pub det_score: f32,
    pub quality: visage_core::Quality,
    /// Present when the face could not be used, with its quality reason codes.
    pub unusable: Option<Vec<String>>,
    pub hits: Vec<Hit>,
    /// The same hits grouped by subject and by gallery photo.
    pub groups: HitGroups,
    pub traces: Vec<SearchTrace>,
}

/// Hits grouped two ways, each group best first (hits are sorted by score, so a group's
/// first hit is its best).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HitGroups {
    /// Faces labelled with the same subject together; unlabelled faces each form a group of
    /// their own (`subject` absent).
    pub by_subject: Vec<SubjectGroup>,
    /// Faces from the same gallery photo together.
    pub by_image: Vec<ImageGroup>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SubjectGroup {
    pub subject: Option<visage_gallery::gallery::SubjectRef>,
    pub collection: String,
    pub best_score: f32,
    /// False match rate of the best hit (when calibrated).
    pub best_fmr: Option<f64>,
    /// The group's face ids, best first (each is in `hits`).
    pub face_ids: Vec<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImageGroup {
    pub image_id: i64,
    pub collection: String,
    pub uri: Option<String>,
    pub best_score: f32,
    pub face_ids: Vec<i64>,
}

impl HitGroups {
    pub fn of(hits: &[Hit]) -> HitGroups {
        let mut g = HitGroups::default();
        for h in hits {
            let f = &h.face;
            let same_subject = |s: &&mut SubjectGroup| {
                s.collection == f.collection
                    && matches!((&s.subject, &f.subject), (Some(a), Some(b)) if a.id == b.id)
            };
            match g.by_subject.iter_mut().find(same_subject) {
                Some(s) => s.face_ids.push(f.id),
                None => g.by_subject.push(SubjectGroup {
                    subject: f.subject.clone(),
                    collection: f.collection.clone(),
                    best_score: h.score,
                    best_fmr: h.fmr,
                    face_ids: vec![f.id],
                }),
            }
            let same_image = |i: &&mut ImageGroup| i.image_id == f.image.id;
            match g.by_image.iter_mut().find(same_image) {
                Some(i) => i.face_ids.push(f.id),
                None => g.by_image.push(ImageGroup {
                    image_id: f.image.id,
                    collection: f.collection.clone(),
                    uri: f.image.uri.clone(),
                    best_score: h.score,
                    face_ids: vec![f.id],
                }),
            }
        }
        g
    }
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
    /// The faces searched with, as chosen by `faces`.
    pub faces: FaceChoice,
    /// Every face detected in the probe, numbered left to right (then top to bottom): the
    /// indexes `faces` accepts.
    pub detected_faces: Vec<DetectedFace>,
    pub probe_faces: Vec<ProbeFace>,
    pub timings_ms: Timings,
}

/// A face detected in the probe photo, searched with or not.
#[derive(Debug, Clone, Serialize)]
pub struct DetectedFace {
    pub index: usize,
    pub bbox: [f32; 4],
    pub det_score: f32,
    pub quality: visage_core::Quality,
    /// Passes the quality gate (only usable faces can be searched with).
    pub usable: bool,
    /// This search used it (it is in `probe_faces`).
    pub searched: bool,
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

/// What the probe searches of one request share: the collections (all of the pipeline's pack
/// unless named), the calibration, the suppression list and the effective threshold.
pub struct Searcher<'a> {
    gallery: &'a dyn FaceStore,
    pub pack: String,
    pub colls: Vec<Collection>,
    /// Faces each of `colls` holds (same order), counted once per request: a cluster backend
    /// asks its vector server.
    indexed: Vec<u64>,
    pub cal: Option<&'a Calibration>,
    supp: SuppressionList,
    pub threshold: Option<f32>,
    pub warnings: Vec<String>,
    k: usize,
    filter: Filter,
}

impl<'a> Searcher<'a> {
    /// Resolves the collections and threshold of `opts` (errors: unknown collection, another
    /// pack, `max_fmr` without calibration) and loads the suppression list.
    pub fn new(
        gallery: &'a dyn FaceStore,
        p: &'a FacePipeline,
        opts: &SearchOptions,
    ) -> Result<Self> {
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
        let supp = SuppressionList::from_store(gallery, p)?;
        let threshold = effective_threshold(cal, opts.threshold, opts.max_fmr)?;
        let mut warnings = Vec::new();
        if cal.is_none() {
            warnings.push(format!(
                "pack {pack} is not calibrated: matches carry no false match rate (`visage models calibrate`)"
            ));
        }
        let indexed = colls
            .iter()
            .map(|c| gallery.indexed_faces(c.id))
            .collect::<Result<_>>()?;
        Ok(Searcher {
            gallery,
            pack,
            colls,
            indexed,
            cal,
            supp,
            threshold,
            warnings,
            k: opts.k,
            filter: opts.filter.clone(),
        })
    }

    /// Faces indexed in the searched collections.
    pub fn faces_searched(&self) -> Result<u64> {
        Ok(self.indexed.iter().sum())
    }

    /// Whether a probe vector belongs to someone who opted out (never searched for).
    pub fn opted_out(&self, v: &[f32]) -> bool {
        !self.supp.is_empty() && self.supp.matches(v)
    }

    /// The best `k` matches of one person given by one or more probe vectors (e.g. the best
    /// faces of a video track): each vector searches every collection, a face found by several
    /// keeps its best score, opted-out faces are dropped. False match rates are calibrated
    /// for the comparisons made: faces searched x vectors (each vector is one more chance of
    /// a false match), so `expected_false_matches` stays an upper estimate.
    pub fn search(&self, vectors: &[&[f32]]) -> Result<(Vec<Hit>, Vec<SearchTrace>)> {
        let mut best: HashMap<i64, Hit> = HashMap::new();
        let mut traces = Vec::new();
        let mut searched = 0u64;
        for v in vectors {
            for (c, &indexed) in self.colls.iter().zip(&self.indexed) {
                let (hits, trace) = self.gallery.search_traced(&SearchQuery {
                    collection_id: c.id,
                    vector: v,
                    k: self.k,
                    threshold: self.threshold,
                    filter: self.filter.clone(),
                })?;
                searched += match trace.filter_matches {
                    Some(n) => n as u64,
                    None => indexed,
                };
                for h in hits {
                    match best.get(&h.face.id) {
                        Some(b) if b.score >= h.score => {}
                        _ => {
                            best.insert(h.face.id, h);
                        }
                    }
                }
                traces.push(trace);
            }
        }
        let mut hits: Vec<Hit> = best.into_values().collect();
        if !self.supp.is_empty() {
            let mut kept = Vec::with_capacity(hits.len());
            for h in hits {
                if !self
                    .gallery
                    .face_vector(h.face.id)?
                    .is_some_and(|v| self.supp.matches(&v))
                {
                    kept.push(h);
                }
            }
            hits = kept;
        }
        calibrate_hits(self.cal, &mut hits, searched);
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.face.id.cmp(&b.face.id)));
        hits.truncate(self.k);
        Ok((hits, traces))
    }
}

/// Searches the gallery with the faces of an encoded photo chosen by `opts.faces`.
/// Errors: the decoder's ([`visage_vision::DecodeError`]), [`FaceIndexError`] for an index
/// beyond the detected faces (none detected is no error: `probe_faces` is then empty).
pub fn search_image(
    gallery: &dyn FaceStore,
    p: &FacePipeline,
    bytes: &[u8],
    opts: &SearchOptions,
) -> Result<SearchResult> {
    let searcher = Searcher::new(gallery, p, opts)?;
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
    // Numbered left to right, then top to bottom: what a person reading the photo expects,
    // and the same numbers for the same photo.
    faces.sort_by(|a, b| {
        let (a, b) = (&a.detection.bbox, &b.detection.bbox);
        a.x1.total_cmp(&b.x1).then(a.y1.total_cmp(&b.y1))
    });
    timings.detect = ms(t);
    // The main face, usable or not: falling back to another face of a group photo would
    // answer for someone else; an unusable main face is reported with its reasons.
    let chosen: Vec<usize> = match opts.faces {
        FaceChoice::All => (0..faces.len()).collect(),
        FaceChoice::Main => visage_vision::main_face(&faces, img.rgb.width(), img.rgb.height())
            .into_iter()
            .collect(),
        FaceChoice::Index(i) if i < faces.len() => vec![i],
        FaceChoice::Index(_) if faces.is_empty() => vec![],
        FaceChoice::Index(index) => {
            return Err(FaceIndexError {
                index,
                detected: faces.len(),
            }
            .into())
        }
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
    let faces_searched = searcher.faces_searched()?;
    let mut probe_faces = Vec::new();
    for &i in &chosen {
        let f = &faces[i];
        let b = &f.detection.bbox;
        let mut pf = ProbeFace {
            index: i,
            bbox: [b.x1, b.y1, b.x2, b.y2],
            det_score: f.detection.score,
            quality: f.quality.clone(),
            unusable: None,
            hits: vec![],
            groups: HitGroups::default(),
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
            Some(e) if searcher.opted_out(&e.vector) => {
                pf.unusable = Some(vec!["opted_out".into()]);
            }
            Some(e) => {
                let (hits, traces) = searcher.search(&[&e.vector])?;
                pf.groups = HitGroups::of(&hits);
                pf.hits = hits;
                pf.traces = traces;
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
    let detected_faces = faces
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let b = &f.detection.bbox;
            DetectedFace {
                index: i,
                bbox: [b.x1, b.y1, b.x2, b.y2],
                det_score: f.detection.score,
                quality: f.quality.clone(),
                usable: f.quality.passes(),
                searched: chosen.contains(&i),
            }
        })
        .collect();
    timings.total = ms(t_all);
    Ok(SearchResult {
        pack: searcher.pack,
        collections: searcher.colls.into_iter().map(|c| c.name).collect(),
        faces_searched,
        calibration: searcher.cal.map(CalibrationInfo::of),
        threshold: searcher.threshold,
        warnings: searcher.warnings,
        faces: opts.faces,
        detected_faces,
        probe_faces,
        timings_ms: timings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn face_choice_parses_and_prints() {
        for (s, c) in [
            ("main", FaceChoice::Main),
            ("ALL", FaceChoice::All),
            ("", FaceChoice::Main),
            (" 3 ", FaceChoice::Index(3)),
            ("0", FaceChoice::Index(0)),
        ] {
            assert_eq!(s.parse::<FaceChoice>().unwrap(), c, "{s:?}");
        }
        for bad in ["-1", "first", "1.5", "2,3"] {
            assert!(bad.parse::<FaceChoice>().is_err(), "{bad:?}");
        }
        assert_eq!(FaceChoice::Index(2).to_string(), "2");
        assert_eq!(
            serde_json::to_string(&[FaceChoice::Main, FaceChoice::All, FaceChoice::Index(4)])
                .unwrap(),
            r#"["main","all",4]"#
        );
        let e = FaceIndexError {
            index: 5,
            detected: 2,
        };
        assert!(e.to_string().contains("0 to 1"), "{e}");
    }
}
