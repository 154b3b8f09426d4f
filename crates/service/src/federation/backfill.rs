//! Backfill: when a local client paginates `/messages` backwards past the oldest event this
//! server has of a room (it joined over federation, or a gap was filled), this server asks a
//! server in the room for the history before it (`GET /backfill/{roomId}?v=&limit=`, as
//! Synapse's `maybe_backfill`) and stores it as history: each event checked (signatures, its
//! auth events, the state before it: its prev events' states, fetched at a gap as in
//! `federation::gaps`), then persisted through the write path below the stream (negative
//! stream orderings), never a forward extremity nor a change to the current state, so it never
//! shows in `/sync` as new. Who may read it is then decided per event by history visibility.

use std::collections::{HashMap, HashSet};

use myelin_core::pdu::{Pdu, StateMap};
use myelin_store::{NewEvent, RemoteEvent};
use ruma::{OwnedEventId, OwnedServerName, RoomId, ServerName};
use serde_json::Value;

use super::pdu::{membership_of, path_segment, state_diff};
use crate::rooms::write::relation_of;
use crate::{Result, Services};

/// How many backward extremities one `/backfill` request starts from.
const EXTREMITIES_PER_REQUEST: i64 = 5;
/// How many events one backfill asks for (Synapse asks for 100).
const BACKFILL_LIMIT: u64 = 100;

impl Services {
    /// Fetches history older than what this server has of `room_id` from a server in the
    /// room; returns whether any was stored. Errors of other servers are logged, not
    /// returned: the page is answered with what there is.
    pub(crate) async fn backfill_room(&self, room_id: &RoomId) -> Result<bool> {
        let extremities = self.store.backward_extremities(room_id.as_str(), EXTREMITIES_PER_REQUEST).await?;
        if extremities.is_empty() {
            return Ok(false);
        }
        let mut servers: Vec<OwnedServerName> = Vec::new();
        // The room ID's server first (it is the likeliest to hold the room's beginning).
        if let Some(server) = room_id.server_name() {
            servers.push(server.to_owned());
        }
        for server in self.servers_in_room(room_id).await? {
            if let Ok(server) = OwnedServerName::try_from(server)
                && !servers.contains(&server)
            {
                servers.push(server);
            }
        }
        servers.retain(|server| server.as_str() != self.server_name());
        let query: Vec<String> = extremities.iter().map(|id| format!("v={}", path_segment(id))).collect();
        let path = format!(
            "/_matrix/federation/v1/backfill/{}?{}&limit={BACKFILL_LIMIT}",
            path_segment(room_id.as_str()),
            query.join("&")
        );
        for server in servers {
            let answer: Value = match self.federation.client.get_json(&server, &path).await {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::info!(%server, %room_id, %error, "backfill failed");
                    continue;
                }
            };
            let pdus = answer.get("pdus").and_then(Value::as_array).cloned().unwrap_or_default();
            match self.store_backfilled(&server, room_id, &pdus).await {
                Ok(stored) if stored > 0 => return Ok(true),
                Ok(_) => {}
                Err(error) => tracing::info!(%server, %room_id, %error, "could not store backfilled events"),
            }
        }
        Ok(false)
    }

    /// Checks backfilled PDUs and persists those that pass as history; returns how many.
    async fn store_backfilled(&self, origin: &ServerName, room_id: &RoomId, pdus: &[Value]) -> Result<usize> {
        let Some((version, rules)) = self.room_rules(room_id).await? else { return Ok(0) };
        let mut checked: Vec<Pdu> = Vec::new();
        let mut seen = HashSet::new();
        for json in pdus {
            match self.check_remote_pdu(room_id, &rules, json).await {
                Ok(pdu) if seen.insert(pdu.pdu.event_id.clone()) => checked.push(pdu.pdu),
                Ok(_) => {}
                Err(error) => tracing::info!(%origin, %error, "refused a backfilled event"),
            }
        }
        checked.sort_by_key(|pdu| pdu.depth);
        let ids: Vec<String> = checked.iter().map(|pdu| pdu.event_id.to_string()).collect();
        let in_timeline: HashSet<String> = self
            .store
            .get_events(&ids)
            .await?
            .into_iter()
            .filter(|event| !event.outlier)
            .map(|event| event.event_id)
            .collect();
        checked.retain(|pdu| !in_timeline.contains(pdu.event_id.as_str()));

        let create_id = self
            .room_head_snapshot(room_id)
            .await?
            .and_then(|head| head.state_event_id("m.room.create", "").cloned());
        // The state after each event of the batch, for the events built on it.
        let mut states: HashMap<OwnedEventId, StateMap> = HashMap::new();
        let mut batch_ids: HashSet<OwnedEventId> = checked.iter().map(|pdu| pdu.event_id.clone()).collect();
        let mut events: Vec<NewEvent> = Vec::new();
        for pdu in checked {
            let auth_pdus = self.get_pdus(&pdu.auth_events, &rules).await?;
            if pdu.auth_events.iter().any(|id| auth_pdus.get(id).is_none_or(|auth| auth.rejected)) {
                tracing::info!(event_id = %pdu.event_id, "a backfilled event's auth events are unknown here");
                batch_ids.remove(&pdu.event_id);
                continue;
            }
            let prev_ids: Vec<String> = pdu.prev_events.iter().map(|id| id.to_string()).collect();
            let prevs = self.store.get_events(&prev_ids).await?;
            let mut prev_groups = Vec::new();
            let mut prev_states = Vec::new();
            for prev_id in &pdu.prev_events {
                if let Some(state) = states.get(prev_id) {
                    prev_states.push(state.clone());
                    continue;
                }
                match prevs.iter().find(|p| p.event_id == prev_id.as_str() && !p.outlier) {
                    Some(prev) => prev_groups.push(prev.state_after),
                    None if batch_ids.contains(prev_id) => {}
                    None => {
                        match self
                            .state_after_missing_prev(origin, room_id, version.as_str(), &rules, prev_id)
                            .await
                        {
                            Ok(state) => prev_states.push(state),
                            Err(reason) => {
                                tracing::info!(%prev_id, %reason, "no state before a backfilled event")
                            }
                        }
                    }
                }
            }
            if prev_groups.is_empty() && prev_states.is_empty() && !pdu.prev_events.is_empty() {
                batch_ids.remove(&pdu.event_id);
                continue;
            }
            let (state_before, _) = self.state_of_groups(&rules, &prev_groups, prev_states, None).await?;
            let mut auth_state = StateMap::new();
            for auth in auth_pdus.values() {
                if let Some(key) = &auth.state_key {
                    auth_state.insert((auth.kind.to_string(), key.clone()), auth.event_id.clone());
                }
            }
            let mut rejected_reason = None;
            if let Err(reason) =
                self.check_auth_against(&rules, &pdu, &auth_state, &auth_pdus, create_id.as_ref()).await?
            {
                rejected_reason = Some(format!("not allowed by its auth events: {reason}"));
            } else if let Err(reason) =
                self.check_auth_against(&rules, &pdu, &state_before, &auth_pdus, create_id.as_ref()).await?
            {
                rejected_reason = Some(format!("not allowed by the state before it: {reason}"));
            }
            let event_key = pdu.state_key.as_ref().map(|key| (pdu.kind.to_string(), key.clone()));
            let mut state_after = state_before.clone();
            if let Some(key) = &event_key
                && rejected_reason.is_none()
            {
                state_after.insert(key.clone(), pdu.event_id.clone());
            }
            states.insert(pdu.event_id.clone(), state_after);
            events.push(historical_event(&pdu, &state_before, rejected_reason)?);
        }
        let stored = events.len();
        self.persist_backfilled(&events).await?;
        Ok(stored)
    }
}

/// The record of a backfilled event: its whole state before it as the changes to none.
fn historical_event(pdu: &Pdu, state_before: &StateMap, rejected_reason: Option<String>) -> Result<NewEvent> {
    let content = pdu.content_value();
    let applies = rejected_reason.is_none();
    let replaces_state = pdu
        .state_key
        .as_ref()
        .and_then(|key| state_before.get(&(pdu.kind.to_string(), key.clone())))
        .map(|id: &OwnedEventId| id.to_string());
    Ok(NewEvent {
        event_id: pdu.event_id.to_string(),
        room_id: pdu.room_id.to_string(),
        stream_ordering: 0,
        depth: i64::try_from(pdu.depth)
            .map_err(|_| myelin_core::MatrixError::bad_json("depth out of range"))?,
        sender: pdu.sender.to_string(),
        kind: pdu.kind.to_string(),
        state_key: pdu.state_key.clone(),
        origin_server_ts: u64::from(pdu.origin_server_ts.0) as i64,
        json: pdu.json_string(),
        prev_events: pdu.prev_events.iter().map(|id| id.to_string()).collect(),
        state_before: None,
        replaces_state,
        membership: membership_of(pdu),
        relation: if applies { relation_of(&content) } else { None },
        contains_url: content.get("url").is_some_and(Value::is_string),
        txn: None,
        redaction: None,
        new_room: None,
        federation_destinations: Vec::new(),
        remote: Some(RemoteEvent {
            state_before_changes: state_diff(&StateMap::new(), state_before),
            rejected_reason,
            soft_failed: false,
            current: None,
            historical: true,
        }),
    })
}
