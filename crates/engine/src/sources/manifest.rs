//! Ingest manifests: one image per row, as JSON Lines (`.jsonl`, `.ndjson`: one object per
//! line, blank lines skipped) or CSV (`.csv`, with a header row). The format comes from the
//! extension. Rows are read one at a time, and each row's file only when its row is reached.
//!
//! Fields (JSON keys and CSV header names, matched case-insensitively; others are ignored):
//! `path` or `file` (a local file; relative paths resolve against the manifest's folder;
//! absolute paths are allowed, since the manifest is the operator's own statement, but the
//! path must lead to a regular file, through symbolic links or not), `url` (where the image
//! came from, recorded as `uri`; a row with a url and no path is downloaded only when the
//! operator asked for it ([`UrlFetch`], `visage ingest --fetch-urls`): exactly that url, over
//! http or https, never a link found in what it returns; otherwise the row is a
//! `url_fetch_disabled` error), `page_url`, `captured_at` (unix seconds or
//! an RFC 3339 date-time), `licence`/`license`, `legal_basis`, `jurisdiction`,
//! `subject`/`subject_label`, `external_id`/`id`. When a row has both names of a field, the
//! first one listed wins. Empty values count as absent. `uri` is the url if given, else the
//! resolved path.
//!
//! Locations read `<manifest file name>:<line>`. Error codes: `bad_row` (invalid JSON, not an
//! object, a field of the wrong type, wrong CSV column count, unparsable `captured_at`, no
//! path nor url), `url_fetch_disabled`, `bad_url` (not an http or https url), `fetch_failed`
//! (connection, TLS, timeout, too many redirects), `http_status` (an answer other than 2xx),
//! `io_error` (missing or unreadable file; also a
//! read error of the manifest itself, which stops), `not_a_file` (a directory, fifo,
//! device...), `too_large`, `container_limit` (more rows or bytes than the limits allow;
//! stops).

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use std::time::Duration;

use anyhow::{bail, Context};

use super::warc::parse_rfc3339;
use super::{ItemError, ItemMeta, ItemResult, ReadLimits, SourceItem};

/// Longest JSONL line.
const MAX_LINE: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Path,
    Url,
    PageUrl,
    CapturedAt,
    Licence,
    LegalBasis,
    Jurisdiction,
    Subject,
    ExternalId,
}

const FIELDS: usize = 9;

/// Accepted names (lowercase), the field each gives and its rank (the lower wins when a row
/// has two names of one field).
const NAMES: &[(&str, Field, u8)] = &[
    ("path", Field::Path, 0),
    ("file", Field::Path, 1),
    ("url", Field::Url, 0),
    ("page_url", Field::PageUrl, 0),
    ("captured_at", Field::CapturedAt, 0),
    ("licence", Field::Licence, 0),
    ("license", Field::Licence, 1),
    ("legal_basis", Field::LegalBasis, 0),
    ("jurisdiction", Field::Jurisdiction, 0),
    ("subject", Field::Subject, 0),
    ("subject_label", Field::Subject, 1),
    ("external_id", Field::ExternalId, 0),
    ("id", Field::ExternalId, 1),
];

fn field_for(name: &str) -> Option<(Field, u8)> {
    let name = name
        .trim()
        .trim_start_matches('\u{feff}')
        .to_ascii_lowercase();
    NAMES
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|&(_, field, rank)| (field, rank))
}

/// How rows that give a url but no path are downloaded (opt-in: without it they are
/// `url_fetch_disabled` errors). One request at a time, the url exactly as written.
#[derive(Debug, Clone)]
pub struct UrlFetch {
    /// Whole-request limit (connect, redirects, body).
    pub timeout: Duration,
    pub max_redirects: u32,
}

impl Default for UrlFetch {
    fn default() -> Self {
        UrlFetch {
            timeout: Duration::from_secs(30),
            max_redirects: 5,
        }
    }
}

impl UrlFetch {
    fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .max_redirects(self.max_redirects)
            .http_status_as_error(false)
            .user_agent(concat!("visage-ingest/", env!("CARGO_PKG_VERSION")))
            .build()
            .into()
    }
}

/// Downloads `url` (http or https) into memory, at most `max` bytes.
fn fetch(agent: &ureq::Agent, url: &str, max: u64) -> Result<Vec<u8>, (&'static str, String)> {
    let scheme_ok = url.split_once("://").is_some_and(|(s, rest)| {
        ["http", "https"].contains(&&*s.to_ascii_lowercase()) && !rest.is_empty()
    });
    if !scheme_ok {
        return Err(("bad_url", format!("{url} is not an http or https url")));
    }
    let mut res = agent
        .get(url)
        .call()
        .map_err(|e| ("fetch_failed", format!("{url}: {e}")))?;
    let status = res.status();
    if !status.is_success() {
        return Err(("http_status", format!("{url} answered {status}")));
    }
    let declared = res
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(("too_large", format!("{url} is over {max} bytes")));
    }
    res.body_mut()
        .with_config()
        .limit(max)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => ("too_large", format!("{url} is over {max} bytes")),
            e => ("fetch_failed", format!("{url}: {e}")),
        })
}

/// Streams the images a manifest lists (see the module documentation), never downloading.
pub fn read_manifest(
    path: &Path,
    limits: &ReadLimits,
) -> anyhow::Result<Box<dyn Iterator<Item = ItemResult> + Send>> {
    read_manifest_with(path, limits, None)
}

/// Streams the images a manifest lists (see the module documentation), downloading the rows
/// that give only a url when `fetch` is given. Fails only when the manifest cannot be
/// opened, its extension is unknown, or a CSV header names no path or url column; problems
/// in rows are `ItemError`s.
pub fn read_manifest_with(
    path: &Path,
    limits: &ReadLimits,
    fetch: Option<&UrlFetch>,
) -> anyhow::Result<Box<dyn Iterator<Item = ItemResult> + Send>> {
    let agent = fetch.map(UrlFetch::agent);
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let base = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let open = || File::open(path).with_context(|| format!("reading {}", path.display()));
    match extension.as_deref() {
        Some("jsonl" | "ndjson") => {
            let rows = JsonlRows {
                reader: BufReader::new(open()?),
                line: 0,
                buf: Vec::new(),
            };
            Ok(Box::new(Manifest::new(rows, name, base, limits, agent)))
        }
        Some("csv") => {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(open()?);
            let headers = reader
                .byte_headers()
                .with_context(|| format!("reading the header row of {}", path.display()))?;
            let names: Vec<String> = headers
                .iter()
                .map(|h| {
                    String::from_utf8_lossy(h)
                        .trim()
                        .trim_start_matches('\u{feff}')
                        .into()
                })
                .collect();
            let columns: Vec<_> = names.iter().map(|n| field_for(n)).collect();
            let locates = |(field, _): &(Field, u8)| matches!(field, Field::Path | Field::Url);
            if !columns.iter().flatten().any(locates) {
                bail!(
                    "{}: the header row names no path, file or url column",
                    path.display()
                );
            }
            let rows = CsvRows {
                reader,
                names,
                columns,
                record: csv::ByteRecord::new(),
            };
            Ok(Box::new(Manifest::new(rows, name, base, limits, agent)))
        }
        _ => bail!(
            "{}: unknown manifest format (expected .jsonl, .ndjson or .csv)",
            path.display()
        ),
    }
}

/// One row's fields, before checks.
#[derive(Default)]
struct Row {
    values: [Option<(u8, String)>; FIELDS],
}

impl Row {
    fn set(&mut self, field: Field, rank: u8, value: &str) {
        let value = value.trim();
        if value.is_empty() {
            return;
        }
        let slot = &mut self.values[field as usize];
        if slot.as_ref().is_none_or(|(r, _)| rank < *r) {
            *slot = Some((rank, value.to_string()));
        }
    }

    fn take(&mut self, field: Field) -> Option<String> {
        self.values[field as usize].take().map(|(_, value)| value)
    }
}

/// What a row reader produced.
enum Next {
    /// A row at a line, or why it is bad.
    Row(u64, Result<Box<Row>, String>),
    /// The manifest could not be read further.
    Fatal(u64, String),
}

trait RowReader {
    fn next_row(&mut self) -> Option<Next>;
}

struct Manifest<R> {
    rows: R,
    name: String,
    base: PathBuf,
    limits: ReadLimits,
    entries: u64,
    total: u64,
    done: bool,
    /// Set when rows with only a url are downloaded.
    agent: Option<ureq::Agent>,
}

impl<R> Manifest<R> {
    fn new(
        rows: R,
        name: String,
        base: PathBuf,
        limits: &ReadLimits,
        agent: Option<ureq::Agent>,
    ) -> Self {
        Manifest {
            rows,
            name,
            base,
            agent,
            limits: *limits,
            entries: 0,
            total: 0,
            done: false,
        }
    }
}

impl<R: RowReader> Iterator for Manifest<R> {
    type Item = ItemResult;

    fn next(&mut self) -> Option<ItemResult> {
        if self.done {
            return None;
        }
        let (line, row) = match self.rows.next_row() {
            None => {
                self.done = true;
                return None;
            }
            Some(Next::Fatal(line, msg)) => {
                self.done = true;
                return Some(Err(ItemError::new(
                    format!("{}:{line}", self.name),
                    "io_error",
                    msg,
                )));
            }
            Some(Next::Row(line, row)) => (line, row),
        };
        let location = format!("{}:{line}", self.name);
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            self.done = true;
            let msg = format!(
                "the manifest lists more than {} rows",
                self.limits.max_entries
            );
            return Some(Err(ItemError::new(location, "container_limit", msg)));
        }
        let row = match row {
            Ok(row) => row,
            Err(msg) => return Some(Err(ItemError::new(location, "bad_row", msg))),
        };
        let result = make_item(
            *row,
            &self.base,
            location,
            self.limits.max_item_bytes,
            self.agent.as_ref(),
        );
        if let Ok(item) = &result {
            self.total += item.bytes.len() as u64;
            if self.total > self.limits.max_total_bytes {
                self.done = true;
                let msg = format!(
                    "the manifest's files hold more than {} bytes",
                    self.limits.max_total_bytes
                );
                return Some(Err(ItemError::new(&item.location, "container_limit", msg)));
            }
        }
        Some(result)
    }
}

fn make_item(
    mut row: Row,
    base: &Path,
    location: String,
    max_item: u64,
    agent: Option<&ureq::Agent>,
) -> Result<SourceItem, ItemError> {
    let captured_at = match row.take(Field::CapturedAt) {
        None => None,
        Some(text) => match text.parse::<i64>().ok().or_else(|| parse_rfc3339(&text)) {
            Some(t) => Some(t),
            None => {
                let msg = format!(
                    "captured_at {text:?} is neither unix seconds nor an RFC 3339 date-time"
                );
                return Err(ItemError::new(location, "bad_row", msg));
            }
        },
    };
    let url = row.take(Field::Url);
    let (bytes, uri) = match (row.take(Field::Path), url) {
        (Some(file), url) => {
            let path = base.join(&file);
            match read_regular_file(&path, max_item) {
                Ok(bytes) => (bytes, url.unwrap_or_else(|| path.display().to_string())),
                Err((code, msg)) => return Err(ItemError::new(location, code, msg)),
            }
        }
        (None, Some(url)) => match agent {
            Some(agent) => match fetch(agent, &url, max_item) {
                Ok(bytes) => (bytes, url),
                Err((code, msg)) => return Err(ItemError::new(location, code, msg)),
            },
            None => {
                let msg = format!(
                    "the row gives a url ({url}) but no path, and downloading was not asked \
                     for: list the files' paths, or ingest with --fetch-urls"
                );
                return Err(ItemError::new(location, "url_fetch_disabled", msg));
            }
        },
        (None, None) => {
            return Err(ItemError::new(
                location,
                "bad_row",
                "the row has no path, file or url",
            ))
        }
    };
    let meta = ItemMeta {
        uri: Some(uri),
        page_uri: row.take(Field::PageUrl),
        captured_at,
        licence: row.take(Field::Licence),
        legal_basis: row.take(Field::LegalBasis),
        jurisdiction: row.take(Field::Jurisdiction),
        subject: row.take(Field::Subject),
        external_id: row.take(Field::ExternalId),
    };
    Ok(SourceItem {
        location,
        bytes,
        meta,
    })
}

/// Reads a regular file (symbolic links followed) of at most `max` bytes.
fn read_regular_file(path: &Path, max: u64) -> Result<Vec<u8>, (&'static str, String)> {
    let io_error = |e: io::Error| ("io_error", format!("{}: {e}", path.display()));
    let not_a_file = || {
        (
            "not_a_file",
            format!("{} is not a regular file", path.display()),
        )
    };
    let too_large = || {
        (
            "too_large",
            format!("{} is over {max} bytes", path.display()),
        )
    };
    // Checked before opening: opening a fifo would block.
    let meta = fs::metadata(path).map_err(io_error)?;
    if !meta.is_file() {
        return Err(not_a_file());
    }
    if meta.len() > max {
        return Err(too_large());
    }
    let file = File::open(path).map_err(io_error)?;
    if !file.metadata().map_err(io_error)?.is_file() {
        return Err(not_a_file());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > max {
        return Err(too_large());
    }
    Ok(bytes)
}

struct JsonlRows {
    reader: BufReader<File>,
    line: u64,
    buf: Vec<u8>,
}

impl RowReader for JsonlRows {
    fn next_row(&mut self) -> Option<Next> {
        loop {
            self.buf.clear();
            self.line += 1;
            let read = (&mut self.reader)
                .take(MAX_LINE + 1)
                .read_until(b'\n', &mut self.buf);
            let n = match read {
                Ok(n) => n,
                Err(e) => return Some(Next::Fatal(self.line, format!("reading: {e}"))),
            };
            if n == 0 {
                return None;
            }
            if n as u64 > MAX_LINE && self.buf.last() != Some(&b'\n') {
                if let Err(e) = skip_line(&mut self.reader) {
                    return Some(Next::Fatal(self.line, format!("reading: {e}")));
                }
                return Some(Next::Row(self.line, Err("line longer than 1 MiB".into())));
            }
            let mut text = &self.buf[..];
            if self.line == 1 {
                text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
            }
            let text = text.trim_ascii();
            if !text.is_empty() {
                return Some(Next::Row(self.line, json_row(text)));
            }
        }
    }
}

fn skip_line(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

fn json_row(text: &[u8]) -> Result<Box<Row>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let serde_json::Value::Object(object) = value else {
        return Err("not a JSON object".into());
    };
    let mut row = Box::<Row>::default();
    for (key, value) in &object {
        let Some((field, rank)) = field_for(key) else {
            continue;
        };
        match value {
            serde_json::Value::Null => {}
            serde_json::Value::String(s) => row.set(field, rank, s),
            serde_json::Value::Number(n) => row.set(field, rank, &n.to_string()),
            _ => return Err(format!("field {key:?}: expected a string or a number")),
        }
    }
    Ok(row)
}

struct CsvRows {
    reader: csv::Reader<File>,
    /// Header names.
    names: Vec<String>,
    columns: Vec<Option<(Field, u8)>>,
    record: csv::ByteRecord,
}

impl RowReader for CsvRows {
    fn next_row(&mut self) -> Option<Next> {
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.record.position().map_or(0, |p| p.line());
                Some(Next::Row(line, self.row()))
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                if e.is_io_error() {
                    Some(Next::Fatal(line, format!("reading: {e}")))
                } else {
                    Some(Next::Row(line, Err(e.to_string())))
                }
            }
        }
    }
}

impl CsvRows {
    fn row(&self) -> Result<Box<Row>, String> {
        if self.record.len() != self.columns.len() {
            return Err(format!(
                "{} fields where the header row has {}",
                self.record.len(),
                self.columns.len()
            ));
        }
        let mut row = Box::<Row>::default();
        for (i, value) in self.record.iter().enumerate() {
            let Some((field, rank)) = self.columns[i] else {
                continue;
            };
            let value = std::str::from_utf8(value)
                .map_err(|_| format!("field {:?} is not valid UTF-8", self.names[i]))?;
            row.set(field, rank, value);
        }
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lfw_jpeg() -> Option<Vec<u8>> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/lfw/lfw-deepfunneled/Aaron_Eckhart/Aaron_Eckhart_0001.jpg"
        );
        let bytes = fs::read(path).ok();
        if bytes.is_none() {
            eprintln!("skipping the LFW part of this test: {path} is absent");
        }
        bytes
    }

    /// A folder with `img/a.jpg`, `b.png` elsewhere (absolute path), `img/sub/` (a folder).
    struct Fixture {
        dir: tempfile::TempDir,
        other: tempfile::TempDir,
        a: Vec<u8>,
        b: Vec<u8>,
    }

    impl Fixture {
        fn new(a: Vec<u8>) -> Fixture {
            let (dir, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            fs::create_dir_all(dir.path().join("img/sub")).unwrap();
            fs::write(dir.path().join("img/a.jpg"), &a).unwrap();
            let b = b"\x89PNG\r\n\x1a\nfake png".to_vec();
            fs::write(other.path().join("b.png"), &b).unwrap();
            Fixture { dir, other, a, b }
        }

        fn b_path(&self) -> String {
            self.other.path().join("b.png").display().to_string()
        }

        fn read(&self, name: &str, text: &str, limits: &ReadLimits) -> Vec<ItemResult> {
            let path = self.dir.path().join(name);
            fs::write(&path, text).unwrap();
            read_manifest(&path, limits).unwrap().collect()
        }
    }

    /// `line:code` or `line:ok` for each result.
    fn summary(results: &[ItemResult]) -> Vec<String> {
        results
            .iter()
            .map(|r| match r {
                Ok(item) => format!("{}:ok", item.location),
                Err(e) => format!("{}:{}", e.location, e.code),
            })
            .collect()
    }

    fn jsonl(f: &Fixture) -> String {
        [
            &serde_json::json!({
                "path": "img/a.jpg", "url": "http://x/a.jpg", "page_url": "http://x/",
                "captured_at": 1706702400, "licence": "CC-BY-4.0", "legal_basis": "consent",
                "jurisdiction": "FR", "subject": "alice", "id": 17, "unknown": [1],
            })
            .to_string(),
            "",
            r#"{"path": "img/a.jpg", "oops"#,
            &serde_json::json!({
                "FILE": f.b_path(), "Captured_At": "2024-01-31T13:00:00+01:00",
                "license": "CC0", "subject_label": "bob", "external_id": "e-2", "id": "ignored",
            })
            .to_string(),
            r#"{"path":"img/missing.jpg"}"#,
            r#"{"path":"img/a.jpg","captured_at":"yesterday"}"#,
            r#"{"url":"http://x/c.jpg"}"#,
            r#"{"path":"img/sub"}"#,
            r#"[1, 2]"#,
            r#"{"page_url":"http://x/"}"#,
            r#"{"path":"img/a.jpg","subject":{"name":"x"}}"#,
            r#"{"path":"img/a.jpg","file":"ignored.jpg","license":"L1","licence":"L0"}"#,
        ]
        .join("\n")
    }

    fn check_good_rows(f: &Fixture, results: &[ItemResult], name: &str, b_line: usize) {
        let a = results[0].as_ref().unwrap();
        assert_eq!(a.bytes, f.a);
        assert_eq!(
            a.meta,
            ItemMeta {
                uri: Some("http://x/a.jpg".into()),
                page_uri: Some("http://x/".into()),
                captured_at: Some(1_706_702_400),
                licence: Some("CC-BY-4.0".into()),
                legal_basis: Some("consent".into()),
                jurisdiction: Some("FR".into()),
                subject: Some("alice".into()),
                external_id: Some("17".into()),
            }
        );
        let b = results
            .iter()
            .flatten()
            .find(|i| i.location == format!("{name}:{b_line}"));
        let b = b.expect("the absolute-path row");
        assert_eq!(b.bytes, f.b);
        assert_eq!(
            b.meta,
            ItemMeta {
                uri: Some(f.b_path()),
                captured_at: Some(1_706_702_400),
                licence: Some("CC0".into()),
                subject: Some("bob".into()),
                external_id: Some("e-2".into()),
                ..ItemMeta::default()
            }
        );
    }

    #[test]
    fn jsonl_rows() {
        let f = Fixture::new(b"\xff\xd8\xff fake jpeg".to_vec());
        let results = f.read("m.jsonl", &jsonl(&f), &ReadLimits::default());
        assert_eq!(
            summary(&results),
            [
                "m.jsonl:1:ok",
                "m.jsonl:3:bad_row",
                "m.jsonl:4:ok",
                "m.jsonl:5:io_error",
                "m.jsonl:6:bad_row",
                "m.jsonl:7:url_fetch_disabled",
                "m.jsonl:8:not_a_file",
                "m.jsonl:9:bad_row",
                "m.jsonl:10:bad_row",
                "m.jsonl:11:bad_row",
                "m.jsonl:12:ok",
            ]
        );
        check_good_rows(&f, &results, "m.jsonl", 4);
        let message = |i: usize| results[i].as_ref().unwrap_err().message.clone();
        assert!(message(1).contains("invalid JSON"), "{}", message(1));
        assert!(message(4).contains("yesterday"), "{}", message(4));
        assert!(message(5).contains("--fetch-urls"), "{}", message(5));
        assert!(message(7).contains("not a JSON object"), "{}", message(7));
        assert!(message(8).contains("no path"), "{}", message(8));
        assert!(message(9).contains("subject"), "{}", message(9));
        let last = results[10].as_ref().unwrap();
        assert_eq!(last.bytes, f.a);
        assert_eq!(last.meta.licence.as_deref(), Some("L0"));
        let expected_uri = f.dir.path().join("img/a.jpg").display().to_string();
        assert_eq!(last.meta.uri, Some(expected_uri));
        // `.ndjson` is the same format.
        let results = f.read("m.ndjson", &jsonl(&f), &ReadLimits::default());
        assert_eq!(results.len(), 11);
    }

    #[test]
    fn csv_rows() {
        let f = Fixture::new(b"\xff\xd8\xff fake jpeg".to_vec());
        let text = format!(
            "\u{feff}Path, URL ,Page_URL,Captured_At,Licence,Legal_Basis,Jurisdiction,\
             Subject,Notes,ID\n\
             img/a.jpg,http://x/a.jpg,http://x/,1706702400,CC-BY-4.0,consent,FR,alice,\"a, b\",17\n\
             {b},,,2024-01-31T12:00:00Z,CC0,,,bob,\"x\",e-2\n\
             img/missing.jpg,,,,,,,,,\n\
             img/a.jpg,,,soon,,,,,,\n\
             ,http://x/c.jpg,,,,,,,,\n\
             img/a.jpg,,,\n\
             \"img/a.jpg\",,,,,,,\"Doe, Jane\",\"said \"\"hi\"\", then left\",x\n",
            b = f.b_path()
        );
        let results = f.read("m.csv", &text, &ReadLimits::default());
        assert_eq!(
            summary(&results),
            [
                "m.csv:2:ok",
                "m.csv:3:ok",
                "m.csv:4:io_error",
                "m.csv:5:bad_row",
                "m.csv:6:url_fetch_disabled",
                "m.csv:7:bad_row",
                "m.csv:8:ok",
            ]
        );
        check_good_rows(&f, &results, "m.csv", 3);
        let wrong = results[5].as_ref().unwrap_err();
        assert!(
            wrong
                .message
                .contains("4 fields where the header row has 10"),
            "{}",
            wrong.message
        );
        let quoted = results[6].as_ref().unwrap();
        assert_eq!(quoted.meta.subject.as_deref(), Some("Doe, Jane"));
        assert_eq!(quoted.meta.external_id.as_deref(), Some("x"));
        assert_eq!(quoted.bytes, f.a);
    }

    #[test]
    fn lfw_jpeg_comes_out_identical() {
        let Some(jpeg) = lfw_jpeg() else { return };
        let f = Fixture::new(jpeg.clone());
        let results = f.read(
            "m.jsonl",
            "{\"path\":\"img/a.jpg\"}\n",
            &ReadLimits::default(),
        );
        assert_eq!(results[0].as_ref().unwrap().bytes, jpeg);
        let results = f.read("m.csv", "file\nimg/a.jpg\n", &ReadLimits::default());
        assert_eq!(results[0].as_ref().unwrap().bytes, jpeg);
        // Relative to the manifest's folder, not the working directory.
        fs::create_dir(f.dir.path().join("lists")).unwrap();
        let results = f.read(
            "lists/m.csv",
            "file\n../img/a.jpg\n",
            &ReadLimits::default(),
        );
        assert_eq!(results[0].as_ref().unwrap().bytes, jpeg);
    }

    #[test]
    fn limits_are_enforced() {
        let f = Fixture::new(vec![7u8; 100]);
        let text = "path\nimg/a.jpg\nimg/a.jpg\nimg/a.jpg\n";
        let limits = ReadLimits {
            max_item_bytes: 99,
            ..ReadLimits::default()
        };
        let results = f.read("m.csv", text, &limits);
        assert_eq!(
            summary(&results),
            [
                "m.csv:2:too_large",
                "m.csv:3:too_large",
                "m.csv:4:too_large"
            ]
        );
        let limits = ReadLimits {
            max_entries: 2,
            ..ReadLimits::default()
        };
        let results = f.read("m.csv", text, &limits);
        assert_eq!(
            summary(&results),
            ["m.csv:2:ok", "m.csv:3:ok", "m.csv:4:container_limit"]
        );
        let limits = ReadLimits {
            max_total_bytes: 250,
            ..ReadLimits::default()
        };
        let results = f.read("m.csv", text, &limits);
        assert_eq!(
            summary(&results),
            ["m.csv:2:ok", "m.csv:3:ok", "m.csv:4:container_limit"]
        );
        let long = format!(
            "{{\"path\":\"{}\"}}\n{{\"path\":\"img/a.jpg\"}}\n",
            "x".repeat(2 << 20)
        );
        let results = f.read("long.jsonl", &long, &ReadLimits::default());
        assert_eq!(
            summary(&results),
            ["long.jsonl:1:bad_row", "long.jsonl:2:ok"]
        );
    }

    #[test]
    fn bad_manifests_are_refused() {
        let f = Fixture::new(vec![1]);
        for (name, text) in [
            ("m.txt", "path\nimg/a.jpg\n"),
            ("m.csv", "name,size\na,1\n"),
            ("e.csv", ""),
        ] {
            let path = f.dir.path().join(name);
            fs::write(&path, text).unwrap();
            assert!(
                read_manifest(&path, &ReadLimits::default()).is_err(),
                "{name}"
            );
        }
        assert!(read_manifest(&f.dir.path().join("absent.jsonl"), &ReadLimits::default()).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_must_lead_to_regular_files() {
        let f = Fixture::new(b"img".to_vec());
        let dir = f.dir.path();
        std::os::unix::fs::symlink(dir.join("img/a.jpg"), dir.join("link.jpg")).unwrap();
        std::os::unix::fs::symlink(dir.join("img/sub"), dir.join("link_dir")).unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("dangling")).unwrap();
        let text = "path\nlink.jpg\nlink_dir\ndangling\n/dev/null\n";
        let results = f.read("m.csv", text, &ReadLimits::default());
        assert_eq!(
            summary(&results),
            [
                "m.csv:2:ok",
                "m.csv:3:not_a_file",
                "m.csv:4:io_error",
                "m.csv:5:not_a_file"
            ]
        );
        assert_eq!(results[0].as_ref().unwrap().bytes, b"img");
    }
}
