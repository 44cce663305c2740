//! Usage counted at verify by a real `keyward serve` on loopback: a burst of known size gives
//! exact counts per key and reason after the flush (SQLite), a process killed mid-burst loses
//! at most its last unflushed interval while a graceful stop loses nothing, and two servers on
//! one real PostgreSQL schema add up. Read back through `GET /v1/usage`.

mod needs;
mod serve_common;
mod store_common;

use std::collections::BTreeMap;
use std::time::Duration;

use serve_common::{Api, Server, json_of, make_token, new_key, status_of};
use store_common::{PgSchema, pg_url};

struct Tokens {
    write: String,
    verify: String,
    read: String,
}

fn tokens(dir: &std::path::Path) -> Tokens {
    let path = dir.join("tokens.yaml");
    Tokens {
        write: make_token(&path, "ci-apply", "write"),
        verify: make_token(&path, "app", "verify"),
        read: make_token(&path, "reader", "read"),
    }
}

fn start(dir: &std::path::Path, database: &str, flush: &str) -> Server {
    Server::start_with(
        dir,
        database,
        "127.0.0.1:0",
        &["--usage-flush", flush],
        None,
        &[],
    )
}

/// Create a key through `api`; returns (id, secret).
async fn create(api: &Api, t: &Tokens, name: &str, quota: Option<u64>) -> (String, String) {
    let (body, secret) = new_key(name, "production", quota);
    let st = status_of(api.post("/v1/keys", &t.write).json(&body)).await;
    assert_eq!(st, 201, "create {name}");
    (body["id"].as_str().unwrap().to_owned(), secret)
}

/// `n` verifies of `key` spread over `bases`, 16 at a time; returns the reasons answered.
async fn burst(bases: &[&str], token: &str, key: &str, n: usize) -> BTreeMap<String, u64> {
    let mut answered = BTreeMap::new();
    for r in serve_common::burst(bases, token, &[key], n).await {
        *answered.entry(r).or_default() += 1;
    }
    answered
}

/// The usage the server reports from today on, as (key id, reason) -> calls.
async fn usage(api: &Api, read: &str) -> BTreeMap<(String, String), u64> {
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let v = json_of(api.get(&format!("/v1/usage?since={today}"), read)).await;
    assert_eq!(v["kept"], true, "{v}");
    let mut out = BTreeMap::new();
    for r in v["items"].as_array().unwrap() {
        let k = (
            r["key_id"].as_str().unwrap().to_owned(),
            r["reason"].as_str().unwrap().to_owned(),
        );
        *out.entry(k).or_default() += r["calls"].as_u64().unwrap();
    }
    out
}

fn calls(u: &BTreeMap<(String, String), u64>, id: &str, reason: &str) -> u64 {
    u.get(&(id.to_owned(), reason.to_owned()))
        .copied()
        .unwrap_or(0)
}

/// Wait until `f` holds on the usage (flushes are periodic), at most `secs` seconds.
async fn until<F: Fn(&BTreeMap<(String, String), u64>) -> bool>(
    api: &Api,
    read: &str,
    secs: u64,
    f: F,
) -> BTreeMap<(String, String), u64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let u = usage(api, read).await;
        if f(&u) || std::time::Instant::now() > deadline {
            return u;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sigterm(server: &mut Server) {
    let st = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let _ = server.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_counted_exactly_per_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let t = tokens(dir.path());
    let server = start(dir.path(), "sqlite:serve.db", "300ms");
    let api = Api::new(&server);
    let (busy, busy_secret) = create(&api, &t, "busy", None).await;
    let (small, small_secret) = create(&api, &t, "small", Some(5)).await;
    let (_idle, _) = create(&api, &t, "idle", None).await;

    let base = [server.url.as_str()];
    let got = burst(&base, &t.verify, &busy_secret, 500).await;
    assert_eq!(got.get("ok"), Some(&500));
    let got = burst(&base, &t.verify, &small_secret, 12).await;
    assert_eq!((got["ok"], got["quota_exceeded"]), (5, 7), "{got:?}");
    burst(&base, &t.verify, "not a key", 9).await;
    // Well-formed but unknown: counted without its invented id.
    let stranger = keyward::secret::generate("production", &keyward::secret::new_key_id());
    burst(&base, &t.verify, stranger.expose(), 4).await;

    let u = until(&api, &t.read, 10, |u| {
        calls(u, &busy, "ok") == 500 && calls(u, "", "unknown") == 4
    })
    .await;
    assert_eq!(calls(&u, &busy, "ok"), 500, "{u:?}");
    assert_eq!(calls(&u, &small, "ok"), 5, "{u:?}");
    assert_eq!(calls(&u, &small, "quota_exceeded"), 7, "{u:?}");
    assert_eq!(calls(&u, "", "malformed"), 9, "{u:?}");
    assert_eq!(calls(&u, "", "unknown"), 4, "{u:?}");
    assert_eq!(
        u.values().sum::<u64>(),
        500 + 12 + 9 + 4,
        "nothing else was counted: {u:?}"
    );
    // The invented id is nowhere.
    let stranger_id = keyward::secret::parse(stranger.expose()).unwrap().id;
    assert!(u.keys().all(|(k, _)| k != &stranger_id));
    // Reading usage needs a read token; a verify token cannot.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let st = status_of(api.get(&format!("/v1/usage?since={today}"), &t.verify)).await;
    assert_eq!(st, 403);
    let st = status_of(api.get("/v1/usage?since=yesterday", &t.read)).await;
    assert_eq!(st, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_loses_at_most_the_last_interval_and_a_stop_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = tokens(dir.path());
    let server = start(dir.path(), "sqlite:serve.db", "500ms");
    let api = Api::new(&server);
    let (id, secret) = create(&api, &t, "busy", None).await;
    let base = [server.url.as_str()];
    burst(&base, &t.verify, &secret, 200).await;
    // Past two intervals: the first 200 are written.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    burst(&base, &t.verify, &secret, 100).await;
    let log = server.stop(); // SIGKILL: no flush on the way out
    let server = start(dir.path(), "sqlite:serve.db", "500ms");
    let api = Api::new(&server);
    let u = usage(&api, &t.read).await;
    let kept = calls(&u, &id, "ok");
    assert!(
        (200..=300).contains(&kept),
        "a kill keeps every flushed interval and loses at most the last: {kept}\n{log}"
    );

    // A graceful stop writes what it holds.
    let before = kept;
    let base = [server.url.as_str()];
    burst(&base, &t.verify, &secret, 77).await;
    let mut server = server;
    sigterm(&mut server);
    let log = server.log();
    assert!(log.contains("usage written on stop"), "{log}");
    let server = start(dir.path(), "sqlite:serve.db", "500ms");
    let api = Api::new(&server);
    let u = usage(&api, &t.read).await;
    assert_eq!(calls(&u, &id, "ok"), before + 77, "{u:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_add_up() {
    let Some(url) = pg_url() else {
        return;
    };
    let schema = PgSchema::new(&url);
    let dir = tempfile::tempdir().unwrap();
    let t = tokens(dir.path());
    let database = schema.database_url();
    let a = start(dir.path(), &database, "200ms");
    let b = start(dir.path(), &database, "200ms");
    let api = Api::new(&a);
    let (id, secret) = create(&api, &t, "shared", None).await;
    let (q, q_secret) = create(&api, &t, "quota", Some(30)).await;
    let bases = [a.url.as_str(), b.url.as_str()];
    // Two rounds so both servers flush onto rows the other already wrote.
    for _ in 0..2 {
        burst(&bases, &t.verify, &secret, 301).await;
        tokio::time::sleep(Duration::from_millis(450)).await;
    }
    let got = burst(&bases, &t.verify, &q_secret, 40).await;
    assert_eq!(got["ok"], 30, "{got:?}");
    let u = until(&Api::new(&b), &t.read, 10, |u| {
        calls(u, &id, "ok") == 602 && calls(u, &q, "quota_exceeded") == 10
    })
    .await;
    assert_eq!(calls(&u, &id, "ok"), 602, "{u:?}");
    assert_eq!(calls(&u, &q, "ok"), 30, "{u:?}");
    assert_eq!(calls(&u, &q, "quota_exceeded"), 10, "{u:?}");
}
