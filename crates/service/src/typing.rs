//! Typing notifications: in memory, expiring on their own.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use myelin_core::MatrixError;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use crate::auth::Requester;
use crate::{Result, Services};

/// The longest a typing notification lasts.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a remote user's typing lasts without a new EDU (Synapse's `FEDERATION_TIMEOUT`).
const REMOTE_TIMEOUT: Duration = Duration::from_secs(60);

/// Who is typing where, until when; and the typing stream position of each room's last change.
#[derive(Default)]
pub struct Typing {
    rooms: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
}

#[derive(Default)]
struct RoomTyping {
    users: BTreeMap<OwnedUserId, Instant>,
    changed_at: i64,
}

impl Typing {
    /// Users typing in a room now, and the position of the last change.
    pub fn typing_in(&self, room_id: &RoomId) -> (Vec<OwnedUserId>, i64) {
        let rooms = self.rooms.lock();
        match rooms.get(room_id) {
            Some(room) => {
                let now = Instant::now();
                (
                    room.users.iter().filter(|(_, until)| **until > now).map(|(u, _)| u.clone()).collect(),
                    room.changed_at,
                )
            }
            None => (Vec::new(), 0),
        }
    }

    /// Each room whose typing changed after position `since`, with the users typing there now.
    pub fn changed_since(&self, since: i64) -> Vec<(OwnedRoomId, Vec<OwnedUserId>)> {
        let rooms = self.rooms.lock();
        let now = Instant::now();
        rooms
            .iter()
            .filter(|(_, room)| room.changed_at > since)
            .map(|(room_id, room)| {
                let users = room.users.iter().filter(|(_, until)| **until > now).map(|(u, _)| u.clone());
                (room_id.clone(), users.collect())
            })
            .collect()
    }

    /// The earliest expiry of any typing notification.
    fn next_expiry(&self) -> Option<Instant> {
        let rooms = self.rooms.lock();
        rooms.values().flat_map(|r| r.users.values()).min().copied()
    }
}

impl Services {
    /// `PUT /rooms/{roomId}/typing/{userId}`.
    pub async fn set_typing(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        user_id: &UserId,
        typing: bool,
        timeout_ms: Option<u64>,
    ) -> Result<()> {
        if requester.user_id != user_id {
            return Err(MatrixError::forbidden("Cannot set another user's typing state").into());
        }
        // A shadow-banned user's typing looks accepted but reaches nobody (as Synapse).
        if requester.shadow_banned {
            return Ok(());
        }
        if self.store.membership(room_id.as_str(), user_id.as_str()).await?.as_deref() != Some("join") {
            return Err(MatrixError::forbidden(format!("User {user_id} not in room {room_id}")).into());
        }
        let timeout = Duration::from_millis(timeout_ms.unwrap_or(30_000)).min(MAX_TIMEOUT);
        self.apply_typing(room_id, user_id, typing, timeout).await;
        self.queue_typing_edu(room_id, user_id, typing).await;
        Ok(())
    }

    /// Records that `user_id` is (or stopped) typing in a room for `timeout`, and wakes the
    /// room's local members when that changed: one path for local and remote users.
    pub(crate) async fn apply_typing(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        typing: bool,
        timeout: Duration,
    ) {
        let changed = {
            let mut rooms = self.typing.rooms.lock();
            let room = rooms.entry(room_id.to_owned()).or_default();
            let was = room.users.get(user_id).is_some_and(|until| *until > Instant::now());
            if typing {
                room.users.insert(user_id.to_owned(), Instant::now() + timeout);
            } else {
                room.users.remove(user_id);
            }
            let changed = was != typing;
            if changed {
                room.changed_at = self.streams.typing.bump();
            }
            changed
        };
        if changed {
            self.notify_room(room_id).await;
            self.typing_expiry_wakeup.notify_one();
            self.wake_appservices();
        }
    }

    /// Queues a local user's typing state for the other servers in the room (`m.typing`, the
    /// queued one of the same room and user replaced). Failures are logged: typing is
    /// ephemeral.
    async fn queue_typing_edu(&self, room_id: &RoomId, user_id: &UserId, typing: bool) {
        if user_id.server_name().as_str() != self.server_name() {
            return;
        }
        let servers = match self.servers_in_room(room_id).await {
            Ok(servers) => servers,
            Err(error) => {
                tracing::warn!(%error, %room_id, "could not read the servers of a room for typing");
                return;
            }
        };
        let content = serde_json::json!({"room_id": room_id, "user_id": user_id, "typing": typing});
        let key = format!("{room_id} {user_id}");
        for server in servers {
            if let Err(error) = self.queue_edu(&server, "m.typing", &content, Some(&key)).await {
                tracing::warn!(%error, %server, "could not queue a typing EDU");
            }
        }
    }

    /// An inbound `m.typing` from `origin`: only for the origin's own users joined to the room
    /// (and the room's ACL allowing the origin); anything else is dropped.
    pub(crate) async fn receive_typing_edu(
        &self,
        origin: &ruma::ServerName,
        content: &serde_json::Value,
    ) -> Result<()> {
        let field = |name: &str| content.get(name).and_then(serde_json::Value::as_str);
        let (Some(room_id), Some(user_id)) = (field("room_id"), field("user_id")) else {
            return Err(MatrixError::bad_json("m.typing needs room_id and user_id").into());
        };
        let (Ok(room_id), Ok(user_id)) = (RoomId::parse(room_id), UserId::parse(user_id)) else {
            return Err(MatrixError::bad_json("m.typing has a bad room_id or user_id").into());
        };
        let typing = content.get("typing").and_then(serde_json::Value::as_bool).unwrap_or(false);
        if user_id.server_name() != origin {
            tracing::info!(%origin, %user_id, "dropping a typing EDU for another server's user");
            return Ok(());
        }
        self.check_server_acl(origin, &room_id).await?;
        if self.store.membership(room_id.as_str(), user_id.as_str()).await?.as_deref() != Some("join") {
            tracing::info!(%origin, %user_id, %room_id, "dropping a typing EDU for a user not in the room");
            return Ok(());
        }
        self.apply_typing(&room_id, &user_id, typing, REMOTE_TIMEOUT).await;
        Ok(())
    }

    /// Wakes the syncs of a room's local members.
    pub async fn notify_room(&self, room_id: &RoomId) {
        match self.local_room_members(room_id).await {
            Ok(members) => self.notifier.notify_members(&members),
            Err(error) => tracing::warn!(%error, "could not load room members to notify"),
        }
    }

    /// Expires typing notifications as their timeouts pass (a background worker).
    pub(crate) async fn run_typing_expiry(self) {
        loop {
            let wait = self.typing.next_expiry().map(|at| at.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.typing_expiry_wakeup.notified() => continue,
                _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))) => {}
            }
            let (expired, stopped): (Vec<OwnedRoomId>, Vec<(OwnedRoomId, OwnedUserId)>) = {
                let now = Instant::now();
                let mut rooms = self.typing.rooms.lock();
                let mut expired = Vec::new();
                let mut stopped = Vec::new();
                for (room_id, room) in rooms.iter_mut() {
                    let before = room.users.len();
                    room.users.retain(|user_id, until| {
                        let keep = *until > now;
                        if !keep && user_id.server_name().as_str() == self.server_name() {
                            stopped.push((room_id.clone(), user_id.clone()));
                        }
                        keep
                    });
                    if room.users.len() != before {
                        room.changed_at = self.streams.typing.bump();
                        expired.push(room_id.clone());
                    }
                }
                rooms.retain(|_, room| !room.users.is_empty() || room.changed_at > 0);
                (expired, stopped)
            };
            if !expired.is_empty() {
                self.wake_appservices();
            }
            for room_id in expired {
                self.notify_room(&room_id).await;
            }
            // Other servers learn that a local user stopped typing (as Synapse tells them).
            for (room_id, user_id) in stopped {
                self.queue_typing_edu(&room_id, &user_id, false).await;
            }
        }
    }
}
