//! `bcrypt_rounds` and `password_config` (`enabled`, `localdb_enabled`, `pepper`, `policy`).

use serde::Deserialize;
use serde_json::Value;

use super::invalid;
use crate::load::{ConfigError, Origins};

#[derive(Deserialize)]
pub(crate) struct RawPassword {
    bcrypt_rounds: Option<u32>,
    #[serde(default)]
    password_config: RawPasswordConfig,
}

#[derive(Default, Deserialize)]
struct RawPasswordConfig {
    /// `true`, `false` or `"only_for_reauth"`.
    enabled: Option<Value>,
    localdb_enabled: Option<bool>,
    pepper: Option<String>,
    #[serde(default)]
    policy: PasswordPolicy,
}

/// `password_config.policy`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct PasswordPolicy {
    pub enabled: bool,
    pub minimum_length: usize,
    pub require_digit: bool,
    pub require_symbol: bool,
    pub require_lowercase: bool,
    pub require_uppercase: bool,
}

/// How passwords are hashed and which logins may use them.
#[derive(Clone, Debug)]
pub struct PasswordConfig {
    /// bcrypt cost (Synapse's default is 12).
    pub bcrypt_rounds: u32,
    /// Password login and password changes are allowed.
    pub enabled: bool,
    /// `enabled: only_for_reauth`: passwords only confirm identity in user-interactive auth.
    pub only_for_reauth: bool,
    /// Passwords are checked against the local database.
    pub localdb_enabled: bool,
    /// Appended to every password before hashing, as in Synapse.
    pub pepper: String,
    pub policy: PasswordPolicy,
}

impl RawPassword {
    pub(crate) fn into_config(self, origins: &Origins) -> Result<PasswordConfig, ConfigError> {
        let rounds = self.bcrypt_rounds.unwrap_or(12);
        if !(4..=31).contains(&rounds) {
            return Err(invalid(origins, "bcrypt_rounds", "must be between 4 and 31"));
        }
        let raw = self.password_config;
        let (enabled, only_for_reauth) = match raw.enabled {
            None | Some(Value::Bool(true)) => (true, false),
            Some(Value::Bool(false)) => (false, false),
            Some(Value::String(s)) if s == "only_for_reauth" => (true, true),
            Some(_) => {
                return Err(invalid(
                    origins,
                    "password_config.enabled",
                    "must be true, false or \"only_for_reauth\"",
                ));
            }
        };
        Ok(PasswordConfig {
            bcrypt_rounds: rounds,
            enabled,
            only_for_reauth,
            localdb_enabled: raw.localdb_enabled.unwrap_or(true),
            pepper: raw.pepper.unwrap_or_default(),
            policy: raw.policy,
        })
    }
}
