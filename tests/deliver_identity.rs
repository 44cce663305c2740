//! Identity discovery (explicit sources and a fake HOME, never the process environment),
//! keygen and write_secret_file file modes.

mod deliver_common;
mod needs;

use std::path::{Path, PathBuf};

use deliver_common::*;
use keyward::deliver::{
    DeliverError, IdentitySources, decrypt_bytes, find_identities, keygen, seal, write_secret_file,
};
use keyward::secret;
use keyward::spec::model::RecipientKey;

fn fp(public: &str) -> String {
    RecipientKey::new(public).fingerprint
}

fn sources(home: &Path) -> IdentitySources {
    IdentitySources::new(Some(home.to_path_buf()))
}

fn origins(ids: &keyward::deliver::Identities) -> Vec<String> {
    ids.origins.iter().map(|o| o.source.clone()).collect()
}

#[test]
fn discovery_searches_every_source_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let (env_key, env_pub) = age_identity();
    let (file_key, file_pub) = age_identity();
    let (kw_key, kw_pub) = age_identity();
    let (sops_key, sops_pub) = age_identity();
    let env_file = write_identity_file(&dir.path().join("elsewhere/key.txt"), &file_key);
    let kw_file = write_identity_file(&home.join(".config/keyward/identities.txt"), &kw_key);
    let sops_file = write_identity_file(&home.join(".config/sops/age/keys.txt"), &sops_key);
    let ssh_pub = ssh_keygen(&home.join(".ssh/id_ed25519"), "");
    let rsa_pub = ssh_keygen_kind(&home.join(".ssh/id_rsa"), &["-t", "rsa", "-b", "2048"], "");

    let src = sources(&home)
        .with_var("KEYWARD_AGE_IDENTITY", format!("# from env\n{env_key}\n"))
        .with_var("KEYWARD_AGE_IDENTITY_FILE", env_file.display().to_string());
    let ids = find_identities(&src, &[]).expect("identities");
    let mut want = vec![
        "KEYWARD_AGE_IDENTITY".to_string(),
        env_file.display().to_string(),
        kw_file.display().to_string(),
        sops_file.display().to_string(),
    ];
    let mut want_fps = vec![fp(&env_pub), fp(&file_pub), fp(&kw_pub), fp(&sops_pub)];
    if let Some(p) = &ssh_pub {
        want.push(home.join(".ssh/id_ed25519").display().to_string());
        want_fps.push(fp(p));
    }
    if let Some(p) = &rsa_pub {
        assert!(p.starts_with("ssh-rsa "), "{p}");
        want.push(home.join(".ssh/id_rsa").display().to_string());
        want_fps.push(fp(p));
    }
    assert_eq!(origins(&ids), want);
    assert_eq!(ids.fingerprints(), want_fps);
    assert_eq!(ids.len(), want.len());
    // Debug shows sources, never key material.
    let dbg = format!("{ids:?}");
    for k in [&env_key, &file_key, &kw_key, &sops_key] {
        assert!(!dbg.contains(k.as_str()));
    }

    // Every discovered identity really decrypts what was sealed to it.
    let s = secret::generate("sandbox", &secret::new_key_id());
    let ssh_pubs = ssh_pub.iter().chain(rsa_pub.iter());
    for public in [&env_pub, &file_pub, &kw_pub, &sops_pub]
        .into_iter()
        .chain(ssh_pubs)
    {
        let armored = seal(&meta("k", "id", 1), &s, &[RecipientKey::new(public)]).expect("seal");
        assert_eq!(
            decrypt_bytes(armored.as_bytes(), &ids, "x")
                .expect("decrypt")
                .secret
                .expose(),
            s.expose()
        );
    }
}

#[test]
fn explicit_files_are_used_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let (kw_key, _) = age_identity();
    write_identity_file(&home.join(".config/keyward/identities.txt"), &kw_key);
    let (x_key, x_pub) = age_identity();
    let x = write_identity_file(&dir.path().join("x.txt"), &x_key);
    let src = sources(&home).with_var("KEYWARD_AGE_IDENTITY", kw_key.clone());
    let ids = find_identities(&src, std::slice::from_ref(&x)).expect("identities");
    assert_eq!(origins(&ids), vec![format!("-i {}", x.display())]);
    assert_eq!(ids.fingerprints(), vec![fp(&x_pub)]);

    let missing = dir.path().join("missing.txt");
    let err = find_identities(&src, &[missing]).unwrap_err();
    assert!(matches!(err, DeliverError::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing.txt"), "{err}");
}

#[test]
fn xdg_config_home_and_sops_key_file_override_the_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let xdg = dir.path().join("xdg");
    let (a, a_pub) = age_identity();
    let (b, b_pub) = age_identity();
    let (ignored, _) = age_identity();
    write_identity_file(&home.join(".config/keyward/identities.txt"), &ignored);
    write_identity_file(&home.join(".config/sops/age/keys.txt"), &ignored);
    let kw = write_identity_file(&xdg.join("keyward/identities.txt"), &a);
    let sops = write_identity_file(&dir.path().join("sops-keys.txt"), &b);
    let src = sources(&home)
        .with_var("XDG_CONFIG_HOME", xdg.display().to_string())
        .with_var("SOPS_AGE_KEY_FILE", sops.display().to_string());
    let ids = find_identities(&src, &[]).expect("identities");
    assert_eq!(
        origins(&ids),
        vec![kw.display().to_string(), sops.display().to_string()]
    );
    assert_eq!(ids.fingerprints(), vec![fp(&a_pub), fp(&b_pub)]);

    // A configured file that does not exist is an error, not silently skipped.
    let src = sources(&home).with_var(
        "KEYWARD_AGE_IDENTITY_FILE",
        dir.path().join("nope.txt").display().to_string(),
    );
    let err = find_identities(&src, &[]).unwrap_err();
    assert!(err.to_string().contains("nope.txt"), "{err}");
}

#[test]
fn nothing_found_lists_what_was_searched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("empty-home");
    let err = find_identities(&sources(&home), &[]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DeliverError::NoIdentities { .. }), "{msg}");
    assert!(msg.contains(".config/keyward/identities.txt"), "{msg}");
    assert!(msg.contains(".config/sops/age/keys.txt"), "{msg}");
    assert!(
        msg.contains(".ssh/id_ed25519") && msg.contains(".ssh/id_rsa"),
        "{msg}"
    );
    assert!(msg.contains("keyward keygen"), "{msg}");
}

#[test]
fn passphrase_protected_ssh_keys_are_reported_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let key = home.join(".ssh/id_ed25519");
    if ssh_keygen(&key, "correct horse").is_none() {
        return; // reported visibly by the helper
    }
    // As a default location: skipped with a note, the search goes on.
    let err = find_identities(&sources(&home), &[]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("passphrase-protected SSH keys are not supported here"),
        "{msg}"
    );
    let (a, _) = age_identity();
    write_identity_file(&home.join(".config/keyward/identities.txt"), &a);
    let ids = find_identities(&sources(&home), &[]).expect("the age identity is still found");
    assert_eq!(ids.len(), 1);
    assert!(
        ids.notes.iter().any(|n| n.contains("passphrase-protected")),
        "{:?}",
        ids.notes
    );

    // Given explicitly: an error naming the file.
    let err = find_identities(&sources(&home), std::slice::from_ref(&key)).unwrap_err();
    assert!(err.to_string().contains("passphrase-protected"), "{err}");
    assert!(err.to_string().contains("id_ed25519"), "{err}");
}

#[test]
fn broken_identity_files_never_leak_their_contents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, _) = age_identity();
    // A valid key followed by a line that is almost a key (e.g. a typo).
    let bad = dir.path().join("bad.txt");
    // Change the last (checksum) character to a different one, whatever it was.
    let swap = if a.ends_with('X') { 'Q' } else { 'X' };
    let almost = format!("{}{swap}", &a[..a.len() - 1]);
    std::fs::write(&bad, format!("{a}\n{almost}\n")).expect("write");
    let err = find_identities(&IdentitySources::default(), std::slice::from_ref(&bad)).unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(msg.contains("line 2"), "{msg}");
    assert!(
        !msg.contains(&a[20..]) && !msg.contains(&almost[20..]),
        "{msg}"
    );
    assert!(
        !msg.contains('\u{2068}') && !msg.contains('\u{2069}'),
        "isolation marks stripped: {msg:?}"
    );

    let src = IdentitySources::default()
        .with_var("KEYWARD_AGE_IDENTITY", "AGE-SECRET-KEY-1GARBAGEGARBAGE");
    let msg = find_identities(&src, &[]).unwrap_err().to_string();
    assert!(
        msg.contains("KEYWARD_AGE_IDENTITY") && !msg.contains("GARBAGE"),
        "{msg}"
    );

    let ssh_like = dir.path().join("id_broken");
    std::fs::write(
        &ssh_like,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nSECRETSTUFF\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .expect("write");
    let msg = find_identities(&IdentitySources::default(), &[ssh_like])
        .unwrap_err()
        .to_string();
    assert!(!msg.contains("SECRETSTUFF"), "{msg}");
}

#[cfg(unix)]
#[test]
fn keygen_writes_a_0600_age_keygen_style_file_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cfg/keyward/identities.txt");
    let public = keygen(&path).expect("keygen");
    assert!(public.starts_with("age1"));
    assert_eq!(mode(&path), 0o600);
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{}", lines.len());
    assert!(lines[0].starts_with("# created: "));
    assert_eq!(lines[1], format!("# public key: {public}"));
    assert!(lines[2].starts_with("AGE-SECRET-KEY-1"));

    let ids =
        find_identities(&IdentitySources::default(), std::slice::from_ref(&path)).expect("usable");
    assert_eq!(ids.fingerprints(), vec![fp(&public)]);

    let err = keygen(&path).unwrap_err();
    assert!(matches!(err, DeliverError::AlreadyExists { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        text,
        "unchanged"
    );
    let leftovers: Vec<PathBuf> = all_files(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[cfg(unix)]
#[test]
fn write_secret_file_is_0600_and_replaces_an_existing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("secret.env");
    std::fs::write(&out, "old").expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    write_secret_file(&out, b"KEYWARD_K_SECRET=kw_x\n").expect("write_secret_file");
    assert_eq!(
        std::fs::read_to_string(&out).expect("read"),
        "KEYWARD_K_SECRET=kw_x\n"
    );
    assert_eq!(mode(&out), 0o600);
    let fresh = dir.path().join("new.txt");
    write_secret_file(&fresh, b"x").expect("new file");
    assert_eq!(mode(&fresh), 0o600);
    let err = write_secret_file(&dir.path().join("no/such/dir/x"), b"x").unwrap_err();
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

#[test]
fn from_process_env_reads_home_without_changing_the_environment() {
    let src = IdentitySources::from_process_env();
    match std::env::var("HOME") {
        Ok(h) if !h.is_empty() => assert_eq!(src.home, Some(PathBuf::from(h))),
        _ => assert!(src.home.is_none()),
    }
    for name in src.vars.keys() {
        assert!(
            [
                "HOME",
                "XDG_CONFIG_HOME",
                "KEYWARD_AGE_IDENTITY",
                "KEYWARD_AGE_IDENTITY_FILE",
                "SOPS_AGE_KEY",
                "SOPS_AGE_KEY_FILE"
            ]
            .contains(&name.as_str()),
            "only the variables the search uses are read: {name}"
        );
    }
}

#[test]
fn protected_ssh_keys_work_with_a_passphrase_prompt_asked_at_most_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let Some(ssh_pub) = ssh_keygen(&home.join(".ssh/id_ed25519"), "correct horse") else {
        return; // reported visibly by the helper
    };
    let (a, a_pub) = age_identity();
    write_identity_file(&home.join(".config/keyward/identities.txt"), &a);
    let prompt = |answer: Option<&'static str>,
                  asked: Arc<AtomicUsize>|
     -> keyward::deliver::PassphrasePrompt {
        Arc::new(move |_what: &str| {
            asked.fetch_add(1, Ordering::SeqCst);
            answer.map(|p| age::secrecy::SecretString::from(p.to_string()))
        })
    };
    let s = secret::generate("sandbox", &secret::new_key_id());
    let for_ssh = seal(&meta("k", "id", 1), &s, &[RecipientKey::new(&ssh_pub)]).expect("seal");
    let for_age = seal(&meta("k", "id", 1), &s, &[RecipientKey::new(&a_pub)]).expect("seal");
    let (_, stranger_pub) = age_identity();
    let for_stranger =
        seal(&meta("k", "id", 1), &s, &[RecipientKey::new(&stranger_pub)]).expect("seal");

    let asked = Arc::new(AtomicUsize::new(0));
    let src = sources(&home).with_passphrase_prompt(prompt(Some("correct horse"), asked.clone()));
    let ids = find_identities(&src, &[]).expect("identities");
    assert_eq!(ids.len(), 2);
    assert_eq!(
        ids.fingerprints()[1],
        fp(&ssh_pub),
        "public key read from the protected file's header"
    );
    // Files the age key opens, or nobody's: never asked.
    decrypt_bytes(for_age.as_bytes(), &ids, "a").expect("age key");
    let err = decrypt_bytes(for_stranger.as_bytes(), &ids, "b").unwrap_err();
    assert!(
        matches!(err, DeliverError::NoMatchingIdentity { .. }),
        "{err}"
    );
    assert_eq!(
        asked.load(Ordering::SeqCst),
        0,
        "no prompt for files the SSH key cannot open"
    );
    // A file for the SSH key: asked once, and the answer is remembered.
    for _ in 0..2 {
        let o = decrypt_bytes(for_ssh.as_bytes(), &ids, "c").expect("protected SSH key decrypts");
        assert_eq!(o.secret.expose(), s.expose());
    }
    assert_eq!(asked.load(Ordering::SeqCst), 1);

    // A wrong passphrase is reported without echoing it.
    let src = sources(&home)
        .with_passphrase_prompt(prompt(Some("wrong battery"), Arc::new(AtomicUsize::new(0))));
    let err = decrypt_bytes(
        for_ssh.as_bytes(),
        &find_identities(&src, &[]).expect("ids"),
        "c",
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("passphrase is wrong"), "{msg}");
    assert!(!msg.contains("wrong battery"), "{msg}");

    // Declining is asked once and then ends in "no identity matches".
    let asked = Arc::new(AtomicUsize::new(0));
    let src = sources(&home).with_passphrase_prompt(prompt(None, asked.clone()));
    let ids = find_identities(&src, &[]).expect("ids");
    for _ in 0..2 {
        let err = decrypt_bytes(for_ssh.as_bytes(), &ids, "c").unwrap_err();
        assert!(
            matches!(err, DeliverError::NoMatchingIdentity { .. }),
            "{err}"
        );
    }
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

#[test]
fn an_unusable_default_ssh_key_is_noted_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).expect("mkdir");
    std::fs::write(
        home.join(".ssh/id_rsa"),
        "-----BEGIN OPENSSH PRIVATE KEY-----\nbroken\n",
    )
    .expect("write");
    std::fs::write(home.join(".ssh/id_ed25519"), [0xff, 0xfe, 0x00]).expect("write");
    let (a, _) = age_identity();
    write_identity_file(&home.join(".config/keyward/identities.txt"), &a);
    let ids = find_identities(&sources(&home), &[]).expect("the age identity is still found");
    assert_eq!(ids.len(), 1);
    assert_eq!(ids.notes.len(), 2, "{:?}", ids.notes);
    assert!(
        ids.notes.iter().all(|n| n.ends_with("(skipped)")),
        "{:?}",
        ids.notes
    );

    // The same broken file given explicitly is an error.
    let err = find_identities(&sources(&home), &[home.join(".ssh/id_rsa")]).unwrap_err();
    assert!(matches!(err, DeliverError::Identity { .. }), "{err}");
}
