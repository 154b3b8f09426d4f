//! Rooms described in JSON fixtures (`tests/fixtures/*.json`), built as real signed PDUs in each
//! listed room version, checked against the authorization rules and, for state resolution
//! fixtures, resolved.
//!
//! # Layout
//!
//! - `fixture`: the fixture format, building a room from it, and `check(name)`, which runs a
//!   fixture in every version it lists and asserts every expected outcome.
//! - `auth`: one test per authorization fixture (`auth_*.json`).
//! - `state_res`: one test per state resolution fixture (`state_res_*.json`), and tests of
//!   `resolve_state` on bad input.
//!
//! # Fixture format
//!
//! ```json
//! {
//!   "description": "what the fixture shows",
//!   "versions": ["1", "6", "10", "11", "12"],
//!   "events": [
//!     {"name": "create", "sender": "@alice:example.org", "type": "m.room.create",
//!      "state_key": "", "content": {}},
//!     {"name": "bob_join", "sender": "@bob:example.org", "type": "m.room.member",
//!      "state_key": "@bob:example.org", "content": {"membership": "join"},
//!      "allowed": false, "error": "not `public`", "why": "the room is invite-only"}
//!   ],
//!   "forks": [["create", "..."], ["create", "..."]],
//!   "resolved": ["create", "..."],
//!   "why": "how the algorithm gets there"
//! }
//! ```
//!
//! Events are listed parents first and named; names become event IDs (`$name:server` in room
//! versions 1 and 2, the reference hash later). Per event:
//!
//! - `prev`: names of the `prev_events`; by default the event listed just before (none for the
//!   first). `depth` follows from them; `ts` (`origin_server_ts`) defaults to the listing order.
//! - `auth`: names of the `auth_events`. By default they are selected from the state after the
//!   single prev event by the spec's auth events selection (`myelin_core::auth::auth_types`);
//!   an explicit `create` is left out where the room ID names it (v12).
//! - `redacts`: the name of the redacted event (put in `content` where v11+ wants it).
//! - `allowed` (default `true`): the expected verdict of `check_auth` against the state given by
//!   the event's auth events; `error`: a substring of the expected refusal. A refused event is
//!   marked rejected and does not change the state seen by later events.
//! - The `m.room.create` content gets `room_version`, and `creator` where the version needs it,
//!   unless given. The event is signed by the sender's server with a fresh key.
//!
//! `forks` are the state maps to resolve, as names of state events; `resolved` is the exact
//! expected result. Any value of `content`, `allowed`, `error`, `forks` or `resolved` may instead be
//! `{"by_version": {"12": ..., "*": ...}}` when versions differ (`*` for the others).

mod auth;
mod fixture;
mod state_res;

#[test]
fn every_fixture_file_has_a_test() {
    let sources = [include_str!("auth.rs"), include_str!("state_res.rs")];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut n_fixtures = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|ext| ext.to_str()) != Some("json") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let call = format!("check(\"{stem}\")");
        assert!(sources.iter().any(|source| source.contains(&call)), "no test runs fixture {stem}");
        n_fixtures += 1;
    }
    assert!(n_fixtures > 0);
}
