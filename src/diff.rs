//! The diff: a pure function of (validated spec, observed live keys, now) to changes, each
//! with its reasons, the fields it touches and the escalations it carries.
//! Must not do I/O, read the clock or generate secrets: apply does those.

use crate::model::{KeyPatch, KeyStatus, LiveKey};
use crate::spec::{DesiredKey, DesiredState, Expiry, Scope, ScopeCatalogue, Spec};
use crate::unused::{LastUse, Seen};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What happens to one key. The order of the variants is the order of execution in a plan:
/// new secrets are delivered before anything is taken away.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Replace,
    Rotate,
    Update,
    Disable,
    Revoke,
    Delete,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Rotate => "↻",
            Action::Replace => "-/+",
            Action::Disable => "⏸",
            Action::Revoke => "-",
            Action::Delete => "✗",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Rotate => "rotate",
            Action::Replace => "replace",
            Action::Disable => "disable",
            Action::Revoke => "revoke",
            Action::Delete => "delete",
        }
    }
    pub const ALL: [Action; 7] = [
        Action::Create,
        Action::Replace,
        Action::Rotate,
        Action::Update,
        Action::Disable,
        Action::Revoke,
        Action::Delete,
    ];
}

/// One changed field, rendered as text (never a secret: specs hold none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
    /// This field cannot change in place and forces a replacement.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forces_replacement: bool,
}

impl FieldChange {
    /// A field that changes in place.
    pub fn in_place(field: &str, before: Option<String>, after: Option<String>) -> Self {
        FieldChange {
            field: field.into(),
            before,
            after,
            forces_replacement: false,
        }
    }

    /// A field that cannot change in place: the key is replaced.
    pub fn forcing(field: &str, before: &str, after: &str) -> Self {
        FieldChange {
            field: field.into(),
            before: Some(before.into()),
            after: Some(after.into()),
            forces_replacement: true,
        }
    }
}

/// A change that widens what a key can do or who holds it: called out for reviewers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Escalation {
    /// read -> write (or any higher level) on an area.
    LevelRaised {
        area: String,
        from: String,
        to: String,
    },
    /// An area the key could not reach before.
    NewArea { area: String },
    /// A key moves from a non-production to a production store.
    ToProduction { from: String, to: String },
    /// The key lives longer than before.
    LongerLifetime {
        from: Option<String>,
        to: Option<String>,
    },
    /// Someone new will hold the secret.
    NewRecipient { id: String },
}

impl std::fmt::Display for Escalation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Escalation::LevelRaised { area, from, to } => write!(f, "{area}: {from} -> {to}"),
            Escalation::NewArea { area } => write!(f, "new area {area}"),
            Escalation::ToProduction { from, to } => write!(f, "{from} -> {to} (production)"),
            Escalation::LongerLifetime { from, to } => write!(
                f,
                "longer lifetime: {} -> {}",
                from.as_deref().unwrap_or("never"),
                to.as_deref().unwrap_or("never")
            ),
            Escalation::NewRecipient { id } => write!(f, "new recipient {id}"),
        }
    }
}

/// One planned change to one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Change {
    pub action: Action,
    pub store: String,
    pub name: String,
    /// The live key acted on (update, rotate, replace's old key, disable, revoke, delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The live version seen when planning (optimistic concurrency at apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    pub reasons: Vec<String>,
    /// The fields that change, each with its value before and after.
    pub fields: Vec<FieldChange>,
    /// Number of fields shown nowhere because they do not change.
    pub unchanged_fields: usize,
    /// What this change widens (read -> write, a new area, to production, a longer
    /// lifetime, a new recipient); empty when nothing is widened.
    pub escalations: Vec<Escalation>,
    /// The change restores something edited outside keyward.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drift: bool,
    /// In-place patch to apply (update, and the metadata part of rotate/disable). Not part
    /// of a saved plan: apply recomputes it from the spec at the plan's revision.
    #[serde(skip)]
    #[schemars(skip)]
    pub patch: KeyPatch,
    /// Status to set in place (enable), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_status: Option<KeyStatus>,
    /// Generation the new secret gets (create, replace, rotate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_generation: Option<u32>,
    /// Recipients of the new secret (create, replace, rotate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliver_to: Vec<String>,
    /// Replace: until when the old key stays valid (plan time + the key's rotation grace),
    /// after which the next apply revokes it. None: revoked at once (`grace: 0d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_valid_until: Option<DateTime<Utc>>,
    /// Who the plan knows as the key's owner (desired, else live).
    pub owner: String,
    /// Environment of the store acted on.
    pub environment: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
    /// With `plan --base REV`: whether the change under review (base..revision) edits this
    /// key. None when no base was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub touched: Option<bool>,
    /// With `plan --base REV`: authors of the commits that edited this key's file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requested_by: Vec<String>,
    /// A rotation: how long the previous secret keeps working after the new one is issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<Grace>,
    /// A revoke, replace, disable or delete: when the key acted on was last used, so a
    /// reviewer sees whether something still depends on it (none when its store's usage
    /// was not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<LastUse>,
}

/// How long the previous secret of a rotated key keeps working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Grace {
    /// The key's `rotation.grace` (`7d`), counted from the moment apply rotates it.
    pub period: String,
    /// The end of the grace when applied at the plan's time: the previous secret stops
    /// working then (a later apply moves it by as much).
    pub previous_valid_until: DateTime<Utc>,
}

/// Something a reviewer should see that is not a change (a protected key kept, an
/// unmanaged name clash, a recipient who gets the secret at the next rotation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Note {
    /// The key's store; empty for a note about several keys (the message names them).
    pub store: String,
    /// The key's name; empty for a note about several keys.
    pub name: String,
    pub message: String,
}

impl Note {
    /// `store/name` of the key the note is about; None for a note about several keys.
    pub fn subject(&self) -> Option<String> {
        (!self.store.is_empty() || !self.name.is_empty())
            .then(|| format!("{}/{}", self.store, self.name))
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffResult {
    pub changes: Vec<Change>,
    pub notes: Vec<Note>,
    /// Keys that are expired or expire within the policy's reminder window and that this
    /// plan does not renew: shown as warnings.
    pub warnings: Vec<Note>,
    /// People (or services) who hold secrets or own keys in the stores but are no longer in
    /// people.yaml, with what the plan does about it.
    pub access_removed: Vec<AccessRemoved>,
}

/// A principal who left people.yaml: of the live keys they could read, how many this plan
/// gives a new secret, revokes, or leaves readable; and how many of the keys they own the
/// plan leaves without a new owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AccessRemoved {
    pub id: String,
    /// Keys they could read that this plan rotates or replaces (new secret they never get).
    pub rotated: usize,
    /// Keys they could read that this plan revokes or deletes.
    pub revoked: usize,
    /// Keys they could read that this plan neither rotates nor removes (a disabled key's
    /// rotation waits): they still hold a secret of each.
    #[serde(default)]
    pub kept: usize,
    /// Live keys they own that this plan replaces, with the owner the spec now names.
    #[serde(default)]
    pub reassigned: usize,
    /// Live keys they own that this plan neither gives a new owner (a replace) nor removes.
    pub need_owner: usize,
}

impl std::fmt::Display for AccessRemoved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "access removed for {}: {} key(s) they could read get a new secret",
            self.id, self.rotated
        )?;
        if self.revoked > 0 {
            write!(f, ", {} key(s) revoked", self.revoked)?;
        }
        if self.kept > 0 {
            write!(
                f,
                ", {} key(s) they can still read (not rotated by this plan)",
                self.kept
            )?;
        }
        if self.reassigned > 0 {
            write!(
                f,
                ", {} key(s) they owned move to a new owner",
                self.reassigned
            )?;
        }
        if self.need_owner > 0 {
            write!(f, ", {} key(s) they own need a new owner", self.need_owner)?;
        }
        Ok(())
    }
}

/// The newest active delivery keyward wrote for a key name (from the outbox manifests),
/// passed in as plain data: a desired key with such a delivery but no live key at all was
/// deleted outside keyward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredKey {
    pub key_id: String,
    pub generation: u32,
}

/// Deliveries by (store, key name).
pub type Delivered = BTreeMap<(String, String), DeliveredKey>;

/// Scopes of a desired key as the strings a store keeps.
pub fn scope_strings(scopes: &BTreeSet<Scope>) -> Vec<String> {
    scopes.iter().map(ToString::to_string).collect()
}

/// Expiry instant for a key issued at `anchor`.
pub fn expires_at(expiry: &Expiry, anchor: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match expiry {
        Expiry::At(t) => Some(*t),
        Expiry::Lifetime(span) => Some(anchor + span.to_chrono()),
        Expiry::Never => None,
    }
}

/// The lifetime string kept on a live key for relative expiry.
pub fn lifetime_string(expiry: &Expiry) -> Option<String> {
    match expiry {
        Expiry::Lifetime(span) => Some(span.to_string()),
        _ => None,
    }
}

/// Recipients of the secret as a store records them: principal id -> key fingerprint.
pub fn recipient_map(spec: &Spec, key: &DesiredKey) -> BTreeMap<String, String> {
    key.recipients
        .iter()
        .map(|id| {
            let fp = spec
                .principals
                .get(id)
                .map(|p| p.fingerprint())
                .unwrap_or_default();
            (id.clone(), fp)
        })
        .collect()
}

fn fmt_time(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

fn fmt_list<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> String {
    let v: Vec<String> = items
        .into_iter()
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect();
    format!("[{}]", v.join(", "))
}

fn fmt_labels(l: &BTreeMap<String, String>) -> String {
    let v: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", v.join(", "))
}

fn same_instant(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> bool {
    a.map(|t| t.timestamp()) == b.map(|t| t.timestamp())
}

/// Escalations between live and desired scopes.
fn scope_escalations(
    cat: &ScopeCatalogue,
    live: &[String],
    desired: &BTreeSet<Scope>,
) -> Vec<Escalation> {
    let live: BTreeMap<String, String> = live
        .iter()
        .filter_map(|s| Scope::parse(s))
        .map(|s| (s.area, s.level))
        .collect();
    let mut out = Vec::new();
    for s in desired {
        match live.get(&s.area) {
            None => out.push(Escalation::NewArea {
                area: s.area.clone(),
            }),
            Some(level) => {
                let (from, to) = (cat.level_rank(level), cat.level_rank(&s.level));
                if let (Some(f), Some(t)) = (from, to)
                    && t > f
                {
                    out.push(Escalation::LevelRaised {
                        area: s.area.clone(),
                        from: level.clone(),
                        to: s.level.clone(),
                    });
                }
            }
        }
    }
    out
}

fn longer(before: Option<DateTime<Utc>>, after: Option<DateTime<Utc>>) -> bool {
    match (before, after) {
        (Some(_), None) => true,
        (Some(b), Some(a)) => a.timestamp() > b.timestamp(),
        _ => false,
    }
}

struct Ctx<'a> {
    spec: &'a Spec,
    now: DateTime<Utc>,
    /// The usage the stores keep (last use per key).
    seen: &'a Seen,
    out: DiffResult,
    /// Each principal's fingerprint, computed once per diff (not once per key).
    fingerprints: BTreeMap<&'a str, String>,
    /// Recipients added to keys that are not rotated now -> those keys (store, name):
    /// one note per recipient, however many keys they were added to.
    pending: BTreeMap<String, Vec<(String, String)>>,
}

/// Compute the changes that turn `observed` (every key listed from each store, managed or
/// not) into `spec`. Stores missing from `observed` are treated as empty.
pub fn diff(
    spec: &Spec,
    observed: &BTreeMap<String, Vec<LiveKey>>,
    now: DateTime<Utc>,
) -> DiffResult {
    diff_with_deliveries(spec, observed, &Delivered::new(), now)
}

/// `diff`, also told what keyward has delivered (so a key deleted by hand in the store shows
/// as drift and its replacement continues the generation count).
pub fn diff_with_deliveries(
    spec: &Spec,
    observed: &BTreeMap<String, Vec<LiveKey>>,
    delivered: &Delivered,
    now: DateTime<Utc>,
) -> DiffResult {
    diff_seen(spec, observed, delivered, &Seen::default(), now)
}

/// `diff_with_deliveries`, also told the usage the stores keep: a revoke, replace, disable
/// or delete carries the key's last use, and with the policy's `unused_after` a key unused
/// that long is disabled (protected keys excepted; keys of a store that keeps no usage are
/// never proposed, and a note says so).
pub fn diff_seen(
    spec: &Spec,
    observed: &BTreeMap<String, Vec<LiveKey>>,
    delivered: &Delivered,
    seen: &Seen,
    now: DateTime<Utc>,
) -> DiffResult {
    let mut cx = Ctx::new(spec, seen, now);
    let seen = Observed::index(observed);
    // Creates that might pair with a revoke in another store (a store change = replace).
    let unmatched: Vec<&DesiredKey> = spec
        .keys
        .iter()
        .filter(|d| cx.desired(d, &seen, delivered))
        .collect();
    let removed: Vec<(&str, &LiveKey)> = removed_from_spec(spec, &seen.managed)
        .into_iter()
        .filter(|(store, l)| !cx.retire(l, store))
        .collect();
    let taken = cx.pair_replacements(unmatched, &removed);
    cx.revoke_removed(removed, &taken);
    cx.finish(&seen, now)
}

/// What the stores list, indexed: managed and unmanaged live keys per (store, name).
struct Observed<'o> {
    all: &'o BTreeMap<String, Vec<LiveKey>>,
    managed: BTreeMap<(&'o str, &'o str), Vec<&'o LiveKey>>,
    unmanaged: BTreeMap<(&'o str, &'o str), Vec<&'o LiveKey>>,
}

impl<'o> Observed<'o> {
    fn index(all: &'o BTreeMap<String, Vec<LiveKey>>) -> Self {
        let mut managed: BTreeMap<(&str, &str), Vec<&LiveKey>> = BTreeMap::new();
        let mut unmanaged: BTreeMap<(&str, &str), Vec<&LiveKey>> = BTreeMap::new();
        for (store, keys) in all {
            for k in keys {
                let at = (store.as_str(), k.name.as_str());
                if k.is_managed() {
                    managed.entry(at).or_default().push(k);
                } else {
                    unmanaged.entry(at).or_default().push(k);
                }
            }
        }
        Observed {
            all,
            managed,
            unmanaged,
        }
    }

    /// The delivery keyward made for `d` when the store no longer lists that key at all.
    fn gone<'d>(&self, d: &DesiredKey, delivered: &'d Delivered) -> Option<&'d DeliveredKey> {
        delivered
            .get(&(d.store.clone(), d.name.clone()))
            .filter(|dk| {
                !self
                    .all
                    .get(&d.store)
                    .is_some_and(|ks| ks.iter().any(|k| k.id == dk.key_id))
            })
    }
}

/// Live managed keys (not revoked) whose (store, name) the spec no longer has, in the
/// order of the index.
fn removed_from_spec<'o>(
    spec: &Spec,
    managed: &BTreeMap<(&'o str, &'o str), Vec<&'o LiveKey>>,
) -> Vec<(&'o str, &'o LiveKey)> {
    let wanted: BTreeSet<(&str, &str)> = spec
        .keys
        .iter()
        .map(|d| (d.store.as_str(), d.name.as_str()))
        .collect();
    managed
        .iter()
        .filter(|(at, _)| !wanted.contains(*at))
        .flat_map(|((store, _), lives)| {
            lives
                .iter()
                .filter(|l| l.status != KeyStatus::Revoked)
                .map(move |l| (*store, *l))
        })
        .collect()
}

/// Principals named on live managed keys (as recipients or owners) that people.yaml no
/// longer has, and what the planned changes do about their access.
fn access_removed(
    spec: &Spec,
    managed: &BTreeMap<(&str, &str), Vec<&LiveKey>>,
    changes: &[Change],
) -> Vec<AccessRemoved> {
    let mut by_id: BTreeMap<String, AccessRemoved> = BTreeMap::new();
    let entry = |m: &mut BTreeMap<String, AccessRemoved>, id: &str| {
        m.entry(id.to_string())
            .or_insert_with(|| AccessRemoved {
                id: id.to_string(),
                rotated: 0,
                revoked: 0,
                kept: 0,
                reassigned: 0,
                need_owner: 0,
            })
            .clone()
    };
    for ((store, _), lives) in managed {
        for l in lives.iter().filter(|l| l.status != KeyStatus::Revoked) {
            let change = changes
                .iter()
                .find(|c| c.store == *store && c.key_id.as_deref() == Some(l.id.as_str()))
                .map(|c| c.action);
            for id in l
                .recipients
                .keys()
                .filter(|id| !spec.principals.contains_key(*id))
            {
                let mut a = entry(&mut by_id, id);
                match change {
                    Some(Action::Rotate | Action::Replace) => a.rotated += 1,
                    Some(Action::Revoke | Action::Delete) => a.revoked += 1,
                    _ => a.kept += 1,
                }
                by_id.insert(id.clone(), a);
            }
            if !spec.principals.contains_key(&l.owner) {
                let mut a = entry(&mut by_id, &l.owner);
                match change {
                    Some(Action::Replace) => a.reassigned += 1,
                    Some(Action::Revoke | Action::Delete) => {}
                    _ => a.need_owner += 1,
                }
                by_id.insert(l.owner.clone(), a);
            }
        }
    }
    by_id.into_values().collect()
}

/// One note per recipient added to keys that are not rotated now: on the key when it is
/// one, else on no key (empty store and name) naming them all.
fn pending_notes(pending: BTreeMap<String, Vec<(String, String)>>) -> Vec<Note> {
    const HOW: &str = "bump rotation.generation or set on_recipient_added: rotate to deliver now";
    pending
        .into_iter()
        .map(|(id, keys)| match keys.as_slice() {
            [(store, name)] => Note {
                store: store.clone(),
                name: name.clone(),
                message: format!("{id} will receive the secret at the next rotation ({HOW})"),
            },
            _ => Note {
                store: String::new(),
                name: String::new(),
                message: format!(
                    "{id} will receive the secrets of {} keys at their next rotation: {} ({HOW})",
                    keys.len(),
                    keys.iter()
                        .map(|(s, n)| format!("{s}/{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        })
        .collect()
}

/// Expired and soon-expiring keys (within the policy's reminder window) that the planned
/// changes do not renew.
fn expiry_warnings(
    spec: &Spec,
    observed: &BTreeMap<String, Vec<LiveKey>>,
    changes: &[Change],
    now: DateTime<Utc>,
) -> Vec<Note> {
    use crate::lifecycle::{DueKind, due};
    let renewed = |store: &str, name: &str| {
        changes.iter().any(|c| {
            c.store == store
                && c.name == name
                && match c.action {
                    Action::Rotate => spec
                        .key(store, name)
                        .is_some_and(|d| matches!(d.expiry, Expiry::Lifetime(_))),
                    Action::Update => c.patch.expires_at.is_some(),
                    Action::Disable => false,
                    _ => true,
                }
        })
    };
    due(spec, observed, now, spec.policy.reminder_window())
        .into_iter()
        .filter(|i| i.kind != DueKind::RotationDue && !renewed(&i.store, &i.name))
        .map(|i| {
            let date = i.at.format("%Y-%m-%d");
            let when = if i.kind == DueKind::Expired {
                format!("expired on {date}; the store refuses it")
            } else {
                format!("expires in {} day(s), on {date}", i.days_left)
            };
            Note {
                store: i.store,
                name: i.name,
                message: format!("{when} (owner {}): {}", i.owner, i.todo),
            }
        })
        .collect()
}

/// With `unused_after` in force on a store's keys: a note for each store read that keeps
/// no usage, since none of its keys can be seen unused (and so none is proposed).
fn unused_blind_notes(spec: &Spec, seen: &Seen) -> Vec<Note> {
    crate::unused::blind(spec, seen)
        .into_iter()
        .map(|(store, n)| Note {
            store: String::new(),
            name: String::new(),
            message: format!(
                "store `{store}` keeps no usage: unused_after cannot see whether its {n} key(s) are used, so none is proposed for disabling"
            ),
        })
        .collect()
}

/// The label a replace puts on the old key it leaves valid through the grace: the id of the
/// key that replaces it.
pub const REPLACED_BY: &str = "keyward.replaced-by";

/// A live key whose state differs from the one keyward recorded when it last wrote it was
/// changed outside keyward.
pub fn is_drifted(l: &LiveKey) -> bool {
    l.applied_digest
        .as_ref()
        .is_some_and(|d| *d != l.state_digest())
}

/// What changed outside keyward on a drifted key that the plan takes away (no desired key
/// to compare with): the status, when the recorded state differs from the live one only
/// there; otherwise that it was edited.
fn drift_reason(l: &LiveKey) -> String {
    let recorded = [KeyStatus::Active, KeyStatus::Disabled, KeyStatus::Revoked]
        .into_iter()
        .find(|s| {
            let k = LiveKey {
                status: *s,
                ..l.clone()
            };
            l.applied_digest.as_deref() == Some(k.state_digest().as_str())
        });
    match recorded {
        Some(was) => format!(
            "drift: status changed outside keyward ({} -> {})",
            was.as_str(),
            l.status.as_str()
        ),
        None => format!(
            "drift: edited outside keyward since keyward left it (status now {})",
            l.status.as_str()
        ),
    }
}

/// The unmanaged live key `d` adopts: the one whose id its `adopt:` names, made in a
/// console (no other tool manages it) and not revoked.
fn adoptable<'o>(d: &DesiredKey, there: &[&'o LiveKey]) -> Option<&'o LiveKey> {
    let id = d.adopt.as_deref()?;
    there
        .iter()
        .copied()
        .find(|l| l.id == id && l.managed_by.is_none() && l.status != KeyStatus::Revoked)
}

/// The note for a wanted key whose name an unmanaged live key already has.
fn unmanaged_clash(d: &DesiredKey, there: &[&LiveKey]) -> String {
    let ids: Vec<&str> = there.iter().map(|l| l.id.as_str()).collect();
    match &d.adopt {
        Some(id) => format!(
            "adopt: {id} is not among the unmanaged keys named `{}` here ({}), or another tool \
             manages it or it is revoked; nothing is adopted or created",
            d.name,
            ids.join(", ")
        ),
        None => format!(
            "a key with this name exists in the store but is not managed by keyward ({}); \
             adopt it with `keyward import` (or `adopt: ID` on this entry) or choose another name",
            ids.join(", ")
        ),
    }
}

/// Among live managed keys of one name, the one that represents the desired key: the
/// newest non-revoked one (else the newest revoked one). The rest are duplicates.
fn pick_current<'a>(
    lives: &[&'a LiveKey],
    _d: &DesiredKey,
) -> (Option<&'a LiveKey>, Vec<&'a LiveKey>) {
    let mut sorted: Vec<&LiveKey> = lives.to_vec();
    sorted.sort_by(|a, b| {
        let ra = a.status == KeyStatus::Revoked;
        let rb = b.status == KeyStatus::Revoked;
        (ra, std::cmp::Reverse(a.created_at), &a.id).cmp(&(
            rb,
            std::cmp::Reverse(b.created_at),
            &b.id,
        ))
    });
    let mut it = sorted.into_iter();
    let current = it.next();
    let others: Vec<&LiveKey> = it.filter(|k| k.status != KeyStatus::Revoked).collect();
    (current, others)
}

impl<'a> Ctx<'a> {
    fn new(spec: &'a Spec, seen: &'a Seen, now: DateTime<Utc>) -> Self {
        Ctx {
            spec,
            now,
            seen,
            out: DiffResult::default(),
            fingerprints: spec
                .principals
                .iter()
                .map(|(id, p)| (id.as_str(), p.fingerprint()))
                .collect(),
            pending: BTreeMap::new(),
        }
    }

    /// One desired key against its live keys: duplicates are revoked, then its state is
    /// applied. True when no live key of its name is here to act on (a create, or one half
    /// of a move to another store).
    fn desired(&mut self, d: &DesiredKey, obs: &Observed, delivered: &Delivered) -> bool {
        let empty = Vec::new();
        let lives = obs
            .managed
            .get(&(d.store.as_str(), d.name.as_str()))
            .unwrap_or(&empty);
        let (current, others) = pick_current(lives, d);
        // Duplicates left by an interrupted replace: revoke all but the current one.
        for o in others {
            if o.status != KeyStatus::Revoked && !self.retire(o, &d.store) {
                let of = current.map(|c| c.id.as_str()).unwrap_or("-");
                let why = format!("duplicate of the current key {of}");
                self.push_remove(o, &d.store, Action::Revoke, why);
            }
        }
        match d.state {
            DesiredState::Deleted => self.tombstone(d, lives),
            DesiredState::Revoked => self.revoke_wanted(d, current),
            DesiredState::Active | DesiredState::Disabled => match current {
                Some(l) if l.status != KeyStatus::Revoked => self.compare(d, l),
                revoked => return self.absent(d, revoked, obs, delivered),
            },
        }
        false
    }

    /// `state: deleted`: every live key of the name goes, unless the key is protected.
    fn tombstone(&mut self, d: &DesiredKey, lives: &[&LiveKey]) {
        if d.protected {
            if !lives.is_empty() {
                self.note(
                    d,
                    "protected: true; the tombstone (state: deleted) is ignored",
                );
            }
            return;
        }
        for l in lives {
            self.push_remove(l, &d.store, Action::Delete, "state: deleted".into());
        }
    }

    /// `state: revoked`: the current key is revoked, unless the key is protected.
    fn revoke_wanted(&mut self, d: &DesiredKey, current: Option<&LiveKey>) {
        if let Some(l) = current.filter(|l| l.status != KeyStatus::Revoked) {
            if d.protected {
                self.note(d, "protected: true; state: revoked is not applied");
            } else {
                self.push_remove(l, &d.store, Action::Revoke, "state: revoked".into());
            }
        }
    }

    /// A wanted key with no live, non-revoked key: a name clash, drift (deleted or revoked
    /// outside keyward), a successor of a revoked key, or (true) still unmatched.
    fn absent(
        &mut self,
        d: &DesiredKey,
        revoked: Option<&LiveKey>,
        obs: &Observed,
        delivered: &Delivered,
    ) -> bool {
        if let Some(there) = obs.unmanaged.get(&(d.store.as_str(), d.name.as_str())) {
            match adoptable(d, there) {
                Some(l) => self.adopt(d, l),
                None => self.note(d, &unmanaged_clash(d, there)),
            }
            return false;
        }
        if let Some(id) = &d.adopt {
            let why = format!(
                "adopt: {id} is not an unmanaged key named `{}` in this store (adopted already, \
                 or gone); keyward makes a new key instead",
                d.name
            );
            self.note(d, &why);
        }
        match (revoked, obs.gone(d, delivered)) {
            (_, Some(dk)) => {
                let after = revoked.map_or(0, |r| r.generation).max(dk.generation);
                let why = format!(
                    "drift: deleted outside keyward (key id {}); a new key replaces it",
                    dk.key_id
                );
                self.push_create(d, None, why);
                if let Some(c) = self.out.changes.last_mut() {
                    c.drift = true;
                    c.new_generation = Some(after + 1);
                }
            }
            (None, None) => return true,
            (Some(r), _) if is_drifted(r) => {
                let why = "drift: revoked outside keyward; a new key replaces it";
                self.push_create(d, revoked, why.into());
                if let Some(c) = self.out.changes.last_mut() {
                    c.drift = true;
                }
            }
            (Some(_), _) => self.push_create(d, revoked, "the previous key was revoked".into()),
        }
        false
    }

    /// `adopt: ID` names this unmanaged live key: keyward takes it over (marks it managed,
    /// recording the state it leaves it in) with the in-place edits the spec asks for, in
    /// one update. It keeps its secret. An owner or environment the spec changes is left to
    /// the next plan (a replace), as for any managed key.
    fn adopt(&mut self, d: &DesiredKey, l: &LiveKey) {
        let at = self.out.changes.len();
        if self.forcing_changes(d, l).is_empty() {
            self.compare(d, l);
        }
        let why = format!(
            "adopt: the unmanaged key {} becomes managed by keyward (it keeps its secret)",
            l.id
        );
        let field = FieldChange::in_place(
            "managed_by",
            l.managed_by.clone(),
            Some(crate::model::MANAGED_BY.into()),
        );
        let Some(c) = self.out.changes.get_mut(at) else {
            self.out.changes.push(Change {
                key_id: Some(l.id.clone()),
                version: Some(l.version),
                reasons: vec![why],
                unchanged_fields: COMPARED_FIELDS,
                fields: vec![field],
                patch: KeyPatch {
                    managed_by: Some(Some(crate::model::MANAGED_BY.into())),
                    ..KeyPatch::default()
                },
                ..Change::of_desired(Action::Update, d)
            });
            return;
        };
        c.reasons.retain(|r| r != "bookkeeping");
        c.reasons.insert(0, why);
        c.fields.insert(0, field);
        c.unchanged_fields = c.unchanged_fields.saturating_sub(1);
        c.patch.managed_by = Some(Some(crate::model::MANAGED_BY.into()));
    }

    /// Pairs each unmatched wanted key with a removed key of the same name in another store
    /// (a move: replace), else creates it. Returns which of `removed` were taken.
    fn pair_replacements(
        &mut self,
        unmatched: Vec<&DesiredKey>,
        removed: &[(&str, &LiveKey)],
    ) -> Vec<bool> {
        // Pair by name through an index (first candidate in `removed` order wins, as a scan
        // would pick): O(n) overall instead of a scan of `removed` per unmatched key.
        let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, (_, l)) in removed.iter().enumerate() {
            by_name.entry(l.name.as_str()).or_default().push(i);
        }
        let mut taken = vec![false; removed.len()];
        for d in unmatched {
            let pair = by_name.get(d.name.as_str()).and_then(|cands| {
                cands.iter().copied().find(|&i| {
                    let (s, l) = removed[i];
                    !taken[i] && s != d.store && !l.protected
                })
            });
            let Some(i) = pair else {
                self.push_create(d, None, "new key".into());
                continue;
            };
            taken[i] = true;
            let (old_store, old) = removed[i];
            let moved = FieldChange::forcing("store", old_store, &d.store);
            self.push_replace(d, old, old_store, vec![moved]);
        }
        taken
    }

    /// Removed keys that no move took: revoked, or kept with a note when protected.
    fn revoke_removed(&mut self, removed: Vec<(&str, &LiveKey)>, taken: &[bool]) {
        for ((store, l), _) in removed.into_iter().zip(taken).filter(|(_, t)| !**t) {
            if l.protected {
                self.out.notes.push(Note {
                    store: store.to_string(),
                    name: l.name.clone(),
                    message: "removed from the spec but protected: true; kept as is".into(),
                });
            } else {
                self.push_remove(l, store, Action::Revoke, "removed from spec".into());
            }
        }
    }

    /// The result with its warnings and removed access, in a stable order.
    fn finish(self, obs: &Observed, now: DateTime<Utc>) -> DiffResult {
        let spec = self.spec;
        let mut out = self.out;
        out.notes.extend(pending_notes(self.pending));
        out.notes.extend(unused_blind_notes(spec, self.seen));
        for c in &mut out.changes {
            let takes_away = matches!(
                c.action,
                Action::Revoke | Action::Replace | Action::Disable | Action::Delete
            );
            if let (true, Some(id)) = (takes_away, &c.key_id) {
                c.last_used = self.seen.last_use(&c.store, id);
            }
        }
        out.warnings = expiry_warnings(spec, obs.all, &out.changes, now);
        out.access_removed = access_removed(spec, &obs.managed, &out.changes);
        out.changes
            .sort_by(|a, b| (&a.store, a.action, &a.name).cmp(&(&b.store, b.action, &b.name)));
        out.notes
            .sort_by(|a, b| (&a.store, &a.name, &a.message).cmp(&(&b.store, &b.name, &b.message)));
        out
    }

    /// A key a replace left valid through its grace (labelled `REPLACED_BY`): a note while
    /// the grace lasts, a revoke once it is over. False for any other key.
    fn retire(&mut self, l: &LiveKey, store: &str) -> bool {
        let Some(by) = l.labels.get(REPLACED_BY) else {
            return false;
        };
        match l.expires_at.filter(|t| *t > self.now) {
            Some(until) => self.out.notes.push(Note {
                store: store.to_string(),
                name: l.name.clone(),
                message: format!(
                    "the old key {} (replaced by {by}) stays valid until {}; an apply after that revokes it",
                    l.id,
                    until.format("%Y-%m-%d %H:%M UTC")
                ),
            }),
            None => self.push_remove(
                l,
                store,
                Action::Revoke,
                format!("grace over: replaced by {by}"),
            ),
        }
        true
    }

    fn note(&mut self, d: &DesiredKey, msg: &str) {
        self.out.notes.push(Note {
            store: d.store.clone(),
            name: d.name.clone(),
            message: msg.to_string(),
        });
    }

    /// For a console store: why the old value of a rotated or replaced key stops working at
    /// once (the checklist removes it in the console right after the new value is
    /// delivered), in the vendor preset's words. None for every other store.
    fn stops_at_once(&self, store: &str) -> Option<&'static str> {
        Some(self.console_preset(store)?.old_value.as_str())
    }

    /// The vendor preset of a console store (data embedded in the binary; no I/O), None
    /// for every other store.
    fn console_preset(&self, store: &str) -> Option<&'static crate::console::preset::Preset> {
        let crate::spec::StoreKind::Console(c) = &self.spec.stores.get(store)?.kind else {
            return None;
        };
        let vendor = crate::console::preset::Vendor::parse(&c.vendor)?;
        Some(crate::console::preset::preset(vendor))
    }

    /// The fields that cannot change in place, any of which forces a replace: owner and
    /// environment everywhere, and in a console store the console-side fields its preset
    /// does not list `editable:` (OpenAthens: the expiry; ALM: the scopes and the expiry).
    fn forcing_changes(&self, d: &DesiredKey, l: &LiveKey) -> Vec<FieldChange> {
        let mut forcing = forcing_changes(d, l);
        let Some(p) = self.console_preset(&d.store) else {
            return forcing;
        };
        let scopes = scope_strings(&d.scopes);
        if scopes != l.scopes && p.replaces_for("scopes").is_some() {
            let (before, after) = (fmt_list(&l.scopes), fmt_list(&scopes));
            forcing.push(FieldChange::forcing("scopes", &before, &after));
        }
        let want = expires_at(&d.expiry, l.issued_at);
        if !same_instant(want, l.expires_at) && p.replaces_for("expires").is_some() {
            let show = |t| fmt_time(t).unwrap_or_else(|| "never".into());
            let (before, after) = (show(l.expires_at), show(want));
            forcing.push(FieldChange::forcing("expires", &before, &after));
        }
        forcing
    }

    fn environment_of(&self, store: &str) -> String {
        self.spec
            .stores
            .get(store)
            .map(|s| s.environment.clone())
            .unwrap_or_default()
    }

    /// Fields a new key shows in a plan.
    fn creation_fields(&self, d: &DesiredKey) -> Vec<FieldChange> {
        let add = |field: &str, v: String| FieldChange::in_place(field, None, Some(v));
        let mut f = vec![
            add("owner", d.owner.clone()),
            add("environment", d.environment.clone()),
            add("scopes", fmt_list(scope_strings(&d.scopes))),
            add(
                "expires",
                match d.expiry {
                    Expiry::At(t) => fmt_time(Some(t)).unwrap_or_default(),
                    Expiry::Lifetime(s) => format!("{s} after creation"),
                    Expiry::Never => "never".into(),
                },
            ),
            add("recipients", fmt_list(&d.recipients)),
        ];
        if let Some(p) = &d.purpose {
            f.push(add("purpose", p.clone()));
        }
        if !d.labels.is_empty() {
            f.push(add("labels", fmt_labels(&d.labels)));
        }
        if let Some(q) = d.quota {
            f.push(add("quota", format!("{}/day", q.per_day)));
        }
        if d.state == DesiredState::Disabled {
            f.push(add("status", "disabled".into()));
        }
        if d.protected {
            f.push(add("protected", "true".into()));
        }
        if let Some(every) = d.rotation.every {
            f.push(add(
                "rotation",
                format!("every {every}, grace {}", d.rotation.grace),
            ));
        }
        f
    }

    fn push_create(&mut self, d: &DesiredKey, previous: Option<&LiveKey>, reason: String) {
        let fields = self.creation_fields(d);
        self.out.changes.push(Change {
            reasons: vec![reason],
            fields,
            new_generation: Some(previous.map(|p| p.generation + 1).unwrap_or(1)),
            deliver_to: d.recipients.iter().cloned().collect(),
            ..Change::of_desired(Action::Create, d)
        });
    }

    fn push_replace(
        &mut self,
        d: &DesiredKey,
        old: &LiveKey,
        old_store: &str,
        mut forcing: Vec<FieldChange>,
    ) {
        let mut escalations = scope_escalations(&self.spec.catalogue, &old.scopes, &d.scopes);
        let old_env = old.environment.clone();
        if d.environment == "production" && old_env != "production" {
            escalations.push(Escalation::ToProduction {
                from: old_env,
                to: d.environment.clone(),
            });
        }
        for r in &d.recipients {
            if !old.recipients.contains_key(r) {
                escalations.push(Escalation::NewRecipient { id: r.clone() });
            }
        }
        let console = self.console_preset(&d.store);
        let mut reasons = Vec::new();
        for f in &forcing {
            let (before, after) = (f.before.as_deref(), f.after.as_deref());
            let (before, after) = (before.unwrap_or("-"), after.unwrap_or("-"));
            reasons.push(format!("{} changed: {before} -> {after}", f.field));
            if let Some(why) = console.and_then(|p| p.replaces_for(&f.field)) {
                reasons.push(why);
            }
            let want = expires_at(&d.expiry, old.issued_at);
            if f.field == "expires" && longer(old.expires_at, want) {
                escalations.push(Escalation::LongerLifetime {
                    from: fmt_time(old.expires_at),
                    to: fmt_time(want),
                });
            }
        }
        // The old key lives in another store when the store changed: remember where.
        let grace = d.rotation.grace;
        let at_once = self.stops_at_once(old_store);
        let old_valid_until =
            (grace.seconds > 0 && at_once.is_none()).then(|| self.now + grace.to_chrono());
        reasons.push(match (old_valid_until, at_once) {
            (Some(t), _) => format!(
                "the old key {} stays valid until {} (grace {grace}), then an apply revokes it",
                old.id,
                t.format("%Y-%m-%d %H:%M UTC")
            ),
            (None, Some(why)) => {
                format!("the old value of {} stops working at once: {why}", old.id)
            }
            (None, None) => format!("the old key {} is revoked at once (grace 0)", old.id),
        });
        if old_store != d.store {
            reasons.push(format!("the old key is in {old_store}"));
        }
        let mut fields = self.creation_fields(d);
        fields.retain(|f| !forcing.iter().any(|x| x.field == f.field));
        forcing.extend(fields);
        self.out.changes.push(Change {
            key_id: Some(old.id.clone()),
            version: Some(old.version),
            reasons,
            fields: forcing,
            escalations,
            new_generation: Some(old.generation + 1),
            deliver_to: d.recipients.iter().cloned().collect(),
            old_valid_until,
            ..Change::of_desired(Action::Replace, d)
        });
    }

    fn push_remove(&mut self, l: &LiveKey, store: &str, action: Action, reason: String) {
        let status_after = match action {
            Action::Delete => None,
            Action::Revoke => Some("revoked".to_string()),
            _ => Some(l.status.as_str().to_string()),
        };
        let mut reasons = vec![reason];
        let drift = is_drifted(l);
        if drift {
            reasons.insert(0, drift_reason(l));
        }
        let before = Some(l.status.as_str().into());
        self.out.changes.push(Change {
            key_id: Some(l.id.clone()),
            version: Some(l.version),
            reasons,
            fields: vec![FieldChange::in_place("status", before, status_after)],
            drift,
            protected: l.protected,
            ..Change::bare(action, store, &l.name, &l.owner, self.environment_of(store))
        });
    }

    /// Compare a desired key with its live, non-revoked counterpart; a key unused for the
    /// policy's `unused_after` is compared as if the spec said `state: disabled`.
    fn compare(&mut self, d: &DesiredKey, l: &LiveKey) {
        let Some(days) = self.idle_days(d, l) else {
            return self.compare_as(d, l);
        };
        let held = DesiredKey {
            state: DesiredState::Disabled,
            ..d.clone()
        };
        let at = self.out.changes.len();
        self.compare_as(&held, l);
        let due = format!("due: unused for {days} days");
        match self.out.changes.get_mut(at) {
            Some(c) if c.action == Action::Disable => {
                for r in c.reasons.iter_mut().filter(|r| *r == "state: disabled") {
                    r.clone_from(&due);
                }
            }
            _ => {
                let why = format!(
                    "disabled and {}: kept disabled (unused_after: {}d); to use it again, \
                     set `unused_after: never` (or a longer span) on the key",
                    &due[5..],
                    self.spec.policy.unused_days(d).unwrap_or_default()
                );
                self.note(d, &why);
            }
        }
    }

    /// Whole days `l` has gone unused when that is at least the policy's `unused_after`
    /// (None: not due, protected, not active in the spec, or its store keeps no usage).
    fn idle_days(&self, d: &DesiredKey, l: &LiveKey) -> Option<i64> {
        let window = self.spec.policy.unused_days(d)?;
        if d.state != DesiredState::Active || d.protected || l.protected {
            return None;
        }
        if !self.forcing_changes(d, l).is_empty() {
            return None;
        }
        let days = self.seen.days_unused(&d.store, l, self.now)?;
        (days >= window).then_some(days)
    }

    fn compare_as(&mut self, d: &DesiredKey, l: &LiveKey) {
        let forcing = self.forcing_changes(d, l);
        if !forcing.is_empty() {
            self.push_replace(d, l, &d.store.clone(), forcing);
            return;
        }
        let mut e = Edits::default();
        e.content(&self.spec.catalogue, d, l);
        e.limits(d, l);
        let (mut action, set_status) = e.status(d, l);
        let want = self.want_recipients(d);
        let mut rotate = self.rotate_reasons(d, l, &want, &mut e.escalations);
        if set_status == Some(KeyStatus::Active)
            && let Some(why) = self
                .console_preset(&d.store)
                .and_then(|p| p.enable_regenerates())
        {
            rotate.push(why);
        }
        if !rotate.is_empty() {
            if action == Action::Disable {
                let why = format!("rotation deferred while disabled: {}", rotate.join("; "));
                self.note(d, &why);
            } else {
                action = Action::Rotate;
            }
        }
        if action == Action::Rotate {
            e.rotation(l, &want, rotate);
        }
        if e.fields.is_empty() && e.patch.is_empty() {
            return;
        }
        self.push_update(d, l, action, set_status, e, want);
    }

    /// Each recipient the key should have, with the fingerprint of their keys now.
    fn want_recipients(&self, d: &DesiredKey) -> BTreeMap<String, String> {
        d.recipients
            .iter()
            .map(|id| {
                let fp = self.fingerprints.get(id.as_str());
                (id.clone(), fp.cloned().unwrap_or_default())
            })
            .collect()
    }

    /// Why the key's secret must be rotated now (empty: it need not). A recipient added
    /// without `on_recipient_added: rotate` is noted rather than rotated for.
    fn rotate_reasons(
        &mut self,
        d: &DesiredKey,
        l: &LiveKey,
        want: &BTreeMap<String, String>,
        escalations: &mut Vec<Escalation>,
    ) -> Vec<String> {
        let mut rotate = Vec::new();
        // A key keyward did not create (imported from a console) records spec generation 0;
        // generation 1 is every key's baseline, so only a bump past it rotates.
        if d.rotation.generation > l.spec_generation.max(1) {
            rotate.push(format!(
                "generation {} -> {}",
                l.spec_generation, d.rotation.generation
            ));
        }
        if let Some(every) = d.rotation.every
            && self.now >= l.issued_at + every.to_chrono()
        {
            rotate.push(format!(
                "due: rotate every {every} (issued {})",
                l.issued_at.format("%Y-%m-%d")
            ));
        }
        for (id, fp) in &l.recipients {
            match want.get(id) {
                None => rotate.push(format!("recipient removed: {id} holds the current secret")),
                Some(new_fp) if new_fp != fp => rotate.push(format!("recipient key changed: {id}")),
                Some(_) => {}
            }
        }
        let added: Vec<&str> = want
            .keys()
            .filter(|id| !l.recipients.contains_key(*id))
            .map(String::as_str)
            .collect();
        for id in &added {
            escalations.push(Escalation::NewRecipient { id: id.to_string() });
        }
        if added.is_empty() {
            return rotate;
        }
        if d.rotation.rotate_on_recipient_added {
            rotate.push(format!(
                "recipient added: {} (on_recipient_added: rotate)",
                added.join(", ")
            ));
        } else if rotate.is_empty() {
            for id in &added {
                self.pending
                    .entry(id.to_string())
                    .or_default()
                    .push((d.store.clone(), d.name.clone()));
            }
        }
        rotate
    }

    /// The in-place change (update, disable, enable, rotate) of a live key.
    fn push_update(
        &mut self,
        d: &DesiredKey,
        l: &LiveKey,
        action: Action,
        set_status: Option<KeyStatus>,
        e: Edits,
        want: BTreeMap<String, String>,
    ) {
        let Edits {
            fields,
            patch,
            mut reasons,
            escalations,
        } = e;
        if fields.is_empty() {
            // Only bookkeeping (e.g. the lifetime string): apply quietly as an update.
            reasons.push("bookkeeping".into());
        }
        let drift = is_drifted(l) && !fields.is_empty();
        if drift {
            let names: Vec<&str> = fields
                .iter()
                .map(|f| f.field.as_str())
                .filter(|f| *f != "generation" && *f != "recipients")
                .collect();
            if !names.is_empty() {
                let why = format!("drift: {} changed outside keyward", names.join(", "));
                reasons.insert(0, why);
            }
        }
        let rotating = action == Action::Rotate;
        let at_once = self.stops_at_once(&d.store).filter(|_| rotating);
        if let Some(why) = at_once {
            reasons.push(format!("the old value stops working at once: {why}"));
        }
        self.out.changes.push(Change {
            key_id: Some(l.id.clone()),
            version: Some(l.version),
            reasons,
            unchanged_fields: COMPARED_FIELDS.saturating_sub(fields.len()),
            fields,
            escalations,
            drift,
            patch,
            set_status,
            new_generation: rotating.then_some(l.generation + 1),
            deliver_to: if rotating {
                want.into_keys().collect()
            } else {
                Vec::new()
            },
            grace: (rotating && at_once.is_none()).then(|| Grace {
                period: d.rotation.grace.to_string(),
                previous_valid_until: self.now + d.rotation.grace.to_chrono(),
            }),
            ..Change::of_desired(action, d)
        });
    }
}

/// How many fields a comparison looks at (the plan counts the ones it does not show).
const COMPARED_FIELDS: usize = 9;

/// The fields no store changes in place (owner, environment): any forces a replace.
fn forcing_changes(d: &DesiredKey, l: &LiveKey) -> Vec<FieldChange> {
    let mut forcing = Vec::new();
    if l.owner != d.owner {
        forcing.push(FieldChange::forcing("owner", &l.owner, &d.owner));
    }
    if l.environment != d.environment {
        forcing.push(FieldChange::forcing(
            "environment",
            &l.environment,
            &d.environment,
        ));
    }
    forcing
}

impl Change {
    /// A change of `action` with no reason, field, patch or delivery yet.
    fn bare(action: Action, store: &str, name: &str, owner: &str, environment: String) -> Self {
        Change {
            action,
            store: store.to_string(),
            name: name.to_string(),
            key_id: None,
            version: None,
            reasons: Vec::new(),
            fields: Vec::new(),
            unchanged_fields: 0,
            escalations: Vec::new(),
            drift: false,
            patch: KeyPatch::default(),
            set_status: None,
            new_generation: None,
            deliver_to: Vec::new(),
            old_valid_until: None,
            owner: owner.to_string(),
            environment,
            protected: false,
            touched: None,
            requested_by: Vec::new(),
            grace: None,
            last_used: None,
        }
    }

    /// `bare`, for the desired key `d` (its store, name, owner, environment, protection).
    pub fn of_desired(action: Action, d: &DesiredKey) -> Self {
        Change {
            protected: d.protected,
            ..Change::bare(action, &d.store, &d.name, &d.owner, d.environment.clone())
        }
    }
}

/// What a comparison found to change in place, and why.
#[derive(Default)]
struct Edits {
    fields: Vec<FieldChange>,
    patch: KeyPatch,
    reasons: Vec<String>,
    escalations: Vec<Escalation>,
}

impl Edits {
    fn change(&mut self, field: &str, before: Option<String>, after: Option<String>, why: &str) {
        self.fields
            .push(FieldChange::in_place(field, before, after));
        self.reasons.push(why.to_string());
    }

    /// What the key may do and says: scopes, purpose, labels.
    fn content(&mut self, cat: &ScopeCatalogue, d: &DesiredKey, l: &LiveKey) {
        let scopes = scope_strings(&d.scopes);
        if scopes != l.scopes {
            self.escalations
                .extend(scope_escalations(cat, &l.scopes, &d.scopes));
            let (before, after) = (fmt_list(&l.scopes), fmt_list(&scopes));
            self.change("scopes", Some(before), Some(after), "scopes changed");
            self.patch.scopes = Some(scopes);
        }
        if l.purpose != d.purpose {
            let (before, after) = (l.purpose.clone(), d.purpose.clone());
            self.change("purpose", before, after, "purpose changed");
            self.patch.purpose = Some(d.purpose.clone());
        }
        if l.labels != d.labels {
            let (before, after) = (fmt_labels(&l.labels), fmt_labels(&d.labels));
            self.change("labels", Some(before), Some(after), "labels changed");
            self.patch.labels = Some(d.labels.clone());
        }
    }

    /// How long and how much: expiry, the lifetime string, quota, protection.
    fn limits(&mut self, d: &DesiredKey, l: &LiveKey) {
        let want_exp = expires_at(&d.expiry, l.issued_at);
        if !same_instant(want_exp, l.expires_at) {
            let extended = longer(l.expires_at, want_exp);
            if extended {
                self.escalations.push(Escalation::LongerLifetime {
                    from: fmt_time(l.expires_at),
                    to: fmt_time(want_exp),
                });
            }
            let show = |t| fmt_time(t).or(Some("never".into()));
            let why = if extended {
                "expiry extended"
            } else {
                "expiry shortened"
            };
            self.change("expires", show(l.expires_at), show(want_exp), why);
            self.patch.expires_at = Some(want_exp);
        }
        let want_lifetime = lifetime_string(&d.expiry);
        if want_lifetime != l.lifetime {
            self.patch.lifetime = Some(want_lifetime);
        }
        let want_quota = d.quota.map(|q| q.per_day);
        if want_quota != l.quota_per_day {
            let show =
                |q: Option<u64>| Some(q.map_or_else(|| "none".into(), |q| format!("{q}/day")));
            let (before, after) = (show(l.quota_per_day), show(want_quota));
            self.change("quota", before, after, "quota changed");
            self.patch.quota_per_day = Some(want_quota);
        }
        if l.protected != d.protected {
            let (before, after) = (l.protected.to_string(), d.protected.to_string());
            self.change("protected", Some(before), Some(after), "protection changed");
            self.patch.protected = Some(d.protected);
        }
    }

    /// Disable or enable: the action it makes and the status to set in place.
    fn status(&mut self, d: &DesiredKey, l: &LiveKey) -> (Action, Option<KeyStatus>) {
        let flip = |from: &str, to: &str| {
            FieldChange::in_place("status", Some(from.into()), Some(to.into()))
        };
        match (d.state, l.status) {
            (DesiredState::Disabled, KeyStatus::Active) => {
                self.reasons.insert(0, "state: disabled".into());
                self.fields.push(flip("active", "disabled"));
                (Action::Disable, None)
            }
            (DesiredState::Active, KeyStatus::Disabled) => {
                self.reasons.push("state: active (enable)".into());
                self.fields.push(flip("disabled", "active"));
                (Action::Update, Some(KeyStatus::Active))
            }
            _ => (Action::Update, None),
        }
    }

    /// A rotation: the generation goes up, the recipients may change, and the reasons to
    /// rotate come first.
    fn rotation(&mut self, l: &LiveKey, want: &BTreeMap<String, String>, rotate: Vec<String>) {
        let (now, next) = (l.generation.to_string(), (l.generation + 1).to_string());
        self.fields
            .push(FieldChange::in_place("generation", Some(now), Some(next)));
        if l.recipients.keys().ne(want.keys()) {
            let (before, after) = (fmt_list(l.recipients.keys()), fmt_list(want.keys()));
            self.fields.push(FieldChange::in_place(
                "recipients",
                Some(before),
                Some(after),
            ));
        }
        let mut r = rotate;
        r.append(&mut self.reasons);
        self.reasons = r;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::diag::Location;
    use crate::model::MANAGED_BY;
    use crate::spec::*;
    use chrono::TimeZone;
    use std::path::PathBuf;

    pub fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
    }

    fn principal(id: &str, key: &str) -> Principal {
        Principal {
            id: id.into(),
            kind: PrincipalKind::Person,
            name: None,
            email: None,
            recipients: vec![RecipientKey::new(key)],
            may_grant: None,
            location: None,
        }
    }

    pub fn spec(keys: Vec<DesiredKey>) -> Spec {
        let mut stores = BTreeMap::new();
        for (n, env) in [("prod", "production"), ("sbx", "sandbox")] {
            stores.insert(
                n.to_string(),
                StoreConfig {
                    name: n.into(),
                    kind: StoreKind::Sqlite {
                        path: PathBuf::from(format!("/tmp/{n}.db")),
                    },
                    environment: env.into(),
                    location: None,
                    budget: None,
                },
            );
        }
        let mut principals = BTreeMap::new();
        for (id, k) in [
            ("jdoe", "age1jdoe"),
            ("asmith", "age1asmith"),
            ("svc", "age1svc"),
        ] {
            principals.insert(id.to_string(), principal(id, k));
        }
        let mut keys = keys;
        keys.sort_by(|a, b| (&a.store, &a.name).cmp(&(&b.store, &b.name)));
        Spec {
            root: PathBuf::from("/tmp"),
            stores,
            catalogue: ScopeCatalogue::default(),
            policy: Policy::default(),
            delivery: DeliveryConfig {
                outbox: PathBuf::from("/tmp/deliveries"),
                retain: Span::days(7),
            },
            guards: Guards::default(),
            notify: None,
            principals,
            teams: BTreeMap::new(),
            keys,
        }
    }

    pub fn key(store: &str, name: &str, scopes: &[&str]) -> DesiredKey {
        DesiredKey {
            name: name.into(),
            store: store.into(),
            environment: if store == "prod" {
                "production".into()
            } else {
                "sandbox".into()
            },
            owner: "jdoe".into(),
            purpose: Some("test".into()),
            scopes: scopes.iter().map(|s| Scope::parse(s).unwrap()).collect(),
            expiry: Expiry::Lifetime(Span::days(90)),
            recipients: ["jdoe".to_string()].into_iter().collect(),
            rotation: Rotation::default(),
            quota: None,
            labels: BTreeMap::new(),
            state: DesiredState::Active,
            protected: false,
            adopt: None,
            unused_after: None,
            location: Location::new("keys/a.yaml", 1, 1),
            field_locations: BTreeMap::new(),
        }
    }

    /// What a store would hold after creating `d` at `at` (the reference semantics apply uses).
    pub fn live_from(spec: &Spec, d: &DesiredKey, id: &str, at: DateTime<Utc>) -> LiveKey {
        LiveKey {
            id: id.into(),
            name: d.name.clone(),
            environment: d.environment.clone(),
            owner: d.owner.clone(),
            purpose: d.purpose.clone(),
            scopes: scope_strings(&d.scopes),
            labels: d.labels.clone(),
            status: if d.state == DesiredState::Disabled {
                KeyStatus::Disabled
            } else {
                KeyStatus::Active
            },
            issued_at: at,
            created_at: at,
            updated_at: at,
            expires_at: expires_at(&d.expiry, at),
            lifetime: lifetime_string(&d.expiry),
            version: 1,
            generation: 1,
            spec_generation: d.rotation.generation,
            previous_valid_until: None,
            recipients: recipient_map(spec, d),
            quota_per_day: d.quota.map(|q| q.per_day),
            protected: d.protected,
            managed_by: Some(MANAGED_BY.into()),
            applied_digest: None,
        }
        .recorded()
    }

    impl LiveKey {
        /// As keyward leaves a key: its state digest recorded.
        pub fn recorded(mut self) -> LiveKey {
            self.applied_digest = Some(self.state_digest());
            self
        }
    }

    /// `lifecycle::due` on keys as the diff's fixtures build them (kept here so the
    /// lifecycle module's tests need no diff).
    #[test]
    fn expiring_expired_and_due_rotations_are_reported_with_what_to_do() {
        let mut short = key("prod", "short", &["bibs:read"]);
        short.expiry = Expiry::Lifetime(Span::days(30));
        let mut fixed = key("prod", "fixed", &["bibs:read"]);
        fixed.expiry = Expiry::At(now() + chrono::Duration::days(400));
        fixed.rotation.every = Some(Span::days(90));
        let far = key("prod", "far", &["bibs:read"]);
        let s = spec(vec![short.clone(), fixed.clone(), far.clone()]);
        let issued = now() - chrono::Duration::days(5);
        let lives = vec![
            live_from(&s, &short, "id1", issued),
            live_from(&s, &fixed, "id2", now() - chrono::Duration::days(80)),
            live_from(&s, &far, "id3", issued),
        ];
        let obs: BTreeMap<String, Vec<LiveKey>> = [("prod".to_string(), lives)].into();
        let d = crate::lifecycle::due(&s, &obs, now(), Span::days(30));
        assert_eq!(d.len(), 2, "{d:?}");
        let short_item = d.iter().find(|i| i.name == "short").unwrap();
        assert_eq!(
            (short_item.kind, short_item.days_left),
            (crate::lifecycle::DueKind::Expiring, 25)
        );
        assert!(short_item.todo.contains("rotation.generation"));
        let rot = d.iter().find(|i| i.name == "fixed").unwrap();
        assert_eq!(
            (rot.kind, rot.days_left),
            (crate::lifecycle::DueKind::RotationDue, 10)
        );
        // Past the expiry: expired.
        let later = now() + chrono::Duration::days(26);
        let d = crate::lifecycle::due(&s, &obs, later, Span::days(1));
        let short_item = d.iter().find(|i| i.name == "short").unwrap();
        assert_eq!(short_item.kind, crate::lifecycle::DueKind::Expired);
        // An overdue rotation stays reported.
        let rot = d.iter().find(|i| i.name == "fixed").unwrap();
        assert_eq!(
            (rot.kind, rot.days_left),
            (crate::lifecycle::DueKind::RotationDue, -16)
        );
        // Nothing within a day today.
        assert!(crate::lifecycle::due(&s, &obs, now(), Span::days(1)).is_empty());
    }

    #[test]
    fn edits_made_outside_keyward_are_drift_and_spec_edits_are_not() {
        let (_, s, live) = prod_ill();
        // Someone widened the scopes in a console.
        let mut edited = live.clone();
        edited.scopes = vec!["bibs:write".into()];
        let c = &diff(&s, &observed("prod", vec![edited]), now()).changes[0];
        assert!(c.drift);
        assert_eq!(c.reasons[0], "drift: scopes changed outside keyward");
        assert_eq!(c.fields[0].before.as_deref(), Some("[\"bibs:write\"]"));
        assert_eq!(c.patch.scopes, Some(vec!["bibs:read".to_string()]));
        // Someone disabled it: drift, restored by enabling.
        let mut off = live.clone();
        off.status = KeyStatus::Disabled;
        let c = &diff(&s, &observed("prod", vec![off]), now()).changes[0];
        assert!(c.drift && c.set_status == Some(KeyStatus::Active));
        // Someone revoked it: a new key replaces it, flagged as drift.
        let mut gone = live.clone();
        gone.status = KeyStatus::Revoked;
        let c = &diff(&s, &observed("prod", vec![gone]), now()).changes[0];
        assert!(c.drift && c.action == Action::Create);
        // The spec changed instead: a plain update.
        let s2 = spec(vec![key("prod", "ill", &["bibs:read", "users:read"])]);
        let c = &diff(&s2, &observed("prod", vec![live]), now()).changes[0];
        assert!(!c.drift);
    }

    #[test]
    fn a_key_deleted_by_hand_is_drift_and_its_replacement_continues_the_generations() {
        let d = key("prod", "ill", &["bibs:read"]);
        let s = spec(vec![d.clone()]);
        let delivered: Delivered = [(
            ("prod".to_string(), "ill".to_string()),
            DeliveredKey {
                key_id: "id1".into(),
                generation: 4,
            },
        )]
        .into();
        let r = diff_with_deliveries(&s, &BTreeMap::new(), &delivered, now());
        let c = &r.changes[0];
        assert!(c.drift && c.action == Action::Create);
        assert_eq!(c.new_generation, Some(5));
        assert!(c.reasons[0].starts_with("drift: deleted outside keyward (key id id1)"));
        // Still in the store (any status): not deleted.
        let live = live_from(&s, &d, "id1", now());
        let r = diff_with_deliveries(&s, &observed("prod", vec![live]), &delivered, now());
        assert!(r.changes.is_empty());
        // Never delivered: a plain create.
        let c = &diff(&s, &BTreeMap::new(), now()).changes[0];
        assert!(!c.drift);
    }

    #[test]
    fn expired_and_soon_expiring_keys_are_warnings_unless_the_plan_renews_them() {
        let d = key("prod", "ill", &["bibs:read"]);
        let s = spec(vec![d.clone()]);
        // Lifetime 90d, issued 80 days ago: expires in 10 days.
        let live = live_from(&s, &d, "id1", now() - chrono::Duration::days(80));
        let r = diff(&s, &observed("prod", vec![live.clone()]), now());
        assert!(r.changes.is_empty());
        assert_eq!(r.warnings.len(), 1);
        assert!(
            r.warnings[0].message.starts_with("expires in 10 day(s)"),
            "{:?}",
            r.warnings
        );
        // A rotation renews a lifetime-based expiry: no warning.
        let mut d2 = d.clone();
        d2.rotation.generation = 2;
        let r = against(d2, &live);
        assert_eq!(r.changes[0].action, Action::Rotate);
        assert!(r.warnings.is_empty());
        // Expired: a warning saying the store refuses it.
        let later = now() + chrono::Duration::days(11);
        let r = diff(&s, &observed("prod", vec![live]), later);
        assert!(r.warnings[0].message.contains("the store refuses it"));
    }

    /// The key `prod/ill` (bibs:read), its spec and its live key as keyward created it now.
    fn prod_ill() -> (DesiredKey, Spec, LiveKey) {
        let d = key("prod", "ill", &["bibs:read"]);
        let s = spec(vec![d.clone()]);
        let live = live_from(&s, &d, "id1", now());
        (d, s, live)
    }

    /// The diff of a spec holding only `d` against `live` in the store `prod`.
    fn against(d: DesiredKey, live: &LiveKey) -> DiffResult {
        diff(&spec(vec![d]), &observed("prod", vec![live.clone()]), now())
    }

    fn observed(store: &str, keys: Vec<LiveKey>) -> BTreeMap<String, Vec<LiveKey>> {
        [(store.to_string(), keys)].into_iter().collect()
    }

    #[test]
    fn many_store_moves_pair_by_name_in_linear_time() {
        // 600 keys live in prod; the spec moves 500 of them to sbx (replace), drops 100
        // (revoke; 10 of those protected: kept with a note), and adds 200 new ones.
        let n_live = 600;
        let mut desired = Vec::new();
        let mut live = Vec::new();
        let base = spec(Vec::new());
        for i in 0..n_live {
            let mut d = key("prod", &format!("k{i:04}"), &["bibs:read"]);
            d.protected = (500..510).contains(&i);
            live.push(live_from(&base, &d, &format!("id{i:04}"), now()));
            if i < 500 {
                desired.push(key("sbx", &format!("k{i:04}"), &["bibs:read"]));
            }
        }
        for i in 0..200 {
            desired.push(key("sbx", &format!("new{i:04}"), &["bibs:read"]));
        }
        let s = spec(desired);
        let r = diff(&s, &observed("prod", live), now());
        let count = |a: Action| r.changes.iter().filter(|c| c.action == a).count();
        assert_eq!(count(Action::Replace), 500);
        assert_eq!(count(Action::Create), 200);
        assert_eq!(count(Action::Revoke), 90);
        assert_eq!(r.notes.len(), 10);
        for c in r.changes.iter().filter(|c| c.action == Action::Replace) {
            // Each replace revokes the old key of the same name.
            assert_eq!(
                c.key_id.as_deref(),
                Some(format!("id{}", &c.name[1..]).as_str())
            );
            assert_eq!(c.store, "sbx");
        }
    }

    #[test]
    fn a_new_key_is_created_with_generation_one_and_its_recipients() {
        let s = spec(vec![key("prod", "ill", &["bibs:read"])]);
        let r = diff(&s, &BTreeMap::new(), now());
        assert_eq!(r.changes.len(), 1);
        let c = &r.changes[0];
        assert_eq!((c.action, c.new_generation), (Action::Create, Some(1)));
        assert_eq!(c.deliver_to, vec!["jdoe".to_string()]);
        assert!(
            c.fields
                .iter()
                .any(|f| f.field == "scopes" && f.after.as_deref() == Some("[\"bibs:read\"]"))
        );
    }

    #[test]
    fn an_applied_key_has_no_changes() {
        let d = key("prod", "ill", &["bibs:read"]);
        let s = spec(vec![d.clone()]);
        let live = live_from(&s, &d, "id1", now() - chrono::Duration::days(3));
        assert!(
            diff(&s, &observed("prod", vec![live]), now())
                .changes
                .is_empty()
        );
    }

    #[test]
    fn read_to_write_and_a_new_area_update_in_place_and_are_escalations() {
        let (_, _, live) = prod_ill();
        let s = spec(vec![key("prod", "ill", &["bibs:write", "users:read"])]);
        let r = diff(&s, &observed("prod", vec![live]), now());
        let c = &r.changes[0];
        assert_eq!(c.action, Action::Update);
        assert_eq!(
            c.patch.scopes,
            Some(vec!["bibs:write".to_string(), "users:read".to_string()])
        );
        assert!(c.escalations.contains(&Escalation::LevelRaised {
            area: "bibs".into(),
            from: "read".into(),
            to: "write".into()
        }));
        assert!(c.escalations.contains(&Escalation::NewArea {
            area: "users".into()
        }));
        assert_eq!(c.reasons, vec!["scopes changed".to_string()]);
    }

    #[test]
    fn an_owner_change_replaces() {
        let (d, _, live) = prod_ill();
        let mut d2 = d.clone();
        d2.owner = "asmith".into();
        let s = spec(vec![d2]);
        let c = &diff(&s, &observed("prod", vec![live]), now()).changes[0];
        assert_eq!(c.action, Action::Replace);
        assert_eq!(c.new_generation, Some(2));
        assert!(
            c.fields
                .iter()
                .any(|f| f.field == "owner" && f.forces_replacement)
        );
    }

    #[test]
    fn a_removed_key_is_revoked_unless_protected() {
        let d = key("prod", "ill", &["bibs:read"]);
        let mut p = key("prod", "keep", &["bibs:read"]);
        p.protected = true;
        let s0 = spec(vec![d.clone(), p.clone()]);
        let lives = vec![
            live_from(&s0, &d, "id1", now()),
            live_from(&s0, &p, "id2", now()),
        ];
        let r = diff(&spec(vec![]), &observed("prod", lives), now());
        assert_eq!(r.changes.len(), 1);
        assert_eq!(
            (r.changes[0].action, r.changes[0].name.as_str()),
            (Action::Revoke, "ill")
        );
        assert_eq!(r.changes[0].reasons, vec!["removed from spec".to_string()]);
        assert!(
            r.notes
                .iter()
                .any(|n| n.name == "keep" && n.message.contains("protected"))
        );
    }

    #[test]
    fn deletion_needs_a_tombstone() {
        let (d, _, live) = prod_ill();
        let mut t = d.clone();
        t.state = DesiredState::Deleted;
        let r = against(t, &live);
        assert_eq!(r.changes[0].action, Action::Delete);
    }

    #[test]
    fn unmanaged_keys_are_never_touched() {
        let d = key("prod", "console-made", &["bibs:read"]);
        let s0 = spec(vec![d.clone()]);
        let mut live = live_from(&s0, &d, "id1", now());
        live.managed_by = None;
        let r = diff(&spec(vec![]), &observed("prod", vec![live.clone()]), now());
        assert!(r.changes.is_empty());
        // Same name in the spec: no second key, a note pointing at import.
        let r = diff(&s0, &observed("prod", vec![live]), now());
        assert!(r.changes.is_empty());
        assert!(r.notes[0].message.contains("keyward import"));
    }

    #[test]
    fn generation_bump_and_due_rotation_rotate() {
        let (d, _, live) = prod_ill();
        let mut d2 = d.clone();
        d2.rotation.generation = 2;
        let c = &against(d2, &live).changes[0];
        assert_eq!((c.action, c.new_generation), (Action::Rotate, Some(2)));
        assert_eq!(c.reasons[0], "generation 1 -> 2");

        let mut d3 = d.clone();
        d3.rotation.every = Some(Span::days(30));
        let later = now() + chrono::Duration::days(31);
        let c = &diff(&spec(vec![d3]), &observed("prod", vec![live]), later).changes[0];
        assert_eq!(c.action, Action::Rotate);
        assert!(c.reasons[0].starts_with("due: rotate every 30d"));
    }

    #[test]
    fn removing_a_recipient_rotates_and_adding_one_waits_for_the_next_rotation() {
        let mut d = key("prod", "ill", &["bibs:read"]);
        d.recipients.insert("asmith".into());
        let s0 = spec(vec![d.clone()]);
        let live = live_from(&s0, &d, "id1", now());
        let mut less = d.clone();
        less.recipients.remove("asmith");
        let c = &against(less, &live).changes[0];
        assert_eq!(c.action, Action::Rotate);
        assert_eq!(c.deliver_to, vec!["jdoe".to_string()]);

        let mut more = d.clone();
        more.recipients.insert("svc".into());
        let r = against(more.clone(), &live);
        assert!(r.changes.is_empty());
        assert!(
            r.notes[0]
                .message
                .contains("svc will receive the secret at the next rotation")
        );
        more.rotation.rotate_on_recipient_added = true;
        let r = against(more, &live);
        assert_eq!(r.changes[0].action, Action::Rotate);
        assert!(
            r.changes[0]
                .escalations
                .contains(&Escalation::NewRecipient { id: "svc".into() })
        );
    }

    #[test]
    fn a_store_change_is_a_replace_and_moving_to_production_escalates() {
        let d = key("sbx", "ill", &["bibs:read"]);
        let s0 = spec(vec![d.clone()]);
        let live = live_from(&s0, &d, "id1", now());
        let s = spec(vec![key("prod", "ill", &["bibs:read"])]);
        let r = diff(&s, &observed("sbx", vec![live]), now());
        assert_eq!(r.changes.len(), 1, "{:?}", r.changes);
        let c = &r.changes[0];
        assert_eq!(c.action, Action::Replace);
        assert!(
            c.escalations
                .iter()
                .any(|e| matches!(e, Escalation::ToProduction { .. }))
        );
    }

    #[test]
    fn extending_a_fixed_expiry_is_an_escalation_and_shortening_is_not() {
        let mut d = key("prod", "ill", &["bibs:read"]);
        d.expiry = Expiry::At(now() + chrono::Duration::days(100));
        let s0 = spec(vec![d.clone()]);
        let live = live_from(&s0, &d, "id1", now());
        let mut longer_key = d.clone();
        longer_key.expiry = Expiry::At(now() + chrono::Duration::days(200));
        let c = &against(longer_key, &live).changes[0];
        assert!(matches!(
            c.escalations[0],
            Escalation::LongerLifetime { .. }
        ));
        let mut shorter = d.clone();
        shorter.expiry = Expiry::At(now() + chrono::Duration::days(50));
        let c = &against(shorter, &live).changes[0];
        assert!(c.escalations.is_empty());
        assert_eq!(c.reasons, vec!["expiry shortened".to_string()]);
    }

    #[test]
    fn disable_and_enable() {
        let (d, s0, live) = prod_ill();
        let mut off = d.clone();
        off.state = DesiredState::Disabled;
        let c = &against(off, &live).changes[0];
        assert_eq!(c.action, Action::Disable);
        let mut disabled = live;
        disabled.status = KeyStatus::Disabled;
        let c = &diff(&s0, &observed("prod", vec![disabled]), now()).changes[0];
        assert_eq!(
            (c.action, c.set_status),
            (Action::Update, Some(KeyStatus::Active))
        );
    }
}

/// The policy's `unused_after` and the last use a plan shows (`crate::unused`).
#[cfg(test)]
mod unused_tests {
    use crate::model::LiveKey;
    use crate::store::VerifyReason;
    use crate::store::usage::{Usage, UsageRow};
    use crate::unused::Seen;
    use std::collections::BTreeMap;

    /// Five keys in `prod` made 200 days before `now()`, counting since then: `idle` last
    /// used 131 days ago, `busy` 2 days ago, `guarded` (protected) 131 days ago, `never`
    /// made 150 days ago and never used, `fresh` made 10 days ago and never used.
    type World = (
        crate::spec::Spec,
        BTreeMap<String, Vec<LiveKey>>,
        BTreeMap<String, Option<Usage>>,
    );

    fn unused_world() -> World {
        use super::tests::{key, live_from, now, spec};
        use crate::spec::{Expiry, Span};
        let ago = |d: i64| now() - chrono::Duration::days(d);
        let mut keys = Vec::new();
        for n in ["idle", "busy", "guarded", "never", "fresh"] {
            let mut k = key("prod", n, &["bibs:read"]);
            k.expiry = Expiry::Never;
            k.protected = n == "guarded";
            keys.push(k);
        }
        let mut s = spec(keys.clone());
        s.policy.unused_after = Some(Span::days(120));
        let made = |n: &str| match n {
            "never" => ago(150),
            "fresh" => ago(10),
            _ => ago(200),
        };
        let lives = keys
            .iter()
            .map(|k| live_from(&s, k, &k.name.to_uppercase(), made(&k.name)))
            .collect();
        let row = |key: &str, d: i64| UsageRow {
            key_id: key.into(),
            day: crate::store::usage::day_of(&ago(d)),
            reason: VerifyReason::Ok,
            calls: 1,
            last_at: ago(d),
        };
        let usage = BTreeMap::from([(
            "prod".to_owned(),
            Some(Usage {
                counting_since: Some(ago(200)),
                rows: vec![row("IDLE", 131), row("BUSY", 2), row("GUARDED", 131)],
                ..Default::default()
            }),
        )]);
        (s, BTreeMap::from([("prod".to_owned(), lives)]), usage)
    }

    fn plan_of(
        s: &crate::spec::Spec,
        observed: &BTreeMap<String, Vec<LiveKey>>,
        usage: &BTreeMap<String, Option<Usage>>,
    ) -> super::DiffResult {
        let delivered = super::Delivered::new();
        let seen = Seen::new(usage);
        super::diff_seen(s, observed, &delivered, &seen, super::tests::now())
    }

    #[test]
    fn keys_unused_past_the_window_are_disabled_but_not_protected_or_recent_ones() {
        use super::Action;
        let (s, observed, usage) = unused_world();
        let r = plan_of(&s, &observed, &usage);
        let got: Vec<(&str, Action, &str)> = r
            .changes
            .iter()
            .map(|c| (c.name.as_str(), c.action, c.reasons[0].as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("idle", Action::Disable, "due: unused for 131 days"),
                ("never", Action::Disable, "due: unused for 150 days"),
            ],
            "a key never used counts from when it was made"
        );
        let idle = &r.changes[0];
        assert_eq!(
            idle.last_used.as_ref().and_then(|u| u.at),
            Some(super::tests::now() - chrono::Duration::days(131))
        );
        assert_eq!(idle.fields[0].after.as_deref(), Some("disabled"));
        // Without the policy nothing is proposed.
        let mut off = s.clone();
        off.policy.unused_after = None;
        assert!(plan_of(&off, &observed, &usage).changes.is_empty());
    }

    #[test]
    fn a_key_disabled_for_disuse_stays_disabled_until_its_file_says_otherwise() {
        use super::Action;
        use crate::model::KeyStatus;
        let (mut s, mut observed, usage) = unused_world();
        for k in observed.get_mut("prod").unwrap().iter_mut() {
            if k.name == "idle" {
                k.status = KeyStatus::Disabled;
            }
        }
        let r = plan_of(&s, &observed, &usage);
        assert!(
            r.changes.iter().all(|c| c.name != "idle"),
            "{:?}",
            r.changes
        );
        let note = r.notes.iter().find(|n| n.name == "idle").expect("a note");
        assert!(
            note.message
                .starts_with("disabled and unused for 131 days: kept disabled"),
            "{}",
            note.message
        );
        // `unused_after: never` on the key: it is enabled again.
        s.keys
            .iter_mut()
            .find(|k| k.name == "idle")
            .unwrap()
            .unused_after = Some(None);
        let r = plan_of(&s, &observed, &usage);
        let c = r
            .changes
            .iter()
            .find(|c| c.name == "idle")
            .expect("enabled");
        assert_eq!(
            (c.action, c.set_status),
            (Action::Update, Some(KeyStatus::Active))
        );
    }

    #[test]
    fn the_nightly_report_lists_the_unused_keys_and_names_stores_without_usage() {
        use crate::lifecycle::{DueKind, unused};
        use crate::spec::Span;
        let (s, observed, usage) = unused_world();
        let seen = Seen::new(&usage);
        let now = super::tests::now();
        let items = unused(&s, &observed, &seen, now, Span::days(30));
        let got: Vec<(&str, Option<i64>, i64)> = items
            .iter()
            .map(|i| (i.name.as_str(), i.unused_days, i.days_left))
            .collect();
        assert_eq!(got, [("idle", Some(131), -11), ("never", Some(150), -30)]);
        assert!(items.iter().all(|i| i.kind == DueKind::Unused));
        // `fresh` (made 10 days ago) falls due in 110 days: inside a 120-day window.
        let later = unused(&s, &observed, &seen, now, Span::days(120));
        assert!(
            later
                .iter()
                .any(|i| i.name == "fresh" && i.days_left == 110)
        );
        let fmt = crate::expiry_report::ReportFormat::Text;
        let text = crate::expiry_report::render(&s, &items, &[], &[], Span::days(30), now, fmt);
        assert!(
            text.contains(
                "prod/idle: unused for 131 days (last used 2026-07-13): disabled by the next apply"
            ),
            "{text}"
        );
        let blind = BTreeMap::from([("prod".to_owned(), None)]);
        let blind = crate::unused::blind(&s, &Seen::new(&blind));
        assert_eq!(blind, [("prod".to_owned(), 4)]);
        let text = crate::expiry_report::render(&s, &[], &[], &blind, Span::days(30), now, fmt);
        assert!(
            text.contains("store `prod`: usage is not visible"),
            "{text}"
        );
    }

    #[test]
    fn a_store_that_keeps_no_usage_has_nothing_proposed_and_the_plan_says_why() {
        let (s, observed, _) = unused_world();
        let blind = BTreeMap::from([("prod".to_owned(), None)]);
        let r = plan_of(&s, &observed, &blind);
        assert!(r.changes.is_empty(), "{:?}", r.changes);
        let msgs: Vec<&str> = r.notes.iter().map(|n| n.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "store `prod` keeps no usage: unused_after cannot see whether its 4 key(s) are used, so none is proposed for disabling"
            ]
        );
    }
}
