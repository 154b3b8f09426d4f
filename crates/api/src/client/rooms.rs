//! Rooms: `createRoom`, state, sending, redaction, single events, `/context`, `/messages`,
//! members, `joined_rooms`, `timestamp_to_event`.

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::Services;
use myelin_service::auth::Requester;
use myelin_service::filter::RoomEventFilter;
use myelin_service::rooms::RoomEvent;
use myelin_service::rooms::create::CreateRoomRequest;
use myelin_service::rooms::read::{EventContext, EventPage, MessagesRequest};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ClientRoutes;
use crate::AppState;
use crate::auth::{Auth, GuestAuth};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::object::object;

pub(crate) use crate::extract::{parse_event_id, parse_room_id};

/// Events in the client format.
pub(crate) async fn events_json(
    services: &Services,
    events: &[RoomEvent],
    requester: &Requester,
) -> Result<Vec<Value>, ApiError> {
    Ok(services.client_events(events, Some(requester)).await?)
}

#[derive(Deserialize)]
struct StateEventBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    state_key: String,
    content: Value,
}

#[derive(Deserialize)]
struct CreateRoomBody {
    preset: Option<String>,
    visibility: Option<String>,
    room_alias_name: Option<String>,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    invite: Vec<String>,
    #[serde(default)]
    invite_3pid: Vec<Value>,
    #[serde(default)]
    is_direct: bool,
    creation_content: Option<Map<String, Value>>,
    #[serde(default)]
    initial_state: Vec<StateEventBody>,
    power_level_content_override: Option<Map<String, Value>>,
    room_version: Option<String>,
}

/// `POST /_matrix/client/v3/createRoom`
async fn create_room(
    State(services): State<AppState>,
    Auth(requester): Auth,
    JsonBody(body): JsonBody<CreateRoomBody>,
) -> ApiResult<Json<Value>> {
    let mut initial_state = Vec::with_capacity(body.initial_state.len());
    for event in body.initial_state {
        if !event.content.is_object() {
            return Err(MatrixError::bad_json("initial_state content must be objects").into());
        }
        initial_state.push((event.kind, event.state_key, event.content));
    }
    let room_id = services
        .create_room(
            &requester,
            CreateRoomRequest {
                preset: body.preset,
                visibility: body.visibility,
                room_alias_name: body.room_alias_name,
                name: body.name,
                topic: body.topic,
                invite: body.invite,
                invite_3pid: body.invite_3pid,
                is_direct: body.is_direct,
                creation_content: body.creation_content,
                initial_state,
                power_level_content_override: body.power_level_content_override,
                room_version: body.room_version,
            },
        )
        .await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state`
async fn get_state(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams(room_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let events = services.room_state(&requester, &room_id).await?;
    Ok(Json(Value::Array(events_json(&services, &events, &requester).await?)))
}

#[derive(Deserialize)]
struct StateQuery {
    format: Option<String>,
}

async fn get_state_event_inner(
    services: &Services,
    requester: &Requester,
    room_id: &str,
    kind: &str,
    state_key: &str,
    format: Option<&str>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(room_id)?;
    let event = services.room_state_event(requester, &room_id, kind, state_key).await?;
    match format {
        Some("event") => Ok(Json(services.client_event(&event, Some(requester)).await?)),
        None | Some("content") => Ok(Json(event.pdu.content_value())),
        Some(other) => Err(MatrixError::invalid_param(format!("Unknown format {other:?}")).into()),
    }
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
async fn get_state_event(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    QueryParams(query): QueryParams<StateQuery>,
    PathParams((room_id, kind, state_key)): PathParams<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    get_state_event_inner(&services, &requester, &room_id, &kind, &state_key, query.format.as_deref()).await
}

/// The same with an empty state key.
async fn get_state_event_empty_key(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    QueryParams(query): QueryParams<StateQuery>,
    PathParams((room_id, kind)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    get_state_event_inner(&services, &requester, &room_id, &kind, "", query.format.as_deref()).await
}

async fn put_state_inner(
    services: &Services,
    requester: &Requester,
    room_id: &str,
    kind: &str,
    state_key: &str,
    content: Map<String, Value>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(room_id)?;
    let event_id = services.send_state(requester, &room_id, kind, state_key, Value::Object(content)).await?;
    Ok(Json(json!({ "event_id": event_id })))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
async fn put_state(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams((room_id, kind, state_key)): PathParams<(String, String, String)>,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    put_state_inner(&services, &requester, &room_id, &kind, &state_key, content).await
}

/// The same with an empty state key.
async fn put_state_empty_key(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams((room_id, kind)): PathParams<(String, String)>,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    put_state_inner(&services, &requester, &room_id, &kind, "", content).await
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`
async fn send(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((room_id, kind, txn_id)): PathParams<(String, String, String)>,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id =
        services.send_message(&requester, &room_id, &kind, Value::Object(content), &txn_id).await?;
    Ok(Json(json!({ "event_id": event_id })))
}

#[derive(Deserialize)]
struct RedactBody {
    reason: Option<String>,
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
async fn redact(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams((room_id, event_id, txn_id)): PathParams<(String, String, String)>,
    JsonBody(body): JsonBody<RedactBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = parse_event_id(&event_id)?;
    let redaction = services.redact(&requester, &room_id, &event_id, body.reason.as_deref(), &txn_id).await?;
    Ok(Json(json!({ "event_id": redaction })))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
async fn get_event(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((room_id, event_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = parse_event_id(&event_id)?;
    let event = services.get_event_for_user(&requester, &room_id, &event_id).await?;
    Ok(Json(services.client_event(&event, Some(&requester)).await?))
}

pub(crate) fn parse_filter(filter: Option<&str>) -> Result<RoomEventFilter, MatrixError> {
    match filter {
        None => Ok(RoomEventFilter::default()),
        Some(text) => RoomEventFilter::parse_json(text),
    }
}

#[derive(Deserialize)]
struct ContextQuery {
    limit: Option<u64>,
    filter: Option<String>,
}

/// `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
async fn context(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((room_id, event_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<ContextQuery>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = parse_event_id(&event_id)?;
    let filter = parse_filter(query.filter.as_deref())?;
    let limit = filter.limit.or(query.limit).unwrap_or(10);
    let context = services.event_context(&requester, &room_id, &event_id, limit, &filter).await?;
    Ok(Json(context_json(&services, &context, &requester).await?))
}

/// A `/context` answer's body (the client API's and the admin API's).
pub(crate) async fn context_json(
    services: &Services,
    context: &EventContext,
    requester: &Requester,
) -> Result<Value, ApiError> {
    Ok(object([
        ("event", services.client_event(&context.event, Some(requester)).await?),
        ("events_before", Value::Array(events_json(services, &context.before, requester).await?)),
        ("events_after", Value::Array(events_json(services, &context.after, requester).await?)),
        ("start", json!(context.start)),
        ("end", json!(context.end)),
        ("state", Value::Array(events_json(services, &context.state, requester).await?)),
    ]))
}

#[derive(Deserialize)]
struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: Option<String>,
    limit: Option<u64>,
    filter: Option<String>,
}

/// `GET /_matrix/client/v3/rooms/{roomId}/messages`
async fn messages(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams(room_id): PathParams<String>,
    QueryParams(query): QueryParams<MessagesQuery>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let backward = match query.dir.as_deref() {
        Some("b") => true,
        Some("f") => false,
        Some(other) => return Err(MatrixError::invalid_param(format!("Unknown direction {other:?}")).into()),
        None => return Err(MatrixError::missing_param("Missing parameter: dir").into()),
    };
    let filter = parse_filter(query.filter.as_deref())?;
    let limit = query.limit.or(filter.limit).unwrap_or(10);
    let request = MessagesRequest { from: query.from, to: query.to, backward, limit, filter };
    let page = services.room_messages(&requester, &room_id, &request).await?;
    Ok(Json(messages_json(&services, &page, &requester).await?))
}

/// A `/messages` answer's body (the client API's and the admin API's).
pub(crate) async fn messages_json(
    services: &Services,
    page: &EventPage,
    requester: &Requester,
) -> Result<Value, ApiError> {
    let mut body = object([
        ("chunk", Value::Array(events_json(services, &page.events, requester).await?)),
        ("start", json!(page.start)),
    ]);
    if let Some(end) = &page.end {
        body["end"] = json!(end);
    }
    if !page.state.is_empty() {
        body["state"] = Value::Array(events_json(services, &page.state, requester).await?);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct MembersQuery {
    at: Option<String>,
    membership: Option<String>,
    not_membership: Option<String>,
}

/// `GET /_matrix/client/v3/rooms/{roomId}/members`
async fn members(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams(room_id): PathParams<String>,
    QueryParams(query): QueryParams<MembersQuery>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    for value in [&query.membership, &query.not_membership].into_iter().flatten() {
        if !matches!(value.as_str(), "join" | "invite" | "knock" | "leave" | "ban") {
            return Err(MatrixError::invalid_param(format!("Unknown membership {value:?}")).into());
        }
    }
    let events = services
        .room_members(
            &requester,
            &room_id,
            query.at.as_deref(),
            query.membership.as_deref(),
            query.not_membership.as_deref(),
        )
        .await?;
    Ok(Json(object([("chunk", Value::Array(events_json(&services, &events, &requester).await?))])))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
async fn joined_members(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams(room_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let members = services.joined_members(&requester, &room_id).await?;
    let joined: Map<String, Value> = members
        .into_iter()
        .map(|(user, (name, avatar))| {
            let mut member = json!({});
            if let Some(name) = name {
                member["display_name"] = json!(name);
            }
            if let Some(avatar) = avatar {
                member["avatar_url"] = json!(avatar);
            }
            (user, member)
        })
        .collect();
    Ok(Json(object([("joined", Value::Object(joined))])))
}

/// `GET /_matrix/client/v3/joined_rooms`
async fn joined_rooms(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "joined_rooms": services.joined_rooms(&requester.user_id).await? })))
}

#[derive(Deserialize)]
struct TimestampQuery {
    ts: u64,
    dir: String,
}

/// `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`
async fn timestamp_to_event(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams(room_id): PathParams<String>,
    QueryParams(query): QueryParams<TimestampQuery>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let forward = match query.dir.as_str() {
        "f" => true,
        "b" => false,
        other => return Err(MatrixError::invalid_param(format!("Unknown direction {other:?}")).into()),
    };
    let pdu = services.timestamp_to_event(&requester, &room_id, query.ts, forward).await?;
    Ok(Json(json!({ "event_id": pdu.event_id, "origin_server_ts": pdu.origin_server_ts })))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .v3("/createRoom", post(create_room))
        .v3("/rooms/{room_id}/state", get(get_state))
        .v3("/rooms/{room_id}/state/{event_type}", get(get_state_event_empty_key).put(put_state_empty_key))
        .v3("/rooms/{room_id}/state/{event_type}/", get(get_state_event_empty_key).put(put_state_empty_key))
        .v3("/rooms/{room_id}/state/{event_type}/{*state_key}", get(get_state_event).put(put_state))
        .v3("/rooms/{room_id}/send/{event_type}/{txn_id}", put(send))
        .v3("/rooms/{room_id}/redact/{event_id}/{txn_id}", put(redact))
        .v3("/rooms/{room_id}/event/{event_id}", get(get_event))
        .v3("/rooms/{room_id}/context/{event_id}", get(context))
        .v3("/rooms/{room_id}/messages", get(messages))
        .v3("/rooms/{room_id}/members", get(members))
        .v3("/rooms/{room_id}/joined_members", get(joined_members))
        .v3("/joined_rooms", get(joined_rooms))
        .v1("/rooms/{room_id}/timestamp_to_event", get(timestamp_to_event))
}
