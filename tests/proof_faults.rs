//! Fault injection: apply is failed (error mode) and killed (exit mode, and a real SIGKILL)
//! at every named failpoint while it creates, updates, rotates, replaces and revokes keys;
//! the next apply converges and the delivery invariants hold (see
//! `common::Repo::check_invariants`). Real binary, real SQLite files, real age.

mod common;
use common::Repo;
use keyward::apply::failpoint;

/// The starting state, applied once and copied for every run.
const BEFORE: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read, users:read]
    recipients: [team:ill-staff]
    rotation: { generation: 1 }
  - name: reports
    store: alma-sandbox
    owner: asmith
    scopes: [analytics:read]
  - name: old-feed
    store: alma-production
    owner: rkumar
    scopes: [courses:read]
  - name: course
    store: alma-production
    owner: rkumar
    scopes: [courses:read]
  - name: keep-me
    store: alma-production
    owner: rkumar
    scopes: [courses:read]
    protected: true
";

/// The edit whose apply is interrupted: ill-lookup rotates (generation 1 -> 2), reports is
/// replaced (owner changed), old-feed is revoked (removed), course is updated in place,
/// new-a and new-b are created.
const AFTER: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read, users:read]
    recipients: [team:ill-staff]
    rotation: { generation: 2 }
  - name: reports
    store: alma-sandbox
    owner: rkumar
    scopes: [analytics:read]
  - name: course
    store: alma-production
    owner: rkumar
    scopes: [courses:read, bibs:read]
  - name: keep-me
    store: alma-production
    owner: rkumar
    scopes: [courses:read]
    protected: true
  - name: new-a
    store: alma-production
    owner: jdoe
    scopes: [users:read]
  - name: new-b
    store: alma-sandbox
    owner: asmith
    scopes: [analytics:read]
    recipients: [team:ill-staff]
";

/// Keys per (store, name) once AFTER is applied: reports twice (the replaced one is kept
/// revoked), everything else once.
const COUNTS: &[(&str, &str, usize)] = &[
    ("alma-production", "ill-lookup", 1),
    ("alma-sandbox", "reports", 2),
    ("alma-production", "old-feed", 1),
    ("alma-production", "course", 1),
    ("alma-production", "keep-me", 1),
    ("alma-production", "new-a", 1),
    ("alma-sandbox", "new-b", 1),
];

fn apply_ok(r: &Repo, context: &str) {
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{context}: apply failed: {}", o.all());
}

fn prepared() -> Repo {
    let r = Repo::new(BEFORE);
    apply_ok(&r, "initial");
    r.check_invariants("initial", &[]);
    r.write_keys(AFTER);
    let p = r.run(&["plan"]);
    for want in [
        "ill-lookup will be rotated",
        "reports must be replaced",
        "old-feed will be revoked",
        "course will be updated in place",
        "+ key \"new-a\"",
    ] {
        assert!(p.stdout.contains(want), "plan lacks `{want}`: {}", p.stdout);
    }
    r
}

fn run_every_point(mode: &str) {
    let base = prepared();
    for point in failpoint::ALL {
        let r = base.duplicate();
        let context = format!("{point}:{mode}");
        let o = r.run_with(
            &["apply", "--auto-approve", "--concurrency", "1"],
            &[("KEYWARD_FAILPOINT", context.as_str())],
            None,
        );
        if mode == "exit" {
            assert_eq!(
                o.code,
                86,
                "{context}: the process should have died there: {}",
                o.all()
            );
        } else {
            assert_eq!(
                o.code,
                1,
                "{context}: apply should have failed: {}",
                o.all()
            );
            assert!(
                o.stderr.contains(&format!("fault injected at `{point}`")),
                "{context}: the point was not reached: {}",
                o.all()
            );
        }
        // The interrupted state is already safe: pending deliveries aside, nothing active
        // lacks a readable delivery. (Pending manifests are settled by the next run.)
        // Re-run without the fault: converges in one run.
        apply_ok(&r, &context);
        r.assert_plan_empty(&context);
        r.check_invariants(&context, COUNTS);
    }
}

#[test]
fn every_failpoint_in_error_mode_converges_on_the_next_apply() {
    run_every_point("error");
}

#[test]
fn every_failpoint_in_exit_mode_converges_on_the_next_apply() {
    run_every_point("exit");
}

#[test]
fn failpoint_names_are_distinct_and_unknown_names_do_nothing() {
    let mut names = failpoint::ALL.to_vec();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), failpoint::ALL.len());
    let r = prepared();
    let o = r.run_with(
        &["apply", "--auto-approve"],
        &[("KEYWARD_FAILPOINT", "no-such-point:exit")],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    r.assert_plan_empty("unknown point");
    r.check_invariants("unknown point", COUNTS);
}

/// A spec of `n` keys split over both stores; `generation` and `owner_of` vary per round.
fn big_spec(n: usize, generation: u32, drop_every: usize, owner_flip: bool) -> String {
    let mut s = String::from("keys:\n");
    for i in 0..n {
        if drop_every > 0 && i % drop_every == 0 {
            continue;
        }
        let store = if i % 2 == 0 {
            "alma-production"
        } else {
            "alma-sandbox"
        };
        let owner = match (i % 3, owner_flip && i % 5 == 0) {
            (_, true) => "rkumar",
            (0, _) => "jdoe",
            (1, _) => "asmith",
            _ => "rkumar",
        };
        s.push_str(&format!(
            "  - name: k{i:04}\n    store: {store}\n    owner: {owner}\n    scopes: [bibs:read]\n    rotation: {{ generation: {generation} }}\n"
        ));
    }
    s
}

/// A real `kill -9` of an apply of 200 keys at concurrency 4, once it has written a random
/// few new delivery manifests, in several rounds (creates, rotations, replaces and revokes); each time the next apply
/// converges and the invariants hold.
#[test]
fn sigkill_during_a_200_key_apply_converges() {
    use rand::Rng;
    let bin = assert_cmd::cargo::cargo_bin("keyward");
    let r = Repo::new("keys: []\n");
    let cfg = r.root().join("keyward.yaml");
    let text = std::fs::read_to_string(&cfg).expect("keyward.yaml");
    std::fs::write(
        &cfg,
        text.replace("policy:\n", "policy:\n  max_keys_per_owner: 1000\n"),
    )
    .expect("write");
    let mut rng = rand::thread_rng();
    // Rounds: create all; rotate all; replace every 5th and revoke every 7th; rotate again.
    let rounds = [
        big_spec(200, 1, 0, false),
        big_spec(200, 2, 0, false),
        big_spec(200, 2, 7, true),
        big_spec(200, 3, 7, true),
    ];
    let mut killed_midway = 0;
    for (round, spec) in rounds.iter().enumerate() {
        r.write_keys(spec);
        // Up to three kills per round, each once the apply has written a random number
        // (1-20) of new delivery manifests, so the kill lands mid-apply however fast the
        // build and the machine are; stop once an apply finishes on its own first.
        for attempt in 0..3 {
            let progress = rng.gen_range(1..=20usize);
            let before = count_manifests(&r.root().join("deliveries"));
            let mut child = std::process::Command::new(&bin)
                .arg("-C")
                .arg(r.root())
                .args(["apply", "--auto-approve", "--force", "--concurrency", "4"])
                .env_remove("KEYWARD_FAILPOINT")
                .env("HOME", r.root().join("home"))
                .env("NO_COLOR", "1")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn keyward");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            let finished = loop {
                if child.try_wait().expect("wait").is_some() {
                    break true;
                }
                if count_manifests(&r.root().join("deliveries")) >= before + progress
                    || std::time::Instant::now() > deadline
                {
                    break false;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            };
            child.kill().ok(); // SIGKILL
            child.wait().expect("reap");
            if finished {
                break;
            }
            killed_midway += 1;
            let context = format!("round {round} kill {attempt} after {progress} new manifests");
            // What a kill leaves is safe before any re-run: every active manifest's key
            // exists; pending ones are settled by the next apply.
            let keys = r.live_keys();
            eprintln!("{context}: {} keys in the stores at the kill", keys.len());
            for (store, k) in &keys {
                if k.managed_by.as_deref() == Some("keyward")
                    && k.status != keyward::store::KeyStatus::Revoked
                {
                    // The envelope of the current generation was written before the store
                    // accepted the secret: it exists (pending or active).
                    let m = r.root().join(format!(
                        "deliveries/{store}/{}/g{}/manifest.json",
                        k.name, k.generation
                    ));
                    assert!(m.exists(), "{context}: {} has no delivery", k.name);
                }
            }
        }
        let context = format!("round {round}");
        let o = r.run(&["apply", "--auto-approve", "--force"]);
        assert_eq!(o.code, 0, "{context}: apply failed: {}", o.all());
        r.assert_plan_empty(&context);
        let secrets = r.check_invariants(&context, &[]);
        assert!(
            secrets.len() >= 150,
            "{context}: only {} secrets",
            secrets.len()
        );
    }
    assert!(
        killed_midway >= 2,
        "the kills all came after apply finished; the test proved nothing"
    );
}

/// Delivery manifests under `deliveries/<store>/<key>/g<N>/manifest.json` (pending or not).
fn count_manifests(deliveries: &std::path::Path) -> usize {
    let dirs = |p: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(p)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    };
    dirs(deliveries)
        .iter()
        .flat_map(|store| dirs(store))
        .flat_map(|key| dirs(&key))
        .filter(|generation| generation.join("manifest.json").exists())
        .count()
}

/// `apply --commit-deliveries` failed or killed while committing: the re-run (whose plan
/// is empty) still commits what was delivered, and the invariants hold.
#[test]
fn a_fault_while_committing_deliveries_is_committed_by_the_next_apply() {
    let base = Repo::new(BEFORE);
    base.git_init();
    let o = base.run(&["apply", "--auto-approve", "--commit-deliveries"]);
    assert_eq!(o.code, 0, "{}", o.all());
    base.write_keys(AFTER);
    base.commit_all(
        "Admin",
        "admin@example.edu",
        "rotate, replace, revoke, create",
    );
    for point in failpoint::COMMIT {
        for mode in ["error", "exit"] {
            let r = base.duplicate();
            let context = format!("{point}:{mode}");
            let o = r.run_with(
                &["apply", "--auto-approve", "--commit-deliveries"],
                &[("KEYWARD_FAILPOINT", context.as_str())],
                None,
            );
            if mode == "exit" {
                assert_eq!(o.code, 86, "{context}: {}", o.all());
            } else {
                assert_eq!(o.code, 1, "{context}: {}", o.all());
                assert!(
                    o.stderr.contains(&format!("fault injected at `{point}`")),
                    "{context}: the point was not reached: {}",
                    o.all()
                );
            }
            // The keys are applied, their envelopes not committed.
            assert!(
                !r.git(&["status", "--porcelain", "--", "deliveries"])
                    .is_empty(),
                "{context}: nothing left uncommitted?"
            );
            let o = r.run(&["apply", "--auto-approve", "--commit-deliveries"]);
            assert_eq!(o.code, 0, "{context}: {}", o.all());
            r.assert_plan_empty(&context);
            r.check_invariants(&context, COUNTS);
            let status = r.git(&["status", "--porcelain", "--", "deliveries"]);
            assert!(status.is_empty(), "{context}: uncommitted: {status}");
            // Every active manifest is in HEAD.
            for e in walkdir::WalkDir::new(r.root().join("deliveries"))
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_name() == "manifest.json")
            {
                let m = common::read_json(e.path()).expect("manifest");
                if m["status"] == "active" {
                    let rel = e.path().strip_prefix(r.root()).expect("rel");
                    r.git(&["cat-file", "-e", &format!("HEAD:{}", rel.display())]);
                }
            }
        }
    }
}
