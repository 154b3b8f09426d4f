//! The federation HTTP client: one pooled hyper client over [`FederationConnector`], requests
//! signed with the `X-Matrix` authorization header, JSON in and out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use myelin_config::{FederationConfig, OutboundConfig};
use ruma::api::federation::authentication::{XMatrix, XMatrixSigningInput};
use ruma::signatures::Ed25519KeyPair;
use ruma::{OwnedServerName, ServerName};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connector::{ConnectError, FederationConnector, HttpsConnector, SCHEME};
use crate::discovery::{Discovery, DiscoveryError};
use crate::tls::TlsConfigError;

/// This server's identity for signing requests.
#[derive(Clone)]
pub struct Signer {
    pub server_name: OwnedServerName,
    pub key_pair: Arc<Ed25519KeyPair>,
}

/// Timeouts and limits of the client.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    /// For the TCP connection and, again, the TLS handshake.
    pub connect_timeout: Duration,
    /// For a whole request, response body included.
    pub request_timeout: Duration,
    /// The largest response body read.
    pub max_response_size: usize,
    /// The port `.well-known/matrix/server` is fetched from: 443, as the spec says (tests
    /// serve it elsewhere).
    pub well_known_port: u16,
}

impl Default for ClientOptions {
    fn default() -> Self {
        // Synapse: 60 s per request, 100 MiB responses.
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_response_size: 100 * 1024 * 1024,
            well_known_port: 443,
        }
    }
}

/// A failed federation request.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("invalid destination: {0}")]
    Discovery(#[from] DiscoveryError),
    #[error("{destination} is unreachable: {message}")]
    Unreachable { destination: String, message: String },
    #[error("TLS with {destination} failed: {message}")]
    Tls { destination: String, message: String },
    #[error("{destination} did not answer in time")]
    Timeout { destination: String },
    #[error("{destination} answered HTTP {status}{}", errcode.as_ref().map(|c| format!(" {c}")).unwrap_or_default())]
    Status {
        destination: String,
        status: u16,
        /// The Matrix error of the body, when it is one.
        errcode: Option<String>,
        error: Option<String>,
    },
    #[error("{destination} sent a bad response: {message}")]
    BadResponse { destination: String, message: String },
    #[error("cannot build the request: {0}")]
    Request(String),
    /// `federation_domain_whitelist` does not name the destination: nothing was sent.
    #[error("federation denied with {destination}")]
    Denied { destination: String },
}

impl FederationError {
    /// The HTTP status the remote server answered, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            FederationError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The client every outbound federation request goes through.
pub struct FederationClient {
    http: Client<FederationConnector, Full<Bytes>>,
    discovery: Arc<Discovery>,
    signer: Signer,
    options: ClientOptions,
    requests: AtomicU64,
    /// `federation_domain_whitelist`: when set, the only servers requests go to.
    domain_whitelist: Option<Vec<String>>,
}

impl FederationClient {
    /// A client with its TLS from `config` and its address rules from `config.outbound(general)`.
    pub fn new(
        config: &FederationConfig,
        general: &OutboundConfig,
        signer: Signer,
        options: ClientOptions,
    ) -> Result<FederationClient, TlsConfigError> {
        let tls = Arc::new(crate::tls::client_config(config)?);
        let outbound = config.outbound(general);
        let https = HttpsConnector::new(tls.clone(), outbound.clone(), options.connect_timeout);
        let discovery =
            Arc::new(Discovery::new(outbound, https, options.request_timeout, options.well_known_port));
        let connector = FederationConnector {
            tls: tokio_rustls::TlsConnector::from(tls),
            discovery: discovery.clone(),
            timeout: options.connect_timeout,
        };
        let http = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(8)
            .set_host(false)
            .build(connector);
        Ok(FederationClient {
            http,
            discovery,
            signer,
            options,
            requests: AtomicU64::new(0),
            domain_whitelist: config.domain_whitelist.clone(),
        })
    }

    /// Server discovery, with its caches.
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// This server's name.
    pub fn server_name(&self) -> &ServerName {
        &self.signer.server_name
    }

    /// How many requests this client has sent (for tests and metrics).
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `GET` `path_and_query` on `destination`, signed.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        destination: &ServerName,
        path_and_query: &str,
    ) -> Result<T, FederationError> {
        self.request(http::Method::GET, destination, path_and_query, None).await
    }

    /// `PUT` a JSON body, signed.
    pub async fn put_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        destination: &ServerName,
        path_and_query: &str,
        body: &B,
    ) -> Result<T, FederationError> {
        let body = serde_json::to_vec(body).map_err(|e| FederationError::Request(e.to_string()))?;
        self.request(http::Method::PUT, destination, path_and_query, Some(body)).await
    }

    /// `POST` a JSON body, signed.
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        destination: &ServerName,
        path_and_query: &str,
        body: &B,
    ) -> Result<T, FederationError> {
        let body = serde_json::to_vec(body).map_err(|e| FederationError::Request(e.to_string()))?;
        self.request(http::Method::POST, destination, path_and_query, Some(body)).await
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: http::Method,
        destination: &ServerName,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, FederationError> {
        let name = destination.as_str().to_owned();
        if self.domain_whitelist.as_ref().is_some_and(|list| !list.contains(&name)) {
            return Err(FederationError::Denied { destination: name });
        }
        let resolved = self.discovery.resolve(&name).await?;
        let uri = format!("{SCHEME}://{name}{path_and_query}");
        let request_error = |e: &dyn std::fmt::Display| FederationError::Request(e.to_string());
        let mut builder = http::Request::builder().method(method).uri(&uri);
        if body.is_some() {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        let unsigned = builder.body(body.unwrap_or_default()).map_err(|e| request_error(&e))?;
        let input = XMatrixSigningInput::new(
            self.signer.server_name.clone(),
            destination.to_owned(),
            &self.signer.key_pair,
        );
        let authorization = XMatrix::sign_http_request(&unsigned, input).map_err(|e| request_error(&e))?;
        let (mut parts, body) = unsigned.into_parts();
        parts.headers.insert(http::header::AUTHORIZATION, http::HeaderValue::from(&authorization));
        parts.headers.insert(
            http::header::HOST,
            http::HeaderValue::from_str(&resolved.host_header).map_err(|e| request_error(&e))?,
        );
        parts.headers.insert(http::header::USER_AGENT, http::HeaderValue::from_static(crate::USER_AGENT));
        let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));

        self.requests.fetch_add(1, Ordering::Relaxed);
        let timeout = || FederationError::Timeout { destination: name.clone() };
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| classify(&name, &e))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), self.options.max_response_size)
                .collect()
                .await
                .map_err(|e| FederationError::BadResponse {
                    destination: name.clone(),
                    message: e.to_string(),
                })?
                .to_bytes();
            Ok::<_, FederationError>((status, body))
        };
        let (status, body) =
            tokio::time::timeout(self.options.request_timeout, exchange).await.map_err(|_| timeout())??;
        if !status.is_success() {
            let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
            let text = |key: &str| parsed.as_ref()?.get(key)?.as_str().map(str::to_owned);
            return Err(FederationError::Status {
                destination: name,
                status: status.as_u16(),
                errcode: text("errcode"),
                error: text("error"),
            });
        }
        serde_json::from_slice(&body).map_err(|e| FederationError::BadResponse {
            destination: name,
            message: format!("bad JSON: {e}"),
        })
    }
}

/// Sorts a hyper client error into unreachable / TLS / refused destination.
fn classify(destination: &str, error: &hyper_util::client::legacy::Error) -> FederationError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(connect) = current.downcast_ref::<ConnectError>() {
            return match connect {
                ConnectError::Discovery(DiscoveryError::Blocked(host)) => {
                    FederationError::Discovery(DiscoveryError::Blocked(host.clone()))
                }
                ConnectError::Tls(message) => {
                    FederationError::Tls { destination: destination.to_owned(), message: message.clone() }
                }
                other => FederationError::Unreachable {
                    destination: destination.to_owned(),
                    message: other.to_string(),
                },
            };
        }
        source = current.source();
    }
    FederationError::Unreachable { destination: destination.to_owned(), message: error.to_string() }
}
