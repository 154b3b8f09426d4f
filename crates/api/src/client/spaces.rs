//! Spaces and room previews: `/rooms/{roomId}/hierarchy`, `/room_summary/{roomIdOrAlias}`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use myelin_service::rooms::spaces::{HierarchyRequest, RoomSummary, SpaceChild};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ClientRoutes;
use super::rooms::parse_room_id;
use crate::AppState;
use crate::auth::{GuestAuth, OptionalAuth};
use crate::error::ApiResult;
use crate::extract::{PathParams, QueryParams};

/// A room as `/publicRooms` lists it (the spec's `PublishedRoomsChunk`); optional fields are
/// omitted when the room has no value for them.
pub(crate) fn published_room_json(summary: &RoomSummary) -> Map<String, Value> {
    let mut room = Map::new();
    room.insert("room_id".to_owned(), json!(summary.room_id));
    room.insert("num_joined_members".to_owned(), json!(summary.num_joined_members));
    room.insert("world_readable".to_owned(), json!(summary.world_readable));
    room.insert("guest_can_join".to_owned(), json!(summary.guest_can_join));
    let optional = [
        ("name", &summary.name),
        ("topic", &summary.topic),
        ("canonical_alias", &summary.canonical_alias),
        ("avatar_url", &summary.avatar_url),
        ("join_rule", &summary.join_rule),
        ("room_type", &summary.room_type),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            room.insert(key.to_owned(), json!(value));
        }
    }
    room
}

/// The spec's `RoomSummary`: the published-room fields plus `room_version`, `encryption` and
/// `allowed_room_ids`.
pub(crate) fn room_summary_json(summary: &RoomSummary) -> Map<String, Value> {
    let mut room = published_room_json(summary);
    room.insert("room_version".to_owned(), json!(summary.room_version));
    if let Some(encryption) = &summary.encryption {
        room.insert("encryption".to_owned(), json!(encryption));
    }
    if !summary.allowed_room_ids.is_empty() {
        room.insert("allowed_room_ids".to_owned(), json!(summary.allowed_room_ids));
    }
    room
}

/// A stripped `m.space.child` event with its `origin_server_ts`.
pub(crate) fn child_json(child: &SpaceChild) -> Value {
    json!({
        "type": "m.space.child",
        "state_key": child.state_key,
        "content": child.content,
        "sender": child.sender,
        "origin_server_ts": child.origin_server_ts,
    })
}

#[derive(Deserialize)]
struct HierarchyQuery {
    #[serde(default)]
    suggested_only: bool,
    max_depth: Option<u64>,
    limit: Option<u64>,
    from: Option<String>,
}

/// `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`
async fn hierarchy(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams(room_id): PathParams<String>,
    QueryParams(query): QueryParams<HierarchyQuery>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let request = HierarchyRequest {
        suggested_only: query.suggested_only,
        max_depth: query.max_depth,
        limit: query.limit,
        from: query.from,
    };
    let page = services.space_hierarchy(&requester, &room_id, &request).await?;
    let rooms: Vec<Value> = page
        .rooms
        .iter()
        .map(|room| {
            let mut entry = room_summary_json(&room.summary);
            entry.insert(
                "children_state".to_owned(),
                Value::Array(room.children_state.iter().map(child_json).collect()),
            );
            Value::Object(entry)
        })
        .collect();
    let mut body = json!({ "rooms": rooms });
    if let Some(next_batch) = page.next_batch {
        body["next_batch"] = json!(next_batch);
    }
    Ok(Json(body))
}

/// `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}`
///
/// `via` is accepted and unused: it names servers to ask over federation, which is not
/// available yet.
async fn room_summary(
    State(services): State<AppState>,
    OptionalAuth(requester): OptionalAuth,
    PathParams(room): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let (summary, membership) = services.room_summary(requester.as_ref(), &room).await?;
    let mut body = room_summary_json(&summary);
    if let Some(membership) = membership {
        body.insert("membership".to_owned(), json!(membership));
    }
    Ok(Json(Value::Object(body)))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .v1("/rooms/{room_id}/hierarchy", get(hierarchy))
        .v1("/room_summary/{room_id_or_alias}", get(room_summary))
}
