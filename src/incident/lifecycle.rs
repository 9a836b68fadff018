//! The incident lifecycle as pure functions: given the incident an alert
//! correlates to (if any), the alert and the time, what the incident becomes.
//!
//! ```text
//!  new ──ack──► in_progress ──┐
//!   │                         ├──(all alerts resolved for resolve_after, or manual)──► resolved ──(close_after)──► closed
//!   └─────────────────────────┘                                                          │
//!  reopened ◄──(a correlated alert fires within reopen_within)───────────────────────────┘
//! ```
//!
//! Nothing here reads a clock or a store: the caller passes `now`.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Incident, IncidentAlert, IncidentState, Policy, flapping, sla};
use crate::alert::{Alert, Status};
use crate::rules::{IncidentSpec, ResolveMode};

/// What an alert does to the incident it correlates with.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to store (e.g. a resolved alert with no incident).
    Nothing,
    /// A new incident; the correlation key now points at it.
    Create(Box<Incident>),
    /// The given incident, changed.
    Update(Box<Incident>),
}

fn secs(d: std::time::Duration) -> u64 {
    d.as_secs()
}

fn within(since: DateTime<Utc>, now: DateTime<Utc>, limit_s: u64) -> bool {
    (now - since).num_milliseconds() <= (limit_s as i64).saturating_mul(1000)
}

/// Short human description of an alert for timeline causes.
pub fn describe(
    alert_name: Option<&str>,
    fingerprint: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> String {
    let name = alert_name.unwrap_or("alert");
    let where_ = labels
        .get("instance")
        .or_else(|| labels.get("service"))
        .or_else(|| labels.get("host"))
        .map(|v| format!(" on {v}"))
        .unwrap_or_default();
    format!("{name}{where_} ({fingerprint})")
}

fn cause(alert: &Alert) -> String {
    describe(
        alert.labels.get("alertname").map(String::as_str),
        &alert.fingerprint,
        &alert.labels,
    )
}

/// What a firing alert does to an incident a person resolved or closed in the
/// ITSM platform (config `incidents.after_manual_close`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterManualClose {
    /// Open a new incident, linked to the old one: a ticket a person closed is
    /// never reopened behind their back.
    #[default]
    NewIncident,
    /// Reopen it (within `reopen_within_s`), as if incidentd had resolved it.
    Reopen,
}

/// Applies one alert (firing or resolved) for `rule`/`key` to `current`, the
/// incident the store found for it: the one the alert already belongs to, else
/// the one the correlation key points at.
///
/// `current` is taken out of its place only when the step changes it (the
/// step is then [`Step::Update`]); otherwise it stays as it was. A caller
/// holding several incidents need not copy one (with all its alerts) per
/// alert just in case.
#[allow(clippy::too_many_arguments)]
pub fn on_alert(
    current: &mut Option<Incident>,
    rule: &str,
    spec: &IncidentSpec,
    key: &str,
    alert: &Alert,
    now: DateTime<Utc>,
    after_manual_close: AfterManualClose,
    new_id: impl FnOnce() -> String,
) -> Step {
    let change = match decide(current.as_ref(), alert, now, after_manual_close) {
        Decision::Nothing => return Step::Nothing,
        Decision::Create => {
            return Step::Create(Box::new(create(rule, spec, key, alert, now, new_id())));
        }
        Decision::CreateAfterManualClose { follows, closed_by } => {
            let mut next = create(rule, spec, key, alert, now, new_id());
            next.push_timeline(
                now,
                "related",
                format!(
                    "follows incident {follows}, closed by {closed_by}: a new incident rather than reopening it"
                ),
            );
            next.related.push(follows);
            return Step::Create(Box::new(next));
        }
        change => change,
    };
    // `decide` saw an incident for every change below.
    let Some(inc) = current.take() else {
        return Step::Nothing;
    };
    Step::Update(Box::new(match change {
        Decision::MemberStatus => member_status(inc, alert, now),
        Decision::Reopen => {
            let mut inc = inc;
            inc.state = IncidentState::Reopened;
            inc.reopen_count += 1;
            inc.resolved_at = None;
            inc.push_timeline(now, "reopened", format!("{} fired again", cause(alert)));
            join(inc, spec, alert, now)
        }
        _ => join(inc, spec, alert, now),
    }))
}

/// What [`on_alert`] does, decided from a look at the incident.
enum Decision {
    Nothing,
    Create,
    /// A new incident, linked to one a person resolved or closed.
    CreateAfterManualClose {
        follows: String,
        closed_by: String,
    },
    /// The alert joins the incident, or its status there changes.
    Join,
    /// A flapping member fires again: its status changes, the incident stays
    /// resolved.
    MemberStatus,
    Reopen,
}

fn decide(
    current: Option<&Incident>,
    alert: &Alert,
    now: DateTime<Utc>,
    after_manual_close: AfterManualClose,
) -> Decision {
    let firing = alert.status == Status::Firing;
    if firing
        && after_manual_close == AfterManualClose::NewIncident
        && let Some(inc) = current
        && !inc.state.is_open()
        && let Some(by) = &inc.closed_by
    {
        return Decision::CreateAfterManualClose {
            follows: inc.id.clone(),
            closed_by: by.clone(),
        };
    }
    match current {
        Some(inc) if inc.state.is_open() => {
            let member = inc.alert(&alert.fingerprint).is_some();
            // Only a firing alert joins by the window: one that resolves without
            // ever having been part of the incident has nothing to add to it.
            if member || (firing && within(inc.last_activity, now, inc.policy.window_s)) {
                Decision::Join
            } else if firing {
                Decision::Create
            } else {
                Decision::Nothing
            }
        }
        Some(inc) if inc.state == IncidentState::Resolved => {
            let resolved_at = inc.resolved_at.unwrap_or(inc.updated_at);
            if firing
                && inc.alert(&alert.fingerprint).is_some()
                && flapping::would_flap(inc, &alert.fingerprint, now)
            {
                // A flapping alert does not reopen it; it reopens once the
                // alert has settled firing (see `tick`).
                Decision::MemberStatus
            } else if firing && within(resolved_at, now, inc.policy.reopen_within_s) {
                Decision::Reopen
            } else if firing {
                Decision::Create
            } else if inc.alert(&alert.fingerprint).is_some() {
                Decision::Join
            } else {
                Decision::Nothing
            }
        }
        // Closed, or nothing yet: only a firing alert opens an incident.
        _ if firing => Decision::Create,
        _ => Decision::Nothing,
    }
}

fn create(
    rule: &str,
    spec: &IncidentSpec,
    key: &str,
    alert: &Alert,
    now: DateTime<Utc>,
    id: String,
) -> Incident {
    let fields = spec.render(alert, 1);
    let mut inc = Incident {
        id,
        title: fields.title,
        description: fields.description,
        state: IncidentState::New,
        priority: spec.priority,
        impact: spec.impact,
        urgency: spec.urgency,
        category: spec.category.clone(),
        subcategory: spec.subcategory.clone(),
        assignment_group: fields.assignment_group,
        service: fields.service,
        configuration_items: fields.configuration_item.into_iter().collect(),
        major: false,
        alert_count: 1,
        rule: rule.to_string(),
        correlation_key: key.to_string(),
        created_at: now,
        updated_at: now,
        resolved_at: None,
        closed_at: None,
        reopen_count: 0,
        external_refs: Default::default(),
        closed_by: None,
        related: Vec::new(),
        route: spec.route.clone(),
        topology: Default::default(),
        alerts: vec![IncidentAlert::new(alert, now, None).into()],
        timeline: Vec::new(),
        timeline_dropped: 0,
        timeline_stored: 0,
        alerts_stored: Default::default(),
        last_activity: now,
        all_resolved_since: None,
        flapping: false,
        flap_policy: None,
        sla: None,
        policy: Policy {
            window_s: secs(spec.window),
            auto_resolve: spec.resolve == ResolveMode::Auto,
            resolve_after_s: secs(spec.resolve_after),
            reopen_within_s: secs(spec.reopen_within),
            close_after_s: secs(spec.close_after),
        },
        version: 0,
    };
    inc.push_timeline(now, "created", format!("rule {rule}: {}", cause(alert)));
    inc
}

/// Adds the alert to the incident or updates its status there.
fn join(mut inc: Incident, spec: &IncidentSpec, alert: &Alert, now: DateTime<Utc>) -> Incident {
    if inc.alert(&alert.fingerprint).is_some() {
        return member_status(inc, alert, now);
    }
    inc.last_activity = now;
    inc.alerts.push(IncidentAlert::new(alert, now, None).into());
    inc.alert_count = inc.counted_alerts();
    let fields = spec.render(alert, inc.alert_count);
    if let Some(ci) = fields.configuration_item
        && !inc.configuration_items.contains(&ci)
    {
        inc.configuration_items.push(ci);
    }
    // The title may count alerts: keep it in step, worded after the first
    // alert (it names what broke first).
    inc.title = retitle(&inc, spec);
    let why = format!(
        "{} joined: same correlation key {} within the {}s window",
        cause(alert),
        inc.correlation_key,
        inc.policy.window_s
    );
    inc.push_timeline(now, "alert_added", why);
    inc.updated_at = now;
    settle(inc, now)
}

/// A member alert's new status (or a repeat of its status).
fn member_status(mut inc: Incident, alert: &Alert, now: DateTime<Utc>) -> Incident {
    inc.last_activity = now;
    if let Some(member) = inc
        .alerts
        .iter_mut()
        .find(|a| a.fingerprint == alert.fingerprint)
        && member.status != alert.status
    {
        let member = Arc::make_mut(member);
        member.status = alert.status;
        member.status_changed_at = now;
        let event = match alert.status {
            Status::Firing => "alert_refired",
            Status::Resolved => "alert_resolved",
        };
        // A flapping alert's every bounce would flood the timeline (and the
        // ticket): its `flapping_started` entry says it bounces.
        if !member.flapping {
            inc.push_timeline(now, event, cause(alert));
        }
        flapping::record_change(&mut inc, &alert.fingerprint, now);
        inc.updated_at = now;
    }
    settle(inc, now)
}

/// Tracks since when every alert has been resolved, then runs the timers.
fn settle(mut inc: Incident, now: DateTime<Utc>) -> Incident {
    let all_resolved = inc.alerts.iter().all(|a| a.status == Status::Resolved);
    inc.all_resolved_since = match (all_resolved, inc.all_resolved_since) {
        (true, Some(since)) => Some(since),
        (true, None) => Some(now),
        (false, _) => None,
    };
    tick(inc, now)
}

/// A member alert resolved while it now matches another rule (its annotations
/// moved it, say): the incidents it belongs to under its earlier rules must
/// still see it resolve, or they would stay open forever. `None` when `inc` is
/// not open or does not hold the alert.
pub fn member_resolved(inc: Incident, alert: &Alert, now: DateTime<Utc>) -> Option<Incident> {
    let member = inc.alert(&alert.fingerprint)?;
    if !inc.state.is_open() || alert.status != Status::Resolved || member.status == Status::Resolved
    {
        return None;
    }
    Some(member_status(inc, alert, now))
}

/// The title rendered for the incident's first alert with the current count.
fn retitle(inc: &Incident, spec: &IncidentSpec) -> String {
    match inc.alerts.first() {
        Some(first) => spec.render(&first.as_alert(), inc.alert_count).title,
        None => inc.title.clone(),
    }
}

/// Time-driven transitions: flapping alerts settling, SLA breaches,
/// auto-resolve and close. Each happens at the time its timer fell due (not at
/// `now`, which may be later), so a replay on a recorded clock and a live
/// daemon record the same times. Returns the incident unchanged when nothing
/// is due.
pub fn tick(mut inc: Incident, now: DateTime<Utc>) -> Incident {
    let after = |t: DateTime<Utc>, s: u64| t + chrono::Duration::seconds(s as i64);
    let settled = flapping::settle(&mut inc, now);
    // While an alert flaps the incident does not resolve itself; once it has
    // settled, a resolve that was held resolves it at the settle time.
    let resolving_at = inc
        .all_resolved_since
        .filter(|_| inc.state.is_open() && inc.policy.auto_resolve && !inc.flapping)
        .map(|since| after(since, inc.policy.resolve_after_s).max(settled.unwrap_or(since)))
        .filter(|at| *at <= now);
    sla::tick(&mut inc, now, resolving_at);
    if inc.state == IncidentState::Resolved
        && let Some(at) = settled
        && !inc.flapping
        && inc.alerts.iter().any(|a| a.status == Status::Firing)
    {
        // Flapping held its reopen: the alert has settled firing.
        inc.state = IncidentState::Reopened;
        inc.reopen_count += 1;
        inc.resolved_at = None;
        inc.updated_at = at;
        inc.push_timeline(at, "reopened", "an alert settled firing after flapping");
    }
    if let Some(at) = resolving_at {
        inc.state = IncidentState::Resolved;
        inc.resolved_at = Some(at);
        inc.updated_at = at;
        let n = inc.alerts.len();
        inc.push_timeline(
            at,
            "resolved",
            format!(
                "auto-resolve: all {n} alert(s) resolved for {}s",
                inc.policy.resolve_after_s
            ),
        );
    }
    if inc.state == IncidentState::Resolved
        && !inc.flapping
        && let Some(resolved) = inc.resolved_at
        && after(resolved, inc.policy.close_after_s) <= now
    {
        let at = after(resolved, inc.policy.close_after_s);
        inc.state = IncidentState::Closed;
        inc.closed_at = Some(at);
        inc.updated_at = at;
        inc.push_timeline(
            at,
            "closed",
            format!("resolved for {}s", inc.policy.close_after_s),
        );
    }
    sla::observe(&mut inc);
    inc
}

/// When [`tick`] will next have something to do, if ever.
pub fn next_due(inc: &Incident) -> Option<DateTime<Utc>> {
    let after = |t: DateTime<Utc>, s: u64| t + chrono::Duration::seconds(s as i64);
    let own = match inc.state {
        // A flapping incident's resolve waits for the settle time (below).
        s if s.is_open() && inc.policy.auto_resolve && !inc.flapping => inc
            .all_resolved_since
            .map(|since| after(since, inc.policy.resolve_after_s)),
        // A flapping resolved incident is not closed under its alert.
        IncidentState::Resolved if !inc.flapping => inc
            .resolved_at
            .map(|at| after(at, inc.policy.close_after_s)),
        _ => None,
    };
    [own, flapping::next_due(inc), sla::next_due(inc)]
        .into_iter()
        .flatten()
        .min()
}

/// An operator acknowledged the incident.
pub fn acknowledge(mut inc: Incident, now: DateTime<Utc>, by: &str) -> Result<Incident, String> {
    match inc.state {
        IncidentState::New | IncidentState::Reopened => {
            inc.state = IncidentState::InProgress;
            inc.updated_at = now;
            inc.push_timeline(now, "acknowledged", format!("acknowledged by {by}"));
            Ok(inc)
        }
        IncidentState::InProgress => Ok(inc),
        s => Err(format!(
            "cannot acknowledge an incident that is {}",
            s.as_str()
        )),
    }
}

/// An operator resolved the incident.
pub fn resolve(mut inc: Incident, now: DateTime<Utc>, by: &str) -> Result<Incident, String> {
    match inc.state {
        s if s.is_open() => {
            inc.state = IncidentState::Resolved;
            inc.resolved_at = Some(now);
            inc.updated_at = now;
            inc.push_timeline(now, "resolved", format!("resolved by {by}"));
            Ok(inc)
        }
        IncidentState::Resolved => Ok(inc),
        s => Err(format!("cannot resolve an incident that is {}", s.as_str())),
    }
}

/// A person changed the incident's ticket in ITSM platform `adapter`: the
/// incident follows. Returns the incident unchanged when there is nothing to do.
pub fn remote_change(
    mut inc: Incident,
    to: crate::adapters::TicketState,
    who: &str,
    adapter: &str,
    now: DateTime<Utc>,
) -> Incident {
    use crate::adapters::TicketState;
    let by = format!("{who} in {adapter}");
    match to {
        TicketState::Resolved | TicketState::Closed
            if inc.state.is_open()
                || to == TicketState::Closed && inc.state == IncidentState::Resolved =>
        {
            let closed = to == TicketState::Closed;
            inc.state = if closed {
                IncidentState::Closed
            } else {
                IncidentState::Resolved
            };
            if closed {
                inc.closed_at = Some(now);
            }
            inc.resolved_at = inc.resolved_at.or(Some(now));
            inc.closed_by = Some(by.clone());
            inc.updated_at = now;
            let event = if closed { "closed" } else { "resolved" };
            inc.push_timeline(now, event, format!("{event} by {by}"));
        }
        TicketState::Acknowledged
            if matches!(inc.state, IncidentState::New | IncidentState::Reopened) =>
        {
            inc.state = IncidentState::InProgress;
            inc.updated_at = now;
            inc.push_timeline(now, "acknowledged", format!("acknowledged by {by}"));
        }
        TicketState::Open | TicketState::Acknowledged if inc.state == IncidentState::Resolved => {
            inc.state = IncidentState::Reopened;
            inc.reopen_count += 1;
            inc.resolved_at = None;
            inc.closed_by = None;
            inc.updated_at = now;
            inc.push_timeline(now, "reopened", format!("reopened by {by}"));
        }
        _ => {}
    }
    inc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Action, RuleSet};

    fn spec() -> std::sync::Arc<IncidentSpec> {
        let yaml = "rules:\n  - name: down\n    match: ['alertname=\"Down\"']\n    incident: {title: \"{{ labels.service }} down\", impact: high, urgency: high, group_by: [service], window_s: 300, reopen_within_s: 3600}\n";
        spec_of(yaml, &alert("x", Status::Firing))
    }

    /// The incident spec the one rule in `yaml` gives `alert`.
    fn spec_of(yaml: &str, alert: &Alert) -> std::sync::Arc<IncidentSpec> {
        let set = RuleSet::from_sources(&[("r.yaml".into(), yaml.to_string())]).expect("rules");
        match set.evaluate(alert).remove(0).action {
            Action::Incident(spec) => spec,
            other => panic!("{other:?}"),
        }
    }

    fn alert(instance: &str, status: Status) -> Alert {
        let labels = [
            ("alertname", "Down"),
            ("service", "api"),
            ("instance", instance),
        ];
        Alert::for_test(&labels, status, Utc::now())
    }

    fn step(current: &mut Option<Incident>, a: &Alert, now: DateTime<Utc>) -> Step {
        step_under(&spec(), current, a, now)
    }

    fn step_under(
        spec: &IncidentSpec,
        current: &mut Option<Incident>,
        a: &Alert,
        now: DateTime<Utc>,
    ) -> Step {
        on_alert(
            current,
            "down",
            spec,
            "api",
            a,
            now,
            AfterManualClose::default(),
            || "new".to_string(),
        )
    }

    #[test]
    fn a_join_leaves_the_alerts_that_were_there_as_they_were_read() {
        use crate::incident::{AlertsWrite, StoredAlerts};
        let now = Utc::now();
        let Step::Create(first) = step(&mut None, &alert("a", Status::Firing), now) else {
            panic!("the first alert opens an incident");
        };
        let mut read = *first;
        read.version = 1;
        let mut current = Some(read.clone());
        let Step::Update(joined) = step(&mut current, &alert("b", Status::Firing), now) else {
            panic!("the second alert joins");
        };
        // Read from a store, the same: a snapshot of the version read.
        StoredAlerts::record(&mut read);
        let mut current = Some(read.clone());
        let Step::Update(from_store) = step(&mut current, &alert("c", Status::Firing), now) else {
            panic!("the third alert joins");
        };
        assert_eq!(joined.alerts.len(), 2);
        let stored = from_store.alerts_stored.at(&read.id, 1);
        assert_eq!(stored.map(<[_]>::len), Some(1));
        // Only the alert that joined is written; the first is still the one read.
        assert_eq!(
            AlertsWrite::between(stored, &from_store.alerts),
            AlertsWrite {
                keep: 1,
                set: Vec::new(),
                append: &from_store.alerts[1..],
            }
        );
        // The snapshot is of that incident at that version only.
        assert!(from_store.alerts_stored.at(&read.id, 2).is_none());
        assert!(from_store.alerts_stored.at("another", 1).is_none());
        assert_eq!(
            AlertsWrite::between(joined.alerts_stored.at(&read.id, 1), &joined.alerts),
            AlertsWrite {
                keep: 0,
                set: Vec::new(),
                append: &joined.alerts,
            }
        );
    }

    #[test]
    fn an_incident_the_alert_does_not_change_stays_in_place() {
        let now = Utc::now();
        let Step::Create(first) = step(&mut None, &alert("a", Status::Firing), now) else {
            panic!("the first alert opens an incident");
        };
        let mut current = Some(*first);

        // A resolved alert that never joined: nothing, and the incident stays.
        let step_of_stranger = step(&mut current, &alert("b", Status::Resolved), now);
        assert_eq!(step_of_stranger, Step::Nothing);
        assert_eq!(current.as_ref().map(|i| i.alerts.len()), Some(1));

        // A firing alert after the window: a new incident, the old one stays.
        let later = now + chrono::Duration::minutes(10);
        let Step::Create(fresh) = step(&mut current, &alert("c", Status::Firing), later) else {
            panic!("outside the window a new incident opens");
        };
        assert_eq!(fresh.alerts.len(), 1);
        assert_eq!(current.as_ref().map(|i| i.alerts.len()), Some(1));

        // A member's change takes it out, changed.
        let Step::Update(changed) = step(&mut current, &alert("a", Status::Resolved), later) else {
            panic!("a member resolving updates its incident");
        };
        assert!(current.is_none());
        assert_eq!(changed.alerts[0].status, Status::Resolved);
    }

    #[test]
    fn a_changed_copy_leaves_the_incident_it_was_copied_from_as_it_was() {
        let now = Utc::now();
        let Step::Create(first) = step(&mut None, &alert("a", Status::Firing), now) else {
            panic!("the first alert opens an incident");
        };
        let Step::Update(two) = step(&mut Some(*first), &alert("b", Status::Firing), now) else {
            panic!("the second alert joins it");
        };
        let read = *two;
        // The engine changes a copy and compares it with the incident as read.
        let Step::Update(changed) =
            step(&mut Some(read.clone()), &alert("b", Status::Resolved), now)
        else {
            panic!("a member resolving updates its incident");
        };
        assert_eq!(
            read.alerts[1].status,
            Status::Firing,
            "the read one is untouched"
        );
        assert_eq!(changed.alerts[1].status, Status::Resolved);
        // Only the alert that changed was copied; the other is still shared.
        assert!(Arc::ptr_eq(&read.alerts[0], &changed.alerts[0]));
        assert!(!Arc::ptr_eq(&read.alerts[1], &changed.alerts[1]));
    }

    /// The titles of an incident opened by one alert and joined by a second,
    /// under a rule whose title shows the severity; each alert is read as the
    /// webhook formats read it (its severity from the `severity` field if
    /// any, else its label, normalized).
    fn titles_with_severity(label: Option<&str>, field: Option<&str>) -> (String, String) {
        let yaml = "rules:\n  - name: down\n    match: ['alertname=\"Down\"']\n    incident: {title: \"{{ labels.service }} {{ severity }} ({{ alert_count }})\", impact: high, urgency: high, group_by: [service], window_s: 300}\n";
        let sent = |instance: &str| {
            let mut labels = vec![
                ("alertname", "Down"),
                ("service", "api"),
                ("instance", instance),
            ];
            labels.extend(label.map(|l| ("severity", l)));
            let mut a = Alert::for_test(&labels, Status::Firing, Utc::now());
            a.severity = crate::formats::severity(field, &a.labels);
            a
        };
        let first = sent("a");
        let spec = spec_of(yaml, &first);
        let now = Utc::now();
        let on = |current: &mut Option<Incident>, a: &Alert| step_under(&spec, current, a, now);
        let Step::Create(opened) = on(&mut None, &first) else {
            panic!("the first alert opens an incident");
        };
        let opened_title = opened.title.clone();
        let Step::Update(joined) = on(&mut Some(*opened), &sent("b")) else {
            panic!("the second alert joins it");
        };
        (opened_title, joined.title)
    }

    #[test]
    fn a_join_words_the_title_with_the_severity_the_incident_was_opened_with() {
        // An alias in the label, normalized.
        let (opened, joined) = titles_with_severity(Some("CRIT"), None);
        assert_eq!(
            (opened.as_str(), joined.as_str()),
            ("api critical (1)", "api critical (2)")
        );
        // A generic alert's severity field, with no label to give it.
        let (opened, joined) = titles_with_severity(None, Some("major"));
        assert_eq!(
            (opened.as_str(), joined.as_str()),
            ("api error (1)", "api error (2)")
        );
    }

    #[test]
    fn an_incident_alert_keeps_a_severity_only_when_its_labels_do_not_give_it() {
        let now = Utc::now();
        let mut a = Alert::for_test(
            &[("alertname", "Down"), ("severity", "crit")],
            Status::Firing,
            now,
        );
        a.severity = Some("critical".into());
        assert_eq!(IncidentAlert::new(&a, now, None).severity, None);
        a.severity = Some("warning".into());
        let member = IncidentAlert::new(&a, now, None);
        assert_eq!(member.severity.as_deref(), Some("warning"));
        assert_eq!(member.as_alert().severity.as_deref(), Some("warning"));
    }
}
