//! The running daemon: builds the store, the ingest path and the HTTP server from
//! a validated [`Config`], and shuts them down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, StoreSettings};
use crate::ingest::Ingestor;
use crate::metrics::Metrics;
use crate::store::instrumented::Instrumented;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use crate::store::{SharedStore, StoreError};

/// How often expired state is swept from stores that do not expire keys themselves.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
}

/// Opens the store the settings name. Redis is connected lazily: the daemon
/// starts while Redis is down and reports not ready until it is up.
pub fn open_store(settings: &StoreSettings) -> Result<SharedStore, StoreError> {
    Ok(match settings {
        StoreSettings::Memory { resolved_retention } => {
            Arc::new(MemoryStore::new(*resolved_retention))
        }
        StoreSettings::Redis(opts) => Arc::new(RedisStore::new(opts)?),
    })
}

/// A started daemon. Dropping it does not stop it; call [`Daemon::shutdown`].
pub struct Daemon {
    pub local_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    maintenance: JoinHandle<()>,
    grace: Duration,
}

impl Daemon {
    /// Builds everything and starts serving. Returns once the listener is bound.
    pub async fn start(
        config: &Config,
        registry: prometheus::Registry,
    ) -> Result<Daemon, DaemonError> {
        let metrics = Arc::new(Metrics::new(registry)?);
        let store = Instrumented::wrap(open_store(&config.store)?, metrics.clone());
        let ingestor = Arc::new(Ingestor::new(store.clone(), metrics.clone()));

        let app = Router::new()
            .merge(crate::sources::webhook::routes(
                &config.webhook,
                config.max_body_bytes,
                ingestor,
                metrics.clone(),
            ))
            .merge(crate::api::routes(store.clone(), metrics.clone()))
            .fallback(crate::api::not_found);

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| DaemonError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(DaemonError::Serve)?;
        let (stop, mut stopped) = watch::channel(false);
        let server = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .into_future(),
        );
        let maintenance = tokio::spawn(async move {
            let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
            loop {
                tick.tick().await;
                // Errors are logged and counted by the instrumented store.
                let _ = store.maintain(chrono::Utc::now()).await;
            }
        });
        tracing::info!(addr = %local_addr, store = ?store_kind(&config.store), "incidentd listening");
        Ok(Daemon {
            local_addr,
            metrics,
            stop,
            server,
            maintenance,
            grace: config.shutdown_grace,
        })
    }

    /// Stops accepting connections, lets in-flight requests finish within the
    /// grace period, then stops.
    pub async fn shutdown(self) -> Result<(), DaemonError> {
        let _ = self.stop.send(true);
        self.maintenance.abort();
        let mut server = self.server;
        match tokio::time::timeout(self.grace, &mut server).await {
            Ok(Ok(result)) => result.map_err(DaemonError::Serve),
            Ok(Err(join)) => Err(DaemonError::Serve(std::io::Error::other(join))),
            Err(_) => {
                tracing::warn!(
                    grace_ms = self.grace.as_millis() as u64,
                    "grace period over; dropping in-flight requests"
                );
                server.abort();
                Ok(())
            }
        }
    }
}

fn store_kind(s: &StoreSettings) -> &'static str {
    match s {
        StoreSettings::Memory { .. } => "memory",
        StoreSettings::Redis(_) => "redis",
    }
}

/// Runs until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let daemon = Daemon::start(&config, prometheus::Registry::new()).await?;
    shutdown_signal().await;
    tracing::info!("shutdown signal received; draining");
    daemon.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
