//! The `http` store kind: a `Store` speaking keyward's `/v1` store protocol (as served by
//! `keyward serve`, described in `schemas/openapi.yaml`) with reqwest over rustls. Owns
//! timeouts, retries with backoff and turning HTTP answers into `StoreError`s that name
//! the store, the URL and what the server said. Must never put the bearer token or a
//! secret hash into an error, a log line or Debug output.
//!
//! Retries: a request that never reached the server (connection refused, DNS, TLS) is
//! retried for every call; a timeout, a dropped connection or a 502/503/504/429 answer is
//! retried only for calls that are safe to repeat: reads, `unlock`, and `create`, which
//! carries an `Idempotency-Key` so a retried create returns the first answer.

use std::sync::Once;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::RngCore;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{
    Actor, Capabilities, Event, KeyPatch, KeyStatus, KeyWrite, Lease, ListFilter, LiveKey, NewKey,
    Page, PageAt, Rotate, Store, StoreError, StoreResult, Verdict, Writer,
};

/// The header a change names its apply lease in (the server checks it against the store's).
pub const LEASE_HEADER: &str = "x-keyward-lease";
/// How long to wait for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts per call (the first one included).
pub const ATTEMPTS: u32 = 4;
/// Largest page asked for.
pub const PAGE: usize = 1000;

/// Install rustls' ring provider once per process (reqwest needs one before a client).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is installed already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A store reached over HTTP.
pub struct HttpStore {
    name: String,
    base: Url,
    token: Option<SecretString>,
    /// Where the token came from, for hints (e.g. `$KEYWARD_SANDBOX_TOKEN`).
    token_source: String,
    client: reqwest::Client,
    backoff: Duration,
}

impl std::fmt::Debug for HttpStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpStore")
            .field("name", &self.name)
            .field("url", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    holder: Option<String>,
    #[serde(default)]
    lease_id: Option<String>,
    #[serde(default)]
    until: Option<DateTime<Utc>>,
    #[serde(default)]
    current_version: Option<u64>,
    /// Why a `lease_lost` lease is not held.
    #[serde(default)]
    why: Option<String>,
}

#[derive(Deserialize)]
struct EventPage {
    items: Vec<Event>,
}

/// Whether a failed attempt may be repeated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Only when the request surely never reached the server.
    ConnectOnly,
    /// Also after timeouts and 502/503/504/429 (reads, idempotent writes).
    Safe,
}

struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl HttpStore {
    /// `GET /v1/budget`: the server's budget and today's spending (a server without the
    /// route has no budget).
    async fn budget_page(&self) -> StoreResult<super::budget::BudgetPage> {
        let url = self.url_for(&["v1", "budget"]);
        let got = self
            .json(Method::GET, url, None, HeaderMap::new(), Retry::Safe, None)
            .await;
        match got {
            Err(StoreError::NotFound(_)) => Ok(super::budget::BudgetPage {
                budget: None,
                day: String::new(),
                spent: Vec::new(),
            }),
            other => other,
        }
    }

    /// A store at `url` (e.g. `http://127.0.0.1:7450`), authenticating with `token`.
    /// `token_source` names where the token came from, for error hints.
    pub fn new(
        name: &str,
        url: &str,
        token: Option<SecretString>,
        token_source: &str,
    ) -> StoreResult<HttpStore> {
        install_crypto_provider();
        let mut base = Url::parse(url).map_err(|e| {
            StoreError::Invalid(format!("store `{name}`: url `{url}` is not valid: {e}"))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(StoreError::Invalid(format!(
                "store `{name}`: url `{url}` must be http:// or https://"
            )));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(StoreError::Invalid(format!(
                "store `{name}`: put no credentials in the url; use token_env"
            )));
        }
        base.set_query(None);
        base.set_fragment(None);
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                StoreError::Backend(format!("store `{name}`: cannot build an HTTP client: {e}"))
            })?;
        Ok(HttpStore {
            name: name.to_owned(),
            base,
            token,
            token_source: token_source.to_owned(),
            client,
            backoff: Duration::from_millis(100),
        })
    }

    /// Shorten the retry backoff (tests).
    pub fn with_backoff(mut self, backoff: Duration) -> HttpStore {
        self.backoff = backoff;
        self
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    fn url_for(&self, segments: &[&str]) -> Url {
        let mut u = self.base.clone();
        if let Ok(mut p) = u.path_segments_mut() {
            p.pop_if_empty();
            p.extend(segments);
        }
        u
    }

    fn where_(&self, url: &Url) -> String {
        format!("store `{}` ({})", self.name, url)
    }

    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
        headers: HeaderMap,
        retry: Retry,
    ) -> StoreResult<Answer> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self
                .client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(t) = &self.token {
                req = req.bearer_auth(t.expose_secret());
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let last = attempt >= ATTEMPTS;
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let transient = matches!(
                        status,
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                            | StatusCode::TOO_MANY_REQUESTS
                    );
                    if transient && retry == Retry::Safe && !last {
                        tracing::debug!(store = %self.name, %status, attempt, "retrying");
                        self.sleep(attempt).await;
                        continue;
                    }
                    let body = resp.bytes().await.map_err(|e| {
                        StoreError::Backend(format!(
                            "{}: reading the answer failed: {}",
                            self.where_(&url),
                            clean(&e)
                        ))
                    })?;
                    return Ok(Answer {
                        status,
                        body: body.to_vec(),
                    });
                }
                Err(e) => {
                    let may_retry = e.is_connect() || retry == Retry::Safe;
                    if may_retry && !last {
                        tracing::debug!(store = %self.name, attempt, error = %clean(&e), "retrying");
                        self.sleep(attempt).await;
                        continue;
                    }
                    let what = if e.is_timeout() {
                        format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())
                    } else if e.is_connect() {
                        "cannot connect (is `keyward serve` running there?)".to_string()
                    } else {
                        "the request failed".to_string()
                    };
                    return Err(StoreError::Backend(format!(
                        "{}: {what} after {attempt} attempt(s): {}",
                        self.where_(&url),
                        clean(&e)
                    )));
                }
            }
        }
    }

    async fn sleep(&self, attempt: u32) {
        let base = self
            .backoff
            .saturating_mul(3u32.saturating_pow(attempt - 1));
        let jitter = Duration::from_millis(u64::from(rand::rngs::OsRng.next_u32() % 50));
        tokio::time::sleep(base + jitter).await;
    }

    /// Turn a non-success answer into the matching `StoreError`.
    fn error(&self, url: &Url, ans: &Answer, id: Option<&str>) -> StoreError {
        let parsed: Option<ErrorBody> = serde_json::from_slice(&ans.body).ok();
        let (code, message) = match &parsed {
            Some(b) => (b.code.as_str(), b.message.clone()),
            None => (
                "",
                String::from_utf8_lossy(&ans.body)
                    .chars()
                    .take(300)
                    .collect(),
            ),
        };
        let said = format!(
            "{}: HTTP {}: {message}",
            self.where_(url),
            ans.status.as_u16()
        );
        let id = id.unwrap_or("").to_owned();
        match (ans.status, code) {
            (StatusCode::UNAUTHORIZED, _) => StoreError::Refused(format!(
                "{said}\n  hint: the token in {} is missing, unknown or revoked; make one with \
                 `keyward token create NAME --role read|write` on the server",
                self.token_source
            )),
            (StatusCode::FORBIDDEN, _) => StoreError::Refused(format!(
                "{said}\n  hint: the token in {} has too narrow a role: `plan` needs a `read` \
                 token, `apply` a `write` token",
                self.token_source
            )),
            (StatusCode::NOT_FOUND, _) => StoreError::NotFound(id),
            (StatusCode::PRECONDITION_FAILED, _) => StoreError::Conflict {
                id,
                expected: 0,
                found: parsed.and_then(|b| b.current_version).unwrap_or(0),
            },
            (StatusCode::CONFLICT, "locked") => {
                let b = parsed.unwrap_or(ErrorBody {
                    code: String::new(),
                    message: String::new(),
                    holder: None,
                    lease_id: None,
                    until: None,
                    current_version: None,
                    why: None,
                });
                StoreError::Locked {
                    holder: b.holder.unwrap_or_else(|| "unknown".into()),
                    id: b.lease_id.unwrap_or_default(),
                    until: b.until.unwrap_or_else(Utc::now),
                }
            }
            (StatusCode::CONFLICT, "already_exists") => StoreError::AlreadyExists(id),
            (StatusCode::CONFLICT, "lease_lost") => {
                let (lease, why) = parsed.map(|b| (b.lease_id, b.why)).unwrap_or_default();
                StoreError::LeaseLost {
                    lease: lease.unwrap_or_else(|| "(unknown)".into()),
                    why: why.unwrap_or(message),
                }
            }
            (StatusCode::CONFLICT, "refused") => StoreError::Refused(message),
            (StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY, _) => {
                StoreError::Invalid(said)
            }
            _ => StoreError::Backend(said),
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
        headers: HeaderMap,
        retry: Retry,
        id: Option<&str>,
    ) -> StoreResult<T> {
        let ans = self.call(method, url.clone(), body, headers, retry).await?;
        if !ans.status.is_success() {
            return Err(self.error(&url, &ans, id));
        }
        serde_json::from_slice(&ans.body).map_err(|e| {
            StoreError::Backend(format!(
                "{}: the answer is not what the protocol says: {e}",
                self.where_(&url)
            ))
        })
    }

    async fn empty(
        &self,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
        headers: HeaderMap,
        retry: Retry,
        id: Option<&str>,
    ) -> StoreResult<()> {
        let ans = self.call(method, url.clone(), body, headers, retry).await?;
        if !ans.status.is_success() {
            return Err(self.error(&url, &ans, id));
        }
        Ok(())
    }

    /// `If-Match` (the version), `X-Keyward-Commit` (the actor's commit) and
    /// `X-Keyward-Lease` (the apply lease the change is made under, which the server checks).
    fn change_headers(&self, version: Option<u64>, by: Writer<'_>) -> HeaderMap {
        let (actor, mut h) = (by.actor, HeaderMap::new());
        if let Some(l) = by.lease
            && let Ok(v) = HeaderValue::from_str(l)
        {
            h.insert(LEASE_HEADER, v);
        }
        if let Some(v) = version
            && let Ok(v) = HeaderValue::from_str(&format!("\"{v}\""))
        {
            h.insert(reqwest::header::IF_MATCH, v);
        }
        if let Some(c) = &actor.commit
            && let Ok(v) = HeaderValue::from_str(c)
        {
            h.insert("x-keyward-commit", v);
        }
        h
    }

    /// Fill in the version the caller sent in a `Conflict` (the server knows only its own).
    fn with_expected(e: StoreError, version: u64) -> StoreError {
        match e {
            StoreError::Conflict { id, found, .. } => StoreError::Conflict {
                id,
                expected: version,
                found,
            },
            e => e,
        }
    }

    /// A change to key `id` made with `If-Match: version` (update, rotate, status changes):
    /// retried only when the connection failed, a 412 names the version that was expected.
    async fn versioned(
        &self,
        method: Method,
        path: &[&str],
        body: Option<serde_json::Value>,
        w: KeyWrite<'_>,
    ) -> StoreResult<LiveKey> {
        let url = self.url_for(path);
        let headers = self.change_headers(Some(w.version), w.writer());
        self.json(method, url, body, headers, Retry::ConnectOnly, Some(w.id))
            .await
            .map_err(|e| Self::with_expected(e, w.version))
    }
}

/// The body of `POST /v1/key-batches` and of its answer (`keys` in order).
#[derive(Debug, serde::Serialize, Deserialize)]
pub struct KeyBatch<T> {
    pub keys: Vec<T>,
}

/// Largest request body a batch is cut to (under the server's 64 KiB body limit, with room
/// for the envelope): about 80 keys a request.
const BATCH_BODY: usize = 56 * 1024;

/// `keys` as JSON, cut into bodies of at most [`BATCH_BODY`] bytes (at least one key each).
fn batch_bodies(keys: &[NewKey]) -> StoreResult<Vec<Vec<serde_json::Value>>> {
    let mut out: Vec<Vec<serde_json::Value>> = Vec::new();
    let mut size = 0;
    for k in keys {
        let v = serde_json::to_value(k)
            .map_err(|e| StoreError::Invalid(format!("cannot encode the key: {e}")))?;
        let len = v.to_string().len() + 1;
        match out.last_mut() {
            Some(part) if size + len <= BATCH_BODY => part.push(v),
            _ => {
                out.push(vec![v]);
                size = 0;
            }
        }
        size += len;
    }
    Ok(out)
}

/// A reqwest error's text without the URL's query (it holds nothing secret, but keep it short).
fn clean(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn new_idempotency_key(id: &str) -> String {
    let mut b = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("create-{id}-{}", hex::encode(b))
}

#[async_trait]
impl Store for HttpStore {
    fn name(&self) -> &str {
        &self.name
    }

    /// The protocol's capabilities, the same as the database-backed stores behind it
    /// (`GET /v1/capabilities` reports the server's own).
    fn capabilities(&self) -> Capabilities {
        super::rules::capabilities()
    }

    async fn list(&self, filter: &ListFilter, at: PageAt<'_>) -> StoreResult<Page<LiveKey>> {
        let PageAt { cursor, limit } = at;
        let mut url = self.url_for(&["v1", "keys"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("limit", &limit.clamp(1, PAGE).to_string());
            if let Some(c) = cursor {
                q.append_pair("cursor", c);
            }
            if let Some(o) = &filter.owner {
                q.append_pair("owner", o);
            }
            if let Some(s) = filter.status {
                q.append_pair("status", s.as_str());
            }
            if let Some(e) = &filter.environment {
                q.append_pair("environment", e);
            }
            if let Some((k, v)) = &filter.label {
                q.append_pair("label", &format!("{k}={v}"));
            }
            if let Some(m) = filter.managed {
                q.append_pair("managed", if m { "true" } else { "false" });
            }
            if let Some(t) = &filter.expiring_before {
                q.append_pair("expiring_before", &t.to_rfc3339());
            }
            if filter.never_expires {
                q.append_pair("never_expires", "true");
            }
        }
        self.json(Method::GET, url, None, HeaderMap::new(), Retry::Safe, None)
            .await
    }

    async fn get(&self, id: &str) -> StoreResult<Option<LiveKey>> {
        let url = self.url_for(&["v1", "keys", id]);
        match self
            .json(
                Method::GET,
                url,
                None,
                HeaderMap::new(),
                Retry::Safe,
                Some(id),
            )
            .await
        {
            Ok(k) => Ok(Some(k)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create(&self, key: NewKey, by: Writer<'_>) -> StoreResult<LiveKey> {
        let url = self.url_for(&["v1", "keys"]);
        let id = key.id.clone();
        let mut h = self.change_headers(None, by);
        if let Ok(v) = HeaderValue::from_str(&new_idempotency_key(&id)) {
            h.insert("idempotency-key", v);
        }
        let body = serde_json::to_value(&key)
            .map_err(|e| StoreError::Invalid(format!("cannot encode the key: {e}")))?;
        self.json(Method::POST, url, Some(body), h, Retry::Safe, Some(&id))
            .await
    }

    /// `POST /v1/key-batches`, one request per [`BATCH_BODY`] of keys, each taken all or
    /// none by the server (the earlier parts stay registered when a later one fails).
    /// Retried only when a request surely never reached the server; after any other
    /// failure the caller asks for the keys. A server without the endpoint (404/405, an
    /// older keyward) gets the keys one `create` at a time.
    async fn create_batch(&self, keys: Vec<NewKey>, by: Writer<'_>) -> StoreResult<Vec<LiveKey>> {
        let url = self.url_for(&["v1", "key-batches"]);
        let mut out = Vec::with_capacity(keys.len());
        for part in batch_bodies(&keys)? {
            let n = part.len();
            let body = json!({ "keys": part });
            let h = self.change_headers(None, by);
            let ans = self
                .call(Method::POST, url.clone(), Some(body), h, Retry::ConnectOnly)
                .await?;
            if matches!(
                ans.status,
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
            ) {
                for k in keys.into_iter().skip(out.len()) {
                    out.push(self.create(k, by).await?);
                }
                return Ok(out);
            }
            if !ans.status.is_success() {
                return Err(self.error(&url, &ans, keys.get(out.len()).map(|k| k.id.as_str())));
            }
            let got: KeyBatch<LiveKey> = serde_json::from_slice(&ans.body).map_err(|e| {
                StoreError::Backend(format!(
                    "{}: the answer is not what the protocol says: {e}",
                    self.where_(&url)
                ))
            })?;
            if got.keys.len() != n {
                return Err(StoreError::Backend(format!(
                    "{}: {n} keys sent, {} answered",
                    self.where_(&url),
                    got.keys.len()
                )));
            }
            out.extend(got.keys);
        }
        Ok(out)
    }

    async fn update(&self, w: KeyWrite<'_>, patch: KeyPatch) -> StoreResult<LiveKey> {
        let body = serde_json::to_value(&patch)
            .map_err(|e| StoreError::Invalid(format!("cannot encode the patch: {e}")))?;
        self.versioned(Method::PATCH, &["v1", "keys", w.id], Some(body), w)
            .await
    }

    async fn rotate(&self, w: KeyWrite<'_>, rotate: Rotate) -> StoreResult<LiveKey> {
        let body = serde_json::to_value(&rotate)
            .map_err(|e| StoreError::Invalid(format!("cannot encode the rotation: {e}")))?;
        self.versioned(Method::POST, &["v1", "keys", w.id, "rotate"], Some(body), w)
            .await
    }

    async fn set_status(&self, w: KeyWrite<'_>, to: KeyStatus) -> StoreResult<LiveKey> {
        self.versioned(Method::POST, &["v1", "keys", w.id, to.verb()], None, w)
            .await
    }

    async fn delete(&self, w: KeyWrite<'_>) -> StoreResult<()> {
        let url = self.url_for(&["v1", "keys", w.id]);
        let headers = self.change_headers(Some(w.version), w.writer());
        self.empty(
            Method::DELETE,
            url,
            None,
            headers,
            Retry::ConnectOnly,
            Some(w.id),
        )
        .await
        .map_err(|e| Self::with_expected(e, w.version))
    }

    async fn lock(&self, holder: &str, ttl: chrono::Duration) -> StoreResult<Lease> {
        let url = self.url_for(&["v1", "locks"]);
        let body = json!({ "holder": holder, "ttl_seconds": ttl.num_seconds().max(1) });
        self.json(
            Method::POST,
            url,
            Some(body),
            HeaderMap::new(),
            Retry::ConnectOnly,
            None,
        )
        .await
    }

    async fn unlock(&self, lease_id: &str) -> StoreResult<()> {
        let url = self.url_for(&["v1", "locks", lease_id]);
        self.empty(
            Method::DELETE,
            url,
            None,
            HeaderMap::new(),
            Retry::Safe,
            None,
        )
        .await
    }

    /// `POST /v1/locks/{id}/renew` (idempotent: safe to retry). A server without the
    /// route (an older keyward) cannot renew: `Refused`, and the lease keeps its ttl.
    async fn renew(&self, lease_id: &str, ttl: chrono::Duration) -> StoreResult<Lease> {
        let url = self.url_for(&["v1", "locks", lease_id, "renew"]);
        let body = json!({ "ttl_seconds": ttl.num_seconds().max(1) });
        let ans = self
            .call(
                Method::POST,
                url.clone(),
                Some(body),
                HeaderMap::new(),
                Retry::Safe,
            )
            .await?;
        if matches!(
            ans.status,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
        ) {
            return Err(StoreError::Refused(format!(
                "{}: the server cannot renew an apply lease (an older keyward)",
                self.where_(&url)
            )));
        }
        if !ans.status.is_success() {
            return Err(self.error(&url, &ans, None));
        }
        serde_json::from_slice(&ans.body).map_err(|e| {
            StoreError::Backend(format!(
                "{}: the answer is not what the protocol says: {e}",
                self.where_(&url)
            ))
        })
    }

    /// Asks the server; `now` is the server's clock there, so it is not sent.
    async fn verify(&self, presented: &str, _now: DateTime<Utc>) -> StoreResult<Verdict> {
        let url = self.url_for(&["v1", "verify"]);
        let body = json!({ "key": presented });
        self.json(
            Method::POST,
            url,
            Some(body),
            HeaderMap::new(),
            Retry::ConnectOnly,
            None,
        )
        .await
    }

    /// `GET /v1/usage?since=DAY`; a server without the route keeps no usage.
    async fn usage(&self, since: &str) -> StoreResult<Option<super::usage::Usage>> {
        let mut url = self.url_for(&["v1", "usage"]);
        url.query_pairs_mut().append_pair("since", since);
        let got: Result<super::usage::UsagePage, _> = self
            .json(Method::GET, url, None, HeaderMap::new(), Retry::Safe, None)
            .await;
        match got {
            Ok(p) => Ok(p.usage()),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/budget`.
    async fn budget(&self) -> StoreResult<Option<super::budget::Budget>> {
        Ok(self.budget_page().await?.budget)
    }

    /// `PUT /v1/budget`.
    async fn set_budget(
        &self,
        budget: Option<&super::budget::Budget>,
        actor: &Actor,
    ) -> StoreResult<()> {
        let url = self.url_for(&["v1", "budget"]);
        let body = json!({ "budget": budget });
        self.empty(
            Method::PUT,
            url,
            Some(body),
            self.change_headers(None, super::Writer::new(actor)),
            Retry::Safe,
            None,
        )
        .await
    }

    /// `GET /v1/budget` (the server's today).
    async fn budget_spent(&self, day: &str) -> StoreResult<Vec<super::budget::Spent>> {
        let page = self.budget_page().await?;
        Ok(if page.day == day {
            page.spent
        } else {
            Vec::new()
        })
    }

    async fn events(&self, after: Option<i64>, limit: usize) -> StoreResult<Vec<Event>> {
        let mut url = self.url_for(&["v1", "events"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("limit", &limit.clamp(1, PAGE).to_string());
            if let Some(a) = after {
                q.append_pair("after", &a.to_string());
            }
        }
        let page: EventPage = self
            .json(Method::GET, url, None, HeaderMap::new(), Retry::Safe, None)
            .await?;
        Ok(page.items)
    }

    async fn record(&self, action: &str, detail: Value, actor: &Actor) -> StoreResult<()> {
        let url = self.url_for(&["v1", "events"]);
        let body = json!({ "action": action, "detail": detail });
        self.empty(
            Method::POST,
            url,
            Some(body),
            self.change_headers(None, Writer::new(actor)),
            Retry::ConnectOnly,
            None,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_debug() {
        let s = HttpStore::new(
            "sbx",
            "http://127.0.0.1:7450/prefix/",
            Some(SecretString::from("kwt_secret_token")),
            "$T",
        )
        .unwrap();
        assert_eq!(
            s.url_for(&["v1", "keys", "a/b"]).as_str(),
            "http://127.0.0.1:7450/prefix/v1/keys/a%2Fb"
        );
        assert!(!format!("{s:?}").contains("kwt_secret_token"));
        assert!(HttpStore::new("x", "ftp://h", None, "").is_err());
        assert!(HttpStore::new("x", "http://u:p@h", None, "").is_err());
        assert!(HttpStore::new("x", "not a url", None, "").is_err());
    }

    #[tokio::test]
    async fn connection_refused_is_retried_then_named() {
        // Port 9 (discard) on loopback is closed on test machines.
        let s = HttpStore::new("sbx", "http://127.0.0.1:9", None, "$T")
            .unwrap()
            .with_backoff(Duration::from_millis(1));
        let e = s.get("k").await.unwrap_err().to_string();
        assert!(
            e.contains("store `sbx`") && e.contains("127.0.0.1:9"),
            "{e}"
        );
        assert!(e.contains("after 4 attempt(s)"), "{e}");
    }
}
