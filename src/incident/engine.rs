//! Runs the rules and the lifecycle over the state store.
//!
//! Every incident write is optimistic: read, compute the next incident with the
//! pure [`lifecycle`] functions, commit only if nobody changed it meanwhile
//! (version and correlation slot are checked atomically by the store), else read
//! again. That is how two daemon instances receiving the same storm open one
//! incident per correlation key.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;

use chrono::{DateTime, Utc};

use super::flapping::FlapDefaults;
use super::lifecycle::{self, Step};
use super::major::{self, MajorPolicy};
use super::sla::{self, SlaPolicy};
use super::{Incident, IncidentState};
use crate::alert::{Alert, Status};
use crate::metrics::Metrics;
use crate::rules::{Action, Decision, IncidentSpec, RuleSet};
use crate::store::{Explain, ExplainRule, IncidentCommit, Outcome, SharedStore, StoreError};
use crate::topology::Topology;

/// Reads-and-retries before an incident write gives up (and the request gets 503).
pub(crate) const MAX_ATTEMPTS: u32 = 32;
/// Upper bound of the random pause before a retry.
const MAX_BACKOFF_MS: u64 = 50;
/// Correlation groups of one batch written at once.
const GROUP_CONCURRENCY: usize = 16;
/// A repeat of an alert whose processing is more recent than this, and whose
/// rules have not changed since, is not processed again: repeats are the bulk
/// of a storm and change nothing but the incident's activity time.
const REPEAT_REFRESH_S: i64 = 30;
/// A repeat processed in full longer ago than this is processed in full again
/// rather than only touching its incidents: that renews what a full pass
/// renews (the alert's membership keys, which expire after 30 days; its
/// explanation; a topology merge left unfinished; a changed rule's spec under
/// the same name), so none of it waits for the alert's next status change.
const REPEAT_TOUCH_MAX_S: i64 = 3600;
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
    /// Adapters every new incident is routed to, besides its rule's route.
    route_all_to: Vec<String>,
    rules: RwLock<Arc<RuleSet>>,
    metrics: Arc<Metrics>,
    /// Flap detection for rules that do not say otherwise.
    flapping: FlapDefaults,
    /// SLA targets and escalation, applied to every new incident.
    sla: SlaPolicy,
    /// The services file, when the config names one.
    topology: Option<Arc<Topology>>,
    major: MajorPolicy,
}

/// One recorded alert of a batch, with its rules' decisions.
pub struct Item<'a> {
    pub alert: &'a Alert,
    pub decisions: &'a [Decision],
    pub outcome: Outcome,
    /// Its explanation from the last time it was processed (repeats only).
    pub previous: Option<&'a Explain>,
}

/// Alerts of a batch with one rule and correlation key: (item, explain entry).
struct Group {
    rule: Arc<str>,
    spec: Arc<IncidentSpec>,
    key: String,
    members: Vec<(usize, usize)>,
}

/// A repeat's explanation from the last time it was processed, and how many
/// seconds ago that was, when it was made under the rules that match it now
/// (the same names, in the same order).
fn explained_repeat<'a>(item: &Item<'a>, now: DateTime<Utc>) -> Option<(&'a Explain, i64)> {
    let (Outcome::Duplicate { .. }, Some(prev)) = (item.outcome, item.previous) else {
        return None;
    };
    let same_rules = prev.rules.len() == item.decisions.len()
        && prev
            .rules
            .iter()
            .zip(item.decisions)
            .all(|(e, d)| e.rule == *d.rule);
    same_rules.then(|| (prev, (now - prev.at).num_seconds()))
}

/// What an alert's last processing leaves for this batch to do with it.
enum Repeat<'a> {
    /// A repeat processed recently under the same rules, into incidents:
    /// nothing.
    Explained,
    /// A repeat that joined these incidents when last processed, less than
    /// [`REPEAT_TOUCH_MAX_S`] ago, under the same rules, and is not held by a
    /// maintenance window now: moving their activity time is all that
    /// processing it again would do while they stay open.
    Touch(Vec<&'a str>),
    /// Everything else: process it in full.
    Process,
}

fn repeat<'a>(rules: &RuleSet, item: &Item<'a>, now: DateTime<Utc>) -> Repeat<'a> {
    let Some((prev, age)) = explained_repeat(item, now) else {
        return Repeat::Process;
    };
    if age < REPEAT_REFRESH_S
        && prev
            .rules
            .iter()
            .all(|e| e.action != "incident" || e.incident_id.is_some())
    {
        return Repeat::Explained;
    }
    if age >= REPEAT_TOUCH_MAX_S {
        return Repeat::Process;
    }
    let ids = prev
        .rules
        .iter()
        .zip(item.decisions)
        .filter(|(_, d)| matches!(d.action, Action::Incident(_)))
        .map(|(e, _)| e.incident_id.as_deref().filter(|_| e.action == "incident"))
        .collect::<Option<Vec<&str>>>();
    let held =
        item.alert.status == Status::Firing && rules.maintenance_at(item.alert, now).is_some();
    match ids {
        Some(ids) if !ids.is_empty() && !held => Repeat::Touch(ids),
        _ => Repeat::Process,
    }
}

/// What correlating one alert did, for the explanation.
enum Correlated {
    Nothing,
    Opened(String),
    Joined(String, IncidentState),
}

/// An alert of a batch on the topology path: (item, explain entry, rule, spec, key).
type TopologyItem = (usize, usize, Arc<str>, Arc<IncidentSpec>, String);

impl Engine {
    pub fn new(store: SharedStore, rules: Arc<RuleSet>, metrics: Arc<Metrics>) -> Self {
        metrics.rules_loaded.set(rules.len() as i64);
        Engine {
            store,
            after_manual_close: lifecycle::AfterManualClose::default(),
            route_all_to: Vec::new(),
            rules: RwLock::new(rules),
            metrics,
            flapping: FlapDefaults::default(),
            sla: SlaPolicy::default(),
            topology: None,
            major: MajorPolicy::default(),
        }
    }

    /// Flap detection for rules without their own `flapping:`, and the values
    /// rules that have one inherit.
    pub fn with_flapping(mut self, defaults: FlapDefaults) -> Self {
        self.flapping = defaults;
        self
    }

    /// SLA targets and escalation for new incidents.
    pub fn with_sla(mut self, policy: SlaPolicy) -> Self {
        self.sla = policy;
        self
    }

    /// Settles what a new incident takes from the daemon config: the extra
    /// routes, flap detection (the rule's `flapping:` over the config's) and
    /// its SLA. Sources of incidents outside the rules (heartbeats) call it too.
    pub fn prepare_new(
        &self,
        inc: &mut Incident,
        flapping: Option<&super::flapping::FlapSettings>,
    ) {
        for adapter in &self.route_all_to {
            if !inc.route.contains(adapter) {
                inc.route.push(adapter.clone());
            }
        }
        inc.flap_policy = match flapping {
            Some(own) => own.over(&self.flapping),
            None => self.flapping.policy(),
        };
        inc.sla = self.sla.start(inc);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Correlates alerts of the services in `topology` along their dependencies.
    pub fn with_topology(mut self, topology: Option<Arc<Topology>>) -> Self {
        self.topology = topology;
        self
    }

    /// The daemon-wide major-incident condition and route.
    pub fn with_major(mut self, major: MajorPolicy) -> Self {
        self.major = major;
        self
    }

    pub(crate) fn topology(&self) -> Option<Arc<Topology>> {
        self.topology.clone()
    }

    pub(crate) fn major(&self) -> &MajorPolicy {
        &self.major
    }

    pub(crate) fn after_manual_close(&self) -> lifecycle::AfterManualClose {
        self.after_manual_close
    }

    /// What an alert does to an incident a person closed in an ITSM platform.
    pub fn with_after_manual_close(mut self, policy: lifecycle::AfterManualClose) -> Self {
        self.after_manual_close = policy;
        self
    }

    /// Routes every new incident to these adapters too.
    pub fn with_route_all_to(mut self, adapters: Vec<String>) -> Self {
        self.route_all_to = adapters;
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

    /// Takes a recorded batch through its rules' decisions: alerts are grouped
    /// by (rule, correlation key), each group is read and written once per
    /// incident it touches, groups run concurrently, and the explanations are
    /// written in one round trip.
    pub async fn process_batch(
        &self,
        rules: &RuleSet,
        items: &[Item<'_>],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let handled = self.handle_repeats(rules, items, now).await?;
        // Per alert: its explanation entries, some waiting for a group's result.
        let mut explained: Vec<Option<Vec<ExplainRule>>> = vec![None; items.len()];
        let mut groups: Vec<Group> = Vec::new();
        // Placed per rule and key, in arrival order, after the groups.
        let mut topology_items: Vec<TopologyItem> = Vec::new();
        let mut group_of: HashMap<(Arc<str>, String), usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            if item.outcome == Outcome::Stale || handled[i] {
                continue;
            }
            let alert = item.alert;
            let maintenance = rules.maintenance_at(alert, now);
            let mut entries = Vec::with_capacity(item.decisions.len());
            for d in item.decisions {
                let (action, key, result) = match &d.action {
                    Action::Drop => ("drop", None, "dropped".to_string()),
                    Action::Suppress => (
                        "suppress",
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
                                ("incident", Some(key), result)
                            }
                            _ if self.takes_topology_path(rules, &d.rule, spec, alert) => {
                                topology_items.push((
                                    i,
                                    entries.len(),
                                    d.rule.clone(),
                                    spec.clone(),
                                    key.clone(),
                                ));
                                ("incident", Some(key), String::new())
                            }
                            _ => {
                                let g = *group_of
                                    .entry((d.rule.clone(), key.clone()))
                                    .or_insert_with(|| {
                                        groups.push(Group {
                                            rule: d.rule.clone(),
                                            spec: spec.clone(),
                                            key: key.clone(),
                                            members: Vec::new(),
                                        });
                                        groups.len() - 1
                                    });
                                groups[g].members.push((i, entries.len()));
                                ("incident", Some(key), String::new())
                            }
                        }
                    }
                };
                entries.push(ExplainRule {
                    rule: d.rule.to_string(),
                    action: action.to_string(),
                    correlation_key: key,
                    incident_id: None,
                    result,
                });
            }
            explained[i] = Some(entries);
        }

        let work: Vec<_> = groups
            .iter()
            .map(|g| {
                let alerts: Vec<&Alert> = g.members.iter().map(|(i, _)| items[*i].alert).collect();
                self.correlate_group(&g.rule, &g.spec, &g.key, alerts, now)
            })
            .collect();
        let results: Vec<Result<Vec<Correlated>, StoreError>> = futures_util::stream::iter(work)
            .buffered(GROUP_CONCURRENCY)
            .collect()
            .await;
        for (g, result) in groups.iter().zip(results) {
            for (&(i, slot), outcome) in g.members.iter().zip(result?) {
                if let Some(entry) = explained[i].as_mut().and_then(|e| e.get_mut(slot)) {
                    let (id, result) = match outcome {
                        Correlated::Nothing => {
                            (None, "no open incident for this resolved alert".to_string())
                        }
                        Correlated::Opened(id) => {
                            (Some(id.clone()), format!("opened incident {id}"))
                        }
                        Correlated::Joined(id, state) => (
                            Some(id.clone()),
                            format!("correlated into incident {id} (now {})", state.as_str()),
                        ),
                    };
                    entry.incident_id = id;
                    entry.result = result;
                }
            }
        }
        // Topology and inhibition: per rule and key, in order of arrival.
        let mut topology_groups: Vec<(&TopologyItem, Vec<&TopologyItem>)> = Vec::new();
        for t in &topology_items {
            match topology_groups
                .iter_mut()
                .find(|(first, _)| first.2 == t.2 && first.4 == t.4)
            {
                Some((_, members)) => members.push(t),
                None => topology_groups.push((t, vec![t])),
            }
        }
        // Groups that may consult a common slot are placed one after the other
        // in arrival order (a critical before its warning inhibits it, say);
        // chains sharing no slot run concurrently, as a storm over many
        // services would otherwise cost a few round trips per group in series.
        let prepared: Vec<(Vec<&Alert>, Vec<String>)> = topology_groups
            .iter()
            .map(|(first, members)| {
                let alerts: Vec<&Alert> = members.iter().map(|t| items[t.0].alert).collect();
                let slots = self.slots_to_read(rules, &first.2, &first.3, &first.4, &alerts);
                (alerts, slots)
            })
            .collect();
        let chains = chains_sharing_slots(prepared.iter().map(|(_, slots)| slots.as_slice()));
        let work = chains.into_iter().map(|chain| {
            let (groups, prepared) = (&topology_groups, &prepared);
            async move {
                let mut placed = Vec::with_capacity(chain.len());
                for g in chain {
                    let (first, _) = &groups[g];
                    let (alerts, slots) = &prepared[g];
                    let p = self
                        .correlate_topology(rules, &first.2, &first.3, &first.4, alerts, slots, now)
                        .await?;
                    placed.push((g, p));
                }
                Ok::<_, StoreError>(placed)
            }
        });
        let chained: Vec<Result<Vec<_>, StoreError>> = futures_util::stream::iter(work)
            .buffer_unordered(GROUP_CONCURRENCY)
            .collect()
            .await;
        for chain in chained {
            for (g, placed) in chain? {
                for (t, (id, result)) in topology_groups[g].1.iter().zip(placed) {
                    if let Some(entry) = explained[t.0].as_mut().and_then(|e| e.get_mut(t.1)) {
                        entry.incident_id = id;
                        entry.result = result;
                    }
                }
            }
        }

        // Resolved alerts, in incidents their rules no longer lead to: one
        // lookup each, all at once rather than one after the other.
        let elsewhere = items.iter().zip(&explained).filter_map(|(item, entries)| {
            let entries = entries.as_ref()?;
            (item.alert.status == Status::Resolved)
                .then(|| self.resolve_elsewhere(item.alert, entries, now))
        });
        futures_util::future::try_join_all(elsewhere).await?;
        let mut writes = Vec::new();
        for (item, entries) in items.iter().zip(explained) {
            let Some(entries) = entries else {
                continue;
            };
            let summary = match entries.first() {
                None => "no rule matched".to_string(),
                Some(first) if entries.len() == 1 => {
                    format!("rule {}: {}", first.rule, first.result)
                }
                Some(_) => entries
                    .iter()
                    .map(|e| format!("rule {}: {}", e.rule, e.result))
                    .collect::<Vec<_>>()
                    .join("; "),
            };
            writes.push((
                item.alert.fingerprint.clone(),
                Explain {
                    at: now,
                    summary,
                    rules: entries,
                },
            ));
        }
        self.store.set_explains(&writes).await
    }

    /// Repeats processed within [`REPEAT_REFRESH_S`] need nothing; older
    /// ones whose incidents are all still open only move those incidents'
    /// activity time, in one store call for the batch instead of a read and a
    /// write of each incident: with alerts re-sent every few minutes, that is
    /// most of what a busy incident sees. Per item, whether it is handled so
    /// (its explanation is kept as it was; the rest are processed in full).
    async fn handle_repeats(
        &self,
        rules: &RuleSet,
        items: &[Item<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, StoreError> {
        let repeats: Vec<Repeat> = items.iter().map(|item| repeat(rules, item, now)).collect();
        let mut ids: Vec<String> = repeats
            .iter()
            .filter_map(|r| match r {
                Repeat::Touch(ids) => Some(ids),
                _ => None,
            })
            .flatten()
            .map(|id| id.to_string())
            .collect();
        let explained = |r: &Repeat| matches!(r, Repeat::Explained);
        if ids.is_empty() {
            return Ok(repeats.iter().map(explained).collect());
        }
        ids.sort_unstable();
        ids.dedup();
        let open = self.store.touch_incidents(&ids, now).await?;
        let open: std::collections::HashSet<&str> = ids
            .iter()
            .zip(open)
            .filter_map(|(id, open)| open.then_some(id.as_str()))
            .collect();
        let mut touched = 0;
        let handled = repeats
            .iter()
            .map(|r| match r {
                Repeat::Touch(ids) if ids.iter().all(|id| open.contains(id)) => {
                    touched += 1;
                    true
                }
                r => explained(r),
            })
            .collect();
        self.metrics.alert_repeats_touched.inc_by(touched);
        Ok(handled)
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

    /// Applies a group of alerts (one rule, one correlation key, in arrival
    /// order) to the incidents they belong to, reading once and writing each
    /// touched incident once; retried from the start on a conflict.
    async fn correlate_group(
        &self,
        rule: &str,
        spec: &IncidentSpec,
        key: &str,
        alerts: Vec<&Alert>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Correlated>, StoreError> {
        let fps: Vec<&str> = alerts.iter().map(|a| a.fingerprint.as_str()).collect();
        'attempt: for attempt in 0..MAX_ATTEMPTS {
            let found = self.store.find_incidents(rule, key, &fps).await?;
            // The incidents as this attempt changes them, each copied from
            // `found` when first touched: `found` stays as read, to compare with.
            let mut current: HashMap<String, Incident> = HashMap::new();
            let mut slot = found.slot.clone();
            let mut created: Vec<String> = Vec::new();
            let mut joined: HashMap<String, Vec<&str>> = HashMap::new();
            let mut results = Vec::with_capacity(alerts.len());
            for (alert, member) in alerts.iter().zip(&found.members) {
                // The incident the alert already belongs to (unless closed), else
                // the one the key points at now.
                let view = |id: &String| current.get(id).or_else(|| found.incidents.get(id));
                let target_id = member
                    .as_ref()
                    .filter(|id| view(id).is_some_and(|i| i.state != IncidentState::Closed))
                    .or(slot.as_ref())
                    .cloned();
                let mut target = target_id.and_then(|id| {
                    current
                        .remove(&id)
                        .or_else(|| found.incidents.get(&id).cloned())
                });
                let step = lifecycle::on_alert(
                    &mut target,
                    rule,
                    spec,
                    key,
                    alert,
                    now,
                    self.after_manual_close,
                    new_id,
                );
                // Not changed by this alert: back in its place.
                if let Some(untouched) = target {
                    current.insert(untouched.id.clone(), untouched);
                }
                let (inc, opened) = match step {
                    Step::Nothing => {
                        results.push(Correlated::Nothing);
                        continue;
                    }
                    Step::Create(mut inc) => {
                        self.prepare_new(&mut inc, spec.flapping.as_ref());
                        (*inc, true)
                    }
                    Step::Update(inc) => (*inc, false),
                };
                let mut inc = inc;
                major::apply(&mut inc, &self.major, spec.major.as_ref(), now);
                let id = inc.id.clone();
                results.push(if opened {
                    Correlated::Opened(id.clone())
                } else {
                    Correlated::Joined(id.clone(), inc.state)
                });
                if opened {
                    slot = Some(id.clone());
                    created.push(id.clone());
                }
                joined
                    .entry(id.clone())
                    .or_default()
                    .push(alert.fingerprint.as_str());
                current.insert(id, inc);
            }
            for (id, fps) in &joined {
                let before = found.incidents.get(id);
                let Some(mut inc) = current.remove(id) else {
                    continue;
                };
                if before == Some(&inc) {
                    continue;
                }
                let expected = before.map_or(0, |b| b.version);
                inc.version = expected + 1;
                let event = change_event(before, &inc);
                let members: Vec<(&str, &str)> = fps.iter().map(|fp| (rule, *fp)).collect();
                // Only the newest incident opened here takes the key over.
                let binds = created.last() == Some(id);
                let commit = IncidentCommit {
                    incident: &inc,
                    expected_version: expected,
                    bind: binds.then_some((key, found.slot.as_deref())),
                    members: &members,
                    due: lifecycle::next_due(&inc),
                    outbox_event: event.filter(|_| !inc.route.is_empty()),
                    slots: &[],
                };
                if !self.store.commit_incident(&commit).await? {
                    // Somebody else changed one of them: read again and redo the
                    // group; what was committed already is re-applied as a no-op.
                    self.conflict(attempt).await;
                    continue 'attempt;
                }
                self.count_change(event);
                self.observe_change(before, &inc, event);
            }
            return Ok(results);
        }
        Err(StoreError::Unavailable(format!(
            "incident for {key}: gave up after {MAX_ATTEMPTS} concurrent updates"
        )))
    }

    /// Another writer won the race for an incident: count it, and pause a
    /// random, growing while (full jitter) so a storm on one key does not turn
    /// into writers retrying in lockstep.
    pub(crate) async fn conflict(&self, attempt: u32) {
        self.metrics.incident_conflicts.inc();
        let cap = (1u64 << attempt.min(6)).min(MAX_BACKOFF_MS);
        tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(0..=cap))).await;
    }

    pub(crate) fn count_change(&self, event: Option<&str>) {
        if let Some(event) = event {
            self.metrics
                .incident_changes
                .with_label_values(&[event])
                .inc();
        }
    }

    /// The incident metrics a committed change feeds: time to acknowledge and
    /// to resolve, alerts per incident, SLA breaches, alerts starting to flap.
    /// Each instance counts the changes it committed, so sums over instances
    /// are right.
    pub(crate) fn observe_change(
        &self,
        before: Option<&Incident>,
        after: &Incident,
        event: Option<&str>,
    ) {
        let m = &self.metrics.incidents;
        let priority = after.priority.to_string();
        let since_created =
            |at: DateTime<Utc>| (at - after.created_at).num_milliseconds() as f64 / 1000.0;
        match event {
            Some("acknowledged")
                if after.state == IncidentState::InProgress
                    && before.is_some_and(|b| b.state == IncidentState::New) =>
            {
                m.time_to_acknowledge
                    .with_label_values(&[&priority])
                    .observe(since_created(after.updated_at));
            }
            // The first resolution only: a reopened incident is not counted twice.
            Some("resolved") if after.reopen_count == 0 => {
                let at = after.resolved_at.unwrap_or(after.updated_at);
                m.time_to_resolve
                    .with_label_values(&[&priority])
                    .observe(since_created(at));
                m.alerts_per_incident.observe(after.alert_count as f64);
            }
            _ => {}
        }
        for kind in sla::new_breaches(before, after) {
            m.sla_breaches.with_label_values(&[kind]).inc();
        }
        // The timeline only grows at its end (dropping from its front past
        // MAX_TIMELINE), so the entries this write added are its last ones:
        // count those instead of the whole timeline twice, which also stays
        // right once entries are dropped.
        let appended = |i: &Incident| i.timeline_dropped + i.timeline.len() as u64;
        let added = appended(after).saturating_sub(before.map_or(0, appended));
        let started = after
            .timeline
            .iter()
            .rev()
            .take(usize::try_from(added).unwrap_or(usize::MAX))
            .filter(|e| e.event == "flapping_started")
            .count();
        if started > 0 {
            m.flapping_started.inc_by(started as u64);
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
            let item = Item {
                alert: &alert,
                decisions: &decisions,
                outcome: Outcome::Duplicate { count: state.count },
                // Processed afresh: the window that held it has ended.
                previous: None,
            };
            self.process_batch(&rules, std::slice::from_ref(&item), released_at)
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
            // An acknowledgement or resolution stops the response timer; one
            // that came after a deadline no tick saw is still a breach.
            sla::observe(&mut next);
            sla::tick(&mut next, now, None);
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
                members: &[],
                due,
                outbox_event: event.filter(|_| !next.route.is_empty()),
                slots: &[],
            };
            if self.store.commit_incident(&commit).await? {
                self.count_change(event);
                self.observe_change(Some(&before), &next, event);
                return Ok(next);
            }
            self.conflict(attempt).await;
        }
        Err(EngineError::Store(StoreError::Unavailable(format!(
            "incident {id}: gave up after {MAX_ATTEMPTS} concurrent updates"
        ))))
    }

    /// Opens `inc` (a new incident built outside the rules, e.g. a silent
    /// heartbeat) under correlation key `key`, unless the key already points
    /// at an open incident. Returns the incident opened, if one was.
    pub async fn open_unless_open(
        &self,
        mut inc: Incident,
        key: &str,
    ) -> Result<Option<Incident>, StoreError> {
        for attempt in 0..MAX_ATTEMPTS {
            let found = self.store.find_incidents(&inc.rule, key, &[]).await?;
            if let Some(id) = &found.slot
                && found.incidents.get(id).is_some_and(|i| i.state.is_open())
            {
                return Ok(None);
            }
            inc.version = 1;
            let commit = IncidentCommit {
                incident: &inc,
                expected_version: 0,
                bind: Some((key, found.slot.as_deref())),
                members: &[],
                due: lifecycle::next_due(&inc),
                outbox_event: Some("created").filter(|_| !inc.route.is_empty()),
                slots: &[],
            };
            if self.store.commit_incident(&commit).await? {
                self.count_change(Some("created"));
                self.observe_change(None, &inc, Some("created"));
                return Ok(Some(inc));
            }
            self.conflict(attempt).await;
        }
        Err(StoreError::Unavailable(format!(
            "incident for {key}: gave up after {MAX_ATTEMPTS} concurrent updates"
        )))
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
/// Partitions groups (given the slots each may consult) into chains: groups
/// sharing a slot, directly or through others, are in one chain, in their
/// original order.
fn chains_sharing_slots<'a>(slots: impl Iterator<Item = &'a [String]>) -> Vec<Vec<usize>> {
    fn root(parent: &mut [usize], mut g: usize) -> usize {
        while parent[g] != g {
            parent[g] = parent[parent[g]];
            g = parent[g];
        }
        g
    }
    let mut parent: Vec<usize> = Vec::new();
    let mut first_user: HashMap<&str, usize> = HashMap::new();
    for (g, keys) in slots.enumerate() {
        parent.push(g);
        for k in keys {
            match first_user.get(k.as_str()) {
                Some(&other) => {
                    let (a, b) = (root(&mut parent, g), root(&mut parent, other));
                    // The earlier group stays the root, so chains keep arrival order.
                    parent[a.max(b)] = a.min(b);
                }
                None => {
                    first_user.insert(k, g);
                }
            }
        }
    }
    let mut chains: Vec<Vec<usize>> = Vec::new();
    let mut chain_of: HashMap<usize, usize> = HashMap::new();
    for g in 0..parent.len() {
        let r = root(&mut parent, g);
        let c = *chain_of.entry(r).or_insert_with(|| {
            chains.push(Vec::new());
            chains.len() - 1
        });
        chains[c].push(g);
    }
    chains
}

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
    (!same_for_tickets(before, after)).then_some("updated")
}

/// Whether two versions of an incident differ only in what no ticket shows
/// (its activity time, version and ticket references). Field by field rather
/// than on a copy with those fields made equal: a storm incident's copy is
/// its hundreds of alerts, and this runs on every write. The destructuring
/// names every field, so a new one must be placed here to compile.
fn same_for_tickets(before: &Incident, after: &Incident) -> bool {
    let Incident {
        id,
        title,
        description,
        state,
        priority,
        impact,
        urgency,
        category,
        subcategory,
        assignment_group,
        service,
        configuration_items,
        major,
        alert_count,
        rule,
        correlation_key,
        created_at,
        updated_at,
        resolved_at,
        closed_at,
        reopen_count,
        external_refs: _,
        closed_by,
        related,
        route,
        topology,
        alerts,
        alerts_stored: _,
        timeline,
        timeline_dropped,
        timeline_stored,
        last_activity: _,
        all_resolved_since,
        flapping,
        flap_policy,
        sla,
        policy,
        version: _,
    } = after;
    *id == before.id
        && *title == before.title
        && *description == before.description
        && *state == before.state
        && *priority == before.priority
        && *impact == before.impact
        && *urgency == before.urgency
        && *category == before.category
        && *subcategory == before.subcategory
        && *assignment_group == before.assignment_group
        && *service == before.service
        && *configuration_items == before.configuration_items
        && *major == before.major
        && *alert_count == before.alert_count
        && *rule == before.rule
        && *correlation_key == before.correlation_key
        && *created_at == before.created_at
        && *updated_at == before.updated_at
        && *resolved_at == before.resolved_at
        && *closed_at == before.closed_at
        && *reopen_count == before.reopen_count
        && *closed_by == before.closed_by
        && *related == before.related
        && *route == before.route
        && *topology == before.topology
        && *timeline_dropped == before.timeline_dropped
        && *timeline_stored == before.timeline_stored
        && *all_resolved_since == before.all_resolved_since
        && *flapping == before.flapping
        && *flap_policy == before.flap_policy
        && *sla == before.sla
        && *policy == before.policy
        && *timeline == before.timeline
        && *alerts == before.alerts
}

pub(crate) fn new_id() -> String {
    format!("inc-{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::{chains_sharing_slots, change_event};
    use crate::alert::{Alert, Status};
    use crate::incident::lifecycle::{self, AfterManualClose, Step};
    use crate::rules::{Action, RuleSet};
    use chrono::Utc;

    #[test]
    fn a_change_only_to_what_no_ticket_shows_is_no_update() {
        let yaml = "rules:\n  - name: down\n    match: ['alertname=\"Down\"']\n    incident: {title: \"{{ labels.service }} down\", impact: high, urgency: high, group_by: [service]}\n";
        let set = RuleSet::from_sources(&[("r.yaml".into(), yaml.to_string())]).expect("rules");
        let now = Utc::now();
        let alert = Alert::for_test(
            &[("alertname", "Down"), ("service", "api")],
            Status::Firing,
            now,
        );
        let Action::Incident(spec) = set.evaluate(&alert).remove(0).action else {
            panic!("the rule raises an incident");
        };
        let step = lifecycle::on_alert(
            &mut None,
            "down",
            &spec,
            "api",
            &alert,
            now,
            AfterManualClose::default(),
            || "inc-1".to_string(),
        );
        let Step::Create(before) = step else {
            panic!("the alert opens an incident");
        };
        let mut after = (*before).clone();
        after.last_activity = now + chrono::Duration::seconds(30);
        after.version += 1;
        after
            .external_refs
            .insert("servicenow".into(), "INC0010001".into());
        assert_eq!(change_event(Some(&before), &after), None);

        // Anything else a ticket shows is an update, down to one alert's status.
        std::sync::Arc::make_mut(&mut after.alerts[0]).status = Status::Resolved;
        assert_eq!(change_event(Some(&before), &after), Some("updated"));
        let mut retitled = (*before).clone();
        retitled.title.push('!');
        assert_eq!(change_event(Some(&before), &retitled), Some("updated"));
        assert_eq!(change_event(None, &retitled), Some("created"));
    }

    fn chains(groups: &[&[&str]]) -> Vec<Vec<usize>> {
        let owned: Vec<Vec<String>> = groups
            .iter()
            .map(|g| g.iter().map(|k| k.to_string()).collect())
            .collect();
        chains_sharing_slots(owned.iter().map(Vec::as_slice))
    }

    #[test]
    fn groups_sharing_no_slot_run_apart() {
        assert_eq!(
            chains(&[&["a"], &["b"], &["c"]]),
            vec![vec![0], vec![1], vec![2]]
        );
    }

    #[test]
    fn groups_sharing_a_slot_stay_in_arrival_order_even_through_others() {
        // 0 and 2 share nothing directly, but both share a slot with 3.
        let got = chains(&[&["a", "x"], &["b"], &["c", "y"], &["y", "x"], &["b", "z"]]);
        assert_eq!(got, vec![vec![0, 2, 3], vec![1, 4]]);
    }
}
