//! The face pipeline: decode -> detect -> align -> quality -> embed.
//!
//! `visage-vision` knows nothing of storage. It loads a model pack (`pack`), opens one ONNX
//! Runtime session per model (`runtime`), and turns images into faces with boxes, landmarks,
//! quality and embeddings. The gallery, ingest and search live in other crates and call
//! [`FacePipeline`].

pub mod align;
pub mod calibration;
pub mod detect;
pub mod embed;
pub mod error;
pub mod onnx_clean;
pub mod pack;
pub mod quality;
pub mod runtime;
#[doc(hidden)]
pub mod testing;

use image::RgbImage;
use visage_core::{Detection, Embedding, Quality};

pub use calibration::{Calibration, FmrEstimate};
pub use detect::{DetectOptions, Detector};
pub use embed::Recogniser;
pub use error::{Result, VisionError};
pub use pack::{Home, Pack};
pub use runtime::InferenceOptions;
pub use visage_decode::{decode_bytes, decode_file, DecodeError, DecodeLimits, DecodedImage};

impl From<DecodeError> for VisionError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::EmptyFile => VisionError::EmptyFile,
            DecodeError::ImageTooLarge { detail } => VisionError::ImageTooLarge { detail },
            DecodeError::UnsupportedFormat { detail } => VisionError::UnsupportedFormat { detail },
            DecodeError::CorruptImage { detail } => VisionError::CorruptImage { detail },
            DecodeError::Io { path, source } => VisionError::Io { path, source },
        }
    }
}

/// A face found in an image: detection, aligned crop, quality, and (when asked) its embedding.
#[derive(Debug, Clone)]
pub struct Face {
    pub detection: Detection,
    /// The 112x112 crop aligned to the ArcFace template (what the recogniser sees).
    pub crop: RgbImage,
    pub quality: Quality,
    pub embedding: Option<Embedding>,
}

/// What `FacePipeline::analyze` should do.
#[derive(Debug, Clone, Copy)]
pub struct AnalyzeOptions {
    pub detect: DetectOptions,
    /// Compute embeddings (for faces that pass the quality gate, or all with `embed_all`).
    pub embed: bool,
    pub embed_all: bool,
    /// Flip test-time augmentation.
    pub flip: bool,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            detect: DetectOptions::default(),
            embed: true,
            embed_all: false,
            flip: false,
        }
    }
}

/// A loaded model pack: one detector session and one recogniser session, reused for every image.
pub struct FacePipeline {
    pub pack: Pack,
    pub detector: Detector,
    pub recogniser: Recogniser,
}

impl FacePipeline {
    /// Loads ONNX Runtime (once per process) and the named installed pack.
    pub fn load(home: &Home, pack_name: &str, opts: &InferenceOptions) -> Result<FacePipeline> {
        runtime::init(&home.runtime_lib())?;
        let pack = pack::load_pack(home, pack_name)?;
        Self::from_pack(pack, opts)
    }

    pub fn from_pack(pack: Pack, opts: &InferenceOptions) -> Result<FacePipeline> {
        let detector = Detector::load(&pack.detector, &pack.file_path(&pack.detector.file), opts)?;
        let recogniser = Recogniser::load(
            &pack.recogniser,
            &pack.file_path(&pack.recogniser.file),
            opts,
        )?;
        Ok(FacePipeline {
            pack,
            detector,
            recogniser,
        })
    }

    /// The pack identity (`name@version`) stamped on every embedding.
    pub fn pack_id(&self) -> String {
        self.pack.id()
    }

    /// Detects, aligns and assesses every face; embeds as `opts` says. Faces are sorted by
    /// detector score, highest first.
    pub fn analyze(&self, img: &RgbImage, opts: &AnalyzeOptions) -> Result<Vec<Face>> {
        let dets = self.detector.detect(img, &opts.detect)?;
        let mut faces = Vec::with_capacity(dets.len());
        let size = self.pack.recogniser.input_size;
        for det in dets {
            let Some((crop, m)) = align::align_face(img, &det.landmarks, size) else {
                continue;
            };
            let quality = quality::assess(
                &det,
                &crop,
                &m,
                img.width(),
                img.height(),
                &self.pack.quality,
            );
            faces.push(Face {
                detection: det,
                crop,
                quality,
                embedding: None,
            });
        }
        if opts.embed {
            let idx: Vec<usize> = (0..faces.len())
                .filter(|&i| opts.embed_all || faces[i].quality.passes())
                .collect();
            let crops: Vec<&RgbImage> = idx.iter().map(|&i| &faces[i].crop).collect();
            let vecs = self.recogniser.embed(&crops, opts.flip)?;
            let pack = self.pack_id();
            for (i, v) in idx.into_iter().zip(vecs) {
                faces[i].embedding = Some(Embedding {
                    pack: pack.clone(),
                    vector: v,
                });
            }
        }
        Ok(faces)
    }

    /// Embeds already aligned crops (used by re-embedding and the golden tests).
    pub fn embed_crops(&self, crops: &[&RgbImage], flip: bool) -> Result<Vec<Embedding>> {
        let pack = self.pack_id();
        Ok(self
            .recogniser
            .embed(crops, flip)?
            .into_iter()
            .map(|vector| Embedding {
                pack: pack.clone(),
                vector,
            })
            .collect())
    }
}

/// The photo's main face: among faces at least half as wide as the widest, the one nearest
/// the image centre — whether or not it passed the quality gate. Callers that need an
/// embedding must report an unusable main face rather than fall back to another face: in a
/// photo of several people that would silently answer for someone else.
pub fn main_face(faces: &[Face], w: u32, h: u32) -> Option<usize> {
    let widest = faces
        .iter()
        .map(|f| f.detection.bbox.x2 - f.detection.bbox.x1)
        .fold(0.0f32, f32::max);
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    faces
        .iter()
        .enumerate()
        .filter(|(_, f)| f.detection.bbox.x2 - f.detection.bbox.x1 >= 0.5 * widest)
        .min_by(|a, b| {
            let d = |f: &Face| {
                let c = f.detection.bbox.center();
                (c[0] - cx).powi(2) + (c[1] - cy).powi(2)
            };
            d(a.1).total_cmp(&d(b.1))
        })
        .map(|(i, _)| i)
}

/// Index of the face whose box centre is nearest the image centre (the LFW convention).
pub fn most_central(faces: &[Face], w: u32, h: u32) -> Option<usize> {
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    faces
        .iter()
        .enumerate()
        .min_by(|a, b| {
            let d = |f: &Face| {
                let c = f.detection.bbox.center();
                (c[0] - cx).powi(2) + (c[1] - cy).powi(2)
            };
            d(a.1).total_cmp(&d(b.1))
        })
        .map(|(i, _)| i)
}

/// Several pipelines, one per worker thread, each with single-threaded sessions: on a small
/// machine, running independent images in parallel keeps every core busy with less
/// synchronisation than splitting one model run across threads.
pub struct PipelinePool {
    pub workers: Vec<FacePipeline>,
}

impl PipelinePool {
    /// `workers` pipelines of `pack_name`, each with `threads_per_worker` intra-op threads.
    pub fn load(
        home: &Home,
        pack_name: &str,
        workers: usize,
        threads_per_worker: usize,
    ) -> Result<PipelinePool> {
        let opts = InferenceOptions {
            intra_threads: threads_per_worker.max(1),
            spinning: false,
        };
        let workers = (0..workers.max(1))
            .map(|_| FacePipeline::load(home, pack_name, &opts))
            .collect::<Result<Vec<_>>>()?;
        Ok(PipelinePool { workers })
    }

    pub fn first(&self) -> &FacePipeline {
        &self.workers[0]
    }

    /// Applies `f` to every item on the workers; results come back in input order.
    /// `progress` is called after each item with the number done so far.
    pub fn map<T: Sync, R: Send>(
        &self,
        items: &[T],
        f: impl Fn(&FacePipeline, &T) -> R + Sync,
        progress: impl Fn(usize) + Sync,
    ) -> Vec<R> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let mut slots: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
        let results = std::sync::Mutex::new(&mut slots);
        std::thread::scope(|s| {
            for p in &self.workers {
                let (next, done, results, f, progress) = (&next, &done, &results, &f, &progress);
                s.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() {
                        break;
                    }
                    let r = f(p, &items[i]);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                });
            }
        });
        slots
            .into_iter()
            .map(|r| r.expect("every item processed"))
            .collect()
    }
}
