//! Policy `unused_after` end to end: a real `keyward serve` on the repository's SQLite file
//! counts real verifies under a fixed clock (`KEYWARD_NOW`), then `keyward plan` at a later
//! fixed clock proposes disabling the keys unused for the window (reason `due: unused for N
//! days`, the last use beside it), never a protected key, and the bulk-change guards refuse
//! a mass disable as they refuse a mass revoke.

mod common;
mod serve_common;
use common::Repo;
use serde_json::Value;

const KEYS: &str = "\
keys:
  - name: idle
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
  - name: busy
    store: alma-production
    owner: asmith
    scopes: [bibs:read]
  - name: guarded
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
    protected: true
";

/// `now` plus `days`, as `KEYWARD_NOW` takes it.
fn at(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339()
}

fn with_unused_after(r: &Repo, span: &str) {
    let cfg = r.root().join("keyward.yaml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("  unused_after: {span}\n"));
    std::fs::write(&cfg, text).unwrap();
}

fn plan_json(r: &Repo, now: &str) -> Value {
    let o = r.run_with(&["plan", "--format", "json"], &[("KEYWARD_NOW", now)], None);
    assert_eq!(o.code, 0, "{}", o.all());
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    common::check_plan_json(&v).unwrap();
    v
}

fn action<'a>(plan: &'a Value, name: &str) -> Option<&'a Value> {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_disables_a_key_unused_past_the_window_but_not_a_protected_one() {
    let r = Repo::new(KEYS);
    with_unused_after(&r, "120d");
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let secret = |n: &str, who: &str| r.secret(n, "alma-production", who);
    let (idle, busy, guarded) = (
        secret("idle", "jdoe"),
        secret("busy", "asmith"),
        secret("guarded", "jdoe"),
    );
    let sdir = tempfile::tempdir().unwrap();
    let tokens = sdir.path().join("tokens.yaml");
    let db = r.root().join(".keyward/prod.db");
    // Day 1: all three are used (counting begins); day 125: only `busy`.
    let day1 = [
        (idle.as_str(), 2),
        (busy.as_str(), 1),
        (guarded.as_str(), 1),
    ];
    serve_common::verify_calls(&db, &tokens, &at(1), &day1).await;
    serve_common::verify_calls(&db, &tokens, &at(125), &[(busy.as_str(), 3)]).await;

    // Day 132: `idle` and `guarded` went 131 days unused; only `idle` is proposed.
    let now = at(132);
    let plan = plan_json(&r, &now);
    let names: Vec<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["idle"], "{plan:#}");
    let a = action(&plan, "idle").unwrap();
    assert_eq!(a["action"], "disable");
    assert_eq!(a["reasons"][0], "due: unused for 131 days", "{a:#}");
    assert_eq!(a["last_used"]["visible"], true);
    let last = a["last_used"]["at"].as_str().unwrap();
    let day = |d: i64| {
        (chrono::Utc::now() + chrono::Duration::days(d))
            .format("%Y-%m-%d")
            .to_string()
    };
    assert!(last.starts_with(&day(1)), "{last}");
    assert!(
        plan["notes"].as_array().unwrap().is_empty(),
        "{:#}",
        plan["notes"]
    );

    // The text and Markdown plans say the same, with the last use beside the disable.
    let text = r.run_with(&["plan"], &[("KEYWARD_NOW", &now)], None).stdout;
    let md = ["plan", "--format", "markdown"];
    let md = r.run_with(&md, &[("KEYWARD_NOW", &now)], None).stdout;
    for (out, needle) in [
        (
            &text,
            "alma-production/idle will be disabled (due: unused for 131 days)",
        ),
        (&text, &format!("#   last used {} ", day(1))),
        (&text, "(131 days ago)"),
        (&md, "due: unused for 131 days"),
        (&md, &format!("last used {}", day(1))),
    ] {
        assert!(out.contains(needle), "{needle} in:\n{out}");
    }

    // Applied, the key no longer verifies; the next plan keeps it disabled and says why.
    let o = r.run_with(&["apply", "--auto-approve"], &[("KEYWARD_NOW", &now)], None);
    assert_eq!(o.code, 0, "{}", o.all());
    let v = r.verify(&idle, "alma-production");
    assert_eq!(v["reason"], "disabled", "{v}");
    let plan = plan_json(&r, &at(133));
    assert!(plan["actions"].as_array().unwrap().is_empty(), "{plan:#}");
    let note = plan["notes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "idle");
    let msg = note
        .map(|n| n["message"].as_str().unwrap())
        .unwrap_or_default();
    assert!(
        msg.starts_with("disabled and unused for 132 days: kept disabled"),
        "{plan:#}"
    );

    // `unused_after: never` on the key brings it back.
    let keys = KEYS.replace(
        "  - name: idle\n    store: alma-production\n",
        "  - name: idle\n    store: alma-production\n    unused_after: never\n",
    );
    r.write_keys(&keys);
    let plan = plan_json(&r, &at(133));
    let a = action(&plan, "idle").expect("enabled again");
    assert_eq!(a["action"], "update", "{a:#}");
    assert_eq!(a["reasons"][0], "state: active (enable)", "{a:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_shows_the_last_use_and_a_mass_disable_is_refused_by_the_guards() {
    let mut keys = String::from("keys:\n");
    for i in 0..7 {
        keys.push_str(&format!(
            "  - name: app-{i}\n    store: alma-production\n    owner: jdoe\n    scopes: [bibs:read]\n"
        ));
    }
    let r = Repo::new(&keys);
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let used = r.secret("app-0", "alma-production", "jdoe");
    let sdir = tempfile::tempdir().unwrap();
    let tokens = sdir.path().join("tokens.yaml");
    let db = r.root().join(".keyward/prod.db");
    serve_common::verify_calls(&db, &tokens, &at(2), &[(used.as_str(), 4)]).await;

    // A key removed from the spec: the revoke says when it was last used.
    let fewer: String = keys
        .lines()
        .skip(1)
        .collect::<Vec<_>>()
        .chunks(4)
        .skip(1)
        .flatten()
        .map(|l| format!("{l}\n"))
        .collect();
    r.write_keys(&format!("keys:\n{fewer}"));
    let plan = plan_json(&r, &at(5));
    let a = action(&plan, "app-0").unwrap();
    assert_eq!(a["action"], "revoke");
    assert!(
        a["last_used"]["at"].as_str().is_some(),
        "the last use rides along: {a:#}"
    );
    let o = r.run_with(&["plan"], &[("KEYWARD_NOW", &at(5))], None);
    assert!(o.stdout.contains("(3 days ago)"), "{}", o.stdout);
    r.write_keys(&keys);

    // Day 200 with `unused_after: 90d`: app-1..6 went unused (six disables in a production
    // store, over max_revokes = 5 there); app-0 too (used on day 2).
    with_unused_after(&r, "90d");
    let now = at(200);
    let plan = plan_json(&r, &now);
    let disables = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "disable")
        .count();
    assert_eq!(disables, 7, "{plan:#}");
    let o = r.run_with(&["apply", "--auto-approve"], &[("KEYWARD_NOW", &now)], None);
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(
        o.all().contains(
            "the plan would revoke, disable or delete 7 key(s), more than max_revokes = 5"
        ),
        "{}",
        o.all()
    );
    let v = r.verify(&used, "alma-production");
    assert_eq!(v["valid"], true, "nothing was disabled: {v}");
}
