//! The recogniser: aligned 112x112 crops in, L2-normalised embeddings out, run in batches.

use image::RgbImage;

use crate::detect::to_nchw;
use crate::error::{Result, VisionError};
use crate::pack::RecogniserSpec;
use crate::runtime::{load_model, InferenceOptions, Model};

pub struct Recogniser {
    pub spec: RecogniserSpec,
    model: Model,
}

impl Recogniser {
    pub fn load(
        spec: &RecogniserSpec,
        path: &std::path::Path,
        opts: &InferenceOptions,
    ) -> Result<Recogniser> {
        let model = load_model("recogniser", path, opts)?;
        Ok(Recogniser {
            spec: spec.clone(),
            model,
        })
    }

    /// The underlying ONNX Runtime model (for benchmarks that time the bare run).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Raw (not normalised) embeddings of `crops`, in order, run `max_batch` at a time.
    pub fn embed_raw(&self, crops: &[&RgbImage]) -> Result<Vec<Vec<f32>>> {
        let size = self.spec.input_size as usize;
        let dim = self.spec.embedding_dim;
        let mut out = Vec::with_capacity(crops.len());
        for chunk in crops.chunks(self.spec.max_batch.max(1)) {
            let plane = 3 * size * size;
            let mut input = Vec::with_capacity(chunk.len() * plane);
            for c in chunk {
                if c.width() as usize != size || c.height() as usize != size {
                    return Err(VisionError::Inference {
                        model: "recogniser".into(),
                        detail: format!(
                            "crop is {}x{}, expected {size}x{size}",
                            c.width(),
                            c.height()
                        ),
                    });
                }
                input.extend(to_nchw(
                    c.as_raw(),
                    size,
                    size,
                    size,
                    size,
                    self.spec.channel_order,
                    &self.spec.mean,
                    &self.spec.std,
                ));
            }
            let outputs = self.model.run([chunk.len(), 3, size, size], &input)?;
            let (_, data) = outputs
                .into_iter()
                .next()
                .ok_or_else(|| VisionError::Inference {
                    model: "recogniser".into(),
                    detail: "no output".into(),
                })?;
            if data.len() != chunk.len() * dim {
                return Err(VisionError::Inference {
                    model: "recogniser".into(),
                    detail: format!(
                        "output has {} values for {} crops of dim {dim}",
                        data.len(),
                        chunk.len()
                    ),
                });
            }
            out.extend(data.chunks(dim).map(|v| v.to_vec()));
        }
        Ok(out)
    }

    /// Unit-length embeddings; with `flip`, the sum of the crop's and its mirror's embeddings
    /// (test-time augmentation), then normalised.
    pub fn embed(&self, crops: &[&RgbImage], flip: bool) -> Result<Vec<Vec<f32>>> {
        let mut vecs = if flip {
            let flipped: Vec<RgbImage> = crops
                .iter()
                .map(|c| image::imageops::flip_horizontal(*c))
                .collect();
            let mut all: Vec<&RgbImage> = crops.to_vec();
            all.extend(flipped.iter());
            let raw = self.embed_raw(&all)?;
            let n = crops.len();
            (0..n)
                .map(|i| raw[i].iter().zip(&raw[n + i]).map(|(a, b)| a + b).collect())
                .collect()
        } else {
            self.embed_raw(crops)?
        };
        for v in &mut vecs {
            if !visage_core::l2_normalize(v) {
                return Err(VisionError::Inference {
                    model: "recogniser".into(),
                    detail: "zero or non-finite embedding".into(),
                });
            }
        }
        Ok(vecs)
    }
}
