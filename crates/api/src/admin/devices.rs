//! A user's devices and pushers in the admin API: `/_synapse/admin/v2/users/{userId}/devices[/{deviceId}]`,
//! `/v2/users/{userId}/delete_devices`, `/v1/users/{userId}/pushers`.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use myelin_service::records::DeviceRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::AdminAuth;
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams};

use super::users::parse_user;

/// A device as the admin API lists it: the client API's fields plus the owner and the last
/// user agent, with Synapse's nulls.
fn admin_device_json(device: &DeviceRecord) -> Value {
    json!({
        "device_id": device.device_id,
        "display_name": device.display_name,
        "last_seen_ip": device.last_seen_ip,
        "last_seen_ts": device.last_seen_ts,
        "last_seen_user_agent": device.last_seen_user_agent,
        "user_id": device.user_id,
    })
}

/// `GET /_synapse/admin/v2/users/{userId}/devices`
async fn list(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let devices = services.admin_user_devices(&user_id).await?;
    Ok(Json(json!({
        "devices": devices.iter().map(admin_device_json).collect::<Vec<_>>(),
        "total": devices.len(),
    })))
}

/// `GET /_synapse/admin/v2/users/{userId}/devices/{deviceId}`
async fn get_one(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams((user_id, device_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    Ok(Json(admin_device_json(&services.admin_user_device(&user_id, &device_id).await?)))
}

#[derive(Deserialize)]
struct RenameBody {
    display_name: Option<String>,
}

/// `PUT /_synapse/admin/v2/users/{userId}/devices/{deviceId}`
async fn rename(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams((user_id, device_id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<RenameBody>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    services.admin_rename_device(&user_id, &device_id, body.display_name.as_deref()).await?;
    Ok(Json(json!({})))
}

/// `DELETE /_synapse/admin/v2/users/{userId}/devices/{deviceId}`
async fn delete_one(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams((user_id, device_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    services.admin_delete_devices(&user_id, &[device_id]).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeleteDevicesBody {
    devices: Vec<String>,
}

/// `POST /_synapse/admin/v2/users/{userId}/delete_devices`
async fn delete_many(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
    JsonBody(body): JsonBody<DeleteDevicesBody>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    services.admin_delete_devices(&user_id, &body.devices).await?;
    Ok(Json(json!({})))
}

/// `GET /_synapse/admin/v1/users/{userId}/pushers`
async fn pushers(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let pushers = services.admin_user_pushers(&user_id).await?;
    Ok(Json(json!({
        "pushers": pushers.iter().map(crate::client::push::pusher_json).collect::<Vec<_>>(),
        "total": pushers.len(),
    })))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_synapse/admin/v2/users/{user_id}/devices", get(list))
        .route(
            "/_synapse/admin/v2/users/{user_id}/devices/{device_id}",
            get(get_one).put(rename).delete(delete_one),
        )
        .route("/_synapse/admin/v2/users/{user_id}/delete_devices", post(delete_many))
        .route("/_synapse/admin/v1/users/{user_id}/pushers", get(pushers))
}
