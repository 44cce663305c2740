//! The behaviour every database-backed `Store` shares (SQLite and PostgreSQL): input
//! validation, what a create / patch / status change / rotation / delete does to a key and
//! which audit event it records, the verify decision, list cursors and the timestamp text
//! encoding. Pure functions only: no I/O, no database. Must never put a secret, a hash or a
//! MAC into an event detail or an error message.

use chrono::{DateTime, SecondsFormat, Utc};
use rand::RngCore;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{
    Actor, Capabilities, KeyPatch, KeyStatus, LiveKey, MANAGED_BY, NewKey, Rotate, StoreError,
    StoreResult, Verdict, VerifiedKey, VerifyReason,
};

/// Largest page `list` and `events` return.
pub const MAX_PAGE: usize = 1000;
const CURSOR_PREFIX: &str = "c1.";
/// Quota counters older than this many days are pruned.
pub(crate) const QUOTA_KEEP_DAYS: i64 = 7;

/// What a change does: `None` = nothing to change (no version bump, no event), or the
/// event action and its (secret-free) detail.
pub(crate) type Change = Option<(&'static str, serde_json::Value)>;

/// A key row with its MACs (never leaves the store module).
pub(crate) struct StoredKey {
    pub key: LiveKey,
    pub mac: Vec<u8>,
    pub previous_mac: Option<Vec<u8>>,
}

/// Fixed-width RFC 3339 (UTC, nanoseconds) so text order is time order.
pub(crate) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub(crate) fn opt_ts(t: &Option<DateTime<Utc>>) -> Option<String> {
    t.as_ref().map(ts)
}

/// Years outside 1..=9999 would not sort as text; refuse them on the way in.
pub(crate) fn check_ts(field: &str, t: &DateTime<Utc>) -> StoreResult<()> {
    use chrono::Datelike;
    if (1..=9999).contains(&t.year()) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{field} is out of range (years 1 to 9999)"
        )))
    }
}

/// Parse a timestamp written by `ts`; a bad value is a corrupt column.
pub(crate) fn parse_ts(s: &str, col: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| StoreError::Backend(format!("corrupt value in column `{col}`")))
}

/// The UTC day a quota counter belongs to (`YYYY-MM-DD`).
pub(crate) fn quota_day(t: &DateTime<Utc>) -> String {
    use chrono::Datelike;
    // As `%Y-%m-%d` for years 0..=9999, without the format parser on every verify.
    format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day())
}

/// Counters of days before this one are pruned (None when out of range).
pub(crate) fn quota_prune_before(now: &DateTime<Utc>) -> Option<String> {
    now.checked_sub_signed(chrono::Duration::days(QUOTA_KEEP_DAYS))
        .map(|t| quota_day(&t))
}

pub(crate) fn to_i64(v: u64, field: &str) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{field} is too large")))
}

pub(crate) fn check_text(field: &str, v: &str, max: usize) -> StoreResult<()> {
    if v.trim().is_empty() {
        return Err(StoreError::Invalid(format!("{field} must not be empty")));
    }
    if v.len() > max || v.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "{field} must be at most {max} bytes without control characters"
        )));
    }
    Ok(())
}

fn normalise_scopes(mut scopes: Vec<String>) -> StoreResult<Vec<String>> {
    for s in &scopes {
        check_text("scope", s, 200)?;
    }
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

pub(crate) fn validate_new(mut key: NewKey) -> StoreResult<NewKey> {
    check_text("id", &key.id, 128)?;
    if key.id.chars().any(char::is_whitespace) {
        return Err(StoreError::Invalid("id must not contain whitespace".into()));
    }
    check_text("name", &key.name, 256)?;
    check_text("environment", &key.environment, 128)?;
    check_text("owner", &key.owner, 256)?;
    key.scopes = normalise_scopes(key.scopes)?;
    check_ts("issued_at", &key.issued_at)?;
    if let Some(t) = &key.expires_at {
        check_ts("expires_at", t)?;
    }
    if let Some(q) = key.quota_per_day {
        to_i64(q, "quota_per_day")?;
    }
    refuse_secret("a key", &key)?;
    Ok(key)
}

/// Refuse `value` (a key, a patch, a lock holder) when any text in it is secret-shaped:
/// the store keeps and answers these fields, so a secret pasted into a purpose or a label
/// would be stored and shown to every reader. (Event details are checked the same way.)
pub(crate) fn refuse_secret<T: serde::Serialize>(what: &str, value: &T) -> StoreResult<()> {
    let v = serde_json::to_value(value)
        .map_err(|e| StoreError::Backend(format!("cannot encode JSON: {e}")))?;
    if contains_secret(&v) {
        return Err(StoreError::Invalid(format!(
            "{what} must not contain a secret (a value has the format of a secret or private key; it is not shown)"
        )));
    }
    Ok(())
}

/// The key a validated `NewKey` becomes (version 1, created now) with its MAC.
pub(crate) fn new_stored(key: NewKey, mac: Vec<u8>, now: DateTime<Utc>) -> StoredKey {
    let live = LiveKey {
        id: key.id,
        name: key.name,
        environment: key.environment,
        owner: key.owner,
        purpose: key.purpose,
        scopes: key.scopes,
        labels: key.labels,
        status: key.status,
        issued_at: key.issued_at,
        created_at: now,
        updated_at: now,
        expires_at: key.expires_at,
        lifetime: key.lifetime,
        version: 1,
        generation: key.generation,
        spec_generation: key.spec_generation,
        previous_valid_until: None,
        recipients: key.recipients,
        quota_per_day: key.quota_per_day,
        protected: key.protected,
        managed_by: key.managed_by,
        applied_digest: key.applied_digest,
    };
    StoredKey {
        key: live,
        mac,
        previous_mac: None,
    }
}

/// The detail of a create event.
pub(crate) fn create_detail(k: &LiveKey) -> serde_json::Value {
    json!({
        "environment": k.environment,
        "owner": k.owner,
        "status": k.status,
        "scopes": k.scopes,
        "generation": k.generation,
        "spec_generation": k.spec_generation,
        "expires_at": opt_ts(&k.expires_at),
        "recipients": k.recipients.keys().collect::<Vec<_>>(),
        "managed_by": k.managed_by,
    })
}

/// Bump the version and `updated_at` of a changed key.
pub(crate) fn bump(k: &mut LiveKey, now: DateTime<Utc>) -> StoreResult<()> {
    k.version = k
        .version
        .checked_add(1)
        .ok_or_else(|| StoreError::Backend("version overflow".into()))?;
    k.updated_at = now.max(k.updated_at);
    Ok(())
}

/// `Conflict` unless the caller saw `version`.
pub(crate) fn check_version(k: &LiveKey, version: u64) -> StoreResult<()> {
    if k.version == version {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            id: k.id.clone(),
            expected: version,
            found: k.version,
        })
    }
}

pub(crate) fn require_managed(k: &LiveKey) -> StoreResult<()> {
    if k.is_managed() {
        Ok(())
    } else {
        Err(StoreError::Refused(format!(
            "key {} is not managed by keyward",
            k.id
        )))
    }
}

/// The name recorded in events for an actor (`unknown` when empty).
pub(crate) fn who(actor: &Actor) -> &str {
    if actor.who.trim().is_empty() {
        "unknown"
    } else {
        &actor.who
    }
}

/// disable / enable / revoke.
pub(crate) fn status_change(k: &mut LiveKey, to: KeyStatus) -> StoreResult<Change> {
    require_managed(k)?;
    let from = k.status;
    if from == to {
        return Ok(None);
    }
    if from == KeyStatus::Revoked {
        return Err(StoreError::Refused(format!(
            "key {} is revoked; a revoked key cannot be {}",
            k.id,
            if to == KeyStatus::Active {
                "enabled"
            } else {
                "changed"
            }
        )));
    }
    if to == KeyStatus::Revoked && k.protected {
        return Err(StoreError::Refused(format!(
            "key {} is protected; clear `protected` before revoking it",
            k.id
        )));
    }
    k.status = to;
    Ok(Some((to.verb(), json!({ "from": from, "to": to }))))
}

/// An in-place update. Unmanaged keys accept only the adoption patch (`managed_by:
/// keyward` alone); revoked keys accept nothing; a patch that changes nothing is no change.
pub(crate) fn update_change(k: &mut LiveKey, patch: KeyPatch) -> StoreResult<Change> {
    if patch.is_empty() {
        return Ok(None);
    }
    let adoption = KeyPatch {
        managed_by: Some(Some(MANAGED_BY.to_owned())),
        ..KeyPatch::default()
    };
    let adopting = !k.is_managed() && patch == adoption;
    if !adopting {
        require_managed(k)?;
    }
    if k.status == KeyStatus::Revoked {
        return Err(StoreError::Refused(format!(
            "key {} is revoked; it cannot be updated",
            k.id
        )));
    }
    let (changed, detail) = apply_patch(k, patch)?;
    if changed.is_empty() {
        return Ok(None);
    }
    Ok(Some((if adopting { "adopt" } else { "update" }, detail)))
}

/// Check a rotation's timestamps before touching the database.
pub(crate) fn check_rotate(rotate: &Rotate) -> StoreResult<()> {
    check_ts("issued_at", &rotate.issued_at)?;
    if let Some(t) = &rotate.expires_at {
        check_ts("expires_at", t)?;
    }
    if let Some(t) = &rotate.previous_valid_until {
        check_ts("previous_valid_until", t)?;
    }
    Ok(())
}

/// A rotation to the secret whose MAC is `mac`.
pub(crate) fn rotate_change(
    s: &mut StoredKey,
    rotate: Rotate,
    mac: Vec<u8>,
) -> StoreResult<Change> {
    require_managed(&s.key)?;
    if s.key.status == KeyStatus::Revoked {
        return Err(StoreError::Refused(format!(
            "key {} is revoked; it cannot be rotated",
            s.key.id
        )));
    }
    if bool::from(mac.ct_eq(&s.mac)) {
        return Err(StoreError::Invalid(
            "the new secret must differ from the current one".into(),
        ));
    }
    let old = std::mem::replace(&mut s.mac, mac);
    s.previous_mac = rotate.previous_valid_until.map(|_| old);
    let k = &mut s.key;
    let detail = json!({
        "generation": { "from": k.generation, "to": rotate.generation },
        "spec_generation": rotate.spec_generation,
        "previous_valid_until": opt_ts(&rotate.previous_valid_until),
        "expires_at": opt_ts(&rotate.expires_at),
        "recipients": rotate.recipients.keys().collect::<Vec<_>>(),
    });
    k.previous_valid_until = rotate.previous_valid_until;
    k.issued_at = rotate.issued_at;
    k.expires_at = rotate.expires_at;
    k.generation = rotate.generation;
    k.spec_generation = rotate.spec_generation;
    k.recipients = rotate.recipients;
    Ok(Some(("rotate", detail)))
}

/// May `k` be deleted? Returns the delete event's detail.
pub(crate) fn delete_detail(k: &LiveKey) -> StoreResult<serde_json::Value> {
    require_managed(k)?;
    if k.protected {
        return Err(StoreError::Refused(format!(
            "key {} is protected; clear `protected` before deleting it",
            k.id
        )));
    }
    Ok(json!({ "status": k.status, "generation": k.generation }))
}

/// Check lock arguments; returns the lease expiry for a lease taken at `now`.
pub(crate) fn lease_expiry(
    holder: &str,
    ttl: chrono::Duration,
    now: DateTime<Utc>,
) -> StoreResult<DateTime<Utc>> {
    check_text("holder", holder, 256)?;
    refuse_secret("the lock holder", &holder)?;
    if ttl <= chrono::Duration::zero() {
        return Err(StoreError::Invalid("lock ttl must be positive".into()));
    }
    now.checked_add_signed(ttl)
        .filter(|t| check_ts("lock expiry", t).is_ok())
        .ok_or_else(|| StoreError::Invalid("lock ttl is too large".into()))
}

/// Check the arguments of `Store::record`.
pub(crate) fn check_record(action: &str, detail: &serde_json::Value) -> StoreResult<()> {
    check_text("action", action, 100)?;
    refuse_secret("an event action", &action)?;
    if contains_secret(detail) {
        return Err(StoreError::Invalid(
            "event detail must not contain a secret".into(),
        ));
    }
    Ok(())
}

/// Apply a patch; returns the names of the fields that actually changed.
pub(crate) fn apply_patch(
    k: &mut LiveKey,
    patch: KeyPatch,
) -> StoreResult<(Vec<&'static str>, serde_json::Value)> {
    refuse_secret("a change", &patch)?;
    let mut changed = Vec::new();
    let mut detail = serde_json::Map::new();
    macro_rules! set {
        ($field:ident, $value:expr) => {
            let v = $value;
            if k.$field != v {
                k.$field = v;
                changed.push(stringify!($field));
            }
        };
    }
    if let Some(v) = patch.purpose {
        set!(purpose, v);
    }
    if let Some(v) = patch.scopes {
        let v = normalise_scopes(v)?;
        if k.scopes != v {
            detail.insert("scopes".into(), json!({ "from": k.scopes, "to": v }));
        }
        set!(scopes, v);
    }
    if let Some(v) = patch.labels {
        set!(labels, v);
    }
    if let Some(v) = patch.expires_at {
        if let Some(t) = &v {
            check_ts("expires_at", t)?;
        }
        if k.expires_at != v {
            detail.insert(
                "expires_at".into(),
                json!({ "from": opt_ts(&k.expires_at), "to": opt_ts(&v) }),
            );
        }
        set!(expires_at, v);
    }
    if let Some(v) = patch.lifetime {
        set!(lifetime, v);
    }
    if let Some(v) = patch.recipients {
        if k.recipients != v {
            detail.insert(
                "recipients".into(),
                json!({ "from": k.recipients.keys().collect::<Vec<_>>(), "to": v.keys().collect::<Vec<_>>() }),
            );
        }
        set!(recipients, v);
    }
    if let Some(v) = patch.quota_per_day {
        if let Some(q) = v {
            to_i64(q, "quota_per_day")?;
        }
        set!(quota_per_day, v);
    }
    if let Some(v) = patch.protected {
        set!(protected, v);
    }
    if let Some(v) = patch.managed_by {
        if k.managed_by != v {
            detail.insert(
                "managed_by".into(),
                json!({ "from": k.managed_by, "to": v }),
            );
        }
        set!(managed_by, v);
    }
    if let Some(v) = patch.owner {
        check_text("owner", &v, 256)?;
        if k.owner != v {
            detail.insert("owner".into(), json!({ "from": k.owner, "to": v }));
        }
        set!(owner, v);
    }
    if let Some(v) = patch.applied_digest {
        set!(applied_digest, Some(v));
    }
    detail.insert("changed".into(), json!(changed));
    Ok((changed, serde_json::Value::Object(detail)))
}

pub(crate) fn encode_cursor(id: &str) -> String {
    format!("{CURSOR_PREFIX}{}", hex::encode(id))
}

pub(crate) fn decode_cursor(c: &str) -> StoreResult<String> {
    let bad = || StoreError::Invalid("malformed list cursor".into());
    let hexed = c.strip_prefix(CURSOR_PREFIX).ok_or_else(bad)?;
    String::from_utf8(hex::decode(hexed).map_err(|_| bad())?).map_err(|_| bad())
}

/// Does any text in `v` (keys included) look like a secret ([`crate::leak`]: a keyward
/// secret, a private key, a token format secret scanners know)?
pub(crate) fn contains_secret(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => crate::leak::contains(s),
        serde_json::Value::Array(a) => a.iter().any(contains_secret),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| {
            contains_secret(&serde_json::Value::String(k.clone())) || contains_secret(v)
        }),
        _ => false,
    }
}

/// A negative verdict.
pub(crate) fn verdict(reason: VerifyReason) -> Verdict {
    Verdict {
        valid: false,
        reason,
        key: None,
    }
}

/// A positive verdict for `k`.
pub(crate) fn ok_verdict(k: LiveKey) -> Verdict {
    Verdict {
        valid: true,
        reason: VerifyReason::Ok,
        key: Some(VerifiedKey {
            id: k.id,
            name: k.name,
            owner: k.owner,
            scopes: k.scopes,
            expires_at: k.expires_at,
        }),
    }
}

/// Everything verify decides before counting the quota: `Err(reason)` for a key that does
/// not verify, `Ok(())` when only the quota is left to check. The MACs are compared in
/// constant time; the previous MAC counts only before `previous_valid_until`.
pub(crate) fn judge(s: &StoredKey, mac: &[u8], now: DateTime<Utc>) -> Result<(), VerifyReason> {
    let current = s.mac.ct_eq(mac);
    let previous = match (&s.previous_mac, s.key.previous_valid_until) {
        (Some(p), Some(until)) if until > now => p.ct_eq(mac),
        _ => subtle::Choice::from(0),
    };
    let (current, previous) = (bool::from(current), bool::from(previous));
    if !current && !previous {
        return Err(VerifyReason::Unknown);
    }
    let k = &s.key;
    match k.status {
        KeyStatus::Revoked => return Err(VerifyReason::Revoked),
        KeyStatus::Disabled => return Err(VerifyReason::Disabled),
        KeyStatus::Active => {}
    }
    if k.expires_at.is_some_and(|e| e <= now) {
        return Err(VerifyReason::Expired);
    }
    if current && k.issued_at > now {
        return Err(VerifyReason::NotYetValid);
    }
    Ok(())
}

/// The store's lease as its lock row holds it: (id, holder, expires_at).
pub(crate) type HeldLease = (String, String, DateTime<Utc>);

/// May a key change made under `lease` (None: outside any apply) go ahead, given the lease
/// the store holds now (`held`, read in the change's own transaction) and the store's clock?
/// Under a lease: only while it is the live one (`LeaseLost` naming why not: expired,
/// released, or another holder's). Without one: only while no live lease is held
/// (`Locked`): an apply owns the store for as long as its lease is live. Every store kind
/// calls this, so they all refuse alike.
pub(crate) fn check_lease(
    held: Option<HeldLease>,
    lease: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let live = held.filter(|(_, _, until)| *until > now);
    match (lease, live) {
        (None, None) => Ok(()),
        (None, Some((id, holder, until))) => Err(StoreError::Locked { holder, id, until }),
        (Some(l), Some((id, _, _))) if bool::from(l.as_bytes().ct_eq(id.as_bytes())) => Ok(()),
        (Some(l), Some((_, holder, until))) => Err(StoreError::LeaseLost {
            lease: lease_shown(l),
            why: format!("the store is locked by {holder} until {}", ts(&until)),
        }),
        (Some(l), None) => Err(lost_lease(l, "it expired or was released")),
    }
}

/// `LeaseLost` for `lease` (shown only when it looks like a lease id: it came from the
/// caller).
pub(crate) fn lost_lease(lease: &str, why: &str) -> StoreError {
    StoreError::LeaseLost {
        lease: lease_shown(lease),
        why: why.to_owned(),
    }
}

fn lease_shown(lease: &str) -> String {
    if !lease.is_empty()
        && lease.len() <= 64
        && lease
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        lease.to_owned()
    } else {
        "(not a lease id)".to_owned()
    }
}

/// The renewed lease: `lease_id` must be the live lease in `held` (an expired one is lost,
/// never revived); its expiry becomes `now + ttl`.
pub(crate) fn renewed(
    held: Option<HeldLease>,
    lease_id: &str,
    ttl: chrono::Duration,
    now: DateTime<Utc>,
) -> StoreResult<super::Lease> {
    check_lease(held.clone(), Some(lease_id), now)?;
    let (id, holder, _) = held.ok_or_else(|| lost_lease(lease_id, "it was released"))?;
    let expires_at = lease_expiry(&holder, ttl, now)?;
    Ok(super::Lease {
        id,
        holder,
        expires_at,
    })
}

/// A random lease id (128 bits, hex).
pub(crate) fn new_lease_id() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// What the database-backed stores can do.
pub(crate) fn capabilities() -> Capabilities {
    Capabilities {
        client_secret_hash: true,
        native_expiry: true,
        in_place: [
            "purpose",
            "scopes",
            "labels",
            "expires_at",
            "lifetime",
            "recipients",
            "quota_per_day",
            "protected",
            "managed_by",
            "owner",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        secret: super::SecretMode::ClientHash,
        expiry: Some(super::ExpiryMode::Native),
        rotation_overlap: super::Overlap::Native,
        disable: true,
        quota: true,
        usage: true,
        budget: true,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    #[test]
    fn a_change_goes_ahead_only_under_the_live_lease_or_none_held() {
        use super::{StoreError, check_lease};
        let now = chrono::Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        let held = |id: &str, secs: i64| {
            Some((
                id.to_string(),
                "ci@host".to_string(),
                now + chrono::Duration::seconds(secs),
            ))
        };
        assert!(check_lease(None, None, now).is_ok());
        assert!(
            check_lease(held("a1", -1), None, now).is_ok(),
            "expired: free"
        );
        assert!(check_lease(held("a1", 60), Some("a1"), now).is_ok());
        assert!(matches!(
            check_lease(held("a1", 60), None, now),
            Err(StoreError::Locked { id, .. }) if id == "a1"
        ));
        for (h, why) in [
            (held("b2", 60), "locked by ci@host"),
            (held("a1", 0), "expired"),
            (None, "released"),
        ] {
            match check_lease(h, Some("a1"), now) {
                Err(StoreError::LeaseLost { lease, why: w }) => {
                    assert_eq!(lease, "a1");
                    assert!(w.contains(why), "{w}");
                }
                other => panic!("{other:?}"),
            }
        }
        let r = super::renewed(held("a1", 5), "a1", chrono::Duration::seconds(90), now);
        assert_eq!(r.unwrap().expires_at, now + chrono::Duration::seconds(90));
        assert!(super::renewed(held("a1", -5), "a1", chrono::Duration::seconds(9), now).is_err());
        match check_lease(None, Some("kw_x y"), now) {
            Err(StoreError::LeaseLost { lease, .. }) => assert_eq!(lease, "(not a lease id)"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn quota_day_is_the_utc_date() {
        for (y, m, d) in [(2026, 1, 5), (2026, 12, 31), (999, 3, 9), (9999, 11, 22)] {
            let t = chrono::Utc.with_ymd_and_hms(y, m, d, 23, 59, 59).unwrap();
            assert_eq!(super::quota_day(&t), t.format("%Y-%m-%d").to_string());
        }
    }
}
