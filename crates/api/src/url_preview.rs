//! URL previews: `GET /_matrix/client/v1/media/preview_url` and the legacy
//! `/_matrix/media/{v3,r0,v1}/preview_url` (authenticated as well, as in Synapse). Mounted only
//! when `url_preview_enabled` is on; otherwise these paths are `404 M_UNRECOGNIZED` like any
//! unknown route.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::Services;
use serde::Deserialize;

use crate::AppState;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::QueryParams;

#[derive(Deserialize)]
struct PreviewQuery {
    url: Option<String>,
    /// The time of the preview wanted; read for compatibility, the freshest preview is given.
    #[allow(dead_code)]
    ts: Option<i64>,
}

/// `GET /_matrix/client/v1/media/preview_url?url=...[&ts=...]`: the Open Graph data of a page.
async fn preview_url(
    State(services): State<Services>,
    Auth(requester): Auth,
    QueryParams(query): QueryParams<PreviewQuery>,
) -> ApiResult<Response> {
    let url = query.url.ok_or_else(|| MatrixError::missing_param("Missing string query parameter 'url'"))?;
    let og = services.preview_url(&requester.user_id, &url).await?;
    Ok(Json(&*og).into_response())
}

pub(crate) fn routes() -> Router<AppState> {
    let mut router = Router::new().route("/_matrix/client/v1/media/preview_url", get(preview_url));
    for version in ["v3", "r0", "v1"] {
        router = router.route(&format!("/_matrix/media/{version}/preview_url"), get(preview_url));
    }
    router
}
