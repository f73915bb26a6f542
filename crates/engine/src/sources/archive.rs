//! Streaming readers for tar, tar.gz (.tgz) and zip archives. Entries are read one at a time
//! straight from the archive into memory (never extracted to disk), so memory stays bounded by
//! `ReadLimits::max_item_bytes` whatever the archive size.
//!
//! Archives are untrusted: every hostile construct is reported as an [`ItemError`] with a stable
//! code and never ingested:
//! - `path_traversal`: an absolute entry path or one with a `..` component;
//! - `link_skipped`: a symbolic or hard link;
//! - `too_large`: an entry bigger than `max_item_bytes` (by its header or, for a lying header,
//!   by what it actually inflates to);
//! - `decompression_bomb`: a zip entry whose uncompressed/compressed ratio exceeds `max_ratio`
//!   (entries below 1 MiB exempt);
//! - `unsupported_entry`: an entry we cannot decode (encrypted or unsupported zip compression,
//!   GNU sparse tar member);
//! - `container_limit`: more than `max_entries` entries or `max_total_bytes` decompressed bytes
//!   (the last item; reading stops);
//! - `corrupt_archive`: a truncated or corrupt archive. Tar streams cannot be resynchronised, so
//!   it is the last item; a damaged zip entry is skipped and reading goes on with the next one.
//!   A zip whose central directory is unreadable (e.g. truncated) is read from its local headers
//!   as far as they go, then ends with this error.
//! - `io_error`: the archive file could not be read.
//!
//! Directories, devices and FIFOs are skipped, as are hidden files (any `.`-prefixed path
//! component) and macOS `__MACOSX` metadata, silently.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use anyhow::{bail, Context};
use flate2::read::MultiGzDecoder;
use tar::Header;
use zip::read::{read_zipfile_from_stream, ZipFile};
use zip::result::ZipError;
use zip::ZipArchive;

use super::{ItemError, ItemMeta, ItemResult, ReadLimits, SourceItem};

/// Entries whose uncompressed size is below this are exempt from the ratio check.
const RATIO_EXEMPT_BYTES: u64 = 1 << 20;
/// Largest tar extension record (PAX header, GNU long name) we buffer.
const MAX_EXTENSION_BYTES: u64 = 1 << 20;
/// Largest initial allocation for one entry; a lying header cannot make us reserve more.
const MAX_INITIAL_CAPACITY: u64 = 8 << 20;
const TAR_BLOCK: u64 = 512;
/// Bytes read to recognise a format (the ustar magic lies at 257..262).
const PROBE_BYTES: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Tar,
    TarGz,
    Zip,
}

fn sniff(head: &[u8]) -> Option<Format> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Format::TarGz)
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        // `PK\x05\x06`: an empty zip is just its end-of-central-directory record.
        Some(Format::Zip)
    } else if is_tar_block(head) {
        Some(Format::Tar)
    } else {
        None
    }
}

fn is_tar_block(head: &[u8]) -> bool {
    head.get(257..262) == Some(b"ustar".as_slice())
}

/// Reads up to `n` bytes, fewer only at end of stream.
fn read_head(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    r.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Whether `path` starts like a tar, gzip or zip file (cheap: reads 512 bytes).
pub fn is_archive(path: &Path) -> bool {
    File::open(path)
        .and_then(|mut f| read_head(&mut f, PROBE_BYTES))
        .is_ok_and(|head| sniff(&head).is_some())
}

/// Opens a tar, tar.gz or zip archive (recognised by its magic bytes, whatever its name) and
/// returns an iterator over its image entries. Fails if the file cannot be opened or is none of
/// these formats (or is gzip that does not hold a tar); everything found inside is reported
/// through the iterator.
pub fn read_archive(
    path: &Path,
    limits: &ReadLimits,
) -> anyhow::Result<Box<dyn Iterator<Item = ItemResult> + Send>> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let head =
        read_head(&mut file, PROBE_BYTES).with_context(|| format!("reading {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    match sniff(&head) {
        Some(Format::Zip) => {
            file.rewind()
                .with_context(|| format!("reading {}", path.display()))?;
            let opened = catch_unwind(AssertUnwindSafe(|| ZipArchive::new(BufReader::new(file))));
            let mode = match opened {
                Ok(Ok(archive)) => ZipMode::Central { archive, next: 0 },
                failed => {
                    // No readable central directory (typically a truncated download): salvage
                    // what the local headers still describe.
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "zip reader panicked".to_string(),
                    };
                    let file =
                        File::open(path).with_context(|| format!("opening {}", path.display()))?;
                    ZipMode::Stream {
                        reader: BufReader::new(file),
                        why,
                    }
                }
            };
            let ctx = Ctx::new(name, *limits);
            Ok(Box::new(ZipItems {
                ctx,
                mode,
                done: false,
            }))
        }
        Some(Format::Tar) => {
            let reader: Box<dyn Read + Send> = Box::new(io::Cursor::new(head).chain(file));
            Ok(Box::new(TarItems::new(reader, name, *limits)))
        }
        Some(Format::TarGz) => {
            let mut gz = MultiGzDecoder::new(io::Cursor::new(head).chain(file));
            let inner = read_head(&mut gz, PROBE_BYTES)
                .with_context(|| format!("{}: unreadable gzip stream", path.display()))?;
            let empty_tar = !inner.is_empty() && inner.iter().all(|&b| b == 0);
            if !is_tar_block(&inner) && !empty_tar {
                bail!("{}: gzip-compressed, but not a tar archive", path.display());
            }
            let reader: Box<dyn Read + Send> = Box::new(io::Cursor::new(inner).chain(gz));
            Ok(Box::new(TarItems::new(reader, name, *limits)))
        }
        None => bail!("{}: not a tar, tar.gz or zip archive", path.display()),
    }
}

/// What an entry path amounts to.
#[derive(Debug, PartialEq, Eq)]
enum EntryPath {
    /// A relative path, normalised (no `.` or empty components, `/` separators).
    Clean(String),
    Traversal,
    /// Hidden, macOS metadata, or the archive root itself: skipped silently.
    Ignored,
}

fn classify(raw: &str) -> EntryPath {
    let bytes = raw.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if raw.starts_with(['/', '\\']) || drive {
        return EntryPath::Traversal;
    }
    let mut parts = Vec::new();
    for part in raw.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return EntryPath::Traversal,
            _ => parts.push(part),
        }
    }
    if parts.is_empty() || parts.iter().any(|p| p.starts_with('.') || *p == "__MACOSX") {
        return EntryPath::Ignored;
    }
    EntryPath::Clean(parts.join("/"))
}

/// Per-archive state shared by the readers.
struct Ctx {
    name: String,
    limits: ReadLimits,
    entries: u64,
    /// Decompressed bytes read so far (zip; the tar reader counts its stream instead).
    total: u64,
}

impl Ctx {
    fn new(name: String, limits: ReadLimits) -> Ctx {
        Ctx {
            name,
            limits,
            entries: 0,
            total: 0,
        }
    }

    fn location(&self, entry: &str) -> String {
        format!("{}!{}", self.name, entry)
    }

    fn error(&self, entry: Option<&str>, code: &str, message: impl ToString) -> ItemError {
        let location = entry.map_or_else(|| self.name.clone(), |e| self.location(e));
        ItemError::new(location, code, message)
    }

    /// Counts one more entry; the error ends the iteration.
    fn count_entry(&mut self) -> Result<(), ItemError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(self.error(
                None,
                "container_limit",
                format!("more than {} entries", self.limits.max_entries),
            ));
        }
        Ok(())
    }

    fn total_limit(&self, total: u64) -> ItemError {
        self.error(
            None,
            "container_limit",
            format!(
                "more than {} decompressed bytes (at {total})",
                self.limits.max_total_bytes
            ),
        )
    }

    fn too_large(&self, entry: &str, size: u64) -> ItemError {
        self.error(
            Some(entry),
            "too_large",
            format!(
                "{size} bytes, more than the {} byte limit",
                self.limits.max_item_bytes
            ),
        )
    }

    fn item(&self, entry: &str, bytes: Vec<u8>) -> SourceItem {
        let location = self.location(entry);
        let meta = ItemMeta {
            uri: Some(location.clone()),
            ..ItemMeta::default()
        };
        SourceItem {
            location,
            bytes,
            meta,
        }
    }
}

/// Runs one reader step, turning a panic in a parser into a final `corrupt_archive`.
fn guarded<T>(name: &str, step: impl FnOnce() -> Result<T, ItemError>) -> Result<T, ItemError> {
    catch_unwind(AssertUnwindSafe(step)).unwrap_or_else(|_| {
        Err(ItemError::new(
            name,
            "corrupt_archive",
            "archive reader panicked on malformed input",
        ))
    })
}

fn io_code(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
            "corrupt_archive"
        }
        _ => "io_error",
    }
}

// ---------------------------------------------------------------------------------------------
// tar

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// A tar stream read member by member. Parsing is ours (with `tar::Header` for the fields) so
/// that extension records are size-capped and the iterator owns its reader.
struct TarItems {
    ctx: Ctx,
    reader: Counted<Box<dyn Read + Send>>,
    done: bool,
}

/// Fields a PAX extended header sets for the next member.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    size: Option<u64>,
}

impl Iterator for TarItems {
    type Item = ItemResult;

    fn next(&mut self) -> Option<ItemResult> {
        if self.done {
            return None;
        }
        let name = self.ctx.name.clone();
        match guarded(&name, || self.step()) {
            Ok(Some(item)) => Some(item),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl TarItems {
    fn new(reader: Box<dyn Read + Send>, name: String, limits: ReadLimits) -> TarItems {
        TarItems {
            ctx: Ctx::new(name, limits),
            reader: Counted {
                inner: reader,
                count: 0,
            },
            done: false,
        }
    }

    fn corrupt(&self, entry: Option<&str>, message: impl std::fmt::Display) -> ItemError {
        let at = self.reader.count;
        self.ctx.error(
            entry,
            "corrupt_archive",
            format!("{message} (at byte {at} of the tar stream)"),
        )
    }

    fn stream_error(&self, entry: Option<&str>, e: io::Error) -> ItemError {
        let at = self.reader.count;
        self.ctx.error(
            entry,
            io_code(&e),
            format!("{e} (at byte {at} of the tar stream)"),
        )
    }

    /// Reads one 512-byte block; `false` at a clean end of stream.
    fn read_block(
        &mut self,
        block: &mut [u8; 512],
        entry: Option<&str>,
    ) -> Result<bool, ItemError> {
        let mut filled = 0;
        while filled < block.len() {
            match self.reader.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(self.corrupt(entry, "truncated tar header")),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.stream_error(entry, e)),
            }
        }
        Ok(true)
    }

    /// Reads (`keep`) or skips a member's `size` data bytes and their padding to the next block.
    fn consume(
        &mut self,
        size: u64,
        keep: bool,
        entry: Option<&str>,
    ) -> Result<Vec<u8>, ItemError> {
        let padded = size.div_ceil(TAR_BLOCK).saturating_mul(TAR_BLOCK);
        let total = self.reader.count.saturating_add(padded);
        if total > self.ctx.limits.max_total_bytes {
            return Err(self.ctx.total_limit(total));
        }
        let mut data = Vec::new();
        let got = if keep {
            data.reserve_exact(size.min(MAX_INITIAL_CAPACITY) as usize);
            (&mut self.reader)
                .take(size)
                .read_to_end(&mut data)
                .map(|n| n as u64)
        } else {
            io::copy(&mut (&mut self.reader).take(size), &mut io::sink())
        };
        match got {
            Ok(n) if n == size => {}
            Ok(n) => {
                return Err(self.corrupt(entry, format!("truncated entry ({n} of {size} bytes)")))
            }
            Err(e) => return Err(self.stream_error(entry, e)),
        }
        let pad = padded - size;
        match io::copy(&mut (&mut self.reader).take(pad), &mut io::sink()) {
            Ok(n) if n == pad => Ok(data),
            Ok(_) => Err(self.corrupt(entry, "truncated entry padding")),
            Err(e) => Err(self.stream_error(entry, e)),
        }
    }

    /// Reads members until one yields an item or error (`Ok(Some)`), the archive ends
    /// (`Ok(None)`) or it cannot go on (`Err`, the last item).
    fn step(&mut self) -> Result<Option<ItemResult>, ItemError> {
        let mut long_name: Option<Vec<u8>> = None;
        let mut pax = Pax::default();
        let mut pending = false;
        loop {
            let mut header = Header::new_old();
            let more = self.read_block(header.as_mut_bytes(), None)?;
            if !more || header.as_bytes().iter().all(|&b| b == 0) {
                // End of archive (a zero block, or end of stream at a block boundary).
                if pending {
                    return Err(self.corrupt(None, "extension header without a member"));
                }
                return Ok(None);
            }
            verify_checksum(&header).map_err(|m| self.corrupt(None, m))?;
            let kind = header.entry_type();
            let size = header.entry_size().map_err(|e| self.corrupt(None, e))?;

            let extension = kind.is_gnu_longname()
                || kind.is_gnu_longlink()
                || kind.is_pax_local_extensions()
                || kind.is_pax_global_extensions();
            if extension {
                if size > MAX_EXTENSION_BYTES {
                    let message = format!("{size}-byte extension header");
                    return Err(self.corrupt(None, message));
                }
                let data = self.consume(size, true, None)?;
                pending = true;
                if kind.is_gnu_longname() {
                    long_name = Some(data);
                } else if kind.is_pax_local_extensions() {
                    pax = parse_pax(&data).map_err(|m| self.corrupt(None, m))?;
                }
                // GNU long link names and PAX global headers carry nothing we use.
                continue;
            }

            self.ctx.count_entry()?;
            let size = pax.size.unwrap_or(size);
            let raw = match (long_name.take(), pax.path.take()) {
                (Some(mut name), _) => {
                    while name.last() == Some(&0) {
                        name.pop();
                    }
                    name
                }
                (None, Some(path)) => path,
                (None, None) => header.path_bytes().into_owned(),
            };
            let raw = String::from_utf8_lossy(&raw).into_owned();

            if kind.is_gnu_sparse() {
                // Skip the extended sparse maps that follow the header.
                let mut extended = header.as_gnu().is_some_and(|g| g.is_extended());
                while extended {
                    let mut block = [0u8; 512];
                    if !self.read_block(&mut block, Some(&raw))? {
                        return Err(self.corrupt(Some(&raw), "truncated sparse header"));
                    }
                    extended = block[504] == 1;
                }
            }

            let entry = match classify(&raw) {
                EntryPath::Clean(entry) => entry,
                EntryPath::Traversal => {
                    self.consume(size, false, Some(&raw))?;
                    let message = "absolute path or `..` component; not ingested";
                    return Ok(Some(Err(self.ctx.error(
                        Some(&raw),
                        "path_traversal",
                        message,
                    ))));
                }
                EntryPath::Ignored => {
                    self.consume(size, false, Some(&raw))?;
                    pending = false;
                    continue;
                }
            };

            let file = kind.is_file() || kind.is_contiguous();
            let skipped = if kind.is_dir() || (file && raw.ends_with(['/', '\\'])) {
                None
            } else if kind.is_symlink() || kind.is_hard_link() {
                Some(
                    self.ctx
                        .error(Some(&entry), "link_skipped", "link entry; not followed"),
                )
            } else if kind.is_gnu_sparse() {
                let message = "GNU sparse member; not supported";
                Some(self.ctx.error(Some(&entry), "unsupported_entry", message))
            } else if !file {
                None // devices, FIFOs, unknown types
            } else if size > self.ctx.limits.max_item_bytes {
                Some(self.ctx.too_large(&entry, size))
            } else {
                let bytes = self.consume(size, true, Some(&entry))?;
                return Ok(Some(Ok(self.ctx.item(&entry, bytes))));
            };
            self.consume(size, false, Some(&entry))?;
            match skipped {
                Some(e) => return Ok(Some(Err(e))),
                None => pending = false,
            }
        }
    }
}

/// Accepts the POSIX (unsigned) and the historical signed-char header checksum.
fn verify_checksum(header: &Header) -> Result<(), String> {
    let stored = header.cksum().map_err(|e| e.to_string())?;
    let bytes = header.as_bytes();
    let field = 148..156;
    let mut unsigned: u32 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let b = if field.contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::from(stored) == signed {
        Ok(())
    } else {
        Err("tar header checksum mismatch".to_string())
    }
}

/// Parses PAX records (`"<len> <key>=<value>\n"`, `len` counting the whole record).
fn parse_pax(mut data: &[u8]) -> Result<Pax, String> {
    let mut pax = Pax::default();
    while !data.is_empty() && data[0] != 0 {
        let bad = || "malformed PAX extended header".to_string();
        let space = data.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad());
        }
        let body = &data[space + 1..len - 1];
        let eq = body.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let (key, value) = (&body[..eq], &body[eq + 1..]);
        match key {
            b"path" => pax.path = Some(value.to_vec()),
            b"size" => {
                let size = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
                pax.size = Some(size.ok_or_else(|| "malformed PAX size".to_string())?);
            }
            _ => {}
        }
        data = &data[len..];
    }
    Ok(pax)
}

// ---------------------------------------------------------------------------------------------
// zip

enum ZipMode {
    /// Entries listed by the central directory, read by random access.
    Central {
        archive: ZipArchive<BufReader<File>>,
        next: usize,
    },
    /// The central directory was unreadable (`why`): entries read from their local headers.
    Stream {
        reader: BufReader<File>,
        why: String,
    },
}

struct ZipItems {
    ctx: Ctx,
    mode: ZipMode,
    done: bool,
}

/// Outcome of one zip step: an item or error to yield, nothing (an entry skipped, or the end
/// when `done` is set), or an error that ends the iteration.
type Step = Result<Option<ItemResult>, ItemError>;

impl Iterator for ZipItems {
    type Item = ItemResult;

    fn next(&mut self) -> Option<ItemResult> {
        while !self.done {
            let name = self.ctx.name.clone();
            match guarded(&name, || self.step()) {
                Ok(Some(item)) => return Some(item),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

impl ZipItems {
    fn step(&mut self) -> Step {
        let ctx = &mut self.ctx;
        match &mut self.mode {
            ZipMode::Central { archive, next } => {
                let index = *next;
                if index >= archive.len() {
                    self.done = true;
                    return Ok(None);
                }
                *next += 1;
                ctx.count_entry()?;
                let raw = archive
                    .name_for_index(index)
                    .unwrap_or_default()
                    .to_string();
                match archive.by_index(index) {
                    Ok(mut file) => zip_entry(ctx, &mut file),
                    Err(ZipError::UnsupportedArchive(why)) => {
                        Ok(Some(Err(ctx.error(Some(&raw), "unsupported_entry", why))))
                    }
                    Err(e) => Ok(Some(Err(ctx.error(Some(&raw), "corrupt_archive", e)))),
                }
            }
            ZipMode::Stream { reader, why } => {
                let end = |message: String| {
                    let message = format!("unreadable central directory ({why}); {message}");
                    ctx.error(None, "corrupt_archive", message)
                };
                match read_zipfile_from_stream(reader) {
                    Ok(Some(mut file)) => {
                        ctx.count_entry()?;
                        match zip_entry(ctx, &mut file)? {
                            // Damaged data here is most likely where the file was cut off.
                            Some(Err(e)) if e.code == "corrupt_archive" => {
                                let why =
                                    format!("{}; unreadable central directory ({why})", e.message);
                                Err(ItemError { message: why, ..e })
                            }
                            step => Ok(step),
                        }
                    }
                    Ok(None) => Err(end("local entries read".to_string())),
                    Err(e) => Err(end(format!("stopped at a damaged local entry: {e}"))),
                }
            }
        }
    }
}

fn zip_entry<R: Read>(ctx: &mut Ctx, file: &mut ZipFile<'_, R>) -> Step {
    let raw = file.name().to_string();
    let entry = match classify(&raw) {
        EntryPath::Clean(entry) => entry,
        EntryPath::Traversal => {
            let message = "absolute path or `..` component; not ingested";
            return Ok(Some(Err(ctx.error(Some(&raw), "path_traversal", message))));
        }
        EntryPath::Ignored => return Ok(None),
    };
    if file.is_dir() {
        return Ok(None);
    }
    if file.is_symlink() {
        let error = ctx.error(Some(&entry), "link_skipped", "symbolic link; not followed");
        return Ok(Some(Err(error)));
    }
    const S_IFMT: u32 = 0o170000;
    const S_IFREG: u32 = 0o100000;
    if file
        .unix_mode()
        .is_some_and(|m| m & S_IFMT != 0 && m & S_IFMT != S_IFREG)
    {
        return Ok(None); // devices, FIFOs, sockets
    }

    let size = file.size();
    let compressed = file.compressed_size();
    let limits = ctx.limits;
    if size >= RATIO_EXEMPT_BYTES && size > compressed.saturating_mul(limits.max_ratio) {
        let message = format!(
            "{size} bytes from {compressed} compressed, ratio above {}",
            limits.max_ratio
        );
        return Ok(Some(Err(ctx.error(
            Some(&entry),
            "decompression_bomb",
            message,
        ))));
    }
    if size > limits.max_item_bytes {
        return Ok(Some(Err(ctx.too_large(&entry, size))));
    }
    let total = ctx.total.saturating_add(size);
    if total > limits.max_total_bytes {
        return Err(ctx.total_limit(total));
    }

    let mut bytes = Vec::with_capacity(size.min(MAX_INITIAL_CAPACITY) as usize);
    // One byte past the limit tells a header that understates the size.
    let read = file
        .take(limits.max_item_bytes.saturating_add(1))
        .read_to_end(&mut bytes);
    ctx.total = ctx.total.saturating_add(bytes.len() as u64);
    if let Err(e) = read {
        return Ok(Some(Err(ctx.error(Some(&entry), io_code(&e), e))));
    }
    let got = bytes.len() as u64;
    if got > limits.max_item_bytes {
        return Ok(Some(Err(ctx.too_large(&entry, got))));
    }
    if got != size {
        let message = format!("entry declares {size} bytes but holds {got}");
        return Ok(Some(Err(ctx.error(
            Some(&entry),
            "corrupt_archive",
            message,
        ))));
    }
    Ok(Some(Ok(ctx.item(&entry, bytes))))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;
    use std::time::Instant;

    use flate2::write::GzEncoder;
    use flate2::Compression;
    use tar::EntryType;
    use zip::write::SimpleFileOptions;
    use zip::{CompressionMethod, ZipWriter};

    use super::*;

    /// One entry of a test archive.
    enum E<'a> {
        /// A regular file, written the normal way (long names get a GNU long-name record).
        File(&'a str, &'a [u8]),
        /// A regular file whose name is written verbatim into the header (hostile names).
        Raw(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
        /// A PAX `path` record followed by a file whose header names `short`.
        Pax(&'a str, &'a str, &'a [u8]),
    }

    /// Incompressible pseudo-random bytes.
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn tar_bytes(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = Header::new_gnu();
            h.set_mode(0o644);
            match *e {
                E::File(name, data) => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, name, data).unwrap();
                }
                E::Raw(name, data) => {
                    let mut h = Header::new_ustar();
                    h.set_mode(0o644);
                    h.set_size(data.len() as u64);
                    h.set_entry_type(EntryType::Regular);
                    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                    h.set_cksum();
                    b.append(&h, data).unwrap();
                }
                E::Dir(name) => {
                    h.set_entry_type(EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, name, io::empty()).unwrap();
                }
                E::Symlink(name, target) | E::HardLink(name, target) => {
                    let link = matches!(e, E::HardLink(..));
                    h.set_entry_type(if link {
                        EntryType::Link
                    } else {
                        EntryType::Symlink
                    });
                    h.set_size(0);
                    b.append_link(&mut h, name, target).unwrap();
                }
                E::Pax(path, short, data) => {
                    b.append_pax_extensions([("path", path.as_bytes())])
                        .unwrap();
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, short, data).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    fn zip_bytes(entries: &[E]) -> Vec<u8> {
        let mut z = ZipWriter::new(io::Cursor::new(Vec::new()));
        let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        for e in entries {
            match *e {
                E::File(name, data) | E::Raw(name, data) => {
                    z.start_file(name, opts).unwrap();
                    z.write_all(data).unwrap();
                }
                E::Dir(name) => z.add_directory(name, opts).unwrap(),
                E::Symlink(name, target) => z.add_symlink(name, target, opts).unwrap(),
                E::HardLink(..) | E::Pax(..) => unreachable!("not a zip entry"),
            }
        }
        z.finish().unwrap().into_inner()
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn read_all(path: &Path, limits: &ReadLimits) -> Vec<ItemResult> {
        read_archive(path, limits).unwrap().collect()
    }

    /// `ok:<location>` or `<code>:<location>` per result.
    fn summary(results: &[ItemResult]) -> Vec<String> {
        results
            .iter()
            .map(|r| match r {
                Ok(item) => format!("ok:{}", item.location),
                Err(e) => format!("{}:{}", e.code, e.location),
            })
            .collect()
    }

    fn items(results: &[ItemResult]) -> Vec<&SourceItem> {
        results.iter().filter_map(|r| r.as_ref().ok()).collect()
    }

    #[test]
    fn classify_paths() {
        let clean = |s: &str| EntryPath::Clean(s.to_string());
        assert_eq!(classify("a/b/c.jpg"), clean("a/b/c.jpg"));
        assert_eq!(classify("./a//b.jpg"), clean("a/b.jpg"));
        assert_eq!(classify("a\\b.jpg"), clean("a/b.jpg"));
        assert_eq!(classify("a..b/c..jpg"), clean("a..b/c..jpg"));
        for bad in [
            "../x.jpg",
            "/etc/passwd",
            "a/../../x",
            "..",
            "\\x",
            "C:\\x.jpg",
            "a\\..\\x",
        ] {
            assert_eq!(classify(bad), EntryPath::Traversal, "{bad}");
        }
        for quiet in [
            "./",
            ".",
            "",
            ".DS_Store",
            "a/._b.jpg",
            ".git/x",
            "__MACOSX/a/b.jpg",
        ] {
            assert_eq!(classify(quiet), EntryPath::Ignored, "{quiet}");
        }
    }

    #[test]
    fn tar_gz_nested_folders() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (noise(3000, 1), noise(10, 2), noise(512, 3));
        let long = format!("photos/{}/deep.jpg", "x".repeat(150));
        let tar = tar_bytes(&[
            E::Dir("photos/"),
            E::Dir("photos/2020/"),
            E::File("photos/2020/a.jpg", &a),
            E::File("photos/2020/summer/b.jpg", &b),
            E::File("./photos/c.jpg", &c),
            E::File(".DS_Store", b"junk"),
            E::File("photos/._a.jpg", b"junk"),
            E::File("__MACOSX/photos/._a.jpg", b"junk"),
            E::File(&long, &b),
            E::Pax("pax/named.jpg", "short.jpg", &c),
            E::File("photos/empty.jpg", b""),
        ]);
        let path = write(&dir, "set.tgz", &gzip(&tar));
        assert!(is_archive(&path));
        let results = read_all(&path, &ReadLimits::default());
        assert_eq!(
            summary(&results),
            [
                "ok:set.tgz!photos/2020/a.jpg".to_string(),
                "ok:set.tgz!photos/2020/summer/b.jpg".to_string(),
                "ok:set.tgz!photos/c.jpg".to_string(),
                format!("ok:set.tgz!{long}"),
                "ok:set.tgz!pax/named.jpg".to_string(),
                "ok:set.tgz!photos/empty.jpg".to_string(),
            ]
        );
        let got = items(&results);
        let expected: [&[u8]; 6] = [&a, &b, &c, &b, &c, b""];
        for (item, want) in got.iter().zip(expected) {
            assert_eq!(item.bytes, want, "{}", item.location);
            assert_eq!(item.meta.uri.as_deref(), Some(item.location.as_str()));
        }
    }

    #[test]
    fn plain_tar_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let a = noise(700, 4);
        let path = write(&dir, "data.bin", &tar_bytes(&[E::File("a/b.png", &a)]));
        assert!(is_archive(&path));
        let results = read_all(&path, &ReadLimits::default());
        assert_eq!(summary(&results), ["ok:data.bin!a/b.png"]);
        assert_eq!(items(&results)[0].bytes, a);
    }

    #[test]
    fn zip_nested_folders_detected_by_magic() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (noise(5000, 5), vec![7u8; 4000]);
        let zip = zip_bytes(&[
            E::Dir("photos/"),
            E::Dir("photos/2021/"),
            E::File("photos/2021/a.jpg", &a),
            E::File("photos/2021/x/y/b.jpg", &b),
            E::File("__MACOSX/photos/2021/._a.jpg", b"junk"),
            E::File("photos/.hidden.jpg", b"junk"),
            E::File("top.jpg", &a),
        ]);
        // Misleading extension: the format comes from the magic bytes.
        let path = write(&dir, "photos.tar.gz", &zip);
        assert!(is_archive(&path));
        let results = read_all(&path, &ReadLimits::default());
        assert_eq!(
            summary(&results),
            [
                "ok:photos.tar.gz!photos/2021/a.jpg",
                "ok:photos.tar.gz!photos/2021/x/y/b.jpg",
                "ok:photos.tar.gz!top.jpg",
            ]
        );
        let got = items(&results);
        assert_eq!(got[0].bytes, a);
        assert_eq!(got[1].bytes, b);
        assert_eq!(got[2].bytes, a);
        assert_eq!(got[2].meta.uri.as_deref(), Some("photos.tar.gz!top.jpg"));
    }

    #[test]
    fn path_traversal_is_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let entries = [
            E::Raw("../evil.jpg", b"evil"),
            E::Raw("/etc/passwd", b"root:x:0:0"),
            E::Raw("a/../../b.jpg", b"evil"),
            E::File("ok.jpg", b"fine"),
        ];
        let expected = |name: &str| {
            vec![
                format!("path_traversal:{name}!../evil.jpg"),
                format!("path_traversal:{name}!/etc/passwd"),
                format!("path_traversal:{name}!a/../../b.jpg"),
                format!("ok:{name}!ok.jpg"),
            ]
        };
        let tgz = write(&dir, "t.tar.gz", &gzip(&tar_bytes(&entries)));
        let results = read_all(&tgz, &ReadLimits::default());
        assert_eq!(summary(&results), expected("t.tar.gz"));
        assert_eq!(items(&results)[0].bytes, b"fine");

        let zip = write(&dir, "t.zip", &zip_bytes(&entries));
        let results = read_all(&zip, &ReadLimits::default());
        assert_eq!(summary(&results), expected("t.zip"));
        assert_eq!(items(&results)[0].bytes, b"fine");
    }

    #[test]
    fn links_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_bytes(&[
            E::Symlink("link.jpg", "/etc/passwd"),
            E::HardLink("hard.jpg", "a.jpg"),
            E::File("a.jpg", b"img"),
        ]);
        let path = write(&dir, "l.tar", &tar);
        assert_eq!(
            summary(&read_all(&path, &ReadLimits::default())),
            [
                "link_skipped:l.tar!link.jpg",
                "link_skipped:l.tar!hard.jpg",
                "ok:l.tar!a.jpg"
            ]
        );

        let zip = zip_bytes(&[
            E::Symlink("link.jpg", "../../etc/passwd"),
            E::File("a.jpg", b"img"),
        ]);
        let path = write(&dir, "l.zip", &zip);
        assert_eq!(
            summary(&read_all(&path, &ReadLimits::default())),
            ["link_skipped:l.zip!link.jpg", "ok:l.zip!a.jpg"]
        );
    }

    #[test]
    fn zip_bomb_is_rejected() {
        let start = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let mut z = ZipWriter::new(io::Cursor::new(Vec::new()));
        let opts = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(1))
            .large_file(true);
        z.start_file("bomb.jpg", opts).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..200 {
            z.write_all(&zeros).unwrap();
        }
        // Highly compressible but small: exempt from the ratio check.
        z.start_file("small.jpg", opts).unwrap();
        z.write_all(&zeros[..512 << 10]).unwrap();
        z.start_file("after.jpg", opts).unwrap();
        z.write_all(b"still read").unwrap();
        let bytes = z.finish().unwrap().into_inner();
        assert!(bytes.len() < 2 << 20, "bomb is {} bytes", bytes.len());
        let path = write(&dir, "bomb.zip", &bytes);

        let limits = ReadLimits {
            max_item_bytes: 4 << 20,
            max_ratio: 200,
            ..Default::default()
        };
        let results = read_all(&path, &limits);
        assert_eq!(
            summary(&results),
            [
                "decompression_bomb:bomb.zip!bomb.jpg",
                "ok:bomb.zip!small.jpg",
                "ok:bomb.zip!after.jpg"
            ]
        );
        assert_eq!(items(&results)[0].bytes.len(), 512 << 10);
        assert!(
            start.elapsed().as_millis() < 3000,
            "took {:?}",
            start.elapsed()
        );
    }

    /// Sets the uncompressed size of the first zip entry in both its local and central headers.
    fn patch_first_zip_size(zip: &mut [u8], size: u32) {
        let find = |sig: &[u8]| zip.windows(4).position(|w| w == sig).unwrap();
        let local = find(b"PK\x03\x04");
        let central = find(b"PK\x01\x02");
        zip[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
        zip[central + 24..central + 28].copy_from_slice(&size.to_le_bytes());
    }

    #[test]
    fn lying_zip_header_cannot_inflate_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let zeros = vec![0u8; 2 << 20];
        let mut zip = zip_bytes(&[E::File("liar.jpg", &zeros), E::File("next.jpg", b"ok")]);
        patch_first_zip_size(&mut zip, 1000);
        let path = write(&dir, "liar.zip", &zip);
        let limits = ReadLimits {
            max_item_bytes: 1 << 20,
            ..Default::default()
        };
        let results = read_all(&path, &limits);
        assert_eq!(
            summary(&results),
            ["too_large:liar.zip!liar.jpg", "ok:liar.zip!next.jpg"]
        );
    }

    #[test]
    fn too_large_entries_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let big = noise(5000, 6);
        let entries = [
            E::File("big.jpg", &big),
            E::File("small.jpg", b"0123456789"),
        ];
        let limits = ReadLimits {
            max_item_bytes: 1000,
            ..Default::default()
        };
        let tgz = write(&dir, "s.tgz", &gzip(&tar_bytes(&entries)));
        assert_eq!(
            summary(&read_all(&tgz, &limits)),
            ["too_large:s.tgz!big.jpg", "ok:s.tgz!small.jpg"]
        );
        let zip = write(&dir, "s.zip", &zip_bytes(&entries));
        assert_eq!(
            summary(&read_all(&zip, &limits)),
            ["too_large:s.zip!big.jpg", "ok:s.zip!small.jpg"]
        );
    }

    #[test]
    fn container_limits_stop_the_iteration() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<Vec<u8>> = (0..4).map(|i| noise(10 << 10, 10 + i)).collect();
        let names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"];
        let entries: Vec<E> = names
            .iter()
            .zip(&data)
            .map(|(n, d)| E::File(n, d))
            .collect();
        let tgz = write(&dir, "c.tgz", &gzip(&tar_bytes(&entries)));
        let zip = write(&dir, "c.zip", &zip_bytes(&entries));

        let by_count = ReadLimits {
            max_entries: 2,
            ..Default::default()
        };
        let by_bytes = ReadLimits {
            max_total_bytes: 25 << 10,
            ..Default::default()
        };
        for limits in [by_count, by_bytes] {
            for (path, name) in [(&tgz, "c.tgz"), (&zip, "c.zip")] {
                let results = read_all(path, &limits);
                assert_eq!(
                    summary(&results),
                    [
                        format!("ok:{name}!a.jpg"),
                        format!("ok:{name}!b.jpg"),
                        format!("container_limit:{name}")
                    ]
                );
            }
        }
    }

    fn check_truncated(results: &[ItemResult], originals: &[Vec<u8>]) {
        let (last, good) = results.split_last().expect("at least the error");
        assert_eq!(
            last.as_ref().unwrap_err().code,
            "corrupt_archive",
            "{:?}",
            summary(results)
        );
        assert!(
            !good.is_empty() && good.len() < originals.len(),
            "{:?}",
            summary(results)
        );
        for (i, (r, want)) in good.iter().zip(originals).enumerate() {
            let item = r.as_ref().unwrap();
            assert_eq!(
                item.location.rsplit('!').next().unwrap(),
                format!("f{i}.jpg")
            );
            assert_eq!(&item.bytes, want);
        }
    }

    #[test]
    fn truncated_archives_yield_good_entries_then_corrupt_archive() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<Vec<u8>> = (0..8).map(|i| noise(32 << 10, 20 + i)).collect();
        let names: Vec<String> = (0..8).map(|i| format!("f{i}.jpg")).collect();
        let entries: Vec<E> = names
            .iter()
            .zip(&data)
            .map(|(n, d)| E::File(n, d))
            .collect();

        let tgz = gzip(&tar_bytes(&entries));
        let path = write(&dir, "cut.tgz", &tgz[..tgz.len() / 2]);
        check_truncated(&read_all(&path, &ReadLimits::default()), &data);

        let tar = tar_bytes(&entries);
        let path = write(&dir, "cut.tar", &tar[..tar.len() / 2 + 100]);
        check_truncated(&read_all(&path, &ReadLimits::default()), &data);

        // No central directory left: the local headers are read as far as they go.
        let zip = zip_bytes(&entries);
        let path = write(&dir, "cut.zip", &zip[..zip.len() / 2]);
        check_truncated(&read_all(&path, &ReadLimits::default()), &data);
    }

    #[test]
    fn corrupt_tar_header_stops_with_corrupt_archive() {
        let dir = tempfile::tempdir().unwrap();
        let mut tar = tar_bytes(&[
            E::File("a.jpg", b"first"),
            E::File("b.jpg", b"second"),
            E::File("c.jpg", b"third"),
        ]);
        tar[1024 + 3] ^= 0x55; // second header's name: checksum no longer matches
        let path = write(&dir, "bad.tar", &tar);
        let results = read_all(&path, &ReadLimits::default());
        assert_eq!(
            summary(&results),
            ["ok:bad.tar!a.jpg", "corrupt_archive:bad.tar"]
        );
    }

    #[test]
    fn corrupt_zip_entry_is_reported_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut z = ZipWriter::new(io::Cursor::new(Vec::new()));
        let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        z.start_file("a.jpg", stored).unwrap();
        z.write_all(b"AAAAAAAAAAAAAAAA").unwrap();
        z.start_file("b.jpg", stored).unwrap();
        z.write_all(b"BBBB").unwrap();
        let mut zip = z.finish().unwrap().into_inner();
        let at = zip.windows(4).position(|w| w == b"AAAA").unwrap();
        zip[at] = b'Z'; // CRC mismatch
        let path = write(&dir, "crc.zip", &zip);
        let results = read_all(&path, &ReadLimits::default());
        assert_eq!(
            summary(&results),
            ["corrupt_archive:crc.zip!a.jpg", "ok:crc.zip!b.jpg"]
        );
    }

    #[test]
    fn non_archives_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, Vec<u8>); 5] = [
            ("garbage.tar.gz", noise(4096, 99)),
            ("empty.zip", Vec::new()),
            ("short.tar", b"ustar".to_vec()),
            (
                "text.gz",
                gzip(&b"hello world, not a tar archive\n".repeat(100)),
            ),
            (
                "photo.jpg",
                [&[0xff, 0xd8, 0xff, 0xe0][..], &noise(1000, 7)].concat(),
            ),
        ];
        for (name, bytes) in cases {
            let path = write(&dir, name, &bytes);
            assert!(
                read_archive(&path, &ReadLimits::default()).is_err(),
                "{name}"
            );
            assert!(!is_archive(&path) || name == "text.gz", "{name}");
        }
        assert!(read_archive(&dir.path().join("missing.zip"), &ReadLimits::default()).is_err());
        assert!(!is_archive(&dir.path().join("missing.zip")));
    }

    /// Random byte flips and truncations of valid archives: never a panic, always an end.
    #[test]
    fn mutated_archives_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<Vec<u8>> = (0..3).map(|i| noise(700, 40 + i)).collect();
        let long = format!("d/{}.jpg", "n".repeat(120));
        let entries = [
            E::Dir("d/"),
            E::File("d/a.jpg", &data[0]),
            E::File(&long, &data[1]),
            E::Pax("p/x.jpg", "x.jpg", &data[2]),
            E::Symlink("s.jpg", "d/a.jpg"),
        ];
        let zip_entries = [
            E::Dir("d/"),
            E::File("d/a.jpg", &data[0]),
            E::File(&long, &data[1]),
        ];
        let tar = tar_bytes(&entries);
        let bases = [gzip(&tar), tar, zip_bytes(&zip_entries)];
        let limits = ReadLimits {
            max_item_bytes: 1 << 20,
            max_total_bytes: 8 << 20,
            ..Default::default()
        };
        let mut rng = 0x1234_5678_9abc_def1_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let path = dir.path().join("m.bin");
        for base in &bases {
            for round in 0..300 {
                let mut bytes = base.clone();
                if round % 4 == 0 {
                    bytes.truncate((next() as usize) % bytes.len());
                } else {
                    for _ in 0..1 + next() % 4 {
                        let at = (next() as usize) % bytes.len();
                        bytes[at] = next() as u8;
                    }
                }
                std::fs::write(&path, &bytes).unwrap();
                let Ok(iter) = read_archive(&path, &limits) else {
                    continue;
                };
                for r in iter.take(100) {
                    if let Err(e) = r {
                        assert!(!e.message.contains("panicked"), "{e:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn lfw_images_round_trip_through_tar_gz() {
        let root = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/lfw/lfw-deepfunneled"
        ));
        if !root.is_dir() {
            eprintln!("skipping: {} not found", root.display());
            return;
        }
        let mut originals: Vec<(String, Vec<u8>)> = Vec::new();
        let mut people: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        people.sort();
        for person in people.iter().filter(|p| p.is_dir()) {
            let mut files: Vec<_> = std::fs::read_dir(person)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            files.sort();
            if files.len() < 3 {
                continue;
            }
            for file in files.iter().take(4) {
                let rel = file
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                originals.push((format!("lfw/{rel}"), std::fs::read(file).unwrap()));
            }
            if originals.len() >= 10 {
                break;
            }
        }
        assert!(originals.len() >= 10);

        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
        for (name, bytes) in &originals {
            let mut h = Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(bytes.len() as u64);
            b.append_data(&mut h, name, bytes.as_slice()).unwrap();
        }
        let tgz = b.into_inner().unwrap().finish().unwrap();
        let path = write(&dir, "lfw.tar.gz", &tgz);
        let results = read_all(&path, &ReadLimits::default());
        assert_eq!(results.len(), originals.len());
        for (r, (name, bytes)) in results.iter().zip(&originals) {
            let item = r.as_ref().unwrap();
            assert_eq!(item.location, format!("lfw.tar.gz!{name}"));
            assert_eq!(&item.bytes, bytes, "{name}");
            assert!(image::load_from_memory(&item.bytes).is_ok(), "{name}");
        }
    }
}
