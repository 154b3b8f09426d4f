//! One typed struct per configuration section, reading Synapse's flat top-level keys.

mod appservice;
mod consent;
mod database;
mod federation;
mod keys;
mod media;
mod media_storage;
mod misc;
mod modules;
mod outbound;
mod password;
mod ratelimit;
mod registration;
mod room;
mod server;
mod url_preview;
mod user_directory;

use std::path::{Path, PathBuf};

pub use appservice::{Appservice, AppserviceConfig, Namespace};
pub use consent::ConsentConfig;
pub use database::{DatabaseConfig, PostgresConfig};
pub use federation::{CustomCa, FederationConfig, MAIN_INSTANCE, RetryConfig};
pub use keys::{KeyConfig, TrustedKeyServer};
pub use media::{MediaConfig, MediaRetention, ThumbnailMethod, ThumbnailSize, UnknownThumbnailMethod};
pub use media_storage::{
    ChecksumWhen, MediaStorageConfig, MediaStorageProvider, S3_PROVIDER_MODULE, S3ProviderConfig, Secret,
    StorageBackend,
};
pub use misc::{
    CacheConfig, LoggingConfig, MetricsConfig, PresenceConfig, ResourceLimitsConfig, ServerNoticesConfig,
};
pub use modules::{
    E2EE_FILTER_MODULE, EncryptionFilter, ModulesConfig, USER_RESTRICTIONS_MODULE, UserPermission,
    UserRestrictionRule, UserRestrictions,
};
pub use outbound::{IpRange, OutboundConfig};
pub use password::{PasswordConfig, PasswordPolicy};
pub use ratelimit::{RateLimit, RateLimitConfig};
pub use registration::{LooseBool, ProfileConfig, RegistrationConfig};
pub use room::{DirectoryRule, EncryptionByDefault, RoomConfig, glob_matches};
pub use server::{ListenerConfig, ListenerResource, ListenerType, ServerConfig};
pub use url_preview::{OembedConfig, OembedEndpoint, UrlBlacklistEntry, UrlPattern, UrlPreviewConfig};
pub use user_directory::UserDirectoryConfig;

use crate::load::{ConfigError, Origins, SectionReader};

/// The whole configuration, one field per section.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub keys: KeyConfig,
    pub logging: LoggingConfig,
    pub media: MediaConfig,
    /// `media_storage_providers`: where media is mirrored besides `media_store_path`.
    pub media_storage: MediaStorageConfig,
    pub metrics: MetricsConfig,
    pub password: PasswordConfig,
    pub registration: RegistrationConfig,
    pub profile: ProfileConfig,
    pub ratelimit: RateLimitConfig,
    pub room: RoomConfig,
    pub presence: PresenceConfig,
    pub outbound: OutboundConfig,
    pub federation: FederationConfig,
    pub user_directory: UserDirectoryConfig,
    pub url_preview: UrlPreviewConfig,
    pub caches: CacheConfig,
    /// `server_notices`, when configured.
    pub server_notices: Option<ServerNoticesConfig>,
    /// `user_consent`, when configured.
    pub consent: Option<ConsentConfig>,
    /// `app_service_config_files` and the appservice keys.
    pub appservice: AppserviceConfig,
    /// `hs_disabled`, `limit_usage_by_mau` and their companions.
    pub limits: ResourceLimitsConfig,
    /// `modules`: the built-in policy modules configured.
    pub modules: ModulesConfig,
    /// The directory of the first config file; default paths are relative to it.
    pub config_dir: PathBuf,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

impl Config {
    pub(crate) fn read(
        reader: &mut SectionReader<'_>,
        config_dir: PathBuf,
        files: Vec<PathBuf>,
    ) -> Result<Config, ConfigError> {
        let server: server::RawServer = reader.section()?;
        let database: database::RawDatabaseSection = reader.section()?;
        let keys: keys::RawKeys = reader.section()?;
        let logging: LoggingConfig = reader.section()?;
        let media: media::RawMedia = reader.section()?;
        let media_storage: media_storage::RawMediaStorage = reader.section()?;
        let metrics: MetricsConfig = reader.section()?;
        let password: password::RawPassword = reader.section()?;
        let registration: registration::RawRegistration = reader.section()?;
        let ratelimit: ratelimit::RawRateLimits = reader.section()?;
        let room: room::RawRoom = reader.section()?;
        let presence: misc::RawPresence = reader.section()?;
        let outbound: outbound::RawOutbound = reader.section()?;
        let federation: federation::RawFederation = reader.section()?;
        let user_directory: user_directory::RawUserDirectory = reader.section()?;
        let url_preview: url_preview::RawUrlPreview = reader.section()?;
        let caches: CacheConfig = reader.section()?;
        let server_notices: misc::RawServerNotices = reader.section()?;
        let consent: consent::RawConsent = reader.section()?;
        let appservice: appservice::RawAppservice = reader.section()?;
        let modules: modules::RawModules = reader.section()?;
        let limits: ResourceLimitsConfig = reader.section()?;
        let origins = reader.origins;
        let server = server.into_config(origins)?;
        let database = database.into_config(origins)?;
        let keys = keys.into_config(origins, &server.server_name, &config_dir)?;
        let password = password.into_config(origins, &mut reader.warnings)?;
        let (registration, profile) = registration.into_config(origins, &mut reader.warnings)?;
        let ratelimit = ratelimit.into_config(origins)?;
        let room = room.into_config(origins)?;
        let outbound = outbound.into_config(origins)?;
        let url_preview = url_preview.into_config(origins, &outbound)?;
        let media = media.into_config(origins)?;
        let federation = federation.into_config(origins)?;
        let media_storage = media_storage.into_config(origins, &mut reader.warnings)?;
        let consent = consent.into_config(origins)?;
        let appservice = appservice.into_config(origins, &server.server_name)?;
        let modules = modules.into_config(origins, &mut reader.warnings)?;
        if consent.is_some() && keys.form_secret.is_none() {
            return Err(invalid(
                origins,
                "user_consent",
                "`form_secret` must be set when `user_consent` is configured",
            ));
        }
        if consent.as_ref().is_some_and(|c| c.server_notice_content.is_some())
            && server_notices.server_notices.is_none()
        {
            return Err(invalid(
                origins,
                "user_consent",
                "`server_notice_content` requires server notices, but `server_notices` is not configured",
            ));
        }
        Ok(Config {
            server,
            database,
            keys,
            logging,
            media,
            media_storage,
            metrics,
            password,
            registration,
            profile,
            ratelimit,
            room,
            presence: presence.presence,
            outbound,
            federation,
            user_directory: user_directory.into_config(),
            url_preview,
            caches,
            server_notices: server_notices.server_notices,
            consent,
            appservice,
            modules,
            limits,
            config_dir,
            files,
        })
    }

    pub(crate) fn validate(
        &mut self,
        origins: &Origins,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        self.server.validate(origins, warnings)?;
        if self.server.listeners.iter().any(|l| l.kind == ListenerType::Metrics)
            && !self.metrics.enable_metrics
        {
            warnings.push(format!(
                "{}: a metrics listener is configured but `enable_metrics` is not true; it will not be started",
                origins.file_of("listeners")
            ));
        }
        Ok(())
    }
}

/// `bcrypt_rounds` and `password_config` alone (for `hash-password`).
pub(crate) fn read_password_section(reader: &mut SectionReader<'_>) -> Result<PasswordConfig, ConfigError> {
    let password: password::RawPassword = reader.section()?;
    password.into_config(reader.origins, &mut reader.warnings)
}

/// Reads a secret given either inline (`key`) or as a file (`key_path`), as Synapse allows.
pub(crate) fn inline_or_file_secret(
    origins: &Origins,
    key: &str,
    inline: Option<String>,
    path: Option<PathBuf>,
) -> Result<Option<String>, ConfigError> {
    match (inline, path) {
        (Some(_), Some(_)) => {
            Err(invalid(origins, key, format!("give either `{key}` or `{key}_path`, not both")))
        }
        (Some(secret), None) => Ok(Some(secret)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                invalid(origins, &format!("{key}_path"), format!("cannot read {}: {e}", path.display()))
            })?;
            Ok(Some(text.trim().to_owned()))
        }
        (None, None) => Ok(None),
    }
}

pub(crate) fn invalid(origins: &Origins, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { file: origins.file_of(key), key: key.to_owned(), message: message.into() }
}

/// Makes a relative path absolute against the current directory, as Synapse does.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().map(|cwd| cwd.join(path)).unwrap_or_else(|_| path.to_owned())
    }
}
