//! Browser tests (web-tests/*.mjs with playwright-core and Debian's chromium): shared by the
//! server's tests (through `common`) and the CLI's cluster web test (by path).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Longest run of one browser script.
pub const NODE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Why the browser tests cannot run here, if they cannot.
pub fn browser_missing() -> Option<String> {
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("node is not installed".into());
    }
    if !Path::new(CHROMIUM).exists() {
        return Some(format!("{CHROMIUM} is missing (apt-get install chromium)"));
    }
    let pw = repo_root().join("web-tests/node_modules/playwright-core/package.json");
    if !pw.is_file() {
        return Some(
            "web-tests/node_modules/playwright-core is missing (npm ci --prefix web-tests)".into(),
        );
    }
    None
}

/// `node web-tests/<script>` in web-tests/ with the browser configured; the caller adds the
/// script's environment and runs it with [`run_node`].
pub fn node_script(script: &str) -> std::process::Command {
    let dir = repo_root().join("web-tests");
    let mut c = std::process::Command::new("node");
    c.arg(dir.join(script))
        .current_dir(dir)
        .env("VISAGE_CHROMIUM", CHROMIUM);
    c
}

/// Runs a [`node_script`] to its end, killing it after [`NODE_TIMEOUT`].
pub fn run_node(mut cmd: std::process::Command) -> std::process::ExitStatus {
    let mut child = cmd.spawn().expect("node starts");
    let t = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > NODE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} ran over {NODE_TIMEOUT:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
