//! State resolution: the room state where forks of the room's DAG meet, as the room version's
//! algorithm decides it.
//!
//! # Layout
//!
//! - [`resolve_state`]: the one entry point; it dispatches on the room version's algorithm.
//! - `v1`: our implementation of room version 1's algorithm (ruma has none): keep what the
//!   forks agree on, then settle conflicted power levels, join rules, memberships and finally
//!   all other keys, each against the state settled so far.
//! - `v2`: room versions 2 to 12 through ruma's `resolve` (state resolution v2, and v2.1 in room
//!   version 12), with our conversion of state maps and the conflicted state subgraph that v2.1
//!   adds to the full conflicted set.
//!
//! Neither algorithm does IO: events come from the caller's `fetch_event`, and for v2 the
//! caller passes each fork's full auth chain.

use std::collections::BTreeSet;

use ruma::room_version_rules::{RoomVersionRules, StateResolutionVersion};
use ruma::{EventId, OwnedEventId};

use crate::pdu::{Pdu, StateMap};

mod v1;
mod v2;

/// Resolves the states of several forks of a room into one, with the room version's algorithm.
///
/// `state_maps` are the forks' states; `auth_chains[i]` is the full auth chain of the events in
/// `state_maps[i]` (the algorithm of room version 1 does not use them; the others need exactly
/// one per state map). `fetch_event` returns any event of the room by ID.
///
/// Events that `fetch_event` cannot find are not candidates: a conflicted key whose events are
/// all missing is left out of the result, as in Synapse and ruma. An event whose content the
/// authorization rules cannot read is refused by them, never a panic. `Err` is returned for
/// inputs the algorithm cannot work with (an auth chain per state map missing, a state map
/// entry naming an event of another type or state key, a missing event ruma needs midway).
pub fn resolve_state(
    rules: &RoomVersionRules,
    state_maps: &[StateMap],
    auth_chains: &[BTreeSet<OwnedEventId>],
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
) -> Result<StateMap, String> {
    match &rules.state_res {
        StateResolutionVersion::V1 => v1::resolve(rules, state_maps, &fetch_event),
        StateResolutionVersion::V2(v2_rules) => {
            v2::resolve(rules, v2_rules, state_maps, auth_chains, &fetch_event)
        }
        other => Err(format!("unsupported state resolution algorithm {other:?}")),
    }
}
