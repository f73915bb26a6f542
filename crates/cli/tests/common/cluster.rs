//! Helpers of the cluster tests: `visage serve --config` and `visage worker` processes, the
//! `visage cluster` commands, and JSON requests to the API.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::visage;

pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `visage serve --config` on a free port; its address from the listening line.
pub fn serve(config: &Path, root: &Path) -> (Proc, String) {
    serve_with_env(config, root, &[])
}

/// [`serve`] with these environment variables set.
pub fn serve_with_env(config: &Path, root: &Path, env: &[(&str, &str)]) -> (Proc, String) {
    let mut child = visage()
        .envs(env.iter().copied())
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--ingest-root")
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start visage serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.split("listening on http://").nth(1) {
                let _ = tx.send(a.trim().to_string());
            } else {
                // Shown with a failing test's output (a panic, a refused request).
                eprintln!("[visage serve] {line}");
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("visage serve did not start");
    (Proc(child), format!("http://{addr}"))
}

pub fn worker(config: &Path, log: &Path) -> Proc {
    start_worker(config, log, true)
}

/// A worker that waits for work until it is killed (dropped).
pub fn waiting_worker(config: &Path, log: &Path) -> Proc {
    start_worker(config, log, false)
}

fn start_worker(config: &Path, log: &Path, exit_when_idle: bool) -> Proc {
    let mut cmd = visage();
    cmd.args([
        "--threads",
        "1",
        "worker",
        "--workers",
        "1",
        "--batch",
        "4",
        "--lease-s",
        "5",
    ]);
    if exit_when_idle {
        cmd.arg("--exit-when-idle");
    }
    let child = cmd
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start visage worker");
    Proc(child)
}

/// `visage cluster add-user` with the password on stdin.
pub fn add_user(config: &Path, username: &str, org: &str, role: &str, password: &str) {
    use std::io::Write;
    let mut child = visage()
        .args([
            "cluster", "add-user", username, "--org", org, "--role", role,
        ])
        .arg("--password-stdin")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "add-user: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `visage cluster ARGS --config FILE`, which must succeed: its standard output.
pub fn cluster_ok(config: &Path, args: &[&str]) -> String {
    let out = visage()
        .arg("cluster")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "visage cluster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `visage cluster add-key`: the new key.
pub fn add_key(config: &Path, name: &str, role: &str, org: &str) -> String {
    cluster_ok(
        config,
        &["add-key", "--name", name, "--role", role, "--org", org],
    )
    .trim()
    .to_string()
}

/// `visage cluster add-org`: the new organisation.
pub fn add_org(config: &Path, args: &[&str]) -> Value {
    let args: Vec<&str> = ["add-org"].iter().chain(args).copied().collect();
    serde_json::from_str(&cluster_ok(config, &args)).unwrap()
}

/// The organisation most cluster tests work in: `agency`, law enforcement, FR.
pub fn add_agency(config: &Path) -> Value {
    add_org(
        config,
        &[
            "--name",
            "agency",
            "--kind",
            "law_enforcement",
            "--jurisdiction",
            "FR",
        ],
    )
}

/// A request whose error statuses are answers, not failures: (status, JSON body).
pub fn call(method: &str, url: &str, key: &str, body: Option<&Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!("Bearer {key}");
    let mut resp = match (method, body) {
        ("GET", _) => agent.get(url).header("Authorization", &auth).call(),
        ("DELETE", _) => agent.delete(url).header("Authorization", &auth).call(),
        ("PATCH", Some(b)) => agent
            .patch(url)
            .header("Authorization", &auth)
            .content_type("application/json")
            .send(b.to_string()),
        (_, Some(b)) => agent
            .post(url)
            .header("Authorization", &auth)
            .content_type("application/json")
            .send(b.to_string()),
        (_, None) => agent.post(url).header("Authorization", &auth).send_empty(),
    }
    .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}")),
    )
}

/// A POST the policy refuses: 403 with this error code; the error body.
pub fn expect_refused(url: &str, key: &str, body: &Value, code: &str) -> Value {
    let (st, r) = call("POST", url, key, Some(body));
    assert_eq!((st, r["error"]["code"].as_str()), (403, Some(code)), "{r}");
    r
}

/// The returned matches as (image sha256, crop sha256, score): what both backends share.
pub fn matches(r: &Value) -> Vec<(String, String, f64)> {
    r["probe_faces"][0]["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits in {r}"))
        .iter()
        .map(|h| {
            (
                h["face"]["image"]["sha256"].as_str().unwrap().to_string(),
                h["face"]["crop_sha"].as_str().unwrap().to_string(),
                h["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// `visage cluster CMD --json --config FILE`: whether it succeeded, and its JSON.
pub fn cluster_json(config: &Path, cmd: &[&str]) -> (bool, Value) {
    let out = visage()
        .arg("cluster")
        .args(cmd)
        .args(["--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "visage cluster {cmd:?}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

pub fn get(url: &str, key: &str) -> Value {
    let text = ureq::get(url)
        .header("Authorization", &format!("Bearer {key}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn post(url: &str, key: &str, body: &Value) -> Value {
    let text = ureq::post(url)
        .header("Authorization", &format!("Bearer {key}"))
        .content_type("application/json")
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Writes `dir/cluster.toml` for this database and bucket, with the audit key in
/// `dir/audit.key`; vectors in Qdrant when `QDRANT_URL` is set (collections prefixed
/// `PREFIX<pid>_`), else the exact scan.
pub fn write_config(
    dir: &Path,
    postgres_url: &str,
    s3: &visage_cluster::blobs::S3Config,
    prefix: &str,
) -> std::path::PathBuf {
    let config = dir.join("cluster.toml");
    let audit_key = dir.join("audit.key");
    let mut toml = format!(
        "postgres_url = {postgres_url:?}\naudit_key_file = {audit_key:?}\n[s3]\nendpoint = {:?}\n\
         bucket = {:?}\nregion = {:?}\naccess_key_id = {:?}\nsecret_access_key = {:?}\n",
        s3.endpoint, s3.bucket, s3.region, s3.access_key_id, s3.secret_access_key
    );
    // Vectors in Qdrant when a server is given (docs/CLUSTER-QDRANT.md), else the exact scan.
    if let Ok(q) = std::env::var("QDRANT_URL") {
        toml += &format!(
            "[qdrant]\nurl = {q:?}\ncollection_prefix = \"{prefix}{}_\"\n",
            std::process::id()
        );
    } else {
        eprintln!("QDRANT_URL not set: vectors by exact scan");
    }
    std::fs::write(&config, toml).unwrap();
    config
}

/// Polls `GET /v1/ingest/jobs/{id}` until the job has ended, `completed` or `cancelled`
/// (panics after `limit`).
pub fn wait_job(server: &str, key: &str, id: i64, limit: Duration) -> Value {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let j = get(&format!("{server}/v1/ingest/jobs/{id}"), key);
        if j["status"] == "completed" || j["status"] == "cancelled" {
            return j;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} did not finish: {j}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// PostgreSQL and the S3 server started on loopback, or `None` (with a message) when not
/// installed (a failure instead under `VISAGE_REQUIRE_CLUSTER=1`).
pub fn servers() -> Option<(
    visage_cluster::testkit::Postgres,
    visage_cluster::testkit::S3Server,
)> {
    let pg = visage_cluster::testkit::Postgres::start().expect("postgres")?;
    let s3 = visage_cluster::testkit::S3Server::start().expect("s3 server")?;
    Some((pg, s3))
}

/// `visage cluster audit-export --out FILE`, which must succeed: the public key it prints.
pub fn audit_export(config: &Path, out: &Path) -> String {
    let o = visage()
        .args(["cluster", "audit-export", "--out"])
        .arg(out)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    err.rsplit("public key ").next().unwrap().trim().to_string()
}

/// `visage audit verify --file FILE --public-key KEY` must succeed (an export checked offline).
pub fn verify_offline(file: &Path, public_key: &str) {
    let out = visage()
        .args(["audit", "verify", "--file"])
        .arg(file)
        .args(["--public-key", public_key])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "offline verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
