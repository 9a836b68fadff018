//! ServiceNow adapter configuration.
//!
//! ```yaml
//! adapters:
//!   snow:
//!     type: servicenow
//!     url: https://acme.service-now.com
//!     # Basic auth with a "web service access only" integration user (role itil) ...
//!     user: incidentd
//!     password: ${SNOW_PASSWORD}            # or password_file
//!     # ... or an OAuth access token obtained elsewhere: token / token_file (not both methods)
//!     caller_id: 5b7c200d0a640069006b3845b5d0fa7c   # sys_user sys_id; many instances require a caller
//!     correlation_display: incidentd        # default
//!     short_description: "{{ incident.title }}"          # default (template)
//!     short_description_max_chars: 160                    # default; match sys_dictionary max_length
//!     description: "{{ incident.description }}"          # default (template)
//!     impact: {high: "1", medium: "2", low: "3"}          # default
//!     urgency: {high: "1", medium: "2", low: "3"}         # default
//!     states: {acknowledged: "2", resolved: "6", closed: "7", reopen: "2"}   # default
//!     close_code: Solution provided                       # default; must be a close_code choice of the instance
//!     close_notes: "Resolved by incidentd: {{ incident.title }}"   # default (template)
//!     update_fields: [short_description, impact, urgency] # default: fields kept in line after create
//!     input_display_value: false   # true: assignment_group/cmdb_ci/caller_id are names, not sys_ids
//!     work_note_max_chars: 4000    # default; longer batches of timeline entries are split
//!     delivery: {timeout_ms: 10000}
//! ```
//!
//! `impact` and `urgency` map the incident's high/medium/low to the instance's choice
//! values; priority is not sent because the instance derives it from the two
//! (Priority Lookup Rules) and overrides anything written to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Auth, Field, ServiceNow, StateValues};
use crate::adapters::DeliveryConfig;
use crate::adapters::text::Text;
use crate::adapters::{CredentialFields, Credentials};
use crate::config::Problems;
use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The instance, e.g. `https://acme.service-now.com`.
    pub url: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// OAuth 2.0 bearer token, instead of user + password.
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `caller_id` of every incident (sys_id of a sys_user, or its name with
    /// `input_display_value`).
    #[serde(default)]
    pub caller_id: Option<String>,
    #[serde(default = "default_correlation_display")]
    pub correlation_display: String,
    #[serde(default = "default_short_description")]
    pub short_description: String,
    #[serde(default = "default_short_description_max_chars")]
    pub short_description_max_chars: usize,
    #[serde(default = "default_description")]
    pub description: String,
    /// `high` / `medium` / `low` → the instance's `impact` choice value.
    #[serde(default)]
    pub impact: BTreeMap<String, String>,
    /// `high` / `medium` / `low` → the instance's `urgency` choice value.
    #[serde(default)]
    pub urgency: BTreeMap<String, String>,
    /// `acknowledged` / `resolved` / `closed` / `reopen` → `state` choice value.
    #[serde(default)]
    pub states: BTreeMap<String, String>,
    #[serde(default = "default_close_code")]
    pub close_code: String,
    #[serde(default = "default_close_notes")]
    pub close_notes: String,
    /// Fields sent again on every update (the rest are set once, at create, and
    /// then belong to the people working the ticket).
    #[serde(default = "default_update_fields")]
    pub update_fields: Vec<String>,
    /// Sends `sysparm_input_display_value=true`: reference fields
    /// (`assignment_group`, `cmdb_ci`, `caller_id`) are then given by name. Choice
    /// values (`impact`, `urgency`, `state`, `close_code`) must then be display
    /// values too.
    #[serde(default)]
    pub input_display_value: bool,
    #[serde(default = "default_work_note_max_chars")]
    pub work_note_max_chars: usize,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_correlation_display() -> String {
    "incidentd".into()
}
fn default_short_description() -> String {
    "{{ incident.title }}".into()
}
fn default_short_description_max_chars() -> usize {
    160
}
fn default_description() -> String {
    "{{ incident.description }}".into()
}
fn default_close_code() -> String {
    "Solution provided".into()
}
fn default_close_notes() -> String {
    "Resolved by incidentd: {{ incident.title }}".into()
}
fn default_update_fields() -> Vec<String> {
    vec![
        "short_description".into(),
        "impact".into(),
        "urgency".into(),
    ]
}
fn default_work_note_max_chars() -> usize {
    4000
}

/// `correlation_id` is a 100-character column; the incident id is far shorter,
/// but the limit is what the instance enforces.
pub(super) const CORRELATION_ID_MAX_CHARS: usize = 100;

/// A high/medium/low table over its defaults ("1".."3": the ITIL scale every
/// out-of-the-box instance uses).
fn levels(
    table: &BTreeMap<String, String>,
    key: &str,
    p: &mut Problems<'_>,
) -> Option<[String; 3]> {
    let [mut high, mut medium, mut low] = ["1".to_string(), "2".to_string(), "3".to_string()];
    let ok = crate::adapters::override_table(
        table,
        key,
        "level",
        &mut [
            ("high", &mut high),
            ("medium", &mut medium),
            ("low", &mut low),
        ],
        p,
    );
    ok.then_some([high, medium, low])
}

fn states(
    table: &BTreeMap<String, String>,
    key: &str,
    p: &mut Problems<'_>,
) -> Option<StateValues> {
    let mut out = StateValues::default();
    let ok = crate::adapters::override_table(
        table,
        key,
        "state",
        &mut [
            ("acknowledged", &mut out.acknowledged),
            ("resolved", &mut out.resolved),
            ("closed", &mut out.closed),
            ("reopen", &mut out.reopen),
        ],
        p,
    );
    ok.then_some(out)
}

fn non_empty(value: &str, key: &str, p: &mut Problems<'_>) -> bool {
    if value.trim().is_empty() {
        p.at(key, "is empty");
        false
    } else {
        true
    }
}

impl Config {
    pub fn build(&self, key: &str, base_dir: &Path, p: &mut Problems<'_>) -> Option<ServiceNow> {
        let mut ok = true;
        let instance = match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) | Err(_) => {
                p.at(
                    &format!("{key}.url"),
                    format!("{:?} is not an http(s) URL", self.url),
                );
                None
            }
        };

        let auth = self.auth(key, base_dir, p);

        let short_description = Text::compile(
            &self.short_description,
            &format!("{key}.short_description"),
            p,
        );
        let description = Text::compile(&self.description, &format!("{key}.description"), p);
        let close_notes = Text::compile(&self.close_notes, &format!("{key}.close_notes"), p);
        if self.short_description_max_chars == 0 {
            p.at(
                &format!("{key}.short_description_max_chars"),
                "must be greater than 0",
            );
            ok = false;
        }
        if self.work_note_max_chars < 100 {
            p.at(
                &format!("{key}.work_note_max_chars"),
                "must be at least 100",
            );
            ok = false;
        }
        // The instance's data policy refuses Resolved/Closed without both; checking
        // here turns a dead-lettered resolve into a config error at startup.
        ok &= non_empty(&self.close_code, &format!("{key}.close_code"), p);
        ok &= non_empty(&self.close_notes, &format!("{key}.close_notes"), p);
        ok &= non_empty(
            &self.correlation_display,
            &format!("{key}.correlation_display"),
            p,
        );
        if let Some(c) = &self.caller_id {
            ok &= non_empty(c, &format!("{key}.caller_id"), p);
        }

        let impact = levels(&self.impact, &format!("{key}.impact"), p);
        let urgency = levels(&self.urgency, &format!("{key}.urgency"), p);
        let state_values = states(&self.states, &format!("{key}.states"), p);

        let mut update_fields = Vec::new();
        for name in &self.update_fields {
            match Field::parse(name) {
                Some(f) if !update_fields.contains(&f) => update_fields.push(f),
                Some(_) => {}
                None => {
                    p.at(
                        &format!("{key}.update_fields"),
                        format!("{name:?} is not one of {}", Field::NAMES.join(", ")),
                    );
                    ok = false;
                }
            }
        }

        let table = ServiceNow::table_url(&instance?);
        let adapter = ServiceNow {
            table: table?,
            auth: auth?,
            caller_id: self.caller_id.clone(),
            correlation_display: self.correlation_display.clone(),
            short_description: short_description?,
            short_description_max_chars: self.short_description_max_chars,
            description: description?,
            impact: impact?,
            urgency: urgency?,
            states: state_values?,
            close_code: self.close_code.clone(),
            close_notes: close_notes?,
            update_fields,
            input_display_value: self.input_display_value,
            work_note_max_chars: self.work_note_max_chars,
        };
        ok.then_some(adapter)
    }

    /// Exactly one of basic (user + password) or bearer (token).
    fn auth(&self, key: &str, base_dir: &Path, p: &mut Problems<'_>) -> Option<Auth> {
        let fields = CredentialFields {
            token: &self.token,
            token_file: &self.token_file,
            user: &self.user,
            password: &self.password,
            password_file: &self.password_file,
        };
        Some(match fields.resolve(key, base_dir, p)? {
            Credentials::Token(token) => Auth::Bearer(token),
            Credentials::Basic { user, password } => Auth::Basic { user, password },
        })
    }
}
