//! Where each value sits in a rule file, so problems found after serde has
//! parsed the file (a bad regex in the third matcher of the fifth rule) can
//! still be reported at line:column.
//!
//! serde_norway does not expose positions for successfully parsed values, so
//! the text is walked once more with yaml-rust2's event parser, which reports
//! a marker for every node, block or flow style alike. Values are keyed by
//! their dotted path: `rules.4.match.2`, `maintenance.0.timezone`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    const START: Pos = Pos { line: 1, column: 1 };

    fn of(mark: Marker) -> Pos {
        // yaml-rust2 counts lines from 1 but columns from 0.
        Pos {
            line: mark.line(),
            column: mark.col() + 1,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Positions(HashMap<String, Pos>);

impl Positions {
    /// Indexes `text`. Text that serde_norway accepted but yaml-rust2 does not
    /// yields a partial index; lookups then fall back to an ancestor or 1:1.
    pub(crate) fn index(text: &str) -> Positions {
        let mut walker = Walker::default();
        // A parse error only truncates the index; see above.
        let _ = Parser::new_from_str(text).load(&mut walker, false);
        Positions(walker.positions)
    }

    /// The position of the value at `path`, else of its nearest indexed
    /// ancestor, else the start of the file.
    pub(crate) fn get(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.0.get(p) {
                return *pos;
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => return Pos::START,
            }
        }
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<(String, Marker)>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    positions: HashMap<String, Pos>,
}

fn join(path: &str, segment: &str) -> String {
    if path.is_empty() {
        segment.to_string()
    } else {
        format!("{path}.{segment}")
    }
}

impl Walker {
    /// Handles a scalar or the start of a collection. Returns the path of the
    /// node if it is a value, `None` if it was a mapping key.
    fn node(&mut self, key_text: Option<&str>, mark: Marker, collection: bool) -> Option<String> {
        let (path, at) = match self.stack.last_mut() {
            None => (String::new(), mark),
            Some(Frame::Seq { path, next }) => {
                *next += 1;
                (join(path, &(*next - 1).to_string()), mark)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                None => {
                    *key = Some((key_text.unwrap_or_default().to_string(), mark));
                    return None;
                }
                // A nested block is reported at its key; a scalar at its value.
                Some((k, key_mark)) => (join(path, &k), if collection { key_mark } else { mark }),
            },
        };
        self.positions.insert(path.clone(), Pos::of(at));
        Some(path)
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, ..) => {
                self.node(Some(&text), mark, false);
            }
            Event::Alias(_) => {
                self.node(None, mark, false);
            }
            // A collection used as a mapping key (`? [a]: b`) still needs its
            // frame so that its end event pops the right one; its contents are
            // indexed under `?`, where no rule field lives.
            Event::MappingStart(..) => {
                let path = self.node(None, mark, true).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.node(None, mark, true).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
rules:
  - name: a
    match:
      - alertname=\"X\"
      - 'severity=~\"critical\"'
  - name: b
    match: [a=\"1\", b=\"2\"]
    incident:
      title: t
";

    fn at(path: &str) -> (usize, usize) {
        let p = Positions::index(DOC).get(path);
        (p.line, p.column)
    }

    #[test]
    fn block_list_items_are_found_at_their_value() {
        assert_eq!(at("rules.0.match.0"), (4, 9));
        assert_eq!(at("rules.0.match.1"), (5, 9));
        assert_eq!(at("rules.1.name"), (6, 11));
    }

    #[test]
    fn flow_list_items_are_found_on_their_line() {
        assert_eq!(at("rules.1.match.1"), (7, 20));
    }

    #[test]
    fn nested_blocks_are_found_at_their_key() {
        assert_eq!(at("rules.1.incident"), (8, 5));
        assert_eq!(at("rules.1.incident.title"), (9, 14));
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        assert_eq!(at("rules.1.incident.impact"), (8, 5));
        assert_eq!(at("nowhere.at.all"), (1, 1));
    }
}
