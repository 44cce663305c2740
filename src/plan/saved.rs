//! Saved plans (`plan --out FILE`, `apply FILE`): reading and writing the plan file, and
//! the checks that make `apply FILE` apply exactly what was reviewed — same repository,
//! same spec content, same live keys (per-key versions), same actions when recomputed.
//! Must not apply anything or talk to stores: callers hand in what they observed.
//!
//! A saved plan carries no in-place patches (`Change.patch` is not serialised). Apply
//! recomputes the plan from the spec at the saved revision and the live stores, and
//! proceeds only when that equals the saved actions, so a plan file can never make apply do
//! something the spec does not say (an edited file is refused, like a stale one).

use super::{FORMAT_VERSION, Plan, RepoIdentity, Revision, short};
use crate::diag::Location;
use crate::diff::Change;
use crate::model::LiveKey;
use crate::spec::DesiredKey;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SavedPlanError {
    #[error("cannot read the plan file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the plan file {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a keyward plan file: {reason}")]
    Corrupt { path: String, reason: String },
    #[error(
        "{path} is a plan of format {found}; this keyward ({ours}) reads format {FORMAT_VERSION}; run `keyward plan --out` again"
    )]
    Format {
        path: String,
        found: u64,
        ours: &'static str,
    },
    #[error(
        "{path} was made by keyward {found}; this is keyward {ours}; run `keyward plan --out` again with this version"
    )]
    Version {
        path: String,
        found: String,
        ours: &'static str,
    },
}

const OURS: &str = env!("CARGO_PKG_VERSION");

/// Write the JSON plan to `path` (temp file, fsync, rename).
pub fn write(path: &Path, plan: &Plan) -> Result<(), SavedPlanError> {
    let err = |source| SavedPlanError::Write {
        path: path.display().to_string(),
        source,
    };
    let json =
        crate::leak::to_json_pretty(plan).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plan.json".into());
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(json.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

/// Read a plan file, refusing anything that is not a complete plan of this format and
/// keyward version.
pub fn read(path: &Path) -> Result<Plan, SavedPlanError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| SavedPlanError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&shown, &bytes)
}

/// Parse plan file bytes (`shown` names the file in errors).
pub fn parse(shown: &str, bytes: &[u8]) -> Result<Plan, SavedPlanError> {
    let corrupt = |reason: String| SavedPlanError::Corrupt {
        path: shown.to_string(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not valid JSON ({e})")))?;
    let Some(obj) = value.as_object() else {
        return Err(corrupt("not a JSON object".into()));
    };
    let Some(found) = obj.get("format_version").and_then(|v| v.as_u64()) else {
        return Err(corrupt("it has no `format_version`".into()));
    };
    if found != u64::from(FORMAT_VERSION) {
        return Err(SavedPlanError::Format {
            path: shown.to_string(),
            found,
            ours: OURS,
        });
    }
    let plan: Plan = serde_json::from_value(value)
        .map_err(|e| corrupt(format!("{e} (was it edited or truncated?)")))?;
    if plan.keyward_version != OURS {
        return Err(SavedPlanError::Version {
            path: shown.to_string(),
            found: plan.keyward_version,
            ours: OURS,
        });
    }
    Ok(plan)
}

/// Why a plan cannot be applied here: from another repository (an error, not a staleness).
pub fn other_repository(saved: &RepoIdentity, here: &RepoIdentity) -> Option<String> {
    (saved != here).then(|| {
        format!(
            "the plan was made in another repository ({} {}); this one is {} {}",
            kind(saved),
            saved.id,
            kind(here),
            here.id
        )
    })
}

fn kind(r: &RepoIdentity) -> &'static str {
    match r.kind {
        super::RepoKind::Git => "git repository with root commit",
        super::RepoKind::Directory => "directory",
    }
}

/// What changed in the spec since the plan, or None when its content is the same.
pub fn spec_changed(saved: &Revision, now: &Revision) -> Option<Vec<String>> {
    if saved.spec_digest == now.spec_digest {
        return None;
    }
    let mut out = vec![format!(
        "the spec changed since the plan (planned from {}, now {})",
        saved.label(),
        now.label()
    )];
    out.extend(
        saved
            .changed_files(now)
            .into_iter()
            .map(|f| format!("  {f}")),
    );
    Some(out)
}

/// The keys whose definitions differ between the spec the plan was made from (`then`) and
/// the spec now, as `store/name: what (file:line)`, sorted by (store, name). Where a key is
/// defined (its location) is not part of its definition: moving a key between files or
/// lines is no change to it.
pub fn key_changes(then: &[DesiredKey], now: &[DesiredKey]) -> Vec<String> {
    let index = |keys: &[DesiredKey]| -> BTreeMap<(String, String), DesiredKey> {
        keys.iter()
            .map(|k| {
                let mut bare = k.clone();
                bare.location = Location::default();
                bare.field_locations.clear();
                ((k.store.clone(), k.name.clone()), bare)
            })
            .collect()
    };
    let (then_i, now_i) = (index(then), index(now));
    let at = |keys: &[DesiredKey], store: &str, name: &str| {
        keys.iter()
            .find(|k| k.store == store && k.name == name)
            .map(|k| format!("{}:{}", k.location.file.display(), k.location.line))
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for ((store, name), old) in &then_i {
        match now_i.get(&(store.clone(), name.clone())) {
            None => out.push(format!("{store}/{name}: removed from the spec")),
            Some(new) if new != old => {
                out.push(format!("{store}/{name}: edited ({})", at(now, store, name)))
            }
            Some(_) => {}
        }
    }
    for (store, name) in now_i.keys() {
        if !then_i.contains_key(&(store.clone(), name.clone())) {
            out.push(format!(
                "{store}/{name}: added to the spec ({})",
                at(now, store, name)
            ));
        }
    }
    out.sort();
    out
}

/// Per-key differences between the live state the plan saw and what the stores hold now,
/// for the stores the plan touches. Empty when nothing changed.
pub fn live_changes(plan: &Plan, observed: &BTreeMap<String, Vec<LiveKey>>) -> Vec<String> {
    let mut out = Vec::new();
    for store in plan.touched_stores() {
        let Some(saved) = plan.stores.get(&store) else {
            out.push(format!("store {store}: not in the plan's recorded state"));
            continue;
        };
        let now: BTreeMap<&str, &LiveKey> = observed
            .get(&store)
            .map(|v| v.iter().map(|k| (k.id.as_str(), k)).collect())
            .unwrap_or_default();
        let mut lines = Vec::new();
        for (id, kv) in &saved.versions {
            match now.get(id.as_str()) {
                None => lines.push(format!("{} (id {id}): gone from the store", kv.name)),
                Some(k) if k.version != kv.version => lines.push(format!(
                    "{} (id {id}): changed in the store (version {} -> {})",
                    kv.name, kv.version, k.version
                )),
                Some(_) => {}
            }
        }
        for (id, k) in &now {
            if !saved.versions.contains_key(*id) {
                lines.push(format!("{} (id {id}): added to the store", k.name));
            }
        }
        if !lines.is_empty() {
            out.push(format!("store {store} changed since the plan:"));
            out.extend(lines.into_iter().map(|l| format!("  {l}")));
        }
    }
    out
}

/// Differences between the saved actions and the ones recomputed now. Empty when equal.
pub fn action_changes(saved: &[Change], now: &[Change]) -> Vec<String> {
    let key = |c: &Change| format!("{} {}/{}", c.action.as_str(), c.store, c.name);
    let strip = |c: &Change| {
        let mut c = c.clone();
        c.patch = Default::default();
        c.touched = None;
        c.requested_by.clear();
        // What the reviewer was told of a key's last use: calls since do not make the plan
        // another one (a key used again is no longer disabled for disuse, which does).
        c.last_used = None;
        c
    };
    let saved_s: Vec<Change> = saved.iter().map(strip).collect();
    let now_s: Vec<Change> = now.iter().map(strip).collect();
    if saved_s == now_s {
        return Vec::new();
    }
    let mut out = Vec::new();
    for c in &saved_s {
        match now_s
            .iter()
            .find(|n| n.store == c.store && n.name == c.name)
        {
            None => out.push(format!("{}: no longer planned", key(c))),
            Some(n) if n != c => {
                out.push(format!("{}: now planned differently ({})", key(c), key(n)))
            }
            Some(_) => {}
        }
    }
    for n in &now_s {
        if !saved_s
            .iter()
            .any(|c| c.store == n.store && c.name == n.name)
        {
            out.push(format!("{}: not in the saved plan", key(n)));
        }
    }
    if out.is_empty() {
        out.push("the actions are in a different order".into());
    }
    out
}

/// One line naming a saved plan: `plan abc123 (3 actions, made 2026-11-21T12:00:00Z)`.
pub fn describe(plan: &Plan) -> String {
    format!(
        "plan of {} ({} action(s), made {})",
        plan.desired_revision
            .commit
            .as_deref()
            .map(short)
            .unwrap_or("the working tree"),
        plan.actions.len(),
        plan.created_at.format("%Y-%m-%dT%H:%M:%SZ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_name_edits_additions_and_removals_but_not_moves() {
        use crate::diff::tests::key;
        let then = vec![
            key("prod", "a", &["bibs:read"]),
            key("prod", "b", &["bibs:read"]),
        ];
        let mut moved = then.clone();
        moved[0].location = Location::new("keys/other.yaml", 40, 3);
        moved[0].field_locations.clear();
        assert!(key_changes(&then, &moved).is_empty());
        let mut now = vec![
            key("prod", "a", &["bibs:write"]),
            key("sbx", "c", &["bibs:read"]),
        ];
        now[0].location = Location::new("keys/a.yaml", 7, 5);
        now[1].location = Location::new("keys/c.yaml", 2, 5);
        assert_eq!(
            key_changes(&then, &now),
            [
                "prod/a: edited (keys/a.yaml:7)",
                "prod/b: removed from the spec",
                "sbx/c: added to the spec (keys/c.yaml:2)",
            ]
        );
    }

    #[test]
    fn garbage_and_foreign_json_are_refused_as_corrupt() {
        for bytes in [
            &b"\x00\x01not json"[..],
            b"[1,2]",
            b"{\"hello\": 1}",
            b"{\"format_version\": 1}",
        ] {
            assert!(
                matches!(parse("f", bytes), Err(SavedPlanError::Corrupt { .. })),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert!(matches!(
            parse("f", b"{\"format_version\": 99}"),
            Err(SavedPlanError::Format { found: 99, .. })
        ));
    }
}
