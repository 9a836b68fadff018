//! Grafana Alerting webhook contact point payload
//! (<https://grafana.com/docs/grafana/latest/alerting/configure-notifications/manage-contact-points/integrations/webhook-notifier/>).
//!
//! Its alert objects are Alertmanager's plus Grafana extras (`values`,
//! `dashboardURL`, `panelURL`, `silenceURL`), which are kept as annotations when
//! they are links an operator would want on the ticket.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{DecodeError, fingerprint_or_labels, parse_json, parse_status, severity, validate};
use crate::alert::{Alert, non_zero_time};

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    version: Option<String>,
    alerts: Vec<GrafanaAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GrafanaAlert {
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
    #[serde(default, rename = "dashboardURL")]
    dashboard_url: Option<String>,
    #[serde(default, rename = "panelURL")]
    panel_url: Option<String>,
}

pub(super) fn decode(body: &[u8], received_at: DateTime<Utc>) -> Result<Vec<Alert>, DecodeError> {
    let payload: Payload = parse_json(body)?;
    if let Some(v) = payload.version.as_deref()
        && v != "1"
    {
        return Err(DecodeError::UnsupportedVersion {
            found: v.to_string(),
            expected: "1",
        });
    }
    payload
        .alerts
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let mut annotations = a.annotations;
            for (key, url) in [
                ("dashboard_url", a.dashboard_url),
                ("panel_url", a.panel_url),
            ] {
                if let Some(url) = url.filter(|u| !u.is_empty()) {
                    annotations.entry(key.to_string()).or_insert(url);
                }
            }
            let alert = Alert {
                source: "grafana".into(),
                status: parse_status(&a.status, i)?,
                fingerprint: fingerprint_or_labels(a.fingerprint, &a.labels),
                severity: severity(None, &a.labels),
                labels: a.labels,
                annotations,
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
