//! `${VAR}` and `${VAR:-default}` interpolation of a config file's text, done
//! before YAML parsing (as Vector and docker compose do). `$$` writes a literal
//! `$`. Comment lines are left alone, so documenting `${VAR}` costs nothing.

/// Replaces every reference using `lookup`; returns all unresolved references
/// as `(line, message)` rather than stopping at the first.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<(usize, String)>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    errors.push((n + 1, "unclosed `${` in variable reference".to_string()));
                    rest = "";
                    break;
                };
                let reference = &body[..end];
                let (name, default) = match reference.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (reference, None),
                };
                if !valid_name(name) {
                    errors.push((
                        n + 1,
                        format!("`${{{reference}}}` is not a valid variable reference"),
                    ));
                } else {
                    // `:-` also covers a variable that is set but empty, as in shells.
                    let value = lookup(name).filter(|v| !v.is_empty() || default.is_none());
                    match (value, default) {
                        (Some(v), _) => out.push_str(&v),
                        (None, Some(d)) => out.push_str(d),
                        (None, None) => errors.push((
                            n + 1,
                            format!("environment variable {name} is not set (use ${{{name}:-default}} for a default)"),
                        )),
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn set_unset_default_and_escape() {
        let text = "a: ${SET}\nb: ${UNSET:-dflt}\nc: $$HOME\nd: ${EMPTY:-x}\ne: cost $5\n";
        assert_eq!(
            interpolate(text, env).unwrap(),
            "a: value\nb: dflt\nc: $HOME\nd: x\ne: cost $5\n"
        );
    }

    #[test]
    fn every_unset_variable_is_reported_with_its_line() {
        let errs = interpolate(
            "a: ${NOPE}\n# ${IN_COMMENT}\nb: ${ALSO_NOPE}\nc: ${bad-name}\n",
            env,
        )
        .unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![1, 3, 4]);
        assert!(errs[0].1.contains("NOPE is not set"));
    }

    #[test]
    fn unclosed_reference_is_an_error() {
        assert!(interpolate("a: ${OPEN\n", env).is_err());
    }
}
