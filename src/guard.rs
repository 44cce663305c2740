//! Safety thresholds (keyward.yaml `guards:`): how many keys one apply may revoke, disable,
//! delete or replace per store, absolutely and as a share of the store's live managed keys,
//! stricter for production. A disable (`state: disabled`, or the policy's `unused_after`)
//! takes a key out of service as a revoke does, so it counts with the revokes. A pure check of a plan; must not apply or decide anything else.

use crate::diff::Action;
use crate::plan::{GuardViolation, Plan};
use crate::spec::Guards;

/// Every threshold the plan crosses (apply refuses them unless `--force`).
pub fn check(plan: &Plan, guards: &Guards) -> Vec<GuardViolation> {
    let mut out = Vec::new();
    for (store, st) in &plan.stores {
        let limits = guards.for_environment(&st.environment);
        let count = |pred: fn(Action) -> bool| -> u64 {
            plan.actions
                .iter()
                .filter(|c| &c.store == store && pred(c.action))
                .count() as u64
        };
        let revokes = count(|a| matches!(a, Action::Revoke | Action::Disable | Action::Delete));
        let replaces = count(|a| a == Action::Replace);
        let base = st.managed_live_keys as u64;
        let kind = if st.environment == "production" {
            "production store"
        } else {
            "store"
        };
        for (what, n, max, max_pct, guard, guard_pct) in [
            (
                "revoke, disable or delete",
                revokes,
                limits.max_revokes,
                limits.max_revoke_percent,
                "max_revokes",
                "max_revoke_percent",
            ),
            (
                "replace",
                replaces,
                limits.max_replaces,
                limits.max_replace_percent,
                "max_replaces",
                "max_replace_percent",
            ),
        ] {
            if n == 0 {
                continue;
            }
            if let Some(max) = max
                && n > max
            {
                out.push(GuardViolation {
                    store: store.clone(),
                    guard: guard.to_string(),
                    limit: max,
                    planned: n,
                    message: format!(
                        "{kind} {store}: the plan would {what} {n} key(s), more than {guard} = {max}"
                    ),
                });
            }
            if let Some(pct) = max_pct
                && base >= guards.min_keys_for_percent
                && base > 0
                && n * 100 > pct * base
            {
                let planned = (n * 100).div_ceil(base);
                out.push(GuardViolation {
                    store: store.clone(),
                    guard: guard_pct.to_string(),
                    limit: pct,
                    planned,
                    message: format!(
                        "{kind} {store}: the plan would {what} {n} of its {base} live key(s) ({planned}%), more than {guard_pct} = {pct}%"
                    ),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::tests::{key, live_from, now, spec};
    use std::collections::BTreeMap;

    fn plan_revoking(store: &str, live: usize, revoke: usize) -> Plan {
        let keys: Vec<_> = (0..live)
            .map(|i| key(store, &format!("k{i}"), &["bibs:read"]))
            .collect();
        let full = spec(keys.clone());
        let lives: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| live_from(&full, k, &format!("id{i}"), now()))
            .collect();
        let desired = spec(keys[revoke..].to_vec());
        let observed: BTreeMap<String, Vec<_>> = [(store.to_string(), lives)].into();
        crate::plan::test_plan(
            crate::diff::diff(&desired, &observed, now()),
            &observed,
            &desired,
        )
    }

    #[test]
    fn revoking_8_of_10_is_refused_in_sandbox_and_production() {
        let g = Guards::default();
        let v = check(&plan_revoking("sbx", 10, 8), &g);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(
            (v[0].guard.as_str(), v[0].planned),
            ("max_revoke_percent", 80)
        );
        let v = check(&plan_revoking("prod", 10, 8), &g);
        let names: Vec<&str> = v.iter().map(|g| g.guard.as_str()).collect();
        assert_eq!(names, ["max_revokes", "max_revoke_percent"]);
    }

    #[test]
    fn disables_count_with_the_revokes() {
        let mut plan = plan_revoking("prod", 10, 0);
        assert!(check(&plan, &Guards::default()).is_empty());
        let full = plan_revoking("prod", 10, 6);
        // The same six keys disabled instead of revoked cross the same guards.
        for c in full.actions.iter() {
            let mut c = c.clone();
            c.action = Action::Disable;
            plan.actions.push(c);
        }
        let v = check(&plan, &Guards::default());
        let names: Vec<&str> = v.iter().map(|g| g.guard.as_str()).collect();
        assert_eq!(names, ["max_revokes", "max_revoke_percent"], "{v:?}");
        assert!(
            v[0].message.contains("revoke, disable or delete 6 key(s)"),
            "{}",
            v[0].message
        );
    }

    #[test]
    fn small_changes_and_small_stores_pass() {
        let g = Guards::default();
        assert!(check(&plan_revoking("sbx", 10, 5), &g).is_empty());
        assert!(check(&plan_revoking("prod", 10, 2), &g).is_empty());
        // 3 of 3 is 100%, but the store is below min_keys_for_percent.
        assert!(check(&plan_revoking("sbx", 3, 3), &g).is_empty());
        // Switched off: nothing is refused.
        let mut off = g;
        off.production.max_revokes = None;
        off.production.max_revoke_percent = None;
        assert!(check(&plan_revoking("prod", 10, 10), &off).is_empty());
    }
}
