//! What the services of an incident's alerts say about it: the root-cause
//! candidate, the affected services, each alert's role, and the fields that
//! follow the root cause (title, service, owner, configuration items, impact).
//! Pure: the engine calls it after every topology change.

use chrono::{DateTime, Utc};

use super::{AlertRole, Topology};
use std::sync::Arc;

use crate::alert::Alert;
use crate::incident::Incident;
use crate::rules::{Action, IncidentSpec, Level, RuleSet};

/// Recomputes the topology fields of `inc` (see the module header).
pub fn annotate(inc: &mut Incident, topo: &Topology, rules: &RuleSet, now: DateTime<Utc>) {
    // Services in order of their first alert; symptoms do not make a service
    // a root-cause candidate, but it is still affected.
    let mut affected: Vec<&str> = Vec::new();
    let mut failing: Vec<&str> = Vec::new();
    for a in &inc.alerts {
        let Some(s) = topo.service_of(&a.labels) else {
            continue;
        };
        if !affected.contains(&s.name.as_str()) {
            affected.push(&s.name);
        }
        if a.role != Some(AlertRole::Symptom) && !failing.contains(&s.name.as_str()) {
            failing.push(&s.name);
        }
    }
    // The deepest failing dependency: a failing service none of whose
    // dependencies fail; of several, the one most other failing services
    // depend on, then the first to fail.
    let root = failing
        .iter()
        .filter(|s| !failing.iter().any(|o| o != *s && topo.depends_on(s, o)))
        .max_by_key(|s| {
            let dependents = failing.iter().filter(|o| topo.depends_on(o, s)).count();
            let first = failing.iter().position(|o| o == *s).unwrap_or(0);
            (dependents, std::cmp::Reverse(first))
        })
        .map(|s| s.to_string());
    let Some(root) = root else {
        if !affected.is_empty() {
            inc.topology.affected_services = affected.iter().map(|s| s.to_string()).collect();
        }
        return;
    };
    // The first candidate is the incident's own service: news only when a
    // deeper dependency takes over.
    if let Some(old) = &inc.topology.root_cause
        && *old != root
    {
        let why = format!("root cause candidate is now {root}: {old} depends on it");
        inc.push_timeline(now, "root_cause", why);
    }
    inc.topology.root_cause = Some(root.clone());
    let mut ordered = vec![root.clone()];
    ordered.extend(
        affected
            .iter()
            .filter(|s| **s != root)
            .map(|s| s.to_string()),
    );
    inc.topology.affected_services = ordered;

    for a in &mut inc.alerts {
        if a.role == Some(AlertRole::Symptom) {
            continue;
        }
        let role = topo.service_of(&a.labels).map(|s| {
            if s.name == root {
                AlertRole::RootCause
            } else {
                AlertRole::Dependent
            }
        });
        // Only a role that changes unshares the alert.
        if a.role != role {
            Arc::make_mut(a).role = role;
        }
    }

    let Some(service) = topo.get(&root) else {
        return;
    };
    inc.service = Some(root.clone());
    if let Some(owner) = &service.owner {
        inc.assignment_group = Some(owner.clone());
    }
    for name in &inc.topology.affected_services {
        if let Some(s) = topo.get(name) {
            for ci in &s.configuration_items {
                if !inc.configuration_items.contains(ci) {
                    inc.configuration_items.push(ci.clone());
                }
            }
        }
    }
    // Criticality raises impact (never lowers it), and priority follows.
    let raised = inc
        .topology
        .affected_services
        .iter()
        .filter_map(|n| topo.get(n).and_then(|s| s.criticality))
        .fold(inc.impact, higher);
    if raised != inc.impact {
        inc.impact = raised;
        inc.priority = rules.priority(inc.impact, inc.urgency);
    }
    retitle(inc, topo, rules, &root);
}

fn higher(a: Level, b: Level) -> Level {
    let rank = |l: Level| match l {
        Level::High => 2,
        Level::Medium => 1,
        Level::Low => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// Raises the incident's impact and urgency to at least those given (an
/// alert of a more urgent rule joined it, or an incident was merged into it);
/// priority follows. Never lowers them.
pub fn escalate(inc: &mut Incident, impact: Level, urgency: Level, rules: &RuleSet) {
    let (i, u) = (higher(inc.impact, impact), higher(inc.urgency, urgency));
    if (i, u) != (inc.impact, inc.urgency) {
        inc.impact = i;
        inc.urgency = u;
        inc.priority = rules.priority(i, u);
    }
}

/// The title (and category) as the most urgent rule among the root cause's
/// alerts words it for its first such alert, counting them: it names what
/// broke, not what broke first nor what merely warned.
fn retitle(inc: &mut Incident, topo: &Topology, rules: &RuleSet, root: &str) {
    let on_root: Vec<Alert> = inc
        .alerts
        .iter()
        .filter(|a| a.role == Some(AlertRole::RootCause))
        .filter(|a| topo.service_of(&a.labels).is_some_and(|s| s.name == root))
        .map(|a| a.as_alert())
        .collect();
    let spec_of = |a: &Alert| {
        rules.evaluate(a).into_iter().find_map(|d| match d.action {
            Action::Incident(spec) => Some(spec),
            _ => None,
        })
    };
    let specs: Vec<Option<Arc<IncidentSpec>>> = on_root.iter().map(spec_of).collect();
    let best = specs
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
        .min_by_key(|(i, s)| (s.priority, *i));
    let (first, spec, count) = match best {
        Some((i, spec)) => {
            let same = specs
                .iter()
                .filter(|s| s.as_ref().is_some_and(|s| Arc::ptr_eq(s, spec)))
                .count();
            (i, spec.clone(), same)
        }
        None => match rules.incident_spec(&inc.rule) {
            Some(spec) if !on_root.is_empty() => (0, spec, on_root.len()),
            _ => return,
        },
    };
    inc.title = spec.render(&on_root[first], count).title;
    if spec.category.is_some() {
        inc.category = spec.category.clone();
        inc.subcategory = spec.subcategory.clone();
    }
}
