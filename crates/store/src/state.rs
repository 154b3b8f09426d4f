//! State groups with skip deltas (see migration 0003): creating a group from its parent plus
//! changes, and reading one key or the whole state of a group in one query each.

use std::collections::BTreeMap;

use crate::{Store, StoreError, Tx, params};

/// `(type, state_key)` to event ID (`None`: the key is explicitly absent).
pub type StateDelta = BTreeMap<(String, String), Option<String>>;

/// The recursive walk from a group along its skip pointers, newest first (`n` = distance).
/// The groups a state is read from, nearest first. Readers join it to `state_group_entries`
/// with `CROSS JOIN`, which makes SQLite walk the chain and look each group up by key: left
/// to itself, SQLite 3.54 scanned every entry of every room instead (seconds per read on a
/// large server).
const CHAIN: &str = "WITH RECURSIVE chain(id, base_id, n) AS (
        SELECT id, base_id, 0 FROM state_groups WHERE id = $1
        UNION ALL
        SELECT g.id, g.base_id, c.n + 1 FROM state_groups g JOIN chain c ON g.id = c.base_id
    )";

/// Creates a state group: `parent`'s state with `changes` applied. Runs inside the caller's
/// transaction, so the group is never seen half-written.
pub async fn create_state_group(
    tx: &mut Tx<'_>,
    room_id: &str,
    parent: Option<i64>,
    changes: &StateDelta,
) -> Result<i64, StoreError> {
    let (depth, base, delta) = match parent {
        None => (1i64, None, changes.clone()),
        Some(parent) => {
            let depth = group_depth(tx, parent).await? + 1;
            let target = depth & (depth - 1);
            // Gather the deltas from the parent back to the group at depth `target` (or to the
            // root when target is 0); newer entries win.
            let mut delta: StateDelta = BTreeMap::new();
            let mut current = Some(parent);
            let mut base = None;
            while let Some(group) = current {
                let (group_depth, group_base) = group_meta(tx, group).await?;
                if group_depth <= target {
                    base = Some(group);
                    break;
                }
                let rows = tx
                    .query(
                        "SELECT type, state_key, event_id FROM state_group_entries WHERE group_id = $1",
                        params![group],
                    )
                    .await?;
                for row in rows {
                    delta.entry((row.string(0)?, row.string(1)?)).or_insert(row.opt_string(2)?);
                }
                current = group_base;
            }
            for (key, value) in changes {
                delta.insert(key.clone(), value.clone());
            }
            if base.is_none() {
                // A full snapshot needs no tombstones.
                delta.retain(|_, v| v.is_some());
            }
            (depth, base, delta)
        }
    };
    let rows = tx
        .query(
            "INSERT INTO state_groups (room_id, parent_id, base_id, depth) VALUES ($1, $2, $3, $4) RETURNING id",
            params![room_id, parent, base, depth],
        )
        .await?;
    let id = rows.first().ok_or_else(|| StoreError::Decode("no state group id".to_owned()))?.i64(0)?;
    for ((kind, state_key), event_id) in &delta {
        tx.execute(
            "INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)",
            params![id, kind.as_str(), state_key.as_str(), event_id.clone()],
        )
        .await?;
    }
    Ok(id)
}

async fn group_depth(tx: &mut Tx<'_>, group: i64) -> Result<i64, StoreError> {
    Ok(group_meta(tx, group).await?.0)
}

async fn group_meta(tx: &mut Tx<'_>, group: i64) -> Result<(i64, Option<i64>), StoreError> {
    let row = tx
        .query_opt("SELECT depth, base_id FROM state_groups WHERE id = $1", params![group])
        .await?
        .ok_or_else(|| StoreError::Decode(format!("unknown state group {group}")))?;
    Ok((row.i64(0)?, row.opt_i64(1)?))
}

impl Store {
    /// The whole state of a group.
    pub async fn state_of_group(&self, group: i64) -> Result<BTreeMap<(String, String), String>, StoreError> {
        let sql = format!(
            "{CHAIN} SELECT type, state_key, event_id FROM (
                SELECT e.type, e.state_key, e.event_id,
                       ROW_NUMBER() OVER (PARTITION BY e.type, e.state_key ORDER BY c.n) AS rn
                FROM chain c CROSS JOIN state_group_entries e WHERE e.group_id = c.id
            ) AS latest WHERE rn = 1 AND event_id IS NOT NULL"
        );
        let rows = self.db.query(&sql, params![group]).await?;
        let mut state = BTreeMap::new();
        for row in rows {
            state.insert((row.string(0)?, row.string(1)?), row.string(2)?);
        }
        Ok(state)
    }

    /// The state of a group for one event type (all state keys, or one).
    pub async fn state_of_group_for_type(
        &self,
        group: i64,
        kind: &str,
        state_key: Option<&str>,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let (filter, params) = match state_key {
            Some(key) => ("AND e.state_key = $3", params![group, kind, key]),
            None => ("", params![group, kind]),
        };
        let sql = format!(
            "{CHAIN} SELECT state_key, event_id FROM (
                SELECT e.state_key, e.event_id,
                       ROW_NUMBER() OVER (PARTITION BY e.state_key ORDER BY c.n) AS rn
                FROM chain c CROSS JOIN state_group_entries e
                WHERE e.group_id = c.id AND e.type = $2 {filter}
            ) AS latest WHERE rn = 1 AND event_id IS NOT NULL"
        );
        let rows = self.db.query(&sql, params).await?;
        let mut state = BTreeMap::new();
        for row in rows {
            state.insert(row.string(0)?, row.string(1)?);
        }
        Ok(state)
    }

    /// Number of rows stored for state (for storage benchmarks and tests).
    pub async fn count_state_rows(&self, room_id: &str) -> Result<i64, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT COUNT(*) FROM state_group_entries e JOIN state_groups g ON g.id = e.group_id WHERE g.room_id = $1",
                params![room_id],
            )
            .await?
            .ok_or_else(|| StoreError::Decode("no count".to_owned()))?;
        row.i64(0)
    }
}
