//! Data-subject requests: opt-out by selfie, access reports, and the suppression list that
//! keeps opted-out people out of later ingests and searches.
//!
//! Matching is deliberately stricter than search. A face is taken to be the requester's when
//! both hold:
//! - its similarity reaches the score where the pack's calibration estimates a false match
//!   rate of [`SELFIE_FMR`] (selfie against gallery) or [`EXPAND_FMR`] (faces found so far
//!   against the rest, and later checks against the suppression list), and
//! - it stands out from that embedding's own score distribution over the gallery: at least
//!   [`SELFIE_Z`] / [`EXPAND_Z`] robust standard deviations (median and scaled MAD) above
//!   its median. This adaptive normalisation is what keeps look-alikes with many photos in the
//!   gallery from being deleted: their scores are high in absolute terms but not unusual for
//!   that probe (measured on LFW; see docs/GOVERNANCE.md).
//!
//! Faces found from the selfie are used as further seeds (up to [`EXPANSION_ROUNDS`]), since one
//! selfie does not match every photo of a person. In a labelled gallery, a subject of whom at
//! least [`SUBJECT_MAJORITY`] of the faces matched is removed entirely: the operator's label
//! ties the remaining photos to the same person.
//!
//! Every matched face's embedding and the selfies' embeddings join the suppression list
//! (never a photo). Ingest drops new faces that match it; search refuses probe faces that match
//! it and drops hits that match it.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use serde::Serialize;
use visage_gallery::{
    DeleteReport, DeleteTarget, FaceRecord, FaceStore, Filter, Gallery, NewSuppression, SearchQuery,
};
use visage_vision::{AnalyzeOptions, DecodeLimits, FacePipeline};

/// Calibrated false match rate for selfie-to-gallery matches.
pub const SELFIE_FMR: f64 = 1e-4;
/// Robust z-score a selfie match must reach against the selfie's own score distribution.
pub const SELFIE_Z: f32 = 4.0;
/// Calibrated false match rate for matches of already-found faces and suppression checks.
pub const EXPAND_FMR: f64 = 1e-5;
pub const EXPAND_Z: f32 = 4.5;
pub const EXPANSION_ROUNDS: usize = 4;
/// Fraction of a labelled subject's faces that must match for the whole subject to go.
pub const SUBJECT_MAJORITY: f64 = 0.5;
/// Gallery vectors sampled to estimate an embedding's score distribution.
const Z_SAMPLE: usize = 10_000;
/// Below this many sampled faces the z criterion is not used (too few to estimate it).
const Z_MIN_SAMPLE: usize = 100;
/// Most matches taken per seed and collection.
const MAX_MATCHES_PER_SEED: usize = 5_000;

/// Thresholds for one pack: raw similarity and z-score.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MatchRule {
    pub min_score: f32,
    pub min_z: f32,
}

fn rule(p: &FacePipeline, fmr: f64, z: f32) -> MatchRule {
    let min_score = match &p.pack.calibration {
        Some(c) => c.score_at_fmr(fmr),
        // Uncalibrated pack: the pack's own verification threshold, made stricter.
        None => p.pack.thresholds.verify + 0.1,
    };
    MatchRule {
        min_score,
        min_z: z,
    }
}

/// Median and scaled MAD (a robust standard deviation) of `v`'s similarities to `sample`.
fn score_stats(v: &[f32], sample: &[Vec<f32>]) -> (f32, f32) {
    if sample.len() < Z_MIN_SAMPLE {
        return (0.0, 0.0);
    }
    let mut s: Vec<f32> = sample.iter().map(|g| visage_core::dot(v, g)).collect();
    let med = median(&mut s);
    let mut dev: Vec<f32> = s.iter().map(|x| (x - med).abs()).collect();
    (med, median(&mut dev) * 1.4826)
}

fn median(v: &mut [f32]) -> f32 {
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

fn z_ok(score: f32, med: f32, mad: f32, min_z: f32) -> bool {
    // mad == 0: no statistics (small gallery) — the raw threshold alone decides.
    mad <= 0.0 || (score - med) / mad >= min_z
}

/// The suppression list of one pack, loaded for matching.
pub struct SuppressionList {
    entries: std::sync::Arc<Vec<visage_gallery::Suppression>>,
    pub rule: MatchRule,
    pub generation: i64,
}

impl SuppressionList {
    pub fn load(gallery: &Gallery, p: &FacePipeline) -> Result<SuppressionList> {
        let (generation, entries) = gallery.suppressions(&p.pack_id())?;
        Ok(SuppressionList {
            generation,
            entries,
            rule: rule(p, EXPAND_FMR, EXPAND_Z),
        })
    }

    /// The list as any `FaceStore` holds it. The generation is read first, so a list read
    /// while suppressions were being added is never taken for an older generation.
    pub fn from_store(store: &dyn FaceStore, p: &FacePipeline) -> Result<SuppressionList> {
        Self::from_store_with(store, &p.pack_id(), rule(p, EXPAND_FMR, EXPAND_Z))
    }

    /// The list of `pack`, matched with `rule` (`from_store` takes the pack's rule).
    pub fn from_store_with(
        store: &dyn FaceStore,
        pack: &str,
        rule: MatchRule,
    ) -> Result<SuppressionList> {
        let generation = store.suppression_generation()?;
        Ok(SuppressionList {
            generation,
            entries: store.suppression_list(pack)?,
            rule,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `v` is the face of someone who opted out.
    pub fn matches(&self, v: &[f32]) -> bool {
        self.entries.iter().any(|e| {
            let s = visage_core::dot(v, &e.vector);
            s >= self.rule.min_score && z_ok(s, e.z_median, e.z_mad, self.rule.min_z)
        })
    }
}

/// Faces of `pack` stored above `mark` (`FaceStore::add_suppressions_marked`) that `list`
/// matches: those stored between an opt-out's first suppression entries and its last.
pub fn late_matches(
    store: &dyn FaceStore,
    list: &SuppressionList,
    pack: &str,
    mark: i64,
) -> Result<Vec<i64>> {
    const PAGE: usize = 1000;
    let mut out = Vec::new();
    let mut after = mark;
    loop {
        let page = store.face_vectors_after(pack, after, PAGE)?;
        for (id, v) in &page {
            if list.matches(v) {
                out.push(*id);
            }
        }
        match page.last() {
            Some((id, _)) if page.len() == PAGE => after = *id,
            _ => return Ok(out),
        }
    }
}

/// What an opt-out did.
#[derive(Debug, Clone, Serialize)]
pub struct OptOutOutcome {
    pub request_id: String,
    pub pack: String,
    pub selfies: usize,
    pub selfies_used: usize,
    /// Per unusable selfie: its index and why.
    pub unusable_selfies: Vec<String>,
    pub faces_deleted: usize,
    pub face_ids: Vec<i64>,
    pub images_deleted: usize,
    pub subjects_deleted: usize,
    pub suppressed_embeddings: usize,
    pub rules: [MatchRule; 2],
}

/// The embedding of each selfie's main face (the largest usable one); errors per selfie.
fn embed_selfies(p: &FacePipeline, selfies: &[Vec<u8>]) -> (Vec<Vec<f32>>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (i, bytes) in selfies.iter().enumerate() {
        let img = match visage_vision::decode_bytes(bytes, &DecodeLimits::default()) {
            Ok(i) => i,
            Err(e) => {
                bad.push(format!("selfie {i}: {} ({e})", e.code()));
                continue;
            }
        };
        let faces = match p.analyze(&img.rgb, &AnalyzeOptions::default()) {
            Ok(f) => f,
            Err(e) => {
                bad.push(format!("selfie {i}: {} ({e})", e.code()));
                continue;
            }
        };
        let best = faces
            .iter()
            .filter_map(|f| f.embedding.as_ref().map(|e| (f.detection.bbox.area(), e)))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match best {
            Some((_, e)) => ok.push(e.vector.clone()),
            None => bad.push(format!("selfie {i}: no_usable_face")),
        }
    }
    (ok, bad)
}

/// Matching (face id, score) pairs, and the seed's score statistics (median, scaled MAD).
type Matches = (Vec<(i64, f32)>, (f32, f32));

/// The selfies' embeddings and why the others were unusable; an error (`no_usable_face`)
/// when none is usable.
fn usable_selfies(p: &FacePipeline, selfies: &[Vec<u8>]) -> Result<(Vec<Vec<f32>>, Vec<String>)> {
    let (seeds, unusable) = embed_selfies(p, selfies);
    if seeds.is_empty() {
        bail!(
            "no_usable_face: none of the {} selfie(s) shows a usable face ({})",
            selfies.len(),
            unusable.join("; ")
        );
    }
    Ok((seeds, unusable))
}

/// Faces of `pack`'s collections that match `seeds` under `rule`, with each seed's stats.
struct Matcher<'a> {
    gallery: &'a dyn FaceStore,
    collections: Vec<i64>,
    samples: Vec<Vec<f32>>,
}

impl<'a> Matcher<'a> {
    fn new(gallery: &'a dyn FaceStore, pack: &str) -> Result<Matcher<'a>> {
        let collections: Vec<i64> = gallery
            .collections()?
            .into_iter()
            .filter(|c| c.pack == pack)
            .map(|c| c.id)
            .collect();
        let mut samples = Vec::new();
        let per = Z_SAMPLE / collections.len().max(1);
        for &c in &collections {
            samples.extend(gallery.sample_vectors(c, per)?);
        }
        Ok(Matcher {
            gallery,
            collections,
            samples,
        })
    }

    /// (face id, score) of every face matching `v`, and `v`'s score statistics.
    fn matches(&self, v: &[f32], rule: MatchRule) -> Result<Matches> {
        let (med, mad) = score_stats(v, &self.samples);
        let mut out = Vec::new();
        for &c in &self.collections {
            let hits = self.gallery.search(&SearchQuery {
                collection_id: c,
                vector: v,
                k: MAX_MATCHES_PER_SEED,
                threshold: Some(rule.min_score),
                filter: Filter::default(),
            })?;
            out.extend(
                hits.into_iter()
                    .filter(|h| z_ok(h.score, med, mad, rule.min_z))
                    .map(|h| (h.face.id, h.score)),
            );
        }
        Ok((out, (med, mad)))
    }
}

/// Carries out an opt-out: puts the selfies' embeddings on the suppression list, finds the
/// requester's faces from them, adds those faces' embeddings to the list, then deletes the
/// faces (in that order, so a crash in between leaves the faces suppressed; [`resume_opt_out`]
/// finishes the deletion from the stored embeddings).
///
/// The selfies go on the list before the gallery is searched so that a concurrent ingest
/// (another process of a cluster) cannot slip a photo of the requester in between: a write
/// that commits before the list grew is seen by the search below, and one that commits after
/// was checked against the selfies (`FaceStore::add_suppressions`).
pub fn opt_out(
    gallery: &dyn FaceStore,
    p: &FacePipeline,
    request_id: &str,
    selfies: &[Vec<u8>],
) -> Result<OptOutOutcome> {
    opt_out_with(gallery, p, request_id, selfies, &mut |t| gallery.delete(t))
}

/// A deletion an opt-out makes; the caller may journal it (`visage_server`'s recorded
/// opt-outs do, so that an interrupted one is recorded with every count).
pub type Deleter<'a> = dyn FnMut(&DeleteTarget) -> Result<DeleteReport> + 'a;

/// [`opt_out`], deleting through `delete`.
pub fn opt_out_with(
    gallery: &dyn FaceStore,
    p: &FacePipeline,
    request_id: &str,
    selfies: &[Vec<u8>],
    delete: &mut Deleter<'_>,
) -> Result<OptOutOutcome> {
    let pack = p.pack_id();
    let (seeds, unusable) = usable_selfies(p, selfies)?;
    let m = Matcher::new(gallery, &pack)?;
    let selfie_entries: Vec<NewSuppression> = seeds
        .iter()
        .map(|v| {
            let (med, mad) = score_stats(v, &m.samples);
            NewSuppression {
                vector: v.clone(),
                z_median: med,
                z_mad: mad,
                origin: "selfie".into(),
            }
        })
        .collect();
    let (_, mark) = gallery.add_suppressions_marked(&pack, request_id, &selfie_entries)?;
    let mut out = carry_out(gallery, p, &m, request_id, &seeds, &[], mark, delete)?;
    out.selfies = selfies.len();
    out.unusable_selfies = unusable;
    out.suppressed_embeddings += selfie_entries.len();
    Ok(out)
}

/// The suppression entries opt-out `request_id` added to `pack`'s list.
fn entries_of(
    gallery: &dyn FaceStore,
    pack: &str,
    request_id: &str,
) -> Result<Vec<visage_gallery::Suppression>> {
    Ok(gallery
        .suppressions(pack)?
        .into_iter()
        .filter(|s| s.request_id == request_id)
        .collect())
}

/// Whether opt-out `request_id` changed the gallery (its first step puts the selfies on
/// `pack`'s suppression list): one that did not can be dropped, one that did must be finished.
pub fn has_started(gallery: &dyn FaceStore, pack: &str, request_id: &str) -> Result<bool> {
    Ok(!entries_of(gallery, pack, request_id)?.is_empty())
}

/// Finishes an opt-out that was interrupted after its selfies went on the suppression list
/// (the selfies themselves are not kept): the requester's faces are found again from the
/// list's entries of `request_id` (selfies at the selfie rule, faces matched before the
/// interruption at the stricter rule, as seeds of the expansion) and the rest is done as in
/// [`opt_out`]. `None` when the list holds nothing of the request: it was interrupted before
/// anything was changed. The outcome's counts are those of this run; `selfies` is the number
/// of selfie embeddings on the list.
pub fn resume_opt_out(
    gallery: &dyn FaceStore,
    p: &FacePipeline,
    request_id: &str,
    delete: &mut Deleter<'_>,
) -> Result<Option<OptOutOutcome>> {
    let pack = p.pack_id();
    let (seeds, known): (Vec<_>, Vec<_>) = entries_of(gallery, &pack, request_id)?
        .into_iter()
        .partition(|s| s.origin == "selfie");
    if seeds.is_empty() {
        return Ok(None);
    }
    let seeds: Vec<Vec<f32>> = seeds.into_iter().map(|s| s.vector).collect();
    let known: Vec<Vec<f32>> = known.into_iter().map(|s| s.vector).collect();
    // Every entry of the request is in already: faces stored from now on are checked
    // against them by the writers.
    let (_, mark) = gallery.add_suppressions_marked(&pack, request_id, &[])?;
    let m = Matcher::new(gallery, &pack)?;
    let mut out = carry_out(gallery, p, &m, request_id, &seeds, &known, mark, delete)?;
    out.selfies = seeds.len();
    out.suppressed_embeddings += seeds.len() + known.len();
    Ok(Some(out))
}

/// The part of an opt-out after the selfies' entries are on the list (`mark`: the face id
/// mark of those entries): find the faces from `seeds` (selfie rule) and `known` (faces
/// matched earlier, stricter rule), suppress what is not suppressed yet, delete. The
/// outcome's `selfies` and `unusable_selfies` are the caller's to fill.
#[allow(clippy::too_many_arguments)]
fn carry_out(
    gallery: &dyn FaceStore,
    p: &FacePipeline,
    m: &Matcher<'_>,
    request_id: &str,
    seeds: &[Vec<f32>],
    known: &[Vec<f32>],
    mark: i64,
    delete: &mut Deleter<'_>,
) -> Result<OptOutOutcome> {
    let pack = p.pack_id();
    let selfie_rule = rule(p, SELFIE_FMR, SELFIE_Z);
    let expand_rule = rule(p, EXPAND_FMR, EXPAND_Z);
    let mut suppress: Vec<NewSuppression> = Vec::new();
    let mut found: BTreeSet<i64> = BTreeSet::new();
    let mut frontier: Vec<i64> = Vec::new();
    let starts = seeds
        .iter()
        .map(|v| (v, selfie_rule))
        .chain(known.iter().map(|v| (v, expand_rule)));
    for (v, r) in starts {
        let (hits, _) = m.matches(v, r)?;
        for (id, _) in hits {
            if found.insert(id) {
                frontier.push(id);
            }
        }
    }
    // Faces found so far seed further matches at the stricter rule.
    let mut stats: BTreeMap<i64, (f32, f32)> = BTreeMap::new();
    for _ in 0..EXPANSION_ROUNDS {
        if frontier.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for id in std::mem::take(&mut frontier) {
            let Some(v) = gallery.face_vector(id)? else {
                continue;
            };
            let (hits, st) = m.matches(&v, expand_rule)?;
            stats.insert(id, st);
            for (h, _) in hits {
                if found.insert(h) {
                    next.push(h);
                }
            }
        }
        frontier = next;
    }
    // Labelled subjects mostly matched go entirely.
    let mut by_subject: BTreeMap<i64, usize> = BTreeMap::new();
    let records: Vec<FaceRecord> = found
        .iter()
        .filter_map(|&id| gallery.face(id).transpose())
        .collect::<Result<_>>()?;
    for r in &records {
        if let Some(s) = &r.subject {
            *by_subject.entry(s.id).or_default() += 1;
        }
    }
    let mut subjects_deleted = 0;
    for (subject, n) in by_subject {
        let all = gallery.subject_faces(subject)?;
        if n >= 2 && n as f64 >= SUBJECT_MAJORITY * all.len() as f64 {
            subjects_deleted += 1;
            found.extend(all);
        }
    }
    for &id in &found {
        let Some(v) = gallery.face_vector(id)? else {
            continue;
        };
        // Already on the list (a resumed opt-out's faces matched before the interruption).
        if known.contains(&v) {
            continue;
        }
        let (med, mad) = match stats.get(&id) {
            Some(s) => *s,
            None => score_stats(&v, &m.samples),
        };
        suppress.push(NewSuppression {
            vector: v,
            z_median: med,
            z_mad: mad,
            origin: "matched_face".into(),
        });
    }
    if !suppress.is_empty() {
        gallery.add_suppressions(&pack, request_id, &suppress)?;
        // Faces stored while the gallery was searched were checked against the selfies only
        // (a cluster's workers write meanwhile); now that every entry is in, check them
        // against the whole list. Later writes are checked against it by the writers.
        let list = SuppressionList::from_store(gallery, p)?;
        found.extend(late_matches(gallery, &list, &pack, mark)?);
    }
    // A photo left without faces goes too (its row still says where a photo of the person
    // was); photos that still show other people stay, without the requester's face. A photo
    // all of whose faces go is deleted whole, in one step, so no interruption can leave it
    // without faces.
    let mut by_image: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for &id in &found {
        if let Some(r) = gallery.face(id)? {
            by_image.entry(r.image.id).or_default().push(id);
        }
    }
    let mut report = DeleteReport::default();
    let mut partial: Vec<i64> = Vec::new();
    for (img, faces) in by_image {
        if gallery.image_face_count(img)? <= faces.len() as u64 {
            report.add(delete(&DeleteTarget::Image(img))?);
        } else {
            partial.extend(faces);
        }
    }
    if !partial.is_empty() {
        report.add(delete(&DeleteTarget::Faces(partial))?);
    }
    report.face_ids.sort_unstable();
    Ok(OptOutOutcome {
        request_id: request_id.to_string(),
        pack,
        selfies: 0,
        selfies_used: seeds.len(),
        unusable_selfies: Vec::new(),
        faces_deleted: report.faces,
        face_ids: report.face_ids,
        images_deleted: report.images,
        subjects_deleted,
        suppressed_embeddings: suppress.len(),
        rules: [selfie_rule, expand_rule],
    })
}

/// What the gallery holds about the person in the selfies.
#[derive(Debug, Clone, Serialize)]
pub struct AccessReport {
    pub pack: String,
    pub selfies: usize,
    pub selfies_used: usize,
    pub unusable_selfies: Vec<String>,
    /// Matching faces with their provenance (the thumbnail is `faces[i].thumb_sha` in the blob
    /// store).
    pub faces: Vec<FaceRecord>,
    pub rule: MatchRule,
}

/// Finds the faces an opt-out with these selfies would start from (selfie rule, no
/// expansion), for an access request. Deletes nothing.
pub fn access_report(
    gallery: &dyn FaceStore,
    p: &FacePipeline,
    selfies: &[Vec<u8>],
) -> Result<AccessReport> {
    let pack = p.pack_id();
    let (seeds, unusable) = usable_selfies(p, selfies)?;
    let r = rule(p, SELFIE_FMR, SELFIE_Z);
    let m = Matcher::new(gallery, &pack)?;
    let mut ids = BTreeSet::new();
    for v in &seeds {
        ids.extend(m.matches(v, r)?.0.into_iter().map(|(id, _)| id));
    }
    let faces = ids
        .into_iter()
        .filter_map(|id| gallery.face(id).transpose())
        .collect::<Result<_>>()?;
    Ok(AccessReport {
        pack,
        selfies: selfies.len(),
        selfies_used: seeds.len(),
        unusable_selfies: unusable,
        faces,
        rule: r,
    })
}
