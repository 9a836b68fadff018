//! The Kafka source: consumes alert payloads from topics as one member of a
//! consumer group and feeds them through the same ingest path as the webhooks.
//!
//! Delivery is at-least-once:
//!
//! - A message's offset is stored (librdkafka `enable.auto.offset.store=false`)
//!   only after its alerts are in the state store, and only stored offsets are
//!   ever committed: every `commit_interval_ms`, when partitions are revoked,
//!   and on shutdown. A message redelivered after a crash or a rebalance is
//!   recorded again as a duplicate, which the store's dedup makes harmless.
//! - A message that cannot be decoded (not UTF-8 or JSON, wrong schema, larger
//!   than `max_message_bytes`) is produced to the dead-letter topic with the
//!   reason and its source topic/partition/offset in headers, then committed
//!   like any other: the partition never stalls on it.
//! - When the store fails, the batch is not skipped: consumption is paused
//!   (the assignment, so the consumer keeps polling and stays in its group),
//!   the batch is retried with exponential backoff, and consumption resumes
//!   once it is stored. The same holds when the dead-letter topic cannot be
//!   written.
//!
//! In-flight work is one batch of at most `max_batch_messages` messages per
//! instance; librdkafka's own prefetch queue is bounded by its properties
//! (`queued.max.messages.kbytes`).

mod config;

pub use config::{KafkaConfig, KafkaSettings, TopicConfig, valid_topic, validate_client};

use std::collections::VecDeque;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::FutureExt;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::alert::Alert;
use crate::formats::Format;
use crate::ingest::Ingestor;
use crate::metrics::Metrics;
use crate::secret::Secret;

/// Dead-letter headers: why, and where the message came from.
pub const HEADER_REASON: &str = "incidentd.reason";
pub const HEADER_ERROR: &str = "incidentd.error";
pub const HEADER_TOPIC: &str = "incidentd.source.topic";
pub const HEADER_PARTITION: &str = "incidentd.source.partition";
pub const HEADER_OFFSET: &str = "incidentd.source.offset";
/// On a too-large message (forwarded without its payload): its size.
pub const HEADER_PAYLOAD_BYTES: &str = "incidentd.payload_bytes";

/// How long producing to the dead-letter topic may wait for room in the
/// producer's queue before the attempt counts as failed (and is retried).
const DLQ_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// A librdkafka client config for `brokers` with the user's `properties`, with
/// librdkafka's logs going to `tracing`.
pub fn client_config(
    brokers: &str,
    properties: &std::collections::BTreeMap<String, Secret>,
) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers);
    for (name, value) in properties {
        cfg.set(name.as_str(), value.expose());
    }
    cfg
}

/// Logs librdkafka's events through `tracing` and keeps the source's metrics.
pub struct SourceContext {
    metrics: Arc<Metrics>,
}

impl ClientContext for SourceContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        log_rdkafka(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka consumer");
    }

    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition; a lag of -1
                // means not known yet.
                if *partition < 0 || !p.desired || p.consumer_lag < 0 {
                    continue;
                }
                self.metrics
                    .kafka
                    .consumer_lag
                    .with_label_values(&[topic.as_str(), &partition.to_string()])
                    .set(p.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // What is stored is persisted: hand it over to the next owner now,
            // so it does not process those messages a second time.
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => {
                    self.metrics.kafka.commit_errors.inc();
                    tracing::warn!(error = %e, "kafka: commit on partition revoke failed; those messages will be redelivered");
                }
            }
            for e in tpl.elements() {
                let _ = self
                    .metrics
                    .kafka
                    .consumer_lag
                    .remove_label_values(&[e.topic(), &e.partition().to_string()]);
            }
            tracing::info!(partitions = tpl.count(), "kafka: partitions revoked");
        } else if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "kafka: partitions assigned");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            // Nothing new was stored since the last commit.
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                self.metrics.kafka.commit_errors.inc();
                tracing::warn!(error = %e, "kafka: offset commit failed; will commit again");
            }
        }
    }
}

/// librdkafka's log lines, at their level, under the `librdkafka` target.
pub fn log_rdkafka(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(target: "librdkafka", fac, "{message}")
        }
        L::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
        L::Notice | L::Info => tracing::info!(target: "librdkafka", fac, "{message}"),
        L::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

/// One message taken from a partition, detached from the consumer.
struct Received {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    /// The payload, or its size when over `max_message_bytes` (not copied).
    payload: Result<Vec<u8>, usize>,
}

impl Received {
    fn take(m: &impl Message, max_bytes: usize) -> Received {
        let payload = m.payload().unwrap_or_default();
        Received {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: if payload.len() > max_bytes {
                Err(payload.len())
            } else {
                Ok(payload.to_vec())
            },
        }
    }
}

/// A message that goes to the dead-letter topic.
struct DeadLetter<'a> {
    msg: &'a Received,
    reason: &'static str,
    error: String,
}

/// The running source.
pub struct KafkaSource {
    settings: KafkaSettings,
    consumer: StreamConsumer<SourceContext>,
    producer: FutureProducer,
    ingestor: Arc<Ingestor>,
    metrics: Arc<Metrics>,
}

impl KafkaSource {
    /// Creates the consumer (subscribed) and the dead-letter producer; [`run`]
    /// consumes. Brokers are reached lazily, so the daemon starts while Kafka
    /// is down and catches up when it comes back.
    ///
    /// [`run`]: KafkaSource::run
    pub fn new(
        settings: &KafkaSettings,
        ingestor: Arc<Ingestor>,
        metrics: Arc<Metrics>,
    ) -> Result<KafkaSource, String> {
        let mut cfg = client_config(&settings.brokers, &settings.properties);
        if !settings.properties.contains_key("statistics.interval.ms") {
            // Statistics feed the consumer lag gauge.
            cfg.set("statistics.interval.ms", "5000");
        }
        cfg.set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        if !settings.properties.contains_key("auto.offset.reset") {
            // A new group starts at the beginning: alerts already waiting in the
            // topic when incidentd is first deployed are not skipped.
            cfg.set("auto.offset.reset", "earliest");
        }
        let consumer: StreamConsumer<SourceContext> = cfg
            .create_with_context(SourceContext {
                metrics: metrics.clone(),
            })
            .map_err(|e| format!("kafka consumer: {e}"))?;
        let topics: Vec<&str> = settings.topics.keys().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| format!("kafka subscribe to {topics:?}: {e}"))?;
        let mut pcfg = client_config(&settings.brokers, &settings.properties);
        for name in ["statistics.interval.ms", "auto.offset.reset"] {
            pcfg.remove(name);
        }
        let producer: FutureProducer = pcfg
            .create()
            .map_err(|e| format!("kafka dead-letter producer: {e}"))?;
        tracing::info!(topics = ?topics, group = %settings.group_id, dead_letter_topic = %settings.dead_letter_topic, "kafka source subscribed");
        Ok(KafkaSource {
            settings: settings.clone(),
            consumer,
            producer,
            ingestor,
            metrics,
        })
    }

    /// Consumes until `stop` turns true, then commits what is stored and
    /// leaves the group.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let max = self.settings.max_batch_messages;
        let mut pending: VecDeque<Received> = VecDeque::new();
        let mut last_commit = Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            let mut batch = Vec::with_capacity(max.min(1024));
            while batch.len() < max
                && let Some(m) = pending.pop_front()
            {
                batch.push(m);
            }
            if batch.is_empty() {
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => break,
                    r = tokio::time::timeout(self.settings.poll_timeout, self.consumer.recv()) => match r {
                        Ok(Ok(m)) => batch.push(Received::take(&m, self.settings.max_message_bytes)),
                        Ok(Err(e)) => tracing::warn!(error = %e, "kafka: consume error"),
                        Err(_) => {}
                    },
                }
            }
            // Take whatever else is already fetched, without waiting.
            while batch.len() < max {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(m)) => batch.push(Received::take(&m, self.settings.max_message_bytes)),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "kafka: consume error");
                        break;
                    }
                    None => break,
                }
            }
            if !batch.is_empty() {
                let timer = self.metrics.kafka.batch_duration.start_timer();
                if !self.process(&batch, &mut pending, &mut stop).await {
                    // Stopping while the store is down: the batch is not stored, so
                    // its offsets are not either; it is redelivered.
                    timer.stop_and_discard();
                    break;
                }
                timer.observe_duration();
            }
            if last_commit.elapsed() >= self.settings.commit_interval {
                self.commit(CommitMode::Async);
                last_commit = Instant::now();
            }
        }
        self.commit(CommitMode::Sync);
        tracing::info!("kafka source stopped; offsets committed");
        let KafkaSource {
            consumer, producer, ..
        } = self;
        // Closing the consumer (leaving the group) and flushing the producer
        // block, so they run off the async runtime.
        let _ = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            let _ = producer.flush(Duration::from_secs(5));
            drop(consumer);
        })
        .await;
    }

    fn commit(&self, mode: CommitMode) {
        match self.consumer.commit_consumer_state(mode) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                self.metrics.kafka.commit_errors.inc();
                tracing::warn!(error = %e, "kafka: offset commit failed; will commit again");
            }
        }
    }

    /// Decodes, dead-letters and ingests one batch, retrying until it is all
    /// stored; then stores its offsets. `false` when stopped before that.
    async fn process(
        &self,
        batch: &[Received],
        pending: &mut VecDeque<Received>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let now = Utc::now();
        tracing::debug!(
            messages = batch.len(),
            first = ?batch.first().map(|m| (m.partition, m.offset)),
            last = ?batch.last().map(|m| (m.partition, m.offset)),
            "kafka: batch"
        );
        // Per format, in arrival order (which keeps each partition's order).
        let mut groups: Vec<(Format, Vec<Alert>)> = Vec::new();
        let mut dead: Vec<DeadLetter<'_>> = Vec::new();
        for m in batch {
            self.metrics
                .kafka
                .consumed
                .with_label_values(&[m.topic.as_str()])
                .inc();
            let Some(format) = self.settings.topics.get(&m.topic).copied() else {
                dead.push(DeadLetter {
                    msg: m,
                    reason: "unknown_topic",
                    error: format!("topic {} is not configured", m.topic),
                });
                continue;
            };
            let bytes = match &m.payload {
                Ok(b) => b,
                Err(len) => {
                    dead.push(DeadLetter {
                        msg: m,
                        reason: "too_large",
                        error: format!(
                            "message of {len} bytes exceeds max_message_bytes ({})",
                            self.settings.max_message_bytes
                        ),
                    });
                    continue;
                }
            };
            match format.decode(bytes, now) {
                Ok(alerts) => match groups.iter_mut().find(|(f, _)| *f == format) {
                    Some((_, all)) => all.extend(alerts),
                    None => groups.push((format, alerts)),
                },
                Err(e) => dead.push(DeadLetter {
                    msg: m,
                    reason: e.reason(),
                    error: e.to_string(),
                }),
            }
        }
        for d in &dead {
            tracing::warn!(topic = %d.msg.topic, partition = d.msg.partition, offset = d.msg.offset, reason = d.reason, error = %d.error, "kafka: message sent to the dead-letter topic");
            if self
                .retry(pending, stop, "dead-letter topic", || self.dead_letter(d))
                .await
                .is_none()
            {
                return false;
            }
            self.metrics
                .kafka
                .dead_lettered
                .with_label_values(&[d.reason])
                .inc();
        }
        for (format, alerts) in groups {
            if alerts.is_empty() {
                continue;
            }
            let label = source_label(format);
            let ingest = || self.ingestor.ingest(label, alerts.clone(), now);
            if self
                .retry(pending, stop, "state store", ingest)
                .await
                .is_none()
            {
                return false;
            }
        }
        // Messages arriving on a topic prove the path to it is alive (heartbeats
        // declared with `source: {kind: kafka, name: TOPIC}`).
        if let Some(heartbeats) = self.ingestor.heartbeats() {
            let mut topics: Vec<&str> = batch.iter().map(|m| m.topic.as_str()).collect();
            topics.sort_unstable();
            topics.dedup();
            for topic in topics {
                heartbeats.observe_activity("kafka", topic, now).await;
            }
        }
        // Only the last offset of each partition matters; storing each is as cheap.
        for m in batch {
            if let Err(e) = self.consumer.store_offset(&m.topic, m.partition, m.offset) {
                // The partition was revoked meanwhile: its new owner reads the
                // message again, which dedup makes harmless.
                tracing::debug!(error = %e, topic = %m.topic, partition = m.partition, "kafka: offset not stored");
            }
        }
        true
    }

    async fn dead_letter(&self, d: &DeadLetter<'_>) -> Result<(), KafkaError> {
        let m = d.msg;
        let (partition, offset) = (m.partition.to_string(), m.offset.to_string());
        let mut error = d.error.clone();
        if error.len() > 1024 {
            let mut cut = 1024;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
        }
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_REASON,
                value: Some(d.reason),
            })
            .insert(Header {
                key: HEADER_ERROR,
                value: Some(&error),
            })
            .insert(Header {
                key: HEADER_TOPIC,
                value: Some(&m.topic),
            })
            .insert(Header {
                key: HEADER_PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: HEADER_OFFSET,
                value: Some(&offset),
            });
        let payload: &[u8] = match &m.payload {
            Ok(p) => p,
            Err(len) => {
                // The dead-letter topic would refuse it just the same; what it
                // was is in the source topic until retention removes it.
                headers = headers.insert(Header {
                    key: HEADER_PAYLOAD_BYTES,
                    value: Some(&len.to_string()),
                });
                &[]
            }
        };
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.settings.dead_letter_topic)
            .payload(payload)
            .headers(headers);
        if let Some(k) = &m.key {
            record = record.key(k.as_slice());
        }
        self.producer
            .send(record, DLQ_QUEUE_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// Runs `op` until it succeeds. After a failure, consumption is paused and
    /// the consumer keeps being polled (so it stays in its group and serves
    /// rebalances) while waiting with exponential backoff; it is resumed on
    /// success. `None` when `stop` turns true first.
    async fn retry<T, E, F, Fut>(
        &self,
        pending: &mut VecDeque<Received>,
        stop: &mut watch::Receiver<bool>,
        what: &str,
        mut op: F,
    ) -> Option<T>
    where
        E: Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut backoff = self.settings.retry_initial_backoff;
        let mut paused = false;
        loop {
            match op().await {
                Ok(v) => {
                    if paused {
                        self.set_paused(false);
                        tracing::info!(what, "kafka: {what} is back; consumption resumed");
                    }
                    return Some(v);
                }
                Err(e) => {
                    if !paused {
                        tracing::warn!(error = %e, what, "kafka: {what} failing; consumption paused, retrying");
                        paused = true;
                    } else {
                        tracing::debug!(error = %e, what, "kafka: retry failed");
                    }
                }
            }
            // Re-pausing each round also pauses partitions a rebalance assigned
            // meanwhile.
            self.set_paused(true);
            let deadline = Instant::now() + jitter(backoff);
            loop {
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => return None,
                    _ = tokio::time::sleep_until(deadline) => break,
                    r = self.consumer.recv() => match r {
                        // Already fetched before the pause took effect: kept, in
                        // order, for the next batch.
                        Ok(m) => {
                            pending.push_back(Received::take(&m, self.settings.max_message_bytes));
                            self.set_paused(true);
                        }
                        Err(e) => tracing::debug!(error = %e, "kafka: consume error while paused"),
                    },
                }
            }
            backoff = (backoff * 2).min(self.settings.retry_max_backoff);
        }
    }

    fn set_paused(&self, paused: bool) {
        let result = self.consumer.assignment().and_then(|tpl| {
            if paused {
                self.consumer.pause(&tpl)
            } else {
                self.consumer.resume(&tpl)?;
                self.seek_to_position()
            }
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, paused, "kafka: cannot change the pause state");
        }
        self.metrics.kafka.paused.set(i64::from(paused));
    }
}

impl KafkaSource {
    /// Pausing discards what librdkafka had prefetched for the paused
    /// partitions; rather than rely on where its fetcher resumes, fetching is
    /// restarted right after the last message this source was handed, so
    /// nothing between is skipped.
    fn seek_to_position(&self) -> KafkaResult<()> {
        let mut tpl = TopicPartitionList::new();
        for e in self.consumer.position()?.elements() {
            if let rdkafka::Offset::Offset(o) = e.offset() {
                tpl.add_partition_offset(e.topic(), e.partition(), rdkafka::Offset::Offset(o))?;
            }
        }
        if tpl.count() > 0 {
            self.consumer.seek_partitions(tpl, Duration::ZERO)?;
        }
        Ok(())
    }
}

/// `[d/2, d]`: several instances backing off from one outage do not retry in step.
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + Duration::from_millis(fastrand::u64(0..=half.as_millis() as u64))
}

/// The `source` label of ingest metrics for a Kafka topic of `format`.
pub fn source_label(format: Format) -> &'static str {
    match format {
        Format::Alertmanager => "kafka_alertmanager",
        Format::Grafana => "kafka_grafana",
        Format::Generic => "kafka_generic",
    }
}
