//! Registration tokens (`registration_requires_token`), managed through the admin API.

use myelin_core::MatrixError;
use myelin_store::RegistrationTokenRecord;

use crate::ratelimit::Limiter;
use crate::util::now_ms;
use crate::{Result, Services};

/// Characters a registration token may use (the spec's grammar).
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 64
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// A new token: given, or generated with `length` characters.
pub struct NewRegistrationToken {
    pub token: Option<String>,
    pub length: Option<i64>,
    pub uses_allowed: Option<i64>,
    pub expiry_time: Option<i64>,
}

/// Changes to a token; `Some(None)` clears a limit.
pub struct TokenUpdate {
    pub uses_allowed: Option<Option<i64>>,
    pub expiry_time: Option<Option<i64>>,
}

fn check_limits(uses_allowed: Option<i64>, expiry_time: Option<i64>) -> Result<()> {
    if uses_allowed.is_some_and(|n| n < 0) {
        return Err(MatrixError::invalid_param("uses_allowed must be a non-negative integer or null").into());
    }
    if expiry_time.is_some_and(|t| t < now_ms() as i64) {
        return Err(MatrixError::invalid_param("expiry_time must not be in the past").into());
    }
    Ok(())
}

impl Services {
    /// `GET /register/m.login.registration_token/validity`.
    pub async fn registration_token_valid(&self, token: &str, client_ip: Option<&str>) -> Result<bool> {
        self.ratelimit_key(Limiter::RegistrationTokenValidity, client_ip.unwrap_or_default(), true)?;
        if !valid_token(token) {
            return Ok(false);
        }
        let record = self.store.get_registration_token(token).await?;
        Ok(record.is_some_and(|r| r.is_valid(now_ms() as i64)))
    }

    pub async fn list_registration_tokens(
        &self,
        valid: Option<bool>,
    ) -> Result<Vec<RegistrationTokenRecord>> {
        let now = now_ms() as i64;
        let tokens = self.store.list_registration_tokens().await?;
        Ok(tokens.into_iter().filter(|t| valid.is_none_or(|v| t.is_valid(now) == v)).collect())
    }

    pub async fn get_registration_token(&self, token: &str) -> Result<RegistrationTokenRecord> {
        self.store
            .get_registration_token(token)
            .await?
            .ok_or_else(|| MatrixError::not_found(format!("No such registration token: {token}")).into())
    }

    pub async fn create_registration_token(
        &self,
        request: NewRegistrationToken,
    ) -> Result<RegistrationTokenRecord> {
        check_limits(request.uses_allowed, request.expiry_time)?;
        let token = match (request.token, request.length) {
            (Some(_), Some(_)) => {
                return Err(MatrixError::invalid_param("give either token or length, not both").into());
            }
            (Some(token), None) => {
                if !valid_token(&token) {
                    return Err(MatrixError::invalid_param(
                        "token must be 1-64 characters from A-Z, a-z, 0-9, '.', '_', '~' and '-'",
                    )
                    .into());
                }
                token
            }
            (None, length) => {
                let length = length.unwrap_or(16);
                if !(1..=64).contains(&length) {
                    return Err(MatrixError::invalid_param("length must be an integer from 1 to 64").into());
                }
                crate::util::random_string(length as usize)
            }
        };
        let record = RegistrationTokenRecord {
            token: token.clone(),
            uses_allowed: request.uses_allowed,
            pending: 0,
            completed: 0,
            expiry_time: request.expiry_time,
        };
        if !self.store.create_registration_token(&record).await? {
            return Err(MatrixError::invalid_param(format!("Token already exists: {token}")).into());
        }
        Ok(record)
    }

    pub async fn update_registration_token(
        &self,
        token: &str,
        update: TokenUpdate,
    ) -> Result<RegistrationTokenRecord> {
        check_limits(update.uses_allowed.flatten(), update.expiry_time.flatten())?;
        self.store
            .update_registration_token(token, update.uses_allowed, update.expiry_time)
            .await?
            .ok_or_else(|| MatrixError::not_found(format!("No such registration token: {token}")).into())
    }

    pub async fn delete_registration_token(&self, token: &str) -> Result<()> {
        if !self.store.delete_registration_token(token).await? {
            return Err(MatrixError::not_found(format!("No such registration token: {token}")).into());
        }
        Ok(())
    }

    pub async fn get_ratelimit_override(
        &self,
        user_id: &ruma::UserId,
    ) -> Result<Option<myelin_store::RateLimitOverride>> {
        Ok(self.store.get_ratelimit_override(user_id.as_str()).await?)
    }

    pub async fn set_ratelimit_override(
        &self,
        user_id: &ruma::UserId,
        value: Option<myelin_store::RateLimitOverride>,
    ) -> Result<()> {
        if self.store.get_user(user_id.as_str()).await?.is_none() {
            return Err(MatrixError::not_found("User not found").into());
        }
        self.store.set_ratelimit_override(user_id.as_str(), value).await?;
        self.ratelimiter.forget_override(user_id.as_str());
        Ok(())
    }
}
