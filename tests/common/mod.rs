//! Shared test support: real Redis servers, in-process daemons, fixtures.
//!
//! The suite's Redis comes from `INCIDENTD_TEST_REDIS_URL`, which the test
//! command (`scripts/test.sh`) sets after starting a private `redis-server`.
//! Tests that stop and restart Redis start their own with [`RedisServer`].
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use incidentd::config::{self, Overrides};
use incidentd::daemon::Daemon;

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Lines of a JSON-lines fixture.
pub fn fixture_lines(rel: &str) -> Vec<String> {
    std::fs::read_to_string(fixture(rel))
        .expect("fixture")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The shared Redis of the test run.
pub fn redis_url() -> String {
    std::env::var("INCIDENTD_TEST_REDIS_URL").expect(
        "INCIDENTD_TEST_REDIS_URL is not set: run the suite with scripts/test.sh, \
         which starts a private redis-server",
    )
}

/// A private three-node Redis Cluster (`redis-cluster://...`).
pub fn redis_cluster_url() -> String {
    std::env::var("INCIDENTD_TEST_REDIS_CLUSTER_URL").expect(
        "INCIDENTD_TEST_REDIS_CLUSTER_URL is not set: run the suite with scripts/test.sh, \
         which starts a private Redis Cluster",
    )
}

/// A key prefix no other test uses, so tests share one Redis without flushing it.
pub fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t-{}-{}-{}-{}",
        test,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_micros()
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A free port for a server a test stops and starts again on it. Not from the
/// kernel's ephemeral range (32768–60999 by default), where a connection
/// another test opens while the server is down can take the port and the
/// restart fails (or finds someone else listening); nor from `scripts/test.sh`'s
/// (20000–39999, cluster bus ports included).
pub fn restartable_port() -> u16 {
    const FIRST: u32 = 12_000;
    const SPAN: u32 = 8_000;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id() % SPAN;
    for _ in 0..SPAN {
        let port = (FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

/// A private `redis-server` this test can stop and start again on the same port.
pub struct RedisServer {
    pub port: u16,
    /// Where a durable server keeps its append-only file; `None`: in memory
    /// only, so a restart starts empty.
    durable_dir: Option<PathBuf>,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::started(None)
    }

    /// One that keeps its data across a restart (append-only file, fsync on
    /// every write), as a production Redis does.
    pub fn start_durable(dir: &Path) -> Self {
        Self::started(Some(dir.to_path_buf()))
    }

    fn started(durable_dir: Option<PathBuf>) -> Self {
        let mut s = RedisServer {
            port: restartable_port(),
            durable_dir,
            child: None,
        };
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn restart(&mut self) {
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let mut cmd = Command::new(bin);
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ]);
        match &self.durable_dir {
            Some(dir) => cmd
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir),
            None => cmd.args(["--appendonly", "no"]),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/test.sh installs it)");
        // Kept before waiting, so a failed start is still killed on drop.
        let child = self.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a daemon in this process from config text (its listen address is
/// replaced by a free port).
pub async fn start_daemon(yaml: &str) -> Daemon {
    // INCIDENTD_TEST_LOG=debug shows the daemons' logs in failing tests.
    if let Ok(level) = std::env::var("INCIDENTD_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(level)
            .with_test_writer()
            .try_init();
    }
    let cfg = config::parse(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/test.yaml"),
        yaml,
        &Overrides {
            listen: Some("127.0.0.1:0".into()),
            store: None,
        },
        |n| std::env::var(n).ok(),
    )
    .unwrap_or_else(|e| panic!("test config: {e}"));
    let rules = incidentd::daemon::load_rules(&cfg).unwrap_or_else(|e| panic!("test rules: {e}"));
    Daemon::start(&cfg, rules, prometheus::Registry::new())
        .await
        .expect("daemon starts")
}

/// Config text for a daemon on the given Redis with its own key prefix.
pub fn redis_config(url: &str, prefix: &str) -> String {
    format!(
        "store:\n  url: {url}\n  key_prefix: {prefix}\n  connect_timeout_ms: 300\n  response_timeout_ms: 500\n"
    )
}

pub fn client() -> reqwest::Client {
    incidentd::adapters::delivery::install_tls_provider();
    reqwest::Client::new()
}

pub fn base(d: &Daemon) -> String {
    format!("http://{}", d.local_addr)
}

/// Every alert the daemon lists, by fingerprint.
pub async fn alerts_by_fp(d: &Daemon) -> std::collections::BTreeMap<String, serde_json::Value> {
    let v = get_json(format!("{}/api/v1/alerts?limit=10000", base(d))).await;
    v["alerts"]
        .as_array()
        .expect("alerts array")
        .iter()
        .map(|a| {
            (
                a["fingerprint"].as_str().expect("fp").to_string(),
                a.clone(),
            )
        })
        .collect()
}

/// `GET url`, the body as JSON.
pub async fn get_json(url: impl reqwest::IntoUrl) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json body")
}

/// `GET url`, the body as text.
pub async fn get_text(url: impl reqwest::IntoUrl) -> String {
    client()
        .get(url)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text body")
}

/// `GET url`, the status only.
pub async fn get_status(url: impl reqwest::IntoUrl) -> reqwest::StatusCode {
    client().get(url).send().await.expect("get").status()
}

/// `POST url` without a body, the status only.
pub async fn post_status(url: impl reqwest::IntoUrl) -> reqwest::StatusCode {
    client().post(url).send().await.expect("post").status()
}

pub async fn post_json(d: &Daemon, path: &str, body: &str) -> reqwest::Response {
    client()
        .post(format!("{}{}", base(d), path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("post")
}

/// The value of the first line of a Prometheus text exposition that starts
/// with `line_prefix` (a name, with its labels when it has some); `None` when
/// there is no such line.
pub fn metric_value(exposition: &str, line_prefix: &str) -> Option<f64> {
    let line = exposition.lines().find(|l| l.starts_with(line_prefix))?;
    let value = line.rsplit(' ').next().unwrap_or_default();
    Some(
        value
            .parse()
            .unwrap_or_else(|e| panic!("metrics line {line:?}: {e}")),
    )
}

/// An incident as the adapters' contract tests start from: every field set,
/// state new, one timeline entry. Each test file overrides what it checks.
pub fn sample_incident(id: &str) -> incidentd::incident::Incident {
    use chrono::TimeZone;
    use incidentd::incident::{Incident, IncidentState, Policy, TimelineEntry};
    use incidentd::rules::Level;
    let t0 = chrono::Utc.with_ymd_and_hms(2025, 6, 1, 10, 0, 0).unwrap();
    Incident {
        id: id.to_string(),
        title: "High error rate on api-gateway".into(),
        description: "error_ratio=0.12 > 0.05 on gw-01".into(),
        state: IncidentState::New,
        priority: 2,
        impact: Level::High,
        urgency: Level::Medium,
        category: Some("network".into()),
        subcategory: Some("latency".into()),
        assignment_group: Some("sre".into()),
        service: Some("api-gateway".into()),
        configuration_items: vec!["gw-01".into(), "gw-02".into()],
        major: false,
        alert_count: 2,
        rule: "high-error-rate".into(),
        correlation_key: "HighErrorRate/api-gateway".into(),
        created_at: t0,
        updated_at: t0,
        resolved_at: None,
        closed_at: None,
        reopen_count: 0,
        external_refs: std::collections::BTreeMap::new(),
        closed_by: None,
        related: Vec::new(),
        route: vec!["genie".into()],
        topology: Default::default(),
        alerts: Vec::new(),
        timeline: vec![TimelineEntry {
            at: chrono::Utc.with_ymd_and_hms(2025, 6, 1, 10, 5, 0).unwrap(),
            event: "created".into(),
            cause: "rule high-error-rate opened it".into(),
        }],
        timeline_dropped: 0,
        timeline_stored: 0,
        alerts_stored: Default::default(),
        last_activity: t0,
        all_resolved_since: None,
        flapping: false,
        flap_policy: None,
        sla: None,
        policy: Policy {
            window_s: 300,
            auto_resolve: true,
            resolve_after_s: 300,
            reopen_within_s: 3600,
            close_after_s: 86_400,
        },
        version: 1,
    }
}

/// A canned answer a contract server gives instead of (or, with `process`,
/// after) the real one.
pub struct Fault {
    pub status: u16,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: String,
    /// Handle the request anyway: a response lost after the vendor took it.
    pub process: bool,
}

impl Fault {
    pub fn plain(status: u16, body: &str) -> Fault {
        Fault {
            status,
            headers: Vec::new(),
            body: body.to_string(),
            process: false,
        }
    }

    pub fn response(&self) -> axum::response::Response {
        use axum::response::IntoResponse;
        let mut r = (
            axum::http::StatusCode::from_u16(self.status).unwrap(),
            self.body.clone(),
        )
            .into_response();
        for (k, v) in &self.headers {
            r.headers_mut().insert(*k, v.parse().unwrap());
        }
        r
    }
}

/// A child process (a daemon binary) killed when the test ends, passing or failing.
pub struct Running(pub std::process::Child);

impl Running {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the daemon binary on `cfg` and waits until it listens on `port`.
pub fn spawn_daemon(cfg: &Path, port: u16) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_incidentd"))
        .args([
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port);
    Running(child)
}

/// Waits (up to 20 s) until something listens on loopback `port`.
pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "daemon did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A delivery worker (not yet running) over a memory store, configured by
/// `yaml`, and that store and the metrics.
pub fn memory_worker(
    dir: &std::path::Path,
    yaml: &str,
) -> (
    incidentd::store::SharedStore,
    incidentd::outbox::worker::Worker,
    std::sync::Arc<incidentd::metrics::Metrics>,
) {
    let overrides = incidentd::config::Overrides {
        listen: None,
        store: None,
    };
    let cfg = incidentd::config::parse(&dir.join("c.yaml"), yaml, &overrides, |_| None)
        .unwrap_or_else(|e| panic!("test config: {e}"));
    let metrics =
        std::sync::Arc::new(incidentd::metrics::Metrics::new(prometheus::Registry::new()).unwrap());
    let store: incidentd::store::SharedStore = std::sync::Arc::new(
        incidentd::store::memory::MemoryStore::new(Duration::from_secs(3600)),
    );
    let engine = std::sync::Arc::new(incidentd::incident::engine::Engine::new(
        store.clone(),
        std::sync::Arc::new(incidentd::rules::RuleSet::empty()),
        metrics.clone(),
    ));
    let worker = incidentd::outbox::worker::Worker::new(
        store.clone(),
        engine,
        &cfg.adapters,
        metrics.clone(),
        cfg.delivery.clone(),
    )
    .unwrap();
    (store, worker, metrics)
}

/// Writes version `inc.version` of an incident over the one before it (none
/// for version 1), with its outbox entry, as the engine does.
pub async fn commit_next(
    store: &incidentd::store::SharedStore,
    inc: &incidentd::incident::Incident,
) {
    let commit = incidentd::store::IncidentCommit {
        incident: inc,
        expected_version: inc.version - 1,
        bind: None,
        members: &[],
        due: None,
        outbox_event: Some(if inc.version == 1 {
            "created"
        } else {
            "updated"
        }),
        slots: &[],
    };
    assert!(store.commit_incident(&commit).await.unwrap());
}
