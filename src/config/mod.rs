//! Configuration: read, interpolated, parsed with unknown fields refused, then
//! validated into the types the daemon runs on. Nothing starts until this has
//! succeeded, and validation reports every problem it finds at once, each with
//! file:line.
//!
//! Durations and sizes carry their unit in the field name (`shutdown_grace_ms`,
//! `max_body_bytes`).

mod interpolate;
pub(crate) mod locate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use interpolate::interpolate;

use crate::formats::Format;
use crate::sources::webhook::{EndpointConfig, WebhookConfig, WebhookSettings};
use crate::store::redis::RedisOptions;

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub sources: SourcesConfig,
    #[serde(default)]
    pub rules: RulesConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// ITSM adapters by name; rules route incidents to these names.
    #[serde(default)]
    pub adapters: std::collections::BTreeMap<String, crate::adapters::AdapterConfig>,
    /// The outbox worker.
    #[serde(default)]
    pub delivery: crate::outbox::worker::WorkerConfig,
    #[serde(default)]
    pub incidents: IncidentsConfig,
    /// Flap detection for every rule that does not set its own.
    #[serde(default)]
    pub flapping: crate::incident::flapping::FlapSettings,
    /// Response and resolution targets by priority, and what a breach does.
    #[serde(default)]
    pub sla: crate::incident::sla::RawSla,
    /// Expected heartbeats of the monitoring pipeline.
    #[serde(default)]
    pub heartbeats: Vec<crate::heartbeat::RawHeartbeat>,
    /// The services file (service topology).
    #[serde(default)]
    pub topology: TopologyConfig,
    /// When an incident is major, and where major incidents go as well.
    #[serde(default)]
    pub major_incident: crate::incident::major::MajorPolicy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyConfig {
    /// Services, their alerts' matchers and dependencies; relative to the
    /// config file. Left out: no topology correlation.
    #[serde(default)]
    pub services_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsConfig {
    /// What a firing alert does to an incident a person resolved or closed in an
    /// ITSM platform: `new_incident` (linked to the old one) or `reopen`.
    #[serde(default)]
    pub after_manual_close: crate::incident::lifecycle::AfterManualClose,
    /// Adapters every incident goes to, besides those its rule routes it to.
    #[serde(default)]
    pub route_all_to: Vec<String>,
    /// How long a closed incident is kept (then forgotten, with its timeline).
    #[serde(default = "default_closed_retention_s")]
    pub closed_retention_s: u64,
}

fn default_closed_retention_s() -> u64 {
    30 * 24 * 3600
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        IncidentsConfig {
            after_manual_close: Default::default(),
            route_all_to: Vec::new(),
            closed_retention_s: default_closed_retention_s(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP listener (webhooks, REST API, metrics, health).
    pub listen: String,
    /// Largest request body accepted; larger gets 413.
    pub max_body_bytes: u64,
    /// After SIGTERM/SIGINT, how long in-flight requests get to finish.
    pub shutdown_grace_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9797".into(),
            max_body_bytes: 4 * 1024 * 1024,
            shutdown_grace_ms: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `memory`, or `redis://HOST:PORT/DB` (also `rediss://`, `redis+unix://`),
    /// or a Redis Cluster: `redis-cluster://HOST:PORT,HOST:PORT` (`rediss-cluster://`).
    pub url: String,
    /// Every Redis key starts with this.
    pub key_prefix: String,
    /// How long a resolved alert is kept after it was last seen.
    pub resolved_retention_s: u64,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "memory".into(),
            key_prefix: "incidentd".into(),
            resolved_retention_s: 24 * 3600,
            connect_timeout_ms: 1_000,
            response_timeout_ms: 2_000,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    #[serde(default)]
    pub webhook: WebhookConfig,
    #[serde(default)]
    pub kafka: Option<crate::sources::kafka::KafkaConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Directory of `*.yaml` rule files, relative to the config file.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Rule tests (`incidentd test` files), relative to the config file;
    /// default `<dir>/tests`.
    #[serde(default)]
    pub tests_dir: Option<PathBuf>,
    /// On reload, put a new rule set in force only if its rule tests pass.
    #[serde(default)]
    pub require_tests: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `incidentd=debug,warn`, ... `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Command-line values that win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub store: Option<String>,
}

/// Which store to run, validated.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    Memory { resolved_retention: Duration },
    Redis(RedisOptions),
}

/// The validated configuration the daemon runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub store: StoreSettings,
    pub webhook: WebhookSettings,
    /// The Kafka source, when configured.
    pub kafka: Option<crate::sources::kafka::KafkaSettings>,
    pub rules_dir: Option<PathBuf>,
    pub rules_tests_dir: Option<PathBuf>,
    pub require_rule_tests: bool,
    pub log: LogConfig,
    pub adapters: Vec<crate::adapters::Built>,
    pub delivery: crate::outbox::worker::WorkerConfig,
    pub after_manual_close: crate::incident::lifecycle::AfterManualClose,
    pub route_all_to: Vec<String>,
    pub closed_retention: Duration,
    /// Flap detection: on for every rule, or only for rules that turn it on.
    pub flapping: crate::incident::flapping::FlapDefaults,
    pub sla: crate::incident::sla::SlaPolicy,
    pub heartbeats: Vec<std::sync::Arc<crate::heartbeat::HeartbeatSpec>>,
    /// The validated services file, if the config names one.
    pub topology: Option<std::sync::Arc<crate::topology::Topology>>,
    pub major: crate::incident::major::MajorPolicy,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found, in file order.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors against one file, placing each by its key path.
pub struct Problems<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl<'a> Problems<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Problems {
            file,
            text,
            errors: Vec::new(),
        }
    }

    /// Records `message` about the value at `path` (dotted, e.g. `store.url`).
    pub fn at(&mut self, path: &str, message: impl Into<String>) {
        let keys: Vec<&str> = path.split('.').collect();
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line: locate::line_of(self.text, &keys),
            column: None,
            message: format!("{path}: {}", message.into()),
        });
    }

    /// Records `message` about `field` of the item named `name` in top-level
    /// list `list` (e.g. `heartbeats`), placed on that field's line.
    pub fn at_item(
        &mut self,
        list: &str,
        name: &str,
        field: Option<&str>,
        message: impl Into<String>,
    ) {
        let path = match field {
            Some(f) => format!("{list}.{name}.{f}"),
            None => format!("{list}.{name}"),
        };
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line: locate::line_of_item(self.text, list, name, field),
            column: None,
            message: format!("{path}: {}", message.into()),
        });
    }

    /// Problems recorded so far.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    fn at_line(&mut self, line: Option<usize>, column: Option<usize>, message: String) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            message,
        });
    }

    fn into_errors(mut self) -> ConfigErrors {
        // The config file's own problems first, then those of files it names.
        let file = self.file.to_path_buf();
        self.errors
            .sort_by_key(|e| (e.file != file, e.line.unwrap_or(0)));
        ConfigErrors(self.errors)
    }

    fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(self.into_errors())
        }
    }
}

/// Reads and validates the config file at `path`, with `overrides` applied.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    parse(path, &text, overrides, |name| std::env::var(name).ok())
}

/// [`load`] on text already read, with an explicit environment (for tests).
pub fn parse(
    path: &Path,
    text: &str,
    overrides: &Overrides,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut problems = Problems::new(path, text);
    let expanded = match interpolate(text, env) {
        Ok(t) => t,
        Err(errs) => {
            for (line, msg) in errs {
                problems.at_line(Some(line), None, msg);
            }
            return Err(problems.into_errors());
        }
    };
    let raw: RawConfig = if expanded.trim().is_empty() {
        RawConfig::default()
    } else {
        match serde_norway::from_str(&expanded) {
            Ok(raw) => raw,
            Err(e) => {
                let loc = e.location();
                problems.at_line(
                    loc.as_ref().map(|l| l.line()),
                    loc.as_ref().map(|l| l.column()),
                    e.to_string(),
                );
                return Err(problems.into_errors());
            }
        }
    };
    let config = validate(path, raw, overrides, &mut problems);
    problems.finish(config)
}

fn validate(path: &Path, raw: RawConfig, overrides: &Overrides, p: &mut Problems<'_>) -> Config {
    let base_dir = path.parent().unwrap_or(Path::new("."));

    let listen_raw = overrides.listen.clone().unwrap_or(raw.http.listen);
    let listen = listen_raw.parse::<SocketAddr>().unwrap_or_else(|e| {
        p.at(
            "http.listen",
            format!("{listen_raw:?} is not HOST:PORT with an IP address ({e})"),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    if raw.http.max_body_bytes == 0 {
        p.at("http.max_body_bytes", "must be greater than 0");
    }
    let max_body_bytes = usize::try_from(raw.http.max_body_bytes).unwrap_or(usize::MAX);

    let retention = Duration::from_secs(raw.store.resolved_retention_s);
    if raw.store.resolved_retention_s == 0 {
        p.at("store.resolved_retention_s", "must be greater than 0");
    }
    let url = overrides.store.clone().unwrap_or(raw.store.url);
    let store = if url == "memory" {
        StoreSettings::Memory {
            resolved_retention: retention,
        }
    } else {
        // The URL may carry a password: errors name its scheme, never the URL.
        if let Some(nodes) = crate::store::redis_conn::cluster_nodes(&url) {
            if let Some(e) = nodes
                .iter()
                .find_map(|n| redis::Client::open(n.as_str()).err())
            {
                p.at("store.url", format!("invalid Redis Cluster node: {e}"));
            }
        } else if crate::store::redis_conn::is_cluster_url(&url) {
            p.at(
                "store.url",
                "a redis-cluster:// URL needs at least one host:port",
            );
        } else if !["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|s| url.starts_with(s))
        {
            p.at(
                "store.url",
                "expected `memory`, a redis:// URL or a redis-cluster://host:port,host:port URL",
            );
        } else if let Err(e) = redis::Client::open(url.as_str()) {
            p.at("store.url", format!("invalid Redis URL: {e}"));
        }
        let prefix = &raw.store.key_prefix;
        if prefix.is_empty() || prefix.contains(['{', '}', ' ']) {
            p.at(
                "store.key_prefix",
                "must be non-empty, without braces or spaces",
            );
        }
        for (name, v) in [
            ("connect_timeout_ms", raw.store.connect_timeout_ms),
            ("response_timeout_ms", raw.store.response_timeout_ms),
        ] {
            if v == 0 {
                p.at(&format!("store.{name}"), "must be greater than 0");
            }
        }
        StoreSettings::Redis(RedisOptions {
            url,
            key_prefix: raw.store.key_prefix,
            resolved_retention: retention,
            connect_timeout: Duration::from_millis(raw.store.connect_timeout_ms),
            response_timeout: Duration::from_millis(raw.store.response_timeout_ms),
        })
    };

    let mut webhook = WebhookSettings::default();
    for format in Format::ALL {
        let endpoint: Option<&EndpointConfig> = raw.sources.webhook.endpoint(format);
        let key = format!("sources.webhook.{}", format.as_str());
        if let Some(settings) = EndpointConfig::validate(endpoint, &key, base_dir, p) {
            webhook.endpoints.insert(format, settings);
        }
    }

    let kafka = raw
        .sources
        .kafka
        .as_ref()
        .and_then(|k| k.validate("sources.kafka", p));

    let rules_dir = raw.rules.dir.map(|d| base_dir.join(d));
    if let Some(dir) = &rules_dir
        && !dir.is_dir()
    {
        p.at("rules.dir", format!("{} is not a directory", dir.display()));
    }
    let rules_tests_dir = raw
        .rules
        .tests_dir
        .map(|d| base_dir.join(d))
        .or_else(|| rules_dir.as_ref().map(|d| d.join("tests")));
    if raw.rules.require_tests && !rules_tests_dir.as_ref().is_some_and(|d| d.is_dir()) {
        p.at(
            "rules.require_tests",
            "needs a rule tests directory (rules.tests_dir, or <rules.dir>/tests)",
        );
    }

    let adapters = raw
        .adapters
        .iter()
        .filter_map(|(name, a)| {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            {
                p.at(
                    &format!("adapters.{name}"),
                    "adapter names are letters, digits, - and _",
                );
            }
            a.build(name, base_dir, p)
        })
        .collect();

    if raw.incidents.closed_retention_s == 0 {
        p.at("incidents.closed_retention_s", "must be greater than 0");
    }
    for name in &raw.incidents.route_all_to {
        if !raw.adapters.contains_key(name) {
            p.at(
                "incidents.route_all_to",
                format!("{name:?} is not an adapter under adapters:"),
            );
        }
    }

    for (field, message) in raw.flapping.problems() {
        p.at(&format!("flapping.{field}"), message);
    }
    let flapping = raw.flapping.defaults();
    let adapter_names: Vec<&str> = raw.adapters.keys().map(String::as_str).collect();
    let sla = raw.sla.validate(&adapter_names, p);
    let heartbeats = crate::heartbeat::validate(&raw.heartbeats, &adapter_names, p);
    let topology = raw.topology.services_file.as_ref().and_then(|f| {
        match crate::topology::load::load(&base_dir.join(f)) {
            Ok(t) => Some(std::sync::Arc::new(t)),
            Err(errors) => {
                p.errors.extend(errors);
                None
            }
        }
    });
    if let Some(msg) = raw.major_incident.condition().check() {
        p.at("major_incident", msg);
    }
    for name in &raw.major_incident.route {
        if !raw.adapters.contains_key(name) {
            p.at(
                "major_incident.route",
                format!("{name:?} is not an adapter under adapters:"),
            );
        }
    }

    if let Err(e) = raw.log.level.parse::<tracing_subscriber::EnvFilter>() {
        p.at("log.level", format!("not a valid filter: {e}"));
    }
    if raw.delivery.batch_wait_ms > crate::outbox::worker::MAX_BATCH_WAIT_MS {
        p.at(
            "delivery.batch_wait_ms",
            format!(
                "at most {} (every delivery may wait this long)",
                crate::outbox::worker::MAX_BATCH_WAIT_MS
            ),
        );
    }

    Config {
        path: path.to_path_buf(),
        listen,
        max_body_bytes,
        shutdown_grace: Duration::from_millis(raw.http.shutdown_grace_ms),
        store,
        webhook,
        kafka,
        rules_dir,
        rules_tests_dir,
        require_rule_tests: raw.rules.require_tests,
        log: raw.log,
        adapters,
        delivery: raw.delivery,
        after_manual_close: raw.incidents.after_manual_close,
        route_all_to: raw.incidents.route_all_to,
        closed_retention: Duration::from_secs(raw.incidents.closed_retention_s),
        flapping,
        sla,
        heartbeats,
        topology,
        major: raw.major_incident,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
        parse(Path::new("test.yaml"), text, &Overrides::default(), |n| {
            (n == "TOKEN").then(|| "s3cret".to_string())
        })
    }

    #[test]
    fn secrets_in_the_file_never_show_in_debug_output() {
        let raw: RawConfig = serde_norway::from_str(
            "sources:\n  webhook:\n    generic: {bearer_token: tok-123}\nadapters:\n  hook: {type: webhook, url: 'http://x', secret: sec-456}\n  rt: {type: rt, url: 'http://rt', queue: q, user: u, password: pw-789}\n",
        )
        .unwrap();
        let shown = format!("{raw:?}");
        for secret in ["tok-123", "sec-456", "pw-789"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
    }

    #[test]
    fn empty_file_is_the_embedded_default() {
        let c = parse_str("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9797");
        assert!(matches!(c.store, StoreSettings::Memory { .. }));
        assert_eq!(c.webhook.endpoints.len(), 3);
        assert_eq!(c.max_body_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn unknown_field_is_refused_with_its_line() {
        let err = parse_str("http:\n  listen: 127.0.0.1:1\n  lisen: x\n").unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].line, Some(3));
        assert!(
            err.0[0].message.contains("unknown field `lisen`"),
            "{}",
            err
        );
    }

    #[test]
    fn every_validation_error_is_reported_at_once() {
        let err =
            parse_str("http:\n  listen: nowhere\n  max_body_bytes: 0\nstore:\n  url: mysql://x\n")
                .unwrap_err();
        let lines: Vec<_> = err.0.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![Some(2), Some(3), Some(5)], "{err}");
        assert!(
            err.to_string().starts_with("test.yaml:2: http.listen"),
            "{err}"
        );
    }

    #[test]
    fn a_delivery_batch_wait_over_a_second_is_refused_with_its_line() {
        let c = parse_str("delivery:\n  batch_wait_ms: 20\n").unwrap();
        assert_eq!(c.delivery.batch_wait_ms, 20);
        let err = parse_str("log:\n  level: info\ndelivery:\n  batch_wait_ms: 5000\n").unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(
            err.to_string()
                .starts_with("test.yaml:4: delivery.batch_wait_ms: at most 1000"),
            "{err}"
        );
    }

    #[test]
    fn redis_cluster_urls_are_accepted_and_a_bad_one_never_echoes_its_password() {
        let c = parse_str("store:\n  url: redis-cluster://u:pw@10.0.0.1:7000,10.0.0.2:7000\n");
        assert!(matches!(c.map(|c| c.store), Ok(StoreSettings::Redis(_))));
        let err = parse_str("store:\n  url: redis-cluster://\n").unwrap_err();
        assert!(err.to_string().contains("at least one host:port"), "{err}");
        let err = parse_str("store:\n  url: mysql://u:secret-pw@x\n").unwrap_err();
        assert!(!err.to_string().contains("secret-pw"), "{err}");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let c = parse(
            Path::new("t.yaml"),
            "store:\n  url: memory\n",
            &Overrides {
                listen: Some("127.0.0.1:1234".into()),
                store: Some("redis://127.0.0.1:6379/0".into()),
            },
            |_| None,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 1234);
        assert!(matches!(c.store, StoreSettings::Redis(_)));
    }

    #[test]
    fn interpolated_token_is_used_and_unset_variable_is_an_error() {
        let c = parse_str("sources:\n  webhook:\n    generic:\n      bearer_token: ${TOKEN}\n")
            .unwrap();
        let ep = &c.webhook.endpoints[&Format::Generic];
        assert!(ep.token.as_ref().is_some_and(|t| t.expose() == "s3cret"));
        let err = parse_str("store:\n  url: ${REDIS_URL}\n").unwrap_err();
        assert_eq!(err.0[0].line, Some(2));
    }

    #[test]
    fn flapping_sla_and_heartbeat_errors_are_reported_at_once_with_their_lines() {
        let err = parse_str(
            "flapping:\n  changes: 1\nsla:\n  targets:\n    7: {respond_within_s: 60}\n  escalation:\n    route: [nowhere]\nheartbeats:\n  - name: wd\n    interval_s: 0\n    match: ['alertname=\"Watchdog\"']\n  - name: both\n    interval_s: 60\n",
        )
        .unwrap_err();
        let text = err.to_string();
        for expected in [
            "test.yaml:2: flapping.changes",
            "sla.targets.7",
            "test.yaml:7: sla.escalation.route",
            "heartbeats.wd.interval_s",
            "give either `match`",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn sla_and_heartbeats_are_validated_into_what_the_daemon_runs_on() {
        let c = parse_str(
            "sla:\n  targets:\n    1: {respond_within_s: 900}\nheartbeats:\n  - name: kafka-alerts\n    source: {kind: kafka, name: alerts}\n    interval_s: 600\n    urgency: medium\n",
        )
        .unwrap();
        assert_eq!(c.sla.targets[&1].respond_within_s, Some(900));
        assert_eq!(c.sla.escalation.raise_priority, 1);
        assert_eq!(c.heartbeats.len(), 1);
        assert_eq!(
            c.heartbeats[0].title,
            "monitoring pipeline silent: kafka-alerts"
        );
        assert!(!c.flapping.enabled, "flap detection is off by default");
    }
}
