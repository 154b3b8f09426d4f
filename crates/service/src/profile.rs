//! Profiles: `displayname`, `avatar_url` and extended fields (spec v1.16).

use myelin_core::{ErrCode, ErrorKind, MatrixError};
use myelin_federation::FederationError;
use ruma::UserId;
use serde_json::{Map, Value};

use crate::auth::Requester;
use crate::{Result, Services};

/// Longest display name accepted (Synapse's limit).
pub const MAX_DISPLAYNAME_LEN: usize = 256;
/// Longest avatar URL accepted.
pub const MAX_AVATAR_URL_LEN: usize = 1000;
/// The spec's limit for a whole profile.
pub const MAX_PROFILE_SIZE: usize = 64 * 1024;
/// The spec's limit for a key name.
pub const MAX_KEY_LEN: usize = 255;

/// Whether `key` is a profile key the spec allows to be set: `avatar_url`, `displayname`,
/// `m.tz`, or a namespaced key such as `org.example.field`.
pub fn valid_profile_key(key: &str) -> bool {
    if matches!(key, "avatar_url" | "displayname" | "m.tz") {
        return true;
    }
    let parts: Vec<&str> = key.split('.').collect();
    parts.len() >= 2
        && parts.iter().all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

impl Services {
    async fn check_profile_lookup(&self, requester: Option<&Requester>, target: &UserId) -> Result<()> {
        let config = &self.config.profile;
        if config.require_auth_for_profile_requests && requester.is_none() {
            return Err(MatrixError::missing_token().into());
        }
        if config.limit_profile_requests_to_users_who_share_rooms
            && let Some(requester) = requester
            && requester.user_id != target
            && !requester.is_admin
            && !self.store.share_a_room(requester.user_id.as_str(), target.as_str()).await?
        {
            return Err(MatrixError::forbidden("You do not share a room with this user").into());
        }
        Ok(())
    }

    /// A remote user's profile (or only `field`), from their server
    /// (`/_matrix/federation/v1/query/profile`): `404 M_NOT_FOUND` when it has none,
    /// `502 M_UNKNOWN` when it cannot be asked (as Synapse).
    async fn remote_profile(&self, target: &UserId, field: Option<&str>) -> Result<Map<String, Value>> {
        let query = {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("user_id", target.as_str());
            if let Some(field) = field {
                query.append_pair("field", field);
            }
            query.finish()
        };
        let path = format!("/_matrix/federation/v1/query/profile?{query}");
        let answer: std::result::Result<Value, FederationError> =
            self.federation.client.get_json(target.server_name(), &path).await;
        match answer {
            Ok(Value::Object(profile)) => Ok(profile),
            Ok(_) => {
                Err(MatrixError::unknown("Failed to fetch profile").with_kind(ErrorKind::BadGateway).into())
            }
            Err(FederationError::Status { status: 404, .. }) => {
                Err(MatrixError::not_found("Profile was not found").into())
            }
            Err(FederationError::Denied { destination }) => {
                Err(MatrixError::forbidden(format!("Federation denied with {destination}.")).into())
            }
            Err(error) => {
                tracing::info!(%target, %error, "could not fetch a remote profile");
                Err(MatrixError::unknown("Failed to fetch profile").with_kind(ErrorKind::BadGateway).into())
            }
        }
    }

    /// `GET /profile/{userId}`.
    pub async fn get_profile(
        &self,
        requester: Option<&Requester>,
        target: &UserId,
    ) -> Result<Map<String, Value>> {
        self.check_profile_lookup(requester, target).await?;
        if target.server_name().as_str() != self.server_name() {
            return self.remote_profile(target, None).await;
        }
        let user = self.store.get_user(target.as_str()).await?;
        if user.is_none() {
            return Err(MatrixError::not_found("Profile was not found").into());
        }
        Ok(self.store.get_profile(target.as_str()).await?)
    }

    /// `GET /profile/{userId}/{keyName}`.
    pub async fn get_profile_field(
        &self,
        requester: Option<&Requester>,
        target: &UserId,
        key: &str,
    ) -> Result<Value> {
        let profile = if target.server_name().as_str() != self.server_name()
            && matches!(key, "displayname" | "avatar_url")
        {
            self.check_profile_lookup(requester, target).await?;
            self.remote_profile(target, Some(key)).await?
        } else {
            self.get_profile(requester, target).await?
        };
        profile
            .get(key)
            .cloned()
            .ok_or_else(|| MatrixError::not_found("The requested profile key does not exist.").into())
    }

    fn check_profile_change(&self, requester: &Requester, target: &UserId, key: &str) -> Result<()> {
        if requester.user_id != target && !requester.is_admin {
            return Err(MatrixError::forbidden("Cannot change another user's profile").into());
        }
        if target.server_name().as_str() != self.server_name() {
            return Err(MatrixError::forbidden("Cannot change a remote user's profile").into());
        }
        if key.len() > MAX_KEY_LEN {
            return Err(MatrixError::new(ErrCode::KeyTooLarge, "The profile key is too long").into());
        }
        if !valid_profile_key(key) {
            return Err(MatrixError::invalid_param(format!("Invalid profile key {key:?}")).into());
        }
        if requester.suspended {
            return Err(crate::rooms::admission::suspended(
                "Updating profile while account is suspended is not allowed.",
            ));
        }
        let registration = &self.config.registration;
        if !requester.is_admin {
            if key == "displayname" && !registration.enable_set_displayname {
                return Err(MatrixError::forbidden("Changing display name is disabled on this server").into());
            }
            if key == "avatar_url" && !registration.enable_set_avatar_url {
                return Err(MatrixError::forbidden("Changing avatar is disabled on this server").into());
            }
        }
        Ok(())
    }

    /// `PUT /profile/{userId}/{keyName}`.
    pub async fn set_profile_field(
        &self,
        requester: &Requester,
        target: &UserId,
        key: &str,
        value: Value,
    ) -> Result<()> {
        self.check_profile_change(requester, target, key)?;
        self.check_profile_value(key, &value).await?;
        let mut profile = self.store.get_profile(target.as_str()).await?;
        profile.insert(key.to_owned(), value.clone());
        if Value::Object(profile).to_string().len() > MAX_PROFILE_SIZE {
            return Err(MatrixError::new(ErrCode::ProfileTooLarge, "The profile would exceed 64 KiB").into());
        }
        self.store.set_profile_field(target.as_str(), key, Some(&value)).await?;
        // A shadow-banned user's new profile is not sent into their rooms (as Synapse).
        if (key == "displayname" || key == "avatar_url") && !requester.shadow_banned {
            self.propagate_profile(target).await?;
        }
        Ok(())
    }

    /// The checks a profile field's new value must pass (types, lengths, the avatar rules).
    pub(crate) async fn check_profile_value(&self, key: &str, value: &Value) -> Result<()> {
        match key {
            "displayname" => {
                let name =
                    value.as_str().ok_or_else(|| MatrixError::bad_json("displayname must be a string"))?;
                if name.chars().count() > MAX_DISPLAYNAME_LEN {
                    return Err(MatrixError::invalid_param(format!(
                        "Displayname is too long (max {MAX_DISPLAYNAME_LEN})"
                    ))
                    .into());
                }
            }
            "avatar_url" => {
                let url =
                    value.as_str().ok_or_else(|| MatrixError::bad_json("avatar_url must be a string"))?;
                if url.len() > MAX_AVATAR_URL_LEN {
                    return Err(MatrixError::invalid_param("avatar_url is too long").into());
                }
                if !url.is_empty() && !url.starts_with("mxc://") {
                    return Err(MatrixError::invalid_param("avatar_url must be an mxc:// URI").into());
                }
                self.check_avatar(url).await?;
            }
            "m.tz" if !value.is_string() => {
                return Err(MatrixError::bad_json("m.tz must be a string").into());
            }
            _ => {}
        }
        Ok(())
    }

    /// `DELETE /profile/{userId}/{keyName}`.
    pub async fn delete_profile_field(
        &self,
        requester: &Requester,
        target: &UserId,
        key: &str,
    ) -> Result<()> {
        self.check_profile_change(requester, target, key)?;
        self.store.set_profile_field(target.as_str(), key, None).await?;
        // A shadow-banned user's new profile is not sent into their rooms (as Synapse).
        if (key == "displayname" || key == "avatar_url") && !requester.shadow_banned {
            self.propagate_profile(target).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::valid_profile_key;

    #[test]
    fn profile_keys_follow_the_spec_grammar() {
        for key in ["displayname", "avatar_url", "m.tz", "org.example.field", "com.x.a_1"] {
            assert!(valid_profile_key(key), "{key}");
        }
        for key in ["", "foo", "Org.example", "org..x", "org.example.", "org.ex-ample", "1a.b"] {
            assert!(!valid_profile_key(key), "{key}");
        }
    }
}
