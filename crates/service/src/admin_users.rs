//! The admin API's user management (`/_synapse/admin/.../users`, `deactivate`, `whois`): reads
//! and changes of local accounts for server admins and the tools they run. Every change goes
//! through the same service paths as the users' own requests (deactivation leaves rooms and
//! deletes devices through `accounts`).

use myelin_core::MatrixError;
use myelin_store::{
    AdminUserChanges, NewAccessToken, UserListEntry, UserListQuery, UserRecord, UserReportRecord,
    UserReportsQuery,
};
use ruma::{OwnedRoomId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::auth::{Requester, hash_token, mint_token};
use crate::records::DeviceRecord;
use crate::rooms::EventDraft;
use crate::{Error, Result, Services};

/// The per-user experimental features Synapse's admin API knows.
pub const EXPERIMENTAL_FEATURES: [&str; 3] = ["msc3881", "msc3575", "msc4222"];

/// A user's account data as the admin API lists it: global, and per room.
#[derive(Clone, Debug, Default)]
pub struct AdminAccountData {
    pub global: Map<String, Value>,
    pub rooms: Map<String, Value>,
}

/// What `POST /_synapse/admin/v1/user/{userId}/redact` asks for.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UserRedactionRequest {
    /// The rooms to redact in; empty: every room the user is joined to or banned from.
    pub rooms: Vec<String>,
    pub reason: Option<String>,
    /// At most this many events per room (Synapse's default: 1000).
    pub limit: Option<i64>,
    /// Redact as the admin rather than as the user.
    pub use_admin: bool,
    pub before_ts: Option<i64>,
    pub after_ts: Option<i64>,
}

/// The state of a user-redaction task.
#[derive(Clone, Debug, PartialEq)]
pub enum UserRedactionStatus {
    Scheduled,
    Active,
    /// Done; the events whose redaction failed, with why.
    Complete {
        failed_redactions: Map<String, Value>,
    },
    Failed {
        error: String,
    },
}

/// The event types a user redaction covers (Synapse's `_redact_all_events`).
const REDACTED_KINDS: [&str; 3] = ["m.room.member", "m.room.message", "m.room.encrypted"];

/// One local user as `GET /_synapse/admin/v2/users/{userId}` describes it.
#[derive(Clone, Debug)]
pub struct AdminUserDetails {
    pub user: UserRecord,
    pub profile: Map<String, Value>,
    pub last_seen_ts: Option<i64>,
}

/// What `PUT /_synapse/admin/v2/users/{userId}` sets; `None` leaves a field as it is (on
/// creation: the default).
#[derive(Clone, Debug, Default)]
pub struct AdminUserUpdate {
    pub password: Option<String>,
    pub logout_devices: bool,
    pub displayname: Option<Value>,
    pub avatar_url: Option<Value>,
    pub admin: Option<bool>,
    pub deactivated: Option<bool>,
    pub locked: Option<bool>,
    /// `Some(None)`: clear the type.
    pub user_type: Option<Option<String>>,
}

impl Services {
    /// A local user ID, `400 M_INVALID_PARAM` otherwise (Synapse's "Can only look up local users").
    fn local_user<'a>(&self, user_id: &'a UserId) -> Result<&'a UserId> {
        if user_id.server_name().as_str() != self.server_name() {
            return Err(MatrixError::invalid_param("Can only look up local users").into());
        }
        Ok(user_id)
    }

    /// A local account that exists, `404 M_NOT_FOUND` otherwise.
    async fn existing_user(&self, user_id: &UserId) -> Result<UserRecord> {
        self.local_user(user_id)?;
        self.store
            .get_user(user_id.as_str())
            .await?
            .ok_or_else(|| MatrixError::not_found("User not found").into())
    }

    /// `GET /_synapse/admin/v2/users`: a page of local users and how many match in all.
    pub async fn admin_list_users(&self, query: &UserListQuery) -> Result<(Vec<UserListEntry>, i64)> {
        Ok(self.store.list_users(query).await?)
    }

    /// `GET /_synapse/admin/v2/users/{userId}`.
    pub async fn admin_user_details(&self, user_id: &UserId) -> Result<AdminUserDetails> {
        let user = self.existing_user(user_id).await?;
        let profile = self.store.get_profile(user_id.as_str()).await?;
        let last_seen_ts =
            self.store.list_devices(user_id.as_str()).await?.iter().filter_map(|d| d.last_seen_ts).max();
        Ok(AdminUserDetails { user, profile, last_seen_ts })
    }

    /// `GET /_synapse/admin/v1/users/{userId}/admin`.
    pub async fn admin_is_admin(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.existing_user(user_id).await?.admin)
    }

    /// `PUT /_synapse/admin/v1/users/{userId}/admin`: an admin may not demote themself (as
    /// Synapse refuses).
    pub async fn admin_set_admin(&self, requester: &Requester, user_id: &UserId, admin: bool) -> Result<()> {
        self.existing_user(user_id).await?;
        if requester.user_id == user_id && !admin {
            return Err(MatrixError::bad_json("You may not demote yourself.").into());
        }
        self.store.set_admin(user_id.as_str(), admin).await?;
        self.auth_cache.evict_user(user_id);
        tracing::info!(admin_user = %requester.user_id, %user_id, admin, "admin changed a user's admin flag");
        Ok(())
    }

    /// `POST /_synapse/admin/v1/deactivate/{userId}`: deactivates (and with `erase`, erases) a
    /// local account through the one deactivation path. Deactivating a deactivated account
    /// again does nothing more (erasing it still marks it erased), as Synapse.
    pub async fn admin_deactivate(&self, requester: &Requester, user_id: &UserId, erase: bool) -> Result<()> {
        let user = self.existing_user(user_id).await?;
        if user.deactivated && (user.erased || !erase) {
            return Ok(());
        }
        tracing::info!(admin_user = %requester.user_id, %user_id, erase, "admin deactivates a user");
        self.deactivate_user(user_id, erase).await
    }

    /// `GET /_synapse/admin/v1/users/{userId}/joined_rooms`.
    pub async fn admin_joined_rooms(&self, user_id: &UserId) -> Result<Vec<String>> {
        self.local_user(user_id)?;
        Ok(self.store.rooms_for_user(user_id.as_str(), "join").await?)
    }

    /// `GET /_synapse/admin/v1/whois/{userId}`: the user's devices and their last connections.
    /// Admins may ask about anyone local; other users only about themselves (as Synapse).
    pub async fn admin_whois(&self, requester: &Requester, user_id: &UserId) -> Result<Vec<DeviceRecord>> {
        if requester.user_id != user_id && !requester.is_admin {
            return Err(MatrixError::forbidden("You are not a server admin").into());
        }
        self.local_user(user_id)?;
        Ok(self.store.list_devices(user_id.as_str()).await?)
    }

    /// `PUT /_synapse/admin/v2/users/{userId}`: creates the account (returns `true`) or changes
    /// what the update names, each through the path the user's own request takes (profile
    /// changes reach the rooms, a new password logs the other devices out when asked,
    /// deactivation leaves rooms).
    pub async fn admin_upsert_user(
        &self,
        requester: &Requester,
        user_id: &UserId,
        update: AdminUserUpdate,
    ) -> Result<bool> {
        if user_id.server_name().as_str() != self.server_name() {
            return Err(MatrixError::bad_json("This endpoint can only be used with local users").into());
        }
        if let Some(Some(user_type)) = &update.user_type
            && !crate::accounts::USER_TYPES.contains(&user_type.as_str())
        {
            return Err(MatrixError::bad_json("Invalid user type").into());
        }
        if update.password.as_ref().is_some_and(|p| p.len() > 512 || p.contains('\0')) {
            return Err(MatrixError::bad_json("Invalid password").into());
        }
        if update.deactivated == Some(true) && update.locked == Some(true) {
            return Err(MatrixError::bad_json("An user can't be deactivated and locked").into());
        }
        let Some(user) = self.store.get_user(user_id.as_str()).await? else {
            self.admin_create_user(requester, user_id, update).await?;
            return Ok(true);
        };
        // Everything is checked first, then written in one transaction, so a refused change
        // leaves the account as it was; what follows from the change (member events with the
        // new profile, logging devices out, leaving rooms) comes after.
        let mut changes = AdminUserChanges::default();
        let mut profile = self.store.get_profile(user_id.as_str()).await?;
        for (key, value) in [("displayname", &update.displayname), ("avatar_url", &update.avatar_url)] {
            if let Some(value) = value {
                self.check_profile_value(key, value).await?;
                if profile.get(key) != Some(value) {
                    profile.insert(key.to_owned(), value.clone());
                    changes.profile.push((key.to_owned(), Some(value.clone())));
                }
            }
        }
        if Value::Object(profile).to_string().len() > crate::profile::MAX_PROFILE_SIZE {
            return Err(MatrixError::new(
                myelin_core::ErrCode::ProfileTooLarge,
                "The profile would exceed 64 KiB",
            )
            .into());
        }
        if let Some(admin) = update.admin
            && admin != user.admin
        {
            if requester.user_id == user_id && !admin {
                return Err(MatrixError::bad_json("You may not demote yourself.").into());
            }
            changes.admin = Some(admin);
        }
        if let Some(password) = &update.password {
            changes.password_hash = Some(self.passwords.hash(password).await?);
        }
        changes.locked = update.locked.filter(|locked| *locked != user.locked);
        changes.user_type = update.user_type.clone();
        changes.reactivate = update.deactivated == Some(false) && user.deactivated;
        self.store.apply_admin_user_changes(user_id.as_str(), &changes).await?;
        if changes.admin.is_some() || changes.locked.is_some() {
            self.auth_cache.evict_user(user_id);
        }
        if !changes.profile.is_empty() {
            self.propagate_profile(user_id).await?;
        }
        if update.password.is_some() && update.logout_devices {
            let keep = (requester.user_id == user_id).then_some(requester.device_id.as_deref()).flatten();
            self.log_out_devices_except(user_id, keep).await?;
        }
        if update.deactivated == Some(true) && !user.deactivated {
            self.deactivate_user(user_id, false).await?;
        }
        tracing::info!(admin_user = %requester.user_id, %user_id, "admin modified a user");
        Ok(false)
    }

    async fn admin_create_user(
        &self,
        requester: &Requester,
        user_id: &UserId,
        update: AdminUserUpdate,
    ) -> Result<()> {
        let localpart = user_id.localpart();
        let checked = self.check_username(localpart, true).await?;
        let password_hash = match &update.password {
            Some(password) => Some(self.passwords.hash(password).await?),
            None => None,
        };
        let displayname = match update.displayname {
            Some(Value::String(name)) => name,
            Some(Value::Null) | None => localpart.to_owned(),
            Some(_) => return Err(MatrixError::bad_json("displayname must be a string").into()),
        };
        let created = self
            .store
            .create_user(&myelin_store::NewUser {
                user_id: checked.clone(),
                password_hash,
                admin: update.admin.unwrap_or(false),
                user_type: update.user_type.flatten(),
                displayname: Some(displayname),
                ..myelin_store::NewUser::default()
            })
            .await?;
        if !created {
            return Err(MatrixError::new(myelin_core::ErrCode::UserInUse, "User ID already taken.").into());
        }
        if let Some(avatar_url) = update.avatar_url.filter(|v| !v.is_null()) {
            self.set_profile_field(requester, user_id, "avatar_url", avatar_url).await?;
        }
        tracing::info!(admin_user = %requester.user_id, %user_id, "admin created a user");
        self.after_registration(&checked, false).await;
        Ok(())
    }

    /// A local account's devices (`GET /_synapse/admin/v2/users/{userId}/devices`); unknown
    /// accounts are `404 M_NOT_FOUND`.
    pub async fn admin_user_devices(&self, user_id: &UserId) -> Result<Vec<DeviceRecord>> {
        self.existing_user(user_id).await?;
        self.list_devices(user_id).await
    }

    /// One device of a local account.
    pub async fn admin_user_device(&self, user_id: &UserId, device_id: &str) -> Result<DeviceRecord> {
        self.existing_user(user_id).await?;
        self.get_device(user_id, device_id).await
    }

    /// Renames a device of a local account (through the one device-list path).
    pub async fn admin_rename_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<&str>,
    ) -> Result<()> {
        self.existing_user(user_id).await?;
        self.rename_device(user_id, device_id, name).await
    }

    /// Deletes devices of a local account, logging them out (unknown IDs ignored, as Synapse).
    pub async fn admin_delete_devices(&self, user_id: &UserId, device_ids: &[String]) -> Result<()> {
        self.existing_user(user_id).await?;
        self.delete_devices(user_id, device_ids).await
    }

    /// A local account's pushers (`GET /_synapse/admin/v1/users/{userId}/pushers`).
    pub async fn admin_user_pushers(&self, user_id: &UserId) -> Result<Vec<crate::records::PusherRecord>> {
        self.existing_user(user_id).await?;
        Ok(self.store.pushers_of(user_id.as_str()).await?)
    }

    /// `POST /_synapse/admin/v1/reset_password/{userId}`: a new password under the client
    /// route's policy; `logout_devices` (default true) logs every device of the user out.
    pub async fn admin_reset_password(
        &self,
        requester: &Requester,
        user_id: &UserId,
        new_password: &str,
        logout_devices: bool,
    ) -> Result<()> {
        self.existing_user(user_id).await?;
        if new_password.len() > 512 {
            return Err(MatrixError::invalid_param("Invalid password").into());
        }
        self.check_password_policy(new_password)?;
        let hash = self.passwords.hash(new_password).await?;
        self.store.set_password_hash(user_id.as_str(), Some(&hash)).await?;
        if logout_devices {
            let keep = (requester.user_id == user_id).then_some(requester.device_id.as_deref()).flatten();
            self.log_out_devices_except(user_id, keep).await?;
        }
        tracing::info!(admin_user = %requester.user_id, %user_id, logout_devices, "admin reset a password");
        Ok(())
    }

    /// `POST /_synapse/admin/v1/users/{userId}/login`: an access token that acts as the user,
    /// on no device (so it is not one of the user's devices), valid until `valid_until_ms`
    /// when given. The admin who made it is recorded as the puppeteer.
    pub async fn admin_login_as(
        &self,
        requester: &Requester,
        user_id: &UserId,
        valid_until_ms: Option<i64>,
    ) -> Result<String> {
        if user_id.server_name().as_str() != self.server_name() {
            return Err(MatrixError::invalid_param("Only local users can be logged in as").into());
        }
        self.existing_user(user_id).await?;
        if requester.user_id == user_id {
            return Err(MatrixError::invalid_param("Cannot use admin API to login as self").into());
        }
        let token = mint_token("syt", user_id.localpart());
        self.store
            .insert_access_token(&NewAccessToken {
                token_hash: &hash_token(&token),
                user_id: user_id.as_str(),
                device_id: None,
                valid_until_ms,
                refresh_token_hash: None,
                puppets_user_id: Some(requester.user_id.as_str()),
            })
            .await?;
        tracing::info!(admin_user = %requester.user_id, %user_id, "admin logged in as a user");
        Ok(token)
    }

    /// `GET /_synapse/admin/v1/users/{userId}/memberships`: room ID to current membership.
    pub async fn admin_memberships(&self, user_id: &UserId) -> Result<Vec<(String, String)>> {
        self.existing_user(user_id).await?;
        let memberships = self.store.user_memberships(user_id.as_str()).await?;
        Ok(memberships.into_iter().map(|(room_id, membership, _)| (room_id, membership)).collect())
    }

    /// `GET /_synapse/admin/v1/users/{userId}/accountdata`.
    pub async fn admin_account_data(&self, user_id: &UserId) -> Result<AdminAccountData> {
        self.existing_user(user_id).await?;
        let mut data = AdminAccountData::default();
        for record in self.store.account_data_since(user_id.as_str(), 0, i64::MAX).await? {
            // Stored account data that does not parse is corrupt: an internal error.
            let content: Value = serde_json::from_str(&record.content).map_err(Error::internal)?;
            if record.room_id.is_empty() {
                data.global.insert(record.kind, content);
            } else {
                let room = data.rooms.entry(record.room_id).or_insert_with(|| json!({}));
                room[record.kind.as_str()] = content;
            }
        }
        Ok(data)
    }

    /// `POST` / `DELETE /_synapse/admin/v1/users/{userId}/shadow_ban`.
    pub async fn admin_set_shadow_banned(
        &self,
        requester: &Requester,
        user_id: &UserId,
        shadow_banned: bool,
    ) -> Result<()> {
        if user_id.server_name().as_str() != self.server_name() {
            return Err(MatrixError::invalid_param("Only local users can be shadow-banned").into());
        }
        self.existing_user(user_id).await?;
        self.store.set_shadow_banned(user_id.as_str(), shadow_banned).await?;
        self.auth_cache.evict_user(user_id);
        tracing::info!(admin_user = %requester.user_id, %user_id, shadow_banned, "admin changed a shadow ban");
        Ok(())
    }

    /// `PUT /_synapse/admin/v1/suspend/{userId}` (MSC3823).
    pub async fn admin_set_suspended(
        &self,
        requester: &Requester,
        user_id: &UserId,
        suspend: bool,
    ) -> Result<()> {
        if user_id.server_name().as_str() != self.server_name() {
            return Err(MatrixError::invalid_param("Can only suspend local users").into());
        }
        self.existing_user(user_id).await?;
        self.store.set_suspended(user_id.as_str(), suspend).await?;
        self.auth_cache.evict_user(user_id);
        tracing::info!(admin_user = %requester.user_id, %user_id, suspend, "admin changed a suspension");
        Ok(())
    }

    /// `GET /_synapse/admin/v1/experimental_features/{userId}`: every known feature and
    /// whether it is on for the user.
    pub async fn admin_experimental_features(&self, user_id: &UserId) -> Result<Vec<(&'static str, bool)>> {
        if user_id.server_name().as_str() != self.server_name() {
            return Err(MatrixError::invalid_param(
                "User must be local to check what experimental features are enabled.",
            )
            .into());
        }
        self.existing_user(user_id).await?;
        let enabled = self.store.enabled_features(user_id.as_str()).await?;
        Ok(EXPERIMENTAL_FEATURES
            .iter()
            .map(|feature| (*feature, enabled.iter().any(|e| e == feature)))
            .collect())
    }

    /// `PUT /_synapse/admin/v1/experimental_features/{userId}`: every feature named must be
    /// known, or nothing changes.
    pub async fn admin_set_experimental_features(
        &self,
        requester: &Requester,
        user_id: &UserId,
        features: Vec<(String, bool)>,
    ) -> Result<()> {
        if user_id.server_name().as_str() != self.server_name() {
            return Err(
                MatrixError::invalid_param("User must be local to enable experimental features.").into()
            );
        }
        self.existing_user(user_id).await?;
        if features.is_empty() {
            return Err(MatrixError::invalid_param("You must provide features to set.").into());
        }
        if let Some((unknown, _)) =
            features.iter().find(|(f, _)| !EXPERIMENTAL_FEATURES.contains(&f.as_str()))
        {
            return Err(MatrixError::invalid_param(format!(
                "'{unknown}' is not recognised as a valid experimental feature."
            ))
            .into());
        }
        self.store.set_features(user_id.as_str(), &features).await?;
        tracing::info!(admin_user = %requester.user_id, %user_id, ?features, "admin set experimental features");
        Ok(())
    }

    /// `POST /_synapse/admin/v1/user/{userId}/redact`: starts redacting the user's messages,
    /// encrypted events and joins in the rooms given (or in every room they are joined to or
    /// banned from) in the background; returns the task's ID for
    /// [`Self::admin_user_redaction_status`].
    pub async fn admin_redact_user(
        &self,
        requester: &Requester,
        user_id: &UserId,
        mut request: UserRedactionRequest,
    ) -> Result<String> {
        if request.limit.is_some_and(|limit| limit <= 0) {
            return Err(MatrixError::invalid_param(
                "If limit is provided it must be a non-negative integer greater than 0.",
            )
            .into());
        }
        let mut rooms: Vec<OwnedRoomId> = Vec::with_capacity(request.rooms.len());
        for room in &request.rooms {
            rooms.push(
                RoomId::parse(room)
                    .map_err(|_| MatrixError::invalid_param(format!("Invalid room ID {room:?}")))?,
            );
        }
        if rooms.is_empty() {
            for membership in ["join", "ban"] {
                for room in self.store.rooms_for_user(user_id.as_str(), membership).await? {
                    rooms.push(RoomId::parse(&room).map_err(Error::internal)?);
                }
            }
        }
        request.rooms = rooms.iter().map(|r| r.to_string()).collect();
        request.limit = Some(request.limit.unwrap_or(1000));
        let redact_id = crate::util::random_string(16);
        let params = serde_json::to_string(&request).map_err(Error::internal)?;
        self.store
            .insert_user_redaction(&redact_id, user_id.as_str(), requester.user_id.as_str(), &params)
            .await?;
        tracing::info!(admin_user = %requester.user_id, %user_id, %redact_id, "admin started redacting a user's events");
        let services = self.clone();
        let (task_id, user_id, admin) = (redact_id.clone(), user_id.to_owned(), requester.user_id.clone());
        tokio::spawn(async move {
            let outcome = services.run_user_redaction(&task_id, &user_id, &admin, &request, &rooms).await;
            if let Err(error) = outcome {
                tracing::warn!(%error, redact_id = %task_id, "user redaction failed");
                let message = error.to_string();
                if let Err(error) =
                    services.store.update_user_redaction(&task_id, "failed", "{}", Some(&message)).await
                {
                    tracing::warn!(%error, redact_id = %task_id, "could not record a failed user redaction");
                }
            }
        });
        Ok(redact_id)
    }

    async fn run_user_redaction(
        &self,
        redact_id: &str,
        user_id: &UserId,
        admin: &UserId,
        request: &UserRedactionRequest,
        rooms: &[OwnedRoomId],
    ) -> Result<()> {
        self.store.update_user_redaction(redact_id, "active", "{}", None).await?;
        // As Synapse: the user redacts their own events unless asked otherwise or not local.
        let redactor = if request.use_admin || user_id.server_name().as_str() != self.server_name() {
            admin
        } else {
            user_id
        };
        let mut failed = Map::new();
        for room_id in rooms {
            let events = self
                .store
                .events_sent_by_user_in_room(
                    user_id.as_str(),
                    room_id.as_str(),
                    &REDACTED_KINDS,
                    request.before_ts,
                    request.after_ts,
                    request.limit.unwrap_or(1000),
                )
                .await?;
            for event in events {
                let json: Value = serde_json::from_str(&event.json).map_err(Error::internal)?;
                // Of membership events only joins are redacted.
                if event.kind == "m.room.member" && json["content"]["membership"] != "join" {
                    continue;
                }
                let event_id = ruma::EventId::parse(&event.event_id).map_err(Error::internal)?;
                let mut content = json!({});
                if let Some(reason) = &request.reason {
                    content["reason"] = json!(reason);
                }
                let draft = EventDraft {
                    kind: "m.room.redaction".to_owned(),
                    state_key: None,
                    content,
                    redacts: Some(event_id),
                };
                if let Err(error) = self.send_event(room_id, redactor, draft, None).await {
                    tracing::info!(%error, event_id = %event.event_id, "could not redact an event");
                    failed.insert(event.event_id.clone(), json!(error.to_string()));
                }
            }
        }
        let failed = Value::Object(failed).to_string();
        self.store.update_user_redaction(redact_id, "complete", &failed, None).await?;
        Ok(())
    }

    /// `GET /_synapse/admin/v1/user/redact_status/{redactId}`.
    pub async fn admin_user_redaction_status(&self, redact_id: &str) -> Result<UserRedactionStatus> {
        let record = self
            .store
            .get_user_redaction(redact_id)
            .await?
            .ok_or_else(|| MatrixError::not_found(format!("redact id '{redact_id}' not found")))?;
        Ok(match record.status.as_str() {
            "scheduled" => UserRedactionStatus::Scheduled,
            "active" => UserRedactionStatus::Active,
            "complete" => {
                let failed_redactions = match serde_json::from_str(&record.failed_redactions) {
                    Ok(Value::Object(failed)) => failed,
                    _ => return Err(Error::internal("stored failed_redactions is not an object")),
                };
                UserRedactionStatus::Complete { failed_redactions }
            }
            _ => UserRedactionStatus::Failed {
                error: record.error.unwrap_or_else(|| {
                    "Unknown error, please check the logs for more information.".to_owned()
                }),
            },
        })
    }

    /// `GET /_synapse/admin/v1/user_reports`: a page of user reports and how many match.
    pub async fn admin_user_reports(&self, query: &UserReportsQuery) -> Result<(Vec<UserReportRecord>, i64)> {
        Ok(self.store.user_reports(query).await?)
    }

    /// `DELETE /_synapse/admin/v1/event_reports/{id}` (`user_report: false`) and
    /// `/user_reports/{id}`: `404 M_NOT_FOUND` when there is no such report.
    pub async fn admin_delete_report(&self, requester: &Requester, id: i64, user_report: bool) -> Result<()> {
        if !self.store.delete_report(id, user_report).await? {
            let what = if user_report { "User report" } else { "Event report" };
            return Err(MatrixError::not_found(format!("{what} not found")).into());
        }
        tracing::info!(admin_user = %requester.user_id, id, user_report, "admin deleted a report");
        Ok(())
    }
}
