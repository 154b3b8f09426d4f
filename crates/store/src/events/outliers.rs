//! Events another server built, persisted with what they stand on: the room a remote join
//! brings (its row, the state and auth chain as outliers, the state before the join) and the
//! join or leave event itself, in one transaction.
//!
//! Outliers are stored with `outlier = TRUE` and a negative stream ordering (counting down
//! from the lowest one stored), so that no stream read (sync, `/messages`, which read
//! positions above a published token and filter `NOT outlier`) ever returns them.

use super::NewEvent;
use crate::engine::Dialect;
use crate::state::{StateDelta, create_state_group};
use crate::{Store, StoreError, Tx, params};

/// An event stored as an outlier: its JSON and the fields kept beside it.
#[derive(Clone, Debug)]
pub struct NewOutlier {
    pub event_id: String,
    pub room_id: String,
    pub depth: i64,
    pub sender: String,
    pub kind: String,
    pub state_key: Option<String>,
    pub origin_server_ts: i64,
    pub json: String,
}

/// One entry of a room's state, as current state records it.
#[derive(Clone, Debug)]
pub struct StateEntry {
    pub kind: String,
    pub state_key: String,
    pub event_id: String,
    /// For `m.room.member`: the membership.
    pub membership: Option<String>,
}

/// What an event built by another server is persisted with.
#[derive(Clone, Debug, Default)]
pub struct RemoteBuilt {
    /// A room this server joins: its version (a known room keeps its row).
    pub room_version: Option<String>,
    /// Events stored as outliers (already stored ones are left as they are).
    pub outliers: Vec<NewOutlier>,
    /// The whole state before the event: it replaces the room's current state, and a new
    /// state group holds it. `None`: the event's own `state_before` is the state before it.
    pub state_before: Option<Vec<StateEntry>>,
}

impl Store {
    /// Persists an event another server built (a remote join or leave) with everything it
    /// stands on, in one transaction that may share its commit (see
    /// [`crate::Db::transaction_batched`]). Unlike local events, its previous events need not
    /// be stored (they are the other server's); it becomes the room's only forward extremity.
    /// Returns the state group after the event.
    pub async fn persist_remote_built(
        &self,
        event: &NewEvent,
        remote: &RemoteBuilt,
    ) -> Result<(Option<i64>, crate::Durability), StoreError> {
        let (state_after, durability) = self
            .db
            .transaction_batched(false, async |tx| {
                if let Some(version) = &remote.room_version {
                    tx.execute(
                        "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, NULL, $3)
                         ON CONFLICT (room_id) DO NOTHING",
                        params![event.room_id.as_str(), version.as_str(), crate::now_ms()],
                    )
                    .await?;
                }
                insert_outliers(tx, &remote.outliers).await?;
                let mut event = event.clone();
                if let Some(state) = &remote.state_before {
                    event.state_before = Some(replace_current_state(tx, &event.room_id, state).await?);
                }
                tx.execute(
                    "DELETE FROM forward_extremities WHERE room_id = $1",
                    params![event.room_id.as_str()],
                )
                .await?;
                let (mut afters, _) = self.persist_in(tx, std::slice::from_ref(&event), &[]).await?;
                Ok(afters.pop().and_then(|persisted| persisted.state_after))
            })
            .await?;
        Ok((state_after, durability))
    }
}

impl Store {
    /// Persists events as outliers on their own (the state and auth chain fetched at a gap
    /// in a room's history): below the lowest stream ordering stored, never returned by a
    /// stream read. Already stored events are left as they are.
    pub async fn persist_outliers(&self, outliers: &[NewOutlier]) -> Result<(), StoreError> {
        if outliers.is_empty() {
            return Ok(());
        }
        self.db.transaction(async |tx| insert_outliers(tx, outliers).await).await
    }
}

/// Inserts outliers below the lowest stream ordering stored.
async fn insert_outliers(tx: &mut Tx<'_>, outliers: &[NewOutlier]) -> Result<(), StoreError> {
    if outliers.is_empty() {
        return Ok(());
    }
    let mut next = lowest_stream_ordering(tx).await? - 1;
    for outlier in outliers {
        let inserted = tx
            .execute(
                "INSERT INTO events (event_id, room_id, stream_ordering, depth, sender, type, state_key,
                    origin_server_ts, json, outlier)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, TRUE) ON CONFLICT (event_id) DO NOTHING",
                params![
                    outlier.event_id.as_str(),
                    outlier.room_id.as_str(),
                    next,
                    outlier.depth,
                    outlier.sender.as_str(),
                    outlier.kind.as_str(),
                    outlier.state_key.clone(),
                    outlier.origin_server_ts,
                    outlier.json.as_str()
                ],
            )
            .await?;
        if inserted > 0 {
            next -= 1;
        }
    }
    Ok(())
}

/// The lowest stream ordering stored (at most 0): events stored below the stream (outliers,
/// backfilled history) take the orderings below it. On PostgreSQL a transaction-wide advisory
/// lock serialises the writers (SQLite has one writer), so two never take the same ordering.
pub(super) async fn lowest_stream_ordering(tx: &mut Tx<'_>) -> Result<i64, StoreError> {
    if tx.dialect() == Dialect::Postgres {
        tx.execute("SELECT pg_advisory_xact_lock(7263530001)", params![]).await?;
    }
    Ok(tx
        .query_opt("SELECT COALESCE(MIN(stream_ordering), 0) FROM events", params![])
        .await?
        .map(|row| row.i64(0))
        .transpose()?
        .unwrap_or(0)
        .min(0))
}

/// Makes `state` the room's current state and returns a new state group holding it.
async fn replace_current_state(
    tx: &mut Tx<'_>,
    room_id: &str,
    state: &[StateEntry],
) -> Result<i64, StoreError> {
    tx.execute("DELETE FROM current_state WHERE room_id = $1", params![room_id]).await?;
    let mut delta = StateDelta::new();
    for entry in state {
        tx.execute(
            "INSERT INTO current_state (room_id, type, state_key, event_id, membership) VALUES ($1, $2, $3, $4, $5)",
            params![
                room_id,
                entry.kind.as_str(),
                entry.state_key.as_str(),
                entry.event_id.as_str(),
                entry.membership.clone()
            ],
        )
        .await?;
        delta.insert((entry.kind.clone(), entry.state_key.clone()), Some(entry.event_id.clone()));
    }
    crate::room_stats::recompute_room_stats(tx, room_id).await?;
    create_state_group(tx, room_id, None, &delta).await
}
