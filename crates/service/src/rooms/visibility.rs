//! History visibility (`world_readable`, `shared`, `invited`, `joined`) applied to events a
//! user asks to read, using the room state at each event; an erased user's events pruned for
//! those who were not joined when they were sent.

use std::collections::HashMap;
use std::sync::Arc;

use ruma::{EventId, OwnedUserId, RoomId, UserId};
use serde_json::Value;

use super::RoomEvent;
use crate::{Result, Services};

/// How permissive each visibility is (more is more visible).
fn rank(visibility: &str) -> u8 {
    match visibility {
        "world_readable" => 3,
        "shared" => 2,
        "invited" => 1,
        _ => 0,
    }
}

/// A content field of a state event, read from a state group.
#[derive(Clone)]
pub(crate) enum StateField {
    /// The group has no such event, or its content has no such string field.
    Unset,
    Set(String),
    /// The stored event does not parse (a corrupt row): never cached, and read by the caller
    /// as the answer that shows the least.
    Unreadable,
}

impl StateField {
    fn from_cached(value: Option<String>) -> StateField {
        value.map_or(StateField::Unset, StateField::Set)
    }
}

impl Services {
    /// The `content` field of a state key in a state group (cached per call by the caller).
    /// `room_id`: the group's room, when the caller knows it: a group that is the room's
    /// current state is read from its head rather than worked out from the stored groups.
    pub(crate) async fn state_field_at(
        &self,
        room_id: Option<&RoomId>,
        group: Option<i64>,
        kind: &str,
        state_key: &str,
        field: &str,
    ) -> Result<StateField> {
        let Some(group) = group else { return Ok(StateField::Unset) };
        let key = (group, kind.to_owned(), state_key.to_owned(), field.to_owned());
        if let Some(value) = self.cached_state_field(&key) {
            return Ok(StateField::from_cached(value));
        }
        let head = room_id.and_then(|room_id| self.rooms.published_head(room_id));
        let event_id = match head.filter(|head| head.state_group == Some(group)) {
            Some(head) => {
                let event_id = head.state_event_id(kind, state_key);
                // A local user's membership event in the current state is the one their cached
                // memberships hold, with its membership.
                if let Some(event_id) = event_id
                    && (kind, field) == ("m.room.member", "membership")
                    && let Some(membership) = self.cached_membership_event(state_key, &head.room_id, event_id)
                {
                    self.cache_state_field(key, Some(membership.clone()));
                    return Ok(StateField::Set(membership));
                }
                event_id.map(|id| id.to_string())
            }
            None => self.store.state_of_group_for_type(group, kind, Some(state_key)).await?.remove(state_key),
        };
        let value = match event_id {
            None => None,
            Some(event_id) => {
                let content = match EventId::parse(&event_id).ok().and_then(|id| self.rooms.cached_event(&id))
                {
                    Some(pdu) => Ok(pdu.content_value()),
                    None => match self.store.get_event(&event_id).await? {
                        // Not stored (yet): don't remember the answer.
                        None => return Ok(StateField::Unset),
                        Some(stored) => serde_json::from_str::<Value>(&stored.json)
                            .map(|mut json| json.get_mut("content").map(Value::take).unwrap_or_default()),
                    },
                };
                match content {
                    Ok(content) => content.get(field).and_then(Value::as_str).map(str::to_owned),
                    Err(error) => {
                        tracing::error!(%event_id, %error, "stored event JSON does not parse");
                        return Ok(StateField::Unreadable);
                    }
                }
            }
        };
        self.cache_state_field(key, value.clone());
        Ok(StateField::from_cached(value))
    }

    /// The membership of `event_id`, when it is the membership event of `user` in `room_id`
    /// that the user's cached memberships (`rooms::user_rooms`, by room ID) hold; nothing is
    /// read.
    fn cached_membership_event(&self, user: &str, room_id: &RoomId, event_id: &EventId) -> Option<String> {
        let user = UserId::parse(user).ok()?;
        let memberships = self.rooms.user_rooms.get(&user).ok()?;
        let at = memberships.binary_search_by(|m| m.room_id.as_str().cmp(room_id.as_str())).ok()?;
        let membership = &memberships[at];
        (membership.event_id == event_id.as_str()).then(|| membership.membership.clone())
    }

    /// The events `user_id` may see, in the given order.
    pub async fn filter_visible(&self, user_id: &UserId, events: Vec<RoomEvent>) -> Result<Vec<RoomEvent>> {
        // Events may come from several rooms (search, notifications): membership is per room.
        let mut joined_now: HashMap<ruma::OwnedRoomId, bool> = HashMap::new();
        let mut visibility_at: HashMap<Option<i64>, StateField> = HashMap::new();
        let mut membership_at: HashMap<Option<i64>, StateField> = HashMap::new();
        let mut erased: HashMap<OwnedUserId, bool> = HashMap::new();
        let mut rules_of: HashMap<ruma::OwnedRoomId, ruma::room_version_rules::RoomVersionRules> =
            HashMap::new();
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let own_member_event = event.pdu.kind.to_string() == "m.room.member"
                && event.pdu.state_key.as_deref() == Some(user_id.as_str());
            let membership = if own_member_event {
                event.pdu.content_value().get("membership").and_then(Value::as_str).map(str::to_owned)
            } else {
                let field = self
                    .field_before(&mut membership_at, &event, "m.room.member", user_id.as_str(), "membership")
                    .await?;
                match field {
                    StateField::Set(value) => Some(value),
                    // Unreadable: no membership, which shows the least.
                    StateField::Unset | StateField::Unreadable => None,
                }
            };
            // A member sees what is sent while they are joined, whatever the history visibility
            // (which is only read for the others), and users always see their own membership
            // changes (or a kicked user would never see the room go).
            if own_member_event || membership.as_deref() == Some("join") {
                out.push(event);
                continue;
            }
            let field = self
                .field_before(
                    &mut visibility_at,
                    &event,
                    "m.room.history_visibility",
                    "",
                    "history_visibility",
                )
                .await?;
            let mut visibility = match field {
                StateField::Set(value) => value,
                // The spec's default.
                StateField::Unset => "shared".to_owned(),
                // Unreadable: the most restrictive visibility (members only).
                StateField::Unreadable => "joined".to_owned(),
            };
            if event.pdu.kind.to_string() == "m.room.history_visibility" {
                // A change of visibility is seen by whoever could see either side of it.
                if let Some(after) =
                    event.pdu.content_value().get("history_visibility").and_then(Value::as_str)
                    && rank(after) > rank(&visibility)
                {
                    visibility = after.to_owned();
                }
            }
            let visible = match (visibility.as_str(), membership.as_deref()) {
                ("world_readable", _) => true,
                ("invited", Some("invite")) => true,
                ("shared", _) => match joined_now.get(&event.pdu.room_id) {
                    Some(joined) => *joined,
                    None => {
                        let joined = self
                            .store
                            .membership(event.pdu.room_id.as_str(), user_id.as_str())
                            .await?
                            .as_deref()
                            == Some("join");
                        joined_now.insert(event.pdu.room_id.clone(), joined);
                        joined
                    }
                },
                _ => false,
            };
            if !visible {
                continue;
            }
            // As Synapse: an erased user's events reach those who were not joined when they
            // were sent only with their content pruned.
            if self.sender_erased(&event.pdu.sender, &mut erased).await? {
                let rules = match rules_of.get(&event.pdu.room_id) {
                    Some(rules) => rules.clone(),
                    None => {
                        let Some(head) = self.room_head_snapshot(&event.pdu.room_id).await? else { continue };
                        rules_of.insert(event.pdu.room_id.clone(), head.rules.clone());
                        head.rules
                    }
                };
                let pruned = event.pdu.redacted(&rules).map_err(crate::Error::internal)?;
                out.push(RoomEvent { pdu: Arc::new(pruned), ..event });
                continue;
            }
            out.push(event);
        }
        Ok(out)
    }

    /// A state field in the state before an event, remembered per state group in `memo`.
    async fn field_before(
        &self,
        memo: &mut HashMap<Option<i64>, StateField>,
        event: &RoomEvent,
        kind: &str,
        state_key: &str,
        field: &str,
    ) -> Result<StateField> {
        if let Some(known) = memo.get(&event.state_before) {
            return Ok(known.clone());
        }
        let value =
            self.state_field_at(Some(&event.pdu.room_id), event.state_before, kind, state_key, field).await?;
        memo.insert(event.state_before, value.clone());
        Ok(value)
    }

    /// Whether a local sender's account was deactivated with `erase` (remembered per call).
    async fn sender_erased(&self, sender: &UserId, erased: &mut HashMap<OwnedUserId, bool>) -> Result<bool> {
        if sender.server_name().as_str() != self.server_name() {
            return Ok(false);
        }
        if let Some(known) = erased.get(sender) {
            return Ok(*known);
        }
        let is_erased = self.store.get_user(sender.as_str()).await?.is_some_and(|user| user.erased);
        erased.insert(sender.to_owned(), is_erased);
        Ok(is_erased)
    }

    /// Whether the room's current history visibility is `world_readable`.
    pub async fn world_readable(&self, head: &super::RoomHead) -> Result<bool> {
        Ok(self.current_state_pdu(head, "m.room.history_visibility", "").await?.is_some_and(|p| {
            p.content_value().get("history_visibility").and_then(Value::as_str) == Some("world_readable")
        }))
    }
}
