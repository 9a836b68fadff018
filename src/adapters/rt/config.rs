//! Request Tracker adapter configuration.
//!
//! ```yaml
//! adapters:
//!   rt:
//!     type: rt
//!     url: https://rt.example.com          # REST 2.0 is {url}/REST/2.0
//!     queue: General                       # queue name
//!     token: ${RT_TOKEN}                   # or token_file: an RT auth token ...
//!     # user: incidentd                    # ... or basic auth: user + password / password_file
//!     # password: ${RT_PASSWORD}
//!     subject: "[{{ incident.id }}] {{ incident.title }}"   # default (template)
//!     content: "..."                       # default: description + ITIL fields (template)
//!     priorities: {1: 100, 2: 80, 3: 50, 4: 20, 5: 0}       # default: incident P1..P5 → RT Priority
//!     statuses: {new: new, open: open, acknowledged: open, resolved: resolved, closed: resolved}   # default
//!     update_fields: [subject, priority]   # default: kept in line after create
//!     custom_fields: {Service: "{{ incident.service }}"}    # optional, set at create (templates)
//!     find_by_custom_field: IncidentId     # optional: carry the incident id in this CF instead of the subject
//!     requestors: [noc@example.com]        # optional; RT mails requestors unless its scrips say otherwise
//!     delivery: {timeout_ms: 10000}
//! ```
//!
//! `find` matches the incident id in the subject by default, so a `subject`
//! template must keep `incident.id` unless `find_by_custom_field` names a ticket
//! custom field (applied to the queue) that receives the id instead.
//! `statuses` names the RT status each ticket state is written as; RT's default
//! lifecycle has no "closed" apart from "resolved", so closed writes `resolved`
//! too (set `closed: rejected` to tell them apart in RT). Open and acknowledged
//! both write `open`, so incidentd's own acknowledge reads back as open; with
//! `open: new` (a reopen then writes `new`) every state reads back as itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Auth, Rt, Statuses};
use crate::adapters::DeliveryConfig;
use crate::adapters::text::Text;
use crate::adapters::{CredentialFields, Credentials};
use crate::config::Problems;
use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// RT's web root, e.g. `https://rt.example.com` or `https://example.com/rt`.
    pub url: String,
    /// The queue tickets are created in and searched for.
    pub queue: String,
    /// An RT auth token (`Authorization: token ...`), instead of user + password.
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_subject")]
    pub subject: String,
    #[serde(default = "default_content")]
    pub content: String,
    /// Incident priority (1..=5) → RT's numeric `Priority`; unset keys keep their default.
    #[serde(default)]
    pub priorities: BTreeMap<u8, u32>,
    /// `new` / `open` / `acknowledged` / `resolved` / `closed` → RT status.
    #[serde(default)]
    pub statuses: BTreeMap<String, String>,
    /// Fields sent again on every update (`subject`, `priority`); the rest are
    /// set once, at create, and then belong to the people working the ticket.
    #[serde(default = "default_update_fields")]
    pub update_fields: Vec<String>,
    /// Ticket custom field name → template, set at create.
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
    #[serde(default)]
    pub find_by_custom_field: Option<String>,
    #[serde(default)]
    pub requestors: Vec<String>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_subject() -> String {
    "[{{ incident.id }}] {{ incident.title }}".into()
}

/// The description, then the ITIL fields RT has no columns for, one per line,
/// so a person reading the ticket sees what the incident says.
fn default_content() -> String {
    concat!(
        "{{ incident.description }}\n",
        "\n",
        "Incident: {{ incident.id }}\n",
        "Priority: P{{ incident.priority }} (impact {{ incident.impact }}, urgency {{ incident.urgency }})",
        "{% if incident.major %}, major incident{% endif %}\n",
        "{% if incident.category %}Category: {{ incident.category }}",
        "{% if incident.subcategory %} / {{ incident.subcategory }}{% endif %}\n{% endif %}",
        "{% if incident.service %}Service: {{ incident.service }}\n{% endif %}",
        "{% if incident.assignment_group %}Assignment group: {{ incident.assignment_group }}\n{% endif %}",
        "{% if incident.configuration_items %}Configuration items: {{ incident.configuration_items | join(\", \") }}\n{% endif %}",
        "Rule: {{ incident.rule }}\n",
        "Alerts: {{ incident.alert_count }}\n",
        "Opened: {{ incident.created_at }}",
    )
    .into()
}

fn default_update_fields() -> Vec<String> {
    vec!["subject".into(), "priority".into()]
}

/// RT's numeric Priority for P1..P5 (contract §6.3): 100 is RT 5's "High",
/// 50 "Medium", 0 "Low".
pub(super) const DEFAULT_PRIORITIES: [u32; 5] = [100, 80, 50, 20, 0];

impl Config {
    pub fn build(&self, key: &str, base_dir: &Path, p: &mut Problems<'_>) -> Option<Rt> {
        let web = match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() => {
                Some(u.as_str().trim_end_matches('/').to_string())
            }
            Ok(_) | Err(_) => {
                p.at(
                    &format!("{key}.url"),
                    format!("{:?} is not an http(s) URL without a query", self.url),
                );
                None
            }
        };
        let queue = if self.queue.trim().is_empty() {
            p.at(&format!("{key}.queue"), "is empty");
            None
        } else {
            Some(self.queue.clone())
        };
        let auth = self.auth(key, base_dir, p);

        let find_cf = match &self.find_by_custom_field {
            Some(name) => {
                if cf_name_ok(name) {
                    Some(Some(name.clone()))
                } else {
                    p.at(
                        &format!("{key}.find_by_custom_field"),
                        "must be a custom field name without { } ' or \\",
                    );
                    None
                }
            }
            None => Some(None),
        };
        // Problems recorded here leave every value usable; they still make the
        // adapter invalid.
        let mut valid = true;
        // Without a custom field, find can only recognise a ticket by the id in
        // its subject; a template without it would make every lost create a duplicate.
        if self.find_by_custom_field.is_none() && !self.subject.contains("incident.id") {
            valid = false;
            p.at(
                &format!("{key}.subject"),
                "must include {{ incident.id }} (find matches it) unless find_by_custom_field is set",
            );
        }
        let subject = Text::compile(&self.subject, &format!("{key}.subject"), p);
        let content = Text::compile(&self.content, &format!("{key}.content"), p);

        let mut priorities = DEFAULT_PRIORITIES;
        for (prio, value) in &self.priorities {
            match usize::from(*prio) {
                n @ 1..=5 => priorities[n - 1] = *value,
                _ => {
                    valid = false;
                    p.at(&format!("{key}.priorities.{prio}"), "priorities are 1 to 5");
                }
            }
        }

        let statuses = self.statuses(key, p);

        let (mut update_subject, mut update_priority) = (false, false);
        for f in &self.update_fields {
            match f.as_str() {
                "subject" => update_subject = true,
                "priority" => update_priority = true,
                other => {
                    valid = false;
                    p.at(
                        &format!("{key}.update_fields"),
                        format!("unknown field {other:?} (subject, priority)"),
                    );
                }
            }
        }

        let mut custom_fields = Vec::new();
        for (name, template) in &self.custom_fields {
            if !cf_name_ok(name) {
                valid = false;
                p.at(
                    &format!("{key}.custom_fields.{name}"),
                    "must be a custom field name without { } ' or \\",
                );
                continue;
            }
            if self.find_by_custom_field.as_deref() == Some(name.as_str()) {
                valid = false;
                p.at(
                    &format!("{key}.custom_fields.{name}"),
                    "is find_by_custom_field, which always holds the incident id",
                );
                continue;
            }
            match Text::compile(template, &format!("{key}.custom_fields.{name}"), p) {
                Some(t) => custom_fields.push((name.clone(), t)),
                None => valid = false,
            }
        }
        for r in &self.requestors {
            if r.trim().is_empty() {
                valid = false;
                p.at(&format!("{key}.requestors"), "has an empty entry");
            }
        }

        let web = web?;
        if !valid {
            return None;
        }
        Some(Rt {
            api: format!("{web}/REST/2.0"),
            web,
            queue: queue?,
            auth: auth?,
            subject: subject?,
            content: content?,
            priorities,
            statuses: statuses?,
            update_subject,
            update_priority,
            custom_fields,
            find_cf: find_cf?,
            requestors: self.requestors.clone(),
        })
    }

    fn auth(&self, key: &str, base_dir: &Path, p: &mut Problems<'_>) -> Option<Auth> {
        let fields = CredentialFields {
            token: &self.token,
            token_file: &self.token_file,
            user: &self.user,
            password: &self.password,
            password_file: &self.password_file,
        };
        match fields.resolve(key, base_dir, p)? {
            Credentials::Token(token) => {
                match reqwest::header::HeaderValue::from_str(&format!("token {}", token.expose())) {
                    Ok(mut v) => {
                        v.set_sensitive(true);
                        Some(Auth::Token(v))
                    }
                    Err(_) => {
                        // Without the value: it is the secret.
                        p.at(
                            &format!("{key}.token"),
                            "has characters an HTTP header cannot carry",
                        );
                        None
                    }
                }
            }
            Credentials::Basic { user, password } => Some(Auth::Basic { user, password }),
        }
    }

    fn statuses(&self, key: &str, p: &mut Problems<'_>) -> Option<Statuses> {
        let mut s = Statuses::default();
        let ok = crate::adapters::override_table(
            &self.statuses,
            &format!("{key}.statuses"),
            "state",
            &mut [
                ("new", &mut s.new),
                ("open", &mut s.open),
                ("acknowledged", &mut s.acknowledged),
                ("resolved", &mut s.resolved),
                ("closed", &mut s.closed),
            ],
            p,
        );
        ok.then_some(s)
    }
}

/// A name TicketSQL can quote as `CF.{name}` and REST 2.0 accepts as a key.
fn cf_name_ok(name: &str) -> bool {
    !name.trim().is_empty() && !name.contains(['{', '}', '\'', '\\'])
}
