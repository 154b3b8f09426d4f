//! Relations and threads: `/_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`
//! and `/_matrix/client/v1/rooms/{roomId}/threads`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use myelin_core::MatrixError;
use myelin_service::Services;
use myelin_service::auth::Requester;
use myelin_service::rooms::relations::{RECURSION_DEPTH, RelationsRequest, ThreadsInclude};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ClientRoutes;
use super::rooms::{events_json, parse_event_id, parse_room_id};
use crate::AppState;
use crate::auth::{Auth, GuestAuth};
use crate::error::ApiResult;
use crate::extract::{PathParams, QueryParams};
use crate::object::object;

/// Synapse's default page size for both endpoints.
const DEFAULT_LIMIT: u64 = 5;

#[derive(Deserialize)]
struct RelationsQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<u64>,
    dir: Option<String>,
    recurse: Option<bool>,
}

async fn relations_inner(
    services: &Services,
    requester: &Requester,
    (room_id, event_id): (&str, &str),
    rel_type: Option<String>,
    event_type: Option<String>,
    query: RelationsQuery,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(room_id)?;
    let event_id = parse_event_id(event_id)?;
    let forward = match query.dir.as_deref() {
        None | Some("b") => false,
        Some("f") => true,
        Some(other) => return Err(MatrixError::invalid_param(format!("Unknown direction {other:?}")).into()),
    };
    let request = RelationsRequest {
        rel_type,
        event_type,
        from: query.from,
        to: query.to,
        limit: query.limit.unwrap_or(DEFAULT_LIMIT),
        forward,
        recurse: query.recurse.unwrap_or(false),
    };
    let page = services.relations(requester, &room_id, &event_id, &request).await?;
    let mut body = object([("chunk", Value::Array(events_json(services, &page.events, requester).await?))]);
    if let Some(next_batch) = page.next_batch {
        body["next_batch"] = json!(next_batch);
    }
    if let Some(prev_batch) = page.prev_batch {
        body["prev_batch"] = json!(prev_batch);
    }
    // Present exactly when the client supplied `recurse`.
    if let Some(recurse) = query.recurse {
        body["recursion_depth"] = json!(if recurse { RECURSION_DEPTH } else { 1 });
    }
    Ok(Json(body))
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}`
async fn relations(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((room_id, event_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<RelationsQuery>,
) -> ApiResult<Json<Value>> {
    relations_inner(&services, &requester, (&room_id, &event_id), None, None, query).await
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}`
async fn relations_by_type(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((room_id, event_id, rel_type)): PathParams<(String, String, String)>,
    QueryParams(query): QueryParams<RelationsQuery>,
) -> ApiResult<Json<Value>> {
    relations_inner(&services, &requester, (&room_id, &event_id), Some(rel_type), None, query).await
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`
async fn relations_by_type_and_event_type(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((room_id, event_id, rel_type, event_type)): PathParams<(String, String, String, String)>,
    QueryParams(query): QueryParams<RelationsQuery>,
) -> ApiResult<Json<Value>> {
    relations_inner(&services, &requester, (&room_id, &event_id), Some(rel_type), Some(event_type), query)
        .await
}

#[derive(Deserialize)]
struct ThreadsQuery {
    include: Option<String>,
    from: Option<String>,
    limit: Option<u64>,
}

/// `GET /_matrix/client/v1/rooms/{roomId}/threads`
async fn threads(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(room_id): PathParams<String>,
    QueryParams(query): QueryParams<ThreadsQuery>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let include = match query.include.as_deref() {
        None | Some("all") => ThreadsInclude::All,
        Some("participated") => ThreadsInclude::Participated,
        Some(other) => return Err(MatrixError::invalid_param(format!("Unknown include {other:?}")).into()),
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 {
        return Err(MatrixError::invalid_param("limit must be greater than zero").into());
    }
    let page = services.threads(&requester, &room_id, include, query.from.as_deref(), limit).await?;
    let mut body = object([("chunk", Value::Array(events_json(&services, &page.roots, &requester).await?))]);
    if let Some(next_batch) = page.next_batch {
        body["next_batch"] = json!(next_batch);
    }
    Ok(Json(body))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .v1("/rooms/{room_id}/relations/{event_id}", get(relations))
        .v1("/rooms/{room_id}/relations/{event_id}/{rel_type}", get(relations_by_type))
        .v1(
            "/rooms/{room_id}/relations/{event_id}/{rel_type}/{event_type}",
            get(relations_by_type_and_event_type),
        )
        .v1("/rooms/{room_id}/threads", get(threads))
}
