//! Notifications through the real binary against real servers on loopback: an SMTP server
//! (Python's aiosmtpd, started by the test, requiring a login) and an HTTP receiver (a
//! std TcpListener recording each request). The clock is set with KEYWARD_NOW. Checks that
//! reminders go out once per key and offset, that apply's notices say where the envelope is
//! and never carry the secret, and that a down server neither fails an apply nor loses the
//! notice (the next run delivers it). With `unused_after`, a key a real `keyward serve`
//! saw used once is named by the nightly report and its owner told ahead of the disable.
//!
//! Without aiosmtpd (`pip install aiosmtpd`) the tests are skipped with a visible message,
//! except under CI=true, where they fail.

mod certs_common;
mod common;
mod needs;
mod notify_support;
mod serve_common;
mod terminal_common;
use certs_common::make_certs;
use common::{Out, Repo};
use hmac::{Hmac, Mac};
use notify_support::{Call, Hook, free_port};
use sha2::Sha256;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use terminal_common::Terminal;

const T0: &str = "2027-01-10T12:00:00Z";
const SMTP_USER: &str = "keyward-test";
const SMTP_PASSWORD: &str = "pw-for-the-test-smtp-server";
const HOOK_SECRET: &str = "hook-signing-secret-for-tests";

fn t(days: f64) -> String {
    let t0 = chrono::DateTime::parse_from_rfc3339(T0).unwrap();
    (t0 + chrono::Duration::minutes((days * 1440.0) as i64)).to_rfc3339()
}

/// Is aiosmtpd importable? Without it: skip (one visible line), or fail under CI=true.
#[track_caller]
fn smtp_server_available() -> bool {
    needs::tool(&needs::AIOSMTPD)
}

/// The real SMTP server: aiosmtpd in a child process, one JSON file per message.
struct Smtp {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Smtp {
    fn start(port: u16) -> Smtp {
        Smtp::start_tls(port, None)
    }

    /// With `tls` (certificate and key files), the server requires STARTTLS.
    fn start_tls(port: u16, tls: Option<(&Path, &Path)>) -> Smtp {
        Smtp::start_args(port, tls, &[])
    }

    /// A server speaking TLS from the first byte (port 465 style).
    fn start_implicit_tls(cert: &Path, key: &Path) -> Smtp {
        Smtp::start_args(0, Some((cert, key)), &["implicit"])
    }

    fn start_args(port: u16, tls: Option<(&Path, &Path)>, more: &[&str]) -> Smtp {
        let dir = tempfile::tempdir().unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/notify_support/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(dir.path())
            .arg(port.to_string())
            .arg(SMTP_USER)
            .arg(SMTP_PASSWORD)
            .args(tls.iter().flat_map(|(c, k)| [c.as_os_str(), k.as_os_str()]))
            .args(more)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the SMTP server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the SMTP server did not start: {line:?}"));
        Smtp { child, port, dir }
    }

    /// Every message received so far, in order.
    fn messages(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn notify_yaml(smtp_port: u16, hook_port: u16, fixed_to: &[&str]) -> String {
    let to = if fixed_to.is_empty() {
        String::new()
    } else {
        format!("    to: [{}]\n", fixed_to.join(", "))
    };
    format!(
        "notify:\n  email:\n    host: 127.0.0.1\n    port: {smtp_port}\n    tls: none\n    username: {SMTP_USER}\n    password_env: KW_TEST_SMTP_PASSWORD\n    from: \"keyward <keyward@example.edu>\"\n{to}  webhook:\n    url: http://127.0.0.1:{hook_port}/keyward\n    secret_env: KW_TEST_HOOK_SECRET\n    allow_private: true\n"
    )
}

fn repo_with_notify(keys: &str, smtp_port: u16, hook_port: u16, fixed_to: &[&str]) -> Repo {
    let r = Repo::new(keys);
    let path = r.root().join("keyward.yaml");
    let mut cfg = std::fs::read_to_string(&path).unwrap();
    cfg.push_str(&notify_yaml(smtp_port, hook_port, fixed_to));
    std::fs::write(&path, cfg).unwrap();
    r
}

fn at(r: &Repo, day: f64, args: &[&str]) -> Out {
    r.run_with(
        args,
        &[
            ("KEYWARD_NOW", &t(day)),
            ("KW_TEST_SMTP_PASSWORD", SMTP_PASSWORD),
            ("KW_TEST_HOOK_SECRET", HOOK_SECRET),
        ],
        None,
    )
}

fn apply_at(r: &Repo, day: f64) -> Out {
    let o = at(r, day, &["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "apply failed: {}", o.all());
    o
}

/// Wait (briefly) until the servers have what the finished command sent: the SMTP server
/// writes its file after answering, so give it a moment.
fn settle<T>(want: usize, get: impl Fn() -> Vec<T>) -> Vec<T> {
    let start = Instant::now();
    loop {
        let v = get();
        if v.len() >= want || start.elapsed() > Duration::from_secs(5) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256(secret, id.timestamp.body)>`
/// with the id and a timestamp of the send (within the 5-minute replay window).
fn assert_signed(c: &Call) {
    use base64::Engine as _;
    let id = c.header("webhook-id").expect("a webhook-id header");
    assert_eq!(Some(id), c.header("X-Keyward-Delivery"));
    let ts: i64 = c
        .header("webhook-timestamp")
        .expect("a webhook-timestamp header")
        .parse()
        .expect("Unix seconds");
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now - ts).abs() < 300,
        "timestamp {ts} is not the send time ({now})"
    );
    let sig = c.header("webhook-signature").expect("a signature header");
    let b64 = sig.strip_prefix("v1,").expect("v1, prefix");
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&c.body);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    mac.verify_slice(&raw)
        .expect("the signature is HMAC-SHA256 of id.timestamp.body with the configured secret");
    assert!(
        c.header("X-Keyward-Signature").is_none(),
        "the replayable body-only signature is gone"
    );
}

fn kind_of_mail(m: &serde_json::Value) -> String {
    m["subject"].as_str().unwrap_or("").to_string()
}

const SHORT: &str = "\
keys:
  - name: short-lived
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
    lifetime: 30d
  - name: long-lived
    store: alma-production
    owner: asmith
    scopes: [users:read]
    lifetime: 365d
";

#[test]
fn a_key_seven_days_from_expiry_sends_one_reminder_email_and_one_signed_webhook_once() {
    if !smtp_server_available() {
        return;
    }
    let smtp = Smtp::start(0);
    let hook_port = free_port();
    let hook = Hook::start(hook_port);
    let r = repo_with_notify(SHORT, smtp.port, hook_port, &[]);
    let o = apply_at(&r, 0.0);
    // The apply's own notices: one created mail per owner, one webhook call per key.
    let mails = settle(2, || smtp.messages());
    assert_eq!(mails.len(), 2, "{mails:#?}\n{}", o.all());
    assert_eq!(hook.calls().len(), 2);
    assert!(
        o.stderr
            .contains("notified alma-production/short-lived (created) by email (jdoe@example.edu)"),
        "{}",
        o.stderr
    );

    // 7 days before the 30-day key expires, the nightly job runs.
    let o = at(&r, 23.0, &["expiring", "--notify"]);
    assert_eq!(o.code, 2, "something is due: {}", o.all());
    let mails = settle(3, || smtp.messages());
    let reminders: Vec<&serde_json::Value> = mails
        .iter()
        .filter(|m| kind_of_mail(m).contains("expires in"))
        .collect();
    assert_eq!(reminders.len(), 1, "{mails:#?}");
    let m = reminders[0];
    assert_eq!(m["rcpt_tos"], serde_json::json!(["jdoe@example.edu"]));
    assert_eq!(
        m["login"], SMTP_USER,
        "the password from password_env was used"
    );
    assert_eq!(
        m["subject"],
        "[keyward] alma-production/short-lived expires in 7 day(s)"
    );
    let body = m["body"].as_str().unwrap();
    assert!(body.contains("Hello jdoe,"), "{body}");
    assert!(body.contains("the 7d reminder"), "{body}");
    assert!(body.contains("rotation.generation"), "{body}");
    assert!(body.contains("keys/keys.yaml:2"), "{body}");
    let calls = hook.calls();
    let hook_reminders: Vec<&Call> = calls
        .iter()
        .filter(|c| c.header("X-Keyward-Event") == Some("key.reminder"))
        .collect();
    assert_eq!(hook_reminders.len(), 1, "{calls:#?}");
    let c = hook_reminders[0];
    assert_eq!(c.request_line, "POST /keyward HTTP/1.1");
    assert_eq!(c.header("Content-Type"), Some("application/json"));
    assert_signed(c);
    let v = c.json();
    assert_eq!(v["key"], "short-lived");
    assert_eq!(v["offset"], "7d");
    assert_eq!(v["days_left"], 7);
    assert_eq!(v["owner"], "jdoe");
    assert_eq!(c.header("X-Keyward-Delivery"), v["id"].as_str());
    // Every call is signed, not only the reminder.
    calls.iter().for_each(assert_signed);

    // The job runs again (the same night, and the next day, still in the 7d slot):
    // nothing new.
    for day in [23.0, 23.5, 24.0] {
        let o = at(&r, day, &["expiring", "--notify"]);
        assert_eq!(o.code, 2, "{}", o.all());
        assert!(!o.stderr.contains("notified"), "{}", o.stderr);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(smtp.messages().len(), 3);
    assert_eq!(hook.calls().len(), 3);

    // Inside the 1d offset: the next (and last) reminder.
    let o = at(&r, 29.5, &["expiring", "--notify"]);
    assert_eq!(o.code, 2, "{}", o.all());
    let mails = settle(4, || smtp.messages());
    assert_eq!(mails.len(), 4);
    assert_eq!(
        mails[3]["subject"],
        "[keyward] alma-production/short-lived expires today"
    );
    let calls = settle(4, || hook.calls());
    assert_eq!(calls[3].json()["offset"], "1d");
}

#[test]
fn apply_notices_say_where_the_envelope_is_and_never_carry_the_secret() {
    if !smtp_server_available() {
        return;
    }
    let smtp = Smtp::start(0);
    let hook_port = free_port();
    let hook = Hook::start(hook_port);
    let keys = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
    recipients: [team:ill-staff]
  - name: reports
    store: alma-production
    owner: asmith
    scopes: [analytics:read]
  - name: course-sync
    store: alma-sandbox
    owner: rkumar
    scopes: [courses:read]
";
    let r = repo_with_notify(keys, smtp.port, hook_port, &["security@example.edu"]);
    apply_at(&r, 0.0);
    let mut secrets = vec![
        r.secret("ill-lookup", "alma-production", "jdoe"),
        r.secret("reports", "alma-production", "asmith"),
        r.secret("course-sync", "alma-sandbox", "rkumar"),
    ];
    let mails = settle(3, || smtp.messages());
    assert_eq!(mails.len(), 3, "{mails:#?}");
    let created = mails
        .iter()
        .find(|m| kind_of_mail(m).contains("alma-production/ill-lookup"))
        .expect("a mail about ill-lookup");
    assert_eq!(
        created["rcpt_tos"],
        serde_json::json!(["jdoe@example.edu", "security@example.edu"])
    );
    assert_eq!(
        created["subject"],
        "[keyward] New key alma-production/ill-lookup: your encrypted secret is ready"
    );
    let body = created["body"].as_str().unwrap();
    for want in [
        "deliveries/alma-production/ill-lookup/g1/<your id>.age",
        "keyward secret ill-lookup --store alma-production",
        "keyward decrypt deliveries/alma-production/ill-lookup/g1/<your id>.age",
        "age -d -i",
        "(asmith, jdoe)",
        "The secret is NOT in this message",
    ] {
        assert!(body.contains(want), "missing {want:?}:\n{body}");
    }
    // The envelope it names is really there.
    assert!(
        r.root()
            .join("deliveries/alma-production/ill-lookup/g1/jdoe.age")
            .is_file()
    );

    // Rotate one, revoke one (removed from the spec), disable one.
    r.write_keys(
        "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
    recipients: [team:ill-staff]
    rotation: { generation: 2 }
  - name: course-sync
    store: alma-sandbox
    owner: rkumar
    scopes: [courses:read]
    state: disabled
",
    );
    let o = apply_at(&r, 1.0);
    secrets.push(r.secret("ill-lookup", "alma-production", "jdoe"));
    assert_ne!(secrets[0], secrets[3], "rotated");
    let mails = settle(6, || smtp.messages());
    assert_eq!(mails.len(), 6, "{mails:#?}\n{}", o.all());
    let subject = |s: &str| {
        mails
            .iter()
            .find(|m| kind_of_mail(m) == s)
            .unwrap_or_else(|| panic!("no mail {s:?} in {mails:#?}"))
    };
    let rotated = subject("[keyward] alma-production/ill-lookup was rotated: fetch the new secret");
    let body = rotated["body"].as_str().unwrap();
    assert!(
        body.contains("deliveries/alma-production/ill-lookup/g2/<your id>.age"),
        "{body}"
    );
    assert!(
        body.contains("The previous secret keeps working until"),
        "{body}"
    );
    assert!(body.contains("generation 1 -> 2"), "{body}");
    let revoked = subject("[keyward] alma-production/reports was revoked");
    assert_eq!(
        revoked["rcpt_tos"],
        serde_json::json!(["asmith@example.edu", "security@example.edu"])
    );
    assert!(
        revoked["body"]
            .as_str()
            .unwrap()
            .contains("removed from spec")
    );
    let disabled = subject("[keyward] alma-sandbox/course-sync was disabled");
    assert_eq!(disabled["rcpt_tos"][0], "rkumar@example.edu");

    let calls = settle(6, || hook.calls());
    let events: Vec<String> = calls
        .iter()
        .map(|c| c.header("X-Keyward-Event").unwrap_or("").to_string())
        .collect();
    for e in ["key.created", "key.rotated", "key.revoked", "key.disabled"] {
        assert!(events.iter().any(|x| x == e), "{events:?}");
    }
    let rot = calls
        .iter()
        .find(|c| c.header("X-Keyward-Event") == Some("key.rotated"))
        .unwrap()
        .json();
    assert_eq!(rot["delivery"], "deliveries/alma-production/ill-lookup/g2");
    assert_eq!(rot["generation"], 2);
    assert!(rot["previous_valid_until"].is_string());

    // No secret, in any form the servers saw: raw mail, decoded body, webhook body.
    for s in &secrets {
        assert!(s.starts_with("kw_"), "a real secret: {}", s.len());
        for m in &mails {
            let all = m.to_string();
            assert!(!all.contains(s.as_str()), "a secret in a mail");
        }
        for c in &calls {
            assert!(!common::contains(&c.body, s), "a secret in a webhook body");
            assert!(
                c.headers.iter().all(|(_, v)| !v.contains(s.as_str())),
                "a secret in a webhook header"
            );
        }
        assert!(!o.all().contains(s.as_str()));
    }
}

#[test]
fn down_servers_never_fail_an_apply_and_the_next_run_delivers() {
    if !smtp_server_available() {
        return;
    }
    let smtp_port = free_port();
    let hook_port = free_port();
    let keys = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
";
    let r = repo_with_notify(keys, smtp_port, hook_port, &[]);
    // Both down: the apply succeeds and says what was not sent and what happens next.
    let o = apply_at(&r, 0.0);
    assert!(o.stderr.contains("1 change(s) applied"), "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "warning: email notification about alma-production/ill-lookup (created) not sent via smtp 127.0.0.1:{smtp_port} (none)"
        )),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains(&format!(
            "warning: webhook notification about alma-production/ill-lookup (created) not sent via webhook http://127.0.0.1:{hook_port}"
        )),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr
            .contains("the next `keyward apply` or `keyward expiring --notify` retries it"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("keyward.yaml:"),
        "names the config: {}",
        o.stderr
    );
    let secret = r.secret("ill-lookup", "alma-production", "jdoe");
    assert!(!o.all().contains(&secret));

    // The webhook comes back: the next apply (nothing to change) delivers its notice; the
    // mail is still pending and reported again.
    let hook = Hook::start(hook_port);
    let o = apply_at(&r, 0.1);
    assert!(
        o.stderr.contains("No changes") || o.stdout.contains("No changes"),
        "{}",
        o.all()
    );
    let calls = settle(1, || hook.calls());
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].header("X-Keyward-Event"), Some("key.created"));
    assert_signed(&calls[0]);
    assert!(
        o.stderr
            .contains("email notification about alma-production/ill-lookup (created) not sent"),
        "{}",
        o.stderr
    );

    // The nightly job while the SMTP server is still down: exit 1, the failure named.
    let o = at(&r, 0.2, &["expiring", "--notify"]);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.stderr.contains("email notification about"),
        "{}",
        o.stderr
    );

    // The SMTP server comes back: the nightly job delivers the created notice.
    let smtp = Smtp::start(smtp_port);
    let o = at(&r, 0.3, &["expiring", "--notify"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let mails = settle(1, || smtp.messages());
    assert_eq!(mails.len(), 1);
    assert_eq!(
        mails[0]["subject"],
        "[keyward] New key alma-production/ill-lookup: your encrypted secret is ready"
    );
    assert_eq!(mails[0]["rcpt_tos"][0], "jdoe@example.edu");

    // Nothing is sent twice: neither by the job nor by the next apply.
    let o = at(&r, 0.4, &["expiring", "--notify"]);
    assert_eq!(o.code, 0, "{}", o.all());
    apply_at(&r, 0.5);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(smtp.messages().len(), 1);
    assert_eq!(hook.calls().len(), 1);
}

#[test]
fn validate_reports_notify_mistakes_at_their_line() {
    let r = Repo::new("keys: []\n");
    let path = r.root().join("keyward.yaml");
    let mut cfg = std::fs::read_to_string(&path).unwrap();
    cfg.push_str(
        "notify:\n  email:\n    host: smtp.example.edu\n    tls: none\n    username: kw\n    password_env: \"not a name\"\n    from: nobody\n    connections: 17\n  webhook:\n    url: http://hooks.example.edu/x\n  on: [reminders]\n",
    );
    std::fs::write(&path, &cfg).unwrap();
    let o = r.run(&["validate"]);
    assert_eq!(o.code, 1, "{}", o.all());
    let line_of = |needle: &str| {
        cfg.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap()
    };
    for (needle, msg) in [
        ("password_env", "is not an environment variable name"),
        ("from: nobody", "`nobody` is not a mail address"),
        ("url: http://hooks", "unencrypted"),
        ("on: [reminders]", "unknown message kind `reminders`"),
        ("connections: 17", "17 SMTP connections is outside 1-16"),
    ] {
        assert!(o.all().contains(msg), "{msg}: {}", o.all());
        assert!(
            o.all()
                .contains(&format!("keyward.yaml:{}:", line_of(needle))),
            "{needle} at its line: {}",
            o.all()
        );
    }
    assert!(o.all().contains("did you mean `reminder`?"), "{}", o.all());
    assert!(
        o.all()
            .contains("error[KW014]: 17 SMTP connections is outside 1-16"),
        "{}",
        o.all()
    );
    assert!(o.all().contains("use 1 to 16 (default 4)"), "{}", o.all());
    // `expiring --notify` without a notify section says what to add.
    let r = Repo::new("keys: []\n");
    let o = r.run(&["expiring", "--notify"]);
    assert_eq!(o.code, 1);
    assert!(
        o.all().contains("--notify needs a `notify:` section"),
        "{}",
        o.all()
    );
}

/// STARTTLS for real: the SMTP server requires it (and AUTH only after it), keyward verifies
/// the server's certificate (rustls with the platform verifier, here trusting the test CA via
/// SSL_CERT_FILE), and a certificate from an unknown CA is refused: the apply still succeeds,
/// the failure is reported, and the next run delivers once the CA is trusted.
#[test]
fn email_uses_starttls_and_refuses_an_untrusted_certificate() {
    if !smtp_server_available() || !needs::tool(&needs::OPENSSL) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(certs.path(), "good");
    let (other_ca, _, _) = make_certs(certs.path(), "other");
    let smtp = Smtp::start_tls(0, Some((&cert, &key)));
    let keys = "keys:\n  - name: ill-lookup\n    store: alma-production\n    owner: jdoe\n    scopes: [bibs:read]\n";
    let r = Repo::new(keys);
    let path = r.root().join("keyward.yaml");
    let mut cfg = std::fs::read_to_string(&path).unwrap();
    cfg.push_str(&format!(
        "notify:\n  email:\n    host: localhost\n    port: {}\n    tls: starttls\n    username: {SMTP_USER}\n    password_env: KW_TEST_SMTP_PASSWORD\n    from: keyward@example.edu\n",
        smtp.port
    ));
    std::fs::write(&path, cfg).unwrap();
    let run = |day: &str, trusted: &Path, args: &[&str]| {
        r.run_with(
            args,
            &[
                ("KEYWARD_NOW", day),
                ("KW_TEST_SMTP_PASSWORD", SMTP_PASSWORD),
                ("SSL_CERT_FILE", trusted.to_str().unwrap()),
            ],
            None,
        )
    };
    // Trusting another CA: refused (no password sent in the clear, nothing delivered).
    let o = run(&t(0.0), &other_ca, &["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stderr.contains("email notification about alma-production/ill-lookup (created) not sent via smtp localhost:"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.to_lowercase().contains("certificate"),
        "{}",
        o.stderr
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(smtp.messages().is_empty());
    // Trusting the server's CA: the pending notice goes out over TLS, after STARTTLS + AUTH.
    let o = run(&t(0.1), &ca, &["expiring", "--notify"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let mails = settle(1, || smtp.messages());
    assert_eq!(mails.len(), 1, "{}", o.all());
    assert_eq!(mails[0]["tls"], true);
    assert_eq!(mails[0]["login"], SMTP_USER);
    assert_eq!(mails[0]["rcpt_tos"][0], "jdoe@example.edu");
}

#[test]
fn an_unused_key_is_reported_and_its_owner_told_ahead_of_the_disable_once() {
    if !smtp_server_available() {
        return;
    }
    let smtp = Smtp::start(0);
    let hook_port = free_port();
    let hook = Hook::start(hook_port);
    let keys = "keys:\n  - name: idle\n    store: alma-production\n    owner: jdoe\n    scopes: [bibs:read]\n";
    let r = repo_with_notify(keys, smtp.port, hook_port, &[]);
    let cfg = r.root().join("keyward.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace("policy:\n", "policy:\n  unused_after: 90d\n");
    std::fs::write(&cfg, text).unwrap();
    apply_at(&r, 0.0);
    assert_eq!(settle(1, || smtp.messages()).len(), 1, "the created notice");
    // Day 1: the key is used through a real `keyward serve` on the store's file.
    let secret = r.secret("idle", "alma-production", "jdoe");
    let sdir = tempfile::tempdir().unwrap();
    let db = r.root().join(".keyward/prod.db");
    let tokens = sdir.path().join("tokens.yaml");
    common::runtime().block_on(serve_common::verify_calls(
        &db,
        &tokens,
        &t(1.0),
        &[(secret.as_str(), 3)],
    ));

    // Day 62: 61 days unused, disabled on day 91: inside the 30d offset.
    let o = at(&r, 62.0, &["expiring"]);
    assert_eq!(o.code, 2, "something is due: {}", o.all());
    assert!(
        o.stdout.contains("alma-production/idle: unused for 61 days (last used 2027-01-11): disabled in 29 day(s) (2027-04-11) unless used"),
        "{}",
        o.stdout
    );
    let o = at(&r, 62.0, &["expiring", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let item = &v["due"][0];
    assert_eq!(
        (item["kind"].as_str(), item["unused_days"].as_i64()),
        (Some("unused"), Some(61)),
        "{v:#}"
    );
    let o = at(&r, 62.0, &["expiring", "--format", "markdown"]);
    assert!(o.stdout.contains("unused for 61 days"), "{}", o.stdout);

    let o = at(&r, 62.0, &["expiring", "--notify"]);
    assert_eq!(o.code, 2, "{}", o.all());
    let mails = settle(2, || smtp.messages());
    assert_eq!(mails.len(), 2, "{mails:#?}\n{}", o.all());
    assert_eq!(
        kind_of_mail(&mails[1]),
        "[keyward] alma-production/idle is unused: disabled in 29 day(s) unless used"
    );
    assert_eq!(mails[1]["rcpt_tos"][0], "jdoe@example.edu");
    let body = mails[1]["body"].as_str().unwrap_or_default();
    assert!(
        body.contains("has not been used for 61 days (last used 2027-01-11)"),
        "{body}"
    );
    assert!(body.contains("This is the 30d notice"), "{body}");
    assert!(!body.contains(&secret), "never the secret");
    let calls = settle(2, || hook.calls());
    let last = calls.last().unwrap().json();
    assert_eq!(last["kind"], "unused", "{last:#}");

    // Once per key, due day and offset: the next night sends nothing new.
    let o = at(&r, 62.5, &["expiring", "--notify"]);
    assert_eq!(o.code, 2, "{}", o.all());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(smtp.messages().len(), 2, "{}", o.all());
}

/// `count` keys (at most 30: the policy allows 10 per owner) in alma-production named
/// `PREFIX-NN`, owned in turn by jdoe, asmith and rkumar.
fn many_keys(prefix: &str, count: usize) -> String {
    let mut keys = String::from("keys:\n");
    for i in 0..count {
        let owner = ["jdoe", "asmith", "rkumar"][i % 3];
        keys.push_str(&format!(
            "  - name: {prefix}-{i:02}\n    store: alma-production\n    owner: {owner}\n    scopes: [bibs:read]\n"
        ));
    }
    keys
}

/// A repository whose only channel is the webhook at `hook_port`.
fn repo_with_webhook(keys: &str, hook_port: u16) -> Repo {
    let r = Repo::new(keys);
    let path = r.root().join("keyward.yaml");
    let mut cfg = std::fs::read_to_string(&path).unwrap();
    cfg.push_str(&format!(
        "notify:\n  webhook:\n    url: http://127.0.0.1:{hook_port}/keyward\n    secret_env: KW_TEST_HOOK_SECRET\n    allow_private: true\n"
    ));
    std::fs::write(&path, cfg).unwrap();
    r
}

/// A bulk apply: 30 new keys with `connections: 2` send 30 mails over at most 2 SMTP
/// connections (reused, not one per mail) and 30 signed webhook calls, each message once;
/// their `notify.sent` events are written in batches, and neither the nightly job nor the
/// next apply sends any of them again.
#[test]
fn a_bulk_apply_sends_each_message_once_over_a_few_reused_smtp_connections() {
    if !smtp_server_available() {
        return;
    }
    let smtp = Smtp::start(0);
    let hook_port = free_port();
    let hook = Hook::start(hook_port);
    let r = repo_with_notify(&many_keys("bulk", 30), smtp.port, hook_port, &[]);
    let path = r.root().join("keyward.yaml");
    let cfg = std::fs::read_to_string(&path).unwrap().replace(
        "    from: \"keyward <keyward@example.edu>\"\n",
        "    from: \"keyward <keyward@example.edu>\"\n    connections: 2\n",
    );
    std::fs::write(&path, cfg).unwrap();
    let o = apply_at(&r, 0.0);
    assert!(
        o.stderr.contains("Notifications: 60 sent, 0 not sent."),
        "{}",
        o.stderr
    );
    let mails = settle(30, || smtp.messages());
    assert_eq!(mails.len(), 30);
    let peers: std::collections::BTreeSet<&str> =
        mails.iter().map(|m| m["peer"].as_str().unwrap()).collect();
    assert!(
        peers.len() <= 2,
        "30 mails over {} connections: {peers:?}",
        peers.len()
    );
    let ids: std::collections::BTreeSet<&str> = mails
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 30, "each mail once");
    let calls = settle(30, || hook.calls());
    assert_eq!(calls.len(), 30);
    let deliveries: std::collections::BTreeSet<&str> = calls
        .iter()
        .map(|c| c.header("X-Keyward-Delivery").unwrap())
        .collect();
    assert_eq!(deliveries.len(), 30, "each webhook call once");
    calls.iter().for_each(assert_signed);
    // The lines are in a stable order (by key), whatever order the sends finished in.
    let notified: Vec<&str> = (o.stderr.lines())
        .filter(|l| l.starts_with("notified alma-production/bulk-") && l.contains("by email"))
        .collect();
    let mut sorted = notified.clone();
    sorted.sort();
    assert_eq!(notified.len(), 30);
    assert_eq!(notified, sorted);

    let o = at(&r, 0.1, &["expiring", "--notify"]);
    assert_eq!(o.code, 0, "{}", o.all());
    apply_at(&r, 0.2);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(smtp.messages().len(), 30, "nothing sent twice");
    assert_eq!(hook.calls().len(), 30, "nothing sent twice");
}

/// A webhook answering 503 is tried again (up to 3 tries, each signed afresh with the same
/// id); one answering 400 is not; one answering 503 every time is reported after 3 tries.
#[test]
fn a_webhook_call_is_retried_after_a_5xx_but_not_after_a_4xx() {
    let hook_port = free_port();
    let tries = std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new());
    let hook = Hook::start_with(hook_port, move |_, call| {
        let key = call.json()["key"].as_str().unwrap_or_default().to_string();
        let mut tries = tries.lock().unwrap();
        let n = tries.entry(key.clone()).or_default();
        *n += 1;
        match key.as_str() {
            "flaky" if *n <= 2 => 503,
            "refused" => 400,
            "down" => 503,
            _ => 200,
        }
    });
    let keys = "\
keys:
  - name: flaky
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
  - name: refused
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
  - name: down
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
";
    let r = repo_with_webhook(keys, hook_port);
    let o = apply_at(&r, 0.0);
    assert!(
        o.stderr
            .contains("notified alma-production/flaky (created) by webhook"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("warning: webhook notification about alma-production/refused (created) not sent via webhook")
            && o.stderr.contains("the receiver answered 400 Bad Request\n"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr
            .contains("the receiver answered 503 Service Unavailable (3 tries)"),
        "{}",
        o.stderr
    );
    let calls = hook.calls();
    let of = |key: &str| -> Vec<&Call> {
        calls
            .iter()
            .filter(|c| c.json()["key"].as_str() == Some(key))
            .collect()
    };
    assert_eq!(of("flaky").len(), 3, "503, 503, then 200");
    assert_eq!(of("refused").len(), 1, "a 4xx is not retried");
    assert_eq!(of("down").len(), 3, "at most 3 tries");
    for c in of("flaky") {
        assert_signed(c);
        assert_eq!(
            c.header("X-Keyward-Delivery"),
            of("flaky")[0].header("X-Keyward-Delivery")
        );
    }
}

/// A webhook answering 429 is tried again after the wait its `Retry-After` asks for (1 s,
/// not the usual 250 ms), and a receiver asking for a day is waited on for at most 5 s
/// (`MAX_ASKED_WAIT`): the apply does not hang on it.
#[test]
fn a_webhook_429_is_retried_after_its_retry_after_capped_at_five_seconds() {
    let hook_port = free_port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        String,
        Vec<Instant>,
    >::new()));
    let seen_by_hook = seen.clone();
    let hook = Hook::start_answering(hook_port, move |_, call| {
        let key = call.json()["key"].as_str().unwrap_or_default().to_string();
        let mut seen = seen_by_hook.lock().unwrap();
        let times = seen.entry(key.clone()).or_default();
        times.push(Instant::now());
        match (key.as_str(), times.len()) {
            ("polite", 1) => (429, Some("1".to_string())),
            ("greedy", 1) => (429, Some("86400".to_string())),
            _ => (200, None),
        }
    });
    let keys = "\
keys:
  - name: polite
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
  - name: greedy
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
";
    let r = repo_with_webhook(keys, hook_port);
    let started = Instant::now();
    let o = apply_at(&r, 0.0);
    let took = started.elapsed();
    for key in ["polite", "greedy"] {
        assert!(
            o.stderr.contains(&format!(
                "notified alma-production/{key} (created) by webhook"
            )),
            "{}",
            o.stderr
        );
    }
    let seen = seen.lock().unwrap();
    let gap = |key: &str| {
        let t = &seen[key];
        assert_eq!(t.len(), 2, "{key}: a 429, then a 200");
        t[1] - t[0]
    };
    assert!(
        gap("polite") >= Duration::from_millis(950),
        "{:?}",
        gap("polite")
    );
    assert!(
        gap("greedy") >= Duration::from_millis(4_900),
        "{:?}",
        gap("greedy")
    );
    assert!(
        took < Duration::from_secs(60),
        "a Retry-After of a day held the apply for {took:?}"
    );
    assert_eq!(hook.calls().len(), 4);
}

/// At a terminal the sends show a progress bar; with NO_COLOR (and off a terminal, as in
/// every other test here) only the usual lines.
#[test]
fn a_progress_bar_shows_the_sends_at_a_terminal_only() {
    let hook_port = free_port();
    let _hook = Hook::start(hook_port);
    let env = |r: &Repo, no_color: &str| {
        let mut env = r.env.clone();
        env.extend([
            ("KEYWARD_NOW".to_string(), t(0.0)),
            ("KW_TEST_HOOK_SECRET".to_string(), HOOK_SECRET.to_string()),
            ("NO_COLOR".to_string(), no_color.to_string()),
        ]);
        env
    };
    let r = repo_with_webhook(&many_keys("bar", 12), hook_port);
    let mut term = Terminal::spawn(r.root(), &["apply", "--auto-approve"], &env(&r, ""));
    term.expect("Notifications: 12 sent, 0 not sent.");
    assert_eq!(term.wait(), 0, "{}", term.transcript());
    assert!(
        term.transcript().contains("/12 notifications"),
        "{}",
        term.transcript()
    );

    let r = repo_with_webhook(&many_keys("plain", 12), hook_port);
    let mut term = Terminal::spawn(r.root(), &["apply", "--auto-approve"], &env(&r, "1"));
    term.expect("Notifications: 12 sent, 0 not sent.");
    assert_eq!(term.wait(), 0, "{}", term.transcript());
    assert!(
        !term.transcript().contains("notifications"),
        "{}",
        term.transcript()
    );
}

/// `tls: tls` (port 465 style): keyward opens the TLS session itself (rustls, the platform
/// verifier: here the test CA through SSL_CERT_FILE) before the SMTP greeting; a server
/// whose certificate another CA signed is refused, the one the trusted CA signed gets the
/// mails, several over one connection.
#[test]
fn email_over_implicit_tls_is_verified_and_reuses_its_connection() {
    if !smtp_server_available() || !needs::tool(&needs::OPENSSL) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(certs.path(), "good");
    let (other_ca, _, _) = make_certs(certs.path(), "other");
    let smtp = Smtp::start_implicit_tls(&cert, &key);
    let r = Repo::new(&many_keys("tls", 6));
    let path = r.root().join("keyward.yaml");
    let mut cfg = std::fs::read_to_string(&path).unwrap();
    cfg.push_str(&format!(
        "notify:\n  email:\n    host: localhost\n    port: {}\n    tls: tls\n    username: {SMTP_USER}\n    password_env: KW_TEST_SMTP_PASSWORD\n    from: keyward@example.edu\n    connections: 1\n",
        smtp.port
    ));
    std::fs::write(&path, cfg).unwrap();
    let run = |day: &str, trusted: &Path, args: &[&str]| {
        r.run_with(
            args,
            &[
                ("KEYWARD_NOW", day),
                ("KW_TEST_SMTP_PASSWORD", SMTP_PASSWORD),
                ("SSL_CERT_FILE", trusted.to_str().unwrap()),
            ],
            None,
        )
    };
    let o = run(&t(0.0), &other_ca, &["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stderr.contains(
            "email notification about alma-production/tls-00 (created) not sent via smtp localhost:"
        ) && o.stderr.to_lowercase().contains("certificate"),
        "{}",
        o.stderr
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(smtp.messages().is_empty());
    let o = run(&t(0.1), &ca, &["expiring", "--notify"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let mails = settle(6, || smtp.messages());
    assert_eq!(mails.len(), 6, "{}", o.all());
    assert!(
        mails
            .iter()
            .all(|m| m["tls"] == true && m["login"] == SMTP_USER)
    );
    let peers: std::collections::BTreeSet<&str> =
        mails.iter().map(|m| m["peer"].as_str().unwrap()).collect();
    assert_eq!(peers.len(), 1, "6 mails over one connection: {peers:?}");
}
