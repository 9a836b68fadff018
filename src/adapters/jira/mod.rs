//! The Jira Cloud adapter: one issue per incident, through the platform REST API
//! v3 (which takes rich text as Atlassian Document Format, ADF).
//!
//! What it maps, and why:
//! - create (`POST /rest/api/3/issue`): project key, issue type by name, `summary`
//!   (template, one line, at most 255 characters: Jira refuses longer),
//!   `description` as an ADF document (at most 32,767 characters of text),
//!   `priority` by name from the priorities table (priorities are per scheme,
//!   so names are configurable), the configured labels plus
//!   `incidentd-<incident id>`, and `extra_fields` as given.
//! - find (`POST /rest/api/3/search/jql`): Jira has no idempotency key; the
//!   label carrying the incident id finds the issue a create whose response was
//!   lost made. The id is unique per incident, so the query does not exclude
//!   done issues (the label of a reused alert key would have to). The search is
//!   eventually consistent, which is why the outbox persists the reference as
//!   soon as it has it and this is only the recovery path.
//! - update: reads `summary` and `priority` and PUTs only those that differ (each
//!   edit notifies watchers and counts against the per-issue write limit), then
//!   one comment (ADF) per new timeline entry.
//! - transition: transitions are per workflow, so they are listed for the issue
//!   and one is picked by the configured names (matched against the transition's
//!   name and the name of the status it leads to, first configured name first).
//!   `resolution` is set only when the transition's screen has the field: Jira
//!   refuses a field that is not on the screen, and a done issue without a
//!   resolution counts as unresolved. An issue already in the asked-for status
//!   category needs nothing; otherwise a missing transition is a permanent error
//!   that lists the available ones. Resolving or closing an issue that is gone
//!   (404) is done.
//! - fetch: the status category (new → open, indeterminate → acknowledged,
//!   done → resolved) and the assignee, Jira having no "last updated by" field.
//!
//! Auth: Basic with the account's email and an API token.

mod config;

pub use config::{Config, Names, Transitions};

use std::collections::BTreeMap;

use chrono::SecondsFormat;
use serde_json::{Map, Value, json};

use crate::adapters::text::{Text, truncate};
use crate::adapters::{
    Adapter, DeliveryError, ExternalRef, RemoteTicket, Target, TicketState, mapped,
};
use crate::incident::{Incident, TimelineEntry};
use crate::secret::Secret;

/// Jira's own priority names in its default scheme, for P1..P5.
pub const DEFAULT_PRIORITIES: [&str; 5] = ["Highest", "High", "Medium", "Low", "Lowest"];
/// `summary` longer than this is refused.
const SUMMARY_MAX_CHARS: usize = 255;
/// Text fields (description, comment bodies) are capped at 32,767 characters.
const TEXT_MAX_CHARS: usize = 32_767;
/// Prefix of the label that carries the incident id; fixed, since changing it
/// would lose every existing issue.
pub const ID_LABEL_PREFIX: &str = "incidentd-";

#[derive(Debug, Clone, Default)]
pub(crate) struct TransitionNames {
    pub acknowledged: Vec<String>,
    pub resolved: Vec<String>,
    pub closed: Vec<String>,
    pub reopen: Vec<String>,
}

pub struct Jira {
    /// The site root.
    base: reqwest::Url,
    email: String,
    token: Secret,
    project: String,
    issue_type: String,
    summary: Text,
    description: Text,
    priorities: BTreeMap<u8, String>,
    labels: Vec<String>,
    transitions: TransitionNames,
    resolution: String,
    extra_fields: Map<String, Value>,
}

/// A minimal ADF document: blank lines separate paragraphs, single newlines
/// become hard breaks. ADF refuses empty text nodes, so none are made.
pub fn adf(text: &str) -> Value {
    let normalized = text.replace("\r\n", "\n");
    let paragraphs: Vec<Value> = normalized
        .split("\n\n")
        .filter_map(|para| {
            let mut content = Vec::new();
            for line in para
                .lines()
                .map(str::trim_end)
                .filter(|l| !l.trim().is_empty())
            {
                if !content.is_empty() {
                    content.push(json!({"type": "hardBreak"}));
                }
                content.push(json!({"type": "text", "text": line}));
            }
            (!content.is_empty()).then(|| json!({"type": "paragraph", "content": content}))
        })
        .collect();
    json!({"type": "doc", "version": 1, "content": paragraphs})
}

/// The label that carries the incident id (labels cannot hold whitespace).
pub fn id_label(incident_id: &str) -> String {
    let label: String = format!("{ID_LABEL_PREFIX}{incident_id}")
        .chars()
        .map(|c| if c.is_whitespace() { '-' } else { c })
        .collect();
    label.chars().take(config::LABEL_MAX_CHARS).collect()
}

/// A JQL string literal.
fn jql_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Names the error in a 2xx body: an HTML page (an SSO or proxy login page
/// answers 200), something else that is not JSON, or Jira's error collection.
fn error_in_body(_status: u16, body: &[u8]) -> Option<String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let mut messages: Vec<String> = v["errorMessages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect();
            if let Some(errors) = v["errors"].as_object() {
                messages.extend(
                    errors
                        .iter()
                        .map(|(k, m)| format!("{k}: {}", m.as_str().unwrap_or_default())),
                );
            }
            (!messages.is_empty()).then(|| messages.join("; "))
        }
        Err(_) => {
            let head = String::from_utf8_lossy(&body[..body.len().min(512)]).to_ascii_lowercase();
            Some(if head.contains("<html") || head.contains("<!doctype") {
                "Jira answered with an HTML page (a login, SSO or proxy page?)".to_string()
            } else {
                "the response is not JSON".to_string()
            })
        }
    }
}

fn unexpected(what: &str) -> DeliveryError {
    DeliveryError::Transient {
        reason: format!("unexpected Jira response: {what}"),
        retry_after: None,
    }
}

/// The text of a comment for one timeline entry.
fn comment_text(e: &TimelineEntry) -> String {
    format!(
        "incidentd {} at {}: {}",
        e.event,
        e.at.to_rfc3339_opts(SecondsFormat::Secs, true),
        e.cause
    )
}

/// The status category a ticket state lives in.
fn category_of(to: TicketState) -> &'static str {
    match to {
        TicketState::Open => "new",
        TicketState::Acknowledged => "indeterminate",
        TicketState::Resolved | TicketState::Closed => "done",
    }
}

impl Jira {
    /// `<site>/rest/api/3/<segments...>`.
    fn api(&self, segments: &[&str]) -> Result<reqwest::Url, DeliveryError> {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| DeliveryError::permanent("the Jira URL cannot carry a path"))?
            .pop_if_empty()
            .extend(["rest", "api", "3"])
            .extend(segments);
        Ok(url)
    }

    fn request(
        &self,
        c: &reqwest::Client,
        method: reqwest::Method,
        url: reqwest::Url,
    ) -> reqwest::RequestBuilder {
        c.request(method, url)
            .header(reqwest::header::ACCEPT, "application/json")
            .basic_auth(&self.email, Some(self.token.expose()))
    }

    async fn call(
        &self,
        target: &Target,
        what: &str,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<&Value>,
    ) -> Result<Value, DeliveryError> {
        let reply = target
            .send(
                what,
                |c| {
                    let r = self.request(c, method.clone(), url.clone());
                    match body {
                        Some(b) => r.json(b),
                        None => r,
                    }
                },
                error_in_body,
            )
            .await?;
        reply.json()
    }

    fn summary(&self, inc: &Incident) -> String {
        let line = self
            .summary
            .render(inc)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        truncate(&line, SUMMARY_MAX_CHARS)
    }

    fn priority(&self, inc: &Incident) -> String {
        mapped(&self.priorities, inc.priority, &DEFAULT_PRIORITIES).to_string()
    }

    fn ext_ref(&self, key: &str) -> ExternalRef {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend(["browse", key]);
        }
        ExternalRef {
            id: key.to_string(),
            display: key.to_string(),
            url: Some(url.to_string()),
        }
    }

    fn names_for(&self, to: TicketState) -> &[String] {
        match to {
            TicketState::Open => &self.transitions.reopen,
            TicketState::Acknowledged => &self.transitions.acknowledged,
            TicketState::Resolved => &self.transitions.resolved,
            TicketState::Closed => &self.transitions.closed,
        }
    }

    /// The issue's status category key (`new`, `indeterminate`, `done`).
    async fn status_category(&self, target: &Target, key: &str) -> Result<String, DeliveryError> {
        let mut url = self.api(&["issue", key])?;
        url.query_pairs_mut().append_pair("fields", "status");
        let v = self
            .call(target, "read status", reqwest::Method::GET, url, None)
            .await?;
        v.pointer("/fields/status/statusCategory/key")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| unexpected("issue without a status category"))
    }

    async fn transition_inner(
        &self,
        target: &Target,
        ext: &ExternalRef,
        to: TicketState,
    ) -> Result<(), DeliveryError> {
        let mut url = self.api(&["issue", &ext.id, "transitions"])?;
        // With the fields of each transition's screen, to know whether resolution can be set.
        url.query_pairs_mut()
            .append_pair("expand", "transitions.fields");
        let v = self
            .call(target, "list transitions", reqwest::Method::GET, url, None)
            .await?;
        let available = v["transitions"]
            .as_array()
            .ok_or_else(|| unexpected("no transitions list"))?;
        let wanted = self.names_for(to);
        let matches = |t: &Value, name: &str| {
            [
                t["name"].as_str(),
                t.pointer("/to/name").and_then(Value::as_str),
            ]
            .into_iter()
            .flatten()
            .any(|n| n.eq_ignore_ascii_case(name.trim()))
        };
        let chosen = wanted
            .iter()
            .find_map(|name| available.iter().find(|t| matches(t, name)));
        let Some(chosen) = chosen else {
            // Already there (a person moved it, or an earlier attempt's response was lost).
            if self.status_category(target, &ext.id).await? == category_of(to) {
                return Ok(());
            }
            let listed: Vec<String> = available
                .iter()
                .map(|t| {
                    format!(
                        "{:?} (to {:?})",
                        t["name"].as_str().unwrap_or("?"),
                        t.pointer("/to/name").and_then(Value::as_str).unwrap_or("?")
                    )
                })
                .collect();
            return Err(DeliveryError::permanent(format!(
                "{}: no transition named {} for {}; available: {}",
                ext.display,
                wanted
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(" or "),
                match to {
                    TicketState::Open => "reopen",
                    TicketState::Acknowledged => "acknowledged",
                    TicketState::Resolved => "resolved",
                    TicketState::Closed => "closed",
                },
                if listed.is_empty() {
                    "none".to_string()
                } else {
                    listed.join(", ")
                }
            )));
        };
        let id = match &chosen["id"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(unexpected("transition without id")),
        };
        let mut body = json!({"transition": {"id": id}});
        let on_screen = chosen.pointer("/fields/resolution").is_some();
        if on_screen && matches!(to, TicketState::Resolved | TicketState::Closed) {
            body["fields"] = json!({"resolution": {"name": self.resolution}});
        }
        let url = self.api(&["issue", &ext.id, "transitions"])?;
        self.call(
            target,
            "transition",
            reqwest::Method::POST,
            url,
            Some(&body),
        )
        .await
        .map(|_| ())
    }
}

#[async_trait::async_trait]
impl Adapter for Jira {
    fn kind(&self) -> &'static str {
        "jira"
    }

    async fn find(
        &self,
        target: &Target,
        inc: &Incident,
    ) -> Result<Option<ExternalRef>, DeliveryError> {
        let label = id_label(&inc.id);
        let body = json!({
            // Bounded by project, as Jira asks; the oldest first so a duplicate
            // ever made is not the one kept.
            "jql": format!(
                "project = {} AND labels = {} ORDER BY created ASC",
                jql_string(&self.project),
                jql_string(&label)
            ),
            "fields": ["labels", "status"],
            "maxResults": 1,
        });
        let url = self.api(&["search", "jql"])?;
        let v = self
            .call(target, "find", reqwest::Method::POST, url, Some(&body))
            .await?;
        let issues = v["issues"]
            .as_array()
            .ok_or_else(|| unexpected("search without issues"))?;
        Ok(issues
            .iter()
            // Only an issue that really carries the label: a JQL the site read
            // differently must not adopt someone else's issue.
            .find(|i| {
                i.pointer("/fields/labels")
                    .and_then(Value::as_array)
                    .is_some_and(|ls| ls.iter().any(|l| l.as_str() == Some(label.as_str())))
            })
            .and_then(|i| i["key"].as_str())
            .map(|key| self.ext_ref(key)))
    }

    async fn create(&self, target: &Target, inc: &Incident) -> Result<ExternalRef, DeliveryError> {
        let mut labels = self.labels.clone();
        labels.push(id_label(&inc.id));
        let mut fields = self.extra_fields.clone();
        fields.insert("project".into(), json!({"key": self.project}));
        fields.insert("issuetype".into(), json!({"name": self.issue_type}));
        fields.insert("summary".into(), Value::String(self.summary(inc)));
        fields.insert(
            "description".into(),
            adf(&truncate(&self.description.render(inc), TEXT_MAX_CHARS)),
        );
        fields.insert("priority".into(), json!({"name": self.priority(inc)}));
        fields.insert("labels".into(), json!(labels));
        let body = json!({"fields": fields});
        let url = self.api(&["issue"])?;
        let v = self
            .call(target, "create", reqwest::Method::POST, url, Some(&body))
            .await?;
        let key = v["key"]
            .as_str()
            .ok_or_else(|| unexpected("created issue without key"))?;
        Ok(self.ext_ref(key))
    }

    async fn update(
        &self,
        target: &Target,
        inc: &Incident,
        ext: &ExternalRef,
        new_entries: &[TimelineEntry],
    ) -> Result<(), DeliveryError> {
        let mut url = self.api(&["issue", &ext.id])?;
        url.query_pairs_mut()
            .append_pair("fields", "summary,priority");
        let current = self
            .call(target, "read fields", reqwest::Method::GET, url, None)
            .await?;
        let (summary, priority) = (self.summary(inc), self.priority(inc));
        let mut changed = Map::new();
        if current.pointer("/fields/summary").and_then(Value::as_str) != Some(summary.as_str()) {
            changed.insert("summary".into(), Value::String(summary));
        }
        if current
            .pointer("/fields/priority/name")
            .and_then(Value::as_str)
            != Some(priority.as_str())
        {
            changed.insert("priority".into(), json!({"name": priority}));
        }
        if !changed.is_empty() {
            let url = self.api(&["issue", &ext.id])?;
            let body = json!({"fields": changed});
            self.call(
                target,
                "update fields",
                reqwest::Method::PUT,
                url,
                Some(&body),
            )
            .await?;
        }
        for e in new_entries {
            let url = self.api(&["issue", &ext.id, "comment"])?;
            let body = json!({"body": adf(&truncate(&comment_text(e), TEXT_MAX_CHARS))});
            self.call(target, "comment", reqwest::Method::POST, url, Some(&body))
                .await?;
        }
        Ok(())
    }

    async fn transition(
        &self,
        target: &Target,
        _inc: &Incident,
        ext: &ExternalRef,
        to: TicketState,
    ) -> Result<(), DeliveryError> {
        match self.transition_inner(target, ext, to).await {
            // Nothing left to resolve or close.
            Err(e)
                if matches!(to, TicketState::Resolved | TicketState::Closed)
                    && e.status() == Some(404) =>
            {
                Ok(())
            }
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
        let mut url = self.api(&["issue", &ext.id])?;
        url.query_pairs_mut()
            .append_pair("fields", "status,assignee");
        let v = self
            .call(target, "fetch", reqwest::Method::GET, url, None)
            .await?;
        let category = v
            .pointer("/fields/status/statusCategory/key")
            .and_then(Value::as_str)
            .ok_or_else(|| unexpected("issue without a status category"))?;
        let state = match category {
            "indeterminate" => TicketState::Acknowledged,
            "done" => TicketState::Resolved,
            // `new`, and `undefined` (a status without a category).
            _ => TicketState::Open,
        };
        let assignee = v.pointer("/fields/assignee");
        let changed_by = assignee
            .and_then(|a| {
                a["displayName"]
                    .as_str()
                    .or_else(|| a["accountId"].as_str())
            })
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        Ok(Some(RemoteTicket { state, changed_by }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adf_makes_paragraphs_and_hard_breaks_without_empty_text() {
        let doc = adf("first line\nsecond line\n\n\n\nnext paragraph\n");
        assert_eq!(doc["type"], "doc");
        assert_eq!(doc["version"], 1);
        let paras = doc["content"].as_array().unwrap();
        assert_eq!(paras.len(), 2);
        assert_eq!(paras[0]["content"][1]["type"], "hardBreak");
        assert_eq!(paras[1]["content"][0]["text"], "next paragraph");
        assert_eq!(adf("")["content"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn labels_and_jql_literals_are_safe() {
        assert_eq!(id_label("inc-1 2"), "incidentd-inc-1-2");
        assert_eq!(jql_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn html_or_error_collections_in_a_2xx_are_errors() {
        assert!(error_in_body(200, b"<!DOCTYPE html><html>log in</html>").is_some());
        assert!(error_in_body(200, br#"{"errorMessages":["nope"],"errors":{}}"#).is_some());
        assert!(error_in_body(204, b"").is_none());
        assert!(error_in_body(201, br#"{"id":"1","key":"OPS-1"}"#).is_none());
    }
}
