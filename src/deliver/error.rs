//! `DeliverError`: every way delivery can fail, each message naming the file involved and
//! what to do. Must never carry key material or a secret: age messages are cleaned of
//! isolation marks, file contents are never quoted, JSON errors keep only line/column.

use std::path::PathBuf;

use crate::recipient::RecipientError;

/// Why a delivery operation failed. Messages say which file and what to do; none contains
/// a secret, an identity or any file contents.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("recipient #{index} of `{principal}` cannot be used: {source}; fix it in people.yaml")]
    Recipient {
        principal: String,
        index: usize,
        #[source]
        source: RecipientError,
    },

    #[error(
        "`{principal}` has no recipients to seal to; add an age or SSH public key in people.yaml"
    )]
    NoRecipients { principal: String },

    #[error(
        "refusing to deliver key `{key}` to nobody: a secret no one can read must never exist; give the key at least one recipient"
    )]
    NoEnvelopes { key: String },

    #[error("age could not encrypt: {0}")]
    Encrypt(String),

    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is not a usable delivery manifest: {message}; restore it from git (`git checkout -- {}`)", path.display(), path.display())]
    Manifest { path: PathBuf, message: String },

    #[error("{} could not be decrypted: {message}", path.display())]
    Decrypt { path: PathBuf, message: String },

    #[error("{} decrypted, but is not a keyward envelope ({message}); it may be an unrelated age file", path.display())]
    NotAnEnvelope { path: PathBuf, message: String },

    #[error(
        "no identity matches: {} is for {for_whom} (fingerprints {}); tried {}{}. \
         Pass the right key with `-i FILE` or KEYWARD_AGE_IDENTITY_FILE, or ask an admin to add your public key to people.yaml",
        path.display(),
        if fingerprints.is_empty() { "unknown".to_string() } else { fingerprints.join(", ") },
        if tried.is_empty() { "no identities".to_string() } else { tried.join(", ") },
        if notes.is_empty() { String::new() } else { format!(" (note: {})", notes.join("; ")) }
    )]
    NoMatchingIdentity {
        path: PathBuf,
        /// The principal the envelope is for, when its manifest says so.
        for_whom: String,
        fingerprints: Vec<String>,
        /// Fingerprints (and where they came from) of the identities that were tried.
        tried: Vec<String>,
        notes: Vec<String>,
    },

    #[error(
        "no age identity found (searched: {}){}. Use `-i FILE`, set KEYWARD_AGE_IDENTITY_FILE, or create one with `keyward keygen`",
        searched.join(", "),
        if notes.is_empty() { String::new() } else { format!("; note: {}", notes.join("; ")) }
    )]
    NoIdentities {
        searched: Vec<String>,
        notes: Vec<String>,
    },

    #[error("identity {origin} cannot be used: {message}")]
    Identity { origin: String, message: String },

    #[error("{} has been modified or corrupted: its sha256 does not match manifest.json; restore it from git", path.display())]
    Checksum { path: PathBuf },

    #[error("{} does not belong here: its {field} is `{found}` but manifest.json says `{expected}` (a swapped or misplaced file); restore it from git", path.display())]
    Mismatch {
        path: PathBuf,
        field: &'static str,
        expected: String,
        found: String,
    },

    #[error("{} is not listed in the manifest next to it; it is not a keyward delivery of this generation", path.display())]
    NotInManifest { path: PathBuf },

    #[error("{} already exists; refusing to overwrite it (move it away or choose another path)", path.display())]
    AlreadyExists { path: PathBuf },

    #[error(
        "{} already holds a delivery of key {key_id} with status {status}; a delivered secret is never overwritten (bump the generation to rotate)",
        dir.display()
    )]
    AlreadyDelivered {
        dir: PathBuf,
        key_id: String,
        status: String,
    },

    #[error(
        "cannot mark the delivery in {} {to}: it is {from} (allowed: pending -> active or void, active -> superseded); a void delivery's secret never worked, so issue a new generation instead",
        dir.display()
    )]
    InvalidTransition {
        dir: PathBuf,
        from: String,
        to: String,
    },

    #[error(
        "{what} `{value}` cannot be used as a file name in the outbox (use letters, digits, `-`, `_`, `.`)"
    )]
    UnsafeName { what: &'static str, value: String },

    #[error(
        "no active delivery of {key} in {}: the key has not been applied yet, or its delivery is still pending; `git pull` the deliveries or ask an admin to run `keyward apply`",
        dir.display()
    )]
    NoDelivery { key: String, dir: PathBuf },

    #[error("internal delivery error: {0}")]
    Internal(String),
}

impl DeliverError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        DeliverError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Describe a serde_json error without quoting any of the input (which may be a secret).
pub(crate) fn json_error_summary(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "read error",
        Category::Syntax => "invalid JSON",
        Category::Data => "unexpected or missing field",
        Category::Eof => "truncated JSON",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}
