//! The pipeline on the memory store and a clock the caller drives: what
//! `incidentd test` and `incidentd replay` run alerts through. The same code as
//! the daemon's ingest path, with time passed in instead of read.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::alert::Alert;
use crate::config::Config;
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
}

impl Simulation {
    pub fn new(rules: Arc<RuleSet>) -> Result<Self, prometheus::Error> {
        Self::with_engine(rules, |e| e)
    }

    /// The pipeline with the incident settings of a validated daemon config
    /// (topology, major incidents, ...), as `incidentd run` would have them.
    pub fn from_config(rules: Arc<RuleSet>, config: &Config) -> Result<Self, prometheus::Error> {
        Self::with_engine(rules, |e| {
            e.with_after_manual_close(config.after_manual_close)
                .with_route_all_to(config.route_all_to.clone())
                .with_topology(config.topology.clone())
                .with_major(config.major.clone())
        })
    }

    fn with_engine(
        rules: Arc<RuleSet>,
        configure: impl FnOnce(Engine) -> Engine,
    ) -> Result<Self, prometheus::Error> {
        let metrics = Arc::new(Metrics::new(prometheus::Registry::new())?);
        let store: SharedStore = Arc::new(MemoryStore::new(SIMULATED_RETENTION));
        let engine = Arc::new(configure(Engine::new(
            store.clone(),
            rules,
            metrics.clone(),
        )));
        let ingestor = Ingestor::new(engine.clone(), metrics);
        Ok(Simulation {
            store,
            engine,
            ingestor,
        })
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

    /// Runs the timers due by `at`.
    pub async fn advance(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.engine.tick(at).await
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
