//! Concurrent searches: many clients at once get answers, never errors. A short, bounded run
//! (the full 50-client, 60-second figure is `visage bench load`, docs/BENCHMARKS.md).

mod common;

use common::*;
use std::time::Duration;

#[test]
fn concurrent_searches_all_succeed() {
    let Some(home) = require() else { return };
    let (_tmp, data) = temp_gallery(
        &home,
        &["George_W_Bush", "Colin_Powell", "Tony_Blair"],
        None,
    );
    let server = Server::start(&home, &data, Default::default());
    let admin = server.admin();
    let org = create_org(&admin, "Load PD", "law_enforcement", "FR");
    let (_, key) = create_user_key(&admin, org, "loader", "investigator");
    let inv = server.client(Auth::Key(key.clone()));
    let case = create_case(&inv, "LOAD-1");
    let o = visage_bench::probe::LoadOptions {
        url: format!("http://{}", server.addr),
        api_key: key,
        case_id: case,
        purpose: "load test of the search service".into(),
        probe: read_photo("Colin_Powell", 10),
        clients: 12,
        duration: Duration::from_secs(6),
        k: 10,
    };
    let r = visage_bench::probe::load_test(&o, |_| {}).unwrap();
    eprintln!("{}", serde_json::to_string(&r).unwrap());
    assert_eq!(r.errors, 0, "{:?}", r.error_samples);
    assert!(r.requests >= 12, "{} requests", r.requests);
    // Every search was audited under the case.
    let report = inv.get(&format!("/v1/cases/{case}/report")).json();
    let searches = report["searches"].as_array().map(|a| a.len()).unwrap_or(0) as u64;
    assert!(
        searches > r.requests,
        "{searches} audited vs {} + 1 sent",
        r.requests
    );
    server.stop();
}
