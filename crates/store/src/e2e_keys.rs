//! End-to-end encryption keys of local devices: identity keys, one-time keys, fallback keys.
//! Keys are stored as the JSON text the client uploaded; the service parses and checks them.

use std::collections::BTreeMap;

use crate::device_lists::record_device_list_change;
use crate::{Dialect, Row, Store, StoreError, Value, now_ms, params};

/// A device's one-time key counts by algorithm and unused fallback key algorithms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceKeyCounts {
    pub user_id: String,
    pub device_id: String,
    pub one_time_keys: BTreeMap<String, i64>,
    pub unused_fallback_keys: Vec<String>,
}

/// A device's uploaded identity keys, with the device's display name.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceKeysRecord {
    pub device_id: String,
    pub key_json: String,
    pub display_name: Option<String>,
}

/// One one-time or fallback key: `algorithm:key_id` and its JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct OneTimeKeyRecord {
    pub algorithm: String,
    pub key_id: String,
    pub key_json: String,
}

/// What one `/keys/upload` stores (see [`Store::upload_keys`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct KeysUploadRecord<'a> {
    /// New or changed identity keys, with their device-list stream position.
    pub device_keys: Option<(&'a str, i64)>,
    pub one_time_keys: &'a [OneTimeKeyRecord],
    pub fallback_keys: &'a [OneTimeKeyRecord],
}

/// How many values one `IN (...)` list of a batched read takes (well under both engines'
/// limits on bound parameters).
pub(crate) const IN_LIST_CHUNK: usize = 500;

/// `$first, ..., $(first + n - 1)`: the placeholders of an `IN (...)` list after other parameters.
pub(crate) fn placeholders_from(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

fn one_time_key_from_row(row: &Row) -> Result<OneTimeKeyRecord, StoreError> {
    Ok(OneTimeKeyRecord { algorithm: row.string(0)?, key_id: row.string(1)?, key_json: row.string(2)? })
}

impl Store {
    /// Stores one `/keys/upload` in one transaction: the device's identity keys (new or
    /// changed ones only, a device-list change at their stream position), one-time keys (only
    /// IDs not stored yet: one stored meanwhile by a concurrent upload fails the whole upload
    /// with a unique violation, for the caller to check again) and fallback keys (each
    /// replacing the device's previous one of its algorithm).
    pub async fn upload_keys(
        &self,
        user_id: &str,
        device_id: &str,
        upload: KeysUploadRecord<'_>,
    ) -> Result<(), StoreError> {
        let ts = now_ms();
        self.db
            .transaction(async |tx| {
                if let Some((key_json, device_list_stream_id)) = upload.device_keys {
                    tx.execute(
                        "INSERT INTO e2e_device_keys (user_id, device_id, key_json, ts) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json, ts = excluded.ts",
                        params![user_id, device_id, key_json, ts],
                    )
                    .await?;
                    record_device_list_change(tx, device_list_stream_id, user_id, device_id).await?;
                }
                for key in upload.one_time_keys {
                    tx.execute(
                        "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json, ts)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                        params![
                            user_id,
                            device_id,
                            key.algorithm.as_str(),
                            key.key_id.as_str(),
                            key.key_json.as_str(),
                            ts
                        ],
                    )
                    .await?;
                }
                for key in upload.fallback_keys {
                    // The same key again keeps whether it was used.
                    tx.execute(
                        "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
                         VALUES ($1, $2, $3, $4, $5, FALSE)
                         ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
                         SET key_id = excluded.key_id, key_json = excluded.key_json, used = FALSE
                         WHERE e2e_fallback_keys.key_id <> excluded.key_id
                            OR e2e_fallback_keys.key_json <> excluded.key_json",
                        params![
                            user_id,
                            device_id,
                            key.algorithm.as_str(),
                            key.key_id.as_str(),
                            key.key_json.as_str()
                        ],
                    )
                    .await?;
                }
                Ok(())
            })
            .await
    }

    /// The identity keys a device uploaded, if any.
    pub async fn device_keys(&self, user_id: &str, device_id: &str) -> Result<Option<String>, StoreError> {
        self.db
            .query_opt(
                "SELECT key_json FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2",
                params![user_id, device_id],
            )
            .await?
            .map(|row| row.string(0))
            .transpose()
    }

    /// Every visible device's keys of each of `user_ids`, with the user ID, ordered by user and
    /// device: `/keys/query` reads all its users at once (in chunks of [`IN_LIST_CHUNK`]).
    pub async fn device_keys_of_users(
        &self,
        user_ids: &[&str],
    ) -> Result<Vec<(String, DeviceKeysRecord)>, StoreError> {
        let mut found = Vec::new();
        for chunk in user_ids.chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "SELECT k.user_id, k.device_id, k.key_json, d.display_name FROM e2e_device_keys k
                 JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
                 WHERE k.user_id IN ({}) AND NOT d.hidden
                 ORDER BY k.user_id, k.device_id",
                placeholders_from(1, chunk.len())
            );
            let params = chunk.iter().map(|id| Value::from(*id)).collect();
            for row in self.db.query(&sql, params).await?.iter() {
                found.push((
                    row.string(0)?,
                    DeviceKeysRecord {
                        device_id: row.string(1)?,
                        key_json: row.string(2)?,
                        display_name: row.opt_string(3)?,
                    },
                ));
            }
        }
        Ok(found)
    }

    /// The device's one-time keys among `key_ids` (any algorithm).
    pub async fn one_time_keys_by_id(
        &self,
        user_id: &str,
        device_id: &str,
        key_ids: &[String],
    ) -> Result<Vec<OneTimeKeyRecord>, StoreError> {
        if key_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut params = params![user_id, device_id];
        params.extend(key_ids.iter().map(|id| Value::from(id.as_str())));
        let list = placeholders_from(3, key_ids.len());
        let sql = format!(
            "SELECT algorithm, key_id, key_json FROM e2e_one_time_keys
             WHERE user_id = $1 AND device_id = $2 AND key_id IN ({list})"
        );
        self.db.query(&sql, params).await?.iter().map(one_time_key_from_row).collect()
    }

    /// How many one-time keys the device has left, by algorithm.
    pub async fn count_one_time_keys(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        self.db
            .query(
                "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2
                 GROUP BY algorithm",
                params![user_id, device_id],
            )
            .await?
            .iter()
            .map(|row| Ok((row.string(0)?, row.i64(1)?)))
            .collect()
    }

    /// The one-time key counts (by algorithm) and unused fallback key algorithms of every
    /// visible device of each of `user_ids`, by user and device: three queries per chunk of
    /// [`IN_LIST_CHUNK`] users, whatever their number of devices.
    pub async fn key_counts_of_users(&self, user_ids: &[&str]) -> Result<Vec<DeviceKeyCounts>, StoreError> {
        let mut found: BTreeMap<(String, String), DeviceKeyCounts> = BTreeMap::new();
        for chunk in user_ids.chunks(IN_LIST_CHUNK) {
            let list = placeholders_from(1, chunk.len());
            let params: Vec<Value> = chunk.iter().map(|id| Value::from(*id)).collect();
            let sql =
                format!("SELECT user_id, device_id FROM devices WHERE user_id IN ({list}) AND NOT hidden");
            for row in self.db.query(&sql, params.clone()).await?.iter() {
                let (user_id, device_id) = (row.string(0)?, row.string(1)?);
                found.insert(
                    (user_id.clone(), device_id.clone()),
                    DeviceKeyCounts { user_id, device_id, ..DeviceKeyCounts::default() },
                );
            }
            let sql = format!(
                "SELECT user_id, device_id, algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id IN ({list})
                 GROUP BY user_id, device_id, algorithm"
            );
            for row in self.db.query(&sql, params.clone()).await?.iter() {
                if let Some(device) = found.get_mut(&(row.string(0)?, row.string(1)?)) {
                    device.one_time_keys.insert(row.string(2)?, row.i64(3)?);
                }
            }
            let sql = format!(
                "SELECT user_id, device_id, algorithm FROM e2e_fallback_keys WHERE user_id IN ({list}) AND NOT used
                 ORDER BY algorithm"
            );
            for row in self.db.query(&sql, params).await?.iter() {
                if let Some(device) = found.get_mut(&(row.string(0)?, row.string(1)?)) {
                    device.unused_fallback_keys.push(row.string(2)?);
                }
            }
        }
        Ok(found.into_values().collect())
    }

    /// Takes the device's oldest one-time key of `algorithm`: deleted and returned in one
    /// statement, so that concurrent claims never get the same key. On PostgreSQL a key another
    /// claim is taking is skipped (`SKIP LOCKED`) rather than waited for; SQLite has one writer.
    pub async fn claim_one_time_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<OneTimeKeyRecord>, StoreError> {
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "DELETE FROM e2e_one_time_keys
             WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = (
                 SELECT key_id FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
                 ORDER BY ts, key_id LIMIT 1{lock})
             RETURNING algorithm, key_id, key_json"
        );
        let rows = self.db.execute_returning(&sql, params![user_id, device_id, algorithm]).await?;
        rows.first().map(one_time_key_from_row).transpose()
    }

    /// Hands out the device's fallback key of `algorithm`, marking it used.
    pub async fn claim_fallback_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<OneTimeKeyRecord>, StoreError> {
        let rows = self
            .db
            .execute_returning(
                "UPDATE e2e_fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
                 RETURNING algorithm, key_id, key_json",
                params![user_id, device_id, algorithm],
            )
            .await?;
        rows.first().map(one_time_key_from_row).transpose()
    }

    /// The algorithms of the device's fallback keys not handed out yet.
    pub async fn unused_fallback_key_algorithms(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.db
            .query(
                "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used
                 ORDER BY algorithm",
                params![user_id, device_id],
            )
            .await?
            .iter()
            .map(|row| row.string(0))
            .collect()
    }
}
