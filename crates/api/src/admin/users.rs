//! Users in the admin API: the user list (`/v2/users`, `/v3/users`), one user (`/v2/users/{userId}`),
//! the admin flag, deactivation, joined rooms and memberships, account data, `whois`,
//! `username_available`, the server version, per-user rate-limit overrides, password resets,
//! logging in as a user, shadow bans, suspensions, experimental features and redacting a
//! user's events.

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::admin_users::{
    AdminUserDetails, AdminUserUpdate, UserRedactionRequest, UserRedactionStatus,
};
use myelin_service::records::{RateLimitOverride, UserListEntry, UserListQuery, UserOrder};
use serde::Deserialize;
use serde_json::{Value, json};

use super::params::{parse_bool, parse_count, parse_forwards, parse_order};
use crate::AppState;
use crate::auth::{AdminAuth, Auth};
use crate::error::ApiResult;
use crate::extract::{JsonBody, JsonBodyOrEmpty, PathParams, QueryParams};
use crate::object::object;

fn parse_local_user(services: &AppState, user_id: &str) -> Result<ruma::OwnedUserId, MatrixError> {
    let user_id = ruma::UserId::parse(user_id)
        .map_err(|_| MatrixError::invalid_param(format!("Invalid user ID {user_id:?}")))?;
    if user_id.server_name().as_str() != services.server_name() {
        return Err(MatrixError::invalid_param("Can only look up local users"));
    }
    Ok(user_id)
}

/// `GET /_synapse/admin/v1/users/{userId}/override_ratelimit`
async fn get_override(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_local_user(&services, &user_id)?;
    Ok(Json(match services.get_ratelimit_override(&user_id).await? {
        Some(o) => json!({ "messages_per_second": o.messages_per_second, "burst_count": o.burst_count }),
        None => json!({}),
    }))
}

#[derive(Deserialize)]
struct OverrideBody {
    messages_per_second: Option<i64>,
    burst_count: Option<i64>,
}

/// `POST /_synapse/admin/v1/users/{userId}/override_ratelimit`
async fn set_override(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<OverrideBody>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_local_user(&services, &user_id)?;
    let value = RateLimitOverride {
        messages_per_second: body.messages_per_second.unwrap_or(0),
        burst_count: body.burst_count.unwrap_or(0),
    };
    if value.messages_per_second < 0 || value.burst_count < 0 {
        return Err(MatrixError::invalid_param(
            "messages_per_second and burst_count must be positive integers",
        )
        .into());
    }
    services.set_ratelimit_override(&user_id, Some(value)).await?;
    Ok(Json(json!({ "messages_per_second": value.messages_per_second, "burst_count": value.burst_count })))
}

/// `DELETE /_synapse/admin/v1/users/{userId}/override_ratelimit`
async fn delete_override(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_local_user(&services, &user_id)?;
    services.set_ratelimit_override(&user_id, None).await?;
    Ok(Json(json!({})))
}

/// The user list's query (`v3`: `deactivated` filters both ways; `v2`: `deactivated=true`
/// includes them, anything else leaves them out).
fn user_list_query(pairs: &[(String, String)], v3: bool) -> Result<UserListQuery, MatrixError> {
    let mut query = UserListQuery {
        from: 0,
        limit: 100,
        user_id: None,
        name: None,
        guests: true,
        deactivated: if v3 { None } else { Some(false) },
        admins: None,
        locked: false,
        not_user_types: Vec::new(),
        order: UserOrder::Name,
        forwards: true,
    };
    for (name, value) in pairs {
        match name.as_str() {
            "from" => query.from = parse_count(name, value)? as i64,
            "limit" => query.limit = parse_count(name, value)? as i64,
            "user_id" => query.user_id = Some(value.clone()),
            "name" => query.name = Some(value.clone()),
            "guests" => query.guests = parse_bool(name, value)?,
            "deactivated" => {
                let deactivated = parse_bool(name, value)?;
                query.deactivated = match (v3, deactivated) {
                    (true, flag) => Some(flag),
                    (false, true) => None,
                    (false, false) => Some(false),
                };
            }
            "admins" => query.admins = Some(parse_bool(name, value)?),
            "locked" => query.locked = parse_bool(name, value)?,
            "not_user_type" => query.not_user_types.push(value.clone()),
            "order_by" => query.order = parse_order(value, UserOrder::parse)?,
            "dir" => query.forwards = parse_forwards(value)?,
            _ => {}
        }
    }
    Ok(query)
}

fn list_entry_json(user: &UserListEntry) -> Value {
    json!({
        "name": user.user_id,
        "user_type": user.user_type,
        "is_guest": user.is_guest,
        "admin": user.admin,
        "deactivated": user.deactivated,
        "shadow_banned": user.shadow_banned,
        "displayname": user.displayname,
        "avatar_url": user.avatar_url,
        "creation_ts": user.creation_ts,
        "erased": user.erased,
        "last_seen_ts": user.last_seen_ts,
        "locked": user.locked,
    })
}

async fn list_users(services: &AppState, pairs: &[(String, String)], v3: bool) -> ApiResult<Json<Value>> {
    let query = user_list_query(pairs, v3)?;
    let (users, total) = services.admin_list_users(&query).await?;
    let mut body = object([
        ("users", Value::Array(users.iter().map(list_entry_json).collect())),
        ("total", json!(total)),
    ]);
    if query.from + query.limit < total {
        body["next_token"] = json!((query.from + users.len() as i64).to_string());
    }
    Ok(Json(body))
}

/// `GET /_synapse/admin/v2/users`
async fn list_v2(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    QueryParams(pairs): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    list_users(&services, &pairs, false).await
}

/// `GET /_synapse/admin/v3/users`
async fn list_v3(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    QueryParams(pairs): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    list_users(&services, &pairs, true).await
}

/// A user ID from a path, `400 M_INVALID_PARAM` when it is not one.
pub(super) fn parse_user(user_id: &str) -> Result<ruma::OwnedUserId, MatrixError> {
    ruma::UserId::parse(user_id)
        .map_err(|_| MatrixError::invalid_param(format!("Invalid user ID {user_id:?}")))
}

fn details_json(details: &AdminUserDetails) -> Value {
    let user = &details.user;
    let text =
        |field: &str| details.profile.get(field).filter(|v| v.is_string()).cloned().unwrap_or(Value::Null);
    json!({
        "name": user.user_id,
        "displayname": text("displayname"),
        "avatar_url": text("avatar_url"),
        "threepids": [],
        "external_ids": [],
        "is_guest": user.is_guest,
        "admin": user.admin,
        "deactivated": user.deactivated,
        "erased": user.erased,
        "shadow_banned": user.shadow_banned,
        "locked": user.locked,
        "suspended": user.suspended,
        // In seconds here, as Synapse answers it (its user list answers milliseconds).
        "creation_ts": user.created_ts / 1000,
        "appservice_id": user.appservice_id,
        "consent_server_notice_sent": user.consent_server_notice_sent,
        "consent_version": user.consent_version,
        "consent_ts": user.consent_ts,
        "user_type": user.user_type,
        "last_seen_ts": details.last_seen_ts,
    })
}

/// `GET /_synapse/admin/v2/users/{userId}`
async fn get_user(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    Ok(Json(details_json(&services.admin_user_details(&user_id).await?)))
}

/// A boolean field of the body, `400 M_BAD_JSON` with Synapse's message when it is not one.
fn body_bool(body: &serde_json::Map<String, Value>, field: &str) -> Result<Option<bool>, MatrixError> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(_) => Err(MatrixError::bad_json(format!("'{field}' parameter is not of type boolean"))),
    }
}

/// `threepids` / `external_ids`: Myelin keeps neither yet, so only an empty list is accepted.
fn refuse_identifiers(body: &serde_json::Map<String, Value>, field: &str) -> Result<(), MatrixError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(list)) if list.is_empty() => Ok(()),
        Some(Value::Array(_)) => {
            Err(MatrixError::invalid_param(format!("{field} are not supported by this server")))
        }
        Some(_) => Err(MatrixError::bad_json(format!("{field} must be a list"))),
    }
}

/// `PUT /_synapse/admin/v2/users/{userId}`: 201 with the new user, or 200 with the changed one.
async fn put_user(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
    JsonBody(body): JsonBody<serde_json::Map<String, Value>>,
) -> ApiResult<(axum::http::StatusCode, Json<Value>)> {
    let user_id = parse_user(&user_id)?;
    refuse_identifiers(&body, "threepids")?;
    refuse_identifiers(&body, "external_ids")?;
    let password = match body.get("password") {
        None | Some(Value::Null) => None,
        Some(Value::String(password)) => Some(password.clone()),
        Some(_) => return Err(MatrixError::bad_json("Invalid password").into()),
    };
    let user_type = match body.get("user_type") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(kind)) => Some(Some(kind.clone())),
        Some(_) => return Err(MatrixError::bad_json("Invalid user type").into()),
    };
    let admin_flag = match body.get("admin") {
        None => None,
        Some(Value::Bool(flag)) => Some(*flag),
        Some(_) => return Err(MatrixError::bad_json("Param 'admin' must be a boolean, if given").into()),
    };
    let update = AdminUserUpdate {
        password,
        logout_devices: body_bool(&body, "logout_devices")?.unwrap_or(true),
        displayname: body.get("displayname").cloned(),
        avatar_url: body.get("avatar_url").cloned(),
        admin: admin_flag,
        deactivated: body_bool(&body, "deactivated")?,
        locked: body_bool(&body, "locked")?,
        user_type,
    };
    let created = services.admin_upsert_user(&admin, &user_id, update).await?;
    let details = details_json(&services.admin_user_details(&user_id).await?);
    let status = if created { axum::http::StatusCode::CREATED } else { axum::http::StatusCode::OK };
    Ok((status, Json(details)))
}

/// `GET /_synapse/admin/v1/users/{userId}/admin`
async fn get_admin(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    Ok(Json(json!({ "admin": services.admin_is_admin(&user_id).await? })))
}

#[derive(Deserialize)]
struct AdminFlagBody {
    admin: bool,
}

/// `PUT /_synapse/admin/v1/users/{userId}/admin`
async fn set_admin(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
    JsonBody(body): JsonBody<AdminFlagBody>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    services.admin_set_admin(&admin, &user_id, body.admin).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeactivateBody {
    #[serde(default)]
    erase: bool,
}

/// `POST /_synapse/admin/v1/deactivate/{userId}`
async fn deactivate(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<DeactivateBody>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    services.admin_deactivate(&admin, &user_id, body.erase).await?;
    Ok(Json(json!({ "id_server_unbind_result": "success" })))
}

/// `GET /_synapse/admin/v1/users/{userId}/joined_rooms`
async fn joined_rooms(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let rooms = services.admin_joined_rooms(&user_id).await?;
    Ok(Json(json!({ "total": rooms.len(), "joined_rooms": rooms })))
}

/// `GET /_synapse/admin/v1/whois/{userId}` (also the client API's `/admin/whois`): each
/// device's last connection. As in Synapse, a connection that sent no `User-Agent` (or whose
/// address is unknown) shows an empty string: synapse-admin's connections tab reads both as strings.
async fn whois(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let devices = services.admin_whois(&requester, &user_id).await?;
    let devices: serde_json::Map<String, Value> = devices
        .iter()
        .map(|device| {
            let connections = match device.last_seen_ts {
                Some(last_seen) => json!([{
                    "ip": device.last_seen_ip.as_deref().unwrap_or_default(),
                    "last_seen": last_seen,
                    "user_agent": device.last_seen_user_agent.as_deref().unwrap_or_default(),
                }]),
                None => json!([]),
            };
            (device.device_id.clone(), json!({ "sessions": [{ "connections": connections }] }))
        })
        .collect();
    Ok(Json(json!({ "user_id": user_id, "devices": devices })))
}

#[derive(Deserialize)]
struct UsernameQuery {
    username: String,
}

/// `GET /_synapse/admin/v1/username_available`
async fn username_available(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    QueryParams(query): QueryParams<UsernameQuery>,
) -> ApiResult<Json<Value>> {
    services.username_available(&query.username).await?;
    Ok(Json(json!({ "available": true })))
}

/// `GET /_synapse/admin/v1/server_version`: needs no access token, as in Synapse.
async fn server_version() -> Json<Value> {
    Json(json!({ "server_version": env!("CARGO_PKG_VERSION") }))
}

/// A field of a JSON body that must be a string when present.
fn body_string(body: &serde_json::Map<String, Value>, field: &str) -> Result<Option<String>, MatrixError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(MatrixError::bad_json(format!("'{field}' parameter is not of type string"))),
    }
}

/// A field of a JSON body that must be an integer when present.
fn body_int(body: &serde_json::Map<String, Value>, field: &str) -> Result<Option<i64>, MatrixError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_i64()
            .map(Some)
            .ok_or_else(|| MatrixError::bad_json(format!("'{field}' parameter must be an int"))),
    }
}

/// `POST /_synapse/admin/v1/reset_password/{userId}`
async fn reset_password(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
    JsonBody(body): JsonBody<serde_json::Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let Some(new_password) = body_string(&body, "new_password")? else {
        return Err(MatrixError::missing_param("Missing params: ['new_password']").into());
    };
    let logout_devices = body_bool(&body, "logout_devices")?.unwrap_or(true);
    services.admin_reset_password(&admin, &user_id, &new_password, logout_devices).await?;
    Ok(Json(json!({})))
}

/// `POST /_synapse/admin/v1/users/{userId}/login`
async fn login_as(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<serde_json::Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let valid_until_ms = body_int(&body, "valid_until_ms")
        .map_err(|_| MatrixError::invalid_param("'valid_until_ms' parameter must be an int"))?;
    let token = services.admin_login_as(&admin, &user_id, valid_until_ms).await?;
    Ok(Json(json!({ "access_token": token })))
}

/// `GET /_synapse/admin/v1/users/{userId}/memberships`
async fn memberships(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let memberships: serde_json::Map<String, Value> = services
        .admin_memberships(&user_id)
        .await?
        .into_iter()
        .map(|(room_id, membership)| (room_id, Value::String(membership)))
        .collect();
    Ok(Json(json!({ "memberships": memberships })))
}

/// `GET /_synapse/admin/v1/users/{userId}/accountdata`
async fn account_data(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let data = services.admin_account_data(&user_id).await?;
    Ok(Json(json!({ "account_data": { "global": data.global, "rooms": data.rooms } })))
}

/// `POST /_synapse/admin/v1/users/{userId}/shadow_ban`
async fn shadow_ban(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    services.admin_set_shadow_banned(&admin, &user_id, true).await?;
    Ok(Json(json!({})))
}

/// `DELETE /_synapse/admin/v1/users/{userId}/shadow_ban`
async fn lift_shadow_ban(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    services.admin_set_shadow_banned(&admin, &user_id, false).await?;
    Ok(Json(json!({})))
}

/// `PUT /_synapse/admin/v1/suspend/{userId}`: `{"user_<userId>_suspended": <bool>}`.
async fn suspend(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
    JsonBody(body): JsonBody<serde_json::Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let suspend = match body.get("suspend") {
        Some(Value::Bool(flag)) => *flag,
        None => return Err(MatrixError::bad_json("'suspend' is required").into()),
        Some(_) => return Err(MatrixError::bad_json("'suspend' must be a boolean").into()),
    };
    services.admin_set_suspended(&admin, &user_id, suspend).await?;
    let mut answer = serde_json::Map::new();
    answer.insert(format!("user_{user_id}_suspended"), Value::Bool(suspend));
    Ok(Json(Value::Object(answer)))
}

/// `GET /_synapse/admin/v1/experimental_features/{userId}`
async fn get_features(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let features: serde_json::Map<String, Value> = services
        .admin_experimental_features(&user_id)
        .await?
        .into_iter()
        .map(|(feature, enabled)| (feature.to_owned(), Value::Bool(enabled)))
        .collect();
    Ok(Json(json!({ "features": features })))
}

/// `PUT /_synapse/admin/v1/experimental_features/{userId}`
async fn set_features(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
    JsonBody(body): JsonBody<serde_json::Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let features = match body.get("features") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(features)) => features
            .iter()
            .map(|(feature, enabled)| match enabled {
                Value::Bool(enabled) => Ok((feature.clone(), *enabled)),
                _ => Err(MatrixError::bad_json(format!("The value of {feature:?} must be a boolean"))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(MatrixError::bad_json("'features' must be an object").into()),
    };
    services.admin_set_experimental_features(&admin, &user_id, features).await?;
    Ok(Json(json!({})))
}

/// `POST /_synapse/admin/v1/user/{userId}/redact`
async fn redact_user(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
    JsonBody(body): JsonBody<serde_json::Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let rooms = match body.get("rooms") {
        Some(Value::Array(rooms)) => rooms
            .iter()
            .map(|room| room.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| MatrixError::bad_json("'rooms' must be a list of room IDs"))?,
        None => return Err(MatrixError::bad_json("'rooms' is required").into()),
        Some(_) => return Err(MatrixError::bad_json("'rooms' must be a list of room IDs").into()),
    };
    let request = UserRedactionRequest {
        rooms,
        reason: body_string(&body, "reason")?,
        limit: body_int(&body, "limit")?,
        use_admin: body_bool(&body, "use_admin")?.unwrap_or(false),
        before_ts: body_int(&body, "before_ts")?,
        after_ts: body_int(&body, "after_ts")?,
    };
    let redact_id = services.admin_redact_user(&admin, &user_id, request).await?;
    Ok(Json(json!({ "redact_id": redact_id })))
}

/// `GET /_synapse/admin/v1/user/redact_status/{redactId}`
async fn redact_status(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(redact_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(match services.admin_user_redaction_status(&redact_id).await? {
        UserRedactionStatus::Scheduled => json!({ "status": "scheduled" }),
        UserRedactionStatus::Active => json!({ "status": "active" }),
        UserRedactionStatus::Complete { failed_redactions } => {
            json!({ "status": "complete", "failed_redactions": failed_redactions })
        }
        UserRedactionStatus::Failed { error } => json!({ "status": "failed", "error": error }),
    }))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/_synapse/admin/v1/users/{user_id}/override_ratelimit",
            get(get_override).post(set_override).delete(delete_override),
        )
        .route("/_synapse/admin/v2/users", get(list_v2))
        .route("/_synapse/admin/v3/users", get(list_v3))
        .route("/_synapse/admin/v2/users/{user_id}", get(get_user).put(put_user))
        .route("/_synapse/admin/v1/users/{user_id}/admin", get(get_admin).put(set_admin))
        .route("/_synapse/admin/v1/deactivate/{user_id}", post(deactivate))
        .route("/_synapse/admin/v1/users/{user_id}/joined_rooms", get(joined_rooms))
        .route("/_synapse/admin/v1/whois/{user_id}", get(whois))
        .route("/_synapse/admin/v1/username_available", get(username_available))
        .route("/_synapse/admin/v1/server_version", get(server_version))
        .route("/_synapse/admin/v1/reset_password/{user_id}", post(reset_password))
        .route("/_synapse/admin/v1/users/{user_id}/login", post(login_as))
        .route("/_synapse/admin/v1/users/{user_id}/memberships", get(memberships))
        .route("/_synapse/admin/v1/users/{user_id}/accountdata", get(account_data))
        .route("/_synapse/admin/v1/users/{user_id}/shadow_ban", post(shadow_ban).delete(lift_shadow_ban))
        .route("/_synapse/admin/v1/suspend/{user_id}", put(suspend))
        .route("/_synapse/admin/v1/experimental_features/{user_id}", get(get_features).put(set_features))
        .route("/_synapse/admin/v1/user/{user_id}/redact", post(redact_user))
        .route("/_synapse/admin/v1/user/redact_status/{redact_id}", get(redact_status))
}
