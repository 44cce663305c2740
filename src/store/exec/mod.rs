//! `kind: exec` stores: a store in any language, run as a child process and spoken to in
//! keyward's store protocol (`wire`, docs/store-protocol.md) over its stdin and stdout.
//! Owns turning `Store` calls into protocol requests and typed answers back into
//! `StoreError`s that name the store and the step, and keeping secrets on the pipe only
//! (`client` adapters get the secret in the request line, never in argv or the
//! environment). Must not know about specs or plans.

pub mod process;
pub mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::model::{Actor, Event, KeyPatch, KeyStatus, LiveKey, NewKey, Rotate, SecretHash};
use crate::secret::Secret;
use crate::store::{
    Capabilities, ExpiryMode, KeyWrite, Lease, ListFilter, Page, PageAt, SecretMode, Store,
    StoreError, StoreResult, Verdict, VerifyReason, Writer,
};
use process::{Failure, Launch, Process};
use wire::{AdapterCapabilities, Describe, ErrorCode, WireError};

/// How keyward reaches an adapter.
#[derive(Clone)]
pub struct ExecOptions {
    /// Program (a path, or a name looked up on keyward's PATH) and its arguments.
    pub command: Vec<String>,
    /// (name, value) of the variables passed on; nothing else is in its environment.
    pub env: Vec<(String, String)>,
    /// Per request.
    pub timeout: Duration,
}

/// The most keys keyward asks for in one `list` request.
const MAX_PAGE: usize = 500;
/// The longest a `retry_after` of an `unavailable` read is waited for, once.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

struct Inner {
    launch: Launch,
    process: Option<Process>,
    /// What the first handshake said; a restarted adapter must say the same.
    described: Option<Describe>,
}

/// A store behind an adapter process.
pub struct ExecStore {
    name: String,
    /// ``store `NAME` (exec adapter `ADAPTER`)``: how every error names them.
    who: String,
    inner: Arc<Mutex<Inner>>,
    describe: Describe,
    /// `client` adapters: the secrets `secret_form` was asked for, by their hash, until the
    /// create or rotate request that carries them is written.
    pending: Mutex<BTreeMap<String, Secret>>,
}

/// Find `program` on keyward's own PATH (the adapter's environment has none unless the
/// store passes it).
fn resolve(program: &str) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

fn describe_in(p: &mut Process, store: &str) -> StoreResult<Describe> {
    let who = format!("store `{store}` (exec adapter)");
    let r = p
        .call("describe", json!({}))
        .map_err(|f| failed(&who, "describe", f))?
        .map_err(|e| typed(&who, "describe", "", 0, e))?;
    let d: Describe = serde_json::from_value(r).map_err(|e| {
        StoreError::Backend(format!(
            "store `{store}`, step describe: the adapter's capabilities are not as the protocol has them: {e}"
        ))
    })?;
    if !d.capabilities.list {
        return Err(StoreError::Invalid(format!(
            "store `{store}`: the adapter `{}` cannot list its keys, and keyward plans from a listing",
            d.name
        )));
    }
    Ok(d)
}

/// How errors name the store and its adapter: ``store `gateway` (exec adapter `jsonfile`)``.
fn who(store: &str, d: &Describe) -> String {
    let name: String = process::redact(&d.name)
        .chars()
        .filter(|c| !c.is_control())
        .take(60)
        .collect();
    format!("store `{store}` (exec adapter `{name}`)")
}

fn failed(who: &str, step: &str, f: Failure) -> StoreError {
    StoreError::Backend(format!("{who}, step {step}: {f}"))
}

/// A typed error of the adapter as a `StoreError` (its message redacted and cut short).
fn typed(who: &str, step: &str, id: &str, version: u64, e: WireError) -> StoreError {
    let msg: String = process::redact(&e.message).chars().take(500).collect();
    let say = |what: &str| format!("{who}, step {step}: {what}{}", sep(&msg));
    match e.code {
        ErrorCode::Conflict => StoreError::Conflict {
            id: id.into(),
            expected: version,
            found: e.found.unwrap_or(0),
        },
        ErrorCode::NotFound => StoreError::NotFound(id.into()),
        ErrorCode::AlreadyExists => StoreError::AlreadyExists(id.into()),
        ErrorCode::Invalid => StoreError::Invalid(say("the adapter refused the request")),
        ErrorCode::Refused => StoreError::Refused(say("the adapter refused")),
        ErrorCode::Locked => StoreError::Locked {
            holder: e.holder.unwrap_or_else(|| "another apply".into()),
            id: e.lease_id.unwrap_or_default(),
            until: e.until.unwrap_or_else(Utc::now),
        },
        ErrorCode::LeaseLost => StoreError::LeaseLost {
            lease: e.lease_id.unwrap_or_else(|| "(unknown)".into()),
            why: if msg.is_empty() {
                "the adapter says so".into()
            } else {
                msg
            },
        },
        ErrorCode::Unavailable => StoreError::Backend(say(&format!(
            "unavailable{}",
            e.retry_after
                .map(|s| format!(", retry after {s}s"))
                .unwrap_or_default()
        ))),
        ErrorCode::Internal => StoreError::Backend(say("the adapter failed")),
    }
}

fn sep(msg: &str) -> String {
    if msg.is_empty() {
        String::new()
    } else {
        format!(": {msg}")
    }
}

impl ExecStore {
    /// Start the adapter and do the `describe` handshake.
    pub fn open(name: &str, opts: ExecOptions) -> StoreResult<ExecStore> {
        let Some(program) = opts.command.first() else {
            return Err(StoreError::Invalid(format!(
                "store `{name}`: the adapter command is empty"
            )));
        };
        let launch = Launch {
            store: name.to_owned(),
            program: resolve(program),
            args: opts.command[1..].to_vec(),
            env: opts.env,
            timeout: opts.timeout,
        };
        let mut p = Process::start(&launch)
            .map_err(|f| failed(&format!("store `{name}` (exec adapter)"), "start", f))?;
        let describe = describe_in(&mut p, name)?;
        Ok(ExecStore {
            name: name.to_owned(),
            who: who(name, &describe),
            inner: Arc::new(Mutex::new(Inner {
                launch,
                process: Some(p),
                described: Some(describe.clone()),
            })),
            describe,
            pending: Mutex::new(BTreeMap::new()),
        })
    }

    /// The adapter's own name and version (from `describe`).
    pub fn adapter(&self) -> (&str, &str) {
        (&self.describe.name, &self.describe.version)
    }

    /// What the adapter said it can do.
    pub fn adapter_capabilities(&self) -> &AdapterCapabilities {
        &self.describe.capabilities
    }

    /// One request, on the blocking pool; the adapter is restarted (and must describe
    /// itself as before) when an earlier request stopped it.
    async fn call(&self, op: &'static str, params: Value) -> StoreResult<Result<Value, WireError>> {
        let inner = self.inner.clone();
        let store = self.name.clone();
        let who = self.who.clone();
        let join = tokio::task::spawn_blocking(move || {
            let mut g = inner.lock().unwrap_or_else(|e| e.into_inner());
            if g.process.is_none() {
                let mut p = Process::start(&g.launch).map_err(|f| failed(&who, "start", f))?;
                let d = describe_in(&mut p, &store)?;
                if g.described.as_ref().is_some_and(|first| *first != d) {
                    return Err(StoreError::Backend(format!(
                        "store `{store}`: the restarted adapter describes itself differently than at first; keyward stopped"
                    )));
                }
                g.process = Some(p);
            }
            let p = g.process.as_mut().expect("started above");
            match p.call(op, params) {
                Ok(r) => Ok(r),
                Err(f) => {
                    g.process = None;
                    Err(failed(&who, op, f))
                }
            }
        });
        join.await
            .map_err(|e| StoreError::Backend(format!("store `{}`: {e}", self.name)))?
    }

    /// A request that reads: an `unavailable` answer with a short `retry_after` is retried
    /// once.
    async fn read(&self, op: &'static str, params: Value, id: &str) -> StoreResult<Value> {
        match self.call(op, params.clone()).await? {
            Ok(v) => Ok(v),
            Err(e) if e.code == ErrorCode::Unavailable => {
                let wait = e
                    .retry_after
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(Duration::from_secs_f64);
                match wait.filter(|w| *w <= MAX_RETRY_WAIT) {
                    Some(w) => {
                        tokio::time::sleep(w).await;
                        self.call(op, params)
                            .await?
                            .map_err(|e| typed(&self.who, op, id, 0, e))
                    }
                    None => Err(typed(&self.who, op, id, 0, e)),
                }
            }
            Err(e) => Err(typed(&self.who, op, id, 0, e)),
        }
    }

    /// A request that changes a key and answers with it.
    /// A write to one key: `params` plus the key id, the version and the actor.
    async fn write(
        &self,
        op: &'static str,
        w: KeyWrite<'_>,
        mut params: Value,
    ) -> StoreResult<Value> {
        params["key_id"] = w.id.into();
        params["version"] = w.version.into();
        params["actor"] = wire::actor(w.actor);
        params["lease_id"] = w.lease.into();
        self.call(op, params)
            .await?
            .map_err(|e| typed(&self.who, op, w.id, w.version, e))
    }

    /// A write that answers with the changed key.
    async fn change(
        &self,
        op: &'static str,
        w: KeyWrite<'_>,
        params: Value,
    ) -> StoreResult<LiveKey> {
        let r = self.write(op, w, params).await?;
        self.key_of(op, &r)
    }

    fn key_of(&self, op: &str, r: &Value) -> StoreResult<LiveKey> {
        wire::field::<LiveKey>(r, "key").map_err(|m| self.bad(op, m))
    }

    fn bad(&self, op: &str, m: String) -> StoreError {
        StoreError::Backend(format!("{}, step {op}: {m}", self.who))
    }

    /// Put the secret form of a new secret into `params`: its hash, or for `client`
    /// adapters the secret itself (taken from `pending`).
    fn put_secret(&self, params: &mut Value, form: &SecretHash) -> StoreResult<()> {
        match self.describe.capabilities.secret {
            SecretMode::ClientHash => params["secret_hash"] = form.0.clone().into(),
            SecretMode::Client => {
                let s = self
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&form.0)
                    .ok_or_else(|| {
                        StoreError::Invalid(format!(
                            "store `{}` takes the secret itself; it must come through secret_form",
                            self.name
                        ))
                    })?;
                params["secret"] = s.expose().into();
            }
            SecretMode::Server => {
                return Err(StoreError::Invalid(format!(
                    "store `{}`: the adapter makes secrets itself (secret: server); keyward cannot seal a secret an adapter returns yet, so it does not create or rotate keys there",
                    self.name
                )));
            }
        }
        Ok(())
    }
}

fn params(v: Value) -> Value {
    if v.is_object() { v } else { json!({}) }
}

#[async_trait]
impl Store for ExecStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        let c = &self.describe.capabilities;
        Capabilities {
            client_secret_hash: c.secret == SecretMode::ClientHash,
            native_expiry: c.expiry == ExpiryMode::Native,
            in_place: c.in_place.clone(),
            secret: c.secret,
            expiry: Some(c.expiry),
            rotation_overlap: c.rotation_overlap,
            disable: c.disable,
            quota: c.quota,
            usage: c.usage,
            budget: false,
        }
    }

    async fn list(&self, filter: &ListFilter, at: PageAt<'_>) -> StoreResult<Page<LiveKey>> {
        let PageAt { cursor, limit } = at;
        let limit = limit.clamp(1, MAX_PAGE);
        let r = self
            .read(
                "list",
                json!({ "filter": filter, "cursor": cursor, "limit": limit }),
                "",
            )
            .await?;
        let mut items: Vec<LiveKey> = wire::field(&r, "items").map_err(|m| self.bad("list", m))?;
        let next: Option<String> = wire::field(&r, "next").map_err(|m| self.bad("list", m))?;
        if items.len() > limit {
            return Err(self.bad(
                "list",
                format!("{} keys in a page of at most {limit}", items.len()),
            ));
        }
        // The filter is advisory for adapters: keyward applies it again.
        items.retain(|k| crate::store::credential::matches(filter, k));
        if next.as_deref() == cursor && next.is_some() {
            return Err(self.bad("list", "the cursor does not move".into()));
        }
        Ok(Page { items, next })
    }

    async fn get(&self, id: &str) -> StoreResult<Option<LiveKey>> {
        let r = self.read("get", json!({ "key_id": id }), id).await?;
        wire::field(&r, "key").map_err(|m| self.bad("get", m))
    }

    async fn create(&self, key: NewKey, by: Writer<'_>) -> StoreResult<LiveKey> {
        let id = key.id.clone();
        let mut p = json!({
            "key": wire::new_key(&key),
            "actor": wire::actor(by.actor),
            "lease_id": by.lease,
        });
        self.put_secret(&mut p, &key.secret_hash)?;
        let r = self
            .call("create", p)
            .await?
            .map_err(|e| typed(&self.who, "create", &id, 0, e))?;
        self.key_of("create", &r)
    }

    async fn update(&self, w: KeyWrite<'_>, patch: KeyPatch) -> StoreResult<LiveKey> {
        let p = json!({ "patch": wire::patch(&patch) });
        self.change("update", w, p).await
    }

    async fn rotate(&self, w: KeyWrite<'_>, rotate: Rotate) -> StoreResult<LiveKey> {
        let mut p = json!({ "rotate": wire::rotation(&rotate) });
        self.put_secret(&mut p, &rotate.secret_hash)?;
        self.change("rotate", w, p).await
    }

    async fn set_status(&self, w: KeyWrite<'_>, to: KeyStatus) -> StoreResult<LiveKey> {
        self.change(to.verb(), w, json!({})).await
    }

    async fn delete(&self, w: KeyWrite<'_>) -> StoreResult<()> {
        self.write("delete", w, json!({})).await.map(drop)
    }

    async fn lock(&self, holder: &str, ttl: chrono::Duration) -> StoreResult<Lease> {
        let p = json!({ "holder": holder, "ttl_seconds": ttl.num_seconds().max(1) });
        let r = self
            .call("lock", p)
            .await?
            .map_err(|e| typed(&self.who, "lock", "", 0, e))?;
        wire::field(&r, "lease").map_err(|m| self.bad("lock", m))
    }

    async fn unlock(&self, lease_id: &str) -> StoreResult<()> {
        self.call("unlock", json!({ "lease_id": lease_id }))
            .await?
            .map_err(|e| typed(&self.who, "unlock", "", 0, e))?;
        Ok(())
    }

    async fn renew(&self, lease_id: &str, ttl: chrono::Duration) -> StoreResult<Lease> {
        let p = json!({ "lease_id": lease_id, "ttl_seconds": ttl.num_seconds().max(1) });
        let r = self
            .call("renew", p)
            .await?
            .map_err(|e| typed(&self.who, "renew", "", 0, e))?;
        wire::field(&r, "lease").map_err(|m| self.bad("renew", m))
    }

    async fn verify(&self, presented: &str, now: DateTime<Utc>) -> StoreResult<Verdict> {
        let Some(parsed) = crate::secret::parse(presented) else {
            return Ok(Verdict {
                valid: false,
                reason: VerifyReason::Malformed,
                key: None,
            });
        };
        let mut p = json!({ "key_id": parsed.id, "now": now });
        if self.describe.capabilities.secret == SecretMode::Client {
            p["secret"] = presented.trim().into();
        } else {
            p["secret_hash"] = crate::secret::hash_presented(presented.trim()).0.into();
        }
        let r = self.read("verify", p, &parsed.id).await?;
        wire::field(&r, "verdict").map_err(|m| self.bad("verify", m))
    }

    async fn events(&self, after: Option<i64>, limit: usize) -> StoreResult<Vec<Event>> {
        if !self.describe.capabilities.events {
            return Ok(Vec::new());
        }
        let r = self
            .read("events", json!({ "after": after, "limit": limit }), "")
            .await?;
        wire::field(&r, "events").map_err(|m| self.bad("events", m))
    }

    /// `usage` (adapters with the `usage` capability; others keep none and are not asked):
    /// the same timeout, line limit and restart as every request, the answer checked field
    /// by field (`wire::usage`) and days before `since` dropped whatever the adapter sent.
    async fn usage(&self, since: &str) -> StoreResult<Option<crate::store::usage::Usage>> {
        if !self.describe.capabilities.usage {
            return Ok(None);
        }
        let r = self.read("usage", json!({ "since": since }), "").await?;
        let u = wire::usage(&r, since).map_err(|m| self.bad("usage", process::redact(&m)))?;
        Ok(Some(u))
    }

    async fn record(&self, action: &str, detail: Value, actor: &Actor) -> StoreResult<()> {
        if !self.describe.capabilities.events {
            return Ok(());
        }
        let p = json!({ "action": action, "detail": params(detail), "actor": wire::actor(actor) });
        self.call("record", p)
            .await?
            .map_err(|e| typed(&self.who, "record", "", 0, e))?;
        Ok(())
    }

    fn secret_form(&self, secret: &Secret) -> StoreResult<SecretHash> {
        let h = secret.hash();
        if self.describe.capabilities.secret == SecretMode::Client {
            let copy = Secret::from_string(secret.expose().to_owned());
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(h.0.clone(), copy);
        }
        Ok(h)
    }

    async fn enforce(&self, now: DateTime<Utc>) -> StoreResult<Vec<String>> {
        if self.describe.capabilities.expiry != ExpiryMode::Emulated {
            return Ok(Vec::new());
        }
        let r = self
            .call("enforce", json!({ "now": now }))
            .await?
            .map_err(|e| typed(&self.who, "enforce", "", 0, e))?;
        let done: Vec<String> = wire::field(&r, "done").map_err(|m| self.bad("enforce", m))?;
        Ok(done.iter().map(|l| process::redact(l)).collect())
    }
}
