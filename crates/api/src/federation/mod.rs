//! The server-server API (`/_matrix/federation`, `/_matrix/key`).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiResult;

/// `GET /_matrix/federation/v1/version`
async fn version() -> Json<Value> {
    Json(json!({ "server": { "name": "Myelin", "version": env!("CARGO_PKG_VERSION") } }))
}

/// `GET /_matrix/key/v2/server`: this server's published signing keys, self-signed.
async fn server_keys(State(services): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(services.keys.server_keys_document()?))
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/_matrix/federation/v1/version", get(version))
}

pub fn key_routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/key/v2/server", get(server_keys))
        .route("/_matrix/key/v2/server/{key_id}", get(server_keys))
}
