//! The plan: the diff's changes in execution order, with what identifies the desired
//! revision and the live state it was computed against. Rendering lives in `render`.
//! Must not do I/O beyond what callers hand in (observed keys, revision strings).

pub mod markdown;
pub mod render;
pub mod saved;
pub mod text;

use crate::diff::{Action, Change, DiffResult, Note};
use crate::model::{KeyStatus, LiveKey};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Version of the JSON plan format (bumped on incompatible changes).
pub const FORMAT_VERSION: u32 = 1;

/// One live key as the plan saw it: enough to tell, at apply, that it changed since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeyVersion {
    pub name: String,
    /// The store's optimistic-concurrency version of the key.
    pub version: u64,
    /// False for keys made outside keyward (never touched, but watched for staleness).
    pub managed: bool,
}

/// A digest of one store's live state, and every key's version in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoreState {
    pub environment: String,
    /// `sha256:` over every key id with its version (sorted).
    pub digest: String,
    /// Keys keyward manages, revoked ones included.
    pub managed_keys: usize,
    /// Managed keys that are not revoked (the base of the percentage guards).
    #[serde(default)]
    pub managed_live_keys: usize,
    pub unmanaged_keys: usize,
    /// Every key id in the store with its version (per-key stale detection).
    #[serde(default)]
    pub versions: BTreeMap<String, KeyVersion>,
}

impl StoreState {
    pub fn of(environment: &str, keys: &[LiveKey]) -> StoreState {
        let managed = keys.iter().filter(|k| k.is_managed()).count();
        let live = keys
            .iter()
            .filter(|k| k.is_managed() && k.status != KeyStatus::Revoked)
            .count();
        StoreState {
            environment: environment.to_string(),
            digest: live_digest(keys),
            managed_keys: managed,
            managed_live_keys: live,
            unmanaged_keys: keys.len() - managed,
            versions: keys
                .iter()
                .map(|k| {
                    (
                        k.id.clone(),
                        KeyVersion {
                            name: k.name.clone(),
                            version: k.version,
                            managed: k.is_managed(),
                        },
                    )
                })
                .collect(),
        }
    }
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

/// Which repository a plan belongs to, so a plan file cannot be applied elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RepoIdentity {
    /// `git`: `id` is the repository's root commit (the same in every clone).
    /// `directory`: not a git repository; `id` is a digest of its absolute path.
    pub kind: RepoKind,
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RepoKind {
    Git,
    Directory,
}

impl RepoIdentity {
    /// The identity of a directory that is not a git repository.
    pub fn directory(root: &std::path::Path) -> RepoIdentity {
        let abs = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let canon = abs.canonicalize().unwrap_or(abs);
        let h = Sha256::digest(canon.to_string_lossy().as_bytes());
        RepoIdentity {
            kind: RepoKind::Directory,
            id: format!("sha256:{}", hex::encode(&h[..16])),
        }
    }
}

/// Where the desired state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RevisionSource {
    /// The files on disk (`commit` is HEAD, if the directory is a git repository).
    WorkingTree,
    /// A git revision read without checking it out (`plan --rev REV`).
    GitRevision,
}

/// The desired revision: what the plan was computed from. A saved plan is applied only
/// when the spec at this revision still has the same content (`spec_digest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Revision {
    pub source: RevisionSource,
    /// The commit id (full SHA-1), when known.
    pub commit: Option<String>,
    /// What was asked for (`--rev` as typed), when a revision was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
    /// The working tree had uncommitted changes to spec files (planned with them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dirty: bool,
    /// `sha256:` over every spec file's path and content.
    pub spec_digest: String,
    /// Each spec file (path relative to the repository root) with the sha256 of its content.
    pub files: BTreeMap<String, String>,
}

impl Revision {
    /// The revision of a set of spec files (paths relative to the root).
    pub fn of_files<B: AsRef<[u8]>>(
        source: RevisionSource,
        commit: Option<String>,
        files: &BTreeMap<std::path::PathBuf, B>,
    ) -> Revision {
        let spec_files: Vec<(String, &[u8])> = files
            .iter()
            .filter(|(path, _)| crate::spec::is_spec_file(path))
            .map(|(path, bytes)| (path.to_string_lossy().replace('\\', "/"), bytes.as_ref()))
            .collect();
        let mut digests = BTreeMap::new();
        let mut all = Sha256::new();
        for ((p, _), d) in spec_files.iter().zip(file_digests(&spec_files)) {
            all.update(p.as_bytes());
            all.update(b"\0");
            all.update(d.as_bytes());
            all.update(b"\n");
            digests.insert(p.clone(), format!("sha256:{d}"));
        }
        Revision {
            source,
            commit,
            rev: None,
            dirty: false,
            spec_digest: format!("sha256:{}", hex::encode(all.finalize())),
            files: digests,
        }
    }

    /// A short human label: `abc1234`, `abc1234 (with uncommitted changes)`, `working tree`.
    pub fn label(&self) -> String {
        match (&self.commit, self.dirty) {
            (Some(c), false) => short(c).to_string(),
            (Some(c), true) => format!("{} + uncommitted changes", short(c)),
            // Only a git repository has uncommitted files: one without a commit yet.
            (None, true) => "working tree (nothing committed yet)".to_string(),
            (None, false) => "working tree (not a git repository)".to_string(),
        }
    }

    /// Spec files that differ between `self` (the plan) and `now`, as `path (what)`.
    pub fn changed_files(&self, now: &Revision) -> Vec<String> {
        let mut out = Vec::new();
        for (p, d) in &self.files {
            match now.files.get(p) {
                None => out.push(format!("{p} (deleted)")),
                Some(n) if n != d => out.push(format!("{p} (modified)")),
                Some(_) => {}
            }
        }
        for p in now.files.keys() {
            if !self.files.contains_key(p) {
                out.push(format!("{p} (added)"));
            }
        }
        out
    }
}

/// The hex SHA-256 of each file, in order. A large spec (10,000 keys is ~4 MB) is hashed
/// on two threads, halves of the list each: ~4% of a plan's instructions otherwise ran
/// alone after the parallel parse.
fn file_digests(files: &[(String, &[u8])]) -> Vec<String> {
    let digest = |f: &[(String, &[u8])]| -> Vec<String> {
        f.iter()
            .map(|(_, b)| hex::encode(Sha256::digest(b)))
            .collect()
    };
    let total: usize = files.iter().map(|(_, b)| b.len()).sum();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if cores < 2 || files.len() < 2 || total < 256 * 1024 {
        return digest(files);
    }
    let (first, second) = files.split_at(files.len() / 2);
    std::thread::scope(|sc| {
        let other = sc.spawn(|| digest(second));
        let mut out = digest(first);
        // Hashing does not panic; if it ever did, the panic is not lost.
        out.extend(
            other
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p)),
        );
        out
    })
}

/// The first 12 characters of a commit id.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Someone whose commits are part of the change under review.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct Requester {
    pub name: String,
    pub email: String,
    /// Commits of theirs in base..revision.
    pub commits: usize,
}

impl std::fmt::Display for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.email.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{} <{}>", self.name, self.email)
        }
    }
}

/// `plan --base REV`: the change under review, from the base to the desired revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BaseInfo {
    /// The base as typed (e.g. `origin/main`).
    pub rev: String,
    /// The merge base of the base and the desired revision.
    pub commit: String,
    /// Commits in base..revision.
    pub commits: usize,
    /// Authors of those commits: the people asking for these keys.
    pub requesters: Vec<Requester>,
    /// Keys the change edits (`store/name`), whether or not the live stores differ.
    pub touched_keys: Vec<String>,
    /// Spec files other than key files that the change edits (keyward.yaml, people.yaml).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_files: Vec<String>,
    /// Stores whose connection settings (url, token_env, path, ...) the change edits or
    /// adds. The plan used the base's settings and contacted no store the change adds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connection_changes: Vec<ConnectionChange>,
}

/// `plan --base`: a store whose connection settings the change under review edits (or a
/// store it adds). They take effect only once the change is merged and applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConnectionChange {
    pub store: String,
    /// The store is not in the base: it was not contacted (its keys are planned as new).
    pub new_store: bool,
    /// The settings that differ from the base.
    pub settings: Vec<SettingChange>,
}

impl ConnectionChange {
    /// One sentence for a reviewer (plain text; the renderers escape it).
    pub fn describe(&self) -> String {
        let list = |with_base: bool| {
            self.settings
                .iter()
                .map(|s| match (&s.base, with_base) {
                    (Some(b), true) => format!("{}: {b} -> {}", s.field, s.change),
                    _ => format!("{}: {}", s.field, s.change),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.new_store {
            format!(
                "store `{}` is new in this change and was NOT contacted ({}); its keys are planned as if it were empty",
                self.store,
                list(false)
            )
        } else {
            format!(
                "this change edits the connection settings of store `{}` ({}); this plan used the base's settings, the new ones take effect only once the change is merged",
                self.store,
                list(true)
            )
        }
    }
}

/// One connection setting the change edits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SettingChange {
    /// `kind`, `url`, `token_env`, `path`, `ledger`.
    pub field: String,
    /// The base's value (what the plan used), absent when the base has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The change's value (not used by this plan).
    pub change: String,
}

/// A change left out by `--only`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Skipped {
    pub action: Action,
    pub store: String,
    pub name: String,
}

/// A safety threshold the plan crosses: apply refuses it unless `--force`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GuardViolation {
    pub store: String,
    /// Which guard: `max_revokes`, `max_revoke_percent`, `max_replaces`, `max_replace_percent`.
    pub guard: String,
    /// The threshold in force.
    pub limit: u64,
    /// What the plan would do (a count or a percentage, as the guard measures).
    pub planned: u64,
    pub message: String,
}

/// Counts per action, for summaries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub counts: BTreeMap<Action, usize>,
    /// Escalations over all actions.
    #[serde(default)]
    pub escalations: usize,
}

impl Summary {
    pub fn of(actions: &[Change]) -> Summary {
        let mut s = Summary::default();
        for c in actions {
            *s.counts.entry(c.action).or_default() += 1;
            s.escalations += c.escalations.len();
        }
        s
    }
    pub fn get(&self, a: Action) -> usize {
        self.counts.get(&a).copied().unwrap_or(0)
    }
    pub fn total(&self) -> usize {
        self.counts.values().sum()
    }
}

/// A plan: what apply will do, and what it was computed from. Serialised as the JSON plan
/// (`plan --format json`, `plan --out FILE`); `schemas/plan.schema.json` documents it.
/// Never holds a secret or a hash of one: there is none at plan time.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "keyward plan")]
pub struct Plan {
    /// Version of this format; a reader refuses versions it does not know.
    pub format_version: u32,
    /// The keyward version that made the plan.
    pub keyward_version: String,
    pub created_at: DateTime<Utc>,
    /// The repository the plan belongs to.
    pub repository: RepoIdentity,
    /// The desired revision the plan was computed from.
    pub desired_revision: Revision,
    /// With `--base`: the change under review and who asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseInfo>,
    /// Each store's live state as observed when planning.
    pub stores: BTreeMap<String, StoreState>,
    pub summary: Summary,
    /// The actions, in execution order.
    pub actions: Vec<Change>,
    pub notes: Vec<Note>,
    /// Expired and soon-expiring keys this plan does not renew.
    #[serde(default)]
    pub warnings: Vec<Note>,
    /// People who left people.yaml but hold secrets or own keys in the stores.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_removed: Vec<crate::diff::AccessRemoved>,
    /// Safety thresholds this plan crosses (apply refuses unless `--force`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guards: Vec<GuardViolation>,
    /// The `--only` patterns in effect (empty: every key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
    /// Changes left out by `--only`: they are not applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
    /// How many changes `--only` left out (0 when not filtered).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub filtered_out: usize,
    /// The changes an admin does by hand in a vendor console (`kind: console` stores), with
    /// their steps: `keyward apply --store STORE` at a terminal guides them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub console_steps: Vec<ConsoleStep>,
    /// Store settings apply changes (a shared daily `budget:`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<StoreSetting>,
}

/// A setting of a whole store that apply writes (keyward.yaml `budget:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoreSetting {
    pub store: String,
    /// The setting: `budget`.
    pub setting: String,
    /// What keyward.yaml says (`none`: removed).
    pub to: String,
    /// What the store holds now (`none`).
    pub from: String,
}

impl std::fmt::Display for StoreSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "store {}: {}: {} (was {})",
            self.store, self.setting, self.to, self.from
        )
    }
}

/// One change to do by hand in a vendor console. No secret: the steps name what to type and
/// tick, never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConsoleStep {
    pub store: String,
    pub key: String,
    pub action: Action,
    /// The numbered steps, in the vendor's words (from its preset).
    pub steps: Vec<String>,
    /// A step begun by an earlier apply (made in the console, value not yet pasted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub begun: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The JSON Schema of the plan format (`schemas/plan.schema.json` is this, pretty-printed).
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Plan);
    let mut v = serde_json::to_value(&schema).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "$id".into(),
            serde_json::Value::String(SCHEMA_ID.to_string()),
        );
    }
    v
}

/// The `$id` of the plan schema.
pub const SCHEMA_ID: &str = "https://keyward.dev/schemas/plan.schema.json";

impl Plan {
    pub fn new(
        diff: DiffResult,
        observed: &BTreeMap<String, Vec<LiveKey>>,
        environments: &BTreeMap<String, String>,
        repository: RepoIdentity,
        desired_revision: Revision,
        now: DateTime<Utc>,
    ) -> Plan {
        let stores = environments
            .iter()
            .map(|(name, env)| {
                let keys = observed.get(name).map(Vec::as_slice).unwrap_or(&[]);
                (name.clone(), StoreState::of(env, keys))
            })
            .collect();
        let summary = Summary::of(&diff.changes);
        Plan {
            format_version: FORMAT_VERSION,
            keyward_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: now,
            repository,
            desired_revision,
            base: None,
            stores,
            summary,
            actions: diff.changes,
            notes: diff.notes,
            warnings: diff.warnings,
            access_removed: diff.access_removed,
            guards: Vec::new(),
            only: Vec::new(),
            skipped: Vec::new(),
            filtered_out: 0,
            console_steps: Vec::new(),
            settings: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.settings.is_empty()
    }

    pub fn summary(&self) -> Summary {
        Summary::of(&self.actions)
    }

    /// Keep only actions whose `store/name` or `name` matches one of the glob patterns
    /// (`*` wildcard). Returns how many actions were dropped; they are listed in `skipped`.
    pub fn retain_only(&mut self, patterns: &[String]) -> usize {
        if patterns.is_empty() {
            return 0;
        }
        let (keep, drop): (Vec<Change>, Vec<Change>) = std::mem::take(&mut self.actions)
            .into_iter()
            .partition(|c| {
                let full = format!("{}/{}", c.store, c.name);
                patterns
                    .iter()
                    .any(|p| glob_match(p, &full) || glob_match(p, &c.name))
            });
        self.actions = keep;
        self.skipped = drop
            .into_iter()
            .map(|c| Skipped {
                action: c.action,
                store: c.store,
                name: c.name,
            })
            .collect();
        self.only = patterns.to_vec();
        self.filtered_out = self.skipped.len();
        self.summary = Summary::of(&self.actions);
        self.filtered_out
    }

    /// Keep only the changes that restore drift (`plan --drift-only`); notes and warnings
    /// are dropped too. Returns how many changes were dropped.
    pub fn retain_drift(&mut self) -> usize {
        let before = self.actions.len();
        self.actions.retain(|c| c.drift);
        self.notes.clear();
        self.warnings.clear();
        self.access_removed.clear();
        self.summary = Summary::of(&self.actions);
        before - self.actions.len()
    }

    /// Stores this plan changes something in (a replace across stores touches both).
    pub fn touched_stores(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in &self.actions {
            let mut names = vec![c.store.clone()];
            for f in &c.fields {
                if f.field == "store"
                    && f.forces_replacement
                    && let Some(b) = &f.before
                {
                    names.push(b.clone());
                }
            }
            for n in names {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out.sort();
        out
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

/// The plan of `diff` over `observed` for the stores of `spec`, from a clean working tree
/// of one file at a fixed commit of a fixed git repository, made at the diff tests' `now`:
/// for tests of what is built on a plan.
#[cfg(test)]
pub(crate) fn test_plan(
    diff: DiffResult,
    observed: &BTreeMap<String, Vec<LiveKey>>,
    spec: &crate::spec::Spec,
) -> Plan {
    let envs: BTreeMap<String, String> = spec
        .stores
        .iter()
        .map(|(n, s)| (n.clone(), s.environment.clone()))
        .collect();
    let files: BTreeMap<std::path::PathBuf, Vec<u8>> =
        [("keys/a.yaml".into(), b"keys: []\n".to_vec())].into();
    let mut rev = Revision::of_files(
        RevisionSource::WorkingTree,
        Some("0123456789abcdef0123456789abcdef01234567".into()),
        &files,
    );
    rev.dirty = false;
    let repo = RepoIdentity {
        kind: RepoKind::Git,
        id: "fedcba9876543210fedcba9876543210fedcba98".into(),
    };
    Plan::new(diff, observed, &envs, repo, rev, crate::diff::tests::now())
}

/// A plan with one of everything (create, an escalating update, rotate, replace, revoke,
/// a note, a change under review and a guard), fixed in time: for renderer tests.
#[cfg(test)]
pub(crate) fn sample_plan() -> Plan {
    use crate::diff::tests::{key, live_from, now, spec};
    let old_ill = key("prod", "ill-lookup", &["bibs:read"]);
    let old_rot = key("prod", "reports", &["analytics:read"]);
    let old_rep = key("prod", "course-sync", &["courses:read"]);
    let gone = key("sbx", "old-test", &["users:read"]);
    let before = spec(vec![
        old_ill.clone(),
        old_rot.clone(),
        old_rep.clone(),
        gone.clone(),
    ]);
    let t0 = now() - chrono::Duration::days(10);
    let observed: BTreeMap<String, Vec<LiveKey>> = [
        (
            "prod".to_string(),
            vec![
                live_from(&before, &old_ill, "ILLID0000000001", t0),
                live_from(&before, &old_rot, "ROTID0000000002", t0),
                live_from(&before, &old_rep, "REPID0000000003", t0),
            ],
        ),
        (
            "sbx".to_string(),
            vec![live_from(&before, &gone, "OLDID0000000004", t0)],
        ),
    ]
    .into();
    let mut ill = key("prod", "ill-lookup", &["bibs:write", "users:read"]);
    ill.purpose = Some("ILLiad | \"Alma\" <lookup> @ill-team\n```injected".into());
    let mut rot = old_rot.clone();
    rot.rotation.generation = 2;
    let mut rep = old_rep.clone();
    rep.owner = "asmith".into();
    let mut new = key("sbx", "new-integration", &["bibs:read"]);
    new.labels.insert("ticket".into(), "LSIS-1234".into());
    let desired = spec(vec![ill, rot, rep, new]);
    // The replaced key was used three days ago; the removed sandbox key never was, and the
    // sandbox store counts since the keys were made.
    let used = |key: &str, days: i64| crate::store::usage::UsageRow {
        key_id: key.into(),
        day: crate::store::usage::day_of(&(now() - chrono::Duration::days(days))),
        reason: crate::store::VerifyReason::Ok,
        calls: 7,
        last_at: now() - chrono::Duration::days(days),
    };
    let usage = BTreeMap::from([
        (
            "prod".to_string(),
            Some(crate::store::usage::Usage {
                counting_since: Some(t0),
                rows: vec![used("REPID0000000003", 3)],
                ..Default::default()
            }),
        ),
        (
            "sbx".to_string(),
            Some(crate::store::usage::Usage {
                counting_since: Some(t0),
                rows: Vec::new(),
                ..Default::default()
            }),
        ),
    ]);
    let seen = crate::unused::Seen::new(&usage);
    let delivered = crate::diff::Delivered::new();
    let diff = crate::diff::diff_seen(&desired, &observed, &delivered, &seen, now());
    let mut plan = test_plan(diff, &observed, &desired);
    for c in &mut plan.actions {
        let mine = c.name == "ill-lookup" || c.name == "new-integration";
        c.touched = Some(mine);
        if mine {
            c.requested_by = vec!["Jane Requester <jane@example.edu>".into()];
        }
    }
    plan.base = Some(BaseInfo {
        rev: "main".into(),
        commit: "89abcdef0123456789abcdef0123456789abcdef".into(),
        commits: 2,
        requesters: vec![Requester {
            name: "Jane Requester".into(),
            email: "jane@example.edu".into(),
            commits: 2,
        }],
        touched_keys: vec!["prod/ill-lookup".into(), "sbx/new-integration".into()],
        other_files: Vec::new(),
        connection_changes: Vec::new(),
    });
    plan.guards = vec![GuardViolation {
        store: "sbx".into(),
        guard: "max_revokes".into(),
        limit: 0,
        planned: 1,
        message: "store sbx: the plan would revoke or delete 1 key(s), more than max_revokes = 0"
            .into(),
    }];
    plan
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
