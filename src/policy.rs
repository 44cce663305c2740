//! Policy: checks a validated spec against keyward.yaml's `policy` (forbidden scopes, the
//! owner's grants, lifetimes and `never`, keys per owner — in the spec and, given the live
//! keys, in the stores —, recipients per key and environment, required fields and labels,
//! name patterns, environment markers). Pure: no I/O and no clock (the caller passes `now`
//! and the observed keys); must not change the spec, only report on it.
//!
//! Decisions: owners are always people (a service owner is refused by `spec` with KW118,
//! so the `may_grant` bound always has a person behind it); a person without `may_grant`
//! is unbounded; keys in state `revoked` or `deleted` are being retired and are not
//! checked or counted; `max_keys_per_owner: 0` means no limit. `check_live` adds the keys
//! that exist only in a live store: active or disabled keys *not* managed by keyward (made
//! in a console) count against their owner; managed keys missing from the spec do not
//! (the plan revokes them).
//!
//! Environment rule: a key is *marked* for an environment by a label `environment: NAME`,
//! by a directory under keys/ named after an environment (keys/sandbox/...), or by a
//! `-`/`_`/`.`-separated word of its name that is an environment of a configured store
//! (`illiad-sandbox`). A key marked for one environment in a store of another is refused
//! (KW211): a sandbox key may not reach a production store.

use crate::diag::Location;
use crate::diag::{Diagnostic, Diagnostics, codes};
use crate::model::LiveKey;
use crate::spec::Loaded;
use crate::spec::model::{DesiredKey, DesiredState, Expiry, Policy, Scope, Spec};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};

/// At most this many related notes on one "too many keys" diagnostic.
const MAX_NOTES: usize = 20;

fn live(k: &DesiredKey) -> bool {
    matches!(k.state, DesiredState::Active | DesiredState::Disabled)
}

fn scope_location(k: &DesiredKey, s: &Scope) -> crate::diag::Location {
    k.field_locations
        .get(&format!("scope:{}", s.area))
        .cloned()
        .unwrap_or_else(|| k.field_location("scopes"))
}

/// A note pointing at the policy setting `name` in keyward.yaml, when it is written there.
fn rule_note(mut d: Diagnostic, pol: &Policy, name: &str) -> Diagnostic {
    if let Some(l) = pol.locations.get(name) {
        d = d.related(
            format!("the rule `policy.{name}` is defined here"),
            l.clone(),
        );
    }
    d
}

/// The environment a key is marked for that differs from its store's, with how and where.
fn foreign_marker(spec: &Spec, k: &DesiredKey) -> Option<(String, String, Location)> {
    let envs: std::collections::BTreeSet<&str> = spec
        .stores
        .values()
        .map(|s| s.environment.as_str())
        .collect();
    if let Some(v) = k.labels.get("environment")
        && *v != k.environment
    {
        return Some((
            v.clone(),
            format!("its label `environment: {v}`"),
            k.field_location("label:environment"),
        ));
    }
    let dirs = k
        .location
        .file
        .parent()
        .into_iter()
        .flat_map(|p| p.components());
    for c in dirs.skip(1) {
        let c = c.as_os_str().to_string_lossy();
        if envs.contains(c.as_ref()) && c != k.environment {
            return Some((
                c.to_string(),
                format!("its file under `keys/.../{c}/`"),
                k.field_location("store"),
            ));
        }
    }
    for w in k.name.split(['-', '_', '.']) {
        if envs.contains(w) && w != k.environment {
            return Some((
                w.to_string(),
                format!("the word `{w}` in its name"),
                k.location.clone(),
            ));
        }
    }
    None
}

/// Where a forbid rule that applies to a key in `store` (serving `environment`) holds, for
/// its message: `""` (everywhere), ` in store `S`` or ` in production`.
pub fn forbidden_where(
    rule: &crate::spec::ForbiddenScope,
    store: &str,
    environment: &str,
) -> String {
    if rule.stores.iter().any(|s| s == store) {
        format!(" in store `{store}`")
    } else if rule.environments.iter().any(|e| e == environment) {
        format!(" in {environment}")
    } else {
        String::new()
    }
}

/// Check a loaded spec and fold the result into it: policy warnings join
/// `loaded.warnings`; when the policy finds an error, `Err` holds every diagnostic (the
/// spec's warnings too, sorted), and `loaded.sources` is still there to render them.
pub fn enforce(loaded: &mut Loaded, now: DateTime<Utc>) -> Result<(), Diagnostics> {
    let mut all = std::mem::take(&mut loaded.warnings);
    all.extend(check(&loaded.spec, now));
    all.sort();
    if all.has_errors() {
        return Err(all);
    }
    loaded.warnings = all;
    Ok(())
}

/// Every policy problem in `spec`, as of `now`.
pub fn check(spec: &Spec, now: DateTime<Utc>) -> Diagnostics {
    let mut out = Diagnostics::default();
    for k in spec.keys.iter().filter(|k| live(k)) {
        forbidden_scopes(spec, k, &mut out);
        beyond_owner_grant(spec, k, &mut out);
        lifetimes(spec, k, now, &mut out);
        too_few_recipients(spec, k, &mut out);
        required_fields_and_labels(spec, k, &mut out);
        name_patterns(spec, k, &mut out);
        environment_mismatch(spec, k, &mut out);
    }
    keys_per_owner(spec, &mut out);
    unused_not_visible(spec, &mut out);
    // The console stores' own rules (their vendors' presets).
    out.extend(crate::console::rules::check(spec, now));
    out.sort();
    out
}

/// Forbidden scopes: a rule at level L matches L and every higher level of its area.
fn forbidden_scopes(spec: &Spec, k: &DesiredKey, out: &mut Diagnostics) {
    let pol = &spec.policy;
    let cat = &spec.catalogue;
    for rule in &pol.forbid {
        if !rule.applies_to(&k.store, &k.environment) {
            continue;
        }
        for s in k.scopes.iter().filter(|s| cat.implies(s, &rule.scope)) {
            let where_ = forbidden_where(rule, &k.store, &k.environment);
            let mut d = Diagnostic::error(
                codes::FORBIDDEN_SCOPE,
                format!(
                    "key `{}` asks for `{s}`, which is forbidden{where_}: {}",
                    k.name, rule.reason
                ),
            )
            .at(scope_location(k, s))
            .hint(
                match cat
                    .level_rank(&rule.scope.level)
                    .and_then(|r| r.checked_sub(1))
                {
                    Some(below) => format!(
                        "remove `{s}`, or ask for `{}:{}` instead",
                        s.area, cat.levels[below]
                    ),
                    None => format!("remove `{s}`: no level of `{}` is granted here", s.area),
                },
            );
            if let Some(l) = &rule.location {
                d = d.related(
                    format!("forbidden by the policy rule for `{}`", rule.scope),
                    l.clone(),
                );
            }
            out.push(d);
        }
    }
}

/// The owner's grants bound the key's scopes.
fn beyond_owner_grant(spec: &Spec, k: &DesiredKey, out: &mut Diagnostics) {
    let cat = &spec.catalogue;
    if let Some(owner) = spec.principals.get(&k.owner)
        && let Some(grants) = &owner.may_grant
    {
        for s in &k.scopes {
            if grants.iter().any(|g| cat.implies(g, s)) {
                continue;
            }
            let may: Vec<String> = grants.iter().map(Scope::to_string).collect();
            let may = if may.is_empty() {
                "nothing".to_string()
            } else {
                may.join(", ")
            };
            let mut d = Diagnostic::error(
                    codes::BEYOND_OWNER_GRANT,
                    format!("owner `{}` may not grant `{s}` (key `{}`)", k.owner, k.name),
                )
                .at(scope_location(k, s))
                .hint(format!(
                    "`{}` may grant: {may}; narrow the scope, or choose an owner whose `may_grant` covers it",
                    k.owner
                ));
            if let Some(l) = &owner.location {
                d = d.related(format!("`{}` is defined here", k.owner), l.clone());
            }
            out.push(d);
        }
    }
}

/// The lifetime rules: the maximum lifetime, `never` only where allowed, already expired.
fn lifetimes(spec: &Spec, k: &DesiredKey, now: DateTime<Utc>, out: &mut Diagnostics) {
    let pol = &spec.policy;
    let expiry_field = if k.field_locations.contains_key("expires") {
        "expires"
    } else {
        "lifetime"
    };
    let expiry_loc = k.field_location(expiry_field);
    if let Some(max) = pol.max_lifetime {
        match k.expiry {
            Expiry::Lifetime(l) if l > max => out.push(rule_note(
                Diagnostic::error(
                    codes::LIFETIME_TOO_LONG,
                    format!(
                        "key `{}` has lifetime {l}, longer than the maximum {max}",
                        k.name
                    ),
                )
                .at(expiry_loc.clone())
                .hint(format!("use `lifetime: {max}` or less")),
                pol,
                "max_lifetime",
            )),
            Expiry::At(t) if t > now + max.to_chrono() => {
                let latest = (now + max.to_chrono()).format("%Y-%m-%d");
                out.push(rule_note(
                    Diagnostic::error(
                        codes::LIFETIME_TOO_LONG,
                        format!(
                            "key `{}` expires {}, more than the maximum lifetime {max} from now",
                            k.name,
                            t.format("%Y-%m-%d")
                        ),
                    )
                    .at(expiry_loc.clone())
                    .hint(format!(
                        "expire it on {latest} or earlier, or use `lifetime: {max}`"
                    )),
                    pol,
                    "max_lifetime",
                ))
            }
            _ => {}
        }
    }
    if k.expiry == Expiry::Never && !pol.never_allowed(&k.store) {
        let (why, rule) = match (&pol.allow_never, pol.max_lifetime) {
            (Some(stores), _) if stores.is_empty() => (
                "`policy.allow_never` lists no store".to_string(),
                "allow_never",
            ),
            (Some(stores), _) => (
                format!(
                    "keys may never expire only in {}",
                    stores
                        .iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "allow_never",
            ),
            (None, Some(max)) => (
                format!("the policy sets max_lifetime {max}"),
                "max_lifetime",
            ),
            (None, None) => (String::new(), ""),
        };
        let can_expire = spec
            .stores
            .get(&k.store)
            .is_none_or(|s| s.kind.keys_can_expire());
        let hint = match pol.max_lifetime {
            _ if !can_expire => format!(
                "the console of `{}` sets no expiry (its keys stay valid until deleted): list the store in `policy.allow_never`, and rotate the key on a schedule with `rotation: {{ every: 365d }}`",
                k.store
            ),
            Some(max) => format!("give it `lifetime: {max}` or less, or an `expires:` date"),
            None => "give it a `lifetime:` (e.g. `365d`) or an `expires:` date".to_string(),
        };
        out.push(rule_note(
            Diagnostic::error(
                codes::NEVER_EXPIRES,
                format!("key `{}` never expires in `{}`: {why}", k.name, k.store),
            )
            .at(expiry_loc.clone())
            .hint(hint),
            pol,
            rule,
        ));
    }
    if let Expiry::At(t) = k.expiry
        && t <= now
        && k.state == DesiredState::Active
    {
        out.push(
            Diagnostic::warning(
                codes::ALREADY_EXPIRED,
                format!("key `{}` expired on {}", k.name, t.format("%Y-%m-%d")),
            )
            .at(expiry_loc.clone())
            .hint(
                "move `expires:` forward, or set `state: revoked` if the key is no longer needed",
            ),
        );
    }
}

/// The minimum number of recipients (per environment).
fn too_few_recipients(spec: &Spec, k: &DesiredKey, out: &mut Diagnostics) {
    let pol = &spec.policy;
    let (min, rule) = pol.min_recipients_for(&k.environment);
    if k.recipients.len() < min {
        let in_env = if rule.contains('.') {
            format!(" in {}", k.environment)
        } else {
            String::new()
        };
        out.push(rule_note(
            Diagnostic::error(
                codes::TOO_FEW_RECIPIENTS,
                format!(
                    "key `{}` has {} recipient(s); the policy requires at least {min}{in_env}",
                    k.name,
                    k.recipients.len(),
                ),
            )
            .at(k.field_location("recipients"))
            .hint("add people, services or `team:NAME` under `recipients:` (the owner counts unless `include_owner: false`)"),
            pol,
            &rule,
        ));
    }
}

/// The fields and labels the policy requires.
fn required_fields_and_labels(spec: &Spec, k: &DesiredKey, out: &mut Diagnostics) {
    let pol = &spec.policy;
    for f in &pol.required_fields {
        let present = match f.as_str() {
            "purpose" => k.purpose.as_deref().is_some_and(|p| !p.trim().is_empty()),
            "expiry" => {
                k.field_locations.contains_key("expires")
                    || k.field_locations.contains_key("lifetime")
            }
            "quota" => k.quota.is_some(),
            "rotation" => k.rotation.every.is_some(),
            _ => k.field_locations.contains_key("recipients"),
        };
        if present {
            continue;
        }
        let example = match f.as_str() {
            "purpose" => "purpose: What the integration does, for whom",
            "expiry" => "lifetime: 365d",
            "quota" => "quota: 1000/day",
            "rotation" => "rotation: { every: 90d }",
            _ => "recipients: [jdoe]",
        };
        out.push(rule_note(
            Diagnostic::error(
                codes::MISSING_REQUIRED_FIELD,
                format!("key `{}` has no `{f}`, which the policy requires", k.name),
            )
            .at(k.location.clone())
            .hint(format!("add `{example}`")),
            pol,
            "required_fields",
        ));
    }
    for l in &pol.required_labels {
        if k.labels.get(l).is_some_and(|v| !v.trim().is_empty()) {
            continue;
        }
        let at = if k.field_locations.contains_key("labels") {
            k.field_location("labels")
        } else {
            k.location.clone()
        };
        out.push(rule_note(
            Diagnostic::error(
                codes::MISSING_REQUIRED_LABEL,
                format!(
                    "key `{}` has no label `{l}`, which the policy requires",
                    k.name
                ),
            )
            .at(at)
            .hint(format!(
                "add `labels: {{ {l}: ... }}` (e.g. the ticket that asked for the key)"
            )),
            pol,
            "required_labels",
        ));
    }
}

/// Naming patterns per store.
fn name_patterns(spec: &Spec, k: &DesiredKey, out: &mut Diagnostics) {
    let pol = &spec.policy;
    for np in pol.name_patterns_for(&k.store) {
        if np.regex.is_match(&k.name) {
            continue;
        }
        let which = if np.store == "*" {
            "every store".to_string()
        } else {
            format!("store `{}`", np.store)
        };
        out.push(rule_note(
            Diagnostic::error(
                codes::NAME_PATTERN,
                format!(
                    "key name `{}` does not match the pattern `{}` for {which}",
                    k.name, np.pattern
                ),
            )
            .at(k.location.clone())
            .hint("rename the key so its whole name matches the pattern"),
            pol,
            &format!("name_patterns.{}", np.store),
        ));
    }
}

/// Environment: a key marked for one environment may not reach a store of another.
fn environment_mismatch(spec: &Spec, k: &DesiredKey, out: &mut Diagnostics) {
    if let Some((env, how, at)) = foreign_marker(spec, k) {
        let mut d = Diagnostic::error(
            codes::ENVIRONMENT_MISMATCH,
            format!(
                "key `{}` is marked for `{env}` ({how}) but its store `{}` is `{}`",
                k.name, k.store, k.environment
            ),
        )
        .at(at)
        .hint(format!(
            "a {env} key may not reach a {} store: use a `{env}` store, or request a separate {} key",
            k.environment, k.environment
        ));
        if let Some(l) = spec.stores.get(&k.store).and_then(|s| s.location.clone()) {
            d = d.related(format!("store `{}` serves `{}`", k.store, k.environment), l);
        }
        out.push(d);
    }
}

/// Keys per owner, over the whole spec.
fn keys_per_owner(spec: &Spec, out: &mut Diagnostics) {
    let pol = &spec.policy;
    if pol.max_keys_per_owner > 0 {
        let mut by_owner: BTreeMap<&str, Vec<&DesiredKey>> = BTreeMap::new();
        for k in spec.keys.iter().filter(|k| live(k)) {
            by_owner.entry(k.owner.as_str()).or_default().push(k);
        }
        for (owner, keys) in by_owner {
            if keys.len() <= pol.max_keys_per_owner {
                continue;
            }
            let last = keys[keys.len() - 1];
            let mut d = Diagnostic::error(
                codes::TOO_MANY_KEYS,
                format!(
                    "owner `{owner}` has {} keys; the policy allows at most {}",
                    keys.len(),
                    pol.max_keys_per_owner
                ),
            )
            .at(last.field_location("owner"))
            .hint("revoke keys that are no longer needed (`state: revoked`), or give some keys another owner");
            d = rule_note(d, pol, "max_keys_per_owner");
            for k in keys.iter().take(MAX_NOTES) {
                d = d.related(
                    format!("key `{}` in `{}`", k.name, k.store),
                    k.location.clone(),
                );
            }
            out.push(d);
        }
    }
}

/// `unused_after` over keys of stores that never keep usage (consoles, postgres-roles,
/// redis-acl): one warning per store, since none of its keys can be seen unused. (An
/// `http` or `exec` store says so in the plan, from its capabilities.)
fn unused_not_visible(spec: &Spec, out: &mut Diagnostics) {
    use crate::spec::StoreKind;
    let mut blind: BTreeMap<&str, Vec<&DesiredKey>> = BTreeMap::new();
    for k in &spec.keys {
        if k.state != DesiredState::Active || k.protected || spec.policy.unused_days(k).is_none() {
            continue;
        }
        let Some(store) = spec.stores.get(&k.store) else {
            continue;
        };
        if matches!(
            store.kind,
            StoreKind::Console(_) | StoreKind::PostgresRoles { .. } | StoreKind::RedisAcl { .. }
        ) {
            blind.entry(store.name.as_str()).or_default().push(k);
        }
    }
    for (store, keys) in blind {
        let kind = spec.stores.get(store).map_or("", |s| s.kind.name());
        let at = match spec.policy.locations.get("unused_after") {
            Some(l) => l.clone(),
            None => keys[0].field_location("unused_after"),
        };
        out.push(
            Diagnostic::warning(
                codes::UNUSED_NOT_VISIBLE,
                format!(
                    "store `{store}` ({kind}) keeps no usage: `unused_after` cannot see whether its {} key(s) are used, so none is disabled for disuse",
                    keys.len()
                ),
            )
            .at(at)
            .hint("review these keys by hand (the vendor console may show their last use), or keep keys that must retire unused in a store `keyward serve` serves"),
        );
    }
}

/// The one-screen summary `keyward validate` ends with (also in its JSON as `report`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Active or disabled keys per store.
    pub stores: Vec<StoreCount>,
    /// Active or disabled keys per owner, against `max_keys_per_owner` (0 = no limit).
    pub owners: Vec<OwnerCount>,
    /// `store/name` of keys with a scope above the lowest level (e.g. `bibs:write`).
    pub write_keys: Vec<String>,
    /// `store/name` of keys that never expire.
    pub never_expire: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreCount {
    pub store: String,
    pub environment: String,
    pub keys: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct OwnerCount {
    pub owner: String,
    pub keys: usize,
    pub limit: usize,
}

/// Summarise a spec's live (active or disabled) keys.
pub fn report(spec: &Spec) -> Report {
    let keys: Vec<&DesiredKey> = spec.keys.iter().filter(|k| live(k)).collect();
    let stores = spec
        .stores
        .values()
        .map(|s| StoreCount {
            store: s.name.clone(),
            environment: s.environment.clone(),
            keys: keys.iter().filter(|k| k.store == s.name).count(),
        })
        .collect();
    let mut by_owner: BTreeMap<&str, usize> = BTreeMap::new();
    for k in &keys {
        *by_owner.entry(k.owner.as_str()).or_default() += 1;
    }
    let owners = by_owner
        .into_iter()
        .map(|(o, n)| OwnerCount {
            owner: o.to_string(),
            keys: n,
            limit: spec.policy.max_keys_per_owner,
        })
        .collect();
    let id = |k: &&DesiredKey| format!("{}/{}", k.store, k.name);
    let write_keys = keys
        .iter()
        .filter(|k| {
            k.scopes
                .iter()
                .any(|s| spec.catalogue.level_rank(&s.level).is_some_and(|r| r > 0))
        })
        .map(id)
        .collect();
    let never_expire = keys
        .iter()
        .filter(|k| k.expiry == Expiry::Never)
        .map(id)
        .collect();
    Report {
        stores,
        owners,
        write_keys,
        never_expire,
    }
}

/// The report as text, at most a screen: long lists are cut with "and N more".
pub fn render_report(r: &Report) -> String {
    use std::fmt::Write as _;
    const MAX_OWNERS: usize = 10;
    const MAX_LIST: usize = 8;
    let list = |items: &[String]| {
        if items.is_empty() {
            return "none".to_string();
        }
        let mut s = items
            .iter()
            .take(MAX_LIST)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if items.len() > MAX_LIST {
            let _ = write!(s, ", and {} more", items.len() - MAX_LIST);
        }
        s
    };
    let mut out = String::from("\nPolicy report\n");
    let stores: Vec<String> = r
        .stores
        .iter()
        .map(|s| format!("{} ({}) {}", s.store, s.environment, s.keys))
        .collect();
    let _ = writeln!(out, "  keys per store:  {}", stores.join(", "));
    let mut owners = r.owners.clone();
    owners.sort_by(|a, b| b.keys.cmp(&a.keys).then(a.owner.cmp(&b.owner)));
    let shown: Vec<String> = owners
        .iter()
        .take(MAX_OWNERS)
        .map(|o| {
            let limit = if o.limit == 0 {
                "no limit".to_string()
            } else {
                o.limit.to_string()
            };
            let flag = match o.limit {
                0 => "",
                l if o.keys > l => " (over the limit)",
                l if o.keys == l => " (at the limit)",
                _ => "",
            };
            format!("{} {}/{limit}{flag}", o.owner, o.keys)
        })
        .collect();
    let more = if owners.len() > MAX_OWNERS {
        format!(", and {} more", owners.len() - MAX_OWNERS)
    } else {
        String::new()
    };
    let _ = writeln!(out, "  keys per owner:  {}{more}", shown.join(", "));
    let _ = writeln!(
        out,
        "  grant write:     {} — {}",
        r.write_keys.len(),
        list(&r.write_keys)
    );
    let _ = writeln!(
        out,
        "  never expire:    {} — {}",
        r.never_expire.len(),
        list(&r.never_expire)
    );
    out
}

/// Plan or apply refused because the spec, together with the live keys, breaks policy
/// (exit 3). `rendered` holds the diagnostics as text for stderr.
#[derive(Debug, thiserror::Error)]
#[error(
    "the spec breaks policy ({count} violation(s)) counting the keys the stores hold; refusing. Fix the spec or the policy in keyward.yaml."
)]
pub struct Refused {
    pub count: usize,
    pub rendered: String,
}

impl Refused {
    pub fn new(found: &Diagnostics, sources: &crate::diag::Sources) -> Refused {
        Refused {
            count: found.error_count(),
            rendered: crate::diag::render(found, sources, false),
        }
    }
}

/// Keys per owner counted over the spec *and* the live stores (`observed`, as listed by
/// plan/apply): the owner's active and disabled keys in the spec plus their active and
/// disabled live keys that keyward does not manage (made in a console). Managed live keys
/// missing from the spec are not counted: the plan revokes them. Owners already over the
/// limit in the spec alone are reported by `check`, not again here.
pub fn check_live(spec: &Spec, observed: &BTreeMap<String, Vec<LiveKey>>) -> Diagnostics {
    let mut out = Diagnostics::default();
    let pol = &spec.policy;
    let max = pol.max_keys_per_owner;
    if max == 0 {
        return out;
    }
    let mut in_spec: BTreeMap<&str, Vec<&DesiredKey>> = BTreeMap::new();
    for k in spec.keys.iter().filter(|k| live(k)) {
        in_spec.entry(k.owner.as_str()).or_default().push(k);
    }
    // A console key a spec entry adopts (`adopt: ID`) is counted once, as that entry.
    let adopted: BTreeSet<(&str, &str)> = spec
        .keys
        .iter()
        .filter_map(|k| Some((k.store.as_str(), k.adopt.as_deref()?)))
        .collect();
    let mut outside: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (store, keys) in observed {
        for k in keys {
            let active = matches!(
                k.status,
                crate::model::KeyStatus::Active | crate::model::KeyStatus::Disabled
            );
            if active && !k.is_managed() && !adopted.contains(&(store.as_str(), k.id.as_str())) {
                outside
                    .entry(k.owner.as_str())
                    .or_default()
                    .push(format!("{store}/{} ({})", k.name, k.id));
            }
        }
    }
    for (owner, keys) in in_spec {
        let extra = outside.get(owner).map(Vec::as_slice).unwrap_or_default();
        let total = keys.len() + extra.len();
        if keys.len() > max || total <= max {
            continue;
        }
        let last = keys[keys.len() - 1];
        let shown: Vec<&str> = extra.iter().take(MAX_NOTES).map(String::as_str).collect();
        let more = if extra.len() > shown.len() {
            format!(", and {} more", extra.len() - shown.len())
        } else {
            String::new()
        };
        let d = Diagnostic::error(
            codes::TOO_MANY_KEYS,
            format!(
                "owner `{owner}` would have {total} keys: {} in the spec and {} made outside keyward ({}{more}); the policy allows at most {max}",
                keys.len(),
                extra.len(),
                shown.join(", ")
            ),
        )
        .at(last.field_location("owner"))
        .hint("revoke keys the owner no longer needs (in the console, or adopt them with `keyward import` and set `state: revoked`), or give this key another owner");
        out.push(rule_note(d, pol, "max_keys_per_owner"));
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Location;
    use crate::spec::model::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;

    fn sc(s: &str) -> Scope {
        Scope::parse(s).unwrap_or_else(|| panic!("bad scope {s}"))
    }

    fn key(name: &str, owner: &str, scopes: &[&str], expiry: Expiry) -> DesiredKey {
        DesiredKey {
            name: name.into(),
            store: "prod".into(),
            environment: "production".into(),
            owner: owner.into(),
            purpose: None,
            scopes: scopes.iter().map(|s| sc(s)).collect(),
            expiry,
            recipients: BTreeSet::from([owner.to_string()]),
            rotation: Rotation::default(),
            quota: None,
            labels: BTreeMap::new(),
            state: DesiredState::Active,
            protected: false,
            adopt: None,
            unused_after: None,
            location: Location::new("keys/a.yaml", 2, 9),
            field_locations: BTreeMap::new(),
        }
    }

    fn person(id: &str, may_grant: Option<&[&str]>) -> Principal {
        Principal {
            id: id.into(),
            kind: PrincipalKind::Person,
            name: None,
            email: None,
            recipients: vec![RecipientKey::new("age1xyz")],
            may_grant: may_grant.map(|g| g.iter().map(|s| sc(s)).collect()),
            location: None,
        }
    }

    fn spec(keys: Vec<DesiredKey>, policy: Policy) -> Spec {
        Spec {
            root: PathBuf::from("/repo"),
            stores: BTreeMap::new(),
            catalogue: ScopeCatalogue::default(),
            policy,
            delivery: DeliveryConfig {
                outbox: PathBuf::from("/repo/deliveries"),
                retain: Span::days(7),
            },
            guards: Guards::default(),
            notify: None,
            principals: BTreeMap::from([
                (
                    "jdoe".to_string(),
                    person("jdoe", Some(&["bibs:write", "users:read"])),
                ),
                ("free".to_string(), person("free", None)),
            ]),
            teams: BTreeMap::new(),
            keys,
        }
    }

    fn codes_of(d: &Diagnostics) -> Vec<&'static str> {
        d.iter().map(|d| d.code).collect()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn forbid_write_matches_write_only_and_read_matches_all_levels() {
        let forbid = |s: &str| ForbiddenScope {
            scope: sc(s),
            reason: "no".into(),
            stores: vec![],
            environments: vec![],
            location: None,
        };
        let p = Policy {
            forbid: vec![forbid("configuration:write")],
            ..Policy::default()
        };
        let ok = spec(
            vec![key("a", "free", &["configuration:read"], Expiry::Never)],
            p.clone(),
        );
        assert!(check(&ok, now()).is_empty());
        let bad = spec(
            vec![key("a", "free", &["configuration:write"], Expiry::Never)],
            p,
        );
        let d = check(&bad, now());
        assert_eq!(codes_of(&d), vec![codes::FORBIDDEN_SCOPE]);
        assert!(d.0[0].message.contains(": no"), "{}", d.0[0].message);

        let p = Policy {
            forbid: vec![forbid("bibs:read")],
            ..Policy::default()
        };
        let d = check(
            &spec(vec![key("a", "free", &["bibs:write"], Expiry::Never)], p),
            now(),
        );
        assert_eq!(codes_of(&d), vec![codes::FORBIDDEN_SCOPE]);

        let mut rule = forbid("bibs:read");
        rule.stores = vec!["sandbox".into()];
        let p = Policy {
            forbid: vec![rule],
            ..Policy::default()
        };
        assert!(
            check(
                &spec(vec![key("a", "free", &["bibs:write"], Expiry::Never)], p),
                now()
            )
            .is_empty()
        );
    }

    #[test]
    fn forbid_per_environment_applies_to_that_environment_only() {
        let rule = ForbiddenScope {
            scope: sc("users:write"),
            reason: "No patron writes in production.".into(),
            stores: vec![],
            environments: vec!["production".into()],
            location: None,
        };
        let p = Policy {
            forbid: vec![rule],
            ..Policy::default()
        };
        // key() puts keys in `prod`, a production store.
        let d = check(
            &spec(
                vec![key("a", "free", &["users:write"], Expiry::Never)],
                p.clone(),
            ),
            now(),
        );
        assert_eq!(codes_of(&d), vec![codes::FORBIDDEN_SCOPE]);
        assert!(
            d.0[0]
                .message
                .contains("forbidden in production: No patron writes in production."),
            "{}",
            d.0[0].message
        );
        let mut sandbox = key("a", "free", &["users:write"], Expiry::Never);
        sandbox.store = "sbx".into();
        sandbox.environment = "sandbox".into();
        assert!(check(&spec(vec![sandbox], p), now()).is_empty());
    }

    #[test]
    fn owner_grants_bound_scopes() {
        let s = spec(
            vec![key(
                "a",
                "jdoe",
                &["bibs:read", "users:write", "courses:read"],
                Expiry::Never,
            )],
            Policy::default(),
        );
        let d = check(&s, now());
        assert_eq!(
            codes_of(&d),
            vec![codes::BEYOND_OWNER_GRANT, codes::BEYOND_OWNER_GRANT]
        );
        assert!(d.iter().any(|d| d.message.contains("`users:write`")));
        assert!(d.iter().any(|d| d.message.contains("`courses:read`")));
    }

    #[test]
    fn lifetimes() {
        let p = Policy {
            max_lifetime: Some(Span::days(730)),
            ..Policy::default()
        };
        let in_3y = now() + chrono::Duration::days(3 * 365);
        let soon = now() + chrono::Duration::days(30);
        let past = now() - chrono::Duration::days(1);
        let keys = vec![
            key(
                "a",
                "free",
                &["bibs:read"],
                Expiry::Lifetime(Span::days(731)),
            ),
            key(
                "b",
                "free",
                &["bibs:read"],
                Expiry::Lifetime(Span::days(730)),
            ),
            key("c", "free", &["bibs:read"], Expiry::At(in_3y)),
            key("d", "free", &["bibs:read"], Expiry::At(soon)),
            key("e", "free", &["bibs:read"], Expiry::Never),
            key("f", "free", &["bibs:read"], Expiry::At(past)),
        ];
        let d = check(&spec(keys, p), now());
        let mut got: Vec<(&str, String)> = d
            .iter()
            .map(|d| {
                (
                    d.code,
                    d.message.split('`').nth(1).unwrap_or("").to_string(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (codes::LIFETIME_TOO_LONG, "a".to_string()),
                (codes::LIFETIME_TOO_LONG, "c".to_string()),
                (codes::NEVER_EXPIRES, "e".to_string()),
                (codes::ALREADY_EXPIRED, "f".to_string()),
            ]
        );
        // Without a maximum, `never` is fine.
        let d = check(
            &spec(
                vec![key("e", "free", &["bibs:read"], Expiry::Never)],
                Policy::default(),
            ),
            now(),
        );
        assert!(d.is_empty());
    }

    #[test]
    fn keys_per_owner_and_recipients() {
        let p = Policy {
            max_keys_per_owner: 2,
            min_recipients: 2,
            ..Policy::default()
        };
        let mut keys: Vec<DesiredKey> = ["a", "b", "c"]
            .iter()
            .map(|n| key(n, "free", &["bibs:read"], Expiry::Never))
            .collect();
        for k in &mut keys {
            k.recipients.insert("other".into());
        }
        let d = check(&spec(keys.clone(), p.clone()), now());
        assert_eq!(codes_of(&d), vec![codes::TOO_MANY_KEYS]);
        assert_eq!(d.0[0].related.len(), 3);
        // Revoked keys do not count.
        keys[2].state = DesiredState::Revoked;
        assert!(check(&spec(keys.clone(), p.clone()), now()).is_empty());
        keys[0].recipients = BTreeSet::from(["free".to_string()]);
        assert_eq!(
            codes_of(&check(&spec(keys, p), now())),
            vec![codes::TOO_FEW_RECIPIENTS]
        );
    }

    fn live_key(name: &str, owner: &str, managed: bool, status: &str) -> LiveKey {
        serde_json::from_value(serde_json::json!({
            "id": format!("id-{name}"), "name": name, "environment": "production",
            "owner": owner, "purpose": null, "scopes": ["bibs:read"], "labels": {},
            "status": status, "issued_at": "2026-01-01T00:00:00Z",
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "expires_at": null, "lifetime": null, "version": 1, "generation": 1,
            "spec_generation": 1, "previous_valid_until": null, "recipients": {},
            "quota_per_day": null, "protected": false,
            "managed_by": if managed { Some("keyward") } else { None },
        }))
        .expect("a live key")
    }

    #[test]
    fn live_keys_outside_keyward_count_managed_leftovers_do_not() {
        let p = Policy {
            max_keys_per_owner: 2,
            ..Policy::default()
        };
        let s = spec(
            vec![
                key("a", "free", &["bibs:read"], Expiry::Never),
                key("b", "free", &["bibs:read"], Expiry::Never),
            ],
            p,
        );
        let mut observed = BTreeMap::new();
        observed.insert(
            "prod".to_string(),
            vec![
                live_key("left-over", "free", true, "active"),
                live_key("revoked-console", "free", false, "revoked"),
                live_key("someone-else", "jdoe", false, "active"),
            ],
        );
        assert!(check_live(&s, &observed).is_empty());
        if let Some(v) = observed.get_mut("prod") {
            v.push(live_key("console", "free", false, "disabled"));
        }
        let d = check_live(&s, &observed);
        assert_eq!(codes_of(&d), vec![codes::TOO_MANY_KEYS]);
        assert!(
            d.0[0].message.contains("prod/console (id-console)"),
            "{}",
            d.0[0].message
        );
    }

    #[test]
    fn environment_markers() {
        let mut s = spec(vec![], Policy::default());
        for (name, env) in [("prod", "production"), ("sbx", "sandbox")] {
            s.stores.insert(
                name.into(),
                StoreConfig {
                    name: name.into(),
                    kind: StoreKind::Sqlite {
                        path: PathBuf::from("/x"),
                    },
                    environment: env.into(),
                    location: None,
                    budget: None,
                },
            );
        }
        let plain = key("ill-lookup", "free", &["bibs:read"], Expiry::Never);
        let mut by_label = plain.clone();
        by_label
            .labels
            .insert("environment".into(), "sandbox".into());
        let mut by_dir = plain.clone();
        by_dir.location.file = PathBuf::from("keys/sandbox/ill.yaml");
        let by_name = key("ill-sandbox", "free", &["bibs:read"], Expiry::Never);
        let mut matching = by_label.clone();
        matching.store = "sbx".into();
        matching.environment = "sandbox".into();
        s.keys = vec![plain, by_label, by_dir, by_name, matching];
        let d = check(&s, now());
        assert_eq!(codes_of(&d), vec![codes::ENVIRONMENT_MISMATCH; 3]);
    }
}
