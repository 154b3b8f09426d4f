//! Client sends (`send`, `state`, `redact`): rate limits, transaction IDs and shadow bans,
//! after `admission`'s checks, in front of the one write path.

use myelin_core::MatrixError;
use ruma::{EventId, OwnedEventId, RoomId};
use serde_json::Value;

use super::EventDraft;
use super::admission::ClientWrite;
use crate::auth::Requester;
use crate::{Error, Result, Services};

/// A random event ID (the format of room versions 4 and later), answered to a shadow-banned
/// user in place of an event that is never sent (Synapse's `ShadowBanError`).
pub(crate) fn shadow_ban_event_id() -> Result<OwnedEventId> {
    EventId::parse(format!("${}", crate::util::random_string(43))).map_err(Error::internal)
}

/// Identifies a client transaction for idempotent sends: the device, the endpoint (scope)
/// and the client's transaction ID.
#[derive(Clone, Debug)]
pub struct TxnKey {
    pub device: String,
    pub scope: String,
    pub txn_id: String,
}

/// Client-originated sends, with the checks that apply to them only (rate limits, transaction
/// IDs); the rules for every local event are the write path's.
impl Services {
    fn txn_key(requester: &Requester, scope: String, txn_id: &str) -> TxnKey {
        TxnKey {
            device: requester.device_id.clone().unwrap_or_else(|| format!("token:{}", requester.token_hash)),
            scope,
            txn_id: txn_id.to_owned(),
        }
    }

    /// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`.
    pub async fn send_message(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        kind: &str,
        content: Value,
        txn_id: &str,
    ) -> Result<OwnedEventId> {
        if kind == "m.room.redaction" {
            return Err(MatrixError::bad_json("Use /redact to redact events").into());
        }
        if requester.shadow_banned {
            return shadow_ban_event_id();
        }
        self.admit_client_write(requester, ClientWrite::Event).await?;
        self.ratelimit_user(crate::ratelimit::Limiter::Message, requester).await?;
        let txn = Self::txn_key(requester, format!("{room_id}/send/{kind}"), txn_id);
        let pdu = self
            .send_event(room_id, &requester.user_id, EventDraft::message(kind, content), Some(txn))
            .await?;
        Ok(pdu.event_id.clone())
    }

    /// `PUT /rooms/{roomId}/state/{eventType}/{stateKey}`.
    pub async fn send_state(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        kind: &str,
        state_key: &str,
        content: Value,
    ) -> Result<OwnedEventId> {
        if kind == "m.room.member" {
            // The membership rules apply `rc_message` with the membership limits.
            return self.send_member_state(requester, room_id, state_key, content).await;
        }
        if requester.shadow_banned {
            return shadow_ban_event_id();
        }
        self.admit_client_write(requester, ClientWrite::Event).await?;
        self.check_event_allowed_by_modules(kind, &requester.user_id, room_id)?;
        self.ratelimit_user(crate::ratelimit::Limiter::Message, requester).await?;
        let pdu = self
            .send_event(room_id, &requester.user_id, EventDraft::state(kind, state_key, content), None)
            .await?;
        Ok(pdu.event_id.clone())
    }

    /// `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`.
    pub async fn redact(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        event_id: &EventId,
        reason: Option<&str>,
        txn_id: &str,
    ) -> Result<OwnedEventId> {
        if requester.shadow_banned {
            return shadow_ban_event_id();
        }
        self.admit_client_write(requester, ClientWrite::Redaction { target: event_id }).await?;
        let limiter = if requester.is_admin && self.config.ratelimit.admin_redaction.is_some() {
            crate::ratelimit::Limiter::AdminRedaction
        } else {
            crate::ratelimit::Limiter::Message
        };
        self.ratelimit_user(limiter, requester).await?;
        let mut content = serde_json::json!({});
        if let Some(reason) = reason {
            content["reason"] = Value::from(reason);
        }
        let draft = EventDraft {
            kind: "m.room.redaction".to_owned(),
            state_key: None,
            content,
            redacts: Some(event_id.to_owned()),
        };
        let txn = Self::txn_key(requester, format!("{room_id}/redact/{event_id}"), txn_id);
        let pdu = self.send_event(room_id, &requester.user_id, draft, Some(txn)).await?;
        Ok(pdu.event_id.clone())
    }
}
