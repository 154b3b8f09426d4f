//! `modules`: Synapse loads Python modules (spam checkers, third-party rules) from this list.
//! Myelin builds in the policy modules organisations configure to restrict their users, and
//! reads their entries in the same shape; any other module is named in a warning and ignored.
//!
//! ```yaml
//! modules:
//!   # matrix-org/synapse-user-restrictions: who may create rooms and invite.
//!   - module: synapse_user_restrictions.UserRestrictionsModule
//!     config:
//!       rules:                       # the first rule that decides wins
//!         - match: "@admin.*:example.org"   # a regex matched against the whole user ID
//!           allow: [invite, create_room]
//!         - match: "@guest.*:example.org"
//!           deny: [invite]
//!       default_deny: [create_room]  # when no rule decides; anything else is allowed
//!   # matrix_e2ee_filter (encryption disabler): no encrypted rooms.
//!   - module: matrix_e2ee_filter.EncryptedRoomFilter
//!     config:
//!       deny_encryption_for_users_of: [example.org]   # senders of these servers
//!       deny_encryption_for_rooms_of: [example.org]   # rooms created on these servers
//! ```

use std::collections::BTreeSet;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::invalid;
use crate::load::{ConfigError, Origins};

/// The module name of the user restrictions module, as written in `module`.
pub const USER_RESTRICTIONS_MODULE: &str = "synapse_user_restrictions.UserRestrictionsModule";
/// The module name of the encryption filter, as written in `module`.
pub const E2EE_FILTER_MODULE: &str = "matrix_e2ee_filter.EncryptedRoomFilter";

/// A permission the user restrictions module decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum UserPermission {
    /// Inviting someone to a room.
    Invite,
    /// Creating (or upgrading) a room.
    CreateRoom,
}

impl UserPermission {
    fn parse(name: &str) -> Option<UserPermission> {
        match name {
            "invite" => Some(UserPermission::Invite),
            "create_room" => Some(UserPermission::CreateRoom),
            _ => None,
        }
    }
}

/// One rule of the user restrictions module.
#[derive(Clone, Debug)]
pub struct UserRestrictionRule {
    /// Matches the whole user ID.
    pub pattern: Regex,
    pub allow: BTreeSet<UserPermission>,
    pub deny: BTreeSet<UserPermission>,
}

/// One configured user restrictions module.
#[derive(Clone, Debug, Default)]
pub struct UserRestrictions {
    pub rules: Vec<UserRestrictionRule>,
    pub default_deny: BTreeSet<UserPermission>,
}

impl UserRestrictions {
    /// Whether `user_id` may use `permission`: the first rule whose pattern matches and that
    /// names the permission decides; otherwise `default_deny` does.
    pub fn allows(&self, user_id: &str, permission: UserPermission) -> bool {
        for rule in &self.rules {
            if !rule.pattern.is_match(user_id) {
                continue;
            }
            if rule.allow.contains(&permission) {
                return true;
            }
            if rule.deny.contains(&permission) {
                return false;
            }
        }
        !self.default_deny.contains(&permission)
    }
}

/// One configured encryption filter.
#[derive(Clone, Debug, Default)]
pub struct EncryptionFilter {
    /// `m.room.encryption` sent by users of these servers is refused.
    pub deny_for_users_of: Vec<String>,
    /// `m.room.encryption` in rooms whose ID names these servers is refused.
    pub deny_for_rooms_of: Vec<String>,
}

/// The built-in modules configured, in the order of `modules` (every instance applies).
#[derive(Clone, Debug, Default)]
pub struct ModulesConfig {
    pub user_restrictions: Vec<UserRestrictions>,
    pub encryption_filters: Vec<EncryptionFilter>,
}

impl ModulesConfig {
    /// Whether every user restrictions module lets `user_id` use `permission`.
    pub fn user_may(&self, user_id: &str, permission: UserPermission) -> bool {
        self.user_restrictions.iter().all(|module| module.allows(user_id, permission))
    }
}

#[derive(Deserialize)]
pub(crate) struct RawModules {
    modules: Option<Vec<RawModule>>,
}

#[derive(Deserialize)]
struct RawModule {
    module: String,
    #[serde(default)]
    config: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match")]
    pattern: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUserRestrictions {
    rules: Option<Vec<RawRule>>,
    default_deny: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEncryptionFilter {
    #[serde(default)]
    deny_encryption_for_users_of: Vec<String>,
    #[serde(default)]
    deny_encryption_for_rooms_of: Vec<String>,
}

fn permissions(
    origins: &Origins,
    key: &str,
    names: &[String],
) -> Result<BTreeSet<UserPermission>, ConfigError> {
    names
        .iter()
        .map(|name| {
            UserPermission::parse(name).ok_or_else(|| {
                invalid(
                    origins,
                    key,
                    format!("{name:?} is not a permission of the user restrictions module; try one of: create_room, invite"),
                )
            })
        })
        .collect()
}

fn module_config<T: for<'de> Deserialize<'de>>(
    origins: &Origins,
    key: &str,
    config: Value,
) -> Result<T, ConfigError> {
    let config = if config.is_null() { Value::Object(Default::default()) } else { config };
    serde_json::from_value(config).map_err(|e| invalid(origins, key, e.to_string()))
}

impl RawModules {
    pub(crate) fn into_config(
        self,
        origins: &Origins,
        warnings: &mut Vec<String>,
    ) -> Result<ModulesConfig, ConfigError> {
        let mut modules = ModulesConfig::default();
        for (index, raw) in self.modules.unwrap_or_default().into_iter().enumerate() {
            let key = format!("modules[{index}].config");
            match raw.module.as_str() {
                USER_RESTRICTIONS_MODULE => {
                    let parsed: RawUserRestrictions = module_config(origins, &key, raw.config)?;
                    let Some(raw_rules) = parsed.rules else {
                        return Err(invalid(
                            origins,
                            &key,
                            "'rules' list not specified in module configuration",
                        ));
                    };
                    let mut rules = Vec::with_capacity(raw_rules.len());
                    for (number, rule) in raw_rules.into_iter().enumerate() {
                        let rule_key = format!("{key}.rules[{number}]");
                        let Some(pattern) = rule.pattern else {
                            return Err(invalid(origins, &rule_key, "rules must have a 'match' field"));
                        };
                        let pattern = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                            invalid(origins, &rule_key, format!("invalid regex {pattern:?}: {e}"))
                        })?;
                        rules.push(UserRestrictionRule {
                            pattern,
                            allow: permissions(origins, &rule_key, &rule.allow)?,
                            deny: permissions(origins, &rule_key, &rule.deny)?,
                        });
                    }
                    let default_deny = permissions(origins, &key, &parsed.default_deny.unwrap_or_default())?;
                    modules.user_restrictions.push(UserRestrictions { rules, default_deny });
                }
                E2EE_FILTER_MODULE => {
                    let parsed: RawEncryptionFilter = module_config(origins, &key, raw.config)?;
                    modules.encryption_filters.push(EncryptionFilter {
                        deny_for_users_of: parsed.deny_encryption_for_users_of,
                        deny_for_rooms_of: parsed.deny_encryption_for_rooms_of,
                    });
                }
                other => warnings.push(format!(
                    "{}: `modules[{index}]`: the module {other:?} is not built into Myelin; ignored \
                     (built in: {USER_RESTRICTIONS_MODULE}, {E2EE_FILTER_MODULE}, and \
                     media_storage_providers' S3 provider)",
                    origins.file_of("modules")
                )),
            }
        }
        Ok(modules)
    }
}
