//! Reading events back: by ID, by transaction, in stream order, near a timestamp.

use std::collections::HashMap;

use super::{EVENT_COLUMNS, EventFilterSql, StoredEvent, TxnRecord, VISIBLE, event_from_row};
use crate::{Store, StoreError, params};

impl Store {
    pub async fn get_event(&self, event_id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1");
        self.db.query_opt(&sql, params![event_id]).await?.as_ref().map(event_from_row).transpose()
    }

    /// Several events, in no particular order (missing ones are left out).
    pub async fn get_events(&self, event_ids: &[String]) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out = Vec::with_capacity(event_ids.len());
        for chunk in event_ids.chunks(200) {
            let placeholders = crate::placeholder_list(chunk.len());
            let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({})", placeholders);
            let params = chunk.iter().map(|id| crate::Value::from(id.as_str())).collect();
            for row in self.db.query(&sql, params).await? {
                out.push(event_from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// The event a transaction was used for.
    pub async fn event_for_txn(&self, txn: &TxnRecord) -> Result<Option<String>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT event_id FROM event_txns WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4",
                params![txn.user_id.as_str(), txn.device_id.as_str(), txn.scope.as_str(), txn.txn_id.as_str()],
            )
            .await?;
        row.map(|r| r.string(0)).transpose()
    }

    /// The transaction the sender used for an event, for `unsigned.transaction_id`.
    pub async fn txn_for_event(&self, event_id: &str) -> Result<Option<TxnRecord>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT user_id, device_id, scope, txn_id FROM event_txns WHERE event_id = $1",
                params![event_id],
            )
            .await?;
        row.map(|r| {
            Ok(TxnRecord {
                user_id: r.string(0)?,
                device_id: r.string(1)?,
                scope: r.string(2)?,
                txn_id: r.string(3)?,
            })
        })
        .transpose()
    }

    /// The highest stream position persisted.
    pub async fn max_stream_ordering(&self) -> Result<i64, StoreError> {
        let row =
            self.db.query_opt("SELECT COALESCE(MAX(stream_ordering), 0) FROM events", params![]).await?;
        Ok(row.map(|r| r.i64(0)).transpose()?.unwrap_or(0))
    }

    pub async fn forward_extremities(&self, room_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .db
            .query("SELECT event_id FROM forward_extremities WHERE room_id = $1", params![room_id])
            .await?;
        rows.iter().map(|r| r.string(0)).collect()
    }

    /// The newest event of a room (highest stream position).
    pub async fn latest_event(&self, room_id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 ORDER BY stream_ordering DESC LIMIT 1"
        );
        self.db.query_opt(&sql, params![room_id]).await?.as_ref().map(event_from_row).transpose()
    }

    /// Events of a room in stream order, for pagination: strictly after (`forward`) or before
    /// `from`, optionally bounded by `to`, filtered by `filter`.
    pub async fn room_events(
        &self,
        room_id: &str,
        from: i64,
        to: Option<i64>,
        forward: bool,
        limit: i64,
        filter: &EventFilterSql,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut params = params![room_id, from];
        let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND {VISIBLE}");
        if forward {
            sql.push_str(" AND stream_ordering > $2");
        } else {
            sql.push_str(" AND stream_ordering < $2");
        }
        if let Some(to) = to {
            params.push(to.into());
            let n = params.len();
            if forward {
                sql.push_str(&format!(" AND stream_ordering <= ${n}"));
            } else {
                sql.push_str(&format!(" AND stream_ordering >= ${n}"));
            }
        }
        filter.append(&mut sql, &mut params);
        params.push(limit.into());
        let n = params.len();
        sql.push_str(&format!(
            " ORDER BY stream_ordering {} LIMIT ${n}",
            if forward { "ASC" } else { "DESC" }
        ));
        self.db.query(&sql, params).await?.iter().map(event_from_row).collect()
    }

    /// The event closest to a timestamp, in one direction.
    pub async fn event_near_timestamp(
        &self,
        room_id: &str,
        ts: i64,
        forward: bool,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let sql = if forward {
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND origin_server_ts >= $2 AND {VISIBLE} ORDER BY origin_server_ts ASC, stream_ordering ASC LIMIT 1"
            )
        } else {
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND origin_server_ts <= $2 AND {VISIBLE} ORDER BY origin_server_ts DESC, stream_ordering DESC LIMIT 1"
            )
        };
        self.db.query_opt(&sql, params![room_id, ts]).await?.as_ref().map(event_from_row).transpose()
    }

    /// The transactions several events were sent with (events without one are left out).
    pub async fn txns_for_events(
        &self,
        event_ids: &[&str],
    ) -> Result<HashMap<String, TxnRecord>, StoreError> {
        let mut out = HashMap::new();
        for chunk in event_ids.chunks(200) {
            let placeholders = crate::placeholder_list(chunk.len());
            let sql = format!(
                "SELECT event_id, user_id, device_id, scope, txn_id FROM event_txns WHERE event_id IN ({})",
                placeholders
            );
            let params = chunk.iter().map(|id| crate::Value::from(*id)).collect();
            for r in self.db.query(&sql, params).await? {
                out.insert(
                    r.string(0)?,
                    TxnRecord {
                        user_id: r.string(1)?,
                        device_id: r.string(2)?,
                        scope: r.string(3)?,
                        txn_id: r.string(4)?,
                    },
                );
            }
        }
        Ok(out)
    }
}
