//! A repository with a dozen mistakes across files: every problem is reported at once,
//! each at the right file:line with its stable code, and a pasted private key is never
//! echoed (neither in the rendered text nor in the JSON).

use keyward::diag::{self, Diagnostics, codes};
use keyward::spec;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

// Public keys of the published demo identities (examples/library/demo-identities).
const JDOE: &str = "age1jh9x549yr7atdz6a5j2kf0su0u8retq8fdhg8calalddvaeux44sm6lc49";
const ILLIAD: &str = "age1h7e98fheh2nhjnsy4eqa9qgjvrh7mxpthszgarpdcww8r2cw7ufq3pqs6s";
// A private key someone pasted by mistake (never a real one).
const PRIVATE: &str = "AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSXQ5DN2";
const PRIVATE_BODY: &str = "QYQSZQGPQYQSZQGPQYQSZQGP";

fn files() -> BTreeMap<PathBuf, String> {
    let mut f = BTreeMap::new();
    f.insert(
        "keyward.yaml".into(),
        "\
version: 2
stores:
  prod: { kind: sqlite, environment: production }
  sand: { kind: htp, environment: sandbox }
scopes:
  areas: [bibs, users, configuration, courses]
  levels: [read, write]
policy:
  default_lifetime: 365days
  max_lifetime: 730d
  forbid:
    - { scope: configuration:write, reason: \"No configuration writes.\" }
delivery:
  outbox: deliveries
  retian: 7d
"
        .to_string(),
    );
    f.insert(
        "people.yaml".into(),
        format!(
            "\
people:
  jdoe:
    name: Jane Doe
    recipients: [\"{JDOE}\"]
    may_grant: [bibs:write, users:read]
  asmith:
    name: Alex Smith
    recipients:
      - {PRIVATE}
  bob:
    name: Bob
    recipients: []
  carol:
    recipients: [\"age1notavalidkey\"]
teams:
  ill-staff: {{ members: [jdoe, asmtih] }}
services:
  jdoe: {{ recipients: [\"{ILLIAD}\"] }}
  illiad: {{ recipients: [\"{ILLIAD}\"] }}
"
        ),
    );
    f.insert(
        "keys/a.yaml".into(),
        "\
keys:
  - name: ill-lookup
    store: prod
    owner: jdoo
    scopes: [bibs:read, bibs:write, users:raed]
    expires: 2027-02-30
    recipients: [team:ill-staf, nobody]
  - name: Bad_Name
    store: prd
    owner: jdoe
    scopes: []
    expires: 2027-01-01
    lifetime: 90d
    quota: lots
    purpos: x
"
        .to_string(),
    );
    f.insert(
        "keys/b.yaml".into(),
        format!(
            "\
keys:
  - name: ill-lookup
    store: prod
    owner: illiad
    scopes: [bibs:read]
    recipients: [\"{PRIVATE}\"]
  - name: no-owner
    store: prod
    scopes: bibs:read
"
        ),
    );
    f.insert(
        "keys/c.yaml".into(),
        "keys:\n  - name: broken\n    scopes: [bibs:read\n".to_string(),
    );
    f.insert("keys/sub/d.yml".into(), "keys:\n  - name: fine\n    store: prod\n    owner: jdoe\n    scopes: [courses:read]\n    rotation: { every: 30d, generation: 0 }\n".to_string());
    f
}

fn load_errors(root: &Path) -> Diagnostics {
    match spec::load(root) {
        Ok(_) => panic!("the broken repository loaded"),
        Err(d) => d,
    }
}

fn write_repo(dir: &Path) {
    for (rel, text) in files() {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
}

#[test]
fn every_mistake_is_reported_at_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_repo(dir.path());
    let diags = load_errors(dir.path());
    let got: Vec<(&str, String, usize)> = diags
        .iter()
        .map(|d| {
            let l = d.location.clone().unwrap_or_default();
            (d.code, l.file.display().to_string(), l.line)
        })
        .collect();
    let expected: &[(&str, &str, usize)] = &[
        (codes::UNSUPPORTED_VERSION, "keyward.yaml", 1),
        (codes::INVALID_VALUE, "keyward.yaml", 4),
        (codes::BAD_DURATION, "keyward.yaml", 9),
        (codes::UNKNOWN_FIELD, "keyward.yaml", 15),
        (codes::PRIVATE_KEY, "people.yaml", 9),
        (codes::NO_RECIPIENTS, "people.yaml", 10),
        (codes::INVALID_RECIPIENT, "people.yaml", 14),
        (codes::UNKNOWN_MEMBER, "people.yaml", 16),
        (codes::DUPLICATE_PRINCIPAL, "people.yaml", 18),
        (codes::UNKNOWN_OWNER, "keys/a.yaml", 4),
        (codes::REDUNDANT_SCOPE, "keys/a.yaml", 5),
        (codes::UNKNOWN_LEVEL, "keys/a.yaml", 5),
        (codes::BAD_DATE, "keys/a.yaml", 6),
        (codes::UNKNOWN_TEAM, "keys/a.yaml", 7),
        (codes::UNKNOWN_RECIPIENT, "keys/a.yaml", 7),
        (codes::INVALID_KEY_NAME, "keys/a.yaml", 8),
        (codes::UNKNOWN_STORE, "keys/a.yaml", 9),
        (codes::EMPTY_SCOPES, "keys/a.yaml", 11),
        (codes::EXPIRES_AND_LIFETIME, "keys/a.yaml", 13),
        (codes::BAD_QUOTA, "keys/a.yaml", 14),
        (codes::UNKNOWN_FIELD, "keys/a.yaml", 15),
        (codes::DUPLICATE_KEY, "keys/b.yaml", 2),
        (codes::OWNER_NOT_PERSON, "keys/b.yaml", 4),
        (codes::PRIVATE_KEY, "keys/b.yaml", 6),
        (codes::MISSING_FIELD, "keys/b.yaml", 7),
        (codes::WRONG_TYPE, "keys/b.yaml", 9),
        (codes::YAML_SYNTAX, "keys/c.yaml", 3),
        (codes::INVALID_VALUE, "keys/sub/d.yml", 6),
    ];
    for (code, file, line) in expected {
        assert!(
            got.iter()
                .any(|(c, f, l)| c == code && f == file && l == line),
            "expected {code} at {file}:{line}; got:\n{}",
            got.iter()
                .map(|(c, f, l)| format!("  {c} {f}:{l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "unexpected extra diagnostics:\n{got:#?}"
    );

    // Did-you-mean hints and the duplicate's related place.
    let find = |code: &str, file: &str| {
        diags.iter().find(|d| {
            d.code == code
                && d.location
                    .as_ref()
                    .is_some_and(|l| l.file == Path::new(file))
        })
    };
    let hint = |code: &str, file: &str| {
        find(code, file)
            .and_then(|d| d.hint.clone())
            .unwrap_or_default()
    };
    assert!(hint(codes::UNKNOWN_FIELD, "keyward.yaml").contains("`retain`"));
    assert!(hint(codes::UNKNOWN_FIELD, "keys/a.yaml").contains("`purpose`"));
    assert!(hint(codes::UNKNOWN_OWNER, "keys/a.yaml").contains("`jdoe`"));
    assert!(hint(codes::UNKNOWN_TEAM, "keys/a.yaml").contains("`ill-staff`"));
    assert!(hint(codes::UNKNOWN_STORE, "keys/a.yaml").contains("`prod`"));
    assert!(hint(codes::UNKNOWN_LEVEL, "keys/a.yaml").contains("`read`"));
    assert!(hint(codes::UNKNOWN_MEMBER, "people.yaml").contains("`asmith`"));
    assert!(hint(codes::INVALID_VALUE, "keyward.yaml").contains("`http`"));
    let dup = find(codes::DUPLICATE_KEY, "keys/b.yaml").expect("duplicate");
    assert_eq!(dup.related.len(), 1);
    assert_eq!(
        (dup.related[0].1.file.as_path(), dup.related[0].1.line),
        (Path::new("keys/a.yaml"), 2)
    );
    let dup = find(codes::DUPLICATE_PRINCIPAL, "people.yaml").expect("duplicate principal");
    assert_eq!(dup.related[0].1.line, 2);
}

#[test]
fn a_pasted_private_key_is_never_echoed() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_repo(dir.path());
    let diags = load_errors(dir.path());
    let sources = diag::sources_from_files(
        &files()
            .into_iter()
            .map(|(p, t)| (p, t.into_bytes()))
            .collect(),
    );
    for color in [false, true] {
        let text = diag::render(&diags, &sources, color);
        assert!(text.contains("PRIVATE key"), "{text}");
        assert!(
            !text.contains(PRIVATE_BODY),
            "rendered output leaks the private key:\n{text}"
        );
        assert!(!text.contains("AGE-SECRET-KEY-1Q"), "{text}");
    }
    let json = diag::to_json(&diags);
    assert!(json.contains("KW114"));
    assert!(!json.contains(PRIVATE_BODY), "JSON leaks the private key");
    let plain_json = serde_json::to_string(&diags).expect("json");
    assert!(
        !plain_json.contains(PRIVATE_BODY),
        "serialized diagnostics leak the private key"
    );
    let debug = format!("{diags:?}");
    assert!(
        !debug.contains(PRIVATE_BODY),
        "Debug output leaks the private key"
    );
}

#[test]
fn rendered_diagnostics_snapshot() {
    let files: BTreeMap<PathBuf, Vec<u8>> = files()
        .into_iter()
        .map(|(p, t)| (p, t.into_bytes()))
        .collect();
    let sources = diag::sources_from_files(&files);
    let diags = match spec::load_from_files(Path::new("/repo"), files) {
        Ok(_) => panic!("the broken repository loaded"),
        Err(d) => d,
    };
    let text = format!(
        "{}{}\n",
        diag::render(&diags, &sources, false),
        diag::summary(&diags)
    );
    insta::assert_snapshot!("broken_repo", text);
}

#[test]
fn disk_guards_symlinks_encoding_and_missing_files() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("stolen.yaml"), "keys: []\n").expect("write");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("keys")).expect("mkdir");
    std::fs::write(
        root.join("people.yaml"),
        format!("people:\n  jdoe: {{ recipients: [\"{JDOE}\"] }}\n"),
    )
    .expect("write");
    std::fs::write(root.join("keys/latin1.yaml"), b"keys:\n  - name: caf\xe9\n").expect("write");
    std::fs::write(root.join("keys/inside.yaml"), "keys: []\n").expect("write");
    std::os::unix::fs::symlink(
        outside.path().join("stolen.yaml"),
        root.join("keys/link.yaml"),
    )
    .expect("symlink");
    std::os::unix::fs::symlink(root.join("keys/inside.yaml"), root.join("keys/alias.yaml"))
        .expect("symlink");
    let huge = std::fs::File::create(root.join("keys/huge.yaml")).expect("create");
    huge.set_len(9 * 1024 * 1024).expect("sparse file");
    let diags = load_errors(root);
    let got: Vec<(&str, String, usize)> = diags
        .iter()
        .map(|d| {
            let l = d.location.clone().unwrap_or_default();
            (d.code, l.file.display().to_string(), l.line)
        })
        .collect();
    let mut got = got;
    got.sort();
    let mut expected = vec![
        (codes::MISSING_FILE, "keyward.yaml".to_string(), 1),
        (codes::SYMLINK_OUTSIDE, "keys/link.yaml".to_string(), 1),
        (codes::NOT_UTF8, "keys/latin1.yaml".to_string(), 2),
        (codes::TOO_LARGE, "keys/huge.yaml".to_string(), 1),
    ];
    expected.sort();
    assert_eq!(got, expected);
}

fn example_files() -> BTreeMap<PathBuf, Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/library");
    let mut files = BTreeMap::new();
    for rel in ["keyward.yaml", "people.yaml", "keys/discovery.yaml"] {
        files.insert(
            PathBuf::from(rel),
            std::fs::read(root.join(rel)).expect("example file"),
        );
    }
    files
}

#[test]
fn a_protected_key_cannot_be_tombstoned() {
    let mut files = example_files();
    let text = String::from_utf8(files[Path::new("keys/discovery.yaml")].clone()).expect("utf8");
    let text = text.replace(
        "    protected: true\n",
        "    protected: true\n    state: deleted\n",
    );
    let line = text
        .lines()
        .position(|l| l.contains("state: deleted"))
        .expect("edited")
        + 1;
    files.insert("keys/discovery.yaml".into(), text.into_bytes());
    let diags = spec::load_from_files(Path::new("/repo"), files).expect_err("refused");
    let d = diags
        .iter()
        .find(|d| d.code == codes::PROTECTED_TOMBSTONE)
        .expect("KW125");
    assert_eq!(d.location.as_ref().map(|l| l.line), Some(line));
    assert_eq!(d.related.first().map(|(_, l)| l.line), Some(line - 1));
}

#[test]
fn sources_for_reads_what_a_failed_load_points_at() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_repo(dir.path());
    let diags = load_errors(dir.path());
    let sources = spec::sources_for(dir.path(), &diags);
    assert_eq!(
        sources
            .keys()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>(),
        [
            "keys/a.yaml",
            "keys/b.yaml",
            "keys/c.yaml",
            "keys/sub/d.yml",
            "keyward.yaml",
            "people.yaml"
        ]
    );
    let text = diag::render(&diags, &sources, false);
    assert!(
        text.contains("4 |     owner: jdoo\n  |            ^^^^\n"),
        "{text}"
    );
}
