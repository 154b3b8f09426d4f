//! Each local user's memberships, cached: the current-state membership of every room the
//! user has one in, with its event's stream position and sender (what sliding sync lists and
//! `/sync` walks on every request, read once instead of once per request).
//!
//! The write path invalidates a user's entry when a committed event may change one of their
//! current-state memberships, after the commit and before the event's position is published
//! ([`Services::publish_staged`](crate::Services)): their own membership events, the member rows a
//! remote event's state resolution changed, and every entry when a room's whole state is
//! replaced (a remote join) or purged. A reader that misses takes a [`Ticket`] before reading
//! the store and may only fill the entry if nothing invalidated it meanwhile, so a read that
//! began before a commit never leaves the state before it behind.
//!
//! Bounded: at most [`MAX_MEMBERSHIPS`] memberships and [`MAX_USERS`] users are held; the
//! least recently used go first.

use std::sync::Arc;

use myelin_store::PositionedMembership;
use parking_lot::Mutex;
use ruma::{OwnedUserId, UserId};

/// The most memberships held over all users (about 200 bytes each).
const MAX_MEMBERSHIPS: usize = 200_000;
/// The most users held (with or without their memberships).
const MAX_USERS: usize = 100_000;

/// The cached memberships of each local user.
pub struct UserRooms {
    inner: Mutex<Inner>,
}

struct Inner {
    entries: lru::LruCache<OwnedUserId, Entry>,
    /// Memberships held over all entries.
    held: usize,
    /// Counts evictions and clears: an entry that went away took its epoch with it.
    generation: u64,
}

#[derive(Default)]
struct Entry {
    /// Counts the entry's invalidations.
    epoch: u64,
    rooms: Option<Arc<Vec<PositionedMembership>>>,
}

/// What a reader that missed saw, to fill the entry with only if it still holds.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    epoch: Option<u64>,
    generation: u64,
}

impl Default for UserRooms {
    fn default() -> Self {
        UserRooms { inner: Mutex::new(Inner { entries: lru::LruCache::unbounded(), held: 0, generation: 0 }) }
    }
}

impl Inner {
    fn evict_while_over(&mut self) {
        while self.held > MAX_MEMBERSHIPS || self.entries.len() > MAX_USERS {
            let Some((_, out)) = self.entries.pop_lru() else { break };
            self.held -= out.rooms.map_or(0, |r| r.len());
            self.generation += 1;
        }
    }
}

impl UserRooms {
    /// The user's memberships, or the ticket to fill them with after reading the store.
    pub fn get(&self, user_id: &UserId) -> Result<Arc<Vec<PositionedMembership>>, Ticket> {
        let mut inner = self.inner.lock();
        let generation = inner.generation;
        match inner.entries.get(user_id) {
            Some(Entry { rooms: Some(rooms), .. }) => Ok(rooms.clone()),
            Some(entry) => Err(Ticket { epoch: Some(entry.epoch), generation }),
            None => Err(Ticket { epoch: None, generation }),
        }
    }

    /// Fills the user's entry with what was read from the store after `ticket` was taken,
    /// unless an invalidation came in between.
    pub fn fill(&self, user_id: &UserId, ticket: Ticket, rooms: Arc<Vec<PositionedMembership>>) {
        let mut inner = self.inner.lock();
        if inner.generation != ticket.generation {
            return;
        }
        let epoch = inner.entries.peek(user_id).map(|e| e.epoch);
        if epoch != ticket.epoch {
            return;
        }
        inner.held += rooms.len();
        let old =
            inner.entries.push(user_id.to_owned(), Entry { epoch: epoch.unwrap_or(0), rooms: Some(rooms) });
        if let Some((_, old)) = old {
            inner.held -= old.rooms.map_or(0, |r| r.len());
        }
        inner.evict_while_over();
    }

    /// Forgets the user's memberships (one may have changed).
    pub fn invalidate(&self, user_id: &UserId) {
        let mut inner = self.inner.lock();
        let dropped = match inner.entries.get_mut(user_id) {
            Some(entry) => {
                entry.epoch += 1;
                entry.rooms.take().map_or(0, |r| r.len())
            }
            None => {
                inner.entries.push(user_id.to_owned(), Entry { epoch: 1, rooms: None });
                0
            }
        };
        inner.held -= dropped;
        inner.evict_while_over();
    }

    /// Forgets every user's memberships.
    pub fn clear(&self) {
        let mut inner = self.inner.lock();
        inner.entries.clear();
        inner.held = 0;
        inner.generation += 1;
    }
}

impl crate::Services {
    /// The user's current-state memberships with their positions, from the cache (read from
    /// the store on a miss); what `/sync` and sliding sync go through.
    pub(crate) async fn user_memberships_cached(
        &self,
        user_id: &UserId,
    ) -> crate::Result<Arc<Vec<PositionedMembership>>> {
        match self.rooms.user_rooms.get(user_id) {
            Ok(rooms) => Ok(rooms),
            Err(ticket) => {
                let rooms = Arc::new(self.store.user_memberships_positioned(user_id.as_str()).await?);
                self.rooms.user_rooms.fill(user_id, ticket, rooms.clone());
                Ok(rooms)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::user_id;

    fn rooms(n: usize) -> Arc<Vec<PositionedMembership>> {
        Arc::new(
            (0..n)
                .map(|i| PositionedMembership {
                    room_id: format!("!{i}:x"),
                    membership: "join".into(),
                    event_id: format!("${i}"),
                    stream_ordering: i as i64,
                    sender: "@a:x".into(),
                })
                .collect(),
        )
    }

    #[test]
    fn a_fill_after_an_invalidation_is_refused() {
        let cache = UserRooms::default();
        let alice = user_id!("@alice:x");
        let ticket = cache.get(alice).unwrap_err();
        cache.invalidate(alice);
        cache.fill(alice, ticket, rooms(2));
        let ticket = cache.get(alice).expect_err("the read began before the invalidation");
        cache.fill(alice, ticket, rooms(3));
        assert_eq!(cache.get(alice).expect("filled").len(), 3);
        // Invalidating a filled entry empties it; a clear refuses tickets taken before it.
        cache.invalidate(alice);
        let ticket = cache.get(alice).unwrap_err();
        cache.clear();
        cache.fill(alice, ticket, rooms(1));
        assert!(cache.get(alice).is_err());
    }

    #[test]
    fn memberships_held_are_bounded() {
        let cache = UserRooms::default();
        for i in 0..5 {
            let user = UserId::parse(format!("@u{i}:x")).unwrap();
            let ticket = cache.get(&user).unwrap_err();
            cache.fill(&user, ticket, rooms(MAX_MEMBERSHIPS / 2));
        }
        let inner = cache.inner.lock();
        assert!(inner.held <= MAX_MEMBERSHIPS && inner.entries.len() == 2, "{}", inner.held);
    }
}
