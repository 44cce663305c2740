//! The web view's data model: one `Report` built (purely) from the loaded spec, each store's
//! listing, the stores' events, the delivery manifests and the git history of the key files;
//! plus the filters and sorts of the keys table. Rendering lives in `html` (and `timeline`),
//! gathering with I/O in `gather`, writing the static site in `site`. Must not hold or show a
//! secret, a hash of one, a fingerprint of one or a recipient's public key: only names, ids,
//! dates and statuses are copied into the model.

pub mod escape;
pub mod gather;
pub mod html;
pub mod site;
pub mod timeline;

use crate::deliver::Manifest;
use crate::spec::{Expiry, Spec};
use crate::store::{Event, KeyStatus, LiveKey};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Most events kept per key (newest first).
pub const EVENTS_PER_KEY: usize = 50;
/// Most commits kept per key file.
pub const COMMITS_PER_FILE: usize = 20;

/// Where a status shown for a key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowStatus {
    Active,
    /// Active in the store, but past its expiry (the store refuses it).
    Expired,
    Disabled,
    Revoked,
    /// In the spec, not (yet) in the store: the next apply creates it.
    Planned,
}

impl RowStatus {
    pub const ALL: [RowStatus; 5] = [
        RowStatus::Active,
        RowStatus::Expired,
        RowStatus::Disabled,
        RowStatus::Revoked,
        RowStatus::Planned,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Active => "active",
            RowStatus::Expired => "expired",
            RowStatus::Disabled => "disabled",
            RowStatus::Revoked => "revoked",
            RowStatus::Planned => "planned",
        }
    }
    pub fn parse(s: &str) -> Option<RowStatus> {
        RowStatus::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A spec file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defined {
    /// Relative to the key repository's root, with `/`.
    pub file: String,
    pub line: usize,
}

/// One generation of a key, from its delivery manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub generation: u32,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub previous_valid_until: Option<DateTime<Utc>>,
    pub commit: Option<String>,
    /// Recipient principal ids (never their public keys or fingerprints).
    pub recipients: Vec<String>,
}

/// One audit event about a key: who, what, when, which commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    pub at: DateTime<Utc>,
    pub who: String,
    pub action: String,
    pub commit: Option<String>,
}

/// One commit that changed a spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub id: String,
    pub at: DateTime<Utc>,
    pub author: String,
    pub summary: String,
}

/// A key as the web view shows it: the spec's view merged with the store's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub store: String,
    pub environment: String,
    pub name: String,
    pub key_id: Option<String>,
    pub owner: String,
    pub purpose: Option<String>,
    pub scopes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub status: RowStatus,
    /// Carries keyward's marker (false: made in a console, never touched).
    pub managed: bool,
    pub in_spec: bool,
    pub protected: bool,
    pub expires_at: Option<DateTime<Utc>>,
    /// `expires:` or `lifetime:` as the spec says it.
    pub expiry_rule: Option<String>,
    pub rotation_every: Option<String>,
    pub rotation_grace: Option<String>,
    pub rotation_due: Option<DateTime<Utc>>,
    pub issued_at: Option<DateTime<Utc>>,
    pub generation: Option<u32>,
    pub previous_valid_until: Option<DateTime<Utc>>,
    pub quota_per_day: Option<u64>,
    /// Principal ids who receive (spec) or hold (store) the secret.
    pub recipients: Vec<String>,
    /// When the store last saw the key used; None where the store does not record it.
    pub last_used: Option<DateTime<Utc>>,
    pub defined_at: Option<Defined>,
    pub generations: Vec<Generation>,
    pub events: Vec<KeyEvent>,
    pub commits: Vec<CommitInfo>,
}

impl KeyRow {
    /// The key's page, relative to the site root.
    pub fn page(&self) -> String {
        if self.managed || self.in_spec {
            format!("keys/{}/{}.html", seg(&self.store), seg(&self.name))
        } else {
            let id = self.key_id.as_deref().unwrap_or(&self.name);
            format!("unmanaged/{}/{}.html", seg(&self.store), seg(id))
        }
    }
}

/// What kind of principal a page is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PrincipalKind {
    Person,
    Team,
    Service,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Person => "person",
            PrincipalKind::Team => "team",
            PrincipalKind::Service => "service",
        }
    }
}

/// A person, team or service from people.yaml (never their public keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalView {
    pub id: String,
    pub kind: PrincipalKind,
    pub name: Option<String>,
    pub email: Option<String>,
    /// Teams: their members; people: the teams they are in.
    pub members: Vec<String>,
    pub teams: Vec<String>,
    /// Scopes they may grant (None: unbounded; teams and services: not applicable).
    pub may_grant: Option<Vec<String>>,
    pub defined_at: Option<Defined>,
}

impl PrincipalView {
    pub fn page(&self) -> String {
        format!("people/{}-{}.html", self.kind.as_str(), seg(&self.id))
    }
}

/// A step an admin has to do by hand in a vendor console (from `kind: console` stores).
/// Filled by `gather` once console stores exist; the overview lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleStep {
    pub store: String,
    pub key: String,
    /// What to do, e.g. `create`, `rotate`, `revoke`.
    pub action: String,
    /// The step's wording (no secret: a console step never carries one).
    pub detail: String,
}

/// A configured store and how listing it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreView {
    pub name: String,
    pub environment: String,
    /// `sqlite`, `http`, ...
    pub kind: String,
    /// Why the store could not be listed (its keys are then missing from the view).
    pub error: Option<String>,
    /// Whether the store records when a key was last used.
    pub knows_last_use: bool,
}

/// How the pages are served: a static site, or live by `keyward serve` at `/ui/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Static,
    Live,
}

/// Everything the web view shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub generated_at: DateTime<Utc>,
    /// The repository's name (its directory), or the served store's name.
    pub title: String,
    /// The commit the spec was read at, if known.
    pub commit: Option<String>,
    pub stores: Vec<StoreView>,
    /// Sorted by store, then name.
    pub keys: Vec<KeyRow>,
    pub principals: Vec<PrincipalView>,
    pub console_steps: Vec<ConsoleStep>,
    /// The spec's reminder window in days (keys due for rotation within it are listed).
    pub due_window_days: i64,
}

impl Report {
    pub fn principal(&self, id: &str) -> Option<&PrincipalView> {
        self.principals
            .iter()
            .find(|p| p.id == id && p.kind != PrincipalKind::Team)
    }
    /// Keys expiring (active, not yet expired) within `days` from `generated_at`.
    pub fn expiring_within(&self, days: i64) -> Vec<&KeyRow> {
        let now = self.generated_at;
        let until = now + Duration::days(days);
        let mut v: Vec<&KeyRow> = self
            .keys
            .iter()
            .filter(|k| k.status == RowStatus::Active)
            .filter(|k| k.expires_at.is_some_and(|e| e > now && e <= until))
            .collect();
        v.sort_by_key(|k| k.expires_at);
        v
    }
    /// Active keys whose scheduled rotation falls due within the reminder window (or is overdue).
    pub fn rotation_due(&self) -> Vec<&KeyRow> {
        let until = self.generated_at + Duration::days(self.due_window_days);
        let mut v: Vec<&KeyRow> = self
            .keys
            .iter()
            .filter(|k| k.status == RowStatus::Active)
            .filter(|k| k.rotation_due.is_some_and(|d| d <= until))
            .collect();
        v.sort_by_key(|k| k.rotation_due);
        v
    }
}

/// A file- and URL-safe path segment for any name: ASCII letters, digits, `-` and `_` stay,
/// every other byte becomes `~XX` (so `..`, `/` or `<` can never reach a path or markup).
pub fn seg(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes().take(120) {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('~');
    }
    out
}

// ------------------------------------------------------------------ filters and sorts

/// How the keys table is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    #[default]
    Name,
    Store,
    Owner,
    Status,
    Expires,
}

impl Sort {
    pub const ALL: [Sort; 5] = [
        Sort::Name,
        Sort::Store,
        Sort::Owner,
        Sort::Status,
        Sort::Expires,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Name => "name",
            Sort::Store => "store",
            Sort::Owner => "owner",
            Sort::Status => "status",
            Sort::Expires => "expires",
        }
    }
    pub fn parse(s: &str) -> Option<Sort> {
        Sort::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// The keys table's filters (all optional, all must match) and sort.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyQuery {
    pub store: Option<String>,
    pub owner: Option<String>,
    pub status: Option<RowStatus>,
    /// `area:level`; a key matches when one of its scopes is that scope.
    pub scope: Option<String>,
    /// `key=value`
    pub label: Option<(String, String)>,
    /// Keys that expire before the start of this day (UTC).
    pub expiring_before: Option<NaiveDate>,
    pub sort: Sort,
}

impl KeyQuery {
    /// Parse the query of a GET form (`store=..&owner=..`); unknown or empty values are
    /// ignored, so a hand-edited URL never errors.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> KeyQuery {
        let mut q = KeyQuery::default();
        for (k, v) in pairs {
            let v = v.trim();
            if v.is_empty() || v.len() > 200 {
                continue;
            }
            match k {
                "store" => q.store = Some(v.to_string()),
                "owner" => q.owner = Some(v.to_string()),
                "status" => q.status = RowStatus::parse(v),
                "scope" => q.scope = Some(v.to_string()),
                "label" => {
                    q.label = v
                        .split_once('=')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                }
                "expiring_before" => {
                    q.expiring_before = NaiveDate::parse_from_str(v, "%Y-%m-%d").ok()
                }
                "sort" => q.sort = Sort::parse(v).unwrap_or_default(),
                _ => {}
            }
        }
        q
    }

    pub fn is_filtered(&self) -> bool {
        KeyQuery {
            sort: Sort::Name,
            ..self.clone()
        } != KeyQuery::default()
    }

    pub fn matches(&self, k: &KeyRow) -> bool {
        let before = self
            .expiring_before
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc());
        self.store.as_ref().is_none_or(|s| *s == k.store)
            && self.owner.as_ref().is_none_or(|o| *o == k.owner)
            && self.status.is_none_or(|s| s == k.status)
            && self.scope.as_ref().is_none_or(|s| k.scopes.contains(s))
            && self
                .label
                .as_ref()
                .is_none_or(|(a, b)| k.labels.get(a) == Some(b))
            && before.is_none_or(|b| k.expires_at.is_some_and(|e| e < b))
    }

    /// The rows that match, in the asked order (ties by store, then name).
    pub fn apply<'a>(&self, keys: &'a [KeyRow]) -> Vec<&'a KeyRow> {
        let mut v: Vec<&KeyRow> = keys.iter().filter(|k| self.matches(k)).collect();
        let tie = |k: &KeyRow| (k.store.clone(), k.name.clone());
        match self.sort {
            Sort::Name => v.sort_by_key(|k| (k.name.clone(), k.store.clone())),
            Sort::Store => v.sort_by_key(|k| tie(k)),
            Sort::Owner => v.sort_by_key(|k| (k.owner.clone(), tie(k))),
            Sort::Status => v.sort_by_key(|k| (k.status, tie(k))),
            // Keys that never expire last.
            Sort::Expires => v.sort_by_key(|k| (k.expires_at.is_none(), k.expires_at, tie(k))),
        }
        v
    }
}

// ------------------------------------------------------------------ building the model

/// Everything `build` reads; gathered by `gather` (or built by hand in tests).
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub title: String,
    pub commit: Option<String>,
    /// The stores shown, in order, with their listing (or why it failed).
    pub stores: Vec<(StoreView, Vec<LiveKey>)>,
    /// Audit events per store, oldest first.
    pub events: BTreeMap<String, Vec<Event>>,
    pub manifests: Vec<Manifest>,
    /// Commits that changed each spec file (relative path), newest first.
    pub history: BTreeMap<String, Vec<CommitInfo>>,
    pub console_steps: Vec<ConsoleStep>,
    /// Per store that keeps usage: each used key's last valid use, by key id.
    pub last_used: BTreeMap<String, BTreeMap<String, DateTime<Utc>>>,
}

/// A spec location as a repository-relative path with `/`.
pub fn relative(root: &Path, file: &Path) -> String {
    let rel: PathBuf = file.strip_prefix(root).unwrap_or(file).to_path_buf();
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Build the model. `spec` is None when the view has no repository (a bare `keyward serve`).
pub fn build(spec: Option<&Spec>, inputs: Inputs, now: DateTime<Utc>) -> Report {
    let shown: BTreeSet<&str> = inputs.stores.iter().map(|(s, _)| s.name.as_str()).collect();
    let mut keys = Vec::new();
    for (store, live) in &inputs.stores {
        keys.extend(rows_for_store(spec, store, live, now));
    }
    // Keys of the spec in a shown store that the store does not hold yet.
    if let Some(spec) = spec {
        for d in spec
            .keys
            .iter()
            .filter(|d| shown.contains(d.store.as_str()))
        {
            let listed = inputs
                .stores
                .iter()
                .any(|(s, _)| s.name == d.store && s.error.is_none());
            if !keys
                .iter()
                .any(|k: &KeyRow| k.store == d.store && k.name == d.name && k.managed)
                && listed
                && d.state != crate::spec::DesiredState::Deleted
            {
                keys.push(planned_row(spec, d, now));
            }
        }
    }
    keys.sort_by(|a, b| (&a.store, &a.name, a.managed).cmp(&(&b.store, &b.name, b.managed)));
    for k in &mut keys {
        attach_history(k, &inputs);
        k.last_used = inputs
            .last_used
            .get(&k.store)
            .zip(k.key_id.as_ref())
            .and_then(|(m, id)| m.get(id))
            .copied();
    }
    Report {
        generated_at: now,
        title: inputs.title.clone(),
        commit: inputs.commit.clone(),
        stores: inputs.stores.iter().map(|(s, _)| s.clone()).collect(),
        keys,
        principals: spec.map(principals).unwrap_or_default(),
        console_steps: inputs.console_steps.clone(),
        due_window_days: spec
            .map(|s| s.policy.reminder_window().seconds / 86_400)
            .unwrap_or(30),
    }
}

/// The rows of one store: one per live key that is not a superseded duplicate.
fn rows_for_store(
    spec: Option<&Spec>,
    store: &StoreView,
    live: &[LiveKey],
    now: DateTime<Utc>,
) -> Vec<KeyRow> {
    let mut best: BTreeMap<(&str, bool, String), &LiveKey> = BTreeMap::new();
    for k in live {
        // Managed keys: one row per name (the newest that is not revoked wins); unmanaged
        // keys: one row per id.
        let slot = if k.is_managed() {
            String::new()
        } else {
            k.id.clone()
        };
        let e = best
            .entry((k.name.as_str(), k.is_managed(), slot))
            .or_insert(k);
        let rank = |x: &LiveKey| (x.status != KeyStatus::Revoked, x.created_at);
        if rank(k) > rank(e) {
            *e = k;
        }
    }
    best.into_values()
        .map(|k| {
            let desired = spec
                .and_then(|s| s.key(&store.name, &k.name))
                .filter(|_| k.is_managed());
            live_row(spec, store, k, desired, now)
        })
        .collect()
}

fn status_of(k: &LiveKey, now: DateTime<Utc>) -> RowStatus {
    match k.status {
        KeyStatus::Active if k.expires_at.is_some_and(|e| e <= now) => RowStatus::Expired,
        KeyStatus::Active => RowStatus::Active,
        KeyStatus::Disabled => RowStatus::Disabled,
        KeyStatus::Revoked => RowStatus::Revoked,
    }
}

fn expiry_rule(e: Expiry) -> String {
    match e {
        Expiry::At(t) => format!("expires: {}", t.format("%Y-%m-%d")),
        Expiry::Lifetime(s) => format!("lifetime: {s}"),
        Expiry::Never => "never expires".into(),
    }
}

fn live_row(
    spec: Option<&Spec>,
    store: &StoreView,
    k: &LiveKey,
    desired: Option<&crate::spec::DesiredKey>,
    now: DateTime<Utc>,
) -> KeyRow {
    let every = desired.and_then(|d| d.rotation.every);
    let recipients = match desired {
        Some(d) => d.recipients.iter().cloned().collect(),
        None => k.recipients.keys().cloned().collect(),
    };
    KeyRow {
        store: store.name.clone(),
        environment: k.environment.clone(),
        name: k.name.clone(),
        key_id: Some(k.id.clone()),
        owner: k.owner.clone(),
        purpose: k.purpose.clone(),
        scopes: k.scopes.clone(),
        labels: k.labels.clone(),
        status: status_of(k, now),
        managed: k.is_managed(),
        in_spec: desired.is_some(),
        protected: k.protected,
        expires_at: k.expires_at,
        expiry_rule: desired.map(|d| expiry_rule(d.expiry)),
        rotation_every: every.map(|s| s.to_string()),
        rotation_grace: desired.map(|d| d.rotation.grace.to_string()),
        rotation_due: every
            .map(|e| k.issued_at + e.to_chrono())
            .filter(|at| k.expires_at.is_none_or(|x| *at < x)),
        issued_at: Some(k.issued_at),
        generation: Some(k.generation),
        previous_valid_until: k.previous_valid_until.filter(|t| *t > now),
        quota_per_day: k.quota_per_day,
        recipients,
        last_used: None,
        defined_at: desired.and_then(|d| spec.map(|s| defined(s, &d.location))),
        generations: Vec::new(),
        events: Vec::new(),
        commits: Vec::new(),
    }
}

fn defined(spec: &Spec, loc: &crate::diag::Location) -> Defined {
    Defined {
        file: relative(&spec.root, &loc.file),
        line: loc.line,
    }
}

fn planned_row(spec: &Spec, d: &crate::spec::DesiredKey, now: DateTime<Utc>) -> KeyRow {
    KeyRow {
        store: d.store.clone(),
        environment: d.environment.clone(),
        name: d.name.clone(),
        key_id: None,
        owner: d.owner.clone(),
        purpose: d.purpose.clone(),
        scopes: d.scopes.iter().map(ToString::to_string).collect(),
        labels: d.labels.clone(),
        status: RowStatus::Planned,
        managed: true,
        in_spec: true,
        protected: d.protected,
        expires_at: match d.expiry {
            Expiry::At(t) => Some(t),
            Expiry::Lifetime(s) => Some(now + s.to_chrono()),
            Expiry::Never => None,
        },
        expiry_rule: Some(expiry_rule(d.expiry)),
        rotation_every: d.rotation.every.map(|s| s.to_string()),
        rotation_grace: Some(d.rotation.grace.to_string()),
        rotation_due: None,
        issued_at: None,
        generation: None,
        previous_valid_until: None,
        quota_per_day: d.quota.map(|q| q.per_day),
        recipients: d.recipients.iter().cloned().collect(),
        last_used: None,
        defined_at: Some(defined(spec, &d.location)),
        generations: Vec::new(),
        events: Vec::new(),
        commits: Vec::new(),
    }
}

/// Generations, events and commits of one key.
fn attach_history(k: &mut KeyRow, inputs: &Inputs) {
    if k.managed {
        let mut gens: Vec<Generation> = inputs
            .manifests
            .iter()
            .filter(|m| m.store == k.store && m.name == k.name)
            .map(|m| Generation {
                generation: m.generation,
                status: m.status.as_str().to_string(),
                created_at: m.created_at,
                expires_at: m.expires_at,
                previous_valid_until: m.previous_valid_until,
                commit: m.commit.clone(),
                recipients: m.recipients.iter().map(|r| r.id.clone()).collect(),
            })
            .collect();
        gens.sort_by_key(|g| std::cmp::Reverse((g.created_at, g.generation)));
        k.generations = gens;
    }
    let events = inputs
        .events
        .get(&k.store)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut mine: Vec<KeyEvent> = events
        .iter()
        .rev()
        .filter(|e| match (&e.key_id, &k.key_id) {
            (Some(a), Some(b)) if a == b => true,
            // Managed keys: every id the name had (replaces give a name new ids).
            _ => k.managed && e.key_name.as_deref() == Some(k.name.as_str()),
        })
        .take(EVENTS_PER_KEY)
        .map(|e| KeyEvent {
            at: e.at,
            who: e.who.clone(),
            action: e.action.clone(),
            commit: e.commit.clone(),
        })
        .collect();
    mine.sort_by_key(|e| std::cmp::Reverse(e.at));
    k.events = mine;
    if let Some(d) = &k.defined_at {
        k.commits = inputs.history.get(&d.file).cloned().unwrap_or_default();
    }
}

fn principals(spec: &Spec) -> Vec<PrincipalView> {
    let mut out: Vec<PrincipalView> = spec
        .principals
        .values()
        .map(|p| PrincipalView {
            id: p.id.clone(),
            kind: match p.kind {
                crate::spec::PrincipalKind::Person => PrincipalKind::Person,
                crate::spec::PrincipalKind::Service => PrincipalKind::Service,
            },
            name: p.name.clone(),
            email: p.email.clone(),
            members: Vec::new(),
            teams: spec
                .teams
                .values()
                .filter(|t| t.members.contains(&p.id))
                .map(|t| t.id.clone())
                .collect(),
            may_grant: p
                .may_grant
                .as_ref()
                .map(|g| g.iter().map(ToString::to_string).collect()),
            defined_at: p.location.as_ref().map(|l| defined(spec, l)),
        })
        .collect();
    out.extend(spec.teams.values().map(|t| PrincipalView {
        id: t.id.clone(),
        kind: PrincipalKind::Team,
        name: None,
        email: None,
        members: t.members.clone(),
        teams: Vec::new(),
        may_grant: None,
        defined_at: t.location.as_ref().map(|l| defined(spec, l)),
    }));
    out.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
    out
}

#[cfg(test)]
pub(crate) mod tests;
