//! The console checklist at a real terminal: tests/pty/checklist.py (Python's pexpect)
//! drives the real binary through a pseudo-terminal. It checks that echo is off at the paste
//! prompt, that wrong shapes (an age key, another vendor's value, an empty line, two lines)
//! are refused and asked again, that Ctrl-C and a kill between "made" and "pasted" leave a
//! step the next apply resumes, that a revoke is confirmed and an audit answered. This file then checks the
//! ledger, opens the deliveries with `age -d`, and scans every byte written and shown for
//! the pasted values.

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
    let outside = tempfile::tempdir().unwrap();
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
    let values_path = outside.path().join("values.json");
    std::fs::write(&values_path, values.to_string()).unwrap();
    let d = Drive {
        values: values_path,
        transcript: outside.path().join("terminal.txt"),
        repo,
        outside,
    };

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
        let tail = &v[4..];
        assert!(!shown.contains(tail), "a pasted value was shown:\n{shown}");
        for e in walkdir::WalkDir::new(d.repo.path())
            .into_iter()
            .filter_map(Result::ok)
        {
            let p = e.path();
            if !e.file_type().is_file() || p.extension().is_some_and(|x| x == "age") {
                continue;
            }
            let bytes = std::fs::read(p).unwrap();
            assert!(
                !bytes.windows(tail.len()).any(|w| w == tail.as_bytes()),
                "a pasted value is in {}",
                p.display()
            );
        }
    }
    assert!(shown.contains("refused: "), "{shown}");
    let _ = &d.outside;
}
