//! `apply` on console stores, driving the real binary on a copy of examples/consoles:
//! `--console-input` creates, rotates and revokes; every delivery opens with the age CLI;
//! the plan is empty afterwards; without a terminal apply exits 3 and leaves the ledger
//! untouched; a kill between paste and ledger write is resumed; the ledger fits its schema;
//! and no pasted value appears in any byte written except the envelopes; an ALM key takes
//! its Client ID, keeps it through a regenerate, and is disabled and deleted by
//! confirmation; `--commit-deliveries` commits the ledgers; a field the console cannot
//! edit is a replace; a second apply is refused while the first holds the store.

mod common;
mod needs;

use assert_cmd::Command;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// A copy of examples/consoles in a temp dir, and a second temp dir (outside the repo) for
/// the --console-input files.
struct Example {
    repo: tempfile::TempDir,
    outside: tempfile::TempDir,
    /// Every stdout/stderr byte the binary wrote, for the canary scan.
    printed: std::cell::RefCell<String>,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "ledger" || name == "deliveries" || name == ".keyward" {
            continue;
        }
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(&name));
        } else {
            std::fs::copy(&p, to.join(&name)).unwrap();
        }
    }
}

impl Example {
    fn new() -> Example {
        let repo = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/consoles");
        copy_dir(&src, repo.path());
        Example {
            repo,
            outside: tempfile::tempdir().unwrap(),
            printed: Default::default(),
        }
    }
    fn root(&self) -> &Path {
        self.repo.path()
    }
    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("keyward").unwrap();
        c.arg("-C").arg(self.root());
        c.env_remove("KEYWARD_FAILPOINT");
        c.env("HOME", self.outside.path());
        c.env("NO_COLOR", "1");
        c.env("KEYWARD_ACTOR", "jdoe");
        c
    }
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut c = self.cmd();
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.write_stdin(Vec::new());
        let o = c.output().unwrap();
        let out = Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        self.printed.borrow_mut().push_str(&out.all());
        out
    }
    /// A 0600 --console-input file (outside the repository).
    fn input(&self, name: &str, json: &serde_json::Value) -> PathBuf {
        let p = self.outside.path().join(name);
        std::fs::write(&p, serde_json::to_vec(json).unwrap()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
    fn apply_with(&self, name: &str, json: serde_json::Value, extra: &[&str]) -> Out {
        let p = self.input(name, &json);
        let mut args = vec![
            "apply",
            "--auto-approve",
            "--console-input",
            p.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.run(&args, &[])
    }
    fn ledger(&self, store: &str) -> serde_yaml::Value {
        let text =
            std::fs::read_to_string(self.root().join("ledger").join(format!("{store}.yaml")))
                .unwrap();
        serde_yaml::from_str(&text).unwrap()
    }
    /// Add store `line` (YAML under `stores:`) and write `keys/{file}` with `keys`.
    fn add_store(&self, line: &str, file: &str, keys: &str) {
        self.edit("keyward.yaml", "stores:\n", &format!("stores:\n  {line}\n"));
        std::fs::write(self.root().join("keys").join(file), keys).unwrap();
    }
    fn edit(&self, rel: &str, from: &str, to: &str) {
        let p = self.root().join(rel);
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.contains(from), "{rel} has {from}");
        std::fs::write(&p, s.replacen(from, to, 1)).unwrap();
    }

    /// No value appears in any file of the repository except the envelopes, nor in
    /// anything the binary printed.
    fn assert_no_canary(&self, values: &[&str]) {
        common::assert_only_in_envelopes(self.root(), values);
        let printed = self.printed.borrow();
        for v in values {
            assert!(!printed.contains(&v[4..]), "a pasted value was printed");
        }
    }
}

/// A fresh Alma-shaped value: `l7xx` + 32 lowercase hex digits.
fn alma_value() -> String {
    let id = keyward::secret::new_key_id();
    let h = keyward::secret::hash_presented(&id);
    format!("l7xx{}", &h.0[..32])
}

fn fingerprint(v: &str) -> String {
    format!("sha256:{}", keyward::secret::hash_presented(v).0)
}

/// The ledger fits schemas/ledger.schema.json (boon).
fn check_schema(ledger: &serde_yaml::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/ledger.schema.json");
    let schema: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    compiler.add_resource("ledger.schema.json", schema).unwrap();
    let idx = compiler
        .compile("ledger.schema.json", &mut schemas)
        .unwrap();
    let json = serde_json::to_value(ledger).unwrap();
    schemas
        .validate(&json, idx)
        .unwrap_or_else(|e| panic!("the ledger breaks its schema: {e:#}"));
}

/// `age -d` opens the delivery of `store/name` (generation `g`) for `who`; returns the secret.
fn age_open(ex: &Example, store: &str, name: &str, g: u32, who: &str) -> String {
    age_envelope(ex, store, name, g, who)["secret"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `age -d` opens the delivery of `store/name` (generation `g`) for `who`: the envelope.
fn age_envelope(ex: &Example, store: &str, name: &str, g: u32, who: &str) -> serde_json::Value {
    let file = ex
        .root()
        .join(format!("deliveries/{store}/{name}/g{g}/{who}.age"));
    let id = ex.root().join(format!("demo-identities/{who}.txt"));
    let o = std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&id)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "age -d {}: {}",
        file.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["key"], name);
    assert_eq!(v["store"], store);
    v
}

#[test]
fn console_input_creates_delivers_rotates_and_revokes_and_the_plan_is_empty_after() {
    let ex = Example::new();
    let prod = alma_value();
    let sandbox = alma_value();
    let primo = alma_value();
    let oa = "3c1f0e2a-77b9-4d1e-9a55-0f6d2b8c4e11".to_string();
    let o = ex.apply_with(
        "create.json",
        serde_json::json!({
            "alma-production/illiad-barcode-lookup": {"secret": prod},
            "alma-sandbox/illiad-barcode-lookup": {"secret": sandbox},
            "discovery-search": {"secret": primo},
            "ezproxy-local-auth": {"secret": oa},
        }),
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stderr
            .contains("Apply complete: 4 change(s) applied, 0 failed."),
        "{}",
        o.all()
    );
    let ledger = ex.ledger("alma-production");
    check_schema(&ledger);
    let k = &ledger["keys"][0];
    assert_eq!(k["name"], "illiad-barcode-lookup");
    assert_eq!(k["fingerprint"], fingerprint(&prod).as_str());
    assert_eq!(k["status"], "active");
    assert_eq!(k["confirmed"][0]["step"], "create");
    assert_eq!(k["confirmed"][0]["by"], "jdoe");
    assert!(ledger.get("pending").is_none(), "nothing left pending");
    check_schema(&ex.ledger("openathens"));

    if needs::part(&needs::AGE, "opening the console deliveries with age -d") {
        for who in ["jdoe", "asmith", "illiad-server"] {
            assert_eq!(
                age_open(&ex, "alma-production", "illiad-barcode-lookup", 1, who),
                prod
            );
        }
        assert_eq!(
            age_open(&ex, "alma-sandbox", "illiad-barcode-lookup", 1, "asmith"),
            sandbox
        );
        assert_eq!(
            age_open(&ex, "primo-production", "discovery-search", 1, "asmith"),
            primo
        );
        assert_eq!(
            age_open(&ex, "openathens", "ezproxy-local-auth", 1, "jdoe"),
            oa
        );
    }
    let o = ex.run(&["plan", "--detailed-exitcode"], &[]);
    assert_eq!(
        o.code,
        0,
        "the plan is empty after the checklist: {}",
        o.all()
    );

    let o = ex.run(&["expiring", "--within", "400d"], &[]);
    assert!(
        o.stdout.contains("alma-production/illiad-barcode-lookup"),
        "{}",
        o.all()
    );
    assert!(
        o.stdout.contains("openathens/ezproxy-local-auth"),
        "{}",
        o.all()
    );

    // Rotation: the old value is refused as a paste; a new one is delivered as g2.
    ex.edit(
        "keys/alma.yaml",
        "    recipients: [team:ill-staff]\n",
        "    recipients: [team:ill-staff]\n    rotation: { generation: 2 }\n",
    );
    // The console stops the old value at once, and the plan says so (no grace).
    let o = ex.run(&["plan"], &[]);
    assert!(
        o.stdout.contains("the old value stops working at once: you delete the old key in the Developer Network right after pasting the new one"),
        "{}",
        o.all()
    );
    assert!(
        !o.stdout.contains("previous secret valid until"),
        "{}",
        o.all()
    );
    assert!(
        !o.stdout.contains("no overlap on rotation"),
        "said once, in the vendor's words: {}",
        o.all()
    );
    let o = ex.apply_with(
        "old.json",
        serde_json::json!({"alma-sandbox/illiad-barcode-lookup": {"secret": sandbox}}),
        &[],
    );
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(
        o.stderr
            .contains("already recorded for `illiad-barcode-lookup`"),
        "{}",
        o.all()
    );
    assert!(o.stderr.contains("1 manual step pending for store alma-sandbox; run `keyward apply --store alma-sandbox` at a terminal"), "{}", o.all());
    let rotated = alma_value();
    let o = ex.apply_with(
        "new.json",
        serde_json::json!({"illiad-barcode-lookup": {"secret": rotated}}),
        &["--store", "alma-sandbox"],
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(ex.ledger("alma-sandbox")["keys"][0]["generation"], 2);
    if needs::part(&needs::AGE, "opening the rotated delivery with age -d") {
        assert_eq!(
            age_open(&ex, "alma-sandbox", "illiad-barcode-lookup", 2, "jdoe"),
            rotated
        );
    }

    // Revoke through the checklist: confirmed done.
    ex.edit(
        "keys/primo.yaml",
        "    scopes: [primo-search:read]\n",
        "    scopes: [primo-search:read]\n    state: revoked\n",
    );
    let o = ex.apply_with(
        "revoke.json",
        serde_json::json!({"discovery-search": {"done": true}}),
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stderr
            .contains("- primo-production/discovery-search: revoke done"),
        "{}",
        o.all()
    );
    let ledger = ex.ledger("primo-production");
    assert_eq!(ledger["keys"][0]["status"], "revoked");
    assert_eq!(ledger["keys"][0]["confirmed"][1]["step"], "revoke");
    let o = ex.run(&["plan", "--detailed-exitcode"], &[]);
    assert_eq!(o.code, 0, "{}", o.all());

    ex.assert_no_canary(&[&prod, &sandbox, &primo, &oa, &rotated]);
}

#[test]
fn without_a_terminal_apply_applies_the_other_stores_and_exits_3_with_the_ledger_untouched() {
    let ex = Example::new();
    ex.add_store(
        "local: { kind: sqlite, path: .keyward/local.db, environment: sandbox }",
        "local.yaml",
        "keys:\n  - name: local-test\n    store: local\n    owner: jdoe\n    purpose: a key keyward makes itself\n    scopes: [bibs:read]\n",
    );
    let o = ex.run(&["apply", "--auto-approve"], &[]);
    assert_eq!(o.code, 3, "{}", o.all());
    for store in [
        "alma-production",
        "alma-sandbox",
        "openathens",
        "primo-production",
    ] {
        assert!(
            o.stderr.contains(&format!("1 manual step pending for store {store}; run `keyward apply --store {store}` at a terminal")),
            "{store}: {}",
            o.all()
        );
    }
    assert!(
        o.stderr.contains("+ local/local-test: create done"),
        "the other store is applied: {}",
        o.all()
    );
    assert!(!ex.root().join("ledger").exists(), "no ledger is written");
    assert!(
        !ex.root().join("deliveries/alma-production").exists(),
        "nothing is delivered for a console"
    );

    // A group-readable input file is refused before anything is recorded.
    let p = ex.input(
        "loose.json",
        &serde_json::json!({"discovery-search": {"secret": alma_value()}}),
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    let o = ex.run(
        &[
            "apply",
            "--auto-approve",
            "--console-input",
            p.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(
        o.stderr.contains("readable or writable by group or others"),
        "{}",
        o.all()
    );
    assert!(!ex.root().join("ledger").exists());
}

#[test]
fn a_kill_between_paste_and_ledger_write_leaves_a_step_the_next_apply_resumes() {
    let ex = Example::new();
    let value = alma_value();
    let p = ex.input(
        "one.json",
        &serde_json::json!({"illiad-barcode-lookup": {"secret": value}}),
    );
    let args = [
        "apply",
        "--auto-approve",
        "--store",
        "alma-production",
        "--console-input",
        p.to_str().unwrap(),
    ];
    let o = ex.run(&args, &[("KEYWARD_FAILPOINT", "after-pending:exit")]);
    assert_eq!(o.code, 86, "killed at the failpoint: {}", o.all());
    let ledger = ex.ledger("alma-production");
    assert_eq!(
        ledger["keys"].as_sequence().map(Vec::len),
        Some(0),
        "the key is not recorded"
    );
    assert_eq!(ledger["pending"][0]["key"], "illiad-barcode-lookup");
    assert_eq!(ledger["pending"][0]["made"], true);
    check_schema(&ledger);
    let manifest = ex
        .root()
        .join("deliveries/alma-production/illiad-barcode-lookup/g1/manifest.json");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(m["status"], "pending");

    // Without an answer the step stays pending (exit 3), the ledger as it was; the
    // delivery of a value the ledger never recorded is voided (it is pasted again).
    let before = std::fs::read(ex.root().join("ledger/alma-production.yaml")).unwrap();
    let o = ex.run(
        &["apply", "--auto-approve", "--store", "alma-production"],
        &[],
    );
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(
        o.stderr.contains("recovered an interrupted delivery")
            && o.stderr.contains("never registered; voided"),
        "{}",
        o.all()
    );
    assert!(
        o.stdout
            .contains("create (begun: made in the console, value not yet pasted)"),
        "the plan says the step was begun: {}",
        o.all()
    );
    assert_eq!(
        std::fs::read(ex.root().join("ledger/alma-production.yaml")).unwrap(),
        before
    );

    let o = ex.run(&args, &[]);
    assert_eq!(o.code, 0, "{}", o.all());
    let ledger = ex.ledger("alma-production");
    assert_eq!(
        ledger["keys"][0]["fingerprint"],
        fingerprint(&value).as_str()
    );
    assert!(ledger.get("pending").is_none());
    let o = ex.run(
        &["plan", "--detailed-exitcode", "--only", "alma-production/*"],
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.all());
    if needs::part(&needs::AGE, "opening the resumed delivery with age -d") {
        assert_eq!(
            age_open(&ex, "alma-production", "illiad-barcode-lookup", 1, "jdoe"),
            value
        );
    }
    ex.assert_no_canary(&[&value]);
}

#[test]
fn the_shipped_example_has_a_ledger_and_a_pending_checklist_in_every_plan_format() {
    let ex = Example::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/consoles");
    copy_dir(&src.join("ledger"), &ex.root().join("ledger"));
    copy_dir(&src.join("deliveries"), &ex.root().join("deliveries"));
    let ledger_before = std::fs::read(ex.root().join("ledger/alma-production.yaml")).unwrap();
    check_schema(&ex.ledger("alma-production"));

    let o = ex.run(
        &["plan", "--detailed-exitcode", "--format", "markdown"],
        &[],
    );
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(
        o.stdout
            .contains("**3 step(s) to do by hand in vendor consoles**"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("#### Console steps (by hand, at a terminal)"),
        "{}",
        o.stdout
    );
    for (store, key) in [
        ("alma-sandbox", "illiad-barcode-lookup"),
        ("openathens", "ezproxy-local-auth"),
        ("primo-production", "discovery-search"),
    ] {
        assert!(
            o.stdout
                .contains(&format!("<code>{store}/{key}</code> **create**")),
            "{store}: {}",
            o.stdout
        );
        assert!(
            o.stdout.contains(&format!("keyward apply --store {store}")),
            "{}",
            o.stdout
        );
    }
    assert!(
        o.stdout
            .contains("Click Save: the key is generated on save."),
        "the vendor's own step: {}",
        o.stdout
    );
    assert!(!o.stdout.contains("alma-production/illiad-barcode-lookup"));

    let o = ex.run(&["plan", "--format", "json"], &[]);
    let plan: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let steps = plan["console_steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{}", o.stdout);
    assert_eq!(steps[1]["store"], "openathens");
    assert_eq!(steps[1]["action"], "create");

    // CI: nothing waits, nothing is recorded, exit 3 naming each store.
    let o = ex.run(&["apply", "--auto-approve"], &[]);
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(
        o.stderr.contains("1 manual step pending for store openathens; run `keyward apply --store openathens` at a terminal"),
        "{}",
        o.all()
    );
    assert_eq!(
        std::fs::read(ex.root().join("ledger/alma-production.yaml")).unwrap(),
        ledger_before
    );
    assert!(!ex.root().join("ledger/openathens.yaml").exists());

    // The nightly report: the console key, and who renews it where.
    let o = ex.run(&["expiring", "--within", "400d"], &[]);
    assert!(
        o.stdout.contains("alma-production/illiad-barcode-lookup"),
        "{}",
        o.all()
    );
    // Alma keys never expire (the console sets no expiry): the example rotates this one
    // yearly, and the report carries the console steps of that rotation.
    assert!(
        o.stdout.contains("an admin rotates it (rotation every 365d) with `keyward apply --store alma-production` at a terminal, in the Ex Libris Developer Network"),
        "{}",
        o.all()
    );
    assert!(
        o.stdout.contains("the old one stops working at once"),
        "{}",
        o.all()
    );
    assert!(
        o.stdout.contains("steps in the console:\n        1. Open https://developers.exlibrisgroup.com\n        2. In the Ex Libris Developer Network, create a new API key named `illiad-barcode-lookup` for Alma production with the same areas"),
        "{}",
        o.all()
    );
    // ...and, after the keys, the steps still pending in the consoles.
    assert!(
        o.stdout.contains("Console steps pending (by hand, in the vendor console): 3\n  - alma-sandbox/illiad-barcode-lookup: create"),
        "{}",
        o.all()
    );
    assert!(
        !ex.ledger("alma-production")["keys"][0]
            .as_mapping()
            .unwrap()
            .contains_key("expires"),
        "the ledger records no expiry the Alma console does not have"
    );

    let o = ex.run(&["apply", "--store", "nowhere", "--auto-approve"], &[]);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.stderr.contains("keyward.yaml has no store `nowhere`"),
        "{}",
        o.all()
    );

    if needs::part(&needs::AGE, "opening the example's delivery with age -d") {
        let v = age_open(&ex, "alma-production", "illiad-barcode-lookup", 1, "asmith");
        assert_eq!(
            ex.ledger("alma-production")["keys"][0]["fingerprint"],
            fingerprint(&v).as_str()
        );
    }
}

#[test]
fn an_audit_records_what_the_console_still_has_and_a_gone_key_is_drift_in_the_next_plan() {
    let ex = Example::new();
    let prod = alma_value();
    let sandbox = alma_value();
    let o = ex.apply_with(
        "create.json",
        serde_json::json!({
            "alma-production/illiad-barcode-lookup": {"secret": prod},
            "alma-sandbox/illiad-barcode-lookup": {"secret": sandbox},
        }),
        &[],
    );
    assert_eq!(o.code, 3, "two stores stay pending: {}", o.all());

    // Without a terminal nor answers, an audit refuses and records nothing.
    let before = std::fs::read(ex.root().join("ledger/alma-sandbox.yaml")).unwrap();
    let o = ex.run(&["audit", "--store", "alma-sandbox"], &[]);
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(o.stderr.contains("at a terminal"), "{}", o.all());
    assert_eq!(
        std::fs::read(ex.root().join("ledger/alma-sandbox.yaml")).unwrap(),
        before
    );

    let p = ex.input(
        "gone.json",
        &serde_json::json!({"illiad-barcode-lookup": {"done": false}}),
    );
    let o = ex.run(
        &[
            "audit",
            "--store",
            "alma-sandbox",
            "--console-input",
            p.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stderr
            .contains("Audit of alma-sandbox: 0 as listed, 1 not in the console, 0 skipped."),
        "{}",
        o.all()
    );
    let ledger = ex.ledger("alma-sandbox");
    check_schema(&ledger);
    assert_eq!(ledger["audited"]["by"], "jdoe");
    assert_eq!(ledger["keys"][0]["status"], "revoked");
    assert_eq!(ledger["keys"][0]["confirmed"][1]["step"], "audit");

    let p = ex.input(
        "listed.json",
        &serde_json::json!({"illiad-barcode-lookup": {"done": true}}),
    );
    let o = ex.run(
        &[
            "audit",
            "--store",
            "alma-production",
            "--console-input",
            p.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(ex.ledger("alma-production")["keys"][0]["status"], "active");

    let o = ex.run(&["plan", "--only", "alma-*"], &[]);
    assert!(
        o.stdout.contains(
            "alma-sandbox/illiad-barcode-lookup will be created (drift: revoked outside keyward"
        ),
        "{}",
        o.all()
    );
    assert!(
        !o.stdout
            .contains("alma-production/illiad-barcode-lookup will"),
        "{}",
        o.all()
    );
    let o = ex.run(&["audit", "--store", "nowhere"], &[]);
    assert_eq!(o.code, 1, "{}", o.all());
    ex.assert_no_canary(&[&prod, &sandbox]);
}

#[test]
fn import_adopts_the_console_keys_from_a_template_delivering_pasted_values_and_the_plan_is_empty() {
    let ex = Example::new();
    let o = ex.run(&["import", "--store", "alma-sandbox"], &[]);
    assert_eq!(o.code, 0, "{}", o.all());
    let t = ex.root().join("import-alma-sandbox.yaml");
    let text = std::fs::read_to_string(&t).unwrap();
    assert!(
        text.contains("scopes this console offers: acquisitions:read"),
        "{text}"
    );
    std::fs::write(
        &t,
        text.replace(
            "keys: []\n",
            "keys:\n  - name: course-reserves\n    owner: jdoe\n    purpose: Course reserves sync\n    scopes: [courses:read, bibs:read]\n    recipients: [team:ill-staff]\n    created: 2025-09-01\n    value: paste\n  - name: old-report\n    owner: asmith\n    purpose: Monthly analytics export\n    scopes: [analytics:read]\n    value: undelivered\n",
        ),
    )
    .unwrap();
    let canary = alma_value();
    let input = ex.input(
        "import.json",
        &serde_json::json!({"course-reserves": {"secret": canary}}),
    );
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = ex.run(
        &[
            "import",
            "--store",
            "alma-sandbox",
            "--console-input",
            input.to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(o.code, 0, "a readable input file is refused: {}", o.all());
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = ex.run(
        &[
            "import",
            "--store",
            "alma-sandbox",
            "--console-input",
            input.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(!t.exists(), "the template is consumed");
    let l = ex.ledger("alma-sandbox");
    let keys = l["keys"].as_sequence().unwrap();
    assert_eq!(keys.len(), 2);
    let cr = keys
        .iter()
        .find(|k| k["name"] == "course-reserves")
        .unwrap();
    assert_eq!(cr["fingerprint"], fingerprint(&canary).as_str());
    assert_eq!(cr["confirmed"][0]["step"], "import");
    let old = keys.iter().find(|k| k["name"] == "old-report").unwrap();
    assert_eq!(old["undelivered"], true);
    assert!(old.get("fingerprint").is_none());
    // The imported keys need no change.
    let o = ex.run(&["plan", "--format", "json"], &[]);
    let plan: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert!(
        !plan["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "course-reserves" || a["name"] == "old-report"),
        "{}",
        o.all()
    );
    // The pasted value is in no byte written except the envelopes, nor printed.
    ex.assert_no_canary(&[&canary]);
    if needs::part(&needs::AGE, "opening the imported delivery with age -d") {
        assert_eq!(
            age_open(&ex, "alma-sandbox", "course-reserves", 1, "asmith"),
            canary
        );
    }
}

#[test]
fn commit_deliveries_commits_the_console_ledgers_with_the_deliveries() {
    let ex = Example::new();
    let git = |args: &[&str]| {
        let o = std::process::Command::new("git")
            .arg("-C")
            .arg(ex.root())
            .args(args)
            .env("GIT_AUTHOR_NAME", "Jane Doe")
            .env("GIT_AUTHOR_EMAIL", "jdoe@example.edu")
            .env("GIT_COMMITTER_NAME", "Jane Doe")
            .env("GIT_COMMITTER_EMAIL", "jdoe@example.edu")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "the example"]);

    // Without --commit-deliveries: apply says which ledger to commit.
    let prod = alma_value();
    let o = ex.apply_with(
        "one.json",
        serde_json::json!({"illiad-barcode-lookup": {"secret": prod}}),
        &["--store", "alma-production"],
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stderr.contains("note: the console steps are recorded in ledger/alma-production.yaml; commit it with the deliveries"),
        "{}",
        o.all()
    );
    assert!(git(&["status", "--porcelain"]).contains("?? ledger/"));

    // With it: this run's deliveries, the earlier run's, and every ledger changed.
    let primo = alma_value();
    let o = ex.apply_with(
        "two.json",
        serde_json::json!({
            "alma-sandbox/illiad-barcode-lookup": {"secret": alma_value()},
            "discovery-search": {"secret": primo},
            "ezproxy-local-auth": {"secret": "3c1f0e2a-77b9-4d1e-9a55-0f6d2b8c4e11"},
        }),
        &["--commit-deliveries"],
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stderr
            .contains("Committed the deliveries and the console ledgers as"),
        "{}",
        o.all()
    );
    assert_eq!(
        git(&["status", "--porcelain"]),
        "",
        "nothing left to commit"
    );
    let files = git(&["show", "--name-only", "--format=", "HEAD"]);
    for f in [
        "ledger/alma-production.yaml",
        "ledger/alma-sandbox.yaml",
        "ledger/openathens.yaml",
        "ledger/primo-production.yaml",
        "deliveries/alma-production/illiad-barcode-lookup/g1/manifest.json",
        "deliveries/primo-production/discovery-search/g1/asmith.age",
    ] {
        assert!(files.contains(f), "{f} in the commit:\n{files}");
    }

    // A revoke delivers nothing, but its ledger change is committed.
    ex.edit(
        "keys/primo.yaml",
        "    scopes: [primo-search:read]\n",
        "    scopes: [primo-search:read]\n    state: revoked\n",
    );
    git(&["commit", "-qam", "revoke the Primo key"]);
    let o = ex.apply_with(
        "revoke.json",
        serde_json::json!({"discovery-search": {"done": true}}),
        &["--commit-deliveries"],
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(git(&["status", "--porcelain"]), "");
    let files = git(&["show", "--name-only", "--format=", "HEAD"]);
    assert!(
        files.lines().any(|l| l == "ledger/primo-production.yaml"),
        "{files}"
    );
    assert!(
        git(&["log", "-1", "--format=%B"])
            .contains("revoke primo-production/discovery-search (console ledger)")
    );
    ex.assert_no_canary(&[&prod, &primo]);
}

#[test]
fn an_alm_key_takes_its_client_id_regenerates_keeping_it_then_is_disabled_and_deleted() {
    let ex = Example::new();
    ex.add_store(
        "alm: { kind: console, vendor: alm, environment: production, max_lifetime: 90d }",
        "alm.yaml",
        "keys:\n  - name: ops-bridge\n    store: alm\n    owner: jdoe\n    purpose: the ops bridge reads defects\n    scopes: [api:read]\n    lifetime: 60d\n",
    );
    ex.edit(
        "keyward.yaml",
        "authentication-api, reports-api, full-access]",
        "authentication-api, reports-api, full-access, api, odata]",
    );
    let only = ["--store", "alm"];
    // A value without the Client ID the console shows with it: the step stays pending.
    let first = "alm-secret-0123456789abcdef".to_string();
    let o = ex.apply_with(
        "no-id.json",
        serde_json::json!({"ops-bridge": {"secret": first}}),
        &only,
    );
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(
        ex.ledger("alm")["keys"]
            .as_sequence()
            .is_none_or(Vec::is_empty)
    );
    let o = ex.apply_with(
        "create.json",
        serde_json::json!({"ops-bridge": {"secret": first, "client_id": "apikey-abcdef123"}}),
        &only,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    let k = &ex.ledger("alm")["keys"][0];
    assert_eq!(k["client_id"], "apikey-abcdef123");
    assert_eq!(k["fingerprint"], fingerprint(&first).as_str());
    assert!(k.get("expires").is_some(), "ALM keys carry their expiry");
    if needs::part(&needs::AGE, "opening the ALM delivery with age -d") {
        let v = age_envelope(&ex, "alm", "ops-bridge", 1, "jdoe");
        assert_eq!(v["secret"], first.as_str());
        assert_eq!(
            v["client_id"], "apikey-abcdef123",
            "the Client ID comes with it"
        );
    }

    // Rotation is ALM's revoke-then-regenerate: no grace, and the Client ID stays.
    ex.edit(
        "keys/alm.yaml",
        "    lifetime: 60d\n",
        "    lifetime: 60d\n    rotation: { generation: 2 }\n",
    );
    let o = ex.run(&["plan", "--only", "alm/*", "--format", "json"], &[]);
    let plan: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(plan["actions"][0]["action"], "rotate");
    assert!(plan["actions"][0]["grace"].is_null(), "{}", o.stdout);
    let steps = plan["console_steps"][0]["steps"].to_string();
    assert!(
        steps.contains("click Revoke Key") && steps.contains("click Regenerate Key"),
        "{steps}"
    );
    let second = "alm-secret-ffff456789abcdef".to_string();
    let o = ex.apply_with(
        "rotate.json",
        serde_json::json!({"ops-bridge": {"secret": second}}),
        &only,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    let k = &ex.ledger("alm")["keys"][0];
    assert_eq!(k["generation"], 2);
    assert_eq!(
        k["client_id"], "apikey-abcdef123",
        "regenerate keeps the Client ID"
    );
    assert_eq!(k["fingerprint"], fingerprint(&second).as_str());
    if needs::part(
        &needs::AGE,
        "opening the regenerated ALM delivery with age -d",
    ) {
        let v = age_envelope(&ex, "alm", "ops-bridge", 2, "jdoe");
        assert_eq!(v["secret"], second.as_str());
        assert_eq!(
            v["client_id"], "apikey-abcdef123",
            "the regenerated secret keeps it"
        );
    }
    // keyward's own reader says it too (written outside the repository, never printed).
    let env_file = ex.outside.path().join("ops-bridge.env");
    let id = ex.root().join("demo-identities/jdoe.txt");
    let mut c = ex.cmd();
    c.args([
        "secret",
        "ops-bridge",
        "--store",
        "alm",
        "--format",
        "env",
        "-i",
    ])
    .arg(&id)
    .arg("-o")
    .arg(&env_file);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        env.contains("KEYWARD_OPS_BRIDGE_CLIENT_ID=apikey-abcdef123\n"),
        "the env file names the Client ID"
    );

    // Disable and delete: each confirmed, then recorded; the plan is empty after each.
    for (state, status) in [("disabled", Some("disabled")), ("deleted", None)] {
        let keys = std::fs::read_to_string(ex.root().join("keys/alm.yaml")).unwrap();
        let keys = keys.replace("    state: disabled\n", "");
        std::fs::write(
            ex.root().join("keys/alm.yaml"),
            format!("{keys}    state: {state}\n"),
        )
        .unwrap();
        let o = ex.run(&["plan", "--only", "alm/*", "--format", "json"], &[]);
        let plan: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(
            plan["console_steps"][0]["action"],
            &state[..state.len() - 1]
        );
        let o = ex.apply_with(
            "confirm.json",
            serde_json::json!({"ops-bridge": {"done": true}}),
            &only,
        );
        assert_eq!(o.code, 0, "{state}: {}", o.all());
        let ledger = ex.ledger("alm");
        let keys = ledger["keys"].as_sequence().cloned().unwrap_or_default();
        match status {
            Some(s) => assert_eq!(keys[0]["status"], s),
            None => assert!(keys.is_empty(), "a deleted key leaves the ledger"),
        }
        check_schema(&ledger);
        let o = ex.run(&["plan", "--detailed-exitcode", "--only", "alm/*"], &[]);
        assert_eq!(o.code, 0, "{state}: {}", o.all());
    }
    ex.assert_no_canary(&[&first, &second]);
}

/// The steps of the first console step in `plan --format json` for `only`, and the plan.
fn json_plan(ex: &Example, only: &str) -> serde_json::Value {
    let o = ex.run(&["plan", "--only", only, "--format", "json"], &[]);
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.all()))
}

#[test]
fn a_field_the_console_cannot_edit_in_place_makes_the_plan_replace_the_key() {
    let ex = Example::new();
    let only = ["--store", "openathens"];
    let first = "3c1f0e2a-77b9-4d1e-9a55-0f6d2b8c4e11".to_string();
    let o = ex.apply_with(
        "create.json",
        serde_json::json!({"ezproxy-local-auth": {"secret": first}}),
        &only,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    let created = ex.ledger("openathens")["keys"][0].clone();

    // The permission level is editable in the OpenAthens console: an update in place.
    ex.edit(
        "keys/openathens.yaml",
        "scopes: [authentication-api:read]",
        "scopes: [reports-api:read]",
    );
    let plan = json_plan(&ex, "openathens/*");
    assert_eq!(plan["actions"][0]["action"], "update", "{plan}");
    let steps = plan["console_steps"][0]["steps"].to_string();
    assert!(steps.contains("Set Permissions to Reports API"), "{steps}");
    let o = ex.apply_with(
        "edit.json",
        serde_json::json!({"ezproxy-local-auth": {"done": true}}),
        &only,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    let k = &ex.ledger("openathens")["keys"][0];
    assert_eq!(k["fingerprint"], created["fingerprint"], "the same key");
    assert_eq!(k["scopes"][0], "reports-api:read");

    // Its expiry is not: a shorter lifetime is a new key replacing the old one.
    ex.edit("keys/openathens.yaml", "lifetime: 365d", "lifetime: 180d");
    let o = ex.run(
        &["plan", "--detailed-exitcode", "--only", "openathens/*"],
        &[],
    );
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(
        o.stdout.contains(
            "OpenAthens admin console cannot change the expiry of a key in place: replace (003: "
        ),
        "the reason names the console: {}",
        o.all()
    );
    let plan = json_plan(&ex, "openathens/*");
    let a = &plan["actions"][0];
    assert_eq!(a["action"], "replace", "{plan}");
    let expires = a["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "expires")
        .unwrap_or_else(|| panic!("{a}"));
    assert_eq!(expires["forces_replacement"], true, "{a}");
    let steps = plan["console_steps"][0]["steps"].to_string();
    assert!(
        steps.contains("click Create") && steps.contains("Then remove the old key"),
        "{steps}"
    );
    // Without the new value nothing changes.
    let before = std::fs::read(ex.root().join("ledger/openathens.yaml")).unwrap();
    let o = ex.run(&["apply", "--auto-approve"], &[]);
    assert_eq!(o.code, 3, "{}", o.all());
    let after = std::fs::read(ex.root().join("ledger/openathens.yaml")).unwrap();
    assert_eq!(before, after, "CI mode leaves the ledger untouched");

    let second = "9d2e1f3a-88c0-4e2f-8b66-1a7e3c9d5f22".to_string();
    let o = ex.apply_with(
        "replace.json",
        serde_json::json!({"ezproxy-local-auth": {"secret": second, "done": true}}),
        &only,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    let ledger = ex.ledger("openathens");
    check_schema(&ledger);
    let keys = ledger["keys"].as_sequence().unwrap();
    let active: Vec<_> = keys.iter().filter(|k| k["status"] == "active").collect();
    assert_eq!(active.len(), 1, "{ledger:?}");
    assert_eq!(active[0]["fingerprint"], fingerprint(&second).as_str());
    assert_ne!(active[0]["id"], created["id"], "a new key");
    let exp = |k: &serde_yaml::Value| {
        k["expires"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    let days = (exp(active[0]) - chrono::Utc::now()).num_days();
    assert!((178..=180).contains(&days), "expires in {days} days");
    assert!(
        keys.iter()
            .all(|k| k["id"] != created["id"] || k["status"] == "revoked"),
        "the old key is revoked: {ledger:?}"
    );
    if needs::part(
        &needs::AGE,
        "opening the replacing OpenAthens delivery with age -d",
    ) {
        assert_eq!(
            age_open(&ex, "openathens", "ezproxy-local-auth", 2, "jdoe"),
            second
        );
    }
    let o = ex.run(
        &["plan", "--detailed-exitcode", "--only", "openathens/*"],
        &[],
    );
    assert_eq!(
        o.code,
        0,
        "the plan is empty after the replace: {}",
        o.all()
    );
    ex.assert_no_canary(&[&first, &second]);
}

#[test]
fn alm_edits_no_key_in_place_so_a_scope_change_is_a_replace() {
    let ex = Example::new();
    ex.add_store(
        "alm: { kind: console, vendor: alm, environment: production, max_lifetime: 90d }",
        "alm.yaml",
        "keys:\n  - name: ops-bridge\n    store: alm\n    owner: jdoe\n    purpose: the ops bridge reads defects\n    scopes: [api:read]\n    lifetime: 60d\n",
    );
    ex.edit(
        "keyward.yaml",
        "authentication-api, reports-api, full-access]",
        "authentication-api, reports-api, full-access, api, odata]",
    );
    let o = ex.apply_with(
        "create.json",
        serde_json::json!({"ops-bridge": {"secret": "alm-secret-0123456789abcdef", "client_id": "apikey-1"}}),
        &["--store", "alm"],
    );
    assert_eq!(o.code, 0, "{}", o.all());
    ex.edit(
        "keys/alm.yaml",
        "scopes: [api:read]",
        "scopes: [api:read, odata:read]",
    );
    let o = ex.run(&["plan", "--only", "alm/*"], &[]);
    assert!(
        o.stdout.contains(
            "OpenText ALM Site Administration cannot change the scopes of a key in place: replace"
        ),
        "{}",
        o.all()
    );
    let plan = json_plan(&ex, "alm/*");
    assert_eq!(plan["actions"][0]["action"], "replace", "{plan}");
}

#[test]
fn a_second_apply_on_a_console_store_is_refused_while_the_first_holds_it() {
    let ex = Example::new();
    let first = alma_value();
    let answers = ex.input(
        "first.json",
        &serde_json::json!({"illiad-barcode-lookup": {"secret": first}}),
    );
    // The first apply pauses once its delivery is written pending (the ledger holds the
    // begun step), holding the store's lease.
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("keyward"));
    c.arg("-C").arg(ex.root());
    c.args([
        "apply",
        "--auto-approve",
        "--store",
        "alma-sandbox",
        "--console-input",
    ]);
    c.arg(&answers);
    c.env("HOME", ex.outside.path())
        .env("NO_COLOR", "1")
        .env("KEYWARD_ACTOR", "jdoe")
        .env("KEYWARD_FAILPOINT", "after-pending:sleep=8000")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let manifest = ex
        .root()
        .join("deliveries/alma-sandbox/illiad-barcode-lookup/g1/manifest.json");
    let lock = ex.root().join(".keyward/console-alma-sandbox.lock");
    let start = std::time::Instant::now();
    while !manifest.exists() {
        assert!(
            start.elapsed().as_secs() < 30,
            "the first apply never paused"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(lock.exists(), "the first apply holds the lease file");
    let ledger = || std::fs::read(ex.root().join("ledger/alma-sandbox.yaml")).unwrap();
    let (ledger_before, manifest_before) = (ledger(), std::fs::read(&manifest).unwrap());

    let other = alma_value();
    let o = ex.apply_with(
        "second.json",
        serde_json::json!({"illiad-barcode-lookup": {"secret": other}}),
        &["--store", "alma-sandbox"],
    );
    assert!(
        start.elapsed().as_secs() < 8,
        "the second apply ran while the first held the store"
    );
    assert_eq!(o.code, 3, "refused: {}", o.all());
    assert!(
        o.stderr.contains("the store is locked by jdoe@")
            && o.stderr.contains("another apply is running"),
        "{}",
        o.all()
    );
    assert_eq!(
        ledger(),
        ledger_before,
        "the second apply left the ledger untouched"
    );
    assert_eq!(std::fs::read(&manifest).unwrap(), manifest_before);

    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ex.printed.borrow_mut().push_str(&said);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the first apply finishes: {said}"
    );
    assert!(!lock.exists(), "and releases the lease");
    let k = &ex.ledger("alma-sandbox")["keys"][0];
    assert_eq!(k["fingerprint"], fingerprint(&first).as_str());
    let o = ex.run(
        &["plan", "--detailed-exitcode", "--only", "alma-sandbox/*"],
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.all());
    ex.assert_no_canary(&[&first, &other]);
}

#[test]
fn a_key_moving_out_of_a_console_is_made_and_delivered_before_the_old_one_is_removed() {
    let ex = Example::new();
    let value = alma_value();
    let o = ex.apply_with(
        "create.json",
        serde_json::json!({"illiad-barcode-lookup": {"secret": value}}),
        &["--store", "alma-production"],
    );
    assert_eq!(o.code, 0, "{}", o.all());
    // The alma-production key moves to a store keyward runs; the sandbox key of the same
    // name is left out so the move pairs with it alone.
    ex.edit(
        "keyward.yaml",
        "stores:\n",
        "stores:\n  embedded: { kind: sqlite, path: .keyward/keys.db, environment: production }\n",
    );
    ex.edit("keyward.yaml", "allow_never: [", "allow_never: [embedded, ");
    let keys = std::fs::read_to_string(ex.root().join("keys/alma.yaml")).unwrap();
    let keys = &keys[..keys
        .find("\n  - name: illiad-barcode-lookup\n    store: alma-sandbox")
        .unwrap()];
    std::fs::write(
        ex.root().join("keys/alma.yaml"),
        keys.replacen("store: alma-production", "store: embedded", 1),
    )
    .unwrap();
    let only = ["--only", "*/illiad-barcode-lookup"];
    let plan = json_plan(&ex, "*/illiad-barcode-lookup");
    assert_eq!(plan["actions"][0]["action"], "replace", "{plan}");
    assert_eq!(
        plan["console_steps"][0]["store"], "alma-production",
        "{plan}"
    );
    assert_eq!(plan["console_steps"][0]["action"], "replace", "{plan}");

    // Not confirmed: the new key is made and delivered, the old one stays in the ledger.
    let o = ex.apply_with(
        "skip.json",
        serde_json::json!({"illiad-barcode-lookup": {"done": false}}),
        &only,
    );
    assert_eq!(o.code, 3, "{}", o.all());
    let old = &ex.ledger("alma-production")["keys"][0];
    assert_eq!(
        old["status"], "active",
        "not removed without a confirmation"
    );
    let g2 = ex
        .root()
        .join("deliveries/embedded/illiad-barcode-lookup/g2/manifest.json");
    assert!(g2.exists(), "the new key is delivered first");
    let plan = json_plan(&ex, "*/illiad-barcode-lookup");
    assert_eq!(plan["actions"][0]["action"], "revoke", "{plan}");
    assert_eq!(plan["actions"][0]["store"], "alma-production", "{plan}");

    let o = ex.apply_with(
        "done.json",
        serde_json::json!({"illiad-barcode-lookup": {"done": true}}),
        &only,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(ex.ledger("alma-production")["keys"][0]["status"], "revoked");
    if needs::part(&needs::AGE, "opening the moved key's delivery with age -d") {
        let v = age_envelope(&ex, "embedded", "illiad-barcode-lookup", 2, "jdoe");
        assert!(
            v["secret"].as_str().unwrap().starts_with("kw_"),
            "a keyward secret"
        );
    }
    let o = ex.run(
        &[
            "plan",
            "--detailed-exitcode",
            "--only",
            "*/illiad-barcode-lookup",
        ],
        &[],
    );
    assert_eq!(o.code, 0, "the plan is empty after the move: {}", o.all());
    ex.assert_no_canary(&[&value]);
}

#[test]
fn enabling_a_disabled_alm_key_is_a_regenerate_with_a_new_secret_and_the_same_client_id() {
    let ex = Example::new();
    ex.add_store(
        "alm: { kind: console, vendor: alm, environment: production, max_lifetime: 90d }",
        "alm.yaml",
        "keys:\n  - name: ops-bridge\n    store: alm\n    owner: jdoe\n    purpose: the ops bridge reads defects\n    scopes: [api:read]\n    lifetime: 60d\n",
    );
    ex.edit(
        "keyward.yaml",
        "authentication-api, reports-api, full-access]",
        "authentication-api, reports-api, full-access, api, odata]",
    );
    let only = ["--store", "alm"];
    let first = "alm-secret-0123456789abcdef".to_string();
    let o = ex.apply_with(
        "create.json",
        serde_json::json!({"ops-bridge": {"secret": first, "client_id": "apikey-7"}}),
        &only,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    ex.edit(
        "keys/alm.yaml",
        "    lifetime: 60d\n",
        "    lifetime: 60d\n    state: disabled\n",
    );
    let o = ex.apply_with(
        "disable.json",
        serde_json::json!({"ops-bridge": {"done": true}}),
        &only,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(ex.ledger("alm")["keys"][0]["status"], "disabled");

    // ALM's disable is Revoke Key; only Regenerate Key brings it back, with a new secret.
    ex.edit("keys/alm.yaml", "    state: disabled\n", "");
    let plan = json_plan(&ex, "alm/*");
    let a = &plan["actions"][0];
    assert_eq!(a["action"], "rotate", "{plan}");
    assert!(
        a["reasons"].to_string().contains(
            "OpenText ALM Site Administration enables a revoked key only by regenerating it: a new secret"
        ),
        "{a}"
    );
    let steps = plan["console_steps"][0]["steps"].to_string();
    assert!(steps.contains("click Regenerate Key"), "{steps}");
    let o = ex.apply_with(
        "enable-done-only.json",
        serde_json::json!({"ops-bridge": {"done": true}}),
        &only,
    );
    assert_eq!(
        o.code,
        3,
        "a confirmation without the new secret is not enough: {}",
        o.all()
    );
    assert_eq!(ex.ledger("alm")["keys"][0]["status"], "disabled");
    let second = "alm-secret-ffff456789abcdef".to_string();
    let o = ex.apply_with(
        "enable.json",
        serde_json::json!({"ops-bridge": {"secret": second}}),
        &only,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    let k = &ex.ledger("alm")["keys"][0];
    assert_eq!(k["status"], "active");
    assert_eq!(k["generation"], 2);
    assert_eq!(k["client_id"], "apikey-7");
    assert_eq!(k["fingerprint"], fingerprint(&second).as_str());
    if needs::part(
        &needs::AGE,
        "opening the regenerated ALM delivery with age -d",
    ) {
        let v = age_envelope(&ex, "alm", "ops-bridge", 2, "jdoe");
        assert_eq!(v["secret"], second.as_str());
        assert_eq!(v["client_id"], "apikey-7");
    }
    let o = ex.run(&["plan", "--detailed-exitcode", "--only", "alm/*"], &[]);
    assert_eq!(o.code, 0, "{}", o.all());
    ex.assert_no_canary(&[&first, &second]);
}
