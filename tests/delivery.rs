//! The outbox and delivery worker end to end, through the webhook adapter to a
//! local receiver: order per incident, retries through an outage, dead letters
//! and their retry, and one ticket per incident across instances.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::*;
use serde_json::{Value, json};

const AM: &str = "/api/v1/alerts/alertmanager";
const SECRET: &str = "hook-secret";

/// What the receiver got, and how it answers.
#[derive(Default)]
struct Receiver {
    /// (idempotency key, body) in arrival order.
    got: Vec<(String, Value)>,
    /// Status to answer with; 200 when unset.
    answer: Option<u16>,
}

type Shared = Arc<Mutex<Receiver>>;

async fn receive(
    State(r): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let sig = headers
        .get("x-incidentd-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let want =
        incidentd::adapters::webhook::signature(&incidentd::secret::Secret::new(SECRET), &body);
    assert_eq!(sig, want, "every delivery is signed over its body");
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut r = r.lock().unwrap();
    let status = r.answer.unwrap_or(200);
    if status == 200 {
        r.got.push((key, serde_json::from_slice(&body).unwrap()));
    }
    StatusCode::from_u16(status).unwrap()
}

async fn start_receiver() -> (String, Shared) {
    let shared: Shared = Arc::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, shared)
}

/// Rules routing every alert to the `hook` adapter, and a config using them.
fn config(dir: &std::path::Path, store: &str, hook: &str) -> String {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("all.yaml"),
        "rules:\n  - name: all\n    incident:\n      title: \"{{ labels.alertname }} on {{ labels.service }}\"\n      impact: high\n      urgency: high\n      group_by: [alertname, service]\n      route: [hook]\n",
    )
    .unwrap();
    format!(
        "{store}rules:\n  dir: {}\nadapters:\n  hook:\n    type: webhook\n    url: {hook}\n    secret: {SECRET}\n    delivery:\n      initial_backoff_ms: 20\n      max_backoff_ms: 200\n      max_elapsed_ms: 500\ndelivery:\n  reclaim_after_ms: 300\n  poll_interval_ms: 60000\n  lease_ms: 1500\n",
        rules.display()
    )
}

fn alert(name: &str, service: &str, instance: &str, status: &str) -> String {
    json!({
        "version": "4", "status": status,
        "alerts": [{
            "status": status,
            "labels": {"alertname": name, "service": service, "instance": instance},
            "annotations": {"summary": "x"},
            "startsAt": "2026-11-25T03:29:01.917Z",
            "endsAt": "0001-01-01T00:00:00Z",
        }]
    })
    .to_string()
}

/// Events the receiver saw for incident `id`, in order.
fn events_for(r: &Shared, id: &str) -> Vec<String> {
    r.lock()
        .unwrap()
        .got
        .iter()
        .filter(|(_, b)| b["incident"]["id"] == id)
        .map(|(_, b)| match b["event"].as_str().unwrap() {
            "state" => format!("state:{}", b["state"].as_str().unwrap()),
            e => e.to_string(),
        })
        .collect()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn incident_ids(d: &incidentd::daemon::Daemon) -> Vec<String> {
    let v: Value = get_json(format!("{}/api/v1/incidents", base(d))).await;
    v["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

async fn lifecycle_is_delivered_in_order(store: String) {
    let dir = tempfile::tempdir().unwrap();
    let (hook, got) = start_receiver().await;
    let d = start_daemon(&config(dir.path(), &store, &hook)).await;
    post_json(&d, AM, &alert("Down", "api", "a", "firing")).await;
    post_json(&d, AM, &alert("Down", "api", "b", "firing")).await;
    let id = incident_ids(&d).await.pop().unwrap();
    // Delivery syncs the ticket to the incident's latest state: the second
    // alert may arrive as an update or already be part of the creation.
    wait_for("creation", || {
        events_for(&got, &id).contains(&"created".to_string())
    })
    .await;
    post_json(&d, AM, &alert("Down", "api", "a", "resolved")).await;
    post_json(&d, AM, &alert("Down", "api", "b", "resolved")).await;
    wait_for("resolution", || {
        events_for(&got, &id).last().map(String::as_str) == Some("state:resolved")
    })
    .await;
    let events = events_for(&got, &id);
    assert_eq!(
        events.first().map(String::as_str),
        Some("created"),
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "created").count(),
        1,
        "{events:?}"
    );
    // The incident records its ticket.
    let inc: Value = get_json(format!("{}/api/v1/incidents/{id}", base(&d))).await;
    assert_eq!(inc["external_refs"]["hook"], id.as_str());
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn incident_changes_reach_the_webhook_once_and_in_order_memory_store() {
    lifecycle_is_delivered_in_order(String::new()).await;
}

#[tokio::test]
async fn incident_changes_reach_the_webhook_once_and_in_order_redis_store() {
    lifecycle_is_delivered_in_order(redis_config(&redis_url(), &unique_prefix("deliver"))).await;
}

#[tokio::test]
async fn incident_changes_reach_the_webhook_once_and_in_order_redis_cluster_store() {
    lifecycle_is_delivered_in_order(redis_config(
        &redis_cluster_url(),
        &unique_prefix("deliver-cluster"),
    ))
    .await;
}

#[tokio::test]
async fn changes_made_while_the_endpoint_is_down_are_delivered_after_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, got) = start_receiver().await;
    let d = start_daemon(&config(
        dir.path(),
        &redis_config(&redis_url(), &unique_prefix("outage")),
        &hook,
    ))
    .await;
    got.lock().unwrap().answer = Some(503);
    for svc in ["a", "b", "c"] {
        post_json(&d, AM, &alert("Down", svc, "i", "firing")).await;
        post_json(&d, AM, &alert("Down", svc, "i", "resolved")).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(got.lock().unwrap().got.is_empty());
    got.lock().unwrap().answer = None;
    let ids = incident_ids(&d).await;
    assert_eq!(ids.len(), 3);
    for id in &ids {
        wait_for("delivery after the outage", || {
            events_for(&got, id).last().map(String::as_str) == Some("state:resolved")
        })
        .await;
        let events = events_for(&got, id);
        assert_eq!(
            events.iter().filter(|e| *e == "created").count(),
            1,
            "{events:?}"
        );
        assert_eq!(events[0], "created");
    }
    let metrics = get_text(format!("{}/metrics", base(&d))).await;
    assert!(
        metrics.contains("incidentd_delivery_retries_total{adapter=\"hook\"}"),
        "{metrics}"
    );
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_permanent_error_is_dead_lettered_and_an_operator_can_retry_it() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, got) = start_receiver().await;
    let d = start_daemon(&config(dir.path(), "", &hook)).await;
    got.lock().unwrap().answer = Some(422);
    post_json(&d, AM, &alert("Down", "api", "a", "firing")).await;
    let list = || async { get_json(format!("{}/api/v1/deliveries", base(&d))).await };
    let mut dead = Value::Null;
    for _ in 0..100 {
        dead = list().await;
        if !dead["dead_letters"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let letter = &dead["dead_letters"][0];
    assert_eq!(letter["adapter"], "hook");
    assert_eq!(letter["status"], 422);
    assert!(letter["reason"].as_str().unwrap().contains("HTTP 422"));
    got.lock().unwrap().answer = None;
    let id = letter["id"].as_str().unwrap();
    let r = client()
        .post(format!("{}/api/v1/deliveries/{id}/retry", base(&d)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inc = letter["incident_id"].as_str().unwrap().to_string();
    wait_for("redelivery", || {
        events_for(&got, &inc).contains(&"created".to_string())
    })
    .await;
    assert!(list().await["dead_letters"].as_array().unwrap().is_empty());
    assert_eq!(
        post_status(format!("{}/api/v1/deliveries/{id}/retry", base(&d))).await,
        404
    );
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_instances_sharing_redis_deliver_each_incident_once() {
    two_instances_deliver_each_incident_once(redis_url()).await;
}

#[tokio::test]
async fn two_instances_sharing_a_redis_cluster_deliver_each_incident_once() {
    two_instances_deliver_each_incident_once(redis_cluster_url()).await;
}

async fn two_instances_deliver_each_incident_once(url: String) {
    let dir = tempfile::tempdir().unwrap();
    let (hook, got) = start_receiver().await;
    let cfg = config(
        dir.path(),
        &redis_config(&url, &unique_prefix("pairdeliver")),
        &hook,
    );
    let (a, b) = (start_daemon(&cfg).await, start_daemon(&cfg).await);
    for i in 0..10 {
        let body = alert("Down", &format!("svc{i}"), "i", "firing");
        let (ra, rb) = tokio::join!(post_json(&a, AM, &body), post_json(&b, AM, &body));
        assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (200, 200));
    }
    let ids = incident_ids(&a).await;
    assert_eq!(ids.len(), 10);
    for id in &ids {
        wait_for("creation", || {
            events_for(&got, id).contains(&"created".to_string())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        let events = events_for(&got, id);
        assert_eq!(
            events.iter().filter(|e| *e == "created").count(),
            1,
            "{id}: {events:?}"
        );
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_deliveries_loses_nothing_and_duplicates_no_ticket() {
    let dir = tempfile::tempdir().unwrap();
    // A slow receiver, so the kill lands while deliveries are in flight.
    let shared: Shared = Arc::default();
    let slow = |state: State<Shared>, headers: HeaderMap, body: axum::body::Bytes| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        receive(state, headers, body).await
    };
    let app = Router::new()
        .route("/hook", post(slow))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let cfg_path = dir.path().join("c.yaml");
    std::fs::write(
        &cfg_path,
        config(
            dir.path(),
            &redis_config(&redis_url(), &unique_prefix("kill")),
            &hook,
        ),
    )
    .unwrap();
    let port = free_port();
    let mut daemon = spawn_daemon(&cfg_path, port);
    let url = format!("http://127.0.0.1:{port}{AM}");
    for i in 0..20 {
        let r = client()
            .post(&url)
            .header("content-type", "application/json")
            .body(alert("Down", &format!("svc{i}"), "i", "firing"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    wait_for("some deliveries", || shared.lock().unwrap().got.len() >= 3).await;
    daemon.kill();
    let delivered_before = shared.lock().unwrap().got.len();
    assert!(
        delivered_before < 20,
        "the kill should land mid-delivery ({delivered_before} done)"
    );

    let mut daemon = spawn_daemon(&cfg_path, port);
    let all_created = || {
        let got = shared.lock().unwrap();
        let mut keys: Vec<&str> = got
            .got
            .iter()
            .filter(|(_, b)| b["event"] == "created")
            .map(|(k, _)| k.as_str())
            .collect();
        keys.sort();
        keys.dedup();
        keys.len()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while all_created() < 20 {
        assert!(
            Instant::now() < deadline,
            "only {} of 20 incidents delivered after the restart",
            all_created()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One ticket per incident: a create may be sent again when the kill lost its
    // answer, but always with the same idempotency key, never as a new ticket.
    let got = shared.lock().unwrap();
    let mut per_incident =
        std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for (key, body) in &got.got {
        if body["event"] == "created" {
            per_incident
                .entry(body["incident"]["id"].as_str().unwrap().to_string())
                .or_default()
                .insert(key.clone());
        }
    }
    assert_eq!(per_incident.len(), 20);
    assert!(
        per_incident.values().all(|keys| keys.len() == 1),
        "{per_incident:#?}"
    );
    drop(got);
    daemon.kill();
}

#[tokio::test]
async fn a_single_change_outlasting_retries_and_reclaims_is_still_delivered() {
    // One outbox entry per incident, and an outage longer than a step's retries
    // (max_elapsed_ms 500) and than the reclaim delay (300 ms): the entry is
    // claimed again while its first delivery is still retrying, and must survive
    // that delivery failing.
    let dir = tempfile::tempdir().unwrap();
    let (hook, got) = start_receiver().await;
    let d = start_daemon(&config(
        dir.path(),
        &redis_config(&redis_url(), &unique_prefix("longoutage")),
        &hook,
    ))
    .await;
    got.lock().unwrap().answer = Some(503);
    for svc in ["a", "b", "c"] {
        post_json(&d, AM, &alert("Down", svc, "i", "firing")).await;
    }
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    got.lock().unwrap().answer = None;
    for id in incident_ids(&d).await {
        wait_for("delivery after a long outage", || {
            events_for(&got, &id).contains(&"created".to_string())
        })
        .await;
    }
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn many_changes_to_one_incident_in_one_read_are_synced_once_and_acknowledged_together() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, got) = start_receiver().await;
    // No reclaim during the test: every entry must be acknowledged by the pass
    // that covered it, none left pending for a later claim.
    let yaml =
        config(dir.path(), "", &hook).replace("reclaim_after_ms: 300", "reclaim_after_ms: 600000");
    let (store, worker, metrics) = common::memory_worker(dir.path(), &yaml);

    // Five changes to one incident, each with its outbox entry, all written
    // before the worker starts: its first read holds all five.
    let mut inc = sample_incident("storm");
    inc.route = vec!["hook".into()];
    for version in 1..=5 {
        inc.version = version;
        inc.alert_count = version as usize;
        commit_next(&store, &inc).await;
    }
    assert_eq!(store.outbox_stats().await.unwrap().depth, 5);

    let run = tokio::spawn(Arc::new(worker).run());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let depth = store.outbox_stats().await.unwrap().depth;
        if depth == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{depth} entries still pending after the delivery"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One ticket, created from the latest version, by one pass over the route.
    assert_eq!(events_for(&got, "storm"), ["created"]);
    assert_eq!(got.lock().unwrap().got[0].1["incident"]["version"], 5);
    assert_eq!(
        metrics
            .deliveries
            .with_label_values(&["hook", "delivered"])
            .get(),
        1
    );
    run.abort();
}

#[tokio::test]
async fn after_a_short_read_the_worker_waits_and_reads_what_was_written_meanwhile_together() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, got) = start_receiver().await;
    let yaml = config(dir.path(), "", &hook)
        .replace("reclaim_after_ms: 300", "reclaim_after_ms: 600000")
        .replace(
            "lease_ms: 1500\n",
            "lease_ms: 1500\n  batch_wait_ms: 1000\n",
        );
    let (store, worker, _) = common::memory_worker(dir.path(), &yaml);
    let open = |id: &str| {
        let store = store.clone();
        let mut inc = sample_incident(id);
        inc.route = vec!["hook".into()];
        inc.version = 1;
        async move { commit_next(&store, &inc).await }
    };
    let delivered = |id: &str| events_for(&got, id) == ["created"];
    let later: Vec<String> = (0..5).map(|n| format!("later-{n}")).collect();

    open("first").await;
    let run = tokio::spawn(Arc::new(worker).run());
    wait_for("the first incident's delivery", || delivered("first")).await;
    // That read held one entry, short of a batch: the worker waits a second
    // before reading again, so what is written now is not read at once...
    for id in &later {
        open(id).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        later.iter().all(|id| !delivered(id)),
        "read before the batch wait was over"
    );
    // ...but all of it, in the next read.
    wait_for("the five later deliveries", || {
        later.iter().all(|id| delivered(id))
    })
    .await;
    assert_eq!(store.outbox_stats().await.unwrap().depth, 0);
    run.abort();
}
