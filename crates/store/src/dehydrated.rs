//! Dehydrated devices (MSC3814): which of a user's devices is the dehydrated one, and its data.
//! The device itself (its keys, its to-device inbox) is an ordinary device; deleting it with
//! [`Store::delete_devices`] removes its record here too.

use crate::{Dialect, Store, StoreError, params};

/// A user's dehydrated device.
#[derive(Clone, Debug, PartialEq)]
pub struct DehydratedDeviceRecord {
    pub device_id: String,
    /// The client's `device_data`, as JSON text.
    pub device_data: String,
}

impl Store {
    /// The user's dehydrated device, if any.
    pub async fn dehydrated_device(
        &self,
        user_id: &str,
    ) -> Result<Option<DehydratedDeviceRecord>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = $1",
                params![user_id],
            )
            .await?;
        row.map(|row| Ok(DehydratedDeviceRecord { device_id: row.string(0)?, device_data: row.string(1)? }))
            .transpose()
    }

    /// Creates a device that has no access token (the device a dehydrated device is). Returns
    /// `false`, changing nothing, when the user already has a device with this ID.
    pub async fn create_tokenless_device(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.insert_device(user_id, device_id, display_name).await
    }

    /// Makes `device_id` the user's dehydrated device; returns the previous one's ID (which the
    /// caller deletes). Concurrent calls for one user are serialised (on PostgreSQL by locking
    /// the user's row, on SQLite by its single writer), so each previous device is returned to
    /// exactly one of them.
    pub async fn set_dehydrated_device(
        &self,
        user_id: &str,
        device_id: &str,
        device_data: &str,
    ) -> Result<Option<String>, StoreError> {
        let dialect = self.dialect();
        self.db
            .transaction(async |tx| {
                if dialect == Dialect::Postgres {
                    tx.query("SELECT 1 FROM users WHERE user_id = $1 FOR UPDATE", params![user_id]).await?;
                }
                let previous = tx
                    .query_opt(
                        "SELECT device_id FROM dehydrated_devices WHERE user_id = $1",
                        params![user_id],
                    )
                    .await?
                    .map(|row| row.string(0))
                    .transpose()?;
                tx.execute(
                    "INSERT INTO dehydrated_devices (user_id, device_id, device_data) VALUES ($1, $2, $3)
                     ON CONFLICT (user_id) DO UPDATE SET device_id = $2, device_data = $3",
                    params![user_id, device_id, device_data],
                )
                .await?;
                Ok(previous.filter(|previous| previous != device_id))
            })
            .await
    }
}
