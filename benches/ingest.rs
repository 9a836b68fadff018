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
    let alerts: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"status":"firing","labels":{{"alertname":"TargetDown","cluster":"eu1","instance":"10.0.{}.{}:9100","job":"api","service":"svc-{}","severity":"critical","team":"payments"}},"annotations":{{"summary":"target down"}},"startsAt":"2026-11-25T03:29:01.917Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus/graph"}}"#,
                (i + offset) / 250,
                (i + offset) % 250,
                (i + offset) % 17
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

criterion_group!(benches, decode, record);
criterion_main!(benches);
