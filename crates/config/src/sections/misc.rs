//! Small sections: logging, media storage, metrics.

use std::path::PathBuf;

use serde::Deserialize;

use crate::units::ByteSize;

/// `log_config`: a Python-logging YAML file in Synapse's format.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct LoggingConfig {
    pub log_config: Option<PathBuf>,
}

/// `media_store_path`, `max_upload_size`, `enable_media_repo`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct MediaConfig {
    pub media_store_path: PathBuf,
    pub max_upload_size: ByteSize,
    pub enable_media_repo: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            media_store_path: PathBuf::from("media_store"),
            max_upload_size: ByteSize(50 * 1024 * 1024),
            enable_media_repo: true,
        }
    }
}

/// `enable_metrics`, `report_stats`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct MetricsConfig {
    pub enable_metrics: bool,
    /// Accepted for compatibility: Myelin never phones home.
    pub report_stats: bool,
    #[serde(rename = "report_stats_endpoint")]
    pub report_stats_endpoint: Option<String>,
}

/// `presence`: `enabled`, `include_offline_users_on_sync`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct PresenceConfig {
    pub enabled: bool,
    pub include_offline_users_on_sync: bool,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig { enabled: true, include_offline_users_on_sync: false }
    }
}

#[derive(Default, Deserialize)]
pub(crate) struct RawPresence {
    #[serde(default)]
    pub(crate) presence: PresenceConfig,
}

/// `event_cache_size`: how many parsed events stay in memory (Synapse's size syntax, so
/// `"10K"` is 10240; the default). The cache is the bulk of an idle server's memory.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    pub event_cache_size: ByteSize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { event_cache_size: ByteSize(10 * 1024) }
    }
}
