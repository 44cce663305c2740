//! Live key stores: the `Store` trait, the records it exchanges, and the implementations
//! (`sqlite` embedded, `postgres` for several service instances). Stores never see a plaintext secret: only `SecretHash` values.
//! This module must not know about specs, plans or deliveries.

pub mod http;
mod pepper;
pub mod postgres;
pub(crate) mod quota;
pub(crate) mod rules;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The marker written on every key keyward creates.
pub const MANAGED_BY: &str = "keyward";

/// Status of a live key.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Disabled,
    Revoked,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Disabled => "disabled",
            KeyStatus::Revoked => "revoked",
        }
    }
    pub fn parse(s: &str) -> Option<KeyStatus> {
        match s {
            "active" => Some(KeyStatus::Active),
            "disabled" => Some(KeyStatus::Disabled),
            "revoked" => Some(KeyStatus::Revoked),
            _ => None,
        }
    }
}

/// A key as the store holds it. Never contains a secret or a hash of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveKey {
    pub id: String,
    pub name: String,
    pub environment: String,
    pub owner: String,
    pub purpose: Option<String>,
    /// `area:level` strings, normalised and sorted.
    pub scopes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub status: KeyStatus,
    /// When the current secret was issued (creation or last rotation).
    pub issued_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Lifetime from the spec (e.g. "90d") when expiry is relative; kept so plans stay stable.
    pub lifetime: Option<String>,
    /// Optimistic concurrency version, bumped on every change.
    pub version: u64,
    /// Delivery generation of the current secret (1 for a new key, +1 per rotation).
    pub generation: u32,
    /// The spec's `rotation.generation` as of the last create/rotate.
    pub spec_generation: u32,
    /// When the previous secret stops verifying (rotation grace), if any.
    pub previous_valid_until: Option<DateTime<Utc>>,
    /// Recipients of the current secret: principal id -> fingerprint of their public keys.
    pub recipients: BTreeMap<String, String>,
    pub quota_per_day: Option<u64>,
    pub protected: bool,
    /// `Some("keyward")` for keys keyward manages; None (or another tool's name) otherwise.
    pub managed_by: Option<String>,
    /// `state_digest()` of the key as keyward last left it; a live key whose digest differs
    /// was changed outside keyward (drift). None for keys keyward has not written yet.
    #[serde(default)]
    pub applied_digest: Option<String>,
}

impl LiveKey {
    /// Digest of the fields a spec controls (and that a console could edit): compared with
    /// `applied_digest` to tell drift from spec changes. Versions and timestamps of
    /// bookkeeping are not part of it.
    pub fn is_managed(&self) -> bool {
        self.managed_by.as_deref() == Some(MANAGED_BY)
    }

    pub fn state_digest(&self) -> String {
        state_digest(&serde_json::json!([
            self.name,
            self.environment,
            self.owner,
            self.purpose,
            self.scopes,
            self.labels,
            self.status,
            self.expires_at.map(|t| t.timestamp()),
            self.quota_per_day,
            self.protected,
        ]))
    }
}

fn state_digest(fields: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(fields.to_string().as_bytes())[..12])
}

impl NewKey {
    /// The `LiveKey::state_digest` the key will have once created from this record.
    pub fn state_digest(&self) -> String {
        let mut scopes = self.scopes.clone();
        scopes.sort();
        scopes.dedup();
        state_digest(&serde_json::json!([
            self.name,
            self.environment,
            self.owner,
            self.purpose,
            scopes,
            self.labels,
            self.status,
            self.expires_at.map(|t| t.timestamp()),
            self.quota_per_day,
            self.protected,
        ]))
    }
}

/// Hex SHA-256 of a secret: the only form in which a secret reaches a store.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretHash(pub String);

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(<redacted>)")
    }
}

/// What keyward registers for a new key. `id` is chosen by the client (it is part of the
/// secret's format), the secret is represented by its hash only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewKey {
    pub id: String,
    pub name: String,
    pub environment: String,
    pub owner: String,
    pub purpose: Option<String>,
    pub scopes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub status: KeyStatus,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub lifetime: Option<String>,
    pub generation: u32,
    pub spec_generation: u32,
    pub recipients: BTreeMap<String, String>,
    pub quota_per_day: Option<u64>,
    pub protected: bool,
    pub managed_by: Option<String>,
    /// See `LiveKey::applied_digest`.
    #[serde(default)]
    pub applied_digest: Option<String>,
    pub secret_hash: SecretHash,
}

/// In-place changes. `None` = leave as is. For optional fields, `Some(None)` clears.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyPatch {
    pub purpose: Option<Option<String>>,
    pub scopes: Option<Vec<String>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub lifetime: Option<Option<String>>,
    pub recipients: Option<BTreeMap<String, String>>,
    pub quota_per_day: Option<Option<u64>>,
    pub protected: Option<bool>,
    pub managed_by: Option<Option<String>>,
    pub owner: Option<String>,
    /// Record the state keyward left the key in (see `LiveKey::applied_digest`).
    #[serde(default)]
    pub applied_digest: Option<String>,
}

impl KeyPatch {
    pub fn is_empty(&self) -> bool {
        *self == KeyPatch::default()
    }
}

/// A rotation: new secret for the same id; the previous one keeps verifying until
/// `previous_valid_until`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rotate {
    pub secret_hash: SecretHash,
    pub previous_valid_until: Option<DateTime<Utc>>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub generation: u32,
    pub spec_generation: u32,
    pub recipients: BTreeMap<String, String>,
}

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

/// Who does a change, and from which commit: recorded in events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Actor {
    pub who: String,
    pub commit: Option<String>,
}

/// One audit event. Never holds a secret or a hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub who: String,
    pub action: String,
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    pub commit: Option<String>,
    /// Free-form, non-secret details (JSON).
    pub detail: serde_json::Value,
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
    #[error("refused: {0}")]
    Refused(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("store backend error: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A live key store. Implementations: `sqlite::SqliteStore` (embedded).
/// All mutating calls take the `version` the caller saw and fail with `Conflict` on mismatch.
#[async_trait]
pub trait Store: Send + Sync {
    /// The store's name in keyward.yaml.
    fn name(&self) -> &str;
    fn capabilities(&self) -> Capabilities;
    /// One page of keys matching `filter` (managed and unmanaged unless filtered).
    async fn list(
        &self,
        filter: &ListFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page<LiveKey>>;
    async fn get(&self, id: &str) -> StoreResult<Option<LiveKey>>;
    async fn create(&self, key: NewKey, actor: &Actor) -> StoreResult<LiveKey>;
    async fn update(
        &self,
        id: &str,
        version: u64,
        patch: KeyPatch,
        actor: &Actor,
    ) -> StoreResult<LiveKey>;
    async fn rotate(
        &self,
        id: &str,
        version: u64,
        rotate: Rotate,
        actor: &Actor,
    ) -> StoreResult<LiveKey>;
    async fn disable(&self, id: &str, version: u64, actor: &Actor) -> StoreResult<LiveKey>;
    async fn enable(&self, id: &str, version: u64, actor: &Actor) -> StoreResult<LiveKey>;
    async fn revoke(&self, id: &str, version: u64, actor: &Actor) -> StoreResult<LiveKey>;
    async fn delete(&self, id: &str, version: u64, actor: &Actor) -> StoreResult<()>;
    /// Take the apply lease; fails with `Locked` naming the holder when someone has it.
    async fn lock(&self, holder: &str, ttl: chrono::Duration) -> StoreResult<Lease>;
    async fn unlock(&self, lease_id: &str) -> StoreResult<()>;
    /// Check a presented secret (the full `kw_...` string). Counts quota on success.
    async fn verify(&self, presented: &str, now: DateTime<Utc>) -> StoreResult<Verdict>;
    /// Audit events after `after` (exclusive), oldest first.
    async fn events(&self, after: Option<i64>, limit: usize) -> StoreResult<Vec<Event>>;
    /// Record a non-key event (e.g. an apply started/finished).
    async fn record(
        &self,
        action: &str,
        detail: serde_json::Value,
        actor: &Actor,
    ) -> StoreResult<()>;
    /// Give back what this process holds before it stops (a serving store's unused quota
    /// reservations). Stores that hold nothing keep the default.
    async fn close(&self) -> StoreResult<()> {
        Ok(())
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
        let page = store.list(filter, cursor.as_deref(), 1000).await?;
        out.extend(page.items);
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(out)
}
