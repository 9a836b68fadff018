//! The Request Tracker 5 adapter (REST 2.0, self-hosted RT).
//!
//! One incident is one ticket in one queue:
//! - create: `POST /REST/2.0/ticket` with `Queue`, `Subject` (template, by
//!   default `[<incident id>] <title>`), `Content` (description plus the ITIL
//!   fields RT has no columns for: impact, urgency, category, service, CIs...),
//!   `ContentType: text/plain`, numeric `Priority` (P1..P5 → 100/80/50/20/0,
//!   RT 5's High = 100, Medium = 50, Low = 0), `Status: new`, optional
//!   `Requestor` and `CustomFields`. RT answers 201 `{"id": "20", "_url": ...}`.
//! - find: RT has no idempotency key, so before a create the ticket a lost
//!   create made is searched with TicketSQL (`GET /REST/2.0/tickets?query=`):
//!   `Queue = '<queue>' AND Subject LIKE '<incident id>'` (or
//!   `CF.{<field>} = '<id>'` with `find_by_custom_field`), excluding the
//!   terminal `rejected` and `deleted` tickets; a `resolved` one is still this
//!   incident's and is reused (and reopened). The oldest match wins; with the
//!   subject search the id must appear as a whole word, as `LIKE` matches substrings.
//! - update: `PUT /REST/2.0/ticket/<id>` with `Subject` / `Priority` (RT itself
//!   skips unchanged values and records no transaction for them), then one
//!   `POST /REST/2.0/ticket/<id>/comment` per new timeline entry: comments are
//!   RT's internal notes, not mailed to requestors. Comments are sent as JSON
//!   (`{"Content": ..., "ContentType": "text/plain"}`), not as a `text/plain`
//!   body: RT 5.0.3 stores a `text/plain` body as Latin-1, whatever its
//!   charset, and garbles every non-ASCII character (seen on a real RT).
//! - transition: `PUT /REST/2.0/ticket/<id>` `{"Status": ...}` with the
//!   `statuses` table: open and acknowledged → `open`, resolved and closed →
//!   `resolved` (RT's default lifecycle has no closed apart from resolved;
//!   `rejected` means "not a valid request"). Reopen is open again from resolved.
//! - fetch: `GET /REST/2.0/ticket/<id>`: `resolved` → resolved, `rejected` /
//!   `deleted` → closed, `stalled` → acknowledged; `new` / `open` →
//!   acknowledged once someone owns the ticket (RT's "take"), else open: an
//!   unowned `open` is what incidentd's own acknowledge and reopen write, and
//!   must not read back as a person's acknowledgement. (incidentd's own
//!   acknowledge thus reads back as open; the worker then changes nothing. With
//!   `statuses: {open: new}` the two are written apart and read back exactly.)
//!   Other statuses (a custom lifecycle) go through the `statuses` table. Who
//!   changed it: the owner for an acknowledgement by ownership, else
//!   `LastUpdatedBy`.
//!
//! RT answers a `PUT` with 200 and an array of human messages whatever
//! happened, e.g. `["Ticket 20: Status changed from 'new' to 'open'"]` or
//! `["Ticket 20: Status 'x' isn't a valid status for this ticket."]` (REST2.pm:
//! "Figure out how to return success/failure?"). A message that is not a
//! "... changed from ..." and reads as a refusal (permission denied, invalid,
//! can't, could not...) is returned as a permanent error: sending the same
//! request again gets the same answer. These are RT's English messages, so the
//! integration user should keep RT's default language (requests ask for `en`).
//! A 404 on update, resolve or close means the ticket is gone (shredded):
//! nothing left to do.

mod config;

pub use config::Config;

use serde_json::{Map, Value, json};

use crate::adapters::text::{Text, truncate};
use crate::adapters::{Adapter, DeliveryError, ExternalRef, RemoteTicket, Target, TicketState};
use crate::incident::{Incident, TimelineEntry};
use crate::secret::Secret;

/// `Tickets.Subject` is `varchar(200)` in RT's schema.
const SUBJECT_MAX_CHARS: usize = 200;
/// RT keeps content as an attachment (10 MB by default); a ticket body this
/// long is already unreadable, and a smaller request fails less often.
const CONTENT_MAX_CHARS: usize = 64_000;
const COMMENT_MAX_CHARS: usize = 16_000;
/// Matches the find search returns; more than one ticket per incident id is
/// already an anomaly.
const FIND_PER_PAGE: &str = "20";

pub(crate) enum Auth {
    /// `token <auth token>`, built once and marked sensitive so no debug
    /// output of a request shows it.
    Token(reqwest::header::HeaderValue),
    Basic {
        user: String,
        password: Secret,
    },
}

/// The RT status each ticket state is written as.
#[derive(Debug, Clone)]
pub(crate) struct Statuses {
    pub new: String,
    pub open: String,
    pub acknowledged: String,
    pub resolved: String,
    pub closed: String,
}

impl Default for Statuses {
    fn default() -> Self {
        Statuses {
            new: "new".into(),
            open: "open".into(),
            acknowledged: "open".into(),
            resolved: "resolved".into(),
            closed: "resolved".into(),
        }
    }
}

impl Statuses {
    fn of(&self, state: TicketState) -> &str {
        match state {
            TicketState::Open => &self.open,
            TicketState::Acknowledged => &self.acknowledged,
            TicketState::Resolved => &self.resolved,
            TicketState::Closed => &self.closed,
        }
    }
}

pub struct Rt {
    /// `{url}/REST/2.0`.
    api: String,
    /// RT's web root, for links people open.
    web: String,
    queue: String,
    auth: Auth,
    subject: Text,
    content: Text,
    priorities: [u32; 5],
    statuses: Statuses,
    update_subject: bool,
    update_priority: bool,
    custom_fields: Vec<(String, Text)>,
    find_cf: Option<String>,
    requestors: Vec<String>,
}

impl Rt {
    fn request(
        &self,
        c: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let r = c
            .request(method, format!("{}{path}", self.api))
            .header(reqwest::header::ACCEPT, "application/json")
            // RT localises its result messages; the refusal check reads English.
            .header(reqwest::header::ACCEPT_LANGUAGE, "en");
        match &self.auth {
            Auth::Token(t) => r.header(reqwest::header::AUTHORIZATION, t.clone()),
            Auth::Basic { user, password } => r.basic_auth(user, Some(password.expose())),
        }
    }

    fn json_request(
        &self,
        c: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        body: &[u8],
    ) -> reqwest::RequestBuilder {
        self.request(c, method, path)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
    }

    fn subject_of(&self, inc: &Incident) -> String {
        // One line: RT shows the subject in lists and mail headers.
        let s = self.subject.render(inc).replace(['\r', '\n'], " ");
        truncate(s.trim(), SUBJECT_MAX_CHARS)
    }

    fn priority_of(&self, inc: &Incident) -> u32 {
        self.priorities[usize::from(inc.priority.clamp(1, 5) - 1)]
    }

    fn ticket_ref(&self, id: &str) -> ExternalRef {
        ExternalRef {
            id: id.to_string(),
            display: format!("#{id}"),
            url: Some(format!("{}/Ticket/Display.html?id={id}", self.web)),
        }
    }

    /// `PUT /ticket/<id>` with `fields`; RT's refusals come back as messages.
    async fn put(
        &self,
        target: &Target,
        what: &str,
        id: &str,
        fields: Value,
    ) -> Result<(), DeliveryError> {
        let body = to_vec(&fields)?;
        let path = format!("/ticket/{id}");
        let reply = target
            .send(
                what,
                |c| self.json_request(c, reqwest::Method::PUT, &path, &body),
                message_array,
            )
            .await?;
        let refused: Vec<String> = messages(&reply.json()?)
            .into_iter()
            .filter(|m| is_refusal(m))
            .collect();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(DeliveryError::Permanent {
                reason: format!("RT refused the update: {}", refused.join("; ")),
                status: Some(reply.status),
            })
        }
    }

    async fn comment(&self, target: &Target, id: &str, text: &str) -> Result<(), DeliveryError> {
        let body = to_vec(
            &json!({"Content": truncate(text, COMMENT_MAX_CHARS), "ContentType": "text/plain"}),
        )?;
        let path = format!("/ticket/{id}/comment");
        target
            .send(
                "comment",
                |c| self.json_request(c, reqwest::Method::POST, &path, &body),
                message_array,
            )
            .await
            .map(|_| ())
    }
}

#[async_trait::async_trait]
impl Adapter for Rt {
    fn kind(&self) -> &'static str {
        "rt"
    }

    async fn find(
        &self,
        target: &Target,
        inc: &Incident,
    ) -> Result<Option<ExternalRef>, DeliveryError> {
        let by = match &self.find_cf {
            Some(cf) => format!("CF.{{{cf}}} = {}", quote(&inc.id)),
            None => format!("Subject LIKE {}", quote(&inc.id)),
        };
        let query = format!(
            "Queue = {} AND {by} AND Status != 'rejected' AND Status != 'deleted'",
            quote(&self.queue)
        );
        let params = [
            ("query", query.as_str()),
            ("orderby", "id"),
            ("order", "ASC"),
            ("per_page", FIND_PER_PAGE),
            ("fields", "Subject,Status"),
        ];
        let path = format!(
            "/tickets?{}",
            params
                .iter()
                .map(|(k, v)| format!("{k}={}", form_encode(v)))
                .collect::<Vec<_>>()
                .join("&")
        );
        let reply = target
            .send(
                "find",
                |c| self.request(c, reqwest::Method::GET, &path),
                collection,
            )
            .await?;
        let body = reply.json()?;
        let found = body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|item| {
                let id = id_of(&item["id"])?;
                let matches = match (&self.find_cf, item["Subject"].as_str()) {
                    (Some(_), _) | (None, None) => true,
                    (None, Some(subject)) => has_word(subject, &inc.id),
                };
                matches.then_some(id)
            });
        if let Some(id) = &found {
            tracing::info!(adapter = %target.name, incident = %inc.id, ticket = %id, "found the ticket an earlier create made");
        }
        Ok(found.map(|id| self.ticket_ref(&id)))
    }

    async fn create(&self, target: &Target, inc: &Incident) -> Result<ExternalRef, DeliveryError> {
        let mut body = Map::new();
        body.insert("Queue".into(), json!(self.queue));
        body.insert("Subject".into(), json!(self.subject_of(inc)));
        body.insert(
            "Content".into(),
            json!(truncate(&self.content.render(inc), CONTENT_MAX_CHARS)),
        );
        body.insert("ContentType".into(), json!("text/plain"));
        body.insert("Priority".into(), json!(self.priority_of(inc)));
        body.insert("Status".into(), json!(self.statuses.new));
        if !self.requestors.is_empty() {
            body.insert("Requestor".into(), json!(self.requestors));
        }
        let mut cfs = Map::new();
        if let Some(cf) = &self.find_cf {
            cfs.insert(cf.clone(), json!(inc.id));
        }
        for (name, t) in &self.custom_fields {
            let v = t.render(inc);
            // An empty value would only add an empty transaction.
            if !v.trim().is_empty() {
                cfs.insert(name.clone(), json!(v));
            }
        }
        if !cfs.is_empty() {
            body.insert("CustomFields".into(), Value::Object(cfs));
        }
        let bytes = to_vec(&Value::Object(body))?;
        let reply = target
            .send(
                "create",
                |c| self.json_request(c, reqwest::Method::POST, "/ticket", &bytes),
                created,
            )
            .await?;
        let id = id_of(&reply.json()?["id"]).ok_or_else(|| {
            DeliveryError::permanent("RT created a ticket but answered without its id")
        })?;
        tracing::info!(adapter = %target.name, incident = %inc.id, ticket = %id, "RT ticket created");
        Ok(self.ticket_ref(&id))
    }

    async fn update(
        &self,
        target: &Target,
        inc: &Incident,
        ext: &ExternalRef,
        new_entries: &[TimelineEntry],
    ) -> Result<(), DeliveryError> {
        let id = ticket_id(ext)?;
        let mut fields = Map::new();
        if self.update_subject {
            fields.insert("Subject".into(), json!(self.subject_of(inc)));
        }
        if self.update_priority {
            fields.insert("Priority".into(), json!(self.priority_of(inc)));
        }
        let result = async {
            if !fields.is_empty() {
                self.put(target, "update", id, Value::Object(fields))
                    .await?;
            }
            for e in new_entries {
                self.comment(target, id, &comment_text(e)).await?;
            }
            Ok::<(), DeliveryError>(())
        }
        .await;
        gone_is_done(result, target, id, "update")
    }

    async fn transition(
        &self,
        target: &Target,
        _inc: &Incident,
        ext: &ExternalRef,
        to: TicketState,
    ) -> Result<(), DeliveryError> {
        let id = ticket_id(ext)?;
        let result = self
            .put(
                target,
                "transition",
                id,
                json!({"Status": self.statuses.of(to)}),
            )
            .await;
        match to {
            // Nothing to resolve or close in a ticket that no longer exists; a
            // reopen of one has nothing to reopen and must be seen.
            TicketState::Resolved | TicketState::Closed => {
                gone_is_done(result, target, id, "transition")
            }
            TicketState::Open | TicketState::Acknowledged => result,
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
        let id = ticket_id(ext)?;
        let path = format!("/ticket/{id}");
        let reply = match target
            .send(
                "fetch",
                |c| self.request(c, reqwest::Method::GET, &path),
                record,
            )
            .await
        {
            Ok(r) => r,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let t = reply.json()?;
        let status = t["Status"].as_str().unwrap_or_default();
        let owner = user_of(&t["Owner"]).filter(|o| !o.eq_ignore_ascii_case("nobody"));
        let Some((state, by_owner)) = self.state_of(status, owner.is_some()) else {
            tracing::warn!(adapter = %target.name, ticket = %id, status, "RT status maps to no ticket state");
            return Ok(None);
        };
        Ok(Some(RemoteTicket {
            state,
            // Acknowledged because someone took the ticket: they did it, even
            // when incidentd's own writes touched the ticket since.
            changed_by: if by_owner {
                owner
            } else {
                user_of(&t["LastUpdatedBy"])
            },
        }))
    }
}

impl Rt {
    /// The ticket state an RT status stands for, and whether it is the owner's
    /// doing: the inactive statuses of RT's default lifecycle, then ownership
    /// (RT's "take") and `stalled` as acknowledged, then the configured
    /// statuses, so that what `transition` writes reads back as itself.
    fn state_of(&self, status: &str, owned: bool) -> Option<(TicketState, bool)> {
        let s = &self.statuses;
        match status {
            "resolved" => return Some((TicketState::Resolved, false)),
            "rejected" | "deleted" => return Some((TicketState::Closed, false)),
            "stalled" => return Some((TicketState::Acknowledged, false)),
            _ => {}
        }
        let active = [
            "new",
            "open",
            s.new.as_str(),
            s.open.as_str(),
            s.acknowledged.as_str(),
        ]
        .contains(&status);
        if active && owned {
            return Some((TicketState::Acknowledged, true));
        }
        // With the defaults open and acknowledged both write `open`: an unowned
        // `open` is then incidentd's own write, open. Configured apart
        // (`open: new`), the acknowledged status reads back as acknowledged.
        let state = [
            (&s.closed, TicketState::Closed),
            (&s.resolved, TicketState::Resolved),
            (&s.open, TicketState::Open),
            (&s.new, TicketState::Open),
            (&s.acknowledged, TicketState::Acknowledged),
        ]
        .into_iter()
        .find(|(st, _)| st.as_str() == status)
        .map(|(_, state)| state)
        .or_else(|| {
            ["new", "open"]
                .contains(&status)
                .then_some(TicketState::Open)
        })?;
        Some((state, false))
    }
}

fn to_vec(v: &Value) -> Result<Vec<u8>, DeliveryError> {
    serde_json::to_vec(v)
        .map_err(|e| DeliveryError::permanent(format!("encoding the request: {e}")))
}

/// A 404 means the ticket is gone (RT only loses tickets to the shredder):
/// what was to be done to it is moot.
fn gone_is_done(
    result: Result<(), DeliveryError>,
    target: &Target,
    id: &str,
    what: &str,
) -> Result<(), DeliveryError> {
    match result {
        Err(e) if e.status() == Some(404) => {
            tracing::warn!(adapter = %target.name, ticket = %id, what, "RT ticket no longer exists; nothing to do");
            Ok(())
        }
        other => other,
    }
}

/// The ticket id an [`ExternalRef`] holds; it goes into URL paths, so digits only.
fn ticket_id(ext: &ExternalRef) -> Result<&str, DeliveryError> {
    if !ext.id.is_empty() && ext.id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(&ext.id)
    } else {
        Err(DeliveryError::permanent(format!(
            "{:?} is not an RT ticket id",
            ext.id
        )))
    }
}

/// One comment per timeline entry: when, what, why.
fn comment_text(e: &TimelineEntry) -> String {
    format!(
        "incidentd {} {}: {}",
        e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        e.event,
        e.cause
    )
}

/// A TicketSQL string literal.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Percent-encodes a query parameter value (everything but unreserved characters).
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `needle` in `hay` not glued to more id characters (`LIKE` matches substrings:
/// `inc-1` would otherwise find `inc-12`'s ticket).
fn has_word(hay: &str, needle: &str) -> bool {
    let id_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    hay.match_indices(needle).any(|(at, _)| {
        let before = hay[..at].chars().next_back();
        let after = hay[at + needle.len()..].chars().next();
        !before.is_some_and(id_char) && !after.is_some_and(id_char)
    })
}

/// RT writes ids as strings in some answers (`{"id": "20"}`) and numbers in others.
fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Some(s.clone())
        }
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        _ => None,
    }
}

/// A user reference: `{"id": "root", "type": "user", ...}` (or a bare name).
fn user_of(v: &Value) -> Option<String> {
    match v {
        Value::Object(o) => o.get("id").and_then(|id| match id {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn messages(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect()
}

/// A result message that reports a refusal. Change reports ("Ticket 20:
/// Subject changed from 'a' to 'b'") never are, whatever the quoted values say
/// (an incident titled "Permission denied on /api" is common); the field name
/// before "changed" is RT's, never a value.
fn is_refusal(message: &str) -> bool {
    let rest = match message.strip_prefix("Ticket ") {
        Some(r) => r
            .split_once(": ")
            .filter(|(n, _)| n.bytes().all(|b| b.is_ascii_digit()))
            .map_or(message, |(_, m)| m),
        None => message,
    };
    if let Some(at) = rest.find(" changed ")
        && !rest[..at].contains('\'')
    {
        return false;
    }
    let lower = rest.to_lowercase();
    [
        "isn't a valid",
        "is not a valid",
        "permission denied",
        "no permission",
        "can't",
        "cannot",
        "could not",
        "couldn't",
        "illegal",
        "immutable",
        "invalid",
        "not allowed",
        "failed",
        "internal error",
    ]
    .iter()
    .any(|f| lower.contains(f))
}

// What a 2xx body must look like; anything else (an SSO login page, a proxy's
// HTML) is an error, so it is retried rather than taken for success.

fn created(_status: u16, body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if id_of(&v["id"]).is_some() => None,
        _ => Some("not a created-ticket answer ({\"id\": ...})".into()),
    }
}

fn collection(_status: u16, body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v["items"].is_array() => None,
        _ => Some("not a search answer ({\"items\": [...]})".into()),
    }
}

fn record(_status: u16, body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if id_of(&v["id"]).is_some() => None,
        _ => Some("not a ticket ({\"id\": ...})".into()),
    }
}

fn message_array(_status: u16, body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(_)) => None,
        _ => Some("not a list of result messages".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_reports_are_not_refusals_whatever_the_values_say() {
        assert!(!is_refusal(
            "Ticket 20: Status changed from 'new' to 'open'"
        ));
        assert!(!is_refusal(
            "Ticket 20: Subject changed from 'x' to '[inc-1] Permission denied: invalid token, can't log in'"
        ));
        assert!(!is_refusal("Comments added"));
        assert!(!is_refusal("That is already the current value"));
        assert!(is_refusal(
            "Ticket 20: Status 'bogus' isn't a valid status for this ticket."
        ));
        assert!(is_refusal("Permission Denied"));
        assert!(is_refusal(
            "Ticket 20: You can't change status from 'resolved' to 'new'."
        ));
        // A refusal quoting "changed" inside a value is still a refusal.
        assert!(is_refusal(
            "Ticket 20: Subject 'it changed things' could not be set"
        ));
    }

    #[test]
    fn ticketsql_literals_escape_quotes_and_backslashes() {
        assert_eq!(quote("General"), "'General'");
        assert_eq!(quote(r"O'Brien\x"), r"'O\'Brien\\x'");
    }

    #[test]
    fn ids_match_as_whole_words_only() {
        assert!(has_word("[inc-1] title", "inc-1"));
        assert!(!has_word("[inc-12] title", "inc-1"));
        assert!(!has_word("xinc-1 title", "inc-1"));
        assert!(has_word("see inc-12 and inc-1", "inc-1"));
    }
}
