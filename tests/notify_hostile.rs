//! Webhook targets a spec could aim where it must not (issue 15, item 13), with real
//! listeners on loopback that record whether anything connected: the URL is parsed once, by
//! the client's own parser (`http://0.0.0.0:PORT\@localhost/hook` is host 0.0.0.0, not
//! localhost), non-public IP literals and user info are validate errors (KW130), and a host
//! name that resolves to a non-public address is refused at send time, before connecting,
//! unless `allow_private: true`.

mod common;
use common::Repo;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEYS: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
";

/// A receiver on 127.0.0.1 that counts connections and keeps each request's header lines.
struct Listener {
    port: u16,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Listener {
    fn start() -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (c, h) = (connections.clone(), heads.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                s.set_read_timeout(Some(Duration::from_secs(3))).ok();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut head = Vec::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    head.push(line.trim_end().to_string());
                }
                let mut body = vec![0u8; len];
                let _ = std::io::Read::read_exact(&mut r, &mut body);
                h.lock().unwrap().push(head);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Listener {
            port,
            connections,
            heads,
        }
    }
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn with_webhook(r: &Repo, webhook: &str) {
    let path = r.root().join("keyward.yaml");
    let mut cfg = std::fs::read_to_string(&path).unwrap();
    if let Some(i) = cfg.find("notify:") {
        cfg.truncate(i);
    }
    cfg.push_str(&format!(
        "notify:\n  webhook:\n{webhook}    secret_env: KW_HOOK_SECRET\n"
    ));
    std::fs::write(&path, cfg).unwrap();
}

const ENV: &[(&str, &str)] = &[("KW_HOOK_SECRET", "hook-secret-for-tests")];

#[test]
fn a_url_the_check_and_the_client_would_read_differently_is_refused_and_nothing_is_sent() {
    let hook = Listener::start();
    let r = Repo::new(KEYS);
    // The old check took the host after the last `@` (localhost: plain http allowed); the
    // client's parser ends the authority at the backslash and connects to 0.0.0.0, which
    // Linux routes to this machine.
    with_webhook(
        &r,
        &format!("    url: http://0.0.0.0:{}\\@localhost/hook\n", hook.port),
    );
    let o = r.run_with(&["validate"], ENV, None);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.all().contains("KW130"), "{}", o.all());
    assert!(o.all().contains("0.0.0.0"), "{}", o.all());
    assert!(o.all().contains("allow_private"), "{}", o.all());
    let o = r.run_with(&["apply", "--auto-approve"], ENV, None);
    assert_eq!(o.code, 1, "{}", o.all());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hook.connections(), 0, "the webhook listener was reached");

    // The same check for the other ways a spec could reach inside the network; user info is
    // refused and its password never echoed.
    for (url, shown) in [
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://10.0.0.7/hook", "private"),
        ("https://[::1]:9/hook", "loopback"),
        ("https://[::ffff:192.168.0.1]/hook", "private"),
        ("https://kw:hunter2@hooks.example.edu/hook", "user info"),
    ] {
        with_webhook(&r, &format!("    url: \"{url}\"\n"));
        let o = r.run_with(&["validate"], ENV, None);
        assert_eq!(o.code, 1, "{url}: {}", o.all());
        let all = o.all();
        assert!(all.contains("KW130") && all.contains(shown), "{url}: {all}");
        // The password appears only in the echoed source line, which is the spec itself.
        let outside_source = all
            .lines()
            .filter(|l| !l.contains("url:"))
            .collect::<Vec<_>>();
        assert!(!outside_source.join("\n").contains("hunter2"), "{all}");
    }
    // Allowed on purpose: the IP literals pass validate.
    with_webhook(
        &r,
        "    url: https://10.0.0.7/hook\n    allow_private: true\n",
    );
    let o = r.run_with(&["validate"], ENV, None);
    assert_eq!(o.code, 0, "{}", o.all());
}

#[test]
fn a_host_name_resolving_to_loopback_is_refused_before_connecting_unless_allowed() {
    let hook = Listener::start();
    let r = Repo::new(KEYS);
    with_webhook(
        &r,
        &format!("    url: http://localhost:{}/hook\n", hook.port),
    );
    let o = r.run_with(&["apply", "--auto-approve"], ENV, None);
    assert_eq!(
        o.code,
        0,
        "a refused notification never fails an apply: {}",
        o.all()
    );
    assert!(o.stderr.contains("not sent"), "{}", o.stderr);
    assert!(o.stderr.contains("resolves to"), "{}", o.stderr);
    assert!(o.stderr.contains("a loopback address"), "{}", o.stderr);
    assert!(o.stderr.contains("allow_private"), "{}", o.stderr);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hook.connections(), 0, "keyward connected before refusing");

    // Allowed: the pending notice goes out on the next run, signed the Standard Webhooks way.
    with_webhook(
        &r,
        &format!(
            "    url: http://localhost:{}/hook\n    allow_private: true\n",
            hook.port
        ),
    );
    let o = r.run_with(&["apply", "--auto-approve"], ENV, None);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(o.stderr.contains("notified"), "{}", o.stderr);
    let heads = hook.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let has = |name: &str| {
        heads[0]
            .iter()
            .any(|l| l.to_ascii_lowercase().starts_with(name))
    };
    assert!(
        has("webhook-id:") && has("webhook-timestamp:") && has("webhook-signature: v1,"),
        "{heads:?}"
    );
}
