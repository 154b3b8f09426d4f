//! Server notices: `POST /_synapse/admin/v1/send_server_notice` and
//! `PUT /_synapse/admin/v1/send_server_notice/{txnId}`, through `service::server_notices`.

use axum::extract::State;
use axum::routing::{post, put};
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::auth::Requester;
use myelin_service::server_notices::ServerNotice;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::AdminAuth;
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams};

async fn send(
    services: &AppState,
    admin: &Requester,
    body: Map<String, Value>,
    txn_id: Option<&str>,
) -> ApiResult<Json<Value>> {
    let missing: Vec<&str> = ["user_id", "content"].into_iter().filter(|f| !body.contains_key(*f)).collect();
    if !missing.is_empty() {
        return Err(MatrixError::missing_param(format!("Missing params: {missing:?}")).into());
    }
    let user_id = match &body["user_id"] {
        Value::String(user_id) => super::users::parse_user(user_id)?,
        _ => return Err(MatrixError::bad_json("'user_id' must be a string").into()),
    };
    let content = match &body["content"] {
        Value::Object(content) => Value::Object(content.clone()),
        _ => return Err(MatrixError::bad_json("'content' must be an object").into()),
    };
    let kind = match body.get("type") {
        None => "m.room.message".to_owned(),
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => return Err(MatrixError::bad_json("'type' must be a string").into()),
    };
    let state_key = match body.get("state_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) => Some(key.clone()),
        Some(_) => return Err(MatrixError::bad_json("'state_key' must be a string").into()),
    };
    let notice = ServerNotice { user_id, kind, state_key, content };
    let event_id = services.send_server_notice(admin, notice, txn_id).await?;
    Ok(Json(json!({ "event_id": event_id })))
}

/// `POST /_synapse/admin/v1/send_server_notice`
async fn send_notice(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    send(&services, &admin, body, None).await
}

/// `PUT /_synapse/admin/v1/send_server_notice/{txnId}`: the same notice again for the same
/// transaction ID is not sent twice.
async fn send_notice_txn(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(txn_id): PathParams<String>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    send(&services, &admin, body, Some(&txn_id)).await
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_synapse/admin/v1/send_server_notice", post(send_notice))
        .route("/_synapse/admin/v1/send_server_notice/{txn_id}", put(send_notice_txn))
}
