//! Contract tests of the ServiceNow adapter against a local Table API server that
//! checks every request as a real instance would (and a little stricter: it
//! refuses unknown fields and query terms a real instance would silently
//! ignore, so a typo fails here instead of in production), keeps incidents in
//! memory, and answers with ServiceNow's shapes, error bodies and quirks.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{TimeZone, Utc};
use serde_json::{Map, Value, json};

use incidentd::adapters::servicenow::{Config, ServiceNow};
use incidentd::adapters::{Adapter, DeliveryError, ExternalRef, Target, TicketState};
use incidentd::incident::{Incident, Policy, TimelineEntry};
use incidentd::rules::Level;

// ---------------------------------------------------------------------------
// The contract server.

const USER: &str = "incidentd";
const PASSWORD: &str = "s3cret-pw";
const TABLE: &str = "/api/now/table/incident";

/// Fields the adapter may write (the mock refuses others; `priority` is
/// computed by the instance from impact × urgency and must not be sent).
const WRITABLE: &[&str] = &[
    "short_description",
    "description",
    "impact",
    "urgency",
    "category",
    "subcategory",
    "assignment_group",
    "cmdb_ci",
    "caller_id",
    "correlation_id",
    "correlation_display",
    "work_notes",
    "state",
    "close_code",
    "close_notes",
];

/// The instance's `close_code` choice list (current generation).
const CLOSE_CODES: &[&str] = &[
    "Duplicate",
    "Known error",
    "No resolution provided",
    "Resolved by caller",
    "Solution provided",
    "Workaround provided",
];

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    body: Value,
}

#[derive(Default)]
struct Instance {
    records: Vec<Map<String, Value>>,
    /// Work-note journal entries per sys_id (write-only through the Table API).
    journal: BTreeMap<String, Vec<String>>,
    seen: Vec<Seen>,
    canned: VecDeque<Canned>,
    /// Answers every request with 200 and this (content type, body): the
    /// hibernation page, or JSON without `result`.
    always: Option<(&'static str, &'static str)>,
    /// Table API v1 behaviour: an empty query result is a 404.
    v1_empty_is_404: bool,
    /// What `Authorization` must be.
    expected_auth: String,
    next_number: u32,
}

type Shared = Arc<Mutex<Instance>>;

/// A canned answer for the next request of a method: (method, status, headers, body).
type Canned = (Method, u16, Vec<(&'static str, String)>, String);

fn sn_error(status: u16, message: &str, detail: &str) -> Response {
    json_reply(
        status,
        json!({"error": {"message": message, "detail": detail}, "status": "failure"}),
    )
}

fn json_reply(status: u16, v: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// `sysparm_fields` applied to a record.
fn project(rec: &Map<String, Value>, query: &BTreeMap<String, String>) -> Value {
    match query.get("sysparm_fields") {
        Some(f) => Value::Object(
            f.split(',')
                .filter_map(|k| rec.get(k).map(|v| (k.to_string(), v.clone())))
                .collect(),
        ),
        None => Value::Object(rec.clone()),
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

async fn handle(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: BTreeMap<String, String> = reqwest::Url::parse(&format!("http://mock{uri}"))
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let parsed_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut st = s.lock().unwrap();
    st.seen.push(Seen {
        method: method.clone(),
        path: uri.path().to_string(),
        query: query.clone(),
        body: parsed_body.clone(),
    });
    if let Some((content_type, text)) = st.always {
        return (StatusCode::OK, [("content-type", content_type)], text).into_response();
    }
    if let Some(i) = st.canned.iter().position(|c| c.0 == method) {
        let (_, status, hdrs, text) = st.canned.remove(i).unwrap();
        let mut r = (StatusCode::from_u16(status).unwrap(), text).into_response();
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        for (k, v) in hdrs {
            r.headers_mut().insert(k, v.parse().unwrap());
        }
        return r;
    }

    // Auth, then content negotiation, as the instance checks them.
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(st.expected_auth.as_str())
    {
        return sn_error(
            401,
            "User Not Authenticated",
            "Required to provide Auth information",
        );
    }
    if !headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
    {
        return sn_error(
            406,
            "Not Acceptable",
            "the adapter must ask for application/json",
        );
    }
    let path = uri.path();
    let sys_id = match path.strip_prefix(TABLE) {
        Some("") => None,
        Some(rest) if rest.starts_with('/') && rest.len() > 1 => Some(rest[1..].to_string()),
        _ => return sn_error(400, "Requested URI does not represent any resource", path),
    };
    if matches!(method, Method::POST | Method::PATCH | Method::PUT) {
        if !headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"))
        {
            return sn_error(415, "Unsupported Media Type", "send application/json");
        }
        let Some(obj) = parsed_body.as_object() else {
            return sn_error(
                400,
                "Exception while reading request",
                "The payload is not valid JSON.",
            );
        };
        for (k, v) in obj {
            if k == "priority" {
                return sn_error(
                    400,
                    "Mock contract",
                    "priority is computed from impact and urgency; do not send it",
                );
            }
            if !WRITABLE.contains(&k.as_str()) {
                return sn_error(400, "Mock contract", &format!("unknown incident field {k}"));
            }
            if !v.is_string() {
                return sn_error(
                    400,
                    "Mock contract",
                    &format!("{k} must be a string, as the Table API uses"),
                );
            }
        }
    }
    let user = USER.to_string();
    match (method, sys_id) {
        (Method::POST, None) => {
            let obj = parsed_body.as_object().unwrap().clone();
            let get = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
            if get("caller_id").is_empty() {
                return sn_error(
                    403,
                    "Operation Failed",
                    "Data Policy Exception: The following fields are mandatory: Caller",
                );
            }
            let sd = get("short_description");
            if sd.is_empty() || sd.chars().count() > 160 || sd.contains('\n') {
                return sn_error(
                    400,
                    "Mock contract",
                    "short_description must be 1..160 characters on one line",
                );
            }
            let cid = get("correlation_id");
            if cid.is_empty() || cid.len() > 100 {
                return sn_error(
                    400,
                    "Mock contract",
                    "correlation_id must be 1..100 characters",
                );
            }
            for k in ["impact", "urgency"] {
                if !["1", "2", "3"].contains(&get(k)) {
                    return sn_error(
                        400,
                        "Mock contract",
                        &format!("{k} must be \"1\", \"2\" or \"3\""),
                    );
                }
            }
            if !["", "1"].contains(&get("state")) {
                return sn_error(400, "Mock contract", "a new incident starts in state 1");
            }
            st.next_number += 1;
            let sys_id = format!("9d385017c611228701d22104cc95{n:04x}", n = st.next_number);
            let mut rec = obj.clone();
            let notes = rec.remove("work_notes");
            let n = st.next_number;
            for (k, v) in [
                ("sys_id", sys_id.clone()),
                ("number", format!("INC00100{n:02}")),
                ("state", "1".into()),
                ("active", "true".into()),
                ("reopen_count", "0".into()),
                ("sys_created_on", format!("2025-06-01 10:00:{n:02}")),
                ("sys_updated_by", user),
                // Computed by the default lookup rules.
                ("priority", priority(get("impact"), get("urgency"))),
                ("work_notes", String::new()),
            ] {
                rec.insert(k.into(), Value::String(v));
            }
            if let Some(Value::String(note)) = notes {
                st.journal.entry(sys_id.clone()).or_default().push(note);
            }
            let out = project(&rec, &query);
            st.records.push(rec);
            let mut r = json_reply(201, json!({"result": out}));
            r.headers_mut().insert(
                "location",
                format!("http://instance{TABLE}/{sys_id}").parse().unwrap(),
            );
            r
        }
        (Method::GET, None) => {
            let Some(q) = query.get("sysparm_query") else {
                return sn_error(400, "Mock contract", "unbounded query");
            };
            let mut filters = Vec::new();
            let mut order_desc = None;
            for term in q.split('^') {
                if let Some(f) = term.strip_prefix("ORDERBYDESC") {
                    order_desc = Some((f.to_string(), true));
                } else if let Some(f) = term.strip_prefix("ORDERBY") {
                    order_desc = Some((f.to_string(), false));
                } else if let Some((k, v)) = term.split_once('=') {
                    if !["correlation_id", "active"].contains(&k) {
                        return sn_error(
                            400,
                            "Mock contract",
                            &format!("unexpected query term {term}"),
                        );
                    }
                    filters.push((k.to_string(), v.to_string()));
                } else {
                    return sn_error(
                        400,
                        "Mock contract",
                        &format!("unexpected query term {term}"),
                    );
                }
            }
            let mut rows: Vec<&Map<String, Value>> = st
                .records
                .iter()
                .filter(|r| {
                    filters
                        .iter()
                        .all(|(k, v)| r.get(k).and_then(Value::as_str) == Some(v))
                })
                .collect();
            if let Some((field, desc)) = order_desc {
                rows.sort_by_key(|r| {
                    r.get(&field)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                });
                if desc {
                    rows.reverse();
                }
            }
            let limit = query
                .get("sysparm_limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(usize::MAX);
            let out: Vec<Value> = rows
                .into_iter()
                .take(limit)
                .map(|r| project(r, &query))
                .collect();
            if out.is_empty() && st.v1_empty_is_404 {
                return sn_error(
                    404,
                    "No Record found",
                    "Records matching query not found. Check query parameter or offset parameter",
                );
            }
            json_reply(200, json!({"result": out}))
        }
        (Method::GET, Some(id)) => match st.records.iter().find(|r| r["sys_id"] == id.as_str()) {
            Some(r) => json_reply(200, json!({"result": project(r, &query)})),
            None => sn_error(
                404,
                "No Record found",
                "Record doesn't exist or ACL restricts the record retrieval",
            ),
        },
        (Method::PATCH, Some(id)) => {
            let obj = parsed_body.as_object().unwrap().clone();
            let Some(idx) = st.records.iter().position(|r| r["sys_id"] == id.as_str()) else {
                return sn_error(
                    404,
                    "No Record found",
                    "Record doesn't exist or ACL restricts the record retrieval",
                );
            };
            let current = st.records[idx]["state"].as_str().unwrap_or("").to_string();
            if current == "7" || current == "8" {
                return sn_error(
                    403,
                    "Operation Failed",
                    "ACL Exception Update Failed due to security constraints",
                );
            }
            if let Some(new_state) = obj.get("state").and_then(Value::as_str) {
                if !["1", "2", "3", "6", "7", "8"].contains(&new_state) {
                    return sn_error(400, "Mock contract", &format!("unknown state {new_state}"));
                }
                if new_state == "6" || new_state == "7" {
                    // The data policy: both in the same call.
                    let code = obj.get("close_code").and_then(Value::as_str).unwrap_or("");
                    let notes = obj.get("close_notes").and_then(Value::as_str).unwrap_or("");
                    if code.is_empty() || notes.trim().is_empty() {
                        return sn_error(
                            403,
                            "Operation Failed",
                            "Data Policy Exception: The following fields are mandatory: Resolution code, Resolution notes",
                        );
                    }
                    if !CLOSE_CODES.contains(&code) {
                        return sn_error(
                            403,
                            "Operation Failed",
                            &format!("Invalid choice {code} for Resolution code"),
                        );
                    }
                }
                if new_state == "2" && current == "6" {
                    let n: u32 = st.records[idx]["reopen_count"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    st.records[idx]
                        .insert("reopen_count".into(), Value::String((n + 1).to_string()));
                }
            }
            let mut obj = obj;
            if let Some(Value::String(note)) = obj.remove("work_notes") {
                st.journal.entry(id.clone()).or_default().push(note);
            }
            let rec = &mut st.records[idx];
            for (k, v) in obj {
                rec.insert(k, v);
            }
            let state = rec["state"].as_str().unwrap_or("").to_string();
            rec.insert(
                "active".into(),
                Value::String((state != "7" && state != "8").to_string()),
            );
            let p = priority(
                rec["impact"].as_str().unwrap_or("3"),
                rec["urgency"].as_str().unwrap_or("3"),
            );
            rec.insert("priority".into(), Value::String(p));
            rec.insert("sys_updated_by".into(), Value::String(user));
            let out = project(rec, &query);
            json_reply(200, json!({"result": out}))
        }
        _ => sn_error(405, "Method not Supported", "mock"),
    }
}

/// The default Priority Lookup Rules (contract §6.3).
fn priority(impact: &str, urgency: &str) -> String {
    let i: u8 = impact.parse().unwrap_or(3);
    let u: u8 = urgency.parse().unwrap_or(3);
    (i + u - 1).to_string()
}

async fn start(expected_auth: String) -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(Instance {
        expected_auth,
        ..Instance::default()
    }));
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), state)
}

// ---------------------------------------------------------------------------
// The adapter, built through its config.

fn build(yaml: &str) -> Option<(ServiceNow, Target)> {
    let cfg: Config = serde_norway::from_str(yaml).expect("config parses");
    let mut p = incidentd::config::Problems::new(Path::new("t.yaml"), yaml);
    let adapter = cfg.build("adapters.snow", Path::new("."), &mut p)?;
    Some((adapter, target(&cfg)))
}

fn target(cfg: &Config) -> Target {
    let metrics = Arc::new(incidentd::metrics::Metrics::new(prometheus::Registry::new()).unwrap());
    Target::new("snow", &cfg.delivery, metrics).unwrap()
}

async fn setup() -> (ServiceNow, Target, Shared) {
    setup_with("").await
}

/// A server and an adapter for it, with `extra` config lines.
async fn setup_with(extra: &str) -> (ServiceNow, Target, Shared) {
    let (url, state) = start(basic(USER, PASSWORD)).await;
    let yaml = format!(
        "url: {url}\nuser: {USER}\npassword: {PASSWORD}\ncaller_id: 5b7c200d0a640069006b3845b5d0fa7c\n\
         delivery: {{initial_backoff_ms: 10, max_backoff_ms: 50, max_elapsed_ms: 5000}}\n{extra}"
    );
    let (a, t) = build(&yaml).expect("valid config");
    (a, t, state)
}

fn incident(id: &str) -> Incident {
    let t = Utc.with_ymd_and_hms(2025, 6, 1, 10, 0, 0).unwrap();
    Incident {
        title: "HighErrorRate api-gateway prod".into(),
        description:
            "Alert HighErrorRate firing since 2025-06-01T10:00:00Z\nerror_ratio=0.12 threshold=0.05"
                .into(),
        category: Some("software".into()),
        subcategory: Some("web".into()),
        assignment_group: Some("287ebd7da9fe198100f92cc8d1d2154e".into()),
        configuration_items: vec![
            "281190e3c0a8000b003f593aa3f20ca6".into(),
            "second-ci".into(),
        ],
        alert_count: 1,
        correlation_key: "api-gateway".into(),
        created_at: t,
        updated_at: t,
        related: vec![],
        route: vec!["snow".into()],
        topology: Default::default(),
        alerts: vec![],
        timeline: vec![],
        last_activity: t,
        policy: Policy {
            window_s: 300,
            auto_resolve: true,
            resolve_after_s: 300,
            reopen_within_s: 3600,
            close_after_s: 86400,
        },
        ..common::sample_incident(id)
    }
}

fn entry(minute: u32, event: &str, cause: &str) -> TimelineEntry {
    TimelineEntry {
        at: Utc.with_ymd_and_hms(2025, 6, 1, 10, minute, 0).unwrap(),
        event: event.into(),
        cause: cause.into(),
    }
}

fn record(s: &Shared, sys_id: &str) -> Map<String, Value> {
    s.lock()
        .unwrap()
        .records
        .iter()
        .find(|r| r["sys_id"] == sys_id)
        .cloned()
        .unwrap()
}

fn seen(s: &Shared, method: Method) -> Vec<Seen> {
    s.lock()
        .unwrap()
        .seen
        .iter()
        .filter(|r| r.method == method)
        .cloned()
        .collect()
}

fn can(s: &Shared, method: Method, status: u16, headers: Vec<(&'static str, String)>, body: &str) {
    s.lock()
        .unwrap()
        .canned
        .push_back((method, status, headers, body.to_string()));
}

// ---------------------------------------------------------------------------
// The tests.

#[tokio::test]
async fn create_sends_itil_fields_impact_and_urgency_and_the_incident_id_as_correlation_id() {
    let (a, t, s) = setup().await;
    let mut inc = incident("inc-0001");
    inc.title = format!("{} {}\nsecond line", "x".repeat(200), "tail");
    let ext = a.create(&t, &inc).await.unwrap();

    let post = &seen(&s, Method::POST)[0];
    assert_eq!(post.path, TABLE);
    let b = post.body.as_object().unwrap();
    let sd = b["short_description"].as_str().unwrap();
    assert_eq!(sd.chars().count(), 160, "cut to the column length");
    assert!(sd.ends_with('…') && !sd.contains('\n'));
    assert_eq!(b["impact"], "1");
    assert_eq!(b["urgency"], "2");
    assert!(
        !b.contains_key("priority"),
        "priority is the instance's to compute"
    );
    assert_eq!(b["category"], "software");
    assert_eq!(b["subcategory"], "web");
    assert_eq!(b["assignment_group"], "287ebd7da9fe198100f92cc8d1d2154e");
    assert_eq!(
        b["cmdb_ci"], "281190e3c0a8000b003f593aa3f20ca6",
        "the first configuration item"
    );
    assert_eq!(b["caller_id"], "5b7c200d0a640069006b3845b5d0fa7c");
    assert_eq!(b["correlation_id"], "inc-0001");
    assert_eq!(b["correlation_display"], "incidentd");
    assert!(
        b["description"]
            .as_str()
            .unwrap()
            .contains("error_ratio=0.12")
    );
    assert_eq!(
        post.query
            .get("sysparm_exclude_reference_link")
            .map(String::as_str),
        Some("true")
    );

    let rec = record(&s, &ext.id);
    assert_eq!(ext.display, rec["number"].as_str().unwrap());
    assert_eq!(
        rec["priority"], "2",
        "impact 1 × urgency 2 is P2 by the lookup rules"
    );
    let url = ext.url.unwrap();
    assert!(
        url.contains("/nav_to.do?uri=incident.do%3Fsys_id%3D"),
        "{url}"
    );
    assert!(url.ends_with(&ext.id));
}

#[tokio::test]
async fn find_before_create_returns_the_incident_a_lost_create_made_and_no_second_one() {
    let (a, t, s) = setup().await;
    let inc = incident("inc-0002");
    assert_eq!(a.find(&t, &inc).await.unwrap(), None, "result: [] is none");
    let made = a.create(&t, &inc).await.unwrap();

    // The response was "lost": the worker asks again before creating.
    let found = a
        .find(&t, &inc)
        .await
        .unwrap()
        .expect("found by correlation_id");
    assert_eq!(found, made);
    assert_eq!(s.lock().unwrap().records.len(), 1);

    let get = seen(&s, Method::GET).pop().unwrap();
    assert_eq!(
        get.query["sysparm_query"], "correlation_id=inc-0002^active=true^ORDERBYsys_created_on",
        "the exact encoded query: a typo would silently match every incident"
    );
    assert_eq!(get.query["sysparm_limit"], "1");
    assert_eq!(a.find(&t, &incident("inc-other")).await.unwrap(), None);
}

#[tokio::test]
async fn find_treats_the_v1_404_for_an_empty_query_as_none() {
    let (a, t, s) = setup().await;
    s.lock().unwrap().v1_empty_is_404 = true;
    assert_eq!(a.find(&t, &incident("inc-0003")).await.unwrap(), None);
}

#[tokio::test]
async fn find_ignores_rows_that_do_not_carry_our_correlation_id() {
    let (a, t, s) = setup().await;
    // An instance that dropped the query terms answers with any incident.
    can(
        &s,
        Method::GET,
        200,
        vec![],
        r#"{"result":[{"sys_id":"aaaa","number":"INC0000001","state":"2","correlation_id":"someone-else"}]}"#,
    );
    assert_eq!(a.find(&t, &incident("inc-0004")).await.unwrap(), None);
}

#[tokio::test]
async fn update_patches_the_kept_fields_and_the_new_timeline_entries_as_one_work_note() {
    let (a, t, s) = setup().await;
    let mut inc = incident("inc-0005");
    let ext = a.create(&t, &inc).await.unwrap();
    inc.urgency = Level::High;
    inc.title = "HighErrorRate api-gateway prod (3 alerts)".into();
    inc.assignment_group = Some("someone-else".into());
    let entries = [
        entry(1, "alert_added", "alert HighErrorRate/gw-02 joined"),
        entry(2, "alert_added", "alert HighErrorRate/gw-03 joined"),
    ];
    a.update(&t, &inc, &ext, &entries).await.unwrap();

    let patches = seen(&s, Method::PATCH);
    assert_eq!(patches.len(), 1, "one write for fields and notes");
    assert_eq!(patches[0].path, format!("{TABLE}/{}", ext.id));
    let b = patches[0].body.as_object().unwrap();
    assert_eq!(b["urgency"], "1");
    assert_eq!(
        b["short_description"],
        "HighErrorRate api-gateway prod (3 alerts)"
    );
    assert!(
        !b.contains_key("assignment_group"),
        "not in update_fields: set at create, then the people working the ticket own it"
    );
    let rec = record(&s, &ext.id);
    assert_eq!(rec["priority"], "1", "the instance recomputed priority");
    let journal = s.lock().unwrap().journal[&ext.id].clone();
    assert_eq!(journal.len(), 1);
    assert_eq!(
        journal[0],
        "2025-06-01T10:01:00Z alert_added: alert HighErrorRate/gw-02 joined\n\
         2025-06-01T10:02:00Z alert_added: alert HighErrorRate/gw-03 joined"
    );
}

#[tokio::test]
async fn a_batch_of_notes_longer_than_a_journal_entry_is_split_into_several() {
    let (a, t, s) = setup_with("work_note_max_chars: 200\nupdate_fields: []\n").await;
    let inc = incident("inc-0006");
    let ext = a.create(&t, &inc).await.unwrap();
    let entries: Vec<_> = (0..6)
        .map(|i| entry(i, "alert_added", &format!("alert {i} {}", "y".repeat(60))))
        .collect();
    a.update(&t, &inc, &ext, &entries).await.unwrap();
    let journal = s.lock().unwrap().journal[&ext.id].clone();
    assert!(journal.len() > 1);
    assert!(journal.iter().all(|n| n.chars().count() <= 200));
    assert_eq!(journal.iter().map(|n| n.lines().count()).sum::<usize>(), 6);
    assert!(
        seen(&s, Method::PATCH)
            .iter()
            .all(|p| p.body.as_object().unwrap().len() == 1),
        "only work_notes: update_fields is empty"
    );
}

#[tokio::test]
async fn acknowledge_resolve_with_close_code_and_notes_then_reopen_moves_state_1_2_6_2() {
    let (a, t, s) =
        setup_with("close_notes: \"Auto-resolved by incidentd: {{ incident.title }}\"\n").await;
    let inc = incident("inc-0007");
    let ext = a.create(&t, &inc).await.unwrap();

    a.transition(&t, &inc, &ext, TicketState::Acknowledged)
        .await
        .unwrap();
    assert_eq!(record(&s, &ext.id)["state"], "2");

    a.transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    let rec = record(&s, &ext.id);
    assert_eq!(rec["state"], "6");
    assert_eq!(rec["close_code"], "Solution provided");
    assert_eq!(
        rec["close_notes"],
        "Auto-resolved by incidentd: HighErrorRate api-gateway prod"
    );
    let resolve = seen(&s, Method::PATCH).pop().unwrap();
    assert!(
        ["state", "close_code", "close_notes"]
            .iter()
            .all(|k| resolve.body.get(k).is_some()),
        "the data policy wants all three in one call"
    );

    // Resolving again is done without a write.
    let writes = seen(&s, Method::PATCH).len();
    a.transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    assert_eq!(seen(&s, Method::PATCH).len(), writes);

    a.transition(&t, &inc, &ext, TicketState::Open)
        .await
        .unwrap();
    let rec = record(&s, &ext.id);
    assert_eq!(rec["state"], "2", "reopen goes back to In Progress");
    assert_eq!(rec["reopen_count"], "1");
}

#[tokio::test]
async fn close_sends_state_7_with_the_configured_close_code_and_closed_is_terminal() {
    let (a, t, s) = setup_with("close_code: Workaround provided\n").await;
    let inc = incident("inc-0008");
    let ext = a.create(&t, &inc).await.unwrap();
    a.transition(&t, &inc, &ext, TicketState::Closed)
        .await
        .unwrap();
    let rec = record(&s, &ext.id);
    assert_eq!(
        (rec["state"].as_str(), rec["active"].as_str()),
        (Some("7"), Some("false"))
    );
    assert_eq!(rec["close_code"], "Workaround provided");
    // Closed is terminal: resolving or closing again is done, reopening is refused.
    a.transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    a.transition(&t, &inc, &ext, TicketState::Closed)
        .await
        .unwrap();
    let err = a
        .transition(&t, &inc, &ext, TicketState::Open)
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    assert!(err.to_string().contains("terminal"), "{err}");
    assert_eq!(record(&s, &ext.id)["state"], "7");
}

#[tokio::test]
async fn configured_state_values_are_written() {
    let (a, t, s) = setup_with("states: {reopen: \"1\"}\n").await;
    let inc = incident("inc-0018");
    let ext = a.create(&t, &inc).await.unwrap();
    a.transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    a.transition(&t, &inc, &ext, TicketState::Open)
        .await
        .unwrap();
    assert_eq!(
        record(&s, &ext.id)["state"],
        "1",
        "reopened to New, as configured"
    );
    assert_eq!(
        a.fetch(&t, &ext).await.unwrap().unwrap().state,
        TicketState::Open
    );
}

#[tokio::test]
async fn resolving_or_closing_a_record_that_is_gone_is_done_but_updating_it_reports_404() {
    let (a, t, _s) = setup().await;
    let inc = incident("inc-0009");
    let gone = ExternalRef {
        id: "0123456789abcdef0123456789abcdef".into(),
        display: "INC0009999".into(),
        url: None,
    };
    a.transition(&t, &inc, &gone, TicketState::Resolved)
        .await
        .unwrap();
    a.transition(&t, &inc, &gone, TicketState::Closed)
        .await
        .unwrap();
    let err = a
        .update(&t, &inc, &gone, &[entry(1, "alert_added", "x")])
        .await
        .unwrap_err();
    assert_eq!(
        err.status(),
        Some(404),
        "the worker decides whether to recreate"
    );
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_the_create_succeeds_once() {
    let (a, t, s) = setup().await;
    can(
        &s,
        Method::POST,
        429,
        vec![
            ("retry-after", "1".into()),
            ("x-ratelimit-limit", "10".into()),
            ("x-ratelimit-rule", "d0ef3b0a1b2c".into()),
        ],
        r#"{"error":{"message":"Rate limit exceeded","detail":"Rate limit of 10 requests per hour for Table API exceeded"},"status":"failure"}"#,
    );
    let started = Instant::now();
    let ext = a.create(&t, &incident("inc-0010")).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    assert_eq!(seen(&s, Method::POST).len(), 2);
    assert_eq!(s.lock().unwrap().records.len(), 1);
    assert_eq!(record(&s, &ext.id)["correlation_id"], "inc-0010");
}

#[tokio::test]
async fn a_503_is_retried_and_then_succeeds() {
    let (a, t, s) = setup().await;
    let inc = incident("inc-0011");
    let ext = a.create(&t, &inc).await.unwrap();
    can(
        &s,
        Method::PATCH,
        503,
        vec![],
        "<html>Service Unavailable</html>",
    );
    a.update(&t, &inc, &ext, &[entry(1, "alert_added", "x")])
        .await
        .unwrap();
    assert_eq!(seen(&s, Method::PATCH).len(), 2);
    assert_eq!(s.lock().unwrap().journal[&ext.id].len(), 1);
}

#[tokio::test]
async fn a_hibernating_instance_answering_200_with_html_is_an_error_not_a_ticket() {
    let (url, s) = start(basic(USER, PASSWORD)).await;
    s.lock().unwrap().always = Some((
        "text/html",
        "<html><head><title>Instance Hibernating page</title></head><body>Your instance is hibernating. Sign in to wake it up.</body></html>",
    ));
    let yaml = format!(
        "url: {url}\nuser: {USER}\npassword: {PASSWORD}\ncaller_id: abc\n\
         delivery: {{initial_backoff_ms: 10, max_backoff_ms: 20, max_elapsed_ms: 300}}\n"
    );
    let (a, t) = build(&yaml).unwrap();
    let err = a.create(&t, &incident("inc-0012")).await.unwrap_err();
    match &err {
        DeliveryError::Transient { reason, .. } => assert!(reason.contains("HTML"), "{reason}"),
        other => panic!("expected a transient error, got {other:?}"),
    }
    assert!(seen(&s, Method::POST).len() > 1, "retried as transient");
    assert!(s.lock().unwrap().records.is_empty());
    // A 2xx JSON body without `result` is the same kind of error.
    s.lock().unwrap().always = Some(("application/json", r#"{"status":"ok"}"#));
    assert!(matches!(
        a.find(&t, &incident("inc-0012")).await,
        Err(DeliveryError::Transient { .. })
    ));
}

#[tokio::test]
async fn a_400_is_a_permanent_error_and_not_retried() {
    let (a, t, s) = setup().await;
    can(
        &s,
        Method::POST,
        400,
        vec![],
        r#"{"error":{"message":"Exception while reading request","detail":"The payload is not valid JSON."},"status":"failure"}"#,
    );
    let err = a.create(&t, &incident("inc-0013")).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(
        err.to_string().contains("Exception while reading request"),
        "{err}"
    );
    assert_eq!(seen(&s, Method::POST).len(), 1);
}

#[tokio::test]
async fn a_missing_caller_refused_by_the_data_policy_is_permanent() {
    let (url, s) = start(basic(USER, PASSWORD)).await;
    let yaml = format!("url: {url}\nuser: {USER}\npassword: {PASSWORD}\n");
    let (a, t) = build(&yaml).unwrap();
    let err = a.create(&t, &incident("inc-0014")).await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(err.to_string().contains("Data Policy Exception"), "{err}");
    assert!(s.lock().unwrap().records.is_empty());
}

#[tokio::test]
async fn fetch_maps_the_state_and_reports_who_changed_it() {
    let (a, t, s) = setup().await;
    let inc = incident("inc-0015");
    let ext = a.create(&t, &inc).await.unwrap();
    let got = a.fetch(&t, &ext).await.unwrap().unwrap();
    assert_eq!(got.state, TicketState::Open);
    assert_eq!(got.changed_by.as_deref(), Some(USER));

    for (state, active, expected) in [
        ("2", "true", TicketState::Acknowledged),
        ("3", "true", TicketState::Acknowledged),
        ("6", "true", TicketState::Resolved),
        ("7", "false", TicketState::Closed),
        ("8", "false", TicketState::Closed),
    ] {
        {
            // A person works the ticket in the instance.
            let mut st = s.lock().unwrap();
            let rec = st
                .records
                .iter_mut()
                .find(|r| r["sys_id"] == ext.id.as_str())
                .unwrap();
            rec.insert("state".into(), json!(state));
            rec.insert("active".into(), json!(active));
            rec.insert("sys_updated_by".into(), json!("jane.doe"));
        }
        let got = a.fetch(&t, &ext).await.unwrap().unwrap();
        assert_eq!(got.state, expected, "state {state}");
        assert_eq!(got.changed_by.as_deref(), Some("jane.doe"));
    }
    let get = seen(&s, Method::GET).pop().unwrap();
    assert_eq!(get.path, format!("{TABLE}/{}", ext.id));
}

#[tokio::test]
async fn an_oauth_bearer_token_from_a_file_is_sent_instead_of_basic_auth() {
    let (url, s) = start("Bearer tok-123".into()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "tok-123\n").unwrap();
    let yaml = format!("url: {url}\ntoken_file: token\ncaller_id: abc\n");
    let cfg: Config = serde_norway::from_str(&yaml).unwrap();
    let mut p = incidentd::config::Problems::new(Path::new("t.yaml"), &yaml);
    let a = cfg.build("adapters.snow", dir.path(), &mut p).unwrap();
    let t = target(&cfg);
    a.create(&t, &incident("inc-0016")).await.unwrap();
    assert_eq!(s.lock().unwrap().records.len(), 1);
}

#[tokio::test]
async fn wrong_credentials_are_a_permanent_401() {
    let (url, _s) = start(basic(USER, PASSWORD)).await;
    let yaml = format!("url: {url}\nuser: {USER}\npassword: wrong\ncaller_id: abc\n");
    let (a, t) = build(&yaml).unwrap();
    let err = a.create(&t, &incident("inc-0017")).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(!err.to_string().contains("wrong"), "no secret in errors");
}

#[test]
fn invalid_configs_are_refused() {
    let ok = "url: https://acme.service-now.com\nuser: u\npassword: p\n";
    assert!(build(ok).is_some());
    let cfg: Config = serde_norway::from_str(ok).unwrap();
    assert!(
        !format!("{cfg:?}").contains("password: Some(\"p\")"),
        "{cfg:?}"
    );
    let cfg: Config = serde_norway::from_str("url: https://x\ntoken: tok-secret\n").unwrap();
    assert!(
        !format!("{cfg:?}").contains("tok-secret"),
        "no secret in Debug"
    );
    for bad in [
        // Both auth methods, or none.
        "url: https://acme.service-now.com\nuser: u\npassword: p\ntoken: t\n",
        "url: https://acme.service-now.com\n",
        "url: https://acme.service-now.com\nuser: u\n",
        "url: ftp://acme\nuser: u\npassword: p\n",
        &format!("{ok}close_code: \"\"\n"),
        &format!("{ok}impact: {{critical: \"1\"}}\n"),
        &format!("{ok}states: {{on_hold: \"3\"}}\n"),
        &format!("{ok}update_fields: [priority]\n"),
        &format!("{ok}short_description: \"{{{{ incident.title \"\n"),
        &format!("{ok}short_description_max_chars: 0\n"),
    ] {
        assert!(build(bad).is_none(), "accepted: {bad}");
    }
    assert!(
        serde_norway::from_str::<Config>(&format!("{ok}prority: 1\n")).is_err(),
        "unknown keys are refused"
    );
}
