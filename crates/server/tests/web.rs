//! The web app: its routes and security headers over a real server, then the browser
//! end-to-end test (`web-tests/e2e.mjs`, Playwright driving the system Chromium): sign-in, a
//! case, a search that ranks the right person first, the case report, a public opt-out, the
//! same search no longer finding that person, the audit log verified, administration, and an
//! upload of photos into a new collection on the collections page, watched to its end.
//!
//! The browser part needs `node`, `/usr/bin/chromium` and `web-tests/node_modules/playwright-core`
//! (scripts/setup.sh installs them); without them it is skipped with a message, except under
//! VISAGE_REQUIRE_MODELS=1 (CI), where it fails. VISAGE_WEB_SCREENSHOTS=DIR keeps the
//! screenshots (default: a temporary folder).

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::json;

/// A GET without following redirects: (status, header lookup, body).
fn raw_get(base: &str, path: &str) -> (u16, ureq::http::HeaderMap, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let res = agent.get(format!("{base}{path}")).call().unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().read_to_string().unwrap_or_default();
    (status, headers, body)
}

fn header<'a>(h: &'a ureq::http::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn check_routes(base: &str) {
    let (s, h, _) = raw_get(base, "/");
    assert_eq!(s, 303, "/ redirects");
    assert_eq!(header(&h, "location"), "/app/");
    for page in ["/app/", "/app/search", "/app/cases/7", "/optout"] {
        let (s, h, body) = raw_get(base, page);
        assert_eq!(s, 200, "{page}");
        assert!(
            header(&h, "content-type").starts_with("text/html"),
            "{page}"
        );
        let csp = header(&h, "content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
            "{page}: {csp}"
        );
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(header(&h, "x-content-type-options"), "nosniff", "{page}");
        assert!(
            body.contains("<script type=\"module\" src=\"/app/assets/"),
            "{page}"
        );
    }
    for (asset, ctype) in [
        ("app.js", "text/javascript"),
        ("search.js", "text/javascript"),
        ("optout.js", "text/javascript"),
        ("app.css", "text/css"),
        ("logo.svg", "image/svg+xml"),
    ] {
        let (s, h, body) = raw_get(base, &format!("/app/assets/{asset}"));
        assert_eq!(s, 200, "{asset}");
        assert!(header(&h, "content-type").starts_with(ctype), "{asset}");
        assert_eq!(header(&h, "x-content-type-options"), "nosniff");
        assert!(!body.is_empty());
        // No third-party origin anywhere: everything is served from the binary.
        if asset != "logo.svg" {
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{asset} names another origin"
            );
        }
    }
    let (s, _, body) = raw_get(base, "/app/assets/nope.js");
    assert_eq!(s, 404);
    assert!(body.contains("not_found"));
    // the API is unchanged beside the app
    let (s, _, body) = raw_get(base, "/healthz");
    assert_eq!((s, body.as_str()), (200, "{\"status\":\"ok\"}"));
    let (s, _, _) = raw_get(base, "/v1/stats");
    assert_eq!(s, 401);
}

#[test]
fn web_app_end_to_end() {
    let Some(home) = require() else { return };
    let strict = std::env::var("VISAGE_REQUIRE_MODELS").is_ok_and(|v| v == "1");
    let (tmp, data) = temp_gallery(
        &home,
        &["George_W_Bush", "Colin_Powell", "Tony_Blair"],
        None,
    );
    let server = Server::start(&home, &data, Default::default());
    let base = format!("http://{}", server.addr);
    check_routes(&base);

    if let Some(why) = browser_missing() {
        assert!(
            !strict,
            "the browser test needs node, {CHROMIUM} and playwright-core under \
             VISAGE_REQUIRE_MODELS=1: {why} (run scripts/setup.sh)"
        );
        eprintln!("skipping the browser test: {why}; run scripts/setup.sh");
        server.stop();
        return;
    }

    let admin = server.admin();
    let org = create_org(&admin, "Web Test Police", "law_enforcement", "GB");
    let inv_pass = "investigator passphrase 1";
    let aud_pass = "auditor passphrase 22";
    for (user, role, pass) in [
        ("wendy", "investigator", inv_pass),
        ("arthur", "auditor", aud_pass),
    ] {
        admin.must(
            "/v1/users",
            &json!({"org_id": org, "username": user, "role": role, "password": pass}),
            201,
        );
    }

    let shots = match std::env::var_os("VISAGE_WEB_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => tmp.path().join("screenshots"),
    };
    std::fs::create_dir_all(&shots).unwrap();
    // what the admin uploads on the collections page: enough photos for a job that runs a few
    // seconds (its progress is watched), a truncated JPEG and a text file
    let uploads = tmp.path().join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    let mut ingest: Vec<PathBuf> = (1..=120)
        .map(|n| photo("George_W_Bush", n + 10))
        .chain((1..=30).map(|n| photo("Gerhard_Schroeder", n)))
        .collect();
    let good = ingest.len();
    let cut = uploads.join("cut.jpg");
    std::fs::write(&cut, &read_photo("Jacques_Chirac", 11)[..2500]).unwrap();
    let notes = uploads.join("notes.txt");
    std::fs::write(&notes, "not a photo").unwrap();
    ingest.push(cut);
    ingest.push(notes);
    let ingest_json = serde_json::to_string(&ingest).unwrap();
    let mut node = node_script("e2e.mjs");
    node.env("VISAGE_URL", &base)
        .env("VISAGE_INV_USER", "wendy")
        .env("VISAGE_INV_PASS", inv_pass)
        .env("VISAGE_AUD_USER", "arthur")
        .env("VISAGE_AUD_PASS", aud_pass)
        .env("VISAGE_ADMIN_USER", "admin")
        .env("VISAGE_ADMIN_PASS", &server.admin_password)
        .env("VISAGE_PROBE", photo("Colin_Powell", 4))
        .env("VISAGE_OPTOUT_PHOTO", photo("Colin_Powell", 5))
        .env("VISAGE_EXPECT_LABEL", "Colin_Powell")
        .env("VISAGE_SCREENSHOTS", &shots)
        .env("VISAGE_INGEST_FILES", &ingest_json)
        .env("VISAGE_INGEST_GOOD", good.to_string());
    let status = run_node(node);
    let pngs = std::fs::read_dir(&shots)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "png"))
        })
        .count();
    eprintln!("screenshots: {pngs} in {}", shots.display());
    server.stop();
    assert!(
        status.success(),
        "web-tests/e2e.mjs failed ({status}); see its output above and {}",
        shots.display()
    );
    assert!(pngs >= 8, "one screenshot per page");
}
