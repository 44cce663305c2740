//! The console rules: keys in a console store checked against their vendor's preset
//! (scopes offered, one permission level, lifetime rules, per-owner limits, fields a console
//! cannot honour, the console's environments), with file:line and did-you-mean. Pure: must
//! not read ledgers or talk to anyone.

use super::preset::{ExpiryRule, Pick, Preset, Vendor, preset};
use crate::diag::{Diagnostic, Diagnostics, codes};
use crate::spec::yaml::did_you_mean;
use crate::spec::{
    ConsoleStoreConfig, DesiredKey, DesiredState, Expiry, Spec, StoreConfig, StoreKind,
};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// The console stores of `spec` with their settings and presets.
pub fn console_stores(
    spec: &Spec,
) -> impl Iterator<Item = (&StoreConfig, &ConsoleStoreConfig, &'static Preset)> {
    spec.stores.values().filter_map(|s| match &s.kind {
        StoreKind::Console(c) => Some((
            s,
            c,
            preset(Vendor::parse(&c.vendor).unwrap_or(Vendor::Generic)),
        )),
        _ => None,
    })
}

/// Every console-rule problem of `spec`.
pub fn check(spec: &Spec, now: DateTime<Utc>) -> Diagnostics {
    let mut out = Diagnostics::default();
    for (store, console, p) in console_stores(spec) {
        if !p.environments.is_empty() && !p.environments.contains_key(&store.environment) {
            let envs: Vec<&str> = p.environments.keys().map(String::as_str).collect();
            out.push(
                Diagnostic::error(
                    codes::CONSOLE_ENVIRONMENT,
                    format!("{} has no environment `{}`", p.title, store.environment),
                )
                .at_opt(store.location.clone())
                .hint(did_you_mean(
                    &store.environment,
                    envs.iter().copied(),
                    "environments",
                )),
            );
        }
        let keys: Vec<&DesiredKey> = spec
            .keys
            .iter()
            .filter(|k| {
                k.store == store.name
                    && matches!(k.state, DesiredState::Active | DesiredState::Disabled)
            })
            .collect();
        for k in &keys {
            check_key(&mut out, spec, p, console, k, now);
        }
        per_owner(&mut out, p, console, &keys);
    }
    out
}

fn check_key(
    out: &mut Diagnostics,
    spec: &Spec,
    p: &Preset,
    c: &ConsoleStoreConfig,
    k: &DesiredKey,
    now: DateTime<Utc>,
) {
    let offered = offered(spec, p);
    for s in &k.scopes {
        let text = s.to_string();
        if offered.contains(&text) {
            continue;
        }
        let loc = k
            .field_locations
            .get(&format!("scope:{}", s.area))
            .cloned()
            .unwrap_or_else(|| k.field_location("scopes"));
        out.push(
            Diagnostic::error(
                codes::CONSOLE_SCOPE,
                format!(
                    "{} offers no scope `{text}` (key `{}` in store `{}`)",
                    p.title, k.name, k.store
                ),
            )
            .at(loc)
            .hint(did_you_mean(
                &text,
                offered.iter().map(String::as_str),
                "scopes",
            )),
        );
    }
    if p.pick == Pick::One && k.scopes.len() > 1 {
        let choices: Vec<&str> = p.areas.iter().map(|(_, l)| l.as_str()).collect();
        out.push(
            Diagnostic::error(
                codes::CONSOLE_ONE_SCOPE,
                format!(
                    "{} gives a key exactly one permission level; `{}` lists {}",
                    p.title,
                    k.name,
                    k.scopes.len()
                ),
            )
            .at(k.field_location("scopes"))
            .hint(format!("keep one of: {}", choices.join(", "))),
        );
    }
    let exp_loc = if k.field_locations.contains_key("expires") {
        k.field_location("expires")
    } else if k.field_locations.contains_key("lifetime") {
        k.field_location("lifetime")
    } else {
        k.location.clone()
    };
    if p.expiry == ExpiryRule::SetByConsole && k.expiry == Expiry::Never {
        out.push(
            Diagnostic::error(
                codes::CONSOLE_EXPIRY,
                format!(
                    "{} always sets an expiry; `{}` never expires",
                    p.title, k.name
                ),
            )
            .at(exp_loc.clone())
            .hint("give a `lifetime:` (the console's own reminders start 30 days before it ends)"),
        );
    }
    if let Some(max) = c.max_lifetime {
        let longest = now + max.to_chrono();
        let too_long = match &k.expiry {
            Expiry::Never => true,
            Expiry::Lifetime(s) => s.seconds > max.seconds,
            Expiry::At(t) => *t > longest,
        };
        if too_long {
            let param = p
                .max_lifetime_param
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            out.push(
                Diagnostic::error(
                    codes::CONSOLE_EXPIRY,
                    format!(
                        "`{}` outlives the console's longest lifetime {max}{param}",
                        k.name
                    ),
                )
                .at(exp_loc)
                .hint(format!("give `lifetime: {max}` or less")),
            );
        }
    }
    if k.quota.is_some() {
        out.push(
            Diagnostic::error(
                codes::CONSOLE_FIELD,
                format!(
                    "`{}` has a quota, but {} counts its own calls",
                    k.name, p.title
                ),
            )
            .at(k.field_location("quota"))
            .hint("remove `quota:`; keyward's quotas are enforced only by its own verify endpoint"),
        );
    }
}

/// The `area:level` strings the console offers (generic: the whole catalogue).
pub fn offered(spec: &Spec, p: &Preset) -> Vec<String> {
    if let Some(o) = &p.offered {
        return o.clone();
    }
    let areas: Vec<&str> = if p.areas.is_empty() {
        spec.catalogue.areas.iter().map(String::as_str).collect()
    } else {
        p.areas.iter().map(|(a, _)| a.as_str()).collect()
    };
    let levels: Vec<&str> = if p.levels.is_empty() {
        spec.catalogue.levels.iter().map(String::as_str).collect()
    } else {
        p.levels.iter().map(|(l, _)| l.as_str()).collect()
    };
    areas
        .iter()
        .flat_map(|a| levels.iter().map(move |l| format!("{a}:{l}")))
        .collect()
}

fn per_owner(out: &mut Diagnostics, p: &Preset, c: &ConsoleStoreConfig, keys: &[&DesiredKey]) {
    let Some(limit) = c
        .max_keys_per_owner
        .or(p.per_owner.as_ref().map(|o| o.default))
    else {
        return;
    };
    let mut by_owner: BTreeMap<&str, Vec<&DesiredKey>> = BTreeMap::new();
    for k in keys.iter().filter(|k| k.state == DesiredState::Active) {
        by_owner.entry(k.owner.as_str()).or_default().push(k);
    }
    let param = p
        .per_owner
        .as_ref()
        .map(|o| format!(" ({})", o.param))
        .unwrap_or_default();
    for (owner, ks) in by_owner.into_iter().filter(|(_, ks)| ks.len() > limit) {
        let mut d = Diagnostic::error(
            codes::CONSOLE_PER_OWNER,
            format!(
                "{owner} would own {} active keys in {}, which allows {limit} per user{param}",
                ks.len(),
                p.title
            ),
        )
        .at(ks[limit].field_location("owner"))
        .hint("give some keys another owner, or revoke ones no longer used");
        for k in ks.iter().take(limit) {
            d = d.related(format!("`{}`", k.name), k.location.clone());
        }
        out.push(d);
    }
}
