//! Sliding sync (MSC4186) connection positions: per (user, device, conn_id), the positions
//! handed out, each with the connection state as of it (opaque text here). A position's
//! stored form may be the changes from an earlier position's ("builds on" it): such earlier
//! positions are held, no longer kept (`created_ts` negated: a request naming one is refused),
//! as long as a kept position builds on them.
//!
//! On PostgreSQL they live in the main database (migration 0027). On SQLite they live in a
//! database file of their own beside the main one (`<database>-sliding-sync`): every request
//! writes a position, and a write to the main file would make every reader connection drop
//! its page cache (WAL mode), so that a client's polling alone would keep the server's reads
//! cold. The file holds nothing that cannot be lost: a position it no longer has is answered
//! `M_UNKNOWN_POS` and the client starts its connection over. The main file's table of
//! migration 0027 stays empty there.

use std::path::{Path, PathBuf};

use crate::engine::{Db, Dialect, Value};
use crate::{Store, StoreError, params};

/// The SQLite file of sliding sync positions beside the main database at `main`.
pub(crate) fn sqlite_file_path(main: &Path) -> PathBuf {
    let mut name = main.as_os_str().to_owned();
    name.push("-sliding-sync");
    PathBuf::from(name)
}

/// Opens (creating if needed) the SQLite file of sliding sync positions.
pub(crate) async fn open_sqlite_file(main: &Path) -> Result<Db, StoreError> {
    let schema = include_str!("../migrations/0027_sliding_sync.sql");
    Db::open_sqlite_with_schema(&sqlite_file_path(main), "sliding_sync_positions", schema).await
}

/// Where one connection is.
#[derive(Clone, Copy, Debug)]
pub struct SlidingSyncConnection<'a> {
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub conn_id: &'a str,
}

/// A position to record (see [`Store::save_sliding_sync_position`]).
#[derive(Clone, Copy, Debug)]
pub struct NewSlidingSyncPosition<'a> {
    /// The position the request came with (`None`: a fresh start).
    pub kept: Option<i64>,
    /// The positions `kept`'s stored form builds on.
    pub kept_builds_on: &'a [i64],
    pub pos: i64,
    /// The positions `state` builds on (none when it is whole).
    pub builds_on: &'a [i64],
    pub state: &'a str,
}

impl Store {
    /// The state stored with a position of a connection, `None` when this connection never
    /// handed it out or no longer keeps it.
    pub async fn sliding_sync_position(
        &self,
        connection: SlidingSyncConnection<'_>,
        pos: i64,
    ) -> Result<Option<String>, StoreError> {
        self.sliding_sync_stored_form(connection, pos, true).await
    }

    /// The stored form of a position a kept one builds on (held, kept or not).
    pub async fn sliding_sync_position_built_on(
        &self,
        connection: SlidingSyncConnection<'_>,
        pos: i64,
    ) -> Result<Option<String>, StoreError> {
        self.sliding_sync_stored_form(connection, pos, false).await
    }

    async fn sliding_sync_stored_form(
        &self,
        connection: SlidingSyncConnection<'_>,
        pos: i64,
        kept_only: bool,
    ) -> Result<Option<String>, StoreError> {
        let kept = if kept_only { " AND created_ts > 0" } else { "" };
        let row = self
            .sliding
            .query_opt(
                &format!(
                    "SELECT state FROM sliding_sync_positions
                     WHERE user_id = $1 AND device_id = $2 AND conn_id = $3 AND pos = $4{kept}"
                ),
                params![connection.user_id, connection.device_id, connection.conn_id, pos],
            )
            .await?;
        row.map(|r| r.string(0)).transpose()
    }

    /// Whether a connection still keeps a position (its state is not read).
    pub async fn sliding_sync_position_kept(
        &self,
        connection: SlidingSyncConnection<'_>,
        pos: i64,
    ) -> Result<bool, StoreError> {
        let row = self
            .sliding
            .query_opt(
                "SELECT 1 FROM sliding_sync_positions
                 WHERE user_id = $1 AND device_id = $2 AND conn_id = $3 AND pos = $4 AND created_ts > 0",
                params![connection.user_id, connection.device_id, connection.conn_id, pos],
            )
            .await?;
        Ok(row.is_some())
    }

    /// Records a new position of a connection in one transaction. The connection keeps `kept`
    /// (the one the request came with; `None`: a fresh start) and the new one; it holds, no
    /// longer keeping them, the positions they build on (`new.kept_builds_on`,
    /// `new.builds_on`); every other position of it is deleted. On a fresh start (only then can
    /// the device have one more connection), beyond `max_connections` connections of the
    /// device the least recently used go. `Ok(false)`, and nothing written,
    /// when a position the new one builds on is no longer stored (the caller stores it whole).
    pub async fn save_sliding_sync_position(
        &self,
        connection: SlidingSyncConnection<'_>,
        new: NewSlidingSyncPosition<'_>,
        now_ms: i64,
        max_connections: usize,
    ) -> Result<bool, StoreError> {
        let SlidingSyncConnection { user_id, device_id, conn_id } = connection;
        let NewSlidingSyncPosition { kept, kept_builds_on, pos, builds_on, state } = new;
        let mut held: Vec<i64> = kept_builds_on.iter().chain(builds_on).copied().collect();
        held.sort_unstable();
        held.dedup();
        let fresh = kept.is_none();
        let kept = kept.unwrap_or(-1);
        // Not waited onto the disk: a position lost with the machine's power is answered with
        // M_UNKNOWN_POS, and the client starts the connection over.
        self.sliding
            .transaction_unsynced(async |tx| {
                if !builds_on.is_empty() {
                    let sql = format!(
                        "SELECT COUNT(*) FROM sliding_sync_positions
                         WHERE user_id = $1 AND device_id = $2 AND conn_id = $3 AND pos IN ({})",
                        crate::e2e_keys::placeholders_from(4, builds_on.len())
                    );
                    let mut params = params![user_id, device_id, conn_id];
                    params.extend(builds_on.iter().map(|pos| Value::from(*pos)));
                    let found = tx.query(&sql, params).await?.first().map(|r| r.i64(0)).transpose()?;
                    if found != Some(builds_on.len() as i64) {
                        return Ok(false);
                    }
                }
                let mut params = params![user_id, device_id, conn_id, kept];
                params.extend(held.iter().map(|pos| Value::from(*pos)));
                tx.execute(
                    &format!(
                        "DELETE FROM sliding_sync_positions
                         WHERE user_id = $1 AND device_id = $2 AND conn_id = $3 AND pos NOT IN ({})",
                        crate::e2e_keys::placeholders_from(4, held.len() + 1)
                    ),
                    params.clone(),
                )
                .await?;
                if !held.is_empty() {
                    tx.execute(
                        &format!(
                            "UPDATE sliding_sync_positions SET created_ts = -created_ts
                             WHERE user_id = $1 AND device_id = $2 AND conn_id = $3 AND pos <> $4
                             AND created_ts > 0 AND pos IN ({})",
                            crate::e2e_keys::placeholders_from(5, held.len())
                        ),
                        params,
                    )
                    .await?;
                }
                tx.execute(
                    "INSERT INTO sliding_sync_positions (user_id, device_id, conn_id, pos, created_ts, state)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    params![user_id, device_id, conn_id, pos, now_ms.max(1), state],
                )
                .await?;
                if !fresh {
                    return Ok(true);
                }
                let rows = tx
                    .query(
                        "SELECT conn_id FROM sliding_sync_positions WHERE user_id = $1 AND device_id = $2
                         GROUP BY conn_id ORDER BY MAX(created_ts) DESC, conn_id",
                        params![user_id, device_id],
                    )
                    .await?;
                for row in rows.iter().skip(max_connections) {
                    let stale = row.string(0)?;
                    tx.execute(
                        "DELETE FROM sliding_sync_positions WHERE user_id = $1 AND device_id = $2 AND conn_id = $3",
                        params![user_id, device_id, stale.as_str()],
                    )
                    .await?;
                }
                Ok(true)
            })
            .await
    }

    /// Deletes the positions of some of a user's devices (`None`: of all of them) from the
    /// SQLite file of their own, before the devices themselves go (on PostgreSQL the deleting
    /// transaction takes them with the rest, see `devices::DEVICE_TABLES`): a failure between
    /// the two leaves a device without positions, which its client starts over from.
    pub(crate) async fn delete_sliding_sync_positions_apart(
        &self,
        user_id: &str,
        device_ids: Option<&[String]>,
    ) -> Result<(), StoreError> {
        if self.db.dialect() != Dialect::Sqlite {
            return Ok(());
        }
        match device_ids {
            None => {
                self.sliding
                    .execute("DELETE FROM sliding_sync_positions WHERE user_id = $1", params![user_id])
                    .await?;
            }
            Some(device_ids) => {
                for device_id in device_ids {
                    self.sliding
                        .execute(
                            "DELETE FROM sliding_sync_positions WHERE user_id = $1 AND device_id = $2",
                            params![user_id, device_id.as_str()],
                        )
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// The stream position of the newest visible event of one of `types` in a room, at or
    /// before `upto` (positive positions only: backfilled events cannot be compared).
    pub async fn latest_event_of_types(
        &self,
        room_id: &str,
        types: &[&str],
        upto: i64,
    ) -> Result<Option<i64>, StoreError> {
        let list: Vec<String> = types.iter().map(|t| format!("'{}'", t.replace('\'', "''"))).collect();
        let sql = format!(
            "SELECT stream_ordering FROM events WHERE room_id = $1 AND stream_ordering <= $2 AND stream_ordering > 0
             AND type IN ({}) AND {} ORDER BY stream_ordering DESC LIMIT 1",
            list.join(", "),
            crate::events::VISIBLE
        );
        let row = self.db.query_opt(&sql, params![room_id, upto]).await?;
        row.map(|r| r.i64(0)).transpose()
    }

    /// The stream position of the room's newest event of any kind (0 for none).
    pub async fn latest_event_position(&self, room_id: &str) -> Result<i64, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT stream_ordering FROM events WHERE room_id = $1 AND stream_ordering > 0
                 ORDER BY stream_ordering DESC LIMIT 1",
                params![room_id],
            )
            .await?;
        Ok(row.map(|r| r.i64(0)).transpose()?.unwrap_or(0))
    }

    /// The user's memberships in the current state of each room, with their event's stream
    /// position and sender, in one read.
    pub async fn user_memberships_positioned(
        &self,
        user_id: &str,
    ) -> Result<Vec<PositionedMembership>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT c.room_id, c.membership, c.event_id, e.stream_ordering, e.sender
                 FROM current_state c JOIN events e ON e.event_id = c.event_id
                 WHERE c.state_key = $1 AND c.type = 'm.room.member' AND c.membership IS NOT NULL
                 ORDER BY c.room_id",
                params![user_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PositionedMembership {
                    room_id: r.string(0)?,
                    membership: r.string(1)?,
                    event_id: r.string(2)?,
                    stream_ordering: r.i64(3)?,
                    sender: r.string(4)?,
                })
            })
            .collect()
    }
}

/// A user's membership in a room's current state, with where its event sits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PositionedMembership {
    pub room_id: String,
    pub membership: String,
    pub event_id: String,
    pub stream_ordering: i64,
    pub sender: String,
}
