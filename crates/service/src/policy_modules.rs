//! The built-in policy modules of `modules` (see `myelin_config::ModulesConfig`), asked where
//! Synapse asks its spam checkers and third-party rules: room creation and upgrades
//! (`user_may_create_room`), invites (`user_may_invite`), and every local event before it is
//! written (`check_event_for_spam`, for the encryption filter). Each question has one function
//! here and one caller on the path every endpoint goes through.

use myelin_config::UserPermission;
use myelin_core::MatrixError;
use ruma::{RoomId, UserId};

use crate::Services;
use crate::auth::Requester;
use crate::error::Result;

/// The power level the encryption filter puts on `m.room.encryption` in new rooms: above
/// every user's (100), so no one but a v12 creator can enable encryption.
pub(crate) const FILTERED_ENCRYPTION_LEVEL: i64 = 150;

impl Services {
    /// Whether the requester speaks with admin power for the modules: a server admin or the
    /// server notices user (Synapse lets that one invite when invites are blocked).
    fn module_exempt(&self, requester: &Requester) -> bool {
        requester.is_admin || self.server_notices_user().as_deref() == Some(requester.user_id.as_ref())
    }

    /// `user_may_create_room`: refused with Synapse's message unless every user restrictions
    /// module allows `create_room`. `admin_exempt` is false for room upgrades, which Synapse
    /// checks for admins too.
    pub(crate) fn check_may_create_room(&self, requester: &Requester, admin_exempt: bool) -> Result<()> {
        if admin_exempt && self.module_exempt(requester) {
            return Ok(());
        }
        if self.config.modules.user_may(requester.user_id.as_str(), UserPermission::CreateRoom) {
            Ok(())
        } else {
            Err(MatrixError::forbidden("You are not permitted to create rooms").into())
        }
    }

    /// `block_non_admin_invites` and `user_may_invite`, for an invite by `requester`.
    pub(crate) fn check_may_invite(&self, requester: &Requester) -> Result<()> {
        if self.module_exempt(requester) {
            return Ok(());
        }
        if self.config.room.block_non_admin_invites
            || !self.config.modules.user_may(requester.user_id.as_str(), UserPermission::Invite)
        {
            return Err(MatrixError::forbidden("Invites have been disabled on this server").into());
        }
        Ok(())
    }

    /// Whether new rooms are made without encryption (an encryption filter is configured).
    pub(crate) fn encryption_filtered(&self) -> bool {
        !self.config.modules.encryption_filters.is_empty()
    }

    /// The encryption filter's check of a local event: `m.room.encryption` from a user of a
    /// listed server, or in a room of one, is refused.
    pub(crate) fn check_event_allowed_by_modules(
        &self,
        kind: &str,
        sender: &UserId,
        room_id: &RoomId,
    ) -> Result<()> {
        if kind != "m.room.encryption" {
            return Ok(());
        }
        let room_server = room_id.server_name().map(|s| s.as_str());
        let denied = self.config.modules.encryption_filters.iter().any(|filter| {
            filter.deny_for_users_of.iter().any(|s| s == sender.server_name().as_str())
                || room_server.is_some_and(|room| filter.deny_for_rooms_of.iter().any(|s| s == room))
        });
        if denied {
            return Err(MatrixError::forbidden("Encryption is not allowed").into());
        }
        Ok(())
    }
}
