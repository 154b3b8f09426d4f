//! The admin API's user management (`/_synapse/admin/.../users`, `deactivate`, `whois`): reads
//! and changes of local accounts for server admins and the tools they run. Every change goes
//! through the same service paths as the users' own requests (deactivation leaves rooms and
//! deletes devices through `accounts`).

use myelin_core::MatrixError;
use myelin_store::{UserListEntry, UserListQuery, UserRecord};
use ruma::UserId;
use serde_json::{Map, Value};

use crate::auth::Requester;
use crate::records::DeviceRecord;
use crate::{Result, Services};

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
        if let Some(displayname) = update.displayname {
            self.set_profile_field(requester, user_id, "displayname", displayname).await?;
        }
        if let Some(avatar_url) = update.avatar_url {
            self.set_profile_field(requester, user_id, "avatar_url", avatar_url).await?;
        }
        if let Some(admin) = update.admin
            && admin != user.admin
        {
            self.admin_set_admin(requester, user_id, admin).await?;
        }
        if let Some(password) = &update.password {
            let hash = self.passwords.hash(password).await?;
            self.store.set_password_hash(user_id.as_str(), Some(&hash)).await?;
            if update.logout_devices {
                let keep = (requester.user_id == user_id).then_some(requester.device_id.as_deref()).flatten();
                self.log_out_devices_except(user_id, keep).await?;
            }
        }
        match update.deactivated {
            Some(true) if !user.deactivated => self.deactivate_user(user_id, false).await?,
            Some(false) if user.deactivated => self.store.reactivate_user(user_id.as_str()).await?,
            _ => {}
        }
        if let Some(locked) = update.locked
            && locked != user.locked
        {
            self.store.set_user_locked(user_id.as_str(), locked).await?;
            self.auth_cache.evict_user(user_id);
        }
        if let Some(user_type) = &update.user_type {
            self.store.set_user_type(user_id.as_str(), user_type.as_deref()).await?;
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
}
