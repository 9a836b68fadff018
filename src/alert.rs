//! The canonical alert every source is normalized into, and its fingerprint.
//!
//! Alertmanager and Grafana payloads keep the fingerprint their sender computed;
//! every other alert gets one computed the way Prometheus computes
//! `model.LabelSet.Fingerprint()` (FNV-1a 64 over the sorted label pairs), so the
//! same label set yields the same fingerprint whichever source it came through.

use std::collections::BTreeMap;
use std::hash::Hasher;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest fingerprint accepted from a sender. Fingerprints become store keys.
pub const MAX_FINGERPRINT_LEN: usize = 128;

/// Whether an alert is currently firing or has resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "firing" => Some(Status::Firing),
            "resolved" => Some(Status::Resolved),
            _ => None,
        }
    }
}

/// One alert, whatever sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Which source delivered it (`alertmanager`, `grafana`, or the generic `source` field).
    pub source: String,
    pub fingerprint: String,
    pub status: Status,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Normalized severity (see [`normalize_severity`]), from the payload or the `severity` label.
    pub severity: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: Option<String>,
    pub received_at: DateTime<Utc>,
}

#[cfg(test)]
impl Alert {
    /// A bare alert for unit tests: `labels`, fingerprinted from them, with
    /// `status`, received at `at`.
    pub(crate) fn for_test(labels: &[(&str, &str)], status: Status, at: DateTime<Utc>) -> Alert {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Alert {
            source: "test".into(),
            fingerprint: label_fingerprint(&labels),
            status,
            labels,
            annotations: Default::default(),
            severity: None,
            starts_at: None,
            ends_at: None,
            generator_url: None,
            received_at: at,
        }
    }
}

/// Prometheus' label-set fingerprint: FNV-1a 64 over `name 0xff value 0xff` for the
/// labels sorted by name, printed as 16 hex digits.
pub fn label_fingerprint(labels: &BTreeMap<String, String>) -> String {
    const SEP: u8 = 0xff;
    let mut h = fnv::FnvHasher::default();
    // BTreeMap iterates in name order, which is the order Prometheus hashes in.
    for (name, value) in labels {
        h.write(name.as_bytes());
        h.write_u8(SEP);
        h.write(value.as_bytes());
        h.write_u8(SEP);
    }
    format!("{:016x}", h.finish())
}

/// A sender-supplied fingerprint must be short and made of characters that are
/// safe inside a store key (no braces: they delimit Redis Cluster hash tags).
pub fn valid_fingerprint(fp: &str) -> bool {
    !fp.is_empty()
        && fp.len() <= MAX_FINGERPRINT_LEN
        && fp
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Maps the many spellings of severity that tools use onto a small set:
/// `critical`, `error`, `warning`, `info`; anything else is kept, lower-cased.
pub fn normalize_severity(raw: &str) -> String {
    let s = raw.trim().to_ascii_lowercase();
    match s.as_str() {
        "critical" | "crit" | "fatal" | "emergency" | "emerg" | "alert" | "disaster" | "p1" => {
            "critical".into()
        }
        "error" | "err" | "major" | "high" | "p2" => "error".into(),
        "warning" | "warn" | "minor" | "average" | "medium" | "p3" => "warning".into(),
        "info" | "informational" | "information" | "notice" | "low" | "ok" | "p4" | "p5" => {
            "info".into()
        }
        _ => s,
    }
}

/// Alertmanager and Grafana write the zero time `0001-01-01T00:00:00Z` for "not set".
pub fn non_zero_time(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    t.filter(|t| t.timestamp() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_fingerprint_matches_alertmanager_for_captured_alert() {
        // From tests/fixtures/alertmanager/am-0.25-webhook-v4.jsonl, line 1.
        let l = labels(&[
            ("alertname", "HighScrapeDuration"),
            ("cluster", "eu1"),
            ("instance", "127.0.0.1:19201"),
            ("job", "api"),
            ("service", "checkout-api"),
            ("severity", "warning"),
            ("team", "payments"),
        ]);
        assert_eq!(label_fingerprint(&l), "6f3d5b2b72374de6");
    }

    #[test]
    fn fingerprint_ignores_insertion_order() {
        let a = labels(&[("b", "2"), ("a", "1")]);
        let b = labels(&[("a", "1"), ("b", "2")]);
        assert_eq!(label_fingerprint(&a), label_fingerprint(&b));
        assert_ne!(
            label_fingerprint(&a),
            label_fingerprint(&labels(&[("a", "12")]))
        );
    }

    #[test]
    fn fingerprints_with_key_breaking_characters_are_refused() {
        assert!(valid_fingerprint("6f3d5b2b72374de6"));
        assert!(!valid_fingerprint("a{b}"));
        assert!(!valid_fingerprint(""));
        assert!(!valid_fingerprint(&"a".repeat(MAX_FINGERPRINT_LEN + 1)));
    }

    #[test]
    fn severity_aliases_collapse() {
        assert_eq!(normalize_severity(" CRIT "), "critical");
        assert_eq!(normalize_severity("warn"), "warning");
        assert_eq!(normalize_severity("page"), "page");
    }
}
