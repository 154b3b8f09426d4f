//! The Myelin process: command line, configuration, wiring and listeners.
//!
//! # Layout
//!
//! - [`cli`]: `myelin run | generate-config | hash-password | register-user`.
//! - [`register_user`]: shared-secret registration, as Synapse's `register_new_matrix_user`.
//! - [`generate`]: writing a commented `homeserver.yaml`, secrets and a signing key.
//! - [`listeners`]: binding TCP / TLS / UNIX-socket listeners and serving connections with
//!   graceful shutdown.
//! - [`logging`]: tracing set-up from Synapse's `log_config`.
//! - [`start`]: builds the services and starts every listener; used by the binary and by tests.

pub mod cli;
pub mod generate;
pub mod listeners;
pub mod logging;
pub mod register_user;

use std::time::Duration;

use myelin_config::Config;
use myelin_service::Services;
use tokio::task::JoinSet;

pub use listeners::ListenAddr;

/// A started server.
pub struct RunningServer {
    pub services: Services,
    /// What each listener bound, in configuration order (several entries for a listener with
    /// several bind addresses).
    pub bound: Vec<(usize, ListenAddr)>,
    tasks: JoinSet<()>,
}

impl RunningServer {
    /// The first TCP address bound by listener `index`.
    pub fn tcp_addr(&self, index: usize) -> Option<std::net::SocketAddr> {
        self.bound.iter().find_map(|(i, addr)| match addr {
            ListenAddr::Tcp(addr) if *i == index => Some(*addr),
            _ => None,
        })
    }

    /// Stops accepting connections, lets requests in flight finish for up to `grace`, then
    /// returns.
    pub async fn shutdown(mut self, grace: Duration) {
        self.services.shutdown.cancel();
        let drained = tokio::time::timeout(grace + Duration::from_secs(1), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("some connections did not finish in time; closing them");
            self.tasks.abort_all();
        }
        self.services.finish_sliding_sync_saves(grace).await;
    }
}

/// Builds the services (opening and migrating the database) and starts every listener.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    let services = Services::build(config).await?;
    let mut tasks = JoinSet::new();
    let mut bound = Vec::new();
    for (index, listener) in listeners::bind_all(&services).await? {
        bound.push((index, listener.addr.clone()));
        tasks.spawn(listeners::serve(listener, services.shutdown.clone(), listeners::GRACE));
    }
    tasks.spawn(services.clone().run_workers());
    Ok(RunningServer { services, bound, tasks })
}
