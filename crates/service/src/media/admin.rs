//! The media repository's housekeeping and the admin's hooks (for the admin API to expose):
//!
//! - last-access times: downloads add their media to a set in memory, written in one batch
//!   every [`ACCESS_FLUSH_INTERVAL`] (Synapse's `_update_cached_last_access_time`);
//! - retention (`media_retention`, Synapse's `_apply_media_retention_rules`): local media not
//!   read for `local_media_lifetime` is deleted, except quarantined and protected media, and
//!   `/create`d IDs whose upload never came are forgotten; run by [`Services::run_media_worker`];
//! - quarantine (by ID, with every record of the same content, or all of a user's media),
//!   protection (`safe_from_quarantine`), deletion (by ID, of a user, or old or large media:
//!   Synapse's `delete_old_local_media`) and a user's media listed by page;
//! - the avatar rules (`max_avatar_size`, `allowed_avatar_mimetypes`) as Synapse's
//!   `check_avatar_size_and_mime_type`.
//!
//! A file is deleted only when no record names it any more (identical content is stored once);
//! a media's thumbnails go with it. Deletion is a transaction per batch of records, so two
//! processes purging at once delete each record and each file once.

use std::time::Duration;

use myelin_store::{DeletedMedia, LocalMediaRecord, OldMediaQuery};
use ruma::UserId;

use super::{MediaId, local_content_path, local_thumbnail_dir};
use crate::util::now_ms;
use crate::{Error, Result, Services};

/// How often the media read since the last write get their last-access time.
pub const ACCESS_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// How often retention runs (Synapse's `MEDIA_RETENTION_CHECK_PERIOD_MS`); it also runs once
/// at start-up.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// How many media one purge batch deletes.
const PURGE_BATCH: u64 = 500;

/// Which old media [`Services::delete_old_local_media`] deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OldMediaFilter {
    /// Last read (or, never read, uploaded) before this time (ms).
    pub before_ts: i64,
    /// Larger than this many bytes.
    pub size_gt: u64,
    /// Keep media that is a local user's profile avatar.
    pub keep_profiles: bool,
    pub delete_quarantined: bool,
    pub delete_protected: bool,
}

/// What one retention run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Local media deleted for not being read within `local_media_lifetime`.
    pub local_deleted: Vec<String>,
    /// `/create`d IDs forgotten because their upload never came.
    pub pending_expired: u64,
    /// Cached remote media deleted for not being read within `remote_media_lifetime`.
    pub remote_deleted: u64,
}

impl Services {
    /// Notes that a local media was read; written with the next batch.
    pub(crate) fn media_accessed(&self, media_id: &str) {
        self.media_accessed_from("", media_id);
    }

    /// Notes that a media of `origin` (empty for this server) was read; written with the next
    /// batch.
    pub(crate) fn media_accessed_from(&self, origin: &str, media_id: &str) {
        self.media.accessed.lock().insert((origin.to_owned(), media_id.to_owned()));
    }

    /// Writes the last-access time of every media read since the last batch.
    pub async fn flush_media_accesses(&self) -> Result<()> {
        let accessed: Vec<(String, String)> =
            std::mem::take(&mut *self.media.accessed.lock()).into_iter().collect();
        let (local, remote): (Vec<_>, Vec<_>) =
            accessed.iter().cloned().partition(|(origin, _)| origin.is_empty());
        let local: Vec<String> = local.into_iter().map(|(_, media_id)| media_id).collect();
        let now = now_ms() as i64;
        let written = match self.store.touch_local_media_batch(&local, now).await {
            Ok(()) => self.store.touch_remote_media_batch(&remote, now).await,
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            // Put them back for the next batch.
            self.media.accessed.lock().extend(accessed);
            return Err(error.into());
        }
        Ok(())
    }

    /// Writes last-access times every [`ACCESS_FLUSH_INTERVAL`] and applies `media_retention`
    /// every [`RETENTION_INTERVAL`] (and at start-up), until shutdown; the accesses still
    /// gathered are written on the way out.
    pub(crate) async fn run_media_worker(self) {
        let mut flush = tokio::time::interval(ACCESS_FLUSH_INTERVAL);
        let mut retention = tokio::time::interval(RETENTION_INTERVAL);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = flush.tick() => {
                    if let Err(error) = self.flush_media_accesses().await {
                        tracing::warn!(%error, "could not record media access times");
                    }
                }
                _ = retention.tick() => match self.apply_media_retention(now_ms() as i64).await {
                    Ok(outcome) if outcome == RetentionOutcome::default() => {}
                    Ok(outcome) => tracing::info!(
                        deleted = outcome.local_deleted.len(),
                        remote_deleted = outcome.remote_deleted,
                        pending_expired = outcome.pending_expired,
                        "applied media retention"
                    ),
                    Err(error) => tracing::warn!(%error, "could not apply media retention"),
                },
            }
        }
        if let Err(error) = self.flush_media_accesses().await {
            tracing::warn!(%error, "could not record media access times");
        }
    }

    /// Synapse's `_apply_media_retention_rules` as of `now` (ms): deletes local media not read
    /// for `media_retention.local_media_lifetime` (never quarantined or protected media, whose
    /// fate is the admin's), deletes cached remote media not read for `remote_media_lifetime`
    /// (quarantined media stays), and forgets `/create`d IDs whose upload never came.
    pub async fn apply_media_retention(&self, now: i64) -> Result<RetentionOutcome> {
        self.flush_media_accesses().await?;
        let mut outcome = RetentionOutcome {
            pending_expired: self.store.delete_expired_pending_media(now).await?,
            ..Default::default()
        };
        if let Some(lifetime) = self.config.media.media_retention.local_media_lifetime {
            let before_ts = now.saturating_sub(i64::try_from(lifetime.0).unwrap_or(i64::MAX));
            let filter = OldMediaFilter {
                before_ts,
                size_gt: 0,
                keep_profiles: false,
                delete_quarantined: false,
                delete_protected: false,
            };
            outcome.local_deleted = self.delete_old_local_media(filter).await?;
        }
        if let Some(lifetime) = self.config.media.media_retention.remote_media_lifetime {
            let before_ts = now.saturating_sub(i64::try_from(lifetime.0).unwrap_or(i64::MAX));
            outcome.remote_deleted = self.purge_remote_media_cache(before_ts).await?;
        }
        Ok(outcome)
    }

    /// Synapse's `delete_old_local_media`: deletes the local media last read (or, never read,
    /// uploaded) before `filter.before_ts` and larger than `filter.size_gt` bytes. Returns the
    /// deleted media IDs.
    pub async fn delete_old_local_media(&self, filter: OldMediaFilter) -> Result<Vec<String>> {
        let query = OldMediaQuery {
            before_ts: filter.before_ts,
            size_gt: filter.size_gt,
            include_quarantined: filter.delete_quarantined,
            include_protected: filter.delete_protected,
            keep_avatars_with_prefix: filter.keep_profiles.then(|| format!("mxc://{}/", self.server_name())),
        };
        let mut deleted = Vec::new();
        loop {
            let media_ids = self.store.old_local_media(&query, PURGE_BATCH).await?;
            if media_ids.is_empty() {
                return Ok(deleted);
            }
            let batch = self.delete_local_media(&media_ids).await?;
            if batch.is_empty() {
                // Listed but gone already (another process purged them): nothing more to do.
                return Ok(deleted);
            }
            deleted.extend(batch);
        }
    }

    /// Deletes local media by ID with their thumbnails, and each file no other record names.
    /// Returns the IDs that existed.
    pub async fn delete_local_media(&self, media_ids: &[String]) -> Result<Vec<String>> {
        // The storage providers' copies are named by the thumbnails' records: read them first.
        let mut mirrored_thumbnails = std::collections::HashMap::new();
        if !self.storage_providers.is_empty() {
            for media_id in media_ids {
                mirrored_thumbnails.insert(media_id.clone(), self.store.local_thumbnails(media_id).await?);
            }
        }
        let deleted = self.store.delete_local_media(media_ids).await?;
        for media in &deleted {
            self.delete_media_files(media).await?;
            let thumbnails = mirrored_thumbnails.get(&media.media_id).map_or(&[][..], Vec::as_slice);
            self.delete_mirrored_media(&media.media_id, thumbnails, media.file_id.as_deref()).await;
        }
        Ok(deleted.into_iter().map(|media| media.media_id).collect())
    }

    /// Deletes every local media a user uploaded or reserved. Returns their IDs.
    pub async fn delete_local_media_of_user(&self, user_id: &UserId) -> Result<Vec<String>> {
        let media_ids: Vec<String> = self
            .store
            .local_media_of_user(user_id.as_str())
            .await?
            .into_iter()
            .map(|media| media.media_id)
            .collect();
        self.delete_local_media(&media_ids).await
    }

    /// A page of a user's local media, oldest first (`limit` from position `from`), and how
    /// many there are in all.
    pub async fn list_local_media_of_user(
        &self,
        user_id: &UserId,
        from: u64,
        limit: u64,
    ) -> Result<(Vec<LocalMediaRecord>, u64)> {
        Ok(self.store.local_media_of_user_page(user_id.as_str(), from, limit).await?)
    }

    /// Quarantines a local media, and every other record of the same content, on behalf of
    /// admin `by`: downloads and thumbnails of it are then not found. Protected media is left
    /// alone. Returns how many records were quarantined.
    pub async fn quarantine_local_media(&self, media_id: &MediaId, by: &UserId) -> Result<u64> {
        Ok(self.store.set_local_media_quarantine(media_id.as_str(), Some(by.as_str())).await?)
    }

    /// Quarantines every local media the events of a room refer to, on behalf of admin `by`
    /// (the admin API's "quarantine a room's media", Synapse's `get_media_mxcs_in_room`): the
    /// `mxc://` URIs of this server in `url`, `info.thumbnail_url`, encrypted attachments'
    /// `file.url` and `info.thumbnail_file.url`, and `avatar_url` (members), in every event of
    /// the room, state or not. Protected media is left alone; remote media is not this
    /// server's to quarantine yet. Returns how many records were marked (each referenced
    /// media with every record of the same content).
    pub async fn quarantine_local_media_in_room(&self, room_id: &ruma::RoomId, by: &UserId) -> Result<u64> {
        let mut quarantined = 0;
        for media_id in self.local_media_in_room(room_id).await? {
            quarantined += self.store.set_local_media_quarantine(&media_id, Some(by.as_str())).await?;
        }
        Ok(quarantined)
    }

    /// The IDs of the local media the events of a room refer to (see
    /// [`Self::quarantine_local_media_in_room`] for where they are looked for), sorted.
    pub async fn local_media_in_room(&self, room_id: &ruma::RoomId) -> Result<Vec<String>> {
        const PAGE: i64 = 500;
        let prefix = format!("mxc://{}/", self.server_name());
        let mut media_ids = std::collections::BTreeSet::new();
        let mut after = i64::MIN;
        loop {
            let page = self.store.room_event_json_page(room_id.as_str(), after, PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            for (_, json) in &page {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(json) else { continue };
                let content = &event["content"];
                for uri in [
                    &content["url"],
                    &content["info"]["thumbnail_url"],
                    &content["file"]["url"],
                    &content["info"]["thumbnail_file"]["url"],
                    &content["avatar_url"],
                ] {
                    if let Some(media_id) = uri.as_str().and_then(|uri| uri.strip_prefix(&prefix))
                        && let Ok(media_id) = MediaId::parse(media_id)
                    {
                        media_ids.insert(media_id.as_str().to_owned());
                    }
                }
            }
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        Ok(media_ids.into_iter().collect())
    }

    /// Releases a local media from quarantine. Returns whether it was quarantined.
    pub async fn unquarantine_local_media(&self, media_id: &MediaId) -> Result<bool> {
        Ok(self.store.set_local_media_quarantine(media_id.as_str(), None).await? > 0)
    }

    /// Quarantines every local media of a user except protected media. Returns how many.
    pub async fn quarantine_local_media_of_user(&self, user_id: &UserId, by: &UserId) -> Result<u64> {
        Ok(self.store.quarantine_local_media_of_user(user_id.as_str(), by.as_str()).await?)
    }

    /// Protects a local media from quarantine and retention (`safe_from_quarantine`), or lifts
    /// that. Returns whether the media exists.
    pub async fn set_local_media_protected(&self, media_id: &MediaId, protected: bool) -> Result<bool> {
        Ok(self.store.set_local_media_protected(media_id.as_str(), protected).await?)
    }

    /// Removes a deleted media's thumbnails and, when no record names it any more, its file.
    /// Files already gone are fine.
    async fn delete_media_files(&self, media: &DeletedMedia) -> Result<()> {
        let thumbnails = self.media_file_path(&local_thumbnail_dir(&MediaId::parse(&media.media_id)?));
        match tokio::fs::remove_dir_all(&thumbnails).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(Error::internal_with(format!("deleting {}", thumbnails.display()), error));
            }
        }
        if let Some(file_id) = &media.file_id {
            let path = self.media_file_path(&local_content_path(&MediaId::parse(file_id)?));
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(Error::internal_with(format!("deleting {}", path.display()), error));
                }
            }
        }
        Ok(())
    }

    /// Synapse's `check_avatar_size_and_mime_type`: whether `mxc` may be an avatar under
    /// `max_avatar_size` and `allowed_avatar_mimetypes`. An empty URL (no avatar) always may;
    /// with neither option set, anything may. Otherwise the media must be known here: local
    /// media that exists and is uploaded, or remote media in the cache (one not cached is
    /// refused, as Synapse refuses it), within the size and of an allowed type.
    pub async fn avatar_allowed(&self, mxc: &str) -> Result<bool> {
        let config = &self.config.media;
        let max_size = config.max_avatar_size.map(|size| size.0).filter(|&size| size > 0);
        let mimetypes = config.allowed_avatar_mimetypes.as_deref().filter(|types| !types.is_empty());
        if mxc.is_empty() || (max_size.is_none() && mimetypes.is_none()) {
            return Ok(true);
        }
        let Some((server_name, media_id)) = mxc.strip_prefix("mxc://").and_then(|rest| rest.split_once('/'))
        else {
            return Ok(false);
        };
        let Ok(media_id) = MediaId::parse(media_id) else { return Ok(false) };
        // This server's media, or another's in the remote media cache (a remote avatar is
        // checked only once a local user has fetched it, as Synapse does).
        let known = if server_name == self.server_name() {
            self.store.local_media(media_id.as_str()).await?.map(|record| (record.size, record.content_type))
        } else {
            self.store
                .remote_media(server_name, media_id.as_str())
                .await?
                .map(|record| (Some(record.size), record.content_type))
        };
        let Some((size, content_type)) = known else {
            tracing::info!(mxc, "refused an avatar that is not known here");
            return Ok(false);
        };
        let Some(size) = size else {
            tracing::info!(mxc, "refused an avatar of unknown size");
            return Ok(false);
        };
        if max_size.is_some_and(|max_size| size > max_size) {
            tracing::info!(mxc, size, "refused an avatar above max_avatar_size");
            return Ok(false);
        }
        if let Some(mimetypes) = mimetypes
            && !content_type.as_ref().is_some_and(|content_type| mimetypes.contains(content_type))
        {
            tracing::info!(mxc, content_type = ?content_type, "refused an avatar of a type not allowed");
            return Ok(false);
        }
        Ok(true)
    }

    /// [`Self::avatar_allowed`] as a check: `M_FORBIDDEN` when not.
    pub(crate) async fn check_avatar(&self, mxc: &str) -> Result<()> {
        if self.avatar_allowed(mxc).await? {
            Ok(())
        } else {
            Err(myelin_core::MatrixError::forbidden("This avatar is not allowed").into())
        }
    }
}
