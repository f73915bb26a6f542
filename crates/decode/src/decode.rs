//! The decode entry points.

use std::io::{Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::header::{peek_dimensions, walk_jpeg, webp_truncated};
use crate::pixels::to_rgb8;
use crate::sniff::{describe_unsupported, sniff_format};
use crate::{DecodeError, DecodeLimits};

/// A decoded image, upright and in 8-bit RGB.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    /// The pixels, with the EXIF orientation already applied: this is the image as a viewer
    /// shows it, which is the frame that face coordinates refer to.
    pub rgb: RgbImage,
    /// The format found by content: `"jpeg"`, `"png"`, `"webp"`, `"gif"`, `"bmp"` or `"tiff"`.
    pub format: &'static str,
    /// The EXIF orientation found in the file, 1..=8; 1 when absent or invalid.
    pub exif_orientation: u8,
    /// Width as stored in the file, before orientation. Differs from `rgb.width()` for
    /// orientations 5..=8, which swap the axes.
    pub source_width: u32,
    /// Height as stored in the file, before orientation.
    pub source_height: u32,
}

/// Decodes untrusted image bytes into upright 8-bit RGB.
///
/// The format is found from magic bytes (see [`sniff_format`]), never from a name. In order:
/// 1. empty input is [`DecodeError::EmptyFile`]; input over `limits.max_bytes` is
///    [`DecodeError::ImageTooLarge`];
/// 2. bytes that are not a supported format are [`DecodeError::UnsupportedFormat`], with a
///    description of what they are when it can be told (HEIC, PDF, HTML, text...);
/// 3. the dimensions in the header are checked against the limits before any decoder runs,
///    and again as the decoder reports them, before the pixel buffer is allocated;
/// 4. a JPEG that ends before its end-of-image marker, or a WebP shorter than its RIFF header
///    says, is [`DecodeError::CorruptImage`] (their decoders would otherwise fill the missing
///    part with grey or zeros and succeed);
/// 5. the image is decoded with [`image::Limits`] set, so decoders refuse large internal
///    allocations themselves; any decoder failure is `CorruptImage` (or `UnsupportedFormat`
///    for a valid file using a feature the decoder lacks, such as arithmetic-coded JPEG);
/// 6. alpha is composited over white, 16-bit and float samples are scaled to 8 bits, and the
///    EXIF orientation is applied.
///
/// Animated GIF and WebP yield their first frame. ICC profiles are not applied: pixels are
/// taken to be sRGB, which is what nearly every upload is and what face models were trained on.
///
/// This function never panics: decoding runs under [`catch_unwind`], and a panic inside a
/// third-party decoder becomes `CorruptImage`. That is a last resort, not the plan: known bad
/// inputs are caught earlier with typed errors. It cannot catch an abort (allocation failure),
/// which is why the limits are checked before allocating.
pub fn decode_bytes(bytes: &[u8], limits: &DecodeLimits) -> Result<DecodedImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::EmptyFile);
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(DecodeError::too_large(format!(
            "the file is {} bytes; the limit is {} bytes",
            bytes.len(),
            limits.max_bytes
        )));
    }
    let Some(format) = sniff_format(bytes) else {
        return Err(DecodeError::UnsupportedFormat {
            detail: describe_unsupported(bytes),
        });
    };
    guarded(format, || decode_known(bytes, format, limits))
}

/// Runs a decode under `catch_unwind`, turning a panic into [`DecodeError::CorruptImage`].
///
/// Third-party decoders have shipped panics on malformed input (index out of bounds, failed
/// `unwrap`s, arithmetic overflow in debug builds). For a server, one bad upload must not take
/// down a worker, so this is the last line of defence. It is not how errors are meant to be
/// found: the corpus tests check that known bad inputs never get here.
fn guarded(
    format: &str,
    decode: impl FnOnce() -> Result<DecodedImage, DecodeError>,
) -> Result<DecodedImage, DecodeError> {
    match catch_unwind(AssertUnwindSafe(decode)) {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(DecodeError::corrupt(format!(
                "{format}: the decoder failed on malformed data ({msg})"
            )))
        }
    }
}

/// Reads and decodes an image file.
///
/// The size is checked from the open file's metadata before a byte is read, so a 10 GB file
/// is refused without reading it; the read itself is also capped at `max_bytes + 1`, in case
/// the file grows in between or is not a regular file. Anything other than a regular file
/// (a directory, a FIFO, a device) is refused as [`DecodeError::Io`]. Symbolic links are
/// followed: callers that must not follow them should check before calling.
pub fn decode_file(path: &Path, limits: &DecodeLimits) -> Result<DecodedImage, DecodeError> {
    let io_err = |source| DecodeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(io_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let len = meta.len();
    if len == 0 {
        return Err(DecodeError::EmptyFile);
    }
    if len > limits.max_bytes {
        return Err(DecodeError::too_large(format!(
            "the file is {len} bytes; the limit is {} bytes",
            limits.max_bytes
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limits.max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    decode_bytes(&bytes, limits)
}

fn image_format(format: &str) -> ImageFormat {
    match format {
        "jpeg" => ImageFormat::Jpeg,
        "png" => ImageFormat::Png,
        "gif" => ImageFormat::Gif,
        "webp" => ImageFormat::WebP,
        "bmp" => ImageFormat::Bmp,
        "tiff" => ImageFormat::Tiff,
        other => unreachable!("sniff_format returned {other}"),
    }
}

/// Decodes bytes whose format is known. Runs under `catch_unwind`.
fn decode_known(
    bytes: &[u8],
    format: &'static str,
    limits: &DecodeLimits,
) -> Result<DecodedImage, DecodeError> {
    // Cheap checks on the raw header first: no decoder has run, nothing is allocated.
    if let Some((w, h)) = peek_dimensions(format, bytes) {
        limits.check_dimensions(format, w, h)?;
    }
    if format == "jpeg" && walk_jpeg(bytes).truncated {
        return Err(DecodeError::corrupt(
            "jpeg: the file is truncated (it ends before the end-of-image marker)",
        ));
    }
    if format == "webp" && webp_truncated(bytes) {
        return Err(DecodeError::corrupt(
            "webp: the file is truncated (shorter than its RIFF header says)",
        ));
    }

    decode_with_image(bytes, format, limits)
}

/// The decode proper, with the `image` crate's decoders and limits.
fn decode_with_image(
    bytes: &[u8],
    format: &'static str,
    limits: &DecodeLimits,
) -> Result<DecodedImage, DecodeError> {
    let image_err = |e| DecodeError::from_image(format, e);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format(format));
    reader.limits(limits.image_limits(format));
    // Reads headers only; the decoder checks width and height against the limits here.
    let mut decoder = reader.into_decoder().map_err(image_err)?;

    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(DecodeError::corrupt(format!(
            "{format}: the header gives a size of {width} x {height} pixels"
        )));
    }
    limits.check_dimensions(format, width, height)?;

    // A malformed EXIF block is not worth refusing a photo over: treat it as absent.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);

    // The only allocation proportional to the pixel count, now bounded by the checks above.
    let decoded = DynamicImage::from_decoder(decoder).map_err(image_err)?;
    if decoded.width() != width || decoded.height() != height {
        return Err(DecodeError::corrupt(format!(
            "{format}: decoded {} x {} pixels but the header says {width} x {height}",
            decoded.width(),
            decoded.height()
        )));
    }

    let mut upright = DynamicImage::ImageRgb8(to_rgb8(decoded));
    upright.apply_orientation(orientation);
    Ok(DecodedImage {
        rgb: upright.into_rgb8(),
        format,
        exif_orientation: orientation.to_exif(),
        source_width: width,
        source_height: height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ExtendedColorType, ImageEncoder, RgbImage};

    fn encode(format: ImageFormat, img: &RgbImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    /// The header peek is one line of defence; the decoders' own limits are the second. This
    /// checks the second alone, by calling the decode proper without the peek.
    #[test]
    fn decoders_enforce_the_limits_themselves() {
        let img = RgbImage::from_pixel(40, 8, image::Rgb([9, 9, 9]));
        let limits = DecodeLimits {
            max_dimension: 39,
            ..DecodeLimits::default()
        };
        for format in [
            ImageFormat::Png,
            ImageFormat::Jpeg,
            ImageFormat::Gif,
            ImageFormat::Bmp,
            ImageFormat::Tiff,
        ] {
            let bytes = encode(format, &img);
            let name = sniff_format(&bytes).unwrap();
            let err = decode_with_image(&bytes, name, &limits).unwrap_err();
            assert_eq!(err.code(), "image_too_large", "{name}: {err}");
            assert!(decode_with_image(&bytes, name, &DecodeLimits::default()).is_ok());
        }
        let mut webp = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
            .write_image(img.as_raw(), 40, 8, ExtendedColorType::Rgb8)
            .unwrap();
        let err = decode_with_image(&webp, "webp", &limits).unwrap_err();
        assert_eq!(err.code(), "image_too_large", "webp: {err}");
    }

    #[test]
    fn pixel_limit_is_checked_after_the_decoder_reads_the_header() {
        // TIFF has no header peek, so this exercises the check on the decoder's dimensions.
        let img = RgbImage::from_pixel(40, 8, image::Rgb([9, 9, 9]));
        let tiff = encode(ImageFormat::Tiff, &img);
        let limits = DecodeLimits {
            max_pixels: 40 * 8 - 1,
            ..DecodeLimits::default()
        };
        let err = decode_bytes(&tiff, &limits).unwrap_err();
        assert_eq!(err.code(), "image_too_large", "{err}");
    }

    #[test]
    fn a_panicking_decoder_becomes_corrupt_image() {
        let err = guarded("png", || panic!("index out of bounds")).unwrap_err();
        assert_eq!(err.code(), "corrupt_image");
        assert!(err.to_string().contains("index out of bounds"), "{err}");
        let err = guarded("gif", || std::panic::panic_any(42u32)).unwrap_err();
        assert_eq!(err.code(), "corrupt_image");
    }
}
