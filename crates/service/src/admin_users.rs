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
}
