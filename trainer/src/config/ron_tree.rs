//! A small syntax tree for RON text, used for `--set path.to.field=value` overrides and for
//! field-by-field config comparison.
//!
//! Why not `ron::Value`: it drops struct and enum-variant names (`SinkKv(k: Zero, v: Zero)`
//! becomes an anonymous map), so it cannot round-trip a typed config. This tree keeps every
//! name and prints back to RON that the typed deserializer accepts. Scalars (numbers, strings,
//! chars, booleans, unit variants) are kept as their source text.

use std::fmt::Write;

/// One RON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// A scalar or a bare identifier (unit variant, `None`, `true`), kept as source text.
    Atom(String),
    /// `Name(field: value, ...)` or `(field: value, ...)`.
    Struct {
        name: Option<String>,
        fields: Vec<(String, Node)>,
    },
    /// `Name(value, ...)` (`Some(x)`, newtype variants) or a plain tuple `(a, b)`.
    Tuple {
        name: Option<String>,
        items: Vec<Node>,
    },
    /// `[a, b]`.
    List(Vec<Node>),
    /// `{key: value}`.
    Map(Vec<(Node, Node)>),
}

/// A syntax error with its 1-based line and column.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

/// How deeply values may nest (structs, tuples, lists, maps inside each other). The parser
/// recurses once per level, so without a limit a value such as `((((...))))` nested tens of
/// thousands deep overflows the stack; the typed RON deserializer has the same limit (ron's
/// default `recursion_limit`), so nothing a config can hold is lost.
pub const MAX_DEPTH: usize = 128;

/// Parses one RON value (leading `#![enable(...)]` attributes and comments are skipped).
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut p = Parser {
        src: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    p.skip_space_and_attributes()?;
    let node = p.value()?;
    p.skip_space()?;
    if p.pos < p.src.len() {
        return Err(p.error("unexpected text after the value"));
    }
    Ok(node)
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    /// Values currently open around the position (see [`MAX_DEPTH`]).
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, message: &str) -> SyntaxError {
        let before = &self.src[..self.pos.min(self.src.len())];
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let col = 1 + before.iter().rev().take_while(|&&b| b != b'\n').count();
        SyntaxError {
            line,
            col,
            message: message.to_string(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn skip_space(&mut self) -> Result<(), SyntaxError> {
        loop {
            match self.peek() {
                Some(b) if b.is_ascii_whitespace() => self.pos += 1,
                Some(b'/') if self.src.get(self.pos + 1) == Some(&b'/') => {
                    while let Some(b) = self.peek() {
                        if b == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                Some(b'/') if self.src.get(self.pos + 1) == Some(&b'*') => {
                    let start = self.pos;
                    self.pos += 2;
                    let mut depth = 1;
                    while depth > 0 {
                        match (self.peek(), self.src.get(self.pos + 1)) {
                            (None, _) => {
                                self.pos = start;
                                return Err(self.error("unterminated block comment"));
                            }
                            (Some(b'*'), Some(b'/')) => {
                                depth -= 1;
                                self.pos += 2;
                            }
                            (Some(b'/'), Some(b'*')) => {
                                depth += 1;
                                self.pos += 2;
                            }
                            _ => self.pos += 1,
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn skip_space_and_attributes(&mut self) -> Result<(), SyntaxError> {
        loop {
            self.skip_space()?;
            if self.src[self.pos..].starts_with(b"#!") {
                while let Some(b) = self.peek() {
                    self.pos += 1;
                    if b == b']' {
                        break;
                    }
                }
            } else {
                return Ok(());
            }
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), SyntaxError> {
        self.skip_space()?;
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected `{}`", byte as char)))
        }
    }

    fn ident(&mut self) -> Option<String> {
        let start = self.pos;
        // Raw identifiers `r#name`.
        if self.src[self.pos..].starts_with(b"r#") {
            self.pos += 2;
        }
        match self.peek() {
            Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
            _ => {
                self.pos = start;
                return None;
            }
        }
        while let Some(b) = self.peek() {
            if b.is_ascii_alphanumeric() || b == b'_' {
                self.pos += 1;
            } else {
                break;
            }
        }
        Some(String::from_utf8_lossy(&self.src[start..self.pos]).into_owned())
    }

    fn value(&mut self) -> Result<Node, SyntaxError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(&format!(
                "values nested more than {MAX_DEPTH} levels deep (the parser's limit)"
            )));
        }
        self.depth += 1;
        let node = self.value_inner();
        self.depth -= 1;
        node
    }

    fn value_inner(&mut self) -> Result<Node, SyntaxError> {
        self.skip_space()?;
        match self.peek() {
            None => Err(self.error("expected a value, found the end of the text")),
            Some(b'(') => self.parenthesised(None),
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_space()?;
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        return Ok(Node::List(items));
                    }
                    items.push(self.value()?);
                    self.skip_space()?;
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {}
                        _ => return Err(self.error("expected `,` or `]` in a list")),
                    }
                }
            }
            Some(b'{') => {
                self.pos += 1;
                let mut entries = Vec::new();
                loop {
                    self.skip_space()?;
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        return Ok(Node::Map(entries));
                    }
                    let key = self.value()?;
                    self.expect(b':')?;
                    let value = self.value()?;
                    entries.push((key, value));
                    self.skip_space()?;
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {}
                        _ => return Err(self.error("expected `,` or `}` in a map")),
                    }
                }
            }
            Some(b'"') => self.string_atom(),
            Some(b'r') if matches!(self.src.get(self.pos + 1), Some(b'"') | Some(b'#')) => {
                if self.src.get(self.pos + 1) == Some(&b'#')
                    && !matches!(self.src.get(self.pos + 2), Some(b'"') | Some(b'#'))
                {
                    // `r#ident`, a raw identifier.
                    return self.ident_value();
                }
                self.raw_string_atom()
            }
            Some(b'\'') => {
                let start = self.pos;
                self.pos += 1;
                while let Some(b) = self.peek() {
                    self.pos += 1;
                    if b == b'\\' {
                        self.pos += 1;
                    } else if b == b'\'' {
                        return Ok(Node::Atom(self.text(start)));
                    }
                }
                self.pos = start;
                Err(self.error("unterminated character literal"))
            }
            Some(b) if b.is_ascii_digit() || b == b'-' || b == b'+' || b == b'.' => {
                let start = self.pos;
                self.pos += 1;
                while let Some(b) = self.peek() {
                    // Digits, letters (hex, suffixes, exponents), `.`, `_`, and a sign right
                    // after an exponent marker.
                    let exponent_sign =
                        (b == b'-' || b == b'+') && matches!(self.src[self.pos - 1], b'e' | b'E');
                    if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || exponent_sign {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                Ok(Node::Atom(self.text(start)))
            }
            Some(b) if b.is_ascii_alphabetic() || b == b'_' => self.ident_value(),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn ident_value(&mut self) -> Result<Node, SyntaxError> {
        let name = self.ident().ok_or_else(|| self.error("expected a name"))?;
        let after_name = self.pos;
        self.skip_space()?;
        if self.peek() == Some(b'(') {
            self.parenthesised(Some(name))
        } else {
            self.pos = after_name;
            Ok(Node::Atom(name))
        }
    }

    fn text(&self, start: usize) -> String {
        String::from_utf8_lossy(&self.src[start..self.pos]).into_owned()
    }

    fn string_atom(&mut self) -> Result<Node, SyntaxError> {
        let start = self.pos;
        self.pos += 1;
        while let Some(b) = self.peek() {
            self.pos += 1;
            if b == b'\\' {
                self.pos += 1;
            } else if b == b'"' {
                return Ok(Node::Atom(self.text(start)));
            }
        }
        self.pos = start;
        Err(self.error("unterminated string"))
    }

    fn raw_string_atom(&mut self) -> Result<Node, SyntaxError> {
        let start = self.pos;
        self.pos += 1;
        let mut hashes = 0;
        while self.peek() == Some(b'#') {
            hashes += 1;
            self.pos += 1;
        }
        if self.peek() != Some(b'"') {
            return Err(self.error("expected `\"` in a raw string"));
        }
        self.pos += 1;
        let mut closing = vec![b'"'];
        closing.extend(std::iter::repeat_n(b'#', hashes));
        while self.pos < self.src.len() {
            if self.src[self.pos..].starts_with(&closing) {
                self.pos += closing.len();
                return Ok(Node::Atom(self.text(start)));
            }
            self.pos += 1;
        }
        self.pos = start;
        Err(self.error("unterminated raw string"))
    }

    /// `(` ... `)` after an optional name: a struct if the first entry is `ident:`, else a tuple.
    fn parenthesised(&mut self, name: Option<String>) -> Result<Node, SyntaxError> {
        self.expect(b'(')?;
        self.skip_space()?;
        let is_struct = {
            let save = self.pos;
            let found = self.ident().is_some() && {
                let _ = self.skip_space();
                self.peek() == Some(b':') && self.src.get(self.pos + 1) != Some(&b':')
            };
            self.pos = save;
            found
        };
        if is_struct {
            let mut fields: Vec<(String, Node)> = Vec::new();
            loop {
                self.skip_space()?;
                if self.peek() == Some(b')') {
                    self.pos += 1;
                    return Ok(Node::Struct { name, fields });
                }
                let field = self
                    .ident()
                    .ok_or_else(|| self.error("expected a field name"))?;
                let field = field.trim_start_matches("r#").to_string();
                if fields.iter().any(|(f, _)| *f == field) {
                    return Err(self.error(&format!("field `{field}` given twice")));
                }
                self.expect(b':')?;
                let value = self.value()?;
                fields.push((field, value));
                self.skip_space()?;
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b')') => {}
                    _ => return Err(self.error("expected `,` or `)` after a field")),
                }
            }
        }
        let mut items = Vec::new();
        loop {
            self.skip_space()?;
            if self.peek() == Some(b')') {
                self.pos += 1;
                return Ok(Node::Tuple { name, items });
            }
            items.push(self.value()?);
            self.skip_space()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b')') => {}
                _ => return Err(self.error("expected `,` or `)` in a tuple")),
            }
        }
    }
}

impl Node {
    /// Prints the node as RON (one line, no trailing commas).
    pub fn to_ron(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Node::Atom(text) => out.push_str(text),
            Node::Struct { name, fields } => {
                if let Some(name) = name {
                    out.push_str(name);
                }
                out.push('(');
                for (i, (field, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(out, "{field}: ");
                    value.write(out);
                }
                out.push(')');
            }
            Node::Tuple { name, items } => {
                if let Some(name) = name {
                    out.push_str(name);
                }
                out.push('(');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                out.push(')');
            }
            Node::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Node::Map(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    key.write(out);
                    out.push_str(": ");
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    /// Where a path may descend through this node: struct fields, through `Some(x)` and
    /// newtype variants `Name(x)` into `x`, and list indices.
    fn child_mut(&mut self, key: &str) -> Option<&mut Node> {
        match self {
            Node::Struct { fields, .. } => {
                fields.iter_mut().find(|(f, _)| f == key).map(|(_, v)| v)
            }
            Node::Tuple { items, .. } if items.len() == 1 => items[0].child_mut(key),
            Node::List(items) => key.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }
    }

    /// The names a path can continue with at this node (for "did you mean" messages).
    pub fn child_names(&self) -> Vec<String> {
        match self {
            Node::Struct { fields, .. } => fields.iter().map(|(f, _)| f.clone()).collect(),
            Node::Tuple { items, .. } if items.len() == 1 => items[0].child_names(),
            Node::List(items) => (0..items.len()).map(|i| i.to_string()).collect(),
            _ => Vec::new(),
        }
    }

    /// Replaces the value at a dotted path (`model.sink`) by `value`.
    pub fn set(&mut self, path: &str, value: Node) -> Result<(), PathError> {
        let mut node = self;
        let mut walked: Vec<&str> = Vec::new();
        for key in path.split('.') {
            let names = node.child_names();
            match node.child_mut(key) {
                Some(child) => node = child,
                None => {
                    return Err(PathError {
                        path: path.to_string(),
                        parent: walked.join("."),
                        missing: key.to_string(),
                        valid: names,
                    })
                }
            }
            walked.push(key);
        }
        *node = value;
        Ok(())
    }

    /// Dotted paths of all leaves whose values differ between `self` and `other`
    /// (a changed enum variant or struct name is reported at that node).
    pub fn diff(&self, other: &Node) -> Vec<String> {
        let mut out = Vec::new();
        diff_into(self, other, "", &mut out);
        out
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn diff_into(a: &Node, b: &Node, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (
            Node::Struct {
                name: na,
                fields: fa,
            },
            Node::Struct {
                name: nb,
                fields: fb,
            },
        ) if na == nb => {
            for (key, va) in fa {
                match fb.iter().find(|(k, _)| k == key) {
                    Some((_, vb)) => diff_into(va, vb, &join(path, key), out),
                    None => out.push(join(path, key)),
                }
            }
            for (key, _) in fb {
                if !fa.iter().any(|(k, _)| k == key) {
                    out.push(join(path, key));
                }
            }
        }
        (
            Node::Tuple {
                name: na,
                items: ia,
            },
            Node::Tuple {
                name: nb,
                items: ib,
            },
        ) if na == nb && ia.len() == ib.len() => {
            for (i, (x, y)) in ia.iter().zip(ib).enumerate() {
                let p = if ia.len() == 1 {
                    path.to_string()
                } else {
                    join(path, &i.to_string())
                };
                diff_into(x, y, &p, out);
            }
        }
        (Node::List(ia), Node::List(ib)) if ia.len() == ib.len() => {
            for (i, (x, y)) in ia.iter().zip(ib).enumerate() {
                diff_into(x, y, &join(path, &i.to_string()), out);
            }
        }
        _ if a == b => {}
        _ => out.push(if path.is_empty() {
            "(root)".to_string()
        } else {
            path.to_string()
        }),
    }
}

/// A `--set` path that names no field.
#[derive(Debug, Clone, PartialEq)]
pub struct PathError {
    /// The whole path given.
    pub path: String,
    /// The part of the path that exists.
    pub parent: String,
    /// The first key that does not.
    pub missing: String,
    /// The keys that exist at that point.
    pub valid: Vec<String>,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.parent.is_empty() {
            "the top level".to_string()
        } else {
            format!("`{}`", self.parent)
        };
        write!(
            f,
            "`{}` names no field: no `{}` at {at}",
            self.path, self.missing
        )?;
        if self.valid.is_empty() {
            return write!(f, " (it has no fields)");
        }
        let mut ranked: Vec<(usize, &String)> = self
            .valid
            .iter()
            .map(|v| (edit_distance(&self.missing, v), v))
            .collect();
        ranked.sort();
        let near: Vec<&str> = ranked
            .iter()
            .filter(|(d, v)| *d <= 3.max(v.len() / 3))
            .take(3)
            .map(|(_, v)| v.as_str())
            .collect();
        if !near.is_empty() {
            write!(f, "; did you mean {}?", near.join(", "))?;
        }
        write!(f, " (valid: {})", self.valid.join(", "))
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut diagonal = row[0];
        row[0] = i;
        for j in 1..=b.len() {
            let substitution = diagonal + usize::from(a[i - 1] != b[j - 1]);
            diagonal = row[j];
            row[j] = substitution.min(row[j] + 1).min(row[j - 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_nested_values() {
        let text = r##"#![enable(unwrap_variant_newtypes)]
        // a comment
        Config(name: "a \"b\"", lr: -1.5e-3, sink: SinkKv(k: Learned, v: Zero),
               env: DarkRoom(size: 10, /* inline */ goals: [1, 2, 3],),
               opt: Some(3), pair: (1, 'x'), m: {"a": 1}, raw: r#"x"y"#)"##;
        let node = parse(text).unwrap();
        let printed = node.to_ron();
        assert_eq!(
            printed,
            r##"Config(name: "a \"b\"", lr: -1.5e-3, sink: SinkKv(k: Learned, v: Zero), env: DarkRoom(size: 10, goals: [1, 2, 3]), opt: Some(3), pair: (1, 'x'), m: {"a": 1}, raw: r#"x"y"#)"##
        );
        assert_eq!(parse(&printed).unwrap(), node);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse("(a: 1,\n  b: [1, 2\n)").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("`]`"), "{err}");
        let err = parse("(a: 1, a: 2)").unwrap_err();
        assert!(err.message.contains("twice"));
        assert!(parse("(a: \"open").is_err());
        assert!(parse("").is_err());
        assert!(parse("(a: 1) trailing").is_err());
    }

    #[test]
    fn set_descends_through_structs_variants_and_options() {
        let mut node =
            parse("(model: (layers: 2, sink: SinkKv(k: Learned, v: Zero)), opt: Some((x: 1)))")
                .unwrap();
        node.set("model.layers", Node::Atom("4".into())).unwrap();
        node.set("model.sink.k", Node::Atom("Zero".into())).unwrap();
        node.set("opt.x", Node::Atom("7".into())).unwrap();
        assert_eq!(
            node.to_ron(),
            "(model: (layers: 4, sink: SinkKv(k: Zero, v: Zero)), opt: Some((x: 7)))"
        );
        let err = node
            .set("model.layers_", Node::Atom("1".into()))
            .unwrap_err();
        assert_eq!(err.parent, "model");
        assert_eq!(err.missing, "layers_");
        let message = err.to_string();
        assert!(message.contains("did you mean layers"), "{message}");
        let err = node
            .set("modle.layers", Node::Atom("1".into()))
            .unwrap_err();
        assert!(err.to_string().contains("did you mean model"), "{err}");
    }

    #[test]
    fn nesting_is_limited_without_overflowing_the_stack() {
        let deep = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        // At the limit: parses (the innermost `1` is the last allowed level).
        assert!(parse(&deep(MAX_DEPTH - 1)).is_ok());
        // 60,000 levels used to overflow the stack (SIGABRT); now a located error.
        for text in [
            deep(60_000),
            format!("{}1{}", "[".repeat(60_000), "]".repeat(60_000)),
            format!("(a: {}", "Some(".repeat(60_000)),
        ] {
            let err = parse(&text).unwrap_err();
            assert!(err.message.contains("nested more than 128"), "{err}");
            assert_eq!(err.line, 1);
        }
    }

    #[test]
    fn diff_names_changed_leaves() {
        let a = parse("(m: (layers: 2, heads: 8), s: SinkKv(k: Zero, v: Zero), n: 1)").unwrap();
        let b = parse("(m: (layers: 4, heads: 8), s: SinkToken, n: 1)").unwrap();
        assert_eq!(a.diff(&b), vec!["m.layers".to_string(), "s".to_string()]);
        assert!(a.diff(&a).is_empty());
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
