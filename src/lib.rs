//! incidentd turns monitoring alerts into ITIL incidents.
//!
//! The pipeline, and the module each stage lives in:
//!
//! ```text
//! sources ──► formats ──► ingest ──► store (dedup)
//! ```
//!
//! - [`cli`]: the command line (`run`, `check`); `main.rs` only calls it.
//! - [`config`]: the config file, interpolated, parsed and validated before anything starts.
//! - [`daemon`]: wires the components together, serves HTTP, shuts down gracefully.
//! - [`sources`]: where alerts come in (the webhook endpoints).
//! - [`formats`]: payload shapes (Alertmanager, Grafana, generic JSON) decoded into [`alert::Alert`].
//! - [`alert`]: the canonical alert and its fingerprint.
//! - [`ingest`]: the path every decoded batch takes into the store.
//! - [`rules`]: the rules engine: which alerts open incidents, with which ITIL fields.
//! - [`store`]: the state store trait, its memory and Redis implementations, dedup rules.
//! - [`api`]: health, readiness, metrics, REST API, and the JSON error shape.
//! - [`metrics`]: the Prometheus metrics, on a registry passed in.
//! - [`secret`]: secrets that never reach a log line.

pub mod alert;
pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod formats;
pub mod incident;
pub mod ingest;
pub mod metrics;
pub mod rules;
pub mod replay;
pub mod ruletest;
pub mod secret;
pub mod simulate;
pub mod sources;
pub mod store;
