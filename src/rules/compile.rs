//! Turns parsed rule files into a [`RuleSet`], checking everything and
//! reporting every problem at once, each placed at file:line:col.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{Code, RuleError};
use super::expr::Expr;
use super::incident::IncidentSpec;
use super::inhibit::Inhibit;
use super::locate::Positions;
use super::maintenance::Window;
use super::matcher::Matcher;
use super::parse::{self, RawAction, RawFile, RawRule};
use super::priority::PriorityMatrix;
use super::{Action, Rule, RuleSet};

/// Collects problems in one file, placing each by the dotted path of the
/// value it is about (`rules.2.match.0`).
pub(super) struct Problems<'a> {
    file: &'a Path,
    positions: &'a Positions,
    errors: &'a mut Vec<RuleError>,
}

impl Problems<'_> {
    pub(super) fn at(&mut self, path: &str, code: Code, message: impl Into<String>) {
        let pos = self.positions.get(path);
        self.errors.push(RuleError {
            file: self.file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            code: code.as_str(),
            message: message.into(),
        });
    }

    /// `file:line` of the value at `path`, for messages naming another place.
    fn place(&self, path: &str) -> String {
        format!("{}:{}", self.file.display(), self.positions.get(path).line)
    }

    /// Errors recorded so far, across all files: compare before and after
    /// compiling a part to learn whether it had problems.
    pub(super) fn count(&self) -> usize {
        self.errors.len()
    }
}

/// Compiles the matchers at dotted path `at`, reporting each bad one.
pub(super) fn matchers(raw: &[String], at: &str, p: &mut Problems<'_>) -> Vec<Matcher> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, m)| {
            Matcher::parse(m)
                .map_err(|(code, msg)| p.at(&format!("{at}.{i}"), code, msg))
                .ok()
        })
        .collect()
}

struct Parsed<'a> {
    file: &'a Path,
    raw: RawFile,
    positions: Positions,
}

/// Rule and maintenance names are unique across all files; remembers where
/// each was first defined.
#[derive(Default)]
struct Names(HashMap<String, String>);

impl Names {
    fn claim(&mut self, kind: &str, name: &str, path: &str, p: &mut Problems<'_>) {
        if let Some(first) = self.0.get(name) {
            p.at(
                path,
                Code::DuplicateName,
                format!("duplicate {kind} name {name:?}, first defined at {first}"),
            );
        } else {
            self.0.insert(name.to_string(), p.place(path));
        }
    }
}

pub(super) fn compile(files: &[(PathBuf, String)]) -> Result<RuleSet, Vec<RuleError>> {
    let mut errors = Vec::new();
    let parsed: Vec<Parsed<'_>> = files
        .iter()
        .filter_map(|(file, text)| match parse::parse(file, text) {
            Ok(raw) => Some(Parsed {
                file,
                raw,
                positions: Positions::index(text),
            }),
            Err(e) => {
                errors.push(e);
                None
            }
        })
        .collect();

    // First, as every incident's priority depends on it, whichever file holds it.
    let mut matrix = PriorityMatrix::default();
    let mut matrix_at: Option<String> = None;
    for f in &parsed {
        let Some(raw) = &f.raw.priority_matrix else {
            continue;
        };
        let mut p = f.problems(&mut errors);
        if let Some(first) = &matrix_at {
            p.at(
                "priority_matrix",
                Code::PriorityMatrix,
                format!("priority_matrix is already defined at {first}"),
            );
            continue;
        }
        matrix_at = Some(p.place("priority_matrix"));
        match PriorityMatrix::from_raw(raw) {
            Ok(m) => matrix = m,
            Err(msg) => p.at("priority_matrix", Code::PriorityMatrix, msg),
        }
    }

    let mut rules = Vec::new();
    let mut windows = Vec::new();
    let mut inhibits = Vec::new();
    let (mut rule_names, mut window_names) = (Names::default(), Names::default());
    for f in &parsed {
        let mut p = f.problems(&mut errors);
        for (i, raw) in f.raw.rules.iter().enumerate() {
            let at = format!("rules.{i}");
            rule_names.claim("rule", &raw.name, &format!("{at}.name"), &mut p);
            let inhibit_only =
                raw.action.is_none() && raw.incident.is_none() && !raw.inhibits.is_empty();
            if !inhibit_only {
                rules.extend(compile_rule(raw, &at, &matrix, &mut p));
            } else if raw.expr.is_some() {
                p.at(
                    &format!("{at}.expr"),
                    Code::InhibitSource,
                    "an inhibit-only rule (no action) selects its sources with `match:` only",
                );
            }
            inhibits.extend(compile_inhibits(raw, &at, inhibit_only, &mut p));
        }
        for (i, raw) in f.raw.maintenance.iter().enumerate() {
            let at = format!("maintenance.{i}");
            window_names.claim(
                "maintenance window",
                &raw.name,
                &format!("{at}.name"),
                &mut p,
            );
            windows.extend(Window::compile(raw, &at, &mut p));
        }
    }

    if errors.is_empty() {
        Ok(RuleSet {
            rules,
            windows,
            matrix,
            inhibits,
        })
    } else {
        errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        Err(errors)
    }
}

impl Parsed<'_> {
    fn problems<'a>(&'a self, errors: &'a mut Vec<RuleError>) -> Problems<'a> {
        Problems {
            file: self.file,
            positions: &self.positions,
            errors,
        }
    }
}

/// A rule's `inhibits:`; its source alerts are those it raises incidents for
/// (or, on an inhibit-only rule, those its matchers select).
fn compile_inhibits(
    raw: &RawRule,
    at: &str,
    inhibit_only: bool,
    p: &mut Problems<'_>,
) -> Vec<Inhibit> {
    if raw.inhibits.is_empty() {
        return Vec::new();
    }
    if !inhibit_only && raw.incident.is_none() {
        p.at(
            &format!("{at}.inhibits"),
            Code::InhibitSource,
            "`inhibits:` on a drop or suppress rule: inhibited alerts are attached to the source's incident, so the rule must raise incidents (or have no action at all)",
        );
        return Vec::new();
    }
    let name: Arc<str> = raw.name.as_str().into();
    raw.inhibits
        .iter()
        .enumerate()
        .filter_map(|(i, inh)| {
            Inhibit::compile(
                &name,
                &raw.matchers,
                inhibit_only,
                inh,
                i,
                &format!("{at}.inhibits.{i}"),
                p,
            )
        })
        .collect()
}

fn compile_rule(
    raw: &RawRule,
    at: &str,
    matrix: &PriorityMatrix,
    p: &mut Problems<'_>,
) -> Option<Rule> {
    let errors_before = p.count();
    // Names end up in correlation keys, logs and metrics labels.
    if raw.name.is_empty()
        || !raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        p.at(
            &format!("{at}.name"),
            Code::InvalidValue,
            format!(
                "rule name {:?} must be letters, digits, `_`, `-` or `.`",
                raw.name
            ),
        );
    }
    let name: Arc<str> = raw.name.as_str().into();
    let matchers = matchers(&raw.matchers, &format!("{at}.match"), p);
    let expr = raw.expr.as_deref().and_then(|src| {
        Expr::compile(src)
            .map_err(|msg| {
                p.at(
                    &format!("{at}.expr"),
                    Code::Expression,
                    format!("bad expression: {msg}"),
                )
            })
            .ok()
    });
    let action = match (raw.action, &raw.incident) {
        (None | Some(RawAction::Incident), Some(inc)) => {
            IncidentSpec::compile(&name, inc, &format!("{at}.incident"), matrix, p)
                .map(|s| Action::Incident(Arc::new(s)))
        }
        (Some(RawAction::Drop), None) => Some(Action::Drop),
        (Some(RawAction::Suppress), None) => Some(Action::Suppress),
        (Some(RawAction::Incident), None) => {
            p.at(
                &format!("{at}.action"),
                Code::Action,
                "`action: incident` needs an `incident:` block",
            );
            None
        }
        (None, None) => {
            p.at(
                at,
                Code::Action,
                "a rule needs `action: drop`, `action: suppress` or an `incident:` block",
            );
            None
        }
        (Some(_), Some(_)) => {
            p.at(
                &format!("{at}.incident"),
                Code::Action,
                "`incident:` is only used with `action: incident`",
            );
            None
        }
    };
    let action = action?;
    (p.count() == errors_before).then(|| Rule {
        name,
        matchers,
        expr,
        cont: raw.cont,
        action,
    })
}
