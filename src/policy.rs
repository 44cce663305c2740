//! Policy: checks a validated spec against keyward.yaml's `policy` (forbidden scopes, the
//! owner's grants, lifetimes, keys per owner, recipients per key). Pure: no I/O and no
//! clock (the caller passes `now`); must not change the spec, only report on it.
//!
//! Decisions: owners are always people (a service owner is refused by `spec` with KW118,
//! so the `may_grant` bound always has a person behind it); a person without `may_grant`
//! is unbounded; keys in state `revoked` or `deleted` are being retired and are not
//! checked or counted; `max_keys_per_owner: 0` means no limit. Counting keys that exist
//! only in a live store (not in the spec) is the planner's job, not this module's.

use crate::diag::{Diagnostic, Diagnostics, codes};
use crate::spec::Loaded;
use crate::spec::model::{DesiredKey, DesiredState, Expiry, Scope, Spec};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

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
    let pol = &spec.policy;
    let cat = &spec.catalogue;
    for k in spec.keys.iter().filter(|k| live(k)) {
        // Forbidden scopes: a rule at level L matches L and every higher level of its area.
        for rule in &pol.forbid {
            if !rule.stores.is_empty() && !rule.stores.contains(&k.store) {
                continue;
            }
            for s in k.scopes.iter().filter(|s| cat.implies(s, &rule.scope)) {
                let where_ = if rule.stores.is_empty() {
                    String::new()
                } else {
                    format!(" in store `{}`", k.store)
                };
                let mut d = Diagnostic::error(
                    codes::FORBIDDEN_SCOPE,
                    format!(
                        "key `{}` asks for `{s}`, which is forbidden{where_}: {}",
                        k.name, rule.reason
                    ),
                )
                .at(scope_location(k, s))
                .hint(format!("remove `{s}` or lower it below `{}`", rule.scope));
                if let Some(l) = &rule.location {
                    d = d.related(
                        format!("forbidden by the policy rule for `{}`", rule.scope),
                        l.clone(),
                    );
                }
                out.push(d);
            }
        }

        // The owner's grants bound the key's scopes.
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

        // Lifetimes.
        let expiry_field = if k.field_locations.contains_key("expires") {
            "expires"
        } else {
            "lifetime"
        };
        let expiry_loc = k.field_location(expiry_field);
        if let Some(max) = pol.max_lifetime {
            match k.expiry {
                Expiry::Lifetime(l) if l > max => out.push(
                    Diagnostic::error(
                        codes::LIFETIME_TOO_LONG,
                        format!(
                            "key `{}` has lifetime {l}, longer than the maximum {max}",
                            k.name
                        ),
                    )
                    .at(expiry_loc.clone())
                    .hint(format!("use `lifetime: {max}` or less")),
                ),
                Expiry::At(t) if t > now + max.to_chrono() => {
                    let latest = (now + max.to_chrono()).format("%Y-%m-%d");
                    out.push(
                        Diagnostic::error(
                            codes::LIFETIME_TOO_LONG,
                            format!(
                                "key `{}` expires {}, more than the maximum lifetime {max} from now",
                                k.name,
                                t.format("%Y-%m-%d")
                            ),
                        )
                        .at(expiry_loc.clone())
                        .hint(format!("expire it on {latest} or earlier, or use `lifetime: {max}`")),
                    )
                }
                Expiry::Never => out.push(
                    Diagnostic::error(
                        codes::NEVER_EXPIRES,
                        format!(
                            "key `{}` never expires, but the policy sets max_lifetime {max}",
                            k.name
                        ),
                    )
                    .at(expiry_loc.clone())
                    .hint(format!(
                        "give it `lifetime: {max}` or less, or an `expires:` date"
                    )),
                ),
                _ => {}
            }
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
                    .hint("move `expires:` forward, or set `state: revoked` if the key is no longer needed"),
                );
        }

        // Recipients.
        if k.recipients.len() < pol.min_recipients {
            out.push(
                Diagnostic::error(
                    codes::TOO_FEW_RECIPIENTS,
                    format!(
                        "key `{}` has {} recipient(s); the policy requires at least {}",
                        k.name,
                        k.recipients.len(),
                        pol.min_recipients
                    ),
                )
                .at(k.field_location("recipients"))
                .hint("add people, services or `team:NAME` under `recipients:` (the owner counts unless `include_owner: false`)"),
            );
        }
    }

    // Keys per owner, over the whole spec.
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
            for k in keys.iter().take(MAX_NOTES) {
                d = d.related(
                    format!("key `{}` in `{}`", k.name, k.store),
                    k.location.clone(),
                );
            }
            out.push(d);
        }
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
}
