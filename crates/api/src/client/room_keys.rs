//! Server-side key backup: `/room_keys/version[/{version}]` and
//! `/room_keys/keys[/{roomId}[/{sessionId}]]`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::key_backup::{BackupKeysUpdate, BackupVersion, KeyBackupData, RoomKeys, RoomKeysScope};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ClientRoutes;
use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams, QueryParams, parse_room_id};

#[derive(Deserialize)]
struct CreateVersionBody {
    algorithm: String,
    auth_data: Map<String, Value>,
}

#[derive(Deserialize)]
struct UpdateVersionBody {
    algorithm: String,
    auth_data: Map<String, Value>,
    version: Option<String>,
}

#[derive(Deserialize)]
struct VersionQuery {
    version: Option<String>,
}

impl VersionQuery {
    fn required(self) -> Result<String, ApiError> {
        self.version
            .ok_or_else(|| MatrixError::missing_param("Missing string query parameter 'version'").into())
    }
}

/// The spec's `KeyBackupData`, every field required.
#[derive(Deserialize)]
struct KeyBackupDataBody {
    first_message_index: u64,
    forwarded_count: u64,
    is_verified: bool,
    session_data: Map<String, Value>,
}

#[derive(Deserialize)]
struct RoomKeyBackupBody {
    sessions: BTreeMap<String, KeyBackupDataBody>,
}

#[derive(Deserialize)]
struct KeysBackupBody {
    rooms: BTreeMap<String, RoomKeyBackupBody>,
}

fn key_from_body(key: KeyBackupDataBody) -> Result<KeyBackupData, ApiError> {
    let integer = |value: u64, field: &str| {
        i64::try_from(value)
            .map_err(|_| ApiError::from(MatrixError::bad_json(format!("`{field}` is too large"))))
    };
    Ok(KeyBackupData {
        first_message_index: integer(key.first_message_index, "first_message_index")?,
        forwarded_count: integer(key.forwarded_count, "forwarded_count")?,
        is_verified: key.is_verified,
        session_data: key.session_data,
    })
}

fn sessions_from_body(
    sessions: BTreeMap<String, KeyBackupDataBody>,
) -> Result<BTreeMap<String, KeyBackupData>, ApiError> {
    sessions.into_iter().map(|(session_id, key)| Ok((session_id, key_from_body(key)?))).collect()
}

fn version_json(version: BackupVersion) -> Value {
    json!({
        "version": version.version,
        "algorithm": version.algorithm,
        "auth_data": version.auth_data,
        "count": version.count,
        "etag": version.etag,
    })
}

fn update_json(update: BackupKeysUpdate) -> Value {
    json!({ "etag": update.etag, "count": update.count })
}

fn key_json(key: KeyBackupData) -> Value {
    json!({
        "first_message_index": key.first_message_index,
        "forwarded_count": key.forwarded_count,
        "is_verified": key.is_verified,
        "session_data": key.session_data,
    })
}

fn sessions_json(sessions: BTreeMap<String, KeyBackupData>) -> Value {
    let sessions: Map<String, Value> =
        sessions.into_iter().map(|(session_id, key)| (session_id, key_json(key))).collect();
    json!({ "sessions": sessions })
}

/// `POST /_matrix/client/v3/room_keys/version`
async fn create_version(
    State(services): State<AppState>,
    Auth(requester): Auth,
    JsonBody(body): JsonBody<CreateVersionBody>,
) -> ApiResult<Json<Value>> {
    let version = services.create_backup_version(&requester, &body.algorithm, &body.auth_data).await?;
    Ok(Json(json!({ "version": version })))
}

/// `GET /_matrix/client/v3/room_keys/version`
async fn current_version(State(services): State<AppState>, Auth(requester): Auth) -> ApiResult<Json<Value>> {
    Ok(Json(version_json(services.backup_version(&requester, None).await?)))
}

/// `GET /_matrix/client/v3/room_keys/version/{version}`
async fn get_version(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(version): PathParams<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(version_json(services.backup_version(&requester, Some(&version)).await?)))
}

/// `PUT /_matrix/client/v3/room_keys/version/{version}`
async fn update_version(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(version): PathParams<String>,
    JsonBody(body): JsonBody<UpdateVersionBody>,
) -> ApiResult<Json<Value>> {
    services
        .update_backup_version(
            &requester,
            &version,
            body.version.as_deref(),
            &body.algorithm,
            &body.auth_data,
        )
        .await?;
    Ok(Json(json!({})))
}

/// `DELETE /_matrix/client/v3/room_keys/version/{version}`
async fn delete_version(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(version): PathParams<String>,
) -> ApiResult<Json<Value>> {
    services.delete_backup_version(&requester, &version).await?;
    Ok(Json(json!({})))
}

/// `PUT /_matrix/client/v3/room_keys/keys`
async fn put_keys(
    State(services): State<AppState>,
    Auth(requester): Auth,
    QueryParams(query): QueryParams<VersionQuery>,
    JsonBody(body): JsonBody<KeysBackupBody>,
) -> ApiResult<Json<Value>> {
    let version = query.required()?;
    let mut keys = RoomKeys::new();
    for (room_id, room) in body.rooms {
        keys.insert(parse_room_id(&room_id)?, sessions_from_body(room.sessions)?);
    }
    Ok(Json(update_json(services.put_room_keys(&requester, &version, &keys).await?)))
}

/// `GET /_matrix/client/v3/room_keys/keys`
async fn get_keys(
    State(services): State<AppState>,
    Auth(requester): Auth,
    QueryParams(query): QueryParams<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let version = query.required()?;
    let keys = services.room_keys(&requester, &version, RoomKeysScope::All).await?;
    let rooms: Map<String, Value> =
        keys.into_iter().map(|(room_id, sessions)| (room_id.to_string(), sessions_json(sessions))).collect();
    Ok(Json(json!({ "rooms": rooms })))
}

/// `DELETE /_matrix/client/v3/room_keys/keys`
async fn delete_keys(
    State(services): State<AppState>,
    Auth(requester): Auth,
    QueryParams(query): QueryParams<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let version = query.required()?;
    Ok(Json(update_json(services.delete_room_keys(&requester, &version, RoomKeysScope::All).await?)))
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}`
async fn put_room(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(room_id): PathParams<String>,
    QueryParams(query): QueryParams<VersionQuery>,
    JsonBody(body): JsonBody<RoomKeyBackupBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let version = query.required()?;
    let keys = RoomKeys::from([(room_id, sessions_from_body(body.sessions)?)]);
    Ok(Json(update_json(services.put_room_keys(&requester, &version, &keys).await?)))
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}`: `{"sessions": {}}` for a room without keys.
async fn get_room(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(room_id): PathParams<String>,
    QueryParams(query): QueryParams<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let version = query.required()?;
    let mut keys = services.room_keys(&requester, &version, RoomKeysScope::Room(&room_id)).await?;
    Ok(Json(sessions_json(keys.remove(&room_id).unwrap_or_default())))
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}`
async fn delete_room(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(room_id): PathParams<String>,
    QueryParams(query): QueryParams<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let version = query.required()?;
    let update = services.delete_room_keys(&requester, &version, RoomKeysScope::Room(&room_id)).await?;
    Ok(Json(update_json(update)))
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
async fn put_session(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams((room_id, session_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<VersionQuery>,
    JsonBody(body): JsonBody<KeyBackupDataBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let version = query.required()?;
    let keys = RoomKeys::from([(room_id, BTreeMap::from([(session_id, key_from_body(body)?)]))]);
    Ok(Json(update_json(services.put_room_keys(&requester, &version, &keys).await?)))
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
async fn get_session(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams((room_id, session_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let version = query.required()?;
    Ok(Json(key_json(services.room_key(&requester, &version, &room_id, &session_id).await?)))
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
async fn delete_session(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams((room_id, session_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let version = query.required()?;
    let scope = RoomKeysScope::Session(&room_id, &session_id);
    Ok(Json(update_json(services.delete_room_keys(&requester, &version, scope).await?)))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .v3("/room_keys/version", post(create_version).get(current_version))
        .v3("/room_keys/version/{version}", get(get_version).put(update_version).delete(delete_version))
        .v3("/room_keys/keys", get(get_keys).put(put_keys).delete(delete_keys))
        .v3("/room_keys/keys/{room_id}", get(get_room).put(put_room).delete(delete_room))
        .v3(
            "/room_keys/keys/{room_id}/{session_id}",
            get(get_session).put(put_session).delete(delete_session),
        )
}
