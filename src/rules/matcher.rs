//! Alertmanager-style label matchers: `name="v"`, `name!="v"`, `name=~"re"`,
//! `name!~"re"`. As in Alertmanager, a missing label matches as the empty
//! string and regexes are fully anchored.

use std::collections::BTreeMap;

use regex::Regex;

use super::error::Code;

#[derive(Debug)]
pub(super) struct Matcher {
    name: String,
    op: Op,
}

#[derive(Debug)]
enum Op {
    Eq(String),
    Ne(String),
    Re(Regex),
    NotRe(Regex),
}

impl Matcher {
    /// Parses `name OP value`; the value may be double-quoted (`\"` and `\\`
    /// are escapes, any other backslash is kept so regexes read naturally).
    pub(super) fn parse(text: &str) -> Result<Matcher, (Code, String)> {
        let bad = |why: &str| (Code::Matcher, format!("bad matcher {text:?}: {why}"));
        let s = text.trim();
        let name_len = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let name = &s[..name_len];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(bad("expected a label name first"));
        }
        let rest = s[name_len..].trim_start();
        let (op, rest) = ["=~", "!~", "!=", "="]
            .iter()
            .find_map(|op| rest.strip_prefix(op).map(|r| (*op, r.trim())))
            .ok_or_else(|| bad("expected one of = != =~ !~ after the label name"))?;
        let value = match rest.strip_prefix('"') {
            Some(quoted) => unquote(quoted).map_err(&bad)?,
            None if rest.contains('"') => return Err(bad("stray quote in unquoted value")),
            None => rest.to_string(),
        };
        let op = match op {
            "=" => Op::Eq(value),
            "!=" => Op::Ne(value),
            _ => {
                // Anchored like Alertmanager: `=~"crit"` must not match "critical".
                let re = Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                    // regex's message spans several lines; its last names the problem.
                    let msg = e.to_string();
                    let why = msg
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim_start_matches("error: ");
                    (
                        Code::Regex,
                        format!("bad regex {value:?} in matcher {text:?}: {why}"),
                    )
                })?;
                if op == "=~" {
                    Op::Re(re)
                } else {
                    Op::NotRe(re)
                }
            }
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
        })
    }

    pub(super) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        match &self.op {
            Op::Eq(want) => v == want,
            Op::Ne(want) => v != want,
            Op::Re(re) => re.is_match(v),
            Op::NotRe(re) => !re.is_match(v),
        }
    }
}

/// The body of a double-quoted value, after its opening quote.
fn unquote(s: &str) -> Result<String, &'static str> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' if chars.as_str().trim().is_empty() => return Ok(out),
            '"' => return Err("unexpected text after the closing quote"),
            '\\' => match chars.next() {
                Some(e @ ('"' | '\\')) => out.push(e),
                Some(e) => {
                    out.push('\\');
                    out.push(e);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("missing closing quote")
}

/// True when every matcher holds (so an empty list matches everything).
pub(super) fn all_match(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn holds(matcher: &str, pairs: &[(&str, &str)]) -> bool {
        Matcher::parse(matcher).unwrap().matches(&labels(pairs))
    }

    #[test]
    fn equality_and_inequality_compare_whole_values() {
        assert!(holds(
            r#"alertname="TargetDown""#,
            &[("alertname", "TargetDown")]
        ));
        assert!(!holds(
            r#"alertname="Target""#,
            &[("alertname", "TargetDown")]
        ));
        assert!(holds(r#"env!="prod""#, &[("env", "dev")]));
        assert!(!holds(r#"env!="prod""#, &[("env", "prod")]));
    }

    #[test]
    fn regex_is_fully_anchored() {
        assert!(holds(
            r#"severity=~"critical|page""#,
            &[("severity", "page")]
        ));
        assert!(!holds(r#"severity=~"crit""#, &[("severity", "critical")]));
        assert!(!holds(
            r#"severity=~"critical|page""#,
            &[("severity", "xpage")]
        ));
        assert!(holds(r#"severity=~"crit.*""#, &[("severity", "critical")]));
    }

    #[test]
    fn negative_regex_holds_when_the_anchored_regex_does_not() {
        assert!(holds(r#"namespace!~"dev-.*""#, &[("namespace", "prod")]));
        assert!(!holds(r#"namespace!~"dev-.*""#, &[("namespace", "dev-1")]));
        assert!(holds(r#"namespace!~"dev""#, &[("namespace", "dev-1")]));
    }

    #[test]
    fn missing_label_matches_as_empty_string() {
        assert!(holds(r#"env="""#, &[]));
        assert!(holds(r#"env!="prod""#, &[]));
        assert!(!holds(r#"env=~".+""#, &[]));
    }

    #[test]
    fn unquoted_values_spaces_and_escapes_are_accepted() {
        assert!(holds(
            "alertname = TargetDown",
            &[("alertname", "TargetDown")]
        ));
        assert!(holds(r#"msg="say \"hi\"""#, &[("msg", r#"say "hi""#)]));
        assert!(holds(r#"instance=~"\d+\.\d+""#, &[("instance", "10.5")]));
    }

    #[test]
    fn malformed_matchers_are_e004_and_bad_regexes_e005() {
        for bad in [
            "=x",
            "alertname",
            "alertname~x",
            r#"a="x"y"#,
            r#"a="x"#,
            "9a=x",
        ] {
            let (code, msg) = Matcher::parse(bad).unwrap_err();
            assert_eq!(code, Code::Matcher, "{bad}: {msg}");
        }
        let (code, msg) = Matcher::parse(r#"a=~"(x""#).unwrap_err();
        assert_eq!(code, Code::Regex);
        assert!(msg.contains("unclosed group"), "{msg}");
    }
}
