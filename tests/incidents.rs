//! Rules, correlation and the incident lifecycle end to end: alerts posted to
//! daemons (memory store and real Redis), incidents read back over REST.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const AM: &str = "/api/v1/alerts/alertmanager";
const RULES: &str = "rules:\n  dir: ../rules\n";

async fn incidents(d: &incidentd::daemon::Daemon, query: &str) -> Vec<Value> {
    let v: Value = get_json(format!("{}/api/v1/incidents{query}", base(d))).await;
    v["incidents"].as_array().unwrap().clone()
}

/// An Alertmanager body with one alert.
fn am_alert(name: &str, service: &str, instance: &str, status: &str) -> String {
    json!({
        "version": "4", "status": status, "receiver": "incidentd",
        "alerts": [{
            "status": status,
            "labels": {"alertname": name, "cluster": "eu1", "service": service,
                       "instance": instance, "team": "payments", "severity": "critical"},
            "annotations": {"summary": format!("{instance} is down")},
            "startsAt": "2026-11-25T03:29:01.917Z",
            "endsAt": if status == "resolved" { "2026-11-25T03:39:01.917Z" } else { "0001-01-01T00:00:00Z" },
        }]
    })
    .to_string()
}

/// Posts every body to both daemons, all requests in flight at once (as an
/// Alertmanager HA pair sends), and expects each to be accepted.
async fn post_to_both_at_once(
    a: &incidentd::daemon::Daemon,
    b: &incidentd::daemon::Daemon,
    bodies: Vec<String>,
) {
    let mut posts = Vec::new();
    for body in bodies {
        for d in [a, b] {
            let (url, body) = (format!("{}{AM}", base(d)), body.clone());
            posts.push(tokio::spawn(async move {
                client()
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
    }
    for p in posts {
        assert_eq!(p.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn storm_posted_to_two_instances_on_one_redis_opens_one_incident_per_key() {
    let cfg = format!(
        "{}{RULES}",
        redis_config(&redis_url(), &unique_prefix("storm"))
    );
    let (a, b) = (start_daemon(&cfg).await, start_daemon(&cfg).await);
    // 30 instances of one service, each alert posted to both daemons at once,
    // as an Alertmanager HA pair does.
    let bodies: Vec<String> = (0..30)
        .map(|i| {
            am_alert(
                "TargetDown",
                "checkout-api",
                &format!("10.0.0.{i}:8080"),
                "firing",
            )
        })
        .collect();
    post_to_both_at_once(&a, &b, bodies).await;
    // And the captured fixture, to both.
    for body in fixture_lines("alertmanager/am-0.25-webhook-v4.jsonl") {
        let (ra, rb) = tokio::join!(post_json(&a, AM, &body), post_json(&b, AM, &body));
        assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (200, 200));
    }
    let all = incidents(&a, "").await;
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for i in &all {
        *per_key
            .entry(i["correlation_key"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(
        per_key.values().all(|n| *n == 1),
        "duplicate incidents: {per_key:#?}"
    );
    let target_down = all
        .iter()
        .find(|i| {
            i["correlation_key"]
                == "target-down|alertname=TargetDown|cluster=eu1|service=checkout-api"
        })
        .expect("target-down incident");
    // 30 synthetic instances + the 3 captured ones (resolved in the capture's last payload).
    assert_eq!(target_down["alert_count"], 33);
    assert_eq!(target_down["priority"], 1);
    assert!(all.iter().any(|i| i["rule"] == "database-down"));
    assert_eq!(
        incidents(&b, "").await.len(),
        all.len(),
        "both instances see one state"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

async fn lifecycle_over_rest(d: incidentd::daemon::Daemon) {
    let fire = |i: u8| {
        am_alert(
            "TargetDown",
            "checkout-api",
            &format!("10.0.0.{i}:8080"),
            "firing",
        )
    };
    let resolve = |i: u8| {
        am_alert(
            "TargetDown",
            "checkout-api",
            &format!("10.0.0.{i}:8080"),
            "resolved",
        )
    };
    for i in 1..=2 {
        assert_eq!(post_json(&d, AM, &fire(i)).await.status(), 200);
    }
    let list = incidents(&d, "?state=new&priority=1&service=checkout-api").await;
    assert_eq!(list.len(), 1);
    let id = list[0]["id"].as_str().unwrap().to_string();
    let url = |tail: &str| format!("{}/api/v1/incidents/{id}{tail}", base(&d));
    let inc: Value = get_json(url("")).await;
    for field in [
        "id",
        "title",
        "description",
        "state",
        "priority",
        "impact",
        "urgency",
        "category",
        "subcategory",
        "assignment_group",
        "service",
        "configuration_items",
        "major",
        "alert_count",
        "rule",
        "correlation_key",
        "created_at",
        "updated_at",
        "resolved_at",
        "reopen_count",
        "external_refs",
        "timeline",
        "alerts",
    ] {
        assert!(
            inc.get(field).is_some(),
            "incident JSON lacks {field}: {inc}"
        );
    }
    assert_eq!(inc["title"], "checkout-api is down in eu1 (2 targets)");
    assert_eq!(inc["alerts"].as_array().unwrap().len(), 2);
    assert!(inc["alerts"][0]["labels"]["instance"].is_string());
    assert_eq!(inc["timeline"][0]["event"], "created");

    // Why did the second alert go there?
    let fp = inc["alerts"][1]["fingerprint"].as_str().unwrap();
    let alert: Value = get_json(format!("{}/api/v1/alerts/{fp}", base(&d))).await;
    assert_eq!(alert["explain"]["rules"][0]["rule"], "target-down");
    assert_eq!(alert["explain"]["rules"][0]["incident_id"], id.as_str());
    assert!(alert["explain"]["summary"].as_str().unwrap().contains(&id));

    let ack = client()
        .post(url("/ack"))
        .json(&json!({"by": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), 200);
    assert_eq!(ack.json::<Value>().await.unwrap()["state"], "in_progress");

    // Every alert resolves: the incident resolves itself (resolve_after_s: 0).
    for i in 1..=2 {
        assert_eq!(post_json(&d, AM, &resolve(i)).await.status(), 200);
    }
    let inc: Value = get_json(url("")).await;
    assert_eq!(inc["state"], "resolved");
    assert!(inc["resolved_at"].is_string());
    // A relapse within reopen_within_s reopens the same incident.
    let relapse = fire(1).replace("2026-11-25T03:29:01.917Z", "2026-11-25T03:49:01.917Z");
    assert_eq!(post_json(&d, AM, &relapse).await.status(), 200);
    let inc: Value = get_json(url("")).await;
    assert_eq!(inc["state"], "reopened");
    assert_eq!(inc["reopen_count"], 1);
    assert_eq!(
        incidents(&d, "").await.len(),
        1,
        "reopened, not a new incident"
    );
    let events: Vec<&str> = inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "created",
            "alert_added",
            "acknowledged",
            "alert_resolved",
            "alert_resolved",
            "resolved",
            "reopened",
            "alert_refired"
        ]
    );

    let resolved = client().post(url("/resolve")).send().await.unwrap();
    assert_eq!(resolved.status(), 200);
    assert_eq!(resolved.json::<Value>().await.unwrap()["state"], "resolved");
    assert_eq!(
        post_status(format!("{}/api/v1/incidents/nope/ack", base(&d))).await,
        404
    );
    assert_eq!(
        get_status(format!("{}/api/v1/incidents?state=bogus", base(&d))).await,
        400
    );
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn incident_lifecycle_over_rest_on_memory_store() {
    lifecycle_over_rest(start_daemon(&format!("store:\n  url: memory\n{RULES}")).await).await;
}

#[tokio::test]
async fn incident_lifecycle_over_rest_on_redis_store() {
    let cfg = format!(
        "{}{RULES}",
        redis_config(&redis_url(), &unique_prefix("life"))
    );
    lifecycle_over_rest(start_daemon(&cfg).await).await;
}

#[tokio::test]
async fn dropped_alerts_are_counted_and_not_kept() {
    let d = start_daemon(&format!("store:\n  url: memory\n{RULES}")).await;
    let r = post_json(&d, AM, &am_alert("Watchdog", "prometheus", "x", "firing")).await;
    assert_eq!(r.json::<Value>().await.unwrap()["dropped"], 1);
    assert!(alerts_by_fp(&d).await.is_empty());
    assert!(incidents(&d, "").await.is_empty());
    let metrics = get_text(format!("{}/metrics", base(&d))).await;
    assert!(
        metrics.contains(r#"incidentd_alerts_dropped_total{rule="watchdog"} 1"#),
        "{metrics}"
    );
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn broken_rule_file_is_refused_on_reload_and_running_rules_stay() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let good = "rules:\n  - name: everything\n    incident:\n      title: \"{{ labels.alertname }}\"\n      impact: low\n      urgency: low\n";
    std::fs::write(rules.join("a.yaml"), good).unwrap();
    let d = start_daemon(&format!("rules:\n  dir: {}\n", rules.display())).await;
    std::fs::write(
        rules.join("b.yaml"),
        "rules:\n  - name: broken\n    match: ['alertname=~\"(\"']\n    action: drop\n",
    )
    .unwrap();
    let r = client()
        .post(format!("{}/-/reload", base(&d)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["reason"], "invalid_rules");
    assert!(err["error"].as_str().unwrap().contains("b.yaml:3"), "{err}");
    // The running rules still raise incidents.
    assert_eq!(
        post_json(&d, AM, &am_alert("Anything", "svc", "i", "firing"))
            .await
            .status(),
        200
    );
    assert_eq!(incidents(&d, "").await.len(), 1);
    std::fs::remove_file(rules.join("b.yaml")).unwrap();
    let r = client()
        .post(format!("{}/-/reload", base(&d)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["rules"], 1);
    let metrics = get_text(format!("{}/metrics", base(&d))).await;
    assert!(metrics.contains(r#"incidentd_rules_reloads_total{result="failure"} 1"#));
    assert!(metrics.contains(r#"incidentd_rules_reloads_total{result="success"} 1"#));
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn manual_resolve_rule_waits_for_an_operator_and_timers_close_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let rules = "rules:\n  - name: manual\n    match: ['alertname=\"Manual\"']\n    incident:\n      title: manual\n      impact: medium\n      urgency: medium\n      resolve: manual\n  - name: quick\n    incident:\n      title: quick\n      impact: low\n      urgency: low\n      resolve_after_s: 1\n      close_after_s: 1\n";
    std::fs::write(dir.path().join("r.yaml"), rules).unwrap();
    let d = start_daemon(&format!("rules:\n  dir: {}\n", dir.path().display())).await;
    post_json(&d, AM, &am_alert("Manual", "svc", "i", "firing")).await;
    post_json(&d, AM, &am_alert("Manual", "svc", "i", "resolved")).await;
    post_json(&d, AM, &am_alert("Quick", "svc", "i", "firing")).await;
    post_json(&d, AM, &am_alert("Quick", "svc", "i", "resolved")).await;
    // The daemon's timer runs every second: resolve after 1 s, close 1 s later.
    let mut states = BTreeMap::new();
    for _ in 0..60 {
        states = incidents(&d, "")
            .await
            .iter()
            .map(|i| {
                (
                    i["title"].as_str().unwrap().to_string(),
                    i["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        if states.get("quick").map(String::as_str) == Some("closed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(states["quick"], "closed");
    assert_eq!(
        states["manual"], "new",
        "resolve: manual waits for an operator"
    );
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_require_tests_a_rule_set_whose_tests_fail_is_not_put_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(rules.join("tests")).unwrap();
    let rule = |impact: &str| {
        format!(
            "rules:\n  - name: all\n    incident:\n      title: \"{{{{ labels.alertname }}}}\"\n      impact: {impact}\n      urgency: low\n"
        )
    };
    std::fs::write(rules.join("r.yaml"), rule("low")).unwrap();
    std::fs::write(
        rules.join("tests/t.yaml"),
        "tests:\n  - name: everything is priority 5\n    alerts:\n      - at: 0s\n        labels: {alertname: X}\n    expect:\n      - at: 1s\n        incidents:\n          - priority: 5\n",
    )
    .unwrap();
    let d = start_daemon(&format!(
        "rules:\n  dir: {}\n  require_tests: true\n",
        rules.display()
    ))
    .await;
    std::fs::write(rules.join("r.yaml"), rule("high")).unwrap();
    let r = client()
        .post(format!("{}/-/reload", base(&d)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("priority: expected \"5\", got \"3\""),
        "{err}"
    );
    post_json(&d, AM, &am_alert("Y", "svc", "i", "firing")).await;
    assert_eq!(
        incidents(&d, "").await[0]["priority"],
        5,
        "the old rules stayed in force"
    );
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn closed_incidents_are_forgotten_after_their_retention_on_redis() {
    let dir = tempfile::tempdir().unwrap();
    let rules = "rules:\n  - name: quick\n    incident:\n      title: quick\n      impact: low\n      urgency: low\n      close_after_s: 0\n";
    std::fs::write(dir.path().join("r.yaml"), rules).unwrap();
    let cfg = format!(
        "{}rules:\n  dir: {}\nincidents:\n  closed_retention_s: 1\n",
        redis_config(&redis_url(), &unique_prefix("retention")),
        dir.path().display()
    );
    let d = start_daemon(&cfg).await;
    post_json(&d, AM, &am_alert("Quick", "svc", "i", "firing")).await;
    post_json(&d, AM, &am_alert("Quick", "svc", "i", "resolved")).await;
    let closed = incidents(&d, "?state=closed").await;
    assert_eq!(
        closed.len(),
        1,
        "resolved and closed at once (close_after_s: 0)"
    );
    let id = closed[0]["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        incidents(&d, "").await.is_empty(),
        "a closed incident outlived its retention"
    );
    let gone = client()
        .get(format!("{}/api/v1/incidents/{id}", base(&d)))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    d.shutdown().await.unwrap();
}

/// A config file for the daemon binary: the shared Redis under `prefix`, the
/// example rules, and a response target for priority 5 (the catch-all's)
/// short enough to be missed during the test.
fn sla_config(dir: &std::path::Path, prefix: &str) -> std::path::PathBuf {
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let path = dir.join("sla.yaml");
    std::fs::write(
        &path,
        format!(
            "{}rules:\n  dir: {}\nsla:\n  targets:\n    5: {{respond_within_s: 4}}\n  escalation:\n    raise_priority: 1\n",
            redis_config(&redis_url(), prefix),
            rules.display()
        ),
    )
    .unwrap();
    path
}

async fn post_to(port: u16, body: &str) -> u16 {
    client()
        .post(format!("http://127.0.0.1:{port}{AM}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn incidents_at(port: u16) -> Vec<Value> {
    let v = get_json(format!("http://127.0.0.1:{port}/api/v1/incidents")).await;
    v["incidents"].as_array().unwrap().clone()
}

fn sla_breaches(inc: &Value) -> usize {
    inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "sla_breached")
        .count()
}

/// Waits until the only incident has an `sla_breached` entry, then a few more
/// ticks, and returns it.
async fn wait_for_breach(port: u16) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let all = incidents_at(port).await;
        if all.len() == 1 && sla_breaches(&all[0]) > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no SLA breach: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every instance ticks each second: give them the chance to do it again.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let all = incidents_at(port).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    all[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sla_breach_after_restart_escalates_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sla_config(dir.path(), &unique_prefix("sla-restart"));
    let port = free_port();
    let mut daemon = spawn_daemon(&cfg, port);
    let body = am_alert("SomethingOdd", "billing", "10.0.0.7:8080", "firing");
    assert_eq!(post_to(port, &body).await, 200);
    let all = incidents_at(port).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["priority"], 5);
    let respond_by = all[0]["sla"]["respond_by"].as_str().unwrap().to_string();
    assert!(all[0]["sla"]["response_breached_at"].is_null());

    // The daemon dies before the deadline and is down when it passes: the
    // timer lives in the store, so the next daemon still escalates.
    daemon.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _daemon = spawn_daemon(&cfg, port);
    let inc = wait_for_breach(port).await;
    assert_eq!(sla_breaches(&inc), 1, "{inc:#}");
    assert_eq!(inc["priority"], 4, "raised once: {inc:#}");
    assert_eq!(inc["sla"]["response_breached_at"], respond_by.as_str());
    assert_eq!(inc["state"], "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sla_breach_with_two_instances_on_one_redis_escalates_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sla_config(dir.path(), &unique_prefix("sla-two"));
    let (pa, pb) = (free_port(), free_port());
    let (_a, _b) = (spawn_daemon(&cfg, pa), spawn_daemon(&cfg, pb));
    let body = am_alert("SomethingOdd", "billing", "10.0.0.8:8080", "firing");
    assert_eq!(post_to(pa, &body).await, 200);
    let inc = wait_for_breach(pb).await;
    assert_eq!(sla_breaches(&inc), 1, "{inc:#}");
    assert_eq!(inc["priority"], 4, "raised once: {inc:#}");
    let metrics_a = get_text(format!("http://127.0.0.1:{pa}/metrics")).await;
    let metrics_b = get_text(format!("http://127.0.0.1:{pb}/metrics")).await;
    let breaches = |m: &str| {
        metric_value(m, "incidentd_sla_breaches_total{kind=\"response\"}").map_or(0, |n| n as u64)
    };
    assert_eq!(
        breaches(&metrics_a) + breaches(&metrics_b),
        1,
        "one breach counted over both instances"
    );
}

#[tokio::test]
async fn a_flapping_alert_does_not_churn_resolve_and_reopen() {
    let d = start_daemon(&format!("{RULES}flapping:\n  enabled: true\n")).await;
    let fire = am_alert("TargetDown", "checkout-api", "10.0.0.1:8080", "firing");
    let resolve = am_alert("TargetDown", "checkout-api", "10.0.0.1:8080", "resolved");
    for i in 0..10 {
        // Each re-fire is a new episode, as Alertmanager sends it.
        let body = if i % 2 == 0 {
            fire.replace("03:29:01", &format!("03:{:02}:01", 30 + i))
        } else {
            resolve.clone()
        };
        assert_eq!(post_json(&d, AM, &body).await.status(), 200);
    }
    let all = incidents(&d, "").await;
    assert_eq!(all.len(), 1, "{all:#?}");
    let inc = &all[0];
    assert_eq!(inc["flapping"], true);
    assert_eq!(inc["alerts"][0]["flapping"], true);
    assert_eq!(inc["reopen_count"], 0);
    let metrics = get_text(format!("{}/metrics", base(&d))).await;
    let changes = |event: &str| {
        metric_value(
            &metrics,
            &format!("incidentd_incident_changes_total{{event=\"{event}\"}}"),
        )
        .map_or(0, |n| n as u64)
    };
    // The first resolve goes through; the flapping that follows neither
    // reopens nor resolves it again.
    assert_eq!(changes("resolved"), 1, "{metrics}");
    assert_eq!(changes("reopened"), 0, "{metrics}");
    assert!(
        metrics.contains("incidentd_alerts_flapping_started_total 1"),
        "{metrics}"
    );
    d.shutdown().await.unwrap();
}

/// An Alertmanager body with one alert of `service`.
fn am_service_alert(name: &str, service: &str, instance: &str) -> String {
    json!({
        "version": "4", "status": "firing", "receiver": "incidentd",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": name, "cluster": "eu1", "service": service,
                       "instance": instance, "severity": "critical"},
            "annotations": {"summary": format!("{service} {instance} is down")},
            "startsAt": "2026-11-25T03:29:01.917Z",
            "endsAt": "0001-01-01T00:00:00Z",
        }]
    })
    .to_string()
}

#[tokio::test]
async fn topology_storm_posted_to_two_instances_on_one_redis_ends_in_one_incident_per_cause() {
    let cfg = format!(
        "{}{RULES}topology:\n  services_file: services.yaml\n",
        redis_config(&redis_url(), &unique_prefix("topo-storm"))
    );
    let (a, b) = (start_daemon(&cfg).await, start_daemon(&cfg).await);
    // Dependents and their dependency in one burst, each alert to both
    // daemons at once: whatever the interleaving, postgres ends up the cause.
    let mut bodies: Vec<String> = (0..12)
        .map(|i| am_service_alert("TargetDown", "checkout-api", &format!("10.0.0.{i}:8080")))
        .collect();
    bodies.insert(
        6,
        am_service_alert("PostgresDown", "postgres", "10.0.5.1:9187"),
    );
    bodies.push(am_service_alert("TargetDown", "frontend", "10.0.1.1:80"));
    post_to_both_at_once(&a, &b, bodies).await;
    let all = incidents(&a, "?limit=100").await;
    let tickets: Vec<&Value> = all
        .iter()
        .filter(|i| i.get("merged_into").is_none())
        .collect();
    assert_eq!(tickets.len(), 1, "one incident per cause: {all:#?}");
    let cause = tickets[0];
    assert_eq!(cause["root_cause"], "postgres", "{cause:#}");
    assert_eq!(cause["alert_count"], 14, "{cause:#}");
    let mut affected: Vec<&str> = cause["affected_services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(affected.remove(0), "postgres");
    affected.sort();
    assert_eq!(affected, ["checkout-api", "frontend"]);
    let ids: Vec<&Value> = all.iter().map(|i| &i["id"]).collect();
    for merged in all.iter().filter(|i| i.get("merged_into").is_some()) {
        assert_eq!(merged["state"], "closed");
        assert!(ids.contains(&&merged["merged_into"]), "{merged:#}");
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
