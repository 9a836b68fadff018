//! The embedded store: a map behind a mutex, for a single daemon process.
//!
//! One lock for the whole batch keeps each batch atomic and costs less than a lock
//! per alert at the batch sizes webhooks deliver.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{AlertQuery, AlertState, Outcome, StateStore, StoreError, merge};
use crate::alert::{Alert, Status};

pub struct MemoryStore {
    alerts: Mutex<HashMap<String, AlertState>>,
    resolved_retention: chrono::Duration,
}

impl MemoryStore {
    pub fn new(resolved_retention: Duration) -> Self {
        MemoryStore {
            alerts: Mutex::new(HashMap::new()),
            resolved_retention: chrono::Duration::from_std(resolved_retention)
                .unwrap_or(chrono::Duration::MAX),
        }
    }

    fn expired(&self, state: &AlertState, now: DateTime<Utc>) -> bool {
        state.status == Status::Resolved && now - state.last_seen >= self.resolved_retention
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, AlertState>>, StoreError> {
        // A poisoned lock means a panic mid-update; the map may be half-written.
        self.alerts
            .lock()
            .map_err(|_| StoreError::Corrupt("memory store lock poisoned".into()))
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn record_alerts(
        &self,
        alerts: &[Alert],
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut map = self.lock()?;
        let mut outcomes = Vec::with_capacity(alerts.len());
        for alert in alerts {
            let prev = map
                .remove(&alert.fingerprint)
                .filter(|s| !self.expired(s, now));
            let (next, outcome) = merge(prev, alert, now);
            map.insert(alert.fingerprint.clone(), next);
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<AlertState>, StoreError> {
        let now = Utc::now();
        let map = self.lock()?;
        let mut out: Vec<AlertState> = map
            .values()
            .filter(|s| !self.expired(s, now))
            .filter(|s| query.status.is_none_or(|st| s.status == st))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| a.fingerprint.cmp(&b.fingerprint))
        });
        out.truncate(query.limit);
        Ok(out)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.lock().map(|_| ())
    }

    async fn maintain(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.lock()?.retain(|_, s| !self.expired(s, now));
        Ok(())
    }
}
