//! The messages of keyward's store protocol for `kind: exec` adapters
//! (`apiVersion: keyward.store/v1`, one JSON object per line; docs/store-protocol.md,
//! schemas/store-protocol/): the request lines keyward writes, the answers it accepts and
//! the typed errors. Encoding and decoding only: no I/O, and no secret in any error text.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::model::{Actor, KeyPatch, NewKey, Rotate};
use crate::store::{ExpiryMode, Overlap, SecretMode};

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
    fn a_patch_sends_only_what_changes_and_null_clears() {
        let p = KeyPatch {
            purpose: Some(None),
            protected: Some(true),
            ..Default::default()
        };
        assert_eq!(patch(&p), json!({"purpose": null, "protected": true}));
    }
}
