//! The embedded SQLite store (`SqliteStore`): owns one database file with the keys, the
//! append-only audit log, the apply lease and daily quota counters, plus its pepper sidecar.
//! It must not see a plaintext secret, must not store a plain `SecretHash` (only
//! `HMAC-SHA256(pepper, hash)`), must not put secrets or hashes in events or errors, and
//! knows nothing about specs, plans or deliveries.
//!
//! # Files
//!
//! * `<path>` — the SQLite database (WAL mode, so also `<path>-wal` and `<path>-shm`),
//!   created 0600 (the others copy its mode) in a directory created 0700.
//! * `<path>.pepper` — 32 random bytes, mode 0600, created atomically with the database.
//!   Losing it makes every stored secret unverifiable, so a database whose schema exists
//!   but whose pepper is missing is refused instead of silently getting a new pepper.
//!   A fingerprint of the pepper is kept in `meta` to detect a pepper from another file.
//!
//! # Migrations
//!
//! `schema::MIGRATIONS` is an ordered, append-only list of SQL scripts. The schema version
//! is `PRAGMA user_version`: `open` applies every script past it in one IMMEDIATE
//! transaction (so two processes opening a new file at once cannot both migrate) and sets
//! `user_version` to the new count. A database with a `user_version` higher than this
//! binary knows is refused with `StoreError::Refused` and left untouched. To change the
//! schema, append a new script; never edit a released one.
//!
//! # Concurrency
//!
//! The connection sits in an `Arc<Mutex<Connection>>`; every call runs its database work
//! in `tokio::task::spawn_blocking` (any runtime flavour), or inline when called outside a
//! tokio runtime. Writes use IMMEDIATE transactions with a 5 s busy timeout, so several
//! processes can share one file; optimistic `version` checks catch lost updates.
//!
//! A store opened for serving (`SqliteStore::for_serving`, used by `keyward serve`) adds a
//! few read-only connections on which `verify` looks keys up inline (a primary-key read
//! takes microseconds; WAL readers never wait for the writer), and quota reservations
//! (`super::quota`): a valid verify is then one read, with one write per reserved block.

mod budget;
mod rows;
mod schema;
mod usage;

pub use schema::SCHEMA_VERSION;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, TransactionBehavior, params, params_from_iter,
};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use self::rows::{SQLITE, sql_value};
use super::pepper::{self, Pepper};
use super::quota::Reservations;
use super::row::{self, EVENT_COLUMNS, STORED_COLUMNS};
use super::rules::{self, StoredKey, check_version, parse_ts, to_i64, ts, verdict, who};
use super::{
    Actor, Capabilities, Event, KeyPatch, KeyStatus, KeyWrite, Lease, ListFilter, LiveKey,
    MANAGED_BY, NewKey, Page, PageAt, Rotate, Store, StoreError, StoreResult, Verdict,
    VerifyReason, Writer,
};
use crate::secret;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
pub use super::rules::MAX_PAGE;

/// Map rusqlite errors to `StoreError::Backend` with a short context.
trait DbResult<T> {
    fn db(self, what: &str) -> StoreResult<T>;
}

impl<T> DbResult<T> for rusqlite::Result<T> {
    fn db(self, what: &str) -> StoreResult<T> {
        self.map_err(|e| StoreError::Backend(format!("{what}: {e}")))
    }
}

/// The embedded default store. Cheap to clone (shares the connection).
#[derive(Clone)]
pub struct SqliteStore {
    name: String,
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    pepper: Arc<Pepper>,
    serving: Option<Arc<Serving>>,
    /// The shared daily budget in force and the calls reserved from it.
    gate: Arc<super::budget::Gate>,
}

/// What a serving store adds: read-only connections for `verify` and quota reservations.
struct Serving {
    readers: Vec<Mutex<Connection>>,
    next: AtomicUsize,
    reservations: Reservations,
    /// The writer, to return unused reservations when the store is dropped.
    conn: Arc<Mutex<Connection>>,
    /// The store's budget gate, whose unused reservations go back with the quota's.
    gate: Arc<super::budget::Gate>,
}

impl Serving {
    /// Run `f` on a free reader (or wait for one, taken in turn).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        for r in &self.readers {
            if let Ok(guard) = r.try_lock() {
                return f(&guard);
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        let guard = self.readers[i].lock().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let conn = Arc::clone(&self.conn);
        let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        self.give_back(&conn);
    }
}

impl Serving {
    /// Give the calls reserved but not used back to the day's counters (a graceful stop).
    fn give_back(&self, conn: &Connection) {
        budget::give_back(conn, &self.gate.drain());
        let unused = self.reservations.drain();
        if unused.is_empty() {
            return;
        }
        for (id, day, left) in unused {
            let left = i64::try_from(left).unwrap_or(i64::MAX);
            if let Err(e) = conn.execute(
                "UPDATE quota_usage SET calls = max(calls - ?3, 0) WHERE key_id = ?1 AND day = ?2",
                params![id, day, left],
            ) {
                tracing::warn!(key = %id, error = %e, "unused quota reservation not returned");
            }
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The files of the embedded store at `path`: the database, its `-wal` and `-shm`, and its
/// pepper. All are owner-only; `crate::private::loose` warns about any that is not.
pub fn files(path: &Path) -> Vec<std::path::PathBuf> {
    let with = |suffix: &str| {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        std::path::PathBuf::from(s)
    };
    vec![
        path.to_path_buf(),
        with("-wal"),
        with("-shm"),
        pepper::path_for(path),
    ]
}

impl SqliteStore {
    /// Open (or create) the store at `path`: creates parent directories, the database and
    /// its pepper, sets WAL / busy timeout / foreign keys, and applies pending migrations.
    pub fn open(name: &str, path: &Path) -> StoreResult<SqliteStore> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::private::create_dir_all(parent).map_err(|e| {
                StoreError::Backend(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        // Owner-only before SQLite sees it: SQLite gives the -wal and -shm files the
        // database file's mode.
        crate::private::create_file(path)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", path.display())))?;
        let mut conn = Connection::open(path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT).db("set busy timeout")?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .db("enable foreign keys")?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .db("enable WAL")?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "cannot enable WAL on {} (journal mode is {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .db("set synchronous")?;

        let version = schema::user_version(&conn)?;
        schema::check_supported(version)?;
        let pepper_path = pepper::path_for(path);
        let pepper = match pepper::load(&pepper_path)? {
            Some(p) => p,
            None if version > 0 => {
                return Err(StoreError::Refused(format!(
                    "database {} exists but its pepper file {} is missing; restore the pepper \
                     from a backup (without it no stored secret can be verified)",
                    path.display(),
                    pepper_path.display()
                )));
            }
            None => pepper::create(&pepper_path)?,
        };
        schema::migrate(&mut conn)?;
        check_pepper(&conn, &pepper, &pepper_path)?;

        Ok(SqliteStore {
            name: name.to_owned(),
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(conn)),
            pepper: Arc::new(pepper),
            serving: None,
            gate: Arc::new(super::budget::Gate::new(false)),
        })
    }

    /// Prepare this store for serving verifies: `readers` read-only connections (at least
    /// one) for key lookups, and quota reservations. Unused reservations are returned to
    /// the database when the last clone of the store is dropped.
    pub fn for_serving(mut self, readers: usize) -> StoreResult<SqliteStore> {
        let readers = (0..readers.max(1))
            .map(|_| {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| {
                    StoreError::Backend(format!("cannot open {}: {e}", self.path.display()))
                })?;
                c.busy_timeout(BUSY_TIMEOUT).db("set busy timeout")?;
                Ok(Mutex::new(c))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.gate = Arc::new(super::budget::Gate::new(true));
        self.serving = Some(Arc::new(Serving {
            readers,
            next: AtomicUsize::new(0),
            reservations: Reservations::default(),
            conn: Arc::clone(&self.conn),
            gate: Arc::clone(&self.gate),
        }));
        Ok(self)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` with the connection on a blocking thread (inline outside a tokio runtime).
    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Pepper) -> StoreResult<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let pepper = Arc::clone(&self.pepper);
        let job = move || {
            // A panic while holding the lock rolled its transaction back on unwind, so the
            // connection is still consistent: recover it instead of failing forever.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard, &pepper)
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(job)
                .await
                .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?,
            Err(_) => job(),
        }
    }

    /// The budget in force (read again at most every `budget::REFRESH`).
    async fn current_budget(&self) -> StoreResult<Option<Arc<super::budget::Budget>>> {
        self.gate
            .current(|| self.run(|conn, _| budget::load(conn)))
            .await
    }

    /// Register a key as if it had been made in a vendor console: `managed_by` is taken
    /// from `key` except that `Some("keyward")` is stored as `None`. Such keys are listed
    /// as unmanaged and refused by every mutating call until adopted.
    pub async fn insert_unmanaged(&self, mut key: NewKey) -> StoreResult<LiveKey> {
        if key.managed_by.as_deref() == Some(MANAGED_BY) {
            key.managed_by = None;
        }
        let actor = Actor {
            who: "console".into(),
            commit: None,
        };
        self.insert(key, Writer::new(&actor), "console_create")
            .await
    }

    /// Remove the apply lease whoever holds it; returns the lease that was removed.
    /// Recorded in the audit log.
    pub async fn force_unlock(&self) -> StoreResult<Option<Lease>> {
        self.run(|conn, _| {
            let tx = immediate(conn)?;
            let lease = tx
                .query_row(
                    "DELETE FROM locks WHERE slot = 1 RETURNING id, holder, expires_at",
                    [],
                    lock_cells,
                )
                .optional()
                .db("remove lease")?;
            let lease = match lease {
                None => None,
                Some((id, holder, until)) => {
                    let expires_at = parse_ts(&until, "locks.expires_at")?;
                    let actor = Actor {
                        who: "force-unlock".into(),
                        commit: None,
                    };
                    let detail = json!({ "holder": holder, "expires_at": ts(&expires_at) });
                    append_event(&tx, &actor, "lock_force_release", None, None, &detail)?;
                    Some(Lease {
                        id,
                        holder,
                        expires_at,
                    })
                }
            };
            tx.commit().db("commit")?;
            Ok(lease)
        })
        .await
    }

    async fn insert(
        &self,
        key: NewKey,
        by: Writer<'_>,
        action: &'static str,
    ) -> StoreResult<LiveKey> {
        let key = rules::validate_new(key)?;
        let (actor, lease) = (by.actor.clone(), by.lease.map(str::to_owned));
        self.run(move |conn, pepper| {
            let tx = immediate(conn)?;
            check_lease(&tx, lease.as_deref())?;
            let live = insert_new(&tx, pepper, key, &actor, action)?;
            tx.commit().db("commit")?;
            Ok(live)
        })
        .await
    }

    /// Load key `id` at `version` in an IMMEDIATE transaction and let `op` change it.
    /// `op` returns `None` for "nothing to change" (no version bump, no event), or the
    /// event action and detail; the version and `updated_at` are bumped here.
    async fn mutate<F>(&self, w: KeyWrite<'_>, op: F) -> StoreResult<LiveKey>
    where
        F: FnOnce(&mut StoredKey, &Pepper) -> StoreResult<rules::Change> + Send + 'static,
    {
        let (id, version, actor) = (w.id.to_owned(), w.version, w.actor.clone());
        let lease = w.lease.map(str::to_owned);
        self.run(move |conn, pepper| {
            let tx = immediate(conn)?;
            check_lease(&tx, lease.as_deref())?;
            let mut stored = load_checked(&tx, &id, version)?;
            let Some((action, detail)) = op(&mut stored, pepper)? else {
                return Ok(stored.key);
            };
            rules::bump(&mut stored.key, Utc::now())?;
            update_row(&tx, &stored)?;
            let k = &stored.key;
            append_event(&tx, &actor, action, Some(&k.id), Some(&k.name), &detail)?;
            tx.commit().db("commit")?;
            Ok(stored.key)
        })
        .await
    }
}

/// Insert one validated new key and its event inside the caller's transaction.
fn insert_new(
    tx: &Connection,
    pepper: &Pepper,
    key: NewKey,
    actor: &Actor,
    action: &str,
) -> StoreResult<LiveKey> {
    let mac = pepper.mac(&key.secret_hash)?;
    let exists = tx
        .prepare_cached("SELECT 1 FROM keys WHERE id = ?1")
        .and_then(|mut st| st.exists([&key.id]))
        .db("look up key")?;
    if exists {
        return Err(StoreError::AlreadyExists(key.id));
    }
    let stored = rules::new_stored(key, mac, Utc::now());
    insert_row(tx, &stored)?;
    let k = &stored.key;
    let detail = rules::create_detail(k);
    append_event(tx, actor, action, Some(&k.id), Some(&k.name), &detail)?;
    Ok(stored.key)
}

/// A lock row's id, holder and expiry text.
fn lock_cells(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

/// The lock row, read inside the write's own transaction.
fn held_lease(tx: &Connection) -> StoreResult<Option<rules::HeldLease>> {
    let row = tx
        .query_row(
            "SELECT id, holder, expires_at FROM locks WHERE slot = 1",
            [],
            lock_cells,
        )
        .optional()
        .db("read lease")?;
    row.map(|(id, holder, until)| Ok((id, holder, parse_ts(&until, "locks.expires_at")?)))
        .transpose()
}

/// Refuse a key change under a lease that is not the live one, or without a lease while
/// one is live (`rules::check_lease`), inside the change's IMMEDIATE transaction.
fn check_lease(tx: &Connection, lease: Option<&str>) -> StoreResult<()> {
    rules::check_lease(held_lease(tx)?, lease, Utc::now())
}

fn immediate(conn: &mut Connection) -> StoreResult<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .db("begin transaction")
}

/// Store the pepper's fingerprint on first open; refuse a pepper from another database.
fn check_pepper(conn: &Connection, pepper: &Pepper, pepper_path: &Path) -> StoreResult<()> {
    let check = pepper.check_value()?;
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('pepper_check', ?1) ON CONFLICT (key) DO NOTHING",
        [&check],
    )
    .db("record pepper fingerprint")?;
    let stored: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'pepper_check'",
            [],
            |r| r.get(0),
        )
        .db("read pepper fingerprint")?;
    if !bool::from(stored.as_bytes().ct_eq(check.as_bytes())) {
        return Err(StoreError::Refused(format!(
            "pepper file {} does not belong to this database; restore the right one",
            pepper_path.display()
        )));
    }
    Ok(())
}

fn append_event(
    conn: &Connection,
    actor: &Actor,
    action: &str,
    key_id: Option<&str>,
    key_name: Option<&str>,
    detail: &serde_json::Value,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO events (at, who, action, key_id, key_name, commit_sha, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut st| {
        st.execute(params![
            ts(&Utc::now()),
            who(actor),
            action,
            key_id,
            key_name,
            actor.commit,
            detail.to_string()
        ])
    })
    .db("append event")?;
    Ok(())
}

fn load(conn: &Connection, id: &str) -> StoreResult<Option<StoredKey>> {
    let mut st = conn
        .prepare_cached(&format!("SELECT {STORED_COLUMNS} FROM keys WHERE id = ?1"))
        .db("prepare")?;
    let mut found = st.query([id]).db("look up key")?;
    match found.next().db("read key")? {
        Some(row) => row::stored_from(row).map(Some),
        None => Ok(None),
    }
}

fn load_checked(conn: &Connection, id: &str, version: u64) -> StoreResult<StoredKey> {
    let stored = load(conn, id)?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
    check_version(&stored.key, version)?;
    Ok(stored)
}

fn key_values(s: &StoredKey) -> StoreResult<Vec<SqlValue>> {
    Ok(row::key_cells(s)?.into_iter().map(sql_value).collect())
}

fn insert_row(conn: &Connection, s: &StoredKey) -> StoreResult<()> {
    let values = key_values(s)?;
    conn.prepare_cached(&row::insert_sql(&SQLITE))
        .and_then(|mut st| st.execute(params_from_iter(values.iter())))
        .db("insert key")?;
    Ok(())
}

fn update_row(conn: &Connection, s: &StoredKey) -> StoreResult<()> {
    let values = key_values(s)?;
    let n = conn
        .prepare_cached(&row::update_sql(&SQLITE))
        .and_then(|mut st| st.execute(params_from_iter(values.iter())))
        .db("update key")?;
    if n != 1 {
        return Err(StoreError::Backend(format!(
            "key {} vanished during update",
            s.key.id
        )));
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        rules::capabilities()
    }

    async fn list(&self, filter: &ListFilter, at: PageAt<'_>) -> StoreResult<Page<LiveKey>> {
        let PageAt { cursor, limit } = at;
        let limit = limit.clamp(1, MAX_PAGE);
        let (sql, args) = row::list_query(&SQLITE, filter, cursor, limit)?;
        let args: Vec<SqlValue> = args.into_iter().map(sql_value).collect();
        self.run(move |conn, _| {
            let mut st = conn.prepare_cached(&sql).db("prepare list")?;
            let mut found = st.query(params_from_iter(args.iter())).db("list keys")?;
            let mut items = Vec::with_capacity(limit.min(256));
            while let Some(r) = found.next().db("read key")? {
                items.push(row::key_from(r)?);
            }
            Ok(row::page(items, limit))
        })
        .await
    }

    async fn get(&self, id: &str) -> StoreResult<Option<LiveKey>> {
        let id = id.to_owned();
        self.run(move |conn, _| Ok(load(conn, &id)?.map(|s| s.key)))
            .await
    }

    async fn create(&self, key: NewKey, by: Writer<'_>) -> StoreResult<LiveKey> {
        self.insert(key, by, "create").await
    }

    /// Every key in ONE transaction (one fsync instead of one per key). All or none: an
    /// invalid key or an id clash rolls the whole batch back. Each key gets its own `create`
    /// event, exactly as `create` records it.
    async fn create_batch(&self, keys: Vec<NewKey>, by: Writer<'_>) -> StoreResult<Vec<LiveKey>> {
        let keys = keys
            .into_iter()
            .map(rules::validate_new)
            .collect::<StoreResult<Vec<_>>>()?;
        let (actor, lease) = (by.actor.clone(), by.lease.map(str::to_owned));
        self.run(move |conn, pepper| {
            let tx = immediate(conn)?;
            check_lease(&tx, lease.as_deref())?;
            let live = keys
                .into_iter()
                .map(|key| insert_new(&tx, pepper, key, &actor, "create"))
                .collect::<StoreResult<Vec<_>>>()?;
            tx.commit().db("commit")?;
            Ok(live)
        })
        .await
    }

    async fn update(&self, w: KeyWrite<'_>, patch: KeyPatch) -> StoreResult<LiveKey> {
        self.mutate(w, move |s, _| rules::update_change(&mut s.key, patch))
            .await
    }

    async fn rotate(&self, w: KeyWrite<'_>, rotate: Rotate) -> StoreResult<LiveKey> {
        rules::check_rotate(&rotate)?;
        self.mutate(w, move |s, pepper| {
            let mac = pepper.mac(&rotate.secret_hash)?;
            rules::rotate_change(s, rotate, mac)
        })
        .await
    }

    async fn set_status(&self, w: KeyWrite<'_>, to: KeyStatus) -> StoreResult<LiveKey> {
        self.mutate(w, move |s, _| rules::status_change(&mut s.key, to))
            .await
    }

    async fn delete(&self, w: KeyWrite<'_>) -> StoreResult<()> {
        let (id, version, actor) = (w.id.to_owned(), w.version, w.actor.clone());
        let lease = w.lease.map(str::to_owned);
        self.run(move |conn, _| {
            let tx = immediate(conn)?;
            check_lease(&tx, lease.as_deref())?;
            let s = load_checked(&tx, &id, version)?;
            let detail = rules::delete_detail(&s.key)?;
            tx.execute("DELETE FROM keys WHERE id = ?1", [&id])
                .db("delete key")?;
            append_event(&tx, &actor, "delete", Some(&id), Some(&s.key.name), &detail)?;
            tx.commit().db("commit")?;
            Ok(())
        })
        .await
    }

    async fn lock(&self, holder: &str, ttl: chrono::Duration) -> StoreResult<Lease> {
        // Refuse bad arguments before touching the database.
        rules::lease_expiry(holder, ttl, Utc::now())?;
        let holder = holder.to_owned();
        self.run(move |conn, _| {
            let tx = immediate(conn)?;
            let now = Utc::now();
            if let Some((id, holder, until)) = held_lease(&tx)?
                && until > now
            {
                return Err(StoreError::Locked { holder, id, until });
            }
            let expires_at = rules::lease_expiry(&holder, ttl, now)?;
            let lease = Lease {
                id: rules::new_lease_id(),
                holder,
                expires_at,
            };
            tx.execute(
                "INSERT OR REPLACE INTO locks (slot, id, holder, acquired_at, expires_at) \
                 VALUES (1, ?1, ?2, ?3, ?4)",
                params![lease.id, lease.holder, ts(&now), ts(&lease.expires_at)],
            )
            .db("write lease")?;
            tx.commit().db("commit")?;
            Ok(lease)
        })
        .await
    }

    async fn unlock(&self, lease_id: &str) -> StoreResult<()> {
        let lease_id = lease_id.to_owned();
        self.run(move |conn, _| {
            conn.execute("DELETE FROM locks WHERE slot = 1 AND id = ?1", [&lease_id])
                .db("remove lease")?;
            Ok(())
        })
        .await
    }

    async fn renew(&self, lease_id: &str, ttl: chrono::Duration) -> StoreResult<Lease> {
        let lease_id = lease_id.to_owned();
        self.run(move |conn, _| {
            let tx = immediate(conn)?;
            let lease = rules::renewed(held_lease(&tx)?, &lease_id, ttl, Utc::now())?;
            tx.execute(
                "UPDATE locks SET expires_at = ?1 WHERE slot = 1 AND id = ?2",
                params![ts(&lease.expires_at), lease.id],
            )
            .db("renew lease")?;
            tx.commit().db("commit")?;
            Ok(lease)
        })
        .await
    }

    async fn verify(&self, presented: &str, now: DateTime<Utc>) -> StoreResult<Verdict> {
        let Some(parsed) = secret::parse(presented) else {
            return Ok(verdict(VerifyReason::Malformed));
        };
        let hash = secret::hash_presented(presented.trim());
        let serving = self.serving.clone();
        let key = match &serving {
            Some(serving) => {
                serving.read(|conn| judge(conn, &self.pepper, &parsed.id, &hash, now))?
            }
            None => {
                let id = parsed.id.clone();
                self.run(move |conn, pepper| judge(conn, pepper, &id, &hash, now))
                    .await?
            }
        };
        let key = match key {
            Ok(key) => key,
            Err(refused) => return Ok(refused),
        };
        let day = rules::quota_day(&now);
        let budget = self.current_budget().await?;
        let scopes = budget
            .as_deref()
            .map(|b| b.scopes_for(&key.labels))
            .unwrap_or_default();
        let spent = self.gate.spend(&scopes, &day, |scope, daily, block| {
            let day = day.clone();
            self.run(move |conn, _| budget::reserve(conn, &scope, &day, daily, block))
        });
        if !spent.await? {
            return Ok(verdict(VerifyReason::BudgetExceeded));
        }
        let counted = match (key.quota_per_day, &serving) {
            (None, _) => true,
            (Some(quota), None) => {
                let id = key.id.clone();
                self.run(move |conn, _| count_call(conn, &id, quota, now))
                    .await?
            }
            (Some(quota), Some(serving)) => {
                serving
                    .reservations
                    .take_or_reserve(&key.id, &day, quota, |block| {
                        let id = key.id.clone();
                        self.run(move |conn, _| reserve_calls(conn, &id, quota, block, now))
                    })
                    .await?
            }
        };
        if !counted {
            self.gate.put_back(&scopes, &day);
            return Ok(verdict(VerifyReason::QuotaExceeded));
        }
        Ok(rules::ok_verdict(key))
    }

    async fn budget(&self) -> StoreResult<Option<super::budget::Budget>> {
        self.run(|conn, _| budget::load(conn)).await
    }

    async fn set_budget(
        &self,
        b: Option<&super::budget::Budget>,
        actor: &Actor,
    ) -> StoreResult<()> {
        let b = b.cloned();
        let actor = actor.clone();
        self.run(move |conn, _| {
            let tx = immediate(conn)?;
            let before = budget::save(&tx, b.as_ref())?;
            let say = |b: Option<&super::budget::Budget>| {
                b.map_or_else(|| "none".to_owned(), super::budget::Budget::describe)
            };
            let detail = json!({ "from": say(before.as_ref()), "to": say(b.as_ref()) });
            append_event(&tx, &actor, super::budget::EVENT_SET, None, None, &detail)?;
            tx.commit().db("commit")
        })
        .await?;
        self.gate.forget();
        Ok(())
    }

    async fn budget_spent(&self, day: &str) -> StoreResult<Vec<super::budget::Spent>> {
        let day = day.to_owned();
        self.run(move |conn, _| budget::spent(conn, &day)).await
    }

    async fn claim_alert(&self, alert: &super::budget::Alert, claim: bool) -> StoreResult<bool> {
        let alert = alert.clone();
        self.run(move |conn, _| budget::claim(conn, &alert, claim))
            .await
    }

    async fn add_usage(&self, rows: &[super::usage::UsageRow]) -> StoreResult<()> {
        let rows = rows.to_vec();
        self.run(move |conn, _| usage::add(conn, &rows)).await
    }

    async fn usage(&self, since: &str) -> StoreResult<Option<super::usage::Usage>> {
        let since = since.to_owned();
        self.run(move |conn, _| usage::read(conn, &since).map(Some))
            .await
    }

    async fn events(&self, after: Option<i64>, limit: usize) -> StoreResult<Vec<Event>> {
        let limit = limit.clamp(1, MAX_PAGE) as i64;
        self.run(move |conn, _| {
            let mut st = conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                ))
                .db("prepare events")?;
            let mut found = st
                .query(params![after.unwrap_or(i64::MIN), limit])
                .db("read events")?;
            let mut out = Vec::new();
            while let Some(row) = found.next().db("read event")? {
                out.push(row::event_from(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn record(&self, action: &str, detail: Value, actor: &Actor) -> StoreResult<()> {
        rules::check_record(action, &detail)?;
        let action = action.to_owned();
        let actor = actor.clone();
        self.run(move |conn, _| append_event(conn, &actor, &action, None, None, &detail))
            .await
    }

    async fn record_batch(&self, events: &[(String, Value)], actor: &Actor) -> StoreResult<()> {
        for (action, detail) in events {
            rules::check_record(action, detail)?;
        }
        let events = events.to_vec();
        let actor = actor.clone();
        self.run(move |conn, _| {
            let tx = immediate(conn)?;
            for (action, detail) in &events {
                append_event(&tx, &actor, action, None, None, detail)?;
            }
            tx.commit().db("commit events")
        })
        .await
    }

    async fn close(&self) -> StoreResult<()> {
        let Some(serving) = self.serving.clone() else {
            let gate = Arc::clone(&self.gate);
            return self
                .run(move |conn, _| {
                    budget::give_back(conn, &gate.drain());
                    Ok(())
                })
                .await;
        };
        self.run(move |conn, _| {
            serving.give_back(conn);
            Ok(())
        })
        .await
    }
}

/// Look a presented secret up: `Ok(key)` when it may be used (quota not yet counted), or
/// `Err(verdict)` with the reason it may not.
fn judge(
    conn: &Connection,
    pepper: &Pepper,
    id: &str,
    hash: &super::SecretHash,
    now: DateTime<Utc>,
) -> StoreResult<Result<LiveKey, Verdict>> {
    let mac = pepper.mac(hash)?;
    let Some(s) = load(conn, id)? else {
        return Ok(Err(verdict(VerifyReason::Unknown)));
    };
    Ok(match rules::judge(&s, &mac, now) {
        Ok(()) => Ok(s.key),
        Err(reason) => Err(verdict(reason)),
    })
}

/// Reserve up to `block` calls of the key's daily quota in one IMMEDIATE transaction (so
/// processes sharing the file never reserve more than `quota` between them); returns how
/// many were granted, 0 when the quota is used up. Written with `synchronous = NORMAL`, as
/// `count_call`.
fn reserve_calls(
    conn: &mut Connection,
    id: &str,
    quota: u64,
    block: u64,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    if quota == 0 {
        return Ok(0);
    }
    relaxed(conn, |conn| {
        let day = rules::quota_day(&now);
        let tx = immediate(conn)?;
        let used: Option<i64> = tx
            .prepare_cached("SELECT calls FROM quota_usage WHERE key_id = ?1 AND day = ?2")
            .and_then(|mut st| st.query_row(params![id, day], |r| r.get(0)).optional())
            .db("read quota counter")?;
        let used = u64::try_from(used.unwrap_or(0)).unwrap_or(0);
        let grant = block.min(quota.saturating_sub(used));
        if grant == 0 {
            return Ok(0);
        }
        let calls = to_i64(grant, "quota")?;
        tx.prepare_cached(
            "INSERT INTO quota_usage (key_id, day, calls) VALUES (?1, ?2, ?3) \
             ON CONFLICT (key_id, day) DO UPDATE SET calls = calls + ?3",
        )
        .and_then(|mut st| st.execute(params![id, day, calls]))
        .db("reserve calls")?;
        if used == 0
            && let Some(oldest) = rules::quota_prune_before(&now)
        {
            tx.execute(
                "DELETE FROM quota_usage WHERE key_id = ?1 AND day < ?2",
                params![id, oldest],
            )
            .db("prune quota counters")?;
        }
        tx.commit().db("commit reservation")?;
        Ok(grant)
    })
}

/// Run `f` with `synchronous = NORMAL` (counters: no fsync per write; see `count_call`),
/// back to `FULL` after.
fn relaxed<T>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    conn.pragma_update(None, "synchronous", "NORMAL")
        .db("relax synchronous")?;
    let done = f(conn);
    conn.pragma_update(None, "synchronous", "FULL")
        .db("restore synchronous")?;
    done
}

/// Count one successful call against the key's daily quota (UTC days). Returns false, and
/// counts nothing, when the quota is used up. One statement, so atomic across processes.
///
/// Counters are written with `synchronous = NORMAL` (no fsync per verify; a power loss can
/// forget the last few counts, never corrupt the file or lose other changes, which keep
/// `FULL`), so a verify endpoint is not limited by the disk's fsync rate.
fn count_call(
    conn: &mut Connection,
    id: &str,
    quota: u64,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    if quota == 0 {
        return Ok(false);
    }
    relaxed(conn, |conn| upsert_call(conn, id, quota, now))
}

fn upsert_call(conn: &Connection, id: &str, quota: u64, now: DateTime<Utc>) -> StoreResult<bool> {
    let day = rules::quota_day(&now);
    let calls: Option<i64> = conn
        .prepare_cached(
            "INSERT INTO quota_usage (key_id, day, calls) VALUES (?1, ?2, 1) \
             ON CONFLICT (key_id, day) DO UPDATE SET calls = calls + 1 WHERE calls < ?3 \
             RETURNING calls",
        )
        .and_then(|mut st| {
            st.query_row(
                params![id, day, to_i64(quota, "quota").unwrap_or(i64::MAX)],
                |r| r.get(0),
            )
            .optional()
        })
        .db("count call")?;
    match calls {
        None => Ok(false),
        Some(1) => {
            // First call of the day for this key: prune its old counters.
            let Some(oldest) = rules::quota_prune_before(&now) else {
                return Ok(true);
            };
            conn.execute(
                "DELETE FROM quota_usage WHERE key_id = ?1 AND day < ?2",
                params![id, oldest],
            )
            .db("prune quota counters")?;
            Ok(true)
        }
        Some(_) => Ok(true),
    }
}
