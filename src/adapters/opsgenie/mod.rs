//! The Opsgenie adapter: Alert API v2 (`{url}/v2/alerts`, `Authorization:
//! GenieKey <key>`). Opsgenie reaches end of support in April 2027, so this
//! stays small; `url` can point at the JSM Operations integration API, which
//! takes the same requests.
//!
//! The alert's `alias` is the incident id: Opsgenie keeps one *open* alert per
//! alias, and every later call addresses the alert by it
//! (`?identifierType=alias`). So:
//!
//! - create: `POST /v2/alerts` with `alias`, `message` (template, cut to 130
//!   characters: Opsgenie refuses longer ones), `description` (≤15000),
//!   `priority` `P1`..`P5` from the incident priority (table), `tags`
//!   (configured + service + category, ≤20 × 50), the ITIL fields in `details`
//!   (≤8000 characters in all), `entity` (template, default the service) and
//!   `source: incidentd`.
//! - find: always `None`: a create on an alias whose alert is open only bumps
//!   its count, so creating again after a lost response makes no second alert.
//! - update: a note per new timeline entry (`POST /v2/alerts/{alias}/notes`).
//!   Message and priority are set at create only.
//! - transition: Acknowledged → `acknowledge`, Resolved/Closed → `close`
//!   (Opsgenie has no resolved state); a 404 there means the alert is gone or
//!   closed already, which is done. Open → create again: after a close that
//!   opens a new alert with the same alias (the reopen).
//! - fetch: `GET /v2/alerts/{alias}`: `closed` → Resolved (whoever closed it;
//!   nothing when that was incidentd's own `user`), acknowledged → Acknowledged,
//!   else Open.
//!
//! Every action answers 202 and is processed asynchronously, so a note sent
//! right after the create can find no alert yet (404). While the incident is
//! open that is retried later rather than dropped, and the alert is created
//! again first (a no-op on an open alert) in case it was closed meanwhile.
//! Results are not polled (`/v2/alerts/requests/{id}`): the alias makes every
//! step safe to repeat instead.

mod config;

pub use config::Config;

use serde_json::{Map, Value, json};

use crate::adapters::delivery::Reply;
use crate::adapters::text::{Text, truncate};
use crate::adapters::{
    Adapter, DeliveryError, ExternalRef, RemoteTicket, Target, TicketState, mapped,
};
use crate::incident::{Incident, TimelineEntry};

/// Alert API field limits (Opsgenie docs).
const MESSAGE_MAX: usize = 130;
const ALIAS_MAX: usize = 512;
const DESCRIPTION_MAX: usize = 15_000;
const TAGS_MAX: usize = 20;
const TAG_MAX: usize = 50;
const DETAILS_MAX: usize = 8_000;
const ENTITY_MAX: usize = 512;
const USER_MAX: usize = 100;
const NOTE_MAX: usize = 25_000;
const SOURCE: &str = "incidentd";
const DEFAULT_PRIORITY: [&str; 5] = ["P1", "P2", "P3", "P4", "P5"];

pub struct Opsgenie {
    base: reqwest::Url,
    /// `GenieKey <key>`, marked sensitive.
    auth: reqwest::header::HeaderValue,
    message: Text,
    description: Text,
    entity: Text,
    tags: Vec<String>,
    user: String,
    priority: std::collections::BTreeMap<u8, String>,
}

/// A 2xx action answer must be Opsgenie's envelope (`{"result": ..., "requestId": ...}`);
/// anything else (a proxy's page, an error object) did not reach Opsgenie.
fn action_error(_status: u16, body: &[u8]) -> Option<String> {
    envelope_error(body, "result", Value::is_string)
}

/// A 2xx read answer must carry `data`.
fn read_error(_status: u16, body: &[u8]) -> Option<String> {
    envelope_error(body, "data", Value::is_object)
}

fn envelope_error(body: &[u8], field: &str, valid: fn(&Value) -> bool) -> Option<String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.get(field).is_some_and(valid) => None,
        Ok(v) => Some(match v["message"].as_str() {
            Some(m) => m.to_string(),
            None => format!("no {field:?} in the response"),
        }),
        Err(_) => Some("the body is not Opsgenie's JSON response".to_string()),
    }
}

/// A timeline entry as one note.
pub fn note_text(e: &TimelineEntry) -> String {
    let at = e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    truncate(&format!("[{}] {} ({at})", e.event, e.cause), NOTE_MAX)
}

impl Opsgenie {
    /// The Opsgenie priority for an incident priority.
    pub fn priority(&self, priority: u8) -> &str {
        mapped(&self.priority, priority, &DEFAULT_PRIORITY)
    }

    /// `{base}/v2/alerts/{segments...}`, segments percent-encoded (an alias
    /// may hold anything), addressing the alert by alias when `by_alias`.
    fn url(&self, segments: &[&str], by_alias: bool) -> Result<reqwest::Url, DeliveryError> {
        let mut u = self.base.clone();
        u.path_segments_mut()
            .map_err(|()| DeliveryError::permanent("the Opsgenie url cannot take a path"))?
            .pop_if_empty()
            .extend(["v2", "alerts"])
            .extend(segments);
        if by_alias {
            u.query_pairs_mut().append_pair("identifierType", "alias");
        }
        Ok(u)
    }

    fn tags(&self, inc: &Incident) -> Vec<String> {
        let mut tags: Vec<String> = Vec::new();
        let extra = [&inc.service, &inc.category].into_iter().flatten();
        for t in self.tags.iter().chain(extra) {
            let t = truncate(t, TAG_MAX);
            if !t.is_empty() && !tags.contains(&t) && tags.len() < TAGS_MAX {
                tags.push(t);
            }
        }
        tags
    }

    /// The ITIL fields as `details` (strings only), within Opsgenie's total size:
    /// earlier fields matter more, so later ones are cut first.
    fn details(inc: &Incident) -> Map<String, Value> {
        let mut fields: Vec<(&str, String)> = vec![
            ("incident_id", inc.id.clone()),
            ("priority", format!("P{}", inc.priority)),
            ("impact", inc.impact.as_str().to_string()),
            ("urgency", inc.urgency.as_str().to_string()),
            ("state", inc.state.as_str().to_string()),
            ("alert_count", inc.alert_count.to_string()),
            ("major", inc.major.to_string()),
        ];
        for (k, v) in [
            ("service", &inc.service),
            ("assignment_group", &inc.assignment_group),
            ("category", &inc.category),
            ("subcategory", &inc.subcategory),
        ] {
            if let Some(v) = v {
                fields.push((k, v.clone()));
            }
        }
        fields.push(("rule", inc.rule.clone()));
        if !inc.configuration_items.is_empty() {
            fields.push(("configuration_items", inc.configuration_items.join(", ")));
        }
        let mut budget = DETAILS_MAX;
        let mut out = Map::new();
        for (k, v) in fields {
            let room = budget.saturating_sub(k.len());
            if room == 0 {
                break;
            }
            let v = truncate(&v, room);
            budget -= k.len() + v.chars().count();
            out.insert(k.to_string(), Value::String(v));
        }
        out
    }

    /// The create request for `inc` as it is now.
    pub fn create_body(&self, inc: &Incident) -> Value {
        let mut message = self.message.render(inc);
        if message.trim().is_empty() {
            // Required by Opsgenie; an empty render would be refused for good.
            message = inc.id.clone();
        }
        // Incident ids are `inc-<uuid>`, far below the limit; cutting one would
        // merge unrelated incidents, so it is only checked.
        debug_assert!(inc.id.len() <= ALIAS_MAX);
        let mut body = Map::new();
        body.insert(
            "message".into(),
            json!(truncate(message.trim(), MESSAGE_MAX)),
        );
        body.insert("alias".into(), json!(inc.id));
        let description = self.description.render(inc);
        if !description.trim().is_empty() {
            body.insert(
                "description".into(),
                json!(truncate(&description, DESCRIPTION_MAX)),
            );
        }
        body.insert("tags".into(), json!(self.tags(inc)));
        body.insert("details".into(), Value::Object(Self::details(inc)));
        let entity = self.entity.render(inc);
        if !entity.trim().is_empty() {
            body.insert("entity".into(), json!(truncate(entity.trim(), ENTITY_MAX)));
        }
        body.insert("source".into(), json!(SOURCE));
        body.insert("priority".into(), json!(self.priority(inc.priority)));
        body.insert("user".into(), json!(self.user));
        Value::Object(body)
    }

    async fn call(
        &self,
        target: &Target,
        what: &str,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<&Value>,
        check: fn(u16, &[u8]) -> Option<String>,
    ) -> Result<Reply, DeliveryError> {
        let bytes = match body {
            Some(b) => Some(bytes::Bytes::from(
                serde_json::to_vec(b).map_err(|e| DeliveryError::permanent(e.to_string()))?,
            )),
            None => None,
        };
        target
            .send(
                what,
                |c| {
                    let r = c
                        .request(method.clone(), url.clone())
                        .header(reqwest::header::AUTHORIZATION, self.auth.clone());
                    match &bytes {
                        Some(b) => r
                            .header(reqwest::header::CONTENT_TYPE, "application/json")
                            .body(b.clone()),
                        None => r,
                    }
                },
                check,
            )
            .await
    }

    async fn create_alert(&self, target: &Target, inc: &Incident) -> Result<(), DeliveryError> {
        let body = self.create_body(inc);
        self.call(
            target,
            "create",
            reqwest::Method::POST,
            self.url(&[], false)?,
            Some(&body),
            action_error,
        )
        .await
        .map(|_| ())
    }

    /// `POST /v2/alerts/{alias}/{action}` with `body`.
    async fn act(
        &self,
        target: &Target,
        alias: &str,
        action: &str,
        body: &Value,
    ) -> Result<(), DeliveryError> {
        let url = self.url(&[alias, action], true)?;
        self.call(
            target,
            action,
            reqwest::Method::POST,
            url,
            Some(body),
            action_error,
        )
        .await
        .map(|_| ())
    }

    /// Acknowledge or close: a 404 means no open alert has the alias (closed
    /// or deleted already), which is what was asked.
    async fn act_gone_is_done(
        &self,
        target: &Target,
        alias: &str,
        action: &str,
        note: &str,
    ) -> Result<(), DeliveryError> {
        let body = json!({"user": self.user, "source": SOURCE, "note": note});
        match self.act(target, alias, action, &body).await {
            Err(e) if e.status() == Some(404) => Ok(()),
            other => other,
        }
    }
}

#[async_trait::async_trait]
impl Adapter for Opsgenie {
    fn kind(&self) -> &'static str {
        "opsgenie"
    }

    async fn find(
        &self,
        _target: &Target,
        _inc: &Incident,
    ) -> Result<Option<ExternalRef>, DeliveryError> {
        // Opsgenie dedups by alias itself (see the module header).
        Ok(None)
    }

    async fn create(&self, target: &Target, inc: &Incident) -> Result<ExternalRef, DeliveryError> {
        self.create_alert(target, inc).await?;
        Ok(ExternalRef {
            id: inc.id.clone(),
            display: inc.id.clone(),
            url: None,
        })
    }

    async fn update(
        &self,
        target: &Target,
        inc: &Incident,
        ext: &ExternalRef,
        new_entries: &[TimelineEntry],
    ) -> Result<(), DeliveryError> {
        for e in new_entries {
            let body = json!({"note": note_text(e), "user": self.user, "source": SOURCE});
            match self.act(target, &ext.id, "notes", &body).await {
                Ok(()) => {}
                Err(err) if err.status() == Some(404) => {
                    if !inc.state.is_open() {
                        // The alert is closed or deleted and stays so: the
                        // notes have nowhere to go, and retrying cannot change that.
                        return Ok(());
                    }
                    // The create may not be processed yet, or someone closed the
                    // alert while the incident is open: create (a no-op on an
                    // open alias) and retry the notes later.
                    self.create_alert(target, inc).await?;
                    return Err(DeliveryError::Transient {
                        reason: "Opsgenie has no open alert for the incident yet (it processes creates asynchronously); notes will be retried".to_string(),
                        retry_after: None,
                    });
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    async fn transition(
        &self,
        target: &Target,
        inc: &Incident,
        ext: &ExternalRef,
        to: TicketState,
    ) -> Result<(), DeliveryError> {
        match to {
            TicketState::Open => self.create_alert(target, inc).await,
            TicketState::Acknowledged => {
                self.act_gone_is_done(
                    target,
                    &ext.id,
                    "acknowledge",
                    "Incident in progress in incidentd",
                )
                .await
            }
            TicketState::Resolved => {
                self.act_gone_is_done(target, &ext.id, "close", "Incident resolved in incidentd")
                    .await
            }
            TicketState::Closed => {
                self.act_gone_is_done(target, &ext.id, "close", "Incident closed in incidentd")
                    .await
            }
        }
    }

    fn reads_back(&self) -> bool {
        true
    }

    async fn fetch(
        &self,
        target: &Target,
        ext: &ExternalRef,
    ) -> Result<Option<RemoteTicket>, DeliveryError> {
        let url = self.url(&[&ext.id], true)?;
        let reply = match self
            .call(target, "fetch", reqwest::Method::GET, url, None, read_error)
            .await
        {
            Ok(r) => r,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let v = reply.json()?;
        let data = &v["data"];
        let who = |field: &str| data["report"][field].as_str().map(str::to_string);
        let ticket = if data["status"] == "closed" {
            if who("closedBy").as_deref() == Some(self.user.as_str()) {
                // incidentd closed it itself: nothing a person changed. This is
                // also what a reopened incident reads while Opsgenie is still
                // creating its new alert (the alias still names the old one),
                // which must not resolve the incident again.
                return Ok(None);
            }
            // Opsgenie has one end state; closing an alert is what resolving
            // means there, and incidentd closes it for Resolved too.
            RemoteTicket {
                state: TicketState::Resolved,
                changed_by: who("closedBy"),
            }
        } else if data["acknowledged"] == true {
            RemoteTicket {
                state: TicketState::Acknowledged,
                changed_by: who("acknowledgedBy"),
            }
        } else {
            RemoteTicket {
                state: TicketState::Open,
                changed_by: None,
            }
        };
        Ok(Some(ticket))
    }
}
