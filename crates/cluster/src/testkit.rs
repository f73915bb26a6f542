//! Real servers on loopback for the tests: PostgreSQL (Debian's package, `initdb` into a
//! temporary directory) and an S3-compatible server (moto, from PyPI, installed by
//! `scripts/setup-cluster.sh` into `.venv-cluster`).
//!
//! Each server listens on 127.0.0.1 only, on a free port, logs to a file in its temporary
//! directory, and is stopped (its process group killed, its directory removed) when its handle
//! is dropped. A small watchdog process (`sh`, in its own process group) does the same if the
//! test process dies without dropping the handle (killed by a timeout, aborted): it waits for
//! EOF on a pipe that only the test process holds.
//!
//! When a server's programs are not installed, `start` prints why on stderr and returns
//! `Ok(None)` (the tests skip), unless `VISAGE_REQUIRE_CLUSTER=1`, where that is an error.
//!
//! Environment:
//! - `VISAGE_REQUIRE_CLUSTER=1`: missing servers are errors, not skips.
//! - `VISAGE_PG_BINDIR`: PostgreSQL's bin directory (default: the highest
//!   `/usr/lib/postgresql/*/bin` with `initdb`, `pg_ctl` and `postgres`).
//! - `VISAGE_MOTO_SERVER`: the `moto_server` executable (default:
//!   `<workspace>/.venv-cluster/bin/moto_server`).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;

use crate::blobs::S3Config;

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Attempts with a fresh port when a server could not bind the one it was given (another
/// process took it between our probe and the server's bind).
const PORT_ATTEMPTS: usize = 3;

fn require_cluster() -> bool {
    std::env::var("VISAGE_REQUIRE_CLUSTER")
        .map(|v| matches!(v.trim(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// The skip-or-fail rule for a server whose programs are missing.
fn unavailable<T>(what: &str, why: &str) -> Result<Option<T>> {
    if require_cluster() {
        bail!("{what} is required (VISAGE_REQUIRE_CLUSTER=1) but not available: {why}");
    }
    eprintln!(
        "visage-cluster testkit: skipping the {what} tests: {why} (run scripts/setup-cluster.sh; \
         set VISAGE_REQUIRE_CLUSTER=1 to make this an error)"
    );
    Ok(None)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind((LOOPBACK, 0)).context("finding a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((LOOPBACK, port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return format!("(no log at {}: {e})", path.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(30)..].join("\n");
    let tail = if tail.len() > 6000 {
        &tail[tail.len() - 6000..]
    } else {
        &tail[..]
    };
    format!(
        "--- last lines of {} ---\n{}",
        path.display(),
        tail.trim_start()
    )
}

fn kill_group(pgid: u32) {
    if pgid > 1 {
        // SAFETY: plain syscall; a negative pid addresses the process group.
        unsafe {
            libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
        }
    }
}

fn temp_dir(prefix: &str) -> Result<TempDir> {
    // As root the server runs as another user, who must be able to reach the directory:
    // /tmp is world-traversable, $TMPDIR may not be.
    let base = if is_root() {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .with_context(|| format!("creating a temporary directory in {}", base.display()))
}

/// Kills a server's process group and removes its directory if the test process goes away
/// without dropping the handle. Dropped (killed) first in the normal teardown.
struct Watchdog {
    child: Child,
}

impl Watchdog {
    fn spawn(pgid: u32, dir: &Path) -> Result<Watchdog> {
        let child = Command::new("/bin/sh")
            .arg("-c")
            // `read` returns at EOF: when the test process (the only holder of the pipe's
            // write end) has exited.
            .arg(r#"read -r _ ; kill -9 -"$1" 2>/dev/null ; sleep 1 ; rm -rf "$2""#)
            .arg("visage-testkit-watchdog")
            .arg(pgid.to_string())
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the test server watchdog (/bin/sh)")?;
        Ok(Watchdog { child })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server process in its own process group, killed (group and all) on drop.
struct ServerProcess {
    child: Child,
    watchdog: Option<Watchdog>,
    reaped: Option<std::process::ExitStatus>,
    stopped: bool,
}

impl ServerProcess {
    fn spawn(mut cmd: Command, dir: &Path, log: &Path) -> Result<ServerProcess> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let mut p = ServerProcess {
            child,
            watchdog: None,
            reaped: None,
            stopped: false,
        };
        p.watchdog = Some(Watchdog::spawn(p.child.id(), dir)?);
        Ok(p)
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        if self.reaped.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Right after reaping the leader: whatever it left in its group goes too.
                kill_group(self.child.id());
                self.reaped = Some(status);
            }
        }
        self.reaped
    }

    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        if self.reaped.is_none() {
            // The leader is not reaped before its group is killed, so its pid (the group id)
            // cannot have been reused.
            kill_group(self.child.id());
            let _ = self.child.wait();
        }
        self.watchdog.take();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits for `ready` while the process runs; on exit or timeout, the log tail in the error.
/// `Ok(false)`: the process exited because its port was taken (retry with another port).
fn wait_ready(
    what: &str,
    p: &mut ServerProcess,
    log: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<bool> {
    let start = Instant::now();
    loop {
        if let Some(status) = p.exited() {
            let tail = log_tail(log);
            if tail.contains("Address already in use") || tail.contains("could not bind") {
                return Ok(false);
            }
            bail!("{what} exited during start-up ({status})\n{tail}");
        }
        if ready() {
            return Ok(true);
        }
        if start.elapsed() > timeout {
            p.stop();
            bail!(
                "{what} did not become ready within {timeout:?}\n{}",
                log_tail(log)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// A PostgreSQL server started for one test process; stopped (and its directory removed) on
/// drop.
pub struct Postgres {
    bin: PathBuf,
    /// uid, gid to run the server programs as (they refuse to run as root).
    run_as: Option<(u32, u32)>,
    port: u16,
    process: Option<ServerProcess>,
    dir: Option<TempDir>,
}

fn pg_bindir() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    if let Some(d) = std::env::var_os("VISAGE_PG_BINDIR") {
        let d = PathBuf::from(d);
        return has_all(&d).then_some(d);
    }
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: Vec<u32> = e
                .file_name()
                .to_str()?
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            let bin = e.path().join("bin");
            has_all(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn user_ids(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id")
            .args([flag, user])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// Environment variables that would redirect PostgreSQL's programs.
const PG_ENV: &[&str] = &[
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGPASSWORD",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
    "PGTZ",
    "PGCLIENTENCODING",
];

impl Postgres {
    /// `Ok(None)` with a message on stderr when the binaries are not installed (and
    /// `VISAGE_REQUIRE_CLUSTER` is not set; with it set, that is an error).
    pub fn start() -> Result<Option<Postgres>> {
        const WHAT: &str = "PostgreSQL";
        let Some(bin) = pg_bindir() else {
            let why = match std::env::var_os("VISAGE_PG_BINDIR") {
                Some(d) => format!(
                    "VISAGE_PG_BINDIR={} lacks initdb, pg_ctl or postgres",
                    Path::new(&d).display()
                ),
                None => "no /usr/lib/postgresql/*/bin with initdb, pg_ctl and postgres \
                         (Debian's postgresql package)"
                    .into(),
            };
            return unavailable(WHAT, &why);
        };
        let run_as = if is_root() {
            if !Path::new("/usr/bin/setpriv").is_file() {
                return unavailable(WHAT, "running as root and /usr/bin/setpriv is missing");
            }
            match user_ids("postgres") {
                Some(ids) => Some(ids),
                None => {
                    return unavailable(
                        WHAT,
                        "running as root (PostgreSQL refuses to) and there is no `postgres` \
                         user to run it as",
                    )
                }
            }
        } else {
            None
        };

        let dir = temp_dir("visage-pg-")?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("chown {} to the postgres user", dir.path().display()))?;
        }
        let mut pg = Postgres {
            bin,
            run_as,
            port: 0,
            process: None,
            dir: Some(dir),
        };
        let root = pg.dir().to_path_buf();
        let data = root.join("data");

        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--locale=C",
            ])
            .arg("--no-sync")
            .output()
            .with_context(|| format!("running {}", pg.bin.join("initdb").display()))?;
        if !out.status.success() {
            bail!(
                "initdb -D {} failed ({}):\n{}{}",
                data.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let log = root.join("postgres.log");
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port()?;
            let mut cmd = pg.command("postgres");
            cmd.arg("-D").arg(&data).args(["-p", &port.to_string()]);
            cmd.args(["-c", "listen_addresses=127.0.0.1"]);
            cmd.arg("-c")
                .arg(format!("unix_socket_directories={}", root.display()));
            // Tests only: durability is not needed.
            for setting in [
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
            ] {
                cmd.args(["-c", setting]);
            }
            cmd.args(["-c", "logging_collector=off"]);
            let mut process = ServerProcess::spawn(cmd, &root, &log)?;
            let isready = pg.bin.join("pg_isready");
            let ready = wait_ready(WHAT, &mut process, &log, Duration::from_secs(30), || {
                port_open(port)
                    && (!isready.is_file()
                        || Command::new(&isready)
                            .args(["-q", "-t", "2", "-h", "127.0.0.1", "-U", "postgres"])
                            .args(["-d", "postgres", "-p", &port.to_string()])
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status()
                            .map(|s| s.success())
                            .unwrap_or(false))
            })?;
            if ready {
                pg.port = port;
                pg.process = Some(process);
                return Ok(Some(pg));
            }
            drop(process);
            if attempt == PORT_ATTEMPTS {
                bail!(
                    "PostgreSQL could not bind a free port in {PORT_ATTEMPTS} attempts\n{}",
                    log_tail(&log)
                );
            }
        }
        unreachable!()
    }

    /// A fresh, empty database on this server (so tests can run side by side): its url.
    pub fn create_database(&self, name: &str) -> Result<String> {
        if name.is_empty()
            || name.len() > 63
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            bail!("invalid database name {name:?}: use 1 to 63 of [a-z0-9_]");
        }
        let admin = self.url();
        // On a thread of its own: the synchronous client runs its own runtime, which must not
        // be entered from a caller's runtime.
        std::thread::scope(|s| {
            s.spawn(|| -> Result<()> {
                let mut client = postgres::Client::connect(&admin, postgres::NoTls)
                    .with_context(|| format!("connecting to {admin}"))?;
                client
                    .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                    .with_context(|| format!("CREATE DATABASE {name} on {admin}"))
            })
            .join()
            .map_err(|_| anyhow!("CREATE DATABASE {name}: client thread panicked"))?
        })?;
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// The url of the default `postgres` database (superuser `postgres`, no password).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("directory lives until drop")
            .path()
    }

    /// One of the server's programs, as the postgres user when we are root.
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("/usr/bin/setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(exe);
                c
            }
            None => Command::new(exe),
        };
        for v in PG_ENV {
            cmd.env_remove(v);
        }
        // The postgres user may not be able to enter the test's working directory.
        if let Some(d) = &self.dir {
            cmd.current_dir(d.path());
        }
        cmd
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            if process.exited().is_none() {
                let data = self.dir().join("data");
                let _ = self
                    .command("pg_ctl")
                    .arg("stop")
                    .arg("-D")
                    .arg(&data)
                    .args(["-m", "immediate", "-w", "-t", "10"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            // Whatever is left of the process group, then reap.
            process.stop();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// S3 (moto)

/// An S3-compatible server started for one test process; stopped on drop.
pub struct S3Server {
    port: u16,
    process: Option<ServerProcess>,
    dir: Option<TempDir>,
}

fn moto_server() -> std::result::Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("VISAGE_MOTO_SERVER") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("VISAGE_MOTO_SERVER={} does not exist", p.display()))
        };
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let p = root.join(".venv-cluster/bin/moto_server");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found (moto[server] from PyPI)",
            p.display()
        ))
    }
}

/// One HTTP/1.1 request without a body to 127.0.0.1:port: (status, whole response).
fn http(port: u16, method: &str, path: &str) -> Result<(u16, String)> {
    let addr = SocketAddr::from((LOOPBACK, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .with_context(|| format!("reading the response from {addr}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|t| t.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response from {addr}: {:?}", truncate(&text)))?;
    Ok((status, text))
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(2000) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl S3Server {
    pub fn start() -> Result<Option<S3Server>> {
        const WHAT: &str = "S3 (moto_server)";
        let exe = match moto_server() {
            Ok(p) => p,
            Err(why) if std::env::var_os("VISAGE_MOTO_SERVER").is_some() => {
                bail!("{WHAT}: {why}")
            }
            Err(why) => return unavailable(WHAT, &why),
        };
        let dir = temp_dir("visage-s3-")?;
        let root = dir.path().to_path_buf();
        let log = root.join("moto.log");
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port()?;
            let mut cmd = Command::new(&exe);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            // Keep the server from picking up credentials or endpoints meant for real AWS.
            for (k, _) in std::env::vars_os() {
                if k.to_str().is_some_and(|k| k.starts_with("AWS_")) {
                    cmd.env_remove(k);
                }
            }
            let mut process = ServerProcess::spawn(cmd, &root, &log)?;
            let ready = wait_ready(WHAT, &mut process, &log, Duration::from_secs(60), || {
                port_open(port) && http(port, "GET", "/").is_ok()
            })?;
            if ready {
                return Ok(Some(S3Server {
                    port,
                    process: Some(process),
                    dir: Some(dir),
                }));
            }
            drop(process);
            if attempt == PORT_ATTEMPTS {
                bail!(
                    "{WHAT} could not bind a free port in {PORT_ATTEMPTS} attempts\n{}",
                    log_tail(&log)
                );
            }
        }
        unreachable!()
    }

    /// Creates a fresh bucket and returns a config for it.
    pub fn create_bucket(&self, name: &str) -> Result<S3Config> {
        let ok_chars = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        let ends_ok = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && name
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !(3..=63).contains(&name.len()) || !ok_chars || !ends_ok {
            bail!(
                "invalid bucket name {name:?}: 3 to 63 of [a-z0-9.-], starting and ending \
                   with a letter or digit"
            );
        }
        let (status, response) = http(self.port, "PUT", &format!("/{name}"))
            .with_context(|| format!("creating bucket {name} at {}", self.endpoint()))?;
        if status != 200 {
            bail!(
                "creating bucket {name} at {}: HTTP {status}\n{}",
                self.endpoint(),
                truncate(&response)
            );
        }
        Ok(S3Config {
            endpoint: self.endpoint(),
            bucket: name.to_string(),
            region: "us-east-1".into(),
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            prefix: String::new(),
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}
