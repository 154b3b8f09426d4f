//! Event filters (the spec's `Filter` / `RoomEventFilter`), parsed leniently from JSON and
//! applied in SQL where possible.
//!
//! Every list of a filter (`types`, `not_types`, `senders`, `not_senders`, `rooms`,
//! `not_rooms`) holds at most [`MAX_FILTER_LIST`] entries: a longer one is refused with
//! `M_INVALID_PARAM` when a filter is uploaded and when one is given inline (`/sync`,
//! `/messages`, `/context`, `/search`). Synapse sets no such limit; the lists become SQL
//! parameters, and a query may only have so many.

use myelin_core::MatrixError;
use myelin_store::EventFilterSql;
use serde::Deserialize;
use serde_json::Value;

/// The most entries a list of a filter may have.
pub const MAX_FILTER_LIST: usize = 1_000;

/// Refuses a list of a filter longer than [`MAX_FILTER_LIST`].
fn check_list(name: &str, list: Option<&[String]>) -> Result<(), MatrixError> {
    match list {
        Some(list) if list.len() > MAX_FILTER_LIST => Err(MatrixError::invalid_param(format!(
            "Filter field {name} has {} entries (at most {MAX_FILTER_LIST})",
            list.len()
        ))),
        _ => Ok(()),
    }
}

/// A `RoomEventFilter`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RoomEventFilter {
    pub limit: Option<u64>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub contains_url: Option<bool>,
    pub lazy_load_members: bool,
    pub include_redundant_members: bool,
    pub unread_thread_notifications: bool,
}

/// Filters given inline (a query parameter) reach the store too: no NUL characters in them,
/// as in request bodies.
fn refuse_nul(value: &Value) -> Result<(), MatrixError> {
    fn has_nul(value: &Value) -> bool {
        match value {
            Value::String(text) => text.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(key, item)| key.contains('\0') || has_nul(item)),
            _ => false,
        }
    }
    if has_nul(value) {
        return Err(MatrixError::bad_json("Invalid filter: NUL characters are not allowed"));
    }
    Ok(())
}

impl RoomEventFilter {
    /// Parses a filter given as a JSON string (the `filter` query parameter).
    pub fn parse_json(text: &str) -> Result<RoomEventFilter, MatrixError> {
        let value: Value =
            serde_json::from_str(text).map_err(|_| MatrixError::not_json("filter is not JSON"))?;
        refuse_nul(&value)?;
        let filter: RoomEventFilter = serde_json::from_value(value)
            .map_err(|e| MatrixError::bad_json(format!("Invalid filter: {e}")))?;
        filter.check()?;
        Ok(filter)
    }

    /// Refuses lists longer than [`MAX_FILTER_LIST`].
    pub fn check(&self) -> Result<(), MatrixError> {
        check_list("types", self.types.as_deref())?;
        check_list("not_types", Some(&self.not_types))?;
        check_list("senders", self.senders.as_deref())?;
        check_list("not_senders", Some(&self.not_senders))?;
        check_list("rooms", self.rooms.as_deref())?;
        check_list("not_rooms", Some(&self.not_rooms))
    }

    /// The conditions the store applies.
    pub fn to_sql(&self) -> EventFilterSql {
        EventFilterSql {
            types: self.types.clone(),
            not_types: self.not_types.clone(),
            senders: self.senders.clone(),
            not_senders: self.not_senders.clone(),
            contains_url: self.contains_url,
        }
    }

    /// Whether a room passes `rooms` / `not_rooms`.
    pub fn allows_room(&self, room_id: &str) -> bool {
        !self.not_rooms.iter().any(|r| r == room_id)
            && self.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
    }

    /// Whether an event type passes `types` / `not_types` (patterns may end in `*`).
    pub fn allows_type(&self, kind: &str) -> bool {
        let matches = |pattern: &String| match pattern.strip_suffix('*') {
            Some(prefix) => kind.starts_with(prefix),
            None => pattern == kind,
        };
        !self.not_types.iter().any(matches)
            && self.types.as_ref().is_none_or(|types| types.iter().any(matches))
    }

    /// Whether a sender passes `senders` / `not_senders`.
    pub fn allows_sender(&self, sender: &str) -> bool {
        !self.not_senders.iter().any(|s| s == sender)
            && self.senders.as_ref().is_none_or(|senders| senders.iter().any(|s| s == sender))
    }
}

/// An `EventFilter` (presence, account data).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EventFilter {
    pub limit: Option<u64>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
}

impl EventFilter {
    /// Refuses lists longer than [`MAX_FILTER_LIST`].
    pub fn check(&self) -> Result<(), MatrixError> {
        check_list("types", self.types.as_deref())?;
        check_list("not_types", Some(&self.not_types))?;
        check_list("senders", self.senders.as_deref())?;
        check_list("not_senders", Some(&self.not_senders))
    }

    pub fn allows(&self, kind: &str, sender: Option<&str>) -> bool {
        let as_room = RoomEventFilter {
            types: self.types.clone(),
            not_types: self.not_types.clone(),
            senders: self.senders.clone(),
            not_senders: self.not_senders.clone(),
            ..RoomEventFilter::default()
        };
        as_room.allows_type(kind) && sender.is_none_or(|s| as_room.allows_sender(s))
    }
}

/// The `room` part of a filter.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RoomFilter {
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub include_leave: bool,
    pub ephemeral: RoomEventFilter,
    pub state: RoomEventFilter,
    pub timeline: RoomEventFilter,
    pub account_data: RoomEventFilter,
}

impl RoomFilter {
    /// Refuses lists longer than [`MAX_FILTER_LIST`], here and in the event filters.
    pub fn check(&self) -> Result<(), MatrixError> {
        check_list("rooms", self.rooms.as_deref())?;
        check_list("not_rooms", Some(&self.not_rooms))?;
        for filter in [&self.ephemeral, &self.state, &self.timeline, &self.account_data] {
            filter.check()?;
        }
        Ok(())
    }

    pub fn allows_room(&self, room_id: &str) -> bool {
        !self.not_rooms.iter().any(|r| r == room_id)
            && self.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
    }
}

/// A whole filter (`POST /user/{userId}/filter`, `/sync?filter=`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct FilterDefinition {
    pub event_fields: Option<Vec<String>>,
    pub event_format: Option<String>,
    pub presence: EventFilter,
    pub account_data: EventFilter,
    pub room: RoomFilter,
}

impl FilterDefinition {
    /// Parses and checks a filter.
    pub fn from_value(value: Value) -> Result<FilterDefinition, MatrixError> {
        if !value.is_object() {
            return Err(MatrixError::bad_json("A filter must be a JSON object"));
        }
        refuse_nul(&value)?;
        let filter: FilterDefinition = serde_json::from_value(value)
            .map_err(|e| MatrixError::bad_json(format!("Invalid filter: {e}")))?;
        if let Some(format) = &filter.event_format
            && format != "client"
            && format != "federation"
        {
            return Err(MatrixError::bad_json("event_format must be client or federation"));
        }
        filter.presence.check()?;
        filter.account_data.check()?;
        filter.room.check()?;
        if let Some(fields) = &filter.event_fields {
            check_list("event_fields", Some(fields))?;
        }
        for limit in [filter.room.timeline.limit, filter.presence.limit, filter.account_data.limit]
            .into_iter()
            .flatten()
        {
            if limit == 0 {
                return Err(MatrixError::bad_json("limit must be positive"));
            }
        }
        Ok(filter)
    }
}

impl crate::Services {
    /// `POST /user/{userId}/filter`.
    pub async fn create_filter(
        &self,
        requester: &crate::auth::Requester,
        user_id: &ruma::UserId,
        filter: Value,
    ) -> crate::Result<String> {
        if requester.user_id != user_id {
            return Err(MatrixError::forbidden("Cannot create filters for other users").into());
        }
        FilterDefinition::from_value(filter.clone())?;
        Ok(self.store.create_filter(user_id.as_str(), &filter.to_string()).await?.to_string())
    }

    /// `GET /user/{userId}/filter/{filterId}`: the filter as stored.
    pub async fn get_filter(
        &self,
        requester: &crate::auth::Requester,
        user_id: &ruma::UserId,
        filter_id: &str,
    ) -> crate::Result<String> {
        if requester.user_id != user_id {
            return Err(MatrixError::forbidden("Cannot get filters for other users").into());
        }
        let not_found = || crate::Error::from(MatrixError::not_found("No such filter"));
        let id: i64 = filter_id.parse().map_err(|_| not_found())?;
        self.store.get_filter(user_id.as_str(), id).await?.ok_or_else(not_found)
    }
}
