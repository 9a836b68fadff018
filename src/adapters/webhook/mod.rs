//! The generic webhook adapter: a JSON POST per incident change.
//!
//! Body: `{"event": "created" | "updated" | "state", "incident": {...},
//! "timeline": [new entries], "state": "open" | "acknowledged" | "resolved" |
//! "closed"}`. Headers: `Idempotency-Key: <incident id>:<version>:<event>` so a
//! receiver can drop a redelivery, and, with a secret, `X-Incidentd-Signature:
//! sha256=<hex HMAC-SHA256 of the body>`.
//!
//! A webhook has no ticket to find or read back: the incident id is its reference.

mod config;

pub use config::Config;

use hmac::{KeyInit, Mac};
use serde_json::json;

use crate::adapters::delivery::no_body_errors;
use crate::adapters::{Adapter, DeliveryError, ExternalRef, Target, TicketState};
use crate::incident::{Incident, TimelineEntry};
use crate::secret::Secret;

pub struct Webhook {
    url: reqwest::Url,
    secret: Option<Secret>,
    headers: reqwest::header::HeaderMap,
}

/// `sha256=<hex>` HMAC of `body` under `secret`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhook {
    async fn post(
        &self,
        target: &Target,
        inc: &Incident,
        event: &str,
        body: serde_json::Value,
    ) -> Result<(), DeliveryError> {
        let bytes =
            serde_json::to_vec(&body).map_err(|e| DeliveryError::permanent(e.to_string()))?;
        let sig = self.secret.as_ref().map(|s| signature(s, &bytes));
        let key = format!("{}:{}:{event}", inc.id, inc.version);
        target
            .send(
                event,
                |c| {
                    let mut r = c
                        .post(self.url.clone())
                        .headers(self.headers.clone())
                        .header("content-type", "application/json")
                        .header("idempotency-key", &key)
                        .body(bytes.clone());
                    if let Some(sig) = &sig {
                        r = r.header("x-incidentd-signature", sig);
                    }
                    r
                },
                no_body_errors,
            )
            .await
            .map(|_| ())
    }
}

#[async_trait::async_trait]
impl Adapter for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn find(
        &self,
        _target: &Target,
        _inc: &Incident,
    ) -> Result<Option<ExternalRef>, DeliveryError> {
        Ok(None)
    }

    async fn create(&self, target: &Target, inc: &Incident) -> Result<ExternalRef, DeliveryError> {
        self.post(
            target,
            inc,
            "created",
            json!({"event": "created", "incident": inc}),
        )
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
        let body = json!({"event": "updated", "incident": inc, "timeline": new_entries});
        self.post(target, inc, "updated", body).await
    }

    async fn transition(
        &self,
        target: &Target,
        inc: &Incident,
        _ext: &ExternalRef,
        to: TicketState,
    ) -> Result<(), DeliveryError> {
        let body = json!({"event": "state", "state": to, "incident": inc});
        self.post(target, inc, "state", body).await
    }
}
