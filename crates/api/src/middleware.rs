//! The layer around every listener's router: request ids, client addresses, the request span,
//! CORS, `OPTIONS`, the access log and HTTP metrics.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use myelin_service::metrics::{Metrics, RequestLabels, RouteLabels, method_label};
use tracing::Instrument;

use crate::extract::{ClientIp, PeerAddr};

/// Per-listener settings of the outer layer.
pub struct LayerContext {
    pub x_forwarded: bool,
    pub request_id_header: Option<HeaderName>,
    pub metrics: Arc<Metrics>,
    pub next_request: AtomicU64,
}

/// The route template a request matched, carried out to the outer layer for metrics.
#[derive(Clone)]
struct RouteLabel(String);

/// Inner layer (`Router::route_layer`): records which route matched.
pub async fn record_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteLabel(route));
    }
    response
}

fn client_ip(request: &Request, x_forwarded: bool) -> Option<IpAddr> {
    if x_forwarded
        && let Some(forwarded) = request.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok())
        && let Some(first) = forwarded.split(',').next()
        && let Ok(ip) = first.trim().parse::<IpAddr>()
    {
        return Some(ip);
    }
    request.extensions().get::<PeerAddr>().and_then(|peer| peer.0).map(|addr| addr.ip())
}

fn add_cors_headers(headers: &mut http::HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization, Date"),
    );
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Server"));
}

/// Outer layer around the whole router.
pub async fn outer_layer(
    State(context): State<Arc<LayerContext>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let request_id = context
        .request_id_header
        .as_ref()
        .and_then(|name| request.headers().get(name))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(64).collect::<String>())
        .unwrap_or_else(|| {
            format!(
                "{}-{}",
                method_label(method.as_str()),
                context.next_request.fetch_add(1, Ordering::Relaxed)
            )
        });
    let ip = client_ip(&request, context.x_forwarded);
    request.extensions_mut().insert(ClientIp(ip));
    // Never log query strings: they may carry access tokens. A hostile path or method is cut
    // short: one request must not write a log line of hundreds of kilobytes.
    let path = bounded_for_log(request.uri().path());
    let span = tracing::info_span!("request", id = %request_id);

    let mut response = if method == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).instrument(span.clone()).await
    };
    add_cors_headers(response.headers_mut());

    let status = response.status();
    let elapsed = started.elapsed();
    // Labels from bounded sets only (see `myelin_service::metrics`): never the raw method or path.
    let method_label = method_label(method.as_str());
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| "unmatched".to_owned());
    context
        .metrics
        .http_requests
        .get_or_create(&RequestLabels { method: method_label, route: route.clone(), code: status.as_u16() })
        .inc();
    context
        .metrics
        .http_request_duration
        .get_or_create(&RouteLabels { method: method_label, route })
        .observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        let client = ip.map(|ip| ip.to_string()).unwrap_or_else(|| "-".to_owned());
        let method = bounded_for_log(method.as_str());
        tracing::info!(
            "{client} - {method} {path} {} {:.3}ms",
            status.as_u16(),
            elapsed.as_secs_f64() * 1000.0
        );
    });
    response
}

/// At most [`LOGGED_CHARS`] characters of a client-chosen string, marked when cut.
fn bounded_for_log(value: &str) -> String {
    match value.char_indices().nth(LOGGED_CHARS) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.to_owned(),
    }
}

/// How much of a request's method or path the access log keeps.
const LOGGED_CHARS: usize = 256;

#[cfg(test)]
mod tests {
    use super::bounded_for_log;

    #[test]
    fn hostile_methods_and_paths_are_cut_short_in_the_log() {
        let long = "é".repeat(200_000);
        let logged = bounded_for_log(&long);
        assert!(logged.ends_with("..."));
        assert_eq!(logged.chars().count(), super::LOGGED_CHARS + 3);
        assert_eq!(bounded_for_log("/_matrix/client/versions"), "/_matrix/client/versions");
    }
}
