//! Hot functions of the ingest path: decoding + fingerprinting a webhook body, and
//! recording a batch in the memory store and (when `INCIDENTD_TEST_REDIS_URL` is
//! set) in Redis, one round trip per batch.
//!
//! `cargo bench --bench ingest`

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use incidentd::formats::Format;
use incidentd::store::StateStore;
use incidentd::store::memory::MemoryStore;
use incidentd::store::redis::{RedisOptions, RedisStore};

const CAPTURE: &str = include_str!("../tests/fixtures/alertmanager/am-0.25-webhook-v4.jsonl");

/// An Alertmanager body with `n` distinct alerts shaped like the captured ones.
fn am_body(n: usize, offset: usize) -> String {
    am_body_over(n, offset, 17, "firing", 3 * 3600 + 29 * 60 + 1)
}

/// [`am_body`] with the alerts spread over `services` services (1: the whole
/// body is one group, as Alertmanager sends a group's alerts together), all
/// with `status`, starting `second`s into 2026-11-25 (an alert firing again
/// starts later than it did, or it is a stale repeat).
fn am_body_over(n: usize, offset: usize, services: usize, status: &str, second: usize) -> String {
    let alerts: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"status":"{status}","labels":{{"alertname":"TargetDown","cluster":"eu1","instance":"10.0.{}.{}:9100","job":"api","service":"svc-{}","severity":"critical","team":"payments"}},"annotations":{{"summary":"target down"}},"startsAt":"2026-11-25T{:02}:{:02}:{:02}.917Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus/graph"}}"#,
                (i + offset) / 250,
                (i + offset) % 250,
                (i + offset) % services,
                second / 3600 % 24,
                second / 60 % 60,
                second % 60
            )
        })
        .collect();
    format!(
        r#"{{"version":"4","status":"firing","receiver":"r","alerts":[{}]}}"#,
        alerts.join(",")
    )
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    let captured = CAPTURE.lines().nth(2).unwrap_or_default();
    g.throughput(Throughput::Elements(3));
    g.bench_function("alertmanager_captured_3_alerts", |b| {
        b.iter(|| Format::Alertmanager.decode(captured.as_bytes(), Utc::now()))
    });
    // Without a sender fingerprint every alert is hashed from its labels.
    let body = am_body(10, 0);
    g.throughput(Throughput::Elements(10));
    g.bench_function("alertmanager_10_alerts_label_fingerprint", |b| {
        b.iter(|| Format::Alertmanager.decode(body.as_bytes(), Utc::now()))
    });
    g.finish();
}

fn record(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // The Redis connection manager spawns its task on the current runtime.
    let _guard = rt.enter();
    let mut g = c.benchmark_group("record_batch");
    for n in [10usize, 100] {
        let alerts = Format::Alertmanager
            .decode(am_body(n, 0).as_bytes(), Utc::now())
            .expect("bench body decodes");
        g.throughput(Throughput::Elements(n as u64));
        let memory = Arc::new(MemoryStore::new(Duration::from_secs(3600)));
        g.bench_with_input(BenchmarkId::new("memory", n), &alerts, |b, alerts| {
            b.to_async(&rt)
                .iter(|| memory.record_alerts(alerts, Utc::now()))
        });
        if let Ok(url) = std::env::var("INCIDENTD_TEST_REDIS_URL") {
            let redis = RedisStore::new(&RedisOptions {
                url,
                key_prefix: format!("bench-{}", std::process::id()),
                resolved_retention: Duration::from_secs(3600),
                connect_timeout: Duration::from_secs(1),
                response_timeout: Duration::from_secs(2),
            })
            .expect("redis store");
            g.bench_with_input(BenchmarkId::new("redis", n), &alerts, |b, alerts| {
                b.to_async(&rt)
                    .iter(|| redis.record_alerts(alerts, Utc::now()))
            });
        }
    }
    g.finish();
}

/// `n` rules like an SRE writes them; the alerts match the last one, so every
/// rule is tried (the worst case for first-match evaluation).
fn rules(n: usize) -> incidentd::rules::RuleSet {
    let mut yaml = String::from("rules:\n");
    for i in 0..n.saturating_sub(1) {
        yaml.push_str(&format!(
            "  - name: r{i}\n    match: ['alertname=\"Alert{i}\"', 'severity=~\"critical|warning\"']\n    incident: {{title: \"{{{{ labels.alertname }}}}\", impact: high, urgency: high, group_by: [service]}}\n"
        ));
    }
    yaml.push_str("  - name: last\n    match: ['alertname=~\"Target.*\"']\n    incident: {title: \"{{ labels.service }} down\", impact: high, urgency: high, group_by: [alertname, service]}\n");
    incidentd::rules::RuleSet::from_sources(&[(std::path::PathBuf::from("bench.yaml"), yaml)])
        .expect("bench rules compile")
}

fn evaluate(c: &mut Criterion) {
    let alerts = Format::Alertmanager
        .decode(am_body(10, 0).as_bytes(), Utc::now())
        .expect("bench body decodes");
    let mut g = c.benchmark_group("rule_evaluation");
    g.throughput(Throughput::Elements(alerts.len() as u64));
    for n in [10usize, 100, 1000] {
        let set = rules(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &set, |b, set| {
            b.iter(|| alerts.iter().map(|a| set.evaluate(a).len()).sum::<usize>())
        });
    }
    g.finish();
}

/// Rules, dedup and correlation into incidents on the memory store: the whole
/// ingest path minus HTTP, 10 alerts per batch, half of them repeats.
fn correlate(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sim = incidentd::simulate::Simulation::new(Arc::new(rules(10))).expect("simulation");
    let mut offset = 0usize;
    let mut g = c.benchmark_group("ingest_and_correlate");
    g.throughput(Throughput::Elements(10));
    g.bench_function("memory_store_10_alerts", |b| {
        b.to_async(&rt).iter(|| {
            // Half new alerts, half repeats of the previous batch, over 2,000
            // distinct alerts (so 17 incidents of about 120 alerts each: the
            // cost of an incident update grows with its alert count).
            offset = (offset + 5) % 2_000;
            let alerts = Format::Alertmanager
                .decode(am_body(10, offset).as_bytes(), Utc::now())
                .expect("bench body decodes");
            let sim = &sim;
            async move { sim.feed("bench", alerts, Utc::now()).await }
        })
    });
    g.finish();

    // One group per body, as Alertmanager sends a group: 20 alerts into one
    // incident of 400 alerts, each a status change (they fire, then resolve
    // on the next pass over the 400, and so on). Every alert of the body
    // changes that incident in turn before it is written once.
    let sim = incidentd::simulate::Simulation::new(Arc::new(rules(10))).expect("simulation");
    let mut sent = 0usize;
    let mut g = c.benchmark_group("ingest_and_correlate");
    g.throughput(Throughput::Elements(20));
    g.bench_function("memory_store_one_group_20_alerts", |b| {
        b.to_async(&rt).iter(|| {
            let status = if (sent / 400).is_multiple_of(2) {
                "firing"
            } else {
                "resolved"
            };
            let body = am_body_over(20, sent % 400, 1, status, sent / 400);
            sent += 20;
            let alerts = Format::Alertmanager
                .decode(body.as_bytes(), Utc::now())
                .expect("bench body decodes");
            let sim = &sim;
            async move { sim.feed("bench", alerts, Utc::now()).await }
        })
    });
    g.finish();
}

/// An incident document written and read back, as every incident update does
/// (the Redis store keeps incidents as JSON): an incident of 120 alerts, each
/// fired, resolved and fired again, and its timeline. The whole incident (what
/// the API and adapters read) next to the Redis store's document, which leaves
/// the timeline to a list of its own and the alerts' labels and annotations as
/// text until read (written back as read: `..._as_read`). Next to it, one timestamp read
/// by chrono's serde support and by the incident document's own reader, in the
/// same run.
fn incident_document(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sim = incidentd::simulate::Simulation::new(Arc::new(rules(10))).expect("simulation");
    let start = Utc::now();
    for round in 0..3i64 {
        for batch in 0..12 {
            let at = start + chrono::Duration::seconds(round * 60 + batch);
            // One service: all 120 alerts correlate into one incident.
            let body = am_body(10, batch as usize * 10)
                .replace(r#""service":"svc-"#, r#""service":"svc-0","shard":""#);
            let mut alerts = Format::Alertmanager
                .decode(body.as_bytes(), at)
                .expect("bench body decodes");
            if round == 1 {
                // A resolve and a re-fire: status changes and timeline entries.
                for a in &mut alerts {
                    a.status = incidentd::alert::Status::Resolved;
                }
            }
            rt.block_on(sim.feed("bench", alerts, at)).expect("feed");
        }
    }
    let incidents = rt.block_on(sim.incidents()).expect("incidents");
    let incident = incidents
        .into_iter()
        .max_by_key(|i| i.alerts.len())
        .expect("an incident");
    let json = serde_json::to_string(&incident).expect("serializes");
    let mut g = c.benchmark_group("incident_document");
    g.throughput(Throughput::Bytes(json.len() as u64));
    g.bench_function(
        format!(
            "to_json_{}_alerts_{}_entries",
            incident.alerts.len(),
            incident.timeline.len()
        ),
        |b| b.iter(|| serde_json::to_string(&incident)),
    );
    g.bench_function(
        format!(
            "from_json_{}_alerts_{}_entries",
            incident.alerts.len(),
            incident.timeline.len()
        ),
        |b| b.iter(|| serde_json::from_str::<incidentd::incident::Incident>(&json)),
    );
    let doc = incidentd::incident::to_store_document(&incident).expect("serializes");
    g.bench_function(
        format!("store_doc_to_json_{}_alerts", incident.alerts.len()),
        |b| b.iter(|| incidentd::incident::to_store_document(&incident)),
    );
    g.bench_function(
        format!("store_doc_from_json_{}_alerts", incident.alerts.len()),
        |b| b.iter(|| incidentd::incident::from_store_document(doc.as_bytes())),
    );
    // An update's round trip: the document read, then written back (labels
    // and annotations left as read; see `incident::stored_map`).
    let read = incidentd::incident::from_store_document(doc.as_bytes()).expect("reads");
    g.bench_function(
        format!("store_doc_to_json_as_read_{}_alerts", incident.alerts.len()),
        |b| b.iter(|| incidentd::incident::to_store_document(&read)),
    );
    g.finish();

    let mut g = c.benchmark_group("timestamp_from_json");
    let text = "\"2026-11-27T03:15:00.123Z\"";
    g.bench_function("chrono", |b| {
        b.iter(|| serde_json::from_str::<chrono::DateTime<Utc>>(text))
    });
    g.bench_function("incident_document", |b| {
        b.iter(|| {
            incidentd::incident::rfc3339::deserialize(&mut serde_json::Deserializer::from_str(text))
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    decode,
    record,
    evaluate,
    correlate,
    incident_document
);
criterion_main!(benches);
