//! Invites, invitee side: `PUT /_matrix/federation/v1/invite` (room versions 1 and 2, the event
//! as the body) and `/v2/invite` (every version).

use axum::extract::State;
use axum::routing::put;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::ServerAuth;
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{PathParams, parse_event_id, parse_json, parse_room_id};

/// The stripped state of an invite: `invite_room_state` at the top of a v2 body, or in the
/// event's `unsigned` (v1, and older v2 senders).
fn invite_room_state(body: &Value, event: &Value) -> Vec<Value> {
    body.get("invite_room_state")
        .or_else(|| event.get("unsigned").and_then(|unsigned| unsigned.get("invite_room_state")))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

async fn invite(
    services: &AppState,
    room_id: &str,
    event_id: &str,
    room_version: &str,
    event: &Value,
    stripped: &[Value],
    auth: &ServerAuth,
) -> ApiResult<Value> {
    let room_id = parse_room_id(room_id)?;
    let event_id = parse_event_id(event_id)?;
    let signed =
        services.receive_invite(&auth.origin, &room_id, &event_id, room_version, event, stripped).await?;
    Ok(json!({ "event": signed }))
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`
async fn invite_v2(
    State(services): State<AppState>,
    PathParams((room_id, event_id)): PathParams<(String, String)>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let body: Value = parse_json(&auth.body)?;
    let Some(event) = body.get("event").filter(|event| event.is_object()) else {
        return Err(myelin_core::MatrixError::bad_json("event must be an object").into());
    };
    let Some(room_version) = body.get("room_version").and_then(Value::as_str) else {
        return Err(myelin_core::MatrixError::bad_json("room_version must be a string").into());
    };
    let stripped = invite_room_state(&body, event);
    Ok(Json(invite(&services, &room_id, &event_id, room_version, event, &stripped, &auth).await?))
}

/// `PUT /_matrix/federation/v1/invite/{roomId}/{eventId}`: the event is the body, the room's
/// version 1 (as Synapse); the answer `[200, {"event": ...}]`.
async fn invite_v1(
    State(services): State<AppState>,
    PathParams((room_id, event_id)): PathParams<(String, String)>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let event: Value = parse_json(&auth.body)?;
    if !event.is_object() {
        return Err(myelin_core::MatrixError::bad_json("The body must be an event").into());
    }
    let stripped = invite_room_state(&Value::Null, &event);
    Ok(Json(json!([200, invite(&services, &room_id, &event_id, "1", &event, &stripped, &auth).await?])))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/federation/v1/invite/{room_id}/{event_id}", put(invite_v1))
        .route("/_matrix/federation/v2/invite/{room_id}/{event_id}", put(invite_v2))
}
