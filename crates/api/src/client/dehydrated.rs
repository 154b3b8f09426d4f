//! Dehydrated devices (MSC3814): `/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device`
//! and its `/{deviceId}/events`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use myelin_service::dehydrated::{DehydratedDeviceEvents, DehydratedDeviceUpload};
use myelin_service::e2e_keys::KeysUpload;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams, QueryParams};

const PREFIX: &str = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device";

#[derive(Deserialize)]
struct PutBody {
    device_id: String,
    device_data: Map<String, Value>,
    initial_device_display_name: Option<String>,
    /// Required, as Synapse requires it: a dehydrated device nobody can encrypt to is useless.
    device_keys: Map<String, Value>,
    one_time_keys: Option<BTreeMap<String, Value>>,
    fallback_keys: Option<BTreeMap<String, Value>>,
}

/// `PUT /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device`
async fn put_dehydrated_device(
    State(services): State<AppState>,
    Auth(requester): Auth,
    JsonBody(body): JsonBody<PutBody>,
) -> ApiResult<Json<Value>> {
    let upload = DehydratedDeviceUpload {
        device_id: body.device_id,
        device_data: body.device_data,
        initial_device_display_name: body.initial_device_display_name,
        keys: KeysUpload {
            device_keys: Some(body.device_keys),
            one_time_keys: body.one_time_keys.unwrap_or_default(),
            fallback_keys: body.fallback_keys.unwrap_or_default(),
        },
    };
    let device_id = services.put_dehydrated_device(&requester, upload).await?;
    Ok(Json(json!({ "device_id": device_id })))
}

/// `GET /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device`
async fn get_dehydrated_device(
    State(services): State<AppState>,
    Auth(requester): Auth,
) -> ApiResult<Json<Value>> {
    let device = services.dehydrated_device(&requester).await?;
    Ok(Json(json!({ "device_id": device.device_id, "device_data": device.device_data })))
}

/// `DELETE /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device`
async fn delete_dehydrated_device(
    State(services): State<AppState>,
    Auth(requester): Auth,
) -> ApiResult<Json<Value>> {
    let device_id = services.delete_dehydrated_device(&requester).await?;
    Ok(Json(json!({ "device_id": device_id })))
}

fn events_json(page: &DehydratedDeviceEvents) -> Vec<Value> {
    page.events
        .iter()
        .map(|event| json!({"sender": event.sender, "type": event.kind, "content": event.content}))
        .collect()
}

#[derive(Deserialize)]
struct EventsBody {
    next_batch: Option<String>,
}

/// `POST /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events`
/// (the draft Element X speaks): `next_batch` is always given.
async fn post_events(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(device_id): PathParams<String>,
    JsonBody(body): JsonBody<EventsBody>,
) -> ApiResult<Json<Value>> {
    let page = services.dehydrated_device_events(&requester, &device_id, body.next_batch.as_deref()).await?;
    Ok(Json(json!({ "events": events_json(&page), "next_batch": page.next_batch })))
}

#[derive(Deserialize)]
struct EventsQuery {
    from: Option<String>,
}

/// `GET /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events?from=`
/// (the later draft): `next_batch` only while more messages wait.
async fn get_events(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(device_id): PathParams<String>,
    QueryParams(query): QueryParams<EventsQuery>,
) -> ApiResult<Json<Value>> {
    let page = services.dehydrated_device_events(&requester, &device_id, query.from.as_deref()).await?;
    let mut response = json!({ "events": events_json(&page) });
    if page.limited {
        response["next_batch"] = json!(page.next_batch);
    }
    Ok(Json(response))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(PREFIX, get(get_dehydrated_device).put(put_dehydrated_device).delete(delete_dehydrated_device))
        .route(&format!("{PREFIX}/{{device_id}}/events"), post(post_events).get(get_events))
}
