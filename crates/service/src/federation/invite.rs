//! Invites over federation, both directions.
//!
//! # Outbound: a local user invites a user of another server
//!
//! The one membership path ([`Services::update_membership`]) checks the change and hands the
//! draft here. Under the room's write lock the invite is prepared on the head like any local
//! event (built, signed, authorised), then sent with `PUT /_matrix/federation/v2/invite` with
//! the room's version and `invite_room_state` (the stripped state of
//! [`crate::sync::STRIPPED_STATE_TYPES`], the create event as a whole PDU as MSC4311 asks, and
//! the inviter's member event). The event the invitee's server returns must be ours unchanged
//! but for its signatures, and carry a valid signature of that server; it is then persisted
//! through the write path (so the queue takes it to the room's other servers). A refusal
//! (`403`) is `403 M_FORBIDDEN`; an unreachable server or a bad answer `502 M_UNKNOWN`; either
//! way nothing is persisted.
//!
//! # Inbound: `PUT /_matrix/federation/v{1,2}/invite/{roomId}/{eventId}`
//!
//! In order: the room version is one we support (else `400 M_INCOMPATIBLE_ROOM_VERSION`), the
//! origin passes the room's server ACL, the event parses in that version, is the one the path
//! names and is signed by its sender's server (content hash checked, see
//! [`Services::check_remote_pdu`]), is an `m.room.member` invite sent by a user of the origin
//! (`400`, as Synapse) for a user of this server (`400`) who exists (`404 M_NOT_FOUND`:
//! Synapse does not look, Myelin refuses to store invites for nobody), and
//! `invite_room_state` is a list of stripped events of the room (`400 M_INVALID_PARAM`). The
//! event is then signed with this server's key and returned.
//!
//! When no local user is joined to the room, the invite is persisted here through the write
//! path ([`Services::stage_remote_built`]): for an unknown room, the room's row (its version)
//! with an empty state before the invite, so that current state and the membership stream
//! hold the invitee's membership and `/sync` lists the room under `rooms.invite`; the stripped
//! state is kept beside it (`stripped_room_state`) and is what `/sync` shows as
//! `invite_state`. Accepting joins through the inviter's server (`federation::join`),
//! rejecting leaves through it (`make_leave` / `send_leave`). When a local user is joined, the
//! invite is only signed: the inviting server sends it to this one with the room's other
//! events, where it takes the usual path of remote events.

use std::sync::Arc;

use myelin_core::pdu::Pdu;
use myelin_core::{ErrCode, ErrorKind, MatrixError};
use myelin_federation::FederationError;
use myelin_store::{RemoteBuilt, StateEntry};
use ruma::signatures::{PublicKeyMap, PublicKeySet};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId, ServerName, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::join::{federation_path, remote_new_event};
use super::pdu::{CheckedPdu, pdu_object};
use crate::rooms::{EventDraft, HeadState, PreparedEvent, RoomHead};
use crate::sync::{STRIPPED_STATE_TYPES, StrippedStateEvent};
use crate::{Error, Result, Services};

/// `PUT /v2/invite`'s answer.
#[derive(Deserialize)]
struct InviteResponse {
    event: Value,
}

fn invalid(message: impl Into<String>) -> Error {
    MatrixError::invalid_param(message).into()
}

/// What a failed `PUT /invite` means for the inviting client.
fn invite_failure(error: FederationError) -> Error {
    match error {
        FederationError::Status { status: 403, destination, .. } => {
            MatrixError::forbidden(format!("{destination} refused the invite")).into()
        }
        FederationError::Status { status: 404, destination, .. } => {
            MatrixError::not_found(format!("{destination} does not know the user invited")).into()
        }
        FederationError::Status { status: 400, errcode: Some(code), destination, .. }
            if code == "M_INCOMPATIBLE_ROOM_VERSION" =>
        {
            MatrixError::new(
                ErrCode::IncompatibleRoomVersion,
                format!("{destination} does not support the room's version"),
            )
            .into()
        }
        FederationError::Denied { destination } => {
            MatrixError::forbidden(format!("Federation denied with {destination}.")).into()
        }
        error => {
            tracing::info!(%error, "could not send an invite");
            MatrixError::unknown("Failed to send the invite to the invitee's server")
                .with_kind(ErrorKind::BadGateway)
                .into()
        }
    }
}

fn bad_gateway(message: impl Into<String>) -> Error {
    MatrixError::unknown(message).with_kind(ErrorKind::BadGateway).into()
}

/// `event` without its signatures (what must come back unchanged).
fn unsigned_part(event: &CanonicalJsonObject) -> CanonicalJsonObject {
    let mut event = event.clone();
    event.remove("signatures");
    event.remove("unsigned");
    event
}

/// Parses stripped state another server sent (`invite_room_state`, `knock_room_state`):
/// every entry an object with a string `type`, `state_key` and `sender` and an object
/// `content`, of `room_id` when it names a room (full PDUs, as MSC4311 sends the create
/// event, are kept in their stripped form).
pub(crate) fn parse_stripped_state(room_id: &RoomId, entries: &[Value]) -> Result<Vec<StrippedStateEvent>> {
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        let event = StrippedStateEvent::from_json(entry)
            .ok_or_else(|| invalid("Stripped state entries need type, state_key, content and sender"))?;
        if entry.get("room_id").is_some_and(|room| room.as_str() != Some(room_id.as_str())) {
            return Err(invalid("A stripped state entry is of another room"));
        }
        events.push(event);
    }
    Ok(events)
}

impl Services {
    /// Sends a local user's invite of a user of another server and persists it once that
    /// server signed it (see the module doc). Runs on a task of its own.
    pub(crate) async fn invite_remote_user(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        draft: EventDraft,
    ) -> Result<OwnedEventId> {
        let services = self.clone();
        let (room_id, sender, target) = (room_id.to_owned(), sender.to_owned(), target.to_owned());
        tokio::spawn(
            async move { services.invite_remote_to_completion(&room_id, &sender, &target, draft).await },
        )
        .await
        .map_err(Error::internal)?
    }

    async fn invite_remote_to_completion(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        draft: EventDraft,
    ) -> Result<OwnedEventId> {
        let mut guard = self.lock_room_for_write(room_id).await?;
        let Some(head) = guard.as_mut() else {
            return Err(MatrixError::not_found("Unknown room").into());
        };
        let mut prepared = self.prepare_event(head, sender, draft, None, None).await?;
        let invite_room_state = self.prejoin_state(head, Some(sender)).await?;
        let body = json!({
            "event": prepared.pdu.json(),
            "room_version": head.version.as_str(),
            "invite_room_state": invite_room_state,
        });
        let path = federation_path(
            &["_matrix", "federation", "v2", "invite", room_id.as_str(), prepared.pdu.event_id.as_str()],
            &[],
        )?;
        let answer: InviteResponse = self
            .federation
            .client
            .put_json(target.server_name(), &path, &body)
            .await
            .map_err(invite_failure)?;
        let signed = self
            .check_invite_answer(&prepared.pdu, &answer.event, target.server_name(), &head.rules)
            .await
            .map_err(|reason| {
                tracing::info!(%room_id, %target, %reason, "refused the invitee's server's answer");
                bad_gateway(format!("The invitee's server sent back a bad invite: {reason}"))
            })?;
        prepared.event.json = signed.json_string();
        prepared.pdu = Arc::new(signed);
        let event_id = prepared.pdu.event_id.clone();
        let staged = self.stage_events(head, vec![prepared], false).await?;
        drop(guard);
        self.finish_staged(staged, None).await?;
        Ok(event_id)
    }

    /// The stripped state sent to another server with an invite of its user (with the
    /// inviter's member event) or in answer to its user's knock (see the module doc).
    pub(crate) async fn prejoin_state(&self, head: &RoomHead, member: Option<&UserId>) -> Result<Vec<Value>> {
        let mut ids: Vec<OwnedEventId> =
            STRIPPED_STATE_TYPES.iter().filter_map(|kind| head.state_event_id(kind, "").cloned()).collect();
        if let Some(member) = member {
            ids.extend(head.state_event_id("m.room.member", member.as_str()).cloned());
        }
        let pdus = self.get_pdus(&ids, &head.rules).await?;
        let mut state = Vec::with_capacity(ids.len());
        for id in &ids {
            let Some(pdu) = pdus.get(id) else { continue };
            if pdu.kind.to_string() == "m.room.create" {
                state.push(serde_json::to_value(pdu.json()).map_err(Error::internal)?);
            } else {
                state.push(StrippedStateEvent::of(pdu).to_json());
            }
        }
        Ok(state)
    }

    /// Checks the invite another server returned: ours, unchanged but for signatures, signed
    /// by `server` too. Returns it as it will be stored.
    async fn check_invite_answer(
        &self,
        sent: &Pdu,
        returned: &Value,
        server: &ServerName,
        rules: &ruma::room_version_rules::RoomVersionRules,
    ) -> std::result::Result<Pdu, String> {
        let object = pdu_object(returned).map_err(|e| e.to_string())?;
        if unsigned_part(&object) != unsigned_part(&sent.json()) {
            return Err("it is not the invite sent".to_owned());
        }
        let ts = i64::from(sent.origin_server_ts.get());
        self.verify_signature_of(&object, server, rules, ts).await?;
        Pdu::from_json(object, sent.event_id.clone(), rules)
    }

    /// Verifies `server`'s signature of an event (with its keys, fetched when unknown).
    async fn verify_signature_of(
        &self,
        event: &CanonicalJsonObject,
        server: &ServerName,
        rules: &ruma::room_version_rules::RoomVersionRules,
        ts: i64,
    ) -> std::result::Result<(), String> {
        let Some(CanonicalJsonValue::Object(signatures)) = event.get("signatures") else {
            return Err("it is not signed".to_owned());
        };
        let Some(CanonicalJsonValue::Object(by_key)) = signatures.get(server.as_str()) else {
            return Err(format!("it is not signed by {server}"));
        };
        let mut keys = PublicKeySet::new();
        for key_id in by_key.keys().filter(|key_id| key_id.starts_with("ed25519:")) {
            match self.federation.keys.verify_key(server, key_id, ts).await {
                Ok(Some(key)) => {
                    let key =
                        ruma::serde::Base64::parse(&key).map_err(|e| format!("bad key {key_id}: {e}"))?;
                    keys.insert(key_id.clone(), key);
                }
                Ok(None) => {}
                Err(error) => tracing::info!(%server, %key_id, %error, "cannot fetch a signing key"),
            }
        }
        if keys.is_empty() {
            return Err(format!("no key of {server} to verify its signature"));
        }
        let mut redacted =
            ruma::canonical_json::redact(event.clone(), &rules.redaction, None).map_err(|e| e.to_string())?;
        let mut only_server = CanonicalJsonObject::new();
        only_server.insert(server.to_string(), CanonicalJsonValue::Object(by_key.clone()));
        redacted.insert("signatures".to_owned(), CanonicalJsonValue::Object(only_server));
        let mut key_map = PublicKeyMap::new();
        key_map.insert(server.to_string(), keys);
        ruma::signatures::verify_json(&key_map, &redacted)
            .map_err(|e| format!("bad signature of {server}: {e}"))
    }

    /// Adds this server's signature to an event.
    pub(crate) fn countersign(
        &self,
        event: &mut CanonicalJsonObject,
        rules: &ruma::room_version_rules::RoomVersionRules,
    ) -> Result<()> {
        let mut redacted =
            ruma::canonical_json::redact(event.clone(), &rules.redaction, None).map_err(Error::internal)?;
        ruma::signatures::sign_json(self.server_name(), self.keys.key_pair(), &mut redacted)
            .map_err(Error::internal)?;
        if let Some(signatures) = redacted.remove("signatures") {
            event.insert("signatures".to_owned(), signatures);
        }
        Ok(())
    }

    /// `PUT /_matrix/federation/v{1,2}/invite/{roomId}/{eventId}` (see the module doc):
    /// returns the invite signed by this server too.
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        room_version: &str,
        event: &Value,
        invite_room_state: &[Value],
    ) -> Result<CanonicalJsonObject> {
        if !myelin_core::room_version::SUPPORTED_ROOM_VERSIONS.contains(&room_version) {
            return Err(MatrixError::new(
                ErrCode::IncompatibleRoomVersion,
                format!("Room version {room_version:?} is not supported by this server"),
            )
            .with_extra("room_version", room_version)
            .into());
        }
        let (_, rules) = crate::rooms::check_room_version(room_version)?;
        self.check_server_acl(origin, room_id).await?;
        if self.config.room.block_non_admin_invites {
            return Err(MatrixError::forbidden("This server does not accept room invites").into());
        }
        // What the event claims is checked before its signatures (no key is fetched for it).
        let field = |name: &str| event.get(name).and_then(Value::as_str);
        let membership = event.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str);
        if field("type") != Some("m.room.member") || membership != Some("invite") {
            return Err(invalid("The event is not an m.room.member invite event"));
        }
        if field("sender").and_then(|s| UserId::parse(s).ok()).is_none_or(|s| s.server_name() != origin) {
            return Err(invalid("The invite event was not from the server sending it"));
        }
        let invitee = field("state_key")
            .and_then(|key| UserId::parse(key).ok())
            .filter(|user| user.server_name().as_str() == self.server_name())
            .ok_or_else(|| invalid("The invite event must be for this server"))?;
        // `user_may_invite` for remote inviters too (the sender was checked just above).
        if !self
            .config
            .modules
            .user_may(field("sender").unwrap_or_default(), myelin_config::UserPermission::Invite)
        {
            return Err(MatrixError::forbidden(
                "This user is not permitted to send invites to this server/user",
            )
            .into());
        }
        let CheckedPdu { pdu } = self.check_remote_pdu(room_id, &rules, event).await?;
        if pdu.event_id != event_id {
            return Err(invalid("The event ID does not match the event"));
        }
        if pdu.kind.to_string() != "m.room.member"
            || pdu.content_value().get("membership").and_then(Value::as_str) != Some("invite")
            || pdu.state_key.as_deref() != Some(invitee.as_str())
        {
            // A content hash that does not match leaves the redacted event, an invite still.
            return Err(invalid("The event is not an m.room.member invite event"));
        }
        if self.store.get_user(invitee.as_str()).await?.is_none() {
            return Err(MatrixError::not_found(format!("User {invitee} not found")).into());
        }
        let stripped = parse_stripped_state(room_id, invite_room_state)?;
        let mut signed = pdu.json();
        self.countersign(&mut signed, &rules)?;
        let signed_pdu = Pdu::from_json(signed.clone(), pdu.event_id.clone(), &rules)
            .map_err(|e| Error::internal(format!("the countersigned invite does not parse: {e}")))?;
        self.store_remote_membership(room_id, room_version, signed_pdu, Some(&stripped)).await?;
        Ok(signed)
    }

    /// Persists a local user's membership event built by another server (an invite received,
    /// a knock sent, the leave that rescinds either) with the stripped state that came with
    /// it, when no local user is joined to the room (see the module doc). Runs on a task of
    /// its own.
    pub(crate) async fn store_remote_membership(
        &self,
        room_id: &RoomId,
        room_version: &str,
        pdu: Pdu,
        stripped: Option<&[StrippedStateEvent]>,
    ) -> Result<()> {
        let services = self.clone();
        let (room_id, room_version) = (room_id.to_owned(), room_version.to_owned());
        let entries: Option<Vec<Value>> =
            stripped.map(|stripped| stripped.iter().map(StrippedStateEvent::to_json).collect());
        tokio::spawn(async move {
            services.store_remote_membership_to_completion(&room_id, &room_version, pdu, entries).await
        })
        .await
        .map_err(Error::internal)?
    }

    async fn store_remote_membership_to_completion(
        &self,
        room_id: &RoomId,
        room_version: &str,
        pdu: Pdu,
        stripped: Option<Vec<Value>>,
    ) -> Result<()> {
        if self.store.get_event(pdu.event_id.as_str()).await?.is_some() {
            return Ok(());
        }
        if let Some(stripped) = stripped {
            let stripped = serde_json::to_string(&stripped).map_err(Error::internal)?;
            self.store.put_stripped_room_state(pdu.event_id.as_str(), room_id.as_str(), &stripped).await?;
        }
        let mut guard = self.lock_room_for_write(room_id).await?;
        let (mut head, remote) = match guard.as_ref() {
            Some(head) => {
                let joined_here =
                    self.store.room_members(room_id.as_str(), "join").await?.iter().any(|member| {
                        UserId::parse(member)
                            .is_ok_and(|user| user.server_name().as_str() == self.server_name())
                    });
                if joined_here {
                    // The event reaches this server with the room's other events.
                    return Ok(());
                }
                (head.clone(), RemoteBuilt::default())
            }
            None => {
                let (version, rules) = crate::rooms::check_room_version(room_version)?;
                let head = RoomHead {
                    room_id: room_id.to_owned(),
                    version,
                    rules,
                    state: HeadState::new(),
                    state_group: None,
                    extremities: pdu.prev_events.clone(),
                    depth: pdu.depth.saturating_sub(1),
                };
                let remote = RemoteBuilt {
                    room_version: Some(room_version.to_owned()),
                    outliers: Vec::new(),
                    state_before: Some(Vec::<StateEntry>::new()),
                };
                (head, remote)
            }
        };
        let replaces_state = pdu
            .state_key
            .as_ref()
            .and_then(|key| head.state_event_id("m.room.member", key))
            .map(|id| id.to_string());
        let event = remote_new_event(&pdu, head.state_group, replaces_state);
        let prepared = PreparedEvent { pdu: Arc::new(pdu), event, redacted: None, next_head: None };
        let staged = self.stage_remote_built(&mut head, prepared, &remote).await?;
        *guard = Some(head);
        drop(guard);
        self.finish_staged(staged, None).await?;
        Ok(())
    }
}
