//! `/.well-known/matrix/client` and `/.well-known/matrix/server`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use myelin_core::MatrixError;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiResult;

/// `GET /.well-known/matrix/client`: served when `public_baseurl` is set, as in Synapse.
async fn client(State(services): State<AppState>) -> ApiResult<Json<Value>> {
    let server = &services.config.server;
    if !server.serve_client_wellknown {
        return Err(MatrixError::not_found(".well-known not available").into());
    }
    let mut body = json!({ "m.homeserver": { "base_url": server.public_baseurl } });
    if let Some(object) = body.as_object_mut() {
        for (key, value) in &server.extra_well_known_client_content {
            object.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    Ok(Json(body))
}

/// `GET /.well-known/matrix/server`: served when `serve_server_wellknown` is true, delegating
/// federation to port 443 of the server name (or its explicit port).
async fn server(State(services): State<AppState>) -> ApiResult<Json<Value>> {
    let config = &services.config.server;
    if !config.serve_server_wellknown {
        return Err(MatrixError::not_found(".well-known not available").into());
    }
    let server_name = ruma::ServerName::parse(&config.server_name)
        .map_err(|_| myelin_service::Error::internal("invalid server_name"))?;
    let delegated = match server_name.port() {
        Some(port) => format!("{}:{port}", server_name.host()),
        None => format!("{}:443", server_name.host()),
    };
    Ok(Json(json!({ "m.server": delegated })))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/matrix/client", get(client))
        .route("/.well-known/matrix/server", get(server))
}
