//! Read receipts (`m.read`, `m.read.private`, threaded) and read markers (`m.fully_read`).

use myelin_core::MatrixError;
use myelin_store::ReceiptRecord;
use ruma::{EventId, RoomId};
use serde_json::json;

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
        let thread = thread_id.unwrap_or("");
        if let Some(existing) = self
            .store
            .user_receipt(room_id.as_str(), requester.user_id.as_str(), receipt_type, thread)
            .await?
            && existing.event_stream >= event
        {
            // Receipts only move forward.
            return Ok(());
        }
        let position = self.streams.receipts.allocate();
        let stream_id = position.value();
        let result = self
            .store
            .upsert_receipt(&ReceiptRecord {
                room_id: room_id.to_string(),
                receipt_type: receipt_type.to_owned(),
                user_id: requester.user_id.to_string(),
                thread_id: thread.to_owned(),
                event_id: event_id.to_string(),
                event_stream: event,
                ts: now_ms() as i64,
                stream_id,
            })
            .await;
        result?;
        position.finish();
        if receipt_type == "m.read" {
            self.notify_room(room_id).await;
        } else {
            self.notifier.notify_user(&requester.user_id);
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
