//! Where each key of a YAML document sits, so errors found after parsing can still name
//! `file:line:column`.
//!
//! serde reports a key path (`policy.max_instances`, `resources[1].kind`) for decoding
//! errors, and semantic checks know the path they are checking; this map turns either into
//! a position in the source.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, Parser};

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Key path to location, for one YAML document.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    keys: HashMap<String, Location>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

impl SourceMap {
    /// Builds the map of a document. A document that does not parse yields an empty map:
    /// the YAML decoder reports that error with its own position.
    pub fn build(source: &str) -> SourceMap {
        let mut keys = HashMap::new();
        let mut parser = Parser::new_from_str(source);
        let mut stack: Vec<Frame> = Vec::new();
        while let Ok((event, mark)) = parser.next_token() {
            // yaml-rust2 counts lines from 1 and columns from 0.
            let here = Location {
                line: mark.line(),
                column: mark.col() + 1,
            };
            // The path of the node this event starts, when it is a value (not a key).
            let value_path =
                |stack: &mut Vec<Frame>, keys: &mut HashMap<String, Location>| match stack
                    .last_mut()
                {
                    Some(Frame::Map { path, key }) => key.take().map(|k| join(path, &k)),
                    Some(Frame::Seq { path, index }) => {
                        let p = format!("{path}[{index}]");
                        *index += 1;
                        keys.entry(p.clone()).or_insert(here);
                        Some(p)
                    }
                    None => Some(String::new()),
                };
            match event {
                Event::StreamEnd => break,
                Event::Scalar(text, ..) => {
                    if let Some(Frame::Map { path, key }) = stack.last_mut() {
                        if key.is_none() {
                            let p = join(path, &text);
                            keys.entry(p).or_insert(here);
                            *key = Some(text);
                            continue;
                        }
                    }
                    value_path(&mut stack, &mut keys);
                }
                Event::Alias(_) => {
                    value_path(&mut stack, &mut keys);
                }
                Event::MappingStart(..) => {
                    let path = value_path(&mut stack, &mut keys).unwrap_or_default();
                    stack.push(Frame::Map { path, key: None });
                }
                Event::SequenceStart(..) => {
                    let path = value_path(&mut stack, &mut keys).unwrap_or_default();
                    stack.push(Frame::Seq { path, index: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        SourceMap { keys }
    }

    /// Position of the key at `path`, or of its nearest ancestor that is in the file.
    pub fn locate(&self, path: &str) -> Option<Location> {
        let mut p = path;
        loop {
            if let Some(loc) = self.keys.get(p) {
                return Some(*loc);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// Whether the file spells out `path` itself.
    pub fn contains(&self, path: &str) -> bool {
        self.keys.contains_key(path)
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "name: x\npolicy:\n  min_instances: 3\n  max_instances: 4\nresources:\n  - kind: key_pair\n    name: a\n  - {kind: sg, name: b}\ntags: [a, b]\n";

    #[test]
    fn keys_nested_in_maps_and_sequences_are_located() {
        let m = SourceMap::build(DOC);
        assert_eq!(m.locate("name"), Some(Location { line: 1, column: 1 }));
        assert_eq!(
            m.locate("policy.max_instances"),
            Some(Location { line: 4, column: 3 })
        );
        assert_eq!(
            m.locate("resources[0].name"),
            Some(Location { line: 7, column: 5 })
        );
        assert_eq!(
            m.locate("resources[1].kind"),
            Some(Location { line: 8, column: 6 })
        );
        assert_eq!(
            m.locate("resources[1]"),
            Some(Location { line: 8, column: 5 })
        );
    }

    #[test]
    fn unknown_paths_fall_back_to_the_nearest_ancestor() {
        let m = SourceMap::build(DOC);
        assert_eq!(
            m.locate("policy.idle_count"),
            Some(Location { line: 2, column: 1 })
        );
        assert_eq!(m.locate("nothing.here"), None);
    }

    #[test]
    fn broken_documents_give_an_empty_map_not_a_panic() {
        let m = SourceMap::build("a: [1, 2\nb: {");
        assert_eq!(m.locate("b"), None);
    }
}
