//! The PagerDuty adapter: Events API v2 (`POST {url}/v2/enqueue`).
//!
//! The Events API is write-only and asynchronous (202 = accepted), and it
//! deduplicates by `dedup_key`, which is the incident id here. So:
//!
//! - create: a `trigger` with `dedup_key` = incident id, `payload.summary`
//!   (template, ≤1024 characters), `payload.source` (template, default the
//!   service or `incidentd`), `payload.severity` from the priority (default 1
//!   critical, 2 error, 3 warning, 4 and 5 info; PagerDuty has only four), the
//!   ITIL fields in `payload.custom_details` (PagerDuty has no such fields, and
//!   its own urgency comes from the service's rules), `group` = assignment group,
//!   `class` = category, and a link to the incident when `incident_url` is set.
//! - find: always `None`. A `trigger` on a key whose alert is open only adds a
//!   log entry, so creating again after a lost response cannot make a second
//!   alert; there is nothing to search anyway (write-only API).
//! - update: a `trigger` again with the same key, the current summary and
//!   details and the new timeline entries in `custom_details.new_timeline`
//!   (PagerDuty appends it to the alert's log). Only while the incident is open:
//!   on a resolved key a `trigger` opens a *new* alert, which must happen only
//!   as a reopen.
//! - transition: Acknowledged → `acknowledge`, Resolved/Closed → `resolve`
//!   (PagerDuty has no closed state; a second `resolve` is dropped, still 202),
//!   Open → `trigger` (after a resolve this opens the new alert: the reopen).
//! - fetch: not possible (nothing to read with a routing key).
//!
//! Errors: a 202 whose body is not `"status": "success"` is an error; 400
//! (invalid event or routing key) is permanent; 429 carries no `Retry-After`,
//! so the shared backoff applies (PagerDuty suggests waiting tens of seconds:
//! raise `delivery.initial_backoff_ms` for busy integrations).

mod config;

pub use config::Config;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::adapters::text::{Text, truncate};
use crate::adapters::{Adapter, DeliveryError, ExternalRef, Target, TicketState, mapped};
use crate::incident::{Incident, TimelineEntry};
use crate::secret::Secret;

/// Field limits of the Events API v2.
const SUMMARY_MAX: usize = 1024;
const DEDUP_KEY_MAX: usize = 255;
/// Not a PagerDuty field limit: keeps one event well under the 512 KB cap
/// whatever the description holds.
const DESCRIPTION_MAX: usize = 8_000;
const TIMELINE_ENTRY_MAX: usize = 1_000;
const DEFAULT_SEVERITY: [&str; 5] = ["critical", "error", "warning", "info", "info"];

pub struct PagerDuty {
    enqueue: reqwest::Url,
    routing_key: Secret,
    summary: Text,
    source: Text,
    incident_url: Option<Text>,
    severity: std::collections::BTreeMap<u8, String>,
}

/// `{base}/v2/enqueue`, keeping any path prefix of `base` (a proxy's).
fn endpoint(base: &reqwest::Url) -> Option<reqwest::Url> {
    let mut u = base.clone();
    u.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(["v2", "enqueue"]);
    Some(u)
}

/// The error a 2xx body reports: anything but `"status": "success"`.
fn error_in_body(_status: u16, body: &[u8]) -> Option<String> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return Some("the body is not PagerDuty's JSON response".to_string()),
    };
    if v["status"] == "success" {
        return None;
    }
    let mut reason = format!(
        "status {}",
        v.get("status")
            .map_or_else(|| "missing".to_string(), Value::to_string)
    );
    if let Some(m) = v["message"].as_str() {
        reason.push_str(&format!(": {m}"));
    }
    if let Some(errors) = v["errors"].as_array() {
        let list: Vec<&str> = errors.iter().filter_map(Value::as_str).collect();
        if !list.is_empty() {
            reason.push_str(&format!(" ({})", list.join("; ")));
        }
    }
    Some(reason)
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A timeline entry as one line of the alert's log.
pub fn entry_line(e: &TimelineEntry) -> String {
    truncate(
        &format!("{} {}: {}", timestamp(e.at), e.event, e.cause),
        TIMELINE_ENTRY_MAX,
    )
}

impl PagerDuty {
    /// The severity for an incident priority.
    pub fn severity(&self, priority: u8) -> &str {
        mapped(&self.severity, priority, &DEFAULT_SEVERITY)
    }

    /// The key later events address the alert by; always ours, never one
    /// PagerDuty would make up.
    fn dedup_key(inc: &Incident) -> &str {
        // Incident ids are `inc-<uuid>`, far below the limit; cutting one would
        // merge unrelated incidents, so it is only checked.
        debug_assert!(inc.id.len() <= DEDUP_KEY_MAX);
        &inc.id
    }

    fn custom_details(inc: &Incident, new_entries: &[TimelineEntry]) -> Value {
        let mut d = Map::new();
        d.insert("incident_id".into(), json!(inc.id));
        d.insert("priority".into(), json!(format!("P{}", inc.priority)));
        d.insert("impact".into(), json!(inc.impact.as_str()));
        d.insert("urgency".into(), json!(inc.urgency.as_str()));
        for (k, v) in [
            ("category", &inc.category),
            ("subcategory", &inc.subcategory),
            ("assignment_group", &inc.assignment_group),
            ("service", &inc.service),
        ] {
            if let Some(v) = v {
                d.insert(k.into(), json!(v));
            }
        }
        if !inc.configuration_items.is_empty() {
            d.insert("configuration_items".into(), json!(inc.configuration_items));
        }
        d.insert("alert_count".into(), json!(inc.alert_count));
        d.insert("state".into(), json!(inc.state.as_str()));
        d.insert("major".into(), json!(inc.major));
        d.insert("rule".into(), json!(inc.rule));
        if !inc.description.is_empty() {
            d.insert(
                "description".into(),
                json!(truncate(&inc.description, DESCRIPTION_MAX)),
            );
        }
        if !new_entries.is_empty() {
            let lines: Vec<String> = new_entries.iter().map(entry_line).collect();
            d.insert("new_timeline".into(), json!(lines));
        }
        Value::Object(d)
    }

    /// A `trigger` event for `inc` as it is now.
    pub fn trigger_body(
        &self,
        inc: &Incident,
        dedup_key: &str,
        at: DateTime<Utc>,
        new_entries: &[TimelineEntry],
    ) -> Value {
        let mut summary = self.summary.render(inc);
        if summary.trim().is_empty() {
            // Required by PagerDuty; an empty render would be refused for good.
            summary = inc.id.clone();
        }
        let mut source = self.source.render(inc);
        if source.trim().is_empty() {
            source = "incidentd".to_string();
        }
        let mut payload = Map::new();
        payload.insert("summary".into(), json!(truncate(&summary, SUMMARY_MAX)));
        payload.insert("source".into(), json!(source));
        payload.insert("severity".into(), json!(self.severity(inc.priority)));
        payload.insert("timestamp".into(), json!(timestamp(at)));
        if let Some(g) = &inc.assignment_group {
            payload.insert("group".into(), json!(g));
        }
        if let Some(c) = &inc.category {
            payload.insert("class".into(), json!(c));
        }
        payload.insert(
            "custom_details".into(),
            Self::custom_details(inc, new_entries),
        );

        let mut body = Map::new();
        body.insert("routing_key".into(), json!(self.routing_key.expose()));
        body.insert("event_action".into(), json!("trigger"));
        body.insert("dedup_key".into(), json!(dedup_key));
        body.insert("payload".into(), Value::Object(payload));
        body.insert("client".into(), json!("incidentd"));
        if let Some(url) = self
            .incident_url
            .as_ref()
            .map(|t| t.render(inc))
            .filter(|u| !u.trim().is_empty())
        {
            body.insert("client_url".into(), json!(url));
            body.insert(
                "links".into(),
                json!([{"href": url, "text": format!("incidentd {}", inc.id)}]),
            );
        }
        Value::Object(body)
    }

    /// Sends one event; answers the dedup key PagerDuty reports (ours, unless
    /// the response left it out).
    async fn enqueue(
        &self,
        target: &Target,
        what: &str,
        body: &Value,
    ) -> Result<Option<String>, DeliveryError> {
        let bytes = bytes::Bytes::from(
            serde_json::to_vec(body).map_err(|e| DeliveryError::permanent(e.to_string()))?,
        );
        let reply = target
            .send(
                what,
                |c| {
                    c.post(self.enqueue.clone())
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(bytes.clone())
                },
                error_in_body,
            )
            .await?;
        Ok(reply.json()?["dedup_key"].as_str().map(str::to_string))
    }

    async fn state_event(
        &self,
        target: &Target,
        action: &str,
        ext: &ExternalRef,
    ) -> Result<(), DeliveryError> {
        // Must carry the trigger's routing key and dedup key, or PagerDuty drops it.
        let body = json!({
            "routing_key": self.routing_key.expose(),
            "event_action": action,
            "dedup_key": ext.id,
        });
        self.enqueue(target, action, &body).await.map(|_| ())
    }
}

#[async_trait::async_trait]
impl Adapter for PagerDuty {
    fn kind(&self) -> &'static str {
        "pagerduty"
    }

    async fn find(
        &self,
        _target: &Target,
        _inc: &Incident,
    ) -> Result<Option<ExternalRef>, DeliveryError> {
        // PagerDuty dedups by key itself (see the module header).
        Ok(None)
    }

    async fn create(&self, target: &Target, inc: &Incident) -> Result<ExternalRef, DeliveryError> {
        let body = self.trigger_body(inc, Self::dedup_key(inc), inc.created_at, &[]);
        let key = self
            .enqueue(target, "trigger", &body)
            .await?
            .unwrap_or_else(|| Self::dedup_key(inc).to_string());
        Ok(ExternalRef {
            id: key.clone(),
            display: key,
            url: None,
        })
    }

    async fn update(
        &self,
        target: &Target,
        inc: &Incident,
        ext: &ExternalRef,
        new_entries: &[TimelineEntry],
    ) -> Result<(), DeliveryError> {
        if !inc.state.is_open() {
            // A trigger now would open a new alert for a resolved incident; the
            // resolve transition follows and is all PagerDuty needs.
            return Ok(());
        }
        let body = self.trigger_body(inc, &ext.id, inc.updated_at, new_entries);
        self.enqueue(target, "trigger", &body).await.map(|_| ())
    }

    async fn transition(
        &self,
        target: &Target,
        inc: &Incident,
        ext: &ExternalRef,
        to: TicketState,
    ) -> Result<(), DeliveryError> {
        match to {
            TicketState::Open => {
                let body = self.trigger_body(inc, &ext.id, inc.updated_at, &[]);
                self.enqueue(target, "trigger", &body).await.map(|_| ())
            }
            TicketState::Acknowledged => self.state_event(target, "acknowledge", ext).await,
            TicketState::Resolved | TicketState::Closed => {
                self.state_event(target, "resolve", ext).await
            }
        }
    }
}
