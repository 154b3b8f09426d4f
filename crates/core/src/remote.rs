//! Events other servers build or send: completing a `make_join` / `make_leave` template with
//! this server's hash and signature, and checking the events of a `send_join` answer
//! (signatures, content hashes, the authorization rules against each event's own auth events).
//!
//! Keys are not fetched here: [`required_signing_keys`] names the keys an event needs, the
//! caller fetches them, and [`verify_pdu`] / [`check_room_events`] check against them.

use std::collections::{BTreeSet, HashMap};

use ruma::canonical_json::redact_in_place;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::{EventIdFormatVersion, RoomVersionRules};
use ruma::signatures::{Ed25519KeyPair, PublicKeyMap, Verified};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedServerName, RoomId};

use crate::pdu::Pdu;

/// Fields a template may carry that the joining server sets itself.
const REPLACED_FIELDS: &[&str] = &["signatures", "hashes", "unsigned", "origin", "origin_server_ts"];

/// Completes an event template another server built (`make_join`, `make_leave`): sets
/// `origin` and `origin_server_ts`, keeps everything else (prev and auth events, depth,
/// content), computes the content hash, signs it with this server's key and derives its event
/// ID (rooms v1 and v2: `$<local_id>:<origin>`).
pub fn complete_template(
    mut json: CanonicalJsonObject,
    rules: &RoomVersionRules,
    origin: &str,
    key: &Ed25519KeyPair,
    origin_server_ts: u64,
    local_id: &str,
) -> Result<Pdu, String> {
    for field in REPLACED_FIELDS {
        json.remove(*field);
    }
    json.insert("origin".to_owned(), CanonicalJsonValue::String(origin.to_owned()));
    json.insert(
        "origin_server_ts".to_owned(),
        CanonicalJsonValue::Integer(ruma::Int::try_from(origin_server_ts).map_err(|e| e.to_string())?),
    );
    if rules.event_id_format == EventIdFormatVersion::V1 {
        json.insert("event_id".to_owned(), CanonicalJsonValue::String(format!("${local_id}:{origin}")));
    } else {
        json.remove("event_id");
    }
    ruma::signatures::hash_and_sign_event(origin, key, &mut json, &rules.redaction)
        .map_err(|e| e.to_string())?;
    let event_id = event_id_of(&json, rules)?;
    Pdu::from_json(json, event_id, rules)
}

/// An event's ID: the `event_id` it carries (rooms v1 and v2) or its reference hash.
pub fn event_id_of(json: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<OwnedEventId, String> {
    if rules.event_id_format == EventIdFormatVersion::V1 {
        return match json.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => {
                EventId::parse(id).map_err(|e| format!("invalid event_id: {e}"))
            }
            _ => Err("missing `event_id`".to_owned()),
        };
    }
    let hash = ruma::signatures::reference_hash(json, rules).map_err(|e| e.to_string())?;
    EventId::parse(format!("${hash}")).map_err(|e| e.to_string())
}

/// The `(server, key ID)` pairs whose keys verify an event: every key each server whose
/// signature the room version requires (the sender's, the event ID's in v1/v2, the
/// authorising server's for a restricted join) signed it with.
pub fn required_signing_keys(
    json: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<Vec<(OwnedServerName, String)>, String> {
    let servers = ruma::signatures::required_server_signatures_to_verify_event(json, &rules.signatures)
        .map_err(|e| e.to_string())?;
    let signatures = match json.get("signatures") {
        Some(CanonicalJsonValue::Object(signatures)) => signatures,
        _ => return Err("missing `signatures`".to_owned()),
    };
    let mut keys = Vec::new();
    for server in servers {
        let Some(CanonicalJsonValue::Object(by_key)) = signatures.get(server.as_str()) else {
            return Err(format!("not signed by {server}"));
        };
        keys.extend(by_key.keys().map(|key_id| (server.clone(), key_id.clone())));
    }
    Ok(keys)
}

/// Checks an event's signatures against `keys` and its content hash: an event whose hash does
/// not match is kept in its redacted form (as the spec asks); a missing or bad signature
/// refuses it.
pub fn verify_pdu(
    json: CanonicalJsonObject,
    rules: &RoomVersionRules,
    keys: &PublicKeyMap,
) -> Result<Pdu, String> {
    let event_id = event_id_of(&json, rules)?;
    match ruma::signatures::verify_event(keys, &json, rules) {
        Ok(Verified::All) => Pdu::from_json(json, event_id, rules),
        Ok(Verified::Signatures) => {
            let mut json = json;
            redact_in_place(&mut json, &rules.redaction, None).map_err(|e| e.to_string())?;
            Pdu::from_json(json, event_id, rules)
        }
        Err(error) => Err(format!("event {event_id}: bad signature: {error}")),
    }
}

/// The state and auth chain of a room as another server sent them, checked.
#[derive(Debug)]
pub struct CheckedRoomEvents {
    /// Every event of the state and the auth chain, by ID.
    pub events: HashMap<OwnedEventId, Pdu>,
    /// The state: `(type, state_key)` to event ID.
    pub state: HashMap<(String, String), OwnedEventId>,
    /// The events in an order where every event comes after its auth events (the create
    /// event first).
    pub order: Vec<OwnedEventId>,
}

/// Checks the state and auth chain of a room (verified PDUs, see [`verify_pdu`]): every event
/// is of `room_id`; there is exactly one create event, of `version`; every event's auth
/// events are among them and every event passes the authorization rules against its own
/// auth events (checked in auth order, the create event first); the state holds only state
/// events, one per key, the create event among them. Any failure refuses the whole answer.
pub fn check_room_events(
    rules: &RoomVersionRules,
    room_id: &RoomId,
    version: &str,
    state: Vec<Pdu>,
    auth_chain: Vec<Pdu>,
) -> Result<CheckedRoomEvents, String> {
    let mut state_map = HashMap::new();
    for pdu in &state {
        let Some(state_key) = &pdu.state_key else {
            return Err(format!("{} in the state is not a state event", pdu.event_id));
        };
        if state_map.insert((pdu.kind.to_string(), state_key.clone()), pdu.event_id.clone()).is_some() {
            return Err(format!("the state holds two events for ({}, {state_key:?})", pdu.kind));
        }
    }
    let mut events: HashMap<OwnedEventId, Pdu> = HashMap::new();
    for pdu in state.into_iter().chain(auth_chain) {
        if pdu.room_id != room_id {
            return Err(format!("{} is not an event of {room_id}", pdu.event_id));
        }
        events.insert(pdu.event_id.clone(), pdu);
    }
    let creates: Vec<&Pdu> = events
        .values()
        .filter(|pdu| pdu.kind == TimelineEventType::RoomCreate && pdu.state_key.as_deref() == Some(""))
        .collect();
    let [create] = creates.as_slice() else {
        return Err(format!("expected one create event, found {}", creates.len()));
    };
    let create = (*create).clone();
    let create_version = create
        .content_value()
        .get("room_version")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("1")
        .to_owned();
    if create_version != version {
        return Err(format!("the create event is of room version {create_version}, not {version}"));
    }
    if state_map.get(&("m.room.create".to_owned(), String::new())) != Some(&create.event_id) {
        return Err("the state does not hold the create event".to_owned());
    }
    // Accept events whose auth events are all accepted, until nothing more can be.
    let mut accepted: BTreeSet<OwnedEventId> = BTreeSet::new();
    let mut order = Vec::with_capacity(events.len());
    let mut pending: Vec<OwnedEventId> = events.keys().cloned().collect();
    pending.sort_by_key(|id| events.get(id).map(|pdu| pdu.depth).unwrap_or_default());
    loop {
        let mut progress = false;
        let mut still_pending = Vec::new();
        for id in pending {
            let Some(pdu) = events.get(&id) else { continue };
            if !pdu.auth_events.iter().all(|auth| accepted.contains(auth)) {
                still_pending.push(id);
                continue;
            }
            check_against_auth_events(rules, pdu, &create, &events)?;
            accepted.insert(id.clone());
            order.push(id);
            progress = true;
        }
        pending = still_pending;
        if pending.is_empty() {
            break;
        }
        if !progress {
            return Err(format!(
                "{} has auth events missing from the answer (or in a cycle)",
                pending.first().map(|id| id.as_str()).unwrap_or_default()
            ));
        }
    }
    Ok(CheckedRoomEvents { events, state: state_map, order })
}

fn check_against_auth_events(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    create: &Pdu,
    events: &HashMap<OwnedEventId, Pdu>,
) -> Result<(), String> {
    let mut by_key: HashMap<(String, String), &Pdu> = pdu
        .auth_events
        .iter()
        .filter_map(|id| events.get(id))
        .filter_map(|auth| Some(((auth.kind.to_string(), auth.state_key.clone()?), auth)))
        .collect();
    by_key.insert(("m.room.create".to_owned(), String::new()), create);
    let fetch_event = |id: &EventId| events.get(id).cloned();
    let fetch_state = |kind: &StateEventType, key: &str| {
        by_key.get(&(kind.to_string(), key.to_owned())).map(|p| (*p).clone())
    };
    crate::auth::check_auth(rules, pdu, fetch_event, fetch_state)
        .map_err(|reason| format!("{} fails the authorization rules: {reason}", pdu.event_id))
}

/// Checks that an event passes the authorization rules against a room state (`state`: keys
/// to events, all in `events`), as a join event must against the state before it.
pub fn check_against_state(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    state: &HashMap<(String, String), OwnedEventId>,
    events: &HashMap<OwnedEventId, Pdu>,
) -> Result<(), String> {
    let fetch_event = |id: &EventId| events.get(id).cloned();
    let fetch_state = |kind: &StateEventType, key: &str| {
        state.get(&(kind.to_string(), key.to_owned())).and_then(|id| events.get(id)).cloned()
    };
    crate::auth::check_auth(rules, pdu, fetch_event, fetch_state)
        .map_err(|reason| format!("{} fails the authorization rules: {reason}", pdu.event_id))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ruma::{RoomId, UserId};
    use serde_json::json;

    use super::*;
    use crate::pdu::{PduContext, PduTemplate};
    use crate::room_version::room_version;

    fn key(version: &str) -> Ed25519KeyPair {
        let der = Ed25519KeyPair::generate();
        Ed25519KeyPair::from_der(&der, version.to_owned()).unwrap()
    }

    /// A room on a.test (version 10): create, the creator's join, power levels, public join
    /// rules; built and signed with `key`.
    struct Room {
        rules: RoomVersionRules,
        room_id: ruma::OwnedRoomId,
        events: Vec<Pdu>,
    }

    fn event(
        room: &Room,
        key: &Ed25519KeyPair,
        sender: &str,
        kind: &str,
        state_key: &str,
        content: serde_json::Value,
        auth: &[&Pdu],
    ) -> Pdu {
        let prev: Vec<&Pdu> = room.events.last().into_iter().collect();
        PduTemplate {
            room_id: Some(room.room_id.clone()),
            sender: UserId::parse(sender).unwrap(),
            kind: kind.to_owned(),
            state_key: Some(state_key.to_owned()),
            content,
            redacts: None,
        }
        .build(&PduContext {
            rules: &room.rules,
            prev_events: &prev,
            auth_events: auth,
            depth: room.events.len() as u64 + 1,
            origin_server_ts: 1_700_000_000_000 + room.events.len() as u64,
            origin: "a.test",
            key,
            local_id: &format!("e{}", room.events.len()),
        })
        .unwrap()
    }

    fn room(key: &Ed25519KeyPair) -> Room {
        let (_, rules) = room_version("10").unwrap();
        let mut room = Room { rules, room_id: RoomId::parse("!room:a.test").unwrap(), events: Vec::new() };
        let create = event(
            &room,
            key,
            "@alice:a.test",
            "m.room.create",
            "",
            json!({"creator": "@alice:a.test", "room_version": "10"}),
            &[],
        );
        room.events.push(create.clone());
        let join = event(
            &room,
            key,
            "@alice:a.test",
            "m.room.member",
            "@alice:a.test",
            json!({"membership": "join"}),
            &[&create],
        );
        room.events.push(join.clone());
        let levels = event(
            &room,
            key,
            "@alice:a.test",
            "m.room.power_levels",
            "",
            json!({"users": {"@alice:a.test": 100}}),
            &[&create, &join],
        );
        room.events.push(levels.clone());
        let rules = event(
            &room,
            key,
            "@alice:a.test",
            "m.room.join_rules",
            "",
            json!({"join_rule": "public"}),
            &[&create, &join, &levels],
        );
        room.events.push(rules);
        room
    }

    fn keys_of(server: &str, key: &Ed25519KeyPair) -> PublicKeyMap {
        let mut keys = BTreeMap::new();
        keys.insert(
            format!("ed25519:{}", key.version()),
            ruma::serde::Base64::new(key.public_key().to_vec()),
        );
        BTreeMap::from([(server.to_owned(), keys)])
    }

    /// Bob of b.test's join, from a template as a.test would send it.
    fn bob_join(room: &Room, bob_key: &Ed25519KeyPair) -> Pdu {
        let template: CanonicalJsonObject = serde_json::from_value(json!({
            "room_id": room.room_id,
            "sender": "@bob:b.test",
            "type": "m.room.member",
            "state_key": "@bob:b.test",
            "content": {"membership": "join"},
            "depth": 5,
            "origin": "a.test",
            "origin_server_ts": 1,
            "prev_events": [room.events[3].event_id],
            "auth_events": [room.events[0].event_id, room.events[2].event_id, room.events[3].event_id],
        }))
        .unwrap();
        complete_template(template, &room.rules, "b.test", bob_key, 1_700_000_001_000, "join").unwrap()
    }

    fn answer(room: &Room) -> Vec<CanonicalJsonObject> {
        room.events.iter().map(Pdu::json).collect()
    }

    fn check(
        room: &Room,
        keys: &PublicKeyMap,
        state: Vec<CanonicalJsonObject>,
    ) -> Result<CheckedRoomEvents, String> {
        let state =
            state.into_iter().map(|e| verify_pdu(e, &room.rules, keys)).collect::<Result<Vec<_>, _>>()?;
        check_room_events(&room.rules, &room.room_id, "10", state, Vec::new())
    }

    #[test]
    fn a_completed_template_is_signed_by_the_joining_server() {
        let (a_key, b_key) = (key("a"), key("b"));
        let room = room(&a_key);
        let join = bob_join(&room, &b_key);
        let json = join.json();
        assert_eq!(json.get("origin"), Some(&CanonicalJsonValue::String("b.test".to_owned())));
        assert_eq!(
            required_signing_keys(&json, &room.rules).unwrap(),
            vec![(ruma::ServerName::parse("b.test").unwrap(), "ed25519:b".to_owned())]
        );
        let verified = verify_pdu(json, &room.rules, &keys_of("b.test", &b_key)).unwrap();
        assert_eq!(verified.event_id, join.event_id);
        assert_eq!(verified.prev_events, vec![room.events[3].event_id.clone()]);
        // And it passes the rules against the room's state.
        let checked = check(&room, &keys_of("a.test", &a_key), answer(&room)).unwrap();
        assert_eq!(checked.order.first(), Some(&room.events[0].event_id));
        check_against_state(&room.rules, &join, &checked.state, &checked.events).unwrap();
    }

    #[test]
    fn a_forged_signature_in_the_state_is_refused() {
        let (a_key, forger) = (key("a"), key("a"));
        let room = room(&a_key);
        let mut state = answer(&room);
        // The join rules event re-signed by a key that is not a.test's.
        let mut forged = room.events[3].json();
        forged.remove("signatures");
        ruma::signatures::sign_json("a.test", &forger, &mut forged).unwrap();
        state[3] = forged;
        let error = check(&room, &keys_of("a.test", &a_key), state).unwrap_err();
        assert!(error.contains("bad signature"), "{error}");
    }

    #[test]
    fn a_bad_content_hash_keeps_the_event_redacted() {
        let a_key = key("a");
        let room = room(&a_key);
        let mut altered = room.events[3].json();
        // Content changed after signing: the signature covers the redacted form only.
        altered.insert(
            "content".to_owned(),
            serde_json::from_value(json!({"join_rule": "public", "extra": "smuggled"})).unwrap(),
        );
        let pdu = verify_pdu(altered, &room.rules, &keys_of("a.test", &a_key)).unwrap();
        assert_eq!(pdu.event_id, room.events[3].event_id);
        assert_eq!(pdu.content_value(), json!({"join_rule": "public"}));
    }

    #[test]
    fn a_missing_create_event_is_refused() {
        let a_key = key("a");
        let room = room(&a_key);
        let mut state = answer(&room);
        state.remove(0);
        let error = check(&room, &keys_of("a.test", &a_key), state).unwrap_err();
        assert!(error.contains("create event"), "{error}");
    }

    #[test]
    fn a_state_event_failing_auth_is_refused() {
        let a_key = key("a");
        let mut room = room(&a_key);
        // Mallory never joined, yet sets the room's name.
        let auth: Vec<Pdu> = vec![room.events[0].clone(), room.events[2].clone()];
        let name = event(
            &room,
            &a_key,
            "@mallory:a.test",
            "m.room.name",
            "",
            json!({"name": "taken"}),
            &auth.iter().collect::<Vec<_>>(),
        );
        room.events.push(name);
        let error = check(&room, &keys_of("a.test", &a_key), answer(&room)).unwrap_err();
        assert!(error.contains("fails the authorization rules"), "{error}");
    }

    #[test]
    fn events_of_another_room_or_version_are_refused() {
        let a_key = key("a");
        let room = room(&a_key);
        let keys = keys_of("a.test", &a_key);
        let state: Vec<Pdu> =
            answer(&room).into_iter().map(|e| verify_pdu(e, &room.rules, &keys).unwrap()).collect();
        let other = RoomId::parse("!other:a.test").unwrap();
        assert!(check_room_events(&room.rules, &other, "10", state.clone(), Vec::new()).is_err());
        assert!(check_room_events(&room.rules, &room.room_id, "11", state, Vec::new()).is_err());
    }
}
