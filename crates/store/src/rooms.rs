//! Rooms: versions, current state and memberships, aliases, the public directory, reports,
//! forgotten rooms.

use std::collections::BTreeMap;

use crate::{Store, StoreError, params};

/// One membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipChange {
    pub event_id: String,
    pub room_id: String,
    pub user_id: String,
    pub membership: String,
    pub stream_ordering: i64,
}

/// A room as the public directory lists it (state is read separately).
#[derive(Clone, Debug)]
pub struct RoomRecord {
    pub room_id: String,
    pub room_version: String,
    pub creator: Option<String>,
    pub is_public: bool,
}

/// A report of an event, a room or a user.
#[derive(Clone, Debug, Default)]
pub struct NewReport {
    pub room_id: String,
    pub event_id: Option<String>,
    pub target_user_id: Option<String>,
    pub user_id: String,
    pub reason: Option<String>,
    pub score: Option<i64>,
}

impl Store {
    pub async fn get_room(&self, room_id: &str) -> Result<Option<RoomRecord>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT room_id, room_version, creator, is_public FROM rooms WHERE room_id = $1",
                params![room_id],
            )
            .await?;
        row.map(|r| {
            Ok(RoomRecord {
                room_id: r.string(0)?,
                room_version: r.string(1)?,
                creator: r.opt_string(2)?,
                is_public: r.bool(3)?,
            })
        })
        .transpose()
    }

    /// The current state of a room: `(type, state_key)` to event ID.
    pub async fn current_state(
        &self,
        room_id: &str,
    ) -> Result<BTreeMap<(String, String), String>, StoreError> {
        let rows = self
            .db
            .query("SELECT type, state_key, event_id FROM current_state WHERE room_id = $1", params![room_id])
            .await?;
        let mut state = BTreeMap::new();
        for row in rows {
            state.insert((row.string(0)?, row.string(1)?), row.string(2)?);
        }
        Ok(state)
    }

    /// The state group of a room's current state (see migration 0018).
    pub async fn current_state_group(&self, room_id: &str) -> Result<Option<i64>, StoreError> {
        let row = self
            .db
            .query_opt("SELECT current_state_group FROM rooms WHERE room_id = $1", params![room_id])
            .await?;
        Ok(row.map(|r| r.opt_i64(0)).transpose()?.flatten())
    }

    /// One current state event ID.
    pub async fn current_state_event(
        &self,
        room_id: &str,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT event_id FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3",
                params![room_id, kind, state_key],
            )
            .await?;
        row.map(|r| r.string(0)).transpose()
    }

    /// A user's current membership in a room.
    pub async fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT membership FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2",
                params![room_id, user_id],
            )
            .await?;
        Ok(row.map(|r| r.opt_string(0)).transpose()?.flatten())
    }

    /// Rooms where the user's current membership is one of `memberships`.
    pub async fn rooms_for_user(&self, user_id: &str, membership: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT room_id FROM current_state WHERE state_key = $1 AND type = 'm.room.member' AND membership = $2 ORDER BY room_id",
                params![user_id, membership],
            )
            .await?;
        rows.iter().map(|r| r.string(0)).collect()
    }

    /// Members of a room with a given membership.
    pub async fn room_members(&self, room_id: &str, membership: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT state_key FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = $2 ORDER BY state_key",
                params![room_id, membership],
            )
            .await?;
        rows.iter().map(|r| r.string(0)).collect()
    }

    /// The joined and invited members of each room (each list in user ID order; rooms with
    /// neither are left out), in one read per 200 rooms.
    pub async fn joined_and_invited_members_of(
        &self,
        room_ids: &[&str],
    ) -> Result<std::collections::HashMap<String, (Vec<String>, Vec<String>)>, StoreError> {
        let mut out: std::collections::HashMap<String, (Vec<String>, Vec<String>)> = Default::default();
        for chunk in room_ids.chunks(200) {
            let sql = format!(
                "SELECT room_id, state_key, membership FROM current_state
                 WHERE type = 'm.room.member' AND membership IN ('join', 'invite') AND room_id IN ({})
                 ORDER BY room_id, state_key",
                crate::placeholder_list(chunk.len())
            );
            let params = chunk.iter().map(|room| crate::Value::from(*room)).collect();
            for row in self.db.query(&sql, params).await? {
                let lists = out.entry(row.string(0)?).or_default();
                match row.string(2)?.as_str() {
                    "join" => lists.0.push(row.string(1)?),
                    _ => lists.1.push(row.string(1)?),
                }
            }
        }
        Ok(out)
    }

    /// How many members a room has with a given membership.
    pub async fn count_members(&self, room_id: &str, membership: &str) -> Result<i64, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT COUNT(*) FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = $2",
                params![room_id, membership],
            )
            .await?;
        Ok(row.map(|r| r.i64(0)).transpose()?.unwrap_or(0))
    }

    /// Whether two users share a joined room.
    pub async fn share_a_room(&self, a: &str, b: &str) -> Result<bool, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT 1 FROM current_state x JOIN current_state y ON x.room_id = y.room_id
                 WHERE x.type = 'm.room.member' AND x.state_key = $1 AND x.membership = 'join'
                 AND y.type = 'm.room.member' AND y.state_key = $2 AND y.membership = 'join' LIMIT 1",
                params![a, b],
            )
            .await?;
        Ok(row.is_some())
    }

    /// The user's membership in a room as of a stream position (the latest change at or
    /// before it).
    pub async fn membership_at(
        &self,
        room_id: &str,
        user_id: &str,
        stream_ordering: i64,
    ) -> Result<Option<MembershipChange>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT event_id, room_id, user_id, membership, stream_ordering FROM membership_history
                 WHERE room_id = $1 AND user_id = $2 AND stream_ordering <= $3 ORDER BY stream_ordering DESC LIMIT 1",
                params![room_id, user_id, stream_ordering],
            )
            .await?;
        row.map(|r| {
            Ok(MembershipChange {
                event_id: r.string(0)?,
                room_id: r.string(1)?,
                user_id: r.string(2)?,
                membership: r.string(3)?,
                stream_ordering: r.i64(4)?,
            })
        })
        .transpose()
    }

    /// A user's membership changes after a stream position, oldest first.
    pub async fn membership_changes_since(
        &self,
        user_id: &str,
        since: i64,
    ) -> Result<Vec<MembershipChange>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT event_id, room_id, user_id, membership, stream_ordering FROM membership_history
                 WHERE user_id = $1 AND stream_ordering > $2 ORDER BY stream_ordering",
                params![user_id, since],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(MembershipChange {
                    event_id: r.string(0)?,
                    room_id: r.string(1)?,
                    user_id: r.string(2)?,
                    membership: r.string(3)?,
                    stream_ordering: r.i64(4)?,
                })
            })
            .collect()
    }

    pub async fn forget_room(&self, user_id: &str, room_id: &str) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                params![user_id, room_id],
            )
            .await?;
        Ok(())
    }

    pub async fn is_forgotten(&self, user_id: &str, room_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .db
            .query_opt(
                "SELECT 1 FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2",
                params![user_id, room_id],
            )
            .await?
            .is_some())
    }

    pub async fn set_room_public(&self, room_id: &str, public: bool) -> Result<(), StoreError> {
        self.db
            .execute("UPDATE rooms SET is_public = $2 WHERE room_id = $1", params![room_id, public])
            .await?;
        Ok(())
    }

    /// Rooms published in the directory, by room ID.
    pub async fn public_rooms(&self) -> Result<Vec<String>, StoreError> {
        let rows =
            self.db.query("SELECT room_id FROM rooms WHERE is_public ORDER BY room_id", params![]).await?;
        rows.iter().map(|r| r.string(0)).collect()
    }

    /// Returns `false` if the alias exists.
    pub async fn create_alias(&self, alias: &str, room_id: &str, creator: &str) -> Result<bool, StoreError> {
        let inserted = self
            .db
            .execute(
                "INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                params![alias, room_id, creator, crate::now_ms()],
            )
            .await?;
        Ok(inserted > 0)
    }

    /// `(room ID, creator)` of an alias.
    pub async fn get_alias(&self, alias: &str) -> Result<Option<(String, Option<String>)>, StoreError> {
        let row = self
            .db
            .query_opt("SELECT room_id, creator FROM room_aliases WHERE alias = $1", params![alias])
            .await?;
        row.map(|r| Ok((r.string(0)?, r.opt_string(1)?))).transpose()
    }

    pub async fn delete_alias(&self, alias: &str) -> Result<bool, StoreError> {
        Ok(self.db.execute("DELETE FROM room_aliases WHERE alias = $1", params![alias]).await? > 0)
    }

    pub async fn aliases_of_room(&self, room_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .db
            .query("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias", params![room_id])
            .await?;
        rows.iter().map(|r| r.string(0)).collect()
    }

    pub async fn insert_report(&self, report: &NewReport) -> Result<i64, StoreError> {
        let rows = self
            .db
            .execute_returning(
                "INSERT INTO event_reports (received_ts, room_id, event_id, target_user_id, user_id, reason, score)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                params![
                    crate::now_ms(),
                    report.room_id.as_str(),
                    report.event_id.clone(),
                    report.target_user_id.clone(),
                    report.user_id.as_str(),
                    report.reason.clone(),
                    report.score
                ],
            )
            .await?;
        rows.first().ok_or_else(|| StoreError::Decode("no report id".to_owned()))?.i64(0)
    }

    /// Every report (of an event, a room or a user), newest first.
    pub async fn list_reports(&self) -> Result<Vec<ReportRecord>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT id, received_ts, room_id, event_id, target_user_id, user_id, reason, score FROM event_reports ORDER BY id DESC",
                params![],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ReportRecord {
                    id: r.i64(0)?,
                    received_ts: r.i64(1)?,
                    room_id: r.string(2)?,
                    event_id: r.opt_string(3)?,
                    target_user_id: r.opt_string(4)?,
                    user_id: r.string(5)?,
                    reason: r.opt_string(6)?,
                    score: r.opt_i64(7)?,
                })
            })
            .collect()
    }

    /// A user's current memberships: `(room ID, membership, member event ID)`.
    pub async fn user_memberships(&self, user_id: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT room_id, membership, event_id FROM current_state
                 WHERE state_key = $1 AND type = 'm.room.member' AND membership IS NOT NULL ORDER BY room_id",
                params![user_id],
            )
            .await?;
        rows.iter().map(|r| Ok((r.string(0)?, r.string(1)?, r.string(2)?))).collect()
    }
}

/// A report as stored: of an event (`event_id`), a user (`target_user_id`, no room) or a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRecord {
    pub id: i64,
    pub received_ts: i64,
    /// Empty for a user report.
    pub room_id: String,
    pub event_id: Option<String>,
    pub target_user_id: Option<String>,
    /// The reporter.
    pub user_id: String,
    pub reason: Option<String>,
    pub score: Option<i64>,
}

/// A report of an event, with the reported event's sender and JSON (when still stored).
#[derive(Clone, Debug)]
pub struct EventReportRecord {
    pub id: i64,
    pub received_ts: i64,
    pub room_id: String,
    pub event_id: String,
    /// The reporter.
    pub user_id: String,
    pub reason: Option<String>,
    pub score: Option<i64>,
    pub sender: Option<String>,
    pub event_json: Option<String>,
}

/// A page of event reports: `from` rows skipped, at most `limit`, oldest first if `forward`;
/// `user_id` and `room_id` match substrings of the reporter and room (as Synapse's admin API),
/// `event_sender` the reported event's sender exactly.
#[derive(Clone, Debug, Default)]
pub struct EventReportsQuery {
    pub from: i64,
    pub limit: i64,
    pub forward: bool,
    pub user_id: Option<String>,
    pub room_id: Option<String>,
    pub event_sender: Option<String>,
}

fn event_report_from_row(row: &crate::Row) -> Result<EventReportRecord, StoreError> {
    Ok(EventReportRecord {
        id: row.i64(0)?,
        received_ts: row.i64(1)?,
        room_id: row.string(2)?,
        event_id: row.string(3)?,
        user_id: row.string(4)?,
        reason: row.opt_string(5)?,
        score: row.opt_i64(6)?,
        sender: row.opt_string(7)?,
        event_json: row.opt_string(8)?,
    })
}

const EVENT_REPORT_COLUMNS: &str =
    "er.id, er.received_ts, er.room_id, er.event_id, er.user_id, er.reason, er.score, e.sender, e.json";

impl Store {
    /// Points every local alias of `old_room` at `new_room` (a room upgrade); returns how many.
    pub async fn move_aliases(&self, old_room: &str, new_room: &str) -> Result<u64, StoreError> {
        self.db
            .execute("UPDATE room_aliases SET room_id = $2 WHERE room_id = $1", params![old_room, new_room])
            .await
    }

    /// Event reports (not room or user reports) and how many match the filters in all.
    pub async fn event_reports(
        &self,
        query: &EventReportsQuery,
    ) -> Result<(Vec<EventReportRecord>, i64), StoreError> {
        let mut conditions = String::from("er.event_id IS NOT NULL");
        let mut params: Vec<crate::Value> = Vec::new();
        if let Some(user_id) = &query.user_id {
            params.push(crate::like_contains(user_id).into());
            conditions.push_str(&format!(" AND er.user_id LIKE ${} ESCAPE '\\'", params.len()));
        }
        if let Some(room_id) = &query.room_id {
            params.push(crate::like_contains(room_id).into());
            conditions.push_str(&format!(" AND er.room_id LIKE ${} ESCAPE '\\'", params.len()));
        }
        if let Some(sender) = &query.event_sender {
            params.push(sender.as_str().into());
            conditions.push_str(&format!(" AND e.sender = ${}", params.len()));
        }
        let total = self
            .db
            .query_opt(
                &format!(
                    "SELECT COUNT(*) FROM event_reports er LEFT JOIN events e ON e.event_id = er.event_id WHERE {conditions}"
                ),
                params.clone(),
            )
            .await?
            .map(|r| r.i64(0))
            .transpose()?
            .unwrap_or(0);
        let order = if query.forward { "ASC" } else { "DESC" };
        params.push(query.limit.into());
        params.push(query.from.into());
        let sql = format!(
            "SELECT {EVENT_REPORT_COLUMNS} FROM event_reports er LEFT JOIN events e ON e.event_id = er.event_id
             WHERE {conditions} ORDER BY er.received_ts {order}, er.id {order} LIMIT ${} OFFSET ${}",
            params.len() - 1,
            params.len()
        );
        let reports =
            self.db.query(&sql, params).await?.iter().map(event_report_from_row).collect::<Result<_, _>>()?;
        Ok((reports, total))
    }

    /// One event report by ID.
    pub async fn event_report(&self, id: i64) -> Result<Option<EventReportRecord>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_REPORT_COLUMNS} FROM event_reports er LEFT JOIN events e ON e.event_id = er.event_id
             WHERE er.id = $1 AND er.event_id IS NOT NULL"
        );
        self.db.query_opt(&sql, params![id]).await?.as_ref().map(event_report_from_row).transpose()
    }
}
