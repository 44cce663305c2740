//! The store conformance suite: one set of checks (`check_*`, each taking a `Backend`) run
//! against the embedded SQLite store (a temporary file) and the PostgreSQL store (a fresh
//! schema on `KEYWARD_TEST_POSTGRES_URL`, skipped with a visible message when unset), so
//! both backends keep the same behaviour. PostgreSQL-only race tests with two independent
//! store handles (as two `keyward serve` instances would have) are at the end.

mod needs;
mod store_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use keyward::secret::{self, Secret};
use keyward::store::postgres::{PostgresOptions, PostgresStore, SCHEMA_VERSION as PG_VERSION};
use keyward::store::sqlite::SqliteStore;
use keyward::store::{
    KeyPatch, KeyStatus, KeyWrite, Lease, ListFilter, LiveKey, MANAGED_BY, NewKey, PageAt, Rotate,
    SecretHash, Store, StoreError, StoreResult, VerifyReason, list_all,
};
use store_common::{
    PgSchema, actor, assert_no_secret_in, contains, keys_with_rotated_secrets, new_key, pg_url,
    rotation, sqlite_files, t0, valid_now, verifies,
};
use tempfile::TempDir;

/// One handle on a store under test, with the backend-specific helpers the checks need.
#[derive(Clone)]
enum Handle {
    Sqlite(SqliteStore),
    Pg(PostgresStore),
}

impl Handle {
    fn store(&self) -> &dyn Store {
        match self {
            Handle::Sqlite(s) => s,
            Handle::Pg(s) => s,
        }
    }
    fn arc(&self) -> Arc<dyn Store> {
        match self {
            Handle::Sqlite(s) => Arc::new(s.clone()),
            Handle::Pg(s) => Arc::new(s.clone()),
        }
    }
    async fn insert_unmanaged(&self, k: NewKey) -> StoreResult<LiveKey> {
        match self {
            Handle::Sqlite(s) => s.insert_unmanaged(k).await,
            Handle::Pg(s) => s.insert_unmanaged(k).await,
        }
    }
    async fn force_unlock(&self) -> StoreResult<Option<Lease>> {
        match self {
            Handle::Sqlite(s) => s.force_unlock().await,
            Handle::Pg(s) => s.force_unlock().await,
        }
    }
}

enum Place {
    Sqlite { _dir: TempDir, path: PathBuf },
    Pg(PgSchema),
}

/// A store under test: where it lives and a first handle on it.
struct Backend {
    place: Place,
    h: Handle,
}

impl Backend {
    fn sqlite() -> Backend {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.db");
        let s = SqliteStore::open("alma-production", &path).expect("open sqlite");
        Backend {
            place: Place::Sqlite { _dir: dir, path },
            h: Handle::Sqlite(s),
        }
    }

    async fn postgres(url: &str) -> Backend {
        let schema = PgSchema::new(url);
        let s = schema.connect("alma-production").await;
        Backend {
            place: Place::Pg(schema),
            h: Handle::Pg(s),
        }
    }

    fn store(&self) -> &dyn Store {
        self.h.store()
    }

    /// An independent second handle on the same store (another process / instance).
    async fn second(&self) -> Handle {
        match &self.place {
            Place::Sqlite { path, .. } => {
                Handle::Sqlite(SqliteStore::open("alma-production", path).expect("open again"))
            }
            Place::Pg(schema) => Handle::Pg(schema.connect("alma-production").await),
        }
    }

    /// A handle opened for serving (as `keyward serve` opens it): quota reservations, and
    /// for SQLite read-only connections for verify.
    async fn serving(&self) -> Arc<dyn Store> {
        match &self.place {
            Place::Sqlite { path, .. } => Arc::new(
                SqliteStore::open("alma-production", path)
                    .and_then(|s| s.for_serving(2))
                    .expect("open for serving"),
            ),
            Place::Pg(schema) => Arc::new(schema.connect("alma-production").await.for_serving()),
        }
    }

    /// The calls counted against key `id` today, read from the database itself.
    async fn quota_calls(&self, id: &str, day: &str) -> i64 {
        match &self.place {
            Place::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .expect("open raw")
                .query_row(
                    "SELECT calls FROM quota_usage WHERE key_id = ?1 AND day = ?2",
                    [id, day],
                    |r| r.get(0),
                )
                .expect("read counter"),
            Place::Pg(schema) => schema
                .raw()
                .await
                .query_one(
                    "SELECT calls FROM quota_usage WHERE key_id = $1 AND day = $2",
                    &[&id, &day],
                )
                .await
                .expect("read counter")
                .get(0),
        }
    }

    /// Everything the database holds, as bytes to search (SQLite: the files; PostgreSQL:
    /// the text form of every row of every table of the schema).
    async fn raw_contents(&self) -> Vec<Vec<u8>> {
        match &self.place {
            Place::Sqlite { path, .. } => sqlite_files(path),
            Place::Pg(schema) => {
                let raw = schema.raw().await;
                let tables = raw
                    .query(
                        "SELECT table_name::text FROM information_schema.tables \
                         WHERE table_schema = $1",
                        &[&schema.schema],
                    )
                    .await
                    .expect("list tables");
                let mut out = Vec::new();
                for t in tables {
                    let name: String = t.get(0);
                    let rows = raw
                        .query(&format!("SELECT t::text FROM {name} AS t"), &[])
                        .await
                        .expect("dump table");
                    let text: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                    out.push(text.join("\n").into_bytes());
                }
                out
            }
        }
    }

    /// Try to rewrite and remove audit events behind the store's back; returns the errors.
    async fn tamper_with_events(&self, seq: i64) -> Vec<String> {
        match &self.place {
            Place::Sqlite { path, .. } => {
                let raw = rusqlite::Connection::open(path).expect("raw open");
                raw.busy_timeout(std::time::Duration::from_secs(5))
                    .expect("busy timeout");
                vec![
                    raw.execute("UPDATE events SET who = 'mallory'", [])
                        .expect_err("update refused")
                        .to_string(),
                    raw.execute("DELETE FROM events WHERE seq = ?1", [seq])
                        .expect_err("delete refused")
                        .to_string(),
                ]
            }
            Place::Pg(schema) => {
                let raw = schema.raw().await;
                let mut errs = Vec::new();
                for sql in [
                    "UPDATE events SET who = 'mallory'".to_string(),
                    format!("DELETE FROM events WHERE seq = {seq}"),
                    "TRUNCATE events".to_string(),
                ] {
                    let e = raw.batch_execute(&sql).await.expect_err("refused");
                    errs.push(
                        e.as_db_error()
                            .map(|d| d.message().to_owned())
                            .unwrap_or_else(|| e.to_string()),
                    );
                }
                errs
            }
        }
    }
}

/// Runs each check once per backend: `<check>::sqlite` and `<check>::postgres`.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        $(
            mod $check {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$check(&super::Backend::sqlite()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let Some(url) = super::pg_url() else {
                        return;
                    };
                    super::$check(&super::Backend::postgres(&url).await).await;
                }
            }
        )*
    };
}

conformance!(
    check_round_trip,
    check_create_refusals,
    check_out_of_range_timestamps,
    check_versions,
    check_no_op_updates,
    check_revoked_and_protected,
    check_unmanaged_and_adoption,
    check_events,
    check_no_secret_in_database,
    check_secrets_pasted_into_fields_are_refused,
    check_verify_reasons,
    check_rotation_grace,
    check_quota_across_rotation,
    check_quota_under_concurrency,
    check_quota_reserved_by_servers,
    check_lease,
    check_changes_carry_the_lease,
    check_lease_race,
    check_list_filters_and_pages,
    check_reopen,
    check_concurrent_creates,
    check_concurrent_updates,
);

async fn check_round_trip(b: &Backend) {
    let store = b.store();
    let (nk, _s) = new_key("illiad-barcode-lookup");
    let before = Utc::now();
    let created = store
        .create(nk.clone(), keyward::store::Writer::new(&actor()))
        .await
        .expect("create");

    assert_eq!(created.id, nk.id);
    assert_eq!(created.name, "illiad-barcode-lookup");
    assert_eq!(created.environment, "production");
    assert_eq!(created.owner, "jdoe");
    assert_eq!(created.purpose, nk.purpose);
    assert_eq!(
        created.scopes,
        ["bibs:read", "users:read"],
        "sorted, deduplicated"
    );
    assert_eq!(created.labels, nk.labels);
    assert_eq!(created.status, KeyStatus::Active);
    assert_eq!(created.issued_at, t0(), "nanoseconds survive");
    assert!(created.created_at >= before && created.created_at <= Utc::now());
    assert_eq!(created.updated_at, created.created_at);
    assert_eq!(created.expires_at, nk.expires_at);
    assert_eq!(created.lifetime.as_deref(), Some("180d"));
    assert_eq!(
        (created.version, created.generation, created.spec_generation),
        (1, 1, 3)
    );
    assert_eq!(created.previous_valid_until, None);
    assert_eq!(created.recipients, nk.recipients);
    assert_eq!(created.quota_per_day, None);
    assert!(!created.protected);
    assert!(created.is_managed());
    assert_eq!(created.applied_digest, None);

    assert_eq!(store.get(&nk.id).await.expect("get"), Some(created.clone()));
    assert_eq!(store.get("nosuchkey").await.expect("get"), None);
    let page = store
        .list(&ListFilter::default(), PageAt::first(100))
        .await
        .expect("list");
    assert_eq!(page.items, vec![created.clone()]);
    assert!(page.next.is_none());

    // Optional fields empty, quota, protected, digest and an unusual label set.
    let (mut nk2, _) = new_key("second");
    nk2.purpose = None;
    nk2.labels = BTreeMap::from([("ünïcode key".into(), "a \"quoted\" value".into())]);
    nk2.expires_at = None;
    nk2.lifetime = None;
    nk2.quota_per_day = Some(1000);
    nk2.protected = true;
    nk2.status = KeyStatus::Disabled;
    nk2.applied_digest = Some(nk2.state_digest());
    let c2 = store
        .create(nk2.clone(), keyward::store::Writer::new(&actor()))
        .await
        .expect("create 2");
    let g2 = store.get(&nk2.id).await.expect("get").expect("present");
    assert_eq!(g2, c2);
    assert_eq!(g2.purpose, None);
    assert_eq!(g2.expires_at, None);
    assert_eq!(g2.quota_per_day, Some(1000));
    assert!(g2.protected);
    assert_eq!(g2.status, KeyStatus::Disabled);
    assert_eq!(g2.labels, nk2.labels);
    assert_eq!(
        g2.applied_digest.as_deref(),
        Some(g2.state_digest().as_str())
    );

    let events = store.events(None, 100).await.expect("events");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].action, "create");
    assert_eq!(events[0].who, "alice");
    assert_eq!(events[0].commit.as_deref(), Some("0123abcd"));
    assert_eq!(events[0].key_id.as_deref(), Some(nk.id.as_str()));
    assert_eq!(events[0].key_name.as_deref(), Some("illiad-barcode-lookup"));
    assert_eq!(events[0].detail["generation"], 1);

    // No labels at all: an empty map comes back, not a missing one.
    let (mut nk3, _) = new_key("third");
    nk3.labels.clear();
    let c3 = store
        .create(nk3.clone(), keyward::store::Writer::new(&actor()))
        .await
        .expect("create 3");
    assert!(c3.labels.is_empty());
    assert_eq!(store.get(&nk3.id).await.expect("get"), Some(c3));

    let c = store.capabilities();
    assert!(c.client_secret_hash && c.native_expiry);
    assert!(c.in_place.iter().any(|f| f == "scopes"));
    assert_eq!(store.name(), "alma-production");
}

async fn check_create_refusals(b: &Backend) {
    let store = b.store();
    let (nk, _) = new_key("a");
    store
        .create(nk.clone(), keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    let again = store
        .create(nk.clone(), keyward::store::Writer::new(&actor()))
        .await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists(ref id)) if *id == nk.id),
        "{again:?}"
    );
    let (mut other, _) = new_key("b");
    other.id = nk.id.clone();
    assert!(matches!(
        store
            .create(other, keyward::store::Writer::new(&actor()))
            .await,
        Err(StoreError::AlreadyExists(_))
    ));
    // A plaintext secret passed where the hash belongs is refused, not stored.
    let (mut wrong, s) = new_key("c");
    wrong.secret_hash = SecretHash(s.expose().to_string());
    assert!(matches!(
        store
            .create(wrong, keyward::store::Writer::new(&actor()))
            .await,
        Err(StoreError::Invalid(_))
    ));
    for bad in ["", " ", "has space", "ctl\u{7}"] {
        let (mut k, _) = new_key("d");
        k.id = bad.into();
        assert!(
            matches!(
                store.create(k, keyward::store::Writer::new(&actor())).await,
                Err(StoreError::Invalid(_))
            ),
            "id {bad:?}"
        );
    }
    let (mut k, _) = new_key("e");
    k.owner = String::new();
    assert!(matches!(
        store.create(k, keyward::store::Writer::new(&actor())).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        list_all(store, &ListFilter::default())
            .await
            .expect("list")
            .len(),
        1
    );
    assert_eq!(store.events(None, 100).await.expect("events").len(), 1);
}

async fn check_out_of_range_timestamps(b: &Backend) {
    let store = b.store();
    let far = Utc
        .with_ymd_and_hms(10_000, 1, 1, 0, 0, 0)
        .single()
        .expect("representable");
    let (mut nk, _) = new_key("far");
    nk.expires_at = Some(far);
    assert!(matches!(
        store
            .create(nk, keyward::store::Writer::new(&actor()))
            .await,
        Err(StoreError::Invalid(_))
    ));
    let (nk, _) = new_key("k");
    let k = store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    let patch = KeyPatch {
        expires_at: Some(Some(far)),
        ..KeyPatch::default()
    };
    assert!(matches!(
        store.update(KeyWrite::new(&k.id, 1, &actor()), patch).await,
        Err(StoreError::Invalid(_))
    ));
    let (mut rot, _) = rotation(&k.id, None);
    rot.issued_at = far;
    assert!(matches!(
        store.rotate(KeyWrite::new(&k.id, 1, &actor()), rot).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        store.get(&k.id).await.expect("get").map(|k| k.version),
        Some(1)
    );
}

async fn check_versions(b: &Backend) {
    let store = b.store();
    let (nk, _) = new_key("k");
    let k1 = store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    let id = k1.id.clone();
    let patch = KeyPatch {
        scopes: Some(vec!["bibs:write".into()]),
        ..KeyPatch::default()
    };
    match store
        .update(KeyWrite::new(&id, 7, &actor()), patch.clone())
        .await
    {
        Err(StoreError::Conflict {
            id: cid,
            expected,
            found,
        }) => assert_eq!((cid.as_str(), expected, found), (id.as_str(), 7, 1)),
        other => panic!("expected conflict, got {other:?}"),
    }
    let k2 = store
        .update(KeyWrite::new(&id, 1, &actor()), patch.clone())
        .await
        .expect("update");
    assert_eq!(k2.version, 2);
    assert_eq!(k2.scopes, ["bibs:write"]);
    assert!(k2.updated_at >= k1.updated_at);
    assert_eq!(store.get(&id).await.expect("get"), Some(k2.clone()));

    let rot = Rotate {
        secret_hash: secret::generate("production", &id).hash(),
        previous_valid_until: None,
        issued_at: t0(),
        expires_at: None,
        generation: 2,
        spec_generation: 3,
        recipients: BTreeMap::new(),
    };
    let conflict =
        |r: &StoreResult<LiveKey>| matches!(r, Err(StoreError::Conflict { found: 2, .. }));
    assert!(conflict(
        &store.update(KeyWrite::new(&id, 1, &actor()), patch).await
    ));
    assert!(conflict(
        &store.rotate(KeyWrite::new(&id, 1, &actor()), rot).await
    ));
    assert!(conflict(
        &store
            .set_status(KeyWrite::new(&id, 1, &actor()), KeyStatus::Disabled)
            .await
    ));
    assert!(conflict(
        &store
            .set_status(KeyWrite::new(&id, 1, &actor()), KeyStatus::Active)
            .await
    ));
    assert!(conflict(
        &store
            .set_status(KeyWrite::new(&id, 1, &actor()), KeyStatus::Revoked)
            .await
    ));
    assert!(matches!(
        store.delete(KeyWrite::new(&id, 1, &actor())).await,
        Err(StoreError::Conflict { found: 2, .. })
    ));
    assert_eq!(
        store.get(&id).await.expect("get").map(|k| k.version),
        Some(2),
        "nothing changed"
    );
    assert!(
        matches!(store.set_status(KeyWrite::new("missing", 1, &actor()), KeyStatus::Disabled).await, Err(StoreError::NotFound(ref m)) if m == "missing")
    );
    assert!(matches!(
        store.delete(KeyWrite::new("missing", 1, &actor())).await,
        Err(StoreError::NotFound(_))
    ));
    let k3 = store
        .set_status(KeyWrite::new(&id, 2, &actor()), KeyStatus::Disabled)
        .await
        .expect("disable");
    assert_eq!((k3.status, k3.version), (KeyStatus::Disabled, 3));
    store
        .delete(KeyWrite::new(&id, 3, &actor()))
        .await
        .expect("delete");
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

async fn check_no_op_updates(b: &Backend) {
    let store = b.store();
    let (nk, _) = new_key("k");
    let k = store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    let same = store
        .update(
            KeyWrite::new(&k.id, 1, &actor()),
            KeyPatch {
                owner: Some("jdoe".into()),
                scopes: Some(vec!["users:read".into(), "bibs:read".into()]),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("no-op update");
    assert_eq!(same, k, "a patch that changes nothing is not a change");
    let empty = store
        .update(KeyWrite::new(&k.id, 1, &actor()), KeyPatch::default())
        .await
        .expect("empty patch");
    assert_eq!(empty, k);
    assert!(
        store
            .set_status(KeyWrite::new(&k.id, 1, &actor()), KeyStatus::Disabled)
            .await
            .is_ok_and(|d| d.version == 2)
    );
    let again = store
        .set_status(KeyWrite::new(&k.id, 2, &actor()), KeyStatus::Disabled)
        .await
        .expect("disable twice");
    assert_eq!(again.version, 2, "disabling a disabled key changes nothing");

    let patch = KeyPatch {
        purpose: Some(None),
        labels: Some(BTreeMap::new()),
        quota_per_day: Some(Some(10)),
        expires_at: Some(None),
        applied_digest: Some("abc123".into()),
        ..KeyPatch::default()
    };
    let k2 = store
        .update(KeyWrite::new(&k.id, 2, &actor()), patch)
        .await
        .expect("update");
    assert_eq!(
        (k2.purpose.clone(), k2.expires_at, k2.quota_per_day),
        (None, None, Some(10))
    );
    assert!(k2.labels.is_empty());
    assert_eq!(k2.applied_digest.as_deref(), Some("abc123"));
    assert_eq!(store.get(&k.id).await.expect("get"), Some(k2.clone()));
    let last = store
        .events(None, 100)
        .await
        .expect("events")
        .pop()
        .expect("event");
    assert_eq!(last.action, "update");
    assert_eq!(
        last.detail["changed"],
        serde_json::json!([
            "purpose",
            "labels",
            "expires_at",
            "quota_per_day",
            "applied_digest"
        ])
    );
    assert_eq!(store.events(None, 100).await.expect("events").len(), 3);
}

async fn check_revoked_and_protected(b: &Backend) {
    let store = b.store();
    let (nk, _) = new_key("k");
    let k = store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    let k = store
        .set_status(
            KeyWrite::new(&k.id, k.version, &actor()),
            KeyStatus::Disabled,
        )
        .await
        .expect("disable");
    let k = store
        .set_status(KeyWrite::new(&k.id, k.version, &actor()), KeyStatus::Active)
        .await
        .expect("enable");
    assert_eq!(k.status, KeyStatus::Active);
    let k = store
        .set_status(
            KeyWrite::new(&k.id, k.version, &actor()),
            KeyStatus::Revoked,
        )
        .await
        .expect("revoke");
    assert_eq!(k.status, KeyStatus::Revoked);
    let refused = store
        .set_status(KeyWrite::new(&k.id, k.version, &actor()), KeyStatus::Active)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Refused(ref m)) if m.contains("revoked")),
        "{refused:?}"
    );
    let patch = KeyPatch {
        scopes: Some(vec!["users:read".into()]),
        ..KeyPatch::default()
    };
    assert!(matches!(
        store
            .update(KeyWrite::new(&k.id, k.version, &actor()), patch)
            .await,
        Err(StoreError::Refused(_))
    ));
    assert!(matches!(
        store
            .set_status(
                KeyWrite::new(&k.id, k.version, &actor()),
                KeyStatus::Disabled
            )
            .await,
        Err(StoreError::Refused(_))
    ));
    let (rot, _) = rotation(&k.id, None);
    assert!(matches!(
        store
            .rotate(KeyWrite::new(&k.id, k.version, &actor()), rot)
            .await,
        Err(StoreError::Refused(_))
    ));
    assert_eq!(
        store.get(&k.id).await.expect("get").map(|k| k.status),
        Some(KeyStatus::Revoked)
    );

    let (mut p, _) = new_key("protected");
    p.protected = true;
    let p = store
        .create(p, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    assert!(matches!(
        store.set_status(KeyWrite::new(&p.id, 1, &actor()), KeyStatus::Revoked).await,
        Err(StoreError::Refused(ref m)) if m.contains("protected")
    ));
    assert!(matches!(
        store.delete(KeyWrite::new(&p.id, 1, &actor())).await,
        Err(StoreError::Refused(ref m)) if m.contains("protected")
    ));
    // Disabling a protected key is allowed.
    let p = store
        .set_status(KeyWrite::new(&p.id, 1, &actor()), KeyStatus::Disabled)
        .await
        .expect("disable protected");
    let p = store
        .update(
            KeyWrite::new(&p.id, p.version, &actor()),
            KeyPatch {
                protected: Some(false),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("unprotect");
    let p = store
        .set_status(
            KeyWrite::new(&p.id, p.version, &actor()),
            KeyStatus::Revoked,
        )
        .await
        .expect("revoke after unprotect");
    store
        .delete(KeyWrite::new(&p.id, p.version, &actor()))
        .await
        .expect("delete revoked");
}

async fn check_unmanaged_and_adoption(b: &Backend) {
    let store = b.store();
    let (nk, _) = new_key("console-made");
    let k = b.h.insert_unmanaged(nk).await.expect("insert unmanaged");
    assert!(!k.is_managed());
    assert_eq!(k.managed_by, None);
    let (mut other_tool, _) = new_key("other-tool");
    other_tool.managed_by = Some("terraform".into());
    let o = b.h.insert_unmanaged(other_tool).await.expect("insert");
    assert_eq!(o.managed_by.as_deref(), Some("terraform"));

    let unmanaged = ListFilter {
        managed: Some(false),
        ..ListFilter::default()
    };
    let managed = ListFilter {
        managed: Some(true),
        ..ListFilter::default()
    };
    assert_eq!(list_all(store, &unmanaged).await.expect("list").len(), 2);
    assert_eq!(list_all(store, &managed).await.expect("list").len(), 0);

    let msg = format!("key {} is not managed by keyward", k.id);
    let is_refused =
        |r: &StoreResult<LiveKey>| matches!(r, Err(StoreError::Refused(m)) if *m == msg);
    let patch = KeyPatch {
        labels: Some(BTreeMap::new()),
        ..KeyPatch::default()
    };
    assert!(is_refused(
        &store.update(KeyWrite::new(&k.id, 1, &actor()), patch).await
    ));
    let mixed = KeyPatch {
        managed_by: Some(Some(MANAGED_BY.into())),
        owner: Some("x".into()),
        ..KeyPatch::default()
    };
    assert!(is_refused(
        &store.update(KeyWrite::new(&k.id, 1, &actor()), mixed).await
    ));
    assert!(is_refused(
        &store
            .set_status(KeyWrite::new(&k.id, 1, &actor()), KeyStatus::Disabled)
            .await
    ));
    assert!(is_refused(
        &store
            .set_status(KeyWrite::new(&k.id, 1, &actor()), KeyStatus::Active)
            .await
    ));
    assert!(is_refused(
        &store
            .set_status(KeyWrite::new(&k.id, 1, &actor()), KeyStatus::Revoked)
            .await
    ));
    assert!(is_refused(
        &store
            .delete(KeyWrite::new(&k.id, 1, &actor()))
            .await
            .map(|_| k.clone())
    ));
    let (rot, _) = rotation(&k.id, None);
    assert!(is_refused(
        &store.rotate(KeyWrite::new(&k.id, 1, &actor()), rot).await
    ));
    assert_eq!(
        store
            .update(KeyWrite::new(&k.id, 1, &actor()), KeyPatch::default())
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
        .update(KeyWrite::new(&k.id, 1, &actor()), adopt)
        .await
        .expect("adopt");
    assert!(adopted.is_managed());
    assert_eq!(adopted.version, 2);
    store
        .set_status(KeyWrite::new(&k.id, 2, &actor()), KeyStatus::Disabled)
        .await
        .expect("managed now");
    assert_eq!(list_all(store, &managed).await.expect("list").len(), 1);

    let actions: Vec<String> = store
        .events(None, 100)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        ["console_create", "console_create", "adopt", "disable"]
    );
}

async fn check_events(b: &Backend) {
    let store = b.store();
    let (nk, _) = new_key("k");
    let k = store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    store
        .set_status(KeyWrite::new(&k.id, 1, &actor()), KeyStatus::Disabled)
        .await
        .expect("disable");
    store
        .record(
            "apply_started",
            serde_json::json!({ "plan": "abc", "changes": 2 }),
            &keyward::store::Actor {
                who: " ".into(),
                commit: None,
            },
        )
        .await
        .expect("record");
    let all = store.events(None, 10).await.expect("events");
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(all[2].action, "apply_started");
    assert_eq!(all[2].who, "unknown");
    assert_eq!(all[2].key_id, None);
    assert_eq!(all[2].commit, None);
    assert_eq!(all[2].detail["changes"], 2);
    assert_eq!(
        store.events(Some(all[0].seq), 1).await.expect("after"),
        vec![all[1].clone()]
    );
    assert!(
        store
            .events(Some(all[2].seq), 10)
            .await
            .expect("none")
            .is_empty()
    );
    // Paging returns each event once, in order.
    for i in 0..30 {
        store
            .record("tick", serde_json::json!({ "i": i }), &actor())
            .await
            .expect("record");
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.events(after, 4).await.expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        after = page.last().map(|e| e.seq);
        seen.extend(page);
    }
    assert_eq!(seen.len(), 33);
    assert_eq!(seen[..3], all[..]);

    // A secret in a detail is refused; so is an empty action.
    let s = secret::generate("production", &k.id);
    let leak = store
        .record(
            "oops",
            serde_json::json!({ "note": format!("secret={}", s.expose()) }),
            &actor(),
        )
        .await;
    assert!(matches!(leak, Err(StoreError::Invalid(_))));
    assert!(matches!(
        store.record("", serde_json::json!({}), &actor()).await,
        Err(StoreError::Invalid(_))
    ));

    for e in b.tamper_with_events(all[0].seq).await {
        assert!(e.contains("append-only"), "{e}");
    }
    assert_eq!(store.events(None, 3).await.expect("events"), all);
}

async fn check_no_secret_in_database(b: &Backend) {
    let store = b.store();
    let secrets = keys_with_rotated_secrets(store, 5).await;
    let contents = b.raw_contents().await;
    assert!(contents.iter().map(Vec::len).sum::<usize>() > 1000);
    assert!(
        contents.iter().any(|c| contains(c, b"k3")),
        "the dump holds the keys"
    );
    assert_no_secret_in(&contents, &secrets, "while open");
    let events =
        serde_json::to_string(&store.events(None, 1000).await.expect("events")).expect("json");
    assert!(events.contains("rotate"));
    for s in &secrets {
        assert!(!events.contains(&s.hash().0) && !events.contains(s.expose()));
    }
}

/// A secret pasted into a field the store keeps and shows (a purpose, a label, a name, a
/// change, a lock holder) is refused; nothing is stored.
async fn check_secrets_pasted_into_fields_are_refused(b: &Backend) {
    let store = b.store();
    let (nk, _) = new_key("pasted");
    let s = secret::generate("production", &nk.id);
    let pasted = format!("see {} here", s.expose());
    let variants: Vec<(&str, NewKey)> = vec![
        (
            "purpose",
            NewKey {
                purpose: Some(pasted.clone()),
                ..nk.clone()
            },
        ),
        ("label value", {
            let mut k = nk.clone();
            k.labels.insert("note".into(), s.expose().to_string());
            k
        }),
        ("label name", {
            let mut k = nk.clone();
            k.labels.insert(s.expose().to_string(), "x".into());
            k
        }),
        (
            "name",
            NewKey {
                name: s.expose().to_string(),
                ..nk.clone()
            },
        ),
    ];
    for (what, k) in variants {
        let r = store.create(k, keyward::store::Writer::new(&actor())).await;
        assert!(
            matches!(&r, Err(StoreError::Invalid(m)) if m.contains("secret")),
            "{what}: {r:?}"
        );
    }
    assert!(store.get(&nk.id).await.expect("get").is_none());
    let k = store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    let patch = KeyPatch {
        purpose: Some(Some(pasted.clone())),
        ..KeyPatch::default()
    };
    let r = store
        .update(KeyWrite::new(&k.id, k.version, &actor()), patch)
        .await;
    assert!(matches!(&r, Err(StoreError::Invalid(_))), "{r:?}");
    assert_eq!(store.get(&k.id).await.expect("get"), Some(k.clone()));
    let r = store.lock(&pasted, chrono::Duration::minutes(1)).await;
    assert!(matches!(&r, Err(StoreError::Invalid(_))), "{r:?}");
    let contents = b.raw_contents().await;
    assert_no_secret_in(&contents, &[s], "after the refusals");
}

async fn check_verify_reasons(b: &Backend) {
    let store = b.store();
    let now = valid_now();
    let (nk, ok) = new_key("ok");
    let k = store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
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
    assert!(
        store
            .verify(&format!(" {}\n", ok.expose()), now)
            .await
            .expect("verify")
            .valid
    );
    let reason = |p: String| async move {
        let v = store.verify(&p, now).await.expect("verify");
        assert_eq!(v.valid, v.reason == VerifyReason::Ok);
        if !v.valid {
            assert!(v.key.is_none());
        }
        v.reason
    };
    assert_eq!(reason("garbage".into()).await, VerifyReason::Malformed);
    assert_eq!(reason(String::new()).await, VerifyReason::Malformed);
    let mut flipped = ok.expose().to_string();
    flipped.replace_range(30..31, if &flipped[30..31] == "a" { "b" } else { "a" });
    assert_eq!(reason(flipped).await, VerifyReason::Malformed);
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
    let d = store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    store
        .set_status(KeyWrite::new(&d.id, 1, &actor()), KeyStatus::Disabled)
        .await
        .expect("disable");
    assert_eq!(reason(dis.expose().into()).await, VerifyReason::Disabled);
    store
        .set_status(KeyWrite::new(&d.id, 2, &actor()), KeyStatus::Active)
        .await
        .expect("enable");
    assert_eq!(reason(dis.expose().into()).await, VerifyReason::Ok);

    let (nk, rev) = new_key("revoked");
    let r = store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    store
        .set_status(KeyWrite::new(&r.id, 1, &actor()), KeyStatus::Revoked)
        .await
        .expect("revoke");
    assert_eq!(reason(rev.expose().into()).await, VerifyReason::Revoked);

    let (mut nk, exp) = new_key("expired");
    nk.expires_at = Some(now);
    store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    assert_eq!(reason(exp.expose().into()).await, VerifyReason::Expired);

    let (mut nk, early) = new_key("early");
    nk.issued_at = now + Duration::seconds(1);
    store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    assert_eq!(
        reason(early.expose().into()).await,
        VerifyReason::NotYetValid
    );

    let (mut nk, q) = new_key("quota");
    nk.quota_per_day = Some(2);
    store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    assert_eq!(reason(q.expose().into()).await, VerifyReason::Ok);
    assert_eq!(reason(q.expose().into()).await, VerifyReason::Ok);
    assert_eq!(reason(q.expose().into()).await, VerifyReason::QuotaExceeded);
    assert_eq!(reason(q.expose().into()).await, VerifyReason::QuotaExceeded);
    let tomorrow = store
        .verify(q.expose(), now + Duration::days(1))
        .await
        .expect("verify");
    assert_eq!(
        tomorrow.reason,
        VerifyReason::Ok,
        "a new UTC day, a new count"
    );

    let (mut nk, q1) = new_key("quota-one");
    nk.quota_per_day = Some(1);
    let q1k = store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    assert_eq!(
        reason(secret::generate("production", &q1k.id).expose().into()).await,
        VerifyReason::Unknown,
        "failed verifies do not use up the quota"
    );
    assert_eq!(reason(q1.expose().into()).await, VerifyReason::Ok);
    assert_eq!(
        reason(q1.expose().into()).await,
        VerifyReason::QuotaExceeded
    );
    // Raising the quota takes effect at once; the day's count is kept.
    let q1k = store
        .update(
            KeyWrite::new(&q1k.id, 1, &actor()),
            KeyPatch {
                quota_per_day: Some(Some(2)),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("raise quota");
    assert_eq!(reason(q1.expose().into()).await, VerifyReason::Ok);
    assert_eq!(
        reason(q1.expose().into()).await,
        VerifyReason::QuotaExceeded
    );
    store
        .update(
            KeyWrite::new(&q1k.id, q1k.version, &actor()),
            KeyPatch {
                quota_per_day: Some(None),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("no quota");
    assert_eq!(reason(q1.expose().into()).await, VerifyReason::Ok);

    let (mut nk, zero) = new_key("quota-zero");
    nk.quota_per_day = Some(0);
    store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    assert_eq!(
        reason(zero.expose().into()).await,
        VerifyReason::QuotaExceeded
    );

    // Verifies record no events.
    assert!(
        store
            .events(None, 1000)
            .await
            .expect("events")
            .iter()
            .all(|e| e.action != "verify")
    );
}

async fn check_rotation_grace(b: &Backend) {
    let store = b.store();
    let (nk, old) = new_key("k");
    let k = store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    let grace_end = valid_now() + Duration::days(7);
    let (rot, new) = rotation(&k.id, Some(grace_end));
    let k2 = store
        .rotate(KeyWrite::new(&k.id, 1, &actor()), rot.clone())
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
    let r = |s: &keyward::secret::Secret, t| {
        let p = s.expose().to_string();
        async move { store.verify(&p, t).await.expect("verify").reason }
    };
    assert_eq!(r(&old, during).await, VerifyReason::Ok);
    assert_eq!(r(&new, during).await, VerifyReason::Ok);
    assert_eq!(r(&old, grace_end).await, VerifyReason::Unknown);
    assert_eq!(r(&new, grace_end).await, VerifyReason::Ok);
    // The previous secret is judged like the key: disabled is disabled.
    let k3 = store
        .set_status(KeyWrite::new(&k.id, 2, &actor()), KeyStatus::Disabled)
        .await
        .expect("disable");
    assert_eq!(r(&old, during).await, VerifyReason::Disabled);
    let k3 = store
        .set_status(
            KeyWrite::new(&k.id, k3.version, &actor()),
            KeyStatus::Active,
        )
        .await
        .expect("enable");

    let mut same = rot.clone();
    same.generation = 3;
    assert!(matches!(
        store
            .rotate(KeyWrite::new(&k.id, k3.version, &actor()), same)
            .await,
        Err(StoreError::Invalid(_))
    ));
    let (mut rot3, newest) = rotation(&k.id, None);
    rot3.generation = 3;
    let k4 = store
        .rotate(KeyWrite::new(&k.id, k3.version, &actor()), rot3)
        .await
        .expect("rotate again");
    assert_eq!(k4.previous_valid_until, None);
    assert_eq!(r(&new, during).await, VerifyReason::Unknown);
    assert_eq!(r(&old, during).await, VerifyReason::Unknown);
    assert_eq!(r(&newest, during).await, VerifyReason::Ok);

    let ev = store.events(None, 100).await.expect("events");
    let rotates: Vec<_> = ev.iter().filter(|e| e.action == "rotate").collect();
    assert_eq!(rotates.len(), 2);
    assert_eq!(
        rotates[0].detail["generation"],
        serde_json::json!({ "from": 1, "to": 2 })
    );
}

async fn check_quota_across_rotation(b: &Backend) {
    let store = b.store();
    let (mut nk, old) = new_key("k");
    nk.quota_per_day = Some(3);
    let k = store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    let now = valid_now() + Duration::hours(1);
    assert!(store.verify(old.expose(), now).await.expect("v").valid);
    assert!(store.verify(old.expose(), now).await.expect("v").valid);
    let (rot, new) = rotation(&k.id, Some(now + Duration::days(1)));
    store
        .rotate(KeyWrite::new(&k.id, 1, &actor()), rot)
        .await
        .expect("rotate");
    assert!(store.verify(new.expose(), now).await.expect("v").valid);
    assert_eq!(
        store.verify(new.expose(), now).await.expect("v").reason,
        VerifyReason::QuotaExceeded
    );
    assert_eq!(
        store.verify(old.expose(), now).await.expect("v").reason,
        VerifyReason::QuotaExceeded
    );
    // Deleting the key and its counters: a verify then finds nothing.
    let k = store.get(&k.id).await.expect("get").expect("present");
    let k = store
        .set_status(
            KeyWrite::new(&k.id, k.version, &actor()),
            KeyStatus::Revoked,
        )
        .await
        .expect("revoke");
    store
        .delete(KeyWrite::new(&k.id, k.version, &actor()))
        .await
        .expect("delete");
    assert_eq!(
        store.verify(new.expose(), now).await.expect("v").reason,
        VerifyReason::Unknown
    );
}

async fn check_quota_under_concurrency(b: &Backend) {
    let a = b.h.arc();
    let second = b.second().await.arc();
    let (mut nk, s) = new_key("k");
    nk.quota_per_day = Some(25);
    a.create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    let ok = verify_at_once(&[a, second], &s, 40).await;
    assert_eq!(ok, 25, "exactly the quota, across handles");
}

/// Presents `s` `n` times at once, the `i`th time through `stores[i % stores.len()]`;
/// returns how many verifies succeeded (every other one must be refused for the quota).
async fn verify_at_once(stores: &[Arc<dyn Store>], s: &Secret, n: usize) -> i64 {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            let p = s.expose().to_string();
            tokio::spawn(async move { store.verify(&p, valid_now()).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let v = t.await.expect("join").expect("verify");
        if v.valid {
            ok += 1;
        } else {
            assert_eq!(v.reason, VerifyReason::QuotaExceeded);
        }
    }
    ok
}

/// Serving handles reserve quota calls in blocks: never more successful verifies than the
/// quota across every handle, fewer than one block per handle refused early, and unused calls
/// given back by `close` (a killed server keeps them counted: refused early, never over).
async fn check_quota_reserved_by_servers(b: &Backend) {
    let plain = b.h.arc();
    let servers = [b.serving().await, b.serving().await];
    let (mut nk, s) = new_key("k");
    nk.quota_per_day = Some(250);
    let id = plain
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create")
        .id;
    let handles = [plain.clone(), servers[0].clone(), servers[1].clone()];
    let ok = verify_at_once(&handles, &s, 300).await;
    // Block of 250 / 100 = 2 calls: each of the two servers may hold at most 1 unused.
    assert!((248..=250).contains(&ok), "{ok} successful verifies");
    let day = valid_now().format("%Y-%m-%d").to_string();
    for server in &servers {
        server.close().await.expect("close");
    }
    assert_eq!(
        b.quota_calls(&id, &day).await,
        ok,
        "after close the counter holds exactly the calls answered `ok`"
    );

    // One verify through a fresh server reserves a block of 10 (quota 1000) at once.
    let (mut nk, s) = new_key("k2");
    nk.quota_per_day = Some(1000);
    let id = plain
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create")
        .id;
    let server = b.serving().await;
    for _ in 0..2 {
        let v = server.verify(s.expose(), valid_now()).await.expect("v");
        assert!(v.valid, "{v:?}");
    }
    assert_eq!(
        b.quota_calls(&id, &day).await,
        10,
        "reserved, as a kill leaves it"
    );
    server.close().await.expect("close");
    assert_eq!(b.quota_calls(&id, &day).await, 2, "unused calls given back");
}

async fn check_lease(b: &Backend) {
    let a = &b.h;
    let other = b.second().await;
    let lease = a
        .store()
        .lock("ci-apply-1", Duration::minutes(10))
        .await
        .expect("lock a");
    assert_eq!(lease.holder, "ci-apply-1");
    assert!(lease.expires_at > Utc::now() + Duration::minutes(9));
    match other.store().lock("laptop", Duration::minutes(10)).await {
        Err(StoreError::Locked { holder, id, until }) => assert_eq!(
            (holder.as_str(), id.as_str(), until),
            ("ci-apply-1", lease.id.as_str(), lease.expires_at)
        ),
        r => panic!("expected Locked, got {r:?}"),
    }
    // The holder cannot take it twice either.
    assert!(matches!(
        a.store().lock("ci-apply-1", Duration::minutes(10)).await,
        Err(StoreError::Locked { .. })
    ));
    other
        .store()
        .unlock("not-the-lease")
        .await
        .expect("unlock other");
    assert!(matches!(
        other.store().lock("laptop", Duration::minutes(10)).await,
        Err(StoreError::Locked { .. })
    ));
    a.store().unlock(&lease.id).await.expect("unlock");
    a.store()
        .unlock(&lease.id)
        .await
        .expect("unlock twice is fine");
    let lb = other
        .store()
        .lock("laptop", Duration::milliseconds(1500))
        .await
        .expect("lock after unlock");
    assert_ne!(lb.id, lease.id);
    assert!(matches!(
        a.store().lock("ci", Duration::minutes(1)).await,
        Err(StoreError::Locked { .. })
    ));
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let la = a
        .store()
        .lock("ci", Duration::minutes(1))
        .await
        .expect("an expired lease is taken over");
    let forced = other
        .force_unlock()
        .await
        .expect("force")
        .expect("a lease was held");
    assert_eq!(
        (forced.id.as_str(), forced.holder.as_str()),
        (la.id.as_str(), "ci")
    );
    assert!(other.force_unlock().await.expect("force again").is_none());
    other
        .store()
        .lock("laptop", Duration::minutes(1))
        .await
        .expect("lock after force");
    assert!(
        a.store()
            .events(None, 100)
            .await
            .expect("events")
            .iter()
            .any(|e| e.action == "lock_force_release" && e.who == "force-unlock")
    );
    assert!(matches!(
        a.store().lock("x", Duration::zero()).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        a.store().lock("", Duration::minutes(1)).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        a.store().lock("x", Duration::days(365 * 9000)).await,
        Err(StoreError::Invalid(_))
    ));
}

/// Every key change is judged against the lease in its own transaction, across handles
/// (two `keyward serve` instances on one database): the holder's id works from either
/// handle; no id while it is live is `Locked`; a foreign id, a released or an expired lease
/// is `LeaseLost` and changes nothing (a batch registers none of its keys); `renew`
/// extends the live lease (seen by the other handle) and never revives an expired one.
async fn check_changes_carry_the_lease(b: &Backend) {
    use keyward::store::Writer;
    let (a, other) = (b.h.store(), b.second().await);
    let o = other.store();
    let who = actor();
    let lease = a
        .lock("ci-apply", Duration::seconds(2))
        .await
        .expect("lock");
    let held = Writer::new(&who).under(Some(&lease.id));
    let (nk, _) = new_key("leased");
    let k = o
        .create(nk, held)
        .await
        .expect("create under the lease, other handle");
    let patch = KeyPatch {
        purpose: Some(Some("under the lease".into())),
        ..Default::default()
    };
    let k = a
        .update(held.key(&k.id, k.version), patch.clone())
        .await
        .expect("update under the lease");
    match o
        .update(KeyWrite::new(&k.id, k.version, &who), patch.clone())
        .await
    {
        Err(StoreError::Locked { id, .. }) => assert_eq!(id, lease.id),
        r => panic!("a change without the lease while it is live: {r:?}"),
    }
    let foreign = Writer::new(&who).under(Some("0123456789abcdef0123456789abcdef"));
    let (n1, _) = new_key("batch-1");
    let (n2, _) = new_key("batch-2");
    let ids = [n1.id.clone(), n2.id.clone()];
    match a.create_batch(vec![n1, n2], foreign).await {
        Err(StoreError::LeaseLost { lease: l, why }) => {
            assert_eq!(l, "0123456789abcdef0123456789abcdef");
            assert!(why.contains("ci-apply"), "{why}");
        }
        r => panic!("a batch under a foreign lease: {r:?}"),
    }
    for id in &ids {
        assert!(
            a.get(id).await.expect("get").is_none(),
            "{id} was registered"
        );
    }
    // Renewed from the other handle: still live past the first ttl.
    let r = o
        .renew(&lease.id, Duration::seconds(3))
        .await
        .expect("renew");
    assert_eq!(r.id, lease.id);
    assert!(r.expires_at > lease.expires_at);
    tokio::time::sleep(std::time::Duration::from_millis(2300)).await;
    let k = a
        .set_status(held.key(&k.id, k.version), KeyStatus::Disabled)
        .await
        .expect("the renewed lease outlives its first ttl");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    for r in [
        a.set_status(held.key(&k.id, k.version), KeyStatus::Active)
            .await
            .map(drop),
        o.delete(held.key(&k.id, k.version)).await,
        o.renew(&lease.id, Duration::seconds(3)).await.map(drop),
    ] {
        match r {
            Err(StoreError::LeaseLost { why, .. }) => assert!(why.contains("expired"), "{why}"),
            r => panic!("under the expired lease: {r:?}"),
        }
    }
    let now = a.get(&k.id).await.expect("get").expect("still there");
    assert_eq!(
        (now.version, now.status),
        (k.version, KeyStatus::Disabled),
        "a refused change changed nothing"
    );
    // Expired and unrenewed: free for changes without a lease, and for a new apply.
    let k = a
        .update(KeyWrite::new(&k.id, k.version, &who), patch.clone())
        .await
        .expect("no lease is live");
    let next = o
        .lock("ci-apply-2", Duration::minutes(1))
        .await
        .expect("lock");
    match a.update(held.key(&k.id, k.version), patch).await {
        Err(StoreError::LeaseLost { why, .. }) => assert!(why.contains("ci-apply-2"), "{why}"),
        r => panic!("under the old lease once another apply holds it: {r:?}"),
    }
    o.unlock(&next.id).await.expect("unlock");
}

/// Many concurrent `lock` calls through two handles: exactly one lease is granted.
async fn check_lease_race(b: &Backend) {
    let handles = [b.h.arc(), b.second().await.arc()];
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = handles[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            s.lock(&format!("racer-{i}"), Duration::minutes(5)).await
        }));
    }
    let mut won = Vec::new();
    let mut holders = BTreeSet::new();
    for t in tasks {
        match t.await.expect("join") {
            Ok(l) => won.push(l),
            Err(StoreError::Locked { holder, .. }) => {
                holders.insert(holder);
            }
            Err(e) => panic!("lock failed: {e}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one lease");
    let winner = &won[0].holder;
    assert!(
        holders.iter().all(|h| h == winner),
        "{holders:?} vs {winner}"
    );
}

/// Which keys a filter should return.
type Pred = Box<dyn Fn(&LiveKey) -> bool>;

async fn check_list_filters_and_pages(b: &Backend) {
    let store = b.store();
    let mut all = Vec::new();
    for i in 0..120 {
        let (mut nk, _) = new_key(&format!("key-{i:03}"));
        nk.owner = ["jdoe", "asmith", "bwong"][i % 3].into();
        nk.environment = if i % 4 == 0 { "sandbox" } else { "production" }.into();
        nk.labels =
            BTreeMap::from([("team".into(), if i % 5 == 0 { "ill" } else { "cat" }.into())]);
        nk.expires_at = match i % 3 {
            0 => None,
            1 => Some(t0() + Duration::days(10)),
            _ => Some(t0() + Duration::days(400)),
        };
        let k = if i % 7 == 0 {
            b.h.insert_unmanaged(nk).await.expect("insert")
        } else {
            let k = store
                .create(nk, keyward::store::Writer::new(&actor()))
                .await
                .expect("create");
            if i % 6 == 1 {
                store
                    .set_status(KeyWrite::new(&k.id, 1, &actor()), KeyStatus::Disabled)
                    .await
                    .expect("disable")
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
        loop {
            let page = store
                .list(
                    filter,
                    PageAt {
                        cursor: cursor.as_deref(),
                        limit: 7,
                    },
                )
                .await
                .expect("list");
            assert!(page.items.len() <= 7);
            assert!(page.items.iter().all(pred), "filter {n}");
            seen.extend(page.items.into_iter().map(|k| k.id));
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, expected, "filter {n}: every key once, in id order");
    }
    // Nothing matches: an empty page without a cursor.
    let none = store
        .list(
            &ListFilter {
                owner: Some("nobody".into()),
                ..Default::default()
            },
            PageAt::first(10),
        )
        .await
        .expect("list");
    assert!(none.items.is_empty() && none.next.is_none());
    assert!(matches!(
        store
            .list(
                &ListFilter::default(),
                PageAt {
                    cursor: Some("bogus"),
                    limit: 10
                }
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
    let page = store
        .list(&ListFilter::default(), PageAt::first(1_000_000))
        .await
        .expect("list");
    assert_eq!(
        page.items.len(),
        120,
        "a huge limit is capped, not an error: all 120 fit in one page"
    );
    assert_eq!(
        store
            .list(&ListFilter::default(), PageAt::first(0))
            .await
            .expect("list")
            .items
            .len(),
        1,
        "a zero limit still makes progress"
    );
    assert_eq!(
        list_all(store, &ListFilter::default())
            .await
            .expect("all")
            .len(),
        120
    );
}

async fn check_reopen(b: &Backend) {
    let (nk, s) = new_key("k");
    b.store()
        .create(nk.clone(), keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    let again = b.second().await;
    let third = b.second().await;
    assert_eq!(
        third
            .store()
            .get(&nk.id)
            .await
            .expect("get")
            .map(|k| k.version),
        Some(1)
    );
    assert!(
        verifies(again.store(), &s).await,
        "the same pepper after reopening"
    );
}

/// Two handles create the same id at once: one key, one `AlreadyExists`.
async fn check_concurrent_creates(b: &Backend) {
    let handles = [b.h.arc(), b.second().await.arc()];
    for round in 0..5 {
        let (nk, _) = new_key(&format!("raced-{round}"));
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let s = handles[i % 2].clone();
                let nk = nk.clone();
                tokio::spawn(
                    async move { s.create(nk, keyward::store::Writer::new(&actor())).await },
                )
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.expect("join") {
                Ok(k) => {
                    assert_eq!(k.version, 1);
                    ok += 1;
                }
                Err(StoreError::AlreadyExists(id)) => assert_eq!(id, nk.id),
                Err(e) => panic!("create failed: {e}"),
            }
        }
        assert_eq!(ok, 1, "round {round}: exactly one create wins");
    }
    assert_eq!(
        list_all(b.store(), &ListFilter::default())
            .await
            .expect("list")
            .len(),
        5
    );
    let creates = b
        .store()
        .events(None, 1000)
        .await
        .expect("events")
        .iter()
        .filter(|e| e.action == "create")
        .count();
    assert_eq!(creates, 5, "one event per key");
}

/// Two handles change the same key with the same version: one success, one `Conflict`.
async fn check_concurrent_updates(b: &Backend) {
    let handles = [b.h.arc(), b.second().await.arc()];
    let (nk, _) = new_key("k");
    let mut k = b
        .store()
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    for round in 0..5 {
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let s = handles[i % 2].clone();
                let (id, version) = (k.id.clone(), k.version);
                tokio::spawn(async move {
                    let patch = KeyPatch {
                        labels: Some(BTreeMap::from([("writer".into(), format!("{round}-{i}"))])),
                        ..KeyPatch::default()
                    };
                    s.update(KeyWrite::new(&id, version, &actor()), patch).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.expect("join") {
                Ok(k) => winners.push(k),
                Err(StoreError::Conflict {
                    expected, found, ..
                }) => {
                    assert_eq!((expected, found), (k.version, k.version + 1));
                }
                Err(e) => panic!("update failed: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one update wins");
        let now = b.store().get(&k.id).await.expect("get").expect("present");
        assert_eq!(now, winners[0], "the stored key is the winner's");
        k = now;
    }
    assert_eq!(k.version, 6);
    let events = b.store().events(None, 1000).await.expect("events");
    assert_eq!(events.len(), 6, "one event per successful change");
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gapless: {seqs:?}"
    );
}

// ---- PostgreSQL only ---------------------------------------------------------------

/// Events appended concurrently from two handles are numbered without gaps in commit
/// order, so a reader following `after` sees every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_event_numbers_are_gapless_under_concurrent_writers() {
    let Some(url) = pg_url() else {
        return;
    };
    let b = Backend::postgres(&url).await;
    let handles = [b.h.arc(), b.second().await.arc()];
    let reader = handles[0].clone();
    let follower = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut after = None;
        for _ in 0..400 {
            let page = reader.events(after, 50).await.expect("events");
            if let Some(last) = page.last() {
                after = Some(last.seq);
            }
            seen.extend(page.into_iter().map(|e| e.seq));
            if seen.len() >= 80 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        seen
    });
    let tasks: Vec<_> = (0..80)
        .map(|i| {
            let s = handles[i % 2].clone();
            tokio::spawn(async move {
                s.record("tick", serde_json::json!({ "i": i }), &actor())
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("record");
    }
    let seen = follower.await.expect("follower");
    assert_eq!(
        seen,
        (1..=80).collect::<Vec<i64>>(),
        "a follower never skips one"
    );
}

#[tokio::test]
async fn pg_a_newer_schema_or_a_wrong_pepper_is_refused() {
    let Some(url) = pg_url() else {
        return;
    };
    let schema = PgSchema::new(&url);
    let store = schema.connect("s").await;
    let (nk, s) = new_key("k");
    store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    let pepper = std::fs::read(schema.pepper_file()).expect("pepper written");
    assert_eq!(pepper.len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(schema.pepper_file())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let raw = schema.raw().await;
    let v: i32 = raw
        .query_one("SELECT version FROM keyward_schema", &[])
        .await
        .expect("version")
        .get(0);
    assert_eq!(v, PG_VERSION as i32);

    // Missing pepper: refused, no new pepper made.
    let moved = schema.dir.path().join("saved.pepper");
    std::fs::rename(schema.pepper_file(), &moved).expect("move pepper");
    let err = PostgresStore::connect_with("s", schema.options())
        .await
        .expect_err("missing pepper");
    assert!(
        matches!(err, StoreError::Refused(ref m) if m.contains("pepper")),
        "{err}"
    );
    assert!(!schema.pepper_file().exists());

    // Another store's pepper: refused.
    let other = PgSchema::new(&url);
    drop(other.connect("o").await);
    std::fs::copy(other.pepper_file(), schema.pepper_file()).expect("copy");
    let err = PostgresStore::connect_with("s", schema.options())
        .await
        .expect_err("foreign pepper");
    assert!(err.to_string().contains("does not belong"), "{err}");
    std::fs::rename(&moved, schema.pepper_file()).expect("restore");

    // A newer schema: refused and left alone.
    raw.execute("UPDATE keyward_schema SET version = version + 1", &[])
        .await
        .expect("bump");
    let err = PostgresStore::connect_with("s", schema.options())
        .await
        .expect_err("newer schema");
    assert!(
        matches!(err, StoreError::Refused(ref m) if m.contains("upgrade keyward")),
        "{err}"
    );
    raw.execute("UPDATE keyward_schema SET version = version - 1", &[])
        .await
        .expect("restore version");
    let again = schema.connect("s").await;
    assert!(verifies(&again, &s).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_instances_starting_together_migrate_once() {
    let Some(url) = pg_url() else {
        return;
    };
    let schema = PgSchema::new(&url);
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let opts = schema.options();
            tokio::spawn(async move { PostgresStore::connect_with(&format!("s{i}"), opts).await })
        })
        .collect();
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(t.await.expect("join").expect("connect"));
    }
    let (nk, s) = new_key("k");
    stores[0]
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    for store in &stores {
        assert!(verifies(store, &s).await);
    }
}

#[tokio::test]
async fn pg_connection_urls_carry_keyward_parameters() {
    let o = PostgresOptions::from_url(
        "postgres://u@127.0.0.1:5432/db?schema=team_a&pepper_file=%2Ftmp%2Fp%20q&sslmode=disable&pool_size=4",
    )
    .expect("parse");
    assert_eq!(o.url, "postgres://u@127.0.0.1:5432/db?sslmode=disable");
    assert_eq!(o.schema, "team_a");
    assert_eq!(o.pepper_file, PathBuf::from("/tmp/p q"));
    assert_eq!(o.pool_size, 4);
    let dbg = format!(
        "{:?}",
        PostgresOptions::from_url("postgres://u:hunter2@h/db?pepper_file=/p").expect("parse")
    );
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert!(matches!(
        PostgresOptions::from_url("postgres://h/db?pepper_file=/p&pool_size=0"),
        Err(StoreError::Invalid(_))
    ));

    let Some(url) = pg_url() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in ["Upper", "1abc", "pg_catalog", "a;drop", "a\"b", ""] {
        let r = PostgresStore::connect_with(
            "s",
            PostgresOptions {
                url: url.clone(),
                schema: bad.into(),
                pepper_file: dir.path().join("p"),
                pool_size: 2,
                key_cache: true,
            },
        )
        .await;
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{bad:?}");
    }
    // A URL with the password wrong or the server away: an error naming the store, no panic.
    let r = PostgresStore::connect(
        "s",
        "postgres://nobody:secretpw@127.0.0.1:1/db?pepper_file=/nonexistent/p",
    )
    .await;
    match r {
        Err(StoreError::Backend(m)) => {
            assert!(m.contains("store s"), "{m}");
            assert!(!m.contains("secretpw"), "{m}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    // Through the URL form: schema and pepper file from the parameters.
    let schema = PgSchema::new(&url);
    let store = PostgresStore::connect("s", &schema.database_url())
        .await
        .expect("connect by URL");
    assert_eq!(store.schema(), schema.schema);
    assert!(schema.pepper_file().exists());
}

#[tokio::test]
async fn open_database_accepts_both_kinds_and_refuses_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a").join("s.db");
    let s = keyward::store::open_database("local", &format!("sqlite:{}", path.display()))
        .await
        .expect("sqlite");
    assert_eq!(s.name(), "local");
    assert!(path.exists());
    for bad in [
        "",
        "sqlite:",
        "mysql://h/db",
        "/tmp/x.db",
        "http://127.0.0.1:7450",
    ] {
        assert!(
            matches!(
                keyward::store::open_database("x", bad).await,
                Err(StoreError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    let Some(url) = pg_url() else {
        return;
    };
    let schema = PgSchema::new(&url);
    let (nk, secret) = new_key("k");
    let pg = keyward::store::open_database("team", &schema.database_url())
        .await
        .expect("postgres");
    pg.create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    let again = keyward::store::open_database(
        "team",
        &schema
            .database_url()
            .replace("postgres://", "postgresql://"),
    )
    .await
    .expect("postgresql:// too");
    assert!(verifies(&*again, &secret).await);
}
