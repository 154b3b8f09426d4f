//! `/health` and the Prometheus endpoint.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};

use crate::AppState;

/// `GET /health`: `200 OK` while the process serves requests.
async fn health() -> Response {
    crate::text(StatusCode::OK, "OK")
}

/// `GET /_synapse/metrics`: the Prometheus text format.
async fn metrics(State(services): State<AppState>) -> Response {
    let body = services.metrics.render();
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

pub fn health_routes() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

pub fn metrics_routes() -> Router<AppState> {
    Router::new().route("/_synapse/metrics", get(metrics)).route("/metrics", get(metrics))
}
