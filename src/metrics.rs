//! Prometheus metrics. The registry is created by the daemon and passed in, never
//! global, so tests can run several daemons in one process.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    /// Alerts decoded from accepted payloads, by endpoint.
    pub alerts_received: IntCounterVec,
    /// Payloads refused, by endpoint and reason.
    pub rejected: IntCounterVec,
    /// What recording did to each alert, by endpoint and outcome
    /// (new, duplicate, transition, stale).
    pub alerts_recorded: IntCounterVec,
    pub store_duration: HistogramVec,
    pub store_errors: IntCounterVec,
    pub store_up: IntGauge,
    /// Alerts a `drop` rule discarded, by rule.
    pub alerts_dropped: IntCounterVec,
    /// Firing alerts held by a maintenance window.
    pub alerts_in_maintenance: IntCounter,
    /// Incident changes by event (created, updated, acknowledged, resolved, reopened, closed).
    pub incident_changes: IntCounterVec,
    /// Incident writes that lost a race with another writer and were retried.
    pub incident_conflicts: IntCounter,
    /// Repeats handled by moving their open incidents' activity time only.
    pub alert_repeats_touched: IntCounter,
    pub rules_loaded: IntGauge,
    /// Rule reloads by result (success, failure).
    pub rules_reloads: IntCounterVec,
    /// Delivery steps by adapter and outcome (delivered, retry_later, dead_letter,
    /// busy: the ticket stayed leased elsewhere through short waits,
    /// unknown_adapter).
    pub deliveries: IntCounterVec,
    pub delivery_retries: IntCounterVec,
    pub delivery_duration: HistogramVec,
    pub dead_letters: IntCounterVec,
    /// Changes waiting in the outbox, and the age of the oldest.
    pub outbox_depth: IntGauge,
    pub outbox_oldest_age: prometheus::Gauge,
    /// Open incidents, time to acknowledge/resolve, SLA breaches, flapping, heartbeats.
    pub incidents: crate::incident::metrics::IncidentMetrics,
    /// The Kafka source and sink.
    pub kafka: KafkaMetrics,
}

/// Kafka source and sink metrics.
pub struct KafkaMetrics {
    /// Messages taken from a topic, by topic.
    pub consumed: IntCounterVec,
    /// Messages not yet committed, per assigned partition (from librdkafka statistics).
    pub consumer_lag: prometheus::IntGaugeVec,
    /// Messages sent to the dead-letter topic, by reason.
    pub dead_lettered: IntCounterVec,
    /// Offset commits that failed.
    pub commit_errors: IntCounter,
    /// 1 while consumption is paused because the store is failing.
    pub paused: IntGauge,
    /// From taking a batch of messages to having it all stored: how long the
    /// messages behind it, on every partition, waited for it.
    pub batch_duration: prometheus::Histogram,
    /// Incident changes produced by a `kafka` adapter, by adapter.
    pub sink_produced: IntCounterVec,
    /// Incident changes a `kafka` adapter failed to produce, by adapter.
    pub sink_failed: IntCounterVec,
}

impl KafkaMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = KafkaMetrics {
            consumed: IntCounterVec::new(
                Opts::new(
                    "incidentd_kafka_messages_consumed_total",
                    "Kafka messages consumed, by topic.",
                ),
                &["topic"],
            )?,
            consumer_lag: prometheus::IntGaugeVec::new(
                Opts::new(
                    "incidentd_kafka_consumer_lag",
                    "Messages between the committed offset and the end of the partition.",
                ),
                &["topic", "partition"],
            )?,
            dead_lettered: IntCounterVec::new(
                Opts::new(
                    "incidentd_kafka_dead_lettered_total",
                    "Kafka messages sent to the dead-letter topic, by reason.",
                ),
                &["reason"],
            )?,
            commit_errors: IntCounter::new(
                "incidentd_kafka_commit_errors_total",
                "Kafka offset commits that failed.",
            )?,
            paused: IntGauge::new(
                "incidentd_kafka_consumer_paused",
                "1 while Kafka consumption is paused because the state store is failing.",
            )?,
            batch_duration: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "incidentd_kafka_batch_duration_seconds",
                    "Time to store one batch of consumed Kafka messages (alerts, incidents, outbox), retries included.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            )?,
            sink_produced: IntCounterVec::new(
                Opts::new(
                    "incidentd_kafka_sink_produced_total",
                    "Incident changes produced to Kafka, by adapter.",
                ),
                &["adapter"],
            )?,
            sink_failed: IntCounterVec::new(
                Opts::new(
                    "incidentd_kafka_sink_failed_total",
                    "Incident changes that could not be produced to Kafka, by adapter.",
                ),
                &["adapter"],
            )?,
        };
        registry.register(Box::new(m.consumed.clone()))?;
        registry.register(Box::new(m.consumer_lag.clone()))?;
        registry.register(Box::new(m.dead_lettered.clone()))?;
        registry.register(Box::new(m.commit_errors.clone()))?;
        registry.register(Box::new(m.paused.clone()))?;
        registry.register(Box::new(m.batch_duration.clone()))?;
        registry.register(Box::new(m.sink_produced.clone()))?;
        registry.register(Box::new(m.sink_failed.clone()))?;
        Ok(m)
    }
}

impl Metrics {
    pub fn new(registry: Registry) -> Result<Self, prometheus::Error> {
        let alerts_received = IntCounterVec::new(
            Opts::new(
                "incidentd_alerts_received_total",
                "Alerts received, by source endpoint.",
            ),
            &["source"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "incidentd_payloads_rejected_total",
                "Payloads refused, by source endpoint and reason.",
            ),
            &["source", "reason"],
        )?;
        let alerts_recorded = IntCounterVec::new(
            Opts::new(
                "incidentd_alerts_recorded_total",
                "Alerts recorded in the state store, by source endpoint and outcome (new, duplicate, transition, stale).",
            ),
            &["source", "outcome"],
        )?;
        let store_duration = HistogramVec::new(
            HistogramOpts::new(
                "incidentd_store_operation_duration_seconds",
                "State store call latency, by store and operation.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ]),
            &["store", "op"],
        )?;
        let store_errors = IntCounterVec::new(
            Opts::new(
                "incidentd_store_errors_total",
                "Failed state store calls, by store and operation.",
            ),
            &["store", "op"],
        )?;
        let store_up = IntGauge::new(
            "incidentd_store_up",
            "1 when the last readiness check reached the state store.",
        )?;
        let alerts_dropped = IntCounterVec::new(
            Opts::new(
                "incidentd_alerts_dropped_total",
                "Alerts discarded by a drop rule, by rule.",
            ),
            &["rule"],
        )?;
        let alerts_in_maintenance = IntCounter::new(
            "incidentd_alerts_in_maintenance_total",
            "Firing alerts held by a maintenance window.",
        )?;
        let incident_changes = IntCounterVec::new(
            Opts::new(
                "incidentd_incident_changes_total",
                "Incident changes, by event.",
            ),
            &["event"],
        )?;
        let incident_conflicts = IntCounter::new(
            "incidentd_incident_write_conflicts_total",
            "Incident writes retried because another writer changed the incident first.",
        )?;
        let alert_repeats_touched = IntCounter::new(
            "incidentd_alert_repeats_touched_total",
            "Repeated alerts whose open incidents only had their activity time moved (not read and rewritten).",
        )?;
        let rules_loaded = IntGauge::new("incidentd_rules_loaded", "Rules in force.")?;
        let rules_reloads = IntCounterVec::new(
            Opts::new("incidentd_rules_reloads_total", "Rule reloads, by result."),
            &["result"],
        )?;
        let deliveries = IntCounterVec::new(
            Opts::new(
                "incidentd_deliveries_total",
                "Incident changes delivered to adapters, by adapter and outcome.",
            ),
            &["adapter", "outcome"],
        )?;
        let delivery_retries = IntCounterVec::new(
            Opts::new(
                "incidentd_delivery_retries_total",
                "Adapter requests retried, by adapter.",
            ),
            &["adapter"],
        )?;
        let delivery_duration = HistogramVec::new(
            HistogramOpts::new(
                "incidentd_delivery_request_duration_seconds",
                "Adapter request latency, by adapter.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["adapter"],
        )?;
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "incidentd_dead_letters_total",
                "Deliveries given up on a permanent error, by adapter.",
            ),
            &["adapter"],
        )?;
        let outbox_depth = IntGauge::new(
            "incidentd_outbox_depth",
            "Incident changes waiting for delivery.",
        )?;
        let outbox_oldest_age = prometheus::Gauge::new(
            "incidentd_outbox_oldest_age_seconds",
            "Age of the oldest incident change waiting for delivery.",
        )?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(delivery_retries.clone()))?;
        registry.register(Box::new(delivery_duration.clone()))?;
        registry.register(Box::new(dead_letters.clone()))?;
        registry.register(Box::new(outbox_depth.clone()))?;
        registry.register(Box::new(outbox_oldest_age.clone()))?;
        registry.register(Box::new(alerts_dropped.clone()))?;
        registry.register(Box::new(alerts_in_maintenance.clone()))?;
        registry.register(Box::new(incident_changes.clone()))?;
        registry.register(Box::new(incident_conflicts.clone()))?;
        registry.register(Box::new(alert_repeats_touched.clone()))?;
        registry.register(Box::new(rules_loaded.clone()))?;
        registry.register(Box::new(rules_reloads.clone()))?;
        registry.register(Box::new(alerts_received.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(alerts_recorded.clone()))?;
        registry.register(Box::new(store_duration.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        registry.register(Box::new(store_up.clone()))?;
        let incidents = crate::incident::metrics::IncidentMetrics::new(&registry)?;
        let kafka = KafkaMetrics::new(&registry)?;
        Ok(Metrics {
            registry,
            alerts_received,
            rejected,
            alerts_recorded,
            store_duration,
            store_errors,
            store_up,
            alerts_dropped,
            alerts_in_maintenance,
            incident_changes,
            incident_conflicts,
            alert_repeats_touched,
            rules_loaded,
            rules_reloads,
            deliveries,
            delivery_retries,
            delivery_duration,
            dead_letters,
            outbox_depth,
            outbox_oldest_age,
            incidents,
            kafka,
        })
    }

    /// The registry in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on metric families with invalid names,
        // which `new` would already have refused.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
