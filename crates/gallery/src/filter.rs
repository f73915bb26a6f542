//! Search and listing filters, evaluated two ways that must agree: on the in-memory attribute
//! table (to steer the vector search) and as SQL (the final, authoritative join).

use std::collections::HashMap;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Which faces a search or listing may return. Empty lists mean "any".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// Only faces from these sources.
    #[serde(default)]
    pub sources: Vec<i64>,
    /// Only faces whose image jurisdiction is one of these or inside one of these
    /// (`US` matches `US` and `US-IL`; `US-IL` matches only `US-IL`).
    #[serde(default)]
    pub jurisdictions: Vec<String>,
    /// Never faces whose jurisdiction is (inside) one of these.
    #[serde(default)]
    pub exclude_jurisdictions: Vec<String>,
    /// Only faces of these subjects.
    #[serde(default)]
    pub subjects: Vec<i64>,
    /// Capture time range, unix seconds, inclusive. Faces without a capture time are
    /// excluded when either bound is given.
    pub captured_from: Option<i64>,
    pub captured_to: Option<i64>,
}

/// Checks an ISO 3166-1 alpha-2 (`FR`) or ISO 3166-2 (`US-IL`, `GB-ENG`, `FR-75`) code's shape
/// and returns it upper-cased.
pub fn normalize_jurisdiction(code: &str) -> Result<String> {
    let c = code.trim().to_ascii_uppercase();
    let ok = match c.split_once('-') {
        None => c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()),
        Some((country, sub)) => {
            country.len() == 2
                && country.bytes().all(|b| b.is_ascii_uppercase())
                && (1..=3).contains(&sub.len())
                && sub.bytes().all(|b| b.is_ascii_alphanumeric())
        }
    };
    if !ok {
        bail!("{code:?} is not an ISO 3166-1 alpha-2 or ISO 3166-2 code (e.g. FR, US-IL)");
    }
    Ok(c)
}

/// `value` is `code` or a subdivision of it.
pub fn jurisdiction_within(value: &str, code: &str) -> bool {
    value == code
        || (value.len() > code.len()
            && value.starts_with(code)
            && value.as_bytes()[code.len()] == b'-')
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Normalises codes; rejects malformed ones and empty time ranges.
    pub fn validated(mut self) -> Result<Filter> {
        for list in [&mut self.jurisdictions, &mut self.exclude_jurisdictions] {
            for c in list.iter_mut() {
                *c = normalize_jurisdiction(c)?;
            }
        }
        if let (Some(a), Some(b)) = (self.captured_from, self.captured_to) {
            if a > b {
                bail!("capture time range is empty (from {a} is after to {b})");
            }
        }
        Ok(self)
    }

    pub fn accepts_jurisdiction(&self, j: Option<&str>) -> bool {
        match j {
            Some(j) => {
                (self.jurisdictions.is_empty()
                    || self.jurisdictions.iter().any(|c| jurisdiction_within(j, c)))
                    && !self
                        .exclude_jurisdictions
                        .iter()
                        .any(|c| jurisdiction_within(j, c))
            }
            None => self.jurisdictions.is_empty(),
        }
    }

    fn accepts_time(&self, t: Option<i64>) -> bool {
        if self.captured_from.is_none() && self.captured_to.is_none() {
            return true;
        }
        match t {
            None => false,
            Some(t) => {
                self.captured_from.is_none_or(|a| t >= a) && self.captured_to.is_none_or(|b| t <= b)
            }
        }
    }

    /// SQL condition over aliases `f` (face) and `i` (image), with its parameters.
    pub fn sql(&self) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut parts: Vec<String> = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        let placeholders = |n: usize| vec!["?"; n].join(",");
        if !self.sources.is_empty() {
            parts.push(format!(
                "i.source_id IN ({})",
                placeholders(self.sources.len())
            ));
            params.extend(self.sources.iter().map(|&s| Value::Integer(s)));
        }
        if !self.subjects.is_empty() {
            parts.push(format!(
                "f.subject_id IN ({})",
                placeholders(self.subjects.len())
            ));
            params.extend(self.subjects.iter().map(|&s| Value::Integer(s)));
        }
        // Codes are validated (letters, digits, one dash), so they hold no LIKE wildcards.
        if !self.jurisdictions.is_empty() {
            let any: Vec<String> = self
                .jurisdictions
                .iter()
                .map(|c| {
                    params.push(Value::Text(c.clone()));
                    params.push(Value::Text(format!("{c}-%")));
                    "(i.jurisdiction = ? OR i.jurisdiction LIKE ?)".to_string()
                })
                .collect();
            parts.push(format!("({})", any.join(" OR ")));
        }
        for c in &self.exclude_jurisdictions {
            params.push(Value::Text(c.clone()));
            params.push(Value::Text(format!("{c}-%")));
            parts.push(
                "(i.jurisdiction IS NULL OR NOT (i.jurisdiction = ? OR i.jurisdiction LIKE ?))"
                    .into(),
            );
        }
        if let Some(a) = self.captured_from {
            parts.push("i.captured_at >= ?".into());
            params.push(Value::Integer(a));
        }
        if let Some(b) = self.captured_to {
            parts.push("i.captured_at <= ?".into());
            params.push(Value::Integer(b));
        }
        if parts.is_empty() {
            ("1".into(), params)
        } else {
            (parts.join(" AND "), params)
        }
    }
}

/// What the in-memory filter needs to know about one face.
#[derive(Debug, Clone, Copy)]
pub struct FaceAttr {
    pub source_id: i64,
    pub subject_id: Option<i64>,
    pub captured_at: Option<i64>,
    /// Index into `AttrTable::jurisdictions`.
    pub jurisdiction: Option<u32>,
}

/// Face id -> attributes of one collection, with interned jurisdiction codes.
#[derive(Default)]
pub struct AttrTable {
    pub faces: HashMap<u64, FaceAttr>,
    jurisdictions: Vec<String>,
    jur_ix: HashMap<String, u32>,
}

/// A filter compiled against one attribute table.
pub struct Compiled<'a> {
    filter: &'a Filter,
    jur_ok: Vec<bool>,
    no_jur_ok: bool,
}

impl AttrTable {
    pub fn intern(&mut self, j: Option<&str>) -> Option<u32> {
        let j = j?;
        if let Some(&i) = self.jur_ix.get(j) {
            return Some(i);
        }
        let i = self.jurisdictions.len() as u32;
        self.jurisdictions.push(j.to_string());
        self.jur_ix.insert(j.to_string(), i);
        Some(i)
    }

    pub fn compile<'a>(&self, filter: &'a Filter) -> Compiled<'a> {
        Compiled {
            filter,
            jur_ok: self
                .jurisdictions
                .iter()
                .map(|j| filter.accepts_jurisdiction(Some(j)))
                .collect(),
            no_jur_ok: filter.accepts_jurisdiction(None),
        }
    }

    pub fn memory_bytes(&self) -> usize {
        self.faces.capacity() * (8 + std::mem::size_of::<FaceAttr>() + 1)
    }
}

impl Compiled<'_> {
    pub fn accepts(&self, a: &FaceAttr) -> bool {
        let f = self.filter;
        (f.sources.is_empty() || f.sources.contains(&a.source_id))
            && (f.subjects.is_empty() || a.subject_id.is_some_and(|s| f.subjects.contains(&s)))
            && match a.jurisdiction {
                Some(j) => self.jur_ok[j as usize],
                None => self.no_jur_ok,
            }
            && f.accepts_time(a.captured_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jurisdiction_codes_and_containment() {
        assert_eq!(normalize_jurisdiction("us-il").unwrap(), "US-IL");
        assert!(normalize_jurisdiction("USA").is_err());
        assert!(normalize_jurisdiction("U%").is_err());
        assert!(normalize_jurisdiction("US-ILLINOIS").is_err());
        assert!(jurisdiction_within("US-IL", "US"));
        assert!(jurisdiction_within("US", "US"));
        assert!(!jurisdiction_within("USX", "US"));
        assert!(!jurisdiction_within("US", "US-IL"));
    }

    #[test]
    fn memory_and_sql_paths_agree() {
        let f = Filter {
            jurisdictions: vec!["US".into()],
            exclude_jurisdictions: vec!["US-IL".into()],
            ..Default::default()
        };
        let mut t = AttrTable::default();
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE image(id INTEGER PRIMARY KEY, source_id INT, jurisdiction TEXT, captured_at INT);
             CREATE TABLE face(id INTEGER PRIMARY KEY, image_id INT, subject_id INT);",
        )
        .unwrap();
        let cases = [
            Some("US"),
            Some("US-IL"),
            Some("US-CA"),
            Some("FR"),
            None,
            Some("USX"),
        ];
        for (n, j) in cases.iter().enumerate() {
            conn.execute(
                "INSERT INTO image VALUES (?1, 1, ?2, NULL)",
                rusqlite::params![n as i64, j],
            )
            .unwrap();
            conn.execute("INSERT INTO face VALUES (?1, ?1, NULL)", [n as i64])
                .unwrap();
            let a = FaceAttr {
                source_id: 1,
                subject_id: None,
                captured_at: None,
                jurisdiction: t.intern(*j),
            };
            t.faces.insert(n as u64, a);
        }
        let c = t.compile(&f);
        let mut mem: Vec<i64> = t
            .faces
            .iter()
            .filter(|(_, a)| c.accepts(a))
            .map(|(id, _)| *id as i64)
            .collect();
        mem.sort();
        let (w, p) = f.sql();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT f.id FROM face f JOIN image i ON i.id = f.image_id WHERE {w} ORDER BY f.id"
            ))
            .unwrap();
        let sql: Vec<i64> = stmt
            .query_map(rusqlite::params_from_iter(p), |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(mem, vec![0, 2]);
        assert_eq!(sql, mem);
    }
}
