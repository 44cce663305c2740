//! What the stores that keep keyward's record of a key next to somebody else's credential
//! share (`redis-acl`, `postgres-roles`, `exec` adapters): listing a set of records with
//! filters and cursors in memory, the grants table (scope -> the store's own permission
//! names), the verify decision from a record plus a login result. Pure functions only: no
//! I/O, never a secret in a message.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::rules::{self, MAX_PAGE, decode_cursor, encode_cursor};
use super::{ListFilter, Page, StoreError, StoreResult, VerifyReason};
use crate::model::{KeyStatus, LiveKey, NewKey};

/// Whether `k` passes `filter` (as the SQL of the database-backed stores decides it).
pub(crate) fn matches(filter: &ListFilter, k: &LiveKey) -> bool {
    filter.owner.as_ref().is_none_or(|o| *o == k.owner)
        && filter.status.is_none_or(|s| s == k.status)
        && filter
            .environment
            .as_ref()
            .is_none_or(|e| *e == k.environment)
        && filter
            .label
            .as_ref()
            .is_none_or(|(lk, lv)| k.labels.get(lk) == Some(lv))
        && filter.managed.is_none_or(|m| m == k.is_managed())
        && filter
            .expiring_before
            .is_none_or(|t| k.expires_at.is_some_and(|e| e < t))
        && (!filter.never_expires || k.expires_at.is_none())
}

/// One page of `keys` (any order) after `cursor`, ordered by id.
pub(crate) fn page(
    mut keys: Vec<LiveKey>,
    filter: &ListFilter,
    cursor: Option<&str>,
    limit: usize,
) -> StoreResult<Page<LiveKey>> {
    let limit = limit.clamp(1, MAX_PAGE);
    let after = cursor.map(decode_cursor).transpose()?;
    keys.retain(|k| after.as_ref().is_none_or(|a| k.id > *a) && matches(filter, k));
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    let next = if keys.len() > limit {
        keys.truncate(limit);
        keys.last().map(|k| encode_cursor(&k.id))
    } else {
        None
    };
    Ok(Page { items: keys, next })
}

/// The record a validated `NewKey` becomes (version 1, created `now`).
pub(crate) fn new_record(key: NewKey, now: DateTime<Utc>) -> StoreResult<LiveKey> {
    let key = rules::validate_new(key)?;
    Ok(rules::new_stored(key, Vec::new(), now).key)
}

/// The store's permission names for `scopes`, through the `grants` table of keyward.yaml.
/// A scope without an entry is refused: the store could not enforce it.
pub(crate) fn granted<'a>(
    store: &str,
    grants: &'a BTreeMap<String, Vec<String>>,
    scopes: &[String],
) -> StoreResult<Vec<&'a str>> {
    let mut out = Vec::new();
    for s in scopes {
        let g = grants.get(s).ok_or_else(|| {
            StoreError::Invalid(format!(
                "scope {s} has no entry in the grants table of store `{store}`"
            ))
        })?;
        out.extend(g.iter().map(String::as_str));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The verify decision for a record whose credential check (a real login) said `login_ok`;
/// `current` tells whether the presented secret is the current one (not the previous one
/// in its grace). A refused login is `unknown` unless the record explains it.
pub(crate) fn judge(
    k: &LiveKey,
    login_ok: bool,
    current: bool,
    now: DateTime<Utc>,
) -> Result<(), VerifyReason> {
    let explained = match k.status {
        KeyStatus::Revoked => Some(VerifyReason::Revoked),
        KeyStatus::Disabled => Some(VerifyReason::Disabled),
        KeyStatus::Active if k.expires_at.is_some_and(|e| e <= now) => Some(VerifyReason::Expired),
        KeyStatus::Active => None,
    };
    match (login_ok, explained) {
        (_, Some(r)) => Err(r),
        (false, None) => Err(VerifyReason::Unknown),
        (true, None) if current && k.issued_at > now => Err(VerifyReason::NotYetValid),
        (true, None) => Ok(()),
    }
}

/// Refuse a name that the store's naming rule cannot hold.
pub(crate) fn check_name(what: &str, name: &str, max: usize) -> StoreResult<()> {
    if name.is_empty()
        || name.len() > max
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(StoreError::Invalid(format!(
            "{what} `{name}` must be 1 to {max} characters of letters, digits, `-`, `_` or `.`"
        )));
    }
    Ok(())
}

/// A credential keyward did not make (an ACL user, a login role without the marker), shown
/// as an unmanaged key: id `id`, key name `name`, active when it may log in.
pub(crate) fn foreign_key(id: String, name: &str, active: bool) -> LiveKey {
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    LiveKey {
        id,
        name: name.to_owned(),
        environment: String::new(),
        owner: String::new(),
        purpose: None,
        scopes: Vec::new(),
        labels: BTreeMap::new(),
        status: if active {
            KeyStatus::Active
        } else {
            KeyStatus::Disabled
        },
        issued_at: epoch,
        created_at: epoch,
        updated_at: epoch,
        expires_at: None,
        lifetime: None,
        version: 0,
        generation: 0,
        spec_generation: 0,
        previous_valid_until: None,
        recipients: BTreeMap::new(),
        quota_per_day: None,
        protected: false,
        managed_by: None,
        applied_digest: None,
    }
}

/// JSON text of a record keyward keeps beside a credential.
pub(crate) fn json_text<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(format!("cannot encode JSON: {e}")))
}
