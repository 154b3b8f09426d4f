//! Privacy-policy consent (`user_consent`), as Synapse's consent resource, consent server
//! notices and `assert_accepted_privacy_policy`:
//!
//! - `GET /_matrix/consent` renders `<template_dir>/en/<version>.html` (minijinja, HTML
//!   autoescaped) with `has_consented`, `public_version`, `version`, `user` and `userhmac`;
//!   `POST` records the user's `consent_version` and renders `en/success.html`. `h` is the hex
//!   HMAC-SHA256 of `u` keyed with `form_secret`, compared in constant time.
//! - With `block_events_error`, a user who has not consented to the current version cannot
//!   send events (`403 M_CONSENT_NOT_GIVEN` with `consent_uri`), except joining a server
//!   notices room and leaving; the server acting on its own, the server notices user,
//!   appservice users, support and bot users are exempt (Synapse's rules; admins are not).
//! - With `server_notice_content`, a user's sync sends them the notice once per version.
//! - With `require_at_registration`, every registration flow starts with `m.login.terms`, and
//!   completing it records consent. Consent given on the page joins the auto-join rooms
//!   (Synapse's `post_consent_actions`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, KeyInit, Mac};
use myelin_config::{Config, ConsentConfig};
use myelin_core::{ErrCode, MatrixError};
use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::auth::Requester;
use crate::server_notices::ServerNotice;
use crate::{Error, Result, Services};

/// The only language Synapse serves policies in.
const TEMPLATE_LANGUAGE: &str = "en";

/// The user types that never need to consent.
const EXEMPT_USER_TYPES: &[&str] = &["support", "bot"];

/// The consent templates (loaded on first use, then cached) and the users whose consent
/// notice is being sent right now.
pub struct Consent {
    templates: Option<Arc<minijinja::Environment<'static>>>,
    notices_in_progress: Mutex<HashSet<OwnedUserId>>,
}

impl Consent {
    pub fn new(config: &Config) -> Consent {
        let templates = config.consent.as_ref().map(|consent| {
            let mut env = minijinja::Environment::new();
            env.set_loader(minijinja::path_loader(&consent.template_dir));
            Arc::new(env)
        });
        Consent { templates, notices_in_progress: Mutex::default() }
    }
}

/// The parameters of `GET` and `POST /_matrix/consent`: `u` (a localpart or a user ID), `h`
/// (its HMAC) and `v` (a policy version).
#[derive(Clone, Debug, Default)]
pub struct ConsentForm {
    pub user: Option<String>,
    pub hmac: Option<String>,
    pub version: Option<String>,
}

/// Python's `text % {"consent_uri": uri}` for the one key Synapse substitutes.
fn substitute_consent_uri(text: &str, consent_uri: &str) -> String {
    text.replace("%(consent_uri)s", consent_uri).replace("%%", "%")
}

/// Synapse's `copy_with_str_subst`: every string of a JSON value, substituted.
fn substitute_in_value(value: &Value, consent_uri: &str) -> Value {
    match value {
        Value::String(s) => Value::String(substitute_consent_uri(s, consent_uri)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| substitute_in_value(v, consent_uri)).collect())
        }
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), substitute_in_value(v, consent_uri))).collect())
        }
        other => other.clone(),
    }
}

impl Services {
    /// The consent settings; without them the consent routes do not exist.
    fn consent_config(&self) -> Result<&ConsentConfig> {
        self.config
            .consent
            .as_ref()
            .ok_or_else(|| MatrixError::new(ErrCode::Unrecognized, "Unrecognized request").into())
    }

    fn consent_mac(&self, user: &str) -> Result<Hmac<sha2::Sha256>> {
        let secret = self
            .config
            .keys
            .form_secret
            .as_deref()
            .ok_or_else(|| Error::internal("user_consent is configured without form_secret"))?;
        let mut mac =
            <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).map_err(Error::internal)?;
        mac.update(user.as_bytes());
        Ok(mac)
    }

    /// `h` for `u`: the hex HMAC-SHA256 of `u` keyed with `form_secret`.
    pub(crate) fn consent_hmac(&self, user: &str) -> Result<String> {
        Ok(hex::encode(self.consent_mac(user)?.finalize().into_bytes()))
    }

    /// Checks `h` in constant time (`403 M_FORBIDDEN` as Synapse).
    fn check_consent_hmac(&self, user: &str, given: &str) -> Result<()> {
        let valid = hex::decode(given)
            .ok()
            .is_some_and(|given| self.consent_mac(user).is_ok_and(|mac| mac.verify_slice(&given).is_ok()));
        // `hex::decode` accepts upper case; Synapse compares the lower-case hex digest.
        if !valid || given.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(MatrixError::forbidden("HMAC incorrect").into());
        }
        Ok(())
    }

    /// The page where a user gives consent: `<public_baseurl>_matrix/consent?u=..&h=..`.
    pub(crate) fn consent_uri(&self, localpart: &str) -> Result<String> {
        let hmac = self.consent_hmac(localpart)?;
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("u", localpart)
            .append_pair("h", &hmac)
            .finish();
        Ok(format!("{}_matrix/consent?{query}", self.config.server.public_baseurl))
    }

    fn consent_user_id(&self, user: &str) -> String {
        if user.starts_with('@') { user.to_owned() } else { format!("@{user}:{}", self.server_name()) }
    }

    /// Renders `en/<name>` on a blocking thread (templates are read from disk on first use).
    async fn render_consent_template(&self, name: String, context: Value) -> Result<String> {
        let env = self.consent.templates.clone().ok_or_else(|| Error::internal("no consent templates"))?;
        let path = format!("{TEMPLATE_LANGUAGE}/{name}");
        let rendered = tokio::task::spawn_blocking(move || {
            env.get_template(&path).and_then(|template| template.render(context))
        })
        .await
        .map_err(Error::internal)?;
        match rendered {
            Ok(html) => Ok(html),
            Err(error) if error.kind() == minijinja::ErrorKind::TemplateNotFound => {
                Err(MatrixError::not_found(if name == "success.html" {
                    "success.html not found"
                } else {
                    "Unknown policy version"
                })
                .into())
            }
            Err(error) => Err(Error::internal_with("rendering a consent template", error)),
        }
    }

    /// `GET /_matrix/consent`: the policy of version `v` (default: the current one), for a
    /// user when `u` is given (then `h` is required and checked), else the public version.
    pub async fn consent_page(&self, form: ConsentForm) -> Result<String> {
        let config = self.consent_config()?;
        let version = form.version.unwrap_or_else(|| config.version.clone());
        let user = form.user.unwrap_or_default();
        let public_version = user.is_empty();
        let mut has_consented = false;
        let mut userhmac = Value::Null;
        if !public_version {
            let hmac = form.hmac.ok_or_else(|| MatrixError::missing_param("Missing bytes argument: h"))?;
            self.check_consent_hmac(&user, &hmac)?;
            let record = self
                .store
                .get_user(&self.consent_user_id(&user))
                .await?
                .ok_or_else(|| MatrixError::not_found("Unknown user"))?;
            has_consented = record.consent_version.as_deref() == Some(version.as_str());
            userhmac = Value::String(hmac);
        }
        let context = json!({
            "user": user,
            "userhmac": userhmac,
            "version": version,
            "has_consented": has_consented,
            "public_version": public_version,
        });
        self.render_consent_template(format!("{version}.html"), context).await
    }

    /// `POST /_matrix/consent`: records that `u` consented to version `v`, then renders
    /// `success.html`.
    pub async fn give_consent(&self, form: ConsentForm) -> Result<String> {
        self.consent_config()?;
        let version =
            form.version.ok_or_else(|| MatrixError::missing_param("Missing string query parameter: v"))?;
        let user =
            form.user.ok_or_else(|| MatrixError::missing_param("Missing string query parameter: u"))?;
        let hmac = form.hmac.ok_or_else(|| MatrixError::missing_param("Missing bytes argument: h"))?;
        self.check_consent_hmac(&user, &hmac)?;
        let user_id = self.consent_user_id(&user);
        if !self.store.set_consent_version(&user_id, &version).await? {
            return Err(MatrixError::not_found("Unknown user").into());
        }
        tracing::info!(%user_id, %version, "user consented to the privacy policy");
        // Synapse's `post_consent_actions`: the auto-join rooms.
        let is_guest = self.store.get_user(&user_id).await?.is_some_and(|u| u.is_guest);
        self.join_auto_join_rooms(&user_id, is_guest).await;
        self.render_consent_template("success.html".to_owned(), json!({})).await
    }

    /// Whether sending events waits for consent (`user_consent.block_events_error`).
    pub(crate) fn consent_blocks_events(&self) -> bool {
        self.config.consent.as_ref().is_some_and(|config| config.block_events_error.is_some())
    }

    /// Synapse's `assert_accepted_privacy_policy`: `403 M_CONSENT_NOT_GIVEN` when sending
    /// events is blocked until consent and the requester has not consented to the current
    /// version. Which writes are exempt is decided by `rooms::admission`, its one caller.
    pub(crate) async fn assert_accepted_privacy_policy(&self, requester: &Requester) -> Result<()> {
        let Some(config) = &self.config.consent else { return Ok(()) };
        let Some(error_text) = &config.block_events_error else { return Ok(()) };
        // The server acting as the user on its own initiative (no token) is not the user.
        if requester.token_hash.is_empty() {
            return Ok(());
        }
        if self.server_notices_user().as_ref() == Some(&requester.user_id) {
            return Ok(());
        }
        let Some(user) = self.store.get_user(requester.user_id.as_str()).await? else { return Ok(()) };
        if user.user_type.as_deref().is_some_and(|t| EXEMPT_USER_TYPES.contains(&t))
            || user.appservice_id.is_some()
            || user.consent_version.as_deref() == Some(config.version.as_str())
        {
            return Ok(());
        }
        let consent_uri = self.consent_uri(requester.user_id.localpart())?;
        Err(MatrixError::new(ErrCode::ConsentNotGiven, substitute_consent_uri(error_text, &consent_uri))
            .with_extra("consent_uri", consent_uri)
            .into())
    }

    /// `m.login.terms`'s parameters in a UIA challenge (Synapse's shape).
    pub(crate) fn terms_params(&self) -> Option<Value> {
        let config = self.config.consent.as_ref()?;
        Some(json!({
            "policies": {
                "privacy_policy": {
                    "version": config.version,
                    "en": {
                        "name": config.policy_name,
                        "url": format!("{}_matrix/consent?v={}", self.config.server.public_baseurl, config.version),
                    },
                },
            },
        }))
    }

    /// Whether registration requires the `m.login.terms` stage.
    pub(crate) fn consent_at_registration(&self) -> bool {
        self.config.consent.as_ref().is_some_and(|c| c.require_at_registration)
    }

    /// Whether a user consented to the current policy version.
    pub(crate) async fn has_consented(&self, user_id: &str) -> bool {
        let Some(config) = &self.config.consent else { return true };
        match self.store.get_user(user_id).await {
            Ok(user) => user.and_then(|u| u.consent_version).as_deref() == Some(config.version.as_str()),
            Err(error) => {
                tracing::warn!(%user_id, %error, "could not read the user's consent");
                false
            }
        }
    }

    /// Records consent to the current version given through `m.login.terms`.
    pub(crate) async fn record_registration_consent(&self, user_id: &str) -> Result<()> {
        let Some(config) = &self.config.consent else { return Ok(()) };
        self.store.set_consent_version(user_id, &config.version).await?;
        tracing::info!(%user_id, "user consented to the privacy policy at registration");
        Ok(())
    }

    /// Synapse's `ConsentServerNotices`: on a user's sync, sends them the consent notice
    /// once per policy version unless they consented (guests only with
    /// `send_server_notice_to_guests`). Failures are logged, never fail the sync; the work
    /// runs on a task of its own, so a sync that goes away does not cut it in half.
    pub(crate) async fn maybe_send_consent_notice(&self, user_id: &UserId) {
        let Some(config) = &self.config.consent else { return };
        if config.server_notice_content.is_none() || self.server_notices_user().as_deref() == Some(user_id) {
            return;
        }
        {
            let Ok(mut in_progress) = self.consent.notices_in_progress.lock() else { return };
            if !in_progress.insert(user_id.to_owned()) {
                return;
            }
        }
        let services = self.clone();
        let user = user_id.to_owned();
        let task = tokio::spawn(async move {
            let result = services.send_consent_notice(&user).await;
            if let Ok(mut in_progress) = services.consent.notices_in_progress.lock() {
                in_progress.remove(&user);
            }
            if let Err(error) = result {
                tracing::error!(user_id = %user, %error, "error sending server notice about user consent");
            }
        });
        let _ = task.await;
    }

    async fn send_consent_notice(&self, user_id: &UserId) -> Result<()> {
        let Some(config) = &self.config.consent else { return Ok(()) };
        let Some(content) = &config.server_notice_content else { return Ok(()) };
        let Some(user) = self.store.get_user(user_id.as_str()).await? else { return Ok(()) };
        if (user.is_guest && !config.send_server_notice_to_guests)
            || user.consent_version.as_deref() == Some(config.version.as_str())
            || user.consent_server_notice_sent.as_deref() == Some(config.version.as_str())
        {
            return Ok(());
        }
        let consent_uri = self.consent_uri(user_id.localpart())?;
        let content = substitute_in_value(&Value::Object(content.clone()), &consent_uri);
        let notice = ServerNotice {
            user_id: user_id.to_owned(),
            kind: "m.room.message".to_owned(),
            state_key: None,
            content,
        };
        self.deliver_server_notice(notice, None).await?;
        self.store.set_consent_server_notice_sent(user_id.as_str(), &config.version).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_like_python_percent_format() {
        assert_eq!(
            substitute_consent_uri("go to %(consent_uri)s (100%%)", "https://x/"),
            "go to https://x/ (100%)"
        );
        let value = json!({"body": "see %(consent_uri)s", "n": 1, "list": ["%(consent_uri)s"]});
        assert_eq!(substitute_in_value(&value, "U"), json!({"body": "see U", "n": 1, "list": ["U"]}));
    }
}
