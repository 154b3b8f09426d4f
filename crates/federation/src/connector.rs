//! Connectors for hyper's pooled client: TCP to an allowed address, then TLS.
//!
//! [`FederationConnector`] serves URIs of the form `matrix-federation://<server name>/...`
//! (Synapse's trick): the pool keys connections by server name, and the connector resolves the
//! name by [`Discovery`] and checks the certificate for the destination's TLS name.
//! [`HttpsConnector`] serves plain `https://host[:port]/` URIs (`.well-known`) with the same
//! address rules.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::discovery::{Discovery, DiscoveryError};

/// The URI scheme of federation requests.
pub const SCHEME: &str = "matrix-federation";

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("cannot connect: {0}")]
    Unreachable(String),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

/// A TLS connection to a federation server.
pub struct TlsConnection(TokioIo<TlsStream<TcpStream>>);

impl Connection for TlsConnection {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for TlsConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl Write for TlsConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Connects to the first address that answers (each within `timeout`) and runs the TLS
/// handshake for `tls_name`.
async fn connect_tls(
    tls: TlsConnector,
    addresses: Vec<SocketAddr>,
    tls_name: String,
    timeout: Duration,
) -> Result<TlsConnection, ConnectError> {
    let server_name =
        ServerName::try_from(tls_name.clone()).map_err(|e| ConnectError::Tls(format!("{tls_name}: {e}")))?;
    let mut last_error = String::from("no address");
    for address in addresses {
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(error)) => {
                last_error = format!("{address}: {error}");
                continue;
            }
            Err(_) => {
                last_error = format!("{address}: timed out");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        return match tokio::time::timeout(timeout, tls.connect(server_name.clone(), tcp)).await {
            Ok(Ok(stream)) => Ok(TlsConnection(TokioIo::new(stream))),
            Ok(Err(error)) => Err(ConnectError::Tls(format!("{tls_name} ({address}): {error}"))),
            Err(_) => Err(ConnectError::Tls(format!("{tls_name} ({address}): handshake timed out"))),
        };
    }
    Err(ConnectError::Unreachable(last_error))
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<TlsConnection, ConnectError>> + Send>>;

/// Plain `https://` connections, to addresses the outbound rules allow.
#[derive(Clone)]
pub struct HttpsConnector {
    pub(crate) tls: TlsConnector,
    pub(crate) outbound: myelin_config::OutboundConfig,
    pub(crate) timeout: Duration,
}

impl HttpsConnector {
    pub(crate) fn new(
        tls: Arc<ClientConfig>,
        outbound: myelin_config::OutboundConfig,
        timeout: Duration,
    ) -> Self {
        HttpsConnector { tls: TlsConnector::from(tls), outbound, timeout }
    }
}

impl tower::Service<http::Uri> for HttpsConnector {
    type Response = TlsConnection;
    type Error = ConnectError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if uri.scheme_str() != Some("https") {
                return Err(ConnectError::Unreachable(format!("{uri}: only https is allowed")));
            }
            let host = uri.host().unwrap_or_default().to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let bare = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let found: Vec<SocketAddr> = match this.outbound.dns_override(&bare) {
                Some(ips) => ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect(),
                None => tokio::net::lookup_host((bare.as_str(), port))
                    .await
                    .map_err(|e| DiscoveryError::Unresolvable { host: bare.clone(), message: e.to_string() })?
                    .collect(),
            };
            let allowed: Vec<SocketAddr> =
                found.into_iter().filter(|a| !this.outbound.is_ip_blocked(a.ip())).collect();
            if allowed.is_empty() {
                return Err(DiscoveryError::Blocked(bare).into());
            }
            connect_tls(this.tls, allowed, bare, this.timeout).await
        })
    }
}

/// `matrix-federation://<server name>/` connections, resolved by [`Discovery`].
#[derive(Clone)]
pub struct FederationConnector {
    pub(crate) tls: TlsConnector,
    pub(crate) discovery: Arc<Discovery>,
    pub(crate) timeout: Duration,
}

impl tower::Service<http::Uri> for FederationConnector {
    type Response = TlsConnection;
    type Error = ConnectError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let server_name = match (uri.scheme_str(), uri.authority()) {
                (Some(SCHEME), Some(authority)) => authority.as_str().to_owned(),
                _ => return Err(ConnectError::Unreachable(format!("{uri}: not a federation URI"))),
            };
            let destination = this.discovery.resolve(&server_name).await?;
            connect_tls(this.tls, destination.addresses, destination.tls_name, this.timeout).await
        })
    }
}
