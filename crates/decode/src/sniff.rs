//! Format detection from magic bytes.
//!
//! The format is decided by content, never by file name or by a client's `Content-Type`:
//! both are chosen by the uploader. Each signature is checked strictly enough that ordinary
//! text does not match it (a text file starting with "BM" is not a bitmap).

/// Recognises a supported image format from its first bytes, without decoding.
///
/// Returns one of `"jpeg"`, `"png"`, `"webp"`, `"gif"`, `"bmp"`, `"tiff"`, or `None` when the
/// bytes do not start like any of them.
pub fn sniff_format(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some("jpeg");
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some("png");
    }
    if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        return Some("gif");
    }
    if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Some("webp");
    }
    // Classic TIFF ("*" = 42) and BigTIFF ("+" = 43), little and big endian.
    if bytes.starts_with(b"II*\0")
        || bytes.starts_with(b"MM\0*")
        || bytes.starts_with(b"II+\0")
        || bytes.starts_with(b"MM\0+")
    {
        return Some("tiff");
    }
    if is_bmp(bytes) {
        return Some("bmp");
    }
    None
}

/// "BM" alone is too weak a signature (it starts ordinary words), so the DIB header size that
/// follows the 14-byte file header must also be one of the sizes that Windows defines.
fn is_bmp(bytes: &[u8]) -> bool {
    if bytes.len() < 18 || !bytes.starts_with(b"BM") {
        return false;
    }
    let dib_size = u32::from_le_bytes([bytes[14], bytes[15], bytes[16], bytes[17]]);
    matches!(dib_size, 12 | 16 | 40 | 52 | 56 | 64 | 108 | 124)
}

/// For bytes that [`sniff_format`] rejected, a short description of what they are when it can
/// be told, so that the error tells the user what they uploaded and what to do instead.
pub(crate) fn describe_unsupported(bytes: &[u8]) -> Option<String> {
    let what: &str = if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        match &bytes[8..12] {
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => {
                "HEIC/HEIF images are not supported; export the photo as JPEG (on iPhone: \
                 Settings > Camera > Formats > Most Compatible) or convert it"
            }
            b"avif" | b"avis" => "AVIF images are not supported; convert the image to JPEG or PNG",
            _ => "this is a video or ISO media file (MP4/MOV), not a still image",
        }
    } else if bytes.starts_with(b"%PDF") {
        "this is a PDF document, not an image; export the page as JPEG or PNG"
    } else if bytes.starts_with(&[0xFF, 0x0A]) || bytes.starts_with(b"\0\0\0\x0cJXL \r\n\x87\n") {
        "JPEG XL images are not supported; convert the image to JPEG or PNG"
    } else if bytes.starts_with(b"\0\0\0\x0cjP  \r\n\x87\n")
        || bytes.starts_with(&[0xFF, 0x4F, 0xFF, 0x51])
    {
        "JPEG 2000 images are not supported; convert the image to JPEG or PNG"
    } else if bytes.starts_with(b"8BPS") {
        "Photoshop documents are not supported; export the image as JPEG or PNG"
    } else if bytes.starts_with(b"PK\x03\x04") {
        "this is a ZIP archive, not an image; upload the images it contains one by one"
    } else if let Some(kind) = markup_kind(bytes) {
        kind
    } else if looks_like_text(bytes) {
        "this is a text file, not an image"
    } else {
        return None;
    };
    Some(what.to_string())
}

/// HTML, SVG and other XML, recognised by their first tag.
fn markup_kind(bytes: &[u8]) -> Option<&'static str> {
    let head = &bytes[..bytes.len().min(512)];
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = head.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = head[start..].to_ascii_lowercase();
    if head.starts_with(b"<!doctype html") || head.starts_with(b"<html") {
        Some("this is an HTML page, not an image; save the image itself")
    } else if head.starts_with(b"<svg") || contains(&head, b"<svg") {
        Some("SVG vector images are not supported; export the image as PNG")
    } else if head.starts_with(b"<?xml") {
        Some("this is an XML document, not an image")
    } else {
        None
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// True when the first bytes are valid UTF-8 with no control characters other than
/// whitespace. Image headers contain NULs or high bytes almost immediately.
fn looks_like_text(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(1024)];
    // A multi-byte character may straddle the cut; accept an error at the very end.
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or("")
        }
        Err(_) => return false,
    };
    !valid.is_empty()
        && valid
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\x0c'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_supported_formats() {
        assert_eq!(sniff_format(b"\xFF\xD8\xFF\xE0\0\x10JFIF"), Some("jpeg"));
        assert_eq!(sniff_format(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some("png"));
        assert_eq!(sniff_format(b"GIF89a\x01\0\x01\0"), Some("gif"));
        assert_eq!(sniff_format(b"GIF87a"), Some("gif"));
        assert_eq!(sniff_format(b"RIFF\x10\0\0\0WEBPVP8 "), Some("webp"));
        assert_eq!(sniff_format(b"II*\0\x08\0\0\0"), Some("tiff"));
        assert_eq!(sniff_format(b"MM\0*\0\0\0\x08"), Some("tiff"));
        assert_eq!(sniff_format(b"II+\0\x08\0\0\0"), Some("tiff"));
        let mut bmp = b"BM".to_vec();
        bmp.extend_from_slice(&[0; 12]);
        bmp.extend_from_slice(&40u32.to_le_bytes());
        assert_eq!(sniff_format(&bmp), Some("bmp"));
    }

    #[test]
    fn rejects_lookalikes() {
        assert_eq!(sniff_format(b""), None);
        assert_eq!(sniff_format(b"\xFF\xD8"), None);
        assert_eq!(sniff_format(b"BMW is a car maker, founded in 1916."), None);
        assert_eq!(sniff_format(b"RIFF\x10\0\0\0WAVEfmt "), None);
        assert_eq!(sniff_format(b"GIF90a"), None);
        assert_eq!(sniff_format(b"%PDF-1.7"), None);
    }

    #[test]
    fn describes_common_non_images() {
        let heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic";
        assert!(describe_unsupported(heic).unwrap().contains("HEIC"));
        let avif = b"\0\0\0\x1cftypavif\0\0\0\0avifmif1";
        assert!(describe_unsupported(avif).unwrap().contains("AVIF"));
        assert!(describe_unsupported(b"%PDF-1.4\n%\xE2\xE3")
            .unwrap()
            .contains("PDF"));
        assert!(describe_unsupported(b"  <!DOCTYPE html><html>")
            .unwrap()
            .contains("HTML"));
        assert!(
            describe_unsupported(b"<?xml version=\"1.0\"?>\n<svg xmlns=")
                .unwrap()
                .contains("SVG")
        );
        assert!(describe_unsupported("hello, wörld\n".as_bytes())
            .unwrap()
            .contains("text"));
        assert_eq!(describe_unsupported(&[0, 1, 2, 3, 200, 201]), None);
    }
}
