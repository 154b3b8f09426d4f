//! Push notifications: per-user rule sets, push actions and the unread counts read from them,
//! pushers, and the durable queue of notifications waiting for a push gateway.

use crate::{Row, Store, StoreError, Tx, Value, now_ms, params};

/// A push action to record: `user_id` is to be notified of `event_id`.
#[derive(Clone, Debug, PartialEq)]
pub struct NewPushAction {
    pub user_id: String,
    pub event_id: String,
    pub room_id: String,
    pub stream_ordering: i64,
    /// `main` or the thread root's event ID.
    pub thread_id: String,
    /// The actions of the rule that matched (JSON).
    pub actions: String,
    pub highlight: bool,
}

/// A stored push action, as `/notifications` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct PushActionRecord {
    pub event_id: String,
    pub room_id: String,
    pub stream_ordering: i64,
    pub thread_id: String,
    pub actions: String,
    pub highlight: bool,
    pub ts: i64,
    /// Whether a read receipt covers the event.
    pub read: bool,
}

/// Unread notifications of one thread (`main` for the main timeline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadUnread {
    pub thread_id: String,
    pub notifications: u64,
    pub highlights: u64,
}

/// A pusher.
#[derive(Clone, Debug, PartialEq)]
pub struct PusherRecord {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The client's `data` (JSON), `url` included.
    pub data: String,
    pub device_id: Option<String>,
    /// When the pushkey was last set (ms).
    pub pushkey_ts: i64,
}

/// A notification waiting for a pusher's gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedPush {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub event_id: String,
    pub room_id: String,
    pub stream_ordering: i64,
    pub actions: String,
    pub attempts: i64,
    pub created_ts: i64,
}

/// Rows per multi-row `INSERT` (9 parameters each, far below both engines' limits).
const INSERT_CHUNK: usize = 100;

/// The receipt types that mark events read.
const READ_RECEIPTS: &str = "('m.read', 'm.read.private')";

const PUSHER_COLUMNS: &str = "user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, device_id, pushkey_ts";

fn pusher_from_row(row: &Row) -> Result<PusherRecord, StoreError> {
    Ok(PusherRecord {
        user_id: row.string(0)?,
        app_id: row.string(1)?,
        pushkey: row.string(2)?,
        kind: row.string(3)?,
        app_display_name: row.string(4)?,
        device_display_name: row.string(5)?,
        profile_tag: row.opt_string(6)?,
        lang: row.string(7)?,
        data: row.string(8)?,
        device_id: row.opt_string(9)?,
        pushkey_ts: row.i64(10)?,
    })
}

/// `($1, $2, ...), ($n+1, ...)` for `rows` rows of `columns` placeholders.
fn values_placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            let cells: Vec<String> = (1..=columns).map(|c| format!("${}", row * columns + c)).collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// SQL for "the highest read receipt of `a.user_id` that covers push action `a`": an
/// unthreaded receipt covers every thread, a threaded one only its own thread (`main`
/// included).
const COVERING_RECEIPT: &str = "COALESCE((SELECT MAX(r.event_stream) FROM receipts r
    WHERE r.room_id = a.room_id AND r.user_id = a.user_id AND r.receipt_type IN ('m.read', 'm.read.private')
    AND r.thread_id IN ('', a.thread_id)), 0)";

impl Store {
    /// A user's stored rule set (JSON), if they ever changed their rules.
    pub async fn push_rules(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        let row =
            self.db.query_opt("SELECT ruleset FROM push_rules WHERE user_id = $1", params![user_id]).await?;
        row.map(|r| r.string(0)).transpose()
    }

    /// The stored rule sets of several users (those without one are left out).
    pub async fn push_rules_of(&self, user_ids: &[String]) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for chunk in user_ids.chunks(200) {
            let placeholders = crate::placeholder_list(chunk.len());
            let sql = format!("SELECT user_id, ruleset FROM push_rules WHERE user_id IN ({})", placeholders);
            let params = chunk.iter().map(|u| Value::from(u.as_str())).collect();
            for row in self.db.query(&sql, params).await? {
                out.push((row.string(0)?, row.string(1)?));
            }
        }
        Ok(out)
    }

    pub async fn set_push_rules(&self, user_id: &str, ruleset: &str) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO push_rules (user_id, ruleset, updated_ts) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id) DO UPDATE SET ruleset = $2, updated_ts = $3",
                params![user_id, ruleset, now_ms()],
            )
            .await?;
        Ok(())
    }

    /// Records push actions in one transaction and queues a delivery to each pusher of each
    /// notified user. Returns the number of deliveries queued.
    pub async fn insert_push_actions(&self, actions: &[NewPushAction]) -> Result<u64, StoreError> {
        if actions.is_empty() {
            return Ok(0);
        }
        self.db.transaction(async |tx| insert_push_actions_tx(tx, actions).await).await
    }

    /// Per thread (`main` included), the user's notifying push actions in a room that no read
    /// receipt covers yet. `after`: a position below which everything is known read.
    pub async fn unread_push_actions(
        &self,
        user_id: &str,
        room_id: &str,
        after: i64,
    ) -> Result<Vec<ThreadUnread>, StoreError> {
        let sql = format!(
            "SELECT a.thread_id, COUNT(*), COUNT(CASE WHEN a.highlight THEN 1 END) FROM push_actions a
             WHERE a.user_id = $1 AND a.room_id = $2 AND a.stream_ordering > $3
             AND a.stream_ordering > {COVERING_RECEIPT}
             GROUP BY a.thread_id"
        );
        let rows = self.db.query(&sql, params![user_id, room_id, after]).await?;
        rows.iter()
            .map(|r| {
                Ok(ThreadUnread {
                    thread_id: r.string(0)?,
                    notifications: r.i64(1)?.max(0) as u64,
                    highlights: r.i64(2)?.max(0) as u64,
                })
            })
            .collect()
    }

    /// The position up to which everything in a room counts as read for a user: their
    /// unthreaded read receipt, or their membership event (nothing before joining is unread).
    pub async fn unread_floor(&self, room_id: &str, user_id: &str) -> Result<i64, StoreError> {
        let sql = format!(
            "SELECT COALESCE(MAX(position), 0) FROM (
                SELECT MAX(event_stream) AS position FROM receipts WHERE room_id = $1 AND user_id = $2
                    AND receipt_type IN {READ_RECEIPTS} AND thread_id = ''
                UNION ALL
                SELECT e.stream_ordering AS position FROM current_state c JOIN events e ON e.event_id = c.event_id
                    WHERE c.room_id = $1 AND c.type = 'm.room.member' AND c.state_key = $2
             ) AS positions"
        );
        let row = self.db.query_opt(&sql, params![room_id, user_id]).await?;
        Ok(row.map(|r| r.opt_i64(0)).transpose()?.flatten().unwrap_or(0))
    }

    /// Per room of `rooms` that has any, the user's unread notifications and highlights (all
    /// threads together): what [`Self::unread_floor`] and [`Self::unread_push_actions`] count, for
    /// many rooms in one read per 200. Each room comes with the stream position of the user's
    /// membership event in it, as the user's memberships tell: nothing before it is unread.
    /// For one or two rooms (a long-poll woken by news) each is read by itself on the push
    /// actions alone, with that position; more are read together, the membership event's
    /// position read with them (a read per room costs more than the join then, and on
    /// PostgreSQL a round trip each).
    pub async fn unread_counts_in_rooms(
        &self,
        user_id: &str,
        rooms: &[(&str, i64)],
    ) -> Result<std::collections::HashMap<String, (u64, u64)>, StoreError> {
        let mut out = std::collections::HashMap::new();
        if rooms.len() <= 2 {
            let sql = format!(
                "SELECT COUNT(*), COUNT(CASE WHEN a.highlight THEN 1 END) FROM push_actions a
                 WHERE a.user_id = $1 AND a.room_id = $2 AND a.stream_ordering > $3
                 AND a.stream_ordering > {COVERING_RECEIPT}"
            );
            for (room_id, membership) in rooms {
                let row = self.db.query_opt(&sql, params![user_id, *room_id, *membership]).await?;
                let (notifications, highlights) = match row {
                    Some(row) => (row.i64(0)?.max(0) as u64, row.i64(1)?.max(0) as u64),
                    None => (0, 0),
                };
                if notifications > 0 {
                    out.insert(room_id.to_string(), (notifications, highlights));
                }
            }
            return Ok(out);
        }
        let room_ids: Vec<&str> = rooms.iter().map(|(room_id, _)| *room_id).collect();
        for chunk in room_ids.chunks(200) {
            // Nothing before the user's membership event is unread; a read receipt covering
            // the thread (or unthreaded) is.
            let sql = format!(
                "SELECT a.room_id, COUNT(*), COUNT(CASE WHEN a.highlight THEN 1 END) FROM push_actions a
                 JOIN current_state c ON c.room_id = a.room_id AND c.type = 'm.room.member' AND c.state_key = a.user_id
                 JOIN events m ON m.event_id = c.event_id
                 WHERE a.user_id = $1 AND a.room_id IN ({}) AND a.stream_ordering > m.stream_ordering
                 AND a.stream_ordering > {COVERING_RECEIPT}
                 GROUP BY a.room_id",
                crate::e2e_keys::placeholders_from(2, chunk.len())
            );
            let mut params = vec![Value::from(user_id)];
            params.extend(chunk.iter().map(|room| Value::from(*room)));
            for row in self.db.query(&sql, params).await? {
                out.insert(row.string(0)?, (row.i64(1)?.max(0) as u64, row.i64(2)?.max(0) as u64));
            }
        }
        Ok(out)
    }

    /// The user's unread notifications across the rooms they are joined to (the badge count).
    pub async fn total_unread_notifications(&self, user_id: &str) -> Result<u64, StoreError> {
        let sql = format!(
            "SELECT COUNT(*) FROM push_actions a
             JOIN current_state c ON c.room_id = a.room_id AND c.type = 'm.room.member'
                 AND c.state_key = a.user_id AND c.membership = 'join'
             JOIN events m ON m.event_id = c.event_id
             WHERE a.user_id = $1 AND a.stream_ordering > m.stream_ordering
             AND a.stream_ordering > {COVERING_RECEIPT}"
        );
        let row = self.db.query_opt(&sql, params![user_id]).await?;
        Ok(row.map(|r| r.i64(0)).transpose()?.unwrap_or(0).max(0) as u64)
    }

    /// The user's push actions, newest first, strictly before `before` (a stream position).
    pub async fn push_actions_for_user(
        &self,
        user_id: &str,
        before: Option<i64>,
        limit: i64,
        only_highlight: bool,
    ) -> Result<Vec<PushActionRecord>, StoreError> {
        let highlight = if only_highlight { " AND a.highlight" } else { "" };
        let sql = format!(
            "SELECT a.event_id, a.room_id, a.stream_ordering, a.thread_id, a.actions, a.highlight, a.ts,
                 CASE WHEN a.stream_ordering <= {COVERING_RECEIPT} THEN 1 ELSE 0 END
             FROM push_actions a WHERE a.user_id = $1 AND a.stream_ordering < $2{highlight}
             ORDER BY a.stream_ordering DESC LIMIT $3"
        );
        let rows = self.db.query(&sql, params![user_id, before.unwrap_or(i64::MAX), limit]).await?;
        rows.iter()
            .map(|r| {
                Ok(PushActionRecord {
                    event_id: r.string(0)?,
                    room_id: r.string(1)?,
                    stream_ordering: r.i64(2)?,
                    thread_id: r.string(3)?,
                    actions: r.string(4)?,
                    highlight: r.bool(5)?,
                    ts: r.i64(6)?,
                    read: r.bool(7)?,
                })
            })
            .collect()
    }

    /// Deletes push actions recorded before `before_ts`; returns how many.
    pub async fn prune_push_actions(&self, before_ts: i64) -> Result<u64, StoreError> {
        self.db.execute("DELETE FROM push_actions WHERE ts < $1", params![before_ts]).await
    }

    /// The joined members of a room whose user ID ends in `:{server_name}`, with their member
    /// event's JSON.
    pub async fn joined_local_members_with_events(
        &self,
        room_id: &str,
        server_name: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let suffix = format!(":{server_name}");
        let pattern = format!("%{}", suffix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let rows = self
            .db
            .query(
                "SELECT c.state_key, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
                 WHERE c.room_id = $1 AND c.type = 'm.room.member' AND c.membership = 'join'
                 AND c.state_key LIKE $2 ESCAPE '\\'",
                params![room_id, pattern],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let user_id = row.string(0)?;
            // LIKE may be case-insensitive (SQLite): check the suffix exactly.
            if user_id.ends_with(&suffix) {
                out.push((user_id, row.string(1)?));
            }
        }
        Ok(out)
    }

    /// The thread an event belongs to (its thread root), if it is a thread reply.
    pub async fn thread_of_event(&self, event_id: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT relates_to_id FROM event_relations WHERE event_id = $1 AND rel_type = 'm.thread'",
                params![event_id],
            )
            .await?;
        row.map(|r| r.string(0)).transpose()
    }

    pub async fn pushers_of(&self, user_id: &str) -> Result<Vec<PusherRecord>, StoreError> {
        let sql = format!("SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 ORDER BY app_id, pushkey");
        self.db.query(&sql, params![user_id]).await?.iter().map(pusher_from_row).collect()
    }

    pub async fn get_pusher(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
    ) -> Result<Option<PusherRecord>, StoreError> {
        let sql = format!(
            "SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3"
        );
        self.db
            .query_opt(&sql, params![user_id, app_id, pushkey])
            .await?
            .as_ref()
            .map(pusher_from_row)
            .transpose()
    }

    /// Creates or updates a pusher. Without `append`, pushers of other users with the same
    /// app ID and pushkey are deleted (with their queued notifications).
    pub async fn upsert_pusher(&self, pusher: &PusherRecord, append: bool) -> Result<(), StoreError> {
        self.db
            .transaction(async |tx| {
                if !append {
                    for table in ["push_queue", "pushers"] {
                        tx.execute(
                            &format!("DELETE FROM {table} WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3"),
                            params![pusher.app_id.as_str(), pusher.pushkey.as_str(), pusher.user_id.as_str()],
                        )
                        .await?;
                    }
                }
                tx.execute(
                    &format!(
                        "INSERT INTO pushers ({PUSHER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                         ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = $4, app_display_name = $5,
                         device_display_name = $6, profile_tag = $7, lang = $8, data = $9, device_id = $10, pushkey_ts = $11"
                    ),
                    params![
                        pusher.user_id.as_str(),
                        pusher.app_id.as_str(),
                        pusher.pushkey.as_str(),
                        pusher.kind.as_str(),
                        pusher.app_display_name.as_str(),
                        pusher.device_display_name.as_str(),
                        pusher.profile_tag.clone(),
                        pusher.lang.as_str(),
                        pusher.data.as_str(),
                        pusher.device_id.clone(),
                        pusher.pushkey_ts
                    ],
                )
                .await?;
                Ok(())
            })
            .await
    }

    /// Deletes a pusher and its queued notifications; returns whether it existed.
    pub async fn delete_pusher(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
    ) -> Result<bool, StoreError> {
        self.db
            .transaction(async |tx| {
                tx.execute(
                    "DELETE FROM push_queue WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
                    params![user_id, app_id, pushkey],
                )
                .await?;
                let deleted = tx
                    .execute(
                        "DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
                        params![user_id, app_id, pushkey],
                    )
                    .await?;
                Ok(deleted > 0)
            })
            .await
    }

    /// Queued notifications due at `now`, oldest event first.
    pub async fn due_pushes(&self, now: i64, limit: i64) -> Result<Vec<QueuedPush>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT user_id, app_id, pushkey, event_id, room_id, stream_ordering, actions, attempts, created_ts
                 FROM push_queue WHERE next_attempt_ts <= $1 ORDER BY stream_ordering LIMIT $2",
                params![now, limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(QueuedPush {
                    user_id: r.string(0)?,
                    app_id: r.string(1)?,
                    pushkey: r.string(2)?,
                    event_id: r.string(3)?,
                    room_id: r.string(4)?,
                    stream_ordering: r.i64(5)?,
                    actions: r.string(6)?,
                    attempts: r.i64(7)?,
                    created_ts: r.i64(8)?,
                })
            })
            .collect()
    }

    /// When the next queued notification is due, if any is queued.
    pub async fn next_push_due(&self) -> Result<Option<i64>, StoreError> {
        let row = self.db.query_opt("SELECT MIN(next_attempt_ts) FROM push_queue", params![]).await?;
        Ok(row.map(|r| r.opt_i64(0)).transpose()?.flatten())
    }

    /// Removes one queued notification (sent, or given up on).
    pub async fn delete_queued_push(&self, push: &QueuedPush) -> Result<(), StoreError> {
        self.db
            .execute(
                "DELETE FROM push_queue WHERE user_id = $1 AND app_id = $2 AND pushkey = $3 AND event_id = $4",
                params![push.user_id.as_str(), push.app_id.as_str(), push.pushkey.as_str(), push.event_id.as_str()],
            )
            .await?;
        Ok(())
    }

    /// Postpones every queued notification of a pusher to `next_attempt_ts`, counting an attempt.
    pub async fn postpone_pushes(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
        next_attempt_ts: i64,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE push_queue SET attempts = attempts + 1, next_attempt_ts = $4
                 WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
                params![user_id, app_id, pushkey, next_attempt_ts],
            )
            .await?;
        Ok(())
    }

    /// Makes every queued notification due now with its backoff started over (at start-up:
    /// pending pushes are retried). Returns how many are queued.
    pub async fn make_queued_pushes_due(&self) -> Result<u64, StoreError> {
        self.db.execute("UPDATE push_queue SET next_attempt_ts = 0, attempts = 0", params![]).await
    }
}

/// Inserts push actions and queues a delivery to each HTTP pusher of each notified user, inside
/// the caller's transaction (the event persist path writes them with their events). Returns
/// the number of deliveries queued.
pub(crate) async fn insert_push_actions_tx(
    tx: &mut Tx<'_>,
    actions: &[NewPushAction],
) -> Result<u64, StoreError> {
    if actions.is_empty() {
        return Ok(0);
    }
    let now = now_ms();
    for chunk in actions.chunks(INSERT_CHUNK) {
        let sql = format!(
            "INSERT INTO push_actions (user_id, event_id, room_id, stream_ordering, thread_id, actions, highlight, ts)
             VALUES {} ON CONFLICT (user_id, room_id, stream_ordering) DO NOTHING",
            values_placeholders(chunk.len(), 8)
        );
        let mut params = Vec::with_capacity(chunk.len() * 8);
        for action in chunk {
            params.extend(params![
                action.user_id.as_str(),
                action.event_id.as_str(),
                action.room_id.as_str(),
                action.stream_ordering,
                action.thread_id.as_str(),
                action.actions.as_str(),
                action.highlight,
                now
            ]);
        }
        tx.execute(&sql, params).await?;
    }
    // Most users have no pusher: find those who do with one indexed lookup, then queue per
    // notified user (pushers are keyed by user).
    let mut users: Vec<&str> = actions.iter().map(|a| a.user_id.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    let mut with_pushers = std::collections::HashSet::new();
    for chunk in users.chunks(INSERT_CHUNK) {
        let placeholders = crate::placeholder_list(chunk.len());
        let sql = format!(
            "SELECT DISTINCT user_id FROM pushers WHERE kind = 'http' AND user_id IN ({})",
            placeholders
        );
        let params = chunk.iter().map(|u| Value::from(*u)).collect();
        for row in tx.query(&sql, params).await? {
            with_pushers.insert(row.string(0)?);
        }
    }
    let mut queued = 0;
    for action in actions.iter().filter(|a| with_pushers.contains(&a.user_id)) {
        queued += tx
            .execute(
                "INSERT INTO push_queue (user_id, app_id, pushkey, event_id, room_id, stream_ordering, actions,
                    attempts, next_attempt_ts, created_ts)
                 SELECT p.user_id, p.app_id, p.pushkey, $2, $3, $4, $5, 0, $6, $6
                 FROM pushers p WHERE p.user_id = $1 AND p.kind = 'http'
                 ON CONFLICT (user_id, app_id, pushkey, event_id) DO NOTHING",
                params![
                    action.user_id.as_str(),
                    action.event_id.as_str(),
                    action.room_id.as_str(),
                    action.stream_ordering,
                    action.actions.as_str(),
                    now
                ],
            )
            .await?;
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::values_placeholders;

    #[test]
    fn placeholders_number_every_cell() {
        assert_eq!(values_placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
