//! The `plan` and `apply` commands end to end, as people and CI run them: read the desired
//! state (working tree or a git revision), observe, diff, mark the change under review,
//! render or save the plan; apply a fresh or a saved plan after its checks (dirty tree,
//! repository, stale spec or store, guards, lock) and commit the deliveries. CLI edge code
//! (anyhow, stdout/stderr, exit codes); must not decide what changes nor how keys change.

use crate::apply::{self, ApplyOptions, Context};
use crate::cli::{ApplyArgs, PlanArgs, PlanOutput, exit};
use crate::clock::{Clock, SystemClock};
use crate::deliver::Outbox;
use crate::diag::{self, Location};
use crate::diff::{self, Change};
use crate::git::GitRepo;
use crate::observe;
use crate::plan::{BaseInfo, Plan, RepoIdentity, Revision, RevisionSource, render, saved, short};
use crate::spec::{self, DesiredKey, Loaded};
use crate::store::{Actor, LiveKey, Store};
use anyhow::{Result, anyhow, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

type Stores = BTreeMap<String, Arc<dyn Store>>;

/// The desired state and where it came from.
pub struct Desired {
    pub loaded: Loaded,
    pub revision: Revision,
    pub git: Option<GitRepo>,
    pub identity: RepoIdentity,
}

/// Load the spec from the working tree, or from git revision `rev` without checking it
/// out. Diagnostics go to stderr; None when the spec has errors.
pub fn load_desired(dir: &Path, rev: Option<&str>, color: bool) -> Result<Option<Desired>> {
    let git = GitRepo::discover(dir)?;
    let identity = git
        .as_ref()
        .map(GitRepo::identity)
        .unwrap_or_else(|| RepoIdentity::directory(dir));
    let (loaded, revision) = match rev {
        Some(rev) => {
            let g = git.as_ref().ok_or_else(|| {
                anyhow!(
                    "--rev needs a git repository, and {} is not in one",
                    dir.display()
                )
            })?;
            let commit = g.resolve(rev)?;
            let files = g.spec_files_at(&commit)?;
            let sources: diag::Sources = files
                .iter()
                .map(|(p, b)| (p.clone(), String::from_utf8_lossy(b).into_owned()))
                .collect();
            let loaded = match spec::load_from_files(dir, files) {
                Ok(l) => l,
                Err(diags) => {
                    eprint!("{}", diag::render(&diags, &sources, color));
                    eprintln!(
                        "\n{} error(s) in the spec at {rev} ({}); nothing was changed.",
                        diags.error_count(),
                        short(&commit)
                    );
                    return Ok(None);
                }
            };
            if !loaded.warnings.is_empty() {
                eprint!("{}", diag::render(&loaded.warnings, &loaded.sources, color));
            }
            let mut r =
                Revision::of_files(RevisionSource::GitRevision, Some(commit), &loaded.sources);
            r.rev = Some(rev.to_string());
            (loaded, r)
        }
        None => {
            let Some(loaded) = crate::cli::load_or_report(dir, color)? else {
                return Ok(None);
            };
            let head = git.as_ref().and_then(GitRepo::head_commit);
            let mut r = Revision::of_files(RevisionSource::WorkingTree, head, &loaded.sources);
            if let Some(g) = &git {
                r.dirty = !g.dirty_paths(None)?.is_empty();
            }
            (loaded, r)
        }
    };
    Ok(Some(Desired {
        loaded,
        revision,
        git,
        identity,
    }))
}

fn environments(loaded: &Loaded) -> BTreeMap<String, String> {
    loaded
        .spec
        .stores
        .iter()
        .map(|(n, s)| (n.clone(), s.environment.clone()))
        .collect()
}

/// Diff the desired state against what the stores hold (and what the outbox delivered),
/// as a plan (unfiltered, unmarked).
fn plan_from(
    desired: &Desired,
    observed: &BTreeMap<String, Vec<LiveKey>>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Plan> {
    let outbox = Outbox::new(desired.loaded.spec.delivery.outbox.clone());
    let delivered = observe::delivered(&outbox)?;
    let result = diff::diff_with_deliveries(&desired.loaded.spec, observed, &delivered, now);
    Ok(Plan::new(
        result,
        observed,
        &environments(&desired.loaded),
        desired.identity.clone(),
        desired.revision.clone(),
        now,
    ))
}

/// The policy checks that need the live keys (keys per owner, counting keys made outside
/// keyward): `Err(policy::Refused)` (exit 3) when they fail.
fn live_policy(desired: &Desired, observed: &BTreeMap<String, Vec<LiveKey>>) -> Result<()> {
    let found = crate::policy::check_live(&desired.loaded.spec, observed);
    if found.has_errors() {
        return Err(crate::policy::Refused::new(&found, &desired.loaded.sources).into());
    }
    Ok(())
}

/// Observe the stores and make the plan: marked with the change under review (`--base`),
/// filtered (`--only`), with the guards it crosses.
async fn make_plan(
    desired: &Desired,
    stores: &Stores,
    args: &PlanArgs,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Plan> {
    let observed = observe::list_stores(stores).await?;
    live_policy(desired, &observed)?;
    let mut plan = plan_from(desired, &observed, now)?;
    if let Some(base) = &args.base {
        mark_base(&mut plan, desired, base)?;
    }
    plan.retain_only(&args.only);
    if args.drift_only {
        plan.retain_drift();
    }
    plan.guards = crate::guard::check(&plan, &desired.loaded.spec.guards);
    Ok(plan)
}

/// A key with where it is defined blanked, to compare what it says.
fn comparable(k: &DesiredKey) -> DesiredKey {
    let mut k = k.clone();
    k.location = Location::new("", 0, 0);
    k.field_locations.clear();
    k
}

/// `--base REV`: which keys the change (merge-base..revision) edits, who made the commits,
/// and per action whether it belongs to the change and who asked for it.
fn mark_base(plan: &mut Plan, desired: &Desired, base: &str) -> Result<()> {
    let g = desired.git.as_ref().ok_or_else(|| {
        anyhow!(
            "--base needs a git repository, and {} is not in one",
            desired.loaded.spec.root.display()
        )
    })?;
    let head = desired
        .revision
        .commit
        .clone()
        .ok_or_else(|| anyhow!("--base needs at least one commit in the repository"))?;
    let range = g.range(base, &head)?;
    let now_keys: BTreeMap<(String, String), &DesiredKey> = desired
        .loaded
        .spec
        .keys
        .iter()
        .map(|k| ((k.store.clone(), k.name.clone()), k))
        .collect();
    let base_files = g.spec_files_at(&range.merge_base)?;
    let base_spec = spec::load_from_files(&desired.loaded.spec.root, base_files).ok();
    // Where each key is defined (now, else at the base), for "who edited its file".
    let mut file_of: BTreeMap<(String, String), PathBuf> = now_keys
        .iter()
        .map(|(k, d)| (k.clone(), d.location.file.clone()))
        .collect();
    let mut touched: BTreeSet<(String, String)> = BTreeSet::new();
    match &base_spec {
        Some(b) => {
            let before: BTreeMap<(String, String), &DesiredKey> = b
                .spec
                .keys
                .iter()
                .map(|k| ((k.store.clone(), k.name.clone()), k))
                .collect();
            for (k, d) in &now_keys {
                if before.get(k).is_none_or(|o| comparable(o) != comparable(d)) {
                    touched.insert(k.clone());
                }
            }
            for (k, o) in &before {
                if !now_keys.contains_key(k) {
                    touched.insert(k.clone());
                    file_of
                        .entry(k.clone())
                        .or_insert_with(|| o.location.file.clone());
                }
            }
        }
        // The base has no valid spec: every key in an edited file belongs to the change.
        None => {
            for (k, f) in &file_of {
                if range.files.contains_key(f) {
                    touched.insert(k.clone());
                }
            }
        }
    }
    let other_files: Vec<String> = range
        .files
        .keys()
        .filter(|p| !p.starts_with(spec::KEYS_DIR))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let other_authors: BTreeSet<String> = range
        .files
        .iter()
        .filter(|(p, _)| !p.starts_with(spec::KEYS_DIR))
        .flat_map(|(_, a)| a.iter().cloned())
        .collect();
    for c in &mut plan.actions {
        let k = (c.store.clone(), c.name.clone());
        let is_touched = touched.contains(&k);
        c.touched = Some(is_touched);
        if is_touched {
            let mut who: BTreeSet<String> = file_of
                .get(&k)
                .and_then(|f| range.files.get(f))
                .cloned()
                .unwrap_or_default();
            if who.is_empty() {
                who = other_authors.clone();
            }
            c.requested_by = who.into_iter().collect();
        }
    }
    plan.base = Some(BaseInfo {
        rev: base.to_string(),
        commit: range.merge_base,
        commits: range.commits,
        requesters: range.requesters,
        touched_keys: touched.iter().map(|(s, n)| format!("{s}/{n}")).collect(),
        other_files,
    });
    Ok(())
}

fn print_plan(plan: &Plan, format: PlanOutput, color: bool) {
    match format {
        PlanOutput::Text => print!("{}", render::text(plan, render::Style { color })),
        PlanOutput::Json => println!("{}", render::json(plan)),
        PlanOutput::Markdown => print!("{}", render::markdown(plan)),
    }
}

/// `keyward plan`.
pub async fn plan_cmd(
    dir: &Path,
    args: &PlanArgs,
    color_out: bool,
    color_err: bool,
) -> Result<i32> {
    let Some(desired) = load_desired(dir, args.rev.as_deref(), color_err)? else {
        return Ok(exit::ERROR);
    };
    let now = SystemClock.now();
    if crate::cli::policy_refuses(&desired.loaded, now, color_err) {
        return Ok(exit::REFUSED);
    }
    let stores = observe::open_all(&desired.loaded.spec, None)?;
    let plan = make_plan(&desired, &stores, args, now).await?;
    if args.drift_only && plan.is_empty() && args.format == PlanOutput::Text {
        println!("No drift: the live stores hold what keyward left in them.");
        return Ok(exit::OK);
    }
    print_plan(&plan, args.format, color_out);
    if let Some(out) = &args.out {
        saved::write(out, &plan)?;
        eprintln!(
            "Saved the plan to {}. Apply exactly this plan with `keyward apply {}`.",
            out.display(),
            out.display()
        );
    }
    Ok(
        if (args.detailed_exitcode || args.drift_only) && !plan.is_empty() {
            exit::CHANGES
        } else {
            exit::OK
        },
    )
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

fn display_rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
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

/// Refuse uncommitted spec files or deliveries (unless allowed). Returns false to refuse.
/// With `--commit-deliveries`, uncommitted deliveries (left by an apply that died before
/// or while committing) are not a reason to refuse: this run commits them.
fn dirty_check(desired: &Desired, allow_dirty: bool, commit_deliveries: bool) -> Result<bool> {
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
fn recorded_commit(desired: &Desired) -> Option<String> {
    let c = desired.revision.commit.clone()?;
    Some(if desired.revision.dirty {
        format!("{c}-dirty")
    } else {
        c
    })
}

/// `keyward apply` (a fresh plan) and `keyward apply FILE` (a saved plan).
pub async fn apply_cmd(
    dir: &Path,
    args: &ApplyArgs,
    color_out: bool,
    color_err: bool,
) -> Result<i32> {
    let saved_plan = match &args.plan_file {
        None => None,
        Some(f) => {
            if args.plan.rev.is_some() || args.plan.base.is_some() || !args.plan.only.is_empty() {
                bail!(
                    "a saved plan fixes its revision and filter: drop --rev, --base and --only when applying {}",
                    f.display()
                );
            }
            match saved::read(f) {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("error: {e}\n  nothing was changed.");
                    return Ok(exit::ERROR);
                }
            }
        }
    };
    if args.plan.out.is_some() {
        bail!("--out belongs to `keyward plan`; apply a saved plan with `keyward apply FILE`");
    }
    // The desired state: the saved plan's revision, or the one asked for.
    let rev = match &saved_plan {
        Some(p) if p.desired_revision.source == RevisionSource::GitRevision => {
            p.desired_revision.commit.clone()
        }
        Some(_) => None,
        None => args.plan.rev.clone(),
    };
    let Some(desired) = load_desired(dir, rev.as_deref(), color_err)? else {
        return Ok(exit::ERROR);
    };
    if let Some(p) = &saved_plan {
        if let Some(why) = saved::other_repository(&p.repository, &desired.identity) {
            eprintln!(
                "error: refusing {}: {why}.\n  nothing was changed.",
                saved::describe(p)
            );
            return Ok(exit::ERROR);
        }
        if let Some(lines) = saved::spec_changed(&p.desired_revision, &desired.revision) {
            eprintln!("error: the saved plan is stale: {}", lines.join("\n"));
            eprintln!(
                "  nothing was changed.\n  hint: run `keyward plan --out FILE` again and review the new plan."
            );
            return Ok(exit::REFUSED);
        }
    }
    let clock = SystemClock;
    if crate::cli::policy_refuses(&desired.loaded, clock.now(), color_err) {
        return Ok(exit::REFUSED);
    }
    if !dirty_check(&desired, args.allow_dirty, args.commit_deliveries)? {
        return Ok(exit::REFUSED);
    }
    if args.commit_deliveries && desired.git.is_none() {
        bail!(
            "--commit-deliveries needs a git repository, and {} is not in one",
            dir.display()
        );
    }
    let stores = observe::open_all(&desired.loaded.spec, None)?;
    let mut actor = crate::cli::actor();
    actor.commit = recorded_commit(&desired);
    let holder = apply::holder_string(&actor.who);
    let names: Vec<String> = stores.keys().cloned().collect();
    let leases = match apply::lock_stores(&stores, &names, &holder).await {
        Ok(l) => l,
        Err(e) if e.is_locked() => {
            eprintln!(
                "error: {e}\n  hint: another apply is running; wait for it, or if it died, run `keyward force-unlock --store STORE LEASE_ID`."
            );
            return Ok(exit::REFUSED);
        }
        Err(e) => return Err(e.into()),
    };
    let notify_actor = actor.clone();
    let mut notices: Option<Vec<crate::notify::Notice>> = None;
    let result = apply_locked(
        &desired,
        &stores,
        args,
        saved_plan.as_ref(),
        color_out,
        actor,
        &clock,
        &mut notices,
    )
    .await;
    apply::unlock_stores(&stores, &leases).await;
    // Notifications go out after the locks are released, and whatever happens to them,
    // the apply's exit code stays what the apply earned (failures are retried next run).
    if let (Some(fresh), Some(_)) = (notices, &desired.loaded.spec.notify) {
        crate::notify::run_and_report(
            &desired.loaded.spec,
            &stores,
            fresh,
            &notify_actor,
            clock.now(),
        )
        .await;
    }
    result
}

// One more than clippy's limit: `notices` is an out-parameter, so that the many early
// returns of an apply keep returning just their exit code.
#[allow(clippy::too_many_arguments)]
async fn apply_locked(
    desired: &Desired,
    stores: &Stores,
    args: &ApplyArgs,
    saved_plan: Option<&Plan>,
    color: bool,
    actor: Actor,
    clock: &dyn Clock,
    notices: &mut Option<Vec<crate::notify::Notice>>,
) -> Result<i32> {
    let loaded = &desired.loaded;
    let outbox = Outbox::new(loaded.spec.delivery.outbox.clone());
    let cx = Context {
        spec: &loaded.spec,
        stores,
        outbox,
        clock,
    };
    // Settle any delivery an interrupted apply left pending before planning.
    let recovered = apply::recover(&cx).await?;
    for (d, activated) in &recovered {
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
    let plan = match saved_plan {
        None => make_plan(desired, stores, &args.plan, clock.now()).await?,
        Some(saved_plan) => {
            let observed = observe::list_stores(stores).await?;
            live_policy(desired, &observed)?;
            let stale = saved::live_changes(saved_plan, &observed);
            if !stale.is_empty() {
                eprintln!("error: the saved plan is stale:");
                for l in &stale {
                    eprintln!("  {l}");
                }
                eprintln!(
                    "  nothing was changed.\n  hint: run `keyward plan --out FILE` again and review the new plan."
                );
                return Ok(exit::REFUSED);
            }
            // Recompute at the plan's time from the same spec and live state: it must be
            // the plan that was reviewed (this also rebuilds the in-place patches).
            let mut now_plan = plan_from(desired, &observed, saved_plan.created_at)?;
            now_plan.retain_only(&saved_plan.only);
            let diffs = saved::action_changes(&saved_plan.actions, &now_plan.actions);
            if !diffs.is_empty() {
                eprintln!(
                    "error: the saved plan does not match what the spec and the stores give now:"
                );
                for l in &diffs {
                    eprintln!("  {l}");
                }
                eprintln!(
                    "  nothing was changed.\n  hint: run `keyward plan --out FILE` again and review the new plan."
                );
                return Ok(exit::REFUSED);
            }
            now_plan.guards = crate::guard::check(&now_plan, &loaded.spec.guards);
            now_plan.base = saved_plan.base.clone();
            eprintln!("Applying the saved {}.", saved::describe(saved_plan));
            now_plan
        }
    };
    print_plan(&plan, args.plan.format, color);
    if plan.is_empty() {
        // Nothing new to tell, but notices earlier runs could not send are retried.
        *notices = Some(Vec::new());
        report_skipped(&plan);
        // Nothing to change, but superseded deliveries may have outlived `delivery.retain`.
        let pruned = match cx
            .outbox
            .prune(loaded.spec.delivery.retain.to_chrono(), clock.now())
        {
            Ok(p) => p,
            Err(e) => {
                eprintln!("warning: pruning old deliveries failed: {e}");
                Vec::new()
            }
        };
        if !pruned.is_empty() {
            eprintln!(
                "Pruned {} envelope(s) of superseded generations older than {}.",
                pruned.len(),
                loaded.spec.delivery.retain
            );
        }
        // Also when nothing was pruned: an earlier apply that died before (or while)
        // committing left delivered envelopes uncommitted; they are committed now (a no-op
        // when the outbox is already committed).
        if args.commit_deliveries {
            let report = apply::ApplyReport {
                pruned,
                ..Default::default()
            };
            if let Err(e) = commit_deliveries(desired, args.branch.as_deref(), &report) {
                eprintln!("error: committing the deliveries failed: {e:#}");
                return Ok(exit::ERROR);
            }
        }
        return Ok(exit::OK);
    }
    if !plan.guards.is_empty() {
        if args.force {
            eprintln!("warning: --force: applying although the plan crosses safety thresholds:");
            for g in &plan.guards {
                eprintln!("  {}", g.message);
            }
        } else {
            eprintln!(
                "error: refusing to apply: the plan crosses safety thresholds (keyward.yaml `guards:`):"
            );
            for g in &plan.guards {
                eprintln!("  {}", g.message);
            }
            eprintln!(
                "  nothing was changed.\n  hint: review the plan; if it is intended, run apply again with --force."
            );
            return Ok(exit::REFUSED);
        }
    }
    if !args.auto_approve && saved_plan.is_none() {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "error: refusing to apply without confirmation: stdin is not a terminal.\n  hint: review the plan above and pass --auto-approve (as CI does)."
            );
            return Ok(exit::ERROR);
        }
        if !confirm()? {
            eprintln!("Apply cancelled; nothing was changed.");
            return Ok(exit::ERROR);
        }
    }
    let bar = progress_bar(plan.actions.len() as u64);
    let commit = actor.commit.clone();
    let opts = ApplyOptions {
        concurrency: args.concurrency,
        actor,
        on_progress: bar.clone().map(|b| {
            Box::new(move |c: &Change, _ok: bool| {
                b.set_message(format!("{}/{}", c.store, c.name));
                b.inc(1);
            }) as Box<dyn Fn(&Change, bool) + Send + Sync>
        }),
    };
    let report = apply::apply(&cx, &plan, &opts).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    for d in &report.done {
        let delivered = d
            .delivery
            .as_ref()
            .map(|p| format!(" -> {}", display_rel(&loaded.spec.root, p)))
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
    report_skipped(&plan);
    // Delivered secrets are valid: their envelopes are committed even after a failure.
    let mut code = if report.ok() { exit::OK } else { exit::ERROR };
    if args.commit_deliveries
        && let Err(e) = commit_deliveries(desired, args.branch.as_deref(), &report)
    {
        eprintln!("error: committing the deliveries failed: {e:#}");
        code = exit::ERROR;
    }
    if !report.ok() {
        eprintln!("  hint: fix the cause and run `keyward apply` again; it resumes safely.");
    }
    *notices = Some(crate::notify::after_apply(
        &loaded.spec,
        &plan.actions,
        &report,
        commit.as_deref(),
        clock.now(),
    ));
    Ok(code)
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

fn commit_deliveries(
    desired: &Desired,
    branch: Option<&str>,
    report: &apply::ApplyReport,
) -> Result<()> {
    apply::failpoint::hit(apply::failpoint::COMMIT_BEFORE)?;
    let g = desired
        .git
        .as_ref()
        .ok_or_else(|| anyhow!("not a git repository"))?;
    let outbox = &desired.loaded.spec.delivery.outbox;
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
        }
    }
    if !report.pruned.is_empty() {
        msg.push_str(&format!(
            "pruned {} superseded generation(s)\n",
            report.pruned.len()
        ));
    }
    match g.commit_dir(outbox, branch, &msg, &report.pruned)? {
        Some(id) => {
            let target = branch
                .map(str::to_string)
                .or_else(|| g.current_branch())
                .unwrap_or_else(|| "HEAD".into());
            eprintln!(
                "Committed the deliveries as {} on {target}; push it (git push origin {target}).",
                short(&id)
            );
        }
        None => eprintln!("The deliveries were already committed; nothing to commit."),
    }
    Ok(())
}
