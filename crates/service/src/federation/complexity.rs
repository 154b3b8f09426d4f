//! Room complexity (Synapse's `limit_remote_rooms`): a rough measure of what being in a room
//! costs, the number of its current state events / 500 (`v1`, rounded to two decimals).
//!
//! Other servers read it from `GET /_matrix/federation/unstable/rooms/{roomId}/complexity`
//! (rooms that are public or world-readable only, else `404 M_NOT_FOUND`, where Synapse says
//! `404 M_INVALID_PARAM`; the origin must pass the room's server ACL). With `limit_remote_rooms.enabled`, a local user's
//! remote join first asks the candidate servers in turn; a room over `complexity` is refused
//! with `400 M_RESOURCE_LIMIT_EXCEEDED` and `complexity_error` before anything is joined.
//! When no server answered, the room is measured once joined, and left again if it is over
//! (as Synapse). `admins_can_join` exempts server admins.

use myelin_core::{ErrCode, ErrorKind, MatrixError};
use ruma::{OwnedServerName, RoomId, ServerName};
use serde_json::Value;

use super::join::federation_path;
use crate::auth::Requester;
use crate::rooms::RoomHead;
use crate::{Error, Result, Services};

/// What a remote join learnt of the room's complexity before joining.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ComplexityCheck {
    /// No limit applies to this user.
    Off,
    /// A server answered, and the room is within the limit.
    WithinLimit,
    /// No server answered: measure the room once joined.
    Unknown,
}

/// A room's complexity from its current state.
fn complexity_of(head: &RoomHead) -> f64 {
    (head.state.len() as f64 / 500.0 * 100.0).round() / 100.0
}

impl Services {
    fn too_complex(&self) -> Error {
        MatrixError::new(
            ErrCode::ResourceLimitExceeded,
            self.config.room.limit_remote_rooms.complexity_error.clone(),
        )
        .with_kind(ErrorKind::BadRequest)
        .into()
    }

    /// `GET /_matrix/federation/unstable/rooms/{roomId}/complexity`: `v1`.
    pub async fn room_complexity(&self, origin: &ServerName, room_id: &RoomId) -> Result<f64> {
        self.check_server_acl(origin, room_id).await?;
        let not_found = || -> Error { MatrixError::not_found("Room not found").into() };
        let Some(head) = self.room_head_snapshot(room_id).await? else { return Err(not_found()) };
        let join_rule = self.current_state_pdu(&head, "m.room.join_rules", "").await?;
        let public = join_rule.is_some_and(|pdu| {
            pdu.content_value().get("join_rule").and_then(Value::as_str) == Some("public")
        });
        let visibility = self.current_state_pdu(&head, "m.room.history_visibility", "").await?;
        let world_readable = visibility.is_some_and(|pdu| {
            pdu.content_value().get("history_visibility").and_then(Value::as_str) == Some("world_readable")
        });
        if !public && !world_readable {
            return Err(not_found());
        }
        Ok(complexity_of(&head))
    }

    /// Before a remote join: the room's complexity from the first server that answers.
    pub(crate) async fn check_remote_room_complexity(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        servers: &[OwnedServerName],
    ) -> Result<ComplexityCheck> {
        let limit = &self.config.room.limit_remote_rooms;
        if !limit.enabled || (limit.admins_can_join && requester.is_admin) {
            return Ok(ComplexityCheck::Off);
        }
        let path = federation_path(
            &["_matrix", "federation", "unstable", "rooms", room_id.as_str(), "complexity"],
            &[],
        )?;
        for server in servers {
            match self.federation.client.get_json::<Value>(server, &path).await {
                Ok(answer) => {
                    let Some(v1) = answer.get("v1").and_then(Value::as_f64) else { continue };
                    if v1 > limit.complexity {
                        tracing::info!(%room_id, %server, v1, "refused to join a room too complex");
                        return Err(self.too_complex());
                    }
                    return Ok(ComplexityCheck::WithinLimit);
                }
                Err(error) => tracing::info!(%room_id, %server, %error, "could not read a room's complexity"),
            }
        }
        Ok(ComplexityCheck::Unknown)
    }

    /// After a remote join whose room's complexity was unknown: measured here, and left again
    /// when over the limit.
    pub(crate) async fn check_joined_room_complexity(
        &self,
        requester: &Requester,
        room_id: &RoomId,
    ) -> Result<()> {
        let head = self.known_room(room_id).await?;
        if complexity_of(&head) <= self.config.room.limit_remote_rooms.complexity {
            return Ok(());
        }
        tracing::info!(%room_id, "left a room too complex after joining it");
        self.leave_room(requester, room_id, None).await?;
        Err(self.too_complex())
    }
}
