//! A room's power levels as the authorization rules read them: ruma's [`RoomPowerLevels`],
//! built from the current `m.room.power_levels` content (the spec's defaults without one:
//! `users_default` and `events_default` 0, `state_default`, `ban`, `kick` and `redact` 50,
//! `invite` 0) and the room's creators as its version defines them (v1-v10: the create
//! event's `creator`, at 100 while there are no power levels; v11: the create event's sender;
//! v12: the sender and `additional_creators`, with infinite power).

use myelin_core::pdu::Pdu;
use ruma::events::StateEventType;
use ruma::events::room::power_levels::{
    RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource, UserPowerLevel,
};
use ruma::power_levels::NotificationPowerLevelsKey;
use ruma::room_version_rules::RoomVersionRules;
use ruma::state_res::Event as _;
use ruma::state_res::events::RoomCreateEvent;
use ruma::{OwnedUserId, UserId};

use super::RoomHead;
use crate::{Error, Result, Services};

impl Services {
    /// The room's power levels (with the spec's defaults, and v12 creators).
    pub async fn power_levels(&self, head: &RoomHead) -> Result<PowerLevels> {
        let create = self.current_state_pdu(head, "m.room.create", "").await?;
        let levels = self.current_state_pdu(head, "m.room.power_levels", "").await?;
        PowerLevels::new(&head.rules, create.as_deref(), levels.as_deref())
    }
}

/// The room's creators as its version defines them (see the module's doc).
pub(crate) fn room_creators(rules: &RoomVersionRules, create: &Pdu) -> Result<Vec<OwnedUserId>> {
    Ok(RoomCreateEvent::new(create)
        .creators(&rules.authorization)
        .map_err(|error| Error::internal(format!("unreadable create event: {error}")))?
        .into_iter()
        .collect())
}

/// Power levels as the authorization rules read them.
#[derive(Clone, Debug)]
pub struct PowerLevels {
    levels: RoomPowerLevels,
}

impl PowerLevels {
    /// The levels a room's create and power levels events give. A stored create or power
    /// levels event whose content does not parse is an internal error, never a guess: both
    /// passed the authorization rules, which read them the same way, so the row is corrupt,
    /// and defaults could grant power nobody was given.
    pub fn new(rules: &RoomVersionRules, create: Option<&Pdu>, levels: Option<&Pdu>) -> Result<PowerLevels> {
        let creators = match create {
            Some(create) => room_creators(rules, create)?,
            None => Vec::new(),
        };
        let source = match levels {
            Some(levels) => RoomPowerLevelsSource::Original(
                serde_json::from_str::<RoomPowerLevelsEventContent>(levels.content().get())
                    .map_err(|error| Error::internal(format!("unreadable power levels: {error}")))?,
            ),
            None => RoomPowerLevelsSource::None,
        };
        Ok(PowerLevels { levels: RoomPowerLevels::new(source, &rules.authorization, creators) })
    }

    /// A user's level; `i64::MAX` for v12 creators.
    pub fn user_level(&self, user_id: &UserId) -> i64 {
        match self.levels.for_user(user_id) {
            UserPowerLevel::Int(level) => level.into(),
            // `Infinite`: a v12 creator.
            _ => i64::MAX,
        }
    }

    /// Whether a user may invite others.
    pub fn can_invite(&self, user_id: &UserId) -> bool {
        self.levels.user_can_invite(user_id)
    }

    /// Whether a user may redact others' events (the `redact` level; sending the redaction
    /// itself is checked by the authorization rules).
    pub fn can_redact_others(&self, user_id: &UserId) -> bool {
        self.levels.user_can_redact_event_of_other(user_id)
    }

    /// The level needed to send an event of this type.
    pub fn event_level(&self, kind: &str, is_state: bool) -> i64 {
        let level = if is_state {
            self.levels.for_state(StateEventType::from(kind))
        } else {
            self.levels.for_message(kind.into())
        };
        level.into()
    }

    /// The level for `notifications.<key>` (e.g. `room`; 50 for keys the spec does not know).
    pub fn notification_level(&self, key: &str) -> i64 {
        self.levels
            .notifications
            .get(&NotificationPowerLevelsKey::from(key))
            .map_or(50, |level| (*level).into())
    }
}

#[cfg(test)]
mod tests {
    use ruma::{EventId, UserId};
    use serde_json::{Value, json};

    use super::*;

    fn pdu(version: &str, kind: &str, sender: &str, content: Value) -> Pdu {
        let (_, rules) = myelin_core::room_version::room_version(version).unwrap();
        let json = json!({
            "room_id": "!r:x", "type": kind, "state_key": "", "sender": sender, "content": content,
            "origin_server_ts": 1, "depth": 1, "prev_events": [], "auth_events": [],
        });
        let json = serde_json::from_value(json).unwrap();
        Pdu::from_json(json, EventId::parse("$e:x").unwrap(), &rules).unwrap()
    }

    fn check(version: &str, create: Value, levels: Option<Value>) -> PowerLevels {
        let (_, rules) = myelin_core::room_version::room_version(version).unwrap();
        let create = pdu(version, "m.room.create", "@creator:x", create);
        let levels = levels.map(|content| pdu(version, "m.room.power_levels", "@creator:x", content));
        PowerLevels::new(&rules, Some(&create), levels.as_ref()).unwrap()
    }

    fn user(id: &str) -> &UserId {
        <&UserId>::try_from(id).unwrap()
    }

    #[test]
    fn without_power_levels_the_spec_defaults_apply_and_the_creator_has_100() {
        for version in ["1", "10"] {
            let levels = check(version, json!({"creator": "@creator:x"}), None);
            assert_eq!(levels.user_level(user("@creator:x")), 100, "v{version}");
            assert_eq!(levels.user_level(user("@other:x")), 0);
            assert_eq!(
                (levels.event_level("m.room.name", true), levels.event_level("m.text", false)),
                (50, 0)
            );
            assert!(levels.can_invite(user("@other:x")));
            assert!(!levels.can_redact_others(user("@other:x")));
            assert!(levels.can_redact_others(user("@creator:x")));
            assert_eq!(levels.notification_level("room"), 50);
        }
        // v11: the creator is the create event's sender.
        let levels = check("11", json!({}), None);
        assert_eq!(levels.user_level(user("@creator:x")), 100);
    }

    #[test]
    fn levels_read_defaults_string_values_and_events() {
        let content = json!({
            "users": {"@mod:x": "60"}, "users_default": 5, "events_default": 10, "state_default": 70,
            "events": {"m.room.topic": 20, "m.reaction": 30}, "invite": 50, "redact": 60,
            "notifications": {"room": 40},
        });
        let levels = check("9", json!({"creator": "@creator:x"}), Some(content));
        assert_eq!(levels.user_level(user("@mod:x")), 60);
        assert_eq!(levels.user_level(user("@creator:x")), 5, "the creator is only 100 without power levels");
        assert_eq!(levels.event_level("m.room.name", true), 70);
        assert_eq!(levels.event_level("m.room.topic", true), 20);
        assert_eq!(levels.event_level("m.reaction", false), 30);
        assert_eq!(levels.event_level("m.room.message", false), 10);
        assert!(levels.can_invite(user("@mod:x")) && !levels.can_invite(user("@other:x")));
        assert!(levels.can_redact_others(user("@mod:x")));
        assert_eq!(levels.notification_level("room"), 40);
    }

    #[test]
    fn v12_creators_have_infinite_power_whatever_the_levels_say() {
        let create = json!({"additional_creators": ["@extra:x"]});
        let levels = check("12", create, Some(json!({"users": {"@mod:x": 100}, "users_default": 0})));
        assert_eq!(levels.user_level(user("@creator:x")), i64::MAX);
        assert_eq!(levels.user_level(user("@extra:x")), i64::MAX);
        assert_eq!(levels.user_level(user("@mod:x")), 100);
        // Without power levels, too (and nobody else gets 100).
        let levels = check("12", json!({}), None);
        assert_eq!(levels.user_level(user("@creator:x")), i64::MAX);
        assert_eq!(levels.user_level(user("@other:x")), 0);
        // Before v12, additional creators mean nothing.
        let levels = check("11", json!({"additional_creators": ["@extra:x"]}), None);
        assert_eq!(levels.user_level(user("@extra:x")), 0);
    }

    #[test]
    fn unreadable_power_levels_are_an_error_not_defaults() {
        let (_, rules) = myelin_core::room_version::room_version("10").unwrap();
        let create = pdu("10", "m.room.create", "@creator:x", json!({"creator": "@creator:x"}));
        let levels = pdu("10", "m.room.power_levels", "@creator:x", json!({"users": {"@a:x": "lots"}}));
        assert!(PowerLevels::new(&rules, Some(&create), Some(&levels)).is_err());
        let no_creator = pdu("10", "m.room.create", "@creator:x", json!({}));
        assert!(PowerLevels::new(&rules, Some(&no_creator), None).is_err());
    }
}
