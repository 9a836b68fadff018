//! `incidentd-load`: drives a running incidentd (or, for comparison, a
//! Prometheus Alertmanager) with a realistic alert stream and reports throughput,
//! latency and the target's memory.
//!
//! The stream: `--distinct` alert identities spread over services and
//! instances; each send is a repeat of an alert already sent (`--dup-ratio`), a
//! resolve (`--resolve-ratio`), or a new firing alert. A repeat of a resolved
//! alert fires it again with a new `startsAt`, as Prometheus does (with the old
//! one incidentd takes it for an out-of-date resend, stale, which costs it
//! little). Every `--storm-every-s` seconds a burst of `--storm-size` new
//! alerts (new instances, spread over the
//! services and the four alert names) arrives at once. Storm alerts are never
//! resolved, so the target's state grows over a long run, as in an outage that
//! keeps widening. It runs at `--rate` alerts/s, or flat out with `--rate 0`.
//!
//! The report: throughput, latency p50 / p99 / max, and the target's RSS each
//! second (`--pid`), as a markdown table and (`--json`) JSON; runs longer than
//! a minute add the same per minute, to show drift.
//!
//! Latency is send → 2xx. incidentd answers 2xx only after the alerts, the
//! incident changes and their outbox entries are committed, so it bounds the
//! alert → outbox-entry latency from above.
//!
//! With `--kafka-brokers` and `--kafka-topic` the same stream is produced to
//! Kafka instead, one Alertmanager webhook payload (`--batch` alerts) per
//! message, for an incidentd consuming that topic (`--url` is then only its
//! REST API). A Kafka producer's acknowledgement says nothing about incidentd,
//! so:
//!
//! - latency is produce → alert persisted: every `--probe-every-ms` a probe
//!   alert with its own fingerprint is produced, and `GET
//!   /api/v1/alerts/{fingerprint}` is polled (every 2 ms) until it answers
//!   200; the probes' percentiles are the latency (polling adds up to ~2 ms);
//! - throughput is alerts persisted per second: after the run a probe is
//!   produced to every partition, and the clock stops when all of them are
//!   persisted (each partition is consumed in order, so everything produced
//!   before is persisted too). `alerts_per_s` is alerts produced / that time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    /// incidentd's Alertmanager webhook endpoint.
    Incidentd,
    /// Alertmanager's own `POST /api/v2/alerts`.
    Alertmanager,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "incidentd-load",
    version,
    about = "Load generator for incidentd (and Alertmanager, side by side)."
)]
struct Args {
    /// Base URL of the target, e.g. http://127.0.0.1:9797
    #[arg(long)]
    url: String,
    #[arg(long, value_enum, default_value = "incidentd")]
    kind: Kind,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Alerts per second; 0 runs flat out.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Alerts per request.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    #[arg(long, default_value_t = 20_000)]
    distinct: u64,
    #[arg(long, default_value_t = 0.5)]
    dup_ratio: f64,
    #[arg(long, default_value_t = 0.05)]
    resolve_ratio: f64,
    #[arg(long, default_value_t = 5)]
    storm_every_s: u64,
    #[arg(long, default_value_t = 500)]
    storm_size: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// PID of the target, to sample its RSS every second.
    #[arg(long)]
    pid: Option<u32>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Produce to Kafka instead of POSTing: the brokers (host:port,...).
    #[arg(long, requires = "kafka_topic")]
    kafka_brokers: Option<String>,
    /// The topic incidentd consumes as Alertmanager payloads.
    #[arg(long, requires = "kafka_brokers")]
    kafka_topic: Option<String>,
    /// Kafka mode: how often a latency probe is produced.
    #[arg(long, default_value_t = 200)]
    probe_every_ms: u64,
    /// Also write every measured request as CSV here (`sent_at_us,latency_us,storm`,
    /// `sent_at_us` from the start of the run), to see when the slow ones happen.
    #[arg(long)]
    samples: Option<std::path::PathBuf>,
}

/// One measured request.
struct Sample {
    /// When it was sent, from the start of the run.
    at_us: u64,
    /// Send → answer (HTTP) or produce → persisted (Kafka probe).
    us: u64,
    /// Part of a storm burst (HTTP only).
    storm: bool,
}

#[derive(Serialize)]
struct Report {
    kind: Kind,
    seconds: f64,
    alerts_sent: u64,
    alerts_per_s: f64,
    requests: u64,
    errors: u64,
    /// What `latency_ms` measures: `send_to_2xx` (HTTP) or
    /// `produce_to_persisted` (Kafka probes).
    latency: &'static str,
    latency_ms: Percentiles,
    /// The same percentiles per minute of the run (the last minute may be
    /// partial): shows whether latency drifts as the daemon's state grows.
    latency_ms_by_minute: Vec<Percentiles>,
    rss_kib: Vec<u64>,
}

#[derive(Serialize, Default)]
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

/// The alert stream: which alert to send next.
struct Stream {
    rng: fastrand::Rng,
    sent: u64,
    distinct: u64,
    dup_ratio: f64,
    resolve_ratio: f64,
    /// Per distinct alert: its last send was a resolve.
    resolved: Vec<bool>,
    /// Per distinct alert: when it fired again after a resolve (`None`: the
    /// run's start). Prometheus gives an alert firing again a new `startsAt`;
    /// resent with the old one it would be an out-of-date repeat (stale).
    refired_at: Vec<Option<String>>,
}

/// One alert of a request.
#[derive(Clone)]
struct Send {
    n: u64,
    firing: bool,
    /// Its `startsAt`, unless it is the run's start.
    starts: Option<String>,
}

impl Stream {
    fn new(args: &Args) -> Self {
        let distinct = usize::try_from(args.distinct).unwrap_or(usize::MAX);
        Stream {
            rng: fastrand::Rng::with_seed(args.seed),
            sent: 0,
            distinct: args.distinct,
            dup_ratio: args.dup_ratio,
            resolve_ratio: args.resolve_ratio,
            resolved: vec![false; distinct],
            refired_at: vec![None; distinct],
        }
    }

    /// The next alert to send at `now`: a resolve, a repeat (firing again
    /// after a resolve, with a new `startsAt`) or a new alert.
    fn next(&mut self, now: &str) -> Send {
        let seen = self.sent.min(self.distinct);
        let roll = self.rng.f64();
        if seen > 0 && roll < self.resolve_ratio {
            let n = self.rng.u64(0..seen);
            self.resolved[n as usize] = true;
            return self.send(n, false);
        }
        if seen > 0 && (roll < self.resolve_ratio + self.dup_ratio || self.sent >= self.distinct) {
            let n = self.rng.u64(0..seen);
            if std::mem::take(&mut self.resolved[n as usize]) {
                self.refired_at[n as usize] = Some(now.to_string());
            }
            return self.send(n, true);
        }
        self.sent += 1;
        self.send(self.sent - 1, true)
    }

    fn send(&self, n: u64, firing: bool) -> Send {
        let starts = usize::try_from(n)
            .ok()
            .and_then(|i| self.refired_at.get(i).cloned().flatten());
        Send { n, firing, starts }
    }

    /// A new alert (storms: never resolved).
    fn fresh(&mut self) -> Send {
        self.sent += 1;
        Send {
            n: self.sent - 1,
            firing: true,
            starts: None,
        }
    }
}

const NAMES: [&str; 4] = [
    "TargetDown",
    "HighLatency",
    "DiskFilling",
    "ErrorBudgetBurn",
];

fn labels(n: u64) -> Value {
    let name = NAMES[(n % 4) as usize];
    json!({
        "alertname": name,
        "service": format!("svc-{}", (n / 4) % 200),
        "instance": format!("10.{}.{}.{}:9100", n / 65_536 % 256, n / 256 % 256, n % 256),
        "cluster": "eu1",
        "severity": if n.is_multiple_of(3) { "critical" } else { "warning" },
        "team": format!("team-{}", n % 7),
    })
}

fn body(kind: Kind, alerts: &[Send], starts: &str, now: &str) -> Value {
    match kind {
        Kind::Incidentd => json!({
            "version": "4", "status": "firing", "receiver": "load",
            "alerts": alerts.iter().map(|a| json!({
                "status": if a.firing { "firing" } else { "resolved" },
                "labels": labels(a.n),
                "annotations": {"summary": "load test alert"},
                "startsAt": a.starts.as_deref().unwrap_or(starts),
                "endsAt": if a.firing { "0001-01-01T00:00:00Z" } else { now },
                "generatorURL": "http://prometheus:9090/graph",
            })).collect::<Vec<_>>(),
        }),
        Kind::Alertmanager => Value::Array(
            alerts
                .iter()
                .map(|s| {
                    let mut a = json!({
                        "labels": labels(s.n),
                        "annotations": {"summary": "load test alert"},
                        "startsAt": s.starts.as_deref().unwrap_or(starts),
                        "generatorURL": "http://prometheus:9090/graph",
                    });
                    if !s.firing {
                        a["endsAt"] = json!(now);
                    }
                    a
                })
                .collect(),
        ),
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Kafka mode: the producer and where probes are read back.
struct KafkaTarget {
    producer: rdkafka::producer::FutureProducer,
    topic: String,
    api: String,
    client: reqwest::Client,
}

impl KafkaTarget {
    async fn send(&self, payload: &Value, partition: Option<i32>) -> bool {
        let Ok(bytes) = serde_json::to_vec(payload) else {
            return false;
        };
        let mut record =
            rdkafka::producer::FutureRecord::<(), [u8]>::to(&self.topic).payload(&bytes);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .is_ok()
    }

    /// Produces probe `id` (to `partition`, or where the partitioner puts
    /// it) and waits until incidentd has it; the time that took.
    async fn probe(&self, id: &str, partition: Option<i32>, starts: &str) -> Option<Duration> {
        let fp = format!("loadprobe-{id}");
        let payload = json!({
            "version": "4", "status": "firing", "receiver": "load",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "LoadProbe", "probe": id},
                "annotations": {}, "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": fp,
            }],
        });
        let t = Instant::now();
        if !self.send(&payload, partition).await {
            return None;
        }
        let url = format!("{}/api/v1/alerts/{fp}", self.api);
        let give_up = t + Duration::from_secs(120);
        while Instant::now() < give_up {
            if self
                .client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Some(t.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        None
    }
}

fn kafka_target(args: &Args, client: &reqwest::Client) -> Result<Option<Arc<KafkaTarget>>, String> {
    let (Some(brokers), Some(topic)) = (&args.kafka_brokers, &args.kafka_topic) else {
        return Ok(None);
    };
    if args.kind != Kind::Incidentd {
        return Err("--kafka-brokers drives incidentd only".into());
    }
    let producer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(|e| format!("kafka producer: {e}"))?;
    Ok(Some(Arc::new(KafkaTarget {
        producer,
        topic: topic.clone(),
        api: args.url.trim_end_matches('/').to_string(),
        client: client.clone(),
    })))
}

/// The topic's partition count, from the broker's metadata.
fn partitions(k: &KafkaTarget) -> i32 {
    use rdkafka::producer::Producer;
    k.producer
        .client()
        .fetch_metadata(Some(&k.topic), Duration::from_secs(10))
        .ok()
        .and_then(|m| m.topics().first().map(|t| t.partitions().len() as i32))
        .unwrap_or(1)
        .max(1)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    incidentd::adapters::delivery::install_tls_provider();
    let client = match reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("HTTP client: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let url = match args.kind {
        Kind::Incidentd => format!(
            "{}/api/v1/alerts/alertmanager",
            args.url.trim_end_matches('/')
        ),
        Kind::Alertmanager => format!("{}/api/v2/alerts", args.url.trim_end_matches('/')),
    };
    let kafka = match kafka_target(&args, &client) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let stream = Arc::new(Mutex::new(Stream::new(&args)));
    let latencies = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let (sent, errors, requests) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let slot = Arc::new(AtomicU64::new(0));
    let starts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let last_storm = Arc::new(AtomicU64::new(0));

    let rss = Arc::new(Mutex::new(Vec::new()));
    let sampler = args.pid.map(|pid| {
        let rss = rss.clone();
        tokio::spawn(async move {
            loop {
                if let Some(k) = rss_kib(pid) {
                    rss.lock().await.push(k);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    });

    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, url, stream, latencies) = (
            client.clone(),
            url.clone(),
            stream.clone(),
            latencies.clone(),
        );
        let (sent, errors, requests, slot, last_storm) = (
            sent.clone(),
            errors.clone(),
            requests.clone(),
            slot.clone(),
            last_storm.clone(),
        );
        let (args, starts, kafka) = (args.clone(), starts.clone(), kafka.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                if args.rate > 0 {
                    // Each request takes the next slot of the schedule.
                    let n = slot.fetch_add(1, Ordering::Relaxed);
                    let at = started
                        + Duration::from_secs_f64(n as f64 * args.batch as f64 / args.rate as f64);
                    if at >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
                let elapsed_s = started.elapsed().as_secs();
                let now_s = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let (alerts, storm): (Vec<Send>, bool) = {
                    let mut s = stream.lock().await;
                    let storm_due = args.storm_every_s > 0
                        && elapsed_s / args.storm_every_s > last_storm.load(Ordering::Relaxed);
                    if storm_due {
                        last_storm.store(elapsed_s / args.storm_every_s, Ordering::Relaxed);
                        ((0..args.storm_size).map(|_| s.fresh()).collect(), true)
                    } else {
                        ((0..args.batch).map(|_| s.next(&now_s)).collect(), false)
                    }
                };
                for chunk in alerts.chunks(args.batch.max(1)) {
                    let payload = body(args.kind, chunk, &starts, &now_s);
                    let t = Instant::now();
                    let ok = match &kafka {
                        Some(k) => k.send(&payload, None).await,
                        None => client
                            .post(&url)
                            .json(&payload)
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success()),
                    };
                    let us = t.elapsed().as_micros() as u64;
                    requests.fetch_add(1, Ordering::Relaxed);
                    if ok {
                        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        // Kafka mode: the probes measure latency instead.
                        if kafka.is_none() {
                            latencies.lock().await.push(Sample {
                                at_us: t.duration_since(started).as_micros() as u64,
                                us,
                                storm,
                            });
                        }
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let prober = kafka.clone().map(|k| {
        let (latencies, starts, every) = (
            latencies.clone(),
            starts.clone(),
            Duration::from_millis(args.probe_every_ms.max(1)),
        );
        let run = format!("{}-{}", args.seed, std::process::id());
        tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let t = Instant::now();
                let at_us = t.duration_since(started).as_micros() as u64;
                if let Some(d) = k.probe(&format!("{run}-{n}"), None, &starts).await {
                    latencies.lock().await.push(Sample {
                        at_us,
                        us: d.as_micros() as u64,
                        storm: false,
                    });
                }
                tokio::time::sleep(every.saturating_sub(t.elapsed())).await;
            }
        })
    });
    for w in workers {
        let _ = w.await;
    }
    if let Some(p) = prober {
        let _ = p.await;
    }
    if let Some(k) = &kafka {
        // Drained: a probe behind everything else on every partition.
        let run = format!("{}-{}-end", args.seed, std::process::id());
        let ends: Vec<_> = (0..partitions(k))
            .map(|p| {
                let (k, id, starts) = (k.clone(), format!("{run}-{p}"), starts.clone());
                tokio::spawn(async move { k.probe(&id, Some(p), &starts).await })
            })
            .collect();
        for e in ends {
            if !matches!(e.await, Ok(Some(_))) {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if let Some(s) = sampler {
        s.abort();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let samples = std::mem::take(&mut *latencies.lock().await);
    let mut by_minute: Vec<Vec<u64>> = Vec::new();
    for &Sample { at_us, us, .. } in &samples {
        let m = (at_us / 60_000_000) as usize;
        if by_minute.len() <= m {
            by_minute.resize_with(m + 1, Vec::new);
        }
        by_minute[m].push(us);
    }
    let percentiles = |mut v: Vec<u64>| {
        v.sort_unstable();
        Percentiles {
            p50: percentile(&v, 0.50),
            p99: percentile(&v, 0.99),
            max: percentile(&v, 1.0),
        }
    };
    let latency_ms_by_minute = by_minute.into_iter().map(percentiles).collect();
    let alerts_sent = sent.load(Ordering::Relaxed);
    let report = Report {
        kind: args.kind,
        seconds: elapsed,
        alerts_sent,
        alerts_per_s: alerts_sent as f64 / elapsed,
        requests: requests.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        latency: if kafka.is_some() {
            "produce_to_persisted"
        } else {
            "send_to_2xx"
        },
        latency_ms: percentiles(samples.iter().map(|s| s.us).collect()),
        latency_ms_by_minute,
        rss_kib: rss.lock().await.clone(),
    };
    let rss_line = match (report.rss_kib.first(), report.rss_kib.last()) {
        (Some(a), Some(b)) => format!("{a} → {b} KiB"),
        _ => "-".into(),
    };
    println!("| target | alerts/s | p50 ms | p99 ms | max ms | errors | RSS |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {:?} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
        report.kind,
        report.alerts_per_s,
        report.latency_ms.p50,
        report.latency_ms.p99,
        report.latency_ms.max,
        report.errors,
        rss_line
    );
    if report.latency_ms_by_minute.len() > 1 {
        // Long runs: does latency or memory drift as the target's state grows?
        println!();
        println!("| minute | p50 ms | p99 ms | max ms | RSS at its end |");
        println!("|---|---|---|---|---|");
        for (m, p) in report.latency_ms_by_minute.iter().enumerate() {
            let rss = report
                .rss_kib
                .get((m * 60 + 59).min(report.rss_kib.len().saturating_sub(1)))
                .map_or_else(|| "-".into(), |k| format!("{:.1} MiB", *k as f64 / 1024.0));
            println!(
                "| {} | {:.2} | {:.2} | {:.2} | {} |",
                m + 1,
                p.p50,
                p.p99,
                p.max,
                rss
            );
        }
    }
    if let Some(path) = &args.samples {
        let mut csv = String::from("sent_at_us,latency_us,storm\n");
        for s in &samples {
            csv.push_str(&format!("{},{},{}\n", s.at_us, s.us, u8::from(s.storm)));
        }
        if let Err(e) = std::fs::write(path, csv) {
            eprintln!("cannot write {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
    }
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, &json)
    {
        eprintln!("cannot write {}: {e}", path.display());
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolved_alert_fires_again_with_a_new_starts_at_and_keeps_it_until_resolved() {
        let args = Args::parse_from([
            "incidentd-load",
            "--url",
            "http://127.0.0.1:1",
            "--distinct",
            "5",
            "--resolve-ratio",
            "0.3",
        ]);
        let mut stream = Stream::new(&args);
        let mut last: std::collections::HashMap<u64, Send> = Default::default();
        let mut refired = 0;
        for i in 0..2_000 {
            let now = format!("2026-11-27T00:00:{:02}.{:03}Z", i / 1000, i % 1000);
            let send = stream.next(&now);
            if let Some(prev) = last.get(&send.n) {
                if send.firing && !prev.firing {
                    refired += 1;
                    assert_eq!(send.starts.as_deref(), Some(now.as_str()));
                } else {
                    // The same episode: firing repeats and its resolve keep it.
                    assert_eq!(send.starts, prev.starts);
                }
            } else {
                assert_eq!(send.starts, None, "a new alert starts with the run");
            }
            last.insert(send.n, send);
        }
        assert!(refired > 50, "only {refired} alerts fired again");
    }
}
