//! Minimal folder ingest: walk, hash, skip what is done, decode, detect, quality-gate, align,
//! embed, and write each chunk of images atomically. (The full ingest with archives, manifests,
//! WARC, video and a staged pipeline is issue 3.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;
use visage_gallery::{Gallery, NewFace, NewImage, NewSource};
use visage_vision::{AnalyzeOptions, DecodeLimits, FacePipeline, PipelinePool};

use crate::encode;

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub collection: String,
    pub source: NewSource,
    /// Label faces with the name of the folder holding the photo (LFW-style galleries).
    pub subject_from_parent: bool,
    /// Keep a copy of every original photo in the blob store.
    pub keep_originals: bool,
    /// Images analysed and then written per atomic step.
    pub chunk: usize,
    /// Save the vector index after this many new faces (bounds catch-up after a crash).
    pub flush_every_faces: usize,
    pub analyze: AnalyzeOptions,
    pub limits: DecodeLimits,
}

impl IngestOptions {
    pub fn new(collection: &str, source: NewSource) -> IngestOptions {
        IngestOptions {
            collection: collection.to_string(),
            source,
            subject_from_parent: false,
            keep_originals: false,
            chunk: 32,
            flush_every_faces: 20_000,
            analyze: AnalyzeOptions::default(),
            limits: DecodeLimits::default(),
        }
    }
}

/// An input that was not indexed, with a stable reason code.
#[derive(Debug, Clone, Serialize)]
pub struct ItemFailure {
    pub path: PathBuf,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    pub collection: String,
    pub source: String,
    pub images_seen: u64,
    pub images_indexed: u64,
    /// Already in the collection (content hash), from an earlier run or earlier in this one.
    pub images_skipped_known: u64,
    pub images_without_faces: u64,
    pub faces_indexed: u64,
    pub faces_rejected: BTreeMap<String, u64>,
    pub errors: u64,
    pub failures: Vec<ItemFailure>,
    pub elapsed_s: f64,
    pub images_per_s: f64,
    pub faces_per_s: f64,
}

/// Progress after each chunk.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub faces: u64,
}

enum Prepared {
    Known,
    Image(Box<NewImage>, Vec<String>),
}

fn fail(path: &Path, code: &str, message: impl ToString) -> ItemFailure {
    ItemFailure {
        path: path.to_path_buf(),
        code: code.into(),
        message: message.to_string(),
    }
}

/// Ingests `paths` (files and folders, recursively, links not followed) into the gallery.
pub fn ingest_paths(
    gallery: &Gallery,
    pool: &PipelinePool,
    paths: &[PathBuf],
    opts: &IngestOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<IngestReport> {
    let t0 = Instant::now();
    let pipeline = pool.first();
    let pack = pipeline.pack_id();
    let dim = embedding_dim(pipeline)?;
    let coll = gallery.ensure_collection(&opts.collection, &pack, dim)?;
    if opts.source.name.trim().is_empty() {
        bail!("the source needs a name");
    }
    let source = gallery.ensure_source(coll.id, &opts.source)?;
    let listing = crate::files::collect(paths);
    let mut rep = IngestReport {
        collection: coll.name.clone(),
        source: source.name.clone(),
        ..Default::default()
    };
    for (p, why) in &listing.skipped {
        rep.errors += 1;
        rep.failures.push(fail(p, "skipped", why));
    }
    let total = listing.files.len() as u64;
    let mut since_flush = 0usize;
    for chunk in listing.files.chunks(opts.chunk.max(1)) {
        let prepared = pool.map(
            chunk,
            |p, path| prepare(gallery, p, path, coll.id, source.id, &source, opts),
            |_| {},
        );
        let mut batch: Vec<NewImage> = Vec::new();
        for r in prepared {
            rep.images_seen += 1;
            match r {
                Err(f) => {
                    rep.errors += 1;
                    rep.failures.push(f);
                }
                Ok(Prepared::Known) => rep.images_skipped_known += 1,
                Ok(Prepared::Image(img, rejected)) => {
                    for reason in rejected {
                        *rep.faces_rejected.entry(reason).or_default() += 1;
                    }
                    batch.push(*img);
                }
            }
        }
        // Subjects are created before the atomic write (a subject row alone is harmless).
        if opts.subject_from_parent {
            for img in &mut batch {
                let label = img
                    .uri
                    .as_deref()
                    .and_then(|u| Path::new(u).parent())
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned());
                if let (Some(label), false) = (label, img.faces.is_empty()) {
                    let sid = gallery.ensure_subject(coll.id, &label)?;
                    for f in &mut img.faces {
                        f.subject_id = Some(sid);
                    }
                }
            }
        }
        let outcomes = gallery.add_images(&batch)?;
        for (img, out) in batch.iter().zip(outcomes) {
            if out.duplicate {
                rep.images_skipped_known += 1;
                continue;
            }
            rep.images_indexed += 1;
            if img.faces.is_empty() {
                rep.images_without_faces += 1;
            }
            rep.faces_indexed += out.face_ids.len() as u64;
            since_flush += out.face_ids.len();
        }
        if since_flush >= opts.flush_every_faces {
            gallery.flush()?;
            since_flush = 0;
        }
        progress(Progress {
            done: rep.images_seen,
            total,
            faces: rep.faces_indexed,
        });
    }
    gallery.flush()?;
    rep.elapsed_s = t0.elapsed().as_secs_f64();
    rep.images_per_s = rep.images_seen as f64 / rep.elapsed_s.max(1e-9);
    rep.faces_per_s = rep.faces_indexed as f64 / rep.elapsed_s.max(1e-9);
    Ok(rep)
}

/// Embedding dimension of a pipeline's recogniser (one blank crop).
pub fn embedding_dim(p: &FacePipeline) -> Result<usize> {
    let blank = image::RgbImage::new(112, 112);
    let e = p.embed_crops(&[&blank], false)?;
    Ok(e.first().map(|e| e.vector.len()).unwrap_or(0))
}

fn prepare(
    gallery: &Gallery,
    p: &FacePipeline,
    path: &Path,
    collection_id: i64,
    source_id: i64,
    source: &visage_gallery::Source,
    opts: &IngestOptions,
) -> Result<Prepared, ItemFailure> {
    let meta = std::fs::metadata(path).map_err(|e| fail(path, "io_error", e))?;
    if meta.len() > opts.limits.max_bytes {
        return Err(fail(
            path,
            "image_too_large",
            format!("{} bytes (limit {})", meta.len(), opts.limits.max_bytes),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(path, "io_error", e))?;
    let sha = visage_gallery::blobs::sha256_hex(&bytes);
    match gallery.image_by_sha(collection_id, &sha) {
        Ok(Some(_)) => return Ok(Prepared::Known),
        Ok(None) => {}
        Err(e) => return Err(fail(path, "gallery_error", format!("{e:#}"))),
    }
    let img =
        visage_vision::decode_bytes(&bytes, &opts.limits).map_err(|e| fail(path, e.code(), &e))?;
    let faces = p
        .analyze(&img.rgb, &opts.analyze)
        .map_err(|e| fail(path, e.code(), &e))?;
    let mut rejected = Vec::new();
    let mut out = Vec::new();
    for f in faces {
        let Some(emb) = f.embedding else {
            let reason = f
                .quality
                .reasons
                .first()
                .map(|r| r.code())
                .unwrap_or("not_embedded");
            rejected.push(reason.to_string());
            continue;
        };
        let b = &f.detection.bbox;
        let crop = encode::png(&f.crop).map_err(|e| fail(path, "encode_error", e))?;
        let thumb = encode::thumbnail(&img.rgb, b).map_err(|e| fail(path, "encode_error", e))?;
        out.push(NewFace {
            bbox: [b.x1, b.y1, b.x2, b.y2],
            landmarks: f.detection.landmarks,
            det_score: f.detection.score,
            quality: serde_json::to_value(&f.quality).unwrap_or_default(),
            vector: emb.vector,
            crop,
            thumb,
            subject_id: None,
        });
    }
    let n_rejected = rejected.len() as u32;
    Ok(Prepared::Image(
        Box::new(NewImage {
            collection_id,
            source_id,
            sha256: sha,
            uri: Some(path.to_string_lossy().into_owned()),
            page_uri: None,
            captured_at: None,
            gps: None,
            jurisdiction: source.jurisdiction.clone(),
            jurisdiction_method: source
                .jurisdiction
                .as_ref()
                .map(|_| "declared_source".into()),
            width: img.source_width,
            height: img.source_height,
            faces_rejected: n_rejected,
            original: opts.keep_originals.then_some(bytes),
            faces: out,
        }),
        rejected,
    ))
}
