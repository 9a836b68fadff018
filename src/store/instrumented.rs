//! A [`StateStore`] wrapper that times every call and counts errors, so each
//! backend does not have to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{
    AlertQuery, AlertState, Explain, FoundIncidents, IncidentCommit, Recorded, SharedStore,
    StateStore, StoreError,
};
use crate::alert::Alert;
use crate::incident::{Incident, IncidentQuery};
use crate::metrics::Metrics;
use crate::outbox::{DeadLetter, OutboxEntry, OutboxStats, SyncState};

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

/// Times one call of the inner store under the operation name `op`.
macro_rules! timed {
    ($self:ident, $op:literal, $call:expr) => {{
        let started = Instant::now();
        let r = $call.await;
        $self.observe($op, started, &r);
        r
    }};
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
    ) -> Result<Vec<Recorded>, StoreError> {
        timed!(self, "record_alerts", self.inner.record_alerts(alerts, now))
    }

    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<AlertState>, StoreError> {
        timed!(self, "list_alerts", self.inner.list_alerts(query))
    }

    async fn get_alert(&self, fingerprint: &str) -> Result<Option<AlertState>, StoreError> {
        timed!(self, "get_alert", self.inner.get_alert(fingerprint))
    }

    async fn set_explains(&self, explains: &[(String, Explain)]) -> Result<(), StoreError> {
        timed!(self, "set_explains", self.inner.set_explains(explains))
    }

    async fn find_incidents(
        &self,
        rule: &str,
        key: &str,
        fingerprints: &[&str],
    ) -> Result<FoundIncidents, StoreError> {
        timed!(
            self,
            "find_incidents",
            self.inner.find_incidents(rule, key, fingerprints)
        )
    }

    async fn find_incidents_and_slots(
        &self,
        rule: &str,
        key: &str,
        fingerprints: &[&str],
        slots: &[String],
    ) -> Result<FoundIncidents, StoreError> {
        timed!(
            self,
            "find_incidents_and_slots",
            self.inner
                .find_incidents_and_slots(rule, key, fingerprints, slots)
        )
    }

    async fn get_incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        timed!(self, "get_incident", self.inner.get_incident(id))
    }

    async fn get_incident_head(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        timed!(self, "get_incident_head", self.inner.get_incident_head(id))
    }

    async fn incident_route(&self, id: &str) -> Result<Option<Vec<String>>, StoreError> {
        timed!(self, "incident_route", self.inner.incident_route(id))
    }

    async fn touch_incidents(
        &self,
        ids: &[String],
        at: DateTime<Utc>,
    ) -> Result<Vec<bool>, StoreError> {
        timed!(self, "touch_incidents", self.inner.touch_incidents(ids, at))
    }

    async fn commit_incident(&self, commit: &IncidentCommit<'_>) -> Result<bool, StoreError> {
        timed!(self, "commit_incident", self.inner.commit_incident(commit))
    }

    async fn list_incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        timed!(self, "list_incidents", self.inner.list_incidents(query))
    }

    async fn due_incidents(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        timed!(self, "due_incidents", self.inner.due_incidents(now, limit))
    }

    async fn hold_alert(&self, fingerprint: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        timed!(
            self,
            "hold_alert",
            self.inner.hold_alert(fingerprint, until)
        )
    }

    async fn take_released(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(DateTime<Utc>, String)>, StoreError> {
        timed!(self, "take_released", self.inner.take_released(now, limit))
    }

    async fn incidents_of_alert(&self, fingerprint: &str) -> Result<Vec<String>, StoreError> {
        timed!(
            self,
            "incidents_of_alert",
            self.inner.incidents_of_alert(fingerprint)
        )
    }

    async fn outbox_read(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        // Not timed: it waits for entries by design.
        self.inner.outbox_read(consumer, max, wait).await
    }

    async fn outbox_reclaim(
        &self,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        timed!(
            self,
            "outbox_reclaim",
            self.inner.outbox_reclaim(consumer, min_idle, max)
        )
    }

    async fn outbox_ack(&self, entry_ids: &[String]) -> Result<(), StoreError> {
        timed!(self, "outbox_ack", self.inner.outbox_ack(entry_ids))
    }

    async fn outbox_push(
        &self,
        incident_id: &str,
        version: u64,
        event: &str,
    ) -> Result<(), StoreError> {
        timed!(
            self,
            "outbox_push",
            self.inner.outbox_push(incident_id, version, event)
        )
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        timed!(self, "outbox_stats", self.inner.outbox_stats())
    }

    async fn get_sync(
        &self,
        incident_id: &str,
        adapter: &str,
    ) -> Result<Option<SyncState>, StoreError> {
        timed!(self, "get_sync", self.inner.get_sync(incident_id, adapter))
    }

    async fn put_sync(
        &self,
        incident_id: &str,
        adapter: &str,
        state: &SyncState,
    ) -> Result<(), StoreError> {
        timed!(
            self,
            "put_sync",
            self.inner.put_sync(incident_id, adapter, state)
        )
    }

    async fn try_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        timed!(self, "try_lease", self.inner.try_lease(name, owner, ttl))
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        timed!(self, "release_lease", self.inner.release_lease(name, owner))
    }

    async fn put_dead_letter(&self, dead: &DeadLetter) -> Result<(), StoreError> {
        timed!(self, "put_dead_letter", self.inner.put_dead_letter(dead))
    }

    async fn list_dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        timed!(self, "list_dead_letters", self.inner.list_dead_letters())
    }

    async fn take_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        timed!(self, "take_dead_letter", self.inner.take_dead_letter(id))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        timed!(self, "ping", self.inner.ping())
    }

    async fn heartbeat_seen(&self, name: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        timed!(self, "heartbeat_seen", self.inner.heartbeat_seen(name, at))
    }

    async fn heartbeats_seen(
        &self,
    ) -> Result<std::collections::HashMap<String, DateTime<Utc>>, StoreError> {
        timed!(self, "heartbeats_seen", self.inner.heartbeats_seen())
    }

    async fn open_gauges(&self) -> Result<super::OpenGauges, StoreError> {
        timed!(self, "open_gauges", self.inner.open_gauges())
    }

    async fn maintain(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        timed!(self, "maintain", self.inner.maintain(now))
    }
}
