//! The apply lock, through the real binary on real SQLite stores (and `keyward serve`): a
//! lock a SIGKILLed apply left (its process a zombie its parent has not reaped, or its pid
//! now someone else's) is released by the next apply on the same host and boot; a lock
//! taken on another host or boot never is (exit 3, naming the `force-unlock` to run). The
//! lease is renewed while apply runs, taken only after the confirmation, and every change
//! carries it: an apply that was stopped (SIGSTOP) until its lease expired and another
//! apply took the stores is refused when it continues (issue 15 item 5).

mod common;
mod serve_common;
mod terminal_common;
use common::Repo;
use keyward::store::{Store, StoreError};
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
  - name: course-sync
    store: alma-production
    owner: rkumar
    scopes: [courses:read]
  - name: reports
    store: alma-sandbox
    owner: asmith
    scopes: [analytics:read]
";

/// An apply started in the background with `env`, once it holds the locks (its plan is
/// printed after they are taken).
fn start_apply(r: &Repo, env: &[(&str, &str)]) -> std::process::Child {
    let mut c = background_apply(r, env);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().expect("spawn keyward apply");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = stdout.read_line(&mut line).unwrap();
        assert!(n > 0, "the background apply ended early: {seen}");
        seen.push_str(&line);
        if line.starts_with("Plan:") {
            break;
        }
    }
    // Keep reading (and dropping) the rest so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in stdout.lines() {});
    child
}

/// The state letter of `/proc/PID/stat` (after the command name's last `)`).
fn proc_state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

fn store(r: &Repo, name: &str) -> std::sync::Arc<dyn Store> {
    r.open_stores()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
        .expect("store exists")
}

#[test]
fn a_sigkilled_apply_left_a_zombie_and_the_next_apply_releases_its_lock() {
    if !std::path::Path::new("/proc/self/stat").exists() {
        eprintln!("skipped: no /proc here");
        return;
    }
    let r = Repo::new(KEYS);
    let mut first = start_apply(&r, &[("KEYWARD_FAILPOINT", "between-keys:sleep=60000")]);
    let pid = first.id();
    // SIGKILL, and do not reap it: its /proc entry stays, as a zombie.
    first.kill().expect("SIGKILL the first apply");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while proc_state(pid) != Some('Z') {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed apply never became a zombie: {:?}",
            proc_state(pid)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    let o = r.run_with(
        &["apply", "--auto-approve"],
        &[("KEYWARD_LOG", "warn")],
        None,
    );
    assert_eq!(
        o.code,
        0,
        "the re-apply is not blocked by a dead lock: {}",
        o.all()
    );
    assert!(
        o.stderr.contains("releasing a stale apply lock") && o.stderr.contains("zombie"),
        "says why it released the lock: {}",
        o.stderr
    );
    assert_eq!(
        proc_state(pid),
        Some('Z'),
        "still unreaped during the re-apply"
    );
    first.wait().expect("reap");
    r.check_invariants(
        "after the killed apply and the re-apply",
        &[
            ("alma-production", "ill-lookup", 1),
            ("alma-production", "course-sync", 1),
            ("alma-sandbox", "reports", 1),
        ],
    );
    r.assert_plan_empty("after the re-apply");
}

#[test]
fn a_lock_whose_pid_now_runs_another_process_is_released() {
    if keyward::holder::boot_id().is_none() {
        eprintln!("skipped: no /proc/sys/kernel/random/boot_id here");
        return;
    }
    let r = Repo::new(KEYS);
    assert_eq!(r.run(&["apply", "--auto-approve"]).code, 0);
    r.write_keys(&KEYS.replace("[bibs:read]", "[bibs:read, users:read]"));
    // This test's own pid (alive), but a start time it never had: the apply that took the
    // lock died and the pid was handed on.
    let holder = format!(
        "ci@{} (pid {}, start 1, boot {})",
        keyward::holder::local_hostname(),
        std::process::id(),
        keyward::holder::boot_id().unwrap()
    );
    let s = store(&r, "alma-production");
    let rt = common::runtime();
    rt.block_on(s.lock(&holder, chrono::Duration::minutes(15)))
        .expect("lock");
    let o = r.run_with(
        &["apply", "--auto-approve"],
        &[("KEYWARD_LOG", "warn")],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(o.stderr.contains("another process"), "{}", o.stderr);
    r.assert_plan_empty("after the apply");
}

#[test]
fn a_lock_from_another_host_or_boot_is_never_released_automatically() {
    let r = Repo::new(KEYS);
    assert_eq!(r.run(&["apply", "--auto-approve"]).code, 0);
    r.write_keys(&KEYS.replace("[bibs:read]", "[bibs:read, users:read]"));
    let host = keyward::holder::local_hostname();
    let s = store(&r, "alma-production");
    let rt = common::runtime();
    for (holder, why) in [
        (
            "ci@runner-7.elsewhere (pid 1, start 1, boot 0f0e0d0c-0000-4000-8000-000000000001)"
                .to_string(),
            "another host",
        ),
        (
            // A pid that cannot exist here, but on this host before a restart.
            format!("ci@{host} (pid 4194999, start 1, boot 0f0e0d0c-0000-4000-8000-000000000002)"),
            "restarted",
        ),
    ] {
        let lease = rt
            .block_on(s.lock(&holder, chrono::Duration::minutes(15)))
            .expect("lock");
        let o = r.run(&["apply", "--auto-approve"]);
        assert_eq!(o.code, 3, "{holder}: {}", o.all());
        assert!(o.stderr.contains(why), "{holder}: {}", o.stderr);
        assert!(
            o.stderr.contains(&format!(
                "keyward force-unlock --store alma-production {}",
                lease.id
            )),
            "{holder}: names the command: {}",
            o.stderr
        );
        // The lock is still the foreign one.
        match rt.block_on(s.lock("probe", chrono::Duration::minutes(1))) {
            Err(StoreError::Locked { id, .. }) => assert_eq!(id, lease.id),
            other => panic!("{holder}: the lock was released: {other:?}"),
        }
        let u = r.run(&["force-unlock", "--store", "alma-production", &lease.id]);
        assert_eq!(u.code, 0, "{}", u.all());
    }
    assert_eq!(r.run(&["apply", "--auto-approve"]).code, 0);
    r.assert_plan_empty("after unlocking by hand");
}

/// A background apply with `env`, its stdout and stderr in `log`.
fn spawn_logged(r: &Repo, env: &[(&str, &str)], log: &Path) -> std::process::Child {
    let out = std::fs::File::create(log).expect("apply log");
    let err = out.try_clone().expect("dup");
    let mut c = background_apply(r, env);
    c.env("KEYWARD_LOG", "warn").stdout(out).stderr(err);
    c.spawn().expect("spawn keyward apply")
}

/// `keyward apply --auto-approve --concurrency 1` on `r` with the repository's and `env`'s
/// variables, no terminal.
fn background_apply(r: &Repo, env: &[(&str, &str)]) -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("keyward"));
    c.arg("-C")
        .arg(r.root())
        .args(["apply", "--auto-approve", "--concurrency", "1"])
        .env_remove("KEYWARD_FAILPOINT")
        .env("HOME", r.root().join("home"))
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null());
    for (k, v) in r
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(env.iter().copied())
    {
        c.env(k, v);
    }
    c
}

fn signal(child: &std::process::Child, sig: &str) {
    let o = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .output()
        .expect("run kill");
    assert!(o.status.success(), "kill {sig}: {o:?}");
}

/// Wait (bounded) for `child` to exit; its code.
fn wait_exit(child: &mut std::process::Child, log: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "apply hung: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait (bounded) until `done` holds, polling.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const ALL_ONCE: [(&str, &str, usize); 3] = [
    ("alma-production", "ill-lookup", 1),
    ("alma-production", "course-sync", 1),
    ("alma-sandbox", "reports", 1),
];

/// The scenario of issue 15 item 5 on the stores `open` gives: a first apply (lease ttl 2 s,
/// a 1.5 s pause before each store's changes, renewing meanwhile) is SIGSTOPped once it has
/// created one store's keys; its leases expire; a second apply takes both stores and
/// finishes; the first is continued: its next change is refused, it exits non-zero saying
/// its lease was lost, and the invariants hold (one key per spec key, each delivered).
fn stopped_apply_is_overtaken(r: &Repo, open: &dyn Fn() -> Vec<(String, Arc<dyn Store>)>) {
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("first.log");
    let mut first = spawn_logged(
        r,
        &[
            ("KEYWARD_LEASE_TTL", "2s"),
            ("KEYWARD_FAILPOINT", "between-keys:sleep=1500"),
        ],
        &log,
    );
    let per_store = || {
        let keys = common::live_keys_in(&open());
        ["alma-production", "alma-sandbox"].map(|s| keys.iter().filter(|(n, _)| n == s).count())
    };
    wait_until("the first apply created one store's keys", || {
        per_store().iter().any(|n| *n > 0)
    });
    signal(&first, "-STOP");
    let done_before = per_store();
    assert!(
        done_before.contains(&0),
        "stopped before the second store: {done_before:?}"
    );
    // No renewal while stopped: the 2 s leases expire.
    std::thread::sleep(Duration::from_millis(3500));
    let second = r.run_with(
        &["apply", "--auto-approve"],
        &[("KEYWARD_LOG", "warn")],
        None,
    );
    assert_eq!(
        second.code,
        0,
        "the second apply takes the expired leases: {}",
        second.all()
    );
    signal(&first, "-CONT");
    let code = wait_exit(&mut first, &log);
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert_ne!(code, 0, "the overtaken apply must fail: {said}");
    assert!(
        said.contains("no longer held") || said.contains("was lost"),
        "says its lease was lost: {said}"
    );
    assert!(
        said.contains("error: the apply lease on store `alma-"),
        "names the store: {said}"
    );
    r.check_invariants_in("after the overtaken apply", &ALL_ONCE, &open());
    assert_eq!(per_store(), [2, 1], "no key created twice");
    r.assert_plan_empty("after both applies");
}

#[test]
fn an_apply_stopped_until_its_lease_expired_is_refused_when_it_continues() {
    let r = Repo::new(KEYS);
    stopped_apply_is_overtaken(&r, &|| r.open_stores());
}

/// `keyward serve` on its own SQLite database for each store; the repository's stores are
/// `http` stores on them. Returns the servers (kept running) and a way to open the stores
/// as the binary does.
fn served(r: &mut Repo, dirs: &[&Path; 2]) -> (Vec<serve_common::Server>, Vec<(String, String)>) {
    let mut servers = Vec::new();
    let mut stores = Vec::new();
    let mut yaml = String::from("version: 1\nstores:\n");
    for (dir, (name, env)) in dirs.iter().zip([
        ("alma-production", "production"),
        ("alma-sandbox", "sandbox"),
    ]) {
        let token = serve_common::make_token(&dir.join("tokens.yaml"), "apply", "write");
        let srv = serve_common::Server::start(dir, &[("KEYWARD_LOG", "warn")]);
        let var = format!("KEYWARD_TOKEN_{}", env.to_uppercase());
        yaml.push_str(&format!(
            "  {name}: {{ kind: http, url: \"{}\", token_env: {var}, environment: {env} }}\n",
            srv.url
        ));
        r.env.push((var, token.clone()));
        stores.push((srv.url.clone(), token));
        servers.push(srv);
    }
    yaml.push_str("policy:\n  default_lifetime: 365d\n");
    std::fs::write(r.root().join("keyward.yaml"), yaml).expect("keyward.yaml");
    (servers, stores)
}

fn http_stores(at: &[(String, String)]) -> Vec<(String, Arc<dyn Store>)> {
    serve_common::install_crypto();
    ["alma-production", "alma-sandbox"]
        .iter()
        .zip(at)
        .map(|(name, (url, token))| {
            let s = keyward::store::http::HttpStore::new(
                name,
                url,
                Some(secrecy::SecretString::from(token.clone())),
                "test",
            )
            .expect("http store");
            (name.to_string(), Arc::new(s) as Arc<dyn Store>)
        })
        .collect()
}

#[test]
fn through_serve_an_apply_stopped_until_its_lease_expired_is_refused_when_it_continues() {
    let mut r = Repo::new(KEYS);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (servers, at) = served(&mut r, &[a.path(), b.path()]);
    stopped_apply_is_overtaken(&r, &|| http_stores(&at));
    for s in servers {
        let log = s.stop();
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// The lease row of an embedded store: (id, expires_at), if one is held.
fn lock_row(db: &Path) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()?;
    c.query_row(
        "SELECT id, expires_at FROM locks WHERE slot = 1",
        [],
        |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
    )
    .ok()
    .map(|(id, t)| (id, t.parse().expect("an RFC 3339 expiry")))
}

#[test]
fn a_slow_apply_keeps_renewing_its_lease_and_is_not_overtaken() {
    let r = Repo::new(KEYS);
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("slow.log");
    // Each store's changes wait 3 s: longer than the 2 s ttl, twice.
    let mut slow = spawn_logged(
        &r,
        &[
            ("KEYWARD_LEASE_TTL", "2s"),
            ("KEYWARD_FAILPOINT", "between-keys:sleep=3000"),
        ],
        &log,
    );
    let db = r.root().join(".keyward/prod.db");
    wait_until("the slow apply holds the lease", || lock_row(&db).is_some());
    let (id, first_expiry) = lock_row(&db).expect("held");
    let ttl = chrono::Duration::seconds(2);
    assert!(
        first_expiry <= chrono::Utc::now() + ttl + chrono::Duration::milliseconds(500),
        "the lease lasts its ttl, not 15 minutes: {first_expiry}"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let (still, later_expiry) = lock_row(&db).expect("still held past its first ttl");
    assert_eq!(still, id, "the same lease, renewed");
    assert!(
        later_expiry > first_expiry,
        "{later_expiry} > {first_expiry}"
    );
    assert!(later_expiry > chrono::Utc::now(), "renewed ahead of now");
    let second = r.run(&["apply", "--auto-approve"]);
    assert_eq!(
        second.code,
        3,
        "refused while the slow apply renews: {}",
        second.all()
    );
    assert!(second.stderr.contains("locked by"), "{}", second.stderr);
    let code = wait_exit(&mut slow, &log);
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, 0, "the slow apply finishes: {said}");
    assert!(!said.contains("lost"), "{said}");
    assert!(lock_row(&db).is_none(), "released at the end");
    r.check_invariants("after the slow apply", &ALL_ONCE);
    r.assert_plan_empty("after the slow apply");
}

#[test]
fn the_lease_is_taken_only_after_the_confirmation() {
    let r = Repo::new(KEYS);
    // Make the store files with a first apply, so their lock rows can be read.
    assert_eq!(
        r.run(&[
            "apply",
            "--auto-approve",
            "--only",
            "alma-production/ill-lookup",
            "--only",
            "alma-sandbox/reports"
        ])
        .code,
        0
    );
    let dbs = [".keyward/prod.db", ".keyward/sbx.db"].map(|p| r.root().join(p));
    let mut term = terminal_common::Terminal::spawn(r.root(), &["apply"], &r.env);
    term.expect("Enter a value: ");
    for db in &dbs {
        assert_eq!(
            lock_row(db),
            None,
            "no lease while the prompt waits: {}",
            db.display()
        );
    }
    // Another apply runs meanwhile, and applies the same change.
    let other = r.run(&["apply", "--auto-approve"]);
    assert_eq!(
        other.code,
        0,
        "another apply runs while the prompt waits: {}",
        other.all()
    );
    term.send("yes");
    let code = term.wait();
    let shown = term.transcript();
    assert_eq!(code, 3, "the confirmed plan is stale now: {shown}");
    assert!(
        shown.contains("the stores changed while the plan waited for confirmation")
            && shown.contains("course-sync")
            && shown.contains("nothing was changed"),
        "{shown}"
    );
    r.check_invariants("after the confirmed but stale apply", &ALL_ONCE);
    // Nothing else in the way: confirmed, it takes the lease and applies.
    r.write_keys(&KEYS.replace("[bibs:read]", "[bibs:read, users:read]"));
    let mut term = terminal_common::Terminal::spawn(r.root(), &["apply"], &r.env);
    term.expect("Enter a value: ");
    assert_eq!(lock_row(&dbs[0]), None);
    term.send("yes");
    assert_eq!(term.wait(), 0, "{}", term.transcript());
    assert!(
        term.transcript().contains("Apply complete"),
        "{}",
        term.transcript()
    );
    r.assert_plan_empty("after the confirmed apply");
}
