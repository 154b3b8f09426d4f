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
    policy: RawPolicy,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawPolicy {
    /// Synapse tests it for truth, so any value is accepted.
    enabled: Option<Value>,
    minimum_length: usize,
    require_digit: bool,
    require_symbol: bool,
    require_lowercase: bool,
    require_uppercase: bool,
}

/// `password_config.policy`.
#[derive(Clone, Debug, Default)]
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

/// Python's truth value of a YAML value, which is how Synapse reads these switches.
fn python_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

impl RawPassword {
    pub(crate) fn into_config(
        self,
        origins: &Origins,
        warnings: &mut Vec<String>,
    ) -> Result<PasswordConfig, ConfigError> {
        let rounds = self.bcrypt_rounds.unwrap_or(12);
        if !(4..=31).contains(&rounds) {
            return Err(invalid(origins, "bcrypt_rounds", "must be between 4 and 31"));
        }
        let raw = self.password_config;
        let (enabled, only_for_reauth) = match raw.enabled {
            None => (true, false),
            Some(Value::Bool(enabled)) => (enabled, false),
            Some(Value::String(s)) if s == "only_for_reauth" => (true, true),
            Some(other) => {
                // Synapse tests the value for truth; so does Myelin, but says so.
                let enabled = python_truthy(&other);
                warnings.push(format!(
                    "{}: `password_config.enabled` is {other}, which Synapse reads as {enabled}; \
                     give true, false or only_for_reauth",
                    origins.file_of("password_config"),
                ));
                (enabled, false)
            }
        };
        let raw_policy = raw.policy;
        let policy_enabled = match raw_policy.enabled {
            None => false,
            Some(Value::Bool(enabled)) => enabled,
            Some(other) => {
                let enabled = python_truthy(&other);
                let hint = if other == "only_for_reauth" {
                    " (`only_for_reauth` is a value of `password_config.enabled`, not of the policy)"
                } else {
                    ""
                };
                warnings.push(format!(
                    "{}: `password_config.policy.enabled` is {other}, which Synapse reads as {enabled}: \
                     the password policy is {}{hint}",
                    origins.file_of("password_config"),
                    if enabled { "enforced" } else { "off" },
                ));
                enabled
            }
        };
        let policy = PasswordPolicy {
            enabled: policy_enabled,
            minimum_length: raw_policy.minimum_length,
            require_digit: raw_policy.require_digit,
            require_symbol: raw_policy.require_symbol,
            require_lowercase: raw_policy.require_lowercase,
            require_uppercase: raw_policy.require_uppercase,
        };
        Ok(PasswordConfig {
            bcrypt_rounds: rounds,
            enabled,
            only_for_reauth,
            localdb_enabled: raw.localdb_enabled.unwrap_or(true),
            pepper: raw.pepper.unwrap_or_default(),
            policy,
        })
    }
}
