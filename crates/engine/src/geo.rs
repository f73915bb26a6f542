//! Where and when a photo was taken, from its EXIF block: GPS position (and from it, offline,
//! the ISO 3166-1/2 jurisdiction, e.g. `US-IL`, with the `country-boundaries` data) and the
//! original capture time.

use std::io::Cursor;
use std::sync::OnceLock;

use country_boundaries::{CountryBoundaries, LatLon, BOUNDARIES_ODBL_360X180};

/// What the EXIF block says, when it says it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExifFacts {
    /// (latitude, longitude) in degrees, WGS 84.
    pub gps: Option<(f64, f64)>,
    /// DateTimeOriginal as unix seconds; EXIF times carry no zone, so read as UTC unless an
    /// OffsetTimeOriginal field gives the offset.
    pub captured_at: Option<i64>,
}

/// Reads GPS and capture time from a JPEG/TIFF/PNG/WebP EXIF block; anything malformed is
/// treated as absent (EXIF is untrusted input).
pub fn read_exif(bytes: &[u8]) -> ExifFacts {
    let Ok(exif) = exif::Reader::new().read_from_container(&mut Cursor::new(bytes)) else {
        return ExifFacts::default();
    };
    let coord = |tag, ref_tag, neg: &str| -> Option<f64> {
        let f = exif.get_field(tag, exif::In::PRIMARY)?;
        let exif::Value::Rational(v) = &f.value else {
            return None;
        };
        if v.len() < 3 || v.iter().any(|r| r.denom == 0) {
            return None;
        }
        let deg = v[0].to_f64() + v[1].to_f64() / 60.0 + v[2].to_f64() / 3600.0;
        let r = exif.get_field(ref_tag, exif::In::PRIMARY)?;
        let s = r.display_value().to_string();
        let sign = if s.trim_matches('"').eq_ignore_ascii_case(neg) {
            -1.0
        } else {
            1.0
        };
        Some(sign * deg).filter(|x| x.is_finite())
    };
    let lat = coord(exif::Tag::GPSLatitude, exif::Tag::GPSLatitudeRef, "S");
    let lon = coord(exif::Tag::GPSLongitude, exif::Tag::GPSLongitudeRef, "W");
    let gps = match (lat, lon) {
        (Some(a), Some(o)) if (-90.0..=90.0).contains(&a) && (-180.0..=180.0).contains(&o) => {
            Some((a, o))
        }
        _ => None,
    };
    let captured_at = exif
        .get_field(exif::Tag::DateTimeOriginal, exif::In::PRIMARY)
        .and_then(|f| {
            let exif::Value::Ascii(v) = &f.value else {
                return None;
            };
            let mut dt = exif::DateTime::from_ascii(v.first()?).ok()?;
            if let Some(off) = exif.get_field(exif::Tag::OffsetTimeOriginal, exif::In::PRIMARY) {
                if let exif::Value::Ascii(o) = &off.value {
                    if let Some(o) = o.first() {
                        let _ = dt.parse_offset(o);
                    }
                }
            }
            unix_seconds(&dt)
        });
    ExifFacts { gps, captured_at }
}

fn unix_seconds(dt: &exif::DateTime) -> Option<i64> {
    let (y, m, d) = (dt.year as i64, dt.month as i64, dt.day as i64);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || dt.hour > 23 || dt.minute > 59 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let offset = dt.offset.map(|o| o as i64 * 60).unwrap_or(0);
    Some(
        days * 86_400 + dt.hour as i64 * 3600 + dt.minute as i64 * 60 + dt.second.min(60) as i64
            - offset,
    )
}

fn boundaries() -> Option<&'static CountryBoundaries> {
    static B: OnceLock<Option<CountryBoundaries>> = OnceLock::new();
    B.get_or_init(|| CountryBoundaries::from_reader(BOUNDARIES_ODBL_360X180).ok())
        .as_ref()
}

/// The most specific ISO 3166 code at a position (`US-IL` rather than `US`), if on land
/// covered by the data.
pub fn jurisdiction_at(lat: f64, lon: f64) -> Option<String> {
    let p = LatLon::new(lat, lon).ok()?;
    let ids = boundaries()?.ids(p);
    // Ordered smallest region first; prefer an ISO 3166-2 code when there is one.
    ids.iter()
        .find(|id| id.contains('-'))
        .or_else(|| ids.first())
        .map(|s| s.to_string())
        .filter(|s| visage_gallery::normalize_jurisdiction(s).is_ok())
}

/// Test support (not part of the API).
/// Test support: a JPEG with an EXIF block holding a GPS position and a capture time.
#[doc(hidden)]
pub fn with_exif(jpeg: &[u8], lat: f64, lon: f64, when: &str) -> Vec<u8> {
    use exif::{Field, In, Rational, Tag, Value};
    let dms = |x: f64| {
        let x = x.abs();
        let d = x.floor();
        let m = ((x - d) * 60.0).floor();
        let s = ((x - d) * 60.0 - m) * 60.0;
        Value::Rational(vec![
            Rational {
                num: d as u32,
                denom: 1,
            },
            Rational {
                num: m as u32,
                denom: 1,
            },
            Rational {
                num: (s * 1000.0).round() as u32,
                denom: 1000,
            },
        ])
    };
    let fields = [
        Field {
            tag: Tag::GPSLatitudeRef,
            ifd_num: In::PRIMARY,
            value: Value::Ascii(vec![if lat < 0.0 {
                b"S".to_vec()
            } else {
                b"N".to_vec()
            }]),
        },
        Field {
            tag: Tag::GPSLatitude,
            ifd_num: In::PRIMARY,
            value: dms(lat),
        },
        Field {
            tag: Tag::GPSLongitudeRef,
            ifd_num: In::PRIMARY,
            value: Value::Ascii(vec![if lon < 0.0 {
                b"W".to_vec()
            } else {
                b"E".to_vec()
            }]),
        },
        Field {
            tag: Tag::GPSLongitude,
            ifd_num: In::PRIMARY,
            value: dms(lon),
        },
        Field {
            tag: Tag::DateTimeOriginal,
            ifd_num: In::PRIMARY,
            value: Value::Ascii(vec![when.as_bytes().to_vec()]),
        },
    ];
    let mut w = exif::experimental::Writer::new();
    for f in &fields {
        w.push_field(f);
    }
    let mut tiff = Cursor::new(Vec::new());
    w.write(&mut tiff, false).unwrap();
    let tiff = tiff.into_inner();
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend_from_slice(&((tiff.len() + 8) as u16).to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(&tiff);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gps_gives_the_subdivision() {
        // Chicago, Paris, mid-Atlantic.
        assert_eq!(jurisdiction_at(41.8781, -87.6298).as_deref(), Some("US-IL"));
        assert!(jurisdiction_at(48.8566, 2.3522).unwrap().starts_with("FR"));
        assert_eq!(jurisdiction_at(30.0, -40.0), None);
    }

    #[test]
    fn exif_round_trip_and_garbage() {
        let jpeg = [0xFF, 0xD8, 0xFF, 0xD9];
        let with = with_exif(&jpeg, 41.8781, -87.6298, "2019:05:04 12:30:00");
        let f = read_exif(&with);
        let (lat, lon) = f.gps.unwrap();
        assert!(
            (lat - 41.8781).abs() < 1e-4 && (lon + 87.6298).abs() < 1e-4,
            "{lat} {lon}"
        );
        assert_eq!(f.captured_at, Some(1_556_973_000));
        assert_eq!(read_exif(&jpeg), ExifFacts::default());
        assert_eq!(
            read_exif(b"\xFF\xD8\xFF\xE1\x00\x10Exif\0\0garbage!"),
            ExifFacts::default()
        );
    }
}
