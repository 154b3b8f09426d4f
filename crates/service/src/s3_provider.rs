//! The S3 storage provider: Synapse's `s3_storage_provider.S3StorageProviderBackend`, built in.
//!
//! As in Synapse, the local `media_store_path` stays the primary store and a provider mirrors
//! it: a file is known by its path relative to the media store (`local_content/ab/cd/rest`,
//! `local_thumbnails/...`) and lives in the bucket under `prefix + relative path`, the key the
//! module uses, so a bucket Synapse filled is read as it is.
//!
//! - [`S3Provider::store_file`] uploads a local file, streamed: one `PUT` up to [`PART_SIZE`],
//!   a multipart upload above it with at most [`PARTS_IN_FLIGHT`] parts in memory, so a 1 GB
//!   file needs a few tens of MiB. A failed multipart upload is aborted.
//! - [`S3Provider::fetch_to_file`] downloads an object into a temporary file beside the
//!   destination and renames it into place once complete: an error or a cancelled fetch (the
//!   temporary file is removed when dropped) never leaves a half-written file under the
//!   destination's name. A missing object is `Ok(false)`.
//! - [`S3Provider::delete`] removes an object (a missing one is not an error).
//!
//! object_store speaks S3 (SigV4 signing on ring) over a reqwest client built with our own TLS
//! configuration ([`crate::tls`]), so no process-wide crypto provider or aws-lc is needed. At
//! most `threadpool_size` requests run at once, the module's thread pool bound.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt as _;
use myelin_config::{ChecksumWhen, S3ProviderConfig};
use object_store::StaticCredentialProvider;
use object_store::aws::{AmazonS3Builder, AwsCredential, Checksum};
use object_store::client::{HttpClient, HttpConnector};
use object_store::limit::LimitStore;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt as _, PutMultipartOptions,
    PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Files up to this size are uploaded in one request; larger ones in parts of this size (S3's
/// minimum part size is 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts of one multipart upload held in memory or in flight at once.
pub const PARTS_IN_FLIGHT: usize = 2;

/// How much of a file is read at a time while uploading it.
const READ_CHUNK: usize = 256 * 1024;

/// What went wrong talking to S3, with the object's key.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The service refused the configured credentials (unknown key, bad signature, expired
    /// token) or their permissions.
    #[error("S3 bucket {bucket:?} refused the credentials for {operation} of {key:?}: {source}")]
    Credentials { bucket: String, operation: &'static str, key: String, source: Box<object_store::Error> },
    /// Any other failure of the service or the connection.
    #[error("S3 {operation} of {key:?} in bucket {bucket:?} failed: {source}")]
    Request { bucket: String, operation: &'static str, key: String, source: Box<object_store::Error> },
    /// A relative path that cannot name an object (`..`, empty segments).
    #[error("{path:?} cannot be stored in S3: {source}")]
    InvalidPath { path: String, source: Box<object_store::path::Error> },
    /// Reading the local file or writing the downloaded one.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// The configuration could not build a client.
    #[error("S3 storage provider for bucket {bucket:?}: {source}")]
    Config { bucket: String, source: Box<object_store::Error> },
    /// The download ended before the object's length.
    #[error("S3 download of {key:?} ended after {received} of {expected} bytes")]
    Truncated { key: String, received: u64, expected: u64 },
}

/// One configured S3 bucket (and prefix) mirroring the media store.
pub struct S3Provider {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    storage_class: String,
}

impl fmt::Debug for S3Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Provider").field("bucket", &self.bucket).field("prefix", &self.prefix).finish()
    }
}

/// Builds object_store's HTTP client from our reqwest and rustls set-up (object_store's own
/// would need a process-wide crypto provider).
#[derive(Debug)]
struct MyelinConnector {
    allow_http: bool,
}

impl HttpConnector for MyelinConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let generic = |source: Box<dyn std::error::Error + Send + Sync>| object_store::Error::Generic {
            store: "S3",
            source,
        };
        let client = crate::tls::http_client_builder()
            .map_err(|e| generic(Box::new(e)))?
            .https_only(!self.allow_http)
            .connect_timeout(Duration::from_secs(10))
            // No total timeout: a large object takes as long as it takes, but a stalled
            // connection does not hold a request forever.
            .read_timeout(Duration::from_secs(90))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| generic(Box::new(e)))?;
        Ok(HttpClient::new(client))
    }
}

impl S3Provider {
    /// A provider for one `media_storage_providers` entry. Credentials the entry does not give
    /// come from the environment (the `AWS_*` variables, or the instance's role), as boto3's do.
    pub fn new(config: &S3ProviderConfig) -> Result<S3Provider, S3Error> {
        let bucket = config.bucket.clone();
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
        if let Some(region) = &config.region_name {
            builder = builder.with_region(region);
        }
        let mut allow_http = false;
        if let Some(endpoint) = &config.endpoint_url {
            allow_http = endpoint.scheme() == "http";
            builder =
                builder.with_endpoint(endpoint.as_str().trim_end_matches('/')).with_allow_http(allow_http);
        }
        if let (Some(key_id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            // Given whole, so that a token from the environment never goes with these keys.
            let credential = AwsCredential {
                key_id: key_id.clone(),
                secret_key: secret.expose().to_owned(),
                token: config.session_token.as_ref().map(|token| token.expose().to_owned()),
            };
            builder = builder.with_credentials(Arc::new(StaticCredentialProvider::new(credential)));
        }
        if let Some(key) = &config.sse_customer_key {
            // The module hands boto3 the raw key; S3 takes it base64-encoded.
            builder =
                builder.with_ssec_encryption(base64::engine::general_purpose::STANDARD.encode(key.expose()));
        }
        if config.request_checksum_calculation == ChecksumWhen::WhenSupported {
            builder = builder.with_checksum_algorithm(Checksum::SHA256);
        }
        let retry =
            RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(60), ..Default::default() };
        let s3 = builder
            .with_retry(retry)
            .with_http_connector(MyelinConnector { allow_http })
            .build()
            .map_err(|source| S3Error::Config { bucket: bucket.clone(), source: Box::new(source) })?;
        Ok(S3Provider {
            store: Arc::new(LimitStore::new(s3, config.threadpool_size)),
            bucket,
            prefix: config.prefix.clone(),
            storage_class: config.storage_class.clone(),
        })
    }

    /// The object key of a path relative to the media store: the prefix, then the path, as the
    /// module writes them.
    pub fn object_key(&self, rel_path: &str) -> String {
        format!("{}{}", self.prefix, rel_path)
    }

    fn location(&self, rel_path: &str) -> Result<ObjectPath, S3Error> {
        let key = self.object_key(rel_path);
        ObjectPath::parse(&key).map_err(|source| S3Error::InvalidPath { path: key, source: Box::new(source) })
    }

    fn error(&self, operation: &'static str, location: &ObjectPath, source: object_store::Error) -> S3Error {
        let (bucket, key) = (self.bucket.clone(), location.to_string());
        match source {
            object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. } => {
                S3Error::Credentials { bucket, operation, key, source: Box::new(source) }
            }
            source => S3Error::Request { bucket, operation, key, source: Box::new(source) },
        }
    }

    fn attributes(&self) -> Attributes {
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::StorageClass, self.storage_class.clone().into());
        attributes
    }

    /// Uploads `local_path` as the object for `rel_path`, streamed from disk.
    pub async fn store_file(&self, rel_path: &str, local_path: &Path) -> Result<(), S3Error> {
        let location = self.location(rel_path)?;
        let io = |source| S3Error::Io { context: format!("reading {}", local_path.display()), source };
        let mut file = tokio::fs::File::open(local_path).await.map_err(io)?;
        let size = file.metadata().await.map_err(io)?.len();
        if size <= PART_SIZE as u64 {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data).await.map_err(io)?;
            let options = PutOptions { attributes: self.attributes(), ..Default::default() };
            self.store
                .put_opts(&location, PutPayload::from(data), options)
                .await
                .map_err(|e| self.error("upload", &location, e))?;
            return Ok(());
        }
        let options = PutMultipartOptions { attributes: self.attributes(), ..Default::default() };
        let upload = self
            .store
            .put_multipart_opts(&location, options)
            .await
            .map_err(|e| self.error("multipart upload", &location, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buffer = vec![0u8; READ_CHUNK];
        let streamed: Result<(), S3Error> = async {
            loop {
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.error("multipart upload", &location, e))?;
                let n = file.read(&mut buffer).await.map_err(io)?;
                if n == 0 {
                    return Ok(());
                }
                writer.write(&buffer[..n]);
            }
        }
        .await;
        match streamed {
            Ok(()) => {
                writer.finish().await.map_err(|e| self.error("multipart upload", &location, e))?;
                Ok(())
            }
            Err(error) => {
                if let Err(abort_error) = writer.abort().await {
                    tracing::warn!(key = %location, error = %abort_error, "could not abort a failed S3 multipart upload");
                }
                Err(error)
            }
        }
    }

    /// Downloads the object for `rel_path` to `dest`: `Ok(false)` when there is no such
    /// object. The data goes to a temporary file in `dest`'s directory, renamed to `dest` once
    /// whole, so `dest` either does not exist or is complete.
    pub async fn fetch_to_file(&self, rel_path: &str, dest: &Path) -> Result<bool, S3Error> {
        let location = self.location(rel_path)?;
        let result = match self.store.get_opts(&location, GetOptions::default()).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(error) => return Err(self.error("download", &location, error)),
        };
        let expected = result.meta.size;
        let dir = dest.parent().unwrap_or(Path::new("."));
        let io =
            |context: &str, source| S3Error::Io { context: format!("{context} {}", dest.display()), source };
        tokio::fs::create_dir_all(dir).await.map_err(|e| io("creating the directory of", e))?;
        let temp = tempfile::Builder::new()
            .prefix(".s3-download-")
            .tempfile_in(dir)
            .map_err(|e| io("creating a temporary file for", e))?;
        let std_file = temp.as_file().try_clone().map_err(|e| io("opening a temporary file for", e))?;
        let mut file = tokio::fs::File::from_std(std_file);
        let mut stream = result.into_stream();
        let mut received = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error("download", &location, e))?;
            file.write_all(&chunk).await.map_err(|e| io("writing", e))?;
            received += chunk.len() as u64;
        }
        if received != expected {
            return Err(S3Error::Truncated { key: location.to_string(), received, expected });
        }
        file.flush().await.map_err(|e| io("writing", e))?;
        file.sync_all().await.map_err(|e| io("syncing", e))?;
        drop(file);
        temp.persist(dest).map_err(|e| io("renaming the download to", e.error))?;
        Ok(true)
    }

    /// Deletes the object for `rel_path`; deleting a missing object succeeds.
    pub async fn delete(&self, rel_path: &str) -> Result<(), S3Error> {
        let location = self.location(rel_path)?;
        match self.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(self.error("delete", &location, error)),
        }
    }
}

/// Whose media a file is, for `store_local` / `store_remote`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaOrigin {
    /// Uploaded by a local user (and its thumbnails).
    Local,
    /// Fetched from another server (and its thumbnails).
    Remote,
}

/// One provider with its `media_storage_providers` entry's rules.
struct ConfiguredProvider {
    store_local: bool,
    store_remote: bool,
    store_synchronous: bool,
    provider: Arc<S3Provider>,
}

/// The configured `media_storage_providers`, used as Synapse's `StorageProviderWrapper` uses
/// them: a file stored locally is mirrored by every provider whose `store_local` (or, for
/// remote media, `store_remote`) is on, awaited when `store_synchronous`, otherwise in the
/// background with failures logged; a file missing locally is fetched from the first provider
/// that has it.
#[derive(Default)]
pub struct MediaStorageProviders {
    providers: Vec<ConfiguredProvider>,
}

impl MediaStorageProviders {
    pub fn new(config: &myelin_config::MediaStorageConfig) -> Result<MediaStorageProviders, S3Error> {
        let providers = config
            .providers
            .iter()
            .map(|entry| {
                let myelin_config::StorageBackend::S3(s3) = &entry.backend;
                Ok(ConfiguredProvider {
                    store_local: entry.store_local,
                    store_remote: entry.store_remote,
                    store_synchronous: entry.store_synchronous,
                    provider: Arc::new(S3Provider::new(s3)?),
                })
            })
            .collect::<Result<Vec<_>, S3Error>>()?;
        Ok(MediaStorageProviders { providers })
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Mirrors a file just stored at `local_path` (`rel_path` relative to the media store).
    /// Returns once every synchronous provider has it; an error from one of those fails the
    /// store, as in Synapse.
    pub async fn store_file(
        &self,
        rel_path: &str,
        local_path: &Path,
        origin: MediaOrigin,
    ) -> Result<(), S3Error> {
        for entry in &self.providers {
            let wanted = match origin {
                MediaOrigin::Local => entry.store_local,
                MediaOrigin::Remote => entry.store_remote,
            };
            if !wanted {
                continue;
            }
            if entry.store_synchronous {
                entry.provider.store_file(rel_path, local_path).await?;
            } else {
                let (provider, rel_path, local_path) =
                    (entry.provider.clone(), rel_path.to_owned(), local_path.to_owned());
                tokio::spawn(async move {
                    if let Err(error) = provider.store_file(&rel_path, &local_path).await {
                        tracing::error!(%error, path = %rel_path, "could not mirror a media file to its storage provider");
                    }
                });
            }
        }
        Ok(())
    }

    /// After a local miss: fetches `rel_path` into `local_path` from the first provider that
    /// has it. `Ok(false)` when none has it.
    pub async fn fetch_to_file(&self, rel_path: &str, local_path: &Path) -> Result<bool, S3Error> {
        for entry in &self.providers {
            if entry.provider.fetch_to_file(rel_path, local_path).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Deletes `rel_path` from every provider (for media deleted or purged locally).
    pub async fn delete(&self, rel_path: &str) -> Result<(), S3Error> {
        for entry in &self.providers {
            entry.provider.delete(rel_path).await?;
        }
        Ok(())
    }
}
