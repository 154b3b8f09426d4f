//! Property tests of `myelin-core` on arbitrary input: canonical JSON, building, hashing,
//! signing and redacting PDUs in every room version, and the authorization rules and state
//! resolution on garbled events.
//!
//! Each property runs `PROPTEST_CASES` cases (256 by default, as in CI); for a longer search:
//! `PROPTEST_CASES=100000 cargo nextest run -p myelin-core -E 'test(prop_)'`. Failing inputs are
//! shrunk and printed, not persisted: a case worth keeping becomes a plain test.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use myelin_core::auth::check_auth;
use myelin_core::pdu::{Pdu, PduContext, PduTemplate, StateMap};
use myelin_core::room_version::{SUPPORTED_ROOM_VERSIONS, room_version};
use myelin_core::state_res::resolve_state;
use proptest::prelude::*;
use proptest::test_runner::Config;
use ruma::room_version_rules::{EventIdFormatVersion, RoomIdFormatVersion, RoomVersionRules};
use ruma::signatures::{Ed25519KeyPair, Verified};
use ruma::{CanonicalJsonValue, EventId, OwnedEventId, RoomId, UserId};
use serde_json::{Map, Value};

/// The default case count (or `PROPTEST_CASES`), without a failure-persistence file.
fn config() -> Config {
    Config { failure_persistence: None, ..Config::default() }
}

/// The largest magnitude canonical JSON allows for an integer (2^53 - 1).
const MAX_SAFE_INT: i64 = (1 << 53) - 1;

/// Any JSON scalar, with the integer range edges and floats well represented.
fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3i64..=3).prop_map(|delta| Value::from(MAX_SAFE_INT + delta)),
        (-3i64..=3).prop_map(|delta| Value::from(-MAX_SAFE_INT + delta)),
        any::<f64>().prop_filter_map("not finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        any::<String>().prop_map(Value::from),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    json_scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// JSON values canonical JSON accepts: no floats, integers within +-(2^53 - 1).
fn canonical_json_value() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-MAX_SAFE_INT..=MAX_SAFE_INT).prop_map(Value::from),
        prop_oneof![Just(MAX_SAFE_INT), Just(-MAX_SAFE_INT), Just(0)].prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    scalar.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Whether canonical JSON can represent the value.
fn is_canonical(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.as_i64().is_some_and(|n| (-MAX_SAFE_INT..=MAX_SAFE_INT).contains(&n)),
        Value::Array(items) => items.iter().all(is_canonical),
        Value::Object(map) => map.values().all(is_canonical),
        _ => true,
    }
}

/// The spec's encoding of a string: `"` and `\` escaped, the short escapes for the control
/// characters that have one, `\u00xx` (lower case) for the others, everything else as is.
fn reference_string(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The spec's canonical JSON, written independently of serde: keys sorted by code point, no
/// insignificant whitespace.
fn reference_encoding(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.as_i64().expect("canonical integers fit in i64").to_string(),
        Value::String(s) => reference_string(s),
        Value::Array(items) => {
            format!("[{}]", items.iter().map(reference_encoding).collect::<Vec<_>>().join(","))
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            // Rust's `str` order is byte order, which for UTF-8 is code point order.
            keys.sort();
            let entries: Vec<String> = keys
                .iter()
                .map(|key| format!("{}:{}", reference_string(key), reference_encoding(&map[*key])))
                .collect();
            format!("{{{}}}", entries.join(","))
        }
    }
}

fn canonical_text(value: &CanonicalJsonValue) -> String {
    serde_json::to_string(value).expect("canonical JSON serializes")
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary JSON converts to canonical JSON exactly when it has no floats and no integer
    /// beyond +-(2^53 - 1), through both paths the code uses (`TryFrom` and deserializing).
    #[test]
    fn prop_canonical_json_accepts_exactly_the_canonical_values(value in json_value()) {
        let expected = is_canonical(&value);
        let converted = CanonicalJsonValue::try_from(value.clone());
        prop_assert_eq!(converted.is_ok(), expected);
        let deserialized = serde_json::from_value::<CanonicalJsonValue>(value.clone());
        prop_assert_eq!(deserialized.is_ok(), expected);
        let from_text = serde_json::from_str::<CanonicalJsonValue>(&value.to_string());
        prop_assert_eq!(from_text.is_ok(), expected);
    }

    /// Canonical JSON text is the spec's encoding, reads back to the same value, and encoding
    /// it again changes nothing.
    #[test]
    fn prop_canonical_json_round_trips_and_is_idempotent(value in canonical_json_value()) {
        let canonical = CanonicalJsonValue::try_from(value.clone()).unwrap();
        let text = canonical_text(&canonical);
        prop_assert_eq!(&text, &reference_encoding(&value));
        let again: CanonicalJsonValue = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&again, &canonical);
        prop_assert_eq!(canonical_text(&again), text.clone());
        prop_assert_eq!(Value::from(again), value);
    }

    /// Floats are refused wherever they are, however whole they look.
    #[test]
    fn prop_canonical_json_refuses_floats(value in canonical_json_value(), float in any::<f64>()) {
        let Some(number) = serde_json::Number::from_f64(float) else { return Ok(()) };
        let with_float = Value::Array(vec![value, Value::Number(number)]);
        prop_assert!(CanonicalJsonValue::try_from(with_float).is_err());
    }

    /// Integers beyond +-(2^53 - 1) are refused, not wrapped or clamped.
    #[test]
    fn prop_canonical_json_refuses_out_of_range_integers(
        n in prop_oneof![(MAX_SAFE_INT + 1)..=i64::MAX, i64::MIN..=(-MAX_SAFE_INT - 1)],
        big in (i64::MAX as u64 + 1)..=u64::MAX,
    ) {
        prop_assert!(CanonicalJsonValue::try_from(Value::from(n)).is_err());
        prop_assert!(CanonicalJsonValue::try_from(Value::from(big)).is_err());
        let (object, array) = (format!("{{\"n\":{n}}}"), format!("[{big}]"));
        prop_assert!(serde_json::from_str::<CanonicalJsonValue>(&object).is_err());
        prop_assert!(serde_json::from_str::<CanonicalJsonValue>(&array).is_err());
    }
}

fn signing_key() -> Ed25519KeyPair {
    let der = Ed25519KeyPair::generate();
    Ed25519KeyPair::from_der(&der, "prop".to_owned()).unwrap()
}

fn rules_of(version: &str) -> RoomVersionRules {
    room_version(version).expect("supported room version").1
}

fn version() -> impl Strategy<Value = &'static str> {
    prop::sample::select(SUPPORTED_ROOM_VERSIONS)
}

/// Event types: the ones the rules look at, and anything else.
fn event_type() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "m.room.create",
            "m.room.member",
            "m.room.power_levels",
            "m.room.join_rules",
            "m.room.third_party_invite",
            "m.room.redaction",
            "m.room.aliases",
            "m.room.history_visibility",
            "m.room.message",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ]
}

/// State keys: none, empty, a user ID, or anything.
fn state_key() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(String::new())),
        user_id().prop_map(Some),
        any::<String>().prop_map(Some),
    ]
}

fn user_id() -> impl Strategy<Value = String> {
    ("[a-z0-9._=/-]{1,12}", prop::sample::select(vec!["example.org", "other.example", "[::1]:8448"]))
        .prop_map(|(localpart, server)| format!("@{localpart}:{server}"))
}

fn pdu_key_set(key: &Ed25519KeyPair, server: &str) -> ruma::signatures::PublicKeyMap {
    let mut keys = BTreeMap::new();
    keys.insert("ed25519:prop".to_owned(), ruma::serde::Base64::new(key.public_key().to_vec()));
    let mut map = BTreeMap::new();
    map.insert(server.to_owned(), keys);
    map
}

/// A template of arbitrary shape in a room; `None` for the room ID only where a v12 create
/// event may omit it.
fn build(
    rules: &RoomVersionRules,
    template: PduTemplate,
    key: &Ed25519KeyPair,
    prev_events: &[&Pdu],
    auth_events: &[&Pdu],
    depth: u64,
) -> Result<Pdu, String> {
    let origin = template.sender.server_name().to_string();
    template.build(&PduContext {
        rules,
        prev_events,
        auth_events,
        depth,
        origin_server_ts: 1_700_000_000_000 + depth,
        origin: &origin,
        key,
        local_id: &format!("event{depth}"),
    })
}

proptest! {
    #![proptest_config(config())]

    /// Any content, type and state key in any room version: building never panics and fails
    /// only on content canonical JSON cannot hold; a built event is canonical, has a stable
    /// event ID in the version's format, verifies, and its redaction is idempotent and keeps
    /// the event ID and the signature.
    #[test]
    fn prop_pdus_build_verify_and_redact_in_every_room_version(
        version in version(),
        kind in event_type(),
        state_key in state_key(),
        content in prop::collection::btree_map(any::<String>(), json_value(), 0..6),
        sender in user_id(),
        redacts in prop::option::of("[A-Za-z0-9]{1,20}"),
        omit_room_id in any::<bool>(),
    ) {
        let rules = rules_of(version);
        let key = signing_key();
        let content = Value::Object(content.into_iter().collect::<Map<_, _>>());
        let sender = UserId::parse(&sender).unwrap();
        let room_id = (!omit_room_id).then(|| RoomId::parse("!room:example.org").unwrap());
        let redacts = redacts.map(|id| EventId::parse(format!("${id}:example.org")).unwrap());
        let template = PduTemplate {
            room_id: room_id.clone(),
            sender: sender.clone(),
            kind: kind.clone(),
            state_key: state_key.clone(),
            content: content.clone(),
            redacts: redacts.clone(),
        };
        let may_omit_room_id = rules.room_id_format == RoomIdFormatVersion::V2 && kind == "m.room.create";
        let built = build(&rules, template.clone(), &key, &[], &[], 1);
        let expected_ok = is_canonical(&content) && (room_id.is_some() || may_omit_room_id);
        // Redacting a member event reads its membership: without one, ruma may be unable to
        // redact it or to compute its reference hash (depending on the version and on whether
        // it has a state key), so building and redacting it are an error or a value, never a
        // panic (the authorization rules refuse such events before they are stored).
        if kind == "m.room.member" && !content.get("membership").is_some_and(Value::is_string) {
            if let Ok(pdu) = built {
                let _ = pdu.redacted(&rules);
            }
            return Ok(());
        }
        prop_assert_eq!(built.is_ok(), expected_ok, "{:?}", built.as_ref().err());
        let Ok(pdu) = built else { return Ok(()) };

        // The stored text is canonical JSON and holds the content as given.
        let json = pdu.json();
        prop_assert!(!json.is_empty());
        let json_value = Value::from(CanonicalJsonValue::Object(json.clone()));
        prop_assert_eq!(pdu.json_str(), reference_encoding(&json_value));
        // A redaction names its target in the content too where the version reads it there.
        let mut expected_content = content.clone();
        if let Some(target) = &redacts
            && kind == "m.room.redaction"
            && rules.redaction.content_field_redacts
        {
            expected_content
                .as_object_mut()
                .unwrap()
                .entry("redacts")
                .or_insert_with(|| Value::String(target.to_string()));
        }
        prop_assert_eq!(pdu.content_value(), expected_content);
        prop_assert_eq!(pdu.kind.to_string(), kind);
        prop_assert_eq!(&pdu.state_key, &state_key);

        // The event ID: the same inputs give the same ID, in the version's format.
        let again = build(&rules, template, &key, &[], &[], 1).unwrap();
        prop_assert_eq!(&again.event_id, &pdu.event_id);
        prop_assert_eq!(again.json_str(), pdu.json_str());
        let reference_hash = ruma::signatures::reference_hash(&json, &rules).unwrap();
        match rules.event_id_format {
            EventIdFormatVersion::V1 => prop_assert_eq!(pdu.event_id.as_str(), "$event1:".to_owned() + sender.server_name().as_str()),
            _ => prop_assert_eq!(pdu.event_id.as_str(), format!("${reference_hash}")),
        }
        if rules.event_id_format == EventIdFormatVersion::V3 {
            prop_assert!(!pdu.event_id.as_str().contains(['+', '/']), "{}", pdu.event_id);
        }
        // Reparsing the stored text gives the same event.
        let reparsed = Pdu::from_json(json.clone(), pdu.event_id.clone(), &rules).unwrap();
        prop_assert_eq!(reparsed.json_str(), pdu.json_str());

        // The signature and content hash verify with ruma.
        let keys = pdu_key_set(&key, sender.server_name().as_str());
        prop_assert_eq!(ruma::signatures::verify_event(&keys, &json, &rules).unwrap(), Verified::All);

        // Redaction: idempotent, keeps the event ID and reference hash, and the signature
        // (the content hash only where redaction removed nothing).
        let redacted = pdu.redacted(&rules).unwrap();
        let twice = redacted.redacted(&rules).unwrap();
        prop_assert_eq!(twice.json_str(), redacted.json_str());
        prop_assert_eq!(&redacted.event_id, &pdu.event_id);
        prop_assert_eq!(ruma::signatures::reference_hash(&redacted.json(), &rules).unwrap(), reference_hash);
        let verified = ruma::signatures::verify_event(&keys, &redacted.json(), &rules);
        prop_assert!(verified.is_ok(), "{:?}", verified);
    }

    /// Parsing an arbitrary object as a PDU never panics.
    #[test]
    fn prop_pdu_from_arbitrary_json_never_panics(
        version in version(),
        fields in prop::collection::btree_map(
            prop_oneof![
                prop::sample::select(vec![
                    "type", "room_id", "sender", "state_key", "content", "origin_server_ts",
                    "depth", "prev_events", "auth_events", "redacts", "hashes", "signatures",
                ]).prop_map(str::to_owned),
                any::<String>(),
            ],
            canonical_json_value(),
            0..12,
        ),
    ) {
        let rules = rules_of(version);
        let Ok(CanonicalJsonValue::Object(json)) =
            CanonicalJsonValue::try_from(Value::Object(fields.into_iter().collect()))
        else {
            unreachable!("canonical values convert")
        };
        let event_id = EventId::parse("$garbled:example.org").unwrap();
        if let Ok(pdu) = Pdu::from_json(json, event_id, &rules) {
            let _ = pdu.redacted(&rules);
            let _ = pdu.to_client_json();
        }
    }
}

/// Content the authorization rules read, with values of the right and of the wrong shapes.
fn auth_content() -> impl Strategy<Value = Value> {
    let user = user_id().prop_map(Value::from);
    let leaf = prop_oneof![
        prop::sample::select(vec![
            "join",
            "invite",
            "leave",
            "ban",
            "knock",
            "public",
            "restricted",
            "knock_restricted",
            "private",
            "m.room_membership",
            "1",
            "11",
            "12",
            "50",
            "-1",
            "",
        ])
        .prop_map(Value::from),
        (-200i64..200).prop_map(Value::from),
        prop_oneof![Just(MAX_SAFE_INT), Just(-MAX_SAFE_INT)].prop_map(Value::from),
        user,
        canonical_json_value(),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    user_id(),
                    prop::sample::select(vec![
                        "m.room.member",
                        "m.room.power_levels",
                        "type",
                        "room_id",
                        "mxid",
                        "token",
                        "signed",
                        "signatures"
                    ])
                    .prop_map(str::to_owned),
                    any::<String>()
                ],
                inner,
                0..4,
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    });
    prop::collection::btree_map(
        prop_oneof![
            prop::sample::select(vec![
                "membership",
                "join_authorised_via_users_server",
                "third_party_invite",
                "users",
                "users_default",
                "events",
                "events_default",
                "state_default",
                "ban",
                "kick",
                "invite",
                "redact",
                "notifications",
                "join_rule",
                "allow",
                "creator",
                "room_version",
                "additional_creators",
                "m.federate",
                "predecessor",
                "redacts",
                "display_name",
                "key_validity_url",
                "public_key",
                "public_keys",
            ])
            .prop_map(str::to_owned),
            any::<String>(),
        ],
        value,
        0..6,
    )
    .prop_map(|map| Value::Object(map.into_iter().collect()))
}

/// One garbled event: its shape, the earlier events it names as prev and auth events (by
/// index, modulo the number of earlier events), and whether `fetch_event` can find it.
#[derive(Clone, Debug)]
struct GarbledEvent {
    kind: String,
    state_key: Option<String>,
    sender: String,
    content: Value,
    prev: Vec<usize>,
    auth: Vec<usize>,
    findable: bool,
    rejected: bool,
}

fn garbled_event() -> impl Strategy<Value = GarbledEvent> {
    (
        event_type(),
        state_key(),
        prop_oneof![Just("@alice:example.org".to_owned()), user_id()],
        auth_content(),
        prop::collection::vec(any::<usize>(), 0..3),
        prop::collection::vec(any::<usize>(), 0..5),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(kind, state_key, sender, content, prev, auth, findable, rejected)| GarbledEvent {
            kind,
            state_key,
            sender,
            content,
            prev,
            auth,
            findable,
            rejected,
        })
}

/// A room of garbled events after a valid create event.
struct GarbledRoom {
    rules: RoomVersionRules,
    events: Vec<Pdu>,
    by_id: HashMap<OwnedEventId, Pdu>,
}

impl GarbledRoom {
    fn build(version: &str, garbled: &[GarbledEvent]) -> GarbledRoom {
        let rules = rules_of(version);
        let key = signing_key();
        let v12 = rules.room_id_format == RoomIdFormatVersion::V2;
        let mut create_content = serde_json::json!({"room_version": version});
        if !rules.authorization.use_room_create_sender {
            create_content["creator"] = Value::from("@alice:example.org");
        }
        let create = PduTemplate {
            room_id: (!v12).then(|| RoomId::parse("!room:example.org").unwrap()),
            sender: UserId::parse("@alice:example.org").unwrap(),
            kind: "m.room.create".to_owned(),
            state_key: Some(String::new()),
            content: create_content,
            redacts: None,
        };
        let create = build(&rules, create, &key, &[], &[], 1).unwrap();
        let room_id = create.room_id.clone();
        let mut events = vec![create.clone()];
        let mut by_id = HashMap::from([(create.event_id.clone(), create)]);
        for spec in garbled {
            let pick = |indices: &[usize]| -> Vec<usize> {
                let mut picked: Vec<usize> = indices.iter().map(|i| i % events.len()).collect();
                picked.sort_unstable();
                picked.dedup();
                picked
            };
            let prev: Vec<&Pdu> = pick(&spec.prev).into_iter().map(|i| &events[i]).collect();
            let auth: Vec<&Pdu> = pick(&spec.auth).into_iter().map(|i| &events[i]).collect();
            let depth = prev.iter().map(|pdu| pdu.depth).max().unwrap_or(0) + 1;
            let template = PduTemplate {
                room_id: Some(room_id.clone()),
                sender: UserId::parse(&spec.sender).unwrap(),
                kind: spec.kind.clone(),
                state_key: spec.state_key.clone(),
                content: spec.content.clone(),
                redacts: None,
            };
            let Ok(mut pdu) = build(&rules, template, &key, &prev, &auth, depth) else { continue };
            pdu.rejected = spec.rejected;
            if spec.findable {
                by_id.insert(pdu.event_id.clone(), pdu.clone());
            }
            events.push(pdu);
        }
        GarbledRoom { rules, events, by_id }
    }

    fn fetch(&self, event_id: &EventId) -> Option<Pdu> {
        self.by_id.get(event_id).cloned()
    }

    fn auth_chain(&self, state: &StateMap) -> BTreeSet<OwnedEventId> {
        let mut chain = BTreeSet::new();
        let mut stack: Vec<OwnedEventId> = state.values().cloned().collect();
        while let Some(event_id) = stack.pop() {
            if !chain.insert(event_id.clone()) {
                continue;
            }
            if let Some(pdu) = self.fetch(&event_id) {
                stack.extend(pdu.auth_events.iter().cloned());
            }
        }
        chain
    }

    /// A state map of the events picked (by index), keyed by their own type and state key,
    /// or, when `mislabel` is set, some of them under another event's key.
    fn state_map(&self, picks: &[usize], mislabel: bool) -> StateMap {
        let state_events: Vec<&Pdu> = self.events.iter().filter(|pdu| pdu.state_key.is_some()).collect();
        let mut state = StateMap::new();
        for (n, pick) in picks.iter().enumerate() {
            let pdu = state_events[pick % state_events.len()];
            let label =
                if mislabel && n % 2 == 1 { state_events[(pick + 1) % state_events.len()] } else { pdu };
            let key = (label.kind.to_string(), label.state_key.clone().unwrap_or_default());
            state.insert(key, pdu.event_id.clone());
        }
        state
    }
}

proptest! {
    #![proptest_config(config())]

    /// The authorization rules return a verdict for any garbled event, whatever its auth
    /// events and the state it is checked against.
    #[test]
    fn prop_auth_rules_never_panic_on_garbled_events(
        version in version(),
        garbled in prop::collection::vec(garbled_event(), 1..8),
    ) {
        let room = GarbledRoom::build(version, &garbled);
        for (index, pdu) in room.events.iter().enumerate().skip(1) {
            // The state: the latest event of each key before this one.
            let mut state: HashMap<(String, String), &Pdu> = HashMap::new();
            for earlier in &room.events[..index] {
                if let Some(state_key) = &earlier.state_key {
                    state.insert((earlier.kind.to_string(), state_key.clone()), earlier);
                }
            }
            let fetch_state = |kind: &ruma::events::StateEventType, state_key: &str| {
                state.get(&(kind.to_string(), state_key.to_owned())).map(|pdu| (*pdu).clone())
            };
            let _ = check_auth(&room.rules, pdu, |id| room.fetch(id), fetch_state);
        }
    }

    /// State resolution returns a state or an error for any forks of garbled events
    /// (missing events, rejected ones, mislabelled keys), and forks that agree resolve to
    /// what they agree on.
    #[test]
    fn prop_state_resolution_never_panics_on_garbled_forks(
        version in version(),
        garbled in prop::collection::vec(garbled_event(), 1..8),
        forks in prop::collection::vec(prop::collection::vec(any::<usize>(), 0..6), 1..4),
        mislabel in prop::bool::weighted(0.2),
        own_auth_chains in prop::bool::weighted(0.8),
    ) {
        let room = GarbledRoom::build(version, &garbled);
        let state_maps: Vec<StateMap> = forks.iter().map(|picks| room.state_map(picks, mislabel)).collect();
        let auth_chains: Vec<BTreeSet<OwnedEventId>> = if own_auth_chains {
            state_maps.iter().map(|state| room.auth_chain(state)).collect()
        } else {
            state_maps.iter().rev().map(|state| room.auth_chain(state)).take(1).collect()
        };
        let _ = resolve_state(&room.rules, &state_maps, &auth_chains, |id| room.fetch(id));

        // Forks that agree have nothing to resolve.
        let agreeing = vec![state_maps[0].clone(), state_maps[0].clone()];
        let chains = vec![room.auth_chain(&state_maps[0]); 2];
        if !mislabel {
            let resolved = resolve_state(&room.rules, &agreeing, &chains, |id| room.fetch(id));
            prop_assert_eq!(resolved.as_ref(), Ok(&state_maps[0]));
        }
    }
}
