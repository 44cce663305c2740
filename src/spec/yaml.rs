//! One spec file as text + parsed YAML value + position index, and the typed accessors the
//! validators use to report problems at the right place (including value formats more than
//! one parser takes, such as an http(s) URL). Owns the size/UTF-8/YAML-bomb guards and
//! syntax diagnostics; must not know what any field means.

use super::pos::{PosIndex, YPath};
use crate::diag::{Diagnostic, Diagnostics, Location, codes};
use serde_yaml::Value;
use std::path::{Path, PathBuf};

/// Files larger than this are refused.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;
/// More alias uses (`*name`) than this in one file are refused.
pub const MAX_ALIASES: usize = 64;
/// Deeper flow/block nesting than this is refused.
pub const MAX_DEPTH: usize = 48;
/// More YAML values (scalars, list items, mappings) than this in one file are refused
/// before the YAML parser builds them: ~20,000 keys of ordinary size, or 3.5 MiB of
/// `[{},{},...]`. Counted by the pre-scan (an upper bound of the parser's count).
pub const MAX_NODES: usize = 500_000;

/// The entry `name` among a mapping's `(key, value)` pairs (as `Ctx::mapping` returns them).
pub fn field<'v>(fields: &[(String, &'v Value)], name: &str) -> Option<&'v Value> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

/// A parsed file.
pub struct Doc {
    pub file: PathBuf,
    pub value: Value,
    pub pos: PosIndex,
}

impl Doc {
    pub fn loc(&self, path: &YPath) -> Location {
        let p = self.pos.nearest(path);
        Location::new(&self.file, p.line, p.column)
    }
    pub fn key_loc(&self, path: &YPath) -> Location {
        let p = self.pos.nearest_key(path);
        Location::new(&self.file, p.line, p.column)
    }
}

/// Check the guards and parse `bytes`. Returns the text (when UTF-8) and the doc (when
/// it parsed); problems go to `diags`.
pub fn parse(file: &Path, bytes: &[u8], diags: &mut Diagnostics) -> (Option<String>, Option<Doc>) {
    if bytes.len() > MAX_FILE_BYTES {
        diags.push(
            Diagnostic::error(
                codes::TOO_LARGE,
                format!(
                    "file is {} bytes, more than the {} MiB limit",
                    bytes.len(),
                    MAX_FILE_BYTES / 1024 / 1024
                ),
            )
            .at(Location::new(file, 1, 1))
            .hint("split the keys into several files under keys/"),
        );
        return (None, None);
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.to_string(),
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let line = good.iter().filter(|b| **b == b'\n').count() + 1;
            let col = good.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            diags.push(
                Diagnostic::error(codes::NOT_UTF8, "file is not valid UTF-8")
                    .at(Location::new(file, line, col))
                    .hint("save the file as UTF-8"),
            );
            return (None, None);
        }
    };
    if let Some(d) = complexity(file, &text) {
        diags.push(d);
        return (Some(text), None);
    }
    match serde_yaml::from_str::<Value>(&text) {
        Ok(mut value) => {
            // YAML merge keys (`<<: *defaults`) are applied, as most YAML tools do.
            if let Err(e) = value.apply_merge() {
                let line = text
                    .lines()
                    .position(|l| l.contains("<<"))
                    .map_or(1, |i| i + 1);
                diags.push(
                    Diagnostic::error(codes::YAML_SYNTAX, format!("YAML merge key error: {e}"))
                        .at(Location::new(file, line, 1))
                        .hint("`<<:` takes a mapping (`<<: *defaults`) or a list of mappings"),
                );
                return (Some(text), None);
            }
            let pos = PosIndex::build(&text);
            (
                Some(text),
                Some(Doc {
                    file: file.to_path_buf(),
                    value,
                    pos,
                }),
            )
        }
        Err(e) => {
            let (mut line, mut col) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            // libyaml reports end-of-input errors one line past the end: point at the last line.
            let last = text.lines().count().max(1);
            if line > last {
                line = last;
                col = text.lines().last().map_or(0, |l| l.chars().count()) + 1;
            }
            let raw = e.to_string();
            let msg = raw.split(" at line ").next().unwrap_or(&raw).to_string();
            let (code, hint) = if msg.contains("recursion limit")
                || msg.contains("repetition limit")
            {
                (
                    codes::YAML_TOO_COMPLEX,
                    "simplify the document: no deep nesting, no alias expansion",
                )
            } else if msg.contains("more than one document") {
                (
                    codes::YAML_SYNTAX,
                    "one YAML document per file: remove the `---` separators, or split the file",
                )
            } else {
                (
                    codes::YAML_SYNTAX,
                    "check indentation, quoting and that `key: value` pairs have a space after the colon",
                )
            };
            diags.push(
                Diagnostic::error(code, format!("YAML syntax error: {msg}"))
                    .at(Location::new(file, line, col))
                    .hint(hint),
            );
            (Some(text), None)
        }
    }
}

/// Cheap pre-scan (one pass, linear) against YAML bombs and oversized documents: alias
/// count, nesting depth and the number of values.
fn complexity(file: &Path, text: &str) -> Option<Diagnostic> {
    let mut aliases = 0usize;
    let mut nodes = 0usize;
    for (n, line) in text.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let indent = chars
            .iter()
            .take_while(|c| **c == ' ' || **c == '-')
            .count();
        // A line with content is a value at least; each block list dash opens another.
        let first = chars[indent..].iter().find(|c| !c.is_whitespace());
        if first.is_some_and(|c| *c != '#') || chars[..indent].contains(&'-') {
            nodes += 1 + chars[..indent].iter().filter(|c| **c == '-').count();
        }
        // Rough block depth: every two columns of indentation is a level at most.
        let mut depth = indent / 2;
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for &c in &chars {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '#' if prev.is_whitespace() => break,
                    '"' | '\'' if prev.is_whitespace() || matches!(prev, '[' | '{' | ',' | ':') => {
                        quote = Some(c)
                    }
                    '[' | '{' => {
                        depth += 1;
                        nodes += 1;
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    ',' => nodes += 1,
                    '*' if prev.is_whitespace() || matches!(prev, '[' | '{' | ',' | ':') => {
                        aliases += 1
                    }
                    _ => {}
                },
            }
            if depth > MAX_DEPTH {
                return Some(
                    Diagnostic::error(
                        codes::YAML_TOO_COMPLEX,
                        format!("nesting deeper than {MAX_DEPTH} levels"),
                    )
                    .at(Location::new(file, n + 1, 1))
                    .hint("spec files are shallow; this looks like a mistake or a YAML bomb"),
                );
            }
            prev = c;
        }
        if nodes > MAX_NODES {
            return Some(
                Diagnostic::error(
                    codes::YAML_TOO_COMPLEX,
                    format!("more than {MAX_NODES} YAML values in one file"),
                )
                .at(Location::new(file, n + 1, 1))
                .hint("split the keys into several files under keys/ (a file holds at most 20000 keys)"),
            );
        }
        if aliases > MAX_ALIASES {
            return Some(
                Diagnostic::error(codes::YAML_TOO_COMPLEX, format!("more than {MAX_ALIASES} YAML aliases (`*name`)"))
                    .at(Location::new(file, n + 1, 1))
                    .hint("write the values out; alias-heavy documents are refused as possible YAML bombs"),
            );
        }
    }
    None
}

/// A short name for a value's type, for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The closest candidate to `word`, if close enough to suggest.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(word, c);
        if score >= 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// `did you mean `x`?` or a fallback listing the choices.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str> + Clone,
    what: &str,
) -> String {
    match suggest(word, candidates.clone()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => {
            let all: Vec<&str> = candidates.into_iter().collect();
            if all.is_empty() {
                format!("no {what} is defined")
            } else if all.len() <= 12 {
                format!("known {what}: {}", all.join(", "))
            } else {
                format!("there are {} {what}; check the spelling", all.len())
            }
        }
    }
}

/// Validation context for one document: accessors that report into `diags`.
pub struct Ctx<'a> {
    pub doc: &'a Doc,
    pub diags: &'a mut Diagnostics,
}

impl<'a> Ctx<'a> {
    pub fn loc(&self, p: &YPath) -> Location {
        self.doc.loc(p)
    }
    pub fn key_loc(&self, p: &YPath) -> Location {
        self.doc.key_loc(p)
    }
    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }
    pub fn err(
        &mut self,
        code: &'static str,
        p: &YPath,
        msg: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let d = Diagnostic::error(code, msg).at(self.loc(p)).hint(hint);
        self.diags.push(d);
    }
    pub fn warn(
        &mut self,
        code: &'static str,
        p: &YPath,
        msg: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let d = Diagnostic::warning(code, msg).at(self.loc(p)).hint(hint);
        self.diags.push(d);
    }

    /// An error (`code`) for each of `names` present in `fields`: they do not apply `here`
    /// (e.g. "a sqlite store").
    pub fn not_applicable(
        &mut self,
        code: &'static str,
        fields: &[(String, &Value)],
        p: &YPath,
        names: &[&str],
        here: &str,
        hint: &str,
    ) {
        for f in names {
            if field(fields, f).is_some() {
                let msg = format!("`{f}` does not apply to {here}");
                self.err(code, &p.key(f), msg, hint);
            }
        }
    }

    pub fn wrong_type(&mut self, p: &YPath, v: &Value, expected: &str) {
        self.err(
            codes::WRONG_TYPE,
            p,
            format!("`{p}` must be {expected}, found {}", type_name(v)),
            format!("write `{p}` as {expected}"),
        );
    }

    /// The value as a mapping with string keys; reports wrong type / unknown fields.
    /// Returns `(key, value)` pairs for the allowed fields.
    pub fn mapping<'v>(
        &mut self,
        v: &'v Value,
        p: &YPath,
        allowed: &[&str],
    ) -> Option<Vec<(String, &'v Value)>> {
        let m = match v {
            Value::Mapping(m) => m,
            _ => {
                self.wrong_type(p, v, "a mapping");
                return None;
            }
        };
        let mut out = Vec::new();
        for (k, val) in m {
            let Some(k) = scalar_key(k) else {
                self.err(
                    codes::WRONG_TYPE,
                    p,
                    format!("`{p}` has a key that is not a string"),
                    "use plain string keys",
                );
                continue;
            };
            if !allowed.is_empty() && !allowed.contains(&k.as_str()) {
                let fp = p.key(&k);
                let hint = match suggest(&k, allowed.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("allowed fields here: {}", allowed.join(", ")),
                };
                let d = Diagnostic::error(codes::UNKNOWN_FIELD, format!("unknown field `{k}`"))
                    .at(self.key_loc(&fp))
                    .hint(hint);
                self.diags.push(d);
                continue;
            }
            out.push((k, val));
        }
        Some(out)
    }

    /// A list value (null counts as empty).
    pub fn seq<'v>(&mut self, v: &'v Value, p: &YPath) -> Option<&'v [Value]> {
        match v {
            Value::Sequence(s) => Some(s),
            Value::Null => Some(&[]),
            _ => {
                self.wrong_type(p, v, "a list");
                None
            }
        }
    }

    /// A string (identifiers, scope names...). Numbers and booleans are refused.
    pub fn string(&mut self, v: &Value, p: &YPath) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.wrong_type(p, v, "a string");
                None
            }
        }
    }

    /// Free text: strings, numbers and booleans are taken as text.
    pub fn text(&mut self, v: &Value, p: &YPath) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                self.wrong_type(p, v, "a string");
                None
            }
        }
    }

    pub fn boolean(&mut self, v: &Value, p: &YPath) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => {
                self.wrong_type(p, v, "`true` or `false`");
                None
            }
        }
    }

    pub fn uint(&mut self, v: &Value, p: &YPath) -> Option<u64> {
        match v {
            Value::Number(n) if n.as_u64().is_some() => n.as_u64(),
            _ => {
                self.wrong_type(p, v, "a whole number (0 or more)");
                None
            }
        }
    }

    pub fn missing(&mut self, parent: &YPath, field: &str, hint: impl Into<String>) {
        let d = Diagnostic::error(
            codes::MISSING_FIELD,
            format!("missing required field `{field}`"),
        )
        .at(self.key_loc(parent))
        .hint(hint);
        self.diags.push(d);
    }

    /// A duration longer than zero (lifetimes, rotation periods).
    pub fn positive_span(&mut self, v: &Value, p: &YPath) -> Option<super::model::Span> {
        let s = self.span(v, p)?;
        if s.seconds == 0 {
            self.err(
                codes::BAD_DURATION,
                p,
                format!("`{p}` must be longer than 0"),
                "e.g. `90d`; write `never` for no limit where that is allowed",
            );
            return None;
        }
        Some(s)
    }

    /// A duration like `90d`.
    pub fn span(&mut self, v: &Value, p: &YPath) -> Option<super::model::Span> {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                self.wrong_type(p, v, "a duration such as `90d`");
                return None;
            }
        };
        let parsed = super::model::Span::parse(&s);
        if parsed.is_none() {
            self.err(
                codes::BAD_DURATION,
                p,
                format!("`{s}` is not a duration"),
                "write a whole number and a unit: `90d`, `12h`, `30m`, `45s`, `2w`, `1y` (365d)",
            );
        }
        parsed
    }
}

fn scalar_key(k: &Value) -> Option<String> {
    match k {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The value as an http(s) URL (`http://` or `https://`); `hint` says what to write.
pub fn http_url(
    ctx: &mut Ctx,
    v: &Value,
    p: &YPath,
    code: &'static str,
    hint: &str,
) -> Option<String> {
    let u = ctx.string(v, p)?;
    if u.starts_with("http://") || u.starts_with("https://") {
        return Some(u);
    }
    ctx.err(code, p, format!("`{u}` is not an http(s) URL"), hint);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_have_a_location() {
        let mut ds = Diagnostics::default();
        let (_, doc) = parse(Path::new("k.yaml"), b"a: 1\nb: [1, 2\nc: 3\n", &mut ds);
        assert!(doc.is_none());
        let d = &ds.0[0];
        assert_eq!(d.code, codes::YAML_SYNTAX);
        assert!(d.location.as_ref().is_some_and(|l| l.line >= 2), "{d:?}");
        assert!(!d.message.contains(" at line "), "{}", d.message);
    }

    #[test]
    fn bombs_and_bad_bytes_are_refused() {
        let mut bomb = String::from("a: &a [x, x, x]\n");
        for i in 0..80 {
            bomb.push_str(&format!("b{i}: [*a, *a]\n"));
        }
        let mut ds = Diagnostics::default();
        assert!(
            parse(Path::new("k.yaml"), bomb.as_bytes(), &mut ds)
                .1
                .is_none()
        );
        assert_eq!(ds.0[0].code, codes::YAML_TOO_COMPLEX);

        let mut ds = Diagnostics::default();
        let deep = format!("a: {}{}\n", "[".repeat(200), "]".repeat(200));
        assert!(
            parse(Path::new("k.yaml"), deep.as_bytes(), &mut ds)
                .1
                .is_none()
        );
        assert_eq!(ds.0[0].code, codes::YAML_TOO_COMPLEX);

        let mut ds = Diagnostics::default();
        assert!(
            parse(Path::new("k.yaml"), b"a: 1\nb: \xff\n", &mut ds)
                .1
                .is_none()
        );
        assert_eq!(ds.0[0].code, codes::NOT_UTF8);
        assert_eq!(
            ds.0[0].location.as_ref().map(|l| (l.line, l.column)),
            Some((2, 4))
        );

        let mut ds = Diagnostics::default();
        let big = vec![b'#'; MAX_FILE_BYTES + 1];
        assert!(parse(Path::new("k.yaml"), &big, &mut ds).1.is_none());
        assert_eq!(ds.0[0].code, codes::TOO_LARGE);
    }

    #[test]
    fn several_documents_get_a_specific_hint() {
        let mut ds = Diagnostics::default();
        let (_, doc) = parse(Path::new("k.yaml"), b"keys: []\n---\nkeys: []\n", &mut ds);
        assert!(doc.is_none());
        assert_eq!(ds.0[0].code, codes::YAML_SYNTAX);
        assert!(
            ds.0[0]
                .hint
                .as_deref()
                .is_some_and(|h| h.contains("one YAML document per file")),
            "{:?}",
            ds.0[0]
        );
    }

    #[test]
    fn merge_keys_are_applied() {
        let text = "base: &b { store: prod, owner: jdoe }\nkey:\n  <<: *b\n  name: x\n";
        let mut ds = Diagnostics::default();
        let (_, doc) = parse(Path::new("k.yaml"), text.as_bytes(), &mut ds);
        let doc = doc.expect("parses");
        assert_eq!(doc.value["key"]["store"].as_str(), Some("prod"));
        assert!(doc.value["key"].get("<<").is_none());
        let (_, doc) = parse(Path::new("k.yaml"), b"key:\n  <<: 3\n", &mut ds);
        assert!(doc.is_none());
        assert_eq!(ds.0[0].code, codes::YAML_SYNTAX);
        assert_eq!(ds.0[0].location.as_ref().map(|l| l.line), Some(2));
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("ownr", ["owner", "store", "name"]),
            Some("owner".into())
        );
        assert_eq!(suggest("zzz", ["owner", "store"]), None);
    }
}
