//! The `redis-acl` store: each key is a Redis ACL user named `user_prefix` + key name whose
//! password is registered as `#<sha256 hex>` only, with ACL rules from the grants table.
//! keyward's record of each key (the managed marker, owner, scopes, version, ...) lives in
//! the Redis hash `keyward:acl:<user_prefix>:keys` (key id -> JSON), its audit events in the
//! list `keyward:acl:<user_prefix>:events` and the apply lease in the string
//! `keyward:acl:<user_prefix>:lock`. Must never send or log a plaintext secret: only the
//! SHA-256 form (which `ACL GETUSER` shows anyway) reaches Redis.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;

use super::credential::{self, granted};
use super::resp::{self, Conn, Reply, RespError, Target};
use super::rules::{self, Change, MAX_PAGE};
use super::{
    Capabilities, ExpiryMode, KeyWrite, Lease, ListFilter, Overlap, Page, PageAt, SecretMode,
    Store, StoreError, StoreResult, Verdict, VerifyReason, Writer,
};
use crate::model::{Actor, Event, KeyPatch, KeyStatus, LiveKey, NewKey, Rotate};
use crate::secret;

/// Run a body on the shared connection: `with!(self, |c| future)` is a future.
macro_rules! with {
    ($s:expr, |$c:ident| $body:expr) => {
        async {
            let mut guard = $s.conn().await?;
            let $c = guard.as_mut().expect("connected by conn()");
            let r = $body.await;
            $s.settle(&mut guard, r)
        }
    };
}

/// Connection settings of a `redis-acl` store.
#[derive(Clone)]
pub struct RedisAclOptions {
    /// `redis://[user[:password]@]host[:port][/db]`.
    pub url: String,
    pub user_prefix: String,
    /// scope -> ACL rules (`+@read`, `~bibs:*`, ...).
    pub grants: BTreeMap<String, Vec<String>>,
    /// Per command.
    pub timeout: Duration,
}

/// keyward's record of one key, stored as JSON in the keys hash. The password hashes are
/// the ones the ACL user holds (needed to drop the previous one when the grace ends).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    key: LiveKey,
    user: String,
    hash: String,
    #[serde(default)]
    previous: Option<String>,
}

/// Events as stored (their number is their place in the list).
#[derive(Serialize, Deserialize)]
struct StoredEvent {
    at: DateTime<Utc>,
    who: String,
    action: String,
    key_id: Option<String>,
    key_name: Option<String>,
    commit: Option<String>,
    detail: serde_json::Value,
}

#[derive(Clone)]
pub struct RedisAclStore {
    name: String,
    opts: RedisAclOptions,
    target: Target,
    conn: Arc<Mutex<Option<Conn>>>,
    acl_file: Arc<Mutex<Option<bool>>>,
}

fn backend(store: &str) -> impl Fn(RespError) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("redis-acl store `{store}`: {e}"))
}

/// Turn an error reply into a store error (its code only: replies may echo arguments).
fn ok(store: &str, what: &str, r: &Reply) -> StoreResult<()> {
    match r {
        Reply::Error(e) => Err(StoreError::Backend(format!(
            "redis-acl store `{store}`: {what} refused by Redis ({})",
            resp::first_word(e)
        ))),
        _ => Ok(()),
    }
}

impl RedisAclStore {
    /// Send one command on `c`; a connection or protocol failure names this store.
    async fn cmd(&self, c: &mut Conn, args: &[&[u8]]) -> StoreResult<Reply> {
        c.cmd(args).await.map_err(backend(&self.name))
    }

    /// `ACL SETUSER` with `acl`, then `HSET` of the record's JSON under `keys`: the two writes
    /// that make the credential what `rec` says. Both replies (`QUEUED` inside a `MULTI`).
    async fn write_user(
        &self,
        c: &mut Conn,
        keys: &str,
        rec: &Record,
        acl: &[String],
    ) -> StoreResult<[Reply; 2]> {
        let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", rec.user.as_bytes()];
        args.extend(acl.iter().map(|a| a.as_bytes()));
        let set = self.cmd(c, &args).await?;
        let json = credential::json_text(rec)?;
        let id = rec.key.id.as_bytes();
        let record = self
            .cmd(c, &[b"HSET", keys.as_bytes(), id, json.as_bytes()])
            .await?;
        Ok([set, record])
    }

    /// Check the settings; connects lazily on first use.
    pub fn new(name: &str, opts: RedisAclOptions) -> StoreResult<RedisAclStore> {
        let target = Target::parse(&opts.url).map_err(StoreError::Invalid)?;
        credential::check_name("user_prefix", &opts.user_prefix, 64)?;
        for (scope, rules) in &opts.grants {
            for r in rules {
                if r.is_empty() || r.chars().any(char::is_whitespace) || r.len() > 512 {
                    return Err(StoreError::Invalid(format!(
                        "grant of {scope}: `{r}` is not one ACL rule"
                    )));
                }
                let lower = r.to_ascii_lowercase();
                if lower.starts_with('>') || lower.starts_with('#') || lower == "nopass" {
                    return Err(StoreError::Invalid(format!(
                        "grant of {scope}: password rules are keyward's, not the grants table's"
                    )));
                }
            }
        }
        Ok(RedisAclStore {
            name: name.to_owned(),
            opts,
            target,
            conn: Arc::new(Mutex::new(None)),
            acl_file: Arc::new(Mutex::new(None)),
        })
    }

    fn ns(&self, what: &str) -> String {
        format!("keyward:acl:{}:{what}", self.opts.user_prefix)
    }

    /// The ACL user a key name maps to.
    pub fn user_for(&self, key_name: &str) -> String {
        format!("{}{key_name}", self.opts.user_prefix)
    }

    /// The shared connection, opened on first use.
    async fn conn(&self) -> StoreResult<tokio::sync::MutexGuard<'_, Option<Conn>>> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let c = Conn::connect(&self.target, self.opts.timeout)
                .await
                .map_err(backend(&self.name))?;
            *guard = Some(c);
        }
        Ok(guard)
    }

    /// Drop the connection after an I/O error (the next call reconnects).
    fn settle<T>(&self, guard: &mut Option<Conn>, r: StoreResult<T>) -> StoreResult<T> {
        if matches!(&r, Err(StoreError::Backend(m)) if m.contains("connection") || m.contains("answer"))
        {
            *guard = None;
        }
        r
    }

    /// The ACL SETUSER rules that make the user what `rec` says at `now`.
    fn acl_rules(&self, rec: &Record, now: DateTime<Utc>) -> StoreResult<Vec<String>> {
        let k = &rec.key;
        let mut out = vec!["reset".to_owned()];
        if k.status == KeyStatus::Revoked {
            return Ok(out);
        }
        let expired = k.expires_at.is_some_and(|e| e <= now);
        out.push(
            if k.status == KeyStatus::Active && !expired {
                "on"
            } else {
                "off"
            }
            .into(),
        );
        out.push(format!("#{}", rec.hash));
        if let (Some(p), Some(until)) = (&rec.previous, k.previous_valid_until)
            && until > now
        {
            out.push(format!("#{p}"));
        }
        for r in granted(&self.name, &self.opts.grants, &k.scopes)? {
            out.push(r.to_owned());
        }
        Ok(out)
    }

    async fn records(c: &mut Conn, hash_key: &str, store: &str) -> StoreResult<Vec<Record>> {
        let r = c
            .cmd(&[b"HGETALL", hash_key.as_bytes()])
            .await
            .map_err(backend(store))?;
        ok(store, "HGETALL", &r)?;
        r.items()
            .chunks(2)
            .filter_map(|p| p.get(1).and_then(Reply::text))
            .map(|j| decode(&j, store))
            .collect()
    }

    async fn record(
        c: &mut Conn,
        hash_key: &str,
        id: &str,
        store: &str,
    ) -> StoreResult<Option<Record>> {
        let r = c
            .cmd(&[b"HGET", hash_key.as_bytes(), id.as_bytes()])
            .await
            .map_err(backend(store))?;
        ok(store, "HGET", &r)?;
        r.text().map(|j| decode(&j, store)).transpose()
    }

    /// Users under the prefix that keyward has no record of, as unmanaged keys.
    async fn unmanaged(&self, c: &mut Conn, known: &[Record]) -> StoreResult<Vec<LiveKey>> {
        let r = self.cmd(c, &[b"ACL", b"LIST"]).await?;
        ok(&self.name, "ACL LIST", &r)?;
        let mut out = Vec::new();
        for line in r.items().iter().filter_map(Reply::text) {
            let mut words = line.split_whitespace();
            let (Some("user"), Some(user)) = (words.next(), words.next()) else {
                continue;
            };
            let Some(name) = user.strip_prefix(&self.opts.user_prefix) else {
                continue;
            };
            if name.is_empty() || known.iter().any(|k| k.user == user) {
                continue;
            }
            let on = words.any(|w| w == "on");
            out.push(credential::foreign_key(format!("acl:{user}"), name, on));
        }
        Ok(out)
    }

    /// Append an event inside a MULTI (queued).
    async fn queue_event(
        &self,
        c: &mut Conn,
        actor: &Actor,
        action: &str,
        key: Option<&LiveKey>,
        detail: serde_json::Value,
    ) -> StoreResult<()> {
        let ev = StoredEvent {
            at: Utc::now(),
            who: rules::who(actor).to_owned(),
            action: action.to_owned(),
            key_id: key.map(|k| k.id.clone()),
            key_name: key.map(|k| k.name.clone()),
            commit: actor.commit.clone(),
            detail,
        };
        let json = credential::json_text(&ev)?;
        let r = self
            .cmd(
                c,
                &[b"RPUSH", self.ns("events").as_bytes(), json.as_bytes()],
            )
            .await?;
        ok(&self.name, "RPUSH", &r)
    }

    /// `ACL SAVE` when the server keeps its users in an ACL file.
    async fn save_acl(&self, c: &mut Conn) {
        let mut known = self.acl_file.lock().await;
        if known.is_none() {
            let file = match c.cmd(&[b"CONFIG", b"GET", b"aclfile"]).await {
                Ok(r) => r
                    .items()
                    .get(1)
                    .and_then(Reply::text)
                    .is_some_and(|f| !f.is_empty()),
                Err(_) => false,
            };
            *known = Some(file);
        }
        if *known == Some(true) {
            match c.cmd(&[b"ACL", b"SAVE"]).await {
                Ok(Reply::Error(e)) => {
                    tracing::warn!(store = %self.name, code = resp::first_word(&e), "ACL SAVE refused")
                }
                Err(e) => tracing::warn!(store = %self.name, error = %e, "ACL SAVE failed"),
                Ok(_) => {}
            }
        }
    }

    /// Write `rec` (and its ACL user) in one MULTI guarded by WATCH on the keys hash; the
    /// caller has issued the WATCH. Returns false when the transaction lost a race.
    async fn commit(
        &self,
        c: &mut Conn,
        rec: &Record,
        drop_record: Option<&str>,
        event: (&str, serde_json::Value, &Actor),
        delete: bool,
        restore: Option<&str>,
    ) -> StoreResult<bool> {
        let keys = self.ns("keys");
        let users = self.ns("users");
        let now = Utc::now();
        let acl = if delete {
            Vec::new()
        } else {
            self.acl_rules(rec, now)?
        };
        let r = self.cmd(c, &[b"MULTI"]).await?;
        ok(&self.name, "MULTI", &r)?;
        if delete {
            self.cmd(c, &[b"ACL", b"DELUSER", rec.user.as_bytes()])
                .await?;
            self.cmd(c, &[b"HDEL", keys.as_bytes(), rec.key.id.as_bytes()])
                .await?;
            self.cmd(c, &[b"HDEL", users.as_bytes(), rec.user.as_bytes()])
                .await?;
        } else {
            self.cmd(
                c,
                &[
                    b"HSET",
                    users.as_bytes(),
                    rec.user.as_bytes(),
                    rec.key.id.as_bytes(),
                ],
            )
            .await?;
            self.write_user(c, &keys, rec, &acl).await?;
        }
        if let Some(old) = drop_record {
            self.cmd(c, &[b"HDEL", keys.as_bytes(), old.as_bytes()])
                .await?;
        }
        let (action, detail, actor) = event;
        self.queue_event(c, actor, action, Some(&rec.key), detail)
            .await?;
        let r = self.cmd(c, &[b"EXEC"]).await?;
        if r == Reply::Array(None) {
            return Ok(false);
        }
        if let Some(e) = r.items().first() {
            // The ACL command failed (and changed nothing): put the record back.
            if let Err(err) = ok(&self.name, "ACL SETUSER", e) {
                let id = rec.key.id.as_bytes();
                let _ = match restore {
                    Some(old) => c.cmd(&[b"HSET", keys.as_bytes(), id, old.as_bytes()]).await,
                    None => c.cmd(&[b"HDEL", keys.as_bytes(), id]).await,
                };
                tracing::warn!(store = %self.name, user = %rec.user, "ACL change refused; the record is restored");
                return Err(err);
            }
        }
        self.save_acl(c).await;
        Ok(true)
    }

    /// A versioned change to key `id`: `f` decides it (or refuses); retried when another
    /// writer got in between.
    /// One write to one key under WATCH, retried while other writers get in between:
    /// `f` decides the change (None: nothing to do); `delete` drops the key and its user
    /// instead of writing the changed record back.
    async fn change(
        &self,
        w: KeyWrite<'_>,
        delete: bool,
        f: impl Fn(&mut Record) -> StoreResult<Change> + Send + Sync,
    ) -> StoreResult<LiveKey> {
        let keys = self.ns("keys");
        with!(self, |c| {
            Box::pin(async move {
                for _ in 0..20 {
                    self.watch_and_check_lease(c, &keys, w.lease).await?;
                    let decided = self.decide(c, &keys, w.id, w.version, &f).await;
                    let (mut rec, (action, detail), old) = match decided {
                        Ok((rec, Some(change), old)) => (rec, change, old),
                        Ok((rec, None, _)) => {
                            let _ = c.cmd(&[b"UNWATCH"]).await;
                            return Ok(rec.key);
                        }
                        Err(e) => {
                            let _ = c.cmd(&[b"UNWATCH"]).await;
                            return Err(e);
                        }
                    };
                    if !delete {
                        rules::bump(&mut rec.key, Utc::now())?;
                    }
                    let restore = (!delete).then_some(old.as_str());
                    let event = (action, detail, w.actor);
                    if self.commit(c, &rec, None, event, delete, restore).await? {
                        return Ok(rec.key);
                    }
                }
                Err(self.contended(w.id))
            })
        })
        .await
    }

    /// WATCH the keys hash and the lease, then check the change's lease against the live
    /// one (`rules::check_lease`): a lease renewed, released or taken before EXEC aborts
    /// the transaction, which is then decided again.
    async fn watch_and_check_lease(
        &self,
        c: &mut Conn,
        keys: &str,
        lease: Option<&str>,
    ) -> StoreResult<()> {
        let lock = self.ns("lock");
        let r = self
            .cmd(c, &[b"WATCH", keys.as_bytes(), lock.as_bytes()])
            .await?;
        ok(&self.name, "WATCH", &r)?;
        let checked = match self.held_lease(c).await {
            Ok(held) => rules::check_lease(held, lease, Utc::now()),
            Err(e) => Err(e),
        };
        if checked.is_err() {
            let _ = c.cmd(&[b"UNWATCH"]).await;
        }
        checked
    }

    /// The lease the lock key holds (it vanishes by its TTL when it expires).
    async fn held_lease(&self, c: &mut Conn) -> StoreResult<Option<rules::HeldLease>> {
        let lock = self.ns("lock");
        let held = self.cmd(c, &[b"GET", lock.as_bytes()]).await?;
        Ok(held
            .text()
            .and_then(|t| serde_json::from_str::<Lease>(&t).ok())
            .map(|l| (l.id, l.holder, l.expires_at)))
    }

    fn contended(&self, id: &str) -> StoreError {
        StoreError::Backend(format!(
            "redis-acl store `{}`: too much contention on key {id}",
            self.name
        ))
    }

    async fn decide(
        &self,
        c: &mut Conn,
        keys: &str,
        id: &str,
        version: u64,
        f: &(impl Fn(&mut Record) -> StoreResult<Change> + Send + Sync),
    ) -> StoreResult<(Record, Change, String)> {
        let Some(mut rec) = Self::record(c, keys, id, &self.name).await? else {
            return Err(self.missing(id));
        };
        rules::check_version(&rec.key, version)?;
        let old = credential::json_text(&rec)?;
        let change = f(&mut rec)?;
        Ok((rec, change, old))
    }

    fn missing(&self, id: &str) -> StoreError {
        if id.starts_with("acl:") {
            StoreError::Refused(format!("key {id} is not managed by keyward"))
        } else {
            StoreError::NotFound(id.to_owned())
        }
    }
}

fn decode(json: &str, store: &str) -> StoreResult<Record> {
    serde_json::from_str(json).map_err(|_| {
        StoreError::Backend(format!("redis-acl store `{store}`: a corrupt key record"))
    })
}

fn check_hash(h: &str) -> StoreResult<()> {
    if h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "a redis-acl store takes the secret as its lowercase hex SHA-256".into(),
        ))
    }
}

/// What a `redis-acl` store can do.
fn capabilities() -> Capabilities {
    let mut c = rules::capabilities();
    c.native_expiry = false;
    c.expiry = Some(ExpiryMode::Emulated);
    c.rotation_overlap = Overlap::Native;
    c.secret = SecretMode::ClientHash;
    // AUTH is checked by Redis, which counts no calls.
    c.quota = false;
    // Nor keeps it who used a key.
    c.usage = false;
    // Nor can it refuse an AUTH for a shared budget.
    c.budget = false;
    c
}

impl RedisAclStore {
    async fn create_in(&self, c: &mut Conn, rec: &Record, by: Writer<'_>) -> StoreResult<()> {
        let (keys, actor) = (self.ns("keys"), by.actor);
        for _ in 0..20 {
            self.watch_and_check_lease(c, &keys, by.lease).await?;
            let decided = self.may_create(c, &keys, rec).await;
            let drop_record = match decided {
                Ok(d) => d,
                Err(e) => {
                    let _ = c.cmd(&[b"UNWATCH"]).await;
                    return Err(e);
                }
            };
            let event = ("create", rules::create_detail(&rec.key), actor);
            if self
                .commit(c, rec, drop_record.as_deref(), event, false, None)
                .await?
            {
                return Ok(());
            }
        }
        Err(self.contended(&rec.key.id))
    }

    /// May `rec` be created? Returns the id of a revoked key whose user it takes over.
    async fn may_create(
        &self,
        c: &mut Conn,
        keys: &str,
        rec: &Record,
    ) -> StoreResult<Option<String>> {
        if Self::record(c, keys, &rec.key.id, &self.name)
            .await?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(rec.key.id.clone()));
        }
        let users = self.ns("users");
        let r = self
            .cmd(c, &[b"HGET", users.as_bytes(), rec.user.as_bytes()])
            .await?;
        ok(&self.name, "HGET", &r)?;
        let holder = match r.text() {
            Some(id) => Self::record(c, keys, &id, &self.name).await?,
            None => None,
        };
        if let Some(holder) = holder {
            if holder.key.status != KeyStatus::Revoked {
                return Err(StoreError::Refused(format!(
                    "ACL user {} belongs to key {} (status {}); revoke or delete it first",
                    rec.user,
                    holder.key.id,
                    holder.key.status.as_str()
                )));
            }
            return Ok(Some(holder.key.id.clone()));
        }
        let r = self
            .cmd(c, &[b"ACL", b"GETUSER", rec.user.as_bytes()])
            .await?;
        ok(&self.name, "ACL GETUSER", &r)?;
        if r != Reply::Array(None) && r != Reply::Bulk(None) {
            return Err(StoreError::Refused(format!(
                "ACL user {} exists and is not managed by keyward; it is never touched",
                rec.user
            )));
        }
        Ok(None)
    }

    /// A real `AUTH` as `user` on a fresh connection.
    async fn login(&self, user: &str, presented: &str) -> StoreResult<bool> {
        let mut c = Conn::open(&self.target, self.opts.timeout)
            .await
            .map_err(backend(&self.name))?;
        let r = self
            .cmd(&mut c, &[b"AUTH", user.as_bytes(), presented.as_bytes()])
            .await?;
        Ok(r == Reply::Status("OK".into()))
    }

    /// Switch expired users off and drop previous passwords whose grace is over.
    async fn enforce_in(&self, c: &mut Conn, now: DateTime<Utc>) -> StoreResult<Vec<String>> {
        let keys = self.ns("keys");
        let mut done = Vec::new();
        for mut rec in Self::records(c, &keys, &self.name).await? {
            let k = &rec.key;
            if !k.is_managed() || k.status == KeyStatus::Revoked {
                continue;
            }
            let grace_over =
                rec.previous.is_some() && k.previous_valid_until.is_none_or(|u| u <= now);
            let expired = k.status == KeyStatus::Active && k.expires_at.is_some_and(|e| e <= now);
            if !grace_over && !expired {
                continue;
            }
            if grace_over {
                rec.previous = None;
                done.push(format!(
                    "{}: rotation grace over, previous password dropped",
                    rec.user
                ));
            }
            if expired {
                let r = self
                    .cmd(c, &[b"ACL", b"GETUSER", rec.user.as_bytes()])
                    .await?;
                let on = r.items().chunks(2).any(|p| {
                    p.first().and_then(Reply::text).as_deref() == Some("flags")
                        && p.get(1).is_some_and(|f| {
                            f.items().iter().any(|x| x.text().as_deref() == Some("on"))
                        })
                });
                if !on && !grace_over {
                    continue;
                }
                if on {
                    done.push(format!(
                        "{}: expired, switched off (emulated expiry)",
                        rec.user
                    ));
                }
            }
            let acl = self.acl_rules(&rec, now)?;
            let [set, record] = self.write_user(c, &keys, &rec, &acl).await?;
            ok(&self.name, "ACL SETUSER", &set)?;
            ok(&self.name, "HSET", &record)?;
        }
        if !done.is_empty() {
            self.save_acl(c).await;
        }
        Ok(done)
    }
}

#[async_trait]
impl Store for RedisAclStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        capabilities()
    }

    async fn list(&self, filter: &ListFilter, at: PageAt<'_>) -> StoreResult<Page<LiveKey>> {
        let PageAt { cursor, limit } = at;
        let keys = self.ns("keys");
        let all = with!(self, |c| {
            Box::pin(async move {
                let recs = Self::records(c, &keys, &self.name).await?;
                let mut out = self.unmanaged(c, &recs).await?;
                out.extend(recs.into_iter().map(|r| r.key));
                Ok(out)
            })
        })
        .await?;
        credential::page(all, filter, cursor, limit)
    }

    async fn get(&self, id: &str) -> StoreResult<Option<LiveKey>> {
        let keys = self.ns("keys");
        with!(self, |c| {
            Box::pin(async move {
                if id.starts_with("acl:") {
                    let recs = Self::records(c, &keys, &self.name).await?;
                    let un = self.unmanaged(c, &recs).await?;
                    return Ok(un.into_iter().find(|k| k.id == id));
                }
                Ok(Self::record(c, &keys, id, &self.name).await?.map(|r| r.key))
            })
        })
        .await
    }

    async fn create(&self, key: NewKey, by: Writer<'_>) -> StoreResult<LiveKey> {
        let hash = key.secret_hash.0.clone();
        check_hash(&hash)?;
        let live = credential::new_record(key, Utc::now())?;
        let user = self.user_for(&live.name);
        credential::check_name("ACL user", &user, 128)?;
        let rec = Record {
            key: live,
            user,
            hash,
            previous: None,
        };
        granted(&self.name, &self.opts.grants, &rec.key.scopes)?;
        let r = &rec;
        with!(self, |c| Box::pin(
            async move { self.create_in(c, r, by).await }
        ))
        .await?;
        Ok(rec.key)
    }

    async fn update(&self, w: KeyWrite<'_>, patch: KeyPatch) -> StoreResult<LiveKey> {
        rules::refuse_secret("a change", &patch)?;
        if let Some(s) = &patch.scopes {
            granted(&self.name, &self.opts.grants, s)?;
        }
        self.change(w, false, |rec| {
            rules::update_change(&mut rec.key, patch.clone())
        })
        .await
    }

    async fn rotate(&self, w: KeyWrite<'_>, rotate: Rotate) -> StoreResult<LiveKey> {
        rules::check_rotate(&rotate)?;
        let hash = rotate.secret_hash.0.clone();
        check_hash(&hash)?;
        self.change(w, false, |rec| {
            let mut s = rules::StoredKey {
                key: rec.key.clone(),
                mac: rec.hash.as_bytes().to_vec(),
                previous_mac: None,
            };
            let ch = rules::rotate_change(&mut s, rotate.clone(), hash.as_bytes().to_vec())?;
            rec.previous = s.previous_mac.map(|_| rec.hash.clone());
            rec.hash = hash.clone();
            rec.key = s.key;
            Ok(ch)
        })
        .await
    }

    async fn set_status(&self, w: KeyWrite<'_>, to: KeyStatus) -> StoreResult<LiveKey> {
        self.change(w, false, |rec| rules::status_change(&mut rec.key, to))
            .await
    }

    async fn delete(&self, w: KeyWrite<'_>) -> StoreResult<()> {
        self.change(w, true, |rec| {
            Ok(Some(("delete", rules::delete_detail(&rec.key)?)))
        })
        .await
        .map(drop)
    }

    async fn lock(&self, holder: &str, ttl: chrono::Duration) -> StoreResult<Lease> {
        let expires_at = rules::lease_expiry(holder, ttl, Utc::now())?;
        let lease = Lease {
            id: rules::new_lease_id(),
            holder: holder.to_owned(),
            expires_at,
        };
        let json = credential::json_text(&lease)?;
        let ms = ttl.num_milliseconds().max(1).to_string();
        let key = self.ns("lock");
        with!(self, |c| {
            Box::pin(async move {
                let r = self
                    .cmd(
                        c,
                        &[
                            b"SET",
                            key.as_bytes(),
                            json.as_bytes(),
                            b"NX",
                            b"PX",
                            ms.as_bytes(),
                        ],
                    )
                    .await?;
                ok(&self.name, "SET", &r)?;
                if r == Reply::Status("OK".into()) {
                    return Ok(lease.clone());
                }
                let held = self.cmd(c, &[b"GET", key.as_bytes()]).await?;
                let other: Option<Lease> = held.text().and_then(|t| serde_json::from_str(&t).ok());
                Err(match other {
                    Some(l) => StoreError::Locked {
                        holder: l.holder,
                        id: l.id,
                        until: l.expires_at,
                    },
                    None => {
                        StoreError::Backend("the lease changed while it was read; retry".into())
                    }
                })
            })
        })
        .await
    }

    async fn unlock(&self, lease_id: &str) -> StoreResult<()> {
        let key = self.ns("lock");
        with!(self, |c| {
            Box::pin(async move {
                let r = self.cmd(c, &[b"WATCH", key.as_bytes()]).await?;
                ok(&self.name, "WATCH", &r)?;
                let held = self.cmd(c, &[b"GET", key.as_bytes()]).await?;
                let mine = held
                    .text()
                    .and_then(|t| serde_json::from_str::<Lease>(&t).ok())
                    .is_some_and(|l| l.id == lease_id);
                if !mine {
                    let _ = c.cmd(&[b"UNWATCH"]).await;
                    return Ok(());
                }
                self.cmd(c, &[b"MULTI"]).await?;
                self.cmd(c, &[b"DEL", key.as_bytes()]).await?;
                self.cmd(c, &[b"EXEC"]).await?;
                Ok(())
            })
        })
        .await
    }

    async fn renew(&self, lease_id: &str, ttl: chrono::Duration) -> StoreResult<Lease> {
        let key = self.ns("lock");
        let ms = ttl.num_milliseconds().max(1).to_string();
        with!(self, |c| {
            Box::pin(async move {
                for _ in 0..5 {
                    let r = self.cmd(c, &[b"WATCH", key.as_bytes()]).await?;
                    ok(&self.name, "WATCH", &r)?;
                    let lease = match self.held_lease(c).await {
                        Ok(held) => rules::renewed(held, lease_id, ttl, Utc::now()),
                        Err(e) => Err(e),
                    };
                    let lease = match lease {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = c.cmd(&[b"UNWATCH"]).await;
                            return Err(e);
                        }
                    };
                    let json = credential::json_text(&lease)?;
                    self.cmd(c, &[b"MULTI"]).await?;
                    self.cmd(
                        c,
                        &[
                            b"SET",
                            key.as_bytes(),
                            json.as_bytes(),
                            b"XX",
                            b"PX",
                            ms.as_bytes(),
                        ],
                    )
                    .await?;
                    let done = self.cmd(c, &[b"EXEC"]).await?;
                    if !done.items().is_empty() {
                        return Ok(lease);
                    }
                }
                Err(StoreError::Backend(
                    "the lease changed while it was renewed; retry".into(),
                ))
            })
        })
        .await
    }

    async fn verify(&self, presented: &str, now: DateTime<Utc>) -> StoreResult<Verdict> {
        let presented = presented.trim();
        let Some(parsed) = secret::parse(presented) else {
            return Ok(rules::verdict(VerifyReason::Malformed));
        };
        let keys = self.ns("keys");
        let id = parsed.id.clone();
        let Some(rec) = with!(self, |c| Box::pin(async move {
            Self::record(c, &keys, &id, &self.name).await
        }))
        .await?
        else {
            return Ok(rules::verdict(VerifyReason::Unknown));
        };
        let h = secret::hash_presented(presented).0;
        let current = bool::from(h.as_bytes().ct_eq(rec.hash.as_bytes()));
        let previous = rec.previous.as_ref().is_some_and(|p| {
            bool::from(h.as_bytes().ct_eq(p.as_bytes()))
                && rec.key.previous_valid_until.is_some_and(|u| u > now)
        });
        if !current && !previous {
            return Ok(rules::verdict(VerifyReason::Unknown));
        }
        let login = self.login(&rec.user, presented).await?;
        Ok(match credential::judge(&rec.key, login, current, now) {
            Ok(()) => rules::ok_verdict(rec.key),
            Err(r) => rules::verdict(r),
        })
    }

    async fn events(&self, after: Option<i64>, limit: usize) -> StoreResult<Vec<Event>> {
        let from = after.unwrap_or(0).max(0);
        let to = from + limit.clamp(1, MAX_PAGE) as i64 - 1;
        let key = self.ns("events");
        let raw = with!(self, |c| {
            Box::pin(async move {
                let r = self
                    .cmd(
                        c,
                        &[
                            b"LRANGE",
                            key.as_bytes(),
                            from.to_string().as_bytes(),
                            to.to_string().as_bytes(),
                        ],
                    )
                    .await?;
                ok(&self.name, "LRANGE", &r)?;
                Ok(r.items().iter().filter_map(Reply::text).collect::<Vec<_>>())
            })
        })
        .await?;
        raw.iter()
            .enumerate()
            .map(|(i, j)| {
                let e: StoredEvent = serde_json::from_str(j)
                    .map_err(|_| StoreError::Backend("a corrupt event".into()))?;
                Ok(Event {
                    seq: from + i as i64 + 1,
                    at: e.at,
                    who: e.who,
                    action: e.action,
                    key_id: e.key_id,
                    key_name: e.key_name,
                    commit: e.commit,
                    detail: e.detail,
                })
            })
            .collect()
    }

    async fn record(&self, action: &str, detail: Value, actor: &Actor) -> StoreResult<()> {
        rules::check_record(action, &detail)?;
        with!(self, |c| Box::pin(async move {
            self.queue_event(c, actor, action, None, detail).await
        }))
        .await
    }

    async fn enforce(&self, now: DateTime<Utc>) -> StoreResult<Vec<String>> {
        with!(self, |c| Box::pin(
            async move { self.enforce_in(c, now).await }
        ))
        .await
    }
}
