//! The paper cuts a new user hit in their first hour (issue 16 §4), each run the way they
//! ran into it: the real binary on a temp key repository (real SQLite stores, real git,
//! real age and SSH identities, a pseudo-terminal for the passphrase prompt).

mod common;
mod needs;

use common::{Out, Repo};
use keyward::store::sqlite::SqliteStore;
use keyward::store::{Actor, KeyPatch, KeyWrite, ListFilter, Store, list_all};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NOW: &str = "2026-12-01T09:00:00Z";

fn at(r: &Repo, args: &[&str]) -> Out {
    r.run_with(args, &[("KEYWARD_NOW", NOW)], None)
}

fn ok(r: &Repo, args: &[&str]) -> Out {
    let o = at(r, args);
    assert_eq!(o.code, 0, "keyward {args:?}:\n{}", o.all());
    o
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn keygen_takes_the_path_as_an_argument_or_after_o() {
    let dir = tempfile::tempdir().unwrap();
    let r = Repo::new("keys: []\n");
    for (args, file) in [
        (vec!["keygen"], "positional.txt"),
        (vec!["keygen", "-o"], "flag.txt"),
    ] {
        let path = dir.path().join(file);
        let mut a = args.clone();
        a.push(path.to_str().unwrap());
        let o = ok(&r, &a);
        assert!(o.stdout.trim().starts_with("age1"), "{}", o.all());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("AGE-SECRET-KEY-1"), "{a:?} wrote no identity");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{a:?}");
        assert!(
            !o.all().contains("AGE-SECRET-KEY"),
            "the private key was printed"
        );
    }
    // Both at once is ambiguous: refused, nothing written.
    let a = dir.path().join("a.txt");
    let b = dir.path().join("b.txt");
    let o = at(
        &r,
        &["keygen", a.to_str().unwrap(), "-o", b.to_str().unwrap()],
    );
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(!a.exists() && !b.exists());
}

#[test]
fn init_makes_a_git_repository_or_says_which_one_it_is_in() {
    let dir = tempfile::tempdir().unwrap();
    let r = Repo::new("keys: []\n");
    let new = dir.path().join("my-keys");
    let o = ok(&r, &["init", new.to_str().unwrap()]);
    assert!(
        o.stderr.contains("initialised a git repository in") && o.stderr.contains("(branch main)"),
        "{}",
        o.stderr
    );
    let repo = git2::Repository::open(&new).expect("init made a git repository");
    assert_eq!(
        repo.find_reference("HEAD")
            .unwrap()
            .symbolic_target()
            .unwrap(),
        Some("refs/heads/main")
    );
    // Before the first commit, the plan says so (not "not a git repository").
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["plan", "--no-color"])
        .current_dir(&new)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let o = Out {
        code: 0,
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    assert!(
        o.stdout
            .starts_with("Desired revision: working tree (nothing committed yet)\n"),
        "{}",
        o.stdout
    );
    // A key repository inside that one: no nested repository, and the output says where
    // the files belong.
    let inner = new.join("team-keys");
    let o = ok(&r, &["init", inner.to_str().unwrap()]);
    assert!(!inner.join(".git").exists(), "a nested repository");
    let top = new.canonicalize().unwrap();
    assert!(
        o.stderr.contains(&format!(
            "is inside the git repository {}; commit the files there",
            top.display()
        )),
        "{}",
        o.stderr
    );
}

/// `keyward keys`: every column starts where its heading does, however long the names.
#[test]
fn the_keys_table_stays_aligned_with_long_names() {
    let r = Repo::new(
        "\
keys:
  - { name: a, store: alma-sandbox, owner: jdoe, scopes: [bibs:read] }
  - { name: illiad-barcode-lookup-for-the-interlibrary-loan-office, store: alma-sandbox, owner: asmith, scopes: [bibs:read, users:read] }
  - { name: mid-length-name, store: alma-production, owner: rkumar, scopes: [analytics:read] }
",
    );
    ok(&r, &["apply", "--auto-approve"]);
    let o = ok(&r, &["keys"]);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", o.stdout);
    let header = lines[0];
    let starts: Vec<usize> = ["NAME", "ID", "OWNER", "STATUS", "EXPIRES", "GEN", "SCOPES"]
        .iter()
        .map(|h| header.find(&format!(" {h}")).expect("heading") + 1)
        .collect();
    for line in &lines[1..] {
        for (col, &s) in starts.iter().enumerate() {
            assert!(
                line.len() > s && &line[s - 1..s] == " " && &line[s..s + 1] != " ",
                "column {col} does not start at {s}:\n{}",
                o.stdout
            );
        }
    }
}

/// A recipient added to several keys (here: a new member of the team that receives them)
/// gets one note, naming the keys, not one per key.
#[test]
fn a_recipient_waiting_for_the_next_rotation_is_one_note() {
    let keys = "\
keys:
  - { name: one, store: alma-sandbox, owner: jdoe, scopes: [bibs:read], recipients: [team:ill-staff] }
  - { name: two, store: alma-sandbox, owner: jdoe, scopes: [bibs:read], recipients: [team:ill-staff] }
  - { name: three, store: alma-production, owner: jdoe, scopes: [bibs:read], recipients: [team:ill-staff] }
  - { name: solo, store: alma-sandbox, owner: jdoe, scopes: [bibs:read] }
";
    let r = Repo::new(keys);
    ok(&r, &["apply", "--auto-approve"]);
    let people = std::fs::read_to_string(r.root().join("people.yaml")).unwrap();
    let people = people.replace("members: [jdoe, asmith]", "members: [jdoe, asmith, rkumar]");
    std::fs::write(r.root().join("people.yaml"), people).unwrap();
    r.write_keys(&keys.replace(
        "name: solo, store: alma-sandbox, owner: jdoe, scopes: [bibs:read]",
        "name: solo, store: alma-sandbox, owner: jdoe, scopes: [bibs:read], recipients: [asmith]",
    ));
    let o = ok(&r, &["plan"]);
    assert_eq!(
        o.stdout.matches("rkumar will receive").count(),
        1,
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains(
            "rkumar will receive the secrets of 3 keys at their next rotation: \
             alma-production/three, alma-sandbox/one, alma-sandbox/two"
        ),
        "{}",
        o.stdout
    );
    // One key: the note is on that key, as before.
    assert!(
        o.stdout
            .contains("  - alma-sandbox/solo: asmith will receive the secret at the next rotation"),
        "{}",
        o.stdout
    );
    let md = ok(&r, &["plan", "--format", "markdown"]);
    assert_eq!(
        md.stdout.matches("rkumar will receive").count(),
        1,
        "{}",
        md.stdout
    );
}

/// The question the terminal shows for a passphrase-protected SSH key, asked on a real
/// pseudo-terminal that is the process's controlling terminal (`setsid -c`).
#[test]
fn the_passphrase_prompt_asks_once_in_plain_words() {
    if !needs::tool(&needs::SSH_KEYGEN) || !needs::tool(&needs::SETSID) {
        return;
    }
    let r = Repo::new(
        "keys:\n  - { name: ill, store: alma-sandbox, owner: jdoe, scopes: [bibs:read] }\n",
    );
    let key = r.root().join("home/.ssh/id_ed25519");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    let st = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "correct horse",
            "-C",
            "jdoe",
            "-f",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let people = std::fs::read_to_string(r.root().join("people.yaml")).unwrap();
    let jdoe_age = people
        .lines()
        .skip_while(|l| !l.starts_with("  jdoe:"))
        .find(|l| l.contains("recipients:"))
        .unwrap()
        .to_string();
    let people = people.replace(
        &jdoe_age,
        &format!("    recipients: [\"{}\"]", public.trim()),
    );
    std::fs::write(r.root().join("people.yaml"), people).unwrap();
    ok(&r, &["apply", "--auto-approve"]);

    let out = r.root().join("ill.env");
    let mut t = Terminal::spawn(
        r.root(),
        &[
            "secret",
            "ill",
            "--store",
            "alma-sandbox",
            "-i",
            key.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    t.expect(&format!("Passphrase for SSH key {}: ", key.display()));
    // The prompt is written before echo is switched off: type only once it is.
    t.wait_for_no_echo();
    t.send("correct horse");
    assert_eq!(t.wait(), 0, "{}", t.transcript());
    let shown = t.transcript();
    assert_eq!(shown.matches("Passphrase for").count(), 1, "{shown}");
    assert!(
        !shown.contains("correct horse"),
        "the passphrase was echoed"
    );
    assert!(std::fs::read_to_string(&out).unwrap().starts_with("kw_"));
}

#[test]
fn request_on_a_branch_says_to_commit_there() {
    let r = Repo::new("keys: []\n");
    r.git_init();
    let args = [
        "request",
        "--name",
        "reports",
        "--purpose",
        "Monthly usage reports",
        "--store",
        "alma-sandbox",
        "--owner",
        "jdoe",
        "--scope",
        "analytics:read",
        "--lifetime",
        "90d",
        "--no-input",
    ];
    // On the default branch: a new branch is the first step.
    let o = ok(&r, &args);
    assert!(
        o.stdout.contains("git switch -c request/reports\n"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("git push -u origin request/reports\n"));
    std::fs::remove_file(r.root().join("keys/reports.yaml")).unwrap();
    // Already on a topic branch: commit and push that one.
    r.git(&["switch", "-q", "-c", "reports-key"]);
    let o = ok(&r, &args);
    assert!(!o.stdout.contains("git switch"), "{}", o.stdout);
    assert!(
        o.stdout.contains(
            "git add keys/reports.yaml\ngit commit -m \"Request API key reports\"\ngit push -u origin reports-key\n"
        ),
        "{}",
        o.stdout
    );
}

/// A person removed from people.yaml while their keys move to a new owner: the summary
/// counts the keys they could read that get a new secret, and no key "needs a new owner"
/// once the plan gives each one.
#[test]
fn the_leaver_summary_counts_what_the_plan_does() {
    let keys = "\
keys:
  - { name: read-by-rk, store: alma-sandbox, owner: jdoe, scopes: [bibs:read], recipients: [rkumar] }
  - { name: owned-by-rk, store: alma-sandbox, owner: rkumar, scopes: [bibs:read] }
  - { name: not-theirs, store: alma-sandbox, owner: jdoe, scopes: [bibs:read] }
";
    let r = Repo::new(keys);
    ok(&r, &["apply", "--auto-approve"]);
    let people = std::fs::read_to_string(r.root().join("people.yaml")).unwrap();
    let start = people.find("  rkumar:").unwrap();
    let end = people[start..].find("teams:").unwrap() + start;
    std::fs::write(
        r.root().join("people.yaml"),
        format!("{}{}", &people[..start], &people[end..]),
    )
    .unwrap();
    r.write_keys(
        &keys
            .replace(", recipients: [rkumar]", "")
            .replace("owner: rkumar", "owner: asmith"),
    );
    let o = at(&r, &["plan", "--format", "json"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let plan: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let a = &plan["access_removed"];
    assert_eq!(a.as_array().map(Vec::len), Some(1), "{a}");
    assert_eq!(a[0]["id"], "rkumar");
    assert_eq!(
        a[0]["rotated"], 2,
        "read-by-rk rotated, owned-by-rk replaced: {a}"
    );
    assert_eq!(
        a[0]["reassigned"], 1,
        "the plan gives owned-by-rk a new owner: {a}"
    );
    assert_eq!(
        a[0]["need_owner"], 0,
        "no key is left without an owner: {a}"
    );
    let o = ok(&r, &["plan"]);
    assert!(
        o.stdout
            .contains("access removed for rkumar: 2 key(s) they could read get a new secret, 1 key(s) they owned move to a new owner\n"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("need a new owner"), "{}", o.stdout);
}

/// A rotation says until when the previous secret keeps working.
#[test]
fn a_rotation_shows_until_when_the_previous_secret_works() {
    let keys = "\
keys:
  - name: ill
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
    rotation: { every: 90d, grace: 7d, generation: 1 }
";
    let r = Repo::new(keys);
    ok(&r, &["apply", "--auto-approve"]);
    r.write_keys(&keys.replace("generation: 1", "generation: 2"));
    let line = "previous secret valid until 2026-12-08 09:00 UTC (grace 7d from the apply)";
    let o = ok(&r, &["plan"]);
    assert!(
        o.stdout.contains(&format!("        {line}\n")),
        "{}",
        o.stdout
    );
    let md = ok(&r, &["plan", "--format", "markdown"]);
    assert!(md.stdout.contains(&format!("- {line}\n")), "{}", md.stdout);
    let json = ok(&r, &["plan", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(plan["actions"][0]["grace"]["period"], "7d", "{plan}");
    assert_eq!(
        plan["actions"][0]["grace"]["previous_valid_until"],
        "2026-12-08T09:00:00Z"
    );
    // Apply keeps to it: the store's record of the previous secret ends then.
    ok(&r, &["apply", "--auto-approve"]);
}

/// A saved plan made stale by a change in the store names the key that moved.
#[test]
fn a_stale_saved_plan_names_the_keys_that_moved() {
    let keys = "\
keys:
  - { name: steady, store: alma-sandbox, owner: jdoe, scopes: [bibs:read] }
  - { name: edited, store: alma-sandbox, owner: jdoe, scopes: [bibs:read] }
";
    let r = Repo::new(keys);
    ok(&r, &["apply", "--auto-approve"]);
    r.write_keys(&keys.replace(
        "name: steady, store: alma-sandbox, owner: jdoe, scopes: [bibs:read]",
        "name: steady, store: alma-sandbox, owner: jdoe, scopes: [bibs:read, users:read]",
    ));
    let saved = r.root().join("plan.json");
    let saved = saved.to_str().unwrap();
    let o = at(&r, &["plan", "--out", saved, "--detailed-exitcode"]);
    assert_eq!(o.code, 2, "{}", o.all());
    // Someone edits `edited` in the store (a console, another tool) after the review.
    rt().block_on(async {
        let s = SqliteStore::open("alma-sandbox", &r.root().join(".keyward/sbx.db")).unwrap();
        let k = list_all(&s, &ListFilter::default())
            .await
            .unwrap()
            .into_iter()
            .find(|k| k.name == "edited")
            .unwrap();
        let patch = KeyPatch {
            purpose: Some(Some("edited in the console".into())),
            ..KeyPatch::default()
        };
        let who = Actor {
            who: "console:admin".into(),
            commit: None,
        };
        s.update(KeyWrite::new(&k.id, k.version, &who), patch)
            .await
            .unwrap();
    });
    let o = at(&r, &["apply", "--auto-approve", saved]);
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(o.stderr.contains("the saved plan is stale"), "{}", o.stderr);
    let named: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.contains("changed in the store"))
        .collect();
    assert_eq!(named.len(), 1, "{}", o.stderr);
    assert!(named[0].contains("edited (id "), "{}", o.stderr);
    assert!(named[0].contains("version"), "{}", o.stderr);
}

/// A saved plan made stale by an edit of the spec names the keys the edit touched (read
/// against the commit the plan was made from), not only the files.
#[test]
fn a_saved_plan_stale_by_a_spec_edit_names_the_keys() {
    let keys = "\
keys:
  - { name: steady, store: alma-sandbox, owner: jdoe, scopes: [bibs:read] }
  - { name: edited, store: alma-sandbox, owner: jdoe, scopes: [bibs:read] }
  - { name: dropped, store: alma-sandbox, owner: jdoe, scopes: [bibs:read] }
";
    let r = Repo::new(keys);
    r.git_init();
    let saved = r.root().join("plan.json");
    let saved = saved.to_str().unwrap();
    let o = at(&r, &["plan", "--out", saved, "--detailed-exitcode"]);
    assert_eq!(o.code, 2, "{}", o.all());
    // After the review someone edits one key, removes one and adds one (the lines move too,
    // which by itself is no change to `steady`).
    r.write_keys(
        "\
# reordered
keys:
  - { name: added, store: alma-sandbox, owner: jdoe, scopes: [bibs:read] }
  - { name: edited, store: alma-sandbox, owner: jdoe, scopes: [bibs:read, users:read] }
  - { name: steady, store: alma-sandbox, owner: jdoe, scopes: [bibs:read] }
",
    );
    let o = at(&r, &["apply", "--auto-approve", saved]);
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(o.stderr.contains("the saved plan is stale"), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("keys that differ from the reviewed plan (3):"),
        "{}",
        o.stderr
    );
    let named: Vec<&str> = o
        .stderr
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("alma-sandbox/"))
        .collect();
    assert_eq!(named.len(), 3, "{}", o.stderr);
    assert!(named[0].starts_with("alma-sandbox/added: added to the spec (keys/"));
    assert_eq!(named[1], "alma-sandbox/dropped: removed from the spec");
    assert!(
        named[2].starts_with("alma-sandbox/edited: edited (keys/"),
        "{}",
        named[2]
    );
    assert!(named[2].ends_with(":4)"), "{}", named[2]);
    assert!(!o.stderr.contains("steady"), "{}", o.stderr);
    // Nothing was applied: the store holds no key yet.
    assert!(r.live_keys().is_empty(), "{:?}", r.live_keys());
}

/// The real binary on a pseudo-terminal that is its controlling terminal.
struct Terminal {
    master: std::fs::File,
    seen: Arc<Mutex<Vec<u8>>>,
    child: std::process::Child,
}

impl Terminal {
    fn spawn(root: &Path, args: &[&str]) -> Terminal {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).expect("openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().expect("pts path"))
            .expect("open the terminal");
        let mut cmd = std::process::Command::new("setsid");
        cmd.arg("-c")
            .arg(env!("CARGO_BIN_EXE_keyward"))
            .arg("-C")
            .arg(root)
            .args(args)
            .env("HOME", root.join("home"))
            .env("NO_COLOR", "1")
            .env_remove("KEYWARD_AGE_IDENTITY")
            .env_remove("KEYWARD_AGE_IDENTITY_FILE")
            .env_remove("SOPS_AGE_KEY_FILE")
            .stdin(slave.try_clone().expect("dup"))
            .stdout(slave.try_clone().expect("dup"))
            .stderr(slave);
        let child = cmd.spawn().expect("spawn keyward");
        drop(cmd);
        let master = std::fs::File::from(master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().expect("dup master");
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            master,
            seen,
            child,
        }
    }

    fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("lock")).replace('\r', "")
    }

    fn expect(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.transcript().contains(text) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {text:?}; the terminal shows:\n{}",
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (bounded) until the program has switched the terminal's echo off.
    fn wait_for_no_echo(&self) {
        use rustix::termios::{LocalModes, tcgetattr};
        let deadline = Instant::now() + Duration::from_secs(30);
        while tcgetattr(&self.master)
            .expect("tcgetattr")
            .local_modes
            .contains(LocalModes::ECHO)
        {
            assert!(
                Instant::now() < deadline,
                "echo never went off; the terminal shows:\n{}",
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn send(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\n").as_bytes())
            .expect("type into the terminal");
    }

    fn wait(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "keyward did not exit; the terminal shows:\n{}",
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
