//! Gallery commands: ingest, search, faces, stats, check.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use visage_engine::search::FaceChoice;
use visage_engine::{IngestOptions, SearchOptions};
use visage_gallery::{Access, CheckOptions, DeleteTarget, Filter, Gallery, NewSource};
use visage_vision::{FacePipeline, Home, InferenceOptions};

use crate::PackArg;

#[derive(Args)]
pub struct IngestArgs {
    /// Image files, folders (recursive; links are not followed), tar/tar.gz/zip archives,
    /// WARC/WARC.gz web archives, JSONL/CSV manifests.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Collection to fill (created on first use, pinned to the pack).
    #[arg(long)]
    pub collection: String,
    /// Name of the source (default: the first path's folder name).
    #[arg(long)]
    pub source_name: Option<String>,
    /// Declared legal basis for holding these images.
    #[arg(long)]
    pub legal_basis: Option<String>,
    #[arg(long)]
    pub licence: Option<String>,
    /// Jurisdiction of the source (ISO 3166-1 alpha-2 or ISO 3166-2, e.g. FR, US-IL).
    #[arg(long)]
    pub jurisdiction: Option<String>,
    /// Label faces with the name of the folder holding each photo.
    #[arg(long)]
    pub subject_from_parent: bool,
    /// Keep a copy of each original photo in the data directory.
    #[arg(long)]
    pub keep_originals: bool,
    /// Frames per second sampled from videos (faces are tracked across frames; each
    /// appearance keeps its best two faces).
    #[arg(long, default_value_t = 2.0)]
    pub video_fps: f32,
    /// Images analysed per atomic write (smaller: less work lost on a crash; larger: fewer
    /// fsyncs).
    #[arg(long, default_value_t = 32)]
    pub chunk: usize,
    #[command(flatten)]
    pub pack: PackArg,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write every failed item and every rejected face as one JSON line to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Policy file whose `[data] excluded_jurisdictions` refuses items (default:
    /// `<data-dir>/policy.toml` when present, else the built-in policy/default.toml).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Download manifest rows that give a url but no path: exactly the url written in the
    /// row (http or https, one at a time), never a link found in what it returns. Without
    /// this flag such rows are reported as `url_fetch_disabled`.
    #[arg(long)]
    pub fetch_urls: bool,
    /// Time limit of one download, seconds (with --fetch-urls).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub fetch_timeout: u64,
}

/// The policy in force: `explicit`, else `<data-dir>/policy.toml`, else the built-in default
/// (the same rule `visage serve` follows).
pub fn load_policy(dir: &Path, explicit: Option<&Path>) -> Result<visage_governance::Policy> {
    match visage_governance::policy_file(dir, explicit) {
        Some(p) => Ok(visage_governance::Policy::load(&p)?),
        None => Ok(visage_governance::Policy::default_policy()),
    }
}

#[derive(Args)]
pub struct SearchArgs {
    /// Probe photo, or probe video (MP4/MOV, Matroska/WebM, AVI, MPEG-TS; recognised by its
    /// first bytes or its extension): each face track of the video is searched.
    pub probe: PathBuf,
    /// Matches per probe face.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Only matches at or above this cosine similarity.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Only matches whose estimated false match rate is at most this, e.g. 1e-4 (needs a
    /// calibrated pack: `visage models calibrate`).
    #[arg(long)]
    pub max_fmr: Option<f64>,
    /// Smallest probe face to look for, in pixels (smaller is slower on large photos).
    #[arg(long, default_value_t = visage_engine::search::PROBE_MIN_FACE_PX)]
    pub min_face: f32,
    /// Collections to search (default: all that use the pack).
    #[arg(long = "collection")]
    pub collections: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Which probe faces to search with: `main` (the main face: among the largest, the
    /// nearest the centre), `all`, or a face index as listed under "faces detected" (left to
    /// right). Photos only.
    #[arg(long = "face", value_name = "N|all|main", default_value = "main",
          value_parser = parse_face_choice)]
    pub face: FaceChoice,
    /// Same as `--face all`.
    #[arg(long, conflicts_with = "face")]
    pub all_faces: bool,
    /// Frames per second sampled from a probe video.
    #[arg(long, default_value_t = 2.0)]
    pub video_fps: f32,
    /// Longest probe video accepted, seconds.
    #[arg(long, default_value_t = visage_engine::video_search::PROBE_VIDEO_MAX_S)]
    pub max_duration: f32,
    #[command(flatten)]
    pub pack: PackArg,
    #[arg(long)]
    pub json: bool,
}

fn parse_face_choice(s: &str) -> Result<FaceChoice, String> {
    s.parse()
}

/// Extensions of the video containers `visage search` sends to the video search even when
/// the first bytes are not recognised (it then reports `invalid_video` rather than an image
/// decoder error).
const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "m4v", "mov", "3gp", "mkv", "webm", "avi", "ts", "mts", "m2ts",
];

fn is_probe_video(path: &Path) -> bool {
    visage_engine::video::is_video(path)
        || path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

#[derive(Args, Default)]
pub struct FilterArgs {
    /// Only faces from this jurisdiction or inside it (repeatable; US matches US-IL).
    #[arg(long = "jurisdiction")]
    pub jurisdictions: Vec<String>,
    /// Never faces from this jurisdiction or inside it (repeatable).
    #[arg(long = "exclude-jurisdiction")]
    pub exclude_jurisdictions: Vec<String>,
    /// Only faces from this source id (repeatable).
    #[arg(long = "source")]
    pub sources: Vec<i64>,
    /// Capture time range, unix seconds.
    #[arg(long)]
    pub captured_from: Option<i64>,
    #[arg(long)]
    pub captured_to: Option<i64>,
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        Filter {
            sources: self.sources.clone(),
            jurisdictions: self.jurisdictions.clone(),
            exclude_jurisdictions: self.exclude_jurisdictions.clone(),
            subjects: vec![],
            captured_from: self.captured_from,
            captured_to: self.captured_to,
        }
    }
}

#[derive(Subcommand)]
pub enum FacesCmd {
    /// List faces with their provenance.
    List {
        #[arg(long)]
        collection: Option<String>,
        /// Only faces of this subject label (needs --collection).
        #[arg(long)]
        subject: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Start after this face id.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show one face; optionally write its crop and thumbnail.
    Show {
        id: i64,
        #[arg(long, value_name = "FILE")]
        crop: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        thumb: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Delete faces for real (rows, vectors, crops, thumbnails). Bulk targets need --yes.
    Delete {
        /// Face ids.
        ids: Vec<i64>,
        /// Every face of the image with this id.
        #[arg(long)]
        image: Option<i64>,
        /// Every face of this subject label (needs --collection).
        #[arg(long)]
        subject: Option<String>,
        /// Every image and face of this source name, and the source (needs --collection).
        #[arg(long)]
        source: Option<String>,
        /// Every image and face in this jurisdiction or inside it, in every collection.
        #[arg(long)]
        jurisdiction: Option<String>,
        #[arg(long)]
        collection: Option<String>,
        /// Confirm a bulk deletion.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
        /// Write a signed erasure receipt here (needs `visage admin init` in the data directory).
        #[arg(long, value_name = "FILE")]
        receipt: Option<PathBuf>,
    },
}

fn open(dir: &Path, access: Access) -> Result<Gallery> {
    Gallery::open(dir, access).with_context(|| format!("opening gallery {}", dir.display()))
}

pub fn ingest(home: &Home, inf: &InferenceOptions, dir: &Path, a: IngestArgs) -> Result<ExitCode> {
    let gallery = open(dir, Access::ReadWrite)?;
    let pool = crate::throughput_pool(home, inf, &a.pack.pack)?;
    let name = a.source_name.clone().unwrap_or_else(|| {
        let p = std::fs::canonicalize(&a.paths[0]).unwrap_or_else(|_| a.paths[0].clone());
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "files".into())
    });
    let kind = if a.paths.iter().all(|p| p.is_dir()) {
        "directory"
    } else {
        "files"
    };
    let source = NewSource {
        name,
        kind: kind.into(),
        uri: Some(
            a.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        legal_basis: a.legal_basis.clone(),
        licence: a.licence.clone(),
        jurisdiction: a.jurisdiction.clone(),
    };
    let policy = load_policy(dir, a.policy.as_deref())?;
    let mut opts = IngestOptions::new(&a.collection, source);
    opts.excluded_jurisdictions = policy
        .data
        .excluded_jurisdictions
        .iter()
        .map(|j| j.0.clone())
        .collect();
    opts.subject_from_parent = a.subject_from_parent;
    opts.keep_originals = a.keep_originals;
    opts.chunk = a.chunk.max(1);
    opts.report = a.report.clone();
    if !(a.video_fps > 0.0 && a.video_fps <= 60.0) {
        bail!("--video-fps must be in (0, 60]");
    }
    opts.video_fps = a.video_fps;
    if a.fetch_urls {
        if a.fetch_timeout == 0 {
            bail!("--fetch-timeout must be at least 1 second");
        }
        opts.fetch_urls = Some(visage_engine::sources::manifest::UrlFetch {
            timeout: std::time::Duration::from_secs(a.fetch_timeout),
            ..Default::default()
        });
    }
    // Ctrl-C: stop taking new items, finish and save what is in flight, exit 130.
    static STOP: AtomicBool = AtomicBool::new(false);
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: finishing the images in flight (Ctrl-C again to abort)");
    });
    let bar = if std::io::stderr().is_terminal() && !a.json {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} images, {msg} ({per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let last = std::sync::Mutex::new(std::time::Instant::now());
    let t0 = std::time::Instant::now();
    let report = visage_engine::ingest_paths(&gallery, &pool, &a.paths, &opts, &STOP, &|p| {
        if let Some(b) = &bar {
            if let Some(t) = p.total {
                b.set_length(t);
            }
            b.set_position(p.done);
            b.set_message(format!("{} faces", p.faces));
            return;
        }
        let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
        if l.elapsed().as_secs_f64() >= 5.0 {
            *l = std::time::Instant::now();
            let rate = p.done as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            let of = p.total.map(|t| format!("/{t}")).unwrap_or_default();
            let eta = p
                .total
                .map(|t| {
                    format!(
                        ", ETA {:.0} s",
                        t.saturating_sub(p.done) as f64 / rate.max(1e-9)
                    )
                })
                .unwrap_or_default();
            eprintln!(
                "ingest: {}{of} images, {} faces, {rate:.1} images/s{eta}",
                p.done, p.faces
            );
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for x in report.failures.iter().take(20) {
            eprintln!("{}: {} [{}]", x.location, x.message, x.code);
        }
        if report.counts.errors > 20 {
            eprintln!(
                "... {} more failures{}",
                report.counts.errors - 20,
                if opts.report.is_some() {
                    " (all in the report)"
                } else {
                    " (use --report FILE)"
                }
            );
        }
        let c = &report.counts;
        let rejected: u64 = c.faces_rejected.values().sum();
        println!(
            "job {} {}: {} items seen ({} videos): {} images indexed, {} already in the collection, {} failed; \
             {} faces indexed, {rejected} rejected {:?}; {:.1} s ({:.1} images/s, {:.1} faces/s{})",
            report.job_id,
            report.status,
            c.images_seen,
            c.videos,
            c.images_indexed,
            c.images_skipped_known,
            c.errors,
            c.faces_indexed,
            c.faces_rejected,
            report.elapsed_s,
            report.images_per_s,
            report.faces_per_s,
            report
                .cpu_percent
                .map(|p| format!(", CPU {p:.0}%"))
                .unwrap_or_default()
        );
    }
    Ok(if report.status == "interrupted" {
        ExitCode::from(130)
    } else if report.counts.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

pub fn jobs(dir: &Path, limit: usize, json: bool) -> Result<ExitCode> {
    let g = open(dir, Access::ReadOnly)?;
    let jobs = g.jobs(limit)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(ExitCode::SUCCESS);
    }
    for j in &jobs {
        let c = &j.counts;
        println!(
            "{}\t{}\t{}\t{}\t{} seen, {} indexed, {} faces, {} errors\t{}",
            j.id,
            j.kind,
            j.status,
            j.collection.as_deref().unwrap_or("-"),
            c["images_seen"],
            c["images_indexed"],
            c["faces_indexed"],
            c["errors"],
            j.args["inputs"]
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn search(home: &Home, inf: &InferenceOptions, dir: &Path, a: SearchArgs) -> Result<ExitCode> {
    let gallery = open(dir, Access::ReadOnly)?;
    let p = FacePipeline::load(home, &a.pack.pack, inf)?;
    let faces = if a.all_faces { FaceChoice::All } else { a.face };
    let mut opts = SearchOptions {
        collections: a.collections.clone(),
        k: a.k,
        threshold: a.threshold,
        max_fmr: a.max_fmr,
        filter: a.filter.filter(),
        faces,
        ..Default::default()
    };
    opts.analyze.detect.min_face_px = a.min_face;
    if is_probe_video(&a.probe) {
        if faces != FaceChoice::Main {
            bail!("--face applies to photos; a video is searched track by track");
        }
        return search_video(&gallery, &p, &a, opts);
    }
    let bytes =
        std::fs::read(&a.probe).with_context(|| format!("reading {}", a.probe.display()))?;
    let r = visage_engine::search_image(&gallery, &p, &bytes, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "pack {}; {} faces searched in {}",
        r.pack,
        r.faces_searched,
        r.collections.join(", ")
    );
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    if r.detected_faces.is_empty() {
        println!("no face found in the probe");
    } else {
        println!(
            "{} face(s) detected (choose one with --face N):",
            r.detected_faces.len()
        );
        for f in &r.detected_faces {
            let b = f.bbox;
            println!(
                "  #{} [{:.0},{:.0} {:.0}x{:.0}] quality {:.2}{}{}",
                f.index,
                b[0],
                b[1],
                b[2] - b[0],
                b[3] - b[1],
                f.quality.score,
                if f.usable { "" } else { " (unusable)" },
                if f.searched { "  <- searched" } else { "" }
            );
        }
    }
    for f in &r.probe_faces {
        let b = f.bbox;
        print!(
            "probe face #{} [{:.0},{:.0} {:.0}x{:.0}]",
            f.index,
            b[0],
            b[1],
            b[2] - b[0],
            b[3] - b[1]
        );
        if let Some(why) = &f.unusable {
            println!(": unusable ({})", why.join(", "));
            continue;
        }
        println!(": {} match(es)", f.hits.len());
        print_hits(&f.hits);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_hits(hits: &[visage_gallery::Hit]) {
    for h in hits {
        let subject = h
            .face
            .subject
            .as_ref()
            .map(|s| s.label.as_str())
            .unwrap_or("-");
        let fmr = match (h.fmr, h.expected_false_matches) {
            (Some(f), Some(e)) => format!("  FMR {f:.1e} (~{e:.2} false at this size)"),
            _ => String::new(),
        };
        println!(
            "  {:.4}{fmr}  face {}  subject {}  {}  source {} ({})  {}",
            h.score,
            h.face.id,
            subject,
            h.face.image.uri.as_deref().unwrap_or("-"),
            h.face.source.name,
            h.face
                .source
                .legal_basis
                .as_deref()
                .unwrap_or("no legal basis recorded"),
            h.face.image.jurisdiction.as_deref().unwrap_or("")
        );
    }
}

/// `visage search VIDEO`: every face track of the clip with its matches.
fn search_video(
    gallery: &Gallery,
    p: &FacePipeline,
    a: &SearchArgs,
    search: SearchOptions,
) -> Result<ExitCode> {
    use visage_engine::video_search::{VideoProbeError, VideoSearchOptions};
    let opts = VideoSearchOptions {
        search,
        fps: a.video_fps,
        max_duration_s: a.max_duration,
        ..Default::default()
    };
    let r = match visage_engine::video_search::search_video(gallery, p, &a.probe, &opts) {
        Ok(r) => r,
        Err(e) => match e.downcast_ref::<VideoProbeError>() {
            Some(v) => bail!("{}: {}: {}", a.probe.display(), v.code, v.message),
            None => return Err(e),
        },
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "pack {}; {} faces searched in {}",
        r.pack,
        r.faces_searched,
        r.collections.join(", ")
    );
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    let v = &r.video;
    println!(
        "video: {} frames sampled at {} fps{}; {} face track(s) in {:.0} ms",
        v.frames_sampled,
        v.fps,
        v.duration_s
            .map(|d| format!(" ({d:.1} s)"))
            .unwrap_or_default(),
        r.tracks.len(),
        r.timings_ms.total
    );
    if r.tracks.is_empty() {
        println!("no face found in the video");
    }
    for t in &r.tracks {
        let b = t.best_face.bbox;
        print!(
            "track #{} {:.1}-{:.1} s, {} frame(s), best face at {:.1} s [{:.0},{:.0} {:.0}x{:.0}]",
            t.track_id,
            t.first_t,
            t.last_t,
            t.frames_seen,
            t.best_face.t,
            b[0],
            b[1],
            b[2] - b[0],
            b[3] - b[1]
        );
        if let Some(why) = &t.unusable {
            println!(": unusable ({})", why.join(", "));
            continue;
        }
        println!(": {} match(es)", t.hits.len());
        print_hits(&t.hits);
    }
    Ok(ExitCode::SUCCESS)
}

fn collection_id(g: &Gallery, name: Option<&str>, what: &str) -> Result<i64> {
    let Some(name) = name else {
        bail!("{what} needs --collection")
    };
    match g.collection(name)? {
        Some(c) => Ok(c.id),
        None => bail!("no collection named {name:?}"),
    }
}

pub fn faces(dir: &Path, cmd: FacesCmd) -> Result<ExitCode> {
    match cmd {
        FacesCmd::List {
            collection,
            subject,
            filter,
            after,
            limit,
            json,
        } => {
            let g = open(dir, Access::ReadOnly)?;
            let mut f = filter.filter();
            let coll = match &collection {
                Some(_) => Some(collection_id(&g, collection.as_deref(), "")?),
                None => None,
            };
            if let Some(label) = &subject {
                let c = collection_id(&g, collection.as_deref(), "--subject")?;
                match g.subject_by_label(c, label)? {
                    Some(s) => f.subjects.push(s),
                    None => bail!("no subject {label:?} in that collection"),
                }
            }
            let recs = g.list_faces(coll, &f, after, limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&recs)?);
            } else {
                for r in &recs {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        r.id,
                        r.collection,
                        r.subject.as_ref().map(|s| s.label.as_str()).unwrap_or("-"),
                        r.image.jurisdiction.as_deref().unwrap_or("-"),
                        r.image.uri.as_deref().unwrap_or("-")
                    );
                }
                eprintln!("{} face(s)", recs.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        FacesCmd::Show {
            id,
            crop,
            thumb,
            json,
        } => {
            let g = open(dir, Access::ReadOnly)?;
            let Some(r) = g.face(id)? else {
                bail!("no face with id {id}")
            };
            if let Some(p) = crop {
                std::fs::write(&p, g.blob(&r.crop_sha)?)?;
            }
            if let Some(p) = thumb {
                std::fs::write(&p, g.blob(&r.thumb_sha)?)?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let subject = r.subject.as_ref().map(|s| s.label.as_str()).unwrap_or("-");
                println!(
                    "face {} in collection {} (pack {})",
                    r.id, r.collection, r.pack
                );
                println!("  subject: {subject}");
                println!("  box: {:?}, detector score {:.3}", r.bbox, r.det_score);
                println!(
                    "  image: {} ({}x{})",
                    r.image.uri.as_deref().unwrap_or("-"),
                    r.image.width,
                    r.image.height
                );
                println!("  page: {}", r.image.page_uri.as_deref().unwrap_or("-"));
                println!(
                    "  jurisdiction: {} ({})",
                    r.image.jurisdiction.as_deref().unwrap_or("-"),
                    r.image.jurisdiction_method.as_deref().unwrap_or("-")
                );
                println!(
                    "  source: {} ({}), legal basis: {}",
                    r.source.name,
                    r.source.kind,
                    r.image
                        .legal_basis
                        .as_deref()
                        .or(r.source.legal_basis.as_deref())
                        .unwrap_or("not recorded")
                );
                println!("  crop {}, thumbnail {}", r.crop_sha, r.thumb_sha);
            }
            Ok(ExitCode::SUCCESS)
        }
        FacesCmd::Delete {
            ids,
            image,
            subject,
            source,
            jurisdiction,
            collection,
            yes,
            json,
            receipt: receipt_path,
        } => {
            receipt_possible(dir, receipt_path.as_deref())?;
            let g = open(dir, Access::ReadWrite)?;
            let mut targets = Vec::new();
            if !ids.is_empty() {
                targets.push(DeleteTarget::Faces(ids));
            }
            if let Some(i) = image {
                targets.push(DeleteTarget::Image(i));
            }
            let bulk = subject.is_some() || source.is_some() || jurisdiction.is_some();
            if bulk && !yes {
                bail!(
                    "deleting a whole subject, source or jurisdiction is irreversible: add --yes"
                );
            }
            if let Some(label) = &subject {
                let c = collection_id(&g, collection.as_deref(), "--subject")?;
                match g.subject_by_label(c, label)? {
                    Some(s) => targets.push(DeleteTarget::Subject(s)),
                    None => bail!("no subject {label:?} in that collection"),
                }
            }
            if let Some(name) = &source {
                let c = collection_id(&g, collection.as_deref(), "--source")?;
                match g.sources(c)?.into_iter().find(|s| &s.name == name) {
                    Some(s) => targets.push(DeleteTarget::Source(s.id)),
                    None => bail!("no source {name:?} in that collection"),
                }
            }
            if let Some(j) = jurisdiction {
                targets.push(DeleteTarget::Jurisdiction(j));
            }
            if targets.is_empty() {
                bail!("nothing to delete: give face ids, --image, --subject, --source or --jurisdiction");
            }
            let reports = erase_recorded(dir, &g, targets, receipt_path.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                for r in &reports {
                    println!(
                        "deleted {} face(s), {} image(s), {} source(s), {} subject(s); {} file(s) removed",
                        r.faces, r.images, r.sources, r.subjects, r.blobs_removed
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn stats(dir: &Path, json: bool) -> Result<ExitCode> {
    let g = open(dir, Access::ReadOnly)?;
    for c in g.collections()? {
        g.load_index(c.id)?;
    }
    let s = g.stats()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} faces, {} images, {} subjects in {} collection(s); {} deleted face ids on record",
        s.faces,
        s.images,
        s.subjects,
        s.collections.len(),
        s.tombstones
    );
    for c in &s.collections {
        println!(
            "collection {} (pack {}, {}-d): {} faces, {} images",
            c.name, c.pack, c.dim, c.faces, c.images
        );
        for x in &c.sources {
            println!(
                "  source {}: {} images, {} faces",
                x.name, x.images, x.faces
            );
        }
        for x in &c.jurisdictions {
            println!(
                "  jurisdiction {}: {} images, {} faces",
                x.name, x.images, x.faces
            );
        }
    }
    let b = &s.bytes_on_disk;
    println!(
        "disk: {} bytes (metadata {}, blobs {}, index {}); memory: {} bytes",
        b.total, b.metadata, b.blobs, b.index, s.bytes_in_memory
    );
    Ok(ExitCode::SUCCESS)
}

pub fn check(dir: &Path, repair: bool, deep: bool, json: bool) -> Result<ExitCode> {
    let g = open(dir, Access::ReadWrite)?;
    let rep = g.check(CheckOptions { repair, deep })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        let r = &rep.recovery;
        if r.uncommitted_blobs_removed + r.deleted_blobs_unlinked + r.staging_files_removed > 0 {
            println!(
                "recovered after an interruption: {} blob(s) of uncommitted writes removed, {} \
                 blob(s) of committed deletions unlinked, {} staging file(s) removed",
                r.uncommitted_blobs_removed, r.deleted_blobs_unlinked, r.staging_files_removed
            );
        }
        for i in &rep.inconsistencies {
            println!(
                "{}: {}{}",
                i.kind,
                i.detail,
                if i.repaired { " (repaired)" } else { "" }
            );
        }
        println!(
            "{} faces and {} blobs checked: {} inconsistencies, {} left unrepaired",
            rep.faces_checked,
            rep.blobs_checked,
            rep.count(),
            rep.unrepaired()
        );
    }
    Ok(if rep.unrepaired() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

#[derive(Args)]
pub struct OptOutArgs {
    /// The requester's selfie(s).
    #[arg(required = true)]
    pub selfies: Vec<PathBuf>,
    /// The request's identifier (recorded with the suppression list); default: generated.
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub pack: crate::PackArg,
    #[arg(long)]
    pub json: bool,
    /// Write the signed receipt here (needs `visage admin init` in the data directory).
    #[arg(long, value_name = "FILE")]
    pub receipt: Option<PathBuf>,
}

fn read_selfies(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    paths
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect()
}

/// Processes an opt-out request: deletes the requester's faces and suppresses them for good.
pub fn opt_out(home: &Home, inf: &InferenceOptions, dir: &Path, a: OptOutArgs) -> Result<ExitCode> {
    receipt_possible(dir, a.receipt.as_deref())?;
    let gallery = open(dir, Access::ReadWrite)?;
    let p = FacePipeline::load(home, &a.pack.pack, inf)?;
    let selfies = read_selfies(&a.selfies)?;
    let request_id = a.request_id.clone().unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("optout-{}-{}", t.as_secs(), std::process::id())
    });
    let r = if dir.join(visage_governance::DB_FILE).exists() {
        // Recorded: the audit record and the receipt cannot be lost to an interruption
        // (visage_server::opt_outs); earlier interrupted ones are finished first.
        let gov = visage_governance::Governance::open(dir)?;
        for done in visage_server::opt_outs::resume(&gallery, &gov, &p)? {
            eprintln!(
                "finished and recorded opt-out {}, which an earlier interruption left unrecorded",
                done.pending.request_id
            );
        }
        let pending = visage_server::opt_outs::Pending {
            request_id: request_id.clone(),
            pack: p.pack_id(),
            selfies: selfies.len(),
            contact: String::new(),
            by: crate::gov_cmds::cli_actor(),
        };
        let done = visage_server::opt_outs::run(&gallery, &gov, &p, pending, &selfies)?;
        if let (Some(path), Some(rc)) = (a.receipt.as_deref(), &done.receipt) {
            write_receipt(path, rc)?;
        }
        done.outcome
    } else {
        visage_engine::optout::opt_out(&gallery, &p, &request_id, &selfies)?
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "opt-out {}: {} of {} selfie(s) used; {} face(s) deleted ({} image(s), {} labelled subject(s) entirely); {} embedding(s) added to the suppression list",
            r.request_id,
            r.selfies_used,
            r.selfies,
            r.faces_deleted,
            r.images_deleted,
            r.subjects_deleted,
            r.suppressed_embeddings
        );
        for u in &r.unusable_selfies {
            eprintln!("warning: {u}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An access request: what the gallery holds about the person in the selfie(s).
pub fn access(home: &Home, inf: &InferenceOptions, dir: &Path, a: OptOutArgs) -> Result<ExitCode> {
    receipt_possible(dir, a.receipt.as_deref())?;
    let gallery = open(dir, Access::ReadOnly)?;
    let p = FacePipeline::load(home, &a.pack.pack, inf)?;
    let selfies = read_selfies(&a.selfies)?;
    let r = visage_engine::optout::access_report(&gallery, &p, &selfies)?;
    receipt(
        dir,
        "access",
        serde_json::json!({"selfies": r.selfies, "faces": r.faces.len()}),
        a.receipt.as_deref(),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} face(s) held:", r.faces.len());
    for f in &r.faces {
        println!(
            "  face {}  {}  source {} ({})  {}",
            f.id,
            f.image.uri.as_deref().unwrap_or("-"),
            f.source.name,
            f.source
                .legal_basis
                .as_deref()
                .unwrap_or("no legal basis recorded"),
            f.image.jurisdiction.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Deletes `targets`. With governance in the data directory (`visage admin init`), the
/// deletion is announced, done and then recorded in the audit log with a signed erasure
/// receipt (`visage_server::erasure`: never left unrecorded, deletions an earlier
/// interruption left pending are finished first); the receipt is written to `out` if given.
fn erase_recorded(
    dir: &Path,
    g: &Gallery,
    targets: Vec<DeleteTarget>,
    out: Option<&Path>,
) -> Result<Vec<visage_gallery::DeleteReport>> {
    use visage_server::erasure;
    if !dir.join(visage_governance::DB_FILE).exists() {
        return targets.iter().map(|t| g.delete(t)).collect();
    }
    let gov = visage_governance::Governance::open(dir)?;
    let resumed = erasure::resume(g, &gov)?;
    if !resumed.recorded.is_empty() {
        eprintln!(
            "finished and recorded {} deletion(s) an earlier interruption left unrecorded",
            resumed.recorded.len()
        );
    }
    let named: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
    let actor = crate::gov_cmds::cli_actor();
    let done = erasure::run(
        g,
        &gov,
        erasure::Order {
            targets,
            event: visage_governance::AuditEvent::admin(&actor, None, "erase")
                .details(serde_json::json!({"targets": named})),
            report_in_details: false,
            counts_in_details: false,
            receipt: Some(erasure::ReceiptPlan {
                by: actor,
                org_id: None,
                kind: "erasure".into(),
                body: serde_json::json!({"targets": named}),
            }),
        },
    )?;
    if let (Some(p), Some(r)) = (out, &done.receipt) {
        std::fs::write(p, serde_json::to_string_pretty(r)? + "\n")
            .with_context(|| format!("cannot write {}", p.display()))?;
        eprintln!("signed erasure receipt {} written to {}", r.id, p.display());
    }
    Ok(done.per_target)
}

/// Refuses up front a `--receipt` that could not be signed (before anything is changed).
fn receipt_possible(dir: &Path, out: Option<&Path>) -> Result<()> {
    if out.is_some() && !dir.join(visage_governance::DB_FILE).exists() {
        bail!(
            "no governance database in {} to sign a receipt: run `visage admin init` first",
            dir.display()
        );
    }
    Ok(())
}

/// Signs a receipt for a data-subject request or erasure with the installation's audit key,
/// when the data directory has governance (`visage admin init`); writes it to `out` if given.
fn receipt(
    dir: &Path,
    kind: &str,
    body: serde_json::Value,
    out: Option<&Path>,
) -> Result<Option<visage_governance::Receipt>> {
    if !dir.join(visage_governance::DB_FILE).exists() {
        if out.is_some() {
            bail!(
                "no governance database in {} to sign a receipt: run `visage admin init` first",
                dir.display()
            );
        }
        return Ok(None);
    }
    let gov = visage_governance::Governance::open(dir)?;
    let r = gov.sign_receipt(&crate::gov_cmds::cli_actor(), None, kind, body)?;
    if let Some(p) = out {
        write_receipt(p, &r)?;
    }
    Ok(Some(r))
}

fn write_receipt(p: &Path, r: &visage_governance::Receipt) -> Result<()> {
    std::fs::write(p, serde_json::to_string_pretty(r)? + "\n")
        .with_context(|| format!("cannot write {}", p.display()))?;
    eprintln!(
        "signed {} receipt {} written to {}",
        r.kind,
        r.id,
        p.display()
    );
    Ok(())
}
