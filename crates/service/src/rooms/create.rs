//! `createRoom`: the spec's event order, presets, power levels, aliases, invites.

use myelin_config::EncryptionByDefault;
use myelin_core::{ErrCode, MatrixError};
use ruma::room_version_rules::RoomIdFormatVersion;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::membership::{MemberEvent, MembershipAction, MembershipChange};
use super::{EventDraft, RoomHead, check_room_version};
use crate::auth::Requester;
use crate::policy_modules::FILTERED_ENCRYPTION_LEVEL;
use crate::ratelimit::Limiter;
use crate::util::random_string;
use crate::{Error, Result, Services};

/// A `createRoom` request.
#[derive(Clone, Debug, Default)]
pub struct CreateRoomRequest {
    pub preset: Option<String>,
    /// `public` publishes the room in the directory.
    pub visibility: Option<String>,
    pub room_alias_name: Option<String>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<String>,
    pub invite_3pid: Vec<Value>,
    pub is_direct: bool,
    pub creation_content: Option<Map<String, Value>>,
    /// `(type, state_key, content)`.
    pub initial_state: Vec<(String, String, Value)>,
    pub power_level_content_override: Option<Map<String, Value>>,
    pub room_version: Option<String>,
}

struct Preset {
    join_rule: &'static str,
    history_visibility: &'static str,
    guest_can_join: bool,
    invitees_have_ops: bool,
    power_level_override: Value,
    encrypted: bool,
}

fn preset(name: &str, encryption: EncryptionByDefault) -> Result<Preset> {
    let private = |trusted: bool| Preset {
        join_rule: "invite",
        history_visibility: "shared",
        guest_can_join: true,
        invitees_have_ops: trusted,
        power_level_override: json!({"invite": 0}),
        encrypted: encryption != EncryptionByDefault::Off,
    };
    Ok(match name {
        "private_chat" => private(false),
        "trusted_private_chat" => private(true),
        "public_chat" => Preset {
            join_rule: "public",
            history_visibility: "shared",
            guest_can_join: false,
            invitees_have_ops: false,
            power_level_override: json!({"m.call.invite": 50}),
            encrypted: encryption == EncryptionByDefault::All,
        },
        other => return Err(MatrixError::bad_json(format!("Unknown preset {other:?}")).into()),
    })
}

/// Characters Synapse allows in an alias localpart.
fn valid_alias_localpart(localpart: &str) -> bool {
    !localpart.is_empty()
        && !localpart.chars().any(|c| c.is_whitespace() || c == ':' || c == '#' || c.is_control())
}

impl Services {
    /// Whether `rules` (publication or alias rules) allow an action.
    pub(crate) fn directory_rules_allow(
        rules: &[myelin_config::DirectoryRule],
        user_id: &str,
        room_id: &str,
        aliases: &[String],
    ) -> bool {
        rules
            .iter()
            .find(|rule| rule.applies(user_id, room_id, aliases))
            .is_some_and(|rule| rule.action == "allow")
    }

    /// `POST /createRoom`; returns the new room's ID.
    pub async fn create_room(
        &self,
        requester: &Requester,
        mut request: CreateRoomRequest,
    ) -> Result<OwnedRoomId> {
        let creator = &requester.user_id;
        self.admit_client_write(requester, super::admission::ClientWrite::Event).await?;
        self.ratelimit_user(Limiter::RoomCreation, requester).await?;
        let version_name =
            request.room_version.clone().unwrap_or_else(|| self.config.server.default_room_version.clone());
        let (version, rules) = check_room_version(&version_name)?;
        if !request.invite_3pid.is_empty() {
            return Err(
                MatrixError::invalid_param("Third-party invites are not supported by this server").into()
            );
        }
        let public = match request.visibility.as_deref() {
            None | Some("private") => false,
            Some("public") => true,
            Some(other) => return Err(MatrixError::bad_json(format!("Unknown visibility {other:?}")).into()),
        };
        let preset_name = request
            .preset
            .clone()
            .unwrap_or_else(|| if public { "public_chat" } else { "private_chat" }.to_owned());
        // The encryption filter makes every new room unencrypted: no encryption by default, no
        // `m.room.encryption` from `initial_state`, and the level to send one above everyone's.
        let encryption_filtered = self.encryption_filtered();
        let encryption_by_default = if encryption_filtered {
            EncryptionByDefault::Off
        } else {
            self.config.room.encryption_by_default
        };
        if encryption_filtered {
            request.initial_state.retain(|(kind, _, _)| kind != "m.room.encryption");
        }
        let preset = preset(&preset_name, encryption_by_default)?;
        let asks_encryption = request.initial_state.iter().any(|(kind, _, _)| kind == "m.room.encryption");
        if preset.encrypted || asks_encryption {
            self.check_encryption_allowed(&preset_name)?;
        }
        self.check_may_create_room(requester, true)?;
        let mut invitees: Vec<OwnedUserId> = Vec::new();
        for invitee in &request.invite {
            let user_id = UserId::parse(invitee.as_str())
                .map_err(|_| MatrixError::invalid_param(format!("Invalid user ID in invite: {invitee:?}")))?;
            if &user_id != creator && !invitees.contains(&user_id) {
                invitees.push(user_id);
            }
        }
        // A shadow-banned creator's room is made, but nobody is invited (as Synapse).
        if requester.shadow_banned {
            invitees.clear();
        }
        let alias = match &request.room_alias_name {
            Some(localpart) => {
                if !valid_alias_localpart(localpart) {
                    return Err(MatrixError::invalid_param("Invalid characters in room alias").into());
                }
                let alias = format!("#{localpart}:{}", self.server_name());
                if ruma::RoomAliasId::parse(&alias).is_err() || alias.len() > 255 {
                    return Err(MatrixError::invalid_param("Invalid room alias").into());
                }
                if self.store.get_alias(&alias).await?.is_some() {
                    return Err(MatrixError::new(ErrCode::RoomInUse, "Room alias already taken").into());
                }
                Some(alias)
            }
            None => None,
        };

        // The room ID (v1-v11; v12 derives it from the create event).
        let provisional_id: OwnedRoomId = if rules.room_id_format == RoomIdFormatVersion::V2 {
            RoomId::parse(format!("!{}", random_string(43))).map_err(Error::internal)?
        } else {
            RoomId::parse(format!("!{}:{}", random_string(18), self.server_name()))
                .map_err(Error::internal)?
        };
        if let Some(alias) = &alias
            && !Self::directory_rules_allow(
                &self.config.room.alias_creation_rules,
                creator.as_str(),
                provisional_id.as_str(),
                std::slice::from_ref(alias),
            )
        {
            return Err(MatrixError::forbidden("Not allowed to create alias").into());
        }
        if public
            && !Self::directory_rules_allow(
                &self.config.room.room_list_publication_rules,
                creator.as_str(),
                provisional_id.as_str(),
                alias.as_slice(),
            )
        {
            return Err(MatrixError::forbidden("Not allowed to publish room").into());
        }

        // 1. m.room.create
        let mut create_content = request.creation_content.clone().unwrap_or_default();
        create_content.remove("room_version");
        create_content.insert("room_version".to_owned(), json!(version.as_str()));
        if rules.authorization.use_room_create_sender {
            create_content.remove("creator");
        } else {
            create_content.insert("creator".to_owned(), json!(creator));
        }
        if rules.authorization.additional_room_creators {
            let mut extra: Vec<String> = match create_content.get("additional_creators") {
                None => Vec::new(),
                Some(Value::Array(values)) => values
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .filter(|s| UserId::parse(*s).is_ok())
                            .map(str::to_owned)
                            .ok_or_else(|| MatrixError::bad_json("additional_creators must be user IDs"))
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(MatrixError::bad_json("additional_creators must be a list").into()),
            };
            if preset.invitees_have_ops {
                extra.extend(invitees.iter().map(|u| u.to_string()));
            }
            extra.retain(|u| u != creator.as_str());
            extra.sort();
            extra.dedup();
            if extra.is_empty() {
                create_content.remove("additional_creators");
            } else {
                create_content.insert("additional_creators".to_owned(), json!(extra));
            }
        }
        let creators: Vec<String> = std::iter::once(creator.to_string())
            .chain(
                create_content
                    .get("additional_creators")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned)),
            )
            .collect();

        // 3. power levels, computed up front to refuse a v12 creator in `users` clearly.
        let power_levels = match request
            .initial_state
            .iter()
            .find(|(kind, key, _)| kind == "m.room.power_levels" && key.is_empty())
        {
            Some((_, _, content)) => content.clone(),
            None => {
                let mut content = json!({
                    "users": {},
                    "users_default": 0,
                    "events": {
                        "m.room.name": 50,
                        "m.room.power_levels": 100,
                        "m.room.history_visibility": 100,
                        "m.room.canonical_alias": 50,
                        "m.room.avatar": 50,
                        "m.room.tombstone": if rules.authorization.explicitly_privilege_room_creators { 150 } else { 100 },
                        "m.room.server_acl": 100,
                        "m.room.encryption": 100,
                    },
                    "events_default": 0,
                    "state_default": 50,
                    "ban": 50,
                    "kick": 50,
                    "redact": 50,
                    "invite": 50,
                    "historical": 100,
                });
                if !rules.authorization.explicitly_privilege_room_creators {
                    content["users"][creator.as_str()] = json!(100);
                    if preset.invitees_have_ops {
                        for invitee in &invitees {
                            content["users"][invitee.as_str()] = json!(100);
                        }
                    }
                }
                let mut overrides = vec![preset.power_level_override.clone()];
                if let Some(default) = self.config.room.default_power_level_content_override.get(&preset_name)
                {
                    overrides.push(default.clone());
                }
                if let Some(custom) = &request.power_level_content_override {
                    overrides.push(Value::Object(custom.clone()));
                }
                for layer in overrides {
                    if let (Some(object), Some(layer)) = (content.as_object_mut(), layer.as_object()) {
                        for (key, value) in layer {
                            object.insert(key.clone(), value.clone());
                        }
                    }
                }
                content
            }
        };
        let mut power_levels = power_levels;
        if encryption_filtered && let Some(object) = power_levels.as_object_mut() {
            let events = object.entry("events").or_insert_with(|| json!({}));
            if let Some(events) = events.as_object_mut() {
                events.insert("m.room.encryption".to_owned(), json!(FILTERED_ENCRYPTION_LEVEL));
            }
        }
        if rules.authorization.explicitly_privilege_room_creators
            && let Some(users) = power_levels.get("users").and_then(Value::as_object)
            && let Some(listed) = creators.iter().find(|c| users.contains_key(c.as_str()))
        {
            return Err(MatrixError::new(
                ErrCode::InvalidRoomState,
                format!("{listed} is a creator of this room version {} room and already has unlimited power; it cannot be listed in power_levels users", version.as_str()),
            )
            .into());
        }

        let mut head = RoomHead {
            room_id: provisional_id.clone(),
            version: version.clone(),
            rules: rules.clone(),
            state: Default::default(),
            state_group: None,
            extremities: Vec::new(),
            depth: 0,
        };
        let create = self
            .prepare_event(
                &head,
                creator,
                EventDraft::state("m.room.create", "", Value::Object(create_content)),
                None,
                Some((version.as_str().to_owned(), creator.to_string())),
            )
            .await?;
        self.apply_to_head(&mut head, &create);
        let room_id = create.pdu.room_id.clone();
        let prepared = vec![create];
        // From here on, the room's lock is held until every event is persisted.
        let mut guard = self.rooms.lock_for_write(&room_id).await;
        // The alias is claimed before the events are prepared, so that the canonical alias
        // event (checked like every other) finds it, and so that of two concurrent requests
        // for one alias exactly one gets it; it is released if the room is not made.
        if let Some(alias) = &alias
            && !self.store.create_alias(alias, room_id.as_str(), creator.as_str()).await?
        {
            return Err(MatrixError::new(ErrCode::RoomInUse, "Room alias already taken").into());
        }
        let made = self
            .prepare_and_commit_room(
                requester,
                &request,
                &preset,
                &invitees,
                alias.as_deref(),
                power_levels,
                &mut head,
                prepared,
            )
            .await;
        if let Err(error) = made {
            if let Some(alias) = &alias
                && let Err(release) = self.store.delete_alias(alias).await
            {
                tracing::warn!(%alias, error = %release, "could not release the alias of a room not created");
            }
            return Err(error);
        }
        if public {
            self.store.set_room_public(room_id.as_str(), true).await?;
        }
        *guard = Some(head);
        drop(guard);
        tracing::info!(%room_id, version = version.as_str(), creator = %creator, "created a room");
        // As Synapse: a remote invite that fails fails the request (the room stays).
        for invitee in invitees.iter().filter(|i| i.server_name().as_str() != self.server_name()) {
            let mut change = MembershipChange::new(invitee, MembershipAction::Invite, None);
            change.ratelimit = false;
            if request.is_direct {
                change.content.insert("is_direct".to_owned(), json!(true));
            }
            self.update_membership(requester, &room_id, change).await?;
        }
        Ok(room_id)
    }

    /// The events of `createRoom` after the create event, prepared on `head` and committed
    /// with `prepared` in one transaction.
    #[allow(clippy::too_many_arguments)]
    async fn prepare_and_commit_room(
        &self,
        requester: &Requester,
        request: &CreateRoomRequest,
        preset: &Preset,
        invitees: &[OwnedUserId],
        alias: Option<&str>,
        power_levels: Value,
        head: &mut RoomHead,
        mut prepared: Vec<super::PreparedEvent>,
    ) -> Result<()> {
        let creator = &requester.user_id;
        let room_id = head.room_id.clone();
        let invalid_state = |error: Error| -> Error {
            match error {
                Error::Matrix(error) if error.code == ErrCode::Forbidden => {
                    MatrixError::new(ErrCode::InvalidRoomState, error.message).into()
                }
                other => other,
            }
        };

        // 2. The creator joins.
        let mut drafts =
            vec![EventDraft::state("m.room.member", creator.as_str(), json!({"membership": "join"}))];
        // 3. Power levels.
        drafts.push(EventDraft::state("m.room.power_levels", "", power_levels));
        let initial: Vec<&(String, String, Value)> = request
            .initial_state
            .iter()
            .filter(|(kind, key, _)| !(kind == "m.room.power_levels" && key.is_empty()))
            .collect();
        let in_initial = |kind: &str| initial.iter().any(|(k, key, _)| k == kind && key.is_empty());
        // 4. Canonical alias.
        if let Some(alias) = alias
            && !in_initial("m.room.canonical_alias")
        {
            drafts.push(EventDraft::state("m.room.canonical_alias", "", json!({"alias": alias})));
        }
        // 5. The preset's events.
        if !in_initial("m.room.join_rules") {
            drafts.push(EventDraft::state("m.room.join_rules", "", json!({"join_rule": preset.join_rule})));
        }
        if !in_initial("m.room.history_visibility") {
            drafts.push(EventDraft::state(
                "m.room.history_visibility",
                "",
                json!({"history_visibility": preset.history_visibility}),
            ));
        }
        if preset.guest_can_join && !in_initial("m.room.guest_access") {
            drafts.push(EventDraft::state("m.room.guest_access", "", json!({"guest_access": "can_join"})));
        }
        // 6. initial_state, then encryption by default.
        for (kind, key, content) in &initial {
            drafts.push(EventDraft::state(kind, key, content.clone()));
        }
        if preset.encrypted && !in_initial("m.room.encryption") {
            drafts.push(EventDraft::state(
                "m.room.encryption",
                "",
                json!({"algorithm": "m.megolm.v1.aes-sha2"}),
            ));
        }
        // 7. Name and topic.
        if let Some(name) = &request.name {
            drafts.push(EventDraft::state("m.room.name", "", json!({"name": name})));
        }
        if let Some(topic) = &request.topic {
            drafts.push(EventDraft::state(
                "m.room.topic",
                "",
                json!({"topic": topic, "m.topic": {"m.text": [{"body": topic}]}}),
            ));
        }
        // Member events (the creator's join, any in `initial_state`) and the invites (8.) pass
        // the membership rules like every other membership change; the invites are rate
        // limited as one batch before anything is committed.
        let mut invited: Vec<OwnedUserId> = Vec::new();
        // Users of other servers are invited once the room exists (their servers sign the
        // invite first: `federation::invite`).
        let invites =
            invitees.iter().filter(|i| i.server_name().as_str() == self.server_name()).map(|invitee| {
                let mut content = json!({"membership": "invite"});
                if request.is_direct {
                    content["is_direct"] = json!(true);
                }
                EventDraft::state("m.room.member", invitee.as_str(), content)
            });
        for draft in drafts.into_iter().chain(invites) {
            let draft = match draft.kind.as_str() {
                "m.room.member" => {
                    let state_key = draft.state_key.as_deref().unwrap_or_default();
                    let mut change = MembershipChange::from_member_event(state_key, draft.content)?;
                    change.ratelimit = false;
                    if change.action == MembershipAction::Invite
                        && change.target.server_name().as_str() != self.server_name()
                    {
                        return Err(MatrixError::bad_json(
                            "Users of other servers are invited through the invite list",
                        )
                        .into());
                    }
                    if change.action == MembershipAction::Invite && !invited.contains(&change.target) {
                        invited.push(change.target.clone());
                    }
                    match self.membership_event(requester, head, &change).await? {
                        MemberEvent::New(draft) => draft,
                        MemberEvent::Unchanged(_) => continue,
                    }
                }
                _ => draft,
            };
            let event = self.prepare_event(head, creator, draft, None, None).await.map_err(invalid_state)?;
            self.apply_to_head(head, &event);
            prepared.push(event);
        }
        if !invited.is_empty() {
            self.ratelimit_invites(requester, &room_id, &invited).await?;
        }
        // Everything lands in one transaction: a refused event leaves no half-made room.
        self.commit_events(head, prepared).await?;
        Ok(())
    }
}

impl Services {
    /// As Synapse: an encrypted room is refused before anything is created when the preset's
    /// `default_power_level_content_override` puts `m.room.encryption` above
    /// `m.room.power_levels` (both 100 when not given).
    fn check_encryption_allowed(&self, preset_name: &str) -> Result<()> {
        let Some(events) = self
            .config
            .room
            .default_power_level_content_override
            .get(preset_name)
            .and_then(|levels| levels.get("events"))
        else {
            return Ok(());
        };
        let level = |kind: &str| events.get(kind).and_then(Value::as_i64).unwrap_or(100);
        let (admin_level, encryption_level) = (level("m.room.power_levels"), level("m.room.encryption"));
        if encryption_level > admin_level {
            return Err(MatrixError::forbidden(format!(
                "You cannot create an encrypted room. user_level ({admin_level}) < send_level ({encryption_level})"
            ))
            .into());
        }
        Ok(())
    }
}
