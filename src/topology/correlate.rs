//! The engine's path for alerts that service topology or inhibition concern
//! (the rule's correlation key alone cannot place them). The alerts of one
//! rule and correlation key in a batch are placed in arrival order, each:
//!
//! 1. an alert already in an incident stays there (its status updates it);
//! 2. an alert an inhibition targets, while a firing source with the same
//!    `equal` labels is in an open incident, is attached to that incident
//!    as a symptom and raises nothing of its own;
//! 3. an alert of a service joins the open incident (within its window) of
//!    the deepest of its dependencies that has one (slot `svc:<name>`);
//! 4. else the open incident of its own service (same slot), whatever rule
//!    opened it: one ticket per failing service;
//! 5. else the rule's correlation key, as for any alert (join or open);
//! 6. then the open incidents of the services that depend on it (and of the
//!    alerts it inhibits) are pulled in: their alerts move into this
//!    incident, and each is closed with `merged_into` naming it. Slots that
//!    still name a merged incident are followed to where it went.
//!
//! The placements of a group are worked out in memory (a storm of one
//! service costs one read and one write per incident, not per alert), then
//! each changed incident is committed with every slot read checked again and
//! the slots it takes over pointed at it, in the same atomic step (see
//! [`crate::store::SlotCheck`]); merged incidents are closed last, each by a
//! version-checked commit. On any conflict the whole group is redone from
//! fresh reads, and redoing is harmless (alerts already moved are not moved
//! twice), so two daemon instances on one Redis end with one incident per
//! cause.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::AlertRole;
use super::annotate::{annotate, escalate};
use crate::alert::{Alert, Status};
use crate::incident::engine::{Engine, MAX_ATTEMPTS, change_event, new_id};
use crate::incident::lifecycle::{self, Step};
use crate::incident::{Incident, IncidentAlert, IncidentState, major};
use crate::rules::{IncidentSpec, Inhibit, RuleSet};
use crate::store::{IncidentCommit, SlotCheck, StoreError};

/// `merged_into` links followed from a slot before giving up on it.
const MAX_HOPS: usize = 8;

/// The slot pointing at the incident that holds a service's alerts.
pub fn service_slot(service: &str) -> String {
    format!("svc:{service}")
}

fn within(since: DateTime<Utc>, now: DateTime<Utc>, limit_s: u64) -> bool {
    (now - since).num_milliseconds() <= (limit_s as i64).saturating_mul(1000)
}

fn open_within(inc: &Incident, now: DateTime<Utc>) -> bool {
    inc.state.is_open() && within(inc.last_activity, now, inc.policy.window_s)
}

fn describe(alert: &Alert) -> String {
    lifecycle::describe(
        alert.labels.get("alertname").map(String::as_str),
        &alert.fingerprint,
        &alert.labels,
    )
}

/// Whether every alert of `inc` is a target of an inhibition `alert` (of
/// `rule`) is a source of, with the same `equal` labels.
fn inhibits_all(rules: &RuleSet, rule: &str, alert: &Alert, inc: &Incident) -> bool {
    rules.inhibits().iter().any(|inh| {
        inh.is_source_of(rule, &alert.labels)
            && inc.alerts.iter().all(|a| {
                a.fingerprint != alert.fingerprint
                    && inh.is_target(&a.labels)
                    && inh.same_equal(&a.labels, &alert.labels)
            })
    })
}

/// Adds a firing `alert` to `inc` with `role`.
fn attach(
    mut inc: Incident,
    alert: &Alert,
    role: Option<AlertRole>,
    event: &str,
    why: &str,
    now: DateTime<Utc>,
) -> Incident {
    if inc.alert(&alert.fingerprint).is_some() {
        return inc;
    }
    inc.alerts.push(IncidentAlert::new(alert, now, role).into());
    inc.alert_count = inc.counted_alerts();
    // A symptom does not keep the incident's window open: it is not news.
    if role != Some(AlertRole::Symptom) {
        inc.last_activity = now;
    }
    inc.all_resolved_since = None;
    inc.updated_at = now;
    inc.push_timeline(now, event, why);
    inc
}

/// Moves the alerts of `from` into `cause` (those already there are skipped,
/// so a redone merge changes nothing); with `inhibit`, its targets become
/// symptoms.
fn absorb(
    mut cause: Incident,
    from: &Incident,
    inhibit: Option<&Inhibit>,
    why: &str,
    now: DateTime<Utc>,
) -> Incident {
    for a in &from.alerts {
        if cause.alert(&a.fingerprint).is_some() {
            continue;
        }
        let mut moved = a.clone();
        if let Some(inh) = inhibit
            && inh.is_target(&a.labels)
        {
            Arc::make_mut(&mut moved).role = Some(AlertRole::Symptom);
        }
        cause.alerts.push(moved);
    }
    for ci in &from.configuration_items {
        if !cause.configuration_items.contains(ci) {
            cause.configuration_items.push(ci.clone());
        }
    }
    cause.alert_count = cause.counted_alerts();
    if cause.alerts.iter().any(|a| a.status == Status::Firing) {
        cause.all_resolved_since = None;
    }
    if !cause.topology.merged_from.contains(&from.id) {
        cause.topology.merged_from.push(from.id.clone());
    }
    cause.last_activity = cause.last_activity.max(now);
    cause.updated_at = now;
    cause.push_timeline(
        now,
        "merged",
        format!(
            "incident {} ({} alerts) merged in: {}",
            from.id,
            from.alerts.len(),
            why
        ),
    );
    cause
}

/// Alerts already in `inc` that `alert` (of `rule`) inhibits become symptoms.
fn mark_symptoms(
    inc: &mut Incident,
    rules: &RuleSet,
    rule: &str,
    alert: &Alert,
    now: DateTime<Utc>,
) {
    for inh in rules.inhibits() {
        if !inh.is_source_of(rule, &alert.labels) {
            continue;
        }
        let mut marked = Vec::new();
        for a in &mut inc.alerts {
            if a.fingerprint != alert.fingerprint
                && a.role != Some(AlertRole::Symptom)
                && inh.is_target(&a.labels)
                && inh.same_equal(&a.labels, &alert.labels)
            {
                Arc::make_mut(a).role = Some(AlertRole::Symptom);
                marked.push(a.fingerprint.clone());
            }
        }
        if !marked.is_empty() {
            inc.alert_count = inc.counted_alerts();
            inc.push_timeline(
                now,
                "alert_inhibited",
                format!(
                    "{} inhibited by {} (rule {}): now symptoms",
                    marked.join(", "),
                    describe(alert),
                    inh.rule
                ),
            );
        }
    }
}

/// `inc`, closed because its alerts moved into incident `into` (they are
/// tracked there only; its timeline keeps their history).
fn close_merged(mut inc: Incident, into: &str, why: &str, now: DateTime<Utc>) -> Incident {
    let moved = inc.alerts.len();
    inc.alerts.clear();
    inc.alert_count = 0;
    inc.all_resolved_since = None;
    inc.state = IncidentState::Closed;
    inc.resolved_at = inc.resolved_at.or(Some(now));
    inc.closed_at = Some(now);
    inc.updated_at = now;
    inc.topology.merged_into = Some(into.to_string());
    inc.push_timeline(
        now,
        "merged",
        format!("merged into incident {into}: {why}; its {moved} alert(s) moved there"),
    );
    inc
}

/// Incident `id` for `lifecycle::on_alert`: taken out of `work` when the
/// lifecycle is sure to hand it back changed (an open incident the alert is
/// in, or joins by the window), else a copy (it may open another instead).
fn take_for(
    work: &mut Work,
    id: &str,
    fp: &str,
    firing: bool,
    now: DateTime<Utc>,
) -> Option<Incident> {
    let inc = work.current(id)?;
    let joins = inc.state.is_open()
        && inc.closed_by.is_none()
        && (inc.alert(fp).is_some() || firing && open_within(inc, now));
    if joins {
        work.take(id)
    } else {
        Some(inc.clone())
    }
}

/// One attempt at placing a group: what was read, and the incidents as they
/// will be written.
#[derive(Default)]
struct Work {
    /// Slots read: `(key, id as read)`, checked again on commit.
    reads: Vec<(String, Option<String>)>,
    /// Slots this attempt points elsewhere: key → incident id.
    sets: Vec<(String, String)>,
    /// Incidents as read (their version is the commit's expectation).
    loaded: HashMap<String, Incident>,
    /// Incidents as they will be written, in the order first changed.
    changed: Vec<Incident>,
    /// Per changed incident: alerts that joined it `(fingerprint)`.
    members: HashMap<String, Vec<String>>,
    /// The incident opened under the rule's key, if any.
    created: Option<String>,
    /// Pulled incidents to close, in order.
    closing: Vec<String>,
    /// fingerprint → incident it joined in this attempt.
    placed_in: HashMap<String, String>,
    /// Slots read up front for the whole group (one round trip instead of one
    /// per slot consulted); a slot counts as read (and is checked on commit)
    /// only once placing an alert consults it.
    prefetched: HashMap<String, Option<String>>,
}

impl Work {
    fn read(&self, key: &str) -> Option<&Option<String>> {
        self.reads.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Where slot `key` points for this attempt (its own sets first).
    fn slot(&self, key: &str) -> Option<Option<String>> {
        if let Some((_, id)) = self.sets.iter().rev().find(|(k, _)| k == key) {
            return Some(Some(id.clone()));
        }
        self.read(key).cloned()
    }

    fn set(&mut self, key: String, id: &str) {
        self.sets.retain(|(k, _)| *k != key);
        self.sets.push((key, id.to_string()));
    }

    /// The incident as this attempt sees it.
    fn current(&self, id: &str) -> Option<&Incident> {
        self.changed
            .iter()
            .find(|i| i.id == id)
            .or_else(|| self.loaded.get(id))
    }

    /// Incident `id` to change: taken out of the changed ones (put it back
    /// with [`Work::put`]), else a copy of it as read. Taking, not copying,
    /// keeps a storm on one incident linear.
    fn take(&mut self, id: &str) -> Option<Incident> {
        match self.changed.iter().position(|i| i.id == id) {
            Some(n) => Some(self.changed.remove(n)),
            None => self.loaded.get(id).cloned(),
        }
    }

    fn put(&mut self, inc: Incident, member: Option<&str>) {
        if let Some(fp) = member {
            self.placed_in.insert(fp.to_string(), inc.id.clone());
            self.members
                .entry(inc.id.clone())
                .or_default()
                .push(fp.to_string());
        }
        match self.changed.iter_mut().find(|i| i.id == inc.id) {
            Some(slot) => *slot = inc,
            None => self.changed.push(inc),
        }
    }
}

/// Where an alert goes: the incident as changed, and why.
struct Placement {
    inc: Incident,
    why: Option<String>,
    created: bool,
    symptom: bool,
}

impl Engine {
    /// Whether `alert`, which `rule` raises an incident for, takes the
    /// topology path: it belongs to a service of the services file (and the
    /// rule did not opt out), or an inhibition names it as source or target.
    pub(crate) fn takes_topology_path(
        &self,
        rules: &RuleSet,
        rule: &str,
        spec: &IncidentSpec,
        alert: &Alert,
    ) -> bool {
        let service = spec.topology
            && self
                .topology()
                .is_some_and(|t| t.service_of(&alert.labels).is_some());
        service
            || rules
                .inhibits()
                .iter()
                .any(|i| i.is_source_of(rule, &alert.labels) || i.is_target(&alert.labels))
    }

    /// Reads incident `id` into `work` unless it is there; whether it exists.
    async fn ensure(&self, work: &mut Work, id: &str) -> Result<bool, StoreError> {
        if work.current(id).is_some() {
            return Ok(true);
        }
        match self.store().get_incident_head(id).await? {
            Some(inc) => {
                work.loaded.insert(id.to_string(), inc);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Incident `id`, or the one it was merged into, transitively.
    async fn follow(&self, work: &mut Work, id: &str) -> Result<Option<String>, StoreError> {
        let mut id = id.to_string();
        for _ in 0..MAX_HOPS {
            if !self.ensure(work, &id).await? {
                return Ok(None);
            }
            match work
                .current(&id)
                .and_then(|i| i.topology.merged_into.clone())
            {
                Some(into) => id = into,
                None => return Ok(Some(id)),
            }
        }
        Ok(None)
    }

    /// The incident slot `key` points at, following merges; the read is
    /// recorded for the commit's checks.
    async fn read_slot(&self, work: &mut Work, key: &str) -> Result<Option<String>, StoreError> {
        let id = match work.slot(key) {
            Some(id) => id,
            None if work.prefetched.contains_key(key) => {
                let id = work.prefetched.get(key).cloned().flatten();
                work.reads.push((key.to_string(), id.clone()));
                id
            }
            None => {
                let found = self.store().find_incidents("", key, &[]).await?;
                for (id, inc) in found.incidents {
                    work.loaded.entry(id).or_insert(inc);
                }
                work.reads.push((key.to_string(), found.slot.clone()));
                found.slot
            }
        };
        match id {
            Some(id) => self.follow(work, &id).await,
            None => Ok(None),
        }
    }

    /// Whether an incident merged into `inc` is still open: an attempt that
    /// moved its alerts here lost the race to close it, and the pull is redone.
    async fn merge_pending(&self, work: &mut Work, inc: &Incident) -> Result<bool, StoreError> {
        for id in &inc.topology.merged_from {
            if self.ensure(work, id).await?
                && work
                    .current(id)
                    .is_some_and(|from| from.state != IncidentState::Closed)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Places the alerts of one rule and correlation key (see the module
    /// header), in arrival order. Returns, per alert, the incident it went to
    /// and why in words (for its explanation).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn correlate_topology(
        &self,
        rules: &RuleSet,
        rule: &str,
        spec: &IncidentSpec,
        key: &str,
        alerts: &[&Alert],
        slots: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<(Option<String>, String)>, StoreError> {
        let fps: Vec<&str> = alerts.iter().map(|a| a.fingerprint.as_str()).collect();
        // The rule's key is read with the members.
        let slot_keys: Vec<String> = slots.iter().filter(|k| *k != key).cloned().collect();
        'attempt: for attempt in 0..MAX_ATTEMPTS {
            let mut found = self
                .store()
                .find_incidents_and_slots(rule, key, &fps, &slot_keys)
                .await?;
            let mut work = Work {
                // Moved, not copied: storms make these documents large.
                loaded: std::mem::take(&mut found.incidents),
                ..Work::default()
            };
            work.prefetched = slot_keys
                .iter()
                .cloned()
                .zip(std::mem::take(&mut found.slots))
                .collect();
            work.reads.push((key.to_string(), found.slot.clone()));
            let mut results = Vec::with_capacity(alerts.len());
            for (alert, member) in alerts.iter().zip(&found.members) {
                let said = self
                    .place(
                        &mut work,
                        rules,
                        rule,
                        spec,
                        key,
                        alert,
                        member.as_deref(),
                        now,
                    )
                    .await?;
                results.push(said);
            }
            if !self.commit_work(&mut work, rules, rule, key, now).await? {
                self.conflict(attempt).await;
                continue 'attempt;
            }
            return Ok(results);
        }
        Err(StoreError::Unavailable(format!(
            "incident for {key}: gave up after {MAX_ATTEMPTS} concurrent updates"
        )))
    }

    /// Every slot placing `alerts` may consult: the rule's key, the
    /// inhibition slots of their labels, the slots of their services, of what
    /// those depend on and of what depends on them. A group reads them all in
    /// one round trip rather than one by one, and groups of a batch that share
    /// none cannot change each other's placements.
    pub(crate) fn slots_to_read(
        &self,
        rules: &RuleSet,
        rule: &str,
        spec: &IncidentSpec,
        key: &str,
        alerts: &[&Alert],
    ) -> Vec<String> {
        let topo = self.topology().filter(|_| spec.topology);
        let mut keys = vec![key.to_string()];
        for alert in alerts {
            for inh in rules.inhibits() {
                if inh.is_target(&alert.labels) || inh.is_source_of(rule, &alert.labels) {
                    keys.push(inh.slot("src", &alert.labels));
                    keys.push(inh.slot("tgt", &alert.labels));
                }
            }
            if let Some(t) = &topo
                && let Some(svc) = t.service_of(&alert.labels)
            {
                keys.extend(
                    t.dependencies(&svc.name)
                        .into_iter()
                        .map(|(d, _)| service_slot(d)),
                );
                keys.push(service_slot(&svc.name));
                keys.extend(t.dependents(&svc.name).into_iter().map(service_slot));
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// Places one alert in `work`.
    #[allow(clippy::too_many_arguments)]
    async fn place(
        &self,
        work: &mut Work,
        rules: &RuleSet,
        rule: &str,
        spec: &IncidentSpec,
        key: &str,
        alert: &Alert,
        member: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(Option<String>, String), StoreError> {
        let nothing = || (None, "no open incident for this resolved alert".to_string());
        let topo = self.topology().filter(|_| spec.topology);
        let service = topo
            .as_ref()
            .and_then(|t| t.service_of(&alert.labels))
            .map(|s| s.name.clone());
        let firing = alert.status == Status::Firing;
        let fp = alert.fingerprint.as_str();
        // The member entry, or the incident it already joined in this group.
        let member = match work
            .placed_in
            .get(fp)
            .cloned()
            .or(member.map(str::to_string))
        {
            Some(id) => self.follow(work, &id).await?,
            None => None,
        };

        // 1. The incident the alert is already in.
        let mut placed: Option<Placement> = None;
        // A member's update is the bulk of a storm: it only needs the pulls
        // below when an earlier attempt merged an incident into this one
        // without closing it yet.
        let mut member_update = false;
        // An earlier attempt merged an incident into this one without closing it.
        let mut merge_pending = false;
        if let Some(m) = member
            .filter(|id| {
                work.current(id)
                    .is_some_and(|m| m.state != IncidentState::Closed)
            })
            .and_then(|id| take_for(work, &id, fp, firing, now))
        {
            let step = lifecycle::on_alert(
                &mut Some(m),
                rule,
                spec,
                key,
                alert,
                now,
                self.after_manual_close(),
                new_id,
            );
            match step {
                Step::Nothing => return Ok(nothing()),
                Step::Update(inc) => {
                    let symptom = inc
                        .alert(fp)
                        .is_some_and(|a| a.role == Some(AlertRole::Symptom));
                    merge_pending = self.merge_pending(work, &inc).await?;
                    member_update = !merge_pending;
                    placed = Some(Placement {
                        inc: *inc,
                        why: None,
                        created: false,
                        symptom,
                    });
                }
                // Too late to reopen it: placed afresh below.
                Step::Create(_) => {}
            }
        }
        if placed.is_none() && !firing {
            return Ok(nothing());
        }

        // 2. Inhibited by a firing source in an open incident.
        if placed.is_none() {
            for inh in rules
                .inhibits()
                .iter()
                .filter(|i| i.is_target(&alert.labels))
            {
                let Some(src_id) = self
                    .read_slot(work, &inh.slot("src", &alert.labels))
                    .await?
                else {
                    continue;
                };
                let Some(src) = work.current(&src_id).filter(|s| s.state.is_open()) else {
                    continue;
                };
                let source = src.alerts.iter().find(|a| {
                    a.status == Status::Firing
                        && a.fingerprint != alert.fingerprint
                        && a.role != Some(AlertRole::Symptom)
                        && inh.is_source(&a.labels)
                        && inh.same_equal(&a.labels, &alert.labels)
                });
                if let Some(s) = source {
                    let why = format!(
                        "{} inhibited by {} (rule {}): attached as a symptom, raises nothing of its own",
                        describe(alert),
                        lifecycle::describe(
                            s.labels.get("alertname").map(String::as_str),
                            &s.fingerprint,
                            &s.labels
                        ),
                        inh.rule
                    );
                    let Some(src) = work.take(&src_id) else {
                        continue;
                    };
                    let inc = attach(
                        src,
                        alert,
                        Some(AlertRole::Symptom),
                        "alert_inhibited",
                        &why,
                        now,
                    );
                    placed = Some(Placement {
                        inc,
                        why: Some(why),
                        created: false,
                        symptom: true,
                    });
                    break;
                }
            }
        }

        // 3. and 4. The incident of its deepest failing dependency, else of
        // its own service.
        if placed.is_none()
            && let (Some(t), Some(svc)) = (&topo, &service)
        {
            let mut candidates = t.dependencies(svc);
            // Deepest first; a stable sort keeps file order among equals.
            candidates.sort_by_key(|(_, depth)| std::cmp::Reverse(*depth));
            candidates.push((svc.as_str(), 0));
            for (dep, _) in candidates {
                let Some(c_id) = self.read_slot(work, &service_slot(dep)).await? else {
                    continue;
                };
                // An incident of nothing but alerts this one inhibits is
                // pulled in below, as symptoms of an incident of its own.
                let Some(c) = work
                    .current(&c_id)
                    .filter(|c| open_within(c, now) && !inhibits_all(rules, rule, alert, c))
                else {
                    continue;
                };
                let why = if dep == svc {
                    format!(
                        "{} joined: another alert of service {svc} within the {}s window",
                        describe(alert),
                        c.policy.window_s
                    )
                } else {
                    format!(
                        "{} joined: {svc} depends on {dep}, whose incident is open",
                        describe(alert)
                    )
                };
                let Some(c) = work.take(&c_id) else {
                    continue;
                };
                let mut inc = attach(c, alert, None, "alert_added", &why, now);
                // As urgent as its most urgent alert.
                escalate(&mut inc, spec.impact, spec.urgency, rules);
                placed = Some(Placement {
                    inc,
                    why: Some(why),
                    created: false,
                    symptom: false,
                });
                break;
            }
        }

        // 5. The rule's correlation key.
        let placed = match placed {
            Some(p) => p,
            None => {
                let mut target = match work.slot(key).flatten() {
                    Some(id) if self.ensure(work, &id).await? => {
                        take_for(work, &id, fp, firing, now)
                    }
                    _ => None,
                };
                let step = lifecycle::on_alert(
                    &mut target,
                    rule,
                    spec,
                    key,
                    alert,
                    now,
                    self.after_manual_close(),
                    new_id,
                );
                match step {
                    Step::Nothing => return Ok(nothing()),
                    Step::Create(mut inc) => {
                        // Extra routes, flap detection and SLA, as on the
                        // rules-only path.
                        self.prepare_new(&mut inc, spec.flapping.as_ref());
                        work.created = Some(inc.id.clone());
                        work.set(key.to_string(), &inc.id);
                        Placement {
                            inc: *inc,
                            why: None,
                            created: true,
                            symptom: false,
                        }
                    }
                    Step::Update(inc) => Placement {
                        inc: *inc,
                        why: None,
                        created: false,
                        symptom: false,
                    },
                }
            }
        };
        let Placement {
            mut inc,
            why,
            created,
            symptom,
        } = placed;

        // 6. Pull in the incidents this alert is the cause of.
        if firing && !symptom && !member_update {
            // First finish merges an earlier attempt (here or in another
            // instance) wrote into this incident but lost the race to close:
            // the slot that led to them may point here by now, so they are
            // found through `merged_from`, not through the slot.
            let unfinished = if merge_pending {
                inc.topology.merged_from.clone()
            } else {
                Vec::new()
            };
            for from in unfinished {
                let pending = from != inc.id
                    && self.ensure(work, &from).await?
                    && work
                        .current(&from)
                        .is_some_and(|d| d.state != IncidentState::Closed);
                let Some(d) = pending.then(|| work.take(&from)).flatten() else {
                    continue;
                };
                let why = "finishing a merge begun earlier".to_string();
                inc = absorb(inc, &d, None, &why, now);
                escalate(&mut inc, d.impact, d.urgency, rules);
                self.close_pulled(work, d, &inc.id, &why, now);
            }
            if let (Some(t), Some(svc)) = (&topo, &service) {
                let own = service_slot(svc);
                self.read_slot(work, &own).await?;
                work.set(own, &inc.id);
                for dependent in t.dependents(svc) {
                    let Some(d_id) = self.read_slot(work, &service_slot(dependent)).await? else {
                        continue;
                    };
                    // Only an incident caused by a dependent: one whose root
                    // cause lies elsewhere (a dependent also failing because
                    // of another dependency) stays apart.
                    let pull = d_id != inc.id
                        && work.current(&d_id).is_some_and(|d| {
                            open_within(d, now)
                                && d.topology
                                    .root_cause
                                    .as_deref()
                                    .is_some_and(|r| t.depends_on(r, svc))
                        });
                    let Some(d) = pull.then(|| work.take(&d_id)).flatten() else {
                        continue;
                    };
                    let why = format!("{dependent} depends on {svc}");
                    inc = absorb(inc, &d, None, &why, now);
                    escalate(&mut inc, d.impact, d.urgency, rules);
                    self.close_pulled(work, d, &inc.id, &why, now);
                }
            }
            for inh in rules.inhibits() {
                if inh.is_source_of(rule, &alert.labels) {
                    let src = inh.slot("src", &alert.labels);
                    self.read_slot(work, &src).await?;
                    work.set(src, &inc.id);
                    let Some(d_id) = self
                        .read_slot(work, &inh.slot("tgt", &alert.labels))
                        .await?
                    else {
                        continue;
                    };
                    // Only an incident of nothing but this source's targets.
                    let pull = d_id != inc.id
                        && work.current(&d_id).is_some_and(|d| {
                            open_within(d, now)
                                && d.alerts.iter().all(|a| {
                                    a.fingerprint != alert.fingerprint
                                        && inh.is_target(&a.labels)
                                        && inh.same_equal(&a.labels, &alert.labels)
                                })
                        });
                    let Some(d) = pull.then(|| work.take(&d_id)).flatten() else {
                        continue;
                    };
                    let why = format!(
                        "its alerts are inhibited by {} (rule {})",
                        describe(alert),
                        inh.rule
                    );
                    inc = absorb(inc, &d, Some(inh), &why, now);
                    self.close_pulled(work, d, &inc.id, &why, now);
                }
                if inh.is_target(&alert.labels) {
                    let tgt = inh.slot("tgt", &alert.labels);
                    self.read_slot(work, &tgt).await?;
                    work.set(tgt, &inc.id);
                }
            }
            mark_symptoms(&mut inc, rules, rule, alert, now);
        }

        let id = inc.id.clone();
        let said = match (created, why) {
            (true, _) => format!("opened incident {id}"),
            (false, Some(why)) => format!("incident {id}: {why}"),
            (false, None) => {
                format!("correlated into incident {id} (now {})", inc.state.as_str())
            }
        };
        work.put(inc, Some(fp));
        Ok((Some(id), said))
    }

    /// Closes pulled incident `d` in `work` (written after the others).
    fn close_pulled(
        &self,
        work: &mut Work,
        d: Incident,
        into: &str,
        why: &str,
        now: DateTime<Utc>,
    ) {
        let id = d.id.clone();
        work.put(close_merged(d, into, why, now), None);
        if !work.closing.contains(&id) {
            work.closing.push(id);
        }
    }

    /// Writes what `work` changed: `false` on a conflict (nothing after the
    /// conflicting write is written; redoing the group is harmless).
    async fn commit_work(
        &self,
        work: &mut Work,
        rules: &RuleSet,
        rule: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let topo = self.topology();
        let mut known: Vec<(String, Option<String>)> = work.reads.clone();
        let (open, closing): (Vec<Incident>, Vec<Incident>) = std::mem::take(&mut work.changed)
            .into_iter()
            .partition(|i| !work.closing.contains(&i.id));
        for mut inc in open.into_iter().chain(closing) {
            let is_closing = work.closing.contains(&inc.id);
            if !is_closing {
                if let Some(t) = &topo {
                    annotate(&mut inc, t, rules, now);
                }
                let rule_major = rules.incident_spec(&inc.rule).and_then(|s| s.major.clone());
                major::apply(&mut inc, self.major(), rule_major.as_ref(), now);
            }
            let before = work.loaded.get(&inc.id);
            if before == Some(&inc) {
                continue;
            }
            let expected = before.map_or(0, |b| b.version);
            inc.version = expected + 1;
            let event = change_event(before, &inc);
            let fps = work.members.get(&inc.id).cloned().unwrap_or_default();
            let members: Vec<(&str, &str)> = fps.iter().map(|fp| (rule, fp.as_str())).collect();
            let checks: Vec<SlotCheck<'_>> = if is_closing {
                // Slots still naming it lead on through `merged_into`.
                Vec::new()
            } else {
                known
                    .iter()
                    .filter(|(k, _)| k != key)
                    .map(|(k, v)| SlotCheck {
                        key: k,
                        expected: v.as_deref(),
                        set: work.sets.iter().any(|(sk, sid)| sk == k && *sid == inc.id),
                    })
                    .collect()
            };
            let found_slot = work.read(key).cloned().flatten();
            let binds = work.created.as_deref() == Some(inc.id.as_str());
            let commit = IncidentCommit {
                incident: &inc,
                expected_version: expected,
                bind: binds.then_some((key, found_slot.as_deref())),
                members: &members,
                due: lifecycle::next_due(&inc),
                outbox_event: event.filter(|_| !inc.route.is_empty()),
                slots: &checks,
            };
            if !self.store().commit_incident(&commit).await? {
                return Ok(false);
            }
            self.count_change(event);
            self.observe_change(before, &inc, event);
            // Later commits of this group expect what this one wrote.
            for (k, v) in known.iter_mut() {
                if work.sets.iter().any(|(sk, sid)| sk == k && *sid == inc.id) && !is_closing {
                    *v = Some(inc.id.clone());
                }
            }
        }
        Ok(true)
    }
}
