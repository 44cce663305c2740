//! Issue 15, "Honest deliveries and honest input" (items 15, 16) through the real binary on
//! temp repositories with a test clock: superseded and revoked deliveries say so, and bad
//! input (a clock, an owner, a name in `request`) is an error naming the valid choices.

mod common;
use common::{Out, Repo};

const T0: &str = "2027-01-10T12:00:00Z";

fn t(days: i64) -> String {
    let t0 = chrono::DateTime::parse_from_rfc3339(T0).unwrap();
    (t0 + chrono::Duration::days(days)).to_rfc3339()
}

fn at(r: &Repo, day: i64, args: &[&str]) -> Out {
    r.run_with(args, &[("KEYWARD_NOW", &t(day))], None)
}

fn verify_at(r: &Repo, day: i64, secret: &str) -> serde_json::Value {
    let o = r.run_with(
        &["verify", "--store", "alma-production"],
        &[("KEYWARD_NOW", &t(day))],
        Some(secret),
    );
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", o.all()))
}

fn keys(generation: u32, with_leaver: bool) -> String {
    let mut y = format!(
        "keys:\n  - name: rotating\n    store: alma-production\n    owner: jdoe\n    scopes: [bibs:read]\n    rotation: {{ every: 90d, grace: 7d, generation: {generation} }}\n"
    );
    if with_leaver {
        y.push_str("  - name: leaving\n    store: alma-production\n    owner: asmith\n    scopes: [users:read]\n");
    }
    y
}

fn status(r: &Repo, name: &str, g: u32) -> String {
    let p = r.root().join(format!(
        "deliveries/alma-production/{name}/g{g}/manifest.json"
    ));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}")))
            .unwrap();
    m["status"].as_str().unwrap_or_default().to_string()
}

fn decrypt(r: &Repo, name: &str, g: u32, who: &str) -> Out {
    let file = format!("deliveries/alma-production/{name}/g{g}/{who}.age");
    let id = r.identity(who);
    r.run(&[
        "decrypt",
        r.root().join(file).to_str().unwrap(),
        "-i",
        id.to_str().unwrap(),
    ])
}

#[test]
fn superseded_and_revoked_deliveries_say_so_and_secret_picks_the_current_generation() {
    let r = Repo::new(&keys(1, true));
    let o = at(&r, 0, &["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let g1 = r.secret("rotating", "alma-production", "jdoe");
    let fresh = decrypt(&r, "rotating", 1, "jdoe");
    assert_eq!((fresh.code, fresh.stdout.trim()), (0, g1.as_str()));
    assert!(!fresh.stderr.contains("warning"), "{}", fresh.stderr);

    // Rotate: g1 is superseded; `secret` gives g2, decrypting g1 warns.
    r.write_keys(&keys(2, true));
    let o = at(&r, 1, &["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(status(&r, "rotating", 1), "superseded");
    let o = r.run(&[
        "secret",
        "rotating",
        "-i",
        r.identity("jdoe").to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_ne!(
        o.stdout.trim(),
        g1,
        "secret NAME must pick the current generation"
    );
    assert!(!o.stderr.contains("warning"), "{}", o.stderr);
    assert_eq!(verify_at(&r, 1, o.stdout.trim())["valid"], true);
    let old = decrypt(&r, "rotating", 1, "jdoe");
    assert_eq!(
        (old.code, old.stdout.trim()),
        (0, g1.as_str()),
        "{}",
        old.all()
    );
    assert!(
        old.stderr.contains("warning") && old.stderr.contains("superseded"),
        "no warning for a superseded delivery: {}",
        old.stderr
    );

    // Remove a key: apply revokes it and its manifest says so; opening it warns.
    r.write_keys(&keys(2, false));
    let o = at(&r, 2, &["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(status(&r, "leaving", 1), "revoked");
    let gone = decrypt(&r, "leaving", 1, "asmith");
    assert_eq!(gone.code, 0, "{}", gone.all());
    assert!(
        gone.stderr.contains("warning") && gone.stderr.contains("revoked"),
        "no warning for a revoked delivery: {}",
        gone.stderr
    );
    assert_eq!(verify_at(&r, 2, gone.stdout.trim())["reason"], "revoked");
    let s = r.run(&[
        "secret",
        "leaving",
        "--store",
        "alma-production",
        "-i",
        r.identity("asmith").to_str().unwrap(),
    ]);
    assert_eq!(s.code, 0, "{}", s.all());
    assert!(s.stderr.contains("revoked"), "{}", s.stderr);
    // Nothing else changes on the next run.
    let o = at(&r, 3, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.code, 0, "{}", o.all());
}

#[test]
fn a_bad_keyward_now_is_an_error_not_the_system_clock() {
    let r = Repo::new(&keys(1, false));
    for cmd in [&["validate"][..], &["plan"], &["expiring"]] {
        let o = r.run_with(cmd, &[("KEYWARD_NOW", "banana")], None);
        assert_eq!(o.code, 1, "{cmd:?}: {}", o.all());
        assert!(
            o.stderr.contains("KEYWARD_NOW") && o.stderr.contains("RFC 3339"),
            "{}",
            o.stderr
        );
    }
    assert!(!r.root().join(".keyward/prod.db").exists());
    let o = at(&r, 0, &["validate"]);
    assert_eq!(o.code, 0, "{}", o.all());
}

#[test]
fn keys_with_an_owner_nobody_has_is_an_error_with_did_you_mean() {
    let r = Repo::new(&keys(1, false));
    // Before any apply (the store file is absent) and after it.
    for applied in [false, true] {
        if applied {
            let o = at(&r, 0, &["apply", "--auto-approve"]);
            assert_eq!(o.code, 0, "{}", o.all());
        }
        let o = r.run(&["keys", "--owner", "jdeo"]);
        assert_eq!(o.code, 1, "applied {applied}: {}", o.all());
        assert!(
            o.stderr.contains("did you mean `jdoe`?")
                && o.stderr.contains("owners: asmith, jdoe, rkumar"),
            "{}",
            o.stderr
        );
        assert!(o.stdout.is_empty(), "{}", o.stdout);
        // A far-off name gets the list without a guess.
        let o = r.run(&["keys", "--owner", "zzzzzz", "--format", "json"]);
        assert_eq!(o.code, 1, "{}", o.all());
        assert!(
            !o.stderr.contains("did you mean") && o.stderr.contains("owners: asmith"),
            "{}",
            o.stderr
        );
    }
    // A known owner with no keys is an empty list, not an error; jdoe's key is listed.
    let o = r.run(&["keys", "--owner", "asmith"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(o.stderr.contains("0 key(s)."), "{}", o.stderr);
    let o = r.run(&["keys", "--owner", "jdoe"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(o.stdout.contains("rotating"), "{}", o.stdout);
}

/// `keyward request` with one bad value at a time: each is refused with the close name.
#[test]
fn request_suggests_the_close_name_for_stores_owners_scopes_and_recipients() {
    let r = Repo::new(&keys(1, false));
    let base = |flag: &str, value: &str| -> Vec<String> {
        let mut a: Vec<String> = [
            "request",
            "--no-input",
            "--name",
            "ill-lookup",
            "--store",
            "alma-production",
            "--owner",
            "jdoe",
            "--scope",
            "bibs:read",
            "--lifetime",
            "90d",
        ]
        .map(String::from)
        .to_vec();
        match a.iter().position(|x| x == flag) {
            Some(i) => a[i + 1] = value.to_string(),
            None => a.extend([flag.to_string(), value.to_string()]),
        }
        a
    };
    let cases = [
        (
            "--store",
            "alma-prodution",
            "did you mean `alma-production`?",
        ),
        ("--store", "sandbx", "did you mean `sandbox`?"),
        ("--owner", "jdeo", "did you mean `jdoe`?"),
        ("--scope", "bibz:read", "did you mean `bibs`?"),
        ("--scope", "bibs:raed", "did you mean `read`?"),
        ("--recipient", "asmit", "did you mean `asmith`?"),
        (
            "--recipient",
            "team:ill-staf",
            "did you mean `team:ill-staff`?",
        ),
    ];
    for (flag, value, want) in cases {
        let args = base(flag, value);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = r.run(&args);
        assert_eq!(o.code, 1, "{flag} {value}: {}", o.all());
        assert!(
            o.stderr.contains(flag) && o.stderr.contains(want),
            "{flag} {value}: {}",
            o.stderr
        );
    }
    // The recipients' choices are listed too.
    let args = base("--recipient", "nobody-at-all");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = r.run(&args);
    assert!(
        o.stderr
            .contains("choices: asmith, jdoe, rkumar, team:ill-staff"),
        "{}",
        o.stderr
    );
    assert!(!r.root().join("keys/ill-lookup.yaml").exists());
}

/// A spec error in one key and a policy violation in another: `validate` reports both in
/// one run (before, the policy was checked only once the spec loaded cleanly).
#[test]
fn validate_reports_spec_and_policy_problems_in_one_pass() {
    let r = Repo::new(
        "keys:\n  - name: typo\n    store: alma-production\n    owner: jdeo\n    scopes: [bibs:read]\n  - name: forbidden\n    store: alma-production\n    owner: jdoe\n    scopes: [users:write]\n",
    );
    std::fs::write(
        r.root().join("keyward.yaml"),
        "version: 1\nstores:\n  alma-production: { kind: sqlite, path: .keyward/prod.db, environment: production }\npolicy:\n  default_lifetime: 365d\n  forbid:\n    - { scope: users:write, reason: \"no write access to users\" }\n",
    )
    .unwrap();
    let o = at(&r, 0, &["validate"]);
    assert_eq!(o.code, 1, "{}", o.all());
    let all = o.all();
    assert!(all.contains("KW102") && all.contains("jdeo"), "{all}");
    assert!(
        all.contains("KW201") && all.contains("no write access to users"),
        "{all}"
    );
    assert!(
        all.contains("keys/keys.yaml:9"),
        "the policy error at its line: {all}"
    );
    let o = at(&r, 0, &["validate", "--format", "json"]);
    assert_eq!(o.code, 1, "{}", o.all());
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("json");
    let codes: Vec<&str> = v["diagnostics"]
        .as_array()
        .expect("diagnostics")
        .iter()
        .filter_map(|d| d["code"].as_str())
        .collect();
    assert!(
        codes.contains(&"KW102") && codes.contains(&"KW201"),
        "{codes:?}"
    );
    // A broken keyward.yaml: its policy is unknown, so no policy guess is reported.
    std::fs::write(
        r.root().join("keyward.yaml"),
        "version: 1\nstores:\n  alma-production: { kind: sqlite, path: .keyward/prod.db, environment: production }\npolicy:\n  default_lifetime: banana\n  forbid:\n    - { scope: users:write, reason: \"no write access to users\" }\n",
    )
    .unwrap();
    let o = at(&r, 0, &["validate"]);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(!o.all().contains("KW201"), "{}", o.all());
}
