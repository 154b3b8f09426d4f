//! Devices: listing, renaming, deleting (with their tokens).

use myelin_core::MatrixError;
use myelin_store::DeviceRecord;
use ruma::UserId;

use crate::auth::Requester;
use crate::{Result, Services};

/// Longest device display name accepted (Synapse's limit).
pub const MAX_DEVICE_DISPLAY_NAME_LEN: usize = 100;

impl Services {
    pub async fn list_devices(&self, user_id: &UserId) -> Result<Vec<DeviceRecord>> {
        Ok(self.store.list_devices(user_id.as_str()).await?)
    }

    pub async fn get_device(&self, user_id: &UserId, device_id: &str) -> Result<DeviceRecord> {
        self.store
            .get_device(user_id.as_str(), device_id)
            .await?
            .ok_or_else(|| MatrixError::not_found("Device not found").into())
    }

    pub async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<()> {
        if display_name.is_some_and(|name| name.chars().count() > MAX_DEVICE_DISPLAY_NAME_LEN) {
            return Err(MatrixError::too_large(format!(
                "Device display name is too long (max {MAX_DEVICE_DISPLAY_NAME_LEN})"
            ))
            .into());
        }
        let position = self.streams.device_lists.allocate();
        let found = self
            .store
            .set_device_display_name(user_id.as_str(), device_id, display_name, position.value())
            .await?;
        self.publish_device_list_change(position, user_id).await;
        if !found {
            return Err(MatrixError::not_found("Device not found").into());
        }
        Ok(())
    }

    /// `PUT /devices/{deviceId}`: renames the device; an appservice (MSC4190) creates it for
    /// the user it acts for when it does not exist. Returns whether it was created.
    pub async fn put_device(
        &self,
        requester: &Requester,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<bool> {
        let user_id = &requester.user_id;
        let created = requester.appservice_id.is_some()
            && !device_id.is_empty()
            && device_id.len() <= crate::sessions::MAX_DEVICE_ID_LEN
            && display_name.is_none_or(|name| name.chars().count() <= MAX_DEVICE_DISPLAY_NAME_LEN)
            && self.store.upsert_device(user_id.as_str(), device_id, display_name).await?;
        // The rename is the device-list change of a new device too.
        self.rename_device(user_id, device_id, display_name).await?;
        Ok(created)
    }

    /// Deletes devices with every token they hold and their to-device inboxes (a device-list
    /// change for those sharing a room with the user); unknown device IDs are ignored, as the
    /// spec allows.
    pub async fn delete_devices(&self, user_id: &UserId, device_ids: &[String]) -> Result<()> {
        let hashes = self.store.access_tokens_of_devices(user_id.as_str(), device_ids).await?;
        self.forget_sliding_sync_connections(user_id.as_str(), device_ids).await;
        let position = self.streams.device_lists.allocate();
        self.store.delete_devices(user_id.as_str(), device_ids, position.value()).await?;
        self.publish_device_list_change(position, user_id).await;
        self.auth_cache.evict(&hashes);
        Ok(())
    }

    /// Deletes devices not seen for `delete_stale_devices_after`; returns how many.
    pub async fn delete_stale_devices(&self) -> Result<usize> {
        let Some(after) = self.config.registration.delete_stale_devices_after else { return Ok(0) };
        let before = crate::util::now_ms().saturating_sub(after.0) as i64;
        let mut deleted = 0;
        loop {
            let stale = self.store.stale_devices(before, 500).await?;
            if stale.is_empty() {
                return Ok(deleted);
            }
            for (user_id, device_id) in stale {
                let Ok(user_id) = UserId::parse(&user_id) else { continue };
                self.delete_devices(&user_id, &[device_id]).await?;
                deleted += 1;
            }
        }
    }
}
