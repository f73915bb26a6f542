//! End-to-end probe latency (a photo in, ranked results with provenance out, per stage) and
//! an HTTP load test against a running `visage serve`.
//!
//! Large galleries for the latency figure are made by `fill_synthetic`: synthetic face-like
//! vectors (the same generator as the index benchmark) stored as real gallery rows with
//! provenance, all sharing one crop and one thumbnail blob (content addressing stores them
//! once), so SQLite joins, filters and the vector index do the same work as on real data.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use visage_engine::search::Timings;
use visage_engine::{search_image, SearchOptions};
use visage_gallery::{Gallery, NewFace, NewImage, NewSource};
use visage_vision::FacePipeline;

/// Adds synthetic faces to `collection` (created for `p`'s pack) until it holds `target`
/// faces. Returns the number added.
pub fn fill_synthetic(
    gallery: &Gallery,
    p: &FacePipeline,
    collection: &str,
    target: u64,
    seed: u64,
    progress: impl Fn(u64, u64),
) -> Result<u64> {
    let pack = p.pack_id();
    let dim = p.pack.recogniser.embedding_dim;
    let coll = gallery.ensure_collection(collection, &pack, dim)?;
    let source = gallery.ensure_source(
        coll.id,
        &NewSource {
            name: "synthetic".into(),
            kind: "synthetic".into(),
            uri: Some("visage bench fill-synthetic".into()),
            legal_basis: Some("benchmark data, no real person".into()),
            licence: None,
            jurisdiction: Some("ZZ".into()),
        },
    )?;
    let have = gallery.indexed_faces(coll.id)?;
    if have >= target {
        return Ok(0);
    }
    let missing = (target - have) as usize;
    // One grey crop and thumbnail for every row (stored once).
    let crop = visage_engine::encode::png(&image::RgbImage::from_pixel(
        112,
        112,
        image::Rgb([128, 128, 128]),
    ))?;
    let thumb = crop.clone();
    const BATCH: usize = 2000;
    let mut added = 0u64;
    let mut start = 0usize;
    while start < missing {
        let n = BATCH.min(missing - start);
        let rows = crate::index::synthetic_vectors(n, dim, seed ^ (have + start as u64));
        let images: Vec<NewImage> = rows
            .chunks(dim)
            .enumerate()
            .map(|(j, v)| {
                let i = have + (start + j) as u64;
                NewImage {
                    collection_id: coll.id,
                    source_id: source.id,
                    sha256: visage_gallery::blobs::sha256_hex(
                        format!("synthetic-{seed}-{i}").as_bytes(),
                    ),
                    uri: Some(format!("synthetic://{i}")),
                    width: 112,
                    height: 112,
                    jurisdiction: Some("ZZ".into()),
                    jurisdiction_method: Some("declared_source".into()),
                    faces: vec![NewFace {
                        bbox: [0.0, 0.0, 112.0, 112.0],
                        landmarks: visage_vision::align::ARCFACE_112,
                        det_score: 0.9,
                        quality: serde_json::json!({"synthetic": true}),
                        vector: v.to_vec(),
                        crop: crop.clone(),
                        thumb: thumb.clone(),
                        subject_id: None,
                    }],
                    ..Default::default()
                }
            })
            .collect();
        gallery.add_images(&images)?;
        start += n;
        added += n as u64;
        progress(have + added, target);
    }
    gallery.flush()?;
    Ok(added)
}

/// Percentiles of one stage, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub p50: f64,
    pub p90: f64,
    pub mean: f64,
}

fn stage(mut v: Vec<f64>) -> Stage {
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Stage {
        p50: pct(0.5),
        p90: pct(0.9),
        mean: v.iter().sum::<f64>() / v.len() as f64,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub pack: String,
    pub faces_searched: u64,
    pub probe: String,
    pub probe_width: u32,
    pub probe_height: u32,
    pub runs: usize,
    pub k: usize,
    /// Smallest face looked for (pixels): smaller adds tiled detector passes on large photos.
    pub min_face_px: f32,
    pub decode: Stage,
    pub detect: Stage,
    pub embed: Stage,
    pub search: Stage,
    pub index: Stage,
    pub join: Stage,
    pub total: Stage,
    pub intra_threads: usize,
}

/// Runs the probe search `runs` times (after 3 warm-up runs) and reports each stage.
pub fn probe_latency(
    gallery: &Gallery,
    p: &FacePipeline,
    probe_name: &str,
    probe: &[u8],
    runs: usize,
    k: usize,
    min_face_px: f32,
    intra_threads: usize,
) -> Result<ProbeReport> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let mut opts = SearchOptions {
        k,
        ..Default::default()
    };
    opts.analyze.detect.min_face_px = min_face_px;
    let dims = visage_vision::decode_bytes(probe, &Default::default())?;
    let first = search_image(gallery, p, probe, &opts)?;
    if first.probe_faces.iter().all(|f| f.hits.is_empty()) {
        bail!("the probe found no usable face or no match; pick another probe photo");
    }
    for _ in 0..2 {
        search_image(gallery, p, probe, &opts)?;
    }
    let mut all: Vec<Timings> = Vec::with_capacity(runs);
    for _ in 0..runs {
        all.push(search_image(gallery, p, probe, &opts)?.timings_ms);
    }
    let pick = |f: fn(&Timings) -> f64| stage(all.iter().map(f).collect());
    Ok(ProbeReport {
        pack: p.pack_id(),
        faces_searched: first.faces_searched,
        probe: probe_name.to_string(),
        probe_width: dims.source_width,
        probe_height: dims.source_height,
        runs,
        k,
        min_face_px,
        decode: pick(|t| t.decode),
        detect: pick(|t| t.detect),
        embed: pick(|t| t.embed),
        search: pick(|t| t.search),
        index: pick(|t| t.index),
        join: pick(|t| t.join),
        total: pick(|t| t.total),
        intra_threads,
    })
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub url: String,
    pub api_key: String,
    pub case_id: i64,
    pub purpose: String,
    pub probe: Vec<u8>,
    pub clients: usize,
    pub duration: Duration,
    pub k: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub clients: usize,
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    /// The first few error descriptions (status and body start).
    pub error_samples: Vec<String>,
    pub requests_per_second: f64,
    pub latency_ms: Stage,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// `clients` threads search as fast as the server answers until `duration` has passed (each
/// finishes its request in flight), then report latency percentiles and errors.
pub fn load_test(o: &LoadOptions, progress: impl Fn(u64) + Sync) -> Result<LoadReport> {
    use base64::Engine as _;
    if o.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let body = serde_json::to_vec(&serde_json::json!({
        "image_base64": base64::engine::general_purpose::STANDARD.encode(&o.probe),
        "case_id": o.case_id,
        "purpose": o.purpose,
        "k": o.k,
    }))?;
    let url = format!("{}/v1/search", o.url.trim_end_matches('/'));
    let auth = format!("Bearer {}", o.api_key);
    // One request first: fail fast on a wrong key, case or URL.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut r = agent
        .post(&url)
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .send(&body[..])
        .with_context(|| format!("cannot reach {url}"))?;
    if r.status() != 200 {
        bail!(
            "the first search answered {}: {}",
            r.status(),
            r.body_mut().read_to_string().unwrap_or_default()
        );
    }
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let samples = Mutex::new(Vec::<String>::new());
    let lat = Mutex::new(Vec::<f64>::new());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..o.clients {
            s.spawn(|| {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(120)))
                    .build()
                    .into();
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let res = agent
                        .post(&url)
                        .header("Authorization", &auth)
                        .header("Content-Type", "application/json")
                        .send(&body[..]);
                    let ok = match res {
                        Ok(mut r) if r.status() == 200 => r.body_mut().read_to_vec().is_ok(),
                        Ok(mut r) => {
                            let text = r.body_mut().read_to_string().unwrap_or_default();
                            let mut g = samples.lock().unwrap();
                            if g.len() < 5 {
                                g.push(format!("{}: {}", r.status(), &text[..text.len().min(200)]));
                            }
                            false
                        }
                        Err(e) => {
                            let mut g = samples.lock().unwrap();
                            if g.len() < 5 {
                                g.push(e.to_string());
                            }
                            false
                        }
                    };
                    if ok {
                        mine.push(t.elapsed().as_secs_f64() * 1e3);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                lat.lock().unwrap().extend(mine);
            });
        }
        while t0.elapsed() < o.duration {
            std::thread::sleep(Duration::from_millis(500));
            progress(done.load(Ordering::Relaxed));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let seconds = t0.elapsed().as_secs_f64();
    let mut l = lat.into_inner().unwrap();
    if l.is_empty() {
        bail!("no search succeeded: {:?}", samples.into_inner().unwrap());
    }
    l.sort_by(f64::total_cmp);
    let p99 = l[((l.len() - 1) as f64 * 0.99).round() as usize];
    let max = *l.last().unwrap();
    let requests = done.load(Ordering::Relaxed);
    Ok(LoadReport {
        clients: o.clients,
        seconds,
        requests,
        errors: errors.load(Ordering::Relaxed),
        error_samples: samples.into_inner().unwrap(),
        requests_per_second: requests as f64 / seconds,
        latency_ms: stage(l),
        p99_ms: p99,
        max_ms: max,
    })
}
