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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmAlert {
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
        .map(|(i, a)| {
            let alert = Alert {
                source: "alertmanager".into(),
                status: parse_status(&a.status, i)?,
                fingerprint: fingerprint_or_labels(a.fingerprint, &a.labels),
                severity: severity(None, &a.labels),
                labels: a.labels,
                annotations: a.annotations,
                starts_at: non_zero_time(a.starts_at),
                ends_at: non_zero_time(a.ends_at),
                generator_url: a.generator_url.filter(|u| !u.is_empty()),
                received_at,
            };
            validate(&alert, i)?;
            Ok(alert)
        })
        .collect()
}
