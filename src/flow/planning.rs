//! The middle of the flow, shared by plan and apply: observe the stores, check the policy
//! that needs live keys, diff, make the plan (marked, filtered, with the guards it
//! crosses) and print it. Must not change a store or the outbox.

use super::base::mark_base;
use super::load::Desired;
use super::options::{PlanFormat, PlanOptions};
use crate::deliver::Outbox;
use crate::diff;
use crate::observe;
use crate::plan::{Plan, render};
use crate::spec::Loaded;
use crate::store::{Capabilities, LiveKey, Store};
use crate::unused::{ALL_DAYS, Seen};
use anyhow::Result;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The opened stores, by name.
pub type Stores = BTreeMap<String, Arc<dyn Store>>;

/// What each store holds, by store name.
pub type Observed = BTreeMap<String, Vec<LiveKey>>;

fn environments(loaded: &Loaded) -> BTreeMap<String, String> {
    loaded
        .spec
        .stores
        .iter()
        .map(|(n, s)| (n.clone(), s.environment.clone()))
        .collect()
}

/// What each opened store can do, by store name.
pub fn capabilities_of(stores: &Stores) -> BTreeMap<String, Capabilities> {
    stores
        .iter()
        .map(|(n, s)| (n.clone(), s.capabilities()))
        .collect()
}

/// Diff the desired state against what the stores hold (and what the outbox delivered),
/// as a plan (unfiltered, unmarked), as the stores `caps` carry it out (a rotation where
/// the store keeps no previous secret has no grace).
pub fn plan_from(
    desired: &Desired,
    observed: &Observed,
    caps: &BTreeMap<String, Capabilities>,
    seen: &Seen,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Plan> {
    let outbox = Outbox::new(desired.loaded.spec.delivery.outbox.clone());
    let delivered = observe::delivered(&outbox)?;
    let result = diff::diff_seen(&desired.loaded.spec, observed, &delivered, seen, now);
    let mut plan = Plan::new(
        result,
        observed,
        &environments(&desired.loaded),
        desired.identity.clone(),
        desired.revision.clone(),
        now,
    );
    super::capabilities::honour_overlap(&mut plan, caps);
    Ok(plan)
}

/// Observe the stores: the keys each holds and, read once per store and only from stores
/// whose capabilities say they keep it, the usage of their keys (every day kept: a key's
/// last use may be older than any window). Both are read concurrently.
pub async fn observe_stores(stores: &Stores, spec: &crate::spec::Spec) -> Result<(Observed, Seen)> {
    let (observed, usage) = futures::future::try_join(
        observe::list_stores(stores),
        observe::usage_of(stores, ALL_DAYS),
    )
    .await?;
    Ok((observed, Seen::new(&usage).with_consoles(spec)))
}

/// The policy checks that need the live keys (keys per owner, counting keys made outside
/// keyward): `Err(policy::Refused)` (exit 3) when they fail.
pub fn live_policy(desired: &Desired, observed: &Observed) -> Result<()> {
    let found = crate::policy::check_live(&desired.loaded.spec, observed);
    if found.has_errors() {
        return Err(crate::policy::Refused::new(&found, &desired.loaded.sources).into());
    }
    Ok(())
}

/// Observe the stores and make the plan: marked with the change under review (`--base`),
/// filtered (`--only`), with the guards it crosses. `absent` stores (an embedded store
/// whose database does not exist yet) are observed as empty.
pub async fn make_plan(
    desired: &Desired,
    stores: &Stores,
    absent: &[String],
    opts: &PlanOptions,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Plan> {
    let (mut observed, seen) = observe_stores(stores, &desired.loaded.spec).await?;
    for name in absent {
        observed.entry(name.clone()).or_default();
    }
    live_policy(desired, &observed)?;
    let caps = capabilities_of(stores);
    let found = super::capabilities::diagnostics(&desired.loaded.spec, &caps);
    if found.has_errors() {
        return Err(crate::policy::Refused::new(&found, &desired.loaded.sources).into());
    }
    let mut plan = plan_from(desired, &observed, &caps, &seen, now)?;
    if let Some(base) = &opts.base {
        mark_base(&mut plan, desired, base)?;
    }
    // Store settings are not keys: `--only` and `--drift-only` leave them out.
    if opts.only.is_empty() && !opts.drift_only {
        plan.settings = super::settings::changes(desired, stores).await?;
    }
    plan.retain_only(&opts.only);
    if opts.drift_only {
        plan.retain_drift();
    }
    let said = super::capabilities::notes(&desired.loaded.spec, &plan, &caps);
    plan.notes.extend(said);
    plan.guards = crate::guard::check(&plan, &desired.loaded.spec.guards);
    plan.console_steps = crate::console::checklist::plan_steps(&desired.loaded.spec, &plan, now);
    Ok(plan)
}

/// Print the plan on stdout.
pub fn print_plan(plan: &Plan, format: PlanFormat, color: bool) {
    match format {
        PlanFormat::Text => print!("{}", render::text(plan, render::Style { color })),
        PlanFormat::Json => println!("{}", render::json(plan)),
        PlanFormat::Markdown => print!("{}", render::markdown(plan)),
    }
}
