//! Keeps the house rules of `src/` true: no import circle between source files, a library
//! free of clap and of `crate::cli`, and no function longer than 120 lines. Reads the
//! sources as text (comments and string literals blanked out); each check is also run on a
//! small synthetic tree so that it is shown to fail when the rule is broken.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest a function in `src/` may be, in lines from `fn` to its closing brace.
const MAX_FN_LINES: usize = 120;

/// One source file: its path relative to `src/` (`store/mod.rs`) and its text.
struct Source {
    path: String,
    text: String,
}

fn read_sources(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(root)
                    .expect("under src")
                    .to_string_lossy();
                let text = std::fs::read_to_string(&path).expect("read source");
                out.push(Source {
                    path: rel.replace('\\', "/"),
                    text,
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn src_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

// ---------------------------------------------------------------------------------------
// Lexing: blank out comments and literals, keep line breaks so line numbers stay true.

/// The text with comments, string and char literals replaced by spaces (newlines kept).
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
                out.push(' ');
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            loop {
                if i >= c.len() {
                    break;
                }
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if let Some(end) = raw_string_end(&c, i) {
            while i < end {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '"' || (c[i] == 'b' && next == Some('"') && !ident_before(&c, i)) {
            if c[i] == 'b' {
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' && is_char_literal(&c, i) {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '\'' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn ident_before(c: &[char], i: usize) -> bool {
    i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')
}

/// `r"..."`, `r#"..."#`, `br"..."`: the index just past the literal.
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    if ident_before(c, i) {
        return None;
    }
    let mut j = i;
    if c.get(j) == Some(&'b') {
        j += 1;
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if c.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < c.len() {
        if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(c.len())
}

/// `'a'`, `'\n'`, `'\u{1F600}'` are literals; `'a` (a lifetime or label) is not.
fn is_char_literal(c: &[char], i: usize) -> bool {
    matches!(
        (c.get(i + 1), c.get(i + 2)),
        (Some('\\'), _) | (Some(_), Some('\''))
    )
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte].matches('\n').count() + 1
}

// ---------------------------------------------------------------------------------------
// The file-level import graph.

/// The module path of a source file (`store/mod.rs` -> `["store"]`, `lib.rs` -> `[]`).
fn module_of(path: &str) -> Vec<String> {
    let mut parts: Vec<String> = path.split('/').map(str::to_string).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Colons,
    Open,
    Close,
    Comma,
    Other(char),
}

fn tokens(code: &str) -> Vec<(usize, Tok)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let ch = b[i] as char;
        if ch.is_ascii_alphabetic() || ch == '_' {
            let start = i;
            while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((start, Tok::Ident(code[start..i].to_string())));
            continue;
        }
        if ch == ':' && b.get(i + 1) == Some(&b':') {
            out.push((i, Tok::Colons));
            i += 2;
            continue;
        }
        match ch {
            '{' => out.push((i, Tok::Open)),
            '}' => out.push((i, Tok::Close)),
            ',' => out.push((i, Tok::Comma)),
            c if c.is_whitespace() => {}
            c => out.push((i, Tok::Other(c))),
        }
        i += 1;
    }
    out
}

/// Every module path a file refers to through `crate::`, `super::` or `self::`, expanded
/// over `use` groups (`crate::a::{b, c::d}`), with the byte offset where it is written.
fn referenced_paths(path: &str, code: &str) -> Vec<(usize, Vec<String>)> {
    let toks = tokens(code);
    let file_module = module_of(path);
    // Inline modules (`mod tests { ... }`) shift what `super::` and `self::` mean.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i].1 {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Tok::Ident(m) if m == "mod" => {
                if let (Some((_, Tok::Ident(name))), Some((_, Tok::Open))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((name.clone(), depth));
                }
            }
            Tok::Ident(root) if matches!(root.as_str(), "crate" | "super" | "self") => {
                let preceded_by_path = i > 0 && toks[i - 1].1 == Tok::Colons;
                if !preceded_by_path && toks.get(i + 1).is_some_and(|t| t.1 == Tok::Colons) {
                    let mut here = file_module.clone();
                    here.extend(inline.iter().map(|(n, _)| n.clone()));
                    let mut base = if root == "crate" { Vec::new() } else { here };
                    let mut j = i;
                    // `super::super::x`: climb once per `super`.
                    while let Some((_, Tok::Ident(seg))) = toks.get(j) {
                        if seg == "super" {
                            base.pop();
                        } else if seg != "self" && seg != "crate" {
                            break;
                        }
                        if toks.get(j + 1).is_some_and(|t| t.1 == Tok::Colons) {
                            j += 2;
                        } else {
                            break;
                        }
                    }
                    let start = toks[i].0;
                    let mut paths = Vec::new();
                    let end = use_tree(&toks, j, base, &mut paths);
                    out.extend(paths.into_iter().map(|p| (start, p)));
                    i = end.max(i + 1);
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Reads a path tree starting at `toks[i]` below `base`; pushes each leaf path. Returns
/// the index after the tree.
fn use_tree(
    toks: &[(usize, Tok)],
    mut i: usize,
    mut base: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match toks.get(i).map(|t| &t.1) {
            Some(Tok::Ident(seg)) => {
                if seg != "self" {
                    base.push(seg.clone());
                }
                if toks.get(i + 1).is_some_and(|t| t.1 == Tok::Colons) {
                    i += 2;
                    continue;
                }
                out.push(base);
                return i + 1;
            }
            Some(Tok::Open) => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.1) {
                        Some(Tok::Close) => {
                            return i + 1;
                        }
                        Some(Tok::Comma) => i += 1,
                        None => return i,
                        _ => {
                            let next = use_tree(toks, i, base.clone(), out);
                            // Skip `as name` and anything else up to `,` or `}`.
                            i = next;
                            while let Some(t) = toks.get(i) {
                                if matches!(t.1, Tok::Comma | Tok::Close) {
                                    break;
                                }
                                i += 1;
                            }
                        }
                    }
                }
            }
            _ => {
                out.push(base);
                return i;
            }
        }
    }
}

/// File -> the files it imports (self-references dropped). Each arrow keeps the line of
/// its first mention for the failure message.
fn import_graph(sources: &[Source]) -> BTreeMap<String, BTreeMap<String, usize>> {
    let by_module: BTreeMap<Vec<String>, String> = sources
        .iter()
        .filter(|s| s.path != "main.rs")
        .map(|s| (module_of(&s.path), s.path.clone()))
        .collect();
    let mut graph = BTreeMap::new();
    for s in sources {
        let code = code_only(&s.text);
        let mut arrows: BTreeMap<String, usize> = BTreeMap::new();
        // The binary's `crate::` is its own crate; its library paths say `keyward::`.
        if s.path != "main.rs" {
            for (at, path) in referenced_paths(&s.path, &code) {
                let target = (0..=path.len())
                    .rev()
                    .find_map(|n| by_module.get(&path[..n]));
                if let Some(target) = target.filter(|t| **t != s.path) {
                    arrows
                        .entry(target.clone())
                        .or_insert_with(|| line_of(&code, at));
                }
            }
        }
        graph.insert(s.path.clone(), arrows);
    }
    graph
}

/// The import circles: each strongly connected set of two or more files, written as one
/// cycle through it (`a.rs -> b.rs -> a.rs`).
fn circles(graph: &BTreeMap<String, BTreeMap<String, usize>>) -> Vec<Vec<String>> {
    // Tarjan's algorithm, iterative enough for a few hundred files (recursion is fine here).
    struct T<'g> {
        graph: &'g BTreeMap<String, BTreeMap<String, usize>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        sccs: Vec<Vec<&'g str>>,
    }
    fn visit<'g>(t: &mut T<'g>, v: &'g str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on_stack.insert(v);
        let arrows = t.graph.get(v).into_iter().flat_map(|m| m.keys());
        for w in arrows {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on_stack.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on_stack.remove(w);
                scc.push(w);
                if w == v {
                    break;
                }
            }
            t.sccs.push(scc);
        }
    }
    let mut t = T {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        sccs: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    let mut out: Vec<Vec<String>> = t
        .sccs
        .into_iter()
        .filter(|scc| scc.len() > 1)
        .map(|scc| cycle_through(graph, &scc))
        .collect();
    out.sort();
    out
}

/// A closed walk through the first file of `scc` back to itself, inside `scc`.
fn cycle_through(graph: &BTreeMap<String, BTreeMap<String, usize>>, scc: &[&str]) -> Vec<String> {
    let members: BTreeSet<&str> = scc.iter().copied().collect();
    let start = *members.iter().next().expect("non-empty");
    // Breadth-first from start's successors back to start.
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut seen = BTreeSet::new();
    while let Some(v) = queue.pop_front() {
        for w in graph[v].keys().map(String::as_str) {
            if !members.contains(w) {
                continue;
            }
            if w == start {
                let mut walk = vec![start.to_string()];
                let mut at = v;
                while at != start {
                    walk.push(at.to_string());
                    at = prev[at];
                }
                walk.push(start.to_string());
                walk.reverse();
                return walk;
            }
            if seen.insert(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    unreachable!("a strongly connected set has a cycle through each member")
}

fn describe(graph: &BTreeMap<String, BTreeMap<String, usize>>, cycle: &[String]) -> String {
    cycle
        .windows(2)
        .map(|w| format!("{} (line {}) -> {}", w[0], graph[&w[0]][&w[1]], w[1]))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------
// Functions and their lengths.

/// Every function with a body: (name with its `impl` type, first line, number of lines).
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let toks = tokens(code);
    let mut out = Vec::new();
    // Open `impl` blocks: (type name, brace depth inside the block).
    let mut impls: Vec<(String, usize)> = Vec::new();
    let mut pending_impl: Option<String> = None;
    let mut open_fns: Vec<(String, usize, usize)> = Vec::new();
    // A `fn` whose body has not opened yet, with the paren depth of its signature.
    let mut pending_fn: Option<(String, usize, usize)> = None;
    let (mut depth, mut parens) = (0usize, 0usize);
    for (k, (at, tok)) in toks.iter().enumerate() {
        match tok {
            Tok::Ident(w) if w == "impl" && at_item_start(&toks, k) => {
                pending_impl = Some(impl_type(&toks, k));
            }
            Tok::Ident(w) if w == "fn" => {
                if let Some((_, Tok::Ident(name))) = toks.get(k + 1) {
                    let owner = impls
                        .last()
                        .map(|(t, _)| format!("{t}."))
                        .unwrap_or_default();
                    pending_fn = Some((format!("{owner}{name}"), line_of(code, *at), parens));
                }
            }
            Tok::Other('(' | '[') => parens += 1,
            Tok::Other(')' | ']') => parens = parens.saturating_sub(1),
            Tok::Other(';') if pending_fn.as_ref().is_some_and(|f| f.2 == parens) => {
                pending_fn = None
            }
            Tok::Open => {
                depth += 1;
                if let Some((name, line, _)) = pending_fn.take() {
                    open_fns.push((name, line, depth));
                } else if let Some(t) = pending_impl.take() {
                    impls.push((t, depth));
                }
            }
            Tok::Close => {
                if open_fns.last().is_some_and(|(_, _, d)| *d == depth) {
                    let (name, line, _) = open_fns.pop().expect("checked");
                    out.push((name, line, line_of(code, *at) - line + 1));
                }
                if impls.last().is_some_and(|(_, d)| *d == depth) {
                    impls.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
    out
}

/// `impl` that starts an item (not `impl Trait` in an argument or return type).
fn at_item_start(toks: &[(usize, Tok)], k: usize) -> bool {
    k == 0
        || match &toks[k - 1].1 {
            Tok::Open | Tok::Close | Tok::Other(';' | ']') => true,
            Tok::Ident(w) => w == "unsafe",
            _ => false,
        }
}

/// The type an `impl` block is for: the last segment of the first path after `for`, or
/// after `impl` and its generics when there is no `for`.
fn impl_type(toks: &[(usize, Tok)], k: usize) -> String {
    let mut angle = 0i32;
    let mut first: Option<String> = None;
    let mut after_for: Option<String> = None;
    let mut seen_for = false;
    let mut i = k + 1;
    while let Some((_, tok)) = toks.get(i) {
        match tok {
            Tok::Open | Tok::Other(';') => break,
            Tok::Other('<') => angle += 1,
            Tok::Other('>') => angle -= 1,
            Tok::Ident(w) if angle == 0 && w == "for" => seen_for = true,
            Tok::Ident(w) if angle == 0 && w == "where" => break,
            Tok::Ident(w) if angle == 0 && !(i > 0 && toks[i - 1].1 == Tok::Other('\'')) => {
                let slot = if seen_for { &mut after_for } else { &mut first };
                let continues = i > 0 && toks[i - 1].1 == Tok::Colons;
                if slot.is_none() || continues {
                    *slot = Some(w.clone());
                }
            }
            _ => {}
        }
        i += 1;
    }
    after_for.or(first).unwrap_or_default()
}

fn long_functions(sources: &[Source]) -> Vec<String> {
    let mut out = Vec::new();
    for s in sources {
        for (name, line, len) in functions(&code_only(&s.text)) {
            if len > MAX_FN_LINES {
                out.push(format!("src/{}:{line} {name} ({len} lines)", s.path));
            }
        }
    }
    out
}

/// Library files (all but `main.rs` and `cli/`) that name clap or `crate::cli`.
fn clap_in_library(sources: &[Source]) -> Vec<String> {
    let mut out = Vec::new();
    for s in sources {
        if s.path == "main.rs" || s.path.starts_with("cli/") {
            continue;
        }
        let code = code_only(&s.text);
        let toks = tokens(&code);
        for (k, (at, tok)) in toks.iter().enumerate() {
            let is_clap = *tok == Tok::Ident("clap".into());
            let is_cli = *tok == Tok::Ident("crate".into())
                && toks.get(k + 1).is_some_and(|t| t.1 == Tok::Colons)
                && toks
                    .get(k + 2)
                    .is_some_and(|t| t.1 == Tok::Ident("cli".into()));
            if is_clap || is_cli {
                let what = if is_clap { "clap" } else { "crate::cli" };
                out.push(format!(
                    "src/{}:{} names {what}",
                    s.path,
                    line_of(&code, *at)
                ));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The checks on the real tree.

#[test]
fn no_import_circle_between_files_of_src() {
    let sources = read_sources(&src_root());
    assert!(sources.len() > 20, "read the sources of src/");
    let graph = import_graph(&sources);
    let arrows: usize = graph.values().map(BTreeMap::len).sum();
    assert!(arrows > 50, "found the imports of src/ ({arrows} arrows)");
    let found = circles(&graph);
    let report: Vec<String> = found.iter().map(|c| describe(&graph, c)).collect();
    assert!(
        report.is_empty(),
        "import circles between files of src/ (move the shared types to a file both sides use):\n{}",
        report.join("\n")
    );
}

#[test]
fn library_does_not_use_clap_or_the_cli() {
    let sources = read_sources(&src_root());
    let found = clap_in_library(&sources);
    assert!(
        found.is_empty(),
        "the library must not know the command line (move it under src/cli/):\n{}",
        found.join("\n")
    );
}

#[test]
fn no_function_in_src_over_120_lines() {
    let sources = read_sources(&src_root());
    let found = long_functions(&sources);
    assert!(
        found.is_empty(),
        "functions over {MAX_FN_LINES} lines (split them into named steps):\n{}",
        found.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// The checks shown to fail on small synthetic trees.

fn synthetic(files: &[(&str, &str)]) -> Vec<Source> {
    files
        .iter()
        .map(|(p, t)| Source {
            path: p.to_string(),
            text: t.to_string(),
        })
        .collect()
}

#[test]
fn the_circle_finder_finds_a_planted_circle_and_names_its_lines() {
    let sources = synthetic(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n"),
        ("a.rs", "use crate::b::Thing;\n"),
        (
            "b/mod.rs",
            "pub mod inner;\n// use crate::d::Nothing; (a comment, not an import)\nfn f() { let s = \"crate::d::X\"; crate::c::go(); }\n",
        ),
        ("b/inner.rs", "use super::super::a::{x, y as z};\n"),
        ("c.rs", "use crate::{a::One, b::inner::Two};\n"),
        ("d.rs", "use crate::a;\n"),
    ]);
    let graph = import_graph(&sources);
    assert_eq!(graph["a.rs"].keys().collect::<Vec<_>>(), ["b/mod.rs"]);
    assert_eq!(graph["b/mod.rs"].keys().collect::<Vec<_>>(), ["c.rs"]);
    assert_eq!(graph["b/mod.rs"]["c.rs"], 3);
    assert_eq!(graph["b/inner.rs"].keys().collect::<Vec<_>>(), ["a.rs"]);
    assert_eq!(
        graph["c.rs"].keys().collect::<Vec<_>>(),
        ["a.rs", "b/inner.rs"]
    );
    let found = circles(&graph);
    assert_eq!(found, vec![vec!["a.rs", "b/mod.rs", "c.rs", "a.rs"]]);
    assert_eq!(
        describe(&graph, &found[0]),
        "a.rs (line 1) -> b/mod.rs, b/mod.rs (line 3) -> c.rs, c.rs (line 1) -> a.rs"
    );
    // Take the arrow c -> a away and the house stands.
    let mut sources = sources;
    sources[4].text = "pub fn go() {}\n".into();
    assert!(circles(&import_graph(&sources)).is_empty());
}

#[test]
fn super_inside_an_inline_module_means_the_file_itself() {
    let sources = synthetic(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        (
            "a.rs",
            "use crate::b::X;\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
        ),
        ("b.rs", "pub struct X;\nmod t { use super::super::a; }\n"),
    ]);
    let graph = import_graph(&sources);
    assert_eq!(graph["a.rs"].keys().collect::<Vec<_>>(), ["b.rs"]);
    assert_eq!(graph["b.rs"].keys().collect::<Vec<_>>(), ["a.rs"]);
    assert_eq!(circles(&graph).len(), 1);
}

#[test]
fn the_length_check_names_a_long_function_with_its_type() {
    let body: String = (0..MAX_FN_LINES)
        .map(|i| format!("    let x{i} = '{{';\n"))
        .collect();
    let text = format!(
        "impl Ctx<'_> {{\n    fn compare(&self) {{\n{body}    }}\n    fn short(&self) {{}}\n}}\ntrait T {{ fn decl(&self); }}\nfn ok() {{ let s = \"}}}}\"; }}\n"
    );
    let sources = synthetic(&[("diff.rs", &text)]);
    let found = long_functions(&sources);
    assert_eq!(
        found,
        [format!(
            "src/diff.rs:2 Ctx.compare ({} lines)",
            MAX_FN_LINES + 2
        )]
    );
    let fns = functions(&code_only(&text));
    let names: Vec<&str> = fns.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["Ctx.compare", "Ctx.short", "ok"]);
}

#[test]
fn the_clap_check_names_the_library_file_and_spares_the_cli() {
    let sources = synthetic(&[
        ("main.rs", "use clap::Parser;\n"),
        ("cli/mod.rs", "use clap::Parser;\n"),
        (
            "pipeline.rs",
            "//! not clap\nuse crate::cli_request::X;\n\nuse crate::cli::PlanArgs;\n",
        ),
        ("plan.rs", "#[derive(clap::ValueEnum)]\nenum F {}\n"),
    ]);
    assert_eq!(
        clap_in_library(&sources),
        [
            "src/pipeline.rs:4 names crate::cli",
            "src/plan.rs:1 names clap",
        ]
    );
}

#[test]
fn code_only_blanks_comments_and_literals_but_keeps_lines() {
    let text = "let a = r#\"crate::x \"# ; // crate::y\n/* crate::z\n */ let c = 'x'; fn f<'a>() {}\nlet b = b\"crate::w\";";
    let code = code_only(text);
    assert_eq!(code.lines().count(), text.lines().count());
    assert!(!code.contains("crate::"), "{code}");
    assert!(code.contains("fn f<'a>() {}"), "{code}");
}
