//! Rule unit tests, `promtool test rules` style: alerts on a time axis go
//! through the rules on a simulated clock, and the incidents at given times are
//! compared with what the test expects.
//!
//! ```yaml
//! # rules/tests/target-down.yaml
//! rules_dir: ..              # optional; default: the parent of this file's directory
//! config: config/incidents.yaml  # optional; a daemon config, relative to this file:
//!                            # its flapping, sla, heartbeats, incidents settings apply
//! start: 2026-11-25T04:00:00Z  # optional; time 0s of the axis (default 2026-01-01T00:00:00Z)
//! tests:
//!   - name: three instances of one service down are one incident
//!     alerts:
//!       - at: 0s
//!         labels: {alertname: TargetDown, service: checkout-api, instance: a:1}
//!         annotations: {summary: a is down}     # optional
//!         status: firing                         # default firing
//!     actions:                # optional; what people and sources do
//!       - at: 10m
//!         acknowledge: 1      # or resolve: N; N-th incident listed then, oldest first
//!         by: alice           # optional, default test
//!       - at: 12m
//!         activity: {kind: kafka, name: alerts}  # a source seen active (heartbeats)
//!     expect:
//!       - at: 1m
//!         incidents:          # all incidents at that time, oldest first
//!           - title: checkout-api is down
//!             priority: 1
//!             alert_count: 3
//!             state: new
//! ```
//!
//! Expected incident fields, each optional: `title`, `description`, `state`,
//! `priority`, `impact`, `urgency`, `category`, `subcategory`,
//! `assignment_group`, `service`, `configuration_items`, `alert_count`, `rule`,
//! `reopen_count`, `major`, `flapping`, `flapping_alerts` (members flapping),
//! `route`, `timeline` (every event name, in order), `sla_response_breached`,
//! `sla_resolution_breached`. Times: `90s`, `5m`, `1h30m`, or plain seconds.
//! At equal times alerts come first, then actions, then checks.
//!
//! Without `config:` the simulation runs on the daemon's built-in settings (no
//! SLA, no heartbeats, flap detection off). The simulation is built from the
//! validated config (`Simulation::configured`), so a config error fails the
//! file with the config's own file:line messages.
//!
//! `reopen_count`, `major`, `root_cause`, `affected_services` (a list),
//! `merged` (merged into another incident), `symptoms` (how many alerts are
//! inhibited symptoms), `route` (a list). Times: `90s`, `5m`, `1h30m`, or
//! plain seconds.
//!
//! `config: ../../examples/topology.yaml` (relative to the test file) runs the
//! tests with that daemon config's incident settings (services file, major
//! incidents); the rules still come from `rules_dir`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

use crate::alert::{Alert, Status, label_fingerprint, normalize_severity};
use crate::incident::Incident;
use crate::rules::RuleSet;
use crate::simulate::Simulation;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rules_dir: Option<PathBuf>,
    /// A daemon config (relative to the test file) whose settings the
    /// simulation runs on: flapping, SLA, heartbeats, routes, services file,
    /// major incidents.
    #[serde(default)]
    config: Option<PathBuf>,
    #[serde(default)]
    start: Option<DateTime<Utc>>,
    tests: Vec<TestCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    #[serde(default)]
    alerts: Vec<TestAlert>,
    /// What people and sources do on the time axis.
    #[serde(default)]
    actions: Vec<TestAction>,
    expect: Vec<Expectation>,
}

/// One action: exactly one of `acknowledge`, `resolve` (the incident's number
/// in the list at that time, oldest first, from 1) or `activity`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestAction {
    at: At,
    #[serde(default)]
    acknowledge: Option<usize>,
    #[serde(default)]
    resolve: Option<usize>,
    /// Who acknowledges or resolves (default `test`).
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    activity: Option<crate::heartbeat::RawSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestAlert {
    at: At,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    status: Option<Status>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectation {
    at: At,
    incidents: Vec<ExpectedIncident>,
}

/// Every field optional: only what the test names is compared.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExpectedIncident {
    title: Option<String>,
    description: Option<String>,
    state: Option<String>,
    priority: Option<u8>,
    impact: Option<String>,
    urgency: Option<String>,
    category: Option<String>,
    subcategory: Option<String>,
    assignment_group: Option<String>,
    service: Option<String>,
    configuration_items: Option<Vec<String>>,
    alert_count: Option<usize>,
    rule: Option<String>,
    reopen_count: Option<u32>,
    major: Option<bool>,
    flapping: Option<bool>,
    /// Member alerts flapping now.
    flapping_alerts: Option<usize>,
    route: Option<Vec<String>>,
    /// The timeline's event names, in order (all of them).
    timeline: Option<Vec<String>>,
    sla_response_breached: Option<bool>,
    sla_resolution_breached: Option<bool>,
    root_cause: Option<String>,
    affected_services: Option<Vec<String>>,
    /// Whether the incident was merged into another (its id is random).
    merged: Option<bool>,
    /// Alerts attached as symptoms (inhibited).
    symptoms: Option<usize>,
}

/// An offset on the test's time axis.
#[derive(Clone, Copy)]
struct At(i64);

impl<'de> Deserialize<'de> for At {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(At(s)),
            Raw::Text(t) => parse_offset(&t).map(At).map_err(serde::de::Error::custom),
        }
    }
}

/// `1h30m`, `90s`, `5m`, `2d`, or plain seconds.
pub fn parse_offset(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i64>() {
        return Ok(n);
    }
    let mut total = 0i64;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("bad duration {text:?}: unknown unit {c:?}")),
        };
        let n: i64 = digits
            .parse()
            .map_err(|_| format!("bad duration {text:?}: expected digits before {c:?}"))?;
        total += n * unit;
        digits.clear();
    }
    if !digits.is_empty() || t.is_empty() {
        return Err(format!("bad duration {text:?}: use e.g. 90s, 5m, 1h30m"));
    }
    Ok(total)
}

/// The outcome of running rule test files.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    /// One rendered failure per failed test case (or unreadable file).
    pub failures: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.failures {
            let _ = writeln!(out, "{f}");
        }
        let _ = write!(
            out,
            "{} passed, {} failed",
            self.passed,
            self.failures.len()
        );
        out
    }
}

/// Runs every test file at `path` (a file, or a directory's `*.yaml`). With
/// `rules`, tests run against that rule set instead of their `rules_dir`.
pub async fn run_path(path: &Path, rules: Option<Arc<RuleSet>>) -> Report {
    let mut report = Report::default();
    let files = match test_files(path) {
        Ok(f) => f,
        Err(e) => {
            report.failures.push(format!("{}: {e}", path.display()));
            return report;
        }
    };
    if files.is_empty() {
        report
            .failures
            .push(format!("{}: no test files (*.yaml)", path.display()));
    }
    for file in files {
        run_file(&file, rules.clone(), &mut report).await;
    }
    report
}

fn test_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| e.to_string())?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

async fn run_file(file: &Path, rules: Option<Arc<RuleSet>>, report: &mut Report) {
    let parsed: Result<TestFile, String> = std::fs::read_to_string(file)
        .map_err(|e| e.to_string())
        .and_then(|t| {
            serde_norway::from_str(&t).map_err(|e| match e.location() {
                Some(l) => format!("line {}:{}: {e}", l.line(), l.column()),
                None => e.to_string(),
            })
        });
    let tf = match parsed {
        Ok(tf) => tf,
        Err(e) => {
            report
                .failures
                .push(format!("FAIL {}: {e}", file.display()));
            return;
        }
    };
    let config = match &tf.config {
        None => None,
        Some(rel) => {
            let path = file.parent().unwrap_or(Path::new(".")).join(rel);
            match crate::config::load(&path, &crate::config::Overrides::default()) {
                Ok(c) => Some(c),
                Err(e) => {
                    report.failures.push(format!(
                        "FAIL {}: config {}:\n{e}",
                        file.display(),
                        path.display()
                    ));
                    return;
                }
            }
        }
    };
    let rules = match rules {
        Some(r) => r,
        None => {
            let base = file.parent().unwrap_or(Path::new("."));
            let dir = match &tf.rules_dir {
                Some(d) => base.join(d),
                None => base.parent().unwrap_or(Path::new(".")).to_path_buf(),
            };
            match RuleSet::load_dir(&dir) {
                Ok(r) => Arc::new(r),
                Err(e) => {
                    report.failures.push(format!(
                        "FAIL {}: rules in {}:\n{e}",
                        file.display(),
                        dir.display()
                    ));
                    return;
                }
            }
        }
    };
    let start = tf.start.unwrap_or_else(|| {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default()
    });
    for case in &tf.tests {
        match run_case(case, rules.clone(), config.as_ref(), start).await {
            Ok(()) => report.passed += 1,
            Err(diff) => {
                report
                    .failures
                    .push(format!("FAIL {}: {}\n{diff}", file.display(), case.name))
            }
        }
    }
}

/// Events of a case in time order; at equal times alerts come first, then
/// actions, then checks.
enum Event<'a> {
    Alert(&'a TestAlert),
    Action(&'a TestAction),
    Check(&'a Expectation),
}

async fn run_case(
    case: &TestCase,
    rules: Arc<RuleSet>,
    config: Option<&crate::config::Config>,
    start: DateTime<Utc>,
) -> Result<(), String> {
    let sim = Simulation::configured(rules, config).map_err(|e| e.to_string())?;
    let mut events: Vec<(i64, u8, Event<'_>)> = case
        .alerts
        .iter()
        .map(|a| (a.at.0, 0, Event::Alert(a)))
        .chain(case.actions.iter().map(|a| (a.at.0, 1, Event::Action(a))))
        .chain(case.expect.iter().map(|e| (e.at.0, 2, Event::Check(e))))
        .collect();
    events.sort_by_key(|(at, order, _)| (*at, *order));
    let mut diffs = String::new();
    for (offset, _, event) in events {
        let at = start + chrono::Duration::seconds(offset);
        match event {
            Event::Alert(a) => {
                let alert = test_alert(a, at);
                sim.feed("test", vec![alert], at)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Event::Action(action) => {
                act(&sim, action, offset, at, &mut diffs).await?;
            }
            Event::Check(exp) => {
                sim.advance(at).await.map_err(|e| e.to_string())?;
                let got = sim.incidents().await.map_err(|e| e.to_string())?;
                compare(offset, &exp.incidents, &got, &mut diffs);
            }
        }
    }
    if diffs.is_empty() { Ok(()) } else { Err(diffs) }
}

/// Runs one action; a mistake in the test (no such incident, not exactly one
/// action) is reported as a diff.
async fn act(
    sim: &Simulation,
    action: &TestAction,
    offset: i64,
    at: DateTime<Utc>,
    diffs: &mut String,
) -> Result<(), String> {
    let by = action.by.as_deref().unwrap_or("test");
    let given = [
        action.acknowledge.is_some(),
        action.resolve.is_some(),
        action.activity.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        let _ = writeln!(
            diffs,
            "  at {offset}s: an action needs exactly one of acknowledge, resolve, activity"
        );
        return Ok(());
    }
    if let Some(source) = &action.activity {
        return sim
            .activity(&source.kind, &source.name, at)
            .await
            .map_err(|e| e.to_string());
    }
    sim.advance(at).await.map_err(|e| e.to_string())?;
    let n = action.acknowledge.or(action.resolve).unwrap_or(0);
    let incidents = sim.incidents().await.map_err(|e| e.to_string())?;
    let Some(inc) = n.checked_sub(1).and_then(|i| incidents.get(i)) else {
        let _ = writeln!(
            diffs,
            "  at {offset}s: no incident {n} to act on ({} exist)",
            incidents.len()
        );
        return Ok(());
    };
    let result = if action.acknowledge.is_some() {
        sim.engine().acknowledge(&inc.id, by, at).await
    } else {
        sim.engine().resolve(&inc.id, by, at).await
    };
    if let Err(e) = result {
        let _ = writeln!(diffs, "  at {offset}s: incident {n}: {e}");
    }
    Ok(())
}

fn test_alert(a: &TestAlert, at: DateTime<Utc>) -> Alert {
    Alert {
        source: "test".into(),
        fingerprint: label_fingerprint(&a.labels),
        status: a.status.unwrap_or(Status::Firing),
        severity: a.labels.get("severity").map(|s| normalize_severity(s)),
        labels: a.labels.clone(),
        annotations: a.annotations.clone(),
        starts_at: None,
        ends_at: None,
        generator_url: None,
        received_at: at,
    }
}

fn compare(offset: i64, expected: &[ExpectedIncident], got: &[Incident], out: &mut String) {
    let at = format!("at {offset}s");
    if expected.len() != got.len() {
        let titles: Vec<String> = got
            .iter()
            .map(|i| {
                format!(
                    "{:?} ({}, {} alerts)",
                    i.title,
                    i.state.as_str(),
                    i.alert_count
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  {at}: expected {} incident(s), got {}: [{}]",
            expected.len(),
            got.len(),
            titles.join(", ")
        );
    }
    for (n, (exp, inc)) in expected.iter().zip(got).enumerate() {
        let mut field = |name: &str, want: Option<String>, have: String| {
            if let Some(want) = want
                && want != have
            {
                let _ = writeln!(
                    out,
                    "  {at}: incident {}: {name}: expected {want:?}, got {have:?}",
                    n + 1
                );
            }
        };
        field("title", exp.title.clone(), inc.title.clone());
        field(
            "description",
            exp.description.clone(),
            inc.description.clone(),
        );
        field("state", exp.state.clone(), inc.state.as_str().to_string());
        field(
            "priority",
            exp.priority.map(|p| p.to_string()),
            inc.priority.to_string(),
        );
        field(
            "impact",
            exp.impact.clone(),
            inc.impact.as_str().to_string(),
        );
        field(
            "urgency",
            exp.urgency.clone(),
            inc.urgency.as_str().to_string(),
        );
        field(
            "category",
            exp.category.clone(),
            inc.category.clone().unwrap_or_default(),
        );
        field(
            "subcategory",
            exp.subcategory.clone(),
            inc.subcategory.clone().unwrap_or_default(),
        );
        field(
            "assignment_group",
            exp.assignment_group.clone(),
            inc.assignment_group.clone().unwrap_or_default(),
        );
        field(
            "service",
            exp.service.clone(),
            inc.service.clone().unwrap_or_default(),
        );
        field(
            "configuration_items",
            exp.configuration_items.as_ref().map(|c| c.join(", ")),
            inc.configuration_items.join(", "),
        );
        field(
            "alert_count",
            exp.alert_count.map(|c| c.to_string()),
            inc.alert_count.to_string(),
        );
        field("rule", exp.rule.clone(), inc.rule.clone());
        field(
            "reopen_count",
            exp.reopen_count.map(|c| c.to_string()),
            inc.reopen_count.to_string(),
        );
        field(
            "major",
            exp.major.map(|m| m.to_string()),
            inc.major.to_string(),
        );
        field(
            "flapping",
            exp.flapping.map(|f| f.to_string()),
            inc.flapping.to_string(),
        );
        field(
            "flapping_alerts",
            exp.flapping_alerts.map(|f| f.to_string()),
            crate::incident::flapping::flapping_alerts(inc).to_string(),
        );
        field(
            "root_cause",
            exp.root_cause.clone(),
            inc.topology.root_cause.clone().unwrap_or_default(),
        );
        field(
            "affected_services",
            exp.affected_services.as_ref().map(|s| s.join(", ")),
            inc.topology.affected_services.join(", "),
        );
        field(
            "merged",
            exp.merged.map(|m| m.to_string()),
            inc.topology.merged_into.is_some().to_string(),
        );
        field(
            "symptoms",
            exp.symptoms.map(|n| n.to_string()),
            inc.alerts
                .iter()
                .filter(|a| a.role == Some(crate::topology::AlertRole::Symptom))
                .count()
                .to_string(),
        );
        field(
            "route",
            exp.route.as_ref().map(|r| r.join(", ")),
            inc.route.join(", "),
        );
        field(
            "timeline",
            exp.timeline.as_ref().map(|t| t.join(", ")),
            inc.timeline
                .iter()
                .map(|e| e.event.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
        let sla = inc.sla.as_ref();
        field(
            "sla_response_breached",
            exp.sla_response_breached.map(|b| b.to_string()),
            sla.is_some_and(|s| s.response_breached_at.is_some())
                .to_string(),
        );
        field(
            "sla_resolution_breached",
            exp.sla_resolution_breached.map(|b| b.to_string()),
            sla.is_some_and(|s| s.resolution_breached_at.is_some())
                .to_string(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::parse_offset;

    #[test]
    fn offsets_parse_in_every_spelling() {
        assert_eq!(parse_offset("90"), Ok(90));
        assert_eq!(parse_offset("90s"), Ok(90));
        assert_eq!(parse_offset("1h30m"), Ok(5400));
        assert_eq!(parse_offset("2d"), Ok(172_800));
        assert!(parse_offset("5x").is_err());
        assert!(parse_offset("m").is_err());
        assert!(parse_offset("5m3").is_err());
    }
}
