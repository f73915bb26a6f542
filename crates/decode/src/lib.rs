//! Safe decoding of untrusted image bytes into upright 8-bit RGB.
//!
//! Everything this crate reads was uploaded by someone we do not trust: a probe photo posted
//! to the API, a file in a crawled archive. Image formats are a classic attack surface (lying
//! headers, decompression bombs, truncated streams, decoder bugs), so this crate is the one
//! place where bytes become pixels, and it is written to fail closed:
//!
//! - **Format by content.** [`sniff_format`] reads magic bytes; names and MIME types are
//!   ignored.
//! - **Limits before allocation.** [`DecodeLimits`] bounds file size, width, height and pixel
//!   count. Header dimensions are checked before any decoder runs and again as the decoder
//!   reports them, before the pixel buffer exists; decoders also get an [`image::Limits`].
//! - **Typed errors.** [`DecodeError`] says whether the file was empty, too large, not an image
//!   we support, or damaged, with a stable [`DecodeError::code`] for API responses and audit.
//! - **No panics escape.** Decoding runs under `catch_unwind` as a last resort.
//! - **One output shape.** Whatever the input (grey, palette, 16-bit, CMYK, alpha, rotated by
//!   EXIF), the output is an upright [`image::RgbImage`], so the face pipeline has one case.
//!
//! Supported: JPEG (baseline, progressive, greyscale, CMYK, YCCK), PNG (all bit depths and
//! colour types), WebP (lossy, lossless, first frame of an animation), GIF (first frame), BMP,
//! TIFF (first page). Not supported, with an error that says so: HEIC/HEIF and AVIF (no
//! decoder in the dependency set), JPEG XL, JPEG 2000, SVG, PDF.

mod decode;
mod error;
mod header;
mod limits;
mod pixels;
mod sniff;

pub use decode::{decode_bytes, decode_file, DecodedImage};
pub use error::DecodeError;
pub use limits::DecodeLimits;
pub use sniff::sniff_format;
