//! The rules engine: decides, for each alert, whether it is dropped,
//! suppressed or opens (or joins) an incident, and with which ITIL fields.
//!
//! Rules are read from the `*.yaml`/`*.yml` files of a directory (see
//! `rules/README.md` for the full format SREs write), compiled once at load
//! (matchers, regexes, CEL expressions, minijinja templates, time zones) and
//! then evaluated purely: [`RuleSet::evaluate`] reads nothing but the alert.
//!
//! ```yaml
//! rules:
//!   - name: target-down
//!     match: [alertname="TargetDown", severity=~"critical|page"]
//!     expr: 'labels.env == "prod"'          # optional CEL condition
//!     incident:
//!       title: "{{ labels.service }} is down ({{ alert_count }} targets)"
//!       impact: high
//!       urgency: high
//!       group_by: [alertname, cluster, service]
//! maintenance:
//!   - name: weekly-patching
//!     match: [team="platform"]
//!     recurring: { weekdays: [sat], start: "02:00", end: "04:00" }
//!     timezone: UTC
//! ```
//!
//! Rules are tried in file-name order, then in order within a file; the first
//! matching rule wins unless it says `continue: true` (as in Alertmanager).
//! Loading reports every problem in every file at once, each as
//! `file:line:col: E0xx message` with a stable code (see [`RuleError`]).
//!
//! Parts: `parse` (the file as written), `compile` (checks and builds),
//! `locate` (positions for errors), `matcher`, `expr`, `template`,
//! `incident`, `inhibit` (`inhibits:`, Alertmanager-style inhibition),
//! `priority`, `maintenance`, `error`.

mod compile;
mod error;
mod expr;
mod incident;
mod inhibit;
pub(crate) mod locate;
mod maintenance;
mod matcher;
mod parse;
mod priority;
mod template;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::alert::Alert;
use error::Code;
use expr::{Expr, Vars};
use maintenance::Window;
use matcher::Matcher;
use priority::PriorityMatrix;

pub use error::{RuleError, RuleErrors};
pub use incident::{IncidentSpec, RenderedFields, ResolveMode};
pub use inhibit::Inhibit;
pub use maintenance::MaintenanceHit;
pub use priority::Level;

/// Compiled rules, maintenance windows and priority matrix. Immutable once
/// loaded; share it behind an `Arc` (and swap the `Arc` to reload).
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    windows: Vec<Window>,
    matrix: PriorityMatrix,
    inhibits: Vec<Inhibit>,
}

#[derive(Debug)]
struct Rule {
    name: Arc<str>,
    matchers: Vec<Matcher>,
    expr: Option<Expr>,
    cont: bool,
    action: Action,
}

/// A rule that matched an alert, and what it says to do.
#[derive(Debug, Clone)]
pub struct Decision {
    pub rule: Arc<str>,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Discard the alert.
    Drop,
    /// Keep the alert but open no incident for it.
    Suppress,
    Incident(Arc<IncidentSpec>),
}

impl RuleSet {
    /// Loads every `*.yaml`/`*.yml` file directly in `dir` (not in
    /// subdirectories), in file-name order.
    pub fn load_dir(dir: &Path) -> Result<RuleSet, RuleErrors> {
        let unreadable = |file: &Path, e: std::io::Error| RuleError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            code: Code::Read.as_str(),
            message: format!("cannot read: {e}"),
        };
        let entries = std::fs::read_dir(dir).map_err(|e| RuleErrors(vec![unreadable(dir, e)]))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        paths.sort();
        let mut errors = Vec::new();
        let mut sources = Vec::new();
        for path in paths {
            match std::fs::read_to_string(&path) {
                Ok(text) => sources.push((path, text)),
                Err(e) => errors.push(unreadable(&path, e)),
            }
        }
        match (RuleSet::from_sources(&sources), errors.is_empty()) {
            (Ok(rules), true) => Ok(rules),
            (Ok(_), false) => Err(RuleErrors(errors)),
            (Err(RuleErrors(more)), _) => {
                errors.extend(more);
                errors
                    .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
                Err(RuleErrors(errors))
            }
        }
    }

    /// Compiles rule files already read: `(path, text)` in evaluation order.
    pub fn from_sources(files: &[(PathBuf, String)]) -> Result<RuleSet, RuleErrors> {
        compile::compile(files).map_err(RuleErrors)
    }

    /// No rules, no maintenance, the default priority matrix.
    pub fn empty() -> RuleSet {
        RuleSet::default()
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules that match `alert`, in order: the first match, plus the
    /// following ones for as long as each match says `continue: true`.
    /// Empty when no rule matches.
    pub fn evaluate(&self, alert: &Alert) -> Vec<Decision> {
        let mut vars: Option<Vars> = None;
        let mut decisions = Vec::new();
        for rule in &self.rules {
            if !matcher::all_match(&rule.matchers, &alert.labels) {
                continue;
            }
            if let Some(expr) = &rule.expr
                && !expr.holds(vars.get_or_insert_with(|| Vars::of(alert)))
            {
                continue;
            }
            decisions.push(Decision {
                rule: rule.name.clone(),
                action: rule.action.clone(),
            });
            if !rule.cont {
                break;
            }
        }
        decisions
    }

    /// The first maintenance window (in file order) that matches `alert` and
    /// is open at `now`.
    pub fn maintenance_at(&self, alert: &Alert, now: DateTime<Utc>) -> Option<MaintenanceHit> {
        self.windows.iter().find_map(|w| w.hit(alert, now))
    }

    /// The priority (1..=5) of `impact` and `urgency` under this rule set's matrix.
    pub fn priority(&self, impact: Level, urgency: Level) -> u8 {
        self.matrix.get(impact, urgency)
    }

    /// Every inhibition (`inhibits:`), in rule order.
    pub fn inhibits(&self) -> &[Inhibit] {
        &self.inhibits
    }

    /// The incident settings of rule `name`, if it raises incidents.
    pub fn incident_spec(&self, name: &str) -> Option<Arc<IncidentSpec>> {
        self.rules.iter().find_map(|r| match &r.action {
            Action::Incident(spec) if &*r.name == name => Some(spec.clone()),
            _ => None,
        })
    }
}

/// Alertmanager-style label matchers, all of which must hold, for other parts
/// of the daemon that select alerts the way rules do (the services file,
/// heartbeats in the daemon config): `alertname="Watchdog"`, `severity=~"none|info"`.
#[derive(Debug, Default)]
pub struct LabelMatchers(Vec<Matcher>);

impl LabelMatchers {
    /// Parses every matcher; on failure, `(index, message)` for each bad one.
    pub fn parse(raw: &[String]) -> Result<LabelMatchers, Vec<(usize, String)>> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (i, text) in raw.iter().enumerate() {
            match Matcher::parse(text) {
                Ok(m) => good.push(m),
                Err((_, msg)) => bad.push((i, msg)),
            }
        }
        if bad.is_empty() {
            Ok(LabelMatchers(good))
        } else {
            Err(bad)
        }
    }

    /// True when every matcher holds (an empty list holds for every alert).
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        matcher::all_match(&self.0, labels)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests;
