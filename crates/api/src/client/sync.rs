//! `GET /sync` and filters: `POST /user/{userId}/filter`, `GET /user/{userId}/filter/{filterId}`.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::Services;
use myelin_service::auth::Requester;
use myelin_service::filter::FilterDefinition;
use myelin_service::records::ReceiptRecord;
use myelin_service::rooms::RoomEvent;
use myelin_service::sync::{
    AccountDataEvent, Ephemeral, StrippedStateEvent, SyncRequest, SyncResponse, SyncToken, SyncedRoom,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

use super::ClientRoutes;
use crate::AppState;
use crate::auth::GuestAuth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams, QueryParams, parse_user_id as parse_user};
use crate::object::object;

#[derive(Deserialize)]
struct SyncQuery {
    since: Option<String>,
    timeout: Option<u64>,
    full_state: Option<String>,
    set_presence: Option<String>,
    filter: Option<String>,
}

async fn load_filter(
    services: &Services,
    requester: &Requester,
    filter: Option<&str>,
) -> Result<FilterDefinition, ApiError> {
    let Some(filter) = filter else { return Ok(FilterDefinition::default()) };
    let text = if filter.trim_start().starts_with('{') {
        filter.to_owned()
    } else {
        services.get_filter(requester, &requester.user_id, filter).await?
    };
    let value: Value =
        serde_json::from_str(&text).map_err(|_| MatrixError::not_json("filter is not JSON"))?;
    Ok(FilterDefinition::from_value(value)?)
}

/// Keeps only the given dotted paths of an event (`event_fields`).
fn select_fields(event: &Value, fields: &[String]) -> Value {
    let mut out = Map::new();
    for field in fields {
        let parts: Vec<&str> = field.split('.').collect();
        let Some(value) = parts.iter().try_fold(event, |source, part| source.get(part)) else { continue };
        let Some((last, parents)) = parts.split_last() else { continue };
        let mut target = Some(&mut out);
        for part in parents {
            target =
                target.and_then(|t| t.entry(part.to_string()).or_insert_with(|| json!({})).as_object_mut());
        }
        // (A parent can only be missing as an object if the event had a non-object there,
        // and then the field itself was not found.)
        if let Some(target) = target {
            target.insert((*last).to_owned(), value.clone());
        }
    }
    Value::Object(out)
}

pub(super) async fn sync_events(
    services: &Services,
    events: &[RoomEvent],
    requester: &Requester,
    filter: &FilterDefinition,
) -> Result<Vec<Value>, ApiError> {
    let federation = filter.event_format.as_deref() == Some("federation");
    let formatted =
        if federation { Vec::new() } else { services.client_events(events, Some(requester)).await? };
    let mut formatted = formatted.into_iter();
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let mut json = if federation {
            serde_json::from_str(event.pdu.json_str())
                .map_err(|e| myelin_service::Error::internal_with("an event's JSON does not parse", e))?
        } else {
            let mut json = formatted
                .next()
                .ok_or_else(|| myelin_service::Error::internal("fewer client events than events"))?;
            if let Some(object) = json.as_object_mut() {
                object.remove("room_id");
            }
            json
        };
        if let Some(fields) = &filter.event_fields {
            json = select_fields(&json, fields);
        }
        out.push(json);
    }
    Ok(out)
}

/// Account data events as a list: `[{"type", "content"}]`.
pub(super) fn account_data_events(events: &[AccountDataEvent]) -> Value {
    events.iter().map(|e| json!({"type": e.kind, "content": e.content})).collect()
}

/// Account data events: `{"events": [{"type", "content"}]}`.
fn account_data_json(events: &[AccountDataEvent]) -> Value {
    object([("events", account_data_events(events))])
}

/// A joined room's `m.typing` and `m.receipt` events (receipts grouped by event, type and
/// user).
fn ephemeral_json(ephemeral: &Ephemeral) -> Value {
    let mut events = Vec::new();
    if let Some(typing) = &ephemeral.typing {
        events.push(json!({"type": "m.typing", "content": {"user_ids": typing}}));
    }
    if let Some(receipt) = receipt_event(&ephemeral.receipts) {
        events.push(receipt);
    }
    object([("events", Value::Array(events))])
}

/// One `m.receipt` event of receipts (grouped by event, type and user), `None` for none.
pub(super) fn receipt_event(receipts: &[ReceiptRecord]) -> Option<Value> {
    let mut content: BTreeMap<&str, BTreeMap<&str, BTreeMap<&str, Value>>> = BTreeMap::new();
    for receipt in receipts {
        let mut body = json!({"ts": receipt.ts});
        if !receipt.thread_id.is_empty() {
            body["thread_id"] = json!(receipt.thread_id);
        }
        content
            .entry(&receipt.event_id)
            .or_default()
            .entry(&receipt.receipt_type)
            .or_default()
            .insert(&receipt.user_id, body);
    }
    (!content.is_empty()).then(|| json!({"type": "m.receipt", "content": content}))
}

/// Stripped state (for invitees and knockers) as a list: type, state key, content and sender
/// only.
pub(super) fn stripped_events(events: &[StrippedStateEvent]) -> Value {
    events.iter().map(StrippedStateEvent::to_json).collect()
}

/// Stripped state: `{"events": [...]}`.
fn stripped_json(events: &[StrippedStateEvent]) -> Value {
    object([("events", stripped_events(events))])
}

async fn room_json(
    services: &Services,
    room: &SyncedRoom,
    requester: &Requester,
    filter: &FilterDefinition,
    joined: bool,
) -> Result<Value, ApiError> {
    let timeline = sync_events(services, &room.timeline.events, requester, filter).await?;
    let state = sync_events(services, &room.state, requester, filter).await?;
    let mut body = object([
        (
            "timeline",
            object([
                ("events", Value::Array(timeline)),
                ("limited", json!(room.timeline.limited)),
                ("prev_batch", json!(room.timeline.prev_batch)),
            ]),
        ),
        ("state", object([("events", Value::Array(state))])),
        ("account_data", account_data_json(&room.account_data)),
    ]);
    if joined {
        body["ephemeral"] = ephemeral_json(&room.ephemeral);
        body["unread_notifications"] = json!({
            "notification_count": room.unread.notifications,
            "highlight_count": room.unread.highlights,
        });
        if filter.room.timeline.unread_thread_notifications {
            let threads: Map<String, Value> = room
                .unread
                .threads
                .iter()
                .map(|(root, (n, h))| (root.clone(), json!({"notification_count": n, "highlight_count": h})))
                .collect();
            body["unread_thread_notifications"] = Value::Object(threads);
        }
        if let Some(summary) = &room.summary {
            body["summary"] = json!({
                "m.heroes": summary.heroes,
                "m.joined_member_count": summary.joined_member_count,
                "m.invited_member_count": summary.invited_member_count,
            });
        }
    }
    Ok(body)
}

async fn response_json(
    services: &Services,
    response: &SyncResponse,
    requester: &Requester,
    filter: &FilterDefinition,
) -> Result<Value, ApiError> {
    let mut join = Map::new();
    for (room_id, room) in &response.join {
        join.insert(room_id.to_string(), room_json(services, room, requester, filter, true).await?);
    }
    let mut leave = Map::new();
    for (room_id, room) in &response.leave {
        leave.insert(room_id.to_string(), room_json(services, room, requester, filter, false).await?);
    }
    let presence: Vec<Value> = response
        .presence
        .iter()
        .map(|r| myelin_service::presence::presence_event(r, response.presence_at))
        .collect();
    let invite: Map<String, Value> = response
        .invite
        .iter()
        .map(|(room, state)| (room.to_string(), object([("invite_state", stripped_json(state))])))
        .collect();
    let knock: Map<String, Value> = response
        .knock
        .iter()
        .map(|(room, state)| (room.to_string(), object([("knock_state", stripped_json(state))])))
        .collect();
    let to_device: Vec<Value> = response
        .to_device
        .iter()
        .map(|event| json!({"sender": event.sender, "type": event.kind, "content": event.content}))
        .collect();
    let rooms = object([
        ("join", Value::Object(join)),
        ("invite", Value::Object(invite)),
        ("knock", Value::Object(knock)),
        ("leave", Value::Object(leave)),
    ]);
    Ok(object([
        ("next_batch", Value::String(response.next_batch.to_string())),
        ("rooms", rooms),
        ("account_data", account_data_json(&response.account_data)),
        ("presence", object([("events", Value::Array(presence))])),
        ("to_device", object([("events", Value::Array(to_device))])),
        (
            "device_lists",
            json!({ "changed": response.device_lists.changed, "left": response.device_lists.left }),
        ),
        ("device_one_time_keys_count", json!(response.device_one_time_keys_count)),
        ("device_unused_fallback_key_types", json!(response.device_unused_fallback_key_types)),
    ]))
}

/// `GET /_matrix/client/v3/sync`
async fn sync(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    QueryParams(query): QueryParams<SyncQuery>,
) -> ApiResult<Json<Value>> {
    let since = query.since.as_deref().map(SyncToken::parse).transpose()?;
    let full_state = match query.full_state.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(MatrixError::invalid_param(format!(
                "full_state must be true or false, not {other:?}"
            ))
            .into());
        }
    };
    if let Some(presence) = &query.set_presence
        && !matches!(presence.as_str(), "online" | "offline" | "unavailable")
    {
        return Err(MatrixError::invalid_param(format!("Invalid set_presence {presence:?}")).into());
    }
    let filter = load_filter(&services, &requester, query.filter.as_deref()).await?;
    let request = SyncRequest {
        since,
        timeout_ms: query.timeout.unwrap_or(0),
        full_state,
        set_presence: query.set_presence,
        filter: filter.clone(),
    };
    let response = services.sync(&requester, request).await?;
    Ok(Json(response_json(&services, &response, &requester, &filter).await?))
}

/// `POST /_matrix/client/v3/user/{userId}/filter`
async fn create_filter(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams(user_id): PathParams<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let filter_id = services.create_filter(&requester, &user_id, body).await?;
    Ok(Json(json!({ "filter_id": filter_id })))
}

/// `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
async fn get_filter(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((user_id, filter_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let text = services.get_filter(&requester, &user_id, &filter_id).await?;
    Ok(Json(serde_json::from_str(&text).map_err(myelin_service::Error::internal)?))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .v3("/sync", get(sync))
        .v3("/user/{user_id}/filter", post(create_filter))
        .v3("/user/{user_id}/filter/{filter_id}", get(get_filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_fields_keep_only_the_named_paths() {
        let event = json!({"type": "m.room.message", "content": {"body": "hi", "msgtype": "m.text"}, "sender": "@a:x"});
        let fields = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            select_fields(&event, &fields(&["type", "content.body", "missing.path", "type.nested"])),
            json!({"type": "m.room.message", "content": {"body": "hi"}})
        );
        assert_eq!(
            select_fields(&event, &fields(&["content", "content.body"])),
            json!({"content": {"body": "hi", "msgtype": "m.text"}})
        );
        assert_eq!(select_fields(&event, &fields(&[""])), json!({}));
    }
}
