//! The spec loader never panics or hangs, whatever the files hold, and every diagnostic
//! points at a line that exists in its file.

use keyward::diag::codes;
use keyward::spec;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn example_files() -> BTreeMap<PathBuf, Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/library");
    let mut files = BTreeMap::new();
    for rel in [
        "keyward.yaml",
        "people.yaml",
        "keys/interlibrary-loan.yaml",
        "keys/analytics.yaml",
        "keys/course-reserves.yaml",
        "keys/discovery.yaml",
    ] {
        files.insert(
            PathBuf::from(rel),
            std::fs::read(root.join(rel)).expect("example file"),
        );
    }
    files
}

fn check_locations(files: &BTreeMap<PathBuf, Vec<u8>>) {
    let result = spec::load_from_files(Path::new("/repo"), files.clone());
    let diags = match result {
        Ok(l) => l.warnings,
        Err(d) => d,
    };
    for d in diags.iter() {
        let Some(loc) = &d.location else { continue };
        let Some(bytes) = files.get(&loc.file) else {
            continue;
        };
        let lines = String::from_utf8_lossy(bytes).lines().count().max(1);
        assert!(
            loc.line >= 1 && loc.line <= lines,
            "{d} points past the end ({lines} lines)"
        );
        assert!(loc.column >= 1, "{d}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// One edit (delete, insert or replace a character) anywhere in the example repo.
    #[test]
    fn mutated_example_never_panics(file in 0usize..6, at in any::<prop::sample::Index>(),
                                    op in 0u8..3, c in prop::sample::select(vec![b' ', b':', b'-', b'[', b'{', b'}', b'\n', b'\'', b'"', b'#', b'x', b'*', b'&', b'\t'])) {
        let mut files = example_files();
        let key = files.keys().nth(file).cloned().unwrap_or_default();
        if let Some(bytes) = files.get_mut(&key) {
            let i = at.index(bytes.len().max(1)).min(bytes.len());
            match op {
                0 if i < bytes.len() => { bytes.remove(i); }
                1 => bytes.insert(i, c),
                _ if i < bytes.len() => bytes[i] = c,
                _ => {}
            }
        }
        check_locations(&files);
    }

    /// Arbitrary text as a key file and as people.yaml.
    #[test]
    fn arbitrary_files_never_panic(keys in "[ a-z0-9:\\-\\[\\]{},'\"#|>&*!\n]{0,300}",
                                   people in "[ a-z0-9:\\-\\[\\]{},'\"#|>&*!\n]{0,300}") {
        let mut files = example_files();
        files.insert(PathBuf::from("keys/fuzz.yaml"), keys.into_bytes());
        files.insert(PathBuf::from("people.yaml"), people.into_bytes());
        check_locations(&files);
    }
}

#[test]
fn billion_laughs_is_refused_quickly() {
    // 8 levels of 8 aliases: under the alias-count guard, 8^8 nodes if expanded.
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x]\n");
    for i in 1..=8 {
        let refs = vec![format!("*a{}", i - 1); 8].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    text.push_str("keys: *a8\n");
    let mut files = example_files();
    files.insert(PathBuf::from("keys/bomb.yaml"), text.into_bytes());
    let start = Instant::now();
    let diags =
        spec::load_from_files(Path::new("/repo"), files).expect_err("the bomb must be refused");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        diags.iter().any(|d| d.code == codes::YAML_TOO_COMPLEX
            && d.location
                .as_ref()
                .is_some_and(|l| l.file == Path::new("keys/bomb.yaml"))),
        "{diags:?}"
    );
}
