//! The resident side of joins and leaves over federation: `make_join` / `send_join` and
//! `make_leave` / `send_leave`, for rooms this server is in.
//!
//! `make_*` builds the event on the room's current head (prev events = forward extremities,
//! auth events chosen by the room version's rules) and checks it against the current state,
//! so that join rules and bans answer `403` before the other server signs anything. `send_*`
//! takes the signed event through [`Services::receive_remote_pdu`], the one write path for
//! remote events (authorised against its auth events, the state before it and the current
//! state).

use std::collections::BTreeSet;

use myelin_core::{ErrCode, MatrixError};
use ruma::{EventId, OwnedEventId, RoomId, RoomVersionId, ServerName, UserId};
use serde_json::{Value, json};

use super::pdu::PduOutcome;
use crate::rooms::EventDraft;
use crate::{Error, Result, Services};

/// `make_join`'s or `make_leave`'s answer: the event template and the room's version.
#[derive(Debug)]
pub struct MembershipTemplate {
    pub event: Value,
    pub room_version: RoomVersionId,
}

/// `send_join`'s answer: the room's state before the join and the auth chain of that state
/// and of the join (PDUs as JSON), the join as accepted, and the servers in the room.
#[derive(Debug)]
pub struct SendJoinAnswer {
    pub state: Vec<Value>,
    pub auth_chain: Vec<Value>,
    pub event: Value,
    pub servers_in_room: Vec<String>,
}

fn forbidden(message: impl Into<String>) -> Error {
    MatrixError::forbidden(message).into()
}

impl Services {
    /// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`: a join template for a user of
    /// `origin`, if the origin supports the room's version (`supported_versions`, from `ver`)
    /// and the join would be allowed now.
    pub async fn make_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        supported_versions: &[String],
    ) -> Result<MembershipTemplate> {
        self.check_server_acl(origin, room_id).await?;
        let template = self.membership_template(origin, room_id, user_id, "join").await?;
        if !supported_versions.iter().any(|v| v == template.room_version.as_str()) {
            return Err(MatrixError::new(
                ErrCode::IncompatibleRoomVersion,
                format!(
                    "Your homeserver does not support the features required to join this room (version {})",
                    template.room_version
                ),
            )
            .with_extra("room_version", template.room_version.as_str())
            .into());
        }
        Ok(template)
    }

    /// `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`.
    pub async fn make_leave(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<MembershipTemplate> {
        self.check_server_acl(origin, room_id).await?;
        self.membership_template(origin, room_id, user_id, "leave").await
    }

    /// A membership event template on the room's current head, checked against the current
    /// state. The template is what the write path would build for the user, without this
    /// server's signature, hashes or (v1/v2) event ID: the user's server adds its own.
    pub(super) async fn membership_template(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        membership: &str,
    ) -> Result<MembershipTemplate> {
        if user_id.server_name() != origin {
            return Err(forbidden("The user is not from the requesting server"));
        }
        let Some(head) = self.room_head_snapshot(room_id).await? else {
            return Err(MatrixError::not_found("Unknown room").into());
        };
        if !self.server_in_room(self.own_server_name()?, room_id).await? {
            return Err(MatrixError::not_found("This server is not in the room").into());
        }
        let mut content = json!({ "membership": membership });
        if membership == "join" {
            self.authorise_remote_join(&head, user_id, &mut content).await?;
        }
        let draft = EventDraft::state("m.room.member", user_id.as_str(), content);
        let prepared = self.prepare_event(&head, user_id, draft, None, None).await?;
        let mut event = prepared.pdu.json();
        for unsigned_part in ["signatures", "hashes", "event_id", "unsigned"] {
            event.remove(unsigned_part);
        }
        // The spec's template names the resident server as `origin`.
        event.insert("origin".to_owned(), ruma::CanonicalJsonValue::String(self.server_name().to_owned()));
        Ok(MembershipTemplate {
            event: serde_json::to_value(event).map_err(Error::internal)?,
            room_version: head.version.clone(),
        })
    }

    /// `PUT /_matrix/federation/v{1,2}/send_join/{roomId}/{eventId}`.
    pub async fn send_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        event: &Value,
    ) -> Result<SendJoinAnswer> {
        self.check_server_acl(origin, room_id).await?;
        let event = &self.countersign_restricted_join(room_id, event).await?;
        let accepted = self.receive_membership(origin, room_id, event_id, event, "join").await?;
        let Some((_, rules)) = self.room_rules(room_id).await? else {
            return Err(MatrixError::not_found("Unknown room").into());
        };
        let stored = self
            .store
            .get_event(accepted.as_str())
            .await?
            .ok_or_else(|| Error::internal("the accepted join is not stored"))?;
        let state_ids: Vec<OwnedEventId> = match stored.state_before {
            Some(group) => self
                .state_of_group_cached(group)
                .await?
                .values()
                .map(|id| EventId::parse(id).map_err(Error::internal))
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        let state = self.get_pdus(&state_ids, &rules).await?;
        let mut chain_from = state_ids.clone();
        chain_from.push(accepted.clone());
        let auth_chain = self.auth_chain(&chain_from, &rules).await?;
        let as_json = |json: &str| serde_json::from_str::<Value>(json).map_err(Error::internal);
        let servers: BTreeSet<String> = self
            .store
            .room_members(room_id.as_str(), "join")
            .await?
            .iter()
            .filter_map(|user| UserId::parse(user.as_str()).ok())
            .map(|user| user.server_name().to_string())
            .collect();
        Ok(SendJoinAnswer {
            state: state.values().map(|pdu| as_json(pdu.json_str())).collect::<Result<_>>()?,
            auth_chain: auth_chain.iter().map(|pdu| as_json(pdu.json_str())).collect::<Result<_>>()?,
            event: as_json(&stored.json)?,
            servers_in_room: servers.into_iter().collect(),
        })
    }

    /// `PUT /_matrix/federation/v{1,2}/send_leave/{roomId}/{eventId}`.
    pub async fn send_leave(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        event: &Value,
    ) -> Result<()> {
        self.check_server_acl(origin, room_id).await?;
        self.receive_membership(origin, room_id, event_id, event, "leave").await?;
        Ok(())
    }

    /// Checks a signed membership event of `origin`'s user against what `send_join` /
    /// `send_leave` accept, then receives it through the write path. Returns its event ID once
    /// it is part of the room.
    pub(super) async fn receive_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        event: &Value,
        membership: &str,
    ) -> Result<OwnedEventId> {
        let Some((_, rules)) = self.room_rules(room_id).await? else {
            return Err(MatrixError::not_found("Unknown room").into());
        };
        let field = |name: &str| event.get(name).and_then(Value::as_str);
        if field("type") != Some("m.room.member") {
            return Err(MatrixError::invalid_param("The event is not an m.room.member event").into());
        }
        if event.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str) != Some(membership)
        {
            return Err(
                MatrixError::invalid_param(format!("The event's membership is not {membership}")).into()
            );
        }
        let sender = field("sender")
            .and_then(|s| UserId::parse(s).ok())
            .ok_or_else(|| MatrixError::invalid_param("The event has no valid sender"))?;
        if field("state_key") != Some(sender.as_str()) {
            return Err(MatrixError::invalid_param("The event's state_key is not its sender").into());
        }
        if sender.server_name() != origin {
            return Err(forbidden("The event's sender is not a user of the requesting server"));
        }
        if field("room_id") != Some(room_id.as_str()) {
            return Err(MatrixError::invalid_param("The event is for another room").into());
        }
        let mut object = super::pdu::pdu_object(event)?;
        if rules.event_id_format != ruma::room_version_rules::EventIdFormatVersion::V1 {
            object.remove("event_id");
        }
        if super::pdu::pdu_event_id(&object, &rules)? != event_id {
            return Err(MatrixError::invalid_param("The event ID does not match the event").into());
        }
        match self.receive_remote_pdu(origin, room_id, event).await? {
            PduOutcome::Accepted(id) => Ok(id),
            PduOutcome::AlreadyKnown(id) => {
                let stored = self.store.get_event(id.as_str()).await?;
                match stored {
                    Some(stored) if stored.visible() => Ok(id),
                    _ => Err(forbidden("The event was not accepted")),
                }
            }
            PduOutcome::Rejected(_, reason) => Err(forbidden(format!("The event is not allowed: {reason}"))),
            PduOutcome::SoftFailed(_) => {
                Err(forbidden("The event is not allowed by the room's current state"))
            }
            PduOutcome::MissingPrevEvents(..) => {
                Err(MatrixError::invalid_param("The event's prev events are unknown here").into())
            }
        }
    }
}
