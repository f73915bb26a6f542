//! `/metrics`: Prometheus text exposition, written by hand (requests by route and status,
//! latency histograms per route, searches, gallery faces).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::auth::{general_access, Auth};
use crate::{blocking, ApiError, ApiResult, AppState, ErrorBody};

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Hist {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct State_ {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Hist>,
    searches: BTreeMap<(&'static str, &'static str), u64>,
}

/// In-memory counters since the server started.
#[derive(Default)]
pub struct Metrics {
    s: Mutex<State_>,
}

impl Metrics {
    pub(crate) fn record(&self, route: &str, method: &str, status: u16, secs: f64) {
        let mut s = self.s.lock().unwrap_or_else(|e| e.into_inner());
        *s.requests
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        let h = s.latency.entry(route.to_string()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// One search (`photo`, `face`, `verify`) that ran, ok or failed.
    pub(crate) fn search(&self, kind: &'static str, ok: bool) {
        let mut s = self.s.lock().unwrap_or_else(|e| e.into_inner());
        *s.searches
            .entry((kind, if ok { "ok" } else { "error" }))
            .or_default() += 1;
    }

    /// The exposition, with `faces` in the gallery, as the `/metrics` answer.
    pub(crate) fn response(&self, faces: u64) -> Response {
        let mut res = self.render(faces).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        res
    }

    fn render(&self, faces: u64) -> String {
        let s = self.s.lock().unwrap_or_else(|e| e.into_inner());
        let mut o = String::new();
        let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
        o.push_str(
            "# HELP visage_http_requests_total HTTP requests by route, method and status.\n",
        );
        o.push_str("# TYPE visage_http_requests_total counter\n");
        for ((route, method, status), n) in &s.requests {
            let _ = writeln!(
                o,
                "visage_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                esc(route),
                esc(method)
            );
        }
        o.push_str("# HELP visage_http_request_duration_seconds Request latency by route.\n");
        o.push_str("# TYPE visage_http_request_duration_seconds histogram\n");
        for (route, h) in &s.latency {
            let r = esc(route);
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "visage_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                o,
                "visage_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                o,
                "visage_http_request_duration_seconds_sum{{route=\"{r}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                o,
                "visage_http_request_duration_seconds_count{{route=\"{r}\"}} {}",
                h.count
            );
        }
        o.push_str(
            "# HELP visage_searches_total Searches run (authorised), by kind and outcome.\n",
        );
        o.push_str("# TYPE visage_searches_total counter\n");
        for ((kind, outcome), n) in &s.searches {
            let _ = writeln!(
                o,
                "visage_searches_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        o.push_str("# HELP visage_gallery_faces Faces in the gallery.\n");
        o.push_str("# TYPE visage_gallery_faces gauge\n");
        let _ = writeln!(o, "visage_gallery_faces {faces}");
        o
    }
}

/// Prometheus metrics (text format 0.0.4). Any authenticated role.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses(
        (status = 200, description = "Prometheus text", content_type = "text/plain"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied`", body = ErrorBody),
    ))]
pub(crate) async fn metrics(State(st): State<AppState>, Auth(p): Auth) -> ApiResult<Response> {
    general_access(&st, &p)?;
    let faces = blocking(&st, |st| {
        st.gallery.face_count().map_err(ApiError::internal)
    })
    .await?;
    Ok(st.metrics.response(faces))
}
