//! Listeners: TCP (optionally TLS) and UNIX sockets, served with hyper and shut down gracefully.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use myelin_api::PeerAddr;
use myelin_config::{ListenerConfig, ListenerType};
use myelin_service::Services;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long requests in flight may run on after shutdown begins.
pub const GRACE: Duration = Duration::from_secs(5);

/// What a listener is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A bound socket with the router that serves it.
pub struct BoundListener {
    pub addr: ListenAddr,
    socket: Socket,
    tls: Option<TlsAcceptor>,
    router: Router,
}

fn tls_acceptor(services: &Services) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let server = &services.config.server;
    let (Some(cert_path), Some(key_path)) = (&server.tls_certificate_path, &server.tls_private_key_path)
    else {
        bail!("tls_certificate_path and tls_private_key_path must be set for TLS listeners");
    };
    let certs = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert_path.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key_path).with_context(|| format!("reading {}", key_path.display()))?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds every configured listener that Myelin serves.
pub async fn bind_all(services: &Services) -> anyhow::Result<Vec<(usize, BoundListener)>> {
    let mut bound = Vec::new();
    for (index, listener) in services.config.server.listeners.iter().enumerate() {
        let router = match listener.kind {
            ListenerType::Http => myelin_api::router(services, listener),
            ListenerType::Metrics if services.config.metrics.enable_metrics => {
                myelin_api::metrics_router(services)
            }
            _ => continue,
        };
        let tls = if listener.tls { Some(tls_acceptor(services)?) } else { None };
        for socket in bind_listener(listener).await.with_context(|| format!("listeners[{index}]"))? {
            let addr = match &socket {
                Socket::Tcp(l) => ListenAddr::Tcp(l.local_addr()?),
                Socket::Unix(_) => ListenAddr::Unix(listener.path.clone().unwrap_or_default()),
            };
            tracing::info!(%addr, kind = ?listener.kind, tls = listener.tls, "listening");
            bound.push((index, BoundListener { addr, socket, tls: tls.clone(), router: router.clone() }));
        }
    }
    Ok(bound)
}

async fn bind_listener(listener: &ListenerConfig) -> anyhow::Result<Vec<Socket>> {
    if let Some(path) = &listener.path {
        if path.exists() {
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        let socket = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = listener.socket_mode().unwrap_or(0o666);
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        return Ok(vec![Socket::Unix(socket)]);
    }
    let port = listener.port.unwrap_or(0);
    let mut sockets = Vec::new();
    let mut bound_unspecified_v6 = false;
    for address in listener.addresses() {
        let ip: IpAddr = address.parse().with_context(|| format!("bad bind address {address:?}"))?;
        match TcpListener::bind(SocketAddr::new(ip, port)).await {
            Ok(socket) => {
                bound_unspecified_v6 |= ip == IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
                sockets.push(Socket::Tcp(socket));
            }
            // `::` usually covers IPv4 too, so `0.0.0.0` on the same port is then in use.
            Err(error) if bound_unspecified_v6 && ip.is_unspecified() => {
                tracing::debug!(%address, %error, "skipping: already covered by ::");
            }
            Err(error) => return Err(error).with_context(|| format!("binding {address} port {port}")),
        }
    }
    Ok(sockets)
}

async fn run_connection<I>(io: I, peer: Option<SocketAddr>, router: Router, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(PeerAddr(peer));
        request
    });
    let builder = Builder::new(TokioExecutor::new());
    let connection =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    if let Err(error) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Accepts connections until `shutdown` is cancelled, then waits up to `grace` for them.
pub async fn serve(listener: BoundListener, shutdown: CancellationToken, grace: Duration) {
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept(&listener.socket) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, addr = %listener.addr, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let router = listener.router.clone();
        let watcher = graceful.watcher();
        match (stream, &listener.tls) {
            (Stream::Tcp(stream), None) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(run_connection(stream, peer, router, watcher));
            }
            (Stream::Tcp(stream), Some(acceptor)) => {
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => run_connection(tls, peer, router, watcher).await,
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
            (Stream::Unix(stream), _) => {
                tokio::spawn(run_connection(stream, None, router, watcher));
            }
        }
    }
    drop(listener.socket);
    if let ListenAddr::Unix(path) = &listener.addr {
        let _ = std::fs::remove_file(path);
    }
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::info!(addr = %listener.addr, "closing connections still open after the grace period");
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(socket: &Socket) -> std::io::Result<(Stream, Option<SocketAddr>)> {
    match socket {
        Socket::Tcp(listener) => {
            let (stream, peer) = listener.accept().await?;
            Ok((Stream::Tcp(stream), Some(peer)))
        }
        Socket::Unix(listener) => {
            let (stream, _) = listener.accept().await?;
            Ok((Stream::Unix(stream), None))
        }
    }
}
