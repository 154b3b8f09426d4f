//! To-device messages: sending them (`PUT /sendToDevice/{eventType}/{txnId}`) into the durable
//! inbox of each addressed device, and handing them to that device's syncs.
//!
//! A message is delivered by every sync of its device from a token before its position, and
//! deleted once the device syncs with a token at or after it (the client got the response
//! that carried it). At most [`MAX_TO_DEVICE_PER_SYNC`] go into one sync; the sync's token then
//! stops at the last one delivered, so the rest come with the next sync.

use std::collections::BTreeMap;

use myelin_core::MatrixError;
use myelin_store::NewToDeviceMessages;
use ruma::{ServerName, UserId};
use serde_json::{Map, Value, json};

use crate::auth::Requester;
use crate::ratelimit::Limiter;
use crate::util::random_string;
use crate::{Error, Result, Services};

/// The most to-device messages one sync carries (Synapse's limit).
pub const MAX_TO_DEVICE_PER_SYNC: i64 = 100;

/// The largest serialized message set for one recipient user, in bytes: Synapse's
/// `MAX_EDU_SIZE`, the most that fits in one federation EDU.
pub const MAX_TO_DEVICE_RECIPIENT_SIZE: usize = 65536;

/// The type Synapse rate limits with `rc_key_requests` when sent to another user.
const ROOM_KEY_REQUEST: &str = "m.room_key_request";

/// A to-device event as a device receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct ToDeviceEvent {
    pub sender: String,
    pub kind: String,
    pub content: Value,
}

/// A sendToDevice request's messages: recipient user → device ID (or `*`) → content.
pub type ToDeviceMessages = BTreeMap<String, BTreeMap<String, serde_json::Map<String, Value>>>;

impl Services {
    /// The transaction scope of a requester: its device, or its access token without one.
    fn to_device_txn_device(requester: &Requester) -> String {
        requester.device_id.clone().unwrap_or_else(|| format!("token:{}", requester.token_hash))
    }

    /// `PUT /sendToDevice/{eventType}/{txnId}`. Messages to invalid user IDs are skipped with a
    /// warning; unknown local users and devices are ignored; messages to remote users are
    /// queued for their servers (`m.direct_to_device`, one per server, never replaced); a
    /// transaction ID the device already used sends nothing new.
    pub async fn send_to_device(
        &self,
        requester: &Requester,
        kind: &str,
        txn_id: &str,
        messages: ToDeviceMessages,
    ) -> Result<()> {
        let sender = requester.user_id.as_str();
        let mut local: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        // Server → recipient → device → content, for remote recipients.
        let mut remote: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for (user_id, by_device) in messages {
            let size = serde_json::to_vec(&by_device).map_err(Error::internal)?.len();
            if size > MAX_TO_DEVICE_RECIPIENT_SIZE {
                return Err(MatrixError::too_large(format!(
                    "device message to {user_id} is too large ({size} bytes, max {MAX_TO_DEVICE_RECIPIENT_SIZE})"
                ))
                .into());
            }
            let Ok(recipient) = UserId::parse(&user_id) else {
                tracing::warn!(user_id, "ignoring a to-device message to an invalid user ID");
                continue;
            };
            if by_device.is_empty() {
                continue;
            }
            if kind == ROOM_KEY_REQUEST && recipient != requester.user_id {
                let key = format!("{sender} {}", requester.device_id.as_deref().unwrap_or(""));
                if self.ratelimit_key(Limiter::KeyRequests, &key, true).is_err() {
                    tracing::info!(sender, user_id, "dropping a room key request: rate limited");
                    continue;
                }
            }
            if recipient.server_name().as_str() != self.server_name() {
                let by_device =
                    by_device.into_iter().map(|(device, content)| (device, Value::Object(content)));
                remote
                    .entry(recipient.server_name().to_string())
                    .or_default()
                    .insert(user_id, Value::Object(by_device.collect()));
                continue;
            }
            let by_device = by_device
                .into_iter()
                .map(|(device_id, content)| (device_id, Value::Object(content).to_string()))
                .collect();
            local.insert(user_id, by_device);
        }
        let sender_device = Self::to_device_txn_device(requester);
        let new = self.deliver_to_device(sender, &sender_device, txn_id, kind, &local).await?;
        // A transaction ID used before sent its messages to other servers already.
        if new {
            for (server, messages) in remote {
                let content = json!({
                    "sender": sender,
                    "type": kind,
                    "message_id": random_string(16),
                    "messages": messages,
                });
                self.queue_edu(&server, "m.direct_to_device", &content, None).await?;
            }
        }
        Ok(())
    }

    /// Puts messages into the local recipients' inboxes once per `(sender, sender_device,
    /// txn_id)` and wakes them; whether the transaction was new.
    async fn deliver_to_device(
        &self,
        sender: &str,
        sender_device: &str,
        txn_id: &str,
        kind: &str,
        local: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<bool> {
        let position = self.streams.to_device.allocate();
        let batch = NewToDeviceMessages {
            sender,
            sender_device,
            txn_id,
            kind,
            messages: local,
            stream_id: position.value(),
        };
        let reached = self.store.add_to_device_messages(&batch).await?;
        position.finish();
        let new = reached.is_some();
        let reached: Vec<_> =
            reached.unwrap_or_default().iter().filter_map(|user_id| UserId::parse(user_id).ok()).collect();
        self.notifier.notify_users(reached.iter().map(|user_id| &**user_id));
        if !reached.is_empty() {
            self.wake_appservices();
        }
        Ok(new)
    }

    /// An inbound `m.direct_to_device` from `origin`: messages from one of the origin's users
    /// to local users' devices (`*`: all of them) go into their inboxes, once per origin and
    /// `message_id` (a transaction sent again delivers nothing new). Messages for other
    /// servers' users are dropped.
    pub(crate) async fn receive_to_device_edu(&self, origin: &ServerName, content: &Value) -> Result<()> {
        let field = |name: &str| content.get(name).and_then(Value::as_str);
        let (Some(sender), Some(kind), Some(message_id)) =
            (field("sender"), field("type"), field("message_id"))
        else {
            return Err(MatrixError::bad_json("m.direct_to_device needs sender, type and message_id").into());
        };
        let Ok(sender_id) = UserId::parse(sender) else {
            return Err(MatrixError::bad_json("m.direct_to_device has a bad sender").into());
        };
        if sender_id.server_name() != origin {
            tracing::info!(%origin, sender, "dropping to-device messages from another server's user");
            return Ok(());
        }
        let Some(messages) = content.get("messages").and_then(Value::as_object) else {
            return Err(MatrixError::bad_json("m.direct_to_device needs messages").into());
        };
        let mut local: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (user_id, by_device) in messages {
            let Ok(recipient) = UserId::parse(user_id) else { continue };
            if recipient.server_name().as_str() != self.server_name() {
                tracing::info!(%origin, user_id, "dropping a to-device message for a user not hosted here");
                continue;
            }
            let Some(by_device) = by_device.as_object() else { continue };
            let by_device: BTreeMap<String, String> = by_device
                .iter()
                .filter(|(_, content)| content.is_object())
                .map(|(device_id, content)| (device_id.clone(), content.to_string()))
                .collect();
            if !by_device.is_empty() {
                local.insert(user_id.clone(), by_device);
            }
        }
        let scope = format!("federation:{origin}");
        self.deliver_to_device(sender, &scope, message_id, kind, &local).await?;
        Ok(())
    }

    /// Deletes what the requester's device acknowledged by syncing from position `since`.
    pub(crate) async fn ack_to_device(&self, requester: &Requester, since: i64) -> Result<()> {
        let Some(device_id) = &requester.device_id else { return Ok(()) };
        if since > 0 {
            self.store.ack_to_device_messages(requester.user_id.as_str(), device_id, since).await?;
        }
        Ok(())
    }

    /// The requester's device's messages after `since` up to `now`, at most `limit` (at least
    /// one), and the to-device position the sync's token gets: `now`, or the last message's
    /// when more are waiting.
    pub(crate) async fn to_device_for_sync(
        &self,
        requester: &Requester,
        since: i64,
        now: i64,
        limit: i64,
    ) -> Result<(Vec<ToDeviceEvent>, i64)> {
        let Some(device_id) = &requester.device_id else { return Ok((Vec::new(), now)) };
        let limit = limit.max(1);
        let records =
            self.store.to_device_messages(requester.user_id.as_str(), device_id, since, now, limit).await?;
        let next = match records.last() {
            Some(last) if records.len() as i64 >= limit => last.stream_id,
            _ => now,
        };
        let mut events = Vec::with_capacity(records.len());
        for record in records {
            let content = serde_json::from_str(&record.content)
                .map_err(|e| Error::internal_with("reading a stored to-device message", e))?;
            events.push(ToDeviceEvent { sender: record.sender, kind: record.kind, content });
        }
        Ok((events, next))
    }
}
