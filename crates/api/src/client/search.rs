//! Search: `POST /search` (room events) and `POST /user_directory/search`.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::Services;
use myelin_service::auth::Requester;
use myelin_service::filter::RoomEventFilter;
use myelin_service::search::{
    ContextRequest, GroupKey, SearchContext, SearchKey, SearchOrder, SearchRequest, SearchResults,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ClientRoutes;
use super::rooms::events_json;
use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, QueryParams};
use crate::object::object;

#[derive(Deserialize)]
struct SearchBody {
    search_categories: SearchCategories,
}

/// Categories other than `room_events` are ignored, as by Synapse.
#[derive(Deserialize)]
struct SearchCategories {
    room_events: Option<RoomEventsCriteria>,
}

#[derive(Deserialize)]
struct RoomEventsCriteria {
    search_term: String,
    keys: Option<Vec<String>>,
    filter: Option<RoomEventFilter>,
    order_by: Option<String>,
    event_context: Option<EventContextCriteria>,
    include_state: Option<bool>,
    groupings: Option<Groupings>,
}

#[derive(Deserialize)]
struct EventContextCriteria {
    before_limit: Option<u64>,
    after_limit: Option<u64>,
    include_profile: Option<bool>,
}

#[derive(Deserialize)]
struct Groupings {
    #[serde(default)]
    group_by: Vec<GroupBy>,
}

#[derive(Deserialize)]
struct GroupBy {
    key: String,
}

#[derive(Deserialize)]
struct SearchQuery {
    next_batch: Option<String>,
}

fn search_request(
    criteria: RoomEventsCriteria,
    next_batch: Option<String>,
) -> Result<SearchRequest, MatrixError> {
    let keys = match criteria.keys {
        None => SearchKey::ALL.to_vec(),
        Some(keys) => keys
            .iter()
            .map(|key| {
                SearchKey::parse(key).ok_or_else(|| {
                    MatrixError::invalid_param(format!(
                        "Unknown search key {key:?}: expected content.body, content.name or content.topic"
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let order_by = match criteria.order_by.as_deref() {
        None | Some("rank") => SearchOrder::Rank,
        Some("recent") => SearchOrder::Recent,
        Some(other) => return Err(MatrixError::invalid_param(format!("Invalid order_by {other:?}"))),
    };
    let group_by = criteria
        .groupings
        .map(|g| g.group_by)
        .unwrap_or_default()
        .iter()
        .map(|g| {
            GroupKey::parse(&g.key)
                .ok_or_else(|| MatrixError::invalid_param(format!("Invalid group_by key {:?}", g.key)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SearchRequest {
        search_term: criteria.search_term,
        keys,
        filter: criteria.filter.unwrap_or_default(),
        order_by,
        event_context: criteria.event_context.map(|c| ContextRequest {
            before_limit: c.before_limit.unwrap_or(5),
            after_limit: c.after_limit.unwrap_or(5),
            include_profile: c.include_profile.unwrap_or(false),
        }),
        include_state: criteria.include_state.unwrap_or(false),
        group_by,
        next_batch,
    })
}

async fn context_json(
    services: &Services,
    context: &SearchContext,
    requester: &Requester,
) -> Result<Value, ApiError> {
    let mut out = object([
        ("events_before", Value::Array(events_json(services, &context.before, requester).await?)),
        ("events_after", Value::Array(events_json(services, &context.after, requester).await?)),
        ("start", json!(context.start)),
        ("end", json!(context.end)),
    ]);
    if let Some(profiles) = &context.profile_info {
        let profiles: Map<String, Value> = profiles
            .iter()
            .map(|(user_id, (displayname, avatar_url))| {
                let mut profile = Map::new();
                if let Some(name) = displayname {
                    profile.insert("displayname".to_owned(), json!(name));
                }
                if let Some(url) = avatar_url {
                    profile.insert("avatar_url".to_owned(), json!(url));
                }
                (user_id.clone(), Value::Object(profile))
            })
            .collect();
        out["profile_info"] = Value::Object(profiles);
    }
    Ok(out)
}

async fn room_events_json(
    services: &Services,
    found: SearchResults,
    requester: &Requester,
) -> Result<Value, ApiError> {
    let mut results = Vec::with_capacity(found.results.len());
    for result in &found.results {
        let context = match &result.context {
            Some(context) => context_json(services, context, requester).await?,
            None => json!({}),
        };
        results.push(object([
            ("rank", json!(result.rank)),
            ("result", services.client_event(&result.event, Some(requester)).await?),
            ("context", context),
        ]));
    }
    let mut out = object([
        ("results", Value::Array(results)),
        ("count", json!(found.count)),
        ("highlights", json!(found.highlights)),
    ]);
    if !found.state.is_empty() {
        let mut state = Map::new();
        for (room_id, events) in &found.state {
            state.insert(room_id.to_string(), Value::Array(events_json(services, events, requester).await?));
        }
        out["state"] = Value::Object(state);
    }
    if !found.groups.is_empty() {
        let mut groups = Map::new();
        for (key, by_value) in found.groups {
            let by_value: Map<String, Value> = by_value
                .into_iter()
                .map(|(value, group)| {
                    let mut body = json!({ "results": group.results, "order": group.order });
                    if let Some(next_batch) = group.next_batch {
                        body["next_batch"] = json!(next_batch);
                    }
                    (value, body)
                })
                .collect();
            groups.insert(key.as_str().to_owned(), Value::Object(by_value));
        }
        out["groups"] = Value::Object(groups);
    }
    if let Some(next_batch) = found.next_batch {
        out["next_batch"] = json!(next_batch);
    }
    Ok(out)
}

/// `POST /_matrix/client/v3/search`
async fn search(
    State(services): State<AppState>,
    Auth(requester): Auth,
    QueryParams(query): QueryParams<SearchQuery>,
    JsonBody(body): JsonBody<SearchBody>,
) -> ApiResult<Json<Value>> {
    let criteria = body.search_categories.room_events.ok_or_else(|| {
        MatrixError::bad_json("Invalid search query: search_categories.room_events is required")
    })?;
    let request = search_request(criteria, query.next_batch)?;
    let found = services.search_room_events(&requester, request).await?;
    let room_events = room_events_json(&services, found, &requester).await?;
    Ok(Json(object([("search_categories", object([("room_events", room_events)]))])))
}

#[derive(Deserialize)]
struct UserDirectoryBody {
    search_term: String,
    limit: Option<i64>,
}

/// `POST /_matrix/client/v3/user_directory/search`
async fn user_directory_search(
    State(services): State<AppState>,
    Auth(requester): Auth,
    JsonBody(body): JsonBody<UserDirectoryBody>,
) -> ApiResult<Json<Value>> {
    // As Synapse: a negative limit is 0.
    let limit = body.limit.map_or(myelin_service::user_directory::DEFAULT_LIMIT, |l| l.max(0) as u64);
    let (users, limited) = services.search_user_directory(&requester, &body.search_term, limit).await?;
    let results: Vec<Value> = users
        .into_iter()
        .map(|user| {
            let mut entry = json!({ "user_id": user.user_id });
            if let Some(name) = user.display_name {
                entry["display_name"] = json!(name);
            }
            if let Some(url) = user.avatar_url {
                entry["avatar_url"] = json!(url);
            }
            entry
        })
        .collect();
    Ok(Json(object([("results", Value::Array(results)), ("limited", json!(limited))])))
}

pub fn routes() -> Router<AppState> {
    Router::new().v3("/search", post(search)).v3("/user_directory/search", post(user_directory_search))
}
