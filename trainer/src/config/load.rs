//! Reading, overriding, validating and writing RON configs, with errors that name the file,
//! line, column and field path.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::ron_tree::{self, Node};

/// A typed config section that can list its impossible values.
pub trait Validate {
    /// Every impossible value, as (field path relative to this section, what is wrong).
    /// Empty when the section is valid.
    fn validate(&self) -> Vec<(String, String)>;
}

/// Prefixes the field paths of a sub-section's problems with the section's name.
pub fn prefixed(section: &str, problems: Vec<(String, String)>) -> Vec<(String, String)> {
    problems
        .into_iter()
        .map(|(path, message)| {
            let path = if path.is_empty() {
                section.to_string()
            } else {
                format!("{section}.{path}")
            };
            (path, message)
        })
        .collect()
}

/// Why a config could not be used. Every variant is reported with exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read the config: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Malformed RON, a wrong type, an unknown field: at a position, with the field's path.
    #[error("{}", format_parse(origin, *line, *col, field, message))]
    Parse {
        /// The file (or `--set ...` argument) the text came from.
        origin: String,
        line: usize,
        col: usize,
        /// The dotted path of the field being read, when known.
        field: Option<String>,
        message: String,
    },
    /// A `--set` argument that is not `path=value` or whose path names no field.
    #[error("--set {}: {message}", abbreviate(arg))]
    Override { arg: String, message: String },
    /// Impossible values, all of them.
    #[error("{}", format_invalid(origin, problems))]
    Invalid {
        origin: String,
        /// (field path, what is wrong)
        problems: Vec<(String, String)>,
    },
}

/// `text` cut to a length a message can hold (a `--set` value may be megabytes long).
pub fn abbreviate(text: &str) -> String {
    const KEEP: usize = 80;
    if text.chars().count() <= 2 * KEEP {
        return text.to_string();
    }
    let head: String = text.chars().take(KEEP).collect();
    let tail: String = text.chars().skip(text.chars().count() - 20).collect();
    format!("{head}...{tail} ({} characters)", text.chars().count())
}

fn format_parse(
    origin: &str,
    line: usize,
    col: usize,
    field: &Option<String>,
    message: &str,
) -> String {
    match field {
        Some(field) if !field.is_empty() && field != "." && field != "?" => {
            format!("{origin}:{line}:{col}: field `{field}`: {message}")
        }
        _ => format!("{origin}:{line}:{col}: {message}"),
    }
}

fn format_invalid(origin: &str, problems: &[(String, String)]) -> String {
    let mut out = format!("{origin}: {} invalid value(s):", problems.len());
    for (path, message) in problems {
        out.push_str(&format!("\n  {path}: {message}"));
    }
    out
}

/// RON options used for every config: `Some` may be left implicit, and newtype enum variants
/// take their struct's fields directly (`DarkRoom(size: 10)` instead of `DarkRoom((size: 10))`).
pub fn ron_options() -> ron::Options {
    ron::Options::default()
        .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
        .with_default_extension(ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES)
}

/// Deserializes `text` into `T`, reporting position and field path on error.
pub fn from_ron_str<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    let parse_error =
        |line: usize, col: usize, field: Option<String>, message: String| ConfigError::Parse {
            origin: origin.to_string(),
            line,
            col,
            field,
            message,
        };
    if text.starts_with('\u{FEFF}') {
        return Err(parse_error(
            1,
            1,
            None,
            "the file starts with a UTF-8 byte-order mark (BOM), which RON does not allow; \
             save it as UTF-8 without a BOM"
                .to_string(),
        ));
    }
    let options = ron_options();
    let mut de = ron::Deserializer::from_str_with_options(text, &options)
        .map_err(|e| parse_error(e.span.start.line, e.span.start.col, None, describe(&e.code)))?;
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = match result {
        Ok(value) => value,
        Err(err) => {
            // Enum variants are transparent in field paths (`env.size`, not
            // `env.DarkRoom.size`), as in `--set` paths and validation messages; field names
            // are snake_case, variant names CamelCase.
            let mut field = err
                .path()
                .to_string()
                .split('.')
                .filter(|part| !part.starts_with(|c: char| c.is_ascii_uppercase()))
                .collect::<Vec<_>>()
                .join(".");
            let spanned = de.span_error(err.into_inner());
            let (line, col) = (spanned.span.start.line, spanned.span.start.col);
            let mut message = describe(&spanned.code);
            // serde names the key it is about to read `?`; the error is then in what follows
            // the previous field's value (`layers: 2.5` stops after `2`): name that field.
            if field == "?" || field.ends_with(".?") {
                if let Some(previous) = field_before(text, line, col) {
                    field.truncate(field.len() - 1);
                    field.push_str(&previous);
                    if spanned.code == ron::Error::ExpectedComma {
                        message = format!(
                            "unexpected text after the value of `{previous}` (a value of the wrong \
                             type, or a missing comma)"
                        );
                    }
                }
            }
            return Err(parse_error(line, col, Some(field), message));
        }
    };
    de.end().map_err(|e| {
        let spanned = de.span_error(e);
        // ron points at the end of the config; point at the text that follows it.
        let (mut line, mut col) = (spanned.span.start.line, spanned.span.start.col);
        let rest = text
            .split_inclusive('\n')
            .skip(line.saturating_sub(1))
            .flat_map(str::chars)
            .skip(col.saturating_sub(1));
        for c in rest {
            match c {
                '\n' => (line, col) = (line + 1, 1),
                c if c.is_whitespace() => col += 1,
                _ => break,
            }
        }
        parse_error(
            line,
            col,
            None,
            format!("{} (text after the config's end)", describe(&spanned.code)),
        )
    })?;
    Ok(value)
}

/// ron's message for an error, in this tool's words where ron's would mislead.
fn describe(code: &ron::Error) -> String {
    match code {
        ron::Error::ExceededRecursionLimit => format!(
            "values nested more than {} levels deep (the parser's limit)",
            ron_tree::MAX_DEPTH
        ),
        other => other.to_string(),
    }
}

/// The name of the last field given (`name:`) before the 1-based (line, column in chars) in
/// the innermost struct still open there; strings and comments are skipped.
fn field_before(text: &str, line: usize, col: usize) -> Option<String> {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let end = text[line_start..]
        .char_indices()
        .nth(col.saturating_sub(1))
        .map_or(text.len(), |(i, _)| line_start + i);
    let src = &text.as_bytes()[..end];
    // The last field name of each open bracket.
    let mut open: Vec<Option<String>> = vec![None];
    let mut i = 0;
    while i < src.len() {
        match src[i] {
            b'/' if src.get(i + 1) == Some(&b'/') => {
                while i < src.len() && src[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if src.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < src.len() && !(src[i] == b'*' && src[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < src.len() && src[i] != quote {
                    i += if src[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'(' | b'[' | b'{' => {
                open.push(None);
                i += 1;
            }
            b')' | b']' | b'}' => {
                if open.len() > 1 {
                    open.pop();
                }
                i += 1;
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let start = i;
                while i < src.len() && (src[i].is_ascii_alphanumeric() || src[i] == b'_') {
                    i += 1;
                }
                let mut j = i;
                while j < src.len() && src[j].is_ascii_whitespace() {
                    j += 1;
                }
                if src.get(j) == Some(&b':') && src.get(j + 1) != Some(&b':') {
                    let name = String::from_utf8_lossy(&src[start..i]).into_owned();
                    *open.last_mut().expect("never empty") = Some(name);
                }
            }
            _ => i += 1,
        }
    }
    open.pop().flatten()
}

/// The config as RON text, every field present (defaults included), readable by a person and
/// by [`from_ron_str`].
pub fn to_ron_string<T: Serialize>(value: &T) -> String {
    let pretty = ron::ser::PrettyConfig::new()
        .struct_names(true)
        .indentor("    ".to_string());
    ron_options()
        .to_string_pretty(value, pretty)
        .unwrap_or_else(|e| format!("/* could not print the config: {e} */"))
}

/// The config as a syntax tree (every field present), for overrides and comparison.
pub fn to_tree<T: Serialize>(value: &T) -> Node {
    let text = ron_options()
        .to_string_pretty(value, ron::ser::PrettyConfig::new().struct_names(true))
        .expect("a config always serializes to RON");
    ron_tree::parse(&text).expect("RON printed by ron parses back")
}

/// Applies one `path.to.field=value` override (value in RON syntax).
pub fn apply_override<T: Serialize + DeserializeOwned>(
    value: &T,
    arg: &str,
) -> Result<T, ConfigError> {
    let err = |message: String| ConfigError::Override {
        arg: arg.to_string(),
        message,
    };
    let Some((path, text)) = arg.split_once('=') else {
        return Err(err("expected path.to.field=value".to_string()));
    };
    let path = path.trim();
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(err(
            "the field path is empty or has an empty part".to_string()
        ));
    }
    let new = ron_tree::parse(text).map_err(|e| {
        err(format!(
            "value `{}`: column {}: {}",
            abbreviate(text),
            e.col,
            e.message
        ))
    })?;
    let mut tree = to_tree(value);
    tree.set(path, new).map_err(|e| err(e.to_string()))?;
    from_ron_str(&tree.to_ron(), &format!("--set {}", abbreviate(arg))).map_err(|e| match e {
        ConfigError::Parse { field, message, .. } => err(match field {
            Some(f) if !f.is_empty() && f != "." && f != "?" => format!("field `{f}`: {message}"),
            _ => message,
        }),
        other => other,
    })
}

/// Reads a config file, applies `--set` overrides in order, and validates the result; every
/// impossible value is reported at once.
pub fn load<T>(path: &Path, overrides: &[String]) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Validate,
{
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let origin = path.display().to_string();
    let mut value: T = from_ron_str(&text, &origin)?;
    for arg in overrides {
        value = apply_override(&value, arg)?;
    }
    let problems = value.validate();
    if !problems.is_empty() {
        let origin = if overrides.is_empty() {
            origin
        } else {
            let sets: Vec<String> = overrides.iter().map(|o| abbreviate(o)).collect();
            format!("{origin} (with --set {})", sets.join(" --set "))
        };
        return Err(ConfigError::Invalid { origin, problems });
    }
    Ok(value)
}

/// Field paths whose values differ between two configs (for "checkpoint made for another
/// config" messages).
pub fn differing_fields<T: Serialize>(a: &T, b: &T) -> Vec<String> {
    to_tree(a).diff(&to_tree(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        layers: usize,
        lr: f64,
        kind: Kind,
        tag: Option<String>,
    }
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    enum Kind {
        Plain,
        Sink { k: bool },
        Wrapped(Inner2),
    }
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Inner2 {
        size: usize,
    }
    impl Default for Inner {
        fn default() -> Self {
            Inner {
                layers: 2,
                lr: 1e-3,
                kind: Kind::Plain,
                tag: None,
            }
        }
    }
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Top {
        name: String,
        inner: Inner,
    }
    impl Validate for Top {
        fn validate(&self) -> Vec<(String, String)> {
            let mut out = Vec::new();
            if self.inner.layers == 0 {
                out.push(("inner.layers".into(), "must be >= 1".into()));
            }
            if self.inner.lr <= 0.0 {
                out.push(("inner.lr".into(), "must be > 0".into()));
            }
            out
        }
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.ron");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn round_trip_with_defaults_and_variants() {
        let (_d, path) = write("Top(name: \"x\", inner: (kind: Wrapped(size: 3), tag: \"t\"))");
        let top: Top = load(&path, &[]).unwrap();
        assert_eq!(top.inner.layers, 2);
        assert_eq!(top.inner.kind, Kind::Wrapped(Inner2 { size: 3 }));
        assert_eq!(top.inner.tag.as_deref(), Some("t"));
        let text = to_ron_string(&top);
        let back: Top = from_ron_str(&text, "saved").unwrap();
        assert_eq!(back, top);
    }

    #[test]
    fn unknown_field_reports_line_column_and_path() {
        let (_d, path) = write("(\n  name: \"x\",\n  inner: (\n    layrs: 3,\n  ),\n)");
        let err = load::<Top>(&path, &[]).unwrap_err();
        let message = err.to_string();
        match err {
            ConfigError::Parse { line, field, .. } => {
                assert_eq!(line, 4, "{message}");
                assert_eq!(field.as_deref(), Some("inner.layrs"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(message.contains("c.ron:4:"), "{message}");
    }

    #[test]
    fn wrong_type_and_malformed_syntax() {
        let (_d, path) = write("(inner: (layers: \"two\"))");
        let message = load::<Top>(&path, &[]).unwrap_err().to_string();
        assert!(
            message.contains(":1:") && message.contains("inner.layers"),
            "{message}"
        );
        let (_d, path) = write("(\n inner: (layers: 2,)\n name: \"x\"");
        let message = load::<Top>(&path, &[]).unwrap_err().to_string();
        assert!(
            message.contains("c.ron:2:") || message.contains("c.ron:3:"),
            "{message}"
        );
        assert!(!message.contains('?'), "{message}");
    }

    #[test]
    fn all_invalid_values_are_reported_together() {
        let (_d, path) = write("(inner: (layers: 0, lr: -1.0))");
        match load::<Top>(&path, &[]).unwrap_err() {
            ConfigError::Invalid { problems, .. } => {
                let paths: Vec<_> = problems.iter().map(|p| p.0.as_str()).collect();
                assert_eq!(paths, ["inner.layers", "inner.lr"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn overrides_set_fields_variants_and_report_bad_paths() {
        let (_d, path) = write("(name: \"x\")");
        let top: Top = load(
            &path,
            &[
                "inner.layers=5".into(),
                "inner.kind=Sink(k: true)".into(),
                "inner.tag=Some(\"q\")".into(),
                "name=\"renamed\"".into(),
            ],
        )
        .unwrap();
        assert_eq!(top.inner.layers, 5);
        assert_eq!(top.inner.kind, Kind::Sink { k: true });
        assert_eq!(top.inner.tag.as_deref(), Some("q"));
        assert_eq!(top.name, "renamed");
        // Fields of a variant chosen by an earlier override can be set next.
        let top: Top = load(
            &path,
            &[
                "inner.kind=Sink(k: false)".into(),
                "inner.kind.k=true".into(),
            ],
        )
        .unwrap();
        assert_eq!(top.inner.kind, Kind::Sink { k: true });

        let message = load::<Top>(&path, &["inner.layer=3".into()])
            .unwrap_err()
            .to_string();
        assert!(message.contains("did you mean layers"), "{message}");
        let message = load::<Top>(&path, &["inner.layers=\"x\"".into()])
            .unwrap_err()
            .to_string();
        assert!(message.contains("inner.layers"), "{message}");
        let message = load::<Top>(&path, &["inner.layers".into()])
            .unwrap_err()
            .to_string();
        assert!(message.contains("path.to.field=value"), "{message}");
        match load::<Top>(&path, &["inner.layers=0".into()]).unwrap_err() {
            ConfigError::Invalid { problems, .. } => assert_eq!(problems[0].0, "inner.layers"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_keeps_its_field_path() {
        // `2.5` for an integer stops ron after `2`, where serde has no field name yet.
        let (_d, path) = write("(\n  name: \"x\",\n  inner: (lr: 0.5, layers: 2.5),\n)");
        let message = load::<Top>(&path, &[]).unwrap_err().to_string();
        assert!(message.contains("c.ron:3:"), "{message}");
        assert!(message.contains("field `inner.layers`"), "{message}");
        assert!(!message.contains('?'), "{message}");
        let (_d, path) = write("(name: \"x\")");
        let message = load::<Top>(&path, &["inner.layers=2.5".into()])
            .unwrap_err()
            .to_string();
        assert!(message.contains("inner.layers"), "{message}");
        assert!(!message.contains('?'), "{message}");
    }

    #[test]
    fn a_byte_order_mark_is_named() {
        let (_d, path) = write("\u{FEFF}(name: \"x\")");
        let message = load::<Top>(&path, &[]).unwrap_err().to_string();
        assert!(message.contains("c.ron:1:1"), "{message}");
        assert!(message.contains("byte-order mark (BOM)"), "{message}");
    }

    #[test]
    fn deep_nesting_is_an_error_in_files_and_overrides() {
        let deep = format!("{}1{}", "(".repeat(60_000), ")".repeat(60_000));
        // In a file the typed reader stops at the first `(` where a number belongs.
        let (_d, path) = write(&format!("(name: \"x\", inner: (layers: {deep}))"));
        let message = load::<Top>(&path, &[]).unwrap_err().to_string();
        assert!(
            message.contains("c.ron:1:28: field `inner.layers`"),
            "{message}"
        );
        // An override is parsed as a value tree first.
        let (_d, path) = write("(name: \"x\")");
        let message = load::<Top>(&path, &[format!("inner.layers={deep}")])
            .unwrap_err()
            .to_string();
        assert!(message.contains("nested more than 128"), "{message}");
        // Within the limit but still not a number: an ordinary type error.
        let message = load::<Top>(&path, &["inner.layers=((1))".into()])
            .unwrap_err()
            .to_string();
        assert!(message.contains("inner.layers"), "{message}");
    }

    #[test]
    fn field_before_finds_the_innermost_open_struct() {
        let text = "(a: 1, b: (c: \"x: y\", // d: 2\n e: 3.5), f: [1, 2]  x)";
        let at = |needle: &str| {
            let i = text.find(needle).unwrap();
            let line = 1 + text[..i].matches('\n').count();
            let col = 1 + text[..i].rsplit('\n').next().unwrap().chars().count();
            field_before(text, line, col)
        };
        assert_eq!(at(".5").as_deref(), Some("e"));
        assert_eq!(at("  x)").as_deref(), Some("f"));
        assert_eq!(at("c:"), None, "inside b's struct, before its first field");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = load::<Top>(Path::new("/nonexistent/x.ron"), &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/x.ron"));
    }

    #[test]
    fn differing_fields_are_named() {
        let a = Top::default();
        let mut b = a.clone();
        b.inner.layers = 7;
        assert_eq!(differing_fields(&a, &b), vec!["inner.layers".to_string()]);
    }
}
