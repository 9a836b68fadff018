//! Payload formats: the wire shapes alerts arrive in, decoded into [`Alert`]s.
//!
//! Decoding is shared by every source (the webhook endpoints today, Kafka topics
//! later), so a payload means the same thing whichever way it arrives.
//!
//! - [`alertmanager`]: Prometheus Alertmanager webhook payload, version 4.
//! - [`grafana`]: Grafana Alerting webhook contact point payload.
//! - [`generic`]: incidentd's own JSON, one alert or an array (schema in the README).

pub mod alertmanager;
pub mod generic;
pub mod grafana;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::alert::Alert;

/// Which payload shape a body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Alertmanager,
    Grafana,
    Generic,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Alertmanager, Format::Grafana, Format::Generic];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Alertmanager => "alertmanager",
            Format::Grafana => "grafana",
            Format::Generic => "generic",
        }
    }

    /// Decodes one body into canonical alerts, stamped with `received_at`.
    pub fn decode(
        self,
        body: &[u8],
        received_at: DateTime<Utc>,
    ) -> Result<Vec<Alert>, DecodeError> {
        if let Err(e) = std::str::from_utf8(body) {
            return Err(DecodeError::InvalidUtf8 {
                offset: e.valid_up_to(),
            });
        }
        match self {
            Format::Alertmanager => alertmanager::decode(body, received_at),
            Format::Grafana => grafana::decode(body, received_at),
            Format::Generic => generic::decode(body, received_at),
        }
    }
}

/// Why a payload could not be decoded. `reason()` is the low-cardinality metric label.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not valid UTF-8 (first bad byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    MissingField(String),
    #[error("{0}")]
    InvalidField(String),
    #[error("unsupported payload version {found:?}, expected {expected:?}")]
    UnsupportedVersion {
        found: String,
        expected: &'static str,
    },
}

impl DecodeError {
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::InvalidUtf8 { .. } => "invalid_utf8",
            DecodeError::MalformedJson(_) => "malformed_json",
            DecodeError::MissingField(_) => "missing_field",
            DecodeError::InvalidField(_) => "invalid_field",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
        }
    }
}

/// `serde_json::from_slice`, with its errors sorted into [`DecodeError`] kinds.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        let msg = e.to_string();
        match e.classify() {
            Category::Data if msg.starts_with("missing field") => DecodeError::MissingField(msg),
            Category::Data => DecodeError::InvalidField(msg),
            Category::Syntax | Category::Eof | Category::Io => DecodeError::MalformedJson(msg),
        }
    })
}

/// Checks shared by every format: at least one label, no empty label name, a
/// fingerprint safe to use as a key.
pub(crate) fn validate(alert: &Alert, index: usize) -> Result<(), DecodeError> {
    if alert.labels.is_empty() {
        return Err(DecodeError::InvalidField(format!(
            "alerts[{index}].labels is empty: an alert needs at least one label to identify it"
        )));
    }
    if alert.labels.keys().any(|k| k.is_empty()) {
        return Err(DecodeError::InvalidField(format!(
            "alerts[{index}].labels has an empty label name"
        )));
    }
    if !crate::alert::valid_fingerprint(&alert.fingerprint) {
        return Err(DecodeError::InvalidField(format!(
            "alerts[{index}].fingerprint must be 1..={} characters of [A-Za-z0-9_.:-]",
            crate::alert::MAX_FINGERPRINT_LEN
        )));
    }
    Ok(())
}

/// Reads a `"firing"` / `"resolved"` status field.
pub(crate) fn parse_status(raw: &str, index: usize) -> Result<crate::alert::Status, DecodeError> {
    crate::alert::Status::parse(raw).ok_or_else(|| {
        DecodeError::InvalidField(format!(
            "alerts[{index}].status is {raw:?}, expected \"firing\" or \"resolved\""
        ))
    })
}

/// The fingerprint the sender gave, or the label fingerprint when it gave none.
pub(crate) fn fingerprint_or_labels(
    given: Option<String>,
    labels: &std::collections::BTreeMap<String, String>,
) -> String {
    match given {
        Some(fp) if !fp.is_empty() => fp,
        _ => crate::alert::label_fingerprint(labels),
    }
}

/// Severity from an explicit field, else the `severity` label.
pub(crate) fn severity(
    explicit: Option<&str>,
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    explicit
        .or_else(|| labels.get("severity").map(String::as_str))
        .filter(|s| !s.trim().is_empty())
        .map(crate::alert::normalize_severity)
}
