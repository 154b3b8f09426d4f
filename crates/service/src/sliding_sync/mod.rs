//! Simplified sliding sync (MSC4186): `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.
//!
//! A request names lists (windows over the user's rooms, newest `bump_stamp` first, after
//! filters) and room subscriptions, each with what to send of every room (`required_state`,
//! `timeline_limit`), and extensions. The answer gives each list's count, the rooms in the
//! lists' ranges and the subscribed rooms (each only when something changed since the
//! connection last sent it: see `room`), the extensions, and a new `pos`.
//!
//! Submodules: `request` (parsing and bounds), `lists` (the rooms, filters, windows), `room`
//! (one room's data), `connection` (per-connection state, stored so that it survives
//! restarts), `extensions`. Timelines, visibility, state, unread counts, account data,
//! receipts, typing, to-device and device lists are read through the same functions as
//! `/sync` (`crate::sync`); the long-poll waits on the same notifier.

pub mod connection;
pub mod extensions;
pub mod listing;
pub mod lists;
pub mod request;
pub mod room;

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ruma::{OwnedRoomId, RoomId};

use self::connection::{ConnectionState, SentRoom};
use self::extensions::{ExtensionContext, Extensions, advance_extensions};
use self::lists::RoomEntry;
use self::request::{RequiredState, RoomParams, SlidingSyncRequest};
use self::room::{Answer, SlidingRoom};
use crate::auth::Requester;
use crate::sync::{MAX_TIMEOUT_MS, SyncToken};
use crate::{Result, Services};

/// The answer to a sliding sync request.
#[derive(Clone, Debug, Default)]
pub struct SlidingSyncResponse {
    pub pos: String,
    /// Each list's count of matching rooms.
    pub lists: BTreeMap<String, u64>,
    pub rooms: BTreeMap<OwnedRoomId, SlidingRoom>,
    pub extensions: Extensions,
}

/// One computed answer, before it is stored.
struct Computed {
    response: SlidingSyncResponse,
    state: ConnectionState,
}

/// What sliding sync keeps in memory between requests.
#[derive(Default)]
pub struct SlidingSyncMemory {
    /// Each user's room list as sliding sync sorts it.
    pub(crate) listings: listing::Listings,
    /// Each connection's newest state, kept when it is handed out.
    pub(crate) connections: connection::ConnectionCache,
    /// The tasks storing the positions handed out.
    pub(crate) saves: tokio_util::task::TaskTracker,
}

/// Adds a room to those to consider with what a list or subscription asks of it.
fn want<'a>(
    wanted: &mut BTreeMap<&'a RoomId, Cow<'a, RoomParams>>,
    room: &'a RoomId,
    params: &'a RoomParams,
) {
    match wanted.entry(room) {
        Entry::Vacant(entry) => {
            entry.insert(Cow::Borrowed(params));
        }
        Entry::Occupied(mut entry) => {
            if !std::ptr::eq(&**entry.get(), params) {
                entry.get_mut().to_mut().merge(params);
            }
        }
    }
}

impl Services {
    /// Sliding sync: answers at once when there is news (or on a fresh connection, or with no
    /// `timeout`), otherwise waits for news up to `timeout`.
    pub async fn sliding_sync(
        &self,
        requester: &Requester,
        request: SlidingSyncRequest,
    ) -> Result<SlidingSyncResponse> {
        requester.check_auth_blocking_for(self).await?;
        let _active = self.active_syncs.start(&requester.user_id);
        let mut request = request;
        let previous = match request.pos {
            Some(pos) => Some(self.sliding_sync_connection(requester, &request.conn_id, pos).await?),
            None => None,
        };
        if let Some(previous) = previous.as_deref() {
            share_required_states(&mut request, previous);
        }
        self.ack_sliding_to_device(requester, &request.extensions).await?;
        let listener = self.notifier.listener(&requester.user_id);
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(request.timeout_ms.min(MAX_TIMEOUT_MS));
        let computed = loop {
            let notified = listener.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let computed = self.compute_sliding_sync(requester, &request, previous.as_deref()).await?;
            let news = !computed.response.rooms.is_empty() || computed.response.extensions.has_news();
            if previous.is_none() || news || tokio::time::Instant::now() >= deadline {
                break computed;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.shutdown.cancelled() => break computed,
            }
        };
        let Computed { mut response, state } = computed;
        let worked_from = request.pos.zip(previous.as_deref());
        let pos = self.save_sliding_sync_connection(requester, &request.conn_id, worked_from, state).await?;
        response.pos = pos.to_string();
        Ok(response)
    }

    async fn compute_sliding_sync(
        &self,
        requester: &Requester,
        request: &SlidingSyncRequest,
        previous: Option<&ConnectionState>,
    ) -> Result<Computed> {
        let user_id = &requester.user_id;
        let now = self.current_sync_token();
        let since: Option<SyncToken> = previous.map(ConnectionState::token).transpose()?;
        let rooms_view = self.sliding_sync_rooms(user_id, since.map(|s| s.events), now).await?;
        let windows = self.sliding_sync_lists(&request.lists, &rooms_view).await?;

        // Every room to consider, with the union of what its lists and subscriptions ask.
        // (Borrowed from the request while a room is in one list or subscription only.)
        let mut wanted: BTreeMap<&RoomId, Cow<'_, RoomParams>> = BTreeMap::new();
        for (name, window) in &windows {
            let params = &request.lists[name].params;
            for room in &window.rooms {
                want(&mut wanted, room, params);
            }
        }
        let mut subscribed = BTreeSet::new();
        for (room, params) in &request.room_subscriptions {
            // Subscriptions to rooms the user has no part in are left out, as if unknown.
            if rooms_view.get(room).is_some() {
                subscribed.insert(room.clone());
                want(&mut wanted, room, params);
            }
        }

        let empty = ConnectionState::default();
        let previous_state = previous.unwrap_or(&empty);
        let mut state = ConnectionState::following(previous_state, now.to_string(), rooms_view.list.rooms_id);
        // Rooms sent before with nothing new are read no further: recorded as sent now, or
        // kept as they were when asked the same as then (they hold no event since).
        let mut to_compute: Vec<(&RoomEntry, &RoomParams)> = Vec::new();
        let mut compared = RequiredStateComparisons::default();
        for (room_id, params) in &wanted {
            let Some(entry) = rooms_view.get(room_id) else { continue };
            let prev = previous_state.rooms.get(room_id.as_str()).map(|room| &**room);
            let asked = prev.map(|prev| compared.compare(&params.required_state, &prev.required_state));
            if self.sliding_room_unchanged(entry, params, prev, asked.is_some_and(|a| a.covered)).await? {
                let same_ask = asked.is_some_and(|a| a.equal)
                    && prev.is_some_and(|prev| prev.timeline_limit == params.timeline_limit);
                if !same_ask {
                    state.record_room(room_id.as_str(), SentRoom::new(entry, params, now.events, prev));
                }
            } else {
                to_compute.push((entry, params));
            }
        }
        let to_read: Vec<&RoomEntry> =
            to_compute.iter().map(|(entry, _)| *entry).filter(|e| e.stripped.is_none()).collect();
        let ids: Vec<&RoomId> = to_read.iter().map(|e| &*e.room_id).collect();
        let joined: Vec<(&str, i64)> = to_read
            .iter()
            .filter(|e| e.membership == "join")
            .map(|e| (e.room_id.as_str(), e.membership_position))
            .collect();
        let answer = Answer {
            user_id,
            since,
            now,
            members: self.joined_and_invited_members_cached(&ids).await?,
            unread: self.store.unread_counts_in_rooms(user_id.as_str(), &joined).await?,
        };
        let mut rooms = BTreeMap::new();
        let mut initial_rooms = BTreeSet::new();
        for (entry, params) in to_compute {
            let room_id = &entry.room_id;
            let prev = previous_state.rooms.get(room_id.as_str()).map(|room| &**room);
            let (room, sent) = self.sliding_sync_room(&answer, entry, params, prev).await?;
            state.record_room(room_id.as_str(), sent);
            if let Some(room) = room {
                if room.initial {
                    initial_rooms.insert(room_id.clone());
                }
                rooms.insert(room_id.clone(), room);
            }
        }
        // Rooms the user no longer has any part in are forgotten by the connection (the rooms
        // added above are in the set; those before it were checked against the same set, or
        // are checked now).
        if previous_state.rooms_checked_in != rooms_view.list.rooms_id {
            state.retain_rooms(|room| {
                <&RoomId>::try_from(room).is_ok_and(|room| rooms_view.get(room).is_some())
            });
        }

        let extensions = self
            .sliding_sync_extensions(&ExtensionContext {
                requester,
                request,
                windows: &windows,
                subscribed: &subscribed,
                initial_rooms: &initial_rooms,
                previous: previous_state,
                now,
            })
            .await?;
        advance_extensions(&mut state, &request.extensions, now);
        let lists = windows.iter().map(|(name, window)| (name.clone(), window.count)).collect();
        Ok(Computed { response: SlidingSyncResponse { pos: String::new(), lists, rooms, extensions }, state })
    }
}

/// Makes the request's `required_state` sets the very ones (`Arc`s) the connection's rooms
/// were sent with where they are equal (looked for among a few of its rooms), so that rooms
/// sent by one request after another share one set, and comparing sets is comparing
/// addresses.
fn share_required_states(request: &mut SlidingSyncRequest, previous: &ConnectionState) {
    let mut sent: Vec<&Arc<RequiredState>> = Vec::new();
    for room in previous.rooms.values().take(16) {
        if !sent.iter().any(|known| Arc::ptr_eq(known, &room.required_state)) {
            sent.push(&room.required_state);
        }
    }
    let asked = request
        .lists
        .values_mut()
        .map(|list| &mut list.params)
        .chain(request.room_subscriptions.values_mut());
    for params in asked {
        if let Some(same) = sent.iter().find(|known| ***known == params.required_state) {
            params.required_state = Arc::clone(same);
        }
    }
}

/// How a request's `required_state` compares with what a room was sent with.
#[derive(Clone, Copy)]
struct Asked {
    /// It asks for nothing more.
    covered: bool,
    equal: bool,
}

/// [`Asked`] worked out once per pair of sets compared (a connection's rooms mostly share the
/// set they were sent with, and a request's lists theirs), by address.
#[derive(Default)]
struct RequiredStateComparisons {
    known: Vec<((usize, usize), Asked)>,
}

impl RequiredStateComparisons {
    fn compare(&mut self, asked: &Arc<RequiredState>, sent: &Arc<RequiredState>) -> Asked {
        if Arc::ptr_eq(asked, sent) {
            return Asked { covered: true, equal: true };
        }
        let key = (Arc::as_ptr(asked) as usize, Arc::as_ptr(sent) as usize);
        if let Some((_, known)) = self.known.iter().find(|(k, _)| *k == key) {
            return *known;
        }
        let equal = asked == sent;
        let result = Asked { covered: equal || asked.is_subset(sent), equal };
        self.known.push((key, result));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_request_takes_the_required_state_its_rooms_were_sent_with() {
        let body = json!({
            "lists": {"a": {"ranges": [[0, 1]], "timeline_limit": 1, "required_state": [["m.room.name", ""]]}},
            "room_subscriptions": {"!s:x": {"timeline_limit": 1, "required_state": [["m.room.topic", ""]]}},
        });
        let mut request = SlidingSyncRequest::parse(body, None, None).unwrap();
        let sent: Arc<RequiredState> = Arc::new([("m.room.name".to_owned(), String::new())].into());
        let mut previous = ConnectionState::default();
        for room in ["!a:x", "!b:x"] {
            let room_sent = SentRoom { required_state: sent.clone(), ..SentRoom::default() };
            previous.rooms.insert(Arc::from(room), Arc::new(room_sent));
        }
        let asked = request.lists["a"].params.required_state.clone();
        assert!(!Arc::ptr_eq(&asked, &sent));
        share_required_states(&mut request, &previous);
        assert!(Arc::ptr_eq(&request.lists["a"].params.required_state, &sent));
        // A set no room was sent with stays the request's own.
        let topic = &request.room_subscriptions[ruma::room_id!("!s:x")].required_state;
        assert_eq!(**topic, RequiredState::from([("m.room.topic".to_owned(), String::new())]));
        // Compared once, by address.
        let mut compared = RequiredStateComparisons::default();
        let same = compared.compare(&request.lists["a"].params.required_state, &sent);
        assert!(same.equal && same.covered && compared.known.is_empty());
        let wider = compared.compare(&asked, &Arc::new(RequiredState::new()));
        assert!(!wider.equal && !wider.covered && compared.known.len() == 1);
    }
}
