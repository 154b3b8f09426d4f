//! The user's rooms as sliding sync lists them: which rooms (joined, invited, knocked, banned,
//! kicked; left ones only when newly left), their facts for the filters, their `bump_stamp`,
//! and each list's filtered, sorted window.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use myelin_store::PositionedMembership;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::Value;

use super::listing::{RoomList, RoomsView};
use super::request::{ListConfig, ListFilters};
use crate::rooms::RoomHead;
use crate::rooms::cache::ListingFacts;
use crate::sync::{StrippedStateEvent, SyncToken};
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
    /// Whether the user left it themselves: lists show it only while newly left (see
    /// [`RoomsView::listed`]); it can still be subscribed to.
    pub left_by_self: bool,
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
    /// request's `pos` (rooms the user left themselves after it are listed once more). The list
    /// worked out for an earlier request is used again where it still holds (see
    /// [`super::listing`]).
    pub(crate) async fn sliding_sync_rooms(
        &self,
        user_id: &UserId,
        newly_left_since: Option<i64>,
        now: SyncToken,
    ) -> Result<RoomsView> {
        let (now, account_data_now) = (now.events, now.account_data);
        // `m.direct` as the kept list read it, when no account data was written since.
        let direct = match self.sliding.listings.get(user_id) {
            Some(list) if list.direct_at() == account_data_now => list.direct.clone(),
            _ => self.store.get_account_data(user_id.as_str(), "", "m.direct").await?,
        };
        let memberships = self.user_memberships_cached(user_id).await?;
        let kept =
            self.sliding.listings.get(user_id).filter(|list| list.holds_for(&memberships, &direct, now));
        let list = match kept {
            Some(kept) => self.update_room_list(user_id, kept, now).await?,
            None => None,
        };
        let list = match list {
            Some(list) => list,
            None => {
                let list =
                    self.work_out_room_list(user_id, memberships, (direct, account_data_now), now).await?;
                let list = Arc::new(list);
                self.sliding.listings.keep(user_id, list.clone());
                list
            }
        };
        // Whichever way the list came, its `m.direct` is the one read (or reused) at
        // `account_data_now`.
        list.direct_holds_at(account_data_now);
        // Only rooms the user left themselves are listed depending on when they left.
        let mut newly_left = HashSet::new();
        if let Some(since) = newly_left_since.filter(|_| list.left_by_self > 0) {
            for change in self.store.membership_changes_since(user_id.as_str(), since).await? {
                if change.stream_ordering <= now {
                    newly_left.insert(change.room_id);
                }
            }
        }
        Ok(RoomsView { list, newly_left })
    }

    /// Brings a kept list from its position to `now`: the rooms with a new event since are
    /// worked out again. `None` when it cannot be (the change log does not tell, or a room it
    /// could not find changed).
    async fn update_room_list(
        &self,
        user_id: &UserId,
        kept: Arc<RoomList>,
        now: i64,
    ) -> Result<Option<Arc<RoomList>>> {
        let Some(changed) = self.rooms.rooms_changed_since(kept.generation, kept.built_at()) else {
            return Ok(None);
        };
        if changed.iter().any(|room| kept.missing.contains(room)) {
            return Ok(None);
        }
        let changed: Vec<(&RoomId, usize)> =
            changed.iter().filter_map(|room| Some((&**room, *kept.index.get(room)?))).collect();
        if changed.is_empty() {
            kept.advance(now);
            return Ok(Some(kept));
        }
        let facts = self.rooms.listing_facts(&changed.iter().map(|(room, _)| *room).collect::<Vec<_>>());
        let mut rooms = kept.rooms.clone();
        let mut replaced = Vec::with_capacity(changed.len());
        for ((room_id, index), facts) in changed.into_iter().zip(facts) {
            let old = &kept.rooms[index];
            let fresh = self
                .room_entry(user_id, room_id, old.membership, old.membership_position, old.is_dm, facts, now)
                .await?;
            let Some(mut fresh) = fresh else { return Ok(None) };
            fresh.left_by_self = old.left_by_self;
            rooms.set(index, Arc::new(fresh));
            replaced.push(index);
        }
        let mut list = RoomList {
            built_at: AtomicI64::new(now),
            generation: kept.generation,
            memberships: kept.memberships.clone(),
            direct: kept.direct.clone(),
            direct_at: AtomicI64::new(kept.direct_at()),
            unpublished_membership: kept.unpublished_membership,
            missing: kept.missing.clone(),
            rooms_id: kept.rooms_id,
            left_by_self: kept.left_by_self,
            rooms,
            index: kept.index.clone(),
            order: kept.order.clone(),
        };
        list.sort(Some(&replaced));
        let list = Arc::new(list);
        self.sliding.listings.keep(user_id, list.clone());
        Ok(Some(list))
    }

    /// Works out the user's rooms at `now` from their memberships.
    async fn work_out_room_list(
        &self,
        user_id: &UserId,
        memberships: Arc<Vec<PositionedMembership>>,
        (direct, direct_at): (Option<String>, i64),
        now: i64,
    ) -> Result<RoomList> {
        // Taken before anything is read of the rooms: a reset after it makes the list stale.
        let generation = self.rooms.change_generation();
        let dms = dm_rooms(direct.as_deref().and_then(|text| serde_json::from_str(text).ok()).as_ref());
        let mut unpublished_membership: Option<i64> = None;
        let mut candidates: Vec<(&PositionedMembership, &RoomId)> = Vec::with_capacity(memberships.len());
        for member in memberships.iter() {
            if member.stream_ordering > now {
                let earliest = unpublished_membership.get_or_insert(member.stream_ordering);
                *earliest = (*earliest).min(member.stream_ordering);
                continue;
            }
            if let Ok(room_id) = <&RoomId>::try_from(member.room_id.as_str()) {
                candidates.push((member, room_id));
            }
        }
        let ids: Vec<&RoomId> = candidates.iter().map(|(_, room_id)| *room_id).collect();
        let facts = self.rooms.listing_facts(&ids);
        let mut rooms = Vec::with_capacity(candidates.len());
        let mut missing = HashSet::new();
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
            if matches!(membership, "leave" | "ban")
                && self.store.is_forgotten(user_id.as_str(), room_id.as_str()).await?
            {
                continue;
            }
            let is_dm = dms.contains(room_id.as_str());
            match self
                .room_entry(user_id, room_id, membership, member.stream_ordering, is_dm, facts, now)
                .await?
            {
                Some(mut entry) => {
                    // Kicks and bans stay listed.
                    entry.left_by_self = membership == "leave" && member.sender == user_id.as_str();
                    rooms.push(Arc::new(entry));
                }
                None => {
                    missing.insert(room_id.to_owned());
                }
            }
        }
        let index = rooms.iter().enumerate().map(|(i, room)| (room.room_id.clone(), i)).collect();
        let left_by_self = rooms.iter().filter(|room| room.left_by_self).count();
        let mut list = RoomList {
            rooms_id: self.sliding.listings.new_rooms_id(),
            left_by_self,
            built_at: AtomicI64::new(now),
            generation,
            memberships,
            direct,
            direct_at: AtomicI64::new(direct_at),
            unpublished_membership,
            missing,
            rooms: rooms.into_iter().collect(),
            index: Arc::new(index),
            order: Vec::new(),
        };
        list.sort(None);
        Ok(list)
    }

    /// One room of the user's list at `now`, from their membership in it and what the room
    /// cache knows of it (`facts`). `None` when the room's head cannot be found.
    #[allow(clippy::too_many_arguments)]
    async fn room_entry(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        membership: &'static str,
        membership_position: i64,
        is_dm: bool,
        facts: ListingFacts,
        now: i64,
    ) -> Result<Option<RoomEntry>> {
        let (head, encrypted) = match facts.head {
            Some((head, encrypted)) => (head, Some(encrypted)),
            None => match self.room_head_shared(room_id).await? {
                Some(head) => (head, None),
                None => return Ok(None),
            },
        };
        let mut entry = RoomEntry {
            is_dm,
            room_id: room_id.to_owned(),
            membership,
            membership_position,
            head,
            bump_stamp: membership_position,
            room_type: None,
            encrypted: false,
            left_by_self: false,
            stripped: None,
        };
        if matches!(membership, "invite" | "knock") {
            let stripped = self.stripped_state(&entry.head, user_id).await?;
            for event in &stripped {
                match (event.kind.as_str(), event.state_key.as_str()) {
                    ("m.room.create", "") => {
                        entry.room_type = event.content.get("type").and_then(Value::as_str).map(str::to_owned)
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
        Ok(Some(entry))
    }

    /// A room's create event `type` (cached: it never changes).
    async fn sliding_room_type(&self, head: &RoomHead) -> Result<Option<String>> {
        if let Some(room_type) = self.rooms.room_type(&head.room_id) {
            return Ok(room_type);
        }
        let Some(create) = head.state_event_id("m.room.create", "") else { return Ok(None) };
        let pdus = self.get_pdus(std::slice::from_ref(create), &head.rules).await?;
        let Some(create) = pdus.get(create) else { return Ok(None) };
        let room_type = create.content_value().get("type").and_then(Value::as_str).map(str::to_owned);
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
    async fn children_of_spaces(&self, spaces: &[String], rooms: &RoomsView) -> Result<HashSet<String>> {
        let mut children = HashSet::new();
        for space in spaces {
            let entry = <&RoomId>::try_from(space.as_str()).ok().and_then(|space| rooms.get(space));
            let Some(entry) = entry.filter(|entry| entry.membership == "join") else {
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
        rooms: &RoomsView,
    ) -> Result<BTreeMap<String, ListWindow>> {
        let mut out = BTreeMap::new();
        for (name, list) in lists {
            let children = match &list.filters.spaces {
                Some(spaces) => Some(self.children_of_spaces(spaces, rooms).await?),
                None => None,
            };
            let ranges = list.ranges.as_deref();
            let window = if list.filters == ListFilters::default() && rooms.all_listed() && ranges.is_some() {
                // Every room matches: only those in the ranges are looked at.
                window_of(rooms.list.order.len(), ranges, |n| rooms.nth(n).map(|r| r.room_id.clone()))
            } else {
                let matching: Vec<&RoomEntry> = rooms
                    .sorted()
                    .filter(|room| rooms.listed(room) && passes(&list.filters, room, children.as_ref()))
                    .collect();
                window_of(matching.len(), ranges, |n| matching.get(n).map(|r| r.room_id.clone()))
            };
            out.insert(name.clone(), window);
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

/// A list's window over its `count` matching rooms (`nth`: the matching room at an index,
/// newest first): the rooms in its ranges, clamped to the count (`None`: every room).
fn window_of(
    count: usize,
    ranges: Option<&[(u64, u64)]>,
    nth: impl Fn(usize) -> Option<OwnedRoomId>,
) -> ListWindow {
    let mut rooms = BTreeSet::new();
    match ranges {
        None => rooms.extend((0..count).filter_map(&nth)),
        Some(ranges) => {
            for &(start, end) in ranges {
                // Both bounds end up below `count`, a `usize` length.
                let (Ok(start), end) = (usize::try_from(start), usize::try_from(end).unwrap_or(usize::MAX))
                else {
                    continue;
                };
                if start >= count {
                    continue;
                }
                rooms.extend((start..=end.min(count - 1)).filter_map(&nth));
            }
        }
    }
    ListWindow { count: count as u64, rooms }
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
    use super::{dm_rooms, window_of};
    use ruma::OwnedRoomId;
    use serde_json::json;

    #[test]
    fn a_window_takes_its_ranges_clamped_to_the_count() {
        let ids: Vec<OwnedRoomId> = (0..5).map(|i| format!("!{i}:x").try_into().unwrap()).collect();
        let window = |ranges: Option<&[(u64, u64)]>| {
            let window = window_of(ids.len(), ranges, |n| ids.get(n).cloned());
            let mut rooms: Vec<String> = window.rooms.iter().map(|r| r.to_string()).collect();
            rooms.sort();
            (window.count, rooms)
        };
        let names = |range: std::ops::RangeInclusive<usize>| -> Vec<String> {
            range.map(|i| format!("!{i}:x")).collect()
        };
        assert_eq!(window(Some(&[(0, 1)])), (5, names(0..=1)));
        // Overlapping ranges, one past the count, one starting after it.
        assert_eq!(window(Some(&[(0, 2), (1, 3), (9, 20)])), (5, names(0..=3)));
        assert_eq!(window(Some(&[(3, u64::MAX)])), (5, names(3..=4)));
        assert_eq!(window(Some(&[(5, 5)])), (5, vec![]));
        assert_eq!(window(None), (5, names(0..=4)));
        let none = window_of(0, Some(&[(0, 10)]), |_| None);
        assert_eq!((none.count, none.rooms.len()), (0, 0));
    }

    #[test]
    fn direct_rooms_are_read_leniently() {
        let content = json!({"@a:x": ["!1:x", 5], "@b:x": "!2:x", "@c:x": ["!3:x"]});
        let rooms = dm_rooms(Some(&content));
        assert!(rooms.contains("!1:x") && rooms.contains("!3:x") && rooms.len() == 2);
        assert!(dm_rooms(Some(&json!([1]))).is_empty());
    }
}
