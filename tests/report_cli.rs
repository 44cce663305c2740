//! `keyward report --html DIR` through the real binary: a static site of a real key
//! repository (SQLite stores after a real apply, git history, deliveries), of console
//! stores (their ledgers, pending and planned console steps), and of examples/library;
//! every page escapes, says how changes are made, and holds no secret, secret hash,
//! fingerprint, recipient public key or private identity.

mod common;
mod report_common;

use common::Repo;
use std::collections::BTreeMap;
use std::path::Path;

const KEYS: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    purpose: ILLiad barcode lookups
    scopes: [bibs:read, users:read]
    recipients: [team:ill-staff]
    lifetime: 20d
    labels: { ticket: LSIS-1234 }
  - name: reports
    store: alma-sandbox
    owner: asmith
    purpose: Nightly analytics export
    scopes: [analytics:read]
    recipients: [rkumar]
    lifetime: 300d
    rotation: { every: 10d }
  - name: feed
    store: alma-production
    owner: rkumar
    purpose: Course feed
    scopes: [courses:read]
";

use report_common::read_site as site;

/// Every age public key in people.yaml.
fn public_keys(root: &Path) -> Vec<String> {
    let people = std::fs::read_to_string(root.join("people.yaml")).unwrap();
    people
        .split('"')
        .filter(|s| s.starts_with("age1"))
        .map(String::from)
        .collect()
}

/// No page holds any of `needles` (compared case-insensitively).
fn assert_nowhere(pages: &BTreeMap<String, String>, needles: &[(String, String)]) {
    assert!(!needles.is_empty());
    for (path, text) in pages {
        let lower = text.to_lowercase();
        for (what, n) in needles {
            assert!(!lower.contains(&n.to_lowercase()), "{what} on {path}");
        }
    }
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[test]
fn report_writes_a_static_site_of_the_stores_deliveries_and_history() {
    let r = Repo::new(KEYS);
    r.git_init();
    let o = r.run(&["apply", "--auto-approve", "--commit-deliveries"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let secrets = r.check_invariants("after create", &[]);
    assert_eq!(secrets.len(), 3);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("site");
    let o = r.run(&["report", "--html", dir.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(o.stderr.contains("index.html"), "{}", o.stderr);
    let pages = site(&dir);
    for p in [
        "index.html",
        "keys.html",
        "timeline.html",
        "people.html",
        "assets/report.css",
        "assets/report.js",
        "keys/alma-production/ill-lookup.html",
        "keys/alma-sandbox/reports.html",
        "people/person-jdoe.html",
        "people/team-ill-staff.html",
        "filter/owner-asmith.html",
        "filter/expiring-30d.html",
    ] {
        assert!(pages.contains_key(p), "{p} missing: {:?}", pages.keys());
    }
    // The overview: keys per store, expiring soon, due for rotation.
    let index = &pages["index.html"];
    assert!(index.contains("alma-production") && index.contains("alma-sandbox"));
    let expiring = index
        .split("id=\"expiring\"")
        .nth(1)
        .expect("the expiring section");
    assert!(expiring.contains("ill-lookup"), "{expiring}");
    let due = index
        .split("id=\"rotation\"")
        .nth(1)
        .expect("rotation section");
    assert!(due.contains("reports"), "{due}");
    // A key page: scopes, recipients by name, generations, events, the defining line and
    // the commit that changed its YAML.
    let key = &pages["keys/alma-production/ill-lookup.html"];
    for want in [
        "bibs:read",
        // team:ill-staff, by its members' names
        "person-asmith.html\">asmith</a>",
        "keys/keys.yaml</code> line 2",
        "id=\"key-events\"",
        "initial keys",
        "LSIS-1234",
    ] {
        assert!(key.contains(want), "{want} not on the key page:\n{key}");
    }
    let events = key.split("id=\"key-events\"").nth(1).unwrap();
    assert!(events.contains("create"), "{events}");
    // Filters without JavaScript: the pre-rendered list holds asmith's key only.
    let only = &pages["filter/owner-asmith.html"];
    assert!(only.contains("1 of 3 keys"), "{only}");
    assert!(only.contains("reports") && !only.contains(">ill-lookup<"));
    // The timeline is an SVG with a text alternative.
    let tl = &pages["timeline.html"];
    assert!(tl.contains("<svg") && tl.contains("<title"), "{tl}");
    // Every page says how changes are made, and nothing secret is on any page.
    for (path, text) in pages.iter().filter(|(p, _)| p.ends_with(".html")) {
        assert!(
            text.contains("keyward request"),
            "{path} says nothing of requests"
        );
        assert!(text.contains("<html lang=\"en\">"), "{path}");
    }
    let mut needles: Vec<(String, String)> = Vec::new();
    for s in &secrets {
        needles.push(("a secret".into(), s.clone()));
        needles.push(("a secret's SHA-256".into(), sha256_hex(s)));
        needles.push(("a secret's body".into(), s[s.len() - 40..].to_string()));
    }
    for k in public_keys(r.root()) {
        needles.push(("a recipient public key".into(), k));
    }
    for who in ["jdoe", "asmith", "rkumar"] {
        let id = r.identity_text(who);
        needles.push((
            format!("{who}'s identity"),
            id["AGE-SECRET-KEY-".len()..].into(),
        ));
    }
    for (_, k) in r.live_keys() {
        for fp in k.recipients.values() {
            needles.push(("a recipient fingerprint".into(), fp.clone()));
        }
    }
    assert!(needles.len() > 12, "{}", needles.len());
    assert_nowhere(&pages, &needles);
}

#[test]
fn report_of_one_store_and_of_an_unknown_store() {
    let r = Repo::new(KEYS);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("sbx");
    let o = r.run(&[
        "report",
        "--html",
        dir.to_str().unwrap(),
        "--store",
        "alma-sandbox",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    let pages = site(&dir);
    // Nothing applied yet: the sandbox's key is planned, production is not shown.
    let keys = &pages["keys.html"];
    assert!(
        keys.contains("reports") && keys.contains("planned"),
        "{keys}"
    );
    assert!(!keys.contains("ill-lookup"), "{keys}");
    assert!(
        !r.root().join(".keyward").exists(),
        "a report never creates a store's file"
    );
    let o = r.run(&["report", "--html", dir.to_str().unwrap(), "--store", "nope"]);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.stderr.contains("store `nope` is not in keyward.yaml"),
        "{}",
        o.stderr
    );
    // --html is required.
    let o = r.run(&["report"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("--html"), "{}", o.stderr);
}

#[test]
fn a_store_that_cannot_be_read_is_shown_with_its_error() {
    let r = Repo::new(KEYS);
    let cfg = std::fs::read_to_string(r.root().join("keyward.yaml")).unwrap();
    let cfg = cfg.replace(
        "stores:\n",
        "stores:\n  remote: { kind: http, url: \"http://127.0.0.1:9\", token_env: KEYWARD_TEST_NO_SUCH_TOKEN, environment: production }\n",
    );
    std::fs::write(r.root().join("keyward.yaml"), cfg).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("site");
    let o = r.run(&["report", "--html", dir.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(o.stderr.contains("warning: store `remote`"), "{}", o.stderr);
    let index = &site(&dir)["index.html"];
    assert!(index.contains("KEYWARD_TEST_NO_SUCH_TOKEN"), "{index}");
    assert!(
        index.contains("alma-production"),
        "the other stores are still shown"
    );
}

const CONSOLES: &str = "version: 1
stores:
  alma-production: { kind: console, vendor: alma, environment: production }
  openathens: { kind: console, vendor: openathens, environment: production }
scopes:
  areas: [bibs, users, authentication-api]
  levels: [use, read, write]
policy:
  default_lifetime: 365d
";

const CONSOLE_KEYS: &str = "keys:
  - name: illiad-barcode-lookup
    store: alma-production
    owner: jdoe
    purpose: ILLiad add-on
    scopes: [bibs:read, users:read]
    recipients: [team:ill-staff]
  - name: ezproxy-auth
    store: openathens
    owner: jdoe
    purpose: EZproxy local authentication
    scopes: [authentication-api:read]
    lifetime: 365d
";

#[test]
fn report_works_for_console_stores_and_lists_their_pending_steps() {
    let r = Repo::new(CONSOLE_KEYS);
    std::fs::write(r.root().join("keyward.yaml"), CONSOLES).unwrap();
    std::fs::create_dir_all(r.root().join("ledger")).unwrap();
    let fingerprint = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let ledger = format!(
        "version: 1\nstore: alma-production\nvendor: alma\nkeys:\n  - name: illiad-barcode-lookup\n    id: k-ill\n    environment: production\n    owner: jdoe\n    purpose: ILLiad add-on\n    scopes: [bibs:read, users:read]\n    status: active\n    created: 2026-11-01T00:00:00Z\n    issued: 2026-11-01T00:00:00Z\n    updated: 2026-11-01T00:00:00Z\n    expires: 2027-11-01T00:00:00Z\n    generation: 1\n    spec_generation: 1\n    recipients: {{ jdoe: \"{fingerprint}\" }}\n    fingerprint: \"{fingerprint}\"\n    version: 1\n"
    );
    std::fs::write(r.root().join("ledger/alma-production.yaml"), ledger).unwrap();
    let o = r.run(&["validate"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("site");
    let o = r.run(&["report", "--html", dir.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.all());
    let pages = site(&dir);
    let index = &pages["index.html"];
    let steps = index
        .split("id=\"console\"")
        .nth(1)
        .expect("the console section");
    assert!(
        steps.contains("ezproxy-auth") && steps.contains("create"),
        "the next apply creates ezproxy-auth in OpenAthens:\n{steps}"
    );
    assert!(index.contains("console"), "{index}");
    let key = &pages["keys/alma-production/illiad-barcode-lookup.html"];
    assert!(key.contains("bibs:read") && key.contains("jdoe"), "{key}");
    assert_nowhere(
        &pages,
        &[
            ("a fingerprint".into(), fingerprint.clone()),
            ("a fingerprint's hex".into(), fingerprint[7..].to_string()),
        ],
    );
    assert!(
        !r.root().join("ledger/openathens.yaml").exists(),
        "report writes no ledger"
    );
}

#[test]
fn report_of_examples_library_has_every_page() {
    // `keyward -C examples/library report --html site/`, word for word (docs/report.md).
    let (lib, dir) = report_common::library_site();
    let pages = site(&dir);
    for p in [
        "index.html",
        "keys.html",
        "timeline.html",
        "keys/alma-production/illiad-barcode-lookup.html",
        "keys/alma-production/course-reserves-sync.html",
        "people/person-mlopez.html",
        "people/service-illiad-server.html",
    ] {
        assert!(pages.contains_key(p), "{p} missing: {:?}", pages.keys());
    }
    let key = &pages["keys/alma-production/illiad-barcode-lookup.html"];
    assert!(
        key.contains("keys/interlibrary-loan.yaml</code> line 4"),
        "{key}"
    );
    let root = lib.path().join("examples/library");
    let mut needles: Vec<(String, String)> = public_keys(&root)
        .into_iter()
        .map(|k| ("a recipient public key".to_string(), k))
        .collect();
    for e in std::fs::read_dir(root.join("demo-identities")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        if let Some(line) = text.lines().find(|l| l.starts_with("AGE-SECRET-KEY-")) {
            needles.push(("a demo identity".into(), line.to_string()));
        }
    }
    assert!(needles.len() >= 8, "{needles:?}");
    assert_nowhere(&pages, &needles);
}
