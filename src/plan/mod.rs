//! The plan: the diff's changes in execution order, with what identifies the desired
//! revision and the live state it was computed against. Rendering lives in `render`.
//! Must not do I/O beyond what callers hand in (observed keys, revision strings).

pub mod render;

use crate::diff::{Action, Change, DiffResult, Note};
use crate::store::LiveKey;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Version of the JSON plan format (bumped on incompatible changes).
pub const FORMAT_VERSION: u32 = 1;

/// A digest of one store's live state: every key id with its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreState {
    pub environment: String,
    pub digest: String,
    pub managed_keys: usize,
    pub unmanaged_keys: usize,
}

/// Digest of a store's keys (ids and versions, sorted), for stale-plan detection.
pub fn live_digest(keys: &[LiveKey]) -> String {
    let mut pairs: Vec<(&str, u64)> = keys.iter().map(|k| (k.id.as_str(), k.version)).collect();
    pairs.sort_unstable();
    let mut h = Sha256::new();
    for (id, v) in pairs {
        h.update(id.as_bytes());
        h.update(b":");
        h.update(v.to_string().as_bytes());
        h.update(b"\n");
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub format_version: u32,
    pub keyward_version: String,
    pub created_at: DateTime<Utc>,
    /// The desired revision (a commit id, or "working tree").
    pub desired_revision: Option<String>,
    pub stores: BTreeMap<String, StoreState>,
    pub actions: Vec<Change>,
    pub notes: Vec<Note>,
    /// Expired and soon-expiring keys this plan does not renew.
    #[serde(default)]
    pub warnings: Vec<Note>,
    /// Keys a `--only` filter left out (0 when not filtered).
    #[serde(skip_serializing_if = "is_zero")]
    pub filtered_out: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Counts per action, for summaries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub counts: BTreeMap<Action, usize>,
}

impl Summary {
    pub fn get(&self, a: Action) -> usize {
        self.counts.get(&a).copied().unwrap_or(0)
    }
    pub fn total(&self) -> usize {
        self.counts.values().sum()
    }
}

impl Plan {
    pub fn new(
        diff: DiffResult,
        observed: &BTreeMap<String, Vec<LiveKey>>,
        environments: &BTreeMap<String, String>,
        desired_revision: Option<String>,
        now: DateTime<Utc>,
    ) -> Plan {
        let stores = environments
            .iter()
            .map(|(name, env)| {
                let keys = observed.get(name).map(Vec::as_slice).unwrap_or(&[]);
                let managed = keys.iter().filter(|k| k.is_managed()).count();
                (
                    name.clone(),
                    StoreState {
                        environment: env.clone(),
                        digest: live_digest(keys),
                        managed_keys: managed,
                        unmanaged_keys: keys.len() - managed,
                    },
                )
            })
            .collect();
        Plan {
            format_version: FORMAT_VERSION,
            keyward_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: now,
            desired_revision,
            stores,
            actions: diff.changes,
            notes: diff.notes,
            warnings: diff.warnings,
            filtered_out: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.actions {
            *s.counts.entry(c.action).or_default() += 1;
        }
        s
    }

    /// Keep only actions whose `store/name` or `name` matches one of the glob patterns
    /// (`*` wildcard). Returns how many actions were dropped.
    pub fn retain_only(&mut self, patterns: &[String]) -> usize {
        if patterns.is_empty() {
            return 0;
        }
        let before = self.actions.len();
        self.actions.retain(|c| {
            let full = format!("{}/{}", c.store, c.name);
            patterns
                .iter()
                .any(|p| glob_match(p, &full) || glob_match(p, &c.name))
        });
        self.filtered_out = before - self.actions.len();
        self.filtered_out
    }

    /// Keep only the changes that restore drift (`plan --drift-only`); notes and warnings
    /// are dropped too. Returns how many changes were dropped.
    pub fn retain_drift(&mut self) -> usize {
        let before = self.actions.len();
        self.actions.retain(|c| c.drift);
        self.notes.clear();
        self.warnings.clear();
        before - self.actions.len()
    }

    /// Changes that need a secret delivered (create, replace, rotate).
    pub fn deliveries(&self) -> impl Iterator<Item = &Change> {
        self.actions
            .iter()
            .filter(|c| matches!(c.action, Action::Create | Action::Replace | Action::Rotate))
    }
}

/// Minimal glob: `*` matches any run of characters (including `/`).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("prod/*", "prod/ill"));
        assert!(glob_match("*ill*", "prod/ill-lookup"));
        assert!(!glob_match("sbx/*", "prod/ill"));
        assert!(glob_match("ill", "ill"));
        assert!(!glob_match("ill", "ill2"));
    }

    #[test]
    fn the_digest_changes_with_a_version() {
        let a = live_digest(&[]);
        let mut k = crate::diff::tests::live_from(
            &crate::diff::tests::spec(vec![]),
            &crate::diff::tests::key("prod", "x", &["bibs:read"]),
            "id1",
            crate::diff::tests::now(),
        );
        let b = live_digest(std::slice::from_ref(&k));
        k.version += 1;
        let c = live_digest(std::slice::from_ref(&k));
        assert_ne!(a, b);
        assert_ne!(b, c);
    }
}
