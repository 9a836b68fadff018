//! The incident metrics: open incidents by priority, time to acknowledge and to
//! resolve, alerts per incident (the compression ratio), SLA breaches, flapping
//! alerts and silent heartbeats. Part of [`crate::metrics::Metrics`], on the
//! registry passed in.
//!
//! Gauges that describe the shared state (open incidents, flapping alerts) are
//! set from the store by [`refresh`], so every instance on one Redis reports
//! the same, right numbers; the rest count the changes the instance committed.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::store::{SharedStore, StoreError};

pub struct IncidentMetrics {
    /// Open (new, in progress, reopened) incidents by priority, from the store.
    pub open: IntGaugeVec,
    /// Creation to first acknowledgement, by priority.
    pub time_to_acknowledge: HistogramVec,
    /// Creation to first resolution, by priority.
    pub time_to_resolve: HistogramVec,
    /// Alerts in an incident when it first resolves.
    pub alerts_per_incident: Histogram,
    /// SLA breaches by kind (response, resolution).
    pub sla_breaches: IntCounterVec,
    /// Alerts that started flapping.
    pub flapping_started: IntCounter,
    /// Flapping alerts in open incidents, from the store.
    pub flapping_alerts: IntGauge,
    /// 1 while a declared heartbeat is silent, by heartbeat name (from config).
    pub heartbeat_silent: IntGaugeVec,
}

/// Seconds, from a minute to a week.
const DURATION_BUCKETS: [f64; 12] = [
    60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 259200.0,
    604800.0,
];

impl IncidentMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let open = IntGaugeVec::new(
            Opts::new(
                "incidentd_incidents_open",
                "Open incidents (new, in progress, reopened), by priority.",
            ),
            &["priority"],
        )?;
        let time_to_acknowledge = HistogramVec::new(
            HistogramOpts::new(
                "incidentd_incident_time_to_acknowledge_seconds",
                "Time from an incident's creation to its first acknowledgement, by priority.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["priority"],
        )?;
        let time_to_resolve = HistogramVec::new(
            HistogramOpts::new(
                "incidentd_incident_time_to_resolve_seconds",
                "Time from an incident's creation to its first resolution, by priority.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["priority"],
        )?;
        let alerts_per_incident = Histogram::with_opts(
            HistogramOpts::new(
                "incidentd_incident_alerts",
                "Alerts correlated into an incident, when it first resolves (the compression ratio).",
            )
            .buckets(vec![
                1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
            ]),
        )?;
        let sla_breaches = IntCounterVec::new(
            Opts::new(
                "incidentd_sla_breaches_total",
                "SLA targets missed, by kind (response, resolution).",
            ),
            &["kind"],
        )?;
        let flapping_started = IntCounter::new(
            "incidentd_alerts_flapping_started_total",
            "Alerts that started flapping.",
        )?;
        let flapping_alerts = IntGauge::new(
            "incidentd_alerts_flapping",
            "Flapping alerts in open incidents.",
        )?;
        let heartbeat_silent = IntGaugeVec::new(
            Opts::new(
                "incidentd_heartbeat_silent",
                "1 while a declared heartbeat is overdue, by heartbeat.",
            ),
            &["heartbeat"],
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(time_to_acknowledge.clone()))?;
        registry.register(Box::new(time_to_resolve.clone()))?;
        registry.register(Box::new(alerts_per_incident.clone()))?;
        registry.register(Box::new(sla_breaches.clone()))?;
        registry.register(Box::new(flapping_started.clone()))?;
        registry.register(Box::new(flapping_alerts.clone()))?;
        registry.register(Box::new(heartbeat_silent.clone()))?;
        Ok(IncidentMetrics {
            open,
            time_to_acknowledge,
            time_to_resolve,
            alerts_per_incident,
            sla_breaches,
            flapping_started,
            flapping_alerts,
            heartbeat_silent,
        })
    }
}

/// Sets the gauges that describe the shared state from the store.
pub async fn refresh(store: &SharedStore, m: &IncidentMetrics) -> Result<(), StoreError> {
    // Counters kept by every incident write: reading them loads no incident,
    // however many the store holds.
    let g = store.open_gauges().await?;
    for (i, n) in g.by_priority.iter().enumerate() {
        m.open.with_label_values(&[&(i + 1).to_string()]).set(*n);
    }
    m.flapping_alerts.set(g.flapping_alerts);
    Ok(())
}
