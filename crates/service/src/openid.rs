//! OpenID tokens (`/user/{userId}/openid/request_token`): a token a user hands to a third
//! party, which asks this server who it belongs to (`/_matrix/federation/v1/openid/userinfo`).
//!
//! Kept in memory, valid for [`TOKEN_LIFETIME_MS`] as in Synapse; at most [`MAX_TOKENS`] are
//! kept, the oldest forgotten first. A restart (or another process) forgets them: the third
//! party asks the user for a new one. Synapse keeps them in a table (`open_id_tokens`); a
//! migration would make them outlive a restart.

use std::num::NonZeroUsize;

use lru::LruCache;
use parking_lot::Mutex;
use ruma::{OwnedUserId, UserId};

use crate::util::random_string;
use crate::{Result, Services};

/// How long a token is valid (Synapse: one hour).
pub const TOKEN_LIFETIME_MS: u64 = 60 * 60 * 1000;

/// The most tokens kept at once.
pub const MAX_TOKENS: usize = 100_000;

/// A token handed out.
#[derive(Clone, Debug)]
pub struct OpenIdToken {
    pub access_token: String,
    pub expires_in_ms: u64,
}

/// Outstanding tokens, each with its user and when it expires.
pub struct OpenIdTokens {
    tokens: Mutex<LruCache<String, (OwnedUserId, u64)>>,
}

impl Default for OpenIdTokens {
    fn default() -> Self {
        OpenIdTokens::new(MAX_TOKENS)
    }
}

impl OpenIdTokens {
    pub fn new(capacity: usize) -> OpenIdTokens {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        OpenIdTokens { tokens: Mutex::new(LruCache::new(capacity)) }
    }

    /// A new token for `user_id`, valid from `now_ms` for [`TOKEN_LIFETIME_MS`].
    pub fn issue(&self, user_id: &UserId, now_ms: u64) -> OpenIdToken {
        let access_token = random_string(32);
        let expires_at = now_ms.saturating_add(TOKEN_LIFETIME_MS);
        let mut tokens = self.tokens.lock();
        // Expired tokens go first (the oldest are at the back).
        while let Some((_, (_, expiry))) = tokens.peek_lru() {
            if *expiry > now_ms {
                break;
            }
            tokens.pop_lru();
        }
        tokens.push(access_token.clone(), (user_id.to_owned(), expires_at));
        OpenIdToken { access_token, expires_in_ms: TOKEN_LIFETIME_MS }
    }

    /// The user a token was issued to, if it is known and not expired at `now_ms`.
    pub fn user_of(&self, token: &str, now_ms: u64) -> Option<OwnedUserId> {
        let tokens = self.tokens.lock();
        let (user_id, expires_at) = tokens.peek(token)?;
        (*expires_at > now_ms).then(|| user_id.clone())
    }
}

impl Services {
    /// `POST /user/{userId}/openid/request_token`: a token for the requester (only for
    /// themselves: `M_FORBIDDEN` otherwise).
    pub fn request_openid_token(&self, requester: &UserId, user_id: &UserId) -> Result<OpenIdToken> {
        if requester != user_id {
            return Err(myelin_core::MatrixError::forbidden("Cannot request tokens for other users.").into());
        }
        Ok(self.openid.issue(user_id, crate::util::now_ms()))
    }

    /// `GET /_matrix/federation/v1/openid/userinfo`: the user a valid token belongs to.
    pub fn openid_userinfo(&self, token: &str) -> Result<OwnedUserId> {
        self.openid
            .user_of(token, crate::util::now_ms())
            .ok_or_else(|| myelin_core::MatrixError::unknown_token("Access Token unknown or expired").into())
    }
}

#[cfg(test)]
mod tests {
    use ruma::user_id;

    use super::{OpenIdTokens, TOKEN_LIFETIME_MS};

    #[test]
    fn tokens_last_an_hour_and_are_per_user() {
        let tokens = OpenIdTokens::default();
        let alice = tokens.issue(user_id!("@alice:x"), 1_000);
        let bob = tokens.issue(user_id!("@bob:x"), 1_000);
        assert_ne!(alice.access_token, bob.access_token);
        assert_eq!(alice.expires_in_ms, TOKEN_LIFETIME_MS);
        assert_eq!(tokens.user_of(&alice.access_token, 1_000).as_deref(), Some(user_id!("@alice:x")));
        assert_eq!(
            tokens.user_of(&bob.access_token, 1_000 + TOKEN_LIFETIME_MS - 1).as_deref(),
            Some(user_id!("@bob:x"))
        );
        assert_eq!(tokens.user_of(&bob.access_token, 1_000 + TOKEN_LIFETIME_MS), None);
        assert_eq!(tokens.user_of("unknown", 1_000), None);
    }

    #[test]
    fn the_oldest_tokens_go_when_full_and_expired_ones_first() {
        let tokens = OpenIdTokens::new(2);
        let first = tokens.issue(user_id!("@a:x"), 0);
        let second = tokens.issue(user_id!("@b:x"), TOKEN_LIFETIME_MS);
        // `first` expired: it goes, `second` stays.
        let third = tokens.issue(user_id!("@c:x"), TOKEN_LIFETIME_MS + 1);
        assert_eq!(tokens.user_of(&first.access_token, 0), None);
        assert!(tokens.user_of(&second.access_token, TOKEN_LIFETIME_MS + 1).is_some());
        assert!(tokens.user_of(&third.access_token, TOKEN_LIFETIME_MS + 1).is_some());
    }
}
