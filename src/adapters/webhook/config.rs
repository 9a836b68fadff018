//! Webhook adapter configuration.
//!
//! ```yaml
//! adapters:
//!   chatops:
//!     type: webhook
//!     url: https://hooks.example.com/incidentd
//!     secret: ${WEBHOOK_SECRET}        # or secret_file; signs each body (HMAC-SHA256)
//!     headers: {X-Team: sre}
//!     delivery: {timeout_ms: 5000}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Webhook;
use crate::adapters::DeliveryConfig;
use crate::config::Problems;
use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: String,
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl Config {
    pub fn build(&self, key: &str, base_dir: &Path, p: &mut Problems<'_>) -> Option<Webhook> {
        let url = match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            Ok(_) | Err(_) => {
                p.at(
                    &format!("{key}.url"),
                    format!("{:?} is not an http(s) URL", self.url),
                );
                None
            }
        };
        let secret = crate::adapters::secret(
            &self.secret,
            &self.secret_file,
            &format!("{key}.secret"),
            base_dir,
            false,
            p,
        );
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &self.headers {
            match (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(value),
            ) {
                (Ok(n), Ok(v)) => {
                    headers.insert(n, v);
                }
                _ => p.at(
                    &format!("{key}.headers"),
                    format!("invalid header {name:?}"),
                ),
            }
        }
        Some(Webhook {
            url: url?,
            secret,
            headers,
        })
    }
}
