//! The one error type of this crate.
//!
//! Uploads fail for a handful of reasons that a caller treats differently: an empty upload is
//! a client bug, an oversized one is a policy refusal (HTTP 413), an unknown format is
//! something the user can fix by converting the file, and a corrupt one is a bad file. Each
//! variant has a stable [`DecodeError::code`] so that front ends and audit records can match on
//! it without parsing messages.

use std::path::PathBuf;

/// Why an image could not be decoded.
///
/// Messages are written for the person who uploaded the file: they say what is wrong and,
/// where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The input has zero bytes.
    #[error("the image file is empty (0 bytes)")]
    EmptyFile,

    /// The input is over one of the [`DecodeLimits`](crate::DecodeLimits): file size, width,
    /// height or pixel count. Checked before any pixel buffer is allocated.
    #[error("image too large: {detail}")]
    ImageTooLarge { detail: String },

    /// The bytes are not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF), or
    /// use a feature of a supported format that the decoder does not implement. `detail` names
    /// the format or feature when it could be recognised.
    #[error(
        "unsupported image format: {}",
        .detail.as_deref().unwrap_or(
            "the file is not a JPEG, PNG, WebP, GIF, BMP or TIFF image; convert it to JPEG or PNG"
        )
    )]
    UnsupportedFormat { detail: Option<String> },

    /// The format was recognised but the data is truncated or damaged.
    #[error("corrupt or truncated image: {detail}")]
    CorruptImage { detail: String },

    /// The file could not be opened or read (only from [`decode_file`](crate::decode_file)).
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DecodeError {
    /// A stable, machine-readable code for this error, for API responses, metrics and audit
    /// records. These strings are API: do not change them.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::EmptyFile => "empty_file",
            DecodeError::ImageTooLarge { .. } => "image_too_large",
            DecodeError::UnsupportedFormat { .. } => "unsupported_format",
            DecodeError::CorruptImage { .. } => "corrupt_image",
            DecodeError::Io { .. } => "io_error",
        }
    }

    pub(crate) fn too_large(detail: impl Into<String>) -> Self {
        DecodeError::ImageTooLarge {
            detail: detail.into(),
        }
    }

    pub(crate) fn corrupt(detail: impl Into<String>) -> Self {
        DecodeError::CorruptImage {
            detail: detail.into(),
        }
    }

    /// Maps an error from the `image` crate. `format` is the sniffed format, used to prefix
    /// messages so that the user knows which decoder refused the file.
    pub(crate) fn from_image(format: &str, err: image::ImageError) -> Self {
        use image::ImageError as E;
        match err {
            E::Limits(e) => DecodeError::too_large(format!("{format}: {e}")),
            E::Unsupported(e) => DecodeError::UnsupportedFormat {
                detail: Some(format!("{format}: {e}")),
            },
            // Decoding, parameter (e.g. "no frames") and I/O errors on an in-memory cursor all
            // mean the same thing here: the bytes end early or do not follow the format.
            E::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                DecodeError::corrupt(format!("{format}: file is truncated ({e})"))
            }
            other => DecodeError::corrupt(format!("{format}: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let io = DecodeError::Io {
            path: PathBuf::from("/x"),
            source: std::io::Error::other("boom"),
        };
        let cases = [
            (DecodeError::EmptyFile, "empty_file"),
            (DecodeError::too_large("x"), "image_too_large"),
            (
                DecodeError::UnsupportedFormat { detail: None },
                "unsupported_format",
            ),
            (DecodeError::corrupt("x"), "corrupt_image"),
            (io, "io_error"),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code);
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn unsupported_message_says_what_to_do() {
        let msg = DecodeError::UnsupportedFormat { detail: None }.to_string();
        assert!(msg.contains("convert it to JPEG or PNG"), "{msg}");
        let msg = DecodeError::UnsupportedFormat {
            detail: Some("HEIC".into()),
        }
        .to_string();
        assert_eq!(msg, "unsupported image format: HEIC");
    }

    #[test]
    fn io_error_names_the_path() {
        let err = DecodeError::Io {
            path: PathBuf::from("/data/x.jpg"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(err.to_string().contains("/data/x.jpg"));
        assert!(std::error::Error::source(&err).is_some());
    }
}
