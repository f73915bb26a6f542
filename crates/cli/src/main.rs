//! `visage`: the command-line front end. It parses arguments, calls the library crates and
//! prints results (human-readable, or JSON with `--json`). No business rules live here.

mod cluster_cmds;
mod gallery_cmds;
mod gov_cmds;

use visage_engine::files;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use visage_vision::pack::{self, Home};
use visage_vision::{
    AnalyzeOptions, DecodeLimits, DetectOptions, Face, FacePipeline, InferenceOptions,
    PipelinePool, VisionError,
};

#[derive(Parser)]
#[command(
    name = "visage",
    version,
    about = "Accountable face search: face pipeline, gallery, search, governance"
)]
struct Cli {
    /// Where model packs and the ONNX Runtime library are installed (default: $XDG_DATA_HOME/visage).
    #[arg(long, global = true, env = "VISAGE_HOME")]
    home: Option<PathBuf>,
    /// Gallery data directory.
    #[arg(long, global = true, env = "VISAGE_DATA", default_value = visage_gallery::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Threads for inference (0 = all cores).
    #[arg(long, global = true, default_value_t = 0, env = "VISAGE_THREADS")]
    threads: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List, install and verify model packs.
    #[command(subcommand)]
    Models(ModelsCmd),
    /// Detect faces: boxes, landmarks, scores and quality. Folders are searched recursively.
    Detect(DetectArgs),
    /// Embed the faces of one image.
    Embed(EmbedArgs),
    /// Compare the main face of two images (1:1).
    Verify(VerifyArgs),
    /// Fill the gallery from folders, archives, manifests and web archives; resumable.
    Ingest(gallery_cmds::IngestArgs),
    /// Ingest jobs with their status and counts, newest first.
    Jobs {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Search the gallery with the faces of a probe photo.
    Search(gallery_cmds::SearchArgs),
    /// List, show and delete stored faces.
    #[command(subcommand)]
    Faces(gallery_cmds::FacesCmd),
    /// Process an opt-out request: delete the faces matching the requester's selfie(s) and
    /// add their embeddings (never photos) to the suppression list that keeps them out of
    /// later ingests and searches.
    OptOut(gallery_cmds::OptOutArgs),
    /// Process an access request: list the faces held that match the selfie(s).
    Access(gallery_cmds::OptOutArgs),
    /// Counts per collection, source and jurisdiction; bytes on disk and in memory.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Check that metadata, blobs and vector indexes agree; --repair fixes what it finds.
    Check {
        #[arg(long)]
        repair: bool,
        /// Also re-hash every blob.
        #[arg(long)]
        deep: bool,
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks and evaluation protocols.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Serve the HTTP API over the gallery and governance store in --data-dir (the server is
    /// the gallery's writer unless --read-only). Prints the first admin's password once.
    Serve(ServeArgs),
    /// Offline administration of organisations, users and API keys (governance.sqlite).
    #[command(subcommand)]
    Admin(gov_cmds::AdminCmd),
    /// Verify, export and show the hash-chained, signed audit log.
    #[command(subcommand)]
    Audit(gov_cmds::AuditCmd),
    /// Verify signed receipts.
    #[command(subcommand)]
    Receipt(gov_cmds::ReceiptCmd),
    /// Cluster mode (PostgreSQL + S3 + Qdrant): schema, API keys, ingest jobs, stats, check.
    #[command(subcommand)]
    Cluster(cluster_cmds::ClusterCmd),
    /// Take ingest items from the cluster's queue and store their faces (run several).
    Worker(cluster_cmds::WorkerArgs),
    /// Copy the embedded gallery in --data-dir into the cluster of --config (idempotent).
    Migrate(cluster_cmds::MigrateArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: std::net::SocketAddr,
    #[command(flatten)]
    pack: PackArg,
    /// Open the gallery read-only (to run beside `visage ingest`); write endpoints answer 409.
    #[arg(long)]
    read_only: bool,
    /// Policy file (default: <data-dir>/policy.toml if present, else the built-in policy;
    /// with --config: the config's policy_file, else the built-in policy).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// ISO 3166 jurisdiction of the `default` organisation created with the first admin.
    #[arg(long, default_value = "ZZ")]
    admin_jurisdiction: String,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A folder whose files `POST /v1/ingest/jobs` may ingest by server-side path
    /// (repeatable; symbolic links leading outside are refused). Without it, only uploads.
    #[arg(long = "ingest-root", value_name = "DIR")]
    ingest_roots: Vec<PathBuf>,
    /// Largest upload to `POST /v1/ingest/jobs`, in MiB (other requests: 32 MiB).
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    upload_limit_mib: u64,
    /// Pipelines (cores) an HTTP ingest job uses (default: every core but one).
    #[arg(long, value_name = "N", default_value_t = 0)]
    ingest_workers: usize,
    /// Serve the cluster API over this cluster configuration instead of the embedded
    /// gallery (docs/CLUSTER.md): health, stats and queued ingest jobs.
    #[arg(long, value_name = "FILE", env = "VISAGE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ModelsCmd {
    /// Show known packs, whether they are installed, and their licences.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Install the ONNX Runtime library and packs (default: the `open` pack). Idempotent.
    Install {
        /// Packs to install.
        names: Vec<String>,
        /// Accept the licence of a pack that requires it (repeatable), e.g. `--accept-licence insightface-s`.
        #[arg(long = "accept-licence", value_name = "PACK")]
        accept: Vec<String>,
    },
    /// Check installed files against their pinned sha256.
    Verify {
        names: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Measure a pack's impostor score distribution on LFW's development split
    /// (pairsDevTrain.txt) and store it beside the pack: every match then reports its
    /// estimated false match rate. See docs/CALIBRATION.md.
    Calibrate {
        #[command(flatten)]
        pack: PackArg,
        /// The LFW folder holding pairsDevTrain.txt and lfw-deepfunneled/.
        #[arg(long, default_value = "../shared/data/lfw")]
        data: PathBuf,
        /// Measure again even when the pack already has a calibration.
        #[arg(long)]
        force: bool,
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
}

#[derive(Args)]
pub(crate) struct PackArg {
    /// Model pack to use.
    #[arg(long, default_value = pack::DEFAULT_PACK, env = "VISAGE_PACK")]
    pub(crate) pack: String,
}

#[derive(Args)]
struct DetectArgs {
    /// Image files or folders.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    pack: PackArg,
    /// One JSON object per image on stdout.
    #[arg(long)]
    json: bool,
    /// Smallest face width to look for, in pixels (smaller adds tiled passes on large images).
    #[arg(long, default_value_t = 20.0)]
    min_face: f32,
}

#[derive(Args)]
struct EmbedArgs {
    image: PathBuf,
    #[command(flatten)]
    pack: PackArg,
    #[arg(long)]
    json: bool,
    /// Write each face's aligned crop as PNG into this folder.
    #[arg(long, value_name = "DIR")]
    save_crops: Option<PathBuf>,
    /// Average with the mirrored crop's embedding (test-time augmentation).
    #[arg(long)]
    flip: bool,
    /// Also embed faces that fail the quality gate.
    #[arg(long)]
    all_faces: bool,
}

#[derive(Args)]
struct VerifyArgs {
    a: PathBuf,
    b: PathBuf,
    #[command(flatten)]
    pack: PackArg,
    #[arg(long)]
    json: bool,
    /// Use flip test-time augmentation.
    #[arg(long)]
    flip: bool,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Grow a collection of the gallery in --data-dir to N faces with synthetic face-like
    /// vectors stored as real rows (one shared crop), for latency measurements at scale.
    FillSynthetic {
        #[command(flatten)]
        pack: PackArg,
        #[arg(long, default_value = "synthetic")]
        collection: String,
        /// Total faces the collection should hold.
        #[arg(long)]
        faces: u64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// End-to-end probe latency on the gallery in --data-dir: decode, detect, embed, index
    /// search and provenance joins, p50/p90 over --runs searches.
    Probe {
        #[command(flatten)]
        pack: PackArg,
        /// The probe photo (e.g. ../shared/data/e2e/face_recognition/examples/obama-1080p.jpg).
        #[arg(long)]
        probe: PathBuf,
        #[arg(long, default_value_t = 50)]
        runs: usize,
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Smallest face to look for, in pixels (smaller adds tiled passes on large photos;
        /// the search default is 40).
        #[arg(long, default_value_t = visage_engine::search::PROBE_MIN_FACE_PX)]
        min_face: f32,
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Load test a running `visage serve`: --clients concurrent searches for --seconds, then
    /// latency percentiles and errors. Needs an investigator API key and an open case.
    Load {
        /// Server base URL (loopback only in tests and benchmarks).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// API key (default: $VISAGE_API_KEY).
        #[arg(long, env = "VISAGE_API_KEY", hide_env_values = true)]
        key: String,
        #[arg(long)]
        case_id: i64,
        #[arg(long, default_value = "load test of the search service")]
        purpose: String,
        #[arg(long)]
        probe: PathBuf,
        #[arg(long, default_value_t = 50)]
        clients: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, default_value_t = 10)]
        k: usize,
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Check a pack's calibration on LFW pairs.txt: at the scores where the estimate says
    /// 1e-2, 1e-3 and 1e-4, the false match rates different people actually reach.
    Calibration {
        #[command(flatten)]
        pack: PackArg,
        #[arg(long, default_value = "../shared/data/lfw")]
        data: PathBuf,
        /// Check on the protocol's first N folds only (each fold holds other people);
        /// all 10 when left out. Fewer folds embed fewer images: 4 folds take 40% of the time.
        #[arg(long, value_name = "N")]
        folds: Option<usize>,
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// LFW 10-fold verification accuracy through the full pipeline.
    Lfw {
        #[command(flatten)]
        pack: PackArg,
        /// The LFW folder holding pairs.txt and lfw-deepfunneled/.
        #[arg(long)]
        data: PathBuf,
        /// Pairs file inside --data.
        #[arg(long, default_value = "pairs.txt")]
        pairs: String,
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        #[arg(long)]
        flip: bool,
        /// Parallel pipelines (default: one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Largest enlargement of the 250x250 image for detection (1 = native resolution;
        /// chosen on the LFW development split, where enlarging to the 640 input lost accuracy).
        #[arg(long, default_value_t = 1.0)]
        max_upscale: f32,
    },
    /// LFW 1:N identification: gallery = first image of each of the people with two or more
    /// images plus every single-image person (distractors), probes = the other images.
    /// Rank-1/rank-10, FNIR at FPIR 1% and 0.1% (leave-one-out non-mated searches), DET curve.
    /// Threads: the global --threads (0 = one pipeline per core).
    #[command(name = "lfw-1n")]
    Lfw1n {
        #[command(flatten)]
        pack: PackArg,
        /// The LFW folder holding lfw-deepfunneled/ (and optionally identities_counts.tsv).
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Smoke test only (changes the protocol): keep the first N people with two or more
        /// images and the first N single-image people, by name.
        #[arg(long, value_name = "N")]
        limit_people: Option<usize>,
    },
    /// Detection recall on hand-marked faces (dlib imglab XML, e.g. ../shared/data/e2e/dlib/faces).
    Recall {
        #[command(flatten)]
        pack: PackArg,
        /// Folder with the images and the XML files.
        #[arg(long)]
        data: PathBuf,
        /// Annotation files inside --data.
        #[arg(long, default_values_t = ["training.xml".to_string(), "testing.xml".to_string()])]
        xml: Vec<String>,
        #[arg(long, default_value_t = 0.4)]
        iou: f32,
        #[arg(long, default_value_t = 20.0)]
        min_face: f32,
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Vector index (HNSW) build rate, query latency, recall@10 and bytes per face, on
    /// synthetic face-like embeddings. Threads: the global --threads (0 = all cores).
    Index {
        /// Vectors in the index.
        #[arg(long, default_value_t = 100_000)]
        n: usize,
        /// Embedding dimension.
        #[arg(long, default_value_t = 512)]
        dim: usize,
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        /// HNSW expansion at search time (ef) of the main measurement.
        #[arg(long, default_value_t = visage_gallery::HnswParams::default().expansion_search)]
        ef: usize,
        /// Further ef values to measure on the same index, e.g. 32,64,128,256.
        #[arg(long, value_delimiter = ',')]
        ef_sweep: Vec<usize>,
        /// HNSW connectivity (M).
        #[arg(long, default_value_t = visage_gallery::HnswParams::default().connectivity)]
        connectivity: usize,
        /// HNSW expansion while building (ef_construction).
        #[arg(long, default_value_t = visage_gallery::HnswParams::default().expansion_add)]
        ef_add: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// How the index stores vectors: f32, f16 or i8 (quantised: candidates are re-scored
        /// exactly).
        #[arg(long, default_value = "f32")]
        storage: visage_gallery::Storage,
        /// Candidates re-scored exactly per query with quantised storage.
        #[arg(long, default_value_t = 40)]
        rerank: usize,
        /// Folder for the saved index (default: the system temporary folder).
        #[arg(long)]
        save_dir: Option<PathBuf>,
        /// Benchmark on the real embeddings of this gallery collection (faces labelled with
        /// subjects, e.g. LFW ingested with --subject-from-parent) instead of synthetic ones;
        /// uses the global --data-dir.
        #[arg(long, value_name = "COLLECTION")]
        real: Option<String>,
        /// With --real: add synthetic face-like vectors until the index holds --n (real
        /// embeddings mixed into synthetic ones); half the queries are then held-out real
        /// faces, half synthetic.
        #[arg(long, requires = "real")]
        mix_synthetic: bool,
        /// Write the rows, queries and exact top-10 to this folder as .npy files (for
        /// bench/peers_faiss.py: FAISS on identical data).
        #[arg(long, value_name = "DIR")]
        export: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Inference speed (bare model runs), comparable with bench/speed_python.py.
    Speed {
        #[command(flatten)]
        pack: PackArg,
        /// A photo; it is resized to 640x480.
        #[arg(long)]
        image: PathBuf,
        #[arg(long, default_value_t = 200)]
        runs: usize,
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VISAGE_LOG")
                .unwrap_or_else(|_| "warn,ort=error".into()),
        )
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let home = cli
        .home
        .clone()
        .map(Home::new)
        .unwrap_or_else(Home::from_env);
    let inference = InferenceOptions {
        intra_threads: cli.threads,
        ..Default::default()
    };
    match cli.cmd {
        Cmd::Models(m) => models(&home, m),
        Cmd::Detect(a) => detect(&home, &inference, a),
        Cmd::Embed(a) => embed(&home, &inference, a),
        Cmd::Verify(a) => verify(&home, &inference, a),
        Cmd::Ingest(a) => gallery_cmds::ingest(&home, &inference, &cli.data_dir, a),
        Cmd::Jobs { limit, json } => gallery_cmds::jobs(&cli.data_dir, limit, json),
        Cmd::Search(a) => gallery_cmds::search(&home, &inference, &cli.data_dir, a),
        Cmd::Faces(f) => gallery_cmds::faces(&cli.data_dir, f),
        Cmd::OptOut(a) => gallery_cmds::opt_out(&home, &inference, &cli.data_dir, a),
        Cmd::Access(a) => gallery_cmds::access(&home, &inference, &cli.data_dir, a),
        Cmd::Stats { json } => gallery_cmds::stats(&cli.data_dir, json),
        Cmd::Check { repair, deep, json } => gallery_cmds::check(&cli.data_dir, repair, deep, json),
        Cmd::Bench(b) => bench(&home, &inference, &cli.data_dir, b),
        Cmd::Serve(a) => serve(&home, &inference, &cli.data_dir, a),
        Cmd::Admin(c) => gov_cmds::admin(&cli.data_dir, c),
        Cmd::Audit(c) => gov_cmds::audit(&cli.data_dir, c),
        Cmd::Receipt(c) => gov_cmds::receipt(&cli.data_dir, c),
        Cmd::Cluster(c) => cluster_cmds::cluster(c),
        Cmd::Worker(a) => cluster_cmds::worker(&home, &inference, a),
        Cmd::Migrate(a) => cluster_cmds::migrate(&cli.data_dir, a),
    }
}

fn serve(home: &Home, inf: &InferenceOptions, data_dir: &Path, a: ServeArgs) -> Result<ExitCode> {
    if let Some(cfg) = &a.config {
        let cfg = visage_cluster::ClusterConfig::load(cfg)?;
        let pipeline = visage_vision::FacePipeline::load(home, &a.pack.pack, inf)?;
        let st = visage_server::cluster_api::ClusterState::open(
            &cfg,
            &a.ingest_roots,
            pipeline,
            a.policy.as_deref(),
        )?;
        visage_server::cluster_api::run_cluster(a.bind, st, |addr| {
            eprintln!("visage: cluster API listening on http://{addr}");
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let opts = visage_server::ServeOptions {
        read_only: a.read_only,
        policy: a.policy,
        admin_jurisdiction: a.admin_jurisdiction,
        ingest_roots: a.ingest_roots,
        upload_limit: a
            .upload_limit_mib
            .checked_mul(1 << 20)
            .filter(|n| *n > 0)
            .context("--upload-limit-mib must be between 1 and 2^44")?,
        ingest_workers: a.ingest_workers,
        ..Default::default()
    };
    let (state, admin) = visage_server::AppState::open(data_dir, home, &a.pack.pack, inf, &opts)?;
    if let Some(admin) = admin {
        // Shown once, on stdout only (never in the log).
        println!(
            "visage: created the first administrator\n  username: {}\n  password: {}\n\
             Log in with POST /v1/auth/login and create API keys; this password is not shown again.",
            admin.user.username, admin.password
        );
    }
    let tls = match (a.tls_cert, a.tls_key) {
        (Some(cert), Some(key)) => Some(visage_server::TlsFiles { cert, key }),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    visage_server::run(a.bind, state, tls, |addr| {
        eprintln!("visage: listening on {scheme}://{addr}");
    })?;
    Ok(ExitCode::SUCCESS)
}

fn models(home: &Home, cmd: ModelsCmd) -> Result<ExitCode> {
    match cmd {
        ModelsCmd::Calibrate {
            pack,
            data,
            force,
            json,
        } => {
            let pool = PipelinePool::load(home, &pack.pack, files::cores(), 1)?;
            let p = &pool.first().pack;
            if let (Some(c), false) = (&p.calibration, force) {
                eprintln!(
                    "{} is already calibrated ({} impostor pairs; --force to measure again)",
                    c.pack, c.impostor_pairs
                );
                return Ok(ExitCode::SUCCESS);
            }
            let (cal, report) = visage_bench::calibrate::calibrate(&pool, &data, |d, n| {
                if d % 1000 == 0 || d == n {
                    eprintln!("calibrate: embedded {d}/{n} images");
                }
            })?;
            cal.save(&p.dir)?;
            println!(
                "calibrated {}: {} images, {} people, {} impostor pairs ({} images without a usable face), {:.0} s",
                report.pack,
                report.images,
                report.identities,
                report.impostor_pairs,
                report.failed_images.len(),
                report.seconds
            );
            for (f, s) in &report.score_at_fmr {
                println!("  FMR {f}: score {s:.4}");
            }
            if let Some(path) = &json {
                std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCmd::List { json } => {
            let rows: Vec<_> = pack::builtin_manifests()
                .into_iter()
                .map(|m| {
                    let dir = home.pack_dir(&m.name);
                    let installed = dir.join("pack.toml").exists();
                    let calibration = visage_vision::Calibration::load(&dir).ok().flatten();
                    json!({
                        "name": m.name, "version": m.version, "description": m.description,
                        "licence": m.licence, "licence_url": m.licence_url,
                        "commercial_use": m.commercial_use, "requires_acceptance": m.requires_acceptance,
                        "installed": installed, "dir": dir,
                        "calibrated": calibration.as_ref().is_some_and(|c| c.pack == format!("{}@{}", m.name, m.version)),
                        "embedding_dim": m.recogniser.as_ref().map(|r| r.embedding_dim),
                        "default": m.name == pack::DEFAULT_PACK,
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for r in &rows {
                    println!(
                        "{}{} {} ({}-d) [{}]\n    {}\n    licence: {}{}",
                        r["name"].as_str().unwrap_or(""),
                        if r["default"] == true {
                            " (default)"
                        } else {
                            ""
                        },
                        r["version"].as_str().unwrap_or(""),
                        r["embedding_dim"],
                        if r["installed"] == true {
                            "installed"
                        } else {
                            "not installed"
                        },
                        r["description"].as_str().unwrap_or(""),
                        r["licence"].as_str().unwrap_or(""),
                        if r["requires_acceptance"] == true {
                            "  -- install requires --accept-licence"
                        } else {
                            ""
                        },
                    );
                }
                let rt = home.runtime_lib();
                println!(
                    "runtime: ONNX Runtime {} at {} [{}]",
                    pack::runtime_manifest().version,
                    rt.display(),
                    if rt.exists() {
                        "installed"
                    } else {
                        "not installed"
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCmd::Install { names, accept } => {
            let names = if names.is_empty() {
                vec![pack::DEFAULT_PACK.to_string()]
            } else {
                names
            };
            let mut progress = |m: &str| eprintln!("{m}");
            pack::install_runtime(home, &mut progress)?;
            for n in &names {
                let m = pack::builtin_manifest(n).with_context(|| format!("unknown pack `{n}`"))?;
                pack::install_pack(home, &m, accept.iter().any(|a| a == n), &mut progress)?;
                eprintln!("{n}: ready ({})", home.pack_dir(n).display());
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCmd::Verify { names, json } => {
            let mut targets = vec![(
                "onnxruntime".to_string(),
                pack::runtime_manifest(),
                home.runtime_dir(),
            )];
            for m in pack::builtin_manifests() {
                let dir = home.pack_dir(&m.name);
                if (names.is_empty() && dir.exists()) || names.contains(&m.name) {
                    targets.push((m.name.clone(), m, dir));
                }
            }
            let mut all_ok = true;
            let mut out = Vec::new();
            for (name, m, dir) in targets {
                for st in pack::verify_dir(&m, &dir) {
                    all_ok &= st.ok;
                    if !json {
                        println!(
                            "{:<14} {:<36} {}",
                            name,
                            st.name,
                            if st.ok {
                                "ok".to_string()
                            } else {
                                st.problem.clone().unwrap_or_default()
                            }
                        );
                    }
                    out.push(json!({"component": name, "file": st.name, "ok": st.ok, "problem": st.problem}));
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Ok(if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn face_json(f: &Face, crop: Option<&Path>) -> serde_json::Value {
    let mut v = json!({
        "bbox": f.detection.bbox,
        "landmarks": f.detection.landmarks,
        "score": f.detection.score,
        "quality": {
            "score": f.quality.score, "passes": f.quality.passes(),
            "reasons": f.quality.reasons.iter().map(|r| r.code()).collect::<Vec<_>>(),
            "face_px": f.quality.face_px, "sharpness": f.quality.sharpness,
            "yaw": f.quality.yaw, "roll_deg": f.quality.roll_deg,
        },
    });
    if let Some(e) = &f.embedding {
        v["embedding"] = json!(e.vector);
    }
    if let Some(c) = crop {
        v["crop"] = json!(c);
    }
    v
}

fn error_json(e: &VisionError) -> serde_json::Value {
    json!({"code": e.code(), "message": e.to_string()})
}

fn detect(home: &Home, inf: &InferenceOptions, a: DetectArgs) -> Result<ExitCode> {
    let listing = files::collect(&a.paths);
    let pool = throughput_pool(home, inf, &a.pack.pack)?;
    let opts = AnalyzeOptions {
        embed: false,
        detect: DetectOptions {
            min_face_px: a.min_face,
            ..Default::default()
        },
        ..Default::default()
    };
    let results = pool.map(
        &listing.files,
        |p, path| -> Result<(u32, u32, Vec<Face>), VisionError> {
            let img = visage_vision::decode_file(path, &DecodeLimits::default())?;
            let faces = p.analyze(&img.rgb, &opts)?;
            Ok((img.rgb.width(), img.rgb.height(), faces))
        },
        |_| {},
    );
    let mut failed = listing.skipped.len();
    for (path, why) in &listing.skipped {
        if a.json {
            println!(
                "{}",
                json!({"path": path, "error": {"code": "skipped", "message": why}})
            );
        } else {
            eprintln!("{}: skipped: {why}", path.display());
        }
    }
    let (mut n_img, mut n_faces) = (0, 0);
    for (path, r) in listing.files.iter().zip(results) {
        match r {
            Ok((w, h, faces)) => {
                n_img += 1;
                n_faces += faces.len();
                if a.json {
                    println!(
                        "{}",
                        json!({"path": path, "width": w, "height": h, "faces": faces.iter().map(|f| face_json(f, None)).collect::<Vec<_>>()})
                    );
                } else {
                    println!("{} ({w}x{h}): {} face(s)", path.display(), faces.len());
                    for (i, f) in faces.iter().enumerate() {
                        let b = &f.detection.bbox;
                        let reasons: Vec<_> = f.quality.reasons.iter().map(|r| r.code()).collect();
                        println!(
                            "  #{i} box [{:.0},{:.0} {:.0}x{:.0}] score {:.3} quality {:.2}{}",
                            b.x1,
                            b.y1,
                            b.width(),
                            b.height(),
                            f.detection.score,
                            f.quality.score,
                            if reasons.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", reasons.join(", "))
                            }
                        );
                    }
                }
            }
            Err(e) => {
                failed += 1;
                if a.json {
                    println!("{}", json!({"path": path, "error": error_json(&e)}));
                } else {
                    eprintln!("{}: {} [{}]", path.display(), e, e.code());
                }
            }
        }
    }
    if !a.json {
        eprintln!("{n_img} image(s), {n_faces} face(s), {failed} failed");
    }
    // Exit 0 when everything was processed, 3 when some inputs failed (the rest were done).
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// Pipelines for batch work: with all cores (`--threads 0`), one single-threaded pipeline per
/// core; with an explicit thread count, one pipeline using that many threads.
pub(crate) fn throughput_pool(
    home: &Home,
    inf: &InferenceOptions,
    pack: &str,
) -> Result<PipelinePool> {
    let workers = if inf.intra_threads == 0 {
        files::cores()
    } else {
        1
    };
    let per = if workers > 1 { 1 } else { inf.threads() };
    Ok(PipelinePool::load(home, pack, workers, per)?)
}

fn load(home: &Home, inf: &InferenceOptions, pack: &str) -> Result<FacePipeline> {
    Ok(FacePipeline::load(home, pack, inf)?)
}

fn embed(home: &Home, inf: &InferenceOptions, a: EmbedArgs) -> Result<ExitCode> {
    let p = load(home, inf, &a.pack.pack)?;
    let img = visage_vision::decode_file(&a.image, &DecodeLimits::default())?;
    let opts = AnalyzeOptions {
        flip: a.flip,
        embed_all: a.all_faces,
        ..Default::default()
    };
    let faces = p.analyze(&img.rgb, &opts)?;
    let mut crops = Vec::new();
    if let Some(dir) = &a.save_crops {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let stem = a
            .image
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("image");
        for (i, f) in faces.iter().enumerate() {
            let path = dir.join(format!("{stem}_{i}.png"));
            f.crop
                .save(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            crops.push(Some(path));
        }
    }
    if a.json {
        let faces_json: Vec<_> = faces
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut v = face_json(f, crops.get(i).and_then(|c| c.as_deref()));
                v["index"] = json!(i);
                if f.embedding.is_none() {
                    v["embedding"] = serde_json::Value::Null;
                }
                v
            })
            .collect();
        println!(
            "{}",
            json!({"path": a.image, "pack": p.pack_id(), "width": img.rgb.width(), "height": img.rgb.height(), "flip": a.flip, "faces": faces_json})
        );
    } else {
        println!(
            "{}: {} face(s), pack {}",
            a.image.display(),
            faces.len(),
            p.pack_id()
        );
        for (i, f) in faces.iter().enumerate() {
            match &f.embedding {
                Some(e) => println!(
                    "  #{i} score {:.3}: [{}, ...] ({}-d)",
                    f.detection.score,
                    e.vector
                        .iter()
                        .take(4)
                        .map(|x| format!("{x:.4}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    e.vector.len()
                ),
                None => println!(
                    "  #{i} score {:.3}: not embedded ({})",
                    f.detection.score,
                    f.quality
                        .reasons
                        .iter()
                        .map(|r| r.code())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The largest face that passes the quality gate, else the largest face.
fn main_face(faces: &[Face]) -> Option<&Face> {
    let area = |f: &&Face| f.detection.bbox.area();
    faces
        .iter()
        .filter(|f| f.embedding.is_some())
        .max_by(|a, b| area(a).total_cmp(&area(b)))
}

fn verify(home: &Home, inf: &InferenceOptions, a: VerifyArgs) -> Result<ExitCode> {
    let p = load(home, inf, &a.pack.pack)?;
    let opts = AnalyzeOptions {
        flip: a.flip,
        embed_all: true,
        ..Default::default()
    };
    let mut sides = Vec::new();
    for path in [&a.a, &a.b] {
        let img = visage_vision::decode_file(path, &DecodeLimits::default())
            .with_context(|| path.display().to_string())?;
        let faces = p.analyze(&img.rgb, &opts)?;
        let Some(f) = main_face(&faces).cloned() else {
            if a.json {
                println!(
                    "{}",
                    json!({"error": {"code": "no_face_detected", "message": format!("no face detected in {}", path.display()), "path": path}})
                );
            }
            bail!("no face detected in {} [no_face_detected]", path.display());
        };
        sides.push((path, faces.len(), f));
    }
    let sim = sides[0]
        .2
        .embedding
        .as_ref()
        .expect("main face is embedded")
        .cosine(sides[1].2.embedding.as_ref().expect("embedded"))?;
    let thr = p.pack.thresholds.verify;
    let same = sim >= thr;
    if a.json {
        let side = |s: &(&PathBuf, usize, Face)| json!({"path": s.0, "faces_detected": s.1, "face": {"bbox": s.2.detection.bbox, "score": s.2.detection.score, "quality": s.2.quality.score}});
        println!(
            "{}",
            json!({"pack": p.pack_id(), "similarity": sim, "threshold": thr, "same": same, "flip": a.flip, "a": side(&sides[0]), "b": side(&sides[1])})
        );
    } else {
        println!(
            "similarity {sim:.4} (threshold {thr:.4}, pack {}): {}",
            p.pack_id(),
            if same {
                "same person"
            } else {
                "different people"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write_json(path: Option<&Path>, v: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    println!("{text}");
    if let Some(p) = path {
        std::fs::write(p, format!("{text}\n"))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

fn bench(home: &Home, inf: &InferenceOptions, data_dir: &Path, cmd: BenchCmd) -> Result<ExitCode> {
    match cmd {
        BenchCmd::FillSynthetic {
            pack,
            collection,
            faces,
            seed,
        } => {
            let g = visage_gallery::Gallery::open(data_dir, visage_gallery::Access::ReadWrite)?;
            let p = FacePipeline::load(home, &pack.pack, inf)?;
            let t = std::time::Instant::now();
            let added =
                visage_bench::probe::fill_synthetic(&g, &p, &collection, faces, seed, |d, n| {
                    if d % 20_000 == 0 || d == n {
                        eprintln!("fill-synthetic: {d}/{n} faces");
                    }
                })?;
            println!(
                "collection {collection}: {added} synthetic faces added in {:.0} s",
                t.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Probe {
            pack,
            probe,
            runs,
            k,
            min_face,
            json,
        } => {
            let g = visage_gallery::Gallery::open(data_dir, visage_gallery::Access::ReadOnly)?;
            for c in g.collections()? {
                g.load_index(c.id)?;
            }
            let p = FacePipeline::load(home, &pack.pack, inf)?;
            let bytes =
                std::fs::read(&probe).with_context(|| format!("reading {}", probe.display()))?;
            let r = visage_bench::probe::probe_latency(
                &g,
                &p,
                &probe.display().to_string(),
                &bytes,
                runs,
                k,
                min_face,
                inf.intra_threads,
            )?;
            println!(
                "{}x{} probe, {} faces searched, {} runs (p50 / p90 ms): decode {:.1}/{:.1}, detect {:.1}/{:.1}, embed {:.1}/{:.1}, search {:.1}/{:.1} (index {:.1}, joins {:.1}), total {:.1}/{:.1}",
                r.probe_width, r.probe_height, r.faces_searched, r.runs,
                r.decode.p50, r.decode.p90, r.detect.p50, r.detect.p90, r.embed.p50, r.embed.p90,
                r.search.p50, r.search.p90, r.index.p50, r.join.p50, r.total.p50, r.total.p90
            );
            if let Some(path) = &json {
                std::fs::write(path, serde_json::to_string_pretty(&r)? + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Load {
            url,
            key,
            case_id,
            purpose,
            probe,
            clients,
            seconds,
            k,
            json,
        } => {
            let bytes =
                std::fs::read(&probe).with_context(|| format!("reading {}", probe.display()))?;
            let o = visage_bench::probe::LoadOptions {
                url,
                api_key: key,
                case_id,
                purpose,
                probe: bytes,
                clients,
                duration: std::time::Duration::from_secs(seconds),
                k,
            };
            let r = visage_bench::probe::load_test(&o, |n| eprint!("\rload: {n} requests"))?;
            eprintln!();
            println!(
                "{} clients, {:.0} s: {} requests ({:.1}/s), {} errors; latency p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                r.clients, r.seconds, r.requests, r.requests_per_second, r.errors,
                r.latency_ms.p50, r.latency_ms.p90, r.p99_ms, r.max_ms
            );
            for e in &r.error_samples {
                eprintln!("error: {e}");
            }
            if let Some(path) = &json {
                std::fs::write(path, serde_json::to_string_pretty(&r)? + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(if r.errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        BenchCmd::Calibration {
            pack,
            data,
            folds,
            json,
        } => {
            let pool = PipelinePool::load(home, &pack.pack, files::cores(), 1)?;
            let Some(cal) = pool.first().pack.calibration.clone() else {
                bail!(
                    "pack {} has no calibration; run `visage models calibrate --pack {}`",
                    pool.first().pack_id(),
                    pack.pack
                );
            };
            let r = visage_bench::calibrate::validate(&pool, &data, &cal, folds, |d, n| {
                if d % 1000 == 0 || d == n {
                    eprintln!("calibration check: embedded {d}/{n} images");
                }
            })?;
            for l in &r.levels {
                println!(
                    "estimated FMR {:e} at score {:.4}{}: pairs.txt different-person pairs {}/{} = {:.2e} (x{:.2}); all {} unseen different-person pairs {:.2e} (x{:.2})",
                    l.estimated_fmr,
                    l.threshold,
                    if l.extrapolated { " (extrapolated)" } else { "" },
                    l.protocol_pairs.false_matches,
                    l.protocol_pairs.impostor_pairs,
                    l.protocol_pairs.observed_fmr,
                    l.protocol_pairs.ratio,
                    l.all_pairs.impostor_pairs,
                    l.all_pairs.observed_fmr,
                    l.all_pairs.ratio
                );
            }
            write_json(json.as_deref(), &r)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Lfw {
            pack,
            data,
            pairs,
            json,
            flip,
            workers,
            max_upscale,
        } => {
            let workers = if workers == 0 {
                files::cores()
            } else {
                workers
            };
            let pool = PipelinePool::load(home, &pack.pack, workers, 1)?;
            let report =
                visage_bench::lfw::run(&pool, &data, &pairs, flip, max_upscale, |d, n| {
                    if d % 500 == 0 || d == n {
                        eprintln!("lfw: embedded {d}/{n} images");
                    }
                })?;
            eprintln!(
                "LFW {} ({}): accuracy {:.4} ± {:.4}, TAR@FAR=1e-3 {:.4}, {:.1} images/s",
                report.pack,
                report.protocol,
                report.accuracy_mean,
                report.accuracy_std,
                report.tar_at_far_1e_3,
                report.images_per_second
            );
            write_json(json.as_deref(), &report)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Recall {
            pack,
            data,
            xml,
            iou,
            min_face,
            json,
        } => {
            let p = load(home, inf, &pack.pack)?;
            let files: Vec<&str> = xml.iter().map(String::as_str).collect();
            let report = visage_bench::recall::run(&p, &data, &files, iou, min_face)?;
            eprintln!(
                "detection recall {} at IoU {}: {}/{} = {:.4}",
                report.pack, iou, report.found, report.marked_faces, report.recall
            );
            write_json(json.as_deref(), &report)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Index {
            n,
            dim,
            queries,
            ef,
            ef_sweep,
            connectivity,
            ef_add,
            seed,
            storage,
            rerank,
            save_dir,
            real,
            mix_synthetic,
            export,
            json,
        } => {
            let real = match real {
                None => None,
                Some(name) => {
                    let g =
                        visage_gallery::Gallery::open(data_dir, visage_gallery::Access::ReadOnly)?;
                    let Some(c) = g.collection(&name)? else {
                        bail!("no collection {name:?} in {}", data_dir.display())
                    };
                    Some(g.labelled_vectors(c.id)?)
                }
            };
            let opts = visage_bench::index::IndexBenchOptions {
                n,
                dim,
                queries,
                params: visage_gallery::HnswParams {
                    connectivity,
                    expansion_add: ef_add,
                    expansion_search: ef,
                    storage,
                },
                rerank,
                threads: inf.threads(),
                seed,
                ef_sweep,
                save_dir,
                real,
                mix_synthetic,
                export,
            };
            let report = visage_bench::index::run(&opts, |line| eprintln!("bench index: {line}"))?;
            eprintln!(
                "{} x {}: {:.0} inserts/s, p50 {:.3} ms, p99 {:.3} ms, recall@10 {:.4} at ef={}, \
                 {:.0} B/face RAM, {:.0} B/face disk",
                report.n,
                report.dim,
                report.insert_per_s,
                report.p50_ms,
                report.p99_ms,
                report.recall_at_10,
                report.expansion_search,
                report.bytes_per_face_ram,
                report.bytes_per_face_disk
            );
            write_json(json.as_deref(), &report)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Speed {
            pack,
            image,
            runs,
            json,
        } => {
            let p = load(home, inf, &pack.pack)?;
            let report = visage_bench::speed::run(&p, &image, inf.threads(), runs)?;
            write_json(json.as_deref(), &report)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Lfw1n {
            pack,
            data,
            json,
            limit_people,
        } => bench_lfw_1n(home, inf, &pack.pack, &data, json.as_deref(), limit_people),
    }
}

/// `bench lfw-1n`: progress and warnings on stderr, summary on stdout, report to `--json`.
fn bench_lfw_1n(
    home: &Home,
    inf: &InferenceOptions,
    pack: &str,
    data: &Path,
    json: Option<&Path>,
    limit_people: Option<usize>,
) -> Result<ExitCode> {
    // Check the folder before loading the models, for a quick clear error.
    visage_bench::lfw1n::image_root(data)?;
    let pool = throughput_pool(home, inf, pack)?;
    let threads = if inf.intra_threads == 0 {
        files::cores()
    } else {
        inf.threads()
    };
    let r = visage_bench::lfw1n::run(
        &pool,
        data,
        limit_people,
        threads,
        &mut |w| eprintln!("lfw-1n: warning: {w}"),
        |d, n| {
            if d % 500 == 0 || d == n {
                eprintln!("lfw-1n: embedded {d}/{n} images");
            }
        },
    )?;
    if let Some(p) = json {
        std::fs::write(p, format!("{}\n", serde_json::to_string_pretty(&r)?))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    let m = &r.metrics;
    println!(
        "LFW 1:N {}{}",
        r.pack,
        match r.limit_people {
            Some(n) => format!(" (smoke test: --limit-people {n}, not the full protocol)"),
            None => String::new(),
        }
    );
    println!(
        "  gallery {} images ({} mated people + {} distractors), {} enrolled, {} failed",
        r.gallery_size, r.mated_people, r.distractors, r.gallery_enrolled, r.gallery_failures
    );
    println!(
        "  probes {} ({} failed: counted as misses), {} whose mate is not enrolled",
        r.probes, r.probe_failures, r.probes_without_mate
    );
    println!("  rank-1 {:.4}  rank-10 {:.4}", m.rank1, m.rank10);
    println!(
        "  FNIR {:.4} at FPIR <= 0.01 (threshold {:.4}, FPIR reached {:.4})",
        m.fnir_at_fpir_1e_2, m.threshold_at_fpir_1e_2, m.fpir_reached_1e_2
    );
    println!(
        "  FNIR {:.4} at FPIR <= 0.001 (threshold {:.4}, FPIR reached {:.4})",
        m.fnir_at_fpir_1e_3, m.threshold_at_fpir_1e_3, m.fpir_reached_1e_3
    );
    println!(
        "  {:.1} images/s on {} thread(s), {:.1} s in all{}",
        r.images_per_second,
        r.threads,
        r.elapsed_seconds,
        match json {
            Some(p) => format!("; report in {}", p.display()),
            None => String::new(),
        }
    );
    Ok(ExitCode::SUCCESS)
}
