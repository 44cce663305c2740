//! Diagnostics: user-facing problems with a stable code, a place (file:line:col) and a hint.
//! Owns the `Diagnostic` type and its rendering; must not decide *what* is wrong (spec/policy do).

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// How bad a diagnostic is. Errors stop plan/apply; warnings are shown and do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A place in a source file (1-based line and column). `file` is relative to the repo root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub fn new(file: impl Into<PathBuf>, line: usize, column: usize) -> Self {
        Self {
            file: file.into(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem found in a spec. `code` is stable (documented in docs/diagnostics.md);
/// `message` says what is wrong, `hint` what to do. Neither may contain secret material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    pub location: Option<Location>,
    /// Other places involved (e.g. the first definition of a duplicate).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<(String, Location)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// KW009 only: the diagnostics this one stands for (not reported one by one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub omitted: Option<Omitted>,
}

/// How many diagnostics were left out of a report (see `spec::MAX_REPORTED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Omitted {
    pub errors: usize,
    pub warnings: usize,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            severity: Severity::Error,
            message: message.into(),
            location: None,
            related: Vec::new(),
            hint: None,
            omitted: None,
        }
    }
    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, message)
        }
    }
    pub fn at(mut self, loc: Location) -> Self {
        self.location = Some(loc);
        self
    }
    pub fn at_opt(mut self, loc: Option<Location>) -> Self {
        self.location = loc;
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn related(mut self, what: impl Into<String>, loc: Location) -> Self {
        self.related.push((what.into(), loc));
        self
    }
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// One-line-plus-hint plain form: `file:line:col: error[KW101]: message` then `  hint: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        write!(f, "{sev}[{}]: {}", self.code, self.message)?;
        for (what, loc) in &self.related {
            write!(f, "\n  note: {what} at {loc}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// A list of diagnostics, sorted for stable output.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }
    /// Errors, counting those a KW009 stands for.
    pub fn error_count(&self) -> usize {
        self.0
            .iter()
            .map(|d| d.omitted.map_or(usize::from(d.is_error()), |o| o.errors))
            .sum()
    }
    /// Warnings, counting those a KW009 stands for.
    pub fn warning_count(&self) -> usize {
        self.0
            .iter()
            .map(|d| d.omitted.map_or(usize::from(!d.is_error()), |o| o.warnings))
            .sum()
    }
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            (a.location.as_ref(), a.code, &a.message).cmp(&(
                b.location.as_ref(),
                b.code,
                &b.message,
            ))
        });
    }
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Every diagnostic code, in one place. Each is documented in `docs/diagnostics.md`
/// (a test checks that every `KWnnn` used under `src/` is unique here and documented).
pub mod codes {
    // KW0xx: reading files and the shape of the YAML.
    /// A file could not be read.
    pub const IO: &str = "KW001";
    /// A file is not valid UTF-8.
    pub const NOT_UTF8: &str = "KW002";
    /// A file, the spec or a key file is over a size limit (bytes, files, keys).
    pub const TOO_LARGE: &str = "KW003";
    /// A symlink points outside the repository.
    pub const SYMLINK_OUTSIDE: &str = "KW004";
    /// YAML syntax error.
    pub const YAML_SYNTAX: &str = "KW005";
    /// Too many aliases or too deep nesting (YAML bomb guard).
    pub const YAML_TOO_COMPLEX: &str = "KW006";
    /// keyward.yaml or people.yaml is missing.
    pub const MISSING_FILE: &str = "KW007";
    /// A key file is empty (warning).
    pub const EMPTY_FILE: &str = "KW008";
    /// More diagnostics than are reported: the count of the rest.
    pub const TOO_MANY_DIAGNOSTICS: &str = "KW009";
    /// A field that does not exist at this place.
    pub const UNKNOWN_FIELD: &str = "KW010";
    /// A value of the wrong type (a list where a string belongs, ...).
    pub const WRONG_TYPE: &str = "KW011";
    /// A required field is missing.
    pub const MISSING_FIELD: &str = "KW012";
    /// `version` is not one this keyward understands.
    pub const UNSUPPORTED_VERSION: &str = "KW013";
    /// A value outside its allowed set (`state`, `kind`, ...).
    pub const INVALID_VALUE: &str = "KW014";
    /// A malformed duration (`90d`).
    pub const BAD_DURATION: &str = "KW015";
    /// A malformed date (`2027-06-30`).
    pub const BAD_DATE: &str = "KW016";
    /// A malformed quota (`1000/day`).
    pub const BAD_QUOTA: &str = "KW017";
    /// An invalid identifier for a store, person, service or team.
    pub const INVALID_ID: &str = "KW018";

    // KW1xx: references and meaning across files.
    pub const UNKNOWN_STORE: &str = "KW101";
    pub const UNKNOWN_OWNER: &str = "KW102";
    pub const UNKNOWN_RECIPIENT: &str = "KW103";
    pub const UNKNOWN_TEAM: &str = "KW104";
    pub const UNKNOWN_AREA: &str = "KW105";
    pub const UNKNOWN_LEVEL: &str = "KW106";
    pub const MALFORMED_SCOPE: &str = "KW107";
    pub const DUPLICATE_KEY: &str = "KW108";
    pub const INVALID_KEY_NAME: &str = "KW109";
    pub const EXPIRES_AND_LIFETIME: &str = "KW110";
    pub const EMPTY_SCOPES: &str = "KW111";
    /// Warning.
    pub const REDUNDANT_SCOPE: &str = "KW112";
    pub const INVALID_RECIPIENT: &str = "KW113";
    pub const PRIVATE_KEY: &str = "KW114";
    pub const UNKNOWN_MEMBER: &str = "KW115";
    pub const NO_RECIPIENTS: &str = "KW116";
    pub const DUPLICATE_PRINCIPAL: &str = "KW117";
    pub const OWNER_NOT_PERSON: &str = "KW118";
    pub const INVALID_CATALOGUE: &str = "KW119";
    pub const DEFAULT_EXCEEDS_MAX: &str = "KW120";
    /// Warning.
    pub const GRACE_EXCEEDS_PERIOD: &str = "KW121";
    /// Warning.
    pub const DUPLICATE_RECIPIENT: &str = "KW122";
    /// Warning.
    pub const EMPTY_TEAM: &str = "KW123";
    pub const INVALID_STORE: &str = "KW124";
    pub const PROTECTED_TOMBSTONE: &str = "KW125";
    /// `unused_after` shorter than a day.
    pub const UNUSED_AFTER_TOO_SHORT: &str = "KW126";
    /// A place keyward would send a token or a notification that it must not: a webhook on
    /// a non-public address (without `allow_private`) or with user info in its URL, a store
    /// `token_env` outside `KEYWARD_*`.
    pub const UNSAFE_ENDPOINT: &str = "KW130";
    /// A secret-shaped string (a keyward secret, a scanner-known token format, an Alma/Primo
    /// key) in a spec file; private keys are KW114.
    pub const SECRET_IN_SPEC: &str = "KW140";
    /// `delivery.outbox` outside the key repository.
    pub const OUTBOX_OUTSIDE: &str = "KW160";
    /// `delivery.outbox` overlapping `.keyward/`, a store's database or a console ledger.
    pub const OUTBOX_OVERLAP: &str = "KW161";

    // KW2xx: policy (src/policy.rs).
    pub const FORBIDDEN_SCOPE: &str = "KW201";
    pub const BEYOND_OWNER_GRANT: &str = "KW202";
    pub const LIFETIME_TOO_LONG: &str = "KW203";
    pub const NEVER_EXPIRES: &str = "KW204";
    pub const TOO_MANY_KEYS: &str = "KW205";
    pub const TOO_FEW_RECIPIENTS: &str = "KW206";
    /// Warning.
    pub const ALREADY_EXPIRED: &str = "KW207";
    pub const MISSING_REQUIRED_FIELD: &str = "KW208";
    pub const MISSING_REQUIRED_LABEL: &str = "KW209";
    pub const NAME_PATTERN: &str = "KW210";
    pub const ENVIRONMENT_MISMATCH: &str = "KW211";
    /// Warning: `unused_after` over keys of a store that keeps no usage.
    pub const UNUSED_NOT_VISIBLE: &str = "KW212";

    // KW4xx: console stores (src/console): ledgers and the vendors' presets.
    /// A ledger names another store or vendor than keyward.yaml.
    pub const LEDGER_MISMATCH: &str = "KW401";
    /// A key name or id appears twice in a ledger.
    pub const LEDGER_DUPLICATE: &str = "KW402";
    /// A ledger entry does not fit the format (type, fingerprint, generation, step).
    pub const LEDGER_INVALID: &str = "KW403";
    /// A `keyward import --store` template for a console store has problems.
    pub const IMPORT_TEMPLATE: &str = "KW404";
    /// A scope the console does not offer.
    pub const CONSOLE_SCOPE: &str = "KW410";
    /// More than one scope where the console takes exactly one (OpenAthens).
    pub const CONSOLE_ONE_SCOPE: &str = "KW411";
    /// An expiry the console cannot have (none where it always sets one, beyond its maximum).
    pub const CONSOLE_EXPIRY: &str = "KW412";
    /// More keys for one owner than the console allows.
    pub const CONSOLE_PER_OWNER: &str = "KW413";
    /// A key field a console store cannot honour (a quota: the vendor counts calls).
    pub const CONSOLE_FIELD: &str = "KW414";
    /// An environment the console does not have.
    pub const CONSOLE_ENVIRONMENT: &str = "KW415";
    /// A key field its store cannot honour, by the store's capabilities (an expiry where
    /// keys never expire, a quota where nothing counts calls, `state: disabled` where keys
    /// cannot be disabled).
    pub const STORE_CANNOT: &str = "KW430";
}

/// Source texts by path relative to the repository root, for caret rendering.
pub type Sources = std::collections::BTreeMap<PathBuf, String>;

/// Sources from raw file bytes (lossy for non-UTF-8 files, which are reported anyway).
pub fn sources_from_files(files: &std::collections::BTreeMap<PathBuf, Vec<u8>>) -> Sources {
    files
        .iter()
        .map(|(p, b)| (p.clone(), String::from_utf8_lossy(b).into_owned()))
        .collect()
}

/// Replace every secret-shaped string in `text` (private keys, keyward secrets, the token
/// formats secret scanners know: see [`crate::leak`]) with `<redacted>`, so no message,
/// hint or echoed source line can leak it.
pub fn redact(text: &str) -> String {
    crate::leak::redact(text)
}

struct Palette {
    error: &'static str,
    warning: &'static str,
    gutter: &'static str,
    bold: &'static str,
    reset: &'static str,
}

const COLOR: Palette = Palette {
    error: "\x1b[1;31m",
    warning: "\x1b[1;33m",
    gutter: "\x1b[1;34m",
    bold: "\x1b[1m",
    reset: "\x1b[0m",
};
const PLAIN: Palette = Palette {
    error: "",
    warning: "",
    gutter: "",
    bold: "",
    reset: "",
};

/// Length (in chars) of the token starting at `col` (0-based char index) in `line`.
fn token_len(line: &[char], col: usize) -> usize {
    let Some(&first) = line.get(col) else {
        return 1;
    };
    if first == '"' || first == '\'' {
        let mut i = col + 1;
        while i < line.len() {
            if line[i] == first && !(first == '"' && line[i - 1] == '\\') {
                return i - col + 1;
            }
            i += 1;
        }
        return line.len() - col;
    }
    if matches!(first, '[' | '{') {
        let close = if first == '[' { ']' } else { '}' };
        let mut depth = 0usize;
        for (i, &c) in line.iter().enumerate().skip(col) {
            if c == first {
                depth += 1;
            } else if c == close {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i - col + 1;
                }
            }
        }
        return line.len() - col;
    }
    let mut n = 0;
    while let Some(&c) = line.get(col + n) {
        let key_end = c == ':' && line.get(col + n + 1).is_none_or(|n| n.is_whitespace());
        if c.is_whitespace() || matches!(c, ',' | ']' | '}' | '#') || key_end {
            break;
        }
        n += 1;
    }
    n.max(1)
}

/// `mark` underlines the place: `^` in the severity's colour for the primary place, `-`
/// for related ones.
fn render_snippet(
    out: &mut String,
    loc: &Location,
    sources: &Sources,
    withheld: &Withheld,
    p: &Palette,
    width: usize,
    mark: (char, &str),
) {
    let pad = " ".repeat(width);
    out.push_str(&format!("{pad}{}-->{} {loc}\n", p.gutter, p.reset));
    let Some(text) = sources.get(&loc.file) else {
        return;
    };
    let Some(line) = text.lines().nth(loc.line.saturating_sub(1)) else {
        return;
    };
    // Only a window of a very long line is shown; cut it before copying, so a megabyte
    // line costs one scan per diagnostic, not several copies.
    let (line, loc) = &window(line, loc);
    let line = line.replace('\t', " ");
    out.push_str(&format!("{pad} {}|{}\n", p.gutter, p.reset));
    let secret_line = withheld
        .get(&loc.file)
        .is_some_and(|lines| lines.contains(&loc.line));
    if secret_line || crate::recipient::looks_private(&line) {
        out.push_str(&format!(
            "{}{:>width$} |{} <line not shown: it contains secret or private key material>\n",
            p.gutter, loc.line, p.reset
        ));
        return;
    }
    let chars: Vec<char> = line.trim_end().chars().collect();
    let col = loc.column.saturating_sub(1).min(chars.len());
    let len = token_len(&chars, col);
    // A very long line (minified or hostile input) is shown as a window around the column.
    let start = if chars.len() > MAX_SNIPPET_CHARS {
        col.saturating_sub(MAX_SNIPPET_CHARS / 3)
    } else {
        0
    };
    let end = (start + MAX_SNIPPET_CHARS).min(chars.len());
    let len = len.min(end.saturating_sub(col).max(1));
    let before = if start > 0 { "..." } else { "" };
    let after = if end < chars.len() { "..." } else { "" };
    let shown: String = chars[start..end].iter().collect();
    out.push_str(&format!(
        "{}{:>width$} |{} {before}{shown}{after}\n",
        p.gutter, loc.line, p.reset,
    ));
    out.push_str(&format!(
        "{pad} {}|{} {}{}{}{}\n",
        p.gutter,
        p.reset,
        " ".repeat(col - start + before.len()),
        mark.1,
        mark.0.to_string().repeat(len),
        p.reset
    ));
}

/// Per file, the lines a secret-shaped string touches (a PEM block: all its lines).
type Withheld = std::collections::BTreeMap<PathBuf, std::collections::BTreeSet<usize>>;

fn withheld_lines(diags: &Diagnostics, sources: &Sources) -> Withheld {
    let files: std::collections::BTreeSet<&PathBuf> = diags
        .iter()
        .flat_map(|d| d.location.iter().chain(d.related.iter().map(|(_, l)| l)))
        .map(|l| &l.file)
        .collect();
    files
        .into_iter()
        .filter_map(|f| Some((f.clone(), crate::leak::lines_touched(sources.get(f)?))))
        .collect()
}

/// Source lines longer than this many characters are shown as a window around the column.
const MAX_SNIPPET_CHARS: usize = 160;

/// A long line cut to the characters around `loc.column` that the snippet may show (with a
/// margin, so the private-material check still sees a key that starts just outside the
/// window), and the location's column within the cut. Short lines are kept whole.
fn window<'a>(line: &'a str, loc: &Location) -> (std::borrow::Cow<'a, str>, Location) {
    const MARGIN: usize = MAX_SNIPPET_CHARS * 2;
    if line.len() <= MAX_SNIPPET_CHARS * 4 {
        return (line.into(), loc.clone());
    }
    let col = loc.column.saturating_sub(1);
    let from = col.saturating_sub(MARGIN);
    let mut idx = line.char_indices().map(|(i, _)| i).skip(from);
    let Some(start) = idx.next() else {
        return (line.into(), loc.clone());
    };
    let end = idx.nth(col - from + MARGIN).unwrap_or(line.len());
    let cut = Location {
        column: col - from + 1,
        ..loc.clone()
    };
    (line[start..end].into(), cut)
}

/// Compiler-style rendering: `error[KW102]: message`, ` --> file:line:col`, the source
/// line with a caret under the column, notes for related places and `= hint: ...`.
/// No ANSI escapes when `color` is false. Messages, hints and source lines pass through
/// [`redact`], so private key material is never echoed.
pub fn render(diags: &Diagnostics, sources: &Sources, color: bool) -> String {
    let p = if color { &COLOR } else { &PLAIN };
    let withheld = withheld_lines(diags, sources);
    let mut out = String::new();
    for d in diags.iter() {
        let (sev, sc) = match d.severity {
            Severity::Error => ("error", p.error),
            Severity::Warning => ("warning", p.warning),
        };
        let width = std::iter::once(&d.location)
            .flatten()
            .chain(d.related.iter().map(|(_, l)| l))
            .map(|l| l.line.to_string().len())
            .max()
            .unwrap_or(1);
        out.push_str(&format!(
            "{sc}{sev}[{}]{}{}: {}{}\n",
            d.code,
            p.reset,
            p.bold,
            redact(&d.message),
            p.reset
        ));
        if let Some(loc) = &d.location {
            render_snippet(&mut out, loc, sources, &withheld, p, width, ('^', sc));
        }
        for (what, loc) in &d.related {
            out.push_str(&format!(
                "{} {}={} note: {}\n",
                " ".repeat(width),
                p.gutter,
                p.reset,
                redact(what)
            ));
            render_snippet(&mut out, loc, sources, &withheld, p, width, ('-', p.gutter));
        }
        if let Some(h) = &d.hint {
            out.push_str(&format!(
                "{} {}={} hint: {}\n",
                " ".repeat(width),
                p.gutter,
                p.reset,
                redact(h)
            ));
        }
        out.push('\n');
    }
    out
}

/// `2 errors, 1 warning` (empty string when there is nothing).
pub fn summary(diags: &Diagnostics) -> String {
    let e = diags.error_count();
    let w = diags.warning_count();
    let plural = |n: usize, s: &str| {
        if n == 1 {
            format!("1 {s}")
        } else {
            format!("{n} {s}s")
        }
    };
    match (e, w) {
        (0, 0) => String::new(),
        (e, 0) => plural(e, "error"),
        (0, w) => plural(w, "warning"),
        (e, w) => format!("{}, {}", plural(e, "error"), plural(w, "warning")),
    }
}

/// Diagnostics as pretty JSON (`{"format_version": 1, "diagnostics": [...]}`), redacted.
pub fn to_json(diags: &Diagnostics) -> String {
    let redacted: Vec<Diagnostic> = diags
        .iter()
        .map(|d| Diagnostic {
            message: redact(&d.message),
            hint: d.hint.as_deref().map(redact),
            related: d
                .related
                .iter()
                .map(|(w, l)| (redact(w), l.clone()))
                .collect(),
            ..d.clone()
        })
        .collect();
    let doc = serde_json::json!({
        "format_version": 1,
        "errors": diags.error_count(),
        "warnings": diags.warning_count(),
        "diagnostics": redacted,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_very_long_line_is_shown_as_a_window_around_the_column() {
        let mut sources = Sources::new();
        let line = format!("keys: {}BAD{}", "[".repeat(100_000), "]".repeat(100_000));
        sources.insert(PathBuf::from("keys/a.yaml"), line);
        let mut ds = Diagnostics::default();
        ds.push(
            Diagnostic::error(codes::YAML_TOO_COMPLEX, "too deep").at(Location::new(
                "keys/a.yaml",
                1,
                100_007,
            )),
        );
        let text = render(&ds, &sources, false);
        assert!(text.len() < 1_000, "{} bytes", text.len());
        let shown = text.lines().find(|l| l.starts_with("1 |")).expect("line");
        let caret = text.lines().find(|l| l.contains('^')).expect("caret");
        let at = caret.find('^').expect("caret");
        assert_eq!(&shown[at..at + 3], "BAD", "{text}");
        assert!(
            shown.contains("...[[[") && shown.ends_with("]]..."),
            "{text}"
        );
    }

    #[test]
    fn render_points_a_caret_at_the_column() {
        let mut sources = Sources::new();
        sources.insert(
            PathBuf::from("keys/a.yaml"),
            "keys:\n  - name: x\n    owner: jdoo\n".into(),
        );
        let mut ds = Diagnostics::default();
        ds.push(
            Diagnostic::error(codes::UNKNOWN_OWNER, "unknown owner `jdoo`")
                .at(Location::new("keys/a.yaml", 3, 12))
                .hint("did you mean `jdoe`?"),
        );
        let text = render(&ds, &sources, false);
        assert!(
            text.contains("error[KW102]: unknown owner `jdoo`"),
            "{text}"
        );
        assert!(text.contains(" --> keys/a.yaml:3:12"), "{text}");
        assert!(
            text.contains("3 |     owner: jdoo\n  |            ^^^^\n"),
            "{text}"
        );
        assert!(text.contains("= hint: did you mean `jdoe`?"), "{text}");
        assert!(!text.contains('\x1b'));
        assert!(render(&ds, &sources, true).contains('\x1b'));
    }

    #[test]
    fn redact_removes_age_secret_keys() {
        let s = "got `AGE-SECRET-KEY-1ABCDEF` here";
        let r = redact(s);
        assert!(!r.contains("ABCDEF"), "{r}");
        assert!(r.contains("<redacted>"));
        assert_eq!(redact("plain text"), "plain text");
        assert_eq!(
            redact("a PRIVATE key was pasted"),
            "a PRIVATE key was pasted"
        );
        assert!(!redact("-----BEGIN OPENSSH PRIVATE KEY----- abc").contains("abc"));
    }

    #[test]
    fn json_has_the_documented_shape() {
        let mut ds = Diagnostics::default();
        ds.push(
            Diagnostic::error(
                codes::DUPLICATE_KEY,
                "key `a` is defined twice in store `s`",
            )
            .at(Location::new("keys/b.yaml", 2, 11))
            .related("first defined here", Location::new("keys/a.yaml", 2, 11))
            .hint("rename one"),
        );
        ds.push(Diagnostic::warning(codes::EMPTY_FILE, "empty").hint("AGE-SECRET-KEY-1ZZZZ"));
        let v: serde_json::Value = serde_json::from_str(&to_json(&ds)).unwrap_or_default();
        assert_eq!(v["format_version"], 1);
        assert_eq!(
            (v["errors"].as_u64(), v["warnings"].as_u64()),
            (Some(1), Some(1))
        );
        let d = &v["diagnostics"][0];
        assert_eq!(d["code"], "KW108");
        assert_eq!(d["severity"], "error");
        assert_eq!(d["location"]["file"], "keys/b.yaml");
        assert_eq!(
            (
                d["location"]["line"].as_u64(),
                d["location"]["column"].as_u64()
            ),
            (Some(2), Some(11))
        );
        assert_eq!(d["related"][0][0], "first defined here");
        assert_eq!(d["related"][0][1]["file"], "keys/a.yaml");
        assert_eq!(d["hint"], "rename one");
        assert_eq!(v["diagnostics"][1]["severity"], "warning");
        assert!(v["diagnostics"][1]["related"].is_null());
        assert_eq!(v["diagnostics"][1]["hint"], "<redacted>");
    }

    #[test]
    fn summary_counts() {
        let mut ds = Diagnostics::default();
        assert_eq!(summary(&ds), "");
        ds.push(Diagnostic::error("KW001", "a"));
        ds.push(Diagnostic::warning("KW008", "b"));
        ds.push(Diagnostic::warning("KW008", "c"));
        assert_eq!(summary(&ds), "1 error, 2 warnings");
    }
}
