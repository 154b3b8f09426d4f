//! End-to-end encryption keys: `/keys/upload`, `/keys/query`, `/keys/claim`, `/keys/changes`,
//! and cross-signing: `/keys/device_signing/upload`, `/keys/signatures/upload`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::cross_signing::{CrossSigningUpload, SignedKeys};
use myelin_service::e2e_keys::{KeysUpload, QueriedDeviceKeys};
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ClientRoutes;
use crate::AppState;
use crate::auth::{Auth, GuestAuth};
use crate::error::{ApiResult, matrix_error_json, status_of_error};
use crate::extract::{JsonBody, QueryParams};

#[derive(Deserialize)]
struct UploadBody {
    device_keys: Option<Map<String, Value>>,
    #[serde(default)]
    one_time_keys: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    fallback_keys: Option<BTreeMap<String, Value>>,
    /// The name before MSC2732 was merged, still sent by older clients.
    #[serde(default, rename = "org.matrix.msc2732.fallback_keys")]
    unstable_fallback_keys: Option<BTreeMap<String, Value>>,
}

/// `POST /_matrix/client/v3/keys/upload`
async fn upload(
    State(services): State<AppState>,
    Auth(requester): Auth,
    JsonBody(body): JsonBody<UploadBody>,
) -> ApiResult<Json<Value>> {
    let upload = KeysUpload {
        device_keys: body.device_keys,
        one_time_keys: body.one_time_keys.unwrap_or_default(),
        fallback_keys: body.fallback_keys.or(body.unstable_fallback_keys).unwrap_or_default(),
    };
    let counts = services.upload_keys(&requester, upload).await?;
    Ok(Json(json!({ "one_time_key_counts": counts })))
}

/// `timeout` (ms) bounds the wait for remote servers.
#[derive(Deserialize)]
struct QueryBody {
    device_keys: BTreeMap<OwnedUserId, Vec<String>>,
    timeout: Option<u64>,
}

fn device_keys_json(device: QueriedDeviceKeys) -> Value {
    let mut keys = device.keys;
    let mut unsigned = Map::new();
    if let Some(name) = device.display_name {
        unsigned.insert("device_display_name".to_owned(), json!(name));
    }
    keys.insert("unsigned".to_owned(), Value::Object(unsigned));
    Value::Object(keys)
}

/// A remote server that could not be reached (or did not answer in time).
fn failure_json() -> Value {
    json!({ "status": 503, "message": "Could not reach the remote server" })
}

/// `device_keys` of a `/keys/query` answer: user ID -> device ID -> keys as `to_json` writes them
/// (the client and federation APIs differ in what a device shows).
pub(crate) fn device_keys_by_user(
    device_keys: BTreeMap<OwnedUserId, BTreeMap<String, QueriedDeviceKeys>>,
    to_json: impl Fn(QueriedDeviceKeys) -> Value,
) -> Map<String, Value> {
    device_keys
        .into_iter()
        .map(|(user_id, devices)| {
            let devices: Map<String, Value> =
                devices.into_iter().map(|(device_id, keys)| (device_id, to_json(keys))).collect();
            (user_id.to_string(), Value::Object(devices))
        })
        .collect()
}

/// `POST /_matrix/client/v3/keys/query`
async fn query(
    State(services): State<AppState>,
    Auth(requester): Auth,
    JsonBody(body): JsonBody<QueryBody>,
) -> ApiResult<Json<Value>> {
    let timeout = body.timeout.map(std::time::Duration::from_millis);
    let result = services.query_keys(&requester.user_id, &body.device_keys, timeout).await?;
    let device_keys = device_keys_by_user(result.device_keys, device_keys_json);
    let failures: Map<String, Value> =
        result.failures.into_iter().map(|server| (server, failure_json())).collect();
    let cross_signing = result.cross_signing;
    Ok(Json(json!({
        "device_keys": device_keys,
        "master_keys": cross_signing.master_keys,
        "self_signing_keys": cross_signing.self_signing_keys,
        "user_signing_keys": cross_signing.user_signing_keys,
        "failures": failures,
    })))
}

#[derive(Deserialize)]
struct ClaimBody {
    one_time_keys: BTreeMap<OwnedUserId, BTreeMap<String, String>>,
    timeout: Option<u64>,
}

/// `POST /_matrix/client/v3/keys/claim`
async fn claim(
    State(services): State<AppState>,
    Auth(_requester): Auth,
    JsonBody(body): JsonBody<ClaimBody>,
) -> ApiResult<Json<Value>> {
    let timeout = body.timeout.map(std::time::Duration::from_millis);
    let result = services.claim_keys_for_client(&body.one_time_keys, timeout).await?;
    let failures: Map<String, Value> =
        result.failures.into_iter().map(|server| (server, failure_json())).collect();
    Ok(Json(json!({ "one_time_keys": result.one_time_keys, "failures": failures })))
}

#[derive(Deserialize)]
struct DeviceSigningUploadBody {
    master_key: Option<Map<String, Value>>,
    self_signing_key: Option<Map<String, Value>>,
    user_signing_key: Option<Map<String, Value>>,
    auth: Option<Value>,
}

/// `POST /_matrix/client/v3/keys/device_signing/upload`
async fn upload_signing_keys(
    State(services): State<AppState>,
    Auth(requester): Auth,
    JsonBody(body): JsonBody<DeviceSigningUploadBody>,
) -> ApiResult<Json<Value>> {
    let upload = CrossSigningUpload {
        master_key: body.master_key,
        self_signing_key: body.self_signing_key,
        user_signing_key: body.user_signing_key,
    };
    services.upload_cross_signing_keys(&requester, upload, body.auth.as_ref()).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/keys/signatures/upload`
async fn upload_signatures(
    State(services): State<AppState>,
    Auth(requester): Auth,
    JsonBody(body): JsonBody<SignedKeys>,
) -> ApiResult<Json<Value>> {
    let failures = services.upload_cross_signing_signatures(&requester, body).await?;
    // Each failure as an error body, with its status beside (as Synapse).
    let failures: Map<String, Value> = failures
        .into_iter()
        .map(|(user_id, by_key)| {
            let by_key: Map<String, Value> = by_key
                .into_iter()
                .map(|(key_id, error)| {
                    let mut failure = matrix_error_json(&error);
                    failure["status"] = json!(status_of_error(&error).as_u16());
                    (key_id, failure)
                })
                .collect();
            (user_id.to_string(), Value::Object(by_key))
        })
        .collect();
    Ok(Json(json!({ "failures": failures })))
}

#[derive(Deserialize)]
struct ChangesQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /_matrix/client/v3/keys/changes`: `from` is required; `to` (which the spec also
/// requires, Synapse does not) bounds the range when given.
async fn changes(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
    QueryParams(query): QueryParams<ChangesQuery>,
) -> ApiResult<Json<Value>> {
    let from =
        query.from.ok_or_else(|| MatrixError::missing_param("Missing string query parameter 'from'"))?;
    let updates = services.key_changes(&requester.user_id, &from, query.to.as_deref()).await?;
    Ok(Json(json!({ "changed": updates.changed, "left": updates.left })))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .v3("/keys/changes", get(changes))
        .v3("/keys/upload", post(upload))
        .v3("/keys/query", post(query))
        .v3("/keys/claim", post(claim))
        .v3("/keys/device_signing/upload", post(upload_signing_keys))
        .v3("/keys/signatures/upload", post(upload_signatures))
}
