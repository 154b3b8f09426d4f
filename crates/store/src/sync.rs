//! Per-user streams read by sync: account data, receipts, filters, presence.

use crate::{Store, StoreError, params};

/// One account data entry.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountDataRecord {
    /// Empty for global account data.
    pub room_id: String,
    pub kind: String,
    pub content: String,
    pub stream_id: i64,
}

/// One receipt.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceiptRecord {
    pub room_id: String,
    pub receipt_type: String,
    pub user_id: String,
    pub thread_id: String,
    pub event_id: String,
    pub event_stream: i64,
    pub ts: i64,
    pub stream_id: i64,
}

/// A user's presence.
#[derive(Clone, Debug, PartialEq)]
pub struct PresenceRecord {
    pub user_id: String,
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    pub last_user_sync_ts: i64,
    pub currently_active: bool,
    pub stream_id: i64,
}

impl Store {
    /// Highest positions of the persisted streams: (account data, receipts, presence).
    pub async fn max_stream_ids(&self) -> Result<(i64, i64, i64), StoreError> {
        let mut out = [0i64; 3];
        for (i, table) in ["account_data", "receipts", "presence"].iter().enumerate() {
            let row = self
                .db
                .query_opt(&format!("SELECT COALESCE(MAX(stream_id), 0) FROM {table}"), params![])
                .await?;
            out[i] = row.map(|r| r.i64(0)).transpose()?.unwrap_or(0);
        }
        Ok((out[0], out[1], out[2]))
    }

    pub async fn set_account_data(
        &self,
        user_id: &str,
        room_id: &str,
        kind: &str,
        content: &str,
        stream_id: i64,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO account_data (user_id, room_id, type, content, stream_id) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = $4, stream_id = $5",
                params![user_id, room_id, kind, content, stream_id],
            )
            .await?;
        Ok(())
    }

    pub async fn get_account_data(
        &self,
        user_id: &str,
        room_id: &str,
        kind: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3",
                params![user_id, room_id, kind],
            )
            .await?;
        row.map(|r| r.string(0)).transpose()
    }

    /// Account data changed after `since` (all of it for `since` 0), up to `upto`.
    pub async fn account_data_since(
        &self,
        user_id: &str,
        since: i64,
        upto: i64,
    ) -> Result<Vec<AccountDataRecord>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT room_id, type, content, stream_id FROM account_data
                 WHERE user_id = $1 AND stream_id > $2 AND stream_id <= $3 ORDER BY stream_id",
                params![user_id, since, upto],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AccountDataRecord {
                    room_id: r.string(0)?,
                    kind: r.string(1)?,
                    content: r.string(2)?,
                    stream_id: r.i64(3)?,
                })
            })
            .collect()
    }

    pub async fn upsert_receipt(&self, receipt: &ReceiptRecord) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, event_stream, ts, stream_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (room_id, receipt_type, user_id, thread_id)
                 DO UPDATE SET event_id = $5, event_stream = $6, ts = $7, stream_id = $8",
                params![
                    receipt.room_id.as_str(),
                    receipt.receipt_type.as_str(),
                    receipt.user_id.as_str(),
                    receipt.thread_id.as_str(),
                    receipt.event_id.as_str(),
                    receipt.event_stream,
                    receipt.ts,
                    receipt.stream_id
                ],
            )
            .await?;
        Ok(())
    }

    fn receipt_from_row(r: &crate::Row) -> Result<ReceiptRecord, StoreError> {
        Ok(ReceiptRecord {
            room_id: r.string(0)?,
            receipt_type: r.string(1)?,
            user_id: r.string(2)?,
            thread_id: r.string(3)?,
            event_id: r.string(4)?,
            event_stream: r.i64(5)?,
            ts: r.i64(6)?,
            stream_id: r.i64(7)?,
        })
    }

    /// Receipts of a room changed after `since` up to `upto` (all current ones for `since` 0).
    pub async fn receipts_since(
        &self,
        room_id: &str,
        since: i64,
        upto: i64,
    ) -> Result<Vec<ReceiptRecord>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT room_id, receipt_type, user_id, thread_id, event_id, event_stream, ts, stream_id FROM receipts
                 WHERE room_id = $1 AND stream_id > $2 AND stream_id <= $3 ORDER BY stream_id",
                params![room_id, since, upto],
            )
            .await?;
        rows.iter().map(Self::receipt_from_row).collect()
    }

    /// The rooms with a receipt changed after `since` up to `upto` (what an incremental
    /// `/sync` reads once for all the user's rooms).
    pub async fn rooms_with_receipts_between(
        &self,
        since: i64,
        upto: i64,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT DISTINCT room_id FROM receipts WHERE stream_id > $1 AND stream_id <= $2",
                params![since, upto],
            )
            .await?;
        rows.iter().map(|r| r.string(0)).collect()
    }

    /// Read receipts (`m.read` and `m.read.private`) of every room changed after `since` up to
    /// `upto`, in stream order, at most `limit` (the appservices' receipt stream).
    pub async fn read_receipts_in_range(
        &self,
        since: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<ReceiptRecord>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT room_id, receipt_type, user_id, thread_id, event_id, event_stream, ts, stream_id FROM receipts
                 WHERE stream_id > $1 AND stream_id <= $2 AND receipt_type IN ('m.read', 'm.read.private')
                 ORDER BY stream_id LIMIT $3",
                params![since, upto, limit],
            )
            .await?;
        rows.iter().map(Self::receipt_from_row).collect()
    }

    /// A user's own receipt of a type in a room (unthreaded or a thread's).
    pub async fn user_receipt(
        &self,
        room_id: &str,
        user_id: &str,
        receipt_type: &str,
        thread_id: &str,
    ) -> Result<Option<ReceiptRecord>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT room_id, receipt_type, user_id, thread_id, event_id, event_stream, ts, stream_id FROM receipts
                 WHERE room_id = $1 AND user_id = $2 AND receipt_type = $3 AND thread_id = $4",
                params![room_id, user_id, receipt_type, thread_id],
            )
            .await?;
        row.as_ref().map(Self::receipt_from_row).transpose()
    }

    /// The position up to which a user has read a room (the later of m.read and
    /// m.read.private, unthreaded or "main").
    pub async fn read_up_to(&self, room_id: &str, user_id: &str) -> Result<i64, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT COALESCE(MAX(event_stream), 0) FROM receipts WHERE room_id = $1 AND user_id = $2
                 AND receipt_type IN ('m.read', 'm.read.private') AND thread_id IN ('', 'main')",
                params![room_id, user_id],
            )
            .await?;
        Ok(row.map(|r| r.i64(0)).transpose()?.unwrap_or(0))
    }

    /// Stores a filter; returns its ID.
    pub async fn create_filter(&self, user_id: &str, filter_json: &str) -> Result<i64, StoreError> {
        self.db
            .transaction(async |tx| {
                let row = tx
                    .query_opt(
                        "SELECT COALESCE(MAX(filter_id), -1) + 1 FROM user_filters WHERE user_id = $1",
                        params![user_id],
                    )
                    .await?;
                let id = row.map(|r| r.i64(0)).transpose()?.unwrap_or(0);
                tx.execute(
                    "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES ($1, $2, $3)",
                    params![user_id, id, filter_json],
                )
                .await?;
                Ok(id)
            })
            .await
    }

    pub async fn get_filter(&self, user_id: &str, filter_id: i64) -> Result<Option<String>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT filter_json FROM user_filters WHERE user_id = $1 AND filter_id = $2",
                params![user_id, filter_id],
            )
            .await?;
        row.map(|r| r.string(0)).transpose()
    }

    pub async fn set_presence(&self, presence: &PresenceRecord) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO presence (user_id, state, status_msg, last_active_ts, last_user_sync_ts, currently_active, stream_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (user_id) DO UPDATE SET state = $2, status_msg = $3, last_active_ts = $4,
                 last_user_sync_ts = $5, currently_active = $6, stream_id = $7",
                params![
                    presence.user_id.as_str(),
                    presence.state.as_str(),
                    presence.status_msg.clone(),
                    presence.last_active_ts,
                    presence.last_user_sync_ts,
                    presence.currently_active,
                    presence.stream_id
                ],
            )
            .await?;
        Ok(())
    }

    fn presence_from_row(r: &crate::Row) -> Result<PresenceRecord, StoreError> {
        Ok(PresenceRecord {
            user_id: r.string(0)?,
            state: r.string(1)?,
            status_msg: r.opt_string(2)?,
            last_active_ts: r.i64(3)?,
            last_user_sync_ts: r.i64(4)?,
            currently_active: r.bool(5)?,
            stream_id: r.i64(6)?,
        })
    }

    pub async fn get_presence(&self, user_id: &str) -> Result<Option<PresenceRecord>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT user_id, state, status_msg, last_active_ts, last_user_sync_ts, currently_active, stream_id
                 FROM presence WHERE user_id = $1",
                params![user_id],
            )
            .await?;
        row.as_ref().map(Self::presence_from_row).transpose()
    }

    /// Presence of users changed after `since`, up to `upto`.
    pub async fn presence_since(&self, since: i64, upto: i64) -> Result<Vec<PresenceRecord>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT user_id, state, status_msg, last_active_ts, last_user_sync_ts, currently_active, stream_id
                 FROM presence WHERE stream_id > $1 AND stream_id <= $2 ORDER BY stream_id",
                params![since, upto],
            )
            .await?;
        rows.iter().map(Self::presence_from_row).collect()
    }

    /// Users whose presence says online or unavailable but who were last seen before `before`.
    pub async fn stale_presence(&self, before: i64) -> Result<Vec<PresenceRecord>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT user_id, state, status_msg, last_active_ts, last_user_sync_ts, currently_active, stream_id
                 FROM presence WHERE state <> 'offline' AND (last_user_sync_ts < $1 OR last_active_ts < $1)",
                params![before],
            )
            .await?;
        rows.iter().map(Self::presence_from_row).collect()
    }

    /// Users sharing at least one joined room with `user_id` (including the user).
    pub async fn users_sharing_rooms(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT DISTINCT y.state_key FROM current_state x JOIN current_state y ON x.room_id = y.room_id
                 WHERE x.type = 'm.room.member' AND x.state_key = $1 AND x.membership = 'join'
                 AND y.type = 'm.room.member' AND y.membership = 'join'",
                params![user_id],
            )
            .await?;
        rows.iter().map(|r| r.string(0)).collect()
    }

    /// The events of a room after `after`, up to `upto`, newest first, limited (sync timelines).
    pub async fn latest_room_events(
        &self,
        room_id: &str,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<crate::StoredEvent>, StoreError> {
        let filter = crate::EventFilterSql::default();
        self.room_events(room_id, upto + 1, Some(after + 1), false, limit, &filter).await
    }

    /// The newest state event of each (type, state key) of a room between two positions
    /// (after `after`, before `before`): the state that changed in that gap.
    pub async fn state_changes_between(
        &self,
        room_id: &str,
        after: i64,
        before: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT event_id FROM (
                    SELECT event_id, ROW_NUMBER() OVER (PARTITION BY type, state_key ORDER BY stream_ordering DESC) AS rn
                    FROM events WHERE room_id = $1 AND state_key IS NOT NULL AND stream_ordering > $2 AND stream_ordering < $3
                    AND NOT outlier AND rejected_reason IS NULL AND NOT soft_failed
                 ) AS latest WHERE rn = 1",
                params![room_id, after, before],
            )
            .await?;
        rows.iter().map(|r| r.string(0)).collect()
    }

    /// Whether a room has events after a position (up to another).
    pub async fn room_has_events_between(
        &self,
        room_id: &str,
        after: i64,
        upto: i64,
    ) -> Result<bool, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT 1 FROM events WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3
                 AND NOT outlier AND rejected_reason IS NULL AND NOT soft_failed LIMIT 1",
                params![room_id, after, upto],
            )
            .await?;
        Ok(row.is_some())
    }

    /// Rooms with events after a position, among a user's rooms (one query for all of them).
    /// `joined_rooms` (how many rooms the user is joined to) picks how: through the events of
    /// the range when it is shorter than that, room by room otherwise.
    pub async fn rooms_with_events_since(
        &self,
        user_id: &str,
        after: i64,
        upto: i64,
        joined_rooms: usize,
    ) -> Result<Vec<String>, StoreError> {
        let sql = if range_is_shorter(after, upto, joined_rooms) {
            "SELECT DISTINCT e.room_id FROM events e
             WHERE e.stream_ordering > $2 AND e.stream_ordering <= $3
             AND NOT e.outlier AND e.rejected_reason IS NULL AND NOT e.soft_failed AND EXISTS (
                 SELECT 1 FROM current_state c WHERE c.room_id = e.room_id
                 AND c.type = 'm.room.member' AND c.state_key = $1 AND c.membership = 'join')"
        } else {
            "SELECT DISTINCT e.room_id FROM events e JOIN current_state c ON c.room_id = e.room_id
             WHERE c.type = 'm.room.member' AND c.state_key = $1 AND c.membership = 'join'
             AND e.stream_ordering > $2 AND e.stream_ordering <= $3
             AND NOT e.outlier AND e.rejected_reason IS NULL AND NOT e.soft_failed"
        };
        let rows = self.db.query(sql, params![user_id, after, upto]).await?;
        rows.iter().map(|r| r.string(0)).collect()
    }
}

/// Whether a stretch of a stream (`after`, `upto`] holds fewer positions than the user has
/// joined rooms: then what changed in it is read along the stream, and otherwise room by room
/// (each way is one index walk per position, or per room).
pub(crate) fn range_is_shorter(after: i64, upto: i64, joined_rooms: usize) -> bool {
    upto.saturating_sub(after) <= i64::try_from(joined_rooms).unwrap_or(i64::MAX)
}
