//! Restricted joins over federation (room versions 8 and later, `join_rule` `restricted` or
//! `knock_restricted` with `allow` entries of type `m.room_membership`), the resident side.
//!
//! A user of another server who is neither joined nor invited may join when they are joined to
//! one of the allowed rooms. Only a server in such a room can tell, so `make_join` answers:
//! - `400 M_UNABLE_TO_AUTHORISE_JOIN` when this server is in none of the allowed rooms (the
//!   joining server tries another resident server);
//! - `403 M_FORBIDDEN` when the user is joined to none of them;
//! - `400 M_UNABLE_TO_GRANT_JOIN` when no user of this server in the room may invite;
//! - otherwise a template whose content names such a local user in
//!   `join_authorised_via_users_server`.
//!
//! `send_join` checks the same again and signs the join as this server (the authorisation
//! rules want the authorising user's server's signature) before it goes through the write path.
//! The joining side needs nothing more: it tries its candidate servers until one authorises.

use myelin_core::{ErrCode, MatrixError};
use ruma::{CanonicalJsonValue, OwnedUserId, RoomId, UserId};
use serde_json::Value;

use crate::rooms::RoomHead;
use crate::{Error, Result, Services};

/// The member event field naming who authorised a restricted join.
const AUTHORISING_USER: &str = "join_authorised_via_users_server";

impl Services {
    /// For a join of a remote user: the local member who authorises it when the room is
    /// restricted and the user is neither joined nor invited (see the module doc for the
    /// errors); `None` when no authorisation is needed.
    pub(super) async fn remote_join_authoriser(
        &self,
        head: &RoomHead,
        user_id: &UserId,
    ) -> Result<Option<OwnedUserId>> {
        if !head.rules.authorization.restricted_join_rule {
            return Ok(None);
        }
        let Some(join_rules) = self.current_state_pdu(head, "m.room.join_rules", "").await? else {
            return Ok(None);
        };
        let content = join_rules.content_value();
        let rule = content.get("join_rule").and_then(Value::as_str).unwrap_or("invite");
        if rule != "restricted" && rule != "knock_restricted" {
            return Ok(None);
        }
        let current = self.store.membership(head.room_id.as_str(), user_id.as_str()).await?;
        if matches!(current.as_deref(), Some("join" | "invite")) {
            return Ok(None);
        }
        let own = self.own_server_name()?;
        let mut checkable = false;
        let mut qualifies = false;
        let allowed = content
            .get("allow")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|entry| entry.get("type").and_then(Value::as_str) == Some("m.room_membership"))
            .filter_map(|entry| entry.get("room_id").and_then(Value::as_str))
            .filter_map(|room| RoomId::parse(room).ok());
        for room in allowed {
            if !self.server_in_room(own, &room).await? {
                continue;
            }
            checkable = true;
            if self.store.membership(room.as_str(), user_id.as_str()).await?.as_deref() == Some("join") {
                qualifies = true;
                break;
            }
        }
        if !checkable {
            return Err(MatrixError::new(
                ErrCode::Custom("M_UNABLE_TO_AUTHORISE_JOIN"),
                "This server cannot check membership of the rooms this room's join rule allows",
            )
            .into());
        }
        if !qualifies {
            return Err(MatrixError::forbidden(
                "You do not belong to any of the rooms this room's join rule allows",
            )
            .into());
        }
        let levels = self.power_levels(head).await?;
        for member in self.store.room_members(head.room_id.as_str(), "join").await? {
            let Ok(member) = UserId::parse(&member) else { continue };
            if member.server_name() == own && levels.can_invite(&member) {
                return Ok(Some(member));
            }
        }
        Err(MatrixError::new(
            ErrCode::Custom("M_UNABLE_TO_GRANT_JOIN"),
            "No user of this server in the room may invite",
        )
        .into())
    }

    /// A member event template's content with the authorising user of a restricted join, when
    /// one is needed (`make_join`).
    pub(super) async fn authorise_remote_join(
        &self,
        head: &RoomHead,
        user_id: &UserId,
        content: &mut Value,
    ) -> Result<()> {
        if let Some(authoriser) = self.remote_join_authoriser(head, user_id).await?
            && let Some(content) = content.as_object_mut()
        {
            content.insert(AUTHORISING_USER.to_owned(), Value::from(authoriser.as_str()));
        }
        Ok(())
    }

    /// `send_join` of a restricted join naming a user of this server: checks the join may be
    /// authorised now and adds this server's signature. Other joins are returned unchanged.
    pub(super) async fn countersign_restricted_join(&self, room_id: &RoomId, event: &Value) -> Result<Value> {
        let authoriser = event
            .get("content")
            .and_then(|content| content.get(AUTHORISING_USER))
            .and_then(Value::as_str)
            .and_then(|user| UserId::parse(user).ok());
        if authoriser.is_none_or(|user| user.server_name().as_str() != self.server_name()) {
            return Ok(event.clone());
        }
        let Some(head) = self.room_head_snapshot(room_id).await? else {
            return Err(MatrixError::not_found("Unknown room").into());
        };
        let Some(sender) = event.get("sender").and_then(Value::as_str).and_then(|s| UserId::parse(s).ok())
        else {
            return Err(MatrixError::invalid_param("The event has no valid sender").into());
        };
        // The user must (still) qualify; the authoriser named is checked by the authorisation
        // rules (joined, may invite).
        if self.remote_join_authoriser(&head, &sender).await?.is_none() {
            return Ok(event.clone());
        }
        let mut object = super::pdu::pdu_object(event)?;
        let hashes = object.get("hashes").cloned();
        let mut signed = object.clone();
        ruma::signatures::hash_and_sign_event(
            self.server_name(),
            self.keys.key_pair(),
            &mut signed,
            &head.rules.redaction,
        )
        .map_err(Error::internal)?;
        if signed.get("hashes") != hashes.as_ref() {
            return Err(MatrixError::bad_json("The event's content hash does not match its content").into());
        }
        if let Some(signatures @ CanonicalJsonValue::Object(_)) = signed.remove("signatures") {
            object.insert("signatures".to_owned(), signatures);
        }
        if let Some(unsigned) = event.get("unsigned") {
            let unsigned = serde_json::from_value(unsigned.clone()).map_err(Error::internal)?;
            object.insert("unsigned".to_owned(), unsigned);
        }
        serde_json::to_value(object).map_err(Error::internal)
    }
}
