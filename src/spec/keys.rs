//! keys/**/*.yaml: the desired keys, checked against keyward.yaml and people.yaml.
//! Owns validating key entries (names, references, scopes, expiry, rotation, quota);
//! must not do I/O and must not apply policy limits (src/policy.rs does).
//!
//! `DesiredKey::field_locations` holds the value position of every field present, by its
//! YAML name (`owner`, `scopes`, `expires`, ...), plus `scope:<area>` for the list entry
//! that set each area's level, and `label:<name>` for each label's value, so policy
//! diagnostics can point at the exact scope or label.

use super::config::{Config, scope};
use super::model::{DesiredKey, DesiredState, Expiry, PrincipalKind, Quota, Rotation, Scope, Span};
use super::people::People;
use super::pos::YPath;
use super::raw::fields;
use super::yaml::{Ctx, did_you_mean};
use crate::diag::{Diagnostic, Location, codes};
use crate::recipient::looks_private;
use chrono::{DateTime, NaiveDate, Utc};
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};

pub use super::raw::fields::KEY as KEY_FIELDS;

/// What the key validators may rely on. `stores_ok` / `people_ok` are false when that
/// file failed to parse: references into it are then not checked (no cascades).
pub struct Refs<'a> {
    pub config: &'a Config,
    pub people: &'a People,
    pub stores_ok: bool,
    pub people_ok: bool,
}

/// A key seen in a file, valid or not: enough to detect duplicates.
pub struct Seen {
    pub store: String,
    pub name: String,
    pub location: Location,
    pub key: Option<DesiredKey>,
}

/// Key name rule: lowercase letters, digits and `-`, 1..=64 chars, starting with a letter.
pub fn valid_key_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// More keys than this in one file are refused (and none of them checked).
pub const MAX_KEYS_PER_FILE: usize = 20_000;

pub fn parse_file(ctx: &mut Ctx, refs: &Refs) -> Vec<Seen> {
    let doc = ctx.doc;
    let top = YPath::root();
    if doc.value.is_null() {
        ctx.warn(
            codes::EMPTY_FILE,
            &top,
            "this key file is empty",
            "add `keys: [...]` or delete the file",
        );
        return Vec::new();
    }
    let Some(fields) = ctx.mapping(&doc.value, &top, fields::KEY_FILE) else {
        return Vec::new();
    };
    let Some((_, keys)) = fields.iter().find(|(k, _)| k == "keys") else {
        ctx.missing(
            &top,
            "keys",
            "a key file holds `keys: [ {name: ..., store: ..., ...} ]`",
        );
        return Vec::new();
    };
    let kp = top.key("keys");
    let items = ctx.seq(keys, &kp).unwrap_or_default();
    if items.len() > MAX_KEYS_PER_FILE {
        let at = ctx.key_loc(&kp);
        ctx.push(
            Diagnostic::error(
                codes::TOO_LARGE,
                format!(
                    "this file holds {} keys, more than the {MAX_KEYS_PER_FILE} a key file may hold",
                    items.len()
                ),
            )
            .at(at)
            .hint("split the keys into several files under keys/"),
        );
        return Vec::new();
    }
    items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| key(ctx, refs, v, &kp.idx(i)))
        .collect()
}

/// Parse `expires:` — `never`, `YYYY-MM-DD` (end of that day, UTC) or an RFC 3339 instant.
pub fn parse_expires(s: &str) -> Option<Expiry> {
    let s = s.trim();
    if s == "never" {
        return Some(Expiry::Never);
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let end = d.and_hms_opt(23, 59, 59)?;
        return Some(Expiry::At(DateTime::from_naive_utc_and_offset(end, Utc)));
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| Expiry::At(t.with_timezone(&Utc)))
}

/// Parse `1000/day`.
pub fn parse_quota(s: &str) -> Option<Quota> {
    let (n, unit) = s.split_once('/')?;
    if unit.trim() != "day" {
        return None;
    }
    let per_day: u64 = n.trim().parse().ok().filter(|n| *n > 0)?;
    Some(Quota { per_day })
}

/// The fields of one key entry, by YAML name.
struct Fields<'v>(Vec<(String, &'v Value)>);

impl<'v> Fields<'v> {
    fn get(&self, n: &str) -> Option<&'v Value> {
        self.0.iter().find(|(k, _)| k == n).map(|(_, v)| *v)
    }
    /// The field when present and not `null`.
    fn given(&self, n: &str) -> Option<&'v Value> {
        self.get(n).filter(|v| !v.is_null())
    }
}

/// One key entry: each field checked by its own step; `ok` turns false on any error, so
/// the entry is still `Seen` (for duplicate checks) but yields no `DesiredKey`.
fn key(ctx: &mut Ctx, refs: &Refs, v: &Value, p: &YPath) -> Option<Seen> {
    let f = Fields(ctx.mapping(v, p, KEY_FIELDS)?);
    let mut ok = true;
    let mut field_locations: BTreeMap<String, Location> = BTreeMap::new();
    for (k, _) in &f.0 {
        field_locations.insert(k.clone(), ctx.loc(&p.key(k)));
    }
    let name = key_name(ctx, &f, p, &mut ok);
    let location = match name {
        Some(_) => ctx.loc(&p.key("name")),
        None => ctx.loc(p),
    };
    let (store, environment) = key_store(ctx, refs, &f, p, &mut ok);
    let owner = key_owner(ctx, refs, &f, p, &mut ok);
    let purpose = f
        .given("purpose")
        .and_then(|v| ctx.text(v, &p.key("purpose")));
    let scopes = key_scopes(ctx, refs, &f, p, &mut ok);
    for (area, (_, sp)) in &scopes {
        field_locations.insert(format!("scope:{area}"), ctx.loc(sp));
    }
    let expiry = key_expiry(ctx, refs, &f, p, store.as_deref());
    ok &= expiry.is_some();
    let recipients = key_recipients(ctx, refs, &f, p, owner.as_deref(), &mut ok);
    let rotation = match f.get("rotation") {
        None => Rotation::default(),
        Some(v) => rotation(ctx, v, &p.key("rotation")).unwrap_or_else(|| {
            ok = false;
            Rotation::default()
        }),
    };
    let quota = key_quota(ctx, &f, p, &mut ok);
    let labels = key_labels(ctx, &f, p, &mut ok, &mut field_locations);
    let state = key_state(ctx, &f, p);
    ok &= state.is_some();
    let protected = match f.get("protected") {
        None => false,
        Some(v) => ctx.boolean(v, &p.key("protected")).unwrap_or_else(|| {
            ok = false;
            false
        }),
    };
    ok &= protected_not_removed(ctx, p, protected, state);
    let adopt = f.given("adopt").and_then(|v| ctx.text(v, &p.key("adopt")));
    let unused_after = key_unused_after(ctx, &f, p, &mut ok);

    let (name, store) = (name?, store?);
    let key = match (ok, environment, owner, expiry, state) {
        (true, Some(environment), Some(owner), Some(expiry), Some(state)) => Some(DesiredKey {
            name: name.clone(),
            store: store.clone(),
            environment,
            owner,
            purpose,
            scopes: scopes.into_values().map(|(s, _)| s).collect(),
            expiry,
            recipients,
            rotation,
            quota,
            labels,
            state,
            protected,
            adopt,
            unused_after,
            location: location.clone(),
            field_locations,
        }),
        _ => None,
    };
    Some(Seen {
        store,
        name,
        location,
        key,
    })
}

/// `unused_after:` on a key: `never`, or a span over the policy's.
fn key_unused_after(ctx: &mut Ctx, f: &Fields, p: &YPath, ok: &mut bool) -> Option<Option<Span>> {
    let v = f.given("unused_after")?;
    if v.as_str() == Some("never") {
        return Some(None);
    }
    let span = ctx.positive_span(v, &p.key("unused_after"));
    *ok &= span.is_some();
    span.map(Some)
}

/// `name:`, required and a valid key name.
fn key_name(ctx: &mut Ctx, f: &Fields, p: &YPath, ok: &mut bool) -> Option<String> {
    let name = match f.get("name") {
        None => {
            ctx.missing(
                p,
                "name",
                "every key needs a `name:` (unique within its store)",
            );
            None
        }
        Some(v) => ctx.string(v, &p.key("name")),
    };
    if let Some(n) = &name
        && !valid_key_name(n)
    {
        *ok = false;
        ctx.err(
            codes::INVALID_KEY_NAME,
            &p.key("name"),
            format!("`{n}` is not a valid key name"),
            "use lowercase letters, digits and `-`, 1 to 64 characters, starting with a letter",
        );
    }
    name
}

/// `store:`, required and a store of keyward.yaml: the store and its environment.
fn key_store(
    ctx: &mut Ctx,
    refs: &Refs,
    f: &Fields,
    p: &YPath,
    ok: &mut bool,
) -> (Option<String>, Option<String>) {
    let store = match f.get("store") {
        None => {
            ctx.missing(
                p,
                "store",
                "add `store: NAME` with a store from keyward.yaml",
            );
            None
        }
        Some(v) => ctx.string(v, &p.key("store")),
    };
    let mut environment = None;
    if let Some(s) = &store {
        match refs.config.stores.get(s) {
            Some(cfg) => environment = Some(cfg.environment.clone()),
            None if !refs.stores_ok || refs.config.store_names.contains(s) => *ok = false,
            None => {
                *ok = false;
                let hint = did_you_mean(
                    s,
                    refs.config.store_names.iter().map(String::as_str),
                    "stores",
                );
                ctx.err(
                    codes::UNKNOWN_STORE,
                    &p.key("store"),
                    format!("unknown store `{s}`"),
                    hint,
                );
            }
        }
    }
    (store, environment)
}

/// `owner:`, required and a person of people.yaml.
fn key_owner(ctx: &mut Ctx, refs: &Refs, f: &Fields, p: &YPath, ok: &mut bool) -> Option<String> {
    let owner = match f.get("owner") {
        None => {
            ctx.missing(
                p,
                "owner",
                "add `owner: PERSON` with a person from people.yaml",
            );
            None
        }
        Some(v) => ctx.string(v, &p.key("owner")),
    };
    if let Some(o) = &owner {
        let op = p.key("owner");
        match refs.people.known.get(o) {
            Some(PrincipalKind::Person) => {}
            Some(PrincipalKind::Service) => {
                *ok = false;
                ctx.err(
                    codes::OWNER_NOT_PERSON,
                    &op,
                    format!("owner `{o}` is a service; keys are owned by people"),
                    format!(
                        "make a person accountable as `owner:` and list `{o}` under `recipients:`"
                    ),
                );
            }
            None if !refs.people_ok => *ok = false,
            None => {
                *ok = false;
                ctx.err(
                    codes::UNKNOWN_OWNER,
                    &op,
                    format!("unknown owner `{o}`"),
                    unknown_owner_hint(refs, o),
                );
            }
        }
    }
    owner
}

/// What to do about an owner people.yaml does not know (a typo, or someone who left).
fn unknown_owner_hint(refs: &Refs, o: &str) -> String {
    let people = refs
        .people
        .known
        .iter()
        .filter(|(_, k)| **k == PrincipalKind::Person)
        .map(|(id, _)| id.as_str());
    if o.starts_with("team:") {
        return "a team cannot own a key; name one accountable person".to_string();
    }
    match super::yaml::suggest(o, people.clone()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!(
            "if `{o}` has left: reassign the key with `owner: PERSON` (it is replaced: new id, new secret delivered) or remove it (it is revoked); otherwise add `{o}` to people.yaml. {}",
            did_you_mean(o, people, "people")
        ),
    }
}

/// `scopes:`, a non-empty list of catalogue scopes: the highest level per area, with the
/// path of the entry that set it.
fn key_scopes(
    ctx: &mut Ctx,
    refs: &Refs,
    f: &Fields,
    p: &YPath,
    ok: &mut bool,
) -> BTreeMap<String, (Scope, YPath)> {
    let mut scopes: BTreeMap<String, (Scope, YPath)> = BTreeMap::new();
    let Some(v) = f.get("scopes") else {
        *ok = false;
        ctx.missing(
            p,
            "scopes",
            "list the narrowest scopes the integration needs, e.g. `scopes: [bibs:read]`",
        );
        return scopes;
    };
    let sp = p.key("scopes");
    match ctx.seq(v, &sp) {
        None => *ok = false,
        Some([]) => {
            *ok = false;
            ctx.err(
                codes::EMPTY_SCOPES,
                &sp,
                "a key needs at least one scope",
                "list the narrowest scopes needed, e.g. `[bibs:read]`",
            );
        }
        Some(items) => {
            for (i, s) in items.iter().enumerate() {
                let ip = sp.idx(i);
                let Some(sc) = scope(ctx, &refs.config.catalogue, s, &ip) else {
                    *ok = false;
                    continue;
                };
                add_scope(ctx, refs, &mut scopes, sc, ip);
            }
        }
    }
    scopes
}

/// A scalar read as text (a string, or a number YAML parsed as one), or a type error.
fn scalar_text(ctx: &mut Ctx, v: &Value, p: &YPath, expected: &str) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        other => {
            ctx.wrong_type(p, other, expected);
            None
        }
    }
}

/// `expires:` or `lifetime:` (not both), else the policy's default lifetime (none in a
/// console whose keys never expire: the key's expiry is what the console holds).
fn key_expiry(
    ctx: &mut Ctx,
    refs: &Refs,
    f: &Fields,
    p: &YPath,
    store: Option<&str>,
) -> Option<Expiry> {
    match (f.given("expires"), f.given("lifetime")) {
        (Some(_), Some(_)) => {
            let d = Diagnostic::error(codes::EXPIRES_AND_LIFETIME, "both `expires` and `lifetime` are given")
                .at(ctx.key_loc(&p.key("lifetime")))
                .related("`expires` is here", ctx.key_loc(&p.key("expires")))
                .hint("keep one: `expires: 2027-06-30` (a fixed date) or `lifetime: 180d` (from creation/rotation)");
            ctx.push(d);
            None
        }
        (Some(e), None) => {
            let ep = p.key("expires");
            let text = scalar_text(ctx, e, &ep, "a date such as `2027-06-30` or `never`");
            let parsed = text.as_deref().and_then(parse_expires);
            if let (Some(t), None) = (&text, parsed) {
                ctx.err(
                    codes::BAD_DATE,
                    &ep,
                    format!("`{t}` is not a date"),
                    "write `expires: YYYY-MM-DD` (end of that day, UTC), an RFC 3339 time, or `never`",
                );
            }
            parsed
        }
        (None, Some(l)) => match l {
            Value::String(s) if s.trim() == "never" => Some(Expiry::Never),
            _ => ctx
                .positive_span(l, &p.key("lifetime"))
                .map(Expiry::Lifetime),
        },
        (None, None) => {
            let can_expire = store
                .and_then(|s| refs.config.stores.get(s))
                .is_none_or(|s| s.kind.keys_can_expire());
            Some(match refs.config.policy.default_lifetime {
                Some(s) if can_expire => Expiry::Lifetime(s),
                _ => Expiry::Never,
            })
        }
    }
}

/// `recipients:` (people, services, `team:NAME`), plus the owner unless
/// `include_owner: false`.
fn key_recipients(
    ctx: &mut Ctx,
    refs: &Refs,
    f: &Fields,
    p: &YPath,
    owner: Option<&str>,
    ok: &mut bool,
) -> BTreeSet<String> {
    let include_owner = match f.get("include_owner") {
        None => true,
        Some(v) => ctx.boolean(v, &p.key("include_owner")).unwrap_or(true),
    };
    let mut recipients: BTreeSet<String> = BTreeSet::new();
    if include_owner && let Some(o) = owner {
        recipients.insert(o.to_string());
    }
    let Some(v) = f.get("recipients") else {
        return recipients;
    };
    let rp = p.key("recipients");
    let mut listed: BTreeSet<String> = BTreeSet::new();
    for (i, r) in ctx.seq(v, &rp).unwrap_or_default().iter().enumerate() {
        let ip = rp.idx(i);
        let Value::String(r) = r else {
            *ok = false;
            ctx.wrong_type(&ip, r, "a person, service or `team:NAME`");
            continue;
        };
        if !listed.insert(r.clone()) {
            ctx.warn(
                codes::DUPLICATE_RECIPIENT,
                &ip,
                format!("recipient `{r}` is listed twice"),
                "remove the duplicate",
            );
            continue;
        }
        *ok &= recipient(ctx, refs, r, &ip, &mut recipients);
    }
    recipients
}

/// `quota:` as `N/day`.
fn key_quota(ctx: &mut Ctx, f: &Fields, p: &YPath, ok: &mut bool) -> Option<Quota> {
    let v = f.given("quota")?;
    let qp = p.key("quota");
    let text = scalar_text(ctx, v, &qp, "a quota such as `1000/day`");
    let q = text.as_deref().and_then(parse_quota);
    if let (Some(t), None) = (&text, q) {
        ctx.err(
            codes::BAD_QUOTA,
            &qp,
            format!("`{t}` is not a quota"),
            "write calls per day as `1000/day` (a whole number above 0)",
        );
    }
    *ok &= q.is_some();
    q
}

/// `labels:`, a mapping of text values (each value's position kept as `label:<name>`).
fn key_labels(
    ctx: &mut Ctx,
    f: &Fields,
    p: &YPath,
    ok: &mut bool,
    field_locations: &mut BTreeMap<String, Location>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let Some(v) = f.given("labels") else {
        return labels;
    };
    let lp = p.key("labels");
    let Some(entries) = ctx.mapping(v, &lp, &[]) else {
        *ok = false;
        return labels;
    };
    for (k, val) in entries {
        match ctx.text(val, &lp.key(&k)) {
            Some(t) => {
                field_locations.insert(format!("label:{k}"), ctx.loc(&lp.key(&k)));
                labels.insert(k, t);
            }
            None => *ok = false,
        }
    }
    labels
}

/// `state:`, active unless given.
fn key_state(ctx: &mut Ctx, f: &Fields, p: &YPath) -> Option<DesiredState> {
    let Some(v) = f.get("state") else {
        return Some(DesiredState::Active);
    };
    let sp = p.key("state");
    match ctx.string(v, &sp).as_deref() {
        Some("active") => Some(DesiredState::Active),
        Some("disabled") => Some(DesiredState::Disabled),
        Some("revoked") => Some(DesiredState::Revoked),
        Some("deleted") => Some(DesiredState::Deleted),
        Some(other) => {
            let choices = ["active", "disabled", "revoked", "deleted"];
            let hint = did_you_mean(other, choices, "states");
            ctx.err(
                codes::INVALID_VALUE,
                &sp,
                format!("unknown state `{other}`"),
                hint,
            );
            None
        }
        None => None,
    }
}

/// A protected key cannot be revoked or deleted in the same change; false when it is.
fn protected_not_removed(
    ctx: &mut Ctx,
    p: &YPath,
    protected: bool,
    state: Option<DesiredState>,
) -> bool {
    if !(protected && matches!(state, Some(DesiredState::Revoked | DesiredState::Deleted))) {
        return true;
    }
    let d = Diagnostic::error(
        codes::PROTECTED_TOMBSTONE,
        "a protected key cannot be revoked or deleted",
    )
    .at(ctx.loc(&p.key("state")))
    .related("`protected: true` is here", ctx.loc(&p.key("protected")))
    .hint("first merge `protected: false`, then revoke or delete it in a separate change");
    ctx.push(d);
    false
}

/// Add a scope to the per-area set, keeping the highest level and warning on redundancy.
fn add_scope(
    ctx: &mut Ctx,
    refs: &Refs,
    scopes: &mut BTreeMap<String, (Scope, YPath)>,
    sc: Scope,
    ip: YPath,
) {
    let cat = &refs.config.catalogue;
    match scopes.get(&sc.area) {
        None => {
            scopes.insert(sc.area.clone(), (sc, ip));
        }
        Some((prev, pp)) => {
            let (kept, dropped, dropped_p, kept_p) = if cat.implies(prev, &sc) {
                (prev.clone(), sc.clone(), ip.clone(), pp.clone())
            } else {
                (sc.clone(), prev.clone(), pp.clone(), ip.clone())
            };
            let msg = if kept == dropped {
                format!("scope `{kept}` is listed twice")
            } else {
                format!("scope `{dropped}` is redundant: `{kept}` implies it")
            };
            let d = Diagnostic::warning(codes::REDUNDANT_SCOPE, msg)
                .at(ctx.loc(&dropped_p))
                .hint(format!(
                    "remove `{dropped}`; a higher level includes the lower ones"
                ));
            ctx.push(d);
            scopes.insert(kept.area.clone(), (kept, kept_p));
        }
    }
}

fn recipient(ctx: &mut Ctx, refs: &Refs, r: &str, p: &YPath, out: &mut BTreeSet<String>) -> bool {
    if looks_private(r) {
        ctx.err(
            codes::PRIVATE_KEY,
            p,
            "a PRIVATE key is pasted in a key's recipients (its value is not shown)",
            "remove it now and treat that identity as compromised; recipients are ids from people.yaml (`jdoe`, `team:ill-staff`)",
        );
        return false;
    }
    if let Some(team) = r.strip_prefix("team:") {
        if let Some(t) = refs.people.teams.get(team) {
            out.extend(t.members.iter().cloned());
            return true;
        }
        if !refs.people_ok || refs.people.team_names.iter().any(|n| n == team) {
            return false;
        }
        let hint = did_you_mean(
            team,
            refs.people.team_names.iter().map(String::as_str),
            "teams",
        );
        ctx.err(
            codes::UNKNOWN_TEAM,
            p,
            format!("unknown team `{team}`"),
            hint,
        );
        return false;
    }
    if refs.people.known.contains_key(r) {
        out.insert(r.to_string());
        return true;
    }
    if !refs.people_ok {
        return false;
    }
    let hint = if r.starts_with("age1") || r.starts_with("ssh-") {
        "a key's recipients are ids from people.yaml; put public keys on a person or service there"
            .to_string()
    } else {
        let teams: Vec<String> = refs
            .people
            .team_names
            .iter()
            .map(|t| format!("team:{t}"))
            .collect();
        let cands: Vec<&str> = refs
            .people
            .known
            .keys()
            .map(String::as_str)
            .chain(teams.iter().map(String::as_str))
            .collect();
        did_you_mean(r, cands.iter().copied(), "people, services and teams")
    };
    ctx.err(
        codes::UNKNOWN_RECIPIENT,
        p,
        format!("unknown recipient `{r}`"),
        hint,
    );
    false
}

fn rotation(ctx: &mut Ctx, v: &Value, p: &YPath) -> Option<Rotation> {
    let fields = ctx.mapping(v, p, fields::ROTATION)?;
    let mut r = Rotation::default();
    let mut ok = true;
    for (k, val) in fields {
        let fp = p.key(&k);
        match k.as_str() {
            "every" => match val {
                Value::Null => r.every = None,
                Value::String(s) if s == "never" => r.every = None,
                _ => match ctx.span(val, &fp) {
                    Some(s) if s.seconds > 0 => r.every = Some(s),
                    Some(_) => {
                        ok = false;
                        ctx.err(
                            codes::BAD_DURATION,
                            &fp,
                            "the rotation period must be longer than 0",
                            "e.g. `every: 90d`",
                        );
                    }
                    None => ok = false,
                },
            },
            "grace" => match ctx.span(val, &fp) {
                Some(s) => r.grace = s,
                None => ok = false,
            },
            "generation" => match ctx.uint(val, &fp).map(u32::try_from) {
                Some(Ok(g)) if g >= 1 => r.generation = g,
                Some(_) => {
                    ok = false;
                    ctx.err(
                        codes::INVALID_VALUE,
                        &fp,
                        "the generation must be a whole number from 1",
                        "start at `generation: 1`; bump it to rotate now",
                    );
                }
                None => ok = false,
            },
            _ => match ctx.string(val, &fp).as_deref() {
                Some("rotate") => r.rotate_on_recipient_added = true,
                Some("next-rotation") => r.rotate_on_recipient_added = false,
                Some(other) => {
                    ok = false;
                    let hint = did_you_mean(other, ["rotate", "next-rotation"], "choices");
                    ctx.err(
                        codes::INVALID_VALUE,
                        &fp,
                        format!("unknown choice `{other}` for on_recipient_added"),
                        hint,
                    );
                }
                None => ok = false,
            },
        }
    }
    if let Some(every) = r.every
        && r.grace > every
    {
        ctx.warn(
            codes::GRACE_EXCEEDS_PERIOD,
            &p.key("grace"),
            format!(
                "grace {} is longer than the rotation period {}",
                r.grace, every
            ),
            "two old secrets would be valid at once; shorten `grace`",
        );
    }
    ok.then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        assert!(valid_key_name("illiad-barcode-lookup"));
        assert!(valid_key_name("a"));
        assert!(!valid_key_name(""));
        assert!(!valid_key_name("1abc"));
        assert!(!valid_key_name("Abc"));
        assert!(!valid_key_name("a_b"));
        assert!(!valid_key_name(&"a".repeat(65)));
        assert!(valid_key_name(&"a".repeat(64)));
    }

    #[test]
    fn expiry_dates() {
        let Some(Expiry::At(t)) = parse_expires("2027-06-30") else {
            panic!("no date")
        };
        assert_eq!(t.to_rfc3339(), "2027-06-30T23:59:59+00:00");
        assert_eq!(parse_expires("never"), Some(Expiry::Never));
        assert!(matches!(
            parse_expires("2027-06-30T10:00:00+02:00"),
            Some(Expiry::At(_))
        ));
        assert_eq!(parse_expires("2027-13-01"), None);
        assert_eq!(parse_expires("soon"), None);
    }

    #[test]
    fn quotas() {
        assert_eq!(parse_quota("1000/day"), Some(Quota { per_day: 1000 }));
        assert_eq!(parse_quota(" 5 / day"), Some(Quota { per_day: 5 }));
        assert_eq!(parse_quota("0/day"), None);
        assert_eq!(parse_quota("1000/hour"), None);
        assert_eq!(parse_quota("1000"), None);
    }
}
