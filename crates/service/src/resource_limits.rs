//! Synapse's resource limits (`myelin_config::ResourceLimitsConfig`): `hs_disabled` and the
//! monthly active user (MAU) cohort. `check_auth_blocking` is Synapse's check of the same name,
//! asked where Synapse asks it: client registration, login, `/sync`, and every local event a
//! client makes (sends, state, redactions, membership, room creation and upgrades). Users are
//! recorded in the cohort as their requests are authenticated (`note_monthly_active`), never
//! past `max_mau_value`.

use myelin_core::{ErrCode, MatrixError};
use ruma::UserId;

use crate::Services;
use crate::error::Result;
use crate::util::now_ms;

/// The cohort's window: users seen in the last 30 days.
const MONTH_MS: i64 = 30 * 24 * 60 * 60 * 1000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

impl Services {
    fn resource_limit_error(&self, message: &str, limit_type: &str) -> crate::Error {
        MatrixError::new(ErrCode::ResourceLimitExceeded, message)
            .with_extra("admin_contact", self.config.limits.admin_contact.clone())
            .with_extra("limit_type", limit_type)
            .into()
    }

    /// Whether a user is a trial user: registered less than `mau_trial_days` ago.
    fn is_trial_user(&self, created_ts: i64) -> bool {
        let trial = self.config.limits.mau_trial_days as i64 * DAY_MS;
        trial > 0 && now_ms() as i64 - created_ts < trial
    }

    /// Synapse's `check_auth_blocking`: `403 M_RESOURCE_LIMIT_EXCEEDED` when the server is
    /// disabled, or when the MAU cohort is full and `user_id` (or a new user, for `None`) is
    /// not in it. The server notices user, support users and trial users pass.
    pub(crate) async fn check_auth_blocking(&self, user_id: Option<&UserId>) -> Result<()> {
        let limits = &self.config.limits;
        if !limits.hs_disabled && !limits.limit_usage_by_mau {
            return Ok(());
        }
        let mut user = None;
        if let Some(user_id) = user_id {
            if self.server_notices_user().as_deref() == Some(user_id) {
                return Ok(());
            }
            user = self.store.get_user(user_id.as_str()).await?;
            if user.as_ref().is_some_and(|u| u.user_type.as_deref() == Some("support")) {
                return Ok(());
            }
        }
        if limits.hs_disabled {
            return Err(self.resource_limit_error(&limits.hs_disabled_message, "hs_disabled"));
        }
        let since = now_ms() as i64 - MONTH_MS;
        if let Some(user_id) = user_id {
            if self.store.monthly_active_since(user_id.as_str(), since).await?.is_some() {
                return Ok(());
            }
            if user.as_ref().is_some_and(|u| self.is_trial_user(u.created_ts)) {
                return Ok(());
            }
        }
        if self.store.monthly_active_count(since).await? >= limits.max_mau_value {
            return Err(
                self.resource_limit_error("Monthly Active User Limit Exceeded", "monthly_active_user")
            );
        }
        Ok(())
    }

    /// Records an authenticated user in the MAU cohort (Synapse's
    /// `populate_monthly_active_users`): not guests, support or trial users, and a new member
    /// only while the cohort has room under `limit_usage_by_mau`. Awaited by the request (at
    /// most once per device every two minutes), so that its own checks see it; a failure is
    /// logged, never the request's.
    pub(crate) async fn note_monthly_active(&self, user_id: &UserId) {
        let limits = &self.config.limits;
        if !limits.tracks_monthly_active() {
            return;
        }
        let result = async {
            let Some(user) = self.store.get_user(user_id.as_str()).await? else { return Ok(()) };
            if user.is_guest
                || user.user_type.as_deref() == Some("support")
                || self.is_trial_user(user.created_ts)
            {
                return Ok(());
            }
            let now = now_ms() as i64;
            let limit = limits.limit_usage_by_mau.then_some(limits.max_mau_value);
            self.store.record_monthly_active(user_id.as_str(), now, now - MONTH_MS, limit).await?;
            Ok::<_, crate::Error>(())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(%error, "could not record a monthly active user");
        }
    }
}
