//! Media in the admin API: quarantine (one media, a room's, a user's), protection, deletion (one
//! media, by age and size, a user's), listings (a room's, a user's), one media's information,
//! the remote media cache purge and the per-user media statistics.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use myelin_core::{ErrCode, MatrixError};
use myelin_service::admin_media::{LocalMediaRecord, MediaStatsOrder, MediaStatsQuery, UserMediaOrder};
use serde_json::{Value, json};

use super::params::{parse_bool, parse_count, parse_forwards, parse_order};
use super::rooms::parse_room;
use super::users::parse_user;
use crate::AppState;
use crate::auth::AdminAuth;
use crate::error::ApiResult;
use crate::extract::{PathParams, QueryParams};

fn media_json(media: &LocalMediaRecord) -> Value {
    json!({
        "media_id": media.media_id,
        "media_type": media.content_type,
        "media_length": media.size,
        "upload_name": media.upload_name,
        "created_ts": media.created_ts,
        "last_access_ts": media.last_access_ts,
        "quarantined_by": media.quarantined_by,
        "safe_from_quarantine": media.safe_from_quarantine,
    })
}

fn deleted_json(deleted: &[String]) -> Json<Value> {
    Json(json!({ "deleted_media": deleted, "total": deleted.len() }))
}

/// `POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}`
async fn quarantine(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams((server_name, media_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    services.admin_quarantine_media(&admin.user_id, &server_name, &media_id).await?;
    Ok(Json(json!({})))
}

/// `POST /_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}`
async fn unquarantine(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams((server_name, media_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    services.admin_unquarantine_media(&admin.user_id, &server_name, &media_id).await?;
    Ok(Json(json!({})))
}

/// `POST /_synapse/admin/v1/room/{roomId}/media/quarantine` (also the older
/// `/v1/quarantine_media/{roomId}`).
async fn quarantine_room(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(room_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room(&room_id)?;
    let count = services.admin_quarantine_room_media(&admin.user_id, &room_id).await?;
    Ok(Json(json!({ "num_quarantined": count })))
}

/// `POST /_synapse/admin/v1/user/{userId}/media/quarantine`
async fn quarantine_user(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let count = services.admin_quarantine_user_media(&admin.user_id, &user_id).await?;
    Ok(Json(json!({ "num_quarantined": count })))
}

/// `POST /_synapse/admin/v1/media/protect/{mediaId}`
async fn protect(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(media_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    services.admin_protect_media(&admin.user_id, &media_id, true).await?;
    Ok(Json(json!({})))
}

/// `POST /_synapse/admin/v1/media/unprotect/{mediaId}`
async fn unprotect(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(media_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    services.admin_protect_media(&admin.user_id, &media_id, false).await?;
    Ok(Json(json!({})))
}

/// `GET /_synapse/admin/v1/media/{serverName}/{mediaId}`
async fn info(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams((server_name, media_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let media = services.admin_media_info(&server_name, &media_id).await?;
    let mut body = media_json(&media);
    body["media_origin"] = json!(server_name);
    body["user_id"] = json!(media.user_id);
    body["authenticated"] = json!(media.authenticated);
    body["sha256"] = json!(media.sha256);
    Ok(Json(json!({ "media_info": body })))
}

/// `DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}`
async fn delete_one(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams((server_name, media_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let deleted = services.admin_delete_media(&admin.user_id, &server_name, &media_id).await?;
    Ok(deleted_json(&deleted))
}

/// `before_ts` as Synapse checks it: required, not negative, and in milliseconds (a value in
/// seconds, before 1970 + 30,000,000 s, is refused).
fn before_ts(pairs: &[(String, String)]) -> Result<i64, MatrixError> {
    let Some((_, value)) = pairs.iter().find(|(name, _)| name == "before_ts") else {
        return Err(MatrixError::new(ErrCode::MissingParam, "Missing integer query parameter 'before_ts'"));
    };
    let before_ts = parse_count("before_ts", value)?;
    if before_ts < 30_000_000_000 {
        return Err(MatrixError::invalid_param(
            "Query parameter before_ts you provided is from the year 1970. Double check that you are providing a timestamp in milliseconds.",
        ));
    }
    i64::try_from(before_ts).map_err(|_| MatrixError::invalid_param("Query parameter before_ts is too large"))
}

/// `POST /_synapse/admin/v1/media/delete` (and `/v1/media/{serverName}/delete`)
async fn delete_old(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    QueryParams(pairs): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let before_ts = before_ts(&pairs)?;
    let mut size_gt = 0;
    let mut keep_profiles = true;
    for (name, value) in &pairs {
        match name.as_str() {
            "size_gt" => size_gt = parse_count(name, value)?,
            "keep_profiles" => keep_profiles = parse_bool(name, value)?,
            _ => {}
        }
    }
    let deleted = services.admin_delete_old_media(&admin.user_id, before_ts, size_gt, keep_profiles).await?;
    Ok(deleted_json(&deleted))
}

/// `POST /_synapse/admin/v1/media/{serverName}/delete`: only this server's media.
async fn delete_old_of_server(
    State(services): State<AppState>,
    admin: AdminAuth,
    PathParams(server_name): PathParams<String>,
    query: QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    if server_name != services.server_name() {
        return Err(MatrixError::invalid_param("Can only delete local media").into());
    }
    delete_old(State(services), admin, query).await
}

/// `GET /_synapse/admin/v1/room/{roomId}/media`
async fn room_media(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(room_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room(&room_id)?;
    let local = services.admin_room_media(&room_id).await?;
    Ok(Json(json!({ "local": local, "remote": [] })))
}

/// `GET /_synapse/admin/v1/users/{userId}/media`: pages as Synapse (`from`, `limit`; sorted by
/// `order_by`, upload time by default, `dir` as asked).
async fn user_media(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
    QueryParams(pairs): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let (mut from, mut limit, mut order, mut backwards) = (0, 100, UserMediaOrder::CreatedTs, false);
    for (name, value) in &pairs {
        match name.as_str() {
            "from" => from = parse_count(name, value)?,
            "limit" => limit = parse_count(name, value)?,
            "order_by" => {
                order = parse_order(value, UserMediaOrder::parse)?;
            }
            "dir" => {
                backwards = !parse_forwards(value)?;
            }
            _ => {}
        }
    }
    let (media, total) = services.admin_user_media(&user_id, order, backwards, from, limit).await?;
    let mut body = json!({ "media": media.iter().map(media_json).collect::<Vec<_>>(), "total": total });
    if from.saturating_add(limit) < total {
        body["next_token"] = json!(from + media.len() as u64);
    }
    Ok(Json(body))
}

/// `DELETE /_synapse/admin/v1/users/{userId}/media`
async fn delete_user_media(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    let deleted = services.admin_delete_user_media(&admin.user_id, &user_id).await?;
    Ok(deleted_json(&deleted))
}

/// `POST /_synapse/admin/v1/purge_media_cache`: deletes the cached remote media not read
/// since `before_ts` (checked as Synapse checks it).
async fn purge_media_cache(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    QueryParams(pairs): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let before_ts = before_ts(&pairs)?;
    let deleted = services.admin_purge_media_cache(&admin.user_id, before_ts).await?;
    Ok(Json(json!({ "deleted": deleted })))
}

/// `GET /_synapse/admin/v1/statistics/users/media`
async fn user_media_stats(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    QueryParams(pairs): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let mut query = MediaStatsQuery {
        from: 0,
        limit: 100,
        from_ts: 0,
        until_ts: None,
        search_term: None,
        order: MediaStatsOrder::UserId,
        forwards: true,
    };
    for (name, value) in &pairs {
        match name.as_str() {
            "from" => query.from = parse_count(name, value)?,
            "limit" => query.limit = parse_count(name, value)?,
            "from_ts" => query.from_ts = i64::try_from(parse_count(name, value)?).unwrap_or(i64::MAX),
            "until_ts" => query.until_ts = Some(i64::try_from(parse_count(name, value)?).unwrap_or(i64::MAX)),
            "search_term" if value.is_empty() => {
                return Err(MatrixError::invalid_param(
                    "Query parameter search_term cannot be an empty string",
                )
                .into());
            }
            "search_term" => query.search_term = Some(value.clone()),
            "order_by" => query.order = parse_order(value, MediaStatsOrder::parse)?,
            "dir" => query.forwards = parse_forwards(value)?,
            _ => {}
        }
    }
    if query.until_ts.is_some_and(|until| until <= query.from_ts) {
        return Err(
            MatrixError::invalid_param("Query parameter until_ts must be greater than from_ts.").into()
        );
    }
    let (users, total) = services.admin_user_media_stats(&query).await?;
    let users: Vec<Value> = users
        .iter()
        .map(|user| {
            let displayname = user
                .displayname
                .as_deref()
                .and_then(|text| serde_json::from_str::<Value>(text).ok())
                .filter(Value::is_string);
            json!({
                "user_id": user.user_id,
                "displayname": displayname,
                "media_count": user.media_count,
                "media_length": user.media_length,
            })
        })
        .collect();
    let mut body = json!({ "users": users, "total": total });
    if query.from.saturating_add(query.limit) < total {
        body["next_token"] = json!(query.from + query.limit);
    }
    Ok(Json(body))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_synapse/admin/v1/media/quarantine/{server_name}/{media_id}", post(quarantine))
        .route("/_synapse/admin/v1/media/unquarantine/{server_name}/{media_id}", post(unquarantine))
        .route("/_synapse/admin/v1/room/{room_id}/media/quarantine", post(quarantine_room))
        .route("/_synapse/admin/v1/quarantine_media/{room_id}", post(quarantine_room))
        .route("/_synapse/admin/v1/user/{user_id}/media/quarantine", post(quarantine_user))
        .route("/_synapse/admin/v1/media/protect/{media_id}", post(protect))
        .route("/_synapse/admin/v1/media/unprotect/{media_id}", post(unprotect))
        .route("/_synapse/admin/v1/media/{server_name}/{media_id}", get(info).delete(delete_one))
        .route("/_synapse/admin/v1/media/delete", post(delete_old))
        .route("/_synapse/admin/v1/media/{server_name}/delete", post(delete_old_of_server))
        .route("/_synapse/admin/v1/room/{room_id}/media", get(room_media))
        .route("/_synapse/admin/v1/users/{user_id}/media", get(user_media).delete(delete_user_media))
        .route("/_synapse/admin/v1/purge_media_cache", post(purge_media_cache))
        .route("/_synapse/admin/v1/statistics/users/media", get(user_media_stats))
}
