//! Background work that stops cleanly: each worker is a loop over its deadline and the
//! shutdown token.

use std::time::Duration;

use crate::Services;

/// How often housekeeping runs (it also runs once at start-up).
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(3600);

impl Services {
    /// Runs every background worker until shutdown.
    pub async fn run_workers(self) {
        tokio::join!(
            self.clone().housekeeping(),
            self.clone().run_typing_expiry(),
            self.clone().run_presence_timeouts(),
            self.clone().run_push_delivery()
        );
    }

    /// Deletes stale devices (`delete_stale_devices_after`) and expired UIA sessions.
    async fn housekeeping(self) {
        loop {
            match self.delete_stale_devices().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "deleted stale devices"),
                Err(error) => tracing::warn!(%error, "could not delete stale devices"),
            }
            let expired_before = crate::util::now_ms().saturating_sub(crate::uia::SESSION_LIFETIME_MS) as i64;
            if let Err(error) = self.store.delete_expired_uia_sessions(expired_before).await {
                tracing::warn!(%error, "could not delete expired UIA sessions");
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(HOUSEKEEPING_INTERVAL) => {}
            }
        }
    }
}
