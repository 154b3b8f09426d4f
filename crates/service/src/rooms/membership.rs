//! Membership: join (by ID or alias, restricted joins), leave, invite, kick, ban, unban,
//! knock, forget; auto-joined rooms at registration; profile changes and deactivation as
//! membership events.

use myelin_core::{ErrCode, MatrixError};
use ruma::{OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId};
use serde_json::{Value, json};

use super::{EventDraft, RoomHead};
use crate::auth::Requester;
use crate::ratelimit::Limiter;
use crate::{Error, Result, Services};

fn not_found_room() -> Error {
    MatrixError::not_found(
        "No known servers: this server does not know the room (federation is not available yet)",
    )
    .into()
}

impl Services {
    /// A room ID, or the room a local alias points to.
    pub async fn resolve_room_or_alias(&self, id_or_alias: &str) -> Result<OwnedRoomId> {
        if id_or_alias.starts_with('#') {
            let alias = RoomAliasId::parse(id_or_alias)
                .map_err(|_| MatrixError::invalid_param(format!("Invalid room alias {id_or_alias:?}")))?;
            if alias.server_name().as_str() != self.server_name() {
                return Err(not_found_room());
            }
            let (room_id, _) = self
                .store
                .get_alias(alias.as_str())
                .await?
                .ok_or_else(|| MatrixError::not_found(format!("Room alias {alias} not found")))?;
            return RoomId::parse(&room_id).map_err(Error::internal);
        }
        RoomId::parse(id_or_alias).map_err(|_| {
            MatrixError::invalid_param(format!("Invalid room ID or alias {id_or_alias:?}")).into()
        })
    }

    /// The head of a room the server knows, or `M_NOT_FOUND`.
    pub async fn known_room(&self, room_id: &RoomId) -> Result<RoomHead> {
        self.room_head(room_id).await?.ok_or_else(not_found_room)
    }

    async fn member_content(
        &self,
        user_id: &UserId,
        membership: &str,
        reason: Option<&str>,
    ) -> Result<Value> {
        let mut content = json!({"membership": membership});
        if membership == "join" || membership == "invite" || membership == "knock" {
            let profile = self.store.get_profile(user_id.as_str()).await?;
            for key in ["displayname", "avatar_url"] {
                if let Some(value) = profile.get(key).filter(|v| v.is_string()) {
                    content[key] = value.clone();
                }
            }
        }
        if let Some(reason) = reason {
            content["reason"] = json!(reason);
        }
        Ok(content)
    }

    async fn current_membership(&self, head: &RoomHead, user_id: &UserId) -> Result<Option<String>> {
        let Some(pdu) = self.current_state_pdu(head, "m.room.member", user_id.as_str()).await? else {
            return Ok(None);
        };
        Ok(pdu.content_value().get("membership").and_then(Value::as_str).map(str::to_owned))
    }

    /// For a restricted room: a local member who may invite, vouching for a user who is in one
    /// of the rooms the join rule allows.
    async fn restricted_join_authoriser(
        &self,
        head: &RoomHead,
        user_id: &UserId,
    ) -> Result<Option<OwnedUserId>> {
        let Some(join_rules) = self.current_state_pdu(head, "m.room.join_rules", "").await? else {
            return Ok(None);
        };
        let content = join_rules.content_value();
        let rule = content.get("join_rule").and_then(Value::as_str).unwrap_or("invite");
        if rule != "restricted" && rule != "knock_restricted" {
            return Ok(None);
        }
        let allowed = content
            .get("allow")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|entry| entry.get("type").and_then(Value::as_str) == Some("m.room_membership"))
            .filter_map(|entry| entry.get("room_id").and_then(Value::as_str))
            .collect::<Vec<_>>();
        let mut qualifies = false;
        for room in allowed {
            if self.store.membership(room, user_id.as_str()).await?.as_deref() == Some("join") {
                qualifies = true;
                break;
            }
        }
        if !qualifies {
            return Err(MatrixError::forbidden(
                "You are not a member of any room that this room's join rule allows",
            )
            .into());
        }
        let levels = self.power_levels(head).await?;
        let invite_level = levels.action_level("invite");
        for member in self.store.room_members(head.room_id.as_str(), "join").await? {
            let Ok(member) = UserId::parse(&member) else { continue };
            if member.server_name().as_str() == self.server_name()
                && levels.user_level(&member) >= invite_level
            {
                return Ok(Some(member));
            }
        }
        Err(MatrixError::forbidden("No member of this server may authorise joining this restricted room")
            .into())
    }

    /// `POST /join/{roomIdOrAlias}` and `/rooms/{roomId}/join`.
    pub async fn join_room(
        &self,
        requester: &Requester,
        id_or_alias: &str,
        reason: Option<&str>,
    ) -> Result<OwnedRoomId> {
        let room_id = self.resolve_room_or_alias(id_or_alias).await?;
        let user_id = &requester.user_id;
        let head = self.known_room(&room_id).await?;
        let current = self.current_membership(&head, user_id).await?;
        match current.as_deref() {
            Some("join") => return Ok(room_id),
            Some("ban") => return Err(MatrixError::forbidden("You are banned from this room").into()),
            _ => {}
        }
        if requester.is_guest {
            let guest_access = self.current_state_pdu(&head, "m.room.guest_access", "").await?;
            let can_join = guest_access.is_some_and(|p| {
                p.content_value().get("guest_access").and_then(Value::as_str) == Some("can_join")
            });
            if !can_join {
                return Err(MatrixError::new(
                    ErrCode::GuestAccessForbidden,
                    "Guest access is not allowed in this room",
                )
                .into());
            }
        }
        self.ratelimit_user(Limiter::JoinsLocal, user_id).await?;
        self.ratelimit_key(Limiter::JoinsPerRoom, room_id.as_str(), true)?;
        let mut content = self.member_content(user_id, "join", reason).await?;
        if current.as_deref() != Some("invite")
            && head.rules.authorization.restricted_join_rule
            && let Some(authoriser) = self.restricted_join_authoriser(&head, user_id).await?
        {
            content["join_authorised_via_users_server"] = json!(authoriser);
        }
        self.send_event(
            &room_id,
            user_id,
            EventDraft::state("m.room.member", user_id.as_str(), content),
            None,
        )
        .await?;
        Ok(room_id)
    }

    /// `POST /rooms/{roomId}/leave` (also rejects an invite or rescinds a knock).
    pub async fn leave_room(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        reason: Option<&str>,
    ) -> Result<()> {
        let user_id = &requester.user_id;
        let head = self.known_room(room_id).await?;
        match self.current_membership(&head, user_id).await?.as_deref() {
            None | Some("leave") => {
                return Err(MatrixError::forbidden("You are not a member of this room").into());
            }
            Some("ban") => return Err(MatrixError::forbidden("You are banned from this room").into()),
            _ => {}
        }
        let content = self.member_content(user_id, "leave", reason).await?;
        self.send_event(
            room_id,
            user_id,
            EventDraft::state("m.room.member", user_id.as_str(), content),
            None,
        )
        .await?;
        if self.config.room.forget_rooms_on_leave {
            self.store.forget_room(user_id.as_str(), room_id.as_str()).await?;
        }
        Ok(())
    }

    fn parse_target(&self, target: &str) -> Result<OwnedUserId> {
        UserId::parse(target)
            .map_err(|_| MatrixError::invalid_param(format!("Invalid user ID {target:?}")).into())
    }

    /// `POST /rooms/{roomId}/invite`.
    pub async fn invite_user(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        target: &str,
        reason: Option<&str>,
        is_direct: bool,
    ) -> Result<()> {
        let target = self.parse_target(target)?;
        if self.config.room.block_non_admin_invites && !requester.is_admin {
            return Err(MatrixError::forbidden("Invites have been disabled on this server").into());
        }
        if target.server_name().as_str() != self.server_name() {
            return Err(MatrixError::forbidden(
                "Inviting users of other servers needs federation, which is not available yet",
            )
            .into());
        }
        if self.store.get_user(target.as_str()).await?.is_none() {
            return Err(MatrixError::not_found(format!("User {target} not found")).into());
        }
        let head = self.known_room(room_id).await?;
        match self.current_membership(&head, &target).await?.as_deref() {
            Some("join") => {
                return Err(MatrixError::forbidden(format!("{target} is already in the room")).into());
            }
            Some("ban") => {
                return Err(MatrixError::forbidden(format!("{target} is banned from the room")).into());
            }
            _ => {}
        }
        self.ratelimit_key(Limiter::InvitesPerRoom, room_id.as_str(), true)?;
        self.ratelimit_key(Limiter::InvitesPerUser, target.as_str(), true)?;
        self.ratelimit_user(Limiter::InvitesPerIssuer, &requester.user_id).await?;
        let mut content = self.member_content(&target, "invite", reason).await?;
        if is_direct {
            content["is_direct"] = json!(true);
        }
        self.send_event(
            room_id,
            &requester.user_id,
            EventDraft::state("m.room.member", target.as_str(), content),
            None,
        )
        .await?;
        Ok(())
    }

    /// `POST /rooms/{roomId}/kick`.
    pub async fn kick_user(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        target: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        let target = self.parse_target(target)?;
        let head = self.known_room(room_id).await?;
        match self.current_membership(&head, &target).await?.as_deref() {
            Some("join") | Some("invite") | Some("knock") => {}
            _ => return Err(MatrixError::forbidden(format!("{target} is not in the room")).into()),
        }
        let content = self.member_content(&target, "leave", reason).await?;
        self.send_event(
            room_id,
            &requester.user_id,
            EventDraft::state("m.room.member", target.as_str(), content),
            None,
        )
        .await?;
        Ok(())
    }

    /// `POST /rooms/{roomId}/ban`.
    pub async fn ban_user(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        target: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        let target = self.parse_target(target)?;
        self.known_room(room_id).await?;
        let content = self.member_content(&target, "ban", reason).await?;
        self.send_event(
            room_id,
            &requester.user_id,
            EventDraft::state("m.room.member", target.as_str(), content),
            None,
        )
        .await?;
        Ok(())
    }

    /// `POST /rooms/{roomId}/unban`.
    pub async fn unban_user(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        target: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        let target = self.parse_target(target)?;
        let head = self.known_room(room_id).await?;
        if self.current_membership(&head, &target).await?.as_deref() != Some("ban") {
            return Err(MatrixError::forbidden(format!("{target} is not banned")).into());
        }
        let content = self.member_content(&target, "leave", reason).await?;
        self.send_event(
            room_id,
            &requester.user_id,
            EventDraft::state("m.room.member", target.as_str(), content),
            None,
        )
        .await?;
        Ok(())
    }

    /// `POST /knock/{roomIdOrAlias}`.
    pub async fn knock_room(
        &self,
        requester: &Requester,
        id_or_alias: &str,
        reason: Option<&str>,
    ) -> Result<OwnedRoomId> {
        let room_id = self.resolve_room_or_alias(id_or_alias).await?;
        let head = self.known_room(&room_id).await?;
        match self.current_membership(&head, &requester.user_id).await?.as_deref() {
            Some("join") => return Err(MatrixError::forbidden("You are already in the room").into()),
            Some("ban") => return Err(MatrixError::forbidden("You are banned from this room").into()),
            Some("invite") => {
                return Err(MatrixError::forbidden("You are already invited to the room").into());
            }
            _ => {}
        }
        self.ratelimit_user(Limiter::JoinsLocal, &requester.user_id).await?;
        let content = self.member_content(&requester.user_id, "knock", reason).await?;
        self.send_event(
            &room_id,
            &requester.user_id,
            EventDraft::state("m.room.member", requester.user_id.as_str(), content),
            None,
        )
        .await?;
        Ok(room_id)
    }

    /// `POST /rooms/{roomId}/forget`.
    pub async fn forget_room(&self, requester: &Requester, room_id: &RoomId) -> Result<()> {
        match self.store.membership(room_id.as_str(), requester.user_id.as_str()).await?.as_deref() {
            Some("join") | Some("invite") | Some("knock") => {
                Err(MatrixError::unknown("You are still in the room; leave it first").into())
            }
            None => Err(MatrixError::not_found("You were never in this room").into()),
            _ => Ok(self.store.forget_room(requester.user_id.as_str(), room_id.as_str()).await?),
        }
    }

    /// Re-sends the user's member events in every joined room after a profile change.
    pub async fn propagate_profile(&self, user_id: &UserId) -> Result<()> {
        for room in self.store.rooms_for_user(user_id.as_str(), "join").await? {
            let Ok(room_id) = RoomId::parse(&room) else { continue };
            let Some(head) = self.room_head(&room_id).await? else { continue };
            let Some(current) = self.current_state_pdu(&head, "m.room.member", user_id.as_str()).await?
            else {
                continue;
            };
            let mut content = current.content_value();
            let profile = self.store.get_profile(user_id.as_str()).await?;
            let mut changed = false;
            for key in ["displayname", "avatar_url"] {
                let new = profile.get(key).filter(|v| v.is_string()).cloned();
                if content.get(key) != new.as_ref() {
                    changed = true;
                    match new {
                        Some(value) => content[key] = value,
                        None => {
                            if let Some(object) = content.as_object_mut() {
                                object.remove(key);
                            }
                        }
                    }
                }
            }
            if changed
                && let Err(error) = self
                    .send_event(
                        &room_id,
                        user_id,
                        EventDraft::state("m.room.member", user_id.as_str(), content),
                        None,
                    )
                    .await
            {
                tracing::warn!(%room_id, %error, "could not update the member event after a profile change");
            }
        }
        Ok(())
    }

    /// Leaves every room (joined, invited or knocked) — for deactivated accounts.
    pub async fn leave_all_rooms(&self, user_id: &UserId) -> Result<()> {
        for membership in ["join", "invite", "knock"] {
            for room in self.store.rooms_for_user(user_id.as_str(), membership).await? {
                let Ok(room_id) = RoomId::parse(&room) else { continue };
                let draft =
                    EventDraft::state("m.room.member", user_id.as_str(), json!({"membership": "leave"}));
                if let Err(error) = self.send_event(&room_id, user_id, draft, None).await {
                    tracing::warn!(%room_id, %error, "could not leave a room of a deactivated user");
                }
            }
        }
        Ok(())
    }

    /// Joins a new user to `auto_join_rooms`, creating missing local alias rooms when
    /// `autocreate_auto_join_rooms` is on.
    pub async fn auto_join_rooms(&self, user_id: &UserId, is_guest: bool) -> Result<()> {
        let registration = &self.config.registration;
        if registration.auto_join_rooms.is_empty() || (is_guest && !registration.auto_join_rooms_for_guests) {
            return Ok(());
        }
        let requester = Requester {
            user_id: user_id.to_owned(),
            device_id: None,
            is_guest,
            is_admin: false,
            shadow_banned: false,
            token_hash: String::new(),
        };
        for room in &registration.auto_join_rooms {
            let result = match self.resolve_room_or_alias(room).await {
                Ok(_) => self.join_room(&requester, room, None).await.map(|_| ()),
                Err(Error::Matrix(error))
                    if error.code == ErrCode::NotFound
                        && room.starts_with('#')
                        && registration.autocreate_auto_join_rooms =>
                {
                    self.autocreate_room(&requester, room).await
                }
                Err(error) => Err(error),
            };
            if let Err(error) = result {
                tracing::warn!(%user_id, room, %error, "could not auto-join a room");
            }
        }
        Ok(())
    }

    async fn autocreate_room(&self, requester: &Requester, alias: &str) -> Result<()> {
        let alias_id = RoomAliasId::parse(alias).map_err(|_| MatrixError::invalid_param("Invalid alias"))?;
        if alias_id.server_name().as_str() != self.server_name() {
            return Err(MatrixError::forbidden("Cannot create rooms for aliases of other servers").into());
        }
        let registration = &self.config.registration;
        let preset =
            registration.autocreate_auto_join_room_preset.clone().unwrap_or_else(|| "public_chat".to_owned());
        let creator = match &registration.auto_join_mxid_localpart {
            Some(localpart) => {
                let user_id =
                    UserId::parse(format!("@{localpart}:{}", self.server_name())).map_err(Error::internal)?;
                if self.store.get_user(user_id.as_str()).await?.is_none() {
                    self.store
                        .create_user(&myelin_store::NewUser {
                            user_id: user_id.to_string(),
                            displayname: Some(localpart.clone()),
                            ..Default::default()
                        })
                        .await?;
                }
                Requester { user_id, ..requester.clone() }
            }
            None => requester.clone(),
        };
        let mut creation_content = serde_json::Map::new();
        if !registration.autocreate_auto_join_rooms_federated {
            creation_content.insert("m.federate".to_owned(), json!(false));
        }
        let request = super::create::CreateRoomRequest {
            preset: Some(preset.clone()),
            visibility: Some(if preset == "public_chat" { "public" } else { "private" }.to_owned()),
            room_alias_name: Some(alias_id.alias().to_owned()),
            creation_content: Some(creation_content),
            invite: if creator.user_id != requester.user_id && preset != "public_chat" {
                vec![requester.user_id.to_string()]
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        let room_id = self.create_room(&creator, request).await?;
        if creator.user_id != requester.user_id {
            self.join_room(requester, room_id.as_str(), None).await?;
        }
        Ok(())
    }
}
