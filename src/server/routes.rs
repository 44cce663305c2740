//! The `/v1` handlers: each checks the token's role, parses the request strictly, calls
//! the `Store` and answers JSON. Must not log or return a secret, a secret hash or a token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::{ApiError, json_error, scrub, shown_name};
use super::idempotency::{Claim, STALE_CLAIM};
use super::tokens::{Principal, Role};
use crate::store::http::KeyBatch;
use crate::store::{
    Actor, KeyPatch, KeyStatus, KeyWrite, ListFilter, LiveKey, NewKey, Page, PageAt, Rotate,
    StoreError, Writer,
};

/// Largest page of keys or events.
pub const MAX_LIMIT: usize = 1000;
/// Longest accepted presented key in `/v1/verify` (anything longer is malformed anyway).
const MAX_PRESENTED: usize = 512;

type ApiResult<T = Response> = Result<T, ApiError>;

// ---------------------------------------------------------------- request plumbing

/// Check the bearer token and that its role allows `needed`.
pub(super) fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    needed: Role,
) -> ApiResult<Principal> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>`",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("malformed Authorization header: expected `Bearer <token>`")
        })?;
    let principal = state
        .tokens()
        .authenticate(token)
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
    if !principal.role.allows(needed) {
        return Err(ApiError::forbidden(format!(
            "token `{}` has role `{}`; this request needs a `{}` token",
            principal.name, principal.role, needed
        )));
    }
    Ok(principal)
}

/// A request body as bytes; a body over the limit is a JSON 413, any other read failure a
/// JSON 400.
pub(super) struct RawBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(RawBody(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body is larger than {} bytes", super::BODY_LIMIT),
            )),
            Err(e) => Err(ApiError::bad_request(format!(
                "cannot read the request body: {}",
                scrub(&e.body_text())
            ))),
        }
    }
}

/// Parse a JSON body: 400 for bad JSON, 422 for the wrong shape (any content type).
fn parse_json<T: DeserializeOwned>(RawBody(body): &RawBody) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty; a JSON object is required",
        ));
    }
    serde_json::from_slice(body).map_err(|e| json_error(&e))
}

/// Parse a body into a protocol type that ignores unknown fields in Rust (shared store
/// types), refusing unknown fields here: the known ones are those the parsed value
/// serialises (every field of those types is always serialised).
fn parse_strict<T: DeserializeOwned + Serialize>(
    body: &RawBody,
) -> ApiResult<(T, serde_json::Value)> {
    let value: serde_json::Value = parse_json(body)?;
    let parsed: T = serde_json::from_value(value.clone()).map_err(|e| json_error(&e))?;
    refuse_unknown(&value, &parsed)?;
    Ok((parsed, value))
}

/// 422 when the object `given` has a field `parsed` does not serialise (an unknown field).
fn refuse_unknown<T: Serialize>(given: &serde_json::Value, parsed: &T) -> ApiResult<()> {
    if let (Some(given), Ok(serde_json::Value::Object(known))) =
        (given.as_object(), serde_json::to_value(parsed))
        && let Some(unknown) = given.keys().find(|k| !known.contains_key(*k))
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!(
                "request body has the wrong shape: unknown field `{}`",
                shown_name(unknown)
            ),
        ));
    }
    Ok(())
}

/// The query parameters: 400 (with the parser's message, scrubbed) when they do not parse.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    let Query(p) = q.map_err(|e| ApiError::bad_request(scrub(&e.body_text())))?;
    Ok(p)
}

/// A page size from `?limit=` (default 100): 400 outside 1-`MAX_LIMIT`.
fn page_limit(limit: Option<usize>) -> ApiResult<usize> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be 1-{MAX_LIMIT}"
        )));
    }
    Ok(limit)
}

fn path_id(p: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    let Path(id) = p.map_err(|e| ApiError::bad_request(scrub(&e.body_text())))?;
    if id.is_empty() || id.len() > 128 {
        return Err(ApiError::not_found("no such key"));
    }
    Ok(id)
}

fn actor(p: &Principal, headers: &HeaderMap) -> ApiResult<Actor> {
    Ok(Actor {
        who: format!("token:{}", p.name),
        commit: kept_header(headers, "X-Keyward-Commit", 100)?,
    })
}

/// The apply lease a change is made under (`X-Keyward-Lease`), which the store checks
/// against its own: absent for a change outside any apply.
fn lease_header(headers: &HeaderMap) -> ApiResult<Option<String>> {
    kept_header(headers, crate::store::http::LEASE_HEADER, 64)
}

/// The version from `If-Match` (`"3"`, `W/"3"` or `3`): 428 when missing.
fn if_match(headers: &HeaderMap) -> ApiResult<u64> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
            "this change needs an If-Match header with the key's version (its ETag)",
        ));
    };
    let s = v.to_str().unwrap_or("").trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    let s = s.trim_matches('"');
    s.parse::<u64>().map_err(|_| {
        ApiError::bad_request(
            "If-Match must be the key's ETag: a quoted version number such as \"3\"",
        )
    })
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = (status, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a response");
            ApiError::internal().into_response()
        }
    }
}

fn key_response(status: StatusCode, key: &LiveKey) -> Response {
    let mut r = json_response(status, key);
    r.headers_mut().insert(header::ETAG, etag(key.version));
    r
}

// ---------------------------------------------------------------- health

pub(super) async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.events(Some(i64::MAX - 1), 1).await {
        Ok(_) => json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "status": "unavailable" }),
            )
        }
    }
}

// ---------------------------------------------------------------- keys

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    owner: Option<String>,
    status: Option<String>,
    environment: Option<String>,
    /// `key=value`
    label: Option<String>,
    managed: Option<bool>,
    /// RFC 3339 or YYYY-MM-DD
    expiring_before: Option<String>,
    never_expires: Option<bool>,
    cursor: Option<String>,
    limit: Option<usize>,
}

fn parse_instant(field: &str, s: &str) -> ApiResult<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Ok(d.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| {
            ApiError::bad_request(format!("{field} must be an RFC 3339 time or YYYY-MM-DD"))
        })
}

pub(super) async fn list_keys(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<ListParams>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Role::Read)?;
    let p = query(q)?;
    let status =
        match p.status.as_deref() {
            None => None,
            Some(s) => Some(KeyStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request("status must be active, disabled or revoked")
            })?),
        };
    let label = match p.label {
        None => None,
        Some(l) => {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| ApiError::bad_request("label must be key=value"))?;
            Some((k.to_owned(), v.to_owned()))
        }
    };
    let expiring_before = match p.expiring_before.as_deref() {
        None => None,
        Some(s) => Some(parse_instant("expiring_before", s)?),
    };
    let limit = page_limit(p.limit)?;
    let filter = ListFilter {
        owner: p.owner,
        status,
        environment: p.environment,
        label,
        managed: p.managed,
        expiring_before,
        never_expires: p.never_expires.unwrap_or(false),
    };
    let page: Page<LiveKey> = state
        .store
        .list(
            &filter,
            PageAt {
                cursor: p.cursor.as_deref(),
                limit,
            },
        )
        .await
        .map_err(|e| match e {
            StoreError::Invalid(m) => ApiError::bad_request(m),
            e => e.into(),
        })?;
    Ok(json_response(StatusCode::OK, &page))
}

pub(super) async fn get_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    authorize(&state, &headers, Role::Read)?;
    let id = path_id(id)?;
    let key = state
        .store
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("key {} not found", shown_name(&id))))?;
    if let Some(v) = headers.get(header::IF_NONE_MATCH)
        && v.as_bytes() == etag(key.version).as_bytes()
    {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert(header::ETAG, etag(key.version));
        return Ok(r);
    }
    Ok(key_response(StatusCode::OK, &key))
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    kept_header(headers, "Idempotency-Key", 200)
}

/// An optional header the server keeps (X-Keyward-Commit in events, Idempotency-Key in its
/// log): 1-`max` printable ASCII characters and never a keyward secret; 400 otherwise.
fn kept_header(headers: &HeaderMap, name: &str, max: usize) -> ApiResult<Option<String>> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= max && s.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request(format!("{name} must be 1-{max} printable ASCII characters"))
        })?;
    if crate::leak::contains(s) {
        return Err(ApiError::bad_request(format!(
            "{name} has the format of a secret or private key; never send a secret there"
        )));
    }
    Ok(Some(s.to_owned()))
}

/// Outcome of a create, as status + JSON body (what is persisted for replays).
fn create_outcome(r: Result<LiveKey, StoreError>) -> (Result<LiveKey, ApiError>, bool) {
    match r {
        Ok(k) => (Ok(k), true),
        // Backend failures may succeed on a retry: not recorded.
        Err(e @ StoreError::Backend(_)) => (Err(e.into()), false),
        Err(e) => (Err(e.into()), true),
    }
}

pub(super) async fn create_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: RawBody,
) -> ApiResult {
    let p = authorize(&state, &headers, Role::Write)?;
    let actor = actor(&p, &headers)?;
    let lease = lease_header(&headers)?;
    let by = Writer::new(&actor).under(lease.as_deref());
    let idem = idempotency_key(&headers)?;
    let (new, value): (NewKey, _) = parse_strict(&body)?;
    let Some(idem) = idem else {
        let key = state.store.create(new, by).await?;
        tracing::info!(token = %p.name, key = %key.id, "create");
        return Ok(created(&key));
    };
    // The fingerprint covers the whole request body (serde_json orders object keys), so a
    // reused header with a different body is told apart from a retry.
    let fingerprint = hex::encode(Sha256::digest(value.to_string().as_bytes()));
    let key_id = new.id.clone();
    let log = &state.idempotency;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let claim = log.claim(&idem, &fingerprint, &key_id).await.map_err(|e| {
            tracing::error!(error = %e, "idempotency log");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the idempotency log failed; retry",
            )
        })?;
        match claim {
            Claim::Claimed => break,
            Claim::Done {
                fingerprint: fp,
                status,
                body,
            } => {
                if fp != fingerprint {
                    return Err(reused());
                }
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                let mut r = (status, body).into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                if status.is_success()
                    && let Ok(Some(k)) = state.store.get(&key_id).await
                    && k.version == 1
                {
                    r.headers_mut().insert(header::ETAG, etag(1));
                }
                return Ok(r);
            }
            Claim::Pending {
                fingerprint: fp,
                since,
                ..
            } => {
                if fp != fingerprint {
                    return Err(reused());
                }
                if Utc::now() - since > STALE_CLAIM {
                    // Its server died mid-request. If the key got created, that is the answer.
                    if log.take_over(&idem, since).await.unwrap_or(false) {
                        if let Some(k) = state.store.get(&key_id).await? {
                            let body = serde_json::to_string(&k).unwrap_or_default();
                            let _ = log.complete(&idem, 201, &body).await;
                            return Ok(created(&k));
                        }
                        break;
                    }
                    continue;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "idempotency_in_progress",
                        "a request with this Idempotency-Key is still in progress; retry later",
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    let (outcome, record) = create_outcome(state.store.create(new, by).await);
    let (status, body) = match &outcome {
        Ok(k) => (
            StatusCode::CREATED,
            serde_json::to_string(k).unwrap_or_default(),
        ),
        Err(e) => (e.status, e.body_json().to_string()),
    };
    if record {
        if let Err(e) = log.complete(&idem, status.as_u16(), &body).await {
            tracing::error!(error = %e, "cannot store an idempotent answer");
        }
    } else if let Err(e) = log.release(&idem).await {
        tracing::error!(error = %e, "cannot release an idempotency claim");
    }
    let key = outcome?;
    tracing::info!(token = %p.name, key = %key.id, "create");
    Ok(created(&key))
}

/// Most keys one `POST /v1/key-batches` may register (the body limit bounds it too).
pub const MAX_BATCH: usize = 1000;

/// `POST /v1/key-batches`: register every key of the body in one store transaction, all or
/// none (`Store::create_batch`), answered in order. Not replayed by `Idempotency-Key`: the
/// ids are the client's, so a resent batch that was taken answers `already_exists`, and
/// the client asks for the keys (`GET /v1/keys/{id}`), as keyward's apply does.
pub(super) async fn create_batch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: RawBody,
) -> ApiResult {
    let p = authorize(&state, &headers, Role::Write)?;
    let actor = actor(&p, &headers)?;
    let lease = lease_header(&headers)?;
    let (batch, value): (KeyBatch<NewKey>, _) = parse_strict(&body)?;
    for (given, parsed) in value["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(&batch.keys)
    {
        refuse_unknown(given, parsed)?;
    }
    if batch.keys.is_empty() || batch.keys.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("a batch holds 1 to {MAX_BATCH} keys"),
        ));
    }
    let by = Writer::new(&actor).under(lease.as_deref());
    let keys = state.store.create_batch(batch.keys, by).await?;
    tracing::info!(token = %p.name, keys = keys.len(), "create batch");
    Ok(json_response(StatusCode::CREATED, &KeyBatch { keys }))
}

fn reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "this Idempotency-Key was used for a different request body",
    )
}

fn created(key: &LiveKey) -> Response {
    let mut r = key_response(StatusCode::CREATED, key);
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/keys/{}", key.id)) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    r
}

/// One change to one key.
enum Change {
    Update(KeyPatch),
    Rotate(Rotate),
    Status(KeyStatus),
    Delete,
}

/// Every change to one key (update, rotate, disable, enable, revoke, delete) goes through
/// here, checking in this order: a write token (401/403), the key id from the path
/// (400/404), the version the client saw from If-Match (428/400), the change itself
/// (`change`: the body, 400/422), the X-Keyward-Commit and X-Keyward-Lease headers (400);
/// then the store checks the lease and applies it (its errors map to their statuses: a
/// lease that is not the live one is 409 `lease_lost`, none while one is live 409 `locked`). The change is logged by token and key
/// id only. The answer is 200 with the changed key and its new ETag, or 204 for a delete.
async fn change_key(
    state: &AppState,
    headers: &HeaderMap,
    id: Result<Path<String>, PathRejection>,
    change: impl FnOnce() -> ApiResult<Change>,
) -> ApiResult {
    let p = authorize(state, headers, Role::Write)?;
    let id = path_id(id)?;
    let version = if_match(headers)?;
    let change = change()?;
    let actor = actor(&p, headers)?;
    let lease = lease_header(headers)?;
    let store = &state.store;
    let w = KeyWrite::new(&id, version, &actor).under(lease.as_deref());
    let (key, what) = match change {
        Change::Update(patch) => (store.update(w, patch).await?, "update"),
        Change::Rotate(rotate) => (store.rotate(w, rotate).await?, "rotate"),
        Change::Status(to) => (store.set_status(w, to).await?, to.verb()),
        Change::Delete => {
            store.delete(w).await?;
            tracing::info!(token = %p.name, key = %id, "delete");
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    };
    tracing::info!(token = %p.name, key = %id, "{what}");
    Ok(key_response(StatusCode::OK, &key))
}

pub(super) async fn patch_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: RawBody,
) -> ApiResult {
    change_key(&state, &headers, id, || {
        Ok(Change::Update(parse_strict::<KeyPatch>(&body)?.0))
    })
    .await
}

pub(super) async fn rotate_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: RawBody,
) -> ApiResult {
    change_key(&state, &headers, id, || {
        Ok(Change::Rotate(parse_strict::<Rotate>(&body)?.0))
    })
    .await
}

pub(super) async fn change_status(
    state: Arc<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    to: KeyStatus,
) -> ApiResult {
    change_key(&state, &headers, id, || Ok(Change::Status(to))).await
}

pub(super) async fn delete_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    change_key(&state, &headers, id, || Ok(Change::Delete)).await
}

// ---------------------------------------------------------------- usage

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageParams {
    /// The first UTC day, YYYY-MM-DD.
    since: String,
}

/// `GET /v1/usage?since=DAY`: the usage the store keeps (written by the servers' flushes).
pub(super) async fn usage(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<UsageParams>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Role::Read)?;
    let p = query(q)?;
    if !crate::store::usage::valid_day(&p.since) {
        return Err(ApiError::bad_request("since must be a day, YYYY-MM-DD"));
    }
    let usage = state.store.usage(&p.since).await?;
    let page = crate::store::usage::UsagePage::of(usage);
    Ok(json_response(StatusCode::OK, &page))
}

// ---------------------------------------------------------------- budget

/// `GET /v1/budget`: the shared daily budget the store enforces and today's spending.
pub(super) async fn budget(State(state): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult {
    authorize(&state, &headers, Role::Read)?;
    let day = crate::store::usage::day_of(&state.clock.now());
    let page = crate::store::budget::BudgetPage {
        budget: state.store.budget().await?,
        spent: state.store.budget_spent(&day).await?,
        day,
    };
    Ok(json_response(StatusCode::OK, &page))
}

/// `PUT /v1/budget`: write (or, with `null`, remove) the budget verify enforces.
pub(super) async fn set_budget(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: RawBody,
) -> ApiResult {
    let p = authorize(&state, &headers, Role::Write)?;
    let req: crate::store::budget::SetBudget = parse_json(&body)?;
    state
        .store
        .set_budget(req.budget.as_ref(), &actor(&p, &headers)?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------- verify

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    key: String,
}

/// A verify whose store call takes this long is logged (at debug: under overload there
/// would be many).
const SLOW_VERIFY: std::time::Duration = std::time::Duration::from_millis(100);

pub(super) async fn verify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: RawBody,
) -> ApiResult {
    authorize(&state, &headers, Role::Verify)?;
    let req: VerifyRequest = parse_json(&body)?;
    let req = zeroize::Zeroizing::new(req.key);
    let now = state.clock.now();
    let verdict = if req.len() > MAX_PRESENTED {
        crate::store::Verdict {
            valid: false,
            reason: crate::store::VerifyReason::Malformed,
            key: None,
        }
    } else {
        let started = std::time::Instant::now();
        let verdict = state.store.verify(&req, now).await?;
        let took = started.elapsed();
        if took >= SLOW_VERIFY {
            tracing::debug!(
                "slow verify: {} ms in the store ({:?})",
                took.as_millis(),
                verdict.reason
            );
        }
        verdict
    };
    if let Some(tally) = &state.usage {
        let id = super::usage::counted_id(&req, &verdict);
        tally.count(&id, verdict.reason, now);
    }
    Ok(json_response(StatusCode::OK, &verdict))
}

// ---------------------------------------------------------------- events

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventParams {
    after: Option<i64>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct EventPage {
    items: Vec<crate::store::Event>,
    /// Pass as `after` for the next page; absent at the end of the log.
    next: Option<i64>,
}

pub(super) async fn events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<EventParams>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Role::Read)?;
    let p = query(q)?;
    let limit = page_limit(p.limit)?;
    let items = state.store.events(p.after, limit).await?;
    let next = if items.len() == limit {
        items.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(json_response(StatusCode::OK, &EventPage { items, next }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordRequest {
    action: String,
    #[serde(default)]
    detail: serde_json::Value,
}

pub(super) async fn record_event(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: RawBody,
) -> ApiResult {
    let p = authorize(&state, &headers, Role::Write)?;
    let req: RecordRequest = parse_json(&body)?;
    state
        .store
        .record(&req.action, req.detail, &actor(&p, &headers)?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------- locks

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LockRequest {
    holder: String,
    ttl_seconds: i64,
}

/// A lease's ttl from a request: 1 second to a day (422 otherwise).
fn lease_ttl(ttl_seconds: i64) -> ApiResult<chrono::Duration> {
    if ttl_seconds <= 0 || ttl_seconds > 86_400 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "ttl_seconds must be 1-86400",
        ));
    }
    Ok(chrono::Duration::seconds(ttl_seconds))
}

pub(super) async fn lock(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: RawBody,
) -> ApiResult {
    let p = authorize(&state, &headers, Role::Write)?;
    let req: LockRequest = parse_json(&body)?;
    let lease = state
        .store
        .lock(&req.holder, lease_ttl(req.ttl_seconds)?)
        .await?;
    tracing::info!(token = %p.name, lease = %lease.id, "lock");
    Ok(json_response(StatusCode::CREATED, &lease))
}

pub(super) async fn unlock(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let p = authorize(&state, &headers, Role::Write)?;
    let id = path_id(id)?;
    state.store.unlock(&id).await?;
    // The id comes from the request and may name no lease: logged only when plain.
    tracing::info!(token = %p.name, lease = %shown_name(&id), "unlock");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewRequest {
    ttl_seconds: i64,
}

/// `POST /v1/locks/{id}/renew`: the live lease `id` now ends `ttl_seconds` from now; 409
/// `lease_lost` when `id` is not the live lease (expired, released or taken over).
pub(super) async fn renew(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: RawBody,
) -> ApiResult {
    authorize(&state, &headers, Role::Write)?;
    let id = path_id(id)?;
    let req: RenewRequest = parse_json(&body)?;
    let lease = state.store.renew(&id, lease_ttl(req.ttl_seconds)?).await?;
    tracing::debug!(lease = %lease.id, "renew");
    Ok(json_response(StatusCode::OK, &lease))
}

// ---------------------------------------------------------------- capabilities

pub(super) async fn capabilities(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult {
    authorize(&state, &headers, Role::Read)?;
    Ok(json_response(StatusCode::OK, &state.store.capabilities()))
}
