//! Inbound transactions: `PUT /_matrix/federation/v1/send/{txnId}`.

use axum::extract::State;
use axum::routing::put;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

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
    let results = services.receive_transaction(&auth.origin, &txn_id, &body).await?;
    let pdus: Map<String, Value> = results
        .pdus
        .into_iter()
        .map(|(event_id, error)| match error {
            None => (event_id, json!({})),
            Some(error) => (event_id, json!({ "error": error })),
        })
        .collect();
    Ok(Json(json!({ "pdus": pdus })))
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/_matrix/federation/v1/send/{txn_id}", put(send_transaction))
}
