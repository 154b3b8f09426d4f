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
    /// A file answered was larger than the caller allows.
    #[error("{destination} sent a file larger than {limit} bytes")]
    TooLarge { destination: String, limit: u64 },
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

    /// Whether requests may go to `destination`: `federation_domain_whitelist`, when set,
    /// names it.
    pub fn allows(&self, destination: &str) -> bool {
        self.domain_whitelist.as_ref().is_none_or(|list| list.iter().any(|name| name == destination))
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
        let name = destination.as_str();
        let exchange = async {
            let response = self.send(method, destination, path_and_query, body).await?;
            let status = response.status();
            let body = self.read_body(name, response.into_body(), self.options.max_response_size).await?;
            Ok::<_, FederationError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.options.request_timeout, exchange)
            .await
            .map_err(|_| FederationError::Timeout { destination: name.to_owned() })??;
        if !status.is_success() {
            return Err(status_error(name, status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| FederationError::BadResponse {
            destination: name.to_owned(),
            message: format!("bad JSON: {e}"),
        })
    }

    /// `GET` a media file, signed, streaming its bytes into `sink` as they arrive and failing
    /// with [`FederationError::TooLarge`] past `max_size` bytes. `format` says how the file
    /// comes: alone in the body (the legacy `/_matrix/media/v3/download`), or as the second
    /// part of a `multipart/mixed` answer whose first part is JSON (the federation media API;
    /// a part that redirects elsewhere is not followed). The whole exchange has the client's
    /// request timeout.
    pub async fn get_media<W: tokio::io::AsyncWrite + Unpin + Send>(
        &self,
        destination: &ServerName,
        path_and_query: &str,
        format: MediaFormat,
        max_size: u64,
        sink: &mut W,
    ) -> Result<MediaDownload, FederationError> {
        let name = destination.as_str();
        let exchange = async {
            let response = self.send(http::Method::GET, destination, path_and_query, None).await?;
            let status = response.status();
            let (parts, body) = response.into_parts();
            if !status.is_success() {
                let body = self.read_body(name, body, 64 * 1024).await?;
                return Err(status_error(name, status, &body));
            }
            let header = |headers: &http::HeaderMap, name: http::HeaderName| {
                headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
            };
            let bad =
                |message: String| FederationError::BadResponse { destination: name.to_owned(), message };
            let mut sink = LimitedSink { sink, written: 0, limit: max_size, destination: name };
            match format {
                MediaFormat::Plain => {
                    let mut stream = http_body_util::BodyDataStream::new(body);
                    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
                        sink.write(&chunk.map_err(|e| bad(e.to_string()))?).await?;
                    }
                    Ok(MediaDownload {
                        content_type: header(&parts.headers, http::header::CONTENT_TYPE),
                        content_disposition: header(&parts.headers, http::header::CONTENT_DISPOSITION),
                        length: sink.written,
                    })
                }
                MediaFormat::Multipart => {
                    let content_type = header(&parts.headers, http::header::CONTENT_TYPE).unwrap_or_default();
                    let boundary = multipart_boundary(&content_type)
                        .ok_or_else(|| bad(format!("not a multipart/mixed answer: {content_type:?}")))?;
                    let stream = http_body_util::BodyDataStream::new(body);
                    let mut multipart = multer::Multipart::new(stream, boundary);
                    let multipart_error = |e: multer::Error| bad(format!("bad multipart answer: {e}"));
                    // The metadata part: JSON (an empty object today), read and set aside.
                    let mut metadata = multipart
                        .next_field()
                        .await
                        .map_err(multipart_error)?
                        .ok_or_else(|| bad("an empty multipart answer".to_owned()))?;
                    let mut metadata_length = 0usize;
                    while let Some(chunk) = metadata.chunk().await.map_err(multipart_error)? {
                        metadata_length += chunk.len();
                        if metadata_length > 64 * 1024 {
                            return Err(bad("the metadata part is too large".to_owned()));
                        }
                    }
                    drop(metadata);
                    let mut file = multipart
                        .next_field()
                        .await
                        .map_err(multipart_error)?
                        .ok_or_else(|| bad("a multipart answer without a file".to_owned()))?;
                    if file.headers().contains_key(http::header::LOCATION) {
                        return Err(
                            bad("the file is elsewhere (Location), which is not followed".to_owned()),
                        );
                    }
                    let download = MediaDownload {
                        content_type: header(file.headers(), http::header::CONTENT_TYPE),
                        content_disposition: header(file.headers(), http::header::CONTENT_DISPOSITION),
                        length: 0,
                    };
                    while let Some(chunk) = file.chunk().await.map_err(multipart_error)? {
                        sink.write(&chunk).await?;
                    }
                    Ok(MediaDownload { length: sink.written, ..download })
                }
            }
        };
        tokio::time::timeout(self.options.request_timeout, exchange)
            .await
            .map_err(|_| FederationError::Timeout { destination: name.to_owned() })?
    }

    /// Signs and sends a request; answers with the response, its body still to be read.
    async fn send(
        &self,
        method: http::Method,
        destination: &ServerName,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<http::Response<hyper::body::Incoming>, FederationError> {
        let name = destination.as_str().to_owned();
        if !self.allows(&name) {
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
        self.http.request(request).await.map_err(|e| classify(&name, &e))
    }

    /// A response body, whole, up to `limit` bytes.
    async fn read_body(
        &self,
        destination: &str,
        body: hyper::body::Incoming,
        limit: usize,
    ) -> Result<Bytes, FederationError> {
        Ok(Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| FederationError::BadResponse {
                destination: destination.to_owned(),
                message: e.to_string(),
            })?
            .to_bytes())
    }
}

/// How [`FederationClient::get_media`] finds the file in the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaFormat {
    /// `multipart/mixed`: a JSON part, then the file (`/_matrix/federation/v1/media/...`).
    Multipart,
    /// The body is the file (`/_matrix/media/v3/download/...`).
    Plain,
}

/// A media file received: what its headers said, and how many bytes were written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaDownload {
    pub content_type: Option<String>,
    pub content_disposition: Option<String>,
    pub length: u64,
}

/// A sink that refuses bytes past its limit.
struct LimitedSink<'a, W> {
    sink: &'a mut W,
    written: u64,
    limit: u64,
    destination: &'a str,
}

impl<W: tokio::io::AsyncWrite + Unpin> LimitedSink<'_, W> {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), FederationError> {
        use tokio::io::AsyncWriteExt;
        self.written = self.written.saturating_add(chunk.len() as u64);
        if self.written > self.limit {
            return Err(FederationError::TooLarge {
                destination: self.destination.to_owned(),
                limit: self.limit,
            });
        }
        self.sink
            .write_all(chunk)
            .await
            .map_err(|e| FederationError::Request(format!("writing the file: {e}")))
    }
}

/// The boundary of a `multipart/mixed` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    let parsed: mime::Mime = content_type.parse().ok()?;
    if parsed.type_() != mime::MULTIPART || parsed.subtype().as_str() != "mixed" {
        return None;
    }
    parsed.get_param(mime::BOUNDARY).map(|boundary| boundary.as_str().to_owned())
}

/// An error answer: its status, and its Matrix error when the body is one.
fn status_error(destination: &str, status: http::StatusCode, body: &[u8]) -> FederationError {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let text = |key: &str| parsed.as_ref()?.get(key)?.as_str().map(str::to_owned);
    FederationError::Status {
        destination: destination.to_owned(),
        status: status.as_u16(),
        errcode: text("errcode"),
        error: text("error"),
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

#[cfg(test)]
mod tests {
    use super::multipart_boundary;

    #[test]
    fn only_multipart_mixed_answers_give_a_boundary() {
        assert_eq!(multipart_boundary("multipart/mixed; boundary=abc123").as_deref(), Some("abc123"));
        assert_eq!(multipart_boundary("Multipart/Mixed; boundary=\"a b\"").as_deref(), Some("a b"));
        assert_eq!(multipart_boundary("multipart/form-data; boundary=abc"), None);
        assert_eq!(multipart_boundary("multipart/mixed"), None);
        assert_eq!(multipart_boundary("application/json"), None);
        assert_eq!(multipart_boundary(""), None);
    }
}
