//! Contract tests of the Opsgenie adapter against a local Alert API v2 that
//! checks every request as Opsgenie documents it (`Authorization: GenieKey
//! <key>`, JSON bodies, `message` required ≤130, alias ≤512, description
//! ≤15000, tags ≤20×50, details string→string ≤8000 in all, entity ≤512,
//! source/user ≤100, note ≤25000, priority P1..P5, `identifierType=alias` on
//! alias-addressed calls), refuses anything else with Opsgenie's error shape,
//! answers actions with 202 `{"result": "Request will be processed", ...}`, and
//! keeps alerts the way Opsgenie does: one open alert per alias (a create on an
//! open alias bumps `count`), a create after a close opens a new alert, and
//! (optionally) a create becomes visible only a little later (async processing).

mod common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use incidentd::adapters::opsgenie::{Config, Opsgenie};
use incidentd::adapters::{Adapter, DeliveryError, ExternalRef, RemoteTicket, Target, TicketState};
use incidentd::config::Problems;
use incidentd::incident::{Incident, IncidentState, TimelineEntry};

const KEY: &str = "eb243592-faa2-4ba2-a551-1afdf565c889";

// ---------------------------------------------------------------- the mock

use common::Fault;

#[derive(Debug, Clone)]
struct Alert {
    id: String,
    alias: String,
    message: String,
    description: Option<String>,
    priority: String,
    tags: Vec<String>,
    details: Value,
    entity: Option<String>,
    /// `open` or `closed`.
    status: String,
    acknowledged: bool,
    count: u32,
    notes: Vec<String>,
    acknowledged_by: Option<String>,
    closed_by: Option<String>,
    /// Request number from which the alert exists (asynchronous processing).
    visible_from: usize,
}

#[derive(Default)]
struct Og {
    alerts: Vec<Alert>,
    /// `METHOD path?query` of every request, in order.
    log: Vec<String>,
    faults: VecDeque<Fault>,
    /// Requests a new alert stays invisible for after its create.
    create_delay: usize,
}

type Shared = Arc<Mutex<Og>>;

fn envelope(extra: Value) -> Value {
    let mut v = json!({"took": 0.012, "requestId": uuid::Uuid::now_v7().to_string()});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    v
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(envelope(json!({"result": "Request will be processed"}))),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str, errors: Value) -> Response {
    let mut body = envelope(json!({"message": message}));
    if !errors.is_null() {
        body["errors"] = errors;
    }
    (status, axum::Json(body)).into_response()
}

fn unprocessable(errors: BTreeMap<String, String>) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Request body is not processable. Please check the errors.",
        json!(errors),
    )
}

impl Og {
    /// Auth, content type and fault injection common to every request; `Err`
    /// is the answer to give instead.
    fn begin(
        &mut self,
        line: String,
        headers: &HeaderMap,
        has_body: bool,
    ) -> Result<Option<Fault>, Box<Response>> {
        self.log.push(line);
        let fault = self.faults.pop_front();
        if let Some(f) = fault.as_ref().filter(|f| !f.process) {
            return Err(Box::new(f.response()));
        }
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some(&format!("GenieKey {KEY}")) {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "Could not authenticate",
                Value::Null,
            )));
        }
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if has_body && !ct.starts_with("application/json") {
            return Err(Box::new(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content type must be application/json",
                Value::Null,
            )));
        }
        Ok(fault)
    }

    fn now(&self) -> usize {
        self.log.len()
    }

    /// The alert an identifier names: by alias the open one, else the latest.
    fn lookup(&mut self, identifier: &str, q: &HashMap<String, String>) -> Option<&mut Alert> {
        let now = self.now();
        let by_alias = q.get("identifierType").map(String::as_str) == Some("alias");
        let mut found: Option<usize> = None;
        for (i, a) in self.alerts.iter().enumerate() {
            if a.visible_from > now {
                continue;
            }
            let hit = if by_alias {
                a.alias == identifier
            } else {
                a.id == identifier
            };
            if hit && (found.is_none() || a.status == "open") {
                found = Some(i);
            }
        }
        found.map(move |i| &mut self.alerts[i])
    }

    fn open_alert(&mut self, alias: &str) -> Option<&mut Alert> {
        self.alerts
            .iter_mut()
            .find(|a| a.alias == alias && a.status == "open")
    }

    fn alerts_for(&self, alias: &str) -> Vec<Alert> {
        self.alerts
            .iter()
            .filter(|a| a.alias == alias)
            .cloned()
            .collect()
    }

    /// Someone acting in Opsgenie's UI.
    fn human(&mut self, alias: &str, action: &str, who: &str) {
        let a = self.open_alert(alias).unwrap();
        match action {
            "acknowledge" => (a.acknowledged, a.acknowledged_by) = (true, Some(who.into())),
            _ => (a.status, a.closed_by) = ("closed".into(), Some(who.into())),
        }
    }
}

fn limit(
    errors: &mut BTreeMap<String, String>,
    v: &Value,
    field: &str,
    max: usize,
    required: bool,
) {
    match v.get(field) {
        None if required => {
            errors.insert(field.into(), format!("{field} can not be empty"));
        }
        None => {}
        Some(Value::String(s)) if required && s.trim().is_empty() => {
            errors.insert(field.into(), format!("{field} can not be empty"));
        }
        Some(Value::String(s)) if s.chars().count() > max => {
            errors.insert(
                field.into(),
                format!("{field} can not be longer than {max} characters"),
            );
        }
        Some(Value::String(_)) => {}
        Some(_) => {
            errors.insert(field.into(), format!("{field} must be a string"));
        }
    }
}

/// `AlertActionPayload` (user, source, note) plus `more` allowed fields.
fn check_fields(v: &Value, more: &[&str]) -> BTreeMap<String, String> {
    let mut errors = BTreeMap::new();
    let Some(o) = v.as_object() else {
        errors.insert("body".into(), "must be a JSON object".into());
        return errors;
    };
    for k in o.keys() {
        if !["user", "source", "note"].contains(&k.as_str()) && !more.contains(&k.as_str()) {
            errors.insert(k.clone(), "unknown field".into());
        }
    }
    limit(&mut errors, v, "user", 100, false);
    limit(&mut errors, v, "source", 100, false);
    errors
}

fn check_create(v: &Value) -> BTreeMap<String, String> {
    let fields = [
        "message",
        "alias",
        "description",
        "responders",
        "visibleTo",
        "actions",
        "tags",
        "details",
        "entity",
        "priority",
    ];
    let mut errors = check_fields(v, &fields);
    limit(&mut errors, v, "note", 25_000, false);
    limit(&mut errors, v, "message", 130, true);
    limit(&mut errors, v, "alias", 512, false);
    limit(&mut errors, v, "description", 15_000, false);
    limit(&mut errors, v, "entity", 512, false);
    if let Some(p) = v.get("priority")
        && !["P1", "P2", "P3", "P4", "P5"].contains(&p.as_str().unwrap_or(""))
    {
        errors.insert("priority".into(), "priority should be one of P1..P5".into());
    }
    if let Some(tags) = v.get("tags") {
        let ok = tags.as_array().is_some_and(|t| {
            t.len() <= 20
                && t.iter()
                    .all(|x| x.as_str().is_some_and(|s| s.chars().count() <= 50))
        });
        if !ok {
            errors.insert(
                "tags".into(),
                "at most 20 tags of at most 50 characters".into(),
            );
        }
    }
    if let Some(d) = v.get("details") {
        match d.as_object() {
            Some(m) if m.values().all(Value::is_string) => {
                let total: usize = m
                    .iter()
                    .map(|(k, v)| k.chars().count() + v.as_str().unwrap().chars().count())
                    .sum();
                if total > 8000 {
                    errors.insert(
                        "details".into(),
                        "details can not be longer than 8000 characters".into(),
                    );
                }
            }
            _ => {
                errors.insert(
                    "details".into(),
                    "details must map strings to strings".into(),
                );
            }
        }
    }
    errors
}

fn parse(body: &[u8]) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "Could not parse the request body",
            Value::Null,
        ))
    })
}

async fn create(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut og = s.lock().unwrap();
    let fault = match og.begin("POST /v2/alerts".into(), &headers, true) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let v = match parse(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let errors = check_create(&v);
    if !errors.is_empty() {
        return unprocessable(errors);
    }
    let alias = v["alias"].as_str().unwrap_or_default().to_string();
    let visible_from = og.now() + 1 + og.create_delay;
    if let Some(a) = og.open_alert(&alias) {
        a.count += 1;
    } else {
        let n = og.alerts.len();
        og.alerts.push(Alert {
            id: format!("alert-{n}"),
            alias,
            message: v["message"].as_str().unwrap().into(),
            description: v["description"].as_str().map(Into::into),
            priority: v["priority"].as_str().unwrap_or("P3").into(),
            tags: serde_json::from_value(v["tags"].clone()).unwrap_or_default(),
            details: v["details"].clone(),
            entity: v["entity"].as_str().map(Into::into),
            status: "open".into(),
            acknowledged: false,
            count: 1,
            notes: Vec::new(),
            acknowledged_by: None,
            closed_by: None,
            visible_from,
        });
    }
    fault.map_or_else(accepted, |f| f.response())
}

async fn action(
    State(s): State<Shared>,
    UrlPath((identifier, action)): UrlPath<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut og = s.lock().unwrap();
    let line = format!(
        "POST /v2/alerts/{identifier}/{action}?identifierType={}",
        q.get("identifierType").map_or("", String::as_str)
    );
    let fault = match og.begin(line, &headers, true) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let v = match parse(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let mut errors = check_fields(&v, &[]);
    limit(&mut errors, &v, "note", 25_000, action == "notes");
    if !errors.is_empty() {
        return unprocessable(errors);
    }
    if !["notes", "acknowledge", "close"].contains(&action.as_str()) {
        return error(StatusCode::NOT_FOUND, "Not found", Value::Null);
    }
    let user = v["user"].as_str().map(str::to_string);
    let Some(a) = og.lookup(&identifier, &q) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("Alert with id [{identifier}] does not exist"),
            Value::Null,
        );
    };
    match action.as_str() {
        "notes" => a.notes.push(v["note"].as_str().unwrap().into()),
        "acknowledge" => (a.acknowledged, a.acknowledged_by) = (true, user),
        // Closing a closed alert is accepted; its request status reports the failure.
        _ if a.status == "closed" => {}
        _ => (a.status, a.closed_by) = ("closed".into(), user),
    }
    fault.map_or_else(accepted, |f| f.response())
}

async fn get_alert(
    State(s): State<Shared>,
    UrlPath(identifier): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut og = s.lock().unwrap();
    let line = format!(
        "GET /v2/alerts/{identifier}?identifierType={}",
        q.get("identifierType").map_or("", String::as_str)
    );
    let fault = match og.begin(line, &headers, false) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let Some(a) = og.lookup(&identifier, &q) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("Alert with id [{identifier}] does not exist"),
            Value::Null,
        );
    };
    let mut report = json!({});
    if let Some(b) = &a.acknowledged_by {
        report["acknowledgedBy"] = json!(b);
    }
    if let Some(b) = &a.closed_by {
        report["closedBy"] = json!(b);
    }
    let data = json!({
        "id": a.id, "tinyId": "1", "alias": a.alias, "message": a.message, "status": a.status,
        "acknowledged": a.acknowledged, "isSeen": true, "tags": a.tags, "snoozed": false, "count": a.count,
        "priority": a.priority, "details": a.details, "source": "incidentd", "report": report,
    });
    let body = envelope(json!({"data": data}));
    fault.map_or_else(
        || (StatusCode::OK, axum::Json(body)).into_response(),
        |f| f.response(),
    )
}

async fn start_og() -> (String, Shared) {
    let state: Shared = Arc::default();
    let api = Router::new()
        .route("/v2/alerts", post(create))
        .route("/v2/alerts/{identifier}", get(get_alert))
        .route("/v2/alerts/{identifier}/{action}", post(action));
    // The JSM Operations integration API takes the same calls under a prefix.
    let app = Router::new()
        .merge(api.clone())
        .nest("/jsm/ops/integration", api)
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), state)
}

// ---------------------------------------------------------------- helpers

fn incident(id: &str) -> Incident {
    common::sample_incident(id)
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
fn build_in(yaml: &str, base_dir: &Path) -> (Opsgenie, Target) {
    let cfg: Config = serde_norway::from_str(yaml).unwrap();
    let mut p = Problems::new(Path::new("t.yaml"), yaml);
    let adapter = cfg
        .build("adapters.genie", base_dir, &mut p)
        .expect("valid config");
    let metrics = Arc::new(incidentd::metrics::Metrics::new(prometheus::Registry::new()).unwrap());
    let target = Target::new("genie", &cfg.delivery, metrics).unwrap();
    (adapter, target)
}

fn build(yaml: &str) -> (Opsgenie, Target) {
    build_in(yaml, Path::new("."))
}

async fn setup(extra: &str) -> (Opsgenie, Target, Shared) {
    let (url, og) = start_og().await;
    let (a, t) = build(&format!("url: {url}\napi_key: {KEY}\n{FAST}\n{extra}"));
    (a, t, og)
}

fn refused(yaml: &str) -> bool {
    let cfg: Config = serde_norway::from_str(yaml).unwrap();
    let mut p = Problems::new(Path::new("t.yaml"), yaml);
    cfg.build("adapters.genie", Path::new("."), &mut p)
        .is_none()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn create_sends_alias_priority_tags_details_and_entity_within_opsgenie_limits() {
    let (a, t, og) = setup("").await;
    let mut inc = incident("inc-create");
    inc.title = "t".repeat(300);
    inc.description = "d".repeat(20_000);
    inc.configuration_items = (0..2000).map(|i| format!("host-{i:04}")).collect();
    let ext = a.create(&t, &inc).await.unwrap();
    assert_eq!(
        ext,
        ExternalRef {
            id: "inc-create".into(),
            display: "inc-create".into(),
            url: None
        }
    );

    let og = og.lock().unwrap();
    assert_eq!(og.log, ["POST /v2/alerts"]);
    let alerts = og.alerts_for("inc-create");
    assert_eq!(alerts.len(), 1);
    let al = &alerts[0];
    assert_eq!(al.message.chars().count(), 130, "cut, not refused");
    assert_eq!(al.description.as_ref().unwrap().chars().count(), 15_000);
    assert_eq!(al.priority, "P2");
    assert_eq!(al.tags, ["incidentd", "api-gateway", "network"]);
    assert_eq!(al.entity.as_deref(), Some("api-gateway"));
    let d = &al.details;
    assert_eq!(d["incident_id"], "inc-create");
    assert_eq!(d["priority"], "P2");
    assert_eq!(
        (d["impact"].as_str(), d["urgency"].as_str()),
        (Some("high"), Some("medium"))
    );
    assert_eq!(
        (d["category"].as_str(), d["subcategory"].as_str()),
        (Some("network"), Some("latency"))
    );
    assert_eq!(d["assignment_group"], "sre");
    assert_eq!(d["alert_count"], "2", "details are strings");
    assert_eq!(d["state"], "new");
    assert!(
        d["configuration_items"]
            .as_str()
            .unwrap()
            .starts_with("host-0000, host-0001")
    );
}

#[tokio::test]
async fn configured_priority_table_templates_and_tags_are_used() {
    let extra = "priority: {2: P1}\n\
                 message: \"[P{{ incident.priority }}] {{ incident.title }}\"\n\
                 entity: \"{{ incident.assignment_group }}\"\n\
                 tags: [prod, incidentd, prod]";
    let (a, t, og) = setup(extra).await;
    let mut inc = incident("inc-cfg");
    a.create(&t, &inc).await.unwrap();
    inc.id = "inc-cfg-p5".into();
    inc.priority = 5;
    inc.service = None;
    inc.category = None;
    a.create(&t, &inc).await.unwrap();

    let og = og.lock().unwrap();
    let al = &og.alerts_for("inc-cfg")[0];
    assert_eq!(al.priority, "P1", "overridden");
    assert_eq!(al.message, "[P2] High error rate on api-gateway");
    assert_eq!(al.entity.as_deref(), Some("sre"));
    assert_eq!(
        al.tags,
        ["prod", "incidentd", "api-gateway", "network"],
        "no duplicates"
    );
    let p5 = &og.alerts_for("inc-cfg-p5")[0];
    assert_eq!(p5.priority, "P5", "the rest keeps the default");
    assert_eq!(p5.tags, ["prod", "incidentd"]);
}

#[tokio::test]
async fn create_whose_response_was_lost_is_retried_into_the_same_alert_not_a_second_one() {
    let (a, t, og) = setup("").await;
    let inc = incident("inc-lost");
    // No search is needed: the alias makes the repeat land on the open alert.
    assert_eq!(a.find(&t, &inc).await.unwrap(), None);
    og.lock().unwrap().faults.push_back(Fault {
        process: true,
        ..Fault::plain(503, "")
    });
    a.create(&t, &inc).await.unwrap();
    a.create(&t, &inc).await.unwrap();

    let og = og.lock().unwrap();
    assert_eq!(og.log.len(), 3);
    let alerts = og.alerts_for("inc-lost");
    assert_eq!(alerts.len(), 1, "one alert for one incident");
    assert_eq!(alerts[0].count, 3);
}

#[tokio::test]
async fn update_adds_one_note_per_new_timeline_entry_by_alias() {
    let (a, t, og) = setup("").await;
    let inc = incident("inc-notes");
    let ext = a.create(&t, &inc).await.unwrap();
    let new = [
        entry("alert_added", "HighErrorRate on auth joined"),
        entry("alert_resolved", "HighErrorRate on gw-02 resolved"),
    ];
    a.update(&t, &inc, &ext, &new).await.unwrap();
    a.update(&t, &inc, &ext, &[]).await.unwrap();

    let og = og.lock().unwrap();
    assert_eq!(
        og.log[1..],
        [
            "POST /v2/alerts/inc-notes/notes?identifierType=alias",
            "POST /v2/alerts/inc-notes/notes?identifierType=alias"
        ]
    );
    assert_eq!(
        og.alerts_for("inc-notes")[0].notes,
        [
            "[alert_added] HighErrorRate on auth joined (2025-06-01T10:05:00Z)",
            "[alert_resolved] HighErrorRate on gw-02 resolved (2025-06-01T10:05:00Z)"
        ]
    );
}

#[tokio::test]
async fn notes_sent_before_opsgenie_processed_the_create_are_retried_later_not_lost() {
    let (a, t, og) = setup("").await;
    og.lock().unwrap().create_delay = 2;
    let inc = incident("inc-async");
    let ext = a.create(&t, &inc).await.unwrap();
    let new = [entry("alert_added", "HighErrorRate on auth joined")];
    let err = a.update(&t, &inc, &ext, &new).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Transient { .. }), "{err:?}");
    // The worker tries the step again later; by then the alert exists.
    a.update(&t, &inc, &ext, &new).await.unwrap();

    let og = og.lock().unwrap();
    let alerts = og.alerts_for("inc-async");
    assert_eq!(
        alerts.len(),
        1,
        "the create sent on the 404 only bumped the count"
    );
    assert_eq!(
        alerts[0].notes,
        ["[alert_added] HighErrorRate on auth joined (2025-06-01T10:05:00Z)"]
    );
}

#[tokio::test]
async fn notes_for_a_deleted_alert_of_a_resolved_incident_are_done_without_a_new_alert() {
    let (a, t, og) = setup("").await;
    let mut inc = incident("inc-gone");
    let ext = a.create(&t, &inc).await.unwrap();
    og.lock().unwrap().alerts.clear();
    inc.state = IncidentState::Resolved;
    a.update(
        &t,
        &inc,
        &ext,
        &[entry("resolved", "all alerts resolved"), entry("x", "y")],
    )
    .await
    .unwrap();
    let og = og.lock().unwrap();
    assert!(og.alerts.is_empty());
    assert_eq!(og.log.len(), 2, "stops at the first 404");
}

#[tokio::test]
async fn acknowledge_then_close_by_alias_with_user_source_and_note() {
    let (a, t, og) = setup("user: incidentd-bot").await;
    let mut inc = incident("inc-close");
    let ext = a.create(&t, &inc).await.unwrap();
    inc.state = IncidentState::InProgress;
    a.transition(&t, &inc, &ext, TicketState::Acknowledged)
        .await
        .unwrap();
    inc.state = IncidentState::Resolved;
    a.transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    inc.state = IncidentState::Closed;
    a.transition(&t, &inc, &ext, TicketState::Closed)
        .await
        .unwrap();

    let og = og.lock().unwrap();
    assert_eq!(
        og.log[1..],
        [
            "POST /v2/alerts/inc-close/acknowledge?identifierType=alias",
            "POST /v2/alerts/inc-close/close?identifierType=alias",
            "POST /v2/alerts/inc-close/close?identifierType=alias"
        ]
    );
    let al = &og.alerts_for("inc-close")[0];
    assert_eq!((al.status.as_str(), al.acknowledged), ("closed", true));
    assert_eq!(al.acknowledged_by.as_deref(), Some("incidentd-bot"));
    assert_eq!(al.closed_by.as_deref(), Some("incidentd-bot"));
}

#[tokio::test]
async fn close_or_acknowledge_of_an_alert_that_is_gone_is_done() {
    let (a, t, og) = setup("").await;
    let mut inc = incident("inc-never");
    let ext = ExternalRef {
        id: "inc-never".into(),
        display: "inc-never".into(),
        url: None,
    };
    inc.state = IncidentState::InProgress;
    a.transition(&t, &inc, &ext, TicketState::Acknowledged)
        .await
        .unwrap();
    inc.state = IncidentState::Resolved;
    a.transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    let og = og.lock().unwrap();
    assert_eq!(og.log.len(), 2, "each 404 answered once, not retried");
    assert!(og.alerts.is_empty());
}

#[tokio::test]
async fn reopen_after_close_creates_a_new_alert_with_the_same_alias() {
    let (a, t, og) = setup("").await;
    let mut inc = incident("inc-reopen");
    let ext = a.create(&t, &inc).await.unwrap();
    inc.state = IncidentState::Resolved;
    a.transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    inc.state = IncidentState::Reopened;
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

    let og = og.lock().unwrap();
    let alerts = og.alerts_for("inc-reopen");
    assert_eq!(alerts.len(), 2);
    assert_eq!(
        (alerts[0].status.as_str(), alerts[1].status.as_str()),
        ("closed", "open")
    );
    assert_eq!(alerts[1].details["state"], "reopened");
}

#[tokio::test]
async fn rate_limit_429_with_opsgenie_headers_is_retried_with_backoff_then_succeeds() {
    let (a, t, og) = setup("").await;
    og.lock().unwrap().faults.push_back(Fault {
        // Opsgenie declares no Retry-After, only its X-RateLimit-* headers.
        headers: vec![
            ("x-ratelimit-state", "THROTTLED"),
            ("x-ratelimit-reason", "INTEGRATION"),
            ("x-ratelimit-period-in-sec", "60"),
        ],
        ..Fault::plain(
            429,
            r#"{"message": "You are making too many requests!", "took": 0.0, "requestId": "r"}"#,
        )
    });
    let started = Instant::now();
    a.create(&t, &incident("inc-429")).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    let og = og.lock().unwrap();
    assert_eq!(og.log.len(), 2);
    assert_eq!(og.alerts_for("inc-429").len(), 1);
}

#[tokio::test]
async fn rate_limit_429_with_retry_after_is_waited_out_then_succeeds() {
    // Atlassian's edge in front of JSM Operations answers with Retry-After.
    let (url, og) = start_og().await;
    let (a, t) = build(&format!(
        "url: {url}/jsm/ops/integration\napi_key: {KEY}\n{FAST}"
    ));
    og.lock().unwrap().faults.push_back(Fault {
        headers: vec![("retry-after", "1")],
        ..Fault::plain(429, "")
    });
    let started = Instant::now();
    a.create(&t, &incident("inc-retry-after")).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    let og = og.lock().unwrap();
    assert_eq!(og.log.len(), 2);
    assert_eq!(og.alerts_for("inc-retry-after").len(), 1);
}

#[tokio::test]
async fn server_error_is_retried_then_succeeds() {
    let (a, t, og) = setup("").await;
    let mut inc = incident("inc-5xx");
    let ext = a.create(&t, &inc).await.unwrap();
    og.lock()
        .unwrap()
        .faults
        .push_back(Fault::plain(502, "<html>Bad Gateway</html>"));
    inc.state = IncidentState::Resolved;
    a.transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    let og = og.lock().unwrap();
    assert_eq!(og.log.len(), 3);
    assert_eq!(og.alerts_for("inc-5xx")[0].status, "closed");
}

#[tokio::test]
async fn success_status_without_opsgenie_envelope_is_an_error() {
    let (url, og) = start_og().await;
    let (a, t) = build(&format!(
        "url: {url}\napi_key: {KEY}\ndelivery: {{initial_backoff_ms: 10, max_backoff_ms: 20, max_elapsed_ms: 150}}"
    ));
    {
        let mut og = og.lock().unwrap();
        for _ in 0..100 {
            og.faults
                .push_back(Fault::plain(200, "<html><body>Maintenance</body></html>"));
        }
    }
    let err = a.create(&t, &incident("inc-html")).await.unwrap_err();
    match &err {
        DeliveryError::Transient { reason, .. } => {
            assert!(reason.contains("error in the body"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        og.lock().unwrap().log.len() > 1,
        "retried like any transient error"
    );
}

#[tokio::test]
async fn refused_request_is_a_permanent_error_sent_once() {
    let (a, t, og) = setup("").await;
    og.lock().unwrap().faults.push_back(Fault::plain(
        400,
        r#"{"message": "Request body is not processable. Please check the errors.", "errors": {"message": "Message can not be empty."}, "took": 0.001, "requestId": "r"}"#,
    ));
    let err = a.create(&t, &incident("inc-400")).await.unwrap_err();
    assert!(
        matches!(
            err,
            DeliveryError::Permanent {
                status: Some(400),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("not processable"));
    assert_eq!(og.lock().unwrap().log.len(), 1);
}

#[tokio::test]
async fn wrong_api_key_is_a_permanent_401_without_the_key_in_the_error() {
    let (url, og) = start_og().await;
    let wrong = "00000000-1111-2222-3333-444444444444";
    let (a, t) = build(&format!("url: {url}\napi_key: {wrong}\n{FAST}"));
    let err = a.create(&t, &incident("inc-401")).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(!err.to_string().contains(wrong));
    assert_eq!(og.lock().unwrap().log.len(), 1);
}

#[tokio::test]
async fn fetch_reads_open_acknowledged_and_closed_with_who_did_it() {
    let (a, t, og) = setup("").await;
    let inc = incident("inc-fetch");
    let ext = a.create(&t, &inc).await.unwrap();
    let open = RemoteTicket {
        state: TicketState::Open,
        changed_by: None,
    };
    assert_eq!(a.fetch(&t, &ext).await.unwrap(), Some(open));
    og.lock()
        .unwrap()
        .human("inc-fetch", "acknowledge", "jane@example.com");
    let acked = RemoteTicket {
        state: TicketState::Acknowledged,
        changed_by: Some("jane@example.com".into()),
    };
    assert_eq!(a.fetch(&t, &ext).await.unwrap(), Some(acked));
    og.lock()
        .unwrap()
        .human("inc-fetch", "close", "joe@example.com");
    let closed = RemoteTicket {
        state: TicketState::Resolved,
        changed_by: Some("joe@example.com".into()),
    };
    assert_eq!(a.fetch(&t, &ext).await.unwrap(), Some(closed));

    // A close incidentd made itself is nothing to report back.
    let mut inc2 = incident("inc-fetch-own");
    let ext2 = a.create(&t, &inc2).await.unwrap();
    inc2.state = IncidentState::Resolved;
    a.transition(&t, &inc2, &ext2, TicketState::Resolved)
        .await
        .unwrap();
    assert_eq!(a.fetch(&t, &ext2).await.unwrap(), None);

    let missing = ExternalRef {
        id: "inc-missing".into(),
        display: "inc-missing".into(),
        url: None,
    };
    assert_eq!(a.fetch(&t, &missing).await.unwrap(), None);
    assert_eq!(
        og.lock().unwrap().log[1],
        "GET /v2/alerts/inc-fetch?identifierType=alias"
    );
}

#[tokio::test]
async fn api_key_from_a_file_and_a_base_url_with_a_path_prefix_reach_the_api() {
    let (url, og) = start_og().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("og.key"), format!("{KEY}\n")).unwrap();
    let (a, t) = build_in(
        &format!("url: {url}/jsm/ops/integration/\napi_key_file: og.key\n{FAST}"),
        dir.path(),
    );
    let inc = incident("inc-jsm");
    let ext = a.create(&t, &inc).await.unwrap();
    a.transition(&t, &inc, &ext, TicketState::Closed)
        .await
        .unwrap();
    let og = og.lock().unwrap();
    assert_eq!(og.alerts_for("inc-jsm")[0].status, "closed");

    let inline: Config = serde_norway::from_str(&format!("api_key: {KEY}")).unwrap();
    assert!(!format!("{inline:?}").contains(KEY));
}

#[test]
fn invalid_configs_are_refused() {
    assert!(!refused(&format!("api_key: {KEY}")), "defaults suffice");
    for bad in [
        "url: https://api.eu.opsgenie.com".to_string(),
        format!("api_key: {KEY}\napi_key_file: k"),
        "api_key: \"bad\\nkey\"".to_string(),
        format!("api_key: {KEY}\nurl: mailto:ops@example.com"),
        format!("api_key: {KEY}\npriority: {{1: critical}}"),
        format!("api_key: {KEY}\npriority: {{0: P1}}"),
        format!("api_key: {KEY}\nmessage: \"{{{{ incident.title \""),
        format!("api_key: {KEY}\nuser: \"\""),
        format!("api_key: {KEY}\ntags: [{}]", vec!["t"; 21].join(", ")),
    ] {
        assert!(refused(&bad), "accepted: {bad}");
    }
    assert!(
        serde_norway::from_str::<Config>(&format!("api_key: {KEY}\nteam: sre")).is_err(),
        "unknown keys"
    );
}

#[tokio::test]
async fn read_back_while_opsgenie_still_creates_the_reopened_alert_does_not_resolve_it_again() {
    let (a, t, og) = setup("").await;
    let mut inc = incident("inc-race");
    let ext = a.create(&t, &inc).await.unwrap();
    inc.state = IncidentState::Resolved;
    a.transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    og.lock().unwrap().create_delay = 5;
    inc.state = IncidentState::Reopened;
    a.transition(&t, &inc, &ext, TicketState::Open)
        .await
        .unwrap();
    // The alias still names the alert incidentd closed: no change to report.
    assert_eq!(a.fetch(&t, &ext).await.unwrap(), None);
    for _ in 0..5 {
        a.fetch(&t, &ext).await.unwrap();
    }
    let open = RemoteTicket {
        state: TicketState::Open,
        changed_by: None,
    };
    assert_eq!(
        a.fetch(&t, &ext).await.unwrap(),
        Some(open),
        "the new alert, once made"
    );
}

#[test]
fn the_daemon_config_takes_a_opsgenie_adapter_block_and_points_at_bad_values() {
    let env = |n: &str| (n == "OG_KEY").then(|| KEY.to_string());
    let head = "store:\n  url: memory\nadapters:\n  genie:\n    type: opsgenie\n";
    let ok = head.to_string() + "    api_key: ${OG_KEY}\n    url: https://api.eu.opsgenie.com\n";
    let cfg = incidentd::config::parse(Path::new("t.yaml"), &ok, &Default::default(), env).unwrap();
    assert_eq!(cfg.adapters.len(), 1);
    assert_eq!(cfg.adapters[0].adapter.kind(), "opsgenie");
    let bad = head.to_string() + "    api_key: ${OG_KEY}\n    priority: {1: critical}\n";
    let err = incidentd::config::parse(Path::new("t.yaml"), &bad, &Default::default(), env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("adapters.genie.priority"), "{err}");
    assert!(!err.contains(KEY));
}
