//! Push notifications: push rules (`/pushrules`), `/notifications`, pushers (`/pushers`,
//! `/pushers/set`).

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::push::{PusherRequest, parse_rule_kind, push_rules_content};
use myelin_service::records::PusherRecord;
use ruma::push::AnyPushRule;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ClientRoutes;
use crate::AppState;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams, QueryParams};
use myelin_service::auth::Requester;

/// One rule as JSON.
fn rule_json(rule: &AnyPushRule) -> Value {
    let value = match rule {
        AnyPushRule::Override(rule) | AnyPushRule::Underride(rule) => serde_json::to_value(rule),
        AnyPushRule::Content(rule) => serde_json::to_value(rule),
        AnyPushRule::Room(rule) => serde_json::to_value(rule),
        AnyPushRule::Sender(rule) => serde_json::to_value(rule),
        _ => Ok(json!({})),
    };
    value.unwrap_or_else(|_| json!({}))
}

/// The user's rule set as `GET /pushrules/` shows it: the same shape as the content of their
/// `m.push_rules` account data.
async fn global_rules(services: &AppState, requester: &Requester) -> ApiResult<Value> {
    let rules = services.push_rules(&requester.user_id).await?;
    let mut content = push_rules_content(&rules);
    Ok(content["global"].take())
}

/// `GET /_matrix/client/v3/pushrules/`
async fn get_all_rules(State(services): State<AppState>, Auth(requester): Auth) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "global": global_rules(&services, &requester).await? })))
}

/// `GET /_matrix/client/v3/pushrules/global/`
async fn get_global_rules(State(services): State<AppState>, Auth(requester): Auth) -> ApiResult<Json<Value>> {
    Ok(Json(global_rules(&services, &requester).await?))
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/`
async fn get_kind_rules(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams(kind): PathParams<String>,
) -> ApiResult<Json<Value>> {
    parse_rule_kind(&kind)?;
    Ok(Json(global_rules(&services, &requester).await?.get(&kind).cloned().unwrap_or_else(|| json!([]))))
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn get_rule(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams((kind, rule_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let rule = services.get_push_rule(&requester, &kind, &rule_id).await?;
    Ok(Json(rule_json(&rule)))
}

#[derive(Deserialize)]
struct PlacementQuery {
    before: Option<String>,
    after: Option<String>,
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn put_rule(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams((kind, rule_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<PlacementQuery>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let before = query.before.as_deref().filter(|b| !b.is_empty());
    let after = query.after.as_deref().filter(|a| !a.is_empty());
    services.set_push_rule(&requester, &kind, &rule_id, before, after, &body).await?;
    Ok(Json(json!({})))
}

/// `DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn delete_rule(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams((kind, rule_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    services.delete_push_rule(&requester, &kind, &rule_id).await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
async fn get_enabled(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams((kind, rule_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let rule = services.get_push_rule(&requester, &kind, &rule_id).await?;
    Ok(Json(json!({ "enabled": rule.enabled() })))
}

#[derive(Deserialize)]
struct EnabledBody {
    enabled: bool,
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
async fn put_enabled(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams((kind, rule_id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<EnabledBody>,
) -> ApiResult<Json<Value>> {
    services.set_push_rule_enabled(&requester, &kind, &rule_id, body.enabled).await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
async fn get_actions(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams((kind, rule_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let rule = services.get_push_rule(&requester, &kind, &rule_id).await?;
    Ok(Json(json!({ "actions": rule.actions() })))
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
async fn put_actions(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams((kind, rule_id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    services.set_push_rule_actions(&requester, &kind, &rule_id, body.get("actions")).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct NotificationsQuery {
    from: Option<String>,
    limit: Option<u64>,
    only: Option<String>,
}

/// `GET /_matrix/client/v3/notifications`
async fn notifications(
    State(services): State<AppState>,
    Auth(requester): Auth,
    QueryParams(query): QueryParams<NotificationsQuery>,
) -> ApiResult<Json<Value>> {
    let page =
        services.notifications(&requester, query.from.as_deref(), query.limit, query.only.as_deref()).await?;
    let notifications: Vec<Value> = page
        .notifications
        .into_iter()
        .map(|n| {
            json!({
                "actions": n.actions,
                "event": n.event,
                "read": n.read,
                "room_id": n.room_id,
                "ts": n.ts,
            })
        })
        .collect();
    let mut body = json!({ "notifications": notifications });
    if let Some(next_token) = page.next_token {
        body["next_token"] = json!(next_token);
    }
    Ok(Json(body))
}

pub(crate) fn pusher_json(pusher: &PusherRecord) -> Value {
    let data: Value = serde_json::from_str(&pusher.data).unwrap_or_else(|_| json!({}));
    let mut body = json!({
        "pushkey": pusher.pushkey,
        "kind": pusher.kind,
        "app_id": pusher.app_id,
        "app_display_name": pusher.app_display_name,
        "device_display_name": pusher.device_display_name,
        "lang": pusher.lang,
        "data": data,
    });
    if let Some(tag) = &pusher.profile_tag {
        body["profile_tag"] = json!(tag);
    }
    body
}

/// `GET /_matrix/client/v3/pushers`
async fn get_pushers(State(services): State<AppState>, Auth(requester): Auth) -> ApiResult<Json<Value>> {
    let pushers = services.pushers(&requester).await?;
    Ok(Json(json!({ "pushers": pushers.iter().map(pusher_json).collect::<Vec<_>>() })))
}

fn required_string(body: &Map<String, Value>, key: &str) -> Result<String, MatrixError> {
    match body.get(key) {
        Some(Value::String(value)) => Ok(value.clone()),
        None | Some(Value::Null) => Err(MatrixError::missing_param(format!("Missing parameter: {key}"))),
        Some(_) => Err(MatrixError::bad_json(format!("`{key}` must be a string"))),
    }
}

fn optional_string(body: &Map<String, Value>, key: &str) -> Result<Option<String>, MatrixError> {
    match body.get(key) {
        Some(Value::String(value)) => Ok(Some(value.clone())),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(MatrixError::bad_json(format!("`{key}` must be a string"))),
    }
}

/// `POST /_matrix/client/v3/pushers/set`
async fn set_pusher(
    State(services): State<AppState>,
    Auth(requester): Auth,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let kind = match body.get("kind") {
        None => return Err(MatrixError::missing_param("Missing parameter: kind").into()),
        Some(Value::Null) => None,
        Some(Value::String(kind)) => Some(kind.clone()),
        Some(_) => return Err(MatrixError::bad_json("`kind` must be a string or null").into()),
    };
    let data = match body.get("data") {
        None | Some(Value::Null) => None,
        Some(Value::Object(data)) => Some(data.clone()),
        Some(_) => return Err(MatrixError::bad_json("`data` must be an object").into()),
    };
    let append = match body.get("append") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(append)) => *append,
        Some(_) => return Err(MatrixError::bad_json("`append` must be a boolean").into()),
    };
    let request = PusherRequest {
        kind,
        app_id: required_string(&body, "app_id")?,
        pushkey: required_string(&body, "pushkey")?,
        app_display_name: optional_string(&body, "app_display_name")?,
        device_display_name: optional_string(&body, "device_display_name")?,
        profile_tag: optional_string(&body, "profile_tag")?,
        lang: optional_string(&body, "lang")?,
        data,
        append,
    };
    services.set_pusher(&requester, request).await?;
    Ok(Json(json!({})))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .v3("/pushrules/", get(get_all_rules))
        .v3("/pushrules/global/", get(get_global_rules))
        .v3("/pushrules/global/{kind}/", get(get_kind_rules))
        .v3("/pushrules/global/{kind}/{rule_id}", get(get_rule).put(put_rule).delete(delete_rule))
        .v3("/pushrules/global/{kind}/{rule_id}/enabled", get(get_enabled).put(put_enabled))
        .v3("/pushrules/global/{kind}/{rule_id}/actions", get(get_actions).put(put_actions))
        .v3("/notifications", get(notifications))
        .v3("/pushers", get(get_pushers))
        .v3("/pushers/set", post(set_pusher))
}
