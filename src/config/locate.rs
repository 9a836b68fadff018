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

#[cfg(test)]
mod tests {
    use super::line_of;

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
