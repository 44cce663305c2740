//! When each key was last used, as the plan and the nightly report see it: the usage the
//! stores keep (read once per store by `observe::usage_of`) summarised per key, what a
//! plan shows beside a revoke, replace, disable or delete ("last used"), and how long a
//! key has gone unused for the policy's `unused_after`. Pure: must not read a store or the
//! clock; a store that keeps no usage is said to, never shown as unused.

use crate::model::LiveKey;
use crate::spec::{DesiredState, Spec};
use crate::store::usage::{KeyUse, Usage, days_unused, per_key};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The first day `Store::usage` is asked from when every row is wanted (a key's last use
/// may be older than any window).
pub const ALL_DAYS: &str = "0000-01-01";

/// What a plan says about a key's use, beside the change that takes it away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LastUse {
    /// False when the store keeps no usage (a console store, postgres-roles, redis-acl,
    /// an adapter without the `usage` capability): nothing can be said.
    pub visible: bool,
    /// The last valid verify; none when the store counted none (or keeps no usage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// When the store began counting calls (a key with no call was unused since then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counting_since: Option<DateTime<Utc>>,
    /// The store is a vendor console: usage is not visible there (with `visible: false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub console: bool,
}

/// One store's usage, per key id.
#[derive(Debug, Clone, Default)]
struct StoreUse {
    counting_since: Option<DateTime<Utc>>,
    keys: BTreeMap<String, KeyUse>,
}

/// The usage of every store read, summarised per key. A store absent from it was not read
/// (nothing is said about its keys); a store present with `None` keeps no usage.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    stores: BTreeMap<String, Option<StoreUse>>,
    /// The console stores of the spec (their usage is said to be not visible in the
    /// console).
    consoles: std::collections::BTreeSet<String>,
}

impl Seen {
    /// From what `observe::usage_of` read (`None`: the store keeps no usage).
    pub fn new(usage: &BTreeMap<String, Option<Usage>>) -> Seen {
        let stores = usage
            .iter()
            .map(|(name, u)| {
                let u = u.as_ref().map(|u| StoreUse {
                    counting_since: u.counting_since,
                    keys: per_key(&u.rows),
                });
                (name.clone(), u)
            })
            .collect();
        Seen {
            stores,
            consoles: Default::default(),
        }
    }

    /// Mark the console stores of `spec`, so what is shown of their keys' use says "not
    /// visible in the console".
    pub fn with_consoles(mut self, spec: &Spec) -> Seen {
        self.consoles = spec
            .stores
            .values()
            .filter(|c| matches!(c.kind, crate::spec::StoreKind::Console(_)))
            .map(|c| c.name.clone())
            .collect();
        self
    }

    /// Whether `store` keeps usage: None when it was not read.
    pub fn kept(&self, store: &str) -> Option<bool> {
        self.stores.get(store).map(Option::is_some)
    }

    /// The stores read that keep no usage, by name.
    pub fn not_kept(&self) -> impl Iterator<Item = &str> {
        self.stores
            .iter()
            .filter(|(_, u)| u.is_none())
            .map(|(n, _)| n.as_str())
    }

    /// What is known of the use of `key_id` in `store`; None when the store was not read.
    pub fn last_use(&self, store: &str, key_id: &str) -> Option<LastUse> {
        Some(match self.stores.get(store)? {
            None => LastUse {
                visible: false,
                at: None,
                counting_since: None,
                console: self.consoles.contains(store),
            },
            Some(u) => LastUse {
                visible: true,
                at: u.keys.get(key_id).and_then(|k| k.last_used),
                counting_since: u.counting_since,
                console: false,
            },
        })
    }

    /// Whole days `key` has gone unused at `now`: since its last valid verify or, never
    /// used, since it was made (or since counting began, if later). None when the store
    /// keeps no usage, was not read, or has not begun counting.
    pub fn days_unused(&self, store: &str, key: &LiveKey, now: DateTime<Utc>) -> Option<i64> {
        let u = self.stores.get(store)?.as_ref()?;
        let last = u.keys.get(&key.id).and_then(|k| k.last_used);
        days_unused(last, key.created_at, u.counting_since, now)
    }

    /// When `key` falls (or fell) due for disabling under a window of `window_days`: its
    /// last use (or creation, or the start of counting) plus the window. None as for
    /// [`Seen::days_unused`].
    pub fn unused_due(
        &self,
        store: &str,
        key: &LiveKey,
        window_days: i64,
    ) -> Option<DateTime<Utc>> {
        let u = self.stores.get(store)?.as_ref()?;
        let from = match u.keys.get(&key.id).and_then(|k| k.last_used) {
            Some(l) => l,
            None => key.created_at.max(u.counting_since?),
        };
        Some(from + chrono::Duration::days(window_days))
    }
}

/// The stores read that keep no usage while `unused_after` applies to some of their keys
/// (active in the spec, not protected), with how many: none of those can be seen unused.
pub fn blind(spec: &Spec, seen: &Seen) -> Vec<(String, usize)> {
    seen.not_kept()
        .filter_map(|store| {
            let n = spec
                .keys
                .iter()
                .filter(|k| k.store == store && k.state == DesiredState::Active && !k.protected)
                .filter(|k| spec.policy.unused_days(k).is_some())
                .count();
            (n > 0).then(|| (store.to_owned(), n))
        })
        .collect()
}

/// `last used ...` in words, as the plan shows it at `now`.
pub fn describe(u: &LastUse, now: DateTime<Utc>) -> String {
    if !u.visible && u.console {
        return "usage not visible in the console".into();
    }
    if !u.visible {
        return "usage not kept by this store".into();
    }
    match (u.at, u.counting_since) {
        (Some(at), _) => {
            let days = (now - at).num_days().max(0);
            let ago = match days {
                0 => "today".to_string(),
                1 => "1 day ago".to_string(),
                d => format!("{d} days ago"),
            };
            format!("last used {} ({ago})", at.format("%Y-%m-%d %H:%M UTC"))
        }
        (None, Some(since)) => format!(
            "never used (calls counted since {})",
            since.format("%Y-%m-%d")
        ),
        (None, None) => "never used (this store has counted no call yet)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::VerifyReason;
    use crate::store::usage::UsageRow;
    use chrono::TimeZone;

    fn t(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 8, d, 9, 30, 0).unwrap()
    }

    fn seen() -> Seen {
        let row = |key: &str, reason, at: DateTime<Utc>| UsageRow {
            key_id: key.into(),
            day: crate::store::usage::day_of(&at),
            reason,
            calls: 3,
            last_at: at,
        };
        Seen::new(&BTreeMap::from([
            (
                "prod".to_owned(),
                Some(Usage {
                    counting_since: Some(t(1)),
                    rows: vec![
                        row("A", VerifyReason::Ok, t(2)),
                        row("B", VerifyReason::Revoked, t(3)),
                    ],
                    ..Default::default()
                }),
            ),
            ("console".to_owned(), None),
        ]))
    }

    #[test]
    fn last_use_is_the_last_valid_call_and_a_store_without_usage_says_so() {
        let s = seen();
        let now = t(12);
        let a = s.last_use("prod", "A").unwrap();
        assert_eq!(
            describe(&a, now),
            "last used 2026-08-02 09:30 UTC (10 days ago)"
        );
        let b = s.last_use("prod", "B").unwrap();
        assert_eq!(b.at, None, "a refused call is not a use");
        assert_eq!(
            describe(&b, now),
            "never used (calls counted since 2026-08-01)"
        );
        let c = s.last_use("console", "X").unwrap();
        assert_eq!(describe(&c, now), "usage not kept by this store");
        let mut marked = seen();
        marked.consoles.insert("console".into());
        let c = marked.last_use("console", "X").unwrap();
        assert!(c.console && !c.visible);
        assert_eq!(describe(&c, now), "usage not visible in the console");
        assert!(s.last_use("elsewhere", "A").is_none());
        assert_eq!(s.not_kept().collect::<Vec<_>>(), ["console"]);
        assert_eq!(
            (s.kept("prod"), s.kept("console"), s.kept("x")),
            (Some(true), Some(false), None)
        );
    }
}
