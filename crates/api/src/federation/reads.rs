//! What other servers read: `/event`, `/state`, `/state_ids`, `/event_auth`, `/backfill`,
//! `/get_missing_events`, `/timestamp_to_event`, `/query/directory`, `/publicRooms`,
//! `/user/devices`, `/user/keys/query`, `/user/keys/claim` (all signed with `X-Matrix`) and
//! `/openid/userinfo` (authenticated by the OpenID token alone).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_core::pdu::Pdu;
use myelin_service::e2e_keys::QueriedDeviceKeys;
use myelin_service::rooms::directory::PublicRoomsRequest;
use ruma::{OwnedEventId, OwnedUserId, RoomAliasId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ServerAuth;
use crate::AppState;
use crate::client::directory::{PublicRoomsBody, page_json, parse_limit};
use crate::error::ApiResult;
use crate::extract::{PathParams, QueryParams, parse_event_id, parse_json, parse_room_id, parse_user_id};
use crate::object::object;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn pdus_json(pdus: &[Arc<Pdu>]) -> Value {
    pdus.iter()
        .map(|pdu| Value::Object(pdu.json().into_iter().map(|(k, v)| (k, v.into())).collect()))
        .collect()
}

/// A transaction-shaped answer (`/event`, `/backfill`).
fn transaction_json(services: &AppState, pdus: &[Arc<Pdu>]) -> Value {
    object([
        ("origin", json!(services.server_name())),
        ("origin_server_ts", json!(now_ms())),
        ("pdus", pdus_json(pdus)),
    ])
}

/// The query parameters in order, NUL characters refused.
fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, MatrixError> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    if pairs.iter().any(|(name, value)| name.contains('\0') || value.contains('\0')) {
        return Err(MatrixError::invalid_param("NUL characters are not allowed in query parameters"));
    }
    Ok(pairs)
}

fn required_u64(pairs: &[(String, String)], name: &str) -> Result<u64, MatrixError> {
    let value = pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
        .ok_or_else(|| MatrixError::missing_param(format!("Missing integer query parameter {name:?}")))?;
    value
        .parse()
        .map_err(|_| MatrixError::invalid_param(format!("Query parameter {name:?} must be an integer")))
}

/// `GET /_matrix/federation/v1/event/{eventId}`
async fn get_event(
    State(services): State<AppState>,
    PathParams(event_id): PathParams<String>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let event_id = parse_event_id(&event_id)?;
    let pdu = services.federation_event(&auth.origin, &event_id).await?;
    Ok(Json(transaction_json(&services, &[pdu])))
}

#[derive(Deserialize)]
struct StateQuery {
    event_id: Option<String>,
}

fn state_event_id(query: StateQuery) -> Result<OwnedEventId, MatrixError> {
    let event_id = query
        .event_id
        .ok_or_else(|| MatrixError::missing_param("Missing string query parameter \"event_id\""))?;
    parse_event_id(&event_id)
}

/// `GET /_matrix/federation/v1/state/{roomId}?event_id=`
async fn get_state(
    State(services): State<AppState>,
    PathParams(room_id): PathParams<String>,
    QueryParams(query): QueryParams<StateQuery>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = state_event_id(query)?;
    let state = services.federation_state(&auth.origin, &room_id, &event_id).await?;
    Ok(Json(object([("pdus", pdus_json(&state.pdus)), ("auth_chain", pdus_json(&state.auth_chain))])))
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`
async fn get_state_ids(
    State(services): State<AppState>,
    PathParams(room_id): PathParams<String>,
    QueryParams(query): QueryParams<StateQuery>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = state_event_id(query)?;
    let state = services.federation_state_ids(&auth.origin, &room_id, &event_id).await?;
    Ok(Json(json!({ "pdu_ids": state.pdu_ids, "auth_chain_ids": state.auth_chain_ids })))
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
async fn get_event_auth(
    State(services): State<AppState>,
    PathParams((room_id, event_id)): PathParams<(String, String)>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = parse_event_id(&event_id)?;
    let chain = services.federation_event_auth(&auth.origin, &room_id, &event_id).await?;
    Ok(Json(object([("auth_chain", pdus_json(&chain))])))
}

/// `GET /_matrix/federation/v1/backfill/{roomId}?v=&limit=` (`v` repeated for each event).
async fn get_backfill(
    State(services): State<AppState>,
    PathParams(room_id): PathParams<String>,
    RawQuery(query): RawQuery,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let pairs = query_pairs(query.as_deref())?;
    let from = pairs
        .iter()
        .filter(|(name, _)| name == "v")
        .map(|(_, value)| parse_event_id(value))
        .collect::<Result<Vec<_>, _>>()?;
    if from.is_empty() {
        return Err(MatrixError::missing_param("Missing string query parameter \"v\"").into());
    }
    let limit = required_u64(&pairs, "limit")?;
    let pdus = services.federation_backfill(&auth.origin, &room_id, &from, limit).await?;
    Ok(Json(transaction_json(&services, &pdus)))
}

fn default_missing_limit() -> u64 {
    10
}

#[derive(Deserialize)]
struct MissingEventsBody {
    #[serde(default)]
    earliest_events: Vec<OwnedEventId>,
    latest_events: Vec<OwnedEventId>,
    #[serde(default = "default_missing_limit")]
    limit: u64,
    #[serde(default)]
    min_depth: u64,
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`
async fn get_missing_events(
    State(services): State<AppState>,
    PathParams(room_id): PathParams<String>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let body: MissingEventsBody = parse_json(&auth.body)?;
    let events = services
        .federation_missing_events(
            &auth.origin,
            &room_id,
            &body.earliest_events,
            &body.latest_events,
            body.limit,
            body.min_depth,
        )
        .await?;
    Ok(Json(object([("events", pdus_json(&events))])))
}

#[derive(Deserialize)]
struct TimestampQuery {
    ts: Option<u64>,
    dir: Option<String>,
}

/// `GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=&dir=`
async fn timestamp_to_event(
    State(services): State<AppState>,
    PathParams(room_id): PathParams<String>,
    QueryParams(query): QueryParams<TimestampQuery>,
    auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let ts = query.ts.ok_or_else(|| MatrixError::missing_param("Missing integer query parameter \"ts\""))?;
    let forward = match query.dir.as_deref() {
        Some("f") => true,
        Some("b") => false,
        Some(_) => return Err(MatrixError::invalid_param("dir must be one of f, b").into()),
        None => return Err(MatrixError::missing_param("Missing string query parameter \"dir\"").into()),
    };
    let (event_id, origin_server_ts) =
        services.federation_timestamp_to_event(&auth.origin, &room_id, ts, forward).await?;
    Ok(Json(json!({ "event_id": event_id, "origin_server_ts": origin_server_ts })))
}

#[derive(Deserialize)]
struct DirectoryQuery {
    room_alias: Option<String>,
}

/// `GET /_matrix/federation/v1/query/directory?room_alias=`
async fn query_directory(
    State(services): State<AppState>,
    QueryParams(query): QueryParams<DirectoryQuery>,
    _auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let alias = query.room_alias.ok_or_else(|| MatrixError::missing_param("Missing room_alias"))?;
    let alias = RoomAliasId::parse(&alias)
        .map_err(|_| MatrixError::invalid_param(format!("Invalid room alias {alias:?}")))?;
    let (room_id, servers) = services.federation_directory_query(&alias).await?;
    Ok(Json(json!({ "room_id": room_id, "servers": servers })))
}

#[derive(Deserialize)]
struct PublicRoomsQuery {
    limit: Option<i64>,
    since: Option<String>,
    include_all_networks: Option<String>,
    third_party_instance_id: Option<String>,
}

/// `GET /_matrix/federation/v1/publicRooms`
async fn get_public_rooms(
    State(services): State<AppState>,
    QueryParams(query): QueryParams<PublicRoomsQuery>,
    _auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let include_all_networks = match query.include_all_networks.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(MatrixError::invalid_param("include_all_networks must be true or false").into());
        }
    };
    let request = PublicRoomsRequest {
        limit: parse_limit(query.limit)?,
        since: query.since,
        include_all_networks,
        third_party_instance_id: query.third_party_instance_id,
        ..Default::default()
    };
    Ok(Json(page_json(services.federation_public_rooms(&request).await?)))
}

/// `POST /_matrix/federation/v1/publicRooms`
async fn post_public_rooms(State(services): State<AppState>, auth: ServerAuth) -> ApiResult<Json<Value>> {
    let body: PublicRoomsBody = parse_json(&auth.body)?;
    let filter = body.filter.unwrap_or_default();
    let request = PublicRoomsRequest {
        limit: parse_limit(body.limit)?,
        since: body.since,
        server: None,
        generic_search_term: filter.generic_search_term,
        room_types: filter.room_types,
        include_all_networks: body.include_all_networks,
        third_party_instance_id: body.third_party_instance_id,
    };
    Ok(Json(page_json(services.federation_public_rooms(&request).await?)))
}

/// `GET /_matrix/federation/v1/user/devices/{userId}`
async fn user_devices(
    State(services): State<AppState>,
    PathParams(user_id): PathParams<String>,
    _auth: ServerAuth,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user_id(&user_id)?;
    let devices = services.federation_user_devices(&user_id).await?;
    let list: Vec<Value> = devices
        .devices
        .into_iter()
        .map(|(device_id, keys)| {
            let mut device = json!({ "device_id": device_id });
            if let Some(keys) = keys {
                device["keys"] = Value::Object(keys);
            }
            device
        })
        .collect();
    let mut body = json!({
        "user_id": devices.user_id,
        "stream_id": devices.stream_id,
        "devices": list,
    });
    if let Some(master_key) = devices.master_key {
        body["master_key"] = Value::Object(master_key);
    }
    if let Some(self_signing_key) = devices.self_signing_key {
        body["self_signing_key"] = Value::Object(self_signing_key);
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
struct KeysQueryBody {
    device_keys: BTreeMap<OwnedUserId, Vec<String>>,
}

fn device_keys_json(device: QueriedDeviceKeys) -> Value {
    let mut keys = device.keys;
    keys.insert("unsigned".to_owned(), json!({}));
    Value::Object(keys)
}

/// `POST /_matrix/federation/v1/user/keys/query`
async fn keys_query(State(services): State<AppState>, auth: ServerAuth) -> ApiResult<Json<Value>> {
    let body: KeysQueryBody = parse_json(&auth.body)?;
    let result = services.federation_query_keys(&body.device_keys).await?;
    let device_keys = crate::client::keys::device_keys_by_user(result.device_keys, device_keys_json);
    Ok(Json(json!({
        "device_keys": device_keys,
        "master_keys": result.cross_signing.master_keys,
        "self_signing_keys": result.cross_signing.self_signing_keys,
    })))
}

#[derive(Deserialize)]
struct KeysClaimBody {
    one_time_keys: BTreeMap<OwnedUserId, BTreeMap<String, String>>,
}

/// `POST /_matrix/federation/v1/user/keys/claim`
async fn keys_claim(State(services): State<AppState>, auth: ServerAuth) -> ApiResult<Json<Value>> {
    let body: KeysClaimBody = parse_json(&auth.body)?;
    let result = services.federation_claim_keys(&body.one_time_keys).await?;
    Ok(Json(json!({ "one_time_keys": result.one_time_keys })))
}

#[derive(Deserialize)]
struct UserinfoQuery {
    access_token: Option<String>,
}

/// `GET /_matrix/federation/v1/openid/userinfo?access_token=`: who an OpenID token belongs
/// to. Authenticated by the token, not by a server signature.
async fn openid_userinfo(
    State(services): State<AppState>,
    QueryParams(query): QueryParams<UserinfoQuery>,
) -> ApiResult<Json<Value>> {
    let token = query.access_token.ok_or_else(MatrixError::missing_token)?;
    let user_id = services.openid_userinfo(&token).await?;
    Ok(Json(json!({ "sub": user_id })))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/federation/v1/event/{event_id}", get(get_event))
        .route("/_matrix/federation/v1/state/{room_id}", get(get_state))
        .route("/_matrix/federation/v1/state_ids/{room_id}", get(get_state_ids))
        .route("/_matrix/federation/v1/event_auth/{room_id}/{event_id}", get(get_event_auth))
        .route("/_matrix/federation/v1/backfill/{room_id}", get(get_backfill))
        .route("/_matrix/federation/v1/get_missing_events/{room_id}", post(get_missing_events))
        .route("/_matrix/federation/v1/timestamp_to_event/{room_id}", get(timestamp_to_event))
        .route("/_matrix/federation/v1/query/directory", get(query_directory))
        .route("/_matrix/federation/v1/publicRooms", get(get_public_rooms).post(post_public_rooms))
        .route("/_matrix/federation/v1/user/devices/{user_id}", get(user_devices))
        .route("/_matrix/federation/v1/user/keys/query", post(keys_query))
        .route("/_matrix/federation/v1/user/keys/claim", post(keys_claim))
        .route("/_matrix/federation/v1/openid/userinfo", get(openid_userinfo))
}
