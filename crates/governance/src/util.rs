//! Small helpers: clocks, randomness, canonical JSON, calendar months, ISO 3166 codes.

use anyhow::Context;
use serde_json::Value;

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix time in seconds.
pub fn now_s() -> i64 {
    now_ms().div_euclid(1000)
}

/// Bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("OS randomness unavailable: {e}"))?;
    Ok(b)
}

/// A random password of `len` characters from an alphabet without look-alikes (0/O, 1/l/I).
pub fn random_password(len: usize) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let buf = random_bytes::<64>().context("generating a password")?;
        for b in buf {
            // Rejection sampling keeps the distribution uniform.
            let limit = 256 - 256 % ALPHABET.len();
            if (b as usize) < limit && out.len() < len {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// Canonical JSON text: object keys sorted by their UTF-8 bytes at every level, no
/// whitespace, strings and numbers as `serde_json` writes them. Independent of whether
/// `serde_json` was built with `preserve_order`.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("string serialises"));
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other).expect("scalar serialises")),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// (year, month) of a day count since 1970-01-01 (`civil_from_days`).
fn year_month_from_days(z: i64) -> (i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m)
}

/// Unix seconds of the first instant of the UTC calendar month containing `unix_s`.
pub fn month_start_utc(unix_s: i64) -> i64 {
    let (y, m) = year_month_from_days(unix_s.div_euclid(86_400));
    days_from_civil(y, m, 1) * 86_400
}

/// Validates and upper-cases an ISO 3166-1 alpha-2 code ("US") or ISO 3166-2 subdivision code
/// ("US-IL", "GB-ENG", "FR-75C"): two letters, optionally a hyphen and 1-3 letters or digits.
pub fn normalise_jurisdiction(s: &str) -> Option<String> {
    let up = s.trim().to_ascii_uppercase();
    let (country, sub) = match up.split_once('-') {
        Some((c, s)) => (c, Some(s)),
        None => (up.as_str(), None),
    };
    let country_ok = country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase());
    let sub_ok = sub.is_none_or(|s| {
        (1..=3).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    });
    (country_ok && sub_ok).then_some(up)
}

/// ISO 3166 prefix semantics: pattern "US" matches "US" and "US-IL"; "US-IL" matches only
/// "US-IL". Case-insensitive.
pub fn jurisdiction_matches(pattern: &str, code: &str) -> bool {
    let (p, c) = (pattern.trim(), code.trim());
    if p.eq_ignore_ascii_case(c) {
        return true;
    }
    c.len() > p.len()
        && c.as_bytes()[p.len()] == b'-'
        && c[..p.len()].eq_ignore_ascii_case(p)
        && !p.contains('-')
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_start() {
        // 2024-02-29T12:00:00Z -> 2024-02-01T00:00:00Z
        assert_eq!(month_start_utc(1_709_208_000), 1_706_745_600);
        // 2024-03-01T00:00:00Z is its own month start.
        assert_eq!(month_start_utc(1_709_251_200), 1_709_251_200);
        // one second earlier belongs to February
        assert_eq!(month_start_utc(1_709_251_199), 1_706_745_600);
        assert_eq!(month_start_utc(0), 0);
    }

    #[test]
    fn jurisdictions() {
        assert_eq!(normalise_jurisdiction("us-il").as_deref(), Some("US-IL"));
        assert_eq!(normalise_jurisdiction("FR").as_deref(), Some("FR"));
        assert_eq!(normalise_jurisdiction("FR-75C").as_deref(), Some("FR-75C"));
        for bad in ["", "U", "USA", "US-", "US-ILLI", "U1", "US_IL", "US-I L"] {
            assert_eq!(normalise_jurisdiction(bad), None, "{bad}");
        }
        assert!(jurisdiction_matches("US", "US"));
        assert!(jurisdiction_matches("US", "US-IL"));
        assert!(jurisdiction_matches("us", "US-IL"));
        assert!(jurisdiction_matches("US-IL", "US-IL"));
        assert!(!jurisdiction_matches("US-IL", "US"));
        assert!(!jurisdiction_matches("US-IL", "US-ILX"));
        assert!(!jurisdiction_matches("US", "USA"));
        assert!(!jurisdiction_matches("U", "US"));
    }

    #[test]
    fn canonical() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[1,{"z":0,"y":"<"}],"c":null}}"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":null,"d":[1,{"y":"<","z":0}]},"b":1}"#
        );
    }

    #[test]
    fn passwords() {
        let p = random_password(20).unwrap();
        assert_eq!(p.len(), 20);
        assert_ne!(p, random_password(20).unwrap());
    }
}
