//! Per-user room data: account data, tags, receipts and read markers, typing, presence.

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use myelin_core::MatrixError;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ClientRoutes;
use super::rooms::{parse_event_id, parse_room_id};
use crate::AppState;
use crate::auth::{Auth, GuestAuth};
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams, parse_user_id as parse_user};

/// `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
async fn get_global(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((user_id, kind)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    Ok(Json(services.get_account_data(&requester, &user_id, None, &kind).await?))
}

/// `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
async fn put_global(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((user_id, kind)): PathParams<(String, String)>,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    services.set_account_data(&requester, &user_id, None, &kind, Value::Object(content)).await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
async fn get_room(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((user_id, room_id, kind)): PathParams<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let room_id = parse_room_id(&room_id)?;
    Ok(Json(services.get_account_data(&requester, &user_id, Some(&room_id), &kind).await?))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
async fn put_room(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((user_id, room_id, kind)): PathParams<(String, String, String)>,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let room_id = parse_room_id(&room_id)?;
    services.set_account_data(&requester, &user_id, Some(&room_id), &kind, Value::Object(content)).await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags`
async fn get_tags(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((user_id, room_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let room_id = parse_room_id(&room_id)?;
    Ok(Json(json!({ "tags": services.get_tags(&requester, &user_id, &room_id).await? })))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
async fn put_tag(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((user_id, room_id, tag)): PathParams<(String, String, String)>,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let room_id = parse_room_id(&room_id)?;
    services.set_tag(&requester, &user_id, &room_id, &tag, Value::Object(content)).await?;
    Ok(Json(json!({})))
}

/// `DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
async fn delete_tag(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((user_id, room_id, tag)): PathParams<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let room_id = parse_room_id(&room_id)?;
    services.delete_tag(&requester, &user_id, &room_id, &tag).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct ReceiptBody {
    thread_id: Option<Value>,
}

/// `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
async fn receipt(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((room_id, receipt_type, event_id)): PathParams<(String, String, String)>,
    JsonBody(body): JsonBody<ReceiptBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = parse_event_id(&event_id)?;
    let thread_id = match &body.thread_id {
        None => None,
        Some(Value::String(thread)) => Some(thread.as_str()),
        Some(_) => {
            return Err(MatrixError::invalid_param("thread_id field must be a non-empty string").into());
        }
    };
    services.set_receipt(&requester, &room_id, &receipt_type, &event_id, thread_id).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct ReadMarkersBody {
    #[serde(rename = "m.fully_read")]
    fully_read: Option<String>,
    #[serde(rename = "m.read")]
    read: Option<String>,
    #[serde(rename = "m.read.private")]
    read_private: Option<String>,
}

/// `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
async fn read_markers(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams(room_id): PathParams<String>,
    JsonBody(body): JsonBody<ReadMarkersBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let fully_read = body.fully_read.as_deref().map(parse_event_id).transpose()?;
    let read = body.read.as_deref().map(parse_event_id).transpose()?;
    let read_private = body.read_private.as_deref().map(parse_event_id).transpose()?;
    services
        .set_read_markers(
            &requester,
            &room_id,
            fully_read.as_deref(),
            read.as_deref(),
            read_private.as_deref(),
        )
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct TypingBody {
    typing: bool,
    timeout: Option<u64>,
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
async fn typing(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((room_id, user_id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<TypingBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let user_id = parse_user(&user_id)?;
    services.set_typing(&requester, &room_id, &user_id, body.typing, body.timeout).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct PresenceBody {
    presence: String,
    status_msg: Option<String>,
}

/// `PUT /_matrix/client/v3/presence/{userId}/status`
async fn set_presence(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(user_id): PathParams<String>,
    JsonBody(body): JsonBody<PresenceBody>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    services.set_presence(&requester, &user_id, &body.presence, body.status_msg).await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/presence/{userId}/status`
async fn get_presence(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let record = services.get_presence(&requester, &user_id).await?;
    let now = myelin_service::util::now_ms() as i64;
    let mut body = json!({ "presence": record.state });
    if record.last_active_ts > 0 {
        body["last_active_ago"] = json!((now - record.last_active_ts).max(0));
        body["currently_active"] = json!(record.currently_active && record.state == "online");
    }
    if let Some(status) = record.status_msg {
        body["status_msg"] = json!(status);
    }
    Ok(Json(body))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .v3("/user/{user_id}/account_data/{kind}", get(get_global).put(put_global))
        .v3("/user/{user_id}/rooms/{room_id}/account_data/{kind}", get(get_room).put(put_room))
        .v3("/user/{user_id}/rooms/{room_id}/tags", get(get_tags))
        .v3("/user/{user_id}/rooms/{room_id}/tags/{tag}", put(put_tag).delete(delete_tag))
        .v3("/rooms/{room_id}/receipt/{receipt_type}/{event_id}", post(receipt))
        .v3("/rooms/{room_id}/read_markers", post(read_markers))
        .v3("/rooms/{room_id}/typing/{user_id}", put(typing))
        .v3("/presence/{user_id}/status", get(get_presence).put(set_presence))
}
