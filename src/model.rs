//! The records observed state is made of: a live key (`LiveKey`, `KeyStatus`), what keyward
//! registers or changes (`NewKey`, `KeyPatch`, `Rotate`), the hash that stands for a secret
//! (`SecretHash`), who acted (`Actor`) and the audit trail (`Event`).
//! Plain data: must not do I/O or know about stores, specs, plans or deliveries, so that the
//! pure diff, the secret format and every store kind can depend on it.

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
    /// The action that puts a key in this status (its audit event and API path).
    pub fn verb(self) -> &'static str {
        match self {
            KeyStatus::Active => "enable",
            KeyStatus::Disabled => "disable",
            KeyStatus::Revoked => "revoke",
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
