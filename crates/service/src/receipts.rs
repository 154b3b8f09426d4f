//! Read receipts (`m.read`, `m.read.private`, threaded) and read markers (`m.fully_read`).

use myelin_core::MatrixError;
use myelin_store::ReceiptRecord;
use ruma::{EventId, RoomId, ServerName, UserId};
use serde_json::{Value, json};

use crate::auth::Requester;
use crate::util::now_ms;
use crate::{Result, Services};

impl Services {
    /// `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`.
    pub async fn set_receipt(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        receipt_type: &str,
        event_id: &EventId,
        thread_id: Option<&str>,
    ) -> Result<()> {
        if let Some(thread_id) = thread_id
            && thread_id.is_empty()
        {
            return Err(MatrixError::invalid_param("thread_id field must be a non-empty string").into());
        }
        match receipt_type {
            "m.read" | "m.read.private" => {}
            "m.fully_read" => {
                if thread_id.is_some() {
                    return Err(
                        MatrixError::invalid_param("thread_id is not allowed for m.fully_read").into()
                    );
                }
                return self.set_fully_read(requester, room_id, event_id).await;
            }
            other => return Err(MatrixError::invalid_param(format!("Unknown receipt type {other:?}")).into()),
        }
        let event = self.receipt_target(requester, room_id, event_id).await?;
        let stored = self
            .store_receipt(
                room_id,
                &requester.user_id,
                receipt_type,
                event_id,
                event,
                thread_id,
                now_ms() as i64,
            )
            .await?;
        // Public receipts of local users go to the other servers in the room.
        if stored && receipt_type == "m.read" {
            self.queue_receipt_edu(room_id, &requester.user_id, event_id, thread_id).await;
        }
        Ok(())
    }

    /// Stores a receipt (local or remote) when it moves the user's receipt forward and wakes
    /// who may see it; whether it was stored.
    #[allow(clippy::too_many_arguments)]
    async fn store_receipt(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        receipt_type: &str,
        event_id: &EventId,
        event: i64,
        thread_id: Option<&str>,
        ts: i64,
    ) -> Result<bool> {
        let thread = thread_id.unwrap_or("");
        if let Some(existing) =
            self.store.user_receipt(room_id.as_str(), user_id.as_str(), receipt_type, thread).await?
            && existing.event_stream >= event
        {
            // Receipts only move forward.
            return Ok(false);
        }
        let position = self.streams.receipts.allocate();
        let stream_id = position.value();
        let result = self
            .store
            .upsert_receipt(&ReceiptRecord {
                room_id: room_id.to_string(),
                receipt_type: receipt_type.to_owned(),
                user_id: user_id.to_string(),
                thread_id: thread.to_owned(),
                event_id: event_id.to_string(),
                event_stream: event,
                ts,
                stream_id,
            })
            .await;
        result?;
        position.finish();
        if receipt_type == "m.read" {
            self.notify_room(room_id).await;
        } else {
            self.notifier.notify_user(user_id);
        }
        self.wake_appservices();
        Ok(true)
    }

    /// Queues a local user's public receipt for the other servers in the room (`m.receipt`;
    /// a newer one for the same room, user and thread replaces it while queued).
    async fn queue_receipt_edu(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        event_id: &EventId,
        thread_id: Option<&str>,
    ) {
        let servers = match self.servers_in_room(room_id).await {
            Ok(servers) => servers,
            Err(error) => {
                tracing::warn!(%error, %room_id, "could not read the servers of a room for a receipt");
                return;
            }
        };
        let mut data = json!({"ts": now_ms()});
        if let Some(thread_id) = thread_id {
            data["thread_id"] = json!(thread_id);
        }
        let content = json!({
            room_id.as_str(): {"m.read": {user_id.as_str(): {"event_ids": [event_id], "data": data}}}
        });
        let key = format!("{room_id} {user_id} {}", thread_id.unwrap_or(""));
        for server in servers {
            if let Err(error) = self.queue_edu(&server, "m.receipt", &content, Some(&key)).await {
                tracing::warn!(%error, %server, "could not queue a receipt EDU");
            }
        }
    }

    /// An inbound `m.receipt` from `origin`: public read receipts of the origin's own users
    /// joined to the room, for events this server has in that room, stored as local ones
    /// are. Anything else is dropped.
    pub(crate) async fn receive_receipt_edu(&self, origin: &ServerName, content: &Value) -> Result<()> {
        let Some(rooms) = content.as_object() else {
            return Err(MatrixError::bad_json("m.receipt content must be an object").into());
        };
        for (room_id, by_type) in rooms {
            let Ok(room_id) = RoomId::parse(room_id) else { continue };
            if let Err(error) = self.check_server_acl(origin, &room_id).await {
                tracing::info!(%origin, %room_id, %error, "dropping receipts the room's ACL refuses");
                continue;
            }
            let Some(users) = by_type.get("m.read").and_then(Value::as_object) else { continue };
            for (user_id, receipt) in users {
                let Ok(user_id) = UserId::parse(user_id) else { continue };
                if user_id.server_name() != origin {
                    tracing::info!(%origin, %user_id, "dropping a receipt for another server's user");
                    continue;
                }
                if self.store.membership(room_id.as_str(), user_id.as_str()).await?.as_deref() != Some("join")
                {
                    tracing::info!(%origin, %user_id, %room_id, "dropping a receipt of a user not in the room");
                    continue;
                }
                let data = receipt.get("data");
                let thread_id =
                    data.and_then(|d| d.get("thread_id")).and_then(Value::as_str).filter(|t| !t.is_empty());
                let ts =
                    data.and_then(|d| d.get("ts")).and_then(Value::as_i64).unwrap_or_else(|| now_ms() as i64);
                let event_ids =
                    receipt.get("event_ids").and_then(Value::as_array).cloned().unwrap_or_default();
                for event_id in event_ids.iter().filter_map(Value::as_str) {
                    let Ok(event_id) = EventId::parse(event_id) else { continue };
                    let event = self
                        .store
                        .get_event(event_id.as_str())
                        .await?
                        .filter(|e| e.room_id == room_id.as_str());
                    let Some(event) = event else {
                        tracing::info!(%origin, %event_id, "dropping a receipt for an event unknown here");
                        continue;
                    };
                    self.store_receipt(
                        &room_id,
                        &user_id,
                        "m.read",
                        &event_id,
                        event.stream_ordering,
                        thread_id,
                        ts,
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// The stream position of an event the requester may acknowledge.
    async fn receipt_target(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<i64> {
        if self.store.membership(room_id.as_str(), requester.user_id.as_str()).await?.as_deref()
            != Some("join")
        {
            return Err(
                MatrixError::forbidden(format!("User {} not in room {room_id}", requester.user_id)).into()
            );
        }
        let event = self.store.get_event(event_id.as_str()).await?.filter(|e| e.room_id == room_id.as_str());
        event
            .map(|e| e.stream_ordering)
            .ok_or_else(|| MatrixError::not_found("Event not found in this room").into())
    }

    async fn set_fully_read(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<()> {
        self.receipt_target(requester, room_id, event_id).await?;
        self.put_account_data(
            &requester.user_id,
            Some(room_id),
            "m.fully_read",
            &json!({"event_id": event_id}),
        )
        .await
    }

    /// `POST /rooms/{roomId}/read_markers`.
    pub async fn set_read_markers(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        fully_read: Option<&EventId>,
        read: Option<&EventId>,
        read_private: Option<&EventId>,
    ) -> Result<()> {
        if let Some(event_id) = fully_read {
            self.set_fully_read(requester, room_id, event_id).await?;
        }
        if let Some(event_id) = read {
            self.set_receipt(requester, room_id, "m.read", event_id, None).await?;
        }
        if let Some(event_id) = read_private {
            self.set_receipt(requester, room_id, "m.read.private", event_id, None).await?;
        }
        Ok(())
    }
}
