//! HTTP only: URLs, status codes and JSON wire shapes live here and nowhere else.
//!
//! # Layout
//!
//! - [`router`] / [`metrics_router`]: one axum router per listener, built from the listener's
//!   `resources` (client, federation, keys, metrics, health).
//! - [`middleware`]: request ids, client addresses, CORS, access log, HTTP metrics.
//! - [`completion`]: requests that may write run to completion on their own task.
//! - [`extract`]: extractors that fail with Matrix errors.
//! - [`error`]: service errors as `{"errcode", "error"}` responses.
//! - [`auth`]: the authenticated-request extractors (access token, guest, optional, admin).
//! - One module per spec area: [`client`], [`admin`] (Synapse's admin API), [`federation`],
//!   [`wellknown`], [`misc`], [`media`] (the content repository), `url_preview`
//!   (mounted only when previews are on), [`consent`] (the privacy policy pages).
//!
//! Handlers are thin: extract, call one service method, convert back. They take no locks and
//! never touch the store.

pub mod admin;
pub mod auth;
pub mod client;
pub mod completion;
pub mod consent;
pub mod error;
pub mod extract;
pub mod federation;
pub mod media;
pub mod middleware;
pub mod misc;
mod object;
mod url_preview;
pub mod wellknown;

use axum::Router;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, StatusCode};
use myelin_config::ListenerConfig;
use myelin_core::{ErrorKind, MatrixError};
use myelin_service::Services;

pub use extract::PeerAddr;

use crate::error::matrix_error_response;

/// The shared state of every handler.
pub type AppState = Services;

async fn unrecognized() -> Response {
    matrix_error_response(&MatrixError::unrecognized("Unrecognized request"))
}

async fn method_not_allowed() -> Response {
    matrix_error_response(
        &MatrixError::unrecognized("Unrecognized request method").with_kind(ErrorKind::MethodNotAllowed),
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    matrix_error_response(&MatrixError::unknown("Internal server error").with_kind(ErrorKind::Internal))
}

fn finish(
    routes: Router<AppState>,
    services: &Services,
    x_forwarded: bool,
    request_id_header: Option<HeaderName>,
) -> Router {
    let routes = routes
        .route_layer(axum::middleware::from_fn(completion::run_writes_to_completion))
        .route_layer(axum::middleware::from_fn(middleware::record_route))
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response));
    let context =
        middleware::LayerContext { x_forwarded, request_id_header, metrics: services.metrics.clone() };
    middleware::wrap(routes, context).with_state(services.clone())
}

/// The router of an `http` listener, serving the resources it names.
pub fn router(services: &Services, listener: &ListenerConfig) -> Router {
    let mut routes = Router::new().merge(misc::health_routes());
    if listener.has_resource("client") {
        routes = routes.merge(client::routes()).merge(wellknown::routes()).merge(admin::routes());
    }
    // As in Synapse, the content repository is served by a `client` or `media` resource.
    if (listener.has_resource("client") || listener.has_resource("media"))
        && services.config.media.enable_media_repo
    {
        routes = routes.merge(media::routes());
        if services.config.url_preview.enabled {
            routes = routes.merge(url_preview::routes());
        }
    }
    // Synapse serves the consent pages under a `consent` resource; a `client` one serves
    // them here too. Without `user_consent` they do not exist.
    if (listener.has_resource("client") || listener.has_resource("consent"))
        && services.config.consent.is_some()
    {
        routes = routes.merge(consent::routes());
    }
    if listener.has_resource("federation") {
        routes = routes.merge(federation::routes());
    }
    if listener.has_resource("federation") || listener.has_resource("keys") {
        routes = routes.merge(federation::key_routes());
    }
    if listener.has_resource("metrics") && services.config.metrics.enable_metrics {
        routes = routes.merge(misc::metrics_routes());
    }
    let request_id_header = listener.request_id_header.as_deref().and_then(|h| HeaderName::try_from(h).ok());
    finish(routes, services, listener.x_forwarded, request_id_header)
}

/// The router of a `metrics` listener.
pub fn metrics_router(services: &Services) -> Router {
    finish(misc::metrics_routes().merge(misc::health_routes()), services, false, None)
}

/// A plain-text response for non-Matrix endpoints.
pub(crate) fn text(status: StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}
