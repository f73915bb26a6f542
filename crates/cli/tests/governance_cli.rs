//! `visage admin`, `visage audit` and `visage receipt`: offline governance administration on
//! `<data-dir>/governance.sqlite`. Needs no models and no data.

mod common;

use common::visage;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Output;
use visage_governance::{Actor, Governance, DB_FILE};

/// Runs `visage ARGS --data-dir DATA` (from inside DATA's parent, so no default data
/// directory is touched).
fn run(args: &[&str], data: &Path) -> Output {
    visage()
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .current_dir(data.parent().unwrap())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and asserts success; returns stdout.
fn ok(args: &[&str], data: &Path) -> String {
    let o = run(args, data);
    assert!(
        o.status.success(),
        "visage {args:?} failed ({:?}): {}{}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs and asserts a failure with exit code `code`; returns stdout + stderr.
fn fails(args: &[&str], data: &Path, code: i32) -> String {
    let o = run(args, data);
    assert_eq!(
        o.status.code(),
        Some(code),
        "visage {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    format!("{}{}", stdout(&o), stderr(&o))
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("bad JSON ({e}): {s}"))
}

/// A fresh data directory (inside its own temporary directory).
fn data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("data");
    (t, d)
}

/// The value after `label: ` on its own line of `text`.
fn field(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{label}: ")))
        .unwrap_or_else(|| panic!("no '{label}:' line in: {text}"))
        .trim()
        .to_string()
}

#[test]
fn init_prints_password_once_and_is_idempotent() {
    let (_t, d) = data_dir();
    // Nothing works before init, with a clear message.
    let msg = fails(&["admin", "org", "list"], &d, 1);
    assert!(msg.contains("admin init"), "{msg}");

    let out = ok(&["admin", "init", "--jurisdiction", "gb-eng"], &d);
    assert_eq!(field(&out, "username"), "admin");
    let password = field(&out, "password");
    assert_eq!(password.len(), 20, "{out}");
    assert!(d.join(DB_FILE).is_file());
    // The password works.
    let gov = Governance::open(&d).unwrap();
    let p = gov.authenticate_password("admin", &password).unwrap();
    assert_eq!(p.org.jurisdiction, "GB-ENG");

    let again = ok(&["admin", "init"], &d);
    assert!(again.contains("already initialised"), "{again}");
    assert!(!again.contains(&password) && !again.contains("password:"));

    let (_t2, d2) = data_dir();
    let msg = fails(&["admin", "init", "--jurisdiction", "Narnia"], &d2, 1);
    assert!(msg.contains("ISO 3166"), "{msg}");
}

#[test]
fn orgs_users_and_keys() {
    let (_t, d) = data_dir();
    ok(&["admin", "init"], &d);
    let out = ok(
        &[
            "admin",
            "org",
            "create",
            "acme",
            "--kind",
            "private",
            "--jurisdiction",
            "fr",
            "--status",
            "trial",
            "--trial-days",
            "10",
            "--search-quota",
            "500",
        ],
        &d,
    );
    assert!(out.contains("acme"), "{out}");
    // Clear errors.
    let m = fails(
        &[
            "admin",
            "org",
            "create",
            "x",
            "--kind",
            "pirate",
            "--jurisdiction",
            "FR",
        ],
        &d,
        1,
    );
    assert!(m.contains("unknown OrgKind 'pirate'"), "{m}");
    let m = fails(
        &[
            "admin",
            "org",
            "create",
            "x",
            "--kind",
            "private",
            "--jurisdiction",
            "France",
        ],
        &d,
        1,
    );
    assert!(m.contains("jurisdiction 'France'"), "{m}");
    let m = fails(
        &[
            "admin",
            "org",
            "create",
            "acme",
            "--kind",
            "private",
            "--jurisdiction",
            "FR",
        ],
        &d,
        1,
    );
    assert!(m.contains("already exists"), "{m}");

    let orgs = json_of(&ok(&["admin", "org", "list", "--json"], &d));
    let acme = orgs
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "acme")
        .unwrap()
        .clone();
    assert_eq!(
        (&acme["kind"], &acme["jurisdiction"], &acme["status"]),
        (&json!("private"), &json!("FR"), &json!("trial"))
    );
    assert_eq!(acme["search_quota"], 500);
    assert!(acme["trial_expires_at"].as_i64().unwrap() > 0);
    ok(&["admin", "org", "set-status", "acme", "suspended"], &d);
    let orgs = json_of(&ok(&["admin", "org", "list", "--json"], &d));
    assert_eq!(orgs[1]["status"], "suspended");
    fails(&["admin", "org", "set-status", "nope", "active"], &d, 1);
    ok(&["admin", "org", "set-status", "acme", "active"], &d);

    // Users: generated password, or one from stdin.
    let out = ok(
        &[
            "admin",
            "user",
            "create",
            "alice",
            "--org",
            "acme",
            "--role",
            "investigator",
        ],
        &d,
    );
    let alice_pw = field(&out, "password");
    let m = fails(
        &[
            "admin", "user", "create", "bob", "--org", "nope", "--role", "auditor",
        ],
        &d,
        1,
    );
    assert!(m.contains("no organisation named 'nope'"), "{m}");
    let m = fails(
        &[
            "admin", "user", "create", "bob", "--org", "acme", "--role", "boss",
        ],
        &d,
        1,
    );
    assert!(m.contains("unknown Role 'boss'"), "{m}");
    let mut child = visage()
        .args([
            "admin", "user", "create", "bob", "--org", "acme", "--role", "auditor",
        ])
        .args(["--password-stdin", "--data-dir"])
        .arg(&d)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"correct horse battery staple\n").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert!(!stdout(&o).contains("password:"), "{}", stdout(&o));
    let gov = Governance::open(&d).unwrap();
    assert!(gov.authenticate_password("alice", &alice_pw).is_ok());
    assert!(gov
        .authenticate_password("bob", "correct horse battery staple")
        .is_ok());

    let users = json_of(&ok(&["admin", "user", "list", "--json"], &d));
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "alice", "bob"]);
    assert_eq!(users[1]["org"], "acme");
    assert!(!ok(&["admin", "user", "list"], &d).contains(&alice_pw));

    // Keys: the secret is printed once, never listed.
    let out = ok(
        &[
            "admin", "key", "create", "--user", "alice", "--name", "laptop",
        ],
        &d,
    );
    let secret = field(&out, "secret");
    assert!(secret.starts_with("vsk_"), "{out}");
    let key_id = secret[4..20].to_string();
    assert_eq!(gov.authenticate_key(&secret).unwrap().username, "alice");
    let m = fails(
        &[
            "admin", "key", "create", "--user", "alice", "--role", "admin",
        ],
        &d,
        1,
    );
    assert!(m.contains("cannot hold"), "{m}");
    fails(&["admin", "key", "create", "--user", "nobody"], &d, 1);

    let text = ok(&["admin", "key", "list"], &d);
    let js = ok(&["admin", "key", "list", "--json"], &d);
    let secret_part = &secret[21..];
    for listing in [&text, &js] {
        assert!(listing.contains(&key_id), "{listing}");
        assert!(!listing.contains(secret_part), "secret listed: {listing}");
    }
    let keys = json_of(&js);
    assert_eq!(keys[0]["username"], "alice");
    assert_eq!(keys[0]["name"], "laptop");
    assert!(keys[0]["revoked_at"].is_null());
    assert!(keys[0].get("secret").is_none());

    ok(&["admin", "key", "revoke", &key_id], &d);
    let keys = json_of(&ok(&["admin", "key", "list", "--json"], &d));
    assert!(keys[0]["revoked_at"].as_i64().is_some());
    assert!(gov.authenticate_key(&secret).is_err());
    fails(&["admin", "key", "revoke", "0123456789abcdef"], &d, 1);

    ok(&["admin", "user", "disable", "bob"], &d);
    assert!(gov
        .authenticate_password("bob", "correct horse battery staple")
        .is_err());
    fails(&["admin", "user", "disable", "nobody"], &d, 1);

    // Every change is in the audit log, attributed to the command line.
    let recs = json_of(&ok(&["audit", "show", "--limit", "100", "--json"], &d));
    let recs = recs.as_array().unwrap();
    let actions: Vec<&str> = recs.iter().map(|r| r["action"].as_str().unwrap()).collect();
    for a in [
        "init_admin",
        "create_org",
        "update_org",
        "create_user",
        "create_api_key",
        "revoke_api_key",
        "disable_user",
    ] {
        assert!(actions.contains(&a), "{a} not in {actions:?}");
    }
    assert!(recs
        .iter()
        .filter(|r| r["action"] != "init_admin")
        .all(|r| r["actor"].as_str().unwrap().starts_with("cli")));
    let shown = ok(&["audit", "show", "--limit", "2"], &d);
    assert_eq!(shown.lines().count(), 2, "{shown}");
    assert!(shown.contains("disable_user"), "{shown}");
}

#[test]
fn audit_verify_finds_tampering_at_its_seq() {
    let (_t, d) = data_dir();
    ok(&["admin", "init"], &d);
    for i in 0..4 {
        ok(
            &[
                "admin",
                "org",
                "create",
                &format!("org{i}"),
                "--kind",
                "research",
                "--jurisdiction",
                "DE",
            ],
            &d,
        );
    }
    let out = ok(&["audit", "verify"], &d);
    assert!(out.contains("OK: 5 records"), "{out}");
    let r = json_of(&ok(&["audit", "verify", "--json"], &d));
    assert_eq!(
        (r["ok"].clone(), r["records"].clone()),
        (json!(true), json!(5))
    );

    {
        let conn = rusqlite::Connection::open(d.join(DB_FILE)).unwrap();
        conn.execute_batch("DROP TRIGGER audit_no_update;").unwrap();
        let n = conn
            .execute("UPDATE audit SET actor = 'mallory' WHERE seq = 3", [])
            .unwrap();
        assert_eq!(n, 1);
    }
    let out = fails(&["audit", "verify"], &d, 1);
    assert!(out.contains("TAMPERING FOUND at seq 3 (altered)"), "{out}");
    assert!(out.contains("5 records"), "{out}");
    let o = run(&["audit", "verify", "--json"], &d);
    assert_eq!(o.status.code(), Some(1));
    let r = json_of(&stdout(&o));
    assert_eq!(r["ok"], false);
    assert_eq!(r["first_bad"]["seq"], 3);
    assert_eq!(r["first_bad"]["kind"], "altered");
}

#[test]
fn export_verifies_offline_and_an_edited_export_fails() {
    let (t, d) = data_dir();
    ok(&["admin", "init"], &d);
    ok(
        &[
            "admin",
            "org",
            "create",
            "acme",
            "--kind",
            "private",
            "--jurisdiction",
            "US-CA",
        ],
        &d,
    );
    ok(
        &[
            "admin",
            "user",
            "create",
            "carol",
            "--org",
            "acme",
            "--role",
            "compliance",
        ],
        &d,
    );
    let key = ok(&["audit", "public-key"], &d).trim().to_string();
    assert_eq!(key.len(), 64);
    let export = t.path().join("audit.jsonl");
    let o = run(&["audit", "export", "--out", export.to_str().unwrap()], &d);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&key), "{}", stderr(&o));
    // Stdout export is the same content (but for the export time).
    let stdout_export = ok(&["audit", "export"], &d);
    assert_eq!(stdout_export.lines().count(), {
        let text = std::fs::read_to_string(&export).unwrap();
        text.lines().count()
    });
    let text = std::fs::read_to_string(&export).unwrap();
    let lines: Vec<Value> = text.lines().map(json_of).collect();
    assert_eq!(lines[0]["type"], "header");
    assert_eq!(
        lines.iter().filter(|l| l["type"] == "record").count(),
        3,
        "{text}"
    );
    // The export signs the head, so every record is authenticated.
    assert!(lines
        .iter()
        .any(|l| l["type"] == "checkpoint" && l["seq"] == 3));

    // Offline: no data directory needed (run from an empty folder).
    let empty = tempfile::tempdir().unwrap();
    let offline = |file: &Path, json: bool| {
        let mut c = visage();
        c.args(["audit", "verify", "--file"])
            .arg(file)
            .args(["--public-key", &key])
            .current_dir(empty.path());
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let o = offline(&export, false);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("OK: 3 records"), "{}", stdout(&o));
    assert!(!empty.path().join("visage-data").exists());

    // A partial export verifies too.
    let part = t.path().join("part.jsonl");
    ok(
        &[
            "audit",
            "export",
            "--from",
            "2",
            "--to",
            "3",
            "--out",
            part.to_str().unwrap(),
        ],
        &d,
    );
    let o = offline(&part, true);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(json_of(&stdout(&o))["records"], 2);

    // Edit one record line: the offline check names it.
    let edited = t.path().join("edited.jsonl");
    let changed: Vec<String> = text
        .lines()
        .map(|l| {
            let mut v = json_of(l);
            if v["type"] == "record" && v["seq"] == 2 {
                v["action"] = json!("nothing_happened");
            }
            v.to_string()
        })
        .collect();
    std::fs::write(&edited, changed.join("\n") + "\n").unwrap();
    let o = offline(&edited, false);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("at seq 2"), "{}", stdout(&o));
    let o = offline(&edited, true);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(json_of(&stdout(&o))["first_bad"]["seq"], 2);

    // The wrong public key fails.
    let other = tempfile::tempdir().unwrap();
    let other_key = Governance::open(other.path()).unwrap().public_key_hex();
    let o = visage()
        .args(["audit", "verify", "--file"])
        .arg(&export)
        .args(["--public-key", &other_key])
        .current_dir(empty.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    // --file needs --public-key.
    let o = visage()
        .args(["audit", "verify", "--file"])
        .arg(&export)
        .current_dir(empty.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
}

#[test]
fn receipts_verify_and_edited_copies_fail() {
    let (t, d) = data_dir();
    let gov = Governance::open(&d).unwrap();
    let receipt = gov
        .sign_receipt(
            &Actor::system(),
            None,
            "erasure",
            json!({"faces_deleted": 3, "subject": "request 42"}),
        )
        .unwrap();
    let file = t.path().join("receipt.json");
    std::fs::write(&file, serde_json::to_string_pretty(&receipt).unwrap()).unwrap();
    let f = file.to_str().unwrap();

    // With this installation's data directory: signature and issuer check.
    let out = ok(&["receipt", "verify", f], &d);
    assert!(out.contains("signature valid"), "{out}");
    assert!(out.contains("issued by this installation"), "{out}");
    let r = json_of(&ok(&["receipt", "verify", f, "--json"], &d));
    assert_eq!(
        (r["ok"].clone(), r["checked_installation"].clone()),
        (json!(true), json!(true))
    );

    // Without a governance database: the signature alone.
    let (_t2, nowhere) = data_dir();
    let out = ok(&["receipt", "verify", f], &nowhere);
    assert!(out.contains("signature valid"), "{out}");
    assert!(
        !nowhere.exists(),
        "receipt verify must not create a data directory"
    );

    // Wrapped in an API answer.
    let wrapped = t.path().join("wrapped.json");
    std::fs::write(&wrapped, json!({"receipt": receipt}).to_string()).unwrap();
    ok(&["receipt", "verify", wrapped.to_str().unwrap()], &d);

    // An edited copy fails, with the reason.
    let mut v = serde_json::to_value(&receipt).unwrap();
    v["body"]["faces_deleted"] = json!(30);
    let edited = t.path().join("edited.json");
    std::fs::write(&edited, v.to_string()).unwrap();
    let m = fails(
        &["receipt", "verify", edited.to_str().unwrap()],
        &nowhere,
        1,
    );
    assert!(m.contains("signature does not match"), "{m}");
    let o = run(
        &["receipt", "verify", edited.to_str().unwrap(), "--json"],
        &d,
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        json_of(&stdout(&o))["error"]["code"],
        "receipt_bad_signature"
    );

    // A valid receipt from another installation is refused against this one.
    let (_t3, other) = data_dir();
    let foreign = Governance::open(&other)
        .unwrap()
        .sign_receipt(&Actor::system(), None, "opt_out", json!({}))
        .unwrap();
    let ff = t.path().join("foreign.json");
    std::fs::write(&ff, serde_json::to_string(&foreign).unwrap()).unwrap();
    ok(&["receipt", "verify", ff.to_str().unwrap()], &other);
    let m = fails(&["receipt", "verify", ff.to_str().unwrap()], &d, 1);
    assert!(m.contains("not issued by this installation"), "{m}");

    // Not a receipt at all.
    let junk = t.path().join("junk.json");
    std::fs::write(&junk, "{\"hello\": 1}").unwrap();
    let m = fails(&["receipt", "verify", junk.to_str().unwrap()], &d, 1);
    assert!(m.contains("not a visage receipt"), "{m}");
}
