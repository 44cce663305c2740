//! The durable outbox: layout, status transitions, recovery listing, superseding an older
//! key's directory, pruning, tamper and swap detection, and no plaintext on disk.

mod deliver_common;
mod needs;

use std::path::{Path, PathBuf};

use deliver_common::*;
use keyward::deliver::{
    DeliverError, DeliveryStatus, Identities, IdentitySources, MANIFEST_FILE, Manifest, Outbox,
    SealedFile, check_opened, decrypt_delivery, decrypt_file, find_identities, seal_for_principals,
    verify_envelope,
};
use keyward::secret::{self, Secret};
use keyward::spec::model::{Principal, PrincipalKind};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outbox: Outbox,
    jdoe: Principal,
    svc: Principal,
    jdoe_ids: Identities,
    svc_ids: Identities,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, j_pub) = age_identity();
    let (v, v_pub) = age_identity();
    let jf = write_identity_file(&dir.path().join("ids/jdoe.txt"), &j);
    let vf = write_identity_file(&dir.path().join("ids/svc.txt"), &v);
    let root = dir.path().join("repo").join("deliveries");
    Fixture {
        outbox: Outbox::new(root.clone()),
        root,
        jdoe: principal("jdoe", PrincipalKind::Person, &[j_pub]),
        svc: principal("illiad-server", PrincipalKind::Service, &[v_pub]),
        jdoe_ids: find_identities(&IdentitySources::default(), &[jf]).expect("ids"),
        svc_ids: find_identities(&IdentitySources::default(), &[vf]).expect("ids"),
        _dir: dir,
    }
}

/// Seal and write a pending delivery; returns (dir, manifest, secret).
fn deliver(
    f: &Fixture,
    key: &str,
    id: &str,
    generation: u32,
    created: chrono::DateTime<chrono::Utc>,
) -> (PathBuf, Manifest, Secret) {
    let s = secret::generate("sandbox", id);
    let m = meta(key, id, generation);
    let sealed: Vec<SealedFile> = seal_for_principals(&m, &s, &[&f.jdoe, &f.svc]).expect("seal");
    let manifest = Manifest::pending(&m, "sandbox", created, Some("abc123".into()), &sealed);
    let dir = f
        .outbox
        .write_pending(&manifest, &sealed)
        .expect("write_pending");
    (dir, manifest, s)
}

fn status(f: &Fixture, dir: &Path) -> DeliveryStatus {
    f.outbox.read(dir).expect("manifest").status
}

#[test]
fn write_pending_lays_out_files_then_mark_active() {
    let f = fixture();
    let id = secret::new_key_id();
    let (dir, manifest, s) = deliver(&f, "illiad-barcode-lookup", &id, 1, t(2026, 1, 1));
    assert_eq!(dir, f.root.join("alma-sandbox/illiad-barcode-lookup/g1"));
    assert!(dir.join("jdoe.age").is_file() && dir.join("illiad-server.age").is_file());

    let on_disk = f.outbox.read(&dir).expect("manifest");
    assert_eq!(on_disk.status, DeliveryStatus::Pending);
    assert_eq!(on_disk, manifest);
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(MANIFEST_FILE)).expect("read"))
            .expect("json");
    assert_eq!(raw["manifest_version"], 1);
    assert_eq!(raw["status"], "pending");
    assert_eq!(raw["recipients"][0]["kind"], "person");
    assert_eq!(raw["recipients"][0]["file"], "jdoe.age");
    assert_eq!(raw["commit"], "abc123");
    let attrs = std::fs::read_to_string(f.root.join(".gitattributes")).expect("gitattributes");
    assert!(attrs.contains("*.age -text"), "{attrs}");
    for r in &manifest.recipients {
        verify_envelope(&manifest, &dir.join(&r.file)).expect("checksums match");
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir.join("jdoe.age")), 0o644);
        assert_eq!(mode(&dir.join(MANIFEST_FILE)), 0o644);
    }
    // Pending deliveries are not "latest".
    assert!(
        f.outbox
            .latest("alma-sandbox", "illiad-barcode-lookup")
            .expect("latest")
            .is_none()
    );
    let err = f
        .outbox
        .open_latest("alma-sandbox", "illiad-barcode-lookup", &f.jdoe_ids)
        .unwrap_err();
    assert!(matches!(err, DeliverError::NoDelivery { .. }), "{err}");
    assert!(err.to_string().contains("keyward apply"), "{err}");

    let m = f
        .outbox
        .mark(&dir, DeliveryStatus::Active)
        .expect("mark active");
    assert_eq!(m.status, DeliveryStatus::Active);
    assert_eq!(status(&f, &dir), DeliveryStatus::Active);
    let (ldir, lm) = f
        .outbox
        .latest("alma-sandbox", "illiad-barcode-lookup")
        .expect("latest")
        .expect("some");
    assert_eq!((ldir, lm.key_id), (dir.clone(), id.clone()));

    // Each principal opens their own envelope through the verified path.
    let o = f
        .outbox
        .open(&dir, "jdoe", &f.jdoe_ids)
        .expect("jdoe opens");
    assert_eq!(o.secret.expose(), s.expose());
    let (_, _, o) = f
        .outbox
        .open_latest("alma-sandbox", "illiad-barcode-lookup", &f.svc_ids)
        .expect("svc opens");
    assert_eq!(o.secret.expose(), s.expose());
    let err = f
        .outbox
        .open(&dir, "illiad-server", &f.jdoe_ids)
        .unwrap_err();
    assert!(
        err.to_string().contains("`illiad-server` (service)"),
        "{err}"
    );

    // A delivered (active) secret is never overwritten by a second write.
    let err = deliver_err(&f, "illiad-barcode-lookup", &id, 1);
    assert!(
        matches!(err, DeliverError::AlreadyDelivered { .. }),
        "{err}"
    );
    assert_eq!(
        f.outbox
            .open(&dir, "jdoe", &f.jdoe_ids)
            .expect("still the old one")
            .secret
            .expose(),
        s.expose()
    );
}

fn deliver_err(f: &Fixture, key: &str, id: &str, generation: u32) -> DeliverError {
    let s = secret::generate("sandbox", id);
    let m = meta(key, id, generation);
    let sealed = seal_for_principals(&m, &s, &[&f.jdoe]).expect("seal");
    let manifest = Manifest::pending(&m, "sandbox", t(2026, 2, 1), None, &sealed);
    f.outbox.write_pending(&manifest, &sealed).unwrap_err()
}

#[test]
fn pending_lists_only_pending_deliveries_and_a_retry_overwrites_one() {
    let f = fixture();
    let id_a = secret::new_key_id();
    let id_b = secret::new_key_id();
    let (a, _, _) = deliver(&f, "key-a", &id_a, 1, t(2026, 1, 1));
    let (b, _, _) = deliver(&f, "key-b", &id_b, 1, t(2026, 1, 1));
    f.outbox.mark(&a, DeliveryStatus::Active).expect("active");
    let pending = f.outbox.pending().expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].0, b);
    assert_eq!(pending[0].1.key_id, id_b);

    // Retry of the same key id + generation while pending: new envelopes replace the old,
    // and a principal dropped from the list loses their stale file.
    let s2 = secret::generate("sandbox", &id_b);
    let m = meta("key-b", &id_b, 1);
    let sealed = seal_for_principals(&m, &s2, &[&f.jdoe]).expect("seal");
    let manifest = Manifest::pending(&m, "sandbox", t(2026, 1, 2), None, &sealed);
    f.outbox
        .write_pending(&manifest, &sealed)
        .expect("retry overwrites pending");
    assert!(
        !b.join("illiad-server.age").exists(),
        "stale envelope removed"
    );
    assert_eq!(
        f.outbox
            .open(&b, "jdoe", &f.jdoe_ids)
            .expect("open")
            .secret
            .expose(),
        s2.expose()
    );
    assert_eq!(f.outbox.pending().expect("pending").len(), 1);
}

#[test]
fn void_deletes_envelopes_and_void_is_final() {
    let f = fixture();
    let id = secret::new_key_id();
    let (dir, _, _) = deliver(&f, "k", &id, 1, t(2026, 1, 1));
    let m = f.outbox.void(&dir).expect("void");
    assert_eq!(m.status, DeliveryStatus::Void);
    assert!(!dir.join("jdoe.age").exists() && !dir.join("illiad-server.age").exists());
    assert_eq!(status(&f, &dir), DeliveryStatus::Void);
    f.outbox
        .void(&dir)
        .expect("voiding again is harmless (crash recovery)");
    let err = f.outbox.mark(&dir, DeliveryStatus::Active).unwrap_err();
    assert!(
        matches!(err, DeliverError::InvalidTransition { .. }),
        "{err}"
    );
    assert!(f.outbox.pending().expect("pending").is_empty());

    // An active delivery cannot be voided (its secret works).
    let (dir2, _, _) = deliver(&f, "k2", &secret::new_key_id(), 1, t(2026, 1, 1));
    f.outbox
        .mark(&dir2, DeliveryStatus::Active)
        .expect("active");
    assert!(matches!(
        f.outbox.void(&dir2).unwrap_err(),
        DeliverError::InvalidTransition { .. }
    ));
    assert!(dir2.join("jdoe.age").exists());
}

#[test]
fn an_older_key_of_the_same_name_is_superseded_in_place() {
    let f = fixture();
    let old_id = secret::new_key_id();
    let new_id = secret::new_key_id();
    let (dir, _, old_secret) = deliver(&f, "k", &old_id, 1, t(2026, 1, 1));
    f.outbox.mark(&dir, DeliveryStatus::Active).expect("active");

    let (dir2, _, new_secret) = deliver(&f, "k", &new_id, 1, t(2026, 3, 1));
    assert_eq!(dir, dir2);
    let kept = dir.join(format!("superseded-{old_id}.json"));
    let old = Manifest::read(&kept).expect("old manifest kept for audit");
    assert_eq!(old.key_id, old_id);
    assert_eq!(old.status, DeliveryStatus::Superseded);
    let now = f.outbox.read(&dir).expect("manifest");
    assert_eq!(
        (now.key_id.as_str(), now.status),
        (new_id.as_str(), DeliveryStatus::Pending)
    );
    let o = decrypt_file(&dir.join("jdoe.age"), &f.jdoe_ids).expect("decrypt");
    assert_eq!(o.secret.expose(), new_secret.expose());
    assert_ne!(o.secret.expose(), old_secret.expose());
}

#[test]
fn prune_keeps_manifests_and_deletes_old_envelopes_only_after_retain() {
    let f = fixture();
    let id = secret::new_key_id();
    let (g1, _, _) = deliver(&f, "k", &id, 1, t(2026, 1, 1));
    f.outbox.mark(&g1, DeliveryStatus::Active).expect("active");
    let (g2, _, s2) = deliver(&f, "k", &id, 2, t(2026, 4, 1));
    let retain = chrono::Duration::days(7);

    // g2 still pending: nothing supersedes g1 yet.
    assert!(
        f.outbox
            .prune(retain, t(2026, 5, 1))
            .expect("prune")
            .is_empty()
    );
    assert_eq!(status(&f, &g1), DeliveryStatus::Active);

    f.outbox.mark(&g2, DeliveryStatus::Active).expect("active");
    // Within retain: marked superseded, envelopes kept.
    assert!(
        f.outbox
            .prune(retain, t(2026, 4, 3))
            .expect("prune")
            .is_empty()
    );
    assert_eq!(status(&f, &g1), DeliveryStatus::Superseded);
    assert!(g1.join("jdoe.age").exists());
    let (latest, _) = f
        .outbox
        .latest("alma-sandbox", "k")
        .expect("latest")
        .expect("some");
    assert_eq!(latest, g2);

    // After retain: g1's envelopes go, its manifest stays; g2 untouched.
    let mut deleted = f.outbox.prune(retain, t(2026, 4, 9)).expect("prune");
    deleted.sort();
    assert_eq!(
        deleted,
        vec![g1.join("illiad-server.age"), g1.join("jdoe.age")]
    );
    assert_eq!(status(&f, &g1), DeliveryStatus::Superseded);
    assert!(g2.join("jdoe.age").exists());
    assert_eq!(
        f.outbox
            .open(&g2, "jdoe", &f.jdoe_ids)
            .expect("open")
            .secret
            .expose(),
        s2.expose()
    );
    assert!(
        f.outbox
            .prune(retain, t(2026, 4, 9))
            .expect("prune again")
            .is_empty()
    );
}

#[test]
fn a_tampered_envelope_fails_the_checksum() {
    let f = fixture();
    let (dir, manifest, _) = deliver(&f, "k", &secret::new_key_id(), 1, t(2026, 1, 1));
    let path = dir.join("jdoe.age");
    let mut bytes = std::fs::read(&path).expect("read");
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    std::fs::write(&path, &bytes).expect("tamper");
    let err = verify_envelope(&manifest, &path).unwrap_err();
    assert!(matches!(err, DeliverError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("jdoe.age"), "{err}");
    let err = f.outbox.open(&dir, "jdoe", &f.jdoe_ids).unwrap_err();
    assert!(matches!(err, DeliverError::Checksum { .. }), "{err}");
    let err = verify_envelope(&manifest, &dir.join("stranger.age")).unwrap_err();
    assert!(matches!(err, DeliverError::NotInManifest { .. }), "{err}");
}

#[test]
fn a_swapped_envelope_is_detected_even_with_a_matching_checksum() {
    let f = fixture();
    let (d1, _, _) = deliver(&f, "key-one", &secret::new_key_id(), 1, t(2026, 1, 1));
    let (d2, _, _) = deliver(&f, "key-two", &secret::new_key_id(), 1, t(2026, 1, 1));
    // Someone copies key-two's envelope over key-one's and fixes up the checksum.
    std::fs::copy(d2.join("jdoe.age"), d1.join("jdoe.age")).expect("swap");
    let mut m1 = f.outbox.read(&d1).expect("manifest");
    let sha = keyward::deliver::sha256_hex(&std::fs::read(d1.join("jdoe.age")).expect("read"));
    m1.recipients
        .iter_mut()
        .filter(|r| r.id == "jdoe")
        .for_each(|r| r.sha256 = sha.clone());
    std::fs::write(
        d1.join(MANIFEST_FILE),
        serde_json::to_vec(&m1).expect("json"),
    )
    .expect("write");

    let err = f.outbox.open(&d1, "jdoe", &f.jdoe_ids).unwrap_err();
    assert!(
        matches!(
            err,
            DeliverError::Mismatch {
                field: "key id",
                ..
            }
        ),
        "{err}"
    );
    let opened = decrypt_file(&d1.join("jdoe.age"), &f.jdoe_ids).expect("decrypts");
    assert!(check_opened(&m1, &opened, &d1.join("jdoe.age")).is_err());
}

#[test]
fn no_plaintext_secret_or_temp_file_is_left_in_the_outbox() {
    let f = fixture();
    let mut secrets = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let id = secret::new_key_id();
        let (dir, _, s) = deliver(&f, name, &id, 1, t(2026, 1, 1));
        if i == 0 {
            f.outbox.mark(&dir, DeliveryStatus::Active).expect("active");
        }
        if i == 1 {
            f.outbox.void(&dir).expect("void");
        }
        secrets.push(s);
    }
    let files = all_files(&f.root);
    assert!(files.len() >= 7, "{files:?}");
    for file in &files {
        let bytes = std::fs::read(file).expect("read");
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(
            !name.contains(".tmp-"),
            "temp file left behind: {}",
            file.display()
        );
        for s in &secrets {
            let body = &s.expose()[s.expose().len() - 40..];
            assert!(
                !contains_bytes(&bytes, s.expose().as_bytes()),
                "plaintext secret in {}",
                file.display()
            );
            assert!(
                !contains_bytes(&bytes, body.as_bytes()),
                "secret body in {}",
                file.display()
            );
        }
    }
}

#[test]
fn unsafe_names_cannot_escape_the_outbox() {
    let f = fixture();
    let s = secret::generate("sandbox", "id");
    for (store, key) in [
        ("../etc", "k"),
        ("alma-sandbox", "a/b"),
        ("alma-sandbox", ".hidden"),
        ("", "k"),
    ] {
        let mut m = meta(key, "abc", 1);
        m.store = store.to_string();
        let sealed = seal_for_principals(&m, &s, &[&f.jdoe]).expect("seal");
        let manifest = Manifest::pending(&m, "sandbox", t(2026, 1, 1), None, &sealed);
        let err = f.outbox.write_pending(&manifest, &sealed).unwrap_err();
        assert!(
            matches!(err, DeliverError::UnsafeName { .. }),
            "{store}/{key}: {err}"
        );
    }
    assert!(!f.root.exists(), "nothing written");
}

#[test]
fn decrypt_delivery_checks_files_beside_a_manifest() {
    let f = fixture();
    let id = secret::new_key_id();
    let (dir, _, s) = deliver(&f, "k", &id, 1, t(2026, 1, 1));
    let (m, o) = decrypt_delivery(&dir.join("jdoe.age"), &f.jdoe_ids).expect("decrypt");
    assert_eq!(
        m.map(|m| (m.key_id, m.status)),
        Some((id.clone(), DeliveryStatus::Pending))
    );
    assert_eq!(o.secret.expose(), s.expose());

    // A file beside the manifest that it does not list is refused.
    std::fs::copy(dir.join("jdoe.age"), dir.join("mallory.age")).expect("copy");
    let err = decrypt_delivery(&dir.join("mallory.age"), &f.jdoe_ids).unwrap_err();
    assert!(matches!(err, DeliverError::NotInManifest { .. }), "{err}");

    // Outside the outbox (no manifest): plain decryption.
    let loose = f.root.parent().expect("parent").join("loose.age");
    std::fs::copy(dir.join("jdoe.age"), &loose).expect("copy");
    let (m, o) = decrypt_delivery(&loose, &f.jdoe_ids).expect("decrypt");
    assert!(m.is_none());
    assert_eq!(o.secret.expose(), s.expose());
}

#[test]
fn a_pending_delivery_with_a_missing_envelope_cannot_become_active() {
    let f = fixture();
    let (dir, _, _) = deliver(&f, "k", &secret::new_key_id(), 1, t(2026, 1, 1));
    f.outbox.verify(&dir).expect("intact");
    std::fs::remove_file(dir.join("illiad-server.age")).expect("remove");
    let err = f.outbox.verify(&dir).unwrap_err();
    assert!(err.to_string().contains("illiad-server.age"), "{err}");
    let err = f.outbox.mark(&dir, DeliveryStatus::Active).unwrap_err();
    assert!(err.to_string().contains("illiad-server.age"), "{err}");
    assert_eq!(status(&f, &dir), DeliveryStatus::Pending);
}

#[test]
fn a_replacement_keys_g1_wins_over_the_old_keys_later_generations() {
    let f = fixture();
    let old_id = secret::new_key_id();
    let new_id = secret::new_key_id();
    let (g1, _, _) = deliver(&f, "k", &old_id, 1, t(2026, 1, 1));
    f.outbox.mark(&g1, DeliveryStatus::Active).expect("active");
    let (g2, _, _) = deliver(&f, "k", &old_id, 2, t(2026, 2, 1));
    f.outbox.mark(&g2, DeliveryStatus::Active).expect("active");
    // The key is replaced: the new id starts again at generation 1.
    let (new_g1, _, s) = deliver(&f, "k", &new_id, 1, t(2026, 3, 1));
    assert_eq!(new_g1, g1);
    f.outbox
        .mark(&new_g1, DeliveryStatus::Active)
        .expect("active");
    let (dir, m) = f
        .outbox
        .latest("alma-sandbox", "k")
        .expect("latest")
        .expect("some");
    assert_eq!((dir, m.key_id), (g1.clone(), new_id.clone()));
    let (_, _, o) = f
        .outbox
        .open_latest("alma-sandbox", "k", &f.jdoe_ids)
        .expect("open");
    assert_eq!(o.secret.expose(), s.expose());

    let deleted = f
        .outbox
        .prune(chrono::Duration::days(7), t(2026, 3, 20))
        .expect("prune");
    assert_eq!(deleted.len(), 2, "the old key's g2 envelopes: {deleted:?}");
    assert!(deleted.iter().all(|p| p.starts_with(&g2)));
    assert_eq!(status(&f, &g2), DeliveryStatus::Superseded);
    assert_eq!(status(&f, &g1), DeliveryStatus::Active);
}

#[test]
fn a_never_activated_older_key_is_kept_as_void() {
    let f = fixture();
    let old_id = secret::new_key_id();
    let (dir, _, _) = deliver(&f, "k", &old_id, 1, t(2026, 1, 1));
    deliver(&f, "k", &secret::new_key_id(), 1, t(2026, 1, 2));
    let old = Manifest::read(&dir.join(format!("superseded-{old_id}.json"))).expect("kept");
    assert_eq!(old.status, DeliveryStatus::Void);
    assert_eq!(f.outbox.pending().expect("pending").len(), 1);
}

#[test]
fn a_delivery_to_nobody_is_refused() {
    let f = fixture();
    let m = meta("k", &secret::new_key_id(), 1);
    let manifest = Manifest::pending(&m, "sandbox", t(2026, 1, 1), None, &[]);
    let err = f.outbox.write_pending(&manifest, &[]).unwrap_err();
    assert!(matches!(err, DeliverError::NoEnvelopes { .. }), "{err}");
    assert!(!f.root.exists());
}

#[test]
fn leftovers_of_an_interrupted_write_are_cleaned_up_by_the_retry() {
    let f = fixture();
    let id = secret::new_key_id();
    // A crash after some envelopes were written but before manifest.json.
    let dir = f.outbox.dir_for("alma-sandbox", "k", 1).expect("dir");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("jdoe.age"), "half-written").expect("write");
    std::fs::write(dir.join("someone-removed.age"), "stale").expect("write");
    let (d, _, s) = deliver(&f, "k", &id, 1, t(2026, 1, 1));
    assert_eq!(d, dir);
    assert!(!dir.join("someone-removed.age").exists());
    assert_eq!(
        f.outbox
            .open(&dir, "jdoe", &f.jdoe_ids)
            .expect("open")
            .secret
            .expose(),
        s.expose()
    );

    // A crash in the middle of superseding an older key: its manifest was copied to
    // superseded-<id>.json but manifest.json not yet removed. Doing it again is fine.
    let old = f.outbox.read(&dir).expect("manifest");
    std::fs::copy(
        dir.join(MANIFEST_FILE),
        dir.join(format!("superseded-{}.json", old.key_id)),
    )
    .expect("copy");
    let (_, _, s2) = deliver(&f, "k", &secret::new_key_id(), 1, t(2026, 1, 2));
    let kept = Manifest::read(&dir.join(format!("superseded-{}.json", old.key_id))).expect("kept");
    assert_eq!(
        (kept.key_id, kept.status),
        (old.key_id, DeliveryStatus::Void)
    );
    assert_eq!(
        f.outbox
            .open(&dir, "jdoe", &f.jdoe_ids)
            .expect("open")
            .secret
            .expose(),
        s2.expose()
    );
}

#[test]
fn the_schemas_document_every_field_written() {
    let f = fixture();
    let (dir, _, _) = deliver(&f, "k", &secret::new_key_id(), 1, t(2026, 1, 1));
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(MANIFEST_FILE)).expect("read"))
            .expect("json");
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    let schema = keyward::deliver::manifest_schema();
    assert_eq!(keys(&schema["properties"]), keys(&written));
    let recipient_schema = &schema["$defs"]["ManifestRecipient"]["properties"];
    assert_eq!(keys(recipient_schema), keys(&written["recipients"][0]));

    let opened = decrypt_file(&dir.join("jdoe.age"), &f.jdoe_ids).expect("decrypt");
    let envelope: serde_json::Value = serde_json::from_str(&keyward::deliver::render(
        &opened,
        keyward::deliver::OutputFormat::Json,
    ))
    .expect("json");
    let schema = keyward::deliver::envelope_schema();
    // `client_id` is written only for a console key that has one (OpenText ALM).
    let mut documented = keys(&schema["properties"]);
    documented.retain(|k| k != "client_id");
    assert_eq!(documented, keys(&envelope));
    assert!(
        schema["properties"]["client_id"].is_object()
            && !schema["required"].to_string().contains("client_id"),
        "client_id is documented and optional: {schema}"
    );
    assert_eq!(schema["properties"]["secret"]["type"], "string");
}

/// The batch path (apply's bulk creates): staged deliveries are invisible until committed,
/// then laid out exactly as `write_pending` lays them out, and `mark_active_batch` checks
/// every envelope as `mark` does.
#[test]
fn staged_batches_appear_only_when_committed_and_activate_together() {
    let f = fixture();
    let mut staged = Vec::new();
    let mut expected = Vec::new();
    for i in 0..5 {
        let id = secret::new_key_id();
        let s = secret::generate("sandbox", &id);
        let m = meta(&format!("bulk-{i}"), &id, 1);
        let sealed = seal_for_principals(&m, &s, &[&f.jdoe, &f.svc]).expect("seal");
        let manifest = Manifest::pending(&m, "sandbox", t(2026, 1, 1), None, &sealed);
        staged.push(f.outbox.stage_pending(&manifest, &sealed).expect("stage"));
        expected.push((manifest, s));
    }
    // Staged, not committed: no manifest, so no delivery anyone (recovery included) sees.
    assert!(f.outbox.list().expect("list").is_empty());
    assert!(f.outbox.pending().expect("pending").is_empty());

    let dirs = f.outbox.commit_pending(staged).expect("commit");
    assert_eq!(dirs.len(), 5);
    let names: Vec<String> = all_files(&f.root)
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains(".tmp-")),
        "no temp file is left: {names:?}"
    );
    for (dir, (manifest, _)) in dirs.iter().zip(&expected) {
        assert_eq!(&f.outbox.read(dir).expect("manifest"), manifest);
        assert_eq!(status(&f, dir), DeliveryStatus::Pending);
    }
    assert_eq!(f.outbox.pending().expect("pending").len(), 5);

    // A tampered envelope keeps its delivery pending; the others become active.
    std::fs::write(dirs[2].join("jdoe.age"), b"not what was sealed").expect("tamper");
    let marked = f.outbox.mark_active_batch(&dirs);
    assert!(
        marked[2].is_err(),
        "a tampered delivery must not become active"
    );
    for (i, (dir, (_, s))) in dirs.iter().zip(&expected).enumerate() {
        if i == 2 {
            assert_eq!(status(&f, dir), DeliveryStatus::Pending);
            continue;
        }
        assert!(marked[i].is_ok(), "{:?}", marked[i]);
        assert_eq!(status(&f, dir), DeliveryStatus::Active);
        let opened = decrypt_file(&dir.join("illiad-server.age"), &f.svc_ids).expect("open");
        assert_eq!(opened.secret.expose(), s.expose());
    }
    // Marking again is a no-op for the active ones.
    let again = f.outbox.mark_active_batch(&dirs[..2]);
    assert!(again.iter().all(Result::is_ok));
}
