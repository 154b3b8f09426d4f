//! Remote users' device lists this server tracks (federation): the cache behind `/keys/query`
//! for remote users, kept current by device-list EDUs. Every change is recorded on the
//! device-list stream (`device_lists_changes` with `origin` set) in the same transaction, so
//! local users sharing a room see the user in `device_lists.changed`.

use crate::{Store, StoreError, Tx, params};

/// A remote user's tracked device list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteDeviceList {
    /// The user's server's stream ID of the latest update applied.
    pub stream_id: i64,
    /// Device ID to its keys (JSON text; `None` for a device without keys).
    pub devices: Vec<(String, Option<String>)>,
    pub master_key: Option<String>,
    pub self_signing_key: Option<String>,
}

async fn record_remote_change(
    tx: &mut Tx<'_>,
    change_stream_id: i64,
    user_id: &str,
    device_id: &str,
    origin: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO device_lists_changes (stream_id, user_id, device_id, origin) VALUES ($1, $2, $3, $4)
         ON CONFLICT (stream_id, user_id, device_id) DO NOTHING",
        params![change_stream_id, user_id, device_id, origin],
    )
    .await?;
    Ok(())
}

impl Store {
    /// The tracked device list of a remote user, if it is tracked.
    pub async fn remote_device_list(&self, user_id: &str) -> Result<Option<RemoteDeviceList>, StoreError> {
        let Some(row) = self
            .db
            .query_opt(
                "SELECT stream_id, master_key, self_signing_key FROM remote_device_list_users WHERE user_id = $1",
                params![user_id],
            )
            .await?
        else {
            return Ok(None);
        };
        let mut list = RemoteDeviceList {
            stream_id: row.i64(0)?,
            devices: Vec::new(),
            master_key: row.opt_string(1)?,
            self_signing_key: row.opt_string(2)?,
        };
        let rows = self
            .db
            .query(
                "SELECT device_id, keys FROM remote_devices WHERE user_id = $1 ORDER BY device_id",
                params![user_id],
            )
            .await?;
        for row in rows {
            list.devices.push((row.string(0)?, row.opt_string(1)?));
        }
        Ok(Some(list))
    }

    /// Replaces a remote user's tracked device list as a whole (a resync), recorded at
    /// `change_stream_id` of the device-list stream.
    pub async fn replace_remote_device_list(
        &self,
        user_id: &str,
        origin: &str,
        list: &RemoteDeviceList,
        change_stream_id: i64,
    ) -> Result<(), StoreError> {
        self.db
            .transaction(async |tx| {
                tx.execute("DELETE FROM remote_devices WHERE user_id = $1", params![user_id]).await?;
                for (device_id, keys) in &list.devices {
                    tx.execute(
                        "INSERT INTO remote_devices (user_id, device_id, keys) VALUES ($1, $2, $3)",
                        params![user_id, device_id.as_str(), keys.as_deref()],
                    )
                    .await?;
                }
                tx.execute(
                    "INSERT INTO remote_device_list_users (user_id, stream_id, master_key, self_signing_key)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id,
                         master_key = excluded.master_key, self_signing_key = excluded.self_signing_key",
                    params![
                        user_id,
                        list.stream_id,
                        list.master_key.as_deref(),
                        list.self_signing_key.as_deref()
                    ],
                )
                .await?;
                record_remote_change(tx, change_stream_id, user_id, "", origin).await
            })
            .await
    }

    /// Applies one device's update (`keys` `None` with `deleted`: the device is gone) to a
    /// tracked remote user, moving its stream ID to `remote_stream_id`; recorded at
    /// `change_stream_id`.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply_remote_device_update(
        &self,
        user_id: &str,
        origin: &str,
        device_id: &str,
        keys: Option<&str>,
        deleted: bool,
        remote_stream_id: i64,
        change_stream_id: i64,
    ) -> Result<(), StoreError> {
        self.db
            .transaction(async |tx| {
                if deleted {
                    tx.execute(
                        "DELETE FROM remote_devices WHERE user_id = $1 AND device_id = $2",
                        params![user_id, device_id],
                    )
                    .await?;
                } else {
                    tx.execute(
                        "INSERT INTO remote_devices (user_id, device_id, keys) VALUES ($1, $2, $3)
                         ON CONFLICT (user_id, device_id) DO UPDATE SET keys = excluded.keys",
                        params![user_id, device_id, keys],
                    )
                    .await?;
                }
                tx.execute(
                    "UPDATE remote_device_list_users SET stream_id = $2 WHERE user_id = $1 AND stream_id < $2",
                    params![user_id, remote_stream_id],
                )
                .await?;
                record_remote_change(tx, change_stream_id, user_id, device_id, origin).await
            })
            .await
    }

    /// A remote user's new cross-signing keys (`None`: unchanged); stored when the user is
    /// tracked, and recorded at `change_stream_id` either way. Returns whether the user is
    /// tracked (an untracked user's keys are not kept: the caller fetches the whole list).
    pub async fn set_remote_signing_keys(
        &self,
        user_id: &str,
        origin: &str,
        master_key: Option<&str>,
        self_signing_key: Option<&str>,
        change_stream_id: i64,
    ) -> Result<bool, StoreError> {
        self.db
            .transaction(async |tx| {
                let updated = tx
                    .execute(
                        "UPDATE remote_device_list_users SET master_key = COALESCE($2, master_key),
                             self_signing_key = COALESCE($3, self_signing_key) WHERE user_id = $1",
                        params![user_id, master_key, self_signing_key],
                    )
                    .await?;
                record_remote_change(tx, change_stream_id, user_id, "", origin).await?;
                Ok(updated > 0)
            })
            .await
    }

    /// Stops tracking a remote user's device list (no local user shares a room with them any
    /// more: updates stop coming, so the list would go stale).
    pub async fn forget_remote_device_list(&self, user_id: &str) -> Result<(), StoreError> {
        self.db
            .transaction(async |tx| {
                tx.execute("DELETE FROM remote_devices WHERE user_id = $1", params![user_id]).await?;
                tx.execute("DELETE FROM remote_device_list_users WHERE user_id = $1", params![user_id])
                    .await?;
                Ok(())
            })
            .await
    }

    /// The device-list positions at which a local user's devices changed at `stream_id`
    /// (device IDs, '' for the user's cross-signing keys), and the user's previous position
    /// before it (for `prev_id` of the updates sent to other servers).
    pub async fn local_device_list_change_at(
        &self,
        user_id: &str,
        stream_id: i64,
    ) -> Result<(Vec<String>, Option<i64>), StoreError> {
        let rows = self
            .db
            .query(
                "SELECT device_id FROM device_lists_changes
                 WHERE stream_id = $1 AND user_id = $2 AND origin IS NULL ORDER BY device_id",
                params![stream_id, user_id],
            )
            .await?;
        let devices = rows.iter().map(|row| row.string(0)).collect::<Result<Vec<_>, _>>()?;
        let row = self
            .db
            .query_opt(
                "SELECT MAX(stream_id) FROM device_lists_changes
                 WHERE user_id = $1 AND stream_id < $2 AND origin IS NULL",
                params![user_id, stream_id],
            )
            .await?;
        let previous = row.map(|row| row.opt_i64(0)).transpose()?.flatten();
        Ok((devices, previous))
    }
}
