//! `user_consent`: Synapse's privacy-policy consent tracking (`template_dir`, `version`,
//! `server_notice_content`, `send_server_notice_to_guests`, `block_events_error`,
//! `require_at_registration`, `policy_name`). The section's presence enables it; `version` and
//! `template_dir` are then required, and the directory must exist, as Synapse checks at start-up.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::registration::LooseBool;
use super::{absolute, invalid};
use crate::load::{ConfigError, Origins};

/// The consent settings, when `user_consent` is configured.
#[derive(Clone, Debug)]
pub struct ConsentConfig {
    /// The current policy version (Synapse stringifies it: `version: 1.0` is `"1.0"`).
    pub version: String,
    /// Holds `en/<version>.html` and `en/success.html`.
    pub template_dir: PathBuf,
    /// The server notice sent to users who have not consented (a message content with a
    /// `body`; `%(consent_uri)s` in its strings is replaced).
    pub server_notice_content: Option<Map<String, Value>>,
    pub send_server_notice_to_guests: bool,
    /// When set, users who have not consented to `version` cannot send events; the text's
    /// `%(consent_uri)s` is replaced.
    pub block_events_error: Option<String>,
    /// Adds the `m.login.terms` stage to every registration flow.
    pub require_at_registration: bool,
    /// The policy's name in the `m.login.terms` parameters.
    pub policy_name: String,
}

#[derive(Deserialize)]
struct RawUserConsent {
    version: Option<Value>,
    template_dir: Option<PathBuf>,
    #[serde(default)]
    server_notice_content: Option<Map<String, Value>>,
    #[serde(default)]
    send_server_notice_to_guests: LooseBool,
    #[serde(default)]
    block_events_error: Option<String>,
    #[serde(default)]
    require_at_registration: LooseBool,
    #[serde(default)]
    policy_name: Option<String>,
}

#[derive(Default, Deserialize)]
pub(crate) struct RawConsent {
    #[serde(default)]
    user_consent: Option<RawUserConsent>,
}

impl RawConsent {
    pub(crate) fn into_config(self, origins: &Origins) -> Result<Option<ConsentConfig>, ConfigError> {
        let Some(raw) = self.user_consent else { return Ok(None) };
        let key = "user_consent";
        let version = match raw.version {
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => if b { "True" } else { "False" }.to_owned(),
            Some(other) => {
                return Err(invalid(origins, key, format!("`version` must be a string, got {other}")));
            }
            None => return Err(invalid(origins, key, "`version` is required")),
        };
        let Some(template_dir) = raw.template_dir else {
            return Err(invalid(origins, key, "`template_dir` is required"));
        };
        let template_dir = absolute(&template_dir);
        if !template_dir.is_dir() {
            return Err(invalid(
                origins,
                key,
                format!("could not find template directory '{}'", template_dir.display()),
            ));
        }
        if let Some(content) = &raw.server_notice_content
            && !content.contains_key("body")
        {
            return Err(invalid(origins, key, "`server_notice_content` must contain a 'body' key"));
        }
        Ok(Some(ConsentConfig {
            version,
            template_dir,
            server_notice_content: raw.server_notice_content,
            send_server_notice_to_guests: raw.send_server_notice_to_guests.0,
            block_events_error: raw.block_events_error,
            require_at_registration: raw.require_at_registration.0,
            policy_name: raw.policy_name.unwrap_or_else(|| "Privacy Policy".to_owned()),
        }))
    }
}
