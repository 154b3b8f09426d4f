//! Registration tokens: `/_synapse/admin/v1/registration_tokens[/new|/{token}]`.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::records::RegistrationTokenRecord;
use myelin_service::registration_tokens::{NewRegistrationToken, TokenUpdate};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::AdminAuth;
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams, QueryParams};

fn token_json(token: &RegistrationTokenRecord) -> Value {
    json!({
        "token": token.token,
        "uses_allowed": token.uses_allowed,
        "pending": token.pending,
        "completed": token.completed,
        "expiry_time": token.expiry_time,
    })
}

#[derive(Deserialize)]
struct ListQuery {
    valid: Option<bool>,
}

/// `GET /_synapse/admin/v1/registration_tokens`
async fn list(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    let tokens = services.list_registration_tokens(query.valid).await?;
    Ok(Json(json!({ "registration_tokens": tokens.iter().map(token_json).collect::<Vec<_>>() })))
}

#[derive(Deserialize)]
struct NewTokenBody {
    token: Option<String>,
    length: Option<i64>,
    uses_allowed: Option<i64>,
    expiry_time: Option<i64>,
}

/// `POST /_synapse/admin/v1/registration_tokens/new`
async fn create(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    JsonBody(body): JsonBody<NewTokenBody>,
) -> ApiResult<Json<Value>> {
    let request = NewRegistrationToken {
        token: body.token,
        length: body.length,
        uses_allowed: body.uses_allowed,
        expiry_time: body.expiry_time,
    };
    Ok(Json(token_json(&services.create_registration_token(request).await?)))
}

/// A field that may be absent (no change), null (clear) or an integer.
fn optional_limit(body: &Map<String, Value>, key: &str) -> Result<Option<Option<i64>>, MatrixError> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(value) => value
            .as_i64()
            .map(|n| Some(Some(n)))
            .ok_or_else(|| MatrixError::invalid_param(format!("{key} must be an integer or null"))),
    }
}

/// `GET /_synapse/admin/v1/registration_tokens/{token}`
async fn get_one(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(token): PathParams<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(token_json(&services.get_registration_token(&token).await?)))
}

/// `PUT /_synapse/admin/v1/registration_tokens/{token}`
async fn update(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(token): PathParams<String>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let update = TokenUpdate {
        uses_allowed: optional_limit(&body, "uses_allowed")?,
        expiry_time: optional_limit(&body, "expiry_time")?,
    };
    Ok(Json(token_json(&services.update_registration_token(&token, update).await?)))
}

/// `DELETE /_synapse/admin/v1/registration_tokens/{token}`
async fn delete(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(token): PathParams<String>,
) -> ApiResult<Json<Value>> {
    services.delete_registration_token(&token).await?;
    Ok(Json(json!({})))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_synapse/admin/v1/registration_tokens", get(list))
        .route("/_synapse/admin/v1/registration_tokens/new", post(create))
        .route("/_synapse/admin/v1/registration_tokens/{token}", get(get_one).put(update).delete(delete))
}
