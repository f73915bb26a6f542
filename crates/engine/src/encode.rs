//! Encoding what the gallery keeps of a face: the aligned crop (PNG, lossless, so a later
//! model can re-embed it) and a thumbnail of the face in its photo (JPEG).

use std::io::Cursor;

use anyhow::{Context, Result};
use image::{imageops, ImageFormat, RgbImage};
use visage_core::BBox;

/// Longest side of a thumbnail, pixels.
pub const THUMB_PX: u32 = 128;

pub fn png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .context("encoding PNG")?;
    Ok(out.into_inner())
}

/// The face box grown by 30% on each side, clamped to the photo, scaled to fit `THUMB_PX`.
pub fn thumbnail(photo: &RgbImage, b: &BBox) -> Result<Vec<u8>> {
    let (w, h) = (photo.width() as f32, photo.height() as f32);
    let mx = b.width() * 0.3;
    let my = b.height() * 0.3;
    let x0 = (b.x1 - mx).clamp(0.0, w - 1.0) as u32;
    let y0 = (b.y1 - my).clamp(0.0, h - 1.0) as u32;
    let x1 = ((b.x2 + mx).clamp(0.0, w) as u32).max(x0 + 1);
    let y1 = ((b.y2 + my).clamp(0.0, h) as u32).max(y0 + 1);
    let view = imageops::crop_imm(photo, x0, y0, x1 - x0, y1 - y0).to_image();
    let scale = (THUMB_PX as f32 / view.width().max(view.height()) as f32).min(1.0);
    let tw = ((view.width() as f32 * scale).round() as u32).max(1);
    let th = ((view.height() as f32 * scale).round() as u32).max(1);
    let small = imageops::resize(&view, tw, th, imageops::FilterType::Triangle);
    let mut out = Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&small)
        .context("encoding JPEG thumbnail")?;
    Ok(out.into_inner())
}
