//! incidentd turns monitoring alerts into ITIL incidents.
//!
//! The pipeline, and the module each stage lives in:
//!
//! ```text
//! sources ──► formats ──► ingest ──► rules ──► store (dedup) ──► incident (correlate, lifecycle)
//! ```
//!
//! - [`cli`]: the command line (`run`, `check`, `test`, `replay`); `main.rs` only calls it.
//! - [`config`]: the config file, interpolated, parsed and validated before anything starts.
//! - [`daemon`]: wires the components together, serves HTTP, runs timers, reloads rules,
//!   shuts down gracefully.
//! - [`sources`]: where alerts come in (the webhook endpoints, Kafka topics).
//! - [`formats`]: payload shapes (Alertmanager, Grafana, generic JSON) decoded into [`alert::Alert`].
//! - [`alert`]: the canonical alert and its fingerprint.
//! - [`ingest`]: the path every decoded batch takes: rules, store, incidents.
//! - [`heartbeat`]: expected heartbeats (a Watchdog alert, activity on a source);
//!   a silent one raises a "monitoring pipeline silent" incident.
//! - [`rules`]: the rules engine: which alerts open incidents, with which ITIL fields.
//! - [`incident`]: the incident record, its pure lifecycle, and the engine that
//!   correlates alerts into incidents over the store.
//! - [`store`]: the state store trait, its memory and Redis implementations, dedup rules.
//! - [`simulate`]: the pipeline on a driven clock, for [`ruletest`] (`incidentd test`)
//!   and [`replay`] (`incidentd replay`).
//! - [`topology`]: the services file (a small CMDB) and topology correlation:
//!   dependents' alerts join their failing dependency's incident.
//! - [`adapters`]: ITSM adapters (one folder each) and the shared delivery policy.
//! - [`outbox`]: the durable outbox and the worker that delivers incident changes.
//! - [`api`]: health, readiness, metrics, REST API, and the JSON error shape.
//! - [`metrics`]: the Prometheus metrics, on a registry passed in.
//! - [`secret`]: secrets that never reach a log line.

pub mod adapters;
pub mod alert;
pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod formats;
pub mod heartbeat;
pub mod incident;
pub mod ingest;
pub mod metrics;
pub mod outbox;
pub mod replay;
pub mod rules;
pub mod ruletest;
pub mod secret;
pub mod simulate;
pub mod sources;
pub mod store;
pub mod topology;
