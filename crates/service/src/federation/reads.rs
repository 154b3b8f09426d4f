//! What other servers read from this one: events, the state and auth chain at an event,
//! backfill, missing events, the event nearest a timestamp, local aliases, the room directory,
//! and local users' devices and keys.
//!
//! Every room-scoped read goes through the gate in `access` (unknown room `M_NOT_FOUND`,
//! origin without a joined member or denied by the ACL `M_FORBIDDEN`) and hands out events
//! as the origin may see them (whole or redacted). The walks follow Synapse's
//! (`synapse/storage/databases/main/event_federation.py`): backfill is a best-first walk of
//! prev events by depth then stream position from the given events (which are included), at
//! most 100; missing events a breadth-first walk of prev events from `latest_events` that stops
//! at `earliest_events`, at most 20.

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use myelin_core::MatrixError;
use myelin_core::pdu::Pdu;
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, ServerName, UserId};
use serde_json::{Map, Value};

use crate::e2e_keys::{KeysClaimResult, KeysQueryResult};
use crate::rooms::directory::{PublicRoomsPage, PublicRoomsRequest};
use crate::rooms::{RoomEvent, RoomHead};
use crate::{Error, Result, Services};

/// The most events one `/backfill` hands out (Synapse's cap).
pub const MAX_BACKFILL: u64 = 100;

/// The most events one `/get_missing_events` hands out (Synapse's cap).
pub const MAX_MISSING_EVENTS: u64 = 20;

/// The state before an event and its auth chain.
#[derive(Debug, Default)]
pub struct StateAtEvent {
    pub pdus: Vec<Arc<Pdu>>,
    pub auth_chain: Vec<Arc<Pdu>>,
}

/// `/state_ids`: the IDs of [`StateAtEvent`].
#[derive(Debug, Default)]
pub struct StateIdsAtEvent {
    pub pdu_ids: Vec<OwnedEventId>,
    pub auth_chain_ids: Vec<OwnedEventId>,
}

/// A local user's devices for `/user/devices`.
#[derive(Debug)]
pub struct UserDevices {
    pub user_id: OwnedUserId,
    /// The device-list stream position the list is current at.
    pub stream_id: i64,
    /// Device ID to its identity keys (`None`: none uploaded).
    pub devices: BTreeMap<String, Option<Map<String, Value>>>,
    pub master_key: Option<Map<String, Value>>,
    pub self_signing_key: Option<Map<String, Value>>,
}

fn not_found(message: impl Into<String>) -> Error {
    MatrixError::not_found(message).into()
}

fn not_hosted_here() -> Error {
    MatrixError::invalid_param("User is not hosted on this homeserver").into()
}

/// Backfill's walk order: deepest first, then latest.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct BackfillItem {
    depth: u64,
    stream_ordering: i64,
    event_id: OwnedEventId,
}

impl Services {
    /// Stored events of one room (others and outliers left out), by ID.
    async fn room_events_by_id(
        &self,
        head: &RoomHead,
        event_ids: &[OwnedEventId],
    ) -> Result<HashMap<OwnedEventId, RoomEvent>> {
        let ids: Vec<String> = event_ids.iter().map(ToString::to_string).collect();
        let mut found = HashMap::new();
        for stored in self.store.get_events(&ids).await? {
            if stored.room_id != head.room_id.as_str() || stored.outlier {
                continue;
            }
            let event = self.parse_stored(&stored, &head.rules)?;
            found.insert(event.pdu.event_id.clone(), event);
        }
        Ok(found)
    }

    /// One event of a room the origin may read, or `M_NOT_FOUND`.
    async fn event_in_room(&self, head: &RoomHead, event_id: &EventId) -> Result<RoomEvent> {
        let stored = self
            .store
            .get_event(event_id.as_str())
            .await?
            .filter(|stored| stored.room_id == head.room_id.as_str())
            .ok_or_else(|| not_found(format!("Event {event_id} not found in room {}", head.room_id)))?;
        self.parse_stored(&stored, &head.rules)
    }

    /// `GET /_matrix/federation/v1/event/{eventId}`: the event as `origin` may see it. A
    /// server with no member in the room may read the events of `world_readable` history.
    pub async fn federation_event(&self, origin: &ServerName, event_id: &EventId) -> Result<Arc<Pdu>> {
        let stored =
            self.store.get_event(event_id.as_str()).await?.ok_or_else(|| not_found("Event not found"))?;
        let room_id = RoomId::parse(&stored.room_id).map_err(Error::internal)?;
        let head = self.room_head_snapshot(&room_id).await?.ok_or_else(|| not_found("Event not found"))?;
        let event = self.parse_stored(&stored, &head.rules)?;
        if !self.server_in_room(origin, &room_id).await? {
            if self.history_visibility_at(&event).await? != "world_readable" {
                return Err(MatrixError::forbidden("Host not in room.").into());
            }
            self.check_server_acl_in(origin, &head).await?;
            return Ok(event.pdu);
        }
        self.check_server_acl_in(origin, &head).await?;
        let mut events = self.events_for_server(origin, &head, vec![event]).await?;
        events.pop().ok_or_else(|| Error::internal("an event went missing while filtering it"))
    }

    /// The IDs of the state before an event (the state the event was authorised against).
    async fn state_ids_before(&self, head: &RoomHead, event_id: &EventId) -> Result<Vec<OwnedEventId>> {
        let stored = self
            .store
            .get_event(event_id.as_str())
            .await?
            .filter(|stored| stored.room_id == head.room_id.as_str())
            .ok_or_else(|| not_found(format!("Event {event_id} not found in room {}", head.room_id)))?;
        if stored.outlier {
            return Err(not_found(format!("State not known at event {event_id}")));
        }
        let Some(group) = stored.state_before else { return Ok(Vec::new()) };
        self.store
            .state_of_group(group)
            .await?
            .into_values()
            .map(|id| EventId::parse(&id).map_err(Error::internal))
            .collect()
    }

    /// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`
    pub async fn federation_state_ids(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<StateIdsAtEvent> {
        let head = self.room_for_server(origin, room_id).await?;
        let pdu_ids = self.state_ids_before(&head, event_id).await?;
        let auth_chain = self.auth_chain(&pdu_ids, &head.rules).await?;
        Ok(StateIdsAtEvent {
            pdu_ids,
            auth_chain_ids: auth_chain.iter().map(|pdu| pdu.event_id.clone()).collect(),
        })
    }

    /// `GET /_matrix/federation/v1/state/{roomId}?event_id=`
    pub async fn federation_state(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<StateAtEvent> {
        let head = self.room_for_server(origin, room_id).await?;
        let pdu_ids = self.state_ids_before(&head, event_id).await?;
        let mut found = self.get_pdus(&pdu_ids, &head.rules).await?;
        let pdus = pdu_ids.iter().filter_map(|id| found.remove(id)).collect();
        let auth_chain = self.auth_chain(&pdu_ids, &head.rules).await?;
        Ok(StateAtEvent { pdus, auth_chain })
    }

    /// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`: the event's auth chain.
    pub async fn federation_event_auth(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Vec<Arc<Pdu>>> {
        let head = self.room_for_server(origin, room_id).await?;
        let event = self.event_in_room(&head, event_id).await?;
        self.auth_chain(std::slice::from_ref(&event.pdu.event_id), &head.rules).await
    }

    /// `GET /_matrix/federation/v1/backfill/{roomId}?v=&limit=`: the given events and those
    /// before them, deepest first, at most `limit` (capped at [`MAX_BACKFILL`]).
    pub async fn federation_backfill(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        from: &[OwnedEventId],
        limit: u64,
    ) -> Result<Vec<Arc<Pdu>>> {
        let head = self.room_for_server(origin, room_id).await?;
        let limit = limit.min(MAX_BACKFILL) as usize;
        let mut known = self.room_events_by_id(&head, from).await?;
        let mut queue: BinaryHeap<BackfillItem> = known
            .values()
            .map(|event| BackfillItem {
                depth: event.pdu.depth,
                stream_ordering: event.stream_ordering,
                event_id: event.pdu.event_id.clone(),
            })
            .collect();
        let mut taken: HashSet<OwnedEventId> = HashSet::new();
        let mut results: Vec<RoomEvent> = Vec::new();
        while results.len() < limit {
            let Some(item) = queue.pop() else { break };
            if !taken.insert(item.event_id.clone()) {
                continue;
            }
            let Some(event) = known.remove(&item.event_id) else { continue };
            let prevs: Vec<OwnedEventId> =
                event.pdu.prev_events.iter().filter(|id| !taken.contains(*id)).cloned().collect();
            results.push(event);
            for (id, prev) in self.room_events_by_id(&head, &prevs).await? {
                queue.push(BackfillItem {
                    depth: prev.pdu.depth,
                    stream_ordering: prev.stream_ordering,
                    event_id: id.clone(),
                });
                known.insert(id, prev);
            }
        }
        results.sort_by_key(|event| std::cmp::Reverse((event.pdu.depth, event.stream_ordering)));
        self.events_for_server(origin, &head, results).await
    }

    /// `POST /_matrix/federation/v1/get_missing_events/{roomId}`: the events before
    /// `latest_events` back to `earliest_events` (neither included), breadth first, oldest
    /// first, at most `limit` (capped at [`MAX_MISSING_EVENTS`]); none below `min_depth`.
    pub async fn federation_missing_events(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        earliest_events: &[OwnedEventId],
        latest_events: &[OwnedEventId],
        limit: u64,
        min_depth: u64,
    ) -> Result<Vec<Arc<Pdu>>> {
        let head = self.room_for_server(origin, room_id).await?;
        let limit = limit.min(MAX_MISSING_EVENTS) as usize;
        let mut seen: HashSet<OwnedEventId> = earliest_events.iter().cloned().collect();
        let mut front: Vec<OwnedEventId> =
            latest_events.iter().filter(|id| !seen.contains(*id)).cloned().collect();
        let mut results: Vec<RoomEvent> = Vec::new();
        while !front.is_empty() && results.len() < limit {
            let events = self.room_events_by_id(&head, &front).await?;
            let mut next = Vec::new();
            for id in &front {
                let Some(event) = events.get(id) else { continue };
                if event.pdu.depth < min_depth {
                    continue;
                }
                for prev in &event.pdu.prev_events {
                    if next.len() + results.len() >= limit {
                        break;
                    }
                    if seen.insert(prev.clone()) {
                        next.push(prev.clone());
                    }
                }
            }
            let mut found = self.room_events_by_id(&head, &next).await?;
            results.extend(
                next.iter().filter_map(|id| found.remove(id)).filter(|event| event.pdu.depth >= min_depth),
            );
            front = next;
        }
        results.reverse();
        self.events_for_server(origin, &head, results).await
    }

    /// `GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=&dir=`: the event closest to
    /// `ts` in one direction, with its timestamp.
    pub async fn federation_timestamp_to_event(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        ts: u64,
        forward: bool,
    ) -> Result<(OwnedEventId, u64)> {
        self.room_for_server(origin, room_id).await?;
        let ts = i64::try_from(ts).map_err(|_| MatrixError::invalid_param("ts is out of range"))?;
        let stored =
            self.store.event_near_timestamp(room_id.as_str(), ts, forward).await?.ok_or_else(|| {
                not_found(format!(
                    "Unable to find event from {ts} in direction {}",
                    if forward { "f" } else { "b" }
                ))
            })?;
        let event_id = EventId::parse(&stored.event_id).map_err(Error::internal)?;
        let json: Value = serde_json::from_str(&stored.json).map_err(Error::internal)?;
        let origin_server_ts = json.get("origin_server_ts").and_then(Value::as_u64).unwrap_or_default();
        Ok((event_id, origin_server_ts))
    }

    /// `GET /_matrix/federation/v1/query/directory?room_alias=`: a local alias's room and the
    /// servers in it (this server first).
    pub async fn federation_directory_query(
        &self,
        alias: &RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<String>)> {
        if alias.server_name().as_str() != self.server_name() {
            return Err(MatrixError::invalid_param("Room Alias is not hosted on this homeserver").into());
        }
        let (room_id, _) =
            self.store.get_alias(alias.as_str()).await?.ok_or_else(|| not_found("Room alias not found"))?;
        let room_id = RoomId::parse(&room_id).map_err(Error::internal)?;
        let mut servers = self.servers_in_room(&room_id).await?;
        if servers.first().map(String::as_str) != Some(self.server_name()) {
            servers.insert(0, self.server_name().to_owned());
        }
        Ok((room_id, servers))
    }

    /// `GET|POST /_matrix/federation/v1/publicRooms`: this server's room directory, when
    /// `allow_public_rooms_over_federation` lets other servers read it (`M_FORBIDDEN`
    /// otherwise, as in Synapse).
    pub async fn federation_public_rooms(&self, request: &PublicRoomsRequest) -> Result<PublicRoomsPage> {
        if !self.config.room.allow_public_rooms_over_federation {
            return Err(MatrixError::forbidden("Forbidden").into());
        }
        let request = PublicRoomsRequest { server: None, ..request.clone() };
        self.public_rooms(&request).await
    }

    /// `GET /_matrix/federation/v1/user/devices/{userId}`: a local user's devices with their
    /// keys, and the user's master and self-signing keys. Display names stay private (Synapse's
    /// `allow_device_name_lookup_over_federation` defaults to off).
    pub async fn federation_user_devices(&self, user_id: &UserId) -> Result<UserDevices> {
        if user_id.server_name().as_str() != self.server_name() {
            return Err(not_hosted_here());
        }
        let stream_id = self.store.max_device_list_position().await?;
        let requested = BTreeMap::from([(user_id.to_owned(), Vec::new())]);
        let mut keys = self.query_local_keys(None, &requested).await?;
        let mut device_keys = keys.device_keys.remove(user_id).unwrap_or_default();
        let mut devices: BTreeMap<String, Option<Map<String, Value>>> = BTreeMap::new();
        for device in self.store.list_devices(user_id.as_str()).await? {
            let keys = device_keys.remove(&device.device_id).map(|queried| queried.keys);
            devices.insert(device.device_id, keys);
        }
        Ok(UserDevices {
            user_id: user_id.to_owned(),
            stream_id,
            devices,
            master_key: keys.cross_signing.master_keys.remove(user_id),
            self_signing_key: keys.cross_signing.self_signing_keys.remove(user_id),
        })
    }

    /// `POST /_matrix/federation/v1/user/keys/query`: local users' device keys (without
    /// display names) and master and self-signing keys.
    pub async fn federation_query_keys(
        &self,
        requested: &BTreeMap<OwnedUserId, Vec<String>>,
    ) -> Result<KeysQueryResult> {
        if requested.keys().any(|user_id| user_id.server_name().as_str() != self.server_name()) {
            return Err(not_hosted_here());
        }
        let mut result = self.query_local_keys(None, requested).await?;
        for devices in result.device_keys.values_mut() {
            for device in devices.values_mut() {
                device.display_name = None;
            }
        }
        Ok(result)
    }

    /// `POST /_matrix/federation/v1/user/keys/claim`: one key per local device asked for,
    /// each one-time key handed out once.
    pub async fn federation_claim_keys(
        &self,
        claims: &BTreeMap<OwnedUserId, BTreeMap<String, String>>,
    ) -> Result<KeysClaimResult> {
        if claims.keys().any(|user_id| user_id.server_name().as_str() != self.server_name()) {
            return Err(not_hosted_here());
        }
        self.claim_keys(claims).await
    }
}
