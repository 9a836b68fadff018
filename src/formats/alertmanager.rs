//! Prometheus Alertmanager webhook payload, version 4
//! (<https://prometheus.io/docs/alerting/latest/configuration/#webhook_config>).
//!
//! Unknown fields are ignored: Alertmanager adds fields between releases and a
//! receiver must keep working. The fingerprint Alertmanager computed is kept.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{DecodeError, fingerprint_or_labels, parse_json, parse_status, severity, validate};
use crate::alert::{Alert, non_zero_time};

#[derive(Deserialize)]
struct Payload {
    version: String,
    alerts: Vec<AmAlert>,
}

/// One alert as Alertmanager (and Grafana, which extends it) sends it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AmAlert {
    status: String,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    ends_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
}

pub(super) fn decode(body: &[u8], received_at: DateTime<Utc>) -> Result<Vec<Alert>, DecodeError> {
    let payload: Payload = parse_json(body)?;
    if payload.version != "4" {
        return Err(DecodeError::UnsupportedVersion {
            found: payload.version,
            expected: "4",
        });
    }
    payload
        .alerts
        .into_iter()
        .enumerate()
        .map(|(i, a)| a.into_alert("alertmanager", i, received_at, |_| {}))
        .collect()
}

impl AmAlert {
    /// The canonical alert; `extend` adds what a format carries beyond
    /// Alertmanager's fields (to the annotations, say) before validation.
    pub(super) fn into_alert(
        self,
        source: &str,
        index: usize,
        received_at: DateTime<Utc>,
        extend: impl FnOnce(&mut Alert),
    ) -> Result<Alert, DecodeError> {
        let mut alert = Alert {
            source: source.into(),
            status: parse_status(&self.status, index)?,
            fingerprint: fingerprint_or_labels(self.fingerprint, &self.labels),
            severity: severity(None, &self.labels),
            labels: self.labels,
            annotations: self.annotations,
            starts_at: non_zero_time(self.starts_at),
            ends_at: non_zero_time(self.ends_at),
            generator_url: self.generator_url.filter(|u| !u.is_empty()),
            received_at,
        };
        extend(&mut alert);
        validate(&alert, index)?;
        Ok(alert)
    }
}
