//! Membership: `/join`, `/rooms/{roomId}/join|leave|forget|invite|kick|ban|unban`, `/knock`.

use axum::extract::{RawQuery, State};
use axum::routing::post;
use axum::{Json, Router};
use myelin_core::MatrixError;
use ruma::{OwnedServerName, ServerName};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ClientRoutes;
use super::rooms::parse_room_id;
use crate::AppState;
use crate::auth::{Auth, GuestAuth};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, JsonBodyOrEmpty, PathParams};

#[derive(Deserialize)]
struct ReasonBody {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct TargetBody {
    user_id: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct InviteBody {
    user_id: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    is_direct: bool,
    id_server: Option<String>,
}

/// The servers a join may go through: every `via` (and the deprecated `server_name`)
/// query parameter; a value that is not a server name is `400 M_INVALID_PARAM`.
fn join_servers(query: Option<&str>) -> Result<Vec<OwnedServerName>, ApiError> {
    let mut servers = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if name != "via" && name != "server_name" {
            continue;
        }
        let server = ServerName::parse(value.as_ref())
            .map_err(|_| MatrixError::invalid_param(format!("Invalid server name in `{name}`")))?;
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    Ok(servers)
}

/// `POST /_matrix/client/v3/join/{roomIdOrAlias}`
async fn join(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams(room): PathParams<String>,
    RawQuery(query): RawQuery,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let via = join_servers(query.as_deref())?;
    let room_id = services.join_room_via(&requester, &room, body.reason.as_deref(), &via).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/join`
async fn join_by_id(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams(room_id): PathParams<String>,
    RawQuery(query): RawQuery,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let via = join_servers(query.as_deref())?;
    let room_id = services.join_room_via(&requester, room_id.as_str(), body.reason.as_deref(), &via).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/leave`
async fn leave(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams(room_id): PathParams<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    services.leave_room(&requester, &room_id, body.reason.as_deref()).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/forget`
async fn forget(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams(room_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    services.forget_room(&requester, &room_id).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/invite`
async fn invite(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(room_id): PathParams<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<InviteBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let Some(user_id) = body.user_id else {
        let message = if body.id_server.is_some() {
            "Third-party invites are not supported by this server"
        } else {
            "Missing user_id"
        };
        return Err(myelin_core::MatrixError::bad_json(message).into());
    };
    services.invite_user(&requester, &room_id, &user_id, body.reason.as_deref(), body.is_direct).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/kick`
async fn kick(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(room_id): PathParams<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<TargetBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    services.kick_user(&requester, &room_id, &body.user_id, body.reason.as_deref()).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/ban`
async fn ban(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(room_id): PathParams<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<TargetBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    services.ban_user(&requester, &room_id, &body.user_id, body.reason.as_deref()).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/unban`
async fn unban(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(room_id): PathParams<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<TargetBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    services.unban_user(&requester, &room_id, &body.user_id, body.reason.as_deref()).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/knock/{roomIdOrAlias}`
async fn knock(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(room): PathParams<String>,
    RawQuery(query): RawQuery,
    JsonBody(body): JsonBody<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let via = join_servers(query.as_deref())?;
    let room_id = services.knock_room_via(&requester, &room, body.reason.as_deref(), &via).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .v3("/join/{room_id_or_alias}", post(join))
        .v3("/rooms/{room_id}/join", post(join_by_id))
        .v3("/rooms/{room_id}/leave", post(leave))
        .v3("/rooms/{room_id}/forget", post(forget))
        .v3("/rooms/{room_id}/invite", post(invite))
        .v3("/rooms/{room_id}/kick", post(kick))
        .v3("/rooms/{room_id}/ban", post(ban))
        .v3("/rooms/{room_id}/unban", post(unban))
        .v3("/knock/{room_id_or_alias}", post(knock))
}
