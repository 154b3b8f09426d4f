//! Accounts: registration (open, token-gated, guest, shared-secret), username rules, password
//! policy and changes, deactivation.

use hmac::{Hmac, KeyInit, Mac};
use myelin_core::{ErrCode, MatrixError};
use myelin_store::NewUser;
use ruma::UserId;
use serde_json::{Value, json};

use crate::auth::Requester;
use crate::ratelimit::Limiter;
use crate::sessions::LoginSession;
use crate::uia::{DUMMY, PASSWORD, REGISTRATION_TOKEN, TERMS, UiaRequest};
use crate::{Error, Result, Services};

/// The longest user ID allowed (the spec's limit).
pub const MAX_USER_ID_LEN: usize = 255;

/// A `/register` request.
#[derive(Clone, Debug, Default)]
pub struct RegistrationRequest {
    pub username: Option<String>,
    pub password: Option<String>,
    pub auth: Option<Value>,
    pub device_id: Option<String>,
    pub initial_device_display_name: Option<String>,
    pub inhibit_login: bool,
    pub refresh_token: bool,
    pub guest: bool,
    pub client_ip: Option<String>,
}

/// The outcome of a registration: the user, and a session unless `inhibit_login`.
#[derive(Clone, Debug)]
pub struct Registered {
    pub user_id: String,
    pub session: Option<LoginSession>,
}

/// A shared-secret registration request (`POST /_synapse/admin/v1/register`).
#[derive(Clone, Debug)]
pub struct SharedSecretRegistration {
    pub nonce: String,
    pub username: String,
    pub password: String,
    pub admin: bool,
    pub user_type: Option<String>,
    pub displayname: Option<String>,
    pub mac: String,
    pub refresh_token: bool,
}

/// User types Synapse knows; `user_type` must be one of these.
pub const USER_TYPES: &[&str] = &["support", "bot"];

/// Synapse's answer when no `registration_shared_secret` is configured.
fn shared_secret_disabled() -> Error {
    MatrixError::unknown("Shared secret registration is not enabled").into()
}

fn invalid_username(message: &str) -> Error {
    MatrixError::new(ErrCode::InvalidUsername, message).into()
}

/// Whether a localpart uses only the characters Synapse allows new users to have.
fn valid_localpart_characters(localpart: &str) -> bool {
    localpart
        .bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'=' | b'/' | b'+'))
}

impl Services {
    /// The registration flows this server offers.
    pub fn registration_flows(&self) -> Vec<Vec<String>> {
        let mut flow = if self.config.registration.registration_requires_token {
            vec![REGISTRATION_TOKEN.to_owned()]
        } else {
            vec![DUMMY.to_owned()]
        };
        // `user_consent.require_at_registration` puts the terms first in every flow.
        if self.consent_at_registration() {
            flow.insert(0, TERMS.to_owned());
        }
        vec![flow]
    }

    /// Checks a localpart for a new account; `check_taken` also checks availability.
    pub async fn check_username(&self, localpart: &str, check_taken: bool) -> Result<String> {
        if localpart.is_empty() {
            return Err(invalid_username("User ID cannot be empty"));
        }
        if !valid_localpart_characters(localpart) {
            return Err(invalid_username("User ID can only contain characters a-z, 0-9, or '=_-./+'"));
        }
        if localpart.starts_with('_') && !self.config.registration.allow_underscore_prefixed_localpart {
            return Err(invalid_username("User ID may not begin with _"));
        }
        let user_id = format!("@{localpart}:{}", self.server_name());
        if user_id.len() > MAX_USER_ID_LEN {
            return Err(invalid_username(&format!(
                "User ID may not be longer than {MAX_USER_ID_LEN} characters"
            )));
        }
        if UserId::parse(&user_id).is_err() {
            return Err(invalid_username("Invalid user ID"));
        }
        if check_taken && !self.store.get_users_case_insensitive(&user_id).await?.is_empty() {
            return Err(MatrixError::new(ErrCode::UserInUse, "User ID already taken.").into());
        }
        if localpart.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid_username("Numeric user IDs are reserved for guest users."));
        }
        self.check_user_not_appservice_exclusive(&user_id, None)?;
        Ok(user_id)
    }

    /// `GET /register/available`.
    pub async fn username_available(&self, username: &str) -> Result<()> {
        self.check_username(&username.to_lowercase(), true).await.map(|_| ())
    }

    /// Applies `password_config.policy`.
    pub fn check_password_policy(&self, password: &str) -> Result<()> {
        let policy = &self.config.password.policy;
        if !policy.enabled {
            return Ok(());
        }
        let weak =
            |message: &str| -> Result<()> { Err(MatrixError::new(ErrCode::WeakPassword, message).into()) };
        if password.chars().count() < policy.minimum_length {
            return weak(&format!("The password must be at least {} characters long", policy.minimum_length));
        }
        if policy.require_digit && !password.chars().any(|c| c.is_ascii_digit()) {
            return weak("The password must include at least one digit");
        }
        if policy.require_symbol && !password.chars().any(|c| !c.is_alphanumeric()) {
            return weak("The password must include at least one symbol");
        }
        if policy.require_uppercase && !password.chars().any(char::is_uppercase) {
            return weak("The password must include at least one uppercase letter");
        }
        if policy.require_lowercase && !password.chars().any(char::is_lowercase) {
            return weak("The password must include at least one lowercase letter");
        }
        Ok(())
    }

    /// `POST /register`.
    pub async fn register(&self, request: RegistrationRequest) -> Result<Registered> {
        let address = request.client_ip.clone().unwrap_or_default();
        self.ratelimit_key(Limiter::Registration, &address, false)?;
        if request.guest {
            return self.register_guest(request).await;
        }
        let registration = &self.config.registration;
        if !registration.enable_registration {
            return Err(MatrixError::forbidden("Registration has been disabled").into());
        }
        self.check_auth_blocking(None).await?;
        let username = request.username.as_ref().map(|u| u.to_lowercase());
        if let Some(username) = &username {
            self.check_username(username, !registration.inhibit_user_in_use_error).await?;
        }
        if let Some(password) = &request.password {
            if password.len() > 512 {
                return Err(MatrixError::invalid_param("Invalid password").into());
            }
            self.check_password_policy(password)?;
        }
        // A password given before auth completes is kept (hashed) in the session.
        let mut first_data = json!({});
        if request.auth.is_none()
            && let Some(password) = &request.password
        {
            first_data["password_hash"] = json!(self.passwords.hash(password).await?);
        }
        let completed = self
            .check_uia(UiaRequest {
                operation: "register",
                flows: self.registration_flows(),
                auth: request.auth.as_ref(),
                requester: None,
                data: first_data,
            })
            .await?;
        let registration_token =
            completed.data.get("registration_token").and_then(Value::as_str).map(str::to_owned);
        let password_hash = match &request.password {
            Some(password) => self.passwords.hash(password).await?,
            None => match completed.data.get("password_hash").and_then(Value::as_str) {
                Some(hash) => hash.to_owned(),
                None => {
                    if let Some(token) = &registration_token {
                        self.store.release_registration_token(token).await?;
                    }
                    return Err(MatrixError::missing_param("Missing params: password").into());
                }
            },
        };
        let (localpart, user_id) = match username {
            Some(username) => {
                let user_id = self.check_username(&username, false).await?;
                (username, user_id)
            }
            None => {
                let localpart = self.generated_localpart().await?;
                let user_id = format!("@{localpart}:{}", self.server_name());
                (localpart, user_id)
            }
        };
        let new_user = NewUser {
            user_id: user_id.clone(),
            password_hash: Some(password_hash),
            displayname: Some(localpart.clone()),
            ..NewUser::default()
        };
        // The account, the token's use and the first login are written in one transaction:
        // a registration refused or failing midway leaves nothing behind and gives the
        // token's reserved use back.
        let release_token = async || {
            if let Some(token) = &registration_token
                && let Err(error) = self.store.release_registration_token(token).await
            {
                tracing::warn!(%error, "could not release a registration token's reserved use");
            }
        };
        let minted = if request.inhibit_login {
            None
        } else {
            match self.mint_login_session(
                &user_id,
                request.device_id,
                request.initial_device_display_name.as_deref(),
                request.refresh_token,
            ) {
                Ok(minted) => Some(minted),
                Err(error) => {
                    release_token().await;
                    return Err(error);
                }
            }
        };
        // The new device is a device-list change (of a user in no room yet: nobody to wake).
        let position = minted.as_ref().map(|_| self.streams.device_lists.allocate());
        let record = minted.as_ref().map(|m| m.record(position.as_ref().map(|p| p.value())));
        let created =
            match self.store.register_user(&new_user, registration_token.as_deref(), record.as_ref()).await {
                Ok(created) => created,
                Err(error) => {
                    release_token().await;
                    return Err(error.into());
                }
            };
        if let Some(position) = position {
            position.finish();
        }
        if !created {
            release_token().await;
            return Err(MatrixError::new(ErrCode::UserInUse, "User ID already taken.").into());
        }
        self.ratelimit_key(Limiter::Registration, &address, true)?;
        tracing::info!(%user_id, "registered a new user");
        if completed.completed.iter().any(|stage| stage == TERMS) {
            self.record_registration_consent(&user_id).await?;
        }
        self.after_registration(&user_id, false).await;
        Ok(Registered { user_id, session: minted.map(|m| m.session) })
    }

    async fn generated_localpart(&self) -> Result<String> {
        loop {
            let candidate = self.store.next_generated_localpart().await?.to_string();
            let user_id = format!("@{candidate}:{}", self.server_name());
            if self.store.get_users_case_insensitive(&user_id).await?.is_empty() {
                return Ok(candidate);
            }
        }
    }

    async fn register_guest(&self, request: RegistrationRequest) -> Result<Registered> {
        if !self.config.registration.allow_guest_access {
            return Err(MatrixError::new(ErrCode::GuestAccessForbidden, "Guest access is disabled").into());
        }
        let localpart = self.generated_localpart().await?;
        let user_id = format!("@{localpart}:{}", self.server_name());
        let minted = self.mint_login_session(
            &user_id,
            request.device_id,
            request.initial_device_display_name.as_deref(),
            false,
        )?;
        let new_user = NewUser { user_id: user_id.clone(), is_guest: true, ..NewUser::default() };
        let position = self.streams.device_lists.allocate();
        let created =
            self.store.register_user(&new_user, None, Some(&minted.record(Some(position.value())))).await?;
        position.finish();
        if !created {
            return Err(MatrixError::new(ErrCode::UserInUse, "User ID already taken.").into());
        }
        let address = request.client_ip.clone().unwrap_or_default();
        self.ratelimit_key(Limiter::Registration, &address, true)?;
        self.after_registration(&user_id, true).await;
        Ok(Registered { user_id, session: Some(minted.session) })
    }

    /// Work that follows every new account: `auto_join_rooms`, unless consent is required
    /// at registration and not given yet (then consent joins them, as Synapse's
    /// `post_consent_actions`).
    pub(crate) async fn after_registration(&self, user_id: &str, is_guest: bool) {
        if self.consent_at_registration() && !self.has_consented(user_id).await {
            tracing::info!(%user_id, "skipping auto-join until the user consents to the privacy policy");
            return;
        }
        self.join_auto_join_rooms(user_id, is_guest).await;
    }

    /// `auto_join_rooms` for a user, failures logged.
    pub(crate) async fn join_auto_join_rooms(&self, user_id: &str, is_guest: bool) {
        let Ok(user_id) = UserId::parse(user_id) else { return };
        if let Err(error) = self.auto_join_rooms(&user_id, is_guest).await {
            tracing::warn!(%user_id, %error, "auto-joining rooms failed");
        }
    }

    /// `GET /_synapse/admin/v1/register`: a fresh single-use nonce, kept in memory (see
    /// [`crate::registration_nonces`]). Synapse hands out nonces even when shared-secret
    /// registration is off and refuses them at `POST`; we refuse at once, the same way.
    pub async fn shared_secret_nonce(&self) -> Result<String> {
        if self.config.keys.registration_shared_secret.is_none() {
            return Err(shared_secret_disabled());
        }
        let nonce = hex::encode(crate::util::random_bytes::<64>());
        self.registration_nonces.insert(nonce.clone(), std::time::Instant::now());
        Ok(nonce)
    }

    /// `POST /_synapse/admin/v1/register`, with the HMAC-SHA1 MAC exactly as Synapse defines it.
    pub async fn register_with_shared_secret(
        &self,
        request: SharedSecretRegistration,
    ) -> Result<LoginSession> {
        let Some(secret) = self.config.keys.registration_shared_secret.as_deref() else {
            return Err(shared_secret_disabled());
        };
        if !self.registration_nonces.consume(&request.nonce, std::time::Instant::now()) {
            return Err(MatrixError::unknown("unrecognised nonce").into());
        }
        if request.username.len() > 512 || request.username.contains('\0') {
            return Err(MatrixError::unknown("Invalid username").into());
        }
        if request.password.len() > 512 || request.password.contains('\0') {
            return Err(MatrixError::unknown("Invalid password").into());
        }
        if let Some(user_type) = &request.user_type
            && !USER_TYPES.contains(&user_type.as_str())
        {
            return Err(MatrixError::unknown("Invalid user type").into());
        }
        let mut mac =
            <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes()).map_err(Error::internal)?;
        mac.update(request.nonce.as_bytes());
        mac.update(b"\0");
        mac.update(request.username.as_bytes());
        mac.update(b"\0");
        mac.update(request.password.as_bytes());
        mac.update(b"\0");
        mac.update(if request.admin { b"admin" } else { b"notadmin" });
        if let Some(user_type) = request.user_type.as_deref().filter(|t| !t.is_empty()) {
            mac.update(b"\0");
            mac.update(user_type.as_bytes());
        }
        let given = hex::decode(request.mac.trim()).unwrap_or_default();
        if mac.verify_slice(&given).is_err() {
            return Err(MatrixError::forbidden("HMAC incorrect").into());
        }
        let localpart = request.username.to_lowercase();
        let user_id = self.check_username(&localpart, true).await?;
        let password_hash = self.passwords.hash(&request.password).await?;
        let created = self
            .store
            .create_user(&NewUser {
                user_id: user_id.clone(),
                password_hash: Some(password_hash),
                admin: request.admin,
                user_type: request.user_type.clone(),
                displayname: Some(request.displayname.clone().unwrap_or_else(|| localpart.clone())),
                ..NewUser::default()
            })
            .await?;
        if !created {
            return Err(MatrixError::new(ErrCode::UserInUse, "User ID already taken.").into());
        }
        tracing::info!(%user_id, admin = request.admin, "registered a user with the shared secret");
        self.after_registration(&user_id, false).await;
        self.create_login_session(&user_id, None, None, request.refresh_token).await
    }

    /// The flows that confirm an existing user's identity.
    pub fn reauth_flows(&self) -> Vec<Vec<String>> {
        vec![vec![PASSWORD.to_owned()]]
    }

    /// Runs UIA for an operation on the requester's own account.
    pub async fn reauthenticate(
        &self,
        requester: &Requester,
        operation: &'static str,
        auth: Option<&Value>,
    ) -> Result<()> {
        // MSC4190: appservices manage their users' devices without user-interactive auth.
        if operation == "delete_devices" && requester.appservice_id.is_some() {
            return Ok(());
        }
        self.check_uia(UiaRequest {
            operation,
            flows: self.reauth_flows(),
            auth,
            requester: Some(requester),
            data: json!({}),
        })
        .await
        .map(|_| ())
    }

    /// `POST /account/password`.
    pub async fn change_password(
        &self,
        requester: &Requester,
        new_password: &str,
        logout_devices: bool,
        auth: Option<&Value>,
    ) -> Result<()> {
        if !self.config.password.enabled || !self.config.password.localdb_enabled {
            return Err(MatrixError::forbidden("Password changes are disabled on this server").into());
        }
        self.reauthenticate(requester, "change_password", auth).await?;
        if new_password.len() > 512 {
            return Err(MatrixError::invalid_param("Invalid password").into());
        }
        self.check_password_policy(new_password)?;
        let hash = self.passwords.hash(new_password).await?;
        self.store.set_password_hash(requester.user_id.as_str(), Some(&hash)).await?;
        if logout_devices {
            self.log_out_devices_except(&requester.user_id, requester.device_id.as_deref()).await?;
        }
        Ok(())
    }

    /// Deletes every device of `user_id` but `keep` (with their keys and inboxes, through the
    /// one deletion path) and revokes their tokens: what a password change does.
    pub(crate) async fn log_out_devices_except(&self, user_id: &UserId, keep: Option<&str>) -> Result<()> {
        let others: Vec<String> = self
            .store
            .list_devices(user_id.as_str())
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .filter(|d| Some(d.as_str()) != keep)
            .collect();
        self.delete_devices(user_id, &others).await?;
        let hashes = self.store.delete_user_tokens(user_id.as_str(), keep).await?;
        self.auth_cache.evict(&hashes);
        Ok(())
    }

    /// `POST /account/deactivate`.
    pub async fn deactivate_account(
        &self,
        requester: &Requester,
        erase: bool,
        auth: Option<&Value>,
    ) -> Result<()> {
        self.reauthenticate(requester, "deactivate", auth).await?;
        self.deactivate_user(&requester.user_id, erase).await
    }

    /// Deactivates an account: no more logins, tokens, devices or profile.
    pub async fn deactivate_user(&self, user_id: &UserId, erase: bool) -> Result<()> {
        // Leave rooms first, while the profile still names the member events.
        self.leave_all_rooms(user_id).await?;
        // Devices go through the one deletion path, with their keys and inboxes.
        let devices: Vec<String> =
            self.store.list_devices(user_id.as_str()).await?.into_iter().map(|d| d.device_id).collect();
        self.delete_devices(user_id, &devices).await?;
        self.store.deactivate_user(user_id.as_str(), erase).await?;
        self.auth_cache.evict_user(user_id);
        tracing::info!(%user_id, erase, "deactivated a user");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::valid_localpart_characters;

    #[test]
    fn localpart_characters_follow_synapse() {
        assert!(valid_localpart_characters("alice.smith_1=+/-"));
        assert!(!valid_localpart_characters("Alice"));
        assert!(!valid_localpart_characters("al ice"));
        assert!(!valid_localpart_characters("al:ice"));
        assert!(!valid_localpart_characters("ålice"));
    }
}
