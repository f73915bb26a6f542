//! Probe search: a photo in, its faces out, each with ranked matches and provenance.

use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;
use visage_gallery::{Filter, Gallery, Hit, SearchQuery, SearchTrace};
use visage_vision::{AnalyzeOptions, DecodeLimits, FacePipeline};

#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Collections to search (default: every collection pinned to the pipeline's pack).
    pub collections: Vec<String>,
    pub k: usize,
    pub threshold: Option<f32>,
    pub filter: Filter,
    /// Search with every usable probe face (default: only the most central one).
    pub all_faces: bool,
    pub analyze: AnalyzeOptions,
    pub limits: DecodeLimits,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            collections: vec![],
            k: 10,
            threshold: None,
            filter: Filter::default(),
            all_faces: false,
            analyze: AnalyzeOptions::default(),
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
    pub probe_faces: Vec<ProbeFace>,
    pub timings_ms: Timings,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub decode: f64,
    pub analyze: f64,
    pub search: f64,
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
    let mut timings = Timings::default();
    let t = Instant::now();
    let img = visage_vision::decode_bytes(bytes, &opts.limits)?;
    timings.decode = ms(t);
    let t = Instant::now();
    let faces = p.analyze(&img.rgb, &opts.analyze)?;
    timings.analyze = ms(t);
    let chosen: Vec<usize> = if opts.all_faces {
        (0..faces.len()).collect()
    } else {
        let usable: Vec<visage_vision::Face> = faces
            .iter()
            .filter(|f| f.embedding.is_some())
            .cloned()
            .collect();
        match visage_vision::most_central(&usable, img.rgb.width(), img.rgb.height()) {
            Some(i) => faces
                .iter()
                .position(|f| f.detection == usable[i].detection)
                .into_iter()
                .collect(),
            None => (0..faces.len()).collect(),
        }
    };
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
            Some(e) => {
                for c in &colls {
                    let (hits, trace) = gallery.search(&SearchQuery {
                        collection_id: c.id,
                        vector: &e.vector,
                        k: opts.k,
                        threshold: opts.threshold,
                        filter: opts.filter.clone(),
                    })?;
                    pf.hits.extend(hits);
                    pf.traces.push(trace);
                }
                pf.hits
                    .sort_by(|a, b| b.score.total_cmp(&a.score).then(a.face.id.cmp(&b.face.id)));
                pf.hits.truncate(opts.k);
            }
        }
        probe_faces.push(pf);
    }
    timings.search = ms(t);
    Ok(SearchResult {
        pack,
        collections: colls.into_iter().map(|c| c.name).collect(),
        faces_searched,
        probe_faces,
        timings_ms: timings,
    })
}
