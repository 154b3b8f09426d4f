//! The layers around every listener's router, outermost first:
//!
//! 1. the client's address (from `X-Forwarded-For` when the listener trusts it, else the peer);
//! 2. the request id, taken from the listener's `request_id_header` (tower-http
//!    `SetRequestIdLayer`) or numbered per listener (`GET-17`);
//! 3. the request span and the access log line (tower-http `TraceLayer`);
//! 4. HTTP metrics, by method, route template and status;
//! 5. CORS headers on every response, errors included (tower-http `SetResponseHeaderLayer`);
//! 6. `OPTIONS` answered `204 No Content` on any path, as Synapse does.
//!
//! tower-http's `CorsLayer` is not used: it puts `Access-Control-Allow-Methods`/`-Headers` only on
//! preflight answers (Synapse, and so Myelin, send all four headers on every response), answers
//! preflights `200` rather than `204`, and adds `Vary` headers.
//!
//! The access log never shows a query string (it may carry an access token) nor, for a route the
//! server defines, the path as sent: a path segment may be a secret (a registration token). It
//! shows the route template (`/_synapse/admin/v1/registration_tokens/{token}`); only a path no
//! route matched is logged as sent, cut to [`LOGGED_CHARS`] characters.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use myelin_service::metrics::{Metrics, RequestLabels, RouteLabels, method_label};
use tower_http::request_id::{MakeRequestId, RequestId, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{MakeSpan, OnResponse, TraceLayer};
use tracing::Span;

use crate::extract::{ClientIp, PeerAddr};

/// Per-listener settings of the outer layers.
pub struct LayerContext {
    pub x_forwarded: bool,
    pub request_id_header: Option<HeaderName>,
    pub metrics: Arc<Metrics>,
}

/// The CORS headers of every response.
const CORS_HEADERS: [(HeaderName, &str); 4] = [
    (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
    (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    (header::ACCESS_CONTROL_ALLOW_HEADERS, "X-Requested-With, Content-Type, Authorization, Date"),
    (header::ACCESS_CONTROL_EXPOSE_HEADERS, "Server"),
];

/// Wraps a listener's routes (fallbacks and panic handler included) in the outer layers.
pub fn wrap<S: Clone + Send + Sync + 'static>(routes: Router<S>, context: LayerContext) -> Router<S> {
    let ids = RequestIds::default();
    let mut router = routes.layer(axum::middleware::from_fn(answer_options));
    for (name, value) in CORS_HEADERS {
        router = router.layer(SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value)));
    }
    router = router.layer(axum::middleware::from_fn_with_state(context.metrics, record_metrics)).layer(
        TraceLayer::new_for_http()
            .make_span_with(RequestSpan { ids: ids.clone() })
            .on_request(())
            .on_response(AccessLog)
            .on_body_chunk(())
            .on_eos(())
            .on_failure(()),
    );
    if let Some(header) = context.request_id_header {
        router = router.layer(SetRequestIdLayer::new(header, ids));
    }
    router.layer(axum::middleware::map_request_with_state(context.x_forwarded, client_address))
}

/// The route template a request matched, carried out to [`record_metrics`].
#[derive(Clone)]
struct RouteLabel(String);

/// Inner layer (`Router::route_layer`): records which route matched. Only requests a route's
/// method handles get it: `405`s and `OPTIONS` count as `unmatched`, as unknown paths do.
pub async fn record_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteLabel(route));
    }
    response
}

/// Records the client's address as a [`ClientIp`] for the handlers and the access log.
async fn client_address(State(x_forwarded): State<bool>, mut request: Request) -> Request {
    let ip = client_ip(&request, x_forwarded);
    request.extensions_mut().insert(ClientIp(ip));
    request
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

/// Request ids numbered per listener: the method, then a counter (`GET-17`).
#[derive(Clone, Default)]
struct RequestIds(Arc<AtomicU64>);

impl RequestIds {
    fn next(&self, method: &Method) -> String {
        format!("{}-{}", method_label(method.as_str()), self.0.fetch_add(1, Ordering::Relaxed))
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, request: &http::Request<B>) -> Option<RequestId> {
        HeaderValue::try_from(self.next(request.method())).ok().map(RequestId::new)
    }
}

/// The `request` span: the request id, and the access log's client, method and path.
#[derive(Clone)]
struct RequestSpan {
    ids: RequestIds,
}

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &http::Request<B>) -> Span {
        // An id sent by the client (in the listener's `request_id_header`) is cut short; one
        // that is not text is replaced, as is a missing one when no header is configured.
        let id = request
            .extensions()
            .get::<RequestId>()
            .and_then(|id| id.header_value().to_str().ok())
            .map(|id| id.chars().take(64).collect::<String>())
            .unwrap_or_else(|| self.ids.next(request.method()));
        let client = request
            .extensions()
            .get::<ClientIp>()
            .and_then(|ip| ip.0)
            .map_or_else(|| "-".to_owned(), |ip| ip.to_string());
        let method = bounded_for_log(request.method().as_str());
        let path = match request.extensions().get::<MatchedPath>() {
            Some(route) => bounded_for_log(route.as_str()),
            None => bounded_for_log(request.uri().path()),
        };
        tracing::info_span!("request", id = %id, client = %client, method = %method, path = %path)
    }
}

/// The access log line, in the request span: status and time taken.
#[derive(Clone)]
struct AccessLog;

impl<B> OnResponse<B> for AccessLog {
    fn on_response(self, response: &http::Response<B>, latency: Duration, span: &Span) {
        tracing::info!(
            parent: span,
            "{} {:.3}ms",
            response.status().as_u16(),
            latency.as_secs_f64() * 1000.0
        );
    }
}

/// Counts the request and its duration. Labels come from bounded sets only (see
/// `myelin_service::metrics`): never the raw method or path.
async fn record_metrics(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method().as_str());
    let response = next.run(request).await;
    let route =
        response.extensions().get::<RouteLabel>().map_or_else(|| "unmatched".to_owned(), |r| r.0.clone());
    metrics
        .http_requests
        .get_or_create(&RequestLabels { method, route: route.clone(), code: response.status().as_u16() })
        .inc();
    metrics
        .http_request_duration
        .get_or_create(&RouteLabels { method, route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `OPTIONS` on any path: `204` (with the CORS headers the outer layer adds).
async fn answer_options(request: Request, next: Next) -> Response {
    if request.method() == Method::OPTIONS {
        return StatusCode::NO_CONTENT.into_response();
    }
    next.run(request).await
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
