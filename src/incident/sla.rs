//! SLA timers: a response (acknowledge) and a resolution target per priority,
//! from the daemon config. The deadlines are stored on the incident when it
//! opens and are part of [`super::lifecycle::next_due`], so they live in the
//! store's due index: they survive restarts, and whichever instance ticks
//! handles them. A breach is recorded on the incident (`response_breached_at`,
//! `resolution_breached_at`) in the same optimistic write as its escalation, so
//! it escalates exactly once however many instances tick.
//!
//! Semantics:
//! - Targets come from the priority the incident opened with; an escalation
//!   raising the priority does not move the deadlines.
//! - The response timer stops when the incident leaves `new` the first time
//!   (acknowledged, or resolved before anyone acknowledged it).
//! - The resolution timer stops when the incident is resolved. A reopened
//!   incident runs against its original deadline (the time it spent resolved
//!   counts: the problem was not solved), so one reopened after its deadline
//!   breaches at once. The response timer does not restart on reopen.
//! - Each kind breaches at most once per incident. A breach escalates (raises
//!   the priority, adds routes) only while the incident is open; a stop that
//!   came after the deadline without a tick in between is still recorded as a
//!   breach, at the deadline.
//!
//! Pure functions: the caller passes the time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Incident, IncidentState};

/// The SLA of one incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sla {
    /// Acknowledge by then (none: no response target for its priority).
    #[serde(default, with = "super::rfc3339::option")]
    pub respond_by: Option<DateTime<Utc>>,
    /// Resolve by then.
    #[serde(default, with = "super::rfc3339::option")]
    pub resolve_by: Option<DateTime<Utc>>,
    /// When the response timer stopped (first acknowledgement or resolution).
    #[serde(default, with = "super::rfc3339::option")]
    pub responded_at: Option<DateTime<Utc>>,
    #[serde(default, with = "super::rfc3339::option")]
    pub response_breached_at: Option<DateTime<Utc>>,
    #[serde(default, with = "super::rfc3339::option")]
    pub resolution_breached_at: Option<DateTime<Utc>>,
    /// What a breach does, as configured when the incident opened.
    pub escalation: Escalation,
}

/// What a breach does to the incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    /// Priority levels to raise by (priority 3 raised by 1 is 2; never above 1).
    #[serde(default = "default_raise")]
    pub raise_priority: u8,
    /// Adapters the incident is routed to as well from then on.
    #[serde(default)]
    pub route: Vec<String>,
}

fn default_raise() -> u8 {
    1
}

impl Default for Escalation {
    fn default() -> Self {
        Escalation {
            raise_priority: default_raise(),
            route: Vec::new(),
        }
    }
}

/// One priority's targets, in seconds from the incident's creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    #[serde(default)]
    pub respond_within_s: Option<u64>,
    #[serde(default)]
    pub resolve_within_s: Option<u64>,
}

/// `sla:` as written in the daemon config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSla {
    /// By priority (1..=5); a priority left out has no SLA.
    #[serde(default)]
    pub targets: BTreeMap<u8, Target>,
    #[serde(default)]
    pub escalation: Escalation,
}

impl RawSla {
    /// Validates, reporting every problem. `adapters`: the names under
    /// `adapters:`, which the escalation may route to.
    pub fn validate(&self, adapters: &[&str], p: &mut crate::config::Problems<'_>) -> SlaPolicy {
        for (priority, target) in &self.targets {
            if !(1..=5).contains(priority) {
                p.at(
                    &format!("sla.targets.{priority}"),
                    "priorities are 1 (most urgent) to 5",
                );
            }
            for (field, v) in [
                ("respond_within_s", target.respond_within_s),
                ("resolve_within_s", target.resolve_within_s),
            ] {
                if v == Some(0) {
                    p.at(
                        &format!("sla.targets.{priority}.{field}"),
                        "must be greater than 0",
                    );
                }
            }
        }
        if self.escalation.raise_priority > 4 {
            p.at("sla.escalation.raise_priority", "must be 0 to 4");
        }
        for r in &self.escalation.route {
            if !adapters.contains(&r.as_str()) {
                p.at(
                    "sla.escalation.route",
                    format!("{r:?} is not an adapter under adapters:"),
                );
            }
        }
        SlaPolicy {
            targets: self.targets.clone(),
            escalation: self.escalation.clone(),
        }
    }
}

/// The validated `sla:` section of the daemon config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlaPolicy {
    pub targets: BTreeMap<u8, Target>,
    pub escalation: Escalation,
}

impl SlaPolicy {
    /// The SLA of an incident opening now with its current priority; `None`
    /// when its priority has no targets.
    pub fn start(&self, inc: &Incident) -> Option<Sla> {
        let target = self.targets.get(&inc.priority)?;
        let after = |s: u64| inc.created_at + chrono::Duration::seconds(s as i64);
        if target.respond_within_s.is_none() && target.resolve_within_s.is_none() {
            return None;
        }
        Some(Sla {
            respond_by: target.respond_within_s.map(after),
            resolve_by: target.resolve_within_s.map(after),
            responded_at: None,
            response_breached_at: None,
            resolution_breached_at: None,
            escalation: self.escalation.clone(),
        })
    }
}

/// Stops the response timer once the incident has left `new` (call after any
/// change; the change's time is `inc.updated_at`).
pub fn observe(inc: &mut Incident) {
    let state = inc.state;
    let at = inc.updated_at;
    if let Some(sla) = inc.sla.as_mut()
        && sla.responded_at.is_none()
        && state != IncidentState::New
        && state != IncidentState::Reopened
    {
        sla.responded_at = Some(at);
    }
}

/// Records the breaches due by `now` and escalates. `resolving_at`: when the
/// incident is about to auto-resolve in this same tick (a deadline after that
/// is not breached).
pub fn tick(inc: &mut Incident, now: DateTime<Utc>, resolving_at: Option<DateTime<Utc>>) {
    let Some(sla) = inc.sla.clone() else {
        return;
    };
    let stopped_before = |deadline: DateTime<Utc>, stop: Option<DateTime<Utc>>| {
        stop.is_some_and(|s| s <= deadline) || resolving_at.is_some_and(|r| r <= deadline)
    };
    if let Some(by) = sla.respond_by
        && by <= now
        && sla.response_breached_at.is_none()
        && !stopped_before(by, sla.responded_at)
    {
        let within = (by - inc.created_at).num_seconds();
        breach(
            inc,
            by,
            "response",
            format!("not acknowledged within {within}s"),
        );
    }
    let resolved_at = match inc.state {
        IncidentState::Resolved | IncidentState::Closed => inc.resolved_at,
        _ => None,
    };
    if let Some(by) = sla.resolve_by
        && by <= now
        && sla.resolution_breached_at.is_none()
        && !stopped_before(by, resolved_at)
    {
        let within = (by - inc.created_at).num_seconds();
        breach(
            inc,
            by,
            "resolution",
            format!("not resolved within {within}s"),
        );
    }
}

fn breach(inc: &mut Incident, at: DateTime<Utc>, kind: &str, what: String) {
    let open = inc.state.is_open();
    let Some(sla) = inc.sla.as_mut() else {
        return;
    };
    match kind {
        "response" => sla.response_breached_at = Some(at),
        _ => sla.resolution_breached_at = Some(at),
    }
    let escalation = sla.escalation.clone();
    let mut did = Vec::new();
    if open {
        let raised = inc
            .priority
            .saturating_sub(escalation.raise_priority)
            .max(1);
        if raised != inc.priority {
            did.push(format!("priority {} → {raised}", inc.priority));
            inc.priority = raised;
        }
        let added: Vec<String> = escalation
            .route
            .iter()
            .filter(|r| !inc.route.contains(r))
            .cloned()
            .collect();
        if !added.is_empty() {
            did.push(format!("routed to {}", added.join(", ")));
            inc.route.extend(added);
        }
    }
    let outcome = match (open, did.is_empty()) {
        (false, _) => format!("not escalated: already {}", inc.state.as_str()),
        (true, true) => "nothing to escalate".to_string(),
        (true, false) => format!("escalated: {}", did.join(", ")),
    };
    inc.updated_at = inc.updated_at.max(at);
    inc.push_timeline(
        at,
        "sla_breached",
        format!("{kind} SLA missed: {what}; {outcome}"),
    );
}

/// The next SLA deadline still running, if any.
pub fn next_due(inc: &Incident) -> Option<DateTime<Utc>> {
    let sla = inc.sla.as_ref()?;
    let response = sla.respond_by.filter(|_| {
        sla.response_breached_at.is_none()
            && sla.responded_at.is_none()
            && matches!(inc.state, IncidentState::New | IncidentState::Reopened)
    });
    let resolution = sla
        .resolve_by
        .filter(|_| sla.resolution_breached_at.is_none() && inc.state.is_open());
    response.into_iter().chain(resolution).min()
}

/// Breaches `after` has that `before` had not, by kind (for the metrics).
pub fn new_breaches(before: Option<&Incident>, after: &Incident) -> Vec<&'static str> {
    let b = before.and_then(|b| b.sla.as_ref());
    let Some(a) = after.sla.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if a.response_breached_at.is_some() && b.is_none_or(|b| b.response_breached_at.is_none()) {
        out.push("response");
    }
    if a.resolution_breached_at.is_some() && b.is_none_or(|b| b.resolution_breached_at.is_none()) {
        out.push("resolution");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{DateTime, TimeZone, Utc};

    use crate::alert::{Alert, Status};
    use crate::rules::RuleSet;
    use crate::simulate::Simulation;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    /// One rule (impact high, urgency medium: priority 2); priority 2 must be
    /// acknowledged within 60s and resolved within 600s.
    fn sim() -> Simulation {
        let rules = RuleSet::from_sources(&[(
            "r.yaml".into(),
            "rules:\n  - name: r\n    incident: {title: x, impact: high, urgency: medium}\n".into(),
        )])
        .unwrap();
        let config = crate::config::parse(
            std::path::Path::new("c.yaml"),
            "sla:\n  targets:\n    2: {respond_within_s: 60, resolve_within_s: 600}\n  escalation: {raise_priority: 3}\n",
            &Default::default(),
            |_| None,
        )
        .unwrap();
        Simulation::configured(Arc::new(rules), Some(&config)).unwrap()
    }

    fn alert(at: DateTime<Utc>) -> Alert {
        Alert::for_test(&[("alertname", "Down")], Status::Firing, at)
    }

    #[tokio::test]
    async fn a_breach_is_recorded_at_its_deadline_and_escalates_once() {
        let s = sim();
        s.feed("test", vec![alert(t(0))], t(0)).await.unwrap();
        let inc = &s.incidents().await.unwrap()[0];
        let sla = inc.sla.as_ref().unwrap();
        assert_eq!(
            (sla.respond_by, sla.resolve_by),
            (Some(t(60)), Some(t(600)))
        );
        assert_eq!(super::super::lifecycle::next_due(inc), Some(t(60)));
        // Ticked late, and twice: one breach, at the deadline.
        s.advance(t(90)).await.unwrap();
        s.advance(t(95)).await.unwrap();
        let inc = &s.incidents().await.unwrap()[0];
        assert_eq!(inc.sla.as_ref().unwrap().response_breached_at, Some(t(60)));
        // Raised by 3 from 2, but never above 1.
        assert_eq!(inc.priority, 1);
        let breaches: Vec<_> = inc
            .timeline
            .iter()
            .filter(|e| e.event == "sla_breached")
            .collect();
        assert_eq!(breaches.len(), 1);
        assert_eq!(breaches[0].at, t(60));
        assert_eq!(super::super::lifecycle::next_due(inc), Some(t(600)));
    }

    #[tokio::test]
    async fn an_acknowledgement_after_a_deadline_nobody_ticked_is_still_a_breach() {
        let s = sim();
        s.feed("test", vec![alert(t(0))], t(0)).await.unwrap();
        let id = s.incidents().await.unwrap()[0].id.clone();
        // No tick between the deadline and the acknowledgement (daemon down).
        s.engine().acknowledge(&id, "alice", t(120)).await.unwrap();
        let inc = &s.incidents().await.unwrap()[0];
        let sla = inc.sla.as_ref().unwrap();
        assert_eq!(sla.responded_at, Some(t(120)));
        assert_eq!(sla.response_breached_at, Some(t(60)));
    }

    #[tokio::test]
    async fn a_timely_resolution_stops_both_timers() {
        let s = sim();
        s.feed("test", vec![alert(t(0))], t(0)).await.unwrap();
        let id = s.incidents().await.unwrap()[0].id.clone();
        s.engine().resolve(&id, "bob", t(30)).await.unwrap();
        s.advance(t(10_000)).await.unwrap();
        let inc = &s.incidents().await.unwrap()[0];
        let sla = inc.sla.as_ref().unwrap();
        assert_eq!(sla.responded_at, Some(t(30)));
        assert!(sla.response_breached_at.is_none() && sla.resolution_breached_at.is_none());
        assert_eq!(inc.priority, 2);
    }
}
