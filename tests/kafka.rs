//! The Kafka source and sink against librdkafka's mock cluster (an in-process
//! Kafka protocol implementation) and a real Redis: at-least-once commits,
//! harmless redelivery, dead letters, pausing while the store is down, sink
//! ordering, config validation. `tests/kafka_e2e.rs` runs the scale-out
//! checks against a real broker.

mod common;
#[path = "common/kafka.rs"]
mod ks;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use ks::*;
use rdkafka::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

type Cluster = MockCluster<'static, DefaultProducerContext>;

fn cluster(topics: &[(&str, i32)]) -> Cluster {
    let c = MockCluster::new(1).expect("mock cluster");
    for (t, n) in topics {
        c.create_topic(t, *n, 1).expect("create topic");
    }
    c
}

fn config(redis: &str, prefix: &str, kafka: &str, rules: &tempfile::TempDir) -> String {
    format!(
        "{}{kafka}rules:\n  dir: {}\n",
        redis_config(redis, prefix),
        rules.path().display()
    )
}

async fn metric(d: &incidentd::daemon::Daemon, line_prefix: &str) -> Option<f64> {
    metric_value(&get_text(format!("{}/metrics", base(d))).await, line_prefix)
}

/// Alerts stored (0 while the store cannot be read, e.g. just after a restart).
async fn alert_count(d: &incidentd::daemon::Daemon) -> usize {
    let v = get_json(format!("{}/api/v1/alerts?limit=10000", base(d))).await;
    v["alerts"].as_array().map_or(0, Vec::len)
}

async fn committed_async(brokers: String, group: String, topic: String, parts: i32) -> Vec<i64> {
    tokio::task::spawn_blocking(move || committed(&brokers, &group, &topic, parts))
        .await
        .expect("committed")
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_only_after_the_alerts_are_in_the_store() {
    let mc = cluster(&[("alerts", 1)]);
    let brokers = mc.bootstrap_servers();
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.stop();
    let rules = rules_dir();
    let kafka = kafka_source(
        &brokers,
        "g-commit",
        "alerts",
        "dlq",
        "    commit_interval_ms: 100\n",
    );
    let d = start_daemon(&config(&url, &unique_prefix("commit"), &kafka, &rules)).await;
    let p = producer(&brokers);
    for i in 0..5 {
        produce(
            &p,
            "alerts",
            Some(0),
            "k",
            &one_alert("CommitTest", &format!("i{i}")),
        )
        .await;
    }
    eventually(WAIT, "consumption paused on the store error", || async {
        metric(&d, "incidentd_kafka_consumer_paused ").await == Some(1.0)
    })
    .await;
    // Several commit intervals pass while the store is down: nothing is committed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = committed_async(brokers.clone(), "g-commit".into(), "alerts".into(), 1).await;
    assert_eq!(c, vec![-1], "committed before the alerts were stored");

    redis.restart();
    eventually(WAIT, "the 5 alerts stored", || async {
        alert_count(&d).await == 5
    })
    .await;
    eventually(WAIT, "offset 5 committed", || async {
        committed_async(brokers.clone(), "g-commit".into(), "alerts".into(), 1).await == vec![5]
    })
    .await;
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_pauses_consumption_then_resumes_with_nothing_lost() {
    let mc = cluster(&[("alerts", 2)]);
    let brokers = mc.bootstrap_servers();
    let mut redis = RedisServer::start();
    let rules = rules_dir();
    let kafka = kafka_source(
        &brokers,
        "g-outage",
        "alerts",
        "dlq",
        "    commit_interval_ms: 100\n",
    );
    let d = start_daemon(&config(
        &redis.url(),
        &unique_prefix("outage"),
        &kafka,
        &rules,
    ))
    .await;
    let p = producer(&brokers);
    for i in 0..10 {
        produce(
            &p,
            "alerts",
            Some(i % 2),
            "k",
            &one_alert("Outage", &format!("a{i}")),
        )
        .await;
    }
    eventually(WAIT, "the first 10 alerts stored", || async {
        alert_count(&d).await == 10
    })
    .await;

    redis.stop();
    for i in 0..20 {
        produce(
            &p,
            "alerts",
            Some(i % 2),
            "k",
            &one_alert("Outage", &format!("b{i}")),
        )
        .await;
    }
    eventually(WAIT, "consumption paused", || async {
        metric(&d, "incidentd_kafka_consumer_paused ").await == Some(1.0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    // The test's Redis keeps nothing across a restart (no persistence), so
    // only the alerts produced during the outage are expected afterwards.
    eventually(
        WAIT,
        "the 20 alerts produced during the outage stored",
        || async { alert_count(&d).await == 20 },
    )
    .await;
    eventually(WAIT, "consumption resumed", || async {
        metric(&d, "incidentd_kafka_consumer_paused ").await == Some(0.0)
    })
    .await;
    eventually(WAIT, "every offset committed", || async {
        committed_async(brokers.clone(), "g-outage".into(), "alerts".into(), 2).await
            == vec![15, 15]
    })
    .await;
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_message_counts_as_a_duplicate_and_opens_no_second_incident() {
    let mc = cluster(&[("alerts", 1)]);
    let brokers = mc.bootstrap_servers();
    let rules = rules_dir();
    let prefix = unique_prefix("redeliver");
    let p = producer(&brokers);
    for i in 0..3 {
        produce(
            &p,
            "alerts",
            Some(0),
            "k",
            &one_alert(&format!("Redeliver{i}"), "h1"),
        )
        .await;
    }
    let first = kafka_source(&brokers, "g-first", "alerts", "dlq", "");
    let a = start_daemon(&config(&redis_url(), &prefix, &first, &rules)).await;
    eventually(WAIT, "3 alerts stored", || async {
        alert_count(&a).await == 3
    })
    .await;
    let incidents = |d: &incidentd::daemon::Daemon| {
        let url = format!("{}/api/v1/incidents", base(d));
        async move { get_json(url).await["incidents"].as_array().unwrap().len() }
    };
    eventually(WAIT, "3 incidents", || async { incidents(&a).await == 3 }).await;
    a.shutdown().await.unwrap();

    // A new group reads the same messages again: what a crash between
    // storing and committing, or a rebalance, does.
    let again = kafka_source(&brokers, "g-again", "alerts", "dlq", "");
    let b = start_daemon(&config(&redis_url(), &prefix, &again, &rules)).await;
    eventually(WAIT, "each alert seen twice", || async {
        let all = alerts_by_fp(&b).await;
        all.len() == 3 && all.values().all(|a| a["total_count"] == 2)
    })
    .await;
    assert_eq!(incidents(&b).await, 3, "redelivery opened an incident");
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_goes_to_dead_letter_topic_and_partition_continues() {
    let mc = cluster(&[("alerts", 1), ("dlq", 1)]);
    let brokers = mc.bootstrap_servers();
    let rules = rules_dir();
    let p = producer(&brokers);
    let big = am_payload(
        &(0..100)
            .map(|i| ("Big".to_string(), format!("host-{i}")))
            .collect::<Vec<_>>(),
    );
    assert!(big.len() > 4096);
    let messages: Vec<Vec<u8>> = vec![
        one_alert("Good", "g1"),
        b"this is not json".to_vec(),
        one_alert("Good", "g2"),
        br#"{"version":"4","status":"firing"}"#.to_vec(),
        big,
        one_alert("Good", "g3"),
    ];
    for m in &messages {
        produce(&p, "alerts", Some(0), "poison-key", m).await;
    }
    let kafka = kafka_source(
        &brokers,
        "g-poison",
        "alerts",
        "dlq",
        "    max_message_bytes: 4096\n    commit_interval_ms: 100\n",
    );
    let d = start_daemon(&config(
        &redis_url(),
        &unique_prefix("poison"),
        &kafka,
        &rules,
    ))
    .await;
    eventually(WAIT, "the 3 good alerts stored", || async {
        alert_count(&d).await == 3
    })
    .await;
    eventually(WAIT, "all 6 offsets committed", || async {
        committed_async(brokers.clone(), "g-poison".into(), "alerts".into(), 1).await == vec![6]
    })
    .await;

    let b = brokers.clone();
    let dead = tokio::task::spawn_blocking(move || read_topic(&b, "dlq", 3, WAIT))
        .await
        .unwrap();
    let got: Vec<(String, String, String, String)> = dead
        .iter()
        .map(|m| {
            (
                header(m, "incidentd.reason").unwrap(),
                header(m, "incidentd.source.topic").unwrap(),
                header(m, "incidentd.source.partition").unwrap(),
                header(m, "incidentd.source.offset").unwrap(),
            )
        })
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        got,
        vec![
            (s("malformed_json"), s("alerts"), s("0"), s("1")),
            (s("missing_field"), s("alerts"), s("0"), s("3")),
            (s("too_large"), s("alerts"), s("0"), s("4")),
        ]
    );
    // The bad payload is kept as it was, with its key; the too-large one is not.
    assert_eq!(dead[0].payload(), Some(&b"this is not json"[..]));
    assert_eq!(dead[0].key(), Some(&b"poison-key"[..]));
    assert!(
        header(&dead[1], "incidentd.error")
            .unwrap()
            .contains("alerts")
    );
    assert_eq!(dead[2].payload().unwrap_or_default().len(), 0);
    assert!(
        header(&dead[2], "incidentd.payload_bytes")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 4096
    );
    assert_eq!(
        metric(
            &d,
            "incidentd_kafka_dead_lettered_total{reason=\"malformed_json\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            &d,
            "incidentd_kafka_messages_consumed_total{topic=\"alerts\"}"
        )
        .await,
        Some(6.0)
    );
    // Every batch taken is timed once it is stored.
    let batches = metric(&d, "incidentd_kafka_batch_duration_seconds_count").await;
    assert!(
        batches.is_some_and(|n| (1.0..=6.0).contains(&n)),
        "{batches:?}"
    );
    // Lag comes from librdkafka's statistics (every 5 s): all committed, none left.
    eventually(WAIT, "consumer lag 0 on alerts/0", || async {
        metric(
            &d,
            "incidentd_kafka_consumer_lag{partition=\"0\",topic=\"alerts\"}",
        )
        .await
            == Some(0.0)
    })
    .await;
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_commits_what_is_stored_before_the_commit_interval() {
    let mc = cluster(&[("alerts", 1)]);
    let brokers = mc.bootstrap_servers();
    let rules = rules_dir();
    let p = producer(&brokers);
    for i in 0..4 {
        produce(
            &p,
            "alerts",
            Some(0),
            "k",
            &one_alert("Shutdown", &format!("s{i}")),
        )
        .await;
    }
    let kafka = kafka_source(
        &brokers,
        "g-shutdown",
        "alerts",
        "dlq",
        "    commit_interval_ms: 600000\n",
    );
    let d = start_daemon(&config(
        &redis_url(),
        &unique_prefix("shutdown"),
        &kafka,
        &rules,
    ))
    .await;
    eventually(WAIT, "4 alerts stored", || async {
        alert_count(&d).await == 4
    })
    .await;
    let before = committed_async(brokers.clone(), "g-shutdown".into(), "alerts".into(), 1).await;
    assert_eq!(before, vec![-1], "committed before the interval");
    d.shutdown().await.unwrap();
    let after = committed_async(brokers.clone(), "g-shutdown".into(), "alerts".into(), 1).await;
    assert_eq!(after, vec![4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_produces_each_incidents_changes_to_one_partition_in_version_order() {
    let mc = cluster(&[("incidents", 3)]);
    let brokers = mc.bootstrap_servers();
    let rules = rules_dir();
    let yaml = format!(
        "{}rules:\n  dir: {}\nadapters:\n  bus:\n    type: kafka\n    brokers: \"{brokers}\"\n    topic: incidents\n    delivery: {{timeout_ms: 5000}}\nincidents:\n  route_all_to: [bus]\n",
        redis_config(&redis_url(), &unique_prefix("sink")),
        rules.path().display()
    );
    let d = start_daemon(&yaml).await;
    // Five incidents (one per alertname), each created then updated by more alerts.
    for round in 0..3 {
        for n in 0..5 {
            let body =
                String::from_utf8(one_alert(&format!("Sink{n}"), &format!("r{round}"))).unwrap();
            assert_eq!(
                post_json(&d, "/api/v1/alerts/alertmanager", &body)
                    .await
                    .status(),
                200
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually(WAIT, "the sink produced", || async {
        metric(&d, "incidentd_kafka_sink_produced_total{adapter=\"bus\"}")
            .await
            .is_some_and(|n| n >= 10.0)
    })
    .await;
    // Let the outbox settle before reading everything.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = brokers.clone();
    let msgs = tokio::task::spawn_blocking(move || {
        read_topic(&b, "incidents", 1000, Duration::from_secs(5))
    })
    .await
    .unwrap();
    let mut by_key: BTreeMap<String, Vec<(i32, i64, u64, String)>> = BTreeMap::new();
    for m in &msgs {
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(v["incident_id"], key.as_str());
        assert_eq!(v["incident"]["id"], key.as_str());
        assert_eq!(
            header(m, "incidentd.version").unwrap(),
            v["version"].as_u64().unwrap().to_string()
        );
        by_key.entry(key).or_default().push((
            m.partition(),
            m.offset(),
            v["version"].as_u64().unwrap(),
            v["event"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(by_key.len(), 5, "{by_key:#?}");
    for (key, mut changes) in by_key {
        changes.sort_by_key(|c| c.1);
        assert!(
            changes.iter().all(|c| c.0 == changes[0].0),
            "{key}: several partitions"
        );
        assert_eq!(changes[0].3, "created", "{key}: {changes:?}");
        assert!(
            changes.windows(2).all(|w| w[0].2 <= w[1].2),
            "{key}: versions out of order: {changes:?}"
        );
        assert!(changes.len() >= 2, "{key}: no update produced: {changes:?}");
    }
    d.shutdown().await.unwrap();
}

fn check_errors(yaml: &str) -> String {
    incidentd::config::parse(
        std::path::Path::new("k.yaml"),
        yaml,
        &incidentd::config::Overrides::default(),
        |_| None,
    )
    .map(|_| String::new())
    .unwrap_or_else(|e| e.to_string())
}

#[test]
fn kafka_config_errors_name_the_file_line_and_field() {
    let err = check_errors(
        "sources:\n  kafka:\n    brokers: nowhere\n    group_id: \"\"\n    topics:\n      - {name: \"a,b c\", format: alertmanager}\n    dead_letter_topic: a\n    max_message_bytes: 0\n    properties:\n      group.id: mine\n      no.such.property: x\n      sasl.password: hunter2-secret\n",
    );
    for expected in [
        "k.yaml:3: sources.kafka.brokers",
        "k.yaml:4: sources.kafka.group_id: is empty",
        "k.yaml:5: sources.kafka.topics: \"b c\" is not a topic name",
        "k.yaml:7: sources.kafka.dead_letter_topic: must not be one of the topics consumed",
        "k.yaml:8: sources.kafka.max_message_bytes: must be greater than 0",
        "group.id is set by incidentd",
        "no.such.property",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(!err.contains("hunter2"), "a property value leaked: {err}");

    let err = check_errors(
        "sources:\n  kafka:\n    brokers: k:9092\n    group_id: g\n    topics: [{name: a, format: alertmanager}]\n    dead_letter_topic: d\n    poll_timeout: 5\n",
    );
    assert!(
        err.contains("k.yaml:7") && err.contains("unknown field `poll_timeout`"),
        "{err}"
    );

    let err = check_errors(
        "adapters:\n  bus:\n    type: kafka\n    brokers: k:9092\n    topic: \"not ok\"\n    properties: {acks: sometimes}\n",
    );
    assert!(err.contains("k.yaml:5: adapters.bus.topic"), "{err}");
    assert!(err.contains("acks"), "{err}");

    let ok = check_errors(
        "sources:\n  kafka:\n    brokers: k1:9092,k2:9092\n    group_id: g\n    topics: [{name: \"a, b\", format: alertmanager}, {name: c, format: generic}]\n    dead_letter_topic: d\n    properties: {security.protocol: SASL_SSL, sasl.mechanism: PLAIN, sasl.username: u, sasl.password: p}\nadapters:\n  bus: {type: kafka, brokers: \"k:9092\", topic: incidents}\n",
    );
    assert_eq!(ok, "");
}

#[test]
fn bad_kafka_config_makes_check_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "sources:\n  kafka:\n    brokers: k:9092\n    group_id: g\n    topics: [{name: a, format: xml}]\n    dead_letter_topic: d\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_incidentd"))
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:5"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_kafka_topic_opens_a_pipeline_incident_that_resolves_when_messages_return() {
    let mc = cluster(&[("alerts", 1), ("dlq", 1)]);
    let brokers = mc.bootstrap_servers();
    let rules = rules_dir();
    let p = producer(&brokers);
    let source = kafka_source(&brokers, "g-heartbeat", "alerts", "dlq", "");
    let cfg = format!(
        "{}heartbeats:\n  - name: kafka-alerts\n    source: {{kind: kafka, name: alerts}}\n    interval_s: 2\n",
        config(
            &redis_url(),
            &unique_prefix("kafka-heartbeat"),
            &source,
            &rules
        )
    );
    let d = start_daemon(&cfg).await;
    let heartbeat_incident = |d: &incidentd::daemon::Daemon| {
        let url = format!("{}/api/v1/incidents", base(d));
        async move {
            get_json(url).await["incidents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["rule"] == "heartbeat:kafka-alerts")
                .cloned()
        }
    };
    produce(&p, "alerts", Some(0), "k", &one_alert("Beat0", "h1")).await;
    eventually(WAIT, "the first message stored", || async {
        alert_count(&d).await == 1
    })
    .await;
    // Nothing more arrives: past the interval the topic is silent.
    eventually(WAIT, "a pipeline-silent incident", || async {
        heartbeat_incident(&d)
            .await
            .is_some_and(|i| i["state"] != "resolved")
    })
    .await;
    produce(&p, "alerts", Some(0), "k", &one_alert("Beat1", "h1")).await;
    eventually(WAIT, "the pipeline incident resolved", || async {
        heartbeat_incident(&d)
            .await
            .is_some_and(|i| i["state"] == "resolved")
    })
    .await;
    d.shutdown().await.unwrap();
}
