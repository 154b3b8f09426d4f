//! The room directory: aliases (`/directory/room/{roomAlias}`, `/rooms/{roomId}/aliases`),
//! publication (`/directory/list/room/{roomId}`) and the published room list (`/publicRooms`).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::rooms::directory::{PublicRoomsPage, PublicRoomsRequest};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ClientRoutes;
use super::rooms::parse_room_id;
use super::spaces::published_room_json;
use crate::AppState;
use crate::auth::{Auth, GuestAuth, OptionalAuth};
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams, QueryParams};

#[derive(Deserialize)]
struct AliasBody {
    room_id: String,
}

/// `PUT /_matrix/client/v3/directory/room/{roomAlias}`
async fn put_alias(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(alias): PathParams<String>,
    JsonBody(body): JsonBody<AliasBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&body.room_id)?;
    services.create_room_alias(&requester, &alias, &room_id).await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/directory/room/{roomAlias}`
async fn get_alias(
    State(services): State<AppState>,
    PathParams(alias): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let (room_id, servers) = services.resolve_room_alias(&alias).await?;
    Ok(Json(json!({ "room_id": room_id, "servers": servers })))
}

/// `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
async fn delete_alias(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(alias): PathParams<String>,
) -> ApiResult<Json<Value>> {
    services.delete_room_alias(&requester, &alias).await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/aliases`
async fn room_aliases(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(room_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let aliases = services.room_aliases(&requester, &room_id).await?;
    Ok(Json(json!({ "aliases": aliases })))
}

/// `GET /_matrix/client/v3/directory/list/room/{roomId}`
async fn get_visibility(
    State(services): State<AppState>,
    PathParams(room_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let published = services.room_published(&room_id).await?;
    Ok(Json(json!({ "visibility": if published { "public" } else { "private" } })))
}

#[derive(Deserialize)]
struct VisibilityBody {
    visibility: Option<String>,
}

/// `PUT /_matrix/client/v3/directory/list/room/{roomId}`
async fn put_visibility(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(room_id): PathParams<String>,
    JsonBody(body): JsonBody<VisibilityBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let publish = match body.visibility.as_deref() {
        None | Some("public") => true,
        Some("private") => false,
        Some(other) => {
            return Err(MatrixError::bad_json(format!(
                "visibility must be public or private, not {other:?}"
            ))
            .into());
        }
    };
    services.set_room_published(&requester, &room_id, publish).await?;
    Ok(Json(json!({})))
}

pub(crate) fn page_json(page: PublicRoomsPage) -> Value {
    let chunk: Vec<Value> = page.chunk.iter().map(|room| Value::Object(published_room_json(room))).collect();
    let mut body = json!({
        "chunk": chunk,
        "total_room_count_estimate": page.total_room_count_estimate,
    });
    if let Some(next_batch) = page.next_batch {
        body["next_batch"] = json!(next_batch);
    }
    if let Some(prev_batch) = page.prev_batch {
        body["prev_batch"] = json!(prev_batch);
    }
    body
}

/// A negative limit is refused; zero means no limit.
pub(crate) fn parse_limit(limit: Option<i64>) -> Result<Option<u64>, MatrixError> {
    limit
        .map(|limit| {
            u64::try_from(limit).map_err(|_| MatrixError::invalid_param("limit must not be negative"))
        })
        .transpose()
}

#[derive(Deserialize)]
struct PublicRoomsQuery {
    limit: Option<i64>,
    since: Option<String>,
    server: Option<String>,
}

/// `GET /_matrix/client/v3/publicRooms`
///
/// Authentication is required unless `allow_public_rooms_without_auth` is set, and even then
/// when a `server` is named (as in Synapse, which checks before comparing it with its own
/// name).
async fn get_public_rooms(
    State(services): State<AppState>,
    OptionalAuth(requester): OptionalAuth,
    QueryParams(query): QueryParams<PublicRoomsQuery>,
) -> ApiResult<Json<Value>> {
    if requester.is_none()
        && (!services.config.room.allow_public_rooms_without_auth || query.server.is_some())
    {
        return Err(MatrixError::missing_token().into());
    }
    let request = PublicRoomsRequest {
        limit: parse_limit(query.limit)?,
        since: query.since,
        server: query.server,
        ..Default::default()
    };
    Ok(Json(page_json(services.public_rooms(&request).await?)))
}

/// The `filter` of a `publicRooms` body (the client's and the federation's).
#[derive(Deserialize, Default)]
pub(crate) struct PublicRoomsFilter {
    pub(crate) generic_search_term: Option<String>,
    pub(crate) room_types: Option<Vec<Option<String>>>,
}

/// A `POST publicRooms` body (the client's and the federation's).
#[derive(Deserialize)]
pub(crate) struct PublicRoomsBody {
    pub(crate) limit: Option<i64>,
    pub(crate) since: Option<String>,
    pub(crate) filter: Option<PublicRoomsFilter>,
    #[serde(default)]
    pub(crate) include_all_networks: bool,
    pub(crate) third_party_instance_id: Option<String>,
}

#[derive(Deserialize)]
struct ServerQuery {
    server: Option<String>,
}

/// `POST /_matrix/client/v3/publicRooms`
async fn post_public_rooms(
    State(services): State<AppState>,
    GuestAuth(_requester): GuestAuth,
    QueryParams(query): QueryParams<ServerQuery>,
    JsonBody(body): JsonBody<PublicRoomsBody>,
) -> ApiResult<Json<Value>> {
    let filter = body.filter.unwrap_or_default();
    let request = PublicRoomsRequest {
        limit: parse_limit(body.limit)?,
        since: body.since,
        server: query.server,
        generic_search_term: filter.generic_search_term,
        room_types: filter.room_types,
        include_all_networks: body.include_all_networks,
        third_party_instance_id: body.third_party_instance_id,
    };
    Ok(Json(page_json(services.public_rooms(&request).await?)))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .v3("/directory/room/{room_alias}", get(get_alias).put(put_alias).delete(delete_alias))
        .v3("/rooms/{room_id}/aliases", get(room_aliases))
        .v3("/directory/list/room/{room_id}", get(get_visibility).put(put_visibility))
        .v3("/publicRooms", get(get_public_rooms).post(post_public_rooms))
}
