//! Kafka source configuration.
//!
//! ```yaml
//! sources:
//!   kafka:
//!     brokers: ${KAFKA_BROKERS}            # host:port[,host:port...]
//!     group_id: incidentd                  # every instance of one deployment shares it
//!     topics:
//!       - { name: alerts.alertmanager, format: alertmanager }
//!       - { name: "${KAFKA_TOPICS}", format: generic }   # a comma-separated list is several topics
//!     dead_letter_topic: incidentd.dead-letter
//!     max_message_bytes: 1048576           # larger messages go to the dead-letter topic
//!     max_batch_messages: 500              # in-flight work: messages ingested per store call
//!     poll_timeout_ms: 100
//!     commit_interval_ms: 1000
//!     retry_initial_backoff_ms: 100        # store down: pause, retry with backoff, resume
//!     retry_max_backoff_ms: 5000
//!     properties:                          # passed to librdkafka as they are
//!       security.protocol: SASL_SSL
//!       sasl.mechanism: SCRAM-SHA-512
//!       sasl.username: incidentd
//!       sasl.password: ${KAFKA_PASSWORD}
//! ```
//!
//! Property values are kept as secrets (never logged, never in `Debug`), since
//! passwords and keys travel through them. The properties incidentd itself
//! relies on for at-least-once delivery (`group.id`, `bootstrap.servers`,
//! `enable.auto.commit`, `enable.auto.offset.store`) cannot be overridden.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Problems;
use crate::formats::Format;
use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: String,
    pub group_id: String,
    pub topics: Vec<TopicConfig>,
    pub dead_letter_topic: String,
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
    #[serde(default = "default_max_batch_messages")]
    pub max_batch_messages: usize,
    #[serde(default = "default_poll_timeout_ms")]
    pub poll_timeout_ms: u64,
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    #[serde(default = "default_retry_initial_backoff_ms")]
    pub retry_initial_backoff_ms: u64,
    #[serde(default = "default_retry_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
    #[serde(default)]
    pub properties: BTreeMap<String, Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// A topic, or several separated by commas (all in this format).
    pub name: String,
    pub format: Format,
}

fn default_max_message_bytes() -> u64 {
    1024 * 1024
}
fn default_max_batch_messages() -> usize {
    500
}
fn default_poll_timeout_ms() -> u64 {
    100
}
fn default_commit_interval_ms() -> u64 {
    1000
}
fn default_retry_initial_backoff_ms() -> u64 {
    100
}
fn default_retry_max_backoff_ms() -> u64 {
    5000
}

/// Properties incidentd sets itself; overriding them would break at-least-once.
pub const RESERVED_PROPERTIES: [&str; 4] = [
    "group.id",
    "bootstrap.servers",
    "enable.auto.commit",
    "enable.auto.offset.store",
];

/// The validated Kafka source.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    /// Topic name → payload format.
    pub topics: BTreeMap<String, Format>,
    pub dead_letter_topic: String,
    pub max_message_bytes: usize,
    pub max_batch_messages: usize,
    pub poll_timeout: Duration,
    pub commit_interval: Duration,
    pub retry_initial_backoff: Duration,
    pub retry_max_backoff: Duration,
    pub properties: BTreeMap<String, Secret>,
}

/// Kafka's rule for topic names: 1..=249 of `[A-Za-z0-9._-]`.
pub fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Checks `brokers` and librdkafka `properties` shared by the source and the
/// sink: every property name and value is handed to librdkafka, which refuses
/// unknown names and bad values here rather than at startup.
pub fn validate_client(
    brokers: &str,
    properties: &BTreeMap<String, Secret>,
    key: &str,
    p: &mut Problems<'_>,
) -> bool {
    let mut ok = true;
    if brokers
        .split(',')
        .any(|b| b.trim().is_empty() || !b.contains(':'))
    {
        p.at(
            &format!("{key}.brokers"),
            format!("{brokers:?}: expected host:port[,host:port...]"),
        );
        ok = false;
    }
    for (name, value) in properties {
        if RESERVED_PROPERTIES.contains(&name.as_str()) {
            p.at(
                &format!("{key}.properties"),
                format!("{name} is set by incidentd and cannot be overridden"),
            );
            ok = false;
            continue;
        }
        let mut cfg = rdkafka::ClientConfig::new();
        cfg.set(name.as_str(), value.expose());
        if let Err(e) = cfg.create_native_config() {
            // librdkafka's message names the property; it quotes the value only
            // for enumerations, never for free-form (secret) strings.
            p.at(
                &format!("{key}.properties"),
                format!("{name}: {}", redact(&e.to_string(), value)),
            );
            ok = false;
        }
    }
    ok
}

/// `msg` with the secret's text replaced, in case a library quoted it.
fn redact(msg: &str, value: &Secret) -> String {
    if value.expose().len() >= 3 {
        msg.replace(value.expose(), "***")
    } else {
        msg.to_string()
    }
}

impl KafkaConfig {
    pub fn validate(&self, key: &str, p: &mut Problems<'_>) -> Option<KafkaSettings> {
        let mut ok = validate_client(&self.brokers, &self.properties, key, p);
        if self.group_id.trim().is_empty() {
            p.at(&format!("{key}.group_id"), "is empty");
            ok = false;
        }
        let mut topics = BTreeMap::new();
        if self.topics.is_empty() {
            p.at(&format!("{key}.topics"), "needs at least one topic");
            ok = false;
        }
        for t in &self.topics {
            for name in t.name.split(',').map(str::trim) {
                if !valid_topic(name) {
                    p.at(
                        &format!("{key}.topics"),
                        format!("{name:?} is not a topic name (1..=249 of [A-Za-z0-9._-])"),
                    );
                    ok = false;
                } else if topics.insert(name.to_string(), t.format).is_some() {
                    p.at(&format!("{key}.topics"), format!("{name} is listed twice"));
                    ok = false;
                }
            }
        }
        if !valid_topic(&self.dead_letter_topic) {
            p.at(
                &format!("{key}.dead_letter_topic"),
                format!("{:?} is not a topic name", self.dead_letter_topic),
            );
            ok = false;
        } else if topics.contains_key(&self.dead_letter_topic) {
            // Dead letters read back as input would loop forever.
            p.at(
                &format!("{key}.dead_letter_topic"),
                "must not be one of the topics consumed",
            );
            ok = false;
        }
        for (name, v) in [
            ("max_message_bytes", self.max_message_bytes),
            ("max_batch_messages", self.max_batch_messages as u64),
            ("poll_timeout_ms", self.poll_timeout_ms),
            ("commit_interval_ms", self.commit_interval_ms),
            ("retry_initial_backoff_ms", self.retry_initial_backoff_ms),
            ("retry_max_backoff_ms", self.retry_max_backoff_ms),
        ] {
            if v == 0 {
                p.at(&format!("{key}.{name}"), "must be greater than 0");
                ok = false;
            }
        }
        if self.retry_max_backoff_ms < self.retry_initial_backoff_ms {
            p.at(
                &format!("{key}.retry_max_backoff_ms"),
                "must not be less than retry_initial_backoff_ms",
            );
            ok = false;
        }
        ok.then(|| KafkaSettings {
            brokers: self.brokers.clone(),
            group_id: self.group_id.trim().to_string(),
            topics,
            dead_letter_topic: self.dead_letter_topic.clone(),
            max_message_bytes: usize::try_from(self.max_message_bytes).unwrap_or(usize::MAX),
            max_batch_messages: self.max_batch_messages,
            poll_timeout: Duration::from_millis(self.poll_timeout_ms),
            commit_interval: Duration::from_millis(self.commit_interval_ms),
            retry_initial_backoff: Duration::from_millis(self.retry_initial_backoff_ms),
            retry_max_backoff: Duration::from_millis(self.retry_max_backoff_ms),
            properties: self.properties.clone(),
        })
    }
}
