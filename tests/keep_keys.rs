//! Issue 15, "never lose or re-create keys by accident", through the real binary on temp
//! git repositories with real SQLite files: a missing store file is never created by a
//! read-only command and never silently re-created by plan or apply.

mod common;
use common::Repo;

const TWO_KEYS: &str = "\
keys:
  - name: illiad-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
  - name: course-reserves
    store: alma-production
    owner: asmith
    scopes: [courses:read]
";

/// A fresh clone of `r` (the git CLI): `.keyward/` is git-ignored, so it has no store file.
fn fresh_clone(r: &Repo) -> Repo {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = std::process::Command::new("git")
        .arg("clone")
        .arg("-q")
        .arg(r.root())
        .arg(dir.path())
        .output()
        .expect("git clone");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Repo {
        dir,
        identities: r.identities.clone(),
        env: r.env.clone(),
    }
}

fn store_files(r: &Repo) -> Vec<String> {
    let dir = r.root().join(".keyward");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn read_only_commands_never_create_a_store_file_and_a_new_store_plans_creates() {
    let r = Repo::new(TWO_KEYS);
    r.git_init();
    for args in [
        &["validate"][..],
        &["plan"],
        &["plan", "--drift-only"],
        &["plan", "--format", "json"],
        &["keys"],
        &["keys", "--store", "alma-production"],
        &["expiring"],
        &["secret", "illiad-lookup", "--store", "alma-production"],
    ] {
        let o = r.run(args);
        assert!(
            store_files(&r).is_empty(),
            "`keyward {}` created {:?}: {}",
            args.join(" "),
            store_files(&r),
            o.all()
        );
    }
    // No deliveries yet: the store is new, and the plan shows the creates.
    let o = r.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(
        o.stdout
            .contains("alma-production/illiad-lookup will be created"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("new key"), "{}", o.stdout);
    assert!(!o.stdout.contains("drift"), "{}", o.stdout);
    assert!(store_files(&r).is_empty());
    // apply is the one command that creates it.
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(r.root().join(".keyward/prod.db").exists());
}

#[test]
fn a_fresh_clone_without_the_store_file_refuses_plan_and_apply_until_told_what_to_do() {
    let r = Repo::new(TWO_KEYS);
    r.git_init();
    let o = r.run(&["apply", "--auto-approve", "--commit-deliveries"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let old = r.secret("illiad-lookup", "alma-production", "jdoe");

    let c = fresh_clone(&r);
    assert!(
        c.root().join("deliveries").exists(),
        "the deliveries are committed"
    );
    assert!(store_files(&c).is_empty(), "the clone has no store file");
    for args in [
        &["plan"][..],
        &["plan", "--drift-only"],
        &["apply", "--auto-approve"],
    ] {
        let o = c.run(args);
        assert_eq!(o.code, 3, "`keyward {}`: {}", args.join(" "), o.all());
        for needle in [
            "store `alma-production`: its database .keyward/prod.db does not exist",
            "show 2 active key(s) from it (course-reserves, illiad-lookup)",
            "restore the file",
            "point `path` in keyward.yaml at it",
            "--recreate-store alma-production",
        ] {
            assert!(
                o.stderr.contains(needle),
                "missing {needle:?}: {}",
                o.stderr
            );
        }
        assert!(!o.stdout.contains("will be created"), "{}", o.stdout);
        assert!(
            store_files(&c).is_empty(),
            "`keyward {}` created a store",
            args.join(" ")
        );
    }
    // keys and expiring say nothing is there, without creating anything.
    assert_eq!(c.run(&["keys"]).code, 0);
    assert!(store_files(&c).is_empty());

    // On purpose: the plan shows the re-issue, apply does it.
    let o = c.run(&["plan", "--recreate-store", "alma-production"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stderr.contains("re-issued with new secrets"),
        "{}",
        o.stderr
    );
    assert!(
        o.stdout
            .contains("alma-production/illiad-lookup will be created"),
        "{}",
        o.stdout
    );
    assert!(
        store_files(&c).is_empty(),
        "plan --recreate-store created a store"
    );
    let o = c.run(&[
        "apply",
        "--auto-approve",
        "--recreate-store",
        "alma-production",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    let new = c.secret("illiad-lookup", "alma-production", "jdoe");
    assert_ne!(new, old);
    assert_eq!(c.verify(&new, "alma-production")["valid"], true);
    // A name that is not a missing embedded store is an error, not a re-creation.
    let o = c.run(&["plan", "--recreate-store", "alma-production"]);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.stderr.contains("is not missing"), "{}", o.stderr);
    let o = c.run(&["plan", "--recreate-store", "nope"]);
    assert_eq!(o.code, 1, "{}", o.all());
}

/// An edit made by hand in the store's database, as an admin with `sqlite3` would.
fn by_hand(r: &Repo, sql: &str) {
    let c = rusqlite::Connection::open(r.root().join(".keyward/prod.db")).expect("open db");
    let n = c.execute(sql, []).expect("hand edit");
    assert_eq!(n, 1, "{sql}");
}

#[test]
fn drift_only_reports_status_drift_on_revoked_and_kept_keys_with_every_field() {
    let r = Repo::new(TWO_KEYS);
    assert_eq!(r.run(&["apply", "--auto-approve"]).code, 0);
    // course-reserves leaves the spec: revoked.
    r.write_keys(&TWO_KEYS.replace(
        "  - name: course-reserves\n    store: alma-production\n    owner: asmith\n    scopes: [courses:read]\n",
        "",
    ));
    assert_eq!(r.run(&["apply", "--auto-approve"]).code, 0);
    assert_eq!(r.run(&["plan", "--drift-only"]).code, 0);
    // Someone re-activates the revoked key and edits the kept one, by hand.
    by_hand(
        &r,
        "UPDATE keys SET status = 'active' WHERE name = 'course-reserves'",
    );
    by_hand(
        &r,
        "UPDATE keys SET status = 'disabled', scopes = '[\"bibs:write\"]' WHERE name = 'illiad-lookup'",
    );
    let o = r.run(&["plan", "--drift-only"]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(
        o.stdout
            .contains("drift: status changed outside keyward (revoked -> active)"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("drift: scopes, status changed outside keyward"),
        "{}",
        o.stdout
    );
    let j = r.run(&["plan", "--drift-only", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).expect("json");
    let actions = v["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 2, "{}", j.stdout);
    assert!(actions.iter().all(|a| a["drift"] == true), "{}", j.stdout);
    let revoke = actions
        .iter()
        .find(|a| a["name"] == "course-reserves")
        .expect("the revoked key");
    assert_eq!(revoke["action"], "revoke");
    // The full plan calls it drift too, and apply puts it back.
    let o = r.run(&["plan"]);
    assert!(o.stdout.contains("(revoked -> active)"), "{}", o.stdout);
    assert_eq!(r.run(&["apply", "--auto-approve"]).code, 0);
    assert_eq!(r.run(&["plan", "--drift-only"]).code, 0);
}

/// The test clock's day 0 (`KEYWARD_NOW`).
fn day(d: i64) -> String {
    let t0 = chrono::DateTime::parse_from_rfc3339("2027-01-10T12:00:00Z").unwrap();
    (t0 + chrono::Duration::days(d)).to_rfc3339()
}

fn at(r: &Repo, d: i64, args: &[&str]) -> common::Out {
    r.run_with(args, &[("KEYWARD_NOW", &day(d))], None)
}

fn valid_at(r: &Repo, d: i64, secret: &str) -> serde_json::Value {
    let o = r.run_with(
        &["verify", "--store", "alma-production"],
        &[("KEYWARD_NOW", &day(d))],
        Some(secret),
    );
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", o.all()))
}

const OWNERS: &str = "\
keys:
  - name: illiad-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
  - name: leaver-key
    store: alma-production
    owner: rkumar
    scopes: [courses:read]
    rotation: { grace: 0d }
";

#[test]
fn an_owner_change_keeps_the_old_key_valid_through_the_grace_and_grace_0_cuts_at_once() {
    let r = Repo::new(OWNERS);
    assert_eq!(at(&r, 0, &["apply", "--auto-approve"]).code, 0);
    let old = r.secret("illiad-lookup", "alma-production", "jdoe");
    let leaver = r.secret("leaver-key", "alma-production", "rkumar");
    r.write_keys(
        &OWNERS
            .replace("owner: jdoe", "owner: asmith")
            .replace("owner: rkumar", "owner: jdoe"),
    );
    let p = at(&r, 1, &["plan"]);
    assert!(
        p.stdout.contains(
            "stays valid until 2027-01-18 12:00 UTC (grace 7d), then an apply revokes it"
        ),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout.contains("is revoked at once (grace 0)"),
        "{}",
        p.stdout
    );
    let j = at(&r, 1, &["plan", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).expect("json");
    let illiad = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "illiad-lookup")
        .expect("replace")
        .clone();
    assert_eq!(illiad["action"], "replace");
    assert_eq!(illiad["old_valid_until"], "2027-01-18T12:00:00Z");
    let o = at(&r, 1, &["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{}", o.all());

    // The application keeps working with the old secret until the new one is deployed.
    let new = r.secret("illiad-lookup", "alma-production", "asmith");
    assert_ne!(new, old);
    assert_eq!(valid_at(&r, 2, &old)["valid"], true);
    assert_eq!(valid_at(&r, 2, &new)["valid"], true);
    // The leaver's key was cut at once.
    assert_eq!(valid_at(&r, 1, &leaver)["reason"], "revoked");
    // During the grace: nothing to do, and the plan says until when.
    let o = at(&r, 3, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stdout.contains("stays valid until 2027-01-18 12:00 UTC"),
        "{}",
        o.stdout
    );
    // After it: the old secret has expired, and the next apply revokes it.
    assert_eq!(valid_at(&r, 9, &old)["reason"], "expired");
    let o = at(&r, 9, &["plan"]);
    assert!(o.stdout.contains("grace over: replaced by"), "{}", o.stdout);
    assert_eq!(at(&r, 9, &["apply", "--auto-approve"]).code, 0);
    assert_eq!(valid_at(&r, 9, &old)["reason"], "revoked");
    assert_eq!(valid_at(&r, 9, &new)["valid"], true);
    assert_eq!(at(&r, 9, &["plan", "--detailed-exitcode"]).code, 0);
}
