//! Gathering the web view's inputs: list each store, read its events, read the delivery
//! manifests and the git history of the spec files. All I/O goes through the `Store` trait,
//! the `Outbox` and `GitRepo`; a store that fails is shown with its error, never hidden.
//! Must not change a store, the outbox or the repository.

use super::{COMMITS_PER_FILE, CommitInfo, Inputs, StoreView, relative};
use crate::deliver::Outbox;
use crate::git::GitRepo;
use crate::spec::{Spec, StoreConfig};
use crate::store::{Event, ListFilter, Store, list_all};
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
