//! Reads and validates the services file (`topology.services_file` in the
//! daemon config). Every problem is reported at once, each at file:line:
//!
//! ```yaml
//! services:
//!   - name: checkout-api                 # required, unique; letters, digits, _ - .
//!     description: Checkout REST API     # optional
//!     match: [service="checkout-api"]    # required: Alertmanager matchers, all must hold
//!     owner: payments                    # assignment group when it is the root cause
//!     criticality: high                  # high | medium | low: impact at least this
//!     configuration_items: [checkout-api-eu1]
//!     depends_on: [postgres, redis-cache]
//! ```

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::{Service, Topology};
use crate::config::ConfigError;
use crate::rules::locate::Positions;
use crate::rules::{LabelMatchers, Level};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    services: Vec<RawService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(rename = "match", default)]
    matchers: Vec<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    criticality: Option<String>,
    #[serde(default)]
    configuration_items: Vec<String>,
    #[serde(default)]
    depends_on: Vec<String>,
}

/// Reads the services file at `path`.
pub fn load(path: &Path) -> Result<Topology, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read services file: {e}"),
        }]
    })?;
    parse(path, &text)
}

/// Validates the services file `text` (read from `path`, for messages).
pub fn parse(path: &Path, text: &str) -> Result<Topology, Vec<ConfigError>> {
    let raw: RawFile = match serde_norway::from_str::<Option<RawFile>>(text) {
        Ok(raw) => raw.unwrap_or(RawFile {
            services: Vec::new(),
        }),
        Err(e) => {
            let loc = e.location();
            return Err(vec![ConfigError {
                file: path.to_path_buf(),
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                message: e.to_string(),
            }]);
        }
    };
    let positions = Positions::index(text);
    let mut errors = Vec::new();
    let mut at = |key: &str, message: String| {
        let pos = positions.get(key);
        errors.push(ConfigError {
            file: path.to_path_buf(),
            line: Some(pos.line),
            column: Some(pos.column),
            message,
        });
    };

    let mut first_at: HashMap<&str, usize> = HashMap::new();
    for (i, s) in raw.services.iter().enumerate() {
        let here = format!("services.{i}");
        if s.name.is_empty()
            || !s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            at(
                &format!("{here}.name"),
                format!(
                    "service name {:?} must be letters, digits, `_`, `-` or `.`",
                    s.name
                ),
            );
        }
        match first_at.get(s.name.as_str()) {
            Some(&first) => at(
                &format!("{here}.name"),
                format!(
                    "duplicate service name {:?}, first defined at line {}",
                    s.name,
                    positions.get(&format!("services.{first}.name")).line
                ),
            ),
            None => {
                first_at.insert(&s.name, i);
            }
        }
    }

    let mut services = Vec::with_capacity(raw.services.len());
    for (i, s) in raw.services.iter().enumerate() {
        let here = format!("services.{i}");
        let matchers = if s.matchers.is_empty() {
            at(
                &here,
                format!(
                    "service {:?} needs `match:`: the label matchers that select its alerts",
                    s.name
                ),
            );
            LabelMatchers::default()
        } else {
            LabelMatchers::parse(&s.matchers).unwrap_or_else(|bad| {
                for (j, msg) in bad {
                    at(&format!("{here}.match.{j}"), msg);
                }
                LabelMatchers::default()
            })
        };
        let criticality = s.criticality.as_deref().and_then(|c| {
            let level = Level::parse(c);
            if level.is_none() {
                at(
                    &format!("{here}.criticality"),
                    format!("criticality must be high, medium or low, not {c:?}"),
                );
            }
            level
        });
        for (j, d) in s.depends_on.iter().enumerate() {
            if d == &s.name {
                at(
                    &format!("{here}.depends_on.{j}"),
                    format!("service {:?} depends on itself", s.name),
                );
            } else if !first_at.contains_key(d.as_str()) {
                at(
                    &format!("{here}.depends_on.{j}"),
                    format!(
                        "service {:?} depends on {d:?}, which is not a service in this file",
                        s.name
                    ),
                );
            }
        }
        services.push(Service {
            name: s.name.clone(),
            description: s.description.clone(),
            matchers,
            owner: s.owner.clone().filter(|o| !o.trim().is_empty()),
            criticality,
            configuration_items: s.configuration_items.clone(),
            depends_on: s.depends_on.clone(),
        });
    }

    for cycle in cycles(&raw.services, &first_at) {
        let first = cycle[0];
        let names: Vec<&str> = cycle
            .iter()
            .chain(std::iter::once(&first))
            .map(|&i| raw.services[i].name.as_str())
            .collect();
        at(
            &format!("services.{first}.depends_on"),
            format!("dependency cycle: {}", names.join(" -> ")),
        );
    }

    if errors.is_empty() {
        Ok(Topology::new(services))
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(errors)
    }
}

/// Each dependency cycle once (as service indexes, starting from its
/// earliest-defined service). Self-dependencies are reported on their own.
fn cycles(services: &[RawService], index: &HashMap<&str, usize>) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        n: usize,
        services: &[RawService],
        index: &HashMap<&str, usize>,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        found: &mut Vec<Vec<usize>>,
    ) {
        marks[n] = Mark::OnPath;
        path.push(n);
        for d in &services[n].depends_on {
            let Some(&m) = index.get(d.as_str()) else {
                continue;
            };
            if m == n {
                continue;
            }
            match marks[m] {
                Mark::New => visit(m, services, index, marks, path, found),
                Mark::OnPath => {
                    if let Some(start) = path.iter().position(|&p| p == m) {
                        let mut cycle = path[start..].to_vec();
                        let min = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, s)| **s)
                            .map_or(0, |(i, _)| i);
                        cycle.rotate_left(min);
                        if !found.contains(&cycle) {
                            found.push(cycle);
                        }
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[n] = Mark::Done;
    }
    let mut marks = vec![Mark::New; services.len()];
    let mut found = Vec::new();
    for n in 0..services.len() {
        // Duplicates are reported elsewhere; walk each name's first definition.
        if marks[n] == Mark::New && index.get(services[n].name.as_str()) == Some(&n) {
            visit(n, services, index, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse(Path::new("services.yaml"), text)
            .map(|_| Vec::new())
            .unwrap_or_else(|e| e.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn a_valid_file_loads_with_its_dependency_closure() {
        let t = parse(
            Path::new("s.yaml"),
            "services:\n  - name: api\n    match: [service=\"api\"]\n    depends_on: [db]\n    criticality: high\n  - name: db\n    match: ['service=~\"postgres|db\"']\n",
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.dependencies("api"), vec![("db", 1)]);
        let labels = [("service".to_string(), "postgres".to_string())].into();
        assert_eq!(t.service_of(&labels).map(|s| s.name.as_str()), Some("db"));
        assert_eq!(t.get("api").and_then(|s| s.criticality), Some(Level::High));
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_line() {
        let e = errors(
            "services:\n  - name: api\n    match: [service=\"api\"]\n    depends_on: [nope]\n  - name: api\n    match: ['service=~\"(\"']\n  - name: db\n    criticality: huge\n",
        );
        assert_eq!(e.len(), 5, "{e:#?}");
        assert!(
            e[0].starts_with("services.yaml:4:18:") && e[0].contains("\"nope\""),
            "{e:#?}"
        );
        assert!(
            e[1].starts_with("services.yaml:5:")
                && e[1].contains("duplicate service name \"api\", first defined at line 2"),
            "{e:#?}"
        );
        assert!(
            e[2].starts_with("services.yaml:6:") && e[2].contains("bad regex"),
            "{e:#?}"
        );
        assert!(
            e[3].starts_with("services.yaml:7:") && e[3].contains("needs `match:`"),
            "{e:#?}"
        );
        assert!(
            e[4].starts_with("services.yaml:8:") && e[4].contains("criticality"),
            "{e:#?}"
        );
    }

    #[test]
    fn a_cycle_is_named_service_by_service() {
        let e = errors(
            "services:\n  - name: a\n    match: [s=a]\n    depends_on: [b]\n  - name: b\n    match: [s=b]\n    depends_on: [c]\n  - name: c\n    match: [s=c]\n    depends_on: [a]\n  - name: d\n    match: [s=d]\n    depends_on: [d]\n",
        );
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e[0].contains("dependency cycle: a -> b -> c -> a"),
            "{e:#?}"
        );
        assert!(e[1].contains("\"d\" depends on itself"), "{e:#?}");
    }

    #[test]
    fn unknown_fields_and_bad_yaml_are_refused_with_their_line() {
        let e = errors("services:\n  - name: a\n    match: [s=a]\n    depnds_on: [b]\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("services.yaml:4:") && e[0].contains("unknown field"),
            "{e:#?}"
        );
    }
}
