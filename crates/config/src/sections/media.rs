//! The media repository: `media_store_path`, `max_upload_size`, `enable_media_repo`,
//! `enable_authenticated_media`, `max_image_pixels`, `dynamic_thumbnails`, `thumbnail_sizes`,
//! `max_pending_media_uploads`, `unused_expiration_time`, `max_avatar_size`,
//! `allowed_avatar_mimetypes` and `media_retention`, with Synapse's defaults.

use std::path::PathBuf;

use serde::Deserialize;

use super::{absolute, invalid};
use crate::load::{ConfigError, Origins};
use crate::units::{ByteSize, DurationMs};

/// How a thumbnail is made from its image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThumbnailMethod {
    /// Cut to exactly the requested size after scaling the shorter side to it.
    Crop,
    /// Scaled to fit inside the requested size, keeping the aspect ratio.
    Scale,
}

impl ThumbnailMethod {
    /// The name in URLs and file names (`crop` / `scale`).
    pub fn as_str(self) -> &'static str {
        match self {
            ThumbnailMethod::Crop => "crop",
            ThumbnailMethod::Scale => "scale",
        }
    }
}

impl std::str::FromStr for ThumbnailMethod {
    type Err = UnknownThumbnailMethod;

    /// `crop` or `scale`, in any case (Synapse lower-cases a requested method).
    fn from_str(method: &str) -> Result<Self, UnknownThumbnailMethod> {
        if method.eq_ignore_ascii_case("crop") {
            Ok(ThumbnailMethod::Crop)
        } else if method.eq_ignore_ascii_case("scale") {
            Ok(ThumbnailMethod::Scale)
        } else {
            Err(UnknownThumbnailMethod)
        }
    }
}

impl std::fmt::Display for ThumbnailMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A thumbnail method other than `crop` and `scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownThumbnailMethod;

impl std::fmt::Display for UnknownThumbnailMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("thumbnail method must be \"crop\" or \"scale\"")
    }
}

impl std::error::Error for UnknownThumbnailMethod {}

/// One entry of `thumbnail_sizes`, or the box and method a thumbnail request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
}

impl ThumbnailSize {
    pub const fn new(width: u32, height: u32, method: ThumbnailMethod) -> Self {
        ThumbnailSize { width, height, method }
    }
}

/// `media_retention`: how long unaccessed media is kept (forever when unset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct MediaRetention {
    pub local_media_lifetime: Option<DurationMs>,
    pub remote_media_lifetime: Option<DurationMs>,
}

/// The media repository's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaConfig {
    /// Where local media lives (Synapse's layout under it); made absolute at load.
    pub media_store_path: PathBuf,
    pub max_upload_size: ByteSize,
    pub enable_media_repo: bool,
    /// When true (the default), media uploaded from now on is served only by the authenticated
    /// `/_matrix/client/v1/media/...` routes; the legacy `/_matrix/media/v3/...` downloads
    /// answer only for media uploaded while it was off.
    pub enable_authenticated_media: bool,
    /// Images with more pixels than this are never decoded (32M by default).
    pub max_image_pixels: u64,
    pub dynamic_thumbnails: bool,
    pub thumbnail_sizes: Vec<ThumbnailSize>,
    /// How many `/create`d media IDs a user may have waiting for their upload at once.
    pub max_pending_media_uploads: u64,
    /// How long a `/create`d media ID waits for its upload.
    pub unused_expiration_time: DurationMs,
    pub max_avatar_size: Option<ByteSize>,
    pub allowed_avatar_mimetypes: Option<Vec<String>>,
    pub media_retention: MediaRetention,
}

/// Synapse's `DEFAULT_THUMBNAIL_SIZES`.
fn default_thumbnail_sizes() -> Vec<ThumbnailSize> {
    use ThumbnailMethod::{Crop, Scale};
    [(32, 32, Crop), (96, 96, Crop), (320, 240, Scale), (640, 480, Scale), (800, 600, Scale)]
        .into_iter()
        .map(|(width, height, method)| ThumbnailSize { width, height, method })
        .collect()
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            media_store_path: absolute(&PathBuf::from("media_store")),
            max_upload_size: ByteSize(50 * 1024 * 1024),
            enable_media_repo: true,
            enable_authenticated_media: true,
            max_image_pixels: 32 * 1024 * 1024,
            dynamic_thumbnails: false,
            thumbnail_sizes: default_thumbnail_sizes(),
            max_pending_media_uploads: 5,
            unused_expiration_time: DurationMs(24 * 3600 * 1000),
            max_avatar_size: None,
            allowed_avatar_mimetypes: None,
            media_retention: MediaRetention::default(),
        }
    }
}

#[derive(Default, Deserialize)]
pub(crate) struct RawMedia {
    media_store_path: Option<PathBuf>,
    max_upload_size: Option<ByteSize>,
    enable_media_repo: Option<bool>,
    enable_authenticated_media: Option<bool>,
    max_image_pixels: Option<ByteSize>,
    dynamic_thumbnails: Option<bool>,
    thumbnail_sizes: Option<Vec<ThumbnailSize>>,
    max_pending_media_uploads: Option<u64>,
    unused_expiration_time: Option<DurationMs>,
    max_avatar_size: Option<ByteSize>,
    allowed_avatar_mimetypes: Option<Vec<String>>,
    media_retention: Option<MediaRetention>,
}

impl RawMedia {
    pub(crate) fn into_config(self, origins: &Origins) -> Result<MediaConfig, ConfigError> {
        let defaults = MediaConfig::default();
        let thumbnail_sizes = self.thumbnail_sizes.unwrap_or(defaults.thumbnail_sizes);
        if thumbnail_sizes.iter().any(|size| size.width == 0 || size.height == 0) {
            return Err(invalid(
                origins,
                "thumbnail_sizes",
                "a thumbnail's width and height must be positive",
            ));
        }
        Ok(MediaConfig {
            media_store_path: self.media_store_path.map_or(defaults.media_store_path, |path| absolute(&path)),
            max_upload_size: self.max_upload_size.unwrap_or(defaults.max_upload_size),
            enable_media_repo: self.enable_media_repo.unwrap_or(defaults.enable_media_repo),
            enable_authenticated_media: self
                .enable_authenticated_media
                .unwrap_or(defaults.enable_authenticated_media),
            max_image_pixels: self.max_image_pixels.map_or(defaults.max_image_pixels, |size| size.0),
            dynamic_thumbnails: self.dynamic_thumbnails.unwrap_or(defaults.dynamic_thumbnails),
            thumbnail_sizes,
            max_pending_media_uploads: self
                .max_pending_media_uploads
                .unwrap_or(defaults.max_pending_media_uploads),
            unused_expiration_time: self.unused_expiration_time.unwrap_or(defaults.unused_expiration_time),
            max_avatar_size: self.max_avatar_size,
            allowed_avatar_mimetypes: self.allowed_avatar_mimetypes,
            media_retention: self.media_retention.unwrap_or_default(),
        })
    }
}
