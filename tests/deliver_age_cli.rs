//! Interoperability with the standard `age` CLI (Debian `age` 1.1.1): it must decrypt our
//! envelopes (`age -d -i ID FILE | jq -r .secret`), and we must decrypt what it encrypts.
//! Without `age` on PATH these tests skip with one visible line (`apt-get install age`), and
//! fail under `CI=true` (tests/needs); the last test here proves both through a child run.

mod deliver_common;
mod needs;

use std::io::Write;
use std::process::{Command, Stdio};

use deliver_common::*;
use keyward::deliver::{
    IdentitySources, decrypt_file, find_identities, keygen, seal, seal_for_principals,
};
use keyward::secret;
use keyward::spec::model::{PrincipalKind, RecipientKey};

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
    if !needs::tool(&needs::AGE) {
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
    if !needs::tool(&needs::AGE) {
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
    if !needs::tool(&needs::AGE) {
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

/// Runs one of the tests above in a child process whose PATH has no `age`, captured by the
/// harness as in a plain `cargo test` (no `--nocapture`), recording skips in `log`.
fn run_without_age(ci: Option<&str>, log: &std::path::Path) -> (bool, String, String) {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "we_decrypt_what_the_age_cli_encrypts",
        "--test-threads=1",
    ])
    .env("PATH", "/nonexistent-keyward-test-path")
    .env("KEYWARD_TEST_SKIP_LOG", log);
    match ci {
        Some(v) => cmd.env("CI", v),
        None => cmd.env_remove("CI"),
    };
    let out = cmd.output().expect("run the test binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_the_age_cli_a_test_skips_with_one_visible_line_and_fails_under_ci() {
    let dir = tempfile::tempdir().expect("tempdir");
    let want = "SKIP tests/deliver_age_cli.rs::we_decrypt_what_the_age_cli_encrypts: \
                needs the age CLI (apt-get install age)";

    let log = dir.path().join("skipped.log");
    let (ok, stdout, stderr) = run_without_age(None, &log);
    assert!(ok, "skips and passes without age: {stdout}{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("SKIP")).collect();
    assert_eq!(lines, [want], "one line on the real stderr: {stderr}");
    // Recorded for the end-of-run summary, under the run of the process that started it.
    let recorded = std::fs::read_to_string(&log).expect("skip recorded");
    let run = format!("{}:", std::process::id());
    assert_eq!(recorded.lines().count(), 1, "{recorded}");
    assert!(recorded.starts_with(&run), "{recorded}");
    assert!(
        recorded.trim_end().ends_with(&format!("\t{want}")),
        "{recorded}"
    );

    for ci in ["true", "1"] {
        let log = dir.path().join(format!("ci-{ci}.log"));
        let (ok, stdout, stderr) = run_without_age(Some(ci), &log);
        let text = format!("{stdout}{stderr}");
        assert!(!ok, "CI={ci} must fail without age: {text}");
        assert!(text.contains("CI=true never skips"), "{text}");
        assert!(text.contains("apt-get install age"), "{text}");
        assert!(!log.exists(), "a failure is not a skip");
    }
    // CI=false is a developer's machine: it skips.
    let (ok, _, stderr) = run_without_age(Some("false"), &dir.path().join("no-ci.log"));
    assert!(ok && stderr.contains(want), "{stderr}");
}
