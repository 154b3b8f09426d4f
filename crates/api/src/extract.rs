//! Request extractors that fail with Matrix errors: JSON bodies (`M_NOT_JSON` / `M_BAD_JSON` /
//! `M_TOO_LARGE`), query strings and path parameters (`M_INVALID_PARAM`), the identifiers in
//! them (`M_INVALID_PARAM`), and the client address.
//!
//! NUL characters are refused here, in every string of a JSON body (keys and values, at any
//! depth), in path segments and in query values: PostgreSQL's text columns cannot hold them, so
//! refusing them at the edge keeps both engines alike and keeps them out of every table.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{FromRequest, FromRequestParts, Request};
use bytes::Bytes;
use http::request::Parts;
use myelin_core::MatrixError;
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
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
            Err(MatrixError::unknown("Timed out reading the request body")
                .with_kind(myelin_core::ErrorKind::Timeout)
                .into())
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

/// The fields of an `application/x-www-form-urlencoded` body (an HTML form), the first value
/// of each name; NUL characters are `400 M_INVALID_PARAM` as in query strings.
pub struct FormFields(pub std::collections::HashMap<String, String>);

impl<S: Send + Sync> FromRequest<S> for FormFields {
    type Rejection = ApiError;
    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, MAX_JSON_BODY).await?;
        let mut fields = std::collections::HashMap::new();
        for (name, value) in url::form_urlencoded::parse(&bytes) {
            refuse_nul(&format!("the form field `{}`", name.escape_debug()), &value)?;
            refuse_nul("form field names", &name)?;
            fields.entry(name.into_owned()).or_insert_with(|| value.into_owned());
        }
        Ok(FormFields(fields))
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

/// A room ID from a path or query parameter.
pub fn parse_room_id(room_id: &str) -> Result<OwnedRoomId, MatrixError> {
    RoomId::parse(room_id).map_err(|_| MatrixError::invalid_param(format!("Invalid room ID {room_id:?}")))
}

/// An event ID from a path or query parameter.
pub fn parse_event_id(event_id: &str) -> Result<OwnedEventId, MatrixError> {
    // ruma leaves the length of `$`-only event IDs (room versions 3+) unchecked.
    if event_id.len() > 255 {
        return Err(MatrixError::invalid_param("Event ID is longer than 255 bytes"));
    }
    EventId::parse(event_id).map_err(|_| MatrixError::invalid_param(format!("Invalid event ID {event_id:?}")))
}

/// A user ID from a path or query parameter.
pub fn parse_user_id(user_id: &str) -> Result<OwnedUserId, MatrixError> {
    UserId::parse(user_id).map_err(|_| MatrixError::invalid_param(format!("Invalid user ID {user_id:?}")))
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

/// Properties of the request parsers on arbitrary input (`PROPTEST_CASES` cases, 256 by
/// default): a value or a Matrix error, never a panic or an internal error.
#[cfg(test)]
mod prop_tests {
    use axum::Router;
    use axum::body::Body as HttpBody;
    use axum::routing::get;
    use myelin_core::ErrCode;
    use myelin_service::Error;
    use proptest::prelude::*;
    use proptest::test_runner::Config;
    use serde::{Deserialize, Serialize};
    use serde_json::{Map, Value};
    use tower::ServiceExt as _;

    use super::*;

    fn config() -> Config {
        Config { failure_persistence: None, ..Config::default() }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
    }

    /// `None` for a value, the errcode for a Matrix error; anything else fails the test.
    fn code_of<T: std::fmt::Debug>(result: &Result<T, ApiError>) -> Option<ErrCode> {
        match result {
            Ok(_) => None,
            Err(ApiError(Error::Matrix(error))) => Some(error.code),
            Err(other) => panic!("not a Matrix error: {other:?}"),
        }
    }

    /// A body of the kind handlers take: required, optional and nested fields.
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: u32,
        tags: Option<Vec<String>>,
        nested: Option<Nested>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Nested {
        flag: bool,
        level: i64,
    }

    /// JSON without floats (whose text form need not read back bit for bit).
    fn json_value() -> impl Strategy<Value = Value> {
        let scalar = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        scalar.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        prop::sample::select(vec!["name", "count", "tags", "nested", "flag", "level"])
                            .prop_map(str::to_owned),
                        any::<String>(),
                    ],
                    inner,
                    0..5,
                )
                .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// Request bodies: any bytes, JSON text of any value, or JSON text with a byte changed.
    fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            any::<Vec<u8>>(),
            json_value().prop_map(|value| value.to_string().into_bytes()),
            (json_value(), any::<usize>(), any::<u8>()).prop_map(|(value, at, byte)| {
                let mut bytes = value.to_string().into_bytes();
                let len = bytes.len();
                bytes[at % len] = byte;
                bytes
            }),
            (1usize..300).prop_map(
                |depth| format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
            ),
        ]
    }

    fn percent_encode(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (*byte as char).to_string()
                }
                _ => format!("%{byte:02X}"),
            })
            .collect()
    }

    /// Query parameters of the kind handlers take.
    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Query {
        from: Option<String>,
        limit: Option<u64>,
        full_state: Option<bool>,
        timeout: Option<i64>,
    }

    fn query_string() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            prop::sample::select(vec!["from", "limit", "full_state", "timeout", "other"])
                .prop_map(str::to_owned),
            "[ -~]{0,6}",
        ];
        let value = prop_oneof![
            any::<Vec<u8>>().prop_map(|bytes| percent_encode(&bytes)),
            any::<i128>().prop_map(|n| n.to_string()),
            "(true|false|True|1|0|)",
            "[!-~]{0,12}".prop_map(|s| s.replace(['#', '&', '='], "")),
        ];
        prop::collection::vec((key, value), 0..6).prop_map(|pairs| {
            pairs
                .iter()
                .map(|(key, value)| format!("{}={value}", percent_encode(key.as_bytes())))
                .collect::<Vec<_>>()
                .join("&")
        })
    }

    async fn path_response(uri: &str) -> (http::StatusCode, Value) {
        async fn echo(PathParams((text, number)): PathParams<(String, u64)>) -> axum::Json<Value> {
            axum::Json(serde_json::json!({"text": text, "number": number}))
        }
        let router: Router = Router::new().route("/p/{text}/{number}", get(echo));
        let request = http::Request::builder().uri(uri).body(HttpBody::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    proptest! {
        #![proptest_config(config())]

        /// Any body is a value, `M_NOT_JSON` (not a JSON object, an empty body included) or
        /// `M_BAD_JSON` (an object of the wrong shape, or with a NUL character), exactly as
        /// serde_json reads it.
        #[test]
        fn prop_json_body_parse_never_panics(bytes in body_bytes()) {
            let typed = parse_json::<Body>(&bytes);
            let untyped = parse_json::<Map<String, Value>>(&bytes);
            match serde_json::from_slice::<Value>(&bytes).ok().filter(Value::is_object) {
                Some(value) => {
                    prop_assert!(matches!(code_of(&typed), None | Some(ErrCode::BadJson)), "{typed:?}");
                    if nul_path(&value).is_some() {
                        prop_assert_eq!(code_of(&untyped), Some(ErrCode::BadJson));
                    } else {
                        prop_assert!(untyped.is_ok(), "{untyped:?}");
                    }
                }
                None => {
                    prop_assert_eq!(code_of(&typed), Some(ErrCode::NotJson));
                    prop_assert_eq!(code_of(&untyped), Some(ErrCode::NotJson));
                }
            }
        }

        /// A JSON object reads back as itself (or is `M_BAD_JSON` if it holds a NUL character).
        #[test]
        fn prop_json_body_objects_round_trip(map in prop::collection::btree_map(any::<String>(), json_value(), 0..6)) {
            let map: Map<String, Value> = map.into_iter().collect();
            let parsed = parse_json::<Map<String, Value>>(&serde_json::to_vec(&map).unwrap());
            if nul_path(&Value::Object(map.clone())).is_some() {
                prop_assert_eq!(code_of(&parsed), Some(ErrCode::BadJson));
            } else {
                prop_assert_eq!(parsed.unwrap(), map);
            }
        }

        /// Any query string is a value or `400 M_INVALID_PARAM`; encoded parameters read back.
        #[test]
        fn prop_query_params_never_panic(
            query in query_string(),
            expected in (any::<Option<String>>(), any::<Option<u64>>(), any::<Option<bool>>(), any::<Option<i64>>()),
        ) {
            // `None` for a query no HTTP request can carry (hyper refuses those).
            let parse = |query: &str| {
                let request = http::Request::builder().uri(format!("/q?{query}")).body(()).ok()?;
                let (mut parts, _) = request.into_parts();
                Some(block_on(QueryParams::<Query>::from_request_parts(&mut parts, &())).map(|QueryParams(query)| query))
            };
            if let Some(parsed) = parse(&query) {
                prop_assert!(matches!(code_of(&parsed), None | Some(ErrCode::InvalidParam)), "{query}: {parsed:?}");
            }

            let (from, limit, full_state, timeout) = expected;
            let expected = Query { from, limit, full_state, timeout };
            let encoded = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(
                    [
                        expected.from.clone().map(|v| ("from", v)),
                        expected.limit.map(|v| ("limit", v.to_string())),
                        expected.full_state.map(|v| ("full_state", v.to_string())),
                        expected.timeout.map(|v| ("timeout", v.to_string())),
                    ]
                    .into_iter()
                    .flatten(),
                )
                .finish();
            let parsed = parse(&encoded).unwrap();
            if expected.from.as_deref().is_some_and(|from| from.contains('\0')) {
                // NUL characters are refused in query values (see the module doc).
                prop_assert_eq!(code_of(&parsed), Some(ErrCode::InvalidParam));
            } else {
                prop_assert_eq!(parsed.unwrap(), expected);
            }
        }

        /// Any path segment is a value or `400 M_INVALID_PARAM`; encoded segments read back
        /// (unless they hold a NUL character), and a number out of range is refused, not wrapped.
        #[test]
        fn prop_path_params_never_panic(
            text in any::<Vec<u8>>(),
            number in prop_oneof![
                any::<u64>().prop_map(|n| n.to_string().into_bytes()),
                any::<i128>().prop_map(|n| n.to_string().into_bytes()),
                any::<Vec<u8>>(),
            ],
        ) {
            let uri = format!("/p/{}/{}", percent_encode(&text), percent_encode(&number));
            let (status, body) = block_on(path_response(&uri));
            if text.is_empty() || number.is_empty() {
                // An empty segment matches no route (the router's fallback answers those).
                return Ok(());
            }
            let number = std::str::from_utf8(&number).ok().and_then(|n| n.parse::<u64>().ok());
            // NUL characters are refused in paths (see the module doc).
            let text = std::str::from_utf8(&text).ok().filter(|text| !text.contains('\0'));
            if let (Some(text), Some(number)) = (text, number) {
                prop_assert_eq!(status, http::StatusCode::OK);
                prop_assert_eq!(&body["text"], &Value::from(text));
                prop_assert_eq!(&body["number"], &Value::from(number));
            } else {
                prop_assert_eq!(status, http::StatusCode::BAD_REQUEST, "{}: {}", uri, body);
                prop_assert_eq!(&body["errcode"], "M_INVALID_PARAM");
                prop_assert!(body["error"].is_string());
            }
        }

        /// The identifier parsers take exactly what ruma takes, unchanged, and refuse the rest
        /// with `M_INVALID_PARAM`.
        #[test]
        fn prop_id_parsers_never_panic(
            text in prop_oneof![
                any::<String>(),
                "[!$@#][ -~]{0,20}(:[a-z0-9.:\\[\\]-]{0,20})?",
                "@[a-z0-9._=/-]{1,20}:[a-z0-9.-]{1,20}(:[0-9]{1,6})?",
            ],
        ) {
            let check = |result: Result<String, MatrixError>, valid: bool| -> Result<(), TestCaseError> {
                match result {
                    Ok(parsed) => {
                        prop_assert!(valid);
                        prop_assert_eq!(parsed, text.clone());
                    }
                    Err(error) => {
                        prop_assert!(!valid);
                        prop_assert_eq!(error.code, ErrCode::InvalidParam);
                    }
                }
                Ok(())
            };
            check(parse_room_id(&text).map(|id| id.to_string()), RoomId::parse(&text).is_ok())?;
            check(parse_event_id(&text).map(|id| id.to_string()), EventId::parse(&text).is_ok())?;
            check(parse_user_id(&text).map(|id| id.to_string()), UserId::parse(&text).is_ok())?;
        }

        /// Identifiers of the spec's grammar are accepted as they are.
        #[test]
        fn prop_id_parsers_accept_the_grammar(
            localpart in "[a-z0-9._=/-]{1,20}",
            opaque in "[A-Za-z0-9._~-]{1,20}",
            host in "[a-z0-9]([a-z0-9.-]{0,18}[a-z0-9])?(:[1-9][0-9]{0,3})?",
        ) {
            let user_id = format!("@{localpart}:{host}");
            prop_assert_eq!(parse_user_id(&user_id).unwrap().to_string(), user_id);
            let room_id = format!("!{opaque}:{host}");
            prop_assert_eq!(parse_room_id(&room_id).unwrap().to_string(), room_id);
            let event_id = format!("${opaque}");
            prop_assert_eq!(parse_event_id(&event_id).unwrap().to_string(), event_id);
        }
    }
}
