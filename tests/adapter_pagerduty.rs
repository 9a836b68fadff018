//! Contract tests of the PagerDuty adapter against a local Events API v2
//! (`POST /v2/enqueue`) that checks every event as PagerDuty documents it
//! (JSON body, 32-character routing key, `event_action`, `dedup_key` ≤255,
//! `payload.summary` ≤1024, `source`, one of four severities, ISO-8601
//! timestamp, `links[].href`), refuses anything else with PagerDuty's 400
//! shape, and keeps alerts per dedup key the way PagerDuty does: a trigger on
//! an open key adds a log entry, on a resolved key opens a new alert;
//! acknowledge/resolve on a resolved key are dropped, still 202.

mod common;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use incidentd::adapters::pagerduty::{Config, PagerDuty};
use incidentd::adapters::{Adapter, DeliveryError, ExternalRef, Target, TicketState};
use incidentd::config::Problems;
use incidentd::incident::{Incident, IncidentState, TimelineEntry};
use incidentd::rules::Level;

const KEY: &str = "0123456789abcdef0123456789abcdef";
/// Well-formed but unknown to the mock.
const OTHER_KEY: &str = "fedcba9876543210fedcba9876543210";

// ---------------------------------------------------------------- the mock

use common::Fault;

#[derive(Debug, Clone)]
struct Alert {
    key: String,
    /// `triggered`, `acknowledged` or `resolved`.
    status: String,
    summary: String,
    source: String,
    severity: String,
    /// Every trigger event the alert took (its log).
    log: Vec<Value>,
}

#[derive(Default)]
struct Pd {
    alerts: Vec<Alert>,
    requests: usize,
    /// Events accepted, in order.
    events: Vec<Value>,
    faults: VecDeque<Fault>,
}

type Shared = Arc<Mutex<Pd>>;

impl Pd {
    fn open_alert(&mut self, key: &str) -> Option<&mut Alert> {
        self.alerts
            .iter_mut()
            .find(|a| a.key == key && a.status != "resolved")
    }

    fn alerts_for(&self, key: &str) -> Vec<Alert> {
        self.alerts
            .iter()
            .filter(|a| a.key == key)
            .cloned()
            .collect()
    }
}

fn invalid(errors: Vec<String>) -> Response {
    let body =
        json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn is_str(v: &Value, max: usize) -> bool {
    v.as_str()
        .is_some_and(|s| !s.trim().is_empty() && s.chars().count() <= max)
}

/// The Events API v2 checks (02-Trigger-Events.md, openapiv3.json).
fn check_event(headers: &HeaderMap, body: &[u8]) -> Result<Value, Vec<String>> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(vec![format!(
            "Content-Type must be application/json, got {ct:?}"
        )]);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| vec![format!("Invalid JSON: {e}")])?;
    let mut errors = Vec::new();
    let Some(obj) = v.as_object() else {
        return Err(vec!["Event must be an object".into()]);
    };
    for k in obj.keys() {
        if ![
            "routing_key",
            "event_action",
            "dedup_key",
            "payload",
            "images",
            "links",
            "client",
            "client_url",
        ]
        .contains(&k.as_str())
        {
            errors.push(format!("Unknown field '{k}'"));
        }
    }
    match v["routing_key"].as_str() {
        Some(k) if k.len() == 32 => {
            if k != KEY {
                errors.push("Invalid routing key".into());
            }
        }
        _ => errors.push("Length of 'routing_key' is incorrect (should be 32 characters)".into()),
    }
    let action = v["event_action"].as_str().unwrap_or("");
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        errors.push("'event_action' is missing or invalid".into());
    }
    // Optional on trigger per PagerDuty, but an adapter must always send its own.
    if !is_str(&v["dedup_key"], 255) {
        errors.push("'dedup_key' is missing, blank or longer than 255 characters".into());
    }
    if action == "trigger" {
        let p = &v["payload"];
        if !p.is_object() {
            errors.push("'payload' is missing".into());
        }
        if !is_str(&p["summary"], 1024) {
            errors
                .push("'payload.summary' is missing, blank or longer than 1024 characters".into());
        }
        if !is_str(&p["source"], usize::MAX) {
            errors.push("'payload.source' is missing or blank".into());
        }
        if !["critical", "error", "warning", "info"].contains(&p["severity"].as_str().unwrap_or(""))
        {
            errors.push("'payload.severity' is invalid".into());
        }
        if let Some(t) = p.get("timestamp")
            && t.as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_none()
        {
            errors.push("'payload.timestamp' is not ISO-8601".into());
        }
        for f in ["component", "group", "class"] {
            if p.get(f).is_some_and(|x| !x.is_string()) {
                errors.push(format!("'payload.{f}' must be a string"));
            }
        }
        if p.get("custom_details").is_some_and(|x| !x.is_object()) {
            errors.push("'payload.custom_details' must be an object".into());
        }
        if let Some(links) = v.get("links") {
            let ok = links.as_array().is_some_and(|l| {
                l.iter()
                    .all(|x| x["href"].as_str().is_some_and(|h| h.starts_with("http")))
            });
            if !ok {
                errors.push("'links' must be a list of {href, text}".into());
            }
        }
    } else if v.get("payload").is_some() || v.get("links").is_some() {
        errors.push(format!("{action} takes no payload"));
    }
    if errors.is_empty() {
        Ok(v)
    } else {
        Err(errors)
    }
}

async fn enqueue(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut pd = s.lock().unwrap();
    pd.requests += 1;
    let fault = pd.faults.pop_front();
    if let Some(f) = fault.as_ref().filter(|f| !f.process) {
        return f.response();
    }
    let event = match check_event(&headers, &body) {
        Ok(v) => v,
        Err(errors) => return invalid(errors),
    };
    let key = event["dedup_key"].as_str().unwrap().to_string();
    match event["event_action"].as_str().unwrap() {
        "trigger" => {
            let p = &event["payload"];
            let (summary, source, severity) = (
                p["summary"].as_str().unwrap().to_string(),
                p["source"].as_str().unwrap().to_string(),
                p["severity"].as_str().unwrap().to_string(),
            );
            if let Some(a) = pd.open_alert(&key) {
                a.log.push(event.clone());
                (a.summary, a.source, a.severity) = (summary, source, severity);
            } else {
                pd.alerts.push(Alert {
                    key: key.clone(),
                    status: "triggered".into(),
                    summary,
                    source,
                    severity,
                    log: vec![event.clone()],
                });
            }
        }
        // On a resolved (or unknown) key both are dropped, still 202.
        "acknowledge" => {
            if let Some(a) = pd.open_alert(&key) {
                a.status = "acknowledged".into();
            }
        }
        _ => {
            if let Some(a) = pd.open_alert(&key) {
                a.status = "resolved".into();
            }
        }
    }
    pd.events.push(event);
    match fault {
        Some(f) => f.response(),
        None => (
            StatusCode::ACCEPTED,
            axum::Json(
                json!({"status": "success", "message": "Event processed", "dedup_key": key}),
            ),
        )
            .into_response(),
    }
}

async fn start_pd() -> (String, Shared) {
    let state: Shared = Arc::default();
    let app = Router::new()
        .route("/v2/enqueue", post(enqueue))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), state)
}

// ---------------------------------------------------------------- helpers

fn incident(id: &str) -> Incident {
    let _t0 = Utc.with_ymd_and_hms(2025, 6, 1, 10, 0, 0).unwrap();
    Incident {
        priority: 1,
        urgency: Level::High,
        subcategory: None,
        route: vec!["pager".into()],
        timeline: vec![entry(
            "created",
            "rule high-error-rate opened it for HighErrorRate",
        )],
        ..common::sample_incident(id)
    }
}

fn entry(event: &str, cause: &str) -> TimelineEntry {
    TimelineEntry {
        at: Utc.with_ymd_and_hms(2025, 6, 1, 10, 5, 0).unwrap(),
        event: event.into(),
        cause: cause.into(),
    }
}

const FAST: &str = "delivery: {initial_backoff_ms: 10, max_backoff_ms: 50, max_elapsed_ms: 5000}";

/// The adapter and its target, built from `yaml` (the adapter's block) the way
/// the daemon does.
fn build(yaml: &str) -> (PagerDuty, Target) {
    let cfg: Config = serde_norway::from_str(yaml).unwrap();
    let mut p = Problems::new(Path::new("t.yaml"), yaml);
    let adapter = cfg
        .build("adapters.pager", Path::new("."), &mut p)
        .expect("valid config");
    let metrics = Arc::new(incidentd::metrics::Metrics::new(prometheus::Registry::new()).unwrap());
    let target = Target::new("pager", &cfg.delivery, metrics).unwrap();
    (adapter, target)
}

async fn setup(extra: &str) -> (PagerDuty, Target, Shared) {
    let (url, pd) = start_pd().await;
    let (a, t) = build(&format!("url: {url}\nrouting_key: {KEY}\n{FAST}\n{extra}"));
    (a, t, pd)
}

/// `build` on a config expected to be refused.
fn refused(yaml: &str, base_dir: &Path) -> bool {
    let cfg: Config = serde_norway::from_str(yaml).unwrap();
    let mut p = Problems::new(Path::new("t.yaml"), yaml);
    cfg.build("adapters.pager", base_dir, &mut p).is_none()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn create_triggers_one_alert_keyed_by_the_incident_id_with_severity_and_itil_details() {
    let (a, t, pd) = setup("").await;
    let inc = incident("inc-create");
    let ext = a.create(&t, &inc).await.unwrap();
    assert_eq!(
        ext,
        ExternalRef {
            id: "inc-create".into(),
            display: "inc-create".into(),
            url: None
        }
    );

    let pd = pd.lock().unwrap();
    let alerts = pd.alerts_for("inc-create");
    assert_eq!(alerts.len(), 1);
    let al = &alerts[0];
    assert_eq!(
        (al.status.as_str(), al.severity.as_str()),
        ("triggered", "critical")
    );
    assert_eq!(al.summary, "High error rate on api-gateway");
    assert_eq!(al.source, "api-gateway", "default source is the service");
    let ev = &al.log[0];
    assert_eq!(ev["payload"]["timestamp"], "2025-06-01T10:00:00.000Z");
    assert_eq!(ev["payload"]["group"], "sre");
    assert_eq!(ev["payload"]["class"], "network");
    assert_eq!(ev["client"], "incidentd");
    assert!(ev.get("links").is_none(), "no incident_url configured");
    let d = &ev["payload"]["custom_details"];
    assert_eq!(d["incident_id"], "inc-create");
    assert_eq!(d["priority"], "P1");
    assert_eq!(
        (d["impact"].as_str(), d["urgency"].as_str()),
        (Some("high"), Some("high"))
    );
    assert_eq!(d["category"], "network");
    assert_eq!(d["assignment_group"], "sre");
    assert_eq!(d["service"], "api-gateway");
    assert_eq!(d["configuration_items"], json!(["gw-01", "gw-02"]));
    assert_eq!(d["alert_count"], 2);
    assert_eq!(d["state"], "new");
    assert!(
        d.get("subcategory").is_none(),
        "absent fields are left out, not null"
    );
}

#[tokio::test]
async fn default_severities_follow_priority_and_the_source_falls_back_to_incidentd() {
    let (a, t, pd) = setup("").await;
    for (prio, want) in [
        (1, "critical"),
        (2, "error"),
        (3, "warning"),
        (4, "info"),
        (5, "info"),
    ] {
        let mut inc = incident(&format!("inc-sev{prio}"));
        inc.priority = prio;
        inc.service = None;
        a.create(&t, &inc).await.unwrap();
        let pd = pd.lock().unwrap();
        let al = &pd.alerts_for(&inc.id)[0];
        assert_eq!(al.severity, want, "P{prio}");
        assert_eq!(al.source, "incidentd");
    }
}

#[tokio::test]
async fn configured_templates_severity_table_and_incident_link_are_used_and_summary_is_cut_to_1024()
{
    let extra = "summary: \"[P{{ incident.priority }}] {{ incident.title }}\"\n\
                 source: \"{{ incident.configuration_items | first }}\"\n\
                 severity: {1: error, 4: warning}\n\
                 incident_url: \"https://incidentd.example.com/incidents/{{ incident.id }}\"";
    let (a, t, pd) = setup(extra).await;
    let mut inc = incident("inc-cfg");
    a.create(&t, &inc).await.unwrap();
    inc.id = "inc-cfg-long".into();
    inc.priority = 4;
    inc.title = "x".repeat(2000);
    a.create(&t, &inc).await.unwrap();

    let pd = pd.lock().unwrap();
    let first = &pd.alerts_for("inc-cfg")[0];
    assert_eq!(first.summary, "[P1] High error rate on api-gateway");
    assert_eq!(first.source, "gw-01");
    assert_eq!(first.severity, "error", "overridden P1");
    let ev = &first.log[0];
    assert_eq!(
        ev["client_url"],
        "https://incidentd.example.com/incidents/inc-cfg"
    );
    assert_eq!(
        ev["links"][0]["href"],
        "https://incidentd.example.com/incidents/inc-cfg"
    );
    let long = &pd.alerts_for("inc-cfg-long")[0];
    assert_eq!(long.severity, "warning", "overridden P4");
    assert_eq!(long.summary.chars().count(), 1024);
    assert!(long.summary.ends_with('…'));
}

#[tokio::test]
async fn create_whose_response_was_lost_is_retried_into_the_same_alert_not_a_second_one() {
    let (a, t, pd) = setup("").await;
    let inc = incident("inc-lost");
    // No search exists or is needed: the dedup key makes the retry land on the open alert.
    assert_eq!(a.find(&t, &inc).await.unwrap(), None);
    pd.lock().unwrap().faults.push_back(Fault {
        process: true,
        ..Fault::plain(502, "<html>bad gateway</html>")
    });
    a.create(&t, &inc).await.unwrap();
    // And the worker creating again after a crash changes nothing either.
    a.create(&t, &inc).await.unwrap();

    let pd = pd.lock().unwrap();
    assert_eq!(pd.requests, 3);
    let alerts = pd.alerts_for("inc-lost");
    assert_eq!(alerts.len(), 1, "one alert for one incident");
    assert_eq!(alerts[0].log.len(), 3, "the repeats are log entries");
}

#[tokio::test]
async fn update_retriggers_the_same_key_with_new_fields_and_timeline_entries() {
    let (a, t, pd) = setup("").await;
    let mut inc = incident("inc-upd");
    let ext = a.create(&t, &inc).await.unwrap();
    inc.priority = 2;
    inc.alert_count = 3;
    inc.title = "High error rate on api-gateway and auth".into();
    let new = [
        entry("alert_added", "HighErrorRate on auth joined"),
        entry("alert_resolved", "HighErrorRate on gw-02 resolved"),
    ];
    a.update(&t, &inc, &ext, &new).await.unwrap();

    let pd = pd.lock().unwrap();
    let alerts = pd.alerts_for("inc-upd");
    assert_eq!(alerts.len(), 1);
    let al = &alerts[0];
    assert_eq!(al.log.len(), 2);
    assert_eq!(
        (al.summary.as_str(), al.severity.as_str()),
        ("High error rate on api-gateway and auth", "error")
    );
    let d = &al.log[1]["payload"]["custom_details"];
    assert_eq!(d["alert_count"], 3);
    assert_eq!(
        d["new_timeline"],
        json!([
            "2025-06-01T10:05:00.000Z alert_added: HighErrorRate on auth joined",
            "2025-06-01T10:05:00.000Z alert_resolved: HighErrorRate on gw-02 resolved"
        ])
    );
}

#[tokio::test]
async fn update_of_a_resolved_incident_sends_nothing_so_no_new_alert_opens() {
    let (a, t, pd) = setup("").await;
    let mut inc = incident("inc-quiet");
    let ext = a.create(&t, &inc).await.unwrap();
    inc.state = IncidentState::Resolved;
    a.transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    a.update(&t, &inc, &ext, &[entry("resolved", "all alerts resolved")])
        .await
        .unwrap();
    inc.state = IncidentState::Closed;
    a.update(&t, &inc, &ext, &[entry("closed", "closed after 24h")])
        .await
        .unwrap();
    a.transition(&t, &inc, &ext, TicketState::Closed)
        .await
        .unwrap();

    let pd = pd.lock().unwrap();
    let alerts = pd.alerts_for("inc-quiet");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].status, "resolved");
    let actions: Vec<&str> = pd
        .events
        .iter()
        .map(|e| e["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "resolve", "resolve"]);
}

#[tokio::test]
async fn acknowledge_and_resolve_carry_the_routing_key_and_dedup_key_only() {
    let (a, t, pd) = setup("").await;
    let mut inc = incident("inc-ack");
    let ext = a.create(&t, &inc).await.unwrap();
    inc.state = IncidentState::InProgress;
    a.transition(&t, &inc, &ext, TicketState::Acknowledged)
        .await
        .unwrap();
    assert_eq!(
        pd.lock().unwrap().alerts_for("inc-ack")[0].status,
        "acknowledged"
    );
    inc.state = IncidentState::Resolved;
    a.transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();

    let pd = pd.lock().unwrap();
    assert_eq!(pd.alerts_for("inc-ack")[0].status, "resolved");
    assert_eq!(
        pd.events[1],
        json!({"routing_key": KEY, "event_action": "acknowledge", "dedup_key": "inc-ack"})
    );
    assert_eq!(
        pd.events[2],
        json!({"routing_key": KEY, "event_action": "resolve", "dedup_key": "inc-ack"})
    );
}

#[tokio::test]
async fn reopen_after_resolve_triggers_a_new_alert_under_the_same_key() {
    let (a, t, pd) = setup("").await;
    let mut inc = incident("inc-reopen");
    let ext = a.create(&t, &inc).await.unwrap();
    inc.state = IncidentState::Resolved;
    a.transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    // The worker's steps for a reopen: update (fields, entries), then the transition.
    inc.state = IncidentState::Reopened;
    inc.reopen_count = 1;
    a.update(
        &t,
        &inc,
        &ext,
        &[entry("reopened", "HighErrorRate fired again")],
    )
    .await
    .unwrap();
    a.transition(&t, &inc, &ext, TicketState::Open)
        .await
        .unwrap();

    let pd = pd.lock().unwrap();
    let alerts = pd.alerts_for("inc-reopen");
    assert_eq!(
        alerts.len(),
        2,
        "PagerDuty opens a new alert for a resolved key"
    );
    assert_eq!(alerts[0].status, "resolved");
    assert_eq!(alerts[1].status, "triggered");
    assert_eq!(
        alerts[1].log[0]["payload"]["custom_details"]["state"],
        "reopened"
    );
}

#[tokio::test]
async fn rate_limit_429_without_retry_after_is_retried_with_backoff_then_succeeds() {
    let (a, t, pd) = setup("").await;
    {
        let mut pd = pd.lock().unwrap();
        // PagerDuty's 429 carries no Retry-After: the shared backoff decides.
        pd.faults.push_back(Fault::plain(429, ""));
        pd.faults.push_back(Fault::plain(429, ""));
    }
    let started = Instant::now();
    a.create(&t, &incident("inc-429")).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    let pd = pd.lock().unwrap();
    assert_eq!(pd.requests, 3);
    assert_eq!(pd.alerts_for("inc-429").len(), 1);
}

#[tokio::test]
async fn server_error_is_retried_then_succeeds() {
    let (a, t, pd) = setup("").await;
    pd.lock()
        .unwrap()
        .faults
        .push_back(Fault::plain(503, "Service Unavailable"));
    let mut inc = incident("inc-5xx");
    let ext = a.create(&t, &inc).await.unwrap();
    pd.lock().unwrap().faults.push_back(Fault::plain(500, ""));
    inc.state = IncidentState::Resolved;
    a.transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    let pd = pd.lock().unwrap();
    assert_eq!(pd.requests, 4);
    assert_eq!(pd.alerts_for("inc-5xx")[0].status, "resolved");
}

#[tokio::test]
async fn accepted_response_without_status_success_is_an_error() {
    let (url, pd) = start_pd().await;
    let (a, t) = build(&format!(
        "url: {url}\nrouting_key: {KEY}\ndelivery: {{initial_backoff_ms: 10, max_backoff_ms: 20, max_elapsed_ms: 150}}"
    ));
    {
        let mut pd = pd.lock().unwrap();
        for _ in 0..100 {
            pd.faults.push_back(Fault::plain(
                202,
                r#"{"status": "throttled", "message": "Try again"}"#,
            ));
        }
    }
    let err = a.create(&t, &incident("inc-202")).await.unwrap_err();
    match &err {
        DeliveryError::Transient { reason, .. } => {
            assert!(reason.contains("error in the body"), "{reason}");
            assert!(reason.contains("throttled"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        pd.lock().unwrap().requests > 1,
        "an error body is retried like any transient error"
    );
}

#[tokio::test]
async fn invalid_routing_key_is_a_permanent_400_sent_once_without_the_key_in_the_error() {
    let (url, pd) = start_pd().await;
    let (a, t) = build(&format!("url: {url}\nrouting_key: {OTHER_KEY}\n{FAST}"));
    let err = a.create(&t, &incident("inc-400")).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(matches!(err, DeliveryError::Permanent { .. }));
    let reason = err.to_string();
    assert!(reason.contains("Invalid routing key"), "{reason}");
    assert!(!reason.contains(OTHER_KEY));
    let pd = pd.lock().unwrap();
    assert_eq!(pd.requests, 1, "a 400 is not retried");
    assert!(pd.alerts.is_empty());
}

#[tokio::test]
async fn routing_key_is_read_from_a_file_and_hidden_from_debug_output() {
    let (url, pd) = start_pd().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pd.key"), format!("{KEY}\n")).unwrap();
    let yaml = format!("url: {url}/\nrouting_key_file: pd.key\n{FAST}");
    let cfg: Config = serde_norway::from_str(&yaml).unwrap();
    let mut p = Problems::new(Path::new("t.yaml"), &yaml);
    let a = cfg.build("adapters.pager", dir.path(), &mut p).unwrap();
    let metrics = Arc::new(incidentd::metrics::Metrics::new(prometheus::Registry::new()).unwrap());
    let t = Target::new("pager", &cfg.delivery, metrics).unwrap();
    a.create(&t, &incident("inc-file")).await.unwrap();
    assert_eq!(
        pd.lock().unwrap().alerts_for("inc-file").len(),
        1,
        "trailing / and newline handled"
    );

    let inline: Config = serde_norway::from_str(&format!("routing_key: {KEY}")).unwrap();
    assert!(!format!("{inline:?}").contains(KEY));
}

#[test]
fn invalid_configs_are_refused() {
    let here = Path::new(".");
    let ok = format!("routing_key: {KEY}");
    assert!(!refused(&ok, here), "defaults suffice");
    for bad in [
        "url: https://events.pagerduty.com".to_string(),
        format!("routing_key: {KEY}\nrouting_key_file: k"),
        "routing_key: too-short".to_string(),
        format!("routing_key: {KEY}\nurl: ftp://events.pagerduty.com"),
        format!("routing_key: {KEY}\nseverity: {{1: fatal}}"),
        format!("routing_key: {KEY}\nseverity: {{6: info}}"),
        format!("routing_key: {KEY}\nsummary: \"{{{{ incident.title \""),
        format!("routing_key: {KEY}\nincident_url: \"{{% if %}}\""),
        "routing_key_file: /nonexistent/pd.key".to_string(),
    ] {
        assert!(refused(&bad, here), "accepted: {bad}");
    }
    assert!(
        serde_norway::from_str::<Config>(&format!("routing_key: {KEY}\nservice_key: x")).is_err(),
        "unknown keys"
    );
}

#[test]
fn the_daemon_config_takes_a_pagerduty_adapter_block_and_points_at_bad_values() {
    let env = |n: &str| (n == "PD_KEY").then(|| KEY.to_string());
    let head = "store:\n  url: memory\nadapters:\n  pager:\n    type: pagerduty\n";
    let ok = head.to_string() + "    routing_key: ${PD_KEY}\n";
    let cfg = incidentd::config::parse(Path::new("t.yaml"), &ok, &Default::default(), env).unwrap();
    assert_eq!(cfg.adapters.len(), 1);
    assert_eq!(cfg.adapters[0].adapter.kind(), "pagerduty");
    let bad = head.to_string() + "    routing_key: ${PD_KEY}\n    severity: {1: fatal}\n";
    let err = incidentd::config::parse(Path::new("t.yaml"), &bad, &Default::default(), env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("adapters.pager.severity"), "{err}");
    assert!(!err.contains(KEY));
}
