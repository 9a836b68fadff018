//! Opsgenie adapter configuration.
//!
//! ```yaml
//! adapters:
//!   genie:
//!     type: opsgenie
//!     api_key: ${OPSGENIE_API_KEY}       # or api_key_file; an API *integration* key
//!     # url: https://api.opsgenie.com    (default; EU: https://api.eu.opsgenie.com;
//!     #   JSM Operations: https://api.atlassian.com/jsm/ops/integration)
//!     # message: "{{ incident.title }}"              (default, cut to 130 characters)
//!     # description: "{{ incident.description }}"    (default, cut to 15000)
//!     # entity: "{{ incident.service or '' }}"       (default, cut to 512; omitted when empty)
//!     # tags: [incidentd]                           (default; service and category are added)
//!     # user: incidentd                             (default; shown on notes and actions)
//!     priority: {5: P4}                  # overrides per incident priority; default P1..P5
//!     delivery: {timeout_ms: 5000}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Opsgenie;
use crate::adapters::DeliveryConfig;
use crate::adapters::text::{Text, truncate};
use crate::config::Problems;
use crate::secret::Secret;

pub const DEFAULT_URL: &str = "https://api.opsgenie.com";
pub const DEFAULT_MESSAGE: &str = "{{ incident.title }}";
pub const DEFAULT_DESCRIPTION: &str = "{{ incident.description }}";
pub const DEFAULT_ENTITY: &str = "{{ incident.service or '' }}";
pub const PRIORITIES: [&str; 5] = ["P1", "P2", "P3", "P4", "P5"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Alert API base URL: the paths (`/v2/alerts/...`) are appended to it.
    #[serde(default = "default_url")]
    pub url: String,
    #[serde(default)]
    pub api_key: Option<Secret>,
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// `message` template.
    #[serde(default = "default_message")]
    pub message: String,
    /// `description` template.
    #[serde(default = "default_description")]
    pub description: String,
    /// `entity` template.
    #[serde(default = "default_entity")]
    pub entity: String,
    /// Tags every alert carries.
    #[serde(default = "default_tags")]
    pub tags: Vec<String>,
    /// `user` on notes, acknowledgements and closes.
    #[serde(default = "default_user")]
    pub user: String,
    /// Incident priority (1..=5) → Opsgenie `P1`..`P5`, over the identity default.
    #[serde(default)]
    pub priority: BTreeMap<u8, String>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_url() -> String {
    DEFAULT_URL.to_string()
}

fn default_message() -> String {
    DEFAULT_MESSAGE.to_string()
}

fn default_description() -> String {
    DEFAULT_DESCRIPTION.to_string()
}

fn default_entity() -> String {
    DEFAULT_ENTITY.to_string()
}

fn default_tags() -> Vec<String> {
    vec!["incidentd".to_string()]
}

fn default_user() -> String {
    "incidentd".to_string()
}

impl Config {
    pub fn build(&self, key: &str, base_dir: &Path, p: &mut Problems<'_>) -> Option<Opsgenie> {
        let mut ok = true;
        let base = match reqwest::Url::parse(&self.url) {
            // A base must take path segments: `/v2/alerts/...` is appended.
            Ok(u) if matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base() => Some(u),
            Ok(_) | Err(_) => {
                p.at(
                    &format!("{key}.url"),
                    format!("{:?} is not an http(s) URL", self.url),
                );
                None
            }
        };
        let api_key = crate::adapters::secret(
            &self.api_key,
            &self.api_key_file,
            &format!("{key}.api_key"),
            base_dir,
            true,
            p,
        );
        let auth = api_key.and_then(|k| {
            match reqwest::header::HeaderValue::from_str(&format!("GenieKey {}", k.expose())) {
                Ok(mut v) => {
                    // Keeps the key out of reqwest's and hyper's debug output.
                    v.set_sensitive(true);
                    Some(v)
                }
                Err(_) => {
                    // Without the value: it is the secret.
                    p.at(
                        &format!("{key}.api_key"),
                        "contains characters an HTTP header cannot carry",
                    );
                    None
                }
            }
        });
        for (priority, name) in &self.priority {
            if !(1..=5).contains(priority) {
                p.at(
                    &format!("{key}.priority"),
                    format!("priority {priority} is not 1..5"),
                );
                ok = false;
            }
            if !PRIORITIES.contains(&name.as_str()) {
                p.at(
                    &format!("{key}.priority"),
                    format!("{name:?} is not one of {}", PRIORITIES.join(", ")),
                );
                ok = false;
            }
        }
        if self.user.is_empty() || self.user.chars().count() > super::USER_MAX {
            p.at(
                &format!("{key}.user"),
                format!("must be 1 to {} characters", super::USER_MAX),
            );
            ok = false;
        }
        let tags: Vec<String> = self
            .tags
            .iter()
            .map(|t| truncate(t, super::TAG_MAX))
            .collect();
        if tags.len() > super::TAGS_MAX {
            p.at(
                &format!("{key}.tags"),
                format!("at most {} tags", super::TAGS_MAX),
            );
            ok = false;
        }
        let message = Text::compile(&self.message, &format!("{key}.message"), p);
        let description = Text::compile(&self.description, &format!("{key}.description"), p);
        let entity = Text::compile(&self.entity, &format!("{key}.entity"), p);
        if !ok {
            return None;
        }
        Some(Opsgenie {
            base: base?,
            auth: auth?,
            message: message?,
            description: description?,
            entity: entity?,
            tags,
            user: self.user.clone(),
            priority: self.priority.clone(),
        })
    }
}
