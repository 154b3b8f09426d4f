//! The server-server API (`/_matrix/federation`, `/_matrix/key`).

mod auth;
mod hierarchy;
mod invite;
mod media;
mod membership;
mod reads;
mod send;

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use myelin_core::MatrixError;
use ruma::OwnedServerName;
use serde::Deserialize;
use serde_json::{Value, json};

pub use auth::ServerAuth;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams, QueryParams, parse_user_id};

/// `GET /_matrix/federation/v1/version`
async fn version() -> Json<Value> {
    Json(json!({ "server": { "name": "Myelin", "version": env!("CARGO_PKG_VERSION") } }))
}

/// `GET /_matrix/key/v2/server`: this server's published signing keys, self-signed.
async fn server_keys(State(services): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(services.keys.server_keys_document()?))
}

#[derive(Deserialize)]
struct ProfileQuery {
    user_id: Option<String>,
    field: Option<String>,
}

/// `GET /_matrix/federation/v1/query/profile`
async fn query_profile(
    State(services): State<AppState>,
    QueryParams(query): QueryParams<ProfileQuery>,
    _auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let user_id = query.user_id.ok_or_else(|| MatrixError::missing_param("Missing user_id"))?;
    let user_id = parse_user_id(&user_id)?;
    let profile = services.federation_profile_query(&user_id, query.field.as_deref()).await?;
    Ok(Json(Value::Object(profile)))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct KeyCriteria {
    minimum_valid_until_ts: Option<i64>,
}

#[derive(Deserialize)]
struct NotaryQuery {
    server_keys: BTreeMap<String, BTreeMap<String, KeyCriteria>>,
}

/// `POST /_matrix/key/v2/query`: keys of other servers, through this server as a notary.
async fn notary_query(
    State(services): State<AppState>,
    JsonBody(query): JsonBody<NotaryQuery>,
) -> ApiResult<Json<Value>> {
    let now = now_ms();
    let mut queries = Vec::new();
    for (server, criteria) in query.server_keys {
        let server = OwnedServerName::try_from(server.as_str())
            .map_err(|_| MatrixError::invalid_param(format!("Invalid server name {server:?}")))?;
        let minimum = criteria.values().filter_map(|c| c.minimum_valid_until_ts).max().unwrap_or(now);
        queries.push((server, minimum));
    }
    let documents = services.notary_key_documents(&queries).await?;
    Ok(Json(json!({ "server_keys": documents })))
}

#[derive(Deserialize)]
struct NotaryGetQuery {
    minimum_valid_until_ts: Option<i64>,
}

/// `GET /_matrix/key/v2/query/{serverName}`
async fn notary_query_one(
    State(services): State<AppState>,
    PathParams(server): PathParams<String>,
    QueryParams(query): QueryParams<NotaryGetQuery>,
) -> ApiResult<Json<Value>> {
    let server = OwnedServerName::try_from(server.as_str())
        .map_err(|_| MatrixError::invalid_param(format!("Invalid server name {server:?}")))?;
    let minimum = query.minimum_valid_until_ts.unwrap_or_else(now_ms);
    let documents = services.notary_key_documents(&[(server, minimum)]).await?;
    Ok(Json(json!({ "server_keys": documents })))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/federation/v1/version", get(version))
        .route("/_matrix/federation/v1/query/profile", get(query_profile))
        .merge(reads::routes())
        .merge(media::routes())
        .merge(hierarchy::routes())
        .merge(membership::routes())
        .merge(invite::routes())
        .merge(send::routes())
}

pub fn key_routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/key/v2/server", get(server_keys))
        .route("/_matrix/key/v2/server/{key_id}", get(server_keys))
        .route("/_matrix/key/v2/query", axum::routing::post(notary_query))
        .route("/_matrix/key/v2/query/{server_name}", get(notary_query_one))
}
