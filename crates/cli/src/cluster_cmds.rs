//! Cluster-mode commands: `visage cluster ...`, `visage worker`, `visage migrate`
//! (docs/CLUSTER.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use visage_cluster::{queue, ClusterConfig, ClusterStore};
use visage_engine::IngestOptions;
use visage_gallery::{Access, FaceStore, Gallery, NewSource};
use visage_vision::pack::Home;
use visage_vision::{InferenceOptions, PipelinePool};

use crate::PackArg;

#[derive(Args, Clone)]
pub(crate) struct ConfigArg {
    /// Cluster configuration file (TOML: postgres_url, [s3], optional [qdrant]).
    #[arg(long, value_name = "FILE", env = "VISAGE_CONFIG")]
    pub(crate) config: PathBuf,
}

impl ConfigArg {
    fn load(&self) -> Result<ClusterConfig> {
        ClusterConfig::load(&self.config)
    }
    fn open(&self) -> Result<ClusterStore> {
        ClusterStore::open(&self.load()?)
    }
    /// The store and the audit log's signing key (an error when the config names none).
    fn open_with_audit_key(&self) -> Result<(ClusterStore, visage_cluster::audit::SigningKey)> {
        let cfg = self.load()?;
        let file = cfg
            .audit_key_file
            .as_ref()
            .context("the config names no audit_key_file: this cluster keeps no audit log")?;
        let key = visage_cluster::audit::load_or_create_key(file)?;
        Ok((ClusterStore::open(&cfg)?, key))
    }
}

#[derive(Subcommand)]
pub(crate) enum ClusterCmd {
    /// Create or upgrade the PostgreSQL schema (every command also does this on start).
    Init {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Create an API key for the cluster HTTP API (shown once).
    AddKey {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        name: String,
        /// admin, operator (may queue ingest jobs) or viewer.
        /// admin (accounts, ingest, deletion, audit; never search), investigator (search and
        /// cases), auditor or compliance; the policy decides what each may do.
        #[arg(long)]
        role: String,
        /// The organisation the key acts for (`visage cluster add-org`).
        #[arg(long)]
        org: String,
    },
    /// Create a user account of the cluster API (sign-in with a password for the web app and
    /// `POST /v1/auth/login`); prints a generated password once, or reads one from stdin.
    AddUser {
        #[command(flatten)]
        config: ConfigArg,
        username: String,
        /// The user's organisation (`visage cluster add-org`).
        #[arg(long)]
        org: String,
        /// admin, investigator, auditor or compliance.
        #[arg(long)]
        role: String,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// User accounts of the cluster API.
    Users {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Disable a cluster user (their sessions end, their keys and password stop working), or
    /// with --enable allow them again.
    DisableUser {
        #[command(flatten)]
        config: ConfigArg,
        username: String,
        #[arg(long)]
        enable: bool,
    },
    /// Set a cluster user's password (from the first line of stdin); ends their sessions.
    SetPassword {
        #[command(flatten)]
        config: ConfigArg,
        username: String,
    },
    /// Create an organisation (tenant): keys belong to one, the policy decides by its kind,
    /// jurisdiction and status, searches count against its monthly quota.
    AddOrg {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        name: String,
        /// law_enforcement, government, private or research.
        #[arg(long)]
        kind: String,
        /// ISO 3166-1 alpha-2 or ISO 3166-2 code (e.g. FR, US-NY).
        #[arg(long)]
        jurisdiction: String,
        /// Searches per calendar month (UTC); unlimited when absent.
        #[arg(long)]
        search_quota: Option<u64>,
    },
    /// Suspend an organisation (its keys can do nothing, searches included) or reactivate it;
    /// audited.
    SetOrgStatus {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        name: String,
        /// active or suspended.
        #[arg(long)]
        status: String,
    },
    /// Organisations of the cluster.
    Orgs {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Queue an ingest job: one item per file under PATH: images, videos, archives (.zip,
    /// .tar, .tar.gz), web archives (.warc, .warc.gz) and, named directly, manifests (.jsonl,
    /// .csv). The workers must see the same paths (e.g. on a shared file system).
    Enqueue(EnqueueArgs),
    /// Cancel an ingest job: its queued items end at once (code `cancelled`), the items
    /// workers hold finish, then the job is `cancelled`; audited.
    CancelJob {
        #[command(flatten)]
        config: ConfigArg,
        id: i64,
    },
    /// An ingest job's status and counts; --wait polls until it has ended (completed or cancelled).
    Job {
        #[command(flatten)]
        config: ConfigArg,
        id: i64,
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Counts: faces, images, collections.
    Stats {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Export the cluster's audit log (JSON Lines, the governance format: verify it offline
    /// with `visage audit verify --file FILE --public-key HEX`).
    AuditExport {
        #[command(flatten)]
        config: ConfigArg,
        /// Write here (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify the cluster's audit log in place: hash chain, signed checkpoints, head.
    AuditVerify {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Compare rows, blobs and vector points; --repair removes orphans and finishes deletions.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub(crate) struct EnqueueArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[arg(long, default_value = "default")]
    collection: String,
    /// Source name (reused when it exists).
    #[arg(long)]
    source: String,
    #[arg(long, default_value = "directory")]
    source_kind: String,
    /// Legal basis declared for holding these images.
    #[arg(long)]
    legal_basis: String,
    #[arg(long)]
    licence: Option<String>,
    /// ISO 3166 code of the source (`FR`, `US-IL`).
    #[arg(long)]
    jurisdiction: Option<String>,
    /// Label faces with the name of the folder holding each photo.
    #[arg(long)]
    subject_from_parent: bool,
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

#[derive(Args)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    pack: PackArg,
    /// Pipelines (threads) in this process (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Items claimed at a time per pipeline.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Seconds a claim lasts; a dead worker's items are taken again after this.
    #[arg(long, default_value_t = 60)]
    lease_s: i64,
    /// Exit when nothing is queued or claimed (otherwise wait for work).
    #[arg(long)]
    exit_when_idle: bool,
    /// Keep a copy of each original photo in the bucket.
    #[arg(long)]
    keep_originals: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct MigrateArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Only this collection.
    #[arg(long)]
    collection: Option<String>,
    #[arg(long)]
    json: bool,
}

pub(crate) fn cluster(cmd: ClusterCmd) -> Result<ExitCode> {
    match cmd {
        ClusterCmd::Init { config } => {
            let pool = visage_cluster::pg::Pool::new(&config.load()?.postgres_url)?;
            let applied = pool.migrate()?;
            eprintln!(
                "cluster schema version {} (applied now: {applied:?})",
                pool.schema_version()?
            );
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::AddKey {
            config,
            name,
            role,
            org,
        } => {
            let (store, audit_key) = config.open_with_audit_key()?;
            let role_v = visage_governance::Role::parse(&role).with_context(|| {
                format!("unknown role {role:?}: admin, investigator, auditor or compliance")
            })?;
            let org = visage_cluster::gov::org_by_name(store.pool(), &org)?;
            let key = visage_cluster::keys::create(store.pool(), &name, role_v, org.id)?;
            let audit = visage_cluster::audit::PgAudit::new(store.pool(), audit_key);
            audit.append(
                visage_governance::AuditEvent::new(&cli_actor(), "api_key_create")
                    .decided(true, "local_operator", "visage cluster add-key")
                    .objects([format!("key:{name}")])
                    .details(json!({ "role": role, "org_id": org.id })),
            )?;
            eprintln!("API key {name:?} ({role} of {:?}); shown once:", org.name);
            println!("{key}");
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::AddUser {
            config,
            username,
            org,
            role,
            password_stdin,
        } => {
            let (store, audit_key) = config.open_with_audit_key()?;
            let role = visage_governance::Role::parse(&role).with_context(|| {
                format!("unknown role {role:?}: admin, investigator, auditor or compliance")
            })?;
            let org = visage_cluster::gov::org_by_name(store.pool(), &org)?;
            let (password, generated) = if password_stdin {
                (crate::gov_cmds::read_password_stdin()?, false)
            } else {
                (crate::gov_cmds::random_password(20)?, true)
            };
            let audit = visage_cluster::audit::PgAudit::new(store.pool(), audit_key);
            let u = visage_cluster::accounts::create_user(
                store.pool(),
                &audit,
                &cli_actor(),
                org.id,
                &username,
                role,
                Some(&password),
            )?;
            eprintln!(
                "created user '{}' (id {}, {}) in organisation '{}'",
                u.username, u.id, u.role, org.name
            );
            if generated {
                println!("{password}");
                eprintln!("This password is shown only once: store it now.");
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Users { config, json } => {
            let store = config.open()?;
            let users = visage_cluster::accounts::list_users(store.pool(), None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                let orgs: std::collections::HashMap<i64, String> =
                    visage_cluster::gov::orgs(store.pool())?
                        .into_iter()
                        .map(|o| (o.id, o.name))
                        .collect();
                for u in users {
                    println!(
                        "{:>4}  {:<24} {:<13} {:<24} {}",
                        u.id,
                        u.username,
                        u.role,
                        orgs.get(&u.org_id).map_or("?", String::as_str),
                        if u.disabled { "disabled" } else { "active" }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::DisableUser {
            config,
            username,
            enable,
        } => {
            let (store, audit_key) = config.open_with_audit_key()?;
            let u = visage_cluster::accounts::user_by_name(store.pool(), &username)?;
            let audit = visage_cluster::audit::PgAudit::new(store.pool(), audit_key);
            visage_cluster::accounts::set_user_disabled(
                store.pool(),
                &audit,
                &cli_actor(),
                u.id,
                !enable,
            )?;
            eprintln!(
                "user '{username}' {}",
                if enable {
                    "enabled"
                } else {
                    "disabled; their sessions ended"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::SetPassword { config, username } => {
            let (store, audit_key) = config.open_with_audit_key()?;
            let password = crate::gov_cmds::read_password_stdin()?;
            let u = visage_cluster::accounts::user_by_name(store.pool(), &username)?;
            let audit = visage_cluster::audit::PgAudit::new(store.pool(), audit_key);
            visage_cluster::accounts::set_password(
                store.pool(),
                &audit,
                &cli_actor(),
                u.id,
                &password,
            )?;
            eprintln!("password of '{username}' set; their sessions ended");
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::AddOrg {
            config,
            name,
            kind,
            jurisdiction,
            search_quota,
        } => {
            let (store, audit_key) = config.open_with_audit_key()?;
            let kind = visage_governance::OrgKind::parse(&kind).with_context(|| {
                format!("unknown kind {kind:?}: law_enforcement, government, private or research")
            })?;
            let audit = visage_cluster::audit::PgAudit::new(store.pool(), audit_key);
            let org = visage_cluster::gov::create_org(
                store.pool(),
                &audit,
                &cli_actor(),
                &visage_governance::NewOrg {
                    name,
                    kind,
                    jurisdiction,
                    status: visage_governance::OrgStatus::Active,
                    trial_expires_at: None,
                    search_quota,
                },
            )?;
            println!("{}", serde_json::to_string_pretty(&org)?);
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::SetOrgStatus {
            config,
            name,
            status,
        } => {
            let status = match visage_governance::OrgStatus::parse(&status) {
                Some(
                    s @ (visage_governance::OrgStatus::Active
                    | visage_governance::OrgStatus::Suspended),
                ) => s,
                _ => bail!("unknown status {status:?}: active or suspended"),
            };
            let (store, audit_key) = config.open_with_audit_key()?;
            let org = visage_cluster::gov::org_by_name(store.pool(), &name)?;
            let audit = visage_cluster::audit::PgAudit::new(store.pool(), audit_key);
            let org = visage_cluster::gov::set_org_status(
                store.pool(),
                &audit,
                &cli_actor(),
                org.id,
                status,
            )?;
            println!("{}", serde_json::to_string_pretty(&org)?);
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Orgs { config, json } => {
            let store = config.open()?;
            let orgs = visage_cluster::gov::orgs(store.pool())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&orgs)?);
            } else {
                for o in orgs {
                    println!(
                        "{:>4}  {:<30} {:<16} {:<6} {:<9} quota {}",
                        o.id,
                        o.name,
                        o.kind,
                        o.jurisdiction,
                        o.status,
                        o.search_quota
                            .map_or("unlimited".to_string(), |q| q.to_string())
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Enqueue(a) => {
            let store = a.config.open()?;
            let source = NewSource {
                name: a.source.clone(),
                kind: a.source_kind.clone(),
                uri: a.paths.first().map(|p| p.display().to_string()),
                legal_basis: Some(a.legal_basis.clone()),
                licence: a.licence.clone(),
                jurisdiction: a
                    .jurisdiction
                    .as_deref()
                    .map(visage_gallery::normalize_jurisdiction)
                    .transpose()?,
            };
            let args = json!({
                "paths": a.paths,
                "subject_from_parent": a.subject_from_parent,
            });
            let id = queue::enqueue(store.pool(), &a.collection, &source, &a.paths, args)?;
            let st = queue::job_status(store.pool(), id)?.context("job vanished")?;
            eprintln!("queued job {id}: {} items", st.items);
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::CancelJob { config, id } => {
            let (store, audit_key) = config.open_with_audit_key()?;
            match queue::cancel(store.pool(), id)? {
                queue::Cancel::Requested => {}
                queue::Cancel::AlreadyEnded => bail!("job {id} has already ended"),
                queue::Cancel::NotFound => bail!("no ingest job {id}"),
            }
            visage_cluster::audit::PgAudit::new(store.pool(), audit_key).append(
                visage_governance::AuditEvent::admin(&cli_actor(), None, "ingest")
                    .details(json!({"event": "cancel", "job_id": id.to_string()}))
                    .objects([format!("job:{id}")]),
            )?;
            let st = queue::job_status(store.pool(), id)?.context("job vanished")?;
            eprintln!(
                "job {id} {}: {} queued items cancelled, {} still held by workers (they finish)",
                st.status, st.cancelled, st.claimed
            );
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Job {
            config,
            id,
            wait,
            json,
        } => {
            let store = config.open()?;
            let st = loop {
                let st = queue::job_status(store.pool(), id)?
                    .with_context(|| format!("no ingest job {id}"))?;
                if !wait || matches!(st.status.as_str(), "completed" | "cancelled") {
                    break st;
                }
                eprintln!(
                    "job {id}: {}/{} items finished ({} failed), {} faces",
                    st.done + st.failed,
                    st.items,
                    st.failed,
                    st.faces
                );
                std::thread::sleep(Duration::from_secs(2));
            };
            if json {
                let mut v = serde_json::to_value(&st)?;
                v["failures"] = serde_json::to_value(queue::failures(store.pool(), id, 1000)?)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "job {id} {}: {} items, {} done ({} already stored), {} failed, {} faces; \
                     {} images, videos, members and rows read ({} already stored, {} failed)",
                    st.status,
                    st.items,
                    st.done,
                    st.known,
                    st.failed,
                    st.faces,
                    st.units,
                    st.units_known,
                    st.units_failed
                );
                for f in queue::failures(store.pool(), id, 20)? {
                    println!("  {} {}: {}: {}", f.severity, f.location, f.code, f.message);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Stats { config, json } => {
            let store = config.open()?;
            let v = json!({
                "backend": store.backend(),
                "faces": store.face_count()?,
                "images": store.image_count()?,
                "collections": store.collections()?,
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{}: {} faces, {} images, {} collections",
                    v["backend"].as_str().unwrap_or_default(),
                    v["faces"],
                    v["images"],
                    v["collections"].as_array().map(|a| a.len()).unwrap_or(0)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::AuditExport { config, out } => {
            let (store, key) = config.open_with_audit_key()?;
            let audit = visage_cluster::audit::PgAudit::new(store.pool(), key);
            let summary = match &out {
                Some(p) => {
                    let f = std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?;
                    let mut w = std::io::BufWriter::new(f);
                    let s = audit.export_jsonl(&mut w, ..)?;
                    std::io::Write::flush(&mut w)?;
                    s
                }
                None => audit.export_jsonl(std::io::stdout().lock(), ..)?,
            };
            eprintln!(
                "exported the audit log ({summary:?}); public key {}",
                audit.public_key_hex()
            );
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::AuditVerify { config, json } => {
            let (store, key) = config.open_with_audit_key()?;
            let audit = visage_cluster::audit::PgAudit::new(store.pool(), key);
            let r = audit.verify()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                crate::gov_cmds::print_verify("the cluster's audit log", &r);
            }
            Ok(if r.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        ClusterCmd::Check {
            config,
            repair,
            json,
        } => {
            let store = config.open()?;
            let r = store.check(repair)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "checked {} faces, {} blobs, {} vector points: {} inconsistencies ({} left)",
                    r.faces_checked,
                    r.blobs_checked,
                    r.points_checked,
                    r.inconsistencies.len(),
                    r.unrepaired()
                );
                for f in r.inconsistencies.iter().take(50) {
                    println!(
                        "  {}{}: {}",
                        f.kind,
                        if f.repaired { " (repaired)" } else { "" },
                        f.detail
                    );
                }
            }
            Ok(if r.unrepaired() > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

pub(crate) fn worker(home: &Home, inf: &InferenceOptions, a: WorkerArgs) -> Result<ExitCode> {
    let store = a.config.open()?;
    let workers = if a.workers == 0 {
        visage_engine::files::cores()
    } else {
        a.workers
    };
    let per = if workers > 1 { 1 } else { inf.threads() };
    let pool = PipelinePool::load(home, &a.pack.pack, workers, per)?;
    static STOP: AtomicBool = AtomicBool::new(false);
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: finishing the item in flight (Ctrl-C again to abort)");
    });
    let mut ingest = IngestOptions::new("", NewSource::default());
    ingest.keep_originals = a.keep_originals;
    let opts = visage_cluster::worker::WorkerOptions {
        name: visage_cluster::worker::default_name(),
        batch: a.batch,
        lease_s: a.lease_s,
        exit_when_idle: a.exit_when_idle,
        poll: Duration::from_millis(500),
        ingest,
    };
    eprintln!(
        "worker {} on {} with {workers} pipelines",
        opts.name,
        store.backend()
    );
    let last = std::sync::Mutex::new(Instant::now());
    let report = visage_cluster::worker::run(&store, &pool, &opts, &STOP, &|r| {
        let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
        if l.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "worker: {} items ({} indexed, {} already stored, {} failed), {} faces",
                r.items, r.indexed, r.known, r.failed, r.faces
            );
            *l = Instant::now();
        }
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!(
            "worker done: {} items ({} indexed, {} already stored, {} failed), {} faces in {:.1} s",
            report.items,
            report.indexed,
            report.known,
            report.failed,
            report.faces,
            report.elapsed_s
        );
    }
    Ok(if STOP.load(Ordering::Relaxed) {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) fn migrate(data_dir: &Path, a: MigrateArgs) -> Result<ExitCode> {
    if !data_dir.join("gallery.sqlite").exists() && !data_dir.exists() {
        bail!("no gallery at {}", data_dir.display());
    }
    let gallery = Gallery::open(data_dir, Access::ReadOnly)?;
    let store = a.config.open()?;
    let report =
        visage_cluster::migrate::migrate(&gallery, &store, a.collection.as_deref(), &|coll, n| {
            if n % 1024 == 0 {
                eprintln!("migrate: {coll}: {n} images");
            }
        })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "migrated {} collections, {} sources, {} subjects: {} images copied ({} faces), {} already there, {} suppressions",
            report.collections,
            report.sources,
            report.subjects,
            report.images_copied,
            report.faces_copied,
            report.images_already_there,
            report.suppressions_copied
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The actor of changes made with the command line on the cluster's machines.
fn cli_actor() -> visage_governance::Actor {
    visage_governance::Actor {
        user_id: None,
        name: "cli".into(),
    }
}
