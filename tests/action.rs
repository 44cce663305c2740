//! The GitHub Action (`action.yml`, composite): its run step (`.ci/action.sh`) runs for real
//! against the real binary in a real git repository, as the runner would (GITHUB_OUTPUT,
//! RUNNER_TEMP, the downloaded plan artifact); and the metadata itself is checked, since
//! actionlint reads workflows, not action metadata: every input/step/output it refers to
//! exists, every output the outputs read is written by the script, no input is spliced into
//! a shell script, and every action it uses is pinned.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Repo;

const KEYS: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The runner's side of one action run: its temp dir, output and summary files.
struct Runner {
    dir: tempfile::TempDir,
    /// The event's variables (none: not a pull request, whatever runs these tests).
    event: Vec<(&'static str, &'static str)>,
}

impl Runner {
    fn new() -> Runner {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("temp")).unwrap();
        Runner {
            dir,
            event: Vec::new(),
        }
    }

    fn temp(&self) -> PathBuf {
        self.dir.path().join("temp")
    }

    /// Runs the action's keyward step in `repo` with these inputs; returns its outputs.
    fn run(
        &self,
        repo: &Repo,
        command: &str,
        args: &str,
        artifact: &str,
    ) -> BTreeMap<String, String> {
        self.run_logged(repo, command, args, artifact).0
    }

    /// Like `run`, also returning what the step printed.
    fn run_logged(
        &self,
        repo: &Repo,
        command: &str,
        args: &str,
        artifact: &str,
    ) -> (BTreeMap<String, String>, String) {
        let output = self.dir.path().join("output");
        let _ = std::fs::remove_file(&output);
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_keyward")).parent().unwrap();
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
        let o = Command::new("bash")
            .arg(root().join(".ci/action.sh"))
            .current_dir(repo.root())
            .env("COMMAND", command)
            .env("ARGS", args)
            .env("PLAN_PATH", "")
            .env("PLAN_ARTIFACT", artifact)
            .env("GITHUB_OUTPUT", &output)
            .env("GITHUB_STEP_SUMMARY", self.dir.path().join("summary.md"))
            .env("RUNNER_TEMP", self.temp())
            .env("PATH", path)
            .env("HOME", repo.root().join("home"))
            .env_remove("KEYWARD_AGE_IDENTITY")
            .env_remove("KEYWARD_AGE_IDENTITY_FILE")
            .env_remove("GIT_AUTHOR_NAME")
            .env_remove("GIT_AUTHOR_EMAIL")
            .env_remove("GITHUB_EVENT_NAME")
            .env_remove("GITHUB_BASE_REF")
            .envs(self.event.iter().copied())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "the step itself always succeeds: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let outputs = std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (outputs, text)
    }

    /// What actions/download-artifact leaves for the apply job.
    fn download(&self, plan: &Path) {
        let dir = self.temp().join("keyward-plan-artifact");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(plan, dir.join("keyward-plan.json")).unwrap();
    }
}

#[test]
fn plan_saves_and_comments_then_apply_applies_exactly_the_downloaded_plan() {
    let r = Repo::new(KEYS);
    r.git_init();
    let plan_job = Runner::new();
    let out = plan_job.run(&r, "plan", "", "keyward-plan");
    assert_eq!(out["exitcode"], "2", "{out:?}");
    assert_eq!(out["has-changes"], "true");
    assert_eq!(out["saved"], "true");
    let plan = PathBuf::from(&out["plan-path"]);
    assert!(plan.starts_with(plan_job.temp()), "{plan:?}");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    common::check_plan_json(&saved).unwrap();
    let md = std::fs::read_to_string(&out["markdown"]).unwrap();
    assert!(md.starts_with(keyward::plan::markdown::MARKER), "{md}");
    assert!(md.contains("ill-lookup"), "{md}");
    let summary = std::fs::read_to_string(plan_job.dir.path().join("summary.md")).unwrap();
    assert_eq!(summary, md, "the plan is the job summary too");
    assert!(
        !r.root().join("keyward-plan.json").exists(),
        "nothing written into the repo"
    );

    // The apply job (another runner) downloads the artifact and applies it.
    let apply_job = Runner::new();
    apply_job.download(&plan);
    let out = apply_job.run(&r, "apply", "", "keyward-plan");
    assert_eq!(out["exitcode"], "0", "{out:?}");
    assert_eq!(out["has-changes"], "true");
    assert!(out["plan-path"].ends_with("keyward-plan-artifact/keyward-plan.json"));
    assert_eq!(r.live_keys().len(), 1);
    assert!(
        r.root()
            .join("deliveries/alma-production/ill-lookup/g1/jdoe.age")
            .exists()
    );

    // Nothing left: plan says so, apply (without an artifact) changes nothing.
    let again = Runner::new();
    let out = again.run(&r, "plan", "", "keyward-plan");
    assert_eq!(
        (out["exitcode"].as_str(), out["has-changes"].as_str()),
        ("0", "false")
    );
    let out = again.run(&r, "apply", "--allow-dirty", "");
    assert_eq!(out["exitcode"], "0", "{out:?}");
    assert_eq!(out["has-changes"], "false");
    assert_eq!(out["plan-path"], "");
}

#[test]
fn on_a_pull_request_the_plan_gets_base_so_store_settings_come_from_the_base() {
    let r = Repo::new(KEYS);
    r.git_init();
    r.git(&["update-ref", "refs/remotes/origin/main", "HEAD"]);
    r.git(&["checkout", "-q", "-b", "pr"]);
    let moved = std::fs::read_to_string(r.root().join("keyward.yaml"))
        .unwrap()
        .replace(".keyward/prod.db", ".keyward/elsewhere.db");
    std::fs::write(r.root().join("keyward.yaml"), moved).unwrap();
    r.commit_all("Mallory", "mallory@example.edu", "move the store");
    let mut job = Runner::new();
    job.event = vec![
        ("GITHUB_EVENT_NAME", "pull_request"),
        ("GITHUB_BASE_REF", "main"),
    ];
    // The workflow passes no --base: the action adds it.
    let out = job.run(&r, "plan", "", "");
    assert_eq!(out["exitcode"], "2", "{out:?}");
    let md = std::fs::read_to_string(&out["markdown"]).unwrap();
    assert!(md.contains("base <code>origin/main</code>"), "{md}");
    assert!(md.contains("Store connection settings change"), "{md}");
    assert!(md.contains("elsewhere.db"), "{md}");
    assert!(
        !r.root().join(".keyward/elsewhere.db").exists(),
        "the PR's store path was opened"
    );
    // Not on a pull request: no --base is added.
    let plain = Runner::new();
    let out = plain.run(&r, "plan", "", "");
    let md = std::fs::read_to_string(&out["markdown"]).unwrap();
    assert!(!md.contains("origin/main"), "{md}");
}

#[test]
fn a_stale_plan_artifact_is_refused_with_exit_3_and_a_missing_one_is_an_error() {
    let r = Repo::new(KEYS);
    r.git_init();
    let plan_job = Runner::new();
    let out = plan_job.run(&r, "plan", "", "keyward-plan");
    let plan = PathBuf::from(&out["plan-path"]);
    // Someone applied a different change in between.
    r.write_keys(&KEYS.replace("bibs:read", "users:read"));
    r.commit_all("Admin", "admin@example.edu", "users instead");
    assert_eq!(
        r.run(&["apply", "--auto-approve", "--commit-deliveries"])
            .code,
        0
    );

    let apply_job = Runner::new();
    apply_job.download(&plan);
    let (out, text) = apply_job.run_logged(&r, "apply", "", "keyward-plan");
    assert_eq!(out["exitcode"], "3", "{out:?}: {text}");
    assert_eq!(out["has-changes"], "false");
    assert!(
        text.contains("stale") || text.contains("changed since"),
        "{text}"
    );

    let empty = Runner::new();
    let (out, text) = empty.run_logged(&r, "apply", "", "keyward-plan");
    assert_eq!(out["exitcode"], "1", "{out:?}");
    assert!(text.contains("no saved plan in the artifact"), "{text}");
}

#[test]
fn expiring_and_errors_set_the_exit_code_output() {
    let r = Repo::new(
        "keys:\n  - name: short\n    store: alma-sandbox\n    owner: jdoe\n    scopes: [bibs:read]\n    lifetime: 5d\n",
    );
    r.git_init();
    assert_eq!(r.run(&["apply", "--auto-approve"]).code, 0);
    let job = Runner::new();
    let out = job.run(&r, "expiring", "--within 30d", "");
    assert_eq!(out["exitcode"], "2", "{out:?}");
    assert_eq!(out["has-changes"], "true");
    let out = job.run(&r, "expiring", "--within 1d", "");
    assert_eq!(
        (out["exitcode"].as_str(), out["has-changes"].as_str()),
        ("0", "false")
    );
    let out = job.run(&r, "destroy", "", "");
    assert_eq!(out["exitcode"], "1");
    // An invalid spec: exit 1, no saved plan, no comment.
    std::fs::write(r.root().join("keys/bad.yaml"), "keys: [{name: 7}]\n").unwrap();
    let out = job.run(&r, "plan", "", "keyward-plan");
    assert_eq!(out["exitcode"], "1", "{out:?}");
    assert_eq!(out["saved"], "false");
}

// ---- the metadata ----

fn action() -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(root().join("action.yml")).unwrap()).unwrap()
}

/// `${{ ... }}` expressions in `text`.
fn expressions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${{") {
        let after = &rest[i + 3..];
        let j = after.find("}}").expect("closed expression");
        out.push(after[..j].trim().to_string());
        rest = &after[j + 2..];
    }
    out
}

fn refs<'a>(expr: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find(prefix) {
        let after = &rest[i + prefix.len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(after.len());
        out.push(&after[..end]);
        rest = &after[end..];
    }
    out
}

#[test]
fn action_yml_is_a_consistent_composite_action() {
    let a = action();
    let text = std::fs::read_to_string(root().join("action.yml")).unwrap();
    assert!(a["name"].as_str().is_some() && a["description"].as_str().is_some());
    assert_eq!(a["runs"]["using"].as_str(), Some("composite"));
    let inputs: Vec<String> = a["inputs"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    for want in [
        "command",
        "args",
        "install",
        "version",
        "sha256",
        "plan-artifact",
    ] {
        assert!(inputs.iter().any(|i| i == want), "no input {want}");
    }
    let steps = a["runs"]["steps"].as_sequence().unwrap();
    let ids: Vec<&str> = steps.iter().filter_map(|s| s["id"].as_str()).collect();
    for s in steps {
        let name = s["name"].as_str().expect("every step is named");
        match (s["uses"].as_str(), s["run"].as_str()) {
            (Some(uses), None) => {
                let (action, version) = uses.split_once('@').expect("pinned");
                assert!(action.starts_with("actions/"), "{uses}");
                assert!(version.starts_with('v'), "{uses}");
            }
            (None, Some(run)) => {
                assert_eq!(
                    s["shell"].as_str(),
                    Some("bash"),
                    "{name}: a run step needs shell"
                );
                // Inputs reach scripts through env:, never spliced into the script text.
                assert!(
                    expressions(run).is_empty(),
                    "{name}: ${{{{ }}}} in a script"
                );
            }
            _ => panic!("{name}: exactly one of uses/run"),
        }
    }
    for e in expressions(&text) {
        for i in refs(&e, "inputs.") {
            assert!(inputs.iter().any(|x| x == i), "unknown input {i} in {e}");
        }
        for id in refs(&e, "steps.") {
            assert!(ids.contains(&id), "unknown step {id} in {e}");
        }
    }
    // The outputs the action and its later steps read are the ones the script writes.
    let script = std::fs::read_to_string(root().join(".ci/action.sh")).unwrap();
    for e in expressions(&text) {
        for o in refs(&e, "steps.run.outputs.") {
            assert!(
                script.contains(&format!("echo \"{o}=")),
                "output {o} is never written by .ci/action.sh"
            );
        }
    }
    let outputs = a["outputs"].as_mapping().unwrap();
    for want in ["exitcode", "has-changes", "plan-path"] {
        assert!(outputs.contains_key(want), "no output {want}");
    }
    // The default release is the one this checkout would publish.
    assert_eq!(
        a["inputs"]["version"]["default"].as_str(),
        Some(format!("v{}", env!("CARGO_PKG_VERSION")).as_str())
    );
}

/// What actionlint would check if it read local actions: every workflow step that uses this
/// action gives only inputs it declares (and the required ones), and reads only outputs it
/// declares.
#[test]
fn every_workflow_using_the_action_gives_known_inputs_and_reads_known_outputs() {
    let a = action();
    let declared = |section: &str| -> Vec<String> {
        a[section]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    };
    let (inputs, outputs) = (declared("inputs"), declared("outputs"));
    let required: Vec<&String> = inputs
        .iter()
        .filter(|i| a["inputs"][i.as_str()]["required"].as_bool() == Some(true))
        .collect();
    let mut uses_seen = 0;
    for dir in [".github/workflows", "examples/github"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let wf: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
            for (_, job) in wf["jobs"].as_mapping().unwrap() {
                let Some(steps) = job["steps"].as_sequence() else {
                    continue;
                };
                for s in steps {
                    let uses = s["uses"].as_str().unwrap_or("");
                    if uses != "./" && !uses.starts_with("keyward/keyward@") {
                        continue;
                    }
                    uses_seen += 1;
                    let with = s["with"].as_mapping().cloned().unwrap_or_default();
                    for k in with.keys() {
                        let k = k.as_str().unwrap();
                        assert!(inputs.iter().any(|i| i == k), "{path:?}: unknown input {k}");
                    }
                    for r in &required {
                        assert!(with.contains_key(r.as_str()), "{path:?}: no {r}");
                    }
                    let cmd = with.get("command").and_then(|c| c.as_str()).unwrap();
                    assert!(["plan", "apply", "expiring"].contains(&cmd), "{cmd}");
                    if let Some(id) = s["id"].as_str() {
                        for e in expressions(&text) {
                            for o in refs(&e, &format!("steps.{id}.outputs.")) {
                                assert!(outputs.iter().any(|x| x == o), "{path:?}: output {o}");
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        uses_seen >= 6,
        "the examples and CI use the action ({uses_seen})"
    );
}
