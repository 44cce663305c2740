//! Row <-> record conversion for the SQLite store: column lists, timestamp encoding and
//! defensive parsing (a corrupt row becomes `StoreError::Backend`, never a panic). Must not
//! run queries of its own.

use chrono::{DateTime, Utc};
use rusqlite::Row;
use rusqlite::types::ValueRef;
use serde::de::DeserializeOwned;

use crate::store::{Event, KeyStatus, LiveKey, StoreError, StoreResult};

/// Columns of a `LiveKey`, in the order `key_from_row` reads them.
pub(super) const KEY_COLUMNS: &str = "id, name, environment, owner, purpose, scopes, labels, \
     status, issued_at, created_at, updated_at, expires_at, lifetime, version, generation, \
     spec_generation, previous_valid_until, recipients, quota_per_day, protected, managed_by, \
     applied_digest";
/// Number of columns in `KEY_COLUMNS`; the MAC columns follow them in `STORED_COLUMNS`.
const KEY_COLUMN_COUNT: usize = 22;
pub(super) const STORED_COLUMNS: &str = "id, name, environment, owner, purpose, scopes, labels, \
     status, issued_at, created_at, updated_at, expires_at, lifetime, version, generation, \
     spec_generation, previous_valid_until, recipients, quota_per_day, protected, managed_by, \
     applied_digest, secret_mac, previous_secret_mac";

pub(super) const EVENT_COLUMNS: &str = "seq, at, who, action, key_id, key_name, commit_sha, detail";

pub(super) use crate::store::rules::{StoredKey, opt_ts, parse_ts, ts};

fn corrupt(col: &str) -> StoreError {
    StoreError::Backend(format!("corrupt value in column `{col}`"))
}

fn value<'r>(row: &'r Row<'_>, i: usize, col: &str) -> StoreResult<ValueRef<'r>> {
    row.get_ref(i).map_err(|_| corrupt(col))
}

fn text<'r>(row: &'r Row<'_>, i: usize, col: &str) -> StoreResult<&'r str> {
    value(row, i, col)?.as_str().map_err(|_| corrupt(col))
}

fn opt_text<'r>(row: &'r Row<'_>, i: usize, col: &str) -> StoreResult<Option<&'r str>> {
    match value(row, i, col)? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(b) => std::str::from_utf8(b).map(Some).map_err(|_| corrupt(col)),
        _ => Err(corrupt(col)),
    }
}

fn int(row: &Row<'_>, i: usize, col: &str) -> StoreResult<i64> {
    value(row, i, col)?.as_i64().map_err(|_| corrupt(col))
}

fn opt_int(row: &Row<'_>, i: usize, col: &str) -> StoreResult<Option<i64>> {
    value(row, i, col)?
        .as_i64_or_null()
        .map_err(|_| corrupt(col))
}

fn blob(row: &Row<'_>, i: usize, col: &str) -> StoreResult<Vec<u8>> {
    value(row, i, col)?
        .as_blob()
        .map(<[u8]>::to_vec)
        .map_err(|_| corrupt(col))
}

fn opt_blob(row: &Row<'_>, i: usize, col: &str) -> StoreResult<Option<Vec<u8>>> {
    match value(row, i, col)? {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(b) => Ok(Some(b.to_vec())),
        _ => Err(corrupt(col)),
    }
}

fn time(row: &Row<'_>, i: usize, col: &str) -> StoreResult<DateTime<Utc>> {
    parse_ts(text(row, i, col)?, col)
}

fn opt_time(row: &Row<'_>, i: usize, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
    opt_text(row, i, col)?.map(|s| parse_ts(s, col)).transpose()
}

fn json<T: DeserializeOwned>(row: &Row<'_>, i: usize, col: &str) -> StoreResult<T> {
    serde_json::from_str(text(row, i, col)?).map_err(|_| corrupt(col))
}

fn unsigned<T: TryFrom<i64>>(v: i64, col: &str) -> StoreResult<T> {
    T::try_from(v).map_err(|_| corrupt(col))
}

/// Read a `LiveKey` from a row selected with `KEY_COLUMNS` (or `STORED_COLUMNS`).
pub(super) fn key_from_row(row: &Row<'_>) -> StoreResult<LiveKey> {
    let status = text(row, 7, "status")?;
    Ok(LiveKey {
        id: text(row, 0, "id")?.to_owned(),
        name: text(row, 1, "name")?.to_owned(),
        environment: text(row, 2, "environment")?.to_owned(),
        owner: text(row, 3, "owner")?.to_owned(),
        purpose: opt_text(row, 4, "purpose")?.map(str::to_owned),
        scopes: json(row, 5, "scopes")?,
        labels: json(row, 6, "labels")?,
        status: KeyStatus::parse(status).ok_or_else(|| corrupt("status"))?,
        issued_at: time(row, 8, "issued_at")?,
        created_at: time(row, 9, "created_at")?,
        updated_at: time(row, 10, "updated_at")?,
        expires_at: opt_time(row, 11, "expires_at")?,
        lifetime: opt_text(row, 12, "lifetime")?.map(str::to_owned),
        version: unsigned(int(row, 13, "version")?, "version")?,
        generation: unsigned(int(row, 14, "generation")?, "generation")?,
        spec_generation: unsigned(int(row, 15, "spec_generation")?, "spec_generation")?,
        previous_valid_until: opt_time(row, 16, "previous_valid_until")?,
        recipients: json(row, 17, "recipients")?,
        quota_per_day: opt_int(row, 18, "quota_per_day")?
            .map(|q| unsigned(q, "quota_per_day"))
            .transpose()?,
        protected: match int(row, 19, "protected")? {
            0 => false,
            1 => true,
            _ => return Err(corrupt("protected")),
        },
        managed_by: opt_text(row, 20, "managed_by")?.map(str::to_owned),
        applied_digest: opt_text(row, 21, "applied_digest")?.map(str::to_owned),
    })
}

/// Read a key and its MACs from a row selected with `STORED_COLUMNS`.
pub(super) fn stored_from_row(row: &Row<'_>) -> StoreResult<StoredKey> {
    Ok(StoredKey {
        key: key_from_row(row)?,
        mac: blob(row, KEY_COLUMN_COUNT, "secret_mac")?,
        previous_mac: opt_blob(row, KEY_COLUMN_COUNT + 1, "previous_secret_mac")?,
    })
}

/// Read an `Event` from a row selected with `EVENT_COLUMNS`.
pub(super) fn event_from_row(row: &Row<'_>) -> StoreResult<Event> {
    Ok(Event {
        seq: int(row, 0, "seq")?,
        at: time(row, 1, "at")?,
        who: text(row, 2, "who")?.to_owned(),
        action: text(row, 3, "action")?.to_owned(),
        key_id: opt_text(row, 4, "key_id")?.map(str::to_owned),
        key_name: opt_text(row, 5, "key_name")?.map(str::to_owned),
        commit: opt_text(row, 6, "commit_sha")?.map(str::to_owned),
        detail: json(row, 7, "detail")?,
    })
}
