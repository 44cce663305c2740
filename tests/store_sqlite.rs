//! SQLite-only tests of the embedded store against real database files in temporary
//! directories (no mocks): what only a file-backed store has — the files themselves after
//! close, the pepper sidecar, schema version and journal mode, opening from several threads
//! and processes, empty and garbage files, corrupt rows, use without a tokio runtime, and
//! bulk-loaded stores. Behaviour both backends share (round trips, versions, refusals, the
//! audit log, verify reasons, rotation, quotas, the lease, paging) is checked once for SQLite
//! and PostgreSQL in `tests/store_conformance.rs`; it must not be repeated here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::Duration;
use keyward::store::sqlite::{SCHEMA_VERSION, SqliteStore};
use keyward::store::{ListFilter, PageAt, Store, StoreError, list_all};
use tempfile::TempDir;

mod needs;
mod store_common;
use store_common::{
    actor, assert_no_secret_in, keys_with_rotated_secrets, new_key, sqlite_files, verifies,
};

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("nested").join("store.db")
}

fn open() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open("alma-production", &db_path(&dir)).expect("open store");
    (dir, store)
}

#[tokio::test]
async fn the_database_files_hold_no_secret_after_close() {
    // `check_no_secret_in_database` (store_conformance) searches the files while the store
    // is open; this searches them again once it is closed and the write-ahead log has been
    // checkpointed into the main file.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = SqliteStore::open("s", &path).expect("open");
    let secrets = keys_with_rotated_secrets(&store, 5).await;
    let open_files = sqlite_files(&path);
    assert!(open_files.iter().map(Vec::len).sum::<usize>() > 4096);
    drop(store);
    let closed = sqlite_files(&path);
    assert!(closed.iter().map(Vec::len).sum::<usize>() > 4096);
    assert_no_secret_in(&closed, &secrets, "after close");
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
async fn opening_twice_is_idempotent_and_keeps_keys_verifiable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let (nk, s) = new_key("k");
    {
        let store = SqliteStore::open("s", &path).expect("open");
        store
            .create(nk.clone(), keyward::store::Writer::new(&actor()))
            .await
            .expect("create");
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
    assert!(verifies(&store, &s).await);
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
    stores[0]
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    for store in &stores {
        assert!(verifies(store, &s).await);
    }
}

#[tokio::test]
async fn an_existing_empty_file_is_initialised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("empty.db");
    std::fs::write(&path, b"").expect("touch");
    let store = SqliteStore::open("s", &path).expect("open empty file");
    let (nk, _) = new_key("k");
    store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
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
    store
        .create(nk.clone(), keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
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
        store.list(&ListFilter::default(), PageAt::first(10)).await,
        Err(StoreError::Backend(_))
    ));
}

#[test]
fn works_without_a_tokio_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open("s", &db_path(&dir)).expect("open");
    let (nk, s) = new_key("k");
    futures::executor::block_on(async {
        store
            .create(nk, keyward::store::Writer::new(&actor()))
            .await
            .expect("create");
        assert!(verifies(&store, &s).await);
    });
}

/// A store of 10,000 keys, bulk-inserted with SQL straight into the file, is listed
/// completely by `list_all`, each key exactly once. Not timed: speed is measured by the
/// benchmarks (`bench/`, `docs/benchmarks.md`).
#[tokio::test]
async fn list_all_returns_each_of_ten_thousand_keys_once() {
    let (dir, store) = open();
    let (nk, _) = new_key("template");
    let template = store
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
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
    let keys = list_all(&store, &ListFilter::default())
        .await
        .expect("list");
    assert_eq!(keys.len(), 10_000);
    let ids: BTreeSet<&str> = keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids.len(), 10_000);
}

/// `record_batch` (notifications' `notify.sent` events) writes its events in order in one
/// transaction: all of them, or none when one is refused (a detail holding a secret).
#[tokio::test]
async fn a_batch_of_events_is_recorded_in_order_all_or_none() {
    let (_dir, store) = open();
    let event = |id: &str| {
        (
            "notify.sent".to_string(),
            serde_json::json!({ "id": id, "channel": "email" }),
        )
    };
    let sent = |store: &SqliteStore| {
        let store = store.clone();
        async move {
            let events = store.events(None, 100).await.expect("events");
            (events.iter())
                .filter(|e| e.action == "notify.sent")
                .map(|e| e.detail["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let batch = [event("n0"), event("n1"), event("n2")];
    store.record_batch(&batch, &actor()).await.expect("record");
    assert_eq!(sent(&store).await, ["n0", "n1", "n2"]);
    let (_, secret) = new_key("leaky");
    let bad = [
        event("n3"),
        (
            "notify.sent".to_string(),
            serde_json::json!({ "id": secret.expose() }),
        ),
    ];
    let e = store.record_batch(&bad, &actor()).await.unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    assert_eq!(sent(&store).await, ["n0", "n1", "n2"], "none of the batch");
}
