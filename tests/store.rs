//! The state store contract, run against the embedded memory store and a real
//! Redis with the same test bodies.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use incidentd::alert::{Alert, Status, label_fingerprint};
use incidentd::store::memory::MemoryStore;
use incidentd::store::redis::{RedisOptions, RedisStore};
use incidentd::store::{AlertQuery, Outcome, Recorded, SharedStore};

/// The outcomes of a recorded batch, for comparing.
trait Outcomes {
    fn outcomes(self) -> Vec<Outcome>;
}

impl Outcomes for Vec<Recorded> {
    fn outcomes(self) -> Vec<Outcome> {
        self.into_iter().map(|r| r.outcome).collect()
    }
}

/// Times relative to the test's start: retention runs on the wall clock.
fn t(secs: i64) -> DateTime<Utc> {
    static BASE: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| Utc::now().timestamp());
    Utc.timestamp_opt(*BASE + secs, 0).single().expect("time")
}

fn alert(name: &str, status: Status, starts: i64) -> Alert {
    let labels: BTreeMap<String, String> = [("alertname".to_string(), name.to_string())]
        .into_iter()
        .collect();
    Alert {
        source: "alertmanager".into(),
        fingerprint: label_fingerprint(&labels),
        status,
        labels,
        annotations: BTreeMap::new(),
        severity: Some("critical".into()),
        starts_at: Some(t(starts)),
        ends_at: None,
        generator_url: None,
        received_at: t(starts),
    }
}

fn memory(retention: Duration) -> SharedStore {
    Arc::new(MemoryStore::new(retention))
}

fn redis(test: &str, retention: Duration) -> SharedStore {
    redis_at(common::redis_url(), test, retention)
}

fn redis_cluster(test: &str, retention: Duration) -> SharedStore {
    redis_at(common::redis_cluster_url(), test, retention)
}

fn redis_at(url: String, test: &str, retention: Duration) -> SharedStore {
    redis_on_prefix(url, common::unique_prefix(test), retention)
}

/// A Redis store on keys under `prefix` (two of them on one prefix are two
/// daemon instances sharing state).
fn redis_on_prefix(url: String, prefix: String, retention: Duration) -> SharedStore {
    Arc::new(
        RedisStore::new(&RedisOptions {
            url,
            key_prefix: prefix,
            resolved_retention: retention,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
        })
        .expect("redis store"),
    )
}

/// A Redis store on a fresh prefix, and a plain connection to the same server
/// for looking at (or planting) its keys: `(prefix, store, connection)`.
async fn redis_and_raw_connection(
    test: &str,
) -> (String, SharedStore, redis::aio::MultiplexedConnection) {
    let prefix = common::unique_prefix(test);
    let store = redis_on_prefix(common::redis_url(), prefix.clone(), DAY);
    let conn = redis::Client::open(common::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (prefix, store, conn)
}

/// Runs one async test body against the memory store, a Redis server and a
/// Redis Cluster.
macro_rules! both_stores {
    ($name:ident, $retention:expr, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn memory_store() {
                ($body)(memory($retention)).await;
            }
            #[tokio::test]
            async fn redis_store() {
                ($body)(redis(stringify!($name), $retention)).await;
            }
            #[tokio::test]
            async fn redis_cluster_store() {
                ($body)(redis_cluster(stringify!($name), $retention)).await;
            }
        }
    };
}

const DAY: Duration = Duration::from_secs(86_400);

async fn all(store: &SharedStore) -> Vec<incidentd::store::AlertState> {
    store
        .list_alerts(&AlertQuery {
            status: None,
            limit: 1000,
        })
        .await
        .expect("list")
}

both_stores!(
    repeated_alert_is_a_duplicate_with_count,
    DAY,
    |s: SharedStore| async move {
        let a = alert("A", Status::Firing, 0);
        assert_eq!(
            s.record_alerts(std::slice::from_ref(&a), t(1))
                .await
                .unwrap()
                .outcomes(),
            vec![Outcome::New]
        );
        assert_eq!(
            s.record_alerts(std::slice::from_ref(&a), t(5))
                .await
                .unwrap()
                .outcomes(),
            vec![Outcome::Duplicate { count: 2 }]
        );
        let listed = all(&s).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].count, 2);
        assert_eq!(listed[0].total_count, 2);
        assert_eq!(listed[0].first_seen, t(1));
        assert_eq!(listed[0].last_seen, t(5));
        assert_eq!(listed[0].status, Status::Firing);
    }
);

both_stores!(
    a_large_batch_records_every_alert_in_order_with_repeats_inside_it,
    DAY,
    |s: SharedStore| async move {
        // More alerts than one script call records on a single Redis, the
        // last ones repeats of the first, and one resolving within the batch.
        let mut batch: Vec<Alert> = (0..70)
            .map(|n| alert(&format!("A{n}"), Status::Firing, 0))
            .collect();
        batch.push(alert("A0", Status::Firing, 0));
        batch.push(alert("A69", Status::Resolved, 0));
        let mut expected = vec![Outcome::New; 70];
        expected.push(Outcome::Duplicate { count: 2 });
        expected.push(Outcome::Transition {
            from: Status::Firing,
            to: Status::Resolved,
        });
        assert_eq!(
            s.record_alerts(&batch, t(1)).await.unwrap().outcomes(),
            expected
        );
        let listed = all(&s).await;
        assert_eq!(listed.len(), 70);
        let resolved: Vec<_> = listed
            .iter()
            .filter(|a| a.status == Status::Resolved)
            .map(|a| a.labels["alertname"].as_str())
            .collect();
        assert_eq!(resolved, ["A69"]);
    }
);

both_stores!(
    a_large_batch_of_explanations_is_written_in_order_and_only_to_alerts_that_exist,
    DAY,
    |s: SharedStore| async move {
        let batch: Vec<Alert> = (0..40)
            .map(|n| alert(&format!("E{n}"), Status::Firing, 0))
            .collect();
        s.record_alerts(&batch, t(1)).await.unwrap();
        let explain = |summary: String| incidentd::store::Explain {
            at: t(2),
            summary,
            rules: Vec::new(),
        };
        // More than one script call's worth; E0's second explanation comes
        // last and wins, and an alert the store never saw gets none.
        let mut explains: Vec<_> = batch
            .iter()
            .map(|a| {
                (
                    a.fingerprint.clone(),
                    explain(format!("first {}", a.labels["alertname"])),
                )
            })
            .collect();
        let unknown = alert("NeverSeen", Status::Firing, 0);
        explains.push((unknown.fingerprint.clone(), explain("lost".into())));
        explains.push((batch[0].fingerprint.clone(), explain("second E0".into())));
        s.set_explains(&explains).await.unwrap();
        for (n, a) in batch.iter().enumerate() {
            let got = s.get_alert(&a.fingerprint).await.unwrap().unwrap();
            let want = if n == 0 {
                "second E0".to_string()
            } else {
                format!("first E{n}")
            };
            assert_eq!(got.explain.map(|e| e.summary), Some(want));
        }
        assert!(s.get_alert(&unknown.fingerprint).await.unwrap().is_none());
    }
);

both_stores!(
    status_changes_are_transitions_and_reset_count,
    DAY,
    |s: SharedStore| async move {
        let firing = alert("A", Status::Firing, 0);
        let resolved = alert("A", Status::Resolved, 0);
        let refire = alert("A", Status::Firing, 100);
        s.record_alerts(&[firing.clone(), firing], t(1))
            .await
            .unwrap();
        assert_eq!(
            s.record_alerts(&[resolved], t(50))
                .await
                .unwrap()
                .outcomes(),
            vec![Outcome::Transition {
                from: Status::Firing,
                to: Status::Resolved
            }]
        );
        assert_eq!(
            s.record_alerts(&[refire], t(100)).await.unwrap().outcomes(),
            vec![Outcome::Transition {
                from: Status::Resolved,
                to: Status::Firing
            }]
        );
        let st = &all(&s).await[0];
        assert_eq!((st.count, st.total_count, st.transitions), (1, 4, 2));
        assert_eq!(st.status_changed_at, t(100));
        assert_eq!(st.first_seen, t(1));
    }
);

both_stores!(
    late_firing_of_a_resolved_episode_is_stale,
    DAY,
    |s: SharedStore| async move {
        // An Alertmanager HA peer that lags sends "firing" after its twin sent "resolved".
        s.record_alerts(&[alert("A", Status::Firing, 0)], t(1))
            .await
            .unwrap();
        s.record_alerts(&[alert("A", Status::Resolved, 0)], t(2))
            .await
            .unwrap();
        assert_eq!(
            s.record_alerts(&[alert("A", Status::Firing, 0)], t(3))
                .await
                .unwrap()
                .outcomes(),
            vec![Outcome::Stale]
        );
        assert_eq!(all(&s).await[0].status, Status::Resolved);
    }
);

both_stores!(
    batch_outcomes_follow_input_order,
    DAY,
    |s: SharedStore| async move {
        let (a, b) = (alert("A", Status::Firing, 0), alert("B", Status::Firing, 0));
        s.record_alerts(std::slice::from_ref(&a), t(1))
            .await
            .unwrap();
        let out = s
            .record_alerts(&[b.clone(), a.clone(), b], t(2))
            .await
            .unwrap()
            .outcomes();
        assert_eq!(
            out,
            vec![
                Outcome::New,
                Outcome::Duplicate { count: 2 },
                Outcome::Duplicate { count: 2 }
            ]
        );
        assert!(s.record_alerts(&[], t(3)).await.unwrap().is_empty());
    }
);

both_stores!(
    listing_filters_by_status_and_limits,
    DAY,
    |s: SharedStore| async move {
        s.record_alerts(
            &[
                alert("A", Status::Firing, 0),
                alert("B", Status::Resolved, 0),
                alert("C", Status::Firing, 0),
            ],
            t(1),
        )
        .await
        .unwrap();
        let firing = s
            .list_alerts(&AlertQuery {
                status: Some(Status::Firing),
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(firing.len(), 2);
        assert!(firing.iter().all(|a| a.status == Status::Firing));
        let one = s
            .list_alerts(&AlertQuery {
                status: None,
                limit: 1,
            })
            .await
            .unwrap();
        assert_eq!(one.len(), 1);
    }
);

both_stores!(
    resolved_alerts_expire_after_retention,
    Duration::from_millis(300),
    |s: SharedStore| async move {
        let now = Utc::now();
        s.record_alerts(
            &[
                alert("gone", Status::Resolved, 0),
                alert("kept", Status::Firing, 0),
            ],
            now,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        s.maintain(Utc::now()).await.unwrap();
        let left: Vec<String> = all(&s)
            .await
            .into_iter()
            .map(|a| a.labels["alertname"].clone())
            .collect();
        assert_eq!(left, vec!["kept".to_string()]);
    }
);

both_stores!(
    concurrent_writers_of_one_alert_lose_no_update,
    DAY,
    |s: SharedStore| async move {
        let a = alert("hot", Status::Firing, 0);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (s, a) = (s.clone(), a.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..25 {
                    s.record_alerts(std::slice::from_ref(&a), t(i))
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let st = all(&s).await;
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].count, 200);
    }
);

#[tokio::test]
async fn two_redis_stores_on_one_prefix_share_state_and_counts_add_up() {
    // Two daemon instances are two independent connections on the same keys.
    let prefix = common::unique_prefix("shared");
    let open = || redis_on_prefix(common::redis_url(), prefix.clone(), DAY);
    let (one, two) = (open(), open());
    let batch: Vec<Alert> = (0..50)
        .map(|i| alert(&format!("a{i}"), Status::Firing, 0))
        .collect();
    let (r1, r2) = tokio::join!(
        one.record_alerts(&batch, t(1)),
        two.record_alerts(&batch, t(1))
    );
    let news = r1
        .unwrap()
        .outcomes()
        .into_iter()
        .chain(r2.unwrap().outcomes())
        .filter(|o| *o == Outcome::New)
        .count();
    assert_eq!(
        news, 50,
        "each alert is new exactly once across both instances"
    );
    let listed = all(&one).await;
    assert_eq!(listed.len(), 50);
    assert!(listed.iter().all(|a| a.count == 2));
}

#[tokio::test]
async fn redis_store_reports_unavailable_then_recovers_after_restart() {
    let mut server = common::RedisServer::start();
    let store: SharedStore = Arc::new(
        RedisStore::new(&RedisOptions {
            url: server.url(),
            key_prefix: "recover".into(),
            resolved_retention: DAY,
            connect_timeout: Duration::from_millis(300),
            response_timeout: Duration::from_millis(500),
        })
        .unwrap(),
    );
    store
        .record_alerts(&[alert("A", Status::Firing, 0)], t(1))
        .await
        .unwrap();
    server.stop();
    assert!(store.ping().await.is_err());
    assert!(
        store
            .record_alerts(&[alert("A", Status::Firing, 0)], t(2))
            .await
            .is_err()
    );
    // A fresh server has an empty script cache: recording must load the script again.
    server.restart();
    let mut recovered = false;
    for _ in 0..50 {
        if store
            .record_alerts(&[alert("B", Status::Firing, 0)], t(3))
            .await
            .is_ok()
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "store did not recover after Redis came back");
    assert!(store.ping().await.is_ok());
}

#[tokio::test]
async fn explanations_are_written_after_redis_lost_its_script_cache() {
    let store = redis("explain-noscript", DAY);
    let a = alert("ExplainMe", Status::Firing, 0);
    store
        .record_alerts(std::slice::from_ref(&a), t(0))
        .await
        .unwrap();
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let explain = incidentd::store::Explain {
        at: t(1),
        summary: "rule x: opened incident inc-1".into(),
        rules: Vec::new(),
    };
    store
        .set_explains(&[(a.fingerprint.clone(), explain)])
        .await
        .unwrap();
    let got = store.get_alert(&a.fingerprint).await.unwrap().unwrap();
    assert_eq!(
        got.explain.map(|e| e.summary).as_deref(),
        Some("rule x: opened incident inc-1")
    );
}

both_stores!(
    heartbeat_last_seen_keeps_the_latest_time,
    DAY,
    |store: SharedStore| async move {
        assert!(store.heartbeats_seen().await.unwrap().is_empty());
        let t0 = chrono::Utc::now();
        let later = t0 + chrono::Duration::seconds(30);
        store.heartbeat_seen("watchdog", later).await.unwrap();
        // An instance reporting late does not move it back.
        store.heartbeat_seen("watchdog", t0).await.unwrap();
        store.heartbeat_seen("kafka-alerts", t0).await.unwrap();
        let seen = store.heartbeats_seen().await.unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen["watchdog"].timestamp_millis(),
            later.timestamp_millis()
        );
        assert_eq!(
            seen["kafka-alerts"].timestamp_millis(),
            t0.timestamp_millis()
        );
    }
);

both_stores!(
    open_incident_gauges_follow_every_write,
    DAY,
    |store: SharedStore| async move {
        use incidentd::incident::IncidentState;
        use incidentd::store::IncidentCommit;
        let write = |inc: incidentd::incident::Incident, expected: u64| {
            let store = store.clone();
            async move {
                let commit = IncidentCommit {
                    incident: &inc,
                    expected_version: expected,
                    bind: None,
                    members: &[],
                    due: None,
                    outbox_event: None,
                    slots: &[],
                };
                assert!(store.commit_incident(&commit).await.unwrap());
            }
        };
        let base = store.open_gauges().await.unwrap();
        let mut a = common::sample_incident(&common::unique_prefix("gauge-a"));
        a.priority = 1;
        a.version = 1;
        write(a.clone(), 0).await;
        let mut b = common::sample_incident(&common::unique_prefix("gauge-b"));
        b.priority = 2;
        b.version = 1;
        write(b.clone(), 0).await;
        let g = store.open_gauges().await.unwrap();
        assert_eq!(g.by_priority[0] - base.by_priority[0], 1);
        assert_eq!(g.by_priority[1] - base.by_priority[1], 1);
        // An escalation moves it between priorities; resolving takes it out.
        b.priority = 1;
        b.version = 2;
        write(b.clone(), 1).await;
        a.state = IncidentState::Resolved;
        a.version = 2;
        write(a.clone(), 1).await;
        let g = store.open_gauges().await.unwrap();
        assert_eq!(g.by_priority[0] - base.by_priority[0], 1);
        assert_eq!(g.by_priority[1] - base.by_priority[1], 0);
    }
);

both_stores!(
    a_commit_checks_its_extra_slots_and_points_those_it_sets_at_the_incident_and_they_read_back_at_once,
    DAY,
    |s: SharedStore| async move {
        use incidentd::store::{IncidentCommit, SlotCheck};
        let commit = |inc: &incidentd::incident::Incident, slots: Vec<SlotCheck<'static>>| {
            let s = s.clone();
            let inc = inc.clone();
            async move {
                s.commit_incident(&IncidentCommit {
                    incident: &inc,
                    expected_version: inc.version - 1,
                    bind: None,
                    members: &[],
                    due: None,
                    outbox_event: None,
                    slots: &slots,
                })
                .await
                .unwrap()
            }
        };
        let slot_of = |key: &'static str| {
            let s = s.clone();
            async move { s.find_incidents("", key, &[]).await.unwrap().slot }
        };
        let mut a = common::sample_incident("inc-a");
        a.version = 1;
        let set = |key, expected| SlotCheck {
            key,
            expected,
            set: true,
        };
        assert!(commit(&a, vec![set("svc:postgres", None), set("svc:api", None)]).await);
        assert_eq!(slot_of("svc:postgres").await.as_deref(), Some("inc-a"));
        assert_eq!(slot_of("svc:api").await.as_deref(), Some("inc-a"));

        // A slot read as empty that another commit took: nothing is written.
        let mut b = common::sample_incident("inc-b");
        b.version = 1;
        let stale = vec![
            set("svc:checkout", None),
            SlotCheck {
                key: "svc:postgres",
                expected: None,
                set: false,
            },
        ];
        assert!(!commit(&b, stale).await);
        assert!(s.get_incident("inc-b").await.unwrap().is_none());
        assert_eq!(slot_of("svc:checkout").await, None);

        // Read again: checked only, the slot keeps pointing where it did.
        let fresh = vec![
            set("svc:checkout", None),
            SlotCheck {
                key: "svc:postgres",
                expected: Some("inc-a"),
                set: false,
            },
        ];
        assert!(commit(&b, fresh).await);
        assert_eq!(slot_of("svc:checkout").await.as_deref(), Some("inc-b"));
        assert_eq!(slot_of("svc:postgres").await.as_deref(), Some("inc-a"));

        // Several slots read at once with a key, with the incidents they
        // name, each once.
        let keys = ["svc:checkout", "svc:unknown", "svc:api"].map(String::from);
        let found = s
            .find_incidents_and_slots("", "svc:postgres", &[], &keys)
            .await
            .unwrap();
        assert_eq!(found.slot.as_deref(), Some("inc-a"));
        assert_eq!(
            found.slots,
            vec![Some("inc-b".to_string()), None, Some("inc-a".to_string())]
        );
        let mut ids: Vec<&String> = found.incidents.keys().collect();
        ids.sort();
        assert_eq!(ids, ["inc-a", "inc-b"]);
        assert_eq!(found.incidents["inc-b"].id, "inc-b");
    }
);

both_stores!(
    updates_read_without_the_timeline_append_to_it_and_a_full_read_has_the_newest_entries,
    DAY,
    |s: SharedStore| async move {
        use incidentd::incident::MAX_TIMELINE;
        let id = common::unique_prefix("timeline");
        let inc = common::sample_incident(&id);
        common::commit_next(&s, &inc).await;
        // As correlation updates it: read it without its timeline, add, write.
        for n in 0..MAX_TIMELINE + 10 {
            let mut head = s.get_incident_head(&id).await.unwrap().unwrap();
            assert_eq!(head.timeline_total(), n as u64 + 1);
            head.push_timeline(t(n as i64), "alert_added", format!("alert {n} joined"));
            head.version += 1;
            common::commit_next(&s, &head).await;
        }
        let full = s.get_incident(&id).await.unwrap().unwrap();
        assert_eq!(full.timeline.len(), MAX_TIMELINE);
        assert_eq!(full.timeline_dropped, 11);
        assert_eq!(full.timeline[0].cause, "alert 10 joined");
        let last = &full.timeline[MAX_TIMELINE - 1];
        assert_eq!(last.cause, format!("alert {} joined", MAX_TIMELINE + 9));
        assert_eq!(last.at, t(MAX_TIMELINE as i64 + 9));
        // A whole incident changed and written back adds only its new entry.
        let mut whole = full.clone();
        whole.push_timeline(t(9_999), "acknowledged", "by a person");
        whole.version += 1;
        common::commit_next(&s, &whole).await;
        let again = s.get_incident(&id).await.unwrap().unwrap();
        assert_eq!(again.timeline.len(), MAX_TIMELINE);
        assert_eq!(again.timeline_dropped, 12);
        assert_eq!(
            again.timeline[MAX_TIMELINE - 2],
            full.timeline[MAX_TIMELINE - 1]
        );
        assert_eq!(again.timeline[MAX_TIMELINE - 1].event, "acknowledged");
        assert_eq!(again.timeline, whole.timeline);
    }
);

/// `sample_incident(id)` with alerts `names` (firing) joined.
fn incident_with_alerts(id: &str, names: &[&str]) -> incidentd::incident::Incident {
    let mut inc = common::sample_incident(id);
    for (n, name) in names.iter().enumerate() {
        let joined = alert(name, Status::Firing, n as i64);
        inc.alerts
            .push(Arc::new(incidentd::incident::IncidentAlert::new(
                &joined,
                t(n as i64),
                None,
            )));
    }
    inc
}

fn alert_names(inc: &incidentd::incident::Incident) -> Vec<String> {
    inc.alerts
        .iter()
        .map(|a| a.labels["alertname"].clone())
        .collect()
}

both_stores!(
    an_incidents_alerts_read_back_as_each_update_left_them,
    DAY,
    |s: SharedStore| async move {
        let id = common::unique_prefix("alerts");
        common::commit_next(&s, &incident_with_alerts(&id, &["a", "b", "c"])).await;

        // As correlation updates it: one alert changes, another joins.
        let mut head = s.get_incident_head(&id).await.unwrap().unwrap();
        assert_eq!(alert_names(&head), ["a", "b", "c"]);
        let b = Arc::make_mut(&mut head.alerts[1]);
        b.status = Status::Resolved;
        b.status_changed_at = t(60);
        let joined = alert("d", Status::Firing, 61);
        head.alerts
            .push(Arc::new(incidentd::incident::IncidentAlert::new(
                &joined,
                t(61),
                None,
            )));
        head.version += 1;
        common::commit_next(&s, &head).await;
        let read = s.get_incident(&id).await.unwrap().unwrap();
        assert_eq!(read.alerts, head.alerts);
        assert_eq!(read.alerts[1].status, Status::Resolved);

        // Emptied (merged into another incident), then joined again.
        let mut emptied = read.clone();
        emptied.alerts.clear();
        emptied.version += 1;
        common::commit_next(&s, &emptied).await;
        let mut read = s.get_incident_head(&id).await.unwrap().unwrap();
        assert!(read.alerts.is_empty());
        read.alerts.push(head.alerts[3].clone());
        read.version += 1;
        common::commit_next(&s, &read).await;
        assert_eq!(
            alert_names(&s.get_incident(&id).await.unwrap().unwrap()),
            ["d"]
        );

        // A new incident made from a copy of this one is written whole, not
        // as the changes to this one's alerts.
        let mut copy = s.get_incident_head(&id).await.unwrap().unwrap();
        copy.id = format!("{id}-copy");
        copy.version = 1;
        common::commit_next(&s, &copy).await;
        let read = s.get_incident(&copy.id).await.unwrap().unwrap();
        assert_eq!(read.alerts, copy.alerts);
    }
);

/// The document in the Redis store's incident hash `key`.
async fn stored_document(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> serde_json::Value {
    let doc: String = redis::cmd("HGET")
        .arg(key)
        .arg("doc")
        .query_async(conn)
        .await
        .unwrap();
    serde_json::from_str(&doc).unwrap()
}

/// The entries of Redis list `key`.
async fn list_entries(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn redis_keeps_an_incidents_alerts_out_of_the_document_and_writes_only_the_ones_an_update_changed()
 {
    let (prefix, store, mut conn) = redis_and_raw_connection("alerts-layout").await;
    let key = |k: &str| format!("{{{prefix}}}:{k}");
    common::commit_next(&store, &incident_with_alerts("storm", &["a", "b", "c"])).await;
    let doc = stored_document(&mut conn, &key("incident:storm")).await;
    assert!(doc.get("alerts").is_none(), "{doc}");
    assert_eq!(
        list_entries(&mut conn, &key("incident-alerts:storm"))
            .await
            .len(),
        3
    );

    // Plant a mark in the stored entry of alert "a": an update that does not
    // change "a" leaves its entry as it is.
    let mut a: serde_json::Value =
        serde_json::from_str(&list_entries(&mut conn, &key("incident-alerts:storm")).await[0])
            .unwrap();
    a["annotations"]["planted"] = "yes".into();
    let _: () = redis::cmd("LSET")
        .arg(key("incident-alerts:storm"))
        .arg(0)
        .arg(a.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut head = store.get_incident_head("storm").await.unwrap().unwrap();
    Arc::make_mut(&mut head.alerts[2]).status = Status::Resolved;
    head.version = 2;
    common::commit_next(&store, &head).await;
    let read = store.get_incident("storm").await.unwrap().unwrap();
    assert_eq!(
        read.alerts[0]
            .annotations
            .get("planted")
            .map(String::as_str),
        Some("yes")
    );
    assert_eq!(read.alerts[2].status, Status::Resolved);

    // A list shorter than the version it was read at says is a conflict,
    // not a half-done write.
    let _: () = redis::cmd("LTRIM")
        .arg(key("incident-alerts:storm"))
        .arg(0)
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut stale = read.clone();
    Arc::make_mut(&mut stale.alerts[1]).status = Status::Resolved;
    stale.version = 3;
    let commit = incidentd::store::IncidentCommit {
        incident: &stale,
        expected_version: 2,
        bind: None,
        members: &[],
        due: None,
        outbox_event: None,
        slots: &[],
    };
    assert!(!store.commit_incident(&commit).await.unwrap());
    assert_eq!(
        list_entries(&mut conn, &key("incident-alerts:storm"))
            .await
            .len(),
        1
    );

    // Written by an earlier version: the alerts inside the document. Read
    // from there, and moved to the list by its next write.
    let old = incident_with_alerts("old", &["x", "y"]);
    write_as_version_one(&mut conn, &key("incident:old"), &old).await;
    let mut head = store.get_incident_head("old").await.unwrap().unwrap();
    assert_eq!(head.alerts, old.alerts);
    head.version = 2;
    common::commit_next(&store, &head).await;
    assert_eq!(
        list_entries(&mut conn, &key("incident-alerts:old"))
            .await
            .len(),
        2
    );
    let doc = stored_document(&mut conn, &key("incident:old")).await;
    assert!(doc.get("alerts").is_none(), "{doc}");
    assert_eq!(
        store.get_incident("old").await.unwrap().unwrap().alerts,
        old.alerts
    );
}

/// Writes `inc` at `key` whole, as one document and nothing beside it: how
/// versions before the timeline list and the route field wrote an incident.
async fn write_as_version_one(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    inc: &incidentd::incident::Incident,
) {
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg("version")
        .arg(1)
        .arg("doc")
        .arg(serde_json::to_string(inc).unwrap())
        .query_async(conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn redis_keeps_the_timeline_out_of_the_document_and_moves_an_older_documents_timeline_on_its_next_write()
 {
    let (prefix, store, mut conn) = redis_and_raw_connection("timeline-layout").await;
    let key = |k: &str| format!("{{{prefix}}}:{k}");

    // Written by an earlier version: the timeline inside the document.
    let mut old = common::sample_incident("old");
    old.push_timeline(t(1), "alert_added", "a second alert joined");
    write_as_version_one(&mut conn, &key("incident:old"), &old).await;
    assert_eq!(
        store.get_incident("old").await.unwrap().unwrap().timeline,
        old.timeline
    );
    let mut head = store.get_incident_head("old").await.unwrap().unwrap();
    head.push_timeline(t(2), "acknowledged", "by a person");
    head.version = 2;
    common::commit_next(&store, &head).await;

    let doc = stored_document(&mut conn, &key("incident:old")).await;
    assert!(doc.get("timeline").is_none(), "{doc}");
    assert_eq!(doc["title"], old.title.as_str());
    let list = list_entries(&mut conn, &key("timeline:old")).await;
    assert_eq!(list.len(), 3);
    let whole = store.get_incident("old").await.unwrap().unwrap();
    let events: Vec<&str> = whole.timeline.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(events, ["created", "alert_added", "acknowledged"]);
    assert_eq!(whole.timeline_dropped, 0);
    let head = store.get_incident_head("old").await.unwrap().unwrap();
    assert!(head.timeline.is_empty());
    assert_eq!(head.timeline_dropped, 3);
    assert_eq!(head.title, old.title);
}

/// An alert's score in the Redis store's alert index under `prefix`.
async fn index_score(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    fingerprint: &str,
) -> Option<f64> {
    redis::cmd("ZSCORE")
        .arg(format!("{prefix}:alerts"))
        .arg(fingerprint)
        .query_async(conn)
        .await
        .unwrap()
}

/// After a Redis restart a batch's `EVALSHA`s fail with `NOSCRIPT` while its
/// `ZADD`s to the alert index succeed; the batch is retried a moment later. A
/// listing in between sees index entries without their alert hash. It must not
/// prune those (the retried write would then be missing from every listing),
/// only entries older than the retention, whose alerts really expired.
#[tokio::test]
async fn redis_listing_keeps_index_entries_of_alerts_being_written_and_prunes_expired_ones() {
    let (prefix, store, mut conn) = redis_and_raw_connection("index-prune").await;
    let index = format!("{prefix}:alerts");
    let in_flight = alert("InFlight", Status::Firing, 0);
    let now_ms = Utc::now().timestamp_millis();
    let expired_ms = now_ms - 2 * 86_400_000;
    let _: () = redis::cmd("ZADD")
        .arg(&index)
        .arg(now_ms)
        .arg(&in_flight.fingerprint)
        .arg(expired_ms)
        .arg("long-gone")
        .query_async(&mut conn)
        .await
        .unwrap();

    let everything = AlertQuery {
        status: None,
        limit: 100,
    };
    let listed = store.list_alerts(&everything).await.unwrap();
    assert!(listed.is_empty());
    assert_eq!(
        index_score(&mut conn, &prefix, &in_flight.fingerprint).await,
        Some(now_ms as f64),
        "an alert being written lost its index entry"
    );
    assert_eq!(index_score(&mut conn, &prefix, "long-gone").await, None);

    // The retried batch lands: the alert is listed.
    store
        .record_alerts(std::slice::from_ref(&in_flight), t(0))
        .await
        .unwrap();
    let listed = store.list_alerts(&everything).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].fingerprint, in_flight.fingerprint);
}

both_stores!(
    a_touch_moves_only_an_open_incidents_activity_time_and_a_racing_commit_keeps_it,
    DAY,
    |s: SharedStore| async move {
        use incidentd::incident::IncidentState;
        let activity = |s: &SharedStore| {
            let s = s.clone();
            async move {
                s.get_incident("touched")
                    .await
                    .unwrap()
                    .unwrap()
                    .last_activity
            }
        };
        let mut inc = common::sample_incident("touched");
        inc.last_activity = t(0);
        common::commit_next(&s, &inc).await;
        // A writer reads it before the touch and commits after.
        let read_before = s.get_incident_head("touched").await.unwrap().unwrap();

        let ids = ["touched".to_string(), "missing".to_string()];
        assert_eq!(
            s.touch_incidents(&ids, t(100)).await.unwrap(),
            [true, false]
        );
        let touched = s.get_incident_head("touched").await.unwrap().unwrap();
        assert_eq!(touched.last_activity, t(100));
        assert_eq!(touched.version, inc.version, "a touch is not a new version");
        // An older touch does not move it back.
        s.touch_incidents(&ids[..1], t(50)).await.unwrap();
        assert_eq!(activity(&s).await, t(100));

        let mut changed = read_before;
        changed.version += 1;
        changed.title = "changed meanwhile".into();
        common::commit_next(&s, &changed).await;
        let after = s.get_incident("touched").await.unwrap().unwrap();
        assert_eq!(after.title, "changed meanwhile");
        assert_eq!(after.last_activity, t(100), "the commit lost the touch");

        let mut closed = after;
        closed.version += 1;
        closed.state = IncidentState::Closed;
        closed.closed_at = Some(t(101));
        common::commit_next(&s, &closed).await;
        assert_eq!(s.touch_incidents(&ids[..1], t(200)).await.unwrap(), [false]);
        assert_eq!(activity(&s).await, t(100));
    }
);

#[tokio::test]
async fn redis_reads_the_route_of_an_incident_written_before_the_hash_kept_it() {
    let (prefix, store, mut conn) = redis_and_raw_connection("route-field").await;
    let key = format!("{{{prefix}}}:incident:older");
    let route = |r: &[&str]| Some(r.iter().map(|s| s.to_string()).collect::<Vec<_>>());

    // Written by an earlier version: the route only inside the document.
    let mut old = common::sample_incident("older");
    old.route = vec!["opsgenie".into()];
    write_as_version_one(&mut conn, &key, &old).await;
    assert_eq!(
        store.incident_route("older").await.unwrap(),
        route(&["opsgenie"])
    );

    // Its next write keeps the route beside the document, where it is read.
    let mut next = store.get_incident_head("older").await.unwrap().unwrap();
    next.version = 2;
    next.route = vec!["servicenow".into(), "jira".into()];
    common::commit_next(&store, &next).await;
    let field: String = redis::cmd("HGET")
        .arg(&key)
        .arg("route")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(field, r#"["servicenow","jira"]"#);
    assert_eq!(
        store.incident_route("older").await.unwrap(),
        route(&["servicenow", "jira"])
    );

    // A corrupt field is an error, not an empty route.
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("route")
        .arg("not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = store.incident_route("older").await.unwrap_err();
    assert!(err.to_string().contains("incident route"), "{err}");
}

both_stores!(
    an_incidents_route_is_read_without_the_rest_of_it,
    DAY,
    |s: SharedStore| async move {
        let mut inc = common::sample_incident("routed");
        inc.route = vec!["servicenow".into(), "pagerduty".into()];
        common::commit_next(&s, &inc).await;
        assert_eq!(
            s.incident_route("routed").await.unwrap(),
            Some(vec!["servicenow".to_string(), "pagerduty".to_string()])
        );
        let mut rerouted = s.get_incident_head("routed").await.unwrap().unwrap();
        rerouted.version += 1;
        rerouted.route = vec!["jira".into()];
        common::commit_next(&s, &rerouted).await;
        assert_eq!(
            s.incident_route("routed").await.unwrap(),
            Some(vec!["jira".to_string()]),
            "the route of the latest version"
        );
        assert_eq!(s.incident_route("missing").await.unwrap(), None);
    }
);

both_stores!(
    an_incidents_alert_labels_come_back_as_written_after_updates_that_do_not_read_them,
    DAY,
    |s: SharedStore| async move {
        use incidentd::incident::IncidentAlert;
        let at = chrono::Utc::now();
        let member = |name: &str, note: &str| {
            let mut a = alert(name, Status::Firing, 0);
            a.labels.insert("note".into(), note.into());
            a.annotations
                .insert("summary".into(), format!("{note} is down"));
            std::sync::Arc::new(IncidentAlert::new(&a, at, None))
        };
        let mut inc = common::sample_incident("labelled");
        // Escapes and non-ASCII text must come back byte for byte.
        inc.alerts = vec![member("a", "quote \" tab \t é ✓"), member("b", "plain")];
        common::commit_next(&s, &inc).await;

        let mut update = s.get_incident_head("labelled").await.unwrap().unwrap();
        if s.kind() == "redis" {
            assert!(
                update
                    .alerts
                    .iter()
                    .all(|a| a.labels.is_unparsed() && a.annotations.is_unparsed()),
                "the Redis store leaves the labels of an incident it reads as text"
            );
        }
        update.version += 1;
        std::sync::Arc::make_mut(&mut update.alerts[1]).status = Status::Resolved;
        update.alerts.push(member("c", "new"));
        common::commit_next(&s, &update).await;
        if s.kind() == "redis" {
            assert!(
                update.alerts[0].labels.is_unparsed(),
                "writing did not parse them"
            );
        }

        let stored = s.get_incident("labelled").await.unwrap().unwrap();
        let expected = [
            member("a", "quote \" tab \t é ✓"),
            member("b", "plain"),
            member("c", "new"),
        ];
        assert_eq!(stored.alerts.len(), 3);
        for (got, want) in stored.alerts.iter().zip(&expected) {
            assert_eq!(*got.labels, *want.labels);
            assert_eq!(*got.annotations, *want.annotations);
        }
        assert_eq!(stored.alerts[1].status, Status::Resolved);
        // What the API and adapters write: plain objects.
        let json = serde_json::to_value(&stored).unwrap();
        assert_eq!(json["alerts"][0]["labels"]["note"], "quote \" tab \t é ✓");
        assert_eq!(json["alerts"][2]["annotations"]["summary"], "new is down");
    }
);

/// An ingest path (one rule: an incident per alertname) over `s`, and its metrics.
fn ingestor_on(
    s: &SharedStore,
) -> (
    incidentd::ingest::Ingestor,
    Arc<incidentd::metrics::Metrics>,
) {
    let rules = incidentd::rules::RuleSet::from_sources(&[(
        "rules.yaml".into(),
        "rules:\n  - name: per-alert\n    incident:\n      title: \"{{ labels.alertname }}\"\n      impact: low\n      urgency: low\n      group_by: [alertname]\n".into(),
    )])
    .unwrap();
    let metrics = Arc::new(incidentd::metrics::Metrics::new(prometheus::Registry::new()).unwrap());
    let engine = Arc::new(incidentd::incident::engine::Engine::new(
        s.clone(),
        Arc::new(rules),
        metrics.clone(),
    ));
    (
        incidentd::ingest::Ingestor::new(engine, metrics.clone()),
        metrics,
    )
}

both_stores!(
    a_repeat_after_the_refresh_interval_moves_its_open_incidents_window_without_rewriting_it,
    DAY,
    |s: SharedStore| async move {
        use incidentd::incident::{IncidentQuery, IncidentState};
        let (ingestor, metrics) = ingestor_on(&s);
        let everything = IncidentQuery {
            limit: 100,
            ..IncidentQuery::default()
        };
        let a = alert("Repeated", Status::Firing, 0);
        ingestor
            .ingest("test", vec![a.clone()], t(0))
            .await
            .unwrap();
        let opened = s.list_incidents(&everything).await.unwrap();
        assert_eq!(opened.len(), 1);
        let id = opened[0].id.clone();

        // Within the refresh interval a repeat is not processed at all.
        ingestor
            .ingest("test", vec![a.clone()], t(10))
            .await
            .unwrap();
        assert_eq!(metrics.alert_repeats_touched.get(), 0);
        // After it, its incident's window slides, and nothing else changes.
        ingestor
            .ingest("test", vec![a.clone()], t(40))
            .await
            .unwrap();
        assert_eq!(metrics.alert_repeats_touched.get(), 1);
        let after = s.get_incident(&id).await.unwrap().unwrap();
        assert_eq!(after.last_activity, t(40));
        assert_eq!(after.version, opened[0].version);
        assert_eq!(after.timeline, opened[0].timeline);

        // An hour after its last full pass, a repeat is processed in full again
        // (renewing its membership, its explanation, ...).
        ingestor
            .ingest("test", vec![a.clone()], t(3_700))
            .await
            .unwrap();
        assert_eq!(metrics.alert_repeats_touched.get(), 1);
        let after = s.get_incident(&id).await.unwrap().unwrap();
        assert_eq!(after.last_activity, t(3_700));
        assert_eq!(after.version, opened[0].version + 1);

        // A person closed it: the next repeat is processed in full (a new
        // incident, linked to the closed one).
        let mut closed = after;
        closed.version += 1;
        closed.state = IncidentState::Closed;
        closed.closed_at = Some(t(3_750));
        closed.closed_by = Some("a person".into());
        common::commit_next(&s, &closed).await;
        ingestor
            .ingest("test", vec![a.clone()], t(3_790))
            .await
            .unwrap();
        assert_eq!(metrics.alert_repeats_touched.get(), 1);
        let now_open: Vec<_> = s
            .list_incidents(&everything)
            .await
            .unwrap()
            .into_iter()
            .filter(|i| i.state != IncidentState::Closed)
            .collect();
        assert_eq!(now_open.len(), 1);
        assert_ne!(now_open[0].id, id);
        assert_eq!(now_open[0].related, [id]);
    }
);

both_stores!(
    a_status_change_whose_processing_failed_is_applied_when_the_alert_is_sent_again,
    DAY,
    |s: SharedStore| async move {
        use incidentd::incident::{IncidentQuery, IncidentState};
        let (ingestor, metrics) = ingestor_on(&s);
        let firing = alert("Retried", Status::Firing, 0);
        ingestor
            .ingest("test", vec![firing.clone()], t(0))
            .await
            .unwrap();
        // The resolve is recorded, then processing it fails (the store went
        // away): the alert's explanation is still the one of its firing.
        let mut resolved = firing.clone();
        resolved.status = Status::Resolved;
        s.record_alerts(std::slice::from_ref(&resolved), t(100))
            .await
            .unwrap();
        let again = s
            .record_alerts(std::slice::from_ref(&resolved), t(100))
            .await
            .unwrap();
        assert!(matches!(again[0].outcome, Outcome::Duplicate { .. }));
        assert_eq!(again[0].previous, None, "an explanation of the old status");

        // The sender tries again (a Kafka retry keeps the batch's time).
        ingestor
            .ingest("test", vec![resolved.clone()], t(100))
            .await
            .unwrap();
        assert_eq!(metrics.alert_repeats_touched.get(), 0);
        let incidents = s
            .list_incidents(&IncidentQuery {
                limit: 10,
                ..IncidentQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(incidents.len(), 1);
        let member = incidents[0].alert(&firing.fingerprint).unwrap();
        assert_eq!(member.status, Status::Resolved);
        assert_ne!(incidents[0].state, IncidentState::New);
    }
);

/// A Kafka batch retried through a long store outage keeps the time it was
/// first received. Its alerts' index entries must still not look expired, or
/// a listing racing the retry (see the test above) could drop them.
#[tokio::test]
async fn redis_a_batch_recorded_long_after_it_was_received_is_indexed_as_recent() {
    let (prefix, store, mut conn) = redis_and_raw_connection("late-batch").await;
    let late = alert("Late", Status::Firing, 0);
    let received = Utc::now() - chrono::Duration::days(2);
    store
        .record_alerts(std::slice::from_ref(&late), received)
        .await
        .unwrap();
    let score = index_score(&mut conn, &prefix, &late.fingerprint)
        .await
        .expect("indexed");
    let an_hour_ago = (Utc::now() - chrono::Duration::hours(1)).timestamp_millis();
    assert!(score as i64 > an_hour_ago, "indexed at {score}");
}
