//! Positions of YAML values: a line-based scanner mapping YAML paths (`keys[0].owner`) to
//! 1-based (line, column) of keys and values, so diagnostics can point at a value.
//! Owns only position lookup; must not interpret or validate values (serde_yaml parses).
//!
//! It understands block mappings and sequences (including compact `key:\n- item` and
//! `- key: value` items), flow collections (`{ kind: sqlite, path: x }`, `[a, b]`, also
//! spanning lines), quoted and plain scalars, block scalars (`|`, `>`), comments, anchors
//! and tags. Lines are exact; columns inside flow collections are best effort. Work is
//! linear in the input and bounded in depth, so hostile input cannot make it hang.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

/// One step of a YAML path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path from the document root, e.g. `keys[2].scopes[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct YPath(pub Vec<Seg>);

impl YPath {
    pub fn root() -> Self {
        YPath(Vec::new())
    }
    pub fn key(&self, k: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_string()));
        YPath(v)
    }
    pub fn idx(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        YPath(v)
    }
    pub fn parent(&self) -> Option<Self> {
        let mut v = self.0.clone();
        v.pop().map(|_| YPath(v))
    }
}

impl fmt::Display for YPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn new(line: usize, col0: usize) -> Self {
        Pos {
            line,
            column: col0 + 1,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: Option<Pos>,
    value: Pos,
}

/// Path -> position index of one YAML document.
///
/// Entries are keyed by a 64-bit foldhash of the path under a per-index random seed, not by
/// the path itself: no path is cloned or stored, which keeps building the index for a
/// large spec cheap in time and memory. Two distinct paths of one file would have to
/// collide in 64 random-keyed bits (about 1e-9 for 200,000 paths) for a diagnostic to
/// point at the wrong place; nothing but positions depends on this index. (SipHash, the
/// standard library's keyed hash, was 7% of all the instructions of a 10,000-key plan;
/// foldhash is a fraction of that, and a crafted collision could only misplace a caret.)
#[derive(Debug, Default, Clone)]
pub struct PosIndex {
    entries: HashMap<u64, Entry, BuildHasherDefault<PassThrough>>,
    keyed: foldhash::fast::RandomState,
}

/// The map's keys are already uniformly distributed hashes: use them as they are.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl PosIndex {
    /// Scan `text` (never fails; unknown shapes are skipped).
    pub fn build(text: &str) -> PosIndex {
        // A byte-order mark is not content.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let lines: Vec<Line> = text
            .split('\n')
            .enumerate()
            .map(|(i, l)| Line::new(i + 1, l))
            .collect();
        let mut s = Scanner {
            lines,
            cursor: 0,
            frames: Vec::new(),
            pending: None,
            skip_deeper: None,
            index: PosIndex::default(),
        };
        s.run();
        s.index
    }

    fn id(&self, path: &YPath) -> u64 {
        self.id_of(&path.0)
    }

    fn id_of(&self, segs: &[Seg]) -> u64 {
        self.keyed.hash_one(segs)
    }

    /// Position of the value at exactly `path`.
    pub fn value(&self, path: &YPath) -> Option<Pos> {
        self.entries.get(&self.id(path)).map(|e| e.value)
    }

    /// Position of the mapping key naming `path`'s last segment.
    pub fn key(&self, path: &YPath) -> Option<Pos> {
        self.entries.get(&self.id(path)).and_then(|e| e.key)
    }

    /// Value position of `path`, else of its nearest ancestor found, else 1:1.
    pub fn nearest(&self, path: &YPath) -> Pos {
        (0..=path.0.len())
            .rev()
            .find_map(|n| self.entries.get(&self.id_of(&path.0[..n])).map(|e| e.value))
            .unwrap_or(Pos { line: 1, column: 1 })
    }

    /// Key position of `path` if it has one, else like [`PosIndex::nearest`].
    pub fn nearest_key(&self, path: &YPath) -> Pos {
        self.key(path).unwrap_or_else(|| self.nearest(path))
    }

    fn set_value(&mut self, path: &YPath, value: Pos) {
        let id = self.id(path);
        self.entries
            .entry(id)
            .and_modify(|e| e.value = value)
            .or_insert(Entry { key: None, value });
    }

    fn set_key(&mut self, path: &YPath, key: Pos) {
        let id = self.id(path);
        self.entries
            .entry(id)
            .and_modify(|e| e.key = Some(key))
            .or_insert(Entry {
                key: Some(key),
                value: key,
            });
    }
}

/// One source line with comments stripped.
struct Line {
    number: usize,
    indent: usize,
    /// Characters after the indentation, comment removed, trailing space trimmed.
    content: Vec<char>,
}

impl Line {
    fn new(number: usize, raw: &str) -> Self {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let chars: Vec<char> = raw.chars().collect();
        let indent = chars.iter().take_while(|c| **c == ' ').count();
        let mut content = strip_comment(&chars[indent..]);
        while content.last().is_some_and(|c| c.is_whitespace()) {
            content.pop();
        }
        Line {
            number,
            indent,
            content,
        }
    }
}

fn strip_comment(chars: &[char]) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len());
    let mut quote: Option<char> = None;
    let mut prev: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some('"') if c == '\\' => {
                out.push(c);
                if let Some(&n) = chars.get(i + 1) {
                    out.push(n);
                }
                i += 2;
                prev = None;
                continue;
            }
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => {
                if c == '#' && prev.is_none_or(char::is_whitespace) {
                    break;
                }
                if (c == '"' || c == '\'')
                    && prev.is_none_or(|p| {
                        p.is_whitespace() || matches!(p, '[' | '{' | ',' | ':' | '-')
                    })
                {
                    quote = Some(c);
                }
            }
        }
        out.push(c);
        prev = Some(c);
        i += 1;
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Map,
    Seq,
}

struct Frame {
    indent: usize,
    path: YPath,
    kind: Kind,
    next: usize,
}

struct Pending {
    path: YPath,
    indent: usize,
    /// The owner is a `- ` item: its content must be indented deeper than the dash.
    seq_item: bool,
}

struct Scanner {
    lines: Vec<Line>,
    cursor: usize,
    frames: Vec<Frame>,
    pending: Option<Pending>,
    skip_deeper: Option<usize>,
    index: PosIndex,
}

const MAX_FLOW_DEPTH: usize = 64;
const MAX_FRAMES: usize = 256;

fn is_dash(text: &[char]) -> bool {
    text.first() == Some(&'-') && (text.len() == 1 || matches!(text[1], ' ' | '\t'))
}

/// Find a block mapping key at the start of `text`: returns (key, value start index).
fn split_key(text: &[char]) -> Option<(String, usize)> {
    let first = *text.first()?;
    if first == '?' || first == '[' || first == '{' {
        return None;
    }
    let (key, mut i) = if first == '"' || first == '\'' {
        let mut i = 1;
        let mut key = String::new();
        while i < text.len() && text[i] != first {
            if first == '"' && text[i] == '\\' {
                i += 1;
            }
            if let Some(&c) = text.get(i) {
                key.push(c);
            }
            i += 1;
        }
        i += 1;
        while i < text.len() && matches!(text[i], ' ' | '\t') {
            i += 1;
        }
        if text.get(i) != Some(&':') {
            return None;
        }
        (key, i)
    } else {
        let mut i = 0;
        loop {
            if i >= text.len() {
                return None;
            }
            if text[i] == ':' && (i + 1 == text.len() || matches!(text[i + 1], ' ' | '\t')) {
                break;
            }
            i += 1;
        }
        (
            text[..i].iter().collect::<String>().trim_end().to_string(),
            i,
        )
    };
    i += 1; // the colon
    while i < text.len() && matches!(text[i], ' ' | '\t') {
        i += 1;
    }
    Some((key, i))
}

impl Scanner {
    fn run(&mut self) {
        while self.cursor < self.lines.len() {
            let i = self.cursor;
            self.cursor += 1;
            let (number, indent) = (self.lines[i].number, self.lines[i].indent);
            if self.lines[i].content.is_empty() {
                continue;
            }
            if let Some(d) = self.skip_deeper {
                if indent > d {
                    continue;
                }
                self.skip_deeper = None;
            }
            // Lines are visited once (the cursor only moves forward): take, don't clone.
            let content = std::mem::take(&mut self.lines[i].content);
            if indent == 0
                && (content.starts_with(&['-', '-', '-'])
                    || content.starts_with(&['.', '.', '.'])
                    || content[0] == '%')
            {
                self.frames.clear();
                self.pending = None;
                continue;
            }
            self.content(number, indent, &content);
        }
    }

    fn push(&mut self, indent: usize, path: YPath, kind: Kind) {
        if self.frames.len() < MAX_FRAMES {
            self.frames.push(Frame {
                indent,
                path,
                kind,
                next: 0,
            });
        }
    }

    /// Content starting at column `col` (0-based) of line `ln`.
    fn content(&mut self, ln: usize, col: usize, text: &[char]) {
        let dash = is_dash(text);
        if let Some(p) = self.pending.take() {
            let deeper = col > p.indent;
            let compact = col == p.indent && dash && !p.seq_item;
            if deeper || compact {
                self.index.set_value(&p.path, Pos::new(ln, col));
                if dash {
                    self.push(col, p.path, Kind::Seq);
                } else if split_key(text).is_some() {
                    self.push(col, p.path, Kind::Map);
                } else {
                    self.value(ln, col, text, &p.path, p.indent);
                    return;
                }
            }
        }
        while let Some(top) = self.frames.last() {
            if top.indent > col || (top.indent == col && top.kind == Kind::Seq && !dash) {
                self.frames.pop();
            } else {
                break;
            }
        }
        if self.frames.is_empty() {
            if dash {
                self.push(col, YPath::root(), Kind::Seq);
            } else if split_key(text).is_some() {
                self.push(col, YPath::root(), Kind::Map);
            } else {
                // A document that is a single scalar or flow collection.
                self.value(ln, col, text, &YPath::root(), col);
                return;
            }
        }
        let Some(top) = self.frames.last_mut() else {
            return;
        };
        match top.kind {
            Kind::Seq => {
                if !dash {
                    return;
                }
                let elem = top.path.idx(top.next);
                top.next += 1;
                let rest_off = 1 + text[1..]
                    .iter()
                    .take_while(|c| matches!(c, ' ' | '\t'))
                    .count();
                let rest = &text[rest_off.min(text.len())..];
                let rest_col = col + rest_off;
                self.index.set_value(
                    &elem,
                    Pos::new(ln, if rest.is_empty() { col } else { rest_col }),
                );
                if rest.is_empty() {
                    self.pending = Some(Pending {
                        path: elem,
                        indent: col,
                        seq_item: true,
                    });
                } else if is_dash(rest) {
                    self.push(rest_col, elem, Kind::Seq);
                    self.content(ln, rest_col, rest);
                } else if split_key(rest).is_some() {
                    self.push(rest_col, elem, Kind::Map);
                    self.content(ln, rest_col, rest);
                } else {
                    self.value(ln, rest_col, rest, &elem, col);
                }
            }
            Kind::Map => {
                if dash {
                    return;
                }
                let Some((key, voff)) = split_key(text) else {
                    return;
                };
                let path = top.path.key(&key);
                self.index.set_key(&path, Pos::new(ln, col));
                let vtext = &text[voff.min(text.len())..];
                self.value(ln, col + voff, vtext, &path, col);
            }
        }
    }

    /// A value starting at `col` on line `ln`, owned by a node at indentation `owner`.
    fn value(&mut self, ln: usize, mut col: usize, mut text: &[char], path: &YPath, owner: usize) {
        // Anchors and tags before the value.
        while let Some(&c) = text.first() {
            if c != '&' && c != '!' {
                break;
            }
            let n = text.iter().take_while(|c| **c != ' ').count();
            let sp = text[n..].iter().take_while(|c| **c == ' ').count();
            col += n + sp;
            text = &text[n + sp..];
        }
        let Some(&first) = text.first() else {
            self.index
                .set_value(path, self.index.key(path).unwrap_or(Pos::new(ln, col)));
            self.pending = Some(Pending {
                path: path.clone(),
                indent: owner,
                seq_item: false,
            });
            return;
        };
        self.index.set_value(path, Pos::new(ln, col));
        match first {
            '{' | '[' => self.flow(ln, col, text, path),
            '|' | '>' => self.skip_deeper = Some(owner),
            _ => self.skip_deeper = Some(owner),
        }
    }

    /// A flow collection starting at `col` of line `ln`; pulls further lines until balanced.
    fn flow(&mut self, ln: usize, col: usize, text: &[char], path: &YPath) {
        let mut toks: Vec<(char, usize, usize)> = text
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, ln, col + i))
            .collect();
        let mut depth = flow_balance(text);
        while depth > 0 && self.cursor < self.lines.len() {
            let l = &self.lines[self.cursor];
            self.cursor += 1;
            toks.push((' ', l.number, 0));
            depth += flow_balance(&l.content);
            toks.extend(
                l.content
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| (c, l.number, l.indent + i)),
            );
        }
        let mut i = 0;
        self.flow_node(&toks, &mut i, path, 0, false);
        self.skip_deeper = None;
    }

    fn flow_node(
        &mut self,
        t: &[(char, usize, usize)],
        i: &mut usize,
        path: &YPath,
        depth: usize,
        is_key: bool,
    ) {
        skip_ws(t, i);
        let Some(&(c, ln, col)) = t.get(*i) else {
            return;
        };
        if !is_key {
            self.index.set_value(path, Pos::new(ln, col));
        }
        match c {
            '{' if depth < MAX_FLOW_DEPTH => {
                *i += 1;
                loop {
                    skip_ws(t, i);
                    let Some(&(c, kl, kc)) = t.get(*i) else {
                        return;
                    };
                    if c == '}' {
                        *i += 1;
                        return;
                    }
                    if c == ']' {
                        return;
                    }
                    let start = *i;
                    let key = read_scalar(t, i, true);
                    let kpath = path.key(&key);
                    self.index.set_key(&kpath, Pos::new(kl, kc));
                    skip_ws(t, i);
                    if t.get(*i).map(|x| x.0) == Some(':') {
                        *i += 1;
                        skip_ws(t, i);
                        match t.get(*i).map(|x| x.0) {
                            Some(',') | Some('}') | None => {}
                            _ => self.flow_node(t, i, &kpath, depth + 1, false),
                        }
                    }
                    skip_ws(t, i);
                    if t.get(*i).map(|x| x.0) == Some(',') || *i == start {
                        *i += 1;
                    }
                }
            }
            '[' if depth < MAX_FLOW_DEPTH => {
                *i += 1;
                let mut n = 0;
                loop {
                    skip_ws(t, i);
                    let Some(&(c, _, _)) = t.get(*i) else { return };
                    if c == ']' {
                        *i += 1;
                        return;
                    }
                    if c == '}' {
                        return;
                    }
                    let start = *i;
                    if c != ',' {
                        self.flow_node(t, i, &path.idx(n), depth + 1, false);
                        n += 1;
                    }
                    skip_ws(t, i);
                    if t.get(*i).map(|x| x.0) == Some(',') || *i == start {
                        *i += 1;
                    }
                }
            }
            '{' | '[' => {
                // Too deep: skip to the end without recording.
                *i = t.len();
            }
            _ => {
                read_scalar(t, i, is_key);
            }
        }
    }
}

fn flow_balance(text: &[char]) -> i64 {
    let mut depth = 0i64;
    let mut quote: Option<char> = None;
    for &c in text {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                _ => {}
            },
        }
    }
    depth
}

fn skip_ws(t: &[(char, usize, usize)], i: &mut usize) {
    while t.get(*i).is_some_and(|x| x.0.is_whitespace()) {
        *i += 1;
    }
}

/// Read a flow scalar (quoted or plain); a key stops at `: `.
fn read_scalar(t: &[(char, usize, usize)], i: &mut usize, is_key: bool) -> String {
    let mut s = String::new();
    let Some(&(first, _, _)) = t.get(*i) else {
        return s;
    };
    if first == '"' || first == '\'' {
        *i += 1;
        while let Some(&(c, _, _)) = t.get(*i) {
            *i += 1;
            if c == '\\' && first == '"' {
                if let Some(&(n, _, _)) = t.get(*i) {
                    s.push(n);
                    *i += 1;
                }
                continue;
            }
            if c == first {
                break;
            }
            s.push(c);
        }
        return s;
    }
    while let Some(&(c, _, _)) = t.get(*i) {
        if matches!(c, ',' | ']' | '}') {
            break;
        }
        if c == ':' && is_key {
            let next = t.get(*i + 1).map(|x| x.0);
            if next.is_none_or(|n| n.is_whitespace() || matches!(n, ',' | ']' | '}')) {
                break;
            }
        }
        s.push(c);
        *i += 1;
    }
    s.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> YPath {
        // "keys.0.name" style for tests.
        let mut out = YPath::root();
        for part in s.split('.').filter(|x| !x.is_empty()) {
            out = match part.parse::<usize>() {
                Ok(n) => out.idx(n),
                Err(_) => out.key(part),
            };
        }
        out
    }

    fn at(idx: &PosIndex, path: &str) -> (usize, usize) {
        let v = idx
            .value(&p(path))
            .unwrap_or_else(|| panic!("no position for {path}"));
        (v.line, v.column)
    }

    #[test]
    fn block_mappings_and_sequences() {
        let text = "\
# comment
version: 1
keys:
  - name: a   # trailing comment
    owner: jdoe
    scopes:
      - bibs:read
      - users:read
  - name: b
    labels:
      ticket: X-1
compact:
- one
- two
";
        let idx = PosIndex::build(text);
        assert_eq!(at(&idx, "version"), (2, 10));
        assert_eq!(at(&idx, "keys.0.name"), (4, 11));
        assert_eq!(at(&idx, "keys.0.owner"), (5, 12));
        assert_eq!(at(&idx, "keys.0.scopes.1"), (8, 9));
        assert_eq!(at(&idx, "keys.1.name"), (9, 11));
        assert_eq!(at(&idx, "keys.1.labels.ticket"), (11, 15));
        assert_eq!(at(&idx, "compact.0"), (13, 3));
        assert_eq!(at(&idx, "compact.1"), (14, 3));
        assert_eq!(
            idx.key(&p("keys.0.owner")).map(|k| (k.line, k.column)),
            Some((5, 5))
        );
        assert_eq!(at(&idx, "keys"), (4, 3));
    }

    #[test]
    fn flow_mappings_and_sequences() {
        let text = "\
stores:
  alma-production: { kind: sqlite, path: .keyward/a.db, environment: production }
  sandbox: {kind: http, url: \"http://127.0.0.1:7450\", token_env: T,
            environment: sandbox}
scopes: [bibs:read, 'users:read']
";
        let idx = PosIndex::build(text);
        assert_eq!(at(&idx, "stores.alma-production"), (2, 20));
        assert_eq!(at(&idx, "stores.alma-production.kind").0, 2);
        assert_eq!(at(&idx, "stores.alma-production.path"), (2, 42));
        assert_eq!(at(&idx, "stores.alma-production.environment").0, 2);
        assert_eq!(at(&idx, "stores.sandbox.url"), (3, 30));
        assert_eq!(at(&idx, "stores.sandbox.environment").0, 4);
        assert_eq!(at(&idx, "scopes.0"), (5, 10));
        assert_eq!(at(&idx, "scopes.1"), (5, 21));
    }

    #[test]
    fn block_scalars_and_continuations_are_skipped() {
        let text = "\
a:
  purpose: |
    not: a key
    - not an item
  owner: x
  long: this is
    continued: still text
  after: y
";
        let idx = PosIndex::build(text);
        assert_eq!(at(&idx, "a.owner"), (5, 10));
        assert_eq!(at(&idx, "a.after"), (8, 10));
        assert!(idx.value(&p("a.not")).is_none());
        assert!(idx.value(&p("a.long.continued")).is_none());
    }

    #[test]
    fn nested_items_quotes_and_anchors() {
        let text = "\
people:
  \"jdoe\":
    recipients: [\"age1abc\", 'ssh-ed25519 AAAA x@y']
    name: 'Jane # not a comment'
    email: &e jdoe@example.edu
list:
  - - a
    - b
  -
    name: z
";
        let idx = PosIndex::build(text);
        assert_eq!(at(&idx, "people.jdoe.recipients.1"), (3, 29));
        assert_eq!(at(&idx, "people.jdoe.name"), (4, 11));
        assert_eq!(at(&idx, "people.jdoe.email"), (5, 15));
        assert_eq!(at(&idx, "list.0.0"), (7, 7));
        assert_eq!(at(&idx, "list.0.1"), (8, 7));
        assert_eq!(at(&idx, "list.1.name"), (10, 11));
    }

    #[test]
    fn tabs_after_colons_crlf_and_bom() {
        let idx = PosIndex::build("\u{feff}a:\tx\r\nb:\r\n-\ty\r\n");
        assert_eq!(at(&idx, "a"), (1, 4));
        assert_eq!(at(&idx, "b.0"), (3, 3));
    }

    #[test]
    fn nearest_falls_back_to_ancestors() {
        let idx = PosIndex::build("a:\n  b: 1\n");
        assert_eq!(idx.nearest(&p("a.b.c.d")), Pos { line: 2, column: 6 });
        assert_eq!(idx.nearest(&p("zzz")), Pos { line: 1, column: 1 });
    }

    #[test]
    fn hostile_input_terminates() {
        let deep = "[".repeat(10_000);
        let _ = PosIndex::build(&deep);
        let unbalanced = "a: {b: [c, {d: \n".repeat(1000);
        let _ = PosIndex::build(&unbalanced);
        let _ = PosIndex::build("- - - - - - - - - - - - - - x\n:\n::\n- :\n'\n\"\\");
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;
        use serde_yaml::{Mapping, Value};

        fn tree() -> impl Strategy<Value = Value> {
            let leaf = "[a-z][a-z0-9-]{0,8}".prop_map(Value::String);
            leaf.prop_recursive(4, 40, 5, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Sequence),
                    prop::collection::btree_map("[a-z][a-z_]{0,6}", inner, 0..5).prop_map(|m| {
                        let mut out = Mapping::new();
                        for (k, v) in m {
                            out.insert(Value::String(k), v);
                        }
                        Value::Mapping(out)
                    }),
                ]
            })
        }

        fn leaves(v: &Value, path: YPath, out: &mut Vec<(YPath, String)>) {
            match v {
                Value::String(s) => out.push((path, s.clone())),
                Value::Sequence(items) => {
                    for (i, item) in items.iter().enumerate() {
                        leaves(item, path.idx(i), out);
                    }
                }
                Value::Mapping(m) => {
                    for (k, item) in m {
                        if let Value::String(k) = k {
                            leaves(item, path.key(k), out);
                        }
                    }
                }
                _ => {}
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            /// Whatever serde_yaml emits, every scalar is found exactly where it is written.
            #[test]
            fn positions_match_the_emitted_text(v in tree()) {
                let text = serde_yaml::to_string(&v).unwrap_or_default();
                let idx = PosIndex::build(&text);
                let lines: Vec<Vec<char>> = text.lines().map(|l| l.chars().collect()).collect();
                let mut ls = Vec::new();
                leaves(&v, YPath::root(), &mut ls);
                for (path, scalar) in ls {
                    let pos = idx.value(&path);
                    prop_assert!(pos.is_some(), "no position for {path} in\n{text}");
                    let pos = pos.unwrap_or(Pos { line: 1, column: 1 });
                    let line = lines.get(pos.line - 1).cloned().unwrap_or_default();
                    // Words like `true` or `null` are emitted quoted: the position is the quote.
                    let quoted = line.get(pos.column - 1) == Some(&'\'');
                    let at: String = line.iter().skip(pos.column - 1 + usize::from(quoted)).take(scalar.chars().count()).collect();
                    prop_assert_eq!(at, scalar, "{} at {}:{} in\n{}", path, pos.line, pos.column, text);
                }
            }

            /// Any text at all: the scanner terminates without panicking.
            #[test]
            fn arbitrary_text_never_panics(text in "[ a-z:\\-\\[\\]{},'\"#|>&*!\n]{0,200}") {
                let _ = PosIndex::build(&text);
            }
        }
    }
}
