//! Collections (create, describe) and subjects (create, update, delete, assign faces).

use axum::Router;
use utoipa::OpenApi;

use crate::AppState;

#[derive(OpenApi)]
#[openapi(paths())]
pub(crate) struct Doc;

/// Routes of this module (merged into the server's router; they carry their own timeout).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
}
