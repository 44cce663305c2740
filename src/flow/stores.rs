//! Opening the stores for plan and apply, with the guard for a missing embedded store: a
//! database file that is gone while the deliveries show keys it held is never silently
//! re-created (that would re-issue every key and supersede the secrets people use).
//! Must not list, compare or change keys.

use super::load::Desired;
use super::options::Step;
use super::planning::Stores;
use crate::deliver::Outbox;
use crate::observe;
use crate::outcome::Outcome;
use crate::spec::StoreConfig;
use anyhow::{Result, bail};
use std::collections::BTreeMap;

/// The stores a plan or apply works with.
pub struct Opened {
    pub stores: Stores,
    /// Embedded stores whose database does not exist: observed as empty (plan only; apply
    /// creates them).
    pub absent: Vec<String>,
}

/// Open the stores. `create`: apply, which creates the database of a new store (one no
/// delivery names) and of a store named in `recreate`; plan never creates one. A store
/// whose database is missing while the outbox holds active deliveries from it refuses
/// (exit 3) unless it is named in `recreate`.
pub fn open_stores(desired: &Desired, recreate: &[String], create: bool) -> Step<Opened> {
    let configs: Vec<&StoreConfig> = desired.loaded.spec.stores.values().collect();
    open_configs(desired, &configs, recreate, create)
}

/// [`open_stores`] with the settings given (`plan --base`: the base revision's connection
/// settings; a store missing from `configs` is not opened).
pub fn open_configs(
    desired: &Desired,
    configs: &[&StoreConfig],
    recreate: &[String],
    create: bool,
) -> Step<Opened> {
    let spec = &desired.loaded.spec;
    check_recreate(desired, recreate)?;
    let delivered = delivered_per_store(desired)?;
    let mut refused = false;
    for cfg in configs.iter().copied() {
        let Some(path) = observe::missing_file(cfg) else {
            continue;
        };
        let Some(names) = delivered.get(&cfg.name) else {
            continue;
        };
        let shown = path.strip_prefix(&spec.root).unwrap_or(path).display();
        if recreate.contains(&cfg.name) {
            eprintln!(
                "warning: --recreate-store {}: its database {shown} is missing; the {} key(s) delivered from it are re-issued with new secrets, and their deliveries superseded.",
                cfg.name,
                names.len()
            );
            continue;
        }
        refused = true;
        let outbox = spec
            .delivery
            .outbox
            .strip_prefix(&spec.root)
            .unwrap_or(&spec.delivery.outbox);
        eprintln!(
            "error: store `{}`: its database {shown} does not exist, but the deliveries in {} show {} active key(s) from it ({}).\n  Planning against an empty store would re-create every key and supersede the secrets people use; nothing was changed.\n  hint: restore the file (with {shown}.pepper) from the machine that ran the last apply or from a backup, or point `path` in keyward.yaml at it; to re-issue every key on purpose, run `keyward apply --recreate-store {}`.",
            cfg.name,
            outbox.display(),
            names.len(),
            preview(names),
            cfg.name
        );
    }
    if refused {
        return Ok(Err(Outcome::Refused));
    }
    let mut stores = Stores::new();
    let mut absent = Vec::new();
    for cfg in configs.iter().copied() {
        // Plan never creates a database: a missing one is observed as empty.
        if !create && observe::missing_file(cfg).is_some() {
            absent.push(cfg.name.clone());
        } else {
            stores.insert(cfg.name.clone(), observe::open(cfg)?);
            for w in observe::mode_warnings(cfg) {
                eprintln!("warning: store `{}`: {w}", cfg.name);
            }
        }
    }
    Ok(Ok(Opened { stores, absent }))
}

/// `--recreate-store` names an embedded store of keyward.yaml whose database is missing.
fn check_recreate(desired: &Desired, recreate: &[String]) -> Result<()> {
    let spec = &desired.loaded.spec;
    for name in recreate {
        let Some(cfg) = spec.stores.get(name) else {
            bail!(
                "--recreate-store {name}: no such store in keyward.yaml (stores: {})",
                spec.stores.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        };
        if observe::missing_file(cfg).is_none() {
            bail!(
                "--recreate-store {name}: the store's database is not missing (or it is not an embedded `sqlite` store); nothing to re-create"
            );
        }
    }
    Ok(())
}

/// The names of the keys with an active delivery, per store.
fn delivered_per_store(desired: &Desired) -> Result<BTreeMap<String, Vec<String>>> {
    let outbox = Outbox::new(desired.loaded.spec.delivery.outbox.clone());
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (store, name) in observe::delivered(&outbox)?.into_keys() {
        out.entry(store).or_default().push(name);
    }
    Ok(out)
}

fn preview(names: &[String]) -> String {
    let mut s = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        s.push_str(&format!(" and {} more", names.len() - 5));
    }
    s
}
