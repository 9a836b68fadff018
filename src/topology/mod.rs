//! Service topology: a small CMDB (`services.yaml`) naming the services, the
//! label matchers that tell which alerts are theirs, their owners, criticality,
//! configuration items and what each depends on; and what the engine does with
//! it.
//!
//! - this module: the validated [`Topology`] (dependency closure computed once)
//!   and the topology fields an incident carries ([`IncidentTopology`]).
//! - [`load`]: reads and validates the services file, every problem at once
//!   with file:line (unknown dependencies, cycles, duplicates, bad matchers).
//! - [`correlate`]: the engine's path for alerts that topology or inhibition
//!   concern: join the open incident of a failing dependency, pull dependents'
//!   incidents into the cause's, attach inhibited alerts as symptoms.
//! - [`annotate`]: root cause, affected services, title, owner and impact of an
//!   incident from the services its alerts belong to (pure).

pub mod annotate;
pub mod correlate;
pub mod load;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::rules::{LabelMatchers, Level};

/// What an alert is to the incident topology or inhibition put it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertRole {
    /// An alert on the incident's root-cause service.
    RootCause,
    /// An alert on a service that depends on the root cause.
    Dependent,
    /// Inhibited by a firing alert of the incident (`inhibits:`): kept for
    /// the record, raises nothing of its own.
    Symptom,
}

/// The topology fields of an incident, shown by the REST API and
/// `incidentd replay --json` at the incident's top level.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentTopology {
    /// The root-cause candidate: the deepest failing dependency among the
    /// incident's services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cause: Option<String>,
    /// Every service with an alert in the incident, root cause first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affected_services: Vec<String>,
    /// Set on an incident whose alerts moved into the incident of its cause:
    /// that incident's id. Such an incident is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// Incidents merged into this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
}

/// One service of the services file, validated.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub description: Option<String>,
    matchers: LabelMatchers,
    /// Assignment group of incidents whose root cause this service is.
    pub owner: Option<String>,
    /// Raises the impact of incidents affecting the service to at least this.
    pub criticality: Option<Level>,
    pub configuration_items: Vec<String>,
    pub depends_on: Vec<String>,
}

impl Service {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers.matches(labels)
    }
}

/// The services and their dependency closure. Immutable once loaded.
#[derive(Debug, Default)]
pub struct Topology {
    services: Vec<Service>,
    index: HashMap<String, usize>,
    /// Per service: every (transitive) dependency with its distance, nearest first.
    deps: Vec<Vec<(usize, u32)>>,
    /// Per service: every (transitive) dependent, nearest first.
    dependents: Vec<Vec<usize>>,
}

impl Topology {
    /// Builds the closure; `services` must be validated (known dependencies,
    /// no cycles), as [`load`] does.
    pub(crate) fn new(services: Vec<Service>) -> Topology {
        let index: HashMap<String, usize> = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let direct: Vec<Vec<usize>> = services
            .iter()
            .map(|s| {
                s.depends_on
                    .iter()
                    .filter_map(|d| index.get(d).copied())
                    .collect()
            })
            .collect();
        let mut deps = Vec::with_capacity(services.len());
        for start in 0..services.len() {
            // Breadth first: the distance to each dependency is the shortest path.
            let mut seen: Vec<(usize, u32)> = Vec::new();
            let mut frontier = vec![start];
            let mut depth = 0;
            while !frontier.is_empty() && depth <= services.len() as u32 {
                depth += 1;
                let mut next = Vec::new();
                for s in frontier {
                    for &d in &direct[s] {
                        if d != start && !seen.iter().any(|(x, _)| *x == d) {
                            seen.push((d, depth));
                            next.push(d);
                        }
                    }
                }
                frontier = next;
            }
            deps.push(seen);
        }
        let mut dependents: Vec<Vec<(usize, u32)>> = vec![Vec::new(); services.len()];
        for (s, ds) in deps.iter().enumerate() {
            for &(d, depth) in ds {
                dependents[d].push((s, depth));
            }
        }
        let dependents = dependents
            .into_iter()
            .map(|mut v| {
                v.sort_by_key(|(s, depth)| (*depth, *s));
                v.into_iter().map(|(s, _)| s).collect()
            })
            .collect();
        Topology {
            services,
            index,
            deps,
            dependents,
        }
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn get(&self, name: &str) -> Option<&Service> {
        self.index.get(name).map(|&i| &self.services[i])
    }

    /// The service an alert belongs to: the first in file order whose
    /// matchers hold.
    pub fn service_of(&self, labels: &BTreeMap<String, String>) -> Option<&Service> {
        self.services.iter().find(|s| s.matches(labels))
    }

    /// Every service `name` depends on, directly or not, with its distance,
    /// nearest first.
    pub fn dependencies(&self, name: &str) -> Vec<(&str, u32)> {
        self.index.get(name).map_or_else(Vec::new, |&i| {
            self.deps[i]
                .iter()
                .map(|&(d, depth)| (self.services[d].name.as_str(), depth))
                .collect()
        })
    }

    /// Every service that depends on `name`, directly or not, nearest first.
    pub fn dependents(&self, name: &str) -> Vec<&str> {
        self.index.get(name).map_or_else(Vec::new, |&i| {
            self.dependents[i]
                .iter()
                .map(|&d| self.services[d].name.as_str())
                .collect()
        })
    }

    /// Whether `service` depends on `on`, directly or not.
    pub fn depends_on(&self, service: &str, on: &str) -> bool {
        self.dependencies(service).iter().any(|(d, _)| *d == on)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, deps: &[&str]) -> Service {
        Service {
            name: name.into(),
            description: None,
            matchers: LabelMatchers::default(),
            owner: None,
            criticality: None,
            configuration_items: Vec::new(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn dependencies_are_transitive_with_their_distance() {
        let t = Topology::new(vec![
            svc("frontend", &["checkout-api"]),
            svc("checkout-api", &["postgres", "redis"]),
            svc("postgres", &[]),
            svc("redis", &[]),
        ]);
        assert_eq!(
            t.dependencies("frontend"),
            vec![("checkout-api", 1), ("postgres", 2), ("redis", 2)]
        );
        assert_eq!(t.dependents("postgres"), vec!["checkout-api", "frontend"]);
        assert!(t.depends_on("frontend", "postgres"));
        assert!(!t.depends_on("postgres", "frontend"));
        assert!(t.dependencies("nope").is_empty());
    }

    #[test]
    fn a_diamond_counts_each_dependency_once_at_its_shortest_distance() {
        let t = Topology::new(vec![
            svc("a", &["b", "c"]),
            svc("b", &["d"]),
            svc("c", &["d"]),
            svc("d", &[]),
        ]);
        assert_eq!(t.dependencies("a"), vec![("b", 1), ("c", 1), ("d", 2)]);
        assert_eq!(t.dependents("d"), vec!["b", "c", "a"]);
    }
}
