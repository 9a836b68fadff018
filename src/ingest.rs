//! The ingest path shared by every source: a decoded batch of alerts goes into the
//! state store (where dedup happens) in one call, and is counted.
//!
//! This is the seam where rules and correlation attach: they consume the
//! [`Outcome`]s the store returns.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::alert::Alert;
use crate::metrics::Metrics;
use crate::store::{Outcome, SharedStore, StoreError};

pub struct Ingestor {
    store: SharedStore,
    metrics: Arc<Metrics>,
}

/// What one batch did, returned to the sender.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct IngestSummary {
    pub accepted: usize,
    pub new: usize,
    pub duplicates: usize,
    pub transitions: usize,
    pub stale: usize,
}

impl Ingestor {
    pub fn new(store: SharedStore, metrics: Arc<Metrics>) -> Self {
        Ingestor { store, metrics }
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
        let outcomes = self.store.record_alerts(&alerts, now).await?;
        let mut summary = IngestSummary {
            accepted: alerts.len(),
            ..IngestSummary::default()
        };
        for outcome in &outcomes {
            match outcome {
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
        Ok(summary)
    }
}
