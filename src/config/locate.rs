//! Finds the line of a key path (`sources.webhook.generic.bearer_token`) in a
//! block-style YAML file, so validation errors found after parsing can still
//! point at file:line. Flow-style mappings are not followed; the nearest block
//! ancestor's line is returned for them.

pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut best: Option<(usize, usize)> = None; // (depth matched, line)
    for (n, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        let mut item = trimmed;
        // A list item's mapping keys sit two columns to the right of its dash.
        while let Some(rest) = item.strip_prefix("- ") {
            indent += 2;
            item = rest.trim_start();
        }
        let Some((key, _)) = item.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        let depth = stack
            .iter()
            .zip(path)
            .take_while(|((_, k), p)| k == *p)
            .count();
        if depth == stack.len() && best.is_none_or(|(d, _)| depth > d) {
            best = Some((depth, n + 1));
            if depth == path.len() {
                break;
            }
        }
    }
    best.map(|(_, line)| line)
}

/// The line of `field` in the item of top-level list `list` whose `name:` is
/// `name` (`heartbeats`, `watchdog`, `interval_s`); the item's `name:` line when
/// the field is not written (or `field` is `None`); else the list's line.
pub fn line_of_item(text: &str, list: &str, name: &str, field: Option<&str>) -> Option<usize> {
    let mut in_list = false;
    let mut item: Option<(usize, usize)> = None; // (key indent, name line)
    for (n, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = raw.len() - trimmed.len();
        if indent == 0 {
            if item.is_some() {
                break;
            }
            in_list = trimmed
                .split_once(':')
                .is_some_and(|(k, _)| k.trim() == list);
            continue;
        }
        if !in_list {
            continue;
        }
        let (key_indent, body) = match trimmed.strip_prefix("- ") {
            Some(rest) => (
                indent + 2 + (rest.len() - rest.trim_start().len()),
                rest.trim_start(),
            ),
            None => (indent, trimmed),
        };
        let Some((key, value)) = body.split_once(':') else {
            continue;
        };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        match item {
            None if key.trim() == "name" && value == name => {
                if field.is_none() {
                    return Some(n + 1);
                }
                item = Some((key_indent, n + 1));
            }
            Some((ki, line)) if trimmed.starts_with("- ") || key_indent < ki => return Some(line),
            Some((ki, _)) if key_indent == ki && Some(key.trim()) == field => return Some(n + 1),
            _ => {}
        }
    }
    item.map(|(_, line)| line)
        .or_else(|| line_of(text, &[list]))
}

#[cfg(test)]
mod tests {
    use super::{line_of, line_of_item};

    #[test]
    fn finds_fields_of_named_list_items() {
        let doc = "log: x\nheartbeats:\n  - name: a\n    interval_s: 1\n  - name: \"b\"\n    match: [x]\n    interval_s: 0\nsla: {}\n";
        assert_eq!(
            line_of_item(doc, "heartbeats", "b", Some("interval_s")),
            Some(7)
        );
        assert_eq!(
            line_of_item(doc, "heartbeats", "a", Some("interval_s")),
            Some(4)
        );
        assert_eq!(line_of_item(doc, "heartbeats", "a", Some("route")), Some(3));
        assert_eq!(line_of_item(doc, "heartbeats", "b", None), Some(5));
        assert_eq!(line_of_item(doc, "heartbeats", "zz", None), Some(2));
    }

    const DOC: &str = "http:\n  listen: x\nstore:\n  # c\n  url: memory\nsources:\n  webhook:\n    generic:\n      bearer_token: t\n";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(line_of(DOC, &["store", "url"]), Some(5));
        assert_eq!(
            line_of(DOC, &["sources", "webhook", "generic", "bearer_token"]),
            Some(9)
        );
    }

    #[test]
    fn falls_back_to_deepest_ancestor() {
        assert_eq!(line_of(DOC, &["store", "missing"]), Some(3));
        assert_eq!(line_of(DOC, &["nowhere"]), None);
    }
}
