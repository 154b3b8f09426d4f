//! The gate every room-scoped request of another server goes through: the room's
//! `m.room.server_acl`, whether the server is in the room, and which events it may see.
//!
//! As in Synapse: the ACL is matched on the origin's host (its port ignored, see
//! `myelin_core::server_acl`); a server is in a room when one of its users is joined in the
//! current state; an event is visible to a server (`filter_events_for_server`) when the
//! history visibility at the event is `shared` or `world_readable`, or when it is `invited`
//! and one of the server's users was invited or joined at the event, or `joined` and one was
//! joined. "At the event" is the state after it, as Synapse reads it (a server's own join is
//! visible to it). Outliers, whose state is not known, are visible. Events a server may not
//! see are handed out redacted.

use std::sync::Arc;

use myelin_core::pdu::Pdu;
use myelin_core::server_acl::server_allowed;
use myelin_core::{ErrCode, MatrixError};
use ruma::{RoomId, ServerName};
use serde_json::Value;

use crate::rooms::visibility::StateField;
use crate::rooms::{RoomEvent, RoomHead};
use crate::{Error, Result, Services};

fn forbidden(message: impl Into<String>) -> Error {
    MatrixError::new(ErrCode::Forbidden, message).into()
}

/// The server part of a user ID (`@user:server` -> `server`).
fn server_of_user(user_id: &str) -> Option<&str> {
    user_id.split_once(':').map(|(_, server)| server)
}

impl Services {
    /// `M_FORBIDDEN` when the room's current `m.room.server_acl` denies `origin` (an unknown
    /// room has no ACL). Every room-scoped request of another server checks this.
    pub async fn check_server_acl(&self, origin: &ServerName, room_id: &RoomId) -> Result<()> {
        match self.room_head_snapshot(room_id).await? {
            Some(head) => self.check_server_acl_in(origin, &head).await,
            None => Ok(()),
        }
    }

    /// [`Services::check_server_acl`] against a head already read.
    pub async fn check_server_acl_in(&self, origin: &ServerName, head: &RoomHead) -> Result<()> {
        let Some(acl) = self.current_state_pdu(head, "m.room.server_acl", "").await? else { return Ok(()) };
        if server_allowed(origin.as_str(), &acl.content_value()) {
            Ok(())
        } else {
            Err(forbidden("Server is banned from room"))
        }
    }

    /// Whether one of `origin`'s users is joined to the room in its current state.
    pub async fn server_in_room(&self, origin: &ServerName, room_id: &RoomId) -> Result<bool> {
        let members = self.store.room_members(room_id.as_str(), "join").await?;
        Ok(members.iter().any(|user_id| server_of_user(user_id) == Some(origin.as_str())))
    }

    /// This server's name as a `ServerName`.
    pub(crate) fn own_server_name(&self) -> Result<&ServerName> {
        <&ServerName>::try_from(self.server_name()).map_err(Error::internal)
    }

    /// The servers of the room's joined members, this server first when it has one.
    pub async fn servers_in_room(&self, room_id: &RoomId) -> Result<Vec<String>> {
        let members = self.store.room_members(room_id.as_str(), "join").await?;
        let mut servers: Vec<String> = Vec::new();
        for server in members.iter().filter_map(|user_id| server_of_user(user_id)) {
            if !servers.iter().any(|known| known == server) {
                servers.push(server.to_owned());
            }
        }
        if let Some(own) = servers.iter().position(|server| server == self.server_name()) {
            let own = servers.remove(own);
            servers.insert(0, own);
        }
        Ok(servers)
    }

    /// The head of a room `origin` asks about: `M_NOT_FOUND` for an unknown room,
    /// `M_FORBIDDEN` when the origin has no joined member in it or the ACL denies it.
    pub async fn room_for_server(&self, origin: &ServerName, room_id: &RoomId) -> Result<RoomHead> {
        let head = self
            .room_head_snapshot(room_id)
            .await?
            .ok_or_else(|| MatrixError::not_found(format!("Unknown room {room_id}")))?;
        // Membership first, as Synapse does, so that the ACL is not revealed to outsiders.
        if !self.server_in_room(origin, room_id).await? {
            return Err(forbidden("Host not in room."));
        }
        self.check_server_acl_in(origin, &head).await?;
        Ok(head)
    }

    /// The history visibility at an event (the state after it); `shared` when none is set
    /// or the event is an outlier.
    pub(crate) async fn history_visibility_at(&self, event: &RoomEvent) -> Result<String> {
        let group = event.state_after.or(event.state_before);
        if group.is_none() {
            return Ok("shared".to_owned());
        }
        let room_id = Some(&*event.pdu.room_id);
        Ok(
            match self
                .state_field_at(room_id, group, "m.room.history_visibility", "", "history_visibility")
                .await?
            {
                StateField::Set(value) => value,
                StateField::Unset => "shared".to_owned(),
                // Unreadable: the most restrictive visibility.
                StateField::Unreadable => "joined".to_owned(),
            },
        )
    }

    /// Whether `origin` may see `event` (see the module doc).
    pub(crate) async fn event_visible_to_server(
        &self,
        origin: &ServerName,
        event: &RoomEvent,
    ) -> Result<bool> {
        let visibility = self.history_visibility_at(event).await?;
        if visibility != "invited" && visibility != "joined" {
            return Ok(true);
        }
        let Some(group) = event.state_after.or(event.state_before) else { return Ok(true) };
        let members = self.store.state_of_group_for_type(group, "m.room.member", None).await?;
        let event_ids: Vec<String> = members
            .iter()
            .filter(|(user_id, _)| server_of_user(user_id) == Some(origin.as_str()))
            .map(|(_, event_id)| event_id.clone())
            .collect();
        if event_ids.is_empty() {
            return Ok(false);
        }
        for stored in self.store.get_events(&event_ids).await? {
            let json: Value = match serde_json::from_str(&stored.json) {
                Ok(json) => json,
                Err(error) => {
                    tracing::error!(event_id = %stored.event_id, %error, "stored event JSON does not parse");
                    continue;
                }
            };
            let membership = json.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str);
            match membership {
                Some("join") => return Ok(true),
                Some("invite") if visibility == "invited" => return Ok(true),
                _ => {}
            }
        }
        Ok(false)
    }

    /// Events as `origin` may see them, in the given order: each one whole or redacted.
    pub(crate) async fn events_for_server(
        &self,
        origin: &ServerName,
        head: &RoomHead,
        events: Vec<RoomEvent>,
    ) -> Result<Vec<Arc<Pdu>>> {
        let mut out = Vec::with_capacity(events.len());
        // The answer depends only on the state at the event.
        let mut visible_at: std::collections::HashMap<Option<i64>, bool> = Default::default();
        for event in events {
            let group = event.state_after.or(event.state_before);
            let visible = match visible_at.get(&group) {
                Some(visible) => *visible,
                None => {
                    let visible = self.event_visible_to_server(origin, &event).await?;
                    visible_at.insert(group, visible);
                    visible
                }
            };
            if visible {
                out.push(event.pdu);
            } else {
                let redacted = event.pdu.redacted(&head.rules).map_err(Error::internal)?;
                out.push(Arc::new(redacted));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::server_of_user;

    #[test]
    fn the_server_of_a_user_keeps_its_port() {
        assert_eq!(server_of_user("@a:b.test"), Some("b.test"));
        assert_eq!(server_of_user("@a:b.test:8448"), Some("b.test:8448"));
        assert_eq!(server_of_user("@a:[::1]:8448"), Some("[::1]:8448"));
        assert_eq!(server_of_user("nonsense"), None);
    }
}
