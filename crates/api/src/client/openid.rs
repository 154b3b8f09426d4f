//! OpenID tokens for third parties: `/user/{userId}/openid/request_token`.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::ClientRoutes;
use crate::AppState;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{JsonBodyOrEmpty, PathParams, parse_user_id};

/// `POST /_matrix/client/v3/user/{userId}/openid/request_token`
async fn request_token(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(user_id): PathParams<String>,
    JsonBodyOrEmpty(_body): JsonBodyOrEmpty<Value>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user_id(&user_id)?;
    let token = services.request_openid_token(&requester.user_id, &user_id).await?;
    Ok(Json(json!({
        "access_token": token.access_token,
        "token_type": "Bearer",
        "matrix_server_name": services.server_name(),
        "expires_in": token.expires_in_ms / 1000,
    })))
}

pub fn routes() -> Router<AppState> {
    Router::new().v3("/user/{user_id}/openid/request_token", post(request_token))
}
