//! Rate limits in Synapse's shapes: `rc_message`, `rc_registration`, `rc_login` (`address`,
//! `account`, `failed_attempts`), `rc_joins` (`local`, `remote`), `rc_invites` (`per_room`,
//! `per_user`, `per_issuer`), ... each `{per_second, burst_count}` with Synapse's defaults.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::invalid;
use crate::load::{ConfigError, Origins};

/// A leaky bucket: `burst_count` actions at once, refilling at `per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst_count: f64,
}

impl RateLimit {
    const fn new(per_second: f64, burst_count: f64) -> RateLimit {
        RateLimit { per_second, burst_count }
    }
}

/// Every rate limiter.
#[derive(Clone, Debug)]
pub struct RateLimitConfig {
    pub message: RateLimit,
    pub registration: RateLimit,
    pub registration_token_validity: RateLimit,
    pub login_address: RateLimit,
    pub login_account: RateLimit,
    pub login_failed_attempts: RateLimit,
    pub admin_redaction: Option<RateLimit>,
    pub joins_local: RateLimit,
    pub joins_remote: RateLimit,
    pub joins_per_room: RateLimit,
    pub invites_per_room: RateLimit,
    pub invites_per_user: RateLimit,
    pub invites_per_issuer: RateLimit,
    pub third_party_invite: RateLimit,
    pub three_pid_validation: RateLimit,
    pub media_create: RateLimit,
    pub presence_per_user: RateLimit,
    pub delayed_event_mgmt: RateLimit,
    pub room_creation: RateLimit,
    pub reports: RateLimit,
    pub user_directory: RateLimit,
    pub key_requests: RateLimit,
}

/// The top-level keys this section reads; everything else is left to other sections.
#[derive(Deserialize)]
pub(crate) struct RawRateLimits {
    rc_message: Option<Value>,
    rc_messages_per_second: Option<f64>,
    rc_message_burst_count: Option<f64>,
    rc_registration: Option<Value>,
    rc_registration_token_validity: Option<Value>,
    rc_login: Option<Value>,
    rc_admin_redaction: Option<Value>,
    rc_joins: Option<Value>,
    rc_joins_per_room: Option<Value>,
    rc_invites: Option<Value>,
    rc_third_party_invite: Option<Value>,
    rc_3pid_validation: Option<Value>,
    rc_media_create: Option<Value>,
    rc_presence: Option<Value>,
    rc_delayed_event_mgmt: Option<Value>,
    rc_room_creation: Option<Value>,
    rc_reports: Option<Value>,
    rc_user_directory: Option<Value>,
    rc_key_requests: Option<Value>,
    /// Accepted for compatibility; federation rate limiting is not configurable yet.
    #[allow(dead_code)]
    rc_federation: Option<Value>,
    #[allow(dead_code)]
    rc_profile: Option<Value>,
}

fn parse(
    origins: &Origins,
    key: &str,
    value: Option<&Value>,
    default: RateLimit,
) -> Result<RateLimit, ConfigError> {
    let Some(value) = value else { return Ok(default) };
    let object = match value {
        Value::Object(object) => object,
        Value::Null => return Ok(default),
        _ => return Err(invalid(origins, key, "expected a mapping with per_second and burst_count")),
    };
    let number = |field: &str, fallback: f64| -> Result<f64, ConfigError> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(fallback),
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|v| *v >= 0.0)
                .ok_or_else(|| invalid(origins, &format!("{key}.{field}"), "must be a non-negative number")),
            Some(_) => Err(invalid(origins, &format!("{key}.{field}"), "must be a number")),
        }
    };
    Ok(RateLimit {
        per_second: number("per_second", default.per_second)?,
        burst_count: number("burst_count", default.burst_count)?.floor(),
    })
}

fn nested<'a>(value: Option<&'a Value>, field: &str) -> Option<&'a Value> {
    value.and_then(Value::as_object).and_then(|object: &Map<String, Value>| object.get(field))
}

/// Synapse's fallback for limits without their own default.
const FALLBACK: RateLimit = RateLimit::new(0.17, 3.0);

impl RawRateLimits {
    pub(crate) fn into_config(self, origins: &Origins) -> Result<RateLimitConfig, ConfigError> {
        let message = match &self.rc_message {
            Some(value) => parse(origins, "rc_message", Some(value), RateLimit::new(0.2, 10.0))?,
            None => RateLimit::new(
                self.rc_messages_per_second.unwrap_or(0.2),
                self.rc_message_burst_count.unwrap_or(10.0),
            ),
        };
        let login = self.rc_login.as_ref();
        let joins = self.rc_joins.as_ref();
        let invites = self.rc_invites.as_ref();
        Ok(RateLimitConfig {
            message,
            registration: parse(origins, "rc_registration", self.rc_registration.as_ref(), FALLBACK)?,
            registration_token_validity: parse(
                origins,
                "rc_registration_token_validity",
                self.rc_registration_token_validity.as_ref(),
                RateLimit::new(0.1, 5.0),
            )?,
            login_address: parse(
                origins,
                "rc_login.address",
                nested(login, "address"),
                RateLimit::new(0.003, 5.0),
            )?,
            login_account: parse(
                origins,
                "rc_login.account",
                nested(login, "account"),
                RateLimit::new(0.003, 5.0),
            )?,
            login_failed_attempts: parse(
                origins,
                "rc_login.failed_attempts",
                nested(login, "failed_attempts"),
                FALLBACK,
            )?,
            admin_redaction: match &self.rc_admin_redaction {
                Some(value) => Some(parse(origins, "rc_admin_redaction", Some(value), FALLBACK)?),
                None => None,
            },
            joins_local: parse(origins, "rc_joins.local", nested(joins, "local"), RateLimit::new(0.1, 10.0))?,
            joins_remote: parse(
                origins,
                "rc_joins.remote",
                nested(joins, "remote"),
                RateLimit::new(0.01, 10.0),
            )?,
            joins_per_room: parse(
                origins,
                "rc_joins_per_room",
                self.rc_joins_per_room.as_ref(),
                RateLimit::new(1.0, 10.0),
            )?,
            invites_per_room: parse(
                origins,
                "rc_invites.per_room",
                nested(invites, "per_room"),
                RateLimit::new(0.3, 10.0),
            )?,
            invites_per_user: parse(
                origins,
                "rc_invites.per_user",
                nested(invites, "per_user"),
                RateLimit::new(0.003, 5.0),
            )?,
            invites_per_issuer: parse(
                origins,
                "rc_invites.per_issuer",
                nested(invites, "per_issuer"),
                RateLimit::new(0.3, 10.0),
            )?,
            third_party_invite: parse(
                origins,
                "rc_third_party_invite",
                self.rc_third_party_invite.as_ref(),
                RateLimit::new(0.0025, 5.0),
            )?,
            three_pid_validation: parse(
                origins,
                "rc_3pid_validation",
                self.rc_3pid_validation.as_ref(),
                RateLimit::new(0.003, 5.0),
            )?,
            media_create: parse(
                origins,
                "rc_media_create",
                self.rc_media_create.as_ref(),
                RateLimit::new(10.0, 50.0),
            )?,
            presence_per_user: parse(
                origins,
                "rc_presence.per_user",
                nested(self.rc_presence.as_ref(), "per_user"),
                RateLimit::new(0.1, 1.0),
            )?,
            delayed_event_mgmt: parse(
                origins,
                "rc_delayed_event_mgmt",
                self.rc_delayed_event_mgmt.as_ref(),
                RateLimit::new(1.0, 5.0),
            )?,
            room_creation: parse(
                origins,
                "rc_room_creation",
                self.rc_room_creation.as_ref(),
                RateLimit::new(0.016, 10.0),
            )?,
            reports: parse(origins, "rc_reports", self.rc_reports.as_ref(), RateLimit::new(1.0, 5.0))?,
            user_directory: parse(
                origins,
                "rc_user_directory",
                self.rc_user_directory.as_ref(),
                RateLimit::new(0.016, 200.0),
            )?,
            key_requests: parse(
                origins,
                "rc_key_requests",
                self.rc_key_requests.as_ref(),
                RateLimit::new(20.0, 100.0),
            )?,
        })
    }
}
