//! Interoperability with the standard `age` CLI (Debian `age` 1.1.1): it must decrypt our
//! envelopes (`age -d -i ID FILE | jq -r .secret`), and we must decrypt what it encrypts.
//! Without `age` on PATH these tests FAIL (install it: `apt-get install age`), unless
//! KEYWARD_SKIP_AGE_CLI=1 is set, in which case they say so and pass.

mod deliver_common;

use std::io::Write;
use std::process::{Command, Stdio};

use deliver_common::*;
use keyward::deliver::{
    IdentitySources, decrypt_file, find_identities, keygen, seal, seal_for_principals,
};
use keyward::secret;
use keyward::spec::model::{PrincipalKind, RecipientKey};

/// True when the age CLI can be used; panics with install advice when it is missing.
fn age_cli() -> bool {
    if Command::new("age").arg("--version").output().is_ok() {
        return true;
    }
    if std::env::var("KEYWARD_SKIP_AGE_CLI").as_deref() == Ok("1") {
        eprintln!("SKIPPED (KEYWARD_SKIP_AGE_CLI=1): the `age` CLI is not on PATH");
        return false;
    }
    panic!(
        "the `age` CLI is not on PATH: install it with `apt-get install age` (or set KEYWARD_SKIP_AGE_CLI=1 to skip)"
    );
}

fn age_decrypt(identity: &std::path::Path, file: &std::path::Path) -> serde_json::Value {
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(file)
        .output()
        .expect("run age -d");
    assert!(
        out.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("age -d prints the envelope JSON")
}

#[test]
fn the_age_cli_decrypts_our_envelopes() {
    if !age_cli() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, a_pub) = age_identity();
    let a_file = write_identity_file(&dir.path().join("a.txt"), &a);
    let ssh_key = dir.path().join("id_ed25519");
    let ssh_pub = ssh_keygen(&ssh_key, "");

    let id = secret::new_key_id();
    let s = secret::generate("production", &id);
    let m = meta("illiad-barcode-lookup", &id, 3);
    let mut principals = vec![principal("jdoe", PrincipalKind::Person, &[a_pub])];
    if let Some(p) = &ssh_pub {
        principals.push(principal(
            "svc",
            PrincipalKind::Service,
            std::slice::from_ref(p),
        ));
    }
    let refs: Vec<_> = principals.iter().collect();
    let sealed = seal_for_principals(&m, &s, &refs).expect("seal");

    let f = dir.path().join("jdoe.age");
    std::fs::write(&f, &sealed[0].armored).expect("write envelope");
    let v = age_decrypt(&a_file, &f);
    assert_eq!(
        v["secret"].as_str(),
        Some(s.expose()),
        "`.secret` is the secret"
    );
    assert_eq!(v["key"], "illiad-barcode-lookup");
    assert_eq!(v["store"], "alma-sandbox");
    assert_eq!(v["id"].as_str(), Some(id.as_str()));
    assert_eq!(v["generation"], 3);
    assert_eq!(v["expires_at"], "2027-06-30T12:00:00Z");

    if ssh_pub.is_some() {
        let f = dir.path().join("svc.age");
        std::fs::write(&f, &sealed[1].armored).expect("write envelope");
        let v = age_decrypt(&ssh_key, &f);
        assert_eq!(
            v["secret"].as_str(),
            Some(s.expose()),
            "age -d with an SSH key"
        );
    }
}

#[test]
fn we_decrypt_what_the_age_cli_encrypts() {
    if !age_cli() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, a_pub) = age_identity();
    let a_file = write_identity_file(&dir.path().join("a.txt"), &a);
    let json = br#"{"key":"k1","store":"alma-sandbox","id":"abcdefgh23456723","generation":2,"secret":"kw_sbx_from_cli","expires_at":null}"#;
    let out_file = dir.path().join("cli.age");
    let mut child = Command::new("age")
        .args(["-a", "-r", &a_pub, "-o"])
        .arg(&out_file)
        .stdin(Stdio::piped())
        .spawn()
        .expect("run age -a -r");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(json)
        .expect("feed age");
    assert!(
        child.wait().expect("age exits").success(),
        "age -a -r failed"
    );

    let ids = find_identities(&IdentitySources::default(), &[a_file]).expect("identities");
    let opened = decrypt_file(&out_file, &ids).expect("our decrypt reads age CLI output");
    assert_eq!(opened.secret.expose(), "kw_sbx_from_cli");
    assert_eq!(opened.meta.generation, 2);
    assert_eq!(opened.meta.key, "k1");
}

#[test]
fn keygen_files_are_read_by_age_keygen_and_age() {
    if !age_cli() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let idfile = dir.path().join("keyward").join("identities.txt");
    let public = keygen(&idfile).expect("keygen");
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&idfile)
        .output()
        .expect("run age-keygen -y");
    assert!(
        out.status.success(),
        "age-keygen -y: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), public);

    let s = secret::generate("sandbox", &secret::new_key_id());
    let f = dir.path().join("x.age");
    std::fs::write(
        &f,
        seal(&meta("k", "id1", 1), &s, &[RecipientKey::new(&public)]).expect("seal"),
    )
    .expect("write");
    assert_eq!(
        age_decrypt(&idfile, &f)["secret"].as_str(),
        Some(s.expose())
    );
}

/// Runs one of the tests above in a child process whose PATH has no `age`.
fn run_without_age(skip: bool) -> std::process::Output {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "we_decrypt_what_the_age_cli_encrypts",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("PATH", "/nonexistent-keyward-test-path")
    .env_remove("KEYWARD_SKIP_AGE_CLI");
    if skip {
        cmd.env("KEYWARD_SKIP_AGE_CLI", "1");
    }
    cmd.output().expect("run the test binary")
}

#[test]
fn without_the_age_cli_the_interop_tests_fail_unless_skipped_explicitly() {
    let out = run_without_age(false);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "must fail without age: {text}");
    assert!(text.contains("apt-get install age"), "{text}");

    let out = run_without_age(true);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "skips with KEYWARD_SKIP_AGE_CLI=1: {text}"
    );
    assert!(text.contains("SKIPPED (KEYWARD_SKIP_AGE_CLI=1)"), "{text}");
}
