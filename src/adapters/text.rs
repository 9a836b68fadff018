//! Text-field templates adapters use for vendor fields (`short_description`,
//! `summary`, ...): minijinja, compiled once at config load, rendered with the
//! incident as `incident` (the same JSON the REST API returns).

use std::sync::Arc;

use crate::config::Problems;
use crate::incident::Incident;

/// A compiled text template.
#[derive(Clone)]
pub struct Text {
    env: Arc<minijinja::Environment<'static>>,
    source: String,
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Text({:?})", self.source)
    }
}

impl Text {
    /// Compiles `source` (configured at `key`), recording a problem on a syntax error.
    pub fn compile(source: &str, key: &str, p: &mut Problems<'_>) -> Option<Text> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        match env.add_template_owned("t".to_string(), source.to_string()) {
            Ok(()) => Some(Text {
                env: Arc::new(env),
                source: source.to_string(),
            }),
            Err(e) => {
                p.at(key, format!("template: {e}"));
                None
            }
        }
    }

    /// Renders for `inc`; a render error gives a marked text rather than no ticket.
    pub fn render(&self, inc: &Incident) -> String {
        let out = self
            .env
            .get_template("t")
            .and_then(|t| t.render(minijinja::context! { incident => minijinja::Value::from(minijinja::value::Serde(inc)) }));
        match out {
            Ok(s) => s,
            Err(e) => format!("<template error: {e}>"),
        }
    }
}

/// Truncates to at most `max` characters (vendors cap field lengths and refuse
/// longer values), marking the cut with an ellipsis.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
