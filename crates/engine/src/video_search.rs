//! Probe search by video: the clip's faces are tracked (`video::analyze_video`), and each
//! track (one appearance of one person) is searched with its best usable faces, with the
//! same collections, threshold, calibration and opt-out suppression as a photo search.

use std::fmt;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use visage_gallery::Hit;
use visage_vision::FacePipeline;

use crate::search::{CalibrationInfo, SearchOptions, Searcher};
use crate::sources::ItemError;
use crate::video::{self, FrameOptions, VideoOptions};

/// Longest probe video accepted by default, seconds. A probe is a clip of the person, not a
/// recording to trawl: 2 minutes at 2 frames per second is 240 frames to analyse.
pub const PROBE_VIDEO_MAX_S: f32 = 120.0;
/// Largest frame of a probe video, pixels (4096 x 4096; 4K UHD is 8.3 M).
pub const PROBE_VIDEO_MAX_PIXELS: u64 = 4096 * 4096;

/// How a probe video is sampled and searched.
#[derive(Debug, Clone)]
pub struct VideoSearchOptions {
    /// Collections, `k`, `threshold`, `max_fmr`, filter and detection options (`faces` and
    /// `limits` do not apply to videos).
    pub search: SearchOptions,
    /// Frames sampled per second.
    pub fps: f32,
    /// Longer videos are refused (`video_too_long`), by the container's duration when it
    /// states one and in any case by the number of frames decoded.
    pub max_duration_s: f32,
    /// Best usable faces of a track searched with (their matches are merged).
    pub probes_per_track: usize,
    /// Larger frames are refused (`invalid_video`).
    pub max_frame_pixels: u64,
}

impl Default for VideoSearchOptions {
    fn default() -> Self {
        VideoSearchOptions {
            search: SearchOptions::default(),
            fps: 2.0,
            max_duration_s: PROBE_VIDEO_MAX_S,
            probes_per_track: 2,
            max_frame_pixels: PROBE_VIDEO_MAX_PIXELS,
        }
    }
}

/// A probe video that cannot be searched, with a stable code: `invalid_video` (not a video
/// container, or frames too large), `corrupt_video` (nothing decodes), `video_too_long`,
/// `decoder_missing` (ffmpeg is not installed).
#[derive(Debug, Clone)]
pub struct VideoProbeError {
    pub code: &'static str,
    pub message: String,
}

impl VideoProbeError {
    fn new(code: &'static str, message: impl Into<String>) -> VideoProbeError {
        VideoProbeError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for VideoProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for VideoProbeError {}

/// The face that represents a track: its best face (usable faces first, then by quality).
#[derive(Debug, Clone, Serialize)]
pub struct TrackFaceInfo {
    /// Seconds from the start of the video.
    pub t: f32,
    /// In the frame's pixels.
    pub bbox: [f32; 4],
    pub det_score: f32,
    pub quality: visage_core::Quality,
    pub frame_width: u32,
    pub frame_height: u32,
}

/// One appearance of a face in the probe video, with its matches.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeTrack {
    /// 0-based, in order of first appearance.
    pub track_id: usize,
    /// First and last sampled frame the face was seen in, seconds.
    pub first_t: f32,
    pub last_t: f32,
    /// Sampled frames the face was detected in.
    pub frames_seen: usize,
    pub best_face: TrackFaceInfo,
    /// Faces of the track searched with (0 when unusable).
    pub faces_used: usize,
    /// Present when the track could not be searched: the quality reason codes of its best
    /// faces, or `opted_out`.
    pub unusable: Option<Vec<String>>,
    /// Matches, best first (with provenance and, when calibrated, false match rates).
    pub hits: Vec<Hit>,
    /// The same hits grouped by subject and by gallery photo.
    pub groups: crate::search::HitGroups,
    /// JPEG thumbnail of the best face in its frame (not serialised: front ends choose how
    /// to show it).
    #[serde(skip)]
    pub thumbnail_jpeg: Vec<u8>,
}

/// What was read of the video.
#[derive(Debug, Clone, Serialize)]
pub struct VideoInfo {
    /// As the container states it (`ffprobe`), when it does.
    pub duration_s: Option<f64>,
    pub fps: f32,
    pub frames_sampled: u64,
    /// Face detections that joined a track.
    pub faces_detected: u64,
    /// Decoding stopped early (e.g. a truncated file): the result covers the frames before.
    pub decode_error: Option<String>,
}

/// Where a video search's time went, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VideoTimings {
    /// Container check (`ffprobe`).
    pub probe: f64,
    /// Decoding, detection, alignment, quality, embedding and tracking of the sampled frames.
    pub analyze: f64,
    /// Gallery searches of every track.
    pub search: f64,
    pub total: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VideoSearchResult {
    pub pack: String,
    pub collections: Vec<String>,
    pub faces_searched: u64,
    pub calibration: Option<CalibrationInfo>,
    pub threshold: Option<f32>,
    pub warnings: Vec<String>,
    pub video: VideoInfo,
    /// Every track, usable or not, in order of first appearance.
    pub tracks: Vec<ProbeTrack>,
    pub timings_ms: VideoTimings,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn analysis_error(e: ItemError) -> anyhow::Error {
    let code = match e.code.as_str() {
        "decoder_missing" => "decoder_missing",
        "corrupt_video" => "corrupt_video",
        // Before any frame, only a frame size can be over the limits.
        "container_limit" => "invalid_video",
        _ => return anyhow::anyhow!("{}: {}", e.code, e.message),
    };
    VideoProbeError::new(code, e.message).into()
}

/// Searches the gallery with the faces of the video at `path`.
///
/// Errors: [`VideoProbeError`] for a video that cannot be used (not a video container,
/// undecodable, too long, frames too large, ffmpeg missing); the collection and threshold
/// errors of a photo search. A video without any face gives an empty `tracks`.
pub fn search_video(
    gallery: &dyn visage_gallery::FaceStore,
    p: &FacePipeline,
    path: &Path,
    opts: &VideoSearchOptions,
) -> Result<VideoSearchResult> {
    let searcher = Searcher::new(gallery, p, &opts.search)?;
    if !(opts.fps.is_finite() && opts.fps > 0.0 && opts.fps <= 30.0) {
        anyhow::bail!("fps must be in (0, 30], got {}", opts.fps);
    }
    let t_all = Instant::now();
    let mut timings = VideoTimings::default();
    let size = std::fs::metadata(path)?.len();
    if size == 0 {
        return Err(VideoProbeError::new("invalid_video", "the video file is empty").into());
    }
    if !video::is_video(path) {
        return Err(VideoProbeError::new(
            "invalid_video",
            "not a video: expected an MP4/MOV, Matroska/WebM, AVI or MPEG-TS file (photos are \
             searched as photos)",
        )
        .into());
    }
    let t = Instant::now();
    let duration_s = video::probe_duration(path);
    timings.probe = ms(t);
    if let Some(d) = duration_s {
        if d > opts.max_duration_s as f64 {
            return Err(VideoProbeError::new(
                "video_too_long",
                format!(
                    "the video lasts {d:.1} s; probe videos may last at most {} s (cut the \
                     part with the person)",
                    opts.max_duration_s
                ),
            )
            .into());
        }
    }
    // One frame more than the duration allows: a clip of exactly the limit still fits.
    let max_frames = (opts.max_duration_s * opts.fps).ceil() as u64 + 1;
    let mut vopts = VideoOptions {
        fps: opts.fps,
        keep_per_track: opts.probes_per_track.max(1),
        analyze: opts.search.analyze,
        frames: FrameOptions {
            fps: opts.fps,
            max_frames,
            max_pixels: opts.max_frame_pixels,
        },
        ..VideoOptions::default()
    };
    // Every face is embedded so that unusable faces form tracks too and are reported with
    // their reasons; only usable faces are searched with.
    vopts.analyze.embed = true;
    vopts.analyze.embed_all = true;
    let t = Instant::now();
    let a = video::analyze_video(p, path, &vopts).map_err(analysis_error)?;
    timings.analyze = ms(t);
    let mut warnings = searcher.warnings.clone();
    if let Some(e) = &a.decode_error {
        if e.code == "container_limit" && a.frames_sampled >= max_frames {
            return Err(VideoProbeError::new(
                "video_too_long",
                format!(
                    "the video runs past {} s; probe videos may last at most {} s",
                    opts.max_duration_s, opts.max_duration_s
                ),
            )
            .into());
        }
        if e.code == "container_limit" {
            return Err(VideoProbeError::new("invalid_video", e.message.clone()).into());
        }
        warnings.push(format!(
            "decoding stopped after {} frames ({}: {}); the result covers {:.1} s of video",
            a.frames_sampled, e.code, e.message, a.duration_s
        ));
    }
    let t = Instant::now();
    let faces_searched = searcher.faces_searched()?;
    let mut tracks = Vec::with_capacity(a.tracks.len());
    for tr in a.tracks {
        let Some(best) = tr.best.first() else {
            continue;
        };
        let b = &best.face.detection.bbox;
        let mut pt = ProbeTrack {
            track_id: tr.id,
            first_t: tr.first_t,
            last_t: tr.last_t,
            frames_seen: tr.samples,
            best_face: TrackFaceInfo {
                t: best.t,
                bbox: [b.x1, b.y1, b.x2, b.y2],
                det_score: best.face.detection.score,
                quality: best.face.quality.clone(),
                frame_width: best.frame_width,
                frame_height: best.frame_height,
            },
            faces_used: 0,
            unusable: None,
            hits: vec![],
            groups: Default::default(),
            thumbnail_jpeg: best.thumbnail.clone(),
        };
        let probes: Vec<&[f32]> = tr
            .best
            .iter()
            .filter(|f| f.face.quality.passes())
            .filter_map(|f| f.face.embedding.as_ref().map(|e| e.vector.as_slice()))
            .collect();
        if probes.is_empty() {
            let mut reasons: Vec<String> = tr
                .best
                .iter()
                .flat_map(|f| f.face.quality.reasons.iter().map(|r| r.code().to_string()))
                .collect();
            reasons.sort();
            reasons.dedup();
            if reasons.is_empty() {
                reasons.push("not_embedded".into());
            }
            pt.unusable = Some(reasons);
        } else if probes.iter().any(|v| searcher.opted_out(v)) {
            // Someone who opted out is not searched for.
            pt.unusable = Some(vec!["opted_out".into()]);
        } else {
            pt.faces_used = probes.len();
            pt.hits = searcher.search(&probes)?.0;
            pt.groups = crate::search::HitGroups::of(&pt.hits);
        }
        tracks.push(pt);
    }
    timings.search = ms(t);
    timings.total = ms(t_all);
    Ok(VideoSearchResult {
        pack: searcher.pack.clone(),
        collections: searcher.colls.iter().map(|c| c.name.clone()).collect(),
        faces_searched,
        calibration: searcher.cal.map(CalibrationInfo::of),
        threshold: searcher.threshold,
        warnings,
        video: VideoInfo {
            duration_s,
            fps: opts.fps,
            frames_sampled: a.frames_sampled,
            faces_detected: a.faces_tracked,
            decode_error: a
                .decode_error
                .as_ref()
                .map(|e| format!("{}: {}", e.code, e.message)),
        },
        tracks,
        timings_ms: timings,
    })
}
