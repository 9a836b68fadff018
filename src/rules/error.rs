//! Rule-file errors: each one placed at file:line:col with a stable code, so
//! an SRE can grep the README for the code and CI output stays diffable.

use std::fmt;
use std::path::PathBuf;

/// The stable error codes. Numbers are never reused or renumbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Code {
    Yaml,
    UnknownField,
    DuplicateName,
    Matcher,
    Regex,
    Expression,
    Template,
    Level,
    Timezone,
    Maintenance,
    InvalidValue,
    Action,
    PriorityMatrix,
    Read,
    Inhibit,
    InhibitSource,
    Major,
}

impl Code {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Code::Yaml => "E001",
            Code::UnknownField => "E002",
            Code::DuplicateName => "E003",
            Code::Matcher => "E004",
            Code::Regex => "E005",
            Code::Expression => "E006",
            Code::Template => "E007",
            Code::Level => "E008",
            Code::Timezone => "E009",
            Code::Maintenance => "E010",
            Code::InvalidValue => "E011",
            Code::Action => "E012",
            Code::PriorityMatrix => "E013",
            Code::Read => "E014",
            Code::Inhibit => "E015",
            Code::InhibitSource => "E016",
            Code::Major => "E017",
        }
    }
}

/// One problem in a rule file. `line` and `column` are 1-based; `line` is 0
/// when the problem concerns the whole file (it could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub code: &'static str,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": {} {}", self.code, self.message)
    }
}

/// Every problem found across all rule files, sorted by file then position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}
