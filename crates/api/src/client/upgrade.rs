//! Room upgrades: `/_matrix/client/v3/rooms/{roomId}/upgrade`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use myelin_core::MatrixError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ClientRoutes;
use super::rooms::parse_room_id;
use crate::AppState;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams};

#[derive(Deserialize)]
struct UpgradeBody {
    new_version: Option<String>,
    additional_creators: Option<Vec<String>>,
}

/// `POST /_matrix/client/v3/rooms/{roomId}/upgrade`
async fn upgrade(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(room_id): PathParams<String>,
    JsonBody(body): JsonBody<UpgradeBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let new_version =
        body.new_version.ok_or_else(|| MatrixError::missing_param("Missing parameter: new_version"))?;
    let replacement =
        services.upgrade_room(&requester, &room_id, &new_version, body.additional_creators).await?;
    Ok(Json(json!({ "replacement_room": replacement })))
}

pub fn routes() -> Router<AppState> {
    Router::new().v3("/rooms/{room_id}/upgrade", post(upgrade))
}
