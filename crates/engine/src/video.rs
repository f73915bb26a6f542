//! Video ingest: sample frames from a video with the `ffmpeg` binary, find faces in each
//! frame, and group the detections of one appearance into a track, keeping only the best few
//! faces of each track.
//!
//! Decoding is delegated to `ffmpeg` (installed by `scripts/setup.sh`), which writes the
//! sampled frames as binary PPM to a pipe; [`FrameReader`] parses them one at a time, so
//! memory stays bounded by one frame, whatever the video length. Tracking keeps per open track
//! its last box, the sum of its embeddings and its best `keep_per_track` faces (with their
//! thumbnails), so memory is bounded by tracks x `keep_per_track`, not by frames.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use image::RgbImage;
use visage_core::{dot, BBox};
use visage_vision::{AnalyzeOptions, Face, FacePipeline};

use crate::encode;
use crate::sources::ItemError;

/// The decoder binary, looked up on `PATH`.
pub const FFMPEG: &str = "ffmpeg";
/// Most stderr bytes of ffmpeg kept for error messages.
const STDERR_KEEP: usize = 4096;
/// Smallest IoU with a track's last box for a face to continue it by position.
const IOU_MIN: f32 = 0.3;

/// How frames are sampled and what the decoder may produce.
#[derive(Debug, Clone, Copy)]
pub struct FrameOptions {
    /// Frames sampled per second of video.
    pub fps: f32,
    /// Most frames sampled from one video (`container_limit` beyond).
    pub max_frames: u64,
    /// Largest frame, pixels (`container_limit` beyond).
    pub max_pixels: u64,
}

impl Default for FrameOptions {
    fn default() -> Self {
        FrameOptions {
            fps: 2.0,
            max_frames: 36_000,
            max_pixels: 40_000_000,
        }
    }
}

/// True when the file starts like a video container: ISO BMFF (MP4, MOV, 3GP: `ftyp` at
/// offset 4), Matroska/WebM (EBML magic), AVI (`RIFF....AVI `) or MPEG-TS (sync byte 0x47 at
/// 0 and 188). Unreadable files are not videos.
pub fn is_video(path: &Path) -> bool {
    let mut head = [0u8; 189];
    let n = match std::fs::File::open(path) {
        Ok(mut f) => read_up_to(&mut f, &mut head),
        Err(_) => return false,
    };
    is_video_bytes(&head[..n])
}

/// [`is_video`] on the first bytes of a file (189 are enough).
pub fn is_video_bytes(b: &[u8]) -> bool {
    let iso = b.len() >= 8 && &b[4..8] == b"ftyp";
    let mkv = b.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]);
    let avi = b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"AVI ";
    let ts = b.len() > 188 && b[0] == 0x47 && b[188] == 0x47;
    iso || mkv || avi || ts
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// Sampled frames of a video, decoded by a child `ffmpeg`, one at a time.
///
/// Yields `Ok((t_seconds, frame))` with `t = index / fps`, then at most one `Err`:
/// `corrupt_video` (ffmpeg failed or wrote garbage; the frames before it were good),
/// `container_limit` (too many or too large frames). The child is killed and reaped on drop.
pub struct FrameReader {
    location: String,
    opts: FrameOptions,
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<JoinHandle<()>>,
    index: u64,
    done: bool,
}

impl FrameReader {
    /// Starts `ffmpeg` on `path`. A missing binary is `decoder_missing`.
    pub fn open(path: &Path, opts: &FrameOptions) -> Result<FrameReader, ItemError> {
        let location = path.display().to_string();
        if !(opts.fps.is_finite() && opts.fps > 0.0) {
            return Err(ItemError::new(
                &location,
                "bad_option",
                "fps must be positive",
            ));
        }
        let mut child = Command::new(FFMPEG)
            .arg("-nostdin")
            .args(["-v", "error", "-i"])
            .arg(path)
            // `eof_action=pass` keeps the tail: a clip shorter than 1/fps still gives a frame.
            .args([
                "-an",
                "-sn",
                "-vf",
                &format!("fps=fps={}:eof_action=pass", opts.fps),
            ])
            .args([
                "-f",
                "image2pipe",
                "-vcodec",
                "ppm",
                "-pix_fmt",
                "rgb24",
                "-",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    ItemError::new(
                        &location,
                        "decoder_missing",
                        "ffmpeg not found on PATH; video ingest needs it: run scripts/setup.sh \
                         (or install ffmpeg)",
                    )
                } else {
                    ItemError::new(
                        &location,
                        "decoder_missing",
                        format!("starting ffmpeg: {e}"),
                    )
                }
            })?;
        let stdout = BufReader::with_capacity(1 << 20, child.stdout.take().expect("piped"));
        // Drain stderr on a thread (an undrained pipe would block ffmpeg), keeping its head.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("piped");
        let keep = Arc::clone(&stderr);
        let stderr_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut k = keep.lock().unwrap_or_else(|e| e.into_inner());
                let room = STDERR_KEEP.saturating_sub(k.len()).min(n);
                k.extend_from_slice(&buf[..room]);
            }
        });
        Ok(FrameReader {
            location,
            opts: *opts,
            child,
            stdout,
            stderr,
            stderr_thread: Some(stderr_thread),
            index: 0,
            done: false,
        })
    }

    /// Frames yielded so far.
    pub fn frames(&self) -> u64 {
        self.index
    }

    fn err(&self, code: &str, message: impl ToString) -> ItemError {
        ItemError::new(&self.location, code, message)
    }

    /// What ffmpeg said on stderr (first lines), for messages.
    fn stderr_text(&mut self) -> String {
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        let k = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&k)
            .trim()
            .lines()
            .take(5)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// At the end of the stream: the child's exit decides between a clean end and an error.
    fn finish(&mut self) -> Option<ItemError> {
        let status = self.child.wait();
        let said = self.stderr_text();
        match status {
            Ok(s) if s.success() && self.index > 0 => None,
            Ok(s) if s.success() => Some(self.err("corrupt_video", "no video frames decoded")),
            Ok(s) => Some(self.err(
                "corrupt_video",
                format!("ffmpeg failed ({s}) after {} frames: {said}", self.index),
            )),
            Err(e) => Some(self.err("corrupt_video", format!("waiting for ffmpeg: {e}"))),
        }
    }

    fn next_frame(&mut self) -> Result<Option<RgbImage>, ItemError> {
        let at_end = match self.stdout.fill_buf() {
            Ok(b) => b.is_empty(),
            Err(e) => return Err(self.err("io_error", format!("reading ffmpeg output: {e}"))),
        };
        if at_end {
            return match self.finish() {
                None => Ok(None),
                Some(e) => Err(e),
            };
        }
        if self.index >= self.opts.max_frames {
            return Err(self.err(
                "container_limit",
                format!("more than {} sampled frames", self.opts.max_frames),
            ));
        }
        let (w, h) = match read_ppm_header(&mut self.stdout) {
            Ok(wh) => wh,
            Err(why) => return Err(self.corrupt(&why)),
        };
        if w == 0 || h == 0 {
            return Err(self.corrupt("empty frame"));
        }
        if w as u64 * h as u64 > self.opts.max_pixels {
            return Err(self.err(
                "container_limit",
                format!("frame {w}x{h} above {} pixels", self.opts.max_pixels),
            ));
        }
        let mut data = vec![0u8; w as usize * h as usize * 3];
        if self.stdout.read_exact(&mut data).is_err() {
            return Err(self.corrupt("frame data cut short"));
        }
        Ok(RgbImage::from_raw(w, h, data))
    }

    /// `corrupt_video` for bad decoder output, with what ffmpeg said if it has failed.
    fn corrupt(&mut self, why: &str) -> ItemError {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let said = self.stderr_text();
        let tail = if said.is_empty() {
            String::new()
        } else {
            format!(": {said}")
        };
        self.err(
            "corrupt_video",
            format!(
                "bad decoder output after {} frames ({why}){tail}",
                self.index
            ),
        )
    }
}

impl Iterator for FrameReader {
    type Item = Result<(f32, RgbImage), ItemError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_frame() {
            Ok(Some(img)) => {
                let t = self.index as f32 / self.opts.fps;
                self.index += 1;
                Some(Ok((t, img)))
            }
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

impl Drop for FrameReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads a binary PPM header `P6 <w> <h> <maxval>` (comments allowed) up to and including the
/// single whitespace byte before the pixels. Only `maxval` 255 is accepted.
fn read_ppm_header(r: &mut impl BufRead) -> Result<(u32, u32), String> {
    let mut magic = [0u8; 2];
    r.read_exact(&mut magic)
        .map_err(|_| "cut short".to_string())?;
    if &magic != b"P6" {
        return Err("not a PPM frame".into());
    }
    let mut fields = [0u32; 3];
    for f in &mut fields {
        *f = read_ppm_number(r)?;
    }
    if fields[2] != 255 {
        return Err(format!("unsupported PPM maxval {}", fields[2]));
    }
    Ok((fields[0], fields[1]))
}

/// Skips whitespace and comments, then reads a decimal number and the one byte after it.
fn read_ppm_number(r: &mut impl BufRead) -> Result<u32, String> {
    let mut byte = || -> Result<u8, String> {
        let mut b = [0u8; 1];
        r.read_exact(&mut b)
            .map_err(|_| "header cut short".to_string())?;
        Ok(b[0])
    };
    let mut c = byte()?;
    loop {
        if c == b'#' {
            while c != b'\n' {
                c = byte()?;
            }
        } else if !c.is_ascii_whitespace() {
            break;
        }
        c = byte()?;
    }
    let mut n: u32 = 0;
    let mut digits = 0;
    while c.is_ascii_digit() {
        digits += 1;
        if digits > 9 {
            return Err("PPM header number too long".into());
        }
        n = n * 10 + (c - b'0') as u32;
        c = byte()?;
    }
    if digits == 0 || !c.is_ascii_whitespace() {
        return Err("bad PPM header".into());
    }
    Ok(n)
}

/// How a video is sampled and its faces tracked.
#[derive(Debug, Clone, Copy)]
pub struct VideoOptions {
    /// Frames sampled per second.
    pub fps: f32,
    /// Best faces (by quality score) kept per track.
    pub keep_per_track: usize,
    /// A track not seen for longer than this (seconds) is closed.
    pub max_gap_s: f32,
    /// Cosine similarity to a track's mean embedding at or above which a face joins it
    /// wherever it is in the frame; `None`: the pack's verify threshold.
    pub match_threshold: Option<f32>,
    pub analyze: AnalyzeOptions,
    /// Decoder limits (its `fps` is ignored: `fps` above applies).
    pub frames: FrameOptions,
}

impl Default for VideoOptions {
    fn default() -> Self {
        VideoOptions {
            fps: 2.0,
            keep_per_track: 2,
            max_gap_s: 2.0,
            match_threshold: None,
            analyze: AnalyzeOptions::default(),
            frames: FrameOptions::default(),
        }
    }
}

/// One of the best faces of a track, with what is needed to store it without the frame.
#[derive(Debug, Clone)]
pub struct TrackFace {
    /// Seconds from the start of the video (`frame index / fps`).
    pub t: f32,
    pub frame_width: u32,
    pub frame_height: u32,
    /// Has an embedding (only embedded faces join tracks).
    pub face: Face,
    /// JPEG thumbnail of the face in its frame (`encode::thumbnail`).
    pub thumbnail: Vec<u8>,
}

/// One appearance of a face: consecutive detections that overlap or look alike.
#[derive(Debug, Clone)]
pub struct Track {
    /// 0-based, in order of first appearance.
    pub id: usize,
    pub first_t: f32,
    pub last_t: f32,
    /// Detections that joined the track.
    pub samples: usize,
    /// Best faces: usable first, then by quality score (highest first; ties: earliest), at
    /// most `keep_per_track`.
    pub best: Vec<TrackFace>,
}

/// The result of [`analyze_video`].
#[derive(Debug, Clone)]
pub struct VideoAnalysis {
    pub frames_sampled: u64,
    /// Span covered by the sampled frames: `frames_sampled / fps`, seconds.
    pub duration_s: f32,
    /// All tracks, ordered by `id`.
    pub tracks: Vec<Track>,
    /// Detections that joined a track (embedded faces).
    pub faces_tracked: u64,
    /// Faces without embedding, per quality reason code (`not_embedded` when none).
    pub faces_rejected: BTreeMap<String, u64>,
    /// Decoding stopped early (`corrupt_video`, `container_limit`) after some frames: the
    /// analysis covers the frames before it.
    pub decode_error: Option<ItemError>,
}

struct OpenTrack {
    track: Track,
    last_bbox: BBox,
    /// Sum of the member embeddings (direction = mean embedding).
    emb_sum: Vec<f32>,
}

impl OpenTrack {
    fn cosine(&self, v: &[f32]) -> f32 {
        let n = dot(&self.emb_sum, &self.emb_sum).sqrt();
        if n > 0.0 {
            dot(v, &self.emb_sum) / n
        } else {
            0.0
        }
    }

    /// Adds a face; encodes its thumbnail only if it is among the best.
    fn add(&mut self, t: f32, frame: &RgbImage, face: Face, keep: usize) -> Result<(), String> {
        let tr = &mut self.track;
        tr.last_t = t;
        tr.samples += 1;
        self.last_bbox = face.detection.bbox;
        if let Some(e) = &face.embedding {
            self.emb_sum
                .iter_mut()
                .zip(&e.vector)
                .for_each(|(s, x)| *s += x);
        }
        // `best` is sorted usable faces first (only they can be searched with; every tracked
        // face is usable unless `embed_all`), then by score desc, ties earlier first; a new
        // face goes after its equals.
        let rank = |f: &Face| (f.quality.passes(), f.quality.score);
        let key = rank(&face);
        let pos = tr.best.partition_point(|b| rank(&b.face) >= key);
        if pos >= keep {
            return Ok(());
        }
        let thumbnail =
            encode::thumbnail(frame, &face.detection.bbox).map_err(|e| format!("{e:#}"))?;
        tr.best.insert(
            pos,
            TrackFace {
                t,
                frame_width: frame.width(),
                frame_height: frame.height(),
                face,
                thumbnail,
            },
        );
        tr.best.truncate(keep);
        Ok(())
    }
}

/// Samples `path` at `opts.fps`, analyses every frame with `p` and groups embedded faces into
/// tracks. A face joins an open track if it overlaps the track's last box (IoU >= 0.3) or
/// its embedding is close to the track's mean (cosine >= threshold), greedily by best
/// `cosine + IoU`; otherwise it starts a track. A track unseen for more than `max_gap_s`
/// closes. Errors: `decoder_missing`; `corrupt_video`/`container_limit` before any frame
/// (after some frames they land in `decode_error`); `inference_failed`; `encode_error`.
pub fn analyze_video(
    p: &FacePipeline,
    path: &Path,
    opts: &VideoOptions,
) -> Result<VideoAnalysis, ItemError> {
    let loc = path.display().to_string();
    let frame_opts = FrameOptions {
        fps: opts.fps,
        ..opts.frames
    };
    let threshold = opts.match_threshold.unwrap_or(p.pack.thresholds.verify);
    let keep = opts.keep_per_track.max(1);
    let mut reader = FrameReader::open(path, &frame_opts)?;
    let mut open: Vec<OpenTrack> = Vec::new();
    let mut closed: Vec<Track> = Vec::new();
    let mut out = VideoAnalysis {
        frames_sampled: 0,
        duration_s: 0.0,
        tracks: Vec::new(),
        faces_tracked: 0,
        faces_rejected: BTreeMap::new(),
        decode_error: None,
    };
    for item in reader.by_ref() {
        let (t, frame) = match item {
            Ok(f) => f,
            Err(e) if out.frames_sampled > 0 => {
                out.decode_error = Some(e);
                break;
            }
            Err(e) => return Err(e),
        };
        out.frames_sampled += 1;
        // Close the tracks that have not been seen for too long.
        let (stale, live): (Vec<_>, Vec<_>) = open
            .into_iter()
            .partition(|o| t - o.track.last_t > opts.max_gap_s);
        closed.extend(stale.into_iter().map(|o| o.track));
        open = live;

        let faces = p
            .analyze(&frame, &opts.analyze)
            .map_err(|e| ItemError::new(&loc, e.code(), format!("at t={t:.2}s: {e}")))?;
        let mut embedded: Vec<Face> = Vec::new();
        for f in faces {
            if f.embedding.is_some() {
                embedded.push(f);
                continue;
            }
            let reasons = &f.quality.reasons;
            if reasons.is_empty() {
                *out.faces_rejected.entry("not_embedded".into()).or_default() += 1;
            }
            for r in reasons {
                *out.faces_rejected.entry(r.code().into()).or_default() += 1;
            }
        }
        out.faces_tracked += embedded.len() as u64;

        // Candidate (score, face, track) pairs, best first; assign greedily one to one.
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (i, f) in embedded.iter().enumerate() {
            let v = &f.embedding.as_ref().expect("embedded").vector;
            for (j, o) in open.iter().enumerate() {
                let iou = f.detection.bbox.iou(&o.last_bbox);
                let cos = o.cosine(v);
                if iou >= IOU_MIN || cos >= threshold {
                    pairs.push((cos + iou, i, j));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut face_track: Vec<Option<usize>> = vec![None; embedded.len()];
        let mut track_taken = vec![false; open.len()];
        for (_, i, j) in pairs {
            if face_track[i].is_none() && !track_taken[j] {
                face_track[i] = Some(j);
                track_taken[j] = true;
            }
        }
        let encode_err = |e: String| ItemError::new(&loc, "encode_error", e);
        for (f, j) in embedded.into_iter().zip(face_track) {
            let j = match j {
                Some(j) => j,
                None => {
                    let dim = f.embedding.as_ref().map_or(0, |e| e.vector.len());
                    open.push(OpenTrack {
                        track: Track {
                            id: closed.len() + open.len(),
                            first_t: t,
                            last_t: t,
                            samples: 0,
                            best: Vec::with_capacity(keep),
                        },
                        last_bbox: f.detection.bbox,
                        emb_sum: vec![0.0; dim],
                    });
                    open.len() - 1
                }
            };
            open[j].add(t, &frame, f, keep).map_err(encode_err)?;
        }
    }
    out.duration_s = out.frames_sampled as f32 / opts.fps;
    closed.extend(open.into_iter().map(|o| o.track));
    closed.sort_by_key(|t| t.id);
    out.tracks = closed;
    Ok(out)
}

/// The video's own duration in seconds as its container states it (`ffprobe`), if known.
pub fn probe_duration(path: &Path) -> Option<f64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Whether the `ffmpeg` binary can be started.
pub fn ffmpeg_available() -> bool {
    Command::new(FFMPEG)
        .arg("-version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn e2e_dir() -> PathBuf {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/e2e"
        ))
    }

    /// The first 40% of `src`'s bytes, written beside `tmp`; with `faststart`, of a remuxed
    /// copy with its index first (so the cut file still decodes up to the cut).
    fn truncated(src: &Path, tmp: &Path, faststart: bool) -> PathBuf {
        let name = src.file_name().unwrap().to_string_lossy();
        let mut from = src.to_path_buf();
        if faststart {
            from = tmp.join(format!("fast-{name}"));
            let ok = Command::new(FFMPEG)
                .args(["-nostdin", "-v", "error", "-y", "-i"])
                .arg(src)
                .args(["-c", "copy", "-movflags", "+faststart"])
                .arg(&from)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "remuxing {}", src.display());
        }
        let bytes = std::fs::read(&from).unwrap();
        let cut = tmp.join(format!("cut-{faststart}-{name}"));
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 5]).unwrap();
        cut
    }

    const VIDEOS: &[&str] = &[
        "face_recognition/examples/short_hamilton_clip.mp4",
        "face-api.js/test_media/video.mp4",
        "facenet-pytorch/video.mp4",
    ];

    fn require() -> bool {
        std::env::var("VISAGE_REQUIRE_MODELS").is_ok_and(|v| v == "1")
    }

    /// ffmpeg and the shared data, or `None` (skip) with a message; ffmpeg missing fails
    /// under `VISAGE_REQUIRE_MODELS=1`.
    fn setup() -> Option<PathBuf> {
        visage_vision::testing::shared_data()?;
        if !ffmpeg_available() {
            assert!(
                !require(),
                "ffmpeg must be installed (VISAGE_REQUIRE_MODELS=1)"
            );
            eprintln!("skipping: ffmpeg not found; run scripts/setup.sh");
            return None;
        }
        Some(e2e_dir())
    }

    #[test]
    fn sniffs_containers() {
        let mut ts = vec![0u8; 189];
        ts[0] = 0x47;
        ts[188] = 0x47;
        assert!(is_video_bytes(&ts));
        assert!(is_video_bytes(b"\0\0\0\x20ftypisom\0\0\x02\0"));
        assert!(is_video_bytes(&[0x1A, 0x45, 0xDF, 0xA3, 0x01]));
        assert!(is_video_bytes(b"RIFF\x10\0\0\0AVI LIST"));
        assert!(!is_video_bytes(b"RIFF\x10\0\0\0WEBPVP8 "));
        assert!(!is_video_bytes(b"\xFF\xD8\xFF\xE0\0\x10JFIF"));
        assert!(!is_video_bytes(b""));
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("a.mp4");
        std::fs::write(&txt, "not a video at all").unwrap();
        assert!(!is_video(&txt));
        assert!(!is_video(&dir.path().join("missing.mp4")));
        if visage_vision::testing::shared_data().is_some() {
            for v in VIDEOS {
                assert!(is_video(&e2e_dir().join(v)), "{v}");
            }
        }
    }

    #[test]
    fn ppm_headers() {
        let mut r: &[u8] = b"P6\n# comment\n3 2\n255\nxyz";
        assert_eq!(read_ppm_header(&mut r).unwrap(), (3, 2));
        assert_eq!(r, b"xyz");
        for bad in [
            &b"P5\n3 2\n255\n"[..],
            b"P6\n3 2\n65535\n",
            b"P6\n3",
            b"P6 x 2 255 ",
        ] {
            assert!(read_ppm_header(&mut &bad[..]).is_err());
        }
    }

    #[test]
    fn frames_at_rate_and_truncation() {
        let Some(dir) = setup() else { return };
        let video = dir.join("face_recognition/examples/short_hamilton_clip.mp4");
        let dur = probe_duration(&video).expect("ffprobe duration");
        let opts = FrameOptions::default();
        let mut n = 0;
        for item in FrameReader::open(&video, &opts).unwrap() {
            let (t, img) = item.unwrap();
            assert_eq!(t, n as f32 / opts.fps);
            assert_eq!((img.width(), img.height()), (640, 360));
            n += 1;
        }
        eprintln!(
            "{}: {dur:.2}s -> {n} frames at {} fps",
            video.display(),
            opts.fps
        );
        assert!((n as f64 - dur * opts.fps as f64).abs() <= 1.5);

        // A frame cap is a container_limit error after the allowed frames.
        let capped = FrameOptions {
            max_frames: 3,
            ..opts
        };
        let items: Vec<_> = FrameReader::open(&video, &capped).unwrap().collect();
        assert_eq!(items.len(), 4);
        assert_eq!(items[3].as_ref().unwrap_err().code, "container_limit");
        let small = FrameOptions {
            max_pixels: 1000,
            ..opts
        };
        let first = FrameReader::open(&video, &small).unwrap().next().unwrap();
        assert_eq!(first.unwrap_err().code, "container_limit");

        // Dropping a reader mid-stream kills ffmpeg without hanging.
        let mut r = FrameReader::open(&video, &opts).unwrap();
        assert!(r.next().unwrap().is_ok());
        drop(r);

        // Truncated: some frames then corrupt_video, or fewer frames; never a panic.
        let tmp = tempfile::tempdir().unwrap();
        let tmp = tmp.path();
        for (v, fast) in VIDEOS.iter().flat_map(|v| [(v, false), (v, true)]) {
            let cut = truncated(&dir.join(v), tmp, fast);
            let mut frames = 0;
            let mut err = None;
            for item in FrameReader::open(&cut, &opts).unwrap() {
                match item {
                    Ok(_) => frames += 1,
                    Err(e) => err = Some(e),
                }
            }
            let code = err.as_ref().map(|e| e.code.as_str());
            eprintln!("truncated {v} (faststart {fast}): {frames} frames, then {code:?}");
            if let Some(c) = code {
                assert_eq!(c, "corrupt_video", "{err:?}");
            }
            if !fast {
                // The index (moov) is at the end: nothing decodes.
                assert_eq!((frames, code), (0, Some("corrupt_video")));
            }
        }

        // Garbage is corrupt_video with no frames.
        let junk = tmp.join("junk.mp4");
        std::fs::write(&junk, b"\0\0\0\x20ftypisom garbage garbage garbage").unwrap();
        let items: Vec<_> = FrameReader::open(&junk, &opts).unwrap().collect();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().unwrap_err().code, "corrupt_video");
    }

    #[test]
    fn tracks_real_videos() {
        let Some(dir) = setup() else { return };
        let Some(p) = visage_vision::testing::pipeline("open") else {
            return;
        };
        let opts = VideoOptions {
            fps: 2.0,
            ..VideoOptions::default()
        };
        let tmp = tempfile::tempdir().unwrap();
        for v in VIDEOS {
            let path = dir.join(v);
            let a = analyze_video(&p, &path, &opts).unwrap();
            let dur = probe_duration(&path).unwrap();
            let per_track: Vec<usize> = a.tracks.iter().map(|t| t.samples).collect();
            eprintln!(
                "{v}: {dur:.2}s, {} frames sampled, {} embedded detections -> {} tracks \
                 (samples per track {per_track:?}), rejected {:?}",
                a.frames_sampled,
                a.faces_tracked,
                a.tracks.len(),
                a.faces_rejected
            );
            assert!(a.decode_error.is_none(), "{:?}", a.decode_error);
            assert!((a.frames_sampled as f64 - dur * opts.fps as f64).abs() <= 1.5);
            if v.starts_with("face-api.js") {
                // Its faces are all under the pack's `min_face_px`: detected, gated, untracked;
                // embedding them anyway must give tracks.
                assert!(a.tracks.is_empty() && a.faces_rejected.get("too_small") >= Some(&1));
                let mut all = opts;
                all.analyze.embed_all = true;
                let b = analyze_video(&p, &path, &all).unwrap();
                eprintln!(
                    "  with embed_all: {} detections -> {} tracks",
                    b.faces_tracked,
                    b.tracks.len()
                );
                assert!(!b.tracks.is_empty());
            } else {
                assert!(!a.tracks.is_empty(), "{v}: no track");
            }
            let mut samples = 0;
            for t in &a.tracks {
                assert!(!t.best.is_empty() && t.best.len() <= opts.keep_per_track);
                assert!(t.first_t <= t.last_t);
                assert!(t.best.windows(2).all(|w| {
                    let (x, y) = (w[0].face.quality.score, w[1].face.quality.score);
                    x > y || (x == y && w[0].t <= w[1].t)
                }));
                for b in &t.best {
                    assert!(b.face.embedding.is_some() && b.thumbnail.starts_with(&[0xFF, 0xD8]));
                    assert!(b.t >= t.first_t && b.t <= t.last_t);
                }
                samples += t.samples as u64;
            }
            assert_eq!(samples, a.faces_tracked);
            // One appearance, one track: far fewer tracks than detections in longer clips.
            if a.faces_tracked >= 8 {
                assert!(
                    a.tracks.len() as u64 * 3 <= a.faces_tracked,
                    "{v}: too many tracks"
                );
            }

            // Decoding stopped after some frames: the analysis of those, with the error.
            let mut capped = opts;
            capped.frames.max_frames = 2;
            let c = analyze_video(&p, &path, &capped).unwrap();
            if a.frames_sampled > 2 {
                assert_eq!(c.frames_sampled, 2);
                assert_eq!(c.decode_error.unwrap().code, "container_limit");
            }

            // A truncated copy (index first): a shorter analysis or corrupt_video; no panic.
            let cut = truncated(&path, tmp.path(), true);
            match analyze_video(&p, &cut, &opts) {
                Ok(c) => {
                    eprintln!(
                        "  truncated: {} frames, {} tracks, decode_error {:?}",
                        c.frames_sampled,
                        c.tracks.len(),
                        c.decode_error.as_ref().map(|e| &e.code)
                    );
                    assert!(c.frames_sampled <= a.frames_sampled);
                }
                Err(e) => {
                    eprintln!("  truncated: {} {}", e.code, e.message);
                    assert_eq!(e.code, "corrupt_video");
                }
            }
        }
    }
}
