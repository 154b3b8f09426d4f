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

use std::collections::{BTreeSet, HashMap};

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
/// entry naming an event of another type or state key, a missing event ruma needs midway, and
/// auth events that form a cycle, which only event IDs a server chose itself (room versions 1
/// and 2) can express and on which walking a chain of power levels would never end).
pub fn resolve_state(
    rules: &RoomVersionRules,
    state_maps: &[StateMap],
    auth_chains: &[BTreeSet<OwnedEventId>],
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
) -> Result<StateMap, String> {
    // Forks that agree (with the same auth chains) have nothing to walk.
    let agree = state_maps.windows(2).all(|pair| pair[0] == pair[1])
        && auth_chains.windows(2).all(|pair| pair[0] == pair[1]);
    if !agree {
        let roots = state_maps.iter().flat_map(|state| state.values()).chain(auth_chains.iter().flatten());
        if let Some(event_id) = auth_cycle(roots, |event_id| fetch_event(event_id).map(|pdu| pdu.auth_events))
        {
            return Err(format!("the auth events of {event_id} lead back to it"));
        }
    }
    match &rules.state_res {
        StateResolutionVersion::V1 => v1::resolve(rules, state_maps, &fetch_event),
        StateResolutionVersion::V2(v2_rules) => {
            v2::resolve(rules, v2_rules, state_maps, auth_chains, &fetch_event)
        }
        other => Err(format!("unsupported state resolution algorithm {other:?}")),
    }
}

/// An event on a cycle of `auth_events` among the events reachable from `roots`, if there is
/// one. Iterative depth-first search (long chains cannot overflow the stack); an event
/// `auth_events_of` does not know ends the paths through it.
fn auth_cycle<'a>(
    roots: impl Iterator<Item = &'a OwnedEventId>,
    auth_events_of: impl Fn(&EventId) -> Option<Vec<OwnedEventId>>,
) -> Option<OwnedEventId> {
    /// Being walked (on the current path) or done.
    #[derive(PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    let mut marks: HashMap<OwnedEventId, Mark> = HashMap::new();
    for root in roots {
        if marks.contains_key(root) {
            continue;
        }
        // Each frame: an event on the path and the auth events of it still to walk.
        let mut path: Vec<(OwnedEventId, Vec<OwnedEventId>)> = Vec::new();
        let auth = auth_events_of(root).unwrap_or_default();
        marks.insert(root.clone(), Mark::OnPath);
        path.push((root.clone(), auth));
        while let Some((_, pending)) = path.last_mut() {
            match pending.pop() {
                Some(next) => match marks.get(&next) {
                    Some(Mark::OnPath) => return Some(next),
                    Some(Mark::Done) => {}
                    None => {
                        let auth = auth_events_of(&next).unwrap_or_default();
                        marks.insert(next.clone(), Mark::OnPath);
                        path.push((next, auth));
                    }
                },
                None => {
                    if let Some((done, _)) = path.pop() {
                        marks.insert(done, Mark::Done);
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ruma::{EventId, OwnedEventId};

    use super::auth_cycle;

    /// The cycle `auth_cycle` finds in an auth graph given as `(event, its auth events)`,
    /// walking from `roots`.
    fn cycle_in(graph: &[(&str, &[&str])], roots: &[&str]) -> Option<String> {
        let id = |name: &str| EventId::parse(format!("${name}")).unwrap();
        let graph: HashMap<OwnedEventId, Vec<OwnedEventId>> =
            graph.iter().map(|(name, auth)| (id(name), auth.iter().map(|name| id(name)).collect())).collect();
        let roots: Vec<OwnedEventId> = roots.iter().map(|name| id(name)).collect();
        auth_cycle(roots.iter(), |event_id| graph.get(event_id).cloned()).map(|event_id| event_id.to_string())
    }

    #[test]
    fn cycles_of_auth_events_are_found_and_dags_pass() {
        // A diamond with a shared base, walked from two roots, and an unknown event: no cycle.
        let dag: &[(&str, &[&str])] = &[
            ("create", &[]),
            ("pl", &["create"]),
            ("a", &["pl", "create"]),
            ("b", &["pl", "gone"]),
            ("c", &["a", "b"]),
        ];
        assert_eq!(cycle_in(dag, &["c", "b"]), None);
        // Two power levels authorising each other (only possible where servers choose event IDs).
        let cycle: &[(&str, &[&str])] =
            &[("create", &[]), ("pl1", &["pl2", "create"]), ("pl2", &["pl1"]), ("m", &["pl1"])];
        assert!(matches!(cycle_in(cycle, &["m"]).as_deref(), Some("$pl1" | "$pl2")));
        // An event that authorises itself.
        assert_eq!(cycle_in(&[("x", &["x"])], &["x"]).as_deref(), Some("$x"));
        // A cycle not reachable from the roots is not walked.
        assert_eq!(cycle_in(cycle, &["create"]), None);
    }
}
