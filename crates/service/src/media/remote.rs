//! Other servers' media, for local clients: fetched over federation, cached, served from the
//! cache (Synapse's `get_remote_media` and `_federation_download_remote_file`).
//!
//! - A request for `mxc://{origin}/{id}` first honours `federation_domain_whitelist` (403,
//!   even for cached media) and `allow_remote=false` (404); a cached copy is then served
//!   (quarantined: 404; on the legacy unauthenticated routes, only media fetched while
//!   authenticated media was off, and nothing is fetched there while it is on).
//! - Otherwise the media is fetched from its origin, one download per `(origin, id)` at a
//!   time: concurrent requests wait for the first and then read the cache. The download runs
//!   on a task of its own, so a requester going away does not cancel it for the others. It asks
//!   `/_matrix/federation/v1/media/download/{id}` (multipart: JSON, then the file) and, when the
//!   origin does not know that endpoint (404/405 `M_UNRECOGNIZED` or a body that is not JSON),
//!   the legacy `/_matrix/media/v3/download/{origin}/{id}?allow_remote=false`. `timeout_ms` is
//!   passed on; the bytes stream into a temporary file, counted against `max_upload_size`
//!   (past it: `502 M_TOO_LARGE`, as Synapse), hashed, renamed to
//!   `remote_content/{origin}/ab/cd/rest` under an ID chosen here, mirrored to the storage
//!   providers and recorded (`store::remote_media`); the thumbnails of `thumbnail_sizes` are
//!   made before the answer, as for an upload. A failed fetch is `502 M_UNKNOWN`, a remote
//!   404 is `404 M_NOT_FOUND`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use myelin_core::{ErrorKind, MatrixError};
use myelin_federation::{FederationError, MediaDownload, MediaFormat};
use myelin_store::{DeletedRemoteMedia, RemoteMediaRecord};
use ruma::{OwnedServerName, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWrite, AsyncWriteExt};

use super::local::{PlacedFile, new_temp_file, place_file};
use super::thumbnails::ThumbnailSource;
use super::{MAX_UPLOAD_WAIT, MediaAccess, MediaFile, MediaId, not_found};
use crate::s3_provider::MediaOrigin;
use crate::util::now_ms;
use crate::{Error, Result, Services};

/// A server name that is safe as a directory name: a valid server name that does not start
/// with a dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RemoteOrigin(OwnedServerName);

impl RemoteOrigin {
    /// Checks a server name from a request; anything else is `M_INVALID_PARAM`.
    pub fn parse(text: &str) -> Result<RemoteOrigin> {
        let name = OwnedServerName::try_from(text)
            .ok()
            .filter(|name| !name.as_str().starts_with('.') && !name.as_str().contains('/'))
            .ok_or_else(|| MatrixError::invalid_param("Invalid server name"))?;
        Ok(RemoteOrigin(name))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn server_name(&self) -> &ServerName {
        &self.0
    }
}

/// `remote_content/{origin}/ab/cd/rest_of_file_id`: where a cached remote media's bytes live.
pub fn remote_content_path(origin: &RemoteOrigin, file_id: &MediaId) -> PathBuf {
    let [a, b, rest] = file_id.components();
    Path::new("remote_content").join(origin.as_str()).join(a).join(b).join(rest)
}

/// `remote_thumbnail/{origin}/ab/cd/rest_of_file_id`: the directory of its thumbnails.
pub fn remote_thumbnail_dir(origin: &RemoteOrigin, file_id: &MediaId) -> PathBuf {
    let [a, b, rest] = file_id.components();
    Path::new("remote_thumbnail").join(origin.as_str()).join(a).join(b).join(rest)
}

/// One thumbnail of a cached remote media, named as a local one is (see
/// [`super::local_thumbnail_path`]).
pub fn remote_thumbnail_path(
    origin: &RemoteOrigin,
    file_id: &MediaId,
    width: u32,
    height: u32,
    content_type: &str,
    method: &str,
) -> Option<PathBuf> {
    let name = super::thumbnail_file_name(width, height, content_type, method)?;
    Some(remote_thumbnail_dir(origin, file_id).join(name))
}

/// One lock per `(origin, media ID)` being downloaded.
type DownloadLocks = HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;

/// The downloads in progress and how many were made.
#[derive(Default)]
pub(super) struct RemoteDownloads {
    locks: parking_lot::Mutex<DownloadLocks>,
    fetched: AtomicU64,
}

impl Services {
    /// A media of any server for a download through `access`: this server's through
    /// [`Self::local_media_for_download`], another's from the cache or fetched now (see the
    /// module's documentation), opened.
    pub async fn media_for_download(
        &self,
        server_name: &str,
        media_id: &MediaId,
        access: MediaAccess,
        wait: Duration,
        allow_remote: bool,
    ) -> Result<MediaFile> {
        if server_name == self.server_name() {
            let record = self.local_media_for_download(server_name, media_id, access, wait).await?;
            return self.open_local_media(&record).await;
        }
        let record =
            self.remote_media_for_download(server_name, media_id, access, wait, allow_remote).await?;
        let origin = RemoteOrigin::parse(&record.media_origin)?;
        let rel_path = remote_content_path(&origin, &MediaId::parse(&record.file_id)?);
        let Some(file) = self.open_media_file(&rel_path).await? else {
            tracing::warn!(origin = %origin.as_str(), %media_id, "a cached remote media file is missing");
            return Err(not_found());
        };
        let size = file.metadata().await.map_err(|e| Error::internal_with("reading cached media", e))?.len();
        self.media_accessed_from(origin.as_str(), &record.media_id);
        Ok(MediaFile { file, size, content_type: record.content_type, upload_name: record.upload_name })
    }

    /// The cache record of another server's media, fetched first if this server does not hold
    /// it. `wait` is passed on to the origin as `timeout_ms`.
    pub async fn remote_media_for_download(
        &self,
        server_name: &str,
        media_id: &MediaId,
        access: MediaAccess,
        wait: Duration,
        allow_remote: bool,
    ) -> Result<RemoteMediaRecord> {
        let origin = RemoteOrigin::parse(server_name)?;
        if !self.federation.client.allows(origin.as_str()) {
            return Err(MatrixError::forbidden(format!("Federation denied with {}.", origin.as_str())).into());
        }
        if !allow_remote {
            return Err(not_found());
        }
        let legacy_refused = access == MediaAccess::Legacy && self.config.media.enable_authenticated_media;
        if let Some(record) = self.cached_remote_media(&origin, media_id, legacy_refused).await? {
            return Ok(record);
        }
        if legacy_refused {
            return Err(not_found());
        }
        let key = (origin.as_str().to_owned(), media_id.as_str().to_owned());
        let lock = self.media.remote.locks.lock().entry(key.clone()).or_default().clone();
        let services = self.clone();
        let media_id = media_id.clone();
        self.media
            .finishing
            .spawn(async move {
                let guard = lock.lock().await;
                // Fetched while this waited for the lock?
                let result = match services.cached_remote_media(&origin, &media_id, false).await {
                    Ok(Some(record)) => Ok(record),
                    Ok(None) => services.fetch_remote_media(&origin, &media_id, wait).await,
                    Err(error) => Err(error),
                };
                drop(guard);
                let mut locks = services.media.remote.locks.lock();
                // The map's and this task's: nobody else waits for this download.
                if locks.get(&key).is_some_and(|lock| Arc::strong_count(lock) <= 2) {
                    locks.remove(&key);
                }
                result
            })
            .await
            .map_err(|e| Error::internal_with("fetching remote media", e))?
    }

    /// How many remote media this process has fetched.
    pub fn remote_media_fetched(&self) -> u64 {
        self.media.remote.fetched.load(Ordering::Relaxed)
    }

    /// The cached record, if any: quarantined media is not found, and so is media fetched
    /// with authenticated media on when `authenticated_refused`.
    async fn cached_remote_media(
        &self,
        origin: &RemoteOrigin,
        media_id: &MediaId,
        authenticated_refused: bool,
    ) -> Result<Option<RemoteMediaRecord>> {
        let Some(record) = self.store.remote_media(origin.as_str(), media_id.as_str()).await? else {
            return Ok(None);
        };
        if record.quarantined_by.is_some() || (authenticated_refused && record.authenticated) {
            return Err(not_found());
        }
        Ok(Some(record))
    }

    /// Downloads a remote media into the cache (the caller holds its lock).
    async fn fetch_remote_media(
        &self,
        origin: &RemoteOrigin,
        media_id: &MediaId,
        wait: Duration,
    ) -> Result<RemoteMediaRecord> {
        let (file, temp_path) = new_temp_file(self.media_store_root()).await?;
        let mut sink = HashingFile { file, hasher: Sha256::new() };
        let limit = self.config.media.max_upload_size.0;
        let timeout_ms = wait.min(MAX_UPLOAD_WAIT).as_millis();
        let client = &self.federation.client;
        let path = format!("/_matrix/federation/v1/media/download/{media_id}?timeout_ms={timeout_ms}");
        let mut result =
            client.get_media(origin.server_name(), &path, MediaFormat::Multipart, limit, &mut sink).await;
        if result.as_ref().is_err_and(is_unknown_endpoint) {
            tracing::debug!(origin = %origin.as_str(), %media_id, "no federation media endpoint; the legacy one");
            sink.reset().await?;
            let path = format!(
                "/_matrix/media/v3/download/{}/{media_id}?allow_remote=false&timeout_ms={timeout_ms}",
                origin.as_str()
            );
            result =
                client.get_media(origin.server_name(), &path, MediaFormat::Plain, limit, &mut sink).await;
        }
        let download = result.map_err(|error| fetch_error(origin, media_id, error))?;
        sink.file.flush().await.map_err(|e| Error::internal_with("writing remote media", e))?;
        let HashingFile { file, hasher } = sink;
        drop(file);

        let file_id = MediaId::generate();
        let rel_path = remote_content_path(origin, &file_id);
        let path = self.media_file_path(&rel_path);
        place_file(temp_path, &path).await?;
        // No `.await` between the rename and arming the guard.
        let mut placed = PlacedFile(Some(path.clone()));
        self.storage_providers
            .store_file(&rel_path.to_string_lossy(), &path, MediaOrigin::Remote)
            .await
            .map_err(|e| Error::internal_with("mirroring remote media to its storage provider", e))?;
        let now = now_ms() as i64;
        let MediaDownload { content_type, content_disposition, length } = download;
        let record = RemoteMediaRecord {
            media_origin: origin.as_str().to_owned(),
            media_id: media_id.as_str().to_owned(),
            content_type: Some(content_type.unwrap_or_else(|| "application/octet-stream".to_owned())),
            upload_name: content_disposition.as_deref().and_then(file_name_from_disposition),
            size: length,
            sha256: hex::encode(hasher.finalize()),
            file_id: file_id.as_str().to_owned(),
            created_ts: now,
            last_access_ts: now,
            quarantined_by: None,
            authenticated: self.config.media.enable_authenticated_media,
        };
        if !self.store.insert_remote_media(&record).await? {
            // Another process fetched it first: its copy stays, this one goes with the guard.
            drop(placed);
            return self
                .store
                .remote_media(origin.as_str(), media_id.as_str())
                .await?
                .ok_or_else(|| Error::internal("a remote media recorded by another process went missing"));
        }
        placed.disarm();
        self.media.remote.fetched.fetch_add(1, Ordering::Relaxed);
        tracing::info!(origin = %origin.as_str(), %media_id, size = length, "remote media cached");
        self.pregenerate_thumbnails(&ThumbnailSource::remote(&record)?, &path).await;
        Ok(record)
    }

    /// Quarantines (`by` an admin) or releases (`None`) a cached remote media; `false` when
    /// this server holds no such media.
    pub async fn set_remote_media_quarantine(
        &self,
        origin: &str,
        media_id: &MediaId,
        by: Option<&ruma::UserId>,
    ) -> Result<bool> {
        let origin = RemoteOrigin::parse(origin)?;
        let changed = self
            .store
            .set_remote_media_quarantine(origin.as_str(), media_id.as_str(), by.map(|user| user.as_str()))
            .await?;
        Ok(changed > 0)
    }

    /// Deletes the cached remote media not read since `before_ts` (quarantined media stays),
    /// with its files and thumbnails (Synapse's `delete_old_remote_media`). Returns how many.
    pub async fn purge_remote_media_cache(&self, before_ts: i64) -> Result<u64> {
        let deleted = self.store.delete_old_remote_media(before_ts).await?;
        for media in &deleted {
            self.delete_remote_media_files(media).await;
        }
        Ok(deleted.len() as u64)
    }

    async fn delete_remote_media_files(&self, media: &DeletedRemoteMedia) {
        let (Ok(origin), Ok(file_id)) =
            (RemoteOrigin::parse(&media.media_origin), MediaId::parse(&media.file_id))
        else {
            return;
        };
        let content = self.media_file_path(&remote_content_path(&origin, &file_id));
        if let Err(error) = tokio::fs::remove_file(&content).await
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %content.display(), %error, "could not delete a cached remote media file");
        }
        let thumbnails = self.media_file_path(&remote_thumbnail_dir(&origin, &file_id));
        if let Err(error) = tokio::fs::remove_dir_all(&thumbnails).await
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %thumbnails.display(), %error, "could not delete cached remote thumbnails");
        }
    }
}

/// Synapse's `is_unknown_endpoint`: 404 or 405 with `M_UNRECOGNIZED` or a body that is not a
/// Matrix error, or 400 `M_UNRECOGNIZED` (older Synapses).
fn is_unknown_endpoint(error: &FederationError) -> bool {
    let FederationError::Status { status, errcode, .. } = error else { return false };
    let unrecognized = errcode.as_deref() == Some("M_UNRECOGNIZED");
    (matches!(status, 404 | 405) && (unrecognized || errcode.is_none())) || (*status == 400 && unrecognized)
}

/// What the client is told of a failed fetch (Synapse's answers).
fn fetch_error(origin: &RemoteOrigin, media_id: &MediaId, error: FederationError) -> Error {
    tracing::warn!(origin = %origin.as_str(), %media_id, %error, "fetching remote media failed");
    match error {
        FederationError::Status { status: 404, .. } => not_found(),
        FederationError::TooLarge { limit, .. } => {
            MatrixError::too_large(format!("Requested file is too large > {limit} bytes"))
                .with_kind(ErrorKind::BadGateway)
                .into()
        }
        FederationError::Denied { destination } => {
            MatrixError::forbidden(format!("Federation denied with {destination}.")).into()
        }
        _ => MatrixError::unknown("Failed to fetch remote media").with_kind(ErrorKind::BadGateway).into(),
    }
}

/// The file name a `Content-Disposition` gives (Synapse's `get_filename_from_headers`):
/// `filename*=utf-8''...` percent-decoded, else `filename=` as a token or quoted string.
fn file_name_from_disposition(disposition: &str) -> Option<String> {
    let mut plain = None;
    for param in disposition.split(';').skip(1) {
        let Some((name, value)) = param.split_once('=') else { continue };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "filename*" {
            let (charset, rest) = value.split_once('\'')?;
            let (_, encoded) = rest.split_once('\'')?;
            if !charset.eq_ignore_ascii_case("utf-8") {
                continue;
            }
            return percent_encoding::percent_decode_str(encoded)
                .decode_utf8()
                .ok()
                .map(|name| name.into_owned())
                .filter(|name| !name.is_empty());
        }
        if name == "filename" {
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
            plain = Some(value.to_owned()).filter(|name| !name.is_empty() && name.is_ascii());
        }
    }
    plain
}

/// The temporary file of a download, hashing what is written to it.
struct HashingFile {
    file: tokio::fs::File,
    hasher: Sha256,
}

impl HashingFile {
    /// Empties the file and the hash (a second attempt after a first one failed).
    async fn reset(&mut self) -> Result<()> {
        self.file.set_len(0).await.map_err(|e| Error::internal_with("truncating a download", e))?;
        self.file.rewind().await.map_err(|e| Error::internal_with("truncating a download", e))?;
        self.hasher = Sha256::new();
        Ok(())
    }
}

impl AsyncWrite for HashingFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.file).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            this.hasher.update(&buf[..written]);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_read_from_dispositions_as_synapse_reads_them() {
        assert_eq!(file_name_from_disposition("inline; filename=cat.png").as_deref(), Some("cat.png"));
        assert_eq!(
            file_name_from_disposition("attachment; filename=\"a b.pdf\"").as_deref(),
            Some("a b.pdf")
        );
        assert_eq!(
            file_name_from_disposition("attachment; filename*=utf-8''a%20b%22%C3%BC.pdf").as_deref(),
            Some("a b\"ü.pdf")
        );
        assert_eq!(file_name_from_disposition("inline"), None);
        assert_eq!(file_name_from_disposition("inline; filename="), None);
    }

    #[test]
    fn origins_are_server_names_safe_as_directories() {
        assert!(RemoteOrigin::parse("a.test:8448").is_ok());
        assert!(RemoteOrigin::parse("[::1]:8448").is_ok());
        for bad in ["", "..", ".", "a/b", "../x", "a b"] {
            assert!(RemoteOrigin::parse(bad).is_err(), "{bad:?}");
        }
        let origin = RemoteOrigin::parse("b.test:1").unwrap();
        let file_id = MediaId::parse("abcdefgh").unwrap();
        assert_eq!(remote_content_path(&origin, &file_id), Path::new("remote_content/b.test:1/ab/cd/efgh"));
    }

    #[test]
    fn unknown_endpoints_are_recognised_as_synapse_does() {
        let status = |status: u16, errcode: Option<&str>| FederationError::Status {
            destination: "x".into(),
            status,
            errcode: errcode.map(str::to_owned),
            error: None,
        };
        assert!(is_unknown_endpoint(&status(404, Some("M_UNRECOGNIZED"))));
        assert!(is_unknown_endpoint(&status(404, None)));
        assert!(is_unknown_endpoint(&status(405, Some("M_UNRECOGNIZED"))));
        assert!(is_unknown_endpoint(&status(400, Some("M_UNRECOGNIZED"))));
        assert!(!is_unknown_endpoint(&status(404, Some("M_NOT_FOUND"))));
        assert!(!is_unknown_endpoint(&status(500, None)));
    }
}
