//! Runs the rules and the lifecycle over the state store.
//!
//! Every incident write is optimistic: read, compute the next incident with the
//! pure [`lifecycle`] functions, commit only if nobody changed it meanwhile
//! (version and correlation slot are checked atomically by the store), else read
//! again. That is how two daemon instances receiving the same storm open one
//! incident per correlation key.

use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use super::lifecycle::{self, Step};
use super::{Incident, IncidentState};
use crate::alert::{Alert, Status};
use crate::metrics::Metrics;
use crate::rules::{Action, Decision, IncidentSpec, RuleSet};
use crate::store::{Explain, ExplainRule, IncidentCommit, Outcome, SharedStore, StoreError};

/// Reads-and-retries before an incident write gives up (and the request gets 503).
const MAX_ATTEMPTS: u32 = 32;
/// Upper bound of the random pause before a retry.
const MAX_BACKOFF_MS: u64 = 50;
/// Due timers and released alerts handled per tick.
const TICK_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no incident {0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Engine {
    store: SharedStore,
    after_manual_close: lifecycle::AfterManualClose,
    rules: RwLock<Arc<RuleSet>>,
    metrics: Arc<Metrics>,
}

/// What correlating one alert did, for the explanation.
enum Correlated {
    Nothing,
    Opened(String),
    Joined(String, IncidentState),
}

impl Engine {
    pub fn new(store: SharedStore, rules: Arc<RuleSet>, metrics: Arc<Metrics>) -> Self {
        metrics.rules_loaded.set(rules.len() as i64);
        Engine {
            store,
            after_manual_close: lifecycle::AfterManualClose::default(),
            rules: RwLock::new(rules),
            metrics,
        }
    }

    /// What an alert does to an incident a person closed in an ITSM platform.
    pub fn with_after_manual_close(mut self, policy: lifecycle::AfterManualClose) -> Self {
        self.after_manual_close = policy;
        self
    }

    /// Records the ticket an adapter made for the incident.
    pub async fn set_external_ref(
        &self,
        id: &str,
        adapter: &str,
        ext: &crate::adapters::ExternalRef,
    ) -> Result<Incident, EngineError> {
        let shown = ext.url.clone().unwrap_or_else(|| ext.display.clone());
        self.update(id, Utc::now(), |mut inc| {
            inc.external_refs.insert(adapter.to_string(), shown.clone());
            Ok(inc)
        })
        .await
    }

    /// Applies a change a person made to the incident's ticket.
    pub async fn apply_remote(
        &self,
        id: &str,
        adapter: &str,
        to: crate::adapters::TicketState,
        who: &str,
        now: DateTime<Utc>,
    ) -> Result<Incident, EngineError> {
        self.update(id, now, |inc| {
            Ok(lifecycle::remote_change(inc, to, who, adapter, now))
        })
        .await
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The rules in force now.
    pub fn rules(&self) -> Arc<RuleSet> {
        match self.rules.read() {
            Ok(r) => r.clone(),
            // A writer panicked mid-swap; the Arc inside is still whole.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts a new rule set in force for alerts processed from now on.
    pub fn swap_rules(&self, rules: Arc<RuleSet>) {
        self.metrics.rules_loaded.set(rules.len() as i64);
        match self.rules.write() {
            Ok(mut r) => *r = rules,
            Err(poisoned) => *poisoned.into_inner() = rules,
        }
    }

    /// Takes one recorded alert through its rules' decisions.
    pub async fn process(
        &self,
        rules: &RuleSet,
        alert: &Alert,
        decisions: &[Decision],
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if outcome == Outcome::Stale {
            return Ok(());
        }
        let maintenance = rules.maintenance_at(alert, now);
        let mut explained: Vec<ExplainRule> = Vec::with_capacity(decisions.len());
        for d in decisions {
            let (action, key, incident_id, result) = match &d.action {
                Action::Drop => ("drop", None, None, "dropped".to_string()),
                Action::Suppress => (
                    "suppress",
                    None,
                    None,
                    "suppressed: state kept, no incident".to_string(),
                ),
                Action::Incident(spec) => {
                    let key = spec.correlation_key(&d.rule, alert);
                    match &maintenance {
                        Some(hit) if alert.status == Status::Firing => {
                            self.store
                                .hold_alert(&alert.fingerprint, hit.ends_at)
                                .await?;
                            self.metrics.alerts_in_maintenance.inc();
                            let result = format!(
                                "in maintenance window {} until {}: no incident unless still firing then",
                                hit.name,
                                hit.ends_at.to_rfc3339()
                            );
                            ("incident", Some(key), None, result)
                        }
                        _ => match self.correlate(&d.rule, spec, &key, alert, now).await? {
                            Correlated::Nothing => (
                                "incident",
                                Some(key),
                                None,
                                "no open incident for this resolved alert".to_string(),
                            ),
                            Correlated::Opened(id) => (
                                "incident",
                                Some(key),
                                Some(id.clone()),
                                format!("opened incident {id}"),
                            ),
                            Correlated::Joined(id, state) => (
                                "incident",
                                Some(key),
                                Some(id.clone()),
                                format!("correlated into incident {id} (now {})", state.as_str()),
                            ),
                        },
                    }
                }
            };
            explained.push(ExplainRule {
                rule: d.rule.to_string(),
                action: action.to_string(),
                correlation_key: key,
                incident_id,
                result,
            });
        }
        if alert.status == Status::Resolved {
            self.resolve_elsewhere(alert, &explained, now).await?;
        }
        let summary = match explained.first() {
            None => "no rule matched".to_string(),
            Some(first) if explained.len() == 1 => format!("rule {}: {}", first.rule, first.result),
            Some(_) => explained
                .iter()
                .map(|e| format!("rule {}: {}", e.rule, e.result))
                .collect::<Vec<_>>()
                .join("; "),
        };
        let explain = Explain {
            at: now,
            summary,
            rules: explained,
        };
        self.store.set_explain(&alert.fingerprint, &explain).await
    }

    /// A resolved alert also resolves in the incidents it joined under rules it
    /// no longer matches (its annotations moved it), so none stays open forever.
    async fn resolve_elsewhere(
        &self,
        alert: &Alert,
        handled: &[ExplainRule],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for id in self.store.incidents_of_alert(&alert.fingerprint).await? {
            if handled
                .iter()
                .any(|e| e.incident_id.as_deref() == Some(id.as_str()))
            {
                continue;
            }
            let change = |inc: Incident| {
                Ok(lifecycle::member_resolved(inc.clone(), alert, now).unwrap_or(inc))
            };
            match self.update(&id, now, change).await {
                Ok(_) | Err(EngineError::NotFound(_) | EngineError::Invalid(_)) => {}
                Err(EngineError::Store(e)) => return Err(e),
            }
        }
        Ok(())
    }

    async fn correlate(
        &self,
        rule: &str,
        spec: &IncidentSpec,
        key: &str,
        alert: &Alert,
        now: DateTime<Utc>,
    ) -> Result<Correlated, StoreError> {
        for attempt in 0..MAX_ATTEMPTS {
            let found = self
                .store
                .find_incident(rule, key, &alert.fingerprint)
                .await?;
            let before = found.incident.clone();
            let expected = before.as_ref().map_or(0, |i| i.version);
            let step = lifecycle::on_alert(
                found.incident,
                rule,
                spec,
                key,
                alert,
                now,
                self.after_manual_close,
                new_id,
            );
            let (mut inc, created) = match step {
                Step::Nothing => return Ok(Correlated::Nothing),
                Step::Create(inc) => (*inc, true),
                Step::Update(inc) => (*inc, false),
            };
            if !created && before.as_ref() == Some(&inc) {
                return Ok(Correlated::Joined(inc.id, inc.state));
            }
            inc.version = if created { 1 } else { expected + 1 };
            let event = change_event(before.as_ref(), &inc);
            let commit = IncidentCommit {
                incident: &inc,
                expected_version: if created { 0 } else { expected },
                bind: created.then_some((key, found.slot.as_deref())),
                member: Some((rule, alert.fingerprint.as_str())),
                due: lifecycle::next_due(&inc),
                outbox_event: event.filter(|_| !inc.route.is_empty()),
            };
            if self.store.commit_incident(&commit).await? {
                self.count_change(event);
                return Ok(if created {
                    Correlated::Opened(inc.id)
                } else {
                    Correlated::Joined(inc.id, inc.state)
                });
            }
            self.conflict(attempt).await;
        }
        Err(StoreError::Unavailable(format!(
            "incident for {key}: gave up after {MAX_ATTEMPTS} concurrent updates"
        )))
    }

    /// Another writer won the race for an incident: count it, and pause a
    /// random, growing while (full jitter) so a storm on one key does not turn
    /// into writers retrying in lockstep.
    async fn conflict(&self, attempt: u32) {
        self.metrics.incident_conflicts.inc();
        let cap = (1u64 << attempt.min(6)).min(MAX_BACKOFF_MS);
        tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(0..=cap))).await;
    }

    fn count_change(&self, event: Option<&str>) {
        if let Some(event) = event {
            self.metrics
                .incident_changes
                .with_label_values(&[event])
                .inc();
        }
    }

    /// Time-driven work due at `now`: auto-resolve and close timers, and alerts
    /// released from maintenance windows that are still firing.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        for id in self.store.due_incidents(now, TICK_BATCH).await? {
            match self
                .update(&id, now, |inc| Ok(lifecycle::tick(inc, now)))
                .await
            {
                Ok(_) | Err(EngineError::NotFound(_) | EngineError::Invalid(_)) => {}
                Err(EngineError::Store(e)) => return Err(e),
            }
        }
        let rules = self.rules();
        // A released alert is processed at the time its window ended, not at
        // this tick's time, so windows and timers see the same clock.
        for (released_at, fp) in self.store.take_released(now, TICK_BATCH).await? {
            let Some(state) = self.store.get_alert(&fp).await? else {
                continue;
            };
            if state.status != Status::Firing {
                continue;
            }
            let alert = state.to_alert();
            let decisions = rules.evaluate(&alert);
            self.process(
                &rules,
                &alert,
                &decisions,
                Outcome::Duplicate { count: state.count },
                released_at,
            )
            .await?;
        }
        Ok(())
    }

    /// Reads incident `id`, applies `change`, commits; retries on conflicts.
    async fn update(
        &self,
        id: &str,
        now: DateTime<Utc>,
        change: impl Fn(Incident) -> Result<Incident, String>,
    ) -> Result<Incident, EngineError> {
        for attempt in 0..MAX_ATTEMPTS {
            let Some(before) = self.store.get_incident(id).await? else {
                return Err(EngineError::NotFound(id.to_string()));
            };
            let mut next = change(before.clone()).map_err(EngineError::Invalid)?;
            let unchanged = next == before;
            if unchanged && lifecycle::next_due(&before).is_none_or(|d| d > now) {
                return Ok(before);
            }
            // Unchanged yet due: nothing will ever be due on it, so the commit
            // below takes it off the due index instead of looking at it forever.
            let due = if unchanged {
                None
            } else {
                lifecycle::next_due(&next)
            };
            next.version = before.version + 1;
            let event = change_event(Some(&before), &next);
            let commit = IncidentCommit {
                incident: &next,
                expected_version: before.version,
                bind: None,
                member: None,
                due,
                outbox_event: event.filter(|_| !next.route.is_empty()),
            };
            if self.store.commit_incident(&commit).await? {
                self.count_change(event);
                return Ok(next);
            }
            self.conflict(attempt).await;
        }
        Err(EngineError::Store(StoreError::Unavailable(format!(
            "incident {id}: gave up after {MAX_ATTEMPTS} concurrent updates"
        ))))
    }

    pub async fn acknowledge(
        &self,
        id: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Incident, EngineError> {
        self.update(id, now, |inc| lifecycle::acknowledge(inc, now, by))
            .await
    }

    pub async fn resolve(
        &self,
        id: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Incident, EngineError> {
        self.update(id, now, |inc| lifecycle::resolve(inc, now, by))
            .await
    }
}

/// What changed between two versions of an incident, as the outbox names it;
/// `None` when nothing a ticket shows changed (only the activity time, the
/// version, or the external references the delivery itself wrote).
pub fn change_event(before: Option<&Incident>, after: &Incident) -> Option<&'static str> {
    let Some(before) = before else {
        return Some("created");
    };
    if before.state != after.state {
        return Some(match after.state {
            IncidentState::New | IncidentState::InProgress => "acknowledged",
            IncidentState::Reopened => "reopened",
            IncidentState::Resolved => "resolved",
            IncidentState::Closed => "closed",
        });
    }
    let mut a = before.clone();
    let mut b = after.clone();
    for i in [&mut a, &mut b] {
        i.last_activity = chrono::DateTime::<Utc>::MIN_UTC;
        i.version = 0;
        i.external_refs.clear();
    }
    (a != b).then_some("updated")
}

fn new_id() -> String {
    format!("inc-{}", uuid::Uuid::now_v7().simple())
}
