//! Stream positions and the notifier.
//!
//! Every stream (room events, account data, receipts, presence, typing) hands out increasing
//! positions. A position is *published* (becomes part of `current()`) only once every lower
//! position is persisted too, so a reader never skips something that commits late.
//!
//! The [`Notifier`] wakes long-polling syncs: per user, and per room for the room's local
//! members (cached, refreshed when membership changes).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::Notify;

/// Positions of one stream.
///
/// A position handed out by [`Stream::allocate`] is a [`Position`] guard: it is published by
/// [`Position::finish`] once its write is persisted, and released by its `Drop` otherwise (a
/// failed write, or a request future dropped at an `.await`). Either way `current()` moves on:
/// no abandoned position can hold back everything after it. Releases are announced through
/// [`Stream::abandoned`], so that whatever was waiting on the positions above it is told.
pub struct Stream {
    shared: Arc<StreamShared>,
}

struct StreamShared {
    inner: Mutex<StreamInner>,
    /// Signalled (one stored permit) when a position is released without being finished.
    abandoned: Notify,
}

struct StreamInner {
    next: i64,
    in_flight: BTreeSet<i64>,
    current: i64,
}

impl StreamShared {
    /// Marks a position done; returns the new current position.
    fn done(&self, position: i64) -> i64 {
        let mut inner = self.inner.lock();
        inner.in_flight.remove(&position);
        let current = match inner.in_flight.first() {
            Some(lowest) => lowest - 1,
            None => inner.next - 1,
        };
        inner.current = inner.current.max(current);
        inner.current
    }
}

/// A stream position in flight. Dropping it unfinished releases it.
#[must_use = "a position is published by finish() or released when dropped"]
pub struct Position {
    value: i64,
    stream: Arc<StreamShared>,
    done: bool,
}

impl Position {
    pub fn value(&self) -> i64 {
        self.value
    }

    /// Marks the position persisted; returns the stream's new current position.
    pub fn finish(mut self) -> i64 {
        self.done = true;
        self.stream.done(self.value)
    }
}

impl Drop for Position {
    fn drop(&mut self) {
        if !self.done {
            self.stream.done(self.value);
            self.stream.abandoned.notify_one();
        }
    }
}

impl std::fmt::Debug for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Position").field(&self.value).finish()
    }
}

impl Stream {
    pub fn new(max_persisted: i64) -> Stream {
        Stream {
            shared: Arc::new(StreamShared {
                inner: Mutex::new(StreamInner {
                    next: max_persisted + 1,
                    in_flight: BTreeSet::new(),
                    current: max_persisted,
                }),
                abandoned: Notify::new(),
            }),
        }
    }

    /// Hands out the next position.
    pub fn allocate(&self) -> Position {
        let mut inner = self.shared.inner.lock();
        let value = inner.next;
        inner.next = inner.next.saturating_add(1);
        inner.in_flight.insert(value);
        Position { value, stream: self.shared.clone(), done: false }
    }

    /// Allocates and immediately publishes a position (for in-memory streams).
    pub fn bump(&self) -> i64 {
        let position = self.allocate();
        let value = position.value();
        position.finish();
        value
    }

    /// The highest position below which everything is persisted.
    pub fn current(&self) -> i64 {
        self.shared.inner.lock().current
    }

    /// Positions handed out and neither finished nor released yet.
    pub fn in_flight(&self) -> usize {
        self.shared.inner.lock().in_flight.len()
    }

    /// Resolves once a position has been released unfinished since the last call (a permit
    /// is stored, so a release that happens while nobody waits is not missed).
    pub async fn abandoned(&self) {
        self.shared.abandoned.notified().await
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
        let mut users = self.users.lock();
        if users.len() > 100_000 {
            users.retain(|_, notify| Arc::strong_count(notify) > 1);
        }
        users.entry(user_id.to_owned()).or_default().clone()
    }

    pub fn notify_user(&self, user_id: &UserId) {
        let notify = self.users.lock().get(user_id).cloned();
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    /// Wakes the syncs of a room's members: walks whichever is smaller, the members or the
    /// users with a sync open.
    pub fn notify_members(&self, members: &MemberSet) {
        let users = self.users.lock();
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
        let users = self.users.lock();
        for user_id in user_ids {
            if let Some(notify) = users.get(user_id) {
                notify.notify_waiters();
            }
        }
    }

    /// Wakes every waiting sync (after a stream position was released: whatever was
    /// published behind it may concern anyone).
    pub fn notify_everyone(&self) {
        for notify in self.users.lock().values() {
            notify.notify_waiters();
        }
    }

    /// Drops every cached member list (they are reloaded from the store on next use), for
    /// when a membership change may have been persisted without being published here.
    pub fn forget_members(&self) {
        let mut cache = self.room_members.lock();
        self.member_changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cache.clear();
    }

    /// Cached local members (joined, invited, knocking) of a room, if known.
    pub fn cached_members(&self, room_id: &RoomId) -> Option<MemberSet> {
        self.room_members.lock().get(room_id).cloned()
    }

    /// The count of membership changes so far (see [`Self::cache_members`]).
    pub fn member_changes(&self) -> u64 {
        self.member_changes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Caches a room's members as loaded from the store, unless a membership change was
    /// published since `changes_before` was read.
    pub fn cache_members(&self, room_id: &RoomId, members: MemberSet, changes_before: u64) -> MemberSet {
        let mut cache = self.room_members.lock();
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
        let mut cache = self.room_members.lock();
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
    /// To-device messages (persisted in each device's inbox).
    pub to_device: Stream,
    /// Device-list changes (persisted in `device_lists_changes`, see [`crate::device_lists`]).
    pub device_lists: Stream,
}

impl UserStreams {
    pub fn new(
        account_data: i64,
        receipts: i64,
        presence: i64,
        to_device: i64,
        device_lists: i64,
    ) -> UserStreams {
        UserStreams {
            account_data: Stream::new(account_data),
            receipts: Stream::new(receipts),
            presence: Stream::new(presence),
            typing: Stream::new(0),
            to_device: Stream::new(to_device),
            device_lists: Stream::new(device_lists),
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
        assert_eq!((a.value(), b.value()), (11, 12));
        assert_eq!(b.finish(), 10, "12 waits for 11");
        assert_eq!(a.finish(), 12);
        assert_eq!(stream.bump(), 13);
        assert_eq!(stream.current(), 13);
    }

    #[test]
    fn a_dropped_position_is_released_and_announced() {
        let stream = Stream::new(0);
        let a = stream.allocate();
        let b = stream.allocate();
        assert_eq!(b.finish(), 0, "2 waits for 1");
        drop(a);
        assert_eq!(stream.current(), 2, "releasing 1 publishes 2");
        assert_eq!(stream.in_flight(), 0);
        // The release left a permit: a waiter started afterwards still hears of it.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), stream.abandoned())
                .await
                .expect("the release was announced");
        });
    }

    #[test]
    fn a_position_dropped_inside_a_cancelled_future_is_released() {
        let stream = Stream::new(0);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let write = async {
                let position = stream.allocate();
                std::future::pending::<()>().await;
                position.finish();
            };
            // The write never completes: the timeout drops it at its await point.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(1), write).await;
        });
        assert_eq!(stream.in_flight(), 0);
        assert_eq!(stream.current(), 1);
        assert_eq!(stream.bump(), 2);
    }
}
