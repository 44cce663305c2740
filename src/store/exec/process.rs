//! One running adapter process of a `kind: exec` store: started with a cleared
//! environment (only the variables the store names), spoken to one request line at a time
//! with a timeout and a size limit on every answer line, its stderr read into keyward's
//! log with anything secret-shaped redacted. A timeout, an exit, an oversized or garbage
//! answer stops the process (the next request starts a new one). Must not decide what a
//! request means: that is the store's (`exec/mod.rs`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::wire::{self, BadAnswer, WireError};

/// The longest answer line keyward reads (a page of keys fits easily).
pub const MAX_LINE: usize = 4 << 20;
/// The longest stderr line kept (the rest of it is dropped).
const MAX_STDERR_LINE: usize = 4096;
/// How many stderr lines of one process go to the log at most.
const MAX_STDERR_LINES: usize = 10_000;
/// How many recent stderr lines an error quotes (redacted).
const TAIL: usize = 3;

/// How to start the adapter (no Debug: `env` may hold the adapter's own credentials).
#[derive(Clone)]
pub struct Launch {
    /// The store's name (for messages and the log).
    pub store: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The variables passed on (name, value); nothing else is in the environment.
    pub env: Vec<(String, String)>,
    /// Per request, and for the start with its handshake.
    pub timeout: Duration,
}

/// Why a request got no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    #[error("the adapter could not be started: {0}")]
    Spawn(String),
    #[error("no answer within {0:?}; the adapter was stopped")]
    Timeout(Duration),
    #[error("the adapter exited ({status}){tail}")]
    Exited { status: String, tail: String },
    #[error("an answer line is longer than {MAX_LINE} bytes; the adapter was stopped")]
    TooLong,
    #[error("{0}; the adapter was stopped")]
    Bad(BadAnswer),
    #[error("writing the request failed ({0}){1}")]
    Write(String, String),
}

enum Line {
    Text(Vec<u8>),
    TooLong,
    Eof,
}

/// A running adapter.
pub struct Process {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<Line>,
    next_id: u64,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// The stderr reader: finished once the adapter's stderr is closed.
    stderr_reader: std::thread::JoinHandle<()>,
    timeout: Duration,
}

impl Process {
    /// Start the adapter (no handshake yet).
    pub fn start(l: &Launch) -> Result<Process, Failure> {
        let mut cmd = Command::new(&l.program);
        cmd.args(&l.args)
            .env_clear()
            .envs(l.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| Failure::Spawn(format!("{}: {e}", l.program.display())))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            return Err(Failure::Spawn("its pipes could not be opened".into()));
        };
        let (tx, lines) = sync_channel(4);
        std::thread::Builder::new()
            .name(format!("exec-{}-out", l.store))
            .spawn(move || read_lines(stdout, tx))
            .map_err(|e| Failure::Spawn(e.to_string()))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (store, t) = (l.store.clone(), tail.clone());
        let stderr_reader = std::thread::Builder::new()
            .name(format!("exec-{}-err", l.store))
            .spawn(move || log_stderr(&store, stderr, &t))
            .map_err(|e| Failure::Spawn(e.to_string()))?;
        Ok(Process {
            child,
            stdin,
            lines,
            next_id: 1,
            tail,
            stderr_reader,
            timeout: l.timeout,
        })
    }

    /// Send one request and wait for its answer: `Ok(Ok(result))`, `Ok(Err(typed error))`,
    /// or a failure after which the process is stopped and must be dropped.
    ///
    /// `request` is zeroized after writing (it may carry a secret for `client` adapters).
    pub fn call(&mut self, op: &str, params: Value) -> Result<Result<Value, WireError>, Failure> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = zeroize::Zeroizing::new(wire::request(id, op, params));
        line.push('\n');
        let written = self
            .stdin
            .write_all(line.as_bytes())
            .and_then(|_| self.stdin.flush());
        drop(line);
        if let Err(e) = written {
            let f = match self.exited() {
                Some(f) => f,
                None => Failure::Write(e.kind().to_string(), self.tail_text()),
            };
            self.stop();
            return Err(f);
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = match self.lines.recv_timeout(left) {
                Ok(Line::Text(t)) if t.iter().all(u8::is_ascii_whitespace) => continue,
                Ok(Line::Text(t)) => wire::answer(&t, id).map_err(Failure::Bad),
                Ok(Line::TooLong) => Err(Failure::TooLong),
                Ok(Line::Eof) | Err(RecvTimeoutError::Disconnected) => Err(self.wait_exit()),
                Err(RecvTimeoutError::Timeout) => Err(Failure::Timeout(self.timeout)),
            };
            if got.is_err() {
                self.stop();
            }
            return got;
        }
    }

    fn tail_text(&self) -> String {
        let t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if t.is_empty() {
            String::new()
        } else {
            let lines: Vec<&str> = t.iter().map(String::as_str).collect();
            format!("; its last stderr: {}", lines.join(" | "))
        }
    }

    fn exited(&mut self) -> Option<Failure> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(self.exit_failure(st)),
            _ => None,
        }
    }

    fn exit_failure(&self, st: std::process::ExitStatus) -> Failure {
        // Let the stderr reader catch the last lines: it ends when the closed pipe is read
        // to its end (bounded, as a child of the adapter may still hold the pipe open).
        let until = Instant::now() + Duration::from_secs(1);
        while !self.stderr_reader.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        Failure::Exited {
            status: st.to_string(),
            tail: self.tail_text(),
        }
    }

    /// The adapter closed its stdout: wait briefly for its exit status.
    fn wait_exit(&mut self) -> Failure {
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if let Some(f) = self.exited() {
                return f;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Failure::Exited {
            status: "closed its stdout".into(),
            tail: self.tail_text(),
        }
    }

    /// Stop the process (kill, reap).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Read answer lines into `tx` until EOF, a line over the limit, or keyward hangs up.
fn read_lines(stdout: std::process::ChildStdout, tx: SyncSender<Line>) {
    let mut r = BufReader::with_capacity(64 * 1024, stdout);
    loop {
        let mut buf = Vec::new();
        let got = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf);
        let msg = match got {
            Ok(0) | Err(_) => Line::Eof,
            Ok(_) if buf.last() == Some(&b'\n') => {
                buf.pop();
                Line::Text(buf)
            }
            Ok(_) if buf.len() > MAX_LINE => Line::TooLong,
            // The last line, without a newline.
            Ok(_) => Line::Text(buf),
        };
        let end = !matches!(msg, Line::Text(_));
        if tx.send(msg).is_err() || end {
            return;
        }
    }
}

/// Read stderr lines into the log (redacted, cut at `MAX_STDERR_LINE`), keeping the last
/// few for error messages.
fn log_stderr(store: &str, stderr: std::process::ChildStderr, tail: &Mutex<VecDeque<String>>) {
    let mut r = BufReader::new(stderr);
    let mut n = 0usize;
    loop {
        let mut buf = Vec::new();
        match (&mut r)
            .take(MAX_STDERR_LINE as u64)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') && buf.len() >= MAX_STDERR_LINE {
            // Drop the rest of an overlong line.
            let mut rest = Vec::new();
            if r.read_until(b'\n', &mut rest).is_err() {
                return;
            }
        }
        let text = redact(String::from_utf8_lossy(&buf).trim_end());
        n += 1;
        if n <= MAX_STDERR_LINES {
            tracing::warn!(store = %store, "adapter: {text}");
        } else if n == MAX_STDERR_LINES + 1 {
            tracing::warn!(store = %store, "adapter: further stderr lines are not logged");
        }
        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
        t.push_back(text.chars().take(300).collect());
        while t.len() > TAIL {
            t.pop_front();
        }
    }
}

/// `text` with every secret-shaped token replaced by `<redacted>`: keyward secrets
/// (`kw_...`), long hex or base64-like strings (hashes, tokens, verifiers) and private key
/// material (see `diag::redact`).
pub fn redact(text: &str) -> String {
    let text = crate::diag::redact(text);
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if secret_shaped(token) {
            out.push_str("<redacted>");
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in text.chars() {
        if c.is_whitespace()
            || matches!(
                c,
                '"' | '\'' | '`' | ',' | '[' | ']' | '{' | '}' | ':' | '(' | ')' | ';'
            )
        {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

fn secret_shaped(t: &str) -> bool {
    let lower = t.to_ascii_lowercase();
    if lower.contains("kw_") && t.len() >= 20 {
        return true;
    }
    let body = t.trim_end_matches('=');
    body.len() >= 24
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'_' | b'-' | b'.'))
        && body.bytes().any(|b| b.is_ascii_digit())
        && body.bytes().any(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn secret_shaped_text_is_redacted_and_words_are_kept() {
        let s = crate::secret::generate("production", &crate::secret::new_key_id());
        let line = format!(
            "creating key ill-lookup with secret {} (hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08)",
            s.expose()
        );
        let r = redact(&line);
        assert!(!r.contains(s.expose()), "{r}");
        assert!(!r.contains("9f86d0818"), "{r}");
        assert!(
            r.starts_with("creating key ill-lookup with secret <redacted>"),
            "{r}"
        );
        assert_eq!(
            redact("no answer from the gateway"),
            "no answer from the gateway"
        );
        assert_eq!(
            redact("token=\"AGE-SECRET-KEY-1XYZ\""),
            "token=\"<redacted>\""
        );
    }
}
