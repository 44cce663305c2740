//! Live key stores: the `Store` trait, its queries and answers (filters, pages, leases,
//! verdicts, errors), and the implementations (`sqlite` embedded, `postgres` for several
//! service instances, `http` for a remote keyward). The key records themselves live in
//! `crate::model` (re-exported here). Stores never see a plaintext secret: only `SecretHash` values.
//! This module must not know about specs, plans or deliveries.

pub mod budget;
pub mod check;
pub(crate) mod credential;
pub mod exec;
pub mod http;
mod pepper;
pub mod pg_roles;
pub mod postgres;
pub(crate) mod quota;
pub mod redis_acl;
pub(crate) mod resp;
pub(crate) mod row;
pub(crate) mod rules;
pub mod scram;
pub mod sqlite;
pub mod usage;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::model::{
    Actor, Event, KeyPatch, KeyStatus, LiveKey, MANAGED_BY, NewKey, Rotate, SecretHash,
};

/// Filters for listing, as an admin console offers them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListFilter {
    pub owner: Option<String>,
    pub status: Option<KeyStatus>,
    pub environment: Option<String>,
    /// `key=value`
    pub label: Option<(String, String)>,
    /// Some(true): only keyward-managed; Some(false): only unmanaged.
    pub managed: Option<bool>,
    pub expiring_before: Option<DateTime<Utc>>,
    pub never_expires: bool,
}

/// One page of a listing; `next` is an opaque cursor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Which page of a listing to read: after `cursor` (None: the first page), at most `limit`
/// items (each store clamps it to what it serves at once).
#[derive(Debug, Clone, Copy)]
pub struct PageAt<'a> {
    pub cursor: Option<&'a str>,
    pub limit: usize,
}

impl PageAt<'_> {
    /// The first page of at most `limit` items.
    pub fn first(limit: usize) -> Self {
        PageAt {
            cursor: None,
            limit,
        }
    }
}

/// What a store can do, so the planner can pick the right path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capabilities {
    /// Accepts a client-computed secret hash (the safe, deliver-first path).
    pub client_secret_hash: bool,
    /// Expires keys itself (verify says `expired` without an apply).
    pub native_expiry: bool,
    /// Fields changeable in place.
    pub in_place: Vec<String>,
    /// Who makes a secret and in which form the store takes it (absent in older servers'
    /// answers: `client_hash`).
    #[serde(default)]
    pub secret: SecretMode,
    /// How expiry is enforced (absent: from `native_expiry`).
    #[serde(default)]
    pub expiry: Option<ExpiryMode>,
    /// Whether the previous secret keeps working during a rotation's grace.
    #[serde(default)]
    pub rotation_overlap: Overlap,
    /// Keys can be disabled and enabled again (absent: yes).
    #[serde(default = "yes")]
    pub disable: bool,
    /// The store counts calls against a key's `quota` when it verifies (absent: yes).
    #[serde(default = "yes")]
    pub quota: bool,
    /// The store keeps key usage (last used, calls per day) that `Store::usage` reads
    /// (absent: no; console stores cannot see it).
    #[serde(default)]
    pub usage: bool,
    /// The store enforces a shared daily budget at verify (`Store::set_budget`; absent: no).
    #[serde(default)]
    pub budget: bool,
}

fn yes() -> bool {
    true
}

impl Capabilities {
    /// How expiry is enforced, also for answers that only carry `native_expiry`.
    pub fn expiry_mode(&self) -> ExpiryMode {
        self.expiry.unwrap_or(if self.native_expiry {
            ExpiryMode::Native
        } else {
            ExpiryMode::None
        })
    }
}

/// Who makes a key's secret, and what the store receives.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SecretMode {
    /// keyward generates the secret and passes it to the store (through a pipe only).
    Client,
    /// keyward generates the secret; the store only ever gets a hash or verifier of it.
    #[default]
    ClientHash,
    /// The store generates the secret and returns it once.
    Server,
}

/// How a store enforces expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryMode {
    /// The store refuses an expired secret by itself.
    Native,
    /// keyward switches expired keys off (on apply and on the nightly run).
    Emulated,
    /// Keys never expire in this store.
    None,
}

/// Whether a rotated key's previous secret keeps working until the grace ends.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    #[default]
    Native,
    /// The old secret stops at once.
    None,
}

/// An apply lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    pub id: String,
    pub holder: String,
    pub expires_at: DateTime<Utc>,
}

/// Why a key verifies or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyReason {
    Ok,
    Unknown,
    Malformed,
    Expired,
    NotYetValid,
    Disabled,
    Revoked,
    QuotaExceeded,
    /// The store's shared daily budget is spent (`budget:` in keyward.yaml).
    BudgetExceeded,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub valid: bool,
    pub reason: VerifyReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<VerifiedKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifiedKey {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {id} changed since it was read (expected version {expected}, found {found})")]
    Conflict {
        id: String,
        expected: u64,
        found: u64,
    },
    #[error("a key with id {0} already exists")]
    AlreadyExists(String),
    #[error("the store is locked by {holder} (lease {id}, until {until})")]
    Locked {
        holder: String,
        id: String,
        until: DateTime<Utc>,
    },
    /// A change under an apply lease that is no longer held (it expired, was released, or
    /// another apply took the store since): nothing was changed.
    #[error("the apply lease {lease} is no longer held ({why}); nothing was changed")]
    LeaseLost { lease: String, why: String },
    #[error("refused: {0}")]
    Refused(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("store backend error: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Who registers new keys (`create`, `create_batch`) and under which apply lease; writes
/// to an existing key name the same two in their `KeyWrite`.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    pub actor: &'a Actor,
    /// The id of the apply lease the writer holds (None: it holds none).
    pub lease: Option<&'a str>,
}

impl<'a> Writer<'a> {
    /// A writer outside any apply lease.
    pub fn new(actor: &'a Actor) -> Self {
        Writer { actor, lease: None }
    }

    /// The same writer under the apply lease `lease` (None: none).
    pub fn under(self, lease: Option<&'a str>) -> Self {
        Writer { lease, ..self }
    }

    /// A write to key `id` at `version` by this writer, under its lease.
    pub fn key(self, id: &'a str, version: u64) -> KeyWrite<'a> {
        KeyWrite {
            id,
            version,
            actor: self.actor,
            lease: self.lease,
        }
    }
}

/// What every write to one key names: the key, the version the caller saw (a mismatch is
/// `Conflict`), who asks (recorded in the audit event) and the apply lease it holds, if any.
#[derive(Debug, Clone, Copy)]
pub struct KeyWrite<'a> {
    pub id: &'a str,
    pub version: u64,
    pub actor: &'a Actor,
    /// The id of the apply lease the writer holds (None: it holds none).
    pub lease: Option<&'a str>,
}

impl<'a> KeyWrite<'a> {
    /// A write outside any apply lease.
    pub fn new(id: &'a str, version: u64, actor: &'a Actor) -> Self {
        KeyWrite {
            id,
            version,
            actor,
            lease: None,
        }
    }

    /// The same write at another version (the one a previous write of a sequence returned).
    pub fn at(self, version: u64) -> Self {
        KeyWrite { version, ..self }
    }

    /// The same write under the apply lease `lease` (None: none).
    pub fn under(self, lease: Option<&'a str>) -> Self {
        KeyWrite { lease, ..self }
    }

    /// Who writes and under which lease, without the key.
    pub fn writer(&self) -> Writer<'a> {
        Writer {
            actor: self.actor,
            lease: self.lease,
        }
    }
}

/// A live key store (implementations: the modules of `store/`, and `console::store`).
/// Every write to an existing key takes a `KeyWrite` and fails with `Conflict` when the
/// key's version is not the one it names. Every key change (creates included, through their
/// `Writer`) is checked against the store's apply lease in the same transaction as the
/// change (`rules::check_lease`): under a lease that is not the live one, `LeaseLost`;
/// without a lease while someone holds a live one, `Locked`.
#[async_trait]
pub trait Store: Send + Sync {
    /// The store's name in keyward.yaml.
    fn name(&self) -> &str;
    fn capabilities(&self) -> Capabilities;
    /// One page of keys matching `filter` (managed and unmanaged unless filtered).
    async fn list(&self, filter: &ListFilter, at: PageAt<'_>) -> StoreResult<Page<LiveKey>>;
    async fn get(&self, id: &str) -> StoreResult<Option<LiveKey>>;
    async fn create(&self, key: NewKey, by: Writer<'_>) -> StoreResult<LiveKey>;
    /// Register several new keys at once (apply's batches), answering them in order. The
    /// SQL stores take the batch all or none, in one transaction; `http` sends it in parts
    /// of at most the server's body limit, each all or none; this default registers them
    /// one by one. The last two stop at the first failure with the earlier keys registered:
    /// a caller that gets an error asks the store (`get`) which keys it holds.
    async fn create_batch(&self, keys: Vec<NewKey>, by: Writer<'_>) -> StoreResult<Vec<LiveKey>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.create(k, by).await?);
        }
        Ok(out)
    }
    /// An in-place change of the fields a patch names.
    async fn update(&self, w: KeyWrite<'_>, patch: KeyPatch) -> StoreResult<LiveKey>;
    /// A new secret (and generation) for the key.
    async fn rotate(&self, w: KeyWrite<'_>, rotate: Rotate) -> StoreResult<LiveKey>;
    /// Disable (`Disabled`), enable (`Active`) or revoke (`Revoked`) the key; a key already
    /// in that status is no change (same version, no event).
    async fn set_status(&self, w: KeyWrite<'_>, to: KeyStatus) -> StoreResult<LiveKey>;
    async fn delete(&self, w: KeyWrite<'_>) -> StoreResult<()>;
    /// Take the apply lease; fails with `Locked` naming the holder when someone has it.
    async fn lock(&self, holder: &str, ttl: chrono::Duration) -> StoreResult<Lease>;
    async fn unlock(&self, lease_id: &str) -> StoreResult<()>;
    /// Extend the live lease `lease_id` to `ttl` from now (apply renews every third of its
    /// ttl while it runs). `LeaseLost` when that lease is not the live one any more: it
    /// expired (an expired lease is never revived, even if nobody took the store since),
    /// was released, or another apply holds the store.
    async fn renew(&self, lease_id: &str, ttl: chrono::Duration) -> StoreResult<Lease>;
    /// Check a presented secret (the full `kw_...` string). Counts quota on success.
    async fn verify(&self, presented: &str, now: DateTime<Utc>) -> StoreResult<Verdict>;
    /// Audit events after `after` (exclusive), oldest first.
    async fn events(&self, after: Option<i64>, limit: usize) -> StoreResult<Vec<Event>>;
    /// Record a non-key event (e.g. an apply started/finished).
    async fn record(&self, action: &str, detail: Value, actor: &Actor) -> StoreResult<()>;
    /// Record several non-key events, in order (notifications: what a run sent). SQLite
    /// takes them in one transaction, all or none (one fsync instead of one per event);
    /// this default records them one by one and stops at the first failure, the earlier
    /// ones recorded.
    async fn record_batch(&self, events: &[(String, Value)], actor: &Actor) -> StoreResult<()> {
        for (action, detail) in events {
            self.record(action, detail.clone(), actor).await?;
        }
        Ok(())
    }
    /// Give back what this process holds before it stops (a serving store's unused quota
    /// reservations). Stores that hold nothing keep the default.
    async fn close(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Add counted verify calls (summed into what is kept, never overwriting it, so
    /// several servers on one database add up). Stores that keep no usage refuse.
    async fn add_usage(&self, rows: &[usage::UsageRow]) -> StoreResult<()> {
        let _ = rows;
        Err(StoreError::Refused(format!(
            "store `{}` does not keep key usage",
            self.name()
        )))
    }
    /// The usage kept from `since` (a UTC day, YYYY-MM-DD) on; `None` when this store
    /// does not keep usage (say so rather than show keys as unused).
    async fn usage(&self, since: &str) -> StoreResult<Option<usage::Usage>> {
        let _ = since;
        Ok(None)
    }
    /// The shared daily budget written into this store; `None` when it has none or keeps
    /// no budget (`Capabilities::budget`).
    async fn budget(&self) -> StoreResult<Option<budget::Budget>> {
        Ok(None)
    }
    /// Write the budget verify enforces (`None` removes it), recorded as a `budget.set`
    /// event. Stores that enforce no budget refuse.
    async fn set_budget(&self, budget: Option<&budget::Budget>, actor: &Actor) -> StoreResult<()> {
        let _ = (budget, actor);
        Err(StoreError::Refused(format!(
            "store `{}` does not enforce a budget",
            self.name()
        )))
    }
    /// The calls every process together reserved of each budget scope on `day` (YYYY-MM-DD):
    /// what the budget counts as spent.
    async fn budget_spent(&self, day: &str) -> StoreResult<Vec<budget::Spent>> {
        let _ = day;
        Ok(Vec::new())
    }
    /// Claim the alert `alert` (`claim`: true), answering true for the one caller of all
    /// processes on this store that is to send it; `claim: false` gives a claim back (the
    /// send failed, a later try sends it).
    async fn claim_alert(&self, alert: &budget::Alert, claim: bool) -> StoreResult<bool> {
        let _ = (alert, claim);
        Ok(false)
    }
    /// The form in which this store takes a new secret (`NewKey::secret_hash`,
    /// `Rotate::secret_hash`): the hex SHA-256 by default; a SCRAM verifier for
    /// postgres-roles; the secret itself for `client` adapters, which get it through a pipe
    /// only (so the value is as secret as the secret: never logged, never serialised by
    /// anything but that store).
    fn secret_form(&self, secret: &crate::secret::Secret) -> StoreResult<SecretHash> {
        Ok(secret.hash())
    }
    /// What keyward does for a store that cannot do it itself, run by apply and the
    /// nightly job (emulated expiry: switch expired keys off; the end of a rotation's
    /// grace: drop the previous secret). Never changes a key's version. Returns one line
    /// per thing done.
    async fn enforce(&self, now: DateTime<Utc>) -> StoreResult<Vec<String>> {
        let _ = now;
        Ok(Vec::new())
    }
}

/// Open the store a `--database` spec names: `sqlite:PATH` (the embedded store; the file
/// and its pepper are created if missing) or `postgres://...` / `postgresql://...` (see
/// `postgres::PostgresOptions::from_url` for keyward's `schema`, `pepper_file` and
/// `pool_size` parameters). The one entry point `keyward serve` and tools use.
pub async fn open_database(name: &str, spec: &str) -> StoreResult<std::sync::Arc<dyn Store>> {
    let spec = spec.trim();
    if let Some(path) = spec.strip_prefix("sqlite:") {
        if path.is_empty() {
            return Err(StoreError::Invalid(
                "sqlite: needs a path, e.g. sqlite:.keyward/store.db".into(),
            ));
        }
        let store = sqlite::SqliteStore::open(name, std::path::Path::new(path))?;
        return Ok(std::sync::Arc::new(store));
    }
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        let store = postgres::PostgresStore::connect(name, spec).await?;
        return Ok(std::sync::Arc::new(store));
    }
    Err(StoreError::Invalid(
        "a database is `sqlite:PATH` or `postgres://USER@HOST:PORT/DB?schema=NAME&pepper_file=PATH`"
            .into(),
    ))
}

/// List every key matching `filter`, following cursors.
pub async fn list_all(store: &dyn Store, filter: &ListFilter) -> StoreResult<Vec<LiveKey>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let at = PageAt {
            cursor: cursor.as_deref(),
            limit: 1000,
        };
        let page = store.list(filter, at).await?;
        out.extend(page.items);
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(out)
}
