//! State resolution fixtures, and `resolve_state` on bad input.

use std::collections::BTreeSet;

use myelin_core::pdu::StateMap;
use myelin_core::state_res::resolve_state;
use ruma::OwnedEventId;

use crate::fixture::{Room, check, load};

#[test]
fn unconflicted_changes_on_both_forks_are_kept() {
    check("state_res_unconflicted_merge");
}

#[test]
fn the_admins_demotion_beats_the_moderators_power_levels() {
    check("state_res_power_levels_race");
}

#[test]
fn a_ban_beats_the_banned_users_concurrent_changes() {
    check("state_res_ban_race");
}

#[test]
fn v1_prefers_depth_where_v2_prefers_power_then_timestamp() {
    check("state_res_depth_or_timestamp");
}

#[test]
fn v12_replays_join_rules_from_their_auth_events() {
    check("state_res_v12_join_rules_reset");
}

#[test]
fn v12_replays_the_conflicted_state_subgraph() {
    check("state_res_v12_power_levels_reset");
}

#[test]
fn malformed_power_levels_are_refused_not_fatal() {
    check("state_res_malformed_power_levels");
}

const ALL_VERSIONS: [&str; 5] = ["1", "6", "10", "11", "12"];

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

fn auth_chains(room: &Room, state_maps: &[StateMap]) -> Vec<BTreeSet<OwnedEventId>> {
    state_maps.iter().map(|state_map| room.auth_chain(state_map)).collect()
}

#[test]
fn events_that_cannot_be_fetched_are_not_candidates() {
    let fixture = load("state_res_ban_race");
    for version in ALL_VERSIONS {
        let room = Room::build(&fixture, version);
        let trunk = ["create", "alice_join", "power_levels", "join_rules"];
        let state_maps = [
            room.state_map(&names(&[&trunk[..], &["alice_bans_bob"]].concat())),
            room.state_map(&names(&[&trunk[..], &["bob_rename", "bob_topic"]].concat())),
        ];
        let ban_id = room.events["alice_bans_bob"].event_id.clone();
        let fetch = |id: &ruma::EventId| if *id == ban_id { None } else { room.fetch(id) };
        let resolved =
            resolve_state(&room.rules, &state_maps, &auth_chains(&room, &state_maps), fetch).unwrap();
        let expected = room.state_map(&names(&[&trunk[..], &["bob_rename", "bob_topic"]].concat()));
        assert_eq!(room.named(&resolved), room.named(&expected), "room version {version}");
    }
}

#[test]
fn v2_needs_one_auth_chain_per_state_map() {
    let fixture = load("state_res_ban_race");
    for version in ALL_VERSIONS {
        let room = Room::build(&fixture, version);
        let state_maps = [
            room.state_map(&names(&["create", "alice_join", "alice_bans_bob"])),
            room.state_map(&names(&["create", "alice_join", "bob_rename"])),
        ];
        let result = resolve_state(&room.rules, &state_maps, &[], |id| room.fetch(id));
        if version == "1" {
            // Room version 1's algorithm does not use auth chains.
            let resolved = result.unwrap();
            assert_eq!(
                room.named(&resolved)[&("m.room.member".to_owned(), "@bob:example.org".to_owned())],
                "alice_bans_bob"
            );
        } else {
            let error = result.unwrap_err();
            assert!(error.contains("one auth chain per state map"), "room version {version}: {error}");
        }
    }
}

#[test]
fn v1_refuses_a_state_map_entry_of_another_key() {
    let fixture = load("state_res_ban_race");
    let room = Room::build(&fixture, "1");
    let mut wrong = room.state_map(&names(&["create", "alice_join"]));
    // The topic key names the join rules event on one fork and the topic on the other.
    wrong.insert(("m.room.topic".to_owned(), String::new()), room.events["join_rules"].event_id.clone());
    let right = room.state_map(&names(&["create", "alice_join", "bob_topic"]));
    let error = resolve_state(&room.rules, &[wrong, right], &[], |id| room.fetch(id)).unwrap_err();
    assert!(error.contains("of another key"), "{error}");
}

#[test]
fn one_or_no_state_maps_resolve_to_themselves() {
    let fixture = load("state_res_ban_race");
    for version in ALL_VERSIONS {
        let room = Room::build(&fixture, version);
        let state_map = room.state_map(&names(&["create", "alice_join", "power_levels", "alice_bans_bob"]));
        let chains = auth_chains(&room, std::slice::from_ref(&state_map));
        let resolved =
            resolve_state(&room.rules, std::slice::from_ref(&state_map), &chains, |id| room.fetch(id));
        assert_eq!(resolved.unwrap(), state_map, "room version {version}");
        let resolved = resolve_state(&room.rules, &[], &[], |id| room.fetch(id));
        assert_eq!(resolved.unwrap(), StateMap::new(), "room version {version}");
    }
}
