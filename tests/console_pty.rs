//! The console checklist at a real terminal: tests/pty/checklist.py (Python's pexpect)
//! drives the real binary through a pseudo-terminal. It checks that echo is off at the paste
//! prompt, that wrong shapes (an age key, another vendor's value, an empty line, two lines)
//! are refused and asked again, that Ctrl-C and a kill between "made" and "pasted" leave a
//! step the next apply resumes, that a revoke is confirmed and an audit answered, and that
//! `keyward import --store X` reads each adopted key's value the same way. This file then
//! checks the ledger, opens the deliveries with `age -d`, and scans every byte written and
//! shown for the pasted values.

mod common;
mod needs;

use std::path::{Path, PathBuf};
use std::process::Command;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "ledger" || name == "deliveries" {
            continue;
        }
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

fn alma_value() -> String {
    let h = keyward::secret::hash_presented(&keyward::secret::new_key_id());
    format!("l7xx{}", &h.0[..32])
}

struct Drive {
    repo: tempfile::TempDir,
    outside: tempfile::TempDir,
    values: PathBuf,
    transcript: PathBuf,
}

impl Drive {
    /// Drive the repository `repo`, with the `values` to paste in a file outside it.
    fn new(repo: tempfile::TempDir, values: serde_json::Value) -> Drive {
        let outside = tempfile::tempdir().unwrap();
        let values_path = outside.path().join("values.json");
        std::fs::write(&values_path, values.to_string()).unwrap();
        Drive {
            values: values_path,
            transcript: outside.path().join("terminal.txt"),
            repo,
            outside,
        }
    }
    fn scenario(&self, name: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pty/checklist.py");
        let o = Command::new("python3")
            .arg(script)
            .arg(name)
            .arg(assert_cmd::cargo::cargo_bin("keyward"))
            .arg(self.repo.path())
            .arg(&self.values)
            .arg(&self.transcript)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "scenario {name}: {}{}\n--- terminal ---\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(&self.transcript).unwrap_or_default()
        );
    }
    fn ledger(&self, store: &str) -> serde_yaml::Value {
        let p = self.repo.path().join(format!("ledger/{store}.yaml"));
        serde_yaml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }
    fn age_open(&self, store: &str, name: &str, g: u32, who: &str) -> String {
        let root = self.repo.path();
        let o = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(root.join(format!("demo-identities/{who}.txt")))
            .arg(root.join(format!("deliveries/{store}/{name}/g{g}/{who}.age")))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["secret"].as_str().unwrap().to_string()
    }
}

#[test]
fn the_checklist_at_a_terminal_hides_refuses_resumes_and_confirms() {
    if !needs::tool(&needs::PEXPECT) {
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/consoles"),
        repo.path(),
    );
    let production = alma_value();
    let sandbox = alma_value();
    let (first_half, second_half) = production.split_at(18);
    let values = serde_json::json!({
        "production": production,
        "sandbox": sandbox,
        "first_half": first_half,
        "second_half": second_half,
        "openathens": "3c1f0e2a-77b9-4d1e-9a55-0f6d2b8c4e11",
    });
    let d = Drive::new(repo, values);

    d.scenario("create");
    let k = &d.ledger("alma-production")["keys"][0];
    let fp = format!("sha256:{}", keyward::secret::hash_presented(&production).0);
    assert_eq!(
        k["fingerprint"],
        fp.as_str(),
        "the value pasted after the refusals"
    );
    assert_eq!(k["confirmed"][0]["by"], "jdoe");

    d.scenario("interrupt");
    let ledger = d.ledger("alma-sandbox");
    assert_eq!(ledger["pending"][0]["key"], "illiad-barcode-lookup");
    assert_eq!(ledger["pending"][0]["made"], true);
    assert_eq!(ledger["keys"].as_sequence().map(Vec::len), Some(0));
    d.scenario("resume");
    let ledger = d.ledger("alma-sandbox");
    assert!(ledger.get("pending").is_none(), "the resumed step is done");
    let fp = format!("sha256:{}", keyward::secret::hash_presented(&sandbox).0);
    assert_eq!(ledger["keys"][0]["fingerprint"], fp.as_str());

    d.scenario("audit");
    let ledger = d.ledger("alma-sandbox");
    assert_eq!(ledger["audited"]["by"], "jdoe");
    assert_eq!(ledger["keys"][0]["status"], "active");

    if needs::part(&needs::AGE, "opening the deliveries with age -d") {
        for who in ["jdoe", "asmith", "illiad-server"] {
            assert_eq!(
                d.age_open("alma-production", "illiad-barcode-lookup", 1, who),
                production
            );
        }
        assert_eq!(
            d.age_open("alma-sandbox", "illiad-barcode-lookup", 1, "asmith"),
            sandbox
        );
    }

    let keys = d.repo.path().join("keys/alma.yaml");
    let text = std::fs::read_to_string(&keys).unwrap();
    let text = text.replacen(
        "    labels: { ticket: LSIS-1234 }\n",
        "    labels: { ticket: LSIS-1234 }\n    state: revoked\n",
        1,
    );
    std::fs::write(&keys, text).unwrap();
    d.scenario("revoke");
    let k = &d.ledger("alma-production")["keys"][0];
    assert_eq!(k["status"], "revoked");

    // The canary: no pasted value (nor its tail) in any file but the envelopes, nor on the
    // terminal.
    let shown = std::fs::read_to_string(&d.transcript).unwrap();
    for v in [&production, &sandbox] {
        assert!(
            !shown.contains(&v[4..]),
            "a pasted value was shown:\n{shown}"
        );
    }
    common::assert_only_in_envelopes(d.repo.path(), &[&production, &sandbox]);
    assert!(shown.contains("refused: "), "{shown}");
    let _ = &d.outside;
}

#[test]
fn import_at_a_terminal_reads_each_value_hidden_refuses_wrong_shapes_and_delivers() {
    if !needs::tool(&needs::PEXPECT) {
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/consoles"),
        root,
    );
    let bin = assert_cmd::cargo::cargo_bin("keyward");
    let o = Command::new(&bin)
        .arg("-C")
        .arg(root)
        .args(["import", "--store", "alma-sandbox"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = root.join("import-alma-sandbox.yaml");
    let text = std::fs::read_to_string(&t).unwrap();
    std::fs::write(
        &t,
        text.replace(
            "keys: []\n",
            "keys:\n  - name: course-reserves\n    owner: jdoe\n    purpose: Course reserves sync\n    scopes: [courses:read, bibs:read]\n    recipients: [team:ill-staff]\n    value: paste\n  - name: ill-requests\n    owner: asmith\n    purpose: ILL request export\n    scopes: [resource-sharing:read]\n    recipients: [illiad-server]\n    value: paste\n  - name: old-report\n    owner: asmith\n    purpose: Monthly analytics export\n    scopes: [analytics:read]\n    value: undelivered\n",
        ),
    )
    .unwrap();
    let (a, b) = (alma_value(), alma_value());
    let d = Drive::new(
        repo,
        serde_json::json!({
            "import_a": a,
            "import_b": b,
            "openathens": "3c1f0e2a-77b9-4d1e-9a55-0f6d2b8c4e11",
        }),
    );
    d.scenario("import");

    assert!(!t.exists(), "the template is consumed");
    let ledger = d.ledger("alma-sandbox");
    let keys = ledger["keys"].as_sequence().unwrap();
    let by = |n: &str| keys.iter().find(|k| k["name"] == n).unwrap().clone();
    for (name, v) in [("course-reserves", &a), ("ill-requests", &b)] {
        let fp = format!("sha256:{}", keyward::secret::hash_presented(v).0);
        assert_eq!(by(name)["fingerprint"], fp.as_str(), "{name}");
        assert_eq!(by(name)["confirmed"][0]["step"], "import");
    }
    assert_eq!(by("old-report")["undelivered"], true);
    if needs::part(&needs::AGE, "opening the imported deliveries with age -d") {
        for who in ["jdoe", "asmith"] {
            assert_eq!(d.age_open("alma-sandbox", "course-reserves", 1, who), a);
        }
        assert_eq!(
            d.age_open("alma-sandbox", "ill-requests", 1, "illiad-server"),
            b
        );
    }
    // The imported keys need no change.
    let o = Command::new(&bin)
        .arg("-C")
        .arg(d.repo.path())
        .args(["plan", "--format", "json", "--only", "alma-sandbox/*"])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["illiad-barcode-lookup"],
        "only the example's pending key"
    );

    // The canary: neither value (nor its tail) in any file but the envelopes, nor on the
    // terminal, nor in what plan printed.
    let shown = std::fs::read_to_string(&d.transcript).unwrap();
    let printed = format!("{shown}{}", String::from_utf8_lossy(&o.stdout));
    for v in [&a, &b] {
        assert!(
            !printed.contains(&v[4..]),
            "a pasted value was shown:\n{shown}"
        );
    }
    common::assert_only_in_envelopes(d.repo.path(), &[&a, &b]);
    let _ = &d.outside;
}
