//! Send-to-device messaging: `PUT /sendToDevice/{eventType}/{txnId}` (delivery is in `/sync`).

use axum::extract::State;
use axum::routing::put;
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::to_device::ToDeviceMessages;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ClientRoutes;
use crate::AppState;
use crate::auth::GuestAuth;
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams};

#[derive(Deserialize)]
struct SendToDeviceBody {
    /// User ID → device ID (or `*`) → content: a message's content must be an object.
    messages: Option<ToDeviceMessages>,
}

/// `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
async fn send_to_device(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    PathParams((kind, txn_id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<SendToDeviceBody>,
) -> ApiResult<Json<Value>> {
    let messages = body.messages.ok_or_else(|| MatrixError::missing_param("Missing params: ['messages']"))?;
    services.send_to_device(&requester, &kind, &txn_id, messages).await?;
    Ok(Json(json!({})))
}

pub fn routes() -> Router<AppState> {
    Router::new().v3("/sendToDevice/{event_type}/{txn_id}", put(send_to_device))
}
