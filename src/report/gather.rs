//! Gathering the web view's inputs: list each store, read its events, read the delivery
//! manifests and the git history of the spec files. All I/O goes through the `Store` trait,
//! the `Outbox` and `GitRepo`; a store that fails is shown with its error, never hidden.
//! Must not change a store, the outbox or the repository.

use super::{COMMITS_PER_FILE, CommitInfo, ConsoleStep, Inputs, Report, StoreView, relative};
use crate::console::ConsoleStore;
use crate::deliver::Outbox;
use crate::git::GitRepo;
use crate::spec::{Spec, StoreConfig, StoreKind};
use crate::store::{Event, ListFilter, LiveKey, Store, list_all};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most events read per store (the newest are what key pages show).
pub const MAX_EVENTS: usize = 50_000;
/// Most commits looked at for the history of the key files.
pub const MAX_COMMITS: usize = 5_000;

/// A configured store as the view describes it.
pub fn store_view(cfg: &StoreConfig) -> StoreView {
    StoreView {
        name: cfg.name.clone(),
        environment: cfg.environment.clone(),
        kind: cfg.kind.name().into(),
        error: None,
        knows_last_use: false,
    }
}

/// Every event of a store, oldest first, up to `MAX_EVENTS` (the newest ones when there are more).
pub async fn all_events(store: &dyn Store) -> Result<Vec<Event>, crate::store::StoreError> {
    let mut out: Vec<Event> = Vec::new();
    let mut after = None;
    loop {
        let page = store.events(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        out.extend(page);
        if out.len() > MAX_EVENTS {
            out.drain(..out.len() - MAX_EVENTS);
        }
    }
    Ok(out)
}

/// List each store and read its events. A store that fails is kept, with its error.
pub async fn read_stores(stores: Vec<(StoreView, Arc<dyn Store>)>, inputs: &mut Inputs) {
    for (mut view, store) in stores {
        let keys = match list_all(store.as_ref(), &ListFilter::default()).await {
            Ok(k) => k,
            Err(e) => {
                view.error = Some(e.to_string());
                Vec::new()
            }
        };
        if view.error.is_none()
            && let Ok(events) = all_events(store.as_ref()).await
        {
            inputs.events.insert(view.name.clone(), events);
        }
        if view.error.is_none() && store.capabilities().usage {
            match store.usage(crate::unused::ALL_DAYS).await {
                Ok(Some(u)) => {
                    view.knows_last_use = true;
                    let last: BTreeMap<String, DateTime<Utc>> =
                        crate::store::usage::per_key(&u.rows)
                            .into_iter()
                            .filter_map(|(id, k)| Some((id, k.last_used?)))
                            .collect();
                    inputs.last_used.insert(view.name.clone(), last);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(store = %view.name, error = %e, "the usage was not read"),
            }
        }
        inputs.stores.push((view, keys));
    }
}

/// Read the delivery manifests and the git history of the key files (blocking file I/O).
pub fn read_local(
    spec: &Spec,
    outbox: Option<&Outbox>,
    git: Option<&GitRepo>,
    inputs: &mut Inputs,
) {
    if let Some(outbox) = outbox
        && outbox.root().exists()
    {
        match outbox.list() {
            Ok(list) => inputs.manifests = list.into_iter().map(|(_, m)| m).collect(),
            Err(e) => tracing::warn!(error = %e, "the delivery manifests were not read"),
        }
    }
    if let Some(git) = git {
        inputs.commit = git.head_commit();
        inputs.history = history(git, spec);
    }
}

fn history(git: &GitRepo, spec: &Spec) -> BTreeMap<String, Vec<CommitInfo>> {
    let mut files: Vec<String> = spec
        .keys
        .iter()
        .map(|k| relative(&spec.root, &k.location.file))
        .collect();
    files.sort();
    files.dedup();
    match git.file_history(&files, COMMITS_PER_FILE, MAX_COMMITS) {
        Ok(h) => h
            .into_iter()
            .map(|(f, cs)| {
                let cs = cs
                    .into_iter()
                    .map(|c| CommitInfo {
                        id: c.id,
                        at: c.time,
                        author: c.author,
                        summary: c.summary,
                    })
                    .collect();
                (f, cs)
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "the git history of the key files was not read");
            BTreeMap::new()
        }
    }
}

/// The whole view of a key repository, for `keyward report --html`: every store of the spec
/// (or only `only`), each opened on its own so one that cannot be opened or listed is shown
/// with its error instead of failing the report; the console stores' pending steps; the
/// delivery manifests and the git history of the key files.
pub async fn repository(spec: &Spec, only: Option<&str>, now: DateTime<Utc>) -> Report {
    let mut inputs = Inputs {
        title: spec
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "keys".into()),
        ..Inputs::default()
    };
    let mut opened = Vec::new();
    for cfg in spec
        .stores
        .values()
        .filter(|c| only.is_none_or(|o| o == c.name))
    {
        let mut view = store_view(cfg);
        // A read-only command never creates an embedded store's file: observed as empty.
        if crate::observe::missing_file(cfg).is_some() {
            inputs.stores.push((view, Vec::new()));
            continue;
        }
        match crate::observe::open(cfg) {
            Ok(store) => opened.push((view, store)),
            Err(e) => {
                view.error = Some(e.to_string());
                inputs.stores.push((view, Vec::new()));
            }
        }
    }
    read_stores(opened, &mut inputs).await;
    inputs.stores.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let outbox = Outbox::new(spec.delivery.outbox.clone());
    let git = GitRepo::discover(&spec.root).ok().flatten();
    read_local(spec, Some(&outbox), git.as_ref(), &mut inputs);
    let listed: BTreeMap<String, Vec<LiveKey>> = inputs
        .stores
        .iter()
        .filter(|(v, _)| v.error.is_none())
        .map(|(v, keys)| (v.name.clone(), keys.clone()))
        .collect();
    inputs.console_steps = console_steps(spec, &listed, &outbox, now);
    super::build(Some(spec), inputs, now)
}

/// The steps admins have to do in vendor consoles: those begun and not yet recorded (the
/// ledger's pending steps), then those the next `keyward apply` will guide (the plan's
/// changes to console stores). Only the stores in `observed` (those listed) are looked
/// at; `keyward report` and the nightly `keyward expiring` both show them.
pub fn console_steps(
    spec: &Spec,
    observed: &BTreeMap<String, Vec<LiveKey>>,
    outbox: &Outbox,
    now: DateTime<Utc>,
) -> Vec<ConsoleStep> {
    let consoles: Vec<(&StoreConfig, &crate::spec::ConsoleStoreConfig)> = observed
        .keys()
        .filter_map(|name| spec.stores.get(name))
        .filter_map(|c| match &c.kind {
            StoreKind::Console(console) => Some((c, console)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for (cfg, console) in &consoles {
        let Ok(ledger) = ConsoleStore::open(cfg, console).and_then(|s| s.read()) else {
            continue;
        };
        out.extend(ledger.pending.iter().map(|p| ConsoleStep {
            store: cfg.name.clone(),
            key: p.key.clone(),
            action: p.step.clone(),
            detail: format!(
                "begun by {} on {}{}; not recorded yet: the next keyward apply finishes it",
                p.by,
                p.at.format("%Y-%m-%d"),
                if p.made { " (made in the console)" } else { "" }
            ),
        }));
    }
    if consoles.is_empty() {
        return out;
    }
    let delivered = crate::observe::delivered(outbox).unwrap_or_default();
    let planned = crate::diff::diff_with_deliveries(spec, observed, &delivered, now);
    let is_console = |s: &str| consoles.iter().any(|(c, _)| c.name == s);
    let next: Vec<ConsoleStep> = planned
        .changes
        .iter()
        .filter(|c| is_console(&c.store))
        .filter(|c| !out.iter().any(|p| p.store == c.store && p.key == c.name))
        .map(|c| ConsoleStep {
            store: c.store.clone(),
            key: c.name.clone(),
            action: c.action.as_str().to_string(),
            detail: format!(
                "the next keyward apply guides it ({})",
                if c.reasons.is_empty() {
                    "spec change".to_string()
                } else {
                    c.reasons.join("; ")
                }
            ),
        })
        .collect();
    out.extend(next);
    out
}
