//! Reporting content: `/_matrix/client/v3/rooms/{roomId}/report[/{eventId}]` and
//! `/_matrix/client/v3/users/{userId}/report`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use myelin_core::MatrixError;
use ruma::UserId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ClientRoutes;
use super::rooms::{parse_event_id, parse_room_id};
use crate::AppState;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams};

#[derive(Deserialize)]
struct EventReportBody {
    reason: Option<String>,
    /// Removed from the spec in v1.18, still accepted (and checked) as Synapse does.
    #[serde(default)]
    score: Value,
}

/// `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}`
async fn report_event(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams((room_id, event_id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<EventReportBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = parse_event_id(&event_id)?;
    let score = match &body.score {
        Value::Null => None,
        value => Some(value.as_i64().ok_or_else(|| MatrixError::invalid_param("score must be an integer"))?),
    };
    services.report_event(&requester, &room_id, &event_id, body.reason, score).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct ReportBody {
    reason: String,
}

/// `POST /_matrix/client/v3/rooms/{roomId}/report`
async fn report_room(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(room_id): PathParams<String>,
    JsonBody(body): JsonBody<ReportBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    services.report_room(&requester, &room_id, body.reason).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/users/{userId}/report`
async fn report_user(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(user_id): PathParams<String>,
    JsonBody(body): JsonBody<ReportBody>,
) -> ApiResult<Json<Value>> {
    let user_id = UserId::parse(user_id.as_str())
        .map_err(|_| MatrixError::invalid_param(format!("Invalid user ID {user_id:?}")))?;
    services.report_user(&requester, &user_id, body.reason).await?;
    Ok(Json(json!({})))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .v3("/rooms/{room_id}/report/{event_id}", post(report_event))
        .v3("/rooms/{room_id}/report", post(report_room))
        .v3("/users/{user_id}/report", post(report_user))
}
