//! Resource limits for decoding one image.

use serde::{Deserialize, Serialize};

/// Upper bounds on what one decode may consume.
///
/// An image header is a promise made by whoever wrote the file: a 100-byte PNG can claim to be
/// 100000 x 100000 pixels, and a decoder that believes it allocates 40 GB before reading a
/// single pixel. Every limit here is checked against the *header* before any pixel buffer is
/// allocated, and the decoders are also handed an [`image::Limits`] so that they refuse large
/// internal allocations themselves.
///
/// The defaults accept any real photograph (a 100-megapixel medium-format frame is about
/// 11600 x 8700) while keeping the worst case of one decode near 1 GB of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DecodeLimits {
    /// Largest accepted input, in bytes. Default 64 MiB.
    pub max_bytes: u64,
    /// Largest accepted `width * height`. Default 120 000 000.
    pub max_pixels: u64,
    /// Largest accepted width and height, each. Default 32 768.
    pub max_dimension: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_bytes: 64 * 1024 * 1024,
            max_pixels: 120_000_000,
            max_dimension: 32_768,
        }
    }
}

/// Widest sample the `image` crate can produce (RGBA, 32-bit float per channel, from TIFF).
const MAX_BYTES_PER_PIXEL: u64 = 16;

impl DecodeLimits {
    /// The [`image::Limits`] handed to a decoder for `format`.
    ///
    /// Width and height are strict limits in every decoder. `max_alloc` bounds the decoder's
    /// own allocations; what those are differs by format:
    /// - PNG counts only metadata (text, ICC, EXIF chunks) and row buffers against it, never the
    ///   output image, so it gets a small budget: that stops decompression bombs hidden in
    ///   compressed text or ICC chunks.
    /// - TIFF decodes into an intermediate buffer as large as the image; GIF may allocate one
    ///   frame. They get room for the largest image the pixel limit allows.
    pub(crate) fn image_limits(&self, format: &str) -> image::Limits {
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(self.max_dimension);
        limits.max_image_height = Some(self.max_dimension);
        limits.max_alloc = Some(match format {
            "png" => self.max_bytes.saturating_add(64 * 1024 * 1024),
            _ => self
                .max_pixels
                .saturating_mul(MAX_BYTES_PER_PIXEL)
                .saturating_add(self.max_bytes),
        });
        limits
    }

    /// Checks a width and height against the dimension and pixel limits.
    pub(crate) fn check_dimensions(
        &self,
        format: &str,
        width: u32,
        height: u32,
    ) -> Result<(), crate::DecodeError> {
        if width > self.max_dimension || height > self.max_dimension {
            return Err(crate::DecodeError::too_large(format!(
                "{format} is {width} x {height} pixels; the largest accepted side is {} pixels",
                self.max_dimension
            )));
        }
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_pixels {
            return Err(crate::DecodeError::too_large(format!(
                "{format} is {width} x {height} = {pixels} pixels; the limit is {} pixels",
                self.max_pixels
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let l = DecodeLimits::default();
        assert_eq!(l.max_bytes, 64 * 1024 * 1024);
        assert_eq!(l.max_pixels, 120_000_000);
        assert_eq!(l.max_dimension, 32_768);
    }

    #[test]
    fn dimension_checks() {
        let l = DecodeLimits::default();
        assert!(l.check_dimensions("png", 32_768, 1).is_ok());
        assert!(l.check_dimensions("png", 32_769, 1).is_err());
        assert!(l.check_dimensions("png", 1, 32_769).is_err());
        assert!(l.check_dimensions("png", 12_000, 10_000).is_ok());
        assert!(l.check_dimensions("png", 12_000, 10_001).is_err());
        assert!(l.check_dimensions("png", u32::MAX, u32::MAX).is_err());
    }

    #[test]
    fn image_limits_do_not_overflow() {
        let l = DecodeLimits {
            max_bytes: u64::MAX,
            max_pixels: u64::MAX,
            max_dimension: u32::MAX,
        };
        assert_eq!(l.image_limits("tiff").max_alloc, Some(u64::MAX));
        assert_eq!(l.image_limits("png").max_alloc, Some(u64::MAX));
    }
}
