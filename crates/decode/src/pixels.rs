//! Turning whatever a decoder produced into 8-bit RGB.

use image::{DynamicImage, RgbImage};

/// Converts any decoded image to 8-bit sRGB-coded RGB.
///
/// - Transparent pixels are composited over **white**. Dropping alpha instead would expose
///   whatever colour the encoder left under transparent pixels, usually black, and a portrait
///   cut out onto a transparent background would become a face on black: a different input for
///   the detector than what every viewer shows. White is what browsers show on a default page.
/// - 16-bit and float samples are scaled to 8 bits with rounding (`v * 255 / 65535`), not
///   truncated to their high byte.
/// - Grey is replicated to three channels.
///
/// Eight-bit RGB input is moved, not copied.
pub(crate) fn to_rgb8(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        img @ (DynamicImage::ImageRgba8(_) | DynamicImage::ImageLumaA8(_)) => {
            over_white_8(img.into_rgba8())
        }
        img if img.color().has_alpha() => over_white_16(img.into_rgba16()),
        img => img.into_rgb8(),
    }
}

/// Composites 8-bit RGBA over white, reusing the RGBA buffer for the RGB output.
fn over_white_8(rgba: image::RgbaImage) -> RgbImage {
    let (w, h) = rgba.dimensions();
    let mut buf = rgba.into_raw();
    let pixels = buf.len() / 4;
    for i in 0..pixels {
        let a = u32::from(buf[4 * i + 3]);
        for c in 0..3 {
            let v = u32::from(buf[4 * i + c]);
            // Rounded v*a/255 + 255*(255-a)/255; the output index 3i+c never overtakes the
            // input index 4i+c, so compacting in place is safe.
            buf[3 * i + c] = ((v * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    buf.truncate(pixels * 3);
    RgbImage::from_raw(w, h, buf).expect("3 bytes per pixel")
}

/// Composites 16-bit RGBA over white at full precision, then rounds to 8 bits.
fn over_white_16(rgba: image::ImageBuffer<image::Rgba<u16>, Vec<u16>>) -> RgbImage {
    let (w, h) = rgba.dimensions();
    let src = rgba.as_raw();
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    for px in src.chunks_exact(4) {
        let a = u64::from(px[3]);
        for &v in &px[..3] {
            let v16 = (u64::from(v) * a + 65535 * (65535 - a) + 32767) / 65535;
            out.push(((v16 + 128) / 257) as u8);
        }
    }
    RgbImage::from_raw(w, h, out).expect("3 bytes per pixel")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, LumaA, Rgba};

    #[test]
    fn alpha_8_over_white() {
        let img = ImageBuffer::from_vec(
            4,
            1,
            vec![
                10, 20, 30, 255, // opaque: unchanged
                10, 20, 30, 0, // transparent: white
                0, 0, 0, 128, // half black: mid grey
                200, 0, 0, 51, // 20% red
            ],
        )
        .unwrap();
        let rgb = to_rgb8(DynamicImage::ImageRgba8(img));
        assert_eq!(rgb.dimensions(), (4, 1));
        assert_eq!(rgb.get_pixel(0, 0).0, [10, 20, 30]);
        assert_eq!(rgb.get_pixel(1, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(2, 0).0, [127, 127, 127]);
        // 200*0.2 + 255*0.8 = 244; 0*0.2 + 255*0.8 = 204
        assert_eq!(rgb.get_pixel(3, 0).0, [244, 204, 204]);
    }

    #[test]
    fn grey_alpha_over_white() {
        let img: ImageBuffer<LumaA<u8>, _> =
            ImageBuffer::from_vec(2, 1, vec![0, 0, 50, 255]).unwrap();
        let rgb = to_rgb8(DynamicImage::ImageLumaA8(img));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [50, 50, 50]);
    }

    #[test]
    fn sixteen_bit_scaled_with_rounding() {
        let img: ImageBuffer<Rgba<u16>, _> = ImageBuffer::from_vec(
            3,
            1,
            vec![
                65535,
                0,
                0x8080,
                65535, // opaque
                0,
                0,
                0,
                0, // transparent
                257 * 100,
                0,
                65535,
                32768, // half
            ],
        )
        .unwrap();
        let rgb = to_rgb8(DynamicImage::ImageRgba16(img));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 0, 128]);
        assert_eq!(rgb.get_pixel(1, 0).0, [255, 255, 255]);
        // 100*0.5 + 255*0.5 = 177.5; 0 + 127.5; 255
        let p = rgb.get_pixel(2, 0).0;
        assert!(
            p[0].abs_diff(178) <= 1 && p[1].abs_diff(128) <= 1 && p[2] == 255,
            "{p:?}"
        );
    }

    #[test]
    fn sixteen_bit_opaque_uses_rounding_not_truncation() {
        // 0xFF00 truncated to its high byte is 255; scaled, 65280 * 255 / 65535 = 254.0.
        let img: ImageBuffer<image::Rgb<u16>, _> =
            ImageBuffer::from_vec(1, 1, vec![0xFF00, 0xFFFF, 0x0080]).unwrap();
        let rgb = to_rgb8(DynamicImage::ImageRgb16(img));
        assert_eq!(rgb.get_pixel(0, 0).0, [254, 255, 0]);
    }
}
