//! Events: persisting a new event with everything that follows from it, reading events back,
//! and the SQL of room event filters.
//!
//! # Layout
//!
//! - this module: the event records ([`StoredEvent`], [`NewEvent`] and what it carries) and
//!   the columns every event read selects;
//! - [`persist`]: one transaction per batch of new events (edges, extremities, state group,
//!   current state, membership history, relations, transaction ID, redaction, push actions,
//!   full-text index);
//! - [`read`]: events by ID, by transaction, in stream order, near a timestamp;
//! - [`filter`]: room event filters as SQL conditions;
//! - [`outliers`]: events another server built (remote joins and leaves), with the room,
//!   outliers and state they stand on, in one transaction.
//!
//! Relations between events are read in `crate::relations`.

use crate::{Row, StoreError};

mod backfill;
mod filter;
mod outliers;
mod persist;
mod read;

pub use filter::EventFilterSql;
pub use outliers::{NewOutlier, RemoteBuilt, StateEntry};
pub use persist::PersistedEvent;
// Named here by `service::rooms::relations` until its import follows the move.
pub use crate::relations::RelatedEventsQuery;

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
    /// Why the authorization rules rejected this remote event, if they did.
    pub rejected_reason: Option<String>,
    /// A remote event the current state refused (kept, never shown to clients).
    pub soft_failed: bool,
}

impl StoredEvent {
    /// Whether clients may see the event at all (not an outlier, not rejected, not
    /// soft-failed): what [`VISIBLE`] selects in SQL.
    pub fn visible(&self) -> bool {
        !self.outlier && self.rejected_reason.is_none() && !self.soft_failed
    }
}

pub(crate) const EVENT_COLUMNS: &str = "event_id, room_id, stream_ordering, json, state_before, state_after, replaces_state, redacted_by, outlier, rejected_reason, soft_failed";

/// How many columns [`EVENT_COLUMNS`] has (a query selecting more reads them after these).
pub(crate) const EVENT_COLUMN_COUNT: usize = 11;

/// The condition on `events` (unaliased) that keeps what clients may see: no outliers, no
/// rejected and no soft-failed events. Every client read of events in stream order uses it.
pub(crate) const VISIBLE: &str = "NOT outlier AND rejected_reason IS NULL AND NOT soft_failed";

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
        rejected_reason: row.opt_string(9)?,
        soft_failed: row.bool(10)?,
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
    /// For an event received from another server: what its checks decided.
    pub remote: Option<RemoteEvent>,
    /// The servers the event is sent to: queued for them in the persisting transaction.
    pub federation_destinations: Vec<String>,
}

/// What the write path decided about an event received over federation.
#[derive(Clone, Debug, Default)]
pub struct RemoteEvent {
    /// Changes to `state_before` giving the state before the event, when it is not a stored
    /// group (the prev events' states resolved): a group created with the event.
    pub state_before_changes: crate::state::StateDelta,
    /// Rejected by the authorization rules: stored, never in the timeline, state or extremities.
    pub rejected_reason: Option<String>,
    /// Refused by the current state only: stored with its state, not a forward extremity.
    pub soft_failed: bool,
    /// When the room's current state after the event is not the event's state after (forks
    /// resolved): the change from the event's state after to it, and to the current state rows.
    pub current: Option<CurrentStateChange>,
    /// Backfilled history (older than what the room had): stored in the timeline with its
    /// state, but never a forward extremity nor a change to the room's current state.
    pub historical: bool,
}

/// The room's new current state after a remote event at a fork.
#[derive(Clone, Debug, Default)]
pub struct CurrentStateChange {
    /// Changes to the event's state after (a new group becomes the current state group).
    pub group_changes: crate::state::StateDelta,
    /// Changes to the current state rows: `(type, state_key)` to `(event ID, membership)`, or
    /// `None` where the key left the state.
    pub rows: Vec<CurrentStateRow>,
}

/// One change to the current state rows (see [`CurrentStateChange::rows`]).
pub type CurrentStateRow = ((String, String), Option<(String, Option<String>)>);

/// [`EVENT_COLUMNS`] of the table aliased `e`, for joins.
pub(crate) fn event_columns_of_e() -> String {
    EVENT_COLUMNS.split(", ").map(|c| format!("e.{c}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_column_count_matches_the_columns() {
        assert_eq!(super::EVENT_COLUMNS.split(", ").count(), super::EVENT_COLUMN_COUNT);
    }
}
