//! Every diagnostic code is defined once in src/diag.rs, every `KWnnn` used anywhere in
//! src/ is one of them, and every code is documented in docs/diagnostics.md (and nothing
//! documented is stale).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `KW` followed by exactly three digits, inside double quotes.
fn quoted_codes(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    for i in 0..b.len().saturating_sub(6) {
        if b[i] == b'"'
            && b[i + 1] == b'K'
            && b[i + 2] == b'W'
            && b[i + 3..i + 6].iter().all(u8::is_ascii_digit)
            && b.get(i + 6) == Some(&b'"')
        {
            out.push(String::from_utf8_lossy(&b[i + 1..i + 6]).into_owned());
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn codes_are_unique_defined_and_documented() {
    let diag = std::fs::read_to_string(root().join("src/diag.rs")).expect("diag.rs");
    let module = diag
        .split("pub mod codes")
        .nth(1)
        .expect("a `pub mod codes` in diag.rs");
    let module = module.split("\n}\n").next().unwrap_or(module);
    let mut by_value: BTreeMap<String, String> = BTreeMap::new();
    for line in module
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("pub const "))
    {
        let name = line["pub const ".len()..]
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        let value = quoted_codes(line)
            .pop()
            .unwrap_or_else(|| panic!("no code in `{line}`"));
        if let Some(prev) = by_value.insert(value.clone(), name.clone()) {
            panic!("{value} is used by both {prev} and {name}");
        }
    }
    assert!(
        by_value.len() >= 40,
        "found only {} codes; is the parser broken?",
        by_value.len()
    );
    let defined: BTreeSet<&String> = by_value.keys().collect();

    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for code in quoted_codes(&text) {
            assert!(
                defined.contains(&code),
                "{code} in {} is not a constant in diag::codes",
                f.display()
            );
        }
    }

    let docs =
        std::fs::read_to_string(root().join("docs/diagnostics.md")).expect("docs/diagnostics.md");
    let documented: BTreeSet<String> = docs
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(str::trim)
        .filter(|h| h.len() == 5 && h.starts_with("KW"))
        .map(String::from)
        .collect();
    for code in &defined {
        assert!(
            documented.contains(*code),
            "{code} ({}) is not documented in docs/diagnostics.md",
            by_value[*code]
        );
    }
    for code in &documented {
        assert!(
            defined.contains(code),
            "docs/diagnostics.md documents {code}, which no longer exists"
        );
    }
}
