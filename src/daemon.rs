//! The running daemon: builds the store, the rules engine, the ingest path and
//! the HTTP server from a validated [`Config`], runs the timers, reloads rules on
//! SIGHUP or `POST /-/reload`, and shuts down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, StoreSettings};
use crate::heartbeat::Heartbeats;
use crate::incident::engine::Engine;
use crate::ingest::Ingestor;
use crate::metrics::Metrics;
use crate::outbox::worker::Worker;
use crate::rules::{RuleErrors, RuleSet};
use crate::store::instrumented::Instrumented;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use crate::store::{SharedStore, StoreError};

/// How often expired state is swept from stores that do not expire keys themselves.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);
/// How often incident timers (auto-resolve, close, maintenance ends, SLA
/// deadlines, flapping settling) and heartbeats are checked.
const TICK_INTERVAL: Duration = Duration::from_secs(1);
/// How often the gauges of the shared state (open incidents by priority,
/// flapping alerts) are read from the store.
const STATE_METRICS_INTERVAL: Duration = Duration::from_secs(15);

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
    #[error("adapter: {0}")]
    Adapter(String),
    #[error("{0}")]
    Kafka(String),
}

/// Opens the store the settings name. Redis is connected lazily: the daemon
/// starts while Redis is down and reports not ready until it is up.
pub fn open_store(
    settings: &StoreSettings,
    closed_retention: Duration,
) -> Result<SharedStore, StoreError> {
    Ok(match settings {
        StoreSettings::Memory { resolved_retention } => {
            Arc::new(MemoryStore::new(*resolved_retention).with_closed_retention(closed_retention))
        }
        StoreSettings::Redis(opts) => {
            Arc::new(RedisStore::new(opts)?.with_closed_retention(closed_retention))
        }
    })
}

/// The rules the config names (none when it names no directory).
pub fn load_rules(config: &Config) -> Result<RuleSet, RuleErrors> {
    match &config.rules_dir {
        Some(dir) => RuleSet::load_dir(dir),
        None => Ok(RuleSet::empty()),
    }
}

/// Re-reads the rules and puts them in force, unless they are broken (or, with
/// `require_tests`, their tests fail): then the running rules stay.
pub struct Reloader {
    rules_dir: Option<PathBuf>,
    tests_dir: Option<PathBuf>,
    require_tests: bool,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
}

impl Reloader {
    /// Returns the number of rules now in force, or why nothing changed.
    pub async fn reload(&self) -> Result<usize, String> {
        let result = self.try_reload().await;
        let label = if result.is_ok() { "success" } else { "failure" };
        self.metrics.rules_reloads.with_label_values(&[label]).inc();
        match &result {
            Ok(n) => tracing::info!(rules = n, "rules reloaded"),
            Err(e) => tracing::error!(error = %e, "rule reload refused; the running rules stay"),
        }
        result
    }

    async fn try_reload(&self) -> Result<usize, String> {
        let Some(dir) = &self.rules_dir else {
            return Err("no rules.dir configured".into());
        };
        let rules = Arc::new(RuleSet::load_dir(dir).map_err(|e| e.to_string())?);
        if self.require_tests
            && let Some(tests) = &self.tests_dir
        {
            let report = crate::ruletest::run_path(tests, Some(rules.clone())).await;
            if !report.passed() {
                return Err(format!("rule tests failed:\n{}", report.render()));
            }
        }
        let n = rules.len();
        self.engine.swap_rules(rules);
        Ok(n)
    }
}

/// A started daemon. Dropping it does not stop it; call [`Daemon::shutdown`].
pub struct Daemon {
    pub local_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub engine: Arc<Engine>,
    pub reloader: Arc<Reloader>,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
    /// Sources that drain on shutdown (the Kafka consumer commits and leaves its group).
    sources: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl Daemon {
    /// Builds everything and starts serving. Returns once the listener is bound.
    pub async fn start(
        config: &Config,
        rules: RuleSet,
        registry: prometheus::Registry,
    ) -> Result<Daemon, DaemonError> {
        let metrics = Arc::new(Metrics::new(registry)?);
        let store = Instrumented::wrap(
            open_store(&config.store, config.closed_retention)?,
            metrics.clone(),
        );
        let engine = Arc::new(
            Engine::new(store.clone(), Arc::new(rules), metrics.clone())
                .with_after_manual_close(config.after_manual_close)
                .with_route_all_to(config.route_all_to.clone())
                .with_flapping(config.flapping)
                .with_sla(config.sla.clone())
                .with_topology(config.topology.clone())
                .with_major(config.major.clone()),
        );
        let heartbeats = Arc::new(Heartbeats::new(
            config.heartbeats.clone(),
            engine.clone(),
            Some(chrono::Utc::now()),
        ));
        let worker = Arc::new(
            Worker::new(
                store.clone(),
                engine.clone(),
                &config.adapters,
                metrics.clone(),
                config.delivery.clone(),
            )
            .map_err(DaemonError::Adapter)?,
        );
        let ingestor = Arc::new(
            Ingestor::new(engine.clone(), metrics.clone()).with_heartbeats(heartbeats.clone()),
        );
        let reloader = Arc::new(Reloader {
            rules_dir: config.rules_dir.clone(),
            tests_dir: config.rules_tests_dir.clone(),
            require_tests: config.require_rule_tests,
            engine: engine.clone(),
            metrics: metrics.clone(),
        });

        // Created before anything is bound or spawned, so a failure leaves nothing running.
        let kafka = config
            .kafka
            .as_ref()
            .map(|k| crate::sources::kafka::KafkaSource::new(k, ingestor.clone(), metrics.clone()))
            .transpose()
            .map_err(DaemonError::Kafka)?;
        let app = Router::new()
            .merge(crate::sources::webhook::routes(
                &config.webhook,
                config.max_body_bytes,
                ingestor.clone(),
                metrics.clone(),
            ))
            .merge(crate::api::routes(crate::api::ApiState {
                store: store.clone(),
                metrics: metrics.clone(),
                engine: engine.clone(),
                reloader: reloader.clone(),
            }))
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
        let state_metrics = {
            let (store, metrics) = (store.clone(), metrics.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(STATE_METRICS_INTERVAL);
                loop {
                    tick.tick().await;
                    // Errors are logged and counted by the instrumented store.
                    let _ = crate::incident::metrics::refresh(&store, &metrics.incidents).await;
                }
            })
        };
        let maintenance = tokio::spawn(async move {
            let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
            loop {
                tick.tick().await;
                // Errors are logged and counted by the instrumented store.
                let _ = store.maintain(chrono::Utc::now()).await;
            }
        });
        let timers = {
            let engine = engine.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(TICK_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Err(e) = engine.tick(chrono::Utc::now()).await {
                        tracing::warn!(error = %e, "incident timers: will retry");
                    }
                    if let Err(e) = heartbeats.check(chrono::Utc::now()).await {
                        tracing::warn!(error = %e, "heartbeats: will retry");
                    }
                }
            })
        };
        let sighup = {
            let reloader = reloader.clone();
            tokio::spawn(async move { reload_on_sighup(reloader).await })
        };
        let sources: Vec<JoinHandle<()>> = kafka
            .into_iter()
            .map(|k| tokio::spawn(k.run(stop.subscribe())))
            .collect();
        let delivery = tokio::spawn(worker.clone().run());
        let poller = tokio::spawn(worker.clone().run_poller());
        tracing::info!(addr = %local_addr, store = store_kind(&config.store), rules = engine.rules().len(), "incidentd listening");
        Ok(Daemon {
            local_addr,
            metrics,
            engine,
            reloader,
            stop,
            server,
            background: vec![maintenance, state_metrics, timers, sighup, delivery, poller],
            sources,
            grace: config.shutdown_grace,
        })
    }

    /// Stops accepting connections, lets in-flight requests finish within the
    /// grace period, then stops.
    pub async fn shutdown(self) -> Result<(), DaemonError> {
        let _ = self.stop.send(true);
        for task in &self.background {
            task.abort();
        }
        let deadline = tokio::time::Instant::now() + self.grace;
        for mut source in self.sources {
            // The Kafka source finishes its batch, commits and leaves its group.
            if tokio::time::timeout_at(deadline, &mut source)
                .await
                .is_err()
            {
                tracing::warn!("grace period over; a source did not drain");
                source.abort();
            }
        }
        let mut server = self.server;
        match tokio::time::timeout_at(deadline, &mut server).await {
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

#[cfg(unix)]
async fn reload_on_sighup(reloader: Arc<Reloader>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        // The outcome is logged and counted by `reload`.
        let _ = reloader.reload().await;
    }
}

#[cfg(not(unix))]
async fn reload_on_sighup(_reloader: Arc<Reloader>) {}

/// Runs until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(config: Config, rules: RuleSet) -> Result<(), DaemonError> {
    let daemon = Daemon::start(&config, rules, prometheus::Registry::new()).await?;
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
