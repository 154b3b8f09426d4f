//! `media_storage_providers`: where media is mirrored besides the local `media_store_path`.
//!
//! Synapse loads storage providers as Python modules; Myelin builds in the one deployments use,
//! `s3_storage_provider.S3StorageProviderBackend` (matrix-org/synapse-s3-storage-provider), and
//! reads its entry in the same shape:
//!
//! ```yaml
//! media_storage_providers:
//! - module: s3_storage_provider.S3StorageProviderBackend
//!   store_local: true         # mirror media uploaded by local users
//!   store_remote: true        # mirror media fetched from other servers
//!   store_synchronous: true   # finish the mirror before answering the upload
//!   config:
//!     bucket: media
//!     region_name: us-east-1
//!     endpoint_url: https://s3.example.com
//!     access_key_id: ...
//!     secret_access_key: ...
//!     session_token: ...      # optional
//!     prefix: some/prefix/    # optional, prepended verbatim to each file's relative path
//!     storage_class: STANDARD # STANDARD, REDUCED_REDUNDANCY, STANDARD_IA, INTELLIGENT_TIERING
//!     sse_customer_key: ...   # optional SSE-C key: 32 bytes, as boto3 takes it
//!     sse_customer_algo: AES256
//!     threadpool_size: 40     # at most this many requests to S3 at once
//! ```
//!
//! As in Synapse, `store_local`, `store_remote` and `store_synchronous` default to false, and a
//! missing `access_key_id`/`secret_access_key` leaves credentials to the environment (the AWS
//! variables, or the instance's role), as boto3 does. The module takes its secrets inline only
//! (it has no `*_path` keys), so Myelin does too. Secrets never appear in `Debug` output.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use super::invalid;
use crate::load::{ConfigError, Origins};

/// The module name of Synapse's S3 provider, as written in `module`.
pub const S3_PROVIDER_MODULE: &str = "s3_storage_provider.S3StorageProviderBackend";

/// The storage classes the module accepts (`_VALID_STORAGE_CLASSES`).
const STORAGE_CLASSES: &[&str] = &["STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "INTELLIGENT_TIERING"];

/// A secret from the configuration; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The configured storage providers, in the order they are consulted.
#[derive(Clone, Debug, Default)]
pub struct MediaStorageConfig {
    pub providers: Vec<MediaStorageProvider>,
}

/// One `media_storage_providers` entry: when to use it and the backend it names.
#[derive(Clone, Debug)]
pub struct MediaStorageProvider {
    /// Mirror media uploaded by local users.
    pub store_local: bool,
    /// Mirror media fetched from other servers.
    pub store_remote: bool,
    /// Wait for the mirror before answering (otherwise it runs in the background).
    pub store_synchronous: bool,
    pub backend: StorageBackend,
}

/// The backend a provider entry's `module` names.
#[derive(Clone, Debug)]
pub enum StorageBackend {
    S3(S3ProviderConfig),
}

/// When the module asks boto3 for checksums (`request_checksum_calculation`,
/// `response_checksum_validation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumWhen {
    /// Only where S3 requires one (the default).
    WhenRequired,
    /// On every request that supports one.
    WhenSupported,
}

/// The `config` of an `s3_storage_provider.S3StorageProviderBackend` entry.
#[derive(Clone, Debug)]
pub struct S3ProviderConfig {
    pub bucket: String,
    /// Prepended verbatim to each file's path relative to `media_store_path` ("" by default).
    pub prefix: String,
    pub region_name: Option<String>,
    /// An S3-compatible service instead of AWS (`http` or `https`).
    pub endpoint_url: Option<url::Url>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    /// The SSE-C key (32 bytes) objects are encrypted with; the algorithm is AES256.
    pub sse_customer_key: Option<Secret>,
    pub storage_class: String,
    /// At most this many requests to S3 at once (the module's thread pool size, default 40).
    pub threadpool_size: usize,
    pub request_checksum_calculation: ChecksumWhen,
    pub response_checksum_validation: ChecksumWhen,
}

#[derive(Deserialize)]
pub(crate) struct RawMediaStorage {
    media_storage_providers: Option<Vec<RawProvider>>,
}

#[derive(Deserialize)]
struct RawProvider {
    module: String,
    store_local: Option<bool>,
    store_remote: Option<bool>,
    store_synchronous: Option<bool>,
    config: Option<RawS3Config>,
}

/// The S3 module's keys. Every one is read, so a misspelt key gets the reader's warning.
#[derive(Deserialize)]
struct RawS3Config {
    bucket: Option<String>,
    prefix: Option<String>,
    region_name: Option<String>,
    endpoint_url: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    sse_customer_key: Option<String>,
    sse_customer_algo: Option<String>,
    storage_class: Option<String>,
    threadpool_size: Option<Value>,
    request_checksum_calculation: Option<String>,
    response_checksum_validation: Option<String>,
}

impl RawMediaStorage {
    pub(crate) fn into_config(
        self,
        origins: &Origins,
        warnings: &mut Vec<String>,
    ) -> Result<MediaStorageConfig, ConfigError> {
        let mut providers = Vec::new();
        for (index, raw) in self.media_storage_providers.unwrap_or_default().into_iter().enumerate() {
            let key = format!("media_storage_providers[{index}]");
            let provider = raw.into_provider(origins, &key)?;
            let StorageBackend::S3(s3) = &provider.backend;
            if s3.response_checksum_validation == ChecksumWhen::WhenSupported {
                warnings.push(format!(
                    "{}: `{key}.config.response_checksum_validation: when_supported` is accepted, but \
                     Myelin does not check the checksums S3 sends with downloads",
                    origins.file_of(&key)
                ));
            }
            providers.push(provider);
        }
        Ok(MediaStorageConfig { providers })
    }
}

impl RawProvider {
    fn into_provider(self, origins: &Origins, key: &str) -> Result<MediaStorageProvider, ConfigError> {
        if self.module != S3_PROVIDER_MODULE {
            return Err(invalid(
                origins,
                &format!("{key}.module"),
                format!(
                    "unknown storage provider module {:?}: Myelin has `{S3_PROVIDER_MODULE}` built in \
                     and no other",
                    self.module
                ),
            ));
        }
        let config = self.config.ok_or_else(|| {
            invalid(origins, &format!("{key}.config"), "the S3 provider needs a `config` with a `bucket`")
        })?;
        Ok(MediaStorageProvider {
            store_local: self.store_local.unwrap_or(false),
            store_remote: self.store_remote.unwrap_or(false),
            store_synchronous: self.store_synchronous.unwrap_or(false),
            backend: StorageBackend::S3(config.into_config(origins, &format!("{key}.config"))?),
        })
    }
}

fn checksum_when(origins: &Origins, key: &str, value: Option<String>) -> Result<ChecksumWhen, ConfigError> {
    match value.as_deref() {
        None | Some("when_required") => Ok(ChecksumWhen::WhenRequired),
        Some("when_supported") => Ok(ChecksumWhen::WhenSupported),
        Some(other) => Err(invalid(
            origins,
            key,
            format!("expected \"when_supported\" or \"when_required\", got {other:?}"),
        )),
    }
}

impl RawS3Config {
    fn into_config(self, origins: &Origins, key: &str) -> Result<S3ProviderConfig, ConfigError> {
        let field = |name: &str| format!("{key}.{name}");
        let bucket = self
            .bucket
            .filter(|bucket| !bucket.trim().is_empty())
            .ok_or_else(|| invalid(origins, &field("bucket"), "the S3 provider needs a bucket name"))?;
        let endpoint_url = match self.endpoint_url {
            None => None,
            Some(text) => {
                let url = url::Url::parse(&text).map_err(|e| {
                    invalid(origins, &field("endpoint_url"), format!("not a URL ({e}): {text:?}"))
                })?;
                if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                    return Err(invalid(
                        origins,
                        &field("endpoint_url"),
                        format!("expected an http or https URL with a host, got {text:?}"),
                    ));
                }
                Some(url)
            }
        };
        let storage_class = self.storage_class.unwrap_or_else(|| "STANDARD".to_owned());
        if !STORAGE_CLASSES.contains(&storage_class.as_str()) {
            return Err(invalid(
                origins,
                &field("storage_class"),
                format!(
                    "unknown storage class {storage_class:?}; expected one of {}",
                    STORAGE_CLASSES.join(", ")
                ),
            ));
        }
        if let Some(algo) = &self.sse_customer_algo
            && algo != "AES256"
        {
            return Err(invalid(
                origins,
                &field("sse_customer_algo"),
                format!("S3 supports only \"AES256\" for customer-provided keys, got {algo:?}"),
            ));
        }
        if let Some(sse_key) = &self.sse_customer_key
            && sse_key.len() != 32
        {
            // S3 refuses every request with another key length; say so at start-up.
            return Err(invalid(
                origins,
                &field("sse_customer_key"),
                format!("an AES256 key is 32 bytes, this one is {} bytes", sse_key.len()),
            ));
        }
        if self.secret_access_key.is_some() != self.access_key_id.is_some() {
            let missing = if self.access_key_id.is_none() { "access_key_id" } else { "secret_access_key" };
            return Err(invalid(
                origins,
                &field(missing),
                "give both `access_key_id` and `secret_access_key`, or neither (to use the environment's credentials)",
            ));
        }
        if self.session_token.is_some() && self.access_key_id.is_none() {
            return Err(invalid(
                origins,
                &field("session_token"),
                "a session token goes with `access_key_id` and `secret_access_key`",
            ));
        }
        let threadpool_size = match &self.threadpool_size {
            None => 40,
            Some(value) => value
                .as_u64()
                .or_else(|| value.as_str().and_then(|text| text.trim().parse().ok()))
                .filter(|n| *n > 0)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    invalid(
                        origins,
                        &field("threadpool_size"),
                        format!("expected a positive integer, got {value}"),
                    )
                })?,
        };
        Ok(S3ProviderConfig {
            bucket,
            prefix: self.prefix.unwrap_or_default(),
            region_name: self.region_name,
            endpoint_url,
            access_key_id: self.access_key_id,
            secret_access_key: self.secret_access_key.map(Secret),
            session_token: self.session_token.map(Secret),
            sse_customer_key: self.sse_customer_key.map(Secret),
            storage_class,
            threadpool_size,
            request_checksum_calculation: checksum_when(
                origins,
                &field("request_checksum_calculation"),
                self.request_checksum_calculation,
            )?,
            response_checksum_validation: checksum_when(
                origins,
                &field("response_checksum_validation"),
                self.response_checksum_validation,
            )?,
        })
    }
}
