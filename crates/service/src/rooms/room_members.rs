//! Each room's joined and invited members, cached: what sliding sync describes a room with
//! (its member counts and heroes) whenever it sends it afresh, read once per change of the
//! room's membership instead of once per response.
//!
//! Invalidated as the user memberships of [`super::user_rooms`] are, by the write path after
//! a commit and before its position is published: a room's entry on any member event of the
//! room and on a remote event whose state resolution changed a member row, every entry when a
//! room's whole state is replaced or purged, or a write was released unfinished. A reader that
//! misses may only fill the entry if nothing invalidated it meanwhile ([`super::ticketed`]).
//!
//! Bounded: at most [`MAX_MEMBERS`] members and [`MAX_ROOMS`] rooms are held; the least
//! recently used go first.

use std::collections::HashMap;
use std::sync::Arc;

use ruma::{OwnedRoomId, RoomId};

use super::ticketed::{Ticketed, Weighed};

/// The most members held over all rooms (about 80 bytes each).
const MAX_MEMBERS: usize = 250_000;
/// The most rooms held (with or without their members).
const MAX_ROOMS: usize = 100_000;

/// A room's joined and invited members (user IDs, sorted).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JoinedAndInvited {
    pub joined: Vec<String>,
    pub invited: Vec<String>,
}

impl Weighed for JoinedAndInvited {
    fn weight(&self) -> usize {
        // An empty room still holds its entry.
        1 + self.joined.len() + self.invited.len()
    }
}

/// The cached members of each room.
pub type RoomMembers = Ticketed<OwnedRoomId, JoinedAndInvited>;

impl Default for RoomMembers {
    fn default() -> Self {
        Ticketed::new(MAX_MEMBERS, MAX_ROOMS)
    }
}

impl crate::Services {
    /// The joined and invited members of each room, from the cache (the rooms that miss are
    /// read from the store at once).
    pub(crate) async fn joined_and_invited_members_cached(
        &self,
        room_ids: &[&RoomId],
    ) -> crate::Result<HashMap<OwnedRoomId, Arc<JoinedAndInvited>>> {
        let mut out = HashMap::with_capacity(room_ids.len());
        let mut missed = Vec::new();
        for room_id in room_ids {
            match self.rooms.room_members.get(*room_id) {
                Ok(members) => {
                    out.insert((*room_id).to_owned(), members);
                }
                Err(ticket) => missed.push((*room_id, ticket)),
            }
        }
        if missed.is_empty() {
            return Ok(out);
        }
        let ids: Vec<&str> = missed.iter().map(|(room_id, _)| room_id.as_str()).collect();
        let mut read = self.store.joined_and_invited_members_of(&ids).await?;
        for (room_id, ticket) in missed {
            let (joined, invited) = read.remove(room_id.as_str()).unwrap_or_default();
            let members = Arc::new(JoinedAndInvited { joined, invited });
            self.rooms.room_members.fill(room_id, ticket, members.clone());
            out.insert(room_id.to_owned(), members);
        }
        Ok(out)
    }
}
