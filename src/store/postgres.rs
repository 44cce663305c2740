//! The PostgreSQL store (`PostgresStore`), the scale-out backend of `keyward serve`: the
//! same keys, audit log, apply lease and quota counters as the SQLite store, in one
//! PostgreSQL schema that several keyward instances share safely. Same rules as SQLite
//! (`super::rules`); must not see a plaintext secret, must not store a plain `SecretHash`
//! (only `HMAC-SHA256(pepper, hash)`, the pepper being a file outside the database), must
//! not put secrets, hashes or the connection password in events, errors or Debug, and knows
//! nothing about specs, plans or deliveries.
//!
//! # Connecting
//!
//! `PostgresStore::connect(name, url)` takes a libpq-style URL
//! (`postgres://user@host:5432/db`) with three keyward parameters that are removed before
//! the URL reaches the driver: `schema=NAME` (default `keyward`; one schema per store),
//! `pepper_file=PATH` (default: environment `KEYWARD_PEPPER_FILE`) and `pool_size=N`
//! (default 16), and `key_cache=off` (the serving key cache, on by default; see
//! [`cache`]). `connect_with(name, PostgresOptions)` takes them explicitly.
//!
//! # Migrations
//!
//! `schema::MIGRATIONS` is an ordered, append-only list of SQL scripts; the version is the
//! single row of `keyward_schema`. `connect` takes a transaction-scoped advisory lock
//! derived from the schema name, creates the schema if needed, and applies every script
//! past the recorded version in that same transaction, so instances starting together
//! migrate once. A newer schema than this binary knows is refused and left untouched.
//!
//! # Concurrency across instances
//!
//! * create: `INSERT ... ON CONFLICT (id) DO NOTHING` — exactly one of two concurrent
//!   creates of one id succeeds; the other gets `AlreadyExists`.
//! * changes: `SELECT ... FOR UPDATE`, version check, `UPDATE`, event — in one transaction,
//!   so two changes with the same version give one success and one `Conflict`.
//! * events: numbered from a one-row counter bumped in the writing transaction (gapless,
//!   commit order).
//! * lease: one row, taken with `INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`,
//!   judged by the database's clock.
//! * quotas: one atomic upsert per counted verify.

mod budget;
mod cache;
mod rows;
mod schema;
mod usage;

pub use schema::SCHEMA_VERSION;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_postgres::types::Json;
use tokio_postgres::{NoTls, Row};

use self::cache::KeyCache;
use self::rows::{POSTGRES, Param, get, param, params};
use super::pepper::{self, Pepper};
use super::quota::Reservations;
use super::row::{self, EVENT_COLUMNS, STORED_COLUMNS};
use super::rules::{self, StoredKey, check_version, parse_ts, ts, verdict, who};
use super::{
    Actor, Capabilities, Event, KeyPatch, KeyStatus, KeyWrite, Lease, ListFilter, LiveKey,
    MANAGED_BY, NewKey, Page, PageAt, Rotate, Store, StoreError, StoreResult, Verdict,
    VerifyReason, Writer,
};
use crate::secret;

pub use super::rules::MAX_PAGE;

/// The schema used when none is given.
pub const DEFAULT_SCHEMA: &str = "keyward";
/// Environment variable naming the pepper file when the URL has no `pepper_file=`.
pub const PEPPER_FILE_ENV: &str = "KEYWARD_PEPPER_FILE";
const DEFAULT_POOL_SIZE: usize = 16;
const POOL_WAIT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the database and where the pepper is.
#[derive(Clone)]
pub struct PostgresOptions {
    /// libpq-style URL or `key=value` string understood by tokio-postgres (no keyward
    /// parameters).
    pub url: String,
    /// The PostgreSQL schema holding this store's tables (created if missing).
    pub schema: String,
    /// The pepper file (32 bytes, mode 0600), created when the schema is new.
    pub pepper_file: PathBuf,
    /// Maximum number of pooled connections.
    pub pool_size: usize,
    /// Whether a serving store (`for_serving`) keeps verified key records in memory, kept
    /// current with LISTEN/NOTIFY ([`cache`]).
    pub key_cache: bool,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never shown.
        f.debug_struct("PostgresOptions")
            .field("schema", &self.schema)
            .field("pepper_file", &self.pepper_file)
            .field("pool_size", &self.pool_size)
            .field("key_cache", &self.key_cache)
            .finish_non_exhaustive()
    }
}

impl PostgresOptions {
    /// Split keyward's parameters (`schema`, `pepper_file`, `pool_size`) off a URL; the
    /// pepper file falls back to `KEYWARD_PEPPER_FILE`.
    pub fn from_url(url: &str) -> StoreResult<PostgresOptions> {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut schema = DEFAULT_SCHEMA.to_owned();
        let mut pepper_file = None;
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut key_cache = true;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "schema" => schema = percent_decode(v)?,
                "pepper_file" => pepper_file = Some(PathBuf::from(percent_decode(v)?)),
                "pool_size" => {
                    pool_size = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| {
                            StoreError::Invalid("pool_size must be a number from 1 to 1000".into())
                        })?;
                }
                "key_cache" => {
                    key_cache = match v {
                        "on" => true,
                        "off" => false,
                        _ => {
                            return Err(StoreError::Invalid(
                                "key_cache must be `on` or `off`".into(),
                            ));
                        }
                    };
                }
                _ => rest.push(pair),
            }
        }
        let pepper_file = match pepper_file {
            Some(p) => p,
            None => std::env::var_os(PEPPER_FILE_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "a PostgreSQL store needs a pepper file kept outside the database: add \
                         pepper_file=PATH to the URL or set {PEPPER_FILE_ENV}"
                    ))
                })?,
        };
        let url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        Ok(PostgresOptions {
            url,
            schema,
            pepper_file,
            pool_size,
            key_cache,
        })
    }
}

fn percent_decode(s: &str) -> StoreResult<String> {
    let bad = || StoreError::Invalid("malformed percent-encoding in the database URL".into());
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Schema names are plain identifiers, so they never need quoting.
fn check_schema_name(s: &str) -> StoreResult<()> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        && !s.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "schema name {s:?} must be 1-63 lowercase letters, digits or '_', start with a \
             letter or '_', and not start with pg_"
        )))
    }
}

/// Map driver errors to `StoreError::Backend` with context and the server's message.
trait DbResult<T> {
    fn db(self, what: &str) -> StoreResult<T>;
}

impl<T> DbResult<T> for Result<T, tokio_postgres::Error> {
    fn db(self, what: &str) -> StoreResult<T> {
        self.map_err(|e| pg_error(what, &e))
    }
}

impl<T> DbResult<T> for Result<T, deadpool_postgres::PoolError> {
    fn db(self, what: &str) -> StoreResult<T> {
        self.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => pg_error(what, &e),
            other => StoreError::Backend(format!("{what}: {other}")),
        })
    }
}

fn pg_error(what: &str, e: &tokio_postgres::Error) -> StoreError {
    use std::error::Error as _;
    match e.source() {
        Some(cause) => StoreError::Backend(format!("{what}: {e}: {cause}")),
        None => StoreError::Backend(format!("{what}: {e}")),
    }
}

fn time(row: &Row, i: usize, col: &str) -> StoreResult<DateTime<Utc>> {
    parse_ts(&get::<String>(row, i, col)?, col)
}

fn key_params(s: &StoredKey) -> StoreResult<Vec<Param>> {
    Ok(row::key_cells(s)?.into_iter().map(param).collect())
}

/// The advisory lock key under which the migrations of `schema` run.
fn migration_lock_key(schema: &str) -> i64 {
    let d = Sha256::digest(format!("keyward schema migration {schema}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

/// The PostgreSQL store. Cheap to clone (shares the pool).
#[derive(Clone)]
pub struct PostgresStore {
    name: String,
    schema: String,
    pool: Pool,
    pepper: std::sync::Arc<Pepper>,
    /// Quota reservations when serving (`for_serving`); None counts every call.
    reservations: Option<std::sync::Arc<Reservations>>,
    /// The driver settings, for the key cache's own listening connection.
    driver: std::sync::Arc<tokio_postgres::Config>,
    key_cache: bool,
    /// Serving with the key cache: the cache and its listener task.
    cache: Option<(std::sync::Arc<KeyCache>, std::sync::Arc<cache::Listener>)>,
    /// The shared daily budget in force and the calls reserved from it.
    gate: std::sync::Arc<super::budget::Gate>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("name", &self.name)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

async fn append_event<C: GenericClient>(
    c: &C,
    actor: &Actor,
    action: &str,
    key_id: Option<&str>,
    key_name: Option<&str>,
    detail: &serde_json::Value,
) -> StoreResult<()> {
    let st = c
        .prepare_cached(
            "WITH n AS (UPDATE event_seq SET last = last + 1 WHERE slot = 1 RETURNING last) \
             INSERT INTO events (seq, at, who, action, key_id, key_name, commit_sha, detail) \
             SELECT n.last, $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, \
             $7::jsonb FROM n",
        )
        .await
        .db("prepare event")?;
    let n = c
        .execute(
            &st,
            &[
                &ts(&Utc::now()),
                &who(actor),
                &action,
                &key_id,
                &key_name,
                &actor.commit,
                &Json(detail),
            ],
        )
        .await
        .db("append event")?;
    if n != 1 {
        return Err(StoreError::Backend(
            "the event counter row is missing".into(),
        ));
    }
    Ok(())
}

async fn load<C: GenericClient>(
    c: &C,
    id: &str,
    for_update: bool,
) -> StoreResult<Option<StoredKey>> {
    let sql = if for_update {
        format!("SELECT {STORED_COLUMNS} FROM keys WHERE id = $1 FOR UPDATE")
    } else {
        format!("SELECT {STORED_COLUMNS} FROM keys WHERE id = $1")
    };
    let st = c.prepare_cached(&sql).await.db("prepare")?;
    match c.query_opt(&st, &[&id]).await.db("look up key")? {
        Some(r) => row::stored_from(&r).map(Some),
        None => Ok(None),
    }
}

/// The key `id` locked for this transaction, at the version the caller saw.
/// The lock row `FOR SHARE` (a lease taken over or renewed meanwhile waits for this
/// transaction) and the database's clock; the caller's change then goes ahead only as
/// `rules::check_lease` allows.
async fn check_lease<C: GenericClient>(c: &C, lease: Option<&str>) -> StoreResult<()> {
    let st = c
        .prepare_cached(
            "SELECT id, holder, expires_at, clock_timestamp() FROM locks WHERE slot = 1 FOR SHARE",
        )
        .await
        .db("prepare lease check")?;
    let Some(r) = c.query_opt(&st, &[]).await.db("read lease")? else {
        return rules::check_lease(None, lease, Utc::now());
    };
    let held = (
        get(&r, 0, "locks.id")?,
        get(&r, 1, "locks.holder")?,
        time(&r, 2, "locks.expires_at")?,
    );
    let now: DateTime<Utc> = get(&r, 3, "clock_timestamp")?;
    rules::check_lease(Some(held), lease, now)
}

async fn load_checked<C: GenericClient>(c: &C, id: &str, version: u64) -> StoreResult<StoredKey> {
    let stored = load(c, id, true)
        .await?
        .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
    check_version(&stored.key, version)?;
    Ok(stored)
}

async fn update_row<C: GenericClient>(c: &C, s: &StoredKey) -> StoreResult<()> {
    let values = key_params(s)?;
    let st = c
        .prepare_cached(&row::update_sql(&POSTGRES))
        .await
        .db("prepare update")?;
    let n = c.execute(&st, &params(&values)).await.db("update key")?;
    if n != 1 {
        return Err(StoreError::Backend(format!(
            "key {} vanished during update",
            s.key.id
        )));
    }
    Ok(())
}

impl PostgresStore {
    /// Connect with a URL carrying keyward's parameters (see the module docs), create the
    /// schema if needed and apply pending migrations.
    pub async fn connect(name: &str, url: &str) -> StoreResult<PostgresStore> {
        PostgresStore::connect_with(name, PostgresOptions::from_url(url)?).await
    }

    /// Connect with explicit options.
    pub async fn connect_with(name: &str, opts: PostgresOptions) -> StoreResult<PostgresStore> {
        check_schema_name(&opts.schema)?;
        let mut cfg: tokio_postgres::Config = opts
            .url
            .parse()
            .map_err(|e| pg_error(&format!("invalid PostgreSQL URL for store {name}"), &e))?;
        let search_path = format!("-c search_path={}", opts.schema);
        let options = match cfg.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} {search_path}"),
            _ => search_path,
        };
        cfg.options(options);
        if cfg.get_application_name().is_none() {
            cfg.application_name("keyward");
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_TIMEOUT);
        }
        let manager = Manager::from_config(
            cfg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))?;
        let pepper = migrate(&pool, name, &opts).await?;
        Ok(PostgresStore {
            name: name.to_owned(),
            schema: opts.schema,
            pool,
            pepper: std::sync::Arc::new(pepper),
            reservations: None,
            driver: std::sync::Arc::new(cfg),
            key_cache: opts.key_cache,
            cache: None,
            gate: std::sync::Arc::new(super::budget::Gate::new(false)),
        })
    }

    /// Prepare this store for serving verifies: quota calls are reserved in blocks
    /// (`super::quota`), so a valid verify is one round trip. Call `close` before stopping
    /// to give unused calls back.
    ///
    /// With `key_cache` (the default), verified key records are also kept in memory and a
    /// listener task (on its own connection) forgets each one as its row changes
    /// ([`cache`]); must be called inside a Tokio runtime.
    pub fn for_serving(mut self) -> PostgresStore {
        self.reservations = Some(std::sync::Arc::default());
        if self.key_cache && self.cache.is_none() {
            let c = std::sync::Arc::new(KeyCache::new());
            let channel = schema::keys_channel(&self.schema);
            let listener = cache::listen(c.clone(), (*self.driver).clone(), channel);
            self.cache = Some((c, std::sync::Arc::new(listener)));
        }
        self.gate = std::sync::Arc::new(super::budget::Gate::new(true));
        self
    }

    /// Whether verifies are answered from the key cache now (its listener is up), and how
    /// many records it holds; None without a cache.
    pub fn key_cache_state(&self) -> Option<(bool, usize)> {
        self.cache
            .as_ref()
            .map(|(c, _)| (c.ticket().is_some(), c.len()))
    }

    /// The key record of `id` for a verify: from the key cache when it has it, else read
    /// (and kept, unless a change was notified meanwhile).
    async fn verify_record(&self, id: &str) -> StoreResult<Option<std::sync::Arc<StoredKey>>> {
        let cache = self.cache.as_ref().map(|(c, _)| c);
        if let Some(s) = cache.and_then(|c| c.get(id)) {
            return Ok(Some(s));
        }
        let ticket = cache.and_then(|c| c.ticket());
        let c = self.client().await?;
        let Some(s) = load(&c, id, false).await? else {
            return Ok(None);
        };
        let s = std::sync::Arc::new(s);
        if let (Some(cache), Some(t)) = (cache, ticket) {
            cache.put(t, s.clone());
        }
        Ok(Some(s))
    }

    /// When `id`'s reserved calls run low, reserve its next block in the background, so
    /// its verifies do not wait for a database round trip (and behind the refill lock
    /// of its shard) when the block runs out. Under load a synchronous refill on two
    /// saturated cores could hold verifies for hundreds of milliseconds.
    fn refill_ahead(
        &self,
        reservations: &std::sync::Arc<Reservations>,
        id: &str,
        day: &str,
        quota: u64,
        now: DateTime<Utc>,
    ) {
        let block = Reservations::block(quota);
        if !reservations.start_refill_ahead(id, day, block) {
            return;
        }
        let (pool, r, name) = (self.pool.clone(), reservations.clone(), self.name.clone());
        let (id, day) = (id.to_owned(), day.to_owned());
        tokio::spawn(async move {
            let (pool_ref, id_ref, name_ref) = (&pool, id.as_str(), name.as_str());
            let done = r
                .refill_ahead(id_ref, &day, block, move |block| async move {
                    let mut c = pool_ref
                        .get()
                        .await
                        .db(&format!("cannot reach PostgreSQL for store {name_ref}"))?;
                    reserve_calls(&mut c, id_ref, quota, block, now).await
                })
                .await;
            if let Err(e) = done {
                tracing::warn!(
                    "store {name}: reserving calls of key {id} ahead failed (its next verify reserves them itself): {e}"
                );
            }
        });
    }

    /// This instance changed `id` (committed): forget it at once, before the notification.
    fn changed(&self, id: &str) {
        if let Some((c, _)) = &self.cache {
            c.forget(id);
        }
    }

    /// The PostgreSQL schema holding this store.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The connection pool (search path set to the store's schema), for the server's
    /// tables that live beside the store's (idempotency records).
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .db(&format!("cannot reach PostgreSQL for store {}", self.name))
    }

    /// Register a key as if it had been made in a vendor console (see
    /// `SqliteStore::insert_unmanaged`): listed as unmanaged, refused by every mutating
    /// call until adopted.
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
        let mut c = self.client().await?;
        let tx = c.transaction().await.db("begin")?;
        let row = tx
            .query_opt(
                "DELETE FROM locks WHERE slot = 1 RETURNING id, holder, expires_at",
                &[],
            )
            .await
            .db("remove lease")?;
        let lease = match row {
            None => None,
            Some(r) => {
                let lease = Lease {
                    id: get(&r, 0, "locks.id")?,
                    holder: get(&r, 1, "locks.holder")?,
                    expires_at: time(&r, 2, "locks.expires_at")?,
                };
                let actor = Actor {
                    who: "force-unlock".into(),
                    commit: None,
                };
                let detail = json!({ "holder": lease.holder, "expires_at": ts(&lease.expires_at) });
                append_event(&tx, &actor, "lock_force_release", None, None, &detail).await?;
                Some(lease)
            }
        };
        tx.commit().await.db("commit")?;
        Ok(lease)
    }

    async fn insert(&self, key: NewKey, by: Writer<'_>, action: &str) -> StoreResult<LiveKey> {
        let key = rules::validate_new(key)?;
        let mut c = self.client().await?;
        let tx = c.transaction().await.db("begin")?;
        check_lease(&tx, by.lease).await?;
        let live = self.insert_in(&tx, key, by.actor, action).await?;
        tx.commit().await.db("commit")?;
        Ok(live)
    }

    /// Insert one validated new key and its event inside the caller's transaction.
    async fn insert_in(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        key: NewKey,
        actor: &Actor,
        action: &str,
    ) -> StoreResult<LiveKey> {
        let mac = self.pepper.mac(&key.secret_hash)?;
        let stored = rules::new_stored(key, mac, Utc::now());
        let values = key_params(&stored)?;
        let insert = format!(
            "{} ON CONFLICT (id) DO NOTHING RETURNING id",
            row::insert_sql(&POSTGRES)
        );
        let st = tx.prepare_cached(&insert).await.db("prepare insert")?;
        if tx
            .query_opt(&st, &params(&values))
            .await
            .db("insert key")?
            .is_none()
        {
            return Err(StoreError::AlreadyExists(stored.key.id));
        }
        let k = &stored.key;
        let detail = rules::create_detail(k);
        append_event(tx, actor, action, Some(&k.id), Some(&k.name), &detail).await?;
        Ok(stored.key)
    }

    /// Lock key `id` (`FOR UPDATE`), check `version` and let `op` change it; bumps the
    /// version and appends the event in the same transaction.
    async fn mutate<F>(&self, w: KeyWrite<'_>, op: F) -> StoreResult<LiveKey>
    where
        F: FnOnce(&mut StoredKey) -> StoreResult<rules::Change> + Send,
    {
        let mut c = self.client().await?;
        let tx = c.transaction().await.db("begin")?;
        check_lease(&tx, w.lease).await?;
        let mut stored = load_checked(&tx, w.id, w.version).await?;
        let Some((action, detail)) = op(&mut stored)? else {
            return Ok(stored.key);
        };
        rules::bump(&mut stored.key, Utc::now())?;
        update_row(&tx, &stored).await?;
        let k = &stored.key;
        append_event(&tx, w.actor, action, Some(&k.id), Some(&k.name), &detail).await?;
        tx.commit().await.db("commit")?;
        self.changed(&stored.key.id);
        Ok(stored.key)
    }

    /// Count one successful call against the key's daily quota (UTC days): one atomic
    /// upsert, so concurrent verifiers on any number of instances never exceed it.
    async fn count_call<C: GenericClient>(
        c: &C,
        id: &str,
        quota: u64,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        if quota == 0 {
            return Ok(false);
        }
        let st = c
            .prepare_cached(
                "INSERT INTO quota_usage (key_id, day, calls) VALUES ($1, $2, 1) \
                 ON CONFLICT (key_id, day) DO UPDATE SET calls = quota_usage.calls + 1 \
                 WHERE quota_usage.calls < $3 RETURNING calls",
            )
            .await
            .db("prepare quota")?;
        let quota = i64::try_from(quota).unwrap_or(i64::MAX);
        let row = c
            .query_opt(&st, &[&id, &rules::quota_day(&now), &quota])
            .await
            .db("count call")?;
        let Some(row) = row else {
            return Ok(false);
        };
        let calls: i64 = get(&row, 0, "calls")?;
        if calls == 1
            && let Some(oldest) = rules::quota_prune_before(&now)
        {
            // First call of the day for this key: prune every old counter.
            c.execute("DELETE FROM quota_usage WHERE day < $1", &[&oldest])
                .await
                .db("prune quota counters")?;
        }
        Ok(true)
    }
}

/// Create the schema if needed and apply pending migrations under an advisory lock, in one
/// transaction; load (or, for a new schema, create) the pepper and check it belongs here.
async fn migrate(pool: &Pool, name: &str, opts: &PostgresOptions) -> StoreResult<Pepper> {
    let mut c = pool
        .get()
        .await
        .db(&format!("cannot connect to PostgreSQL for store {name}"))?;
    let tx = c.transaction().await.db("begin migration")?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&migration_lock_key(&opts.schema)],
    )
    .await
    .db("take the migration lock")?;
    let exists = tx
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1",
            &[&opts.schema],
        )
        .await
        .db("look up schema")?
        .is_some();
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA {}", opts.schema))
            .await
            .db(&format!("cannot create schema {}", opts.schema))?;
    }
    tx.batch_execute(schema::VERSION_TABLE)
        .await
        .db("create the schema version table")?;
    let current: i32 = tx
        .query_opt("SELECT version FROM keyward_schema WHERE slot = 1", &[])
        .await
        .db("read schema version")?
        .map(|r| get(&r, 0, "keyward_schema.version"))
        .transpose()?
        .unwrap_or(0);
    let current = u32::try_from(current)
        .map_err(|_| StoreError::Backend(format!("invalid schema version {current}")))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Refused(format!(
            "schema {} has version {current} but this keyward only knows up to \
             {SCHEMA_VERSION}; upgrade keyward (the database was not changed)",
            opts.schema
        )));
    }
    let pepper = match pepper::load(&opts.pepper_file)? {
        Some(p) => p,
        None if current > 0 => {
            return Err(StoreError::Refused(format!(
                "schema {} exists but its pepper file {} is missing; restore the pepper from \
                 a backup (without it no stored secret can be verified)",
                opts.schema,
                opts.pepper_file.display()
            )));
        }
        None => pepper::create(&opts.pepper_file)?,
    };
    for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(current as usize) {
        let to = i + 1;
        tx.batch_execute(sql)
            .await
            .map_err(|e| pg_error(&format!("schema migration to version {to} failed"), &e))?;
    }
    if current < SCHEMA_VERSION {
        tx.execute(
            "INSERT INTO keyward_schema (slot, version, updated_at) VALUES (1, $1, $2) \
             ON CONFLICT (slot) DO UPDATE SET version = EXCLUDED.version, \
             updated_at = EXCLUDED.updated_at",
            &[&(SCHEMA_VERSION as i32), &ts(&Utc::now())],
        )
        .await
        .db("record schema version")?;
    }
    check_pepper(&tx, &pepper, &opts.pepper_file).await?;
    tx.commit().await.db("commit migration")?;
    Ok(pepper)
}

/// Store the pepper's fingerprint on first connect; refuse a pepper from another store.
async fn check_pepper<C: GenericClient>(c: &C, pepper: &Pepper, path: &Path) -> StoreResult<()> {
    let check = pepper.check_value()?;
    c.execute(
        "INSERT INTO meta (key, value) VALUES ('pepper_check', $1) ON CONFLICT (key) DO NOTHING",
        &[&check],
    )
    .await
    .db("record pepper fingerprint")?;
    let stored: String = c
        .query_one("SELECT value FROM meta WHERE key = 'pepper_check'", &[])
        .await
        .db("read pepper fingerprint")
        .and_then(|r| get(&r, 0, "meta.value"))?;
    if !bool::from(stored.as_bytes().ct_eq(check.as_bytes())) {
        return Err(StoreError::Refused(format!(
            "pepper file {} does not belong to this store; restore the right one",
            path.display()
        )));
    }
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        rules::capabilities()
    }

    async fn list(&self, filter: &ListFilter, at: PageAt<'_>) -> StoreResult<Page<LiveKey>> {
        let PageAt { cursor, limit } = at;
        let limit = limit.clamp(1, MAX_PAGE);
        let (sql, args) = row::list_query(&POSTGRES, filter, cursor, limit)?;
        let args: Vec<Param> = args.into_iter().map(param).collect();
        let c = self.client().await?;
        let st = c.prepare_cached(&sql).await.db("prepare list")?;
        let rows = c.query(&st, &params(&args)).await.db("list keys")?;
        let items = rows
            .iter()
            .map(row::key_from)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(row::page(items, limit))
    }

    async fn get(&self, id: &str) -> StoreResult<Option<LiveKey>> {
        let c = self.client().await?;
        Ok(load(&c, id, false).await?.map(|s| s.key))
    }

    async fn create(&self, key: NewKey, by: Writer<'_>) -> StoreResult<LiveKey> {
        self.insert(key, by, "create").await
    }

    /// Every key in one transaction: all or none (an invalid key or an id clash rolls the
    /// batch back), one `create` event per key as `create` records it.
    async fn create_batch(&self, keys: Vec<NewKey>, by: Writer<'_>) -> StoreResult<Vec<LiveKey>> {
        let keys = keys
            .into_iter()
            .map(rules::validate_new)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut c = self.client().await?;
        let tx = c.transaction().await.db("begin")?;
        check_lease(&tx, by.lease).await?;
        let mut live = Vec::with_capacity(keys.len());
        for key in keys {
            live.push(self.insert_in(&tx, key, by.actor, "create").await?);
        }
        tx.commit().await.db("commit")?;
        Ok(live)
    }

    async fn update(&self, w: KeyWrite<'_>, patch: KeyPatch) -> StoreResult<LiveKey> {
        self.mutate(w, move |s| rules::update_change(&mut s.key, patch))
            .await
    }

    async fn rotate(&self, w: KeyWrite<'_>, rotate: Rotate) -> StoreResult<LiveKey> {
        rules::check_rotate(&rotate)?;
        let mac = self.pepper.mac(&rotate.secret_hash)?;
        self.mutate(w, move |s| rules::rotate_change(s, rotate, mac))
            .await
    }

    async fn set_status(&self, w: KeyWrite<'_>, to: KeyStatus) -> StoreResult<LiveKey> {
        self.mutate(w, move |s| rules::status_change(&mut s.key, to))
            .await
    }

    async fn delete(&self, w: KeyWrite<'_>) -> StoreResult<()> {
        let (id, actor) = (w.id, w.actor);
        let mut c = self.client().await?;
        let tx = c.transaction().await.db("begin")?;
        check_lease(&tx, w.lease).await?;
        let s = load_checked(&tx, id, w.version).await?;
        let detail = rules::delete_detail(&s.key)?;
        tx.execute("DELETE FROM keys WHERE id = $1", &[&id])
            .await
            .db("delete key")?;
        tx.execute("DELETE FROM quota_usage WHERE key_id = $1", &[&id])
            .await
            .db("delete quota counters")?;
        append_event(&tx, actor, "delete", Some(id), Some(&s.key.name), &detail).await?;
        tx.commit().await.db("commit")?;
        self.changed(id);
        Ok(())
    }

    async fn lock(&self, holder: &str, ttl: chrono::Duration) -> StoreResult<Lease> {
        // Refuse bad arguments before touching the database.
        rules::lease_expiry(holder, ttl, Utc::now())?;
        let c = self.client().await?;
        let acquire = c
            .prepare_cached(
                "INSERT INTO locks (slot, id, holder, acquired_at, expires_at) \
                 VALUES (1, $1, $2, $3, $4) \
                 ON CONFLICT (slot) DO UPDATE SET id = EXCLUDED.id, holder = EXCLUDED.holder, \
                 acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at \
                 WHERE locks.expires_at <= EXCLUDED.acquired_at \
                 RETURNING id",
            )
            .await
            .db("prepare lock")?;
        // The holder may release between the failed take and the read: try again then.
        for _ in 0..3 {
            // The database's clock judges expiry, so instances with skewed clocks agree.
            let now: DateTime<Utc> = c
                .query_one("SELECT clock_timestamp()", &[])
                .await
                .db("read the database clock")
                .and_then(|r| get(&r, 0, "clock_timestamp"))?;
            let expires_at = rules::lease_expiry(holder, ttl, now)?;
            let lease = Lease {
                id: rules::new_lease_id(),
                holder: holder.to_owned(),
                expires_at,
            };
            let taken = c
                .query_opt(
                    &acquire,
                    &[&lease.id, &lease.holder, &ts(&now), &ts(&lease.expires_at)],
                )
                .await
                .db("take lease")?;
            if taken.is_some() {
                return Ok(lease);
            }
            let current = c
                .query_opt(
                    "SELECT id, holder, expires_at FROM locks WHERE slot = 1",
                    &[],
                )
                .await
                .db("read lease")?;
            if let Some(r) = current {
                let until = time(&r, 2, "locks.expires_at")?;
                if until > now {
                    return Err(StoreError::Locked {
                        holder: get(&r, 1, "locks.holder")?,
                        id: get(&r, 0, "locks.id")?,
                        until,
                    });
                }
            }
        }
        Err(StoreError::Backend(
            "the lease changed hands repeatedly; try again".into(),
        ))
    }

    async fn unlock(&self, lease_id: &str) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute("DELETE FROM locks WHERE slot = 1 AND id = $1", &[&lease_id])
            .await
            .db("remove lease")?;
        Ok(())
    }

    /// Judged by the database's clock, in one transaction holding the lock row.
    async fn renew(&self, lease_id: &str, ttl: chrono::Duration) -> StoreResult<Lease> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.db("begin")?;
        let r = tx
            .query_opt(
                "SELECT id, holder, expires_at, clock_timestamp() FROM locks WHERE slot = 1 FOR UPDATE",
                &[],
            )
            .await
            .db("read lease")?;
        let (held, now) = match r {
            Some(r) => (
                Some((
                    get(&r, 0, "locks.id")?,
                    get(&r, 1, "locks.holder")?,
                    time(&r, 2, "locks.expires_at")?,
                )),
                get(&r, 3, "clock_timestamp")?,
            ),
            None => (None, Utc::now()),
        };
        let lease = rules::renewed(held, lease_id, ttl, now)?;
        tx.execute(
            "UPDATE locks SET expires_at = $1 WHERE slot = 1 AND id = $2",
            &[&ts(&lease.expires_at), &lease.id],
        )
        .await
        .db("renew lease")?;
        tx.commit().await.db("commit")?;
        Ok(lease)
    }

    async fn verify(&self, presented: &str, now: DateTime<Utc>) -> StoreResult<Verdict> {
        let Some(parsed) = secret::parse(presented) else {
            return Ok(verdict(VerifyReason::Malformed));
        };
        let mac = self.pepper.mac(&secret::hash_presented(presented.trim()))?;
        let Some(s) = self.verify_record(&parsed.id).await? else {
            return Ok(verdict(VerifyReason::Unknown));
        };
        if let Err(reason) = rules::judge(&s, &mac, now) {
            return Ok(verdict(reason));
        }
        let day = rules::quota_day(&now);
        let budget = self
            .gate
            .current(|| async {
                let c = self.client().await?;
                budget::load(&c).await
            })
            .await?;
        let scopes = budget
            .as_deref()
            .map(|b| b.scopes_for(&s.key.labels))
            .unwrap_or_default();
        let spent = self.gate.spend(&scopes, &day, |scope, daily, block| {
            let day = day.clone();
            async move {
                let mut c = self.client().await?;
                budget::reserve(&mut c, &scope, &day, daily, block).await
            }
        });
        if !spent.await? {
            return Ok(verdict(VerifyReason::BudgetExceeded));
        }
        let counted = match (s.key.quota_per_day, &self.reservations) {
            (None, _) => true,
            (Some(quota), None) => {
                let c = self.client().await?;
                PostgresStore::count_call(&c, &s.key.id, quota, now).await?
            }
            (Some(quota), Some(reservations)) => {
                let id = s.key.id.as_str();
                let counted = reservations
                    .take_or_reserve(id, &day, quota, |block| async move {
                        let mut c = self.client().await?;
                        reserve_calls(&mut c, id, quota, block, now).await
                    })
                    .await?;
                if counted {
                    self.refill_ahead(reservations, id, &day, quota, now);
                }
                counted
            }
        };
        if !counted {
            self.gate.put_back(&scopes, &day);
            return Ok(verdict(VerifyReason::QuotaExceeded));
        }
        Ok(rules::ok_verdict(s.key.clone()))
    }

    async fn budget(&self) -> StoreResult<Option<super::budget::Budget>> {
        let c = self.client().await?;
        budget::load(&c).await
    }

    async fn set_budget(
        &self,
        b: Option<&super::budget::Budget>,
        actor: &Actor,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.db("begin")?;
        let before = budget::save(&tx, b).await?;
        let say = |b: Option<&super::budget::Budget>| {
            b.map_or_else(|| "none".to_owned(), super::budget::Budget::describe)
        };
        let detail = json!({ "from": say(before.as_ref()), "to": say(b) });
        append_event(&tx, actor, super::budget::EVENT_SET, None, None, &detail).await?;
        tx.commit().await.db("commit")?;
        self.gate.forget();
        Ok(())
    }

    async fn budget_spent(&self, day: &str) -> StoreResult<Vec<super::budget::Spent>> {
        let c = self.client().await?;
        budget::spent(&c, day).await
    }

    async fn claim_alert(&self, alert: &super::budget::Alert, claim: bool) -> StoreResult<bool> {
        let c = self.client().await?;
        budget::claim(&c, alert, claim).await
    }

    async fn add_usage(&self, rows: &[super::usage::UsageRow]) -> StoreResult<()> {
        let c = self.client().await?;
        usage::add(&c, rows).await
    }

    async fn usage(&self, since: &str) -> StoreResult<Option<super::usage::Usage>> {
        let c = self.client().await?;
        usage::read(&c, since).await.map(Some)
    }

    async fn events(&self, after: Option<i64>, limit: usize) -> StoreResult<Vec<Event>> {
        let limit = limit.clamp(1, MAX_PAGE) as i64;
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"
            ))
            .await
            .db("prepare events")?;
        let rows = c
            .query(&st, &[&after.unwrap_or(i64::MIN), &limit])
            .await
            .db("read events")?;
        rows.iter().map(row::event_from).collect()
    }

    async fn record(&self, action: &str, detail: Value, actor: &Actor) -> StoreResult<()> {
        rules::check_record(action, &detail)?;
        let c = self.client().await?;
        append_event(&c, actor, action, None, None, &detail).await
    }

    async fn close(&self) -> StoreResult<()> {
        let unused_budget = self.gate.drain();
        if !unused_budget.is_empty() {
            let c = self.client().await?;
            budget::give_back(&c, &unused_budget).await?;
        }
        let Some(reservations) = &self.reservations else {
            return Ok(());
        };
        let unused = reservations.drain();
        if unused.is_empty() {
            return Ok(());
        }
        let c = self.client().await?;
        for (id, day, left) in unused {
            let left = i64::try_from(left).unwrap_or(i64::MAX);
            c.execute(
                "UPDATE quota_usage SET calls = GREATEST(calls - $3, 0) \
                 WHERE key_id = $1 AND day = $2",
                &[&id, &day, &left],
            )
            .await
            .db("return unused quota reservations")?;
        }
        Ok(())
    }
}

/// Reserve up to `block` calls of a key's daily quota in one transaction (the counter row
/// locked `FOR UPDATE`, so instances never reserve more than `quota` between them); returns
/// how many were granted, 0 when the quota is used up.
async fn reserve_calls(
    c: &mut deadpool_postgres::Object,
    id: &str,
    quota: u64,
    block: u64,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    if quota == 0 {
        return Ok(0);
    }
    let day = rules::quota_day(&now);
    let tx = c.transaction().await.db("begin reservation")?;
    tx.execute(
        "INSERT INTO quota_usage (key_id, day, calls) VALUES ($1, $2, 0) \
         ON CONFLICT (key_id, day) DO NOTHING",
        &[&id, &day],
    )
    .await
    .db("open quota counter")?;
    let row = tx
        .query_one(
            "SELECT calls FROM quota_usage WHERE key_id = $1 AND day = $2 FOR UPDATE",
            &[&id, &day],
        )
        .await
        .db("read quota counter")?;
    let used: i64 = get(&row, 0, "calls")?;
    let used = u64::try_from(used).unwrap_or(0);
    let grant = block.min(quota.saturating_sub(used));
    if grant > 0 {
        let add = i64::try_from(grant).unwrap_or(i64::MAX);
        tx.execute(
            "UPDATE quota_usage SET calls = calls + $3 WHERE key_id = $1 AND day = $2",
            &[&id, &day, &add],
        )
        .await
        .db("reserve calls")?;
        if used == 0
            && let Some(oldest) = rules::quota_prune_before(&now)
        {
            tx.execute("DELETE FROM quota_usage WHERE day < $1", &[&oldest])
                .await
                .db("prune quota counters")?;
        }
    }
    tx.commit().await.db("commit reservation")?;
    Ok(grant)
}
