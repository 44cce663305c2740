//! The steps of `keyward apply` around the change itself: the dirty-tree check, the store
//! locks, recovering interrupted deliveries, the guard and confirmation gates, running the
//! plan with progress, reporting what was done and committing the deliveries. Each step
//! prints what it did or why it refuses; must not decide what changes (the diff does) nor
//! how a key changes (`apply` does).

use super::load::Desired;
use super::options::{ApplyRunOptions, Step};
use super::planning::Stores;
use crate::apply::{self, ApplyOptions, ApplyReport, Context};
use crate::diff::Change;
use crate::outcome::Outcome;
use crate::plan::{Plan, RevisionSource, short};
use crate::spec;
use crate::store::{Actor, Lease};
use anyhow::{Result, anyhow};
use std::io::{IsTerminal, Write};
use std::path::Path;

/// Refuse uncommitted spec files or deliveries (unless allowed). Returns false to refuse.
/// With `--commit-deliveries`, uncommitted deliveries (left by an apply that died before
/// or while committing) are not a reason to refuse: this run commits them.
pub fn dirty_check(desired: &Desired, allow_dirty: bool, commit_deliveries: bool) -> Result<bool> {
    let Some(g) = &desired.git else {
        eprintln!(
            "note: {} is not in a git repository: applying the files as they are; no commit is recorded.",
            desired.loaded.spec.root.display()
        );
        return Ok(true);
    };
    let mut dirty = g.dirty_paths(Some(&desired.loaded.spec.delivery.outbox))?;
    if desired.revision.source == RevisionSource::GitRevision {
        // The spec comes from the revision; only uncommitted deliveries matter.
        dirty.retain(|p| !spec::is_spec_file(Path::new(p)));
    }
    if commit_deliveries {
        let before = dirty.len();
        dirty.retain(|p| spec::is_spec_file(Path::new(p)));
        if dirty.len() < before {
            eprintln!(
                "note: {} uncommitted delivery file(s) from an earlier apply will be committed with this one.",
                before - dirty.len()
            );
        }
    }
    if dirty.is_empty() {
        return Ok(true);
    }
    let shown: Vec<&str> = dirty.iter().take(20).map(String::as_str).collect();
    let more = dirty.len().saturating_sub(shown.len());
    if allow_dirty {
        eprintln!(
            "warning: --allow-dirty: applying with uncommitted changes to {}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
        return Ok(true);
    }
    eprintln!("error: refusing to apply: the working tree has uncommitted changes:");
    for p in &shown {
        eprintln!("  {p}");
    }
    if more > 0 {
        eprintln!("  ... and {more} more");
    }
    eprintln!("  hint: commit them (apply records the commit it applied), or pass --allow-dirty.");
    Ok(false)
}

/// The commit recorded in events and manifests: the revision's, `-dirty` when the
/// working tree's spec files differ from it.
pub fn recorded_commit(desired: &Desired) -> Option<String> {
    let c = desired.revision.commit.clone()?;
    Some(if desired.revision.dirty {
        format!("{c}-dirty")
    } else {
        c
    })
}

/// Take every store's apply lock for `ttl`; refused (exit 3) when another apply holds one.
pub async fn lock(
    stores: &Stores,
    actor: &Actor,
    ttl: chrono::Duration,
) -> Step<Vec<(String, Lease)>> {
    let holder = crate::holder::holder_string(&actor.who);
    let names: Vec<String> = stores.keys().cloned().collect();
    match apply::lock_stores(stores, &names, &holder, ttl).await {
        Ok(l) => Ok(Ok(l)),
        Err(e) if e.is_locked() => {
            eprintln!("error: {e}\n  hint: {}", locked_hint(&e));
            Ok(Err(Outcome::Refused))
        }
        Err(e) => Err(e.into()),
    }
}

/// What to do about a lock someone else holds: wait, or release it by hand, saying why
/// keyward did not release it itself when it cannot judge the holder.
fn locked_hint(e: &apply::ApplyError) -> String {
    let apply::ApplyError::Store {
        store,
        source: crate::store::StoreError::Locked { holder, id, .. },
    } = e
    else {
        return "another apply is running; wait for it.".into();
    };
    let why = match crate::holder::liveness(holder) {
        crate::holder::Liveness::Unknown(why) => format!(" (not released automatically: {why})"),
        _ => String::new(),
    };
    format!(
        "another apply is running{why}; wait for it, or if it died, run `keyward force-unlock --store {store} {id}`."
    )
}

/// Settle any delivery an interrupted apply left pending (before planning).
pub async fn recover(cx: &Context<'_>) -> Result<()> {
    for (d, activated) in &apply::recover(cx).await? {
        eprintln!(
            "recovered an interrupted delivery: {} ({})",
            d.display(),
            if *activated {
                "registered; marked active"
            } else {
                "never registered; voided"
            }
        );
    }
    Ok(())
}

/// An empty plan: nothing to change, but superseded deliveries may have outlived
/// `delivery.retain`, and deliveries an earlier apply left uncommitted are committed.
pub fn nothing_to_apply(
    cx: &Context<'_>,
    desired: &Desired,
    opts: &ApplyRunOptions,
    plan: &Plan,
) -> Outcome {
    report_skipped(plan);
    let retain = &cx.spec.delivery.retain;
    let pruned = match cx.outbox.prune(retain.to_chrono(), cx.clock.now()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("warning: pruning old deliveries failed: {e}");
            Vec::new()
        }
    };
    if !pruned.is_empty() {
        eprintln!(
            "Pruned {} envelope(s) of superseded generations older than {retain}.",
            pruned.len()
        );
    }
    // Also when nothing was pruned: an earlier apply that died before (or while)
    // committing left delivered envelopes uncommitted; they are committed now (a no-op
    // when the outbox is already committed).
    if opts.commit_deliveries {
        let report = ApplyReport {
            pruned,
            ..Default::default()
        };
        if let Err(e) = commit_deliveries(desired, opts.branch.as_deref(), &report) {
            eprintln!("error: committing the deliveries failed: {e:#}");
            return Outcome::Error;
        }
    }
    Outcome::Ok
}

/// The safety thresholds (keyward.yaml `guards:`): the plan crosses none, or `--force`
/// says to go on. Returns false to refuse.
pub fn guards_pass(plan: &Plan, force: bool) -> bool {
    if plan.guards.is_empty() {
        return true;
    }
    if force {
        eprintln!("warning: --force: applying although the plan crosses safety thresholds:");
    } else {
        eprintln!(
            "error: refusing to apply: the plan crosses safety thresholds (keyward.yaml `guards:`):"
        );
    }
    for g in &plan.guards {
        eprintln!("  {}", g.message);
    }
    if !force {
        eprintln!(
            "  nothing was changed.\n  hint: review the plan; if it is intended, run apply again with --force."
        );
    }
    force
}

/// Whether this apply asks for a `yes` (not with a saved plan or `--auto-approve`, which
/// were reviewed already).
pub fn asks_confirmation(opts: &ApplyRunOptions, saved_plan: bool) -> bool {
    !opts.auto_approve && !saved_plan
}

/// Say loudly which stores' leases were lost while this apply ran (it stopped changing
/// them: another apply may hold them now).
pub fn report_lost_leases(leases: &crate::lease::Leases) {
    for (store, why) in leases.all_lost() {
        eprintln!(
            "error: the apply lease on store `{store}` was lost ({why}): this apply stopped changing it; another apply may have changed it since.\n  hint: run `keyward plan` to see where the store stands, then `keyward apply` again."
        );
    }
}

/// Ask on a terminal (a saved plan and `--auto-approve` were reviewed already). Returns the
/// outcome that stops the apply, if any.
pub fn confirmation(opts: &ApplyRunOptions, saved_plan: bool) -> Result<Option<Outcome>> {
    if !asks_confirmation(opts, saved_plan) {
        return Ok(None);
    }
    if !std::io::stdin().is_terminal() {
        eprintln!(
            "error: refusing to apply without confirmation: stdin is not a terminal.\n  hint: review the plan above and pass --auto-approve (as CI does)."
        );
        return Ok(Some(Outcome::Error));
    }
    if !confirm()? {
        eprintln!("Apply cancelled; nothing was changed.");
        return Ok(Some(Outcome::Error));
    }
    Ok(None)
}

fn confirm() -> Result<bool> {
    eprint!(
        "\nDo you want to perform these actions?\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "
    );
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

fn progress_bar(len: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || len < 2 {
        return None;
    }
    let b = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        b.set_style(style);
    }
    Some(b)
}

/// Apply the plan's changes (generate, seal, deliver, register), with a progress bar on a
/// terminal.
pub async fn run_changes(
    cx: &Context<'_>,
    plan: &Plan,
    concurrency: usize,
    actor: Actor,
) -> ApplyReport {
    let bar = progress_bar(plan.actions.len() as u64);
    let opts = ApplyOptions {
        concurrency,
        actor,
        on_progress: bar.clone().map(|b| {
            Box::new(move |c: &Change, _ok: bool| {
                b.set_message(format!("{}/{}", c.store, c.name));
                b.inc(1);
            }) as Box<dyn Fn(&Change, bool) + Send + Sync>
        }),
    };
    let report = apply::apply(cx, plan, &opts).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    report
}

fn display_rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// Say what was done and what failed.
pub fn report_applied(root: &Path, plan: &Plan, report: &ApplyReport) {
    for d in &report.done {
        let delivered = d
            .delivery
            .as_ref()
            .map(|p| format!(" -> {}", display_rel(root, p)))
            .unwrap_or_default();
        eprintln!(
            "{} {}/{}: {} done{}",
            d.action.symbol(),
            d.store,
            d.name,
            d.action.as_str(),
            delivered
        );
    }
    for (s, n, e) in &report.failed {
        eprintln!("error: {s}/{n}: {e}");
    }
    eprintln!(
        "\nApply {}: {} change(s) applied, {} failed.",
        if report.ok() {
            "complete"
        } else {
            "incomplete"
        },
        report.done.len(),
        report.failed.len()
    );
    report_skipped(plan);
}

/// Say loudly what `--only` left out.
fn report_skipped(plan: &Plan) {
    if plan.skipped.is_empty() {
        return;
    }
    eprintln!(
        "\nwarning: --only {}: {} change(s) were SKIPPED and NOT applied:",
        plan.only.join(" --only "),
        plan.skipped.len()
    );
    for s in &plan.skipped {
        eprintln!("  {} {}/{} (skipped)", s.action.as_str(), s.store, s.name);
    }
}

/// Commit the delivery outbox to git (on `branch`, else the checked-out branch).
pub fn commit_deliveries(
    desired: &Desired,
    branch: Option<&str>,
    report: &ApplyReport,
) -> Result<()> {
    apply::failpoint::hit(apply::failpoint::COMMIT_BEFORE)?;
    let g = desired
        .git
        .as_ref()
        .ok_or_else(|| anyhow!("not a git repository"))?;
    let outbox = &desired.loaded.spec.delivery.outbox;
    let msg = commit_message(desired, report);
    // Only what keyward wrote: manifests and the envelopes they vouch for (this apply's
    // and any an earlier apply left uncommitted), never another file in the outbox.
    let files = crate::deliver::Outbox::new(outbox.clone()).delivery_files()?;
    // The console ledgers go with them: what the checklist recorded is the console's state
    // the team shares (unchanged ones change nothing in the commit).
    let ledgers = console_ledgers(&desired.loaded.spec);
    let committed = g.commit_files((outbox, &files), &ledgers, branch, &msg, &report.pruned)?;
    warn_left_uncommitted(g, outbox, &desired.loaded.spec.root);
    match committed {
        Some(id) => {
            let target = branch
                .map(str::to_string)
                .or_else(|| g.current_branch())
                .unwrap_or_else(|| "HEAD".into());
            eprintln!(
                "Committed the deliveries{} as {} on {target}; push it (git push origin {target}).",
                if ledgers.is_empty() {
                    ""
                } else {
                    " and the console ledgers"
                },
                short(&id)
            );
        }
        None => eprintln!("The deliveries were already committed; nothing to commit."),
    }
    Ok(())
}

/// The ledger files of the spec's console stores that exist on disk.
fn console_ledgers(spec: &crate::spec::Spec) -> Vec<std::path::PathBuf> {
    spec.stores
        .values()
        .filter_map(|s| match &s.kind {
            crate::spec::StoreKind::Console(c) if c.ledger.is_file() => Some(c.ledger.clone()),
            _ => None,
        })
        .collect()
}

/// Files in the outbox that are not deliveries stay uncommitted: say so, once, so they
/// are not mistaken for committed ones (nor left there by accident).
fn warn_left_uncommitted(g: &crate::git::GitRepo, outbox: &Path, root: &Path) {
    let Ok(dirty) = g.dirty_paths(Some(outbox)) else {
        return;
    };
    let left: Vec<String> = dirty
        .into_iter()
        .filter(|p| !spec::is_spec_file(Path::new(p)))
        .collect();
    if left.is_empty() {
        return;
    }
    eprintln!(
        "warning: {} file(s) in the outbox {} are not deliveries keyward wrote and were not committed: {}",
        left.len(),
        display_rel(root, outbox),
        left.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
    );
}

fn commit_message(desired: &Desired, report: &ApplyReport) -> String {
    let mut msg = format!(
        "keyward: deliveries{}\n\n",
        desired
            .revision
            .commit
            .as_deref()
            .map(|c| format!(" for {}", short(c)))
            .unwrap_or_default()
    );
    for d in &report.done {
        if d.delivery.is_some() {
            msg.push_str(&format!("{} {}/{}\n", d.action.as_str(), d.store, d.name));
        } else if crate::console::checklist::is_console(&desired.loaded.spec, &d.store) {
            msg.push_str(&format!(
                "{} {}/{} (console ledger)\n",
                d.action.as_str(),
                d.store,
                d.name
            ));
        }
    }
    if !report.pruned.is_empty() {
        msg.push_str(&format!(
            "pruned {} superseded generation(s)\n",
            report.pruned.len()
        ));
    }
    msg
}
