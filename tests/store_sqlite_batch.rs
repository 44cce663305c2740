//! `SqliteStore::create_batch` (bulk registration in one transaction) on real database
//! files: the keys come back exactly as `create` makes them, each gets its own event, the
//! secrets verify, and a bad batch leaves nothing behind.

use std::collections::BTreeMap;

use chrono::{Duration, SubsecRound, Utc};
use keyward::secret::{self, Secret};
use keyward::store::sqlite::SqliteStore;
use keyward::store::{
    Actor, KeyStatus, ListFilter, MANAGED_BY, NewKey, Store, StoreError, VerifyReason, list_all,
};

fn actor() -> Actor {
    Actor {
        who: "bench".into(),
        commit: Some("feedbeef".into()),
    }
}

fn new_key(name: &str) -> (NewKey, Secret) {
    let id = secret::new_key_id();
    let s = secret::generate("production", &id);
    let now = Utc::now().trunc_subsecs(0);
    let key = NewKey {
        id,
        name: name.into(),
        environment: "production".into(),
        owner: "jdoe".into(),
        purpose: Some("bulk".into()),
        scopes: vec!["users:read".into(), "bibs:read".into()],
        labels: BTreeMap::from([("ticket".into(), "LSIS-1".into())]),
        status: KeyStatus::Active,
        issued_at: now,
        expires_at: Some(now + Duration::days(90)),
        lifetime: Some("90d".into()),
        generation: 1,
        spec_generation: 1,
        recipients: BTreeMap::from([("jdoe".into(), "fp".into())]),
        quota_per_day: Some(1000),
        protected: false,
        managed_by: Some(MANAGED_BY.into()),
        applied_digest: None,
        secret_hash: s.hash(),
    };
    (key, s)
}

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open("prod", &dir.path().join("s.db")).expect("open store")
}

#[tokio::test]
async fn a_batch_registers_every_key_like_create_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let made: Vec<(NewKey, Secret)> = (0..25).map(|i| new_key(&format!("k{i:02}"))).collect();
    let n = store
        .create_batch(
            made.iter().map(|(k, _)| k.clone()).collect(),
            keyward::store::Writer::new(&actor()),
        )
        .await
        .expect("batch");
    assert_eq!(n.len(), 25);

    // The same key through `create`, for comparison of every field but the clock ones.
    let (single, _) = new_key("single");
    let via_create = store
        .create(single.clone(), keyward::store::Writer::new(&actor()))
        .await
        .expect("create");

    let listed = list_all(&store, &ListFilter::default())
        .await
        .expect("list");
    assert_eq!(listed.len(), 26);
    for (k, s) in &made {
        let live = listed.iter().find(|l| l.id == k.id).expect("listed");
        assert_eq!(live.name, k.name);
        assert_eq!(
            live.scopes,
            vec!["bibs:read".to_string(), "users:read".to_string()]
        );
        assert_eq!(live.version, via_create.version);
        assert_eq!(live.generation, 1);
        assert_eq!(live.expires_at, k.expires_at);
        assert_eq!(live.recipients, k.recipients);
        assert!(live.is_managed());
        let v = store.verify(s.expose(), Utc::now()).await.expect("verify");
        assert_eq!(
            v.reason,
            VerifyReason::Ok,
            "a batch-registered secret verifies"
        );
    }
    let events = store.events(None, 100).await.expect("events");
    assert_eq!(events.len(), 26, "one event per key");
    assert!(
        events
            .iter()
            .all(|e| e.action == "create" && e.who == "bench")
    );
}

#[tokio::test]
async fn a_bad_batch_is_rolled_back_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let (existing, _) = new_key("existing");
    store
        .create(existing.clone(), keyward::store::Writer::new(&actor()))
        .await
        .expect("create");

    // An id clash in the middle: nothing of the batch stays.
    let (a, _) = new_key("a");
    let (mut clash, _) = new_key("b");
    clash.id = existing.id.clone();
    let err = store
        .create_batch(
            vec![a.clone(), clash],
            keyward::store::Writer::new(&actor()),
        )
        .await
        .expect_err("clash");
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
    assert_eq!(store.get(&a.id).await.expect("get"), None);

    // An invalid key: refused before anything is written.
    let (c, _) = new_key("c");
    let (mut bad, _) = new_key("d");
    bad.name = " ".into();
    let err = store
        .create_batch(vec![c.clone(), bad], keyward::store::Writer::new(&actor()))
        .await
        .expect_err("invalid");
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert_eq!(store.get(&c.id).await.expect("get"), None);
    let all = list_all(&store, &ListFilter::default())
        .await
        .expect("list");
    assert_eq!(all.len(), 1);
    assert_eq!(store.events(None, 100).await.expect("events").len(), 1);
}
