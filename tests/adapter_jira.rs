//! Contract tests of the Jira Cloud adapter against a local REST v3 server that
//! checks every request as Jira does (auth, content type, ADF bodies, field
//! limits, screens, workflow transitions), keeps issues in memory, and answers
//! with Jira's shapes and error collections.

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
use serde_json::{Value, json};

use incidentd::adapters::jira::{Config, Jira};
use incidentd::adapters::{Adapter, DeliveryError, ExternalRef, Target, TicketState};
use incidentd::incident::{Incident, Policy, TimelineEntry};
use incidentd::rules::Level;

// ---------------------------------------------------------------------------
// The contract server.

const EMAIL: &str = "bot@example.com";
const TOKEN: &str = "atl-token-xyz";
const PROJECT: &str = "OPS";
const PRIORITIES: &[&str] = &["Highest", "High", "Medium", "Low", "Lowest"];
const RESOLUTIONS: &[&str] = &["Done", "Won't Do", "Duplicate"];
/// Fields on the create and edit screens of the mock project.
const SCREEN: &[&str] = &[
    "project",
    "issuetype",
    "summary",
    "description",
    "priority",
    "labels",
    "components",
];

/// The workflow: (status, its category key).
const STATUSES: &[(&str, &str)] = &[
    ("To Do", "new"),
    ("In Progress", "indeterminate"),
    ("Done", "done"),
];

/// Transitions out of a status: (id, name, to status, resolution on its screen).
fn transitions_from(status: &str) -> Vec<(&'static str, &'static str, &'static str, bool)> {
    match status {
        // "Start work" is matched by the name of the status it leads to.
        "To Do" => vec![
            ("21", "Start work", "In Progress", false),
            ("31", "Done", "Done", true),
        ],
        "In Progress" => vec![
            ("11", "Stop work", "To Do", false),
            ("31", "Done", "Done", true),
        ],
        _ => vec![("41", "Reopen", "To Do", false)],
    }
}

fn category(status: &str) -> &'static str {
    STATUSES
        .iter()
        .find(|s| s.0 == status)
        .map(|s| s.1)
        .unwrap_or("undefined")
}

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    body: Value,
}

#[derive(Debug, Clone)]
struct Issue {
    id: String,
    key: String,
    summary: String,
    description: Value,
    priority: String,
    labels: Vec<String>,
    status: String,
    resolution: Option<String>,
    assignee: Option<String>,
    comments: Vec<Value>,
    edits: usize,
}

#[derive(Default)]
struct Site {
    issues: Vec<Issue>,
    seen: Vec<Seen>,
    canned: VecDeque<Canned>,
}

/// A canned answer for the next request of a method: (method, status, headers,
/// content type, body).
type Canned = (
    Method,
    u16,
    Vec<(&'static str, String)>,
    &'static str,
    String,
);

type Shared = Arc<Mutex<Site>>;

fn jira_error(status: u16, messages: &[&str], errors: Value) -> Response {
    json_reply(status, json!({"errorMessages": messages, "errors": errors}))
}

fn field_error(field: &str, message: &str) -> Response {
    jira_error(400, &[], json!({ field: message }))
}

fn json_reply(status: u16, v: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json;charset=UTF-8")],
        v.to_string(),
    )
        .into_response()
}

/// Whether `v` is an ADF document Jira takes: a `doc` of version 1 whose
/// paragraphs hold non-empty text nodes and hard breaks.
fn valid_adf(v: &Value) -> bool {
    v["type"] == "doc"
        && v["version"] == 1
        && v["content"].as_array().is_some_and(|blocks| {
            blocks.iter().all(|b| {
                b["type"] == "paragraph"
                    && b["content"].as_array().is_some_and(|inl| {
                        inl.iter().all(|n| match n["type"].as_str() {
                            Some("text") => n["text"].as_str().is_some_and(|t| !t.is_empty()),
                            Some("hardBreak") => true,
                            _ => false,
                        })
                    })
            })
        })
}

fn adf_text(v: &Value) -> String {
    v["content"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            p["content"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| n["text"].as_str().unwrap_or("\n").to_string())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The summary, or Jira's message refusing it.
fn check_summary(v: &Value) -> Result<String, &'static str> {
    match v.as_str() {
        None | Some("") => Err("You must specify a summary of the issue."),
        Some(s) if s.chars().count() > 255 => Err("Summary must be less than 255 characters."),
        Some(s) if s.contains('\n') => Err("Field 'summary' cannot contain newline characters."),
        Some(s) => Ok(s.to_string()),
    }
}

/// The priority name, or Jira's message refusing it.
fn check_priority(v: &Value) -> Result<String, &'static str> {
    match v["name"].as_str() {
        Some(n) if PRIORITIES.contains(&n) => Ok(n.to_string()),
        _ => Err("Specify a valid 'id' or 'name' for Priority"),
    }
}

fn issue_json(i: &Issue, fields: Option<&String>) -> Value {
    let all = json!({
        "summary": i.summary,
        "description": i.description,
        "priority": {"name": i.priority, "id": "1"},
        "labels": i.labels,
        "status": {"name": i.status, "statusCategory": {"key": category(&i.status), "id": 2}},
        "resolution": i.resolution.as_ref().map(|r| json!({"name": r})),
        "assignee": i.assignee.as_ref().map(|a| json!({"accountId": "5b10a2844c20165700ede21g", "displayName": a})),
    });
    let fields = match fields {
        Some(list) => Value::Object(
            list.split(',')
                .filter_map(|f| all.get(f).map(|v| (f.to_string(), v.clone())))
                .collect(),
        ),
        None => all,
    };
    json!({"id": i.id, "key": i.key, "self": format!("http://mock/rest/api/3/issue/{}", i.id), "fields": fields})
}

fn not_found() -> Response {
    jira_error(
        404,
        &["Issue does not exist or you do not have permission to see it."],
        json!({}),
    )
}

/// The string literal after `field = ` in a JQL query.
fn jql_value(jql: &str, field: &str) -> Option<String> {
    let rest = &jql[jql.find(&format!("{field} = \""))? + field.len() + 4..];
    Some(rest[..rest.find('"')?].to_string())
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
    let b: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut st = s.lock().unwrap();
    st.seen.push(Seen {
        method: method.clone(),
        path: uri.path().to_string(),
        query: query.clone(),
        body: b.clone(),
    });
    if let Some(i) = st.canned.iter().position(|c| c.0 == method) {
        let (_, status, hdrs, content_type, text) = st.canned.remove(i).unwrap();
        let mut r = (StatusCode::from_u16(status).unwrap(), text).into_response();
        r.headers_mut()
            .insert("content-type", content_type.parse().unwrap());
        for (k, v) in hdrs {
            r.headers_mut().insert(k, v.parse().unwrap());
        }
        return r;
    }

    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{EMAIL}:{TOKEN}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return jira_error(
            401,
            &["You are not authenticated. Authentication required to perform this operation."],
            json!({}),
        );
    }
    if !headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
    {
        return jira_error(406, &["Accept must be application/json"], json!({}));
    }
    if matches!(method, Method::POST | Method::PUT) {
        if !headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"))
        {
            return jira_error(415, &["Unsupported Media Type"], json!({}));
        }
        if !b.is_object() {
            return jira_error(
                400,
                &["Unexpected character: the body is not a JSON object"],
                json!({}),
            );
        }
    }
    let path = uri.path().to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let find = |st: &Site, key: &str| st.issues.iter().position(|i| i.key == key || i.id == key);
    match (method, segs.as_slice()) {
        (Method::POST, ["rest", "api", "3", "issue"]) => {
            let Some(f) = b["fields"].as_object() else {
                return jira_error(400, &["fields is required"], json!({}));
            };
            for k in f.keys() {
                if !SCREEN.contains(&k.as_str()) {
                    return field_error(
                        k,
                        &format!(
                            "Field '{k}' cannot be set. It is not on the appropriate screen, or unknown."
                        ),
                    );
                }
            }
            if f.get("project").and_then(|p| p["key"].as_str()) != Some(PROJECT) {
                return field_error("project", "valid project is required");
            }
            if !matches!(
                f.get("issuetype").and_then(|t| t["name"].as_str()),
                Some("Incident" | "Task")
            ) {
                return field_error("issuetype", "valid issue type is required");
            }
            let summary = match check_summary(f.get("summary").unwrap_or(&Value::Null)) {
                Ok(s) => s,
                Err(m) => return field_error("summary", m),
            };
            let description = f.get("description").cloned().unwrap_or(Value::Null);
            if !valid_adf(&description) {
                return field_error(
                    "description",
                    "Operation value must be an Atlassian Document (see the Atlassian Document Format)",
                );
            }
            let priority = match check_priority(f.get("priority").unwrap_or(&Value::Null)) {
                Ok(p) => p,
                Err(m) => return field_error("priority", m),
            };
            let mut labels = Vec::new();
            for l in f
                .get("labels")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match l.as_str() {
                    Some(l) if !l.is_empty() && !l.contains(' ') && l.chars().count() <= 255 => {
                        labels.push(l.to_string())
                    }
                    _ => {
                        return field_error(
                            "labels",
                            &format!("The label '{l}' contains spaces which is invalid."),
                        );
                    }
                }
            }
            let n = st.issues.len() + 1;
            let issue = Issue {
                id: format!("{}", 10000 + n),
                key: format!("{PROJECT}-{n}"),
                summary,
                description,
                priority,
                labels,
                status: "To Do".into(),
                resolution: None,
                assignee: None,
                comments: vec![],
                edits: 0,
            };
            let out = json!({"id": issue.id, "key": issue.key, "self": format!("http://mock/rest/api/3/issue/{}", issue.id)});
            st.issues.push(issue);
            json_reply(201, out)
        }
        (Method::POST, ["rest", "api", "3", "search", "jql"]) => {
            let Some(jql) = b["jql"].as_str() else {
                return jira_error(400, &["The JQL query is required."], json!({}));
            };
            if jql_value(jql, "project").as_deref() != Some(PROJECT) {
                return jira_error(
                    400,
                    &[
                        "Unbounded JQL queries are not allowed here. Please add a search restriction to your query.",
                    ],
                    json!({}),
                );
            }
            let Some(label) = jql_value(jql, "labels") else {
                return jira_error(
                    400,
                    &["Mock contract: the search must be by label"],
                    json!({}),
                );
            };
            let max = b["maxResults"].as_u64().unwrap_or(50) as usize;
            let wanted: Option<String> = b["fields"].as_array().map(|fs| {
                fs.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            });
            let issues: Vec<Value> = st
                .issues
                .iter()
                .filter(|i| i.labels.contains(&label))
                .take(max)
                .map(|i| {
                    let mut v = issue_json(i, Some(&wanted.clone().unwrap_or_default()));
                    if wanted.is_none() {
                        // Without `fields` only id/key/self come back.
                        v.as_object_mut().unwrap().remove("fields");
                    }
                    v
                })
                .collect();
            json_reply(200, json!({"issues": issues, "isLast": true}))
        }
        (Method::GET, ["rest", "api", "3", "issue", key]) => match find(&st, key) {
            Some(i) => json_reply(200, issue_json(&st.issues[i], query.get("fields"))),
            None => not_found(),
        },
        (Method::PUT, ["rest", "api", "3", "issue", key]) => {
            let Some(i) = find(&st, key) else {
                return not_found();
            };
            let Some(f) = b["fields"].as_object() else {
                return jira_error(400, &["fields or update is required"], json!({}));
            };
            let mut edited = st.issues[i].clone();
            for (k, v) in f {
                match k.as_str() {
                    "summary" => match check_summary(v) {
                        Ok(s) => edited.summary = s,
                        Err(m) => return field_error("summary", m),
                    },
                    "priority" => match check_priority(v) {
                        Ok(p) => edited.priority = p,
                        Err(m) => return field_error("priority", m),
                    },
                    other => {
                        return field_error(
                            other,
                            &format!(
                                "Field '{other}' cannot be set. It is not on the appropriate screen, or unknown."
                            ),
                        );
                    }
                }
            }
            edited.edits += 1;
            st.issues[i] = edited;
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::POST, ["rest", "api", "3", "issue", key, "comment"]) => {
            let Some(i) = find(&st, key) else {
                return not_found();
            };
            if !valid_adf(&b["body"]) {
                return field_error(
                    "comment",
                    "Comment body can not be empty! / must be an Atlassian Document",
                );
            }
            let id = st.issues[i].comments.len() + 10000;
            st.issues[i].comments.push(b["body"].clone());
            json_reply(
                201,
                json!({"id": id.to_string(), "self": format!("http://mock/rest/api/3/issue/{key}/comment/{id}"),
                       "author": {"accountId": "bot", "displayName": "incidentd bot"}, "body": b["body"],
                       "created": "2025-06-01T10:15:00.000+0000"}),
            )
        }
        (Method::GET, ["rest", "api", "3", "issue", key, "transitions"]) => {
            let Some(i) = find(&st, key) else {
                return not_found();
            };
            let expand_fields = query
                .get("expand")
                .is_some_and(|e| e.contains("transitions.fields"));
            let list: Vec<Value> = transitions_from(&st.issues[i].status)
                .into_iter()
                .map(|(id, name, to, resolution)| {
                    let mut t = json!({
                        "id": id, "name": name, "hasScreen": resolution, "isGlobal": false,
                        "isInitial": false, "isAvailable": true, "isConditional": false,
                        "to": {"name": to, "statusCategory": {"key": category(to)}},
                    });
                    if expand_fields {
                        t["fields"] = if resolution {
                            json!({"resolution": {"required": true, "name": "Resolution", "key": "resolution",
                                                  "operations": ["set"], "hasDefaultValue": false}})
                        } else {
                            json!({})
                        };
                    }
                    t
                })
                .collect();
            json_reply(200, json!({"transitions": list}))
        }
        (Method::POST, ["rest", "api", "3", "issue", key, "transitions"]) => {
            let Some(i) = find(&st, key) else {
                return not_found();
            };
            let Some(id) = b["transition"]["id"].as_str() else {
                return jira_error(400, &["Missing 'transition' identifier"], json!({}));
            };
            let Some((_, _, to, screen)) = transitions_from(&st.issues[i].status)
                .into_iter()
                .find(|t| t.0 == id)
            else {
                return jira_error(
                    400,
                    &[&format!(
                        "Transition id '{id}' is not valid for this issue."
                    )],
                    json!({}),
                );
            };
            let resolution = b.pointer("/fields/resolution/name").and_then(Value::as_str);
            match (screen, resolution) {
                (true, None) => return field_error("resolution", "Resolution is required."),
                (false, Some(_)) => {
                    return field_error(
                        "resolution",
                        "Field 'resolution' cannot be set. It is not on the appropriate screen, or unknown.",
                    );
                }
                (true, Some(r)) if !RESOLUTIONS.contains(&r) => {
                    return field_error(
                        "resolution",
                        &format!("Could not find valid 'id' or 'name' in resolution object: {r}"),
                    );
                }
                _ => {}
            }
            let issue = &mut st.issues[i];
            issue.status = to.to_string();
            issue.resolution = if category(to) == "done" {
                resolution.map(str::to_string)
            } else {
                None
            };
            StatusCode::NO_CONTENT.into_response()
        }
        _ => jira_error(404, &["null for uri: mock"], json!({})),
    }
}

async fn start() -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(Site::default()));
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

fn build(yaml: &str) -> Option<(Jira, Target)> {
    let cfg: Config = serde_norway::from_str(yaml).expect("config parses");
    let mut p = incidentd::config::Problems::new(Path::new("t.yaml"), yaml);
    let adapter = cfg.build("adapters.jira", Path::new("."), &mut p)?;
    let metrics = Arc::new(incidentd::metrics::Metrics::new(prometheus::Registry::new()).unwrap());
    Some((
        adapter,
        Target::new("jira", &cfg.delivery, metrics).unwrap(),
    ))
}

fn base_yaml(url: &str) -> String {
    format!(
        "url: {url}\nemail: {EMAIL}\napi_token: {TOKEN}\nproject: {PROJECT}\n\
         delivery: {{initial_backoff_ms: 10, max_backoff_ms: 50, max_elapsed_ms: 5000}}\n"
    )
}

async fn setup_with(extra: &str) -> (Jira, Target, Shared) {
    let (url, s) = start().await;
    let (a, t) = build(&format!("{}{extra}", base_yaml(&url))).expect("valid config");
    (a, t, s)
}

async fn setup() -> (Jira, Target, Shared) {
    setup_with("").await
}

fn incident(id: &str) -> Incident {
    let t = Utc.with_ymd_and_hms(2025, 6, 1, 10, 0, 0).unwrap();
    Incident {
        title: "HighErrorRate api-gateway prod".into(),
        description: "Alert HighErrorRate firing since 2025-06-01T10:00:00Z\nerror_ratio=0.12 > 0.05\n\nRunbook: https://runbooks.example.com/high-error-rate".into(),
        priority: 1,
        urgency: Level::High,
        category: None,
        subcategory: None,
        assignment_group: None,
        configuration_items: vec!["gw-01".into()],
        major: true,
        alert_count: 1,
        correlation_key: "api-gateway".into(),
        created_at: t,
        updated_at: t,
        related: vec![],
        route: vec!["jira".into()],
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

fn issue(s: &Shared, key: &str) -> Issue {
    s.lock()
        .unwrap()
        .issues
        .iter()
        .find(|i| i.key == key)
        .cloned()
        .unwrap()
}

fn seen(s: &Shared, method: Method, path_end: &str) -> Vec<Seen> {
    s.lock()
        .unwrap()
        .seen
        .iter()
        .filter(|r| r.method == method && r.path.ends_with(path_end))
        .cloned()
        .collect()
}

fn can(
    s: &Shared,
    method: Method,
    status: u16,
    headers: Vec<(&'static str, String)>,
    content_type: &'static str,
    body: &str,
) {
    s.lock()
        .unwrap()
        .canned
        .push_back((method, status, headers, content_type, body.to_string()));
}

// ---------------------------------------------------------------------------
// The tests.

#[tokio::test]
async fn create_posts_an_issue_with_an_adf_description_a_priority_name_and_the_id_label() {
    let (a, t, s) = setup_with("extra_fields: {components: [{name: api-gateway}]}\n").await;
    let mut inc = incident("inc-0001");
    inc.title = format!("{}\n{}", "t".repeat(300), "second line");
    let ext = a.create(&t, &inc).await.unwrap();
    assert_eq!(ext.id, "OPS-1");
    assert_eq!(ext.display, "OPS-1");
    assert!(ext.url.as_deref().unwrap().ends_with("/browse/OPS-1"));

    let post = &seen(&s, Method::POST, "/rest/api/3/issue")[0];
    let f = &post.body["fields"];
    assert_eq!(f["project"], json!({"key": "OPS"}));
    assert_eq!(f["issuetype"], json!({"name": "Incident"}));
    assert_eq!(
        f["priority"],
        json!({"name": "Highest"}),
        "P1 is Highest by default"
    );
    assert_eq!(f["labels"], json!(["incidentd", "incidentd-inc-0001"]));
    assert_eq!(f["components"], json!([{"name": "api-gateway"}]));
    let summary = f["summary"].as_str().unwrap();
    assert_eq!(summary.chars().count(), 255);
    assert!(!summary.contains('\n'));

    let i = issue(&s, "OPS-1");
    assert_eq!(
        adf_text(&i.description),
        "Alert HighErrorRate firing since 2025-06-01T10:00:00Z\nerror_ratio=0.12 > 0.05\n\nRunbook: https://runbooks.example.com/high-error-rate",
        "two paragraphs; the single newline is a hard break"
    );
    assert_eq!(
        i.description["content"][0]["content"][1]["type"],
        "hardBreak"
    );
}

#[tokio::test]
async fn find_by_the_id_label_returns_the_issue_a_lost_create_made_and_no_second_one() {
    let (a, t, s) = setup().await;
    let inc = incident("inc-0002");
    assert_eq!(a.find(&t, &inc).await.unwrap(), None);
    let made = a.create(&t, &inc).await.unwrap();
    let found = a.find(&t, &inc).await.unwrap().expect("found by label");
    assert_eq!(found, made);
    assert_eq!(s.lock().unwrap().issues.len(), 1);

    let search = seen(&s, Method::POST, "/search/jql").pop().unwrap();
    assert_eq!(
        search.body["jql"],
        "project = \"OPS\" AND labels = \"incidentd-inc-0002\" ORDER BY created ASC"
    );
    assert_eq!(search.body["maxResults"], 1);
    assert_eq!(a.find(&t, &incident("inc-9999")).await.unwrap(), None);
}

#[tokio::test]
async fn update_puts_only_changed_fields_and_comments_once_per_new_timeline_entry() {
    let (a, t, s) = setup_with("priorities: {2: Medium}\n").await;
    let mut inc = incident("inc-0003");
    let ext = a.create(&t, &inc).await.unwrap();

    // Nothing changed and nothing new: reads, but no write.
    a.update(&t, &inc, &ext, &[]).await.unwrap();
    assert!(seen(&s, Method::PUT, "").is_empty());
    assert!(issue(&s, "OPS-1").comments.is_empty());

    inc.priority = 2;
    let entries = [
        entry(5, "alert_added", "alert HighErrorRate/gw-02 joined"),
        entry(6, "acknowledged", "acknowledged by jane"),
    ];
    a.update(&t, &inc, &ext, &entries).await.unwrap();
    let puts = seen(&s, Method::PUT, "/issue/OPS-1");
    assert_eq!(puts.len(), 1);
    assert_eq!(
        puts[0].body,
        json!({"fields": {"priority": {"name": "Medium"}}}),
        "only the changed field, by the configured name"
    );
    let i = issue(&s, "OPS-1");
    assert_eq!(i.priority, "Medium");
    assert_eq!(i.comments.len(), 2);
    assert_eq!(
        adf_text(&i.comments[0]),
        "incidentd alert_added at 2025-06-01T10:05:00Z: alert HighErrorRate/gw-02 joined"
    );

    inc.title = "HighErrorRate api-gateway prod (2 alerts)".into();
    a.update(&t, &inc, &ext, &[]).await.unwrap();
    assert_eq!(
        seen(&s, Method::PUT, "/issue/OPS-1").pop().unwrap().body,
        json!({"fields": {"summary": "HighErrorRate api-gateway prod (2 alerts)"}})
    );
}

#[tokio::test]
async fn acknowledge_resolve_with_resolution_and_reopen_pick_transitions_by_name() {
    let (a, t, s) = setup().await;
    let inc = incident("inc-0004");
    let ext = a.create(&t, &inc).await.unwrap();

    // "In Progress" matches the transition "Start work" by the status it leads to.
    a.transition(&t, &inc, &ext, TicketState::Acknowledged)
        .await
        .unwrap();
    assert_eq!(issue(&s, "OPS-1").status, "In Progress");
    let ack = seen(&s, Method::POST, "/transitions").pop().unwrap();
    assert_eq!(
        ack.body,
        json!({"transition": {"id": "21"}}),
        "no resolution off-screen"
    );
    let list = seen(&s, Method::GET, "/transitions").pop().unwrap();
    assert_eq!(list.query["expand"], "transitions.fields");

    a.transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    let i = issue(&s, "OPS-1");
    assert_eq!(
        (i.status.as_str(), i.resolution.as_deref()),
        ("Done", Some("Done"))
    );
    let resolve = seen(&s, Method::POST, "/transitions").pop().unwrap();
    assert_eq!(
        resolve.body,
        json!({"transition": {"id": "31"}, "fields": {"resolution": {"name": "Done"}}})
    );

    // Resolved again, or closed: the issue is already done.
    let posts = seen(&s, Method::POST, "/transitions").len();
    a.transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    a.transition(&t, &inc, &ext, TicketState::Closed)
        .await
        .unwrap();
    assert_eq!(seen(&s, Method::POST, "/transitions").len(), posts);

    a.transition(&t, &inc, &ext, TicketState::Open)
        .await
        .unwrap();
    let i = issue(&s, "OPS-1");
    assert_eq!(
        (i.status.as_str(), i.resolution.as_deref()),
        ("To Do", None)
    );
}

#[tokio::test]
async fn a_transition_name_the_workflow_lacks_is_a_permanent_error_listing_the_available_ones() {
    let (a, t, s) = setup_with("transitions: {acknowledged: Triage}\n").await;
    let inc = incident("inc-0005");
    let ext = a.create(&t, &inc).await.unwrap();
    let err = a
        .transition(&t, &inc, &ext, TicketState::Acknowledged)
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("\"Triage\""), "{msg}");
    assert!(msg.contains("\"Start work\" (to \"In Progress\")"), "{msg}");
    assert!(msg.contains("\"Done\" (to \"Done\")"), "{msg}");
    assert_eq!(issue(&s, "OPS-1").status, "To Do");
}

#[tokio::test]
async fn a_configured_resolution_is_sent_and_a_resolution_jira_lacks_is_permanent() {
    let (a, t, s) = setup_with("resolution: Won't Do\n").await;
    let inc = incident("inc-0006");
    let ext = a.create(&t, &inc).await.unwrap();
    a.transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    assert_eq!(issue(&s, "OPS-1").resolution.as_deref(), Some("Won't Do"));

    let (a, t, _s) = setup_with("resolution: Fixed\n").await;
    let ext = a.create(&t, &inc).await.unwrap();
    let err = a
        .transition(&t, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
}

#[tokio::test]
async fn resolving_an_issue_that_is_gone_is_done_but_updating_it_reports_404() {
    let (a, t, _s) = setup().await;
    let inc = incident("inc-0007");
    let gone = ExternalRef {
        id: "OPS-404".into(),
        display: "OPS-404".into(),
        url: None,
    };
    a.transition(&t, &inc, &gone, TicketState::Resolved)
        .await
        .unwrap();
    a.transition(&t, &inc, &gone, TicketState::Closed)
        .await
        .unwrap();
    let err = a.update(&t, &inc, &gone, &[]).await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    let err = a
        .transition(&t, &inc, &gone, TicketState::Acknowledged)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_the_comment_is_added_once() {
    let (a, t, s) = setup().await;
    let inc = incident("inc-0008");
    let ext = a.create(&t, &inc).await.unwrap();
    can(
        &s,
        Method::POST,
        429,
        vec![
            ("retry-after", "1".into()),
            ("x-ratelimit-reset", "2025-06-01T10:16Z".into()),
            ("ratelimit-reason", "jira-per-issue-on-write".into()),
        ],
        "application/json",
        r#"{"errorMessages":["Rate limit exceeded."],"errors":{}}"#,
    );
    let started = Instant::now();
    a.update(&t, &inc, &ext, &[entry(5, "alert_added", "x")])
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    assert_eq!(seen(&s, Method::POST, "/comment").len(), 2);
    assert_eq!(issue(&s, "OPS-1").comments.len(), 1);
}

#[tokio::test]
async fn a_503_is_retried_and_then_the_create_succeeds_once() {
    let (a, t, s) = setup().await;
    can(
        &s,
        Method::POST,
        503,
        vec![],
        "text/html",
        "<html>Service Unavailable</html>",
    );
    let ext = a.create(&t, &incident("inc-0009")).await.unwrap();
    assert_eq!(ext.id, "OPS-1");
    assert_eq!(seen(&s, Method::POST, "/rest/api/3/issue").len(), 2);
    assert_eq!(s.lock().unwrap().issues.len(), 1);
}

#[tokio::test]
async fn a_200_with_an_html_login_page_is_an_error_not_an_empty_search() {
    let (url, s) = start().await;
    let yaml = format!(
        "url: {url}\nemail: {EMAIL}\napi_token: {TOKEN}\nproject: {PROJECT}\n\
         delivery: {{initial_backoff_ms: 10, max_backoff_ms: 20, max_elapsed_ms: 200}}\n"
    );
    let (a, t) = build(&yaml).unwrap();
    for _ in 0..200 {
        can(
            &s,
            Method::POST,
            200,
            vec![],
            "text/html",
            "<!DOCTYPE html><html><head><title>Log in with Atlassian account</title></head></html>",
        );
    }
    let err = a.find(&t, &incident("inc-0010")).await.unwrap_err();
    match &err {
        DeliveryError::Transient { reason, .. } => assert!(reason.contains("HTML"), "{reason}"),
        other => panic!("expected a transient error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_400_from_jira_is_permanent_not_retried_and_carries_jiras_message() {
    let (url, s) = start().await;
    let yaml = base_yaml(&url).replace("project: OPS", "project: NOPE");
    let (a, t) = build(&yaml).unwrap();
    let err = a.create(&t, &incident("inc-0011")).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(
        err.to_string().contains("valid project is required"),
        "{err}"
    );
    assert_eq!(seen(&s, Method::POST, "/issue").len(), 1);
}

#[tokio::test]
async fn fetch_reads_the_status_category_and_the_assignee() {
    let (a, t, s) = setup().await;
    let inc = incident("inc-0012");
    let ext = a.create(&t, &inc).await.unwrap();
    let got = a.fetch(&t, &ext).await.unwrap().unwrap();
    assert_eq!((got.state, got.changed_by), (TicketState::Open, None));

    for (status, expected) in [
        ("In Progress", TicketState::Acknowledged),
        ("Done", TicketState::Resolved),
    ] {
        {
            // A person works the issue in Jira.
            let mut st = s.lock().unwrap();
            let i = st.issues.iter_mut().find(|i| i.key == "OPS-1").unwrap();
            i.status = status.into();
            i.assignee = Some("Mia Krystof".into());
        }
        let got = a.fetch(&t, &ext).await.unwrap().unwrap();
        assert_eq!(got.state, expected, "{status}");
        assert_eq!(got.changed_by.as_deref(), Some("Mia Krystof"));
    }
}

#[tokio::test]
async fn wrong_credentials_are_a_permanent_401_without_the_token_in_the_error() {
    let (url, _s) = start().await;
    let yaml = base_yaml(&url).replace(TOKEN, "wrong-token");
    let (a, t) = build(&yaml).unwrap();
    let err = a.create(&t, &incident("inc-0013")).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(!err.to_string().contains("wrong-token"));
}

#[test]
fn invalid_configs_are_refused() {
    let ok = base_yaml("https://acme.atlassian.net");
    assert!(build(&ok).is_some());
    let cfg: Config = serde_norway::from_str(&ok).unwrap();
    assert!(!format!("{cfg:?}").contains(TOKEN), "no secret in Debug");
    for bad in [
        ok.replace(&format!("api_token: {TOKEN}\n"), ""),
        ok.replace("project: OPS", "project: \"\""),
        ok.replace("https://acme.atlassian.net", "acme.atlassian.net"),
        format!("{ok}labels: [\"has space\"]\n"),
        format!("{ok}priorities: {{7: Blocker}}\n"),
        format!("{ok}extra_fields: {{summary: x}}\n"),
        format!("{ok}transitions: {{resolved: []}}\n"),
        format!("{ok}summary: \"{{{{ incident.title \"\n"),
    ] {
        assert!(build(&bad).is_none(), "accepted: {bad}");
    }
    assert!(
        serde_norway::from_str::<Config>(&format!("{ok}transitions: {{resolve: Done}}\n")).is_err(),
        "unknown keys are refused"
    );
}
