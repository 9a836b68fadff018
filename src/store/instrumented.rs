//! A [`StateStore`] wrapper that times every call and counts errors, so each
//! backend does not have to.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::{AlertQuery, AlertState, Outcome, SharedStore, StateStore, StoreError};
use crate::alert::Alert;
use crate::metrics::Metrics;

pub struct Instrumented {
    inner: SharedStore,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    pub fn wrap(inner: SharedStore, metrics: Arc<Metrics>) -> SharedStore {
        Arc::new(Instrumented { inner, metrics })
    }

    fn observe<T>(&self, op: &str, started: Instant, result: &Result<T, StoreError>) {
        let kind = self.inner.kind();
        self.metrics
            .store_duration
            .with_label_values(&[kind, op])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            self.metrics
                .store_errors
                .with_label_values(&[kind, op])
                .inc();
            tracing::warn!(store = kind, op, error = %e, "state store call failed");
        }
    }
}

#[async_trait::async_trait]
impl StateStore for Instrumented {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn record_alerts(
        &self,
        alerts: &[Alert],
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let started = Instant::now();
        let r = self.inner.record_alerts(alerts, now).await;
        self.observe("record_alerts", started, &r);
        r
    }

    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<AlertState>, StoreError> {
        let started = Instant::now();
        let r = self.inner.list_alerts(query).await;
        self.observe("list_alerts", started, &r);
        r
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self.inner.ping().await;
        self.observe("ping", started, &r);
        r
    }

    async fn maintain(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self.inner.maintain(now).await;
        self.observe("maintain", started, &r);
        r
    }
}
