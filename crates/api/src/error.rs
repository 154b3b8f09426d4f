//! Errors as HTTP responses: `{"errcode": "M_...", "error": "..."}` with the spec's status.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use myelin_core::{ErrCode, ErrorKind, MatrixError};
use myelin_service::Error;
use myelin_service::error::Chain;
use myelin_service::uia::UiaChallenge;
use serde_json::{Map, Value, json};

/// What every handler returns on failure.
#[derive(Debug)]
pub struct ApiError(pub Error);

pub type ApiResult<T> = Result<T, ApiError>;

impl<E: Into<Error>> From<E> for ApiError {
    fn from(error: E) -> Self {
        ApiError(error.into())
    }
}

/// The default HTTP status of each code, as the spec and Synapse use them.
pub fn status_of(code: ErrCode) -> StatusCode {
    use ErrCode::*;
    match code {
        Forbidden
        | UserDeactivated
        | GuestAccessForbidden
        | ResourceLimitExceeded
        | CannotLeaveServerNoticeRoom
        | ConsentNotGiven
        | ServerNotTrusted
        | UserSuspended
        | ThreepidDenied
        | WrongRoomKeysVersion => StatusCode::FORBIDDEN,
        UnknownToken | MissingToken | Unauthorized | CaptchaNeeded | CaptchaInvalid | UserLocked => {
            StatusCode::UNAUTHORIZED
        }
        NotFound | Unrecognized | ThreepidNotFound => StatusCode::NOT_FOUND,
        LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
        TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        CannotOverwriteMedia => StatusCode::CONFLICT,
        NotYetUploaded => StatusCode::GATEWAY_TIMEOUT,
        BadJson
        | NotJson
        | UserInUse
        | InvalidUsername
        | RoomInUse
        | InvalidRoomState
        | ThreepidInUse
        | ThreepidAuthFailed
        | UnsupportedRoomVersion
        | IncompatibleRoomVersion
        | BadState
        | MissingParam
        | InvalidParam
        | Exclusive
        | WeakPassword
        | BadAlias
        | DuplicateAnnotation
        | UnknownPos
        | ProfileTooLarge
        | KeyTooLarge
        | InvalidSignature
        | Unknown
        | Custom(_) => StatusCode::BAD_REQUEST,
    }
}

/// The status of an error: its situation's, where the spec gives one, else its code's.
pub fn status_of_error(error: &MatrixError) -> StatusCode {
    match error.kind {
        Some(ErrorKind::Conflict) => StatusCode::CONFLICT,
        Some(ErrorKind::MethodNotAllowed) => StatusCode::METHOD_NOT_ALLOWED,
        Some(ErrorKind::Timeout) => StatusCode::REQUEST_TIMEOUT,
        Some(ErrorKind::Internal) => StatusCode::INTERNAL_SERVER_ERROR,
        Some(ErrorKind::BadGateway) => StatusCode::BAD_GATEWAY,
        Some(ErrorKind::GatewayTimeout) => StatusCode::GATEWAY_TIMEOUT,
        Some(ErrorKind::Refused) => StatusCode::FORBIDDEN,
        Some(ErrorKind::BadRequest) => StatusCode::BAD_REQUEST,
        None => status_of(error.code),
    }
}

/// The body of an error: `errcode`, `error` and the error's extra fields.
pub fn matrix_error_json(error: &MatrixError) -> Value {
    let mut body = Map::new();
    body.insert("errcode".to_owned(), Value::from(error.code.as_str()));
    body.insert("error".to_owned(), Value::from(error.message.clone()));
    for (key, value) in &error.extra {
        body.insert(key.clone(), value.clone());
    }
    Value::Object(body)
}

/// The 401 body of an incomplete user-interactive authentication: the flows, their
/// parameters, the session, the stages completed and, after a failed stage, its error.
fn uia_challenge_json(challenge: &UiaChallenge) -> Value {
    let mut body = json!({
        "flows": challenge.flows.iter().map(|stages| json!({"stages": stages})).collect::<Vec<_>>(),
        "params": challenge.params,
        "session": challenge.session,
        "completed": challenge.completed,
    });
    if let Some(error) = &challenge.error {
        body["errcode"] = json!(error.code.as_str());
        body["error"] = json!(error.message);
    }
    body
}

/// Renders a Matrix error, adding `Retry-After` to rate-limit errors.
pub fn matrix_error_response(error: &MatrixError) -> Response {
    let status = status_of_error(error);
    let mut response = (status, axum::Json(matrix_error_json(error))).into_response();
    if error.code == ErrCode::LimitExceeded
        && let Some(ms) = error.extra.get("retry_after_ms").and_then(serde_json::Value::as_u64)
        && let Ok(value) = HeaderValue::from_str(&ms.div_ceil(1000).to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.0 {
            Error::Matrix(error) => matrix_error_response(&error),
            Error::Uia(challenge) => {
                (StatusCode::UNAUTHORIZED, axum::Json(uia_challenge_json(&challenge))).into_response()
            }
            Error::Internal(source) => {
                // Logged once here, inside the request's span, with every cause; the client
                // sees no detail.
                tracing::error!(error = %Chain(&*source), "internal error");
                matrix_error_response(
                    &MatrixError::unknown("Internal server error").with_kind(ErrorKind::Internal),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_code_message_and_extra_fields() {
        let error = MatrixError::limit_exceeded(1500);
        assert_eq!(
            matrix_error_json(&error),
            json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": 1500})
        );
    }

    #[test]
    fn situations_override_the_status_of_the_code() {
        assert_eq!(status_of_error(&MatrixError::bad_json("x")), StatusCode::BAD_REQUEST);
        for (kind, status) in [
            (ErrorKind::Conflict, StatusCode::CONFLICT),
            (ErrorKind::MethodNotAllowed, StatusCode::METHOD_NOT_ALLOWED),
            (ErrorKind::Timeout, StatusCode::REQUEST_TIMEOUT),
            (ErrorKind::Internal, StatusCode::INTERNAL_SERVER_ERROR),
        ] {
            assert_eq!(status_of_error(&MatrixError::bad_json("x").with_kind(kind)), status);
        }
    }
}
