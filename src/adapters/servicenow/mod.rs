//! The ServiceNow adapter: one `incident` record per incident, through the Table
//! API (`/api/now/table/incident`).
//!
//! What it maps, and why:
//! - create: `short_description` (template, one line, cut to the column length),
//!   `description`, `impact` and `urgency` from the incident's high/medium/low
//!   (priority is derived by the instance's lookup rules, so it is not sent),
//!   `category`, `subcategory`, `assignment_group`, `cmdb_ci` (the first
//!   configuration item), `caller_id` (config), and `correlation_id` = incident id
//!   with `correlation_display` so the record can be found again.
//! - find: the Table API has no idempotency key, so a create whose response was
//!   lost is found by `correlation_id=<id>^active=true`; an empty result (v2 `[]`,
//!   or v1's 404) means "none". Rows whose `correlation_id` is not ours are
//!   ignored, because the instance silently drops query terms it does not
//!   understand and would otherwise answer "every incident".
//! - update: a PATCH by sys_id with the fields in `update_fields` and the new
//!   timeline entries joined into one `work_notes` journal entry (split only when
//!   longer than a journal entry may be): one write instead of one per entry,
//!   which matters under the instance's per-hour rate limits. Values equal to the
//!   stored ones are not recorded by the instance, so re-sending them costs nothing.
//! - transition: reads the record's state first (transitions are rare), then
//!   PATCHes `state`: acknowledged 2, resolved 6 with `close_code` +
//!   `close_notes` in the same call (the data policy refuses them separately),
//!   closed 7 (same fields), reopen 2 (only from resolved: closed and canceled
//!   are terminal, so reopening one is a permanent error and a new incident is
//!   needed). Resolving or closing a record that is gone (404) or already
//!   there is done.
//! - fetch: `state` (1 → open, 2/3 → acknowledged, 6 → resolved, 7/8 → closed) and
//!   `sys_updated_by`.
//!
//! A 2xx without a JSON `result` is an error: a hibernating developer instance
//! answers 200 with an HTML login page.

mod config;

pub use config::Config;

use chrono::SecondsFormat;
use serde_json::{Map, Value, json};

use crate::adapters::text::{Text, truncate};
use crate::adapters::{Adapter, DeliveryError, ExternalRef, RemoteTicket, Target, TicketState};
use crate::incident::{Incident, TimelineEntry};
use crate::rules::Level;
use crate::secret::Secret;

/// `description` and `close_notes` are 4000-character string columns on a
/// default instance; longer values are refused.
const DESCRIPTION_MAX_CHARS: usize = 4000;
const CLOSE_NOTES_MAX_CHARS: usize = 4000;

pub(crate) enum Auth {
    Basic { user: String, password: Secret },
    Bearer(Secret),
}

/// The `state` choice values written for each transition.
#[derive(Debug, Clone)]
pub(crate) struct StateValues {
    pub acknowledged: String,
    pub resolved: String,
    pub closed: String,
    pub reopen: String,
}

impl Default for StateValues {
    fn default() -> Self {
        StateValues {
            acknowledged: "2".into(),
            resolved: "6".into(),
            closed: "7".into(),
            reopen: "2".into(),
        }
    }
}

/// Incident fields the adapter writes (and may keep in line on update).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    ShortDescription,
    Description,
    Impact,
    Urgency,
    Category,
    Subcategory,
    AssignmentGroup,
    CmdbCi,
}

impl Field {
    const ALL: [Field; 8] = [
        Field::ShortDescription,
        Field::Description,
        Field::Impact,
        Field::Urgency,
        Field::Category,
        Field::Subcategory,
        Field::AssignmentGroup,
        Field::CmdbCi,
    ];
    pub(crate) const NAMES: [&'static str; 8] = [
        "short_description",
        "description",
        "impact",
        "urgency",
        "category",
        "subcategory",
        "assignment_group",
        "cmdb_ci",
    ];

    fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub(crate) fn parse(s: &str) -> Option<Field> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }
}

pub struct ServiceNow {
    /// `<instance>/api/now/table/incident`.
    table: reqwest::Url,
    auth: Auth,
    caller_id: Option<String>,
    correlation_display: String,
    short_description: Text,
    short_description_max_chars: usize,
    description: Text,
    /// Choice values for high, medium, low.
    impact: [String; 3],
    urgency: [String; 3],
    states: StateValues,
    close_code: String,
    close_notes: Text,
    update_fields: Vec<Field>,
    input_display_value: bool,
    work_note_max_chars: usize,
}

/// Names the error in a 2xx body: anything but JSON with a `result` (a
/// hibernating instance's HTML page, a proxy's page, an `error` object).
fn error_in_body(_status: u16, body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.get("result").is_some() => None,
        Ok(v) => Some(
            v.pointer("/error/message")
                .and_then(Value::as_str)
                .map_or_else(|| "no `result` in the response".to_string(), str::to_string),
        ),
        Err(_) => {
            let head = String::from_utf8_lossy(&body[..body.len().min(512)]).to_ascii_lowercase();
            Some(if head.contains("<html") || head.contains("<!doctype") {
                "the instance answered with an HTML page (hibernating or in maintenance?)"
                    .to_string()
            } else {
                "the response is not JSON".to_string()
            })
        }
    }
}

/// A reply that passed `error_in_body` but lacks what the call needs: the
/// instance is misbehaving, so the step is tried again later.
fn unexpected(what: &str) -> DeliveryError {
    DeliveryError::Transient {
        reason: format!("unexpected ServiceNow response: {what}"),
        retry_after: None,
    }
}

fn level_index(l: Level) -> usize {
    match l {
        Level::High => 0,
        Level::Medium => 1,
        Level::Low => 2,
    }
}

/// One line per timeline entry, in the order they happened.
fn note_line(e: &TimelineEntry) -> String {
    format!(
        "{} {}: {}",
        e.at.to_rfc3339_opts(SecondsFormat::Secs, true),
        e.event,
        e.cause
    )
}

/// Joins entries into as few notes as fit in `max` characters each (an entry
/// longer than that is cut on its own).
fn notes(entries: &[TimelineEntry], max: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut current_chars = 0usize;
    for e in entries {
        let line = truncate(&note_line(e), max);
        let chars = line.chars().count();
        if current_chars > 0 && current_chars + 1 + chars > max {
            out.push(std::mem::take(&mut current));
            current_chars = 0;
        }
        if current_chars > 0 {
            current.push('\n');
            current_chars += 1;
        }
        current.push_str(&line);
        current_chars += chars;
    }
    if current_chars > 0 {
        out.push(current);
    }
    out
}

/// The single line a title column wants.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl ServiceNow {
    /// `<instance>/api/now/table/incident` (`None` for a URL that cannot carry a path).
    pub(crate) fn table_url(instance: &reqwest::Url) -> Option<reqwest::Url> {
        let mut url = instance.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .ok()?
            .pop_if_empty()
            .extend(["api", "now", "table", "incident"]);
        Some(url)
    }

    fn request(
        &self,
        c: &reqwest::Client,
        method: reqwest::Method,
        url: reqwest::Url,
    ) -> reqwest::RequestBuilder {
        let r = c
            .request(method, url)
            .header(reqwest::header::ACCEPT, "application/json");
        match &self.auth {
            Auth::Basic { user, password } => r.basic_auth(user, Some(password.expose())),
            Auth::Bearer(token) => r.bearer_auth(token.expose()),
        }
    }

    fn record_url(&self, sys_id: &str) -> Result<reqwest::Url, DeliveryError> {
        let mut url = self.table.clone();
        url.path_segments_mut()
            .map_err(|()| DeliveryError::permanent("the ServiceNow URL cannot carry a path"))?
            .push(sys_id);
        Ok(url)
    }

    /// Query parameters of writes: short responses, plain sys_ids for references.
    fn write_params(&self, url: &mut reqwest::Url) {
        let mut q = url.query_pairs_mut();
        q.append_pair("sysparm_fields", "sys_id,number,state")
            .append_pair("sysparm_exclude_reference_link", "true");
        if self.input_display_value {
            q.append_pair("sysparm_input_display_value", "true");
        }
    }

    fn field(&self, f: Field, inc: &Incident) -> Option<Value> {
        let s = |v: &Option<String>| {
            v.as_ref()
                .filter(|s| !s.trim().is_empty())
                .map(|s| Value::String(s.clone()))
        };
        match f {
            Field::ShortDescription => Some(Value::String(truncate(
                &one_line(&self.short_description.render(inc)),
                self.short_description_max_chars,
            ))),
            Field::Description => Some(Value::String(truncate(
                &self.description.render(inc),
                DESCRIPTION_MAX_CHARS,
            ))),
            Field::Impact => Some(Value::String(self.impact[level_index(inc.impact)].clone())),
            Field::Urgency => Some(Value::String(
                self.urgency[level_index(inc.urgency)].clone(),
            )),
            Field::Category => s(&inc.category),
            Field::Subcategory => s(&inc.subcategory),
            Field::AssignmentGroup => s(&inc.assignment_group),
            Field::CmdbCi => s(&inc.configuration_items.first().cloned()),
        }
    }

    /// The incident id as `correlation_id`, refused when it could not be found
    /// again (too long for the column, or with encoded-query metacharacters).
    fn correlation_id(inc: &Incident) -> Result<&str, DeliveryError> {
        let id = inc.id.as_str();
        let safe = !id.is_empty()
            && id.chars().count() <= config::CORRELATION_ID_MAX_CHARS
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
        if safe {
            Ok(id)
        } else {
            Err(DeliveryError::permanent(format!(
                "incident id {id:?} cannot be a ServiceNow correlation_id (at most 100 of [A-Za-z0-9-_.:])"
            )))
        }
    }

    async fn patch(
        &self,
        target: &Target,
        what: &str,
        sys_id: &str,
        body: &Value,
    ) -> Result<(), DeliveryError> {
        let mut url = self.record_url(sys_id)?;
        self.write_params(&mut url);
        target
            .send(
                what,
                |c| {
                    self.request(c, reqwest::Method::PATCH, url.clone())
                        .json(body)
                },
                error_in_body,
            )
            .await
            .map(|_| ())
    }

    /// The record's `state`, `sys_updated_by` and `active` (`None` when missing or empty).
    async fn read(
        &self,
        target: &Target,
        what: &str,
        sys_id: &str,
    ) -> Result<(String, Option<String>, Option<bool>), DeliveryError> {
        let mut url = self.record_url(sys_id)?;
        url.query_pairs_mut()
            .append_pair(
                "sysparm_fields",
                "sys_id,number,state,active,sys_updated_by",
            )
            .append_pair("sysparm_exclude_reference_link", "true");
        let reply = target
            .send(
                what,
                |c| self.request(c, reqwest::Method::GET, url.clone()),
                error_in_body,
            )
            .await?;
        let v = reply.json()?;
        let r = &v["result"];
        let state = r["state"]
            .as_str()
            .ok_or_else(|| unexpected("record without state"))?
            .to_string();
        let by = r["sys_updated_by"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let active = r["active"].as_str().map(|a| a == "true");
        Ok((state, by, active))
    }

    fn is_terminal(&self, state: &str) -> bool {
        state == self.states.closed || state == "7" || state == "8"
    }

    fn is_resolved(&self, state: &str) -> bool {
        state == self.states.resolved || state == "6"
    }

    /// The ticket state a `state` value stands for; custom values fall back on
    /// `active`.
    fn ticket_state(&self, state: &str, active: Option<bool>) -> TicketState {
        if self.is_terminal(state) {
            TicketState::Closed
        } else if self.is_resolved(state) {
            TicketState::Resolved
        } else if state == "1" {
            TicketState::Open
        } else if state == self.states.acknowledged || state == "2" || state == "3" {
            TicketState::Acknowledged
        } else if active == Some(false) {
            TicketState::Closed
        } else {
            TicketState::Acknowledged
        }
    }

    fn ext_ref(&self, sys_id: &str, number: &str) -> ExternalRef {
        // <instance>/nav_to.do?uri=incident.do?sys_id=<sys_id>: the form inside the
        // instance's frame, which is what a person opens.
        let mut url = self.table.clone();
        // The table URL minus `api/now/table/incident`.
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop().pop().pop().pop().push("nav_to.do");
        }
        url.set_query(None);
        url.query_pairs_mut()
            .append_pair("uri", &format!("incident.do?sys_id={sys_id}"));
        ExternalRef {
            id: sys_id.to_string(),
            display: number.to_string(),
            url: Some(url.to_string()),
        }
    }

    fn close_fields(&self, inc: &Incident, state: &str) -> Value {
        let notes = truncate(self.close_notes.render(inc).trim(), CLOSE_NOTES_MAX_CHARS);
        // An empty rendering would be refused by the data policy: never send one.
        let notes = if notes.is_empty() {
            format!("Resolved by incidentd ({})", inc.id)
        } else {
            notes
        };
        json!({"state": state, "close_code": self.close_code, "close_notes": notes})
    }
}

#[async_trait::async_trait]
impl Adapter for ServiceNow {
    fn kind(&self) -> &'static str {
        "servicenow"
    }

    async fn find(
        &self,
        target: &Target,
        inc: &Incident,
    ) -> Result<Option<ExternalRef>, DeliveryError> {
        let id = Self::correlation_id(inc)?;
        let mut url = self.table.clone();
        url.query_pairs_mut()
            .append_pair(
                "sysparm_query",
                // The oldest first: if two were ever made, later calls keep to one.
                &format!("correlation_id={id}^active=true^ORDERBYsys_created_on"),
            )
            .append_pair("sysparm_fields", "sys_id,number,state,correlation_id")
            .append_pair("sysparm_limit", "1")
            .append_pair("sysparm_no_count", "true")
            .append_pair("sysparm_exclude_reference_link", "true");
        let reply = match target
            .send(
                "find",
                |c| self.request(c, reqwest::Method::GET, url.clone()),
                error_in_body,
            )
            .await
        {
            Ok(r) => r,
            // Table API v1 answers an empty query with 404 "No Record found".
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let v = reply.json()?;
        let rows = v["result"]
            .as_array()
            .ok_or_else(|| unexpected("query result is not a list"))?;
        Ok(rows
            .iter()
            .find(|r| r["correlation_id"].as_str() == Some(id))
            .and_then(|r| {
                let sys_id = r["sys_id"].as_str()?;
                let number = r["number"].as_str().unwrap_or(sys_id);
                Some(self.ext_ref(sys_id, number))
            }))
    }

    async fn create(&self, target: &Target, inc: &Incident) -> Result<ExternalRef, DeliveryError> {
        let id = Self::correlation_id(inc)?;
        let mut body = Map::new();
        for f in Field::ALL {
            if let Some(v) = self.field(f, inc) {
                body.insert(f.name().to_string(), v);
            }
        }
        if let Some(caller) = &self.caller_id {
            body.insert("caller_id".into(), Value::String(caller.clone()));
        }
        body.insert("correlation_id".into(), Value::String(id.to_string()));
        body.insert(
            "correlation_display".into(),
            Value::String(self.correlation_display.clone()),
        );
        let body = Value::Object(body);
        let mut url = self.table.clone();
        self.write_params(&mut url);
        let reply = target
            .send(
                "create",
                |c| {
                    self.request(c, reqwest::Method::POST, url.clone())
                        .json(&body)
                },
                error_in_body,
            )
            .await?;
        let v = reply.json()?;
        let sys_id = v["result"]["sys_id"]
            .as_str()
            .ok_or_else(|| unexpected("created record without sys_id"))?;
        let number = v["result"]["number"].as_str().unwrap_or(sys_id);
        Ok(self.ext_ref(sys_id, number))
    }

    async fn update(
        &self,
        target: &Target,
        inc: &Incident,
        ext: &ExternalRef,
        new_entries: &[TimelineEntry],
    ) -> Result<(), DeliveryError> {
        let mut fields = Map::new();
        for f in &self.update_fields {
            if let Some(v) = self.field(*f, inc) {
                fields.insert(f.name().to_string(), v);
            }
        }
        let mut notes = notes(new_entries, self.work_note_max_chars).into_iter();
        if let Some(first) = notes.next() {
            fields.insert("work_notes".into(), Value::String(first));
        }
        if !fields.is_empty() {
            self.patch(target, "update", &ext.id, &Value::Object(fields))
                .await?;
        }
        // Each PATCH with work_notes appends one journal entry; only a batch too
        // long for one entry gets here.
        for note in notes {
            self.patch(target, "work note", &ext.id, &json!({"work_notes": note}))
                .await?;
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
        let closing = matches!(to, TicketState::Resolved | TicketState::Closed);
        let (current, _, _) = match self.read(target, "read state", &ext.id).await {
            Ok(r) => r,
            // Nothing left to resolve or close.
            Err(e) if closing && e.status() == Some(404) => return Ok(()),
            Err(e) => return Err(e),
        };
        let terminal = self.is_terminal(&current);
        let body = match to {
            TicketState::Resolved if terminal || self.is_resolved(&current) => return Ok(()),
            TicketState::Closed if terminal => return Ok(()),
            TicketState::Resolved => self.close_fields(inc, &self.states.resolved),
            TicketState::Closed => self.close_fields(inc, &self.states.closed),
            _ if terminal => {
                return Err(DeliveryError::permanent(format!(
                    "{} is closed (state {current}); closed incidents are terminal in ServiceNow, a new one is needed",
                    ext.display
                )));
            }
            TicketState::Acknowledged if current == self.states.acknowledged => return Ok(()),
            TicketState::Acknowledged => json!({"state": self.states.acknowledged}),
            TicketState::Open if current == "1" || current == self.states.reopen => return Ok(()),
            TicketState::Open => json!({"state": self.states.reopen}),
        };
        match self.patch(target, "transition", &ext.id, &body).await {
            Err(e) if closing && e.status() == Some(404) => Ok(()),
            other => other,
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
        let (state, changed_by, active) = self.read(target, "fetch", &ext.id).await?;
        Ok(Some(RemoteTicket {
            state: self.ticket_state(&state, active),
            changed_by,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event: &str, cause: &str) -> TimelineEntry {
        TimelineEntry {
            at: chrono::DateTime::parse_from_rfc3339("2025-06-01T10:00:00Z")
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or_default(),
            event: event.into(),
            cause: cause.into(),
        }
    }

    #[test]
    fn timeline_entries_join_into_notes_no_longer_than_the_limit() {
        let entries: Vec<_> = (0..10)
            .map(|i| entry("alert_added", &format!("alert {i} {}", "x".repeat(50))))
            .collect();
        let out = notes(&entries, 200);
        assert!(out.len() > 1);
        assert!(out.iter().all(|n| n.chars().count() <= 200));
        assert_eq!(out.iter().map(|n| n.lines().count()).sum::<usize>(), 10);
        assert!(notes(&[], 200).is_empty());
        assert_eq!(
            notes(&[entry("created", &"y".repeat(500))], 200)[0]
                .chars()
                .count(),
            200
        );
    }

    #[test]
    fn a_2xx_without_result_is_an_error_and_with_result_is_not() {
        assert!(
            error_in_body(
                200,
                b"<html><body>Your instance is hibernating</body></html>"
            )
            .is_some()
        );
        assert!(error_in_body(200, br#"{"error":{"message":"x"},"status":"failure"}"#).is_some());
        assert!(error_in_body(200, br#"{"result":[]}"#).is_none());
        assert!(error_in_body(201, br#"{"result":{"sys_id":"a"}}"#).is_none());
    }
}
