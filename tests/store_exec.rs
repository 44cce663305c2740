//! `kind: exec` stores against real adapter processes (Python scripts written per test):
//! adapters that hang, exit, print garbage or an oversized line get a timeout or a clear
//! error naming the store and the step, and are stopped (their pid is gone); only the
//! variables named in `env` reach the adapter; and through the real binary, a `client`
//! adapter that echoes the secret it was given to stderr has it redacted in keyward's log,
//! while the delivered secret verifies through the adapter.

mod needs;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyward::store::exec::{ExecOptions, ExecStore};
use keyward::store::{ListFilter, PageAt, Store};

/// The start of every test adapter: answer `describe`, then run `BODY` for other requests
/// (`req` is the request, `say(result)` answers it). Writes its pid next to itself.
const HEAD: &str = r#"
import json, os, sys, time
API = "keyward.store/v1"
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "pid"), "w") as f:
    f.write(str(os.getpid()))
with open(os.path.join(here, "starts"), "a") as f:
    f.write("x")
def say(req, result):
    sys.stdout.write(json.dumps({"apiVersion": API, "id": req["id"], "result": result}) + "\n")
    sys.stdout.flush()
CAPS = {"secret": "client_hash", "expiry": "native", "rotation_overlap": "native", "list": True}
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "describe":
        DESCRIBE
        say(req, {"name": "broken", "version": "0", "capabilities": CAPS})
        continue
    BODY
"#;

/// The Python interpreter itself (not a version manager's shim, which would add its own
/// variables to the adapter's environment and take long to start).
fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct Adapter {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Adapter {
    fn new(on_describe: &str, body: &str) -> Adapter {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adapter.py");
        let text = HEAD.replace("DESCRIBE", on_describe).replace("BODY", body);
        std::fs::write(&path, text).unwrap();
        Adapter { dir, path }
    }

    fn options(&self, timeout: Duration) -> ExecOptions {
        ExecOptions {
            command: vec![python(), self.path.display().to_string()],
            env: Vec::new(),
            timeout,
        }
    }

    fn pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.path().join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn starts(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("starts"))
            .unwrap_or_default()
            .len()
    }

    /// The adapter's process is gone (killed and reaped).
    fn stopped(&self) -> bool {
        !Path::new(&format!("/proc/{}", self.pid())).exists()
    }
}

async fn list(s: &ExecStore) -> Result<usize, String> {
    s.list(&ListFilter::default(), PageAt::first(10))
        .await
        .map(|p| p.items.len())
        .map_err(|e| e.to_string())
}

#[test]
fn an_adapter_that_hangs_in_the_handshake_is_stopped_at_the_timeout() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let a = Adapter::new("time.sleep(3600)", "pass");
    let t = Instant::now();
    let err = ExecStore::open("gateway", a.options(Duration::from_millis(1500)))
        .err()
        .expect("a hung handshake fails")
        .to_string();
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert!(err.contains("store `gateway`"), "{err}");
    assert!(err.contains("step describe"), "{err}");
    assert!(err.contains("no answer within"), "{err}");
    assert!(a.stopped(), "the hung adapter is still running");
}

#[tokio::test]
async fn a_hung_request_times_out_names_the_step_and_the_next_request_restarts_it() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let a = Adapter::new("pass", "time.sleep(3600)");
    let s = ExecStore::open("gateway", a.options(Duration::from_secs(3))).expect("handshake");
    let first = a.pid();
    let t = Instant::now();
    let err = list(&s).await.expect_err("a hung list fails");
    assert!(t.elapsed() < Duration::from_secs(8));
    assert!(
        err.contains("store `gateway` (exec adapter `broken`), step list: no answer within 3s"),
        "{err}"
    );
    assert!(
        !Path::new(&format!("/proc/{first}")).exists(),
        "not stopped"
    );
    let err = list(&s).await.expect_err("hangs again");
    assert!(err.contains("step list"), "{err}");
    assert_eq!(a.starts(), 2, "the second request started a new adapter");
}

#[tokio::test]
async fn an_adapter_that_exits_is_reported_with_its_status_and_last_stderr() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let a = Adapter::new(
        "pass",
        "sys.stderr.write('fatal: the gateway refused our token\\n'); sys.stderr.flush(); sys.exit(3)",
    );
    let s = ExecStore::open("gateway", a.options(Duration::from_secs(5))).expect("handshake");
    let err = list(&s).await.expect_err("an exit fails");
    assert!(err.contains("step list"), "{err}");
    assert!(err.contains("exit status: 3"), "{err}");
    assert!(err.contains("the gateway refused our token"), "{err}");
}

#[tokio::test]
async fn garbage_and_oversized_answers_are_refused_without_being_echoed() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let secretish =
        "kw_sbx_aaaaaaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let a = Adapter::new(
        "pass",
        &format!("sys.stdout.write('hello {secretish} this is not json\\n'); sys.stdout.flush()"),
    );
    let s = ExecStore::open("gateway", a.options(Duration::from_secs(5))).expect("handshake");
    let err = list(&s).await.expect_err("garbage fails");
    assert!(err.contains("not a keyward.store/v1 message"), "{err}");
    assert!(!err.contains(secretish) && !err.contains("hello"), "{err}");
    assert!(a.stopped(), "the garbage-printing adapter is still running");

    let big = Adapter::new(
        "pass",
        "sys.stdout.write('x' * (5 << 20)); sys.stdout.flush(); time.sleep(3600)",
    );
    let s = ExecStore::open("gateway", big.options(Duration::from_secs(20))).expect("handshake");
    let err = list(&s).await.expect_err("an oversized line fails");
    assert!(err.contains("longer than"), "{err}");
    assert!(big.stopped());
}

#[test]
fn only_the_variables_the_store_names_reach_the_adapter() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let a = Adapter::new(
        "open(os.path.join(here, 'env'), 'w').write(json.dumps(sorted(os.environ)))",
        "pass",
    );
    let mut opts = a.options(Duration::from_secs(5));
    opts.env = vec![("GATEWAY_TOKEN".into(), "t0ken".into())];
    let _s = ExecStore::open("gateway", opts).expect("handshake");
    let seen: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(a.dir.path().join("env")).unwrap()).unwrap();
    assert!(seen.contains(&"GATEWAY_TOKEN".to_string()), "{seen:?}");
    // Python may add LC_CTYPE itself (PEP 538); nothing of keyward's environment is there.
    for v in &seen {
        assert!(
            v == "GATEWAY_TOKEN" || v == "LC_CTYPE",
            "{v} reached the adapter: {seen:?}"
        );
    }
}

/// A `client` adapter: the reference adapter, told the secret itself, hashing it and
/// (deliberately, as a careless adapter would) echoing it to stderr.
const ECHO: &str = r#"
import hashlib, importlib.machinery, importlib.util, sys
sys.dont_write_bytecode = True  # nothing written next to the reference adapter
loader = importlib.machinery.SourceFileLoader("jsonfile", sys.argv[1])
spec = importlib.util.spec_from_loader("jsonfile", loader)
m = importlib.util.module_from_spec(spec)
loader.exec_module(m)
plain = m.op_describe
def describe(d, r):
    out = plain(d, r)
    out["capabilities"]["secret"] = "client"
    return out
m.READS["describe"] = describe
inner = m.handle
def handle(store, req):
    if "secret" in req:
        sys.stderr.write("debug: got secret %s for %s\n" % (req["secret"], req.get("op")))
        sys.stderr.flush()
        req["secret_hash"] = hashlib.sha256(req.pop("secret").encode()).hexdigest()
    return inner(store, req)
m.handle = handle
sys.argv = [sys.argv[0], "--file", sys.argv[2]]
m.main()
"#;

fn keyward(dir: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("keyward"));
    cmd.arg("-C")
        .arg(dir)
        .args(args)
        .env("KEYWARD_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run keyward");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_secret_an_adapter_echoes_to_stderr_is_redacted_and_the_delivered_secret_verifies() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let id = age::x25519::Identity::generate();
    let me = root.join("me.txt").display().to_string();
    std::fs::write(&me, secrecy::ExposeSecret::expose_secret(&id.to_string())).unwrap();
    let reference = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/adapters/keyward-store-jsonfile")
        .display()
        .to_string();
    let echo = root.join("echo.py").display().to_string();
    std::fs::write(&echo, ECHO).unwrap();
    let file = root.join("held.json").display().to_string();
    let py = python();
    std::fs::write(
        root.join("keyward.yaml"),
        format!(
            "version: 1\nstores:\n  gateway: {{ kind: exec, command: [\"{py}\", \"{echo}\", \"{reference}\", \"{file}\"], environment: sandbox }}\nscopes:\n  areas: [bibs]\n  levels: [read, write]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("people.yaml"),
        format!(
            "people:\n  jdoe: {{ recipients: [\"{}\"] }}\n",
            id.to_public()
        ),
    )
    .unwrap();
    std::fs::create_dir(root.join("keys")).unwrap();
    std::fs::write(
        root.join("keys/gw.yaml"),
        "keys:\n  - { name: gw-lookup, store: gateway, owner: jdoe, purpose: lookups, scopes: [bibs:read], lifetime: 90d }\n",
    )
    .unwrap();
    let applied = keyward(root, &["apply", "--auto-approve", "--allow-dirty"], None);
    let log = String::from_utf8_lossy(&applied.stderr).into_owned();
    assert!(
        applied.status.success(),
        "apply failed: {log}{}",
        String::from_utf8_lossy(&applied.stdout)
    );
    assert!(
        log.contains("debug: got secret <redacted> for create"),
        "{log}"
    );
    let shown = keyward(
        root,
        &[
            "secret",
            "gw-lookup",
            "--store",
            "gateway",
            "-i",
            &me,
            "--reveal",
        ],
        None,
    );
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let secret = String::from_utf8(shown.stdout).unwrap().trim().to_owned();
    assert!(
        secret.starts_with("kw_sbx_"),
        "not a secret: {} chars",
        secret.len()
    );
    assert!(!log.contains(&secret), "the secret reached keyward's log");
    let held = std::fs::read_to_string(&file).unwrap();
    assert!(
        !held.contains(&secret),
        "the adapter's file holds the secret"
    );
    let verified = keyward(root, &["verify", "--store", "gateway"], Some(&secret));
    let out = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(out.contains("\"reason\": \"ok\""), "{out}");
    let wrong = keyward(
        root,
        &["verify", "--store", "gateway"],
        Some(&secret.replace("kw_sbx_", "kw_sbx_x")),
    );
    assert!(!wrong.status.success(), "a wrong secret verified");
}

/// Passes every line between keyward and the adapter (given after the log path) through,
/// writing each to the log as `R <request>` or `A <answer>`.
const TEE: &str = r#"
import subprocess, sys, threading
log, lock = open(sys.argv[1], "a"), threading.Lock()
child = subprocess.Popen([sys.executable] + sys.argv[2:], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, bufsize=1)
def note(tag, line):
    with lock:
        log.write(tag + " " + line)
        log.flush()
def answers():
    for line in child.stdout:
        note("A", line)
        sys.stdout.write(line)
        sys.stdout.flush()
threading.Thread(target=answers, daemon=True).start()
for line in sys.stdin:
    note("R", line)
    child.stdin.write(line)
    child.stdin.flush()
child.stdin.close()
child.wait()
"#;

/// The protocol's schemas (schemas/store-protocol/), compiled by their `$id`.
fn protocol_schemas() -> (
    boon::Schemas,
    std::collections::BTreeMap<String, boon::SchemaIndex>,
) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/store-protocol");
    let base = "https://keyward.dev/schemas/store-protocol/";
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(v["$id"], format!("{base}{name}"), "{name}: $id");
        compiler.add_resource(&format!("{base}{name}"), v).unwrap();
        names.push(name);
    }
    let mut schemas = boon::Schemas::new();
    let mut by_name = std::collections::BTreeMap::new();
    for n in names {
        let idx = compiler
            .compile(&format!("{base}{n}"), &mut schemas)
            .unwrap_or_else(|e| panic!("{n} does not compile: {e:#}"));
        by_name.insert(n, idx);
    }
    (schemas, by_name)
}

#[tokio::test]
async fn every_message_of_a_store_check_run_matches_its_schema() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tee = dir.path().join("tee.py");
    std::fs::write(&tee, TEE).unwrap();
    let log = dir.path().join("wire.log");
    let reference =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/adapters/keyward-store-jsonfile");
    let opts = ExecOptions {
        command: [
            python(),
            tee.display().to_string(),
            log.display().to_string(),
            reference.display().to_string(),
            "--file".into(),
            dir.path().join("keys.json").display().to_string(),
        ]
        .to_vec(),
        env: Vec::new(),
        timeout: Duration::from_secs(20),
    };
    let s = ExecStore::open("gateway", opts).expect("handshake");
    let lease = s
        .lock("schema-test", chrono::Duration::minutes(1))
        .await
        .unwrap();
    let held = s.lock("someone-else", chrono::Duration::minutes(1)).await;
    assert!(
        matches!(held, Err(keyward::store::StoreError::Locked { ref holder, .. }) if holder == "schema-test"),
        "{held:?}"
    );
    s.unlock(&lease.id).await.unwrap();
    let opts = keyward::store::check::CheckOptions {
        environment: "sandbox".into(),
        scopes: vec!["bibs:read".into()],
        paging_keys: 120,
    };
    let report = keyward::store::check::run(&s, &opts).await;
    assert!(report.passed(), "{}", report.table());
    let used = s.usage("0000-01-01").await.unwrap().expect("kept");
    assert!(
        used.rows.iter().any(|r| r.calls > 0),
        "the check's verifies were counted"
    );
    drop(s);

    let (schemas, by_name) = protocol_schemas();
    let mut ops_of = std::collections::BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        let (tag, msg) = line.split_at(2);
        let v: serde_json::Value = serde_json::from_str(msg).unwrap();
        let (op, file) = if tag == "R " {
            let op = v["op"].as_str().unwrap().to_owned();
            ops_of.insert(v["id"].as_u64().unwrap(), op.clone());
            (op.clone(), format!("{op}.request.json"))
        } else {
            let op = ops_of[&v["id"].as_u64().unwrap()].clone();
            (op.clone(), format!("{op}.answer.json"))
        };
        let idx = by_name
            .get(&file)
            .unwrap_or_else(|| panic!("no schema {file}"));
        if let Err(e) = schemas.validate(&v, *idx) {
            panic!("{file} does not accept {msg}: {e:#}");
        }
        if v.get("error").is_some() {
            schemas
                .validate(&v, by_name["error.json"])
                .unwrap_or_else(|e| panic!("error.json: {e:#}"));
        }
        seen.insert(op);
    }
    for op in [
        "describe", "list", "get", "create", "update", "rotate", "disable", "enable", "revoke",
        "delete", "lock", "unlock", "renew", "verify", "usage",
    ] {
        assert!(seen.contains(op), "{op} was never sent: {seen:?}");
    }
}

/// An adapter declaring `usage: true` whose `usage` answer is `RESULT` (Python), writing
/// each `since` it was asked for to `asked`.
fn usage_adapter(result: &str) -> Adapter {
    Adapter::new(
        "CAPS['usage'] = True",
        &format!(
            "open(os.path.join(here, 'asked'), 'a').write(req.get('since', '?') + '\\n')\n    say(req, {result})"
        ),
    )
}

#[tokio::test]
async fn an_adapter_reports_last_use_and_calls_per_day_and_keyward_drops_days_before_since() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let a = usage_adapter(
        r#"{"counting_since": "2026-06-01T00:00:00Z", "calls_counted": True, "keys": [
            {"key_id": "aaaa", "last_used": "2026-12-07T09:30:12Z",
             "calls_per_day": {"2026-11-01": 5, "2026-12-06": 412, "2026-12-07": 37}},
            {"key_id": "bbbb", "last_used": None},
            {"key_id": "cccc", "last_used": "2026-12-02T10:00:00Z", "calls_per_day": {}}]}"#,
    );
    let s = ExecStore::open("gateway", a.options(Duration::from_secs(5))).expect("handshake");
    assert!(s.capabilities().usage);
    let u = s.usage("2026-12-01").await.expect("usage").expect("kept");
    let asked = std::fs::read_to_string(a.dir.path().join("asked")).unwrap();
    assert_eq!(asked, "2026-12-01\n", "since is sent");
    assert!(!u.last_use_only);
    assert_eq!(
        u.counting_since.unwrap().to_rfc3339(),
        "2026-06-01T00:00:00+00:00"
    );
    let rows: Vec<(String, String, u64, String)> = u
        .rows
        .iter()
        .map(|r| {
            assert_eq!(r.reason, keyward::store::VerifyReason::Ok);
            (
                r.key_id.clone(),
                r.day.clone(),
                r.calls,
                r.last_at.format("%Y-%m-%dT%H:%M:%S").to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "aaaa".into(),
                "2026-12-06".into(),
                412,
                "2026-12-06T00:00:00".into()
            ),
            (
                "aaaa".into(),
                "2026-12-07".into(),
                37,
                "2026-12-07T09:30:12".into()
            ),
            // used on a day the adapter has no count for: the last use, no calls
            (
                "cccc".into(),
                "2026-12-02".into(),
                0,
                "2026-12-02T10:00:00".into()
            ),
        ]
    );
    let per = keyward::store::usage::per_key(&u.rows);
    assert_eq!(per["aaaa"].valid, 449);
    assert_eq!(
        per["aaaa"].last_used.unwrap().to_rfc3339(),
        "2026-12-07T09:30:12+00:00"
    );
    assert!(!per.contains_key("bbbb"), "a never-used key has no row");
}

#[tokio::test]
async fn an_adapter_reporting_only_last_use_is_marked_so() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let a = usage_adapter(
        r#"{"keys": [{"key_id": "aaaa", "last_used": "2026-12-07T09:30:12Z"},
                     {"key_id": "old", "last_used": "2025-01-01T00:00:00Z"}]}"#,
    );
    let s = ExecStore::open("gateway", a.options(Duration::from_secs(5))).expect("handshake");
    let u = s.usage("2026-01-01").await.unwrap().unwrap();
    assert!(u.last_use_only);
    assert_eq!(u.counting_since, None);
    assert_eq!(u.rows.len(), 1, "{:?}", u.rows);
    assert_eq!((u.rows[0].key_id.as_str(), u.rows[0].calls), ("aaaa", 0));
    let all = s.usage("0000-01-01").await.unwrap().unwrap();
    assert_eq!(all.rows.len(), 2);
}

#[tokio::test]
async fn an_adapter_without_the_capability_is_never_asked() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let a = Adapter::new(
        "pass",
        "open(os.path.join(here, 'asked'), 'w').write(req['op'])\n    say(req, {'keys': []})",
    );
    let s = ExecStore::open("gateway", a.options(Duration::from_secs(5))).expect("handshake");
    assert!(!s.capabilities().usage);
    assert_eq!(s.usage("0000-01-01").await.unwrap(), None);
    assert!(
        !a.dir.path().join("asked").exists(),
        "the adapter was asked"
    );
}

#[tokio::test]
async fn bad_usage_answers_fail_naming_the_store_the_adapter_and_the_field() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let secretish =
        "kw_sbx_aaaaaaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let cases: [(String, &str); 8] = [
        (
            format!(r#"{{"calls_counted": True, "keys": [{{"key_id": "a", "calls_per_day": {{"{secretish}": 3}}}}]}}"#),
            "`keys[0].calls_per_day` has a day that is not YYYY-MM-DD",
        ),
        (
            r#"{"keys": [{"key_id": "a", "calls_per_day": {"2026-12-01": 3}}]}"#.into(),
            "`keys[0]` has `calls_per_day` but the answer does not say `calls_counted: true`",
        ),
        (
            r#"{"calls_counted": True, "keys": [{"key_id": "a"}, {"key_id": "b", "calls_per_day": {"2026-12-01": -4}}]}"#.into(),
            "`keys[1].calls_per_day` has a count that is not a whole number",
        ),
        (
            r#"{"keys": [{"key_id": ""}]}"#.into(),
            "`keys[0].key_id` is not a string of 1 to 200 bytes",
        ),
        (
            r#"{"keys": [{"key_id": "x" * 201}]}"#.into(),
            "`keys[0].key_id` is not a string of 1 to 200 bytes",
        ),
        (
            format!(r#"{{"keys": [{{"key_id": "a", "last_used": "{secretish}"}}]}}"#),
            "`keys[0].last_used` is not an RFC 3339 time",
        ),
        (
            format!(r#"{{"keys": "{secretish}"}}"#),
            "`keys` is not a list",
        ),
        (
            r#"{"keys": [{"key_id": "k%d" % i} for i in range(100001)]}"#.into(),
            "100001 key entries in a usage answer, at most 100000",
        ),
    ];
    for (result, want) in cases {
        let a = usage_adapter(&result);
        let s = ExecStore::open("gateway", a.options(Duration::from_secs(20))).expect("handshake");
        let err = s
            .usage("0000-01-01")
            .await
            .expect_err("a bad answer fails")
            .to_string();
        assert!(
            err.contains("store `gateway` (exec adapter `broken`), step usage: "),
            "{err}"
        );
        assert!(err.contains(want), "want {want:?} in {err}");
        assert!(!err.contains(secretish), "the answer was quoted: {err}");
    }
}

#[tokio::test]
async fn a_usage_request_has_the_limits_of_every_request() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let hung = Adapter::new(
        "CAPS['usage'] = True",
        "if req['op'] == 'usage': time.sleep(3600)",
    );
    let s = ExecStore::open("gateway", hung.options(Duration::from_secs(2))).expect("handshake");
    let t = Instant::now();
    let err = s.usage("0000-01-01").await.expect_err("hangs").to_string();
    assert!(t.elapsed() < Duration::from_secs(7), "{:?}", t.elapsed());
    assert!(
        err.contains("store `gateway` (exec adapter `broken`), step usage: no answer within 2s"),
        "{err}"
    );
    assert!(hung.stopped(), "the hung adapter is still running");

    let big = Adapter::new(
        "CAPS['usage'] = True",
        "sys.stdout.write('{\"apiVersion\": \"keyward.store/v1\", \"id\": %d, \"result\": {\"keys\": [' % req['id'] + ','.join(['{\"key_id\": \"k%07d\"}' % i for i in range(300000)]) + ']}}\\n'); sys.stdout.flush(); time.sleep(3600)",
    );
    let s = ExecStore::open("gateway", big.options(Duration::from_secs(20))).expect("handshake");
    let err = s
        .usage("0000-01-01")
        .await
        .expect_err("too long")
        .to_string();
    assert!(err.contains("step usage"), "{err}");
    assert!(err.contains("longer than"), "{err}");
    assert!(big.stopped());

    let refusing = Adapter::new(
        "CAPS['usage'] = True",
        "sys.stdout.write(json.dumps({'apiVersion': API, 'id': req['id'], 'error': {'code': 'invalid', 'message': 'unknown op usage'}}) + '\\n'); sys.stdout.flush()",
    );
    let s = ExecStore::open("gateway", refusing.options(Duration::from_secs(5))).unwrap();
    let err = s
        .usage("0000-01-01")
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("store `gateway` (exec adapter `broken`), step usage: the adapter refused the request: unknown op usage"),
        "{err}"
    );
}

#[tokio::test]
async fn the_reference_adapter_counts_each_valid_verify_and_answers_usage() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reference =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/adapters/keyward-store-jsonfile");
    let opts = ExecOptions {
        command: vec![
            python(),
            reference.display().to_string(),
            "--file".into(),
            dir.path().join("keys.json").display().to_string(),
        ],
        env: Vec::new(),
        timeout: Duration::from_secs(20),
    };
    let s = ExecStore::open("gateway", opts).expect("handshake");
    assert!(s.capabilities().usage);
    let actor = keyward::store::Actor {
        who: "test".into(),
        commit: None,
    };
    let id = keyward::secret::new_key_id();
    let secret = keyward::secret::generate("sandbox", &id);
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z")
        .unwrap()
        .to_utc();
    let key = keyward::store::NewKey {
        id: id.clone(),
        name: "gw-lookup".into(),
        environment: "sandbox".into(),
        owner: "jdoe".into(),
        purpose: None,
        scopes: vec![],
        labels: Default::default(),
        status: keyward::store::KeyStatus::Active,
        issued_at: t0,
        expires_at: None,
        lifetime: None,
        generation: 1,
        spec_generation: 1,
        recipients: Default::default(),
        quota_per_day: None,
        protected: false,
        managed_by: Some("keyward".into()),
        applied_digest: None,
        secret_hash: s.secret_form(&secret).unwrap(),
    };
    s.create(key, keyward::store::Writer::new(&actor))
        .await
        .unwrap();
    assert_eq!(
        s.usage("0000-01-01").await.unwrap().unwrap().rows,
        [],
        "nothing counted before a verify"
    );
    let at = |h: i64| t0 + chrono::Duration::hours(h);
    for h in [1, 2, 25, 26, 27] {
        assert!(s.verify(secret.expose(), at(h)).await.unwrap().valid);
    }
    let wrong = secret.expose().replace("kw_sbx_", "kw_sbx_x");
    assert!(!s.verify(&wrong, at(30)).await.unwrap().valid);
    let u = s.usage("0000-01-01").await.unwrap().unwrap();
    assert_eq!(u.counting_since, Some(at(1)));
    let days: Vec<(&str, u64)> = u.rows.iter().map(|r| (r.day.as_str(), r.calls)).collect();
    assert_eq!(days, [("2026-12-01", 2), ("2026-12-02", 3)]);
    let per = keyward::store::usage::per_key(&u.rows);
    assert_eq!(
        per[&id].last_used,
        Some(at(27)),
        "the refused call is no use"
    );
    let later = s.usage("2026-12-02").await.unwrap().unwrap();
    assert_eq!(later.rows.len(), 1);
}

/// The reference adapter with a `usage` that misreports: every key it counted was last
/// used in 2020.
const STALE_USAGE: &str = r#"
import importlib.machinery, importlib.util, sys
sys.dont_write_bytecode = True
loader = importlib.machinery.SourceFileLoader("jsonfile", sys.argv[1])
spec = importlib.util.spec_from_loader("jsonfile", loader)
m = importlib.util.module_from_spec(spec)
loader.exec_module(m)
plain = m.op_usage
def stale(d, r):
    out = plain(d, r)
    for k in out["keys"]:
        k["last_used"] = "2020-01-01T00:00:00Z"
    return out
m.READS["usage"] = stale
sys.argv = [sys.argv[0], "--file", sys.argv[2]]
m.main()
"#;

#[tokio::test]
async fn store_check_fails_an_adapter_whose_usage_misses_the_verify_just_made() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("stale.py");
    std::fs::write(&wrapper, STALE_USAGE).unwrap();
    let reference =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/adapters/keyward-store-jsonfile");
    let opts = ExecOptions {
        command: vec![
            python(),
            wrapper.display().to_string(),
            reference.display().to_string(),
            dir.path().join("keys.json").display().to_string(),
        ],
        env: Vec::new(),
        timeout: Duration::from_secs(20),
    };
    let s = ExecStore::open("gateway", opts).expect("handshake");
    let opts = keyward::store::check::CheckOptions {
        environment: "sandbox".into(),
        scopes: vec!["bibs:read".into()],
        paging_keys: 10,
    };
    let report = keyward::store::check::run(&s, &opts).await;
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.check)
        .collect();
    assert_eq!(failed, ["usage"], "{}", report.table());
    let row = report.checks.iter().find(|c| c.check == "usage").unwrap();
    assert!(
        row.detail.contains("not the verify just made"),
        "{}",
        row.detail
    );
}
