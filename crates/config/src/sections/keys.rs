//! Signing keys and secrets: `signing_key_path`, `old_signing_keys`, `trusted_key_servers`,
//! `macaroon_secret_key`, `form_secret`, `registration_shared_secret` (each also as `*_path`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{absolute, inline_or_file_secret};
use crate::load::{ConfigError, Origins};
use crate::units::DurationMs;

#[derive(Deserialize)]
pub(crate) struct RawKeys {
    signing_key_path: Option<PathBuf>,
    #[serde(default)]
    old_signing_keys: BTreeMap<String, Value>,
    key_refresh_interval: Option<DurationMs>,
    trusted_key_servers: Option<Vec<TrustedKeyServer>>,
    #[serde(default)]
    suppress_key_server_warning: bool,
    macaroon_secret_key: Option<String>,
    macaroon_secret_key_path: Option<PathBuf>,
    form_secret: Option<String>,
    form_secret_path: Option<PathBuf>,
    registration_shared_secret: Option<String>,
    registration_shared_secret_path: Option<PathBuf>,
}

/// One entry of `trusted_key_servers`.
#[derive(Clone, Debug, Deserialize)]
pub struct TrustedKeyServer {
    pub server_name: String,
    #[serde(default)]
    pub verify_keys: BTreeMap<String, String>,
    #[serde(default)]
    pub accept_keys_insecurely: bool,
}

/// Keys and secrets.
#[derive(Clone, Debug)]
pub struct KeyConfig {
    pub signing_key_path: PathBuf,
    /// Retired keys: key id -> `{key, expired_ts}`.
    pub old_signing_keys: BTreeMap<String, Value>,
    pub key_refresh_interval: DurationMs,
    pub trusted_key_servers: Vec<TrustedKeyServer>,
    pub suppress_key_server_warning: bool,
    pub macaroon_secret_key: Option<String>,
    pub form_secret: Option<String>,
    pub registration_shared_secret: Option<String>,
}

impl RawKeys {
    pub(crate) fn into_config(
        self,
        origins: &Origins,
        server_name: &str,
        config_dir: &Path,
    ) -> Result<KeyConfig, ConfigError> {
        let signing_key_path = match self.signing_key_path {
            Some(path) => absolute(&path),
            None => absolute(&config_dir.join(format!("{server_name}.signing.key"))),
        };
        Ok(KeyConfig {
            signing_key_path,
            old_signing_keys: self.old_signing_keys,
            key_refresh_interval: self.key_refresh_interval.unwrap_or(DurationMs(86_400_000)),
            trusted_key_servers: self.trusted_key_servers.unwrap_or_else(|| {
                // Synapse's default: matrix.org with its published key.
                vec![TrustedKeyServer {
                    server_name: "matrix.org".to_owned(),
                    verify_keys: BTreeMap::from([(
                        "ed25519:auto".to_owned(),
                        "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw".to_owned(),
                    )]),
                    accept_keys_insecurely: false,
                }]
            }),
            suppress_key_server_warning: self.suppress_key_server_warning,
            macaroon_secret_key: inline_or_file_secret(
                origins,
                "macaroon_secret_key",
                self.macaroon_secret_key,
                self.macaroon_secret_key_path,
            )?,
            form_secret: inline_or_file_secret(
                origins,
                "form_secret",
                self.form_secret,
                self.form_secret_path,
            )?,
            registration_shared_secret: inline_or_file_secret(
                origins,
                "registration_shared_secret",
                self.registration_shared_secret,
                self.registration_shared_secret_path,
            )?,
        })
    }
}
