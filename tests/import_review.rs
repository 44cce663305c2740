//! `keyward import` changes no store: it writes YAML naming each console key it adopts
//! (`adopt: ID`), and the apply of the reviewed change adopts them. Through the real binary
//! in a real git repository with a real SQLite store: an apply from main before the import
//! is merged leaves the console keys alone (before, import marked them managed at once and
//! that apply revoked them); after the merge the plan shows each adoption, the apply adopts
//! them (same ids, same secrets) and the next plan is empty.

mod common;
use common::Repo;
use keyward::store::sqlite::SqliteStore;
use keyward::store::{KeyStatus, ListFilter, LiveKey, list_all};

const KEYS: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
";

fn prod(r: &Repo) -> SqliteStore {
    SqliteStore::open("alma-production", &r.root().join(".keyward/prod.db")).unwrap()
}

fn live(r: &Repo, name: &str) -> LiveKey {
    common::runtime()
        .block_on(list_all(&prod(r), &ListFilter::default()))
        .unwrap()
        .into_iter()
        .find(|k| k.name == name)
        .unwrap_or_else(|| panic!("no live key {name}"))
}

/// A key made in the vendor console (unmanaged), and its secret.
fn console_key(r: &Repo, name: &str, owner: &str) -> String {
    let (mut key, secret) = common::console_new_key(name, owner, "users:read");
    let now = chrono::Utc::now();
    key.purpose = Some(format!("made in the console for {owner}"));
    key.issued_at = now - chrono::Duration::days(3);
    key.expires_at = Some(now + chrono::Duration::days(200));
    key.spec_generation = 0;
    common::runtime()
        .block_on(prod(r).insert_unmanaged(key))
        .expect("insert console key");
    secret
}

fn valid(r: &Repo, secret: &str) -> bool {
    r.verify(secret, "alma-production")["valid"] == true
}

#[test]
fn an_import_is_adopted_by_the_apply_of_the_reviewed_change_not_before() {
    let r = Repo::new(KEYS);
    r.git_init();
    let o = r.run(&["apply", "--auto-approve", "--commit-deliveries"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let secrets = [
        console_key(&r, "ill-console", "jdoe"),
        console_key(&r, "reports-console", "asmith"),
    ];
    let before: Vec<LiveKey> = ["ill-console", "reports-console"]
        .iter()
        .map(|n| live(&r, n))
        .collect();

    // The import, on a branch for review.
    r.git(&["checkout", "-q", "-b", "import-console"]);
    let o = r.run(&["import", "--store", "alma-production"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stderr.contains("Wrote 2 key(s) to keys/imported.yaml")
            && o.stderr.contains("Nothing in the store changed"),
        "{}",
        o.stderr
    );
    let yaml = std::fs::read_to_string(r.root().join("keys/imported.yaml")).unwrap();
    for k in &before {
        assert!(yaml.contains(&format!("adopt: {}", k.id)), "{yaml}");
        let now = live(&r, &k.name);
        assert_eq!(now.managed_by, None, "import changed no store: {now:?}");
        assert_eq!(now.version, k.version, "import changed no store");
    }
    r.commit_all("Admin", "admin@example.edu", "import the console keys");

    // Meanwhile an apply from main, without the import's YAML: the console keys stay.
    r.git(&["checkout", "-q", "main"]);
    assert!(!r.root().join("keys/imported.yaml").exists());
    r.write_keys(&KEYS.replace("[bibs:read]", "[bibs:read, users:read]"));
    r.commit_all("Admin", "admin@example.edu", "widen ill-lookup");
    let o = r.run(&["apply", "--auto-approve", "--commit-deliveries"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(!o.stdout.contains("will be revoked"), "{}", o.stdout);
    assert!(o.stdout.contains("0 to revoke"), "{}", o.stdout);
    for (k, s) in before.iter().zip(&secrets) {
        let now = live(&r, &k.name);
        assert_eq!(now.status, KeyStatus::Active, "{now:?}");
        assert_eq!(now.managed_by, None, "{now:?}");
        assert_eq!(now.version, k.version, "untouched: {now:?}");
        assert!(valid(&r, s), "{} still verifies", k.name);
    }

    // The import is merged: the plan shows each adoption, the apply adopts.
    r.git(&["merge", "-q", "--no-edit", "import-console"]);
    let p = r.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(p.code, 2, "{}", p.all());
    for k in &before {
        assert!(
            p.stdout.contains(&format!(
                "adopt: the unmanaged key {} becomes managed by keyward",
                k.id
            )),
            "{}",
            p.stdout
        );
    }
    assert!(
        p.stdout.contains("Plan: 0 to create, 2 to update"),
        "{}",
        p.stdout
    );
    let o = r.run(&["apply", "--auto-approve", "--commit-deliveries"]);
    assert_eq!(o.code, 0, "{}", o.all());
    for (k, s) in before.iter().zip(&secrets) {
        let now = live(&r, &k.name);
        assert_eq!(now.id, k.id, "the same key, adopted");
        assert!(now.is_managed(), "{now:?}");
        assert_eq!(now.status, KeyStatus::Active);
        assert!(valid(&r, s), "{} keeps its secret", k.name);
    }
    r.assert_plan_empty("after the adoption");
}

#[test]
fn an_adoption_carries_the_edits_the_review_made_in_one_update() {
    let r = Repo::new(KEYS);
    assert_eq!(r.run(&["apply", "--auto-approve"]).code, 0);
    let secret = console_key(&r, "ill-console", "jdoe");
    let o = r.run(&["import", "--store", "alma-production"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let path = r.root().join("keys/imported.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    // The reviewer narrows nothing but relabels it.
    let edited = yaml.replace(
        "  scopes:\n  - users:read\n",
        "  scopes:\n  - users:read\n  labels:\n    ticket: LSIS-7\n",
    );
    assert_ne!(edited, yaml, "{yaml}");
    std::fs::write(&path, edited).unwrap();
    let p = r.run(&["plan"]);
    assert!(
        p.stdout.contains("adopt: the unmanaged key"),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout.contains("Plan: 0 to create, 1 to update"),
        "{}",
        p.stdout
    );
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let k = live(&r, "ill-console");
    assert!(k.is_managed());
    assert_eq!(
        k.labels.get("ticket").map(String::as_str),
        Some("LSIS-7"),
        "{k:?}"
    );
    assert!(valid(&r, &secret));
    r.assert_plan_empty("after the adoption with edits");
    // A key of that name without `adopt:` (or naming another id) is left alone.
    let other = console_key(&r, "sync-console", "rkumar");
    let _ = other;
    let mut y = std::fs::read_to_string(r.root().join("keys/keys.yaml")).unwrap();
    y.push_str(
        "  - name: sync-console\n    store: alma-production\n    owner: rkumar\n    scopes: [users:read]\n",
    );
    r.write_keys(&y);
    let p = r.run(&["plan"]);
    assert!(
        p.stdout.contains("not managed by keyward") && p.stdout.contains("adopt: ID"),
        "{}",
        p.stdout
    );
    assert!(
        !p.stdout.contains("to create, 1"),
        "nothing created: {}",
        p.stdout
    );
}
