//! The fixture format (see the crate docs), building a fixture's room in one room version, and
//! `check`, which runs a fixture and asserts its outcomes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use myelin_core::auth::{auth_types, check_auth};
use myelin_core::pdu::{Pdu, PduContext, PduTemplate, StateMap};
use myelin_core::room_version::room_version;
use myelin_core::state_res::resolve_state;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::{RoomIdFormatVersion, RoomVersionRules};
use ruma::signatures::Ed25519KeyPair;
use ruma::state_res::{Event, check_state_independent_auth_rules};
use ruma::{EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, UserId};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub description: String,
    pub versions: Vec<String>,
    pub events: Vec<EventSpec>,
    pub forks: Option<ByVersion<Vec<Vec<String>>>>,
    pub resolved: Option<ByVersion<Vec<String>>>,
    #[serde(default)]
    pub why: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub name: String,
    pub sender: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub state_key: Option<String>,
    pub content: ByVersion<Value>,
    pub prev: Option<Vec<String>>,
    pub auth: Option<Vec<String>>,
    pub redacts: Option<String>,
    pub ts: Option<u64>,
    pub allowed: Option<ByVersion<bool>>,
    pub error: Option<ByVersion<String>>,
    #[serde(default)]
    pub why: String,
}

/// A value that is the same in every room version, or given per version (`*` for the rest).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ByVersion<T> {
    PerVersion { by_version: BTreeMap<String, T> },
    Same(T),
}

impl<T> ByVersion<T> {
    pub fn get(&self, version: &str) -> &T {
        match self {
            ByVersion::Same(value) => value,
            ByVersion::PerVersion { by_version } => by_version
                .get(version)
                .or_else(|| by_version.get("*"))
                .unwrap_or_else(|| panic!("no value for room version {version} and no `*`")),
        }
    }
}

pub fn load(name: &str) -> Fixture {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs the fixture `tests/fixtures/{name}.json` in each of its room versions: every event's
/// verdict, and the resolved state if the fixture has forks.
pub fn check(name: &str) {
    let fixture = load(name);
    assert!(!fixture.versions.is_empty(), "{name}: no versions");
    for version in &fixture.versions {
        let room = Room::build(&fixture, version);
        let context = format!("fixture {name} ({}), room version {version}", fixture.description);
        let mut failures = Vec::new();
        for (spec, verdict) in fixture.events.iter().zip(&room.verdicts) {
            let expected = spec.allowed.as_ref().is_none_or(|allowed| *allowed.get(version));
            let failure = match verdict {
                Ok(()) if !expected => Some("was allowed, expected refused".to_owned()),
                Err(error) if expected => Some(format!("was refused: {error}")),
                Err(error) => spec
                    .error
                    .as_ref()
                    .map(|wanted| wanted.get(version))
                    .filter(|wanted| !error.contains(wanted.as_str()))
                    .map(|wanted| format!("was refused for `{error}`, expected `{wanted}`")),
                Ok(()) => None,
            };
            if let Some(failure) = failure {
                failures.push(format!("{} {failure} (why: {})", spec.name, spec.why));
            }
        }
        assert!(failures.is_empty(), "{context}:\n  {}", failures.join("\n  "));

        let (Some(forks), Some(resolved)) = (&fixture.forks, &fixture.resolved) else {
            assert!(
                fixture.forks.is_none() && fixture.resolved.is_none(),
                "{context}: forks without resolved"
            );
            continue;
        };
        let state_maps: Vec<StateMap> = forks.get(version).iter().map(|fork| room.state_map(fork)).collect();
        let auth_chains: Vec<BTreeSet<OwnedEventId>> =
            state_maps.iter().map(|state_map| room.auth_chain(state_map)).collect();
        let actual = resolve_state(&room.rules, &state_maps, &auth_chains, |id| room.fetch(id))
            .unwrap_or_else(|e| panic!("{context}: resolution failed: {e}"));
        let expected = room.state_map(resolved.get(version));
        assert_eq!(
            room.named(&actual),
            room.named(&expected),
            "{context}: resolved state\nwhy: {}",
            fixture.why
        );
    }
}

/// A v12 create event as sent: without a room ID.
struct V12Create<'a>(&'a Pdu);

impl Event for V12Create<'_> {
    type Id = OwnedEventId;

    fn event_id(&self) -> &OwnedEventId {
        self.0.event_id()
    }

    fn room_id(&self) -> Option<&RoomId> {
        None
    }

    fn sender(&self) -> &UserId {
        Event::sender(self.0)
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        Event::origin_server_ts(self.0)
    }

    fn event_type(&self) -> &TimelineEventType {
        self.0.event_type()
    }

    fn content(&self) -> &RawValue {
        Event::content(self.0)
    }

    fn state_key(&self) -> Option<&str> {
        Event::state_key(self.0)
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &OwnedEventId> + '_> {
        Event::prev_events(self.0)
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &OwnedEventId> + '_> {
        Event::auth_events(self.0)
    }

    fn redacts(&self) -> Option<&OwnedEventId> {
        Event::redacts(self.0)
    }

    fn rejected(&self) -> bool {
        Event::rejected(self.0)
    }
}

/// A fixture's room, built in one room version.
pub struct Room {
    pub rules: RoomVersionRules,
    /// Events by name.
    pub events: HashMap<String, Pdu>,
    names: HashMap<OwnedEventId, String>,
    /// The state after each event, by name; `None` where it is unknown (several prev events).
    state_after: HashMap<String, Option<StateMap>>,
    /// The verdict of `check_auth` for each event, in listing order.
    pub verdicts: Vec<Result<(), String>>,
}

impl Room {
    pub fn build(fixture: &Fixture, version: &str) -> Room {
        let (_, rules) =
            room_version(version).unwrap_or_else(|| panic!("unsupported room version {version}"));
        let der = Ed25519KeyPair::generate();
        let key = Ed25519KeyPair::from_der(&der, "fixture".to_owned()).unwrap();
        let mut room = Room {
            rules,
            events: HashMap::new(),
            names: HashMap::new(),
            state_after: HashMap::new(),
            verdicts: Vec::new(),
        };
        let mut previous: Option<&str> = None;
        for (index, spec) in fixture.events.iter().enumerate() {
            room.add(spec, version, previous, index, &key);
            previous = Some(&spec.name);
        }
        room
    }

    fn event(&self, name: &str) -> &Pdu {
        self.events.get(name).unwrap_or_else(|| panic!("unknown event name {name}"))
    }

    pub fn fetch(&self, event_id: &EventId) -> Option<Pdu> {
        self.names.get(event_id).map(|name| self.events[name].clone())
    }

    fn create(&self) -> &Pdu {
        self.events.values().find(|pdu| pdu.kind.to_string() == "m.room.create").expect("no create event yet")
    }

    fn add(
        &mut self,
        spec: &EventSpec,
        version: &str,
        previous: Option<&str>,
        index: usize,
        key: &Ed25519KeyPair,
    ) {
        let name = spec.name.as_str();
        assert!(!self.events.contains_key(name), "duplicate event name {name}");
        let rules = self.rules.clone();
        let prev_names: Vec<String> = match &spec.prev {
            Some(prev) => prev.clone(),
            None => previous.map(str::to_owned).into_iter().collect(),
        };
        let prev_events: Vec<&Pdu> = prev_names.iter().map(|name| self.event(name)).collect();
        let depth = prev_events.iter().map(|pdu| pdu.depth).max().map_or(1, |depth| depth + 1);
        let state_before: Option<StateMap> = match prev_names.as_slice() {
            [] => Some(StateMap::new()),
            [prev] => self.state_after[prev].clone(),
            _ => None,
        };

        let sender = UserId::parse(spec.sender.as_str()).unwrap_or_else(|e| panic!("{name}: sender: {e}"));
        let mut content = spec.content.get(version).clone();
        let is_create = spec.kind == "m.room.create";
        if is_create {
            let content = content.as_object_mut().expect("create content is an object");
            content.entry("room_version").or_insert_with(|| Value::from(version));
            if !rules.authorization.use_room_create_sender {
                content.entry("creator").or_insert_with(|| Value::from(sender.as_str()));
            }
        }
        let redacts = spec.redacts.as_ref().map(|target| self.event(target).event_id.clone());
        if let Some(redacts) = &redacts
            && rules.redaction.content_field_redacts
            && let Some(content) = content.as_object_mut()
        {
            content.entry("redacts").or_insert_with(|| Value::from(redacts.as_str()));
        }

        let room_id_from_create = rules.room_id_format == RoomIdFormatVersion::V2;
        let auth_events: Vec<&Pdu> = match &spec.auth {
            Some(names) => names
                .iter()
                .map(|name| self.event(name))
                .filter(|pdu| !(room_id_from_create && pdu.kind.to_string() == "m.room.create"))
                .collect(),
            None if is_create => Vec::new(),
            None => {
                let state = state_before.as_ref().unwrap_or_else(|| {
                    panic!("{name}: the state before it is unknown (several prev events); give `auth`")
                });
                let types = auth_types(&rules, &spec.kind, &sender, spec.state_key.as_deref(), &content)
                    .unwrap_or_else(|e| panic!("{name}: cannot select auth events ({e}); give `auth`"));
                types
                    .iter()
                    .filter_map(|(kind, state_key)| state.get(&(kind.to_string(), state_key.clone())))
                    .map(|event_id| &self.events[&self.names[event_id]])
                    .collect()
            }
        };

        let room_id = if is_create && room_id_from_create {
            None
        } else if room_id_from_create {
            Some(self.create().room_id.clone())
        } else {
            Some(RoomId::parse("!room:example.org").unwrap())
        };
        let origin = sender.server_name().to_string();
        let template = PduTemplate {
            room_id,
            sender: sender.clone(),
            kind: spec.kind.clone(),
            state_key: spec.state_key.clone(),
            content,
            redacts,
        };
        let mut pdu = template
            .build(&PduContext {
                rules: &rules,
                prev_events: &prev_events,
                auth_events: &auth_events,
                depth,
                origin_server_ts: spec.ts.unwrap_or(1_700_000_000_000 + 1000 * index as u64),
                origin: &origin,
                key,
                local_id: name,
            })
            .unwrap_or_else(|e| panic!("{name}: cannot build: {e}"));

        // The state the auth events give, plus the create event where the room ID names it.
        let mut auth_state: HashMap<(String, String), Pdu> = auth_events
            .iter()
            .map(|pdu| ((pdu.kind.to_string(), pdu.state_key.clone().unwrap_or_default()), (*pdu).clone()))
            .collect();
        if room_id_from_create && !is_create {
            auth_state.insert(("m.room.create".to_owned(), String::new()), self.create().clone());
        }
        let fetch_state = |kind: &StateEventType, state_key: &str| {
            auth_state.get(&(kind.to_string(), state_key.to_owned())).cloned()
        };
        let verdict =
            if is_create && room_id_from_create {
                // Works around `Pdu`'s `Event::room_id()`, which gives a v12 create event the room
                // ID derived from it, while ruma refuses any create event with a room ID (see the
                // ignored test `v12_create_event_passes_check_auth`).
                check_state_independent_auth_rules(&rules.authorization, V12Create(&pdu), |_: &EventId| {
                    None::<Pdu>
                })
            } else {
                check_auth(&rules, &pdu, |id| self.fetch(id), fetch_state)
            };

        let mut state_after = state_before;
        if verdict.is_ok() {
            if let (Some(state), Some(state_key)) = (&mut state_after, &pdu.state_key) {
                state.insert((pdu.kind.to_string(), state_key.clone()), pdu.event_id.clone());
            }
        } else {
            pdu.rejected = true;
        }
        assert!(
            self.names.insert(pdu.event_id.clone(), name.to_owned()).is_none(),
            "{name}: event ID {} already used",
            pdu.event_id
        );
        self.events.insert(name.to_owned(), pdu);
        self.state_after.insert(name.to_owned(), state_after);
        self.verdicts.push(verdict);
    }

    /// The state map of the named state events.
    pub fn state_map(&self, names: &[String]) -> StateMap {
        let mut state = StateMap::new();
        for name in names {
            let pdu = self.event(name);
            let state_key = pdu.state_key.clone().unwrap_or_else(|| panic!("{name} is not a state event"));
            let previous = state.insert((pdu.kind.to_string(), state_key), pdu.event_id.clone());
            assert!(previous.is_none(), "two events for the key of {name}");
        }
        state
    }

    /// The full auth chain of a state: its events and everything reachable through their
    /// `auth_events`.
    pub fn auth_chain(&self, state: &StateMap) -> BTreeSet<OwnedEventId> {
        let mut chain = BTreeSet::new();
        let mut stack: Vec<OwnedEventId> = state.values().cloned().collect();
        while let Some(event_id) = stack.pop() {
            if let Some(pdu) = self.fetch(&event_id) {
                stack.extend(pdu.auth_events.iter().filter(|id| !chain.contains(*id)).cloned());
            }
            chain.insert(event_id);
        }
        chain
    }

    /// A state map with event names instead of IDs, for readable assertions.
    pub fn named(&self, state: &StateMap) -> BTreeMap<(String, String), String> {
        state
            .iter()
            .map(|(key, event_id)| {
                (key.clone(), self.names.get(event_id).cloned().unwrap_or_else(|| event_id.to_string()))
            })
            .collect()
    }
}
