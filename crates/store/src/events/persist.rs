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

    pub(super) async fn persist_in(
        &self,
        tx: &mut crate::Tx<'_>,
        events: &[NewEvent],
        push_actions: &[crate::push::NewPushAction],
    ) -> Result<(Vec<Option<i64>>, u64), StoreError> {
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
        // The full-text index last: SQLite's FTS5 flushes its pending terms before every later
        // statement of the transaction.
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
