//! Fault injection in the service: `keyward serve` (SQLite, and PostgreSQL when
//! `KEYWARD_TEST_POSTGRES_URL` is set) is killed with SIGKILL while `keyward apply` works
//! through an `http` store on it (creating, rotating, replacing and revoking keys), then
//! restarted on the same database and address; the apply is re-run and the invariants of
//! `common::Repo::check_invariants` hold, read through the service (`/v1/keys`, and every
//! delivered secret verified through `/v1/verify`). Real binary, real databases, real age.

mod common;
mod needs;
mod serve_common;
mod store_common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Repo;
use keyward::store::{KeyStatus, Store};
use serve_common::{Server, make_token};

/// Keys per round (one `http` store).
const KEYS: usize = 48;
const TOKEN_ENV: &str = "KEYWARD_PROOF_TOKEN";
const STORE: &str = "alma-production";

/// A spec of `n` keys on the http store; `generation` rotates, `drop_every` revokes
/// (removed from the spec), `owner_flip` moves every 5th key to rkumar (a replacement).
fn spec(n: usize, generation: u32, drop_every: usize, owner_flip: bool) -> String {
    let mut s = String::from("keys:\n");
    for i in 0..n {
        if drop_every > 0 && i.is_multiple_of(drop_every) {
            continue;
        }
        s.push_str(&format!(
            "  - name: k{i:04}\n    store: {STORE}\n    owner: {}\n    scopes: [bibs:read]\n    rotation: {{ generation: {generation} }}\n",
            owner(i, owner_flip)
        ));
    }
    s
}

fn owner(i: usize, flip: bool) -> &'static str {
    match (i % 3, flip && i.is_multiple_of(5)) {
        (_, true) => "rkumar",
        (0, _) => "jdoe",
        (1, _) => "asmith",
        _ => "rkumar",
    }
}

/// Keys each name must have once every round up to `round` is applied: a replaced key
/// is kept revoked beside its replacement, nothing else is ever created twice.
fn expected_counts(round: usize) -> Vec<(&'static str, String, usize)> {
    (0..KEYS)
        .map(|i| {
            let replaced = round >= 2 && !i.is_multiple_of(7) && owner(i, true) != owner(i, false);
            (STORE, format!("k{i:04}"), if replaced { 2 } else { 1 })
        })
        .collect()
}

/// New deliveries the apply of `round` writes: every key in rounds 0, 1 and 3 (create,
/// rotate, rotate), the replacements in round 2 (revocations write none).
fn new_deliveries(round: usize) -> usize {
    match round {
        2 => expected_counts(2)
            .iter()
            .filter(|(_, _, n)| *n == 2)
            .count(),
        3 => KEYS - KEYS.div_ceil(7),
        _ => KEYS,
    }
}

fn manifests(root: &Path) -> usize {
    walkdir::WalkDir::new(root.join("deliveries"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name() == "manifest.json")
        .count()
}

fn http_store(url: &str, token: &str) -> Vec<(String, Arc<dyn Store>)> {
    let s = keyward::store::http::HttpStore::new(
        STORE,
        url,
        Some(secrecy::SecretString::from(token.to_owned())),
        TOKEN_ENV,
    )
    .expect("http store")
    .with_backoff(Duration::from_millis(20));
    vec![(STORE.to_string(), Arc::new(s))]
}

fn spawn_apply(r: &Repo, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("apply log");
    let err = out.try_clone().expect("dup");
    let mut c = Command::new(serve_common::bin());
    c.arg("-C")
        .arg(r.root())
        .args(["apply", "--auto-approve", "--force", "--concurrency", "4"])
        .env_remove("KEYWARD_FAILPOINT")
        .env("HOME", r.root().join("home"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (k, v) in &r.env {
        c.env(k, v);
    }
    c.spawn().expect("spawn keyward apply")
}

/// Wait for `child` at most `limit`; kill it (and fail) if it hangs.
fn wait_bounded(child: &mut Child, limit: Duration, context: &str) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{context}: apply still running after {limit:?} (hung on the dead server?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The whole scenario on `database`: four rounds (create all; rotate all; replace every
/// 5th and revoke every 7th; rotate again), the server SIGKILLed up to twice per round
/// once the outbox shows the apply has made progress.
fn kill_the_server_mid_apply(database: &str, srv_dir: &Path, label: &str) {
    use rand::Rng;
    let token = make_token(&srv_dir.join("tokens.yaml"), "apply", "write");
    let env = [("KEYWARD_LOG", "info")];
    let mut server = Server::start_with_database(srv_dir, database, &env);
    let url = server.url.clone();
    let listen = url.trim_start_matches("http://").to_string();

    let mut r = Repo::new("keys: []\n");
    std::fs::write(
        r.root().join("keyward.yaml"),
        format!(
            "version: 1\nstores:\n  {STORE}: {{ kind: http, url: \"{url}\", token_env: {TOKEN_ENV}, environment: production }}\npolicy:\n  default_lifetime: 365d\n  max_keys_per_owner: 1000\n"
        ),
    )
    .expect("keyward.yaml");
    r.env.push((TOKEN_ENV.into(), token.clone()));
    let logs = tempfile::tempdir().expect("tempdir");
    let stores = http_store(&url, &token);

    let mut rng = rand::thread_rng();
    let rounds = [
        spec(KEYS, 1, 0, false),
        spec(KEYS, 2, 0, false),
        spec(KEYS, 2, 7, true),
        spec(KEYS, 3, 7, true),
    ];
    let mut killed_midway = 0;
    for (round, keys) in rounds.iter().enumerate() {
        r.write_keys(keys);
        for attempt in 0..2 {
            let context = format!("{label} round {round} kill {attempt}");
            let before = manifests(r.root());
            // Kill once the apply has written some of its new deliveries, at most half (each
            // is written just before its key is registered: requests are in flight then).
            let progress = rng.gen_range(1..=(new_deliveries(round) / 2).max(1));
            let log = logs.path().join(format!("apply-{round}-{attempt}.log"));
            let mut apply = spawn_apply(&r, &log);
            let start = Instant::now();
            let mut finished = false;
            while manifests(r.root()) < before + progress {
                if apply.try_wait().expect("wait").is_some() {
                    finished = true;
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "{context}: no progress"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            if finished {
                break;
            }
            let at_kill = manifests(r.root()) - before;
            let log_before = server.stop(); // SIGKILL
            assert!(
                !log_before.contains("panicked"),
                "{context}: server log: {log_before}"
            );
            killed_midway += 1;
            // Down for a moment (the apply sees refused connections and retries), then
            // back on the same address and database.
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..600)));
            server = Server::start_on(srv_dir, database, &listen, &env);
            let code = wait_bounded(&mut apply, Duration::from_secs(120), &context);
            eprintln!(
                "{context}: killed at {at_kill} of {} new deliveries; the interrupted apply \
                 exited {code:?}",
                new_deliveries(round)
            );
            // What the kill left is safe before any re-run: every live key's current
            // generation has a delivery on disk (pending or active).
            for (_, k) in common::live_keys_in(&stores) {
                if k.managed_by.as_deref() == Some("keyward") && k.status != KeyStatus::Revoked {
                    // (A key being replaced may have had its delivery superseded by its
                    // replacement's, which is written first.)
                    let dir = r
                        .root()
                        .join(format!("deliveries/{STORE}/{}/g{}", k.name, k.generation));
                    let text =
                        std::fs::read_to_string(dir.join("manifest.json")).unwrap_or_default();
                    assert!(
                        text.contains(&k.id)
                            || dir.join(format!("superseded-{}.json", k.id)).exists(),
                        "{context}: {} ({}) is live without a delivery",
                        k.name,
                        k.id
                    );
                }
            }
        }
        let context = format!("{label} round {round}");
        let o = r.run(&["apply", "--auto-approve", "--force"]);
        assert_eq!(o.code, 0, "{context}: re-run failed: {}", o.all());
        r.assert_plan_empty(&context);
        let counts = expected_counts(round);
        let counts: Vec<(&str, &str, usize)> = counts
            .iter()
            .map(|(s, n, c)| (*s, n.as_str(), *c))
            .collect();
        let secrets = r.check_invariants_in(&context, &counts, &stores);
        let live = KEYS - if round >= 2 { KEYS.div_ceil(7) } else { 0 };
        assert!(
            secrets.len() >= live,
            "{context}: {} secrets verified for {live} live keys",
            secrets.len()
        );
    }
    let log = server.stop();
    assert!(!log.contains("panicked"), "{label}: server log: {log}");
    assert!(
        killed_midway >= 3,
        "{label}: only {killed_midway} kills landed mid-apply; the test proved little"
    );
}

#[test]
fn serve_on_sqlite_killed_mid_apply_converges_after_restart() {
    let srv = tempfile::tempdir().expect("tempdir");
    kill_the_server_mid_apply("sqlite:serve.db", srv.path(), "sqlite");
}

#[test]
fn serve_on_postgres_killed_mid_apply_converges_after_restart() {
    let Some(url) = store_common::pg_url() else {
        return;
    };
    let schema = store_common::PgSchema::new(&url);
    let srv = tempfile::tempdir().expect("tempdir");
    kill_the_server_mid_apply(&schema.database_url(), srv.path(), "postgres");
}
