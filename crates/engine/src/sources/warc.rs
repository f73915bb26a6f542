//! WARC 1.0/1.1 web archives (ISO 28500), plain or gzip-compressed (`.warc.gz`: one gzip
//! member per record, or one member for the whole file; gzip is detected by its magic bytes,
//! not the file name). Records are streamed one at a time; each record's block is read with
//! its Content-Length as the bound, so memory stays bounded whatever the archive's size.
//!
//! Items are the images in:
//! - `response` records of type `application/http; msgtype=response` with a 2xx status whose
//!   HTTP Content-Type is `image/*`, missing, or `application/octet-stream` (the image decoder
//!   makes the final decision); other responses (HTML, redirects, errors...) are skipped
//!   silently. The item is the HTTP body, with `Transfer-Encoding: chunked` and
//!   `Content-Encoding: gzip`/`deflate` undone;
//! - `resource` records whose Content-Type is `image/*`.
//!
//! Provenance: `uri` is the record's WARC-Target-URI, `captured_at` its WARC-Date, `page_uri`
//! the `Referer` of the matching `request` record when the archive holds it *before* the
//! response (linked by WARC-Concurrent-To / WARC-Record-ID, else by the same target URI; the
//! last 10,000 requests with a Referer are remembered). Locations read
//! `<file name>#<offset> <target uri>`, where offset is the byte offset of the record's
//! `WARC/` line in the (decompressed) stream.
//!
//! Error codes: `bad_record` (malformed record header: the reader then scans forward, at most
//! 1 MiB, for the next line starting with `WARC/`; or a malformed HTTP message or body inside
//! a record, which needs no rescan), `corrupt_warc` (no record found by that scan, or a
//! corrupt gzip stream; stops), `truncated_record` (the file ends inside a record; stops),
//! `too_large` (an image record's block above `max_item_bytes`, skipped unread),
//! `unsupported_encoding` (an HTTP coding other than chunked, gzip, deflate, identity),
//! `decompression_bomb` (gzip ratio above `max_ratio`), `container_limit` (more records or
//! bytes than the limits allow; stops), `io_error` (stops).
//!
//! Not supported: `revisit` records (their payload lives in another record), `conversion`
//! and segmented (`continuation`) records, request records written after their response
//! (no Referer then), HTTP codings other than the three above (e.g. `br`, `zstd`).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use flate2::bufread::{DeflateDecoder, GzDecoder, MultiGzDecoder, ZlibDecoder};

use super::{ItemError, ItemMeta, ItemResult, ReadLimits, SourceItem};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const BUF_SIZE: usize = 64 << 10;
/// Longest WARC or HTTP header line.
const MAX_LINE: usize = 64 << 10;
/// Longest WARC record header.
const MAX_WARC_HEADER: u64 = 1 << 20;
/// Longest HTTP message header (and chunked-body trailer).
const MAX_HTTP_HEADER: u64 = 256 << 10;
/// How far to scan for the next record after a malformed one.
const RESYNC_SCAN: u64 = 1 << 20;
/// Requests whose Referer is remembered.
const REFERER_REQUESTS: usize = 10_000;
/// Longest Referer or link key remembered.
const MAX_REFERER_LEN: usize = 4 << 10;
/// Decompressed sizes below this are exempt from the ratio check.
const RATIO_EXEMPT: u64 = 1 << 20;
/// Most HTTP codings stacked on one body.
const MAX_CODINGS: usize = 4;

type Source = Box<dyn BufRead + Send>;

/// Whether `path` is a regular file that starts with `WARC/`, after gunzip if it is gzipped.
pub fn is_warc(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file()) && starts_with_warc(path).unwrap_or(false)
}

fn starts_with_warc(path: &Path) -> io::Result<bool> {
    let mut raw = BufReader::new(File::open(path)?);
    let gzip = raw.fill_buf()?.starts_with(&GZIP_MAGIC);
    let mut head = Vec::with_capacity(5);
    if gzip {
        MultiGzDecoder::new(raw).take(5).read_to_end(&mut head)?;
    } else {
        raw.take(5).read_to_end(&mut head)?;
    }
    Ok(head == b"WARC/")
}

/// Streams the images of a WARC file (see the module documentation). Fails only when the
/// file cannot be opened or is not a WARC file; problems inside it are `ItemError`s.
pub fn read_warc(
    path: &Path,
    limits: &ReadLimits,
) -> anyhow::Result<Box<dyn Iterator<Item = ItemResult> + Send>> {
    let context = || format!("reading {}", path.display());
    let meta = std::fs::metadata(path).with_context(context)?;
    anyhow::ensure!(meta.is_file(), "{} is not a regular file", path.display());
    anyhow::ensure!(
        starts_with_warc(path).with_context(context)?,
        "{} is not a WARC file (it does not start with \"WARC/\", gzipped or not)",
        path.display()
    );
    let compressed = Arc::new(AtomicU64::new(0));
    let file = File::open(path).with_context(context)?;
    let counted = Counted {
        inner: file,
        count: Arc::clone(&compressed),
    };
    let mut raw = BufReader::with_capacity(BUF_SIZE, counted);
    let gzip = raw
        .fill_buf()
        .with_context(context)?
        .starts_with(&GZIP_MAGIC);
    let src: Source = if gzip {
        let guard = RatioGuard {
            inner: MultiGzDecoder::new(raw),
            compressed,
            out: 0,
            max_ratio: limits.max_ratio,
        };
        Box::new(BufReader::with_capacity(BUF_SIZE, guard))
    } else {
        Box::new(raw)
    };
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(Box::new(WarcReader {
        src,
        name,
        limits: *limits,
        consumed: 0,
        records: 0,
        resync: false,
        mid_line: false,
        done: false,
        referers: Referers::new(REFERER_REQUESTS),
        line: Vec::new(),
    }))
}

struct WarcReader {
    src: Source,
    /// File name, for locations.
    name: String,
    limits: ReadLimits,
    /// Bytes consumed from the (decompressed) stream.
    consumed: u64,
    /// Records seen.
    records: u64,
    /// A malformed record was met: scan for the next `WARC/` line.
    resync: bool,
    /// The last line read was cut at `MAX_LINE`: the next read is not at a line start.
    mid_line: bool,
    done: bool,
    referers: Referers,
    line: Vec<u8>,
}

/// What one step of the reader produced.
enum Step {
    /// Boxed: the variants that are passed around as errors stay small.
    Item(Box<SourceItem>),
    /// A bad item; reading goes on.
    Fail(ItemError),
    /// A bad item after which nothing more can be read.
    Stop(ItemError),
    /// A record that holds no item.
    Skip,
    End,
}

impl Iterator for WarcReader {
    type Item = ItemResult;

    fn next(&mut self) -> Option<ItemResult> {
        while !self.done {
            match self.step() {
                Step::Item(item) => return Some(Ok(*item)),
                Step::Fail(e) => return Some(Err(e)),
                Step::Stop(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Step::Skip => {}
                Step::End => self.done = true,
            }
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Response,
    Request,
    ImageResource,
    Other,
}

struct RecordHead {
    /// Lowercase.
    warc_type: String,
    target_uri: Option<String>,
    date: Option<String>,
    record_id: Option<String>,
    concurrent_to: Vec<String>,
    content_type: Option<String>,
    length: u64,
}

impl RecordHead {
    fn kind(&self) -> Kind {
        let ct = self.content_type.as_deref();
        match self.warc_type.as_str() {
            "response" if is_http(ct, "response") => Kind::Response,
            "request" if is_http(ct, "request") => Kind::Request,
            "resource" if media_type(ct).starts_with("image/") => Kind::ImageResource,
            _ => Kind::Other,
        }
    }
}

/// What a record's block held.
enum Outcome {
    Item(Vec<u8>),
    Fail(&'static str, String),
    Skip,
}

impl WarcReader {
    fn step(&mut self) -> Step {
        let offset = match self.version_line() {
            Ok(Some(offset)) => offset,
            Ok(None) => return Step::End,
            Err(step) => return step,
        };
        let at = format!("{}#{offset}", self.name);
        self.records += 1;
        if self.records > self.limits.max_entries {
            let msg = format!(
                "the archive holds more than {} records",
                self.limits.max_entries
            );
            return Step::Stop(ItemError::new(at, "container_limit", msg));
        }
        let head = match self.header(&at) {
            Ok(head) => head,
            Err(step) => return step,
        };
        let location = match &head.target_uri {
            Some(uri) => format!("{at} {uri}"),
            None => at,
        };
        if self.consumed.saturating_add(head.length) > self.limits.max_total_bytes {
            let msg = format!(
                "the archive holds more than {} bytes",
                self.limits.max_total_bytes
            );
            return Step::Stop(ItemError::new(location, "container_limit", msg));
        }

        let kind = head.kind();
        let limits = self.limits;
        let mut block = Read::take(&mut self.src, head.length);
        let outcome = match kind {
            Kind::Response => response(&mut block, &limits, head.length),
            Kind::ImageResource => resource(&mut block, &limits, head.length),
            Kind::Request => match request_referer(&mut block) {
                Ok(referer) => {
                    if let Some(referer) = referer {
                        self.referers.remember(&head, referer);
                    }
                    Ok(Outcome::Skip)
                }
                Err(e) => Err(e),
            },
            Kind::Other => Ok(Outcome::Skip),
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => return Step::Stop(source_error(location, e)),
        };
        if let Err(e) = io::copy(&mut block, &mut io::sink()) {
            return Step::Stop(source_error(location, e));
        }
        let missing = block.limit();
        self.consumed += head.length - missing;
        if missing > 0 {
            let msg = format!("the file ends {missing} bytes before the end of the record");
            return Step::Stop(ItemError::new(location, "truncated_record", msg));
        }

        match outcome {
            Outcome::Skip => Step::Skip,
            Outcome::Fail(code, msg) => Step::Fail(ItemError::new(location, code, msg)),
            Outcome::Item(bytes) => {
                let page_uri = match kind {
                    Kind::Response => self.referers.find(&head),
                    _ => None,
                };
                let meta = ItemMeta {
                    captured_at: head.date.as_deref().and_then(parse_rfc3339),
                    uri: head.target_uri,
                    page_uri,
                    ..ItemMeta::default()
                };
                Step::Item(Box::new(SourceItem {
                    location,
                    bytes,
                    meta,
                }))
            }
        }
    }

    /// Reads up to the next record's `WARC/` line and returns its offset; `None` at the end
    /// of the file. Blank lines before it are skipped; anything else is a `bad_record`, after
    /// which the next call scans forward (at most `RESYNC_SCAN` bytes) for a `WARC/` line.
    fn version_line(&mut self) -> Result<Option<u64>, Step> {
        let mut scanned = 0u64;
        loop {
            let offset = self.consumed;
            let n = match read_line(&mut self.src, MAX_LINE, &mut self.line) {
                Ok(n) => n,
                Err(e) => return Err(Step::Stop(source_error(self.here(offset), e))),
            };
            if n == 0 {
                return Ok(None);
            }
            self.consumed += n as u64;
            let line_start = !self.mid_line;
            self.mid_line = self.line.last() != Some(&b'\n');
            if line_start && !self.mid_line && self.line.starts_with(b"WARC/") {
                self.resync = false;
                return Ok(Some(offset));
            }
            scanned += n as u64;
            if scanned > RESYNC_SCAN {
                let msg = "no WARC record header found in the next 1 MiB";
                return Err(Step::Stop(ItemError::new(
                    self.here(offset),
                    "corrupt_warc",
                    msg,
                )));
            }
            let blank =
                line_start && !self.mid_line && trim_eol(&self.line).trim_ascii().is_empty();
            if self.resync || blank {
                continue;
            }
            self.resync = true;
            let msg = format!(
                "expected a WARC/ version line, found {:?}",
                preview(&self.line)
            );
            return Err(Step::Fail(ItemError::new(
                self.here(offset),
                "bad_record",
                msg,
            )));
        }
    }

    /// Reads the record header after the version line.
    fn header(&mut self, at: &str) -> Result<RecordHead, Step> {
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut total = 0u64;
        loop {
            let n = match read_line(&mut self.src, MAX_LINE, &mut self.line) {
                Ok(n) => n,
                Err(e) => return Err(Step::Stop(source_error(at, e))),
            };
            self.consumed += n as u64;
            total += n as u64;
            if self.line.last() != Some(&b'\n') {
                if n < MAX_LINE {
                    let msg = "the file ends inside the record header";
                    return Err(Step::Stop(ItemError::new(at, "truncated_record", msg)));
                }
                self.mid_line = true;
                return Err(self.bad(at, "record header line longer than 64 KiB"));
            }
            if total > MAX_WARC_HEADER {
                return Err(self.bad(at, "record header longer than 1 MiB"));
            }
            let text = trim_eol(&self.line);
            if text.is_empty() {
                break;
            }
            if let Err(msg) = push_header(&mut fields, text) {
                return Err(self.bad(at, msg));
            }
        }
        let get = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let length = match get("content-length") {
            Some(v) => match v.parse::<u64>() {
                Ok(length) => length,
                Err(_) => return Err(self.bad(at, format!("invalid Content-Length {v:?}"))),
            },
            None => return Err(self.bad(at, "no Content-Length")),
        };
        let unbracket = |v: String| {
            let t = v.trim();
            t.strip_prefix('<')
                .and_then(|t| t.strip_suffix('>'))
                .unwrap_or(t)
                .to_string()
        };
        Ok(RecordHead {
            warc_type: get("warc-type").unwrap_or_default().to_ascii_lowercase(),
            target_uri: get("warc-target-uri")
                .map(unbracket)
                .filter(|u| !u.is_empty()),
            date: get("warc-date"),
            record_id: get("warc-record-id"),
            concurrent_to: fields
                .iter()
                .filter(|(n, _)| n == "warc-concurrent-to")
                .map(|(_, v)| v.clone())
                .collect(),
            content_type: get("content-type"),
            length,
        })
    }

    /// A malformed record header: report it and rescan for the next record.
    fn bad(&mut self, at: &str, msg: impl ToString) -> Step {
        self.resync = true;
        Step::Fail(ItemError::new(at, "bad_record", msg))
    }

    fn here(&self, offset: u64) -> String {
        format!("{}#{offset}", self.name)
    }
}

/// A `response` record's block: the image body of a 2xx image response, if it is one.
/// `Err` is a read error of the archive itself.
fn response<R: BufRead>(
    block: &mut io::Take<R>,
    limits: &ReadLimits,
    length: u64,
) -> io::Result<Outcome> {
    let head = match read_http_head(block)? {
        Ok(head) => head,
        Err(msg) => return Ok(Outcome::Fail("bad_record", msg)),
    };
    let Some(status) = parse_status(&head.start) else {
        let msg = format!(
            "not an HTTP status line: {:?}",
            preview(head.start.as_bytes())
        );
        return Ok(Outcome::Fail("bad_record", msg));
    };
    if !(200..300).contains(&status) || !maybe_image(head.get("content-type")) {
        return Ok(Outcome::Skip);
    }
    if length > limits.max_item_bytes {
        return Ok(too_large(length, limits));
    }
    let codings = match codings(&head) {
        Ok(codings) => codings,
        Err(msg) => return Ok(Outcome::Fail("unsupported_encoding", msg)),
    };
    match read_body(block, &codings, limits) {
        Ok(body) if body.is_empty() => Ok(Outcome::Skip),
        Ok(body) => Ok(Outcome::Item(body)),
        Err(BodyError::Source(e)) => Err(e),
        Err(BodyError::Fail(code, msg)) => Ok(Outcome::Fail(code, msg)),
    }
}

/// A `resource` record with an image type: its whole block.
fn resource<R: BufRead>(
    block: &mut io::Take<R>,
    limits: &ReadLimits,
    length: u64,
) -> io::Result<Outcome> {
    if length > limits.max_item_bytes {
        return Ok(too_large(length, limits));
    }
    if length == 0 {
        return Ok(Outcome::Skip);
    }
    let mut bytes = Vec::with_capacity(length as usize);
    block.read_to_end(&mut bytes)?;
    Ok(Outcome::Item(bytes))
}

fn too_large(length: u64, limits: &ReadLimits) -> Outcome {
    let msg = format!(
        "record block of {length} bytes is over the {} byte item limit",
        limits.max_item_bytes
    );
    Outcome::Fail("too_large", msg)
}

/// The `Referer` of a `request` record's HTTP message, if any (a malformed request is
/// ignored: requests are not items).
fn request_referer<R: BufRead>(block: &mut R) -> io::Result<Option<String>> {
    Ok(read_http_head(block)?
        .ok()
        .and_then(|head| head.get("referer").map(str::to_string))
        .filter(|r| !r.is_empty()))
}

struct HttpHead {
    /// Status or request line.
    start: String,
    /// Lowercase names.
    fields: Vec<(String, String)>,
}

impl HttpHead {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads an HTTP start line and header. The outer `Err` is a read error of the archive, the
/// inner one a malformed message. A block that ends inside the header ends the header
/// (archived HEAD responses have none). Header lines that do not parse are ignored.
fn read_http_head<R: BufRead>(r: &mut R) -> io::Result<Result<HttpHead, String>> {
    let mut line = Vec::new();
    let mut total = 0u64;
    let mut start: Option<String> = None;
    let mut fields = Vec::new();
    loop {
        let n = read_line(r, MAX_LINE, &mut line)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if n == MAX_LINE && line.last() != Some(&b'\n') {
            return Ok(Err("HTTP header line longer than 64 KiB".into()));
        }
        if total > MAX_HTTP_HEADER {
            return Ok(Err("HTTP header longer than 256 KiB".into()));
        }
        let text = trim_eol(&line);
        if start.is_none() {
            start = Some(String::from_utf8_lossy(text).into_owned());
        } else if text.is_empty() {
            break;
        } else {
            let _ = push_header(&mut fields, text);
        }
    }
    Ok(match start {
        Some(start) => Ok(HttpHead { start, fields }),
        None => Err("empty HTTP message".into()),
    })
}

fn parse_status(start: &str) -> Option<u16> {
    let mut words = start.split_ascii_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = words.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// Whether an HTTP Content-Type may be an image: `image/*`, none, or an octet stream.
fn maybe_image(content_type: Option<&str>) -> bool {
    let media = media_type(content_type);
    media.is_empty()
        || media.starts_with("image/")
        || media == "application/octet-stream"
        || media == "binary/octet-stream"
}

/// The lowercase media type of a Content-Type value, without parameters.
fn media_type(content_type: Option<&str>) -> String {
    content_type
        .and_then(|ct| ct.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a WARC Content-Type is `application/http` with the given `msgtype` (or none).
fn is_http(content_type: Option<&str>, msgtype: &str) -> bool {
    let Some(ct) = content_type else { return false };
    let mut parts = ct.split(';');
    if !parts
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("application/http")
    {
        return false;
    }
    parts.all(|p| {
        let (key, value) = p.split_once('=').unwrap_or((p, ""));
        !key.trim().eq_ignore_ascii_case("msgtype")
            || value.trim().trim_matches('"').eq_ignore_ascii_case(msgtype)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Chunked,
    Gzip,
    Deflate,
}

/// The codings applied to a body, in the order the sender applied them (content codings,
/// then transfer codings). `Err` names an unsupported one.
fn codings(head: &HttpHead) -> Result<Vec<Coding>, String> {
    let mut out = Vec::new();
    for name in ["content-encoding", "transfer-encoding"] {
        for value in head
            .fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
        {
            for coding in value.split(',') {
                let coding = coding.trim().to_ascii_lowercase();
                match coding.as_str() {
                    "" | "identity" => {}
                    "chunked" => out.push(Coding::Chunked),
                    "gzip" | "x-gzip" => out.push(Coding::Gzip),
                    "deflate" => out.push(Coding::Deflate),
                    _ => return Err(format!("unsupported HTTP {name} {coding:?}")),
                }
            }
        }
    }
    if out.len() > MAX_CODINGS {
        return Err(format!("more than {MAX_CODINGS} HTTP codings on one body"));
    }
    Ok(out)
}

enum BodyError {
    /// The archive itself could not be read.
    Source(io::Error),
    Fail(&'static str, String),
}

/// Reads and decodes an HTTP body: the rest of `block`.
fn read_body<R: BufRead>(
    block: &mut io::Take<R>,
    codings: &[Coding],
    limits: &ReadLimits,
) -> Result<Vec<u8>, BodyError> {
    let before = block.limit();
    let max = limits.max_item_bytes;
    let mut body = Vec::new();
    {
        let mut reader: Box<dyn BufRead + '_> = Box::new(Tagged(&mut *block));
        for coding in codings.iter().rev() {
            reader = match coding {
                Coding::Chunked => Box::new(BufReader::new(Chunked::new(reader))),
                Coding::Gzip => Box::new(BufReader::new(GzDecoder::new(reader))),
                Coding::Deflate => {
                    // HTTP `deflate` is zlib-wrapped, but some servers send raw deflate.
                    if looks_like_zlib(reader.fill_buf().map_err(body_error)?) {
                        Box::new(BufReader::new(ZlibDecoder::new(reader)))
                    } else {
                        Box::new(BufReader::new(DeflateDecoder::new(reader)))
                    }
                }
            };
        }
        if codings.is_empty() {
            body.reserve(before.min(max) as usize);
        }
        reader
            .take(max.saturating_add(1))
            .read_to_end(&mut body)
            .map_err(body_error)?;
    }
    let out = body.len() as u64;
    if out > max {
        let msg = format!("decoded HTTP body is over the {max} byte item limit");
        return Err(BodyError::Fail("too_large", msg));
    }
    let input = before - block.limit();
    let compressed = codings.iter().any(|c| *c != Coding::Chunked);
    if compressed && out > RATIO_EXEMPT && out > input.saturating_mul(limits.max_ratio) {
        let msg = format!("HTTP body of {input} bytes decodes to {out} bytes");
        return Err(BodyError::Fail("decompression_bomb", msg));
    }
    Ok(body)
}

fn looks_like_zlib(head: &[u8]) -> bool {
    head.len() >= 2
        && head[0] & 0x0f == 8
        && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0
}

/// Sorts an error met while decoding a body: the archive's own read errors come tagged.
fn body_error(e: io::Error) -> BodyError {
    if !e.get_ref().is_some_and(|inner| inner.is::<SourceError>()) {
        return BodyError::Fail("bad_record", format!("undecodable HTTP body: {e}"));
    }
    match e.into_inner().map(|inner| inner.downcast::<SourceError>()) {
        Some(Ok(source)) => BodyError::Source(source.0),
        _ => BodyError::Source(io::Error::other("read error")),
    }
}

/// Maps a read error of the archive stream to an item error.
fn source_error(location: impl Into<String>, e: io::Error) -> ItemError {
    if e.get_ref()
        .is_some_and(|inner| inner.is::<DecompressionBomb>())
    {
        return ItemError::new(location, "decompression_bomb", e);
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ItemError::new(location, "truncated_record", e),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => ItemError::new(
            location,
            "corrupt_warc",
            format!("corrupt gzip stream: {e}"),
        ),
        _ => ItemError::new(location, "io_error", e),
    }
}

/// An error of the archive stream, seen through body decoders.
#[derive(Debug)]
struct SourceError(io::Error);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Tags the errors of the reader it wraps as `SourceError`s.
struct Tagged<R>(R);

fn tag(e: io::Error) -> io::Error {
    io::Error::other(SourceError(e))
}

impl<R: Read> Read for Tagged<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(tag)
    }
}

impl<R: BufRead> BufRead for Tagged<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.0.fill_buf().map_err(tag)
    }

    fn consume(&mut self, amt: usize) {
        self.0.consume(amt)
    }
}

/// Decodes an HTTP/1.1 chunked body (chunk extensions and trailers are skipped).
struct Chunked<R> {
    inner: R,
    remaining: u64,
    state: ChunkState,
    line: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data,
    DataEnd,
    Done,
}

const MAX_CHUNK_LINE: usize = 4 << 10;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Self {
        Chunked {
            inner,
            remaining: 0,
            state: ChunkState::Size,
            line: Vec::new(),
        }
    }

    /// The next line without its end of line; `None` at the end of the input.
    fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        let n = read_line(&mut self.inner, MAX_CHUNK_LINE, &mut self.line)?;
        if n == 0 {
            return Ok(None);
        }
        if n == MAX_CHUNK_LINE && self.line.last() != Some(&b'\n') {
            return Err(invalid("chunk header line too long"));
        }
        Ok(Some(trim_eol(&self.line)))
    }

    fn skip_trailers(&mut self) -> io::Result<()> {
        let mut total = 0u64;
        while let Some(line) = self.next_line()? {
            if line.is_empty() {
                break;
            }
            total += line.len() as u64;
            if total > MAX_HTTP_HEADER {
                return Err(invalid("chunked body trailer too long"));
            }
        }
        Ok(())
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(0),
                ChunkState::Size => {
                    let Some(line) = self.next_line()? else {
                        return Err(invalid("chunked body ends before its last chunk"));
                    };
                    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .map(str::trim)
                        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
                        .and_then(|s| u64::from_str_radix(s, 16).ok())
                        .ok_or_else(|| invalid(format!("bad chunk size {:?}", preview(line))))?;
                    if size == 0 {
                        self.skip_trailers()?;
                        self.state = ChunkState::Done;
                        return Ok(0);
                    }
                    self.remaining = size;
                    self.state = ChunkState::Data;
                }
                ChunkState::Data => {
                    if buf.is_empty() {
                        return Ok(0);
                    }
                    let want = buf
                        .len()
                        .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "chunked body ends inside a chunk",
                        ));
                    }
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                    return Ok(n);
                }
                ChunkState::DataEnd => match self.next_line()? {
                    Some([]) => self.state = ChunkState::Size,
                    Some(_) => return Err(invalid("chunk not followed by a line end")),
                    None => return Err(invalid("chunked body ends before its last chunk")),
                },
            }
        }
    }
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Fails the decompressed stream once it is over `RATIO_EXEMPT` bytes and more than
/// `max_ratio` times the compressed bytes read so far.
struct RatioGuard<R> {
    inner: R,
    compressed: Arc<AtomicU64>,
    out: u64,
    max_ratio: u64,
}

#[derive(Debug)]
struct DecompressionBomb {
    out: u64,
    compressed: u64,
}

impl fmt::Display for DecompressionBomb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} compressed bytes decompress to {} bytes",
            self.compressed, self.out
        )
    }
}

impl std::error::Error for DecompressionBomb {}

impl<R: Read> Read for RatioGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        let compressed = self.compressed.load(Ordering::Relaxed);
        if self.out > RATIO_EXEMPT && self.out > compressed.saturating_mul(self.max_ratio) {
            return Err(io::Error::other(DecompressionBomb {
                out: self.out,
                compressed,
            }));
        }
        Ok(n)
    }
}

/// Referers of the last requests, keyed by their record IDs, the records they are
/// concurrent to, and their target URIs.
struct Referers {
    map: HashMap<String, (u64, String)>,
    /// Each remembered request: its number and keys, oldest first.
    order: VecDeque<(u64, Vec<String>)>,
    seq: u64,
    max_requests: usize,
}

impl Referers {
    fn new(max_requests: usize) -> Self {
        Referers {
            map: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            max_requests,
        }
    }

    fn remember(&mut self, request: &RecordHead, referer: String) {
        if referer.len() > MAX_REFERER_LEN {
            return;
        }
        let ids = request.record_id.iter().chain(&request.concurrent_to);
        let keys = ids.map(|id| format!("id:{}", id.trim()));
        let keys = keys.chain(request.target_uri.iter().map(|uri| format!("uri:{uri}")));
        let keys: Vec<String> = keys
            .filter(|k| k.len() <= MAX_REFERER_LEN)
            .take(8)
            .collect();
        self.seq += 1;
        for key in &keys {
            self.map.insert(key.clone(), (self.seq, referer.clone()));
        }
        self.order.push_back((self.seq, keys));
        while self.order.len() > self.max_requests {
            let Some((seq, keys)) = self.order.pop_front() else {
                break;
            };
            for key in keys {
                // A later request may have taken the key over.
                if self.map.get(&key).is_some_and(|(s, _)| *s == seq) {
                    self.map.remove(&key);
                }
            }
        }
    }

    fn find(&self, response: &RecordHead) -> Option<String> {
        let ids = response.concurrent_to.iter().chain(&response.record_id);
        let keys = ids.map(|id| format!("id:{}", id.trim()));
        let mut keys = keys.chain(response.target_uri.iter().map(|uri| format!("uri:{uri}")));
        keys.find_map(|key| self.map.get(&key).map(|(_, referer)| referer.clone()))
    }
}

/// Reads one line, end of line included, of at most `max` bytes into `buf` (cleared first);
/// returns the bytes read, 0 at the end of the input.
fn read_line<R: BufRead + ?Sized>(r: &mut R, max: usize, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    Read::take(r, max as u64).read_until(b'\n', buf)
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Adds a `Name: value` line (or a continuation line) to a header; names are lowercased.
fn push_header(fields: &mut Vec<(String, String)>, text: &[u8]) -> Result<(), String> {
    if text.starts_with(b" ") || text.starts_with(b"\t") {
        let Some((_, value)) = fields.last_mut() else {
            return Err("continuation line before any header".into());
        };
        let more = String::from_utf8_lossy(text);
        let more = more.trim();
        if !more.is_empty() {
            if !value.is_empty() {
                value.push(' ');
            }
            value.push_str(more);
        }
        return Ok(());
    }
    let Some(colon) = text.iter().position(|&b| b == b':') else {
        return Err(format!("header line without a colon: {:?}", preview(text)));
    };
    let name = String::from_utf8_lossy(&text[..colon]);
    let name = name.trim();
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!("bad header name {name:?}"));
    }
    let value = String::from_utf8_lossy(&text[colon + 1..])
        .trim()
        .to_string();
    fields.push((name.to_ascii_lowercase(), value));
    Ok(())
}

/// The start of a line, for messages.
fn preview(bytes: &[u8]) -> String {
    let bytes = trim_eol(bytes);
    let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned();
    if bytes.len() > 60 {
        text.push('…');
    }
    text
}

/// Parses an RFC 3339 date-time (`2024-01-31T12:00:00Z`, `2024-01-31T13:00:00.5+01:00`) into
/// unix seconds (fractions are dropped). `None` if malformed or out of range.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let digits = b.get(from..to)?;
        digits.iter().try_fold(0i64, |v, &c| {
            c.is_ascii_digit().then(|| v * 10 + i64::from(c - b'0'))
        })
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        i += 1 + digits;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if b.len() == i + 1 => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let (h, m) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let offset = h * 3600 + m * 60;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[month as usize - 1]
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use std::io::Write;

    const DATE: &str = "2024-01-31T12:00:00Z";
    const DATE_UNIX: i64 = 1_706_702_400;

    fn lfw_jpeg() -> Option<Vec<u8>> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/lfw/lfw-deepfunneled/Aaron_Eckhart/Aaron_Eckhart_0001.jpg"
        );
        let bytes = std::fs::read(path).ok();
        if bytes.is_none() {
            eprintln!("skipping the LFW part of this test: {path} is absent");
        }
        bytes
    }

    /// A fake image (JPEG magic, then a pattern with CR, LF and `WARC/` inside).
    fn fake_image(len: usize) -> Vec<u8> {
        let mut bytes = vec![0xff, 0xd8, 0xff, 0xe0];
        let pattern = b"\r\nWARC/1.0\r\n\x00\x01\x02binary";
        bytes.extend(pattern.iter().cycle().take(len.saturating_sub(4)));
        bytes
    }

    fn record(kind: &str, id: &str, headers: &[(&str, &str)], ct: &str, block: &[u8]) -> Vec<u8> {
        let mut out = format!("WARC/1.1\r\nWARC-Type: {kind}\r\nWARC-Record-ID: <{id}>\r\n");
        out += &format!("WARC-Date: {DATE}\r\n");
        for (name, value) in headers {
            out += &format!("{name}: {value}\r\n");
        }
        out += &format!(
            "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
            block.len()
        );
        let mut out = out.into_bytes();
        out.extend_from_slice(block);
        out.extend_from_slice(b"\r\n\r\n");
        out
    }

    fn http(start: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut out = format!("{start}\r\n");
        for (name, value) in headers {
            out += &format!("{name}: {value}\r\n");
        }
        out += "\r\n";
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        out
    }

    const RESPONSE: &str = "application/http; msgtype=response";
    const REQUEST: &str = "application/http;msgtype=request";

    fn response_record(id: &str, uri: &str, http_block: &[u8], more: &[(&str, &str)]) -> Vec<u8> {
        let mut headers = vec![("WARC-Target-URI", uri)];
        headers.extend_from_slice(more);
        record("response", id, &headers, RESPONSE, http_block)
    }

    fn image_response(id: &str, uri: &str, body: &[u8]) -> Vec<u8> {
        let block = http("HTTP/1.1 200 OK", &[("Content-Type", "image/jpeg")], body);
        response_record(id, uri, &block, &[])
    }

    /// warcinfo, request with Referer, image response, HTML response, 404 image, resource.
    fn sample(image: &[u8], png: &[u8]) -> Vec<Vec<u8>> {
        let info = record(
            "warcinfo",
            "urn:uuid:0",
            &[],
            "application/warc-fields",
            b"software: t\r\n",
        );
        let request = http(
            "GET /a.jpg HTTP/1.1",
            &[
                ("Host", "example.com"),
                ("Referer", "http://example.com/page.html"),
            ],
            b"",
        );
        let request = record(
            "request",
            "urn:uuid:1",
            &[("WARC-Target-URI", "http://example.com/a.jpg")],
            REQUEST,
            &request,
        );
        let image_block = http(
            "HTTP/1.1 200 OK",
            &[
                ("Content-Type", "image/jpeg"),
                ("Content-Length", &image.len().to_string()),
            ],
            image,
        );
        let image = response_record(
            "urn:uuid:2",
            "http://example.com/a.jpg",
            &image_block,
            &[("WARC-Concurrent-To", "<urn:uuid:1>")],
        );
        let html = http(
            "HTTP/1.1 200 OK",
            &[("Content-Type", "text/html")],
            b"<html></html>",
        );
        let html = response_record("urn:uuid:3", "http://example.com/page.html", &html, &[]);
        let missing = http(
            "HTTP/1.1 404 Not Found",
            &[("Content-Type", "image/jpeg")],
            b"no",
        );
        let missing = response_record("urn:uuid:4", "http://example.com/gone.jpg", &missing, &[]);
        let resource = record(
            "resource",
            "urn:uuid:5",
            &[("WARC-Target-URI", "file:///b.png")],
            "image/png",
            png,
        );
        vec![info, request, image, html, missing, resource]
    }

    fn plain(records: &[Vec<u8>]) -> Vec<u8> {
        records.concat()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn gzip_each(records: &[Vec<u8>]) -> Vec<u8> {
        records.iter().flat_map(|r| gzip(r)).collect()
    }

    fn read_all(name: &str, data: &[u8], limits: &ReadLimits) -> Vec<ItemResult> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        read_warc(&path, limits).unwrap().collect()
    }

    fn codes(results: &[ItemResult]) -> Vec<String> {
        results
            .iter()
            .map(|r| match r {
                Ok(item) => format!("ok:{}", item.meta.uri.clone().unwrap_or_default()),
                Err(e) => e.code.clone(),
            })
            .collect()
    }

    fn check_sample(name: &str, results: &[ItemResult], image: &[u8], png: &[u8]) {
        assert_eq!(
            codes(results),
            ["ok:http://example.com/a.jpg", "ok:file:///b.png"]
        );
        let first = results[0].as_ref().unwrap();
        assert_eq!(first.bytes, image);
        assert!(
            first.location.starts_with(&format!("{name}#")),
            "{}",
            first.location
        );
        assert!(first.location.ends_with(" http://example.com/a.jpg"));
        let meta = &first.meta;
        assert_eq!(
            meta.page_uri.as_deref(),
            Some("http://example.com/page.html")
        );
        assert_eq!(meta.captured_at, Some(DATE_UNIX));
        let second = results[1].as_ref().unwrap();
        assert_eq!(second.bytes, png);
        assert_eq!(second.meta.page_uri, None);
        assert_eq!(second.meta.captured_at, Some(DATE_UNIX));
    }

    #[test]
    fn plain_and_gzipped_warc_yield_images_with_provenance() {
        let (image, png) = (fake_image(3000), fake_image(500));
        let records = sample(&image, &png);
        let limits = ReadLimits::default();
        let results = read_all("a.warc", &plain(&records), &limits);
        check_sample("a.warc", &results, &image, &png);
        // The first record starts at offset 0, the image response after warcinfo + request.
        let offset = records[0].len() + records[1].len();
        assert_eq!(
            results[0].as_ref().unwrap().location,
            format!("a.warc#{offset} http://example.com/a.jpg")
        );
        let results = read_all("a.warc.gz", &gzip_each(&records), &limits);
        check_sample("a.warc.gz", &results, &image, &png);
        // One gzip member for the whole file works too.
        let results = read_all("whole.warc.gz", &gzip(&plain(&records)), &limits);
        check_sample("whole.warc.gz", &results, &image, &png);
    }

    #[test]
    fn lfw_jpeg_comes_out_identical() {
        let Some(jpeg) = lfw_jpeg() else { return };
        let png = fake_image(100);
        let records = sample(&jpeg, &png);
        let limits = ReadLimits::default();
        let results = read_all("lfw.warc", &plain(&records), &limits);
        check_sample("lfw.warc", &results, &jpeg, &png);
        let results = read_all("lfw.warc.gz", &gzip_each(&records), &limits);
        check_sample("lfw.warc.gz", &results, &jpeg, &png);
        let resource = record("resource", "urn:uuid:9", &[], "image/jpeg", &jpeg);
        let results = read_all("r.warc.gz", &gzip(&resource), &limits);
        assert_eq!(results[0].as_ref().unwrap().bytes, jpeg);
    }

    #[test]
    fn is_warc_checks_the_magic() {
        let dir = tempfile::tempdir().unwrap();
        let records = sample(&fake_image(10), &fake_image(10));
        let cases: [(&str, Vec<u8>, bool); 5] = [
            ("a.warc", plain(&records), true),
            ("a.warc.gz", gzip_each(&records), true),
            ("renamed.bin", gzip_each(&records), true),
            ("b.warc", fake_image(100), false),
            ("c.warc.gz", gzip(b"<html>"), false),
        ];
        for (name, data, expected) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, data).unwrap();
            assert_eq!(is_warc(&path), expected, "{name}");
            assert_eq!(
                read_warc(&path, &ReadLimits::default()).is_ok(),
                expected,
                "{name}"
            );
        }
        let empty = dir.path().join("empty.warc");
        std::fs::write(&empty, b"").unwrap();
        assert!(!is_warc(&empty));
        assert!(!is_warc(dir.path()));
        assert!(read_warc(dir.path(), &ReadLimits::default()).is_err());
        assert!(!is_warc(&dir.path().join("absent.warc")));
    }

    #[test]
    fn truncated_warc_yields_earlier_images_then_stops() {
        let (image, png) = (fake_image(3000), fake_image(500));
        let mut records = sample(&image, &png);
        records.push(image_response(
            "urn:uuid:6",
            "http://example.com/c.jpg",
            &image,
        ));
        let limits = ReadLimits::default();
        let data = plain(&records);
        let cut = &data[..data.len() - 1000];
        let results = read_all("t.warc", cut, &limits);
        assert_eq!(
            codes(&results),
            [
                "ok:http://example.com/a.jpg",
                "ok:file:///b.png",
                "truncated_record"
            ]
        );
        let last = results[2].as_ref().unwrap_err();
        assert!(
            last.location.ends_with(" http://example.com/c.jpg"),
            "{}",
            last.location
        );
        // Gzipped per record, cut inside the last member.
        let data = gzip_each(&records);
        let last_member = gzip(&records[6]).len();
        let results = read_all("t.warc.gz", &data[..data.len() - last_member / 2], &limits);
        assert_eq!(
            codes(&results),
            [
                "ok:http://example.com/a.jpg",
                "ok:file:///b.png",
                "truncated_record"
            ]
        );
        // Cut inside a header.
        let data = plain(&records);
        let header_cut = data.len() - records[6].len() + 30;
        let results = read_all("h.warc", &data[..header_cut], &limits);
        assert_eq!(codes(&results)[2], "truncated_record");
        assert_eq!(results.len(), 3);
    }

    #[test]
    fn garbage_between_records_resynchronises() {
        let image = fake_image(800);
        let a = image_response("urn:uuid:a", "http://x/a.jpg", &image);
        let b = image_response("urn:uuid:b", "http://x/b.jpg", &image);
        let c = image_response("urn:uuid:c", "http://x/c.jpg", &image);
        let mut data = a.clone();
        data.extend_from_slice(b"this is not a record\r\nnor this\r\n\xff\xfe binary\n");
        data.extend_from_slice(&b);
        // A header line without a colon, then the record's block is scanned through.
        let mut broken = b"WARC/1.1\r\nWARC-Type: response\r\nno colon here\r\n".to_vec();
        broken.extend_from_slice(b"Content-Length: 10\r\n\r\n0123456789\r\n\r\n");
        data.extend_from_slice(&broken);
        // Missing Content-Length.
        data.extend_from_slice(b"WARC/1.1\r\nWARC-Type: resource\r\n\r\n");
        data.extend_from_slice(&c);
        let results = read_all("g.warc", &data, &ReadLimits::default());
        assert_eq!(
            codes(&results),
            [
                "ok:http://x/a.jpg",
                "bad_record",
                "ok:http://x/b.jpg",
                "bad_record",
                "bad_record",
                "ok:http://x/c.jpg"
            ]
        );
        for item in results.iter().flatten() {
            assert_eq!(item.bytes, image);
        }
        let bad = results[1].as_ref().unwrap_err();
        assert_eq!(bad.location, format!("g.warc#{}", a.len()));
        assert!(
            bad.message.contains("this is not a record"),
            "{}",
            bad.message
        );
    }

    #[test]
    fn garbage_without_records_stops_with_corrupt_warc() {
        let image = fake_image(100);
        let mut data = image_response("urn:uuid:a", "http://x/a.jpg", &image);
        data.extend(b"garbage line\n".iter().cycle().take(1 << 21));
        data.extend_from_slice(&image_response("urn:uuid:b", "http://x/b.jpg", &image));
        let results = read_all("c.warc", &data, &ReadLimits::default());
        assert_eq!(
            codes(&results),
            ["ok:http://x/a.jpg", "bad_record", "corrupt_warc"]
        );
    }

    #[test]
    fn http_codings_are_decoded() {
        let image = fake_image(5000);
        let chunked = |body: &[u8]| {
            let mut out = Vec::new();
            for (i, chunk) in body.chunks(1234).enumerate() {
                let ext = if i == 1 { ";name=value" } else { "" };
                out.extend(format!("{:X}{ext}\r\n", chunk.len()).bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
            out
        };
        let zlib = {
            let mut enc = ZlibEncoder::new(Vec::new(), Compression::default());
            enc.write_all(&image).unwrap();
            enc.finish().unwrap()
        };
        let raw_deflate = {
            let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
            enc.write_all(&image).unwrap();
            enc.finish().unwrap()
        };
        type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<u8>);
        let cases: Vec<Case> = vec![
            (vec![("Transfer-Encoding", "chunked")], chunked(&image)),
            (vec![("Content-Encoding", "gzip")], gzip(&image)),
            (
                vec![
                    ("Content-Encoding", "gzip"),
                    ("Transfer-Encoding", "chunked"),
                ],
                chunked(&gzip(&image)),
            ),
            (vec![("Content-Encoding", "deflate")], zlib),
            (vec![("Content-Encoding", "deflate")], raw_deflate),
            (vec![("Transfer-Encoding", "identity")], image.clone()),
        ];
        let mut records = Vec::new();
        for (i, (headers, body)) in cases.iter().enumerate() {
            let mut headers = headers.clone();
            headers.push(("Content-Type", "application/octet-stream"));
            let block = http("HTTP/1.1 200 OK", &headers, body);
            records.push(response_record(
                &format!("urn:uuid:{i}"),
                "http://x/i",
                &block,
                &[],
            ));
        }
        let unsupported = http("HTTP/1.1 200 OK", &[("Content-Encoding", "br")], b"xx");
        records.push(response_record(
            "urn:uuid:br",
            "http://x/br",
            &unsupported,
            &[],
        ));
        let broken = http(
            "HTTP/1.1 200 OK",
            &[("Transfer-Encoding", "chunked")],
            b"zz\r\n",
        );
        records.push(response_record(
            "urn:uuid:bad",
            "http://x/bad",
            &broken,
            &[],
        ));
        let after = image_response("urn:uuid:after", "http://x/after", &image);
        records.push(after);
        let results = read_all("c.warc", &plain(&records), &ReadLimits::default());
        let codes = codes(&results);
        assert_eq!(codes.len(), cases.len() + 3, "{codes:?}");
        for result in &results[..cases.len()] {
            assert_eq!(result.as_ref().unwrap().bytes, image);
        }
        assert_eq!(
            codes[cases.len()..],
            ["unsupported_encoding", "bad_record", "ok:http://x/after"]
        );
    }

    #[test]
    fn limits_are_enforced() {
        let (small, big) = (fake_image(100), fake_image(5000));
        let records = vec![
            image_response("urn:uuid:1", "http://x/big.jpg", &big),
            image_response("urn:uuid:2", "http://x/small.jpg", &small),
            record("resource", "urn:uuid:3", &[], "image/png", &big),
            image_response("urn:uuid:4", "http://x/small2.jpg", &small),
        ];
        let data = plain(&records);
        let limits = ReadLimits {
            max_item_bytes: 1000,
            ..ReadLimits::default()
        };
        let results = read_all("l.warc", &data, &limits);
        assert_eq!(
            codes(&results),
            [
                "too_large",
                "ok:http://x/small.jpg",
                "too_large",
                "ok:http://x/small2.jpg"
            ]
        );
        let limits = ReadLimits {
            max_entries: 2,
            ..ReadLimits::default()
        };
        let results = read_all("l.warc", &data, &limits);
        assert_eq!(
            codes(&results),
            [
                "ok:http://x/big.jpg",
                "ok:http://x/small.jpg",
                "container_limit"
            ]
        );
        let max_total_bytes = records[0].len() as u64 + 100;
        let limits = ReadLimits {
            max_total_bytes,
            ..ReadLimits::default()
        };
        let results = read_all("l.warc", &data, &limits);
        assert_eq!(codes(&results), ["ok:http://x/big.jpg", "container_limit"]);
        // A gzip bomb: 4 MiB of zeros in a few KiB.
        let bomb = record(
            "resource",
            "urn:uuid:z",
            &[],
            "image/png",
            &vec![0u8; 4 << 20],
        );
        let limits = ReadLimits {
            max_ratio: 20,
            ..ReadLimits::default()
        };
        let results = read_all("z.warc.gz", &gzip(&bomb), &limits);
        assert_eq!(codes(&results), ["decompression_bomb"]);
    }

    #[test]
    fn referers_are_bounded() {
        let head = |id: &str, uri: &str| RecordHead {
            warc_type: "request".into(),
            target_uri: Some(uri.into()),
            date: None,
            record_id: Some(format!("<{id}>")),
            concurrent_to: Vec::new(),
            content_type: None,
            length: 0,
        };
        let mut referers = Referers::new(2);
        for i in 0..5 {
            referers.remember(&head(&format!("r{i}"), &format!("u{i}")), format!("p{i}"));
        }
        assert_eq!(referers.map.len(), 4);
        assert_eq!(referers.find(&head("x", "u4")).as_deref(), Some("p4"));
        assert_eq!(referers.find(&head("x", "u3")).as_deref(), Some("p3"));
        assert_eq!(referers.find(&head("x", "u0")), None);
        // A later request for the same URI takes it over; evicting the older one keeps it.
        referers.remember(&head("r5", "u4"), "p5".into());
        assert_eq!(referers.find(&head("x", "u3")), None);
        referers.remember(&head("r6", "u6"), "p6".into());
        assert_eq!(referers.find(&head("x", "u4")).as_deref(), Some("p5"));
        assert_eq!(referers.find(&head("r4", "-")), None);
        assert_eq!(referers.order.len(), 2);
        // A response whose record ID a request named as concurrent.
        let mut request = head("req", "other");
        request.concurrent_to = vec!["<resp>".into()];
        referers.remember(&request, "page".into());
        assert_eq!(
            referers.find(&head("resp", "nothing")).as_deref(),
            Some("page")
        );
    }

    #[test]
    fn rfc3339_dates_parse() {
        assert_eq!(parse_rfc3339(DATE), Some(DATE_UNIX));
        assert_eq!(
            parse_rfc3339("2024-01-31T13:00:00.123+01:00"),
            Some(DATE_UNIX)
        );
        assert_eq!(parse_rfc3339("2024-01-31 07:30:00-04:30"), Some(DATE_UNIX));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        for bad in [
            "",
            "2024-01-31",
            "2024-01-31T12:00:00",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-31T24:00:00Z",
            "2024-01-31T12:00:00.Z",
            "2024-01-31T12:00:00+0100",
            "2024-01-31T12:00:00Zjunk",
            "+024-01-31T12:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
