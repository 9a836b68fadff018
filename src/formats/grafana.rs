//! Grafana Alerting webhook contact point payload
//! (<https://grafana.com/docs/grafana/latest/alerting/configure-notifications/manage-contact-points/integrations/webhook-notifier/>).
//!
//! Its alert objects are Alertmanager's plus Grafana extras (`values`,
//! `dashboardURL`, `panelURL`, `silenceURL`), which are kept as annotations when
//! they are links an operator would want on the ticket.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::alertmanager::AmAlert;
use super::{DecodeError, parse_json};
use crate::alert::Alert;

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    version: Option<String>,
    alerts: Vec<GrafanaAlert>,
}

#[derive(Deserialize)]
struct GrafanaAlert {
    #[serde(flatten)]
    alert: AmAlert,
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
        .map(|(i, g)| {
            g.alert.into_alert("grafana", i, received_at, |alert| {
                for (key, url) in [
                    ("dashboard_url", g.dashboard_url),
                    ("panel_url", g.panel_url),
                ] {
                    if let Some(url) = url.filter(|u| !u.is_empty()) {
                        alert.annotations.entry(key.to_string()).or_insert(url);
                    }
                }
            })
        })
        .collect()
}
