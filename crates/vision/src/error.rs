//! Errors of the face pipeline. Every variant maps to a stable, snake_case code (see
//! `VisionError::code`) that the CLI prints and the HTTP API returns.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("the file is empty")]
    EmptyFile,
    #[error("image too large: {detail}")]
    ImageTooLarge { detail: String },
    #[error("unsupported or unrecognised image format{}", .detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    UnsupportedFormat { detail: Option<String> },
    #[error("corrupt or truncated image: {detail}")]
    CorruptImage { detail: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ONNX Runtime is not installed at {path}; run the setup command (scripts/setup.sh) or `visage models install`")]
    RuntimeMissing { path: PathBuf },
    #[error("cannot load ONNX Runtime from {path}: {detail}")]
    RuntimeLoad { path: PathBuf, detail: String },
    #[error("model pack `{pack}` is not installed{hint}")]
    PackNotInstalled { pack: String, hint: String },
    #[error("model pack `{pack}`: {detail}")]
    PackInvalid { pack: String, detail: String },
    #[error("model pack `{pack}` has a non-commercial licence ({licence}); install it with `visage models install {pack} --accept-licence {pack}` after reading the licence")]
    LicenceNotAccepted { pack: String, licence: String },
    #[error("checksum mismatch for {what}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("installing {what} failed: {detail}")]
    Install { what: String, detail: String },
    #[error("inference failed in {model}: {detail}")]
    Inference { model: String, detail: String },
    #[error("no face detected")]
    NoFaceDetected,
}

impl VisionError {
    /// Stable machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            VisionError::EmptyFile => "empty_file",
            VisionError::ImageTooLarge { .. } => "image_too_large",
            VisionError::UnsupportedFormat { .. } => "unsupported_format",
            VisionError::CorruptImage { .. } => "corrupt_image",
            VisionError::Io { .. } => "io_error",
            VisionError::RuntimeMissing { .. } => "runtime_missing",
            VisionError::RuntimeLoad { .. } => "runtime_load_failed",
            VisionError::PackNotInstalled { .. } => "pack_not_installed",
            VisionError::PackInvalid { .. } => "pack_invalid",
            VisionError::LicenceNotAccepted { .. } => "licence_not_accepted",
            VisionError::ChecksumMismatch { .. } => "checksum_mismatch",
            VisionError::Install { .. } => "install_failed",
            VisionError::Inference { .. } => "inference_failed",
            VisionError::NoFaceDetected => "no_face_detected",
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        VisionError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = VisionError> = std::result::Result<T, E>;
