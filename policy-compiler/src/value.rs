//! A spanned YAML/JSON value tree: every node knows the line and column it started at.
//!
//! The config loader and the PPL parser read this tree instead of a serde model so that
//! every error can point at the offending node. The tree is faithful to the source:
//! map order is kept, quoted scalars stay strings (`"true"` is a string, `true` a bool),
//! duplicate keys are an error with both positions (as go-yaml v3 does), anchors/aliases
//! and `<<` merge keys are resolved.
//!
//! Scalars are resolved with the YAML 1.2 core schema (what Pomerium's go-yaml v3 uses):
//! `null`/`~`/empty → [`Value::Null`], `true`/`false` → [`Value::Bool`], decimal, `0x`
//! and `0o` integers → [`Value::Int`], decimals/exponents/`.inf`/`.nan` → [`Value::Float`],
//! anything else (and anything quoted, block or `!!str`-tagged) → [`Value::String`].
//! JSON is parsed by the same parser (JSON is YAML 1.2 flow syntax).

use crate::diag::{Diagnostic, Diagnostics};
use std::collections::HashMap;
use std::fmt;
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based position in a source file. `line == 0` means "no position" (e.g. a value
/// that came from an environment variable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Span {
    /// 1-based line (0 = unknown).
    pub line: u32,
    /// 1-based column, in characters (0 = unknown).
    pub column: u32,
}

impl Span {
    /// A position.
    pub const fn new(line: u32, column: u32) -> Self {
        Span { line, column }
    }

    /// "No position": diagnostics print only the file (used for environment variables).
    pub const NONE: Span = Span { line: 0, column: 0 };

    fn from_marker(m: &Marker) -> Self {
        Span {
            line: u32::try_from(m.line()).unwrap_or(u32::MAX),
            column: u32::try_from(m.col().saturating_add(1)).unwrap_or(u32::MAX),
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A value with the position it started at.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    /// Where the value starts.
    pub span: Span,
    /// The value.
    pub value: T,
}

impl<T> Spanned<T> {
    /// Pair a value with a position.
    pub const fn new(span: Span, value: T) -> Self {
        Spanned { span, value }
    }

    /// Transform the value, keep the position.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Spanned<U> {
        Spanned {
            span: self.span,
            value: f(self.value),
        }
    }

    /// Borrow the value, keep the position.
    pub fn as_ref(&self) -> Spanned<&T> {
        Spanned {
            span: self.span,
            value: &self.value,
        }
    }
}

/// One YAML/JSON node.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~`, or nothing.
    Null,
    /// Unquoted `true` / `false` (any of `true`, `True`, `TRUE`).
    Bool(bool),
    /// An unquoted integer that fits `i64`.
    Int(i64),
    /// An unquoted float.
    Float(f64),
    /// Any other scalar, and every quoted or block scalar.
    String(String),
    /// A sequence, in order.
    Seq(Vec<Spanned<Value>>),
    /// A mapping, in source order; keys are unique.
    Map(Vec<(Spanned<String>, Spanned<Value>)>),
}

impl Value {
    /// What kind of node this is, for messages ("expected a string, found a list").
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::String(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The entries, if this is a map.
    pub fn as_map(&self) -> Option<&[(Spanned<String>, Spanned<Value>)]> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The items, if this is a sequence.
    pub fn as_seq(&self) -> Option<&[Spanned<Value>]> {
        match self {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// Look a key up in a map (`None` for non-maps).
    pub fn get(&self, key: &str) -> Option<&Spanned<Value>> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.value == key)
            .map(|(_, v)| v)
    }

    /// A scalar rendered as text the way Go's weakly typed decoding would see it
    /// (`1` → `"1"`, `true` → `"true"`); `None` for null, lists and maps.
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(x) => Some(format_float(*x)),
            Value::String(s) => Some(s.clone()),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }
}

fn format_float(x: f64) -> String {
    if x.is_nan() {
        ".nan".to_owned()
    } else if x.is_infinite() {
        if x > 0.0 { ".inf" } else { "-.inf" }.to_owned()
    } else {
        x.to_string()
    }
}

/// Deepest nesting accepted. Deeper documents are refused rather than risking a stack
/// overflow in recursive consumers (and in `Drop`).
pub const MAX_DEPTH: usize = 128;
/// Most nodes one document may expand to (aliases included): stops "billion laughs".
pub const MAX_NODES: usize = 1_000_000;

/// Parse YAML or JSON text into a spanned tree. Every problem is a positioned diagnostic
/// in `file_name`. An empty document is [`Value::Null`] at 1:1.
pub fn parse(file_name: &str, text: &str) -> Result<Spanned<Value>, Diagnostics> {
    let mut b = Builder {
        file: file_name,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        nodes: 0,
        diags: Diagnostics::new(),
        documents: 0,
    };
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((ev, mark)) => {
                if let Err(stop) = b.event(ev, &mark) {
                    b.diags.push(stop);
                    return Err(b.diags);
                }
            }
            Err(e) => {
                let span = Span::from_marker(e.marker());
                b.diags.push(Diagnostic::error(
                    file_name,
                    span,
                    format!("invalid yaml: {}", e.info()),
                ));
                return Err(b.diags);
            }
        }
    }
    if !b.diags.is_empty() {
        return Err(b.diags);
    }
    Ok(b.root.unwrap_or(Spanned::new(Span::new(1, 1), Value::Null)))
}

enum Frame {
    Seq {
        span: Span,
        anchor: usize,
        items: Vec<Spanned<Value>>,
    },
    Map {
        span: Span,
        anchor: usize,
        entries: Vec<(Spanned<String>, Spanned<Value>)>,
        /// Entries brought in by `<<` merge keys: explicit keys win over them.
        merged: Vec<(Spanned<String>, Spanned<Value>)>,
        pending_key: Option<Spanned<String>>,
    },
}

struct Builder<'a> {
    file: &'a str,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Spanned<Value>>,
    root: Option<Spanned<Value>>,
    nodes: usize,
    diags: Diagnostics,
    documents: usize,
}

impl Builder<'_> {
    fn err(&self, span: Span, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::error(self.file, span, msg)
    }

    /// Handle one event. `Err` = a fatal problem (parsing stops); non-fatal problems
    /// (duplicate keys) are collected in `self.diags`.
    fn event(&mut self, ev: Event, mark: &Marker) -> Result<(), Diagnostic> {
        let span = Span::from_marker(mark);
        match ev {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => Ok(()),
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(self.err(
                        span,
                        "multiple yaml documents in one file are not supported",
                    ));
                }
                Ok(())
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id).cloned() else {
                    return Err(self.err(span, "alias to an unknown anchor"));
                };
                self.count(span, count_nodes(&node.value))?;
                // The alias is used where it appears: report positions inside the anchored
                // node (they are real source positions), but the node itself here.
                self.complete(Spanned::new(span, node.value))
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(span, 1)?;
                let value = resolve_scalar(text, style, tag.as_ref());
                let node = Spanned::new(span, value);
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.complete(node)
            }
            Event::SequenceStart(anchor, _tag) => {
                self.count(span, 1)?;
                self.open(span)?;
                self.stack.push(Frame::Seq {
                    span,
                    anchor,
                    items: Vec::new(),
                });
                Ok(())
            }
            Event::MappingStart(anchor, _tag) => {
                self.count(span, 1)?;
                self.open(span)?;
                self.stack.push(Frame::Map {
                    span,
                    anchor,
                    entries: Vec::new(),
                    merged: Vec::new(),
                    pending_key: None,
                });
                Ok(())
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    span,
                    anchor,
                    items,
                }) => {
                    let node = Spanned::new(span, Value::Seq(items));
                    if anchor > 0 {
                        self.anchors.insert(anchor, node.clone());
                    }
                    self.complete(node)
                }
                _ => Err(self.err(span, "invalid yaml: unbalanced sequence")),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map {
                    span,
                    anchor,
                    mut entries,
                    merged,
                    ..
                }) => {
                    for (k, v) in merged {
                        if !entries.iter().any(|(e, _)| e.value == k.value) {
                            entries.push((k, v));
                        }
                    }
                    // A block mapping's start event is marked after its first key; the
                    // map starts at that key.
                    let span = entries.first().map_or(span, |(k, _)| span.min(k.span));
                    let node = Spanned::new(span, Value::Map(entries));
                    if anchor > 0 {
                        self.anchors.insert(anchor, node.clone());
                    }
                    self.complete(node)
                }
                _ => Err(self.err(span, "invalid yaml: unbalanced mapping")),
            },
        }
    }

    fn open(&self, span: Span) -> Result<(), Diagnostic> {
        // A collection used as a map key is refused in `complete`, but refuse it early
        // too so the message points at the key.
        if let Some(Frame::Map {
            pending_key: None, ..
        }) = self.stack.last()
        {
            return Err(self.err(span, "map keys must be strings, not lists or maps"));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.err(
                span,
                format!("document nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn count(&mut self, span: Span, n: usize) -> Result<(), Diagnostic> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(self.err(
                span,
                format!("document has more than {MAX_NODES} nodes (after expanding aliases)"),
            ));
        }
        Ok(())
    }

    /// A node is finished: attach it to its parent (or make it the root).
    fn complete(&mut self, node: Spanned<Value>) -> Result<(), Diagnostic> {
        let file = self.file;
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                entries,
                merged,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    let key = match node.value {
                        Value::String(s) => s,
                        Value::Null => "null".to_owned(),
                        Value::Bool(_) | Value::Int(_) | Value::Float(_) => {
                            node.value.scalar_text().unwrap_or_default()
                        }
                        Value::Seq(_) | Value::Map(_) => {
                            return Err(Diagnostic::error(
                                file,
                                node.span,
                                "map keys must be strings, not lists or maps",
                            ));
                        }
                    };
                    *pending_key = Some(Spanned::new(node.span, key));
                    Ok(())
                }
                Some(key) => {
                    if key.value == "<<" {
                        merge_into(merged, node, file, &mut self.diags);
                        return Ok(());
                    }
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.value == key.value) {
                        self.diags.push(Diagnostic::error(
                            file,
                            key.span,
                            format!(
                                "duplicate key `{}` (first defined at line {})",
                                key.value, first.span.line
                            ),
                        ));
                        return Ok(());
                    }
                    entries.push((key, node));
                    Ok(())
                }
            },
        }
    }
}

/// `<<: *anchor` or `<<: [*a, *b]`: earlier sources win over later ones, explicit keys
/// over all of them (YAML merge key semantics).
fn merge_into(
    merged: &mut Vec<(Spanned<String>, Spanned<Value>)>,
    node: Spanned<Value>,
    file: &str,
    diags: &mut Diagnostics,
) {
    let sources = match node.value {
        Value::Map(m) => vec![m],
        Value::Seq(items) => {
            let mut out = Vec::new();
            for item in items {
                match item.value {
                    Value::Map(m) => out.push(m),
                    other => diags.push(Diagnostic::error(
                        file,
                        item.span,
                        format!("merge key `<<` needs maps, found {}", other.kind()),
                    )),
                }
            }
            out
        }
        other => {
            diags.push(Diagnostic::error(
                file,
                node.span,
                format!("merge key `<<` needs a map, found {}", other.kind()),
            ));
            return;
        }
    };
    for source in sources {
        for (k, v) in source {
            if !merged.iter().any(|(m, _)| m.value == k.value) {
                merged.push((k, v));
            }
        }
    }
}

fn count_nodes(v: &Value) -> usize {
    // Iterative: an alias can point at a deep (but depth-limited) node.
    let mut n = 0usize;
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        n = n.saturating_add(1);
        match v {
            Value::Seq(items) => todo.extend(items.iter().map(|i| &i.value)),
            Value::Map(entries) => todo.extend(entries.iter().map(|(_, v)| &v.value)),
            _ => {}
        }
    }
    n
}

fn resolve_scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    // `!!str 1` is the string "1"; other core tags resolve as if untagged.
    if let Some(tag) = tag
        && tag.suffix == "str"
        && (tag.handle == "!!" || tag.handle == "tag:yaml.org,2002:")
    {
        return Value::String(text);
    }
    if style != TScalarStyle::Plain {
        return Value::String(text);
    }
    resolve_plain(text)
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(text: String) -> Value {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    // go-yaml v3: a scalar starting with a digit or a sign is tried as a number with every
    // `_` removed, first as Go's `strconv.ParseInt(s, 0, 64)` (so `0x1F`, `0X1F`, `0o17`,
    // `0b101`, and the YAML 1.1 octal `0123` = 83), then as a YAML float.
    if text
        .as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_digit() || *b == b'+' || *b == b'-')
    {
        let plain = text.replace('_', "");
        if let Some(i) = parse_int(&plain) {
            return Value::Int(i);
        }
        if is_float(&plain)
            && let Ok(x) = plain.parse::<f64>()
        {
            return Value::Float(x);
        }
        return Value::String(text);
    }
    if is_float(&text)
        && let Ok(x) = text.parse::<f64>()
    {
        return Value::Float(x);
    }
    Value::String(text)
}

/// Go's `strconv.ParseInt(s, 0, 64)`: optional sign, then `0x`/`0X` (hex), `0o`/`0O`, `0b`/`0B`
/// or a bare leading `0` (octal), else decimal; the value must fit in an `i64`.
fn parse_int(s: &str) -> Option<i64> {
    let (neg, rest) = match s.as_bytes().first()? {
        b'-' => (true, s.get(1..)?),
        b'+' => (false, s.get(1..)?),
        _ => (false, s),
    };
    let prefixed = |p: char| {
        let b = rest.as_bytes();
        (rest.len() >= 3
            && b.first() == Some(&b'0')
            && b.get(1).is_some_and(|c| c.eq_ignore_ascii_case(&(p as u8))))
        .then(|| rest.get(2..))
        .flatten()
    };
    let (radix, digits) = if let Some(d) = prefixed('x') {
        (16, d)
    } else if let Some(d) = prefixed('o') {
        (8, d)
    } else if let Some(d) = prefixed('b') {
        (2, d)
    } else if let Some(d) = rest.strip_prefix('0') {
        // `0` alone is zero; `0123` is octal.
        if d.is_empty() {
            return Some(0);
        }
        (8, d)
    } else {
        (10, rest)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(digits, radix).ok()?;
    let v = if neg { -magnitude } else { magnitude };
    i64::try_from(v).ok()
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` — the core schema float.
fn is_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let at = |i: usize| b.get(i).copied();
    if matches!(at(i), Some(b'-' | b'+')) {
        i += 1;
    }
    let int_start = i;
    while matches!(at(i), Some(b'0'..=b'9')) {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    if at(i) == Some(b'.') {
        i += 1;
        let s = i;
        while matches!(at(i), Some(b'0'..=b'9')) {
            i += 1;
        }
        frac_digits = i - s;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(at(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(at(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let s = i;
        while matches!(at(i), Some(b'0'..=b'9')) {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests;
