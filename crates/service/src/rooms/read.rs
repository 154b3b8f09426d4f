//! Reading rooms: single events, state, members, the timeline (`/messages`, `/context`), and
//! `timestamp_to_event`, with history visibility applied on every path.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use myelin_core::MatrixError;
use myelin_core::pdu::Pdu;
use ruma::{EventId, OwnedRoomId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::{RoomEvent, RoomHead};
use crate::auth::Requester;
use crate::filter::RoomEventFilter;
use crate::util::now_ms;
use crate::{Error, Result, Services};

/// A pagination token: the gap just after stream position `N`, written `s<N>`, with `N` in
/// `0..i64::MAX` (see [`crate::util::parse_position`]).
pub fn parse_token(token: &str) -> Result<i64> {
    // Sync tokens carry the event position first: `s<N>_...`.
    let digits = token.strip_prefix('s').unwrap_or(token);
    let digits = digits.split(['_', '-', '.']).next().unwrap_or_default();
    crate::util::parse_position(digits)
        .ok_or_else(|| MatrixError::invalid_param(format!("Invalid pagination token {token:?}")).into())
}

/// What `unsigned` tells of the state event an event replaces.
struct Replaced {
    content: Option<Value>,
    sender: Option<Value>,
}

pub fn make_token(position: i64) -> String {
    format!("s{position}")
}

/// What the requester may read of a room.
#[derive(Clone, Debug)]
pub enum ReadAccess {
    /// Joined now: everything current.
    Member,
    /// Left, kicked or banned: up to (and including) the stream position of leaving.
    FormerMember { until: i64, state_group: Option<i64> },
    /// Not a member, but the room is world-readable.
    Peeking,
}

/// A page of events.
pub struct EventPage {
    pub events: Vec<RoomEvent>,
    pub start: String,
    pub end: Option<String>,
    /// Member events for lazy loading.
    pub state: Vec<RoomEvent>,
}

/// A `/messages` request.
#[derive(Clone, Debug, Default)]
pub struct MessagesRequest {
    pub from: Option<String>,
    pub to: Option<String>,
    pub backward: bool,
    pub limit: u64,
    pub filter: RoomEventFilter,
}

/// `/context`'s answer.
pub struct EventContext {
    pub event: RoomEvent,
    pub before: Vec<RoomEvent>,
    pub after: Vec<RoomEvent>,
    pub start: String,
    pub end: String,
    pub state: Vec<RoomEvent>,
}

impl Services {
    /// Establishes what `user_id` may read in a room; `M_FORBIDDEN` otherwise.
    pub async fn read_access(&self, user_id: &UserId, head: &RoomHead) -> Result<ReadAccess> {
        let membership = self.store.membership(head.room_id.as_str(), user_id.as_str()).await?;
        match membership.as_deref() {
            Some("join") => return Ok(ReadAccess::Member),
            Some("leave") | Some("ban") => {
                if let Some(event_id) = head.state_event_id("m.room.member", user_id.as_str())
                    && let Some(stored) = self.store.get_event(event_id.as_str()).await?
                {
                    // Only a user who was joined before has history to read.
                    let was_joined = self
                        .store
                        .membership_at(head.room_id.as_str(), user_id.as_str(), stored.stream_ordering - 1)
                        .await?
                        .is_some_and(|m| m.membership == "join");
                    if was_joined {
                        return Ok(ReadAccess::FormerMember {
                            until: stored.stream_ordering,
                            state_group: stored.state_after,
                        });
                    }
                }
            }
            _ => {}
        }
        if self.world_readable(head).await? {
            return Ok(ReadAccess::Peeking);
        }
        Err(MatrixError::forbidden(format!("User {user_id} not in room {}", head.room_id)).into())
    }

    /// A room the requester may read, with their access.
    pub async fn readable_room(&self, user_id: &UserId, room_id: &RoomId) -> Result<(RoomHead, ReadAccess)> {
        let head = self
            .room_head_snapshot(room_id)
            .await?
            .ok_or_else(|| MatrixError::forbidden(format!("User {user_id} not in room {room_id}")))?;
        let access = self.read_access(user_id, &head).await?;
        Ok((head, access))
    }

    /// Parsed events for stored rows of one room.
    async fn parse_events(
        &self,
        head: &RoomHead,
        stored: Vec<myelin_store::StoredEvent>,
    ) -> Result<Vec<RoomEvent>> {
        stored.iter().map(|s| self.parse_stored(s, &head.rules)).collect()
    }

    /// The client format of an event, with `unsigned` (age, transaction ID for its sender's
    /// device, `prev_content`, `redacted_because`, bundled aggregations).
    pub async fn client_event(&self, event: &RoomEvent, requester: Option<&Requester>) -> Result<Value> {
        self.client_events(std::slice::from_ref(event), requester)
            .await?
            .pop()
            .ok_or_else(|| Error::internal("no client event for an event"))
    }

    /// [`Self::client_event`] of several events, with what they need from the store fetched in
    /// a few queries for all of them (timelines and state in /sync, /messages).
    pub async fn client_events(
        &self,
        events: &[RoomEvent],
        requester: Option<&Requester>,
    ) -> Result<Vec<Value>> {
        let own: Vec<&str> = match requester {
            Some(requester) => events
                .iter()
                // Only messages are sent with a transaction ID (state and membership are not).
                .filter(|e| e.pdu.sender == requester.user_id && e.pdu.state_key.is_none())
                .map(|e| e.pdu.event_id.as_str())
                .collect(),
            None => Vec::new(),
        };
        let txns = if own.is_empty() { HashMap::new() } else { self.store.txns_for_events(&own).await? };
        let previous = self.replaced_events_of(events).await?;
        // An event can only be related to by a later event of its room: none has been noted
        // after the room's newest one, so its relations are not looked for.
        let targets: Vec<&str> = events
            .iter()
            .filter(|e| e.pdu.state_key.is_none())
            .filter(|e| self.rooms.last_event(&e.pdu.room_id).is_none_or(|last| last > e.stream_ordering))
            .map(|e| e.pdu.event_id.as_str())
            .collect();
        let mut counts = if targets.is_empty() {
            HashMap::new()
        } else {
            self.store.bundled_relation_counts_of(&targets).await?
        };
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let txn = txns.get(event.pdu.event_id.as_str());
            let previous = event.replaces_state.as_ref().and_then(|id| previous.get(id));
            let counts = counts.remove(event.pdu.event_id.as_str()).unwrap_or_default();
            out.push(self.client_event_given(event, requester, txn, previous, counts).await?);
        }
        Ok(out)
    }

    /// The state events that `events` replace (for `prev_content`), from the event cache or
    /// else the store, by event ID. A stored event whose JSON does not parse (its row is
    /// corrupt) is logged and gives neither content nor sender: `prev_content` is then left
    /// out, which shows less rather than something made up; failing instead would fail every
    /// /sync and /messages that includes the event, for everyone in the room.
    async fn replaced_events_of(&self, events: &[RoomEvent]) -> Result<HashMap<String, Replaced>> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for replaced in events.iter().filter_map(|e| e.replaces_state.as_ref()) {
            match EventId::parse(replaced).ok().and_then(|id| self.rooms.cached_event(&id)) {
                Some(pdu) => {
                    let replaced_event =
                        Replaced { content: Some(pdu.content_value()), sender: Some(json!(pdu.sender)) };
                    found.insert(replaced.clone(), replaced_event);
                }
                None => missing.push(replaced.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        for stored in self.store.get_events(&missing).await? {
            match serde_json::from_str::<Value>(&stored.json) {
                Ok(mut json) => {
                    let content = json.get_mut("content").map(Value::take);
                    let sender = json.get_mut("sender").map(Value::take);
                    found.insert(stored.event_id, Replaced { content, sender });
                }
                Err(error) => {
                    tracing::error!(replaced = %stored.event_id, %error, "stored event JSON does not parse; prev_content left out");
                    found.insert(stored.event_id, Replaced { content: None, sender: None });
                }
            }
        }
        Ok(found)
    }

    async fn client_event_given(
        &self,
        event: &RoomEvent,
        requester: Option<&Requester>,
        txn: Option<&myelin_store::TxnRecord>,
        previous: Option<&Replaced>,
        relation_counts: Vec<(String, i64)>,
    ) -> Result<Value> {
        let mut json = event.pdu.to_client_json();
        let mut unsigned = Map::new();
        let now = now_ms();
        unsigned.insert("age".to_owned(), json!(now.saturating_sub(u64::from(event.pdu.origin_server_ts.0))));
        if let Some(requester) = requester
            && requester.user_id == event.pdu.sender
            && let Some(txn) = txn
            && requester.device_id.as_deref() == Some(txn.device_id.as_str())
        {
            unsigned.insert("transaction_id".to_owned(), json!(txn.txn_id));
        }
        if let Some(replaced) = &event.replaces_state
            && let Some(previous) = previous
        {
            unsigned.insert("replaces_state".to_owned(), json!(replaced));
            if let Some(content) = &previous.content {
                unsigned.insert("prev_content".to_owned(), content.clone());
            }
            if let Some(sender) = &previous.sender {
                unsigned.insert("prev_sender".to_owned(), sender.clone());
            }
        }
        if let Some(redacted_by) = &event.redacted_by
            && let Ok(redaction_id) = EventId::parse(redacted_by)
            && let Some(redaction) = self.get_room_event(&redaction_id).await?
        {
            let mut because = redaction.pdu.to_client_json();
            because.insert("unsigned".to_owned(), json!({}));
            unsigned.insert("redacted_because".to_owned(), Value::Object(because));
        }
        if let Some(mut relations) =
            self.bundled_aggregations_given(event, requester, relation_counts).await?
        {
            // A redacted event keeps its threads and references, not its edits.
            if event.redacted_by.is_some()
                && let Some(object) = relations.as_object_mut()
            {
                object.remove("m.replace");
            }
            if relations.as_object().is_some_and(|o| !o.is_empty()) {
                unsigned.insert("m.relations".to_owned(), relations);
            }
        }
        json.insert("unsigned".to_owned(), Value::Object(unsigned));
        Ok(Value::Object(json))
    }

    /// `GET /rooms/{roomId}/event/{eventId}`.
    pub async fn get_event_for_user(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<RoomEvent> {
        let not_found = || Error::from(MatrixError::not_found("Event not found"));
        let (head, access) =
            self.readable_room(&requester.user_id, room_id).await.map_err(|_| not_found())?;
        let event = self
            .get_room_event(event_id)
            .await?
            .filter(|e| e.pdu.room_id == head.room_id && e.visible)
            .ok_or_else(not_found)?;
        if let ReadAccess::FormerMember { until, .. } = access
            && event.stream_ordering > until
        {
            return Err(not_found());
        }
        self.filter_visible(&requester.user_id, vec![event]).await?.pop().ok_or_else(not_found)
    }

    /// The state the requester may see: current, or as of when they left.
    async fn visible_state(
        &self,
        head: &RoomHead,
        access: &ReadAccess,
    ) -> Result<BTreeMap<(String, String), String>> {
        match access {
            ReadAccess::FormerMember { state_group: Some(group), .. } => {
                Ok(self.store.state_of_group(*group).await?)
            }
            _ => Ok(head.state.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()),
        }
    }

    pub(crate) async fn events_by_ids(&self, head: &RoomHead, ids: Vec<String>) -> Result<Vec<RoomEvent>> {
        let stored = self.store.get_events(&ids).await?;
        self.parse_events(head, stored).await
    }

    /// `GET /rooms/{roomId}/state`.
    pub async fn room_state(&self, requester: &Requester, room_id: &RoomId) -> Result<Vec<RoomEvent>> {
        let (head, access) = self.readable_room(&requester.user_id, room_id).await?;
        let state = self.visible_state(&head, &access).await?;
        let mut events = self.events_by_ids(&head, state.into_values().collect()).await?;
        events.sort_by_key(|e| e.stream_ordering);
        Ok(events)
    }

    /// `GET /rooms/{roomId}/state/{eventType}/{stateKey}`.
    pub async fn room_state_event(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        kind: &str,
        state_key: &str,
    ) -> Result<RoomEvent> {
        let (head, access) = self.readable_room(&requester.user_id, room_id).await?;
        let state = self.visible_state(&head, &access).await?;
        let id = state
            .get(&(kind.to_owned(), state_key.to_owned()))
            .ok_or_else(|| MatrixError::not_found("Event not found."))?;
        self.events_by_ids(&head, vec![id.clone()])
            .await?
            .pop()
            .ok_or_else(|| MatrixError::not_found("Event not found.").into())
    }

    /// `GET /rooms/{roomId}/members`.
    pub async fn room_members(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        at: Option<&str>,
        membership: Option<&str>,
        not_membership: Option<&str>,
    ) -> Result<Vec<RoomEvent>> {
        let (head, access) = self.readable_room(&requester.user_id, room_id).await?;
        let members: BTreeMap<String, String> = match at {
            Some(token) => {
                let mut position = parse_token(token)?;
                if let ReadAccess::FormerMember { until, .. } = access {
                    position = position.min(until);
                }
                // The state after the last event at or before the position.
                let filter = RoomEventFilter::default().to_sql();
                let last =
                    self.store.room_events(room_id.as_str(), position + 1, None, false, 1, &filter).await?;
                match last.first().and_then(|e| e.state_after) {
                    Some(group) => self.store.state_of_group_for_type(group, "m.room.member", None).await?,
                    None => BTreeMap::new(),
                }
            }
            None => self
                .visible_state(&head, &access)
                .await?
                .into_iter()
                .filter(|((kind, _), _)| kind == "m.room.member")
                .map(|((_, key), id)| (key, id))
                .collect(),
        };
        let events = self.events_by_ids(&head, members.into_values().collect()).await?;
        let membership_of = |e: &RoomEvent| {
            e.pdu.content_value().get("membership").and_then(Value::as_str).map(str::to_owned)
        };
        let mut events: Vec<RoomEvent> = events
            .into_iter()
            .filter(|e| membership.is_none_or(|m| membership_of(e).as_deref() == Some(m)))
            .filter(|e| not_membership.is_none_or(|m| membership_of(e).as_deref() != Some(m)))
            .collect();
        events.sort_by(|a, b| a.pdu.state_key.cmp(&b.pdu.state_key));
        Ok(events)
    }

    /// `GET /rooms/{roomId}/joined_members`: user ID to `(display name, avatar URL)`.
    pub async fn joined_members(
        &self,
        requester: &Requester,
        room_id: &RoomId,
    ) -> Result<BTreeMap<String, (Option<String>, Option<String>)>> {
        let members = self.room_members(requester, room_id, None, Some("join"), None).await?;
        Ok(members
            .iter()
            .filter_map(|e| {
                let content = e.pdu.content_value();
                let name = content.get("displayname").and_then(Value::as_str).map(str::to_owned);
                let avatar = content.get("avatar_url").and_then(Value::as_str).map(str::to_owned);
                Some((e.pdu.state_key.clone()?, (name, avatar)))
            })
            .collect())
    }

    /// `GET /joined_rooms`.
    pub async fn joined_rooms(&self, user_id: &UserId) -> Result<Vec<OwnedRoomId>> {
        self.store
            .rooms_for_user(user_id.as_str(), "join")
            .await?
            .iter()
            .map(|r| RoomId::parse(r).map_err(Error::internal))
            .collect()
    }

    /// Member events of the given senders as of each event (for `lazy_load_members`).
    async fn lazy_members(
        &self,
        head: &RoomHead,
        events: &[RoomEvent],
        exclude: Option<&UserId>,
    ) -> Result<Vec<RoomEvent>> {
        // `exclude`: the requester's own member event, which clients already have.
        let mut wanted: BTreeMap<String, String> = BTreeMap::new();
        for event in events {
            let sender = event.pdu.sender.to_string();
            if wanted.contains_key(&sender) || exclude.is_some_and(|u| u.as_str() == sender) {
                continue;
            }
            let group = event.state_after.or(event.state_before);
            if let Some(group) = group {
                let found = self.store.state_of_group_for_type(group, "m.room.member", Some(&sender)).await?;
                if let Some(id) = found.get(&sender) {
                    wanted.insert(sender, id.clone());
                }
            }
        }
        self.events_by_ids(head, wanted.into_values().collect()).await
    }

    /// `GET /rooms/{roomId}/messages`.
    pub async fn room_messages(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        request: &MessagesRequest,
    ) -> Result<EventPage> {
        self.room_messages_as(requester, room_id, request, false).await
    }

    /// The room and access of a read: a server admin's privileged read (the admin API) sees
    /// every room the server knows, as a member would, without history visibility applied.
    async fn read_scope(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        privileged: bool,
    ) -> Result<(RoomHead, ReadAccess)> {
        if privileged {
            return Ok((self.known_room(room_id).await?, ReadAccess::Member));
        }
        self.readable_room(&requester.user_id, room_id).await
    }

    /// History visibility on events read, unless the read is privileged.
    async fn visible_to(
        &self,
        requester: &Requester,
        events: Vec<RoomEvent>,
        privileged: bool,
    ) -> Result<Vec<RoomEvent>> {
        if privileged {
            return Ok(events);
        }
        self.filter_visible(&requester.user_id, events).await
    }

    /// [`Self::room_messages`], privileged for the admin API's `/messages`.
    pub async fn room_messages_as(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        request: &MessagesRequest,
        privileged: bool,
    ) -> Result<EventPage> {
        let MessagesRequest { from, to, backward, limit, filter } = request;
        let (from, to, backward, limit) = (from.as_deref(), to.as_deref(), *backward, *limit);
        let (head, access) = self.read_scope(requester, room_id, privileged).await?;
        let limit = limit.clamp(1, 1000) as i64;
        let mut position = match from {
            Some(token) => parse_token(token)?,
            None if backward => self.rooms.stream.current(),
            None => 0,
        };
        let ceiling = match access {
            ReadAccess::FormerMember { until, .. } => until,
            _ => i64::MAX,
        };
        if backward {
            position = position.min(ceiling);
        }
        let start = make_token(position);
        let to_position = to.map(parse_token).transpose()?;
        let sql_filter = filter.to_sql();
        let mut collected = Vec::new();
        let mut exhausted = false;
        let mut backfilled = false;
        // Invisible events are skipped; fetch more until the page is full or history ends.
        for _ in 0..10 {
            let batch = if backward {
                self.store
                    .room_events(
                        room_id.as_str(),
                        position + 1,
                        to_position.map(|t| t + 1),
                        false,
                        limit,
                        &sql_filter,
                    )
                    .await?
            } else {
                let upper = Some(to_position.unwrap_or(i64::MAX).min(ceiling));
                self.store.room_events(room_id.as_str(), position, upper, true, limit, &sql_filter).await?
            };
            let count = batch.len() as i64;
            if let Some(last) = batch.last() {
                position = if backward { last.stream_ordering - 1 } else { last.stream_ordering };
            }
            let parsed = self.parse_events(&head, batch).await?;
            collected.extend(self.visible_to(requester, parsed, privileged).await?);
            if count < limit {
                // Past the oldest event here: ask another server in the room for the history
                // before it, once per page (`federation::backfill`).
                if backward && !backfilled && to_position.is_none() {
                    backfilled = true;
                    if self.backfill_room(room_id).await? {
                        continue;
                    }
                }
                exhausted = true;
                break;
            }
            if collected.len() as i64 >= limit {
                break;
            }
        }
        collected.truncate(limit as usize);
        let end = if exhausted && collected.is_empty() {
            None
        } else if exhausted {
            // No more events; the spec says to omit `end` at the end of history.
            if backward { None } else { Some(make_token(position)) }
        } else {
            Some(make_token(match collected.last() {
                Some(last) if backward => last.stream_ordering - 1,
                Some(last) => last.stream_ordering,
                None => position,
            }))
        };
        let state = if filter.lazy_load_members {
            self.lazy_members(&head, &collected, None).await?
        } else {
            Vec::new()
        };
        Ok(EventPage { events: collected, start, end, state })
    }

    /// `GET /rooms/{roomId}/context/{eventId}`.
    pub async fn event_context(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        event_id: &EventId,
        limit: u64,
        filter: &RoomEventFilter,
    ) -> Result<EventContext> {
        self.event_context_as(requester, room_id, event_id, limit, filter, false).await
    }

    /// [`Self::event_context`], privileged for the admin API's `/context`.
    pub async fn event_context_as(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        event_id: &EventId,
        limit: u64,
        filter: &RoomEventFilter,
        privileged: bool,
    ) -> Result<EventContext> {
        let event = if privileged {
            self.get_room_event(event_id)
                .await?
                .filter(|event| event.visible && event.pdu.room_id == *room_id)
                .ok_or_else(|| MatrixError::not_found("Event not found."))?
        } else {
            self.get_event_for_user(requester, room_id, event_id).await?
        };
        let (head, access) = self.read_scope(requester, room_id, privileged).await?;
        let limit = limit.min(1000) as i64;
        let before_count = limit / 2;
        let after_count = limit - before_count;
        let sql_filter = filter.to_sql();
        let before = self
            .store
            .room_events(room_id.as_str(), event.stream_ordering, None, false, before_count, &sql_filter)
            .await?;
        let ceiling = match access {
            ReadAccess::FormerMember { until, .. } => Some(until),
            _ => None,
        };
        let after = self
            .store
            .room_events(room_id.as_str(), event.stream_ordering, ceiling, true, after_count, &sql_filter)
            .await?;
        let before = self.visible_to(requester, self.parse_events(&head, before).await?, privileged).await?;
        let after = self.visible_to(requester, self.parse_events(&head, after).await?, privileged).await?;
        let start =
            make_token(before.last().map(|e| e.stream_ordering - 1).unwrap_or(event.stream_ordering - 1));
        let end = make_token(after.last().map(|e| e.stream_ordering).unwrap_or(event.stream_ordering));
        let last = after.last().unwrap_or(&event);
        let state = if filter.lazy_load_members {
            let mut all: Vec<RoomEvent> =
                before.iter().chain(std::iter::once(&event)).chain(after.iter()).cloned().collect();
            all.sort_by_key(|e| e.stream_ordering);
            self.lazy_members(&head, &all, None).await?
        } else {
            match last.state_after {
                Some(group) => {
                    let state = self.store.state_of_group(group).await?;
                    self.events_by_ids(&head, state.into_values().collect()).await?
                }
                None => Vec::new(),
            }
        };
        Ok(EventContext { event, before, after, start, end, state })
    }

    /// `GET /rooms/{roomId}/timestamp_to_event`.
    pub async fn timestamp_to_event(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        ts: u64,
        forward: bool,
    ) -> Result<Arc<Pdu>> {
        self.timestamp_to_event_as(requester, room_id, ts, forward, false).await
    }

    /// [`Self::timestamp_to_event`], privileged for the admin API.
    pub async fn timestamp_to_event_as(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        ts: u64,
        forward: bool,
        privileged: bool,
    ) -> Result<Arc<Pdu>> {
        let (head, _) = self.read_scope(requester, room_id, privileged).await?;
        let mut ts = i64::try_from(ts).map_err(|_| MatrixError::invalid_param("ts is out of range"))?;
        for _ in 0..20 {
            let Some(stored) = self.store.event_near_timestamp(room_id.as_str(), ts, forward).await? else {
                break;
            };
            let next_ts = {
                let event = self.parse_stored(&stored, &head.rules)?;
                let ts_of = u64::from(event.pdu.origin_server_ts.0) as i64;
                if let Some(visible) = self.visible_to(requester, vec![event], privileged).await?.pop() {
                    return Ok(visible.pdu);
                }
                ts_of
            };
            ts = if forward { next_ts.saturating_add(1) } else { next_ts.saturating_sub(1) };
        }
        Err(MatrixError::not_found(format!(
            "Unable to find event {} {ts} in direction",
            if forward { "after" } else { "before" }
        ))
        .into())
    }
}

/// Properties of pagination tokens on arbitrary input (`PROPTEST_CASES` cases, 256 by default).
#[cfg(test)]
mod prop_tests {
    use crate::util::prop_support::{config, is_invalid_param};
    use proptest::prelude::*;

    use super::{make_token, parse_token};

    proptest! {
        #![proptest_config(config())]

        /// Any string is a position or `M_INVALID_PARAM`, and a position is never negative.
        #[test]
        fn prop_pagination_token_parse_never_panics(
            text in prop_oneof![any::<String>(), "[st]?[-+]?[0-9]{0,25}([_.-][0-9a-z]{0,5}){0,3}"],
        ) {
            let parsed = parse_token(&text);
            prop_assert!(parsed.is_ok() || is_invalid_param(&parsed), "{text:?}: {parsed:?}");
            if let Ok(position) = parsed {
                prop_assert!(position >= 0, "{text:?} -> {position}");
                prop_assert_eq!(parse_token(&make_token(position)).unwrap(), position);
            }
        }

        /// `s<N>` and sync tokens (`s<N>_...`) give back `N`.
        #[test]
        fn prop_pagination_token_round_trips(position in 0..=i64::MAX, rest in prop::collection::vec(0..=i64::MAX, 0..7)) {
            prop_assert_eq!(parse_token(&make_token(position)).unwrap(), position);
            let sync_token: String = rest.iter().map(|p| format!("_{p}")).collect();
            prop_assert_eq!(parse_token(&format!("s{position}{sync_token}")).unwrap(), position);
        }

        /// Positions beyond `i64::MAX` are refused, not wrapped.
        #[test]
        fn prop_pagination_token_out_of_range_is_refused(n in (i64::MAX as u128 + 1)..=u128::MAX) {
            prop_assert!(is_invalid_param(&parse_token(&format!("s{n}"))), "s{}", n);
            prop_assert!(is_invalid_param(&parse_token(&n.to_string())));
        }
    }
}
