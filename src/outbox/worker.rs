//! The delivery worker: reads the outbox and brings each routed adapter's
//! ticket in line with the incident, then acknowledges the entries.
//!
//! Entries of one read are grouped by incident, so an incident changed many
//! times in a row (an alert storm) is read and synced once for all of them,
//! and finished entries are acknowledged together rather than one by one.
//!
//! Per (incident, adapter), a sync is: find-or-create the ticket, update its
//! fields and add the new timeline entries as notes, move it to the incident's
//! state. Each step is persisted ([`SyncState`]) before the next, so a crash
//! resumes where it stopped and never creates a second ticket. Transient
//! failures leave the entry pending (retried later, by this or another
//! instance); permanent ones become dead letters an operator can retry.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use sha2::Digest;
use tokio::sync::{Semaphore, mpsc};

use super::{DeadLetter, OutboxEntry, SyncState};
use crate::adapters::{Built, DeliveryError, ExternalRef, RemoteTicket, Target, TicketState};
use crate::incident::engine::Engine;
use crate::incident::{Incident, IncidentQuery, IncidentState};
use crate::metrics::Metrics;
use crate::store::{SharedStore, StoreError};

/// Incidents per state read back per poll (most recently updated first).
const READ_BACK_PAGE: usize = 500;
/// Entries read per round trip.
const READ_BATCH: usize = 64;
/// Rounds of one sync before leaving the rest to the next entry (an incident
/// changing faster than its ticket can follow).
const MAX_ROUNDS: usize = 8;
/// Waits (ms, each jittered down to half) before trying a busy ticket's
/// lease again, about 1.5 s in all. The delivery holding it re-reads the
/// incident each round and most often is about to let go; without these a
/// change that just missed its last round waited for its entry to be
/// reclaimed (`reclaim_after_ms`, 15 s by default).
const BUSY_WAITS_MS: [u64; 4] = [100, 200, 400, 800];

/// Worker settings (config `delivery:`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Entries pending this long (their instance died, or left them after a
    /// transient failure) are claimed again.
    pub reclaim_after_ms: u64,
    /// How often tickets are read back (two-way state).
    pub poll_interval_ms: u64,
    /// Incidents delivered at once by this instance.
    pub concurrency: usize,
    /// A ticket being worked on is leased to one instance for this long, renewed
    /// while the work goes on; after a crash another instance takes over once
    /// it runs out.
    pub lease_ms: u64,
    /// After a read that did not fill a batch, wait this long before reading
    /// again, so the entries written meanwhile are read, looked up and
    /// acknowledged together: at 5,000 alerts/s reading and acknowledging as
    /// each entry arrived were a quarter of all store round trips. Delays a
    /// delivery by at most this; 0 reads again at once.
    pub batch_wait_ms: u64,
}

/// The most `delivery.batch_wait_ms` may be: a delivery waits for it.
pub const MAX_BATCH_WAIT_MS: u64 = 1_000;

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            reclaim_after_ms: 15_000,
            poll_interval_ms: 30_000,
            concurrency: 16,
            lease_ms: 15_000,
            batch_wait_ms: 10,
        }
    }
}

/// Why a sync did not complete.
enum SyncError {
    Delivery(DeliveryError),
    Store(StoreError),
    /// Another instance holds the ticket's lease.
    Busy,
}

impl From<DeliveryError> for SyncError {
    fn from(e: DeliveryError) -> Self {
        SyncError::Delivery(e)
    }
}

impl From<StoreError> for SyncError {
    fn from(e: StoreError) -> Self {
        SyncError::Store(e)
    }
}

pub struct Worker {
    store: SharedStore,
    engine: Arc<Engine>,
    adapters: HashMap<String, (Built, Target)>,
    /// This instance's consumer name and lease owner.
    consumer: String,
    metrics: Arc<Metrics>,
    config: WorkerConfig,
    /// Incidents this process is syncing now, and whether more entries for
    /// one arrived meanwhile (then its sync goes round once more).
    in_flight: Mutex<HashMap<String, bool>>,
    /// Route names already warned about (not configured), to warn once each.
    unknown: Mutex<HashSet<String>>,
}

impl Worker {
    pub fn new(
        store: SharedStore,
        engine: Arc<Engine>,
        adapters: &[Built],
        metrics: Arc<Metrics>,
        config: WorkerConfig,
    ) -> Result<Self, String> {
        let mut built = HashMap::new();
        for a in adapters {
            let target = Target::new(&a.name, &a.delivery, metrics.clone())?;
            built.insert(a.name.clone(), (a.clone(), target));
        }
        Ok(Worker {
            store,
            engine,
            adapters: built,
            consumer: format!("incidentd-{}", uuid::Uuid::now_v7().simple()),
            metrics,
            config,
            in_flight: Mutex::new(HashMap::new()),
            unknown: Mutex::new(HashSet::new()),
        })
    }

    /// Delivers until the task is dropped. Entries in flight when it is are
    /// not acknowledged, so they are delivered again (harmlessly) later.
    pub async fn run(self: Arc<Self>) {
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        // Finished tasks hand their entry ids to one acknowledger. It ends once
        // every sender is gone (this loop and the tasks it spawned), so it lives
        // exactly as long as something may still finish. Unbounded because
        // each task sends once and each ack call takes all that is queued.
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        tokio::spawn(acknowledge(self.store.clone(), done_rx));
        let reclaim_after = Duration::from_millis(self.config.reclaim_after_ms);
        let batch_wait = Duration::from_millis(self.config.batch_wait_ms.min(MAX_BATCH_WAIT_MS));
        let mut last_reclaim: Option<Instant> = None;
        let mut filled = true;
        loop {
            if !filled && !batch_wait.is_zero() {
                tokio::time::sleep(batch_wait).await;
            }
            let mut entries = match self
                .store
                .outbox_read(&self.consumer, READ_BATCH, Duration::from_secs(1))
                .await
            {
                // Empty: the read waited its full second, nothing to wait for.
                Ok(e) => {
                    filled = e.is_empty() || e.len() >= READ_BATCH;
                    e
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox read failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if last_reclaim.is_none_or(|t| t.elapsed() >= reclaim_after / 2) {
                last_reclaim = Some(Instant::now());
                match self
                    .store
                    .outbox_reclaim(&self.consumer, reclaim_after, READ_BATCH)
                    .await
                {
                    Ok(mut claimed) => entries.append(&mut claimed),
                    Err(e) => tracing::warn!(error = %e, "outbox reclaim failed"),
                }
                self.update_depth().await;
            }
            // One task per incident, not per entry: a sync brings the ticket to
            // the incident's latest state, so one pass covers every entry read.
            for (incident_id, entry_ids) in by_incident(entries) {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let worker = self.clone();
                let done_tx = done_tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if worker.handle(&incident_id).await {
                        // Fails only once the acknowledger is gone (the runtime is
                        // shutting down): the entries are then delivered again.
                        let _ = done_tx.send(entry_ids);
                    }
                });
            }
        }
    }

    async fn update_depth(&self) {
        if let Ok(stats) = self.store.outbox_stats().await {
            self.metrics.outbox_depth.set(stats.depth as i64);
            let age = stats.oldest.map_or(0.0, |t| {
                (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
            });
            self.metrics.outbox_oldest_age.set(age);
        }
    }

    /// Delivers incident `id` to every adapter on its route; `true` when the
    /// entries for it written before this call are done with (delivered, or
    /// dead-lettered): the pass that decided it started after they were written.
    pub async fn handle(&self, id: &str) -> bool {
        {
            let Ok(mut running) = self.in_flight.lock() else {
                return false;
            };
            if let Some(dirty) = running.get_mut(id) {
                // The sync running here goes round once more for these entries,
                // and they stay pending until a later pass finds nothing to do:
                // if that sync fails, the entries must not be gone.
                *dirty = true;
                return false;
            }
            running.insert(id.to_string(), false);
        }
        loop {
            let done = self.deliver(id).await;
            let Ok(mut running) = self.in_flight.lock() else {
                return false;
            };
            match running.get_mut(id) {
                Some(dirty) if *dirty => *dirty = false,
                _ => {
                    running.remove(id);
                    return done;
                }
            }
        }
    }

    /// One pass over the incident's route.
    async fn deliver(&self, id: &str) -> bool {
        // Only its route is needed here; each sync reads it whole.
        let route = match self.store.incident_route(id).await {
            Ok(Some(route)) => route,
            // Gone (expired): nothing left to deliver.
            Ok(None) => return true,
            Err(_) => return false,
        };
        let mut done = true;
        for name in &route {
            let Some((built, target)) = self.adapters.get(name) else {
                self.metrics
                    .deliveries
                    .with_label_values(&[name, "unknown_adapter"])
                    .inc();
                if self
                    .unknown
                    .lock()
                    .is_ok_and(|mut u| u.insert(name.clone()))
                {
                    tracing::warn!(adapter = %name, "rules route incidents to an adapter that is not configured; skipping it");
                }
                continue;
            };
            match self.sync(id, built, target).await {
                Ok(()) => self
                    .metrics
                    .deliveries
                    .with_label_values(&[name, "delivered"])
                    .inc(),
                Err(SyncError::Delivery(DeliveryError::Permanent { reason, status })) => {
                    self.metrics
                        .deliveries
                        .with_label_values(&[name, "dead_letter"])
                        .inc();
                    self.metrics.dead_letters.with_label_values(&[name]).inc();
                    tracing::error!(adapter = %name, incident = %id, error = %reason, "delivery failed permanently; dead-lettered");
                    let dead = DeadLetter {
                        id: format!("{}-{name}", uuid::Uuid::now_v7().simple()),
                        incident_id: id.to_string(),
                        adapter: name.clone(),
                        reason,
                        status,
                        failed_at: Utc::now(),
                    };
                    if self.store.put_dead_letter(&dead).await.is_err() {
                        done = false;
                    }
                }
                Err(SyncError::Delivery(DeliveryError::Transient { reason, .. })) => {
                    self.metrics
                        .deliveries
                        .with_label_values(&[name, "retry_later"])
                        .inc();
                    tracing::warn!(adapter = %name, incident = %id, error = %reason, "delivery will be retried");
                    done = false;
                }
                Err(SyncError::Store(e)) => {
                    tracing::warn!(adapter = %name, incident = %id, error = %e, "delivery state unavailable; will retry");
                    done = false;
                }
                Err(SyncError::Busy) => {
                    // Counted: a ticket busy poll after poll is a delivery held
                    // up, and nothing else would show it.
                    self.metrics
                        .deliveries
                        .with_label_values(&[name, "busy"])
                        .inc();
                    tracing::debug!(adapter = %name, incident = %id, "ticket still leased elsewhere after short waits; delivered when its entry is claimed again");
                    done = false;
                }
            }
        }
        done
    }

    /// The lease that keeps deliveries and read-backs of incident `id`'s
    /// ticket in adapter `adapter` from interleaving, and its time to live.
    fn ticket_lease(&self, id: &str, adapter: &str) -> (String, Duration) {
        (
            format!("{id}:{adapter}"),
            Duration::from_millis(self.config.lease_ms.max(100)),
        )
    }

    async fn sync(&self, id: &str, built: &Built, target: &Target) -> Result<(), SyncError> {
        let (lease, ttl) = self.ticket_lease(id, &built.name);
        let mut waits = BUSY_WAITS_MS.iter();
        while !self.store.try_lease(&lease, &self.consumer, ttl).await? {
            let Some(&wait_ms) = waits.next() else {
                return Err(SyncError::Busy);
            };
            let jittered = wait_ms / 2 + fastrand::u64(0..=wait_ms / 2);
            tokio::time::sleep(Duration::from_millis(jittered)).await;
        }
        // Keep the lease while the (possibly long, retrying) sync runs.
        let renew = {
            let (store, lease, owner) = (self.store.clone(), lease.clone(), self.consumer.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    let _ = store.try_lease(&lease, &owner, ttl).await;
                }
            })
        };
        let result = self.sync_rounds(id, built, target).await;
        renew.abort();
        // An unreleased lease expires by itself; failing to release is harmless.
        let _ = self.store.release_lease(&lease, &self.consumer).await;
        result
    }

    async fn sync_rounds(&self, id: &str, built: &Built, target: &Target) -> Result<(), SyncError> {
        for _ in 0..MAX_ROUNDS {
            let Some(inc) = self.store.get_incident(id).await? else {
                return Ok(());
            };
            let mut st = self
                .store
                .get_sync(id, &built.name)
                .await?
                .unwrap_or_default();
            if st.version >= inc.version {
                return Ok(());
            }
            self.step(&inc, &mut st, built, target).await?;
        }
        Ok(())
    }

    /// Brings one ticket in line with `inc`, persisting after each side effect.
    async fn step(
        &self,
        inc: &Incident,
        st: &mut SyncState,
        built: &Built,
        target: &Target,
    ) -> Result<(), SyncError> {
        let adapter = &built.adapter;
        let total = inc.timeline_dropped + inc.timeline.len() as u64;
        let ext: ExternalRef = match &st.external {
            Some(ext) => {
                let skip = st.timeline_synced.saturating_sub(inc.timeline_dropped) as usize;
                let new_entries = inc.timeline.get(skip..).unwrap_or(&[]);
                let digest = fields_digest(inc);
                if !new_entries.is_empty() || digest != st.fields_digest {
                    adapter.update(target, inc, ext, new_entries).await?;
                    st.timeline_synced = total;
                    st.fields_digest = digest;
                    self.store.put_sync(&inc.id, &built.name, st).await?;
                }
                ext.clone()
            }
            None => {
                let (ext, found) = match adapter.find(target, inc).await? {
                    Some(ext) => (ext, true),
                    None => (adapter.create(target, inc).await?, false),
                };
                st.external = Some(ext.clone());
                st.remote = Some(TicketState::Open);
                // A ticket found again may predate later changes: its fields are
                // updated next round. Its timeline is taken as delivered rather
                // than posted again note by note.
                st.timeline_synced = total;
                st.fields_digest = if found {
                    String::new()
                } else {
                    fields_digest(inc)
                };
                self.store.put_sync(&inc.id, &built.name, st).await?;
                if let Err(e) = self
                    .engine
                    .set_external_ref(&inc.id, &built.name, &ext)
                    .await
                {
                    tracing::warn!(incident = %inc.id, error = %e, "could not record the external reference on the incident");
                }
                if found {
                    return Ok(());
                }
                ext
            }
        };
        let want = TicketState::of(inc.state);
        if st.remote != Some(want) {
            adapter.transition(target, inc, &ext, want).await?;
            // What the vendor reports after the move is the baseline the
            // read-back compares with (a reopened ServiceNow incident reads
            // back as "in progress", say), so our own move is never mistaken
            // for a person's.
            st.remote = match adapter.fetch(target, &ext).await {
                Ok(Some(read)) => Some(read.state),
                _ => Some(want),
            };
            self.store.put_sync(&inc.id, &built.name, st).await?;
        }
        st.version = inc.version;
        self.store.put_sync(&inc.id, &built.name, st).await?;
        Ok(())
    }

    /// Reads tickets back (adapters that can) and applies what people changed
    /// in the ITSM to the incidents.
    pub async fn poll_remote(&self) -> Result<(), StoreError> {
        let readers: HashSet<&str> = self
            .adapters
            .iter()
            .filter(|(_, (built, _))| built.adapter.reads_back())
            .map(|(name, _)| name.as_str())
            .collect();
        if readers.is_empty() {
            return Ok(());
        }
        // One state at a time, so at most one page of incidents is held.
        for state in [
            IncidentState::New,
            IncidentState::InProgress,
            IncidentState::Reopened,
            IncidentState::Resolved,
        ] {
            let page = self
                .store
                .list_incidents(&IncidentQuery {
                    state: Some(state),
                    limit: READ_BACK_PAGE,
                    ..IncidentQuery::default()
                })
                .await?;
            for inc in &page {
                // Only adapters that read back and already hold a ticket for it.
                let names = inc.route.iter().filter(|n| {
                    readers.contains(n.as_str()) && inc.external_refs.contains_key(n.as_str())
                });
                for name in names {
                    let Some((built, target)) = self.adapters.get(name) else {
                        continue;
                    };
                    self.read_back(inc, name, built, target).await?;
                }
            }
        }
        Ok(())
    }

    /// Reads one ticket back and applies a person's change to the incident.
    ///
    /// The ticket is fetched without the ticket's lease: a fetch takes as long
    /// as the ITSM does, and a read-back holding the lease that long made
    /// deliveries to the ticket find it busy poll after poll (a slow RT kept a
    /// ticket from following its incident for 30 s). Only a change found is
    /// applied under the lease, and only if no delivery moved the ticket while
    /// it was fetched: otherwise incidentd's own move could be taken for a
    /// person's, and the next poll looks again.
    async fn read_back(
        &self,
        inc: &Incident,
        name: &str,
        built: &Built,
        target: &Target,
    ) -> Result<(), StoreError> {
        let Some(seen) = self.store.get_sync(&inc.id, name).await? else {
            return Ok(());
        };
        let Some(ext) = seen.external.clone() else {
            return Ok(());
        };
        let remote = match built.adapter.fetch(target, &ext).await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::debug!(adapter = %name, incident = %inc.id, error = %e, "reading the ticket back failed");
                return Ok(());
            }
        };
        if seen.remote == Some(remote.state) {
            return Ok(());
        }
        // Its own owner name: leases are re-entrant per owner, and the
        // read-back must not enter a delivery of this same process.
        let owner = format!("{}-read-back", self.consumer);
        let (lease, ttl) = self.ticket_lease(&inc.id, name);
        if !self.store.try_lease(&lease, &owner, ttl).await? {
            return Ok(());
        }
        let result = self.apply_read_back(inc, name, &seen, remote).await;
        let _ = self.store.release_lease(&lease, &owner).await;
        result
    }

    /// Applies what a person changed in the ticket, under the ticket's lease,
    /// unless a delivery changed the sync state since `seen` was read.
    async fn apply_read_back(
        &self,
        inc: &Incident,
        name: &str,
        seen: &SyncState,
        remote: RemoteTicket,
    ) -> Result<(), StoreError> {
        let Some(mut st) = self.store.get_sync(&inc.id, name).await? else {
            return Ok(());
        };
        if st != *seen {
            return Ok(());
        }
        // Somebody changed the ticket in the ITSM.
        let who = remote
            .changed_by
            .clone()
            .unwrap_or_else(|| "someone".into());
        match self
            .engine
            .apply_remote(&inc.id, name, remote.state, &who, Utc::now())
            .await
        {
            Ok(updated) => {
                st.remote = Some(remote.state);
                // The incident changed because of the ticket: nothing to send back.
                if TicketState::of(updated.state) == remote.state {
                    st.version = st.version.max(updated.version);
                }
                self.store.put_sync(&inc.id, name, &st).await?;
            }
            Err(e) => {
                tracing::warn!(incident = %inc.id, error = %e, "could not apply the ticket's change")
            }
        }
        Ok(())
    }

    /// Polls tickets until the task is dropped.
    pub async fn run_poller(self: Arc<Self>) {
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.config.poll_interval_ms.max(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.poll_remote().await {
                tracing::warn!(error = %e, "ticket read-back failed; will retry");
            }
        }
    }
}

/// The entry ids of one read per incident, incidents in the order they first
/// appear (entries of one incident stay in read order).
fn by_incident(entries: Vec<OutboxEntry>) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for entry in entries {
        match index
            .get(&entry.incident_id)
            .and_then(|&i| groups.get_mut(i))
        {
            Some((_, ids)) => ids.push(entry.entry_id),
            None => {
                index.insert(entry.incident_id.clone(), groups.len());
                groups.push((entry.incident_id, vec![entry.entry_id]));
            }
        }
    }
    groups
}

/// Acknowledges what the delivery tasks finished, in as few calls as it can:
/// everything that finished while the previous call was under way goes in the
/// next one, so under load one round trip covers many incidents.
async fn acknowledge(store: SharedStore, mut done: mpsc::UnboundedReceiver<Vec<String>>) {
    while let Some(mut ids) = done.recv().await {
        while let Ok(more) = done.try_recv() {
            ids.extend(more);
        }
        if let Err(e) = store.outbox_ack(&ids).await {
            tracing::warn!(error = %e, entries = ids.len(), "outbox ack failed; the entries will be delivered again");
        }
    }
}

/// A digest of the ticket fields an update would change.
fn fields_digest(inc: &Incident) -> String {
    let fields = serde_json::json!([
        inc.title,
        inc.description,
        inc.priority,
        inc.impact,
        inc.urgency,
        inc.category,
        inc.subcategory,
        inc.assignment_group,
        inc.service,
        inc.configuration_items,
        inc.major,
        inc.alert_count,
    ]);
    hex::encode(&sha2::Sha256::digest(fields.to_string().as_bytes())[..16])
}
