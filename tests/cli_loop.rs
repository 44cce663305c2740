//! The whole loop through the real binary: YAML -> plan -> apply -> age delivery -> the
//! store accepts exactly the delivered secret. Real SQLite files, real age, temp repos.

mod common;
mod needs;
use common::{Repo, contains};

const TWO_KEYS: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    purpose: ILL barcode lookup
    scopes: [bibs:read, users:read]
    recipients: [team:ill-staff]
  - name: reports
    store: alma-sandbox
    owner: asmith
    scopes: [analytics:read]
    lifetime: 90d
  - name: keep-me
    store: alma-production
    owner: rkumar
    scopes: [courses:read]
    protected: true
";

fn apply(r: &Repo) -> common::Out {
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "apply failed: {}", o.all());
    o
}

fn assert_no_changes(r: &Repo) {
    let o = r.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(o.code, 0, "expected no changes, got: {}", o.all());
    assert!(o.stdout.contains("No changes."), "{}", o.stdout);
}

#[test]
fn plan_apply_deliver_and_verify_then_nothing_left() {
    let r = Repo::new(TWO_KEYS);
    let p = r.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(p.code, 2, "{}", p.all());
    assert!(p.stdout.contains("+ key \"ill-lookup\""), "{}", p.stdout);
    assert!(
        p.stdout.contains("Plan: 3 to create, 0 to update"),
        "{}",
        p.stdout
    );

    apply(&r);
    assert_no_changes(&r);

    // Both team members can read the production key; it is the secret the store accepts.
    let s1 = r.secret("ill-lookup", "alma-production", "jdoe");
    let s2 = r.secret("ill-lookup", "alma-production", "asmith");
    assert_eq!(s1, s2);
    assert!(s1.starts_with("kw_prod_"), "unexpected secret format");
    let v = r.verify(&s1, "alma-production");
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["key"]["name"], "ill-lookup");
    // rkumar is not a recipient of ill-lookup.
    let o = r.run(&[
        "secret",
        "ill-lookup",
        "--store",
        "alma-production",
        "-i",
        r.identity("rkumar").to_str().unwrap(),
    ]);
    assert_ne!(o.code, 0);
    // A garbage key is malformed, a well-formed unknown one is unknown.
    assert_eq!(
        r.verify("kw_prod_nope", "alma-production")["reason"],
        "malformed"
    );

    // No plaintext secret anywhere outside the sealed envelopes (stores, manifests, ...).
    for (path, bytes) in r.all_files_except_envelopes() {
        assert!(!contains(&bytes, &s1), "secret found in {}", path.display());
    }
}

#[test]
fn the_standard_age_cli_decrypts_a_delivery() {
    if !needs::tool(&needs::AGE) {
        return;
    }
    let r = Repo::new(TWO_KEYS);
    apply(&r);
    let env = r
        .root()
        .join("deliveries/alma-production/ill-lookup/g1/jdoe.age");
    let o = std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(r.identity("jdoe"))
        .arg(&env)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["key"], "ill-lookup");
    assert_eq!(doc["store"], "alma-production");
    assert_eq!(doc["generation"], 1);
    let secret = doc["secret"].as_str().unwrap().to_string();
    assert_eq!(secret, r.secret("ill-lookup", "alma-production", "jdoe"));
    assert_eq!(r.verify(&secret, "alma-production")["valid"], true);
}

#[test]
fn scopes_update_in_place_owner_replaces_removal_revokes_protected_survives() {
    let r = Repo::new(TWO_KEYS);
    apply(&r);
    let old = r.secret("ill-lookup", "alma-production", "jdoe");

    // Scopes: in place, same secret keeps working.
    r.write_keys(&TWO_KEYS.replace(
        "scopes: [bibs:read, users:read]",
        "scopes: [bibs:write, users:read]",
    ));
    let p = r.run(&["plan"]);
    assert!(
        p.stdout
            .contains("will be updated in place (scopes changed)"),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout.contains("escalation: bibs: read -> write"),
        "{}",
        p.stdout
    );
    apply(&r);
    assert_no_changes(&r);
    let v = r.verify(&old, "alma-production");
    assert_eq!(v["valid"], true);
    assert_eq!(
        v["key"]["scopes"],
        serde_json::json!(["bibs:write", "users:read"])
    );

    // Owner: replace; a new secret is delivered (generation 2), the old one stays valid
    // through the grace (create before destroy; tests/keep_keys.rs follows it to the end).
    let edited = TWO_KEYS
        .replace(
            "scopes: [bibs:read, users:read]",
            "scopes: [bibs:write, users:read]",
        )
        .replace("    owner: jdoe\n", "    owner: asmith\n");
    r.write_keys(&edited);
    let p = r.run(&["plan"]);
    assert!(
        p.stdout
            .contains("must be replaced (owner changed: jdoe -> asmith; the old key"),
        "{}",
        p.stdout
    );
    assert!(p.stdout.contains("# forces replacement"), "{}", p.stdout);
    apply(&r);
    assert_no_changes(&r);
    assert_eq!(r.verify(&old, "alma-production")["valid"], true);
    let new = r.secret("ill-lookup", "alma-production", "asmith");
    assert_ne!(new, old);
    assert_eq!(r.verify(&new, "alma-production")["valid"], true);
    assert!(
        r.root()
            .join("deliveries/alma-production/ill-lookup/g2/manifest.json")
            .exists()
    );

    // Removal revokes; a protected key removed from the spec is kept.
    let only_reports: String = edited
        .split("  - name: ")
        .filter(|s| s.starts_with("reports"))
        .map(|s| format!("  - name: {s}"))
        .collect();
    r.write_keys(&format!("keys:\n{only_reports}"));
    let p = r.run(&["plan"]);
    assert!(
        p.stdout
            .contains("ill-lookup will be revoked (removed from spec)"),
        "{}",
        p.stdout
    );
    assert!(
        !p.stdout.contains("keep-me will be revoked"),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout
            .contains("keep-me: removed from the spec but protected"),
        "{}",
        p.stdout
    );
    apply(&r);
    assert_eq!(r.verify(&new, "alma-production")["reason"], "revoked");
    let keys = r.run(&["keys", "--store", "alma-production", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_str(&keys.stdout).unwrap();
    let keep = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "keep-me")
        .unwrap();
    assert_eq!(keep["status"], "active");
}

#[test]
fn an_interrupted_apply_converges_and_never_leaves_an_undelivered_key() {
    for point in [
        "after-seal",
        "after-pending",
        "after-register",
        "after-activate",
        "between-keys",
    ] {
        let r = Repo::new(TWO_KEYS);
        let fp = format!("{point}:exit");
        let o = r.run_with(
            &["apply", "--auto-approve", "--concurrency", "1"],
            &[("KEYWARD_FAILPOINT", fp.as_str())],
            None,
        );
        assert_eq!(
            o.code,
            86,
            "{point}: the process should have died there: {}",
            o.all()
        );
        // Re-run without the fault: converges.
        apply(&r);
        assert_no_changes(&r);
        // Every active key's current secret is delivered and accepted.
        for (name, store, who) in [
            ("ill-lookup", "alma-production", "jdoe"),
            ("reports", "alma-sandbox", "asmith"),
            ("keep-me", "alma-production", "rkumar"),
        ] {
            let s = r.secret(name, store, who);
            assert_eq!(
                r.verify(&s, store)["valid"],
                true,
                "{point}: {name} not valid"
            );
        }
        // Exactly one key per name in the stores (none created twice).
        let keys = r.run(&["keys", "--format", "json"]);
        let list: serde_json::Value = serde_json::from_str(&keys.stdout).unwrap();
        assert_eq!(
            list.as_array().unwrap().len(),
            3,
            "{point}: {}",
            keys.stdout
        );
        // No manifest is left pending.
        for e in walkdir::WalkDir::new(r.root().join("deliveries"))
            .into_iter()
            .filter_map(Result::ok)
        {
            if e.file_name() == "manifest.json" {
                let m: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
                assert_ne!(m["status"], "pending", "{point}: {}", e.path().display());
            }
        }
    }
}

#[test]
fn apply_without_a_terminal_needs_auto_approve() {
    let r = Repo::new(TWO_KEYS);
    let o = r.run(&["apply"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("--auto-approve"), "{}", o.stderr);
    // Nothing was created.
    assert!(r.run(&["plan"]).stdout.contains("Plan: 3 to create"));
}

#[test]
fn secrets_are_not_printed_to_a_terminal_without_reveal_and_o_writes_0600() {
    let r = Repo::new(TWO_KEYS);
    apply(&r);
    let out = r.root().join("secret.env");
    let o = r.run(&[
        "secret",
        "reports",
        "--store",
        "alma-sandbox",
        "-i",
        r.identity("asmith").to_str().unwrap(),
        "--format",
        "env",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("_SECRET=kw_sbx_"), "{text}");
    assert!(!o.stdout.contains("kw_sbx_") && !o.stderr.contains("kw_sbx_"));
}

#[test]
fn keygen_writes_a_private_identity_and_prints_the_recipient() {
    let r = Repo::new(TWO_KEYS);
    let path = r.root().join("me.txt");
    let o = r.run(&["keygen", "-o", path.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(o.stdout.trim().starts_with("age1"));
    assert!(!o.all().contains("AGE-SECRET-KEY-"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Refuses to overwrite.
    assert_ne!(r.run(&["keygen", "-o", path.to_str().unwrap()]).code, 0);
}

#[test]
fn init_scaffolds_a_repo_that_validates() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("new-keys");
    let mut c = assert_cmd::Command::cargo_bin("keyward").unwrap();
    let o = c.arg("init").arg(&target).output().unwrap();
    assert!(o.status.success());
    for f in ["keyward.yaml", "people.yaml", ".gitignore", "keys"] {
        assert!(target.join(f).exists(), "{f} missing");
    }
    let mut c = assert_cmd::Command::cargo_bin("keyward").unwrap();
    let o = c.arg("-C").arg(&target).arg("validate").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn an_edit_made_in_the_store_shows_as_drift_and_apply_restores_it() {
    use keyward::store::{
        Actor, KeyPatch, KeyWrite, ListFilter, Store, list_all, sqlite::SqliteStore,
    };
    let r = Repo::new(TWO_KEYS);
    apply(&r);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store =
            SqliteStore::open("alma-production", &r.root().join(".keyward/prod.db")).unwrap();
        let keys = list_all(&store, &ListFilter::default()).await.unwrap();
        let k = keys.iter().find(|k| k.name == "ill-lookup").unwrap();
        let console = Actor {
            who: "console:admin".into(),
            commit: None,
        };
        let patch = KeyPatch {
            scopes: Some(vec!["bibs:write".into(), "users:write".into()]),
            ..KeyPatch::default()
        };
        store
            .update(KeyWrite::new(&k.id, k.version, &console), patch)
            .await
            .unwrap();
    });
    let p = r.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(p.code, 2, "{}", p.all());
    assert!(
        p.stdout.contains("drift: scopes changed outside keyward"),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout
            .contains("[\"bibs:write\", \"users:write\"] -> [\"bibs:read\", \"users:read\"]"),
        "{}",
        p.stdout
    );
    apply(&r);
    assert_no_changes(&r);
}
