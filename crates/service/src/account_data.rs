//! Account data, global and per room, and room tags (stored as `m.tag` room account data).

use myelin_core::{ErrorKind, MatrixError};
use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::auth::Requester;
use crate::{Error, Result, Services};

/// Types the server manages; clients cannot set them through the account data API.
const SERVER_MANAGED: &[&str] = &["m.fully_read", "m.push_rules"];

impl Services {
    fn check_own(&self, requester: &Requester, user_id: &UserId, what: &str) -> Result<()> {
        if requester.user_id != user_id {
            return Err(MatrixError::forbidden(format!("Cannot {what} for other users.")).into());
        }
        Ok(())
    }

    /// Stores account data and wakes the user's syncs (no checks: server-side use).
    pub async fn put_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
        content: &Value,
    ) -> Result<()> {
        let position = self.streams.account_data.allocate();
        let stream_id = position.value();
        let result = self
            .store
            .set_account_data(
                user_id.as_str(),
                room_id.map(|r| r.as_str()).unwrap_or(""),
                kind,
                &content.to_string(),
                stream_id,
            )
            .await;
        result?;
        position.finish();
        self.notifier.notify_user(user_id);
        Ok(())
    }

    /// `PUT /user/{userId}[/rooms/{roomId}]/account_data/{type}`.
    pub async fn set_account_data(
        &self,
        requester: &Requester,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
        content: Value,
    ) -> Result<()> {
        self.check_own(requester, user_id, "add account data")?;
        if SERVER_MANAGED.contains(&kind) {
            return Err(MatrixError::bad_json(format!("Cannot set {kind} through this API."))
                .with_kind(ErrorKind::MethodNotAllowed)
                .into());
        }
        if kind.is_empty() || kind.len() > 255 {
            return Err(MatrixError::invalid_param("Invalid account data type").into());
        }
        if let Some(room_id) = room_id {
            RoomId::parse(room_id.as_str()).map_err(|_| MatrixError::invalid_param("Invalid room ID"))?;
        }
        self.put_account_data(user_id, room_id, kind, &content).await
    }

    /// `GET /user/{userId}[/rooms/{roomId}]/account_data/{type}`.
    pub async fn get_account_data(
        &self,
        requester: &Requester,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
    ) -> Result<Value> {
        self.check_own(requester, user_id, "get account data")?;
        let content = self
            .store
            .get_account_data(user_id.as_str(), room_id.map(|r| r.as_str()).unwrap_or(""), kind)
            .await?
            .ok_or_else(|| MatrixError::not_found("Account data not found"))?;
        let value: Value = serde_json::from_str(&content)
            .map_err(|e| Error::internal_with("reading stored account data", e))?;
        // A deleted entry (an empty object stored) reads as absent for tags; others as stored.
        Ok(value)
    }

    /// The `m.tag` content of a room for a user.
    pub(crate) async fn tags(&self, user_id: &UserId, room_id: &RoomId) -> Result<Map<String, Value>> {
        let content = self.store.get_account_data(user_id.as_str(), room_id.as_str(), "m.tag").await?;
        let value: Value = content
            .map(|c| serde_json::from_str(&c))
            .transpose()
            .map_err(|e| Error::internal_with("reading stored tags", e))?
            .unwrap_or(json!({}));
        Ok(value.get("tags").and_then(Value::as_object).cloned().unwrap_or_default())
    }

    /// `GET /user/{userId}/rooms/{roomId}/tags`.
    pub async fn get_tags(
        &self,
        requester: &Requester,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Map<String, Value>> {
        self.check_own(requester, user_id, "get tags")?;
        self.tags(user_id, room_id).await
    }

    /// `PUT /user/{userId}/rooms/{roomId}/tags/{tag}`.
    pub async fn set_tag(
        &self,
        requester: &Requester,
        user_id: &UserId,
        room_id: &RoomId,
        tag: &str,
        content: Value,
    ) -> Result<()> {
        self.check_own(requester, user_id, "add tags")?;
        if tag.is_empty() || tag.len() > 255 {
            return Err(MatrixError::invalid_param("Invalid tag").into());
        }
        if let Some(order) = content.get("order")
            && !order.is_number()
        {
            return Err(MatrixError::bad_json("order must be a number").into());
        }
        let mut tags = self.tags(user_id, room_id).await?;
        tags.insert(tag.to_owned(), content);
        self.put_account_data(user_id, Some(room_id), "m.tag", &json!({"tags": tags})).await
    }

    /// `DELETE /user/{userId}/rooms/{roomId}/tags/{tag}`.
    pub async fn delete_tag(
        &self,
        requester: &Requester,
        user_id: &UserId,
        room_id: &RoomId,
        tag: &str,
    ) -> Result<()> {
        self.check_own(requester, user_id, "remove tags")?;
        let mut tags = self.tags(user_id, room_id).await?;
        tags.remove(tag);
        self.put_account_data(user_id, Some(room_id), "m.tag", &json!({"tags": tags})).await
    }
}
