//! `keyward request` as a requester meets it, on a temp copy of examples/library with the
//! real binary: with flags it writes a key file that `validate` accepts and `plan` creates
//! in each chosen store; a forbidden scope (everywhere or per environment) is refused with
//! its reason before anything is written; existing files and keys are never overwritten;
//! without a terminal a missing value names its flag. Interactively, driven through a
//! real pseudo-terminal, the same answers write the same file, and a forbidden scope typed
//! at the prompt is refused at once with the policy's reason.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A fixed "now" so the two modes of one request see the same clock.
const NOW: &str = "2026-11-22T00:00:00Z";

/// A copy of examples/library (keyward.yaml, people.yaml, keys/) with the schemas written
/// into its own schemas/, as `keyward init` leaves a repository.
fn library() -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/library");
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["keyward.yaml", "people.yaml"] {
        std::fs::copy(src.join(f), dir.path().join(f)).expect("copy");
    }
    std::fs::create_dir_all(dir.path().join("keys")).expect("keys");
    for e in std::fs::read_dir(src.join("keys")).expect("read keys") {
        let p = e.expect("entry").path();
        std::fs::copy(
            &p,
            dir.path().join("keys").join(p.file_name().expect("name")),
        )
        .expect("copy key file");
    }
    keyward::schema::write_all(&dir.path().join("schemas")).expect("schemas");
    dir
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn keyward(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
    c.arg("-C").arg(root);
    c.env("HOME", root.join("home"))
        .env("NO_COLOR", "1")
        .env("KEYWARD_NOW", NOW)
        .env_remove("KEYWARD_FAILPOINT");
    c
}

fn run(root: &Path, args: &[&str]) -> Out {
    let o = keyward(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run keyward");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The files under keys/, with their contents.
fn key_files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = walk(&root.join("keys"))
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

const ILL_FLAGS: &[&str] = &[
    "request",
    "--name",
    "ill-lookup",
    "--purpose",
    "ILLiad \"Alma Barcode Lookup\": patron and item lookups",
    "--env",
    "production",
    "--env",
    "sandbox",
    "--owner",
    "jdoe",
    "--scope",
    "bibs:read",
    "--scope",
    "users",
    "--lifetime",
    "180d",
    "--recipient",
    "team:ill-staff",
    "--ticket",
    "LSIS-2001",
];

#[test]
fn flags_write_a_valid_file_that_plan_creates_in_each_store() {
    let repo = library();
    let root = repo.path();
    let o = run(root, ILL_FLAGS);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let path = root.join("keys/ill-lookup.yaml");
    let text = std::fs::read_to_string(&path).expect("the key file was written");
    assert!(
        text.starts_with("# yaml-language-server: $schema=../schemas/keys.schema.json\n"),
        "{text}"
    );
    // Two stores make two keys, alike but for the store.
    let file: keyward::spec::raw::KeyFile = serde_yaml::from_str(&text).expect("YAML");
    let stores: Vec<&str> = file.keys.iter().map(|k| k.store.as_str()).collect();
    assert_eq!(stores, ["alma-production", "alma-sandbox"], "{text}");
    for k in &file.keys {
        assert_eq!(k.name, "ill-lookup");
        assert_eq!(k.owner, "jdoe");
        assert_eq!(k.scopes, ["bibs:read", "users:read"]);
        assert_eq!(k.lifetime.as_deref(), Some("180d"));
        assert_eq!(
            k.recipients.as_deref(),
            Some(&["team:ill-staff".to_string()][..])
        );
        assert_eq!(
            k.labels
                .as_ref()
                .and_then(|l| l.get("ticket"))
                .map(String::as_str),
            Some("LSIS-2001")
        );
        assert_eq!(
            k.purpose.as_deref(),
            Some("ILLiad \"Alma Barcode Lookup\": patron and item lookups")
        );
    }
    // The pull request description, on stdout.
    for want in [
        "## Key request: `ill-lookup`",
        "`alma-production` (production), `alma-sandbox` (sandbox)",
        "`bibs:read`, `users:read`",
        "lifetime 180d",
        "`team:ill-staff` (asmith, jdoe)",
        "LSIS-2001",
        "git add keys/ill-lookup.yaml",
        "git push",
        "open a pull request",
    ] {
        assert!(
            o.stdout.contains(want),
            "missing {want:?} in:\n{}",
            o.stdout
        );
    }
    assert!(
        o.stderr.contains("Wrote keys/ill-lookup.yaml (2 keys"),
        "{}",
        o.stderr
    );

    let v = run(root, &["validate"]);
    assert_eq!(v.code, 0, "{}\n{}", v.stdout, v.stderr);
    let p = run(root, &["plan", "--format", "json"]);
    assert_eq!(p.code, 0, "{}", p.stderr);
    let plan: serde_json::Value = serde_json::from_str(&p.stdout).expect("plan JSON");
    let mut created: Vec<String> = plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["action"] == "create" && a["name"] == "ill-lookup")
        .map(|a| a["store"].as_str().unwrap_or("").to_string())
        .collect();
    created.sort();
    assert_eq!(created, ["alma-production", "alma-sandbox"], "{}", p.stdout);
}

#[test]
fn a_forbidden_scope_is_refused_with_its_reason_and_nothing_is_written() {
    let repo = library();
    let root = repo.path();
    let before = key_files(root);
    let o = run(
        root,
        &[
            "request",
            "--name",
            "config-sync",
            "--purpose",
            "Configuration sync",
            "--store",
            "alma-production",
            "--owner",
            "mlopez",
            "--scope",
            "configuration:write",
        ],
    );
    assert_eq!(o.code, 3, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("KW201"), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("Read/write access to the Configuration API is not granted"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("keys/config-sync.yaml:"), "{}", o.stderr);
    assert!(o.stderr.contains("nothing was written"), "{}", o.stderr);
    assert!(o.stdout.is_empty(), "{}", o.stdout);
    assert_eq!(key_files(root), before);

    // Beyond the owner's grants (asmith may grant bibs:read only): refused by the policy too.
    let o = run(
        root,
        &[
            "request",
            "--name",
            "bibs-edit",
            "--purpose",
            "Clean-up",
            "--store",
            "alma-sandbox",
            "--owner",
            "asmith",
            "--scope",
            "bibs:write",
        ],
    );
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stderr.contains("KW202"), "{}", o.stderr);
    assert_eq!(key_files(root), before);

    // A sandbox key (by its name) may not reach a production store: the environment rule.
    let o = run(
        root,
        &[
            "request",
            "--name",
            "ill-sandbox",
            "--purpose",
            "Tests",
            "--env",
            "production",
            "--env",
            "sandbox",
            "--owner",
            "jdoe",
            "--scope",
            "bibs",
        ],
    );
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stderr.contains("KW211"), "{}", o.stderr);
    assert_eq!(key_files(root), before);
}

#[test]
fn a_scope_forbidden_in_one_environment_is_refused_there_only() {
    let repo = library();
    let root = repo.path();
    let cfg = std::fs::read_to_string(root.join("keyward.yaml")).expect("config");
    let cfg = cfg.replace(
        "  forbid:\n",
        "  forbid:\n    - { scope: users:write, reason: \"No patron writes in production.\", environments: [production] }\n",
    );
    std::fs::write(root.join("keyward.yaml"), cfg).expect("write config");
    let args = |env: &'static str| {
        [
            "request",
            "--name",
            "patron-sync",
            "--purpose",
            "Patron sync",
            "--env",
            env,
            "--owner",
            "mlopez",
            "--scope",
            "users:write",
        ]
    };
    let o = run(root, &args("production"));
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("forbidden in production: No patron writes in production."),
        "{}",
        o.stderr
    );
    assert!(!root.join("keys/patron-sync.yaml").exists());
    let o = run(root, &args("sandbox"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(root.join("keys/patron-sync.yaml").exists());
    assert_eq!(run(root, &["validate"]).code, 0);
}

#[test]
fn existing_files_and_keys_are_never_overwritten() {
    let repo = library();
    let root = repo.path();
    let args = [
        "request",
        "--name",
        "reports",
        "--purpose",
        "Reports",
        "--store",
        "alma-sandbox",
        "--owner",
        "rkumar",
        "--scope",
        "analytics",
    ];
    std::fs::write(root.join("keys/reports.yaml"), "# mine\nkeys: []\n").expect("write");
    let o = run(root, &args);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("keys/reports.yaml already exists"),
        "{}",
        o.stderr
    );
    assert_eq!(
        std::fs::read_to_string(root.join("keys/reports.yaml")).expect("kept"),
        "# mine\nkeys: []\n"
    );
    // With another file, the key is written; requesting it again is refused.
    let mut other = args.to_vec();
    other.extend(["--output", "keys/reports/sandbox.yaml"]);
    std::fs::remove_file(root.join("keys/reports.yaml")).expect("remove");
    assert_eq!(run(root, &other).code, 0);
    let before = key_files(root);
    let o = run(root, &args);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("a key named `reports` already exists in store `alma-sandbox` (keys/reports/sandbox.yaml:4)"),
        "{}",
        o.stderr
    );
    // A key of the example (in its own file) is found the same way.
    let o = run(
        root,
        &[
            "request",
            "--name",
            "illiad-barcode-lookup",
            "--store",
            "alma-production",
            "--owner",
            "jdoe",
            "--scope",
            "bibs",
            "--purpose",
            "x",
        ],
    );
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("keys/interlibrary-loan.yaml:4"),
        "{}",
        o.stderr
    );
    assert_eq!(key_files(root), before);
    // --output outside keys/ is refused.
    let mut outside = args.to_vec();
    outside[2] = "reports2";
    outside.extend(["--output", "people2.yaml"]);
    let o = run(root, &outside);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("under keys/"), "{}", o.stderr);
}

#[test]
fn without_a_terminal_missing_values_name_their_flags() {
    let repo = library();
    let root = repo.path();
    let before = key_files(root);
    let o = run(
        root,
        &["request", "--name", "x-y", "--store", "alma-sandbox"],
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    for flag in ["--owner", "--scope", "--purpose"] {
        assert!(o.stderr.contains(flag), "{flag} not named: {}", o.stderr);
    }
    assert!(o.stderr.contains("not on a terminal"), "{}", o.stderr);
    assert_eq!(key_files(root), before);
    // Unknown values are named with their flag.
    let o = run(
        root,
        &[
            "request",
            "--name",
            "x-y",
            "--purpose",
            "p",
            "--store",
            "alma-staging",
            "--owner",
            "jdoe",
            "--scope",
            "bibs",
        ],
    );
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("--store/--env: `alma-staging`"),
        "{}",
        o.stderr
    );
    assert_eq!(key_files(root), before);
}

/// The real binary on a pseudo-terminal (stdin, stdout and stderr), with what it prints
/// collected by a reader thread.
struct Terminal {
    master: std::fs::File,
    seen: Arc<Mutex<Vec<u8>>>,
    cursor: usize,
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
        let mut cmd = keyward(root);
        cmd.args(args)
            .stdin(slave.try_clone().expect("dup"))
            .stdout(slave.try_clone().expect("dup"))
            .stderr(slave);
        let child = cmd.spawn().expect("spawn keyward");
        drop(cmd); // closes this side's copies of the terminal
        let master = std::fs::File::from(master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().expect("dup master");
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the child has closed the terminal.
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
            cursor: 0,
            child,
        }
    }

    fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("lock")).replace('\r', "")
    }

    /// Wait (bounded) until `text` appears after what was already matched.
    fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            {
                let seen = self.seen.lock().expect("lock");
                let hay = &seen[self.cursor.min(seen.len())..];
                if let Some(i) = hay.windows(text.len()).position(|w| w == text.as_bytes()) {
                    self.cursor += i + text.len();
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {text:?}; the terminal shows:\n{}",
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\n").as_bytes())
            .expect("type into the terminal");
    }

    /// Wait (bounded) for the exit code.
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

#[test]
fn interactively_the_same_answers_write_the_same_file() {
    let asked = library();
    // The owner is offered from git's user.email, matched against people.yaml.
    std::fs::create_dir_all(asked.path().join("home")).expect("home");
    std::fs::write(
        asked.path().join("home/.gitconfig"),
        "[user]\n\tname = Jane Doe\n\temail = JDoe@example.edu\n",
    )
    .expect("gitconfig");
    let mut t = Terminal::spawn(asked.path(), &["request"]);
    t.expect("Application name");
    t.send("Bad Name");
    t.expect("is not a key name");
    t.send("ill-lookup");
    t.expect("Purpose");
    t.send("ILLiad \"Alma Barcode Lookup\": patron and item lookups");
    t.expect("1) alma-production");
    t.expect("Stores (");
    t.send("production sandbox");
    t.expect("Owner (a person; their grants bound the key) [jdoe]: ");
    t.send("");
    t.expect("API areas");
    t.expect("bibs: read, write");
    t.expect("`configuration:write` is forbidden: Read/write access");
    t.expect("Scopes (");
    t.send("bibs configuration:write");
    t.expect("Read/write access to the Configuration API is not granted");
    t.expect("Scopes (");
    t.send("users:write");
    t.expect("owner `jdoe` may not grant `users:write`");
    t.expect("Scopes (");
    t.send("bibs:read, users");
    t.expect("Expiry (");
    t.send("800d");
    t.expect("longer than the maximum lifetime 730d");
    t.expect("Expiry (");
    t.send("180d");
    t.expect("Recipients besides the owner");
    t.send("team:ill-staff");
    t.expect("Ticket");
    t.send("LSIS-2001");
    t.expect("## Key request: `ill-lookup`");
    assert_eq!(t.wait(), 0, "{}", t.transcript());
    let transcript = t.transcript();
    assert!(
        transcript.contains("git add keys/ill-lookup.yaml"),
        "{transcript}"
    );
    drop(t);

    let flagged = library();
    let o = run(flagged.path(), ILL_FLAGS);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let a = std::fs::read_to_string(asked.path().join("keys/ill-lookup.yaml")).expect("asked");
    let b = std::fs::read_to_string(flagged.path().join("keys/ill-lookup.yaml")).expect("flags");
    assert_eq!(a, b);
    assert!(!a.contains("configuration"), "{a}");
    assert_eq!(run(asked.path(), &["validate"]).code, 0);
}

#[test]
fn interactively_flags_fill_in_and_nothing_is_written_when_input_ends() {
    let repo = library();
    let root = repo.path();
    let before = key_files(root);
    // Only the scope is asked for; a forbidden one is refused, then the input ends.
    let mut t = Terminal::spawn(
        root,
        &[
            "request",
            "--name",
            "config-sync",
            "--purpose",
            "Sync",
            "--store",
            "alma-sandbox",
            "--owner",
            "mlopez",
            "--ticket",
            "LSIS-7",
        ],
    );
    t.expect("Scopes (");
    t.send("configuration:write");
    t.expect("`configuration:write` is forbidden: Read/write access");
    t.expect("Scopes (");
    // Ctrl-D: end of input on a terminal in canonical mode.
    t.master.write_all(&[4]).expect("EOF");
    t.expect("nothing was written");
    assert_eq!(t.wait(), 1, "{}", t.transcript());
    let transcript = t.transcript();
    assert!(!transcript.contains("Application name"), "{transcript}");
    assert!(!transcript.contains("Expiry ("), "{transcript}");
    assert_eq!(key_files(root), before);
}

#[test]
fn help_shows_examples_and_completions_know_the_command() {
    let repo = library();
    let h = run(repo.path(), &["request", "--help"]);
    assert_eq!(h.code, 0, "{}", h.stderr);
    for want in [
        "--scope <AREA:LEVEL>",
        "--env <ENV>",
        "--no-input",
        "Examples:",
        "keyward request --name",
    ] {
        assert!(
            h.stdout.contains(want),
            "missing {want:?} in:\n{}",
            h.stdout
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let c = run(repo.path(), &["completions", shell]);
        assert_eq!(c.code, 0, "{}", c.stderr);
        assert!(c.stdout.contains("request"), "{shell}");
        assert!(c.stdout.contains("recipient"), "{shell}");
    }
}

#[test]
fn an_eleventh_key_for_one_owner_is_refused() {
    let repo = library();
    let root = repo.path();
    // mlopez owns one key in the example; the policy allows ten.
    for i in 2..=10 {
        let name = format!("mlopez-{i}");
        let o = run(
            root,
            &[
                "request",
                "--name",
                &name,
                "--purpose",
                "p",
                "--store",
                "alma-sandbox",
                "--owner",
                "mlopez",
                "--scope",
                "bibs",
            ],
        );
        assert_eq!(o.code, 0, "key {i}: {}", o.stderr);
    }
    let before = key_files(root);
    let o = run(
        root,
        &[
            "request",
            "--name",
            "mlopez-11",
            "--purpose",
            "p",
            "--store",
            "alma-sandbox",
            "--owner",
            "mlopez",
            "--scope",
            "bibs",
        ],
    );
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("owner `mlopez` has 11 keys; the policy allows at most 10"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("keys/mlopez-11.yaml"), "{}", o.stderr);
    assert_eq!(key_files(root), before);
}

#[test]
fn a_new_repository_without_people_says_how_to_add_oneself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("keys-repo");
    let o = run(dir.path(), &["init", root.to_str().expect("utf-8 path")]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = run(
        &root,
        &[
            "request", "--name", "first", "--store", "sandbox", "--owner", "me", "--scope", "bibs",
        ],
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("people.yaml lists no person yet"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("keyward keygen"), "{}", o.stderr);
    assert!(!root.join("keys/first.yaml").exists());
}
