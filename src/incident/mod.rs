//! Incidents: the record a rule raises from correlated alerts, and its
//! lifecycle.
//!
//! - this module: the [`Incident`] record as stored and as the REST API shows it.
//! - [`lifecycle`]: pure functions from (incident, event, time) to the next
//!   incident; no I/O, so the daemon, `incidentd test` and `incidentd replay`
//!   behave the same.
//! - [`engine`]: runs rules and lifecycle over the state store, retrying on
//!   concurrent updates so two instances never open two incidents for one key.
//! - [`flapping`]: flap detection; a flapping alert neither resolves nor
//!   reopens its incident until it settles.
//! - [`sla`]: response and resolution deadlines per priority, breaches and
//!   their escalation.
//! - [`metrics`]: the incident metrics (open by priority, time to acknowledge
//!   and resolve, alerts per incident, SLA breaches, flapping, heartbeats).
//! - [`stored_map`]: an alert's labels and annotations, left as the store
//!   document's text until read; [`rfc3339`]: the document's timestamps.

pub mod engine;
pub mod flapping;
pub mod lifecycle;
pub mod major;
pub mod metrics;
pub mod rfc3339;
pub mod sla;
pub mod stored_map;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::Status;
use crate::rules::Level;
pub use stored_map::StoredMap;

/// Timeline entries kept per incident; older ones are dropped (and counted) so a
/// long storm cannot grow one record without bound.
pub const MAX_TIMELINE: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    New,
    InProgress,
    Resolved,
    Closed,
    Reopened,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::New => "new",
            IncidentState::InProgress => "in_progress",
            IncidentState::Resolved => "resolved",
            IncidentState::Closed => "closed",
            IncidentState::Reopened => "reopened",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            IncidentState::New,
            IncidentState::InProgress,
            IncidentState::Resolved,
            IncidentState::Closed,
            IncidentState::Reopened,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// New, in progress or reopened: alerts still join it.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            IncidentState::New | IncidentState::InProgress | IncidentState::Reopened
        )
    }
}

/// One alert of an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentAlert {
    pub fingerprint: String,
    pub labels: StoredMap,
    #[serde(default)]
    pub annotations: StoredMap,
    pub status: Status,
    #[serde(with = "rfc3339")]
    pub joined_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub status_changed_at: DateTime<Utc>,
    /// Flapping: it changed status too often lately (see [`flapping`]).
    #[serde(default)]
    pub flapping: bool,
    /// Its recent status changes, newest last, for flap detection.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "rfc3339::vec")]
    pub changes: Vec<DateTime<Utc>>,
    /// What the alert is to the incident when topology or inhibition put it
    /// there (`root_cause`, `dependent`, `symptom`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::topology::AlertRole>,
    /// Its severity, when the alert carried one its `severity` label does not
    /// give (a generic alert's `severity` field); absent otherwise, as the
    /// label says it (see [`IncidentAlert::as_alert`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

impl IncidentAlert {
    /// `alert` as it joins an incident at `now`, in `role` (topology,
    /// inhibition) or none.
    pub fn new(
        alert: &crate::alert::Alert,
        now: DateTime<Utc>,
        role: Option<crate::topology::AlertRole>,
    ) -> Self {
        IncidentAlert {
            fingerprint: alert.fingerprint.clone(),
            labels: alert.labels.clone().into(),
            annotations: alert.annotations.clone().into(),
            status: alert.status,
            joined_at: now,
            status_changed_at: now,
            flapping: false,
            // Joining is its first status change, for flap detection.
            changes: vec![now],
            role,
            severity: alert
                .severity
                .clone()
                .filter(|s| Some(s) != label_severity(&alert.labels).as_ref()),
        }
    }

    /// The alert as templates see it when an incident is worded again from
    /// its alerts (title after a join, topology's root cause): its labels,
    /// annotations and status, and its severity normalized from its labels as
    /// the webhook formats do, so `{{ severity }}` renders the same as when
    /// the incident was opened.
    pub fn as_alert(&self) -> crate::alert::Alert {
        crate::alert::Alert {
            source: String::new(),
            fingerprint: self.fingerprint.clone(),
            status: self.status,
            labels: self.labels.to_map(),
            annotations: self.annotations.to_map(),
            severity: self
                .severity
                .clone()
                .or_else(|| label_severity(&self.labels)),
            starts_at: None,
            ends_at: None,
            generator_url: None,
            received_at: self.joined_at,
        }
    }
}

/// The severity the webhook formats give an alert from its labels alone.
fn label_severity(labels: &BTreeMap<String, String>) -> Option<String> {
    crate::formats::severity(None, labels)
}

/// One change of an incident, with its cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    #[serde(with = "rfc3339")]
    pub at: DateTime<Utc>,
    /// `created`, `alert_added`, `alert_resolved`, `alert_refired`, `acknowledged`,
    /// `resolved`, `reopened`, `closed`, `related`, `flapping_started`,
    /// `flapping_stopped`, `sla_breached`.
    pub event: String,
    /// Why, in words an operator reads: which alert, rule, timer or person.
    pub cause: String,
}

/// The lifecycle settings of the rule that opened the incident, kept with it so
/// its timers do not change under it when rules are reloaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub window_s: u64,
    /// `resolve: auto`: the incident resolves itself once its alerts have.
    pub auto_resolve: bool,
    pub resolve_after_s: u64,
    pub reopen_within_s: u64,
    pub close_after_s: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub title: String,
    pub description: String,
    pub state: IncidentState,
    pub priority: u8,
    pub impact: Level,
    pub urgency: Level,
    pub category: Option<String>,
    pub subcategory: Option<String>,
    pub assignment_group: Option<String>,
    pub service: Option<String>,
    pub configuration_items: Vec<String>,
    pub major: bool,
    /// Alerts in the incident, inhibited symptoms not counted.
    pub alert_count: usize,
    pub rule: String,
    pub correlation_key: String,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
    #[serde(default, with = "rfc3339::option")]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(default, with = "rfc3339::option")]
    pub closed_at: Option<DateTime<Utc>>,
    pub reopen_count: u32,
    /// Tickets in the ITSM platforms, by adapter name: the number or key a person
    /// recognises (the ticket's URL when the adapter knows it).
    pub external_refs: BTreeMap<String, String>,
    /// Who resolved or closed it in an ITSM platform, when a person did.
    #[serde(default)]
    pub closed_by: Option<String>,
    /// Incidents this one follows on from (opened again after a person closed
    /// the earlier one).
    #[serde(default)]
    pub related: Vec<String>,
    pub route: Vec<String>,
    /// Root cause, affected services and merges (service topology).
    #[serde(flatten)]
    pub topology: crate::topology::IncidentTopology,
    /// Shared, not owned: copying an incident (the engine keeps the one it
    /// read beside the one it changes) copies pointers, and comparing the two
    /// skips the alerts they still share. Change one with `Arc::make_mut`.
    /// The Redis store keeps them apart from the rest of the document (a list
    /// of their own), so an update writes only the alerts it changed; see
    /// [`to_store_document`].
    #[serde(default, skip_serializing_if = "alerts_left_out")]
    pub alerts: Vec<Arc<IncidentAlert>>,
    /// The alerts as a store read them, to tell which ones an update changed.
    /// Not part of the document, nor of the incident's value.
    #[serde(skip)]
    pub alerts_stored: StoredAlerts,
    /// Its history, oldest first. The Redis store keeps it apart from the rest
    /// of the document (a list it appends to), so an update reads and writes
    /// only the entries it adds; see [`to_store_document`].
    #[serde(default, skip_serializing_if = "timeline_left_out")]
    pub timeline: Vec<TimelineEntry>,
    /// Timeline entries that came before the first one in `timeline`: dropped
    /// beyond [`MAX_TIMELINE`], or, in an incident read without its timeline
    /// to be changed (`StateStore::get_incident_head`), left in the store.
    #[serde(default)]
    pub timeline_dropped: u64,
    /// How many entries at the front of `timeline` the store holds already,
    /// as it read them; the ones after are what an update appends. Not part of
    /// the document.
    #[serde(skip)]
    pub timeline_stored: usize,
    /// Last alert activity: the correlation window slides from here.
    #[serde(with = "rfc3339")]
    pub last_activity: DateTime<Utc>,
    /// Since when every alert has been resolved (auto-resolve counts from here).
    #[serde(default, with = "rfc3339::option")]
    pub all_resolved_since: Option<DateTime<Utc>>,
    /// Flap detection: whether an alert of it is flapping, and the settings it
    /// was opened with (see [`flapping`]).
    #[serde(default)]
    pub flapping: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flap_policy: Option<flapping::FlapPolicy>,
    /// SLA deadlines and breaches, when an SLA applies to its priority (see [`sla`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<sla::Sla>,
    pub policy: Policy,
    /// Bumped on every stored change; the store refuses a write whose expected
    /// version is not the stored one (optimistic concurrency).
    pub version: u64,
}

impl Incident {
    pub fn alert(&self, fingerprint: &str) -> Option<&IncidentAlert> {
        self.alerts
            .iter()
            .find(|a| a.fingerprint == fingerprint)
            .map(|a| &**a)
    }

    /// What `alert_count` counts: the alerts, less inhibited symptoms (they
    /// are listed, but are not what the incident is about).
    pub fn counted_alerts(&self) -> usize {
        self.alerts
            .iter()
            .filter(|a| a.role != Some(crate::topology::AlertRole::Symptom))
            .count()
    }

    pub fn push_timeline(&mut self, at: DateTime<Utc>, event: &str, cause: impl Into<String>) {
        self.timeline.push(TimelineEntry {
            at,
            event: event.to_string(),
            cause: cause.into(),
        });
        if self.timeline.len() > MAX_TIMELINE {
            let excess = self.timeline.len() - MAX_TIMELINE;
            self.timeline.drain(..excess);
            self.timeline_dropped += excess as u64;
            self.timeline_stored = self.timeline_stored.saturating_sub(excess);
        }
    }

    /// The timeline entries written since the incident was read: what a
    /// store keeping the timeline apart appends.
    pub fn timeline_added(&self) -> &[TimelineEntry] {
        self.timeline.get(self.timeline_stored..).unwrap_or(&[])
    }

    /// Entries there have ever been: the dropped ones and those in `timeline`.
    pub fn timeline_total(&self) -> u64 {
        self.timeline_dropped + self.timeline.len() as u64
    }
}

thread_local! {
    /// Set while the Redis store's document is written or read
    /// ([`to_store_document`], [`from_store_document`]).
    static STORE_DOCUMENT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn timeline_left_out(_: &[TimelineEntry]) -> bool {
    in_store_document()
}

fn alerts_left_out(_: &[Arc<IncidentAlert>]) -> bool {
    in_store_document()
}

fn in_store_document() -> bool {
    STORE_DOCUMENT.get()
}

/// Runs `f` (one synchronous serde call) as a store document's read or write.
/// A thread-local switch rather than a second set of structs mirroring every
/// field: serde runs synchronously, so nothing else runs on this thread
/// meanwhile.
fn with_store_document<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            STORE_DOCUMENT.set(self.0);
        }
    }
    let _reset = Reset(STORE_DOCUMENT.replace(true));
    f()
}

/// The incident as the Redis store's document:
/// - without its `timeline` (a list of its own there). The timeline was half
///   of a busy incident's document, rewritten and read again on every alert
///   that joined it;
/// - without its `alerts` (a list of their own there, one entry per alert),
///   for the same reason: a storm incident's hundreds of alerts were written
///   again on every change to one of them;
/// - its alerts' labels and annotations written back as the text they were
///   read as, when nothing has parsed them ([`stored_map`]).
pub fn to_store_document(incident: &Incident) -> serde_json::Result<String> {
    with_store_document(|| serde_json::to_string(incident))
}

/// An incident from the Redis store's document ([`to_store_document`]): its
/// alerts' labels and annotations are kept as text until read.
pub fn from_store_document(doc: &[u8]) -> serde_json::Result<Incident> {
    from_store_json(doc)
}

/// Reads JSON the Redis store wrote with [`with_store_document`] on. One
/// UTF-8 check of the whole text: read from bytes, serde_json checks each
/// string (and each label map's text) with a call of its own.
fn from_store_json<T: serde::de::DeserializeOwned>(json: &[u8]) -> serde_json::Result<T> {
    let json =
        std::str::from_utf8(json).map_err(<serde_json::Error as serde::de::Error>::custom)?;
    with_store_document(|| serde_json::from_str(json))
}

/// One alert of an incident as the Redis store keeps it, in the list of the
/// incident's alerts: as in the document before, labels and annotations
/// written back as the text they were read as.
pub fn to_store_alert(alert: &IncidentAlert) -> serde_json::Result<String> {
    with_store_document(|| serde_json::to_string(alert))
}

/// An alert from the Redis store's list of an incident's alerts
/// ([`to_store_alert`]).
pub fn from_store_alert(entry: &[u8]) -> serde_json::Result<IncidentAlert> {
    from_store_json(entry)
}

/// The alerts of an incident as a store read them at one version, so that
/// the store can write back only the alerts an update changed: an alert still
/// shared (the same `Arc`) with what was read is unchanged.
///
/// Not part of the incident's value: two incidents compare equal whatever
/// their snapshots, and a copy carries its snapshot along.
#[derive(Debug, Clone, Default)]
pub struct StoredAlerts(Option<Arc<AlertsSnapshot>>);

#[derive(Debug)]
struct AlertsSnapshot {
    id: String,
    version: u64,
    alerts: Vec<Arc<IncidentAlert>>,
}

impl PartialEq for StoredAlerts {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl StoredAlerts {
    /// Records `incident`'s alerts as the store holds them at its version.
    pub fn record(incident: &mut Incident) {
        incident.alerts_stored = StoredAlerts(Some(Arc::new(AlertsSnapshot {
            id: incident.id.clone(),
            version: incident.version,
            alerts: incident.alerts.clone(),
        })));
    }

    /// The alerts the store holds for `id` at `version`, if this snapshot is
    /// of them: an update of the incident read as `version` can write only
    /// what differs. `None` for any other incident or version (a new
    /// incident, or one built from another), which must be written whole.
    pub fn at(&self, id: &str, version: u64) -> Option<&[Arc<IncidentAlert>]> {
        self.0
            .as_deref()
            .filter(|s| s.version == version && s.id == id)
            .map(|s| s.alerts.as_slice())
    }
}

/// What a store keeping an incident's alerts as a list must do to turn the
/// list it holds (`stored`, or unknown) into `alerts`: keep the first `keep`
/// entries of the stored list, overwrite the entries at the positions in
/// `set`, then append `append`. A list the store may not hold as read
/// (unknown) keeps none: all of `alerts` is appended to an emptied list.
#[derive(Debug, PartialEq, Eq)]
pub struct AlertsWrite<'a> {
    pub keep: usize,
    pub set: Vec<(usize, &'a IncidentAlert)>,
    pub append: &'a [Arc<IncidentAlert>],
}

impl<'a> AlertsWrite<'a> {
    /// Compares position by position: an alert is written again only where
    /// it is not the very one (`Arc::ptr_eq`) the store returned there.
    pub fn between(
        stored: Option<&[Arc<IncidentAlert>]>,
        alerts: &'a [Arc<IncidentAlert>],
    ) -> Self {
        let stored = stored.unwrap_or_default();
        let keep = stored.len().min(alerts.len());
        let set = stored[..keep]
            .iter()
            .zip(&alerts[..keep])
            .enumerate()
            .filter(|(_, (s, a))| !Arc::ptr_eq(s, a))
            .map(|(i, (_, a))| (i, &**a))
            .collect();
        AlertsWrite {
            keep,
            set,
            append: &alerts[keep..],
        }
    }
}

/// Filters for listing incidents.
#[derive(Debug, Clone, Default)]
pub struct IncidentQuery {
    pub state: Option<IncidentState>,
    pub priority: Option<u8>,
    pub service: Option<String>,
    pub limit: usize,
}

impl IncidentQuery {
    pub fn matches(&self, i: &Incident) -> bool {
        self.state.is_none_or(|s| s == i.state)
            && self.priority.is_none_or(|p| p == i.priority)
            && self
                .service
                .as_deref()
                .is_none_or(|s| i.service.as_deref() == Some(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alerts(names: &[&str]) -> Vec<Arc<IncidentAlert>> {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        names
            .iter()
            .map(|n| {
                let alert = crate::alert::Alert::for_test(&[("alertname", n)], Status::Firing, at);
                Arc::new(IncidentAlert::new(&alert, at, None))
            })
            .collect()
    }

    #[test]
    fn an_update_writes_only_the_alerts_it_changed_and_the_ones_that_joined() {
        let stored = alerts(&["a", "b", "c"]);
        let mut now = stored.clone();
        Arc::make_mut(&mut now[1]).status = Status::Resolved;
        now.extend(alerts(&["d"]));
        let AlertsWrite { keep, set, append } = AlertsWrite::between(Some(&stored), &now);
        assert_eq!(keep, 3);
        assert_eq!(set.len(), 1);
        assert_eq!(set[0].0, 1);
        assert_eq!(set[0].1.status, Status::Resolved);
        assert_eq!(append, &now[3..]);
    }

    #[test]
    fn an_equal_alert_that_is_not_the_one_read_is_written_again() {
        // Equal in value but rebuilt: only sharing says it is what the store
        // holds, so it is written (harmless) rather than trusted.
        let stored = alerts(&["a", "b"]);
        let now = alerts(&["a", "b"]);
        let AlertsWrite { keep, set, append } = AlertsWrite::between(Some(&stored), &now);
        assert_eq!((keep, set.len(), append.len()), (2, 2, 0));
        let same = AlertsWrite::between(Some(&stored), &stored);
        assert_eq!(
            same,
            AlertsWrite {
                keep: 2,
                set: Vec::new(),
                append: &[]
            }
        );
    }

    #[test]
    fn fewer_alerts_than_were_read_keep_only_the_first_ones() {
        let stored = alerts(&["a", "b", "c"]);
        let write = AlertsWrite::between(Some(&stored), &stored[..1]);
        assert_eq!(
            write,
            AlertsWrite {
                keep: 1,
                set: Vec::new(),
                append: &[]
            }
        );
        assert_eq!(
            AlertsWrite::between(Some(&stored), &[]),
            AlertsWrite {
                keep: 0,
                set: Vec::new(),
                append: &[]
            }
        );
    }
}
