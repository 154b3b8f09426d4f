//! `user_directory`: `enabled`, `search_all_users`, `prefer_local_users`,
//! `exclude_remote_users`, `show_locked_users`, with Synapse's defaults.

use serde::Deserialize;

/// How `POST /user_directory/search` behaves.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct UserDirectoryConfig {
    /// When false, searches return no results (they are not refused).
    pub enabled: bool,
    /// Search every user the server knows, not only those sharing a room with the requester
    /// or joined to a public or world-readable room.
    pub search_all_users: bool,
    /// Rank this server's users above remote ones.
    pub prefer_local_users: bool,
    /// Return only this server's users.
    pub exclude_remote_users: bool,
    /// Include locked accounts.
    pub show_locked_users: bool,
}

impl Default for UserDirectoryConfig {
    fn default() -> Self {
        UserDirectoryConfig {
            enabled: true,
            search_all_users: false,
            prefer_local_users: false,
            exclude_remote_users: false,
            show_locked_users: false,
        }
    }
}

#[derive(Default, Deserialize)]
pub(crate) struct RawUserDirectory {
    /// `user_directory:` with no value reads as the defaults, as in Synapse.
    #[serde(default)]
    user_directory: Option<UserDirectoryConfig>,
}

impl RawUserDirectory {
    pub(crate) fn into_config(self) -> UserDirectoryConfig {
        self.user_directory.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::UserDirectoryConfig;

    fn load(yaml: &str) -> (UserDirectoryConfig, Vec<String>) {
        let base = "server_name: example.org\nreport_stats: false\n";
        let loaded = crate::load_from_str(&format!("{base}{yaml}"), Path::new("/etc/myelin/homeserver.yaml"))
            .expect("config loads");
        (loaded.config.user_directory, loaded.warnings)
    }

    #[test]
    fn defaults_follow_synapse() {
        assert_eq!(load("").0, UserDirectoryConfig::default());
        assert_eq!(load("user_directory:\n").0, UserDirectoryConfig::default());
        let defaults = UserDirectoryConfig::default();
        assert!(defaults.enabled && !defaults.search_all_users && !defaults.prefer_local_users);
    }

    #[test]
    fn keys_are_read() {
        let (config, warnings) = load(
            "user_directory:\n  enabled: false\n  search_all_users: true\n  prefer_local_users: true\n  exclude_remote_users: true\n  show_locked_users: true\n",
        );
        assert_eq!(
            config,
            UserDirectoryConfig {
                enabled: false,
                search_all_users: true,
                prefer_local_users: true,
                exclude_remote_users: true,
                show_locked_users: true,
            }
        );
        assert!(warnings.iter().all(|w| !w.contains("user_directory")), "{warnings:?}");
        let (_, warnings) = load("user_directory:\n  search_everything: true\n");
        assert!(warnings.iter().any(|w| w.contains("user_directory.search_everything")), "{warnings:?}");
    }

    #[test]
    fn wrong_types_are_errors() {
        let error = crate::load_from_str(
            "server_name: example.org\nuser_directory:\n  enabled: maybe\n",
            Path::new("/etc/myelin/homeserver.yaml"),
        )
        .unwrap_err();
        assert!(error.to_string().contains("user_directory.enabled"), "{error}");
    }
}
