//! Event filters (the spec's `Filter` / `RoomEventFilter`), parsed leniently from JSON and
//! applied in SQL where possible.

use myelin_core::MatrixError;
use myelin_store::EventFilterSql;
use serde::Deserialize;
use serde_json::Value;

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

impl RoomEventFilter {
    /// Parses a filter given as a JSON string (the `filter` query parameter).
    pub fn parse_json(text: &str) -> Result<RoomEventFilter, MatrixError> {
        let value: Value =
            serde_json::from_str(text).map_err(|_| MatrixError::not_json("filter is not JSON"))?;
        serde_json::from_value(value).map_err(|e| MatrixError::bad_json(format!("Invalid filter: {e}")))
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
