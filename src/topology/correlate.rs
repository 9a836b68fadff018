//! The engine's path for alerts that service topology or inhibition concern,
//! one alert at a time (the rule's correlation key alone cannot place them):
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
//! Every slot read is checked again, and the alert's own slots are pointed at
//! its incident, in the same atomic commit as the incident (see
//! [`crate::store::SlotCheck`]); a merged incident is closed by a second,
//! version-checked commit. On any conflict the whole alert is redone from the
//! reads, and redoing is harmless (alerts already moved are not moved twice),
//! so two daemon instances on one Redis end with one incident per cause.

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

/// Slots read in one attempt: `(key, id as read)`, checked again on commit.
#[derive(Default)]
struct Reads(Vec<(String, Option<String>)>);

impl Reads {
    fn value(&self, key: &str) -> Option<&Option<String>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Where an alert goes: the incident as changed, as it was read, and why.
struct Placement {
    inc: Incident,
    before: Option<Incident>,
    why: Option<String>,
    created: bool,
    symptom: bool,
}

/// An open incident to pull into the alert's, and how its alerts count there.
struct Pull<'a> {
    inc: Incident,
    why: String,
    /// With an inhibition: its targets become symptoms.
    inhibit: Option<&'a Inhibit>,
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
    inc.alerts.push(IncidentAlert {
        fingerprint: alert.fingerprint.clone(),
        labels: alert.labels.clone(),
        annotations: alert.annotations.clone(),
        status: alert.status,
        joined_at: now,
        status_changed_at: now,
        role,
    });
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

/// Moves the alerts of `pull` into `cause` (those already there are skipped,
/// so a redone merge changes nothing).
fn absorb(mut cause: Incident, pull: &Pull<'_>, now: DateTime<Utc>) -> Incident {
    let from = &pull.inc;
    for a in &from.alerts {
        if cause.alert(&a.fingerprint).is_some() {
            continue;
        }
        let mut moved = a.clone();
        if let Some(inh) = pull.inhibit
            && inh.is_target(&a.labels)
        {
            moved.role = Some(AlertRole::Symptom);
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
            pull.why
        ),
    );
    cause
}

/// `inc`, closed because its alerts went into incident `into`.
fn close_merged(mut inc: Incident, into: &str, why: &str, now: DateTime<Utc>) -> Incident {
    inc.state = IncidentState::Closed;
    inc.resolved_at = inc.resolved_at.or(Some(now));
    inc.closed_at = Some(now);
    inc.updated_at = now;
    inc.topology.merged_into = Some(into.to_string());
    inc.push_timeline(
        now,
        "merged",
        format!("merged into incident {into}: {why}; its alerts are tracked there"),
    );
    inc
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

    /// The incident slot `key` points at, following merges, and records the
    /// read for the commit's checks.
    async fn read_slot(
        &self,
        key: &str,
        reads: &mut Reads,
    ) -> Result<Option<Incident>, StoreError> {
        let found = self.store().find_incidents("", key, &[]).await?;
        if reads.value(key).is_none() {
            reads.0.push((key.to_string(), found.slot.clone()));
        }
        let Some(id) = found.slot else {
            return Ok(None);
        };
        match found.incidents.get(&id) {
            Some(inc) => self.follow(inc.clone()).await,
            None => Ok(None),
        }
    }

    /// The incident `inc` was merged into, transitively (or `inc` itself).
    async fn follow(&self, mut inc: Incident) -> Result<Option<Incident>, StoreError> {
        for _ in 0..MAX_HOPS {
            let Some(into) = inc.topology.merged_into.clone() else {
                return Ok(Some(inc));
            };
            match self.store().get_incident(&into).await? {
                Some(next) => inc = next,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Whether an incident merged into `inc` is still open: an attempt that
    /// moved its alerts here lost the race to close it, and the pull is redone.
    async fn merge_pending(&self, inc: &Incident) -> Result<bool, StoreError> {
        for id in &inc.topology.merged_from {
            if let Some(from) = self.store().get_incident(id).await?
                && from.state != IncidentState::Closed
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Places one alert (see the module header). Redone from the reads on a
    /// conflict. Returns the incident it went to, and why in words (for the
    /// alert's explanation).
    pub(crate) async fn correlate_topology(
        &self,
        rules: &RuleSet,
        rule: &str,
        spec: &IncidentSpec,
        key: &str,
        alert: &Alert,
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
        'attempt: for attempt in 0..MAX_ATTEMPTS {
            let mut reads = Reads::default();
            let found = self.store().find_incidents(rule, key, &[fp]).await?;
            let member = match found.members.first().cloned().flatten() {
                Some(id) => match self.store().get_incident(&id).await? {
                    Some(inc) => self.follow(inc).await?,
                    None => None,
                },
                None => None,
            };

            // 1. The incident the alert is already in.
            let mut placed: Option<Placement> = None;
            // A member's update is the bulk of a storm: it only needs the
            // pulls below when an earlier attempt merged an incident into
            // this one without closing it yet.
            let mut member_update = false;
            if let Some(m) = member.filter(|m| m.state != IncidentState::Closed) {
                let step = lifecycle::on_alert(
                    Some(m.clone()),
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
                        member_update = !self.merge_pending(&inc).await?;
                        placed = Some(Placement {
                            inc: *inc,
                            before: Some(m),
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
                    let slot = inh.slot("src", &alert.labels);
                    let Some(src) = self.read_slot(&slot, &mut reads).await? else {
                        continue;
                    };
                    if !src.state.is_open() {
                        continue;
                    }
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
                        let inc = attach(
                            src.clone(),
                            alert,
                            Some(AlertRole::Symptom),
                            "alert_inhibited",
                            &why,
                            now,
                        );
                        placed = Some(Placement {
                            inc,
                            before: Some(src),
                            why: Some(why),
                            created: false,
                            symptom: true,
                        });
                        break;
                    }
                }
            }

            // 3. and 4. The incident of its deepest failing dependency, else
            // of its own service.
            if placed.is_none()
                && let (Some(t), Some(svc)) = (&topo, &service)
            {
                let mut candidates = t.dependencies(svc);
                // Deepest first; a stable sort keeps file order among equals.
                candidates.sort_by_key(|(_, depth)| std::cmp::Reverse(*depth));
                candidates.push((svc.as_str(), 0));
                for (dep, _) in candidates {
                    let Some(c) = self.read_slot(&service_slot(dep), &mut reads).await? else {
                        continue;
                    };
                    // An incident of nothing but alerts this one inhibits is
                    // pulled in below, as symptoms of an incident of its own.
                    if !open_within(&c, now) || inhibits_all(rules, rule, alert, &c) {
                        continue;
                    }
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
                    let mut inc = attach(c.clone(), alert, None, "alert_added", &why, now);
                    // As urgent as its most urgent alert.
                    escalate(&mut inc, spec.impact, spec.urgency, rules);
                    placed = Some(Placement {
                        inc,
                        before: Some(c),
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
                    let target = found
                        .slot
                        .as_ref()
                        .and_then(|id| found.incidents.get(id))
                        .cloned();
                    let step = lifecycle::on_alert(
                        target.clone(),
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
                            for adapter in self.route_all_to() {
                                if !inc.route.contains(adapter) {
                                    inc.route.push(adapter.clone());
                                }
                            }
                            Placement {
                                inc: *inc,
                                before: None,
                                why: None,
                                created: true,
                                symptom: false,
                            }
                        }
                        Step::Update(inc) => Placement {
                            inc: *inc,
                            before: target,
                            why: None,
                            created: false,
                            symptom: false,
                        },
                    }
                }
            };
            let Placement {
                mut inc,
                before,
                why,
                created,
                symptom,
            } = placed;

            // 6. Pull in the incidents this alert is the cause of.
            let mut pulls: Vec<Pull<'_>> = Vec::new();
            let mut sets: Vec<String> = Vec::new();
            if firing && !symptom && !member_update {
                if let (Some(t), Some(svc)) = (&topo, &service) {
                    let own = service_slot(svc);
                    if reads.value(&own).is_none() {
                        self.read_slot(&own, &mut reads).await?;
                    }
                    sets.push(own);
                    for dependent in t.dependents(svc) {
                        let Some(d) = self.read_slot(&service_slot(dependent), &mut reads).await?
                        else {
                            continue;
                        };
                        // Only an incident caused by a dependent: one whose
                        // root cause lies elsewhere (a dependent also failing
                        // because of another dependency) stays apart.
                        let caused_by_dependent = d
                            .topology
                            .root_cause
                            .as_deref()
                            .is_some_and(|r| t.depends_on(r, svc));
                        if d.id == inc.id
                            || pulls.iter().any(|p| p.inc.id == d.id)
                            || !caused_by_dependent
                            || !open_within(&d, now)
                        {
                            continue;
                        }
                        pulls.push(Pull {
                            why: format!("{dependent} depends on {svc}"),
                            inc: d,
                            inhibit: None,
                        });
                    }
                }
                for inh in rules.inhibits() {
                    if inh.is_source_of(rule, &alert.labels) {
                        let src = inh.slot("src", &alert.labels);
                        if reads.value(&src).is_none() {
                            self.read_slot(&src, &mut reads).await?;
                        }
                        sets.push(src);
                        let Some(d) = self
                            .read_slot(&inh.slot("tgt", &alert.labels), &mut reads)
                            .await?
                        else {
                            continue;
                        };
                        // Only an incident of nothing but this source's targets.
                        let all_targets = d.alerts.iter().all(|a| {
                            a.fingerprint != alert.fingerprint
                                && inh.is_target(&a.labels)
                                && inh.same_equal(&a.labels, &alert.labels)
                        });
                        if d.id == inc.id
                            || pulls.iter().any(|p| p.inc.id == d.id)
                            || !all_targets
                            || !open_within(&d, now)
                        {
                            continue;
                        }
                        pulls.push(Pull {
                            why: format!(
                                "its alerts are inhibited by {} (rule {})",
                                describe(alert),
                                inh.rule
                            ),
                            inc: d,
                            inhibit: Some(inh),
                        });
                    }
                    if inh.is_target(&alert.labels) {
                        let tgt = inh.slot("tgt", &alert.labels);
                        if reads.value(&tgt).is_none() {
                            self.read_slot(&tgt, &mut reads).await?;
                        }
                        sets.push(tgt);
                    }
                }
            }
            for pull in &pulls {
                inc = absorb(inc, pull, now);
                if pull.inhibit.is_none() {
                    escalate(&mut inc, pull.inc.impact, pull.inc.urgency, rules);
                }
            }
            // Alerts already here that this source inhibits become symptoms.
            if firing && !symptom {
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
                            a.role = Some(AlertRole::Symptom);
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
            if let Some(t) = &topo {
                annotate(&mut inc, t, rules, now);
            }
            let rule_major = rules.incident_spec(&inc.rule).and_then(|s| s.major.clone());
            major::apply(&mut inc, self.major(), rule_major.as_ref(), now);

            // Commit the alert's incident with every slot read checked.
            let checks: Vec<SlotCheck<'_>> = reads
                .0
                .iter()
                .map(|(k, v)| SlotCheck {
                    key: k,
                    expected: v.as_deref(),
                    set: sets.contains(k),
                })
                .collect();
            let expected = before.as_ref().map_or(0, |b| b.version);
            if before.as_ref() != Some(&inc) {
                inc.version = expected + 1;
                let event = change_event(before.as_ref(), &inc);
                let members = [(rule, fp)];
                let commit = IncidentCommit {
                    incident: &inc,
                    expected_version: expected,
                    bind: created.then_some((key, found.slot.as_deref())),
                    members: &members,
                    due: lifecycle::next_due(&inc),
                    outbox_event: event.filter(|_| !inc.route.is_empty()),
                    slots: &checks,
                };
                if !self.store().commit_incident(&commit).await? {
                    self.conflict(attempt).await;
                    continue 'attempt;
                }
                self.count_change(event);
            }

            // Close what was pulled in, re-pointing its slots here.
            for pull in &pulls {
                let mut closed = close_merged(pull.inc.clone(), &inc.id, &pull.why, now);
                closed.version = pull.inc.version + 1;
                let event = change_event(Some(&pull.inc), &closed);
                let commit = IncidentCommit {
                    incident: &closed,
                    expected_version: pull.inc.version,
                    bind: None,
                    members: &[],
                    due: None,
                    outbox_event: event.filter(|_| !closed.route.is_empty()),
                    // Slots still naming it lead here through `merged_into`.
                    slots: &[],
                };
                if !self.store().commit_incident(&commit).await? {
                    // Its alerts are in `inc` already; redoing finds them there.
                    self.conflict(attempt).await;
                    continue 'attempt;
                }
                self.count_change(event);
            }

            let id = inc.id.clone();
            let said = match (created, why) {
                (true, _) => format!("opened incident {id}"),
                (false, Some(why)) => format!("incident {id}: {why}"),
                (false, None) => {
                    format!("correlated into incident {id} (now {})", inc.state.as_str())
                }
            };
            return Ok((Some(id), said));
        }
        Err(StoreError::Unavailable(format!(
            "incident for {key}: gave up after {MAX_ATTEMPTS} concurrent updates"
        )))
    }
}
