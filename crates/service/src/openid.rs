//! OpenID tokens (`/user/{userId}/openid/request_token`): a token a user hands to a third
//! party, which asks this server who it belongs to (`/_matrix/federation/v1/openid/userinfo`).
//!
//! Valid for [`TOKEN_LIFETIME_MS`] as in Synapse, stored (as the SHA-256 of the token, like
//! access tokens) in the store's `open_id_tokens`, so that a token outlives a restart and any
//! process sharing the database answers for it; housekeeping deletes expired ones.

use ruma::{OwnedUserId, UserId};

use crate::auth::hash_token;
use crate::util::random_string;
use crate::{Error, Result, Services};

/// How long a token is valid (Synapse: one hour).
pub const TOKEN_LIFETIME_MS: u64 = 60 * 60 * 1000;

/// A token handed out.
#[derive(Clone, Debug)]
pub struct OpenIdToken {
    pub access_token: String,
    pub expires_in_ms: u64,
}

impl Services {
    /// `POST /user/{userId}/openid/request_token`: a token for the requester (only for
    /// themselves: `M_FORBIDDEN` otherwise).
    pub async fn request_openid_token(&self, requester: &UserId, user_id: &UserId) -> Result<OpenIdToken> {
        if requester != user_id {
            return Err(myelin_core::MatrixError::forbidden("Cannot request tokens for other users.").into());
        }
        let access_token = random_string(32);
        let valid_until = crate::util::now_ms().saturating_add(TOKEN_LIFETIME_MS);
        self.store
            .insert_open_id_token(&hash_token(&access_token), user_id.as_str(), clamp_i64(valid_until))
            .await?;
        Ok(OpenIdToken { access_token, expires_in_ms: TOKEN_LIFETIME_MS })
    }

    /// `GET /_matrix/federation/v1/openid/userinfo`: the user a valid token belongs to.
    pub async fn openid_userinfo(&self, token: &str) -> Result<OwnedUserId> {
        let unknown = || myelin_core::MatrixError::unknown_token("Access Token unknown or expired");
        let user =
            self.store.open_id_token_user(&hash_token(token), clamp_i64(crate::util::now_ms())).await?;
        let user = user.ok_or_else(unknown)?;
        UserId::parse(&user).map_err(Error::internal)
    }

    /// Deletes the tokens that expired (housekeeping); returns how many.
    pub(crate) async fn delete_expired_openid_tokens(&self) -> Result<u64> {
        Ok(self.store.delete_expired_open_id_tokens(clamp_i64(crate::util::now_ms())).await?)
    }
}

fn clamp_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}
