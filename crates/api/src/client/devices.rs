//! Device management: `/devices`, `/devices/{deviceId}`, `/delete_devices`.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use myelin_service::records::DeviceRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ClientRoutes;
use crate::AppState;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{JsonBody, JsonBodyOrEmpty, PathParams};

fn device_json(device: &DeviceRecord) -> Value {
    let mut body = json!({ "device_id": device.device_id });
    if let Some(name) = &device.display_name {
        body["display_name"] = json!(name);
    }
    if let Some(ip) = &device.last_seen_ip {
        body["last_seen_ip"] = json!(ip);
    }
    if let Some(ts) = device.last_seen_ts {
        body["last_seen_ts"] = json!(ts);
    }
    body
}

/// `GET /_matrix/client/v3/devices`
async fn list(State(services): State<AppState>, Auth(requester): Auth) -> ApiResult<Json<Value>> {
    let devices = services.list_devices(&requester.user_id).await?;
    Ok(Json(json!({ "devices": devices.iter().map(device_json).collect::<Vec<_>>() })))
}

/// `GET /_matrix/client/v3/devices/{deviceId}`
async fn get_one(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(device_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(device_json(&services.get_device(&requester.user_id, &device_id).await?)))
}

#[derive(Deserialize)]
struct UpdateBody {
    display_name: Option<String>,
}

/// `PUT /_matrix/client/v3/devices/{deviceId}`
async fn update(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(device_id): PathParams<String>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let created = services.put_device(&requester, &device_id, body.display_name.as_deref()).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(json!({}))))
}

#[derive(Deserialize)]
struct DeleteBody {
    auth: Option<Value>,
}

/// `DELETE /_matrix/client/v3/devices/{deviceId}`
async fn delete_one(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(device_id): PathParams<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<DeleteBody>,
) -> ApiResult<Json<Value>> {
    services.get_device(&requester.user_id, &device_id).await?;
    services.reauthenticate(&requester, "delete_devices", body.auth.as_ref()).await?;
    services.delete_devices(&requester.user_id, &[device_id]).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeleteManyBody {
    devices: Vec<String>,
    auth: Option<Value>,
}

/// `POST /_matrix/client/v3/delete_devices`
async fn delete_many(
    State(services): State<AppState>,
    Auth(requester): Auth,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<DeleteManyBody>,
) -> ApiResult<Json<Value>> {
    services.reauthenticate(&requester, "delete_devices", body.auth.as_ref()).await?;
    services.delete_devices(&requester.user_id, &body.devices).await?;
    Ok(Json(json!({})))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .v3("/devices", get(list))
        .v3("/devices/{device_id}", get(get_one).put(update).delete(delete_one))
        .v3("/delete_devices", post(delete_many))
}
