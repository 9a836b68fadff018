//! Webhook source configuration: one optional block per endpoint.
//!
//! ```yaml
//! sources:
//!   webhook:
//!     alertmanager: { bearer_token: "${AM_TOKEN}" }
//!     grafana: { bearer_token_file: /run/secrets/grafana-token }
//!     generic: { enabled: false }
//! ```
//!
//! An endpoint left out is enabled without authentication.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::Problems;
use crate::formats::Format;
use crate::secret::Secret;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    #[serde(default)]
    pub alertmanager: Option<EndpointConfig>,
    #[serde(default)]
    pub grafana: Option<EndpointConfig>,
    #[serde(default)]
    pub generic: Option<EndpointConfig>,
}

impl WebhookConfig {
    pub fn endpoint(&self, format: Format) -> Option<&EndpointConfig> {
        match format {
            Format::Alertmanager => self.alertmanager.as_ref(),
            Format::Grafana => self.grafana.as_ref(),
            Format::Generic => self.generic.as_ref(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Require `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Same, with the token read from a file (trailing newline ignored).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
}

fn enabled_by_default() -> bool {
    true
}

/// One enabled endpoint, validated.
#[derive(Debug, Clone, Default)]
pub struct EndpointSettings {
    pub token: Option<Secret>,
}

/// The enabled endpoints.
#[derive(Debug, Clone, Default)]
pub struct WebhookSettings {
    pub endpoints: HashMap<Format, EndpointSettings>,
}

impl EndpointConfig {
    /// Validates one endpoint's block (`None`: left out, so enabled without
    /// auth); returns `None` when the endpoint is disabled or invalid.
    pub fn validate(
        cfg: Option<&EndpointConfig>,
        key: &str,
        base_dir: &Path,
        p: &mut Problems<'_>,
    ) -> Option<EndpointSettings> {
        let Some(cfg) = cfg else {
            return Some(EndpointSettings::default());
        };
        if !cfg.enabled {
            return None;
        }
        let token = match (&cfg.bearer_token, &cfg.bearer_token_file) {
            (Some(_), Some(_)) => {
                p.at(key, "set bearer_token or bearer_token_file, not both");
                return None;
            }
            (Some(t), None) => Some(t.expose().to_string()),
            (None, Some(file)) => {
                let path = base_dir.join(file);
                match std::fs::read_to_string(&path) {
                    Ok(t) => Some(t.trim_end_matches(['\r', '\n']).to_string()),
                    Err(e) => {
                        p.at(
                            &format!("{key}.bearer_token_file"),
                            format!("cannot read {}: {e}", path.display()),
                        );
                        return None;
                    }
                }
            }
            (None, None) => None,
        };
        if token.as_deref().is_some_and(str::is_empty) {
            // An empty token would be a typo'd environment variable quietly
            // turning authentication off.
            p.at(&format!("{key}.bearer_token"), "is empty");
            return None;
        }
        Some(EndpointSettings {
            token: token.map(Secret::new),
        })
    }
}
