//! ONNX Runtime: loaded once per process from the shared library that setup installed
//! (ort's `load-dynamic`; nothing is downloaded at build or run time), one session per model.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use crate::error::{Result, VisionError};

static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();

/// Inference settings shared by every session the process creates.
#[derive(Debug, Clone, Copy)]
pub struct InferenceOptions {
    /// Threads one model run may use (ONNX Runtime intra-op threads). 0 = all cores.
    pub intra_threads: usize,
    /// Let idle ONNX Runtime workers spin briefly. Faster for back-to-back runs on an
    /// otherwise idle machine; turn it off when other work shares the cores.
    pub spinning: bool,
}

impl Default for InferenceOptions {
    fn default() -> Self {
        InferenceOptions {
            intra_threads: 0,
            spinning: true,
        }
    }
}

impl InferenceOptions {
    pub fn threads(&self) -> usize {
        if self.intra_threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.intra_threads
        }
    }
}

/// Loads the ONNX Runtime library at `lib` (first call wins; later calls return the same result).
pub fn init(lib: &Path) -> Result<()> {
    let r = ENV.get_or_init(|| {
        if !lib.exists() {
            return Err(format!("missing:{}", lib.display()));
        }
        let builder = ort::init_from(lib).map_err(|e| e.to_string())?;
        builder
            .with_name("visage")
            .build()
            .map_err(|e| e.to_string())
    });
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.starts_with("missing:") => Err(VisionError::RuntimeMissing {
            path: lib.to_path_buf(),
        }),
        Err(e) => Err(VisionError::RuntimeLoad {
            path: lib.to_path_buf(),
            detail: e.clone(),
        }),
    }
}

/// A session behind a mutex: `ort` runs take `&mut Session`. Callers batch work so a run is
/// long compared with the lock.
pub struct Model {
    pub name: String,
    pub session: Mutex<Session>,
    pub input_name: String,
    pub output_names: Vec<String>,
}

/// Creates a session for `path` with tuned options.
pub fn load_model(name: &str, path: &Path, opts: &InferenceOptions) -> Result<Model> {
    let err = |d: String| VisionError::Inference {
        model: name.to_string(),
        detail: d,
    };
    let env = match ENV.get() {
        Some(Ok(env)) => env,
        _ => {
            return Err(err(
                "ONNX Runtime is not loaded; call runtime::init first".into()
            ))
        }
    };
    let session = Session::builder(env)
        .map_err(|e| err(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| err(e.to_string()))?
        .with_intra_threads(opts.threads())
        .map_err(|e| err(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| err(e.to_string()))?
        .with_intra_op_spinning(opts.spinning)
        .map_err(|e| err(e.to_string()))?
        .commit_from_file(path)
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    let input_name = session
        .inputs()
        .first()
        .map(|i| i.name().to_string())
        .ok_or_else(|| err("model has no inputs".into()))?;
    let output_names = session
        .outputs()
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    Ok(Model {
        name: name.to_string(),
        session: Mutex::new(session),
        input_name,
        output_names,
    })
}

impl Model {
    /// Runs the model on one NCHW f32 tensor and returns every output as (shape, data),
    /// in the model's output order.
    pub fn run(&self, shape: [usize; 4], data: &[f32]) -> Result<Vec<(Vec<i64>, Vec<f32>)>> {
        let err = |d: String| VisionError::Inference {
            model: self.name.clone(),
            detail: d,
        };
        let tensor = ort::value::TensorRef::from_array_view((shape, data))
            .map_err(|e| err(e.to_string()))?;
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(|e| err(e.to_string()))?;
        let mut result = Vec::with_capacity(self.output_names.len());
        for name in &self.output_names {
            let (shape, data) = outputs[name.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(|e| err(e.to_string()))?;
            result.push((shape.iter().copied().collect(), data.to_vec()));
        }
        Ok(result)
    }
}
