//! Rate limiting as Synapse does it: a leaky bucket per (limiter, key) holding up to
//! `burst_count` actions and draining at `per_second`. Requester-based limits honour the
//! per-user overrides in `ratelimit_override` (0 messages per second: unlimited).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Instant;

use crate::auth::Requester;
use myelin_config::RateLimit;
use myelin_core::MatrixError;
use myelin_store::RateLimitOverride;

use crate::{Result, Services};

/// The rate limiters, named after their configuration keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limiter {
    Message,
    Registration,
    RegistrationTokenValidity,
    LoginAddress,
    LoginAccount,
    LoginFailedAttempts,
    JoinsLocal,
    JoinsRemote,
    JoinsPerRoom,
    InvitesPerRoom,
    InvitesPerUser,
    InvitesPerIssuer,
    RoomCreation,
    Reports,
    MediaCreate,
    PresencePerUser,
    UserDirectory,
    KeyRequests,
    AdminRedaction,
}

struct Bucket {
    /// Actions counted at `start` (drains at the rate since).
    count: f64,
    start: Instant,
}

/// Leaky buckets, per process.
pub struct RateLimiter {
    buckets: Mutex<HashMap<(Limiter, String), Bucket>>,
    overrides: Mutex<HashMap<String, Option<RateLimitOverride>>>,
    epoch: Instant,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter { buckets: Mutex::default(), overrides: Mutex::default(), epoch: Instant::now() }
    }
}

impl RateLimiter {
    /// Checks (and, with `update`, records) `n` actions; returns the time to wait when over
    /// the limit.
    pub fn check(
        &self,
        limiter: Limiter,
        key: &str,
        limit: RateLimit,
        n: f64,
        update: bool,
    ) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Drop buckets that have drained completely.
            buckets.retain(|_, b| b.count > 0.0 && now.duration_since(b.start).as_secs() < 3600);
        }
        let bucket =
            buckets.entry((limiter, key.to_owned())).or_insert(Bucket { count: 0.0, start: self.epoch });
        let elapsed = now.duration_since(bucket.start).as_secs_f64();
        let performed = (bucket.count - elapsed * limit.per_second).max(0.0);
        if performed + n > limit.burst_count {
            let wait_seconds = if limit.per_second > 0.0 {
                (performed + n - limit.burst_count) / limit.per_second
            } else {
                3600.0
            };
            return Err((wait_seconds * 1000.0).ceil().max(1.0) as u64);
        }
        if update {
            bucket.count = performed + n;
            bucket.start = now;
        }
        Ok(())
    }

    /// Forgets a cached override after the admin API changed it.
    pub fn forget_override(&self, user_id: &str) {
        self.overrides.lock().remove(user_id);
    }
}

fn limit_exceeded(retry_after_ms: u64) -> crate::Error {
    MatrixError::limit_exceeded(retry_after_ms).into()
}

impl Services {
    fn limit_of(&self, limiter: Limiter) -> RateLimit {
        let rc = &self.config.ratelimit;
        match limiter {
            Limiter::Message => rc.message,
            Limiter::Registration => rc.registration,
            Limiter::RegistrationTokenValidity => rc.registration_token_validity,
            Limiter::LoginAddress => rc.login_address,
            Limiter::LoginAccount => rc.login_account,
            Limiter::LoginFailedAttempts => rc.login_failed_attempts,
            Limiter::JoinsLocal => rc.joins_local,
            Limiter::JoinsRemote => rc.joins_remote,
            Limiter::JoinsPerRoom => rc.joins_per_room,
            Limiter::InvitesPerRoom => rc.invites_per_room,
            Limiter::InvitesPerUser => rc.invites_per_user,
            Limiter::InvitesPerIssuer => rc.invites_per_issuer,
            Limiter::RoomCreation => rc.room_creation,
            Limiter::Reports => rc.reports,
            Limiter::MediaCreate => rc.media_create,
            Limiter::PresencePerUser => rc.presence_per_user,
            Limiter::UserDirectory => rc.user_directory,
            Limiter::KeyRequests => rc.key_requests,
            Limiter::AdminRedaction => rc.admin_redaction.unwrap_or(rc.message),
        }
    }

    /// A limit keyed by something other than a user (an IP address, a room, a user ID being
    /// logged into).
    pub fn ratelimit_key(&self, limiter: Limiter, key: &str, update: bool) -> Result<()> {
        self.ratelimit_key_actions(limiter, key, 1.0, update)
    }

    /// [`Self::ratelimit_key`] for `n` actions at once.
    pub fn ratelimit_key_actions(&self, limiter: Limiter, key: &str, n: f64, update: bool) -> Result<()> {
        self.ratelimiter.check(limiter, key, self.limit_of(limiter), n, update).map_err(limit_exceeded)
    }

    /// A limit on what a requester does, keyed by their user ID, honouring the user's
    /// override. Requests made with the `as_token` of an appservice registered with
    /// `rate_limited: false` are not limited (Synapse's `requester.app_service`); its users
    /// logged in with their own tokens are.
    pub async fn ratelimit_user(&self, limiter: Limiter, requester: &Requester) -> Result<()> {
        self.ratelimit_user_actions(limiter, requester, 1.0, true).await
    }

    /// [`Self::ratelimit_user`] for `n` actions at once; without `update`, only checks.
    pub async fn ratelimit_user_actions(
        &self,
        limiter: Limiter,
        requester: &Requester,
        n: f64,
        update: bool,
    ) -> Result<()> {
        if self.appservice_of(requester).is_some_and(|service| !service.rate_limited) {
            return Ok(());
        }
        let user_id = &requester.user_id;
        let cached = self.ratelimiter.overrides.lock().get(user_id.as_str()).copied();
        let user_override = match cached {
            Some(value) => value,
            None => {
                let value = self.store.get_ratelimit_override(user_id.as_str()).await?;
                let mut overrides = self.ratelimiter.overrides.lock();
                if overrides.len() > 100_000 {
                    overrides.clear();
                }
                overrides.insert(user_id.to_string(), value);
                value
            }
        };
        let limit = match user_override {
            Some(o) if o.messages_per_second == 0 => return Ok(()),
            Some(o) => {
                RateLimit { per_second: o.messages_per_second as f64, burst_count: o.burst_count as f64 }
            }
            None => self.limit_of(limiter),
        };
        self.ratelimiter.check(limiter, user_id.as_str(), limit, n, update).map_err(limit_exceeded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_with_a_retry_time() {
        let limiter = RateLimiter::default();
        let limit = RateLimit { per_second: 0.5, burst_count: 3.0 };
        for _ in 0..3 {
            assert!(limiter.check(Limiter::Message, "a", limit, 1.0, true).is_ok());
        }
        let wait = limiter.check(Limiter::Message, "a", limit, 1.0, true).unwrap_err();
        assert!((1000..=2000).contains(&wait), "{wait}");
        // Other keys and other limiters have their own buckets.
        assert!(limiter.check(Limiter::Message, "b", limit, 1.0, true).is_ok());
        assert!(limiter.check(Limiter::Registration, "a", limit, 1.0, true).is_ok());
    }

    #[test]
    fn checks_without_update_do_not_consume() {
        let limiter = RateLimiter::default();
        let limit = RateLimit { per_second: 0.0, burst_count: 1.0 };
        for _ in 0..5 {
            assert!(limiter.check(Limiter::Message, "a", limit, 1.0, false).is_ok());
        }
        assert!(limiter.check(Limiter::Message, "a", limit, 1.0, true).is_ok());
        assert!(limiter.check(Limiter::Message, "a", limit, 1.0, true).is_err());
    }
}
