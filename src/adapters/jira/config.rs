//! Jira Cloud adapter configuration.
//!
//! ```yaml
//! adapters:
//!   jira:
//!     type: jira
//!     url: https://acme.atlassian.net
//!     email: incidentd-bot@example.com
//!     api_token: ${JIRA_API_TOKEN}        # or api_token_file
//!     project: OPS
//!     issue_type: Incident                # default
//!     summary: "{{ incident.title }}"     # default (template; one line, at most 255 characters)
//!     description: "{{ incident.description }}"   # default (template; sent as an ADF document)
//!     priorities: {1: Highest, 2: High, 3: Medium, 4: Low, 5: Lowest}   # default
//!     labels: [incidentd]                 # default; `incidentd-<incident id>` is always added
//!     transitions:                        # names of transitions, or of the statuses they lead to;
//!       acknowledged: [In Progress, Start Progress]        # the first available one is taken
//!       resolved: [Done, Resolve Issue, Resolve]
//!       closed: [Close Issue, Close, Closed, Done]
//!       reopen: [Reopen, Reopen Issue, To Do]
//!     resolution: Done                    # default; set when the transition screen has the field
//!     extra_fields:                       # more create fields, as Jira takes them
//!       components: [{name: api-gateway}]
//!     delivery: {timeout_ms: 10000}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Jira, TransitionNames};
use crate::adapters::DeliveryConfig;
use crate::adapters::text::Text;
use crate::config::Problems;
use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The site, e.g. `https://acme.atlassian.net`.
    pub url: String,
    /// The account the API token belongs to.
    pub email: String,
    #[serde(default)]
    pub api_token: Option<Secret>,
    #[serde(default)]
    pub api_token_file: Option<PathBuf>,
    /// Project key.
    pub project: String,
    #[serde(default = "default_issue_type")]
    pub issue_type: String,
    #[serde(default = "default_summary")]
    pub summary: String,
    #[serde(default = "default_description")]
    pub description: String,
    /// Incident priority (1..=5) → Jira priority name.
    #[serde(default)]
    pub priorities: BTreeMap<u8, String>,
    #[serde(default = "default_labels")]
    pub labels: Vec<String>,
    #[serde(default)]
    pub transitions: Transitions,
    #[serde(default = "default_resolution")]
    pub resolution: String,
    /// Extra fields of the create call (custom fields, components...), as JSON
    /// the way Jira takes them.
    #[serde(default)]
    pub extra_fields: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

/// Transition names per ticket state; each accepts one name or a list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transitions {
    pub acknowledged: Names,
    pub resolved: Names,
    pub closed: Names,
    pub reopen: Names,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Names {
    One(String),
    Many(Vec<String>),
}

impl Names {
    fn list(&self) -> Vec<String> {
        match self {
            Names::One(n) => vec![n.clone()],
            Names::Many(v) => v.clone(),
        }
    }
}

fn names(v: &[&str]) -> Names {
    Names::Many(v.iter().map(|s| s.to_string()).collect())
}

impl Default for Transitions {
    fn default() -> Self {
        // Jira Software/Service Management default and simplified workflows; a
        // name matches a transition's name or its target status's name.
        Transitions {
            acknowledged: names(&["In Progress", "Start Progress"]),
            resolved: names(&["Done", "Resolve Issue", "Resolve"]),
            closed: names(&["Close Issue", "Close", "Closed", "Done"]),
            reopen: names(&["Reopen", "Reopen Issue", "To Do"]),
        }
    }
}

fn default_issue_type() -> String {
    "Incident".into()
}
fn default_summary() -> String {
    "{{ incident.title }}".into()
}
fn default_description() -> String {
    "{{ incident.description }}".into()
}
fn default_labels() -> Vec<String> {
    vec!["incidentd".into()]
}
fn default_resolution() -> String {
    "Done".into()
}

/// Jira's limit on one label.
pub(super) const LABEL_MAX_CHARS: usize = 255;

/// Fields the adapter sets itself; `extra_fields` may not replace them.
const OWN_FIELDS: [&str; 6] = [
    "project",
    "issuetype",
    "summary",
    "description",
    "priority",
    "labels",
];

fn required(value: &str, key: &str, p: &mut Problems<'_>) -> Option<String> {
    if value.trim().is_empty() {
        p.at(key, "is required");
        None
    } else {
        Some(value.trim().to_string())
    }
}

impl Config {
    pub fn build(&self, key: &str, base_dir: &Path, p: &mut Problems<'_>) -> Option<Jira> {
        let mut ok = true;
        let base = match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) | Err(_) => {
                p.at(
                    &format!("{key}.url"),
                    format!("{:?} is not an http(s) URL", self.url),
                );
                None
            }
        };
        let email = required(&self.email, &format!("{key}.email"), p);
        let token = crate::adapters::secret(
            &self.api_token,
            &self.api_token_file,
            &format!("{key}.api_token"),
            base_dir,
            true,
            p,
        );
        let project = required(&self.project, &format!("{key}.project"), p);
        let issue_type = required(&self.issue_type, &format!("{key}.issue_type"), p);
        let resolution = required(&self.resolution, &format!("{key}.resolution"), p);
        let summary = Text::compile(&self.summary, &format!("{key}.summary"), p);
        let description = Text::compile(&self.description, &format!("{key}.description"), p);

        for (prio, name) in &self.priorities {
            if !(1..=5).contains(prio) {
                p.at(&format!("{key}.priorities.{prio}"), "priorities are 1 to 5");
                ok = false;
            } else if name.trim().is_empty() {
                p.at(&format!("{key}.priorities.{prio}"), "is empty");
                ok = false;
            }
        }
        for label in &self.labels {
            // Jira refuses labels with spaces, and an empty one.
            if label.is_empty()
                || label.chars().any(char::is_whitespace)
                || label.chars().count() > LABEL_MAX_CHARS
            {
                p.at(
                    &format!("{key}.labels"),
                    format!("{label:?}: labels are 1 to 255 characters without spaces"),
                );
                ok = false;
            }
        }
        for field in self.extra_fields.keys() {
            if OWN_FIELDS.contains(&field.as_str()) {
                p.at(
                    &format!("{key}.extra_fields.{field}"),
                    "is set by the adapter (use the summary/description templates, priorities, labels)",
                );
                ok = false;
            }
        }

        let t = &self.transitions;
        let mut transitions = TransitionNames::default();
        for (name, names, slot) in [
            (
                "acknowledged",
                &t.acknowledged,
                &mut transitions.acknowledged,
            ),
            ("resolved", &t.resolved, &mut transitions.resolved),
            ("closed", &t.closed, &mut transitions.closed),
            ("reopen", &t.reopen, &mut transitions.reopen),
        ] {
            let list = names.list();
            if list.is_empty() || list.iter().any(|n| n.trim().is_empty()) {
                p.at(
                    &format!("{key}.transitions.{name}"),
                    "needs one or more non-empty names",
                );
                ok = false;
            }
            *slot = list;
        }

        let adapter = Jira {
            base: base?,
            email: email?,
            token: token?,
            project: project?,
            issue_type: issue_type?,
            summary: summary?,
            description: description?,
            priorities: self.priorities.clone(),
            labels: self.labels.clone(),
            transitions,
            resolution: resolution?,
            extra_fields: self.extra_fields.clone().into_iter().collect(),
        };
        ok.then_some(adapter)
    }
}
