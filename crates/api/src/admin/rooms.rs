//! Rooms in the admin API: the room list (`/v1/rooms`), one room, its members, state and
//! forward extremities, blocking, force-joins (`/v1/join`), `make_room_admin`, deletion (`/v1`
//! and `/v2`) with its status, history purges with theirs, and the server's room and
//! background-update statistics.

use axum::extract::State;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::admin_rooms::{
    AdminRoomSummary, DeleteRoomOutcome, DeleteRoomRequest, DeleteRoomStatus, PurgeHistoryRequest,
    PurgePoint, RoomListQuery, RoomOrder, ScheduledTaskQuery, TASK_STATUSES,
};
use serde_json::{Map, Value, json};

use myelin_service::rooms::read::MessagesRequest;

use super::params::{parse_bool, parse_count, parse_forwards, parse_order};
use crate::AppState;
use crate::auth::AdminAuth;
use crate::client::rooms::{context_json, messages_json, parse_event_id, parse_filter};
use crate::error::ApiResult;
use crate::extract::{JsonBody, JsonBodyOrEmpty, PathParams, QueryParams};
use crate::object::object;

/// A room ID from a path, `400 M_INVALID_PARAM` when it is not one.
pub(super) fn parse_room(room_id: &str) -> Result<ruma::OwnedRoomId, MatrixError> {
    ruma::RoomId::parse(room_id)
        .map_err(|_| MatrixError::invalid_param(format!("{room_id:?} is not a room ID")))
}

fn room_list_query(pairs: &[(String, String)]) -> Result<RoomListQuery, MatrixError> {
    let mut query = RoomListQuery {
        from: 0,
        limit: 100,
        order: RoomOrder::Name,
        forwards: true,
        search_term: None,
        public_rooms: None,
        empty_rooms: None,
    };
    for (name, value) in pairs {
        match name.as_str() {
            "from" => query.from = parse_count(name, value)?,
            "limit" => query.limit = parse_count(name, value)?,
            "order_by" => query.order = parse_order(value, RoomOrder::parse)?,
            "dir" => query.forwards = parse_forwards(value)?,
            "search_term" if value.is_empty() => {
                return Err(MatrixError::invalid_param("search_term cannot be an empty string"));
            }
            "search_term" => query.search_term = Some(value.clone()),
            "public_rooms" => query.public_rooms = Some(parse_bool(name, value)?),
            "empty_rooms" => query.empty_rooms = Some(parse_bool(name, value)?),
            _ => {}
        }
    }
    Ok(query)
}

fn summary_json(room: &AdminRoomSummary) -> Value {
    json!({
        "room_id": room.room_id,
        "name": room.name,
        "canonical_alias": room.canonical_alias,
        "joined_members": room.joined_members,
        "joined_local_members": room.joined_local_members,
        "version": room.version,
        "creator": room.creator,
        "encryption": room.encryption,
        "federatable": room.federatable,
        "public": room.public,
        "join_rules": room.join_rules,
        "guest_access": room.guest_access,
        "history_visibility": room.history_visibility,
        "state_events": room.state_events,
        "room_type": room.room_type,
    })
}

/// `GET /_synapse/admin/v1/rooms`
async fn list_rooms(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    QueryParams(pairs): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let query = room_list_query(&pairs)?;
    let (rooms, total) = services.admin_list_rooms(&query).await?;
    let mut body = object([
        ("offset", json!(query.from)),
        ("rooms", Value::Array(rooms.iter().map(summary_json).collect())),
        ("total_rooms", json!(total)),
    ]);
    if query.from.saturating_add(query.limit) < total {
        body["next_batch"] = json!(query.from + query.limit);
    }
    if query.from > 0 {
        body["prev_batch"] = json!(query.from.saturating_sub(query.limit));
    }
    Ok(Json(body))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}`
async fn get_room(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(room_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room(&room_id)?;
    let details = services.admin_room_details(&room_id).await?;
    let mut body = summary_json(&details.summary);
    body["avatar"] = json!(details.summary.avatar);
    body["topic"] = json!(details.summary.topic);
    body["joined_local_devices"] = json!(details.joined_local_devices);
    body["forgotten"] = json!(details.forgotten);
    body["tombstoned"] = json!(details.summary.tombstone.is_some());
    body["replacement_room"] = json!(details.summary.tombstone.clone().flatten());
    Ok(Json(body))
}

/// The body of a room deletion, checked as Synapse does.
fn delete_request(body: &Map<String, Value>) -> Result<DeleteRoomRequest, MatrixError> {
    let flag = |field: &str, default: bool| match body.get(field) {
        None => Ok(default),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(_) => Err(MatrixError::bad_json(format!("Param '{field}' must be a boolean, if given"))),
    };
    let text = |field: &str| match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(MatrixError::bad_json(format!("Param '{field}' must be a string, if given"))),
    };
    let new_room_user_id = text("new_room_user_id")?
        .map(|user| {
            ruma::UserId::parse(&user)
                .map_err(|_| MatrixError::invalid_param(format!("Invalid user ID {user:?}")))
        })
        .transpose()?;
    Ok(DeleteRoomRequest {
        new_room_user_id,
        room_name: text("room_name")?,
        message: text("message")?,
        block: flag("block", false)?,
        purge: flag("purge", true)?,
        force_purge: flag("force_purge", false)?,
    })
}

fn outcome_json(outcome: &DeleteRoomOutcome) -> Value {
    json!({
        "kicked_users": outcome.kicked_users,
        "failed_to_kick_users": outcome.failed_to_kick_users,
        "local_aliases": outcome.local_aliases,
        "new_room_id": outcome.new_room_id,
    })
}

/// `DELETE /_synapse/admin/v1/rooms/{roomId}`: deletes before answering.
async fn delete_room_v1(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(room_id): PathParams<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room(&room_id)?;
    let request = delete_request(&body)?;
    let outcome = services.admin_delete_room(&admin, &room_id, request).await?;
    Ok(Json(outcome_json(&outcome)))
}

/// `DELETE /_synapse/admin/v2/rooms/{roomId}`: starts the deletion, answers its ID.
async fn delete_room_v2(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(room_id): PathParams<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room(&room_id)?;
    let request = delete_request(&body)?;
    let delete_id = services.admin_start_delete_room(&admin, &room_id, request).await?;
    Ok(Json(json!({ "delete_id": delete_id })))
}

fn status_json(status: &DeleteRoomStatus) -> Value {
    let mut body = json!({
        "delete_id": status.delete_id,
        "room_id": status.room_id,
        "status": status.status,
        "shutdown_room": outcome_json(&status.outcome),
    });
    if let Some(error) = &status.error {
        body["error"] = json!(error);
    }
    body
}

/// `GET /_synapse/admin/v2/rooms/{roomId}/delete_status`
async fn delete_status_of_room(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(room_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room(&room_id)?;
    let statuses = services.admin_delete_statuses(&room_id).await?;
    Ok(Json(json!({ "results": statuses.iter().map(status_json).collect::<Vec<_>>() })))
}

/// `GET /_synapse/admin/v2/rooms/delete_status/{deleteId}`
async fn delete_status(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(delete_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let status = services.admin_delete_status(&delete_id).await?;
    let mut body = status_json(&status);
    if let Value::Object(fields) = &mut body {
        fields.remove("delete_id");
    }
    Ok(Json(body))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/members`
async fn members(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(room_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room(&room_id)?;
    let members = services.admin_room_members(&room_id).await?;
    Ok(Json(json!({ "total": members.len(), "members": members })))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/state` (`type` picks one event type).
async fn state(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(room_id): PathParams<String>,
    QueryParams(pairs): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room(&room_id)?;
    let kind =
        pairs.iter().find(|(name, value)| name == "type" && !value.is_empty()).map(|(_, v)| v.as_str());
    let state = services.admin_room_state(&room_id, kind).await?;
    Ok(Json(json!({ "state": state })))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/forward_extremities`
async fn forward_extremities(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(room_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room(&room_id)?;
    let extremities = services.admin_forward_extremities(&room_id).await?;
    let results: Vec<Value> = extremities
        .iter()
        .map(|(event_id, depth, ts, state_group)| {
            json!({ "event_id": event_id, "depth": depth, "received_ts": ts, "state_group": state_group })
        })
        .collect();
    Ok(Json(json!({ "count": results.len(), "results": results })))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/block`
async fn get_block(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(room_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room(&room_id)?;
    Ok(Json(match services.admin_room_blocked(&room_id).await? {
        Some(user_id) => json!({ "block": true, "user_id": user_id }),
        None => json!({ "block": false }),
    }))
}

/// `PUT /_synapse/admin/v1/rooms/{roomId}/block`
async fn put_block(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(room_id): PathParams<String>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room(&room_id)?;
    let Some(Value::Bool(block)) = body.get("block") else {
        return Err(MatrixError::bad_json("Param 'block' must be a boolean.").into());
    };
    services.admin_block_room(&admin, &room_id, *block).await?;
    Ok(Json(json!({ "block": block })))
}

/// `POST /_synapse/admin/v1/join/{roomIdOrAlias}` with `user_id`.
async fn force_join(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(id_or_alias): PathParams<String>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let Some(Value::String(user_id)) = body.get("user_id") else {
        return Err(MatrixError::new(myelin_core::ErrCode::MissingParam, "Missing param 'user_id'").into());
    };
    let user_id = super::users::parse_user(user_id)?;
    let room_id = services.admin_force_join(&admin, &user_id, &id_or_alias).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// `POST /_synapse/admin/v1/rooms/{roomIdOrAlias}/make_room_admin` with an optional
/// `user_id` (the calling admin by default).
async fn make_room_admin(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(id_or_alias): PathParams<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let target = match body.get("user_id") {
        None => None,
        Some(Value::String(user_id)) => Some(super::users::parse_user(user_id)?),
        Some(_) => return Err(MatrixError::bad_json("Param 'user_id' must be a string").into()),
    };
    services.admin_make_room_admin(&admin, &id_or_alias, target.as_deref()).await?;
    Ok(Json(json!({})))
}

/// The body of a history purge, checked as Synapse does (`event_id`: the event in the path).
fn purge_request(
    body: &Map<String, Value>,
    event_id: Option<&str>,
) -> Result<PurgeHistoryRequest, MatrixError> {
    let delete_local_events = match body.get("delete_local_events") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(flag)) => *flag,
        Some(_) => {
            return Err(MatrixError::bad_json("Param 'delete_local_events' must be a boolean, if given"));
        }
    };
    let event_id = match (event_id, body.get("purge_up_to_event_id")) {
        (Some(event_id), _) => Some(event_id),
        (None, None | Some(Value::Null)) => None,
        (None, Some(Value::String(event_id))) => Some(event_id.as_str()),
        (None, Some(_)) => return Err(MatrixError::bad_json("purge_up_to_event_id must be a string")),
    };
    let up_to = match (event_id, body.get("purge_up_to_ts")) {
        (Some(event_id), _) => PurgePoint::Event(parse_event_id(event_id)?),
        (None, Some(ts)) => PurgePoint::Timestamp(
            ts.as_i64().ok_or_else(|| MatrixError::bad_json("purge_up_to_ts must be an int"))?,
        ),
        (None, None) => {
            return Err(MatrixError::bad_json("must specify purge_up_to_event_id or purge_up_to_ts"));
        }
    };
    Ok(PurgeHistoryRequest { up_to, delete_local_events })
}

/// `POST /_synapse/admin/v1/purge_history/{roomId}`
async fn purge_history(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(room_id): PathParams<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    start_purge(&services, &admin, &room_id, None, &body).await
}

/// `POST /_synapse/admin/v1/purge_history/{roomId}/{eventId}`
async fn purge_history_to_event(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams((room_id, event_id)): PathParams<(String, String)>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    start_purge(&services, &admin, &room_id, Some(&event_id), &body).await
}

async fn start_purge(
    services: &AppState,
    admin: &myelin_service::auth::Requester,
    room_id: &str,
    event_id: Option<&str>,
    body: &Map<String, Value>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room(room_id)?;
    let request = purge_request(body, event_id)?;
    let purge_id = services.admin_start_purge_history(admin, &room_id, request).await?;
    Ok(Json(json!({ "purge_id": purge_id })))
}

/// `GET /_synapse/admin/v1/purge_history_status/{purgeId}`
async fn purge_history_status(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(purge_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let (status, error) = services.admin_purge_history_status(&purge_id).await?;
    let mut body = json!({ "status": status });
    if let Some(error) = error {
        body["error"] = json!(error);
    }
    Ok(Json(body))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/messages`: the client route's page, for any room
/// the server knows, without history visibility (as Synapse's admin privilege). `dir`
/// defaults to `f`.
async fn messages(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(room_id): PathParams<String>,
    QueryParams(pairs): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room(&room_id)?;
    let param = |name: &str| pairs.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    let backward = !param("dir").as_deref().map(parse_forwards).transpose()?.unwrap_or(true);
    let filter = parse_filter(param("filter").as_deref())?;
    let limit = match param("limit") {
        Some(limit) => parse_count("limit", &limit)?,
        None => filter.limit.unwrap_or(10),
    };
    let request = MessagesRequest { from: param("from"), to: param("to"), backward, limit, filter };
    let page = services.room_messages_as(&admin, &room_id, &request, true).await?;
    Ok(Json(messages_json(&services, &page, &admin).await?))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/context/{eventId}`
async fn context(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams((room_id, event_id)): PathParams<(String, String)>,
    QueryParams(pairs): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room(&room_id)?;
    let event_id = parse_event_id(&event_id)?;
    let param = |name: &str| pairs.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    let filter = parse_filter(param("filter").as_deref())?;
    let limit = match param("limit") {
        Some(limit) => parse_count("limit", &limit)?,
        None => filter.limit.unwrap_or(10),
    };
    let context = services.event_context_as(&admin, &room_id, &event_id, limit, &filter, true).await?;
    Ok(Json(context_json(&services, &context, &admin).await?))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/timestamp_to_event?ts&dir`
async fn timestamp_to_event(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(room_id): PathParams<String>,
    QueryParams(pairs): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room(&room_id)?;
    let param = |name: &str| pairs.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    let Some(ts) = param("ts") else {
        return Err(MatrixError::new(
            myelin_core::ErrCode::MissingParam,
            "Missing integer query parameter 'ts'",
        )
        .into());
    };
    let ts = parse_count("ts", &ts)?;
    let forward = param("dir").as_deref().map(parse_forwards).transpose()?.unwrap_or(true);
    let pdu = services.timestamp_to_event_as(&admin, &room_id, ts, forward, true).await?;
    Ok(Json(json!({ "event_id": pdu.event_id, "origin_server_ts": pdu.origin_server_ts })))
}

/// `GET /_synapse/admin/v1/statistics/database/rooms`
async fn database_room_stats(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
) -> ApiResult<Json<Value>> {
    let rooms = services.admin_database_room_stats().await?;
    let rooms: Vec<Value> =
        rooms.iter().map(|(room_id, size)| json!({ "room_id": room_id, "estimated_size": size })).collect();
    Ok(Json(json!({ "rooms": rooms })))
}

/// `GET /_synapse/admin/v1/scheduled_tasks?action_name&resource_id&status&job_status&max_timestamp`:
/// room deletions, history purges and user redactions as Synapse's scheduled tasks.
async fn scheduled_tasks(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    QueryParams(pairs): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let mut query = ScheduledTaskQuery::default();
    let mut job_statuses = Vec::new();
    for (name, value) in &pairs {
        match name.as_str() {
            "action_name" => query.actions.push(value.clone()),
            "resource_id" => query.resource_id = Some(value.clone()),
            "status" | "job_status" => {
                if !TASK_STATUSES.contains(&value.as_str()) {
                    return Err(MatrixError::invalid_param(format!(
                        "Query parameter {name:?} must be one of [{}]",
                        TASK_STATUSES.join(", ")
                    ))
                    .into());
                }
                if name == "status" {
                    query.statuses.push(value.clone());
                } else {
                    job_statuses.push(value.clone());
                }
            }
            "max_timestamp" => query.max_timestamp = Some(parse_count(name, value)? as i64),
            _ => {}
        }
    }
    // `job_status` is the historical name, read only when `status` is absent (as Synapse).
    if query.statuses.is_empty() {
        query.statuses = job_statuses;
    }
    let tasks = services.admin_scheduled_tasks(&query).await?;
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|task| {
            json!({
                "id": task.id,
                "action": task.action,
                "status": task.status,
                "timestamp_ms": task.timestamp_ms,
                "resource_id": task.resource_id,
                "result": task.result.as_deref().and_then(|r| serde_json::from_str::<Value>(r).ok()),
                "error": task.error,
            })
        })
        .collect();
    Ok(Json(json!({ "scheduled_tasks": tasks })))
}

/// `GET /_synapse/admin/v1/background_updates/status`: Myelin runs its migrations at start-up,
/// so there are never background updates in progress.
async fn background_updates(AdminAuth(_admin): AdminAuth) -> Json<Value> {
    Json(json!({ "enabled": true, "current_updates": {} }))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_synapse/admin/v1/rooms", get(list_rooms))
        .route("/_synapse/admin/v1/scheduled_tasks", get(scheduled_tasks))
        .route("/_synapse/admin/v1/rooms/{room_id}", get(get_room).delete(delete_room_v1))
        .route("/_synapse/admin/v2/rooms/{room_id}", delete(delete_room_v2))
        .route("/_synapse/admin/v2/rooms/{room_id}/delete_status", get(delete_status_of_room))
        .route("/_synapse/admin/v2/rooms/delete_status/{delete_id}", get(delete_status))
        .route("/_synapse/admin/v1/rooms/{room_id}/members", get(members))
        .route("/_synapse/admin/v1/rooms/{room_id}/state", get(state))
        .route("/_synapse/admin/v1/rooms/{room_id}/forward_extremities", get(forward_extremities))
        .route("/_synapse/admin/v1/rooms/{room_id}/messages", get(messages))
        .route("/_synapse/admin/v1/rooms/{room_id}/context/{event_id}", get(context))
        .route("/_synapse/admin/v1/rooms/{room_id}/timestamp_to_event", get(timestamp_to_event))
        .route("/_synapse/admin/v1/rooms/{room_id}/block", get(get_block).put(put_block))
        .route("/_synapse/admin/v1/join/{room_id}", post(force_join))
        .route("/_synapse/admin/v1/rooms/{room_id}/make_room_admin", post(make_room_admin))
        .route("/_synapse/admin/v1/purge_history/{room_id}", post(purge_history))
        .route("/_synapse/admin/v1/purge_history/{room_id}/{event_id}", post(purge_history_to_event))
        .route("/_synapse/admin/v1/purge_history_status/{purge_id}", get(purge_history_status))
        .route("/_synapse/admin/v1/statistics/database/rooms", get(database_room_stats))
        .route("/_synapse/admin/v1/background_updates/status", get(background_updates))
}
