//! Persisting new events: one transaction per batch, with everything that follows from each
//! event.

use super::NewEvent;
use crate::state::{StateDelta, create_state_group};
use crate::{Store, StoreError, Tx, params};

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
        let (persisted, queued, durability) =
            self.persist_events_batched(events, push_actions, false).await?;
        durability.wait().await?;
        Ok((persisted.iter().map(|p| p.state_after).collect(), queued))
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
    ) -> Result<(Vec<PersistedEvent>, u64, crate::Durability), StoreError> {
        let ((persisted, queued), durability) = self
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
        Ok((persisted, queued, durability))
    }

    pub(super) async fn persist_in(
        &self,
        tx: &mut crate::Tx<'_>,
        events: &[NewEvent],
        push_actions: &[crate::push::NewPushAction],
    ) -> Result<(Vec<PersistedEvent>, u64), StoreError> {
        let mut out = Vec::with_capacity(events.len());
        let mut previous: Option<(&str, Option<i64>)> = None;
        // The rooms' `room_stats` rows follow their current state in this transaction.
        let mut stats = crate::room_stats::StatsChanges::default();
        for event in events {
            // Local events of one room chain; a remote event names its own state before.
            let state_before = match previous {
                Some((room, after)) if room == event.room_id && event.remote.is_none() => after,
                _ => event.state_before,
            };
            let persisted = persist_one(tx, event, state_before, &mut stats).await?;
            previous = Some((event.room_id.as_str(), persisted.state_after));
            out.push(persisted);
        }
        stats.apply(tx).await?;
        let queued = crate::push::insert_push_actions_tx(tx, push_actions).await?;
        let outbound: Vec<crate::federation_queue::QueuedPdu> = events
            .iter()
            .flat_map(|event| {
                event.federation_destinations.iter().map(|destination| crate::federation_queue::QueuedPdu {
                    destination: destination.clone(),
                    event_id: event.event_id.clone(),
                    stream_ordering: event.stream_ordering,
                })
            })
            .collect();
        crate::federation_queue::queue_pdus_tx(tx, &outbound).await?;
        // The full-text index last: SQLite's FTS5 flushes its pending terms before every later
        // statement of the transaction.
        for event in events.iter().filter(|e| applies(e)) {
            crate::search::index_event(tx, event).await?;
        }
        for event in events.iter().filter(|e| applies(e)) {
            if let Some((target, _)) = &event.redaction {
                crate::search::unindex_event(tx, target).await?;
            }
        }
        Ok((out, queued))
    }
}

/// The state groups a persisted event ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PersistedEvent {
    /// The state after the event (for a rejected event: the state before it).
    pub state_before: Option<i64>,
    pub state_after: Option<i64>,
    /// The room's current state group after the event (unchanged by a rejected or soft-failed
    /// event: `None` then).
    pub current_state_group: Option<i64>,
}

/// Whether an event takes part in the room (timeline, extremities, current state): every local
/// event, and remote ones neither rejected nor soft-failed.
fn applies(event: &NewEvent) -> bool {
    event.remote.as_ref().is_none_or(|r| r.rejected_reason.is_none() && !r.soft_failed)
}

async fn persist_one(
    tx: &mut Tx<'_>,
    event: &NewEvent,
    state_before: Option<i64>,
    stats: &mut crate::room_stats::StatsChanges,
) -> Result<PersistedEvent, StoreError> {
    if let Some((version, creator)) = &event.new_room {
        stats.full(&event.room_id);
        tx.execute(
            "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, $3, $4)",
            params![event.room_id.as_str(), version.as_str(), creator.as_str(), crate::now_ms()],
        )
        .await?;
    }
    let remote = event.remote.as_ref();
    let state_before = match remote {
        Some(remote) if !remote.state_before_changes.is_empty() => {
            Some(create_state_group(tx, &event.room_id, state_before, &remote.state_before_changes).await?)
        }
        _ => state_before,
    };
    let rejected = remote.is_some_and(|r| r.rejected_reason.is_some());
    let state_after = match &event.state_key {
        Some(_) if rejected => state_before,
        Some(state_key) => {
            let mut changes = StateDelta::new();
            changes.insert((event.kind.clone(), state_key.clone()), Some(event.event_id.clone()));
            Some(create_state_group(tx, &event.room_id, state_before, &changes).await?)
        }
        None => state_before,
    };
    tx.execute(
        "INSERT INTO events (event_id, room_id, stream_ordering, depth, sender, type, state_key, origin_server_ts,
            state_before, state_after, replaces_state, json, contains_url, rejected_reason, soft_failed)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
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
            event.contains_url,
            remote.and_then(|r| r.rejected_reason.clone()),
            remote.is_some_and(|r| r.soft_failed)
        ],
    )
    .await?;
    for prev in &event.prev_events {
        tx.execute(
            "INSERT INTO event_edges (event_id, prev_event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            params![event.event_id.as_str(), prev.as_str()],
        )
        .await?;
    }
    if !applies(event) || remote.is_some_and(|r| r.historical) {
        // Rejected or soft-failed: stored (and its state, for a soft-failed one), nothing more.
        // Backfilled history: in the timeline, but the room's head does not move.
        return Ok(PersistedEvent { state_before, state_after, current_state_group: None });
    }
    for prev in &event.prev_events {
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
    let current = remote.and_then(|r| r.current.as_ref());
    let current_state_group = match current {
        Some(current) => {
            Some(create_state_group(tx, &event.room_id, state_after, &current.group_changes).await?)
        }
        None => state_after,
    };
    if remote.is_some() || event.state_key.is_some() {
        tx.execute(
            "UPDATE rooms SET current_state_group = $2 WHERE room_id = $1",
            params![event.room_id.as_str(), current_state_group],
        )
        .await?;
    }
    if let Some(current) = current {
        for ((kind, state_key), row) in &current.rows {
            let new = row.as_ref().map(|(_, membership)| membership.as_deref());
            stats.before_write(tx, &event.room_id, kind, state_key, new).await?;
            match row {
                Some((event_id, membership)) => {
                    tx.execute(
                        "INSERT INTO current_state (room_id, type, state_key, event_id, membership) VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = $4, membership = $5",
                        params![
                            event.room_id.as_str(),
                            kind.as_str(),
                            state_key.as_str(),
                            event_id.as_str(),
                            membership.clone()
                        ],
                    )
                    .await?;
                }
                None => {
                    tx.execute(
                        "DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3",
                        params![event.room_id.as_str(), kind.as_str(), state_key.as_str()],
                    )
                    .await?;
                }
            }
        }
    }
    if let Some(state_key) = &event.state_key {
        if current.is_none() {
            let new = Some(event.membership.as_deref());
            stats.before_write(tx, &event.room_id, &event.kind, state_key, new).await?;
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
        }
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
        stats.before_redaction(tx, &event.room_id, target).await?;
        tx.execute(
            "UPDATE events SET json = $2, redacted_by = $3 WHERE event_id = $1 AND redacted_by IS NULL",
            params![target.as_str(), pruned.as_str(), event.event_id.as_str()],
        )
        .await?;
        // A redacted event no longer relates to anything.
        tx.execute("DELETE FROM event_relations WHERE event_id = $1", params![target.as_str()]).await?;
    }
    Ok(PersistedEvent { state_before, state_after, current_state_group })
}
