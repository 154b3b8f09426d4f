//! The outbound federation queue and its sender.
//!
//! # Layout
//!
//! - **Queueing PDUs.** A local event's destinations (the servers with a member joined in the
//!   state after it, and for a membership event the target's server, minus this one and any
//!   server `federation_domain_whitelist` leaves out) are computed by
//!   [`Services::federation_destinations`] while the event is prepared, and travel in
//!   `NewEvent::federation_destinations` into the transaction that persists the event: an
//!   event committed is queued, even if the process dies right after the commit, and an event
//!   whose commit failed is not. The resident side of a remote join calls
//!   [`Services::federation_destinations`] for the join it persists too.
//! - **Queueing EDUs.** [`Services::queue_edu`]; an EDU with a key replaces the queued one of
//!   the same type and key (typing per room and user, presence per user).
//! - **Sending.** [`Services::run_federation_sender`] runs in every process whose instance
//!   name `federation_sender_instances` lists, and sends to the destinations that Synapse's
//!   sharding (SHA-256 of the name, modulo the number of instances) gives this instance. It
//!   starts one task per destination with work that is not backing off; a task holds the
//!   destination's lease in the store (renewed before each transaction, expiring after
//!   [`LEASE_MS`] if its holder dies), so that processes sharing a database, even under one
//!   instance name, never send to one destination at once. A task puts up to 50 PDUs and 100
//!   EDUs in flight under a new transaction ID (kept in their rows: a retry sends the same
//!   transaction), `PUT`s `/send/{txnId}`, and deletes the rows only after a 200. A 4xx for the
//!   whole transaction drops it (logged); any other failure backs the destination off
//!   (`retry_interval` from `myelin_federation_retry`'s minimum, doubled with Synapse's jitter
//!   on each failure up to its maximum) and leaves the rows for the next attempt.
//! - **Finding work** written by other processes: the sender polls the queue every
//!   [`POLL_INTERVAL`]; work queued by this process wakes it at once.
//! - **Shutdown** cancels tasks between or during requests; rows stay queued (in flight ones
//!   keep their transaction ID) and leases are given up.

use std::collections::HashSet;
use std::time::Duration;

use myelin_core::pdu::Pdu;
use myelin_store::federation_queue::OutboundBatch;
use rand::RngExt;
use ruma::OwnedServerName;
#[cfg(feature = "test-hooks")]
use ruma::UserId;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::rooms::RoomHead;
use crate::util::{now_ms, random_string};
use crate::{Error, Result, Services};

/// The most PDUs and EDUs in one transaction (the spec's limits).
const MAX_PDUS_PER_TRANSACTION: i64 = 50;
const MAX_EDUS_PER_TRANSACTION: i64 = 100;

/// How long a sending lease lasts without renewal (longer than a request may take).
pub const LEASE_MS: i64 = 120_000;

/// How often the queue is read for work other processes queued.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long the sender pauses after it could not read the queue.
const ERROR_PAUSE: Duration = Duration::from_secs(5);

/// The sender's state in this process.
pub struct SenderState {
    /// Woken when this process queues something.
    wakeup: tokio::sync::Notify,
    /// This process's lease holder name: the instance name and a random suffix, so that two
    /// processes under one instance name hold leases apart.
    holder: String,
    /// Destinations with a sending task in this process.
    active: parking_lot::Mutex<HashSet<String>>,
}

impl SenderState {
    pub(crate) fn new(instance_name: &str) -> SenderState {
        SenderState {
            wakeup: tokio::sync::Notify::new(),
            holder: format!("{instance_name}/{}", random_string(12)),
            active: parking_lot::Mutex::new(HashSet::new()),
        }
    }
}

/// The index of the instance among `n` that sends to `destination`: Synapse's
/// `_get_shard_for_key` (SHA-256 of the name, as a little-endian integer, modulo `n`).
fn shard_of(destination: &str, n: usize) -> usize {
    let digest = Sha256::digest(destination.as_bytes());
    let n = n.max(1) as u128;
    // Little-endian: the last byte is the most significant.
    digest.iter().rev().fold(0u128, |acc, byte| (acc * 256 + u128::from(*byte)) % n) as usize
}

/// The server part of a user ID given as text (state keys of member events).
fn server_of(user_id: &str) -> Option<&str> {
    user_id.split_once(':').map(|(_, server)| server)
}

/// The next backoff interval after a failure: Synapse's `retryutils` (the minimum first, then
/// the last interval times two with a jitter of 0.8-1.4), capped at the maximum.
fn next_retry_interval(previous: i64, retry: &myelin_config::RetryConfig) -> i64 {
    let (min, max) = (retry.min_interval_ms as i64, retry.max_interval_ms as i64);
    if previous <= 0 {
        return min;
    }
    let jitter: f64 = rand::rng().random_range(0.8..1.4);
    ((previous as f64 * 2.0 * jitter) as i64).clamp(min, max)
}

/// What became of one transaction.
enum Outcome {
    /// Sent (or dropped after a 4xx): the next one may go.
    Done,
    /// The destination failed: back off.
    Failed,
}

/// Queueing.
impl Services {
    /// Whether this server may send to `destination` at all: never to itself, and only to
    /// servers `federation_domain_whitelist` names when it is set.
    pub fn may_send_to(&self, destination: &str) -> bool {
        destination != self.server_name() && self.config.federation.allows_destination(destination)
    }

    /// The servers an event is sent to: those with a member joined in the state after it
    /// (`head` is the state before it), and for a membership event the target's server, minus
    /// this server, the sender's server (it has the event) and servers not allowed. Empty for
    /// an event neither sent by a local user nor a remote user's join this server is resident
    /// for (the resident side of `send_join` persists such a join and has it sent on).
    pub async fn federation_destinations(&self, head: &RoomHead, pdu: &Pdu) -> Result<Vec<String>> {
        let ours = self.server_name();
        let sender_server = pdu.sender.server_name().as_str();
        let membership = (pdu.kind.to_string() == "m.room.member")
            .then(|| pdu.content_value().get("membership").and_then(Value::as_str).map(str::to_owned))
            .flatten();
        let remote_join = membership.as_deref() == Some("join") && sender_server != ours;
        if sender_server != ours && !remote_join {
            return Ok(Vec::new());
        }
        let target = membership.as_ref().and(pdu.state_key.as_deref());
        // Remote members in the state before the event, by server; the event's own target
        // takes its new membership.
        let mut candidates: std::collections::BTreeMap<&str, Vec<ruma::OwnedEventId>> =
            std::collections::BTreeMap::new();
        let mut joined: HashSet<String> = HashSet::new();
        let start = ("m.room.member".to_owned(), String::new());
        for ((kind, state_key), event_id) in head.state.range(start..) {
            if kind != "m.room.member" {
                break;
            }
            let Some(server) = server_of(state_key) else { continue };
            if server == ours || Some(state_key.as_str()) == target {
                continue;
            }
            candidates.entry(server).or_default().push(event_id.clone());
        }
        if membership.as_deref() == Some("join")
            && let Some(server) = target.and_then(server_of)
        {
            joined.insert(server.to_owned());
        }
        let wanted: Vec<ruma::OwnedEventId> = candidates
            .iter()
            .filter(|(server, _)| !joined.contains(**server))
            .flat_map(|(_, ids)| ids.iter().cloned())
            .collect();
        if !wanted.is_empty() {
            let members = self.get_pdus(&wanted, &head.rules).await?;
            for (server, ids) in &candidates {
                let any_joined = ids.iter().any(|id| {
                    members.get(id).is_some_and(|member| {
                        member.content_value().get("membership").and_then(Value::as_str) == Some("join")
                    })
                });
                if any_joined {
                    joined.insert((*server).to_owned());
                }
            }
        }
        if let Some(server) = target.and_then(server_of) {
            joined.insert(server.to_owned());
        }
        let mut destinations: Vec<String> =
            joined.into_iter().filter(|server| server != sender_server && self.may_send_to(server)).collect();
        destinations.sort_unstable();
        Ok(destinations)
    }

    /// Queues an EDU for `destination`. With a `key`, it replaces the EDU of the same type and
    /// key still waiting (only the latest typing state of a user in a room, say, is sent).
    /// Nothing is queued for a destination this server may not send to.
    pub async fn queue_edu(
        &self,
        destination: &str,
        edu_type: &str,
        content: &Value,
        key: Option<&str>,
    ) -> Result<()> {
        if !self.may_send_to(destination) {
            return Ok(());
        }
        self.store.queue_edu(destination, edu_type, &content.to_string(), key).await?;
        self.federation.sender.wakeup.notify_one();
        Ok(())
    }

    /// Wakes the sender after events were queued by this process.
    pub(crate) fn wake_federation_sender(&self) {
        self.federation.sender.wakeup.notify_one();
    }

    /// Whether this process sends to `destination` (`federation_sender_instances` and its
    /// sharding).
    fn sends_to(&self, destination: &str) -> bool {
        let federation = &self.config.federation;
        let instances = &federation.sender_instances;
        !instances.is_empty() && instances[shard_of(destination, instances.len())] == federation.instance_name
    }
}

/// Sending.
impl Services {
    /// The sender: starts a task per destination with work due, until shutdown.
    pub(crate) async fn run_federation_sender(self) {
        let federation = &self.config.federation;
        if !federation.sender_instances.contains(&federation.instance_name) {
            tracing::debug!(instance = %federation.instance_name, "this process does not send federation traffic");
            return;
        }
        let mut tasks: tokio::task::JoinSet<String> = tokio::task::JoinSet::new();
        loop {
            while let Some(done) = tasks.try_join_next() {
                self.finish_destination_task(done);
            }
            let wait = match self.start_due_destinations(&mut tasks).await {
                Ok(next_due) => next_due.map_or(POLL_INTERVAL, |due| {
                    Duration::from_millis((due - now_ms() as i64).max(0) as u64).min(POLL_INTERVAL)
                }),
                Err(error) => {
                    tracing::warn!(%error, "could not read the federation queue");
                    ERROR_PAUSE
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = self.federation.sender.wakeup.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => self.finish_destination_task(done),
            }
        }
        // Each task stops at the token, gives its lease up and leaves its rows queued.
        while let Some(done) = tasks.join_next().await {
            self.finish_destination_task(done);
        }
    }

    fn finish_destination_task(&self, done: std::result::Result<String, tokio::task::JoinError>) {
        match done {
            Ok(destination) => {
                self.federation.sender.active.lock().remove(&destination);
            }
            Err(error) => {
                // A panicked task: forget every destination, they are restarted when due.
                tracing::error!(%error, "a federation sending task failed");
                self.federation.sender.active.lock().clear();
            }
        }
    }

    /// Starts a task for each destination with work due now that has none; returns when the
    /// next destination backing off is due.
    async fn start_due_destinations(&self, tasks: &mut tokio::task::JoinSet<String>) -> Result<Option<i64>> {
        let now = now_ms() as i64;
        let mut next_due: Option<i64> = None;
        for (destination, due) in self.store.federation_destinations_with_work().await? {
            if !self.sends_to(&destination) {
                continue;
            }
            if due > now {
                next_due = Some(next_due.map_or(due, |next| next.min(due)));
                continue;
            }
            if !self.federation.sender.active.lock().insert(destination.clone()) {
                continue;
            }
            let services = self.clone();
            tasks.spawn(async move {
                services.send_to_destination(&destination).await;
                destination
            });
        }
        Ok(next_due)
    }

    /// Sends everything queued for `destination`, one transaction at a time, while this
    /// process holds its lease.
    async fn send_to_destination(&self, destination: &str) {
        let holder = self.federation.sender.holder.clone();
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let now = now_ms() as i64;
            match self.store.acquire_sender_lease(destination, &holder, now, now + LEASE_MS).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(%destination, "another process sends to this destination");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%destination, %error, "could not take the sending lease");
                    return;
                }
            }
            let outcome = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                outcome = self.send_one_transaction(destination) => outcome,
            };
            match outcome {
                Ok(Some(Outcome::Done)) => continue,
                Ok(None) => break,
                Ok(Some(Outcome::Failed)) => break,
                Err(error) => {
                    tracing::warn!(%destination, %error, "federation sending failed");
                    break;
                }
            }
        }
        if let Err(error) = self.store.release_sender_lease(destination, &holder).await {
            tracing::warn!(%destination, %error, "could not give the sending lease up");
        }
    }

    /// Sends the next transaction to `destination` (`None`: nothing queued).
    async fn send_one_transaction(&self, destination: &str) -> Result<Option<Outcome>> {
        let now = now_ms() as i64;
        let Some(batch) = self
            .store
            .next_federation_batch(destination, MAX_PDUS_PER_TRANSACTION, MAX_EDUS_PER_TRANSACTION, now)
            .await?
        else {
            return Ok(None);
        };
        if !self.may_send_to(destination) {
            tracing::info!(%destination, txn_id = %batch.txn_id, "dropping a transaction for a destination not allowed");
            self.store.finish_federation_batch(destination, &batch.txn_id, now).await?;
            return Ok(Some(Outcome::Done));
        }
        let server_name = OwnedServerName::try_from(destination).map_err(|e| {
            Error::internal(format!("queued destination {destination:?} is not a server name: {e}"))
        });
        let server_name = match server_name {
            Ok(name) => name,
            Err(error) => {
                tracing::warn!(%destination, %error, "dropping a transaction for a bad destination");
                self.store.finish_federation_batch(destination, &batch.txn_id, now).await?;
                return Ok(Some(Outcome::Done));
            }
        };
        let body = self.transaction_body(&batch).await?;
        let path = format!("/_matrix/federation/v1/send/{}", urlencoding_path(&batch.txn_id));
        let answer: std::result::Result<Value, _> =
            self.federation.client.put_json(&server_name, &path, &body).await;
        match answer {
            Ok(answer) => {
                log_pdu_errors(destination, &batch.txn_id, &answer);
                self.store.finish_federation_batch(destination, &batch.txn_id, now_ms() as i64).await?;
                tracing::debug!(%destination, txn_id = %batch.txn_id, pdus = batch.pdus.len(), edus = batch.edus.len(), "sent a transaction");
                Ok(Some(Outcome::Done))
            }
            Err(error) if error.status().is_some_and(|status| (400..500).contains(&status)) => {
                tracing::warn!(%destination, txn_id = %batch.txn_id, %error, "the destination refused a transaction; dropping it");
                self.store.finish_federation_batch(destination, &batch.txn_id, now_ms() as i64).await?;
                Ok(Some(Outcome::Done))
            }
            Err(error) => {
                let previous = self
                    .store
                    .federation_destination(destination)
                    .await?
                    .map_or(0, |record| record.retry_interval);
                let interval = next_retry_interval(previous, &self.config.federation.retry);
                tracing::info!(%destination, txn_id = %batch.txn_id, %error, retry_in_ms = interval, "could not send a transaction; backing off");
                self.store.record_destination_failure(destination, now_ms() as i64, interval).await?;
                Ok(Some(Outcome::Failed))
            }
        }
    }

    /// The `/send/{txnId}` body of a batch. Events no longer stored are left out.
    async fn transaction_body(&self, batch: &OutboundBatch) -> Result<Value> {
        let stored = self.store.get_events(&batch.pdus).await?;
        let mut by_id: std::collections::HashMap<String, String> =
            stored.into_iter().map(|event| (event.event_id, event.json)).collect();
        let mut pdus = Vec::with_capacity(batch.pdus.len());
        for event_id in &batch.pdus {
            let Some(json) = by_id.remove(event_id) else { continue };
            let pdu: Value = serde_json::from_str(&json).map_err(Error::internal)?;
            pdus.push(pdu);
        }
        let mut edus = Vec::with_capacity(batch.edus.len());
        for (edu_type, content) in &batch.edus {
            let content: Value = serde_json::from_str(content).map_err(Error::internal)?;
            edus.push(json!({"edu_type": edu_type, "content": content}));
        }
        Ok(json!({
            "origin": self.server_name(),
            "origin_server_ts": now_ms(),
            "pdus": pdus,
            "edus": edus,
        }))
    }
}

/// A transaction ID is made of digits and `_`; anything else is percent-encoded.
fn urlencoding_path(segment: &str) -> String {
    segment
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Logs the PDUs a destination reports it could not take (`{"pdus": {id: {"error": ..}}}`).
fn log_pdu_errors(destination: &str, txn_id: &str, answer: &Value) {
    let Some(pdus) = answer.get("pdus").and_then(Value::as_object) else { return };
    for (event_id, result) in pdus {
        if let Some(error) = result.get("error") {
            tracing::info!(%destination, %txn_id, %event_id, %error, "the destination refused a PDU");
        }
    }
}

/// Test hooks.
#[cfg(feature = "test-hooks")]
impl Services {
    /// Makes a remote user a joined member of a room through the write path (an event signed
    /// by this server in the remote user's name: good for local state only), for tests of
    /// the sender before remote joins exist.
    pub async fn test_join_remote_user(&self, room_id: &ruma::RoomId, user_id: &UserId) -> Result<()> {
        let draft =
            crate::rooms::EventDraft::state("m.room.member", user_id.as_str(), json!({"membership": "join"}));
        self.send_event(room_id, user_id, draft, None).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_spread_destinations_and_one_instance_takes_all() {
        assert_eq!(shard_of("example.org", 1), 0);
        let shards: HashSet<usize> = (0..50).map(|i| shard_of(&format!("server{i}.example"), 3)).collect();
        assert_eq!(shards, HashSet::from([0, 1, 2]));
    }

    #[test]
    fn backoff_starts_at_the_minimum_and_is_capped() {
        let retry = myelin_config::RetryConfig { min_interval_ms: 1000, max_interval_ms: 5000 };
        assert_eq!(next_retry_interval(0, &retry), 1000);
        let second = next_retry_interval(1000, &retry);
        assert!((1600..=2800).contains(&second), "{second}");
        assert_eq!(next_retry_interval(100_000, &retry), 5000);
    }

    #[test]
    fn transaction_ids_are_path_safe() {
        assert_eq!(urlencoding_path("1700000000000_12"), "1700000000000_12");
        assert_eq!(urlencoding_path("a/b"), "a%2Fb");
    }
}
