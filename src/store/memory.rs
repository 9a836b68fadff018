//! The embedded store: a map behind a mutex, for a single daemon process.
//!
//! One lock for the whole batch keeps each batch atomic and costs less than a lock
//! per alert at the batch sizes webhooks deliver.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use chrono::{DateTime, Utc};

use super::{
    AlertQuery, AlertState, Explain, FoundIncidents, IncidentCommit, Outcome, Recorded, StateStore,
    StoreError, merge,
};
use crate::alert::{Alert, Status};
use crate::incident::{Incident, IncidentQuery};
use crate::outbox::{DeadLetter, OutboxEntry, OutboxStats, SyncState};

pub struct MemoryStore {
    alerts: Mutex<HashMap<String, AlertState>>,
    incidents: Mutex<Incidents>,
    /// Wakes outbox readers when an entry is appended.
    outbox_ready: Notify,
    resolved_retention: chrono::Duration,
    closed_retention: chrono::Duration,
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
    /// fingerprint → the incidents the alert belongs to, under any rule.
    of_alert: HashMap<String, BTreeSet<String>>,
    outbox: Outbox,
    /// (incident, adapter) → what has been delivered.
    sync: HashMap<(String, String), SyncState>,
    /// lease name → (owner, expiry).
    leases: HashMap<String, (String, Instant)>,
    dead: BTreeMap<String, DeadLetter>,
    /// heartbeat name → last seen.
    heartbeats: HashMap<String, DateTime<Utc>>,
}

/// The in-process outbox: new entries, and those handed out but not acknowledged.
#[derive(Default)]
struct Outbox {
    next_id: u64,
    queue: VecDeque<OutboxEntry>,
    pending: BTreeMap<String, (OutboxEntry, Instant)>,
}

impl Outbox {
    fn push(&mut self, incident_id: &str, version: u64, event: &str) {
        self.next_id += 1;
        self.queue.push_back(OutboxEntry {
            // Zero-padded so ids sort in append order, like stream ids.
            entry_id: format!("{:020}", self.next_id),
            incident_id: incident_id.to_string(),
            version,
            event: event.to_string(),
            enqueued_at: Utc::now(),
        });
    }
}

impl MemoryStore {
    pub fn new(resolved_retention: Duration) -> Self {
        MemoryStore {
            alerts: Mutex::new(HashMap::new()),
            incidents: Mutex::new(Incidents::default()),
            outbox_ready: Notify::new(),
            resolved_retention: chrono::Duration::from_std(resolved_retention)
                .unwrap_or(chrono::Duration::MAX),
            closed_retention: chrono::Duration::days(30),
        }
    }

    /// Keeps closed incidents this long after they closed (default 30 days).
    pub fn with_closed_retention(mut self, retention: Duration) -> Self {
        self.closed_retention =
            chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        self
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
    ) -> Result<Vec<Recorded>, StoreError> {
        let mut map = self.lock()?;
        let mut outcomes = Vec::with_capacity(alerts.len());
        for alert in alerts {
            let prev = map
                .remove(&alert.fingerprint)
                .filter(|s| !self.expired(s, now));
            let (next, outcome) = merge(prev, alert, now);
            let previous = match outcome {
                Outcome::Duplicate { .. } => next.explain.clone().filter(|e| {
                    super::explains_current_status(
                        e,
                        Some(next.status_changed_at.timestamp_millis()),
                    )
                }),
                _ => None,
            };
            map.insert(alert.fingerprint.clone(), next);
            outcomes.push(Recorded { outcome, previous });
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

    async fn set_explains(&self, explains: &[(String, Explain)]) -> Result<(), StoreError> {
        let mut map = self.lock()?;
        for (fp, explain) in explains {
            if let Some(state) = map.get_mut(fp) {
                state.explain = Some(explain.clone());
            }
        }
        Ok(())
    }

    async fn find_incidents_and_slots(
        &self,
        rule: &str,
        key: &str,
        fingerprints: &[&str],
        slots: &[String],
    ) -> Result<FoundIncidents, StoreError> {
        let inc = self.incidents()?;
        let slot = inc.slots.get(key).cloned();
        let slots: Vec<Option<String>> = slots.iter().map(|k| inc.slots.get(k).cloned()).collect();
        let members: Vec<Option<String>> = fingerprints
            .iter()
            .map(|fp| {
                inc.members
                    .get(&(rule.to_string(), fp.to_string()))
                    .cloned()
            })
            .collect();
        let incidents = FoundIncidents::distinct_ids(&members, slot.as_ref(), &slots)
            .into_iter()
            .filter_map(|id| inc.by_id.get(&id).map(|i| (id, i.clone())))
            .collect();
        Ok(FoundIncidents {
            slot,
            members,
            slots,
            incidents,
        })
    }

    async fn get_incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        Ok(self.incidents()?.by_id.get(id).cloned())
    }

    async fn incident_route(&self, id: &str) -> Result<Option<Vec<String>>, StoreError> {
        Ok(self.incidents()?.by_id.get(id).map(|i| i.route.clone()))
    }

    async fn commit_incident(&self, c: &IncidentCommit<'_>) -> Result<bool, StoreError> {
        let mut inc = self.incidents()?;
        let id = &c.incident.id;
        let stored = inc.by_id.get(id).map_or(0, |i| i.version);
        if stored != c.expected_version {
            return Ok(false);
        }
        if let Some((key, expected)) = c.bind
            && inc.slots.get(key).map(String::as_str) != expected
        {
            return Ok(false);
        }
        if c.slots
            .iter()
            .any(|s| inc.slots.get(s.key).map(String::as_str) != s.expected)
        {
            return Ok(false);
        }
        if let Some((key, _)) = c.bind {
            inc.slots.insert(key.to_string(), id.clone());
        }
        for s in c.slots.iter().filter(|s| s.set) {
            inc.slots.insert(s.key.to_string(), id.clone());
        }
        for (rule, fp) in c.members {
            inc.members
                .insert((rule.to_string(), fp.to_string()), id.clone());
            inc.of_alert
                .entry(fp.to_string())
                .or_default()
                .insert(id.clone());
        }
        if let Some(event) = c.outbox_event {
            inc.outbox.push(id, c.incident.version, event);
            self.outbox_ready.notify_waiters();
        }
        if let Some(old) = inc.due_of.remove(id) {
            inc.due.remove(&(old, id.clone()));
        }
        if let Some(due) = c.due {
            inc.due.insert((due, id.clone()));
            inc.due_of.insert(id.clone(), due);
        }
        let mut doc = c.incident.clone();
        if let Some(prev) = inc.by_id.get(id) {
            // The version matched: `prev` is what the writer read, but for the
            // activity time a touch may have moved since.
            doc.last_activity = doc.last_activity.max(prev.last_activity);
        }
        inc.by_id.insert(id.clone(), doc);
        Ok(true)
    }

    async fn touch_incidents(
        &self,
        ids: &[String],
        at: DateTime<Utc>,
    ) -> Result<Vec<bool>, StoreError> {
        let mut inc = self.incidents()?;
        Ok(ids
            .iter()
            .map(|id| match inc.by_id.get_mut(id) {
                Some(i) if i.state.is_open() => {
                    i.last_activity = i.last_activity.max(at);
                    true
                }
                _ => false,
            })
            .collect())
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
    ) -> Result<Vec<(DateTime<Utc>, String)>, StoreError> {
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
        Ok(released)
    }

    async fn incidents_of_alert(&self, fingerprint: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .incidents()?
            .of_alert
            .get(fingerprint)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn outbox_read(
        &self,
        _consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        for round in 0..2 {
            // Created before looking, so an append between the look and the
            // wait still wakes this reader.
            let notified = self.outbox_ready.notified();
            {
                let mut inc = self.incidents()?;
                let n = max.min(inc.outbox.queue.len());
                let taken: Vec<OutboxEntry> = inc.outbox.queue.drain(..n).collect();
                if !taken.is_empty() || round == 1 {
                    let now = Instant::now();
                    for e in &taken {
                        inc.outbox
                            .pending
                            .insert(e.entry_id.clone(), (e.clone(), now));
                    }
                    return Ok(taken);
                }
            }
            let _ = tokio::time::timeout(wait, notified).await;
        }
        Ok(Vec::new())
    }

    async fn outbox_reclaim(
        &self,
        _consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut inc = self.incidents()?;
        let now = Instant::now();
        let mut out = Vec::new();
        for (entry, since) in inc.outbox.pending.values_mut() {
            if out.len() >= max {
                break;
            }
            if now.duration_since(*since) >= min_idle {
                *since = now;
                out.push(entry.clone());
            }
        }
        Ok(out)
    }

    async fn outbox_ack(&self, entry_ids: &[String]) -> Result<(), StoreError> {
        let mut inc = self.incidents()?;
        for id in entry_ids {
            inc.outbox.pending.remove(id);
        }
        Ok(())
    }

    async fn outbox_push(
        &self,
        incident_id: &str,
        version: u64,
        event: &str,
    ) -> Result<(), StoreError> {
        self.incidents()?.outbox.push(incident_id, version, event);
        self.outbox_ready.notify_waiters();
        Ok(())
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let inc = self.incidents()?;
        let oldest = inc
            .outbox
            .pending
            .values()
            .map(|(e, _)| e.enqueued_at)
            .chain(inc.outbox.queue.front().map(|e| e.enqueued_at))
            .min();
        Ok(OutboxStats {
            depth: (inc.outbox.queue.len() + inc.outbox.pending.len()) as u64,
            oldest,
        })
    }

    async fn get_sync(
        &self,
        incident_id: &str,
        adapter: &str,
    ) -> Result<Option<SyncState>, StoreError> {
        Ok(self
            .incidents()?
            .sync
            .get(&(incident_id.to_string(), adapter.to_string()))
            .cloned())
    }

    async fn put_sync(
        &self,
        incident_id: &str,
        adapter: &str,
        state: &SyncState,
    ) -> Result<(), StoreError> {
        self.incidents()?.sync.insert(
            (incident_id.to_string(), adapter.to_string()),
            state.clone(),
        );
        Ok(())
    }

    async fn try_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut inc = self.incidents()?;
        let now = Instant::now();
        match inc.leases.get(name) {
            Some((holder, until)) if holder != owner && *until > now => Ok(false),
            _ => {
                inc.leases
                    .insert(name.to_string(), (owner.to_string(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let mut inc = self.incidents()?;
        if inc
            .leases
            .get(name)
            .is_some_and(|(holder, _)| holder == owner)
        {
            inc.leases.remove(name);
        }
        Ok(())
    }

    async fn put_dead_letter(&self, dead: &DeadLetter) -> Result<(), StoreError> {
        self.incidents()?.dead.insert(dead.id.clone(), dead.clone());
        Ok(())
    }

    async fn list_dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(self.incidents()?.dead.values().cloned().collect())
    }

    async fn take_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        Ok(self.incidents()?.dead.remove(id))
    }

    async fn heartbeat_seen(&self, name: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut inc = self.incidents()?;
        let seen = inc.heartbeats.entry(name.to_string()).or_insert(at);
        *seen = (*seen).max(at);
        Ok(())
    }

    async fn heartbeats_seen(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        Ok(self.incidents()?.heartbeats.clone())
    }

    async fn open_gauges(&self) -> Result<super::OpenGauges, StoreError> {
        // In process: counting is as cheap as keeping counters.
        let mut g = super::OpenGauges::default();
        for inc in self.incidents()?.by_id.values() {
            g.add(inc);
        }
        Ok(g)
    }

    async fn maintain(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.lock()?.retain(|_, s| !self.expired(s, now));
        let retention = self.closed_retention;
        self.incidents()?
            .by_id
            .retain(|_, i| i.closed_at.is_none_or(|at| now - at < retention));
        Ok(())
    }
}
