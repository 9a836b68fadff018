//! What an `action: incident` rule opens: the ITIL fields, the templates for
//! its text, and how alerts are correlated into it and how it resolves.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::compile::Problems;
use super::error::Code;
use super::priority::{Level, PriorityMatrix};
use super::template::{self, Templates};
use crate::alert::Alert;

/// Whether an incident resolves itself once its alerts have resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResolveMode {
    #[default]
    Auto,
    Manual,
}

/// One rule's incident settings, compiled.
#[derive(Debug)]
pub struct IncidentSpec {
    pub impact: Level,
    pub urgency: Level,
    /// From the priority matrix, 1 (most urgent) to 5.
    pub priority: u8,
    pub category: Option<String>,
    pub subcategory: Option<String>,
    /// Label names whose values, with the rule name, form the correlation key.
    pub group_by: Vec<String>,
    /// Alerts with the same key join one incident while it has had activity
    /// within this window.
    pub window: Duration,
    pub resolve: ResolveMode,
    /// With `resolve: auto`, how long all alerts must stay resolved first.
    pub resolve_after: Duration,
    /// A resolved incident whose key fires again within this is reopened.
    pub reopen_within: Duration,
    /// A resolved incident is closed this long after resolving.
    pub close_after: Duration,
    /// Names of the adapters the incident is sent to, carried through as written.
    pub route: Vec<String>,
    /// The rule's own flap detection settings, over the daemon config's.
    pub flapping: Option<crate::incident::flapping::FlapSettings>,
    /// Whether alerts of services in the services file correlate by topology
    /// (`topology: false` opts the rule out).
    pub topology: bool,
    /// This rule's major-incident condition, besides the daemon-wide one.
    pub major: Option<crate::incident::major::MajorCondition>,
    rule: Arc<str>,
    templates: Templates,
}

/// The text fields of an incident, rendered for one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFields {
    pub title: String,
    pub description: String,
    pub assignment_group: Option<String>,
    pub service: Option<String>,
    pub configuration_item: Option<String>,
}

const TEMPLATE_FIELDS: [&str; 5] = [
    "title",
    "description",
    "assignment_group",
    "service",
    "configuration_item",
];

impl IncidentSpec {
    /// The correlation key: the rule name, then `|label=value` for each
    /// `group_by` label in order, a missing label giving an empty value.
    /// Backslashes and `|` in values are escaped with a backslash so that
    /// distinct label sets never share a key. Example:
    /// `target-down|alertname=TargetDown|cluster=eu1|service=checkout-api`.
    pub fn correlation_key(&self, rule: &str, alert: &Alert) -> String {
        let mut key = rule.to_string();
        for name in &self.group_by {
            let value = alert.labels.get(name).map_or("", String::as_str);
            key.push('|');
            key.push_str(name);
            key.push('=');
            for c in value.chars() {
                if matches!(c, '\\' | '|') {
                    key.push('\\');
                }
                key.push(c);
            }
        }
        key
    }

    /// Renders the text fields for `alert` in an incident holding
    /// `alert_count` alerts. Never fails: a template error becomes the text
    /// `<template error: ...>`. Optional fields that render empty are `None`.
    pub fn render(&self, alert: &Alert, alert_count: usize) -> RenderedFields {
        let ctx = template::context(&self.rule, alert, alert_count);
        let field = |name| {
            self.templates
                .render(name, &ctx)
                .filter(|s| !s.trim().is_empty())
        };
        RenderedFields {
            title: field("title").unwrap_or_default(),
            description: field("description").unwrap_or_default(),
            assignment_group: field("assignment_group"),
            service: field("service"),
            configuration_item: field("configuration_item"),
        }
    }

    /// Compiles `raw` (found at dotted path `at`), reporting every problem.
    pub(super) fn compile(
        rule: &Arc<str>,
        raw: &RawIncident,
        at: &str,
        matrix: &PriorityMatrix,
        p: &mut Problems<'_>,
    ) -> Option<IncidentSpec> {
        let errors_before = p.count();
        let mut level = |field: &str, value: &str| {
            Level::parse(value).or_else(|| {
                p.at(
                    &format!("{at}.{field}"),
                    Code::Level,
                    format!("{field} must be high, medium or low, not {value:?}"),
                );
                None
            })
        };
        let impact = level("impact", &raw.impact);
        let urgency = level("urgency", &raw.urgency);

        let mut templates = Templates::new();
        let sources = [
            Some(&raw.title),
            raw.description.as_ref(),
            raw.assignment_group.as_ref(),
            raw.service.as_ref(),
            raw.configuration_item.as_ref(),
        ];
        for (field, source) in TEMPLATE_FIELDS.into_iter().zip(sources) {
            if let Some(source) = source
                && let Err(e) = templates.add(field, source)
            {
                p.at(
                    &format!("{at}.{field}"),
                    Code::Template,
                    format!("{field}: {e}"),
                );
            }
        }

        if let Some(flapping) = &raw.flapping {
            for (field, message) in flapping.problems() {
                p.at(
                    &format!("{at}.flapping.{field}"),
                    Code::InvalidValue,
                    format!("flapping.{field} {message}"),
                );
            }
        }

        if let Some(msg) = raw.major.as_ref().and_then(|m| m.check()) {
            p.at(&format!("{at}.major"), Code::Major, msg);
        }
        let (impact, urgency) = (impact?, urgency?);
        (p.count() == errors_before).then(|| IncidentSpec {
            impact,
            urgency,
            priority: matrix.get(impact, urgency),
            category: raw.category.clone(),
            subcategory: raw.subcategory.clone(),
            group_by: raw.group_by.clone(),
            window: Duration::from_secs(raw.window_s),
            resolve: raw.resolve,
            resolve_after: Duration::from_secs(raw.resolve_after_s),
            reopen_within: Duration::from_secs(raw.reopen_within_s),
            close_after: Duration::from_secs(raw.close_after_s),
            route: raw.route.clone(),
            flapping: raw.flapping,
            topology: raw.topology,
            major: raw.major.clone(),
            rule: rule.clone(),
            templates,
        })
    }
}

/// `incident:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIncident {
    title: String,
    description: Option<String>,
    category: Option<String>,
    subcategory: Option<String>,
    // Strings rather than `Level` so a bad value is reported (E008) together
    // with every other problem instead of stopping the parse.
    impact: String,
    urgency: String,
    assignment_group: Option<String>,
    service: Option<String>,
    configuration_item: Option<String>,
    #[serde(default = "default_group_by")]
    group_by: Vec<String>,
    #[serde(default = "default_window_s")]
    window_s: u64,
    #[serde(default)]
    resolve: ResolveMode,
    #[serde(default)]
    resolve_after_s: u64,
    #[serde(default = "default_reopen_within_s")]
    reopen_within_s: u64,
    #[serde(default = "default_close_after_s")]
    close_after_s: u64,
    #[serde(default)]
    route: Vec<String>,
    /// Flap detection: `{enabled, changes, window_s, settle_s}`, each optional.
    #[serde(default)]
    flapping: Option<crate::incident::flapping::FlapSettings>,
    #[serde(default = "default_topology")]
    topology: bool,
    #[serde(default)]
    major: Option<crate::incident::major::MajorCondition>,
}

fn default_topology() -> bool {
    true
}

fn default_group_by() -> Vec<String> {
    vec!["alertname".into()]
}

fn default_window_s() -> u64 {
    300
}

fn default_reopen_within_s() -> u64 {
    3600
}

fn default_close_after_s() -> u64 {
    86_400
}
