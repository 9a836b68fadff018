//! The state store: where alert state lives, behind one trait with two
//! implementations.
//!
//! - [`memory::MemoryStore`]: embedded, the default; one process only.
//! - [`redis::RedisStore`]: production; several daemon instances share it.
//!
//! The store is batch-oriented: [`StateStore::record_alerts`] takes every alert of
//! a request and costs one round trip. Dedup happens inside it, atomically per
//! alert, so two instances recording the same alert at the same moment leave one
//! state whose counts add up. The rules of dedup are [`merge`]; the Redis Lua
//! script is the same function written for the server, and `tests/store.rs` runs
//! one test body against both.

pub mod instrumented;
pub mod memory;
pub mod redis;
pub mod redis_conn;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::{Alert, Status};
use crate::incident::{Incident, IncidentQuery};
use crate::outbox::{DeadLetter, OutboxEntry, OutboxStats, SyncState};

/// What the store keeps about one alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub fingerprint: String,
    pub source: String,
    pub status: Status,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub severity: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: Option<String>,
    /// Receptions since the last status change (1 = seen once in this status).
    pub count: u64,
    /// Receptions over the alert's whole life.
    pub total_count: u64,
    /// Status changes (firing → resolved, resolved → firing).
    pub transitions: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub status_changed_at: DateTime<Utc>,
    /// Why the alert went where it went, as of its last processing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explain>,
}

impl AlertState {
    /// The alert as last received, for re-processing (e.g. when a maintenance
    /// window ends).
    pub fn to_alert(&self) -> Alert {
        Alert {
            source: self.source.clone(),
            fingerprint: self.fingerprint.clone(),
            status: self.status,
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            severity: self.severity.clone(),
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            generator_url: self.generator_url.clone(),
            received_at: self.last_seen,
        }
    }
}

/// Why an alert went where it went: the answer to "why was this grouped (or not)?".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explain {
    pub at: DateTime<Utc>,
    /// One line: `incident INC`, `suppressed by rule R`, `in maintenance W`, `no rule matched`, ...
    pub summary: String,
    /// Each rule that matched, in order.
    pub rules: Vec<ExplainRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainRule {
    pub rule: String,
    /// `incident`, `suppress` or `drop`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    /// What happened, in words.
    pub result: String,
}

/// The incidents a group of alerts (one rule, one correlation key) may go to.
#[derive(Debug, Clone, Default)]
pub struct FoundIncidents {
    /// The id the correlation key points at now (compared again on commit).
    pub slot: Option<String>,
    /// Per alert, in order: the incident it already belongs to under the rule.
    pub members: Vec<Option<String>>,
    /// Per other slot asked for, in order: the incident id it points at (what
    /// a group on the topology path may consult: inhibition, services).
    pub slots: Vec<Option<String>>,
    /// Every incident named above, by id, each read once.
    pub incidents: std::collections::HashMap<String, Incident>,
}

impl FoundIncidents {
    /// The incident ids the alerts' memberships, the key's slot and the other
    /// slots name, each once (sorted): a group's alerts mostly belong to one
    /// incident, which is then read and copied once, not once per alert (a
    /// copy holds every alert of the incident).
    fn distinct_ids(
        members: &[Option<String>],
        slot: Option<&String>,
        slots: &[Option<String>],
    ) -> Vec<String> {
        let mut ids: Vec<String> = members
            .iter()
            .flatten()
            .chain(slot)
            .chain(slots.iter().flatten())
            .cloned()
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// What recording one alert did, and, for a repeat, how it was explained the
/// last time it was processed.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub outcome: Outcome,
    pub previous: Option<Explain>,
}

/// One incident write. Applied only if the stored version is still
/// `expected_version` (0: the incident does not exist yet) and, with `bind`, the
/// correlation key still points where it did when read.
#[derive(Debug, Clone)]
pub struct IncidentCommit<'a> {
    /// The new record; its `version` must be `expected_version + 1`.
    pub incident: &'a Incident,
    pub expected_version: u64,
    /// Point this correlation key at the incident: `(key, expected current id)`.
    pub bind: Option<(&'a str, Option<&'a str>)>,
    /// Alerts `(rule, fingerprint)` that belong to the incident.
    pub members: &'a [(&'a str, &'a str)],
    /// When the incident's timers next need a look (auto-resolve, close).
    pub due: Option<DateTime<Utc>>,
    /// Append this change to the outbox (`created`, `updated`, ...), in the same
    /// atomic step.
    pub outbox_event: Option<&'a str>,
    /// More correlation slots the write depends on (topology and inhibition
    /// indexes): each must still hold what was read, and those with `set` are
    /// pointed at the incident, all in the same atomic step.
    pub slots: &'a [SlotCheck<'a>],
}

/// A correlation slot an [`IncidentCommit`] checks (and maybe takes over).
#[derive(Debug, Clone)]
pub struct SlotCheck<'a> {
    pub key: &'a str,
    /// The id read from the slot (`None`: it was empty).
    pub expected: Option<&'a str>,
    /// Point the slot at the committed incident.
    pub set: bool,
}

/// What recording one alert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// First time this fingerprint is seen (or seen again after its state expired).
    New,
    /// Same fingerprint, same status: counters and last-seen changed, nothing else.
    Duplicate { count: u64 },
    /// The status changed.
    Transition { from: Status, to: Status },
    /// A firing notification for an episode that has already resolved (an
    /// Alertmanager HA peer lagging behind): ignored, so it cannot reopen anything.
    Stale,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::New => "new",
            Outcome::Duplicate { .. } => "duplicate",
            Outcome::Transition { .. } => "transition",
            Outcome::Stale => "stale",
        }
    }
}

/// Filters for [`StateStore::list_alerts`].
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    pub status: Option<Status>,
    /// At most this many, most recently seen first.
    pub limit: usize,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached now; the caller should retry later (HTTP 503).
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with something this version cannot read.
    #[error("state store returned unreadable data: {0}")]
    Corrupt(String),
}

/// Where alert state is kept. Implementations must make each alert's update
/// atomic: concurrent writers of one fingerprint never lose an update.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// `memory` or `redis`: used in metric labels and logs.
    fn kind(&self) -> &'static str;

    /// Records a batch of alerts received at `now`, returning one outcome per alert
    /// in order. Either the whole batch is recorded or an error is returned; a
    /// retried batch is harmless because recording is idempotent up to counters.
    async fn record_alerts(
        &self,
        alerts: &[Alert],
        now: DateTime<Utc>,
    ) -> Result<Vec<Recorded>, StoreError>;

    /// Alerts, most recently seen first.
    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<AlertState>, StoreError>;

    /// Succeeds when the store can serve requests now.
    async fn ping(&self) -> Result<(), StoreError>;

    /// One alert's state.
    async fn get_alert(&self, fingerprint: &str) -> Result<Option<AlertState>, StoreError>;

    /// Records why each alert went where it went (one round trip).
    async fn set_explains(&self, explains: &[(String, Explain)]) -> Result<(), StoreError>;

    /// The incidents alerts `fingerprints` may correlate to under `rule` and `key`.
    async fn find_incidents(
        &self,
        rule: &str,
        key: &str,
        fingerprints: &[&str],
    ) -> Result<FoundIncidents, StoreError> {
        self.find_incidents_and_slots(rule, key, fingerprints, &[])
            .await
    }

    /// [`find_incidents`](Self::find_incidents), and what the other slots
    /// `slots` point at, read together: the slots of a group on the topology
    /// path mostly name the incident its key names, which two separate reads
    /// fetched and parsed twice, in twice the round trips.
    async fn find_incidents_and_slots(
        &self,
        rule: &str,
        key: &str,
        fingerprints: &[&str],
        slots: &[String],
    ) -> Result<FoundIncidents, StoreError>;

    async fn get_incident(&self, id: &str) -> Result<Option<Incident>, StoreError>;

    /// The incident to change it, or to read anything but its timeline: a
    /// store keeping the timeline apart may leave out the entries it holds
    /// (`timeline_dropped` then counts them, and committing appends only the
    /// entries added since). The daemon's correlation reads incidents this way.
    async fn get_incident_head(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        self.get_incident(id).await
    }

    /// The adapters incident `id` is routed to, or `None` when it is gone.
    /// The outbox worker needs only this to know which syncs to run (each
    /// sync reads the incident whole), and it asks once per committed change:
    /// building the whole incident for it was a tenth of the daemon's CPU.
    async fn incident_route(&self, id: &str) -> Result<Option<Vec<String>>, StoreError> {
        Ok(self.get_incident_head(id).await?.map(|inc| inc.route))
    }

    /// Moves the activity time (`last_activity`) of each of `ids` that is
    /// open to `at`, without reading or rewriting the incident and without a
    /// new version: a repeat of a member alert changes nothing else, and
    /// repeats are the bulk of what monitoring sends. A later read sees the
    /// later of the document's and the touched time, so a commit racing a
    /// touch loses neither. Per id, whether it was open and touched.
    async fn touch_incidents(
        &self,
        ids: &[String],
        at: DateTime<Utc>,
    ) -> Result<Vec<bool>, StoreError>;

    /// Writes an incident if nobody changed it since it was read; `Ok(false)`
    /// when somebody did (read again and retry).
    async fn commit_incident(&self, commit: &IncidentCommit<'_>) -> Result<bool, StoreError>;

    /// Incidents, most recently updated first.
    async fn list_incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError>;

    /// Ids of incidents whose timers are due at `now`.
    async fn due_incidents(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// Holds a firing alert raised during a maintenance window until `until`.
    async fn hold_alert(&self, fingerprint: &str, until: DateTime<Utc>) -> Result<(), StoreError>;

    /// Takes (and forgets) the held alerts whose window has ended by `now`.
    /// Takes (and forgets) the held alerts whose window has ended by `now`:
    /// `(release time, fingerprint)`, oldest first.
    async fn take_released(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(DateTime<Utc>, String)>, StoreError>;

    /// Ids of the incidents alert `fingerprint` belongs to, under any rule.
    async fn incidents_of_alert(&self, fingerprint: &str) -> Result<Vec<String>, StoreError>;

    /// Reads up to `max` new outbox entries for `consumer`, waiting up to
    /// `wait` when there are none. They stay pending until acknowledged.
    async fn outbox_read(
        &self,
        consumer: &str,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Claims for `consumer` the entries pending longer than `min_idle` (their
    /// consumer died, or left them for a later try).
    async fn outbox_reclaim(
        &self,
        consumer: &str,
        min_idle: std::time::Duration,
        max: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Done with these entries.
    async fn outbox_ack(&self, entry_ids: &[String]) -> Result<(), StoreError>;

    /// Appends an entry outside an incident commit (an operator's retry).
    async fn outbox_push(
        &self,
        incident_id: &str,
        version: u64,
        event: &str,
    ) -> Result<(), StoreError>;

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError>;

    async fn get_sync(
        &self,
        incident_id: &str,
        adapter: &str,
    ) -> Result<Option<SyncState>, StoreError>;

    async fn put_sync(
        &self,
        incident_id: &str,
        adapter: &str,
        state: &SyncState,
    ) -> Result<(), StoreError>;

    /// Takes lease `name` for `owner` for `ttl` unless someone else holds it.
    async fn try_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError>;

    /// Gives lease `name` back if `owner` still holds it.
    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError>;

    async fn put_dead_letter(&self, dead: &DeadLetter) -> Result<(), StoreError>;

    async fn list_dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError>;

    /// Removes and returns dead letter `id` (so one retry re-queues it once).
    async fn take_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, StoreError>;

    /// Records that heartbeat `name` was seen at `at` (a later time already
    /// stored wins: instances may report out of order).
    async fn heartbeat_seen(&self, name: &str, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// When each heartbeat was last seen, by name (never seen: absent).
    async fn heartbeats_seen(
        &self,
    ) -> Result<std::collections::HashMap<String, DateTime<Utc>>, StoreError>;

    /// Open incidents by priority and their flapping alerts, across every
    /// instance: kept as counters by each incident write, so reading them does
    /// not load incidents.
    async fn open_gauges(&self) -> Result<OpenGauges, StoreError>;

    /// Periodic housekeeping (expiry of resolved alerts); a no-op where the
    /// backend expires keys itself.
    async fn maintain(&self, _now: DateTime<Utc>) -> Result<(), StoreError> {
        Ok(())
    }
}

pub type SharedStore = Arc<dyn StateStore>;

/// What the open-incident gauges show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenGauges {
    /// Open incidents of priority 1..=5, at index priority - 1.
    pub by_priority: [i64; 5],
    /// Flapping alerts of open incidents.
    pub flapping_alerts: i64,
}

impl OpenGauges {
    /// What one incident adds to the gauges: `(open, priority, flapping alerts)`.
    pub fn contribution(inc: &crate::incident::Incident) -> (bool, u8, usize) {
        (
            inc.state.is_open(),
            inc.priority.clamp(1, 5),
            crate::incident::flapping::flapping_alerts(inc),
        )
    }

    fn add(&mut self, inc: &crate::incident::Incident) {
        let (open, priority, flapping) = Self::contribution(inc);
        if open {
            self.by_priority[usize::from(priority) - 1] += 1;
            self.flapping_alerts += flapping as i64;
        }
    }
}

/// Whether an alert's explanation was made since its status last changed
/// (`changed_at_ms`; unknown counts as before). One from before is of an
/// earlier status whose change was recorded but not processed (the store failed
/// in between and the alert was sent again): a repeat carrying it must be
/// processed in full, not skipped or touched.
pub fn explains_current_status(explain: &Explain, changed_at_ms: Option<i64>) -> bool {
    changed_at_ms.is_none_or(|ms| explain.at.timestamp_millis() >= ms)
}

/// The dedup rules, applied to the previous state of one fingerprint.
///
/// - none → new state, count 1.
/// - same status → duplicate: count + 1, last seen, the newest annotations.
/// - resolved → firing for a `starts_at` not after the stored one → stale (the
///   resolved episode is not revived by a late firing notification).
/// - otherwise a transition: new status, count back to 1.
pub fn merge(prev: Option<AlertState>, alert: &Alert, now: DateTime<Utc>) -> (AlertState, Outcome) {
    let fresh = |count, total_count, transitions, first_seen| AlertState {
        fingerprint: alert.fingerprint.clone(),
        source: alert.source.clone(),
        status: alert.status,
        labels: alert.labels.clone(),
        annotations: alert.annotations.clone(),
        severity: alert.severity.clone(),
        starts_at: alert.starts_at,
        ends_at: alert.ends_at,
        generator_url: alert.generator_url.clone(),
        count,
        total_count,
        transitions,
        first_seen,
        last_seen: now,
        status_changed_at: now,
        explain: None,
    };
    match prev {
        None => (fresh(1, 1, 0, now), Outcome::New),
        Some(prev) if prev.status == alert.status => {
            let mut next = fresh(
                prev.count + 1,
                prev.total_count + 1,
                prev.transitions,
                prev.first_seen,
            );
            next.status_changed_at = prev.status_changed_at;
            next.explain = prev.explain;
            let count = next.count;
            (next, Outcome::Duplicate { count })
        }
        Some(prev) if is_stale(&prev, alert) => (prev, Outcome::Stale),
        Some(prev) => {
            let from = prev.status;
            let mut next = fresh(
                1,
                prev.total_count + 1,
                prev.transitions + 1,
                prev.first_seen,
            );
            next.explain = prev.explain;
            (
                next,
                Outcome::Transition {
                    from,
                    to: alert.status,
                },
            )
        }
    }
}

fn is_stale(prev: &AlertState, alert: &Alert) -> bool {
    prev.status == Status::Resolved
        && alert.status == Status::Firing
        && matches!((alert.starts_at, prev.starts_at), (Some(new), Some(old)) if new <= old)
}
