//! Each local user's memberships, cached: the current-state membership of every room the
//! user has one in, with its event's stream position and sender (what sliding sync lists and
//! `/sync` walks on every request, read once instead of once per request).
//!
//! The write path invalidates a user's entry when a committed event may change one of their
//! current-state memberships, after the commit and before the event's position is published
//! ([`Services::publish_staged`](crate::Services)): their own membership events, the member rows a
//! remote event's state resolution changed, and every entry when a room's whole state is
//! replaced (a remote join) or purged. A reader that misses may only fill the entry if nothing
//! invalidated it meanwhile ([`super::ticketed`]), so a read that began before a commit never
//! leaves the state before it behind.
//!
//! Bounded: at most [`MAX_MEMBERSHIPS`] memberships and [`MAX_USERS`] users are held; the
//! least recently used go first.

use std::sync::Arc;

use myelin_store::PositionedMembership;
use ruma::{OwnedUserId, UserId};

use super::ticketed::Ticketed;

/// The most memberships held over all users (about 200 bytes each).
const MAX_MEMBERSHIPS: usize = 200_000;
/// The most users held (with or without their memberships).
const MAX_USERS: usize = 100_000;

/// The cached memberships of each local user (see [`super::ticketed`]).
pub type UserRooms = Ticketed<OwnedUserId, Vec<PositionedMembership>>;

impl Default for UserRooms {
    fn default() -> Self {
        Ticketed::new(MAX_MEMBERSHIPS, MAX_USERS)
    }
}

impl crate::Services {
    /// The user's current-state memberships with their positions, by room ID, from the cache
    /// (read from the store on a miss); what `/sync` and sliding sync go through.
    pub(crate) async fn user_memberships_cached(
        &self,
        user_id: &UserId,
    ) -> crate::Result<Arc<Vec<PositionedMembership>>> {
        match self.rooms.user_rooms.get(user_id) {
            Ok(rooms) => Ok(rooms),
            Err(ticket) => {
                let mut rooms = self.store.user_memberships_positioned(user_id.as_str()).await?;
                // By room ID as Rust orders strings (the database's collation may differ).
                rooms.sort_unstable_by(|a, b| a.room_id.cmp(&b.room_id));
                let rooms = Arc::new(rooms);
                self.rooms.user_rooms.fill(user_id, ticket, rooms.clone());
                Ok(rooms)
            }
        }
    }
}
