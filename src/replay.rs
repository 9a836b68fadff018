//! `incidentd replay`: recorded deliveries through the rules on the memory store,
//! on the recorded clock, printing the incidents that would have been raised.
//! Nothing is sent anywhere.
//!
//! Input: JSON lines, each either the envelope
//! `{"received_at": RFC 3339, "body": payload}` or a bare payload. A payload is an
//! Alertmanager webhook body (`"version": "4"`), a Grafana one (`"version": "1"`
//! or `orgId`), or generic alert JSON. Bare payloads have no recorded time: they
//! are replayed in file order, 1 ms apart, from the time the replay starts.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::formats::Format;
use crate::incident::Incident;
use crate::rules::RuleSet;
use crate::simulate::Simulation;
use crate::store::AlertState;

/// What a replay produced.
#[derive(Debug, Serialize)]
pub struct ReplayResult {
    pub incidents: Vec<Incident>,
    pub alerts: Vec<AlertState>,
    /// Deliveries that could not be read, as `line N: error`.
    pub skipped: Vec<String>,
}

/// Replays the deliveries in `input` through `rules`, with the daemon settings
/// of `config` (flapping, SLA, heartbeats) when given.
pub async fn replay(
    input: &Path,
    rules: Arc<RuleSet>,
    config: Option<&Config>,
) -> Result<ReplayResult, String> {
    let text = std::fs::read_to_string(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let sim = Simulation::configured(rules, config).map_err(|e| e.to_string())?;
    // The time of the last delivery; bare payloads without one start from now.
    let mut clock: Option<DateTime<Utc>> = None;
    let mut skipped = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (at, body) = match delivery(line, clock.unwrap_or_else(Utc::now)) {
            Ok(d) => d,
            Err(e) => {
                skipped.push(format!("line {}: {e}", n + 1));
                continue;
            }
        };
        clock = Some(clock.map_or(at, |c| c.max(at)));
        let format = detect(&body);
        let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        match format.decode(&bytes, at) {
            Ok(alerts) => {
                // As the webhook endpoint does: a delivery is activity on it.
                sim.activity("webhook", format.as_str(), at)
                    .await
                    .map_err(|e| format!("line {}: {e}", n + 1))?;
                sim.feed(format.as_str(), alerts, at)
                    .await
                    .map_err(|e| format!("line {}: {e}", n + 1))?;
            }
            Err(e) => skipped.push(format!("line {}: {} payload: {e}", n + 1, format.as_str())),
        }
    }
    if let Some(end) = clock {
        sim.advance(end).await.map_err(|e| e.to_string())?;
    }
    Ok(ReplayResult {
        incidents: sim.incidents().await.map_err(|e| e.to_string())?,
        alerts: sim.alerts().await.map_err(|e| e.to_string())?,
        skipped,
    })
}

/// The delivery time and payload of one line.
fn delivery(line: &str, clock: DateTime<Utc>) -> Result<(DateTime<Utc>, Value), String> {
    let mut v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(obj) = v.as_object_mut()
        && obj.contains_key("body")
        && obj.contains_key("received_at")
    {
        let at = obj
            .get("received_at")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .ok_or("received_at is not an RFC 3339 time")?
            .with_timezone(&Utc);
        let body = obj.remove("body").unwrap_or(Value::Null);
        return Ok((at, body));
    }
    Ok((clock + chrono::Duration::milliseconds(1), v))
}

fn detect(body: &Value) -> Format {
    match body.get("version").and_then(Value::as_str) {
        Some("4") => Format::Alertmanager,
        Some("1") => Format::Grafana,
        _ if body.get("orgId").is_some() => Format::Grafana,
        _ if body.get("alerts").is_some() => Format::Alertmanager,
        _ => Format::Generic,
    }
}

/// The incidents as a table an operator reads, and with `explain` why each
/// alert went where it went.
pub fn render_table(result: &ReplayResult, explain: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:<11} {:>2} {:>6}  {:<16} TITLE",
        "ID", "STATE", "P", "ALERTS", "RULE"
    );
    for i in &result.incidents {
        // Topology: what the incident is about, or where it went.
        let topo = match (&i.topology.merged_into, &i.topology.root_cause) {
            (Some(into), _) => format!("  [merged into {into}]"),
            (None, Some(root)) if i.topology.affected_services.len() > 1 => format!(
                "  [root cause {root}; affects {}]",
                i.topology.affected_services.join(", ")
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<40} {:<11} {:>2} {:>6}  {:<16} {}{topo}",
            i.id,
            i.state.as_str(),
            i.priority,
            i.alert_count,
            i.rule,
            i.title
        );
    }
    let merged = result
        .incidents
        .iter()
        .filter(|i| i.topology.merged_into.is_some())
        .count();
    let _ = writeln!(
        out,
        "{} incident(s){} from {} alert(s)",
        result.incidents.len(),
        if merged > 0 {
            format!(" ({merged} merged into another)")
        } else {
            String::new()
        },
        result.alerts.len()
    );
    if explain {
        let _ = writeln!(out, "\nALERTS");
        for a in &result.alerts {
            let name = a.labels.get("alertname").map(String::as_str).unwrap_or("-");
            let why = a
                .explain
                .as_ref()
                .map_or("not processed", |e| e.summary.as_str());
            let _ = writeln!(
                out,
                "{} {:<24} {:<8} {}",
                a.fingerprint,
                name,
                a.status.as_str(),
                why
            );
        }
    }
    for s in &result.skipped {
        let _ = writeln!(out, "skipped {s}");
    }
    out
}
