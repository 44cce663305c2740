//! The apply lock, through the real binary on real SQLite stores: a lock a SIGKILLed apply
//! left (its process a zombie its parent has not reaped, or its pid now someone else's) is
//! released by the next apply on the same host and boot; a lock taken on another host or
//! boot never is (exit 3, naming the `force-unlock` to run).

mod common;
use common::Repo;
use keyward::store::{Store, StoreError};
use std::io::BufRead;

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
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("keyward"));
    c.arg("-C")
        .arg(r.root())
        .args(["apply", "--auto-approve", "--concurrency", "1"])
        .env_remove("KEYWARD_FAILPOINT")
        .env("HOME", r.root().join("home"))
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
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
