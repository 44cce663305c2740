//! Shared helpers for integration tests: a temp key repository with real age identities,
//! and running the real `keyward` binary on it.
#![allow(dead_code)]

use assert_cmd::Command;
use std::path::{Path, PathBuf};

pub struct Repo {
    pub dir: tempfile::TempDir,
    /// principal id -> identity file path
    pub identities: Vec<(String, PathBuf)>,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl Repo {
    /// A repository with people jdoe, asmith, rkumar (each with a fresh age identity),
    /// a team ill-staff, two sqlite stores, and the given key file contents.
    pub fn new(keys_yaml: &str) -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("keys")).unwrap();
        std::fs::create_dir_all(root.join("ids")).unwrap();
        let mut identities = Vec::new();
        let mut people = String::from("people:\n");
        for id in ["jdoe", "asmith", "rkumar"] {
            let identity = age::x25519::Identity::generate();
            let path = root.join("ids").join(format!("{id}.txt"));
            use age::secrecy::ExposeSecret;
            std::fs::write(&path, format!("{}\n", identity.to_string().expose_secret())).unwrap();
            people.push_str(&format!(
                "  {id}:\n    name: {id}\n    email: {id}@example.edu\n    recipients: [\"{}\"]\n",
                identity.to_public()
            ));
            identities.push((id.to_string(), path));
        }
        people.push_str("teams:\n  ill-staff: { members: [jdoe, asmith] }\n");
        std::fs::write(root.join("people.yaml"), people).unwrap();
        std::fs::write(
            root.join("keyward.yaml"),
            "version: 1\nstores:\n  alma-production: { kind: sqlite, path: .keyward/prod.db, environment: production }\n  alma-sandbox: { kind: sqlite, path: .keyward/sbx.db, environment: sandbox }\npolicy:\n  default_lifetime: 365d\n",
        )
        .unwrap();
        let r = Repo { dir, identities };
        r.write_keys(keys_yaml);
        r
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write_keys(&self, yaml: &str) {
        std::fs::write(self.root().join("keys/keys.yaml"), yaml).unwrap();
    }

    pub fn identity(&self, id: &str) -> PathBuf {
        self.identities
            .iter()
            .find(|(p, _)| p == id)
            .map(|(_, p)| p.clone())
            .unwrap()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("keyward").unwrap();
        c.arg("-C").arg(self.root());
        c.env_remove("KEYWARD_FAILPOINT");
        c.env_remove("KEYWARD_AGE_IDENTITY");
        c.env_remove("KEYWARD_AGE_IDENTITY_FILE");
        c.env_remove("SOPS_AGE_KEY_FILE");
        c.env("HOME", self.root().join("home"));
        c.env("NO_COLOR", "1");
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, &[], None)
    }

    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Out {
        let mut c = self.cmd();
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        if let Some(s) = stdin {
            c.write_stdin(s.to_string());
        }
        let o = c.output().expect("run keyward");
        let out = Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        self.validate_plans(args, &out);
        out
    }

    /// Every JSON plan a test makes is checked against schemas/plan.schema.json: the one
    /// `plan`/`apply --format json` prints, and the file `plan --out FILE` saves.
    fn validate_plans(&self, args: &[&str], out: &Out) {
        let is_plan_cmd = matches!(args.first(), Some(&"plan") | Some(&"apply"));
        if !is_plan_cmd || !matches!(out.code, 0 | 2 | 3) {
            return;
        }
        let json_format = args.windows(2).any(|w| w == ["--format", "json"]);
        if json_format && !out.stdout.trim().is_empty() {
            let v: serde_json::Value = serde_json::from_str(&out.stdout)
                .unwrap_or_else(|e| panic!("plan JSON does not parse ({e}): {}", out.stdout));
            check_plan_json(&v).unwrap_or_else(|e| panic!("plan JSON breaks the schema: {e}"));
        }
        if let Some(w) = args.windows(2).find(|w| w[0] == "--out") {
            let path = self.root().join(w[1]);
            if let Ok(bytes) = std::fs::read(&path) {
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("saved plan does not parse ({e})"));
                check_plan_json(&v).unwrap_or_else(|e| panic!("saved plan breaks the schema: {e}"));
            }
        }
    }

    /// The secret of `name` as `who` decrypts it with `keyward secret`.
    pub fn secret(&self, name: &str, store: &str, who: &str) -> String {
        let id = self.identity(who);
        let o = self.run(&["secret", name, "--store", store, "-i", id.to_str().unwrap()]);
        assert_eq!(o.code, 0, "keyward secret failed: {}", o.all());
        o.stdout.trim().to_string()
    }

    /// `keyward verify` with the key on stdin; returns the parsed verdict.
    pub fn verify(&self, secret: &str, store: &str) -> serde_json::Value {
        let o = self.run_with(&["verify", "--store", store], &[], Some(secret));
        serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("verify output not JSON ({e}): {}", o.all()))
    }

    /// Every file under the repo except sealed envelopes and identities, as bytes.
    pub fn all_files_except_envelopes(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for e in walkdir::WalkDir::new(self.root())
            .into_iter()
            .filter_map(Result::ok)
        {
            let p = e.path();
            if !e.file_type().is_file()
                || p.extension().is_some_and(|x| x == "age")
                || p.starts_with(self.root().join("ids"))
            {
                continue;
            }
            out.push((p.to_path_buf(), std::fs::read(p).unwrap_or_default()));
        }
        out
    }
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Validate a plan against the checked-in JSON Schema (boon, with format assertions).
pub fn check_plan_json(plan: &serde_json::Value) -> Result<(), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/plan.schema.json");
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("schemas/plan.schema.json"))
            .expect("the plan schema is JSON");
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    compiler
        .add_resource("plan.schema.json", schema)
        .map_err(|e| format!("{e:#}"))?;
    let idx = compiler
        .compile("plan.schema.json", &mut schemas)
        .map_err(|e| format!("the schema does not compile: {e:#}"))?;
    schemas.validate(plan, idx).map_err(|e| format!("{e:#}"))
}

/// A git repository in a test key repository (real libgit2; the `git` CLI for checks).
impl Repo {
    /// Make the repository a git repository with everything committed on `main` by
    /// "Admin <admin@example.edu>". Returns the commit id.
    pub fn git_init(&self) -> String {
        let repo = git2::Repository::init_opts(
            self.root(),
            git2::RepositoryInitOptions::new().initial_head("main"),
        )
        .expect("git init");
        std::fs::write(self.root().join(".gitignore"), ".keyward/\nids/\nhome/\n").unwrap();
        drop(repo);
        self.commit_all("Admin", "admin@example.edu", "initial keys")
    }

    /// Stage everything (respecting .gitignore) and commit it as `name <email>`.
    pub fn commit_all(&self, name: &str, email: &str, message: &str) -> String {
        let repo = git2::Repository::open(self.root()).expect("open repo");
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.update_all(["*"], None).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now(name, email).unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .unwrap()
            .to_string()
    }

    /// Run the `git` CLI in the repository; returns stdout (panics on failure).
    pub fn git(&self, args: &[&str]) -> String {
        let o = std::process::Command::new("git")
            .arg("-C")
            .arg(self.root())
            .args(args)
            .env("GIT_AUTHOR_NAME", "Admin")
            .env("GIT_AUTHOR_EMAIL", "admin@example.edu")
            .env("GIT_COMMITTER_NAME", "Admin")
            .env("GIT_COMMITTER_EMAIL", "admin@example.edu")
            .output()
            .expect("git CLI");
        assert!(
            o.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}
