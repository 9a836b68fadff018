//! The text fields of an incident (`title`, `description`, ...) as minijinja
//! templates: parsed when rules load, so a syntax error stops the load, and
//! rendered per alert without ever failing the caller.

use minijinja::{AutoEscape, Environment, Value, context};

use crate::alert::Alert;

/// One rule's templates, keyed by field name.
#[derive(Debug)]
pub(super) struct Templates(Environment<'static>);

impl Templates {
    pub(super) fn new() -> Templates {
        let mut env = Environment::new();
        // Incident fields are plain text; escaping must not depend on a
        // template's name looking like `x.html`.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        // Lenient (the default): an undefined value such as a missing label
        // renders as the empty string.
        Templates(env)
    }

    pub(super) fn add(&mut self, field: &'static str, source: &str) -> Result<(), String> {
        self.0
            .add_template_owned(field, source.to_string())
            .map_err(|e| e.to_string())
    }

    /// Renders `field`, or `None` if the rule did not set it. A render error
    /// becomes the text of the field, so an incident is still opened and the
    /// mistake is visible in it.
    pub(super) fn render(&self, field: &str, ctx: &Value) -> Option<String> {
        let tmpl = self.0.get_template(field).ok()?;
        Some(
            tmpl.render(ctx)
                .unwrap_or_else(|e| format!("<template error: {e}>")),
        )
    }
}

/// The variables a template sees.
pub(super) fn context(rule: &str, alert: &Alert, alert_count: usize) -> Value {
    context! {
        labels => Value::from(alert.labels.clone()),
        annotations => Value::from(alert.annotations.clone()),
        status => alert.status.as_str(),
        severity => alert.severity.as_deref().unwrap_or(""),
        fingerprint => alert.fingerprint.as_str(),
        source => alert.source.as_str(),
        starts_at => alert.starts_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        alert_count => alert_count,
        rule => rule,
    }
}
