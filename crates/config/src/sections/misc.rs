//! Small sections: logging, metrics, presence, caches, server notices.

use std::path::PathBuf;

use serde::Deserialize;

use crate::units::ByteSize;

/// `log_config`: a Python-logging YAML file in Synapse's format.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct LoggingConfig {
    pub log_config: Option<PathBuf>,
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

/// The event cache: `event_cache_size` (how many parsed events stay in memory, Synapse's
/// size syntax, so `"10K"` is 10240) and `caches.cache_autotuning.max_cache_memory_usage` (a
/// ceiling on the memory they use). By default the cache holds up to 10K events within
/// 8 MiB; an explicit `event_cache_size` alone asks for that many events whatever their size
/// (Synapse's meaning of it).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    pub event_cache_size: Option<ByteSize>,
    pub caches: CachesSection,
}

/// Synapse's `caches` section (only its memory ceiling is read).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct CachesSection {
    pub cache_autotuning: Option<CacheAutotuning>,
}

/// `caches.cache_autotuning`.
#[derive(Clone, Debug, Deserialize)]
pub struct CacheAutotuning {
    pub max_cache_memory_usage: ByteSize,
}

impl CacheConfig {
    /// The default memory ceiling of the event cache when none is configured.
    pub const DEFAULT_EVENT_CACHE_MEMORY: u64 = 8 * 1024 * 1024;

    /// The event cache's limits: (events, bytes).
    pub fn event_cache_limits(&self) -> (usize, u64) {
        let events = self.event_cache_size.map_or(10 * 1024, |size| size.0 as usize);
        let bytes = match (&self.caches.cache_autotuning, self.event_cache_size) {
            (Some(tuning), _) => tuning.max_cache_memory_usage.0,
            (None, Some(_)) => u64::MAX,
            (None, None) => Self::DEFAULT_EVENT_CACHE_MEMORY,
        };
        (events, bytes)
    }
}

/// `server_notices`: the system user that sends server notices and the room they arrive in
/// (Synapse's keys; the section's presence enables the feature).
#[derive(Clone, Debug, Deserialize)]
pub struct ServerNoticesConfig {
    pub system_mxid_localpart: String,
    #[serde(default)]
    pub system_mxid_display_name: Option<String>,
    #[serde(default)]
    pub system_mxid_avatar_url: Option<String>,
    #[serde(default = "default_notices_room_name")]
    pub room_name: Option<String>,
    #[serde(default)]
    pub room_avatar_url: Option<String>,
    #[serde(default)]
    pub room_topic: Option<String>,
    #[serde(default)]
    pub auto_join: bool,
}

fn default_notices_room_name() -> Option<String> {
    Some("Server Notices".to_owned())
}

#[derive(Default, Deserialize)]
pub(crate) struct RawServerNotices {
    #[serde(default)]
    pub(crate) server_notices: Option<ServerNoticesConfig>,
}

/// Synapse's resource limits: `hs_disabled` (every user refused), `limit_usage_by_mau` with
/// `max_mau_value` and `mau_trial_days` (users beyond the monthly active cohort refused once it
/// is full), `admin_contact` (named in the refusal). `mau_stats_only` is read too: it counts the
/// cohort without refusing anyone.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ResourceLimitsConfig {
    pub hs_disabled: bool,
    pub hs_disabled_message: String,
    pub admin_contact: Option<String>,
    pub limit_usage_by_mau: bool,
    pub max_mau_value: u64,
    pub mau_trial_days: u64,
    pub mau_stats_only: bool,
}

impl ResourceLimitsConfig {
    /// Whether the monthly active cohort is recorded at all.
    pub fn tracks_monthly_active(&self) -> bool {
        self.limit_usage_by_mau || self.mau_stats_only
    }
}
