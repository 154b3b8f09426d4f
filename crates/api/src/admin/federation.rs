//! Federation destinations in the admin API: the servers this one sends to, their backoff, the
//! rooms shared with each, and resetting a destination's backoff.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::admin_rooms::{DestinationOrder, DestinationQuery, DestinationRecord};
use serde_json::{Value, json};

use super::params::{parse_count, parse_forwards, parse_order};
use crate::AppState;
use crate::auth::AdminAuth;
use crate::error::ApiResult;
use crate::extract::{JsonBodyOrEmpty, PathParams, QueryParams};

fn destination_json(destination: &DestinationRecord) -> Value {
    json!({
        "destination": destination.destination,
        "retry_last_ts": destination.retry_last_ts,
        "retry_interval": destination.retry_interval,
        "failure_ts": destination.failure_ts,
        // Myelin does not track the stream position of the last PDU a destination took.
        "last_successful_stream_ordering": null,
    })
}

/// `from` and `limit` of a page.
fn page(pairs: &[(String, String)]) -> Result<(u64, u64), MatrixError> {
    let (mut from, mut limit) = (0, 100);
    for (name, value) in pairs {
        match name.as_str() {
            "from" => from = parse_count(name, value)?,
            "limit" => limit = parse_count(name, value)?,
            _ => {}
        }
    }
    Ok((from, limit))
}

/// `GET /_synapse/admin/v1/federation/destinations`
async fn list(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    QueryParams(pairs): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let (from, limit) = page(&pairs)?;
    let mut query =
        DestinationQuery { from, limit, order: DestinationOrder::Destination, forwards: true, search: None };
    for (name, value) in &pairs {
        match name.as_str() {
            "order_by" => query.order = parse_order(value, DestinationOrder::parse)?,
            "dir" => query.forwards = parse_forwards(value)?,
            "destination" if !value.is_empty() => query.search = Some(value.clone()),
            _ => {}
        }
    }
    let (destinations, total) = services.admin_destinations(&query).await?;
    let mut body = json!({
        "destinations": destinations.iter().map(destination_json).collect::<Vec<_>>(),
        "total": total,
    });
    if from.saturating_add(limit) < total {
        body["next_token"] = json!((from + limit).to_string());
    }
    Ok(Json(body))
}

/// `GET /_synapse/admin/v1/federation/destinations/{destination}`
async fn one(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(destination): PathParams<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(destination_json(&services.admin_destination(&destination).await?)))
}

/// `GET /_synapse/admin/v1/federation/destinations/{destination}/rooms`
async fn rooms(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(destination): PathParams<String>,
    QueryParams(pairs): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let (from, limit) = page(&pairs)?;
    let backwards = !pairs
        .iter()
        .find(|(name, _)| name == "dir")
        .map(|(_, v)| v.as_str())
        .map(parse_forwards)
        .transpose()?
        .unwrap_or(true);
    let mut rooms = services.admin_destination_rooms(&destination).await?;
    if backwards {
        rooms.reverse();
    }
    let total = rooms.len() as u64;
    let page: Vec<Value> = rooms
        .iter()
        .skip(usize::try_from(from).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|(room_id, stream_ordering)| json!({ "room_id": room_id, "stream_ordering": stream_ordering }))
        .collect();
    let mut body = json!({ "rooms": page, "total": total });
    if from.saturating_add(limit) < total {
        body["next_token"] = json!((from + limit).to_string());
    }
    Ok(Json(body))
}

/// `POST /_synapse/admin/v1/federation/destinations/{destination}/reset_connection`
async fn reset(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(destination): PathParams<String>,
    JsonBodyOrEmpty(_body): JsonBodyOrEmpty<serde_json::Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    services.admin_reset_destination(&admin, &destination).await?;
    Ok(Json(json!({})))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_synapse/admin/v1/federation/destinations", get(list))
        .route("/_synapse/admin/v1/federation/destinations/{destination}", get(one))
        .route("/_synapse/admin/v1/federation/destinations/{destination}/rooms", get(rooms))
        .route("/_synapse/admin/v1/federation/destinations/{destination}/reset_connection", post(reset))
}
