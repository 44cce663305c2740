//! The policy as a new user meets it: a spec breaking every rule reports each one at the
//! right file:line with the rule's place and a hint, in one run (snapshot); plan and apply
//! refuse (exit 3); an eleventh key is refused, also when the extra keys exist only in the
//! store (made in a console).

mod common;

use common::Repo;

const CONFIG: &str = "\
version: 1
stores:
  alma-production: { kind: sqlite, path: .keyward/prod.db, environment: production }
  alma-sandbox: { kind: sqlite, path: .keyward/sbx.db, environment: sandbox }
policy:
  default_lifetime: 365d
  max_lifetime: 730d
  allow_never: [alma-sandbox]
  max_keys_per_owner: 3
  min_recipients: { default: 1, production: 2 }
  required_fields: [purpose]
  required_labels: [ticket]
  name_patterns:
    alma-production: \"[a-z]+(-[a-z0-9]+)*\"
    alma-sandbox: \"sbx-[a-z0-9-]+\"
  forbid:
    - { scope: configuration:write, reason: \"Read/write access to the Configuration API is not granted.\" }
    - { scope: users:read, reason: \"No patron data in the sandbox.\", stores: [alma-sandbox] }
";

/// Every rule broken once (rkumar may only grant bibs:read).
const BAD_KEYS: &str = "\
keys:
  - name: config-writer
    store: alma-production
    owner: jdoe
    purpose: Configuration sync
    scopes: [configuration:write]
    recipients: [asmith]
    labels: { ticket: LSIS-1 }
  - name: bibs-editor
    store: alma-production
    owner: rkumar
    purpose: Catalogue clean-up
    scopes: [bibs:write]
    recipients: [asmith]
    labels: { ticket: LSIS-2 }
  - name: forever
    store: alma-production
    owner: asmith
    purpose: A key that never expires
    scopes: [bibs:read]
    expires: never
    recipients: [jdoe]
    labels: { ticket: LSIS-3 }
  - name: lonely
    store: alma-production
    owner: asmith
    purpose: Only the owner receives it
    scopes: [bibs:read]
    labels: { ticket: LSIS-4 }
  - name: no-purpose
    store: alma-production
    owner: asmith
    scopes: [bibs:read]
    recipients: [jdoe]
  - name: catalogue-tests
    store: alma-sandbox
    owner: jdoe
    purpose: Sandbox tests
    scopes: [bibs:read, users:read]
    labels: { ticket: LSIS-5 }
  - name: illiad-sandbox
    store: alma-production
    owner: jdoe
    purpose: The sandbox ILLiad server
    scopes: [bibs:read]
    recipients: [asmith]
    labels: { ticket: LSIS-6 }
  - name: too-long
    store: alma-production
    owner: jdoe
    purpose: Asks for five years
    scopes: [bibs:read]
    lifetime: 1825d
    recipients: [asmith]
    labels: { ticket: LSIS-7 }
";

fn repo(keys: &str) -> Repo {
    let r = Repo::new(keys);
    std::fs::write(r.root().join("keyward.yaml"), CONFIG).unwrap();
    let people = std::fs::read_to_string(r.root().join("people.yaml")).unwrap();
    let people = people.replace(
        "  rkumar:\n    name: rkumar\n",
        "  rkumar:\n    name: rkumar\n    may_grant: [bibs:read]\n",
    );
    std::fs::write(r.root().join("people.yaml"), people).unwrap();
    r
}

#[test]
fn every_rule_is_reported_in_one_run_and_apply_refuses() {
    let r = repo(BAD_KEYS);
    let o = r.run(&["validate"]);
    assert_eq!(o.code, 1, "{}", o.all());
    // The rendering, with file:line, the rule's place and hints (temp paths do not appear).
    insta::assert_snapshot!("every_rule", o.stdout);

    let o = r.run(&["validate", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("JSON");
    let mut got: Vec<(String, String, u64)> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().to_string(),
                d["location"]["file"].as_str().unwrap().to_string(),
                d["location"]["line"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(&str, &str, u64)> = vec![
        ("KW201", "keys/keys.yaml", 6),  // configuration:write, everywhere
        ("KW201", "keys/keys.yaml", 39), // users:read, only in the sandbox
        ("KW202", "keys/keys.yaml", 13), // rkumar may grant bibs:read only
        ("KW203", "keys/keys.yaml", 53), // lifetime 1825d > 730d
        ("KW204", "keys/keys.yaml", 21), // never, outside allow_never
        ("KW205", "keys/keys.yaml", 37), // jdoe's fourth key (max 3)
        ("KW206", "keys/keys.yaml", 24), // production needs 2 recipients
        ("KW208", "keys/keys.yaml", 30), // no purpose
        ("KW209", "keys/keys.yaml", 30), // no ticket label
        ("KW210", "keys/keys.yaml", 35), // catalogue-tests vs sbx-*
        ("KW211", "keys/keys.yaml", 41), // illiad-sandbox in production
    ];
    let want: Vec<(String, String, u64)> = want
        .into_iter()
        .map(|(c, f, l)| (c.to_string(), f.to_string(), l))
        .collect();
    assert_eq!(got, want, "{}", o.stdout);
    // Each policy violation names where its rule is written in keyward.yaml.
    for d in v["diagnostics"].as_array().unwrap() {
        let code = d["code"].as_str().unwrap();
        if code == "KW202" || code == "KW211" {
            continue; // their rule lives in people.yaml / the store's definition
        }
        let notes = d["related"].as_array().cloned().unwrap_or_default();
        assert!(
            notes
                .iter()
                .any(|n| n[1]["file"].as_str() == Some("keyward.yaml")),
            "{code} has a note at keyward.yaml: {d}"
        );
        assert!(d["hint"].is_string(), "{code} has a hint");
    }
    assert!(
        o.stdout
            .contains("Read/write access to the Configuration API is not granted.")
    );
    // The policy report, in JSON too.
    let rep = &v["report"];
    assert_eq!(
        rep["never_expire"],
        serde_json::json!(["alma-production/forever"])
    );
    assert_eq!(
        rep["write_keys"],
        serde_json::json!([
            "alma-production/bibs-editor",
            "alma-production/config-writer"
        ])
    );
    let jdoe = rep["owners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["owner"] == "jdoe")
        .unwrap();
    assert_eq!(
        (jdoe["keys"].as_u64(), jdoe["limit"].as_u64()),
        (Some(4), Some(3))
    );

    for cmd in [&["plan"][..], &["apply", "--auto-approve"][..]] {
        let o = r.run(cmd);
        assert_eq!(o.code, 3, "{cmd:?}: {}", o.all());
        assert!(o.stderr.contains("KW201"), "{}", o.stderr);
        assert!(o.stderr.contains("refusing"), "{}", o.stderr);
    }
    // Refused before any store was opened.
    assert!(!r.root().join(".keyward/prod.db").exists());
}

fn keys_for(owner: &str, n: usize) -> String {
    let mut s = String::from("keys:\n");
    for i in 1..=n {
        s.push_str(&format!(
            "  - name: key-{i}\n    store: alma-production\n    owner: {owner}\n    purpose: Key {i}\n    scopes: [bibs:read]\n    recipients: [asmith]\n    labels: {{ ticket: LSIS-{i} }}\n"
        ));
    }
    s
}

#[test]
fn a_key_over_the_owner_limit_is_refused() {
    let r = repo(&keys_for("jdoe", 4));
    let o = r.run(&["validate"]);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.stdout.contains("KW205"), "{}", o.stdout);
    assert!(
        o.stdout
            .contains("owner `jdoe` has 4 keys; the policy allows at most 3"),
        "{}",
        o.stdout
    );
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 3, "{}", o.all());
}

/// A console-made (unmanaged) key in the store.
async fn console_key(r: &Repo, name: &str, owner: &str) {
    let store = keyward::store::sqlite::SqliteStore::open(
        "alma-production",
        &r.root().join(".keyward/prod.db"),
    )
    .unwrap();
    let (key, _) = common::console_new_key(name, owner, "bibs:read");
    store.insert_unmanaged(key).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_outside_keyward_count_against_the_owner() {
    let r = repo(&keys_for("jdoe", 3));
    let o = r.run(&["plan"]);
    assert_eq!(o.code, 0, "{}", o.all());
    // Someone else's console key does not count; jdoe's does.
    console_key(&r, "console-other", "asmith").await;
    let o = r.run(&["plan"]);
    assert_eq!(o.code, 0, "{}", o.all());
    console_key(&r, "console-made", "jdoe").await;
    let o = r.run(&["validate"]);
    assert_eq!(o.code, 0, "the spec alone is within the limit: {}", o.all());
    for cmd in [&["plan"][..], &["apply", "--auto-approve"][..]] {
        let o = r.run(cmd);
        assert_eq!(o.code, 3, "{cmd:?}: {}", o.all());
        assert!(o.stderr.contains("KW205"), "{}", o.stderr);
        assert!(
            o.stderr
                .contains("3 in the spec and 1 made outside keyward (alma-production/console-made"),
            "{}",
            o.stderr
        );
    }
}
