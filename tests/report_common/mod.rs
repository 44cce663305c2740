//! Shared by the report tests: a copy of examples/library in a temp directory (so no store
//! or site is written into the source tree), running the real binary there, and reading a
//! written site back. Must not check anything itself.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A temp directory holding `examples/library` (its stores, deliveries and sites left out).
pub fn library_copy() -> tempfile::TempDir {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/library");
    let dir = tempfile::tempdir().expect("tempdir");
    for e in walkdir::WalkDir::new(&src)
        .into_iter()
        .filter_map(Result::ok)
    {
        let rel = e.path().strip_prefix(&src).expect("under the example");
        if [".keyward", "deliveries", "site"]
            .iter()
            .any(|p| rel.starts_with(p))
        {
            continue;
        }
        let to = dir.path().join("examples/library").join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to).expect("mkdir");
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
    dir
}

/// Run the real `keyward` in `cwd`; returns (exit code, stderr).
pub fn keyward(cwd: &Path, args: &[&str]) -> (Option<i32>, String) {
    let o = assert_cmd::Command::cargo_bin("keyward")
        .expect("the binary")
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env("HOME", cwd.join("home"))
        .args(args)
        .output()
        .expect("run keyward");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// examples/library applied, then `keyward -C examples/library report --html site/` run
/// in the temp directory: returns it and the site's directory.
pub fn library_site() -> (tempfile::TempDir, PathBuf) {
    let lib = library_copy();
    let (code, err) = keyward(
        lib.path(),
        &["-C", "examples/library", "apply", "--auto-approve"],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = keyward(
        lib.path(),
        &["-C", "examples/library", "report", "--html", "site/"],
    );
    assert_eq!(code, Some(0), "{err}");
    let site = lib.path().join("site");
    (lib, site)
}

/// Every file of a site: relative path -> text.
pub fn read_site(dir: &Path) -> BTreeMap<String, String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).expect("under the site");
            let text = std::fs::read_to_string(e.path()).expect("a text file");
            (rel.to_string_lossy().replace('\\', "/"), text)
        })
        .collect()
}

/// Where browser tests leave their screenshots (kept after the run).
pub fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("web-view")
        .join(name)
}
