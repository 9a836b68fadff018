//! PagerDuty adapter configuration.
//!
//! ```yaml
//! adapters:
//!   pager:
//!     type: pagerduty
//!     routing_key: ${PD_ROUTING_KEY}     # or routing_key_file; the 32-character
//!                                        # integration (or orchestration) key
//!     # url: https://events.pagerduty.com   (default; POST {url}/v2/enqueue)
//!     # summary: "{{ incident.title }}"                         (default)
//!     # source: "{{ incident.service or 'incidentd' }}"        (default)
//!     incident_url: "https://incidentd.example.com/incidents/{{ incident.id }}"  # optional link
//!     severity: {4: warning}             # overrides per priority; default
//!                                        # 1 critical, 2 error, 3 warning, 4 info, 5 info
//!     delivery: {initial_backoff_ms: 1000}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::PagerDuty;
use crate::adapters::DeliveryConfig;
use crate::adapters::text::Text;
use crate::config::Problems;
use crate::secret::Secret;

pub const DEFAULT_URL: &str = "https://events.pagerduty.com";
pub const DEFAULT_SUMMARY: &str = "{{ incident.title }}";
/// PagerDuty wants the affected system here; the service is the closest an
/// incident knows, and the field is required, hence the fallback.
pub const DEFAULT_SOURCE: &str = "{{ incident.service or 'incidentd' }}";
/// The only severities the Events API v2 accepts.
pub const SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Events API base URL (changed for tests or a proxy).
    #[serde(default = "default_url")]
    pub url: String,
    #[serde(default)]
    pub routing_key: Option<Secret>,
    #[serde(default)]
    pub routing_key_file: Option<PathBuf>,
    /// `payload.summary` template (cut to 1024 characters).
    #[serde(default = "default_summary")]
    pub summary: String,
    /// `payload.source` template.
    #[serde(default = "default_source")]
    pub source: String,
    /// Template of the incident's page in incidentd, sent as a link when set.
    #[serde(default)]
    pub incident_url: Option<String>,
    /// Incident priority (1..=5) → `payload.severity`, over the default table.
    #[serde(default)]
    pub severity: BTreeMap<u8, String>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_url() -> String {
    DEFAULT_URL.to_string()
}

fn default_summary() -> String {
    DEFAULT_SUMMARY.to_string()
}

fn default_source() -> String {
    DEFAULT_SOURCE.to_string()
}

impl Config {
    pub fn build(&self, key: &str, base_dir: &Path, p: &mut Problems<'_>) -> Option<PagerDuty> {
        let mut ok = true;
        let enqueue = match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => super::endpoint(&u),
            Ok(_) | Err(_) => None,
        };
        if enqueue.is_none() {
            p.at(
                &format!("{key}.url"),
                format!("{:?} is not an http(s) URL", self.url),
            );
        }
        let routing_key = crate::adapters::secret(
            &self.routing_key,
            &self.routing_key_file,
            &format!("{key}.routing_key"),
            base_dir,
            true,
            p,
        );
        // Integration and orchestration keys are 32 characters; anything else
        // would be refused (400) on every event, so say so at startup instead.
        if let Some(k) = &routing_key {
            let v = k.expose();
            if v.len() != 32 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                p.at(
                    &format!("{key}.routing_key"),
                    "must be the 32-character Events API v2 integration key (letters and digits)",
                );
                ok = false;
            }
        }
        for (priority, severity) in &self.severity {
            if !(1..=5).contains(priority) {
                p.at(
                    &format!("{key}.severity"),
                    format!("priority {priority} is not 1..5"),
                );
                ok = false;
            }
            if !SEVERITIES.contains(&severity.as_str()) {
                p.at(
                    &format!("{key}.severity"),
                    format!("{severity:?} is not one of {}", SEVERITIES.join(", ")),
                );
                ok = false;
            }
        }
        let summary = Text::compile(&self.summary, &format!("{key}.summary"), p);
        let source = Text::compile(&self.source, &format!("{key}.source"), p);
        let incident_url = match &self.incident_url {
            Some(t) => {
                let c = Text::compile(t, &format!("{key}.incident_url"), p);
                ok &= c.is_some();
                c
            }
            None => None,
        };
        if !ok {
            return None;
        }
        Some(PagerDuty {
            enqueue: enqueue?,
            routing_key: routing_key?,
            summary: summary?,
            source: source?,
            incident_url,
            severity: self.severity.clone(),
        })
    }
}
