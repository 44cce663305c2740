//! The messages of keyward's store protocol for `kind: exec` adapters
//! (`apiVersion: keyward.store/v1`, one JSON object per line; docs/store-protocol.md,
//! schemas/store-protocol/): the request lines keyward writes, the answers it accepts and
//! the typed errors. Encoding and decoding only: no I/O, and no secret in any error text.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::model::{Actor, KeyPatch, NewKey, Rotate};
use crate::store::usage::{Usage, UsageRow, day_of, merge};
use crate::store::{ExpiryMode, Overlap, SecretMode, VerifyReason};

/// The protocol version every message carries.
pub const API_VERSION: &str = "keyward.store/v1";

/// One request line (without the newline): `{"apiVersion", "id", "op", ...params}`.
pub fn request(id: u64, op: &str, params: Value) -> String {
    let mut m = Map::new();
    m.insert("apiVersion".into(), API_VERSION.into());
    m.insert("id".into(), id.into());
    m.insert("op".into(), op.into());
    if let Value::Object(p) = params {
        m.extend(p);
    }
    Value::Object(m).to_string()
}

/// `actor` as sent with every change.
pub fn actor(a: &Actor) -> Value {
    json!({ "who": a.who, "commit": a.commit })
}

/// A new key without its secret form (that travels beside it, as `secret_hash` or
/// `secret`, depending on the adapter's secret mode).
pub fn new_key(k: &NewKey) -> Value {
    let mut v = serde_json::to_value(k).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("secret_hash");
    }
    v
}

/// A rotation without its secret form.
pub fn rotation(r: &Rotate) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("secret_hash");
    }
    v
}

/// A patch as the protocol has it: only the fields that change; `null` clears a field.
pub fn patch(p: &KeyPatch) -> Value {
    let mut m = Map::new();
    let mut put = |name: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(name.into(), v);
        }
    };
    put("purpose", p.purpose.as_ref().map(|x| json!(x)));
    put("scopes", p.scopes.as_ref().map(|x| json!(x)));
    put("labels", p.labels.as_ref().map(|x| json!(x)));
    put("expires_at", p.expires_at.as_ref().map(|x| json!(x)));
    put("lifetime", p.lifetime.as_ref().map(|x| json!(x)));
    put("recipients", p.recipients.as_ref().map(|x| json!(x)));
    put("quota_per_day", p.quota_per_day.as_ref().map(|x| json!(x)));
    put("protected", p.protected.map(|x| json!(x)));
    put("managed_by", p.managed_by.as_ref().map(|x| json!(x)));
    put("owner", p.owner.as_ref().map(|x| json!(x)));
    put(
        "applied_digest",
        p.applied_digest.as_ref().map(|x| json!(x)),
    );
    Value::Object(m)
}

/// The `describe` answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Describe {
    pub name: String,
    pub version: String,
    pub capabilities: AdapterCapabilities,
}

/// What an adapter says it can do.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AdapterCapabilities {
    /// Who makes secrets and what the adapter receives.
    pub secret: SecretMode,
    pub expiry: ExpiryMode,
    #[serde(default)]
    pub in_place: Vec<String>,
    pub rotation_overlap: Overlap,
    /// The adapter can list its keys (keyward needs this to plan).
    pub list: bool,
    /// The adapter can disable and enable keys.
    #[serde(default = "yes")]
    pub disable: bool,
    /// The adapter keeps an audit trail (`events` and `record`).
    #[serde(default)]
    pub events: bool,
    /// The adapter enforces per-day quotas when it verifies.
    #[serde(default)]
    pub quota: bool,
    /// The adapter keeps key usage and answers the `usage` operation (last used, calls
    /// per day).
    #[serde(default)]
    pub usage: bool,
}

fn yes() -> bool {
    true
}

/// The most key entries a `usage` answer may hold (beside the 4 MiB line limit).
pub const MAX_USAGE_KEYS: usize = 100_000;
/// The longest key id a `usage` answer may name.
const MAX_KEY_ID: usize = 200;

/// One key's entry of a `usage` answer.
struct KeyUsage {
    key_id: String,
    /// The key's last valid use; None: never used (as far as the adapter knows).
    last_used: Option<DateTime<Utc>>,
    /// Valid calls per UTC day (YYYY-MM-DD), with `calls_counted`.
    calls_per_day: Option<BTreeMap<String, u64>>,
}

/// An optional RFC 3339 time at `what`.
fn opt_time(v: Option<&Value>, what: &str) -> Result<Option<DateTime<Utc>>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) => DateTime::parse_from_rfc3339(t)
            .map(|t| Some(t.to_utc()))
            .map_err(|_| format!("`{what}` is not an RFC 3339 time")),
        Some(_) => Err(format!("`{what}` is not an RFC 3339 time")),
    }
}

/// Entry `i` of `keys`, every field checked.
fn key_usage(i: usize, v: &Value) -> Result<KeyUsage, String> {
    let k = v
        .as_object()
        .ok_or_else(|| format!("`keys[{i}]` is not an object"))?;
    let key_id = match k.get("key_id") {
        Some(Value::String(id))
            if !id.is_empty() && id.len() <= MAX_KEY_ID && !id.chars().any(char::is_control) =>
        {
            id.clone()
        }
        _ => {
            return Err(format!(
                "`keys[{i}].key_id` is not a string of 1 to {MAX_KEY_ID} bytes without control characters"
            ));
        }
    };
    let last_used = opt_time(k.get("last_used"), &format!("keys[{i}].last_used"))?;
    let calls_per_day = match k.get("calls_per_day") {
        None | Some(Value::Null) => None,
        Some(Value::Object(days)) => {
            let mut out = BTreeMap::new();
            for (day, n) in days {
                if NaiveDate::parse_from_str(day, "%Y-%m-%d").is_err() || day.len() != 10 {
                    return Err(format!(
                        "`keys[{i}].calls_per_day` has a day that is not YYYY-MM-DD"
                    ));
                }
                let n = n.as_u64().ok_or_else(|| {
                    format!("`keys[{i}].calls_per_day` has a count that is not a whole number of at least 0")
                })?;
                out.insert(day.clone(), n);
            }
            Some(out)
        }
        Some(_) => return Err(format!("`keys[{i}].calls_per_day` is not an object")),
    };
    Ok(KeyUsage {
        key_id,
        last_used,
        calls_per_day,
    })
}

/// Decode a `usage` result into the usage keyward keeps, from `since` (YYYY-MM-DD) on:
/// each day's calls as a row of valid calls (its `last_at` the key's last use on that day,
/// else the day's start), or, when the adapter counts no calls, one row per used key on
/// the day of its last use with no calls. Every field is checked; the message says which
/// one is wrong without quoting what the adapter wrote.
pub fn usage(result: &Value, since: &str) -> Result<Usage, String> {
    let r = result
        .as_object()
        .ok_or("the `usage` result is not an object")?;
    let counting_since = opt_time(r.get("counting_since"), "counting_since")?;
    let calls_counted = match r.get("calls_counted") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("`calls_counted` is not true or false".into()),
    };
    let keys = r
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("`keys` is not a list")?;
    if keys.len() > MAX_USAGE_KEYS {
        return Err(format!(
            "{} key entries in a usage answer, at most {MAX_USAGE_KEYS}",
            keys.len()
        ));
    }
    let mut rows = Vec::new();
    for (i, v) in keys.iter().enumerate() {
        let k = key_usage(i, v)?;
        let first = rows.len();
        match (&k.calls_per_day, calls_counted) {
            (Some(_), false) => {
                return Err(format!(
                    "`keys[{i}]` has `calls_per_day` but the answer does not say `calls_counted: true`"
                ));
            }
            (Some(days), true) => rows.extend(day_rows(&k, days, since)),
            (None, _) => {}
        }
        if let Some(at) = k.last_used {
            let day = day_of(&at);
            // Only this entry's rows (a scan of all of them would be quadratic).
            let counted = rows[first..].iter().any(|r: &UsageRow| r.day == day);
            if day.as_str() >= since && !counted {
                rows.push(ok_row(&k.key_id, day, 0, at));
            }
        }
    }
    Ok(Usage {
        counting_since,
        rows: merge(rows),
        last_use_only: !calls_counted,
    })
}

/// The rows of one key's `calls_per_day` from `since` on.
fn day_rows(k: &KeyUsage, days: &BTreeMap<String, u64>, since: &str) -> Vec<UsageRow> {
    let mut out = Vec::new();
    for (day, &calls) in days {
        let Ok(d) = NaiveDate::parse_from_str(day, "%Y-%m-%d") else {
            continue;
        };
        if calls == 0 || day.as_str() < since {
            continue;
        }
        let start = d.and_time(NaiveTime::MIN).and_utc();
        let last_at = k.last_used.filter(|l| day_of(l) == *day).unwrap_or(start);
        out.push(ok_row(&k.key_id, day.clone(), calls, last_at));
    }
    out
}

fn ok_row(key_id: &str, day: String, calls: u64, last_at: DateTime<Utc>) -> UsageRow {
    UsageRow {
        key_id: key_id.to_owned(),
        day,
        reason: VerifyReason::Ok,
        calls,
        last_at,
    }
}

/// The typed errors of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The version given is not the key's version (`found` says which it is).
    Conflict,
    NotFound,
    AlreadyExists,
    /// The request is not acceptable (bad field, scope without a grant, ...).
    Invalid,
    /// Not allowed on this key (unmanaged, revoked, protected).
    Refused,
    /// The apply lease is held (`holder`, `lease_id`, `until`).
    Locked,
    /// The change named a lease (`lease_id`) that is not the live one: it expired, was
    /// released or another apply holds the store.
    LeaseLost,
    /// The backend cannot answer now (`retry_after` seconds).
    Unavailable,
    /// Anything else.
    Internal,
}

/// An `error` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub found: Option<u64>,
    #[serde(default)]
    pub retry_after: Option<f64>,
    #[serde(default)]
    pub holder: Option<String>,
    #[serde(default)]
    pub lease_id: Option<String>,
    #[serde(default)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

/// An answer line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    #[serde(rename = "apiVersion")]
    api_version: String,
    id: u64,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<WireError>,
}

/// Why an answer line could not be used (never quotes the line: it might hold a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAnswer {
    #[error("the answer is not a keyward.store/v1 message ({0})")]
    NotJson(String),
    #[error("the answer says apiVersion `{0}`, keyward speaks keyward.store/v1")]
    Version(String),
    #[error("the answer is for request {got}, not for request {want}")]
    WrongId { want: u64, got: u64 },
    #[error("the answer has neither `result` nor `error`, or both")]
    Shape,
}

/// Decode one answer line to request `want`: `Ok(Ok(result))`, `Ok(Err(error))`, or why
/// the line is not a usable answer.
pub fn answer(line: &[u8], want: u64) -> Result<Result<Value, WireError>, BadAnswer> {
    let a: Answer = serde_json::from_slice(line).map_err(|e| {
        // serde_json's messages name a position and what it expected, never the input.
        BadAnswer::NotJson(format!(
            "{} at line {} column {}",
            classify(&e),
            e.line(),
            e.column()
        ))
    })?;
    if a.api_version != API_VERSION {
        return Err(BadAnswer::Version(
            a.api_version.chars().take(40).collect::<String>(),
        ));
    }
    if a.id != want {
        return Err(BadAnswer::WrongId { want, got: a.id });
    }
    match (a.result, a.error) {
        (Some(r), None) => Ok(Ok(r)),
        (None, Some(e)) => Ok(Err(e)),
        _ => Err(BadAnswer::Shape),
    }
}

fn classify(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Eof => "incomplete JSON",
        serde_json::error::Category::Data => "unexpected fields or types",
        serde_json::error::Category::Io => "unreadable",
    }
}

/// A field of a `result`, decoded.
pub fn field<T: serde::de::DeserializeOwned>(result: &Value, name: &str) -> Result<T, String> {
    let v = result.get(name).cloned().unwrap_or(Value::Null);
    serde_json::from_value(v).map_err(|e| format!("`result.{name}` is not as expected: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_matched_to_their_request_and_never_quoted() {
        let ok = br#"{"apiVersion":"keyward.store/v1","id":3,"result":{"x":1}}"#;
        assert_eq!(answer(ok, 3).unwrap().unwrap()["x"], 1);
        assert_eq!(
            answer(ok, 4).unwrap_err(),
            BadAnswer::WrongId { want: 4, got: 3 }
        );
        let err = br#"{"apiVersion":"keyward.store/v1","id":1,"error":{"code":"conflict","message":"m","found":7}}"#;
        let e = answer(err, 1).unwrap().unwrap_err();
        assert_eq!((e.code, e.found), (ErrorCode::Conflict, Some(7)));
        let garbage = answer(b"kw_prod_secret_here not json", 1).unwrap_err();
        assert!(!garbage.to_string().contains("kw_prod"), "{garbage}");
        let v2 = br#"{"apiVersion":"keyward.store/v2","id":1,"result":{}}"#;
        assert!(matches!(answer(v2, 1), Err(BadAnswer::Version(_))));
        let both =
            br#"{"apiVersion":"keyward.store/v1","id":1,"result":{},"error":{"code":"invalid"}}"#;
        assert_eq!(answer(both, 1).unwrap_err(), BadAnswer::Shape);
    }

    #[test]
    fn a_usage_answer_of_the_most_keys_decodes_in_linear_time() {
        let keys: Vec<Value> = (0..MAX_USAGE_KEYS)
            .map(|i| {
                json!({"key_id": format!("k{i:06}"), "last_used": "2026-12-07T09:30:00Z",
                       "calls_per_day": {"2026-12-06": 3}})
            })
            .collect();
        let answer = json!({"calls_counted": true, "keys": keys});
        let t = std::time::Instant::now();
        let u = usage(&answer, "0000-01-01").unwrap();
        assert_eq!(u.rows.len(), 2 * MAX_USAGE_KEYS);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            t.elapsed()
        );
        let u = usage(&answer, "2026-12-07").unwrap();
        assert!(u.rows.iter().all(|r| r.calls == 0 && r.day == "2026-12-07"));
    }

    #[test]
    fn a_patch_sends_only_what_changes_and_null_clears() {
        let p = KeyPatch {
            purpose: Some(None),
            protected: Some(true),
            ..Default::default()
        };
        assert_eq!(patch(&p), json!({"purpose": null, "protected": true}));
    }
}
