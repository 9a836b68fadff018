//! A rule file as written, deserialized with unknown fields refused. Only the
//! shape is checked here; `compile` checks the contents.

use std::path::Path;

use serde::Deserialize;

use super::error::{Code, RuleError};
use super::incident::RawIncident;
use super::maintenance::RawMaintenance;
use super::priority::RawMatrix;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) rules: Vec<RawRule>,
    #[serde(default)]
    pub(super) maintenance: Vec<RawMaintenance>,
    pub(super) priority_matrix: Option<RawMatrix>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) name: String,
    #[serde(rename = "match", default)]
    pub(super) matchers: Vec<String>,
    pub(super) expr: Option<String>,
    #[serde(rename = "continue", default)]
    pub(super) cont: bool,
    pub(super) action: Option<RawAction>,
    pub(super) incident: Option<RawIncident>,
    #[serde(default)]
    pub(super) inhibits: Vec<super::inhibit::RawInhibit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawAction {
    Drop,
    Suppress,
    Incident,
}

/// Parses one file. serde stops at the first problem, so a file yields at
/// most one error here.
pub(super) fn parse(file: &Path, text: &str) -> Result<RawFile, RuleError> {
    // An empty or comments-only file is an empty rule file, not an error.
    let parsed = serde_norway::from_str::<Option<RawFile>>(text);
    let e = match parsed {
        Ok(raw) => return Ok(raw.unwrap_or_default()),
        Err(e) => e,
    };
    let message = strip_locations(&e.to_string());
    // Tell broken YAML from YAML of the wrong shape: only the former fails
    // to load as a plain value.
    let code = if serde_norway::from_str::<serde_norway::Value>(text).is_err() {
        Code::Yaml
    } else if message.contains("unknown field") {
        Code::UnknownField
    } else {
        Code::InvalidValue
    };
    let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
    Err(RuleError {
        file: file.to_path_buf(),
        line,
        column,
        code: code.as_str(),
        message,
    })
}

/// Removes serde_norway's ` at line N column M`, which the error prefix
/// already carries.
fn strip_locations(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " at line ".len()..];
        let after = after.trim_start_matches(|c: char| c.is_ascii_digit());
        rest = match after.strip_prefix(" column ") {
            Some(col) => col.trim_start_matches(|c: char| c.is_ascii_digit()),
            None => {
                out.push_str(" at line ");
                &rest[i + " at line ".len()..]
            }
        };
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> RuleError {
        parse(Path::new("r.yaml"), text).unwrap_err()
    }

    #[test]
    fn empty_and_comment_only_files_have_no_rules() {
        for text in ["", "\n", "# nothing yet\n"] {
            let raw = parse(Path::new("r.yaml"), text).unwrap();
            assert!(raw.rules.is_empty() && raw.maintenance.is_empty());
        }
    }

    #[test]
    fn yaml_syntax_error_is_e001_at_its_position() {
        let e = err("rules:\n  - name: a\n   bad: [\n");
        assert_eq!(e.code, "E001", "{e}");
        assert_eq!(e.line, 3, "{e}");
        assert!(!e.message.contains("at line"), "{e}");
    }

    #[test]
    fn unknown_field_is_e002_at_the_field() {
        let e = err("rules:\n  - name: a\n    action: drop\n    contnue: true\n");
        assert_eq!((e.code, e.line, e.column), ("E002", 4, 5), "{e}");
        assert!(e.message.contains("unknown field `contnue`"), "{e}");
    }

    #[test]
    fn wrong_type_or_missing_field_is_e011() {
        assert_eq!(err("rules:\n  - name: a\n    action: dorp\n").code, "E011");
        assert_eq!(err("rules:\n  - action: drop\n").code, "E011");
        assert_eq!(err("rules: 3\n").code, "E011");
    }
}
