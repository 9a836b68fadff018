//! The HTTP surface besides the webhook endpoints: health, readiness, metrics and
//! the REST API, plus the JSON error type every handler answers with.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::alert::Status;
use crate::daemon::Reloader;
use crate::incident::engine::{Engine, EngineError};
use crate::incident::{Incident, IncidentQuery, IncidentState};
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

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: SharedStore,
    pub metrics: Arc<Metrics>,
    pub engine: Arc<Engine>,
    pub reloader: Arc<Reloader>,
}

/// Health, readiness, metrics, the REST API and rule reload.
pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{fingerprint}", get(get_alert))
        .route("/api/v1/incidents", get(list_incidents))
        .route("/api/v1/incidents/{id}", get(get_incident))
        .route("/api/v1/incidents/{id}/ack", post(ack_incident))
        .route("/api/v1/incidents/{id}/resolve", post(resolve_incident))
        .route("/api/v1/deliveries", get(list_deliveries))
        .route("/api/v1/deliveries/{id}/retry", post(retry_delivery))
        .route("/-/reload", post(reload))
        .with_state(state)
}

/// `Some` as JSON, `None` as 404 with `what` as the message.
fn found<T>(value: Option<T>, what: impl FnOnce() -> String) -> Result<axum::Json<T>, ApiError> {
    value
        .map(axum::Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", what()))
}

/// The `limit` of a listing: the default when absent, never above the maximum.
fn list_limit(asked: Option<usize>) -> usize {
    asked.unwrap_or(DEFAULT_LIST_LIMIT).min(MAX_LIST_LIMIT)
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
    let limit = list_limit(params.limit);
    let alerts = s.store.list_alerts(&AlertQuery { status, limit }).await?;
    Ok(axum::Json(AlertList {
        count: alerts.len(),
        alerts,
    }))
}

async fn get_alert(
    State(s): State<ApiState>,
    Path(fingerprint): Path<String>,
) -> Result<axum::Json<AlertState>, ApiError> {
    found(s.store.get_alert(&fingerprint).await?, || {
        format!("no alert {fingerprint}")
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncidentParams {
    state: Option<String>,
    priority: Option<u8>,
    service: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct IncidentList {
    incidents: Vec<Incident>,
    count: usize,
}

async fn list_incidents(
    State(s): State<ApiState>,
    params: Result<Query<IncidentParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<IncidentList>, ApiError> {
    let Query(p) = params
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let state = match p.state.as_deref() {
        None => None,
        Some(raw) => Some(IncidentState::parse(raw).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("state {raw:?}: expected new, in_progress, resolved, closed or reopened"),
            )
        })?),
    };
    if p.priority.is_some_and(|p| !(1..=5).contains(&p)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "priority must be 1..5",
        ));
    }
    let query = IncidentQuery {
        state,
        priority: p.priority,
        service: p.service,
        limit: list_limit(p.limit),
    };
    let incidents = s.store.list_incidents(&query).await?;
    Ok(axum::Json(IncidentList {
        count: incidents.len(),
        incidents,
    }))
}

async fn get_incident(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Incident>, ApiError> {
    found(s.store.get_incident(&id).await?, || {
        format!("no incident {id}")
    })
}

/// Optional body of ack/resolve: who did it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    by: Option<String>,
}

fn actor(body: &[u8]) -> Result<String, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok("api".into());
    }
    let b: ActionBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()))?;
    let by = b.by.unwrap_or_else(|| "api".into());
    if by.len() > 128 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "by: at most 128 characters",
        ));
    }
    Ok(by)
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            EngineError::Invalid(_) => {
                ApiError::new(StatusCode::CONFLICT, "invalid_transition", e.to_string())
            }
            EngineError::Store(e) => e.into(),
        }
    }
}

async fn ack_incident(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Incident>, ApiError> {
    let by = actor(&body)?;
    Ok(axum::Json(
        s.engine.acknowledge(&id, &by, Utc::now()).await?,
    ))
}

async fn resolve_incident(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Incident>, ApiError> {
    let by = actor(&body)?;
    Ok(axum::Json(s.engine.resolve(&id, &by, Utc::now()).await?))
}

async fn reload(State(s): State<ApiState>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    match s.reloader.reload().await {
        Ok(n) => Ok(axum::Json(json!({"status": "reloaded", "rules": n}))),
        Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_rules", e)),
    }
}

/// Dead letters (deliveries that failed permanently) and the outbox's state.
async fn list_deliveries(
    State(s): State<ApiState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let dead = s.store.list_dead_letters().await?;
    let stats = s.store.outbox_stats().await?;
    Ok(axum::Json(json!({
        "dead_letters": dead,
        "outbox": {"depth": stats.depth, "oldest": stats.oldest},
    })))
}

/// Puts a dead letter's incident back in the outbox, after an operator fixed
/// the cause (a mapping, a permission).
async fn retry_delivery(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let Some(dead) = s.store.take_dead_letter(&id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no dead letter {id}"),
        ));
    };
    s.store.outbox_push(&dead.incident_id, 0, "retry").await?;
    Ok(axum::Json(
        json!({"status": "queued", "incident_id": dead.incident_id, "adapter": dead.adapter}),
    ))
}
