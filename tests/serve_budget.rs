//! The shared daily budget end to end, with real parts: keyward.yaml `budget:` shown by the
//! plan and written into the store by apply, enforced by a real `keyward serve` on loopback
//! (refusing exactly after N valid calls with `budget_exceeded`, the per-key quota still
//! applying inside it, a label group's budget inside the store's), alerts at each threshold
//! received once by a real HTTP receiver, the usage report naming who spent it, and two
//! servers on the real PostgreSQL sharing one budget through the database.

mod common;
mod needs;
mod notify_support;
mod serve_common;
mod store_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Repo;
use notify_support::{Hook, free_port};
use serde_json::{Value, json};
use serve_common::{Api, Server, json_of, make_token, new_key, status_of};
use store_common::{PgSchema, pg_url};

const KEYS: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
    recipients: [jdoe]
    labels: { team: ill }
  - name: acq-sync
    store: alma-production
    owner: asmith
    scopes: [bibs:read]
    recipients: [asmith]
    quota: 5/day
";

/// The repository's keyward.yaml with `budget` on the production store and a webhook.
fn configure(r: &Repo, budget: &str, hook_port: u16) {
    let cfg = format!(
        "version: 1\nstores:\n  alma-production:\n    kind: sqlite\n    path: .keyward/prod.db\n    environment: production\n{budget}  alma-sandbox: {{ kind: sqlite, path: .keyward/sbx.db, environment: sandbox }}\npolicy:\n  default_lifetime: 365d\nnotify:\n  webhook:\n    url: http://127.0.0.1:{hook_port}/budget\n    allow_private: true\n"
    );
    std::fs::write(r.root().join("keyward.yaml"), cfg).unwrap();
}

/// One verify of `key` at `base`: the reason answered.
async fn verify(base: &str, token: &str, key: &str) -> String {
    serve_common::burst(&[base], token, &[key], 1)
        .await
        .remove(0)
}

/// Wait until the server enforces a budget (it reads the store's at most every 2 s).
async fn until_spent(api: &Api, read: &str, scope: &str, at_least: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = json_of(api.get("/v1/budget", read)).await;
        let spent = v["spent"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["scope"] == scope)
            .map_or(0, |s| s["calls"].as_u64().unwrap());
        if spent >= at_least || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The budget alerts the receiver got, as (scope, percent), waiting for `want` of them.
fn alerts(hook: &Hook, want: usize) -> Vec<(String, u64)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got: Vec<(String, u64)> = hook
            .calls()
            .iter()
            .map(|c| c.json())
            .filter(|v| v["event"] == "budget.threshold")
            .map(|v| {
                (
                    v["scope"].as_str().unwrap().to_owned(),
                    v["percent"].as_u64().unwrap(),
                )
            })
            .collect();
        if got.len() >= want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_refuses_exactly_after_n_valid_calls_and_alerts_at_each_threshold() {
    let hook_port = free_port();
    let hook = Hook::start(hook_port);
    let r = Repo::new(KEYS);
    configure(&r, "", hook_port);
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let ill = r.secret("ill-lookup", "alma-production", "jdoe");
    let acq = r.secret("acq-sync", "alma-production", "asmith");

    // The plan shows the budget as a store setting; apply writes it into the store.
    let budget = "    budget:\n      daily: 300\n      alert_at: [50%, 80%]\n      groups:\n        - { label: team=ill, daily: 200 }\n";
    configure(&r, budget, hook_port);
    let p = r.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(p.code, 2, "{}", p.all());
    assert!(
        p.stdout.contains(
            "~ store alma-production: budget: daily 300, alerts at 50%, 80%; label team=ill: daily 200 (was none)"
        ),
        "{}",
        p.stdout
    );
    let tokens = r.root().join("tokens.yaml");
    let vt = make_token(&tokens, "app", "verify");
    let rt = make_token(&tokens, "reader", "read");
    let tw = make_token(&tokens, "ci", "write");
    let server = Server::start_with(
        r.root(),
        "sqlite:.keyward/prod.db",
        "127.0.0.1:0",
        &["--usage-flush", "300ms"],
        None,
        &[],
    );
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{}", o.all());
    r.assert_plan_empty("after the budget was applied");
    let api = Api::new(&server);
    // The server picks the budget up within its refresh interval.
    let deadline = Instant::now() + Duration::from_secs(10);
    while json_of(api.get("/v1/budget", &rt)).await["budget"].is_null() {
        assert!(
            Instant::now() < deadline,
            "the budget never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // The per-key quota applies inside the budget: 5 valid, then quota_exceeded, and the
    // refused calls spend nothing of the budget.
    let mut acq_reasons = BTreeMap::<String, u64>::new();
    for _ in 0..8 {
        *acq_reasons
            .entry(verify(&server.url, &vt, &acq).await)
            .or_default() += 1;
    }
    assert_eq!(
        acq_reasons,
        BTreeMap::from([("ok".into(), 5), ("quota_exceeded".into(), 3)])
    );
    // The label group's budget: exactly 200 valid calls of the ill key, then refusals.
    for i in 1..=200 {
        assert_eq!(verify(&server.url, &vt, &ill).await, "ok", "call {i}");
    }
    for _ in 0..3 {
        assert_eq!(verify(&server.url, &vt, &ill).await, "budget_exceeded");
    }
    // The acq key (not in the group) still has its quota used up; a fresh key of the store
    // spends the rest of the store's 300: 300 - 5 - 200 = 95 more valid calls, exactly.
    let (body, other) = new_key("other", "production", None);
    assert_eq!(status_of(api.post("/v1/keys", &tw).json(&body)).await, 201);
    for i in 1..=95 {
        assert_eq!(verify(&server.url, &vt, &other).await, "ok", "call {i}");
    }
    assert_eq!(verify(&server.url, &vt, &other).await, "budget_exceeded");
    let v = until_spent(&api, &rt, "store", 300).await;
    let spent: BTreeMap<String, u64> = v["spent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["scope"].as_str().unwrap().to_owned(),
                s["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        spent,
        BTreeMap::from([("label:team=ill".into(), 200), ("store".into(), 300)])
    );

    // One alert per threshold and scope: 50%, 80%, 100% of the store, 100% of the group.
    let mut got = alerts(&hook, 4);
    std::thread::sleep(Duration::from_millis(2500));
    got = alerts(&hook, got.len());
    got.sort();
    assert_eq!(
        got,
        vec![
            ("label:team=ill".into(), 100),
            ("store".into(), 50),
            ("store".into(), 80),
            ("store".into(), 100),
        ],
        "each alert once"
    );
    let spent_alert = hook
        .calls()
        .iter()
        .map(|c| c.json())
        .find(|v| v["scope"] == "store" && v["percent"] == 100)
        .unwrap();
    assert_eq!(spent_alert["store"], "alma-production", "{spent_alert}");
    assert!(
        spent_alert["subject"]
            .as_str()
            .unwrap()
            .contains("the daily budget of 300 calls is spent"),
        "{spent_alert}"
    );

    // The usage report names who spent the budget once the server's usage flush (every
    // 300 ms) has written the last calls: asked again until it has, for at most 15 s (a
    // machine busy with other builds can delay one flush well past its interval).
    let flushed = |out: &str| {
        out.contains("     200  ill-lookup (owner jdoe)")
            && out.contains("      95  other (owner jdoe)")
    };
    let started = std::time::Instant::now();
    let u = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let u = r.run(&["usage", "--by", "key", "--since", "1d"]);
        if flushed(&u.stdout) || started.elapsed() > Duration::from_secs(15) {
            break u;
        }
    };
    assert_eq!(u.code, 0, "{}", u.all());
    assert!(
        u.stdout.contains("Budget of store `alma-production` on ")
            && u.stdout.contains(": 300 of 300 calls spent (100%)"),
        "{}",
        u.stdout
    );
    assert!(
        u.stdout.contains("     200  ill-lookup (owner jdoe)"),
        "{}",
        u.stdout
    );
    assert!(
        u.stdout.contains("      95  other (owner jdoe)"),
        "{}",
        u.stdout
    );
    let j = r.run(&["usage", "--format", "json", "--since", "1d"]);
    let j: Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(j["budgets"][1]["scope"], "label:team=ill", "{j}");
    assert_eq!(j["budgets"][1]["spent"], 200, "{j}");
    drop(server);

    // Removing the budget from keyward.yaml removes it from the store.
    configure(&r, "", hook_port);
    let p = r.run(&["plan"]);
    assert!(
        p.stdout.contains("budget: none (was daily 300"),
        "{}",
        p.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_share_the_budget_exactly() {
    let Some(url) = pg_url() else {
        return;
    };
    let schema = PgSchema::new(&url);
    let hook_port = free_port();
    let hook = Hook::start(hook_port);
    let r = Repo::new("keys: []\n");
    configure(&r, "", hook_port);
    let tokens = r.root().join("tokens.yaml");
    let (tw, vt, rt) = (
        make_token(&tokens, "ci", "write"),
        make_token(&tokens, "app", "verify"),
        make_token(&tokens, "reader", "read"),
    );
    let database = schema.database_url();
    let start = || {
        Server::start_with(
            r.root(),
            &database,
            "127.0.0.1:0",
            &["--usage-flush", "300ms"],
            None,
            &[],
        )
    };
    let (a, b) = (start(), start());
    let api = Api::new(&a);
    let mut secrets = Vec::new();
    for n in ["k1", "k2", "k3"] {
        let (body, secret) = new_key(n, "production", None);
        assert_eq!(status_of(api.post("/v1/keys", &tw).json(&body)).await, 201);
        secrets.push(secret);
    }
    // A budget of 2,000 (blocks of 20 calls per reservation), written over the protocol.
    let st = status_of(
        Api::new(&b)
            .request(reqwest::Method::PUT, "/v1/budget", &tw)
            .json(&json!({ "budget": { "daily": 2000 } })),
    )
    .await;
    assert_eq!(st, 204);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let keys: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let got = serve_common::burst(&[&a.url, &b.url], &vt, &keys, 2600).await;
    let ok = got.iter().filter(|r| *r == "ok").count();
    let refused = got.iter().filter(|r| *r == "budget_exceeded").count();
    assert_eq!(
        (ok, refused),
        (2000, 600),
        "the two servers together, exactly"
    );
    // Never early by more than one block of the other instance (20 calls), give or take
    // the 16 calls in flight at once.
    let first = got.iter().position(|r| r != "ok").unwrap();
    assert!(
        first >= 2000 - 20 - 16,
        "first refusal at call {}",
        first + 1
    );
    let v = until_spent(&Api::new(&a), &rt, "store", 2000).await;
    assert_eq!(v["spent"][0]["calls"], 2000, "{v}");
    // The 100% alert went out once, from one of the two servers.
    std::thread::sleep(Duration::from_millis(2500));
    let got = alerts(&hook, 1);
    assert_eq!(got, vec![("store".to_owned(), 100)], "exactly once");
    drop((a, b));
}
