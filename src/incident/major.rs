//! Major incidents: an incident big enough to be run as one (ITIL major
//! incident procedure) is flagged `major: true`, says so in its timeline and
//! is routed to the major-incident adapters as well. The condition is global
//! (daemon config `major_incident:`) and per rule (`incident.major:`); either
//! one holding makes the incident major, and once major it stays major.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::Incident;

/// When an incident is major; every bound left out is not checked, and the
/// incident is major as soon as one bound is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MajorCondition {
    /// Priority this urgent or more (1 = only priority 1).
    #[serde(default)]
    pub priority: Option<u8>,
    /// At least this many distinct services affected.
    #[serde(default)]
    pub min_services: Option<usize>,
    /// At least this many distinct configuration items.
    #[serde(default)]
    pub min_configuration_items: Option<usize>,
    /// At least this many alerts (symptoms not counted).
    #[serde(default)]
    pub min_alerts: Option<usize>,
}

impl MajorCondition {
    /// A problem with the bounds, in words, if any.
    pub fn check(&self) -> Option<String> {
        if let Some(p) = self.priority
            && !(1..=5).contains(&p)
        {
            return Some(format!("major.priority must be 1..=5, not {p}"));
        }
        if [
            self.min_services,
            self.min_configuration_items,
            self.min_alerts,
        ]
        .contains(&Some(0))
        {
            return Some("major minimums must be at least 1".into());
        }
        None
    }

    /// Why `inc` is major under this condition, if it is.
    pub fn reason(&self, inc: &Incident) -> Option<String> {
        if let Some(p) = self.priority
            && inc.priority <= p
        {
            return Some(format!(
                "priority {} (major at {p} or more urgent)",
                inc.priority
            ));
        }
        let services = if inc.topology.affected_services.is_empty() {
            usize::from(inc.service.is_some())
        } else {
            inc.topology.affected_services.len()
        };
        if let Some(n) = self.min_services
            && services >= n
        {
            return Some(format!("{services} services affected (major at {n})"));
        }
        let cis = inc.configuration_items.len();
        if let Some(n) = self.min_configuration_items
            && cis >= n
        {
            return Some(format!("{cis} configuration items affected (major at {n})"));
        }
        let alerts = inc.counted_alerts();
        if let Some(n) = self.min_alerts
            && alerts >= n
        {
            return Some(format!("{alerts} alerts (major at {n})"));
        }
        None
    }
}

/// The daemon-wide major-incident settings (config `major_incident:`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MajorPolicy {
    /// As [`MajorCondition`] (written inline, as a rule's `major:` is).
    #[serde(default)]
    pub priority: Option<u8>,
    #[serde(default)]
    pub min_services: Option<usize>,
    #[serde(default)]
    pub min_configuration_items: Option<usize>,
    #[serde(default)]
    pub min_alerts: Option<usize>,
    /// Adapters a major incident is routed to as well.
    #[serde(default)]
    pub route: Vec<String>,
}

impl MajorPolicy {
    pub fn condition(&self) -> MajorCondition {
        MajorCondition {
            priority: self.priority,
            min_services: self.min_services,
            min_configuration_items: self.min_configuration_items,
            min_alerts: self.min_alerts,
        }
    }
}

/// Flags `inc` major when the global or its rule's condition holds (an open
/// incident only; a major incident stays major).
pub fn apply(
    inc: &mut Incident,
    policy: &MajorPolicy,
    rule: Option<&MajorCondition>,
    now: DateTime<Utc>,
) {
    if inc.major || !inc.state.is_open() {
        return;
    }
    let why = policy
        .condition()
        .reason(inc)
        .map(|r| format!("{r}, daemon-wide condition"))
        .or_else(|| {
            rule.and_then(|c| c.reason(inc))
                .map(|r| format!("{r}, rule {}", inc.rule))
        });
    let Some(why) = why else {
        return;
    };
    inc.major = true;
    for adapter in &policy.route {
        if !inc.route.contains(adapter) {
            inc.route.push(adapter.clone());
        }
    }
    let routed = if policy.route.is_empty() {
        String::new()
    } else {
        format!("; routed to {}", policy.route.join(", "))
    };
    inc.push_timeline(
        now,
        "major",
        format!("declared a major incident: {why}{routed}"),
    );
    inc.updated_at = now;
}
