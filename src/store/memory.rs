//! The embedded store: a map behind a mutex, for a single daemon process.
//!
//! One lock for the whole batch keeps each batch atomic and costs less than a lock
//! per alert at the batch sizes webhooks deliver.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    AlertQuery, AlertState, Explain, FoundIncident, IncidentCommit, Outcome, StateStore,
    StoreError, merge,
};
use crate::alert::{Alert, Status};
use crate::incident::{Incident, IncidentQuery};

pub struct MemoryStore {
    alerts: Mutex<HashMap<String, AlertState>>,
    incidents: Mutex<Incidents>,
    resolved_retention: chrono::Duration,
}

/// Incident state; one lock, so a commit's checks and writes are one step.
#[derive(Default)]
struct Incidents {
    by_id: HashMap<String, Incident>,
    /// Correlation key → incident id.
    slots: HashMap<String, String>,
    /// (rule, fingerprint) → incident id.
    members: HashMap<(String, String), String>,
    /// (due time, id), and id → due time to find the entry again.
    due: BTreeSet<(DateTime<Utc>, String)>,
    due_of: HashMap<String, DateTime<Utc>>,
    /// (release time, fingerprint) of alerts held by maintenance windows.
    held: BTreeSet<(DateTime<Utc>, String)>,
}

impl MemoryStore {
    pub fn new(resolved_retention: Duration) -> Self {
        MemoryStore {
            alerts: Mutex::new(HashMap::new()),
            incidents: Mutex::new(Incidents::default()),
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

    fn incidents(&self) -> Result<std::sync::MutexGuard<'_, Incidents>, StoreError> {
        self.incidents
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

    async fn get_alert(&self, fingerprint: &str) -> Result<Option<AlertState>, StoreError> {
        let now = Utc::now();
        Ok(self
            .lock()?
            .get(fingerprint)
            .filter(|s| !self.expired(s, now))
            .cloned())
    }

    async fn set_explain(&self, fingerprint: &str, explain: &Explain) -> Result<(), StoreError> {
        if let Some(state) = self.lock()?.get_mut(fingerprint) {
            state.explain = Some(explain.clone());
        }
        Ok(())
    }

    async fn find_incident(
        &self,
        rule: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<FoundIncident, StoreError> {
        let inc = self.incidents()?;
        let slot = inc.slots.get(key).cloned();
        let member = inc
            .members
            .get(&(rule.to_string(), fingerprint.to_string()))
            .and_then(|id| inc.by_id.get(id))
            .filter(|i| i.state != crate::incident::IncidentState::Closed);
        let incident = member
            .or_else(|| slot.as_ref().and_then(|id| inc.by_id.get(id)))
            .cloned();
        Ok(FoundIncident { incident, slot })
    }

    async fn get_incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        Ok(self.incidents()?.by_id.get(id).cloned())
    }

    async fn commit_incident(&self, c: &IncidentCommit<'_>) -> Result<bool, StoreError> {
        let mut inc = self.incidents()?;
        let id = &c.incident.id;
        let stored = inc.by_id.get(id).map_or(0, |i| i.version);
        if stored != c.expected_version {
            return Ok(false);
        }
        if let Some((key, expected)) = c.bind {
            if inc.slots.get(key).map(String::as_str) != expected {
                return Ok(false);
            }
            inc.slots.insert(key.to_string(), id.clone());
        }
        if let Some((rule, fp)) = c.member {
            inc.members
                .insert((rule.to_string(), fp.to_string()), id.clone());
        }
        if let Some(old) = inc.due_of.remove(id) {
            inc.due.remove(&(old, id.clone()));
        }
        if let Some(due) = c.due {
            inc.due.insert((due, id.clone()));
            inc.due_of.insert(id.clone(), due);
        }
        inc.by_id.insert(id.clone(), c.incident.clone());
        Ok(true)
    }

    async fn list_incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        let inc = self.incidents()?;
        let mut out: Vec<Incident> = inc
            .by_id
            .values()
            .filter(|i| query.matches(i))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            b.updated_at
                .cmp(&a.updated_at)
                .then_with(|| b.created_at.cmp(&a.created_at))
                .then_with(|| a.id.cmp(&b.id))
        });
        out.truncate(query.limit);
        Ok(out)
    }

    async fn due_incidents(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .incidents()?
            .due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect())
    }

    async fn hold_alert(&self, fingerprint: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        let mut inc = self.incidents()?;
        inc.held.retain(|(_, fp)| fp != fingerprint);
        inc.held.insert((until, fingerprint.to_string()));
        Ok(())
    }

    async fn take_released(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut inc = self.incidents()?;
        let released: Vec<(DateTime<Utc>, String)> = inc
            .held
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .cloned()
            .collect();
        for entry in &released {
            inc.held.remove(entry);
        }
        Ok(released.into_iter().map(|(_, fp)| fp).collect())
    }

    async fn maintain(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.lock()?.retain(|_, s| !self.expired(s, now));
        Ok(())
    }
}
