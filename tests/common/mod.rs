//! Shared helpers for integration tests: a temp key repository with real age identities,
//! and running the real `keyward` binary on it.
#![allow(dead_code)]

use assert_cmd::Command;
use std::path::{Path, PathBuf};

pub struct Repo {
    pub dir: tempfile::TempDir,
    /// principal id -> identity file path
    pub identities: Vec<(String, PathBuf)>,
    /// Environment every command gets (e.g. the token of an `http` store).
    pub env: Vec<(String, String)>,
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
        let r = Repo {
            dir,
            identities,
            env: Vec::new(),
        };
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
        for (k, v) in &self.env {
            c.env(k, v);
        }
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

/// The canary of a pasted console value: no file under `root` but the sealed envelopes
/// holds any of `values`, nor its tail after the first 4 characters (an Alma key without
/// its `l7xx`).
pub fn assert_only_in_envelopes(root: &Path, values: &[&str]) {
    for e in walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
    {
        let p = e.path();
        if !e.file_type().is_file() || p.extension().is_some_and(|x| x == "age") {
            continue;
        }
        let bytes = std::fs::read(p).unwrap();
        for v in values {
            assert!(
                !contains(&bytes, &v[4..]),
                "a pasted value is in {}",
                p.display()
            );
        }
    }
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

impl Repo {
    /// A copy of this repository (stores, outbox, identities) in a new temp directory, so
    /// one prepared state can be the start of many independent runs.
    pub fn duplicate(&self) -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        for e in walkdir::WalkDir::new(self.root())
            .into_iter()
            .filter_map(Result::ok)
        {
            let rel = e.path().strip_prefix(self.root()).expect("under root");
            let to = dir.path().join(rel);
            if e.file_type().is_dir() {
                std::fs::create_dir_all(&to).expect("mkdir");
            } else if e.file_type().is_file() {
                std::fs::copy(e.path(), &to).expect("copy");
            }
        }
        let identities = self
            .identities
            .iter()
            .map(|(id, p)| {
                let rel = p.strip_prefix(self.root()).expect("identity under root");
                (id.clone(), dir.path().join(rel))
            })
            .collect();
        Repo {
            dir,
            identities,
            env: self.env.clone(),
        }
    }

    /// The private identity text (`AGE-SECRET-KEY-...`) of a principal.
    pub fn identity_text(&self, id: &str) -> String {
        std::fs::read_to_string(self.identity(id))
            .expect("identity file")
            .trim()
            .to_string()
    }

    /// The sqlite stores of the standard repository: (name, database path).
    pub fn stores(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("alma-production", self.root().join(".keyward/prod.db")),
            ("alma-sandbox", self.root().join(".keyward/sbx.db")),
        ]
    }

    /// The sqlite stores of the standard repository, opened with the library.
    pub fn open_stores(&self) -> Vec<(String, std::sync::Arc<dyn keyward::store::Store>)> {
        use keyward::store::sqlite::SqliteStore;
        self.stores()
            .into_iter()
            .filter(|(_, p)| p.exists())
            .map(|(n, p)| {
                let s: std::sync::Arc<dyn keyward::store::Store> =
                    std::sync::Arc::new(SqliteStore::open(n, &p).expect("open store"));
                (n.to_string(), s)
            })
            .collect()
    }

    /// Every key of every store, read with the library (no binary), as (store, key).
    pub fn live_keys(&self) -> Vec<(String, keyward::store::LiveKey)> {
        live_keys_in(&self.open_stores())
    }

    /// Check the delivery invariants of apply against the real stores and outbox, and
    /// return every secret it decrypted (so callers can search for them). Panics naming
    /// the first violation:
    /// * every active or disabled managed key's current generation has an `active`
    ///   manifest with an envelope for each of the key's recipients, which decrypts with
    ///   that recipient's real identity to a secret the store accepts for that key;
    /// * no manifest is `active` for a key id the store does not have, or `pending`;
    /// * at most one non-revoked key per (store, name) besides replaced keys kept through
    ///   their grace (which must expire), and `expected_count` keys in all
    ///   per (store, name) when given (no key created twice).
    pub fn check_invariants(
        &self,
        context: &str,
        expected_count: &[(&str, &str, usize)],
    ) -> Vec<String> {
        self.check_invariants_in(context, expected_count, &self.open_stores())
    }

    /// `check_invariants` against the given stores (by their keyward.yaml names), e.g.
    /// `http` stores reached through `keyward serve`, whose verdicts then come from
    /// `/v1/verify`.
    pub fn check_invariants_in(
        &self,
        context: &str,
        expected_count: &[(&str, &str, usize)],
        open: &[(String, std::sync::Arc<dyn keyward::store::Store>)],
    ) -> Vec<String> {
        use keyward::store::KeyStatus;
        let rt = runtime();
        let keys = live_keys_in(open);
        let mut secrets = Vec::new();
        let mut per_name: std::collections::BTreeMap<(String, String), (usize, usize)> =
            Default::default();
        for (store, k) in &keys {
            let e = per_name.entry((store.clone(), k.name.clone())).or_default();
            e.0 += 1;
            // A replaced key kept valid through its grace is not current: it must expire.
            let retiring = k.labels.contains_key(keyward::diff::REPLACED_BY);
            if retiring {
                assert!(
                    k.expires_at.is_some(),
                    "{context}: {store}/{} is kept through a grace without an expiry",
                    k.name
                );
            }
            if k.status != KeyStatus::Revoked && !retiring {
                e.1 += 1;
            }
        }
        for ((store, name), (all, live)) in &per_name {
            assert!(
                *live <= 1,
                "{context}: {live} non-revoked keys named {store}/{name}"
            );
            if let Some((_, _, n)) = expected_count
                .iter()
                .find(|(s, nm, _)| s == store && nm == name)
            {
                assert_eq!(all, n, "{context}: keys named {store}/{name}");
            }
        }
        for (s, nm, n) in expected_count {
            if *n > 0 {
                assert!(
                    per_name.contains_key(&(s.to_string(), nm.to_string())),
                    "{context}: {s}/{nm} missing from the store"
                );
            }
        }
        let stores: std::collections::BTreeMap<&str, &dyn keyward::store::Store> =
            open.iter().map(|(n, s)| (n.as_str(), s.as_ref())).collect();
        for (store, k) in &keys {
            if k.managed_by.as_deref() != Some("keyward")
                || k.status == KeyStatus::Revoked
                || k.labels.contains_key(keyward::diff::REPLACED_BY)
            {
                continue;
            }
            let dir = self
                .root()
                .join("deliveries")
                .join(store)
                .join(&k.name)
                .join(format!("g{}", k.generation));
            let m = read_json(&dir.join("manifest.json"))
                .unwrap_or_else(|e| panic!("{context}: {store}/{}: {e}", k.name));
            assert_eq!(m["key_id"], k.id.as_str(), "{context}: {}", dir.display());
            assert_eq!(m["status"], "active", "{context}: {}", dir.display());
            assert!(
                !k.recipients.is_empty(),
                "{context}: {} has no recipients",
                k.name
            );
            for who in k.recipients.keys() {
                let env = dir.join(format!("{who}.age"));
                let doc = decrypt_file(&env, &self.identity(who))
                    .unwrap_or_else(|e| panic!("{context}: {}: {e}", env.display()));
                assert_eq!(doc["id"], k.id.as_str(), "{context}: {}", env.display());
                assert_eq!(
                    doc["generation"],
                    k.generation,
                    "{context}: {}",
                    env.display()
                );
                let secret = doc["secret"]
                    .as_str()
                    .expect("secret in envelope")
                    .to_string();
                let verdict = rt
                    .block_on(stores[store.as_str()].verify(&secret, chrono::Utc::now()))
                    .expect("verify");
                let want = if k.status == KeyStatus::Active {
                    "ok"
                } else {
                    "disabled"
                };
                let got = serde_json::to_value(verdict.reason).expect("reason");
                assert_eq!(got, want, "{context}: {store}/{} as {who}", k.name);
                if let Some(v) = &verdict.key {
                    assert_eq!(v.id, k.id, "{context}: verified as another key");
                }
                secrets.push(secret);
            }
        }
        let ids: std::collections::BTreeSet<(&str, &str)> = keys
            .iter()
            .map(|(s, k)| (s.as_str(), k.id.as_str()))
            .collect();
        for e in walkdir::WalkDir::new(self.root().join("deliveries"))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_name() == "manifest.json")
        {
            let m = read_json(e.path()).expect("manifest");
            assert_ne!(m["status"], "pending", "{context}: {}", e.path().display());
            if m["status"] == "active" {
                let store = m["store"].as_str().unwrap_or_default();
                let id = m["key_id"].as_str().unwrap_or_default();
                assert!(
                    ids.contains(&(store, id)),
                    "{context}: {} is active for key {id} that {store} does not have",
                    e.path().display()
                );
            }
        }
        secrets.sort();
        secrets.dedup();
        secrets
    }

    /// `plan --detailed-exitcode` says there is nothing to do.
    pub fn assert_plan_empty(&self, context: &str) {
        let o = self.run(&["plan", "--detailed-exitcode"]);
        assert_eq!(
            o.code,
            0,
            "{context}: expected no changes, got: {}",
            o.all()
        );
        assert!(o.stdout.contains("No changes."), "{context}: {}", o.stdout);
    }
}

/// Every key of each of `stores`, as (store name, key).
pub fn live_keys_in(
    stores: &[(String, std::sync::Arc<dyn keyward::store::Store>)],
) -> Vec<(String, keyward::store::LiveKey)> {
    use keyward::store::{ListFilter, list_all};
    let rt = runtime();
    let mut out = Vec::new();
    for (name, store) in stores {
        let keys = rt
            .block_on(list_all(store.as_ref(), &ListFilter::default()))
            .expect("list keys");
        out.extend(keys.into_iter().map(|k| (name.clone(), k)));
    }
    out
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("parse {}: {e}", path.display()))
}

/// Decrypt an armored age envelope with the identity file at `identity` (plain age, not
/// keyward's code) and parse the JSON document inside.
pub fn decrypt_file(path: &Path, identity: &Path) -> Result<serde_json::Value, String> {
    use std::io::Read;
    use std::str::FromStr;
    let text = std::fs::read_to_string(identity).map_err(|e| e.to_string())?;
    let id = age::x25519::Identity::from_str(text.trim()).map_err(|e| e.to_string())?;
    let file = std::fs::File::open(path).map_err(|e| format!("open: {e}"))?;
    let dec = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(
        std::io::BufReader::new(file),
    ))
    .map_err(|e| format!("not an age file: {e}"))?;
    let mut r = dec
        .decrypt(std::iter::once(&id as &dyn age::Identity))
        .map_err(|e| format!("decrypt: {e}"))?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| e.to_string())?;
    serde_json::from_slice(&out).map_err(|e| format!("envelope JSON: {e}"))
}

/// A key as a vendor console makes it in the production store (unmanaged: no `managed_by`,
/// no recipients, active, issued now, no expiry), and its secret. Callers adjust fields.
pub fn console_new_key(name: &str, owner: &str, scope: &str) -> (keyward::store::NewKey, String) {
    let id = keyward::secret::new_key_id();
    let secret = keyward::secret::generate("production", &id);
    let key = keyward::store::NewKey {
        id,
        name: name.into(),
        environment: "production".into(),
        owner: owner.into(),
        purpose: None,
        scopes: vec![scope.into()],
        labels: Default::default(),
        status: keyward::store::KeyStatus::Active,
        issued_at: chrono::Utc::now(),
        expires_at: None,
        lifetime: None,
        generation: 1,
        spec_generation: 1,
        recipients: Default::default(),
        quota_per_day: None,
        protected: false,
        managed_by: None,
        applied_digest: None,
        secret_hash: secret.hash(),
    };
    (key, secret.expose().to_string())
}
