//! The HTTP surface besides the webhook endpoints: health, readiness, metrics and
//! the REST API, plus the JSON error type every handler answers with.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::alert::Status;
use crate::metrics::Metrics;
use crate::store::{AlertQuery, AlertState, SharedStore, StoreError};

/// Most alerts one listing returns.
pub const MAX_LIST_LIMIT: usize = 10_000;
const DEFAULT_LIST_LIMIT: usize = 1_000;

/// An error answer: `{"error": "...", "reason": "...", "source": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, low-cardinality: also the metric label.
    pub reason: &'static str,
    pub message: String,
    pub source: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            reason,
            message: message.into(),
            source: None,
        }
    }

    pub fn with_source(mut self, source: &'static str) -> Self {
        self.source = Some(source);
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let reason = match e {
            StoreError::Unavailable(_) => "store_unavailable",
            StoreError::Corrupt(_) => "store_corrupt",
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message, "reason": self.reason});
        if let Some(source) = self.source {
            body["source"] = json!(source);
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        match self.status {
            StatusCode::SERVICE_UNAVAILABLE => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            }
            StatusCode::UNAUTHORIZED => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            _ => {}
        }
        resp
    }
}

#[derive(Clone)]
struct ApiState {
    store: SharedStore,
    metrics: Arc<Metrics>,
}

/// Health, readiness, metrics and the read API.
pub fn routes(store: SharedStore, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/alerts", get(list_alerts))
        .with_state(ApiState { store, metrics })
}

/// Answer for unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(State(s): State<ApiState>) -> Response {
    match s.store.ping().await {
        Ok(()) => {
            s.metrics.store_up.set(1);
            axum::Json(json!({"status": "ready", "store": s.store.kind()})).into_response()
        }
        Err(e) => {
            s.metrics.store_up.set(0);
            ApiError::from(e).into_response()
        }
    }
}

async fn metrics_text(State(s): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct AlertList {
    alerts: Vec<AlertState>,
    count: usize,
}

async fn list_alerts(
    State(s): State<ApiState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<AlertList>, ApiError> {
    let Query(params) = params
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let status = match params.status.as_deref() {
        None => None,
        Some(raw) => Some(Status::parse(raw).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("status {raw:?}: expected firing or resolved"),
            )
        })?),
    };
    let limit = params
        .limit
        .unwrap_or(DEFAULT_LIST_LIMIT)
        .min(MAX_LIST_LIMIT);
    let alerts = s.store.list_alerts(&AlertQuery { status, limit }).await?;
    Ok(axum::Json(AlertList {
        count: alerts.len(),
        alerts,
    }))
}
