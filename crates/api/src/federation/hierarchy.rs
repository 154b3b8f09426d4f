//! `GET /_matrix/federation/v1/hierarchy/{roomId}`: a space and its children for another
//! server, in the client `/hierarchy`'s shapes.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ServerAuth;
use crate::AppState;
use crate::client::spaces::{child_json, room_summary_json};
use crate::error::ApiResult;
use crate::extract::{PathParams, QueryParams, parse_room_id};

#[derive(Deserialize)]
struct HierarchyQuery {
    #[serde(default)]
    suggested_only: bool,
}

/// `GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only=`
async fn hierarchy(
    State(services): State<AppState>,
    PathParams(room_id): PathParams<String>,
    QueryParams(query): QueryParams<HierarchyQuery>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let answer = services.federation_hierarchy(&auth.origin, &room_id, query.suggested_only).await?;
    let mut room = room_summary_json(&answer.room.summary);
    room.insert(
        "children_state".to_owned(),
        Value::Array(answer.room.children_state.iter().map(child_json).collect()),
    );
    let children: Vec<Value> =
        answer.children.iter().map(|summary| Value::Object(room_summary_json(summary))).collect();
    Ok(Json(json!({
        "room": room,
        "children": children,
        "inaccessible_children": answer.inaccessible_children,
    })))
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/_matrix/federation/v1/hierarchy/{room_id}", get(hierarchy))
}
