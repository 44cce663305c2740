//! `apply` on a console store: each planned change becomes a guided step. The admin does it
//! in the console; a made or regenerated key's value is pasted (hidden), shape-checked,
//! sealed to its recipients and delivered durably before the ledger records it; revoke,
//! disable and delete are confirmed. A step begun in the console and not finished stays
//! pending in the ledger, and the next apply resumes it. Must not decide changes (the diff
//! does) nor print a value: only the operator sees the prompts.

use super::input::{Operator, Pasted, Question, Reply};
use super::ledger::PendingStep;
use super::preset::StepKind;
use super::shape;
use super::steps::{self, StepFacts};
use super::store::{ConsoleStore, fingerprint_of};
use crate::apply::{self, ApplyError, Context, Done};
use crate::diff::{Action, Change};
use crate::plan::{ConsoleStep, Plan};
use crate::secret::{self, Secret};
use crate::spec::{Spec, StoreKind};
use crate::store::{Actor, KeyStatus, Store, StoreError};
use chrono::SubsecRound;
use std::collections::BTreeMap;

/// Whether store `name` is a console store.
pub fn is_console(spec: &Spec, name: &str) -> bool {
    spec.stores
        .get(name)
        .is_some_and(|s| matches!(s.kind, StoreKind::Console(_)))
}

/// Whether change `c` touches a console store (its store, or the old store of a replace).
pub fn is_console_change(spec: &Spec, c: &Change) -> bool {
    is_console(spec, &c.store)
        || (c.action == Action::Replace && is_console(spec, &apply::old_store_of(c)))
}

/// The plan without its console changes, and the console changes in plan order.
pub fn split(plan: &Plan, spec: &Spec) -> (Plan, Vec<Change>) {
    let mut rest = plan.clone();
    let (console, others): (Vec<Change>, Vec<Change>) = plan
        .actions
        .iter()
        .cloned()
        .partition(|c| is_console_change(spec, c));
    rest.actions = others;
    rest.summary = crate::plan::Summary::of(&rest.actions);
    (rest, console)
}

/// The console steps of `plan`, in plan order, as the checklist will show them (for the
/// plan's text, Markdown and JSON: a pull request and the nightly report list them).
/// Steps of a store whose ledger cannot be read are left out (plan reports the ledger).
pub fn plan_steps(
    spec: &Spec,
    plan: &Plan,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<ConsoleStep> {
    let mut out = Vec::new();
    for c in plan.actions.iter().filter(|c| is_console_change(spec, c)) {
        let Some(mut kind) = steps::kind_of(c) else {
            continue;
        };
        let mut store = c.store.clone();
        let console_here = is_console(spec, &c.store);
        if !console_here {
            store = apply::old_store_of(c);
            kind = StepKind::Revoke;
        }
        let Some(cfg) = spec.stores.get(&store) else {
            continue;
        };
        let StoreKind::Console(console) = &cfg.kind else {
            continue;
        };
        let Ok(cs) = ConsoleStore::open(cfg, console) else {
            continue;
        };
        let facts = StepFacts::of(c, spec.key(&c.store, &c.name), now);
        let facts = StepFacts {
            environment: cs.environment(),
            ..facts
        };
        let mut lines = steps::render(cs.preset(), cs.config(), kind, &facts);
        let old = apply::old_store_of(c);
        if c.action == Action::Replace && console_here && is_console(spec, &old) {
            lines.push(format!(
                "Then remove the old key `{}` from `{old}` (apply asks you to confirm).",
                c.name
            ));
        }
        let begun = cs
            .read()
            .ok()
            .and_then(|l| l.pending_for(&c.name).map(|p| p.made))
            .unwrap_or(false);
        out.push(ConsoleStep {
            store,
            key: c.name.clone(),
            action: c.action,
            steps: lines,
            begun,
        });
    }
    out
}

/// What the checklist did.
#[derive(Debug, Default)]
pub struct ChecklistReport {
    pub done: Vec<Done>,
    pub failed: Vec<(String, String, ApplyError)>,
    /// Steps left pending (skipped, not reached, or unanswered), by store.
    pub pending: BTreeMap<String, usize>,
    /// The admin stopped the checklist.
    pub stopped: bool,
}

impl ChecklistReport {
    pub fn pending_total(&self) -> usize {
        self.pending.values().sum()
    }
}

/// How one step ended.
enum End {
    Done(Done),
    Pending,
    Stop,
}

/// Run the console changes `changes` with `op` answering.
pub async fn run(
    cx: &Context<'_>,
    changes: &[Change],
    op: &mut dyn Operator,
    actor: &Actor,
) -> ChecklistReport {
    let mut report = ChecklistReport::default();
    let total = changes.len();
    for (i, c) in changes.iter().enumerate() {
        if report.stopped {
            *report.pending.entry(c.store.clone()).or_default() += 1;
            continue;
        }
        op.say(&format!(
            "\n[{}/{total}] {} {}/{}\n",
            i + 1,
            c.action.as_str(),
            c.store,
            c.name
        ));
        match step(cx, c, op, actor).await {
            Ok(End::Done(d)) => report.done.push(d),
            Ok(End::Pending) => *report.pending.entry(c.store.clone()).or_default() += 1,
            Ok(End::Stop) => {
                report.stopped = true;
                *report.pending.entry(c.store.clone()).or_default() += 1;
            }
            Err(e) => report.failed.push((c.store.clone(), c.name.clone(), e)),
        }
    }
    report
}

fn console_store(cx: &Context<'_>, name: &str) -> Result<ConsoleStore, ApplyError> {
    let cfg = cx
        .spec
        .stores
        .get(name)
        .ok_or_else(|| ApplyError::UnknownStore(name.into()))?;
    let StoreKind::Console(console) = &cfg.kind else {
        return Err(ApplyError::UnknownStore(name.into()));
    };
    ConsoleStore::open(cfg, console).map_err(|e| ApplyError::Invalid {
        key: name.to_string(),
        message: e.to_string(),
    })
}

fn dyn_store<'a>(cx: &'a Context<'_>, name: &str) -> Result<&'a dyn Store, ApplyError> {
    cx.stores
        .get(name)
        .map(|s| s.as_ref())
        .ok_or_else(|| ApplyError::UnknownStore(name.to_string()))
}

fn invalid(c: &Change, e: impl std::fmt::Display) -> ApplyError {
    ApplyError::Invalid {
        key: format!("{}/{}", c.store, c.name),
        message: e.to_string(),
    }
}

async fn step(
    cx: &Context<'_>,
    c: &Change,
    op: &mut dyn Operator,
    actor: &Actor,
) -> Result<End, ApplyError> {
    let console_here = matches!(
        cx.spec.stores.get(&c.store).map(|s| &s.kind),
        Some(StoreKind::Console(_))
    );
    let Some(kind) = steps::kind_of(c) else {
        // Only keyward's own metadata changes: nothing to do in the console.
        return apply::apply_one(cx, c, actor).await.map(End::Done);
    };
    if !console_here {
        // A key moving out of a console into a store keyward runs: the new key is made and
        // delivered there first; only then does the admin remove the old one in the console.
        let store = dyn_store(cx, &c.store)?;
        let (key_id, dir) = apply::create_key(cx, store, c, actor).await?;
        let old = apply::old_store_of(c);
        return match confirm_then(cx, c, op, actor, &old, StepKind::Revoke).await? {
            End::Done(d) => Ok(End::Done(Done {
                key_id: Some(key_id),
                delivery: Some(dir),
                ..d
            })),
            other => Ok(other),
        };
    }
    let cs = console_store(cx, &c.store)?;
    match kind {
        StepKind::Create => {
            let end = made(cx, &cs, c, op, actor, StepKind::Create).await?;
            if c.action != Action::Replace {
                return Ok(end);
            }
            let End::Done(done) = end else { return Ok(end) };
            // The new key is delivered and recorded; now the old one goes.
            match confirm_then(cx, c, op, actor, &apply::old_store_of(c), StepKind::Revoke).await? {
                End::Done(_) => Ok(End::Done(done)),
                other => Ok(other),
            }
        }
        StepKind::Rotate => made(cx, &cs, c, op, actor, StepKind::Rotate).await,
        other => confirm_then(cx, c, op, actor, &c.store, other).await,
    }
}

/// Show the steps of `kind` for the key in `store`, ask whether they were done, then record.
async fn confirm_then(
    cx: &Context<'_>,
    c: &Change,
    op: &mut dyn Operator,
    actor: &Actor,
    store: &str,
    kind: StepKind,
) -> Result<End, ApplyError> {
    let console = matches!(
        cx.spec.stores.get(store).map(|s| &s.kind),
        Some(StoreKind::Console(_))
    );
    if console {
        let cs = console_store(cx, store)?;
        let facts = StepFacts::of(c, cx.spec.key(&c.store, &c.name), cx.clock.now());
        let facts = StepFacts {
            environment: cs.environment(),
            ..facts
        };
        op.say(&numbered(&steps::render(
            cs.preset(),
            cs.config(),
            kind,
            &facts,
        )));
        let key = format!("{store}/{}", c.name);
        let q = Question {
            key: &key,
            name: &c.name,
            text: "  Done in the console?",
            resumed: false,
            choices: None,
        };
        match op.ask(&q).map_err(|e| invalid(c, e))? {
            Reply::Done => {}
            Reply::Skip | Reply::NotMade => return Ok(End::Pending),
            Reply::Stop => return Ok(End::Stop),
        }
    }
    if c.action == Action::Replace {
        // The old key of a replace (the new one is already delivered), in this store or
        // the one the key moves from: only it is removed.
        let old = dyn_store(cx, store)?;
        let version = c
            .version
            .ok_or_else(|| invalid(c, "the plan lacks the live version"))?;
        let id = c.key_id.clone().unwrap_or_default();
        apply::revoke_recorded(old, store, &id, version, cx.by(store, actor)).await?;
        return Ok(End::Done(Done {
            store: c.store.clone(),
            name: c.name.clone(),
            action: c.action,
            key_id: c.key_id.clone(),
            delivery: None,
        }));
    }
    apply::apply_one(cx, c, actor).await.map(End::Done)
}

fn numbered(lines: &[String]) -> String {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| format!("  {}. {l}\n", i + 1))
        .collect()
}

/// A key made (create) or regenerated (rotate) in the console: steps, "done?", then the
/// pasted value; sealed and delivered before the ledger records it.
async fn made(
    cx: &Context<'_>,
    cs: &ConsoleStore,
    c: &Change,
    op: &mut dyn Operator,
    actor: &Actor,
    kind: StepKind,
) -> Result<End, ApplyError> {
    let key = format!("{}/{}", c.store, c.name);
    let ledger = cs.read().map_err(|e| invalid(c, e))?;
    let resumed = ledger
        .pending_for(&c.name)
        .filter(|p| p.step == kind.as_str() && p.made)
        .cloned();
    let (id, generation) = match (&resumed, kind) {
        (Some(p), _) => (p.id.clone(), p.generation),
        (None, StepKind::Rotate) => (
            c.key_id.clone().unwrap_or_default(),
            c.new_generation.unwrap_or(2),
        ),
        (None, _) => (secret::new_key_id(), c.new_generation.unwrap_or(1)),
    };
    let mut fresh = resumed.is_none();
    if let Some(p) = &resumed {
        op.say(&format!(
            "  This step was begun on {} by {}: the key was made in the console, but its value was never pasted here.\n",
            p.at.format("%Y-%m-%d %H:%M UTC"),
            p.by
        ));
        let q = Question {
            key: &key,
            name: &c.name,
            text: &format!("  Was `{}` made in the console?", c.name),
            resumed: true,
            choices: None,
        };
        match op.ask(&q).map_err(|e| invalid(c, e))? {
            Reply::Done => {}
            Reply::NotMade => {
                cs.abandon(&c.name).map_err(apply::store_err(&c.store))?;
                fresh = true;
            }
            Reply::Skip => return Ok(End::Pending),
            Reply::Stop => return Ok(End::Stop),
        }
    }
    if fresh {
        let facts = StepFacts::of(c, cx.spec.key(&c.store, &c.name), cx.clock.now());
        op.say(&numbered(&steps::render(
            cs.preset(),
            cs.config(),
            kind,
            &facts,
        )));
        let q = Question {
            key: &key,
            name: &c.name,
            text: "  Done in the console?",
            resumed: false,
            choices: None,
        };
        match op.ask(&q).map_err(|e| invalid(c, e))? {
            Reply::Done => {}
            Reply::Skip | Reply::NotMade => return Ok(End::Pending),
            Reply::Stop => return Ok(End::Stop),
        }
        let begun = PendingStep {
            key: c.name.clone(),
            id: id.clone(),
            step: kind.as_str().to_string(),
            generation,
            made: true,
            client_id: None,
            by: actor.who.clone(),
            at: cx.clock.now().trunc_subsecs(0),
        };
        cs.begin(begun).map_err(apply::store_err(&c.store))?;
    }
    let secret = match read_value(cs, c, op, &ledger, &key)? {
        Ok(s) => s,
        Err(end) => return Ok(end),
    };
    // The client id the console shows with the secret (ALM) is typed at a create and kept
    // through a regenerate; it is sealed beside the secret.
    let mut client_id = ledger.key(&id).and_then(|k| k.client_id.clone());
    if cs.preset().client_id && kind == StepKind::Create {
        let q = Question {
            key: &key,
            name: &c.name,
            text: "  Client ID",
            resumed: false,
            choices: None,
        };
        let Some(cid) = read_client_id(op, &q, c)? else {
            return Ok(End::Pending);
        };
        cs.set_pending_client_id(&c.name, &cid)
            .map_err(apply::store_err(&c.store))?;
        client_id = Some(cid);
    }
    record(cx, c, actor, (id, secret, client_id), kind)
        .await
        .map(End::Done)
}

/// Read the value the console showed until it has the vendor's shape (or the operator
/// skips or stops: `Err(End)`). Never shows it.
fn read_value(
    cs: &ConsoleStore,
    c: &Change,
    op: &mut dyn Operator,
    ledger: &super::LedgerFile,
    key: &str,
) -> Result<Result<Secret, End>, ApplyError> {
    match read_pasted(cs, &c.name, key, op, ledger, &[]).map_err(|e| invalid(c, e))? {
        Read::Value(s) => Ok(Ok(s)),
        Read::Skip => Ok(Err(End::Pending)),
        Read::Stop => Ok(Err(End::Stop)),
    }
}

/// A value read from the operator, or why there is none.
pub(super) enum Read {
    Value(Secret),
    Skip,
    Stop,
}

/// Ask for the value of `name` until it has the vendor's shape and is neither in the ledger
/// nor one of `taken` (fingerprint and key name of values pasted earlier in the same run).
/// Never shows it.
pub(super) fn read_pasted(
    cs: &ConsoleStore,
    name: &str,
    key: &str,
    op: &mut dyn Operator,
    ledger: &super::LedgerFile,
    taken: &[(String, String)],
) -> std::io::Result<Read> {
    let pattern = shape::store_pattern(cs.config().secret_pattern.as_deref());
    let q = Question {
        key,
        name,
        text: &format!("  Paste the value the console showed for `{name}`"),
        resumed: false,
        choices: None,
    };
    loop {
        let value = match op.paste(&q)? {
            Pasted::Value(v) => v,
            Pasted::Skip => return Ok(Read::Skip),
            Pasted::Stop => return Ok(Read::Stop),
        };
        let checked = shape::check(cs.preset(), pattern.as_ref(), &value)
            .and_then(|v| not_recorded(ledger, v).map(|_| v))
            .and_then(|v| {
                let fp = fingerprint_of(&secret::hash_presented(v));
                match taken.iter().find(|(f, _)| *f == fp) {
                    Some((_, other)) => Err(shape::ShapeError::AlreadyRecorded(other.clone())),
                    None => Ok(v),
                }
            });
        match checked {
            Ok(v) => return Ok(Read::Value(Secret::from_string(v.to_string()))),
            Err(why) => {
                if !op.refused(&q, &why) {
                    return Ok(Read::Skip);
                }
            }
        }
    }
}

/// A value already in the ledger (the old value, or another key's) is a paste mistake.
fn not_recorded(ledger: &super::LedgerFile, v: &str) -> Result<(), shape::ShapeError> {
    let fp = fingerprint_of(&secret::hash_presented(v));
    match ledger
        .keys
        .iter()
        .find(|k| k.fingerprint.as_deref() == Some(fp.as_str()))
    {
        Some(k) => Err(shape::ShapeError::AlreadyRecorded(k.name.clone())),
        None => Ok(()),
    }
}

fn read_client_id(
    op: &mut dyn Operator,
    q: &Question,
    c: &Change,
) -> Result<Option<String>, ApplyError> {
    for _ in 0..3 {
        match op.client_id(q).map_err(|e| invalid(c, e))? {
            None => return Ok(None),
            Some(id) => {
                let id = id.trim().to_string();
                if !id.is_empty() && id.len() <= 200 && id.chars().all(|ch| ch.is_ascii_graphic()) {
                    return Ok(Some(id));
                }
                if !op.refused(q, &shape::ShapeError::Whitespace) {
                    return Ok(None);
                }
            }
        }
    }
    Ok(None)
}

/// Seal, deliver durably, then record in the ledger (apply's create/rotate paths with a
/// pasted secret). A console regenerates at once: no overlap with the old value.
async fn record(
    cx: &Context<'_>,
    c: &Change,
    actor: &Actor,
    (id, secret, client_id): (String, Secret, Option<String>),
    kind: StepKind,
) -> Result<Done, ApplyError> {
    let store = dyn_store(cx, &c.store)?;
    let serr = apply::store_err(&c.store);
    let mut done = Done {
        store: c.store.clone(),
        name: c.name.clone(),
        action: c.action,
        key_id: Some(id.clone()),
        delivery: None,
    };
    if kind == StepKind::Create {
        let (_, dir) = apply::create_key_with(cx, store, c, actor, (id, secret), client_id).await?;
        done.delivery = Some(dir);
        return Ok(done);
    }
    let mut version = c
        .version
        .ok_or_else(|| invalid(c, "the plan lacks the live version"))?;
    if !c.patch.is_empty() {
        version = store
            .update(cx.by(&c.store, actor).key(&id, version), c.patch.clone())
            .await
            .map_err(&serr)?
            .version;
    }
    if c.set_status == Some(KeyStatus::Active) {
        version = store
            .set_status(cx.by(&c.store, actor).key(&id, version), KeyStatus::Active)
            .await
            .map_err(&serr)?
            .version;
    }
    let rotated = apply::rotate_key_with(cx, store, c, (version, actor), secret, None, client_id);
    let (dir, live) = rotated.await?;
    done.delivery = Some(dir);
    apply::record_state(store, live, cx.by(&c.store, actor))
        .await
        .map_err(|e: StoreError| serr(e))?;
    Ok(done)
}
