//! Apply: executes a plan against live stores in the order that keeps every secret
//! delivered before it is valid (generate -> seal -> durable pending delivery -> register by
//! hash -> mark active), recovers interrupted deliveries, and holds each store's lock.
//! Must not decide what changes (the diff does) nor print anything (the CLI reports).

use crate::clock::Clock;
use crate::deliver::{self, DeliveryStatus, EnvelopeMeta, Manifest, Outbox};
use crate::diff::{self, Action, Change};
use crate::lease::Leases;
use crate::model::{Actor, KeyPatch, KeyStatus, LiveKey, MANAGED_BY, NewKey, Rotate};
use crate::plan::Plan;
use crate::secret;
use crate::spec::{DesiredKey, DesiredState, Principal, Spec};
use crate::store::{Lease, Store, StoreError, Writer};
use chrono::{DateTime, SubsecRound, Utc};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Named points where a test (or `KEYWARD_FAILPOINT`, for fault-injection runs) can make
/// apply stop, to prove that every interruption converges on the next run.
pub mod failpoint {
    pub const AFTER_SEAL: &str = "after-seal";
    pub const AFTER_PENDING: &str = "after-pending";
    pub const AFTER_REGISTER: &str = "after-register";
    pub const AFTER_ACTIVATE: &str = "after-activate";
    pub const BETWEEN_KEYS: &str = "between-keys";
    /// Rotation: the new generation is sealed, nothing written yet.
    pub const ROTATE_AFTER_SEAL: &str = "rotate-after-seal";
    /// Rotation: the new generation's delivery is written `pending`; the store is unchanged.
    pub const ROTATE_AFTER_PENDING: &str = "rotate-after-pending";
    /// Rotation: the store holds the new secret hash; the delivery is still `pending`.
    pub const ROTATE_AFTER_STORE: &str = "rotate-after-store";
    /// Rotation: the delivery is `active`; the applied state is not recorded yet.
    pub const ROTATE_AFTER_ACTIVATE: &str = "rotate-after-activate";
    /// Replace: the new key is registered and delivered; the old one is not revoked yet.
    pub const REPLACE_BEFORE_REVOKE: &str = "replace-before-revoke";
    /// Revoke: keyward's applied state is recorded; the store has not revoked the key yet.
    pub const REVOKE_AFTER_RECORD: &str = "revoke-after-record";
    pub const ALL: [&str; 11] = [
        AFTER_SEAL,
        AFTER_PENDING,
        AFTER_REGISTER,
        AFTER_ACTIVATE,
        BETWEEN_KEYS,
        ROTATE_AFTER_SEAL,
        ROTATE_AFTER_PENDING,
        ROTATE_AFTER_STORE,
        ROTATE_AFTER_ACTIVATE,
        REPLACE_BEFORE_REVOKE,
        REVOKE_AFTER_RECORD,
    ];
    /// `apply --commit-deliveries`: every key is applied, nothing committed yet.
    pub const COMMIT_BEFORE: &str = "commit-before";
    /// `apply --commit-deliveries`: the commit object is written, no branch points at it.
    pub const COMMIT_AFTER_OBJECT: &str = "commit-after-object";
    /// The points hit while committing deliveries (only with `--commit-deliveries`).
    pub const COMMIT: [&str; 2] = [COMMIT_BEFORE, COMMIT_AFTER_OBJECT];

    /// `KEYWARD_FAILPOINT=name` fails at that point; `name:exit` exits the process there
    /// (as a kill would), without unwinding or cleanup; `name:sleep=MS` pauses there (to
    /// hold the lock while a test starts a second apply).
    pub fn hit(name: &str) -> Result<(), super::ApplyError> {
        let Ok(v) = std::env::var("KEYWARD_FAILPOINT") else {
            return Ok(());
        };
        let (point, mode) = v.split_once(':').unwrap_or((v.as_str(), "error"));
        if point != name {
            return Ok(());
        }
        if mode == "exit" {
            std::process::exit(86);
        }
        if let Some(ms) = mode
            .strip_prefix("sleep=")
            .and_then(|m| m.parse::<u64>().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms.min(60_000)));
            return Ok(());
        }
        Err(super::ApplyError::Injected(name.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("store `{store}`: {source}")]
    Store {
        store: String,
        #[source]
        source: StoreError,
    },
    #[error("delivery for {key}: {source}")]
    Deliver {
        key: String,
        #[source]
        source: Box<deliver::DeliverError>,
    },
    #[error("store `{0}` is not configured in keyward.yaml")]
    UnknownStore(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("fault injected at `{0}` (KEYWARD_FAILPOINT)")]
    Injected(String),
}

impl ApplyError {
    /// True when the store refused because someone else holds its lock.
    pub fn is_locked(&self) -> bool {
        matches!(
            self,
            ApplyError::Store {
                source: StoreError::Locked { .. },
                ..
            }
        )
    }
}

/// Called after each finished change (for progress bars) with the change and its success.
pub type ProgressFn = Box<dyn Fn(&Change, bool) + Send + Sync>;

pub struct ApplyOptions {
    /// How many keys are applied at once.
    pub concurrency: usize,
    pub actor: Actor,
    /// Called after each finished change (for progress bars); gets the change and success.
    pub on_progress: Option<ProgressFn>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            concurrency: 4,
            actor: Actor::default(),
            on_progress: None,
        }
    }
}

/// What happened to each change.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub done: Vec<Done>,
    pub failed: Vec<(String, String, ApplyError)>,
    /// Pending deliveries recovered at start: (dir, activated?).
    pub recovered: Vec<(PathBuf, bool)>,
    pub pruned: Vec<PathBuf>,
}

#[derive(Debug)]
pub struct Done {
    pub store: String,
    pub name: String,
    pub action: Action,
    pub key_id: Option<String>,
    /// The delivery directory of a new secret.
    pub delivery: Option<PathBuf>,
}

impl ApplyReport {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Everything apply needs, opened.
pub struct Context<'a> {
    pub spec: &'a Spec,
    pub stores: &'a BTreeMap<String, Arc<dyn Store>>,
    pub outbox: Outbox,
    pub clock: &'a dyn Clock,
    /// The apply lease held on each store, named by every change made to it.
    pub leases: &'a Leases,
}

impl Context<'_> {
    /// `actor` writing to `store` under the lease this apply holds there.
    pub fn by<'b>(&'b self, store: &str, actor: &'b Actor) -> Writer<'b> {
        Writer::new(actor).under(self.leases.id(store))
    }

    /// Refuse to go on with a change to `store` once its lease is lost: before a change
    /// starts and again right before its delivery is written (the outbox is shared with an
    /// apply that took the store over; the store itself refuses the registration after).
    async fn lease_held(&self, store: &str) -> Result<(), ApplyError> {
        match self.leases.confirm(store).await {
            Ok(()) => Ok(()),
            Err(why) => Err(store_err(store)(StoreError::LeaseLost {
                lease: self.leases.id(store).unwrap_or_default().to_owned(),
                why,
            })),
        }
    }

    /// Note a change refused because `store`'s lease is gone, so no other change starts.
    fn note_refusal(&self, store: &str, e: &StoreError) {
        if let StoreError::LeaseLost { why, .. } = e {
            self.leases.mark_lost(store, why);
        }
    }
}

/// Take every touched store's lock (all or none) for `ttl`. Returns the leases to release.
pub async fn lock_stores(
    stores: &BTreeMap<String, Arc<dyn Store>>,
    names: &[String],
    holder: &str,
    ttl: chrono::Duration,
) -> Result<Vec<(String, Lease)>, ApplyError> {
    let mut taken: Vec<(String, Lease)> = Vec::new();
    for n in names {
        let store = stores
            .get(n)
            .ok_or_else(|| ApplyError::UnknownStore(n.clone()))?;
        let mut attempt = store.lock(holder, ttl).await;
        // A lease left by a killed apply on this host and boot (its process is gone, a
        // zombie, or its pid reused) is stale: release it and try once more.
        if let Err(StoreError::Locked { holder: h, id, .. }) = &attempt
            && let crate::holder::Liveness::Dead(why) = crate::holder::liveness(h)
        {
            tracing::warn!(store = %n, holder = %h, "releasing a stale apply lock: {why}");
            store.unlock(id).await.map_err(store_err(n))?;
            attempt = store.lock(holder, ttl).await;
        }
        match attempt {
            Ok(lease) => taken.push((n.clone(), lease)),
            Err(e) => {
                unlock_stores(stores, &taken).await;
                return Err(ApplyError::Store {
                    store: n.clone(),
                    source: e,
                });
            }
        }
    }
    Ok(taken)
}

/// Let every store catch up on what it cannot do itself (emulated expiry, the end of a
/// rotation's grace; see `Store::enforce`): one line per thing done, or per failure.
pub async fn enforce_stores(
    stores: &BTreeMap<String, Arc<dyn Store>>,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, s) in stores {
        match s.enforce(now).await {
            Ok(lines) => out.extend(lines.into_iter().map(|l| format!("{name}: {l}"))),
            Err(e) => out.push(format!(
                "{name}: enforcing expiry and grace ends failed: {e}"
            )),
        }
    }
    out
}

pub async fn unlock_stores(stores: &BTreeMap<String, Arc<dyn Store>>, leases: &[(String, Lease)]) {
    for (n, lease) in leases {
        if let Some(s) = stores.get(n)
            && let Err(e) = s.unlock(&lease.id).await
        {
            tracing::warn!(store = %n, error = %e, "could not release the apply lock");
        }
    }
}

/// Settle deliveries left `pending` by an interrupted apply: activate those whose key
/// the store has at that generation, void the rest (their secrets never became valid).
pub async fn recover(cx: &Context<'_>) -> Result<Vec<(PathBuf, bool)>, ApplyError> {
    let mut out = Vec::new();
    let pending = cx.outbox.pending().map_err(|e| ApplyError::Deliver {
        key: "outbox".into(),
        source: Box::new(e),
    })?;
    for (dir, m) in pending {
        let Some(store) = cx.stores.get(&m.store) else {
            // A store we cannot reach now: leave it pending for a later run.
            continue;
        };
        let live = store.get(&m.key_id).await.map_err(|e| ApplyError::Store {
            store: m.store.clone(),
            source: e,
        })?;
        let registered =
            live.is_some_and(|k| k.generation == m.generation && k.status != KeyStatus::Revoked);
        let key = format!("{}/{}", m.store, m.name);
        tracing::debug!(dir = %dir.display(), key = %key, generation = m.generation, registered, "settling a pending delivery");
        if registered {
            cx.outbox
                .mark(&dir, DeliveryStatus::Active)
                .map_err(|e| ApplyError::Deliver {
                    key,
                    source: Box::new(e),
                })?;
        } else {
            cx.outbox.void(&dir).map_err(|e| ApplyError::Deliver {
                key,
                source: Box::new(e),
            })?;
        }
        out.push((dir, registered));
    }
    Ok(out)
}

/// Apply `plan`. Each change is independent: a failure is reported and the others go on.
pub async fn apply(cx: &Context<'_>, plan: &Plan, opts: &ApplyOptions) -> ApplyReport {
    let mut report = ApplyReport::default();
    match recover(cx).await {
        Ok(r) => report.recovered = r,
        Err(e) => {
            report.failed.push(("*".into(), "recovery".into(), e));
            return report;
        }
    }
    let results: Vec<Vec<Outcome<'_>>> = futures::stream::iter(units(plan))
        .map(|u| async move {
            let rs = match u {
                Unit::One(c) => vec![(c, apply_one(cx, c, &opts.actor).await)],
                Unit::Creates(cs) => create_batch(cx, cs, &opts.actor).await,
            };
            for (c, r) in &rs {
                if let Err(ApplyError::Store { source, .. }) = r {
                    cx.note_refusal(&c.store, source);
                }
            }
            if let Some(cb) = &opts.on_progress {
                for (c, r) in &rs {
                    cb(c, r.is_ok());
                }
            }
            rs
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    for (c, r) in results.into_iter().flatten() {
        match r {
            Ok(d) => report.done.push(d),
            Err(e) => report.failed.push((c.store.clone(), c.name.clone(), e)),
        }
    }
    report
        .done
        .sort_by(|a, b| (&a.store, a.action, &a.name).cmp(&(&b.store, b.action, &b.name)));
    if report.ok() {
        match cx
            .outbox
            .prune(cx.spec.delivery.retain.to_chrono(), cx.clock.now())
        {
            Ok(p) => report.pruned = p,
            Err(e) => tracing::warn!(error = %e, "pruning old deliveries failed"),
        }
    }
    report
}

/// How many new keys of one store are sealed, written and registered together: one store
/// call (one transaction), one flush of their files and one of their directories a batch.
pub const BATCH_SIZE: usize = 250;

/// What `apply` runs as one task: one change, or new keys of one store together.
enum Unit<'p> {
    One(&'p Change),
    Creates(Vec<&'p Change>),
}

/// A change and what became of it.
type Outcome<'p> = (&'p Change, Result<Done, ApplyError>);

/// What became of each key of a batch so far: its id and delivery, or why not.
type Slots = Vec<Option<Result<(String, PathBuf), ApplyError>>>;

/// The plan as tasks: every create joins the open batch of its store (a new one once that
/// holds [`BATCH_SIZE`]), everything else runs alone, in the plan's order of first changes.
fn units(plan: &Plan) -> Vec<Unit<'_>> {
    let mut out: Vec<Unit<'_>> = Vec::new();
    let mut open: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &plan.actions {
        if c.action != Action::Create {
            out.push(Unit::One(c));
            continue;
        }
        if let Some(&i) = open.get(c.store.as_str())
            && let Unit::Creates(v) = &mut out[i]
            && v.len() < BATCH_SIZE
        {
            v.push(c);
            continue;
        }
        open.insert(&c.store, out.len());
        out.push(Unit::Creates(vec![c]));
    }
    out
}

impl ApplyError {
    /// The same failure for another key of a batch (errors are not `Clone`).
    fn for_key(&self, c: &Change) -> ApplyError {
        match self {
            ApplyError::Injected(point) => ApplyError::Injected(point.clone()),
            ApplyError::UnknownStore(s) => ApplyError::UnknownStore(s.clone()),
            other => ApplyError::Invalid {
                key: format!("{}/{}", c.store, c.name),
                message: format!("its batch failed: {other}"),
            },
        }
    }
}

/// One new key of a batch on its way to its envelopes.
struct Sealing {
    at: usize,
    meta: EnvelopeMeta,
    environment: String,
    principals: Vec<Principal>,
    secret: secret::Secret,
    /// Registered once sealed; its `secret_hash` is filled in by the sealing worker.
    new: NewKey,
}

/// Create new keys of one store together, in the order `create_key_with` keeps for one
/// (sealed -> pending deliveries durable -> registered -> active), each step once for the
/// batch: the secrets generated and sealed on every core, the deliveries flushed together
/// (`Outbox::commit_pending`), the keys registered in one `Store::create_batch`, the
/// deliveries marked active together. The failpoints are hit at the same steps, once a
/// batch. A key that cannot be prepared or sealed fails alone; when registering the batch
/// fails, each key is settled by asking the store, and those it does not hold are
/// registered one by one, so one refused key does not fail the others.
async fn create_batch<'p>(
    cx: &Context<'_>,
    cs: Vec<&'p Change>,
    actor: &Actor,
) -> Vec<Outcome<'p>> {
    let mut slots: Slots = cs.iter().map(|_| None).collect();
    let fail_all = |e: ApplyError, slots: &mut Slots| {
        for (at, c) in cs.iter().enumerate() {
            slots[at].get_or_insert_with(|| Err(e.for_key(c)));
        }
    };
    let Some(store) = cx.stores.get(&cs[0].store).cloned() else {
        fail_all(ApplyError::UnknownStore(cs[0].store.clone()), &mut slots);
        return finish_batch(cs, slots);
    };
    if let Err(e) = failpoint::hit(failpoint::BETWEEN_KEYS) {
        fail_all(e, &mut slots);
        return finish_batch(cs, slots);
    }
    tracing::debug!(store = %cs[0].store, keys = cs.len(), "creating a batch of keys");
    let now = cx.clock.now().trunc_subsecs(0);
    let mut jobs = Vec::with_capacity(cs.len());
    for (at, c) in cs.iter().enumerate() {
        match sealing(cx, c, at, now) {
            Ok(j) => jobs.push(j),
            Err(e) => slots[at] = Some(Err(e)),
        }
    }
    // The deliveries are written next: only while this apply still holds the store.
    if let Err(e) = cx.lease_held(&cs[0].store).await {
        fail_all(e, &mut slots);
        return finish_batch(cs, slots);
    }
    let mut staged = Vec::with_capacity(jobs.len());
    for (at, r) in seal_and_stage(cx, &store, jobs, now, actor.commit.clone()).await {
        match r {
            Ok((new, s)) => staged.push((at, new, s)),
            Err(e) => slots[at] = Some(Err(e)),
        }
    }
    let ats: Vec<usize> = staged.iter().map(|(at, _, _)| *at).collect();
    let pending = match commit_batch(cx, staged).await {
        Ok(p) => p,
        Err(e) => {
            for at in ats {
                slots[at] = Some(Err(e.for_key(cs[at])));
            }
            return finish_batch(cs, slots);
        }
    };
    let registered = register_batch(cx, store.as_ref(), &cs, pending, actor, &mut slots).await;
    activate_batch(cx, &cs, registered, &mut slots).await;
    finish_batch(cs, slots)
}

/// Each change of a batch with its result.
fn finish_batch(cs: Vec<&Change>, slots: Slots) -> Vec<Outcome<'_>> {
    cs.into_iter()
        .zip(slots)
        .map(|(c, r)| {
            let r = r
                .unwrap_or_else(|| {
                    Err(ApplyError::Invalid {
                        key: format!("{}/{}", c.store, c.name),
                        message: "not applied: its batch stopped first".into(),
                    })
                })
                .map(|(id, dir)| Done {
                    store: c.store.clone(),
                    name: c.name.clone(),
                    action: c.action,
                    key_id: Some(id),
                    delivery: Some(dir),
                });
            (c, r)
        })
        .collect()
}

/// Everything a new key needs before sealing: its id, secret, envelope and record.
fn sealing(
    cx: &Context<'_>,
    c: &Change,
    at: usize,
    now: DateTime<Utc>,
) -> Result<Sealing, ApplyError> {
    let d = desired(cx, c)?;
    let principals = principals(cx, c)?.into_iter().cloned().collect();
    let id = secret::new_key_id();
    let generation = c.new_generation.unwrap_or(1);
    let expires_at = diff::expires_at(&d.expiry, now);
    Ok(Sealing {
        at,
        meta: EnvelopeMeta {
            key: d.name.clone(),
            store: d.store.clone(),
            id: id.clone(),
            generation,
            expires_at,
            previous_valid_until: None,
            client_id: None,
        },
        environment: c.environment.clone(),
        principals,
        secret: secret::generate(&d.environment, &id),
        new: new_record(
            cx.spec,
            d,
            (&id, generation),
            now,
            crate::model::SecretHash(String::new()),
        ),
    })
}

/// Seal every key's envelopes and stage its pending delivery, on as many threads as there
/// are cores (each secret is dropped as soon as it is sealed and hashed).
async fn seal_and_stage(
    cx: &Context<'_>,
    store: &Arc<dyn Store>,
    jobs: Vec<Sealing>,
    now: DateTime<Utc>,
    commit: Option<String>,
) -> Vec<(usize, Result<(NewKey, deliver::Staged), ApplyError>)> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = jobs.len().div_ceil(threads).max(1);
    let mut chunks: Vec<Vec<Sealing>> = Vec::new();
    let mut jobs = jobs.into_iter().peekable();
    while jobs.peek().is_some() {
        chunks.push(jobs.by_ref().take(per).collect());
    }
    let work = chunks.into_iter().map(|chunk| {
        let (outbox, store, commit) = (cx.outbox.clone(), store.clone(), commit.clone());
        let job = move || {
            Ok(chunk
                .into_iter()
                .map(|j| (j.at, seal_one(&outbox, store.as_ref(), j, now, &commit)))
                .collect::<Vec<_>>())
        };
        blocking(job, "a batch of new keys")
    });
    let mut out = Vec::new();
    for r in futures::future::join_all(work).await {
        match r {
            Ok(done) => out.extend(done),
            Err(e) => tracing::warn!(error = %e, "a sealing worker failed"),
        }
    }
    out
}

/// One key of [`seal_and_stage`]: hash, seal, drop the secret, stage the delivery.
fn seal_one(
    outbox: &Outbox,
    store: &dyn Store,
    mut j: Sealing,
    now: DateTime<Utc>,
    commit: &Option<String>,
) -> Result<(NewKey, deliver::Staged), ApplyError> {
    let key = format!("{}/{}", j.meta.store, j.meta.key);
    let deliver_err = |e| ApplyError::Deliver {
        key: key.clone(),
        source: Box::new(e),
    };
    j.new.secret_hash = store
        .secret_form(&j.secret)
        .map_err(store_err(&j.meta.store))?;
    let refs: Vec<&Principal> = j.principals.iter().collect();
    let sealed = deliver::seal_for_principals(&j.meta, &j.secret, &refs).map_err(deliver_err)?;
    drop(j.secret);
    failpoint::hit(failpoint::AFTER_SEAL)?;
    let manifest = Manifest::pending(&j.meta, &j.environment, now, commit.clone(), &sealed);
    let staged = outbox
        .stage_pending(&manifest, &sealed)
        .map_err(deliver_err)?;
    Ok((j.new, staged))
}

/// Make the batch's pending deliveries durable together: (position, record, directory).
async fn commit_batch(
    cx: &Context<'_>,
    staged: Vec<(usize, NewKey, deliver::Staged)>,
) -> Result<Vec<(usize, NewKey, PathBuf)>, ApplyError> {
    if staged.is_empty() {
        return Ok(Vec::new());
    }
    let outbox = cx.outbox.clone();
    let job = move || {
        let (rest, files): (Vec<(usize, NewKey)>, Vec<deliver::Staged>) = staged
            .into_iter()
            .map(|(at, new, s)| ((at, new), s))
            .unzip();
        let dirs = outbox
            .commit_pending(files)
            .map_err(|e| ApplyError::Deliver {
                key: "a batch of new keys".into(),
                source: Box::new(e),
            })?;
        Ok(rest
            .into_iter()
            .zip(dirs)
            .map(|((at, new), dir)| (at, new, dir))
            .collect::<Vec<_>>())
    };
    let pending = blocking(job, "a batch of new keys").await?;
    tracing::trace!(deliveries = pending.len(), "pending deliveries written");
    failpoint::hit(failpoint::AFTER_PENDING)?;
    Ok(pending)
}

/// Register the batch in one store call. Returns the keys the store now holds, with their
/// delivery directories; the others' results are in `slots`.
async fn register_batch(
    cx: &Context<'_>,
    store: &dyn Store,
    cs: &[&Change],
    pending: Vec<(usize, NewKey, PathBuf)>,
    actor: &Actor,
    slots: &mut Slots,
) -> Vec<(usize, String, PathBuf)> {
    if pending.is_empty() {
        return Vec::new();
    }
    let news: Vec<NewKey> = pending.iter().map(|(_, n, _)| n.clone()).collect();
    tracing::trace!(
        keys = news.len(),
        "registering a batch of new keys (hashes only)"
    );
    let mut registered = Vec::with_capacity(pending.len());
    match store.create_batch(news, cx.by(&cs[0].store, actor)).await {
        Ok(_) => {
            registered.extend(pending.into_iter().map(|(at, n, dir)| (at, n.id, dir)));
        }
        Err(e) => {
            tracing::debug!(error = %e, "registering the batch failed; settling each key");
            let answered = !matches!(e, StoreError::Backend(_));
            for (at, new, dir) in pending {
                let c = cs[at];
                match store.get(&new.id).await {
                    Ok(Some(k)) if k.generation == new.generation => {
                        registered.push((at, new.id, dir))
                    }
                    Ok(_) if answered => {
                        // Not taken: register this one alone (its own answer, its own fate).
                        let id = new.id.clone();
                        slots[at] = Some(
                            register_one(cx, store, c, (new, dir), actor)
                                .await
                                .map(|d| (id, d)),
                        );
                    }
                    _ => {
                        tracing::warn!(key = %c.name, "the store cannot say whether it took the key; its delivery stays pending for the next apply to settle");
                        slots[at] =
                            Some(Err(store_err(&c.store)(StoreError::Backend(e.to_string()))));
                    }
                }
            }
        }
    }
    if let Err(e) = failpoint::hit(failpoint::AFTER_REGISTER) {
        for (at, _, _) in registered {
            slots[at] = Some(Err(e.for_key(cs[at])));
        }
        return Vec::new();
    }
    registered
}

/// The tail of `create_key_with` for one key of a batch whose delivery is durable:
/// register it, then mark its delivery active.
async fn register_one(
    cx: &Context<'_>,
    store: &dyn Store,
    c: &Change,
    (new, dir): (NewKey, PathBuf),
    actor: &Actor,
) -> Result<PathBuf, ApplyError> {
    let (id, generation) = (new.id.clone(), new.generation);
    if let Err(e) = store.create(new, cx.by(&c.store, actor)).await {
        return Err(settle_after_failure(cx, store, c, &dir, (&id, generation), e).await);
    }
    failpoint::hit(failpoint::AFTER_REGISTER)?;
    mark_active(cx, c, &dir).await?;
    failpoint::hit(failpoint::AFTER_ACTIVATE)?;
    Ok(dir)
}

/// Mark the registered keys' deliveries active together.
async fn activate_batch(
    cx: &Context<'_>,
    cs: &[&Change],
    registered: Vec<(usize, String, PathBuf)>,
    slots: &mut Slots,
) {
    if registered.is_empty() {
        return;
    }
    let outbox = cx.outbox.clone();
    let dirs: Vec<PathBuf> = registered.iter().map(|(_, _, d)| d.clone()).collect();
    let marked = blocking(move || Ok(outbox.mark_active_batch(&dirs)), "a batch").await;
    let after = failpoint::hit(failpoint::AFTER_ACTIVATE);
    let marked = match marked {
        Ok(m) => m,
        Err(e) => {
            for (at, _, _) in &registered {
                slots[*at] = Some(Err(e.for_key(cs[*at])));
            }
            return;
        }
    };
    for ((at, id, dir), m) in registered.into_iter().zip(marked) {
        let key = format!("{}/{}", cs[at].store, cs[at].name);
        slots[at] = Some(match (m, &after) {
            (Err(e), _) => Err(ApplyError::Deliver {
                key,
                source: Box::new(e),
            }),
            (Ok(()), Err(e)) => Err(e.for_key(cs[at])),
            (Ok(()), Ok(())) => Ok((id, dir)),
        });
    }
}

pub(crate) fn store_err(store: &str) -> impl Fn(StoreError) -> ApplyError + '_ {
    move |e| ApplyError::Store {
        store: store.to_string(),
        source: e,
    }
}

pub(crate) async fn apply_one(
    cx: &Context<'_>,
    c: &Change,
    actor: &Actor,
) -> Result<Done, ApplyError> {
    failpoint::hit(failpoint::BETWEEN_KEYS)?;
    cx.lease_held(&c.store).await?;
    tracing::debug!(store = %c.store, key = %c.name, action = ?c.action, id = ?c.key_id, "applying");
    tracing::trace!(change = ?c, "change");
    let store = cx
        .stores
        .get(&c.store)
        .ok_or_else(|| ApplyError::UnknownStore(c.store.clone()))?;
    let serr = store_err(&c.store);
    let by = cx.by(&c.store, actor);
    let mut done = Done {
        store: c.store.clone(),
        name: c.name.clone(),
        action: c.action,
        key_id: c.key_id.clone(),
        delivery: None,
    };
    let version = || {
        c.version.ok_or_else(|| ApplyError::Invalid {
            key: format!("{}/{}", c.store, c.name),
            message: "the plan lacks the live version".into(),
        })
    };
    let id = || c.key_id.clone().unwrap_or_default();
    match c.action {
        Action::Create => {
            let (key_id, dir) = create_key(cx, store.as_ref(), c, actor).await?;
            done.key_id = Some(key_id);
            done.delivery = Some(dir);
        }
        Action::Replace => {
            // New key first (delivered, registered); only then is the old one revoked.
            let (key_id, dir) = create_key(cx, store.as_ref(), c, actor).await?;
            done.key_id = Some(key_id);
            done.delivery = Some(dir);
            failpoint::hit(failpoint::REPLACE_BEFORE_REVOKE)?;
            let new_id = done.key_id.clone().unwrap_or_default();
            retire_replaced(cx, c, &new_id, &id(), version()?, actor).await?;
        }
        Action::Rotate | Action::Update | Action::Disable => {
            let mut v = version()?;
            let mut last = None;
            // An adoption first marks the key managed, alone (stores accept nothing else on
            // an unmanaged key); then the edits the spec asks for.
            let (adoption, rest) = split_adoption(&c.patch);
            for patch in [adoption, rest].into_iter().flatten() {
                let k = store.update(by.key(&id(), v), patch).await.map_err(&serr)?;
                v = k.version;
                last = Some(k);
            }
            if c.set_status == Some(KeyStatus::Active) {
                let k = store
                    .set_status(by.key(&id(), v), KeyStatus::Active)
                    .await
                    .map_err(&serr)?;
                v = k.version;
                last = Some(k);
            }
            if c.action == Action::Disable {
                last = Some(
                    store
                        .set_status(by.key(&id(), v), KeyStatus::Disabled)
                        .await
                        .map_err(&serr)?,
                );
            }
            if c.action == Action::Rotate {
                let (dir, k) = rotate_key(cx, store.as_ref(), c, v, actor).await?;
                done.delivery = Some(dir);
                last = Some(k);
            }
            if let Some(k) = last {
                record_state(store.as_ref(), k, by).await.map_err(&serr)?;
            }
        }
        Action::Revoke => {
            revoke_recorded(store.as_ref(), &c.store, &id(), version()?, by).await?;
            // Its deliveries must not look current to a recipient.
            if let Err(e) = cx.outbox.mark_revoked(&c.store, &c.name, &id()) {
                tracing::warn!(error = %e, "could not mark the revoked key's deliveries revoked");
            }
        }
        Action::Delete => {
            store
                .delete(by.key(&id(), version()?))
                .await
                .map_err(&serr)?;
            // Its delivery is no longer current: a later key of this name is then a plain
            // create, not drift ("deleted outside keyward").
            if let Ok(Some((dir, m))) = cx.outbox.latest(&c.store, &c.name)
                && c.key_id.as_deref() == Some(m.key_id.as_str())
                && let Err(e) = cx.outbox.mark(&dir, DeliveryStatus::Superseded)
            {
                tracing::warn!(error = %e, "could not mark the deleted key's delivery superseded");
            }
        }
    }
    Ok(done)
}

/// A patch split into the adoption (`managed_by` alone) and the rest, each None when empty.
fn split_adoption(patch: &KeyPatch) -> (Option<KeyPatch>, Option<KeyPatch>) {
    let mut rest = patch.clone();
    let adoption = rest.managed_by.take().map(|m| KeyPatch {
        managed_by: Some(m),
        ..KeyPatch::default()
    });
    (adoption, (!rest.is_empty()).then_some(rest))
}

/// Record the state keyward left a key in (`applied_digest`), so a later edit made outside
/// keyward shows as drift.
pub(crate) async fn record_state(
    store: &dyn Store,
    k: LiveKey,
    by: Writer<'_>,
) -> Result<LiveKey, StoreError> {
    let want = k.state_digest();
    if k.applied_digest.as_deref() == Some(want.as_str()) || k.status == KeyStatus::Revoked {
        return Ok(k);
    }
    let patch = KeyPatch {
        applied_digest: Some(want),
        ..KeyPatch::default()
    };
    store.update(by.key(&k.id, k.version), patch).await
}

/// Revoke, recording first that keyward is the one revoking (a revoked key cannot be
/// updated afterwards).
pub(crate) async fn revoke_recorded(
    store: &dyn Store,
    store_name: &str,
    id: &str,
    version: u64,
    by: Writer<'_>,
) -> Result<LiveKey, ApplyError> {
    let serr = store_err(store_name);
    let Some(live) = store.get(id).await.map_err(&serr)? else {
        return Err(serr(StoreError::NotFound(id.to_string())));
    };
    if live.version != version {
        return Err(serr(StoreError::Conflict {
            id: id.to_string(),
            expected: version,
            found: live.version,
        }));
    }
    let after = LiveKey {
        status: KeyStatus::Revoked,
        ..live
    };
    let patch = KeyPatch {
        applied_digest: Some(after.state_digest()),
        ..KeyPatch::default()
    };
    let serr = store_err(store_name);
    let w = by.key(id, version);
    let k = store.update(w, patch).await.map_err(&serr)?;
    failpoint::hit(failpoint::REVOKE_AFTER_RECORD)?;
    store
        .set_status(w.at(k.version), KeyStatus::Revoked)
        .await
        .map_err(&serr)
}

/// The old key of a replace: kept valid through the grace the plan shows (its expiry cut to
/// now + the key's rotation grace, labelled with the key that replaces it, so later plans
/// revoke it once the grace is over), or revoked at once when the grace is 0.
async fn retire_replaced(
    cx: &Context<'_>,
    c: &Change,
    new_id: &str,
    old_id: &str,
    version: u64,
    actor: &Actor,
) -> Result<(), ApplyError> {
    let old_store_name = old_store_of(c);
    let old_store = cx
        .stores
        .get(&old_store_name)
        .ok_or_else(|| ApplyError::UnknownStore(old_store_name.clone()))?;
    let grace = desired(cx, c)?.rotation.grace;
    let by = cx.by(&old_store_name, actor);
    if c.old_valid_until.is_none() || grace.seconds <= 0 {
        revoke_recorded(old_store.as_ref(), &old_store_name, old_id, version, by).await?;
        return Ok(());
    }
    let serr = store_err(&old_store_name);
    let Some(live) = old_store.get(old_id).await.map_err(&serr)? else {
        return Err(serr(StoreError::NotFound(old_id.to_string())));
    };
    let until = (cx.clock.now() + grace.to_chrono()).trunc_subsecs(0);
    let mut labels = live.labels.clone();
    labels.insert(diff::REPLACED_BY.to_string(), new_id.to_string());
    let patch = KeyPatch {
        expires_at: Some(Some(live.expires_at.map_or(until, |t| t.min(until)))),
        labels: Some(labels),
        ..KeyPatch::default()
    };
    let k = old_store
        .update(by.key(old_id, version), patch)
        .await
        .map_err(&serr)?;
    record_state(old_store.as_ref(), k, by)
        .await
        .map_err(&serr)?;
    Ok(())
}

/// A replace across stores names the old store in its `store` field change.
pub(crate) fn old_store_of(c: &Change) -> String {
    c.fields
        .iter()
        .find(|f| f.field == "store" && f.forces_replacement)
        .and_then(|f| f.before.clone())
        .unwrap_or_else(|| c.store.clone())
}

fn desired<'a>(cx: &'a Context<'_>, c: &Change) -> Result<&'a DesiredKey, ApplyError> {
    cx.spec
        .key(&c.store, &c.name)
        .ok_or_else(|| ApplyError::Invalid {
            key: format!("{}/{}", c.store, c.name),
            message: "the plan names a key the spec does not have".into(),
        })
}

fn principals<'a>(cx: &'a Context<'_>, c: &Change) -> Result<Vec<&'a Principal>, ApplyError> {
    c.deliver_to
        .iter()
        .map(|id| {
            cx.spec
                .principals
                .get(id)
                .ok_or_else(|| ApplyError::Invalid {
                    key: format!("{}/{}", c.store, c.name),
                    message: format!("recipient `{id}` is not in people.yaml"),
                })
        })
        .collect()
}

/// Seal `secret` to the change's recipients and write the pending delivery durably.
/// Sealing and the fsyncs of the outbox are blocking work: they run on tokio's blocking
/// pool (when there is a runtime) so that `apply`'s bounded concurrency really overlaps
/// them, instead of serialising every key's disk flushes on one async task.
async fn deliver_pending(
    cx: &Context<'_>,
    c: &Change,
    meta: &EnvelopeMeta,
    secret: secret::Secret,
    now: DateTime<Utc>,
    commit: Option<String>,
    points: [&'static str; 2],
) -> Result<PathBuf, ApplyError> {
    // The delivery is written next: only while this apply still holds the store.
    cx.lease_held(&c.store).await?;
    let key = format!("{}/{}", c.store, c.name);
    let ps: Vec<Principal> = principals(cx, c)?.into_iter().cloned().collect();
    let outbox = cx.outbox.clone();
    let meta = meta.clone();
    let environment = c.environment.clone();
    let job_key = key.clone();
    let job = move || -> Result<PathBuf, ApplyError> {
        let refs: Vec<&Principal> = ps.iter().collect();
        let sealed = deliver::seal_for_principals(&meta, &secret, &refs).map_err(|e| {
            ApplyError::Deliver {
                key: job_key.clone(),
                source: Box::new(e),
            }
        })?;
        drop(secret);
        failpoint::hit(points[0])?;
        let manifest = Manifest::pending(&meta, &environment, now, commit, &sealed);
        let dir = outbox
            .write_pending(&manifest, &sealed)
            .map_err(|e| ApplyError::Deliver {
                key: job_key,
                source: Box::new(e),
            })?;
        tracing::trace!(manifest = ?manifest, dir = %dir.display(), "pending delivery written");
        failpoint::hit(points[1])?;
        Ok(dir)
    };
    blocking(job, &key).await
}

/// Mark a delivery active (blocking file work, see [`deliver_pending`]).
async fn mark_active(
    cx: &Context<'_>,
    c: &Change,
    dir: &std::path::Path,
) -> Result<(), ApplyError> {
    let key = format!("{}/{}", c.store, c.name);
    let outbox = cx.outbox.clone();
    let dir = dir.to_path_buf();
    let job_key = key.clone();
    blocking(
        move || {
            outbox
                .mark(&dir, DeliveryStatus::Active)
                .map(|_| ())
                .map_err(|e| ApplyError::Deliver {
                    key: job_key,
                    source: Box::new(e),
                })
        },
        &key,
    )
    .await
}

/// Run blocking work on tokio's blocking pool, or inline outside a runtime.
async fn blocking<T, F>(job: F, key: &str) -> Result<T, ApplyError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApplyError> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h.spawn_blocking(job).await.unwrap_or_else(|e| {
            Err(ApplyError::Invalid {
                key: key.to_string(),
                message: format!("delivery task failed: {e}"),
            })
        }),
        Err(_) => job(),
    }
}

/// After registering failed. The error alone does not prove the store did nothing: an
/// `http` store's connection can drop after the server committed the change, and a
/// retried create can be answered `idempotency_in_progress`. So the store is asked, as the
/// recovery of the next run would: if it holds key `id` at `generation`, the secret is
/// live and its delivery is marked active. If it does not, and the error is an answer (a
/// refusal, a conflict), the secret never became valid and its envelopes go. After a
/// backend error (no answer: the request may still be running on the server) or when the
/// store cannot be asked, the delivery stays `pending` for the next apply to settle.
/// Voiding on the error alone once left a live rotated secret whose only delivery was void
/// (found by killing `keyward serve` mid-apply).
async fn settle_after_failure(
    cx: &Context<'_>,
    store: &dyn Store,
    c: &Change,
    dir: &std::path::Path,
    (id, generation): (&str, u32),
    e: StoreError,
) -> ApplyError {
    match store.get(id).await {
        Ok(live) => {
            let registered =
                live.is_some_and(|k| k.generation == generation && k.status != KeyStatus::Revoked);
            tracing::debug!(key = %c.name, id = %id, generation, registered, "settling a delivery after a failed store call");
            let settled = if registered {
                mark_active(cx, c, dir).await.map_err(|e| e.to_string())
            } else if matches!(e, StoreError::Backend(_)) {
                Ok(())
            } else {
                cx.outbox.void(dir).map(|_| ()).map_err(|e| e.to_string())
            };
            if let Err(se) = settled {
                tracing::warn!(error = %se, "could not settle a pending delivery; the next apply settles it");
            }
        }
        Err(ge) => {
            tracing::warn!(error = %ge, key = %c.name, "the store cannot say whether it took the change; the delivery stays pending for the next apply to settle");
        }
    }
    ApplyError::Store {
        store: c.store.clone(),
        source: e,
    }
}

/// Create key `c` with a secret generated here (sealed, delivered, then registered).
pub(crate) async fn create_key(
    cx: &Context<'_>,
    store: &dyn Store,
    c: &Change,
    actor: &Actor,
) -> Result<(String, PathBuf), ApplyError> {
    let d = desired(cx, c)?;
    let id = secret::new_key_id();
    let secret = secret::generate(&d.environment, &id);
    create_key_with(cx, store, c, actor, (id, secret), None).await
}

/// The record a new key is registered with (by hash), its applied state recorded.
fn new_record(
    spec: &Spec,
    d: &DesiredKey,
    (id, generation): (&str, u32),
    now: DateTime<Utc>,
    secret_hash: crate::model::SecretHash,
) -> NewKey {
    let new = NewKey {
        id: id.to_string(),
        name: d.name.clone(),
        environment: d.environment.clone(),
        owner: d.owner.clone(),
        purpose: d.purpose.clone(),
        scopes: diff::scope_strings(&d.scopes),
        labels: d.labels.clone(),
        status: if d.state == DesiredState::Disabled {
            KeyStatus::Disabled
        } else {
            KeyStatus::Active
        },
        issued_at: now,
        expires_at: diff::expires_at(&d.expiry, now),
        lifetime: diff::lifetime_string(&d.expiry),
        generation,
        spec_generation: d.rotation.generation,
        recipients: diff::recipient_map(spec, d),
        quota_per_day: d.quota.map(|q| q.per_day),
        protected: d.protected,
        managed_by: Some(MANAGED_BY.to_string()),
        applied_digest: None,
        secret_hash,
    };
    NewKey {
        applied_digest: Some(new.state_digest()),
        ..new
    }
}

/// Create key `c` with a secret made elsewhere (generated here, or pasted from a vendor
/// console): seal it, write the delivery durably as `pending`, register the key by hash,
/// then mark the delivery active. `client_id`: what the console showed with the secret
/// (ALM), sealed beside it.
pub(crate) async fn create_key_with(
    cx: &Context<'_>,
    store: &dyn Store,
    c: &Change,
    actor: &Actor,
    (id, secret): (String, secret::Secret),
    client_id: Option<String>,
) -> Result<(String, PathBuf), ApplyError> {
    let d = desired(cx, c)?;
    let now = cx.clock.now().trunc_subsecs(0);
    let generation = c.new_generation.unwrap_or(1);
    let expires_at = diff::expires_at(&d.expiry, now);
    let meta = EnvelopeMeta {
        key: d.name.clone(),
        store: d.store.clone(),
        id: id.clone(),
        generation,
        expires_at,
        previous_valid_until: None,
        client_id,
    };
    // The form the store registers (a hash, or a verifier it checks logins with).
    let secret_hash = store.secret_form(&secret).map_err(store_err(&c.store))?;
    let dir = deliver_pending(
        cx,
        c,
        &meta,
        secret,
        now,
        actor.commit.clone(),
        [failpoint::AFTER_SEAL, failpoint::AFTER_PENDING],
    )
    .await?;
    let new = new_record(cx.spec, d, (&id, generation), now, secret_hash);
    tracing::trace!(key = ?new, dir = %dir.display(), "registering a new key (hash only)");
    if let Err(e) = store.create(new, cx.by(&c.store, actor)).await {
        return Err(settle_after_failure(cx, store, c, &dir, (&id, generation), e).await);
    }
    failpoint::hit(failpoint::AFTER_REGISTER)?;
    mark_active(cx, c, &dir).await?;
    failpoint::hit(failpoint::AFTER_ACTIVATE)?;
    Ok((id, dir))
}

async fn rotate_key(
    cx: &Context<'_>,
    store: &dyn Store,
    c: &Change,
    version: u64,
    actor: &Actor,
) -> Result<(PathBuf, LiveKey), ApplyError> {
    let d = desired(cx, c)?;
    let id = c.key_id.clone().unwrap_or_default();
    let secret = secret::generate(&d.environment, &id);
    let grace = Some(d.rotation.grace.to_chrono());
    rotate_key_with(cx, store, c, (version, actor), secret, grace, None).await
}

/// Rotate key `c` to a secret made elsewhere. `grace`: how long the previous secret keeps
/// working (None: it stops at once, as when a console regenerates a key). `client_id`:
/// what the console shows with the secret (ALM keeps it through a regenerate).
pub(crate) async fn rotate_key_with(
    cx: &Context<'_>,
    store: &dyn Store,
    c: &Change,
    (version, actor): (u64, &Actor),
    secret: secret::Secret,
    grace: Option<chrono::Duration>,
    client_id: Option<String>,
) -> Result<(PathBuf, LiveKey), ApplyError> {
    let d = desired(cx, c)?;
    let now = cx.clock.now().trunc_subsecs(0);
    let id = c.key_id.clone().unwrap_or_default();
    let generation = c.new_generation.unwrap_or(1);
    let expires_at = diff::expires_at(&d.expiry, now);
    let grace_until = grace.map(|g| now + g);
    let meta = EnvelopeMeta {
        key: d.name.clone(),
        store: d.store.clone(),
        id: id.clone(),
        generation,
        expires_at,
        previous_valid_until: grace_until,
        client_id,
    };
    let secret_hash = store.secret_form(&secret).map_err(store_err(&c.store))?;
    let dir = deliver_pending(
        cx,
        c,
        &meta,
        secret,
        now,
        actor.commit.clone(),
        [
            failpoint::ROTATE_AFTER_SEAL,
            failpoint::ROTATE_AFTER_PENDING,
        ],
    )
    .await?;
    let rot = Rotate {
        secret_hash,
        previous_valid_until: grace_until,
        issued_at: now,
        expires_at,
        generation,
        spec_generation: d.rotation.generation,
        recipients: diff::recipient_map(cx.spec, d),
    };
    tracing::trace!(id = %id, rotate = ?rot, dir = %dir.display(), "rotating (hash only)");
    let live = match store
        .rotate(cx.by(&c.store, actor).key(&id, version), rot)
        .await
    {
        Ok(k) => k,
        Err(e) => {
            return Err(settle_after_failure(cx, store, c, &dir, (&id, generation), e).await);
        }
    };
    failpoint::hit(failpoint::ROTATE_AFTER_STORE)?;
    mark_active(cx, c, &dir).await?;
    failpoint::hit(failpoint::ROTATE_AFTER_ACTIVATE)?;
    Ok((dir, live))
}
