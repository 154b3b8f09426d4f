//! Listeners: TCP (optionally TLS) and UNIX sockets, served with hyper and shut down gracefully.
//!
//! Each listener bounds what a client can hold: at most `max_connections` connections are
//! served at once (the rest wait in the listen backlog), an HTTP/1 request head must arrive
//! within `header_read_timeout`, a request body that stalls for `body_read_timeout` is refused,
//! and a connection with nothing in flight for `idle_timeout` is closed. Request bodies are
//! read by the extractors in `myelin_api::extract`, which refuse them past their size limit
//! before buffering more.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use myelin_api::PeerAddr;
use myelin_config::{ListenerConfig, ListenerType};
use myelin_service::Services;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

/// How long requests in flight may run on after shutdown begins (or after an idle connection
/// is asked to close).
pub const GRACE: Duration = Duration::from_secs(5);

/// How long a TLS client has to complete its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener's timeouts and connection limit (see [`ListenerConfig`]).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// The HTTP/1 request head must arrive within this; the timer also runs while a keep-alive
    /// connection waits for its next request.
    pub header_read_timeout: Duration,
    /// A request body may send nothing for this long before it is refused with 408.
    pub body_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; the rest wait in the listen backlog.
    pub max_connections: usize,
}

impl ConnectionLimits {
    pub fn of(listener: &ListenerConfig) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: listener.header_read_timeout.as_duration(),
            body_read_timeout: listener.body_read_timeout.as_duration(),
            idle_timeout: listener.idle_timeout.as_duration(),
            max_connections: listener.max_connections,
        }
    }
}

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
    limits: ConnectionLimits,
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
            bound.push((
                index,
                BoundListener {
                    addr,
                    socket,
                    tls: tls.clone(),
                    router: router.clone(),
                    limits: ConnectionLimits::of(listener),
                },
            ));
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

/// What a connection is doing, for its idle timeout.
#[derive(Clone, Copy, Default)]
struct Activity {
    /// Requests between their arrival and the end of their response body.
    in_flight: usize,
    /// Requests started on this connection so far.
    started: u64,
}

/// One request in flight; dropped when its response body has been written or abandoned.
struct InFlight(Arc<watch::Sender<Activity>>);

impl InFlight {
    fn begin(activity: &Arc<watch::Sender<Activity>>) -> InFlight {
        activity.send_modify(|activity| {
            activity.in_flight += 1;
            activity.started += 1;
        });
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|activity| activity.in_flight -= 1);
    }
}

/// A response body that keeps its request in flight until it is written or dropped.
struct InFlightBody {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for InFlightBody {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Resolves once the connection has spent `idle_timeout` with no request in flight.
async fn idle(mut activity: watch::Receiver<Activity>, idle_timeout: Duration) {
    loop {
        let Ok(started) = activity.wait_for(|a| a.in_flight == 0).await.map(|a| a.started) else {
            // The service (the sender) is gone, so is the connection.
            return std::future::pending().await;
        };
        let busy = tokio::time::timeout(
            idle_timeout,
            activity.wait_for(|a| a.in_flight > 0 || a.started != started),
        )
        .await;
        if busy.is_err() {
            return;
        }
    }
}

/// Serves one connection until the client closes it, it idles for `idle_timeout`, or the
/// server shuts down; after either of the last two, requests in flight get `grace` to finish.
async fn run_connection<I>(
    io: I,
    peer: Option<SocketAddr>,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    grace: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (activity, activity_rx) = watch::channel(Activity::default());
    let activity = Arc::new(activity);
    let service = tower::service_fn(move |mut request: http::Request<Incoming>| {
        let in_flight = InFlight::begin(&activity);
        request.extensions_mut().insert(PeerAddr(peer));
        // A body that sends nothing for `body_read_timeout` fails its reader, which answers 408.
        let request = request.map(|body| TimeoutBody::new(limits.body_read_timeout, body));
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await?;
            // The request stays in flight (not idle) until its response body is written.
            Ok::<_, Infallible>(response.map(|body| InFlightBody { body, _in_flight: in_flight }))
        }
    });
    let mut builder = Builder::new(TokioExecutor::new());
    // HTTP/1 starts the header timer whenever the connection waits for a request, so it also
    // bounds an idle keep-alive connection.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let connection =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return log_connection_end(result),
        _ = shutdown.cancelled() => {}
        _ = idle(activity_rx, limits.idle_timeout) => tracing::debug!("closing an idle connection"),
    }
    connection.as_mut().graceful_shutdown();
    match tokio::time::timeout(grace, connection).await {
        Ok(result) => log_connection_end(result),
        Err(_) => tracing::debug!("closing a connection still busy after the grace period"),
    }
}

fn log_connection_end(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Accepts connections until `shutdown` is cancelled, then waits up to `grace` for them.
///
/// At most `max_connections` are served at once: the next connection is accepted only when
/// one of them has closed, so connections over the limit wait in the kernel's listen backlog.
pub async fn serve(listener: BoundListener, shutdown: CancellationToken, grace: Duration) {
    let limits = listener.limits;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept_with_slot(&listener.socket, &slots) => accepted,
        };
        let (stream, peer, slot) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, addr = %listener.addr, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let router = listener.router.clone();
        let shutdown = shutdown.clone();
        match (stream, &listener.tls) {
            (Stream::Tcp(stream), None) => {
                let _ = stream.set_nodelay(true);
                connections.spawn(async move {
                    run_connection(stream, peer, router, limits, shutdown, grace).await;
                    drop(slot);
                });
            }
            (Stream::Tcp(stream), Some(acceptor)) => {
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => run_connection(tls, peer, router, limits, shutdown, grace).await,
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                    drop(slot);
                });
            }
            (Stream::Unix(stream), _) => {
                connections.spawn(async move {
                    run_connection(stream, None, router, limits, shutdown, grace).await;
                    drop(slot);
                });
            }
        }
    }
    drop(listener.socket);
    if let ListenAddr::Unix(path) = &listener.addr {
        let _ = std::fs::remove_file(path);
    }
    connections.close();
    // Each connection gives its requests `grace` once shutdown begins; a TLS handshake under
    // way may take up to its own timeout first.
    if tokio::time::timeout(grace + TLS_HANDSHAKE_TIMEOUT, connections.wait()).await.is_err() {
        tracing::info!(addr = %listener.addr, "connections still open after the grace period");
    }
}

/// Waits for a free connection slot, then accepts a connection into it.
async fn accept_with_slot(
    socket: &Socket,
    slots: &Arc<Semaphore>,
) -> std::io::Result<(Stream, Option<SocketAddr>, OwnedSemaphorePermit)> {
    let Ok(slot) = slots.clone().acquire_owned().await else {
        // The semaphore is never closed.
        return std::future::pending().await;
    };
    let (stream, peer) = accept(socket).await?;
    Ok((stream, peer, slot))
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
