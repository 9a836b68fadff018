//! The ingest path shared by every source: rules are evaluated (a `drop` keeps
//! nothing), the batch goes into the state store in one call (where dedup
//! happens), then each recorded alert goes through its rules' decisions into
//! incidents. A batch is acknowledged only when all of that is stored.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::alert::Alert;
use crate::heartbeat::Heartbeats;
use crate::incident::engine::{Engine, Item};
use crate::metrics::Metrics;
use crate::rules::{Action, Decision};
use crate::store::{Outcome, StoreError};

pub struct Ingestor {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    /// Heartbeat alerts (e.g. `Watchdog`) are taken out of each batch here.
    heartbeats: Option<Arc<Heartbeats>>,
}

/// What one batch did, returned to the sender.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct IngestSummary {
    pub accepted: usize,
    pub new: usize,
    pub duplicates: usize,
    pub transitions: usize,
    pub stale: usize,
    pub dropped: usize,
    /// Heartbeat alerts taken by a declared heartbeat (not passed to the rules).
    pub heartbeats: usize,
}

impl Ingestor {
    pub fn new(engine: Arc<Engine>, metrics: Arc<Metrics>) -> Self {
        Ingestor {
            engine,
            metrics,
            heartbeats: None,
        }
    }

    /// Takes the alerts of these heartbeats out of every batch.
    pub fn with_heartbeats(mut self, heartbeats: Arc<Heartbeats>) -> Self {
        self.heartbeats = Some(heartbeats);
        self
    }

    /// The heartbeats, for sources reporting activity.
    pub fn heartbeats(&self) -> Option<&Arc<Heartbeats>> {
        self.heartbeats.as_ref()
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Records `alerts` from the source labelled `source` (a low-cardinality
    /// name: the endpoint or topic kind, not a free-form field).
    pub async fn ingest(
        &self,
        source: &str,
        alerts: Vec<Alert>,
        now: DateTime<Utc>,
    ) -> Result<IngestSummary, StoreError> {
        self.metrics
            .alerts_received
            .with_label_values(&[source])
            .inc_by(alerts.len() as u64);
        let mut summary = IngestSummary {
            accepted: alerts.len(),
            ..IngestSummary::default()
        };
        let alerts = match &self.heartbeats {
            Some(h) if !h.is_empty() => {
                let (rest, taken) = h.take_alerts(alerts, now).await?;
                summary.heartbeats = taken;
                rest
            }
            _ => alerts,
        };
        let rules = self.engine.rules();
        let mut kept = Vec::with_capacity(alerts.len());
        let mut decisions: Vec<Vec<Decision>> = Vec::with_capacity(alerts.len());
        for alert in alerts {
            let d = rules.evaluate(&alert);
            // The first matching rule decides whether the alert exists for us at all.
            if let Some(first) = d.first()
                && matches!(first.action, Action::Drop)
            {
                self.metrics
                    .alerts_dropped
                    .with_label_values(&[&first.rule])
                    .inc();
                summary.dropped += 1;
                continue;
            }
            kept.push(alert);
            decisions.push(d);
        }
        let recorded = self.engine.store().record_alerts(&kept, now).await?;
        for r in &recorded {
            match r.outcome {
                Outcome::New => summary.new += 1,
                Outcome::Duplicate { .. } => summary.duplicates += 1,
                Outcome::Transition { .. } => summary.transitions += 1,
                Outcome::Stale => summary.stale += 1,
            }
        }
        for (outcome, n) in [
            ("new", summary.new),
            ("duplicate", summary.duplicates),
            ("transition", summary.transitions),
            ("stale", summary.stale),
        ] {
            if n > 0 {
                self.metrics
                    .alerts_recorded
                    .with_label_values(&[source, outcome])
                    .inc_by(n as u64);
            }
        }
        let items: Vec<Item<'_>> = kept
            .iter()
            .zip(&decisions)
            .zip(&recorded)
            .map(|((alert, decisions), r)| Item {
                alert,
                decisions,
                outcome: r.outcome,
                previous: r.previous.as_ref(),
            })
            .collect();
        self.engine.process_batch(&rules, &items, now).await?;
        Ok(summary)
    }
}
