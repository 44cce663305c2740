//! Store settings in the plan and apply flows: the shared daily `budget:` of keyward.yaml
//! against the one each store holds, as the plan's `settings` changes, and written by apply
//! (after the key changes, under the store's lock). Must not change keys.

use super::load::Desired;
use crate::observe::Opened as Stores;
use crate::plan::{Plan, StoreSetting};
use crate::store::Actor;
use crate::store::budget;
use anyhow::{Context as _, Result};

/// The settings changes: each opened store whose keyward.yaml entry has a budget, or that
/// enforces one (a budget removed from keyward.yaml is removed from the store).
pub async fn changes(desired: &Desired, stores: &Stores) -> Result<Vec<StoreSetting>> {
    let mut out = Vec::new();
    for (name, cfg) in &desired.loaded.spec.stores {
        let Some(store) = stores.get(name) else {
            continue;
        };
        if cfg.budget.is_none() && !store.capabilities().budget {
            continue;
        }
        let live = match store.budget().await {
            Ok(b) => b,
            // A server that cannot say has nothing to remove.
            Err(_) if cfg.budget.is_none() => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("reading the budget of store `{name}`"));
            }
        };
        if let Some((to, from)) = budget::change(cfg.budget.as_ref(), live.as_ref()) {
            out.push(StoreSetting {
                store: name.clone(),
                setting: "budget".into(),
                to,
                from,
            });
        }
    }
    Ok(out)
}

/// Write the plan's settings changes; false when one failed (said on stderr).
pub async fn apply(desired: &Desired, stores: &Stores, plan: &Plan, actor: &Actor) -> bool {
    let mut ok = true;
    for c in &plan.settings {
        let (Some(store), Some(cfg)) = (
            stores.get(&c.store),
            desired.loaded.spec.stores.get(&c.store),
        ) else {
            continue;
        };
        match store.set_budget(cfg.budget.as_ref(), actor).await {
            Ok(()) => eprintln!("  ~ {c}"),
            Err(e) => {
                eprintln!("error: {c}: not written: {e}");
                ok = false;
            }
        }
    }
    ok
}
