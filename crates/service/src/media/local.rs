//! Uploads of local media: streamed to a temporary file under `tmp/` in the store, hashed
//! (SHA-256) and counted while they arrive, refused past `max_upload_size`, then renamed into
//! place and recorded. A dropped or failed upload leaves no file and no record: the temporary
//! file is deleted when its [`MediaUpload`] is dropped, and a file renamed into place is
//! deleted again unless its record was written.

use std::path::{Path, PathBuf};

use myelin_core::{ErrCode, ErrorKind, MatrixError};
use myelin_store::NewLocalMedia;
use sha2::{Digest, Sha256};
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;

use super::{MediaId, local_content_path};
use crate::auth::Requester;
use crate::ratelimit::Limiter;
use crate::s3_provider::MediaOrigin;
use crate::util::now_ms;
use crate::{Error, Result, Services};

/// Where an upload goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadTarget {
    /// A new media ID (`POST /upload`).
    New,
    /// A media ID reserved by `/create` (`PUT /upload/{serverName}/{mediaId}`).
    Reserved(MediaId),
}

/// What the uploader says of the content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadMetadata {
    /// The `Content-Type` given, if any.
    pub content_type: Option<String>,
    /// The `filename` given, if any.
    pub upload_name: Option<String>,
}

/// An upload in progress: its bytes go to a temporary file as they arrive. Dropping it
/// deletes the file.
pub struct MediaUpload {
    media_id: MediaId,
    reserved: bool,
    user_id: String,
    metadata: UploadMetadata,
    file: tokio::fs::File,
    temp_path: TempPath,
    hasher: Sha256,
    size: u64,
    limit: u64,
}

fn too_large(limit: u64) -> Error {
    MatrixError::too_large(format!("Uploaded content is larger than the limit of {limit} bytes")).into()
}

fn io_error(context: impl std::fmt::Display, error: std::io::Error) -> Error {
    Error::internal_with(context, error)
}

impl MediaUpload {
    /// The media ID the upload will have.
    pub fn media_id(&self) -> &MediaId {
        &self.media_id
    }

    /// How many bytes have arrived.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a chunk; `M_TOO_LARGE` once the content passes `max_upload_size`.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        let size = self.size.saturating_add(chunk.len() as u64);
        if size > self.limit {
            return Err(too_large(self.limit));
        }
        self.file.write_all(chunk).await.map_err(|e| io_error("writing an upload", e))?;
        self.hasher.update(chunk);
        self.size = size;
        Ok(())
    }
}

/// Deletes a file renamed into place unless its record was written (`disarm`).
pub(super) struct PlacedFile(pub(super) Option<PathBuf>);

impl PlacedFile {
    pub(super) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for PlacedFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Services {
    /// Starts an upload by `requester`. `declared_length` (the request's `Content-Length`)
    /// is refused up front when over `max_upload_size`. A new upload counts against
    /// `rc_media_create`; an upload to a reserved ID is checked (it exists, is the requester's,
    /// is still empty and not expired) before any byte is read.
    pub async fn begin_media_upload(
        &self,
        requester: &Requester,
        target: UploadTarget,
        metadata: UploadMetadata,
        declared_length: Option<u64>,
    ) -> Result<MediaUpload> {
        let limit = self.config.media.max_upload_size.0;
        if declared_length.is_some_and(|length| length > limit) {
            return Err(too_large(limit));
        }
        let (media_id, reserved) = match target {
            UploadTarget::New => {
                self.ratelimit_user(Limiter::MediaCreate, requester).await?;
                (MediaId::generate(), false)
            }
            UploadTarget::Reserved(media_id) => {
                self.check_reserved_upload(requester, &media_id).await?;
                (media_id, true)
            }
        };
        let (file, temp_path) = self.new_temp_file().await?;
        Ok(MediaUpload {
            media_id,
            reserved,
            user_id: requester.user_id.to_string(),
            metadata,
            file,
            temp_path,
            hasher: Sha256::new(),
            size: 0,
            limit,
        })
    }

    /// Synapse's `verify_can_upload`: the ID exists (404), is the requester's (403), has no
    /// content yet (409 `M_CANNOT_OVERWRITE_MEDIA`) and has not expired (404).
    async fn check_reserved_upload(&self, requester: &Requester, media_id: &MediaId) -> Result<()> {
        let record = self
            .store
            .local_media(media_id.as_str())
            .await?
            .ok_or_else(|| MatrixError::not_found("Unknown media ID"))?;
        if record.user_id != requester.user_id.as_str() {
            return Err(MatrixError::forbidden("Only the creator of the media ID can upload to it").into());
        }
        if record.is_uploaded() {
            return Err(cannot_overwrite());
        }
        if record.unused_expires_at.is_none_or(|at| at <= now_ms() as i64) {
            return Err(MatrixError::not_found("Media ID has expired").into());
        }
        Ok(())
    }

    async fn new_temp_file(&self) -> Result<(tokio::fs::File, TempPath)> {
        new_temp_file(self.media_store_root()).await
    }

    /// Finishes an upload whose bytes have all arrived: renames the file into place (or, when
    /// identical content is stored already, keeps only the earlier file) and writes the
    /// record. Returns the media ID. This runs to completion on a task of its own: a caller
    /// dropped while the record is being written could otherwise leave a committed record
    /// whose file its guard had removed.
    pub async fn finish_media_upload(&self, upload: MediaUpload) -> Result<MediaId> {
        let services = self.clone();
        self.media
            .finishing
            .spawn(async move { services.place_and_record_upload(upload).await })
            .await
            .map_err(|e| Error::internal_with("finishing an upload", e))?
    }

    async fn place_and_record_upload(&self, upload: MediaUpload) -> Result<MediaId> {
        let MediaUpload { media_id, reserved, user_id, metadata, mut file, temp_path, hasher, size, .. } =
            upload;
        file.flush().await.map_err(|e| io_error("writing an upload", e))?;
        // On disk before its record is written: a crash must not leave a record of a file
        // whose bytes were still in the page cache.
        file.sync_data().await.map_err(|e| io_error("writing an upload", e))?;
        drop(file);
        let sha256 = hex::encode(hasher.finalize());
        let mut placed = PlacedFile(None);
        let file_id = match self.existing_file_with(&sha256).await? {
            // The temporary file goes when `temp_path` is dropped.
            Some(file_id) => file_id,
            None => {
                let path = self.media_file_path(&local_content_path(&media_id));
                place_file(temp_path, &path).await?;
                // No `.await` between the rename and arming the guard.
                placed = PlacedFile(Some(path.clone()));
                // `media_storage_providers` mirror the new file (a synchronous one before the
                // answer: its failure fails the upload, and the guard removes the file).
                let rel_path = local_content_path(&media_id);
                self.storage_providers
                    .store_file(&rel_path.to_string_lossy(), &path, MediaOrigin::Local)
                    .await
                    .map_err(|e| Error::internal_with("mirroring an upload to its storage provider", e))?;
                media_id.as_str().to_owned()
            }
        };
        let content_type = metadata.content_type.clone();
        let record = NewLocalMedia {
            media_id: media_id.as_str().to_owned(),
            user_id,
            content_type: metadata.content_type,
            upload_name: metadata.upload_name,
            size,
            sha256,
            file_id,
            created_ts: now_ms() as i64,
            authenticated: self.config.media.enable_authenticated_media,
        };
        if reserved {
            if !self.store.complete_pending_media(&record).await? {
                return Err(cannot_overwrite());
            }
            self.media_uploaded();
        } else {
            self.store.insert_local_media(&record).await?;
        }
        placed.disarm();
        // `thumbnail_sizes`, before the answer as in Synapse; never a reason to fail.
        let file_path = self.media_file_path(&local_content_path(&MediaId::parse(&record.file_id)?));
        let source = super::thumbnails::ThumbnailSource::Local {
            media_id: media_id.clone(),
            file_id: MediaId::parse(&record.file_id)?,
            content_type,
        };
        self.pregenerate_thumbnails(&source, &file_path).await;
        Ok(media_id)
    }

    /// The media ID of a stored file holding content with this hash, if its file is there.
    async fn existing_file_with(&self, sha256: &str) -> Result<Option<String>> {
        let Some(file_id) = self.store.local_media_file_by_sha256(sha256).await? else {
            return Ok(None);
        };
        let path = self.media_file_path(&local_content_path(&MediaId::parse(&file_id)?));
        Ok(tokio::fs::try_exists(&path).await.unwrap_or(false).then_some(file_id))
    }

    /// Reserves a media ID for a later upload (`POST /_matrix/media/v1/create`): counts
    /// against `rc_media_create`; `M_LIMIT_EXCEEDED` when the requester already has
    /// `max_pending_media_uploads` IDs waiting. Returns the ID and when it expires (ms).
    pub async fn create_media_id(&self, requester: &Requester) -> Result<(MediaId, u64)> {
        self.ratelimit_user(Limiter::MediaCreate, requester).await?;
        let media_id = MediaId::generate();
        let now = now_ms();
        let expires_at = now.saturating_add(self.config.media.unused_expiration_time.0);
        let reserved = self
            .store
            .create_pending_media(
                media_id.as_str(),
                requester.user_id.as_str(),
                now as i64,
                expires_at as i64,
                self.config.media.enable_authenticated_media,
                self.config.media.max_pending_media_uploads,
            )
            .await?;
        if !reserved {
            return Err(MatrixError::new(ErrCode::LimitExceeded, "You have too many uploads pending").into());
        }
        Ok((media_id, expires_at))
    }

    /// Stores bytes produced inside the server (e.g. a URL preview's image) as new local media
    /// of `user_id`, without rate limits. Returns the media ID.
    pub async fn store_media_bytes(
        &self,
        user_id: &ruma::UserId,
        metadata: UploadMetadata,
        bytes: &[u8],
    ) -> Result<MediaId> {
        let mut upload = self.begin_internal_upload(user_id, metadata).await?;
        upload.write(bytes).await?;
        self.finish_media_upload(upload).await
    }

    /// Stores a file (read, not moved) as new local media of `user_id`, streamed as an upload
    /// is. Returns the media ID.
    pub async fn store_media_file(
        &self,
        user_id: &ruma::UserId,
        metadata: UploadMetadata,
        source: &Path,
    ) -> Result<MediaId> {
        use tokio::io::AsyncReadExt;
        let mut upload = self.begin_internal_upload(user_id, metadata).await?;
        let mut file = tokio::fs::File::open(source)
            .await
            .map_err(|e| io_error(format!("opening {}", source.display()), e))?;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = file
                .read(&mut buffer)
                .await
                .map_err(|e| io_error(format!("reading {}", source.display()), e))?;
            if n == 0 {
                break;
            }
            upload.write(&buffer[..n]).await?;
        }
        self.finish_media_upload(upload).await
    }

    async fn begin_internal_upload(
        &self,
        user_id: &ruma::UserId,
        metadata: UploadMetadata,
    ) -> Result<MediaUpload> {
        let (file, temp_path) = self.new_temp_file().await?;
        Ok(MediaUpload {
            media_id: MediaId::generate(),
            reserved: false,
            user_id: user_id.to_string(),
            metadata,
            file,
            temp_path,
            hasher: Sha256::new(),
            size: 0,
            limit: self.config.media.max_upload_size.0,
        })
    }
}

fn cannot_overwrite() -> Error {
    MatrixError::new(ErrCode::CannotOverwriteMedia, "Media ID already has content")
        .with_kind(ErrorKind::Conflict)
        .into()
}

/// A new temporary file under `tmp/` of the store at `root`. Created on this thread (one
/// `open`): a file made on a blocking thread after its caller was dropped would be nobody's to
/// delete.
pub(super) async fn new_temp_file(root: &Path) -> Result<(tokio::fs::File, TempPath)> {
    let dir = root.join("tmp");
    tokio::fs::create_dir_all(&dir).await.map_err(|e| io_error(format!("creating {}", dir.display()), e))?;
    let temp = tempfile::Builder::new()
        .prefix(".upload-")
        .tempfile_in(&dir)
        .map_err(|e| io_error("creating an upload file", e))?;
    let (file, temp_path) = temp.into_parts();
    Ok((tokio::fs::File::from_std(file), temp_path))
}

/// Renames a finished temporary file to `path`, creating its directories. The rename runs on
/// this thread (one `rename`), so it is done or not done when the caller can be dropped: a
/// rename finishing on a blocking thread after the caller's cleanup would leave a file behind.
pub(super) async fn place_file(temp_path: TempPath, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| io_error(format!("creating {}", parent.display()), e))?;
    }
    temp_path.persist(path).map_err(|e| io_error("placing an upload", e.error))?;
    // The rename itself is durable once its directory is synced.
    if let Some(parent) = path.parent()
        && let Ok(dir) = std::fs::File::open(parent)
        && let Err(error) = dir.sync_all()
    {
        tracing::warn!(%error, directory = %parent.display(), "could not sync a media directory");
    }
    Ok(())
}
