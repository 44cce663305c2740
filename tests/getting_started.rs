//! docs/getting-started.md cannot rot: every `console` block marked `<!-- run -->` is run,
//! command by command (`$ ...` lines, through `sh`, stdout and stderr together), in a temp
//! directory with the real binary, real git and a fixed clock (KEYWARD_NOW), and what each
//! prints must be what the guide shows under it. `<!-- file PATH -->` before a block writes
//! that block to PATH first; `<!-- run as=NAME -->` runs as another person (their own HOME,
//! so their own identity). A command exits 0 unless its line ends with `# exit N`.
//! `<!-- same-as PATH -->` before a block: the block is a copy of that file of this repository.
//!
//! Values that differ on every run are shown as placeholders: `age1…NAME` for NAME's public
//! key (and substituted back into the files the guide writes), `<commit>` for a commit id,
//! `<key id N>` for the Nth key delivered. `KEYWARD_UPDATE_DOCS=1 cargo test --test getting_started`
//! rewrites the outputs in the guide (never under CI).

mod needs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const DOC: &str = "docs/getting-started.md";
const NOW: &str = "2026-12-01T09:00:00Z";

#[derive(Debug)]
enum Block {
    /// Commands with their expected output, run as `who`.
    Run {
        who: String,
        /// (command, expected output) in order.
        steps: Vec<(String, String)>,
        /// Byte range of the block's body in the guide.
        body: std::ops::Range<usize>,
    },
    /// A file to write before the next command.
    File { path: String, text: String },
    /// A copy of a file of this repository (`<!-- same-as PATH -->`).
    SameAs {
        path: String,
        text: String,
        body: std::ops::Range<usize>,
    },
}

/// The blocks of the guide that the test runs, in order.
fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut pending: Option<String> = None;
    let mut pos = 0;
    let mut lines = doc.split_inclusive('\n');
    while let Some(line) = lines.next() {
        pos += line.len();
        let t = line.trim();
        if let Some(d) = t.strip_prefix("<!--").and_then(|r| r.strip_suffix("-->")) {
            let d = d.trim();
            if d.starts_with("run") || d.starts_with("file ") || d.starts_with("same-as ") {
                pending = Some(d.to_string());
            }
            continue;
        }
        if !t.starts_with("```") {
            // A directive belongs to the block right after it.
            if !t.is_empty() {
                pending = None;
            }
            continue;
        }
        // A fenced block: read to its closing fence (as long as the opening one, so a
        // ```` block can show output that holds ``` fences).
        let fence: String = t.chars().take_while(|&c| c == '`').collect();
        let body_start = pos;
        let mut body = String::new();
        for l in lines.by_ref() {
            pos += l.len();
            if l.trim() == fence {
                break;
            }
            body.push_str(l);
        }
        let body_range = body_start..body_start + body.len();
        let Some(d) = pending.take() else {
            continue;
        };
        if let Some(path) = d.strip_prefix("same-as ") {
            out.push(Block::SameAs {
                path: path.trim().to_string(),
                text: body,
                body: body_range,
            });
            continue;
        }
        if let Some(path) = d.strip_prefix("file ") {
            out.push(Block::File {
                path: path.trim().to_string(),
                text: body,
            });
            continue;
        }
        let who = d
            .split_whitespace()
            .find_map(|w| w.strip_prefix("as="))
            .unwrap_or("jdoe")
            .to_string();
        let mut steps: Vec<(String, String)> = Vec::new();
        for l in body.split_inclusive('\n') {
            if let Some(cmd) = l.strip_prefix("$ ") {
                steps.push((cmd.trim_end().to_string(), String::new()));
            } else {
                let last = steps.last_mut().expect("a run block starts with `$ `");
                last.1.push_str(l);
            }
        }
        out.push(Block::Run {
            who,
            steps,
            body: body_range,
        });
    }
    out
}

/// One reader of the guide: a temp "machine" per person, shared working directories.
struct Session {
    dir: tempfile::TempDir,
    cwd: PathBuf,
    /// person -> their public key, once `keyward keygen` printed it.
    keys: BTreeMap<String, String>,
    /// Key ids, in the order their deliveries appeared.
    ids: Vec<String>,
}

impl Session {
    fn home(&self, who: &str) -> PathBuf {
        self.dir.path().join("home").join(who)
    }

    fn run(&mut self, who: &str, cmd: &str) -> String {
        let home = self.home(who);
        std::fs::create_dir_all(&home).unwrap();
        if let Some(to) = cmd.strip_prefix("cd ") {
            self.cwd = self.cwd.join(to.trim());
            assert!(self.cwd.is_dir(), "cd {to}: no such directory");
            return String::new();
        }
        let (cmd_line, exit) = match cmd.rsplit_once("# exit ") {
            Some((c, n)) => (c.trim_end(), n.trim().parse::<i32>().expect("# exit N")),
            None => (cmd, 0),
        };
        let bin = Path::new(env!("CARGO_BIN_EXE_keyward")).parent().unwrap();
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!("exec 2>&1; {cmd_line}"))
            .current_dir(&self.cwd)
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("HOME", &home)
            .env("KEYWARD_NOW", NOW)
            .env("NO_COLOR", "1")
            .env("GIT_AUTHOR_NAME", person_name(who))
            .env("GIT_AUTHOR_EMAIL", format!("{who}@example.edu"))
            .env("GIT_COMMITTER_NAME", person_name(who))
            .env("GIT_COMMITTER_EMAIL", format!("{who}@example.edu"))
            .env("GIT_CONFIG_GLOBAL", home.join(".gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("KEYWARD_AGE_IDENTITY")
            .env_remove("KEYWARD_AGE_IDENTITY_FILE")
            .env_remove("SOPS_AGE_KEY_FILE")
            .env_remove("CI")
            .env_remove("GITHUB_ACTIONS")
            .output()
            .expect("run sh");
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(
            o.status.code(),
            Some(exit),
            "`{cmd}` exited {:?} (the guide says {exit}):\n{text}",
            o.status.code()
        );
        self.learn_ids();
        if cmd_line.contains("keyward keygen") {
            let key = text
                .split_whitespace()
                .find(|w| w.starts_with("age1"))
                .expect("keygen prints the public key");
            self.keys.insert(who.to_string(), key.to_string());
        }
        self.normalize(&text, &home)
    }

    /// Values that change on every run, as the guide shows them.
    fn normalize(&self, text: &str, home: &Path) -> String {
        let mut t = text.replace(&format!("{}/", self.cwd.display()), "");
        t = t.replace(&home.display().to_string(), "~");
        t = t.replace(&self.dir.path().display().to_string(), "/tmp");
        for (who, key) in &self.keys {
            t = t.replace(key, &format!("age1…{who}"));
        }
        let commit = regex::Regex::new(r"\b[0-9a-f]{12}(?:[0-9a-f]{28})?\b").unwrap();
        t = commit.replace_all(&t, "<commit>").into_owned();
        for (n, id) in self.ids.iter().enumerate() {
            // As wide as an id, so tables stay aligned.
            t = t.replace(id, &format!("{:<16}", format!("<key id {}>", n + 1)));
        }
        t
    }

    /// The ids of the keys delivered so far (from the manifests under deliveries/).
    fn learn_ids(&mut self) {
        let mut found: Vec<(String, String)> = Vec::new();
        for e in walkdir::WalkDir::new(self.cwd.join("deliveries"))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_name() == "manifest.json")
        {
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
            let (Some(id), Some(created)) = (m["key_id"].as_str(), m["created_at"].as_str()) else {
                continue;
            };
            found.push((format!("{created}{}", m["name"]), id.to_string()));
        }
        found.sort();
        for (_, id) in found {
            if !self.ids.contains(&id) {
                self.ids.push(id);
            }
        }
    }

    fn write(&self, path: &str, text: &str) {
        let mut t = text.to_string();
        for (who, key) in &self.keys {
            t = t.replace(&format!("age1…{who}"), key);
        }
        assert!(
            !t.contains("age1…"),
            "{path}: a public key nobody generated yet"
        );
        let p = self.cwd.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, t).unwrap();
    }
}

fn person_name(who: &str) -> &'static str {
    match who {
        "jdoe" => "Jane Doe",
        "asmith" => "Ann Smith",
        _ => "keyward CI",
    }
}

#[test]
fn the_getting_started_guide_shows_what_the_commands_print() {
    if !needs::tool(&needs::GIT) {
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC);
    let doc = std::fs::read_to_string(&path).unwrap();
    let blocks = blocks(&doc);
    let runs = blocks
        .iter()
        .filter(|b| matches!(b, Block::Run { .. }))
        .count();
    assert!(runs >= 8, "the guide runs its commands ({runs} blocks)");

    let dir = tempfile::tempdir().unwrap();
    let mut s = Session {
        cwd: dir.path().to_path_buf(),
        dir,
        keys: BTreeMap::new(),
        ids: Vec::new(),
    };
    let mut rewritten = doc.clone();
    let mut mismatches = Vec::new();
    // Replace from the end so earlier ranges stay valid.
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    for b in &blocks {
        match b {
            Block::File { path, text } => s.write(path, text),
            Block::SameAs { path, text, body } => {
                let want =
                    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
                        .unwrap();
                if text != &want {
                    mismatches.push(format!("the copy of {path} differs from the file"));
                }
                edits.push((body.clone(), want));
            }
            Block::Run { who, steps, body } => {
                let mut got = String::new();
                for (cmd, want) in steps {
                    let out = s.run(who, cmd);
                    got.push_str(&format!("$ {cmd}\n{out}"));
                    if &out != want {
                        mismatches
                            .push(format!("`{cmd}`:\n--- the guide\n{want}--- printed\n{out}"));
                    }
                }
                edits.push((body.clone(), got));
            }
        }
    }
    let update = std::env::var_os("KEYWARD_UPDATE_DOCS").is_some() && !needs::under_ci();
    if update {
        for (range, text) in edits.into_iter().rev() {
            rewritten.replace_range(range, &text);
        }
        std::fs::write(&path, rewritten).unwrap();
        return;
    }
    assert!(
        mismatches.is_empty(),
        "{DOC} is out of date (KEYWARD_UPDATE_DOCS=1 cargo test --test getting_started \
         rewrites it):\n{}",
        mismatches.join("\n")
    );
}
