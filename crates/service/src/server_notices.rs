//! Server notices (`server_notices` config, `POST /_synapse/admin/v1/send_server_notice`):
//! messages from a system user into one room per user, as Synapse's `ServerNoticesManager`.
//!
//! - The system user (`system_mxid_localpart`) is created on first use, with the configured
//!   display name and avatar and no rate limits (an override of 0).
//! - A user's notices room is a room the system user is joined to and the user is joined to
//!   or invited to. When there is none (first notice, or the user left), a new private room
//!   is made by the system user with `users_default: -10` (so the user cannot send there),
//!   the configured name, topic and avatar, and the `m.server_notice` tag in the user's
//!   account data; the user is invited (and joined with `auto_join`).
//! - The notice goes through the one write path as the system user; a transaction ID makes
//!   the send idempotent.
//! - An invite to a notices room cannot be rejected (`M_CANNOT_LEAVE_SERVER_NOTICE_ROOM`).
//! - Finding or making a user's room and inviting them happen under one lock
//!   ([`ServerNotices`]), so concurrent notices to a new user make one room.

use myelin_config::ServerNoticesConfig;
use myelin_core::{ErrCode, MatrixError};
use myelin_store::{NewUser, RateLimitOverride};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::auth::Requester;
use crate::rooms::create::CreateRoomRequest;
use crate::rooms::membership::{MembershipAction, MembershipChange};
use crate::rooms::{EventDraft, TxnKey};
use crate::{Error, Result, Services};

/// The room tag a notices room carries in its user's account data.
pub const SERVER_NOTICE_TAG: &str = "m.server_notice";

/// The in-memory part of server notices: a lock held while a user's notices room is found,
/// made and the user invited, so concurrent notices to one user make one room.
#[derive(Default)]
pub struct ServerNotices {
    rooms: tokio::sync::Mutex<()>,
}

/// One notice to send.
#[derive(Clone, Debug)]
pub struct ServerNotice {
    pub user_id: OwnedUserId,
    pub kind: String,
    pub state_key: Option<String>,
    pub content: Value,
}

impl Services {
    fn server_notices_config(&self) -> Result<&ServerNoticesConfig> {
        self.config.server_notices.as_ref().ok_or_else(|| {
            MatrixError::new(ErrCode::Unknown, "Server notices are not enabled on this server").into()
        })
    }

    /// The system user's ID, when server notices are configured.
    pub fn server_notices_user(&self) -> Option<OwnedUserId> {
        let config = self.config.server_notices.as_ref()?;
        UserId::parse(format!("@{}:{}", config.system_mxid_localpart, self.server_name())).ok()
    }

    /// Whether `room_id` is a server notices room (the system user is joined to it).
    pub(crate) async fn is_server_notices_room(&self, room_id: &RoomId) -> Result<bool> {
        let Some(system) = self.server_notices_user() else { return Ok(false) };
        Ok(self.store.membership(room_id.as_str(), system.as_str()).await?.as_deref() == Some("join"))
    }

    /// `POST /_synapse/admin/v1/send_server_notice` and `PUT .../{txnId}`: sends a notice
    /// to a local user and returns its event ID.
    pub async fn send_server_notice(
        &self,
        requester: &Requester,
        notice: ServerNotice,
        txn_id: Option<&str>,
    ) -> Result<OwnedEventId> {
        let txn = txn_id.map(|txn_id| TxnKey {
            device: requester.device_id.clone().unwrap_or_else(|| format!("token:{}", requester.token_hash)),
            scope: format!("send_server_notice/{}", requester.user_id),
            txn_id: txn_id.to_owned(),
        });
        let user_id = notice.user_id.clone();
        let event_id = self.deliver_server_notice(notice, txn).await?;
        tracing::info!(admin_user = %requester.user_id, %user_id, "sent a server notice");
        Ok(event_id)
    }

    /// Sends a notice to a local user into their notices room (made and the user invited
    /// when needed): what the admin API and the consent notices share.
    pub(crate) async fn deliver_server_notice(
        &self,
        notice: ServerNotice,
        txn: Option<TxnKey>,
    ) -> Result<OwnedEventId> {
        let config = self.server_notices_config()?;
        let user_id = &notice.user_id;
        if user_id.server_name().as_str() != self.server_name() {
            return Err(MatrixError::invalid_param("Server notices can only be sent to local users").into());
        }
        if self.store.get_user(user_id.as_str()).await?.is_none() {
            return Err(MatrixError::not_found("User not found").into());
        }
        let rooms_lock = self.server_notices.rooms.lock().await;
        let system = self.ensure_server_notices_user(config).await?;
        let room_id = match self.notices_room_of(user_id, &system).await? {
            Some(room_id) => room_id,
            None => self.create_notices_room(config, user_id, &system).await?,
        };
        self.invite_to_notices_room(config, user_id, &system, &room_id).await?;
        drop(rooms_lock);
        let draft = match &notice.state_key {
            Some(state_key) => EventDraft::state(&notice.kind, state_key, notice.content),
            None => EventDraft::message(&notice.kind, notice.content),
        };
        let pdu = self.send_event(&room_id, &system, draft, txn).await?;
        tracing::debug!(%user_id, %room_id, "sent a server notice");
        Ok(pdu.event_id.clone())
    }

    /// The system user, created (without a password, without rate limits) if missing.
    async fn ensure_server_notices_user(&self, config: &ServerNoticesConfig) -> Result<OwnedUserId> {
        let system = self.server_notices_user().ok_or_else(|| {
            Error::internal("server_notices.system_mxid_localpart is not a valid localpart")
        })?;
        if self.store.get_user(system.as_str()).await?.is_some() {
            return Ok(system);
        }
        let created = self
            .store
            .create_user(&NewUser {
                user_id: system.to_string(),
                displayname: config.system_mxid_display_name.clone(),
                ..NewUser::default()
            })
            .await?;
        if created {
            if let Some(avatar_url) = &config.system_mxid_avatar_url {
                self.store.set_profile_field(system.as_str(), "avatar_url", Some(&json!(avatar_url))).await?;
            }
            self.store
                .set_ratelimit_override(
                    system.as_str(),
                    Some(RateLimitOverride { messages_per_second: 0, burst_count: 0 }),
                )
                .await?;
            self.ratelimiter.forget_override(system.as_str());
            tracing::info!(%system, "created the server notices user");
        }
        Ok(system)
    }

    /// The user's notices room: one the system user is joined to and the user is joined or
    /// invited to.
    async fn notices_room_of(&self, user_id: &UserId, system: &UserId) -> Result<Option<OwnedRoomId>> {
        for membership in ["join", "invite"] {
            for room_id in self.store.rooms_for_user(user_id.as_str(), membership).await? {
                if self.store.membership(&room_id, system.as_str()).await?.as_deref() == Some("join") {
                    return Ok(Some(RoomId::parse(&room_id).map_err(Error::internal)?));
                }
            }
        }
        Ok(None)
    }

    async fn create_notices_room(
        &self,
        config: &ServerNoticesConfig,
        user_id: &UserId,
        system: &UserId,
    ) -> Result<OwnedRoomId> {
        let mut power_levels = Map::new();
        power_levels.insert("users_default".to_owned(), json!(-10));
        let initial_state = match &config.room_avatar_url {
            Some(url) => vec![("m.room.avatar".to_owned(), String::new(), json!({ "url": url }))],
            None => Vec::new(),
        };
        let request = CreateRoomRequest {
            preset: Some("private_chat".to_owned()),
            visibility: None,
            room_alias_name: None,
            name: config.room_name.clone().filter(|name| !name.is_empty()),
            topic: config.room_topic.clone().filter(|topic| !topic.is_empty()),
            invite: Vec::new(),
            invite_3pid: Vec::new(),
            is_direct: false,
            creation_content: None,
            initial_state,
            power_level_content_override: Some(power_levels),
            room_version: None,
        };
        let room_id = self.create_room(&Requester::acting_as(system), request).await?;
        let mut tags = self.tags(user_id, &room_id).await?;
        tags.insert(SERVER_NOTICE_TAG.to_owned(), json!({}));
        self.put_account_data(user_id, Some(&room_id), "m.tag", &json!({ "tags": tags })).await?;
        tracing::info!(%user_id, %room_id, "created a server notices room");
        Ok(room_id)
    }

    /// Invites the user unless they are joined or invited already; with `auto_join`, joins
    /// them too.
    async fn invite_to_notices_room(
        &self,
        config: &ServerNoticesConfig,
        user_id: &UserId,
        system: &UserId,
        room_id: &RoomId,
    ) -> Result<()> {
        let current = self.store.membership(room_id.as_str(), user_id.as_str()).await?;
        if matches!(current.as_deref(), Some("join" | "invite")) {
            return Ok(());
        }
        let mut invite = MembershipChange::new(user_id, MembershipAction::Invite, None);
        invite.ratelimit = false;
        self.update_membership(&Requester::acting_as(system), room_id, invite).await?;
        if config.auto_join {
            let mut join = MembershipChange::new(user_id, MembershipAction::Join, None);
            join.ratelimit = false;
            self.update_membership(&Requester::acting_as(user_id), room_id, join).await?;
        }
        Ok(())
    }
}
