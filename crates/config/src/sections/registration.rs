//! Registration, sessions and profiles: `enable_registration`, `registration_requires_token`,
//! `allow_guest_access`, `auto_join_rooms`, token lifetimes, `ui_auth`,
//! `login_via_existing_session`, `delete_stale_devices_after`, `enable_set_displayname`, ...

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::invalid;
use crate::load::{ConfigError, Origins};
use crate::units::{ByteSize, DurationMs};

/// A boolean Synapse reads with `strtobool(str(value))`: `true`, `"yes"`, `"1"`, `"off"`...
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LooseBool(pub bool);

impl<'de> Deserialize<'de> for LooseBool {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        match &value {
            Value::Bool(b) => Ok(LooseBool(*b)),
            Value::Number(n) if n.as_i64() == Some(1) => Ok(LooseBool(true)),
            Value::Number(n) if n.as_i64() == Some(0) => Ok(LooseBool(false)),
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "y" | "yes" | "t" | "true" | "on" | "1" => Ok(LooseBool(true)),
                "n" | "no" | "f" | "false" | "off" | "0" => Ok(LooseBool(false)),
                _ => Err(serde::de::Error::custom(format!("expected a boolean, got {s:?}"))),
            },
            other => Err(serde::de::Error::custom(format!("expected a boolean, got {other}"))),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct RawRegistration {
    #[serde(default)]
    enable_registration: LooseBool,
    #[serde(default)]
    enable_registration_without_verification: LooseBool,
    #[serde(default)]
    registration_requires_token: bool,
    #[serde(default)]
    registrations_require_3pid: Option<Value>,
    #[serde(default)]
    allow_guest_access: bool,
    #[serde(default)]
    inhibit_user_in_use_error: bool,
    #[serde(default)]
    allow_underscore_prefixed_localpart: bool,
    #[serde(default)]
    auto_join_rooms: Vec<String>,
    autocreate_auto_join_rooms: Option<bool>,
    #[serde(default)]
    autocreate_auto_join_rooms_federated: Option<bool>,
    autocreate_auto_join_room_preset: Option<String>,
    auto_join_mxid_localpart: Option<String>,
    auto_join_rooms_for_guests: Option<bool>,
    enable_set_displayname: Option<bool>,
    enable_set_avatar_url: Option<bool>,
    enable_3pid_changes: Option<bool>,
    session_lifetime: Option<DurationMs>,
    refreshable_access_token_lifetime: Option<Option<DurationMs>>,
    nonrefreshable_access_token_lifetime: Option<DurationMs>,
    refresh_token_lifetime: Option<DurationMs>,
    #[serde(default)]
    ui_auth: RawUiAuth,
    #[serde(default)]
    login_via_existing_session: RawLoginViaExisting,
    delete_stale_devices_after: Option<DurationMs>,
    #[serde(default)]
    require_auth_for_profile_requests: bool,
    #[serde(default)]
    limit_profile_requests_to_users_who_share_rooms: bool,
    include_profile_data_on_invite: Option<bool>,
    max_avatar_size: Option<ByteSize>,
    allowed_avatar_mimetypes: Option<Vec<String>>,
    default_identity_server: Option<String>,
}

#[derive(Default, Deserialize)]
struct RawUiAuth {
    session_timeout: Option<DurationMs>,
}

#[derive(Default, Deserialize)]
struct RawLoginViaExisting {
    #[serde(default)]
    enabled: bool,
    require_ui_auth: Option<bool>,
    token_timeout: Option<DurationMs>,
}

/// Who may register and how sessions behave.
#[derive(Clone, Debug)]
pub struct RegistrationConfig {
    pub enable_registration: bool,
    pub enable_registration_without_verification: bool,
    pub registration_requires_token: bool,
    pub allow_guest_access: bool,
    pub inhibit_user_in_use_error: bool,
    pub allow_underscore_prefixed_localpart: bool,
    pub auto_join_rooms: Vec<String>,
    pub autocreate_auto_join_rooms: bool,
    pub autocreate_auto_join_rooms_federated: bool,
    pub autocreate_auto_join_room_preset: Option<String>,
    pub auto_join_mxid_localpart: Option<String>,
    pub auto_join_rooms_for_guests: bool,
    pub enable_set_displayname: bool,
    pub enable_set_avatar_url: bool,
    pub enable_3pid_changes: bool,
    /// How long any login session (access and refresh tokens) may last at most.
    pub session_lifetime: Option<DurationMs>,
    /// Lifetime of access tokens issued with a refresh token (Synapse's default: 5 minutes).
    pub refreshable_access_token_lifetime: Option<DurationMs>,
    /// Lifetime of access tokens issued without a refresh token (default: unlimited).
    pub nonrefreshable_access_token_lifetime: Option<DurationMs>,
    /// Lifetime of refresh tokens (default: unlimited).
    pub refresh_token_lifetime: Option<DurationMs>,
    /// Within this time of a successful user-interactive auth, another is not asked for.
    pub ui_auth_session_timeout: DurationMs,
    pub login_via_existing_session_enabled: bool,
    pub login_via_existing_session_require_ui_auth: bool,
    pub login_via_existing_session_token_timeout: DurationMs,
    pub delete_stale_devices_after: Option<DurationMs>,
    pub default_identity_server: Option<String>,
}

/// Profile lookups and changes.
#[derive(Clone, Debug)]
pub struct ProfileConfig {
    pub require_auth_for_profile_requests: bool,
    pub limit_profile_requests_to_users_who_share_rooms: bool,
    pub include_profile_data_on_invite: bool,
    pub max_avatar_size: Option<ByteSize>,
    pub allowed_avatar_mimetypes: Option<Vec<String>>,
}

/// The media `registrations_require_3pid` asks for, read as Synapse reads it: Synapse asks
/// `"email" in value`, so a list names media and a string is searched for their names
/// (`registrations_require_3pid: email` requires an email address).
fn required_3pid_media(
    origins: &Origins,
    value: Option<Value>,
    warnings: &mut Vec<String>,
) -> Result<Vec<&'static str>, ConfigError> {
    const MEDIA: [&str; 2] = ["email", "msisdn"];
    let key = "registrations_require_3pid";
    let media = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut media = Vec::new();
            for (index, item) in items.iter().enumerate() {
                let Some(name) = item.as_str() else {
                    return Err(invalid(origins, &format!("{key}[{index}]"), "must be a string"));
                };
                match MEDIA.iter().find(|medium| **medium == name) {
                    Some(medium) => media.push(*medium),
                    None => warnings.push(format!(
                        "{}: `{key}` lists {name:?}, which is neither email nor msisdn; ignored",
                        origins.file_of(key)
                    )),
                }
            }
            media
        }
        Some(Value::String(text)) => {
            let media: Vec<&str> = MEDIA.into_iter().filter(|medium| text.contains(medium)).collect();
            warnings.push(format!(
                "{}: `{key}` is the string {text:?}, not a list; read as Synapse reads it: [{}]",
                origins.file_of(key),
                media.join(", ")
            ));
            media
        }
        Some(_) => return Err(invalid(origins, key, "must be a list such as [email]")),
    };
    Ok(media)
}

impl RawRegistration {
    pub(crate) fn into_config(
        self,
        origins: &Origins,
        warnings: &mut Vec<String>,
    ) -> Result<(RegistrationConfig, ProfileConfig), ConfigError> {
        let mut enable_registration = self.enable_registration.0;
        let required_3pid = required_3pid_media(origins, self.registrations_require_3pid, warnings)?;
        let without_verification = self.enable_registration_without_verification.0;
        if enable_registration
            && !without_verification
            && !self.registration_requires_token
            && required_3pid.is_empty()
        {
            return Err(invalid(
                origins,
                "enable_registration",
                "open registration without any verification is a known vector for spam and abuse; \
                 require a registration token (`registration_requires_token: true`) or set \
                 `enable_registration_without_verification: true`",
            ));
        }
        if !required_3pid.is_empty() {
            // Every registration would need a verified address, which Myelin cannot check yet:
            // nobody can complete one, so registration is closed rather than left unverified.
            let file = origins.file_of("registrations_require_3pid");
            let media = required_3pid.join(" and ");
            if enable_registration {
                enable_registration = false;
                warnings.push(format!(
                    "{file}: `registrations_require_3pid` requires {media} verification, which \
                     Myelin does not support yet: REGISTRATION IS CLOSED (`myelin register-user` \
                     and the admin API still create accounts)"
                ));
            } else {
                warnings.push(format!(
                    "{file}: `registrations_require_3pid` ({media}) is not supported by Myelin yet; \
                     registration is disabled anyway"
                ));
            }
        }
        let refreshable = match self.refreshable_access_token_lifetime {
            None => Some(DurationMs(5 * 60 * 1000)),
            Some(value) => value,
        };
        if let Some(session) = self.session_lifetime {
            for (key, value) in [
                ("refreshable_access_token_lifetime", refreshable),
                ("nonrefreshable_access_token_lifetime", self.nonrefreshable_access_token_lifetime),
                ("refresh_token_lifetime", self.refresh_token_lifetime),
            ] {
                if value.is_some_and(|v| v > session) {
                    return Err(invalid(origins, key, "exceeds `session_lifetime`"));
                }
            }
        }
        let registration = RegistrationConfig {
            enable_registration,
            enable_registration_without_verification: without_verification,
            registration_requires_token: self.registration_requires_token,
            allow_guest_access: self.allow_guest_access,
            inhibit_user_in_use_error: self.inhibit_user_in_use_error,
            allow_underscore_prefixed_localpart: self.allow_underscore_prefixed_localpart,
            auto_join_rooms: self.auto_join_rooms,
            autocreate_auto_join_rooms: self.autocreate_auto_join_rooms.unwrap_or(true),
            autocreate_auto_join_rooms_federated: self.autocreate_auto_join_rooms_federated.unwrap_or(true),
            autocreate_auto_join_room_preset: self.autocreate_auto_join_room_preset,
            auto_join_mxid_localpart: self.auto_join_mxid_localpart,
            auto_join_rooms_for_guests: self.auto_join_rooms_for_guests.unwrap_or(true),
            enable_set_displayname: self.enable_set_displayname.unwrap_or(true),
            enable_set_avatar_url: self.enable_set_avatar_url.unwrap_or(true),
            enable_3pid_changes: self.enable_3pid_changes.unwrap_or(true),
            session_lifetime: self.session_lifetime,
            refreshable_access_token_lifetime: refreshable,
            nonrefreshable_access_token_lifetime: self.nonrefreshable_access_token_lifetime,
            refresh_token_lifetime: self.refresh_token_lifetime,
            ui_auth_session_timeout: self.ui_auth.session_timeout.unwrap_or(DurationMs(0)),
            login_via_existing_session_enabled: self.login_via_existing_session.enabled,
            login_via_existing_session_require_ui_auth: self
                .login_via_existing_session
                .require_ui_auth
                .unwrap_or(true),
            login_via_existing_session_token_timeout: self
                .login_via_existing_session
                .token_timeout
                .unwrap_or(DurationMs(5 * 60 * 1000)),
            delete_stale_devices_after: self.delete_stale_devices_after,
            default_identity_server: self.default_identity_server,
        };
        let profile = ProfileConfig {
            require_auth_for_profile_requests: self.require_auth_for_profile_requests,
            limit_profile_requests_to_users_who_share_rooms: self
                .limit_profile_requests_to_users_who_share_rooms,
            include_profile_data_on_invite: self.include_profile_data_on_invite.unwrap_or(true),
            max_avatar_size: self.max_avatar_size,
            allowed_avatar_mimetypes: self.allowed_avatar_mimetypes,
        };
        Ok((registration, profile))
    }
}
