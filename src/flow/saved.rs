//! `keyward apply FILE`: the checks that a saved plan is still the one that was reviewed
//! (same repository, same spec, same live keys, same recomputed actions), each refusing
//! with what changed. Must not change a store or the outbox.

use super::load::Desired;
use super::options::{ApplyRunOptions, Step};
use super::planning::{Observed, live_policy, plan_from};
use crate::outcome::Outcome;
use crate::plan::{Plan, RevisionSource, saved};
use crate::store::Capabilities;
use crate::unused::Seen;
use anyhow::bail;
use std::collections::BTreeMap;

const REPLAN_HINT: &str =
    "  nothing was changed.\n  hint: run `keyward plan --out FILE` again and review the new plan.";

/// Read the saved plan `opts.plan_file` names (None when there is none).
pub fn read(opts: &ApplyRunOptions) -> Step<Option<Plan>> {
    let Some(f) = &opts.plan_file else {
        return Ok(Ok(None));
    };
    if opts.plan.rev.is_some() || opts.plan.base.is_some() || !opts.plan.only.is_empty() {
        bail!(
            "a saved plan fixes its revision and filter: drop --rev, --base and --only when applying {}",
            f.display()
        );
    }
    match saved::read(f) {
        Ok(p) => Ok(Ok(Some(p))),
        Err(e) => {
            eprintln!("error: {e}\n  nothing was changed.");
            Ok(Err(Outcome::Error))
        }
    }
}

/// The revision to load the desired state from: the saved plan's, or the one asked for.
pub fn revision_to_load(saved_plan: Option<&Plan>, opts: &ApplyRunOptions) -> Option<String> {
    match saved_plan {
        Some(p) if p.desired_revision.source == RevisionSource::GitRevision => {
            p.desired_revision.commit.clone()
        }
        Some(_) => None,
        None => opts.plan.rev.clone(),
    }
}

/// The saved plan was made in this repository from this spec; else the outcome that
/// refuses it.
pub fn check_spec(p: &Plan, desired: &Desired) -> Result<(), Outcome> {
    if let Some(why) = saved::other_repository(&p.repository, &desired.identity) {
        eprintln!(
            "error: refusing {}: {why}.\n  nothing was changed.",
            saved::describe(p)
        );
        return Err(Outcome::Error);
    }
    if let Some(lines) = saved::spec_changed(&p.desired_revision, &desired.revision) {
        eprintln!("error: the saved plan is stale: {}", lines.join("\n"));
        eprintln!(
            "{}",
            keys_that_moved(&p.desired_revision, desired).join("\n")
        );
        eprintln!("{REPLAN_HINT}");
        return Err(Outcome::Refused);
    }
    Ok(())
}

/// Which keys the spec change touches, read against the commit the plan was made from
/// (a plan made from committed files only: uncommitted content cannot be read back).
fn keys_that_moved(planned: &crate::plan::Revision, desired: &Desired) -> Vec<String> {
    let then = match (&planned.commit, planned.dirty, &desired.git) {
        (Some(commit), false, Some(git)) => git
            .spec_files_at(commit)
            .ok()
            .and_then(|files| crate::spec::load_from_files(&desired.loaded.spec.root, files).ok()),
        _ => None,
    };
    let Some(then) = then else {
        return vec![
            "  (the plan was made from uncommitted changes, so only the files can be named)".into(),
        ];
    };
    let moved = saved::key_changes(&then.spec.keys, &desired.loaded.spec.keys);
    if moved.is_empty() {
        return vec!["  no key definition changed: the change is in the files above".into()];
    }
    let mut out = vec![format!(
        "  keys that differ from the reviewed plan ({}):",
        moved.len()
    )];
    out.extend(moved.into_iter().map(|m| format!("    {m}")));
    out
}

/// Refuse the saved plan (exit 3): print `what` and the lines that differ, then the hint.
fn refuse(what: &str, lines: &[String]) -> Outcome {
    eprintln!("error: {what}:");
    for l in lines {
        eprintln!("  {l}");
    }
    eprintln!("{REPLAN_HINT}");
    Outcome::Refused
}

/// Recompute the saved plan from the same spec and the live state: refused (exit 3) when a
/// live key it was made from changed or its actions differ; else the plan to apply (with
/// the in-place patches rebuilt, the guards and the base it was made with).
pub fn replan(
    desired: &Desired,
    observed: &Observed,
    caps: &BTreeMap<String, Capabilities>,
    seen: &Seen,
    saved_plan: &Plan,
) -> Step<Plan> {
    live_policy(desired, observed)?;
    let stale = saved::live_changes(saved_plan, observed);
    if !stale.is_empty() {
        return Ok(Err(refuse("the saved plan is stale", &stale)));
    }
    // Recompute at the plan's time from the same spec and live state: it must be the plan
    // that was reviewed (this also rebuilds the in-place patches).
    let mut now_plan = plan_from(desired, observed, caps, seen, saved_plan.created_at)?;
    now_plan.retain_only(&saved_plan.only);
    let diffs = saved::action_changes(&saved_plan.actions, &now_plan.actions);
    if !diffs.is_empty() {
        return Ok(Err(refuse(
            "the saved plan does not match what the spec and the stores give now",
            &diffs,
        )));
    }
    now_plan.guards = crate::guard::check(&now_plan, &desired.loaded.spec.guards);
    now_plan.base = saved_plan.base.clone();
    eprintln!("Applying the saved {}.", saved::describe(saved_plan));
    Ok(Ok(now_plan))
}

/// The plan confirmed at the prompt, checked once the leases are held: the stores must
/// still hold the keys it was made from, at the versions it saw (no lease was held while
/// the prompt waited, so another apply or a console edit may have changed them). Refused
/// (exit 3) naming what changed; nothing is changed then.
pub fn confirmed_still_holds(plan: &Plan, observed: &Observed) -> Result<(), Outcome> {
    let stale = saved::live_changes(plan, observed);
    if stale.is_empty() {
        return Ok(());
    }
    eprintln!("error: the stores changed while the plan waited for confirmation:");
    for l in &stale {
        eprintln!("  {l}");
    }
    eprintln!("  nothing was changed.\n  hint: run `keyward apply` again and review the new plan.");
    Err(Outcome::Refused)
}
