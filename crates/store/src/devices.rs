//! Devices of local users.

use crate::device_lists::{advance_device_list_stream, record_device_list_change};
use crate::{Row, Store, StoreError, now_ms, params};

#[derive(Clone, Debug, PartialEq)]
pub struct DeviceRecord {
    pub user_id: String,
    pub device_id: String,
    pub display_name: Option<String>,
    pub created_ts: i64,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
    pub last_seen_user_agent: Option<String>,
}

const DEVICE_COLUMNS: &str =
    "user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, last_seen_user_agent";

fn device_from_row(row: &Row) -> Result<DeviceRecord, StoreError> {
    Ok(DeviceRecord {
        user_id: row.string(0)?,
        device_id: row.string(1)?,
        display_name: row.opt_string(2)?,
        created_ts: row.i64(3)?,
        last_seen_ts: row.opt_i64(4)?,
        last_seen_ip: row.opt_string(5)?,
        last_seen_user_agent: row.opt_string(6)?,
    })
}

/// The tables of what belongs to one device (each with `user_id` and `device_id`), deleted with
/// it: tokens, pushers (the spec: logging out removes them), end-to-end encryption keys,
/// to-device inbox and transaction IDs, the dehydrated-device record, its sliding sync
/// connections, and the device itself last.
pub(crate) const DEVICE_TABLES: [&str; 11] = [
    "access_tokens",
    "refresh_tokens",
    "pushers",
    "e2e_device_keys",
    "e2e_one_time_keys",
    "e2e_fallback_keys",
    "to_device_inbox",
    "to_device_txns",
    "dehydrated_devices",
    "sliding_sync_positions",
    "devices",
];

impl Store {
    /// Creates the device unless the user has one with this ID; returns whether it did.
    pub(crate) async fn insert_device(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<bool, StoreError> {
        let inserted = self
            .db
            .execute(
                "INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, device_id) DO NOTHING",
                params![user_id, device_id, display_name, now_ms()],
            )
            .await?;
        Ok(inserted > 0)
    }

    /// Creates the device, or keeps an existing one (setting its display name if it has none).
    /// Returns whether it was created.
    pub async fn upsert_device(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<bool, StoreError> {
        let inserted = self.insert_device(user_id, device_id, display_name).await?;
        if !inserted && display_name.is_some() {
            self.db
                .execute(
                    "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2 AND display_name IS NULL",
                    params![user_id, device_id, display_name],
                )
                .await?;
        }
        Ok(inserted)
    }

    pub async fn get_device(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 AND device_id = $2 AND NOT hidden"
        );
        self.db.query_opt(&sql, params![user_id, device_id]).await?.as_ref().map(device_from_row).transpose()
    }

    pub async fn list_devices(&self, user_id: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 AND NOT hidden ORDER BY device_id"
        );
        self.db.query(&sql, params![user_id]).await?.iter().map(device_from_row).collect()
    }

    /// Renames a device; a new name is a device-list change at `device_list_stream_id`.
    /// Returns `false` when there is no such device.
    pub async fn set_device_display_name(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        device_list_stream_id: i64,
    ) -> Result<bool, StoreError> {
        self.db
            .transaction(async |tx| {
                let row = tx
                    .query_opt(
                        "SELECT display_name FROM devices WHERE user_id = $1 AND device_id = $2 AND NOT hidden",
                        params![user_id, device_id],
                    )
                    .await?;
                let Some(row) = row else {
                    advance_device_list_stream(tx, device_list_stream_id).await?;
                    return Ok(false);
                };
                if row.opt_string(0)?.as_deref() == display_name {
                    advance_device_list_stream(tx, device_list_stream_id).await?;
                    return Ok(true);
                }
                tx.execute(
                    "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2",
                    params![user_id, device_id, display_name],
                )
                .await?;
                record_device_list_change(tx, device_list_stream_id, user_id, device_id).await?;
                Ok(true)
            })
            .await
    }

    /// Deletes devices with their access and refresh tokens, pushers, end-to-end encryption
    /// keys, to-device inboxes and dehydrated-device records, in one transaction; each device that existed is a
    /// device-list change at `device_list_stream_id`.
    pub async fn delete_devices(
        &self,
        user_id: &str,
        device_ids: &[String],
        device_list_stream_id: i64,
    ) -> Result<(), StoreError> {
        self.delete_sliding_sync_positions_apart(user_id, Some(device_ids)).await?;
        self.db
            .transaction(async |tx| {
                let mut changed = false;
                for device_id in device_ids {
                    let existed = tx
                        .query_opt(
                            "SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2",
                            params![user_id, device_id.as_str()],
                        )
                        .await?
                        .is_some();
                    if existed {
                        record_device_list_change(tx, device_list_stream_id, user_id, device_id).await?;
                        changed = true;
                    }
                    // A device's pushers go with it (the spec: logging out removes them), and so
                    // do its end-to-end encryption keys, the cross-signing signatures of and by it and its
                    // to-device inbox.
                    for table in DEVICE_TABLES {
                        tx.execute(
                            &format!("DELETE FROM {table} WHERE user_id = $1 AND device_id = $2"),
                            params![user_id, device_id.as_str()],
                        )
                        .await?;
                    }
                    crate::cross_signing::delete_signatures_of_key(tx, user_id, device_id).await?;
                }
                if !changed {
                    advance_device_list_stream(tx, device_list_stream_id).await?;
                }
                Ok(())
            })
            .await
    }

    pub async fn touch_device(
        &self,
        user_id: &str,
        device_id: &str,
        ip: Option<&str>,
        user_agent: Option<&str>,
        ts: i64,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE devices SET last_seen_ts = $3, last_seen_ip = COALESCE($4, last_seen_ip),
                 last_seen_user_agent = COALESCE($5, last_seen_user_agent) WHERE user_id = $1 AND device_id = $2",
                params![user_id, device_id, ts, ip, user_agent],
            )
            .await?;
        Ok(())
    }

    /// Devices last seen (or, never seen, created) before `before_ts`, excluding hidden ones and
    /// dehydrated devices (never seen by design: no client uses them until it rehydrates one).
    pub async fn stale_devices(
        &self,
        before_ts: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT user_id, device_id FROM devices d WHERE NOT hidden AND COALESCE(last_seen_ts, created_ts) < $1
                 AND NOT EXISTS (SELECT 1 FROM dehydrated_devices h WHERE h.user_id = d.user_id AND h.device_id = d.device_id)
                 LIMIT $2",
                params![before_ts, limit],
            )
            .await?;
        rows.iter().map(|r| Ok((r.string(0)?, r.string(1)?))).collect()
    }
}
