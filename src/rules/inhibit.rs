//! Inhibition, with Alertmanager's semantics, declared on the rule whose
//! alerts inhibit (the source):
//!
//! ```yaml
//! - name: service-down
//!   match: [severity="critical"]
//!   inhibits:
//!     - target_match: [severity="warning"]   # required: the inhibited alerts
//!       source_match: [alertname="TargetDown"]  # optional: narrows the rule's own alerts
//!       equal: [service, cluster]              # labels with the same value on both
//!   incident: ...
//! ```
//!
//! A rule with `inhibits:` and neither `action:` nor `incident:` only
//! inhibits (like Alertmanager's `inhibit_rules`): its sources are the alerts
//! its matchers select, whichever rule raised their incident.
//!
//! While a firing source alert (an alert this rule raised an incident for,
//! matching `source_match`) has the same values as a target for every
//! `equal` label (a missing label counts as empty, as in Alertmanager), the
//! target raises nothing of its own: it is attached to the source's incident
//! as a symptom. An alert never inhibits itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::compile::{self, Problems};
use super::error::Code;
use super::matcher::{self, Matcher};

/// `inhibits:` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInhibit {
    #[serde(default)]
    source_match: Vec<String>,
    #[serde(default)]
    target_match: Vec<String>,
    #[serde(default)]
    equal: Vec<String>,
}

/// One compiled inhibition.
#[derive(Debug)]
pub struct Inhibit {
    /// The source rule.
    pub rule: Arc<str>,
    /// The rule's own matchers and `source_match`.
    source: Vec<Matcher>,
    target: Vec<Matcher>,
    equal: Vec<String>,
    /// Position among the rule's `inhibits`, for its slot name.
    index: usize,
    /// Declared on a rule with no action of its own (an inhibit-only rule):
    /// its sources are matching alerts in an incident of any rule.
    pub any_rule: bool,
}

impl Inhibit {
    pub(super) fn compile(
        rule: &Arc<str>,
        rule_matchers: &[String],
        any_rule: bool,
        raw: &RawInhibit,
        index: usize,
        at: &str,
        p: &mut Problems<'_>,
    ) -> Option<Inhibit> {
        let before = p.count();
        if raw.target_match.is_empty() {
            p.at(
                at,
                Code::Inhibit,
                "an inhibition needs `target_match:` (an empty list would inhibit every alert)",
            );
        }
        for (i, label) in raw.equal.iter().enumerate() {
            let ok = !label.is_empty()
                && !label.starts_with(|c: char| c.is_ascii_digit())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                p.at(
                    &format!("{at}.equal.{i}"),
                    Code::Inhibit,
                    format!("{label:?} in `equal` is not a label name"),
                );
            }
        }
        // The rule's own matchers were reported with the rule if bad.
        let mut source: Vec<Matcher> = rule_matchers
            .iter()
            .filter_map(|m| Matcher::parse(m).ok())
            .collect();
        source.extend(compile::matchers(
            &raw.source_match,
            &format!("{at}.source_match"),
            p,
        ));
        let target = compile::matchers(&raw.target_match, &format!("{at}.target_match"), p);
        (p.count() == before).then(|| Inhibit {
            rule: rule.clone(),
            source,
            target,
            equal: raw.equal.clone(),
            index,
            any_rule,
        })
    }

    /// Whether an alert with `labels` that `rule` raised an incident for may
    /// inhibit.
    pub fn is_source_of(&self, rule: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.any_rule || *self.rule == *rule) && self.is_source(labels)
    }

    /// Whether an alert with `labels` matches the source matchers.
    pub fn is_source(&self, labels: &BTreeMap<String, String>) -> bool {
        matcher::all_match(&self.source, labels)
    }

    pub fn is_target(&self, labels: &BTreeMap<String, String>) -> bool {
        matcher::all_match(&self.target, labels)
    }

    /// Whether a source and a target agree on every `equal` label.
    pub fn same_equal(&self, a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
        self.equal
            .iter()
            .all(|l| a.get(l).map_or("", String::as_str) == b.get(l).map_or("", String::as_str))
    }

    /// The store slot naming the incident of the sources (`kind` `src`) or
    /// targets (`tgt`) with `labels`' values of the `equal` labels.
    pub fn slot(&self, kind: &str, labels: &BTreeMap<String, String>) -> String {
        let mut key = format!("inh-{kind}:{}#{}", self.rule, self.index);
        for l in &self.equal {
            key.push('|');
            for c in labels.get(l).map_or("", String::as_str).chars() {
                if matches!(c, '\\' | '|') {
                    key.push('\\');
                }
                key.push(c);
            }
        }
        key
    }
}
