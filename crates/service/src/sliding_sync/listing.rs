//! Each user's rooms as sliding sync lists them, kept from one request to the next.
//!
//! Working out a user's room list reads something of every room they are in (its head, its
//! bump stamp, whether it is encrypted) and sorts them: for a user in thousands of rooms that
//! is most of an answer with nothing new. A [`RoomList`] worked out at one position is kept and
//! used again at a later one when it still holds:
//!
//! - the user's memberships are the same cached list (`rooms::user_rooms`: any change to them,
//!   and forgetting a room, replaces it) and none was left out for being unpublished;
//! - `m.direct` reads the same (not read again while no account data was written since);
//! - the rooms with a new event since are known (`Rooms::rooms_changed_since`, noted by the
//!   write path before the event's position is published, so a reader at a position never
//!   misses one at or before it): those rooms alone are worked out again, and the list sorted.
//!
//! Otherwise it is worked out afresh. Whether a room the user left themselves is listed depends
//! on the request (newly left since its `pos`): that is decided per request ([`RoomsView`]).
//!
//! Bounded: the lists of the most recently served users, at most [`MAX_ENTRIES`] rooms over
//! all of them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use myelin_store::PositionedMembership;
use parking_lot::Mutex;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::lists::RoomEntry;

/// The most rooms held over all users' lists (a few hundred bytes each).
const MAX_ENTRIES: usize = 200_000;

/// One user's rooms, worked out at one position.
pub(crate) struct RoomList {
    /// The event position it holds at (moved on when nothing in it changed since).
    pub built_at: AtomicI64,
    /// The change log's generation when it was begun.
    pub generation: u64,
    /// The memberships it was worked out of.
    pub memberships: Arc<Vec<PositionedMembership>>,
    /// The `m.direct` account data it was worked out with.
    pub direct: Option<String>,
    /// The newest account data stream position `direct` is known to hold at (read there, or
    /// read the same there): while it is still the current one, `m.direct` is not read again.
    pub direct_at: AtomicI64,
    /// The earliest position of a membership left out for being after `built_at`.
    pub unpublished_membership: Option<i64>,
    /// Rooms left out because their head could not be found.
    pub missing: HashSet<OwnedRoomId>,
    /// Names the set of rooms (`index`'s keys): a list worked out afresh gets a new one
    /// ([`Listings::new_rooms_id`]), a list brought forward keeps it. Never 0.
    pub rooms_id: u64,
    /// How many of the rooms the user left themselves (listed only while newly left).
    pub left_by_self: usize,
    /// The rooms, in no order; `index` finds one, `order` sorts them. A persistent vector: a
    /// list brought forward shares it with the one before but for the rooms that changed.
    pub rooms: imbl::Vector<Arc<RoomEntry>>,
    pub index: Arc<HashMap<OwnedRoomId, usize>>,
    /// Indices into `rooms`, newest bump stamp first (then by room ID), each with its room's
    /// bump stamp (sorting reads no room but those of equal bump stamps).
    pub order: Vec<(i64, usize)>,
}

impl RoomList {
    pub fn built_at(&self) -> i64 {
        self.built_at.load(Ordering::Acquire)
    }

    pub fn direct_at(&self) -> i64 {
        self.direct_at.load(Ordering::Acquire)
    }

    /// Notes that `direct` is what `m.direct` read at account data position `position`.
    pub fn direct_holds_at(&self, position: i64) {
        self.direct_at.fetch_max(position, Ordering::AcqRel);
    }

    /// Moves the list on to `now`: nothing in it changed since its position.
    pub fn advance(&self, now: i64) {
        self.built_at.fetch_max(now, Ordering::AcqRel);
    }

    /// Sorts `rooms` into `order`. `changed`: the rooms replaced since `order` was last sorted
    /// (`None`: it was not). A list brought forward with a few of its rooms moved sorts again
    /// from the order it holds, which costs about one pass over it.
    pub fn sort(&mut self, changed: Option<&[usize]>) {
        let rooms = &self.rooms;
        match changed {
            Some(changed) if self.order.len() == rooms.len() && changed.len() <= 16 => {
                for (bump, index) in &mut self.order {
                    if changed.contains(index) {
                        *bump = rooms[*index].bump_stamp;
                    }
                }
            }
            _ => self.order = rooms.iter().enumerate().map(|(i, room)| (room.bump_stamp, i)).collect(),
        }
        self.order.sort_by(|(bump_a, a), (bump_b, b)| {
            bump_b.cmp(bump_a).then_with(|| rooms[*a].room_id.cmp(&rooms[*b].room_id))
        });
    }

    /// Whether the list may serve a request at `now`, as far as can be told without the change
    /// log.
    pub fn holds_for(
        &self,
        memberships: &Arc<Vec<PositionedMembership>>,
        direct: &Option<String>,
        now: i64,
    ) -> bool {
        self.built_at() <= now
            && Arc::ptr_eq(&self.memberships, memberships)
            && self.unpublished_membership.is_none_or(|position| now < position)
            && self.direct == *direct
    }
}

/// One request's view of a user's rooms: the kept list, and the rooms the user left since the
/// request's `pos` (listed once more).
pub(crate) struct RoomsView {
    pub list: Arc<RoomList>,
    pub newly_left: HashSet<String>,
}

impl RoomsView {
    pub fn get(&self, room_id: &RoomId) -> Option<&RoomEntry> {
        self.list.index.get(room_id).map(|&i| &*self.list.rooms[i])
    }

    /// Every room, newest bump stamp first.
    pub fn sorted(&self) -> impl Iterator<Item = &RoomEntry> {
        self.list.order.iter().map(|&(_, i)| &*self.list.rooms[i])
    }

    /// The `n`th room, newest bump stamp first.
    pub fn nth(&self, n: usize) -> Option<&RoomEntry> {
        self.list.order.get(n).map(|&(_, i)| &*self.list.rooms[i])
    }

    /// Whether lists show every room (none was left by the user themselves).
    pub fn all_listed(&self) -> bool {
        self.list.left_by_self == 0
    }

    /// Whether lists show the room: a room the user left themselves only while newly left.
    pub fn listed(&self, room: &RoomEntry) -> bool {
        !room.left_by_self || self.newly_left.contains(room.room_id.as_str())
    }
}

/// The kept lists, by user.
pub(crate) struct Listings {
    inner: Mutex<Inner>,
    /// The last [`RoomList::rooms_id`] given.
    rooms_ids: AtomicU64,
}

struct Inner {
    lists: lru::LruCache<OwnedUserId, Arc<RoomList>>,
    /// Rooms held over all lists.
    held: usize,
}

impl Default for Listings {
    fn default() -> Self {
        Listings {
            inner: Mutex::new(Inner { lists: lru::LruCache::unbounded(), held: 0 }),
            rooms_ids: AtomicU64::new(0),
        }
    }
}

impl Listings {
    /// A [`RoomList::rooms_id`] not given before.
    pub fn new_rooms_id(&self) -> u64 {
        self.rooms_ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn get(&self, user_id: &UserId) -> Option<Arc<RoomList>> {
        self.inner.lock().lists.get(user_id).cloned()
    }

    /// Keeps `list` for the user, unless one kept meanwhile holds at a later position.
    pub fn keep(&self, user_id: &UserId, list: Arc<RoomList>) {
        let mut inner = self.inner.lock();
        if inner.lists.peek(user_id).is_some_and(|kept| kept.built_at() > list.built_at()) {
            return;
        }
        inner.held += list.rooms.len();
        if let Some(old) = inner.lists.put(user_id.to_owned(), list) {
            inner.held -= old.rooms.len();
        }
        while inner.held > MAX_ENTRIES {
            let Some((_, out)) = inner.lists.pop_lru() else { break };
            inner.held -= out.rooms.len();
        }
    }
}
