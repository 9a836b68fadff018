//! Kafka adapter configuration.
//!
//! ```yaml
//! adapters:
//!   bus:
//!     type: kafka
//!     brokers: ${KAFKA_BROKERS}            # host:port[,host:port...]
//!     topic: incidentd.incidents
//!     properties:                          # passed to librdkafka as they are (values are secrets)
//!       security.protocol: SASL_SSL
//!       sasl.mechanism: PLAIN
//!       sasl.username: incidentd
//!       sasl.password: ${KAFKA_PASSWORD}
//!     delivery: {timeout_ms: 10000}        # also librdkafka's message.timeout.ms
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::Kafka;
use crate::adapters::DeliveryConfig;
use crate::config::Problems;
use crate::secret::Secret;
use crate::sources::kafka::{valid_topic, validate_client};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub brokers: String,
    pub topic: String,
    #[serde(default)]
    pub properties: BTreeMap<String, Secret>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl Config {
    pub fn build(&self, key: &str, _base_dir: &Path, p: &mut Problems<'_>) -> Option<Kafka> {
        let mut ok = validate_client(&self.brokers, &self.properties, key, p);
        if !valid_topic(&self.topic) {
            p.at(
                &format!("{key}.topic"),
                format!(
                    "{:?} is not a topic name (1..=249 of [A-Za-z0-9._-])",
                    self.topic
                ),
            );
            ok = false;
        }
        let mut cfg = crate::sources::kafka::client_config(&self.brokers, &self.properties);
        if !self.properties.contains_key("message.timeout.ms") {
            // A step that cannot be produced within the delivery timeout fails
            // and is retried by the outbox like any other adapter's.
            cfg.set(
                "message.timeout.ms",
                self.delivery.timeout_ms.max(1).to_string(),
            );
        }
        ok.then(|| Kafka::new(cfg, self.topic.clone()))
    }
}
