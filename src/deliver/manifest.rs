//! The manifest model: `manifest.json` of one generation of one key (`Manifest`, its
//! recipients and `DeliveryStatus`), read and written as JSON, and the plain-name rule for
//! the names that become path components.
//! Must not seal, decrypt or walk the outbox: `seal` and `outbox` both build on it.

use std::fs;
use std::path::Path;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::DeliverError;
use super::fsio::{MODE_PUBLIC, write_atomic};
use crate::spec::model::PrincipalKind;

/// File name of the manifest in each `g<N>` directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// `manifest_version` written and accepted.
pub const MANIFEST_VERSION: u32 = 1;

/// Where a delivery stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Written, but the key is not (yet) registered with the store: not valid.
    Pending,
    /// The store accepts this generation's secret.
    Active,
    /// The key was never registered (or a pending write was abandoned): envelopes deleted.
    Void,
    /// Replaced by a newer active generation (or an older key's manifest kept for audit).
    Superseded,
    /// The key was revoked: its secret no longer verifies.
    Revoked,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Active => "active",
            DeliveryStatus::Void => "void",
            DeliveryStatus::Superseded => "superseded",
            DeliveryStatus::Revoked => "revoked",
        }
    }

    pub(super) fn may_become(self, to: DeliveryStatus) -> bool {
        use DeliveryStatus::*;
        self == to
            || matches!(
                (self, to),
                (Pending, Active)
                    | (Pending, Void)
                    | (Active, Superseded)
                    | (Active, Revoked)
                    | (Superseded, Revoked)
            )
    }
}

impl DeliveryStatus {
    /// What a recipient opening a delivery in this status should be told, if anything.
    pub fn warning(self) -> Option<&'static str> {
        match self {
            DeliveryStatus::Active => None,
            DeliveryStatus::Pending => Some(
                "this delivery is pending: its key is not registered with the store, so the secret does not work (yet)",
            ),
            DeliveryStatus::Void => {
                Some("this delivery is void: its key was never registered; the secret never worked")
            }
            DeliveryStatus::Superseded => Some(
                "this delivery is superseded by a newer generation; its secret works at most until the rotation grace ends",
            ),
            DeliveryStatus::Revoked => {
                Some("this delivery's key was revoked: the secret no longer verifies")
            }
        }
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kind of principal a delivery is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecipientKind {
    Person,
    Service,
}

impl RecipientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientKind::Person => "person",
            RecipientKind::Service => "service",
        }
    }
}

impl From<PrincipalKind> for RecipientKind {
    fn from(k: PrincipalKind) -> Self {
        match k {
            PrincipalKind::Person => RecipientKind::Person,
            PrincipalKind::Service => RecipientKind::Service,
        }
    }
}

/// One recipient's envelope in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ManifestRecipient {
    /// Principal id (person or service in people.yaml).
    pub id: String,
    pub kind: RecipientKind,
    /// Fingerprints of the public keys the envelope is sealed to.
    pub fingerprints: Vec<String>,
    /// Envelope file name in the same directory (`<id>.age`).
    pub file: String,
    /// Hex SHA-256 of the envelope file's bytes.
    pub sha256: String,
}

/// `manifest.json`: what one generation of one key delivered, to whom, and its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Manifest {
    pub manifest_version: u32,
    pub key_id: String,
    /// The key's name in the spec.
    pub name: String,
    pub store: String,
    pub environment: String,
    pub generation: u32,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Until when the previous generation's secret still verifies.
    pub previous_valid_until: Option<DateTime<Utc>>,
    /// The spec commit the delivery was made from, if known.
    pub commit: Option<String>,
    pub status: DeliveryStatus,
    pub recipients: Vec<ManifestRecipient>,
}

/// JSON Schema of `manifest.json` (generated from [`Manifest`]).
pub fn manifest_schema() -> serde_json::Value {
    schemars::schema_for!(Manifest).to_value()
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Manifest {
    pub fn recipient(&self, principal_id: &str) -> Option<&ManifestRecipient> {
        self.recipients.iter().find(|r| r.id == principal_id)
    }

    /// Read and check a manifest file.
    pub fn read(path: &Path) -> Result<Manifest, DeliverError> {
        let bytes = fs::read(path).map_err(|e| DeliverError::io("read", path, e))?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| DeliverError::Manifest {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if m.manifest_version != MANIFEST_VERSION {
            return Err(DeliverError::Manifest {
                path: path.to_path_buf(),
                message: format!(
                    "manifest_version {} is not supported (this keyward reads {MANIFEST_VERSION}); upgrade keyward",
                    m.manifest_version
                ),
            });
        }
        for r in &m.recipients {
            if check_name("recipient file", &r.file).is_err() || !r.file.ends_with(".age") {
                return Err(DeliverError::Manifest {
                    path: path.to_path_buf(),
                    message: format!("recipient file `{}` is not a plain `<id>.age` name", r.file),
                });
            }
        }
        Ok(m)
    }

    pub(super) fn write(&self, dir: &Path) -> Result<(), DeliverError> {
        write_json(&dir.join(MANIFEST_FILE), self)
    }
}

pub(super) fn manifest_bytes(m: &Manifest) -> Result<Vec<u8>, DeliverError> {
    let mut bytes = serde_json::to_vec_pretty(m)
        .map_err(|e| DeliverError::Internal(format!("could not serialise a manifest: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

pub(super) fn write_json(path: &Path, m: &Manifest) -> Result<(), DeliverError> {
    write_atomic(path, &manifest_bytes(m)?, MODE_PUBLIC)
}

/// A name used as a path component must be plain: letters, digits, `-`, `_`, `.`, not
/// starting with `.`, so nothing can escape the outbox or hide in it.
pub(super) fn check_name(what: &'static str, value: &str) -> Result<(), DeliverError> {
    let ok = !value.is_empty()
        && value.len() <= 200
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(DeliverError::UnsafeName {
            what,
            value: value.to_string(),
        })
    }
}
