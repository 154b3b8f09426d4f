//! Inbound transactions: `PUT /_matrix/federation/v1/send/{txnId}`.

use axum::extract::State;
use axum::routing::put;
use axum::{Json, Router};
use serde_json::Value;

use super::ServerAuth;
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{PathParams, parse_json};

/// `PUT /_matrix/federation/v1/send/{txnId}`
async fn send_transaction(
    State(services): State<AppState>,
    PathParams(txn_id): PathParams<String>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let body: Value = parse_json(&auth.body)?;
    Ok(Json(services.receive_transaction(&auth.origin, &txn_id, &body).await?))
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/_matrix/federation/v1/send/{txn_id}", put(send_transaction))
}
