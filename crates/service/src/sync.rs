//! `GET /sync`: initial and incremental, long-polling, across every per-user stream.
//!
//! A sync token records a position in each stream: `s<events>_<account data>_<receipts>_
//! <typing>_<presence>_<to-device>_<device lists>`. Positions of persisted streams survive
//! restarts; in-memory ones (typing) restart at zero, and a token from before a restart is
//! read as "from the beginning" for them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use myelin_core::MatrixError;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};

use crate::auth::Requester;
use crate::filter::{FilterDefinition, RoomEventFilter};
use crate::rooms::read::make_token;
use crate::rooms::{RoomEvent, RoomHead};
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

/// A joined (or left) room in a sync.
#[derive(Clone, Debug, Default)]
pub struct SyncedRoom {
    pub timeline: Timeline,
    pub state: Vec<RoomEvent>,
    pub ephemeral: Vec<Value>,
    pub account_data: Vec<Value>,
    pub notification_count: u64,
    pub highlight_count: u64,
    /// Per thread root: (notifications, highlights).
    pub thread_counts: BTreeMap<String, (u64, u64)>,
    /// `(heroes, joined, invited)`, when it may have changed.
    pub summary: Option<(Vec<String>, u64, u64)>,
}

/// The answer to a sync.
#[derive(Clone, Debug, Default)]
pub struct SyncResponse {
    pub next_batch: SyncToken,
    pub join: BTreeMap<OwnedRoomId, SyncedRoom>,
    pub leave: BTreeMap<OwnedRoomId, SyncedRoom>,
    /// Stripped state.
    pub invite: BTreeMap<OwnedRoomId, Vec<Value>>,
    pub knock: BTreeMap<OwnedRoomId, Vec<Value>>,
    pub account_data: Vec<Value>,
    pub presence: Vec<Value>,
    pub to_device: Vec<Value>,
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
    }
}

/// State shared with invitees and knockers.
const STRIPPED_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// The longest a sync may long-poll.
const MAX_TIMEOUT_MS: u64 = 5 * 60 * 1000;

fn stripped(event: &RoomEvent) -> Value {
    json!({
        "type": event.pdu.kind.to_string(),
        "state_key": event.pdu.state_key,
        "content": event.pdu.content_value(),
        "sender": event.pdu.sender,
    })
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
        let _active = self.active_syncs.start(&requester.user_id);
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
            // In-memory streams restart at zero.
            let current = self.current_sync_token();
            for (position, now) in [
                (&mut since.typing, current.typing),
                (&mut since.to_device, current.to_device),
                (&mut since.device_lists, current.device_lists),
            ] {
                if *position > now {
                    *position = 0;
                }
            }
        }
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
        let filter = &request.filter;
        let initial = since.is_none() || request.full_state;
        let since_token = since.unwrap_or_default();
        let mut response = SyncResponse { next_batch: now, ..SyncResponse::default() };

        // Membership changes since the token, per room (the latest wins).
        let mut changed: BTreeMap<String, String> = BTreeMap::new();
        if let Some(since) = since {
            for change in self.store.membership_changes_since(user_id.as_str(), since.events).await? {
                if change.stream_ordering <= now.events {
                    changed.insert(change.room_id, change.membership);
                }
            }
        }
        let memberships = self.store.user_memberships(user_id.as_str()).await?;
        let mut rooms_with_events: HashSet<String> = HashSet::new();
        if !initial {
            rooms_with_events.extend(
                self.store.rooms_with_events_since(user_id.as_str(), since_token.events, now.events).await?,
            );
        }
        let account_data = self
            .store
            .account_data_since(user_id.as_str(), since_token.account_data, now.account_data)
            .await?;
        let mut room_account_data: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for entry in &account_data {
            let content: Value = serde_json::from_str(&entry.content).unwrap_or(Value::Null);
            let event = json!({"type": entry.kind, "content": content});
            if entry.room_id.is_empty() {
                if filter.account_data.allows(&entry.kind, None) {
                    response.account_data.push(event);
                }
            } else if filter.room.account_data.allows_type(&entry.kind) {
                room_account_data.entry(entry.room_id.clone()).or_default().push(event);
            }
        }

        // Push rules are account data too; users on the defaults have none stored.
        if initial
            && filter.account_data.allows("m.push_rules", None)
            && !response.account_data.iter().any(|e| e["type"] == "m.push_rules")
        {
            let rules = self.push_rules(user_id).await?;
            response.account_data.push(json!({
                "type": "m.push_rules",
                "content": {"global": crate::push::ruleset_json(&rules)},
            }));
        }
        for (room, membership, _) in &memberships {
            if !filter.room.allows_room(room) {
                continue;
            }
            let Ok(room_id) = RoomId::parse(room) else { continue };
            let changed_here = changed.contains_key(room);
            match membership.as_str() {
                "join" => {
                    let newly_joined = changed_here && !initial;
                    let interesting = initial
                        || newly_joined
                        || rooms_with_events.contains(room)
                        || room_account_data.contains_key(room)
                        || self.receipts_or_typing_changed(&room_id, since_token, now).await?;
                    if !interesting {
                        continue;
                    }
                    let Some(head) = self.room_head(&room_id).await? else { continue };
                    let from = if initial || newly_joined { None } else { Some(since_token.events) };
                    let mut synced = self.sync_room(requester, &head, from, now, request, None).await?;
                    synced.ephemeral = self
                        .room_ephemeral(
                            user_id,
                            &room_id,
                            if initial { None } else { Some(since_token) },
                            now,
                            filter,
                        )
                        .await?;
                    synced.account_data = room_account_data.remove(room).unwrap_or_default();
                    self.unread_counts(user_id, &room_id, filter, &mut synced).await?;
                    if initial
                        || newly_joined
                        || synced.timeline.events.iter().any(|e| e.pdu.kind.to_string() == "m.room.member")
                    {
                        synced.summary = Some(self.room_summary_counts(&head, user_id).await?);
                    }
                    let unchanged = !initial
                        && !newly_joined
                        && synced.timeline.events.is_empty()
                        && synced.state.is_empty()
                        && synced.ephemeral.is_empty()
                        && synced.account_data.is_empty();
                    if !unchanged {
                        response.join.insert(room_id, synced);
                    }
                }
                "invite" | "knock" => {
                    if !initial && !changed_here {
                        continue;
                    }
                    let Some(head) = self.room_head(&room_id).await? else { continue };
                    let state = self.stripped_state(&head, user_id).await?;
                    if membership == "invite" {
                        response.invite.insert(room_id, state);
                    } else {
                        response.knock.insert(room_id, state);
                    }
                }
                "leave" | "ban" => {
                    if self.store.is_forgotten(user_id.as_str(), room).await? {
                        continue;
                    }
                    let include = if initial { filter.room.include_leave } else { changed_here };
                    if !include {
                        continue;
                    }
                    let Some(head) = self.room_head(&room_id).await? else { continue };
                    // The room as it was up to (and including) leaving.
                    let left_at = match head.state_event_id("m.room.member", user_id.as_str()) {
                        Some(id) => self
                            .store
                            .get_event(id.as_str())
                            .await?
                            .map(|e| e.stream_ordering)
                            .unwrap_or(now.events),
                        None => now.events,
                    };
                    let from = if initial { None } else { Some(since_token.events) };
                    let mut synced =
                        self.sync_room(requester, &head, from, now, request, Some(left_at)).await?;
                    synced.account_data = room_account_data.remove(room).unwrap_or_default();
                    response.leave.insert(room_id, synced);
                }
                _ => {}
            }
        }

        if self.config.presence.enabled {
            response.presence = self
                .presence_for_sync(
                    user_id,
                    if initial { None } else { Some(since_token.presence) },
                    now,
                    filter,
                )
                .await?;
        }
        Ok(response)
    }

    async fn receipts_or_typing_changed(
        &self,
        room_id: &RoomId,
        since: SyncToken,
        now: SyncToken,
    ) -> Result<bool> {
        if now.typing > since.typing && self.typing.typing_in(room_id).1 > since.typing {
            return Ok(true);
        }
        if now.receipts > since.receipts {
            return Ok(!self
                .store
                .receipts_since(room_id.as_str(), since.receipts, now.receipts)
                .await?
                .is_empty());
        }
        Ok(false)
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
        let mut limit = i64::try_from(filter.timeline.limit.unwrap_or(10).max(1)).unwrap_or(i64::MAX);
        let cap = self.config.room.filter_timeline_limit;
        if cap > 0 {
            limit = limit.min(cap);
        }
        let upto = until.unwrap_or(now.events).min(now.events);
        let sql_filter = filter.timeline.to_sql();
        let fetched = self
            .store
            .room_events(
                head.room_id.as_str(),
                upto + 1,
                from.map(|f| f + 1),
                false,
                limit.saturating_add(1),
                &sql_filter,
            )
            .await?;
        let limited = fetched.len() as i64 > limit;
        let mut stored = fetched;
        stored.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        stored.reverse();
        let mut events = Vec::with_capacity(stored.len());
        for event in &stored {
            events.push(self.parse_stored(event, &head.rules)?);
        }
        let events = self.filter_visible(&requester.user_id, events).await?;
        let first_position = stored.first().map(|e| e.stream_ordering).unwrap_or(upto + 1);
        let prev_batch = make_token(first_position - 1);

        // The state before the timeline.
        let full = from.is_none() || request.full_state;
        let state_ids: Vec<String> = if full {
            let group = match stored.first() {
                Some(first) => first.state_before,
                None => self
                    .store
                    .room_events(head.room_id.as_str(), upto + 1, None, false, 1, &Default::default())
                    .await?
                    .first()
                    .and_then(|e| e.state_after),
            };
            match group {
                // With lazily loaded members, only the timeline's senders' (and the user's
                // own) member events are wanted: leave the others unread (a room of 10,000
                // members would otherwise fetch and parse every member event).
                Some(group) => {
                    let senders: HashSet<&str> = events.iter().map(|e| e.pdu.sender.as_str()).collect();
                    let lazy = filter.state.lazy_load_members;
                    self.state_of_group_cached(group)
                        .await?
                        .iter()
                        .filter(|((kind, key), _)| {
                            !lazy
                                || kind != "m.room.member"
                                || senders.contains(key.as_str())
                                || key == requester.user_id.as_str()
                        })
                        .map(|(_, id)| id.clone())
                        .collect()
                }
                None => Vec::new(),
            }
        } else if limited {
            self.store.state_changes_between(head.room_id.as_str(), from.unwrap_or(0), first_position).await?
        } else {
            Vec::new()
        };
        let timeline_ids: HashSet<String> = events.iter().map(|e| e.pdu.event_id.to_string()).collect();
        let state_ids: Vec<String> = state_ids.into_iter().filter(|id| !timeline_ids.contains(id)).collect();
        let stored_state = self.store.get_events(&state_ids).await?;
        let mut state = Vec::with_capacity(stored_state.len());
        for event in &stored_state {
            state.push(self.parse_stored(event, &head.rules)?);
        }
        state = self.filter_state(state, &events, &filter.state, &requester.user_id);
        state.sort_by_key(|e| e.stream_ordering);
        Ok(SyncedRoom { timeline: Timeline { events, limited, prev_batch }, state, ..SyncedRoom::default() })
    }

    /// Applies the state filter, including `lazy_load_members`: member events only of the
    /// timeline's senders (and the user's own).
    fn filter_state(
        &self,
        state: Vec<RoomEvent>,
        timeline: &[RoomEvent],
        filter: &RoomEventFilter,
        user_id: &UserId,
    ) -> Vec<RoomEvent> {
        let senders: BTreeSet<String> = timeline.iter().map(|e| e.pdu.sender.to_string()).collect();
        state
            .into_iter()
            .filter(|e| {
                filter.allows_type(&e.pdu.kind.to_string()) && filter.allows_sender(e.pdu.sender.as_str())
            })
            .filter(|e| {
                if !filter.lazy_load_members || e.pdu.kind.to_string() != "m.room.member" {
                    return true;
                }
                let key = e.pdu.state_key.as_deref().unwrap_or_default();
                senders.contains(key) || key == user_id.as_str()
            })
            .collect()
    }

    async fn room_ephemeral(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        since: Option<SyncToken>,
        now: SyncToken,
        filter: &FilterDefinition,
    ) -> Result<Vec<Value>> {
        let mut ephemeral = Vec::new();
        let (typing, changed_at) = self.typing.typing_in(room_id);
        if since.is_none_or(|s| changed_at > s.typing)
            && (since.is_some() || !typing.is_empty())
            && filter.room.ephemeral.allows_type("m.typing")
        {
            ephemeral.push(json!({"type": "m.typing", "content": {"user_ids": typing}}));
        }
        if filter.room.ephemeral.allows_type("m.receipt") {
            let receipts = self
                .store
                .receipts_since(room_id.as_str(), since.map_or(0, |s| s.receipts), now.receipts)
                .await?;
            let mut content: BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>> = BTreeMap::new();
            for receipt in receipts {
                if receipt.receipt_type == "m.read.private" && receipt.user_id != user_id.as_str() {
                    continue;
                }
                let mut body = json!({"ts": receipt.ts});
                if !receipt.thread_id.is_empty() {
                    body["thread_id"] = json!(receipt.thread_id);
                }
                content
                    .entry(receipt.event_id)
                    .or_default()
                    .entry(receipt.receipt_type)
                    .or_default()
                    .insert(receipt.user_id, body);
            }
            if !content.is_empty() {
                ephemeral.push(json!({"type": "m.receipt", "content": content}));
            }
        }
        Ok(ephemeral)
    }

    /// `(heroes, joined count, invited count)`.
    async fn room_summary_counts(
        &self,
        head: &RoomHead,
        user_id: &UserId,
    ) -> Result<(Vec<String>, u64, u64)> {
        let joined = self.store.room_members(head.room_id.as_str(), "join").await?;
        let invited = self.store.room_members(head.room_id.as_str(), "invite").await?;
        let has_name = head.state_event_id("m.room.name", "").is_some()
            || head.state_event_id("m.room.canonical_alias", "").is_some();
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
        Ok((heroes, joined.len() as u64, invited.len() as u64))
    }

    async fn stripped_state(&self, head: &RoomHead, user_id: &UserId) -> Result<Vec<Value>> {
        let mut ids: Vec<String> = STRIPPED_STATE_TYPES
            .iter()
            .filter_map(|kind| head.state_event_id(kind, "").map(|id| id.to_string()))
            .collect();
        if let Some(own) = head.state_event_id("m.room.member", user_id.as_str()) {
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
        Ok(events.iter().map(stripped).collect())
    }

    async fn presence_for_sync(
        &self,
        user_id: &UserId,
        since: Option<i64>,
        now: SyncToken,
        filter: &FilterDefinition,
    ) -> Result<Vec<Value>> {
        let visible: HashSet<String> =
            self.store.users_sharing_rooms(user_id.as_str()).await?.into_iter().collect();
        let records = self.store.presence_since(since.unwrap_or(0), now.presence).await?;
        let now_ts = now_ms() as i64;
        let include_offline = since.is_some() || self.config.presence.include_offline_users_on_sync;
        Ok(records
            .iter()
            .filter(|r| r.user_id == user_id.as_str() || visible.contains(&r.user_id))
            .filter(|r| include_offline || r.state != "offline")
            .filter(|r| filter.presence.allows("m.presence", Some(&r.user_id)))
            .map(|r| crate::presence::presence_event(r, now_ts))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::SyncToken;

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
