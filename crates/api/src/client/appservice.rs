//! Application-service endpoints of the client API: `POST /v1/appservice/{id}/ping` and the
//! third-party lookups (`/v3/thirdparty/*`) the appservices answer (guests may look up too, as
//! in Synapse).

use axum::extract::{Path, RawQuery, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ClientRoutes;
use crate::AppState;
use crate::auth::{Auth, GuestAuth};
use crate::error::ApiResult;
use crate::extract::JsonBodyOrEmpty;

#[derive(Deserialize)]
struct PingBody {
    transaction_id: Option<String>,
}

/// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`
async fn ping(
    State(services): State<AppState>,
    Auth(requester): Auth,
    Path(appservice_id): Path<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<PingBody>,
) -> ApiResult<Json<Value>> {
    let duration_ms =
        services.ping_appservice(&requester, &appservice_id, body.transaction_id.as_deref()).await?;
    Ok(Json(json!({ "duration_ms": duration_ms })))
}

/// The query of a lookup as pairs, `access_token` and the masquerading keys left out.
fn lookup_fields(query: Option<String>) -> Vec<(String, String)> {
    let query = query.unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| !matches!(key.as_ref(), "access_token" | "user_id" | "device_id"))
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

/// `GET /_matrix/client/v3/thirdparty/protocols`
async fn protocols(
    State(services): State<AppState>,
    GuestAuth(_requester): GuestAuth,
) -> ApiResult<Json<Value>> {
    Ok(Json(Value::Object(services.thirdparty_protocols(None).await?)))
}

/// `GET /_matrix/client/v3/thirdparty/protocol/{protocol}`
async fn protocol(
    State(services): State<AppState>,
    GuestAuth(_requester): GuestAuth,
    Path(protocol): Path<String>,
) -> ApiResult<Json<Value>> {
    let mut protocols = services.thirdparty_protocols(Some(&protocol)).await?;
    match protocols.remove(&protocol) {
        Some(info) => Ok(Json(info)),
        None => Err(myelin_core::MatrixError::not_found("The protocol is unknown").into()),
    }
}

async fn lookup(
    services: &AppState,
    kind: &str,
    protocol: Option<&str>,
    query: Option<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(Value::Array(services.thirdparty_lookup(kind, protocol, &lookup_fields(query)).await?)))
}

/// `GET /_matrix/client/v3/thirdparty/location/{protocol}`
async fn location_of(
    State(services): State<AppState>,
    GuestAuth(_requester): GuestAuth,
    Path(protocol): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    lookup(&services, "location", Some(&protocol), query).await
}

/// `GET /_matrix/client/v3/thirdparty/user/{protocol}`
async fn user_of(
    State(services): State<AppState>,
    GuestAuth(_requester): GuestAuth,
    Path(protocol): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    lookup(&services, "user", Some(&protocol), query).await
}

/// `GET /_matrix/client/v3/thirdparty/location`
async fn location(
    State(services): State<AppState>,
    GuestAuth(_requester): GuestAuth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    lookup(&services, "location", None, query).await
}

/// `GET /_matrix/client/v3/thirdparty/user`
async fn user(
    State(services): State<AppState>,
    GuestAuth(_requester): GuestAuth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    lookup(&services, "user", None, query).await
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .v1("/appservice/{appservice_id}/ping", post(ping))
        .v3("/thirdparty/protocols", get(protocols))
        .v3("/thirdparty/protocol/{protocol}", get(protocol))
        .v3("/thirdparty/location/{protocol}", get(location_of))
        .v3("/thirdparty/user/{protocol}", get(user_of))
        .v3("/thirdparty/location", get(location))
        .v3("/thirdparty/user", get(user))
}
