//! The one write path: every local event is prepared (built on the room head, checked
//! against the authorization rules and the server's own rules), persisted once with its push
//! actions, and then published.

use std::collections::HashMap;
use std::sync::Arc;

use myelin_core::pdu::{Pdu, PduContext, PduTemplate};
use myelin_core::{ErrCode, MatrixError};
use myelin_store::{NewEvent, NewRelation};
use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId, UserId};
use serde_json::Value;

use super::{RoomHead, TxnKey};
use crate::util::{now_ms, random_string};
use crate::{Error, Result, Services};

/// A newly persisted event, as announced to the rest of the server.
#[derive(Clone, Debug)]
pub struct NewEventNotice {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub stream_ordering: i64,
    pub sender: String,
    pub kind: String,
    pub state_key: Option<String>,
    /// The membership a member event sets.
    pub membership: Option<String>,
}

/// Events written but not yet announced (see [`Services::stage_events`]).
pub(crate) struct StagedEvents {
    room_id: OwnedRoomId,
    prepared: Vec<PreparedEvent>,
    positions: Vec<crate::streams::Position>,
    durability: myelin_store::Durability,
    queued: u64,
    with_state: bool,
    /// Whether the room's whole current state was replaced (a remote join).
    replaces_state: bool,
}

/// What a local event is made from.
#[derive(Clone, Debug)]
pub struct EventDraft {
    pub kind: String,
    pub state_key: Option<String>,
    pub content: Value,
    pub redacts: Option<OwnedEventId>,
}

impl EventDraft {
    pub fn state(kind: &str, state_key: &str, content: Value) -> EventDraft {
        EventDraft { kind: kind.to_owned(), state_key: Some(state_key.to_owned()), content, redacts: None }
    }

    pub fn message(kind: &str, content: Value) -> EventDraft {
        EventDraft { kind: kind.to_owned(), state_key: None, content, redacts: None }
    }
}

/// An event built and authorised, not yet persisted.
pub(crate) struct PreparedEvent {
    pub pdu: Arc<Pdu>,
    pub event: NewEvent,
    pub redacted: Option<OwnedEventId>,
    /// For a remote event that takes part in the room: the head's state and forward
    /// extremities after it (a local event moves the head by [`Services::apply_to_head`]).
    pub next_head: Option<NextHead>,
}

impl PreparedEvent {
    /// Whether the event takes part in the room (every local event; a remote one neither
    /// rejected nor soft-failed): announced, evaluated for push, in the timeline.
    pub fn applies(&self) -> bool {
        self.event.remote.as_ref().is_none_or(|r| r.rejected_reason.is_none() && !r.soft_failed)
    }
}

/// The room head after a remote event (see [`PreparedEvent::next_head`]).
pub(crate) struct NextHead {
    pub state: super::HeadState,
    pub extremities: Vec<OwnedEventId>,
}

fn txn_record(sender: &UserId, txn: &TxnKey) -> myelin_store::TxnRecord {
    myelin_store::TxnRecord {
        user_id: sender.to_string(),
        device_id: txn.device.clone(),
        scope: txn.scope.clone(),
        txn_id: txn.txn_id.clone(),
    }
}

fn forbidden(message: impl Into<String>) -> Error {
    MatrixError::forbidden(message).into()
}

/// The relation an event declares in `m.relates_to`, if any.
pub(crate) fn relation_of(content: &Value) -> Option<NewRelation> {
    let relates_to = content.get("m.relates_to")?;
    let rel_type = relates_to.get("rel_type")?.as_str()?;
    let target = relates_to.get("event_id")?.as_str()?;
    EventId::parse(target).ok()?;
    Some(NewRelation {
        relates_to_id: target.to_owned(),
        rel_type: rel_type.to_owned(),
        aggregation_key: relates_to.get("key").and_then(Value::as_str).map(str::to_owned),
    })
}

/// The most bytes an event's `sender`, `room_id`, `state_key`, `type` and `event_id` may
/// have (the spec's limit, enforced as Synapse's `_check_size_limits` does).
pub const MAX_EVENT_FIELD_BYTES: usize = 255;

/// `413 M_TOO_LARGE` when one of an event's identifying fields is over 255 bytes.
pub(crate) fn check_field_sizes(pdu: &Pdu) -> Result<()> {
    let kind = pdu.kind.to_string();
    let fields = [
        ("sender", Some(pdu.sender.as_str())),
        ("room_id", Some(pdu.room_id.as_str())),
        ("state_key", pdu.state_key.as_deref()),
        ("type", Some(kind.as_str())),
        ("event_id", Some(pdu.event_id.as_str())),
    ];
    for (name, value) in fields {
        if value.is_some_and(|value| value.len() > MAX_EVENT_FIELD_BYTES) {
            return Err(MatrixError::too_large(format!("'{name}' too large")).into());
        }
    }
    Ok(())
}

impl Services {
    /// Sends one local event into a room: the single write path. Runs on a task of its own:
    /// a request abandoned by its client must not stop a send half-way (its stream position
    /// would never be published and every sync would wait for it).
    pub async fn send_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: EventDraft,
        txn: Option<TxnKey>,
    ) -> Result<Arc<Pdu>> {
        let services = self.clone();
        let (room_id, sender) = (room_id.to_owned(), sender.to_owned());
        tokio::spawn(async move { services.send_event_to_completion(&room_id, &sender, draft, txn).await })
            .await
            .map_err(Error::internal)?
    }

    async fn send_event_to_completion(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: EventDraft,
        txn: Option<TxnKey>,
    ) -> Result<Arc<Pdu>> {
        let sending = self.rooms.sending(room_id);
        let mut guard = self.lock_room_for_write(room_id).await?;
        let Some(head) = guard.as_mut() else {
            return Err(MatrixError::not_found("Unknown room").into());
        };
        if let Some(txn) = &txn
            && let Some(existing) = self.store.event_for_txn(&txn_record(sender, txn)).await?
        {
            let existing = EventId::parse(&existing).map_err(Error::internal)?;
            if let Some(pdu) =
                self.get_pdus(std::slice::from_ref(&existing), &head.rules).await?.remove(&existing)
            {
                return Ok(pdu);
            }
        }
        let prepared = self.prepare_event(head, sender, draft, txn, None).await?;
        // Others queued on this room: let their events share this one's commit. The room is
        // released as soon as the event is written (the head has moved past it), and the
        // event is announced once its commit is on disk.
        let more_coming = sending.others();
        let staged = self.stage_events(head, vec![prepared], more_coming).await?;
        drop(sending);
        drop(guard);
        let mut pdus = self.finish_staged(staged, None).await?;
        pdus.pop().ok_or_else(|| Error::internal("no event persisted"))
    }

    /// Sends several local events from one sender into a room in one transaction, in order
    /// (the bulk path of imports and of the scale benchmark's seeding). Each event is
    /// authorised against the state its predecessors leave; if any is refused, none is written.
    pub async fn send_events_in_one_commit(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        drafts: Vec<EventDraft>,
    ) -> Result<Vec<Arc<Pdu>>> {
        let mut guard = self.lock_room_for_write(room_id).await?;
        let Some(head) = guard.as_mut() else {
            return Err(MatrixError::not_found("Unknown room").into());
        };
        let mut draft_head = head.clone();
        let mut prepared = Vec::with_capacity(drafts.len());
        for draft in drafts {
            let event = self.prepare_event(&draft_head, sender, draft, None, None).await?;
            if event.pdu.state_key.is_some() {
                return Err(MatrixError::bad_json("Only messages can be sent in one commit").into());
            }
            self.apply_to_head(&mut draft_head, &event);
            prepared.push(event);
        }
        self.commit_events(head, prepared).await
    }

    /// Builds and authorises an event on top of `head`, without changing `head` or the store.
    pub(crate) async fn prepare_event(
        &self,
        head: &RoomHead,
        sender: &UserId,
        draft: EventDraft,
        txn: Option<TxnKey>,
        new_room: Option<(String, String)>,
    ) -> Result<PreparedEvent> {
        let rules = head.rules.clone();
        let auth_types = myelin_core::auth::auth_types(
            &rules,
            &draft.kind,
            sender,
            draft.state_key.as_deref(),
            &draft.content,
        )
        .map_err(|e| MatrixError::bad_json(format!("Invalid event content: {e}")))?;
        let auth_ids: Vec<OwnedEventId> = auth_types
            .iter()
            .filter_map(|(kind, key)| head.state_event_id(&kind.to_string(), key).cloned())
            .collect();
        let mut needed = auth_ids.clone();
        // The create event is consulted by the rules even where it is not an auth event (v12).
        let create_id = head.state_event_id("m.room.create", "").cloned();
        needed.extend(create_id.iter().cloned());
        needed.extend(head.extremities.iter().cloned());
        if let Some(redacts) = &draft.redacts {
            needed.push(redacts.clone());
        }
        let pdus = self.get_pdus(&needed, &rules).await?;
        let auth_pdus: Vec<&Pdu> =
            auth_ids.iter().filter_map(|id| pdus.get(id).map(|p| p.as_ref())).collect();
        let prev_pdus: Vec<&Pdu> =
            head.extremities.iter().filter_map(|id| pdus.get(id).map(|p| p.as_ref())).collect();
        let depth = head.depth + 1;
        let content = draft.content.clone();
        let derives_room_id = draft.kind == "m.room.create"
            && head.state.is_empty()
            && rules.room_id_format == ruma::room_version_rules::RoomIdFormatVersion::V2;
        let template = PduTemplate {
            room_id: if derives_room_id { None } else { Some(head.room_id.clone()) },
            sender: sender.to_owned(),
            kind: draft.kind.clone(),
            state_key: draft.state_key.clone(),
            content,
            redacts: draft.redacts.clone(),
        };
        let local_id = random_string(18);
        let pdu = template
            .build(&PduContext {
                rules: &rules,
                prev_events: &prev_pdus,
                auth_events: &auth_pdus,
                depth,
                origin_server_ts: now_ms(),
                origin: self.server_name(),
                key: self.keys.key_pair(),
                local_id: &local_id,
            })
            .map_err(|e| MatrixError::bad_json(format!("Cannot build the event: {e}")))?;
        let json = pdu.json_string();
        if json.len() > 65_536 {
            return Err(MatrixError::too_large("Event too large").into());
        }
        check_field_sizes(&pdu)?;
        // The authorization rules, against the current state.
        let mut by_key: HashMap<(String, String), Arc<Pdu>> = auth_types
            .iter()
            .filter_map(|(kind, key)| {
                let id = head.state_event_id(&kind.to_string(), key)?;
                Some(((kind.to_string(), key.clone()), pdus.get(id)?.clone()))
            })
            .collect();
        if let Some(create) = create_id.as_ref().and_then(|id| pdus.get(id)) {
            by_key.insert(("m.room.create".to_owned(), String::new()), create.clone());
        }
        let fetch_event = |id: &EventId| pdus.get(id).map(|p| p.as_ref().clone());
        let fetch_state = |kind: &ruma::events::StateEventType, key: &str| {
            by_key.get(&(kind.to_string(), key.to_owned())).map(|p| p.as_ref().clone())
        };
        if let Err(reason) = myelin_core::auth::check_auth(&rules, &pdu, fetch_event, fetch_state) {
            tracing::debug!(%reason, event_type = %draft.kind, "event refused by the authorization rules");
            return Err(MatrixError::forbidden(format!("The event is not allowed: {reason}")).into());
        }
        // Rules the server enforces beyond the authorization rules, for every local event.
        if draft.kind == "m.room.canonical_alias" && draft.state_key.as_deref() == Some("") {
            self.check_canonical_alias(head, &draft.content).await?;
        }
        if relation_of(&draft.content).is_some() {
            self.check_relation(&head.room_id, sender, &draft.kind, &draft.content).await?;
        }
        let redaction = match &draft.redacts {
            Some(target_id) => self.check_redaction(head, sender, target_id, &pdus).await?,
            None => None,
        };
        let membership = if draft.kind == "m.room.member" {
            draft.content.get("membership").and_then(Value::as_str).map(str::to_owned)
        } else {
            None
        };
        let replaces_state = draft
            .state_key
            .as_ref()
            .and_then(|key| head.state_event_id(&draft.kind, key))
            .map(|id| id.to_string());
        let contains_url = draft.content.get("url").is_some_and(Value::is_string);
        let federation_destinations = self.federation_destinations(head, &pdu).await?;
        let event = NewEvent {
            event_id: pdu.event_id.to_string(),
            room_id: pdu.room_id.to_string(),
            stream_ordering: 0,
            depth: depth as i64,
            sender: sender.to_string(),
            kind: draft.kind.clone(),
            state_key: draft.state_key.clone(),
            origin_server_ts: u64::from(pdu.origin_server_ts.0) as i64,
            json,
            prev_events: head.extremities.iter().map(|id| id.to_string()).collect(),
            state_before: head.state_group,
            replaces_state,
            membership,
            relation: relation_of(&draft.content),
            contains_url,
            txn: txn.as_ref().map(|t| txn_record(sender, t)),
            redaction: redaction.as_ref().map(|(id, pruned)| (id.to_string(), pruned.clone())),
            new_room,
            remote: None,
            federation_destinations,
        };
        Ok(PreparedEvent {
            pdu: Arc::new(pdu),
            event,
            redacted: redaction.map(|(id, _)| id),
            next_head: None,
        })
    }

    /// Moves `head` past a prepared event (its state group is set by [`Self::commit_events`]),
    /// so that the next event of a batch builds on it.
    pub(crate) fn apply_to_head(&self, head: &mut RoomHead, prepared: &PreparedEvent) {
        let pdu = &prepared.pdu;
        self.rooms.cache_event(pdu.clone());
        if head.state.is_empty() {
            head.room_id = pdu.room_id.clone();
        }
        if let Some(state_key) = &pdu.state_key {
            head.state.insert((pdu.kind.to_string(), state_key.clone()), pdu.event_id.clone());
        }
        head.extremities = vec![pdu.event_id.clone()];
        head.depth = pdu.depth;
    }

    /// Persists prepared events in one transaction, then moves `head` past them (those it does
    /// not include yet) and announces them.
    pub(crate) async fn commit_events(
        &self,
        head: &mut RoomHead,
        prepared: Vec<PreparedEvent>,
    ) -> Result<Vec<Arc<Pdu>>> {
        let staged = self.stage_events(head, prepared, false).await?;
        self.finish_staged(staged, Some(head)).await
    }

    /// Writes prepared events (in a transaction that may share its commit with others, see
    /// `Db::transaction_batched`) and moves `head` past them. Nothing is announced yet: the
    /// caller may release the room, then must call [`Self::finish_staged`].
    pub(crate) async fn stage_events(
        &self,
        head: &mut RoomHead,
        mut prepared: Vec<PreparedEvent>,
        more_coming: bool,
    ) -> Result<StagedEvents> {
        // Guards: a position is released if this future is dropped before it is published.
        let positions: Vec<crate::streams::Position> =
            prepared.iter().map(|_| self.rooms.stream.allocate()).collect();
        for (event, position) in prepared.iter_mut().zip(&positions) {
            event.event.stream_ordering = position.value();
        }
        let events: Vec<NewEvent> = prepared.iter().map(|p| p.event.clone()).collect();
        // Messages carry their push actions into the persisting transaction (one commit, and a
        // woken /sync sees the event and its notification counts together). A batch with state
        // events changes the context rules run in, so it is evaluated once persisted.
        let with_state = prepared.iter().any(|p| p.pdu.state_key.is_some());
        let push_actions = if with_state {
            Vec::new()
        } else {
            let positioned: Vec<(Arc<Pdu>, i64)> = prepared
                .iter()
                .filter(|p| p.applies())
                .map(|p| (p.pdu.clone(), p.event.stream_ordering))
                .collect();
            self.push_actions_for(&positioned).await
        };
        let (persisted, queued, durability) =
            match self.store.persist_events_batched(&events, &push_actions, more_coming).await {
                Ok(persisted) => persisted,
                Err(error) => {
                    self.abandon_positions(positions).await;
                    return Err(error.into());
                }
            };
        for (prepared, persisted) in prepared.iter().zip(persisted) {
            if let Some(target) = &prepared.redacted {
                self.rooms.forget_event(target);
            }
            match (&prepared.event.remote, &prepared.next_head) {
                (None, _) => {
                    if !head.extremities.contains(&prepared.pdu.event_id) && head.depth < prepared.pdu.depth {
                        self.apply_to_head(head, prepared);
                    }
                    head.state_group = persisted.state_after;
                }
                (Some(_), Some(next)) => {
                    head.state = next.state.clone();
                    head.extremities = next.extremities.clone();
                    head.depth = head.depth.max(prepared.pdu.depth);
                    head.state_group = persisted.current_state_group;
                }
                // Rejected or soft-failed: the head does not move.
                (Some(_), None) => {}
            }
            self.rooms.cache_event(prepared.pdu.clone());
        }
        Ok(StagedEvents {
            room_id: head.room_id.clone(),
            prepared,
            positions,
            durability,
            queued,
            with_state,
            replaces_state: false,
        })
    }

    /// Waits for staged events to be committed, then announces them. If their commit failed,
    /// the room's head goes back to what the database holds: reloaded into `head` when the
    /// caller still holds the room, otherwise dropped from the cache.
    ///
    /// The wait and the announcement run on a task of their own: if the caller is dropped
    /// meanwhile, the events' positions are still published once their commit is known (or
    /// released if it failed), never before.
    pub(crate) async fn finish_staged(
        &self,
        staged: StagedEvents,
        head: Option<&mut RoomHead>,
    ) -> Result<Vec<Arc<Pdu>>> {
        let room_id = staged.room_id.clone();
        let services = self.clone();
        let caller_holds_room = head.is_some();
        let outcome = tokio::spawn(async move { services.publish_staged(staged, caller_holds_room).await })
            .await
            .map_err(Error::internal)?;
        if outcome.is_err()
            && let Some(head) = head
            && let Some(fresh) = self.load_head(&room_id).await?
        {
            *head = fresh;
        }
        outcome
    }

    async fn publish_staged(&self, staged: StagedEvents, caller_holds_room: bool) -> Result<Vec<Arc<Pdu>>> {
        let StagedEvents { room_id, prepared, positions, durability, queued, with_state, replaces_state } =
            staged;
        if let Err(error) = durability.wait().await {
            self.abandon_positions(positions).await;
            for prepared in &prepared {
                self.rooms.forget_event(&prepared.pdu.event_id);
            }
            if !caller_holds_room {
                *self.rooms.lock_for_write(&room_id).await = None;
                // The room's head was published with these events: what was worked out of it
                // meanwhile may hold them.
                self.rooms.reset_changes();
            }
            return Err(error.into());
        }
        // Committed: cached memberships it may change go, before its position is published.
        if replaces_state {
            self.rooms.forget_all_memberships();
        }
        for prepared in &prepared {
            self.forget_memberships_changed_by(&prepared.event);
        }
        {
            let mut pending = self.rooms.pending.lock();
            for prepared in prepared.iter().filter(|p| p.event.stream_ordering > 0) {
                // Before the position is published, so that no reader at it misses the event
                // (every event counts as the room's last, even one that does not apply).
                self.rooms.note_new_event(&prepared.pdu.room_id, prepared.event.stream_ordering);
            }
            for prepared in prepared.iter().filter(|p| p.applies()) {
                // Before the position is published, so that no reader at it misses the bump.
                if crate::sliding_sync::lists::BUMP_EVENT_TYPES.contains(&prepared.event.kind.as_str())
                    && prepared.event.stream_ordering > 0
                {
                    self.rooms.note_bump(&prepared.pdu.room_id, prepared.event.stream_ordering);
                }
                pending.insert(
                    prepared.event.stream_ordering,
                    NewEventNotice {
                        room_id: prepared.pdu.room_id.clone(),
                        event_id: prepared.pdu.event_id.clone(),
                        stream_ordering: prepared.event.stream_ordering,
                        sender: prepared.event.sender.clone(),
                        kind: prepared.event.kind.clone(),
                        state_key: prepared.event.state_key.clone(),
                        membership: prepared.event.membership.clone(),
                    },
                );
            }
        }
        let mut current = 0;
        for position in positions {
            current = position.finish();
        }
        self.publish_events_up_to(current).await;
        self.push_queued(queued);
        if prepared.iter().any(|p| !p.event.federation_destinations.is_empty()) {
            self.wake_federation_sender();
        }
        if with_state {
            let applied: Vec<Arc<Pdu>> =
                prepared.iter().filter(|p| p.applies()).map(|p| p.pdu.clone()).collect();
            self.record_push_actions(&applied).await;
        }
        Ok(prepared.into_iter().map(|p| p.pdu).collect())
    }

    /// Forgets the cached memberships a committed event may have changed: those
    /// (`rooms::user_rooms`) of the local users whose current-state membership it may have
    /// changed (its own target, and the member rows the state resolution of a remote event
    /// changed), and the members of its room (`rooms::room_members`) if so.
    fn forget_memberships_changed_by(&self, event: &NewEvent) {
        let local =
            |key: &str| UserId::parse(key).ok().filter(|u| u.server_name().as_str() == self.server_name());
        let mut room_changed = false;
        if event.kind == "m.room.member"
            && let Some(key) = event.state_key.as_deref()
        {
            room_changed = true;
            if let Some(user) = local(key) {
                self.rooms.user_rooms.invalidate(&user);
            }
        }
        let rows = event.remote.as_ref().and_then(|r| r.current.as_ref()).map(|c| &c.rows);
        for ((kind, key), _) in rows.into_iter().flatten() {
            if kind == "m.room.member" {
                room_changed = true;
                if let Some(user) = local(key) {
                    self.rooms.user_rooms.invalidate(&user);
                }
            }
        }
        if room_changed && let Ok(room_id) = RoomId::parse(&event.room_id) {
            self.rooms.room_members.invalidate(&room_id);
        }
    }

    /// Releases stream positions whose events were not persisted.
    async fn abandon_positions(&self, positions: Vec<crate::streams::Position>) {
        drop(positions);
        self.publish_events_up_to(self.rooms.stream.current()).await;
    }

    /// Announces every persisted event whose position is now published: wakes the syncs of
    /// the room's local members (and of an invited or knocking user) and tells listeners.
    pub(crate) async fn publish_events_up_to(&self, current: i64) {
        let ready: Vec<NewEventNotice> = {
            let mut pending = self.rooms.pending.lock();
            let later = pending.split_off(&(current + 1));
            let ready: Vec<NewEventNotice> = std::mem::replace(&mut *pending, later).into_values().collect();
            // Membership changes reach the cached member lists in stream order (under the
            // pending lock: publishers run concurrently).
            for notice in &ready {
                if let (Some(membership), Some(user)) = (&notice.membership, notice.state_key.as_deref())
                    && notice.kind == "m.room.member"
                    && let Ok(user) = UserId::parse(user)
                    && user.server_name().as_str() == self.server_name()
                {
                    self.notifier.apply_membership(&notice.room_id, &user, membership);
                }
            }
            ready
        };
        for notice in ready {
            match self.local_room_members(&notice.room_id).await {
                Ok(members) => self.notifier.notify_members(&members),
                Err(error) => tracing::warn!(%error, "could not load room members to notify"),
            }
            if notice.kind == "m.room.member"
                && let Some(target) = notice.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
            {
                self.notifier.notify_user(&target);
            }
            let _ = self.rooms.new_events.send(notice);
        }
        self.appservices.wakeup.notify_waiters();
    }

    /// A redaction is allowed for one's own events, or with the `redact` power level; returns
    /// the target and its pruned JSON.
    async fn check_redaction(
        &self,
        head: &RoomHead,
        sender: &UserId,
        target_id: &OwnedEventId,
        pdus: &HashMap<OwnedEventId, Arc<Pdu>>,
    ) -> Result<Option<(OwnedEventId, String)>> {
        let Some(target) = pdus.get(target_id) else {
            // Redacting an unknown event is allowed by the spec; nothing is pruned.
            return Ok(None);
        };
        if target.room_id != head.room_id {
            return Err(MatrixError::not_found("Event not found in this room").into());
        }
        if target.sender != sender {
            let levels = self.power_levels(head).await?;
            if !levels.can_redact_others(sender) {
                return Err(forbidden("You don't have permission to redact events sent by others"));
            }
        }
        let pruned = target.redacted(&head.rules).map_err(Error::internal)?;
        Ok(Some((target_id.clone(), pruned.json_string())))
    }

    /// A relation (`m.relates_to`) must point into the same room; an annotation may not be
    /// repeated by its sender; a thread cannot start from an event that itself relates to
    /// another (as Synapse checks).
    async fn check_relation(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        kind: &str,
        content: &Value,
    ) -> Result<()> {
        let Some(relation) = relation_of(content) else { return Ok(()) };
        let target = self.store.get_event(&relation.relates_to_id).await?;
        let Some(target) = target else { return Ok(()) };
        if target.room_id != room_id.as_str() {
            return Err(MatrixError::unknown("Relations must be in the same room").into());
        }
        if relation.rel_type == "m.annotation"
            && let Some(key) = &relation.aggregation_key
            && self.store.has_annotation(&relation.relates_to_id, sender.as_str(), kind, key).await?
        {
            return Err(
                MatrixError::new(ErrCode::DuplicateAnnotation, "Can't send same reaction twice").into()
            );
        }
        if relation.rel_type == "m.thread" {
            // A stored event that does not parse is corrupt: refuse rather than guess.
            let json: Value = serde_json::from_str(&target.json).map_err(Error::internal)?;
            if json
                .get("content")
                .and_then(|c| c.get("m.relates_to"))
                .and_then(|r| r.get("rel_type"))
                .is_some()
            {
                return Err(MatrixError::unknown("Cannot start threads from an event with a relation").into());
            }
        }
        Ok(())
    }

    /// Every alias an `m.room.canonical_alias` event adds (to those the room's current one
    /// names, as Synapse checks) must exist and point to the room.
    async fn check_canonical_alias(&self, head: &RoomHead, content: &Value) -> Result<()> {
        let room_id = &head.room_id;
        let current = self.current_state_pdu(head, "m.room.canonical_alias", "").await?;
        let current = current.as_ref().map(|pdu| pdu.content_value());
        let named_now = |alias: &str| {
            current.as_ref().is_some_and(|content| {
                content.get("alias").and_then(Value::as_str) == Some(alias)
                    || content
                        .get("alt_aliases")
                        .and_then(Value::as_array)
                        .is_some_and(|list| list.iter().any(|a| a.as_str() == Some(alias)))
            })
        };
        let mut aliases = Vec::new();
        match content.get("alias") {
            None | Some(Value::Null) => {}
            Some(Value::String(alias)) => aliases.push(alias.clone()),
            Some(_) => return Err(MatrixError::bad_json("alias must be a string").into()),
        }
        match content.get("alt_aliases") {
            None => {}
            Some(Value::Array(list)) => {
                for alias in list {
                    aliases.push(
                        alias
                            .as_str()
                            .ok_or_else(|| MatrixError::bad_json("alt_aliases must be strings"))?
                            .to_owned(),
                    );
                }
            }
            Some(_) => return Err(MatrixError::bad_json("alt_aliases must be a list").into()),
        }
        for alias in aliases {
            if named_now(&alias) {
                continue;
            }
            let parsed = ruma::RoomAliasId::parse(alias.as_str())
                .map_err(|_| MatrixError::invalid_param(format!("Invalid alias {alias:?}")))?;
            if parsed.server_name().as_str() != self.server_name() {
                // Remote aliases cannot be checked without federation.
                continue;
            }
            let points_here =
                self.store.get_alias(&alias).await?.is_some_and(|(target, _)| target == room_id.as_str());
            if !points_here {
                return Err(MatrixError::new(
                    ErrCode::BadAlias,
                    format!("Room alias {alias} does not point to the room"),
                )
                .into());
            }
        }
        Ok(())
    }
}

/// Events another server built (remote joins and leaves: `federation::join`).
impl Services {
    /// Writes events another server built, checked by the caller, as outliers: stored with a
    /// negative stream ordering, never in a room's timeline, state or forward extremities
    /// (the state and auth chain fetched at a gap in the room's history).
    pub(crate) async fn persist_outliers(&self, outliers: &[myelin_store::NewOutlier]) -> Result<()> {
        Ok(self.store.persist_outliers(outliers).await?)
    }

    /// Writes backfilled history, checked by the caller (oldest first), below the stream:
    /// in the timeline with its state, never a forward extremity nor a change to the room's
    /// current state, never announced to `/sync`.
    pub(crate) async fn persist_backfilled(&self, events: &[NewEvent]) -> Result<()> {
        Ok(self.store.persist_backfilled(events).await?)
    }

    /// Writes an event another server built (checked by the caller) with the room, outliers
    /// and state it stands on ([`myelin_store::RemoteBuilt`]), in one transaction, and moves
    /// `head` (the state before the event) past it. As with [`Self::stage_events`], nothing is
    /// announced until [`Self::finish_staged`].
    pub(crate) async fn stage_remote_built(
        &self,
        head: &mut RoomHead,
        mut prepared: PreparedEvent,
        remote: &myelin_store::RemoteBuilt,
    ) -> Result<StagedEvents> {
        let position = self.rooms.stream.allocate();
        prepared.event.stream_ordering = position.value();
        let (state_after, durability) = match self.store.persist_remote_built(&prepared.event, remote).await {
            Ok(persisted) => persisted,
            Err(error) => {
                self.abandon_positions(vec![position]).await;
                return Err(error.into());
            }
        };
        self.apply_to_head(head, &prepared);
        head.state_group = state_after;
        Ok(StagedEvents {
            room_id: head.room_id.clone(),
            prepared: vec![prepared],
            positions: vec![position],
            durability,
            queued: 0,
            with_state: true,
            replaces_state: remote.state_before.is_some(),
        })
    }
}
