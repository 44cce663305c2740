//! Schema migrations of the SQLite store: an ordered list of SQL scripts, tracked with
//! `PRAGMA user_version`. Owns only the table layout; must not touch rows beyond what a
//! migration needs.

use rusqlite::{Connection, TransactionBehavior};

use super::DbResult;
use crate::store::{StoreError, StoreResult};

/// Version 1: keys, the append-only audit log, the apply lease, quota usage, meta.
const V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE keys (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    environment          TEXT NOT NULL,
    owner                TEXT NOT NULL,
    purpose              TEXT,
    scopes               TEXT NOT NULL,              -- JSON array of "area:level"
    labels               TEXT NOT NULL,              -- JSON object
    status               TEXT NOT NULL CHECK (status IN ('active', 'disabled', 'revoked')),
    issued_at            TEXT NOT NULL,              -- RFC 3339, UTC, nanoseconds (sorts as text)
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    expires_at           TEXT,
    lifetime             TEXT,
    version              INTEGER NOT NULL CHECK (version >= 1),
    generation           INTEGER NOT NULL CHECK (generation >= 0),
    spec_generation      INTEGER NOT NULL CHECK (spec_generation >= 0),
    previous_valid_until TEXT,
    recipients           TEXT NOT NULL,              -- JSON object principal -> fingerprint
    quota_per_day        INTEGER CHECK (quota_per_day >= 0),
    protected            INTEGER NOT NULL CHECK (protected IN (0, 1)),
    managed_by           TEXT,
    secret_mac           BLOB NOT NULL,              -- HMAC-SHA256(pepper, sha256 hex of secret)
    previous_secret_mac  BLOB
) STRICT;
CREATE INDEX keys_owner ON keys (owner);
CREATE INDEX keys_environment ON keys (environment);
CREATE INDEX keys_name_environment ON keys (name, environment);
CREATE INDEX keys_expires_at ON keys (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    who        TEXT NOT NULL,
    action     TEXT NOT NULL,
    key_id     TEXT,
    key_name   TEXT,
    commit_sha TEXT,
    detail     TEXT NOT NULL                         -- JSON, never a secret or a hash
) STRICT;
CREATE INDEX events_key_id ON events (key_id);
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TABLE locks (
    slot        INTEGER PRIMARY KEY CHECK (slot = 1),  -- a single lease row
    id          TEXT NOT NULL,
    holder      TEXT NOT NULL,
    acquired_at TEXT NOT NULL,
    expires_at  TEXT NOT NULL
) STRICT;

CREATE TABLE quota_usage (
    key_id TEXT NOT NULL REFERENCES keys (id) ON DELETE CASCADE,
    day    TEXT NOT NULL,                            -- UTC date, YYYY-MM-DD
    calls  INTEGER NOT NULL CHECK (calls >= 0),
    PRIMARY KEY (key_id, day)
) STRICT, WITHOUT ROWID;
"#;

/// v2: the digest of the state keyward last left a key in (drift detection).
const V2: &str = "ALTER TABLE keys ADD COLUMN applied_digest TEXT;";

/// v3: key usage counted at verify by `keyward serve` (`store::usage`), added to in batches.
/// No foreign key: the calls of a deleted key stay counted, and `''` counts the calls that
/// named no key.
const V3: &str = r#"
CREATE TABLE key_usage (
    key_id  TEXT NOT NULL,
    day     TEXT NOT NULL,                           -- UTC date, YYYY-MM-DD
    reason  TEXT NOT NULL,                           -- the verify reason, `ok` when valid
    calls   INTEGER NOT NULL CHECK (calls >= 0),
    last_at TEXT NOT NULL,                           -- RFC 3339 of the last of these calls
    PRIMARY KEY (key_id, day, reason)
) STRICT, WITHOUT ROWID;
CREATE INDEX key_usage_day ON key_usage (day);
"#;

/// Every migration in order; migration `i` brings the schema to version `i + 1`.
/// Append only: never edit or reorder a migration that has been released.
const V4: &str = r#"
CREATE TABLE budget_usage (
    scope TEXT NOT NULL,                             -- `store`, or `label:name=value`
    day   TEXT NOT NULL,                             -- UTC date, YYYY-MM-DD
    calls INTEGER NOT NULL CHECK (calls >= 0),       -- reserved by the serving processes
    PRIMARY KEY (scope, day)
) STRICT, WITHOUT ROWID;
CREATE TABLE budget_alerts (
    scope   TEXT NOT NULL,
    day     TEXT NOT NULL,
    percent INTEGER NOT NULL CHECK (percent BETWEEN 1 AND 100),
    at      TEXT NOT NULL,                           -- when a server claimed it
    PRIMARY KEY (scope, day, percent)
) STRICT, WITHOUT ROWID;
"#;

pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub(super) fn user_version(conn: &Connection) -> StoreResult<u32> {
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .db("read schema version")?;
    u32::try_from(v).map_err(|_| StoreError::Backend(format!("invalid schema version {v}")))
}

/// Refuse a database written by a newer keyward.
pub(super) fn check_supported(version: u32) -> StoreResult<()> {
    if version > SCHEMA_VERSION {
        return Err(StoreError::Refused(format!(
            "the database has schema version {version} but this keyward only knows up to \
             {SCHEMA_VERSION}; upgrade keyward (the database was not changed)"
        )));
    }
    Ok(())
}

/// Apply every pending migration in one IMMEDIATE transaction (so two processes opening
/// a new file at once do not both migrate). Returns the resulting version.
pub(super) fn migrate(conn: &mut Connection) -> StoreResult<u32> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .db("begin migration")?;
    let current = user_version(&tx)?;
    check_supported(current)?;
    if current == SCHEMA_VERSION {
        return Ok(current);
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let to = i + 1;
        tx.execute_batch(sql).map_err(|e| {
            StoreError::Backend(format!("schema migration to version {to} failed: {e}"))
        })?;
        tx.pragma_update(None, "user_version", to as i64)
            .db("record schema version")?;
    }
    tx.commit().db("commit migration")?;
    Ok(SCHEMA_VERSION)
}
