//! Homeserver logic with no HTTP.
//!
//! # Layout
//!
//! - [`Services`]: every service, built once at start-up from the configuration and the store
//!   and passed down explicitly (no globals).
//! - [`auth`]: access tokens (minted from a CSPRNG, stored hashed) and the [`auth::Requester`].
//! - [`appservice`]: application services: `as_token` requesters, namespaces, the durable
//!   transaction queue, queries, ping.
//! - [`accounts`]: registration (open, token, guest, shared secret), password changes,
//!   deactivation. [`sessions`]: login, refresh, logout, login tokens. [`devices`], [`profile`].
//! - [`e2e_keys`], [`to_device`], [`device_lists`]: end-to-end encryption keys, to-device
//!   messages, and device-list tracking (`/sync`'s `device_lists`, `/keys/changes`).
//! - [`rooms`]: rooms and the event graph (the write path, reads, membership, directory).
//! - [`push`]: push rules, push actions and unread counts, pushers, delivery to gateways.
//! - [`sync`]: `/sync`. [`account_data`] (and tags), [`receipts`], [`typing`], [`presence`].
//! - [`thumbnail`]: image thumbnails (header probe, generation, selection), synchronous.
//! - [`streams`]: stream positions (published in order) and the notifier that wakes syncs.
//! - [`uia`]: user-interactive authentication sessions and stages.
//! - [`ratelimit`]: Synapse-style leaky buckets with per-user overrides.
//! - [`error`]: the service error: a Matrix error for the client, or an internal failure.
//! - [`key_backup`]: server-side key backup (backup versions and the room keys in them).
//! - [`keys`]: the server's ed25519 signing key (Synapse's key file format) and the signed
//!   `/_matrix/key/v2/server` document.
//! - [`metrics`]: the Prometheus registry and the process collector.
//! - [`passwords`]: Synapse-compatible bcrypt hashing with pepper, off the runtime threads.
//! - [`tls`]: rustls client configuration (ring provider, platform roots) for outgoing HTTP.
//! - [`url_preview`]: URL previews (Open Graph, oEmbed) fetched without SSRF, cached.
//! - [`util`]: randomness and time.
//! - [`workers`]: background loops (housekeeping) that stop on the shutdown token.

pub mod account_data;
pub mod accounts;
pub mod admin_media;
pub mod admin_rooms;
pub mod admin_users;
pub mod appservice;
pub mod auth;
pub mod consent;
pub mod cross_signing;
pub mod dehydrated;
pub mod device_lists;
pub mod devices;
pub mod e2e_keys;
pub mod error;
pub mod federation;
pub mod filter;
pub mod key_backup;
pub mod keys;
pub mod media;
pub mod metrics;
pub mod openid;
pub mod outbound;
pub mod passwords;
pub mod policy_modules;
pub mod presence;
pub mod profile;
pub mod push;
pub mod ratelimit;
pub mod receipts;
pub mod registration_nonces;
pub mod registration_tokens;
pub mod resource_limits;
pub mod rooms;
pub mod s3_provider;
pub mod search;
pub mod server_notices;
pub mod sessions;
pub mod sliding_sync;
pub mod streams;
pub mod sync;
pub mod thumbnail;
pub mod tls;
pub mod to_device;
pub mod typing;
pub mod uia;
pub mod url_preview;
pub mod user_directory;
pub mod util;
pub mod workers;

use std::sync::Arc;

use myelin_config::Config;
use myelin_store::Store;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};

/// The store's plain records and queries that service methods take and return unchanged: part
/// of the service's vocabulary, so that `api` never depends on `store` itself.
pub mod records {
    pub use myelin_store::push::PusherRecord;
    pub use myelin_store::rooms::EventReportsQuery;
    pub use myelin_store::{
        DeviceRecord, LocalMediaRecord, PresenceRecord, RateLimitOverride, ReceiptRecord,
        RegistrationTokenRecord,
    };
    pub use myelin_store::{UserListEntry, UserListQuery, UserOrder, UserReportRecord, UserReportsQuery};
}

/// Everything the HTTP layer and the workers need. Cheap to clone (all fields are shared).
#[derive(Clone)]
pub struct Services {
    pub config: Arc<Config>,
    pub(crate) store: Store,
    pub keys: Arc<keys::ServerKeys>,
    pub federation: Arc<federation::Federation>,
    pub metrics: Arc<metrics::Metrics>,
    pub passwords: passwords::PasswordHasher,
    pub auth_cache: Arc<auth::AuthCache>,
    pub ratelimiter: Arc<ratelimit::RateLimiter>,
    pub rooms: Arc<rooms::Rooms>,
    pub notifier: Arc<streams::Notifier>,
    pub streams: Arc<streams::UserStreams>,
    pub typing: Arc<typing::Typing>,
    pub typing_expiry_wakeup: Arc<tokio::sync::Notify>,
    pub active_syncs: Arc<presence::ActiveSyncs>,
    /// What sliding sync keeps between requests: each user's sorted room list and each
    /// connection's newest state.
    pub(crate) sliding: Arc<sliding_sync::SlidingSyncMemory>,
    /// Cancelled when the process begins to shut down; background work watches it.
    pub shutdown: CancellationToken,
    /// Push rule and room context caches, and the push delivery worker's wake-up.
    pub push: Arc<push::Push>,
    /// Shared-secret registration nonces handed out and not spent yet.
    pub registration_nonces: Arc<registration_nonces::RegistrationNonces>,
    /// The URL preview fetcher and its cache.
    pub url_previews: Arc<url_preview::UrlPreviews>,
    pub media: Arc<media::Media>,
    /// `media_storage_providers`: where media is mirrored besides the local store.
    pub storage_providers: Arc<s3_provider::MediaStorageProviders>,
    /// Serialises finding and making server notices rooms.
    pub server_notices: Arc<server_notices::ServerNotices>,
    /// The consent templates and the consent notices being sent.
    pub consent: Arc<consent::Consent>,
    /// The appservices' HTTP client, transaction sender wake-up and pending ephemeral events.
    pub appservices: Arc<appservice::Appservices>,
}

impl Services {
    /// Opens the store (migrating it), loads or creates the signing key and starts nothing yet.
    pub async fn build(config: Config) -> Result<Services> {
        let store = Store::open(&config.database).await?;
        let keys = keys::ServerKeys::load_or_generate(&config)?;
        let federation = federation::Federation::new(&config, &keys, store.clone())?;
        let passwords = passwords::PasswordHasher::new(&config.password);
        let storage_providers = s3_provider::MediaStorageProviders::new(&config.media_storage)
            .map_err(|e| Error::internal_with("media_storage_providers", e))?;
        let url_previews = url_preview::UrlPreviews::new(&config.url_preview)?;
        let rooms = rooms::Rooms::new(store.max_stream_ordering().await?, config.caches.event_cache_limits());
        let (account_data, receipts, presence) = store.max_stream_ids().await?;
        let to_device = store.max_to_device_position().await?;
        // Past the high-water mark by a margin: see `device_lists`' design notes.
        let device_lists =
            store.max_device_list_position().await?.saturating_add(device_lists::RESTART_MARGIN);
        let appservices = appservice::Appservices::new(config.appservice.http_timeout)?;
        let services = Services {
            appservices: Arc::new(appservices),
            rooms: Arc::new(rooms),
            notifier: Arc::default(),
            streams: Arc::new(streams::UserStreams::new(
                account_data,
                receipts,
                presence,
                to_device,
                device_lists,
            )),
            typing: Arc::default(),
            typing_expiry_wakeup: Arc::default(),
            active_syncs: Arc::default(),
            sliding: Arc::default(),
            passwords,
            auth_cache: Arc::default(),
            ratelimiter: Arc::default(),
            consent: Arc::new(consent::Consent::new(&config)),
            config: Arc::new(config),
            store,
            keys: Arc::new(keys),
            federation: Arc::new(federation),
            metrics: Arc::new(metrics::Metrics::new()),
            shutdown: CancellationToken::new(),
            push: Arc::default(),
            registration_nonces: Arc::default(),
            url_previews: Arc::new(url_previews),
            media: Arc::default(),
            storage_providers: Arc::new(storage_providers),
            server_notices: Arc::default(),
        };
        services.ensure_appservice_senders().await?;
        Ok(services)
    }

    pub fn server_name(&self) -> &str {
        &self.config.server.server_name
    }
}

/// Test hooks: reaching under the service layer to set up or corrupt what the API cannot
/// (only with the `test-hooks` feature, which `myelin-test-support` turns on).
#[cfg(feature = "test-hooks")]
impl Services {
    /// The store, for tests that plant or inspect rows directly.
    pub fn store(&self) -> &Store {
        &self.store
    }
}
