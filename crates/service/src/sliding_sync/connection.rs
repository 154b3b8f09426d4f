//! Per-connection state: per (user, device, `conn_id`), what each room was last sent with and
//! where each extension stands, stored with every position handed out (migration 0025) so that
//! it survives restarts. A request's `pos` must be one this connection handed out and still
//! keeps (the one its last request came with, or the one it answered): anything else is
//! `400 M_UNKNOWN_POS`. Answering keeps the request's position and the new one (as Synapse
//! does, so a retried request still works); a request without `pos` starts the connection
//! afresh. A device keeps at most [`MAX_CONNECTIONS_PER_DEVICE`] connections; its
//! connections go with it (`store::devices::DEVICE_TABLES`).

use std::collections::BTreeMap;

use myelin_core::{ErrCode, MatrixError};
use myelin_store::SlidingSyncConnection;
use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::request::RequiredState;
use crate::auth::Requester;
use crate::sync::SyncToken;
use crate::util::now_ms;
use crate::{Error, Result, Services};

/// The most connections (`conn_id`s) one device keeps; the least recently used go first.
pub const MAX_CONNECTIONS_PER_DEVICE: usize = 10;

/// What a room was last sent with on this connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SentRoom {
    /// The event stream position the room was sent up to.
    pub upto: i64,
    /// The membership it was sent as.
    pub membership: String,
    pub required_state: RequiredState,
    pub timeline_limit: i64,
}

/// The state of a connection as of one position.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConnectionState {
    /// Where every stream stood when the position was handed out (its `to_string`).
    pub token: String,
    pub rooms: BTreeMap<String, SentRoom>,
    /// Where each extension stood when it was last sent (tokens, by extension name).
    pub extensions: BTreeMap<String, String>,
}

impl ConnectionState {
    pub fn token(&self) -> Result<SyncToken> {
        SyncToken::parse(&self.token)
    }

    /// Where an extension stood, read against the streams now (in-memory ones restart).
    pub fn extension(&self, name: &str, current: SyncToken) -> Option<SyncToken> {
        let mut token = self.extensions.get(name).and_then(|token| SyncToken::parse(token).ok())?;
        token.forget_restarted(current);
        Some(token)
    }
}

fn unknown_pos() -> Error {
    MatrixError::new(ErrCode::UnknownPos, "Unknown position").into()
}

fn connection<'a>(requester: &'a Requester, conn_id: &'a str) -> SlidingSyncConnection<'a> {
    SlidingSyncConnection {
        user_id: requester.user_id.as_str(),
        device_id: requester.device_id.as_deref().unwrap_or_default(),
        conn_id,
    }
}

impl Services {
    /// The state of a connection at `pos`: `M_UNKNOWN_POS` unless this user's device handed it
    /// out on this connection and still keeps it.
    pub(crate) async fn sliding_sync_connection(
        &self,
        requester: &Requester,
        conn_id: &str,
        pos: i64,
    ) -> Result<ConnectionState> {
        let text = self.store.sliding_sync_position(connection(requester, conn_id), pos).await?;
        let text = text.ok_or_else(unknown_pos)?;
        serde_json::from_str(&text).map_err(|e| Error::internal_with("reading a sliding sync connection", e))
    }

    /// Stores a new position of a connection with its state; returns the position.
    pub(crate) async fn save_sliding_sync_connection(
        &self,
        requester: &Requester,
        conn_id: &str,
        kept: Option<i64>,
        state: &ConnectionState,
    ) -> Result<i64> {
        // Random, so that a position of a connection lost (or started afresh) is never
        // mistaken for one of its successor.
        let pos: i64 = rand::rng().random_range(1..i64::MAX >> 11);
        let text = serde_json::to_string(state).map_err(Error::internal)?;
        self.store
            .save_sliding_sync_position(
                connection(requester, conn_id),
                kept,
                pos,
                &text,
                now_ms() as i64,
                MAX_CONNECTIONS_PER_DEVICE,
            )
            .await?;
        Ok(pos)
    }
}
