//! Tests of the embedded SQLite store against real database files in temporary
//! directories (no mocks): round trips, optimistic concurrency, refusals, the audit log,
//! secrecy of the file, verify reasons, rotation, quotas, the lease, paging, migrations.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{Duration, TimeZone, Utc};
use keyward::secret;
use keyward::store::sqlite::{SCHEMA_VERSION, SqliteStore};
use keyward::store::{
    KeyPatch, KeyStatus, ListFilter, MANAGED_BY, Rotate, Store, StoreError, VerifyReason, list_all,
};
use tempfile::TempDir;

mod store_common;
use store_common::{actor, new_key, rotation, t0, valid_now};

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("nested").join("store.db")
}

fn open() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open("alma-production", &db_path(&dir)).expect("open store");
    (dir, store)
}

#[tokio::test]
async fn create_get_list_round_trip_keeps_every_field() {
    let (_dir, store) = open();
    let (nk, _s) = new_key("illiad-barcode-lookup");
    let before = Utc::now();
    let created = store.create(nk.clone(), &actor()).await.expect("create");

    assert_eq!(created.id, nk.id);
    assert_eq!(created.name, "illiad-barcode-lookup");
    assert_eq!(created.environment, "production");
    assert_eq!(created.owner, "jdoe");
    assert_eq!(created.purpose, nk.purpose);
    assert_eq!(
        created.scopes,
        vec!["bibs:read".to_string(), "users:read".to_string()],
        "sorted, deduplicated"
    );
    assert_eq!(created.labels, nk.labels);
    assert_eq!(created.status, KeyStatus::Active);
    assert_eq!(created.issued_at, t0(), "nanoseconds survive");
    assert!(created.created_at >= before && created.created_at <= Utc::now());
    assert_eq!(created.updated_at, created.created_at);
    assert_eq!(created.expires_at, nk.expires_at);
    assert_eq!(created.lifetime.as_deref(), Some("180d"));
    assert_eq!(created.version, 1);
    assert_eq!(created.generation, 1);
    assert_eq!(created.spec_generation, 3);
    assert_eq!(created.previous_valid_until, None);
    assert_eq!(created.recipients, nk.recipients);
    assert_eq!(created.quota_per_day, None);
    assert!(!created.protected);
    assert!(created.is_managed());

    let got = store.get(&nk.id).await.expect("get").expect("present");
    assert_eq!(got, created);
    assert_eq!(store.get("nosuchkey").await.expect("get"), None);

    let page = store
        .list(&ListFilter::default(), None, 100)
        .await
        .expect("list");
    assert_eq!(page.items, vec![created.clone()]);
    assert!(page.next.is_none());

    // Optional fields empty, quota and protected set.
    let (mut nk2, _) = new_key("second");
    nk2.purpose = None;
    nk2.labels.clear();
    nk2.expires_at = None;
    nk2.lifetime = None;
    nk2.quota_per_day = Some(1000);
    nk2.protected = true;
    nk2.status = KeyStatus::Disabled;
    let c2 = store.create(nk2.clone(), &actor()).await.expect("create 2");
    let g2 = store.get(&nk2.id).await.expect("get").expect("present");
    assert_eq!(g2, c2);
    assert_eq!(g2.purpose, None);
    assert_eq!(g2.expires_at, None);
    assert_eq!(g2.quota_per_day, Some(1000));
    assert!(g2.protected);
    assert_eq!(g2.status, KeyStatus::Disabled);

    let events = store.events(None, 100).await.expect("events");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].action, "create");
    assert_eq!(events[0].who, "alice");
    assert_eq!(events[0].commit.as_deref(), Some("0123abcd"));
    assert_eq!(events[0].key_id.as_deref(), Some(nk.id.as_str()));
    assert_eq!(events[0].key_name.as_deref(), Some("illiad-barcode-lookup"));
    assert_eq!(events[0].detail["generation"], 1);
}

#[tokio::test]
async fn create_rejects_an_existing_id_and_bad_hashes() {
    let (_dir, store) = open();
    let (nk, _) = new_key("a");
    store.create(nk.clone(), &actor()).await.expect("create");
    let again = store.create(nk.clone(), &actor()).await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists(ref id)) if *id == nk.id),
        "{again:?}"
    );

    let (mut other, _) = new_key("b");
    other.id = nk.id.clone();
    assert!(matches!(
        store.create(other, &actor()).await,
        Err(StoreError::AlreadyExists(_))
    ));

    // A plaintext secret passed where the hash belongs is refused, not stored.
    let (mut wrong, s) = new_key("c");
    wrong.secret_hash = keyward::store::SecretHash(s.expose().to_string());
    assert!(matches!(
        store.create(wrong, &actor()).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        list_all(&store, &ListFilter::default())
            .await
            .expect("list")
            .len(),
        1
    );
}

#[tokio::test]
async fn timestamps_that_would_not_sort_are_refused() {
    let (_dir, store) = open();
    let far = Utc
        .with_ymd_and_hms(10_000, 1, 1, 0, 0, 0)
        .single()
        .expect("representable");
    let (mut nk, _) = new_key("far");
    nk.expires_at = Some(far);
    assert!(matches!(
        store.create(nk, &actor()).await,
        Err(StoreError::Invalid(_))
    ));
    let (nk, _) = new_key("k");
    let k = store.create(nk, &actor()).await.expect("create");
    let patch = KeyPatch {
        expires_at: Some(Some(far)),
        ..KeyPatch::default()
    };
    assert!(matches!(
        store.update(&k.id, 1, patch, &actor()).await,
        Err(StoreError::Invalid(_))
    ));
    let (mut rot, _) = rotation(&k.id, None);
    rot.issued_at = far;
    assert!(matches!(
        store.rotate(&k.id, 1, rot, &actor()).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        store.get(&k.id).await.expect("get").map(|k| k.version),
        Some(1)
    );
}

#[tokio::test]
async fn mutations_check_the_version_and_bump_it() {
    let (_dir, store) = open();
    let (nk, _) = new_key("k");
    let k1 = store.create(nk, &actor()).await.expect("create");
    let id = k1.id.clone();

    let patch = KeyPatch {
        scopes: Some(vec!["bibs:write".into()]),
        ..KeyPatch::default()
    };
    match store.update(&id, 7, patch.clone(), &actor()).await {
        Err(StoreError::Conflict {
            id: cid,
            expected,
            found,
        }) => {
            assert_eq!((cid.as_str(), expected, found), (id.as_str(), 7, 1));
        }
        other => panic!("expected conflict, got {other:?}"),
    }
    let k2 = store
        .update(&id, 1, patch.clone(), &actor())
        .await
        .expect("update");
    assert_eq!(k2.version, 2);
    assert_eq!(k2.scopes, vec!["bibs:write".to_string()]);
    assert!(k2.updated_at >= k1.updated_at);
    assert_eq!(store.get(&id).await.expect("get"), Some(k2.clone()));

    // The same stale version is refused by every mutating call.
    let rot = Rotate {
        secret_hash: secret::generate("production", &id).hash(),
        previous_valid_until: None,
        issued_at: t0(),
        expires_at: None,
        generation: 2,
        spec_generation: 3,
        recipients: BTreeMap::new(),
    };
    assert!(matches!(
        store.update(&id, 1, patch, &actor()).await,
        Err(StoreError::Conflict { found: 2, .. })
    ));
    assert!(matches!(
        store.rotate(&id, 1, rot, &actor()).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.disable(&id, 1, &actor()).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.enable(&id, 1, &actor()).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.revoke(&id, 1, &actor()).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.delete(&id, 1, &actor()).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        store.get(&id).await.expect("get").map(|k| k.version),
        Some(2),
        "nothing changed"
    );

    // Missing keys.
    assert!(
        matches!(store.disable("missing", 1, &actor()).await, Err(StoreError::NotFound(ref m)) if m == "missing")
    );
    assert!(matches!(
        store.delete("missing", 1, &actor()).await,
        Err(StoreError::NotFound(_))
    ));

    let k3 = store.disable(&id, 2, &actor()).await.expect("disable");
    assert_eq!((k3.status, k3.version), (KeyStatus::Disabled, 3));
    store.delete(&id, 3, &actor()).await.expect("delete");
    assert_eq!(store.get(&id).await.expect("get"), None);

    let actions: Vec<String> = store
        .events(None, 100)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["create", "update", "disable", "delete"]);
}

#[tokio::test]
async fn update_records_changed_fields_and_ignores_no_op_patches() {
    let (_dir, store) = open();
    let (nk, _) = new_key("k");
    let k = store.create(nk, &actor()).await.expect("create");
    let same = store
        .update(
            &k.id,
            1,
            KeyPatch {
                owner: Some("jdoe".into()),
                ..KeyPatch::default()
            },
            &actor(),
        )
        .await
        .expect("no-op update");
    assert_eq!(
        same.version, 1,
        "a patch that changes nothing is not a change"
    );
    let empty = store
        .update(&k.id, 1, KeyPatch::default(), &actor())
        .await
        .expect("empty patch");
    assert_eq!(empty, k);

    let patch = KeyPatch {
        purpose: Some(None),
        labels: Some(BTreeMap::new()),
        quota_per_day: Some(Some(10)),
        expires_at: Some(None),
        ..KeyPatch::default()
    };
    let k2 = store
        .update(&k.id, 1, patch, &actor())
        .await
        .expect("update");
    assert_eq!(
        (k2.purpose.clone(), k2.expires_at, k2.quota_per_day),
        (None, None, Some(10))
    );
    assert!(k2.labels.is_empty());
    let last = store
        .events(None, 100)
        .await
        .expect("events")
        .pop()
        .expect("event");
    assert_eq!(last.action, "update");
    assert_eq!(
        last.detail["changed"],
        serde_json::json!(["purpose", "labels", "expires_at", "quota_per_day"])
    );
}

#[tokio::test]
async fn revoked_keys_cannot_be_enabled_or_updated_and_protected_keys_are_not_revoked() {
    let (_dir, store) = open();
    let (nk, _) = new_key("k");
    let k = store.create(nk, &actor()).await.expect("create");
    let k = store
        .disable(&k.id, k.version, &actor())
        .await
        .expect("disable");
    let k = store
        .enable(&k.id, k.version, &actor())
        .await
        .expect("enable");
    assert_eq!(k.status, KeyStatus::Active);
    let k = store
        .revoke(&k.id, k.version, &actor())
        .await
        .expect("revoke");
    assert_eq!(k.status, KeyStatus::Revoked);

    let refused = store.enable(&k.id, k.version, &actor()).await;
    assert!(
        matches!(refused, Err(StoreError::Refused(ref m)) if m.contains("revoked")),
        "{refused:?}"
    );
    let patch = KeyPatch {
        scopes: Some(vec!["users:read".into()]),
        ..KeyPatch::default()
    };
    assert!(matches!(
        store.update(&k.id, k.version, patch, &actor()).await,
        Err(StoreError::Refused(_))
    ));
    assert!(matches!(
        store.disable(&k.id, k.version, &actor()).await,
        Err(StoreError::Refused(_))
    ));
    assert_eq!(
        store
            .get(&k.id)
            .await
            .expect("get")
            .expect("present")
            .status,
        KeyStatus::Revoked
    );

    let (mut p, _) = new_key("protected");
    p.protected = true;
    let p = store.create(p, &actor()).await.expect("create");
    assert!(matches!(
        store.revoke(&p.id, 1, &actor()).await,
        Err(StoreError::Refused(_))
    ));
    assert!(matches!(
        store.delete(&p.id, 1, &actor()).await,
        Err(StoreError::Refused(_))
    ));
    let p = store
        .update(
            &p.id,
            1,
            KeyPatch {
                protected: Some(false),
                ..KeyPatch::default()
            },
            &actor(),
        )
        .await
        .expect("unprotect");
    store
        .revoke(&p.id, p.version, &actor())
        .await
        .expect("revoke after unprotect");
}

#[tokio::test]
async fn unmanaged_keys_are_refused_until_adopted() {
    let (_dir, store) = open();
    let (nk, _) = new_key("console-made");
    let k = store.insert_unmanaged(nk).await.expect("insert unmanaged");
    assert!(!k.is_managed());
    assert_eq!(k.managed_by, None);

    let unmanaged = ListFilter {
        managed: Some(false),
        ..ListFilter::default()
    };
    let managed = ListFilter {
        managed: Some(true),
        ..ListFilter::default()
    };
    assert_eq!(list_all(&store, &unmanaged).await.expect("list").len(), 1);
    assert_eq!(list_all(&store, &managed).await.expect("list").len(), 0);

    let is_refused = |r: &Result<_, StoreError>| matches!(r, Err(StoreError::Refused(m)) if *m == format!("key {} is not managed by keyward", k.id));
    let patch = KeyPatch {
        labels: Some(BTreeMap::new()),
        ..KeyPatch::default()
    };
    assert!(is_refused(&store.update(&k.id, 1, patch, &actor()).await));
    // Adoption together with another change is not an adoption.
    let mixed = KeyPatch {
        managed_by: Some(Some(MANAGED_BY.into())),
        owner: Some("x".into()),
        ..KeyPatch::default()
    };
    assert!(is_refused(&store.update(&k.id, 1, mixed, &actor()).await));
    assert!(is_refused(&store.disable(&k.id, 1, &actor()).await));
    assert!(is_refused(&store.enable(&k.id, 1, &actor()).await));
    assert!(is_refused(&store.revoke(&k.id, 1, &actor()).await));
    assert!(is_refused(
        &store.delete(&k.id, 1, &actor()).await.map(|_| k.clone())
    ));
    let rot = Rotate {
        secret_hash: secret::generate("production", &k.id).hash(),
        previous_valid_until: None,
        issued_at: t0(),
        expires_at: None,
        generation: 2,
        spec_generation: 1,
        recipients: BTreeMap::new(),
    };
    assert!(is_refused(&store.rotate(&k.id, 1, rot, &actor()).await));
    // An empty patch is fine.
    assert_eq!(
        store
            .update(&k.id, 1, KeyPatch::default(), &actor())
            .await
            .expect("empty")
            .version,
        1
    );

    let adopt = KeyPatch {
        managed_by: Some(Some(MANAGED_BY.into())),
        ..KeyPatch::default()
    };
    let adopted = store
        .update(&k.id, 1, adopt, &actor())
        .await
        .expect("adopt");
    assert!(adopted.is_managed());
    assert_eq!(adopted.version, 2);
    store
        .disable(&k.id, 2, &actor())
        .await
        .expect("managed now");

    let actions: Vec<String> = store
        .events(None, 100)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["console_create", "adopt", "disable"]);
}

#[tokio::test]
async fn events_are_append_only_and_paged() {
    let (dir, store) = open();
    let (nk, _) = new_key("k");
    let k = store.create(nk, &actor()).await.expect("create");
    store.disable(&k.id, 1, &actor()).await.expect("disable");
    store
        .record(
            "apply_started",
            serde_json::json!({ "plan": "abc", "changes": 2 }),
            &actor(),
        )
        .await
        .expect("record");

    let all = store.events(None, 10).await.expect("events");
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");
    assert_eq!(all[2].action, "apply_started");
    assert_eq!(all[2].key_id, None);
    assert_eq!(all[2].detail["changes"], 2);
    let after = store
        .events(Some(all[0].seq), 1)
        .await
        .expect("events after");
    assert_eq!(after, vec![all[1].clone()]);
    assert!(
        store
            .events(Some(all[2].seq), 10)
            .await
            .expect("none")
            .is_empty()
    );

    // A secret in a detail is refused.
    let s = secret::generate("production", &k.id);
    let leak = store
        .record(
            "oops",
            serde_json::json!({ "note": format!("secret={}", s.expose()) }),
            &actor(),
        )
        .await;
    assert!(matches!(leak, Err(StoreError::Invalid(_))));

    let raw = rusqlite::Connection::open(db_path(&dir)).expect("raw open");
    raw.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    let upd = raw.execute("UPDATE events SET who = 'mallory'", []);
    assert!(upd.is_err_and(|e| e.to_string().contains("append-only")));
    let del = raw.execute("DELETE FROM events WHERE seq = ?1", [all[0].seq]);
    assert!(del.is_err_and(|e| e.to_string().contains("append-only")));
    assert_eq!(store.events(None, 10).await.expect("events"), all);
}

/// Which keys a filter should return.
type Pred = Box<dyn Fn(&keyward::store::LiveKey) -> bool>;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn files_of(db: &Path) -> Vec<Vec<u8>> {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            std::fs::read(PathBuf::from(p)).ok()
        })
        .collect()
}

#[tokio::test]
async fn the_database_holds_neither_secrets_nor_their_hashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = SqliteStore::open("s", &path).expect("open");
    let mut secrets = Vec::new();
    for i in 0..5 {
        let (nk, s) = new_key(&format!("k{i}"));
        let k = store.create(nk, &actor()).await.expect("create");
        let new = secret::generate("production", &k.id);
        let rot = Rotate {
            secret_hash: new.hash(),
            previous_valid_until: Some(valid_now() + Duration::days(7)),
            issued_at: t0(),
            expires_at: None,
            generation: 2,
            spec_generation: 4,
            recipients: BTreeMap::new(),
        };
        store.rotate(&k.id, 1, rot, &actor()).await.expect("rotate");
        assert!(
            store
                .verify(s.expose(), valid_now())
                .await
                .expect("verify")
                .valid
        );
        assert!(
            store
                .verify(new.expose(), valid_now())
                .await
                .expect("verify")
                .valid
        );
        secrets.push(s);
        secrets.push(new);
    }
    let check = |files: &[Vec<u8>], when: &str| {
        assert!(!files.is_empty());
        for s in &secrets {
            let hex = s.hash().0;
            let raw = hex::decode(&hex).expect("hex");
            for f in files {
                assert!(
                    !contains(f, s.expose().as_bytes()),
                    "secret found in the database files ({when})"
                );
                assert!(
                    !contains(f, hex.as_bytes()),
                    "secret hash found in the database files ({when})"
                );
                assert!(
                    !contains(f, hex.to_uppercase().as_bytes()),
                    "secret hash found ({when})"
                );
                assert!(
                    !contains(f, &raw),
                    "raw secret digest found in the database files ({when})"
                );
            }
        }
    };
    let open_files = files_of(&path);
    assert!(open_files.iter().map(Vec::len).sum::<usize>() > 4096);
    check(&open_files, "while open");
    drop(store);
    check(&files_of(&path), "after close");
    let events = serde_json::to_string(
        &SqliteStore::open("s", &path)
            .expect("reopen")
            .events(None, 1000)
            .await
            .expect("events"),
    )
    .expect("json");
    assert!(events.contains("rotate"));
    for s in &secrets {
        assert!(!events.contains(&s.hash().0));
    }
}

#[tokio::test]
async fn verify_gives_every_reason() {
    let (_dir, store) = open();
    let now = valid_now();

    let (nk, ok) = new_key("ok");
    let k = store.create(nk, &actor()).await.expect("create");
    let v = store.verify(ok.expose(), now).await.expect("verify");
    assert!(v.valid);
    assert_eq!(v.reason, VerifyReason::Ok);
    let vk = v.key.expect("verified key");
    assert_eq!(
        (vk.id.as_str(), vk.name.as_str(), vk.owner.as_str()),
        (k.id.as_str(), "ok", "jdoe")
    );
    assert_eq!(vk.scopes, k.scopes);
    assert_eq!(vk.expires_at, k.expires_at);
    // Surrounding whitespace is tolerated like the parser tolerates it.
    assert!(
        store
            .verify(&format!(" {}\n", ok.expose()), now)
            .await
            .expect("verify")
            .valid
    );

    let reason = |p: String| {
        let store = store.clone();
        async move {
            let v = store.verify(&p, now).await.expect("verify");
            assert_eq!(v.valid, v.reason == VerifyReason::Ok);
            if !v.valid {
                assert!(v.key.is_none());
            }
            v.reason
        }
    };
    assert_eq!(reason("garbage".into()).await, VerifyReason::Malformed);
    let mut flipped = ok.expose().to_string();
    flipped.replace_range(30..31, if &flipped[30..31] == "a" { "b" } else { "a" });
    assert_eq!(reason(flipped).await, VerifyReason::Malformed);
    // Well-formed, unknown id; well-formed, known id, wrong secret.
    assert_eq!(
        reason(
            secret::generate("production", &secret::new_key_id())
                .expose()
                .into()
        )
        .await,
        VerifyReason::Unknown
    );
    assert_eq!(
        reason(secret::generate("production", &k.id).expose().into()).await,
        VerifyReason::Unknown
    );

    let (nk, dis) = new_key("disabled");
    let d = store.create(nk, &actor()).await.expect("create");
    store.disable(&d.id, 1, &actor()).await.expect("disable");
    assert_eq!(reason(dis.expose().into()).await, VerifyReason::Disabled);

    let (nk, rev) = new_key("revoked");
    let r = store.create(nk, &actor()).await.expect("create");
    store.revoke(&r.id, 1, &actor()).await.expect("revoke");
    assert_eq!(reason(rev.expose().into()).await, VerifyReason::Revoked);

    let (mut nk, exp) = new_key("expired");
    nk.expires_at = Some(now);
    store.create(nk, &actor()).await.expect("create");
    assert_eq!(reason(exp.expose().into()).await, VerifyReason::Expired);

    let (mut nk, early) = new_key("early");
    nk.issued_at = now + Duration::seconds(1);
    store.create(nk, &actor()).await.expect("create");
    assert_eq!(
        reason(early.expose().into()).await,
        VerifyReason::NotYetValid
    );

    let (mut nk, q) = new_key("quota");
    nk.quota_per_day = Some(2);
    store.create(nk, &actor()).await.expect("create");
    assert_eq!(reason(q.expose().into()).await, VerifyReason::Ok);
    assert_eq!(reason(q.expose().into()).await, VerifyReason::Ok);
    assert_eq!(reason(q.expose().into()).await, VerifyReason::QuotaExceeded);
    assert_eq!(reason(q.expose().into()).await, VerifyReason::QuotaExceeded);
    // A new UTC day starts a new count.
    let tomorrow = store
        .verify(q.expose(), now + Duration::days(1))
        .await
        .expect("verify");
    assert_eq!(tomorrow.reason, VerifyReason::Ok);

    // Failed verifies do not use up the quota.
    let (mut nk, q1) = new_key("quota-one");
    nk.quota_per_day = Some(1);
    let q1k = store.create(nk, &actor()).await.expect("create");
    assert_eq!(
        reason(secret::generate("production", &q1k.id).expose().into()).await,
        VerifyReason::Unknown
    );
    assert_eq!(reason(q1.expose().into()).await, VerifyReason::Ok);
    assert_eq!(
        reason(q1.expose().into()).await,
        VerifyReason::QuotaExceeded
    );

    let (mut nk, zero) = new_key("quota-zero");
    nk.quota_per_day = Some(0);
    store.create(nk, &actor()).await.expect("create");
    assert_eq!(
        reason(zero.expose().into()).await,
        VerifyReason::QuotaExceeded
    );
}

#[tokio::test]
async fn rotation_keeps_the_previous_secret_during_the_grace_period_only() {
    let (_dir, store) = open();
    let (nk, old) = new_key("k");
    let k = store.create(nk, &actor()).await.expect("create");
    let grace_end = valid_now() + Duration::days(7);
    let (rot, new) = rotation(&k.id, Some(grace_end));
    let k2 = store
        .rotate(&k.id, 1, rot.clone(), &actor())
        .await
        .expect("rotate");
    assert_eq!(k2.id, k.id);
    assert_eq!(k2.version, 2);
    assert_eq!((k2.generation, k2.spec_generation), (2, 4));
    assert_eq!(k2.previous_valid_until, Some(grace_end));
    assert_eq!(k2.issued_at, rot.issued_at);
    assert_eq!(k2.expires_at, rot.expires_at);
    assert_eq!(k2.recipients, rot.recipients);
    assert_eq!(store.get(&k.id).await.expect("get"), Some(k2.clone()));

    let during = grace_end - Duration::seconds(1);
    assert_eq!(
        store.verify(old.expose(), during).await.expect("v").reason,
        VerifyReason::Ok
    );
    assert_eq!(
        store.verify(new.expose(), during).await.expect("v").reason,
        VerifyReason::Ok
    );
    assert_eq!(
        store
            .verify(old.expose(), grace_end)
            .await
            .expect("v")
            .reason,
        VerifyReason::Unknown
    );
    assert_eq!(
        store
            .verify(new.expose(), grace_end)
            .await
            .expect("v")
            .reason,
        VerifyReason::Ok
    );

    // Rotating to the current secret is refused; rotating without grace drops the old one.
    let mut same = rot.clone();
    same.generation = 3;
    assert!(matches!(
        store.rotate(&k.id, 2, same, &actor()).await,
        Err(StoreError::Invalid(_))
    ));
    let (mut rot3, newest) = rotation(&k.id, None);
    rot3.generation = 3;
    let k3 = store
        .rotate(&k.id, 2, rot3, &actor())
        .await
        .expect("rotate again");
    assert_eq!(k3.previous_valid_until, None);
    assert_eq!(
        store.verify(new.expose(), during).await.expect("v").reason,
        VerifyReason::Unknown
    );
    assert_eq!(
        store
            .verify(newest.expose(), during)
            .await
            .expect("v")
            .reason,
        VerifyReason::Ok
    );

    let ev = store.events(None, 100).await.expect("events");
    let rotates: Vec<_> = ev.iter().filter(|e| e.action == "rotate").collect();
    assert_eq!(rotates.len(), 2);
    assert_eq!(
        rotates[0].detail["generation"],
        serde_json::json!({ "from": 1, "to": 2 })
    );
}

#[tokio::test]
async fn quota_is_counted_per_key_across_rotations() {
    let (_dir, store) = open();
    let (mut nk, old) = new_key("k");
    nk.quota_per_day = Some(3);
    let k = store.create(nk, &actor()).await.expect("create");
    let now = valid_now() + Duration::hours(1);
    assert!(store.verify(old.expose(), now).await.expect("v").valid);
    assert!(store.verify(old.expose(), now).await.expect("v").valid);
    let (rot, new) = rotation(&k.id, Some(now + Duration::days(1)));
    store.rotate(&k.id, 1, rot, &actor()).await.expect("rotate");
    assert!(store.verify(new.expose(), now).await.expect("v").valid);
    assert_eq!(
        store.verify(new.expose(), now).await.expect("v").reason,
        VerifyReason::QuotaExceeded
    );
    assert_eq!(
        store.verify(old.expose(), now).await.expect("v").reason,
        VerifyReason::QuotaExceeded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_holds_under_concurrent_verifies_from_two_processes_worth_of_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = SqliteStore::open("s", &db_path(&dir)).expect("open a");
    let b = SqliteStore::open("s", &db_path(&dir)).expect("open b");
    let (mut nk, s) = new_key("k");
    nk.quota_per_day = Some(25);
    a.create(nk, &actor()).await.expect("create");
    let presented = s.expose().to_string();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let p = presented.clone();
        tasks.push(tokio::spawn(
            async move { store.verify(&p, valid_now()).await },
        ));
    }
    let mut ok = 0;
    for t in tasks {
        let v = t.await.expect("join").expect("verify");
        if v.valid {
            ok += 1;
        } else {
            assert_eq!(v.reason, VerifyReason::QuotaExceeded);
        }
    }
    assert_eq!(ok, 25);
}

#[tokio::test]
async fn the_lease_is_exclusive_across_store_instances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = SqliteStore::open("s", &db_path(&dir)).expect("open a");
    let b = SqliteStore::open("s", &db_path(&dir)).expect("open b");

    let lease = a
        .lock("ci-apply-1", Duration::minutes(10))
        .await
        .expect("lock a");
    assert_eq!(lease.holder, "ci-apply-1");
    match b.lock("laptop", Duration::minutes(10)).await {
        Err(StoreError::Locked { holder, id, until }) => {
            assert_eq!(
                (holder.as_str(), id.as_str(), until),
                ("ci-apply-1", lease.id.as_str(), lease.expires_at)
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // Unlocking with someone else's lease id does nothing.
    b.unlock("not-the-lease").await.expect("unlock other");
    assert!(matches!(
        b.lock("laptop", Duration::minutes(10)).await,
        Err(StoreError::Locked { .. })
    ));
    a.unlock(&lease.id).await.expect("unlock");
    let lb = b
        .lock("laptop", Duration::milliseconds(1500))
        .await
        .expect("lock b after unlock");
    assert_ne!(lb.id, lease.id);
    assert!(matches!(
        a.lock("ci", Duration::minutes(1)).await,
        Err(StoreError::Locked { .. })
    ));
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let la = a
        .lock("ci", Duration::minutes(1))
        .await
        .expect("lock a after ttl");

    let forced = b
        .force_unlock()
        .await
        .expect("force")
        .expect("a lease was held");
    assert_eq!(
        (forced.id.as_str(), forced.holder.as_str()),
        (la.id.as_str(), "ci")
    );
    assert!(b.force_unlock().await.expect("force again").is_none());
    b.lock("laptop", Duration::minutes(1))
        .await
        .expect("lock after force");
    assert!(
        a.events(None, 100)
            .await
            .expect("events")
            .iter()
            .any(|e| e.action == "lock_force_release")
    );
    assert!(matches!(
        a.lock("x", Duration::zero()).await,
        Err(StoreError::Invalid(_))
    ));
}

/// Set in the child process of `the_lease_is_exclusive_across_processes`.
const LOCK_CHILD_DB: &str = "KEYWARD_TEST_LOCK_CHILD_DB";

/// The child half of `the_lease_is_exclusive_across_processes`, run by it in a separate
/// process with `--ignored` and `LOCK_CHILD_DB` set: tries to take the lease and prints the
/// outcome. Without `LOCK_CHILD_DB` it does nothing.
#[tokio::test]
#[ignore = "child process of the_lease_is_exclusive_across_processes"]
async fn lock_child_process() {
    let Ok(path) = std::env::var(LOCK_CHILD_DB) else {
        return;
    };
    let store = SqliteStore::open("s", Path::new(&path)).expect("child open");
    match store.lock("child-process", Duration::minutes(5)).await {
        Ok(lease) => println!("LEASE={}", lease.id),
        Err(StoreError::Locked { holder, .. }) => println!("LOCKED={holder}"),
        Err(e) => panic!("child lock failed: {e}"),
    }
}

/// Runs `lock_child_process` in a separate process on `path`; returns its report line.
fn lock_in_child(path: &Path) -> String {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "lock_child_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LOCK_CHILD_DB, path)
        .output()
        .expect("run child");
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let at = l.find("LEASE=").or_else(|| l.find("LOCKED="))?;
            l[at..].split_whitespace().next().map(str::to_owned)
        })
        .expect("child reported")
}

#[tokio::test]
async fn the_lease_is_exclusive_across_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = SqliteStore::open("s", &path).expect("open");

    let report = lock_in_child(&path);
    let child_lease = report
        .strip_prefix("LEASE=")
        .expect("child got the lease")
        .to_owned();
    match store.lock("parent", Duration::minutes(5)).await {
        Err(StoreError::Locked { holder, id, .. }) => {
            assert_eq!(
                (holder.as_str(), id.as_str()),
                ("child-process", child_lease.as_str())
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    store.unlock(&child_lease).await.expect("unlock");
    store
        .lock("parent", Duration::minutes(5))
        .await
        .expect("parent lock");
    assert_eq!(lock_in_child(&path), "LOCKED=parent");
}

#[tokio::test]
async fn pagination_returns_every_matching_key_exactly_once() {
    let (_dir, store) = open();
    let mut all = Vec::new();
    for i in 0..120 {
        let (mut nk, _) = new_key(&format!("key-{i:03}"));
        nk.owner = ["jdoe", "asmith", "bwong"][i % 3].into();
        nk.environment = if i % 4 == 0 {
            "sandbox".into()
        } else {
            "production".into()
        };
        nk.labels =
            BTreeMap::from([("team".into(), if i % 5 == 0 { "ill" } else { "cat" }.into())]);
        nk.expires_at = match i % 3 {
            0 => None,
            1 => Some(t0() + Duration::days(10)),
            _ => Some(t0() + Duration::days(400)),
        };
        let k = if i % 7 == 0 {
            store.insert_unmanaged(nk).await.expect("insert")
        } else {
            let k = store.create(nk, &actor()).await.expect("create");
            if i % 6 == 1 {
                store.disable(&k.id, 1, &actor()).await.expect("disable")
            } else {
                k
            }
        };
        all.push(k);
    }
    let t = t0() + Duration::days(30);
    let filters: Vec<(ListFilter, Pred)> = vec![
        (ListFilter::default(), Box::new(|_| true)),
        (
            ListFilter {
                owner: Some("asmith".into()),
                ..Default::default()
            },
            Box::new(|k| k.owner == "asmith"),
        ),
        (
            ListFilter {
                status: Some(KeyStatus::Disabled),
                ..Default::default()
            },
            Box::new(|k| k.status == KeyStatus::Disabled),
        ),
        (
            ListFilter {
                environment: Some("sandbox".into()),
                ..Default::default()
            },
            Box::new(|k| k.environment == "sandbox"),
        ),
        (
            ListFilter {
                label: Some(("team".into(), "ill".into())),
                ..Default::default()
            },
            Box::new(|k| k.labels.get("team").map(String::as_str) == Some("ill")),
        ),
        (
            ListFilter {
                managed: Some(true),
                ..Default::default()
            },
            Box::new(|k| k.is_managed()),
        ),
        (
            ListFilter {
                managed: Some(false),
                ..Default::default()
            },
            Box::new(|k| !k.is_managed()),
        ),
        (
            ListFilter {
                expiring_before: Some(t),
                ..Default::default()
            },
            Box::new(move |k| k.expires_at.is_some_and(|e| e < t)),
        ),
        (
            ListFilter {
                never_expires: true,
                ..Default::default()
            },
            Box::new(|k| k.expires_at.is_none()),
        ),
        (
            ListFilter {
                owner: Some("jdoe".into()),
                environment: Some("production".into()),
                managed: Some(true),
                status: Some(KeyStatus::Active),
                ..Default::default()
            },
            Box::new(|k| {
                k.owner == "jdoe"
                    && k.environment == "production"
                    && k.is_managed()
                    && k.status == KeyStatus::Active
            }),
        ),
    ];
    for (n, (filter, pred)) in filters.iter().enumerate() {
        let mut expected: Vec<String> = all
            .iter()
            .filter(|k| pred(k))
            .map(|k| k.id.clone())
            .collect();
        expected.sort();
        assert!(!expected.is_empty(), "filter {n} matches something");
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = store
                .list(filter, cursor.as_deref(), 7)
                .await
                .expect("list");
            assert!(page.items.len() <= 7);
            pages += 1;
            seen.extend(page.items.into_iter().map(|k| k.id));
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, expected, "filter {n}: every key once, in id order");
        assert!(pages >= expected.len().div_ceil(7), "filter {n}");
        let unique: BTreeSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len());
    }
    assert!(matches!(
        store.list(&ListFilter::default(), Some("bogus"), 10).await,
        Err(StoreError::Invalid(_))
    ));
    // The page size is capped.
    assert_eq!(
        store
            .list(&ListFilter::default(), None, 1_000_000)
            .await
            .expect("list")
            .items
            .len(),
        120
    );
}

#[tokio::test]
async fn opening_twice_is_idempotent_and_keeps_keys_verifiable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let (nk, s) = new_key("k");
    {
        let store = SqliteStore::open("s", &path).expect("open");
        store.create(nk.clone(), &actor()).await.expect("create");
    }
    let pepper_path = PathBuf::from(format!("{}.pepper", path.display()));
    let pepper = std::fs::read(&pepper_path).expect("pepper exists");
    assert_eq!(pepper.len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&pepper_path)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let store = SqliteStore::open("s", &path).expect("reopen");
    let store2 = SqliteStore::open("s", &path).expect("reopen again");
    assert_eq!(
        std::fs::read(&pepper_path).expect("pepper"),
        pepper,
        "pepper unchanged"
    );
    assert_eq!(
        store2.get(&nk.id).await.expect("get").map(|k| k.version),
        Some(1)
    );
    assert!(
        store
            .verify(s.expose(), valid_now())
            .await
            .expect("verify")
            .valid
    );
    let raw = rusqlite::Connection::open(&path).expect("raw");
    let v: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(v, i64::from(SCHEMA_VERSION));
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn concurrent_first_opens_agree_on_schema_and_pepper() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (path, barrier) = (path.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                SqliteStore::open("s", &path)
            })
        })
        .collect();
    let stores: Vec<SqliteStore> = handles
        .into_iter()
        .map(|h| h.join().expect("thread").expect("open"))
        .collect();
    let (nk, s) = new_key("k");
    stores[0].create(nk, &actor()).await.expect("create");
    for store in &stores {
        assert!(
            store
                .verify(s.expose(), valid_now())
                .await
                .expect("verify")
                .valid
        );
    }
}

#[tokio::test]
async fn an_existing_empty_file_is_initialised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("empty.db");
    std::fs::write(&path, b"").expect("touch");
    let store = SqliteStore::open("s", &path).expect("open empty file");
    let (nk, _) = new_key("k");
    store.create(nk, &actor()).await.expect("create");
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![b'x'; 8192]).expect("write garbage");
    assert!(matches!(
        SqliteStore::open("g", &garbage),
        Err(StoreError::Backend(_))
    ));
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    drop(SqliteStore::open("s", &path).expect("open"));
    let newer = i64::from(SCHEMA_VERSION) + 1;
    rusqlite::Connection::open(&path)
        .expect("raw")
        .pragma_update(None, "user_version", newer)
        .expect("bump");
    let err = SqliteStore::open("s", &path).expect_err("must refuse");
    assert!(
        matches!(err, StoreError::Refused(ref m) if m.contains("upgrade keyward")),
        "{err}"
    );
    let v: i64 = rusqlite::Connection::open(&path)
        .expect("raw")
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(v, newer);
}

#[tokio::test]
async fn a_missing_or_foreign_pepper_is_an_error_not_a_new_pepper() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let other = dir.path().join("other.db");
    drop(SqliteStore::open("s", &path).expect("open"));
    drop(SqliteStore::open("o", &other).expect("open other"));
    let pepper_path = PathBuf::from(format!("{}.pepper", path.display()));
    let saved = std::fs::read(&pepper_path).expect("pepper");

    std::fs::remove_file(&pepper_path).expect("remove pepper");
    let err = SqliteStore::open("s", &path).expect_err("missing pepper");
    assert!(err.to_string().contains("pepper"), "{err}");
    assert!(!pepper_path.exists(), "no new pepper was made");

    std::fs::copy(format!("{}.pepper", other.display()), &pepper_path)
        .expect("copy foreign pepper");
    let err = SqliteStore::open("s", &path).expect_err("foreign pepper");
    assert!(err.to_string().contains("does not belong"), "{err}");

    std::fs::write(&pepper_path, &saved).expect("restore");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pepper_path, std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let err = SqliteStore::open("s", &path).expect_err("world-readable pepper");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&pepper_path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
    SqliteStore::open("s", &path).expect("restored pepper opens");
}

#[tokio::test]
async fn a_corrupt_row_is_a_backend_error_not_a_panic() {
    let (dir, store) = open();
    let (nk, _) = new_key("k");
    store.create(nk.clone(), &actor()).await.expect("create");
    let raw = rusqlite::Connection::open(db_path(&dir)).expect("raw");
    raw.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy");
    raw.execute(
        "UPDATE keys SET scopes = 'not json', issued_at = 'yesterday'",
        [],
    )
    .expect("corrupt");
    assert!(matches!(
        store.get(&nk.id).await,
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(
        store.list(&ListFilter::default(), None, 10).await,
        Err(StoreError::Backend(_))
    ));
}

#[test]
fn works_without_a_tokio_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open("s", &db_path(&dir)).expect("open");
    let (nk, s) = new_key("k");
    futures::executor::block_on(async {
        store.create(nk, &actor()).await.expect("create");
        assert!(
            store
                .verify(s.expose(), valid_now())
                .await
                .expect("verify")
                .valid
        );
    });
}

#[tokio::test]
async fn capabilities_describe_the_embedded_store() {
    let (_dir, store) = open();
    let c = store.capabilities();
    assert!(c.client_secret_hash && c.native_expiry);
    assert!(c.in_place.iter().any(|f| f == "scopes"));
    assert_eq!(store.name(), "alma-production");
}

/// `list_all` over 10,000 keys; prints the time (run with `--nocapture` to see it).
#[tokio::test]
async fn listing_ten_thousand_keys_is_fast() {
    let (dir, store) = open();
    let (nk, _) = new_key("template");
    let template = store.create(nk, &actor()).await.expect("create");
    let raw = rusqlite::Connection::open(db_path(&dir)).expect("raw");
    raw.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy");
    let cols = "name, environment, owner, purpose, scopes, labels, status, issued_at, created_at, updated_at, \
                expires_at, lifetime, version, generation, spec_generation, previous_valid_until, recipients, \
                quota_per_day, protected, managed_by, applied_digest, secret_mac, previous_secret_mac";
    raw.execute(
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 9999) \
             INSERT INTO keys (id, {cols}) SELECT printf('bulk%06d', i), {cols} FROM n, keys WHERE keys.id = ?1"
        ),
        [&template.id],
    )
    .expect("bulk insert");
    // Speed is measured in the benchmark (docs/benchmarks.md), not here: this checks that a
    // large store lists completely, once per key.
    let keys = list_all(&store, &ListFilter::default())
        .await
        .expect("list");
    assert_eq!(keys.len(), 10_000);
    let ids: std::collections::BTreeSet<&str> = keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids.len(), 10_000);
}
