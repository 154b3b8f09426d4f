//! Application services' durable transaction queue (migration 0028): per appservice the
//! room-event stream position already handed over and the last transaction ID; the
//! transactions made and not acknowledged yet.

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
}

impl Store {
    /// The stream position handed over so far; an appservice seen for the first time starts
    /// at `start` (events before it are never sent, as in Synapse).
    pub async fn appservice_position(&self, appservice_id: &str, start: i64) -> Result<i64, StoreError> {
        self.db
            .execute(
                "INSERT INTO appservice_state (appservice_id, stream_position, last_txn_id) VALUES ($1, $2, 0)
                 ON CONFLICT (appservice_id) DO NOTHING",
                params![appservice_id, start],
            )
            .await?;
        let row = self
            .db
            .query_opt(
                "SELECT stream_position FROM appservice_state WHERE appservice_id = $1",
                params![appservice_id],
            )
            .await?;
        match row {
            Some(row) => row.i64(0),
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

    /// Moves the appservice's position to `position` and, when there is something to send,
    /// makes the next transaction of it, in one database transaction. Returns its ID.
    pub async fn create_appservice_txn(
        &self,
        appservice_id: &str,
        position: i64,
        event_ids: Option<&str>,
        ephemeral: &str,
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
                let txn_id = match event_ids {
                    Some(event_ids) => {
                        let txn_id = last + 1;
                        tx.execute(
                            "INSERT INTO appservice_txns (appservice_id, txn_id, event_ids, ephemeral)
                             VALUES ($1, $2, $3, $4)",
                            params![appservice_id, txn_id, event_ids, ephemeral],
                        )
                        .await?;
                        Some(txn_id)
                    }
                    None => None,
                };
                tx.execute(
                    "UPDATE appservice_state
                     SET stream_position = CASE WHEN stream_position > $2 THEN stream_position ELSE $2 END,
                         last_txn_id = $3
                     WHERE appservice_id = $1",
                    params![appservice_id, position, txn_id.unwrap_or(last)],
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
                "SELECT txn_id, event_ids, ephemeral FROM appservice_txns WHERE appservice_id = $1
                 ORDER BY txn_id LIMIT 1",
                params![appservice_id],
            )
            .await?;
        row.map(|row| {
            Ok(AppserviceTxn { txn_id: row.i64(0)?, event_ids: row.string(1)?, ephemeral: row.string(2)? })
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
