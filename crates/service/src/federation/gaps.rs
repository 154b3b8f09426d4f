//! State at gaps: a PDU whose prev events cannot be had (not even through
//! `/get_missing_events`) is not dropped. As Synapse (`_resolve_state_at_missing_prevs`), this
//! server asks the origin for the state before each missing prev event
//! (`GET /state_ids/{roomId}?event_id=`), fetches the events of that state and its auth chain it
//! lacks (`GET /event/{eventId}` each, or `GET /state/{roomId}?event_id=` when many are
//! missing) and the prev event itself, checks them (signatures, then the authorization rules
//! against their auth events, all through [`myelin_core::remote::check_room_events`]) and stores
//! them as outliers (never in `/sync` or `/messages`). The state after each missing prev event is
//! then handed to the write path, which resolves it with the states of the known prev events
//! into the state before the PDU and checks the PDU as any other.

use std::collections::{HashMap, HashSet};

use myelin_core::pdu::{Pdu, StateMap};
use myelin_core::remote::check_room_events;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{EventId, OwnedEventId, RoomId, ServerName};
use serde_json::Value;

use super::join::outlier_of;
use super::pdu::{PduOutcome, path_segment};
use crate::{Result, Services};

/// Beyond this many events to fetch, the whole state is asked for at once (`/state`).
const FETCH_ONE_BY_ONE: usize = 10;

/// Event IDs of a JSON array field; entries that are not event IDs are left out.
fn event_ids(answer: &Value, field: &str) -> Vec<OwnedEventId> {
    answer
        .get(field)
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).filter_map(|id| EventId::parse(id).ok()).collect())
        .unwrap_or_default()
}

impl Services {
    /// Receives a PDU pulled or pushed by `origin`; when some of its prev events are still
    /// unknown, fetches the state after each of them from `origin` (see the module doc) and
    /// receives it with those states. Falls back to the first outcome when the state cannot be
    /// had.
    pub(crate) async fn receive_pdu_filling_gaps(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        json: &Value,
    ) -> Result<PduOutcome> {
        let outcome = self.receive_remote_pdu(origin, room_id, json).await?;
        let PduOutcome::MissingPrevEvents(event_id, missing) = &outcome else { return Ok(outcome) };
        let Some((version, rules)) = self.room_rules(room_id).await? else { return Ok(outcome) };
        let mut gap_states = HashMap::new();
        for prev_id in missing {
            match self.state_after_missing_prev(origin, room_id, version.as_str(), &rules, prev_id).await {
                Ok(state) => {
                    gap_states.insert(prev_id.clone(), state);
                }
                Err(error) => {
                    tracing::info!(%origin, %event_id, %prev_id, %error, "could not fetch the state at a gap");
                    return Ok(outcome);
                }
            }
        }
        self.receive_remote_pdu_at_gap(origin, room_id, json, gap_states).await
    }

    /// The state after `prev_id`, fetched from `origin` with everything it stands on; the
    /// events this server lacked are stored as outliers. `Err` with the reason it cannot be
    /// had.
    pub(super) async fn state_after_missing_prev(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        version: &str,
        rules: &RoomVersionRules,
        prev_id: &OwnedEventId,
    ) -> std::result::Result<StateMap, String> {
        let room = path_segment(room_id.as_str());
        let query = format!("event_id={}", path_segment(prev_id.as_str()));
        let path = format!("/_matrix/federation/v1/state_ids/{room}?{query}");
        let answer: Value =
            self.federation.client.get_json(origin, &path).await.map_err(|e| e.to_string())?;
        let state_ids = event_ids(&answer, "pdu_ids");
        let auth_chain_ids = event_ids(&answer, "auth_chain_ids");
        if state_ids.is_empty() {
            return Err("the state at the gap is empty".to_owned());
        }

        let mut wanted: Vec<OwnedEventId> = state_ids.clone();
        wanted.extend(auth_chain_ids.iter().cloned());
        wanted.push(prev_id.clone());
        let mut seen = HashSet::new();
        wanted.retain(|id| seen.insert(id.clone()));
        let known = self.get_pdus(&wanted, rules).await.map_err(|e| e.to_string())?;
        let unknown: HashSet<OwnedEventId> =
            wanted.iter().filter(|id| !known.contains_key(*id)).cloned().collect();

        let mut fetched_json: Vec<Value> = Vec::new();
        if unknown.len() > FETCH_ONE_BY_ONE {
            let path = format!("/_matrix/federation/v1/state/{room}?{query}");
            let answer: Value =
                self.federation.client.get_json(origin, &path).await.map_err(|e| e.to_string())?;
            for field in ["pdus", "auth_chain"] {
                fetched_json.extend(answer.get(field).and_then(Value::as_array).cloned().unwrap_or_default());
            }
        }
        let mut fetched: HashMap<OwnedEventId, Pdu> = HashMap::new();
        for json in &fetched_json {
            // Whatever does not parse or verify is fetched (or missed) one by one below.
            if let Ok(checked) = self.check_remote_pdu(room_id, rules, json).await
                && unknown.contains(&checked.pdu.event_id)
            {
                fetched.insert(checked.pdu.event_id.clone(), checked.pdu);
            }
        }
        let to_fetch: Vec<OwnedEventId> =
            wanted.iter().filter(|id| unknown.contains(*id) && !fetched.contains_key(*id)).cloned().collect();
        for id in &to_fetch {
            let path = format!("/_matrix/federation/v1/event/{}", path_segment(id.as_str()));
            let answer: Value = self
                .federation
                .client
                .get_json(origin, &path)
                .await
                .map_err(|e| format!("cannot fetch {id}: {e}"))?;
            let json = answer
                .get("pdus")
                .and_then(Value::as_array)
                .and_then(|pdus| pdus.first())
                .ok_or_else(|| format!("no event in the answer for {id}"))?;
            let checked = self.check_remote_pdu(room_id, rules, json).await.map_err(|e| e.to_string())?;
            if checked.pdu.event_id != *id {
                return Err(format!("asked for {id}, got {}", checked.pdu.event_id));
            }
            fetched.insert(id.clone(), checked.pdu);
        }

        let pdu_of = |id: &OwnedEventId| -> Option<Pdu> {
            fetched.get(id).cloned().or_else(|| known.get(id).map(|pdu| pdu.as_ref().clone()))
        };
        let state: Vec<Pdu> = state_ids.iter().filter_map(pdu_of).collect();
        let state_set: HashSet<&OwnedEventId> = state_ids.iter().collect();
        let others: Vec<Pdu> =
            wanted.iter().filter(|id| !state_set.contains(id)).filter_map(pdu_of).collect();
        if state.len() != state_ids.len() {
            return Err("events of the state at the gap are missing".to_owned());
        }
        let prev = pdu_of(prev_id).ok_or_else(|| format!("{prev_id} is missing"))?;
        if let Some(rejected) = state.iter().chain(&others).find(|pdu| pdu.rejected) {
            return Err(format!("{} at the gap is rejected here", rejected.event_id));
        }
        let checked = check_room_events(rules, room_id, version, state, others)?;

        let outliers: Vec<_> = checked
            .order
            .iter()
            .filter(|id| fetched.contains_key(*id))
            .filter_map(|id| checked.events.get(id))
            .map(outlier_of)
            .collect();
        self.persist_outliers(&outliers).await.map_err(|e| e.to_string())?;

        let mut state_after: StateMap = checked.state.into_iter().collect();
        if let Some(state_key) = &prev.state_key {
            state_after.insert((prev.kind.to_string(), state_key.clone()), prev.event_id.clone());
        }
        Ok(state_after)
    }
}
