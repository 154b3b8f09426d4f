//! Request extractors that fail with Matrix errors: JSON bodies (`M_NOT_JSON` / `M_BAD_JSON` /
//! `M_TOO_LARGE`), query strings and path parameters (`M_INVALID_PARAM`), and the client address.
//!
//! NUL characters are refused here, in every string of a JSON body (keys and values, at any
//! depth), in path segments and in query values: PostgreSQL's text columns cannot hold them, so
//! refusing them at the edge keeps both engines alike and keeps them out of every table.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{FromRequest, FromRequestParts, Request};
use bytes::Bytes;
use http::request::Parts;
use myelin_core::MatrixError;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The largest request body accepted outside media uploads (Synapse's `MAX_REQUEST_SIZE`).
pub const MAX_JSON_BODY: usize = 200 * 65536;

/// The peer address of the connection, set by the listener (absent for UNIX sockets).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub Option<SocketAddr>);

/// The client's address: the peer, or the first `X-Forwarded-For` entry when the listener
/// sets `x_forwarded`. Inserted by the request middleware.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<ClientIp>().copied().unwrap_or(ClientIp(None)))
    }
}

/// Reads a whole body, refusing bodies over `limit` with `413 M_TOO_LARGE` as soon as they are
/// known to exceed it (from `Content-Length`, or once more than `limit` bytes have arrived), so
/// no more than `limit` bytes are ever buffered. A body that stalls past the listener's
/// `body_read_timeout` is `408 M_UNKNOWN`.
pub async fn read_body(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    let too_large =
        || ApiError::from(MatrixError::too_large(format!("Request content is too large (>{limit})")));
    if let Some(length) = request.headers().get(http::header::CONTENT_LENGTH)
        && let Some(length) = length.to_str().ok().and_then(|v| v.parse::<u64>().ok())
        && length > limit as u64
    {
        return Err(too_large());
    }
    match axum::body::to_bytes(request.into_body(), limit).await {
        Ok(bytes) => Ok(bytes),
        Err(error) if caused_by::<http_body_util::LengthLimitError>(&error) => Err(too_large()),
        // The listener's `body_read_timeout`: the client stopped sending its body.
        Err(error) if caused_by::<tower_http::timeout::TimeoutError>(&error) => {
            Err(MatrixError::unknown("Timed out reading the request body").with_status(408).into())
        }
        Err(_) => Err(MatrixError::bad_json("Could not read the request body").into()),
    }
}

/// Whether `error` or any error in its source chain is an `E`.
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<E>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// Parses a JSON object body as Synapse's `parse_json_object_from_request` does: anything but
/// JSON (an empty body included) is `M_NOT_JSON`; JSON of the wrong shape or with a NUL
/// character in a string is `M_BAD_JSON` (naming the field).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| MatrixError::not_json("Content not JSON."))?;
    if !value.is_object() {
        return Err(MatrixError::not_json("Content must be a JSON object.").into());
    }
    if let Some(path) = nul_path(&value) {
        return Err(MatrixError::bad_json(format!(
            "Invalid JSON at `{path}`: NUL characters are not allowed"
        ))
        .into());
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = if path == "." {
            format!("Invalid JSON: {inner}")
        } else {
            format!("Invalid JSON at `{path}`: {inner}")
        };
        MatrixError::bad_json(message).into()
    })
}

/// [`parse_json`], with an empty body read as `{}` (Synapse's `allow_empty_body=True`).
pub fn parse_json_or_empty<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_json(if bytes.is_empty() { b"{}" } else { bytes })
}

/// The path (`a.b[2]`) of the first string or key holding a NUL character, if any.
fn nul_path(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) => text.contains('\0').then(|| ".".to_owned()),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| nul_path(item).map(|rest| join_path(&format!("[{index}]"), &rest))),
        serde_json::Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                return Some(key.escape_debug().to_string());
            }
            nul_path(item).map(|rest| join_path(key, &rest))
        }),
        _ => None,
    }
}

fn join_path(head: &str, rest: &str) -> String {
    match rest {
        "." => head.to_owned(),
        rest if rest.starts_with('[') => format!("{head}{rest}"),
        rest => format!("{head}.{rest}"),
    }
}

/// A JSON object request body; an empty body is `400 M_NOT_JSON`, as in Synapse.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, MAX_JSON_BODY).await?;
        Ok(JsonBody(parse_json(&bytes)?))
    }
}

/// A JSON object request body where an empty body reads as `{}`: the endpoints Synapse
/// parses with `allow_empty_body=True` (joining and the other membership changes) or whose
/// missing body it treats as `{}` (deleting devices).
pub struct JsonBodyOrEmpty<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBodyOrEmpty<T> {
    type Rejection = ApiError;
    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, MAX_JSON_BODY).await?;
        Ok(JsonBodyOrEmpty(parse_json_or_empty(&bytes)?))
    }
}

/// `400 M_INVALID_PARAM` when a query value or path segment holds a NUL character.
fn refuse_nul(what: &str, text: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(MatrixError::invalid_param(format!("NUL characters are not allowed in {what}")).into());
    }
    Ok(())
}

/// Query-string parameters; malformed ones are `400 M_INVALID_PARAM`.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            refuse_nul(&format!("the query parameter `{}`", name.escape_debug()), &value)?;
            refuse_nul("query parameter names", &name)?;
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(QueryParams(value)),
            Err(rejection) => Err(MatrixError::invalid_param(rejection.body_text()).into()),
        }
    }
}

/// Path parameters; malformed ones are `400 M_INVALID_PARAM`.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Ok(raw) = axum::extract::RawPathParams::from_request_parts(parts, state).await {
            for (name, value) in &raw {
                refuse_nul(&format!("the path parameter `{name}`"), value)?;
            }
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(PathParams(value)),
            Err(rejection) => Err(MatrixError::invalid_param(rejection.body_text()).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use myelin_core::ErrCode;
    use myelin_service::Error;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: u32,
    }

    fn code_of(result: Result<Body, ApiError>) -> ErrCode {
        match result {
            Err(ApiError(Error::Matrix(error))) => error.code,
            other => panic!("expected a Matrix error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_json_is_not_json() {
        assert_eq!(code_of(parse_json(b"{not json")), ErrCode::NotJson);
        assert_eq!(code_of(parse_json(b"[1, 2]")), ErrCode::NotJson);
    }

    #[test]
    fn wrong_shape_is_bad_json() {
        assert_eq!(code_of(parse_json(br#"{"name": 3, "count": 1}"#)), ErrCode::BadJson);
        assert_eq!(code_of(parse_json(br#"{"name": "x"}"#)), ErrCode::BadJson);
    }

    #[test]
    fn empty_body_is_not_json_unless_allowed() {
        assert_eq!(code_of(parse_json(b"")), ErrCode::NotJson);
        assert_eq!(code_of(parse_json(b"  ")), ErrCode::NotJson);
        assert_eq!(code_of(parse_json_or_empty(b"")), ErrCode::BadJson, "{{}} lacks the required fields");
        let empty: serde_json::Map<String, serde_json::Value> = parse_json_or_empty(b"").unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn nul_anywhere_is_bad_json() {
        for body in [
            r#"{"name": "a\u0000b", "count": 1}"#,
            r#"{"name": "x", "count": 1, "deep": {"list": [1, "\u0000"]}}"#,
            r#"{"name": "x", "count": 1, "k\u0000ey": true}"#,
        ] {
            assert_eq!(code_of(parse_json(body.as_bytes())), ErrCode::BadJson, "{body}");
        }
        let value: serde_json::Value = serde_json::from_str(r#"{"a": {"b": [0, {"c": "\u0000"}]}}"#).unwrap();
        assert_eq!(nul_path(&value).as_deref(), Some("a.b[1].c"));
    }

    #[test]
    fn good_json_parses() {
        let body: Body = parse_json(br#"{"name": "x", "count": 2, "extra": true}"#).unwrap();
        assert_eq!(body.count, 2);
    }
}
