//! Ingest jobs over HTTP: started from a server-side path or from uploads; status and report.

use axum::Router;
use utoipa::OpenApi;

use crate::AppState;

#[derive(OpenApi)]
#[openapi(paths())]
pub(crate) struct Doc;

/// Routes of this module (merged into the server's router; they carry their own limits).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
}
