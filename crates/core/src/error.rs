//! The error vocabulary shared by every layer.
//!
//! A [`MatrixError`] is something a client can act on: it carries an [`ErrCode`] (the spec's
//! `errcode`), a human-readable message and optional extra fields. The HTTP status for each
//! code is decided by the `api` crate, the only one that knows about HTTP.

use serde_json::{Map, Value};

/// The `errcode` values Myelin emits, named as in the spec (and Synapse's `Codes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrCode {
    Forbidden,
    UnknownToken,
    MissingToken,
    BadJson,
    NotJson,
    NotFound,
    LimitExceeded,
    Unrecognized,
    Unknown,
    Unauthorized,
    UserDeactivated,
    UserInUse,
    InvalidUsername,
    RoomInUse,
    InvalidRoomState,
    ThreepidInUse,
    ThreepidNotFound,
    ThreepidAuthFailed,
    ThreepidDenied,
    ServerNotTrusted,
    UnsupportedRoomVersion,
    IncompatibleRoomVersion,
    BadState,
    GuestAccessForbidden,
    CaptchaNeeded,
    CaptchaInvalid,
    MissingParam,
    InvalidParam,
    TooLarge,
    Exclusive,
    ResourceLimitExceeded,
    CannotLeaveServerNoticeRoom,
    WeakPassword,
    UserLocked,
    UserSuspended,
    ConsentNotGiven,
    BadAlias,
    DuplicateAnnotation,
    NotYetUploaded,
    CannotOverwriteMedia,
    UnknownPos,
    WrongRoomKeysVersion,
    ProfileTooLarge,
    KeyTooLarge,
    InvalidSignature,
    /// An unknown `errcode` relayed from elsewhere (kept verbatim).
    Custom(&'static str),
}

impl ErrCode {
    /// The wire form, e.g. `"M_FORBIDDEN"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrCode::Forbidden => "M_FORBIDDEN",
            ErrCode::UnknownToken => "M_UNKNOWN_TOKEN",
            ErrCode::MissingToken => "M_MISSING_TOKEN",
            ErrCode::BadJson => "M_BAD_JSON",
            ErrCode::NotJson => "M_NOT_JSON",
            ErrCode::NotFound => "M_NOT_FOUND",
            ErrCode::LimitExceeded => "M_LIMIT_EXCEEDED",
            ErrCode::Unrecognized => "M_UNRECOGNIZED",
            ErrCode::Unknown => "M_UNKNOWN",
            ErrCode::Unauthorized => "M_UNAUTHORIZED",
            ErrCode::UserDeactivated => "M_USER_DEACTIVATED",
            ErrCode::UserInUse => "M_USER_IN_USE",
            ErrCode::InvalidUsername => "M_INVALID_USERNAME",
            ErrCode::RoomInUse => "M_ROOM_IN_USE",
            ErrCode::InvalidRoomState => "M_INVALID_ROOM_STATE",
            ErrCode::ThreepidInUse => "M_THREEPID_IN_USE",
            ErrCode::ThreepidNotFound => "M_THREEPID_NOT_FOUND",
            ErrCode::ThreepidAuthFailed => "M_THREEPID_AUTH_FAILED",
            ErrCode::ThreepidDenied => "M_THREEPID_DENIED",
            ErrCode::ServerNotTrusted => "M_SERVER_NOT_TRUSTED",
            ErrCode::UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
            ErrCode::IncompatibleRoomVersion => "M_INCOMPATIBLE_ROOM_VERSION",
            ErrCode::BadState => "M_BAD_STATE",
            ErrCode::GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
            ErrCode::CaptchaNeeded => "M_CAPTCHA_NEEDED",
            ErrCode::CaptchaInvalid => "M_CAPTCHA_INVALID",
            ErrCode::MissingParam => "M_MISSING_PARAM",
            ErrCode::InvalidParam => "M_INVALID_PARAM",
            ErrCode::TooLarge => "M_TOO_LARGE",
            ErrCode::Exclusive => "M_EXCLUSIVE",
            ErrCode::ResourceLimitExceeded => "M_RESOURCE_LIMIT_EXCEEDED",
            ErrCode::CannotLeaveServerNoticeRoom => "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM",
            ErrCode::WeakPassword => "M_WEAK_PASSWORD",
            ErrCode::UserLocked => "M_USER_LOCKED",
            ErrCode::UserSuspended => "M_USER_SUSPENDED",
            ErrCode::ConsentNotGiven => "M_CONSENT_NOT_GIVEN",
            ErrCode::BadAlias => "M_BAD_ALIAS",
            ErrCode::DuplicateAnnotation => "M_DUPLICATE_ANNOTATION",
            ErrCode::NotYetUploaded => "M_NOT_YET_UPLOADED",
            ErrCode::CannotOverwriteMedia => "M_CANNOT_OVERWRITE_MEDIA",
            ErrCode::UnknownPos => "M_UNKNOWN_POS",
            ErrCode::WrongRoomKeysVersion => "M_WRONG_ROOM_KEYS_VERSION",
            ErrCode::ProfileTooLarge => "M_PROFILE_TOO_LARGE",
            ErrCode::KeyTooLarge => "M_KEY_TOO_LARGE",
            ErrCode::InvalidSignature => "M_INVALID_SIGNATURE",
            ErrCode::Custom(code) => code,
        }
    }
}

impl std::fmt::Display for ErrCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The situations in which the spec (or Synapse) answers an error with another status than
/// its code's usual one. The `api` crate maps each to its HTTP status; this crate names the
/// situation only, so that it stays free of HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request would create something that already exists (e.g. a taken room alias).
    Conflict,
    /// The endpoint exists but refuses this method or this target (e.g. account data the server
    /// manages itself).
    MethodNotAllowed,
    /// The client did not send its request in time.
    Timeout,
    /// The server failed; the client is told nothing more.
    Internal,
    /// A server this one fetched from on the client's behalf failed or refused (e.g. the page of
    /// a URL preview).
    BadGateway,
    /// A server this one called on the client's behalf did not answer in time (an
    /// appservice ping).
    GatewayTimeout,
    /// Refused by the server's policy under a code other than `M_FORBIDDEN` (Synapse's
    /// `403 M_UNKNOWN` for a URL preview of a blocked address).
    Refused,
    /// Refused as a bad request under a code usually answered otherwise (Synapse's
    /// `400 M_RESOURCE_LIMIT_EXCEEDED` for a remote room too complex to join).
    BadRequest,
}

/// An error a Matrix client can understand: `{"errcode": ..., "error": ..., ...extra}`.
///
/// `kind`, when set, names a situation in which the spec asks for another status than the
/// code's usual one (see [`ErrorKind`]).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct MatrixError {
    pub code: ErrCode,
    pub message: String,
    pub extra: Map<String, Value>,
    pub kind: Option<ErrorKind>,
}

impl MatrixError {
    pub fn new(code: ErrCode, message: impl Into<String>) -> Self {
        MatrixError { code, message: message.into(), extra: Map::new(), kind: None }
    }

    /// Adds a field beside `errcode` and `error` (e.g. `retry_after_ms`, `soft_logout`).
    pub fn with_extra(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// Marks the situation that gives this error another status than its code's usual one.
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = Some(kind);
        self
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrCode::NotFound, message)
    }
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(ErrCode::BadJson, message)
    }
    pub fn not_json(message: impl Into<String>) -> Self {
        Self::new(ErrCode::NotJson, message)
    }
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(ErrCode::InvalidParam, message)
    }
    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::new(ErrCode::MissingParam, message)
    }
    pub fn unrecognized(message: impl Into<String>) -> Self {
        Self::new(ErrCode::Unrecognized, message)
    }
    pub fn unknown_token(message: impl Into<String>) -> Self {
        Self::new(ErrCode::UnknownToken, message)
    }
    pub fn missing_token() -> Self {
        Self::new(ErrCode::MissingToken, "Missing access token")
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrCode::TooLarge, message)
    }
    pub fn limit_exceeded(retry_after_ms: u64) -> Self {
        Self::new(ErrCode::LimitExceeded, "Too Many Requests").with_extra("retry_after_ms", retry_after_ms)
    }
    pub fn unknown(message: impl Into<String>) -> Self {
        Self::new(ErrCode::Unknown, message)
    }
}
