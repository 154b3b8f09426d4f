//! Reports: `/_synapse/admin/v1/event_reports[/{reportId}]` and
//! `/_synapse/admin/v1/user_reports[/{reportId}]`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{delete, get};
use myelin_core::MatrixError;
use myelin_service::records::{EventReportsQuery, UserReportsQuery};
use myelin_service::rooms::reports::EventReport;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::AdminAuth;
use crate::error::ApiResult;
use crate::extract::{PathParams, QueryParams};

/// A report with the fields Synapse lists.
fn report_json(report: &EventReport) -> Value {
    let record = &report.report;
    json!({
        "id": record.id,
        "received_ts": record.received_ts,
        "room_id": record.room_id,
        "name": report.room_name,
        "event_id": record.event_id,
        "user_id": record.user_id,
        "reason": record.reason,
        "score": record.score,
        "sender": record.sender,
        "canonical_alias": report.canonical_alias,
    })
}

#[derive(Deserialize)]
struct ListQuery {
    from: Option<i64>,
    limit: Option<i64>,
    dir: Option<String>,
    user_id: Option<String>,
    room_id: Option<String>,
    event_sender_user_id: Option<String>,
}

/// A report list's page as Synapse reads it: `from` (0) and `limit` (100) not negative, `dir`
/// `b` (the default, newest first) or `f`.
fn report_page(
    from: Option<i64>,
    limit: Option<i64>,
    dir: Option<&str>,
) -> Result<(i64, i64, bool), MatrixError> {
    let from = from.unwrap_or(0);
    let limit = limit.unwrap_or(100);
    if from < 0 {
        return Err(MatrixError::invalid_param("The start parameter must be a positive integer."));
    }
    if limit < 0 {
        return Err(MatrixError::invalid_param("The limit parameter must be a positive integer."));
    }
    let forward = match dir {
        None | Some("b") => false,
        Some("f") => true,
        Some(other) => return Err(MatrixError::invalid_param(format!("Unknown direction {other:?}"))),
    };
    Ok((from, limit, forward))
}

/// `GET /_synapse/admin/v1/event_reports`
async fn list(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    let (from, limit, forward) = report_page(query.from, query.limit, query.dir.as_deref())?;
    let store_query = EventReportsQuery {
        from,
        limit,
        forward,
        user_id: query.user_id.filter(|u| !u.is_empty()),
        room_id: query.room_id.filter(|r| !r.is_empty()),
        event_sender: query.event_sender_user_id.filter(|s| !s.is_empty()),
    };
    let (reports, total) = services.event_reports(&store_query).await?;
    let mut body = json!({
        "event_reports": reports.iter().map(report_json).collect::<Vec<_>>(),
        "total": total,
    });
    if from + limit < total {
        body["next_token"] = json!(from + reports.len() as i64);
    }
    Ok(Json(body))
}

/// `GET /_synapse/admin/v1/event_reports/{reportId}`
async fn get_one(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    PathParams(report_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_report_id(&report_id)?;
    let detail = services.event_report(id).await?;
    let mut body = report_json(&detail.summary);
    body["event_json"] = detail.event.unwrap_or(Value::Null);
    Ok(Json(body))
}

/// A report ID from the path, `400 M_INVALID_PARAM` unless a non-negative integer.
fn parse_report_id(report_id: &str) -> Result<i64, MatrixError> {
    report_id.parse::<i64>().ok().filter(|id| *id >= 0).ok_or_else(|| {
        MatrixError::invalid_param(
            "The report_id parameter must be a string representing a positive integer.",
        )
    })
}

/// `DELETE /_synapse/admin/v1/event_reports/{reportId}`
async fn delete_event_report(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(report_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_report_id(&report_id)?;
    services.admin_delete_report(&admin, id, false).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct UserReportsListQuery {
    from: Option<i64>,
    limit: Option<i64>,
    dir: Option<String>,
    user_id: Option<String>,
    target_user_id: Option<String>,
}

/// `GET /_synapse/admin/v1/user_reports`
async fn list_user_reports(
    State(services): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    QueryParams(query): QueryParams<UserReportsListQuery>,
) -> ApiResult<Json<Value>> {
    let (from, limit, forward) = report_page(query.from, query.limit, query.dir.as_deref())?;
    let store_query = UserReportsQuery {
        from,
        limit,
        forward,
        user_id: query.user_id.filter(|u| !u.is_empty()),
        target_user_id: query.target_user_id.filter(|u| !u.is_empty()),
    };
    let (reports, total) = services.admin_user_reports(&store_query).await?;
    let mut body = json!({
        "user_reports": reports
            .iter()
            .map(|report| json!({
                "id": report.id,
                "received_ts": report.received_ts,
                "target_user_id": report.target_user_id,
                "user_id": report.user_id,
                "reason": report.reason,
            }))
            .collect::<Vec<_>>(),
        "total": total,
    });
    if from + limit < total {
        body["next_token"] = json!(from + reports.len() as i64);
    }
    Ok(Json(body))
}

/// `DELETE /_synapse/admin/v1/user_reports/{reportId}`
async fn delete_user_report(
    State(services): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathParams(report_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_report_id(&report_id)?;
    services.admin_delete_report(&admin, id, true).await?;
    Ok(Json(json!({})))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_synapse/admin/v1/event_reports", get(list))
        .route("/_synapse/admin/v1/event_reports/{report_id}", get(get_one).delete(delete_event_report))
        .route("/_synapse/admin/v1/user_reports", get(list_user_reports))
        .route("/_synapse/admin/v1/user_reports/{report_id}", delete(delete_user_report))
}
