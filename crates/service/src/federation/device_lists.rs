//! Device lists across servers.
//!
//! **Out.** Every published change of a local user's devices or cross-signing keys (see
//! [`crate::device_lists`]) is sent to the servers with a user sharing a room with them: one
//! `m.device_list_update` per changed device (`stream_id`: the change's device-list position,
//! `prev_id`: the user's previous one, `deleted`, `keys`), or an `m.signing_key_update` with
//! the user's master and self-signing keys. They are queued without a replacing key, in order.
//!
//! **In.** An update for a user of the origin who shares a room with a local user is applied to
//! the tracked device list (`remote_device_lists` in the store) when this server has every
//! update before it (each `prev_id` at or below the tracked stream ID); an unknown user or a
//! gap makes this server fetch the whole list again (`GET /user/devices/{userId}`). Either way
//! the change goes on the device-list stream, so local users sharing a room see the user in
//! `device_lists.changed` and `/keys/changes`.

use std::collections::BTreeMap;

use myelin_core::MatrixError;
use myelin_store::RemoteDeviceList;
use ruma::{OwnedUserId, ServerName, UserId};
use serde_json::{Map, Value, json};

use crate::e2e_keys::QueriedDeviceKeys;
use crate::federation::pdu::path_segment;
use crate::{Error, Result, Services};

/// A tracked remote user's keys as `/keys/query` gives them.
pub struct CachedRemoteKeys {
    pub devices: BTreeMap<String, QueriedDeviceKeys>,
    pub master_key: Option<Map<String, Value>>,
    pub self_signing_key: Option<Map<String, Value>>,
}

fn object(text: Option<&str>) -> Option<Map<String, Value>> {
    text.and_then(|text| serde_json::from_str::<Value>(text).ok()).and_then(|value| match value {
        Value::Object(object) => Some(object),
        _ => None,
    })
}

impl Services {
    /// Queues the updates for a local user's device-list change at `stream_id` (see the
    /// module's doc). Failures are logged: the change itself is committed.
    pub(crate) async fn queue_device_list_edus(&self, user_id: &UserId, stream_id: i64) {
        if user_id.server_name().as_str() != self.server_name() {
            return;
        }
        if let Err(error) = self.try_queue_device_list_edus(user_id, stream_id).await {
            tracing::warn!(%error, %user_id, "could not queue device-list updates for other servers");
        }
    }

    async fn try_queue_device_list_edus(&self, user_id: &UserId, stream_id: i64) -> Result<()> {
        let mut servers: Vec<String> = self
            .store
            .users_sharing_rooms(user_id.as_str())
            .await?
            .iter()
            .filter_map(|user| UserId::parse(user).ok())
            .map(|user| user.server_name().to_string())
            .filter(|server| self.may_send_to(server))
            .collect();
        servers.sort_unstable();
        servers.dedup();
        if servers.is_empty() {
            return Ok(());
        }
        let (devices, previous) = self.store.local_device_list_change_at(user_id.as_str(), stream_id).await?;
        let requested = BTreeMap::from([(user_id.to_owned(), Vec::new())]);
        let mut keys = self.query_local_keys(None, &requested).await?;
        let mut device_keys = keys.device_keys.remove(user_id).unwrap_or_default();
        let existing: Vec<String> =
            self.store.list_devices(user_id.as_str()).await?.into_iter().map(|d| d.device_id).collect();
        let prev_id: Vec<i64> = previous.into_iter().collect();
        let mut edus = Vec::new();
        for device_id in devices {
            if device_id.is_empty() {
                let mut content = json!({"user_id": user_id});
                if let Some(master) = keys.cross_signing.master_keys.remove(user_id) {
                    content["master_key"] = Value::Object(master);
                }
                if let Some(self_signing) = keys.cross_signing.self_signing_keys.remove(user_id) {
                    content["self_signing_key"] = Value::Object(self_signing);
                }
                edus.push(("m.signing_key_update", content));
                continue;
            }
            let mut content = json!({
                "user_id": user_id,
                "device_id": device_id,
                "stream_id": stream_id,
                "prev_id": prev_id,
                "deleted": !existing.contains(&device_id),
            });
            if let Some(queried) = device_keys.remove(&device_id) {
                content["keys"] = Value::Object(queried.keys);
            }
            edus.push(("m.device_list_update", content));
        }
        for server in &servers {
            for (edu_type, content) in &edus {
                self.queue_edu(server, edu_type, content, None).await?;
            }
        }
        Ok(())
    }

    /// Whether a local user shares a room with `user_id`.
    async fn shares_room_with_local_user(&self, user_id: &UserId) -> Result<bool> {
        let sharing = self.store.users_sharing_rooms(user_id.as_str()).await?;
        Ok(sharing.iter().any(|user| {
            UserId::parse(user).is_ok_and(|user| user.server_name().as_str() == self.server_name())
        }))
    }

    /// An inbound `m.device_list_update` (see the module's doc).
    pub(crate) async fn receive_device_list_edu(&self, origin: &ServerName, content: &Value) -> Result<()> {
        let field = |name: &str| content.get(name).and_then(Value::as_str);
        let (Some(user_id), Some(device_id)) = (field("user_id"), field("device_id")) else {
            return Err(MatrixError::bad_json("m.device_list_update needs user_id and device_id").into());
        };
        let Ok(user_id) = UserId::parse(user_id) else {
            return Err(MatrixError::bad_json("m.device_list_update has a bad user_id").into());
        };
        if user_id.server_name() != origin {
            tracing::info!(%origin, %user_id, "dropping a device-list update for another server's user");
            return Ok(());
        }
        if !self.shares_room_with_local_user(&user_id).await? {
            tracing::debug!(%origin, %user_id, "dropping a device-list update of a user sharing no room here");
            // Updates stop coming for such a user: what is tracked would go stale.
            self.store.forget_remote_device_list(user_id.as_str()).await?;
            return Ok(());
        }
        let Some(stream_id) = content.get("stream_id").and_then(Value::as_i64) else {
            return Err(MatrixError::bad_json("m.device_list_update needs a stream_id").into());
        };
        let prev_ids: Vec<i64> = content
            .get("prev_id")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        let deleted = content.get("deleted").and_then(Value::as_bool).unwrap_or(false);
        let keys = content.get("keys").and_then(Value::as_object).filter(|keys| {
            keys.get("user_id").and_then(Value::as_str) == Some(user_id.as_str())
                && keys.get("device_id").and_then(Value::as_str) == Some(device_id)
        });
        let tracked = self.store.remote_device_list(user_id.as_str()).await?;
        match tracked {
            Some(tracked) if prev_ids.iter().all(|prev| *prev <= tracked.stream_id) => {
                if stream_id <= tracked.stream_id {
                    return Ok(());
                }
                let keys = keys.map(|keys| Value::Object(keys.clone()).to_string());
                let position = self.streams.device_lists.allocate();
                self.store
                    .apply_remote_device_update(
                        user_id.as_str(),
                        origin.as_str(),
                        device_id,
                        keys.as_deref(),
                        deleted,
                        stream_id,
                        position.value(),
                    )
                    .await?;
                self.publish_device_list_change(position, &user_id).await;
                Ok(())
            }
            _ => self.resync_remote_device_list(&user_id).await,
        }
    }

    /// Fetches a remote user's whole device list from their server and tracks it.
    pub(crate) async fn resync_remote_device_list(&self, user_id: &UserId) -> Result<()> {
        let path = format!("/_matrix/federation/v1/user/devices/{}", path_segment(user_id.as_str()));
        let answer: Value =
            self.federation.client.get_json(user_id.server_name(), &path).await.map_err(Error::internal)?;
        let Some(stream_id) = answer.get("stream_id").and_then(Value::as_i64) else {
            return Err(Error::internal(format!(
                "{} sent a device list without a stream_id",
                user_id.server_name()
            )));
        };
        let mut list = RemoteDeviceList { stream_id, ..Default::default() };
        for device in answer.get("devices").and_then(Value::as_array).into_iter().flatten() {
            let Some(device_id) = device.get("device_id").and_then(Value::as_str) else { continue };
            let keys = device.get("keys").and_then(Value::as_object).filter(|keys| {
                keys.get("user_id").and_then(Value::as_str) == Some(user_id.as_str())
                    && keys.get("device_id").and_then(Value::as_str) == Some(device_id)
            });
            list.devices
                .push((device_id.to_owned(), keys.map(|keys| Value::Object(keys.clone()).to_string())));
        }
        let key_of = |field: &str| {
            answer
                .get(field)
                .and_then(Value::as_object)
                .filter(|key| key.get("user_id").and_then(Value::as_str) == Some(user_id.as_str()))
                .map(|key| Value::Object(key.clone()).to_string())
        };
        list.master_key = key_of("master_key");
        list.self_signing_key = key_of("self_signing_key");
        let position = self.streams.device_lists.allocate();
        self.store
            .replace_remote_device_list(
                user_id.as_str(),
                user_id.server_name().as_str(),
                &list,
                position.value(),
            )
            .await?;
        self.publish_device_list_change(position, user_id).await;
        Ok(())
    }

    /// An inbound `m.signing_key_update`: a user of the origin sharing a room here has new
    /// cross-signing keys.
    pub(crate) async fn receive_signing_key_edu(&self, origin: &ServerName, content: &Value) -> Result<()> {
        let Some(user_id) =
            content.get("user_id").and_then(Value::as_str).and_then(|u| UserId::parse(u).ok())
        else {
            return Err(MatrixError::bad_json("m.signing_key_update needs a user_id").into());
        };
        if user_id.server_name() != origin {
            tracing::info!(%origin, %user_id, "dropping a signing-key update for another server's user");
            return Ok(());
        }
        if !self.shares_room_with_local_user(&user_id).await? {
            return Ok(());
        }
        let key_of = |field: &str| {
            content
                .get(field)
                .and_then(Value::as_object)
                .filter(|key| key.get("user_id").and_then(Value::as_str) == Some(user_id.as_str()))
                .map(|key| Value::Object(key.clone()).to_string())
        };
        let (master, self_signing) = (key_of("master_key"), key_of("self_signing_key"));
        let position = self.streams.device_lists.allocate();
        let tracked = self
            .store
            .set_remote_signing_keys(
                user_id.as_str(),
                origin.as_str(),
                master.as_deref(),
                self_signing.as_deref(),
                position.value(),
            )
            .await?;
        self.publish_device_list_change(position, &user_id).await;
        if !tracked {
            // Not tracked yet (the update came before any device-list update was applied): the
            // keys would be lost, so the whole list is fetched and tracked from now on.
            self.resync_remote_device_list(&user_id).await?;
        }
        Ok(())
    }

    /// The keys of a tracked remote user (`device_ids` empty: all devices), or `None` when the
    /// user is not tracked (their server must be asked).
    pub(crate) async fn cached_remote_keys(
        &self,
        user_id: &OwnedUserId,
        device_ids: &[String],
    ) -> Result<Option<CachedRemoteKeys>> {
        let Some(list) = self.store.remote_device_list(user_id.as_str()).await? else { return Ok(None) };
        let mut devices = BTreeMap::new();
        for (device_id, keys) in list.devices {
            if !device_ids.is_empty() && !device_ids.contains(&device_id) {
                continue;
            }
            if let Some(keys) = object(keys.as_deref()) {
                devices.insert(device_id, QueriedDeviceKeys { keys, display_name: None });
            }
        }
        Ok(Some(CachedRemoteKeys {
            devices,
            master_key: object(list.master_key.as_deref()),
            self_signing_key: object(list.self_signing_key.as_deref()),
        }))
    }
}
