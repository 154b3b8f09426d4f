//! Stream positions and the notifier.
//!
//! Every stream (room events, account data, receipts, presence, typing) hands out increasing
//! positions. A position is *published* (becomes part of `current()`) only once every lower
//! position is persisted too, so a reader never skips something that commits late.
//!
//! The [`Notifier`] wakes long-polling syncs: per user, and per room for the room's local
//! members (cached, refreshed when membership changes).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::Notify;

/// Positions of one stream.
pub struct Stream {
    inner: Mutex<StreamInner>,
}

struct StreamInner {
    next: i64,
    in_flight: BTreeSet<i64>,
    current: i64,
}

impl Stream {
    pub fn new(max_persisted: i64) -> Stream {
        Stream {
            inner: Mutex::new(StreamInner {
                next: max_persisted + 1,
                in_flight: BTreeSet::new(),
                current: max_persisted,
            }),
        }
    }

    pub fn allocate(&self) -> i64 {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let position = inner.next;
        inner.next += 1;
        inner.in_flight.insert(position);
        position
    }

    /// Marks a position done (persisted, or abandoned after a failure); returns the new
    /// current position.
    pub fn finish(&self, position: i64) -> i64 {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.in_flight.remove(&position);
        let current = match inner.in_flight.first() {
            Some(lowest) => lowest - 1,
            None => inner.next - 1,
        };
        inner.current = inner.current.max(current);
        inner.current
    }

    /// Allocates and immediately publishes a position (for in-memory streams).
    pub fn bump(&self) -> i64 {
        let position = self.allocate();
        self.finish(position);
        position
    }

    /// The highest position below which everything is persisted.
    pub fn current(&self) -> i64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).current
    }
}

/// Wakes syncs of the users something happened to.
#[derive(Default)]
pub struct Notifier {
    users: Mutex<HashMap<OwnedUserId, Arc<Notify>>>,
    room_members: Mutex<HashMap<OwnedRoomId, MemberSet>>,
    /// Counts membership changes, so that a member list loaded from the store while one
    /// was being published is not cached (it may predate the change).
    member_changes: std::sync::atomic::AtomicU64,
}

/// A room's local members (joined, invited, knocking), with O(1) clones.
pub type MemberSet = imbl::OrdSet<OwnedUserId>;

impl Notifier {
    /// The handle a user's sync waits on.
    pub fn listener(&self, user_id: &UserId) -> Arc<Notify> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if users.len() > 100_000 {
            users.retain(|_, notify| Arc::strong_count(notify) > 1);
        }
        users.entry(user_id.to_owned()).or_default().clone()
    }

    pub fn notify_user(&self, user_id: &UserId) {
        let notify = self.users.lock().unwrap_or_else(|e| e.into_inner()).get(user_id).cloned();
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    /// Wakes the syncs of a room's members: walks whichever is smaller, the members or the
    /// users with a sync open.
    pub fn notify_members(&self, members: &MemberSet) {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if users.len() < members.len() {
            for (user_id, notify) in users.iter() {
                if members.contains(user_id) {
                    notify.notify_waiters();
                }
            }
        } else {
            for user_id in members {
                if let Some(notify) = users.get(user_id) {
                    notify.notify_waiters();
                }
            }
        }
    }

    pub fn notify_users<'a>(&self, user_ids: impl IntoIterator<Item = &'a UserId>) {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        for user_id in user_ids {
            if let Some(notify) = users.get(user_id) {
                notify.notify_waiters();
            }
        }
    }

    /// Cached local members (joined, invited, knocking) of a room, if known.
    pub fn cached_members(&self, room_id: &RoomId) -> Option<MemberSet> {
        self.room_members.lock().unwrap_or_else(|e| e.into_inner()).get(room_id).cloned()
    }

    /// The count of membership changes so far (see [`Self::cache_members`]).
    pub fn member_changes(&self) -> u64 {
        self.member_changes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Caches a room's members as loaded from the store, unless a membership change was
    /// published since `changes_before` was read.
    pub fn cache_members(&self, room_id: &RoomId, members: MemberSet, changes_before: u64) -> MemberSet {
        let mut cache = self.room_members.lock().unwrap_or_else(|e| e.into_inner());
        if self.member_changes() != changes_before {
            return members;
        }
        if cache.len() > 50_000 {
            cache.clear();
        }
        cache.insert(room_id.to_owned(), members.clone());
        members
    }

    /// Applies a published membership change of a local user to the cached members (called
    /// in stream order).
    pub fn apply_membership(&self, room_id: &RoomId, user_id: &UserId, membership: &str) {
        let mut cache = self.room_members.lock().unwrap_or_else(|e| e.into_inner());
        self.member_changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(members) = cache.get_mut(room_id) {
            if matches!(membership, "join" | "invite" | "knock") {
                members.insert(user_id.to_owned());
            } else {
                members.remove(user_id);
            }
        }
    }
}

/// The per-user streams besides room events.
pub struct UserStreams {
    pub account_data: Stream,
    pub receipts: Stream,
    pub presence: Stream,
    /// In memory: typing notifications are not persisted.
    pub typing: Stream,
    /// Reserved for to-device messages and device lists (end-to-end encryption).
    pub to_device: Stream,
    pub device_lists: Stream,
}

impl UserStreams {
    pub fn new(account_data: i64, receipts: i64, presence: i64) -> UserStreams {
        UserStreams {
            account_data: Stream::new(account_data),
            receipts: Stream::new(receipts),
            presence: Stream::new(presence),
            typing: Stream::new(0),
            to_device: Stream::new(0),
            device_lists: Stream::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Stream;

    #[test]
    fn positions_publish_only_when_everything_below_is_done() {
        let stream = Stream::new(10);
        let a = stream.allocate();
        let b = stream.allocate();
        assert_eq!((a, b), (11, 12));
        assert_eq!(stream.finish(b), 10, "12 waits for 11");
        assert_eq!(stream.finish(a), 12);
        assert_eq!(stream.bump(), 13);
        assert_eq!(stream.current(), 13);
    }
}
