//! Whether a user may write into rooms at all, decided in one place for every way a user's
//! write reaches a room (sends, state, redactions, every membership change local or through
//! another server, createRoom, upgrades), as Synapse decides it when it creates any event for
//! a user: a suspended account (MSC3823) may only leave, kick, unban and redact its own
//! events; the server-wide blocking of `check_auth_blocking` (monthly active user limits,
//! `hs_disabled`); then consent to the privacy policy (`user_consent.block_events_error`),
//! which leaving and joining the server notices room do not need.
//!
//! Shadow bans and rate limits stay with the endpoints: what they answer differs (a random
//! event ID; which limiter, and how many actions).

use myelin_core::{ErrCode, MatrixError};
use ruma::{EventId, RoomId};

use super::membership::MembershipAction;
use crate::auth::Requester;
use crate::{Error, Result, Services};

/// What a client is about to write, as far as [`Services::admit_client_write`] cares.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ClientWrite<'a> {
    /// Any event but a membership or a redaction: messages, state, and the events of a room
    /// being created or upgraded.
    Event,
    /// A redaction of `target`.
    Redaction { target: &'a EventId },
    /// A membership change in `room_id`: the action as the rules see it (a leave on someone
    /// else's behalf is a kick, or an unban).
    Membership { action: MembershipAction, room_id: &'a RoomId },
}

/// `403 M_USER_SUSPENDED` (MSC3823) with Synapse's message.
pub(crate) fn suspended(message: &str) -> Error {
    MatrixError::new(ErrCode::UserSuspended, message).into()
}

impl Services {
    /// The checks every write of a user into rooms passes first (see the module doc).
    pub(crate) async fn admit_client_write(
        &self,
        requester: &Requester,
        write: ClientWrite<'_>,
    ) -> Result<()> {
        if requester.suspended {
            self.refuse_suspended_write(requester, write).await?;
        }
        requester.check_auth_blocking_for(self).await?;
        if self.consent_blocks_events() {
            let exempt = match write {
                ClientWrite::Membership { action: MembershipAction::Leave, .. } => true,
                ClientWrite::Membership { action: MembershipAction::Join, room_id } => {
                    self.is_server_notices_room(room_id).await?
                }
                _ => false,
            };
            if !exempt {
                self.assert_accepted_privacy_policy(requester).await?;
            }
        }
        Ok(())
    }

    /// A suspended requester's write: refused unless it is leaving, a kick or an unban, or a
    /// redaction of the requester's own event (or of an event this server does not have).
    async fn refuse_suspended_write(&self, requester: &Requester, write: ClientWrite<'_>) -> Result<()> {
        let message = match write {
            ClientWrite::Event => "Sending messages while account is suspended is not allowed.",
            ClientWrite::Redaction { target } => {
                let Some(event) = self.store.get_event(target.as_str()).await? else { return Ok(()) };
                let json: serde_json::Value = serde_json::from_str(&event.json).map_err(Error::internal)?;
                if json.get("sender").and_then(serde_json::Value::as_str) == Some(requester.user_id.as_str())
                {
                    return Ok(());
                }
                "You can only redact your own events while account is suspended."
            }
            ClientWrite::Membership { action, .. } => match action {
                MembershipAction::Invite => "Sending invites while account is suspended is not allowed.",
                MembershipAction::Join => "Joining rooms while account is suspended is not allowed.",
                MembershipAction::Knock => "Knocking on rooms while account is suspended is not allowed.",
                MembershipAction::Ban => "Changing membership while account is suspended is not allowed.",
                MembershipAction::Leave | MembershipAction::Kick | MembershipAction::Unban => return Ok(()),
            },
        };
        Err(suspended(message))
    }
}
