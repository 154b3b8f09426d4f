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
        }
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
            let expired: Vec<OwnedRoomId> = {
                let now = Instant::now();
                let mut rooms = self.typing.rooms.lock();
                let mut expired = Vec::new();
                for (room_id, room) in rooms.iter_mut() {
                    let before = room.users.len();
                    room.users.retain(|_, until| *until > now);
                    if room.users.len() != before {
                        room.changed_at = self.streams.typing.bump();
                        expired.push(room_id.clone());
                    }
                }
                rooms.retain(|_, room| !room.users.is_empty() || room.changed_at > 0);
                expired
            };
            for room_id in expired {
                self.notify_room(&room_id).await;
            }
        }
    }
}
