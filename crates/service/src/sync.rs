//! `GET /sync`: initial and incremental, long-polling, across every per-user stream.
//!
//! A sync token records a position in each stream: `s<events>_<account data>_<receipts>_
//! <typing>_<presence>_<to-device>_<device lists>`. Positions of persisted streams survive
//! restarts; in-memory ones (typing) restart at zero, and a token from before a restart is
//! read as "from the beginning" for them.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use myelin_core::MatrixError;
use myelin_core::pdu::Pdu;
use myelin_store::{EventFilterSql, PresenceRecord, ReceiptRecord};
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::Value;

use crate::auth::Requester;
use crate::device_lists::DeviceListUpdates;
use crate::filter::FilterDefinition;
use crate::push::UnreadCounts;
use crate::rooms::read::make_token;
use crate::rooms::{RoomEvent, RoomHead};
use crate::to_device::ToDeviceEvent;
use crate::util::now_ms;
use crate::{Error, Result, Services};

/// Positions in every stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncToken {
    pub events: i64,
    pub account_data: i64,
    pub receipts: i64,
    pub typing: i64,
    pub presence: i64,
    pub to_device: i64,
    pub device_lists: i64,
}

impl std::fmt::Display for SyncToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "s{}_{}_{}_{}_{}_{}_{}",
            self.events,
            self.account_data,
            self.receipts,
            self.typing,
            self.presence,
            self.to_device,
            self.device_lists
        )
    }
}

impl SyncToken {
    /// In-memory streams restart at zero; a to-device or device-list position from the future
    /// (a token of another database) reads as zero too.
    pub fn forget_restarted(&mut self, current: SyncToken) {
        for (position, now) in [
            (&mut self.typing, current.typing),
            (&mut self.to_device, current.to_device),
            (&mut self.device_lists, current.device_lists),
        ] {
            if *position > now {
                *position = 0;
            }
        }
    }

    pub fn parse(token: &str) -> Result<SyncToken> {
        let invalid = || Error::from(MatrixError::invalid_param(format!("Invalid sync token {token:?}")));
        let body = token.strip_prefix('s').ok_or_else(invalid)?;
        let parts: Vec<i64> =
            body.split('_').map(crate::util::parse_position).collect::<Option<_>>().ok_or_else(invalid)?;
        if parts.is_empty() || parts.len() > 7 {
            return Err(invalid());
        }
        let at = |i: usize| parts.get(i).copied().unwrap_or(0);
        Ok(SyncToken {
            events: at(0),
            account_data: at(1),
            receipts: at(2),
            typing: at(3),
            presence: at(4),
            to_device: at(5),
            device_lists: at(6),
        })
    }
}

/// A `/sync` request.
#[derive(Clone, Debug, Default)]
pub struct SyncRequest {
    pub since: Option<SyncToken>,
    pub timeout_ms: u64,
    pub full_state: bool,
    pub set_presence: Option<String>,
    pub filter: FilterDefinition,
}

/// A room's timeline in a sync.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    pub events: Vec<RoomEvent>,
    pub limited: bool,
    pub prev_batch: String,
}

/// A timeline read by [`Services::timeline_slice`].
#[derive(Clone, Debug, Default)]
pub(crate) struct TimelineSlice {
    pub timeline: Timeline,
    /// The stream position of the oldest event read (before visibility filtering), if any.
    pub first_position: Option<i64>,
    /// The state group before that event.
    pub first_state_before: Option<i64>,
}

/// A room's member counts and heroes, when they may have changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberSummary {
    /// Up to five members other than the user, when the room has no name or alias.
    pub heroes: Vec<String>,
    pub joined_member_count: u64,
    pub invited_member_count: u64,
}

/// A joined room's ephemeral events, as typed data.
#[derive(Clone, Debug, Default)]
pub struct Ephemeral {
    /// Who is typing, when it changed (or, in an initial sync, when someone is).
    pub typing: Option<Vec<OwnedUserId>>,
    /// The receipts the user may see (others' private receipts left out).
    pub receipts: Vec<ReceiptRecord>,
}

impl Ephemeral {
    pub fn is_empty(&self) -> bool {
        self.typing.is_none() && self.receipts.is_empty()
    }
}

/// An account data event: its type and content.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountDataEvent {
    pub kind: String,
    pub content: Value,
}

/// A state event as an invitee or knocker sees it: type, state key, content and sender only.
#[derive(Clone, Debug, PartialEq)]
pub struct StrippedStateEvent {
    pub kind: String,
    pub state_key: String,
    pub content: Value,
    pub sender: String,
}

impl StrippedStateEvent {
    pub(crate) fn of(pdu: &Pdu) -> StrippedStateEvent {
        StrippedStateEvent {
            kind: pdu.kind.to_string(),
            state_key: pdu.state_key.clone().unwrap_or_default(),
            content: pdu.content_value(),
            sender: pdu.sender.to_string(),
        }
    }

    /// One entry of stripped state another server sent (`invite_room_state`,
    /// `knock_room_state`), `None` when it is not shaped as one.
    pub fn from_json(value: &Value) -> Option<StrippedStateEvent> {
        Some(StrippedStateEvent {
            kind: value.get("type")?.as_str()?.to_owned(),
            state_key: value.get("state_key")?.as_str()?.to_owned(),
            content: value.get("content").filter(|c| c.is_object())?.clone(),
            sender: value.get("sender")?.as_str()?.to_owned(),
        })
    }

    /// The wire form (also what is stored for another server's stripped state).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "type": self.kind,
            "state_key": self.state_key,
            "content": self.content,
            "sender": self.sender,
        })
    }
}

/// A joined (or left) room in a sync.
#[derive(Clone, Debug, Default)]
pub struct SyncedRoom {
    pub timeline: Timeline,
    pub state: Vec<RoomEvent>,
    pub ephemeral: Ephemeral,
    pub account_data: Vec<AccountDataEvent>,
    pub unread: UnreadCounts,
    pub summary: Option<MemberSummary>,
}

/// The answer to a sync.
#[derive(Clone, Debug, Default)]
pub struct SyncResponse {
    pub next_batch: SyncToken,
    pub join: BTreeMap<OwnedRoomId, SyncedRoom>,
    pub leave: BTreeMap<OwnedRoomId, SyncedRoom>,
    /// The state shared with the invitee.
    pub invite: BTreeMap<OwnedRoomId, Vec<StrippedStateEvent>>,
    /// The state shared with the knocker.
    pub knock: BTreeMap<OwnedRoomId, Vec<StrippedStateEvent>>,
    pub account_data: Vec<AccountDataEvent>,
    /// Presence of the user and of those sharing a room, as of `presence_at` (ms).
    pub presence: Vec<PresenceRecord>,
    pub presence_at: i64,
    /// The device's to-device messages, oldest first.
    pub to_device: Vec<ToDeviceEvent>,
    /// The device's unclaimed one-time keys by algorithm.
    pub device_one_time_keys_count: BTreeMap<String, i64>,
    /// The algorithms of the device's fallback keys not handed out yet.
    pub device_unused_fallback_key_types: Vec<String>,
    /// Whose device keys to fetch again, and whom to stop tracking (incremental syncs only).
    pub device_lists: DeviceListUpdates,
}

impl SyncResponse {
    fn is_empty(&self) -> bool {
        self.join.is_empty()
            && self.leave.is_empty()
            && self.invite.is_empty()
            && self.knock.is_empty()
            && self.account_data.is_empty()
            && self.presence.is_empty()
            && self.to_device.is_empty()
            && self.device_lists.is_empty()
    }
}

/// State shared with invitees and knockers.
pub(crate) const STRIPPED_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// The longest a sync may long-poll.
pub(crate) const MAX_TIMEOUT_MS: u64 = 5 * 60 * 1000;

/// What is new in a joined room since the token, as read for all rooms at once.
#[derive(Clone, Copy)]
struct RoomNews {
    events: bool,
    receipts: bool,
}

/// What every section of one sync computation shares.
#[derive(Clone, Copy)]
struct Pass<'a> {
    requester: &'a Requester,
    request: &'a SyncRequest,
    /// An initial sync (no token, or `full_state`).
    initial: bool,
    /// The token's positions (zero without a token; kept with `full_state`, where account data
    /// is still read from it).
    since_token: SyncToken,
    now: SyncToken,
}

impl Pass<'_> {
    fn user_id(&self) -> &UserId {
        &self.requester.user_id
    }

    fn filter(&self) -> &FilterDefinition {
        &self.request.filter
    }

    /// The token, in an incremental sync.
    fn since(&self) -> Option<SyncToken> {
        (!self.initial).then_some(self.since_token)
    }
}

impl Services {
    /// Where every stream stands now.
    pub fn current_sync_token(&self) -> SyncToken {
        SyncToken {
            events: self.rooms.stream.current(),
            account_data: self.streams.account_data.current(),
            receipts: self.streams.receipts.current(),
            typing: self.streams.typing.current(),
            presence: self.streams.presence.current(),
            to_device: self.streams.to_device.current(),
            device_lists: self.streams.device_lists.current(),
        }
    }

    /// `GET /sync`.
    pub async fn sync(&self, requester: &Requester, request: SyncRequest) -> Result<SyncResponse> {
        requester.check_auth_blocking_for(self).await?;
        let _active = self.active_syncs.start(&requester.user_id);
        self.maybe_send_consent_notice(&requester.user_id).await;
        self.sync_inner(requester, request).await
    }

    async fn sync_inner(&self, requester: &Requester, request: SyncRequest) -> Result<SyncResponse> {
        let user_id = &requester.user_id;
        if let Err(error) =
            self.presence_from_sync(user_id, request.set_presence.as_deref().unwrap_or("online")).await
        {
            tracing::warn!(%error, "could not update presence from sync");
        }
        let mut since = request.since;
        if let Some(since) = since.as_mut() {
            since.forget_restarted(self.current_sync_token());
        }
        // The device got what a sync up to this token carried: drop it from its inbox.
        self.ack_to_device(requester, since.map(|since| since.to_device).unwrap_or(0)).await?;
        let listener = self.notifier.listener(user_id);
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(request.timeout_ms.min(MAX_TIMEOUT_MS));
        loop {
            let notified = listener.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.current_sync_token();
            let response = self.compute_sync(requester, since, now, &request).await?;
            let waiting = since.is_some() && !request.full_state && request.timeout_ms > 0;
            if !waiting || !response.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(response);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.shutdown.cancelled() => return Ok(response),
            }
        }
    }

    async fn compute_sync(
        &self,
        requester: &Requester,
        since: Option<SyncToken>,
        now: SyncToken,
        request: &SyncRequest,
    ) -> Result<SyncResponse> {
        let user_id = &requester.user_id;
        let initial = since.is_none() || request.full_state;
        let pass = Pass { requester, request, initial, since_token: since.unwrap_or_default(), now };
        let mut response = SyncResponse { next_batch: now, ..SyncResponse::default() };

        // Rooms whose membership changed since the token.
        let mut changed: HashSet<String> = HashSet::new();
        if let Some(since) = since {
            for change in self.store.membership_changes_since(user_id.as_str(), since.events).await? {
                if change.stream_ordering <= now.events {
                    changed.insert(change.room_id);
                }
            }
        }
        let memberships = self.user_memberships_cached(user_id).await?;
        let mut rooms_with_events: HashSet<String> = HashSet::new();
        if !pass.initial {
            let joined = memberships.iter().filter(|m| m.membership == "join").count();
            rooms_with_events.extend(
                self.store
                    .rooms_with_events_since(user_id.as_str(), pass.since_token.events, now.events, joined)
                    .await?,
            );
        }
        // Rooms with receipts since the token: read once for all rooms, not once per room.
        let rooms_with_receipts: HashSet<String> = match pass.since() {
            Some(since) if pass.now.receipts > since.receipts => {
                self.store.rooms_with_receipts_between(since.receipts, pass.now.receipts).await?
            }
            _ => HashSet::new(),
        };
        let mut room_account_data;
        (response.account_data, room_account_data) = self.sync_account_data(pass).await?;

        for membership in memberships.iter() {
            let room = &membership.room_id;
            if !pass.filter().room.allows_room(room) {
                continue;
            }
            let Ok(room_id) = RoomId::parse(room) else { continue };
            let changed_here = changed.contains(room);
            let account_data = room_account_data.remove(room).unwrap_or_default();
            match MembershipState::from(membership.membership.as_str()) {
                MembershipState::Join => {
                    let news = RoomNews {
                        events: rooms_with_events.contains(room),
                        receipts: rooms_with_receipts.contains(room),
                    };
                    if let Some(synced) =
                        self.sync_joined(pass, &room_id, changed_here, news, account_data).await?
                    {
                        response.join.insert(room_id, synced);
                    }
                }
                MembershipState::Invite => {
                    if let Some(state) = self.sync_invited_or_knocked(pass, &room_id, changed_here).await? {
                        response.invite.insert(room_id, state);
                    }
                }
                MembershipState::Knock => {
                    if let Some(state) = self.sync_invited_or_knocked(pass, &room_id, changed_here).await? {
                        response.knock.insert(room_id, state);
                    }
                }
                MembershipState::Leave | MembershipState::Ban => {
                    if let Some(synced) = self.sync_left(pass, &room_id, changed_here, account_data).await? {
                        response.leave.insert(room_id, synced);
                    }
                }
                _ => {}
            }
        }

        if self.config.presence.enabled {
            (response.presence, response.presence_at) = self.sync_presence(pass).await?;
        }
        (response.to_device, response.next_batch.to_device) = self
            .to_device_for_sync(
                requester,
                since.map(|since| since.to_device).unwrap_or(0),
                now.to_device,
                crate::to_device::MAX_TO_DEVICE_PER_SYNC,
            )
            .await?;
        if let Some(device_id) = &requester.device_id {
            response.device_one_time_keys_count =
                self.one_time_key_counts(user_id.as_str(), device_id).await?;
            response.device_unused_fallback_key_types =
                self.unused_fallback_key_types(user_id.as_str(), device_id).await?;
        }
        if let Some(since) = pass.since() {
            response.device_lists = self.device_list_updates(user_id, since, now).await?;
        }
        Ok(response)
    }

    /// Global account data (with the push rules of a user on the defaults, who has none
    /// stored, in an initial sync) and room account data by room, both filtered.
    async fn sync_account_data(
        &self,
        pass: Pass<'_>,
    ) -> Result<(Vec<AccountDataEvent>, BTreeMap<String, Vec<AccountDataEvent>>)> {
        let (since, upto) = (pass.since_token.account_data, pass.now.account_data);
        self.account_data_between(pass.user_id(), since, upto, pass.initial, pass.filter()).await
    }

    /// Global and by-room account data changed after `since` up to `upto`, filtered; in an
    /// initial read, the push rules of a user on the defaults too (shared by `/sync` and
    /// sliding sync).
    pub(crate) async fn account_data_between(
        &self,
        user_id: &UserId,
        since: i64,
        upto: i64,
        initial: bool,
        filter: &FilterDefinition,
    ) -> Result<(Vec<AccountDataEvent>, BTreeMap<String, Vec<AccountDataEvent>>)> {
        let entries = self.store.account_data_since(user_id.as_str(), since, upto).await?;
        let mut global = Vec::new();
        let mut by_room: BTreeMap<String, Vec<AccountDataEvent>> = BTreeMap::new();
        for entry in entries {
            // Unreadable stored content is left out (and logged), never sent as `null`: one
            // corrupt entry must not fail every sync of its owner.
            let content: Value = match serde_json::from_str(&entry.content) {
                Ok(content) => content,
                Err(error) => {
                    tracing::error!(%error, %user_id, kind = %entry.kind, "unreadable stored account data; left out of sync");
                    continue;
                }
            };
            let event = AccountDataEvent { kind: entry.kind, content };
            if entry.room_id.is_empty() {
                if filter.account_data.allows(&event.kind, None) {
                    global.push(event);
                }
            } else if filter.room.account_data.allows_type(&event.kind) {
                by_room.entry(entry.room_id).or_default().push(event);
            }
        }
        // Push rules are account data too; users on the defaults have none stored.
        if initial
            && filter.account_data.allows("m.push_rules", None)
            && !global.iter().any(|e| e.kind == "m.push_rules")
        {
            let rules = self.push_rules(user_id).await?;
            global.push(AccountDataEvent {
                kind: "m.push_rules".to_owned(),
                content: crate::push::push_rules_content(&rules),
            });
        }
        Ok((global, by_room))
    }

    /// A joined room, when anything in it changed (always in an initial sync or just after
    /// joining).
    async fn sync_joined(
        &self,
        pass: Pass<'_>,
        room_id: &RoomId,
        changed_here: bool,
        news: RoomNews,
        account_data: Vec<AccountDataEvent>,
    ) -> Result<Option<SyncedRoom>> {
        let user_id = pass.user_id();
        let initial = pass.initial;
        let newly_joined = changed_here && !initial;
        let typing = pass.now.typing > pass.since_token.typing
            && self.typing.typing_in(room_id).1 > pass.since_token.typing;
        let interesting =
            initial || newly_joined || news.events || news.receipts || typing || !account_data.is_empty();
        if !interesting {
            return Ok(None);
        }
        let Some(head) = self.room_head_snapshot(room_id).await? else { return Ok(None) };
        let from = if initial || newly_joined { None } else { Some(pass.since_token.events) };
        let mut synced = self.sync_room(pass.requester, &head, from, pass.now, pass.request, None).await?;
        synced.ephemeral =
            self.room_ephemeral(user_id, room_id, pass.since(), pass.now, pass.filter()).await?;
        synced.account_data = account_data;
        synced.unread = self.unread_counts(user_id, room_id, pass.filter()).await?;
        if initial
            || newly_joined
            || synced.timeline.events.iter().any(|e| e.pdu.kind.to_string() == "m.room.member")
        {
            synced.summary = Some(self.member_summary(&head, user_id, true).await?);
        }
        let unchanged = !initial
            && !newly_joined
            && synced.timeline.events.is_empty()
            && synced.state.is_empty()
            && synced.ephemeral.is_empty()
            && synced.account_data.is_empty();
        Ok((!unchanged).then_some(synced))
    }

    /// The state shared with an invitee or a knocker, in an initial sync or when the
    /// membership changed.
    async fn sync_invited_or_knocked(
        &self,
        pass: Pass<'_>,
        room_id: &RoomId,
        changed_here: bool,
    ) -> Result<Option<Vec<StrippedStateEvent>>> {
        if !pass.initial && !changed_here {
            return Ok(None);
        }
        let Some(head) = self.room_head_snapshot(room_id).await? else { return Ok(None) };
        Ok(Some(self.stripped_state(&head, pass.user_id()).await?))
    }

    /// A room the user left (or was banned from), as it was up to leaving: in an initial sync
    /// with `include_leave`, or when the membership changed; never once forgotten.
    async fn sync_left(
        &self,
        pass: Pass<'_>,
        room_id: &RoomId,
        changed_here: bool,
        account_data: Vec<AccountDataEvent>,
    ) -> Result<Option<SyncedRoom>> {
        let user_id = pass.user_id();
        let include = if pass.initial { pass.filter().room.include_leave } else { changed_here };
        if !include || self.store.is_forgotten(user_id.as_str(), room_id.as_str()).await? {
            return Ok(None);
        }
        let Some(head) = self.room_head_snapshot(room_id).await? else { return Ok(None) };
        let now = pass.now;
        let left_at = match head.state_event_id("m.room.member", user_id.as_str()) {
            Some(id) => {
                self.store.get_event(id.as_str()).await?.map(|e| e.stream_ordering).unwrap_or(now.events)
            }
            None => now.events,
        };
        let from = if pass.initial { None } else { Some(pass.since_token.events) };
        let mut synced =
            self.sync_room(pass.requester, &head, from, now, pass.request, Some(left_at)).await?;
        synced.account_data = account_data;
        Ok(Some(synced))
    }

    /// The newest `limit` events of a room after `after` (exclusive; `None`: from the start) up
    /// to `upto` (inclusive) that pass `sql_filter`, oldest first, those the user may not see
    /// left out (history visibility); shared by `/sync` and sliding sync.
    pub(crate) async fn timeline_slice(
        &self,
        user_id: &UserId,
        head: &RoomHead,
        after: Option<i64>,
        upto: i64,
        limit: i64,
        sql_filter: &EventFilterSql,
    ) -> Result<TimelineSlice> {
        let mut stored = self
            .store
            .room_events(
                head.room_id.as_str(),
                upto + 1,
                after.map(|f| f + 1),
                false,
                limit.saturating_add(1),
                sql_filter,
            )
            .await?;
        let kept = usize::try_from(limit).unwrap_or(usize::MAX);
        let limited = stored.len() > kept;
        stored.truncate(kept);
        stored.reverse();
        let mut events = Vec::with_capacity(stored.len());
        for event in &stored {
            events.push(self.parse_stored(event, &head.rules)?);
        }
        let events = self.filter_visible(user_id, events).await?;
        let first_position = stored.first().map(|e| e.stream_ordering);
        let prev_batch = make_token(first_position.unwrap_or(upto + 1) - 1);
        Ok(TimelineSlice {
            timeline: Timeline { events, limited, prev_batch },
            first_position,
            first_state_before: stored.first().and_then(|e| e.state_before),
        })
    }

    /// The timeline and state of one room between `from` (exclusive; `None`: the latest
    /// events) and `now` (or `until`, for a room the user left).
    async fn sync_room(
        &self,
        requester: &Requester,
        head: &RoomHead,
        from: Option<i64>,
        now: SyncToken,
        request: &SyncRequest,
        until: Option<i64>,
    ) -> Result<SyncedRoom> {
        let filter = &request.filter.room;
        let limit = timeline_limit(filter.timeline.limit, self.config.room.filter_timeline_limit);
        let upto = until.unwrap_or(now.events).min(now.events);
        let slice = self
            .timeline_slice(&requester.user_id, head, from, upto, limit, &filter.timeline.to_sql())
            .await?;
        let TimelineSlice {
            timeline: Timeline { events, limited, prev_batch },
            first_position,
            first_state_before,
        } = slice;
        let members = LazyMembers::new(filter.state.lazy_load_members, &events, &requester.user_id);

        // The state before the timeline.
        let full = from.is_none() || request.full_state;
        let state_ids: Vec<String> = if full {
            let group = match first_position {
                Some(_) => first_state_before,
                None => self
                    .store
                    .room_events(head.room_id.as_str(), upto + 1, None, false, 1, &Default::default())
                    .await?
                    .first()
                    .and_then(|e| e.state_after),
            };
            match group {
                // Lazily loaded members are left out before reading (a room of 10,000 members
                // would otherwise fetch and parse every member event).
                Some(group) => self
                    .state_of_group_cached(group)
                    .await?
                    .iter()
                    .filter(|((kind, key), _)| members.wants(kind, key))
                    .map(|(_, id)| id.clone())
                    .collect(),
                None => Vec::new(),
            }
        } else if limited {
            let before = first_position.unwrap_or(upto + 1);
            self.store.state_changes_between(head.room_id.as_str(), from.unwrap_or(0), before).await?
        } else {
            Vec::new()
        };
        let timeline_ids: HashSet<String> = events.iter().map(|e| e.pdu.event_id.to_string()).collect();
        let state_ids: Vec<String> = state_ids.into_iter().filter(|id| !timeline_ids.contains(id)).collect();
        let stored_state = self.store.get_events(&state_ids).await?;
        let mut state = Vec::with_capacity(stored_state.len());
        for event in &stored_state {
            let event = self.parse_stored(event, &head.rules)?;
            // The full state was already narrowed to the wanted members by key.
            let wanted = full
                || members
                    .wants(&event.pdu.kind.to_string(), event.pdu.state_key.as_deref().unwrap_or_default());
            if wanted
                && filter.state.allows_type(&event.pdu.kind.to_string())
                && filter.state.allows_sender(event.pdu.sender.as_str())
            {
                state.push(event);
            }
        }
        state.sort_by_key(|e| e.stream_ordering);
        Ok(SyncedRoom { timeline: Timeline { events, limited, prev_batch }, state, ..SyncedRoom::default() })
    }

    /// Typing (when it changed, or in an initial sync when someone types) and the receipts
    /// since the token that the user may see.
    pub(crate) async fn room_ephemeral(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        since: Option<SyncToken>,
        now: SyncToken,
        filter: &FilterDefinition,
    ) -> Result<Ephemeral> {
        let mut ephemeral = Ephemeral::default();
        let (typing, changed_at) = self.typing.typing_in(room_id);
        if since.is_none_or(|s| changed_at > s.typing)
            && (since.is_some() || !typing.is_empty())
            && filter.room.ephemeral.allows_type("m.typing")
        {
            ephemeral.typing = Some(typing);
        }
        if filter.room.ephemeral.allows_type("m.receipt") {
            ephemeral.receipts = self
                .store
                .receipts_since(room_id.as_str(), since.map_or(0, |s| s.receipts), now.receipts)
                .await?
                .into_iter()
                .filter(|r| r.receipt_type != "m.read.private" || r.user_id == user_id.as_str())
                .collect();
        }
        Ok(ephemeral)
    }

    /// Heroes (when the room has no name, nor an alias when `alias_names_room`: `/sync`
    /// counts one, sliding sync does not) and member counts.
    pub(crate) async fn member_summary(
        &self,
        head: &RoomHead,
        user_id: &UserId,
        alias_names_room: bool,
    ) -> Result<MemberSummary> {
        let members = self.joined_and_invited_members_cached(&[&*head.room_id]).await?;
        let (joined, invited) =
            members.get(&head.room_id).map(|m| (&m.joined[..], &m.invited[..])).unwrap_or_default();
        Ok(member_summary_of(head, user_id, alias_names_room, joined, invited))
    }

    /// The state an invitee or knocker sees (stripped): the room's description, their own
    /// member event and that of whoever invited them. For a room this server is not in, the
    /// state the other server sent with the invite or knock (`federation::invite`), and the
    /// member event.
    pub(crate) async fn stripped_state(
        &self,
        head: &RoomHead,
        user_id: &UserId,
    ) -> Result<Vec<StrippedStateEvent>> {
        let own = head.state_event_id("m.room.member", user_id.as_str());
        if let Some(own) = own
            && let Some(remote) = self.store.stripped_room_state(own.as_str()).await?
        {
            let entries: Vec<Value> = serde_json::from_str(&remote).map_err(Error::internal)?;
            let mut events: Vec<StrippedStateEvent> = entries
                .iter()
                .filter_map(StrippedStateEvent::from_json)
                .filter(|e| !(e.kind == "m.room.member" && e.state_key == user_id.as_str()))
                .collect();
            if let Some(event) = self.get_room_event(own).await? {
                events.push(StrippedStateEvent::of(&event.pdu));
            }
            return Ok(events);
        }
        let mut ids: Vec<String> = STRIPPED_STATE_TYPES
            .iter()
            .filter_map(|kind| head.state_event_id(kind, "").map(|id| id.to_string()))
            .collect();
        if let Some(own) = own {
            ids.push(own.to_string());
            if let Some(event) = self.get_room_event(own).await?
                && event.pdu.sender != user_id
                && let Some(sender_member) = head.state_event_id("m.room.member", event.pdu.sender.as_str())
            {
                ids.push(sender_member.to_string());
            }
        }
        let mut events = Vec::new();
        for stored in self.store.get_events(&ids).await? {
            events.push(self.parse_stored(&stored, &head.rules)?);
        }
        events.sort_by_key(|e| e.stream_ordering);
        Ok(events.iter().map(|e| StrippedStateEvent::of(&e.pdu)).collect())
    }

    /// The presence of the user and of those sharing a room with them (offline users only in
    /// incremental syncs unless configured), and the time it is seen at.
    async fn sync_presence(&self, pass: Pass<'_>) -> Result<(Vec<PresenceRecord>, i64)> {
        let user_id = pass.user_id();
        let since = pass.since().map(|s| s.presence);
        let include_offline = since.is_some() || self.config.presence.include_offline_users_on_sync;
        let records: Vec<PresenceRecord> = if since.is_some_and(|since| since >= pass.now.presence) {
            Vec::new()
        } else {
            self.store.presence_since(since.unwrap_or(0), pass.now.presence).await?
        };
        let records: Vec<PresenceRecord> = records
            .into_iter()
            .filter(|r| include_offline || r.state != "offline")
            .filter(|r| pass.filter().presence.allows("m.presence", Some(&r.user_id)))
            .collect();
        // Whose presence the user may see is asked only of the users with news.
        let visible: HashSet<String> = self
            .presence_visible_to(user_id, records.iter().map(|r| r.user_id.as_str()))
            .await?
            .into_iter()
            .map(str::to_owned)
            .collect();
        let records = records.into_iter().filter(|r| visible.contains(&r.user_id)).collect();
        Ok((records, now_ms() as i64))
    }
}

/// How many timeline events a room gets: the filter's `limit` (10 by default, at least 1), at
/// most `filter_timeline_limit` when that is positive. A client's `u64` never wraps.
fn timeline_limit(requested: Option<u64>, cap: i64) -> i64 {
    let limit = i64::try_from(requested.unwrap_or(10).max(1)).unwrap_or(i64::MAX);
    if cap > 0 { limit.min(cap) } else { limit }
}

/// Which member events a room's state includes: with `lazy_load_members`, only those of the
/// timeline's senders and the user's own; otherwise all.
struct LazyMembers {
    /// `None`: members are not lazily loaded.
    wanted: Option<HashSet<String>>,
}

impl LazyMembers {
    fn new(lazy: bool, timeline: &[RoomEvent], user_id: &UserId) -> LazyMembers {
        let wanted = lazy.then(|| {
            timeline
                .iter()
                .map(|e| e.pdu.sender.to_string())
                .chain(std::iter::once(user_id.to_string()))
                .collect()
        });
        LazyMembers { wanted }
    }

    fn wants(&self, kind: &str, state_key: &str) -> bool {
        match &self.wanted {
            Some(wanted) if kind == "m.room.member" => wanted.contains(state_key),
            _ => true,
        }
    }
}

/// Heroes and member counts from a room's joined and invited members (see
/// [`Services::member_summary`]).
pub(crate) fn member_summary_of(
    head: &RoomHead,
    user_id: &UserId,
    alias_names_room: bool,
    joined: &[String],
    invited: &[String],
) -> MemberSummary {
    let has_name = head.state_event_id("m.room.name", "").is_some()
        || (alias_names_room && head.state_event_id("m.room.canonical_alias", "").is_some());
    let heroes = if has_name {
        Vec::new()
    } else {
        joined
            .iter()
            .chain(invited.iter())
            .filter(|u| u.as_str() != user_id.as_str())
            .take(5)
            .cloned()
            .collect()
    };
    MemberSummary {
        heroes,
        joined_member_count: joined.len() as u64,
        invited_member_count: invited.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::{SyncToken, timeline_limit};

    #[test]
    fn timeline_limits_never_wrap() {
        assert_eq!(timeline_limit(None, 100), 10);
        assert_eq!(timeline_limit(Some(0), 100), 1);
        assert_eq!(timeline_limit(Some(20), 100), 20);
        assert_eq!(timeline_limit(Some(u64::MAX), 100), 100);
        assert_eq!(timeline_limit(Some(u64::MAX), 0), i64::MAX);
        assert_eq!(timeline_limit(Some(u64::MAX), -1), i64::MAX);
        assert_eq!(timeline_limit(Some(i64::MAX as u64 + 1), 0), i64::MAX);
    }

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let token = SyncToken {
            events: 5,
            account_data: 2,
            receipts: 3,
            typing: 4,
            presence: 1,
            to_device: 0,
            device_lists: 9,
        };
        assert_eq!(SyncToken::parse(&token.to_string()).unwrap(), token);
        assert_eq!(SyncToken::parse("s7").unwrap().events, 7);
        for bad in ["", "x1", "s", "s1_a", "s-1", "s1_2_3_4_5_6_7_8"] {
            assert!(SyncToken::parse(bad).is_err(), "{bad}");
        }
    }
}

/// Properties of sync tokens on arbitrary input (`PROPTEST_CASES` cases, 256 by default).
#[cfg(test)]
mod prop_tests {
    use crate::util::prop_support::{config, is_invalid_param};
    use proptest::prelude::*;

    use super::SyncToken;

    /// Strings shaped like sync tokens: signs, huge numbers, empty and extra positions.
    fn near_token() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                "[0-9]{1,25}",
                "[-+][0-9]{1,20}",
                Just(String::new()),
                any::<i64>().prop_map(|n| n.to_string()),
                "[ 0-9a-z.~]{0,4}",
            ],
            0..10,
        )
        .prop_map(|parts| format!("s{}", parts.join("_")))
    }

    fn token() -> impl Strategy<Value = SyncToken> {
        prop::array::uniform7(0..=i64::MAX).prop_map(|p| SyncToken {
            events: p[0],
            account_data: p[1],
            receipts: p[2],
            typing: p[3],
            presence: p[4],
            to_device: p[5],
            device_lists: p[6],
        })
    }

    proptest! {
        #![proptest_config(config())]

        /// Any string parses or is `M_INVALID_PARAM`; what parses has no negative position and
        /// formats back to a token that parses to the same positions.
        #[test]
        fn prop_sync_token_parse_never_panics(text in prop_oneof![any::<String>(), near_token()]) {
            let parsed = SyncToken::parse(&text);
            prop_assert!(parsed.is_ok() || is_invalid_param(&parsed), "{text:?}: {parsed:?}");
            if let Ok(token) = parsed {
                let positions = [
                    token.events, token.account_data, token.receipts, token.typing,
                    token.presence, token.to_device, token.device_lists,
                ];
                prop_assert!(positions.iter().all(|p| *p >= 0), "{text:?}: {token:?}");
                prop_assert_eq!(SyncToken::parse(&token.to_string()).unwrap(), token);
            }
        }

        /// Formatting then parsing gives the same token, for every position up to `i64::MAX`.
        #[test]
        fn prop_sync_token_round_trips(token in token()) {
            prop_assert_eq!(SyncToken::parse(&token.to_string()).unwrap(), token);
        }

        /// A position beyond `i64::MAX` or below zero, anywhere in the token, is refused rather
        /// than wrapped or clamped.
        #[test]
        fn prop_sync_token_out_of_range_positions_are_refused(
            token in token(),
            index in 0usize..7,
            bad in prop_oneof![
                ((i64::MAX as u128 + 1)..=u128::MAX).prop_map(|n| n.to_string()),
                (i64::MIN..0).prop_map(|n| n.to_string()),
            ],
        ) {
            let mut parts: Vec<String> = token.to_string()[1..].split('_').map(str::to_owned).collect();
            parts[index] = bad;
            let text = format!("s{}", parts.join("_"));
            let parsed = SyncToken::parse(&text);
            prop_assert!(is_invalid_param(&parsed), "{text}: {parsed:?}");
        }
    }
}
