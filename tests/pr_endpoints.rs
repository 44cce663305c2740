//! A pull request must not choose where CI's store token goes (issue 15, item 12): in real
//! git repositories with a real `keyward serve` as the base's store and a listener the test
//! owns as the address a pull request points the store at. With `--base`, the stores are
//! opened with the base's connection settings, the plan flags the change, and the listener
//! hears nothing; `token_env` outside `KEYWARD_*` and plain http off loopback are refused.

mod common;
mod serve_common;
use common::Repo;
use serve_common::*;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const KEYS: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
";

const PR_KEYS: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
  - name: exfil
    store: alma-elsewhere
    owner: jdoe
    scopes: [bibs:read]
";

/// A TCP listener on loopback that counts connections (and closes each at once).
struct Listener {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Listener {
    fn start() -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let c = connections.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                if s.is_ok() {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Listener { port, connections }
    }
    fn connections(&self) -> usize {
        // Give a connection attempt in flight time to land.
        std::thread::sleep(Duration::from_millis(200));
        self.connections.load(Ordering::SeqCst)
    }
}

fn config(production: &str, extra: &str) -> String {
    format!(
        "version: 1\nstores:\n  alma-production: {{ {production}, environment: production }}\n  alma-sandbox: {{ kind: sqlite, path: .keyward/sbx.db, environment: sandbox }}\n{extra}policy:\n  default_lifetime: 365d\n"
    )
}

#[test]
fn a_pull_request_pointing_the_store_elsewhere_is_planned_against_the_base_and_flagged() {
    let sdir = tempfile::tempdir().unwrap();
    let tokens = sdir.path().join("tokens.yaml");
    let read = make_token(&tokens, "planner", "read");
    let server = Server::start(sdir.path(), &[]);
    let evil = Listener::start();

    // The base (main): the production store is the team's keyward serve.
    let r = Repo::new(KEYS);
    let base_store = format!(
        "kind: http, url: \"{}\", token_env: KEYWARD_PROD_TOKEN",
        server.url
    );
    std::fs::write(r.root().join("keyward.yaml"), config(&base_store, "")).unwrap();
    r.git_init();

    // The pull request: the same store pointed at the listener with another variable, and a
    // new store there too.
    r.git(&["checkout", "-q", "-b", "pr"]);
    let evil_url = format!("http://127.0.0.1:{}", evil.port);
    let pr_store = format!("kind: http, url: \"{evil_url}\", token_env: KEYWARD_OTHER_SECRET");
    let new_store = format!(
        "  alma-elsewhere: {{ kind: http, url: \"{evil_url}\", token_env: KEYWARD_PROD_TOKEN, environment: sandbox }}\n"
    );
    std::fs::write(r.root().join("keyward.yaml"), config(&pr_store, &new_store)).unwrap();
    r.write_keys(PR_KEYS);
    r.commit_all("Mallory", "mallory@example.edu", "move the store");

    let env = [
        ("KEYWARD_PROD_TOKEN", read.as_str()),
        ("KEYWARD_OTHER_SECRET", "kwt_not_for_a_pull_request"),
    ];
    for format in ["text", "markdown", "json"] {
        let o = r.run_with(&["plan", "--base", "main", "--format", format], &env, None);
        assert_eq!(o.code, 0, "{format}: {}", o.all());
        assert_eq!(
            evil.connections(),
            0,
            "{format}: the PR's endpoint was contacted"
        );
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
            let changes = &v["base"]["connection_changes"];
            let moved = changes
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["store"] == "alma-production")
                .expect("the moved store is flagged");
            assert_eq!(moved["new_store"], false);
            let url = moved["settings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["field"] == "url")
                .unwrap();
            assert_eq!(url["base"], server.url.as_str());
            assert_eq!(url["change"], evil_url.as_str());
            let added = changes
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["store"] == "alma-elsewhere")
                .expect("the new store is flagged");
            assert_eq!(added["new_store"], true);
        } else {
            // (Markdown escapes backticks and underscores.)
            let all = o.stdout.replace("&#96;", "`").replace("\\_", "_");
            assert!(
                all.contains("connection settings of store `alma-production`"),
                "{format}: {all}"
            );
            assert!(all.contains(&evil_url), "{format}: {all}");
            assert!(all.contains("KEYWARD_OTHER_SECRET"), "{format}: {all}");
            assert!(
                all.contains("`alma-elsewhere` is new in this change and was NOT contacted"),
                "{format}: {all}"
            );
        }
        // The new store's key is planned (as a create), from the spec alone.
        assert!(o.stdout.contains("exfil"), "{format}: {}", o.stdout);
    }

    // Without --base (what a PR plan did before): the PR's settings are used and the
    // listener is contacted. The shipped workflows always pass --base.
    let o = r.run_with(&["plan"], &env, None);
    assert_ne!(o.code, 0, "{}", o.all());
    assert!(evil.connections() > 0, "control: the endpoint is reachable");
    server.stop();
}

#[test]
fn token_env_outside_keyward_and_plain_http_off_loopback_are_refused() {
    let r = Repo::new(KEYS);
    let cases = [
        (
            "kind: http, url: \"https://keyward.example.edu\", token_env: GITHUB_TOKEN",
            "`token_env: GITHUB_TOKEN` does not start with `KEYWARD_`",
        ),
        (
            "kind: http, url: \"http://keyward.example.edu:7450\", token_env: KEYWARD_T",
            "unencrypted",
        ),
        (
            "kind: http, url: \"http://10.0.0.5:7450\", token_env: KEYWARD_T",
            "unencrypted",
        ),
        (
            "kind: http, url: \"https://u:p@keyward.example.edu\", token_env: KEYWARD_T",
            "user info",
        ),
    ];
    for (store, shown) in cases {
        std::fs::write(r.root().join("keyward.yaml"), config(store, "")).unwrap();
        let o = r.run(&["validate"]);
        assert_eq!(o.code, 1, "{store}: {}", o.all());
        let all = o.all();
        assert!(all.contains("KW130"), "{store}: {all}");
        assert!(all.contains(shown), "{store}: {all}");
        assert!(all.contains("keyward.yaml:3:"), "{store}: {all}");
        assert!(all.contains("hint:"), "{store}: {all}");
    }
    // Loopback http and https with a KEYWARD_ variable are fine.
    for store in [
        "kind: http, url: \"http://127.0.0.1:7450\", token_env: KEYWARD_T",
        "kind: http, url: \"http://localhost:7450\", token_env: KEYWARD_T",
        "kind: http, url: \"https://keyward.example.edu\", token_env: KEYWARD_T",
    ] {
        std::fs::write(r.root().join("keyward.yaml"), config(store, "")).unwrap();
        let o = r.run(&["validate"]);
        assert_eq!(o.code, 0, "{store}: {}", o.all());
    }
}
