//! The user's rooms as sliding sync lists them: which rooms (joined, invited, knocked, banned,
//! kicked; left ones only when newly left), their facts for the filters, their `bump_stamp`,
//! and each list's filtered, sorted window.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use std::sync::Arc;

use myelin_store::PositionedMembership;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::Value;

use super::request::{ListConfig, ListFilters};
use crate::rooms::RoomHead;
use crate::sync::StrippedStateEvent;
use crate::{Result, Services};

/// The event types whose newest event gives a room's `bump_stamp` (Synapse's
/// `SLIDING_SYNC_DEFAULT_BUMP_EVENT_TYPES`).
pub const BUMP_EVENT_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

/// How many rooms [`Services::sliding_sync_rooms`] lists between two yields to the runtime.
const YIELD_EVERY: usize = 128;

/// One of the user's rooms, with what the filters and the sort look at.
#[derive(Clone, Debug)]
pub struct RoomEntry {
    pub room_id: OwnedRoomId,
    /// `join`, `invite`, `knock`, `leave` or `ban`.
    pub membership: &'static str,
    /// The stream position of the user's membership event.
    pub membership_position: i64,
    pub head: Arc<RoomHead>,
    pub bump_stamp: i64,
    /// The `type` of the create event (`None`: an ordinary room).
    pub room_type: Option<String>,
    pub encrypted: bool,
    pub is_dm: bool,
    /// Whether lists show it (a room the user left themselves is only listed while newly left,
    /// but can still be subscribed to).
    pub listed: bool,
    /// For invites and knocks: the stripped state the user sees.
    pub stripped: Option<Vec<StrippedStateEvent>>,
}

impl RoomEntry {
    /// The last event position the user may see in the room: now while joined, their
    /// membership event otherwise.
    pub fn upto(&self, now: i64) -> i64 {
        if self.membership == "join" { now } else { self.membership_position.min(now) }
    }
}

/// The rooms `m.direct` account data names.
fn dm_rooms(content: Option<&Value>) -> HashSet<String> {
    let Some(Value::Object(by_user)) = content else { return HashSet::new() };
    by_user
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

impl Services {
    /// The user's rooms sliding sync may send (every room they have a membership in and did not
    /// forget), newest `bump_stamp` first. `newly_left_since`: the event position of the
    /// request's `pos` (rooms the user left themselves after it are listed once more).
    pub(crate) async fn sliding_sync_rooms(
        &self,
        user_id: &UserId,
        newly_left_since: Option<i64>,
        now: i64,
    ) -> Result<Vec<RoomEntry>> {
        let direct = self.store.get_account_data(user_id.as_str(), "", "m.direct").await?;
        let direct: Option<Value> = direct.and_then(|text| serde_json::from_str(&text).ok());
        let dms = dm_rooms(direct.as_ref());
        let mut newly_left = HashSet::new();
        if let Some(since) = newly_left_since {
            for change in self.store.membership_changes_since(user_id.as_str(), since).await? {
                if change.stream_ordering <= now {
                    newly_left.insert(change.room_id);
                }
            }
        }
        let memberships = self.user_memberships_cached(user_id).await?;
        let candidates: Vec<(&PositionedMembership, &RoomId)> = memberships
            .iter()
            .filter(|member| member.stream_ordering <= now)
            .filter_map(|member| Some((member, <&RoomId>::try_from(member.room_id.as_str()).ok()?)))
            .collect();
        let ids: Vec<&RoomId> = candidates.iter().map(|(_, room_id)| *room_id).collect();
        let facts = self.rooms.listing_facts(&ids);
        let mut entries = Vec::with_capacity(candidates.len());
        for (index, ((member, room_id), facts)) in candidates.into_iter().zip(facts).enumerate() {
            if index % YIELD_EVERY == YIELD_EVERY - 1 {
                // Thousands of rooms are read from memory without a pause: other tasks queued
                // on this worker (the send that woke this request, answering its client) run
                // in between instead of after.
                tokio::task::yield_now().await;
            }
            let membership = match member.membership.as_str() {
                "join" => "join",
                "invite" => "invite",
                "knock" => "knock",
                "leave" => "leave",
                "ban" => "ban",
                _ => continue,
            };
            let (head, encrypted) = match facts.head {
                Some((head, encrypted)) => (head, Some(encrypted)),
                None => match self.room_head_shared(room_id).await? {
                    Some(head) => (head, None),
                    None => continue,
                },
            };
            let mut listed = true;
            if matches!(membership, "leave" | "ban") {
                if self.store.is_forgotten(user_id.as_str(), room_id.as_str()).await? {
                    continue;
                }
                // Rooms the user left themselves only while newly left; kicks and bans stay
                // listed.
                listed = !(membership == "leave"
                    && member.sender == user_id.as_str()
                    && !newly_left.contains(room_id.as_str()));
            }
            let membership_position = member.stream_ordering;
            let mut entry = RoomEntry {
                is_dm: dms.contains(room_id.as_str()),
                room_id: room_id.to_owned(),
                membership,
                membership_position,
                head,
                bump_stamp: membership_position,
                room_type: None,
                encrypted: false,
                listed,
                stripped: None,
            };
            if matches!(membership, "invite" | "knock") {
                let stripped = self.stripped_state(&entry.head, user_id).await?;
                for event in &stripped {
                    match (event.kind.as_str(), event.state_key.as_str()) {
                        ("m.room.create", "") => {
                            entry.room_type =
                                event.content.get("type").and_then(Value::as_str).map(str::to_owned)
                        }
                        ("m.room.encryption", "") => entry.encrypted = true,
                        _ => {}
                    }
                }
                entry.stripped = Some(stripped);
            } else {
                entry.encrypted = encrypted.unwrap_or_else(|| entry.head.is_encrypted());
                entry.room_type = match facts.room_type {
                    Some(room_type) => room_type,
                    None => self.sliding_room_type(&entry.head).await?,
                };
                if entry.membership == "join"
                    && let Some(bump) = self.sliding_bump_stamp(&entry.room_id, facts.bump_stamp, now).await?
                {
                    entry.bump_stamp = bump;
                }
            }
            entries.push(entry);
        }
        entries.sort_by(|a, b| b.bump_stamp.cmp(&a.bump_stamp).then_with(|| a.room_id.cmp(&b.room_id)));
        Ok(entries)
    }

    /// The user's current-state memberships with their positions (cached: `rooms::user_rooms`).
    async fn user_memberships_cached(&self, user_id: &UserId) -> Result<Arc<Vec<PositionedMembership>>> {
        match self.rooms.user_rooms.get(user_id) {
            Ok(rooms) => Ok(rooms),
            Err(ticket) => {
                let rooms = Arc::new(self.store.user_memberships_positioned(user_id.as_str()).await?);
                self.rooms.user_rooms.fill(user_id, ticket, rooms.clone());
                Ok(rooms)
            }
        }
    }

    /// A room's create event `type` (cached: it never changes).
    async fn sliding_room_type(&self, head: &RoomHead) -> Result<Option<String>> {
        if let Some(room_type) = self.rooms.room_type(&head.room_id) {
            return Ok(room_type);
        }
        let Some(create) = head.state_event_id("m.room.create", "") else { return Ok(None) };
        let Some(create) = self.get_room_event(create).await? else { return Ok(None) };
        let room_type = create.pdu.content_value().get("type").and_then(Value::as_str).map(str::to_owned);
        self.rooms.note_room_type(&head.room_id, room_type.clone());
        Ok(room_type)
    }

    /// The stream position of the room's newest visible event of a [`BUMP_EVENT_TYPES`] type at
    /// or before `now`: the one the write path noted (see `rooms::cache`; `noted`, looked up by
    /// the caller), read from the store on a miss (then noted; 0 for none) or when the noted
    /// one is not published at `now` yet.
    async fn sliding_bump_stamp(
        &self,
        room_id: &RoomId,
        noted: Option<i64>,
        now: i64,
    ) -> Result<Option<i64>> {
        let noted = match noted {
            Some(noted) => noted,
            None => {
                let stored =
                    self.store.latest_event_of_types(room_id.as_str(), BUMP_EVENT_TYPES, i64::MAX).await?;
                self.rooms.note_bump(room_id, stored.unwrap_or(0));
                self.rooms.bump_stamp(room_id).unwrap_or(0)
            }
        };
        if noted <= now {
            return Ok((noted > 0).then_some(noted));
        }
        Ok(self.store.latest_event_of_types(room_id.as_str(), BUMP_EVENT_TYPES, now).await?)
    }

    /// The linked children (`rooms::spaces`) of the given spaces the user is joined to.
    async fn children_of_spaces(&self, spaces: &[String], rooms: &[RoomEntry]) -> Result<HashSet<String>> {
        let mut children = HashSet::new();
        for space in spaces {
            let Some(entry) = rooms.iter().find(|r| r.room_id.as_str() == space && r.membership == "join")
            else {
                continue;
            };
            children.extend(self.space_children(&entry.head, false).await?.into_iter().map(|c| c.state_key));
        }
        Ok(children)
    }

    /// Each list's matching rooms (indices into `rooms`, in order) and the room IDs in its
    /// ranges (clamped to the count).
    pub(crate) async fn sliding_sync_lists(
        &self,
        lists: &BTreeMap<String, ListConfig>,
        rooms: &[RoomEntry],
    ) -> Result<BTreeMap<String, ListWindow>> {
        let mut out = BTreeMap::new();
        for (name, list) in lists {
            let children = match &list.filters.spaces {
                Some(spaces) => Some(self.children_of_spaces(spaces, rooms).await?),
                None => None,
            };
            let matching: Vec<&RoomEntry> = rooms
                .iter()
                .filter(|room| room.listed && passes(&list.filters, room, children.as_ref()))
                .collect();
            let count = matching.len() as u64;
            let mut in_range = BTreeSet::new();
            match &list.ranges {
                None => in_range.extend(matching.iter().map(|r| r.room_id.clone())),
                Some(ranges) => {
                    for &(start, end) in ranges {
                        if start >= count {
                            continue;
                        }
                        let end = end.min(count - 1);
                        // Both bounds are below `count`, a `usize` length.
                        in_range.extend(
                            matching[start as usize..=end as usize].iter().map(|r| r.room_id.clone()),
                        );
                    }
                }
            }
            out.insert(name.clone(), ListWindow { count, rooms: in_range });
        }
        Ok(out)
    }
}

/// A list's answer: how many rooms match, and those in its ranges.
#[derive(Clone, Debug, Default)]
pub struct ListWindow {
    pub count: u64,
    pub rooms: BTreeSet<OwnedRoomId>,
}

fn passes(filters: &ListFilters, room: &RoomEntry, children: Option<&HashSet<String>>) -> bool {
    if filters.is_dm.is_some_and(|dm| dm != room.is_dm) {
        return false;
    }
    if filters.is_encrypted.is_some_and(|encrypted| encrypted != room.encrypted) {
        return false;
    }
    if filters.is_invite.is_some_and(|invite| invite != (room.membership == "invite")) {
        return false;
    }
    if let Some(children) = children
        && !children.contains(room.room_id.as_str())
    {
        return false;
    }
    if let Some(types) = &filters.room_types
        && !types.contains(&room.room_type)
    {
        return false;
    }
    if let Some(types) = &filters.not_room_types
        && types.contains(&room.room_type)
    {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::dm_rooms;
    use serde_json::json;

    #[test]
    fn direct_rooms_are_read_leniently() {
        let content = json!({"@a:x": ["!1:x", 5], "@b:x": "!2:x", "@c:x": ["!3:x"]});
        let rooms = dm_rooms(Some(&content));
        assert!(rooms.contains("!1:x") && rooms.contains("!3:x") && rooms.len() == 2);
        assert!(dm_rooms(Some(&json!([1]))).is_empty());
    }
}
