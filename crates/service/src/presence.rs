//! Presence: set explicitly or by syncing, idling to `unavailable` and going `offline` on
//! their own, visible to users who share a room.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use myelin_core::MatrixError;
use myelin_store::PresenceRecord;
use ruma::{OwnedUserId, ServerName, UserId};
use serde_json::{Value, json};

use crate::auth::Requester;
use crate::util::now_ms;
use crate::{Result, Services};

/// The content of a user's `m.presence` as of `now` (ms), as `/sync`, appservice transactions
/// and `m.presence` EDUs carry it (Synapse's `format_user_presence_state`): only an `online`
/// user is `currently_active`.
pub fn presence_content(record: &PresenceRecord, now: i64) -> serde_json::Map<String, Value> {
    let mut content = serde_json::Map::new();
    content.insert("presence".to_owned(), json!(record.state));
    content.insert("last_active_ago".to_owned(), json!((now - record.last_active_ts).max(0)));
    content.insert("currently_active".to_owned(), json!(record.currently_active && record.state == "online"));
    if let Some(status_msg) = &record.status_msg {
        content.insert("status_msg".to_owned(), json!(status_msg));
    }
    content
}

/// A user's `m.presence` event as of `now` (ms), the sender naming the user.
pub fn presence_event(record: &PresenceRecord, now: i64) -> Value {
    json!({"type": "m.presence", "sender": record.user_id, "content": presence_content(record, now)})
}

/// Without activity for this long, an online user becomes unavailable.
pub const IDLE_AFTER_MS: i64 = 5 * 60 * 1000;
/// Without syncing for this long, a user goes offline.
pub const OFFLINE_AFTER_MS: i64 = 30 * 1000;
/// Without an update from its server for this long, a remote user goes offline.
pub const REMOTE_OFFLINE_AFTER_MS: i64 = 30 * 60 * 1000;

/// Up to how many users [`Services::presence_visible_to`] asks one by one whether they share
/// a room with the viewer (past it, every user sharing a room is read at once).
const USERS_ASKED_ONE_BY_ONE: usize = 16;

/// Syncs in progress per user (a long-polling sync counts as being online).
#[derive(Default)]
pub struct ActiveSyncs {
    counts: Mutex<HashMap<OwnedUserId, usize>>,
}

/// A sync in progress: counted from [`ActiveSyncs::start`] until dropped, however the sync
/// ends (returned, failed, or abandoned by its client at an `.await`).
pub struct ActiveSync {
    syncs: Arc<ActiveSyncs>,
    user_id: OwnedUserId,
}

impl Drop for ActiveSync {
    fn drop(&mut self) {
        self.syncs.end(&self.user_id);
    }
}

impl ActiveSyncs {
    pub fn start(self: &Arc<Self>, user_id: &UserId) -> ActiveSync {
        *self.counts.lock().entry(user_id.to_owned()).or_default() += 1;
        ActiveSync { syncs: self.clone(), user_id: user_id.to_owned() }
    }

    /// Whether any sync of the user is in progress.
    pub fn is_syncing(&self, user_id: &UserId) -> bool {
        self.counts.lock().contains_key(user_id)
    }

    fn end(&self, user_id: &UserId) {
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(user_id) {
            *count -= 1;
            if *count == 0 {
                counts.remove(user_id);
            }
        }
    }

    fn syncing(&self, user_id: &str) -> bool {
        UserId::parse(user_id).is_ok_and(|user_id| self.is_syncing(&user_id))
    }
}

impl Services {
    /// Writes a presence change and wakes the users who can see it.
    async fn store_presence(&self, mut record: PresenceRecord) -> Result<()> {
        let position = self.streams.presence.allocate();
        record.stream_id = position.value();
        self.store.set_presence(&record).await?;
        position.finish();
        let watchers = self.store.users_sharing_rooms(&record.user_id).await?;
        let mut watchers: Vec<OwnedUserId> = watchers.iter().filter_map(|u| UserId::parse(u).ok()).collect();
        if let Ok(user) = UserId::parse(&record.user_id) {
            if user.server_name().as_str() == self.server_name() {
                self.queue_presence_edu(&record, &watchers).await;
            }
            watchers.push(user);
        }
        self.notifier.notify_users(watchers.iter().map(|u| u.as_ref()));
        self.wake_appservices();
        Ok(())
    }

    /// Queues a local user's presence for every other server with a user sharing a room
    /// (`m.presence`, the queued one of the same user replaced).
    async fn queue_presence_edu(&self, record: &PresenceRecord, watchers: &[OwnedUserId]) {
        let mut servers: Vec<&str> = watchers.iter().map(|user| user.server_name().as_str()).collect();
        servers.sort_unstable();
        servers.dedup();
        let mut update = presence_content(record, now_ms() as i64);
        update.insert("user_id".to_owned(), json!(record.user_id));
        let content = json!({"push": [update]});
        for server in servers {
            if let Err(error) = self.queue_edu(server, "m.presence", &content, Some(&record.user_id)).await {
                tracing::warn!(%error, %server, "could not queue a presence EDU");
            }
        }
    }

    /// An inbound `m.presence` from `origin`: updates of the origin's own users who share a
    /// room with a local user are stored as local presence is, and reach those users. Others
    /// are dropped; nothing is stored with presence off.
    pub(crate) async fn receive_presence_edu(&self, origin: &ServerName, content: &Value) -> Result<()> {
        if !self.config.presence.enabled {
            return Ok(());
        }
        let Some(updates) = content.get("push").and_then(Value::as_array) else {
            return Err(MatrixError::bad_json("m.presence needs a `push` array").into());
        };
        let now = now_ms() as i64;
        for update in updates {
            let Some(user_id) =
                update.get("user_id").and_then(Value::as_str).and_then(|u| UserId::parse(u).ok())
            else {
                continue;
            };
            if user_id.server_name() != origin {
                tracing::info!(%origin, %user_id, "dropping presence of another server's user");
                continue;
            }
            let state = update.get("presence").and_then(Value::as_str).unwrap_or_default();
            if !matches!(state, "online" | "offline" | "unavailable") {
                continue;
            }
            let sharing = self.store.users_sharing_rooms(user_id.as_str()).await?;
            let ours = |user: &String| {
                UserId::parse(user).is_ok_and(|u| u.server_name().as_str() == self.server_name())
            };
            if !sharing.iter().any(ours) {
                tracing::debug!(%origin, %user_id, "dropping presence of a user sharing no room here");
                continue;
            }
            let last_active_ago = update.get("last_active_ago").and_then(Value::as_i64).unwrap_or(0).max(0);
            let record = PresenceRecord {
                user_id: user_id.to_string(),
                state: state.to_owned(),
                status_msg: update.get("status_msg").and_then(Value::as_str).map(str::to_owned),
                last_active_ts: now - last_active_ago,
                // For a remote user: when its server last told us.
                last_user_sync_ts: now,
                currently_active: update.get("currently_active").and_then(Value::as_bool).unwrap_or(false),
                stream_id: 0,
            };
            self.store_presence(record).await?;
        }
        Ok(())
    }

    /// `PUT /presence/{userId}/status`.
    pub async fn set_presence(
        &self,
        requester: &Requester,
        user_id: &UserId,
        state: &str,
        status_msg: Option<String>,
    ) -> Result<()> {
        if requester.user_id != user_id {
            return Err(MatrixError::forbidden("Can only set your own presence state").into());
        }
        if !matches!(state, "online" | "offline" | "unavailable") {
            return Err(MatrixError::invalid_param(format!("Invalid presence state {state:?}")).into());
        }
        if !self.config.presence.enabled {
            return Ok(());
        }
        let now = now_ms() as i64;
        let previous = self.store.get_presence(user_id.as_str()).await?;
        let record = PresenceRecord {
            user_id: user_id.to_string(),
            state: state.to_owned(),
            status_msg,
            last_active_ts: if state == "online" {
                now
            } else {
                previous.as_ref().map_or(now, |p| p.last_active_ts)
            },
            last_user_sync_ts: previous.as_ref().map_or(now, |p| p.last_user_sync_ts),
            currently_active: state == "online",
            stream_id: 0,
        };
        self.store_presence(record).await
    }

    /// Which of `users` `viewer` may see the presence of, the one rule for every way presence
    /// is read (`/sync`, the status endpoint): themselves and the users they share a room with.
    /// Users are asked one by one when they are few (an incremental sync's news), else every
    /// user sharing a room with the viewer is read at once.
    pub(crate) async fn presence_visible_to<'a>(
        &self,
        viewer: &UserId,
        users: impl Iterator<Item = &'a str>,
    ) -> Result<HashSet<&'a str>> {
        let (mine, others): (HashSet<&str>, HashSet<&str>) = users.partition(|u| *u == viewer.as_str());
        let mut visible = mine;
        if others.len() <= USERS_ASKED_ONE_BY_ONE {
            for other in others {
                if self.store.share_a_room(viewer.as_str(), other).await? {
                    visible.insert(other);
                }
            }
        } else {
            let sharing: HashSet<String> =
                self.store.users_sharing_rooms(viewer.as_str()).await?.into_iter().collect();
            visible.extend(others.into_iter().filter(|u| sharing.contains(*u)));
        }
        Ok(visible)
    }

    /// `GET /presence/{userId}/status`.
    pub async fn get_presence(&self, requester: &Requester, user_id: &UserId) -> Result<PresenceRecord> {
        if self.presence_visible_to(&requester.user_id, std::iter::once(user_id.as_str())).await?.is_empty() {
            return Err(MatrixError::forbidden("You are not allowed to see their presence").into());
        }
        if self.store.get_user(user_id.as_str()).await?.is_none()
            && user_id.server_name().as_str() == self.server_name()
        {
            return Err(MatrixError::not_found("Unknown user").into());
        }
        let offline = || PresenceRecord {
            user_id: user_id.to_string(),
            state: "offline".to_owned(),
            status_msg: None,
            last_active_ts: 0,
            last_user_sync_ts: 0,
            currently_active: false,
            stream_id: 0,
        };
        if !self.config.presence.enabled {
            return Ok(offline());
        }
        Ok(self.store.get_presence(user_id.as_str()).await?.unwrap_or_else(offline))
    }

    /// A sync with `set_presence` (default `online`).
    pub async fn presence_from_sync(&self, user_id: &UserId, set_presence: &str) -> Result<()> {
        if !self.config.presence.enabled {
            return Ok(());
        }
        let now = now_ms() as i64;
        let previous = self.store.get_presence(user_id.as_str()).await?;
        let state = match set_presence {
            "offline" => return Ok(()),
            "unavailable" => "unavailable",
            _ => match &previous {
                // An explicit unavailable stays while syncing; offline comes back online.
                Some(p) if p.state == "unavailable" && !p.currently_active => "unavailable",
                _ => "online",
            },
        };
        match previous {
            Some(p) if p.state == state && now - p.last_user_sync_ts < 10_000 => Ok(()),
            Some(p) if p.state == state => {
                // Only the sync time moved: no stream position, nobody to wake.
                let record = PresenceRecord { last_user_sync_ts: now, ..p };
                Ok(self.store.set_presence(&record).await?)
            }
            previous => {
                let record = PresenceRecord {
                    user_id: user_id.to_string(),
                    state: state.to_owned(),
                    status_msg: previous.as_ref().and_then(|p| p.status_msg.clone()),
                    last_active_ts: if state == "online" {
                        now
                    } else {
                        previous.as_ref().map_or(now, |p| p.last_active_ts)
                    },
                    last_user_sync_ts: now,
                    currently_active: state == "online",
                    stream_id: 0,
                };
                self.store_presence(record).await
            }
        }
    }

    /// Moves idle users to unavailable and gone users to offline (a background worker).
    pub(crate) async fn run_presence_timeouts(self) {
        if !self.config.presence.enabled {
            return;
        }
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            let now = now_ms() as i64;
            let stale = match self.store.stale_presence(now - OFFLINE_AFTER_MS.min(IDLE_AFTER_MS)).await {
                Ok(stale) => stale,
                Err(error) => {
                    tracing::warn!(%error, "could not read presence");
                    continue;
                }
            };
            for record in stale {
                if UserId::parse(&record.user_id)
                    .is_ok_and(|u| u.server_name().as_str() != self.server_name())
                {
                    // A remote user's server keeps us told; without a word for
                    // REMOTE_OFFLINE_AFTER_MS, the user is taken as offline (as Synapse).
                    if record.state != "offline" && now - record.last_user_sync_ts > REMOTE_OFFLINE_AFTER_MS {
                        let record =
                            PresenceRecord { state: "offline".to_owned(), currently_active: false, ..record };
                        if let Err(error) = self.store_presence(record).await {
                            tracing::warn!(%error, "could not update presence");
                        }
                    }
                    continue;
                }
                let syncing = self.active_syncs.syncing(&record.user_id);
                let new_state = if !syncing && now - record.last_user_sync_ts > OFFLINE_AFTER_MS {
                    "offline"
                } else if record.state == "online" && now - record.last_active_ts > IDLE_AFTER_MS {
                    "unavailable"
                } else {
                    continue;
                };
                if new_state == record.state {
                    continue;
                }
                let record =
                    PresenceRecord { state: new_state.to_owned(), currently_active: false, ..record };
                if let Err(error) = self.store_presence(record).await {
                    tracing::warn!(%error, "could not update presence");
                }
            }
        }
    }
}
