//! The media repository's core: local media on disk in Synapse's layout, uploads streamed to
//! it, and downloads read from it.
//!
//! # Layout
//!
//! - [`MediaId`]: a media ID as a path component (`[A-Za-z0-9_-]+`), so that no ID can name a
//!   path outside the store.
//! - Paths (Synapse's `synapse/media/filepath.py`), relative to `media_store_path`:
//!   [`local_content_path`] (`local_content/ab/cd/rest_of_id`), [`local_thumbnail_path`]
//!   (`local_thumbnails/ab/cd/rest_of_id/{w}-{h}-{top}-{sub}-{method}`) and
//!   [`local_thumbnail_dir`]. A storage provider mirrors files by these relative paths.
//! - [`local`]: uploads (`POST /upload`, `/create` + `PUT /upload/{server}/{id}`) streamed to a
//!   temporary file under `tmp/`, hashed and counted while they arrive, renamed into place,
//!   then recorded; identical content is stored once (a record's `file_id` names the media whose
//!   file holds its bytes). Bytes or a file from inside the server (URL preview images) are
//!   stored through the same path.
//! - [`thumbnails`]: thumbnails made at upload for `thumbnail_sizes`, chosen for a request as
//!   Synapse chooses, or made at the exact size on demand (`dynamic_thumbnails`).
//! - Downloads ([`Services::local_media_for_download`], [`Services::open_local_media`]): the
//!   record decides (quarantine, legacy routes, pending uploads), then the file is opened.
//!
//! - [`admin`]: the admin's hooks (quarantine, protection, deletion, listing), retention
//!   (`media_retention`) run by a background worker, batched last-access times, and the avatar
//!   rules (`max_avatar_size`, `allowed_avatar_mimetypes`).
//!
//! - [`remote`]: other servers' media, fetched over federation for local clients (one download
//!   per media at a time), cached under `remote_content/{origin}/...` and thumbnailed here;
//!   this server's own media served to other servers (`/_matrix/federation/v1/media/...`) goes
//!   through the local download and thumbnail paths.

pub mod admin;
pub mod local;
pub mod remote;
pub mod thumbnails;

use std::path::{Path, PathBuf};
use std::time::Duration;

use myelin_core::{ErrCode, MatrixError};
use myelin_store::LocalMediaRecord;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::util::now_ms;
use crate::{Error, Result, Services};

pub use local::{MediaUpload, UploadMetadata, UploadTarget};
pub use remote::{RemoteOrigin, remote_content_path, remote_thumbnail_dir};
pub use thumbnails::{ThumbnailFile, ThumbnailRequest};

/// Shared state of the media repository: wakes downloads waiting for an asynchronous upload,
/// tracks uploads being finished (they run to completion on tasks of their own), and gathers
/// the media read since the last-access times were last written (one batch every
/// [`admin::ACCESS_FLUSH_INTERVAL`], not a write per download).
#[derive(Default)]
pub struct Media {
    uploaded: Notify,
    finishing: TaskTracker,
    /// `(origin, media ID)`, the origin empty for local media.
    accessed: parking_lot::Mutex<std::collections::HashSet<(String, String)>>,
    thumbnailing: thumbnails::Thumbnailing,
    remote: remote::RemoteDownloads,
}

/// The longest a download waits for a pending asynchronous upload (Synapse's
/// `MAXIMUM_ALLOWED_MAX_TIMEOUT_MS`), and how long it waits when the client does not say
/// (`DEFAULT_MAX_TIMEOUT_MS`).
pub const MAX_UPLOAD_WAIT: Duration = Duration::from_secs(60);
pub const DEFAULT_UPLOAD_WAIT: Duration = Duration::from_secs(20);

/// A media ID safe to use as a file name: 1 to 255 of `A-Z a-z 0-9 _ -`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MediaId(String);

impl MediaId {
    /// Checks an ID from a request; anything else is `M_INVALID_PARAM`.
    pub fn parse(text: &str) -> Result<MediaId> {
        let valid = !text.is_empty()
            && text.len() <= 255
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(MediaId(text.to_owned()))
        } else {
            Err(MatrixError::invalid_param("Invalid media ID").into())
        }
    }

    /// A new random ID (24 letters and digits, as Synapse's).
    pub fn generate() -> MediaId {
        MediaId(crate::util::random_string(24))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `ab`, `cd`, `rest`: the directory levels of Synapse's layout. IDs shorter than five
    /// characters (never generated here) keep what they have, padded with `_`.
    fn components(&self) -> [String; 3] {
        let padded = format!("{:_<5}", self.0);
        [padded[0..2].to_owned(), padded[2..4].to_owned(), padded[4..].to_owned()]
    }
}

impl std::fmt::Display for MediaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `local_content/ab/cd/rest_of_id`: where a local media's bytes live, relative to the store.
pub fn local_content_path(media_id: &MediaId) -> PathBuf {
    let [a, b, rest] = media_id.components();
    Path::new("local_content").join(a).join(b).join(rest)
}

/// `local_thumbnails/ab/cd/rest_of_id`: the directory of a local media's thumbnails.
pub fn local_thumbnail_dir(media_id: &MediaId) -> PathBuf {
    let [a, b, rest] = media_id.components();
    Path::new("local_thumbnails").join(a).join(b).join(rest)
}

/// `local_thumbnails/ab/cd/rest_of_id/{width}-{height}-{top}-{sub}-{method}`: one thumbnail,
/// named as Synapse names it (`content_type` is `top/sub`, e.g. `image/png`). `None` for a
/// content type that is not `top/sub` or would leave the directory.
pub fn local_thumbnail_path(
    media_id: &MediaId,
    width: u32,
    height: u32,
    content_type: &str,
    method: &str,
) -> Option<PathBuf> {
    Some(local_thumbnail_dir(media_id).join(thumbnail_file_name(width, height, content_type, method)?))
}

/// `{width}-{height}-{top}-{sub}-{method}`: a thumbnail's file name. `None` for a content type
/// that is not `top/sub` or would leave the directory.
fn thumbnail_file_name(width: u32, height: u32, content_type: &str, method: &str) -> Option<String> {
    let (top, sub) = content_type.split_once('/')?;
    let safe = |part: &str| {
        !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-._".contains(&b))
    };
    if !safe(top) || !safe(sub) || !safe(method) || sub.contains("..") {
        return None;
    }
    Some(format!("{width}-{height}-{top}-{sub}-{method}"))
}

/// Which routes a download came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaAccess {
    /// `/_matrix/client/v1/media/...`, with an access token.
    Authenticated,
    /// The unauthenticated `/_matrix/media/v3/...`: only for media uploaded while
    /// `enable_authenticated_media` was off (or while it is off now).
    Legacy,
}

/// A local media ready to be read: its record and its open file.
pub struct MediaFile {
    pub file: tokio::fs::File,
    /// The file's length in bytes.
    pub size: u64,
    pub content_type: Option<String>,
    pub upload_name: Option<String>,
}

impl Services {
    /// The store's root directory (`media_store_path`).
    pub fn media_store_root(&self) -> &Path {
        &self.config.media.media_store_path
    }

    /// The absolute path of a file given by its relative path (e.g. [`local_content_path`]).
    pub fn media_file_path(&self, relative: &Path) -> PathBuf {
        self.media_store_root().join(relative)
    }

    /// The record of a local media for a download through `access`: waits up to `wait` (capped
    /// at [`MAX_UPLOAD_WAIT`]) for a pending asynchronous upload. Unknown, expired, quarantined
    /// and (on the legacy routes) authenticated media are `M_NOT_FOUND`; media still not
    /// uploaded after the wait is `M_NOT_YET_UPLOADED`. Another server's media is not found
    /// here (see [`Self::remote_media_for_download`]).
    pub async fn local_media_for_download(
        &self,
        server_name: &str,
        media_id: &MediaId,
        access: MediaAccess,
        wait: Duration,
    ) -> Result<LocalMediaRecord> {
        if server_name != self.server_name() {
            return Err(not_found());
        }
        let deadline = tokio::time::Instant::now() + wait.min(MAX_UPLOAD_WAIT);
        loop {
            let uploaded = self.media.uploaded.notified();
            tokio::pin!(uploaded);
            uploaded.as_mut().enable();
            let record = self.store.local_media(media_id.as_str()).await?.ok_or_else(not_found)?;
            if record.quarantined_by.is_some() {
                return Err(not_found());
            }
            if access == MediaAccess::Legacy
                && record.authenticated
                && self.config.media.enable_authenticated_media
            {
                return Err(not_found());
            }
            if record.is_uploaded() {
                return Ok(record);
            }
            let expired = record.unused_expires_at.is_none_or(|at| at <= now_ms() as i64);
            if expired {
                return Err(not_found());
            }
            if tokio::time::timeout_at(deadline, uploaded).await.is_err() {
                return Err(
                    MatrixError::new(ErrCode::NotYetUploaded, "Media has not been uploaded yet").into()
                );
            }
        }
    }

    /// Opens an uploaded local media's file for reading and records the access.
    pub async fn open_local_media(&self, record: &LocalMediaRecord) -> Result<MediaFile> {
        let file_id = record.file_id.as_deref().ok_or_else(not_found)?;
        let rel_path = local_content_path(&MediaId::parse(file_id)?);
        let Some(file) = self.open_media_file(&rel_path).await? else {
            tracing::warn!(media_id = %record.media_id, path = %rel_path.display(), "a media file is missing");
            return Err(not_found());
        };
        let size = file
            .metadata()
            .await
            .map_err(|error| Error::internal_with(format!("reading {}", rel_path.display()), error))?
            .len();
        self.media_accessed(&record.media_id);
        Ok(MediaFile {
            file,
            size,
            content_type: record.content_type.clone(),
            upload_name: record.upload_name.clone(),
        })
    }

    /// Opens a media file by its relative path: from the local store, else fetched back from a
    /// storage provider (as Synapse does); `None` when neither has it.
    pub(crate) async fn open_media_file(&self, rel_path: &Path) -> Result<Option<tokio::fs::File>> {
        let path = self.media_file_path(rel_path);
        match tokio::fs::File::open(&path).await {
            Ok(file) => return Ok(Some(file)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(Error::internal_with(format!("opening {}", path.display()), error)),
        }
        let fetched = self
            .storage_providers
            .fetch_to_file(&rel_path.to_string_lossy(), &path)
            .await
            .map_err(|e| Error::internal_with("fetching media from its storage provider", e))?;
        if !fetched {
            return Ok(None);
        }
        tokio::fs::File::open(&path)
            .await
            .map(Some)
            .map_err(|error| Error::internal_with(format!("opening {}", path.display()), error))
    }

    /// Waits until every upload being finished (including those whose caller went away) has
    /// its file and record in place, or has cleaned up.
    pub async fn wait_for_finishing_uploads(&self) {
        self.media.finishing.close();
        self.media.finishing.wait().await;
        self.media.finishing.reopen();
    }

    /// Wakes downloads waiting for an asynchronous upload.
    pub(crate) fn media_uploaded(&self) {
        self.media.uploaded.notify_waiters();
    }
}

pub(crate) fn not_found() -> Error {
    MatrixError::not_found("Media not found").into()
}
