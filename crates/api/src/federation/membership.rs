//! Joins, leaves and knocks, resident side: `make_join` / `send_join` (v1, v2), `make_leave` /
//! `send_leave` (v1, v2) and `make_knock` / `send_knock`.

use axum::extract::{RawQuery, State};
use axum::routing::{get, put};
use axum::{Json, Router};
use myelin_service::federation::membership::{MembershipTemplate, SendJoinAnswer};
use serde_json::{Value, json};

use super::ServerAuth;
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{PathParams, parse_event_id, parse_json, parse_room_id, parse_user_id};
use crate::object::object;

fn template_json(template: MembershipTemplate) -> Value {
    json!({ "event": template.event, "room_version": template.room_version.as_str() })
}

/// The `ver` query parameters (repeated: the room versions the joining server supports).
fn versions(query: Option<&str>) -> Vec<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(name, _)| name == "ver")
        .map(|(_, value)| value.into_owned())
        .collect()
}

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
async fn make_join(
    State(services): State<AppState>,
    PathParams((room_id, user_id)): PathParams<(String, String)>,
    RawQuery(query): RawQuery,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let user_id = parse_user_id(&user_id)?;
    // Without `ver`, the joining server supports version 1 only (as the spec says).
    let mut supported = versions(query.as_deref());
    if supported.is_empty() {
        supported.push("1".to_owned());
    }
    let template = services.make_join(&auth.origin, &room_id, &user_id, &supported).await?;
    Ok(Json(template_json(template)))
}

/// `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`
async fn make_knock(
    State(services): State<AppState>,
    PathParams((room_id, user_id)): PathParams<(String, String)>,
    RawQuery(query): RawQuery,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let user_id = parse_user_id(&user_id)?;
    let supported = versions(query.as_deref());
    let template = services.make_knock(&auth.origin, &room_id, &user_id, &supported).await?;
    Ok(Json(template_json(template)))
}

/// `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`
async fn send_knock(
    State(services): State<AppState>,
    PathParams((room_id, event_id)): PathParams<(String, String)>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = parse_event_id(&event_id)?;
    let event: Value = parse_json(&auth.body)?;
    let state = services.send_knock(&auth.origin, &room_id, &event_id, &event).await?;
    Ok(Json(json!({ "knock_room_state": state })))
}

/// `GET /_matrix/federation/unstable/rooms/{roomId}/complexity` (Synapse's, read before a join
/// under `limit_remote_rooms`)
async fn room_complexity(
    State(services): State<AppState>,
    PathParams(room_id): PathParams<String>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let v1 = services.room_complexity(&auth.origin, &room_id).await?;
    Ok(Json(json!({ "v1": v1 })))
}

/// `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`
async fn make_leave(
    State(services): State<AppState>,
    PathParams((room_id, user_id)): PathParams<(String, String)>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let user_id = parse_user_id(&user_id)?;
    let template = services.make_leave(&auth.origin, &room_id, &user_id).await?;
    Ok(Json(template_json(template)))
}

async fn send_join(
    services: &AppState,
    room_id: &str,
    event_id: &str,
    auth: &ServerAuth,
) -> ApiResult<Value> {
    let room_id = parse_room_id(room_id)?;
    let event_id = parse_event_id(event_id)?;
    let event: Value = parse_json(&auth.body)?;
    let SendJoinAnswer { state, auth_chain, event, servers_in_room } =
        services.send_join(&auth.origin, &room_id, &event_id, &event).await?;
    Ok(object([
        ("origin", json!(services.server_name())),
        ("state", Value::Array(state)),
        ("auth_chain", Value::Array(auth_chain)),
        ("event", event),
        ("members_omitted", Value::Bool(false)),
        ("servers_in_room", json!(servers_in_room)),
    ]))
}

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
async fn send_join_v2(
    State(services): State<AppState>,
    PathParams((room_id, event_id)): PathParams<(String, String)>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    Ok(Json(send_join(&services, &room_id, &event_id, &auth).await?))
}

/// `PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}`: v2's answer as `[200, {...}]`
/// (without v2's `members_omitted` and `servers_in_room`).
async fn send_join_v1(
    State(services): State<AppState>,
    PathParams((room_id, event_id)): PathParams<(String, String)>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let mut answer = send_join(&services, &room_id, &event_id, &auth).await?;
    if let Some(answer) = answer.as_object_mut() {
        answer.remove("members_omitted");
        answer.remove("servers_in_room");
    }
    Ok(Json(json!([200, answer])))
}

async fn send_leave(services: &AppState, room_id: &str, event_id: &str, auth: &ServerAuth) -> ApiResult<()> {
    let room_id = parse_room_id(room_id)?;
    let event_id = parse_event_id(event_id)?;
    let event: Value = parse_json(&auth.body)?;
    services.send_leave(&auth.origin, &room_id, &event_id, &event).await?;
    Ok(())
}

/// `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`
async fn send_leave_v2(
    State(services): State<AppState>,
    PathParams((room_id, event_id)): PathParams<(String, String)>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    send_leave(&services, &room_id, &event_id, &auth).await?;
    Ok(Json(json!({})))
}

/// `PUT /_matrix/federation/v1/send_leave/{roomId}/{eventId}`: `[200, {}]`.
async fn send_leave_v1(
    State(services): State<AppState>,
    PathParams((room_id, event_id)): PathParams<(String, String)>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    send_leave(&services, &room_id, &event_id, &auth).await?;
    Ok(Json(json!([200, {}])))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/federation/v1/make_join/{room_id}/{user_id}", get(make_join))
        .route("/_matrix/federation/v1/make_leave/{room_id}/{user_id}", get(make_leave))
        .route("/_matrix/federation/v1/make_knock/{room_id}/{user_id}", get(make_knock))
        .route("/_matrix/federation/v1/send_knock/{room_id}/{event_id}", put(send_knock))
        .route("/_matrix/federation/unstable/rooms/{room_id}/complexity", get(room_complexity))
        .route("/_matrix/federation/v1/send_join/{room_id}/{event_id}", put(send_join_v1))
        .route("/_matrix/federation/v2/send_join/{room_id}/{event_id}", put(send_join_v2))
        .route("/_matrix/federation/v1/send_leave/{room_id}/{event_id}", put(send_leave_v1))
        .route("/_matrix/federation/v2/send_leave/{room_id}/{event_id}", put(send_leave_v2))
}
