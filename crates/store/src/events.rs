//! Events: persisting a new event with everything that follows from it (edges, extremities,
//! state group, current state, membership history, relations, transaction ID, redaction), and
//! reading events back.

use std::collections::HashMap;

use crate::state::{StateDelta, create_state_group};
use crate::{Row, Store, StoreError, Tx, params};

/// A stored event with the metadata kept beside its JSON.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub event_id: String,
    pub room_id: String,
    pub stream_ordering: i64,
    pub json: String,
    pub state_before: Option<i64>,
    pub state_after: Option<i64>,
    pub replaces_state: Option<String>,
    pub redacted_by: Option<String>,
    pub outlier: bool,
}

const EVENT_COLUMNS: &str = "event_id, room_id, stream_ordering, json, state_before, state_after, replaces_state, redacted_by, outlier";

/// Decodes a row of [`EVENT_COLUMNS`] (in that order, with or without a table alias).
pub(crate) fn event_from_row(row: &Row) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        event_id: row.string(0)?,
        room_id: row.string(1)?,
        stream_ordering: row.i64(2)?,
        json: row.string(3)?,
        state_before: row.opt_i64(4)?,
        state_after: row.opt_i64(5)?,
        replaces_state: row.opt_string(6)?,
        redacted_by: row.opt_string(7)?,
        outlier: row.bool(8)?,
    })
}

/// A client transaction: the same `(user, device, scope, txn_id)` always means the same event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnRecord {
    pub user_id: String,
    pub device_id: String,
    /// The endpoint the transaction belongs to, e.g. `!room:server/send/m.room.message`.
    pub scope: String,
    pub txn_id: String,
}

/// A relation an event declares (`m.relates_to`).
#[derive(Clone, Debug)]
pub struct NewRelation {
    pub relates_to_id: String,
    pub rel_type: String,
    pub aggregation_key: Option<String>,
}

/// Everything persisted with a new event.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub event_id: String,
    pub room_id: String,
    pub stream_ordering: i64,
    pub depth: i64,
    pub sender: String,
    pub kind: String,
    pub state_key: Option<String>,
    pub origin_server_ts: i64,
    pub json: String,
    pub prev_events: Vec<String>,
    /// The state group before the event.
    pub state_before: Option<i64>,
    /// For a state event: the state it replaces (and so the new group's change).
    pub replaces_state: Option<String>,
    /// For `m.room.member`: the new membership.
    pub membership: Option<String>,
    pub relation: Option<NewRelation>,
    pub contains_url: bool,
    /// The send's transaction, for idempotency.
    pub txn: Option<TxnRecord>,
    /// For a redaction: the redacted event and its pruned JSON.
    pub redaction: Option<(String, String)>,
    /// For a new room: its version and creator.
    pub new_room: Option<(String, String)>,
}

impl Store {
    /// Persists events and everything that follows from them in one transaction. Events of one
    /// room chain: each event's state before is the previous event's state after. Returns the
    /// state group after each event.
    pub async fn persist_events(&self, events: &[NewEvent]) -> Result<Vec<Option<i64>>, StoreError> {
        Ok(self.persist_events_with_push(events, &[]).await?.0)
    }

    /// [`Self::persist_events`], writing the events' push actions (and queueing their
    /// deliveries) in the same transaction, so that an event and its notifications become
    /// visible together. Also returns the number of deliveries queued.
    pub async fn persist_events_with_push(
        &self,
        events: &[NewEvent],
        push_actions: &[crate::push::NewPushAction],
    ) -> Result<(Vec<Option<i64>>, u64), StoreError> {
        let (state_afters, queued, durability) =
            self.persist_events_batched(events, push_actions, false).await?;
        durability.wait().await?;
        Ok((state_afters, queued))
    }

    /// [`Self::persist_events_with_push`] in a transaction that may share its commit with
    /// others (see [`crate::Db::transaction_batched`]): the events are not durable, nor visible
    /// to readers, until the returned [`crate::Durability`] says so. Every previous event they
    /// name must be stored already (or written earlier in the same batch): an event built on
    /// one whose commit failed is refused.
    pub async fn persist_events_batched(
        &self,
        events: &[NewEvent],
        push_actions: &[crate::push::NewPushAction],
        more_coming: bool,
    ) -> Result<(Vec<Option<i64>>, u64, crate::Durability), StoreError> {
        let ((state_afters, queued), durability) = self
            .db
            .transaction_batched(more_coming, async |tx| {
                let written: std::collections::HashSet<&str> =
                    events.iter().map(|e| e.event_id.as_str()).collect();
                let mut prevs: Vec<&str> = events
                    .iter()
                    .flat_map(|e| e.prev_events.iter().map(String::as_str))
                    .filter(|id| !written.contains(id))
                    .collect();
                prevs.sort_unstable();
                prevs.dedup();
                if !prevs.is_empty() {
                    let placeholders = crate::placeholder_list(prevs.len());
                    let sql = format!("SELECT COUNT(*) FROM events WHERE event_id IN ({})", placeholders);
                    let found =
                        tx.query_opt(&sql, prevs.iter().map(|id| crate::Value::from(*id)).collect()).await?;
                    if found.map(|row| row.i64(0)).transpose()?.unwrap_or(0) != prevs.len() as i64 {
                        return Err(StoreError::Commit(
                            "a previous event of the new event is not stored".to_owned(),
                        ));
                    }
                }
                self.persist_in(tx, events, push_actions).await
            })
            .await?;
        Ok((state_afters, queued, durability))
    }

    async fn persist_in(
        &self,
        tx: &mut crate::Tx<'_>,
        events: &[NewEvent],
        push_actions: &[crate::push::NewPushAction],
    ) -> Result<(Vec<Option<i64>>, u64), StoreError> {
        {
            {
                let mut out = Vec::with_capacity(events.len());
                let mut previous: Option<(&str, Option<i64>)> = None;
                for event in events {
                    let state_before = match previous {
                        Some((room, after)) if room == event.room_id => after,
                        _ => event.state_before,
                    };
                    let after = persist_one(tx, event, state_before).await?;
                    previous = Some((event.room_id.as_str(), after));
                    out.push(after);
                }
                let queued = crate::push::insert_push_actions_tx(tx, push_actions).await?;
                // The full-text index last: SQLite's FTS5 flushes its pending terms before
                // every later statement of the transaction.
                for event in events {
                    crate::search::index_event(tx, event).await?;
                }
                for event in events {
                    if let Some((target, _)) = &event.redaction {
                        crate::search::unindex_event(tx, target).await?;
                    }
                }
                Ok((out, queued))
            }
        }
    }

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
        let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND NOT outlier");
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
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND origin_server_ts >= $2 AND NOT outlier ORDER BY origin_server_ts ASC, stream_ordering ASC LIMIT 1"
            )
        } else {
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND origin_server_ts <= $2 AND NOT outlier ORDER BY origin_server_ts DESC, stream_ordering DESC LIMIT 1"
            )
        };
        self.db.query_opt(&sql, params![room_id, ts]).await?.as_ref().map(event_from_row).transpose()
    }

    /// Events relating to `target`, newest first, optionally of one relation and event type,
    /// strictly before / after `from` (stream positions).
    #[allow(clippy::too_many_arguments)]
    pub async fn relations(
        &self,
        target: &str,
        rel_type: Option<&str>,
        event_type: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
        forward: bool,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut params = params![target];
        let mut sql = format!(
            "SELECT {} FROM event_relations r JOIN events e ON e.event_id = r.event_id WHERE r.relates_to_id = $1",
            EVENT_COLUMNS.split(", ").map(|c| format!("e.{c}")).collect::<Vec<_>>().join(", ")
        );
        if let Some(rel_type) = rel_type {
            params.push(rel_type.into());
            sql.push_str(&format!(" AND r.rel_type = ${}", params.len()));
        }
        if let Some(event_type) = event_type {
            params.push(event_type.into());
            sql.push_str(&format!(" AND r.type = ${}", params.len()));
        }
        if let Some(from) = from {
            params.push(from.into());
            sql.push_str(&format!(
                " AND r.stream_ordering {} ${}",
                if forward { ">" } else { "<" },
                params.len()
            ));
        }
        if let Some(to) = to {
            params.push(to.into());
            sql.push_str(&format!(
                " AND r.stream_ordering {} ${}",
                if forward { "<=" } else { ">=" },
                params.len()
            ));
        }
        params.push(limit.into());
        sql.push_str(&format!(
            " ORDER BY r.stream_ordering {} LIMIT ${}",
            if forward { "ASC" } else { "DESC" },
            params.len()
        ));
        self.db.query(&sql, params).await?.iter().map(event_from_row).collect()
    }

    /// Per relation type and key, how many events relate to `target` (for bundled
    /// aggregations and annotation counts), and the latest for `m.replace` / `m.thread`.
    pub async fn relation_summary(
        &self,
        target: &str,
    ) -> Result<Vec<(String, Option<String>, i64, i64)>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT rel_type, aggregation_key, COUNT(*), MAX(stream_ordering) FROM event_relations
                 WHERE relates_to_id = $1 GROUP BY rel_type, aggregation_key",
                params![target],
            )
            .await?;
        rows.iter().map(|r| Ok((r.string(0)?, r.opt_string(1)?, r.i64(2)?, r.i64(3)?))).collect()
    }

    /// The latest event of a relation type by a given sender (e.g. the last edit).
    pub async fn latest_relation_by(
        &self,
        target: &str,
        rel_type: &str,
        sender: &str,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {} FROM event_relations r JOIN events e ON e.event_id = r.event_id
             WHERE r.relates_to_id = $1 AND r.rel_type = $2 AND r.sender = $3 ORDER BY r.stream_ordering DESC LIMIT 1",
            EVENT_COLUMNS.split(", ").map(|c| format!("e.{c}")).collect::<Vec<_>>().join(", ")
        );
        self.db
            .query_opt(&sql, params![target, rel_type, sender])
            .await?
            .as_ref()
            .map(event_from_row)
            .transpose()
    }

    /// Thread roots of a room (events with `m.thread` relations), newest activity first.
    pub async fn thread_roots(
        &self,
        room_id: &str,
        participated_by: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut params = params![room_id];
        let mut having = String::new();
        if let Some(before) = before {
            params.push(before.into());
            having = format!(" HAVING MAX(r.stream_ordering) < ${}", params.len());
        }
        let mut filter = String::new();
        if let Some(user) = participated_by {
            params.push(user.into());
            let n = params.len();
            filter = format!(
                " AND (r.relates_to_id IN (SELECT relates_to_id FROM event_relations WHERE rel_type = 'm.thread' AND sender = ${n})
                  OR r.relates_to_id IN (SELECT event_id FROM events WHERE sender = ${n} AND room_id = $1))"
            );
        }
        params.push(limit.into());
        let sql = format!(
            "SELECT r.relates_to_id, MAX(r.stream_ordering) AS latest FROM event_relations r
             WHERE r.room_id = $1 AND r.rel_type = 'm.thread'{filter}
             GROUP BY r.relates_to_id{having} ORDER BY latest DESC LIMIT ${}",
            params.len()
        );
        let rows = self.db.query(&sql, params).await?;
        rows.iter().map(|r| Ok((r.string(0)?, r.i64(1)?))).collect()
    }
}

async fn persist_one(
    tx: &mut Tx<'_>,
    event: &NewEvent,
    state_before: Option<i64>,
) -> Result<Option<i64>, StoreError> {
    if let Some((version, creator)) = &event.new_room {
        tx.execute(
            "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, $3, $4)",
            params![event.room_id.as_str(), version.as_str(), creator.as_str(), crate::now_ms()],
        )
        .await?;
    }
    let state_after = match &event.state_key {
        Some(state_key) => {
            let mut changes = StateDelta::new();
            changes.insert((event.kind.clone(), state_key.clone()), Some(event.event_id.clone()));
            Some(create_state_group(tx, &event.room_id, state_before, &changes).await?)
        }
        None => state_before,
    };
    tx.execute(
        "INSERT INTO events (event_id, room_id, stream_ordering, depth, sender, type, state_key, origin_server_ts,
            state_before, state_after, replaces_state, json, contains_url)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        params![
            event.event_id.as_str(),
            event.room_id.as_str(),
            event.stream_ordering,
            event.depth,
            event.sender.as_str(),
            event.kind.as_str(),
            event.state_key.clone(),
            event.origin_server_ts,
            state_before,
            state_after,
            event.replaces_state.clone(),
            event.json.as_str(),
            event.contains_url
        ],
    )
    .await?;
    for prev in &event.prev_events {
        tx.execute(
            "INSERT INTO event_edges (event_id, prev_event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            params![event.event_id.as_str(), prev.as_str()],
        )
        .await?;
        tx.execute(
            "DELETE FROM forward_extremities WHERE room_id = $1 AND event_id = $2",
            params![event.room_id.as_str(), prev.as_str()],
        )
        .await?;
    }
    tx.execute(
        "INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)",
        params![event.room_id.as_str(), event.event_id.as_str()],
    )
    .await?;
    if let Some(state_key) = &event.state_key {
        tx.execute(
            "INSERT INTO current_state (room_id, type, state_key, event_id, membership) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = $4, membership = $5",
            params![
                event.room_id.as_str(),
                event.kind.as_str(),
                state_key.as_str(),
                event.event_id.as_str(),
                event.membership.clone()
            ],
        )
        .await?;
        if let Some(membership) = &event.membership {
            tx.execute(
                "INSERT INTO membership_history (event_id, room_id, user_id, sender, membership, stream_ordering)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                params![
                    event.event_id.as_str(),
                    event.room_id.as_str(),
                    state_key.as_str(),
                    event.sender.as_str(),
                    membership.as_str(),
                    event.stream_ordering
                ],
            )
            .await?;
            if membership == "join" || membership == "invite" || membership == "knock" {
                tx.execute(
                    "DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2",
                    params![state_key.as_str(), event.room_id.as_str()],
                )
                .await?;
            }
        }
    }
    if let Some(relation) = &event.relation {
        tx.execute(
            "INSERT INTO event_relations (event_id, room_id, relates_to_id, rel_type, aggregation_key, sender, type, stream_ordering)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            params![
                event.event_id.as_str(),
                event.room_id.as_str(),
                relation.relates_to_id.as_str(),
                relation.rel_type.as_str(),
                relation.aggregation_key.clone(),
                event.sender.as_str(),
                event.kind.as_str(),
                event.stream_ordering
            ],
        )
        .await?;
    }
    if let Some(txn) = &event.txn {
        tx.execute(
            "INSERT INTO event_txns (user_id, device_id, scope, txn_id, event_id, created_ts) VALUES ($1, $2, $3, $4, $5, $6)",
            params![
                txn.user_id.as_str(),
                txn.device_id.as_str(),
                txn.scope.as_str(),
                txn.txn_id.as_str(),
                event.event_id.as_str(),
                crate::now_ms()
            ],
        )
        .await?;
    }
    if let Some((target, pruned)) = &event.redaction {
        tx.execute(
            "UPDATE events SET json = $2, redacted_by = $3 WHERE event_id = $1 AND redacted_by IS NULL",
            params![target.as_str(), pruned.as_str(), event.event_id.as_str()],
        )
        .await?;
        // A redacted event no longer relates to anything.
        tx.execute("DELETE FROM event_relations WHERE event_id = $1", params![target.as_str()]).await?;
    }
    Ok(state_after)
}

/// A room event filter compiled to SQL conditions (`types`, `not_types`, `senders`,
/// `not_senders`, `contains_url`). Type patterns may end in `*`. Each entry of a list is one
/// statement parameter: callers bound the lists (the service's filters hold at most 1,000
/// entries per list), well within the engines' limits (32,766 parameters for SQLite, 65,535
/// for PostgreSQL). Type patterns are combined as a balanced tree, within SQLite's
/// expression depth however many there are.
#[derive(Clone, Debug, Default)]
pub struct EventFilterSql {
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub contains_url: Option<bool>,
}

fn like_pattern(pattern: &str) -> String {
    let escaped = pattern.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    escaped.replace('*', "%")
}

impl EventFilterSql {
    fn append(&self, sql: &mut String, params: &mut Vec<crate::Value>) {
        let type_condition = |patterns: &[String], negate: bool, params: &mut Vec<crate::Value>| -> String {
            let mut parts = Vec::new();
            for pattern in patterns {
                params.push(like_pattern(pattern).into());
                parts.push(format!("type LIKE ${} ESCAPE '\\'", params.len()));
            }
            if negate {
                format!(" AND NOT ({})", crate::any_of(&parts))
            } else {
                format!(" AND ({})", crate::any_of(&parts))
            }
        };
        if let Some(types) = &self.types {
            if types.is_empty() {
                sql.push_str(" AND FALSE");
            } else {
                let condition = type_condition(types, false, params);
                sql.push_str(&condition);
            }
        }
        if !self.not_types.is_empty() {
            let condition = type_condition(&self.not_types, true, params);
            sql.push_str(&condition);
        }
        let sender_condition = |senders: &[String], negate: bool, params: &mut Vec<crate::Value>| -> String {
            let mut placeholders = Vec::new();
            for sender in senders {
                params.push(sender.as_str().into());
                placeholders.push(format!("${}", params.len()));
            }
            format!(" AND sender {}IN ({})", if negate { "NOT " } else { "" }, placeholders.join(", "))
        };
        if let Some(senders) = &self.senders {
            if senders.is_empty() {
                sql.push_str(" AND FALSE");
            } else {
                let condition = sender_condition(senders, false, params);
                sql.push_str(&condition);
            }
        }
        if !self.not_senders.is_empty() {
            let condition = sender_condition(&self.not_senders, true, params);
            sql.push_str(&condition);
        }
        if let Some(contains_url) = self.contains_url {
            sql.push_str(if contains_url { " AND contains_url" } else { " AND NOT contains_url" });
        }
    }
}

/// Which events related to `target` to read: those in `room_id` (a relation never crosses
/// rooms), `depth` levels of relations deep (1: direct children only), optionally of one
/// relation type, event type and sender, strictly after (`forward`) or before `from`, bounded
/// by `to` (inclusive), by stream position.
#[derive(Clone, Debug)]
pub struct RelatedEventsQuery<'a> {
    pub room_id: &'a str,
    pub target: &'a str,
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub sender: Option<&'a str>,
    pub depth: u32,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub forward: bool,
    pub limit: i64,
}

impl Store {
    /// Events related to an event (see [`RelatedEventsQuery`]), in stream order (newest first
    /// unless `forward`).
    pub async fn related_events(
        &self,
        query: &RelatedEventsQuery<'_>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let columns = EVENT_COLUMNS.split(", ").map(|c| format!("e.{c}")).collect::<Vec<_>>().join(", ");
        let mut params = params![query.target, query.room_id];
        let mut sql = if query.depth <= 1 {
            format!(
                "SELECT {columns} FROM event_relations r JOIN events e ON e.event_id = r.event_id
                 WHERE r.relates_to_id = $1 AND r.room_id = $2"
            )
        } else {
            params.push(i64::from(query.depth).into());
            // Each event has at most one relation, so the walk is a tree; `depth` bounds it
            // even if event IDs were ever made to form a cycle.
            format!(
                "WITH RECURSIVE related(event_id, depth) AS (
                    SELECT event_id, CAST(1 AS BIGINT) FROM event_relations WHERE relates_to_id = $1 AND room_id = $2
                    UNION ALL
                    SELECT c.event_id, p.depth + 1 FROM event_relations c JOIN related p ON c.relates_to_id = p.event_id
                    WHERE c.room_id = $2 AND p.depth < $3
                 )
                 SELECT {columns} FROM event_relations r JOIN events e ON e.event_id = r.event_id
                 WHERE r.event_id IN (SELECT event_id FROM related)"
            )
        };
        if let Some(rel_type) = query.rel_type {
            params.push(rel_type.into());
            sql.push_str(&format!(" AND r.rel_type = ${}", params.len()));
        }
        if let Some(event_type) = query.event_type {
            params.push(event_type.into());
            sql.push_str(&format!(" AND r.type = ${}", params.len()));
        }
        if let Some(sender) = query.sender {
            params.push(sender.into());
            sql.push_str(&format!(" AND r.sender = ${}", params.len()));
        }
        if let Some(from) = query.from {
            params.push(from.into());
            let op = if query.forward { ">" } else { "<" };
            sql.push_str(&format!(" AND r.stream_ordering {op} ${}", params.len()));
        }
        if let Some(to) = query.to {
            params.push(to.into());
            let op = if query.forward { "<=" } else { ">=" };
            sql.push_str(&format!(" AND r.stream_ordering {op} ${}", params.len()));
        }
        params.push(query.limit.into());
        sql.push_str(&format!(
            " ORDER BY r.stream_ordering {} LIMIT ${}",
            if query.forward { "ASC" } else { "DESC" },
            params.len()
        ));
        self.db.query(&sql, params).await?.iter().map(event_from_row).collect()
    }

    /// For the relation types that are bundled with an event (`m.thread`, `m.replace`,
    /// `m.reference`): how many events of the same room relate to `target` that way.
    /// [`Self::bundled_relation_counts`] of several events at once (events with none are left
    /// out).
    pub async fn bundled_relation_counts_of(
        &self,
        targets: &[&str],
    ) -> Result<HashMap<String, Vec<(String, i64)>>, StoreError> {
        let mut out: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        for chunk in targets.chunks(200) {
            let placeholders = crate::placeholder_list(chunk.len());
            let sql = format!(
                "SELECT relates_to_id, rel_type, COUNT(*) FROM event_relations
                 WHERE relates_to_id IN ({}) AND rel_type IN ('m.thread', 'm.replace', 'm.reference')
                 GROUP BY relates_to_id, rel_type",
                placeholders
            );
            let params = chunk.iter().map(|id| crate::Value::from(*id)).collect();
            for row in self.db.query(&sql, params).await? {
                out.entry(row.string(0)?).or_default().push((row.string(1)?, row.i64(2)?));
            }
        }
        Ok(out)
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

    pub async fn bundled_relation_counts(
        &self,
        room_id: &str,
        target: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT rel_type, COUNT(*) FROM event_relations
                 WHERE relates_to_id = $1 AND room_id = $2 AND rel_type IN ('m.thread', 'm.replace', 'm.reference')
                 GROUP BY rel_type",
                params![target, room_id],
            )
            .await?;
        rows.iter().map(|r| Ok((r.string(0)?, r.i64(1)?))).collect()
    }

    /// The edit of `target` that applies: the most recent (by `origin_server_ts`, then event
    /// ID) `m.replace` of the same room, sender and event type as the original.
    pub async fn latest_edit(
        &self,
        room_id: &str,
        target: &str,
        sender: &str,
        event_type: &str,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {} FROM event_relations r JOIN events e ON e.event_id = r.event_id
             WHERE r.relates_to_id = $1 AND r.room_id = $2 AND r.rel_type = 'm.replace' AND r.sender = $3 AND r.type = $4
             ORDER BY e.origin_server_ts DESC, e.event_id DESC LIMIT 1",
            EVENT_COLUMNS.split(", ").map(|c| format!("e.{c}")).collect::<Vec<_>>().join(", ")
        );
        self.db
            .query_opt(&sql, params![target, room_id, sender, event_type])
            .await?
            .as_ref()
            .map(event_from_row)
            .transpose()
    }
}

impl Store {
    /// Whether `sender` already annotated `target` with `key` using an event of `kind`.
    pub async fn has_annotation(
        &self,
        target: &str,
        sender: &str,
        kind: &str,
        key: &str,
    ) -> Result<bool, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT 1 FROM event_relations WHERE relates_to_id = $1 AND rel_type = 'm.annotation'
                 AND sender = $2 AND type = $3 AND aggregation_key = $4 LIMIT 1",
                params![target, sender, kind, key],
            )
            .await?;
        Ok(row.is_some())
    }
}
