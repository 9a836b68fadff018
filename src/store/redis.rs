//! The Redis store: shared by every daemon instance pointed at the same Redis.
//!
//! Layout, under the configured prefix `P`:
//! - `P:alert:{FP}`: a hash per alert (status, counters, times, JSON document).
//!   The fingerprint is the hash tag, so on Redis Cluster each alert's key lives
//!   on one slot and the per-alert Lua script is legal there.
//! - `P:alerts`: a sorted set of fingerprints by last-seen time, for listing.
//!   Entries whose hash has expired are pruned when a listing finds them.
//!
//! - `{P}:incident:ID`, `{P}:slot:KEY` (correlation key → incident id),
//!   `{P}:member:RULE|FP` (alert → incident), `{P}:of-alert:FP` (the set of
//!   incidents an alert belongs to, under any rule), `{P}:incidents` and `{P}:due`
//!   (sorted sets by update time and next timer), `{P}:held` (alerts held by a
//!   maintenance window), `{P}:heartbeats` (heartbeat name → last seen, ms).
//!   `{P}:timeline:ID` is an incident's timeline, a list of JSON entries kept
//!   apart from its document: an update appends what it adds, and the daemon's
//!   own reads for an update (`get_incident_head`) leave it where it is. The
//!   hash's `tl_total` counts the entries ever appended (the list keeps the
//!   newest `MAX_TIMELINE`); a document without it is from before the split
//!   and still carries its timeline, which its next update moves to the list.
//!   `{P}:incident-alerts:ID` lists an incident's alerts (one JSON entry
//!   each, in the incident's order), also apart from its document: an update
//!   overwrites the entries it changed and appends the alerts that joined, so
//!   a storm incident's hundreds of alerts are not written again for each
//!   one that joins. The hash's `alerts` field counts them; a document without
//!   it is from before the split and holds its alerts, which its next update
//!   moves to the list.
//!   The hash's `route` field repeats the document's route for the outbox
//!   worker, which needs nothing else (older hashes lack it: read the document).
//!   They share the `{P}` hash tag so one Lua script can
//!   commit an incident, its slot and membership atomically on Redis Cluster too;
//!   incidents are far fewer than alerts, so one slot holds them.
//!
//! On a Redis Cluster (`redis-cluster://` URLs, see `store::redis_conn`) the
//! same layout holds: every Lua script and atomic pipeline touches one slot.
//!
//! A batch is one pipeline: `EVALSHA record_alert.lua` per chunk of alerts
//! (per alert on a Redis Cluster; atomic for each alert), then one `ZADD` of
//! the batch's alerts to the index. The connection
//! manager reconnects on its own; after a Redis restart the script cache is
//! empty, so a `NOSCRIPT` answer loads the script and retries the batch once.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use super::redis_conn::{RedisConn, Timeouts};
use super::{
    AlertQuery, AlertState, Explain, FoundIncidents, IncidentCommit, OpenGauges, Outcome, Recorded,
    StateStore, StoreError, explains_current_status,
};
use crate::alert::{Alert, Status};
use crate::incident::{AlertsWrite, Incident, IncidentQuery, IncidentState, StoredAlerts};
use crate::outbox::{DeadLetter, OutboxEntry, OutboxStats, SyncState};

const RECORD_ALERT: &str = include_str!("record_alert.lua");
const COMMIT_INCIDENT: &str = include_str!("commit_incident.lua");
/// Sets each alert's explanation (KEYS[i], ARGV[i]) if the alert still
/// exists: an expired alert is not resurrected as a hash holding an
/// explanation and nothing else.
const SET_EXPLAIN: &str = "for i, k in ipairs(KEYS) do if redis.call('EXISTS', k) == 1 then redis.call('HSET', k, 'explain', ARGV[i]) end end";
/// The consumer group all instances deliver the outbox as.
const OUTBOX_GROUP: &str = "delivery";
/// Takes a lease unless another owner holds it (the holder itself renews it).
const TAKE_LEASE: &str = "local h = redis.call('GET', KEYS[1]) if h and h ~= ARGV[1] then return 0 end redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1";
/// Drops a lease only if its owner still holds it.
const DROP_LEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
/// Moves the activity time of each open incident (KEYS: their hashes) to
/// ARGV[1] (ms) in its `touched` field, which reads merge into the document;
/// per key 1 when open and touched. `gauge` starts with "1:" while open.
const TOUCH_INCIDENTS: &str = "local out = {} for i, key in ipairs(KEYS) do local f = redis.call('HMGET', key, 'gauge', 'touched') if f[1] and string.sub(f[1], 1, 2) == '1:' then if (not f[2]) or tonumber(f[2]) < tonumber(ARGV[1]) then redis.call('HSET', key, 'touched', ARGV[1]) end out[i] = 1 else out[i] = 0 end end return out";
/// Drops index entries (ARGV: fingerprint, score pairs) whose score is still
/// the one the caller read: an alert recorded again since then keeps its entry.
const PRUNE_INDEX: &str = "local n = 0 for i = 1, #ARGV, 2 do local s = redis.call('ZSCORE', KEYS[1], ARGV[i]) if s and tonumber(s) == tonumber(ARGV[i + 1]) then n = n + redis.call('ZREM', KEYS[1], ARGV[i]) end end return n";
/// An index entry without its alert hash is pruned only once it is older than
/// the resolved retention plus this much. A younger one can be a write in
/// flight: a batch's `ZADD` also runs when its scripts fail with `NOSCRIPT`
/// (just after a Redis restart) and are retried a moment later, and pruning
/// such an entry in between would hide that alert from every listing.
const PRUNE_MARGIN_MS: i64 = 60_000;
/// Keeps the later of the stored and the given last-seen time of a heartbeat.
const HEARTBEAT_SEEN: &str = "local c = redis.call('HGET', KEYS[1], ARGV[1]) if (not c) or tonumber(c) < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end return 1";
/// Alerts per call of a script that loops over its keys, on a single Redis:
/// enough to share a call's cost, few enough that one call does not hold
/// Redis (and every other client) for long.
const PER_SCRIPT_CALL: usize = 32;
/// Membership of an alert in an incident outlives quiet periods by this much.
const MEMBER_TTL_MS: u64 = 30 * 24 * 3600 * 1000;
/// Index entries read per round trip while listing.
const LIST_CHUNK: isize = 500;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub url: String,
    pub key_prefix: String,
    pub resolved_retention: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

pub struct RedisStore {
    conn: RedisConn,
    /// For blocking stream reads only.
    blocking: RedisConn,
    lease: Script,
    unlease: Script,
    heartbeat: Script,
    script: Script,
    explain: Script,
    commit: Script,
    prune: Script,
    touch: Script,
    prefix: String,
    retention_ms: u64,
    closed_retention_ms: u64,
}

/// The parts of an alert kept as one JSON document in its hash. Borrowed
/// when written (a batch's labels are not copied to be serialized), owned
/// when read.
#[derive(Serialize, Deserialize)]
struct Doc<'a> {
    source: Cow<'a, str>,
    labels: Cow<'a, BTreeMap<String, String>>,
    annotations: Cow<'a, BTreeMap<String, String>>,
    severity: Option<Cow<'a, str>>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    generator_url: Option<Cow<'a, str>>,
}

impl RedisStore {
    /// Builds the store without connecting: the daemon starts (and reports not
    /// ready) while Redis is down, and connects when it comes up. Must be called
    /// inside a Tokio runtime: the connection manager spawns its task there.
    pub fn new(opts: &RedisOptions) -> Result<Self, StoreError> {
        let timeouts = Timeouts {
            connect: opts.connect_timeout,
            response: opts.response_timeout,
        };
        let bad_url = |e: redis::RedisError| StoreError::Unavailable(format!("bad Redis URL: {e}"));
        let conn = RedisConn::new(&opts.url, timeouts).map_err(bad_url)?;
        let blocking = RedisConn::new(
            &opts.url,
            Timeouts {
                // Room for the longest blocking read the outbox worker asks for.
                response: opts.response_timeout + Duration::from_secs(5),
                ..timeouts
            },
        )
        .map_err(bad_url)?;
        Ok(RedisStore {
            conn,
            blocking,
            lease: Script::new(TAKE_LEASE),
            unlease: Script::new(DROP_LEASE),
            heartbeat: Script::new(HEARTBEAT_SEEN),
            script: Script::new(RECORD_ALERT),
            explain: Script::new(SET_EXPLAIN),
            commit: Script::new(COMMIT_INCIDENT),
            prune: Script::new(PRUNE_INDEX),
            touch: Script::new(TOUCH_INCIDENTS),
            prefix: opts.key_prefix.clone(),
            retention_ms: u64::try_from(opts.resolved_retention.as_millis()).unwrap_or(u64::MAX),
            closed_retention_ms: 30 * 24 * 3600 * 1000,
        })
    }

    /// Keeps closed incidents this long after they closed (default 30 days).
    pub fn with_closed_retention(mut self, retention: Duration) -> Self {
        self.closed_retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        self
    }

    fn alert_key(&self, fingerprint: &str) -> String {
        format!("{}:alert:{{{}}}", self.prefix, fingerprint)
    }

    fn index_key(&self) -> String {
        format!("{}:alerts", self.prefix)
    }

    /// A key in the incident keyspace (one hash tag: the prefix).
    fn inc_key(&self, rest: &str) -> String {
        format!("{{{}}}:{rest}", self.prefix)
    }

    /// The hash of incident `id`: its document, version and the fields kept
    /// beside it (`gauge`, `tl_total`, `touched`).
    fn incident_key(&self, id: &str) -> String {
        self.inc_key(&format!("incident:{id}"))
    }

    /// Where correlation key (or topology / inhibition slot) `key` points.
    fn slot_key(&self, key: &str) -> String {
        self.inc_key(&format!("slot:{key}"))
    }

    /// The timeline list of incident `id`.
    fn timeline_key(&self, id: &str) -> String {
        self.inc_key(&format!("timeline:{id}"))
    }

    /// The list of incident `id`'s alerts, in the incident's order.
    fn incident_alerts_key(&self, id: &str) -> String {
        self.inc_key(&format!("incident-alerts:{id}"))
    }

    /// The incident alert `fp` belongs to under `rule`.
    fn member_key(&self, rule: &str, fp: &str) -> String {
        self.inc_key(&format!("member:{rule}|{fp}"))
    }

    /// The set of incidents an alert belongs to, under any rule.
    fn of_alert_key(&self, fp: &str) -> String {
        self.inc_key(&format!("of-alert:{fp}"))
    }

    /// Incidents `ids`; with `timeline`, their whole timeline, otherwise
    /// none of it (`timeline_dropped` then counts all of it).
    async fn load_incidents(
        &self,
        ids: &[String],
        timeline: bool,
    ) -> Result<Vec<Option<Incident>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Atomic: the document and its alerts list as of one version. (A
        // mix would not get past the version check of a commit, but an API
        // read would show it.)
        let mut pipe = redis::pipe();
        pipe.atomic();
        for id in ids {
            pipe.hmget(
                self.incident_key(id),
                &["doc", "tl_total", "touched", "alerts"],
            );
            pipe.lrange(self.incident_alerts_key(id), 0, -1);
            if timeline {
                pipe.lrange(self.timeline_key(id), 0, -1);
            }
        }
        let mut conn = self.conn.clone();
        let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let mut replies = replies.into_iter();
        let mut out = Vec::with_capacity(ids.len());
        for _ in ids {
            let (doc, total, touched, listed): (
                Option<Vec<u8>>,
                Option<u64>,
                Option<i64>,
                Option<u64>,
            ) = redis::from_redis_value(replies.next().unwrap_or(redis::Value::Nil))
                .map_err(|e| StoreError::Corrupt(format!("incident: {e}")))?;
            let alerts: Vec<Vec<u8>> =
                redis::from_redis_value(replies.next().unwrap_or(redis::Value::Nil))
                    .map_err(|e| StoreError::Corrupt(format!("incident alerts: {e}")))?;
            let entries: Vec<Vec<u8>> = if timeline {
                redis::from_redis_value(replies.next().unwrap_or(redis::Value::Nil))
                    .map_err(|e| StoreError::Corrupt(format!("incident timeline: {e}")))?
            } else {
                Vec::new()
            };
            let Some(doc) = doc else {
                out.push(None);
                continue;
            };
            let mut inc = crate::incident::from_store_document(&doc)
                .map_err(|e| StoreError::Corrupt(format!("incident: {e}")))?;
            if let Some(at) = touched.and_then(|ms| Utc.timestamp_millis_opt(ms).single()) {
                inc.last_activity = inc.last_activity.max(at);
            }
            // Without the hash's `alerts` count the document predates the
            // list and holds its alerts itself; its next commit writes the
            // list whole (no snapshot).
            if listed.is_some() {
                inc.alerts = alerts
                    .iter()
                    .map(|e| crate::incident::from_store_alert(e).map(Arc::new))
                    .collect::<Result<_, _>>()
                    .map_err(|e| StoreError::Corrupt(format!("incident alert: {e}")))?;
                StoredAlerts::record(&mut inc);
            }
            // Without `tl_total` the document predates the list and holds its
            // timeline itself: none of it is in the list yet.
            if let Some(total) = total {
                inc.timeline = entries
                    .iter()
                    .map(|e| serde_json::from_slice(e))
                    .collect::<Result<_, _>>()
                    .map_err(|e| StoreError::Corrupt(format!("incident timeline: {e}")))?;
                inc.timeline_stored = inc.timeline.len();
                inc.timeline_dropped = total.saturating_sub(inc.timeline.len() as u64);
            }
            out.push(Some(inc));
        }
        Ok(out)
    }

    /// The batch's pipeline, and which alerts (positions in `alerts`) each of
    /// its script calls records, in the order it answers for them.
    fn batch_pipeline(
        &self,
        alerts: &[Alert],
        now: DateTime<Utc>,
    ) -> Result<(redis::Pipeline, Vec<Vec<usize>>), StoreError> {
        let now_ms = now.timestamp_millis();
        // A batch retried long after it was received (a Kafka batch keeps its
        // first attempt's time through a store outage) would otherwise enter
        // the index already older than the prune cutoff (`list_alerts`).
        let score = now_ms.max(Utc::now().timestamp_millis() - PRUNE_MARGIN_MS);
        let index = self.index_key();
        let mut pipe = redis::pipe();
        let calls = script_calls(
            alerts.iter().map(|a| a.fingerprint.as_str()),
            self.conn.is_cluster(),
        );
        for call_alerts in &calls {
            let mut call = self.script.prepare_invoke();
            call.arg(now_ms).arg(self.retention_ms);
            for &i in call_alerts {
                call.key(self.alert_key(&alerts[i].fingerprint));
                Self::record_args(&mut call, &alerts[i])?;
            }
            pipe.invoke_script(&call);
        }
        // One `ZADD` for the batch: Redis spent about 3.4 µs of CPU per
        // single-member `ZADD` and 1.5 µs per member of a ten-member one
        // (BENCHMARKS.md, "The alert index in one ZADD per batch").
        let members: Vec<(i64, &str)> = alerts
            .iter()
            .map(|a| (score, a.fingerprint.as_str()))
            .collect();
        pipe.zadd_multiple(&index, &members).ignore();
        Ok((pipe, calls))
    }

    /// An alert's status, start and document, as `record_alert.lua` takes them.
    fn record_args(
        call: &mut redis::ScriptInvocation<'_>,
        alert: &Alert,
    ) -> Result<(), StoreError> {
        let doc = serde_json::to_string(&Doc {
            source: Cow::Borrowed(&alert.source),
            labels: Cow::Borrowed(&alert.labels),
            annotations: Cow::Borrowed(&alert.annotations),
            severity: alert.severity.as_deref().map(Cow::Borrowed),
            starts_at: alert.starts_at,
            ends_at: alert.ends_at,
            generator_url: alert.generator_url.as_deref().map(Cow::Borrowed),
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let starts = alert
            .starts_at
            .map(|t| t.timestamp_millis().to_string())
            .unwrap_or_default();
        call.arg(alert.status.as_str()).arg(starts).arg(doc);
        Ok(())
    }

    async fn create_group(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let created: Result<(), _> = conn
            .xgroup_create_mkstream(self.inc_key("outbox"), OUTBOX_GROUP, "0")
            .await;
        match created {
            // Another instance created it first.
            Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
            other => other.map_err(unavailable),
        }
    }

    /// Runs a pipeline of `script` invocations (EVALSHA). When Redis has lost
    /// its script cache (a restart, `SCRIPT FLUSH`) every invocation failed,
    /// so the script is loaded and the pipeline run once more; the other
    /// commands in these pipelines are idempotent, so running them twice is
    /// harmless.
    async fn query_scripted<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        script: &Script,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        match pipe.query_async(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) if is_noscript(&e) => {
                self.load_script(script).await?;
                pipe.query_async(&mut conn).await.map_err(unavailable)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn load_script(&self, script: &Script) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        script
            .prepare_invoke()
            .load_async(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

/// How one script that loops over its keys (`record_alert.lua`,
/// [`SET_EXPLAIN`]) is called for a batch: which positions of `fingerprints`
/// each call takes, in batch order within a call.
///
/// On a single Redis, chunks of [`PER_SCRIPT_CALL`] in batch order: the calls
/// run one after the other. On a Redis Cluster, a call may touch one slot
/// only and calls to different nodes run concurrently, so each call takes one
/// alert, every occurrence of it in the batch: a firing alert and its resolve
/// in one batch are recorded in that order.
fn script_calls<'a>(fingerprints: impl Iterator<Item = &'a str>, cluster: bool) -> Vec<Vec<usize>> {
    if !cluster {
        let mut calls: Vec<Vec<usize>> = Vec::new();
        for (i, _) in fingerprints.enumerate() {
            match calls.last_mut() {
                Some(call) if call.len() < PER_SCRIPT_CALL => call.push(i),
                _ => calls.push(vec![i]),
            }
        }
        return calls;
    }
    let mut calls: Vec<Vec<usize>> = Vec::new();
    let mut call_of: HashMap<&str, usize> = HashMap::new();
    for (i, fp) in fingerprints.enumerate() {
        match call_of.get(fp) {
            Some(&c) => calls[c].push(i),
            None => {
                call_of.insert(fp, calls.len());
                calls.push(vec![i]);
            }
        }
    }
    calls
}

/// An outbox stream entry, or `None` for one this version cannot read.
fn outbox_entry(e: redis::streams::StreamId) -> Option<OutboxEntry> {
    Some(OutboxEntry {
        incident_id: e.get("incident")?,
        version: e.get::<String>("version")?.parse().ok()?,
        event: e.get("event")?,
        enqueued_at: stream_time(&e.id)?,
        entry_id: e.id,
    })
}

/// The time in a stream id (`<ms>-<seq>`).
fn stream_time(id: &str) -> Option<DateTime<Utc>> {
    let ms = id.split('-').next()?.parse::<i64>().ok()?;
    Utc.timestamp_millis_opt(ms).single()
}

/// The consumer group is missing (first use, or Redis restarted empty).
fn is_nogroup(e: &redis::RedisError) -> bool {
    e.to_string().contains("NOGROUP")
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn is_noscript(e: &redis::RedisError) -> bool {
    matches!(
        e.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
    )
}

fn parse_outcome(raw: &(String, u64, String, String, String)) -> Result<Recorded, StoreError> {
    let (outcome, count, prev, explain, changed_at) = raw;
    let previous = if explain.is_empty() {
        None
    } else {
        // An unreadable explanation only costs a repeat its shortcut.
        serde_json::from_str::<Explain>(explain)
            .ok()
            .filter(|e| explains_current_status(e, changed_at.parse().ok()))
    };
    let outcome = match outcome.as_str() {
        "new" => Outcome::New,
        "duplicate" => Outcome::Duplicate { count: *count },
        "stale" => Outcome::Stale,
        "transition" => {
            let from = Status::parse(prev)
                .ok_or_else(|| StoreError::Corrupt(format!("previous status {prev:?}")))?;
            let to = match from {
                Status::Firing => Status::Resolved,
                Status::Resolved => Status::Firing,
            };
            Outcome::Transition { from, to }
        }
        other => return Err(StoreError::Corrupt(format!("script outcome {other:?}"))),
    };
    Ok(Recorded { outcome, previous })
}

fn ms_time(fields: &HashMap<String, String>, name: &str) -> Result<DateTime<Utc>, StoreError> {
    fields
        .get(name)
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .ok_or_else(|| StoreError::Corrupt(format!("field {name} missing or not a time")))
}

fn number(fields: &HashMap<String, String>, name: &str) -> Result<u64, StoreError> {
    fields
        .get(name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("field {name} missing or not a number")))
}

fn decode_state(
    fingerprint: &str,
    fields: &HashMap<String, String>,
) -> Result<AlertState, StoreError> {
    let doc: Doc = serde_json::from_str(fields.get("doc").map(String::as_str).unwrap_or(""))
        .map_err(|e| StoreError::Corrupt(format!("alert {fingerprint}: {e}")))?;
    let status = fields
        .get("status")
        .and_then(|s| Status::parse(s))
        .ok_or_else(|| StoreError::Corrupt(format!("alert {fingerprint}: status")))?;
    Ok(AlertState {
        fingerprint: fingerprint.to_string(),
        source: doc.source.into_owned(),
        status,
        labels: doc.labels.into_owned(),
        annotations: doc.annotations.into_owned(),
        severity: doc.severity.map(Cow::into_owned),
        starts_at: doc.starts_at,
        ends_at: doc.ends_at,
        generator_url: doc.generator_url.map(Cow::into_owned),
        count: number(fields, "count")?,
        total_count: number(fields, "total")?,
        transitions: number(fields, "transitions")?,
        first_seen: ms_time(fields, "first_seen")?,
        last_seen: ms_time(fields, "last_seen")?,
        status_changed_at: ms_time(fields, "changed_at")?,
        explain: match fields.get("explain") {
            Some(e) => {
                Some(serde_json::from_str(e).map_err(|e| {
                    StoreError::Corrupt(format!("alert {fingerprint}: explain: {e}"))
                })?)
            }
            None => None,
        },
    })
}

#[async_trait::async_trait]
impl StateStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn record_alerts(
        &self,
        alerts: &[Alert],
        now: DateTime<Utc>,
    ) -> Result<Vec<Recorded>, StoreError> {
        if alerts.is_empty() {
            return Ok(Vec::new());
        }
        let (pipe, calls) = self.batch_pipeline(alerts, now)?;
        let raw: Vec<Vec<(String, u64, String, String, String)>> =
            self.query_scripted(&pipe, &self.script).await?;
        let mut out: Vec<Option<Recorded>> = vec![None; alerts.len()];
        let mut answered = 0;
        for (call, results) in calls.iter().zip(&raw) {
            for (&i, result) in call.iter().zip(results) {
                out[i] = Some(parse_outcome(result)?);
                answered += 1;
            }
        }
        if answered != alerts.len() || raw.len() != calls.len() {
            return Err(StoreError::Corrupt(format!(
                "{answered} results for {} alerts",
                alerts.len()
            )));
        }
        Ok(out.into_iter().flatten().collect())
    }

    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<AlertState>, StoreError> {
        let mut conn = self.conn.clone();
        let index = self.index_key();
        let prune_before = Utc::now().timestamp_millis()
            - i64::try_from(self.retention_ms).unwrap_or(i64::MAX / 2)
            - PRUNE_MARGIN_MS;
        let mut out = Vec::new();
        let mut start: isize = 0;
        while out.len() < query.limit {
            let entries: Vec<(String, f64)> = conn
                .zrevrange_withscores(&index, start, start + LIST_CHUNK - 1)
                .await
                .map_err(unavailable)?;
            if entries.is_empty() {
                break;
            }
            start += LIST_CHUNK;
            let mut pipe = redis::pipe();
            for (fp, _) in &entries {
                pipe.hgetall(self.alert_key(fp));
            }
            let hashes: Vec<HashMap<String, String>> =
                pipe.query_async(&mut conn).await.map_err(unavailable)?;
            let mut expired = self.prune.key(&index);
            let mut pruning = 0;
            for ((fp, score), fields) in entries.iter().zip(hashes) {
                if fields.is_empty() {
                    // Scores are whole milliseconds, exact in an f64.
                    let score = *score as i64;
                    if score < prune_before {
                        expired.arg(fp).arg(score);
                        pruning += 1;
                    }
                    continue;
                }
                let state = decode_state(fp, &fields)?;
                if query.status.is_none_or(|s| s == state.status) && out.len() < query.limit {
                    out.push(state);
                }
            }
            if pruning > 0 {
                // Expired alerts: drop them from the index so listings stay cheap.
                let removed: isize = expired.invoke_async(&mut conn).await.map_err(unavailable)?;
                start -= removed;
            }
        }
        Ok(out)
    }

    async fn get_alert(&self, fingerprint: &str) -> Result<Option<AlertState>, StoreError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = conn
            .hgetall(self.alert_key(fingerprint))
            .await
            .map_err(unavailable)?;
        if fields.is_empty() {
            return Ok(None);
        }
        decode_state(fingerprint, &fields).map(Some)
    }

    async fn set_explains(&self, explains: &[(String, Explain)]) -> Result<(), StoreError> {
        if explains.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let calls = script_calls(
            explains.iter().map(|(fp, _)| fp.as_str()),
            self.conn.is_cluster(),
        );
        for call_explains in calls {
            // EVALSHA: Redis need not hash the script's text on every call.
            let mut call = self.explain.prepare_invoke();
            for i in call_explains {
                let (fp, explain) = &explains[i];
                let json = serde_json::to_string(explain)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                call.key(self.alert_key(fp)).arg(json);
            }
            pipe.invoke_script(&call).ignore();
        }
        self.query_scripted(&pipe, &self.explain).await
    }

    async fn find_incidents_and_slots(
        &self,
        rule: &str,
        key: &str,
        fingerprints: &[&str],
        slots: &[String],
    ) -> Result<FoundIncidents, StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.get(self.slot_key(key));
        for fp in fingerprints {
            pipe.get(self.member_key(rule, fp));
        }
        for other in slots {
            pipe.get(self.slot_key(other));
        }
        let mut ids: Vec<Option<String>> =
            pipe.query_async(&mut conn).await.map_err(unavailable)?;
        if ids.len() != 1 + fingerprints.len() + slots.len() {
            return Err(StoreError::Corrupt(format!(
                "{} replies to an incident lookup of {} keys",
                ids.len(),
                1 + fingerprints.len() + slots.len()
            )));
        }
        let slots = ids.split_off(1 + fingerprints.len());
        let slot = ids.remove(0);
        let wanted = FoundIncidents::distinct_ids(&ids, slot.as_ref(), &slots);
        let loaded = self.load_incidents(&wanted, false).await?;
        let incidents = wanted
            .into_iter()
            .zip(loaded)
            .filter_map(|(id, inc)| inc.map(|i| (id, i)))
            .collect();
        Ok(FoundIncidents {
            slot,
            members: ids,
            slots,
            incidents,
        })
    }

    async fn get_incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        Ok(self
            .load_incidents(&[id.to_string()], true)
            .await?
            .pop()
            .flatten())
    }

    async fn get_incident_head(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        Ok(self
            .load_incidents(&[id.to_string()], false)
            .await?
            .pop()
            .flatten())
    }

    async fn incident_route(&self, id: &str) -> Result<Option<Vec<String>>, StoreError> {
        /// The one field wanted from a document: serde skips the rest without
        /// building it (no label maps, no alert list).
        #[derive(Deserialize)]
        struct RouteOnly {
            route: Vec<String>,
        }
        let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("incident route: {e}"));
        let mut conn = self.conn.clone();
        // The hash keeps the route beside the document, so a storm incident's
        // hundreds of kilobytes do not cross the wire for each delivery.
        let route: Option<Vec<u8>> = conn
            .hget(self.incident_key(id), "route")
            .await
            .map_err(unavailable)?;
        if let Some(route) = route {
            return serde_json::from_slice(&route).map(Some).map_err(corrupt);
        }
        // Written before the hash kept it (or gone): the document has it.
        let doc: Option<Vec<u8>> = conn
            .hget(self.incident_key(id), "doc")
            .await
            .map_err(unavailable)?;
        doc.map(|doc| {
            serde_json::from_slice::<RouteOnly>(&doc)
                .map(|r| r.route)
                .map_err(corrupt)
        })
        .transpose()
    }

    async fn touch_incidents(
        &self,
        ids: &[String],
        at: DateTime<Utc>,
    ) -> Result<Vec<bool>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.touch.prepare_invoke();
        for id in ids {
            invocation.key(self.incident_key(id));
        }
        invocation.arg(at.timestamp_millis());
        let mut conn = self.conn.clone();
        let touched: Vec<i64> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(touched.into_iter().map(|t| t == 1).collect())
    }

    async fn commit_incident(&self, c: &IncidentCommit<'_>) -> Result<bool, StoreError> {
        let inc = c.incident;
        let doc = crate::incident::to_store_document(inc)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (bind, slot_key, expected_slot) = match c.bind {
            Some((key, expected)) => ("1", self.slot_key(key), expected.unwrap_or("")),
            None => ("0", self.slot_key(""), ""),
        };
        let mut invocation = self.commit.prepare_invoke();
        invocation
            .key(self.incident_key(&inc.id))
            .key(slot_key)
            .key(self.inc_key("incidents"))
            .key(self.inc_key("due"))
            .key(self.inc_key("outbox"))
            .key(self.inc_key("open"));
        for (rule, fp) in c.members {
            invocation
                .key(self.member_key(rule, fp))
                .key(self.of_alert_key(fp));
        }
        for slot in c.slots {
            invocation.key(self.slot_key(slot.key));
        }
        invocation
            .key(self.timeline_key(&inc.id))
            .key(self.incident_alerts_key(&inc.id));
        invocation
            .arg(c.expected_version)
            .arg(inc.version)
            .arg(doc)
            .arg(&inc.id)
            .arg(bind)
            .arg(expected_slot)
            .arg(c.members.len())
            .arg(MEMBER_TTL_MS)
            .arg(inc.updated_at.timestamp_millis())
            .arg(
                c.due
                    .map(|d| d.timestamp_millis().to_string())
                    .unwrap_or_default(),
            )
            .arg(c.outbox_event.unwrap_or(""))
            .arg(if inc.state == IncidentState::Closed {
                self.closed_retention_ms.to_string()
            } else {
                String::new()
            })
            .arg({
                let (open, priority, flapping) = OpenGauges::contribution(inc);
                format!("{}:{priority}:{flapping}", u8::from(open))
            })
            .arg(c.slots.len());
        for slot in c.slots {
            invocation
                .arg(slot.expected.unwrap_or(""))
                .arg(if slot.set { "1" } else { "0" });
        }
        invocation
            .arg(inc.timeline_total())
            .arg(crate::incident::MAX_TIMELINE)
            .arg(
                serde_json::to_string(&inc.route)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
        let alert_json = |a: &crate::incident::IncidentAlert| {
            crate::incident::to_store_alert(a).map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        let stored = inc.alerts_stored.at(&inc.id, c.expected_version);
        let AlertsWrite { keep, set, append } = AlertsWrite::between(stored, &inc.alerts);
        invocation.arg(keep).arg(set.len()).arg(append.len());
        for (i, a) in set {
            invocation.arg(i).arg(alert_json(a)?);
        }
        for a in append {
            invocation.arg(alert_json(a)?);
        }
        invocation.arg(inc.alerts.len());
        for entry in inc.timeline_added() {
            invocation
                .arg(serde_json::to_string(entry).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        let mut conn = self.conn.clone();
        // `invoke_async` loads the script itself when Redis answers NOSCRIPT.
        let written: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(written == 1)
    }

    async fn list_incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        let mut conn = self.conn.clone();
        let index = self.inc_key("incidents");
        let mut out = Vec::new();
        // An incident updated while the listing pages moves to the front of
        // the index and could be read again on a later page.
        let mut seen = std::collections::HashSet::new();
        let mut start: isize = 0;
        while out.len() < query.limit {
            let ids: Vec<String> = conn
                .zrevrange(&index, start, start + LIST_CHUNK - 1)
                .await
                .map_err(unavailable)?;
            if ids.is_empty() {
                break;
            }
            start += LIST_CHUNK;
            let mut gone = Vec::new();
            for (id, inc) in ids.iter().zip(self.load_incidents(&ids, true).await?) {
                match inc {
                    Some(inc)
                        if query.matches(&inc)
                            && out.len() < query.limit
                            && seen.insert(inc.id.clone()) =>
                    {
                        out.push(inc)
                    }
                    Some(_) => {}
                    None => gone.push(id.clone()),
                }
            }
            if !gone.is_empty() {
                // Closed incidents past their retention: drop them from the index.
                let _: () = conn.zrem(&index, &gone).await.map_err(unavailable)?;
                start -= gone.len() as isize;
            }
        }
        Ok(out)
    }

    async fn due_incidents(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.zrangebyscore_limit(
            self.inc_key("due"),
            "-inf",
            now.timestamp_millis(),
            0,
            limit as isize,
        )
        .await
        .map_err(unavailable)
    }

    async fn hold_alert(&self, fingerprint: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.zadd(self.inc_key("held"), fingerprint, until.timestamp_millis())
            .await
            .map_err(unavailable)
    }

    async fn take_released(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(DateTime<Utc>, String)>, StoreError> {
        let mut conn = self.conn.clone();
        let held = self.inc_key("held");
        let due: Vec<(String, f64)> = conn
            .zrangebyscore_limit_withscores(
                &held,
                "-inf",
                now.timestamp_millis(),
                0,
                limit as isize,
            )
            .await
            .map_err(unavailable)?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        // ZREM answers how many it removed; each instance keeps only the ones it
        // removed itself, so a released alert is processed once.
        let mut pipe = redis::pipe();
        for (fp, _) in &due {
            pipe.zrem(&held, fp);
        }
        let removed: Vec<i64> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(due
            .into_iter()
            .zip(removed)
            .filter(|(_, n)| *n == 1)
            .filter_map(|((fp, ms), _)| {
                Utc.timestamp_millis_opt(ms as i64)
                    .single()
                    .map(|t| (t, fp))
            })
            .collect())
    }

    async fn incidents_of_alert(&self, fingerprint: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.smembers(self.of_alert_key(fingerprint))
            .await
            .map_err(unavailable)
    }

    async fn outbox_read(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let key = self.inc_key("outbox");
        let opts = redis::streams::StreamReadOptions::default()
            .group(OUTBOX_GROUP, consumer)
            .count(max)
            .block(wait.as_millis() as usize);
        // A blocking read gets its own connection: on the shared multiplexed one it
        // would hold up every other command for the whole wait.
        let mut conn = self.blocking.clone();
        let reply: Result<Option<redis::streams::StreamReadReply>, _> =
            conn.xread_options(&[&key], &[">"], &opts).await;
        let reply = match reply {
            Err(e) if is_nogroup(&e) => {
                self.create_group().await?;
                conn.xread_options(&[&key], &[">"], &opts)
                    .await
                    .map_err(unavailable)?
            }
            other => other.map_err(unavailable)?,
        };
        Ok(reply
            .map(|r| {
                r.keys
                    .into_iter()
                    .flat_map(|k| k.ids)
                    .filter_map(outbox_entry)
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn outbox_reclaim(
        &self,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let key = self.inc_key("outbox");
        let mut conn = self.conn.clone();
        let opts = redis::streams::StreamAutoClaimOptions::default().count(max);
        let reply: Result<redis::streams::StreamAutoClaimReply, _> = conn
            .xautoclaim_options(
                &key,
                OUTBOX_GROUP,
                consumer,
                min_idle.as_millis() as usize,
                "0-0",
                opts,
            )
            .await;
        match reply {
            Ok(r) => Ok(r.claimed.into_iter().filter_map(outbox_entry).collect()),
            Err(e) if is_nogroup(&e) => {
                self.create_group().await?;
                Ok(Vec::new())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn outbox_ack(&self, entry_ids: &[String]) -> Result<(), StoreError> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let key = self.inc_key("outbox");
        let mut conn = self.conn.clone();
        // Acknowledged entries are deleted too, so the stream holds only what
        // is still to deliver and its length is the outbox depth.
        redis::pipe()
            .xack(&key, OUTBOX_GROUP, entry_ids)
            .ignore()
            .xdel(&key, entry_ids)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn outbox_push(
        &self,
        incident_id: &str,
        version: u64,
        event: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = conn
            .xadd(
                self.inc_key("outbox"),
                "*",
                &[
                    ("incident", incident_id),
                    ("version", &version.to_string()),
                    ("event", event),
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let key = self.inc_key("outbox");
        let mut conn = self.conn.clone();
        let (depth, first): (u64, redis::streams::StreamRangeReply) = redis::pipe()
            .xlen(&key)
            .xrange_count(&key, "-", "+", 1)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(OutboxStats {
            depth,
            oldest: first.ids.first().and_then(|e| stream_time(&e.id)),
        })
    }

    async fn get_sync(
        &self,
        incident_id: &str,
        adapter: &str,
    ) -> Result<Option<SyncState>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn
            .hget(self.inc_key(&format!("sync:{incident_id}")), adapter)
            .await
            .map_err(unavailable)?;
        raw.map(|r| {
            serde_json::from_str(&r).map_err(|e| StoreError::Corrupt(format!("sync state: {e}")))
        })
        .transpose()
    }

    async fn put_sync(
        &self,
        incident_id: &str,
        adapter: &str,
        state: &SyncState,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut conn = self.conn.clone();
        conn.hset(self.inc_key(&format!("sync:{incident_id}")), adapter, json)
            .await
            .map_err(unavailable)
    }

    async fn try_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let taken: i64 = self
            .lease
            .key(self.inc_key(&format!("lease:{name}")))
            .arg(owner)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(taken == 1)
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .unlease
            .key(self.inc_key(&format!("lease:{name}")))
            .arg(owner)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn put_dead_letter(&self, dead: &DeadLetter) -> Result<(), StoreError> {
        let json = serde_json::to_string(dead).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut conn = self.conn.clone();
        conn.hset(self.inc_key("dead"), &dead.id, json)
            .await
            .map_err(unavailable)
    }

    async fn list_dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = conn
            .hgetall(self.inc_key("dead"))
            .await
            .map_err(unavailable)?;
        let mut out: Vec<DeadLetter> = all
            .values()
            .map(|v| {
                serde_json::from_str(v)
                    .map_err(|e| StoreError::Corrupt(format!("dead letter: {e}")))
            })
            .collect::<Result<_, _>>()?;
        out.sort_by(|a, b| a.failed_at.cmp(&b.failed_at).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn take_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let key = self.inc_key("dead");
        let mut conn = self.conn.clone();
        let (raw, removed): (Option<String>, i64) = redis::pipe()
            .atomic()
            .hget(&key, id)
            .hdel(&key, id)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if removed != 1 {
            return Ok(None);
        }
        raw.map(|r| {
            serde_json::from_str(&r).map_err(|e| StoreError::Corrupt(format!("dead letter: {e}")))
        })
        .transpose()
    }

    async fn heartbeat_seen(&self, name: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .heartbeat
            .key(self.inc_key("heartbeats"))
            .arg(name)
            .arg(at.timestamp_millis())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn open_gauges(&self) -> Result<OpenGauges, StoreError> {
        let mut conn = self.conn.clone();
        let counters: HashMap<String, i64> = conn
            .hgetall(self.inc_key("open"))
            .await
            .map_err(unavailable)?;
        let mut g = OpenGauges::default();
        for (p, n) in g.by_priority.iter_mut().enumerate() {
            *n = counters.get(&format!("p{}", p + 1)).copied().unwrap_or(0);
        }
        g.flapping_alerts = counters.get("flapping").copied().unwrap_or(0);
        Ok(g)
    }

    async fn heartbeats_seen(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: HashMap<String, i64> = conn
            .hgetall(self.inc_key("heartbeats"))
            .await
            .map_err(unavailable)?;
        Ok(raw
            .into_iter()
            .filter_map(|(name, ms)| Utc.timestamp_millis_opt(ms).single().map(|t| (name, t)))
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
