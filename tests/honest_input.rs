//! Issue 15, "Honest deliveries and honest input" (items 15, 16) through the real binary on
//! temp repositories with a test clock: superseded and revoked deliveries say so.

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
