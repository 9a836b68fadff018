//! The durable outbox and its delivery worker.
//!
//! Every meaningful incident change is appended to the outbox in the same
//! atomic step as the change itself (Redis: a stream, written by the commit
//! script; memory: a queue under the same lock). Workers, one per daemon
//! instance, read it as a consumer group, so instances share the work, and
//! claim the entries a dead instance left pending.
//!
//! Delivery is a state sync, not an event replay: for each adapter on the
//! incident's route the worker brings the ticket in line with the incident's
//! *latest* state ([`worker`]). Order per incident holds by construction (an
//! older entry can only sync to a newer state, never back), a redelivered entry
//! is a no-op, and a per-(incident, adapter) lease keeps two instances from
//! working one ticket at once.

pub mod worker;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::adapters::{ExternalRef, TicketState};

/// One entry: incident `incident_id` changed to `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The store's id for the entry (a stream id with Redis).
    pub entry_id: String,
    pub incident_id: String,
    pub version: u64,
    /// `created`, `updated`, `acknowledged`, `resolved`, `reopened`, `closed`, `retry`.
    pub event: String,
    pub enqueued_at: DateTime<Utc>,
}

/// What has been delivered of one incident to one adapter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    pub external: Option<ExternalRef>,
    /// The ticket state last set (or read back).
    pub remote: Option<TicketState>,
    /// The incident version last brought in line.
    pub version: u64,
    /// Timeline entries delivered, counted from the incident's first entry.
    pub timeline_synced: u64,
    /// Digest of the ticket fields last sent, to skip updates that change nothing.
    pub fields_digest: String,
}

/// A delivery that failed permanently, kept for an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    pub incident_id: String,
    pub adapter: String,
    pub reason: String,
    pub status: Option<u16>,
    pub failed_at: DateTime<Utc>,
}

/// Outbox depth and its oldest entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboxStats {
    pub depth: u64,
    pub oldest: Option<DateTime<Utc>>,
}
