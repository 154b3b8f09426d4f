//! Thumbnails of local media, as Synapse's `ThumbnailProvider` makes and serves them.
//!
//! - At upload, the configured `thumbnail_sizes` are made on a blocking thread
//!   ([`crate::thumbnail::pregenerate`]) and stored under their real sizes; a failure is
//!   logged and never fails the upload.
//! - A request is served, with `dynamic_thumbnails` off, by the stored thumbnail Synapse's
//!   `_select_thumbnail` picks ([`crate::thumbnail::select_thumbnail`]); a medium with no
//!   thumbnail at all is `400 M_UNKNOWN`, one with none of the requested method `404`. With
//!   `dynamic_thumbnails` on, a thumbnail of exactly the requested box (and animation) is served,
//!   made on the first request and stored under the box's size; concurrent requests for the
//!   same one wait for a single generation (a lock per thumbnail, taken inside a task of its
//!   own, so a caller going away does not stop a generation others wait for).
//! - Cached remote media is thumbnailed here the same way, as Synapse does (the remote server
//!   is never asked for a thumbnail): [`ThumbnailSource`] says whose media it is, where its
//!   thumbnails' files go (`local_thumbnails/...` or `remote_thumbnail/{origin}/...`) and which
//!   table records them.
//! - Each thumbnail is a file at [`local_thumbnail_path`] (or [`super::remote::remote_thumbnail_path`]) (written to `tmp/` and renamed into
//!   place, so a reader never sees half a file), mirrored to the `media_storage_providers`,
//!   then recorded. A file missing locally is fetched back from a provider, else made again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use myelin_config::{ThumbnailMethod, ThumbnailSize};
use myelin_core::MatrixError;
use myelin_store::{LocalMediaRecord, RemoteMediaRecord, ThumbnailRecord};
use tokio::io::AsyncWriteExt;

use super::local::{new_temp_file, place_file};
use super::remote::{RemoteOrigin, remote_content_path, remote_thumbnail_path};
use super::{MediaAccess, MediaId, local_content_path, local_thumbnail_path};
use crate::s3_provider::MediaOrigin;
use crate::thumbnail::{self, StoredThumbnail, Thumbnail, ThumbnailError};
use crate::{Error, Result, Services};

/// The type of the animated thumbnails made here.
const ANIMATED_TYPE: &str = "image/gif";

/// What a thumbnail request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ThumbnailRequest {
    /// The box and the method.
    pub size: ThumbnailSize,
    /// Whether an animated source should give an animated thumbnail.
    pub animated: bool,
}

/// A thumbnail ready to be read.
pub struct ThumbnailFile {
    pub file: tokio::fs::File,
    /// The file's length in bytes.
    pub length: u64,
    pub content_type: String,
}

/// A media (its origin, empty for local media, and its ID) and what is asked of it: one
/// thumbnail made on demand.
type ThumbnailKey = (String, String, ThumbnailRequest);

/// The media a thumbnail is made of.
#[derive(Clone, Debug)]
pub(crate) enum ThumbnailSource {
    /// A local media: its ID, the ID of the file holding its bytes, and its type.
    Local { media_id: MediaId, file_id: MediaId, content_type: Option<String> },
    /// A cached remote media: its origin, its ID there, the file this server keeps, its type.
    Remote { origin: RemoteOrigin, media_id: String, file_id: MediaId, content_type: Option<String> },
}

impl ThumbnailSource {
    pub(crate) fn local(record: &LocalMediaRecord) -> Result<ThumbnailSource> {
        Ok(ThumbnailSource::Local {
            media_id: MediaId::parse(&record.media_id)?,
            file_id: MediaId::parse(record.file_id.as_deref().unwrap_or(&record.media_id))?,
            content_type: record.content_type.clone(),
        })
    }

    pub(crate) fn remote(record: &RemoteMediaRecord) -> Result<ThumbnailSource> {
        Ok(ThumbnailSource::Remote {
            origin: RemoteOrigin::parse(&record.media_origin)?,
            media_id: record.media_id.clone(),
            file_id: MediaId::parse(&record.file_id)?,
            content_type: record.content_type.clone(),
        })
    }

    fn content_type(&self) -> Option<&str> {
        match self {
            ThumbnailSource::Local { content_type, .. } | ThumbnailSource::Remote { content_type, .. } => {
                content_type.as_deref()
            }
        }
    }

    /// The origin (empty for local media) and the media ID.
    fn key(&self) -> (String, String) {
        match self {
            ThumbnailSource::Local { media_id, .. } => (String::new(), media_id.as_str().to_owned()),
            ThumbnailSource::Remote { origin, media_id, .. } => {
                (origin.as_str().to_owned(), media_id.clone())
            }
        }
    }

    /// The relative path of the media's bytes.
    fn content_rel_path(&self) -> std::path::PathBuf {
        match self {
            ThumbnailSource::Local { file_id, .. } => local_content_path(file_id),
            ThumbnailSource::Remote { origin, file_id, .. } => remote_content_path(origin, file_id),
        }
    }

    fn storage_origin(&self) -> MediaOrigin {
        match self {
            ThumbnailSource::Local { .. } => MediaOrigin::Local,
            ThumbnailSource::Remote { .. } => MediaOrigin::Remote,
        }
    }

    fn thumbnail_rel_path(
        &self,
        width: u32,
        height: u32,
        content_type: &str,
        method: ThumbnailMethod,
    ) -> Result<std::path::PathBuf> {
        let path = match self {
            ThumbnailSource::Local { media_id, .. } => {
                local_thumbnail_path(media_id, width, height, content_type, method.as_str())
            }
            ThumbnailSource::Remote { origin, file_id, .. } => {
                remote_thumbnail_path(origin, file_id, width, height, content_type, method.as_str())
            }
        };
        path.ok_or_else(|| Error::internal(format!("a thumbnail of {self:?} has type {content_type:?}")))
    }
}

impl std::fmt::Display for ThumbnailSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ThumbnailSource::Local { media_id, .. } => write!(f, "{media_id}"),
            ThumbnailSource::Remote { origin, media_id, .. } => write!(f, "{}/{media_id}", origin.as_str()),
        }
    }
}

/// The thumbnails being made on demand, one lock per thumbnail, how many were made, and
/// the permits of the blocking threads that make them (one per core: each decode may hold
/// up to `max_image_pixels` of pixels, so their number is bounded, not their queue).
pub(super) struct Thumbnailing {
    locks: parking_lot::Mutex<HashMap<ThumbnailKey, Arc<tokio::sync::Mutex<()>>>>,
    generated: AtomicU64,
    workers: tokio::sync::Semaphore,
}

impl Default for Thumbnailing {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Thumbnailing {
            locks: parking_lot::Mutex::default(),
            generated: AtomicU64::new(0),
            workers: tokio::sync::Semaphore::new(cores),
        }
    }
}

impl Services {
    /// The thumbnail of a local media that serves `request`, through `access` (the media's
    /// checks are a download's: unknown, quarantined or, on the legacy routes, authenticated
    /// media is not found; a pending upload is waited for up to `wait`).
    pub async fn local_thumbnail(
        &self,
        server_name: &str,
        media_id: &MediaId,
        request: ThumbnailRequest,
        access: MediaAccess,
        wait: Duration,
    ) -> Result<ThumbnailFile> {
        let record = self.local_media_for_download(server_name, media_id, access, wait).await?;
        self.thumbnail_of(&ThumbnailSource::local(&record)?, request).await
    }

    /// The thumbnail of a media of any server that serves `request`: this server's through
    /// [`Self::local_thumbnail`], another's made here of its cached copy (fetched first when
    /// `allow_remote`, see [`Self::remote_media_for_download`]).
    pub async fn media_thumbnail(
        &self,
        server_name: &str,
        media_id: &MediaId,
        request: ThumbnailRequest,
        access: MediaAccess,
        wait: Duration,
        allow_remote: bool,
    ) -> Result<ThumbnailFile> {
        if server_name == self.server_name() {
            return self.local_thumbnail(server_name, media_id, request, access, wait).await;
        }
        let record =
            self.remote_media_for_download(server_name, media_id, access, wait, allow_remote).await?;
        self.thumbnail_of(&ThumbnailSource::remote(&record)?, request).await
    }

    /// The stored thumbnail of `source` that serves `request` (made now with
    /// `dynamic_thumbnails`).
    async fn thumbnail_of(
        &self,
        source: &ThumbnailSource,
        request: ThumbnailRequest,
    ) -> Result<ThumbnailFile> {
        let stored = self.stored_thumbnails(source).await?;
        let chosen = if self.config.media.dynamic_thumbnails {
            match exact_thumbnail(&stored, request) {
                Some(thumbnail) => thumbnail.clone(),
                None => self.generate_exact_thumbnail(source, request).await?,
            }
        } else {
            if stored.is_empty() {
                return Err(MatrixError::unknown(
                    "Cannot find any thumbnails for the requested media. This might mean the media is \
                     not a supported format (image/jpeg, image/png, image/gif, image/webp) or that \
                     thumbnailing failed. (Dynamic thumbnails are disabled on this server.)",
                )
                .into());
            }
            let candidates: Vec<StoredThumbnail> = stored
                .iter()
                .map(|thumbnail| StoredThumbnail {
                    size: ThumbnailSize::new(
                        thumbnail.width,
                        thumbnail.height,
                        thumbnail.method.parse().unwrap_or(ThumbnailMethod::Scale),
                    ),
                    preferred_type: (thumbnail.content_type == ANIMATED_TYPE) == request.animated,
                    length: thumbnail.size,
                })
                .collect();
            let index = thumbnail::select_thumbnail(
                &candidates,
                request.size.width,
                request.size.height,
                request.size.method,
            )
            .ok_or_else(|| MatrixError::not_found("No thumbnail of the requested method"))?;
            stored[index].clone()
        };
        let file = self.open_thumbnail(source, &chosen).await?;
        let (origin, media_id) = source.key();
        self.media_accessed_from(&origin, &media_id);
        Ok(file)
    }

    /// The thumbnails recorded of `source`.
    async fn stored_thumbnails(&self, source: &ThumbnailSource) -> Result<Vec<ThumbnailRecord>> {
        Ok(match source {
            ThumbnailSource::Local { media_id, .. } => self.store.local_thumbnails(media_id.as_str()).await?,
            ThumbnailSource::Remote { origin, media_id, .. } => {
                self.store.remote_thumbnails(origin.as_str(), media_id).await?
            }
        })
    }

    /// How many thumbnails this process has made (at upload, on demand, or again after their
    /// file went missing).
    pub fn thumbnails_generated(&self) -> u64 {
        self.media.thumbnailing.generated.load(Ordering::Relaxed)
    }

    /// Makes the configured `thumbnail_sizes` of a just-uploaded media whose bytes are at
    /// `path`. Failures are logged: a medium that cannot be thumbnailed is still uploaded.
    pub(super) async fn pregenerate_thumbnails(&self, source: &ThumbnailSource, path: &std::path::Path) {
        let sizes = self.config.media.thumbnail_sizes.clone();
        let Some(content_type) = source.content_type().filter(|t| thumbnail::is_supported_content_type(t))
        else {
            return;
        };
        if sizes.is_empty() {
            return;
        }
        let length = tokio::fs::metadata(path).await.map_or(0, |metadata| metadata.len());
        if length > self.thumbnail_source_limit() {
            tracing::info!(media = %source, length, "no thumbnails made of an upload this large");
            return;
        }
        let bytes = match tokio::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(media = %source, %error, "could not read an upload to thumbnail it");
                return;
            }
        };
        let max_pixels = self.config.media.max_image_pixels;
        let content_type = content_type.to_owned();
        let made = self
            .run_thumbnailer(move || thumbnail::pregenerate(&bytes, &content_type, &sizes, max_pixels))
            .await;
        let thumbnails = match made {
            Ok(Ok(thumbnails)) => thumbnails,
            Ok(Err(error)) => {
                tracing::info!(media = %source, %error, "no thumbnails made of an upload");
                return;
            }
            Err(error) => {
                tracing::error!(media = %source, %error, "thumbnailing an upload failed");
                return;
            }
        };
        for made in thumbnails {
            self.media.thumbnailing.generated.fetch_add(1, Ordering::Relaxed);
            let size = ThumbnailSize::new(made.width, made.height, made.method);
            if let Err(error) = self.store_thumbnail(source, size, &made).await {
                tracing::warn!(media = %source, %error, "could not store a thumbnail");
            }
        }
    }

    /// Makes and stores the thumbnail of exactly `request` (dynamic thumbnails), once however
    /// many ask for it at the same time.
    async fn generate_exact_thumbnail(
        &self,
        source: &ThumbnailSource,
        request: ThumbnailRequest,
    ) -> Result<ThumbnailRecord> {
        if !source.content_type().is_some_and(thumbnail::is_supported_content_type) {
            return Err(failed_to_generate());
        }
        let (origin, media_id) = source.key();
        let key = (origin, media_id, request);
        let lock = self.media.thumbnailing.locks.lock().entry(key.clone()).or_default().clone();
        let services = self.clone();
        let source = source.clone();
        self.media
            .finishing
            .spawn(async move {
                let guard = lock.lock().await;
                let result = services.generate_exact_locked(&source, request).await;
                drop(guard);
                let mut locks = services.media.thumbnailing.locks.lock();
                // The map's and this task's: nobody else waits for this thumbnail.
                if locks.get(&key).is_some_and(|lock| Arc::strong_count(lock) <= 2) {
                    locks.remove(&key);
                }
                result
            })
            .await
            .map_err(|e| Error::internal_with("making a thumbnail", e))?
    }

    async fn generate_exact_locked(
        &self,
        source: &ThumbnailSource,
        request: ThumbnailRequest,
    ) -> Result<ThumbnailRecord> {
        // Made while this waited for the lock?
        let stored = self.stored_thumbnails(source).await?;
        if let Some(thumbnail) = exact_thumbnail(&stored, request) {
            return Ok(thumbnail.clone());
        }
        let bytes = self.read_source_media(source).await?;
        // A still source asked for an animation gives its still thumbnail, which may be
        // stored already. The headers say which.
        let (bytes, probed) = self
            .run_thumbnailer(move || {
                let probed = thumbnail::probe(&bytes);
                (bytes, probed)
            })
            .await?;
        let source_animated = probed.map_err(thumbnail_error)?.animated;
        if request.animated
            && !source_animated
            && let Some(thumbnail) = exact_thumbnail(&stored, ThumbnailRequest { animated: false, ..request })
        {
            return Ok(thumbnail.clone());
        }
        let content_type = source.content_type().unwrap_or_default().to_owned();
        let max_pixels = self.config.media.max_image_pixels;
        let made = self
            .run_thumbnailer(move || {
                thumbnail::generate(&bytes, &content_type, request.size, request.animated, max_pixels)
            })
            .await?
            .map_err(thumbnail_error)?;
        self.media.thumbnailing.generated.fetch_add(1, Ordering::Relaxed);
        self.store_thumbnail(source, request.size, &made).await
    }

    /// Writes a thumbnail's file named by `size` (its real size, or the requested box for a
    /// dynamic one), mirrors it and records it.
    async fn store_thumbnail(
        &self,
        source: &ThumbnailSource,
        size: ThumbnailSize,
        made: &Thumbnail,
    ) -> Result<ThumbnailRecord> {
        let rel_path = source.thumbnail_rel_path(size.width, size.height, made.content_type, size.method)?;
        let path = self.media_file_path(&rel_path);
        let (mut file, temp_path) = new_temp_file(self.media_store_root()).await?;
        file.write_all(&made.bytes).await.map_err(|e| Error::internal_with("writing a thumbnail", e))?;
        file.flush().await.map_err(|e| Error::internal_with("writing a thumbnail", e))?;
        drop(file);
        place_file(temp_path, &path).await?;
        self.storage_providers
            .store_file(&rel_path.to_string_lossy(), &path, source.storage_origin())
            .await
            .map_err(|e| Error::internal_with("mirroring a thumbnail to its storage provider", e))?;
        let record = ThumbnailRecord {
            width: size.width,
            height: size.height,
            method: size.method.as_str().to_owned(),
            content_type: made.content_type.to_owned(),
            size: made.bytes.len() as u64,
        };
        match source {
            ThumbnailSource::Local { media_id, .. } => {
                self.store.insert_local_thumbnail(media_id.as_str(), &record).await?
            }
            ThumbnailSource::Remote { origin, media_id, .. } => {
                self.store.insert_remote_thumbnail(origin.as_str(), media_id, &record).await?
            }
        }
        Ok(record)
    }

    /// Opens a stored thumbnail's file: from the local store, else fetched back from a storage
    /// provider, else made again from the media (Synapse regenerates it too).
    async fn open_thumbnail(
        &self,
        source: &ThumbnailSource,
        thumbnail: &ThumbnailRecord,
    ) -> Result<ThumbnailFile> {
        let method: ThumbnailMethod = thumbnail
            .method
            .parse()
            .map_err(|e| Error::internal_with(format!("a thumbnail of {source}"), e))?;
        let rel_path =
            source.thumbnail_rel_path(thumbnail.width, thumbnail.height, &thumbnail.content_type, method)?;
        let path = self.media_file_path(&rel_path);
        if let Some(file) = open_if_present(&path).await? {
            return thumbnail_file(file, &thumbnail.content_type).await;
        }
        let fetched = self
            .storage_providers
            .fetch_to_file(&rel_path.to_string_lossy(), &path)
            .await
            .map_err(|e| Error::internal_with("fetching a thumbnail from its storage provider", e))?;
        if !fetched {
            tracing::info!(media = %source, path = %path.display(), "a thumbnail file is missing; making it again");
            let bytes = self.read_source_media(source).await?;
            let content_type = source.content_type().unwrap_or_default().to_owned();
            let (size, animated) = (
                ThumbnailSize::new(thumbnail.width, thumbnail.height, method),
                thumbnail.content_type == ANIMATED_TYPE,
            );
            let max_pixels = self.config.media.max_image_pixels;
            let made = self
                .run_thumbnailer(move || {
                    thumbnail::generate(&bytes, &content_type, size, animated, max_pixels)
                })
                .await?
                .map_err(thumbnail_error)?;
            self.media.thumbnailing.generated.fetch_add(1, Ordering::Relaxed);
            self.store_thumbnail(source, size, &made).await?;
        }
        let file =
            open_if_present(&path).await?.ok_or_else(|| MatrixError::not_found("Thumbnail not found"))?;
        thumbnail_file(file, &thumbnail.content_type).await
    }

    /// Runs thumbnailing work on a blocking thread, at most one per core at a time.
    async fn run_thumbnailer<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .media
            .thumbnailing
            .workers
            .acquire()
            .await
            .map_err(|e| Error::internal_with("waiting for a thumbnailer", e))?;
        tokio::task::spawn_blocking(job).await.map_err(|e| Error::internal_with("making a thumbnail", e))
    }

    /// The largest file thumbnails are made of: four bytes a pixel of `max_image_pixels`
    /// and 16 MiB more. A larger file is never read into memory to be thumbnailed.
    fn thumbnail_source_limit(&self) -> u64 {
        self.config.media.max_image_pixels.saturating_mul(4).saturating_add(16 * 1024 * 1024)
    }

    /// The whole content of a media, for thumbnailing (`400 M_UNKNOWN` past
    /// [`Self::thumbnail_source_limit`]).
    async fn read_source_media(&self, source: &ThumbnailSource) -> Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut file = self.open_media_file(&source.content_rel_path()).await?.ok_or_else(|| {
            tracing::warn!(media = %source, "a media file is missing");
            Error::from(MatrixError::not_found("Media not found"))
        })?;
        let size = file.metadata().await.map_err(|e| Error::internal_with("reading media", e))?.len();
        if size > self.thumbnail_source_limit() {
            tracing::info!(media = %source, size, "no thumbnail made of media this large");
            return Err(failed_to_generate());
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.read_to_end(&mut bytes).await.map_err(|e| Error::internal_with("reading media", e))?;
        Ok(bytes)
    }

    /// The storage providers' copies of a deleted media's thumbnails and file: removed with
    /// it. Failures are logged.
    pub(super) async fn delete_mirrored_media(
        &self,
        media_id: &str,
        thumbnails: &[ThumbnailRecord],
        file_id: Option<&str>,
    ) {
        if self.storage_providers.is_empty() {
            return;
        }
        let Ok(media_id) = MediaId::parse(media_id) else { return };
        let mut rel_paths = Vec::new();
        for thumbnail in thumbnails {
            let Ok(method) = thumbnail.method.parse::<ThumbnailMethod>() else { continue };
            if let Ok(rel_path) = thumbnail_rel_path(
                &media_id,
                thumbnail.width,
                thumbnail.height,
                &thumbnail.content_type,
                method,
            ) {
                rel_paths.push(rel_path);
            }
        }
        if let Some(file_id) = file_id.and_then(|file_id| MediaId::parse(file_id).ok()) {
            rel_paths.push(local_content_path(&file_id));
        }
        for rel_path in rel_paths {
            if let Err(error) = self.storage_providers.delete(&rel_path.to_string_lossy()).await {
                tracing::warn!(%media_id, %error, "could not delete a media file from its storage provider");
            }
        }
    }
}

/// The stored thumbnail of exactly the requested box, method and animation.
fn exact_thumbnail(stored: &[ThumbnailRecord], request: ThumbnailRequest) -> Option<&ThumbnailRecord> {
    stored.iter().find(|thumbnail| {
        thumbnail.width == request.size.width
            && thumbnail.height == request.size.height
            && thumbnail.method == request.size.method.as_str()
            && (thumbnail.content_type == ANIMATED_TYPE) == request.animated
    })
}

fn thumbnail_rel_path(
    media_id: &MediaId,
    width: u32,
    height: u32,
    content_type: &str,
    method: ThumbnailMethod,
) -> Result<std::path::PathBuf> {
    local_thumbnail_path(media_id, width, height, content_type, method.as_str())
        .ok_or_else(|| Error::internal(format!("a thumbnail of {media_id} has type {content_type:?}")))
}

async fn open_if_present(path: &std::path::Path) -> Result<Option<tokio::fs::File>> {
    match tokio::fs::File::open(path).await {
        Ok(file) => Ok(Some(file)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(Error::internal_with(format!("opening {}", path.display()), error)),
    }
}

async fn thumbnail_file(file: tokio::fs::File, content_type: &str) -> Result<ThumbnailFile> {
    let length = file.metadata().await.map_err(|e| Error::internal_with("reading a thumbnail", e))?.len();
    Ok(ThumbnailFile { file, length, content_type: content_type.to_owned() })
}

/// Synapse's answer when a thumbnail cannot be made on demand.
fn failed_to_generate() -> Error {
    MatrixError::unknown("Failed to generate thumbnail.").into()
}

/// A thumbnail that could not be made: the media's fault (`400 M_UNKNOWN`, as Synapse), or
/// an encoder's (internal).
fn thumbnail_error(error: ThumbnailError) -> Error {
    match error {
        ThumbnailError::Encode(_) => Error::internal_with("encoding a thumbnail", error),
        other => {
            tracing::info!(error = %other, "could not make a thumbnail");
            failed_to_generate()
        }
    }
}
