//! Room upgrades: `POST /rooms/{roomId}/upgrade`.
//!
//! What happens, in order (Synapse's `RoomCreationHandler.upgrade_room`):
//!
//! 1. With the old room's lock held: the requester must be joined and able to send
//!    `m.room.tombstone`; a tombstone sent in the last five minutes answers a repeated request
//!    (the same replacement room for its sender, "in progress" for anyone else).
//! 2. The new room, in one transaction: `m.room.create` with `predecessor` (the tombstone's
//!    event ID too, where the room ID does not derive from the create event), the requester's
//!    join, the old power levels (the requester raised, for now, to the level every copied
//!    event needs; v12 creators left out of `users`), the copied state (join rules with their
//!    allow lists, history visibility, guest access, name, topic, avatar, encryption, server
//!    ACL, space children and parents), the local part of the canonical alias, the bans, then
//!    the old power levels as they were.
//! 3. In the old room, in one transaction: the tombstone, the canonical alias without the
//!    aliases that moved, and power levels that stop ordinary members from talking and
//!    inviting (`events_default` and `invite` raised to `max(50, users_default + 1)`).
//! 4. Local aliases and the directory listing move to the new room.

use std::collections::HashMap;

use myelin_core::MatrixError;
use ruma::room_version_rules::RoomIdFormatVersion;
use ruma::{OwnedEventId, OwnedRoomId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::membership::{MemberEvent, MembershipAction, MembershipChange};
use super::{EventDraft, PreparedEvent, RoomHead, check_room_version};
use crate::auth::Requester;
use crate::ratelimit::Limiter;
use crate::util::{now_ms, random_string};
use crate::{Error, Result, Services};

/// State copied as it is (Synapse's list, plus space parents).
const COPIED_STATE: &[&str] = &[
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
];

/// How long a tombstone answers repeated upgrade requests (Synapse's response cache).
const RECENT_UPGRADE_MS: u64 = 5 * 60 * 1000;

/// A level in power levels content (integers, or strings of them in old rooms).
fn level(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Power levels content with every level an integer (room versions 10 and later refuse
/// strings), as Synapse's `copy_and_fixup_power_levels_contents`.
fn fixed_up_levels(content: &Value) -> Map<String, Value> {
    let mut out = content.as_object().cloned().unwrap_or_default();
    for value in out.values_mut() {
        match value {
            Value::String(_) => {
                if let Some(n) = level(Some(value)) {
                    *value = json!(n);
                }
            }
            Value::Object(map) => {
                for inner in map.values_mut() {
                    if let Some(n) = level(Some(inner)).filter(|_| inner.is_string()) {
                        *inner = json!(n);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The level needed to copy every piece of state and the bans.
fn level_needed_to_copy(levels: &Map<String, Value>) -> i64 {
    let events_max = levels
        .get("events")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| level(Some(v)))
        .max();
    level(levels.get("state_default"))
        .unwrap_or(50)
        .max(level(levels.get("ban")).unwrap_or(50))
        .max(events_max.unwrap_or(0))
}

/// Removes users from the `users` map of power levels content.
fn without_users(mut levels: Map<String, Value>, users: &[String]) -> Map<String, Value> {
    if let Some(Value::Object(map)) = levels.get_mut("users") {
        for user in users {
            map.remove(user);
        }
    }
    levels
}

/// The new room's power levels: first with the upgrader raised to the level every copied
/// event needs, then as in the old room. Where creators have unlimited power (v12) neither
/// lists them, and no raise is needed.
fn new_room_levels(
    old: Option<&Value>,
    privileged_creators: bool,
    creators: &[String],
) -> (Map<String, Value>, Map<String, Value>) {
    let upgrader = &creators[0];
    let unlisted: &[String] = if privileged_creators { creators } else { &[] };
    let final_levels = match old {
        Some(content) => without_users(fixed_up_levels(content), unlisted),
        None if privileged_creators => Map::new(),
        None => json!({"users": {upgrader.as_str(): 100}}).as_object().cloned().unwrap_or_default(),
    };
    let mut initial_levels = final_levels.clone();
    if !privileged_creators {
        let needed = level_needed_to_copy(&initial_levels);
        let users_default = level(initial_levels.get("users_default")).unwrap_or(0);
        let users = initial_levels.entry("users").or_insert_with(|| json!({}));
        if !users.is_object() {
            *users = json!({});
        }
        if level(users.get(upgrader.as_str())).unwrap_or(users_default) < needed {
            users[upgrader.as_str()] = json!(needed);
        }
    }
    (initial_levels, final_levels)
}

/// The old room's power levels once upgraded: ordinary members can no longer talk or invite
/// (`events_default` and `invite` at least `max(50, users_default + 1)`); `None` if they
/// already cannot.
fn restricted_levels(content: &Value) -> Option<Map<String, Value>> {
    let mut levels = fixed_up_levels(content);
    let restricted = (level(levels.get("users_default")).unwrap_or(0) + 1).max(50);
    let mut changed = false;
    for key in ["invite", "events_default"] {
        if level(levels.get(key)).unwrap_or(0) < restricted {
            levels.insert(key.to_owned(), json!(restricted));
            changed = true;
        }
    }
    changed.then_some(levels)
}

fn is_local_alias(alias: &str, server_name: &str) -> bool {
    ruma::RoomAliasId::parse(alias).is_ok_and(|a| a.server_name().as_str() == server_name)
}

/// The canonical alias content split into what stays in the old room and what moves (the
/// aliases of this server). `None` for the old room when nothing changes.
fn split_canonical_alias(content: &Value, server_name: &str) -> (Option<Value>, Value) {
    let mut old = content.as_object().cloned().unwrap_or_default();
    let mut new = Map::new();
    let mut changed = false;
    if let Some(alias) = content.get("alias").and_then(Value::as_str)
        && is_local_alias(alias, server_name)
    {
        new.insert("alias".to_owned(), json!(alias));
        old.remove("alias");
        changed = true;
    }
    if let Some(alt) = content.get("alt_aliases").and_then(Value::as_array) {
        let (local, remote): (Vec<&Value>, Vec<&Value>) =
            alt.iter().partition(|a| a.as_str().is_some_and(|a| is_local_alias(a, server_name)));
        if !local.is_empty() {
            new.insert("alt_aliases".to_owned(), json!(local));
            changed = true;
            if remote.is_empty() {
                old.remove("alt_aliases");
            } else {
                old.insert("alt_aliases".to_owned(), json!(remote));
            }
        }
    }
    (changed.then_some(Value::Object(old)), Value::Object(new))
}

impl Services {
    /// `POST /rooms/{roomId}/upgrade`: returns the replacement room.
    pub async fn upgrade_room(
        &self,
        requester: &Requester,
        old_room_id: &RoomId,
        new_version: &str,
        additional_creators: Option<Vec<String>>,
    ) -> Result<OwnedRoomId> {
        let sender = &requester.user_id;
        let (version, rules) = check_room_version(new_version)?;
        // The tombstone and the new room's events are the user's writes, as any other.
        self.admit_client_write(requester, super::admission::ClientWrite::Event).await?;
        let additional_creators: Vec<String> = match additional_creators {
            Some(list) if rules.authorization.additional_room_creators => {
                for user in &list {
                    if UserId::parse(user.as_str()).is_err() || user.len() > 255 {
                        return Err(MatrixError::bad_json("additional_creators must be user IDs").into());
                    }
                }
                let mut list: Vec<String> = list.into_iter().filter(|u| u != sender.as_str()).collect();
                list.sort();
                list.dedup();
                list
            }
            // Ignored by room versions without additional creators.
            _ => Vec::new(),
        };
        self.ratelimit_user(Limiter::RoomCreation, requester).await?;
        // Synapse asks `user_may_create_room` at upgrades without exempting admins.
        self.check_may_create_room(requester, false)?;
        let unknown_room = || Error::from(MatrixError::not_found(format!("Unknown room {old_room_id}")));
        // Checked before taking a lock, so that unknown rooms leave no lock behind.
        let old_record = self.store.get_room(old_room_id.as_str()).await?.ok_or_else(unknown_room)?;

        let mut guard = self.lock_room_for_write(old_room_id).await?;
        let mut old_head = guard.clone().ok_or_else(unknown_room)?;

        if let Some(tombstone) = self.current_state_pdu(&old_head, "m.room.tombstone", "").await?
            && now_ms().saturating_sub(u64::from(tombstone.origin_server_ts.0)) < RECENT_UPGRADE_MS
        {
            let replacement = tombstone.content_value()["replacement_room"].as_str().map(RoomId::parse);
            if tombstone.sender == *sender
                && let Some(Ok(replacement)) = replacement
            {
                return Ok(replacement);
            }
            return Err(MatrixError::unknown("An upgrade for this room is currently in progress").into());
        }

        let old_levels = self.power_levels(&old_head).await?;
        let membership = self
            .current_state_pdu(&old_head, "m.room.member", sender.as_str())
            .await?
            .and_then(|p| p.content_value()["membership"].as_str().map(str::to_owned));
        if membership.as_deref() != Some("join") {
            return Err(MatrixError::forbidden(format!("User {sender} not in room {old_room_id}")).into());
        }
        if old_levels.user_level(sender) < old_levels.event_level("m.room.tombstone", true) {
            return Err(MatrixError::forbidden("You don't have permission to upgrade the room").into());
        }

        // The old room's state, by key: what is copied, and the bans (not every member).
        let banned = self.store.room_members(old_room_id.as_str(), "ban").await?;
        let wanted: Vec<((String, String), OwnedEventId)> = old_head
            .state
            .iter()
            .filter(|((kind, key), _)| {
                (key.is_empty()
                    && (COPIED_STATE.contains(&kind.as_str())
                        || matches!(
                            kind.as_str(),
                            "m.room.create" | "m.room.power_levels" | "m.room.canonical_alias"
                        )))
                    || kind == "m.space.child"
                    || kind == "m.space.parent"
                    || (kind == "m.room.member" && banned.contains(key))
            })
            .map(|(key, id)| (key.clone(), id.clone()))
            .collect();
        let ids: Vec<OwnedEventId> = wanted.iter().map(|(_, id)| id.clone()).collect();
        let pdus = self.get_pdus(&ids, &old_head.rules).await?;
        let old_state: HashMap<(String, String), Value> = wanted
            .iter()
            .filter_map(|(key, id)| Some((key.clone(), pdus.get(id)?.content_value())))
            .collect();
        let old_content = |kind: &str, key: &str| old_state.get(&(kind.to_owned(), key.to_owned()));

        // The new room's create event.
        let old_create = old_content("m.room.create", "").cloned().unwrap_or_else(|| json!({}));
        let mut create_content = json!({
            "room_version": version.as_str(),
            "predecessor": {"room_id": old_room_id},
        });
        if old_create.get("m.federate") == Some(&Value::Bool(false)) {
            create_content["m.federate"] = json!(false);
        }
        if let Some(room_type) = old_create.get("type") {
            create_content["type"] = room_type.clone();
        }
        if !rules.authorization.use_room_create_sender {
            create_content["creator"] = json!(sender);
        }
        if !additional_creators.is_empty() {
            create_content["additional_creators"] = json!(additional_creators);
        }
        let provisional_id: OwnedRoomId = if rules.room_id_format == RoomIdFormatVersion::V2 {
            RoomId::parse(format!("!{}", random_string(43))).map_err(Error::internal)?
        } else {
            RoomId::parse(format!("!{}:{}", random_string(18), self.server_name()))
                .map_err(Error::internal)?
        };
        let mut new_head = RoomHead {
            room_id: provisional_id.clone(),
            version: version.clone(),
            rules: rules.clone(),
            state: Default::default(),
            state_group: None,
            extremities: Vec::new(),
            depth: 0,
        };
        let tombstone_draft = |replacement: &RoomId| {
            EventDraft::state(
                "m.room.tombstone",
                "",
                json!({"body": "This room has been replaced", "replacement_room": replacement}),
            )
        };
        let new_room = Some((version.as_str().to_owned(), sender.to_string()));
        // Where the create event names the room, the tombstone can only follow it; otherwise
        // the create event names the tombstone.
        let (create, tombstone) = if rules.room_id_format == RoomIdFormatVersion::V2 {
            let draft = EventDraft::state("m.room.create", "", create_content);
            let create = self.prepare_event(&new_head, sender, draft, None, new_room).await?;
            let tombstone = self
                .prepare_event(&old_head, sender, tombstone_draft(&create.pdu.room_id), None, None)
                .await?;
            (create, tombstone)
        } else {
            let tombstone =
                self.prepare_event(&old_head, sender, tombstone_draft(&provisional_id), None, None).await?;
            create_content["predecessor"]["event_id"] = json!(tombstone.pdu.event_id);
            let draft = EventDraft::state("m.room.create", "", create_content);
            let create = self.prepare_event(&new_head, sender, draft, None, new_room).await?;
            (create, tombstone)
        };
        self.apply_to_head(&mut new_head, &create);
        let new_room_id = create.pdu.room_id.clone();
        let mut new_guard = self.rooms.lock_for_write(&new_room_id).await;

        let mut creators = vec![sender.to_string()];
        creators.extend(additional_creators.iter().cloned());
        let (initial_levels, final_levels) = new_room_levels(
            old_content("m.room.power_levels", ""),
            rules.authorization.explicitly_privilege_room_creators,
            &creators,
        );

        let mut join = MembershipChange::new(sender, MembershipAction::Join, None);
        join.ratelimit = false;
        let MemberEvent::New(member) = self.membership_event(requester, &new_head, &join).await? else {
            return Err(Error::internal("the creator of an upgraded room is already in it"));
        };
        let required =
            vec![member, EventDraft::state("m.room.power_levels", "", Value::Object(initial_levels.clone()))];
        let mut optional = Vec::new();
        for kind in COPIED_STATE {
            if let Some(content) = old_content(kind, "") {
                optional.push(EventDraft::state(kind, "", content.clone()));
            }
        }
        let mut links: Vec<(&(String, String), &Value)> = old_state
            .iter()
            .filter(|((kind, _), content)| {
                (kind == "m.space.child" || kind == "m.space.parent")
                    && content.as_object().is_some_and(|c| !c.is_empty())
            })
            .collect();
        links.sort_by(|a, b| a.0.cmp(b.0));
        for ((kind, key), content) in links {
            optional.push(EventDraft::state(kind, key, content.clone()));
        }
        let (old_alias_content, new_alias_content) = match old_content("m.room.canonical_alias", "") {
            Some(content) => {
                let (old, new) = split_canonical_alias(content, self.server_name());
                (old, new.as_object().is_some_and(|n| !n.is_empty()).then_some(new))
            }
            None => (None, None),
        };
        let mut bans: Vec<(&String, &Value)> = old_state
            .iter()
            .filter(|((kind, _), content)| kind == "m.room.member" && content["membership"] == "ban")
            .map(|((_, user), content)| (user, content))
            .collect();
        bans.sort_by(|a, b| a.0.cmp(b.0));
        for (user, content) in bans {
            optional.push(EventDraft::state("m.room.member", user, content.clone()));
        }
        if final_levels != initial_levels {
            optional.push(EventDraft::state("m.room.power_levels", "", Value::Object(final_levels)));
        }

        let mut prepared: Vec<PreparedEvent> = vec![create];
        for draft in required {
            let event = self.prepare_event(&new_head, sender, draft, None, None).await?;
            self.apply_to_head(&mut new_head, &event);
            prepared.push(event);
        }
        for draft in optional {
            let (kind, state_key) = (draft.kind.clone(), draft.state_key.clone());
            match self.prepare_event(&new_head, sender, draft, None, None).await {
                Ok(event) => {
                    self.apply_to_head(&mut new_head, &event);
                    prepared.push(event);
                }
                Err(Error::Matrix(error)) => {
                    tracing::warn!(%old_room_id, %kind, ?state_key, %error, "not copied to the upgraded room");
                }
                Err(error) => return Err(error),
            }
        }
        self.commit_events(&mut new_head, prepared).await?;
        *new_guard = Some(new_head);
        drop(new_guard);

        // The old room: tombstone, canonical alias, restricted power levels.
        self.apply_to_head(&mut old_head, &tombstone);
        let mut old_events = vec![tombstone];
        let mut old_drafts = Vec::new();
        if let Some(content) = old_alias_content {
            old_drafts.push(EventDraft::state("m.room.canonical_alias", "", content));
        }
        if let Some(levels) = old_content("m.room.power_levels", "").and_then(restricted_levels) {
            old_drafts.push(EventDraft::state("m.room.power_levels", "", Value::Object(levels)));
        }
        for draft in old_drafts {
            let kind = draft.kind.clone();
            match self.prepare_event(&old_head, sender, draft, None, None).await {
                Ok(event) => {
                    self.apply_to_head(&mut old_head, &event);
                    old_events.push(event);
                }
                Err(Error::Matrix(error)) => {
                    tracing::warn!(%old_room_id, %kind, %error, "could not update the upgraded room");
                }
                Err(error) => return Err(error),
            }
        }
        self.commit_events(&mut old_head, old_events).await?;
        *guard = Some(old_head);
        drop(guard);

        self.store.move_aliases(old_room_id.as_str(), new_room_id.as_str()).await?;
        // The canonical alias follows once its aliases point to the new room (its targets are
        // checked like every canonical alias event's, as Synapse orders it).
        // As in Synapse, a refusal is logged and the upgraded room returned (the upgrade is
        // done); an internal error fails the request like any other.
        if let Some(content) = new_alias_content {
            let draft = EventDraft::state("m.room.canonical_alias", "", content);
            match self.send_event(&new_room_id, sender, draft, None).await {
                Ok(_) => {}
                Err(Error::Matrix(error)) => {
                    tracing::warn!(%new_room_id, %error, "the canonical alias was not copied to the upgraded room");
                }
                Err(error) => return Err(error),
            }
        }
        if old_record.is_public {
            self.store.set_room_public(new_room_id.as_str(), true).await?;
            self.store.set_room_public(old_room_id.as_str(), false).await?;
        }
        tracing::info!(%old_room_id, %new_room_id, version = version.as_str(), "upgraded a room");
        Ok(new_room_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_fixed_up_and_creators_removed() {
        let content =
            json!({"ban": "50", "users": {"@a:x": "100", "@b:x": 50}, "events": {"m.room.name": "75"}});
        let fixed = fixed_up_levels(&content);
        assert_eq!(
            Value::Object(fixed.clone()),
            json!({"ban": 50, "users": {"@a:x": 100, "@b:x": 50}, "events": {"m.room.name": 75}})
        );
        assert_eq!(level_needed_to_copy(&fixed), 75);
        let without = without_users(fixed, &["@a:x".to_owned()]);
        assert_eq!(without["users"], json!({"@b:x": 50}));
    }

    #[test]
    fn the_upgrader_is_raised_then_restored_except_where_creators_rule() {
        let old = json!({"users": {"@mod:x": 75, "@other:x": 50}, "events": {"m.room.power_levels": 100}});
        let creators = ["@mod:x".to_owned(), "@extra:x".to_owned()];
        let (initial, last) = new_room_levels(Some(&old), false, &creators[..1]);
        assert_eq!(initial["users"], json!({"@mod:x": 100, "@other:x": 50}));
        assert_eq!(Value::Object(last), old);
        let (initial, last) = new_room_levels(Some(&old), true, &creators);
        assert_eq!(initial["users"], json!({"@other:x": 50}));
        assert_eq!(initial, last);
    }

    #[test]
    fn the_old_room_is_silenced() {
        let levels = restricted_levels(&json!({"users_default": 60, "invite": 0})).unwrap();
        assert_eq!((levels["invite"].clone(), levels["events_default"].clone()), (json!(61), json!(61)));
        assert_eq!(restricted_levels(&json!({"invite": 50, "events_default": 100})), None);
    }

    #[test]
    fn canonical_alias_moves_local_aliases_only() {
        let content = json!({"alias": "#a:here", "alt_aliases": ["#b:here", "#c:there"]});
        let (old, new) = split_canonical_alias(&content, "here");
        assert_eq!(old, Some(json!({"alt_aliases": ["#c:there"]})));
        assert_eq!(new, json!({"alias": "#a:here", "alt_aliases": ["#b:here"]}));
        let (old, new) = split_canonical_alias(&json!({"alias": "#c:there"}), "here");
        assert_eq!(old, None);
        assert_eq!(new, json!({}));
    }
}
