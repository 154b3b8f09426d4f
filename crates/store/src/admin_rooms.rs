//! The admin API's rooms (`/_synapse/admin/v1/rooms...`) beside the room list and each room's
//! summary (`room_stats`): blocked rooms, deletion and history-purge tasks, purging a room (or its history before a point) from the database, and
//! the database statistics.

use crate::{Store, StoreError, params};

/// A room deletion or history purge the admin API started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminRoomTask {
    pub task_id: String,
    pub kind: String,
    pub room_id: String,
    pub status: String,
    pub error: Option<String>,
    pub result: Option<String>,
    pub created_ts: i64,
}

/// Tables holding rows of a room, deleted by [`Store::purge_room`] in this order (the `rooms`
/// row last, so an interrupted purge is finished by running it again). Each entry is one
/// statement run in its own transaction.
const PURGE_STEPS: &[&str] = &[
    "DELETE FROM event_edges WHERE event_id IN (SELECT event_id FROM events WHERE room_id = $1)",
    "DELETE FROM event_txns WHERE event_id IN (SELECT event_id FROM events WHERE room_id = $1)",
    "DELETE FROM federation_outbox_pdus WHERE event_id IN (SELECT event_id FROM events WHERE room_id = $1)",
    "DELETE FROM state_group_entries WHERE group_id IN (SELECT id FROM state_groups WHERE room_id = $1)",
    "DELETE FROM state_groups WHERE room_id = $1",
    "DELETE FROM event_relations WHERE room_id = $1",
    "DELETE FROM push_actions WHERE room_id = $1",
    "DELETE FROM push_queue WHERE room_id = $1",
    "DELETE FROM receipts WHERE room_id = $1",
    "DELETE FROM account_data WHERE room_id = $1",
    "DELETE FROM forward_extremities WHERE room_id = $1",
    "DELETE FROM current_state WHERE room_id = $1",
    "DELETE FROM membership_history WHERE room_id = $1",
    "DELETE FROM forgotten_rooms WHERE room_id = $1",
    "DELETE FROM room_aliases WHERE room_id = $1",
    "DELETE FROM user_directory_rooms WHERE room_id = $1",
    "DELETE FROM event_reports WHERE room_id = $1",
    "DELETE FROM room_stats WHERE room_id = $1",
    "DELETE FROM events WHERE room_id = $1",
    "DELETE FROM rooms WHERE room_id = $1",
];

/// What purging a room's history did ([`Store::purge_history`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurgeHistoryOutcome {
    /// `deleted` events removed, `kept` (state, and local events unless asked) made outliers.
    Purged { deleted: u64, kept: u64 },
    /// The point lies beyond every forward extremity: nothing was done (purging would leave
    /// nothing to build new events on).
    BeyondExtremities,
}

/// The tables keyed by event ID whose rows go with a deleted event, each `DELETE ... WHERE
/// event_id IN ({deleted})` ([`Store::purge_history`]).
const PURGE_HISTORY_TABLES: &[&str] = &[
    "event_edges",
    "event_txns",
    "federation_outbox_pdus",
    "event_relations",
    "push_actions",
    "push_queue",
    "forward_extremities",
];

impl Store {
    /// Whether a room is blocked, and by whom.
    pub async fn room_blocked_by(&self, room_id: &str) -> Result<Option<String>, StoreError> {
        self.db
            .query_opt("SELECT user_id FROM blocked_rooms WHERE room_id = $1", params![room_id])
            .await?
            .map(|row| row.string(0))
            .transpose()
    }

    /// Blocks a room (keeping the first blocker) or unblocks it.
    pub async fn set_room_blocked(&self, room_id: &str, by: &str, blocked: bool) -> Result<(), StoreError> {
        if blocked {
            self.db
                .execute(
                    "INSERT INTO blocked_rooms (room_id, user_id, created_ts) VALUES ($1, $2, $3)
                     ON CONFLICT (room_id) DO NOTHING",
                    params![room_id, by, crate::now_ms()],
                )
                .await?;
        } else {
            self.db.execute("DELETE FROM blocked_rooms WHERE room_id = $1", params![room_id]).await?;
        }
        Ok(())
    }

    /// Records a new task; an `exclusive` one not while one of the same kind is active for the
    /// room: then `false` (one check-and-insert transaction, so two requests at once start
    /// one task).
    pub async fn start_admin_room_task(
        &self,
        task_id: &str,
        kind: &str,
        room_id: &str,
        exclusive: bool,
        params: &str,
        instance: &str,
    ) -> Result<bool, StoreError> {
        self.db
            .transaction(async |tx| {
                if exclusive {
                    let active = tx
                        .query_opt(
                            "SELECT 1 FROM admin_room_tasks WHERE room_id = $1 AND kind = $2 AND status = 'active'",
                            params![room_id, kind],
                        )
                        .await?;
                    if active.is_some() {
                        return Ok(false);
                    }
                }
                tx.execute(
                    "INSERT INTO admin_room_tasks (task_id, kind, room_id, status, created_ts, params, instance)
                     VALUES ($1, $2, $3, 'active', $4, $5, $6)",
                    params![task_id, kind, room_id, crate::now_ms(), params, instance],
                )
                .await?;
                Ok(true)
            })
            .await
    }

    /// Ends a task: `complete` with its result, or `failed` with the error.
    pub async fn finish_admin_room_task(
        &self,
        task_id: &str,
        result: Result<Option<&str>, &str>,
    ) -> Result<(), StoreError> {
        let (status, result, error) = match result {
            Ok(result) => ("complete", result.map(str::to_owned), None),
            Err(error) => ("failed", None, Some(error.to_owned())),
        };
        self.db
            .execute(
                "UPDATE admin_room_tasks SET status = $2, result = $3, error = $4 WHERE task_id = $1",
                params![task_id, status, result, error],
            )
            .await?;
        Ok(())
    }

    /// The tasks `instance` (or, for rows from before tasks named their instance, any
    /// instance) left active, with what they were asked for: a previous run of the instance
    /// died with them.
    pub async fn interrupted_admin_room_tasks(
        &self,
        instance: &str,
    ) -> Result<Vec<(AdminRoomTask, Option<String>)>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT task_id, kind, room_id, status, error, result, created_ts, params FROM admin_room_tasks
                 WHERE status = 'active' AND (instance = $1 OR instance IS NULL) ORDER BY created_ts, task_id",
                params![instance],
            )
            .await?;
        rows.iter().map(|row| Ok((Self::task_from_row(row)?, row.opt_string(7)?))).collect()
    }

    fn task_from_row(row: &crate::Row) -> Result<AdminRoomTask, StoreError> {
        Ok(AdminRoomTask {
            task_id: row.string(0)?,
            kind: row.string(1)?,
            room_id: row.string(2)?,
            status: row.string(3)?,
            error: row.opt_string(4)?,
            result: row.opt_string(5)?,
            created_ts: row.i64(6)?,
        })
    }

    /// One task by its ID.
    pub async fn admin_room_task(&self, task_id: &str) -> Result<Option<AdminRoomTask>, StoreError> {
        self.db
            .query_opt(
                "SELECT task_id, kind, room_id, status, error, result, created_ts FROM admin_room_tasks
                 WHERE task_id = $1",
                params![task_id],
            )
            .await?
            .map(|row| Self::task_from_row(&row))
            .transpose()
    }

    /// A room's tasks of one kind, oldest first.
    pub async fn admin_room_tasks(
        &self,
        room_id: &str,
        kind: &str,
    ) -> Result<Vec<AdminRoomTask>, StoreError> {
        self.db
            .query(
                "SELECT task_id, kind, room_id, status, error, result, created_ts FROM admin_room_tasks
                 WHERE room_id = $1 AND kind = $2 ORDER BY created_ts, task_id",
                params![room_id, kind],
            )
            .await?
            .iter()
            .map(Self::task_from_row)
            .collect()
    }

    /// Removes every row of a room: one transaction per table, the `rooms` row last, so it is
    /// idempotent and an interrupted purge is finished by the next. Returns the events deleted.
    pub async fn purge_room(&self, room_id: &str) -> Result<u64, StoreError> {
        let dialect = self.db.dialect();
        let search = match dialect {
            crate::Dialect::Sqlite => {
                "DELETE FROM event_search WHERE rowid IN (SELECT stream_ordering FROM events WHERE room_id = $1)"
            }
            crate::Dialect::Postgres => {
                "DELETE FROM event_search WHERE stream_ordering IN (SELECT stream_ordering FROM events WHERE room_id = $1)"
            }
        };
        self.db.transaction(async |tx| tx.execute(search, params![room_id]).await).await?;
        let mut events = 0;
        for step in PURGE_STEPS {
            let deleted = self.db.transaction(async |tx| tx.execute(step, params![room_id]).await).await?;
            if step.starts_with("DELETE FROM events ") {
                events = deleted;
            }
        }
        Ok(events)
    }

    /// The room and depth of an event (where a history purge up to it stops).
    pub async fn event_room_and_depth(&self, event_id: &str) -> Result<Option<(String, i64)>, StoreError> {
        self.db
            .query_opt("SELECT room_id, depth FROM events WHERE event_id = $1", params![event_id])
            .await?
            .map(|row| Ok((row.string(0)?, row.i64(1)?)))
            .transpose()
    }

    /// The depth of the room's event a purge up to `ts` stops at (Synapse's): the latest
    /// timeline event of the room at or before the first event (of any room) sent at or after
    /// `ts`; `None` when the room has none.
    pub async fn purge_depth_at_ts(&self, room_id: &str, ts: i64) -> Result<Option<i64>, StoreError> {
        self.db
            .query_opt(
                "SELECT depth FROM events WHERE room_id = $1 AND NOT outlier AND rejected_reason IS NULL
                   AND stream_ordering > 0
                   AND stream_ordering <= COALESCE(
                       (SELECT MIN(stream_ordering) FROM events WHERE origin_server_ts >= $2 AND stream_ordering > 0),
                       stream_ordering)
                 ORDER BY stream_ordering DESC LIMIT 1",
                params![room_id, ts],
            )
            .await?
            .map(|row| row.i64(0))
            .transpose()
    }

    /// Purges a room's history before `depth` in one transaction (Synapse's
    /// `_purge_history_txn`): its non-state events are deleted with every row keyed by them and
    /// their full-text index entries, except, with `keep_local_of`, those sent by users of that
    /// server. State events (state groups and the current state name them) and the local events
    /// kept stay as outliers, out of every timeline and of search. Backward extremities are
    /// not stored: the oldest events left simply name prev events the timeline no longer has.
    pub async fn purge_history(
        &self,
        room_id: &str,
        depth: i64,
        keep_local_of: Option<&str>,
    ) -> Result<PurgeHistoryOutcome, StoreError> {
        let mut params = params![room_id, depth];
        let mut deleted =
            "SELECT event_id FROM events WHERE room_id = $1 AND depth < $2 AND state_key IS NULL".to_owned();
        if let Some(server_name) = keep_local_of {
            params.push(crate::like_users_of(server_name).into());
            deleted.push_str(" AND sender NOT LIKE $3 ESCAPE '\\'");
        }
        let search = match self.db.dialect() {
            crate::Dialect::Sqlite => {
                "DELETE FROM event_search WHERE rowid IN (SELECT stream_ordering FROM events WHERE room_id = $1 AND depth < $2)"
            }
            crate::Dialect::Postgres => {
                "DELETE FROM event_search WHERE stream_ordering IN (SELECT stream_ordering FROM events WHERE room_id = $1 AND depth < $2)"
            }
        };
        self.db
            .transaction(async |tx| {
                let deepest = tx
                    .query_opt(
                        "SELECT MAX(e.depth) FROM forward_extremities f JOIN events e ON e.event_id = f.event_id
                         WHERE f.room_id = $1",
                        params![room_id],
                    )
                    .await?
                    .map(|row| row.opt_i64(0))
                    .transpose()?
                    .flatten();
                if deepest.is_some_and(|deepest| deepest < depth) {
                    return Ok(PurgeHistoryOutcome::BeyondExtremities);
                }
                tx.execute(search, params![room_id, depth]).await?;
                for table in PURGE_HISTORY_TABLES {
                    tx.execute(&format!("DELETE FROM {table} WHERE event_id IN ({deleted})"), params.clone()).await?;
                }
                let deleted =
                    tx.execute(&format!("DELETE FROM events WHERE event_id IN ({deleted})"), params.clone()).await?;
                let kept = tx
                    .execute(
                        "UPDATE events SET outlier = TRUE WHERE room_id = $1 AND depth < $2 AND NOT outlier",
                        params![room_id, depth],
                    )
                    .await?;
                Ok(PurgeHistoryOutcome::Purged { deleted, kept })
            })
            .await
    }

    /// A room's forward extremities: event ID, depth, origin_server_ts and state group.
    pub async fn forward_extremities_of(
        &self,
        room_id: &str,
    ) -> Result<Vec<(String, i64, i64, Option<i64>)>, StoreError> {
        self.db
            .query(
                "SELECT f.event_id, e.depth, e.origin_server_ts, e.state_after FROM forward_extremities f
                 JOIN events e ON e.event_id = f.event_id WHERE f.room_id = $1 ORDER BY e.depth, f.event_id",
                params![room_id],
            )
            .await?
            .iter()
            .map(|row| Ok((row.string(0)?, row.i64(1)?, row.i64(2)?, row.opt_i64(3)?)))
            .collect()
    }

    /// The bytes of event JSON per room, largest first
    /// (`/_synapse/admin/v1/statistics/database/rooms`).
    pub async fn event_bytes_per_room(&self, limit: i64) -> Result<Vec<(String, i64)>, StoreError> {
        self.db
            .query(
                "SELECT room_id, CAST(SUM(LENGTH(json)) AS BIGINT) AS n FROM events GROUP BY room_id
                 ORDER BY n DESC, room_id LIMIT $1",
                params![limit],
            )
            .await?
            .iter()
            .map(|row| Ok((row.string(0)?, row.i64(1)?)))
            .collect()
    }

    /// Whether every local user with a membership in the room has forgotten it (Synapse's
    /// `is_locally_forgotten_room`); `true` when no local user has one.
    pub async fn room_forgotten_by_all(&self, server_name: &str, room_id: &str) -> Result<bool, StoreError> {
        let local = crate::like_users_of(server_name);
        let remembered = self
            .db
            .query_opt(
                "SELECT 1 FROM current_state c WHERE c.room_id = $1 AND c.type = 'm.room.member'
                 AND c.state_key LIKE $2 ESCAPE '\\'
                 AND NOT EXISTS (SELECT 1 FROM forgotten_rooms f WHERE f.room_id = c.room_id AND f.user_id = c.state_key)
                 LIMIT 1",
                params![room_id, local.as_str()],
            )
            .await?;
        Ok(remembered.is_none())
    }

    /// How many devices the given users have (`joined_local_devices`).
    pub async fn count_devices_of_users(&self, users: &[String]) -> Result<i64, StoreError> {
        if users.is_empty() {
            return Ok(0);
        }
        let params: Vec<crate::Value> = users.iter().map(|u| u.as_str().into()).collect();
        let sql = format!(
            "SELECT COUNT(*) FROM devices WHERE user_id IN ({})",
            crate::placeholder_list(users.len())
        );
        self.db.query_opt(&sql, params).await?.map(|row| row.i64(0)).transpose().map(|n| n.unwrap_or(0))
    }

    /// Forgets a destination's backoff (`reset_connection`); whether it was known.
    pub async fn reset_federation_destination(&self, destination: &str) -> Result<bool, StoreError> {
        let changed = self
            .db
            .execute(
                "UPDATE federation_destinations SET retry_last_ts = 0, retry_interval = 0, failure_ts = NULL
                 WHERE destination = $1",
                params![destination],
            )
            .await?;
        Ok(changed > 0)
    }

    /// The rooms shared with a server (one of its users joined), with each room's latest
    /// stream position.
    pub async fn rooms_shared_with_server(
        &self,
        server_name: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let pattern = crate::like_users_of(server_name);
        self.db
            .query(
                "SELECT c.room_id, (SELECT COALESCE(MAX(e.stream_ordering), 0) FROM events e WHERE e.room_id = c.room_id)
                 FROM current_state c WHERE c.type = 'm.room.member' AND c.membership = 'join'
                 AND c.state_key LIKE $1 ESCAPE '\\' GROUP BY c.room_id ORDER BY c.room_id",
                params![pattern.as_str()],
            )
            .await?
            .iter()
            .map(|row| Ok((row.string(0)?, row.i64(1)?)))
            .collect()
    }
}

/// A background task of the admin API in the shape of Synapse's scheduled tasks: room
/// deletions and history purges (`admin_room_tasks`) and user redactions (`user_redactions`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledTaskRecord {
    pub id: String,
    /// Synapse's action name: `shutdown_and_purge_room`, `purge_history` or `redact_all_events`.
    pub action: &'static str,
    pub status: String,
    pub timestamp_ms: i64,
    pub resource_id: String,
    /// The task's result as JSON text, when it has one.
    pub result: Option<String>,
    pub error: Option<String>,
}

impl Store {
    /// Every admin task, optionally only those of one resource (room or user ID) and started
    /// at or before `max_timestamp`, oldest first (as Synapse lists its scheduled tasks).
    pub async fn scheduled_tasks(
        &self,
        resource_id: Option<&str>,
        max_timestamp: Option<i64>,
    ) -> Result<Vec<ScheduledTaskRecord>, StoreError> {
        let max = max_timestamp.unwrap_or(i64::MAX);
        // Two statements each rather than `$1 IS NULL`, whose type PostgreSQL cannot infer.
        let rooms = match resource_id {
            Some(resource) => self
                .db
                .query(
                    "SELECT task_id, kind, room_id, status, error, result, created_ts FROM admin_room_tasks
                         WHERE room_id = $1 AND created_ts <= $2",
                    params![resource, max],
                )
                .await?,
            None => self
                .db
                .query(
                    "SELECT task_id, kind, room_id, status, error, result, created_ts FROM admin_room_tasks
                         WHERE created_ts <= $1",
                    params![max],
                )
                .await?,
        };
        let mut tasks = Vec::with_capacity(rooms.len());
        for row in &rooms {
            let task = Self::task_from_row(row)?;
            tasks.push(ScheduledTaskRecord {
                id: task.task_id,
                action: if task.kind == "delete" { "shutdown_and_purge_room" } else { "purge_history" },
                status: task.status,
                timestamp_ms: task.created_ts,
                resource_id: task.room_id,
                result: task.result,
                error: task.error,
            });
        }
        let redactions = match resource_id {
            Some(resource) => {
                self.db
                    .query(
                        "SELECT redact_id, user_id, status, failed_redactions, error, created_ts FROM user_redactions
                         WHERE user_id = $1 AND created_ts <= $2",
                        params![resource, max],
                    )
                    .await?
            }
            None => {
                self.db
                    .query(
                        "SELECT redact_id, user_id, status, failed_redactions, error, created_ts FROM user_redactions
                         WHERE created_ts <= $1",
                        params![max],
                    )
                    .await?
            }
        };
        for row in &redactions {
            tasks.push(ScheduledTaskRecord {
                id: row.string(0)?,
                action: "redact_all_events",
                status: row.string(2)?,
                timestamp_ms: row.i64(5)?,
                resource_id: row.string(1)?,
                result: Some(format!("{{\"failed_redactions\":{}}}", row.string(3)?)),
                error: row.opt_string(4)?,
            });
        }
        tasks.sort_by(|a, b| (a.timestamp_ms, &a.id).cmp(&(b.timestamp_ms, &b.id)));
        Ok(tasks)
    }
}
