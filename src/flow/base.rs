//! `plan --base REV`: which keys the change under review (merge-base..revision) edits,
//! who made its commits, and per action whether it belongs to the change and who asked for
//! it. Reads git only; must not observe a store or change the plan's actions.

use super::load::Desired;
use crate::diag::Location;
use crate::git::{GitRepo, Range};
use crate::plan::{BaseInfo, Plan};
use crate::spec::{self, DesiredKey, Spec};
use anyhow::{Result, anyhow};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

type KeyId = (String, String);

/// A key with where it is defined blanked, to compare what it says.
fn comparable(k: &DesiredKey) -> DesiredKey {
    let mut k = k.clone();
    k.location = Location::new("", 0, 0);
    k.field_locations.clear();
    k
}

fn keys_of(spec: &Spec) -> BTreeMap<KeyId, &DesiredKey> {
    spec.keys
        .iter()
        .map(|k| ((k.store.clone(), k.name.clone()), k))
        .collect()
}

/// Mark `plan` with the change from `base` to the desired revision.
pub fn mark_base(plan: &mut Plan, desired: &Desired, base: &str) -> Result<()> {
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
    let (touched, file_of) = touched_keys(g, desired, &range)?;
    mark_actions(plan, &range, &touched, &file_of);
    let other_files = other_files(&range)
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    plan.base = Some(BaseInfo {
        rev: base.to_string(),
        commit: range.merge_base,
        commits: range.commits,
        requesters: range.requesters,
        touched_keys: touched.iter().map(|(s, n)| format!("{s}/{n}")).collect(),
        other_files,
        connection_changes: Vec::new(),
    });
    Ok(())
}

/// The keys the change edits, and where each key is defined (now, else at the base) for
/// "who edited its file".
fn touched_keys(
    g: &GitRepo,
    desired: &Desired,
    range: &Range,
) -> Result<(BTreeSet<KeyId>, BTreeMap<KeyId, PathBuf>)> {
    let now_keys = keys_of(&desired.loaded.spec);
    let base_files = g.spec_files_at(&range.merge_base)?;
    let base_spec = spec::load_from_files(&desired.loaded.spec.root, base_files).ok();
    let mut file_of: BTreeMap<KeyId, PathBuf> = now_keys
        .iter()
        .map(|(k, d)| (k.clone(), d.location.file.clone()))
        .collect();
    let mut touched: BTreeSet<KeyId> = BTreeSet::new();
    match &base_spec {
        Some(b) => {
            let before = keys_of(&b.spec);
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
    Ok((touched, file_of))
}

/// The files the change edits outside keys/.
fn other_files(range: &Range) -> impl Iterator<Item = &PathBuf> {
    range
        .files
        .keys()
        .filter(|p| !p.starts_with(spec::KEYS_DIR))
}

/// Per action: whether the change touches it, and who asked for it (the authors of its
/// file, else the authors of the change's other files).
fn mark_actions(
    plan: &mut Plan,
    range: &Range,
    touched: &BTreeSet<KeyId>,
    file_of: &BTreeMap<KeyId, PathBuf>,
) {
    let other_authors: BTreeSet<String> = other_files(range)
        .filter_map(|p| range.files.get(p))
        .flat_map(|a| a.iter().cloned())
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
}
