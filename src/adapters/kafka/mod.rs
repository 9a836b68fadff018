//! The Kafka adapter: produces every incident change to a topic.
//!
//! Each message is keyed by the incident id, so all changes of one incident go
//! to one partition and stay in order (the outbox worker sends one step of an
//! incident at a time and waits for the broker's acknowledgement before the
//! next). The value is JSON, `{"event": "created" | "updated" | "state",
//! "incident_id", "version", "state", "incident": {...}, "timeline": [new
//! entries]}`, with headers `incidentd.event`, `incidentd.version` and
//! `idempotency-key: <incident id>:<version>:<event>`.
//!
//! Delivery is at-least-once (a step whose acknowledgement was lost is produced
//! again): consumers drop a message whose `(incident_id, version, event)` they
//! have already seen, or whose version is older than one they applied.
//!
//! Kafka has no ticket to find or read back: the incident id is its reference.

mod config;

pub use config::Config;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::adapters::{Adapter, DeliveryError, ExternalRef, Target, TicketState};
use crate::incident::{Incident, TimelineEntry};

/// How long a send may wait for room in the producer's local queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Kafka {
    config: ClientConfig,
    topic: String,
    /// Created on first use, so `incidentd check` does not connect to brokers.
    producer: std::sync::Mutex<Option<Arc<FutureProducer>>>,
}

impl Kafka {
    pub fn new(config: ClientConfig, topic: String) -> Kafka {
        Kafka {
            config,
            topic,
            producer: std::sync::Mutex::new(None),
        }
    }

    fn producer(&self) -> Result<Arc<FutureProducer>, DeliveryError> {
        let mut slot = self
            .producer
            .lock()
            .map_err(|_| DeliveryError::permanent("kafka producer lock poisoned"))?;
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let p: Arc<FutureProducer> = Arc::new(
            self.config
                .create()
                .map_err(|e| DeliveryError::permanent(format!("kafka producer: {e}")))?,
        );
        *slot = Some(p.clone());
        Ok(p)
    }

    async fn produce(
        &self,
        target: &Target,
        inc: &Incident,
        event: &str,
        state: TicketState,
        timeline: &[TimelineEntry],
    ) -> Result<(), DeliveryError> {
        let body = json!({
            "event": event,
            "incident_id": inc.id,
            "version": inc.version,
            "state": state,
            "incident": inc,
            "timeline": timeline,
        });
        let bytes =
            serde_json::to_vec(&body).map_err(|e| DeliveryError::permanent(e.to_string()))?;
        let version = inc.version.to_string();
        let idempotency = format!("{}:{}:{event}", inc.id, inc.version);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "incidentd.event",
                value: Some(event),
            })
            .insert(Header {
                key: "incidentd.version",
                value: Some(&version),
            })
            .insert(Header {
                key: "idempotency-key",
                value: Some(&idempotency),
            });
        let record = FutureRecord::to(&self.topic)
            .key(inc.id.as_str())
            .payload(&bytes)
            .headers(headers);
        let producer = self.producer()?;
        let metrics = target.metrics();
        match producer.send(record, QUEUE_TIMEOUT).await {
            Ok(_) => {
                metrics
                    .kafka
                    .sink_produced
                    .with_label_values(&[target.name.as_str()])
                    .inc();
                Ok(())
            }
            Err((e, _)) => {
                metrics
                    .kafka
                    .sink_failed
                    .with_label_values(&[target.name.as_str()])
                    .inc();
                Err(classify(e))
            }
        }
    }
}

/// Errors no retry fixes are permanent; the rest (broker down, leader moving,
/// timeouts, full queues) are retried by the outbox.
fn classify(e: KafkaError) -> DeliveryError {
    let code = e.rdkafka_error_code();
    let permanent = matches!(
        code,
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::InvalidRecord
        )
    );
    if permanent {
        DeliveryError::permanent(format!("kafka: {e}"))
    } else {
        DeliveryError::Transient {
            reason: format!("kafka: {e}"),
            retry_after: None,
        }
    }
}

#[async_trait::async_trait]
impl Adapter for Kafka {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    async fn find(
        &self,
        _target: &Target,
        _inc: &Incident,
    ) -> Result<Option<ExternalRef>, DeliveryError> {
        Ok(None)
    }

    async fn create(&self, target: &Target, inc: &Incident) -> Result<ExternalRef, DeliveryError> {
        let state = TicketState::of(inc.state);
        self.produce(target, inc, "created", state, &inc.timeline)
            .await?;
        Ok(ExternalRef {
            id: inc.id.clone(),
            display: inc.id.clone(),
            url: None,
        })
    }

    async fn update(
        &self,
        target: &Target,
        inc: &Incident,
        _ext: &ExternalRef,
        new_entries: &[TimelineEntry],
    ) -> Result<(), DeliveryError> {
        let state = TicketState::of(inc.state);
        self.produce(target, inc, "updated", state, new_entries)
            .await
    }

    async fn transition(
        &self,
        target: &Target,
        inc: &Incident,
        _ext: &ExternalRef,
        to: TicketState,
    ) -> Result<(), DeliveryError> {
        self.produce(target, inc, "state", to, &[]).await
    }
}
