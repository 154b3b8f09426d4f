//! Per-user admin settings: `/_synapse/admin/v1/users/{userId}/override_ratelimit`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::records::RateLimitOverride;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::AdminAuth;
use crate::error::ApiResult;
use crate::extract::{JsonBodyOrEmpty, PathParams};

fn parse_local_user(services: &AppState, user_id: &str) -> Result<ruma::OwnedUserId, MatrixError> {
    let user_id = ruma::UserId::parse(user_id)
        .map_err(|_| MatrixError::invalid_param(format!("Invalid user ID {user_id:?}")))?;
    if user_id.server_name().as_str() != services.server_name() {
        return Err(MatrixError::invalid_param("Can only look up local users"));
    }
    Ok(user_id)
}

/// `GET /_synapse/admin/v1/users/{userId}/override_ratelimit`
async fn get_override(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_local_user(&services, &user_id)?;
    Ok(Json(match services.get_ratelimit_override(&user_id).await? {
        Some(o) => json!({ "messages_per_second": o.messages_per_second, "burst_count": o.burst_count }),
        None => json!({}),
    }))
}

#[derive(Deserialize)]
struct OverrideBody {
    messages_per_second: Option<i64>,
    burst_count: Option<i64>,
}

/// `POST /_synapse/admin/v1/users/{userId}/override_ratelimit`
async fn set_override(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<OverrideBody>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_local_user(&services, &user_id)?;
    let value = RateLimitOverride {
        messages_per_second: body.messages_per_second.unwrap_or(0),
        burst_count: body.burst_count.unwrap_or(0),
    };
    if value.messages_per_second < 0 || value.burst_count < 0 {
        return Err(MatrixError::invalid_param(
            "messages_per_second and burst_count must be positive integers",
        )
        .into());
    }
    services.set_ratelimit_override(&user_id, Some(value)).await?;
    Ok(Json(json!({ "messages_per_second": value.messages_per_second, "burst_count": value.burst_count })))
}

/// `DELETE /_synapse/admin/v1/users/{userId}/override_ratelimit`
async fn delete_override(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_local_user(&services, &user_id)?;
    services.set_ratelimit_override(&user_id, None).await?;
    Ok(Json(json!({})))
}

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/_synapse/admin/v1/users/{user_id}/override_ratelimit",
        get(get_override).post(set_override).delete(delete_override),
    )
}
