//! Sealing to principals and decrypting with each of their identities (real age, real
//! SSH keys from ssh-keygen, real files).

mod deliver_common;
mod needs;

use deliver_common::*;
use keyward::deliver::{
    DeliverError, IdentitySources, Manifest, Outbox, RecipientKind, decrypt_bytes, decrypt_file,
    find_identities, seal, seal_for_principals,
};
use keyward::secret;
use keyward::spec::model::{PrincipalKind, RecipientKey};

fn ids_from(files: &[std::path::PathBuf]) -> keyward::deliver::Identities {
    find_identities(&IdentitySources::default(), files).expect("identities load")
}

#[test]
fn two_principals_each_decrypt_with_every_one_of_their_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a1, a1_pub) = age_identity();
    let (a2, a2_pub) = age_identity();
    let a1_file = write_identity_file(&dir.path().join("a1.txt"), &a1);
    let a2_file = write_identity_file(&dir.path().join("a2.txt"), &a2);
    let jdoe = principal("jdoe", PrincipalKind::Person, &[a1_pub, a2_pub]);

    let ssh_key = dir.path().join("ssh").join("id_ed25519");
    let ssh_pub = ssh_keygen(&ssh_key, "");
    let svc_recipient = match &ssh_pub {
        Some(p) => p.clone(),
        None => age_identity().1, // ssh-keygen missing: reported visibly by the helper
    };
    let svc = principal("illiad-server", PrincipalKind::Service, &[svc_recipient]);

    let id = secret::new_key_id();
    let s = secret::generate("sandbox", &id);
    let m = meta("illiad-barcode-lookup", &id, 1);
    let sealed = seal_for_principals(&m, &s, &[&jdoe, &svc]).expect("seal");
    assert_eq!(sealed.len(), 2);
    assert_eq!(sealed[0].principal_id, "jdoe");
    assert_eq!(sealed[0].kind, RecipientKind::Person);
    assert_eq!(sealed[0].fingerprints.len(), 2);
    assert_eq!(sealed[1].kind, RecipientKind::Service);
    for f in &sealed {
        assert!(
            f.armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
            "armored"
        );
        assert!(
            f.armored
                .trim_end()
                .ends_with("-----END AGE ENCRYPTED FILE-----"),
            "armor finished"
        );
        assert!(
            !f.armored.contains(s.expose()),
            "no plaintext in the ciphertext"
        );
    }

    for idfile in [&a1_file, &a2_file] {
        let opened = decrypt_bytes(
            sealed[0].armored.as_bytes(),
            &ids_from(std::slice::from_ref(idfile)),
            "jdoe.age",
        )
        .expect("jdoe decrypts with each of her keys");
        assert_eq!(opened.secret.expose(), s.expose());
        assert_eq!(opened.meta, m);
    }

    if ssh_pub.is_some() {
        let ids = ids_from(std::slice::from_ref(&ssh_key));
        assert_eq!(
            ids.origins[0].fingerprints,
            vec![RecipientKey::new(ssh_pub.as_deref().unwrap_or("")).fingerprint]
        );
        let opened =
            decrypt_bytes(sealed[1].armored.as_bytes(), &ids, "svc.age").expect("ssh key decrypts");
        assert_eq!(opened.secret.expose(), s.expose());
        // And jdoe's file is not for the SSH key.
        let err = decrypt_bytes(sealed[0].armored.as_bytes(), &ids, "jdoe.age").unwrap_err();
        assert!(
            matches!(err, DeliverError::NoMatchingIdentity { .. }),
            "{err}"
        );
    }
}

#[test]
fn a_wrong_identity_fails_naming_the_principal_and_fingerprints_without_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, jdoe_pub) = age_identity();
    let (wrong, _) = age_identity();
    let wrong_file = write_identity_file(&dir.path().join("wrong.txt"), &wrong);
    let jdoe = principal(
        "jdoe",
        PrincipalKind::Person,
        std::slice::from_ref(&jdoe_pub),
    );
    let id = secret::new_key_id();
    let s = secret::generate("sandbox", &id);
    let m = meta("k1", &id, 1);
    let sealed = seal_for_principals(&m, &s, &[&jdoe]).expect("seal");
    let outbox = Outbox::new(dir.path().join("deliveries"));
    let manifest = Manifest::pending(&m, "sandbox", t(2026, 1, 1), None, &sealed);
    let gdir = outbox.write_pending(&manifest, &sealed).expect("write");

    let ids = ids_from(&[wrong_file]);
    let err = decrypt_file(&gdir.join("jdoe.age"), &ids).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DeliverError::NoMatchingIdentity { .. }));
    assert!(msg.starts_with("no identity matches"), "{msg}");
    assert!(msg.contains("`jdoe` (person)"), "{msg}");
    assert!(
        msg.contains(&RecipientKey::new(&jdoe_pub).fingerprint),
        "{msg}"
    );
    assert!(
        msg.contains(&ids.origins[0].fingerprints[0]),
        "names the key that was tried: {msg}"
    );
    assert!(
        !msg.contains(s.expose()) && !msg.contains(&wrong),
        "no secrets in: {msg}"
    );
    assert!(!format!("{err:?}").contains(&wrong));
}

#[test]
fn a_private_key_pasted_as_recipient_is_refused_without_echo() {
    let (private, _) = age_identity();
    let s = secret::generate("sandbox", &secret::new_key_id());
    let err = seal(&meta("k", "id", 1), &s, &[RecipientKey::new(&private)]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("PRIVATE key"), "{msg}");
    assert!(!msg.contains(&private[15..]), "{msg}");
    let err = seal(&meta("k", "id", 1), &s, &[]).unwrap_err();
    assert!(matches!(err, DeliverError::NoRecipients { .. }), "{err}");
}

#[test]
fn garbage_and_non_envelopes_are_reported_clearly() {
    let (a, a_pub) = age_identity();
    let dir = tempfile::tempdir().expect("tempdir");
    let ids = ids_from(&[write_identity_file(&dir.path().join("a.txt"), &a)]);
    let err = decrypt_bytes(b"hello, not age", &ids, "x.age").unwrap_err();
    assert!(matches!(err, DeliverError::Decrypt { .. }), "{err}");
    assert!(err.to_string().contains("not an age file"), "{err}");

    // Valid age, but its plaintext is not an envelope: the error must not quote it.
    let armored = keyward::deliver::seal_bytes(
        b"{\"secret\": 42, \"x\": \"TOPSECRETVALUE\"}",
        &[RecipientKey::new(&a_pub)],
    )
    .expect("seal bytes");
    let err = decrypt_bytes(armored.as_bytes(), &ids, "y.age").unwrap_err();
    assert!(matches!(err, DeliverError::NotAnEnvelope { .. }), "{err}");
    assert!(!err.to_string().contains("TOPSECRET"), "{err}");
}

#[test]
fn one_file_for_a_principal_with_both_age_and_ssh_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ssh_key = dir.path().join("id_ed25519");
    let Some(ssh_pub) = ssh_keygen(&ssh_key, "") else {
        return; // reported visibly by the helper
    };
    let (a, a_pub) = age_identity();
    let a_file = write_identity_file(&dir.path().join("a.txt"), &a);
    let p = principal("jdoe", PrincipalKind::Person, &[a_pub, ssh_pub]);
    let id = secret::new_key_id();
    let s = secret::generate("sandbox", &id);
    let sealed = seal_for_principals(&meta("k", &id, 1), &s, &[&p]).expect("seal");
    assert_eq!(sealed.len(), 1, "one file per principal");
    for key in [a_file, ssh_key] {
        let o = decrypt_bytes(sealed[0].armored.as_bytes(), &ids_from(&[key]), "jdoe.age")
            .expect("decrypt");
        assert_eq!(o.secret.expose(), s.expose());
    }
}
