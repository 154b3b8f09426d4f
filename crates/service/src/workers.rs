//! Background work that stops cleanly: each worker is a loop over its deadline and the
//! shutdown token.

use std::time::Duration;

use crate::Services;

/// How often housekeeping runs (it also runs once at start-up).
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(3600);
/// How long the answer to an inbound federation transaction is kept for a retry of it.
const INBOUND_TRANSACTION_LIFETIME_MS: u64 = 24 * 60 * 60 * 1000;

impl Services {
    /// Runs every background worker until shutdown.
    pub async fn run_workers(self) {
        self.resume_interrupted_admin_room_tasks().await;
        tokio::join!(
            self.clone().housekeeping(),
            self.clone().run_typing_expiry(),
            self.clone().run_presence_timeouts(),
            self.clone().run_push_delivery(),
            self.clone().run_media_worker(),
            self.clone().run_federation_sender(),
            self.clone().run_appservice_senders(),
            self.clone().run_released_positions()
        );
    }

    /// Publishes what a released stream position held back. A write whose position is
    /// released unfinished (it failed, or its future was dropped at an `.await`) may have
    /// persisted nothing, or persisted without announcing: positions above it become visible
    /// now, so every waiting sync is woken, room events held back are announced, cached member
    /// lists are reloaded and the push queue is looked at.
    async fn run_released_positions(self) {
        loop {
            let released = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.rooms.stream.abandoned() => "events",
                _ = self.streams.account_data.abandoned() => "account_data",
                _ = self.streams.receipts.abandoned() => "receipts",
                _ = self.streams.presence.abandoned() => "presence",
                _ = self.streams.to_device.abandoned() => "to_device",
                _ = self.streams.device_lists.abandoned() => "device_lists",
            };
            tracing::debug!(stream = released, "a stream position was released unfinished");
            if released == "events" {
                // A write released unfinished may have committed without the invalidations
                // its publication makes: cached member lists, memberships and room facts go.
                self.notifier.forget_members();
                self.rooms.forget_all_memberships();
                self.rooms.forget_all_room_facts();
                self.publish_events_up_to(self.rooms.stream.current()).await;
                self.push.wakeup.notify_one();
            }
            self.notifier.notify_everyone();
        }
    }

    /// Deletes stale devices (`delete_stale_devices_after`), expired UIA sessions and expired
    /// OpenID tokens.
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
            if let Err(error) = self.delete_expired_openid_tokens().await {
                tracing::warn!(%error, "could not delete expired OpenID tokens");
            }
            // Answers to inbound federation transactions are kept a day, as Synapse keeps them.
            let day_ago = crate::util::now_ms().saturating_sub(INBOUND_TRANSACTION_LIFETIME_MS) as i64;
            if let Err(error) = self.store.prune_inbound_transactions(day_ago).await {
                tracing::warn!(%error, "could not prune answered inbound federation transactions");
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(HOUSEKEEPING_INTERVAL) => {}
            }
        }
    }
}
