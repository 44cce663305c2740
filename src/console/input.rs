//! Who answers a console checklist: the admin at a terminal (steps shown, answers read,
//! pasted values read with echo off and never in argv, env or history), a `--console-input`
//! file (a 0600 JSON object for scripts and tests), or nobody (no terminal: nothing waits).
//! Owns the `Operator` trait and its three implementations; must not decide steps or write
//! anything but prompts to the terminal.

use super::shape::{MAX_VALUE_LEN, ShapeError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use zeroize::Zeroizing;

/// An answer to "was this step done in the console?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Done (made, regenerated, removed...).
    Done,
    /// Leave the step pending for a later apply.
    Skip,
    /// Stop the checklist here (every step left stays pending).
    Stop,
    /// A resumed step: the key was not made after all.
    NotMade,
}

/// A value pasted from the console, or why there is none.
pub enum Pasted {
    Value(Zeroizing<String>),
    Skip,
    Stop,
}

/// What a step asks its operator.
pub struct Question<'a> {
    /// `store/name`.
    pub key: &'a str,
    /// The key's name alone.
    pub name: &'a str,
    pub text: &'a str,
    /// "not made" is an answer (a resumed step, or an audit: "not in the console").
    pub resumed: bool,
    /// The choices shown at a terminal, when not the usual ones.
    pub choices: Option<&'a str>,
}

/// The one who does the console steps.
pub trait Operator {
    /// Whether a person answers (at a terminal): only then does apply wait.
    fn interactive(&self) -> bool;
    /// Show text (the steps of a change).
    fn say(&mut self, text: &str);
    fn ask(&mut self, q: &Question) -> std::io::Result<Reply>;
    /// The value the console showed, read without echo.
    fn paste(&mut self, q: &Question) -> std::io::Result<Pasted>;
    /// The client id that came with the value (ALM); visible, not secret.
    fn client_id(&mut self, q: &Question) -> std::io::Result<Option<String>>;
    /// A paste was refused; true: ask again.
    fn refused(&mut self, q: &Question, why: &ShapeError) -> bool;
}

/// No terminal and no input file: every step stays pending, nothing waits.
pub struct Nobody;

impl Operator for Nobody {
    fn interactive(&self) -> bool {
        false
    }
    fn say(&mut self, _text: &str) {}
    fn ask(&mut self, _q: &Question) -> std::io::Result<Reply> {
        Ok(Reply::Skip)
    }
    fn paste(&mut self, _q: &Question) -> std::io::Result<Pasted> {
        Ok(Pasted::Skip)
    }
    fn client_id(&mut self, _q: &Question) -> std::io::Result<Option<String>> {
        Ok(None)
    }
    fn refused(&mut self, _q: &Question, _why: &ShapeError) -> bool {
        false
    }
}

/// A secret string in the input file: zeroized when dropped, never printed.
struct Hidden(Zeroizing<String>);

impl<'de> Deserialize<'de> for Hidden {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Hidden(Zeroizing::new(s)))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default)]
    secret: Option<Hidden>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    done: Option<bool>,
}

/// Largest `--console-input` file read.
pub const MAX_INPUT_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(
        "{path} is readable or writable by group or others (mode {mode:o}); it holds console values\n  hint: chmod 600 {path}"
    )]
    Permissions { path: String, mode: u32 },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// `--console-input FILE`: `{"<key name or store/name>": {"secret", "client_id", "done"}}`.
/// Answers exactly the steps it names; every other step stays pending.
pub struct InputFile {
    entries: BTreeMap<String, Entry>,
    used: std::collections::BTreeSet<String>,
}

impl InputFile {
    /// Read `path`, refusing a file group or others can read or write.
    pub fn read(path: &Path) -> Result<InputFile, InputError> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display().to_string();
        let io = |e| InputError::Io {
            path: shown.clone(),
            source: e,
        };
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(InputError::Permissions { path: shown, mode });
        }
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_INPUT_BYTES {
            return Err(InputError::Invalid {
                path: shown,
                message: format!("larger than {MAX_INPUT_BYTES} bytes"),
            });
        }
        // serde_json's messages can quote the input: only its position and category are shown.
        let entries: BTreeMap<String, Entry> = serde_json::from_slice(&bytes).map_err(|e| InputError::Invalid {
            path: shown.clone(),
            message: format!(
                "not a JSON object of {{\"KEY\": {{\"secret\", \"client_id\", \"done\"}}}} (line {}, column {}: {:?} error)",
                e.line(),
                e.column(),
                e.classify()
            ),
        })?;
        Ok(InputFile {
            entries,
            used: Default::default(),
        })
    }

    fn entry(&mut self, q: &Question) -> Option<&Entry> {
        let k = if self.entries.contains_key(q.key) {
            q.key
        } else {
            q.name
        };
        self.used.insert(k.to_string());
        self.entries.get(k)
    }

    /// Names in the file no step asked for.
    pub fn unused(&self) -> Vec<&str> {
        self.entries
            .keys()
            .filter(|k| !self.used.contains(*k))
            .map(String::as_str)
            .collect()
    }
}

impl Operator for InputFile {
    fn interactive(&self) -> bool {
        false
    }
    fn say(&mut self, _text: &str) {}
    fn ask(&mut self, q: &Question) -> std::io::Result<Reply> {
        Ok(match self.entry(q) {
            Some(e) if e.secret.is_some() || e.done == Some(true) => Reply::Done,
            Some(e) if q.resumed && e.done == Some(false) => Reply::NotMade,
            _ => Reply::Skip,
        })
    }
    fn paste(&mut self, q: &Question) -> std::io::Result<Pasted> {
        Ok(match self.entry(q).and_then(|e| e.secret.as_ref()) {
            Some(s) => Pasted::Value(s.0.clone()),
            None => Pasted::Skip,
        })
    }
    fn client_id(&mut self, q: &Question) -> std::io::Result<Option<String>> {
        Ok(self.entry(q).and_then(|e| e.client_id.clone()))
    }
    fn refused(&mut self, q: &Question, why: &ShapeError) -> bool {
        eprintln!(
            "error: --console-input: the value for {} was refused: {why}; the step stays pending",
            q.key
        );
        false
    }
}

/// The admin at a terminal: `/dev/tty`, else standard input when it is a terminal (with
/// prompts on standard error).
pub struct Terminal {
    input: File,
    output: File,
}

impl Terminal {
    /// Open the terminal; None without one.
    pub fn open() -> Option<Terminal> {
        use std::os::fd::AsFd;
        if let Ok(tty) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            && rustix::termios::isatty(&tty)
            && let Ok(output) = tty.try_clone()
        {
            return Some(Terminal { input: tty, output });
        }
        let stdin = std::io::stdin();
        if !rustix::termios::isatty(stdin.as_fd()) {
            return None;
        }
        let input = File::from(stdin.as_fd().try_clone_to_owned().ok()?);
        let output = File::from(std::io::stderr().as_fd().try_clone_to_owned().ok()?);
        Some(Terminal { input, output })
    }

    fn write(&mut self, s: &str) {
        let _ = self.output.write_all(s.as_bytes());
        let _ = self.output.flush();
    }

    /// One visible line (canonical mode), at most 256 bytes kept. None at end of input.
    fn line(&mut self) -> std::io::Result<Option<String>> {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        loop {
            if self.input.read(&mut b)? == 0 {
                return Ok((!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned()));
            }
            if b[0] == b'\n' {
                return Ok(Some(String::from_utf8_lossy(&out).trim().to_string()));
            }
            if out.len() < 256 {
                out.push(b[0]);
            }
        }
    }

    /// Show `prompt` and read one line with echo (and signals) off; a paste of several
    /// lines is drained and reported as such. Ctrl-C / Ctrl-D stop. Echo goes off *before*
    /// the prompt is written, so a value pasted the moment the prompt shows is never echoed
    /// (with the prompt first, a paste that beat the mode change was echoed in clear).
    fn hidden(&mut self, prompt: &str) -> std::io::Result<Hidden2> {
        use rustix::termios::{
            LocalModes, OptionalActions, SpecialCodeIndex, tcgetattr, tcsetattr,
        };
        let orig = tcgetattr(&self.input)?;
        let mut raw = orig.clone();
        raw.local_modes
            .remove(LocalModes::ECHO | LocalModes::ICANON | LocalModes::ISIG);
        raw.special_codes[SpecialCodeIndex::VMIN] = 1;
        raw.special_codes[SpecialCodeIndex::VTIME] = 0;
        tcsetattr(&self.input, OptionalActions::Now, &raw)?;
        self.write(prompt);
        let result = self.read_raw();
        tcsetattr(&self.input, OptionalActions::Now, &orig)?;
        self.write("\n");
        result
    }

    fn read_raw(&mut self) -> std::io::Result<Hidden2> {
        let mut buf = Zeroizing::new(Vec::with_capacity(64));
        let mut b = [0u8; 1];
        let mut too_long = false;
        loop {
            if self.input.read(&mut b)? == 0 {
                return Ok(Hidden2::Stop);
            }
            match b[0] {
                0x03 => return Ok(Hidden2::Stop),
                0x04 if buf.is_empty() => return Ok(Hidden2::Stop),
                b'\r' | b'\n' => break,
                0x7f | 0x08 => {
                    buf.pop();
                }
                c if buf.len() <= MAX_VALUE_LEN => buf.push(c),
                _ => too_long = true,
            }
        }
        zeroize::Zeroize::zeroize(&mut b);
        let more = self.drain()?;
        if more {
            return Ok(Hidden2::Refused(ShapeError::MultiLine));
        }
        if too_long {
            return Ok(Hidden2::Refused(ShapeError::TooLong));
        }
        match String::from_utf8(std::mem::take(&mut *buf)) {
            Ok(s) => Ok(Hidden2::Value(Zeroizing::new(s))),
            Err(e) => {
                let mut bytes = e.into_bytes();
                zeroize::Zeroize::zeroize(&mut bytes);
                Ok(Hidden2::Refused(ShapeError::Whitespace))
            }
        }
    }

    /// Read (and forget) whatever arrives within 200 ms: the rest of a multi-line paste.
    fn drain(&mut self) -> std::io::Result<bool> {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let mut any = false;
        let mut sink = Zeroizing::new([0u8; 256]);
        loop {
            let wait = Timespec {
                tv_sec: 0,
                tv_nsec: 200_000_000,
            };
            let ready = {
                let mut fds = [PollFd::new(&self.input, PollFlags::IN)];
                poll(&mut fds, Some(&wait))?
            };
            if ready == 0 {
                return Ok(any);
            }
            let n = self.input.read(&mut sink[..])?;
            if n == 0 {
                return Ok(any);
            }
            any |= sink[..n].iter().any(|c| !c.is_ascii_whitespace());
        }
    }
}

enum Hidden2 {
    Value(Zeroizing<String>),
    Refused(ShapeError),
    Stop,
}

impl Operator for Terminal {
    fn interactive(&self) -> bool {
        true
    }
    fn say(&mut self, text: &str) {
        self.write(text);
    }
    fn ask(&mut self, q: &Question) -> std::io::Result<Reply> {
        let choices = if let Some(c) = q.choices {
            c
        } else if q.resumed {
            "[y] yes, it was made / [n] it was not made / [s] skip / [q] stop"
        } else {
            "[y] done / [s] skip / [q] stop"
        };
        loop {
            self.write(&format!("{} {choices}: ", q.text));
            let Some(a) = self.line()? else {
                return Ok(Reply::Stop);
            };
            match a.to_ascii_lowercase().as_str() {
                "y" | "yes" | "done" => return Ok(Reply::Done),
                "s" | "skip" => return Ok(Reply::Skip),
                "q" | "quit" | "stop" => return Ok(Reply::Stop),
                "n" | "no" if q.resumed => return Ok(Reply::NotMade),
                _ => self.write("  answer y, s or q\n"),
            }
        }
    }
    fn paste(&mut self, q: &Question) -> std::io::Result<Pasted> {
        loop {
            let prompt = format!("{} (input hidden; `s` skips, `q` stops): ", q.text);
            match self.hidden(&prompt)? {
                Hidden2::Stop => return Ok(Pasted::Stop),
                Hidden2::Value(v) if matches!(v.trim(), "s" | "skip") => return Ok(Pasted::Skip),
                Hidden2::Value(v) if matches!(v.trim(), "q" | "quit" | "stop") => {
                    return Ok(Pasted::Stop);
                }
                Hidden2::Value(v) => return Ok(Pasted::Value(v)),
                Hidden2::Refused(why) => {
                    if !self.refused(q, &why) {
                        return Ok(Pasted::Skip);
                    }
                }
            }
        }
    }
    fn client_id(&mut self, q: &Question) -> std::io::Result<Option<String>> {
        self.write(&format!("  Client ID shown for {}: ", q.key));
        Ok(self.line()?.filter(|s| !s.is_empty()))
    }
    fn refused(&mut self, _q: &Question, why: &ShapeError) -> bool {
        self.write(&format!("  refused: {why}. Paste it again.\n"));
        true
    }
}
