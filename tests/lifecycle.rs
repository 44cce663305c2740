//! The key lifecycle through the real binary with a test clock (KEYWARD_NOW): expiry and the
//! `expiring` report, rotation with a grace period, recipient changes, drift (including keys
//! deleted by hand), delivery retention. Real SQLite files, real age, temp repos.

mod common;
use common::{Out, Repo};
use keyward::store::{
    Actor, KeyPatch, KeyStatus, KeyWrite, ListFilter, LiveKey, Store, list_all, sqlite::SqliteStore,
};

/// The test clock's day 0.
const T0: &str = "2027-01-10T12:00:00Z";

fn t(days: i64) -> String {
    let t0 = chrono::DateTime::parse_from_rfc3339(T0).unwrap();
    (t0 + chrono::Duration::days(days)).to_rfc3339()
}

fn at(r: &Repo, day: i64, args: &[&str]) -> Out {
    r.run_with(args, &[("KEYWARD_NOW", &t(day))], None)
}

fn apply_at(r: &Repo, day: i64) -> Out {
    let o = at(r, day, &["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "apply failed: {}", o.all());
    o
}

fn no_changes_at(r: &Repo, day: i64) {
    let o = at(r, day, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.code, 0, "expected no changes: {}", o.all());
}

fn secret_of(r: &Repo, name: &str, who: &str) -> String {
    r.secret(name, "alma-production", who)
}

fn verify_at(r: &Repo, day: i64, secret: &str) -> serde_json::Value {
    let o = r.run_with(
        &["verify", "--store", "alma-production"],
        &[("KEYWARD_NOW", &t(day))],
        Some(secret),
    );
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", o.all()))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn prod(r: &Repo) -> SqliteStore {
    SqliteStore::open("alma-production", &r.root().join(".keyward/prod.db")).unwrap()
}

fn live(r: &Repo, name: &str) -> Option<LiveKey> {
    rt().block_on(async {
        list_all(&prod(r), &ListFilter::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|k| k.name == name)
            .max_by_key(|k| k.created_at)
    })
}

fn console() -> Actor {
    Actor {
        who: "console:admin".into(),
        commit: None,
    }
}

const SHORT: &str = "\
keys:
  - name: short-lived
    store: alma-production
    owner: jdoe
    scopes: [bibs:read]
    lifetime: 30d
  - name: long-lived
    store: alma-production
    owner: asmith
    scopes: [users:read]
    lifetime: 365d
";

#[test]
fn a_30_day_key_is_reported_by_expiring_warned_in_plans_and_refused_once_expired() {
    let r = Repo::new(SHORT);
    apply_at(&r, 0);

    let o = at(&r, 0, &["expiring", "--within", "30d"]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(
        o.stdout
            .contains("alma-production/short-lived: expires in 30 day(s)"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("jdoe <jdoe@example.edu>"), "{}", o.stdout);
    assert!(o.stdout.contains("rotation.generation"), "{}", o.stdout);
    assert!(!o.stdout.contains("long-lived"), "{}", o.stdout);
    let o = at(&r, 0, &["expiring", "--within", "7d"]);
    assert_eq!(o.code, 0, "{}", o.all());

    let j = at(&r, 25, &["expiring", "--format", "json"]);
    assert_eq!(j.code, 2);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(v["within"], "30d");
    assert_eq!(v["due"][0]["name"], "short-lived");
    assert_eq!(v["due"][0]["days_left"], 5);
    assert_eq!(v["due"][0]["defined_at"], "keys/keys.yaml:2");
    let m = at(&r, 25, &["expiring", "--format", "markdown"]);
    assert!(
        m.stdout
            .contains("| `short-lived` | alma-production | expires in 5 day(s)"),
        "{}",
        m.stdout
    );

    // The plan has no changes but warns.
    let p = at(&r, 25, &["plan", "--detailed-exitcode"]);
    assert_eq!(p.code, 0, "{}", p.all());
    assert!(p.stdout.contains("Warnings:"), "{}", p.stdout);
    assert!(
        p.stdout.contains("short-lived: expires in 5 day(s)"),
        "{}",
        p.stdout
    );

    // Past its expiry the store refuses it, with no apply in between.
    let s = secret_of(&r, "short-lived", "jdoe");
    assert_eq!(verify_at(&r, 29, &s)["valid"], true);
    let v = verify_at(&r, 31, &s);
    assert_eq!(
        (v["valid"].as_bool(), v["reason"].as_str()),
        (Some(false), Some("expired"))
    );
    let p = at(&r, 31, &["plan"]);
    assert!(
        p.stdout
            .contains("short-lived: expired on 2027-02-09; the store refuses it"),
        "{}",
        p.stdout
    );
    let e = at(&r, 31, &["expiring"]);
    assert!(
        e.stdout
            .contains("✗ alma-production/short-lived: expired on 2027-02-09"),
        "{}",
        e.stdout
    );

    // Bumping the generation renews it: new secret, new 30 days, no more warning.
    r.write_keys(&SHORT.replace(
        "    lifetime: 30d\n",
        "    lifetime: 30d\n    rotation: { generation: 2 }\n",
    ));
    apply_at(&r, 31);
    let s2 = secret_of(&r, "short-lived", "jdoe");
    assert_eq!(verify_at(&r, 32, &s2)["valid"], true);
    let p = at(&r, 32, &["plan"]);
    assert!(
        p.stdout.contains("short-lived: expires in 29 day(s)"),
        "{}",
        p.stdout
    );
    assert!(!p.stdout.contains("expired on"), "{}", p.stdout);
}

const ROTATING: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: rkumar
    scopes: [bibs:read]
    recipients: [team:ill-staff]
    rotation: { grace: 7d, generation: 1 }
";

#[test]
fn a_generation_bump_rotates_and_both_secrets_verify_until_the_grace_end() {
    let r = Repo::new(ROTATING);
    apply_at(&r, 0);
    let old = secret_of(&r, "ill-lookup", "jdoe");
    let id = live(&r, "ill-lookup").unwrap().id;

    r.write_keys(&ROTATING.replace("generation: 1", "generation: 2"));
    let p = at(&r, 1, &["plan", "--detailed-exitcode"]);
    assert_eq!(p.code, 2);
    assert!(
        p.stdout
            .contains("will be rotated (same id, new secret) (generation 1 -> 2)"),
        "{}",
        p.stdout
    );
    apply_at(&r, 1);
    no_changes_at(&r, 1);
    let new = secret_of(&r, "ill-lookup", "jdoe");
    assert_ne!(old, new);
    assert_eq!(
        live(&r, "ill-lookup").unwrap().id,
        id,
        "a rotation keeps the key id"
    );

    // The manifest says until when the old secret works.
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            r.root()
                .join("deliveries/alma-production/ill-lookup/g2/manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let until =
        chrono::DateTime::parse_from_rfc3339(m["previous_valid_until"].as_str().unwrap()).unwrap();
    assert_eq!(until, chrono::DateTime::parse_from_rfc3339(&t(8)).unwrap());

    for day in [2, 7] {
        assert_eq!(
            verify_at(&r, day, &old)["valid"],
            true,
            "old secret on day {day}"
        );
        assert_eq!(
            verify_at(&r, day, &new)["valid"],
            true,
            "new secret on day {day}"
        );
    }
    let v = verify_at(&r, 9, &old);
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(verify_at(&r, 9, &new)["valid"], true);
}

#[test]
fn removing_a_team_member_rotates_and_they_get_no_envelope_a_changed_key_rotates_too() {
    let r = Repo::new(ROTATING);
    apply_at(&r, 0);
    let g1 = r.root().join("deliveries/alma-production/ill-lookup/g1");
    assert!(g1.join("asmith.age").exists());

    // asmith leaves the team.
    let people = std::fs::read_to_string(r.root().join("people.yaml")).unwrap();
    std::fs::write(
        r.root().join("people.yaml"),
        people.replace("members: [jdoe, asmith]", "members: [jdoe]"),
    )
    .unwrap();
    let p = at(&r, 1, &["plan", "--detailed-exitcode"]);
    assert_eq!(p.code, 2, "{}", p.all());
    assert!(
        p.stdout
            .contains("recipient removed: asmith holds the current secret"),
        "{}",
        p.stdout
    );
    apply_at(&r, 1);
    let g2 = r.root().join("deliveries/alma-production/ill-lookup/g2");
    assert!(g2.join("jdoe.age").exists() && g2.join("rkumar.age").exists());
    assert!(
        !g2.join("asmith.age").exists(),
        "the removed member got an envelope"
    );
    let o = r.run(&[
        "secret",
        "ill-lookup",
        "--store",
        "alma-production",
        "-i",
        r.identity("asmith").to_str().unwrap(),
    ]);
    assert_ne!(
        o.code,
        0,
        "asmith can still read the new secret: {}",
        o.all()
    );
    no_changes_at(&r, 1);

    // rkumar gets a new age key: the key rotates and the new identity reads it.
    let new_id = age::x25519::Identity::generate();
    let people = std::fs::read_to_string(r.root().join("people.yaml")).unwrap();
    let old_line = people
        .lines()
        .skip_while(|l| !l.starts_with("  rkumar:"))
        .find(|l| l.contains("recipients:"))
        .unwrap()
        .to_string();
    std::fs::write(
        r.root().join("people.yaml"),
        people.replace(
            &old_line,
            &format!("    recipients: [\"{}\"]", new_id.to_public()),
        ),
    )
    .unwrap();
    let p = at(&r, 2, &["plan"]);
    assert!(
        p.stdout.contains("recipient key changed: rkumar"),
        "{}",
        p.stdout
    );
    apply_at(&r, 2);
    let idf = r.root().join("ids/rkumar-new.txt");
    use age::secrecy::ExposeSecret;
    std::fs::write(&idf, format!("{}\n", new_id.to_string().expose_secret())).unwrap();
    let o = r.run(&[
        "secret",
        "ill-lookup",
        "--store",
        "alma-production",
        "-i",
        idf.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        r.root()
            .join("deliveries/alma-production/ill-lookup/g3/rkumar.age")
            .exists()
    );
}

fn drift_only(r: &Repo, day: i64) -> Out {
    at(r, day, &["plan", "--drift-only"])
}

#[test]
fn edits_made_in_the_store_are_drift_and_apply_restores_each() {
    let r = Repo::new(SHORT);
    apply_at(&r, 0);
    let o = drift_only(&r, 0);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(o.stdout.contains("No drift"), "{}", o.stdout);

    let cases: Vec<(&str, &str)> = vec![
        ("scopes", "drift: scopes changed outside keyward"),
        ("disabled", "drift: status changed outside keyward"),
        ("expiry", "drift: expires changed outside keyward"),
        ("revoked", "drift: revoked outside keyward"),
        ("deleted", "drift: deleted outside keyward"),
    ];
    for (day, (what, reason)) in cases.into_iter().enumerate() {
        let day = day as i64 + 1;
        let k = live(&r, "short-lived").unwrap();
        let store = prod(&r);
        rt().block_on(async {
            match what {
                "scopes" => {
                    let p = KeyPatch {
                        scopes: Some(vec!["bibs:write".into()]),
                        ..KeyPatch::default()
                    };
                    store
                        .update(KeyWrite::new(&k.id, k.version, &console()), p)
                        .await
                        .unwrap();
                }
                "disabled" => {
                    store
                        .set_status(
                            KeyWrite::new(&k.id, k.version, &console()),
                            KeyStatus::Disabled,
                        )
                        .await
                        .unwrap();
                }
                "expiry" => {
                    let p = KeyPatch {
                        expires_at: Some(Some(k.expires_at.unwrap() + chrono::Duration::days(400))),
                        ..KeyPatch::default()
                    };
                    store
                        .update(KeyWrite::new(&k.id, k.version, &console()), p)
                        .await
                        .unwrap();
                }
                "revoked" => {
                    store
                        .set_status(
                            KeyWrite::new(&k.id, k.version, &console()),
                            KeyStatus::Revoked,
                        )
                        .await
                        .unwrap();
                }
                _ => {
                    store
                        .delete(KeyWrite::new(&k.id, k.version, &console()))
                        .await
                        .unwrap();
                }
            }
        });
        let o = drift_only(&r, day);
        assert_eq!(o.code, 2, "{what}: {}", o.all());
        assert!(o.stdout.contains(reason), "{what}: {}", o.stdout);
        assert!(!o.stdout.contains("long-lived"), "{what}: {}", o.stdout);
        apply_at(&r, day);
        let o = drift_only(&r, day);
        assert_eq!(o.code, 0, "{what} not restored: {}", o.all());
        no_changes_at(&r, day);
        // What the spec wants is back.
        let k = live(&r, "short-lived").unwrap();
        assert_eq!(k.scopes, vec!["bibs:read".to_string()], "{what}");
        assert_eq!(k.status, keyward::store::KeyStatus::Active, "{what}");
        if what == "deleted" {
            // The replacement continues the generation count.
            assert_eq!(k.generation, 3, "{what}");
        }
    }
    // A spec change is not drift.
    r.write_keys(&SHORT.replace("[users:read]", "[users:read, bibs:read]"));
    let o = drift_only(&r, 9);
    assert_eq!(o.code, 0, "{}", o.all());
    let o = at(&r, 9, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.code, 2);
}

#[test]
fn superseded_envelopes_are_pruned_after_retain_and_manifests_kept() {
    let r = Repo::new(ROTATING);
    apply_at(&r, 0);
    r.write_keys(&ROTATING.replace("generation: 1", "generation: 2"));
    apply_at(&r, 1);
    let g1 = r.root().join("deliveries/alma-production/ill-lookup/g1");
    // Within the retention (7d by default) the old envelopes stay.
    apply_at(&r, 5);
    assert!(g1.join("jdoe.age").exists());
    let o = apply_at(&r, 9);
    assert!(o.stderr.contains("Pruned 3 envelope(s)"), "{}", o.all());
    assert!(!g1.join("jdoe.age").exists() && !g1.join("asmith.age").exists());
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(g1.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "superseded");
    // The current generation is untouched and readable.
    assert!(!secret_of(&r, "ill-lookup", "jdoe").is_empty());
}

fn console_key(name: &str, owner: &str, i: usize) -> (keyward::store::NewKey, String) {
    let id = keyward::secret::new_key_id();
    let secret = keyward::secret::generate("production", &id);
    let t0 = chrono::DateTime::parse_from_rfc3339(T0).unwrap().to_utc();
    let key = keyward::store::NewKey {
        id: id.clone(),
        name: name.into(),
        environment: "production".into(),
        owner: owner.into(),
        purpose: Some(format!("console key #{i}: \"quoted\", with: colons")),
        scopes: vec![
            if i.is_multiple_of(2) {
                "bibs:read"
            } else {
                "users:write"
            }
            .into(),
        ],
        labels: [("ticket".to_string(), format!("LSIS-{i}"))].into(),
        status: if i == 3 {
            keyward::store::KeyStatus::Disabled
        } else {
            keyward::store::KeyStatus::Active
        },
        issued_at: t0 - chrono::Duration::days(10),
        expires_at: Some(t0 + chrono::Duration::days(100 + i as i64)),
        lifetime: None,
        generation: 1,
        spec_generation: 0,
        recipients: Default::default(),
        quota_per_day: i.is_multiple_of(3).then_some(500),
        protected: i == 5,
        managed_by: None,
        applied_digest: None,
        secret_hash: secret.hash(),
    };
    (key, secret.expose().to_string())
}

#[test]
fn twenty_console_keys_are_imported_and_the_next_plan_is_empty() {
    let r = Repo::new("keys: []\n");
    let owners = ["jdoe", "asmith", "rkumar"];
    let mut secrets = Vec::new();
    rt().block_on(async {
        let store = prod(&r);
        for i in 0..20 {
            let (k, s) = console_key(&format!("console-{i:02}"), owners[i % 3], i);
            store.insert_unmanaged(k).await.unwrap();
            secrets.push(s);
        }
        let (mut other, _) = console_key("terraformed", "jdoe", 99);
        other.managed_by = Some("terraform".into());
        store.insert_unmanaged(other).await.unwrap();
    });
    let o = at(&r, 0, &["import", "--store", "alma-production"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stderr.contains("Wrote 20 key(s) to keys/imported.yaml"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("skipped terraformed"), "{}", o.stderr);
    let yaml = std::fs::read_to_string(r.root().join("keys/imported.yaml")).unwrap();
    assert!(yaml.contains("name: console-07"), "{yaml}");
    // Editors check the file like any other key file (no schemas/ here: the path that
    // `keyward schema --write` fills).
    assert!(
        yaml.starts_with("# yaml-language-server: $schema=../schemas/keys.schema.json\n"),
        "{yaml}"
    );
    assert!(!yaml.contains("kw_prod_"), "a secret in the YAML");

    // Import changed no store: the plan adopts each key (one update, the secret kept) and
    // the apply of it leaves nothing to do.
    assert!(live(&r, "console-07").unwrap().managed_by.is_none());
    let p = at(&r, 0, &["plan", "--detailed-exitcode"]);
    assert_eq!(p.code, 2, "the plan after import adopts: {}", p.all());
    assert_eq!(
        p.stdout.matches("adopt: the unmanaged key").count(),
        20,
        "{}",
        p.stdout
    );
    assert!(
        p.stdout.contains(
            "Plan: 0 to create, 20 to update, 0 to rotate, 0 to replace, 0 to disable, 0 to revoke"
        ),
        "{}",
        p.stdout
    );
    apply_at(&r, 0);
    no_changes_at(&r, 0);
    // The imported keys keep their secrets.
    assert_eq!(verify_at(&r, 0, &secrets[7])["valid"], true);
    // The other tool's key was not touched.
    let t = live(&r, "terraformed").unwrap();
    assert_eq!(t.managed_by.as_deref(), Some("terraform"));
    // Importing again finds nothing new.
    let o = at(
        &r,
        0,
        &[
            "import",
            "--store",
            "alma-production",
            "--output",
            "keys/again.yaml",
        ],
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(o.stderr.contains("Nothing to import"), "{}", o.stderr);
    // A console edit of an imported key is drift from now on.
    let k = live(&r, "console-04").unwrap();
    rt().block_on(async {
        let p = KeyPatch {
            scopes: Some(vec!["bibs:write".into()]),
            ..KeyPatch::default()
        };
        prod(&r)
            .update(KeyWrite::new(&k.id, k.version, &console()), p)
            .await
            .unwrap();
    });
    let o = drift_only(&r, 1);
    assert_eq!(o.code, 2, "{}", o.all());
    // The first rotation delivers a secret through keyward; the old one works through grace.
    let yaml = yaml.replacen(
        "name: console-00\n",
        "name: console-00\n  rotation:\n    generation: 2\n",
        1,
    );
    std::fs::write(r.root().join("keys/imported.yaml"), yaml).unwrap();
    apply_at(&r, 1);
    let s = secret_of(&r, "console-00", "jdoe");
    assert_eq!(verify_at(&r, 2, &s)["valid"], true);
    assert_eq!(verify_at(&r, 2, &secrets[0])["valid"], true);
    no_changes_at(&r, 2);
}

const TEAM_KEYS: &str = "\
keys:
  - name: team-key
    store: alma-production
    owner: rkumar
    scopes: [bibs:read]
    recipients: [team:ill-staff]
  - name: asmith-key
    store: alma-production
    owner: asmith
    scopes: [users:read]
    recipients: [jdoe]
  - name: shared-key
    store: alma-production
    owner: jdoe
    scopes: [courses:read]
    recipients: [asmith]
  - name: unrelated
    store: alma-production
    owner: rkumar
    scopes: [analytics:read]
";

#[test]
fn a_person_leaving_is_reported_then_every_key_they_could_read_rotates() {
    let r = Repo::new(TEAM_KEYS);
    apply_at(&r, 0);
    // asmith leaves: removed from people.yaml and from the team.
    let people = std::fs::read_to_string(r.root().join("people.yaml")).unwrap();
    let mut kept = Vec::new();
    let mut skipping = false;
    for l in people.lines() {
        if l.starts_with("  asmith:") {
            skipping = true;
            continue;
        }
        if skipping && l.starts_with("    ") {
            continue;
        }
        skipping = false;
        kept.push(l.replace("members: [jdoe, asmith]", "members: [jdoe]"));
    }
    std::fs::write(r.root().join("people.yaml"), kept.join("\n") + "\n").unwrap();

    // validate points at the key they own, with the choice to reassign or remove it.
    let v = r.run(&["validate"]);
    assert_eq!(v.code, 1, "{}", v.all());
    assert!(v.stdout.contains("keys/keys.yaml:9:12"), "{}", v.stdout);
    assert!(v.stdout.contains("unknown owner `asmith`"), "{}", v.stdout);
    assert!(
        v.stdout.contains("if `asmith` has left: reassign the key"),
        "{}",
        v.stdout
    );

    // The admin decides: jdoe takes the key over; asmith is no longer a recipient.
    r.write_keys(
        &TEAM_KEYS
            .replace("    owner: asmith\n", "    owner: jdoe\n")
            .replace("    recipients: [asmith]\n", ""),
    );
    let p = at(&r, 1, &["plan", "--detailed-exitcode"]);
    assert_eq!(p.code, 2, "{}", p.all());
    assert!(
        p.stdout
            .contains("access removed for asmith: 3 key(s) they could read get a new secret, 1 key(s) they owned move to a new owner\n"),
        "{}",
        p.stdout
    );
    assert!(!p.stdout.contains("unrelated"), "{}", p.stdout);
    apply_at(&r, 1);
    no_changes_at(&r, 1);
    // No envelope of any key rotated after they left is sealed to them.
    for key in ["team-key", "asmith-key", "shared-key"] {
        let g2 = r
            .root()
            .join(format!("deliveries/alma-production/{key}/g2"));
        assert!(g2.join("manifest.json").exists(), "{key} was not re-issued");
        assert!(
            !g2.join("asmith.age").exists(),
            "{key}: asmith got an envelope"
        );
        let m = std::fs::read_to_string(g2.join("manifest.json")).unwrap();
        assert!(!m.contains("\"asmith\""), "{key}: asmith in the manifest");
    }
}
