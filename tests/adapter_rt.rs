//! The Request Tracker adapter, two ways:
//!
//! - contract tests against a local server that enforces RT 5 REST 2.0 as
//!   `RT/REST2.pm` documents it and a real RT 5.0.3 answers (paths, auth,
//!   content types, body fields and types, TicketSQL, the lifecycle, the
//!   answer shapes: `{"id": "20", ...}` on create, arrays of messages on PUT,
//!   `{"message": ...}` errors), keeping tickets in memory;
//! - end-to-end tests against a real RT: the one at `INCIDENTD_TEST_RT_URL`
//!   (user `INCIDENTD_TEST_RT_USER` / `INCIDENTD_TEST_RT_PASSWORD`, default
//!   root / password; optional `INCIDENTD_TEST_RT_TOKEN_FILE`), else one these
//!   tests start with `scripts/rt-server.sh` on a free port, stopped when the
//!   test binary exits. If neither works they fail, saying why.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::Utc;
use serde_json::{Value, json};

use incidentd::adapters::rt::{Config, Rt};
use incidentd::adapters::{Adapter, DeliveryError, ExternalRef, Target, TicketState};
use incidentd::config::Problems;
use incidentd::incident::{Incident, Policy, TimelineEntry};
use incidentd::rules::Level;

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

fn incident(id: &str) -> Incident {
    let now = Utc::now();
    Incident {
        description: "error_ratio=0.12 > 0.05 since 10:00".into(),
        priority: 1,
        urgency: Level::High,
        category: Some("software".into()),
        subcategory: Some("api".into()),
        configuration_items: vec!["api-gw-prod-1".into(), "api-gw-prod-2".into()],
        major: true,
        correlation_key: "itsmd-7f3c9a2e41b0".into(),
        created_at: now,
        updated_at: now,
        related: vec![],
        route: vec!["rt".into()],
        topology: Default::default(),
        alerts: vec![],
        timeline: vec![],
        last_activity: now,
        policy: Policy {
            window_s: 300,
            auto_resolve: true,
            resolve_after_s: 0,
            reopen_within_s: 3600,
            close_after_s: 86_400,
        },
        ..common::sample_incident(id)
    }
}

fn entry(event: &str, cause: &str) -> TimelineEntry {
    TimelineEntry {
        at: Utc::now(),
        event: event.into(),
        cause: cause.into(),
    }
}

fn metrics() -> Arc<incidentd::metrics::Metrics> {
    Arc::new(incidentd::metrics::Metrics::new(prometheus::Registry::new()).unwrap())
}

/// The adapter and its target, through `Config` parsed from YAML and `build`.
fn adapter(yaml: &str) -> (Rt, Target) {
    let cfg: Config = serde_norway::from_str(yaml).unwrap();
    let mut p = Problems::new(Path::new("t.yaml"), yaml);
    let rt = cfg
        .build("adapters.rt", Path::new("."), &mut p)
        .expect("the config is valid");
    let target = Target::new("rt", &cfg.delivery, metrics()).unwrap();
    (rt, target)
}

/// Whether `build` refuses the config.
fn refused(yaml: &str) -> bool {
    let cfg: Config = match serde_norway::from_str(yaml) {
        Ok(c) => c,
        Err(_) => return true,
    };
    let mut p = Problems::new(Path::new("t.yaml"), yaml);
    cfg.build("adapters.rt", Path::new("."), &mut p).is_none()
}

// ---------------------------------------------------------------------------
// The contract server
// ---------------------------------------------------------------------------

const TOKEN: &str = "1-14-0123456789abcdef0123456789abcdef";
const USER: &str = "incidentd";
const PASSWORD: &str = "s3cret-pw";
/// RT's default lifecycle (RT_Config.pm `%Lifecycles`); every status can move to every other.
const STATUSES: [&str; 6] = ["new", "open", "stalled", "resolved", "rejected", "deleted"];
/// `Tickets.Subject` is varchar(200).
const SUBJECT_MAX: usize = 200;

#[derive(Debug, Clone, Default)]
struct Ticket {
    queue: String,
    subject: String,
    content: String,
    priority: i64,
    status: String,
    owner: String,
    last_updated_by: String,
    requestors: Vec<String>,
    custom_fields: BTreeMap<String, String>,
    comments: Vec<String>,
}

/// A canned answer for the next request to `method path` (faults to inject).
struct Fault {
    method: Method,
    path: String,
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

#[derive(Default)]
struct RtState {
    tickets: BTreeMap<u64, Ticket>,
    next_id: u64,
    /// `METHOD path?query` of every request that passed auth.
    requests: Vec<String>,
    /// TicketSQL of every search.
    queries: Vec<String>,
    faults: VecDeque<Fault>,
    /// How long a read of one ticket (`GET /ticket/{id}`) takes to answer.
    fetch_delay: Duration,
    /// Queues that exist, with the ticket custom fields applied to them.
    queues: BTreeMap<String, Vec<String>>,
}

#[derive(Clone)]
struct Mock {
    state: Arc<Mutex<RtState>>,
    url: String,
}

impl Mock {
    async fn start() -> Mock {
        let mut st = RtState {
            next_id: 1,
            ..Default::default()
        };
        st.queues
            .insert("General".into(), vec!["IncidentId".into()]);
        st.queues.insert("Other".into(), vec![]);
        let state = Arc::new(Mutex::new(st));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Mock { state, url }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, RtState> {
        self.state.lock().unwrap()
    }

    fn ticket(&self, id: u64) -> Ticket {
        self.st().tickets[&id].clone()
    }

    fn fault(
        &self,
        method: Method,
        path: &str,
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: &str,
    ) {
        self.st().faults.push_back(Fault {
            method,
            path: path.into(),
            status,
            headers,
            body: body.into(),
        });
    }

    fn count(&self, method: &str, path: &str) -> usize {
        let want = format!("{method} {path}");
        self.st()
            .requests
            .iter()
            .filter(|r| r.split('?').next() == Some(want.as_str()))
            .count()
    }

    fn yaml(&self, extra: &str) -> String {
        format!(
            "url: {}\nqueue: General\ntoken: {TOKEN}\ndelivery: {{initial_backoff_ms: 10, max_backoff_ms: 50, max_elapsed_ms: 5000}}\n{extra}",
            self.url
        )
    }
}

fn answer(status: u16, body: Value) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response();
    if status == 201
        && let Some(id) = body.get("id").and_then(Value::as_str)
    {
        r.headers_mut().insert(
            "location",
            format!("/REST/2.0/ticket/{id}").parse().unwrap(),
        );
    }
    r
}

/// RT's error shape.
fn error(status: u16, message: &str) -> Response {
    answer(status, json!({ "message": message }))
}

fn authorized(headers: &HeaderMap) -> Option<String> {
    let h = headers.get("authorization")?.to_str().ok()?;
    if let Some(t) = h.strip_prefix("token ") {
        return (t == TOKEN).then(|| "root".to_string());
    }
    let b = h.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
    let (u, p) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    (u == USER && p == PASSWORD).then(|| u.to_string())
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().map(str::trim) == Some("application/json"))
}

fn link(base: &str, kind: &str, id: &str) -> Value {
    json!({"type": kind, "id": id, "_url": format!("{base}/REST/2.0/{kind}/{id}")})
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<RtState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(user) = authorized(&headers) else {
        return error(401, "Unauthorized");
    };
    let base = format!(
        "http://{}",
        headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("rt")
    );
    let delay = state.lock().unwrap().fetch_delay;
    let one_ticket = uri
        .path()
        .strip_prefix("/REST/2.0/ticket/")
        .is_some_and(|id| id.bytes().all(|b| b.is_ascii_digit()));
    if method == Method::GET && one_ticket && !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut st = state.lock().unwrap();
    st.requests.push(format!("{method} {uri}"));
    let path = uri.path().to_string();
    if let Some(i) = st
        .faults
        .iter()
        .position(|f| f.method == method && f.path == path)
    {
        let f = st.faults.remove(i).unwrap();
        let mut r = (StatusCode::from_u16(f.status).unwrap(), f.body).into_response();
        for (k, v) in f.headers {
            r.headers_mut().insert(k, v.parse().unwrap());
        }
        return r;
    }
    let Some(rest) = path.strip_prefix("/REST/2.0/") else {
        return error(404, "Not Found");
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["ticket"]) => create(&mut st, &base, &user, &headers, &body),
        ("GET", ["tickets"]) => search(&mut st, &base, &uri),
        ("GET", ["ticket", id]) => match id
            .parse::<u64>()
            .ok()
            .and_then(|id| st.tickets.get(&id).map(|t| (id, t)))
        {
            Some((id, t)) => answer(200, show(&base, id, t)),
            None => error(404, "Not Found"),
        },
        ("PUT", ["ticket", id]) => update(&mut st, id, &user, &headers, &body),
        ("POST", ["ticket", id, "comment"]) => comment(&mut st, id, &user, &headers, &body),
        _ => error(405, "Method Not Allowed"),
    }
}

fn create(st: &mut RtState, base: &str, user: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    if !is_json(headers) {
        return error(415, "Unsupported Media Type");
    }
    let Ok(Value::Object(b)) = serde_json::from_slice::<Value>(body) else {
        return error(400, "JSON object required");
    };
    let known = [
        "Queue",
        "Subject",
        "Content",
        "ContentType",
        "Priority",
        "Status",
        "Requestor",
        "CustomFields",
    ];
    if let Some(k) = b.keys().find(|k| !known.contains(&k.as_str())) {
        return error(400, &format!("contract: unexpected field {k}"));
    }
    let Some(queue) = b.get("Queue").and_then(Value::as_str) else {
        return error(400, "contract: Queue (string) is required");
    };
    let Some(cfs_of_queue) = st.queues.get(queue).cloned() else {
        return error(
            403,
            &format!("No permission to create tickets in the queue '{queue}'"),
        );
    };
    let subject = match b.get("Subject").and_then(Value::as_str) {
        Some(s)
            if !s.trim().is_empty() && s.chars().count() <= SUBJECT_MAX && !s.contains('\n') =>
        {
            s
        }
        _ => {
            return error(
                400,
                "contract: Subject must be one line of 1..=200 characters",
            );
        }
    };
    let content = match (
        b.get("Content"),
        b.get("ContentType").and_then(Value::as_str),
    ) {
        (Some(Value::String(c)), Some("text/plain")) => c.clone(),
        _ => {
            return error(
                400,
                "contract: Content (string) with ContentType text/plain",
            );
        }
    };
    let Some(priority) = b
        .get("Priority")
        .and_then(Value::as_i64)
        .filter(|p| (0..=100).contains(p))
    else {
        return error(400, "contract: Priority must be an integer 0..=100");
    };
    let status = b.get("Status").and_then(Value::as_str).unwrap_or("new");
    if !STATUSES.contains(&status) {
        return error(
            400,
            &format!("Status '{status}' isn't a valid status for tickets in this queue."),
        );
    }
    let requestors = match b.get("Requestor") {
        None => vec![],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(_) => {
            return error(
                400,
                "contract: Requestor is a string or an array of strings",
            );
        }
    };
    let mut custom_fields = BTreeMap::new();
    if let Some(cfs) = b.get("CustomFields") {
        let Some(cfs) = cfs.as_object() else {
            return error(400, "contract: CustomFields is an object");
        };
        for (k, v) in cfs {
            if !cfs_of_queue.contains(k) {
                return error(
                    400,
                    &format!("contract: custom field {k} does not apply to {queue}"),
                );
            }
            let Some(v) = v.as_str() else {
                return error(400, "contract: custom field values are strings");
            };
            custom_fields.insert(k.clone(), v.to_string());
        }
    }
    let id = st.next_id;
    st.next_id += 1;
    st.tickets.insert(
        id,
        Ticket {
            queue: queue.into(),
            subject: subject.into(),
            content,
            priority,
            status: status.into(),
            owner: "Nobody".into(),
            last_updated_by: user.into(),
            requestors,
            custom_fields,
            comments: vec![],
        },
    );
    answer(
        201,
        json!({"_url": format!("{base}/REST/2.0/ticket/{id}"), "type": "ticket", "id": id.to_string()}),
    )
}

fn show(base: &str, id: u64, t: &Ticket) -> Value {
    json!({
        "id": id,
        "Type": "ticket",
        "Queue": link(base, "queue", &t.queue),
        "Subject": t.subject,
        "Status": t.status,
        "Priority": t.priority.to_string(),
        "Owner": link(base, "user", &t.owner),
        "Creator": link(base, "user", "root"),
        "LastUpdatedBy": link(base, "user", &t.last_updated_by),
        "Requestor": t.requestors.iter().map(|r| link(base, "user", r)).collect::<Vec<_>>(),
        "CustomFields": t.custom_fields.iter().map(|(k, v)| json!({"name": k, "values": [v]})).collect::<Vec<_>>(),
        "_hyperlinks": [{"ref": "self", "type": "ticket", "id": id, "_url": format!("{base}/REST/2.0/ticket/{id}")}],
    })
}

/// A TicketSQL clause: `Field OP 'value'`.
struct Clause {
    field: String,
    op: String,
    value: String,
}

/// The TicketSQL subset a client may send: clauses joined by AND, each
/// `Field = | != | LIKE 'value'` with `\'` and `\\` escapes.
fn parse_ticketsql(q: &str) -> Result<Vec<Clause>, String> {
    let mut clauses = vec![];
    let mut rest = q.trim();
    loop {
        let (field, after) = rest.split_once(' ').ok_or("expected a field")?;
        let after = after.trim_start();
        let (op, after) = after.split_once(' ').ok_or("expected an operator")?;
        if !["=", "!=", "LIKE"].contains(&op) {
            return Err(format!("unknown operator {op}"));
        }
        let after = after.trim_start();
        let mut chars = after.char_indices();
        if chars.next().map(|(_, c)| c) != Some('\'') {
            return Err("values are quoted with '".into());
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.push(chars.next().ok_or("dangling escape")?.1),
                '\'' => {
                    end = Some(i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or("unterminated string")?;
        let known = ["Queue", "Subject", "Status"].contains(&field)
            || (field.starts_with("CF.{") && field.ends_with('}'));
        if !known {
            return Err(format!("Unknown field: {field}"));
        }
        clauses.push(Clause {
            field: field.into(),
            op: op.into(),
            value,
        });
        rest = after[end..].trim_start();
        if rest.is_empty() {
            return Ok(clauses);
        }
        rest = rest
            .strip_prefix("AND ")
            .ok_or("clauses are joined with AND")?;
    }
}

fn matches(t: &Ticket, c: &Clause) -> bool {
    let have = match c.field.as_str() {
        "Queue" => t.queue.clone(),
        "Subject" => t.subject.clone(),
        "Status" => t.status.clone(),
        cf => t
            .custom_fields
            .get(&cf[4..cf.len() - 1])
            .cloned()
            .unwrap_or_default(),
    };
    match c.op.as_str() {
        "=" => have == c.value,
        "!=" => have != c.value,
        // RT wraps LIKE values in % and compares case-insensitively.
        _ => have.to_lowercase().contains(&c.value.to_lowercase()),
    }
}

fn search(st: &mut RtState, base: &str, uri: &Uri) -> Response {
    let params: BTreeMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    let Some(query) = params.get("query") else {
        return error(400, "contract: query is required");
    };
    st.queries.push(query.clone());
    let clauses = match parse_ticketsql(query) {
        Ok(c) => c,
        Err(e) => return error(400, &e),
    };
    let fields: Vec<&str> = params
        .get("fields")
        .map(|f| f.split(',').collect())
        .unwrap_or_default();
    let mut items: Vec<(u64, &Ticket)> = st
        .tickets
        .iter()
        .filter(|(_, t)| clauses.iter().all(|c| matches(t, c)))
        .map(|(id, t)| (*id, t))
        .collect();
    if params.get("order").map(String::as_str) == Some("DESC") {
        items.reverse();
    }
    let per_page: usize = params
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(20);
    let total = items.len();
    let items: Vec<Value> = items
        .into_iter()
        .take(per_page)
        .map(|(id, t)| {
            let mut v = link(base, "ticket", &id.to_string());
            for f in &fields {
                match *f {
                    "Subject" => v["Subject"] = json!(t.subject),
                    "Status" => v["Status"] = json!(t.status),
                    _ => {}
                }
            }
            v
        })
        .collect();
    answer(
        200,
        json!({"count": items.len(), "total": total, "page": 1, "pages": 1, "per_page": per_page, "items": items}),
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(
                    u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap(),
                );
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn update(st: &mut RtState, id: &str, user: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    if !is_json(headers) {
        return error(415, "Unsupported Media Type");
    }
    let Some(t) = id
        .parse::<u64>()
        .ok()
        .and_then(|id| st.tickets.get_mut(&id))
    else {
        return error(404, "Resource does not exist; use POST to create");
    };
    let Ok(Value::Object(b)) = serde_json::from_slice::<Value>(body) else {
        return error(400, "JSON object required");
    };
    if let Some(k) = b
        .keys()
        .find(|k| !["Subject", "Priority", "Status"].contains(&k.as_str()))
    {
        return error(400, &format!("contract: unexpected field {k}"));
    }
    // RT: 200 and one message per change or refusal; nothing for unchanged values.
    let mut messages = vec![];
    if let Some(s) = b.get("Subject") {
        match s.as_str() {
            Some(s)
                if !s.trim().is_empty()
                    && s.chars().count() <= SUBJECT_MAX
                    && !s.contains('\n') =>
            {
                if s != t.subject {
                    messages.push(format!(
                        "Ticket {id}: Subject changed from '{}' to '{s}'",
                        t.subject
                    ));
                    t.subject = s.into();
                }
            }
            _ => {
                return error(
                    400,
                    "contract: Subject must be one line of 1..=200 characters",
                );
            }
        }
    }
    if let Some(p) = b.get("Priority") {
        match p.as_i64().filter(|p| (0..=100).contains(p)) {
            Some(p) => {
                if p != t.priority {
                    messages.push(format!(
                        "Ticket {id}: Priority changed from '{}' to '{p}'",
                        t.priority
                    ));
                    t.priority = p;
                }
            }
            None => return error(400, "contract: Priority must be an integer 0..=100"),
        }
    }
    if let Some(s) = b.get("Status") {
        let Some(s) = s.as_str() else {
            return error(400, "contract: Status is a string");
        };
        if !STATUSES.contains(&s) {
            messages.push(format!(
                "Ticket {id}: Status '{s}' isn't a valid status for this ticket."
            ));
        } else if s != t.status {
            messages.push(format!(
                "Ticket {id}: Status changed from '{}' to '{s}'",
                t.status
            ));
            t.status = s.into();
        }
    }
    if !messages.is_empty() {
        t.last_updated_by = user.into();
    }
    answer(200, json!(messages))
}

fn comment(st: &mut RtState, id: &str, user: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let Some(t) = id
        .parse::<u64>()
        .ok()
        .and_then(|id| st.tickets.get_mut(&id))
    else {
        // What RT 5.0.3 answers for a ticket that does not exist.
        return error(400, "Message could not be recorded");
    };
    let content = if is_json(headers) {
        let Ok(b) = serde_json::from_slice::<Value>(body) else {
            return error(400, "JSON object required");
        };
        match (
            b.get("Content").and_then(Value::as_str),
            b.get("ContentType").and_then(Value::as_str),
        ) {
            (Some(c), Some(_)) => c.to_string(),
            (Some(_), None) => {
                return error(400, "ContentType is a required field for application/json");
            }
            (None, _) => return error(400, "contract: a comment without Content"),
        }
    } else if headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"))
    {
        String::from_utf8_lossy(body).into_owned()
    } else {
        return error(415, "Unsupported Media Type");
    };
    t.comments.push(content);
    t.last_updated_by = user.into();
    answer(201, json!(["Comments added"]))
}

// ---------------------------------------------------------------------------
// Contract tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn create_posts_queue_subject_content_priority_and_status_new_with_a_token() {
    let rt = Mock::start().await;
    let (a, target) =
        adapter(&rt.yaml(
            "requestors: [noc@example.com]\ncustom_fields: {IncidentId: \"{{ incident.id }}\"}",
        ));
    let inc = incident("inc-0001");
    let ext = a.create(&target, &inc).await.unwrap();
    assert_eq!(
        ext,
        ExternalRef {
            id: "1".into(),
            display: "#1".into(),
            url: Some(format!("{}/Ticket/Display.html?id=1", rt.url)),
        }
    );
    let t = rt.ticket(1);
    assert_eq!(t.queue, "General");
    assert_eq!(t.subject, "[inc-0001] High error rate on api-gateway");
    assert_eq!(t.priority, 100, "P1 is RT's High");
    assert_eq!(t.status, "new");
    assert_eq!(t.requestors, vec!["noc@example.com"]);
    assert_eq!(t.custom_fields["IncidentId"], "inc-0001");
    for line in [
        "error_ratio=0.12 > 0.05 since 10:00",
        "Incident: inc-0001",
        "Priority: P1 (impact high, urgency high), major incident",
        "Category: software / api",
        "Service: api-gateway",
        "Assignment group: sre",
        "Configuration items: api-gw-prod-1, api-gw-prod-2",
        "Rule: high-error-rate",
        "Alerts: 2",
    ] {
        assert!(
            t.content.lines().any(|l| l == line),
            "{line:?} not in\n{}",
            t.content
        );
    }
}

#[tokio::test]
async fn basic_auth_from_a_password_file_is_accepted_and_a_wrong_password_is_permanent_401() {
    let rt = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let base = format!(
        "url: {}/\nqueue: General\nuser: {USER}\ndelivery: {{initial_backoff_ms: 10, max_elapsed_ms: 2000}}\n",
        rt.url
    );
    let (a, target) = adapter(&format!("{base}password_file: {}\n", pw.display()));
    let ext = a.create(&target, &incident("inc-basic")).await.unwrap();
    assert_eq!(ext.id, "1");

    let (a, target) = adapter(&format!("{base}password: wrong\n"));
    let err = a
        .create(&target, &incident("inc-basic-2"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "the password is not in the error: {err}"
    );
    assert_eq!(rt.st().tickets.len(), 1);
}

#[tokio::test]
async fn find_before_create_finds_the_ticket_a_lost_create_made_and_no_second_one_is_made() {
    let rt = Mock::start().await;
    let (a, target) = adapter(&rt.yaml(""));
    let inc = incident("inc-0190aa");
    assert_eq!(a.find(&target, &inc).await.unwrap(), None, "nothing yet");
    // The create went through but its answer was lost.
    let _lost = a.create(&target, &inc).await.unwrap();
    let found = a
        .find(&target, &inc)
        .await
        .unwrap()
        .expect("the lost ticket");
    assert_eq!(found.id, "1");
    assert_eq!(rt.st().tickets.len(), 1);
    assert_eq!(
        rt.st().queries.last().unwrap(),
        "Queue = 'General' AND Subject LIKE 'inc-0190aa' AND Status != 'rejected' AND Status != 'deleted'"
    );

    // LIKE matches substrings: another incident whose id extends this one's is not it.
    assert_eq!(a.find(&target, &incident("inc-0190a")).await.unwrap(), None);
    // A resolved ticket is still the incident's (reused, then reopened); a rejected one is not.
    rt.st().tickets.get_mut(&1).unwrap().status = "resolved".into();
    assert_eq!(
        a.find(&target, &inc).await.unwrap().map(|e| e.id),
        Some("1".into())
    );
    rt.st().tickets.get_mut(&1).unwrap().status = "rejected".into();
    assert_eq!(a.find(&target, &inc).await.unwrap(), None);
}

#[tokio::test]
async fn find_ignores_tickets_of_other_queues_and_picks_the_oldest_match() {
    let rt = Mock::start().await;
    let (other, target) = adapter(&rt.yaml("").replace("queue: General", "queue: Other"));
    let inc = incident("inc-q");
    other.create(&target, &inc).await.unwrap(); // #1 in Other
    let (a, target) = adapter(&rt.yaml(""));
    assert_eq!(a.find(&target, &inc).await.unwrap(), None);
    a.create(&target, &inc).await.unwrap(); // #2
    a.create(&target, &inc).await.unwrap(); // #3, a duplicate from an older bug
    assert_eq!(a.find(&target, &inc).await.unwrap().unwrap().id, "2");
}

#[tokio::test]
async fn find_by_custom_field_sets_the_field_and_searches_it() {
    let rt = Mock::start().await;
    let (a, target) =
        adapter(&rt.yaml("find_by_custom_field: IncidentId\nsubject: \"{{ incident.title }}\""));
    let inc = incident("inc-cf-1");
    a.create(&target, &inc).await.unwrap();
    let t = rt.ticket(1);
    assert_eq!(t.subject, "High error rate on api-gateway");
    assert_eq!(t.custom_fields["IncidentId"], "inc-cf-1");
    assert_eq!(a.find(&target, &inc).await.unwrap().unwrap().id, "1");
    assert_eq!(
        rt.st().queries.last().unwrap(),
        "Queue = 'General' AND CF.{IncidentId} = 'inc-cf-1' AND Status != 'rejected' AND Status != 'deleted'"
    );
    assert_eq!(a.find(&target, &incident("inc-cf-10")).await.unwrap(), None);
}

#[tokio::test]
async fn update_sets_subject_and_priority_and_adds_each_timeline_entry_as_a_comment() {
    let rt = Mock::start().await;
    let (a, target) = adapter(&rt.yaml(""));
    let mut inc = incident("inc-upd");
    let ext = a.create(&target, &inc).await.unwrap();
    inc.title = "High error rate on api-gateway and checkout".into();
    inc.priority = 3;
    let entries = [
        entry(
            "alert_added",
            "alert HighErrorRate{service=checkout} joined",
        ),
        entry("acknowledged", "acknowledged by José — on it ✓"),
    ];
    a.update(&target, &inc, &ext, &entries).await.unwrap();
    let t = rt.ticket(1);
    assert_eq!(
        t.subject,
        "[inc-upd] High error rate on api-gateway and checkout"
    );
    assert_eq!(t.priority, 50, "P3 is RT's Medium");
    assert_eq!(t.comments.len(), 2);
    assert!(
        t.comments[0].ends_with(" alert_added: alert HighErrorRate{service=checkout} joined"),
        "{}",
        t.comments[0]
    );
    assert!(
        t.comments[1].ends_with(" acknowledged: acknowledged by José — on it ✓"),
        "{}",
        t.comments[1]
    );
    assert!(
        t.comments[0].starts_with("incidentd 20"),
        "{}",
        t.comments[0]
    );

    // Nothing changed and nothing new: RT answers [] and that is fine.
    a.update(&target, &inc, &ext, &[]).await.unwrap();
    assert_eq!(rt.ticket(1).comments.len(), 2);

    // update_fields: [] leaves subject and priority to the people in RT.
    let (fixed, target) = adapter(&rt.yaml("update_fields: []"));
    let puts = rt.count("PUT", "/REST/2.0/ticket/1");
    fixed
        .update(&target, &inc, &ext, &[entry("alert_resolved", "x")])
        .await
        .unwrap();
    assert_eq!(rt.count("PUT", "/REST/2.0/ticket/1"), puts);
    assert_eq!(rt.ticket(1).comments.len(), 3);
}

#[tokio::test]
async fn a_long_title_is_cut_to_rt_subject_length_keeping_the_id() {
    let rt = Mock::start().await;
    let (a, target) = adapter(&rt.yaml(""));
    let mut inc = incident("inc-long");
    inc.title = "x".repeat(500);
    a.create(&target, &inc).await.unwrap();
    let t = rt.ticket(1);
    assert_eq!(t.subject.chars().count(), 200);
    assert!(t.subject.starts_with("[inc-long] xxx") && t.subject.ends_with('…'));
    assert_eq!(a.find(&target, &inc).await.unwrap().unwrap().id, "1");
}

#[tokio::test]
async fn acknowledge_resolve_close_and_reopen_move_the_rt_status() {
    let rt = Mock::start().await;
    let (a, target) = adapter(&rt.yaml(""));
    let inc = incident("inc-life");
    let ext = a.create(&target, &inc).await.unwrap();
    let status = |rt: &Mock| rt.ticket(1).status;

    a.transition(&target, &inc, &ext, TicketState::Acknowledged)
        .await
        .unwrap();
    assert_eq!(status(&rt), "open");
    a.transition(&target, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    assert_eq!(status(&rt), "resolved");
    // RT has no closed apart from resolved: closing a resolved ticket changes nothing.
    a.transition(&target, &inc, &ext, TicketState::Closed)
        .await
        .unwrap();
    assert_eq!(status(&rt), "resolved");
    a.transition(&target, &inc, &ext, TicketState::Open)
        .await
        .unwrap();
    assert_eq!(status(&rt), "open", "reopened");
    assert_eq!(rt.st().tickets.len(), 1);

    // A configured status for closed.
    let (b, target) = adapter(&rt.yaml("statuses: {closed: rejected}"));
    b.transition(&target, &inc, &ext, TicketState::Closed)
        .await
        .unwrap();
    assert_eq!(status(&rt), "rejected");
}

#[tokio::test]
async fn fetch_reads_the_status_and_who_changed_it_last() {
    let rt = Mock::start().await;
    let (a, target) = adapter(&rt.yaml(""));
    let inc = incident("inc-fetch");
    let ext = a.create(&target, &inc).await.unwrap();
    let fetched = a.fetch(&target, &ext).await.unwrap().unwrap();
    assert_eq!(fetched.state, TicketState::Open);
    assert_eq!(fetched.changed_by.as_deref(), Some("root"));

    // incidentd's own acknowledge writes an unowned `open`: not a person's acknowledgement.
    a.transition(&target, &inc, &ext, TicketState::Acknowledged)
        .await
        .unwrap();
    assert_eq!(
        a.fetch(&target, &ext).await.unwrap().unwrap().state,
        TicketState::Open
    );

    let set = |status: &str, owner: &str, by: &str| {
        let mut st = rt.st();
        let t = st.tickets.get_mut(&1).unwrap();
        t.status = status.into();
        t.owner = owner.into();
        t.last_updated_by = by.into();
    };
    for (status, owner, want) in [
        ("new", "alice", TicketState::Acknowledged),
        ("open", "alice", TicketState::Acknowledged),
        ("stalled", "Nobody", TicketState::Acknowledged),
        ("resolved", "alice", TicketState::Resolved),
        ("rejected", "Nobody", TicketState::Closed),
        ("deleted", "Nobody", TicketState::Closed),
    ] {
        set(status, owner, "alice");
        let got = a.fetch(&target, &ext).await.unwrap().unwrap();
        assert_eq!(
            (got.state, got.changed_by.as_deref()),
            (want, Some("alice")),
            "{status} owned by {owner}"
        );
    }
    // A ticket that is gone cannot be read back.
    let gone = ExternalRef {
        id: "99".into(),
        display: "#99".into(),
        url: None,
    };
    assert_eq!(a.fetch(&target, &gone).await.unwrap(), None);
}

/// A delivery worker over a memory store with one `rt` adapter on `rt`, an
/// incident routed to it, and the ticket the worker made for it.
async fn worker_with_a_ticket(
    rt: &Mock,
    id: &str,
) -> (
    incidentd::store::SharedStore,
    Arc<incidentd::outbox::worker::Worker>,
    Arc<incidentd::metrics::Metrics>,
) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "store:\n  url: memory\nadapters:\n  rt:\n    type: rt\n{}",
        rt.yaml("")
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    let (store, worker, metrics) = common::memory_worker(dir.path(), &yaml);
    let worker = Arc::new(worker);
    let mut inc = incident(id);
    inc.state = incidentd::incident::IncidentState::New;
    inc.version = 1;
    common::commit_next(&store, &inc).await;
    assert!(worker.handle(id).await, "the ticket is made");
    assert_eq!(rt.ticket(1).status, "new");
    (store, worker, metrics)
}

/// One read-back pass over every ticket, started.
fn read_back_in_the_background(
    worker: &Arc<incidentd::outbox::worker::Worker>,
) -> tokio::task::JoinHandle<Result<(), incidentd::store::StoreError>> {
    let worker = worker.clone();
    tokio::spawn(async move { worker.poll_remote().await })
}

/// The person's resolve of ticket 1, as RT records it.
fn resolve_by_alice(rt: &Mock) {
    let mut st = rt.st();
    let t = st.tickets.get_mut(&1).unwrap();
    t.status = "resolved".into();
    t.last_updated_by = "alice".into();
}

#[tokio::test]
async fn a_slow_read_back_leaves_the_ticket_free_for_a_delivery_and_applies_the_change_it_read() {
    let rt = Mock::start().await;
    let (store, worker, _) = worker_with_a_ticket(&rt, "inc-slow-read").await;
    resolve_by_alice(&rt);
    rt.st().fetch_delay = Duration::from_millis(1500);
    let poll = read_back_in_the_background(&worker);
    // While RT takes its time answering the read-back, a delivery can take
    // the ticket's lease: holding it for the whole fetch starved deliveries.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poll.is_finished(), "the read-back is still fetching");
    let ttl = Duration::from_secs(5);
    assert!(
        store
            .try_lease("inc-slow-read:rt", "a-delivery", ttl)
            .await
            .unwrap(),
        "the read-back holds the ticket's lease while it fetches"
    );
    store
        .release_lease("inc-slow-read:rt", "a-delivery")
        .await
        .unwrap();
    poll.await.unwrap().unwrap();
    let inc = store.get_incident("inc-slow-read").await.unwrap().unwrap();
    assert_eq!(inc.state, incidentd::incident::IncidentState::Resolved);
    assert_eq!(inc.closed_by.as_deref(), Some("alice in rt"));
}

#[tokio::test]
async fn a_ticket_change_read_while_a_delivery_moved_the_ticket_is_not_taken_for_a_persons() {
    let rt = Mock::start().await;
    let (store, worker, _) = worker_with_a_ticket(&rt, "inc-moved").await;
    resolve_by_alice(&rt);
    rt.st().fetch_delay = Duration::from_millis(1000);
    let poll = read_back_in_the_background(&worker);
    // A delivery resolves the ticket itself while the read-back fetches, and
    // records it: what the read-back fetched is incidentd's own move.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut st = store.get_sync("inc-moved", "rt").await.unwrap().unwrap();
    st.remote = Some(TicketState::Resolved);
    st.version += 1;
    store.put_sync("inc-moved", "rt", &st).await.unwrap();
    poll.await.unwrap().unwrap();
    let inc = store.get_incident("inc-moved").await.unwrap().unwrap();
    assert_eq!(
        inc.state,
        incidentd::incident::IncidentState::New,
        "{inc:?}"
    );
    assert_eq!(inc.closed_by, None);
}

#[tokio::test]
async fn a_delivery_to_a_ticket_leased_elsewhere_waits_is_counted_and_goes_through_later() {
    let rt = Mock::start().await;
    let (store, worker, metrics) = worker_with_a_ticket(&rt, "inc-busy").await;
    let mut inc = store.get_incident("inc-busy").await.unwrap().unwrap();
    let ttl = Duration::from_secs(5);
    assert!(
        store
            .try_lease("inc-busy:rt", "elsewhere", ttl)
            .await
            .unwrap()
    );
    inc.state = incidentd::incident::IncidentState::Resolved;
    inc.version += 1;
    common::commit_next(&store, &inc).await;
    let busy = || metrics.deliveries.with_label_values(&["rt", "busy"]).get();
    assert!(!worker.handle("inc-busy").await, "its entries stay pending");
    assert_eq!((busy(), rt.ticket(1).status.as_str()), (1, "new"));
    store
        .release_lease("inc-busy:rt", "elsewhere")
        .await
        .unwrap();
    assert!(worker.handle("inc-busy").await);
    assert_eq!((busy(), rt.ticket(1).status.as_str()), (1, "resolved"));
}

#[tokio::test]
async fn a_delivery_that_finds_its_ticket_busy_goes_through_once_the_holder_lets_go() {
    let rt = Mock::start().await;
    let (store, worker, metrics) = worker_with_a_ticket(&rt, "inc-let-go").await;
    let mut inc = store.get_incident("inc-let-go").await.unwrap().unwrap();
    let lease = "inc-let-go:rt";
    assert!(
        store
            .try_lease(lease, "elsewhere", Duration::from_secs(5))
            .await
            .unwrap()
    );
    inc.state = incidentd::incident::IncidentState::Resolved;
    inc.version += 1;
    common::commit_next(&store, &inc).await;
    // The other delivery finishes a moment after this one first tries.
    let holder = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            store.release_lease(lease, "elsewhere").await.unwrap();
        })
    };
    assert!(
        worker.handle("inc-let-go").await,
        "delivered now, not on reclaim"
    );
    holder.await.unwrap();
    let busy = metrics.deliveries.with_label_values(&["rt", "busy"]).get();
    assert_eq!((busy, rt.ticket(1).status.as_str()), (0, "resolved"));
}

#[tokio::test]
async fn rate_limited_429_with_retry_after_is_retried_then_succeeds() {
    let rt = Mock::start().await;
    let (a, target) = adapter(&rt.yaml(""));
    rt.fault(
        Method::POST,
        "/REST/2.0/ticket",
        429,
        vec![("retry-after", "1".into())],
        "Too Many Requests",
    );
    let started = Instant::now();
    let ext = a.create(&target, &incident("inc-429")).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    assert_eq!(ext.id, "1");
    assert_eq!(rt.count("POST", "/REST/2.0/ticket"), 2);
    assert_eq!(rt.st().tickets.len(), 1);
}

#[tokio::test]
async fn server_error_then_success_is_retried() {
    let rt = Mock::start().await;
    let (a, target) = adapter(&rt.yaml(""));
    let inc = incident("inc-5xx");
    let ext = a.create(&target, &inc).await.unwrap();
    rt.fault(
        Method::PUT,
        "/REST/2.0/ticket/1",
        503,
        vec![],
        "<html>Service Unavailable</html>",
    );
    a.transition(&target, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    assert_eq!(rt.ticket(1).status, "resolved");
    assert_eq!(rt.count("PUT", "/REST/2.0/ticket/1"), 2);
}

#[tokio::test]
async fn ok_answers_that_report_a_refusal_or_are_not_rt_json_are_errors() {
    let rt = Mock::start().await;
    // `solved` is no status of RT's default lifecycle: RT answers 200 with a refusal message.
    let (a, target) = adapter(&rt.yaml("statuses: {resolved: solved}"));
    let inc = incident("inc-200err");
    let ext = a.create(&target, &inc).await.unwrap();
    let err = a
        .transition(&target, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Permanent { reason, .. } if reason.contains("Status 'solved' isn't a valid status")),
        "{err:?}"
    );
    assert_eq!(rt.ticket(1).status, "new");

    // A 200 that is not RT's JSON (an SSO proxy's login page) is retried, then an error.
    let (a, target) = adapter(
        &rt.yaml("")
            .replace("max_elapsed_ms: 5000", "max_elapsed_ms: 300"),
    );
    for _ in 0..50 {
        rt.fault(
            Method::GET,
            "/REST/2.0/ticket/1",
            200,
            vec![],
            "<html>Please log in</html>",
        );
    }
    let err = a.fetch(&target, &ext).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Transient { .. }), "{err:?}");
    assert!(rt.count("GET", "/REST/2.0/ticket/1") >= 2, "retried");
}

#[tokio::test]
async fn bad_request_is_permanent_with_rt_message_and_status() {
    let rt = Mock::start().await;
    let (a, target) = adapter(&rt.yaml("statuses: {new: fresh}"));
    let err = a.create(&target, &incident("inc-400")).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err:?}");
    assert!(
        err.to_string()
            .contains("isn't a valid status for tickets in this queue"),
        "{err}"
    );
    assert_eq!(rt.count("POST", "/REST/2.0/ticket"), 1, "not retried");

    let (a, target) = adapter(&rt.yaml("").replace("queue: General", "queue: Nope"));
    let err = a.create(&target, &incident("inc-403")).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err:?}");
}

#[tokio::test]
async fn a_ticket_gone_from_rt_is_done_for_update_resolve_and_close_but_not_for_reopen() {
    let rt = Mock::start().await;
    let (a, target) = adapter(&rt.yaml(""));
    let inc = incident("inc-gone");
    let gone = ExternalRef {
        id: "42".into(),
        display: "#42".into(),
        url: None,
    };
    a.update(&target, &inc, &gone, &[]).await.unwrap();
    a.transition(&target, &inc, &gone, TicketState::Resolved)
        .await
        .unwrap();
    a.transition(&target, &inc, &gone, TicketState::Closed)
        .await
        .unwrap();
    let err = a
        .transition(&target, &inc, &gone, TicketState::Open)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    // Not an RT ticket id at all: refused before any request.
    let bad = ExternalRef {
        id: "1/../../users".into(),
        display: String::new(),
        url: None,
    };
    assert!(matches!(
        a.transition(&target, &inc, &bad, TicketState::Resolved)
            .await,
        Err(DeliveryError::Permanent { status: None, .. })
    ));
}

#[test]
fn config_is_validated() {
    let ok = "url: http://rt.example.com\nqueue: General\ntoken: t\n";
    assert!(!refused(ok));
    for (bad, why) in [
        (
            "url: ftp://rt.example.com\nqueue: General\ntoken: t\n".to_string(),
            "not http",
        ),
        (
            "url: http://rt.example.com\nqueue: ''\ntoken: t\n".to_string(),
            "empty queue",
        ),
        (
            "url: http://rt.example.com\nqueue: General\n".to_string(),
            "no auth",
        ),
        (
            "url: http://rt.example.com\nqueue: General\ntoken: t\nuser: u\npassword: p\n"
                .to_string(),
            "two auths",
        ),
        (
            "url: http://rt.example.com\nqueue: General\npassword: p\n".to_string(),
            "password without user",
        ),
        (
            "url: http://rt.example.com\nqueue: General\ntoken: t\ntoken_file: /nonexistent\n"
                .to_string(),
            "token twice",
        ),
        (
            format!("{ok}subject: \"{{{{ incident.title }}}}\"\n"),
            "subject without the id",
        ),
        (
            format!("{ok}subject: \"{{{{ incident.id \"\n"),
            "template syntax",
        ),
        (format!("{ok}priorities: {{6: 10}}\n"), "priority 6"),
        (
            format!("{ok}statuses: {{done: resolved}}\n"),
            "unknown state",
        ),
        (format!("{ok}statuses: {{resolved: ''}}\n"), "empty status"),
        (
            format!("{ok}update_fields: [owner]\n"),
            "unknown update field",
        ),
        (
            format!("{ok}find_by_custom_field: \"Id}}\"\n"),
            "CF name TicketSQL cannot quote",
        ),
        (format!("{ok}colour: blue\n"), "unknown key"),
        (
            "url: http://rt.example.com\nqueue: General\ntoken: \"a\\nb\"\n".to_string(),
            "token no header can carry",
        ),
        (
            format!("{ok}custom_fields: {{\"CF.{{x}}\": y}}\n"),
            "custom field name with braces",
        ),
    ] {
        assert!(refused(&bad), "{why}: {bad}");
    }
    assert!(!refused(&format!(
        "{ok}find_by_custom_field: IncidentId\nsubject: \"{{{{ incident.title }}}}\"\npriorities: {{1: 99}}\n"
    )));
}

#[test]
fn an_rt_block_in_the_config_file_builds_an_rt_adapter_and_places_its_errors() {
    let text = "adapters:\n  tickets:\n    type: rt\n    url: https://rt.example.com/rt\n    queue: General\n    token: ${RT_TOKEN}\n";
    let env = |k: &str| (k == "RT_TOKEN").then(|| "1-2-abc".to_string());
    let cfg = incidentd::config::parse(
        Path::new("incidentd.yaml"),
        text,
        &incidentd::config::Overrides::default(),
        env,
    )
    .unwrap();
    assert_eq!(cfg.adapters.len(), 1);
    assert_eq!(cfg.adapters[0].name, "tickets");
    assert_eq!(cfg.adapters[0].adapter.kind(), "rt");

    let bad = format!("{text}    subject: \"{{{{ incident.title }}}}\"\n");
    let err = incidentd::config::parse(
        Path::new("incidentd.yaml"),
        &bad,
        &incidentd::config::Overrides::default(),
        env,
    )
    .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(
        err.0[0]
            .message
            .starts_with("adapters.tickets.subject: must include"),
        "{err}"
    );
    assert_eq!(err.0[0].line, Some(7));
    assert!(!err.to_string().contains("1-2-abc"));
}

// ---------------------------------------------------------------------------
// End to end against a real RT
// ---------------------------------------------------------------------------

struct RealRt {
    url: String,
    user: String,
    password: String,
    token_file: Option<PathBuf>,
}

/// The RT of the test run: `INCIDENTD_TEST_RT_URL`, else one started here
/// with `scripts/rt-server.sh` (stopped by the script's watcher once this
/// process exits).
fn real_rt() -> &'static RealRt {
    static RT: OnceLock<Result<RealRt, String>> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(url) = env("INCIDENTD_TEST_RT_URL") {
            return Ok(RealRt {
                url: url.trim_end_matches('/').to_string(),
                user: env("INCIDENTD_TEST_RT_USER").unwrap_or_else(|| "root".into()),
                password: env("INCIDENTD_TEST_RT_PASSWORD").unwrap_or_else(|| "password".into()),
                token_file: env("INCIDENTD_TEST_RT_TOKEN_FILE").map(PathBuf::from),
            });
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let work = std::env::temp_dir().join(format!("incidentd-rt-{}-{port}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rt-server.sh");
        let started = Instant::now();
        let status = std::process::Command::new(&script)
            .arg("start")
            .arg(port.to_string())
            .arg(&work)
            .env("RT_SERVER_WATCH_PID", std::process::id().to_string())
            .status()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !status.success() {
            return Err(format!(
                "INCIDENTD_TEST_RT_URL is not set and `{} start {port} {}` failed ({status}); \
                 run the suite with scripts/test.sh or start RT yourself",
                script.display(),
                work.display()
            ));
        }
        eprintln!(
            "adapter_rt: started RT in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(RealRt {
            url: format!("http://127.0.0.1:{port}"),
            user: "root".into(),
            password: "password".into(),
            token_file: Some(work.join("root.token")),
        })
    });
    match rt {
        Ok(rt) => rt,
        Err(e) => panic!("no real RT for the end-to-end tests: {e}"),
    }
}

/// One end-to-end test at a time: they share one RT on SQLite.
static E2E: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An incident id no earlier run against the same RT used.
fn unique_id(tag: &str) -> String {
    format!("inc-e2e{tag}{}", Utc::now().timestamp_micros())
}

impl RealRt {
    /// The adapter: token auth when the RT's root token is at hand (the header
    /// format is then proven against RT itself), else basic auth.
    fn adapter(&self, extra: &str) -> (Rt, Target) {
        let auth = match &self.token_file {
            Some(f) if f.exists() => format!("token_file: {}\n", f.display()),
            _ => format!("user: {}\npassword: {}\n", self.user, self.password),
        };
        adapter(&format!(
            "url: {}\nqueue: General\n{auth}delivery: {{initial_backoff_ms: 50, max_elapsed_ms: 20000}}\n{extra}",
            self.url
        ))
    }

    /// A direct REST 2.0 call, as `as_user` (root when `None`).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        as_user: Option<(&str, &str)>,
    ) -> (u16, Value) {
        let (u, p) = as_user.unwrap_or((self.user.as_str(), self.password.as_str()));
        let mut r = reqwest::Client::new()
            .request(method, format!("{}/REST/2.0{path}", self.url))
            .basic_auth(u, Some(p));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn ticket(&self, id: &str) -> Value {
        let (s, t) = self
            .call(Method::GET, &format!("/ticket/{id}"), None, None)
            .await;
        assert_eq!(s, 200, "{t}");
        t
    }

    /// Ids of the General tickets whose subject mentions `text`, any status.
    async fn tickets_mentioning(&self, text: &str) -> Vec<String> {
        let q = format!("Queue = 'General' AND Subject LIKE '{text}'");
        let (s, v) = self
            .call(
                Method::GET,
                &format!("/tickets?query={}", urlencode(&q)),
                None,
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Contents of the ticket's comments, oldest first.
    async fn comments(&self, id: &str) -> Vec<String> {
        let (_, h) = self
            .call(
                Method::GET,
                &format!("/ticket/{id}/history?fields=Type&per_page=100"),
                None,
                None,
            )
            .await;
        let mut out = vec![];
        for txn in h["items"].as_array().unwrap() {
            if txn["Type"] != "Comment" {
                continue;
            }
            let tid = txn["id"].as_str().unwrap();
            let (_, a) = self
                .call(
                    Method::GET,
                    &format!("/transaction/{tid}/attachments?fields=Content"),
                    None,
                    None,
                )
                .await;
            for att in a["items"].as_array().unwrap() {
                if let Some(c) = att["Content"].as_str().filter(|c| !c.is_empty()) {
                    out.push(c.trim_end().to_string());
                }
            }
        }
        out
    }

    /// A privileged RT user who is not root (the rights come from rt-server.sh's initialdata).
    async fn operator(&self) -> (String, String) {
        let name = format!("op{}", Utc::now().timestamp_micros());
        let password = uuid::Uuid::now_v7().simple().to_string();
        let (s, v) = self
            .call(
                Method::POST,
                "/user",
                Some(json!({"Name": name, "Password": password, "Privileged": 1, "EmailAddress": format!("{name}@example.invalid")})),
                None,
            )
            .await;
        assert_eq!(s, 201, "creating an operator: {v}");
        (name, password)
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn real_rt_one_incident_is_one_ticket_through_create_update_resolve_and_reopen() {
    let _one = E2E.lock().await;
    let rt = real_rt();
    let (a, target) = rt.adapter("");
    let mut inc = incident(&unique_id("life"));

    assert_eq!(a.find(&target, &inc).await.unwrap(), None);
    let ext = a.create(&target, &inc).await.unwrap();
    let t = rt.ticket(&ext.id).await;
    assert_eq!(
        t["Subject"],
        format!("[{}] High error rate on api-gateway", inc.id)
    );
    assert_eq!(t["Status"], "new");
    assert_eq!(t["Priority"], "100");
    assert_eq!(
        ext.url.as_deref(),
        Some(format!("{}/Ticket/Display.html?id={}", rt.url, ext.id).as_str())
    );

    inc.title = "High error rate on api-gateway and checkout".into();
    inc.priority = 2;
    let entries = [
        entry(
            "alert_added",
            "alert HighErrorRate{service=checkout} joined",
        ),
        entry("acknowledged", "acknowledged by José — on it ✓"),
    ];
    a.update(&target, &inc, &ext, &entries).await.unwrap();
    let t = rt.ticket(&ext.id).await;
    assert_eq!(
        t["Subject"],
        format!("[{}] High error rate on api-gateway and checkout", inc.id)
    );
    assert_eq!(t["Priority"], "80");
    let comments = rt.comments(&ext.id).await;
    assert_eq!(comments.len(), 2, "{comments:?}");
    assert!(
        comments[0].ends_with("alert_added: alert HighErrorRate{service=checkout} joined"),
        "{comments:?}"
    );
    assert!(
        comments[1].ends_with("acknowledged: acknowledged by José — on it ✓"),
        "non-ASCII survives: {comments:?}"
    );

    for (to, status, read_back) in [
        (TicketState::Acknowledged, "open", TicketState::Open),
        (TicketState::Resolved, "resolved", TicketState::Resolved),
        (TicketState::Closed, "resolved", TicketState::Resolved),
        (TicketState::Open, "open", TicketState::Open),
        (TicketState::Resolved, "resolved", TicketState::Resolved),
    ] {
        a.transition(&target, &inc, &ext, to).await.unwrap();
        assert_eq!(rt.ticket(&ext.id).await["Status"], status, "after {to:?}");
        let got = a.fetch(&target, &ext).await.unwrap().unwrap();
        assert_eq!(got.state, read_back, "after {to:?}");
    }

    // Still one ticket, and find (the resolved ticket is still the incident's) names it.
    assert_eq!(rt.tickets_mentioning(&inc.id).await, vec![ext.id.clone()]);
    assert_eq!(
        a.find(&target, &inc).await.unwrap().map(|e| e.id),
        Some(ext.id.clone())
    );

    // RT refuses a status outside its lifecycle with a 200: an error here.
    let (bad, target) = rt.adapter("statuses: {resolved: solved}");
    let err = bad
        .transition(&target, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("isn't a valid status"), "{err}");
}

#[tokio::test]
async fn real_rt_find_before_create_finds_the_ticket_whose_create_answer_was_lost() {
    let _one = E2E.lock().await;
    let rt = real_rt();
    let (a, target) = rt.adapter("");
    let inc = incident(&unique_id("lost"));
    let _lost = a.create(&target, &inc).await.unwrap();

    // The worker lost the answer: find first, and only create if nothing is found.
    let ext = match a.find(&target, &inc).await.unwrap() {
        Some(found) => found,
        None => a.create(&target, &inc).await.unwrap(),
    };
    assert_eq!(
        rt.tickets_mentioning(&inc.id).await,
        vec![ext.id.clone()],
        "no duplicate"
    );
    // An id this one is a prefix of is another incident.
    let longer = incident(&format!("{}7", inc.id));
    a.create(&target, &longer).await.unwrap();
    assert_eq!(
        a.find(&target, &inc).await.unwrap().map(|e| e.id),
        Some(ext.id.clone())
    );

    // The same through the IncidentId custom field, with a subject without the id.
    let (cf, target) =
        rt.adapter("find_by_custom_field: IncidentId\nsubject: \"{{ incident.title }}\"");
    let inc = incident(&unique_id("cf"));
    assert_eq!(cf.find(&target, &inc).await.unwrap(), None);
    let made = cf.create(&target, &inc).await.unwrap();
    assert_eq!(
        cf.find(&target, &inc).await.unwrap().map(|e| e.id),
        Some(made.id)
    );
}

#[tokio::test]
async fn real_rt_a_ticket_taken_or_resolved_by_a_person_reads_back_with_who() {
    let _one = E2E.lock().await;
    let rt = real_rt();
    let (a, target) = rt.adapter("");
    let (op, pw) = rt.operator().await;

    let inc = incident(&unique_id("hand"));
    let ext = a.create(&target, &inc).await.unwrap();
    // The operator takes it: RT's way of saying "I'm on it".
    let (s, v) = rt
        .call(
            Method::PUT,
            &format!("/ticket/{}/take", ext.id),
            Some(json!({})),
            Some((&op, &pw)),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let got = a.fetch(&target, &ext).await.unwrap().unwrap();
    assert_eq!(
        (got.state, got.changed_by.as_deref()),
        (TicketState::Acknowledged, Some(op.as_str()))
    );

    // ... and resolves it by hand.
    let (s, v) = rt
        .call(
            Method::PUT,
            &format!("/ticket/{}", ext.id),
            Some(json!({"Status": "resolved"})),
            Some((&op, &pw)),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v.to_string().contains("Status changed"), "{v}");
    let got = a.fetch(&target, &ext).await.unwrap().unwrap();
    assert_eq!(
        (got.state, got.changed_by.as_deref()),
        (TicketState::Resolved, Some(op.as_str()))
    );

    // Resolving it again from incidentd is a no-op, not an error.
    a.transition(&target, &inc, &ext, TicketState::Resolved)
        .await
        .unwrap();
    assert_eq!(
        a.fetch(&target, &ext)
            .await
            .unwrap()
            .unwrap()
            .changed_by
            .as_deref(),
        Some(op.as_str())
    );
}

/// The whole daemon against the real RT: alerts in, one ticket out whose status
/// follows the incident; a person resolving the ticket in RT resolves the
/// incident; a later alert opens a new incident (and ticket) linked to it.
#[tokio::test]
async fn real_rt_daemon_keeps_one_ticket_in_step_with_its_incident_both_ways() {
    let _one = E2E.lock().await;
    let rt = real_rt();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("r.yaml"),
        "rules:\n  - name: all\n    incident:\n      title: \"{{ labels.alertname }} on {{ labels.service }}\"\n      impact: high\n      urgency: medium\n      group_by: [alertname, service]\n      route: [tickets]\n",
    )
    .unwrap();
    let service = format!("svc{}", Utc::now().timestamp_micros());
    let cfg = format!(
        "{}rules:\n  dir: {}\nadapters:\n  tickets:\n    type: rt\n    url: {}\n    queue: General\n    user: {}\n    password: {}\n    delivery: {{initial_backoff_ms: 50, max_elapsed_ms: 5000}}\ndelivery:\n  poll_interval_ms: 300\n  reclaim_after_ms: 500\n",
        common::redis_config(&common::redis_url(), &common::unique_prefix("rt")),
        rules.display(),
        rt.url,
        rt.user,
        rt.password
    );
    let d = common::start_daemon(&cfg).await;
    let am = |instance: &str, status: &str, starts: &str| {
        json!({"version": "4", "status": status, "alerts": [{
            "status": status,
            "labels": {"alertname": "TargetDown", "service": service, "instance": instance},
            "annotations": {"summary": format!("{instance} is down")},
            "startsAt": starts,
            "endsAt": if status == "firing" { "0001-01-01T00:00:00Z" } else { "2026-11-25T05:00:00Z" },
        }]})
        .to_string()
    };
    let post = |body: String| {
        let d = &d;
        async move {
            let r = common::post_json(d, "/api/v1/alerts/alertmanager", &body).await;
            assert_eq!(r.status(), 200);
        }
    };
    let incident = |id: String| {
        let url = format!("{}/api/v1/incidents/{id}", common::base(&d));
        async move {
            common::client()
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let t0 = "2026-11-25T04:00:00Z";
    post(am("a:1", "firing", t0)).await;
    let list: Value = common::client()
        .get(format!("{}/api/v1/incidents", common::base(&d)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["incidents"][0]["id"].as_str().unwrap().to_string();

    // Waits until the incident's tickets are `n` and the first has `status`.
    let ticket_status = |want: &'static str, n: usize| {
        let id = id.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let tickets = rt.tickets_mentioning(&id).await;
                if tickets.len() == n
                    && let Some(t) = tickets.first()
                    && rt.ticket(t).await["Status"] == want
                {
                    return t.clone();
                }
                assert!(
                    Instant::now() < deadline,
                    "ticket for {id}: wanted {n} ticket(s) with status {want}, have {tickets:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let ticket = ticket_status("new", 1).await;
    post(am("a:2", "firing", t0)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rt.comments(&ticket).await.iter().any(|c| c.contains("a:2")) {
        assert!(
            Instant::now() < deadline,
            "the second alert never reached the ticket as a comment"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    post(am("a:1", "resolved", t0)).await;
    post(am("a:2", "resolved", t0)).await;
    ticket_status("resolved", 1).await;
    // A relapse reopens the same incident, and the same ticket.
    post(am("a:1", "firing", "2026-11-25T04:30:00Z")).await;
    let inc = incident(id.clone()).await;
    assert_eq!(inc["state"], "reopened", "{inc:#}");
    ticket_status("open", 1).await;
    assert_eq!(
        incident(id.clone()).await["external_refs"]["tickets"],
        format!("{}/Ticket/Display.html?id={ticket}", rt.url)
    );

    // A person resolves the ticket in RT: the incident follows, saying who.
    let (op, pw) = rt.operator().await;
    let (s, v) = rt
        .call(
            Method::PUT,
            &format!("/ticket/{ticket}"),
            Some(json!({"Status": "resolved"})),
            Some((&op, &pw)),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let inc = incident(id.clone()).await;
        if inc["state"] == "resolved" {
            assert_eq!(inc["closed_by"], format!("{op} in tickets"));
            let last = inc["timeline"].as_array().unwrap().last().unwrap().clone();
            assert_eq!(
                last["cause"],
                format!("resolved by {op} in tickets"),
                "{last}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the incident did not follow the ticket: {inc}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The alert resolves and fires again: the ticket a person resolved is not
    // reopened; a new incident, linked to the old one, gets its own ticket.
    post(am("a:1", "resolved", "2026-11-25T04:30:00Z")).await;
    post(am("a:1", "firing", "2026-11-25T05:30:00Z")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rt.ticket(&ticket).await["Status"], "resolved");
    let list: Value = common::client()
        .get(format!("{}/api/v1/incidents", common::base(&d)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let newer = list["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] != id.as_str())
        .expect("a new incident")
        .clone();
    assert_eq!(newer["related"][0], id.as_str());
    let newer_id = newer["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt.tickets_mentioning(&newer_id).await.len() != 1 {
        assert!(Instant::now() < deadline, "no ticket for the new incident");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.shutdown().await.unwrap();
}
