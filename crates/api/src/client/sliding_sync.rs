//! Simplified sliding sync (MSC4186):
//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`; the logic is
//! `myelin_service::sliding_sync`, this writes its answer in MSC4186's shape.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use myelin_service::Services;
use myelin_service::auth::Requester;
use myelin_service::filter::FilterDefinition;
use myelin_service::rooms::RoomEvent;
use myelin_service::sliding_sync::SlidingSyncResponse;
use myelin_service::sliding_sync::extensions::Extensions;
use myelin_service::sliding_sync::request::SlidingSyncRequest;
use myelin_service::sliding_sync::room::SlidingRoom;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::sync::{account_data_events, receipt_event, stripped_events, sync_events};
use crate::AppState;
use crate::auth::GuestAuth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, QueryParams};
use crate::object::object;

pub(crate) const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

#[derive(Deserialize)]
struct SlidingSyncQuery {
    pos: Option<String>,
    timeout: Option<u64>,
}

/// One room's JSON; `formatted` yields its `required_state` events, then its `timeline` events,
/// in client format (see [`response_json`]).
fn room_json(room: &SlidingRoom, formatted: &mut impl Iterator<Item = Value>) -> Value {
    let mut body = Map::new();
    body.insert("notification_count".into(), json!(room.notification_count));
    body.insert("highlight_count".into(), json!(room.highlight_count));
    body.insert("bump_stamp".into(), json!(room.bump_stamp));
    if let Some(count) = room.joined_count {
        body.insert("joined_count".into(), json!(count));
    }
    if let Some(count) = room.invited_count {
        body.insert("invited_count".into(), json!(count));
    }
    if let Some(name) = &room.name {
        body.insert("name".into(), json!(name));
    }
    if let Some(avatar) = &room.avatar {
        body.insert("avatar".into(), json!(avatar));
    }
    if let Some(heroes) = room.heroes.as_ref().filter(|h| !h.is_empty()) {
        let heroes: Vec<Value> = heroes
            .iter()
            .map(|hero| {
                let mut out = json!({"user_id": hero.user_id});
                if let Some(name) = &hero.displayname {
                    out["displayname"] = json!(name);
                }
                if let Some(url) = &hero.avatar_url {
                    out["avatar_url"] = json!(url);
                }
                out
            })
            .collect();
        body.insert("heroes".into(), Value::Array(heroes));
    }
    if room.initial {
        body.insert("initial".into(), json!(true));
    }
    if room.expanded_timeline {
        body.insert("expanded_timeline".into(), json!(true));
        body.insert("unstable_expanded_timeline".into(), json!(true));
    }
    if !room.required_state.is_empty() {
        let events: Vec<Value> = formatted.by_ref().take(room.required_state.len()).collect();
        body.insert("required_state".into(), Value::Array(events));
    }
    if !room.timeline.is_empty() {
        let events: Vec<Value> = formatted.by_ref().take(room.timeline.len()).collect();
        body.insert("timeline".into(), Value::Array(events));
    }
    if let Some(limited) = room.limited {
        body.insert("limited".into(), json!(limited));
    }
    if let Some(prev_batch) = &room.prev_batch {
        body.insert("prev_batch".into(), json!(prev_batch));
    }
    if let Some(num_live) = room.num_live {
        body.insert("num_live".into(), json!(num_live));
    }
    if room.is_dm {
        body.insert("is_dm".into(), json!(true));
    }
    if let Some(state) = room.invite_state.as_ref().filter(|s| !s.is_empty()) {
        body.insert("invite_state".into(), stripped_events(state));
    }
    Value::Object(body)
}

fn extensions_json(extensions: &Extensions) -> Value {
    let mut out = Map::new();
    if let Some(to_device) = &extensions.to_device {
        let events: Vec<Value> = to_device
            .events
            .iter()
            .map(|event| json!({"sender": event.sender, "type": event.kind, "content": event.content}))
            .collect();
        out.insert(
            "to_device".into(),
            object([("next_batch", json!(to_device.next_batch)), ("events", Value::Array(events))]),
        );
    }
    if let Some(e2ee) = &extensions.e2ee {
        let mut body = json!({
            "device_one_time_keys_count": e2ee.device_one_time_keys_count,
            "device_unused_fallback_key_types": e2ee.device_unused_fallback_key_types,
        });
        if let Some(lists) = &e2ee.device_lists {
            body["device_lists"] = json!({"changed": lists.changed, "left": lists.left});
        }
        out.insert("e2ee".into(), body);
    }
    if let Some(account_data) = &extensions.account_data {
        let rooms: Map<String, Value> = account_data
            .rooms
            .iter()
            .map(|(room, events)| (room.clone(), account_data_events(events)))
            .collect();
        out.insert(
            "account_data".into(),
            object([("global", account_data_events(&account_data.global)), ("rooms", Value::Object(rooms))]),
        );
    }
    if let Some(receipts) = &extensions.receipts {
        let rooms: Map<String, Value> = receipts
            .iter()
            .filter_map(|(room, receipts)| Some((room.to_string(), receipt_event(receipts)?)))
            .collect();
        out.insert("receipts".into(), object([("rooms", Value::Object(rooms))]));
    }
    if let Some(typing) = &extensions.typing {
        let rooms: Map<String, Value> = typing
            .iter()
            .map(|(room, users)| {
                (room.to_string(), json!({"type": "m.typing", "content": {"user_ids": users}}))
            })
            .collect();
        out.insert("typing".into(), object([("rooms", Value::Object(rooms))]));
    }
    Value::Object(out)
}

async fn response_json(
    services: &Services,
    requester: &Requester,
    response: &SlidingSyncResponse,
) -> Result<Value, ApiError> {
    let lists: Map<String, Value> =
        response.lists.iter().map(|(name, count)| (name.clone(), json!({"count": count}))).collect();
    // Every room's events formatted together: what they need from the store (transaction
    // IDs, previous contents, relation counts) is read once for all of them.
    let events: Vec<RoomEvent> = response
        .rooms
        .values()
        .flat_map(|room| room.required_state.iter().chain(&room.timeline))
        .cloned()
        .collect();
    let formatted = sync_events(services, &events, requester, &FilterDefinition::default()).await?;
    let mut formatted = formatted.into_iter();
    let mut rooms = Map::new();
    for (room_id, room) in &response.rooms {
        rooms.insert(room_id.to_string(), room_json(room, &mut formatted));
    }
    Ok(object([
        ("pos", json!(response.pos)),
        ("lists", Value::Object(lists)),
        ("rooms", Value::Object(rooms)),
        ("extensions", extensions_json(&response.extensions)),
    ]))
}

/// `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`
async fn sliding_sync(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    QueryParams(query): QueryParams<SlidingSyncQuery>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let request = SlidingSyncRequest::parse(body, query.pos.as_deref(), query.timeout)?;
    let response = services.sliding_sync(&requester, request).await?;
    Ok(Json(response_json(&services, &requester, &response).await?))
}

pub fn routes() -> Router<AppState> {
    Router::new().route(PATH, post(sliding_sync))
}
