//! Usage kept by stores other than the embedded ones, through the real binary: an exec
//! adapter with the `usage` capability (the reference adapter, counting the verifies
//! `keyward verify` sends it under a fixed clock) feeds `keyward keys` LAST USED and
//! `--unused-for`, `keyward usage`, the plan's "last used" beside a revoke, its
//! `unused_after` disables and the nightly `expiring` report; an `http` store shows the
//! last use a real `keyward serve` counted, and "not visible" on a server without
//! `/v1/usage`; console stores say "usage not visible in the console" in `keys`, `usage`,
//! the plan and the nightly report.

mod common;
mod needs;
mod serve_common;

use common::Repo;
use serde_json::Value;
use std::path::Path;

const KEYS: &str = "\
keys:
  - name: busy
    store: gateway
    owner: jdoe
    scopes: [bibs:read]
  - name: idle
    store: gateway
    owner: asmith
    scopes: [bibs:read]
  - name: gone
    store: gateway
    owner: asmith
    scopes: [bibs:read]
";

/// `now` plus `days`, as `KEYWARD_NOW` takes it.
fn at(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339()
}

fn day(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days))
        .format("%Y-%m-%d")
        .to_string()
}

/// The Python interpreter itself (the adapter's environment has no PATH).
fn python() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A repository whose store `gateway` is the reference adapter on a file of its own.
fn exec_repo(policy: &str) -> Repo {
    let r = Repo::new(KEYS);
    let reference = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/adapters/keyward-store-jsonfile")
        .display()
        .to_string();
    let file = r.root().join("gateway.json").display().to_string();
    std::fs::write(
        r.root().join("keyward.yaml"),
        format!(
            "version: 1\nstores:\n  gateway: {{ kind: exec, command: [\"{}\", \"{reference}\", --file, \"{file}\"], environment: production }}\npolicy:\n  default_lifetime: 365d\n{policy}",
            python()
        ),
    )
    .unwrap();
    r
}

fn verify_at(r: &Repo, secret: &str, now: &str, n: usize) {
    for _ in 0..n {
        let o = r.run_with(
            &["verify", "--store", "gateway"],
            &[("KEYWARD_NOW", now)],
            Some(secret),
        );
        assert_eq!(o.code, 0, "{}", o.all());
        assert!(o.stdout.contains("\"valid\": true"), "{}", o.stdout);
    }
}

fn line_of<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(&format!(" {name} ")))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

#[test]
fn an_adapters_usage_shows_in_keys_usage_the_plan_and_the_nightly_report() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let r = exec_repo("");
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let busy = r.secret("busy", "gateway", "jdoe");
    let gone = r.secret("gone", "gateway", "asmith");
    // Day +1: busy twice (the adapter begins counting); day +2: gone once; day +35: busy.
    verify_at(&r, &busy, &at(1), 2);
    verify_at(&r, &gone, &at(2), 1);
    verify_at(&r, &busy, &at(35), 1);
    let now = at(40);
    let env = [("KEYWARD_NOW", now.as_str())];

    let o = r.run_with(&["keys"], &env, None);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        line_of(&o.stdout, "busy").contains(&day(35)),
        "{}",
        o.stdout
    );
    assert!(line_of(&o.stdout, "gone").contains(&day(2)), "{}", o.stdout);
    assert!(line_of(&o.stdout, "idle").contains("never"), "{}", o.stdout);

    // Unused for 30 days at day +40: gone (38 days) and idle (never, counted since day +1).
    let o = r.run_with(
        &["keys", "--unused-for", "30d", "--format", "json"],
        &env,
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
    assert_eq!(names, ["gone", "idle"], "{}", o.stdout);
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|k| k["usage_visible"] == true)
    );

    let o = r.run_with(&["usage", "--since", "60d", "--format", "json"], &env, None);
    assert_eq!(o.code, 0, "{}", o.all());
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["groups"][0]["key"], "busy", "{v}");
    assert_eq!(v["groups"][0]["valid"], 3, "{v}");
    assert_eq!(v["groups"][1]["key"], "gone", "{v}");
    assert_eq!(v["groups"][1]["valid"], 1, "{v}");
    assert_eq!(v["days"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["not_visible"], serde_json::json!([]), "{v}");

    // The plan beside a revoke: gone's last use.
    r.write_keys(&KEYS.replace(
        "  - name: gone\n    store: gateway\n    owner: asmith\n    scopes: [bibs:read]\n",
        "",
    ));
    let o = r.run_with(&["plan"], &env, None);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stdout.contains(&format!("last used {}", day(2))) && o.stdout.contains("(38 days ago)"),
        "{}",
        o.stdout
    );
    r.write_keys(KEYS);

    // unused_after: 30d disables idle and gone, not busy; the nightly report lists them.
    let cfg = r.root().join("keyward.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}  unused_after: 30d\n")).unwrap();
    let o = r.run_with(&["plan", "--format", "json"], &env, None);
    assert_eq!(o.code, 0, "{}", o.all());
    let plan: Value = serde_json::from_str(&o.stdout).unwrap();
    let reason = |name: &str| {
        plan["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .map(|a| a.to_string())
            .unwrap_or_default()
    };
    assert!(reason("idle").contains("due: unused for 39 days"), "{plan}");
    assert!(reason("gone").contains("due: unused for 38 days"), "{plan}");
    assert_eq!(reason("busy"), "", "{plan}");
    let o = r.run_with(&["expiring", "--format", "json"], &env, None);
    assert!(o.code == 0 || o.code == 2, "{}", o.all());
    let report: Value = serde_json::from_str(&o.stdout).unwrap();
    let text = report.to_string();
    assert!(text.contains("\"kind\":\"unused\""), "{report}");
    assert!(text.contains("idle") && text.contains("gone"), "{report}");
    assert!(!text.contains("usage_not_visible\":[\"gateway"), "{report}");
}

/// Point the repository's `served` store at `url`.
fn serve_at(r: &Repo, url: &str) {
    std::fs::write(
        r.root().join("keyward.yaml"),
        format!(
            "version: 1\nstores:\n  served: {{ kind: http, url: \"{url}\", token_env: KEYWARD_SERVED_TOKEN, environment: production }}\npolicy:\n  default_lifetime: 365d\n"
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_store_shows_the_last_use_its_server_counted() {
    let mut r = Repo::new(&KEYS.replace("store: gateway", "store: served"));
    let sdir = tempfile::tempdir().unwrap();
    let tokens = sdir.path().join("tokens.yaml");
    let write = serve_common::make_token(&tokens, "apply", "write");
    let db = sdir.path().join("served.db");
    let database = format!("sqlite:{}", db.display());
    let start = || {
        serve_common::Server::start_with_database(
            sdir.path(),
            &database,
            &[("KEYWARD_LOG", "warn")],
        )
    };
    let srv = start();
    serve_at(&r, &srv.url);
    r.env.push(("KEYWARD_SERVED_TOKEN".into(), write));
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let busy = r.secret("busy", "served", "jdoe");
    srv.stop();
    // Another server on the same file counts 4 verifies of busy at day +3 and writes them
    // on a graceful stop; a third serves the reads.
    serve_common::verify_calls(&db, &tokens, &at(3), &[(&busy, 4)]).await;
    let srv = start();
    serve_at(&r, &srv.url);
    let now = at(10);
    let env = [("KEYWARD_NOW", now.as_str())];
    let o = r.run_with(&["keys"], &env, None);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(line_of(&o.stdout, "busy").contains(&day(3)), "{}", o.stdout);
    assert!(line_of(&o.stdout, "idle").contains("never"), "{}", o.stdout);
    let o = r.run_with(&["usage", "--format", "json"], &env, None);
    assert_eq!(o.code, 0, "{}", o.all());
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["groups"][0]["key"], "busy", "{v}");
    assert_eq!(v["groups"][0]["valid"], 4, "{v}");
    drop(srv);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn console_stores_say_usage_is_not_visible_in_the_console() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/consoles"),
        dir.path(),
    );
    let run = |args: &[&str]| {
        let o = assert_cmd::Command::cargo_bin("keyward")
            .unwrap()
            .arg("-C")
            .arg(dir.path())
            .args(args)
            .env("NO_COLOR", "1")
            .env("HOME", dir.path().join("home"))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        // (`expiring` exits 2 when something is due or pending)
        assert!(
            matches!(o.status.code(), Some(0 | 2)),
            "{args:?}: {out}{err}"
        );
        (out, err)
    };
    let (out, _) = run(&["keys", "--store", "alma-production"]);
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert!(!rows.is_empty(), "{out}");
    for row in rows {
        assert!(row.contains("not visible in the console"), "{out}");
    }
    let (out, _) = run(&["keys", "--format", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    for k in v.as_array().unwrap() {
        assert_eq!(k["usage_visible"], false, "{k}");
        assert_eq!(k["usage_note"], "usage not visible in the console", "{k}");
    }
    let (_, err) = run(&["keys", "--unused-for", "30d"]);
    assert!(
        err.contains("store `openathens`: usage not visible in the console, so its keys are not listed by --unused-for"),
        "{err}"
    );
    let (out, _) = run(&["usage"]);
    assert!(
        out.contains("store `alma-production`: usage not visible in the console"),
        "{out}"
    );
    let (out, _) = run(&["usage", "--format", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["consoles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "alma-production"),
        "{v}"
    );

    // The plan beside a console revoke, and the nightly report under unused_after.
    let alma = dir.path().join("keys/alma.yaml");
    let text = std::fs::read_to_string(&alma).unwrap();
    let revoked = text.replacen(
        "    labels: { ticket: LSIS-1234 }\n",
        "    labels: { ticket: LSIS-1234 }\n    state: revoked\n",
        1,
    );
    assert_ne!(revoked, text);
    std::fs::write(&alma, revoked).unwrap();
    let (out, _) = run(&["plan"]);
    let at = out
        .find("# alma-production/illiad-barcode-lookup will be revoked")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        out[at..]
            .lines()
            .nth(2)
            .unwrap()
            .contains("usage not visible in the console"),
        "{out}"
    );
    let (out, _) = run(&["plan", "--format", "json"]);
    assert!(out.contains("\"console\": true"), "{out}");
    std::fs::write(&alma, text).unwrap();
    let cfg = dir.path().join("keyward.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replacen("policy:\n", "policy:\n  unused_after: 30d\n", 1),
    )
    .unwrap();
    let (out, _) = run(&["expiring"]);
    assert!(
        out.contains(
            "store `alma-production`: usage not visible in the console, so unused_after cannot tell"
        ),
        "{out}"
    );
}

/// A server older than usage: it lists one key and answers 404 to everything else
/// (`/v1/usage` included). Prints its port.
const OLD_SERVER: &str = r#"
import http.server, json, sys
KEY = {"id": "oldkey0000000001", "name": "legacy", "environment": "production",
       "owner": "jdoe", "purpose": None, "scopes": ["bibs:read"], "labels": {},
       "status": "active", "issued_at": "2026-01-01T00:00:00Z",
       "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
       "expires_at": None, "lifetime": None, "version": 1, "generation": 1,
       "spec_generation": 1, "previous_valid_until": None, "recipients": {},
       "quota_per_day": None, "protected": False, "managed_by": "keyward"}
class H(http.server.BaseHTTPRequestHandler):
    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        with open(sys.argv[1], "a") as f:
            f.write(self.path.split("?")[0] + "\n")
        if self.path.startswith("/v1/keys"):
            self.answer(200, {"items": [KEY], "next": None})
        else:
            self.answer(404, {"error": {"code": "not_found", "message": "no such route"}})
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// Kills its process when dropped (a failed assertion leaves no server behind).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_http_store_on_a_server_without_usage_says_not_visible() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let r = Repo::new("keys: []\n");
    let script = r.root().join("old.py");
    std::fs::write(&script, OLD_SERVER).unwrap();
    let asked = r.root().join("asked");
    let mut child = Killed(
        std::process::Command::new(python())
            .arg(&script)
            .arg(&asked)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.0.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    serve_at(&r, &format!("http://127.0.0.1:{}", port.trim()));
    let run = |args: &[&str]| r.run_with(args, &[("KEYWARD_SERVED_TOKEN", "kwt_test")], None);
    let o = run(&["keys"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        line_of(&o.stdout, "legacy").contains("not visible"),
        "{}",
        o.stdout
    );
    let o = run(&["usage"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stdout.contains("store `served`: usage is not visible"),
        "{}",
        o.stdout
    );
    drop(child);
    let paths = std::fs::read_to_string(&asked).unwrap();
    assert!(paths.lines().any(|p| p == "/v1/usage"), "{paths}");
}
