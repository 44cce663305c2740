//! The JSON Schemas in schemas/: the checked-in files are what the Rust types generate,
//! every example file names its schema with a correct relative path and validates against
//! it (boon), and a misspelled field is rejected by the schema.

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_checked_in_schemas_are_current() {
    let dir = root().join("schemas");
    let mut stale = Vec::new();
    for (file, want) in keyward::schema::all() {
        let path = dir.join(file);
        if std::fs::read_to_string(&path).is_ok_and(|have| have == want) {
            continue;
        }
        if std::env::var_os("KEYWARD_UPDATE_SCHEMAS").is_some() && std::env::var_os("CI").is_none()
        {
            std::fs::write(&path, want).unwrap();
            eprintln!("wrote {}", path.display());
            continue;
        }
        stale.push(file);
    }
    assert!(
        stale.is_empty(),
        "stale schemas: {stale:?}; regenerate them with\n  cargo run -- schema --write\nand commit them"
    );
}

/// Compile the checked-in schema `file` with boon.
fn compile(file: &str) -> (boon::Schemas, boon::SchemaIndex) {
    let path = root().join("schemas").join(file);
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("schema file")).expect("JSON");
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.add_resource(file, schema).expect("add schema");
    let idx = compiler
        .compile(file, &mut schemas)
        .unwrap_or_else(|e| panic!("{file} does not compile: {e:#}"));
    (schemas, idx)
}

/// Validate YAML text against the checked-in schema `file`.
fn validate(file: &str, yaml: &str) -> Result<(), String> {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
    let json = serde_json::to_value(v).map_err(|e| e.to_string())?;
    let (schemas, idx) = compile(file);
    schemas.validate(&json, idx).map_err(|e| format!("{e:#}"))
}

/// The schema a spec file at `rel` (relative to its repository root) must name.
fn schema_for(rel: &Path) -> &'static str {
    match rel.to_str() {
        Some("keyward.yaml") => "keyward.schema.json",
        Some("people.yaml") => "people.schema.json",
        _ => "keys.schema.json",
    }
}

/// Check the first line names the right schema with a relative path that resolves to
/// `schemas_dir`, and the file validates.
fn check_file(repo_root: &Path, rel: &Path, schemas_dir: &Path) {
    let text = std::fs::read_to_string(repo_root.join(rel)).unwrap();
    let first = text.lines().next().unwrap_or("");
    let target = first
        .strip_prefix("# yaml-language-server: $schema=")
        .unwrap_or_else(|| panic!("{}: no schema line: {first}", rel.display()));
    let file = schema_for(rel);
    assert!(target.ends_with(file), "{}: {target}", rel.display());
    let resolved = repo_root.join(rel).parent().unwrap().join(target);
    let resolved = std::fs::canonicalize(&resolved)
        .unwrap_or_else(|e| panic!("{}: {target} does not resolve: {e}", rel.display()));
    assert_eq!(
        resolved,
        std::fs::canonicalize(schemas_dir.join(file)).unwrap(),
        "{}",
        rel.display()
    );
    if let Err(e) = validate(file, &text) {
        panic!("{} does not fit {file}: {e}", rel.display());
    }
}

fn yaml_files(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, base, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p.strip_prefix(base).unwrap().to_path_buf());
        }
    }
}

#[test]
fn every_example_file_names_and_fits_its_schema() {
    let ex = root().join("examples/library");
    let mut files = Vec::new();
    yaml_files(&ex, &ex, &mut files);
    assert!(files.len() >= 6, "{files:?}");
    for rel in &files {
        check_file(&ex, rel, &root().join("schemas"));
    }
}

#[test]
fn a_misspelled_field_is_rejected_by_the_schema() {
    let ex = root().join("examples/library");
    let read = |p: &str| std::fs::read_to_string(ex.join(p)).unwrap();
    let cases = [
        ("keys/discovery.yaml", "    purpose:", "    purpse:"),
        ("keyward.yaml", "  max_lifetime:", "  max_lifetim:"),
        ("people.yaml", "    may_grant:", "    may_grnat:"),
    ];
    for (file, from, to) in cases {
        let good = read(file);
        assert!(good.contains(from), "{file} has {from}");
        let schema = schema_for(Path::new(file));
        assert!(validate(schema, &good).is_ok(), "{file}");
        let bad = good.replacen(from, to, 1);
        let err = validate(schema, &bad).expect_err(file);
        assert!(
            err.contains(to.trim().trim_end_matches(':')),
            "{file}: the error names the field: {err}"
        );
    }
    // A wrong type and an unknown state are rejected too.
    let bad = read("keys/discovery.yaml").replace("protected: true", "protected: maybe");
    assert!(validate("keys.schema.json", &bad).is_err());
}

#[test]
fn schema_command_prints_and_writes() {
    let out = Command::cargo_bin("keyward")
        .unwrap()
        .args(["schema", "keys"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let want = std::fs::read_to_string(root().join("schemas/keys.schema.json")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);

    let dir = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("keyward")
        .unwrap()
        .args(["-C"])
        .arg(dir.path())
        .args(["schema", "--write"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for (file, _) in keyward::schema::NAMES.iter().map(|(s, f)| (f, s)) {
        let written = std::fs::read_to_string(dir.path().join("schemas").join(file)).unwrap();
        let checked_in = std::fs::read_to_string(root().join("schemas").join(file)).unwrap();
        assert_eq!(written, checked_in, "{file}");
    }
    let out = Command::cargo_bin("keyward")
        .unwrap()
        .args(["schema", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn init_writes_schemas_and_files_that_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("keys-repo");
    let out = Command::cargo_bin("keyward")
        .unwrap()
        .arg("init")
        .arg(&repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for rel in ["keyward.yaml", "people.yaml"] {
        check_file(&repo, Path::new(rel), &repo.join("schemas"));
    }
}
