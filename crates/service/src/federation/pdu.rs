//! Events received from other servers, into the one write path.
//!
//! # Checks, in order (the spec's "Checks performed on receipt of a PDU")
//!
//! 1. The PDU parses in the room's version (event ID from the reference hash for v3+, the
//!    `event_id` field for v1/v2), names the room it was sent for, and keeps the size limits
//!    of local events (65,536 bytes, 255-byte identifiers), at most 20 prev and 10 auth events
//!    as Synapse. A depth beyond 2^53 does not even parse as canonical JSON.
//! 2. Signatures: the sender's server (and for v1/v2 the event ID's server) must have signed
//!    it; a signature that does not verify refuses the event. A content hash that does not
//!    match keeps the event, redacted.
//! 3. Its auth and prev events must be known (missing auth events are fetched from the origin
//!    and checked the same way first; missing prev events are the caller's to fetch).
//! 4. The authorization rules against its auth events, then against the state before it (its
//!    prev events' states, resolved when they differ): failing either rejects it (stored, never
//!    in the timeline, state or forward extremities).
//! 5. The authorization rules against the current state: failing only those soft-fails it
//!    (stored with its state, not a forward extremity, never shown to clients).
//!
//! The room's current state then becomes the resolution of the new forward extremities'
//! states; everything is persisted by `stage_events` / `finish_staged` like a local event.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use myelin_core::MatrixError;
use myelin_core::pdu::{Pdu, StateMap};
use myelin_store::{CurrentStateChange, NewEvent, RemoteEvent, StateDelta};
use ruma::room_version_rules::{EventIdFormatVersion, RoomVersionRules};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId, ServerName};
use serde_json::Value;

use crate::rooms::write::{check_field_sizes, relation_of};
use crate::rooms::{HeadState, NextHead, PreparedEvent, RoomHead};
use crate::{Error, Result, Services};

/// The most prev events a received PDU may name (as Synapse).
pub const MAX_PREV_EVENTS: usize = 20;
/// The most auth events a received PDU may name (as Synapse).
pub const MAX_AUTH_EVENTS: usize = 10;
/// The largest PDU, in canonical JSON bytes.
pub const MAX_PDU_BYTES: usize = 65_536;

/// What became of a received PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PduOutcome {
    /// Persisted and part of the room.
    Accepted(OwnedEventId),
    /// Already stored: nothing done.
    AlreadyKnown(OwnedEventId),
    /// Stored as rejected by the authorization rules.
    Rejected(OwnedEventId, String),
    /// Stored, but refused by the room's current state.
    SoftFailed(OwnedEventId),
    /// Not stored: these prev events are unknown here.
    MissingPrevEvents(OwnedEventId, Vec<OwnedEventId>),
}

impl PduOutcome {
    pub fn event_id(&self) -> &EventId {
        match self {
            PduOutcome::Accepted(id)
            | PduOutcome::AlreadyKnown(id)
            | PduOutcome::Rejected(id, _)
            | PduOutcome::SoftFailed(id)
            | PduOutcome::MissingPrevEvents(id, _) => id,
        }
    }
}

/// A PDU parsed and its signatures checked.
pub struct CheckedPdu {
    pub pdu: Pdu,
}

fn bad_json(message: impl Into<String>) -> Error {
    MatrixError::bad_json(message).into()
}

/// The event ID of a PDU in a room version's format.
pub fn pdu_event_id(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<OwnedEventId> {
    if rules.event_id_format == EventIdFormatVersion::V1 {
        match object.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => {
                EventId::parse(id).map_err(|_| bad_json(format!("Invalid event_id {id:?}")))
            }
            _ => Err(bad_json("The PDU has no event_id")),
        }
    } else {
        let hash = ruma::signatures::reference_hash(object, rules)
            .map_err(|e| bad_json(format!("Cannot hash the PDU: {e}")))?;
        EventId::parse(format!("${hash}")).map_err(Error::internal)
    }
}

/// Parses a received PDU into canonical JSON (without `unsigned`, which nobody signed).
pub fn pdu_object(json: &Value) -> Result<CanonicalJsonObject> {
    if !json.is_object() {
        return Err(bad_json("A PDU must be an object"));
    }
    let mut object: CanonicalJsonObject = serde_json::from_value(json.clone())
        .map_err(|e| bad_json(format!("The PDU is not canonical JSON: {e}")))?;
    object.remove("unsigned");
    Ok(object)
}

/// The membership an `m.room.member` event's content sets.
pub(super) fn membership_of(pdu: &Pdu) -> Option<String> {
    (pdu.kind.to_string() == "m.room.member")
        .then(|| pdu.content_value().get("membership").and_then(Value::as_str).map(str::to_owned))
        .flatten()
}

impl Services {
    /// Parses a PDU received for `room_id` and checks its signatures (steps 1 and 2 of the
    /// module doc): a bad content hash gives the redacted event.
    pub async fn check_remote_pdu(
        &self,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        json: &Value,
    ) -> Result<CheckedPdu> {
        let mut object = pdu_object(json)?;
        if rules.event_id_format != EventIdFormatVersion::V1 {
            object.remove("event_id");
        }
        let size = serde_json::to_string(&object).map_err(Error::internal)?.len();
        if size > MAX_PDU_BYTES {
            return Err(MatrixError::too_large("PDU too large").into());
        }
        let event_id = pdu_event_id(&object, rules)?;
        let pdu = Pdu::from_json(object.clone(), event_id.clone(), rules)
            .map_err(|e| bad_json(format!("Invalid PDU: {e}")))?;
        if pdu.room_id != room_id {
            return Err(bad_json(format!("The PDU is for room {}, not {room_id}", pdu.room_id)));
        }
        check_field_sizes(&pdu)?;
        if pdu.prev_events.len() > MAX_PREV_EVENTS {
            return Err(bad_json("Too many prev_events"));
        }
        if pdu.auth_events.len() > MAX_AUTH_EVENTS {
            return Err(bad_json("Too many auth_events"));
        }
        let verified = self.verify_pdu_signatures(&object, rules, u64::from(pdu.origin_server_ts.0)).await?;
        if verified == ruma::signatures::Verified::Signatures {
            tracing::info!(%event_id, "received PDU with a bad content hash: keeping it redacted");
            let redacted =
                pdu.redacted(rules).map_err(|e| bad_json(format!("Cannot redact the PDU: {e}")))?;
            return Ok(CheckedPdu { pdu: redacted });
        }
        Ok(CheckedPdu { pdu })
    }

    /// Verifies the signatures a PDU needs with the signing servers' keys (fetched when
    /// unknown); `Signatures` when they verify but the content hash does not.
    async fn verify_pdu_signatures(
        &self,
        object: &CanonicalJsonObject,
        rules: &RoomVersionRules,
        origin_server_ts: u64,
    ) -> Result<ruma::signatures::Verified> {
        let servers = ruma::signatures::required_server_signatures_to_verify_event(object, &rules.signatures)
            .map_err(|e| forbidden_signature(format!("Cannot check the PDU's signatures: {e}")))?;
        let signatures = match object.get("signatures") {
            Some(CanonicalJsonValue::Object(signatures)) => signatures,
            _ => return Err(forbidden_signature("The PDU is not signed".to_owned())),
        };
        let mut key_map = ruma::signatures::PublicKeyMap::new();
        for server in &servers {
            let Some(CanonicalJsonValue::Object(by_key)) = signatures.get(server.as_str()) else {
                return Err(forbidden_signature(format!("The PDU is not signed by {server}")));
            };
            let mut keys = ruma::signatures::PublicKeySet::new();
            for key_id in by_key.keys().filter(|k| k.starts_with("ed25519:")) {
                let key = if server.as_str() == self.server_name() {
                    (key_id == self.keys.key_id()).then(|| self.keys.public_key().to_owned())
                } else {
                    self.federation
                        .keys
                        .verify_key(server, key_id, origin_server_ts as i64)
                        .await
                        .unwrap_or_else(|error| {
                            tracing::info!(%server, %error, "cannot fetch a signing key");
                            None
                        })
                };
                if let Some(key) = key.and_then(|k| ruma::serde::Base64::parse(k).ok()) {
                    keys.insert(key_id.clone(), key);
                }
            }
            key_map.insert(server.to_string(), keys);
        }
        ruma::signatures::verify_event(&key_map, object, rules)
            .map_err(|e| forbidden_signature(format!("The PDU's signature does not verify: {e}")))
    }

    /// Receives one PDU from `origin` for a room this server has: checks it and persists it
    /// through the write path (see the module doc). `Err` refuses it (nothing stored). Runs on
    /// a task of its own, like a local send.
    pub async fn receive_remote_pdu(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        json: &Value,
    ) -> Result<PduOutcome> {
        self.receive_remote_pdu_at_gap(origin, room_id, json, HashMap::new()).await
    }

    /// [`Self::receive_remote_pdu`] for a PDU after a gap: `gap_states` holds the state after
    /// each of its prev events this server has only as an outlier (fetched from another
    /// server, see `federation::gaps`). A prev event stored only as an outlier without a
    /// state here counts as missing.
    pub(crate) async fn receive_remote_pdu_at_gap(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        json: &Value,
        gap_states: HashMap<OwnedEventId, StateMap>,
    ) -> Result<PduOutcome> {
        let services = self.clone();
        let (origin, room_id, json) = (origin.to_owned(), room_id.to_owned(), json.clone());
        tokio::spawn(async move {
            services.receive_remote_pdu_to_completion(&origin, &room_id, &json, &gap_states).await
        })
        .await
        .map_err(Error::internal)?
    }

    async fn receive_remote_pdu_to_completion(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        json: &Value,
        gap_states: &HashMap<OwnedEventId, StateMap>,
    ) -> Result<PduOutcome> {
        let Some((_, rules)) = self.room_rules(room_id).await? else {
            return Err(MatrixError::not_found("Unknown room").into());
        };
        let CheckedPdu { pdu } = self.check_remote_pdu(room_id, &rules, json).await?;
        if self.store.get_event(pdu.event_id.as_str()).await?.is_some() {
            return Ok(PduOutcome::AlreadyKnown(pdu.event_id));
        }
        self.fetch_missing_auth_events(origin, room_id, &rules, &pdu).await?;
        let prevs = self
            .store
            .get_events(&pdu.prev_events.iter().map(|id| id.to_string()).collect::<Vec<_>>())
            .await?;
        // Prev events in the room's history give their state group; those stored only as
        // outliers give the state fetched at the gap, when there is one.
        let mut prev_groups: Vec<Option<i64>> = Vec::new();
        let mut prev_states: Vec<StateMap> = Vec::new();
        let mut missing: Vec<OwnedEventId> = Vec::new();
        for id in &pdu.prev_events {
            match prevs.iter().find(|p| p.event_id == id.as_str()) {
                Some(prev) if !prev.outlier => prev_groups.push(prev.state_after),
                _ => match gap_states.get(id) {
                    Some(state) => prev_states.push(state.clone()),
                    None => missing.push(id.clone()),
                },
            }
        }
        if !missing.is_empty() {
            return Ok(PduOutcome::MissingPrevEvents(pdu.event_id, missing));
        }
        let mut guard = self.lock_room_for_write(room_id).await?;
        let Some(head) = guard.as_mut() else {
            return Err(MatrixError::not_found("Unknown room").into());
        };
        if self.store.get_event(pdu.event_id.as_str()).await?.is_some() {
            return Ok(PduOutcome::AlreadyKnown(pdu.event_id));
        }
        let prepared = self.prepare_remote_event(head, pdu, &prev_groups, prev_states).await?;
        let outcome = match &prepared.event.remote {
            Some(RemoteEvent { rejected_reason: Some(reason), .. }) => {
                PduOutcome::Rejected(prepared.pdu.event_id.clone(), reason.clone())
            }
            Some(RemoteEvent { soft_failed: true, .. }) => {
                PduOutcome::SoftFailed(prepared.pdu.event_id.clone())
            }
            _ => PduOutcome::Accepted(prepared.pdu.event_id.clone()),
        };
        let staged = self.stage_events(head, vec![prepared], false).await?;
        drop(guard);
        self.finish_staged(staged, None).await?;
        match &outcome {
            PduOutcome::Rejected(event_id, reason) => {
                tracing::info!(%event_id, %origin, %reason, "rejected a remote event")
            }
            PduOutcome::SoftFailed(event_id) => {
                tracing::info!(%event_id, %origin, "soft-failed a remote event")
            }
            _ => {}
        }
        Ok(outcome)
    }

    /// Fetches the auth events of `pdu` this server lacks from `origin`
    /// (`GET /_matrix/federation/v1/event/{eventId}`), checks and persists each first.
    async fn fetch_missing_auth_events(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        pdu: &Pdu,
    ) -> Result<()> {
        let known = self.get_pdus(&pdu.auth_events, rules).await?;
        for auth_id in pdu.auth_events.iter().filter(|id| !known.contains_key(*id)) {
            let path = format!("/_matrix/federation/v1/event/{}", path_segment(auth_id.as_str()));
            let answer: Value = self.federation.client.get_json(origin, &path).await.map_err(|error| {
                tracing::info!(%auth_id, %origin, %error, "could not fetch a missing auth event");
                MatrixError::forbidden(format!("Missing auth event {auth_id}"))
            })?;
            let fetched = answer
                .get("pdus")
                .and_then(Value::as_array)
                .and_then(|pdus| pdus.first())
                .ok_or_else(|| MatrixError::forbidden(format!("Missing auth event {auth_id}")))?;
            let outcome =
                Box::pin(self.receive_remote_pdu_to_completion(origin, room_id, fetched, &HashMap::new()))
                    .await?;
            if outcome.event_id() != auth_id {
                return Err(MatrixError::forbidden(format!("Missing auth event {auth_id}")).into());
            }
            if let PduOutcome::MissingPrevEvents(..) = outcome {
                tracing::info!(%auth_id, %origin, "a fetched auth event's prev events are unknown here");
                return Err(MatrixError::forbidden(format!("Missing auth event {auth_id}")).into());
            }
        }
        Ok(())
    }

    /// The state after each of `groups` (the prev events' states), resolved into one when
    /// they differ. Returns the state and, when it is a stored group, that group. `unstored`:
    /// an event the states may name that is not in the store yet (see [`Services::resolve_maps`]).
    pub(super) async fn state_of_groups(
        &self,
        rules: &RoomVersionRules,
        groups: &[Option<i64>],
        extra: Vec<StateMap>,
        unstored: Option<&Pdu>,
    ) -> Result<(StateMap, Option<i64>)> {
        let mut distinct: Vec<Option<i64>> = groups.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        if extra.is_empty()
            && let [group] = distinct.as_slice()
        {
            let state = match group {
                Some(group) => self.group_state_map(*group).await?,
                None => StateMap::new(),
            };
            return Ok((state, *group));
        }
        let mut maps = extra;
        for group in distinct {
            maps.push(match group {
                Some(group) => self.group_state_map(group).await?,
                None => StateMap::new(),
            });
        }
        Ok((self.resolve_maps(rules, maps, unstored).await?, None))
    }

    pub(super) async fn group_state_map(&self, group: i64) -> Result<StateMap> {
        self.state_of_group_cached(group)
            .await?
            .iter()
            .map(|(key, id)| Ok((key.clone(), EventId::parse(id).map_err(Error::internal)?)))
            .collect()
    }

    /// State resolution of several states, with the room version's algorithm.
    ///
    /// `unstored` is an event the states may name that is not in the store yet: a received
    /// event whose state after it meets the room's other forward extremities. The algorithm
    /// leaves out events it cannot fetch, so without it the received event would never win a
    /// conflict and each server would keep its own side of a fork (two servers changing the
    /// power levels at once never agreed).
    pub(crate) async fn resolve_maps(
        &self,
        rules: &RoomVersionRules,
        maps: Vec<StateMap>,
        unstored: Option<&Pdu>,
    ) -> Result<StateMap> {
        if maps.windows(2).all(|pair| pair[0] == pair[1]) {
            return Ok(maps.into_iter().next().unwrap_or_default());
        }
        let mut chains = Vec::with_capacity(maps.len());
        let mut events: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
        for map in &maps {
            let mut ids: Vec<OwnedEventId> = map.values().cloned().collect();
            // The unstored event's auth chain is its auth events and theirs.
            let mut chain_ids = BTreeSet::new();
            if let Some(pending) = unstored
                && let Some(at) = ids.iter().position(|id| *id == pending.event_id)
            {
                ids.swap_remove(at);
                chain_ids.extend(pending.auth_events.iter().cloned());
            }
            events.extend(self.get_pdus(&ids, rules).await?);
            let starts: Vec<OwnedEventId> = ids.iter().chain(&chain_ids).cloned().collect();
            let chain = self.auth_chain(&starts, rules).await?;
            chain_ids.extend(chain.iter().map(|p| p.event_id.clone()));
            events.extend(chain.into_iter().map(|p| (p.event_id.clone(), p)));
            chains.push(chain_ids);
        }
        if let Some(pending) = unstored {
            events.insert(pending.event_id.clone(), Arc::new(pending.clone()));
        }
        myelin_core::state_res::resolve_state(rules, &maps, &chains, |id| {
            events.get(id).map(|p| p.as_ref().clone())
        })
        .map_err(|e| Error::internal(format!("state resolution failed: {e}")))
    }

    /// The authorization rules for `pdu` against `state` (its auth-type entries and the create
    /// event looked up there).
    pub(super) async fn check_auth_against(
        &self,
        rules: &RoomVersionRules,
        pdu: &Pdu,
        state: &StateMap,
        auth_pdus: &HashMap<OwnedEventId, Arc<Pdu>>,
        create_id: Option<&OwnedEventId>,
    ) -> Result<std::result::Result<(), String>> {
        let auth_types = match myelin_core::auth::auth_types(
            rules,
            &pdu.kind.to_string(),
            &pdu.sender,
            pdu.state_key.as_deref(),
            &pdu.content_value(),
        ) {
            Ok(types) => types,
            Err(reason) => return Ok(Err(reason)),
        };
        let mut keys: Vec<(String, String)> =
            auth_types.iter().map(|(kind, key)| (kind.to_string(), key.clone())).collect();
        keys.push(("m.room.create".to_owned(), String::new()));
        let mut ids: Vec<OwnedEventId> = keys.iter().filter_map(|key| state.get(key).cloned()).collect();
        // The rules consult the create event even where it is not an auth event (v12).
        ids.extend(create_id.cloned());
        let pdus = self.get_pdus(&ids, rules).await?;
        let mut by_key: HashMap<(String, String), Arc<Pdu>> = keys
            .into_iter()
            .filter_map(|key| {
                let pdu = pdus.get(state.get(&key)?)?.clone();
                Some((key, pdu))
            })
            .collect();
        // Where the room ID names the create event (v12), it is never among the auth events:
        // the state of the auth events still has it for the rules' create-event checks.
        if rules.authorization.room_create_event_id_as_room_id
            && let Some(create) = create_id.and_then(|id| pdus.get(id))
            && create.kind == ruma::events::TimelineEventType::RoomCreate
        {
            by_key.entry(("m.room.create".to_owned(), String::new())).or_insert_with(|| create.clone());
        }
        let fetch_event =
            |id: &EventId| auth_pdus.get(id).or_else(|| pdus.get(id)).map(|p| p.as_ref().clone());
        let fetch_state = |kind: &ruma::events::StateEventType, key: &str| {
            by_key.get(&(kind.to_string(), key.to_owned())).map(|p| p.as_ref().clone())
        };
        Ok(myelin_core::auth::check_auth(rules, pdu, fetch_event, fetch_state))
    }

    /// Decides what a remote event whose auth and prev events are stored is (accepted,
    /// rejected or soft-failed), with the state before it and the room's head after it.
    async fn prepare_remote_event(
        &self,
        head: &RoomHead,
        pdu: Pdu,
        prev_groups: &[Option<i64>],
        prev_states: Vec<StateMap>,
    ) -> Result<PreparedEvent> {
        let rules = head.rules.clone();
        let create_id = head.state_event_id("m.room.create", "");
        let auth_pdus = self.get_pdus(&pdu.auth_events, &rules).await?;
        let mut rejected_reason = None;
        if let Some(bad) = pdu.auth_events.iter().find(|id| auth_pdus.get(*id).is_none_or(|p| p.rejected)) {
            rejected_reason = Some(format!("auth event {bad} is rejected or unknown"));
        }
        // Against its auth events.
        if rejected_reason.is_none() {
            let mut auth_state = StateMap::new();
            for auth in auth_pdus.values() {
                if let Some(key) = &auth.state_key
                    && auth_state
                        .insert((auth.kind.to_string(), key.clone()), auth.event_id.clone())
                        .is_some()
                {
                    rejected_reason = Some("duplicate auth events".to_owned());
                }
            }
            if rejected_reason.is_none()
                && let Err(reason) =
                    self.check_auth_against(&rules, &pdu, &auth_state, &auth_pdus, create_id).await?
            {
                rejected_reason = Some(format!("not allowed by its auth events: {reason}"));
            }
        }
        // Against the state before it.
        let (state_before, state_before_group) =
            self.state_of_groups(&rules, prev_groups, prev_states, None).await?;
        if rejected_reason.is_none()
            && let Err(reason) =
                self.check_auth_against(&rules, &pdu, &state_before, &auth_pdus, create_id).await?
        {
            rejected_reason = Some(format!("not allowed by the state before it: {reason}"));
        }
        // Against the current state.
        let current: StateMap = head.state.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let soft_failed = rejected_reason.is_none()
            && current != state_before
            && self.check_auth_against(&rules, &pdu, &current, &auth_pdus, create_id).await?.is_err();
        let mut pdu = pdu;
        pdu.rejected = rejected_reason.is_some();

        let base_group = state_before_group.or_else(|| prev_groups.iter().flatten().next().copied());
        let base_state = match (state_before_group, base_group) {
            (Some(_), _) => state_before.clone(),
            (None, Some(group)) => self.group_state_map(group).await?,
            (None, None) => StateMap::new(),
        };
        let state_before_changes = state_diff(&base_state, &state_before);
        let event_key = pdu.state_key.as_ref().map(|key| (pdu.kind.to_string(), key.clone()));
        let mut state_after = state_before.clone();
        if let Some(key) = &event_key
            && rejected_reason.is_none()
        {
            state_after.insert(key.clone(), pdu.event_id.clone());
        }

        let applies = rejected_reason.is_none() && !soft_failed;
        let mut current_change = None;
        let mut next_head = None;
        if applies {
            let mut extremities: Vec<OwnedEventId> =
                head.extremities.iter().filter(|id| !pdu.prev_events.contains(id)).cloned().collect();
            let mut other_groups = Vec::new();
            if !extremities.is_empty() {
                let ids: Vec<String> = extremities.iter().map(|id| id.to_string()).collect();
                other_groups = self.store.get_events(&ids).await?.iter().map(|e| e.state_after).collect();
            }
            extremities.push(pdu.event_id.clone());
            let new_current = if other_groups.is_empty() {
                state_after.clone()
            } else {
                self.state_of_groups(&rules, &other_groups, vec![state_after.clone()], Some(&pdu)).await?.0
            };
            let rows_diff = state_diff(&current, &new_current);
            let only_own_key = rows_diff.iter().all(|(key, value)| {
                Some(key) == event_key.as_ref() && value.as_deref() == Some(pdu.event_id.as_str())
            });
            if new_current != state_after || !only_own_key {
                let ids: Vec<OwnedEventId> =
                    rows_diff.values().flatten().filter_map(|id| EventId::parse(id).ok()).collect();
                let pdus = self.get_pdus(&ids, &rules).await?;
                let rows = rows_diff
                    .iter()
                    .map(|(key, value)| {
                        let row = value.as_ref().map(|id| {
                            let membership = if *id == pdu.event_id.as_str() {
                                membership_of(&pdu)
                            } else {
                                EventId::parse(id)
                                    .ok()
                                    .and_then(|id| pdus.get(&id))
                                    .and_then(|p| membership_of(p))
                            };
                            (id.clone(), membership)
                        });
                        (key.clone(), row)
                    })
                    .collect();
                current_change =
                    Some(CurrentStateChange { group_changes: state_diff(&state_after, &new_current), rows });
            }
            next_head = Some(NextHead { state: new_current.into_iter().collect::<HeadState>(), extremities });
        }

        let content = pdu.content_value();
        let redaction = match (&pdu.redacts, applies) {
            (Some(target), true) => self.remote_redaction(head, &pdu, target).await?,
            _ => None,
        };
        // A remote user's join this server accepted is sent on to the room's other servers
        // (the resident side of `send_join`); other remote events are not relayed.
        let federation_destinations =
            if applies { self.federation_destinations(head, &pdu).await? } else { Vec::new() };
        let event = NewEvent {
            event_id: pdu.event_id.to_string(),
            room_id: pdu.room_id.to_string(),
            stream_ordering: 0,
            depth: i64::try_from(pdu.depth).map_err(|_| bad_json("depth out of range"))?,
            sender: pdu.sender.to_string(),
            kind: pdu.kind.to_string(),
            state_key: pdu.state_key.clone(),
            origin_server_ts: u64::from(pdu.origin_server_ts.0) as i64,
            json: pdu.json_string(),
            prev_events: pdu.prev_events.iter().map(|id| id.to_string()).collect(),
            state_before: base_group,
            replaces_state: event_key.as_ref().and_then(|key| state_before.get(key)).map(|id| id.to_string()),
            membership: membership_of(&pdu),
            relation: if applies { relation_of(&content) } else { None },
            contains_url: content.get("url").is_some_and(Value::is_string),
            txn: None,
            redaction: redaction.as_ref().map(|(id, pruned)| (id.to_string(), pruned.clone())),
            new_room: None,
            federation_destinations,
            remote: Some(RemoteEvent {
                state_before_changes,
                rejected_reason,
                soft_failed,
                current: current_change,
                historical: false,
            }),
        };
        Ok(PreparedEvent { pdu: Arc::new(pdu), event, redacted: redaction.map(|(id, _)| id), next_head })
    }

    /// A remote redaction prunes its target when the target is in the room and its sender
    /// may redact it (the same sender, or the `redact` power level); otherwise the redaction is
    /// kept but prunes nothing.
    async fn remote_redaction(
        &self,
        head: &RoomHead,
        pdu: &Pdu,
        target_id: &OwnedEventId,
    ) -> Result<Option<(OwnedEventId, String)>> {
        let Some(target) =
            self.get_pdus(std::slice::from_ref(target_id), &head.rules).await?.remove(target_id)
        else {
            return Ok(None);
        };
        if target.room_id != head.room_id {
            return Ok(None);
        }
        if target.sender != pdu.sender && !self.power_levels(head).await?.can_redact_others(&pdu.sender) {
            return Ok(None);
        }
        let pruned = target.redacted(&head.rules).map_err(Error::internal)?;
        Ok(Some((target_id.clone(), pruned.json_string())))
    }
}

/// The changes that turn `from` into `to` (`None`: the key left).
pub(super) fn state_diff(from: &StateMap, to: &StateMap) -> StateDelta {
    let mut delta: StateDelta = BTreeMap::new();
    for (key, id) in to {
        if from.get(key) != Some(id) {
            delta.insert(key.clone(), Some(id.to_string()));
        }
    }
    for key in from.keys() {
        if !to.contains_key(key) {
            delta.insert(key.clone(), None);
        }
    }
    delta
}

/// A path segment, percent-encoded.
pub(crate) fn path_segment(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>().replace('+', "%20")
}

fn forbidden_signature(message: String) -> Error {
    MatrixError::forbidden(message).into()
}
