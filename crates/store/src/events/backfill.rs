//! History older than what a room has, fetched from other servers (`/backfill`): where it
//! ends here, and the events stored below the stream (negative stream orderings, so that no
//! stream read after a published token, such as `/sync`, returns them as new).

use super::NewEvent;
use super::outliers::lowest_stream_ordering;
use crate::{Store, StoreError, params};

impl Store {
    /// The room's backward extremities: events named as prev events by events of its
    /// timeline (not outliers, not rejected) that the room's timeline does not hold, the
    /// deepest-named first, at most `limit`.
    pub async fn backward_extremities(&self, room_id: &str, limit: i64) -> Result<Vec<String>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT g.prev_event_id, MAX(e.depth) AS depth FROM event_edges g
                 JOIN events e ON e.event_id = g.event_id
                 WHERE e.room_id = $1 AND NOT e.outlier AND e.rejected_reason IS NULL
                   AND NOT EXISTS (SELECT 1 FROM events p WHERE p.event_id = g.prev_event_id AND NOT p.outlier)
                 GROUP BY g.prev_event_id ORDER BY depth DESC, g.prev_event_id LIMIT $2",
                params![room_id, limit],
            )
            .await?;
        rows.iter().map(|row| row.string(0)).collect()
    }

    /// Persists backfilled events (given oldest first, each with its state before and
    /// `remote.historical` set) in one transaction, below every stream ordering stored: the
    /// newest gets the highest of them, so that paginating backwards reads them newest first.
    /// Events already in the timeline are left out; one stored as an outlier joins the timeline.
    pub async fn persist_backfilled(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.db
            .transaction(async |tx| {
                let lowest = lowest_stream_ordering(tx).await?;
                let mut fresh: Vec<NewEvent> = Vec::with_capacity(events.len());
                for event in events {
                    let stored = tx
                        .query_opt(
                            "SELECT outlier FROM events WHERE event_id = $1",
                            params![event.event_id.as_str()],
                        )
                        .await?
                        .map(|row| row.bool(0))
                        .transpose()?;
                    match stored {
                        Some(false) => continue,
                        // An outlier (say the room's create event, from the join) joins the
                        // timeline: its row is written again below.
                        Some(true) => {
                            tx.execute(
                                "DELETE FROM events WHERE event_id = $1 AND outlier",
                                params![event.event_id.as_str()],
                            )
                            .await?;
                        }
                        None => {}
                    }
                    fresh.push(event.clone());
                }
                let count = fresh.len() as i64;
                for (index, event) in fresh.iter_mut().enumerate() {
                    event.stream_ordering = lowest - count + index as i64;
                }
                self.persist_in(tx, &fresh, &[]).await?;
                Ok(())
            })
            .await
    }
}
