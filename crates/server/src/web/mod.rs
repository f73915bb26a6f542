//! The web app, served by `visage serve` itself: plain HTML, CSS and JavaScript modules embedded
//! in the binary with `include_str!` (no CDN, no Node at run time, no build step). See
//! docs/WEB.md.
//!
//! Routes: `/` redirects to `/app/`; `/app/assets/<file>` serves the embedded assets;
//! every other `/app/...` path serves the single-page shell (the app routes on the client);
//! `/optout` is the public opt-out portal (no sign-in). Every response carries a strict
//! Content-Security-Policy (scripts only from this origin, no inline script or style) and
//! `X-Content-Type-Options: nosniff`. The JSON API is untouched: the pages call it with the
//! session cookie from `POST /v1/auth/login`.

use axum::extract::Path as UrlPath;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::ApiError;

/// Scripts, styles, images and requests only from this origin; photos the user picks are shown
/// through `blob:` URLs, access-report thumbnails are `data:` URLs. No framing, no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; form-action 'self'; \
    base-uri 'none'; frame-ancestors 'none'; object-src 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    ctype: &'static str,
    body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// The files under `/app/assets/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.css",
        ctype: CSS,
        body: include_str!("assets/app.css"),
    },
    Asset {
        name: "app.js",
        ctype: JS,
        body: include_str!("assets/app.js"),
    },
    Asset {
        name: "api.js",
        ctype: JS,
        body: include_str!("assets/api.js"),
    },
    Asset {
        name: "ui.js",
        ctype: JS,
        body: include_str!("assets/ui.js"),
    },
    Asset {
        name: "search.js",
        ctype: JS,
        body: include_str!("assets/search.js"),
    },
    Asset {
        name: "cases.js",
        ctype: JS,
        body: include_str!("assets/cases.js"),
    },
    Asset {
        name: "audit.js",
        ctype: JS,
        body: include_str!("assets/audit.js"),
    },
    Asset {
        name: "admin.js",
        ctype: JS,
        body: include_str!("assets/admin.js"),
    },
    Asset {
        name: "gallery.js",
        ctype: JS,
        body: include_str!("assets/gallery.js"),
    },
    Asset {
        name: "optout.js",
        ctype: JS,
        body: include_str!("assets/optout.js"),
    },
    Asset {
        name: "logo.svg",
        ctype: SVG,
        body: include_str!("assets/logo.svg"),
    },
];

const APP_SHELL: &str = include_str!("assets/index.html");
const OPTOUT_PAGE: &str = include_str!("assets/optout.html");

/// The web routes, merged into the embedded API's router (`crate::router`) and the cluster
/// API's (`crate::cluster_api::router`): the pages only call the JSON API, which both serve.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(root))
        .route("/app", get(root))
        .route("/app/", get(shell))
        .route("/app/assets/{name}", get(asset))
        .route("/app/{*rest}", get(shell))
        .route("/optout", get(optout))
}

/// Adds the security headers every page and asset carries.
fn secured(ctype: &'static str, body: &'static str) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    // Small files, embedded in the binary: always revalidate so an upgrade is seen at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

async fn root() -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    res.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/app/"));
    res
}

async fn shell() -> Response {
    secured(HTML, APP_SHELL)
}

async fn optout() -> Response {
    secured(HTML, OPTOUT_PAGE)
}

async fn asset(UrlPath(name): UrlPath<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => secured(a.ctype, a.body),
        None => ApiError::not_found(format!("no asset {name:?}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_unique_and_referenced() {
        let mut names: Vec<_> = ASSETS.iter().map(|a| a.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len());
        assert!(APP_SHELL.contains("/app/assets/app.js"));
        assert!(OPTOUT_PAGE.contains("/app/assets/optout.js"));
    }

    #[test]
    fn no_inline_script_or_style() {
        for page in [APP_SHELL, OPTOUT_PAGE] {
            for tag in page.match_indices("<script") {
                let rest = &page[tag.0..];
                let end = rest.find('>').unwrap();
                assert!(
                    rest[..end].contains("src="),
                    "inline script: {}",
                    &rest[..end]
                );
            }
            assert!(!page.contains("<style"), "inline style block");
            assert!(!page.contains(" style="), "inline style attribute");
            assert!(!page.contains(" onclick="), "inline handler");
        }
    }
}
