//! Sources: where alerts come in. Each source has the same folder shape:
//! `config.rs` (what the user writes, validated into settings), `mod.rs` (the
//! component) and its tests in `tests/`.
//!
//! - [`webhook`]: HTTP endpoints for Alertmanager, Grafana and generic JSON.
//! - [`kafka`]: topics of the same payloads, consumed as a consumer group.

pub mod kafka;
pub mod webhook;
