//! `keyward keys` (LAST USED, `--unused-for`) and `keyward usage` on the calls a real
//! `keyward serve` counted on the same SQLite file as the repository's store, with a fixed
//! clock (`KEYWARD_NOW`) for the server's verifies and for the commands.

mod common;
mod serve_common;
use common::Repo;
use serde_json::Value;

const KEYS: &str = "\
keys:
  - name: busy
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
    recipients: [jdoe]
  - name: quiet
    store: alma-production
    owner: asmith
    scopes: [bibs:read]
    recipients: [asmith]
  - name: never
    store: alma-production
    owner: asmith
    scopes: [bibs:read]
    recipients: [asmith]
";

fn at(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339()
}

/// Serve the repository's production file with the clock at `now`, verify `secret` `n`
/// times, and stop gracefully (the usage is written on stop).
async fn calls(r: &Repo, token_file: &std::path::Path, now: &str, secret: &str, n: usize) {
    let db = r.root().join(".keyward/prod.db");
    serve_common::verify_calls(&db, token_file, now, &[(secret, n)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_show_last_use_and_unused_keys_and_usage_shows_top_users() {
    let r = Repo::new(KEYS);
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let busy = r.secret("busy", "alma-production", "jdoe");
    let quiet = r.secret("quiet", "alma-production", "asmith");
    let sdir = tempfile::tempdir().unwrap();
    let tokens = sdir.path().join("tokens.yaml");
    // Day +1: `quiet` is used twice (counting begins); day +15: `busy` five times.
    calls(&r, &tokens, &at(1), &quiet, 2).await;
    calls(&r, &tokens, &at(15), &busy, 5).await;

    let now = at(20);
    let o = r.run_with(&["keys"], &[("KEYWARD_NOW", &now)], None);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(o.stdout.contains("LAST USED"), "{}", o.stdout);
    let line = |name: &str| {
        o.stdout
            .lines()
            .find(|l| l.contains(&format!(" {name} ")))
            .unwrap_or_else(|| panic!("{name} in {}", o.stdout))
            .to_owned()
    };
    let day = |d: i64| {
        (chrono::Utc::now() + chrono::Duration::days(d))
            .format("%Y-%m-%d")
            .to_string()
    };
    assert!(line("busy").contains(&day(15)), "{}", o.stdout);
    assert!(line("quiet").contains(&day(1)), "{}", o.stdout);
    assert!(line("never").contains("never"), "{}", o.stdout);

    // Unused for a week at day +20: `quiet` (19 days) and `never` (counted since day +1).
    let o = r.run_with(
        &["keys", "--unused-for", "7d", "--format", "json"],
        &[("KEYWARD_NOW", &now)],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    let mut names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["never", "quiet"], "{}", o.stdout);
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|k| k["usage_visible"] == true)
    );

    // The usage report: busy first, per owner summed.
    let o = r.run_with(
        &["usage", "--since", "30d", "--format", "json"],
        &[("KEYWARD_NOW", &now)],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["groups"][0]["key"], "busy", "{v}");
    assert_eq!(v["groups"][0]["valid"], 5, "{v}");
    assert_eq!(v["groups"][1]["key"], "quiet", "{v}");
    assert_eq!(v["groups"][1]["valid"], 2, "{v}");
    assert_eq!(v["days"].as_array().unwrap().len(), 2, "{v}");
    let o = r.run_with(&["usage", "--by", "owner"], &[("KEYWARD_NOW", &now)], None);
    assert_eq!(o.code, 0, "{}", o.all());
    let first = o.stdout.lines().nth(2).unwrap_or_default();
    assert!(
        first.contains("jdoe") && first.contains('5'),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("Calls per day"), "{}", o.stdout);
}
