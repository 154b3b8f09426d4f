//! The state resolution algorithm of room version 1
//! (<https://spec.matrix.org/v1.19/rooms/v1/#state-resolution>).
//!
//! The steps, in order:
//!
//! 1. Split the keys: a key whose forks all name the same event (or that only some forks have)
//!    is unconflicted and kept; a key for which forks name different events is conflicted. The
//!    resolved state `R` starts as the unconflicted state.
//! 2. Settle the conflicted `(m.room.power_levels, "")` against `R` with [`settle_auth_key`],
//!    and add the winner to `R`.
//! 3. The same for each conflicted `m.room.join_rules` key, then for each conflicted
//!    `m.room.member` key. Keys of one pass are settled independently, against `R` as it was
//!    before the pass, so the result does not depend on the order of keys (Synapse does the
//!    same; the spec leaves it open).
//! 4. Every other conflicted key gets [`settle_other_key`], against `R` after step 3.
//!
//! Events are ordered by `depth` and then by `sha1(event_id)`, as the spec says. Where the spec
//! is silent (no candidate of an ordinary key passes the auth rules), we follow Synapse, the
//! reference implementation: the last candidate in the order wins.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::state_res::check_state_dependent_auth_rules;
use ruma::{EventId, OwnedEventId};
use sha1::{Digest, Sha1};

use crate::pdu::{Pdu, StateMap};

type StateKey = (String, String);

pub(super) fn resolve(
    rules: &RoomVersionRules,
    state_maps: &[StateMap],
    fetch_event: &impl Fn(&EventId) -> Option<Pdu>,
) -> Result<StateMap, String> {
    let (mut unconflicted, conflicted) = split(state_maps);

    // The candidates of each conflicted key; events we cannot fetch are no candidates, and a
    // key left with a single candidate is no longer conflicted.
    let mut candidates: BTreeMap<StateKey, Vec<Pdu>> = BTreeMap::new();
    for (key, event_ids) in conflicted {
        let mut events = Vec::with_capacity(event_ids.len());
        for event_id in &event_ids {
            let Some(event) = fetch_event(event_id) else { continue };
            if event.kind.to_string() != key.0 || event.state_key.as_deref() != Some(key.1.as_str()) {
                return Err(format!(
                    "state map entry ({}, {}) names event {event_id} of another key",
                    key.0, key.1
                ));
            }
            events.push(event);
        }
        if events.len() > 1 {
            candidates.insert(key, events);
        } else if let Some(event) = events.pop() {
            unconflicted.insert(key, event.event_id);
        }
    }

    let mut resolved = Resolved { unconflicted: &unconflicted, settled: BTreeMap::new(), fetch_event };
    let power_levels_key = (StateEventType::RoomPowerLevels.to_string(), String::new());
    let passes: [&dyn Fn(&StateKey) -> bool; 3] = [
        &|key| *key == power_levels_key,
        &|key| key.0 == StateEventType::RoomJoinRules.to_string(),
        &|key| key.0 == StateEventType::RoomMember.to_string(),
    ];
    for in_pass in passes {
        let keys: Vec<StateKey> = candidates.keys().filter(|key| in_pass(key)).cloned().collect();
        let mut winners = Vec::with_capacity(keys.len());
        for key in keys {
            let events = candidates.remove(&key).unwrap_or_default();
            if let Some(winner) = settle_auth_key(rules, &key, events, &resolved) {
                winners.push((key, winner));
            }
        }
        resolved.settled.extend(winners);
    }
    let mut winners = Vec::with_capacity(candidates.len());
    for (key, events) in candidates {
        if let Some(winner) = settle_other_key(rules, events, &resolved) {
            winners.push((key, winner));
        }
    }
    resolved.settled.extend(winners);

    let Resolved { settled, .. } = resolved;
    let mut state = unconflicted;
    state.extend(settled.into_iter().map(|(key, event)| (key, event.event_id)));
    Ok(state)
}

/// Splits the forks' keys into the unconflicted state and the conflicted keys with their
/// distinct event IDs. A key only some forks have is not a conflict: no two forks disagree on it.
fn split(state_maps: &[StateMap]) -> (StateMap, BTreeMap<StateKey, BTreeSet<OwnedEventId>>) {
    let mut values: BTreeMap<StateKey, BTreeSet<OwnedEventId>> = BTreeMap::new();
    for state_map in state_maps {
        for (key, event_id) in state_map {
            values.entry(key.clone()).or_default().insert(event_id.clone());
        }
    }
    let mut unconflicted = StateMap::new();
    let mut conflicted = BTreeMap::new();
    for (key, event_ids) in values {
        if event_ids.len() == 1 {
            unconflicted.extend(event_ids.into_iter().map(|event_id| (key.clone(), event_id)));
        } else {
            conflicted.insert(key, event_ids);
        }
    }
    (unconflicted, conflicted)
}

/// The resolved state `R` so far: the unconflicted state and the winners of settled keys.
struct Resolved<'a, F> {
    unconflicted: &'a StateMap,
    settled: BTreeMap<StateKey, Pdu>,
    fetch_event: &'a F,
}

impl<F: Fn(&EventId) -> Option<Pdu>> Resolved<'_, F> {
    fn get(&self, kind: &StateEventType, state_key: &str) -> Option<Pdu> {
        let key = (kind.to_string(), state_key.to_owned());
        if let Some(event) = self.settled.get(&key) {
            return Some(event.clone());
        }
        self.unconflicted.get(&key).and_then(|event_id| (self.fetch_event)(event_id))
    }

    /// Whether the authorization rules allow `event` in `R`, with `R`'s entry for the key being
    /// settled set to the event taken so far, if given.
    fn allows(&self, rules: &RoomVersionRules, event: &Pdu, taken: Option<(&StateKey, &Pdu)>) -> bool {
        let fetch_state = |kind: &StateEventType, state_key: &str| match taken {
            Some((key, taken)) if kind.to_string() == key.0 && state_key == key.1 => Some(taken.clone()),
            _ => self.get(kind, state_key),
        };
        check_state_dependent_auth_rules(&rules.authorization, event, fetch_state).is_ok()
    }
}

fn sha1_of_event_id(event: &Pdu) -> [u8; 20] {
    Sha1::digest(event.event_id.as_str().as_bytes()).into()
}

/// Settles a key of an event type that the authorization rules depend on: sort the candidates
/// by ascending depth, then descending `sha1(event_id)`; the first one is taken as is, and each
/// next one replaces it while the auth rules allow it in `R` with the key set to the one taken
/// so far. The first candidate refused ends the walk.
fn settle_auth_key<F: Fn(&EventId) -> Option<Pdu>>(
    rules: &RoomVersionRules,
    key: &StateKey,
    mut events: Vec<Pdu>,
    resolved: &Resolved<'_, F>,
) -> Option<Pdu> {
    events.sort_by_cached_key(|event| (event.depth, Reverse(sha1_of_event_id(event))));
    let mut events = events.into_iter();
    let mut winner = events.next()?;
    for event in events {
        if !resolved.allows(rules, &event, Some((key, &winner))) {
            break;
        }
        winner = event;
    }
    Some(winner)
}

/// Settles any other key: the candidate of greatest depth, then smallest `sha1(event_id)`, that
/// the auth rules allow in `R`; if none is allowed, the last candidate in that order.
fn settle_other_key<F: Fn(&EventId) -> Option<Pdu>>(
    rules: &RoomVersionRules,
    mut events: Vec<Pdu>,
    resolved: &Resolved<'_, F>,
) -> Option<Pdu> {
    events.sort_by_cached_key(|event| (Reverse(event.depth), sha1_of_event_id(event)));
    let allowed = events.iter().position(|event| resolved.allows(rules, event, None));
    match allowed {
        Some(index) => Some(events.swap_remove(index)),
        None => events.pop(),
    }
}
