//! Application services' durable transaction queue (migrations 0029, 0030): per appservice the
//! positions already handed over in the room-event, receipt, presence, to-device and
//! device-list streams, and the last transaction ID; the transactions made and not
//! acknowledged yet.

use crate::events::{EVENT_COLUMNS, StoredEvent, VISIBLE, event_from_row};
use crate::{Store, StoreError, params};

/// A transaction waiting to be acknowledged by its appservice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppserviceTxn {
    pub txn_id: i64,
    /// JSON array of event IDs, in stream order.
    pub event_ids: String,
    /// JSON array of ephemeral events.
    pub ephemeral: String,
    /// JSON array of to-device messages (MSC2409).
    pub to_device: String,
    /// JSON `{changed, left}` device-list summary (MSC3202), if any.
    pub device_lists: Option<String>,
}

/// What a new transaction holds (JSON texts, as [`AppserviceTxn`]).
#[derive(Clone, Copy, Debug)]
pub struct NewAppserviceTxn<'a> {
    pub event_ids: &'a str,
    pub ephemeral: &'a str,
    pub to_device: &'a str,
    pub device_lists: Option<&'a str>,
}

/// Positions in the streams an appservice's transactions follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppserviceStreams {
    pub events: i64,
    pub receipts: i64,
    pub presence: i64,
    pub to_device: i64,
    pub device_lists: i64,
}

const POSITION_COLUMNS: &str =
    "stream_position, receipt_position, presence_position, to_device_position, device_list_position";

impl Store {
    /// The positions handed over so far; an appservice (or a stream of it) seen for the first
    /// time starts at `start` (nothing before it is ever sent, as in Synapse).
    pub async fn appservice_positions(
        &self,
        appservice_id: &str,
        start: AppserviceStreams,
    ) -> Result<AppserviceStreams, StoreError> {
        let sql = format!("SELECT {POSITION_COLUMNS} FROM appservice_state WHERE appservice_id = $1");
        if let Some(row) = self.db.query_opt(&sql, params![appservice_id]).await?
            && (1..5).all(|i| row.opt_i64(i).is_ok_and(|v| v.is_some()))
        {
            return Ok(AppserviceStreams {
                events: row.i64(0)?,
                receipts: row.i64(1)?,
                presence: row.i64(2)?,
                to_device: row.i64(3)?,
                device_lists: row.i64(4)?,
            });
        }
        let s = start;
        self.db
            .execute(
                &format!(
                    "INSERT INTO appservice_state (appservice_id, last_txn_id, {POSITION_COLUMNS})
                     VALUES ($1, 0, $2, $3, $4, $5, $6) ON CONFLICT (appservice_id) DO UPDATE SET
                     receipt_position = COALESCE(appservice_state.receipt_position, $3),
                     presence_position = COALESCE(appservice_state.presence_position, $4),
                     to_device_position = COALESCE(appservice_state.to_device_position, $5),
                     device_list_position = COALESCE(appservice_state.device_list_position, $6)"
                ),
                params![appservice_id, s.events, s.receipts, s.presence, s.to_device, s.device_lists],
            )
            .await?;
        let row = self.db.query_opt(&sql, params![appservice_id]).await?;
        match row {
            Some(row) => Ok(AppserviceStreams {
                events: row.i64(0)?,
                receipts: row.i64(1)?,
                presence: row.i64(2)?,
                to_device: row.i64(3)?,
                device_lists: row.i64(4)?,
            }),
            None => Ok(start),
        }
    }

    /// Events clients may see with a stream position in `(after, up_to]`, in stream order.
    pub async fn events_in_stream_range(
        &self,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2 AND {VISIBLE}
             ORDER BY stream_ordering LIMIT $3"
        );
        self.db.query(&sql, params![after, up_to, limit]).await?.iter().map(event_from_row).collect()
    }

    /// Moves the appservice's positions to `positions` (never backwards) and, when there is
    /// something to send, makes the next transaction of it, in one database transaction.
    /// Returns its ID.
    pub async fn create_appservice_txn(
        &self,
        appservice_id: &str,
        positions: AppserviceStreams,
        txn: Option<NewAppserviceTxn<'_>>,
    ) -> Result<Option<i64>, StoreError> {
        self.db
            .transaction(async |tx| {
                let last = tx
                    .query_opt(
                        "SELECT last_txn_id FROM appservice_state WHERE appservice_id = $1",
                        params![appservice_id],
                    )
                    .await?
                    .map(|row| row.i64(0))
                    .transpose()?
                    .unwrap_or(0);
                let txn_id = match txn {
                    Some(txn) => {
                        let txn_id = last + 1;
                        tx.execute(
                            "INSERT INTO appservice_txns
                             (appservice_id, txn_id, event_ids, ephemeral, to_device, device_lists)
                             VALUES ($1, $2, $3, $4, $5, $6)",
                            params![
                                appservice_id,
                                txn_id,
                                txn.event_ids,
                                txn.ephemeral,
                                txn.to_device,
                                txn.device_lists
                            ],
                        )
                        .await?;
                        Some(txn_id)
                    }
                    None => None,
                };
                let p = positions;
                tx.execute(
                    "UPDATE appservice_state SET
                     stream_position = CASE WHEN stream_position > $2 THEN stream_position ELSE $2 END,
                     receipt_position = CASE WHEN receipt_position > $3 THEN receipt_position ELSE $3 END,
                     presence_position = CASE WHEN presence_position > $4 THEN presence_position ELSE $4 END,
                     to_device_position = CASE WHEN to_device_position > $5 THEN to_device_position ELSE $5 END,
                     device_list_position =
                         CASE WHEN device_list_position > $6 THEN device_list_position ELSE $6 END,
                     last_txn_id = $7
                     WHERE appservice_id = $1",
                    params![
                        appservice_id,
                        p.events,
                        p.receipts,
                        p.presence,
                        p.to_device,
                        p.device_lists,
                        txn_id.unwrap_or(last)
                    ],
                )
                .await?;
                Ok(txn_id)
            })
            .await
    }

    /// The oldest transaction of an appservice not acknowledged yet.
    pub async fn oldest_appservice_txn(
        &self,
        appservice_id: &str,
    ) -> Result<Option<AppserviceTxn>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT txn_id, event_ids, ephemeral, to_device, device_lists FROM appservice_txns
                 WHERE appservice_id = $1 ORDER BY txn_id LIMIT 1",
                params![appservice_id],
            )
            .await?;
        row.map(|row| {
            Ok(AppserviceTxn {
                txn_id: row.i64(0)?,
                event_ids: row.string(1)?,
                ephemeral: row.string(2)?,
                to_device: row.string(3)?,
                device_lists: row.opt_string(4)?,
            })
        })
        .transpose()
    }

    /// Forgets an acknowledged transaction.
    pub async fn delete_appservice_txn(&self, appservice_id: &str, txn_id: i64) -> Result<(), StoreError> {
        self.db
            .execute(
                "DELETE FROM appservice_txns WHERE appservice_id = $1 AND txn_id = $2",
                params![appservice_id, txn_id],
            )
            .await?;
        Ok(())
    }
}
