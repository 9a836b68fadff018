//! incidentd's generic alert JSON: one object, or an array of them.
//!
//! ```json
//! {"labels": {"alertname": "DiskFull", "host": "db1"},
//!  "annotations": {"summary": "disk 95% full"},
//!  "status": "firing", "severity": "critical",
//!  "starts_at": "2026-11-25T04:00:00Z", "ends_at": null,
//!  "source": "nagios", "fingerprint": "optional-own-id",
//!  "generator_url": "https://..."}
//! ```
//!
//! Only `labels` is required. Unknown fields are refused: this is our own schema,
//! so an unknown field is a typo that would otherwise silently drop data.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{DecodeError, fingerprint_or_labels, parse_json, parse_status, severity, validate};
use crate::alert::Alert;

/// Longest `source` name kept; it is a free-form label, not a metric label.
const MAX_SOURCE_LEN: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericAlert {
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    generator_url: Option<String>,
}

pub(super) fn decode(body: &[u8], received_at: DateTime<Utc>) -> Result<Vec<Alert>, DecodeError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let raw: Vec<GenericAlert> = match first {
        Some(b'[') => parse_json(body)?,
        _ => vec![parse_json(body)?],
    };
    raw.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let status = match a.status.as_deref() {
                None => crate::alert::Status::Firing,
                Some(s) => parse_status(s, i)?,
            };
            let source = a.source.unwrap_or_else(|| "generic".into());
            if source.is_empty() || source.len() > MAX_SOURCE_LEN {
                return Err(DecodeError::InvalidField(format!(
                    "alerts[{i}].source must be 1..={MAX_SOURCE_LEN} characters"
                )));
            }
            let alert = Alert {
                source,
                status,
                fingerprint: fingerprint_or_labels(a.fingerprint, &a.labels),
                severity: severity(a.severity.as_deref(), &a.labels),
                labels: a.labels,
                annotations: a.annotations,
                starts_at: a.starts_at,
                ends_at: a.ends_at,
                generator_url: a.generator_url.filter(|u| !u.is_empty()),
                received_at,
            };
            validate(&alert, i)?;
            Ok(alert)
        })
        .collect()
}
