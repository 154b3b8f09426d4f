//! The in-memory parts of the rooms service: per-room send locks and published heads, the
//! parsed-event cache, cached state-group reads, and the cached local member lists.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Arc;

use parking_lot::Mutex;

use myelin_core::pdu::Pdu;
use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId, UserId};
use tokio::sync::broadcast;

use super::{NewEventNotice, RoomHead};
use crate::streams::Stream;
use crate::{Result, Services};

/// The in-memory parts of the rooms service.
pub struct Rooms {
    /// Per room: its send lock with the head the write path builds on, and the head readers
    /// see (see [`RoomSlot`]).
    slots: Mutex<HashMap<OwnedRoomId, Arc<RoomSlot>>>,
    events: Mutex<EventCache>,
    pub stream: Stream,
    /// Notices of persisted events waiting for their position to be published.
    pub(super) pending: Mutex<BTreeMap<i64, NewEventNotice>>,
    /// Every published new event, for whoever listens (push, federation, ...).
    pub new_events: broadcast::Sender<NewEventNotice>,
    /// Local sends in progress per room (queued on its lock or sending).
    senders: Mutex<HashMap<OwnedRoomId, usize>>,
    /// State groups never change: values read from them (history visibility, a membership)
    /// by `(group, type, state_key, content field)`, and whole small groups.
    state_fields: Mutex<lru::LruCache<StateFieldKey, Option<String>>>,
    state_groups: Mutex<lru::LruCache<i64, Arc<GroupState>>>,
    /// Per room, what sliding sync sorts and filters every room of a user by, kept so that a
    /// request reads no row per room: see [`RoomFacts`]. At most [`MAX_ROOM_FACTS`] rooms, the
    /// least recently used go (a room without facts has them read from the store again).
    facts: Mutex<lru::LruCache<OwnedRoomId, RoomFacts>>,
    /// The rooms of the latest new events: see [`ChangeLog`].
    changes: Mutex<ChangeLog>,
    /// Each local user's memberships (see [`super::user_rooms`]).
    pub(crate) user_rooms: super::user_rooms::UserRooms,
    /// Each room's joined and invited members (see [`super::room_members`]).
    pub(crate) room_members: super::room_members::RoomMembers,
}

/// Facts about a room that only its write path changes. `bump_stamp`: the stream position of
/// its newest event of a type that moves it up the room list; `last_event`: that of its
/// newest event of any kind (both noted by the write path once the event is committed, before
/// its position is published; loaded from the store on a miss). `room_type`: its create
/// event's `type`, which never changes.
#[derive(Clone, Debug, Default)]
struct RoomFacts {
    bump_stamp: Option<i64>,
    last_event: Option<i64>,
    room_type: Option<Option<String>>,
}

/// How many rooms' [`RoomFacts`] are held (about 150 bytes each).
const MAX_ROOM_FACTS: usize = 500_000;

/// How many new events [`ChangeLog`] holds.
const CHANGE_LOG_MAX: usize = 16_384;

/// The rooms of the latest new events, in the order the write path noted them (once
/// committed, before their positions are published), so that what was worked out of a user's
/// rooms at one position can learn which of them changed since without looking at each (see
/// `sliding_sync::listing`).
#[derive(Default)]
struct ChangeLog {
    /// `(position, the greatest position noted up to and with this one, room)`.
    entries: VecDeque<(i64, i64, OwnedRoomId)>,
    /// The greatest position dropped from the front: every change after it is held.
    floor: i64,
    /// Counts resets: a room may have changed unnoted before one (a commit that failed after
    /// its room's head was published, facts forgotten).
    generation: u64,
}

/// `(state group, event type, state key, content field)`.
pub(crate) type StateFieldKey = (i64, String, String, String);

/// A state group's entries: `(type, state key)` to event ID.
pub type GroupState = BTreeMap<(String, String), String>;

/// Groups with more entries than this are not kept whole in memory.
const CACHED_GROUP_MAX_ENTRIES: usize = 500;

/// A room's head, as the write path owns it and as readers see it.
///
/// The write path takes `head`, the room's send lock (sends to one room are serialised by it),
/// and moves the head under it. Readers never take it: they clone `published`, the head as
/// of the last release of the send lock (a clone is cheap: the state is a persistent map).
/// [`RoomWriteGuard`] publishes the head when it releases the lock, so a reader sees every
/// send whose lock was released before the read began, as it did when reads took the lock.
#[derive(Default)]
struct RoomSlot {
    /// `None` until loaded (or after a failed commit, until reloaded).
    head: Arc<tokio::sync::Mutex<Option<RoomHead>>>,
    published: parking_lot::RwLock<Option<Published>>,
}

/// A published head, with what room lists read of every room worked out once per publication
/// rather than once per room per request.
struct Published {
    head: Arc<RoomHead>,
    /// Whether the current state holds `m.room.encryption`.
    encrypted: bool,
}

impl Published {
    fn new(head: RoomHead) -> Published {
        let encrypted = head.is_encrypted();
        Published { head: Arc::new(head), encrypted }
    }
}

/// What a room list reads of one room (see [`Rooms::listing_facts`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct ListingFacts {
    /// The published head and whether the room is encrypted, if loaded.
    pub head: Option<(Arc<RoomHead>, bool)>,
    /// The create event's `type`, if known (`Some(None)`: an ordinary room).
    pub room_type: Option<Option<String>>,
    /// The noted bump stamp, if known.
    pub bump_stamp: Option<i64>,
}

/// The send lock of one room, with its head (`None` when not loaded, or for a room that does
/// not exist (yet)). Dropping it publishes the head to readers, and forgets the room's slot if
/// it holds no head and nobody else is waiting for it (so that asking about unknown room IDs
/// leaves nothing behind).
pub struct RoomWriteGuard<'a> {
    rooms: &'a Rooms,
    room_id: OwnedRoomId,
    slot: Arc<RoomSlot>,
    head: tokio::sync::OwnedMutexGuard<Option<RoomHead>>,
}

impl std::ops::Deref for RoomWriteGuard<'_> {
    type Target = Option<RoomHead>;

    fn deref(&self) -> &Option<RoomHead> {
        &self.head
    }
}

impl std::ops::DerefMut for RoomWriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut Option<RoomHead> {
        &mut self.head
    }
}

impl Drop for RoomWriteGuard<'_> {
    fn drop(&mut self) {
        // Published while the lock is still held: the next writer publishes after this one.
        *self.slot.published.write() = self.head.clone().map(Published::new);
        if self.head.is_none() {
            let mut slots = self.rooms.slots.lock();
            // The map's reference and this guard's: nobody else holds or awaits the lock, and
            // nobody can start to without the map.
            if slots
                .get(&self.room_id)
                .is_some_and(|slot| Arc::ptr_eq(slot, &self.slot) && Arc::strong_count(slot) <= 2)
            {
                slots.remove(&self.room_id);
            }
        }
    }
}

/// One send in progress into a room (see [`Rooms::sending`]).
pub(super) struct Sending<'a> {
    rooms: &'a Rooms,
    room_id: OwnedRoomId,
}

impl Sending<'_> {
    /// Whether other sends into the room are in progress.
    pub(super) fn others(&self) -> bool {
        self.rooms.senders.lock().get(&self.room_id).is_some_and(|n| *n > 1)
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        let mut senders = self.rooms.senders.lock();
        if let Some(count) = senders.get_mut(&self.room_id) {
            *count -= 1;
            if *count == 0 {
                senders.remove(&self.room_id);
            }
        }
    }
}

impl Rooms {
    /// `event_cache`: how many parsed events to keep in memory, and within how many bytes.
    pub fn new(max_stream_ordering: i64, (events, bytes): (usize, u64)) -> Rooms {
        Rooms {
            slots: Mutex::default(),
            events: Mutex::new(EventCache {
                events: lru::LruCache::new(NonZeroUsize::new(events).unwrap_or(NonZeroUsize::MIN)),
                bytes: 0,
                max_bytes: bytes,
            }),
            stream: Stream::new(max_stream_ordering),
            pending: Mutex::default(),
            new_events: broadcast::channel(4096).0,
            senders: Mutex::default(),
            state_fields: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(20_000).unwrap_or(NonZeroUsize::MIN),
            )),
            state_groups: Mutex::new(lru::LruCache::new(NonZeroUsize::new(128).unwrap_or(NonZeroUsize::MIN))),
            facts: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(MAX_ROOM_FACTS).unwrap_or(NonZeroUsize::MIN),
            )),
            changes: Mutex::default(),
            user_rooms: Default::default(),
            room_members: Default::default(),
        }
    }

    /// Counts the caller among the local senders into a room until the guard is dropped.
    pub(super) fn sending(&self, room_id: &RoomId) -> Sending<'_> {
        *self.senders.lock().entry(room_id.to_owned()).or_default() += 1;
        Sending { rooms: self, room_id: room_id.to_owned() }
    }

    fn slot(&self, room_id: &RoomId) -> Arc<RoomSlot> {
        let mut slots = self.slots.lock();
        slots.entry(room_id.to_owned()).or_default().clone()
    }

    /// Takes a room's send lock, waiting for the sends in progress; the head in it is not
    /// loaded (see [`Services::lock_room_for_write`] for that).
    pub(crate) async fn lock_for_write(&self, room_id: &RoomId) -> RoomWriteGuard<'_> {
        let slot = self.slot(room_id);
        let head = slot.head.clone().lock_owned().await;
        RoomWriteGuard { rooms: self, room_id: room_id.to_owned(), slot, head }
    }

    /// Takes a room's send lock if no send holds it.
    pub(crate) fn try_lock_for_write(&self, room_id: &RoomId) -> Option<RoomWriteGuard<'_>> {
        let slot = self.slot(room_id);
        let head = slot.head.clone().try_lock_owned().ok();
        head.map(|head| RoomWriteGuard { rooms: self, room_id: room_id.to_owned(), slot, head })
    }

    /// The head of a room as of the last release of its send lock, if loaded. Never waits.
    pub(crate) fn published_head(&self, room_id: &RoomId) -> Option<Arc<RoomHead>> {
        let slot = self.slots.lock().get(room_id).cloned()?;
        slot.published.read().as_ref().map(|p| p.head.clone())
    }

    /// [`Self::published_head`] (with whether the room is encrypted), [`Self::room_type`] and
    /// [`Self::bump_stamp`] of many rooms, each lock taken once (a room list reads them of
    /// every room of a user).
    pub(crate) fn listing_facts(&self, rooms: &[&RoomId]) -> Vec<ListingFacts> {
        let slots: Vec<Option<Arc<RoomSlot>>> = {
            let map = self.slots.lock();
            rooms.iter().map(|room| map.get(*room).cloned()).collect()
        };
        let mut out: Vec<ListingFacts> = slots
            .into_iter()
            .map(|slot| ListingFacts {
                head: slot
                    .and_then(|slot| slot.published.read().as_ref().map(|p| (p.head.clone(), p.encrypted))),
                ..ListingFacts::default()
            })
            .collect();
        let mut facts = self.facts.lock();
        for (room, listing) in rooms.iter().zip(&mut out) {
            if let Some(facts) = facts.get(*room) {
                listing.room_type = facts.room_type.clone();
                listing.bump_stamp = facts.bump_stamp;
            }
        }
        out
    }

    pub(super) fn cached_event(&self, event_id: &EventId) -> Option<Arc<Pdu>> {
        self.events.lock().events.get(event_id).cloned()
    }

    pub(super) fn cache_event(&self, pdu: Arc<Pdu>) {
        let mut cache = self.events.lock();
        cache.bytes += EventCache::entry_size(&pdu);
        if let Some((_, out)) = cache.events.push(pdu.event_id.clone(), pdu) {
            cache.bytes -= EventCache::entry_size(&out);
        }
        while cache.bytes > cache.max_bytes && cache.events.len() > 1 {
            let Some((_, out)) = cache.events.pop_lru() else { break };
            cache.bytes -= EventCache::entry_size(&out);
        }
    }

    /// Notes a committed event of a bump type (see [`RoomFacts`]): the room's bump stamp becomes
    /// `position` unless it is already later.
    pub(crate) fn note_bump(&self, room_id: &RoomId, position: i64) {
        let mut facts = self.facts.lock();
        let bump = &mut facts.get_or_insert_mut_ref(room_id, RoomFacts::default).bump_stamp;
        *bump = Some(bump.map_or(position, |b| b.max(position)));
    }

    /// Notes a committed event (see [`RoomFacts`]): the room's last event becomes `position`
    /// unless it is already later.
    pub(crate) fn note_last_event(&self, room_id: &RoomId, position: i64) {
        let mut facts = self.facts.lock();
        let last = &mut facts.get_or_insert_mut_ref(room_id, RoomFacts::default).last_event;
        *last = Some(last.map_or(position, |l| l.max(position)));
    }

    /// Notes a committed event whose position is about to be published: the room's last event
    /// ([`Self::note_last_event`]) and the change log's newest entry.
    pub(crate) fn note_new_event(&self, room_id: &RoomId, position: i64) {
        self.note_last_event(room_id, position);
        let mut log = self.changes.lock();
        let greatest = log.entries.back().map_or(position, |&(_, greatest, _)| greatest.max(position));
        log.entries.push_back((position, greatest, room_id.to_owned()));
        while log.entries.len() > CHANGE_LOG_MAX {
            let Some((dropped, _, _)) = log.entries.pop_front() else { break };
            log.floor = log.floor.max(dropped);
        }
    }

    /// The change log's generation, to read before working anything out of the rooms that
    /// [`Self::rooms_changed_since`] is later asked about.
    pub(crate) fn change_generation(&self) -> u64 {
        self.changes.lock().generation
    }

    /// The rooms with a new event after `position` (noted, published or not), or `None` when
    /// that cannot be told: the log was reset since `generation`, or no longer reaches back to
    /// `position`.
    pub(crate) fn rooms_changed_since(&self, generation: u64, position: i64) -> Option<HashSet<OwnedRoomId>> {
        let log = self.changes.lock();
        if log.generation != generation || position < log.floor {
            return None;
        }
        let mut rooms = HashSet::new();
        for (noted, _, room_id) in
            log.entries.iter().rev().take_while(|&&(_, greatest, _)| greatest > position)
        {
            if *noted > position && !rooms.contains(room_id) {
                rooms.insert(room_id.clone());
            }
        }
        Some(rooms)
    }

    /// Starts the change log afresh: rooms may have changed without a note.
    pub(crate) fn reset_changes(&self) {
        let mut log = self.changes.lock();
        log.generation += 1;
        let greatest = log.entries.back().map(|&(_, greatest, _)| greatest);
        log.floor = log.floor.max(greatest.unwrap_or(0));
        log.entries.clear();
    }

    /// The position of the room's newest event, if noted (looked at without making the room
    /// the most recently used: it is read for every room of a list's window).
    pub(crate) fn last_event(&self, room_id: &RoomId) -> Option<i64> {
        self.facts.lock().peek(room_id).and_then(|f| f.last_event)
    }

    /// The room's noted bump stamp, if known.
    pub(crate) fn bump_stamp(&self, room_id: &RoomId) -> Option<i64> {
        self.facts.lock().get(room_id).and_then(|f| f.bump_stamp)
    }

    /// The room's create event `type`, if known (`Some(None)`: an ordinary room).
    pub(crate) fn room_type(&self, room_id: &RoomId) -> Option<Option<String>> {
        self.facts.lock().get(room_id).and_then(|f| f.room_type.clone())
    }

    pub(crate) fn note_room_type(&self, room_id: &RoomId, room_type: Option<String>) {
        self.facts.lock().get_or_insert_mut_ref(room_id, RoomFacts::default).room_type = Some(room_type);
    }

    /// Forgets every cached membership, by user and by room: a write changed them in ways
    /// not told one by one (a room's whole state replaced or purged, a write released
    /// unfinished).
    pub(crate) fn forget_all_memberships(&self) {
        self.user_rooms.clear();
        self.room_members.clear();
    }

    /// Forgets what is known of every room (a write may have committed unannounced).
    pub(crate) fn forget_all_room_facts(&self) {
        self.facts.lock().clear();
        self.reset_changes();
    }

    /// Forgets what is known of a room whose events were purged.
    pub(crate) fn forget_room_facts(&self, room_id: &RoomId) {
        self.facts.lock().pop(room_id);
        self.reset_changes();
    }

    pub(super) fn forget_event(&self, event_id: &EventId) {
        let mut cache = self.events.lock();
        if let Some(out) = cache.events.pop(event_id) {
            cache.bytes -= EventCache::entry_size(&out);
        }
    }
}

/// Parsed events by ID, bounded by count and by (estimated) memory.
struct EventCache {
    events: lru::LruCache<OwnedEventId, Arc<Pdu>>,
    bytes: u64,
    max_bytes: u64,
}

impl EventCache {
    /// The memory an entry holds: the event, its key and the list node.
    fn entry_size(pdu: &Pdu) -> u64 {
        (pdu.heap_size() + pdu.event_id.as_str().len() + 16 + 64) as u64
    }
}

impl Services {
    /// The whole state of a state group (small groups are cached: groups never change).
    pub async fn state_of_group_cached(&self, group: i64) -> Result<Arc<GroupState>> {
        if let Some(state) = self.rooms.state_groups.lock().get(&group) {
            return Ok(state.clone());
        }
        let state = Arc::new(self.store.state_of_group(group).await?);
        if state.len() <= CACHED_GROUP_MAX_ENTRIES {
            self.rooms.state_groups.lock().put(group, state.clone());
        }
        Ok(state)
    }

    /// A cached value read from a state group (see [`Rooms`]'s `state_fields`).
    pub(crate) fn cached_state_field(&self, key: &StateFieldKey) -> Option<Option<String>> {
        self.rooms.state_fields.lock().get(key).cloned()
    }

    pub(crate) fn cache_state_field(&self, key: StateFieldKey, value: Option<String>) {
        self.rooms.state_fields.lock().put(key, value);
    }

    /// Local users joined to, invited to or knocking on a room (cached).
    pub async fn local_room_members(&self, room_id: &RoomId) -> Result<crate::streams::MemberSet> {
        if let Some(members) = self.notifier.cached_members(room_id) {
            return Ok(members);
        }
        let changes_before = self.notifier.member_changes();
        let mut members = crate::streams::MemberSet::new();
        for membership in ["join", "invite", "knock"] {
            for user in self.store.room_members(room_id.as_str(), membership).await? {
                if let Ok(user) = UserId::parse(&user)
                    && user.server_name().as_str() == self.server_name()
                {
                    members.insert(user);
                }
            }
        }
        Ok(self.notifier.cache_members(room_id, members, changes_before))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(n: u32) -> OwnedRoomId {
        OwnedRoomId::try_from(format!("!r{n}:example.org")).expect("a room ID")
    }

    fn changed(rooms: &Rooms, generation: u64, position: i64) -> Option<Vec<OwnedRoomId>> {
        rooms.rooms_changed_since(generation, position).map(|set| {
            let mut rooms: Vec<OwnedRoomId> = set.into_iter().collect();
            rooms.sort();
            rooms
        })
    }

    #[test]
    fn room_facts_are_bounded_and_the_least_recently_used_go() {
        let rooms = Rooms::new(0, (16, 1 << 20));
        *rooms.facts.lock() = lru::LruCache::new(NonZeroUsize::new(2).expect("2 is not zero"));
        rooms.note_new_event(&room(1), 1);
        rooms.note_bump(&room(2), 2);
        assert_eq!(rooms.bump_stamp(&room(1)), None, "read: room 1 is now the most recently used");
        rooms.note_room_type(&room(3), Some("m.space".to_owned()));
        assert_eq!(rooms.bump_stamp(&room(2)), None, "room 2 went: its facts are read again");
        assert_eq!(rooms.room_type(&room(3)), Some(Some("m.space".to_owned())));
        // Looked at for its newest event (as for every room of a list's window), room 1 is not
        // made the most recently used: it goes next.
        assert_eq!(rooms.last_event(&room(1)), Some(1));
        rooms.note_bump(&room(4), 4);
        assert_eq!(rooms.last_event(&room(1)), None, "room 1 went");
        assert_eq!(rooms.room_type(&room(3)), Some(Some("m.space".to_owned())));
        // The change log is not the facts: it still tells of room 1.
        assert_eq!(changed(&rooms, rooms.change_generation(), 0), Some(vec![room(1)]));
    }

    #[test]
    fn the_change_log_finds_rooms_noted_out_of_order() {
        let rooms = Rooms::new(0, (16, 1 << 20));
        let generation = rooms.change_generation();
        // Position 11 is noted before 10 (two publishers), 12 after both.
        rooms.note_new_event(&room(1), 11);
        rooms.note_new_event(&room(2), 10);
        rooms.note_new_event(&room(3), 12);
        assert_eq!(changed(&rooms, generation, 10), Some(vec![room(1), room(3)]));
        assert_eq!(changed(&rooms, generation, 9), Some(vec![room(1), room(2), room(3)]));
        assert_eq!(changed(&rooms, generation, 12), Some(vec![]));
        assert_eq!(rooms.last_event(&room(1)), Some(11));
    }

    #[test]
    fn the_change_log_cannot_tell_past_what_it_dropped_or_across_a_reset() {
        let rooms = Rooms::new(0, (16, 1 << 20));
        let generation = rooms.change_generation();
        for position in 1..=(CHANGE_LOG_MAX as i64 + 10) {
            rooms.note_new_event(&room((position % 7) as u32), position);
        }
        // Positions 1 to 10 were dropped: changes after 9 may be missing.
        assert_eq!(changed(&rooms, generation, 9), None);
        assert!(changed(&rooms, generation, 10).is_some());
        let last = CHANGE_LOG_MAX as i64 + 10;
        assert_eq!(changed(&rooms, generation, last - 1), Some(vec![room((last % 7) as u32)]));
        rooms.reset_changes();
        assert_eq!(changed(&rooms, generation, last), None, "the old generation is stale");
        let generation = rooms.change_generation();
        assert_eq!(changed(&rooms, generation, last - 1), None, "what was noted before the reset is gone");
        assert_eq!(changed(&rooms, generation, last), Some(vec![]));
        rooms.note_new_event(&room(1), last + 1);
        assert_eq!(changed(&rooms, generation, last), Some(vec![room(1)]));
    }
}
