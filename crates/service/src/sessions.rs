//! Login sessions: issuing access and refresh tokens for a device, password and token login,
//! refresh, logout, and short-lived login tokens.

use myelin_core::{ErrCode, MatrixError};
use myelin_store::{NewAccessToken, NewLoginSession, NewRefreshToken};
use ruma::UserId;

use crate::auth::{hash_token, mint_token, new_device_id};
use crate::ratelimit::Limiter;
use crate::util::now_ms;
use crate::{Error, Result, Services};

/// What a client gets after registering or logging in.
#[derive(Clone, Debug)]
pub struct LoginSession {
    pub user_id: String,
    pub access_token: String,
    pub device_id: String,
    pub refresh_token: Option<String>,
    pub expires_in_ms: Option<u64>,
}

/// A login session minted but not stored yet.
pub(crate) struct MintedSession {
    pub(crate) session: LoginSession,
    access_token_hash: String,
    valid_until_ms: Option<i64>,
    /// The refresh token's hash, expiry and the session's ultimate expiry.
    refresh: Option<(String, Option<i64>, Option<i64>)>,
    device_display_name: Option<String>,
}

impl MintedSession {
    /// What the store writes for it; a new device is a device-list change at
    /// `device_list_stream_id` (`None` when the device exists already).
    pub(crate) fn record(&self, device_list_stream_id: Option<i64>) -> NewLoginSession<'_> {
        let session = &self.session;
        NewLoginSession {
            device_id: &session.device_id,
            device_display_name: self.device_display_name.as_deref(),
            access_token: NewAccessToken {
                token_hash: &self.access_token_hash,
                user_id: &session.user_id,
                device_id: Some(&session.device_id),
                valid_until_ms: self.valid_until_ms,
                refresh_token_hash: self.refresh.as_ref().map(|(hash, _, _)| hash.as_str()),
                puppets_user_id: None,
            },
            refresh_token: self.refresh.as_ref().map(|(hash, expiry, ultimate)| NewRefreshToken {
                token_hash: hash,
                expiry_ts: *expiry,
                ultimate_session_expiry_ts: *ultimate,
            }),
            device_list_stream_id,
        }
    }
}

/// How a client proves who it is at `/login`.
#[derive(Clone, Debug)]
pub enum LoginCredentials {
    Password {
        user: String,
        password: String,
    },
    Token {
        token: String,
    },
    /// `m.login.application_service`: the appservice's `as_token` and the user to log in.
    Appservice {
        token: Option<String>,
        user: String,
    },
}

/// A `/login` request.
#[derive(Clone, Debug)]
pub struct LoginRequest {
    pub credentials: LoginCredentials,
    pub device_id: Option<String>,
    pub initial_device_display_name: Option<String>,
    pub refresh_token: bool,
    pub client_ip: Option<String>,
}

/// Devices IDs longer than this are refused (Synapse's limit).
pub(crate) const MAX_DEVICE_ID_LEN: usize = 512;

fn localpart_of(user_id: &str) -> &str {
    user_id.trim_start_matches('@').split(':').next().unwrap_or_default()
}

impl Services {
    /// Whether refresh tokens are on (they are unless `refreshable_access_token_lifetime` is
    /// explicitly null).
    pub fn refresh_tokens_enabled(&self) -> bool {
        self.config.registration.refreshable_access_token_lifetime.is_some()
    }

    /// Creates (or reuses) a device and issues its tokens.
    pub async fn create_login_session(
        &self,
        user_id: &str,
        device_id: Option<String>,
        display_name: Option<&str>,
        want_refresh: bool,
    ) -> Result<LoginSession> {
        let minted = self.mint_login_session(user_id, device_id, display_name, want_refresh)?;
        let position = self.streams.device_lists.allocate();
        self.store.store_login_session(&minted.record(Some(position.value()))).await?;
        if let Ok(user_id) = UserId::parse(user_id) {
            self.publish_device_list_change(position, &user_id).await;
        }
        Ok(minted.session)
    }

    /// A new login session's device and tokens, checked and minted but not stored yet: the
    /// caller stores [`MintedSession::record`], alone or with other writes (registration).
    pub(crate) fn mint_login_session(
        &self,
        user_id: &str,
        device_id: Option<String>,
        display_name: Option<&str>,
        want_refresh: bool,
    ) -> Result<MintedSession> {
        let device_id = match device_id {
            Some(id) if id.is_empty() || id.len() > MAX_DEVICE_ID_LEN => {
                return Err(MatrixError::invalid_param("Invalid device_id").into());
            }
            Some(id) => id,
            None => new_device_id(),
        };
        let mut minted =
            self.mint_tokens(user_id, &device_id, want_refresh && self.refresh_tokens_enabled(), None);
        minted.device_display_name = display_name.map(str::to_owned);
        Ok(minted)
    }

    /// Issues an access token (and optionally a refresh token) for an existing device.
    async fn issue_tokens(
        &self,
        user_id: &str,
        device_id: &str,
        with_refresh: bool,
        ultimate_expiry: Option<i64>,
    ) -> Result<LoginSession> {
        let minted = self.mint_tokens(user_id, device_id, with_refresh, ultimate_expiry);
        self.store.store_login_session(&minted.record(None)).await?;
        Ok(minted.session)
    }

    /// Mints an access token (and optionally a refresh token) for a device.
    fn mint_tokens(
        &self,
        user_id: &str,
        device_id: &str,
        with_refresh: bool,
        ultimate_expiry: Option<i64>,
    ) -> MintedSession {
        let registration = &self.config.registration;
        let now = now_ms() as i64;
        let ultimate_expiry =
            ultimate_expiry.or_else(|| registration.session_lifetime.map(|d| now + d.0 as i64));
        let localpart = localpart_of(user_id);
        let access_token = mint_token("myt", localpart);
        let lifetime = if with_refresh {
            registration.refreshable_access_token_lifetime
        } else {
            registration.nonrefreshable_access_token_lifetime
        };
        let mut valid_until = lifetime.map(|d| now + d.0 as i64);
        if let Some(ultimate) = ultimate_expiry {
            valid_until = Some(valid_until.map_or(ultimate, |v| v.min(ultimate)));
        }
        let refresh_token = if with_refresh { Some(mint_token("myr", localpart)) } else { None };
        let refresh = refresh_token.as_deref().map(|token| {
            let mut expiry = registration.refresh_token_lifetime.map(|d| now + d.0 as i64);
            if let Some(ultimate) = ultimate_expiry {
                expiry = Some(expiry.map_or(ultimate, |v| v.min(ultimate)));
            }
            (hash_token(token), expiry, ultimate_expiry)
        });
        MintedSession {
            access_token_hash: hash_token(&access_token),
            valid_until_ms: valid_until,
            refresh,
            device_display_name: None,
            session: LoginSession {
                user_id: user_id.to_owned(),
                access_token,
                device_id: device_id.to_owned(),
                refresh_token,
                expires_in_ms: valid_until.map(|until| (until - now).max(0) as u64),
            },
        }
    }

    /// Finds the account a login names: a full user ID or a localpart, matched
    /// case-insensitively as Synapse does.
    async fn resolve_login_user(&self, user: &str) -> Result<Option<myelin_store::UserRecord>> {
        let user_id = self.qualify_user_id(user);
        let mut matches = self.store.get_users_case_insensitive(&user_id).await?;
        Ok(match matches.len() {
            0 => None,
            1 => matches.pop(),
            // Several accounts differ only by case (legacy data): only an exact match logs in.
            _ => matches.into_iter().find(|u| u.user_id == user_id),
        })
    }

    /// Refuses a password attempt on an account while too many attempts on it failed recently
    /// (`rc_login.failed_attempts`, keyed by the lowercased user ID). Every password check
    /// goes through it: `/login` and user-interactive auth's `m.login.password`.
    pub(crate) fn check_failed_password_attempts(&self, user_id: &str) -> Result<()> {
        self.ratelimit_key(Limiter::LoginFailedAttempts, &user_id.to_lowercase(), false)
    }

    /// Counts a failed password attempt on an account; refuses it (429) when it is one too
    /// many.
    pub(crate) fn record_failed_password_attempt(&self, user_id: &str) -> Result<()> {
        self.ratelimit_key(Limiter::LoginFailedAttempts, &user_id.to_lowercase(), true)
    }

    /// `POST /login`.
    pub async fn login(&self, request: LoginRequest) -> Result<LoginSession> {
        let address = request.client_ip.clone().unwrap_or_default();
        self.ratelimit_key(Limiter::LoginAddress, &address, true)?;
        let user_id = match &request.credentials {
            LoginCredentials::Password { user, password } => {
                let password_config = &self.config.password;
                if !password_config.enabled
                    || password_config.only_for_reauth
                    || !password_config.localdb_enabled
                {
                    return Err(MatrixError::unknown("Password login is disabled on this server").into());
                }
                let qualified = self.qualify_user_id(user);
                self.ratelimit_key(Limiter::LoginAccount, &qualified.to_lowercase(), true)?;
                self.check_failed_password_attempts(&qualified)?;
                let account = self.resolve_login_user(user).await?;
                let valid = match account.as_ref().and_then(|a| a.password_hash.as_deref()) {
                    Some(hash) => self.passwords.verify(password, hash).await,
                    None => false,
                };
                let Some(account) = account.filter(|_| valid) else {
                    self.record_failed_password_attempt(&qualified)?;
                    return Err(MatrixError::forbidden("Invalid username or password").into());
                };
                if account.deactivated {
                    return Err(MatrixError::new(
                        ErrCode::UserDeactivated,
                        "This account has been deactivated",
                    )
                    .into());
                }
                account.user_id
            }
            LoginCredentials::Appservice { token, user } => {
                self.appservice_login_user(token.as_deref(), user).await?
            }
            LoginCredentials::Token { token } => {
                let user_id = self
                    .store
                    .consume_login_token(&hash_token(token), now_ms() as i64)
                    .await?
                    .ok_or_else(|| MatrixError::forbidden("Invalid login token"))?;
                let account = self
                    .store
                    .get_user(&user_id)
                    .await?
                    .ok_or_else(|| MatrixError::forbidden("Invalid login token"))?;
                if account.deactivated {
                    return Err(MatrixError::new(
                        ErrCode::UserDeactivated,
                        "This account has been deactivated",
                    )
                    .into());
                }
                user_id
            }
        };
        if let Ok(parsed) = UserId::parse(user_id.as_str()) {
            self.check_auth_blocking(Some(&parsed)).await?;
        }
        self.create_login_session(
            &user_id,
            request.device_id,
            request.initial_device_display_name.as_deref(),
            request.refresh_token,
        )
        .await
    }

    /// `POST /refresh`: trades a refresh token for a new access and refresh token. The old
    /// refresh token stays usable until the new pair is used.
    pub async fn refresh(&self, refresh_token: &str) -> Result<LoginSession> {
        let hash = hash_token(refresh_token);
        let unknown = || -> Error {
            MatrixError::new(ErrCode::UnknownToken, "Invalid refresh token")
                .with_extra("soft_logout", false)
                .into()
        };
        let record = self.store.get_refresh_token(&hash).await?.ok_or_else(unknown)?;
        let now = now_ms() as i64;
        if record.expiry_ts.is_some_and(|expiry| expiry <= now) {
            return Err(MatrixError::new(ErrCode::UnknownToken, "The refresh token has expired")
                .with_extra("soft_logout", true)
                .into());
        }
        // Using a refresh token revokes the one before it.
        self.store.revoke_refresh_token_predecessor(&hash).await?;
        let session = self
            .issue_tokens(&record.user_id, &record.device_id, true, record.ultimate_session_expiry_ts)
            .await?;
        if let Some(new_refresh) = &session.refresh_token {
            self.store.replace_refresh_token_successor(&hash, &hash_token(new_refresh)).await?;
        }
        Ok(session)
    }

    /// `POST /logout`: ends this device's session (the device and its tokens go).
    pub async fn logout(&self, requester: &crate::auth::Requester) -> Result<()> {
        match &requester.device_id {
            Some(device_id) => {
                self.delete_devices(&requester.user_id, std::slice::from_ref(device_id)).await?
            }
            None => {
                self.store.delete_access_token(&requester.token_hash).await?;
                self.auth_cache.evict(std::slice::from_ref(&requester.token_hash));
            }
        }
        Ok(())
    }

    /// `POST /logout/all`: every device and token of the user.
    pub async fn logout_all(&self, user_id: &UserId) -> Result<()> {
        let devices: Vec<String> =
            self.store.list_devices(user_id.as_str()).await?.into_iter().map(|d| d.device_id).collect();
        self.delete_devices(user_id, &devices).await?;
        let hashes = self.store.delete_user_tokens(user_id.as_str(), None).await?;
        self.auth_cache.evict(&hashes);
        self.auth_cache.evict_user(user_id);
        Ok(())
    }

    /// Mints a single-use login token for `user_id`, valid for `login_via_existing_session`'s
    /// `token_timeout`.
    pub async fn create_login_token(&self, user_id: &UserId) -> Result<(String, u64)> {
        let timeout = self.config.registration.login_via_existing_session_token_timeout.0;
        let token = mint_token("myl", user_id.localpart());
        self.store
            .insert_login_token(&hash_token(&token), user_id.as_str(), (now_ms() + timeout) as i64)
            .await?;
        Ok((token, timeout))
    }
}
