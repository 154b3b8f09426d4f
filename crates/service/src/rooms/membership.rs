//! Membership: join (by ID or alias, restricted joins), leave, invite, kick, ban, unban,
//! knock, forget; auto-joined rooms at registration; profile changes and deactivation as
//! membership events.
//!
//! Every membership change goes through [`Services::membership_event`] (the rules) and, for
//! an existing room, [`Services::update_membership`] (the rules, then the send): the
//! membership endpoints, a state `PUT` of `m.room.member`, `createRoom`'s creator and invite
//! list, the upgraded room's creator, auto-join, deactivation and profile propagation.

use myelin_core::{ErrCode, MatrixError};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::admission::ClientWrite;
use super::{EventDraft, RoomHead};
use crate::auth::Requester;
use crate::profile::{MAX_AVATAR_URL_LEN, MAX_DISPLAYNAME_LEN};
use crate::ratelimit::Limiter;
use crate::{Error, Result, Services};

/// The member event field naming who authorised a restricted join.
const AUTHORISING_USER: &str = "join_authorised_via_users_server";

/// A membership change, as the endpoints name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipAction {
    Join,
    /// Leaving oneself; for someone else, a kick (or an unban of a banned user).
    Leave,
    Invite,
    Kick,
    Ban,
    Unban,
    Knock,
}

impl MembershipAction {
    /// The action a member event's `membership` asks for.
    pub fn from_membership(membership: &str) -> Option<MembershipAction> {
        Some(match membership {
            "join" => MembershipAction::Join,
            "leave" => MembershipAction::Leave,
            "invite" => MembershipAction::Invite,
            "ban" => MembershipAction::Ban,
            "knock" => MembershipAction::Knock,
            _ => return None,
        })
    }

    /// The `membership` of the resulting event.
    pub fn membership(self) -> &'static str {
        match self {
            MembershipAction::Join => "join",
            MembershipAction::Leave | MembershipAction::Kick | MembershipAction::Unban => "leave",
            MembershipAction::Invite => "invite",
            MembershipAction::Ban => "ban",
            MembershipAction::Knock => "knock",
        }
    }
}

/// One membership change asked of the server.
#[derive(Clone, Debug)]
pub struct MembershipChange {
    /// Whose membership changes.
    pub target: OwnedUserId,
    pub action: MembershipAction,
    /// The content the client asked for (`reason`, `is_direct`, a per-room profile, ...);
    /// `membership` and `join_authorised_via_users_server` are the server's to set.
    pub content: Map<String, Value>,
    /// Whether the join, knock and invite rate limits apply (off for changes the server
    /// makes on a user's behalf, and for `createRoom`, which limits its invites as a batch).
    pub ratelimit: bool,
}

impl MembershipChange {
    /// A rate-limited change with only a `reason` (the membership endpoints).
    pub fn new(target: &UserId, action: MembershipAction, reason: Option<&str>) -> MembershipChange {
        let mut content = Map::new();
        if let Some(reason) = reason {
            content.insert("reason".to_owned(), json!(reason));
        }
        MembershipChange { target: target.to_owned(), action, content, ratelimit: true }
    }
}

impl MembershipChange {
    /// The change a client's `m.room.member` event (state key and content) asks for.
    pub fn from_member_event(state_key: &str, content: Value) -> Result<MembershipChange> {
        let target = UserId::parse(state_key).map_err(|_| {
            MatrixError::invalid_param(format!(
                "The state key of a member event must be a user ID, not {state_key:?}"
            ))
        })?;
        let Value::Object(content) = content else {
            return Err(MatrixError::bad_json("Content must be an object").into());
        };
        let action = match content.get("membership") {
            Some(Value::String(membership)) => MembershipAction::from_membership(membership)
                .ok_or_else(|| MatrixError::bad_json(format!("Unknown membership {membership:?}")))?,
            _ => return Err(MatrixError::bad_json("membership must be a string").into()),
        };
        Ok(MembershipChange { target, action, content, ratelimit: true })
    }
}

/// What a membership change comes to.
pub(crate) enum MemberEvent {
    /// The member event to send.
    New(EventDraft),
    /// The current member event already says it all (same sender and content).
    Unchanged(OwnedEventId),
}

fn not_found_room() -> Error {
    MatrixError::not_found("No known servers: this server does not know the room").into()
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
            let room_id = self
                .local_alias_room(&alias)
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
        self.room_head_snapshot(room_id).await?.ok_or_else(not_found_room)
    }

    async fn current_membership(&self, head: &RoomHead, user_id: &UserId) -> Result<Option<String>> {
        let Some(pdu) = self.current_state_pdu(head, "m.room.member", user_id.as_str()).await? else {
            return Ok(None);
        };
        Ok(pdu.content_value().get("membership").and_then(Value::as_str).map(str::to_owned))
    }

    /// For a restricted room: the local member who vouches for `user_id`'s join. The user
    /// must be joined to one of the rooms the join rule allows; the authoriser must be a
    /// local member of this room who may invite. A `claimed` authoriser (from the client) is
    /// checked like one the server picks, never taken as it is. `None` when the join rule is
    /// not restricted.
    async fn restricted_join_authoriser(
        &self,
        head: &RoomHead,
        user_id: &UserId,
        claimed: Option<&Value>,
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
        if let Some(claimed) = claimed {
            let authoriser = claimed
                .as_str()
                .and_then(|user| UserId::parse(user).ok())
                .filter(|user| user.server_name().as_str() == self.server_name());
            if let Some(authoriser) = authoriser
                && self.current_membership(head, &authoriser).await?.as_deref() == Some("join")
                && levels.can_invite(&authoriser)
            {
                return Ok(Some(authoriser));
            }
            return Err(MatrixError::forbidden(format!(
                "{AUTHORISING_USER} must be a member of this server in the room who may invite"
            ))
            .into());
        }
        for member in self.store.room_members(head.room_id.as_str(), "join").await? {
            let Ok(member) = UserId::parse(&member) else { continue };
            if member.server_name().as_str() == self.server_name() && levels.can_invite(&member) {
                return Ok(Some(member));
            }
        }
        Err(MatrixError::forbidden("No member of this server may authorise joining this restricted room")
            .into())
    }

    /// Every membership change a local user makes, whichever endpoint it comes from (the
    /// membership endpoints, a state `PUT` of `m.room.member`, auto-join, deactivation,
    /// profile changes): checks it with [`Self::membership_event`] and sends it. Returns the
    /// member event (the current one when nothing changes).
    pub async fn update_membership(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        change: MembershipChange,
    ) -> Result<OwnedEventId> {
        // A shadow-banned user's invites look sent but are not (Synapse's `ShadowBanError`);
        // their joins and leaves go through.
        if change.action == MembershipAction::Invite && requester.shadow_banned {
            return super::send::shadow_ban_event_id();
        }
        let head = self.known_room(room_id).await?;
        let event_id = match self.membership_event(requester, &head, &change).await? {
            MemberEvent::Unchanged(event_id) => event_id,
            // An invite of another server's user goes to its server first (`federation::invite`).
            MemberEvent::New(draft)
                if change.action == MembershipAction::Invite
                    && change.target.server_name().as_str() != self.server_name() =>
            {
                self.invite_remote_user(room_id, &requester.user_id, &change.target, draft).await?
            }
            MemberEvent::New(draft) => {
                self.send_event(room_id, &requester.user_id, draft, None).await?.event_id.clone()
            }
        };
        if change.action == MembershipAction::Leave
            && change.target == requester.user_id
            && self.config.room.forget_rooms_on_leave
        {
            self.forget_room_for(&requester.user_id, room_id).await?;
        }
        Ok(event_id)
    }

    /// The membership rules, in one place, for a change on top of `head` (the room's current
    /// head, or the private head of a room being created or upgraded): who may change whose
    /// membership from what to what, bans, guest access, restricted join rules (the
    /// authorising user is chosen or checked by the server), `block_non_admin_invites`, that
    /// local invitees exist, profile filling, and the join, knock and invite rate limits
    /// (unless `change.ratelimit` is off). The authorization rules are checked when the event
    /// is prepared.
    pub(crate) async fn membership_event(
        &self,
        requester: &Requester,
        head: &RoomHead,
        change: &MembershipChange,
    ) -> Result<MemberEvent> {
        let sender = &requester.user_id;
        let target = &change.target;
        let mut content = change.content.clone();
        let claimed_authoriser = content.remove(AUTHORISING_USER);
        for key in ["displayname", "avatar_url"] {
            match content.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(value)) => {
                    let too_long = match key {
                        "displayname" => value.chars().count() > MAX_DISPLAYNAME_LEN,
                        _ => value.len() > MAX_AVATAR_URL_LEN,
                    };
                    if too_long {
                        return Err(MatrixError::bad_json(format!("{key} is too long")).into());
                    }
                    // `max_avatar_size` and `allowed_avatar_mimetypes` hold for the avatar of
                    // every member event too (as Synapse's `update_membership_locked`).
                    if key == "avatar_url" {
                        self.check_avatar(value).await?;
                    }
                }
                Some(_) => return Err(MatrixError::bad_json(format!("{key} must be a string")).into()),
            }
        }
        let current_event = self.current_state_pdu(head, "m.room.member", target.as_str()).await?;
        let current = current_event
            .as_ref()
            .and_then(|pdu| pdu.content_value().get("membership").and_then(Value::as_str).map(str::to_owned));
        // Leaving on someone else's behalf is a kick, or an unban if they are banned.
        let action = match change.action {
            MembershipAction::Leave if target != sender && current.as_deref() == Some("ban") => {
                MembershipAction::Unban
            }
            MembershipAction::Leave if target != sender => MembershipAction::Kick,
            action => action,
        };
        let is_local = target.server_name().as_str() == self.server_name();
        if matches!(action, MembershipAction::Join | MembershipAction::Invite | MembershipAction::Knock) {
            self.check_room_not_blocked(&head.room_id).await?;
        }
        self.admit_client_write(requester, ClientWrite::Membership { action, room_id: &head.room_id })
            .await?;
        match action {
            MembershipAction::Join | MembershipAction::Knock if target != sender => {
                return Err(MatrixError::forbidden("Users can only join or knock for themselves").into());
            }
            MembershipAction::Invite => self.check_may_invite(requester)?,
            _ => {}
        }
        // Invitees of this server must exist, or be vouched for by the appservice whose
        // namespace holds them (asked as Synapse asks before handing over the invite). Bans
        // need not (a ban may come before the user, as Synapse allows); a kick needs the
        // target in the room, checked below.
        if action == MembershipAction::Invite
            && is_local
            && !self.query_appservice_user(target.as_str()).await?
        {
            return Err(MatrixError::not_found(format!("User {target} not found")).into());
        }
        let yourself = target == sender;
        // An invite to a server notices room cannot be rejected (it can be left once joined).
        if action == MembershipAction::Leave
            && yourself
            && current.as_deref() == Some("invite")
            && self.is_server_notices_room(&head.room_id).await?
        {
            return Err(MatrixError::new(
                ErrCode::CannotLeaveServerNoticeRoom,
                "You cannot reject this invite",
            )
            .into());
        }
        match (action, current.as_deref()) {
            (MembershipAction::Join | MembershipAction::Knock | MembershipAction::Leave, Some("ban"))
                if yourself =>
            {
                return Err(MatrixError::forbidden("You are banned from this room").into());
            }
            (MembershipAction::Invite, Some("ban")) => {
                return Err(MatrixError::forbidden(format!("{target} is banned from the room")).into());
            }
            (MembershipAction::Invite, Some("join")) => {
                return Err(MatrixError::forbidden(format!("{target} is already in the room")).into());
            }
            (MembershipAction::Leave, None | Some("leave")) => {
                return Err(MatrixError::forbidden("You are not a member of this room").into());
            }
            (MembershipAction::Kick, current) if !matches!(current, Some("join" | "invite" | "knock")) => {
                return Err(MatrixError::forbidden(format!("{target} is not in the room")).into());
            }
            (MembershipAction::Unban, current) if current != Some("ban") => {
                return Err(MatrixError::forbidden(format!("{target} is not banned")).into());
            }
            (MembershipAction::Knock, Some("join")) => {
                return Err(MatrixError::forbidden("You are already in the room").into());
            }
            (MembershipAction::Knock, Some("invite")) => {
                return Err(MatrixError::forbidden("You are already invited to the room").into());
            }
            _ => {}
        }
        let membership = action.membership();
        content.insert("membership".to_owned(), json!(membership));
        let newly_joined = action == MembershipAction::Join && current.as_deref() != Some("join");
        if newly_joined && requester.is_guest {
            let guest_access = self.current_state_pdu(head, "m.room.guest_access", "").await?;
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
        // The authorising user of a restricted join is the server's to choose or check; it is
        // dropped from every other member event (it would not be checked there).
        if newly_joined
            && current.as_deref() != Some("invite")
            && head.rules.authorization.restricted_join_rule
            && let Some(authoriser) =
                self.restricted_join_authoriser(head, target, claimed_authoriser.as_ref()).await?
        {
            content.insert(AUTHORISING_USER.to_owned(), json!(authoriser));
        }
        if matches!(membership, "join" | "invite" | "knock") {
            let profile = self.store.get_profile(target.as_str()).await?;
            for key in ["displayname", "avatar_url"] {
                if !content.contains_key(key)
                    && let Some(value) = profile.get(key).filter(|v| v.is_string())
                {
                    content.insert(key.to_owned(), value.clone());
                }
            }
        }
        // The same member event again (its authorising user aside) changes nothing.
        if let Some(current_event) = &current_event
            && current_event.sender == *sender
            && let Value::Object(mut current_content) = current_event.content_value()
        {
            if !content.contains_key(AUTHORISING_USER) {
                current_content.remove(AUTHORISING_USER);
            }
            if current_content == content {
                return Ok(MemberEvent::Unchanged(current_event.event_id.clone()));
            }
        }
        if change.ratelimit {
            match action {
                MembershipAction::Join if newly_joined => {
                    self.ratelimit_user(Limiter::JoinsLocal, requester).await?;
                    self.ratelimit_key(Limiter::JoinsPerRoom, head.room_id.as_str(), true)?;
                }
                MembershipAction::Knock => self.ratelimit_user(Limiter::JoinsLocal, requester).await?,
                MembershipAction::Invite => {
                    self.ratelimit_invites(requester, &head.room_id, std::slice::from_ref(target)).await?;
                }
                _ => {}
            }
            // Like every client event, a membership change also counts against `rc_message`
            // (Synapse applies its request limiter to each client event it persists).
            self.ratelimit_user(Limiter::Message, requester).await?;
        }
        Ok(MemberEvent::New(EventDraft::state("m.room.member", target.as_str(), Value::Object(content))))
    }

    /// `rc_invites` for invites from `requester` to `targets` in a room: per room, per
    /// invitee and per issuer. Every limit is checked before any is counted, so a refused
    /// batch (a `createRoom` invite list) counts nothing.
    pub(crate) async fn ratelimit_invites(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        targets: &[OwnedUserId],
    ) -> Result<()> {
        let n_invites = targets.len() as f64;
        for update in [false, true] {
            self.ratelimit_key_actions(Limiter::InvitesPerRoom, room_id.as_str(), n_invites, update)?;
            for target in targets {
                self.ratelimit_key_actions(Limiter::InvitesPerUser, target.as_str(), 1.0, update)?;
            }
            self.ratelimit_user_actions(Limiter::InvitesPerIssuer, requester, n_invites, update).await?;
        }
        Ok(())
    }

    /// `POST /join/{roomIdOrAlias}` and `/rooms/{roomId}/join`. Joining a room one is in
    /// changes nothing.
    pub async fn join_room(
        &self,
        requester: &Requester,
        id_or_alias: &str,
        reason: Option<&str>,
    ) -> Result<OwnedRoomId> {
        self.join_room_via(requester, id_or_alias, reason, &[]).await
    }

    /// [`Self::join_room`] with the servers to try (`via` / `server_name`) when this server is
    /// not in the room: then the join goes through one of them (`federation::join`).
    pub async fn join_room_via(
        &self,
        requester: &Requester,
        id_or_alias: &str,
        reason: Option<&str>,
        via: &[ruma::OwnedServerName],
    ) -> Result<OwnedRoomId> {
        let (room_id, alias_servers) = self.resolve_join_target(id_or_alias).await?;
        self.check_room_not_blocked(&room_id).await?;
        if let Some(servers) =
            self.remote_join_servers(&requester.user_id, &room_id, via, &alias_servers).await?
            && self.remote_join(requester, &room_id, servers, reason).await?
        {
            return Ok(room_id);
        }
        let head = self.known_room(&room_id).await?;
        if self.current_membership(&head, &requester.user_id).await?.as_deref() == Some("join") {
            return Ok(room_id);
        }
        let change = MembershipChange::new(&requester.user_id, MembershipAction::Join, reason);
        self.update_membership(requester, &room_id, change).await?;
        Ok(room_id)
    }

    /// `POST /rooms/{roomId}/leave` (also rejects an invite or rescinds a knock).
    pub async fn leave_room(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        reason: Option<&str>,
    ) -> Result<()> {
        if let Some(servers) = self.remote_leave_servers(&requester.user_id, room_id).await?
            && self.remote_leave(&requester.user_id, room_id, servers, reason).await?.is_some()
        {
            return Ok(());
        }
        let change = MembershipChange::new(&requester.user_id, MembershipAction::Leave, reason);
        self.update_membership(requester, room_id, change).await?;
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
        let mut change = MembershipChange::new(&target, MembershipAction::Invite, reason);
        if is_direct {
            change.content.insert("is_direct".to_owned(), json!(true));
        }
        self.update_membership(requester, room_id, change).await?;
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
        let change = MembershipChange::new(&target, MembershipAction::Kick, reason);
        self.update_membership(requester, room_id, change).await?;
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
        let change = MembershipChange::new(&target, MembershipAction::Ban, reason);
        self.update_membership(requester, room_id, change).await?;
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
        let change = MembershipChange::new(&target, MembershipAction::Unban, reason);
        self.update_membership(requester, room_id, change).await?;
        Ok(())
    }

    /// `POST /knock/{roomIdOrAlias}`.
    pub async fn knock_room(
        &self,
        requester: &Requester,
        id_or_alias: &str,
        reason: Option<&str>,
    ) -> Result<OwnedRoomId> {
        self.knock_room_via(requester, id_or_alias, reason, &[]).await
    }

    /// [`Self::knock_room`] with the servers to try (`via`) when no local user is in the
    /// room: then the knock goes through one of them (`federation::knock`).
    pub async fn knock_room_via(
        &self,
        requester: &Requester,
        id_or_alias: &str,
        reason: Option<&str>,
        via: &[ruma::OwnedServerName],
    ) -> Result<OwnedRoomId> {
        let (room_id, alias_servers) = self.resolve_join_target(id_or_alias).await?;
        if let Some(servers) =
            self.remote_join_servers(&requester.user_id, &room_id, via, &alias_servers).await?
        {
            self.remote_knock(requester, &room_id, servers, reason).await?;
            return Ok(room_id);
        }
        let change = MembershipChange::new(&requester.user_id, MembershipAction::Knock, reason);
        self.update_membership(requester, &room_id, change).await?;
        Ok(room_id)
    }

    /// `PUT /rooms/{roomId}/state/m.room.member/{userId}`: the membership change the content
    /// names, under the same rules as the membership endpoints (as Synapse does).
    pub(crate) async fn send_member_state(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        state_key: &str,
        content: Value,
    ) -> Result<OwnedEventId> {
        let change = MembershipChange::from_member_event(state_key, content)?;
        self.update_membership(requester, room_id, change).await
    }

    /// `POST /rooms/{roomId}/forget`.
    pub async fn forget_room(&self, requester: &Requester, room_id: &RoomId) -> Result<()> {
        match self.store.membership(room_id.as_str(), requester.user_id.as_str()).await?.as_deref() {
            Some("join") | Some("invite") | Some("knock") => {
                Err(MatrixError::unknown("You are still in the room; leave it first").into())
            }
            None => Err(MatrixError::not_found("You were never in this room").into()),
            _ => self.forget_room_for(&requester.user_id, room_id).await,
        }
    }

    /// Forgets a room for a user: room lists no longer show it. Their cached memberships are
    /// dropped, so that what was worked out of them (a sliding sync room list) is too. Runs on a
    /// task of its own: a caller dropped while the write waits for its commit must not leave
    /// the forget committed and the cache holding the room.
    pub(crate) async fn forget_room_for(&self, user_id: &UserId, room_id: &RoomId) -> Result<()> {
        let services = self.clone();
        let (user_id, room_id) = (user_id.to_owned(), room_id.to_owned());
        tokio::spawn(async move {
            services.store.forget_room(user_id.as_str(), room_id.as_str()).await?;
            services.rooms.user_rooms.invalidate(&user_id);
            Ok::<(), Error>(())
        })
        .await
        .map_err(Error::internal)?
    }

    /// Re-sends the user's member events in every joined room after a profile change.
    pub async fn propagate_profile(&self, user_id: &UserId) -> Result<()> {
        for room in self.store.rooms_for_user(user_id.as_str(), "join").await? {
            let Ok(room_id) = RoomId::parse(&room) else { continue };
            let Some(head) = self.room_head_snapshot(&room_id).await? else { continue };
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
            let Value::Object(content) = content else { continue };
            let change = MembershipChange {
                target: user_id.to_owned(),
                action: MembershipAction::Join,
                content,
                ratelimit: false,
            };
            if changed
                && let Err(error) =
                    self.update_membership(&Requester::acting_as(user_id), &room_id, change).await
            {
                tracing::warn!(%room_id, %error, "could not update the member event after a profile change");
            }
        }
        Ok(())
    }

    /// Leaves every room (joined, invited or knocked) — for deactivated accounts. Tries every
    /// room, then fails with the first error if any leave failed (the caller must not go on as
    /// if the user had left; a retry leaves the rooms still left to leave).
    pub async fn leave_all_rooms(&self, user_id: &UserId) -> Result<()> {
        let mut first_error = None;
        let mut failed = 0usize;
        for membership in ["join", "invite", "knock"] {
            for room in self.store.rooms_for_user(user_id.as_str(), membership).await? {
                let room_id = match RoomId::parse(&room) {
                    Ok(room_id) => room_id,
                    Err(error) => {
                        failed += 1;
                        first_error
                            .get_or_insert(Error::internal(format!("stored room ID {room:?}: {error}")));
                        continue;
                    }
                };
                let mut change = MembershipChange::new(user_id, MembershipAction::Leave, None);
                change.ratelimit = false;
                if let Err(error) =
                    self.update_membership(&Requester::acting_as(user_id), &room_id, change).await
                {
                    tracing::warn!(%room_id, %error, "could not leave a room of a deactivated user");
                    failed += 1;
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some(error) => {
                tracing::error!(%user_id, failed, "could not leave every room of a deactivated user");
                Err(error)
            }
        }
    }

    /// Joins a new user to `auto_join_rooms`, creating missing local alias rooms when
    /// `autocreate_auto_join_rooms` is on.
    pub async fn auto_join_rooms(&self, user_id: &UserId, is_guest: bool) -> Result<()> {
        let registration = &self.config.registration;
        if registration.auto_join_rooms.is_empty() || (is_guest && !registration.auto_join_rooms_for_guests) {
            return Ok(());
        }
        let requester = Requester { is_guest, ..Requester::acting_as(user_id) };
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
