//! Room defaults and directory rules: `default_room_version`,
//! `encryption_enabled_by_default_for_room_type`, `default_power_level_content_override`,
//! `room_list_publication_rules`, `alias_creation_rules`, `block_non_admin_invites`,
//! `require_membership_for_aliases`, `forget_rooms_on_leave`, `filter_timeline_limit`,
//! `enable_search`, `allow_public_rooms_without_auth`, `allow_public_rooms_over_federation`,
//! `limit_remote_rooms`.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{LooseBool, invalid};
use crate::load::{ConfigError, Origins};

/// One rule of `room_list_publication_rules` or `alias_creation_rules`; patterns are globs.
#[derive(Clone, Debug, Deserialize)]
pub struct DirectoryRule {
    #[serde(default = "any")]
    pub user_id: String,
    #[serde(default = "any")]
    pub alias: String,
    #[serde(default = "any")]
    pub room_id: String,
    pub action: String,
}

fn any() -> String {
    "*".to_owned()
}

#[derive(Deserialize)]
pub(crate) struct RawRoom {
    /// A string, or `false`: PyYAML reads an unquoted `off` as `false`, and Synapse takes that.
    encryption_enabled_by_default_for_room_type: Option<Value>,
    #[serde(default)]
    default_power_level_content_override: Map<String, Value>,
    room_list_publication_rules: Option<Vec<DirectoryRule>>,
    alias_creation_rules: Option<Vec<DirectoryRule>>,
    #[serde(default)]
    block_non_admin_invites: bool,
    require_membership_for_aliases: Option<bool>,
    #[serde(default)]
    forget_rooms_on_leave: bool,
    filter_timeline_limit: Option<i64>,
    enable_room_list_search: Option<bool>,
    allow_public_rooms_without_auth: Option<bool>,
    allow_public_rooms_over_federation: Option<bool>,
    enable_search: Option<LooseBool>,
    /// `null` is Synapse's defaults too.
    limit_remote_rooms: Option<LimitRemoteRooms>,
}

/// `limit_remote_rooms`: joins of remote rooms whose state is too complex are refused.
#[derive(Clone, Debug, Deserialize)]
pub struct LimitRemoteRooms {
    #[serde(default)]
    pub enabled: bool,
    /// The most complexity (current state events / 500) a joined remote room may have.
    #[serde(default = "default_complexity")]
    pub complexity: f64,
    /// The error a refused join gets.
    #[serde(default = "default_complexity_error")]
    pub complexity_error: String,
    /// Whether server admins may join such rooms anyway.
    #[serde(default)]
    pub admins_can_join: bool,
}

fn default_complexity() -> f64 {
    1.0
}

fn default_complexity_error() -> String {
    "Your homeserver is unable to join rooms this large or complex. Please speak to your server \
     administrator, or upgrade your instance to join this room."
        .to_owned()
}

impl Default for LimitRemoteRooms {
    fn default() -> Self {
        LimitRemoteRooms {
            enabled: false,
            complexity: default_complexity(),
            complexity_error: default_complexity_error(),
            admins_can_join: false,
        }
    }
}

/// Which presets get `m.room.encryption` by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncryptionByDefault {
    Off,
    /// `private_chat` and `trusted_private_chat`.
    Invite,
    All,
}

#[derive(Clone, Debug)]
pub struct RoomConfig {
    pub encryption_by_default: EncryptionByDefault,
    /// Per preset name, a power levels override applied before the request's own.
    pub default_power_level_content_override: Map<String, Value>,
    pub room_list_publication_rules: Vec<DirectoryRule>,
    pub alias_creation_rules: Vec<DirectoryRule>,
    pub block_non_admin_invites: bool,
    pub require_membership_for_aliases: bool,
    pub forget_rooms_on_leave: bool,
    /// Caps `timeline.limit` of filters (`-1`: no cap).
    pub filter_timeline_limit: i64,
    pub enable_room_list_search: bool,
    pub allow_public_rooms_without_auth: bool,
    /// Whether other servers may read the room directory (Synapse's default: no).
    pub allow_public_rooms_over_federation: bool,
    /// `enable_search: false` refuses `/search` (the user directory stays), as in Synapse.
    pub enable_search: bool,
    pub limit_remote_rooms: LimitRemoteRooms,
}

fn check_rules(origins: &Origins, key: &str, rules: &[DirectoryRule]) -> Result<(), ConfigError> {
    for (index, rule) in rules.iter().enumerate() {
        if rule.action != "allow" && rule.action != "deny" {
            return Err(invalid(origins, &format!("{key}[{index}].action"), "must be allow or deny"));
        }
    }
    Ok(())
}

impl RawRoom {
    pub(crate) fn into_config(self, origins: &Origins) -> Result<RoomConfig, ConfigError> {
        let encryption_by_default = match &self.encryption_enabled_by_default_for_room_type {
            None | Some(Value::Bool(false)) => EncryptionByDefault::Off,
            Some(Value::String(value)) if value == "off" => EncryptionByDefault::Off,
            Some(Value::String(value)) if value == "invite" => EncryptionByDefault::Invite,
            Some(Value::String(value)) if value == "all" => EncryptionByDefault::All,
            Some(other) => {
                return Err(invalid(
                    origins,
                    "encryption_enabled_by_default_for_room_type",
                    format!("{other} is not one of all, invite, off"),
                ));
            }
        };
        // Synapse's defaults: anyone may publish rooms and create aliases.
        let allow_all = || {
            vec![DirectoryRule { user_id: any(), alias: any(), room_id: any(), action: "allow".to_owned() }]
        };
        let room_list_publication_rules = self.room_list_publication_rules.unwrap_or_else(allow_all);
        let alias_creation_rules = self.alias_creation_rules.unwrap_or_else(allow_all);
        check_rules(origins, "room_list_publication_rules", &room_list_publication_rules)?;
        check_rules(origins, "alias_creation_rules", &alias_creation_rules)?;
        Ok(RoomConfig {
            encryption_by_default,
            default_power_level_content_override: self.default_power_level_content_override,
            room_list_publication_rules,
            alias_creation_rules,
            block_non_admin_invites: self.block_non_admin_invites,
            require_membership_for_aliases: self.require_membership_for_aliases.unwrap_or(true),
            forget_rooms_on_leave: self.forget_rooms_on_leave,
            filter_timeline_limit: self.filter_timeline_limit.unwrap_or(100),
            enable_room_list_search: self.enable_room_list_search.unwrap_or(true),
            allow_public_rooms_without_auth: self.allow_public_rooms_without_auth.unwrap_or(false),
            allow_public_rooms_over_federation: self.allow_public_rooms_over_federation.unwrap_or(false),
            enable_search: self.enable_search.is_none_or(|enabled| enabled.0),
            limit_remote_rooms: self.limit_remote_rooms.unwrap_or_default(),
        })
    }
}

/// Whether `value` matches a glob pattern with `*` (any run of characters) and `?` (one
/// character), ignoring case as Synapse's `glob_to_regex` does for these rules.
pub fn glob_matches(pattern: &str, value: &str) -> bool {
    wildmatch::WildMatch::new_case_insensitive(pattern).matches(value)
}

impl DirectoryRule {
    /// Whether this rule applies. `aliases` empty means the request involves no alias.
    pub fn applies(&self, user_id: &str, room_id: &str, aliases: &[String]) -> bool {
        let alias_ok = if aliases.is_empty() {
            self.alias == "*"
        } else {
            aliases.iter().any(|a| glob_matches(&self.alias, a))
        };
        glob_matches(&self.user_id, user_id) && glob_matches(&self.room_id, room_id) && alias_ok
    }
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs() {
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("@admin*:example.org", "@admin_1:example.org"));
        assert!(!glob_matches("@admin*:example.org", "@bob:example.org"));
        assert!(glob_matches("#?-room:*", "#a-room:x"));
        assert!(!glob_matches("#?-room:*", "#ab-room:x"));
        // Case-insensitive, as in Synapse.
        assert!(glob_matches("@Admin*:Example.org", "@admin_1:EXAMPLE.ORG"));
        // Nothing else is special: no character classes, no escapes.
        assert!(glob_matches("[ab]", "[ab]"));
        assert!(!glob_matches("[ab]", "a"));
    }

    #[test]
    fn many_stars_do_not_backtrack_exponentially() {
        // A backtracking matcher tries every way to split the `a`s among the stars before
        // failing on the missing `b`: with 8 stars over 5000 characters it never finishes.
        let pattern = "*a*a*a*a*a*a*a*b";
        let value = "a".repeat(5000);
        assert!(!glob_matches(pattern, &value));
        assert!(glob_matches(pattern, &(value + "b")));
    }
}
