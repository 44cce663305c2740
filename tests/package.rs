//! The crate is ready to publish: `cargo package --list` (the real cargo, on this checkout)
//! ships the sources, everything they embed, the licence, readme, changelog and schemas, and
//! keeps tests (their fixtures and snapshots), benches, examples and CI files out; the
//! manifest has what crates.io shows. `.ci/run` also runs the full `cargo package`, which
//! builds the packed crate.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn packaged() -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(cargo)
        .args([
            "package",
            "--list",
            "--locked",
            "--allow-dirty",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("run cargo package --list");
    assert!(
        o.status.success(),
        "cargo package --list: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The files `src/` embeds with include_str!/include_bytes!, relative to the crate root.
fn embedded() -> Vec<String> {
    let re = regex::Regex::new(r#"include_(?:str|bytes)!\(\s*"([^"]+)"\s*\)"#).unwrap();
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root().join("src")) {
        let e = e.unwrap();
        if e.path().extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap();
        for c in re.captures_iter(&text) {
            let file = e.path().parent().unwrap().join(&c[1]);
            let file = std::fs::canonicalize(&file).unwrap_or(file);
            let rel = file
                .strip_prefix(root())
                .expect("embedded file inside the crate");
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    out
}

#[test]
fn cargo_package_ships_the_sources_and_licence_and_keeps_tests_and_benches_out() {
    let files = packaged();
    for want in [
        "Cargo.toml",
        "Cargo.lock",
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "src/lib.rs",
        "src/main.rs",
        "schemas/keys.schema.json",
        "schemas/openapi.yaml",
    ] {
        assert!(files.iter().any(|f| f == want), "{want} not packaged");
    }
    let embedded = embedded();
    assert!(!embedded.is_empty(), "src embeds its report assets");
    for f in &embedded {
        assert!(
            files.contains(f),
            "{f} is embedded by src/ but not packaged"
        );
    }
    let mut every_rs = Vec::new();
    for e in walkdir::WalkDir::new(root().join("src")) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(root()).unwrap();
            every_rs.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    for f in &every_rs {
        assert!(files.contains(f), "{f} not packaged");
    }
    for f in &files {
        for out in [
            "tests/",
            "bench/",
            "examples/",
            ".github/",
            ".ci/",
            "target/",
        ] {
            assert!(!f.starts_with(out), "{f} is packaged");
        }
        assert!(f != "install.sh" && f != "action.yml", "{f} is packaged");
    }
}

#[test]
fn the_manifest_has_what_crates_io_shows() {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .map(|v| v.trim().to_string())
    };
    assert_eq!(field("license").as_deref(), Some("\"Apache-2.0\""));
    let licence = std::fs::read_to_string(root().join("LICENSE")).unwrap();
    assert!(licence.contains("Apache License") && licence.contains("Version 2.0"));
    assert_eq!(field("readme").as_deref(), Some("\"README.md\""));
    for f in [
        "description",
        "repository",
        "homepage",
        "documentation",
        "rust-version",
    ] {
        assert!(field(f).is_some(), "Cargo.toml has no {f}");
    }
    // crates.io: at most 5 keywords of at most 20 characters; known category slugs.
    let list = |name: &str| -> Vec<String> {
        let v = field(name).unwrap_or_else(|| panic!("Cargo.toml has no {name}"));
        v.trim_matches(['[', ']'])
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let keywords = list("keywords");
    assert!((1..=5).contains(&keywords.len()), "{keywords:?}");
    for k in &keywords {
        assert!(
            k.len() <= 20
                && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_+".contains(c)),
            "{k}"
        );
    }
    for c in list("categories") {
        assert!(
            ["command-line-utilities", "cryptography", "authentication"].contains(&c.as_str()),
            "{c}: not one of the slugs checked here (crates.io/category_slugs)"
        );
    }
}
