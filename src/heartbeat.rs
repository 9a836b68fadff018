//! Heartbeats: proof that the monitoring pipeline is alive. A dead pipeline
//! must not look like a quiet night, so each heartbeat the config declares is
//! expected at least every `interval_s`; when it is overdue an incident
//! "monitoring pipeline silent" opens, and it resolves when the heartbeat
//! returns.
//!
//! A heartbeat is either
//! - an always-firing alert, such as Alertmanager's `Watchdog`, matched by
//!   labels in the rules' matcher syntax. Such alerts are consumed here: they
//!   do not go through the rules, so they never open ordinary incidents; or
//! - activity on a source: [`Heartbeats::observe_activity`] is called by the
//!   sources (`webhook` per endpoint: `alertmanager`, `grafana`, `generic`;
//!   `kafka` per topic).
//!
//! Last-seen times live in the store (shared by instances, kept across
//! restarts). A heartbeat not seen since this instance started counts from the
//! start: after `interval_s` without it, it is silent, even on a fresh start
//! with an empty store. The incident is created at the moment the heartbeat
//! became overdue and resolved at the moment it was seen again, so simulated
//! (`incidentd test`) and live runs record the same times.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::alert::{Alert, Status};
use crate::config::Problems;
use crate::incident::engine::{Engine, EngineError};
use crate::incident::{Incident, IncidentState, Policy};
use crate::rules::{LabelMatchers, Level};
use crate::store::StoreError;

/// Source activity is written to the store at most this often per heartbeat
/// (each webhook request would otherwise cost a store write).
const ACTIVITY_WRITE_EVERY_S: i64 = 5;

/// One `heartbeats:` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeartbeat {
    pub name: String,
    /// Matchers of the always-firing alert (e.g. `alertname="Watchdog"`).
    #[serde(default, rename = "match")]
    pub matchers: Option<Vec<String>>,
    /// Or activity on a source: `{kind: kafka, name: alerts}`.
    #[serde(default)]
    pub source: Option<RawSource>,
    pub interval_s: u64,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default = "default_level")]
    pub impact: String,
    #[serde(default = "default_level")]
    pub urgency: String,
    #[serde(default)]
    pub assignment_group: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub route: Vec<String>,
}

fn default_level() -> String {
    "high".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// `webhook` or `kafka` (any source that calls `observe_activity`).
    pub kind: String,
    /// The endpoint (`alertmanager`, `grafana`, `generic`) or topic.
    pub name: String,
}

/// What proves a heartbeat alive.
#[derive(Debug)]
pub enum Signal {
    Alert(LabelMatchers),
    Activity { kind: String, name: String },
}

/// One validated heartbeat.
#[derive(Debug)]
pub struct HeartbeatSpec {
    pub name: String,
    pub signal: Signal,
    pub interval_s: u64,
    pub title: String,
    pub impact: Level,
    pub urgency: Level,
    pub assignment_group: Option<String>,
    pub service: Option<String>,
    pub route: Vec<String>,
}

impl HeartbeatSpec {
    fn what(&self) -> String {
        match &self.signal {
            Signal::Alert(_) => "its heartbeat alert".to_string(),
            Signal::Activity { kind, name } => format!("activity on {kind} {name}"),
        }
    }
}

/// Validates `heartbeats:`, reporting every problem. `adapters`: the names
/// under `adapters:`, which `route` may use.
pub fn validate(
    raws: &[RawHeartbeat],
    adapters: &[&str],
    p: &mut Problems<'_>,
) -> Vec<Arc<HeartbeatSpec>> {
    let mut out = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for raw in raws {
        let before = p.len();
        if raw.name.is_empty()
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            p.at_item(
                "heartbeats",
                &raw.name,
                None,
                "names are letters, digits, - _ .",
            );
        }
        if !names.insert(raw.name.clone()) {
            p.at_item("heartbeats", &raw.name, None, "declared twice");
        }
        if raw.interval_s == 0 {
            p.at_item(
                "heartbeats",
                &raw.name,
                Some("interval_s"),
                "must be greater than 0",
            );
        }
        let signal = match (&raw.matchers, &raw.source) {
            (Some(m), None) => match LabelMatchers::parse(m) {
                Ok(m) if !m.is_empty() => Some(Signal::Alert(m)),
                Ok(_) => {
                    p.at_item(
                        "heartbeats",
                        &raw.name,
                        Some("match"),
                        "needs at least one matcher",
                    );
                    None
                }
                Err(errors) => {
                    for (_, e) in errors {
                        p.at_item("heartbeats", &raw.name, Some("match"), e);
                    }
                    None
                }
            },
            (None, Some(s)) => {
                if s.kind.is_empty() || s.name.is_empty() {
                    p.at_item(
                        "heartbeats",
                        &raw.name,
                        Some("source"),
                        "kind and name must not be empty",
                    );
                }
                Some(Signal::Activity {
                    kind: s.kind.clone(),
                    name: s.name.clone(),
                })
            }
            _ => {
                p.at_item(
                    "heartbeats",
                    &raw.name,
                    None,
                    "give either `match` (an always-firing alert) or `source` (activity)",
                );
                None
            }
        };
        let mut level = |field: &str, v: &str| {
            Level::parse(v).or_else(|| {
                p.at_item(
                    "heartbeats",
                    &raw.name,
                    Some(field),
                    format!("must be high, medium or low, not {v:?}"),
                );
                None
            })
        };
        let (impact, urgency) = (level("impact", &raw.impact), level("urgency", &raw.urgency));
        for r in &raw.route {
            if !adapters.contains(&r.as_str()) {
                p.at_item(
                    "heartbeats",
                    &raw.name,
                    Some("route"),
                    format!("{r:?} is not an adapter under adapters:"),
                );
            }
        }
        if p.len() != before {
            continue;
        }
        if let (Some(signal), Some(impact), Some(urgency)) = (signal, impact, urgency) {
            out.push(Arc::new(HeartbeatSpec {
                name: raw.name.clone(),
                signal,
                interval_s: raw.interval_s,
                title: raw
                    .title
                    .clone()
                    .unwrap_or_else(|| format!("monitoring pipeline silent: {}", raw.name)),
                impact,
                urgency,
                assignment_group: raw.assignment_group.clone(),
                service: raw.service.clone(),
                route: raw.route.clone(),
            }));
        }
    }
    out
}

/// The heartbeats of one daemon (or simulation), over its engine's store.
pub struct Heartbeats {
    specs: Vec<Arc<HeartbeatSpec>>,
    engine: Arc<Engine>,
    /// When this instance started watching: a heartbeat not seen since counts
    /// from here. Unset: the first time it is asked (a simulation starts at
    /// its first event).
    started: OnceLock<DateTime<Utc>>,
    /// Last activity written to the store, per heartbeat (throttling).
    written: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl Heartbeats {
    pub fn new(
        specs: Vec<Arc<HeartbeatSpec>>,
        engine: Arc<Engine>,
        started: Option<DateTime<Utc>>,
    ) -> Self {
        let cell = OnceLock::new();
        if let Some(t) = started {
            let _ = cell.set(t);
        }
        Heartbeats {
            specs,
            engine,
            started: cell,
            written: Mutex::new(HashMap::new()),
        }
    }

    fn started(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        *self.started.get_or_init(|| now)
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Takes the heartbeat alerts out of a batch (recording the firing ones)
    /// and returns the rest, which go on to the rules.
    pub async fn take_alerts(
        &self,
        alerts: Vec<Alert>,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Alert>, usize), StoreError> {
        self.started(now);
        let mut rest = Vec::with_capacity(alerts.len());
        let mut seen: BTreeMap<&str, bool> = BTreeMap::new();
        let mut taken = 0;
        for alert in alerts {
            let hit = self.specs.iter().find(|s| match &s.signal {
                Signal::Alert(m) => m.matches(&alert.labels),
                Signal::Activity { .. } => false,
            });
            match hit {
                Some(spec) => {
                    taken += 1;
                    // A resolved Watchdog means its sender says it stopped:
                    // that proves nothing is alive.
                    let firing = alert.status == Status::Firing;
                    let e = seen.entry(spec.name.as_str()).or_default();
                    *e |= firing;
                }
                None => rest.push(alert),
            }
        }
        for (name, firing) in seen {
            if firing {
                self.engine.store().heartbeat_seen(name, now).await?;
            }
        }
        Ok((rest, taken))
    }

    /// A source saw activity: `kind` (`webhook`, `kafka`, ...) and `name` (the
    /// endpoint, the topic). Cheap when no heartbeat watches it; store errors
    /// are logged, not returned, so a source never fails on them.
    pub async fn observe_activity(&self, kind: &str, name: &str, now: DateTime<Utc>) {
        self.started(now);
        for spec in &self.specs {
            let Signal::Activity { kind: k, name: n } = &spec.signal else {
                continue;
            };
            if k != kind || n != name {
                continue;
            }
            let due = {
                let Ok(mut written) = self.written.lock() else {
                    continue;
                };
                let last = written.get(&spec.name).copied();
                if last.is_some_and(|l| (now - l).num_seconds() < ACTIVITY_WRITE_EVERY_S) {
                    false
                } else {
                    written.insert(spec.name.clone(), now);
                    true
                }
            };
            if due && let Err(e) = self.engine.store().heartbeat_seen(&spec.name, now).await {
                tracing::warn!(heartbeat = %spec.name, error = %e, "heartbeat activity not recorded");
            }
        }
    }

    /// Opens an incident for each heartbeat overdue at `now`, and resolves the
    /// incident of each that has come back.
    pub async fn check(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        if self.specs.is_empty() {
            return Ok(());
        }
        let started = self.started(now);
        let seen = self.engine.store().heartbeats_seen().await?;
        for spec in &self.specs {
            let last = seen.get(&spec.name).copied();
            let interval = chrono::Duration::seconds(spec.interval_s as i64);
            let since = last.map_or(started, |l| l.max(started));
            let overdue_at = since + interval;
            let key = key(&spec.name);
            let silent = overdue_at <= now;
            self.engine
                .metrics()
                .incidents
                .heartbeat_silent
                .with_label_values(&[&spec.name])
                .set(i64::from(silent));
            if silent {
                let inc = self.silent_incident(spec, last, started, overdue_at);
                if let Some(opened) = self.engine.open_unless_open(inc, &key).await? {
                    tracing::warn!(heartbeat = %spec.name, incident = %opened.id, "heartbeat silent");
                }
                continue;
            }
            // Back: resolve its open incident, if the heartbeat was seen after
            // the silence began (an instance that just started is not silent
            // yet, but must not resolve what another instance saw).
            let Some(last) = last else {
                continue;
            };
            let found = self
                .engine
                .store()
                .find_incidents(&rule(&spec.name), &key, &[])
                .await?;
            let Some(inc) = found.slot.as_ref().and_then(|id| found.incidents.get(id)) else {
                continue;
            };
            if inc.state.is_open() && last > inc.created_at - interval {
                let by = format!("heartbeat {} ({} seen again)", spec.name, spec.what());
                match self
                    .engine
                    .resolve(&inc.id, &by, last.max(inc.created_at))
                    .await
                {
                    Ok(_) | Err(EngineError::NotFound(_) | EngineError::Invalid(_)) => {}
                    Err(EngineError::Store(e)) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn silent_incident(
        &self,
        spec: &HeartbeatSpec,
        last: Option<DateTime<Utc>>,
        started: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Incident {
        let rules = self.engine.rules();
        let last_seen = match last {
            Some(t) if t >= started => format!("last seen {}", t.to_rfc3339()),
            Some(t) => format!(
                "last seen {} (before this instance started at {})",
                t.to_rfc3339(),
                started.to_rfc3339()
            ),
            None => format!("never seen since {}", started.to_rfc3339()),
        };
        let description = format!(
            "No {} for {}s ({last_seen}): alerts may not be reaching incidentd.",
            spec.what(),
            spec.interval_s
        );
        let mut inc = Incident {
            id: format!("inc-{}", uuid::Uuid::now_v7().simple()),
            title: spec.title.clone(),
            description: description.clone(),
            state: IncidentState::New,
            priority: rules.priority(spec.impact, spec.urgency),
            impact: spec.impact,
            urgency: spec.urgency,
            category: Some("monitoring".into()),
            subcategory: Some("heartbeat".into()),
            assignment_group: spec.assignment_group.clone(),
            service: spec.service.clone(),
            configuration_items: Vec::new(),
            major: false,
            alert_count: 0,
            rule: rule(&spec.name),
            correlation_key: key(&spec.name),
            created_at: at,
            updated_at: at,
            resolved_at: None,
            closed_at: None,
            reopen_count: 0,
            external_refs: Default::default(),
            closed_by: None,
            related: Vec::new(),
            route: spec.route.clone(),
            topology: Default::default(),
            alerts: Vec::new(),
            timeline: Vec::new(),
            timeline_dropped: 0,
            timeline_stored: 0,
            alerts_stored: Default::default(),
            last_activity: at,
            all_resolved_since: None,
            flapping: false,
            flap_policy: None,
            sla: None,
            policy: Policy {
                window_s: 0,
                // Resolved by the heartbeat's return, not by alerts.
                auto_resolve: false,
                resolve_after_s: 0,
                reopen_within_s: 0,
                close_after_s: 86_400,
            },
            version: 0,
        };
        self.engine.prepare_new(&mut inc, None);
        inc.flap_policy = None;
        inc.push_timeline(
            at,
            "created",
            format!("heartbeat {}: {description}", spec.name),
        );
        inc
    }
}

/// The rule name heartbeat incidents carry.
pub fn rule(name: &str) -> String {
    format!("heartbeat:{name}")
}

fn key(name: &str) -> String {
    format!("heartbeat|{name}")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{DateTime, TimeZone, Utc};

    use super::*;
    use crate::incident::engine::Engine;
    use crate::metrics::Metrics;
    use crate::rules::RuleSet;
    use crate::store::SharedStore;
    use crate::store::memory::MemoryStore;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn specs() -> Vec<Arc<HeartbeatSpec>> {
        let raw: Vec<RawHeartbeat> = serde_norway::from_str(
            "- name: kafka-alerts\n  source: {kind: kafka, name: alerts}\n  interval_s: 600\n",
        )
        .unwrap();
        let mut p = Problems::new(std::path::Path::new("c.yaml"), "");
        let specs = validate(&raw, &[], &mut p);
        assert!(p.is_empty());
        specs
    }

    /// An instance (its own engine and heartbeats) on a shared store.
    fn instance(store: &SharedStore, started: DateTime<Utc>) -> Heartbeats {
        let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
        let engine = Arc::new(Engine::new(
            store.clone(),
            Arc::new(RuleSet::empty()),
            metrics,
        ));
        Heartbeats::new(specs(), engine, Some(started))
    }

    async fn open(store: &SharedStore) -> Vec<Incident> {
        store
            .list_incidents(&crate::incident::IncidentQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn instances_share_last_seen_and_a_fresh_one_resolves_only_a_real_return() {
        let store: SharedStore = Arc::new(MemoryStore::new(std::time::Duration::from_secs(3600)));
        let a = instance(&store, t(0));
        a.observe_activity("kafka", "alerts", t(60)).await;
        a.check(t(600)).await.unwrap();
        assert!(open(&store).await.is_empty(), "seen at 60s: due at 660s");
        a.check(t(661)).await.unwrap();
        let incidents = open(&store).await;
        assert_eq!(incidents.len(), 1);
        assert_eq!(incidents[0].created_at, t(660));
        // A second instance starting now is not silent yet, and must not take
        // its own fresh start for the heartbeat's return.
        let b = instance(&store, t(700));
        b.check(t(710)).await.unwrap();
        a.check(t(710)).await.unwrap();
        assert_eq!(open(&store).await[0].state, IncidentState::New);
        // Activity seen by B resolves the incident A opened, at that time; one
        // incident however many instances check.
        b.observe_activity("kafka", "alerts", t(720)).await;
        a.check(t(721)).await.unwrap();
        b.check(t(721)).await.unwrap();
        let incidents = open(&store).await;
        assert_eq!(incidents.len(), 1);
        assert_eq!(incidents[0].state, IncidentState::Resolved);
        assert_eq!(incidents[0].resolved_at, Some(t(720)));
    }

    #[tokio::test]
    async fn the_open_incident_gauge_counts_from_the_store() {
        let store: SharedStore = Arc::new(MemoryStore::new(std::time::Duration::from_secs(3600)));
        let a = instance(&store, t(0));
        a.check(t(601)).await.unwrap();
        let m =
            crate::incident::metrics::IncidentMetrics::new(&prometheus::Registry::new()).unwrap();
        crate::incident::metrics::refresh(&store, &m).await.unwrap();
        // Impact high, urgency high (the defaults): priority 1.
        assert_eq!(m.open.with_label_values(&["1"]).get(), 1);
        assert_eq!(m.open.with_label_values(&["3"]).get(), 0);
    }
}
