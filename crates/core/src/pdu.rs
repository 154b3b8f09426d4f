//! PDUs: building local events in the room version's format (content hash, signature, event ID
//! from the reference hash) and parsing stored or received ones.

use std::collections::BTreeMap;

use ruma::canonical_json::redact_in_place;
use ruma::events::TimelineEventType;
use ruma::room_version_rules::{
    EventIdFormatVersion, EventsReferenceFormatVersion, RoomIdFormatVersion, RoomVersionRules,
};
use ruma::signatures::Ed25519KeyPair;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, UInt, UserId,
};
use serde_json::Value;
use serde_json::value::RawValue;

/// A PDU with its parsed fields. `json` is the event as signed (the federation format, without
/// `event_id` for room versions that derive it).
#[derive(Clone, Debug)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub kind: TimelineEventType,
    pub state_key: Option<String>,
    pub content: Box<RawValue>,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub depth: u64,
    pub redacts: Option<OwnedEventId>,
    pub rejected: bool,
    /// Whether the event carries `room_id` (a v12 create event does not).
    has_room_id: bool,
    /// The canonical JSON text (kept as text: a parsed tree costs several times its size in
    /// every cached event).
    json: Box<str>,
}

/// What a local event starts as.
#[derive(Clone, Debug)]
pub struct PduTemplate {
    /// `None` only for the `m.room.create` event of a room whose ID derives from it (v12).
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub kind: String,
    pub state_key: Option<String>,
    pub content: Value,
    /// For redactions: the event redacted.
    pub redacts: Option<OwnedEventId>,
}

/// Everything else a new PDU needs.
pub struct PduContext<'a> {
    pub rules: &'a RoomVersionRules,
    pub prev_events: &'a [&'a Pdu],
    pub auth_events: &'a [&'a Pdu],
    pub depth: u64,
    pub origin_server_ts: u64,
    /// This server's name (the signing entity).
    pub origin: &'a str,
    pub key: &'a Ed25519KeyPair,
    /// For room versions 1 and 2: the random part of the event ID (`$<local>:<origin>`).
    pub local_id: &'a str,
}

fn string_field<'a>(json: &'a CanonicalJsonObject, key: &str) -> Result<&'a str, String> {
    match json.get(key) {
        Some(CanonicalJsonValue::String(s)) => Ok(s),
        _ => Err(format!("missing or invalid `{key}`")),
    }
}

/// The `sha256` reference hash of an event, as v1/v2 `prev_events` entries carry it.
fn reference_entry(pdu: &Pdu, rules: &RoomVersionRules) -> Result<CanonicalJsonValue, String> {
    let hash = ruma::signatures::reference_hash(&pdu.json(), rules).map_err(|e| e.to_string())?;
    let mut hashes = CanonicalJsonObject::new();
    hashes.insert("sha256".to_owned(), CanonicalJsonValue::String(hash));
    Ok(CanonicalJsonValue::Array(vec![
        CanonicalJsonValue::String(pdu.event_id.to_string()),
        CanonicalJsonValue::Object(hashes),
    ]))
}

fn references(pdus: &[&Pdu], rules: &RoomVersionRules) -> Result<CanonicalJsonValue, String> {
    let mut out = Vec::with_capacity(pdus.len());
    for pdu in pdus {
        out.push(match rules.events_reference_format {
            EventsReferenceFormatVersion::V1 => reference_entry(pdu, rules)?,
            _ => CanonicalJsonValue::String(pdu.event_id.to_string()),
        });
    }
    Ok(CanonicalJsonValue::Array(out))
}

fn parse_references(value: Option<&CanonicalJsonValue>, key: &str) -> Result<Vec<OwnedEventId>, String> {
    let Some(CanonicalJsonValue::Array(items)) = value else {
        return Err(format!("missing or invalid `{key}`"));
    };
    items
        .iter()
        .map(|item| {
            let id = match item {
                CanonicalJsonValue::String(id) => id.as_str(),
                CanonicalJsonValue::Array(pair) => match pair.first() {
                    Some(CanonicalJsonValue::String(id)) => id.as_str(),
                    _ => return Err(format!("invalid entry in `{key}`")),
                },
                _ => return Err(format!("invalid entry in `{key}`")),
            };
            EventId::parse(id).map_err(|e| format!("invalid event ID in `{key}`: {e}"))
        })
        .collect()
}

impl PduTemplate {
    /// Builds, hashes and signs the PDU, and derives its event ID (and, for a v12 create event,
    /// the room ID).
    pub fn build(self, context: &PduContext<'_>) -> Result<Pdu, String> {
        let rules = context.rules;
        let mut content: CanonicalJsonValue = serde_json::from_value(self.content)
            .map_err(|e| format!("content is not canonical JSON: {e}"))?;
        let CanonicalJsonValue::Object(fields) = &mut content else {
            return Err("content must be an object".to_owned());
        };
        // From v11 the redacted event is named in the content (the top-level key is no longer
        // part of the event): without it other servers see a redaction of nothing.
        if let Some(redacts) = &self.redacts
            && rules.redaction.content_field_redacts
            && self.kind == "m.room.redaction"
        {
            fields
                .entry("redacts".to_owned())
                .or_insert_with(|| CanonicalJsonValue::String(redacts.to_string()));
        }
        let mut json = CanonicalJsonObject::new();
        json.insert("auth_events".to_owned(), references(context.auth_events, rules)?);
        json.insert("prev_events".to_owned(), references(context.prev_events, rules)?);
        json.insert("content".to_owned(), content);
        json.insert(
            "depth".to_owned(),
            CanonicalJsonValue::Integer(ruma::Int::try_from(context.depth).map_err(|e| e.to_string())?),
        );
        json.insert(
            "origin_server_ts".to_owned(),
            CanonicalJsonValue::Integer(
                ruma::Int::try_from(context.origin_server_ts).map_err(|e| e.to_string())?,
            ),
        );
        json.insert("sender".to_owned(), CanonicalJsonValue::String(self.sender.to_string()));
        json.insert("type".to_owned(), CanonicalJsonValue::String(self.kind.clone()));
        if let Some(state_key) = &self.state_key {
            json.insert("state_key".to_owned(), CanonicalJsonValue::String(state_key.clone()));
        }
        if let Some(room_id) = &self.room_id {
            json.insert("room_id".to_owned(), CanonicalJsonValue::String(room_id.to_string()));
        } else if rules.room_id_format != RoomIdFormatVersion::V2 || self.kind != "m.room.create" {
            return Err("only a v12 create event may omit room_id".to_owned());
        }
        if let Some(redacts) = &self.redacts {
            // v11 moved `redacts` into the content; the top-level key is kept for older clients
            // and servers only in earlier versions.
            if !rules.redaction.content_field_redacts {
                json.insert("redacts".to_owned(), CanonicalJsonValue::String(redacts.to_string()));
            }
        }
        let legacy_ids = rules.event_id_format == EventIdFormatVersion::V1;
        if legacy_ids {
            json.insert("origin".to_owned(), CanonicalJsonValue::String(context.origin.to_owned()));
            json.insert(
                "event_id".to_owned(),
                CanonicalJsonValue::String(format!("${}:{}", context.local_id, context.origin)),
            );
        }
        ruma::signatures::hash_and_sign_event(context.origin, context.key, &mut json, &rules.redaction)
            .map_err(|e| e.to_string())?;
        let event_id = if legacy_ids {
            EventId::parse(string_field(&json, "event_id")?).map_err(|e| e.to_string())?
        } else {
            let hash = ruma::signatures::reference_hash(&json, rules).map_err(|e| e.to_string())?;
            EventId::parse(format!("${hash}")).map_err(|e| e.to_string())?
        };
        Pdu::from_json(json, event_id, rules)
    }
}

impl Pdu {
    /// Parses a PDU whose event ID is known (stored events, or computed by the caller).
    pub fn from_json(
        json: CanonicalJsonObject,
        event_id: OwnedEventId,
        rules: &RoomVersionRules,
    ) -> Result<Pdu, String> {
        let kind: TimelineEventType = string_field(&json, "type")?.into();
        let room_id = match json.get("room_id") {
            Some(CanonicalJsonValue::String(room_id)) => RoomId::parse(room_id).map_err(|e| e.to_string())?,
            _ if rules.room_id_format == RoomIdFormatVersion::V2 && kind == TimelineEventType::RoomCreate => {
                RoomId::parse(format!("!{}", &event_id.as_str()[1..])).map_err(|e| e.to_string())?
            }
            _ => return Err("missing or invalid `room_id`".to_owned()),
        };
        let sender =
            UserId::parse(string_field(&json, "sender")?).map_err(|e| format!("invalid sender: {e}"))?;
        let state_key = match json.get("state_key") {
            None => None,
            Some(CanonicalJsonValue::String(key)) => Some(key.clone()),
            Some(_) => return Err("invalid `state_key`".to_owned()),
        };
        let content_value = json.get("content").ok_or("missing `content`")?;
        if !matches!(content_value, CanonicalJsonValue::Object(_)) {
            return Err("`content` must be an object".to_owned());
        }
        let content = serde_json::value::to_raw_value(content_value).map_err(|e| e.to_string())?;
        let origin_server_ts = match json.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(ts)) => {
                let ts = u64::try_from(i64::from(*ts)).map_err(|_| "negative origin_server_ts")?;
                MilliSecondsSinceUnixEpoch(UInt::try_from(ts).map_err(|_| "origin_server_ts out of range")?)
            }
            _ => return Err("missing or invalid `origin_server_ts`".to_owned()),
        };
        let depth = match json.get("depth") {
            Some(CanonicalJsonValue::Integer(depth)) => {
                u64::try_from(i64::from(*depth)).map_err(|_| "negative depth")?
            }
            _ => return Err("missing or invalid `depth`".to_owned()),
        };
        let prev_events = parse_references(json.get("prev_events"), "prev_events")?;
        let auth_events = parse_references(json.get("auth_events"), "auth_events")?;
        let redacts_value = if rules.redaction.content_field_redacts {
            match json.get("content") {
                Some(CanonicalJsonValue::Object(content)) => {
                    content.get("redacts").or_else(|| json.get("redacts"))
                }
                _ => None,
            }
        } else {
            json.get("redacts")
        };
        let redacts = match redacts_value {
            Some(CanonicalJsonValue::String(id)) => EventId::parse(id).ok(),
            _ => None,
        };
        let has_room_id = json.contains_key("room_id");
        let json = serde_json::to_string(&json).map_err(|e| e.to_string())?.into_boxed_str();
        Ok(Pdu {
            event_id,
            room_id,
            sender,
            kind,
            state_key,
            content,
            origin_server_ts,
            prev_events,
            auth_events,
            depth,
            redacts,
            rejected: false,
            has_room_id,
            json,
        })
    }

    /// The event's content as a JSON value.
    pub fn content_value(&self) -> Value {
        serde_json::from_str(self.content.get()).unwrap_or(Value::Object(Default::default()))
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// The event in the client-server format (without `unsigned`).
    pub fn to_client_json(&self) -> serde_json::Map<String, Value> {
        let mut event = serde_json::Map::new();
        event.insert("event_id".to_owned(), Value::from(self.event_id.as_str()));
        event.insert("room_id".to_owned(), Value::from(self.room_id.as_str()));
        event.insert("sender".to_owned(), Value::from(self.sender.as_str()));
        event.insert("type".to_owned(), Value::from(self.kind.to_string()));
        event.insert("content".to_owned(), self.content_value());
        event.insert("origin_server_ts".to_owned(), Value::from(u64::from(self.origin_server_ts.0)));
        if let Some(state_key) = &self.state_key {
            event.insert("state_key".to_owned(), Value::from(state_key.as_str()));
        }
        if let Some(redacts) = &self.redacts {
            event.insert("redacts".to_owned(), Value::from(redacts.as_str()));
        }
        event
    }

    /// The event as a canonical JSON object (parsed from its text).
    pub fn json(&self) -> CanonicalJsonObject {
        serde_json::from_str(&self.json).unwrap_or_default()
    }

    /// An estimate of the memory the event holds (its allocations and their overhead), for
    /// caches bounded by size.
    pub fn heap_size(&self) -> usize {
        const ALLOCATION: usize = 16;
        let id = |id: &EventId| id.as_str().len() + ALLOCATION;
        let ids =
            |ids: &[OwnedEventId]| ids.iter().map(|i| id(i)).sum::<usize>() + ids.len() * 16 + ALLOCATION;
        std::mem::size_of::<Pdu>()
            + ALLOCATION
            + self.json.len()
            + self.content.get().len()
            + id(&self.event_id)
            + self.room_id.as_str().len()
            + self.sender.as_str().len()
            + self.state_key.as_ref().map_or(0, |k| k.len() + ALLOCATION)
            + ids(&self.prev_events)
            + ids(&self.auth_events)
            + 4 * ALLOCATION
    }

    /// The canonical JSON text of the PDU, as stored.
    pub fn json_str(&self) -> &str {
        &self.json
    }

    /// This event with the room version's redaction algorithm applied.
    pub fn redacted(&self, rules: &RoomVersionRules) -> Result<Pdu, String> {
        let mut json = self.json();
        redact_in_place(&mut json, &rules.redaction, None).map_err(|e| e.to_string())?;
        let mut pdu = Pdu::from_json(json, self.event_id.clone(), rules)?;
        pdu.rejected = self.rejected;
        Ok(pdu)
    }

    /// The canonical JSON text of the PDU, as stored.
    pub fn json_string(&self) -> String {
        self.json.to_string()
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        // A v12 create event has no `room_id`: the room ID derives from it.
        self.has_room_id.then_some(&*self.room_id)
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        self.rejected
    }
}

/// A room's state: `(event type, state key)` to event ID.
pub type StateMap = BTreeMap<(String, String), OwnedEventId>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room_version::room_version;

    fn key() -> Ed25519KeyPair {
        let der = Ed25519KeyPair::generate();
        Ed25519KeyPair::from_der(&der, "a_test".to_owned()).unwrap()
    }

    fn create(version: &str, key: &Ed25519KeyPair) -> Pdu {
        let (_, rules) = room_version(version).unwrap();
        let room_id = if rules.room_id_format == RoomIdFormatVersion::V2 {
            None
        } else {
            Some(RoomId::parse("!room:example.org").unwrap())
        };
        let mut content = serde_json::json!({"room_version": version});
        if !rules.authorization.use_room_create_sender {
            content["creator"] = serde_json::json!("@alice:example.org");
        }
        PduTemplate {
            room_id,
            sender: UserId::parse("@alice:example.org").unwrap(),
            kind: "m.room.create".to_owned(),
            state_key: Some(String::new()),
            content,
            redacts: None,
        }
        .build(&PduContext {
            rules: &rules,
            prev_events: &[],
            auth_events: &[],
            depth: 1,
            origin_server_ts: 1_700_000_000_000,
            origin: "example.org",
            key,
            local_id: "createevent",
        })
        .unwrap()
    }

    #[test]
    fn event_ids_follow_the_room_version() {
        let key = key();
        let v1 = create("1", &key);
        assert_eq!(v1.event_id.as_str(), "$createevent:example.org");
        let v4 = create("4", &key);
        assert!(!v4.event_id.as_str().contains(':') && !v4.event_id.as_str().contains('/'));
        assert!(!v4.json().contains_key("event_id"));
        let v12 = create("12", &key);
        assert_eq!(v12.room_id.as_str(), format!("!{}", &v12.event_id.as_str()[1..]));
        assert!(!v12.json().contains_key("room_id"));
    }

    #[test]
    fn built_events_carry_hashes_and_verifiable_signatures() {
        let key = key();
        for version in ["1", "6", "10", "11", "12"] {
            let pdu = create(version, &key);
            let (_, rules) = room_version(version).unwrap();
            assert!(pdu.json().contains_key("hashes"));
            let mut keys = BTreeMap::new();
            keys.insert("ed25519:a_test".to_owned(), ruma::serde::Base64::new(key.public_key().to_vec()));
            let mut map = BTreeMap::new();
            map.insert("example.org".to_owned(), keys);
            let verified = ruma::signatures::verify_event(&map, &pdu.json(), &rules).unwrap();
            assert_eq!(verified, ruma::signatures::Verified::All, "version {version}");
            // A reparsed PDU keeps its fields.
            let again = Pdu::from_json(pdu.json(), pdu.event_id.clone(), &rules).unwrap();
            assert_eq!(again.room_id, pdu.room_id);
            assert_eq!(again.depth, 1);
        }
    }

    #[test]
    fn a_redaction_names_its_target_where_the_version_reads_it() {
        let key = key();
        for version in ["10", "11", "12"] {
            let (_, rules) = room_version(version).unwrap();
            let create = create(version, &key);
            let redaction = PduTemplate {
                room_id: Some(create.room_id.clone()),
                sender: UserId::parse("@alice:example.org").unwrap(),
                kind: "m.room.redaction".to_owned(),
                state_key: None,
                content: serde_json::json!({"reason": "oops"}),
                redacts: Some(create.event_id.clone()),
            }
            .build(&PduContext {
                rules: &rules,
                prev_events: &[&create],
                auth_events: &[&create],
                depth: 2,
                origin_server_ts: 1_700_000_000_001,
                origin: "example.org",
                key: &key,
                local_id: "redaction",
            })
            .unwrap();
            let json = serde_json::to_value(redaction.json()).unwrap();
            let target = serde_json::json!(create.event_id.as_str());
            if version == "10" {
                assert_eq!(json["redacts"], target, "v{version}: {json}");
            } else {
                // v11 and later read it from the content only (other servers too).
                assert_eq!(json["content"]["redacts"], target, "v{version}: {json}");
                assert_eq!(json["content"]["reason"], "oops");
            }
            // Parsed back (as another server does), the redaction still names its target.
            let again = Pdu::from_json(redaction.json(), redaction.event_id.clone(), &rules).unwrap();
            assert_eq!(again.redacts.as_ref(), Some(&create.event_id), "v{version}");
        }
    }

    #[test]
    fn later_events_reference_earlier_ones_in_the_version_format() {
        let key = key();
        for version in ["1", "11"] {
            let (_, rules) = room_version(version).unwrap();
            let create = create(version, &key);
            let join = PduTemplate {
                room_id: Some(create.room_id.clone()),
                sender: UserId::parse("@alice:example.org").unwrap(),
                kind: "m.room.member".to_owned(),
                state_key: Some("@alice:example.org".to_owned()),
                content: serde_json::json!({"membership": "join"}),
                redacts: None,
            }
            .build(&PduContext {
                rules: &rules,
                prev_events: &[&create],
                auth_events: &[&create],
                depth: 2,
                origin_server_ts: 1_700_000_000_001,
                origin: "example.org",
                key: &key,
                local_id: "join",
            })
            .unwrap();
            assert_eq!(join.prev_events, vec![create.event_id.clone()]);
            let state = |kind: &ruma::events::StateEventType, state_key: &str| {
                (kind.to_string() == "m.room.create" && state_key.is_empty()).then(|| create.clone())
            };
            let fetch = |id: &ruma::EventId| (id == create.event_id).then(|| create.clone());
            crate::auth::check_auth(&rules, &join, fetch, state).unwrap();
            // A message from someone who never joined is refused.
            let stranger = PduTemplate {
                room_id: Some(create.room_id.clone()),
                sender: UserId::parse("@mallory:example.org").unwrap(),
                kind: "m.room.message".to_owned(),
                state_key: None,
                content: serde_json::json!({"body": "hi", "msgtype": "m.text"}),
                redacts: None,
            }
            .build(&PduContext {
                rules: &rules,
                prev_events: &[&join],
                auth_events: &[&create],
                depth: 3,
                origin_server_ts: 1_700_000_000_002,
                origin: "example.org",
                key: &key,
                local_id: "msg",
            })
            .unwrap();
            let state = |kind: &ruma::events::StateEventType, state_key: &str| match (
                kind.to_string().as_str(),
                state_key,
            ) {
                ("m.room.create", "") => Some(create.clone()),
                ("m.room.member", "@alice:example.org") => Some(join.clone()),
                _ => None,
            };
            let fetch = |id: &ruma::EventId| (id == create.event_id).then(|| create.clone());
            assert!(crate::auth::check_auth(&rules, &stranger, fetch, state).is_err());
        }
    }
}
