//! Where the delivery outbox may be: inside the key repository, and apart from keyward's
//! own files (`.keyward/`, every embedded store's database and pepper, every console
//! ledger), because `apply --commit-deliveries` commits what it wrote there. Judged on the
//! paths as written (lexically: `..` and `.` resolved, no file system access); must not do
//! I/O.

use super::model::{StoreConfig, StoreKind};
use super::pos::YPath;
use super::yaml::Ctx;
use crate::diag::codes;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// `path` with `.` dropped and `..` applied to what precedes it (never above the root of
/// an absolute path); None when a relative path climbs above its start.
fn lexical(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    let mut depth = 0usize;
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    if out.has_root() {
                        continue;
                    }
                    return None;
                }
                out.pop();
                depth -= 1;
            }
            Component::Normal(n) => {
                out.push(n);
                depth += 1;
            }
            other => out.push(other.as_os_str()),
        }
    }
    Some(out)
}

fn overlap(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// keyward's own files a store keeps: (what, path, where in keyward.yaml).
fn store_files(
    stores: &BTreeMap<String, StoreConfig>,
    root: &Path,
) -> Vec<(String, PathBuf, YPath)> {
    let at = YPath::root().key("stores");
    let mut out = vec![(
        "keyward's state directory `.keyward/`".to_string(),
        root.join(".keyward"),
        YPath::root().key("delivery").key("outbox"),
    )];
    for s in stores.values() {
        let sp = at.key(&s.name);
        match &s.kind {
            StoreKind::Sqlite { path } => out.push((
                format!("the database of store `{}`", s.name),
                path.clone(),
                sp.key("path"),
            )),
            StoreKind::Console(c) => out.push((
                format!("the ledger of store `{}`", s.name),
                c.ledger.clone(),
                sp.key("ledger"),
            )),
            _ => {}
        }
    }
    out
}

/// The outbox (`given` when keyward.yaml sets it) is inside `root` (KW160) and overlaps
/// none of keyward's own files (KW161).
pub fn check(
    ctx: &mut Ctx,
    stores: &BTreeMap<String, StoreConfig>,
    outbox: &Path,
    root: &Path,
    given: bool,
) {
    let at = YPath::root().key("delivery").key("outbox");
    let Some(root_n) = lexical(root) else { return };
    let Some(outbox) = lexical(outbox).filter(|o| o.starts_with(&root_n)) else {
        ctx.err(
            codes::OUTBOX_OUTSIDE,
            &at,
            "the outbox is outside the key repository; `apply --commit-deliveries` commits the deliveries, so they must be inside it",
            "use a directory inside the repository, e.g. `outbox: deliveries`",
        );
        return;
    };
    let shown = match outbox.strip_prefix(&root_n) {
        Ok(p) if p.as_os_str().is_empty() => ".".to_string(),
        Ok(p) => p.display().to_string(),
        Err(_) => outbox.display().to_string(),
    };
    for (what, path, field) in store_files(stores, root) {
        if lexical(&path).is_some_and(|p| overlap(&outbox, &p)) {
            ctx.err(
                codes::OUTBOX_OVERLAP,
                if given { &at } else { &field },
                format!(
                    "the outbox `{shown}` overlaps {what}; `apply --commit-deliveries` would commit it with the deliveries"
                ),
                "keep the outbox apart from `.keyward/` and every store's files, e.g. `outbox: deliveries`",
            );
        }
    }
}
