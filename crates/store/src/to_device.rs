//! To-device messages: a durable inbox per device, ordered by the to-device stream, and the
//! transaction IDs of the requests that sent them.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Store, StoreError, Tx, params};

/// One to-device message waiting in a device's inbox.
#[derive(Clone, Debug, PartialEq)]
pub struct ToDeviceRecord {
    pub sender: String,
    pub kind: String,
    /// The content as JSON text.
    pub content: String,
    pub stream_id: i64,
}

/// A batch of to-device messages from one request: one type, one sender, one position.
#[derive(Clone, Debug)]
pub struct NewToDeviceMessages<'a> {
    pub sender: &'a str,
    /// The sending device (or, without one, what identifies the access token), scoping `txn_id`.
    pub sender_device: &'a str,
    pub txn_id: &'a str,
    pub kind: &'a str,
    /// Recipient user → device ID (or `*`: every device of the user) → content as JSON text.
    pub messages: &'a BTreeMap<String, BTreeMap<String, String>>,
    pub stream_id: i64,
}

/// The devices of `user_id` a message addressed to `device_ids` (`*`: all of them) reaches:
/// unknown and hidden devices are skipped. A device named explicitly gets its own content,
/// others the `*` content.
async fn recipient_devices(
    tx: &mut Tx<'_>,
    user_id: &str,
    by_device: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, StoreError> {
    let mut out = BTreeMap::new();
    if let Some(content) = by_device.get("*") {
        let rows = tx
            .query("SELECT device_id FROM devices WHERE user_id = $1 AND NOT hidden", params![user_id])
            .await?;
        for row in rows {
            out.insert(row.string(0)?, content.clone());
        }
    }
    for (device_id, content) in by_device {
        if device_id == "*" {
            continue;
        }
        let exists = tx
            .query_opt(
                "SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2 AND NOT hidden",
                params![user_id, device_id.as_str()],
            )
            .await?
            .is_some();
        if exists {
            out.insert(device_id.clone(), content.clone());
        }
    }
    Ok(out)
}

impl Store {
    /// The highest to-device position ever handed out.
    pub async fn max_to_device_position(&self) -> Result<i64, StoreError> {
        let row = self.db.query_opt("SELECT position FROM to_device_stream WHERE id = 1", params![]).await?;
        let recorded = row.map(|r| r.i64(0)).transpose()?.unwrap_or(0);
        let row =
            self.db.query_opt("SELECT COALESCE(MAX(stream_id), 0) FROM to_device_inbox", params![]).await?;
        let queued = row.map(|r| r.i64(0)).transpose()?.unwrap_or(0);
        Ok(recorded.max(queued))
    }

    /// Queues a request's messages in the inboxes of the (existing, visible) devices they
    /// address, in one transaction with its transaction ID. Returns the users who got at least
    /// one message, or `None` when the sending device already used this transaction ID (nothing
    /// is written then).
    pub async fn add_to_device_messages(
        &self,
        batch: &NewToDeviceMessages<'_>,
    ) -> Result<Option<BTreeSet<String>>, StoreError> {
        self.db
            .transaction(async |tx| {
                let new_txn = tx
                    .execute(
                        "INSERT INTO to_device_txns (user_id, device_id, txn_id, stream_id) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (user_id, device_id, txn_id) DO NOTHING",
                        params![batch.sender, batch.sender_device, batch.txn_id, batch.stream_id],
                    )
                    .await?;
                if new_txn == 0 {
                    return Ok(None);
                }
                tx.execute(
                    "UPDATE to_device_stream SET position = $1 WHERE id = 1 AND position < $1",
                    params![batch.stream_id],
                )
                .await?;
                let mut reached = BTreeSet::new();
                for (user_id, by_device) in batch.messages {
                    for (device_id, content) in recipient_devices(tx, user_id, by_device).await? {
                        tx.execute(
                            "INSERT INTO to_device_inbox (user_id, device_id, stream_id, sender, type, content)
                             VALUES ($1, $2, $3, $4, $5, $6)",
                            params![
                                user_id.as_str(),
                                device_id.as_str(),
                                batch.stream_id,
                                batch.sender,
                                batch.kind,
                                content.as_str()
                            ],
                        )
                        .await?;
                        reached.insert(user_id.clone());
                    }
                }
                Ok(Some(reached))
            })
            .await
    }

    /// A device's messages after position `since` up to `upto`, oldest first, at most `limit`.
    pub async fn to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        since: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<ToDeviceRecord>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT sender, type, content, stream_id FROM to_device_inbox
                 WHERE user_id = $1 AND device_id = $2 AND stream_id > $3 AND stream_id <= $4
                 ORDER BY stream_id LIMIT $5",
                params![user_id, device_id, since, upto, limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ToDeviceRecord {
                    sender: r.string(0)?,
                    kind: r.string(1)?,
                    content: r.string(2)?,
                    stream_id: r.i64(3)?,
                })
            })
            .collect()
    }

    /// Every device's messages after position `since` up to the `limit`-th position with
    /// messages (never past `upto`), oldest first, each with its recipient user and device;
    /// and the position read up to (the appservices' to-device stream, MSC2409). Reading
    /// does not remove them from the inboxes.
    pub async fn to_device_messages_in_range(
        &self,
        since: i64,
        upto: i64,
        limit: i64,
    ) -> Result<(Vec<(String, String, ToDeviceRecord)>, i64), StoreError> {
        let positions = self
            .db
            .query(
                "SELECT DISTINCT stream_id FROM to_device_inbox WHERE stream_id > $1 AND stream_id <= $2
                 ORDER BY stream_id LIMIT $3",
                params![since, upto, limit],
            )
            .await?;
        let reached = match positions.last() {
            Some(row) if positions.len() as i64 == limit => row.i64(0)?,
            _ => upto,
        };
        let rows = self
            .db
            .query(
                "SELECT user_id, device_id, sender, type, content, stream_id FROM to_device_inbox
                 WHERE stream_id > $1 AND stream_id <= $2 ORDER BY stream_id, user_id, device_id",
                params![since, reached],
            )
            .await?;
        let messages = rows
            .iter()
            .map(|r| {
                Ok((
                    r.string(0)?,
                    r.string(1)?,
                    ToDeviceRecord {
                        sender: r.string(2)?,
                        kind: r.string(3)?,
                        content: r.string(4)?,
                        stream_id: r.i64(5)?,
                    },
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((messages, reached))
    }

    /// Deletes a device's messages up to position `upto` (the device acknowledged them by
    /// syncing from there). Returns how many were deleted.
    pub async fn ack_to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        upto: i64,
    ) -> Result<u64, StoreError> {
        self.db
            .execute(
                "DELETE FROM to_device_inbox WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3",
                params![user_id, device_id, upto],
            )
            .await
    }
}
