//! The real binary on a pseudo-terminal that is its controlling terminal (`setsid -c`), for
//! tests that answer its prompts: what it shows is collected, `expect` waits (bounded) for
//! a text after the last match, `send` types a line.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Terminal {
    master: std::fs::File,
    seen: Arc<Mutex<Vec<u8>>>,
    cursor: usize,
    pub child: std::process::Child,
}

impl Terminal {
    /// `keyward -C root ARGS` with `env` on a fresh terminal.
    pub fn spawn(root: &Path, args: &[&str], env: &[(String, String)]) -> Terminal {
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
            .env_remove("KEYWARD_FAILPOINT")
            .env_remove("KEYWARD_AGE_IDENTITY")
            .env_remove("KEYWARD_AGE_IDENTITY_FILE")
            .env_remove("SOPS_AGE_KEY_FILE")
            .envs(env.iter().map(|(k, v)| (k, v)))
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

    /// Everything the terminal showed so far.
    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("lock")).replace('\r', "")
    }

    /// Wait (bounded) until `text` appears after what was already matched.
    pub fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
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

    pub fn send(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\n").as_bytes())
            .expect("type into the terminal");
    }

    /// Wait (bounded) for the exit code.
    pub fn wait(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(60);
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
