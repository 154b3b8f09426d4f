//! `/_matrix/consent` (Synapse's consent resource, mounted with a `client` or `consent`
//! resource when `user_consent` is configured): the privacy policy as an HTML page, and the
//! form that records a user's consent. Parameters come from the query string and, for `POST`,
//! the form body too (the query's value first, as Synapse reads them).

use std::collections::HashMap;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use myelin_service::consent::ConsentForm;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{FormFields, QueryParams};

fn form(mut query: HashMap<String, String>, mut body: HashMap<String, String>) -> ConsentForm {
    let mut take = |name: &str| query.remove(name).or_else(|| body.remove(name));
    ConsentForm { user: take("u"), hmac: take("h"), version: take("v") }
}

/// An HTML page, with the anti-framing headers Synapse sends with its HTML.
fn html(body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("frame-ancestors 'none';"));
    response
}

/// `GET /_matrix/consent?u=&h=&v=`.
async fn consent_page(
    State(services): State<AppState>,
    QueryParams(query): QueryParams<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    Ok(html(services.consent_page(form(query, HashMap::new())).await?))
}

/// `POST /_matrix/consent` with the form fields `u`, `h` and `v`.
async fn give_consent(
    State(services): State<AppState>,
    QueryParams(query): QueryParams<HashMap<String, String>>,
    FormFields(body): FormFields,
) -> Result<Response, ApiError> {
    Ok(html(services.give_consent(form(query, body)).await?))
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/_matrix/consent", get(consent_page).post(give_consent))
}
