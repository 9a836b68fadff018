//! Adapters: how an incident reaches an ITSM platform and stays in step with it.
//!
//! Every adapter has the same folder shape: `config.rs` (what the user writes,
//! validated), `mod.rs` (the [`Adapter`] implementation), and its contract tests in
//! `tests/adapter_<name>.rs` against a local server that enforces the vendor's
//! documented API. Adding an adapter touches its folder and one arm of
//! [`AdapterConfig`].
//!
//! Adapters do not decide *when* to call the vendor: the outbox worker
//! (`crate::outbox`) does, through the shared [`delivery`] policy, and brings the
//! ticket in line with the incident's latest state step by step:
//! find-or-create, update (fields and new timeline entries as notes), then
//! transition to the incident's state. Each step is persisted before the next,
//! so a crash at any point resumes without a second ticket.

pub mod delivery;
pub mod jira;
pub mod kafka;
pub mod opsgenie;
pub mod pagerduty;
pub mod rt;
pub mod servicenow;
pub mod text;
pub mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use delivery::{DeliveryConfig, DeliveryError, Target};

use crate::config::Problems;
use crate::incident::{Incident, IncidentState, TimelineEntry};
use crate::secret::Secret;

/// The ticket a vendor holds for an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalRef {
    /// What later calls address the ticket by (sys_id, issue key, dedup key, ticket id).
    pub id: String,
    /// What a person recognises (INC0010001, OPS-42, ticket #17).
    pub display: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The states a ticket moves through, as far as incidentd drives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    Open,
    Acknowledged,
    Resolved,
    Closed,
}

impl TicketState {
    /// The ticket state an incident state asks for.
    pub fn of(state: IncidentState) -> TicketState {
        match state {
            IncidentState::New | IncidentState::Reopened => TicketState::Open,
            IncidentState::InProgress => TicketState::Acknowledged,
            IncidentState::Resolved => TicketState::Resolved,
            IncidentState::Closed => TicketState::Closed,
        }
    }
}

/// A ticket as read back from the vendor (two-way state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTicket {
    pub state: TicketState,
    /// Who last changed it, when the vendor says.
    pub changed_by: Option<String>,
}

/// One ITSM platform.
#[async_trait::async_trait]
pub trait Adapter: Send + Sync {
    /// The vendor kind (`servicenow`, `jira`, ...), for metrics and logs.
    fn kind(&self) -> &'static str;

    /// The ticket an earlier create may already have made (its response lost in
    /// a crash or timeout), found by the incident id the create carried.
    /// Vendors that dedup by key themselves answer `Ok(None)`.
    async fn find(
        &self,
        target: &Target,
        inc: &Incident,
    ) -> Result<Option<ExternalRef>, DeliveryError>;

    /// Creates the ticket.
    async fn create(&self, target: &Target, inc: &Incident) -> Result<ExternalRef, DeliveryError>;

    /// Brings the ticket's fields in line with the incident and adds `new_entries`
    /// (timeline entries not delivered yet) as notes or comments.
    async fn update(
        &self,
        target: &Target,
        inc: &Incident,
        ext: &ExternalRef,
        new_entries: &[TimelineEntry],
    ) -> Result<(), DeliveryError>;

    /// Moves the ticket to `to`.
    async fn transition(
        &self,
        target: &Target,
        inc: &Incident,
        ext: &ExternalRef,
        to: TicketState,
    ) -> Result<(), DeliveryError>;

    /// Whether [`Adapter::fetch`] can read tickets back; the worker polls only
    /// adapters that can.
    fn reads_back(&self) -> bool {
        false
    }

    /// Reads the ticket back, for adapters that can (two-way state).
    async fn fetch(
        &self,
        _target: &Target,
        _ext: &ExternalRef,
    ) -> Result<Option<RemoteTicket>, DeliveryError> {
        Ok(None)
    }
}

/// `adapters:` in the config file: a name per adapter, its `type` and settings.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum AdapterConfig {
    Webhook(webhook::Config),
    Servicenow(servicenow::Config),
    Jira(jira::Config),
    Pagerduty(pagerduty::Config),
    Opsgenie(opsgenie::Config),
    Rt(rt::Config),
    Kafka(kafka::Config),
}

/// One configured adapter, ready to deliver.
#[derive(Clone)]
pub struct Built {
    pub name: String,
    pub adapter: Arc<dyn Adapter>,
    pub delivery: DeliveryConfig,
}

impl fmt::Debug for Built {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Built")
            .field("name", &self.name)
            .field("kind", &self.adapter.kind())
            .field("delivery", &self.delivery)
            .finish()
    }
}

impl AdapterConfig {
    /// Validates one adapter's block; `None` (with problems recorded) when invalid.
    pub fn build(&self, name: &str, base_dir: &Path, p: &mut Problems<'_>) -> Option<Built> {
        let key = format!("adapters.{name}");
        // Every adapter config has `build` and `delivery`; one arm per adapter.
        macro_rules! built {
            ($c:expr) => {
                (
                    $c.build(&key, base_dir, p)
                        .map(|a| Arc::new(a) as Arc<dyn Adapter>),
                    &$c.delivery,
                )
            };
        }
        let (adapter, delivery) = match self {
            AdapterConfig::Webhook(c) => built!(c),
            AdapterConfig::Servicenow(c) => built!(c),
            AdapterConfig::Jira(c) => built!(c),
            AdapterConfig::Pagerduty(c) => built!(c),
            AdapterConfig::Opsgenie(c) => built!(c),
            AdapterConfig::Rt(c) => built!(c),
            AdapterConfig::Kafka(c) => built!(c),
        };
        delivery.validate(&format!("{key}.delivery"), p);
        Some(Built {
            name: name.to_string(),
            adapter: adapter?,
            delivery: delivery.clone(),
        })
    }
}

/// Reads a secret given inline (usually `${ENV}`) or from a file; records a
/// problem when both, neither (if `required`), or an unreadable file.
pub fn secret(
    inline: &Option<Secret>,
    file: &Option<std::path::PathBuf>,
    key: &str,
    base_dir: &Path,
    required: bool,
    p: &mut Problems<'_>,
) -> Option<Secret> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            p.at(key, "set the value or its _file, not both");
            None
        }
        (Some(v), None) if v.expose().is_empty() => {
            p.at(key, "is empty");
            None
        }
        (Some(v), None) => Some(v.clone()),
        (None, Some(f)) => match std::fs::read_to_string(base_dir.join(f)) {
            Ok(v) => Some(Secret::new(v.trim_end_matches(['\r', '\n']))),
            Err(e) => {
                p.at(
                    &format!("{key}_file"),
                    format!("cannot read {}: {e}", f.display()),
                );
                None
            }
        },
        (None, None) => {
            if required {
                p.at(key, "is required (or its _file)");
            }
            None
        }
    }
}

/// The credential fields of an adapter that takes a token or user + password.
pub struct CredentialFields<'a> {
    pub token: &'a Option<Secret>,
    pub token_file: &'a Option<std::path::PathBuf>,
    pub user: &'a Option<String>,
    pub password: &'a Option<Secret>,
    pub password_file: &'a Option<std::path::PathBuf>,
}

/// Credentials given as a token or as user + password.
pub enum Credentials {
    Token(Secret),
    Basic { user: String, password: Secret },
}

impl CredentialFields<'_> {
    /// Exactly one of the two ways, complete; problems recorded under `key`.
    pub fn resolve(&self, key: &str, base_dir: &Path, p: &mut Problems<'_>) -> Option<Credentials> {
        let has_token = self.token.is_some() || self.token_file.is_some();
        let has_basic =
            self.user.is_some() || self.password.is_some() || self.password_file.is_some();
        match (has_token, has_basic) {
            (true, true) => {
                p.at(
                    &format!("{key}.token"),
                    "set token (or token_file) or user + password, not both",
                );
                None
            }
            (false, false) => {
                p.at(
                    key,
                    "needs token (or token_file) or user + password (or password_file)",
                );
                None
            }
            (true, false) => secret(
                self.token,
                self.token_file,
                &format!("{key}.token"),
                base_dir,
                true,
                p,
            )
            .map(Credentials::Token),
            (false, true) => {
                let user = match self.user.as_deref().map(str::trim) {
                    Some(u) if !u.is_empty() => Some(u.to_string()),
                    Some(_) => {
                        p.at(&format!("{key}.user"), "is empty");
                        None
                    }
                    None => {
                        p.at(&format!("{key}.user"), "is required with password");
                        None
                    }
                };
                let password = secret(
                    self.password,
                    self.password_file,
                    &format!("{key}.password"),
                    base_dir,
                    true,
                    p,
                );
                Some(Credentials::Basic {
                    user: user?,
                    password: password?,
                })
            }
        }
    }
}

/// Applies a config table of overrides (`name: value`) to named slots that hold
/// their defaults, recording a problem for an unknown name (listing the known
/// ones, as `what`) or an empty value. `false` when anything was wrong.
pub fn override_table(
    table: &BTreeMap<String, String>,
    key: &str,
    what: &str,
    slots: &mut [(&str, &mut String)],
    p: &mut Problems<'_>,
) -> bool {
    let mut ok = true;
    for (name, value) in table {
        let Some((_, slot)) = slots.iter_mut().find(|(n, _)| n == name) else {
            let known: Vec<&str> = slots.iter().map(|(n, _)| *n).collect();
            p.at(
                &format!("{key}.{name}"),
                format!("unknown {what} ({})", known.join(", ")),
            );
            ok = false;
            continue;
        };
        if value.trim().is_empty() {
            p.at(&format!("{key}.{name}"), "is empty");
            ok = false;
        }
        **slot = value.trim().to_string();
    }
    ok
}

/// The vendor's priority name for an incident priority (1..=5), from a
/// configured table with a default.
pub fn mapped<'a>(
    table: &'a BTreeMap<u8, String>,
    priority: u8,
    default: &'a [&'a str; 5],
) -> &'a str {
    table
        .get(&priority)
        .map(String::as_str)
        .unwrap_or_else(|| default[usize::from(priority.clamp(1, 5) - 1)])
}
