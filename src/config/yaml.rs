//! A positioned YAML tree, built from `saphyr-parser` events.
//!
//! We build our own tree rather than deserialising straight into structs so the
//! config reader can report *every* problem at once, each with its line and
//! column, and so `--set` overrides merge into the same tree. Aliases are
//! expanded here under a node budget: a "billion laughs" document is refused
//! instead of exhausting memory.

use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Most nodes a document may expand to (aliases included).
pub const MAX_NODES: usize = 100_000;
/// Deepest nesting we accept; configs are a few levels deep.
pub const MAX_DEPTH: usize = 64;

/// Where a value came from: a place in the config file or a `--set` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File { line: usize, col: usize },
    Set(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { line, col } => write!(f, "{line}:{col}"),
            Origin::Set(arg) => write!(f, "--set {arg}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar's text; `quoted` scalars are always strings.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Keys are plain strings (YAML allows complex keys; configs do not).
    Map(Vec<(String, Node)>),
}

impl Node {
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, quoted: false } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Parses one YAML document. An empty document is `None`.
pub fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    let mut builder = Builder::default();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| YamlError {
            line: e.marker().line(),
            col: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        builder.push(event, span)?;
    }
    Ok(builder.root)
}

/// Turns the event stream into a tree. Containers under construction live on a stack.
#[derive(Default)]
struct Builder {
    stack: Vec<Partial>,
    /// Anchored nodes by anchor id, for aliases.
    anchors: Vec<(usize, Node)>,
    root: Option<Node>,
    nodes: usize,
    documents: usize,
}

struct Partial {
    node: Node,
    anchor: usize,
    /// For mappings: the key read, waiting for its value.
    pending_key: Option<Node>,
}

fn origin(span: &Span) -> Origin {
    Origin::File {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

impl Builder {
    fn err(span: &Span, message: impl Into<String>) -> YamlError {
        YamlError {
            line: span.start.line(),
            col: span.start.col() + 1,
            message: message.into(),
        }
    }

    fn count(&mut self, added: usize, span: &Span) -> Result<(), YamlError> {
        self.nodes += added;
        if self.nodes > MAX_NODES {
            return Err(Self::err(
                span,
                format!(
                    "the document expands to more than {MAX_NODES} values (aliases that repeat aliases?); refusing to read it"
                ),
            ));
        }
        Ok(())
    }

    fn push(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Self::err(
                        &span,
                        "a config file holds one YAML document; found a second `---`",
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                refuse_tag(tag.as_deref(), &span)?;
                self.count(1, &span)?;
                let node = Node {
                    value: Value::Scalar {
                        text: text.into_owned(),
                        quoted: !matches!(style, ScalarStyle::Plain),
                    },
                    origin: origin(&span),
                };
                if anchor > 0 {
                    self.anchors.push((anchor, node.clone()));
                }
                self.add(node, &span)?;
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                refuse_tag(tag.as_deref(), &span)?;
                self.count(1, &span)?;
                if self.stack.len() >= MAX_DEPTH {
                    return Err(Self::err(
                        &span,
                        format!("nesting deeper than {MAX_DEPTH} levels"),
                    ));
                }
                let value = if matches!(event, Event::SequenceStart(..)) {
                    Value::Seq(Vec::new())
                } else {
                    Value::Map(Vec::new())
                };
                self.stack.push(Partial {
                    node: Node {
                        value,
                        origin: origin(&span),
                    },
                    anchor,
                    pending_key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(done) = self.stack.pop() {
                    if done.anchor > 0 {
                        self.anchors.push((done.anchor, done.node.clone()));
                    }
                    self.add(done.node, &span)?;
                }
            }
            Event::Alias(id) => {
                let Some(node) = self
                    .anchors
                    .iter()
                    .rev()
                    .find(|(anchor, _)| *anchor == id)
                    .map(|(_, node)| node.clone())
                else {
                    return Err(Self::err(&span, "alias to an unknown anchor"));
                };
                self.count(size(&node), &span)?;
                self.add(node, &span)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn add(&mut self, node: Node, span: &Span) -> Result<(), YamlError> {
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        match &mut parent.node.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match parent.pending_key.take() {
                None => parent.pending_key = Some(node),
                Some(key) => {
                    let Value::Scalar { text, .. } = key.value else {
                        return Err(Self::err(span, "mapping keys must be plain strings"));
                    };
                    if entries.iter().any(|(k, _)| *k == text) {
                        return Err(YamlError {
                            message: format!("duplicate key `{text}`"),
                            ..Self::err(span, "")
                        });
                    }
                    entries.push((text, node));
                }
            },
            Value::Scalar { .. } => unreachable!("scalars never hold children"),
        }
        Ok(())
    }
}

/// Tags (`!env X`, `!!binary ...`, `!!str 5`) would change what a value means
/// in ways this reader does not implement; silently dropping them sent outputs to
/// odd folders, so any tag is refused, by name.
fn refuse_tag(tag: Option<&saphyr_parser::Tag>, span: &Span) -> Result<(), YamlError> {
    let Some(tag) = tag else {
        return Ok(());
    };
    let shown = match tag.handle.as_str() {
        "!" => format!("!{}", tag.suffix),
        "tag:yaml.org,2002:" | "!!" => format!("!!{}", tag.suffix),
        handle => format!("{handle}{}", tag.suffix),
    };
    Err(Builder::err(
        span,
        format!(
            "YAML tags are not supported: found `{shown}`; write the value itself (quote it to make it text)"
        ),
    ))
}

fn size(node: &Node) -> usize {
    match &node.value {
        Value::Scalar { .. } => 1,
        Value::Seq(items) => 1 + items.iter().map(size).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|(_, v)| size(v)).sum::<usize>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let root = parse("a:\n  b: 3\n").unwrap().unwrap();
        let Value::Map(top) = &root.value else { panic!() };
        let Value::Map(inner) = &top[0].1.value else {
            panic!()
        };
        assert_eq!(inner[0].1.origin, Origin::File { line: 2, col: 6 });
    }

    #[test]
    fn quoted_scalars_are_marked() {
        let root = parse("a: '5'\nb: 5\n").unwrap().unwrap();
        let Value::Map(top) = &root.value else { panic!() };
        assert!(matches!(&top[0].1.value, Value::Scalar { quoted: true, .. }));
        assert!(matches!(&top[1].1.value, Value::Scalar { quoted: false, .. }));
    }

    #[test]
    fn aliases_expand() {
        let root = parse("a: &x [1, 2]\nb: *x\n").unwrap().unwrap();
        let Value::Map(top) = &root.value else { panic!() };
        assert_eq!(top[0].1.value, top[1].1.value);
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse(&doc).unwrap_err();
        assert!(err.message.contains("expands to more than"), "{err:?}");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.message, "duplicate key `a`");
    }

    #[test]
    fn tags_are_refused_by_name() {
        for (doc, tag) in [
            ("dir: !env OUT\n", "!env"),
            ("dir: !!binary aGVsbG8=\n", "!!binary"),
            ("a: !!map {b: 1}\n", "!!map"),
            ("a: !custom [1]\n", "!custom"),
        ] {
            let err = parse(doc).unwrap_err();
            assert!(err.message.contains(&format!("`{tag}`")), "{doc}: {err:?}");
            assert_eq!(err.line, 1, "{doc}");
        }
    }

    #[test]
    fn empty_document_is_none() {
        assert_eq!(parse("# nothing\n").unwrap(), None);
    }
}
