//! The pipeline on the memory store and a clock the caller drives: what
//! `incidentd test` and `incidentd replay` run alerts through. The same code as
//! the daemon's ingest path, with time passed in instead of read.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::alert::Alert;
use crate::config::Config;
use crate::heartbeat::Heartbeats;
use crate::incident::engine::Engine;
use crate::incident::{Incident, IncidentQuery};
use crate::ingest::{IngestSummary, Ingestor};
use crate::metrics::Metrics;
use crate::rules::RuleSet;
use crate::store::memory::MemoryStore;
use crate::store::{AlertQuery, AlertState, SharedStore, StoreError};

/// Resolved alerts are kept for the whole simulation, however long it spans.
const SIMULATED_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub struct Simulation {
    store: SharedStore,
    engine: Arc<Engine>,
    ingestor: Ingestor,
    heartbeats: Arc<Heartbeats>,
}

impl Simulation {
    /// On the built-in defaults of the daemon settings.
    pub fn new(rules: Arc<RuleSet>) -> Result<Self, prometheus::Error> {
        Self::configured(rules, None)
    }

    /// The pipeline with the incident settings of a validated daemon config,
    /// as `incidentd run` would have them.
    pub fn from_config(rules: Arc<RuleSet>, config: &Config) -> Result<Self, prometheus::Error> {
        Self::configured(rules, Some(config))
    }

    /// With the daemon settings of `config` (flapping, SLA, heartbeats, routes,
    /// topology, major incidents).
    pub fn configured(
        rules: Arc<RuleSet>,
        config: Option<&Config>,
    ) -> Result<Self, prometheus::Error> {
        let metrics = Arc::new(Metrics::new(prometheus::Registry::new())?);
        let store: SharedStore = Arc::new(MemoryStore::new(SIMULATED_RETENTION));
        let mut engine = Engine::new(store.clone(), rules, metrics.clone());
        if let Some(c) = config {
            engine = engine
                .with_after_manual_close(c.after_manual_close)
                .with_route_all_to(c.route_all_to.clone())
                .with_flapping(c.flapping)
                .with_sla(c.sla.clone())
                .with_topology(c.topology.clone())
                .with_major(c.major.clone());
        }
        let engine = Arc::new(engine);
        let specs = config.map(|c| c.heartbeats.clone()).unwrap_or_default();
        // Heartbeats count from the simulation's first event.
        let heartbeats = Arc::new(Heartbeats::new(specs, engine.clone(), None));
        let ingestor = Ingestor::new(engine.clone(), metrics).with_heartbeats(heartbeats.clone());
        Ok(Simulation {
            store,
            engine,
            ingestor,
            heartbeats,
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Activity on a source (see [`Heartbeats::observe_activity`]) at `at`.
    pub async fn activity(
        &self,
        kind: &str,
        name: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.advance(at).await?;
        self.heartbeats.observe_activity(kind, name, at).await;
        Ok(())
    }

    /// Runs the timers due by `at`, then ingests `alerts` received at `at`.
    pub async fn feed(
        &self,
        source: &str,
        alerts: Vec<Alert>,
        at: DateTime<Utc>,
    ) -> Result<IngestSummary, StoreError> {
        self.advance(at).await?;
        self.ingestor.ingest(source, alerts, at).await
    }

    /// Runs the timers due by `at`, and checks the heartbeats.
    pub async fn advance(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.engine.tick(at).await?;
        self.heartbeats.check(at).await
    }

    /// Every incident, oldest first.
    pub async fn incidents(&self) -> Result<Vec<Incident>, StoreError> {
        let mut all = self
            .store
            .list_incidents(&IncidentQuery {
                limit: usize::MAX,
                ..IncidentQuery::default()
            })
            .await?;
        all.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(all)
    }

    /// Every alert, oldest first.
    pub async fn alerts(&self) -> Result<Vec<AlertState>, StoreError> {
        let mut all = self
            .store
            .list_alerts(&AlertQuery {
                status: None,
                limit: usize::MAX,
            })
            .await?;
        all.sort_by(|a, b| {
            a.first_seen
                .cmp(&b.first_seen)
                .then_with(|| a.fingerprint.cmp(&b.fingerprint))
        });
        Ok(all)
    }
}
