//! Kafka test support shared by `tests/kafka.rs` (librdkafka's mock cluster)
//! and `tests/kafka_e2e.rs` (a real broker): producing, reading a topic from
//! the start, a group's committed offsets, payloads, daemon config.
//!
//! Included with `#[path]` by the Kafka test files only, so the other test
//! crates do not compile it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5")
        // The mock cluster keeps a few MB per partition; compressed batches
        // are stored as they are, so large runs fit.
        .set("compression.codec", "lz4")
        .create()
        .expect("producer")
}

/// Produces one message and waits for the broker's acknowledgement; returns
/// its (partition, offset).
pub async fn produce(
    p: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: &str,
    payload: &[u8],
) -> (i32, i64) {
    let mut r =
        FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(OwnedHeaders::new().insert(Header {
                key: "test",
                value: Some("1"),
            }));
    if let Some(part) = partition {
        r = r.partition(part);
    }
    p.send(r, Duration::from_secs(10))
        .await
        .map(|d| (d.partition, d.offset))
        .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"))
}

/// Every message of `topic` from the beginning, read by a throwaway group,
/// until `expect` have arrived or `timeout` passes.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    expect: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("reader-{}-{}", std::process::id(), fastrand::u64(..)),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    c.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < expect && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
    }
    out
}

/// The offsets `group` has committed on `topic`'s partitions `0..partitions`
/// (-1: none yet).
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("offset reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// Header `key` of `m` as text.
pub fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    use rdkafka::message::Headers;
    let h = m.headers()?;
    h.iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// An Alertmanager webhook payload of firing alerts `(alertname, instance)`.
pub fn am_payload(alerts: &[(String, String)]) -> Vec<u8> {
    let alerts: Vec<_> = alerts
        .iter()
        .map(|(name, instance)| {
            json!({
                "status": "firing",
                "labels": {"alertname": name, "instance": instance, "service": "svc"},
                "annotations": {"summary": "test"},
                "startsAt": "2026-11-25T03:29:01.917Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph",
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "version": "4", "status": "firing", "receiver": "incidentd",
        "groupKey": "{}", "alerts": alerts,
    }))
    .expect("json")
}

/// One firing alert named `name` on `instance`.
pub fn one_alert(name: &str, instance: &str) -> Vec<u8> {
    am_payload(&[(name.to_string(), instance.to_string())])
}

/// A rules directory with one rule: an incident per (alertname, service).
pub fn rules_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: per-service\n    incident:\n      title: \"{{ labels.alertname }}\"\n      impact: low\n      urgency: low\n      group_by: [alertname, service]\n",
    )
    .expect("rules file");
    dir
}

/// `sources.kafka` for the daemon config: alertmanager topics, with extra
/// lines (indented by 4) appended.
pub fn kafka_source(brokers: &str, group: &str, topics: &str, dlq: &str, extra: &str) -> String {
    format!(
        "sources:\n  kafka:\n    brokers: \"{brokers}\"\n    group_id: {group}\n    topics:\n      - {{name: \"{topics}\", format: alertmanager}}\n    dead_letter_topic: {dlq}\n    retry_initial_backoff_ms: 100\n    retry_max_backoff_ms: 1000\n{extra}"
    )
}

/// Polls `check` every 100 ms until it is true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
