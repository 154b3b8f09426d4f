//! Room heads (what the next local event builds on) and parsed stored events.

use std::collections::HashMap;
use std::sync::Arc;

use myelin_core::pdu::Pdu;
use myelin_core::{ErrCode, MatrixError};
use myelin_store::StoredEvent;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId};

use super::RoomWriteGuard;
use crate::{Error, Result, Services};

/// Current state keyed by (type, state key), with O(1) clones.
pub type HeadState = imbl::OrdMap<(String, String), OwnedEventId>;

/// The head of a room's event graph: what the next local event builds on.
#[derive(Clone, Debug)]
pub struct RoomHead {
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    /// The current state: a persistent map, so that a snapshot of the head (readers take one
    /// on every request) costs nothing in a room of 10,000 members.
    pub state: HeadState,
    /// The state group of the current state.
    pub state_group: Option<i64>,
    pub extremities: Vec<OwnedEventId>,
    pub depth: u64,
}

impl RoomHead {
    pub fn state_event_id(&self, kind: &str, state_key: &str) -> Option<&OwnedEventId> {
        self.state.get(&(kind.to_owned(), state_key.to_owned()))
    }

    /// Whether the current state holds `m.room.encryption`.
    pub fn is_encrypted(&self) -> bool {
        self.state_event_id("m.room.encryption", "").is_some()
    }
}

/// A parsed, stored event with its stream position.
#[derive(Clone, Debug)]
pub struct RoomEvent {
    pub pdu: Arc<Pdu>,
    pub stream_ordering: i64,
    pub redacted_by: Option<String>,
    pub replaces_state: Option<String>,
    pub state_before: Option<i64>,
    pub state_after: Option<i64>,
    /// Whether clients may see it (not an outlier, not rejected, not soft-failed).
    pub visible: bool,
}

impl Services {
    /// Parses a stored event.
    pub(crate) fn parse_stored(&self, stored: &StoredEvent, rules: &RoomVersionRules) -> Result<RoomEvent> {
        let event_id = EventId::parse(&stored.event_id).map_err(Error::internal)?;
        let pdu = match self.rooms.cached_event(&event_id) {
            Some(pdu) => pdu,
            None => {
                let json = serde_json::from_str(&stored.json).map_err(Error::internal)?;
                let mut pdu = Pdu::from_json(json, event_id, rules).map_err(Error::internal)?;
                pdu.rejected = stored.rejected_reason.is_some();
                let pdu = Arc::new(pdu);
                self.rooms.cache_event(pdu.clone());
                pdu
            }
        };
        Ok(RoomEvent {
            pdu,
            stream_ordering: stored.stream_ordering,
            redacted_by: stored.redacted_by.clone(),
            replaces_state: stored.replaces_state.clone(),
            state_before: stored.state_before,
            state_after: stored.state_after,
            visible: stored.visible(),
        })
    }

    /// The version rules of a known room.
    pub async fn room_rules(&self, room_id: &RoomId) -> Result<Option<(RoomVersionId, RoomVersionRules)>> {
        let Some(room) = self.store.get_room(room_id.as_str()).await? else { return Ok(None) };
        myelin_core::room_version::room_version(&room.room_version).map(Some).ok_or_else(|| {
            Error::internal(format!("room {room_id} has unsupported version {}", room.room_version))
        })
    }

    /// One event by ID (any room), parsed.
    pub async fn get_room_event(&self, event_id: &EventId) -> Result<Option<RoomEvent>> {
        let Some(stored) = self.store.get_event(event_id.as_str()).await? else { return Ok(None) };
        let room_id = RoomId::parse(&stored.room_id).map_err(Error::internal)?;
        let Some((_, rules)) = self.room_rules(&room_id).await? else { return Ok(None) };
        Ok(Some(self.parse_stored(&stored, &rules)?))
    }

    /// PDUs by ID, from the cache or the store.
    pub(crate) async fn get_pdus(
        &self,
        event_ids: &[OwnedEventId],
        rules: &RoomVersionRules,
    ) -> Result<HashMap<OwnedEventId, Arc<Pdu>>> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for id in event_ids {
            match self.rooms.cached_event(id) {
                Some(pdu) => {
                    found.insert(id.clone(), pdu);
                }
                None => missing.push(id.to_string()),
            }
        }
        if !missing.is_empty() {
            for stored in self.store.get_events(&missing).await? {
                let event = self.parse_stored(&stored, rules)?;
                found.insert(event.pdu.event_id.clone(), event.pdu);
            }
        }
        Ok(found)
    }

    /// The auth chain of `event_ids`: every event reachable from them through `auth_events`
    /// (not the events themselves, unless reached), in no particular order. Auth events this
    /// server does not hold are left out. Read in one batch per level of the walk.
    pub async fn auth_chain(
        &self,
        event_ids: &[OwnedEventId],
        rules: &RoomVersionRules,
    ) -> Result<Vec<Arc<Pdu>>> {
        let mut seen: std::collections::HashSet<OwnedEventId> = std::collections::HashSet::new();
        let mut chain = Vec::new();
        let starts = self.get_pdus(event_ids, rules).await?;
        let mut next: Vec<OwnedEventId> = starts
            .values()
            .flat_map(|pdu| pdu.auth_events.iter().cloned())
            .filter(|id| seen.insert(id.clone()))
            .collect();
        while !next.is_empty() {
            let found = self.get_pdus(&next, rules).await?;
            next = Vec::new();
            for pdu in found.into_values() {
                next.extend(pdu.auth_events.iter().filter(|id| seen.insert((*id).clone())).cloned());
                chain.push(pdu);
            }
        }
        Ok(chain)
    }

    /// Loads a room's head from the store.
    pub(crate) async fn load_head(&self, room_id: &RoomId) -> Result<Option<RoomHead>> {
        let Some((version, rules)) = self.room_rules(room_id).await? else { return Ok(None) };
        let state = self
            .store
            .current_state(room_id.as_str())
            .await?
            .into_iter()
            .map(|(key, id)| Ok((key, EventId::parse(&id).map_err(Error::internal)?)))
            .collect::<Result<HeadState>>()?;
        let extremities: Vec<OwnedEventId> = self
            .store
            .forward_extremities(room_id.as_str())
            .await?
            .iter()
            .map(|id| EventId::parse(id).map_err(Error::internal))
            .collect::<Result<_>>()?;
        // With forks, the current state is not the state after the latest event: its group is
        // kept on the room.
        let state_group = self.store.current_state_group(room_id.as_str()).await?;
        let extremity_pdus = self.get_pdus(&extremities, &rules).await?;
        let depth = extremity_pdus.values().map(|p| p.depth).max().unwrap_or(0);
        Ok(Some(RoomHead {
            room_id: room_id.to_owned(),
            version,
            rules,
            state,
            state_group,
            extremities,
            depth,
        }))
    }

    /// A snapshot of a room's head (current state), or `None` for an unknown room: what every
    /// read takes. Never waits for a send: it is the head as of the last release of the room's
    /// send lock. A room not loaded yet is loaded under the send lock if no send holds it (and
    /// kept), else read from the store (the send publishes the head when it is done).
    pub async fn room_head_snapshot(&self, room_id: &RoomId) -> Result<Option<RoomHead>> {
        if let Some(head) = self.rooms.published_head(room_id) {
            return Ok(Some(RoomHead::clone(&head)));
        }
        let Some(mut guard) = self.rooms.try_lock_for_write(room_id) else {
            return self.load_head(room_id).await;
        };
        if guard.is_none() {
            *guard = self.load_head(room_id).await?;
        }
        Ok(guard.clone())
    }

    /// [`Self::room_head_snapshot`], shared: the published head itself when there is one (no
    /// copy), for readers that look at many rooms at once.
    pub(crate) async fn room_head_shared(&self, room_id: &RoomId) -> Result<Option<Arc<RoomHead>>> {
        if let Some(head) = self.rooms.published_head(room_id) {
            return Ok(Some(head));
        }
        Ok(self.room_head_snapshot(room_id).await?.map(Arc::new))
    }

    /// Takes a room's send lock, waiting for every send in progress, with its head loaded
    /// (`None` in the guard for an unknown room). Only the write path takes it: whoever holds
    /// it owns the head, and readers see the head it leaves when the guard is dropped.
    pub(crate) async fn lock_room_for_write(&self, room_id: &RoomId) -> Result<RoomWriteGuard<'_>> {
        let mut guard = self.rooms.lock_for_write(room_id).await;
        if guard.is_none() {
            *guard = self.load_head(room_id).await?;
        }
        Ok(guard)
    }

    /// The current state event of a room for a key, parsed.
    pub async fn current_state_pdu(
        &self,
        head: &RoomHead,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<Arc<Pdu>>> {
        let Some(id) = head.state_event_id(kind, state_key) else { return Ok(None) };
        Ok(self.get_pdus(std::slice::from_ref(id), &head.rules).await?.remove(id))
    }
}

/// Whether a string is a valid room version this server supports.
pub fn check_room_version(version: &str) -> Result<(RoomVersionId, RoomVersionRules)> {
    myelin_core::room_version::room_version(version).ok_or_else(|| {
        MatrixError::new(
            ErrCode::UnsupportedRoomVersion,
            format!("Room version {version:?} is not supported"),
        )
        .into()
    })
}

/// Test hooks (the `test-hooks` feature): hold a room's send lock as a send would.
#[cfg(feature = "test-hooks")]
impl Services {
    pub async fn hold_room_send_lock(&self, room_id: &RoomId) -> Result<RoomWriteGuard<'_>> {
        self.lock_room_for_write(room_id).await
    }
}
