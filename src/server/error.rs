//! JSON errors of the HTTP protocol: `{"code": "...", "message": "..."}` with the right
//! status, and the mapping from `StoreError` and request rejections. Must never put a
//! secret, a secret hash or a token in a message (serde messages are scrubbed of quoted
//! values before they are shown).

use axum::http::StatusCode;
use axum::http::header::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra fields (e.g. the lock holder), merged into the JSON body.
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extra: &'a Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
    /// The JSON body as bytes (used to persist idempotent answers).
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::to_value(Body {
            code: self.code,
            message: &self.message,
            extra: &self.extra,
        })
        .unwrap_or(serde_json::Value::Null)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body_json().to_string();
        let mut r = (self.status, body).into_response();
        r.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"keyward\""),
            );
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match &e {
            StoreError::NotFound(id) => {
                ApiError::not_found(format!("key {} not found", shown_name(id)))
            }
            StoreError::Conflict { found, .. } => {
                let mut err = ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "version_mismatch",
                    e.to_string(),
                );
                let mut extra = serde_json::Map::new();
                extra.insert("current_version".into(), (*found).into());
                err.extra = Some(extra);
                err
            }
            StoreError::AlreadyExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "already_exists", e.to_string())
            }
            StoreError::Locked { holder, id, until } => {
                let mut err = ApiError::new(StatusCode::CONFLICT, "locked", e.to_string());
                let mut extra = serde_json::Map::new();
                extra.insert("holder".into(), holder.clone().into());
                extra.insert("lease_id".into(), id.clone().into());
                extra.insert("until".into(), until.to_rfc3339().into());
                err.extra = Some(extra);
                err
            }
            StoreError::LeaseLost { lease, why } => {
                let mut err = ApiError::new(StatusCode::CONFLICT, "lease_lost", e.to_string());
                let mut extra = serde_json::Map::new();
                extra.insert("lease_id".into(), lease.clone().into());
                extra.insert("why".into(), why.clone().into());
                err.extra = Some(extra);
                err
            }
            StoreError::Refused(m) => ApiError::new(StatusCode::CONFLICT, "refused", m.clone()),
            StoreError::Invalid(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m.clone())
            }
            StoreError::Backend(m) => {
                // Backend messages may name files and SQL; keep them in the log only.
                tracing::error!(error = %m, "store backend error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the key store failed; see the server log",
                )
            }
        }
    }
}

/// Longest name (field, parameter, key id) an error message repeats from a request.
pub const SHOWN_NAME_MAX: usize = 32;

/// `name` when it looks like a field name or key id (1-32 of `A-Za-z0-9_.:-`), else `…`:
/// names come from the request too, and a secret (~90 characters), a token or a hash
/// pasted where a name or id goes must not come back in an answer.
pub fn shown_name(name: &str) -> &str {
    let plain = !name.is_empty()
        && name.len() <= SHOWN_NAME_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    if plain { name } else { "…" }
}

/// Replace every double-quoted part of a serde message (a value from the request) with
/// `"…"`, so a misplaced secret never comes back in an error. Names quoted with backticks
/// (field names, serde's unknown field or parameter) stay only when short and plain
/// ([`shown_name`]): a secret sent as a field name is a name too.
pub fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    let mut name: Option<String> = None;
    for c in message.chars() {
        if let Some(n) = name.as_mut() {
            if c == '`' {
                out.push_str(shown_name(n));
                out.push('`');
                name = None;
            } else {
                n.push(c);
            }
        } else if c == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
            if c == '`' {
                name = Some(String::new());
            }
        }
    }
    if inside {
        out.push_str("…\"");
    }
    if name.is_some() {
        out.push_str("…`");
    }
    hide_long_words(&out)
}

/// Replace every run of name-like characters longer than [`SHOWN_NAME_MAX`] with `…`
/// (serde and axum put request parts outside quotes too, e.g. a query parameter's name
/// as a path prefix: `kw_prod_…: unknown field`).
fn hide_long_words(message: &str) -> String {
    let wordy =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+' | '/' | '=');
    let mut out = String::with_capacity(message.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.len() > SHOWN_NAME_MAX {
            out.push('…');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in message.chars() {
        if wordy(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// A JSON body that did not parse: 400 for syntax, 422 for the wrong shape.
pub fn json_error(e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let msg = scrub(&e.to_string());
    match e.classify() {
        Category::Data => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("request body has the wrong shape: {msg}"),
        ),
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("request body is not valid JSON: {msg}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_hides_quoted_values() {
        assert_eq!(
            scrub("invalid type: string \"kw_prod_secret\", expected u64 at line 1"),
            "invalid type: string \"…\", expected u64 at line 1"
        );
        assert_eq!(scrub("missing field `key`"), "missing field `key`");
        assert_eq!(scrub("open \"abc"), "open \"…\"");
        let secret = format!("kw_prod_abcdefghijklmnop_{}", "x".repeat(60));
        assert_eq!(
            scrub(&format!(
                "unknown field `{secret}`, expected one of `id`, `name` at line 1"
            )),
            "unknown field `…`, expected one of `id`, `name` at line 1"
        );
        assert_eq!(scrub("unknown field `a b`"), "unknown field `…`");
        assert_eq!(
            scrub(&format!(
                "Failed to deserialize query string: {secret}: unknown field"
            )),
            "Failed to deserialize query string: …: unknown field"
        );
        assert_eq!(scrub("cut `kw_prod_abc"), "cut `…`");
        assert_eq!(shown_name("twy3p45kv3zsagrq"), "twy3p45kv3zsagrq");
        assert_eq!(shown_name(&"a".repeat(64)), "…");
    }

    #[test]
    fn store_errors_map_to_statuses() {
        let s = |e: StoreError| ApiError::from(e).status;
        assert_eq!(s(StoreError::NotFound("x".into())), StatusCode::NOT_FOUND);
        assert_eq!(
            s(StoreError::Conflict {
                id: "x".into(),
                expected: 1,
                found: 2
            }),
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(
            s(StoreError::Invalid("x".into())),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(s(StoreError::Refused("x".into())), StatusCode::CONFLICT);
    }
}
