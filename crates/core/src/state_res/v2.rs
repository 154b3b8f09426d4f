//! State resolution v2 (room versions 2 to 11) and v2.1 (room version 12) through ruma's
//! `resolve`: converting state maps to and from ruma's, and computing the conflicted state
//! subgraph (<https://spec.matrix.org/v1.19/rooms/v12/#state-resolution>) that v2.1 adds to the
//! full conflicted set.

use std::collections::{BTreeSet, HashMap, HashSet};

use ruma::events::StateEventType;
use ruma::room_version_rules::{RoomVersionRules, StateResolutionV2Rules};
use ruma::state_res::utils::event_id_set::EventIdSet;
use ruma::{EventId, OwnedEventId};

use crate::pdu::{Pdu, StateMap};

type RumaStateMap = ruma::state_res::StateMap<OwnedEventId>;

pub(super) fn resolve(
    rules: &RoomVersionRules,
    v2_rules: &StateResolutionV2Rules,
    state_maps: &[StateMap],
    auth_chains: &[BTreeSet<OwnedEventId>],
    fetch_event: &impl Fn(&EventId) -> Option<Pdu>,
) -> Result<StateMap, String> {
    if auth_chains.len() != state_maps.len() {
        return Err(format!(
            "state resolution needs one auth chain per state map ({} state maps, {} auth chains)",
            state_maps.len(),
            auth_chains.len()
        ));
    }
    let state_maps: Vec<RumaStateMap> = state_maps
        .iter()
        .map(|state_map| {
            state_map
                .iter()
                .map(|((kind, state_key), event_id)| {
                    ((StateEventType::from(kind.as_str()), state_key.clone()), event_id.clone())
                })
                .collect()
        })
        .collect();
    let auth_chains: Vec<EventIdSet<OwnedEventId>> =
        auth_chains.iter().map(|auth_chain| auth_chain.iter().cloned().collect()).collect();
    let auth_events_of = |event_id: &EventId| fetch_event(event_id).map(|event| event.auth_events);
    let resolved = ruma::state_res::resolve(
        &rules.authorization,
        v2_rules,
        &state_maps,
        auth_chains,
        fetch_event,
        |conflicted: &ruma::state_res::StateMap<Vec<OwnedEventId>>| {
            let conflicted: BTreeSet<OwnedEventId> = conflicted.values().flatten().cloned().collect();
            Some(conflicted_state_subgraph(&conflicted, auth_events_of).into_iter().collect())
        },
    )
    .map_err(|error| error.to_string())?;
    Ok(resolved
        .into_iter()
        .map(|((kind, state_key), event_id)| ((kind.to_string(), state_key), event_id))
        .collect())
}

/// The conflicted state subgraph: every event on an `auth_events` path from one conflicted
/// event to another, both ends included.
///
/// An event is on such a path when it can be reached from a conflicted event and can reach a
/// conflicted event, the two being different: for an event that is not itself conflicted, when
/// it can reach one through its auth events (anything walked here was reached from one); for a
/// conflicted event, when it can reach another or another reaches it. `auth_events_of` gives an
/// event's auth events; an event it does not know ends the paths through it.
fn conflicted_state_subgraph(
    conflicted: &BTreeSet<OwnedEventId>,
    auth_events_of: impl Fn(&EventId) -> Option<Vec<OwnedEventId>>,
) -> BTreeSet<OwnedEventId> {
    // Depth-first walk down the auth events of every conflicted event, iterative so long auth
    // chains cannot overflow the stack. An event is pushed unexpanded, then pushed again as
    // expanded above its auth events; when the expanded entry pops, all its auth events are
    // done and whether it reaches a conflicted event is known.
    let mut auth_events: HashMap<OwnedEventId, Vec<OwnedEventId>> = HashMap::new();
    let mut reaches_conflicted: HashMap<OwnedEventId, bool> = HashMap::new();
    let mut reached_conflicted: HashSet<OwnedEventId> = HashSet::new();
    let mut stack: Vec<(OwnedEventId, bool)> = conflicted.iter().map(|id| (id.clone(), false)).collect();
    while let Some((event_id, expanded)) = stack.pop() {
        if expanded {
            let reaches = auth_events.get(&event_id).is_some_and(|ids| {
                ids.iter().any(|id| conflicted.contains(id) || reaches_conflicted.get(id) == Some(&true))
            });
            reaches_conflicted.insert(event_id, reaches);
            continue;
        }
        if auth_events.contains_key(&event_id) {
            continue;
        }
        let ids = auth_events_of(&event_id).unwrap_or_default();
        stack.push((event_id.clone(), true));
        for id in &ids {
            if conflicted.contains(id) {
                reached_conflicted.insert(id.clone());
            }
            if !auth_events.contains_key(id) {
                stack.push((id.clone(), false));
            }
        }
        auth_events.insert(event_id, ids);
    }
    reaches_conflicted
        .into_iter()
        .filter(|(event_id, reaches)| {
            *reaches || (conflicted.contains(event_id) && reached_conflicted.contains(event_id))
        })
        .map(|(event_id, _)| event_id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the subgraph for an auth DAG given as `(event, its auth events)` by letters.
    fn check(graph: &[(&str, &[&str])], conflicted: &[&str], expected: &[&str]) {
        let id = |name: &str| EventId::parse(format!("${name}")).unwrap();
        let graph: HashMap<OwnedEventId, Vec<OwnedEventId>> =
            graph.iter().map(|(name, auth)| (id(name), auth.iter().map(|name| id(name)).collect())).collect();
        let conflicted: BTreeSet<OwnedEventId> = conflicted.iter().map(|name| id(name)).collect();
        let subgraph = conflicted_state_subgraph(&conflicted, |event_id| graph.get(event_id).cloned());
        let expected: BTreeSet<OwnedEventId> = expected.iter().map(|name| id(name)).collect();
        assert_eq!(subgraph, expected);
    }

    #[test]
    fn subgraph_holds_the_paths_between_conflicted_events() {
        // create <- a <- b <- c <- d, and create <- x <- c: conflicted a and d.
        let graph: &[(&str, &[&str])] = &[
            ("create", &[]),
            ("a", &["create"]),
            ("b", &["a", "create"]),
            ("x", &["create"]),
            ("c", &["b", "x"]),
            ("d", &["c"]),
        ];
        check(graph, &["a", "d"], &["a", "b", "c", "d"]);
        // Conflicted events with no path between them make no subgraph.
        check(graph, &["a", "x"], &[]);
        // Paths to several conflicted events below.
        check(graph, &["d", "b", "x"], &["d", "c", "b", "x"]);
        // A single conflicted event has no pair.
        check(graph, &["d"], &[]);
    }

    #[test]
    fn subgraph_survives_unknown_events_and_cycles() {
        // `b` is unknown: the path a <- b <- c is cut.
        let graph: &[(&str, &[&str])] = &[("a", &[]), ("c", &["b"])];
        check(graph, &["a", "c"], &[]);
        // A cycle (impossible with hashed event IDs, possible with bad data) terminates.
        let graph: &[(&str, &[&str])] = &[("a", &["b"]), ("b", &["a"]), ("c", &["a"])];
        let id = |name: &str| EventId::parse(format!("${name}")).unwrap();
        let graph: HashMap<OwnedEventId, Vec<OwnedEventId>> =
            graph.iter().map(|(name, auth)| (id(name), auth.iter().map(|name| id(name)).collect())).collect();
        let conflicted: BTreeSet<OwnedEventId> = [id("c"), id("b")].into_iter().collect();
        let subgraph = conflicted_state_subgraph(&conflicted, |event_id| graph.get(event_id).cloned());
        assert!(subgraph.contains(&id("c")));
    }
}
