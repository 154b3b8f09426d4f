//! Server-to-server request authentication: the `X-Matrix` authorization header.
//!
//! As in Synapse (`synapse/federation/transport/server/_base.py`): no header is
//! `401 M_UNAUTHORIZED`, a malformed one `400 M_UNAUTHORIZED`; a destination other than this
//! server, an origin key that cannot be found and a signature that does not verify are
//! `401 M_UNAUTHORIZED`. The signature covers the method, the path and query as sent, the
//! origin, the destination and the JSON body.

use axum::extract::{FromRequest, OriginalUri, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use myelin_core::{ErrCode, MatrixError};
use ruma::OwnedServerName;

use crate::AppState;
use crate::error::{ApiError, matrix_error_json};
use crate::extract::{MAX_JSON_BODY, read_body};

/// A request signed by another homeserver: its verified origin and the body it signed.
pub struct ServerAuth {
    pub origin: OwnedServerName,
    pub body: Bytes,
}

fn unauthorized(status: StatusCode, message: &str) -> Response {
    let error = MatrixError::new(ErrCode::Unauthorized, message);
    (status, axum::Json(matrix_error_json(&error))).into_response()
}

impl FromRequest<AppState> for ServerAuth {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let method = request.method().as_str().to_owned();
        let uri = request.extensions().get::<OriginalUri>().map(|o| &o.0).unwrap_or(request.uri());
        let uri = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
        let headers: Vec<String> = request
            .headers()
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        let Some(header) = headers.iter().find(|h| h.trim_start().starts_with("X-Matrix")) else {
            return Err(unauthorized(StatusCode::UNAUTHORIZED, "Missing Authorization headers"));
        };
        let authorization = parse_x_matrix(header)
            .map_err(|_| unauthorized(StatusCode::BAD_REQUEST, "Malformed Authorization header"))?;
        let body = read_body(request, MAX_JSON_BODY).await.map_err(IntoResponse::into_response)?;
        let origin = state
            .authenticate_server_request(&authorization, &method, &uri, &body)
            .await
            .map_err(|e| ApiError(e).into_response())?;
        Ok(ServerAuth { origin, body })
    }
}

/// Parses an `X-Matrix` header value.
fn parse_x_matrix(value: &str) -> Result<ruma::api::federation::authentication::XMatrix, String> {
    ruma::api::federation::authentication::XMatrix::parse(value).map_err(|e| e.to_string())
}
