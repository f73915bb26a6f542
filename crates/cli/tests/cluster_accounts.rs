//! User accounts and sessions over the cluster API (issue #7, "same API"): users made with
//! `visage cluster add-user` and over `POST /v1/users` sign in with a password for a session
//! cookie that every API process honours (sessions are in PostgreSQL); a user's keys act as
//! the user; disabling a user stops their session, keys and password at once; administrators
//! manage only their organisation's users and keys (the operator organisation's, everyone's);
//! every step is in the audit log, which never holds a password.

mod common;

use common::cluster::*;
use common::{installed, visage};
use serde_json::{json, Value};

const ANA_PASSWORD: &str = "correct horse battery staple";
const BO_PASSWORD: &str = "another long passphrase";

/// A request with a session cookie (or none): status, JSON body (null when empty), and the
/// `Set-Cookie` header if any.
fn with_cookie(
    method: &str,
    url: &str,
    cookie: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let c = cookie.map(|t| format!("visage_session={t}"));
    let resp = match method {
        "GET" => {
            let mut r = agent.get(url);
            if let Some(c) = &c {
                r = r.header("Cookie", c);
            }
            r.call()
        }
        _ => {
            let mut r = agent.post(url);
            if let Some(c) = &c {
                r = r.header("Cookie", c);
            }
            match body {
                Some(b) => r.content_type("application/json").send(b.to_string()),
                None => r.send_empty(),
            }
        }
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let set_cookie = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.body_mut().read_to_string().unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
    };
    (status, v, set_cookie)
}

/// Logs in: the session token from the cookie, and the answer.
fn login(a: &str, username: &str, password: &str) -> (String, Value) {
    let (st, me, set) = with_cookie(
        "POST",
        &format!("{a}/v1/auth/login"),
        None,
        Some(&json!({"username": username, "password": password})),
    );
    assert_eq!(st, 200, "{me}");
    let set = set.expect("a session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let token = set
        .strip_prefix("visage_session=")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    (token, me)
}

#[test]
fn accounts_and_sessions_over_the_cluster_api() {
    let Some((pg, s3)) = servers() else { return };
    if !installed("open") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let url = pg.create_database("accounts").unwrap();
    let s3cfg = s3.create_bucket("accounts").unwrap();
    let config = write_config(&root, &url, &s3cfg, "accounts");
    let toml = std::fs::read_to_string(&config).unwrap();
    // Many logins from one address in a few seconds: a limit far above them (the shared
    // limit itself: `rate_limits_are_shared_by_the_api_processes`).
    std::fs::write(
        &config,
        format!("operator_org = \"agency\"\nlogin_per_minute = 1000\n{toml}"),
    )
    .unwrap();
    add_agency(&config);
    add_org(
        &config,
        &[
            "--name",
            "press",
            "--kind",
            "private",
            "--jurisdiction",
            "DE",
        ],
    );
    let root_admin = add_key(&config, "root", "admin", "agency");
    let press_admin = add_key(&config, "press-admin", "admin", "press");
    add_user(&config, "ana", "agency", "investigator", ANA_PASSWORD);
    // A generated password is printed once, on standard output.
    let out = visage()
        .args([
            "cluster", "add-user", "boss", "--org", "agency", "--role", "admin", "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let boss_password = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(boss_password.len() >= 12, "{boss_password}");
    let (_a1, a) = serve(&config, &root);
    let (_b1, b) = serve(&config, &root);

    // ---- Sign-in ----
    for (user, pass) in [("ana", "wrong password!!"), ("nobody", ANA_PASSWORD)] {
        let (st, r, set) = with_cookie(
            "POST",
            &format!("{a}/v1/auth/login"),
            None,
            Some(&json!({"username": user, "password": pass})),
        );
        assert_eq!(
            (st, r["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
        assert!(set.is_none());
    }
    let (ana, me) = login(&a, "ana", ANA_PASSWORD);
    assert_eq!(
        (
            me["username"].as_str(),
            me["role"].as_str(),
            me["via"].as_str()
        ),
        (Some("ana"), Some("investigator"), Some("session"))
    );
    let ana_id = me["user_id"].as_i64().unwrap();
    // The session is honoured by the other API process too.
    let (st, me_b, _) = with_cookie("GET", &format!("{b}/v1/auth/me"), Some(&ana), None);
    assert_eq!(
        (st, me_b["username"].as_str()),
        (200, Some("ana")),
        "{me_b}"
    );
    let (st, _, _) = with_cookie("GET", &format!("{a}/v1/auth/me"), Some("forged"), None);
    assert_eq!(st, 401);
    // Ana works under her name: a case opened with the session is hers.
    let (st, case, _) = with_cookie(
        "POST",
        &format!("{b}/v1/cases"),
        Some(&ana),
        Some(
            &json!({"number": "2026-11", "purpose": "identify a robbery suspect",
                     "legal_basis": "warrant 7", "offence_category": "robbery"}),
        ),
    );
    assert_eq!(st, 201, "{case}");
    let (st, report, _) = with_cookie(
        "GET",
        &format!("{a}/v1/cases/{}/report", case["id"]),
        Some(&ana),
        None,
    );
    assert_eq!(st, 200, "{report}");
    assert_eq!(report["created_by_username"], "ana", "{report}");
    // ... and may not manage accounts.
    let (st, r, _) = with_cookie(
        "POST",
        &format!("{a}/v1/users"),
        Some(&ana),
        Some(&json!({"username": "x", "role": "auditor"})),
    );
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (403, Some("policy_denied"))
    );

    // ---- Users over HTTP ----
    let (boss, me) = login(&b, "boss", &boss_password);
    assert!(me["operator"].as_bool().unwrap(), "{me}");
    let (st, bo, _) = with_cookie(
        "POST",
        &format!("{a}/v1/users"),
        Some(&boss),
        Some(&json!({"username": "bo", "role": "auditor", "password": BO_PASSWORD})),
    );
    assert_eq!(st, 201, "{bo}");
    assert_eq!(
        (bo["has_password"].as_bool(), bo["disabled"].as_bool()),
        (Some(true), Some(false))
    );
    for (body, status, code) in [
        (
            json!({"username": "bo", "role": "auditor"}),
            409,
            "conflict",
        ),
        (
            json!({"username": "cy", "role": "auditor", "password": "short"}),
            400,
            "invalid",
        ),
        (
            json!({"username": "no spaces", "role": "auditor"}),
            400,
            "invalid",
        ),
        (json!({"username": "dee", "role": "king"}), 400, "invalid"),
    ] {
        let (st, r) = call("POST", &format!("{a}/v1/users"), &root_admin, Some(&body));
        assert_eq!(
            (st, r["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {r}"
        );
    }
    login(&a, "bo", BO_PASSWORD);
    // Another organisation's administrator sees and changes only its own.
    let (st, users) = call("GET", &format!("{a}/v1/users"), &press_admin, None);
    assert_eq!(
        (st, users.as_array().map(Vec::len)),
        (200, Some(0)),
        "{users}"
    );
    let (st, _) = call(
        "POST",
        &format!("{a}/v1/users/{ana_id}/disable"),
        &press_admin,
        None,
    );
    assert_eq!(st, 404);
    let (st, _) = call(
        "POST",
        &format!("{a}/v1/users"),
        &press_admin,
        Some(&json!({"username": "z", "role": "auditor", "org_id": me["org"]["id"]})),
    );
    assert_eq!(st, 404);
    let (st, r) = call(
        "POST",
        &format!("{a}/v1/users"),
        &press_admin,
        Some(&json!({"username": "editor", "role": "auditor", "password": BO_PASSWORD})),
    );
    assert_eq!(st, 201, "{r}");
    let all = get(&format!("{a}/v1/users"), &root_admin);
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["ana", "boss", "bo", "editor"],
        "the operator sees all"
    );

    // ---- A user's keys act as the user ----
    let (st, k) = call(
        "POST",
        &format!("{a}/v1/users/{ana_id}/keys"),
        &root_admin,
        Some(&json!({"name": "script"})),
    );
    assert_eq!(st, 201, "{k}");
    let ana_key = k["secret"].as_str().unwrap().to_string();
    let key_id = k["info"]["id"].as_str().unwrap().to_string();
    let me = get(&format!("{b}/v1/auth/me"), &ana_key);
    assert_eq!(
        (
            me["username"].as_str(),
            me["user_id"].as_i64(),
            me["via"].as_str()
        ),
        (Some("ana"), Some(ana_id), Some("api_key"))
    );
    let (st, r) = call(
        "POST",
        &format!("{a}/v1/users/{ana_id}/keys"),
        &root_admin,
        Some(&json!({"name": "admin-key", "role": "admin"})),
    );
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (400, Some("invalid")),
        "{r}"
    );
    let keys = get(&format!("{a}/v1/keys?user_id={ana_id}"), &root_admin);
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    assert!(keys.to_string().find("vsk_").is_none(), "no secret listed");
    let press_keys = get(&format!("{a}/v1/keys"), &press_admin);
    assert_eq!(
        press_keys.as_array().unwrap().len(),
        1,
        "only its own command-line key: {press_keys}"
    );
    let (st, _) = call(
        "DELETE",
        &format!("{a}/v1/keys/{key_id}"),
        &press_admin,
        None,
    );
    assert_eq!(st, 404);

    // ---- Disabling stops the session, the keys and the password at once ----
    let (st, u) = call(
        "POST",
        &format!("{a}/v1/users/{ana_id}/disable"),
        &root_admin,
        None,
    );
    assert_eq!((st, u["disabled"].as_bool()), (200, Some(true)));
    let (st, _, _) = with_cookie("GET", &format!("{b}/v1/auth/me"), Some(&ana), None);
    assert_eq!(st, 401);
    let (st, _) = call("GET", &format!("{b}/v1/auth/me"), &ana_key, None);
    assert_eq!(st, 401);
    let (st, _, _) = with_cookie(
        "POST",
        &format!("{a}/v1/auth/login"),
        None,
        Some(&json!({"username": "ana", "password": ANA_PASSWORD})),
    );
    assert_eq!(st, 401);
    call(
        "POST",
        &format!("{a}/v1/users/{ana_id}/enable"),
        &root_admin,
        None,
    );
    assert_eq!(get(&format!("{b}/v1/auth/me"), &ana_key)["username"], "ana");
    let (st, _, _) = with_cookie("GET", &format!("{b}/v1/auth/me"), Some(&ana), None);
    assert_eq!(st, 401, "a disabled user's sessions are gone for good");
    let (ana, _) = login(&a, "ana", ANA_PASSWORD);
    let (st, r) = call(
        "DELETE",
        &format!("{a}/v1/keys/{key_id}"),
        &root_admin,
        None,
    );
    assert_eq!((st, r["revoked_at"].is_i64()), (200, true), "{r}");
    let (st, _) = call("GET", &format!("{b}/v1/auth/me"), &ana_key, None);
    assert_eq!(st, 401);

    // ---- Logout ----
    let (st, _, set) = with_cookie("POST", &format!("{b}/v1/auth/logout"), Some(&ana), None);
    assert_eq!(st, 204);
    assert!(set.unwrap().contains("Max-Age=0"));
    let (st, _, _) = with_cookie("GET", &format!("{a}/v1/auth/me"), Some(&ana), None);
    assert_eq!(st, 401);

    // ---- The policy in force ----
    let pol = get(&format!("{a}/v1/policy"), &root_admin);
    assert!(pol["text"].as_str().unwrap().contains("default_effect"));
    assert_eq!(
        pol["sha256"],
        get(&format!("{a}/v1/health"), "")["policy_sha256"]
    );
    let (st, _, _) = with_cookie("GET", &format!("{a}/v1/policy"), Some(&boss), None);
    assert_eq!(st, 200);
    let (ana, _) = login(&a, "ana", ANA_PASSWORD);
    let (st, _, _) = with_cookie("GET", &format!("{a}/v1/policy"), Some(&ana), None);
    assert_eq!(st, 403);

    // ---- From the command line, for when nobody can sign in ----
    let users: Value = serde_json::from_str(&cluster_ok(&config, &["users", "--json"])).unwrap();
    assert_eq!(users.as_array().unwrap().len(), 4, "{users}");
    cluster_ok(&config, &["disable-user", "ana"]);
    let (st, _, _) = with_cookie("GET", &format!("{a}/v1/auth/me"), Some(&ana), None);
    assert_eq!(st, 401, "disabled from the command line");
    cluster_ok(&config, &["disable-user", "ana", "--enable"]);
    login(&b, "ana", ANA_PASSWORD);

    // ---- A suspended organisation's keys read nothing, counts included ----
    cluster_ok(
        &config,
        &["set-org-status", "--name", "press", "--status", "suspended"],
    );
    for path in ["/v1/stats", "/v1/collections", "/v1/users"] {
        let (st, r) = call("GET", &format!("{a}{path}"), &press_admin, None);
        assert_eq!(st, 403, "{path}: {r}");
    }
    assert_eq!(get(&format!("{a}/v1/stats"), &root_admin)["faces"], 0);

    // ---- The log ----
    let log = root.join("audit.jsonl");
    let key = audit_export(&config, &log);
    verify_offline(&log, &key);
    let text = std::fs::read_to_string(&log).unwrap();
    for action in [
        "\"login\"",
        "\"create_user\"",
        "\"create_api_key\"",
        "\"disable_user\"",
        "\"enable_user\"",
        "\"revoke_api_key\"",
    ] {
        assert!(text.contains(action), "no {action} record");
    }
    assert!(
        text.contains("\"wrong_password\""),
        "refused logins are recorded"
    );
    assert!(
        text.contains("\"unknown_user\""),
        "refused logins are recorded"
    );
    for secret in [
        ANA_PASSWORD,
        BO_PASSWORD,
        boss_password.as_str(),
        ana_key.as_str(),
    ] {
        assert!(!text.contains(secret), "the audit log holds a secret");
    }
}

/// The login and public-endpoint limits hold for all API processes together: attempts spread
/// over two processes are refused once the client's allowance is spent, on both.
#[test]
fn rate_limits_are_shared_by_the_api_processes() {
    let Some((pg, s3)) = servers() else { return };
    if !installed("open") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let url = pg.create_database("limits").unwrap();
    let s3cfg = s3.create_bucket("limits").unwrap();
    let config = write_config(&root, &url, &s3cfg, "limits");
    let toml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("login_per_minute = 4\npublic_per_minute = 3\n{toml}"),
    )
    .unwrap();
    add_agency(&config);
    add_user(&config, "ana", "agency", "investigator", ANA_PASSWORD);
    let (_a1, a) = serve(&config, &root);
    let (_b1, b) = serve(&config, &root);
    let attempt = |server: &str, password: &str| {
        with_cookie(
            "POST",
            &format!("{server}/v1/auth/login"),
            None,
            Some(&json!({"username": "ana", "password": password})),
        )
        .0
    };
    // Four attempts in all, two on each process: answered (one of them right).
    assert_eq!(attempt(&a, "wrong password 1"), 401);
    assert_eq!(attempt(&b, "wrong password 2"), 401);
    assert_eq!(attempt(&a, "wrong password 3"), 401);
    assert_eq!(attempt(&b, ANA_PASSWORD), 200);
    // The fifth, on either process, even with the right password: 429.
    assert_eq!(attempt(&a, ANA_PASSWORD), 429);
    assert_eq!(attempt(&b, ANA_PASSWORD), 429);
    // The public endpoints have their own allowance.
    let status = |server: &str| {
        call(
            "GET",
            &format!("{server}/v1/public/requests/{}", "0".repeat(32)),
            "",
            None,
        )
        .0
    };
    let answered: Vec<u16> = [&a, &b, &a].iter().map(|s| status(s)).collect();
    assert!(answered.iter().all(|s| *s != 429), "{answered:?}");
    assert_eq!(status(&b), 429);
    assert_eq!(status(&a), 429);
}
