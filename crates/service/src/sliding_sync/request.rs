//! The request body (MSC4186), parsed strictly and bounded: a shape error is `M_BAD_JSON`
//! (as Synapse's validation), a value out of bounds `M_INVALID_PARAM`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use myelin_core::MatrixError;
use ruma::{OwnedRoomId, RoomId};
use serde::Deserialize;
use serde_json::Value;

use crate::{Error, Result};

/// At most this many lists (Synapse's bound).
pub const MAX_LISTS: usize = 100;
/// A list name is at most this many bytes (Synapse's bound).
pub const MAX_LIST_NAME: usize = 64;
/// At most this many ranges per list.
pub const MAX_RANGES: usize = 100;
/// At most this many room subscriptions.
pub const MAX_SUBSCRIPTIONS: usize = 1000;
/// At most this many `required_state` entries per list or subscription.
pub const MAX_REQUIRED_STATE: usize = 1000;
/// The largest `timeline_limit` accepted (Synapse's bound) ...
pub const MAX_TIMELINE_LIMIT_ACCEPTED: i64 = 1000;
/// ... and the most events a room's timeline carries (as other servers clamp).
pub const TIMELINE_LIMIT_CAP: i64 = 100;
/// The longest `conn_id`.
pub const MAX_CONN_ID: usize = 255;
/// At most this many entries in a filter's lists (`spaces`, `room_types`, ...) and in an
/// extension's `lists` / `rooms`.
pub const MAX_FILTER_ENTRIES: usize = 1000;
/// The most to-device messages one response carries.
pub const MAX_TO_DEVICE_LIMIT: i64 = 1000;

/// Which state a room's `required_state` asks for: `(type, state key)` pairs, where `*` is a
/// wildcard for either, `$LAZY` (members only) the senders of the timeline and `$ME` the user.
pub type RequiredState = BTreeSet<(String, String)>;

/// What a list or a subscription asks of each of its rooms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomParams {
    /// Shared by the rooms sent with it (see `connection::SentRoom`).
    pub required_state: Arc<RequiredState>,
    /// Already clamped to [`TIMELINE_LIMIT_CAP`].
    pub timeline_limit: i64,
}

impl RoomParams {
    /// The union of two rooms' parameters (a room in several lists or subscriptions).
    pub fn merge(&mut self, other: &RoomParams) {
        if !Arc::ptr_eq(&self.required_state, &other.required_state) {
            Arc::make_mut(&mut self.required_state).extend(other.required_state.iter().cloned());
        }
        self.timeline_limit = self.timeline_limit.max(other.timeline_limit);
    }
}

/// A list's filters, all ANDed; an absent one does not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ListFilters {
    pub is_dm: Option<bool>,
    pub spaces: Option<Vec<String>>,
    pub is_encrypted: Option<bool>,
    pub is_invite: Option<bool>,
    /// `None` inside: rooms without a type.
    pub room_types: Option<Vec<Option<String>>>,
    pub not_room_types: Option<Vec<Option<String>>>,
}

/// One list.
#[derive(Clone, Debug)]
pub struct ListConfig {
    /// Inclusive, `start <= end`; `None`: every room.
    pub ranges: Option<Vec<(u64, u64)>>,
    pub params: RoomParams,
    pub filters: ListFilters,
}

/// An extension's scope: list names and room IDs (`*`: all of them).
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub lists: Vec<String>,
    pub rooms: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ToDeviceConfig {
    pub enabled: bool,
    pub limit: i64,
    pub since: Option<i64>,
}

/// The extensions asked for; `None`: not enabled.
#[derive(Clone, Debug, Default)]
pub struct ExtensionsConfig {
    pub to_device: Option<ToDeviceConfig>,
    pub e2ee: bool,
    pub account_data: Option<Scope>,
    pub receipts: Option<Scope>,
    pub typing: Option<Scope>,
}

/// A parsed, bounded request.
#[derive(Clone, Debug, Default)]
pub struct SlidingSyncRequest {
    pub conn_id: String,
    /// The position the client is at (`None`: a fresh start).
    pub pos: Option<i64>,
    pub timeout_ms: u64,
    pub lists: BTreeMap<String, ListConfig>,
    pub room_subscriptions: BTreeMap<OwnedRoomId, RoomParams>,
    pub extensions: ExtensionsConfig,
}

// The wire shapes.

#[derive(Deserialize)]
struct RawBody {
    conn_id: Option<String>,
    lists: Option<BTreeMap<String, RawList>>,
    room_subscriptions: Option<BTreeMap<String, RawRoomParams>>,
    extensions: Option<RawExtensions>,
}

#[derive(Deserialize)]
struct RawRoomParams {
    required_state: Vec<(String, String)>,
    timeline_limit: i64,
}

#[derive(Deserialize)]
struct RawList {
    ranges: Option<Vec<(u64, u64)>>,
    required_state: Vec<(String, String)>,
    timeline_limit: i64,
    filters: Option<ListFilters>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawToDevice {
    enabled: Option<bool>,
    limit: Option<i64>,
    since: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawEnabled {
    enabled: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawScoped {
    enabled: Option<bool>,
    lists: Option<Vec<String>>,
    rooms: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawExtensions {
    to_device: Option<RawToDevice>,
    e2ee: Option<RawEnabled>,
    account_data: Option<RawScoped>,
    receipts: Option<RawScoped>,
    typing: Option<RawScoped>,
}

fn invalid(message: impl Into<String>) -> Error {
    MatrixError::invalid_param(message.into()).into()
}

fn room_params(raw_state: Vec<(String, String)>, timeline_limit: i64, what: &str) -> Result<RoomParams> {
    if raw_state.len() > MAX_REQUIRED_STATE {
        return Err(invalid(format!("{what}: at most {MAX_REQUIRED_STATE} required_state entries")));
    }
    if !(0..=MAX_TIMELINE_LIMIT_ACCEPTED).contains(&timeline_limit) {
        return Err(invalid(format!(
            "{what}: timeline_limit must be between 0 and {MAX_TIMELINE_LIMIT_ACCEPTED}"
        )));
    }
    Ok(RoomParams {
        required_state: Arc::new(raw_state.into_iter().collect()),
        timeline_limit: timeline_limit.min(TIMELINE_LIMIT_CAP),
    })
}

fn bounded<T>(entries: Option<Vec<T>>, what: &str) -> Result<Option<Vec<T>>> {
    match entries {
        Some(entries) if entries.len() > MAX_FILTER_ENTRIES => {
            Err(invalid(format!("{what}: at most {MAX_FILTER_ENTRIES} entries")))
        }
        other => Ok(other),
    }
}

fn scope(raw: Option<RawScoped>, what: &str) -> Result<Option<Scope>> {
    let Some(raw) = raw else { return Ok(None) };
    if raw.enabled != Some(true) {
        return Ok(None);
    }
    let all = || vec!["*".to_owned()];
    Ok(Some(Scope {
        lists: bounded(raw.lists, what)?.unwrap_or_else(all),
        rooms: bounded(raw.rooms, what)?.unwrap_or_else(all),
    }))
}

impl SlidingSyncRequest {
    /// Parses the body and the query's `pos` and `timeout`.
    pub fn parse(body: Value, pos: Option<&str>, timeout_ms: Option<u64>) -> Result<SlidingSyncRequest> {
        let raw: RawBody = serde_json::from_value(body)
            .map_err(|e| Error::from(MatrixError::bad_json(format!("Invalid sliding sync request: {e}"))))?;
        let conn_id = raw.conn_id.unwrap_or_default();
        if conn_id.len() > MAX_CONN_ID {
            return Err(invalid(format!("conn_id is longer than {MAX_CONN_ID} bytes")));
        }
        let pos = match pos {
            None => None,
            Some(text) => Some(text.parse::<i64>().ok().filter(|p| *p > 0).ok_or_else(|| {
                Error::from(MatrixError::new(myelin_core::ErrCode::UnknownPos, "Unknown position"))
            })?),
        };
        let raw_lists = raw.lists.unwrap_or_default();
        if raw_lists.len() > MAX_LISTS {
            return Err(invalid(format!("at most {MAX_LISTS} lists")));
        }
        let mut lists = BTreeMap::new();
        for (name, list) in raw_lists {
            if name.len() > MAX_LIST_NAME {
                return Err(invalid(format!("list names are at most {MAX_LIST_NAME} bytes")));
            }
            let what = format!("list {name:?}");
            if let Some(ranges) = &list.ranges {
                if ranges.len() > MAX_RANGES {
                    return Err(invalid(format!("{what}: at most {MAX_RANGES} ranges")));
                }
                if let Some((start, end)) = ranges.iter().find(|(start, end)| start > end) {
                    return Err(invalid(format!("{what}: range [{start}, {end}] is reversed")));
                }
            }
            let params = room_params(list.required_state, list.timeline_limit, &what)?;
            let filters = list.filters.unwrap_or_default();
            bounded(filters.spaces.clone(), &what)?;
            bounded(filters.room_types.clone(), &what)?;
            bounded(filters.not_room_types.clone(), &what)?;
            lists.insert(name, ListConfig { ranges: list.ranges, params, filters });
        }
        let raw_subscriptions = raw.room_subscriptions.unwrap_or_default();
        if raw_subscriptions.len() > MAX_SUBSCRIPTIONS {
            return Err(invalid(format!("at most {MAX_SUBSCRIPTIONS} room subscriptions")));
        }
        let mut room_subscriptions = BTreeMap::new();
        for (room_id, params) in raw_subscriptions {
            let parsed = RoomId::parse(&room_id)
                .map_err(|_| invalid(format!("room_subscriptions: {room_id:?} is not a room ID")))?;
            let what = format!("subscription {room_id}");
            room_subscriptions
                .insert(parsed, room_params(params.required_state, params.timeline_limit, &what)?);
        }
        let raw_extensions = raw.extensions.unwrap_or_default();
        let to_device = match raw_extensions.to_device {
            Some(raw) if raw.enabled == Some(true) => {
                let limit = raw.limit.unwrap_or(100);
                if !(1..=MAX_TO_DEVICE_LIMIT).contains(&limit) {
                    return Err(invalid(format!(
                        "to_device.limit must be between 1 and {MAX_TO_DEVICE_LIMIT}"
                    )));
                }
                let since = match raw.since {
                    None => None,
                    Some(text) => Some(text.parse::<i64>().ok().filter(|s| *s >= 0).ok_or_else(|| {
                        invalid("'extensions.to_device.since' is invalid (should look like an int)")
                    })?),
                };
                Some(ToDeviceConfig { enabled: true, limit, since })
            }
            _ => None,
        };
        let extensions = ExtensionsConfig {
            to_device,
            e2ee: raw_extensions.e2ee.and_then(|e| e.enabled) == Some(true),
            account_data: scope(raw_extensions.account_data, "account_data")?,
            receipts: scope(raw_extensions.receipts, "receipts")?,
            typing: scope(raw_extensions.typing, "typing")?,
        };
        Ok(SlidingSyncRequest {
            conn_id,
            pos,
            timeout_ms: timeout_ms.unwrap_or(0),
            lists,
            room_subscriptions,
            extensions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use myelin_core::ErrCode;
    use serde_json::json;

    fn errcode(body: Value) -> ErrCode {
        match SlidingSyncRequest::parse(body, None, None) {
            Err(Error::Matrix(e)) => e.code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn bounds_and_shapes_are_checked() {
        let list = |extra: Value| {
            let mut l = json!({"ranges": [[0, 10]], "required_state": [], "timeline_limit": 1});
            l.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            json!({"lists": {"a": l}})
        };
        assert_eq!(errcode(list(json!({"ranges": [[5, 1]]}))), ErrCode::InvalidParam);
        assert_eq!(errcode(list(json!({"ranges": [[-1, 1]]}))), ErrCode::BadJson);
        assert_eq!(errcode(list(json!({"timeline_limit": 1001}))), ErrCode::InvalidParam);
        assert_eq!(errcode(list(json!({"timeline_limit": "1"}))), ErrCode::BadJson);
        assert_eq!(errcode(json!({"lists": {"a": {"ranges": [[0, 1]]}}})), ErrCode::BadJson);
        let many: Vec<Value> = (0..1001).map(|i| json!(["t", i.to_string()])).collect();
        assert_eq!(errcode(list(json!({"required_state": many}))), ErrCode::InvalidParam);
        let lists: serde_json::Map<String, Value> =
            (0..101).map(|i| (i.to_string(), json!({"required_state": [], "timeline_limit": 1}))).collect();
        assert_eq!(errcode(json!({"lists": lists})), ErrCode::InvalidParam);
        assert_eq!(
            errcode(json!({"room_subscriptions": {"nope": {"required_state": [], "timeline_limit": 1}}})),
            ErrCode::InvalidParam
        );
        assert_eq!(errcode(json!({"lists": [1]})), ErrCode::BadJson);
        let parsed = SlidingSyncRequest::parse(list(json!({"timeline_limit": 1000})), None, None).unwrap();
        assert_eq!(parsed.lists["a"].params.timeline_limit, TIMELINE_LIMIT_CAP);
    }

    #[test]
    fn unknown_extensions_are_ignored_and_scopes_default_to_everything() {
        let body = json!({"extensions": {"nope": {"enabled": true}, "receipts": {"enabled": true},
                          "typing": {"enabled": false}, "e2ee": {"enabled": true}}});
        let parsed = SlidingSyncRequest::parse(body, Some("7"), Some(5)).unwrap();
        assert_eq!(parsed.pos, Some(7));
        assert!(parsed.extensions.e2ee);
        assert!(parsed.extensions.typing.is_none());
        assert_eq!(parsed.extensions.receipts.unwrap().lists, vec!["*"]);
        match SlidingSyncRequest::parse(json!({}), Some("x"), None) {
            Err(Error::Matrix(e)) => assert_eq!(e.code, ErrCode::UnknownPos),
            other => panic!("{other:?}"),
        }
    }
}

/// Properties of request parsing on arbitrary input (`PROPTEST_CASES` cases, 256 by default).
#[cfg(test)]
mod prop_tests {
    use myelin_core::ErrCode;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::util::prop_support::config;

    /// JSON shaped like requests: lists with arbitrary ranges, limits and state pairs.
    fn near_request() -> impl Strategy<Value = Value> {
        let number = prop_oneof![
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            Just(json!("1"))
        ];
        let range = prop::collection::vec(number.clone(), 0..3).prop_map(Value::from);
        let pair = prop::collection::vec("[*$a-zA-Z.]{0,6}", 0..3).prop_map(|p| json!(p));
        let list = (prop::collection::vec(range, 0..4), number, prop::collection::vec(pair, 0..4)).prop_map(
            |(ranges, limit, state)| json!({"ranges": ranges, "timeline_limit": limit, "required_state": state}),
        );
        prop::collection::btree_map("[a-z]{0,70}", list, 0..4).prop_map(|lists| json!({"lists": lists}))
    }

    proptest! {
        #![proptest_config(config())]

        /// Any body parses or is refused with a client error; what parses respects every bound.
        #[test]
        fn prop_sliding_sync_request_parse_is_bounded(body in near_request(), pos in proptest::option::of(".{0,8}")) {
            match SlidingSyncRequest::parse(body.clone(), pos.as_deref(), None) {
                Ok(request) => {
                    prop_assert!(request.lists.len() <= MAX_LISTS);
                    for list in request.lists.values() {
                        prop_assert!((0..=TIMELINE_LIMIT_CAP).contains(&list.params.timeline_limit), "{body}");
                        prop_assert!(list.ranges.iter().flatten().all(|(start, end)| start <= end), "{body}");
                    }
                    prop_assert!(request.pos.is_none_or(|p| p > 0));
                }
                Err(Error::Matrix(error)) => prop_assert!(
                    matches!(error.code, ErrCode::BadJson | ErrCode::InvalidParam | ErrCode::UnknownPos),
                    "{body}: {error:?}"
                ),
                Err(other) => prop_assert!(false, "{body}: {other:?}"),
            }
        }
    }
}
