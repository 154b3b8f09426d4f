//! The user's rooms as sliding sync lists them: which rooms (joined, invited, knocked, banned,
//! kicked; left ones only when newly left), their facts for the filters, their `bump_stamp`,
//! and each list's filtered, sorted window.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

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

/// One of the user's rooms, with what the filters and the sort look at.
#[derive(Clone, Debug)]
pub struct RoomEntry {
    pub room_id: OwnedRoomId,
    pub membership: String,
    /// The stream position of the user's membership event.
    pub membership_position: i64,
    pub head: RoomHead,
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
        let memberships = self.store.user_memberships(user_id.as_str()).await?;
        let ids: Vec<String> = memberships.iter().map(|(_, _, event_id)| event_id.clone()).collect();
        let stored: HashMap<String, myelin_store::StoredEvent> =
            self.store.get_events(&ids).await?.into_iter().map(|e| (e.event_id.clone(), e)).collect();
        let mut entries = Vec::new();
        for (room, membership, event_id) in memberships {
            let Ok(room_id) = RoomId::parse(&room) else { continue };
            let Some(member_event) = stored.get(&event_id) else { continue };
            if member_event.stream_ordering > now {
                continue;
            }
            let Some(head) = self.room_head_snapshot(&room_id).await? else { continue };
            let mut listed = true;
            match membership.as_str() {
                "join" | "invite" | "knock" => {}
                "leave" | "ban" => {
                    if self.store.is_forgotten(user_id.as_str(), &room).await? {
                        continue;
                    }
                    // Rooms the user left themselves only while newly left; kicks and bans
                    // stay listed.
                    let parsed = self.parse_stored(member_event, &head.rules)?;
                    listed = !(membership == "leave"
                        && parsed.pdu.sender == user_id
                        && !newly_left.contains(&room));
                }
                _ => continue,
            }
            let membership_position = member_event.stream_ordering;
            let mut entry = RoomEntry {
                is_dm: dms.contains(&room),
                room_id,
                membership,
                membership_position,
                head,
                bump_stamp: membership_position,
                room_type: None,
                encrypted: false,
                listed,
                stripped: None,
            };
            if matches!(entry.membership.as_str(), "invite" | "knock") {
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
                entry.encrypted = entry.head.state_event_id("m.room.encryption", "").is_some();
                if let Some(create) = entry.head.state_event_id("m.room.create", "").cloned()
                    && let Some(create) = self.get_room_event(&create).await?
                {
                    entry.room_type =
                        create.pdu.content_value().get("type").and_then(Value::as_str).map(str::to_owned);
                }
                if entry.membership == "join"
                    && let Some(bump) = self
                        .store
                        .latest_event_of_types(entry.room_id.as_str(), BUMP_EVENT_TYPES, now)
                        .await?
                {
                    entry.bump_stamp = bump;
                }
            }
            entries.push(entry);
        }
        entries.sort_by(|a, b| b.bump_stamp.cmp(&a.bump_stamp).then_with(|| a.room_id.cmp(&b.room_id)));
        Ok(entries)
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
