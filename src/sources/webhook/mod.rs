//! The webhook source: `POST /api/v1/alerts/alertmanager`, `POST
//! /api/v1/alerts/grafana` and `POST /api/v1/alerts` (generic JSON).
//!
//! A request is answered 2xx only after its alerts are in the state store; a
//! store outage answers 503 so that the sender (Alertmanager retries any non-2xx)
//! keeps the alerts and sends them again. Checks run in this order: auth (401),
//! content type (415), size (413), payload (400).

mod config;

pub use config::{EndpointConfig, EndpointSettings, WebhookConfig, WebhookSettings};

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;

use crate::api::ApiError;
use crate::formats::Format;
use crate::ingest::Ingestor;
use crate::metrics::Metrics;

/// Everything one endpoint's handler needs.
struct Endpoint {
    format: Format,
    settings: EndpointSettings,
    max_body_bytes: usize,
    ingestor: Arc<Ingestor>,
    metrics: Arc<Metrics>,
}

/// The path each format is received on.
pub fn path(format: Format) -> &'static str {
    match format {
        Format::Alertmanager => "/api/v1/alerts/alertmanager",
        Format::Grafana => "/api/v1/alerts/grafana",
        Format::Generic => "/api/v1/alerts",
    }
}

/// Routes for the enabled endpoints.
pub fn routes(
    settings: &WebhookSettings,
    max_body_bytes: usize,
    ingestor: Arc<Ingestor>,
    metrics: Arc<Metrics>,
) -> Router {
    let mut router = Router::new();
    for format in Format::ALL {
        let Some(ep) = settings.endpoints.get(&format) else {
            continue;
        };
        let endpoint = Arc::new(Endpoint {
            format,
            settings: ep.clone(),
            max_body_bytes,
            ingestor: ingestor.clone(),
            metrics: metrics.clone(),
        });
        router = router.route(path(format), post(receive).with_state(endpoint));
    }
    router
}

async fn receive(State(ep): State<Arc<Endpoint>>, headers: HeaderMap, body: Body) -> Response {
    match handle(&ep, &headers, body).await {
        Ok(summary) => (StatusCode::OK, axum::Json(summary)).into_response(),
        Err(err) => {
            let source = ep.format.as_str();
            ep.metrics
                .rejected
                .with_label_values(&[source, err.reason])
                .inc();
            tracing::warn!(source, reason = err.reason, status = err.status.as_u16(), error = %err.message, "webhook request refused");
            err.with_source(source).into_response()
        }
    }
}

async fn handle(
    ep: &Endpoint,
    headers: &HeaderMap,
    body: Body,
) -> Result<crate::ingest::IngestSummary, ApiError> {
    if let Some(token) = &ep.settings.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if !given.is_some_and(|g| token.matches(g)) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token",
            ));
        }
    }
    check_content_type(headers)?;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "request body exceeds the limit of {} bytes",
                ep.max_body_bytes
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > ep.max_body_bytes as u64) {
        return Err(too_large());
    }
    // The limit also holds for chunked bodies that declare no length.
    let bytes = axum::body::to_bytes(body, ep.max_body_bytes)
        .await
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                too_large()
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "body_read_error",
                    format!("cannot read body: {e}"),
                )
            }
        })?;
    let received_at = Utc::now();
    let alerts = ep
        .format
        .decode(&bytes, received_at)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.reason(), e.to_string()))?;
    if let Some(heartbeats) = ep.ingestor.heartbeats() {
        heartbeats
            .observe_activity("webhook", ep.format.as_str(), received_at)
            .await;
    }
    ep.ingestor
        .ingest(ep.format.as_str(), alerts, received_at)
        .await
        .map_err(ApiError::from)
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            if ct.is_empty() {
                "missing Content-Type, expected application/json".to_string()
            } else {
                format!("Content-Type {ct:?} is not supported, expected application/json")
            },
        ))
    }
}
