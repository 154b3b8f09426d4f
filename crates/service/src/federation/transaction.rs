//! Inbound transactions (`PUT /_matrix/federation/v1/send/{txnId}`): PDUs into the write path
//! in order, EDUs to [`Services::receive_edu`], and the answer kept per `(origin, txnId)` so
//! that a transaction sent again is answered without being processed again.
//!
//! Transactions from one origin are processed one at a time (as Synapse does), so a resent
//! transaction waits for the first to finish and then finds its answer.
//!
//! A PDU whose prev events are unknown here makes this server ask the origin for them
//! (`POST /get_missing_events`, at most 10, oldest first through the same path); an event
//! whose prev events are still missing then gets the state at the gap from the origin
//! (`federation::gaps`), and is dropped with an error entry only when that cannot be had.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use myelin_core::MatrixError;
use ruma::{OwnedServerName, RoomId, ServerName};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::pdu::{PduOutcome, path_segment, pdu_event_id, pdu_object};
use crate::{Error, Result, Services};

/// The most PDUs a transaction may carry (as Synapse).
pub const MAX_PDUS: usize = 50;
/// The most EDUs a transaction may carry (as Synapse).
pub const MAX_EDUS: usize = 100;
/// How many missing prev events are asked for at once.
const MISSING_EVENTS_LIMIT: u64 = 10;

/// One lock per origin: its transactions are processed one at a time.
#[derive(Default)]
pub struct InboundTransactions {
    origins: parking_lot::Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
}

impl InboundTransactions {
    fn lock_for(&self, origin: &ServerName) -> Arc<tokio::sync::Mutex<()>> {
        self.origins.lock().entry(origin.to_owned()).or_default().clone()
    }
}

/// What became of each PDU of a transaction: event ID to `None` (processed) or the error.
/// Kept (as JSON) per `(origin, txnId)` to answer the transaction again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionResults {
    pub pdus: BTreeMap<String, Option<String>>,
}

impl Services {
    /// Processes an inbound transaction; returns what became of each PDU. Runs on a task of
    /// its own: a hang-up must not stop it half-way.
    pub async fn receive_transaction(
        &self,
        origin: &ServerName,
        txn_id: &str,
        body: &Value,
    ) -> Result<TransactionResults> {
        let Some(body) = body.as_object() else {
            return Err(MatrixError::bad_json("A transaction must be an object").into());
        };
        let pdus = match body.get("pdus") {
            Some(Value::Array(pdus)) => pdus.clone(),
            Some(_) => return Err(MatrixError::bad_json("`pdus` must be an array").into()),
            None => return Err(MatrixError::bad_json("Missing `pdus`").into()),
        };
        let edus = match body.get("edus") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(edus)) => edus.clone(),
            Some(_) => return Err(MatrixError::bad_json("`edus` must be an array").into()),
        };
        if pdus.len() > MAX_PDUS || edus.len() > MAX_EDUS {
            tracing::info!(%origin, txn_id, pdus = pdus.len(), edus = edus.len(), "transaction too large");
            return Err(MatrixError::bad_json(format!(
                "A transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs"
            ))
            .into());
        }
        let services = self.clone();
        let (origin, txn_id) = (origin.to_owned(), txn_id.to_owned());
        tokio::spawn(
            async move { services.receive_transaction_to_completion(&origin, &txn_id, pdus, edus).await },
        )
        .await
        .map_err(Error::internal)?
    }

    async fn receive_transaction_to_completion(
        &self,
        origin: &ServerName,
        txn_id: &str,
        pdus: Vec<Value>,
        edus: Vec<Value>,
    ) -> Result<TransactionResults> {
        let lock = self.federation.inbound.lock_for(origin);
        let _one_at_a_time = lock.lock().await;
        if let Some(answer) = self.store.inbound_transaction_response(origin.as_str(), txn_id).await? {
            return serde_json::from_str(&answer).map_err(Error::internal);
        }
        let mut results = TransactionResults::default();
        for pdu in &pdus {
            if let Some((event_id, result)) = self.receive_transaction_pdu(origin, pdu).await {
                results.pdus.insert(event_id, result);
            }
        }
        for edu in &edus {
            let edu_type = edu.get("edu_type").and_then(Value::as_str).unwrap_or_default();
            let content = edu.get("content").cloned().unwrap_or(Value::Null);
            if let Err(error) = self.receive_edu(origin, edu_type, &content).await {
                tracing::info!(%origin, edu_type, %error, "could not process an EDU");
            }
        }
        let text = serde_json::to_string(&results).map_err(Error::internal)?;
        self.store.record_inbound_transaction(origin.as_str(), txn_id, &text).await?;
        Ok(results)
    }

    /// One PDU of a transaction: its event ID and error, if any (`None` for a PDU whose event
    /// ID cannot even be worked out, which Synapse leaves out too).
    async fn receive_transaction_pdu(
        &self,
        origin: &ServerName,
        pdu: &Value,
    ) -> Option<(String, Option<String>)> {
        let room_id = pdu.get("room_id").and_then(Value::as_str).and_then(|r| RoomId::parse(r).ok())?;
        let rules = match self.room_rules(&room_id).await {
            Ok(Some((_, rules))) => Some(rules),
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%error, "could not read a room's version");
                return None;
            }
        };
        let Some(rules) = rules else {
            // Without the room's version the event ID cannot be worked out: keyed by what the
            // PDU claims, as far as it parses at all.
            let event_id = pdu.get("event_id").and_then(Value::as_str)?.to_owned();
            return Some((event_id, Some("Unknown room".to_owned())));
        };
        let mut object = pdu_object(pdu).ok()?;
        if rules.event_id_format != ruma::room_version_rules::EventIdFormatVersion::V1 {
            object.remove("event_id");
        }
        let event_id = pdu_event_id(&object, &rules).ok()?;
        let result = match self.origin_in_room(origin, &room_id).await {
            Ok(true) => self.receive_with_missing_prevs(origin, &room_id, pdu).await,
            Ok(false) => self.receive_out_of_band_membership(origin, &room_id, pdu).await,
            Err(error) => Err(error),
        };
        let entry = match result {
            Ok(PduOutcome::Accepted(_) | PduOutcome::AlreadyKnown(_) | PduOutcome::SoftFailed(_)) => None,
            Ok(PduOutcome::Rejected(_, reason)) => Some(format!("Rejected: {reason}")),
            Ok(PduOutcome::MissingPrevEvents(_, missing)) => {
                tracing::info!(%event_id, %origin, ?missing, "dropped a PDU whose prev events could not be fetched");
                Some("Missing prev events".to_owned())
            }
            Err(error) => {
                tracing::info!(%event_id, %origin, %error, "refused a PDU");
                Some(error.to_string())
            }
        };
        Some((event_id.to_string(), entry))
    }

    /// Whether a user of `origin` is joined to the room, through the one gate: a server the
    /// room's ACL denies is refused (`403 M_FORBIDDEN`) first.
    async fn origin_in_room(&self, origin: &ServerName, room_id: &RoomId) -> Result<bool> {
        self.check_server_acl(origin, room_id).await?;
        self.server_in_room(origin, room_id).await
    }

    /// Receives a PDU; when its prev events are unknown, asks the origin for the events
    /// between this server's forward extremities and it, receives them oldest first, and tries
    /// once more.
    async fn receive_with_missing_prevs(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        pdu: &Value,
    ) -> Result<PduOutcome> {
        let outcome = self.receive_remote_pdu(origin, room_id, pdu).await?;
        let PduOutcome::MissingPrevEvents(event_id, _) = &outcome else { return Ok(outcome) };
        let Some(head) = self.room_head_snapshot(room_id).await? else { return Ok(outcome) };
        let min_depth = head.depth.saturating_sub(MISSING_EVENTS_LIMIT * 2);
        let request = json!({
            "earliest_events": head.extremities,
            "latest_events": [event_id],
            "limit": MISSING_EVENTS_LIMIT,
            "min_depth": min_depth,
        });
        let path = format!("/_matrix/federation/v1/get_missing_events/{}", path_segment(room_id.as_str()));
        let answer: Value = match self.federation.client.post_json(origin, &path, &request).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::info!(%origin, %event_id, %error, "get_missing_events failed");
                return Ok(outcome);
            }
        };
        let mut missing: Vec<Value> =
            answer.get("events").and_then(Value::as_array).cloned().unwrap_or_default();
        missing.sort_by_key(|event| event.get("depth").and_then(Value::as_u64).unwrap_or(0));
        for event in missing.iter().take(MISSING_EVENTS_LIMIT as usize) {
            if let Err(error) = self.receive_pdu_filling_gaps(origin, room_id, event).await {
                tracing::info!(%origin, %error, "refused a fetched missing event");
            }
        }
        self.receive_pdu_filling_gaps(origin, room_id, pdu).await
    }
}
