//! Reading image dimensions from headers, and JPEG structure, without decoding.
//!
//! The decoders check dimensions too, but they disagree on how: BMP reports an over-wide header
//! as a decoding error, PNG as a limit error, and some decoders look only after building
//! internal state. Peeking at the fixed-layout headers first gives every format the same
//! answer ([`DecodeError::ImageTooLarge`](crate::DecodeError)) before any decoder runs. TIFF is
//! left to its decoder: its dimensions live in an IFD that may be anywhere in the file.

/// Width and height as the header states them, for formats whose header has a fixed layout.
/// `None` when the header is too short or not laid out as expected; the decoder then reports
/// the problem.
pub(crate) fn peek_dimensions(format: &str, b: &[u8]) -> Option<(u32, u32)> {
    match format {
        "png" => {
            if b.len() < 24 || &b[12..16] != b"IHDR" {
                return None;
            }
            Some((be32(&b[16..20]), be32(&b[20..24])))
        }
        "gif" => {
            if b.len() < 10 {
                return None;
            }
            Some((le16(&b[6..8]), le16(&b[8..10])))
        }
        "bmp" => {
            let dib_size = le32(b.get(14..18)?);
            if dib_size == 12 {
                Some((le16(b.get(18..20)?), le16(b.get(20..22)?)))
            } else {
                // Height is negative for top-down bitmaps; a negative width is invalid, but
                // its magnitude is what a decoder would try to allocate.
                let w = le32(b.get(18..22)?) as i32;
                let h = le32(b.get(22..26)?) as i32;
                Some((w.unsigned_abs(), h.unsigned_abs()))
            }
        }
        "webp" => {
            let fourcc = b.get(12..16)?;
            let data = b.get(20..)?;
            match fourcc {
                b"VP8X" => {
                    let d = data.get(4..10)?;
                    let w = u32::from_le_bytes([d[0], d[1], d[2], 0]) + 1;
                    let h = u32::from_le_bytes([d[3], d[4], d[5], 0]) + 1;
                    Some((w, h))
                }
                b"VP8 " => {
                    let d = data.get(0..10)?;
                    if d[3..6] != [0x9d, 0x01, 0x2a] {
                        return None;
                    }
                    Some((le16(&d[6..8]) & 0x3FFF, le16(&d[8..10]) & 0x3FFF))
                }
                b"VP8L" => {
                    let d = data.get(0..5)?;
                    if d[0] != 0x2f {
                        return None;
                    }
                    let bits = le32(&d[1..5]);
                    Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
                }
                _ => None,
            }
        }
        "jpeg" => walk_jpeg(b).frame_size,
        _ => None,
    }
}

/// True when a WebP file is shorter than its RIFF header or one of its chunks says it is.
///
/// The VP8 decoder reads past the end of a short partition as zeros and succeeds, so a cut
/// file would decode with its bottom filled in. libwebp refuses such files too.
pub(crate) fn webp_truncated(b: &[u8]) -> bool {
    let Some(riff_size) = b.get(4..8).map(le32) else {
        return true;
    };
    let end = 8 + riff_size as usize;
    if end > b.len() {
        return true;
    }
    let mut pos = 12;
    while pos + 8 <= end {
        let size = le32(&b[pos + 4..pos + 8]) as usize;
        pos = pos
            .saturating_add(8)
            .saturating_add(size)
            .saturating_add(size & 1);
    }
    // A chunk header cut in two, or a last chunk running past the RIFF end (padding aside).
    pos < end || pos > end + 1
}

/// What a walk over a JPEG's marker segments found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JpegStructure {
    /// `(width, height)` from the first start-of-frame segment.
    pub frame_size: Option<(u32, u32)>,
    /// True when the bytes run out before the end-of-image marker.
    pub truncated: bool,
}

/// Walks the marker segments of a JPEG, skipping over entropy-coded scan data.
///
/// The JPEG decoder is lenient by design: when a scan runs out of bytes it fills the rest of
/// the image with grey and reports success. For a face index that is the wrong trade: a
/// half-grey upload yields garbage embeddings without any error. Since entropy-coded data
/// cannot contain an `FF D9` (every `FF` in it is stuffed as `FF 00`), a file in which the
/// walk reaches the end of the bytes without meeting the end-of-image marker was cut short.
///
/// The walk is deliberately forgiving about everything else (stray fill bytes, unknown
/// markers, junk between segments): those are the decoder's business, and flagging them here
/// would reject files that every viewer displays.
pub(crate) fn walk_jpeg(b: &[u8]) -> JpegStructure {
    let mut out = JpegStructure {
        frame_size: None,
        truncated: false,
    };
    let cut = |out: JpegStructure| JpegStructure {
        truncated: true,
        ..out
    };
    let mut pos = 2; // after SOI
    loop {
        // Find the next marker: 0xFF, optional 0xFF fill bytes, then the marker code.
        match b
            .get(pos..)
            .and_then(|rest| rest.iter().position(|&x| x == 0xFF))
        {
            Some(skip) => pos += skip,
            None => return cut(out),
        }
        while b.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let Some(&marker) = b.get(pos) else {
            return cut(out);
        };
        pos += 1;
        match marker {
            0xD9 => return out,                    // EOI
            0x00 | 0x01 | 0xD0..=0xD8 => continue, // no length: stuffing, TEM, RSTn, SOI
            _ => {}
        }
        let Some(len) = b.get(pos..pos + 2) else {
            return cut(out);
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 {
            return out; // malformed: let the decoder say so
        }
        let is_sof = matches!(marker, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF);
        if is_sof && out.frame_size.is_none() {
            if let Some(seg) = b.get(pos + 2..pos + 7) {
                let h = u32::from(u16::from_be_bytes([seg[1], seg[2]]));
                let w = u32::from(u16::from_be_bytes([seg[3], seg[4]]));
                out.frame_size = Some((w, h));
            }
        }
        pos += len;
        if pos > b.len() {
            return cut(out);
        }
        if marker == 0xDA {
            // Entropy-coded data follows the SOS header: skip to the next real marker.
            match skip_entropy_coded(b, pos) {
                Some(next) => pos = next,
                None => return cut(out),
            }
        }
    }
}

/// Index of the `0xFF` that starts the first marker after `pos` that is not a restart marker
/// or a stuffed zero, or `None` when the bytes end first.
fn skip_entropy_coded(b: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        pos += b.get(pos..)?.iter().position(|&x| x == 0xFF)?;
        let ff = pos;
        while b.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        match b.get(pos)? {
            0x00 | 0xD0..=0xD7 => pos += 1,
            _ => return Some(ff),
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
fn le16(b: &[u8]) -> u32 {
    u32::from(u16::from_le_bytes([b[0], b[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, APP0 (with an `FF D9` inside its payload, as an embedded thumbnail would have),
    /// SOF0 3x2, SOS, entropy data with a stuffed byte and a restart marker, EOI.
    fn tiny_jpeg() -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8];
        j.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x06, 0xFF, 0xD9, 0x00, 0x00]);
        j.extend_from_slice(&[
            0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x02, 0x00, 0x03, 0x01, 0x01, 0x11, 0x00,
        ]);
        j.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00]);
        j.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF]);
        j.extend_from_slice(&[0xFF, 0xD9]);
        j
    }

    #[test]
    fn complete_jpeg() {
        let s = walk_jpeg(&tiny_jpeg());
        assert_eq!(s.frame_size, Some((3, 2)));
        assert!(!s.truncated);
        assert_eq!(peek_dimensions("jpeg", &tiny_jpeg()), Some((3, 2)));
    }

    #[test]
    fn every_cut_is_truncated() {
        let j = tiny_jpeg();
        for cut in 2..j.len() {
            assert!(walk_jpeg(&j[..cut]).truncated, "cut at {cut}");
        }
    }

    #[test]
    fn trailing_data_after_eoi_is_fine() {
        let mut j = tiny_jpeg();
        j.extend_from_slice(b"trailing vendor data");
        assert!(!walk_jpeg(&j).truncated);
    }

    #[test]
    fn fixed_headers() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(peek_dimensions("png", &png), Some((100_000, 7)));
        assert_eq!(peek_dimensions("png", &png[..20]), None);

        assert_eq!(
            peek_dimensions("gif", b"GIF89a\xff\xff\x02\x00"),
            Some((65535, 2))
        );

        let mut bmp = b"BM".to_vec();
        bmp.extend_from_slice(&[0; 12]);
        bmp.extend_from_slice(&40u32.to_le_bytes());
        bmp.extend_from_slice(&5i32.to_le_bytes());
        bmp.extend_from_slice(&(-9i32).to_le_bytes());
        assert_eq!(peek_dimensions("bmp", &bmp), Some((5, 9)));

        let mut webp = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
        webp.extend_from_slice(&[0x9f, 0x86, 0x01, 0x01, 0x00, 0x00]); // 99999+1, 1+1
        assert_eq!(peek_dimensions("webp", &webp), Some((100_000, 2)));

        assert_eq!(peek_dimensions("tiff", b"II*\0"), None);
    }

    #[test]
    fn webp_sizes() {
        let mut w = b"RIFF\x12\0\0\0WEBPVP8L\x05\0\0\0\x2f\0\0\0\0\0".to_vec();
        assert!(!webp_truncated(&w));
        w.extend_from_slice(b"trailing");
        assert!(!webp_truncated(&w), "data after the RIFF end is ignored");
        for cut in 0..26 {
            assert!(webp_truncated(&w[..cut]), "cut at {cut}");
        }
        // RIFF size fits, but the chunk inside claims more than the RIFF holds.
        let mut w = b"RIFF\x12\0\0\0WEBPVP8L\x50\0\0\0\x2f\0\0\0\0\0".to_vec();
        w.extend_from_slice(&[0; 100]);
        assert!(webp_truncated(&w));
    }
}
