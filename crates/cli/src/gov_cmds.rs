//! Governance commands, offline on `<data-dir>/governance.sqlite`: `admin` (organisations,
//! users, API keys), `audit` (verify, export, show) and `receipt verify`.
//!
//! Changes are recorded in the audit log with the actor `cli` (`cli:<OS user>` when the
//! environment names one), so the log shows they came from this command line rather than
//! from an authenticated API caller.

use std::io::{BufRead, BufWriter, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use visage_governance::{
    format_utc_ms, verify_with_public_key, Actor, ApiKeyInfo, Governance, NewOrg, OrgKind,
    OrgStatus, OrgUpdate, Organisation, Receipt, Role, User, VerifyReport, DB_FILE,
};

const DEFAULT_TRIAL_DAYS: u32 = 30;

#[derive(Subcommand)]
pub enum AdminCmd {
    /// Create the first organisation ("default") and the "admin" user; prints the admin
    /// password once. Does nothing when users already exist.
    Init {
        /// Jurisdiction of the default organisation (ISO 3166-1 alpha-2 or ISO 3166-2).
        #[arg(long, default_value = "US")]
        jurisdiction: String,
    },
    /// Organisations (tenants).
    #[command(subcommand)]
    Org(OrgCmd),
    /// User accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// API keys.
    #[command(subcommand)]
    Key(KeyCmd),
}

#[derive(Subcommand)]
pub enum OrgCmd {
    /// Create an organisation.
    Create {
        name: String,
        /// law_enforcement, government, private or research.
        #[arg(long)]
        kind: String,
        /// ISO 3166-1 alpha-2 or ISO 3166-2 code, e.g. FR, US-CA.
        #[arg(long)]
        jurisdiction: String,
        /// trial, active or suspended.
        #[arg(long, default_value = "active")]
        status: String,
        /// Length of a trial, in days from now (trial status only; default 30).
        #[arg(long)]
        trial_days: Option<u32>,
        /// Searches allowed per calendar month (default: unlimited).
        #[arg(long)]
        search_quota: Option<u64>,
    },
    /// List organisations.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change an organisation's status (trial, active, suspended).
    SetStatus {
        name: String,
        status: String,
        /// With `trial`: the trial ends this many days from now.
        #[arg(long)]
        trial_days: Option<u32>,
    },
}

#[derive(Subcommand)]
pub enum UserCmd {
    /// Create a user; prints a generated password once (or reads one from stdin).
    Create {
        username: String,
        /// Name of the user's organisation.
        #[arg(long)]
        org: String,
        /// admin, investigator, auditor or compliance.
        #[arg(long)]
        role: String,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: their password and API keys stop working.
    Disable { username: String },
    /// Enable a disabled user again.
    Enable { username: String },
}

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Create an API key for a user; prints the secret once.
    Create {
        /// Owner of the key.
        #[arg(long)]
        user: String,
        /// A label for the key (default: "<user> key").
        #[arg(long)]
        name: Option<String>,
        /// The key's role (default: the user's; only an admin's key may take another role).
        #[arg(long)]
        role: Option<String>,
    },
    /// List API keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key by id.
    Revoke { key_id: String },
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Verify the hash chain and the signed checkpoints. Exit 0: intact; 1: tampering found.
    Verify(AuditVerifyArgs),
    /// Write the log (records and checkpoints) as JSON Lines, for offline verification.
    Export {
        /// Output file (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// First seq to export (default: 1).
        #[arg(long, value_name = "SEQ")]
        from: Option<u64>,
        /// Last seq to export (default: the last record).
        #[arg(long, value_name = "SEQ")]
        to: Option<u64>,
    },
    /// The last records, one line each.
    Show {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Print this installation's public key (hex), for offline verification by auditors.
    PublicKey,
}

#[derive(Args)]
pub struct AuditVerifyArgs {
    /// Verify this export (from `visage audit export`) instead of the database; needs
    /// --public-key and no data directory.
    #[arg(long, value_name = "EXPORT.jsonl", requires = "public_key")]
    file: Option<PathBuf>,
    /// The installation's public key (hex), obtained from a trusted channel.
    #[arg(long, value_name = "HEX", requires = "file")]
    public_key: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum ReceiptCmd {
    /// Verify a receipt's signature; when --data-dir holds a governance database, also that
    /// this installation issued it. Exit 0: valid; 1: not valid.
    Verify {
        /// Receipt JSON file (`-` for stdin).
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// The actor recorded for changes made from this command line.
pub(crate) fn cli_actor() -> Actor {
    let os_user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .ok()
        .filter(|u| !u.is_empty() && u.len() <= 64 && !u.chars().any(char::is_control));
    Actor {
        user_id: None,
        name: match os_user {
            Some(u) => format!("cli:{u}"),
            None => "cli".into(),
        },
    }
}

/// Opens the governance store of `dir`, refusing to create one (only `admin init` does).
fn open_existing(dir: &Path) -> Result<Governance> {
    if !dir.join(DB_FILE).is_file() {
        bail!(
            "no governance database in {} (run `visage admin init --data-dir {}` first)",
            dir.display(),
            dir.display()
        );
    }
    Ok(Governance::open(dir)?)
}

fn parse_kind(s: &str) -> Result<OrgKind> {
    Ok(s.parse::<OrgKind>()?)
}

fn parse_status(s: &str) -> Result<OrgStatus> {
    Ok(s.parse::<OrgStatus>()?)
}

fn parse_role(s: &str) -> Result<Role> {
    Ok(s.parse::<Role>()?)
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn fmt_s(unix_s: i64) -> String {
    format_utc_ms(unix_s.saturating_mul(1000))
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn user_by_name(gov: &Governance, username: &str) -> Result<User> {
    gov.list_users(None)?
        .into_iter()
        .find(|u| u.username == username)
        .with_context(|| format!("no user named '{username}'"))
}

fn org_names(gov: &Governance) -> Result<std::collections::HashMap<i64, String>> {
    Ok(gov
        .list_orgs()?
        .into_iter()
        .map(|o| (o.id, o.name))
        .collect())
}

/// A random password of `len` characters from an alphabet without look-alikes, from the OS
/// random source.
pub(crate) fn random_password(len: usize) -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let limit = 256 - 256 % ALPHABET.len();
    let mut urandom = std::fs::File::open("/dev/urandom")
        .context("no OS random source (/dev/urandom); use --password-stdin")?;
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut buf = [0u8; 64];
        urandom
            .read_exact(&mut buf)
            .context("reading /dev/urandom")?;
        for b in buf {
            // Rejection sampling keeps the distribution uniform.
            if (b as usize) < limit && out.len() < len {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

pub(crate) fn read_password_stdin() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let pw = line.trim_end_matches(['\n', '\r']).to_string();
    if pw.is_empty() {
        bail!("no password on stdin");
    }
    Ok(pw)
}

// ---- admin ---------------------------------------------------------------------------------

pub fn admin(dir: &Path, cmd: AdminCmd) -> Result<ExitCode> {
    match cmd {
        AdminCmd::Init { jurisdiction } => init(dir, &jurisdiction),
        AdminCmd::Org(c) => org(dir, c),
        AdminCmd::User(c) => user(dir, c),
        AdminCmd::Key(c) => key(dir, c),
    }
}

fn init(dir: &Path, jurisdiction: &str) -> Result<ExitCode> {
    let gov = Governance::open(dir)?;
    match gov.init_admin(jurisdiction)? {
        Some(a) => {
            println!(
                "initialised governance in {}: organisation '{}' ({}, {}), user '{}' (admin)",
                dir.display(),
                a.org.name,
                a.org.kind,
                a.org.jurisdiction,
                a.user.username
            );
            println!("username: {}", a.user.username);
            println!("password: {}", a.password);
            println!("This password is shown only once: store it now.");
            println!("audit public key: {}", gov.public_key_hex());
        }
        None => {
            println!(
                "governance in {} is already initialised (users exist); nothing changed",
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn org_line(o: &Organisation) -> String {
    let mut s = format!(
        "{:<4} {:<24} {:<16} {:<8} {:<10}",
        o.id,
        o.name,
        o.kind.as_str(),
        o.jurisdiction,
        o.status.as_str()
    );
    if let (OrgStatus::Trial, Some(t)) = (o.status, o.trial_expires_at) {
        s.push_str(&format!(" trial until {}", fmt_s(t)));
    }
    match o.search_quota {
        Some(q) => s.push_str(&format!(" quota {q}/month")),
        None => s.push_str(" quota unlimited"),
    }
    s
}

fn org(dir: &Path, cmd: OrgCmd) -> Result<ExitCode> {
    let gov = open_existing(dir)?;
    let by = cli_actor();
    match cmd {
        OrgCmd::Create {
            name,
            kind,
            jurisdiction,
            status,
            trial_days,
            search_quota,
        } => {
            let kind = parse_kind(&kind)?;
            let status = parse_status(&status)?;
            let trial_expires_at = match (status, trial_days) {
                (OrgStatus::Trial, d) => {
                    Some(now_s() + i64::from(d.unwrap_or(DEFAULT_TRIAL_DAYS)) * 86_400)
                }
                (_, Some(_)) => bail!("--trial-days applies only to --status trial"),
                (_, None) => None,
            };
            let o = gov.create_org(
                &by,
                &NewOrg {
                    name,
                    kind,
                    jurisdiction,
                    status,
                    trial_expires_at,
                    search_quota,
                },
            )?;
            println!("created organisation: {}", org_line(&o));
        }
        OrgCmd::List { json } => {
            let orgs = gov.list_orgs()?;
            if json {
                print_json(&orgs)?;
            } else {
                println!(
                    "{:<4} {:<24} {:<16} {:<8} {:<10}",
                    "id", "name", "kind", "juris.", "status"
                );
                for o in &orgs {
                    println!("{}", org_line(o));
                }
            }
        }
        OrgCmd::SetStatus {
            name,
            status,
            trial_days,
        } => {
            let status = parse_status(&status)?;
            let o = gov.get_org_by_name(&name)?;
            let mut update = OrgUpdate {
                status: Some(status),
                ..Default::default()
            };
            match (status, trial_days) {
                (OrgStatus::Trial, Some(d)) => {
                    update.trial_expires_at = Some(Some(now_s() + i64::from(d) * 86_400))
                }
                (OrgStatus::Trial, None) if o.trial_expires_at.is_none() => {
                    update.trial_expires_at =
                        Some(Some(now_s() + i64::from(DEFAULT_TRIAL_DAYS) * 86_400))
                }
                (OrgStatus::Trial, None) => {}
                (_, Some(_)) => bail!("--trial-days applies only to status trial"),
                (_, None) => {}
            }
            let o = gov.update_org(&by, o.id, &update)?;
            println!("updated organisation: {}", org_line(&o));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn user(dir: &Path, cmd: UserCmd) -> Result<ExitCode> {
    let gov = open_existing(dir)?;
    let by = cli_actor();
    match cmd {
        UserCmd::Create {
            username,
            org,
            role,
            password_stdin,
        } => {
            let role = parse_role(&role)?;
            let o = gov.get_org_by_name(&org)?;
            let (password, generated) = if password_stdin {
                (read_password_stdin()?, false)
            } else {
                (random_password(20)?, true)
            };
            let u = gov.create_user(&by, o.id, &username, role, Some(&password))?;
            println!(
                "created user '{}' (id {}, {}) in organisation '{}'",
                u.username, u.id, u.role, o.name
            );
            if generated {
                println!("password: {password}");
                println!("This password is shown only once: store it now.");
            }
        }
        UserCmd::List { json } => {
            let users = gov.list_users(None)?;
            let orgs = org_names(&gov)?;
            if json {
                let rows: Vec<_> = users
                    .iter()
                    .map(|u| {
                        let mut v = serde_json::to_value(u).unwrap_or_default();
                        v["org"] = json!(orgs.get(&u.org_id));
                        v
                    })
                    .collect();
                print_json(&rows)?;
            } else {
                println!(
                    "{:<4} {:<24} {:<24} {:<13} {:<9} created",
                    "id", "username", "organisation", "role", "state"
                );
                for u in &users {
                    println!(
                        "{:<4} {:<24} {:<24} {:<13} {:<9} {}",
                        u.id,
                        u.username,
                        orgs.get(&u.org_id).map_or("?", String::as_str),
                        u.role.as_str(),
                        if u.disabled { "disabled" } else { "enabled" },
                        fmt_s(u.created_at)
                    );
                }
            }
        }
        UserCmd::Disable { username } => {
            let u = user_by_name(&gov, &username)?;
            gov.set_user_disabled(&by, u.id, true)?;
            println!("disabled user '{username}': their password and API keys no longer work");
        }
        UserCmd::Enable { username } => {
            let u = user_by_name(&gov, &username)?;
            gov.set_user_disabled(&by, u.id, false)?;
            println!("enabled user '{username}'");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn key_line(k: &ApiKeyInfo, users: &std::collections::HashMap<i64, String>) -> String {
    format!(
        "{:<16} {:<20} {:<13} {:<24} {} {}",
        k.id,
        users.get(&k.user_id).map_or("?", String::as_str),
        k.role.as_str(),
        k.name,
        fmt_s(k.created_at),
        match k.revoked_at {
            Some(t) => format!("revoked {}", fmt_s(t)),
            None => "active".into(),
        }
    )
}

fn key(dir: &Path, cmd: KeyCmd) -> Result<ExitCode> {
    let gov = open_existing(dir)?;
    let by = cli_actor();
    let usernames = || -> Result<std::collections::HashMap<i64, String>> {
        Ok(gov
            .list_users(None)?
            .into_iter()
            .map(|u| (u.id, u.username))
            .collect())
    };
    match cmd {
        KeyCmd::Create { user, name, role } => {
            let role = role.as_deref().map(parse_role).transpose()?;
            let u = user_by_name(&gov, &user)?;
            if u.disabled {
                bail!("user '{}' is disabled", u.username);
            }
            let name = name.unwrap_or_else(|| format!("{} key", u.username));
            let k = gov.create_api_key(&by, u.id, &name, role)?;
            println!(
                "created API key {} for '{}' (role {}, name '{}')",
                k.info.id, u.username, k.info.role, k.info.name
            );
            println!("secret: {}", k.secret);
            println!("This secret is shown only once: store it now.");
        }
        KeyCmd::List { json } => {
            let keys = gov.list_api_keys(None)?;
            let users = usernames()?;
            if json {
                let rows: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        let mut v = serde_json::to_value(k).unwrap_or_default();
                        v["username"] = json!(users.get(&k.user_id));
                        v
                    })
                    .collect();
                print_json(&rows)?;
            } else {
                println!(
                    "{:<16} {:<20} {:<13} {:<24} {:<23} state",
                    "id", "user", "role", "name", "created"
                );
                for k in &keys {
                    println!("{}", key_line(k, &users));
                }
            }
        }
        KeyCmd::Revoke { key_id } => {
            let k = gov.revoke_api_key(&by, &key_id)?;
            println!("revoked API key {}", key_line(&k, &usernames()?));
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---- audit ---------------------------------------------------------------------------------

pub fn audit(dir: &Path, cmd: AuditCmd) -> Result<ExitCode> {
    match cmd {
        AuditCmd::Verify(a) => audit_verify(dir, a),
        AuditCmd::Export { out, from, to } => {
            let gov = open_existing(dir)?;
            let range = from.unwrap_or(1)..=to.unwrap_or(u64::MAX);
            if range.start() > range.end() {
                bail!("--from must not be after --to");
            }
            // Sign the head first when the export reaches it, so that an offline check
            // authenticates every exported record, not only those up to the last periodic
            // checkpoint.
            let head = gov.audit_head()?.map_or(0, |h| h.0);
            if *range.end() >= head {
                gov.checkpoint()?;
            }
            let summary = match &out {
                Some(path) => {
                    let f = std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut w = BufWriter::new(f);
                    let s = gov.export_jsonl(&mut w, range)?;
                    let f = w
                        .into_inner()
                        .map_err(|e| e.into_error())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    // Sync regular files only (not /dev/stdout, pipes...).
                    if f.metadata().is_ok_and(|m| m.is_file()) {
                        f.sync_all()
                            .with_context(|| format!("cannot write {}", path.display()))?;
                    }
                    s
                }
                None => gov.export_jsonl(BufWriter::new(std::io::stdout().lock()), range)?,
            };
            eprintln!(
                "exported records {}..={} ({} records, {} checkpoints){}",
                summary.first_seq,
                summary.last_seq,
                summary.records,
                summary.checkpoints,
                out.as_ref()
                    .map_or(String::new(), |p| format!(" to {}", p.display()))
            );
            eprintln!(
                "verify offline with: visage audit verify --file EXPORT.jsonl --public-key {}",
                gov.public_key_hex()
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Show { limit, json } => {
            let gov = open_existing(dir)?;
            let head = gov.audit_head()?.map_or(0, |h| h.0);
            let first = head.saturating_sub(limit as u64) + 1;
            let recs = if limit == 0 || head == 0 {
                Vec::new()
            } else {
                gov.audit_records(first..=head, limit)?
            };
            if json {
                print_json(&recs)?;
            } else {
                for r in &recs {
                    let mut line = format!(
                        "{:>6} {} {:<16} {:<16} {}",
                        r.seq,
                        format_utc_ms(r.ts),
                        r.actor,
                        r.action,
                        if r.allowed { "allowed" } else { "DENIED" },
                    );
                    if !r.rule.is_empty() {
                        line.push_str(&format!(" rule={}", r.rule));
                    }
                    if let Some(o) = r.org_id {
                        line.push_str(&format!(" org={o}"));
                    }
                    if let Some(c) = r.case_id {
                        line.push_str(&format!(" case={c}"));
                    }
                    if !r.object_ids.is_empty() {
                        line.push_str(&format!(" objects={}", r.object_ids.join(",")));
                    }
                    if let Some(n) = r.result_count {
                        line.push_str(&format!(" results={n}"));
                    }
                    if !r.reason.is_empty() {
                        line.push_str(&format!(" reason={:?}", r.reason));
                    }
                    println!("{line}");
                }
                if recs.is_empty() {
                    eprintln!("the audit log is empty");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::PublicKey => {
            println!("{}", open_existing(dir)?.public_key_hex());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn audit_verify(dir: &Path, a: AuditVerifyArgs) -> Result<ExitCode> {
    let (report, what) = match (&a.file, &a.public_key) {
        (Some(file), Some(key)) => {
            let f = std::fs::File::open(file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let r = verify_with_public_key(std::io::BufReader::new(f), key)
                .with_context(|| format!("verifying {}", file.display()))?;
            (r, format!("audit export {}", file.display()))
        }
        (None, None) => {
            let gov = open_existing(dir)?;
            (gov.verify()?, format!("audit log in {}", dir.display()))
        }
        _ => bail!("--file and --public-key go together"),
    };
    if a.json {
        print_json(&report)?;
    } else {
        print_verify(&what, &report);
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(crate) fn print_verify(what: &str, r: &VerifyReport) {
    match &r.first_bad {
        None => {
            println!(
                "{what}: OK: {} records, {} checkpoints",
                r.records, r.checkpoints
            );
            if let (Some(seq), Some(hash)) = (r.head_seq, &r.head_hash) {
                println!("  head: seq {seq}, hash {hash}");
            }
            match r.last_checkpoint {
                Some(c) => println!(
                    "  last signed checkpoint: seq {c}; {} record(s) after it not yet signed",
                    r.unsigned_tail
                ),
                None if r.records > 0 => println!(
                    "  no signed checkpoint yet; {} record(s) consistent but unsigned",
                    r.unsigned_tail
                ),
                None => {}
            }
        }
        Some(b) => {
            println!(
                "{what}: TAMPERING FOUND at seq {} ({}): {}",
                b.seq,
                b.kind.as_str(),
                b.message
            );
            println!(
                "  {} records, {} checkpoints examined; chain intact up to seq {}",
                r.records,
                r.checkpoints,
                r.head_seq.map_or("none".to_string(), |s| s.to_string())
            );
        }
    }
}

// ---- receipts ------------------------------------------------------------------------------

pub fn receipt(dir: &Path, cmd: ReceiptCmd) -> Result<ExitCode> {
    match cmd {
        ReceiptCmd::Verify { file, json } => receipt_verify(dir, &file, json),
    }
}

fn receipt_verify(dir: &Path, file: &Path, json: bool) -> Result<ExitCode> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        if std::io::stdin().is_terminal() {
            eprintln!("reading the receipt from stdin");
        }
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    // Accept a bare receipt or an object carrying one under "receipt" (API answers).
    let inner = match value.get("receipt") {
        Some(r) if r.is_object() => r.clone(),
        _ => value,
    };
    let receipt: Receipt = serde_json::from_value(inner)
        .with_context(|| format!("{} is not a visage receipt", file.display()))?;
    let local = dir.join(DB_FILE).is_file();
    let result = if local {
        Governance::open(dir)?.verify_receipt(&receipt)
    } else {
        receipt.verify()
    };
    if json {
        print_json(&json!({
            "ok": result.is_ok(),
            "id": receipt.id,
            "kind": receipt.kind,
            "issued_at": receipt.issued_at,
            "public_key_hex": receipt.public_key_hex,
            "checked_installation": local,
            "error": result.as_ref().err().map(|e| json!({"code": e.code(), "message": e.to_string()})),
        }))?;
    }
    match result {
        Ok(()) => {
            if !json {
                println!(
                    "receipt {} ({}, issued {}): signature valid{}",
                    receipt.id,
                    receipt.kind,
                    format_utc_ms(receipt.issued_at),
                    if local {
                        format!(", issued by this installation ({})", dir.display())
                    } else {
                        format!(" for public key {}", receipt.public_key_hex)
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if !json {
                println!("receipt {}: NOT VALID: {e} [{}]", receipt.id, e.code());
            }
            Ok(ExitCode::from(1))
        }
    }
}
