//! Flap detection: an alert that changes status too often is marked flapping,
//! and while it flaps its resolves and re-fires neither resolve nor reopen its
//! incident, so the ITSM ticket does not churn.
//!
//! - Every status change of a member alert is counted, the firing that brought
//!   it into the incident included. `changes` changes within `window_s` mark it
//!   flapping (timeline `flapping_started`).
//! - While any of its alerts flaps, the incident is `flapping: true` and keeps
//!   the state it had: an open one does not auto-resolve, a resolved one is not
//!   reopened (nor closed). The flapping alerts' changes are kept on the alert
//!   (no timeline entry each).
//! - An alert stops flapping once it has kept its status for `settle_s`
//!   (timeline `flapping_stopped`, at that time). Then the normal lifecycle
//!   resumes, once: an open incident whose alerts all settled resolved
//!   resolves; a resolved one whose alert settled firing reopens.
//!
//! With the defaults, an alert that resolves and fires again within 5 minutes
//! flaps at that re-fire: the first resolve goes through (nothing can know yet
//! that it bounces), the reopen that would follow is held. A rule's
//! `resolve_after_s` absorbs even the first bounce. Pure functions: the caller
//! passes the time.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Incident;

/// Built-in defaults: 3 changes (fire, resolve, fire again) within 5 minutes
/// flap, the bounce Alertmanager's default 5-minute group interval makes
/// visible; 5 minutes without a change settle. (Nagios and Icinga weigh the
/// changes of their last 21 checks; an alert stream has no fixed check rate,
/// so incidentd counts changes in a window.)
pub const DEFAULT_CHANGES: u32 = 3;
pub const DEFAULT_WINDOW_S: u64 = 300;
pub const DEFAULT_SETTLE_S: u64 = 300;

/// The flap detection settings an incident was opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlapPolicy {
    /// Status changes within `window_s` that make an alert flapping (at least 2).
    pub changes: u32,
    pub window_s: u64,
    /// How long a flapping alert must keep its status to stop flapping.
    pub settle_s: u64,
}

impl Default for FlapPolicy {
    fn default() -> Self {
        FlapPolicy {
            changes: DEFAULT_CHANGES,
            window_s: DEFAULT_WINDOW_S,
            settle_s: DEFAULT_SETTLE_S,
        }
    }
}

/// The daemon config's flap detection: off unless `flapping.enabled: true`
/// (so an upgrade does not change how existing rules' incidents behave), with
/// the values rules inherit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlapDefaults {
    pub enabled: bool,
    pub policy: FlapPolicy,
}

impl FlapDefaults {
    /// The policy of an incident whose rule says nothing about flapping.
    pub fn policy(&self) -> Option<FlapPolicy> {
        self.enabled.then_some(self.policy)
    }
}

/// `flapping:` as written in the daemon config or a rule's `incident:` block.
/// In a rule, a field left out takes the daemon config's value, and the block
/// turns detection on unless it says `enabled: false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlapSettings {
    pub enabled: Option<bool>,
    pub changes: Option<u32>,
    pub window_s: Option<u64>,
    pub settle_s: Option<u64>,
}

impl FlapSettings {
    /// As the daemon config's `flapping:`.
    pub fn defaults(&self) -> FlapDefaults {
        FlapDefaults {
            enabled: self.enabled.unwrap_or(false),
            policy: self.fill(FlapPolicy::default()),
        }
    }

    /// As a rule's `flapping:`, over the daemon config's (`None`: off).
    pub fn over(&self, base: &FlapDefaults) -> Option<FlapPolicy> {
        self.enabled.unwrap_or(true).then(|| self.fill(base.policy))
    }

    fn fill(&self, base: FlapPolicy) -> FlapPolicy {
        FlapPolicy {
            changes: self.changes.unwrap_or(base.changes),
            window_s: self.window_s.unwrap_or(base.window_s),
            settle_s: self.settle_s.unwrap_or(base.settle_s),
        }
    }

    /// Problems with the values, as `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.changes.is_some_and(|c| c < 2) {
            out.push(("changes", "must be at least 2".to_string()));
        }
        if self.window_s == Some(0) {
            out.push(("window_s", "must be greater than 0".to_string()));
        }
        out
    }
}

/// Whether a status change of member `fingerprint` at `now` would leave it
/// flapping (it already flaps, or this change reaches the threshold).
pub fn would_flap(inc: &Incident, fingerprint: &str, now: DateTime<Utc>) -> bool {
    let (Some(policy), Some(member)) = (inc.flap_policy, inc.alert(fingerprint)) else {
        return false;
    };
    let window = chrono::Duration::seconds(policy.window_s as i64);
    member.flapping
        || member.changes.iter().filter(|t| now - **t < window).count() + 1
            >= policy.changes as usize
}

/// Records a status change of member `fingerprint` at `now`; marks it (and
/// the incident) flapping when the change reaches the threshold.
pub fn record_change(inc: &mut Incident, fingerprint: &str, now: DateTime<Utc>) {
    let Some(policy) = inc.flap_policy else {
        return;
    };
    let Some(member) = inc.alerts.iter_mut().find(|a| a.fingerprint == fingerprint) else {
        return;
    };
    if member.flapping {
        return;
    }
    let member = Arc::make_mut(member);
    let window = chrono::Duration::seconds(policy.window_s as i64);
    member.changes.retain(|t| now - *t < window);
    member.changes.push(now);
    let keep = policy.changes as usize;
    if member.changes.len() > keep {
        let excess = member.changes.len() - keep;
        member.changes.drain(..excess);
    }
    if member.changes.len() >= keep {
        member.flapping = true;
        member.changes.clear();
        let who = super::lifecycle::describe(
            member.labels.get("alertname").map(String::as_str),
            &member.fingerprint,
            &member.labels,
        );
        inc.flapping = true;
        inc.push_timeline(
            now,
            "flapping_started",
            format!(
                "{who} changed status {} times within {}s: flapping; it resolves or \
                 reopens nothing until it has kept its status for {}s",
                policy.changes, policy.window_s, policy.settle_s
            ),
        );
    }
}

/// Alerts that have kept their status for `settle_s` stop flapping. Returns
/// when the last of them settled, if any did.
pub fn settle(inc: &mut Incident, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let policy = inc.flap_policy?;
    if !inc.flapping {
        return None;
    }
    let settle = chrono::Duration::seconds(policy.settle_s as i64);
    let mut settled: Vec<(DateTime<Utc>, String)> = Vec::new();
    for member in inc.alerts.iter_mut().filter(|a| a.flapping) {
        let at = member.status_changed_at + settle;
        if at <= now {
            let member = Arc::make_mut(member);
            member.flapping = false;
            let who = super::lifecycle::describe(
                member.labels.get("alertname").map(String::as_str),
                &member.fingerprint,
                &member.labels,
            );
            settled.push((
                at,
                format!(
                    "{who} kept its status ({}) for {}s",
                    member.status.as_str(),
                    policy.settle_s
                ),
            ));
        }
    }
    settled.sort();
    let last = settled.last().map(|(at, _)| *at);
    for (at, cause) in settled {
        inc.push_timeline(at, "flapping_stopped", cause);
    }
    inc.flapping = inc.alerts.iter().any(|a| a.flapping);
    if let Some(at) = last
        && !inc.flapping
    {
        inc.updated_at = inc.updated_at.max(at);
    }
    last
}

/// When the next flapping alert settles, if one flaps.
pub fn next_due(inc: &Incident) -> Option<DateTime<Utc>> {
    let policy = inc.flap_policy?;
    inc.alerts
        .iter()
        .filter(|a| a.flapping)
        .map(|a| a.status_changed_at + chrono::Duration::seconds(policy.settle_s as i64))
        .min()
}

/// Flapping member alerts (for the metrics).
pub fn flapping_alerts(inc: &Incident) -> usize {
    inc.alerts.iter().filter(|a| a.flapping).count()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{DateTime, TimeZone, Utc};

    use super::*;
    use crate::alert::{Alert, Status};
    use crate::rules::RuleSet;
    use crate::simulate::Simulation;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn alert(name: &str, status: Status, at: DateTime<Utc>) -> Alert {
        Alert::for_test(&[("alertname", name)], status, at)
    }

    /// Two rules: `steady` says nothing about flapping, `bouncy` turns it on
    /// with its own threshold.
    fn sim(config: &str) -> Simulation {
        let rules = RuleSet::from_sources(&[(
            "r.yaml".into(),
            "rules:\n  - name: steady\n    match: [alertname=\"Steady\"]\n    incident: {title: s, impact: low, urgency: low}\n  - name: bouncy\n    match: [alertname=\"Bouncy\"]\n    incident:\n      title: b\n      impact: low\n      urgency: low\n      flapping: {changes: 4}\n".into(),
        )])
        .unwrap();
        let config = crate::config::parse(
            std::path::Path::new("c.yaml"),
            config,
            &Default::default(),
            |_| None,
        )
        .unwrap();
        Simulation::configured(Arc::new(rules), Some(&config)).unwrap()
    }

    async fn bounce(sim: &Simulation, name: &str, changes: i64) {
        for i in 0..changes {
            let status = if i % 2 == 0 {
                Status::Firing
            } else {
                Status::Resolved
            };
            sim.feed("test", vec![alert(name, status, t(i * 10))], t(i * 10))
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn detection_is_off_unless_the_config_or_the_rule_turns_it_on() {
        let s = sim("");
        bounce(&s, "Steady", 5).await;
        bounce(&s, "Bouncy", 4).await;
        let all = s.incidents().await.unwrap();
        let steady = all.iter().find(|i| i.rule == "steady").unwrap();
        let bouncy = all.iter().find(|i| i.rule == "bouncy").unwrap();
        assert!(!steady.flapping && steady.flap_policy.is_none());
        assert_eq!(steady.reopen_count, 2, "no detection: it churns");
        // The rule's block turns it on, with the config's window and settle time.
        assert_eq!(
            bouncy.flap_policy,
            Some(FlapPolicy {
                changes: 4,
                ..FlapPolicy::default()
            })
        );
        assert!(bouncy.flapping);
    }

    #[tokio::test]
    async fn a_rule_can_turn_off_what_the_config_turns_on() {
        let rules = RuleSet::from_sources(&[(
            "r.yaml".into(),
            "rules:\n  - name: quiet\n    incident: {title: q, impact: low, urgency: low, flapping: {enabled: false}}\n".into(),
        )])
        .unwrap();
        let config = crate::config::parse(
            std::path::Path::new("c.yaml"),
            "flapping: {enabled: true, changes: 2}\n",
            &Default::default(),
            |_| None,
        )
        .unwrap();
        let s = Simulation::configured(Arc::new(rules), Some(&config)).unwrap();
        bounce(&s, "Any", 3).await;
        let inc = &s.incidents().await.unwrap()[0];
        assert!(inc.flap_policy.is_none() && !inc.flapping);
    }

    #[tokio::test]
    async fn with_the_config_on_every_rule_flaps_and_settles() {
        let s = sim("flapping: {enabled: true, changes: 3, window_s: 60, settle_s: 120}\n");
        bounce(&s, "Steady", 5).await;
        let inc = &s.incidents().await.unwrap()[0];
        assert!(inc.flapping);
        // Last change (firing) at 40s: settled at 160s, not before.
        assert_eq!(next_due(inc), Some(t(160)));
        s.advance(t(159)).await.unwrap();
        assert!(s.incidents().await.unwrap()[0].flapping);
        s.advance(t(160)).await.unwrap();
        let inc = &s.incidents().await.unwrap()[0];
        assert!(!inc.flapping);
        assert_eq!(inc.alerts[0].status, Status::Firing);
        assert_eq!(inc.timeline.last().map(|e| e.at), Some(t(160)));
    }

    #[test]
    fn settings_check_their_values() {
        let bad = FlapSettings {
            changes: Some(1),
            window_s: Some(0),
            ..FlapSettings::default()
        };
        let fields: Vec<_> = bad.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["changes", "window_s"]);
        assert!(FlapSettings::default().problems().is_empty());
    }
}
