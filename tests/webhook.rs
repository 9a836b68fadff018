//! The webhook source end to end: real HTTP into a daemon on a real Redis (or
//! the memory store), checked through the REST API and metrics.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const AM: &str = "/api/v1/alerts/alertmanager";

async fn redis_daemon(test: &str) -> incidentd::daemon::Daemon {
    start_daemon(&redis_config(&redis_url(), &unique_prefix(test))).await
}

/// (fingerprint, status) of every alert in one Alertmanager body.
fn alerts_of(body: &str) -> Vec<(String, String)> {
    let v: Value = serde_json::from_str(body).unwrap();
    v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["fingerprint"].as_str().unwrap().to_string(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn each_fixture_payload_posted_twice_is_stored_once_with_count_two() {
    for (i, body) in fixture_lines("alertmanager/am-0.25-webhook-v4.jsonl")
        .iter()
        .enumerate()
    {
        // A fresh daemon and prefix per payload: as an Alertmanager HA pair delivers it.
        let d = redis_daemon(&format!("ha{i}")).await;
        for _ in 0..2 {
            let r = post_json(&d, AM, body).await;
            assert_eq!(r.status(), 200, "payload {i}: {}", r.text().await.unwrap());
        }
        let stored = alerts_by_fp(&d).await;
        let sent = alerts_of(body);
        assert_eq!(stored.len(), sent.len(), "payload {i}");
        for (fp, status) in sent {
            let a = &stored[&fp];
            assert_eq!(a["count"], 2, "payload {i} alert {fp}");
            assert_eq!(a["status"], status.as_str());
        }
        d.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn whole_capture_posted_twice_keeps_one_state_per_alert_with_last_status() {
    let d = redis_daemon("capture").await;
    let lines = fixture_lines("alertmanager/am-0.25-webhook-v4.jsonl");
    let mut last_status = std::collections::BTreeMap::new();
    for body in &lines {
        for _ in 0..2 {
            assert_eq!(post_json(&d, AM, body).await.status(), 200);
        }
        for (fp, status) in alerts_of(body) {
            last_status.insert(fp, status);
        }
    }
    let stored = alerts_by_fp(&d).await;
    assert_eq!(stored.len(), last_status.len());
    for (fp, status) in &last_status {
        assert_eq!(stored[fp]["status"], status.as_str(), "{fp}");
    }
    // The three TargetDown alerts went firing → resolved: one transition each, and the
    // resolved notification arrived twice.
    let td = &stored["ea5d07fdfa2f9b74"];
    assert_eq!(
        (td["count"].as_u64(), td["transitions"].as_u64()),
        (Some(2), Some(1))
    );
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_daemons_on_one_redis_receiving_the_same_payload_keep_one_state() {
    let prefix = unique_prefix("pair");
    let cfg = redis_config(&redis_url(), &prefix);
    let (a, b) = (start_daemon(&cfg).await, start_daemon(&cfg).await);
    let body = &fixture_lines("alertmanager/am-0.25-webhook-v4.jsonl")[2];
    for _ in 0..5 {
        let (ra, rb) = tokio::join!(post_json(&a, AM, body), post_json(&b, AM, body));
        assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (200, 200));
    }
    let (sa, sb) = (alerts_by_fp(&a).await, alerts_by_fp(&b).await);
    assert_eq!(sa.len(), 3);
    for (fp, st) in &sa {
        assert_eq!(st["count"], 10, "{fp}: both instances' receptions add up");
        assert_eq!(sb[fp]["count"], 10);
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn grafana_and_generic_payloads_are_normalized() {
    let d = start_daemon("store:\n  url: memory\n").await;
    let grafana = std::fs::read_to_string(fixture("grafana/webhook-firing.json")).unwrap();
    let r = post_json(&d, "/api/v1/alerts/grafana", &grafana).await;
    assert_eq!(r.status(), 200);
    let summary: Value = r.json().await.unwrap();
    assert_eq!(summary["accepted"], 2);
    let generic = std::fs::read_to_string(fixture("generic/batch.json")).unwrap();
    assert_eq!(
        post_json(&d, "/api/v1/alerts", &generic).await.status(),
        200
    );
    let single = r#"{"labels": {"alertname": "Single"}}"#;
    assert_eq!(post_json(&d, "/api/v1/alerts", single).await.status(), 200);

    let stored = alerts_by_fp(&d).await;
    let g = &stored["c6eadffa33fcdf37"];
    assert_eq!(g["source"], "grafana");
    assert_eq!(
        g["annotations"]["dashboard_url"],
        "https://grafana.example.com/d/abc123"
    );
    assert_eq!(stored["12e5e8c1a3b9d8f0"]["status"], "resolved");
    let disk = stored
        .values()
        .find(|a| a["labels"]["alertname"] == "DiskFull")
        .unwrap();
    assert_eq!(disk["severity"], "critical");
    assert_eq!(disk["source"], "nagios");
    assert_eq!(stored["backup-nightly-1"]["status"], "resolved");
    assert_eq!(stored.len(), 5);
    d.shutdown().await.unwrap();
}

/// Posts `body` with `content_type` and returns (status, JSON body).
async fn post_raw(
    d: &incidentd::daemon::Daemon,
    path: &str,
    content_type: Option<&str>,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = client().post(format!("{}{}", base(d), path)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// (what, content type, bearer token, body, expected status, expected reason)
type BadCase<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Vec<u8>,
    u16,
    &'a str,
);

#[tokio::test]
async fn bad_requests_get_json_errors_are_counted_and_change_nothing() {
    let cfg = format!(
        "{}http:\n  max_body_bytes: 2048\nsources:\n  webhook:\n    alertmanager:\n      bearer_token: right-token\n",
        redis_config(&redis_url(), &unique_prefix("bad"))
    );
    let d = start_daemon(&cfg).await;
    let good = fixture_lines("alertmanager/am-0.25-webhook-v4.jsonl")[0].clone();
    let json = Some("application/json");
    let ok = Some("right-token");
    assert_eq!(
        post_raw(&d, AM, json, ok, good.clone().into_bytes())
            .await
            .0,
        200
    );
    let before = alerts_by_fp(&d).await;

    let mut bad_utf8 = good.clone().into_bytes();
    let pos = good.find("HighScrapeDuration").unwrap();
    bad_utf8[pos] = 0xff;
    let v5 = good.replace(r#""version": "4""#, r#""version": "5""#);
    let no_labels = r#"{"version":"4","alerts":[{"status":"firing"}]}"#;
    let bad_status = good.replace(
        r#""status": "firing", "labels""#,
        r#""status": "burning", "labels""#,
    );
    let cases: Vec<BadCase> = vec![
        (
            "malformed",
            json,
            ok,
            b"{\"version\": \"4\", \"alerts\": [".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "missing field",
            json,
            ok,
            no_labels.as_bytes().to_vec(),
            400,
            "missing_field",
        ),
        (
            "bad status",
            json,
            ok,
            bad_status.into_bytes(),
            400,
            "invalid_field",
        ),
        ("bad utf-8", json, ok, bad_utf8, 400, "invalid_utf8"),
        (
            "version 5",
            json,
            ok,
            v5.into_bytes(),
            400,
            "unsupported_version",
        ),
        (
            "oversized",
            json,
            ok,
            vec![b' '; 4096],
            413,
            "body_too_large",
        ),
        (
            "form post",
            Some("application/x-www-form-urlencoded"),
            ok,
            good.clone().into_bytes(),
            415,
            "unsupported_media_type",
        ),
        (
            "no content type",
            None,
            ok,
            good.clone().into_bytes(),
            415,
            "unsupported_media_type",
        ),
        (
            "wrong token",
            json,
            Some("wrong-token"),
            good.clone().into_bytes(),
            401,
            "unauthorized",
        ),
        (
            "no token",
            json,
            None,
            good.clone().into_bytes(),
            401,
            "unauthorized",
        ),
    ];
    for (what, ct, token, body, status, reason) in cases {
        let (got, err) = post_raw(&d, AM, ct, token, body).await;
        assert_eq!(got, status, "{what}: {err}");
        assert_eq!(err["reason"], reason, "{what}: {err}");
        assert!(
            err["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}"
        );
        assert_eq!(err["source"], "alertmanager", "{what}");
    }
    assert_eq!(
        alerts_by_fp(&d).await,
        before,
        "refused requests changed nothing"
    );

    let metrics = get_text(format!("{}/metrics", base(&d))).await;
    for reason in [
        "malformed_json",
        "missing_field",
        "invalid_utf8",
        "body_too_large",
        "unsupported_media_type",
        "unauthorized",
    ] {
        assert!(
            metrics.contains(&format!(
                r#"incidentd_payloads_rejected_total{{reason="{reason}",source="alertmanager"}}"#
            )),
            "{reason} not counted:\n{metrics}"
        );
    }
    assert!(metrics.contains(r#"incidentd_alerts_received_total{source="alertmanager"} 1"#));
    assert!(metrics.contains("incidentd_store_operation_duration_seconds_bucket"));
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_refused() {
    let d = start_daemon("http:\n  max_body_bytes: 1024\n").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b' '; 512])).collect();
    let r = client()
        .post(format!("{}{}", base(&d), AM))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn redis_outage_answers_503_never_2xx_and_recovers_without_restart() {
    let mut redis = RedisServer::start();
    let d = start_daemon(&redis_config(&redis.url(), "outage")).await;
    let body = fixture_lines("alertmanager/am-0.25-webhook-v4.jsonl")[2].clone();
    let ready = |d: &incidentd::daemon::Daemon| {
        let url = format!("{}/readyz", base(d));
        async move { get_status(url).await.as_u16() }
    };
    assert_eq!(ready(&d).await, 200);
    assert_eq!(post_json(&d, AM, &body).await.status(), 200);

    redis.stop();
    assert_eq!(ready(&d).await, 503);
    let r = post_json(&d, AM, &body).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["reason"], "store_unavailable");

    redis.restart();
    let mut status = 0;
    for _ in 0..50 {
        status = post_json(&d, AM, &body).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "daemon did not recover after Redis came back");
    assert_eq!(ready(&d).await, 200);
    // The restarted Redis kept nothing (no persistence): the replayed payload is state again.
    assert_eq!(alerts_by_fp(&d).await.len(), 3);
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_listing_and_unknown_paths() {
    let d = start_daemon("").await;
    let get = |p: &str| client().get(format!("{}{}", base(&d), p)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    assert_eq!(
        get("/api/v1/alerts?status=burning").await.unwrap().status(),
        400
    );
    let nf = get("/nope").await.unwrap();
    assert_eq!(nf.status(), 404);
    assert_eq!(nf.json::<Value>().await.unwrap()["reason"], "not_found");
    d.shutdown().await.unwrap();
}
