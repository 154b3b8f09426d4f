//! Profiles: `GET /profile/{userId}`, `GET/PUT/DELETE /profile/{userId}/{keyName}`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use myelin_core::MatrixError;
use serde_json::{Map, Value, json};

use super::ClientRoutes;
use crate::AppState;
use crate::auth::{GuestAuth, OptionalAuth};
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams, parse_user_id};

/// `GET /_matrix/client/v3/profile/{userId}`
async fn get_profile(
    State(services): State<AppState>,
    OptionalAuth(requester): OptionalAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user_id(&user_id)?;
    Ok(Json(Value::Object(services.get_profile(requester.as_ref(), &user_id).await?)))
}

/// `GET /_matrix/client/v3/profile/{userId}/{keyName}`
async fn get_field(
    State(services): State<AppState>,
    OptionalAuth(requester): OptionalAuth,
    PathParams((user_id, key)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user_id(&user_id)?;
    let value = services.get_profile_field(requester.as_ref(), &user_id, &key).await?;
    Ok(Json(json!({ key: value })))
}

/// `PUT /_matrix/client/v3/profile/{userId}/{keyName}`
async fn set_field(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((user_id, key)): PathParams<(String, String)>,
    JsonBody(mut body): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user_id(&user_id)?;
    let value =
        body.remove(&key).ok_or_else(|| MatrixError::missing_param(format!("Missing key '{key}'")))?;
    services.set_profile_field(&requester, &user_id, &key, value).await?;
    Ok(Json(json!({})))
}

/// `DELETE /_matrix/client/v3/profile/{userId}/{keyName}`
async fn delete_field(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((user_id, key)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user_id(&user_id)?;
    services.delete_profile_field(&requester, &user_id, &key).await?;
    Ok(Json(json!({})))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .v3("/profile/{user_id}", get(get_profile))
        .v3("/profile/{user_id}/{key_name}", get(get_field).put(set_field).delete(delete_field))
}
