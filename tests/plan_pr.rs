//! Plans for pull requests and CI, through the real binary in real git repositories:
//! `--base`/`--rev`, Markdown with requesters and escalations first, saved plans and their
//! stale checks, dirty trees, committing deliveries, guards, and two applies at once.

mod common;
use common::Repo;
use keyward::store::{KeyWrite, Store};
use std::path::{Path, PathBuf};

const KEYS: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    purpose: ILL barcode lookup
    scopes: [bibs:read]
  - name: reports
    store: alma-sandbox
    owner: asmith
    scopes: [analytics:read]
  - name: course-sync
    store: alma-production
    owner: rkumar
    scopes: [courses:read]
";

/// The PR: two new keys, and ill-lookup escalated from read to write with a new area.
const PR_KEYS: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    purpose: ILL barcode lookup
    scopes: [bibs:write, users:read]
  - name: reports
    store: alma-sandbox
    owner: asmith
    scopes: [analytics:read]
  - name: course-sync
    store: alma-production
    owner: rkumar
    scopes: [courses:read]
  - name: new-discovery
    store: alma-sandbox
    owner: jdoe
    scopes: [bibs:read]
  - name: new-reserves
    store: alma-production
    owner: jdoe
    scopes: [courses:read]
";

fn ok(o: &common::Out) {
    assert_eq!(o.code, 0, "{}", o.all());
}

/// A git repository with KEYS applied and the deliveries committed.
fn applied_git_repo() -> (Repo, String) {
    let r = Repo::new(KEYS);
    let spec_commit = r.git_init();
    let o = r.run(&["apply", "--auto-approve", "--commit-deliveries"]);
    ok(&o);
    assert!(
        o.stderr.contains("Committed the deliveries"),
        "{}",
        o.stderr
    );
    assert_eq!(r.git(&["status", "--porcelain"]), "", "the tree is clean");
    (r, spec_commit)
}

fn manifest(r: &Repo, store: &str, name: &str, generation: u32) -> serde_json::Value {
    let p = r.root().join(format!(
        "deliveries/{store}/{name}/g{generation}/manifest.json"
    ));
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn store(r: &Repo, name: &str, file: &str) -> keyward::store::sqlite::SqliteStore {
    keyward::store::sqlite::SqliteStore::open(name, &r.root().join(".keyward").join(file)).unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn apply_records_the_commit_in_events_and_manifests_and_commits_deliveries() {
    let (r, spec_commit) = applied_git_repo();
    assert_eq!(
        manifest(&r, "alma-production", "ill-lookup", 1)["commit"],
        spec_commit.as_str()
    );
    let events = block_on(store(&r, "alma-production", "prod.db").events(None, 100)).unwrap();
    let created: Vec<_> = events.iter().filter(|e| e.key_name.is_some()).collect();
    assert!(!created.is_empty());
    for e in created {
        assert_eq!(e.commit.as_deref(), Some(spec_commit.as_str()), "{e:?}");
    }
    // The deliveries commit holds exactly the outbox.
    let files = r.git(&["show", "--name-only", "--format=%s", "HEAD"]);
    assert!(files.starts_with("keyward: deliveries"), "{files}");
    assert!(
        files
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .all(|l| l.starts_with("deliveries/")),
        "{files}"
    );
    assert!(files.contains("deliveries/alma-production/ill-lookup/g1/jdoe.age"));
}

#[test]
fn a_pull_request_plan_shows_escalations_first_and_names_the_requester() {
    let (r, _) = applied_git_repo();
    r.git(&["checkout", "-q", "-b", "request-keys"]);
    r.write_keys(PR_KEYS);
    r.commit_all(
        "Jane Requester",
        "jane@example.edu",
        "Request two keys, widen ill-lookup",
    );

    let o = r.run(&["plan", "--base", "main", "--format", "markdown"]);
    ok(&o);
    let md = &o.stdout;
    assert!(md.starts_with("<!-- keyward-plan -->\n"), "{md}");
    assert!(md.contains("requested by Jane Requester"), "{md}");
    assert!(
        !md.contains("Admin"),
        "only the PR's authors are requesters: {md}"
    );
    let esc = md.find("#### ⚠️ Escalations").expect("escalations section");
    let details = md.find("#### Details").expect("details");
    assert!(esc < details);
    assert!(
        md[esc..details].contains("alma-production/ill-lookup"),
        "{md}"
    );
    assert!(md[esc..details].contains("bibs: read -&gt; write"), "{md}");
    assert!(md.contains("Plan: 2 to create, 1 to update"), "{md}");

    // The same in JSON (validated against the schema by `run`).
    let o = r.run(&["plan", "--base", "main", "--format", "json"]);
    ok(&o);
    let j: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(j["base"]["requesters"][0]["name"], "Jane Requester");
    assert_eq!(j["base"]["commits"], 1);
    let touched = j["base"]["touched_keys"].as_array().unwrap();
    assert_eq!(touched.len(), 3, "{touched:?}");
    for a in j["actions"].as_array().unwrap() {
        assert_eq!(a["touched"], true, "{a}");
        assert_eq!(a["requested_by"][0], "Jane Requester <jane@example.edu>");
    }

    // Text names the requester too.
    let o = r.run(&["plan", "--base", "main"]);
    assert!(
        o.stdout.contains("Requested by: Jane Requester"),
        "{}",
        o.stdout
    );

    // --rev reads a revision without checking it out: main has nothing to do.
    let o = r.run(&["plan", "--rev", "main", "--detailed-exitcode"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(o.stdout.contains("No changes."), "{}", o.stdout);
    // ... and the branch's working tree is untouched.
    assert!(
        std::fs::read_to_string(r.root().join("keys/keys.yaml"))
            .unwrap()
            .contains("new-reserves")
    );
    let o = r.run(&["plan", "--rev", "request-keys", "--detailed-exitcode"]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.stdout.contains("(--rev request-keys)"), "{}", o.stdout);
    // A revision that does not exist is an error.
    let o = r.run(&["plan", "--rev", "no-such-branch"]);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.stderr.contains("no-such-branch"), "{}", o.stderr);
}

#[test]
fn apply_at_a_revision_applies_that_commit() {
    let (r, _) = applied_git_repo();
    r.git(&["checkout", "-q", "-b", "request-keys"]);
    r.write_keys(PR_KEYS);
    let pr = r.commit_all("Jane Requester", "jane@example.edu", "Request keys");
    r.git(&["checkout", "-q", "main"]);
    let o = r.run(&[
        "apply",
        "--rev",
        "request-keys",
        "--auto-approve",
        "--commit-deliveries",
    ]);
    ok(&o);
    assert_eq!(
        manifest(&r, "alma-production", "new-reserves", 1)["commit"],
        pr.as_str()
    );
    let o = r.run(&["plan", "--rev", "request-keys", "--detailed-exitcode"]);
    assert_eq!(o.code, 0, "{}", o.all());
}

fn plan_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

#[test]
fn a_saved_plan_is_applied_exactly_and_refused_when_stale() {
    let (r, _) = applied_git_repo();
    let plans = tempfile::tempdir().unwrap();
    r.write_keys(PR_KEYS);
    r.commit_all("Jane Requester", "jane@example.edu", "Request keys");

    // Saved, then applied: exactly that plan.
    let p1 = plan_file(plans.path(), "p1.json");
    let o = r.run(&["plan", "--out", p1.to_str().unwrap()]);
    ok(&o);
    assert!(o.stderr.contains("keyward apply"), "{}", o.stderr);
    let o = r.run(&["apply", p1.to_str().unwrap(), "--commit-deliveries"]);
    ok(&o);
    assert!(o.stderr.contains("Applying the saved plan"), "{}", o.stderr);
    let o = r.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(o.code, 0, "{}", o.all());

    // A key is edited in the store between plan and apply: stale, exit 3, nothing done.
    r.write_keys(&PR_KEYS.replace("scopes: [analytics:read]", "scopes: [analytics:write]"));
    r.commit_all("Jane Requester", "jane@example.edu", "reports needs write");
    let p2 = plan_file(plans.path(), "p2.json");
    ok(&r.run(&["plan", "--out", p2.to_str().unwrap()]));
    let sbx = store(&r, "alma-sandbox", "sbx.db");
    block_on(async {
        let keys = keyward::store::list_all(&sbx, &Default::default())
            .await
            .unwrap();
        let k = keys.iter().find(|k| k.name == "reports").unwrap();
        let patch = keyward::store::KeyPatch {
            purpose: Some(Some("edited in the console".into())),
            ..Default::default()
        };
        sbx.update(KeyWrite::new(&k.id, k.version, &Default::default()), patch)
            .await
            .unwrap();
    });
    let o = r.run(&["apply", p2.to_str().unwrap()]);
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(o.stderr.contains("stale"), "{}", o.stderr);
    assert!(
        o.stderr.contains("reports (id ")
            && o.stderr.contains("changed in the store (version 1 -> 2)"),
        "{}",
        o.stderr
    );
    let o = r.run(&["plan"]);
    assert!(
        o.stdout.contains("analytics:write"),
        "nothing was applied: {}",
        o.stdout
    );

    // The spec changes between plan and apply: stale, naming the file.
    let p3 = plan_file(plans.path(), "p3.json");
    ok(&r.run(&["plan", "--out", p3.to_str().unwrap()]));
    r.write_keys(&PR_KEYS.replace("owner: rkumar", "owner: asmith"));
    r.commit_all("Admin", "admin@example.edu", "course-sync changes hands");
    let o = r.run(&["apply", p3.to_str().unwrap()]);
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(
        o.stderr.contains("keys/keys.yaml (modified)"),
        "{}",
        o.stderr
    );

    // An edited plan file (an action changed by hand) is refused: apply recomputes it.
    let p4 = plan_file(plans.path(), "p4.json");
    ok(&r.run(&["plan", "--out", p4.to_str().unwrap()]));
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p4).unwrap()).unwrap();
    let a = v["actions"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|a| a["action"] == "update")
        .expect("an update");
    a["fields"][0]["after"] = "[\"configuration:write\"]".into();
    std::fs::write(&p4, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = r.run(&["apply", p4.to_str().unwrap()]);
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(o.stderr.contains("does not match"), "{}", o.stderr);
}

#[test]
fn corrupt_plan_files_and_plans_from_another_repository_are_refused() {
    let (r, _) = applied_git_repo();
    let plans = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("garbage.json", &b"\x00\x9f not json"[..]),
        ("truncated.json", b"{\"format_version\": 1, \"actions\": ["),
        ("other.json", b"{\"terraform_version\": \"1.9\"}"),
    ] {
        let p = plans.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let o = r.run(&["apply", p.to_str().unwrap()]);
        assert_eq!(o.code, 1, "{name}: {}", o.all());
        assert!(
            o.stderr.contains("is not a keyward plan file"),
            "{name}: {}",
            o.stderr
        );
    }
    let p = plans.path().join("missing.json");
    assert_eq!(r.run(&["apply", p.to_str().unwrap()]).code, 1);

    // A plan made in another repository.
    let other = Repo::new(PR_KEYS);
    other.git_init();
    let foreign = plans.path().join("foreign.json");
    ok(&other.run(&["plan", "--out", foreign.to_str().unwrap()]));
    let o = r.run(&["apply", foreign.to_str().unwrap()]);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.stderr.contains("another repository"), "{}", o.stderr);
}

#[test]
fn a_dirty_tree_is_refused_unless_allowed_and_a_plain_directory_says_so() {
    let (r, _) = applied_git_repo();
    let head = r.git(&["rev-parse", "HEAD"]).trim().to_string();
    r.write_keys(PR_KEYS);
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(o.stderr.contains("uncommitted changes"), "{}", o.stderr);
    assert!(o.stderr.contains("keys/keys.yaml"), "{}", o.stderr);
    // An untracked key file counts too.
    r.write_keys(KEYS);
    std::fs::write(r.root().join("keys/extra.yaml"), "keys: []\n").unwrap();
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(o.stderr.contains("keys/extra.yaml"), "{}", o.stderr);
    std::fs::remove_file(r.root().join("keys/extra.yaml")).unwrap();

    r.write_keys(PR_KEYS);
    let o = r.run(&["apply", "--auto-approve", "--allow-dirty"]);
    ok(&o);
    assert!(o.stderr.contains("--allow-dirty"), "{}", o.stderr);
    // The recorded commit (HEAD, the deliveries commit) says the tree was dirty.
    assert_eq!(
        manifest(&r, "alma-production", "new-reserves", 1)["commit"],
        format!("{head}-dirty").as_str()
    );
    // Uncommitted deliveries are dirty as well.
    r.commit_all("Admin", "admin@example.edu", "spec only");
    r.git(&["reset", "-q", "HEAD~1"]);
    r.git(&["add", "keys"]);
    r.git(&["commit", "-q", "-m", "spec"]);
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(o.stderr.contains("deliveries/"), "{}", o.stderr);

    // Not a git repository at all: allowed, and said.
    let plain = Repo::new(KEYS);
    let o = plain.run(&["apply", "--auto-approve"]);
    ok(&o);
    assert!(o.stderr.contains("not in a git repository"), "{}", o.stderr);
    let o = plain.run(&["apply", "--auto-approve", "--commit-deliveries"]);
    assert_eq!(o.code, 1, "{}", o.all());
}

#[test]
fn deliveries_can_be_committed_on_their_own_branch() {
    let r = Repo::new(KEYS);
    std::fs::write(
        r.root().join(".gitignore"),
        ".keyward/\nids/\nhome/\ndeliveries/\n",
    )
    .unwrap();
    r.git(&["init", "-q", "-b", "main"]);
    let spec = r.commit_all("Admin", "admin@example.edu", "keys");
    let o = r.run(&[
        "apply",
        "--auto-approve",
        "--commit-deliveries",
        "--branch",
        "deliveries",
    ]);
    ok(&o);
    assert!(o.stderr.contains("on deliveries"), "{}", o.stderr);
    assert_eq!(
        r.git(&["rev-parse", "HEAD"]).trim(),
        spec,
        "main did not move"
    );
    let tree = r.git(&["ls-tree", "-r", "--name-only", "deliveries"]);
    assert!(
        tree.contains("deliveries/alma-production/ill-lookup/g1/manifest.json"),
        "{tree}"
    );
    assert!(
        tree.contains("keys/keys.yaml"),
        "the branch starts from HEAD: {tree}"
    );

    // A later run on a fresh checkout (no local outbox) adds to the branch, keeping g1.
    std::fs::remove_dir_all(r.root().join("deliveries")).unwrap();
    r.write_keys(&KEYS.replace(
        "    scopes: [bibs:read]\n",
        "    scopes: [bibs:read]\n    rotation: { generation: 2 }\n",
    ));
    r.commit_all("Admin", "admin@example.edu", "rotate ill-lookup");
    let o = r.run(&[
        "apply",
        "--auto-approve",
        "--commit-deliveries",
        "--branch",
        "deliveries",
    ]);
    ok(&o);
    let tree = r.git(&["ls-tree", "-r", "--name-only", "deliveries"]);
    assert!(tree.contains("ill-lookup/g1/manifest.json"), "{tree}");
    assert!(tree.contains("ill-lookup/g2/manifest.json"), "{tree}");
    assert_eq!(r.git(&["status", "--porcelain"]), "");
}

fn ten_keys(keep: usize) -> String {
    let mut y = String::from("keys:\n");
    for i in 0..keep {
        y.push_str(&format!(
            "  - name: k{i:02}\n    store: alma-production\n    owner: {}\n    scopes: [bibs:read]\n",
            ["jdoe", "asmith", "rkumar"][i % 3]
        ));
    }
    y
}

#[test]
fn revoking_8_of_10_keys_is_refused_without_force() {
    let r = Repo::new(&ten_keys(10));
    ok(&r.run(&["apply", "--auto-approve"]));
    r.write_keys(&ten_keys(2));
    let p = r.run(&["plan"]);
    assert!(
        p.stdout
            .contains("apply will refuse this plan without --force"),
        "{}",
        p.stdout
    );
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(o.stderr.contains("max_revokes = 5"), "{}", o.stderr);
    assert!(
        o.stderr.contains("8 of its 10 live key(s) (80%)"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("--force"), "{}", o.stderr);
    assert!(
        r.run(&["plan"]).stdout.contains("8 to revoke"),
        "nothing was revoked"
    );
    let o = r.run(&["apply", "--auto-approve", "--force"]);
    ok(&o);
    assert!(o.stderr.contains("--force"), "{}", o.stderr);
    assert!(r.run(&["plan"]).stdout.contains("No changes."));
}

#[test]
fn guards_are_configurable_and_bad_values_are_diagnosed() {
    let r = Repo::new(&ten_keys(10));
    let cfg = std::fs::read_to_string(r.root().join("keyward.yaml")).unwrap();
    std::fs::write(
        r.root().join("keyward.yaml"),
        format!("{cfg}guards:\n  max_revoke_percent: 150\n  max_revokes: many\n  maxrevokes: 1\n  production: {{ max_replaces: -1 }}\n"),
    )
    .unwrap();
    let o = r.run(&["validate"]);
    assert_eq!(o.code, 1, "{}", o.all());
    for want in [
        "150 is not a percentage",
        "guards.max_revokes",
        "did you mean `max_revokes`",
        "guards.production.max_replaces",
    ] {
        assert!(o.stdout.contains(want), "missing {want:?} in {}", o.stdout);
    }
    // Switched off for production: the mass revocation goes through.
    std::fs::write(
        r.root().join("keyward.yaml"),
        format!("{cfg}guards:\n  production: {{ max_revokes: none, max_revoke_percent: none }}\n"),
    )
    .unwrap();
    ok(&r.run(&["apply", "--auto-approve"]));
    r.write_keys(&ten_keys(2));
    ok(&r.run(&["apply", "--auto-approve"]));
}

#[test]
fn apply_with_only_says_loudly_what_it_skipped() {
    let r = Repo::new(KEYS);
    let o = r.run(&["apply", "--auto-approve", "--only", "ill-lookup"]);
    ok(&o);
    assert!(o.stdout.contains("--only is in effect"), "{}", o.stdout);
    assert!(o.stderr.contains("SKIPPED and NOT applied"), "{}", o.stderr);
    assert!(
        o.stderr.contains("create alma-sandbox/reports (skipped)"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr
            .contains("create alma-production/course-sync (skipped)"),
        "{}",
        o.stderr
    );
    assert!(r.run(&["plan"]).stdout.contains("Plan: 2 to create"));
}

#[test]
fn two_applies_at_once_the_second_fails_at_once_naming_the_holder() {
    let r = Repo::new(KEYS);
    let mut first = std::process::Command::new(assert_cmd::cargo::cargo_bin("keyward"))
        .arg("-C")
        .arg(r.root())
        .args(["apply", "--auto-approve", "--concurrency", "1"])
        .env("KEYWARD_FAILPOINT", "between-keys:sleep=1500")
        .env("HOME", r.root().join("home"))
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The plan is printed once the locks are held.
    let mut stdout = std::io::BufReader::new(first.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert!(n > 0, "the first apply ended early: {seen}");
        seen.push_str(&line);
        if line.starts_with("Plan:") {
            break;
        }
    }
    let started = std::time::Instant::now();
    let o = r.run(&["apply", "--auto-approve"]);
    let took = started.elapsed();
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(o.stderr.contains("locked by"), "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!("(pid {}, start ", first.id())),
        "names the holder: {}",
        o.stderr
    );
    assert!(
        took < std::time::Duration::from_secs(4),
        "it failed at once: {took:?}"
    );
    let status = first.wait().unwrap();
    assert!(status.success());
    assert!(r.run(&["plan"]).stdout.contains("No changes."));
}

#[test]
fn a_plan_of_5000_new_keys_stays_under_the_markdown_budget() {
    let mut y = String::from("keys:\n");
    for i in 0..5_000 {
        y.push_str(&format!(
            "  - name: key-{i:04}\n    store: alma-sandbox\n    owner: jdoe\n    purpose: integration number {i}\n    scopes: [bibs:read, users:read]\n"
        ));
    }
    let r = Repo::new(&y);
    let cfg = std::fs::read_to_string(r.root().join("keyward.yaml")).unwrap();
    std::fs::write(
        r.root().join("keyward.yaml"),
        cfg.replace("policy:\n", "policy:\n  max_keys_per_owner: 0\n"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let o = r.run(&["plan", "--format", "markdown"]);
    let took = started.elapsed();
    ok(&o);
    let chars = o.stdout.chars().count();
    eprintln!("5,000-key Markdown plan: {chars} characters in {took:?}");
    assert!(chars <= 60_000, "{chars}");
    assert!(o.stdout.starts_with("<!-- keyward-plan -->"));
    assert!(o.stdout.contains("Plan: 5000 to create"));
    assert!(o.stdout.contains("key detail(s)"), "the cut is counted");
}
