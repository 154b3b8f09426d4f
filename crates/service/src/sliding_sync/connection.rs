//! Per-connection state: per (user, device, `conn_id`), what each room was last sent with and
//! where each extension stands, stored with every position handed out (migration 0025) so that
//! it survives restarts. A request's `pos` must be one this connection handed out and still
//! keeps (the one its last request came with, or the one it answered): anything else is
//! `400 M_UNKNOWN_POS`. Answering keeps the request's position and the new one (as Synapse
//! does, so a retried request still works); a request without `pos` starts the connection
//! afresh. A device keeps at most [`MAX_CONNECTIONS_PER_DEVICE`] connections; its
//! connections go with it (`store::devices::DEVICE_TABLES`). The state of each connection's
//! newest position is also kept in memory ([`ConnectionCache`]).
//!
//! A new position is stored after the answer that hands it out, by a task of its own. What is
//! stored is the changes from the position the request came with (the rooms sent again or
//! forgotten; a connection's whole state is tens of kilobytes for a user in thousands of
//! rooms, and writing it on every request took as long as computing the answer), up to
//! [`MAX_BUILT_ON`] positions in a row, then the whole state again. The positions a kept one
//! builds on are held by the store, no longer kept, while it does.
//! The connection's next request waits for that save before it reads anything stored, so it
//! sees the connection as if the save had been made before answering; a save that fails leaves
//! the position unknown (the client starts the connection over, as after a lost position).
//! Saves still running at shutdown are waited for ([`Services::finish_sliding_sync_saves`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use myelin_core::{ErrCode, MatrixError};
use myelin_store::{NewSlidingSyncPosition, SlidingSyncConnection};
use parking_lot::Mutex;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::lists::RoomEntry;
use super::request::{RequiredState, RoomParams};
use crate::auth::Requester;
use crate::sync::SyncToken;
use crate::util::now_ms;
use crate::{Error, Result, Services};

/// The most connections (`conn_id`s) one device keeps; the least recently used go first.
pub const MAX_CONNECTIONS_PER_DEVICE: usize = 10;

/// The most positions in a row whose stored form builds on the one before (see the module
/// documentation): reading a position back reads at most this many more.
pub const MAX_BUILT_ON: usize = 16;

/// The most sent rooms held over all cached connection states (about 150 bytes each).
const MAX_CACHED_ROOMS: usize = 200_000;

/// (user, device, `conn_id`).
type ConnectionKey = (String, String, String);

/// Where the save of a position stands: `None` while it runs, then whether it was stored.
#[derive(Clone)]
struct Saved(watch::Receiver<Option<bool>>);

impl Saved {
    fn pending() -> (watch::Sender<Option<bool>>, Saved) {
        let (sender, receiver) = watch::channel(None);
        (sender, Saved(receiver))
    }

    /// Waits for the save to end: whether the position was stored (a save whose task ended
    /// without saying did not store it).
    async fn outcome(mut self) -> bool {
        self.0.wait_for(Option::is_some).await.is_ok_and(|outcome| *outcome == Some(true))
    }
}

/// Each connection's newest position as this process handed it out, with its state, so that
/// the connection's next request, which names that position, is not read back from the store
/// and parsed (a connection that sent thousands of rooms is tens of kilobytes of JSON): the
/// store is only asked whether it still keeps the position, so what is known and unknown stays
/// as stored. A position's state never changes once handed out. Least recently used
/// connections go first past [`MAX_CACHED_ROOMS`] (a connection whose save is still running
/// then reads the store without waiting for it: at worst its position is unknown).
pub struct ConnectionCache {
    inner: Mutex<CacheInner>,
}

/// One connection's newest position handed out, its state, and where the position's save is.
struct Cached {
    pos: i64,
    state: Arc<ConnectionState>,
    saved: Saved,
}

struct CacheInner {
    entries: lru::LruCache<ConnectionKey, Cached>,
    /// Rooms held over all entries.
    held: usize,
}

impl Default for ConnectionCache {
    fn default() -> Self {
        ConnectionCache { inner: Mutex::new(CacheInner { entries: lru::LruCache::unbounded(), held: 0 }) }
    }
}

impl ConnectionCache {
    /// The connection's newest position, its state and its save.
    fn get(&self, key: &ConnectionKey) -> Option<(i64, Arc<ConnectionState>, Saved)> {
        let mut inner = self.inner.lock();
        inner.entries.get(key).map(|cached| (cached.pos, cached.state.clone(), cached.saved.clone()))
    }

    /// Records the connection's newest position, its state and its save (replacing the one
    /// before, whose save is returned). `false` (nothing recorded) for a state over the bound.
    fn put(
        &self,
        key: ConnectionKey,
        pos: i64,
        state: Arc<ConnectionState>,
        saved: Saved,
    ) -> (bool, Option<Saved>) {
        let mut inner = self.inner.lock();
        let rooms = state.rooms.len();
        let before = inner.entries.pop(&key).map(|old| {
            inner.held -= old.state.rooms.len();
            old.saved
        });
        if rooms > MAX_CACHED_ROOMS {
            return (false, before);
        }
        inner.held += rooms;
        inner.entries.push(key, Cached { pos, state, saved });
        while inner.held > MAX_CACHED_ROOMS {
            let Some((_, out)) = inner.entries.pop_lru() else { break };
            inner.held -= out.state.rooms.len();
        }
        (true, before)
    }

    /// Forgets the connections of some devices of a user, handing back their saves.
    fn forget_devices(&self, user_id: &str, device_ids: &[String]) -> Vec<Saved> {
        let mut inner = self.inner.lock();
        let keys: Vec<ConnectionKey> = inner
            .entries
            .iter()
            .filter(|((user, device, _), _)| user == user_id && device_ids.contains(device))
            .map(|(key, _)| key.clone())
            .collect();
        let mut saves = Vec::new();
        for key in keys {
            if let Some(out) = inner.entries.pop(&key) {
                inner.held -= out.state.rooms.len();
                saves.push(out.saved);
            }
        }
        saves
    }
}

/// What a room was last sent with on this connection.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SentRoom {
    /// The event stream position the room was sent up to.
    pub upto: i64,
    /// The membership it was sent as.
    pub membership: String,
    /// Shared between the rooms sent with the same (a connection's rooms mostly are).
    pub required_state: Arc<RequiredState>,
    pub timeline_limit: i64,
    /// The users whose member events `$LAZY` has sent since the room was last sent in full
    /// (they are not sent again for their timeline events, only when they change).
    pub lazy_members: Arc<BTreeSet<String>>,
}

/// The most `$LAZY` members remembered per room; past it the set starts again (members
/// forgotten are sent again when they next appear, which clients take as they are).
pub const MAX_LAZY_MEMBERS_REMEMBERED: usize = 256;

impl SentRoom {
    /// What a room is sent with now: up to what the user may see of it at `now`. `prev`: what
    /// it was sent with before, whose `required_state` is shared when it is the same.
    pub(crate) fn new(entry: &RoomEntry, params: &RoomParams, now: i64, prev: Option<&SentRoom>) -> SentRoom {
        let required_state = match prev {
            Some(prev) if prev.required_state == params.required_state => prev.required_state.clone(),
            _ => params.required_state.clone(),
        };
        let lazy_members = prev
            .filter(|prev| prev.membership == entry.membership)
            .map(|prev| prev.lazy_members.clone())
            .unwrap_or_default();
        SentRoom {
            upto: entry.upto(now),
            membership: entry.membership.to_owned(),
            required_state,
            timeline_limit: params.timeline_limit,
            lazy_members,
        }
    }
}

/// The state of a connection as of one position.
#[derive(Clone, Debug, Default)]
pub struct ConnectionState {
    /// Where every stream stood when the position was handed out (its `to_string`).
    pub token: String,
    /// Shared with the states before (a persistent map: a request starts from the map of the
    /// one it follows without copying it, however many rooms were sent).
    pub rooms: imbl::HashMap<Arc<str>, Arc<SentRoom>>,
    /// Where each extension stood when it was last sent (tokens, by extension name).
    pub extensions: BTreeMap<String, String>,
    /// The user's room set ([`super::listing::RoomList::rooms_id`]) every room of `rooms` is
    /// known to be in (0: none); not stored.
    pub rooms_checked_in: u64,
    /// The positions whose stored forms its stored form builds on, oldest first (none: it is
    /// stored whole); not stored.
    pub builds_on: Vec<i64>,
    /// The rooms recorded as sent, and those forgotten, since the state it was worked out
    /// from (what it is stored as when it builds on that state's position); not stored.
    /// Rooms are never changed in place: a room sent again is a new record.
    pub changed: Vec<Arc<str>>,
    pub forgotten: Vec<Arc<str>>,
}

/// How a connection's state is stored: each distinct `required_state` once, and each room as
/// `[upto, membership, index of its required_state, timeline_limit]` (a connection can have
/// sent thousands of rooms). Whole, or (`base`) the changes from the state of an earlier
/// position: the rooms sent since (`sent`, `lazy`) and those forgotten (`forgotten`).
#[derive(Serialize, Deserialize)]
struct StoredState {
    token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    forgotten: Vec<String>,
    #[serde(default)]
    required_states: Vec<RequiredState>,
    #[serde(default)]
    sent: BTreeMap<String, (i64, String, usize, i64)>,
    /// The form before `sent`: each room with its own `required_state`.
    #[serde(default, skip_serializing)]
    rooms: BTreeMap<String, StoredRoomV1>,
    #[serde(default)]
    extensions: BTreeMap<String, String>,
    /// Each room's `$LAZY` members sent (rooms with none left out).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    lazy: BTreeMap<String, Arc<BTreeSet<String>>>,
}

#[derive(Deserialize)]
struct StoredRoomV1 {
    upto: i64,
    membership: String,
    required_state: RequiredState,
    timeline_limit: i64,
}

impl ConnectionState {
    pub fn token(&self) -> Result<SyncToken> {
        SyncToken::parse(&self.token)
    }

    /// Where an extension stood, read against the streams now (in-memory ones restart).
    pub fn extension(&self, name: &str, current: SyncToken) -> Option<SyncToken> {
        let mut token = self.extensions.get(name).and_then(|token| SyncToken::parse(token).ok())?;
        token.forget_restarted(current);
        Some(token)
    }

    /// A state worked out from `previous`: its rooms and extensions to start from.
    pub fn following(previous: &ConnectionState, token: String, rooms_checked_in: u64) -> ConnectionState {
        ConnectionState {
            token,
            rooms: previous.rooms.clone(),
            extensions: previous.extensions.clone(),
            rooms_checked_in,
            ..ConnectionState::default()
        }
    }

    /// Records a room as sent now.
    pub fn record_room(&mut self, room_id: &str, sent: SentRoom) {
        let room_id: Arc<str> = Arc::from(room_id);
        self.changed.push(room_id.clone());
        self.rooms.insert(room_id, Arc::new(sent));
    }

    /// Forgets the rooms `keep` refuses.
    pub fn retain_rooms(&mut self, keep: impl Fn(&str) -> bool) {
        let mut forgotten = Vec::new();
        self.rooms.retain(|room, _| {
            let kept = keep(room);
            if !kept {
                forgotten.push(room.clone());
            }
            kept
        });
        self.forgotten.extend(forgotten);
    }

    /// The whole stored form (see [`StoredState`]).
    fn to_text(&self) -> Result<String> {
        self.stored_form(self.rooms.iter(), None, Vec::new())
    }

    /// The stored form as the changes from the state it was worked out from, stored at `base`.
    fn to_text_from(&self, base: i64) -> Result<String> {
        let changed: BTreeSet<&Arc<str>> = self.changed.iter().collect();
        let rooms = changed.into_iter().filter_map(|room| Some((room, self.rooms.get(room)?)));
        let forgotten: BTreeSet<String> = self
            .forgotten
            .iter()
            .filter(|room| !self.rooms.contains_key(*room))
            .map(|room| room.to_string())
            .collect();
        self.stored_form(rooms, Some(base), forgotten.into_iter().collect())
    }

    fn stored_form<'a>(
        &self,
        rooms: impl Iterator<Item = (&'a Arc<str>, &'a Arc<SentRoom>)>,
        base: Option<i64>,
        forgotten: Vec<String>,
    ) -> Result<String> {
        // By room ID, so that the same state is always stored the same.
        let rooms: BTreeMap<&Arc<str>, &Arc<SentRoom>> = rooms.collect();
        let mut distinct: Vec<&Arc<RequiredState>> = Vec::new();
        let mut sent = BTreeMap::new();
        let mut lazy = BTreeMap::new();
        for (room_id, room) in rooms {
            let index = match distinct
                .iter()
                .position(|known| Arc::ptr_eq(known, &room.required_state) || **known == room.required_state)
            {
                Some(index) => index,
                None => {
                    distinct.push(&room.required_state);
                    distinct.len() - 1
                }
            };
            sent.insert(
                room_id.to_string(),
                (room.upto, room.membership.clone(), index, room.timeline_limit),
            );
            if !room.lazy_members.is_empty() {
                lazy.insert(room_id.to_string(), room.lazy_members.clone());
            }
        }
        let stored = StoredState {
            token: self.token.clone(),
            base,
            forgotten,
            required_states: distinct.into_iter().map(|state| (**state).clone()).collect(),
            sent,
            rooms: BTreeMap::new(),
            extensions: self.extensions.clone(),
            lazy,
        };
        serde_json::to_string(&stored).map_err(Error::internal)
    }

    /// Reads a whole stored form; `None` when it does not parse or is not whole.
    #[cfg(test)]
    fn from_text(text: &str) -> Option<ConnectionState> {
        Self::assemble(vec![(0, read_stored(text)?)])
    }

    /// The state at a position from its stored form and those it builds on, newest first
    /// (each built on the next, the last whole); `None` when they do not fit together.
    fn assemble(forms: Vec<(i64, StoredState)>) -> Option<ConnectionState> {
        let mut state: Option<ConnectionState> = None;
        let mut builds_on = Vec::new();
        let mut below: Option<i64> = None;
        for (pos, form) in forms.into_iter().rev() {
            if form.base != below {
                return None;
            }
            state = Some(form.into_state(state)?);
            builds_on.extend(below);
            below = Some(pos);
        }
        let mut state = state?;
        state.builds_on = builds_on;
        Some(state)
    }
}

/// A stored form as written; `None` when it does not parse.
fn read_stored(text: &str) -> Option<StoredState> {
    serde_json::from_str(text).ok()
}

impl StoredState {
    /// The state it stands for, given the state of the position it builds on (`None` for a
    /// whole one).
    fn into_state(mut self, base: Option<ConnectionState>) -> Option<ConnectionState> {
        let mut rooms = base.map(|base| base.rooms).unwrap_or_default();
        for room in &self.forgotten {
            rooms.remove(room.as_str());
        }
        let shared: Vec<Arc<RequiredState>> = self.required_states.into_iter().map(Arc::new).collect();
        for (room_id, (upto, membership, index, timeline_limit)) in self.sent {
            let required_state = shared.get(index)?.clone();
            let lazy_members = self.lazy.remove(&room_id).unwrap_or_default();
            let room = SentRoom { upto, membership, required_state, timeline_limit, lazy_members };
            rooms.insert(Arc::from(room_id), Arc::new(room));
        }
        for (room_id, room) in self.rooms {
            let StoredRoomV1 { upto, membership, required_state, timeline_limit } = room;
            let required_state = Arc::new(required_state);
            let lazy_members = Arc::default();
            let room = SentRoom { upto, membership, required_state, timeline_limit, lazy_members };
            rooms.insert(Arc::from(room_id), Arc::new(room));
        }
        Some(ConnectionState {
            token: self.token,
            rooms,
            extensions: self.extensions,
            ..ConnectionState::default()
        })
    }
}

fn unknown_pos() -> Error {
    MatrixError::new(ErrCode::UnknownPos, "Unknown position").into()
}

fn cache_key(requester: &Requester, conn_id: &str) -> ConnectionKey {
    let connection = connection(requester, conn_id);
    (connection.user_id.to_owned(), connection.device_id.to_owned(), conn_id.to_owned())
}

fn connection<'a>(requester: &'a Requester, conn_id: &'a str) -> SlidingSyncConnection<'a> {
    SlidingSyncConnection {
        user_id: requester.user_id.as_str(),
        device_id: requester.device_id.as_deref().unwrap_or_default(),
        conn_id,
    }
}

impl Services {
    /// The state of a connection at `pos`: `M_UNKNOWN_POS` unless this user's device handed it
    /// out on this connection and still keeps it.
    pub(crate) async fn sliding_sync_connection(
        &self,
        requester: &Requester,
        conn_id: &str,
        pos: i64,
    ) -> Result<Arc<ConnectionState>> {
        if let Some((newest, state, saved)) = self.sliding.connections.get(&cache_key(requester, conn_id)) {
            // The connection's last save first: it may store `pos` or forget it.
            let stored = saved.outcome().await;
            if newest == pos {
                let kept = stored
                    && self.store.sliding_sync_position_kept(connection(requester, conn_id), pos).await?;
                return if kept { Ok(state) } else { Err(unknown_pos()) };
            }
        }
        let corrupt = || {
            tracing::warn!(
                conn_id,
                "a stored sliding sync connection does not read; its position is unknown"
            );
            unknown_pos()
        };
        let stored = connection(requester, conn_id);
        let text = self.store.sliding_sync_position(stored, pos).await?.ok_or_else(unknown_pos)?;
        let mut forms = vec![(pos, read_stored(&text).ok_or_else(corrupt)?)];
        while let Some(base) = forms.last().and_then(|(_, form)| form.base) {
            if forms.len() > MAX_BUILT_ON {
                return Err(corrupt());
            }
            let text =
                self.store.sliding_sync_position_built_on(stored, base).await?.ok_or_else(unknown_pos)?;
            forms.push((base, read_stored(&text).ok_or_else(corrupt)?));
        }
        ConnectionState::assemble(forms).map(Arc::new).ok_or_else(corrupt)
    }

    /// Hands out a new position of a connection with its state (worked out from `previous`,
    /// the position the request came with and its state), stored by a task of its own after
    /// the previous save of the connection (see the module documentation).
    pub(crate) async fn save_sliding_sync_connection(
        &self,
        requester: &Requester,
        conn_id: &str,
        previous: Option<(i64, &ConnectionState)>,
        mut state: ConnectionState,
    ) -> Result<i64> {
        // Random, so that a position of a connection lost (or started afresh) is never
        // mistaken for one of its successor.
        let pos: i64 = rand::rng().random_range(1..i64::MAX >> 11);
        let kept = previous.map(|(pos, _)| pos);
        let kept_builds_on = previous.map(|(_, state)| state.builds_on.clone()).unwrap_or_default();
        state.builds_on = match previous {
            Some((base, previous)) if previous.builds_on.len() < MAX_BUILT_ON => {
                previous.builds_on.iter().copied().chain([base]).collect()
            }
            _ => Vec::new(),
        };
        let state = Arc::new(state);
        let key = cache_key(requester, conn_id);
        let (done, saved) = Saved::pending();
        let (held, before) = self.sliding.connections.put(key.clone(), pos, state.clone(), saved);
        let (user_id, device_id, conn_id) = key;
        let services = self.clone();
        let save = async move {
            if let Some(before) = before {
                before.outcome().await;
            }
            let connection =
                SlidingSyncConnection { user_id: &user_id, device_id: &device_id, conn_id: &conn_id };
            let outcome =
                services.store_connection_state(connection, kept, &kept_builds_on, pos, &state).await;
            if let Err(error) = &outcome {
                tracing::warn!(%error, "a sliding sync position was not stored; the client starts over");
            }
            done.send_replace(Some(outcome.is_ok()));
            outcome
        };
        if !held {
            // Too big to hold in memory: stored before it is handed out.
            save.await?;
            return Ok(pos);
        }
        self.sliding.saves.spawn(save);
        Ok(pos)
    }

    /// Stores a position: as the changes from the one it builds on, or whole when it builds on
    /// none or one of those it builds on is no longer stored.
    async fn store_connection_state(
        &self,
        connection: SlidingSyncConnection<'_>,
        kept: Option<i64>,
        kept_builds_on: &[i64],
        pos: i64,
        state: &ConnectionState,
    ) -> Result<()> {
        let now = now_ms() as i64;
        if let Some(&base) = state.builds_on.last() {
            let text = state.to_text_from(base)?;
            let new = NewSlidingSyncPosition {
                kept,
                kept_builds_on,
                pos,
                builds_on: &state.builds_on,
                state: &text,
            };
            if self.store.save_sliding_sync_position(connection, new, now, MAX_CONNECTIONS_PER_DEVICE).await?
            {
                return Ok(());
            }
        }
        let text = state.to_text()?;
        let new = NewSlidingSyncPosition { kept, kept_builds_on, pos, builds_on: &[], state: &text };
        self.store.save_sliding_sync_position(connection, new, now, MAX_CONNECTIONS_PER_DEVICE).await?;
        Ok(())
    }

    /// Forgets the connections of devices about to be deleted, once their positions handed out
    /// are stored (so that none is stored after the device's positions are deleted).
    pub(crate) async fn forget_sliding_sync_connections(&self, user_id: &str, device_ids: &[String]) {
        for saved in self.sliding.connections.forget_devices(user_id, device_ids) {
            saved.outcome().await;
        }
    }

    /// Waits (up to `limit`) for the positions handed out to be stored. For shutdown, once no
    /// request is being answered.
    pub async fn finish_sliding_sync_saves(&self, limit: std::time::Duration) {
        self.sliding.saves.close();
        if tokio::time::timeout(limit, self.sliding.saves.wait()).await.is_err() {
            tracing::warn!("some sliding sync positions were not stored before shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_holds_each_connections_newest_state_within_its_bound() {
        let cache = ConnectionCache::default();
        let key = |conn: &str| ("@u:x".to_owned(), "DEVICE".to_owned(), conn.to_owned());
        let state = |rooms: usize| {
            let mut state = ConnectionState::default();
            for i in 0..rooms {
                state.rooms.insert(Arc::from(format!("!{i}:x")), Arc::default());
            }
            Arc::new(state)
        };
        let saved = || Saved::pending().1;
        let pos = |cache: &ConnectionCache, conn: &str| cache.get(&key(conn)).map(|(pos, _, _)| pos);
        let held = |cache: &ConnectionCache| cache.inner.lock().held;
        assert!(cache.put(key("a"), 1, state(2), saved()).0);
        assert_eq!(pos(&cache, "a"), Some(1));
        assert_eq!(pos(&cache, "b"), None, "only the connection saved");
        let (_, before) = cache.put(key("a"), 2, state(3), saved());
        assert!(before.is_some(), "the save before is handed back, to follow");
        assert_eq!(cache.get(&key("a")).map(|(pos, s, _)| (pos, s.rooms.len())), Some((2, 3)));
        assert_eq!(held(&cache), 3);
        // Past the bound, the least recently used connections go.
        cache.put(key("b"), 1, state(MAX_CACHED_ROOMS - 3), saved());
        assert_eq!(held(&cache), MAX_CACHED_ROOMS);
        assert_eq!(pos(&cache, "a"), Some(2));
        cache.put(key("c"), 1, state(1), saved());
        assert_eq!(pos(&cache, "b"), None, "b was the least recently used");
        assert_eq!((pos(&cache, "a"), pos(&cache, "c")), (Some(2), Some(1)));
        assert_eq!(held(&cache), 4);
        // A state bigger than the bound is not held (nor is the one it replaces).
        let (taken, before) = cache.put(key("a"), 3, state(MAX_CACHED_ROOMS + 1), saved());
        assert!(!taken && before.is_some());
        assert_eq!(pos(&cache, "a"), None);
        assert_eq!(held(&cache), 1);
        // A deleted device's connections go, handing back their saves.
        let other_device = ("@u:x".to_owned(), "OTHER".to_owned(), "a".to_owned());
        cache.put(other_device.clone(), 1, state(2), saved());
        let saves = cache.forget_devices("@u:x", &["DEVICE".to_owned()]);
        assert_eq!(saves.len(), 1, "c of DEVICE");
        assert_eq!(pos(&cache, "c"), None);
        assert_eq!(cache.get(&other_device).map(|(pos, _, _)| pos), Some(1), "another device's stays");
        assert_eq!(held(&cache), 2);
    }

    #[tokio::test]
    async fn a_save_outcome_is_waited_for_and_a_vanished_save_stored_nothing() {
        let (done, saved) = Saved::pending();
        let waiting = tokio::spawn(saved.clone().outcome());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the outcome waits for the save");
        done.send_replace(Some(true));
        assert!(waiting.await.unwrap());
        let (done, saved) = Saved::pending();
        done.send_replace(Some(false));
        assert!(!saved.outcome().await, "a failed save");
        let (done, saved) = Saved::pending();
        drop(done);
        assert!(!saved.outcome().await, "a save whose task ended without saying");
    }

    fn pairs(pairs: &[(&str, &str)]) -> RequiredState {
        pairs.iter().map(|(t, k)| (t.to_string(), k.to_string())).collect()
    }

    #[test]
    fn the_stored_form_keeps_each_required_state_once_and_reads_back() {
        let list = Arc::new(pairs(&[("m.room.name", ""), ("m.room.member", "$LAZY")]));
        let other = Arc::new(pairs(&[("*", "*")]));
        let room = |upto, required_state: &Arc<RequiredState>| {
            Arc::new(SentRoom {
                upto,
                membership: "join".to_owned(),
                required_state: required_state.clone(),
                timeline_limit: 1,
                lazy_members: Arc::default(),
            })
        };
        let mut state = ConnectionState { token: "s1_2".to_owned(), ..Default::default() };
        state.rooms.insert(Arc::from("!a:x"), room(5, &list));
        state.rooms.insert(Arc::from("!b:x"), room(6, &other));
        // Equal but not shared: still stored once.
        state.rooms.insert(Arc::from("!c:x"), room(7, &Arc::new((*list).clone())));
        state.extensions.insert("to_device".to_owned(), "3".to_owned());
        // `$LAZY` members sent: kept for the rooms that have some.
        let lazy: BTreeSet<String> = ["@b:x".to_owned(), "@c:x".to_owned()].into();
        Arc::make_mut(state.rooms.get_mut("!a:x").unwrap()).lazy_members = Arc::new(lazy);
        let text = state.to_text().unwrap();
        let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(stored["required_states"].as_array().unwrap().len(), 2, "{text}");
        assert_eq!(stored["sent"]["!c:x"], serde_json::json!([7, "join", 0, 1]), "{text}");
        assert_eq!(stored["lazy"], serde_json::json!({"!a:x": ["@b:x", "@c:x"]}), "{text}");
        let read = ConnectionState::from_text(&text).unwrap();
        assert_eq!(read.rooms, state.rooms);
        assert_eq!((read.token, read.extensions), (state.token, state.extensions));
        assert!(Arc::ptr_eq(&read.rooms["!a:x"].required_state, &read.rooms["!c:x"].required_state));
    }

    #[test]
    fn a_state_stored_as_changes_reads_back_from_those_it_builds_on() {
        let list = Arc::new(pairs(&[("m.room.name", "")]));
        let room = |upto| SentRoom {
            upto,
            membership: "join".to_owned(),
            required_state: list.clone(),
            timeline_limit: 1,
            lazy_members: Arc::default(),
        };
        let mut first = ConnectionState { token: "s1".to_owned(), ..Default::default() };
        for id in ["!a:x", "!b:x", "!c:x"] {
            first.record_room(id, room(1));
        }
        first.extensions.insert("typing".to_owned(), "1".to_owned());
        let whole = first.to_text().unwrap();
        // The next: one room sent again (with a lazy member), one sent first, one forgotten,
        // one sent and forgotten.
        let mut second = ConnectionState::following(&first, "s2".to_owned(), 0);
        second
            .record_room("!a:x", SentRoom { lazy_members: Arc::new(["@m:x".to_owned()].into()), ..room(2) });
        second.record_room("!d:x", room(2));
        second.record_room("!e:x", room(2));
        second.retain_rooms(|room| room != "!b:x" && room != "!e:x");
        second.extensions.insert("typing".to_owned(), "2".to_owned());
        let changes = second.to_text_from(7).unwrap();
        let stored: serde_json::Value = serde_json::from_str(&changes).unwrap();
        assert_eq!(stored["base"], 7, "{changes}");
        assert_eq!(stored["forgotten"], serde_json::json!(["!b:x", "!e:x"]), "{changes}");
        let sent: Vec<&String> = stored["sent"].as_object().unwrap().keys().collect();
        assert_eq!(sent, ["!a:x", "!d:x"], "only the rooms sent: {changes}");
        // Then one with nothing sent.
        let third = ConnectionState::following(&second, "s3".to_owned(), 0);
        let nothing = third.to_text_from(8).unwrap();
        assert!(!nothing.contains("!a:x"), "{nothing}");

        let read = |forms: &[(i64, &str)]| {
            ConnectionState::assemble(
                forms.iter().map(|(pos, text)| (*pos, read_stored(text).unwrap())).collect(),
            )
        };
        let back = read(&[(9, &nothing), (8, &changes), (7, &whole)]).unwrap();
        assert_eq!(back.rooms, third.rooms);
        assert_eq!((back.token.as_str(), &back.extensions), ("s3", &third.extensions));
        assert_eq!(back.builds_on, [7, 8]);
        let back = read(&[(8, &changes), (7, &whole)]).unwrap();
        assert_eq!((back.rooms, back.builds_on), (second.rooms.clone(), vec![7]));
        assert_eq!(read(&[(7, &whole)]).unwrap().builds_on, Vec::<i64>::new());
        // Forms that do not fit together: changes without what they build on, or on another
        // position than the one below them.
        assert!(read(&[(8, &changes)]).is_none());
        assert!(read(&[(8, &changes), (6, &whole)]).is_none());
        assert!(read(&[(9, &nothing), (7, &whole)]).is_none());
        assert!(read(&[(7, &whole), (8, &changes)]).is_none());
        assert!(ConnectionState::from_text(&changes).is_none());
    }

    #[test]
    fn the_earlier_stored_form_still_reads_and_garbage_does_not() {
        let earlier = r#"{"token":"s1","rooms":{"!a:x":{"upto":4,"membership":"invite",
            "required_state":[["m.room.name",""]],"timeline_limit":2}},"extensions":{}}"#;
        let read = ConnectionState::from_text(earlier).unwrap();
        assert_eq!(read.rooms["!a:x"].upto, 4);
        assert_eq!(*read.rooms["!a:x"].required_state, pairs(&[("m.room.name", "")]));
        assert!(ConnectionState::from_text("{").is_none());
        let bad_index = r#"{"token":"s1","required_states":[],"sent":{"!a:x":[1,"join",3,1]}}"#;
        assert!(ConnectionState::from_text(bad_index).is_none());
    }
}
