//! Notifications: expiry reminders at the policy's offsets and notices after an apply
//! (created, rotated, replaced, revoked, disabled, deleted), sent by email (SMTP) and/or a
//! signed webhook as keyward.yaml `notify:` says. Owns deciding which notices are owed,
//! remembering what was sent (and what is still pending) in each store's audit events, and
//! reporting failures. Must never put a secret into a message or an event, and must never
//! fail or undo an apply: a failed send is reported and retried by the next run.
//!
//! Composition is pure (`compose`); the sending is behind `transport::Transport`.
//!
//! Events (recorded with `Store::record` in the key's store, never holding a secret):
//! - `notify.pending` `{notice}`: an apply's notice, written before it is first sent;
//! - `notify.sent` `{id, channel, kind, store, key, key_id, to}`: one channel delivered it;
//! - `notify.dropped` `{id, channel, why}`: a pending notice given up after [`RETRY_FOR_DAYS`].
//!
//! Reminders are not written as pending: they are recomputed from the live keys on each run
//! (`keyward expiring --notify`), and their `notify.sent` events make each one go out once per
//! key, expiry and offset.

pub mod budget;
pub mod compose;
pub mod transport;

use crate::apply::{ApplyReport, Done};
use crate::deliver::Manifest;
use crate::diff::{Action, Change};
use crate::model::{Actor, Event, LiveKey};
use crate::spec::{NoticeKind, Spec};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use compose::Outgoing;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use transport::Transport;

/// Pending notices of an apply are retried this many days, then dropped (and reported).
pub const RETRY_FOR_DAYS: i64 = 7;
/// After this many failures in a row, a channel is not tried again in the same run.
pub const MAX_FAILURES_IN_A_ROW: usize = 3;

pub const EVENT_PENDING: &str = "notify.pending";
pub const EVENT_SENT: &str = "notify.sent";
pub const EVENT_DROPPED: &str = "notify.dropped";

/// A notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("${0} is not set")]
    MissingEnv(String),
    #[error("invalid mail address {0}")]
    Address(String),
    #[error("SMTP: {0}")]
    Smtp(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("the message would contain a secret, so it was not sent (a bug: please report it)")]
    WouldLeak,
    #[error("{0}")]
    Invalid(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("not tried: the previous {0} sends on this channel failed")]
    ChannelDown(usize),
    #[error("the store's events could not be read, so it is unknown whether it was sent: {0}")]
    Log(String),
}

impl NotifyError {
    /// What to do about it; `place` is where the channel is configured (`keyward.yaml:30`).
    pub fn next_step(&self, channel: Channel, place: &str) -> String {
        match self {
            NotifyError::MissingEnv(v) => format!(
                "set ${v} in the environment of the job that runs keyward (notify.{channel} at {place})"
            ),
            NotifyError::Address(_) => format!(
                "fix the address (people.yaml `email`, or `from`/`to` of notify.{channel} at {place})"
            ),
            NotifyError::WouldLeak => "report this bug; nothing was sent".into(),
            NotifyError::Refused(_) => format!(
                "point notify.{channel} at a public receiver, or set `allow_private: true` there ({place}) if it is on your own network"
            ),
            NotifyError::Log(_) => "check that the store is reachable".into(),
            _ => format!("check that the server is up and notify.{channel} at {place}"),
        }
    }
}

/// One thing to tell a key's owner. Holds no secret: names, ids, times, paths and reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Stable id: the same on every retry (webhook `X-Keyward-Delivery`, mail Message-ID).
    pub id: String,
    pub kind: NoticeKind,
    /// When it happened (the apply, or the reminder run).
    pub at: DateTime<Utc>,
    pub store: String,
    pub environment: String,
    pub key: String,
    pub key_id: Option<String>,
    pub owner: String,
    pub generation: Option<u32>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Rotations: until when the previous secret verifies.
    pub previous_valid_until: Option<DateTime<Utc>>,
    /// Reminders: whole days left.
    pub days_left: Option<i64>,
    /// Reminders: the policy offset this reminder is for (`7d`).
    pub offset: Option<String>,
    pub reasons: Vec<String>,
    /// New secrets: the delivery directory, relative to the repository root.
    pub delivery: Option<String>,
    /// New secrets: who received an envelope (principal ids).
    pub recipients: Vec<String>,
    /// The spec commit applied.
    pub commit: Option<String>,
    /// Where the key is defined (`file:line`).
    pub defined_at: Option<String>,
    /// Reminders: what to do.
    pub todo: Option<String>,
    /// Unused keys: when the plan disables the key unless it is used before then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
}

pub(crate) fn short(c: &str) -> &str {
    crate::plan::short(c)
}

fn kind_of(action: Action) -> Option<NoticeKind> {
    match action {
        Action::Create => Some(NoticeKind::Created),
        Action::Rotate => Some(NoticeKind::Rotated),
        Action::Replace => Some(NoticeKind::Replaced),
        Action::Revoke => Some(NoticeKind::Revoked),
        Action::Disable => Some(NoticeKind::Disabled),
        Action::Delete => Some(NoticeKind::Deleted),
        Action::Update => None,
    }
}

/// A notice of `kind` ahead of what `item` falls due for (an expiry, a disable for
/// disuse), at the reminder offset `slot`: id `KIND/STORE/KEY_ID/DUE/OFFSET`.
fn ahead_of(
    item: &crate::lifecycle::DueItem,
    kind: NoticeKind,
    slot: crate::spec::Span,
    now: DateTime<Utc>,
) -> Notice {
    Notice {
        id: format!(
            "{kind}/{}/{}/{}/{slot}",
            item.store,
            item.key_id,
            item.at.timestamp()
        ),
        kind,
        at: now,
        store: item.store.clone(),
        environment: item.environment.clone(),
        key: item.name.clone(),
        key_id: Some(item.key_id.clone()),
        owner: item.owner.clone(),
        generation: None,
        expires_at: None,
        previous_valid_until: None,
        days_left: Some(item.days_left),
        offset: Some(slot.to_string()),
        reasons: Vec::new(),
        delivery: None,
        recipients: Vec::new(),
        commit: None,
        defined_at: item.defined_at.clone(),
        todo: None,
        due_at: None,
    }
}

/// The reminders owed now: every active key (in the spec, or made in a console) that is
/// inside one of the policy's reminder offsets before its expiry. Each gets the id
/// `reminder/STORE/KEY_ID/EXPIRY/OFFSET`, so it is sent once per key, expiry and offset
/// (a rotation moves the expiry and starts the reminders over).
pub fn reminders(
    spec: &Spec,
    observed: &BTreeMap<String, Vec<LiveKey>>,
    now: DateTime<Utc>,
) -> Vec<Notice> {
    let offsets = &spec.policy.reminders;
    let window = spec.policy.reminder_window();
    let mut out = Vec::new();
    let mut due = crate::lifecycle::due(spec, observed, now, window);
    crate::console::steps::add_renewal(spec, &mut due, now);
    for item in due {
        if item.kind != crate::lifecycle::DueKind::Expiring {
            continue;
        }
        let Some(slot) = crate::lifecycle::reminder_slot(offsets, now, item.at) else {
            continue;
        };
        let todo = if item.console_steps.is_empty() {
            item.todo.clone()
        } else {
            let steps: Vec<String> = (item.console_steps.iter().enumerate())
                .map(|(n, s)| format!("{}. {s}", n + 1))
                .collect();
            format!("{}. In the console: {}", item.todo, steps.join(" "))
        };
        out.push(Notice {
            expires_at: Some(item.at),
            todo: Some(todo),
            ..ahead_of(&item, NoticeKind::Reminder, slot, now)
        });
    }
    out
}

/// The notices owed now ahead of a disable for disuse: every key the plan will disable
/// under `unused_after` (`lifecycle::unused`) that is inside one of the policy's `reminders`
/// offsets before that day. Each gets the id `unused/STORE/KEY_ID/DUE/OFFSET`, so it goes
/// out once per key, due day and offset (a call moves the due day and starts them over).
pub fn unused_notices(
    spec: &Spec,
    observed: &BTreeMap<String, Vec<LiveKey>>,
    seen: &crate::unused::Seen,
    now: DateTime<Utc>,
) -> Vec<Notice> {
    let offsets = &spec.policy.reminders;
    let window = spec.policy.reminder_window();
    let mut out = Vec::new();
    for item in crate::lifecycle::unused(spec, observed, seen, now, window) {
        let Some(slot) = crate::lifecycle::reminder_slot(offsets, now, item.at) else {
            continue;
        };
        let used = match item.last_used {
            Some(t) => format!("last used {}", t.format("%Y-%m-%d")),
            None => "never used".into(),
        };
        let days = item.unused_days.unwrap_or_default();
        out.push(Notice {
            reasons: vec![format!("has not been used for {days} days ({used})")],
            todo: Some(item.todo.clone()),
            due_at: Some(item.at),
            ..ahead_of(&item, NoticeKind::Unused, slot, now)
        });
    }
    out
}

/// What an apply did to one key, with the plan's change and the delivery manifest.
pub struct AppliedKey<'a> {
    pub done: &'a Done,
    pub change: Option<&'a Change>,
    pub manifest: Option<&'a Manifest>,
}

/// The notices of one applied change (None for in-place updates).
pub fn notice_for(
    spec: &Spec,
    a: &AppliedKey<'_>,
    commit: Option<&str>,
    now: DateTime<Utc>,
) -> Option<Notice> {
    let kind = kind_of(a.done.action)?;
    let d = a.done;
    let rel = |p: &Path| {
        p.strip_prefix(&spec.root)
            .unwrap_or(p)
            .display()
            .to_string()
    };
    let desired = spec.key(&d.store, &d.name);
    let key_id = d
        .key_id
        .clone()
        .or_else(|| a.change.and_then(|c| c.key_id.clone()))
        .or_else(|| a.manifest.map(|m| m.key_id.clone()));
    let generation = a
        .manifest
        .map(|m| m.generation)
        .or_else(|| a.change.and_then(|c| c.new_generation));
    Some(Notice {
        id: format!(
            "{kind}/{}/{}/{}/{}",
            d.store,
            key_id.as_deref().unwrap_or(&d.name),
            generation.unwrap_or(0),
            now.timestamp()
        ),
        kind,
        at: now,
        store: d.store.clone(),
        environment: a
            .change
            .map(|c| c.environment.clone())
            .or_else(|| a.manifest.map(|m| m.environment.clone()))
            .unwrap_or_default(),
        key: d.name.clone(),
        key_id,
        owner: a
            .change
            .map(|c| c.owner.clone())
            .or_else(|| desired.map(|k| k.owner.clone()))
            .unwrap_or_default(),
        generation,
        expires_at: a.manifest.and_then(|m| m.expires_at),
        previous_valid_until: a.manifest.and_then(|m| m.previous_valid_until),
        days_left: None,
        offset: None,
        reasons: a.change.map(|c| c.reasons.clone()).unwrap_or_default(),
        delivery: d.delivery.as_deref().map(rel),
        recipients: match a.manifest {
            Some(m) => m.recipients.iter().map(|r| r.id.clone()).collect(),
            None => a.change.map(|c| c.deliver_to.clone()).unwrap_or_default(),
        },
        commit: commit.map(str::to_string),
        defined_at: desired.map(|k| format!("{}:{}", k.location.file.display(), k.location.line)),
        todo: None,
        due_at: None,
    })
}

/// The notices of an apply's completed changes. Reads each new delivery's manifest.
pub fn after_apply(
    spec: &Spec,
    changes: &[Change],
    report: &ApplyReport,
    commit: Option<&str>,
    now: DateTime<Utc>,
) -> Vec<Notice> {
    let mut out = Vec::new();
    for done in &report.done {
        let change = changes
            .iter()
            .find(|c| c.store == done.store && c.name == done.name && c.action == done.action);
        let manifest: Option<Manifest> = done
            .delivery
            .as_ref()
            .and_then(|dir| Manifest::read(&dir.join("manifest.json")).ok());
        let a = AppliedKey {
            done,
            change,
            manifest: manifest.as_ref(),
        };
        if let Some(n) = notice_for(spec, &a, commit, now) {
            out.push(n);
        }
    }
    out
}

/// What the stores' events say was sent, dropped and left pending.
#[derive(Debug, Default, Clone)]
pub struct Log {
    pub sent: BTreeSet<(String, Channel)>,
    pub dropped: BTreeSet<(String, Channel)>,
    /// Pending apply notices by id.
    pub pending: BTreeMap<String, Notice>,
}

impl Log {
    pub fn add(&mut self, e: &Event) {
        let id = || {
            e.detail
                .get("id")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let channel = || {
            e.detail
                .get("channel")
                .and_then(|c| serde_json::from_value::<Channel>(c.clone()).ok())
        };
        match e.action.as_str() {
            EVENT_PENDING => {
                if let Some(n) = e
                    .detail
                    .get("notice")
                    .and_then(|n| serde_json::from_value::<Notice>(n.clone()).ok())
                {
                    self.pending.insert(n.id.clone(), n);
                }
            }
            EVENT_SENT => {
                if let (Some(i), Some(c)) = (id(), channel()) {
                    self.sent.insert((i, c));
                }
            }
            EVENT_DROPPED => {
                if let (Some(i), Some(c)) = (id(), channel()) {
                    self.dropped.insert((i, c));
                }
            }
            _ => {}
        }
    }
    pub fn done(&self, id: &str, c: Channel) -> bool {
        let k = (id.to_string(), c);
        self.sent.contains(&k) || self.dropped.contains(&k)
    }
}

/// What one run does: send these (notice, channel) pairs, drop these.
#[derive(Debug, Default)]
pub struct Work {
    pub send: Vec<(Notice, Channel)>,
    pub drop: Vec<(Notice, Channel)>,
}

/// Decide the work of a run (pure): `fresh` notices (this apply's, or the reminders owed
/// now) on every configured channel unless already sent, and the log's pending notices not
/// yet sent on a channel — dropped instead when older than [`RETRY_FOR_DAYS`]. Kinds not in
/// `on` are left out.
pub fn plan_work(
    fresh: &[Notice],
    log: &Log,
    channels: &[Channel],
    on: &BTreeSet<NoticeKind>,
    now: DateTime<Utc>,
) -> Work {
    let mut w = Work::default();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for n in fresh.iter().chain(log.pending.values()) {
        if !on.contains(&n.kind) || !seen.insert(n.id.as_str()) {
            continue;
        }
        let stale = !n.kind.recomputed() && now - n.at > chrono::Duration::days(RETRY_FOR_DAYS);
        for c in channels {
            if log.done(&n.id, *c) {
                continue;
            }
            if stale {
                w.drop.push((n.clone(), *c));
            } else {
                w.send.push((n.clone(), *c));
            }
        }
    }
    w.send.sort_by(|a, b| {
        (a.1, &a.0.store, &a.0.key, a.0.at).cmp(&(b.1, &b.0.store, &b.0.key, b.0.at))
    });
    w
}

/// One message that went out.
#[derive(Debug, Clone)]
pub struct Sent {
    pub notice: Notice,
    pub channel: Channel,
    /// Email: the addresses (empty: nobody had one, so nothing was sent).
    pub to: Vec<String>,
}

/// One message that did not go out.
#[derive(Debug)]
pub struct Failure {
    pub notice: Notice,
    pub channel: Channel,
    pub target: String,
    pub error: NotifyError,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub sent: Vec<Sent>,
    pub failed: Vec<Failure>,
    pub dropped: Vec<(Notice, Channel)>,
    /// Events that could not be written (the send itself happened): store, error.
    pub unrecorded: Vec<(String, String)>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

type Stores = BTreeMap<String, Arc<dyn Store>>;

/// Every `notify.*` event of one store.
async fn read_log(store: &dyn Store, log: &mut Log) -> Result<(), StoreError> {
    let mut after: Option<i64> = None;
    loop {
        let page = store.events(after, 1000).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.seq);
        for e in &page {
            if e.action.starts_with("notify.") {
                log.add(e);
            }
        }
    }
}

/// A configured channel that cannot send (e.g. its HTTP client could not be built).
pub struct Unavailable {
    pub channel: Channel,
    pub target: String,
    pub error: NotifyError,
}

/// A configured channel: ready to send, or why not.
pub type Configured = Result<Box<dyn Transport>, Unavailable>;

/// The transports keyward.yaml configures.
pub fn transports(spec: &Spec) -> Vec<Configured> {
    let mut out: Vec<Configured> = Vec::new();
    let Some(cfg) = &spec.notify else {
        return out;
    };
    if let Some(e) = &cfg.email {
        out.push(Ok(Box::new(transport::SmtpTransport::new(e))));
    }
    if let Some(w) = &cfg.webhook {
        out.push(match transport::WebhookTransport::new(w) {
            Ok(t) => Ok(Box::new(t)),
            Err(error) => Err(Unavailable {
                channel: Channel::Webhook,
                target: format!("webhook {}", transport::url_origin(&w.url)),
                error,
            }),
        });
    }
    out
}

fn compose_for(spec: &Spec, n: &Notice, c: Channel) -> Option<Outgoing> {
    let cfg = spec.notify.as_ref()?;
    Some(match c {
        Channel::Email => Outgoing::Email(compose::email(n, cfg.email.as_ref()?, spec)),
        Channel::Webhook => Outgoing::Webhook(compose::webhook(n, spec)),
    })
}

/// At most this many `notify.sent` events are written together (one transaction per
/// store)...
pub const RECORD_BATCH: usize = 64;
/// ...and none waits longer than this for others to join it. A run killed between a send
/// and its event sends that message again on the next run (delivery is at least once), so
/// these bound the repeats after a crash: the messages of the last fraction of a second, at
/// most [`RECORD_BATCH`] plus those in flight.
pub const RECORD_WITHIN: std::time::Duration = std::time::Duration::from_millis(200);

/// Send `fresh` notices and retry pending ones, remembering each in the key's store.
/// Never fails: everything that went wrong is in the outcome.
pub async fn run(
    spec: &Spec,
    stores: &Stores,
    fresh: Vec<Notice>,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Outcome {
    run_with(
        spec,
        stores,
        fresh,
        actor,
        now,
        &indicatif::ProgressBar::hidden(),
    )
    .await
}

/// [`run`], counting each message that went out (or did not) on `bar`. The channels send
/// side by side, each with its [`Transport::concurrency`] sends in flight.
pub async fn run_with(
    spec: &Spec,
    stores: &Stores,
    fresh: Vec<Notice>,
    actor: &Actor,
    now: DateTime<Utc>,
    bar: &indicatif::ProgressBar,
) -> Outcome {
    let mut out = Outcome::default();
    let Some(cfg) = &spec.notify else {
        return out;
    };
    let (log, unreadable) = read_logs(stores).await;
    // An apply's notices are remembered as pending before the first try (one write per
    // store for all of them).
    let pending: Vec<(String, (String, serde_json::Value))> = fresh
        .iter()
        .filter(|n| !n.kind.recomputed() && cfg.on.contains(&n.kind))
        .map(|n| {
            let detail = serde_json::json!({ "notice": n });
            (n.store.clone(), (EVENT_PENDING.to_string(), detail))
        })
        .collect();
    out.unrecorded
        .extend(remember_all(stores, pending, actor).await);
    let transports: BTreeMap<Channel, Configured> = self::transports(spec)
        .into_iter()
        .map(|t| (t.as_ref().map_or_else(|u| u.channel, |t| t.channel()), t))
        .collect();
    let channels: Vec<Channel> = transports.keys().copied().collect();
    let work = plan_work(&fresh, &log, &channels, &cfg.on, now);

    let drops = (work.drop.iter()).map(|(n, c)| {
        let detail = serde_json::json!({
            "id": n.id, "channel": c, "kind": n.kind, "store": n.store, "key": n.key,
            "why": format!("not delivered within {RETRY_FOR_DAYS} days"),
        });
        (n.store.clone(), (EVENT_DROPPED.to_string(), detail))
    });
    out.unrecorded
        .extend(remember_all(stores, drops.collect(), actor).await);
    out.dropped = work.drop;

    let run = Sending {
        spec,
        transports: &transports,
        unreadable: &unreadable,
        in_a_row: channels.iter().map(|c| (*c, AtomicUsize::new(0))).collect(),
    };
    run.send_all(stores, work.send, actor, bar, &mut out).await;
    for t in transports.values().flatten() {
        t.close().await;
    }
    out
}

/// The sending part of one run: the transports, and each channel's failures in a row.
struct Sending<'a> {
    spec: &'a Spec,
    transports: &'a BTreeMap<Channel, Configured>,
    /// Stores whose events could not be read (their reminders could be repeats).
    unreadable: &'a BTreeMap<String, String>,
    in_a_row: BTreeMap<Channel, AtomicUsize>,
}

impl Sending<'_> {
    /// Send every (notice, channel) of `work`, the channels side by side; each success's
    /// `notify.sent` goes to the recorder as it happens. Sent and failed messages are kept
    /// in `work`'s order.
    async fn send_all(
        &self,
        stores: &Stores,
        work: Vec<(Notice, Channel)>,
        actor: &Actor,
        bar: &indicatif::ProgressBar,
        out: &mut Outcome,
    ) {
        use futures::StreamExt;
        bar.set_length(work.len() as u64);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let recorder = tokio::spawn(record_sent(stores.clone(), actor.clone(), rx));
        let mut by_channel: BTreeMap<Channel, Vec<(usize, Notice)>> = BTreeMap::new();
        for (i, (n, c)) in work.into_iter().enumerate() {
            by_channel.entry(c).or_default().push((i, n));
        }
        let lanes = by_channel.into_iter().map(|(c, jobs)| {
            let limit = match self.transports.get(&c) {
                Some(Ok(t)) => t.concurrency().max(1),
                _ => 1,
            };
            futures::stream::iter(jobs)
                .map(move |(i, n)| async move { (i, self.send_one(n, c).await) })
                .buffer_unordered(limit)
                .boxed()
        });
        let mut done = Vec::new();
        let mut all = futures::stream::select_all(lanes);
        while let Some((i, result)) = all.next().await {
            bar.inc(1);
            if let Some(Ok(s)) = &result {
                let detail = serde_json::json!({
                    "id": s.notice.id, "channel": s.channel, "kind": s.notice.kind,
                    "store": s.notice.store, "key": s.notice.key, "key_id": s.notice.key_id,
                    "to": s.to,
                });
                // The recorder only stops once this loop drops `tx`.
                let _ = tx.send((s.notice.store.clone(), (EVENT_SENT.to_string(), detail)));
            }
            done.push((i, result));
        }
        drop(tx);
        match recorder.await {
            Ok(unrecorded) => out.unrecorded.extend(unrecorded),
            Err(e) => out
                .unrecorded
                .push(("?".into(), format!("the recorder stopped: {e}"))),
        }
        done.sort_by_key(|(i, _)| *i);
        for (_, result) in done {
            match result {
                Some(Ok(s)) => out.sent.push(s),
                Some(Err(f)) => out.failed.push(f),
                None => {}
            }
        }
    }

    /// One message on one channel (None: the channel has nothing to compose it with).
    async fn send_one(&self, n: Notice, c: Channel) -> Option<Result<Sent, Failure>> {
        let t = self.transports.get(&c)?;
        let target = t.as_ref().map_or_else(|u| u.target.clone(), |t| t.target());
        let fail = |notice: Notice, error: NotifyError| Failure {
            notice,
            channel: c,
            target: target.clone(),
            error,
        };
        if n.kind.recomputed()
            && let Some(why) = self.unreadable.get(&n.store)
        {
            return Some(Err(fail(n, NotifyError::Log(why.clone()))));
        }
        let t = match t {
            Ok(t) => t,
            Err(u) => return Some(Err(fail(n, NotifyError::Invalid(u.error.to_string())))),
        };
        let in_a_row = self.in_a_row.get(&c)?;
        let failures = in_a_row.load(Ordering::Relaxed);
        if failures >= MAX_FAILURES_IN_A_ROW {
            return Some(Err(fail(n, NotifyError::ChannelDown(failures))));
        }
        let (to, result) = deliver(self.spec, t.as_ref(), &n, c).await?;
        Some(match result {
            Ok(()) => {
                in_a_row.store(0, Ordering::Relaxed);
                Ok(Sent {
                    notice: n,
                    channel: c,
                    to,
                })
            }
            Err(e) => {
                in_a_row.fetch_add(1, Ordering::Relaxed);
                Err(fail(n, e))
            }
        })
    }
}

/// Writes the `notify.sent` events that arrive on `rx`, in batches of at most
/// [`RECORD_BATCH`], none waiting longer than [`RECORD_WITHIN`]; returns the stores whose
/// batches could not be written, with the error and how many events were lost.
async fn record_sent(
    stores: Stores,
    actor: Actor,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(String, (String, serde_json::Value))>,
) -> Vec<(String, String)> {
    let mut unrecorded = Vec::new();
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + RECORD_WITHIN;
        let mut batch = vec![first];
        while batch.len() < RECORD_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => batch.push(e),
                Ok(None) | Err(_) => break,
            }
        }
        unrecorded.extend(remember_all(&stores, batch, &actor).await);
    }
    unrecorded
}

/// What was sent already, over every store; a store whose events cannot be read is named
/// with its error (its reminders are skipped: they could be repeats; an apply's own notices
/// still go out).
async fn read_logs(stores: &Stores) -> (Log, BTreeMap<String, String>) {
    let mut log = Log::default();
    let mut unreadable = BTreeMap::new();
    for (name, s) in stores {
        if let Err(e) = read_log(s.as_ref(), &mut log).await {
            unreadable.insert(name.clone(), e.to_string());
        }
    }
    (log, unreadable)
}

/// Writes `notify.*` events, each to its store (when it is one of `stores`), one batch per
/// store; returns the stores a batch could not be written to, with the error.
async fn remember_all(
    stores: &Stores,
    events: Vec<(String, (String, serde_json::Value))>,
    actor: &Actor,
) -> Vec<(String, String)> {
    let mut by_store: BTreeMap<String, Vec<(String, serde_json::Value)>> = BTreeMap::new();
    for (store, e) in events {
        by_store.entry(store).or_default().push(e);
    }
    let mut failed = Vec::new();
    for (store, events) in by_store {
        if let Some(s) = stores.get(&store)
            && let Err(e) = s.record_batch(&events, actor).await
        {
            let n = events.len();
            failed.push((store, format!("{n} event(s): {e}")));
        }
    }
    failed
}

/// Composes `n` for channel `c` and sends it through `t`: the addressees and the result.
/// None when the channel has nothing to compose it with.
async fn deliver(
    spec: &Spec,
    t: &dyn Transport,
    n: &Notice,
    c: Channel,
) -> Option<(Vec<String>, Result<(), NotifyError>)> {
    let msg = compose_for(spec, n, c)?;
    let to = match &msg {
        Outgoing::Email(e) => e.to.clone(),
        Outgoing::Webhook(_) => Vec::new(),
    };
    let result = if compose::leaks_secret(&msg) {
        Err(NotifyError::WouldLeak)
    } else if c == Channel::Email && to.is_empty() {
        // Nobody to mail (the owner has no address and there are no fixed ones):
        // remembered as handled, so it is not retried every night.
        Ok(())
    } else {
        t.send(&msg).await
    };
    Some((to, result))
}

/// The lines a run prints on stderr (pure): what was sent, what failed and what to do,
/// what was given up.
pub fn report_lines(spec: &Spec, o: &Outcome) -> Vec<String> {
    let mut lines = Vec::new();
    let key = |n: &Notice| format!("{}/{} ({})", n.store, n.key, n.kind);
    for s in &o.sent {
        match (s.channel, s.to.is_empty()) {
            (Channel::Email, true) => lines.push(format!(
                "note: no email about {}: {} has no `email` in people.yaml and notify.email has no `to:` addresses",
                key(&s.notice),
                s.notice.owner
            )),
            (Channel::Email, false) => lines.push(format!(
                "notified {} by email ({})",
                key(&s.notice),
                s.to.join(", ")
            )),
            (Channel::Webhook, _) => {
                lines.push(format!("notified {} by webhook", key(&s.notice)))
            }
        }
    }
    let cfg_at = |c: Channel| {
        spec.notify
            .as_ref()
            .and_then(|n| match c {
                Channel::Email => n.email.as_ref().and_then(|e| e.location.clone()),
                Channel::Webhook => n.webhook.as_ref().and_then(|w| w.location.clone()),
            })
            .map(|l| format!("{}:{}", l.file.display(), l.line))
            .unwrap_or_else(|| crate::spec::CONFIG_FILE.to_string())
    };
    const SHOWN: usize = 20;
    for f in o.failed.iter().take(SHOWN) {
        let retry = if f.notice.kind.recomputed() {
            "the next `keyward expiring --notify` retries it".to_string()
        } else {
            format!(
                "the next `keyward apply` or `keyward expiring --notify` retries it (for {RETRY_FOR_DAYS} days)"
            )
        };
        lines.push(format!(
            "warning: {} notification about {} not sent via {}: {}\n  next: {}; {retry}.",
            f.channel,
            key(&f.notice),
            f.target,
            f.error,
            f.error.next_step(f.channel, &cfg_at(f.channel)),
        ));
    }
    if o.failed.len() > SHOWN {
        lines.push(format!(
            "warning: ... and {} more notification(s) not sent",
            o.failed.len() - SHOWN
        ));
    }
    for (n, c) in &o.dropped {
        lines.push(format!(
            "warning: gave up the {c} notification about {} from {}: not delivered within {RETRY_FOR_DAYS} days",
            key(n),
            n.at.format("%Y-%m-%d")
        ));
    }
    for (store, e) in &o.unrecorded {
        lines.push(format!(
            "warning: store {store}: notification events were not recorded ({e}); those messages may be sent again next run"
        ));
    }
    lines
}

/// The progress of a run's sends: a bar on stderr when it is a terminal and NO_COLOR is not
/// set; otherwise hidden (nothing is drawn, only the usual lines are printed).
fn progress_bar() -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let plain = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    if plain || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} notifications")
    {
        b.set_style(style);
    }
    b
}

/// Run the notifications of a CLI command and print what happened on stderr. Returns
/// whether every message went out.
pub async fn run_and_report(
    spec: &Spec,
    stores: &Stores,
    fresh: Vec<Notice>,
    actor: &Actor,
    now: DateTime<Utc>,
) -> bool {
    let bar = progress_bar();
    let o = run_with(spec, stores, fresh, actor, now, &bar).await;
    bar.finish_and_clear();
    for l in report_lines(spec, &o) {
        eprintln!("{l}");
    }
    if !o.sent.is_empty() || !o.failed.is_empty() {
        eprintln!(
            "Notifications: {} sent, {} not sent.",
            o.sent
                .iter()
                .filter(|s| s.channel == Channel::Webhook || !s.to.is_empty())
                .count(),
            o.failed.len()
        );
    }
    o.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::tests::{key, live_from, now, spec};
    use crate::spec::{Expiry, Span};

    fn all_kinds() -> BTreeSet<NoticeKind> {
        NoticeKind::ALL.into_iter().collect()
    }

    fn expiring_spec(days: i64) -> (Spec, BTreeMap<String, Vec<LiveKey>>) {
        let mut k = key("prod", "short", &["bibs:read"]);
        k.expiry = Expiry::Lifetime(Span::days(30));
        let s = spec(vec![k.clone()]);
        let issued = now() - chrono::Duration::days(30 - days);
        let obs = [("prod".to_string(), vec![live_from(&s, &k, "ID1", issued)])].into();
        (s, obs)
    }

    #[test]
    fn a_key_seven_days_out_owes_the_7d_reminder_once_per_expiry() {
        let (s, obs) = expiring_spec(7);
        let r = reminders(&s, &obs, now());
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].offset.as_deref(), Some("7d"));
        assert_eq!(r[0].days_left, Some(7));
        assert!(r[0].id.starts_with("reminder/prod/ID1/") && r[0].id.ends_with("/7d"));
        // An hour later it is the same reminder (same id): sent once.
        let later = reminders(&s, &obs, now() + chrono::Duration::hours(1));
        assert_eq!(later[0].id, r[0].id);
        // 40 days out: nothing owed; 10 days out: the 14d one.
        let (s, obs) = expiring_spec(40);
        assert!(reminders(&s, &obs, now()).is_empty());
        let (s, obs) = expiring_spec(10);
        assert_eq!(reminders(&s, &obs, now())[0].offset.as_deref(), Some("14d"));
    }

    #[test]
    fn work_skips_what_was_sent_and_retries_or_drops_pending_notices() {
        let (s, obs) = expiring_spec(7);
        let r = reminders(&s, &obs, now());
        let chans = [Channel::Email, Channel::Webhook];
        let w = plan_work(&r, &Log::default(), &chans, &all_kinds(), now());
        assert_eq!(w.send.len(), 2);
        // Email went out, the webhook did not: only the webhook is retried.
        let mut log = Log::default();
        log.sent.insert((r[0].id.clone(), Channel::Email));
        let w = plan_work(&r, &log, &chans, &all_kinds(), now());
        assert_eq!(
            w.send.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
            [Channel::Webhook]
        );
        // Reminders off: nothing.
        let on: BTreeSet<NoticeKind> = [NoticeKind::Created].into();
        assert!(
            plan_work(&r, &Log::default(), &chans, &on, now())
                .send
                .is_empty()
        );
        // A pending apply notice: retried within the window, dropped after it.
        let mut pending = r[0].clone();
        pending.kind = NoticeKind::Created;
        pending.id = "created/prod/ID1/1/0".into();
        let mut log = Log::default();
        log.pending.insert(pending.id.clone(), pending.clone());
        log.sent.insert((pending.id.clone(), Channel::Webhook));
        let w = plan_work(
            &[],
            &log,
            &chans,
            &all_kinds(),
            now() + chrono::Duration::days(2),
        );
        assert_eq!(w.send.len(), 1);
        assert_eq!(w.send[0].1, Channel::Email);
        let w = plan_work(
            &[],
            &log,
            &chans,
            &all_kinds(),
            now() + chrono::Duration::days(8),
        );
        assert!(w.send.is_empty());
        assert_eq!(w.drop.len(), 1);
        // A fresh notice that is also pending (recorded this run) is sent once per channel.
        let w = plan_work(
            std::slice::from_ref(&pending),
            &log,
            &chans,
            &all_kinds(),
            now(),
        );
        assert_eq!(w.send.len(), 1);
    }

    #[test]
    fn the_log_is_read_back_from_events() {
        let n = reminders(&expiring_spec(7).0, &expiring_spec(7).1, now()).remove(0);
        let ev = |seq: i64, action: &str, detail: serde_json::Value| Event {
            seq,
            at: now(),
            who: "ci".into(),
            action: action.into(),
            key_id: None,
            key_name: None,
            commit: None,
            detail,
        };
        let mut log = Log::default();
        for e in [
            ev(1, EVENT_PENDING, serde_json::json!({ "notice": n })),
            ev(
                2,
                EVENT_SENT,
                serde_json::json!({ "id": n.id, "channel": "email" }),
            ),
            ev(
                3,
                EVENT_DROPPED,
                serde_json::json!({ "id": "x", "channel": "webhook" }),
            ),
            ev(4, "apply.finished", serde_json::json!({})),
        ] {
            log.add(&e);
        }
        assert_eq!(log.pending.get(&n.id), Some(&n));
        assert!(log.done(&n.id, Channel::Email));
        assert!(!log.done(&n.id, Channel::Webhook));
        assert!(log.done("x", Channel::Webhook));
    }
}
