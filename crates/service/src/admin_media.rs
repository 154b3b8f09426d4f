//! The admin API's media (`/_synapse/admin/v1/media/...`, `/v1/room/{roomId}/media`,
//! `/v1/users/{userId}/media`, `/v1/statistics/users/media`) over the media hooks of
//! `media::admin`: quarantine, protection, deletion and listings. Only this server's media is
//! kept in `local_media`, so most hooks refuse a remote server's media with a clear error
//! rather than answer as if handled; quarantine (and its release) also applies to the remote
//! media cache, which `purge_media_cache` empties of what was not read recently.

use myelin_core::MatrixError;
pub use myelin_store::{LocalMediaRecord, MediaStatsOrder, MediaStatsQuery, UserMediaOrder, UserMediaStats};
use ruma::{RoomId, UserId};

use crate::media::MediaId;
use crate::media::admin::OldMediaFilter;
use crate::{Result, Services};

impl Services {
    /// A media of this server by (server name, media ID): `400` for another server's media or a
    /// malformed ID, `404` when unknown.
    async fn admin_local_media(
        &self,
        server_name: &str,
        media_id: &str,
    ) -> Result<(MediaId, LocalMediaRecord)> {
        let media_id = MediaId::parse(media_id)?;
        if server_name != self.server_name() {
            return Err(MatrixError::invalid_param("Only media of this server is kept here").into());
        }
        let record = self
            .store
            .local_media(media_id.as_str())
            .await?
            .ok_or_else(|| MatrixError::not_found("Unknown media"))?;
        Ok((media_id, record))
    }

    /// `GET /_synapse/admin/v1/media/{serverName}/{mediaId}`.
    pub async fn admin_media_info(&self, server_name: &str, media_id: &str) -> Result<LocalMediaRecord> {
        Ok(self.admin_local_media(server_name, media_id).await?.1)
    }

    /// `POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}`.
    /// Another server's media is quarantined in this server's cache (`404` when not cached).
    pub async fn admin_quarantine_media(&self, by: &UserId, server_name: &str, media_id: &str) -> Result<()> {
        if server_name != self.server_name() {
            return self.admin_set_remote_quarantine(server_name, media_id, Some(by)).await;
        }
        let (media_id, _) = self.admin_local_media(server_name, media_id).await?;
        self.quarantine_local_media(&media_id, by).await?;
        tracing::info!(admin_user = %by, media_id = media_id.as_str(), "admin quarantined media");
        Ok(())
    }

    /// `POST /_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}`.
    pub async fn admin_unquarantine_media(
        &self,
        by: &UserId,
        server_name: &str,
        media_id: &str,
    ) -> Result<()> {
        if server_name != self.server_name() {
            return self.admin_set_remote_quarantine(server_name, media_id, None).await;
        }
        let (media_id, _) = self.admin_local_media(server_name, media_id).await?;
        self.unquarantine_local_media(&media_id).await?;
        tracing::info!(admin_user = %by, media_id = media_id.as_str(), "admin released media from quarantine");
        Ok(())
    }

    /// Quarantines (`by`) or releases a cached remote media: `404` when it is not cached.
    async fn admin_set_remote_quarantine(
        &self,
        server_name: &str,
        media_id: &str,
        by: Option<&UserId>,
    ) -> Result<()> {
        let media_id = MediaId::parse(media_id)?;
        if !self.set_remote_media_quarantine(server_name, &media_id, by).await? {
            return Err(MatrixError::not_found("Unknown media").into());
        }
        tracing::info!(admin_user = ?by.map(|u| u.as_str()), server_name, media_id = media_id.as_str(), "admin changed the quarantine of remote media");
        Ok(())
    }

    /// `POST /_synapse/admin/v1/purge_media_cache`: the cached remote media not read since
    /// `before_ts` (quarantined media stays); how many were deleted.
    pub async fn admin_purge_media_cache(&self, by: &UserId, before_ts: i64) -> Result<u64> {
        let deleted = self.purge_remote_media_cache(before_ts).await?;
        tracing::info!(admin_user = %by, before_ts, deleted, "admin purged the remote media cache");
        Ok(deleted)
    }

    /// `POST /_synapse/admin/v1/room/{roomId}/media/quarantine`: how many were quarantined.
    pub async fn admin_quarantine_room_media(&self, by: &UserId, room_id: &RoomId) -> Result<u64> {
        let count = self.quarantine_local_media_in_room(room_id, by).await?;
        tracing::info!(admin_user = %by, %room_id, count, "admin quarantined a room's media");
        Ok(count)
    }

    /// `POST /_synapse/admin/v1/user/{userId}/media/quarantine`: how many were quarantined.
    pub async fn admin_quarantine_user_media(&self, by: &UserId, user_id: &UserId) -> Result<u64> {
        let count = self.quarantine_local_media_of_user(user_id, by).await?;
        tracing::info!(admin_user = %by, %user_id, count, "admin quarantined a user's media");
        Ok(count)
    }

    /// `POST /_synapse/admin/v1/media/protect/{mediaId}` and `unprotect`: `404` when unknown.
    pub async fn admin_protect_media(&self, by: &UserId, media_id: &str, protected: bool) -> Result<()> {
        let media_id = MediaId::parse(media_id)?;
        if !self.set_local_media_protected(&media_id, protected).await? {
            return Err(MatrixError::not_found("Unknown media").into());
        }
        tracing::info!(admin_user = %by, media_id = media_id.as_str(), protected, "admin changed media protection");
        Ok(())
    }

    /// `DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}`: the deleted IDs.
    pub async fn admin_delete_media(
        &self,
        by: &UserId,
        server_name: &str,
        media_id: &str,
    ) -> Result<Vec<String>> {
        let (media_id, _) = self.admin_local_media(server_name, media_id).await?;
        let deleted = self.delete_local_media(&[media_id.as_str().to_owned()]).await?;
        tracing::info!(admin_user = %by, media_id = media_id.as_str(), "admin deleted media");
        Ok(deleted)
    }

    /// `POST /_synapse/admin/v1/media/delete`: local media last read before `before_ts` and
    /// larger than `size_gt` (quarantined and protected media too, as Synapse's defaults).
    pub async fn admin_delete_old_media(
        &self,
        by: &UserId,
        before_ts: i64,
        size_gt: u64,
        keep_profiles: bool,
    ) -> Result<Vec<String>> {
        let deleted = self
            .delete_old_local_media(OldMediaFilter {
                before_ts,
                size_gt,
                keep_profiles,
                delete_quarantined: true,
                delete_protected: false,
            })
            .await?;
        tracing::info!(admin_user = %by, before_ts, size_gt, count = deleted.len(), "admin deleted old media");
        Ok(deleted)
    }

    /// `GET /_synapse/admin/v1/room/{roomId}/media`: the `mxc://` URIs of this server's media
    /// the room's events refer to; `404` for an unknown room.
    pub async fn admin_room_media(&self, room_id: &RoomId) -> Result<Vec<String>> {
        if self.store.get_room(room_id.as_str()).await?.is_none() {
            return Err(MatrixError::not_found("Room not found").into());
        }
        let server = self.server_name();
        Ok(self
            .local_media_in_room(room_id)
            .await?
            .into_iter()
            .map(|id| format!("mxc://{server}/{id}"))
            .collect())
    }

    /// A local user that exists, for the user media routes.
    async fn admin_media_user(&self, user_id: &UserId) -> Result<()> {
        if user_id.server_name().as_str() != self.server_name() {
            return Err(MatrixError::invalid_param("Can only look up local users").into());
        }
        if self.store.get_user(user_id.as_str()).await?.is_none() {
            return Err(MatrixError::not_found("Unknown user").into());
        }
        Ok(())
    }

    /// `GET /_synapse/admin/v1/users/{userId}/media`: a page in the order asked, and the total.
    pub async fn admin_user_media(
        &self,
        user_id: &UserId,
        order: UserMediaOrder,
        backwards: bool,
        from: u64,
        limit: u64,
    ) -> Result<(Vec<LocalMediaRecord>, u64)> {
        self.admin_media_user(user_id).await?;
        Ok(self.store.local_media_of_user_sorted(user_id.as_str(), order, backwards, from, limit).await?)
    }

    /// `DELETE /_synapse/admin/v1/users/{userId}/media`: every media of the user.
    pub async fn admin_delete_user_media(&self, by: &UserId, user_id: &UserId) -> Result<Vec<String>> {
        self.admin_media_user(user_id).await?;
        let deleted = self.delete_local_media_of_user(user_id).await?;
        tracing::info!(admin_user = %by, %user_id, count = deleted.len(), "admin deleted a user's media");
        Ok(deleted)
    }

    /// `GET /_synapse/admin/v1/statistics/users/media`.
    pub async fn admin_user_media_stats(
        &self,
        query: &MediaStatsQuery,
    ) -> Result<(Vec<UserMediaStats>, u64)> {
        Ok(self.store.user_media_stats(query).await?)
    }
}
