//! The delivery policy every adapter shares (Vector's `RetryLogic`, in short):
//! a timeout per request; retries on connection errors, 408, 429 and 5xx with
//! full-jitter exponential backoff, honouring `Retry-After`, up to a maximum
//! elapsed time; a 2xx whose body reports an error counts as an error; other 4xx
//! are permanent (the outbox dead-letters them). Plus a token-bucket rate limit
//! and a concurrency limit per adapter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{Mutex, Semaphore};

use crate::config::Problems;
use crate::metrics::Metrics;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// One HTTP request, connect to last byte.
    pub timeout_ms: u64,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// How long one step keeps retrying before giving up for now; the change
    /// stays in the outbox and is tried again later, so nothing is lost.
    pub max_elapsed_ms: u64,
    /// Requests per second to this adapter (token bucket), and the bucket size.
    pub rate_limit_per_s: f64,
    pub burst: u32,
    /// Requests in flight to this adapter at once.
    pub concurrency: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout_ms: 10_000,
            initial_backoff_ms: 200,
            max_backoff_ms: 30_000,
            max_elapsed_ms: 60_000,
            rate_limit_per_s: 10.0,
            burst: 20,
            concurrency: 4,
        }
    }
}

impl DeliveryConfig {
    pub fn validate(&self, key: &str, p: &mut Problems<'_>) {
        for (name, v) in [
            ("timeout_ms", self.timeout_ms),
            ("initial_backoff_ms", self.initial_backoff_ms),
            ("max_backoff_ms", self.max_backoff_ms),
            ("burst", u64::from(self.burst)),
            ("concurrency", self.concurrency as u64),
        ] {
            if v == 0 {
                p.at(&format!("{key}.{name}"), "must be greater than 0");
            }
        }
        if !(self.rate_limit_per_s > 0.0 && self.rate_limit_per_s.is_finite()) {
            p.at(
                &format!("{key}.rate_limit_per_s"),
                "must be a positive number",
            );
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            p.at(
                &format!("{key}.max_backoff_ms"),
                "must be at least initial_backoff_ms",
            );
        }
    }
}

/// Why a delivery step failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth trying again later (connection, timeout, 408, 429, 5xx, error body).
    #[error("{reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Trying again will not help (bad request, auth, not found...).
    #[error("{reason}")]
    Permanent { reason: String, status: Option<u16> },
}

impl DeliveryError {
    pub fn permanent(reason: impl Into<String>) -> Self {
        DeliveryError::Permanent {
            reason: reason.into(),
            status: None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            DeliveryError::Permanent { status, .. } => *status,
            DeliveryError::Transient { .. } => None,
        }
    }
}

/// A successful response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    /// The body as JSON (`null` when empty).
    pub fn json(&self) -> Result<serde_json::Value, DeliveryError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| DeliveryError::Transient {
            reason: format!("response is not JSON ({e})"),
            retry_after: None,
        })
    }
}

/// Where one adapter sends: an HTTP client with the adapter's policy, rate
/// limit and concurrency limit.
pub struct Target {
    pub name: String,
    client: reqwest::Client,
    cfg: DeliveryConfig,
    bucket: Mutex<Bucket>,
    permits: Semaphore,
    metrics: Arc<Metrics>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Makes `ring` the process's TLS crypto provider (reqwest is built without a
/// default one, to keep the C toolchain needs small). Safe to call repeatedly.
pub fn install_tls_provider() {
    // Err means a provider is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Target {
    pub fn new(name: &str, cfg: &DeliveryConfig, metrics: Arc<Metrics>) -> Result<Self, String> {
        install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .user_agent(concat!("incidentd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client for {name}: {e}"))?;
        Ok(Target {
            name: name.to_string(),
            client,
            cfg: cfg.clone(),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(cfg.burst),
                at: Instant::now(),
            }),
            permits: Semaphore::new(cfg.concurrency.max(1)),
            metrics,
        })
    }

    /// The daemon's metrics, for adapters that count more than the shared policy does.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Waits for a token of the adapter's rate limit.
    async fn take_token(&self) {
        loop {
            let wait = {
                let mut b = self.bucket.lock().await;
                let now = Instant::now();
                let refill = now.duration_since(b.at).as_secs_f64() * self.cfg.rate_limit_per_s;
                b.tokens = (b.tokens + refill).min(f64::from(self.cfg.burst));
                b.at = now;
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - b.tokens) / self.cfg.rate_limit_per_s)
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Full-jitter backoff for retry number `attempt` (0-based).
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .cfg
            .initial_backoff_ms
            .saturating_mul(1u64 << attempt.min(20))
            .min(self.cfg.max_backoff_ms);
        Duration::from_millis(fastrand::u64(0..=cap))
    }

    /// Sends the request `build` makes (called again for each attempt) under the
    /// policy. `error_in_body` looks at a 2xx body and names the error the vendor
    /// reported inside it, if any.
    pub async fn send(
        &self,
        what: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        error_in_body: impl Fn(u16, &[u8]) -> Option<String>,
    ) -> Result<Reply, DeliveryError> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let result = self.attempt(&build, &error_in_body).await;
            let err = match result {
                Ok(reply) => return Ok(reply),
                Err(e @ DeliveryError::Permanent { .. }) => return Err(e),
                Err(e) => e,
            };
            let DeliveryError::Transient {
                reason,
                retry_after,
            } = &err
            else {
                return Err(err);
            };
            let delay = retry_after.unwrap_or_default().max(self.backoff(attempt));
            if started.elapsed() + delay > Duration::from_millis(self.cfg.max_elapsed_ms) {
                tracing::warn!(adapter = %self.name, what, error = %reason, "delivery step failed; the change stays queued");
                return Err(err);
            }
            self.metrics
                .delivery_retries
                .with_label_values(&[&self.name])
                .inc();
            tracing::debug!(adapter = %self.name, what, error = %reason, delay_ms = delay.as_millis() as u64, "retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        build: &impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        error_in_body: &impl Fn(u16, &[u8]) -> Option<String>,
    ) -> Result<Reply, DeliveryError> {
        self.take_token().await;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| DeliveryError::permanent("adapter shut down"))?;
        let started = Instant::now();
        let sent = build(&self.client).send().await;
        self.metrics
            .delivery_duration
            .with_label_values(&[&self.name])
            .observe(started.elapsed().as_secs_f64());
        let resp = sent.map_err(|e| DeliveryError::Transient {
            // Without the URL: it may carry a key (PagerDuty routing keys do not,
            // but webhook URLs often do).
            reason: format!("request failed: {}", e.without_url()),
            retry_after: None,
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| DeliveryError::Transient {
            reason: format!("reading response: {}", e.without_url()),
            retry_after: None,
        })?;
        classify(status, &headers, &body, error_in_body).map(|()| Reply {
            status,
            headers,
            body,
        })
    }
}

/// Sorts a response into success, transient or permanent.
pub fn classify(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
    error_in_body: impl Fn(u16, &[u8]) -> Option<String>,
) -> Result<(), DeliveryError> {
    let snippet = || {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).replace(['\n', '\r'], " ");
        if text.trim().is_empty() {
            String::new()
        } else {
            format!(": {text}")
        }
    };
    match status {
        200..=299 => match error_in_body(status, body) {
            Some(e) => Err(DeliveryError::Transient {
                reason: format!("HTTP {status} with an error in the body: {e}"),
                retry_after: None,
            }),
            None => Ok(()),
        },
        408 | 429 | 500..=599 => Err(DeliveryError::Transient {
            reason: format!("HTTP {status}{}", snippet()),
            retry_after: retry_after(headers),
        }),
        _ => Err(DeliveryError::Permanent {
            reason: format!("HTTP {status}{}", snippet()),
            status: Some(status),
        }),
    }
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

/// For vendors whose 2xx bodies never carry errors.
pub fn no_body_errors(_status: u16, _body: &[u8]) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> reqwest::header::HeaderMap {
        let mut h = reqwest::header::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn statuses_are_sorted_into_retry_classes() {
        let none = headers(&[]);
        assert!(classify(201, &none, b"{}", no_body_errors).is_ok());
        for s in [408, 429, 500, 502, 503] {
            assert!(
                matches!(
                    classify(s, &none, b"", no_body_errors),
                    Err(DeliveryError::Transient { .. })
                ),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 422] {
            assert_eq!(
                classify(s, &none, b"", no_body_errors)
                    .unwrap_err()
                    .status(),
                Some(s)
            );
        }
    }

    #[test]
    fn retry_after_seconds_are_honoured() {
        let h = headers(&[("retry-after", "7")]);
        match classify(429, &h, b"", no_body_errors) {
            Err(DeliveryError::Transient { retry_after, .. }) => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn success_with_an_error_body_is_an_error() {
        let none = headers(&[]);
        let check = |_s: u16, b: &[u8]| (!b.starts_with(b"{")).then(|| "not JSON".to_string());
        assert!(classify(200, &none, b"<html>hibernating</html>", check).is_err());
        assert!(classify(200, &none, b"{}", check).is_ok());
    }
}
