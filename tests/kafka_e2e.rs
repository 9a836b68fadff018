//! The Kafka source end to end against a real Kafka-protocol broker (`tansu`,
//! started by `scripts/test.sh`, address in `INCIDENTD_TEST_KAFKA_BROKERS`),
//! real rdkafka producers and real Redis:
//!
//! - 100,000 alerts, a 3-partition topic, two `incidentd run` processes in one
//!   group on one Redis, one killed with SIGKILL halfway: every alert stored,
//!   no incident duplicated (on librdkafka's mock cluster: tansu does not
//!   hand a dead member's partitions to the survivor, see the test);
//! - a poison message in the middle of a partition goes to the dead-letter
//!   topic and the messages after it are processed;
//! - Redis stopped for 30 s during consumption: nothing lost, consumption resumes.

mod common;
#[path = "common/kafka.rs"]
mod ks;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use incidentd::store::{AlertQuery, SharedStore};
use ks::*;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureRecord;

fn brokers() -> String {
    std::env::var("INCIDENTD_TEST_KAFKA_BROKERS").expect(
        "INCIDENTD_TEST_KAFKA_BROKERS is not set: run the suite with scripts/test.sh, \
         which starts a private tansu broker",
    )
}

/// A topic name no other test run uses.
fn topic(name: &str) -> String {
    format!("{}-{}", unique_prefix(name), fastrand::u32(..))
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-")
}

async fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, n)| NewTopic::new(t, *n, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .expect("create topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// The daemon's store, opened from the same config text, to count what is in
/// it beyond the REST API's listing limit.
fn open_store(yaml: &str) -> SharedStore {
    let cfg = incidentd::config::parse(
        Path::new("e2e.yaml"),
        yaml,
        &incidentd::config::Overrides::default(),
        |n| std::env::var(n).ok(),
    )
    .expect("config");
    incidentd::daemon::open_store(&cfg.store, cfg.closed_retention).expect("store")
}

async fn stored_alerts(store: &SharedStore) -> usize {
    store
        .list_alerts(&AlertQuery {
            status: None,
            limit: 1_000_000,
        })
        .await
        .map_or(0, |a| a.len())
}

/// Session settings so that a killed member's partitions move within seconds.
const FAST_REBALANCE: &str =
    "    properties:\n      session.timeout.ms: \"6000\"\n      heartbeat.interval.ms: \"1000\"\n";

fn daemon_config(redis: &str, prefix: &str, kafka: &str, rules: &Path) -> String {
    format!(
        "{}{kafka}rules:\n  dir: {}\n",
        redis_config(redis, prefix),
        rules.display()
    )
}

/// `incidentd run` as a child process, its output in `log`; returns it and
/// its HTTP address.
fn spawn_daemon(config: &Path, log: &Path) -> (Running, String) {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_incidentd"))
        .args([
            "run",
            "--config",
            config.to_str().expect("path"),
            "--listen",
            &addr,
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("incidentd binary");
    (Running(child), format!("http://{addr}"))
}

/// Alerts a daemon has taken from Kafka so far (0 when it does not answer).
async fn received(base: &str) -> usize {
    let Ok(r) = client().get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    metric_value(
        &text,
        "incidentd_alerts_received_total{source=\"kafka_alertmanager\"}",
    )
    .map_or(0, |v| v as usize)
}

/// Kills `a` with SIGKILL once the two instances have taken half the alerts.
async fn kill_halfway(a: &mut Running, killed: &mut bool, urls: [&str; 2], started: Instant) {
    if !*killed && received(urls[0]).await + received(urls[1]).await >= 50_000 {
        a.kill();
        *killed = true;
        eprintln!(
            "killed instance a with SIGKILL after {:?}",
            started.elapsed()
        );
    }
}

/// Incidents by correlation key: (how many, their alerts in total). An
/// incident updated while the listing pages through the index can be listed
/// twice, so incidents are counted by id.
async fn incidents_by_key(store: &SharedStore) -> BTreeMap<String, (usize, usize)> {
    let incidents = store
        .list_incidents(&incidentd::incident::IncidentQuery {
            state: None,
            priority: None,
            service: None,
            limit: 100_000,
        })
        .await
        .unwrap_or_default();
    let mut per_key: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for i in &incidents {
        if !seen.insert(i.id.clone()) {
            continue;
        }
        let e = per_key.entry(i.correlation_key.clone()).or_default();
        e.0 += 1;
        e.1 += i.alert_count;
    }
    per_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_in_one_group_store_every_alert_once_when_one_is_killed_halfway() {
    const MESSAGES: usize = 2_000;
    const PER_MESSAGE: usize = 50;
    const TOTAL: usize = MESSAGES * PER_MESSAGE;
    // tansu 0.6 does not reassign a dead member's partitions (after the
    // session timeout the survivor is rebalanced but still handed only its own
    // share), so this check runs on librdkafka's mock cluster, which
    // implements group membership as Kafka does; the daemons are the real
    // binary all the same, reaching it over TCP. INCIDENTD_TEST_SCALE_ON_TANSU=1
    // runs it on the suite's broker instead (to try a newer tansu).
    let alerts = topic("scale");
    let dlq = topic("scale-dlq");
    let on_tansu = std::env::var("INCIDENTD_TEST_SCALE_ON_TANSU").is_ok_and(|v| v == "1");
    let mock = (!on_tansu).then(|| rdkafka::mocking::MockCluster::new(1).expect("mock cluster"));
    let brokers = match &mock {
        Some(mc) => {
            mc.create_topic(&alerts, 3, 1).expect("topic");
            mc.create_topic(&dlq, 1, 1).expect("topic");
            mc.bootstrap_servers()
        }
        None => {
            let b = brokers();
            create_topics(&b, &[(&alerts, 3), (&dlq, 1)]).await;
            b
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_dir();
    let group = topic("scale-group");
    let kafka = kafka_source(&brokers, &group, &alerts, &dlq, FAST_REBALANCE);
    let yaml = format!(
        // A generous response timeout: on a busy 2-core machine a store call
        // under this load can take seconds.
        "store:\n  url: {}\n  key_prefix: {}\n  response_timeout_ms: 15000\n{kafka}rules:\n  dir: {}\n",
        redis_url(),
        unique_prefix("scale"),
        rules.path().display()
    );
    let config = dir.path().join("incidentd.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let store = open_store(&yaml);

    let (mut a, a_url) = spawn_daemon(&config, &dir.path().join("a.log"));
    let (_b, b_url) = spawn_daemon(&config, &dir.path().join("b.log"));

    // Message m: 50 alerts of service m, so one incident of 50 alerts per
    // message; a message redelivered after the kill must join its incident.
    let p = producer(&brokers);
    let started = Instant::now();
    let mut killed = false;
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(100) {
        let sends: Vec<_> = chunk
            .iter()
            .map(|m| {
                let batch: Vec<(String, String)> = (0..PER_MESSAGE)
                    .map(|k| ("ScaleOut".to_string(), format!("m{m}-{k}")))
                    .collect();
                let payload = am_payload_for_service(&batch, &format!("svc{m}"));
                let (p, alerts) = (p.clone(), alerts.clone());
                let part = (*m % 3) as i32;
                async move {
                    p.send(
                        FutureRecord::to(&alerts)
                            .partition(part)
                            .key("k")
                            .payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
                }
            })
            .collect();
        for r in futures_util::future::join_all(sends).await {
            r.expect("produce");
        }
        kill_halfway(&mut a, &mut killed, [&a_url, &b_url], started).await;
    }
    eprintln!("produced {TOTAL} alerts in {:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut per_key;
    loop {
        kill_halfway(&mut a, &mut killed, [&a_url, &b_url], started).await;
        per_key = incidents_by_key(&store).await;
        let attached: usize = per_key.values().map(|(_, n)| n).sum();
        if killed && attached >= TOTAL {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{attached} of {TOTAL} alerts in incidents; logs in {}",
            dir.keep().display()
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{TOTAL} alerts stored and correlated by two instances (one killed) in {elapsed:?} ({:.0} alerts/s)",
        TOTAL as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(stored_alerts(&store).await, TOTAL);
    let duplicated: Vec<_> = per_key.iter().filter(|(_, (n, _))| *n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "duplicated incidents: {duplicated:?}; logs in {}",
        dir.keep().display()
    );
    assert_eq!(per_key.len(), MESSAGES);
    for (key, (_, n)) in &per_key {
        assert_eq!(*n, PER_MESSAGE, "{key}");
    }
}

/// [`am_payload`] with every alert's `service` label set.
fn am_payload_for_service(alerts: &[(String, String)], service: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&am_payload(alerts)).unwrap();
    for a in v["alerts"].as_array_mut().unwrap() {
        a["labels"]["service"] = service.into();
    }
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_in_the_middle_of_a_partition_is_dead_lettered_and_the_rest_processed() {
    let brokers = brokers();
    let alerts = topic("poison");
    let dlq = topic("poison-dlq");
    create_topics(&brokers, &[(&alerts, 3), (&dlq, 1)]).await;
    let p = producer(&brokers);
    for i in 0..10 {
        produce(
            &p,
            &alerts,
            Some(1),
            "k",
            &one_alert("Before", &format!("b{i}")),
        )
        .await;
    }
    let (_, poison_offset) = produce(
        &p,
        &alerts,
        Some(1),
        "bad",
        b"{\"version\": \"4\", \"alerts\": [",
    )
    .await;
    for i in 0..10 {
        produce(
            &p,
            &alerts,
            Some(1),
            "k",
            &one_alert("After", &format!("a{i}")),
        )
        .await;
    }
    let rules = rules_dir();
    let kafka = kafka_source(&brokers, &topic("poison-group"), &alerts, &dlq, "");
    let yaml = daemon_config(
        &redis_url(),
        &unique_prefix("e2e-poison"),
        &kafka,
        rules.path(),
    );
    let d = start_daemon(&yaml).await;
    let store = open_store(&yaml);
    eventually(Duration::from_secs(60), "20 good alerts stored", || async {
        stored_alerts(&store).await == 20
    })
    .await;
    let b = brokers.clone();
    let dead =
        tokio::task::spawn_blocking(move || read_topic(&b, &dlq, 1, Duration::from_secs(30)))
            .await
            .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header(&dead[0], "incidentd.reason").as_deref(),
        Some("malformed_json")
    );
    assert_eq!(
        header(&dead[0], "incidentd.source.topic"),
        Some(alerts.clone())
    );
    assert_eq!(
        header(&dead[0], "incidentd.source.partition").as_deref(),
        Some("1")
    );
    assert_eq!(
        header(&dead[0], "incidentd.source.offset"),
        Some(poison_offset.to_string())
    );
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_30_seconds_during_consumption_loses_nothing_and_consumption_resumes() {
    let brokers = brokers();
    let alerts = topic("outage");
    let dlq = topic("outage-dlq");
    create_topics(&brokers, &[(&alerts, 3), (&dlq, 1)]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start_durable(dir.path());
    let rules = rules_dir();
    let kafka = kafka_source(&brokers, &topic("outage-group"), &alerts, &dlq, "");
    let yaml = daemon_config(
        &redis.url(),
        &unique_prefix("e2e-outage"),
        &kafka,
        rules.path(),
    );
    let d = start_daemon(&yaml).await;
    let store = open_store(&yaml);

    // A steady stream: 10 alerts every 100 ms for 40 s, across the outage.
    const MESSAGES: usize = 400;
    let producing = {
        let (brokers, alerts) = (brokers.clone(), alerts.clone());
        tokio::spawn(async move {
            let p = producer(&brokers);
            for m in 0..MESSAGES {
                let batch: Vec<(String, String)> = (0..10)
                    .map(|k| ("Outage".to_string(), format!("m{m}-{k}")))
                    .collect();
                produce(&p, &alerts, Some((m % 3) as i32), "k", &am_payload(&batch)).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    eventually(Duration::from_secs(60), "consumption under way", || async {
        stored_alerts(&store).await >= 100
    })
    .await;
    redis.stop();
    let down = Instant::now();
    eventually(Duration::from_secs(20), "consumption paused", || async {
        get_text(format!("{}/metrics", base(&d)))
            .await
            .contains("incidentd_kafka_consumer_paused 1")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    redis.restart();
    producing.await.unwrap();
    eventually(Duration::from_secs(60), "every alert stored", || async {
        stored_alerts(&store).await == MESSAGES * 10
    })
    .await;
    eventually(Duration::from_secs(10), "consumption resumed", || async {
        get_text(format!("{}/metrics", base(&d)))
            .await
            .contains("incidentd_kafka_consumer_paused 0")
    })
    .await;
    d.shutdown().await.unwrap();
}
