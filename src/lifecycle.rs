//! Lifecycle: what falls due for live keys as time passes (expiry, scheduled rotation) and
//! which expiry reminders are owed. Pure: takes the spec, the observed keys and `now`;
//! must not do I/O, read the clock or send anything (`notify` sends, the CLI prints).

use crate::model::{KeyStatus, LiveKey};
use crate::spec::{Expiry, Span, Spec};
use crate::unused::Seen;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// Why a key shows up in the expiry report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DueKind {
    /// Past its expiry: the store already refuses it.
    Expired,
    /// Expires within the window.
    Expiring,
    /// A scheduled rotation (`rotation.every`) is due within the window (or overdue).
    RotationDue,
    /// Unused: the plan disables it (policy `unused_after`) within the window, or already
    /// would.
    Unused,
}

impl DueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DueKind::Expired => "expired",
            DueKind::Expiring => "expiring",
            DueKind::RotationDue => "rotation due",
            DueKind::Unused => "unused",
        }
    }
}

/// One key that needs attention soon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DueItem {
    pub kind: DueKind,
    pub store: String,
    pub name: String,
    pub key_id: String,
    pub owner: String,
    pub environment: String,
    /// The expiry, or when the rotation falls due.
    pub at: DateTime<Utc>,
    /// Whole days from now until `at` (negative when past).
    pub days_left: i64,
    /// Managed by keyward (else made in a console and not in the spec).
    pub managed: bool,
    /// Where the key is defined (`file:line`), when it is in the spec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defined_at: Option<String>,
    /// What the owner (or an admin) should do.
    pub todo: String,
    /// A key in a console store: the steps an admin does there to renew it (the rotation
    /// the checklist will guide, in the vendor's words); `console::steps::add_renewal`
    /// fills them in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub console_steps: Vec<String>,
    /// Unused keys: whole days without a valid verify (`at` is when the plan disables it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unused_days: Option<i64>,
    /// Unused keys: the last valid verify (none: never used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used: Option<DateTime<Utc>>,
}

impl DueItem {
    /// `k` in `store` (defined by `desired` in the spec, if it is) falling due at `at`.
    fn of(
        kind: DueKind,
        store: &str,
        k: &LiveKey,
        desired: Option<&crate::spec::DesiredKey>,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
        todo: String,
    ) -> DueItem {
        DueItem {
            kind,
            store: store.to_owned(),
            name: k.name.clone(),
            key_id: k.id.clone(),
            owner: k.owner.clone(),
            environment: k.environment.clone(),
            at,
            days_left: days_between(now, at),
            managed: k.is_managed(),
            defined_at: desired
                .map(|d| format!("{}:{}", d.location.file.display(), d.location.line)),
            todo,
            console_steps: Vec::new(),
            unused_days: None,
            last_used: None,
        }
    }
}

/// Whole days from `now` to `at`, rounded towards zero (so "6 days 23 hours" is 6).
pub fn days_between(now: DateTime<Utc>, at: DateTime<Utc>) -> i64 {
    (at - now).num_days()
}

/// Every active live key that expires, or whose scheduled rotation falls due, before
/// `now + within` (including those already past). Revoked and disabled keys are left out,
/// and so are managed keys the spec no longer has (the next apply revokes them).
/// Sorted by owner, then date.
pub fn due(
    spec: &Spec,
    observed: &BTreeMap<String, Vec<LiveKey>>,
    now: DateTime<Utc>,
    within: Span,
) -> Vec<DueItem> {
    let horizon = now + within.to_chrono();
    let mut out = Vec::new();
    for (store, keys) in observed {
        for k in keys.iter().filter(|k| k.status == KeyStatus::Active) {
            let desired = spec.key(store, &k.name).filter(|_| k.is_managed());
            if k.is_managed() && desired.is_none() {
                continue;
            }
            let item = |kind: DueKind, at: DateTime<Utc>, todo: String| {
                DueItem::of(kind, store, k, desired, at, now, todo)
            };
            if let Some(exp) = k.expires_at
                && exp <= horizon
            {
                let kind = if exp <= now {
                    DueKind::Expired
                } else {
                    DueKind::Expiring
                };
                let todo = match desired.map(|d| d.expiry) {
                    None => format!(
                        "made outside keyward: adopt it with `keyward import --store {store}`, then manage its expiry in YAML"
                    ),
                    Some(Expiry::Lifetime(span)) => format!(
                        "bump `rotation.generation` to rotate it (the new secret is valid {span} from then), \
                         or set `state: revoked` if it is no longer needed"
                    ),
                    Some(_) => {
                        "move `expires:` forward (a reviewer approves the longer lifetime), \
                         or set `state: revoked` if it is no longer needed"
                            .to_string()
                    }
                };
                let console = desired
                    .map(|_| console_todo(spec, store))
                    .unwrap_or_default();
                out.push(item(kind, exp, todo + &console));
            }
            if let Some(d) = desired
                && let Some(every) = d.rotation.every
            {
                let at = k.issued_at + every.to_chrono();
                if at <= horizon && k.expires_at.is_none_or(|e| at < e) {
                    out.push(item(
                        DueKind::RotationDue,
                        at,
                        console_rotation_todo(spec, store, every).unwrap_or_else(|| {
                            format!(
                                "`keyward apply` rotates it (rotation every {every}); recipients get the new secret \
                                 and the old one keeps working for {}",
                                d.rotation.grace
                            )
                        }),
                    ));
                }
            }
        }
    }
    sort_items(&mut out);
    out
}

/// By owner, then date, store, name and kind.
fn sort_items(items: &mut [DueItem]) {
    items.sort_by(|a, b| {
        (&a.owner, a.at, &a.store, &a.name, a.kind)
            .cmp(&(&b.owner, b.at, &b.store, &b.name, b.kind))
    });
}

/// `due` and the keys the plan disables for disuse within the window (`unused`), sorted
/// alike.
pub fn due_seen(
    spec: &Spec,
    observed: &BTreeMap<String, Vec<LiveKey>>,
    seen: &Seen,
    now: DateTime<Utc>,
    within: Span,
) -> Vec<DueItem> {
    let mut out = due(spec, observed, now, within);
    out.extend(unused(spec, observed, seen, now, within));
    sort_items(&mut out);
    out
}

/// Active managed keys the plan disables for disuse (the policy's or the key's own
/// `unused_after`) before `now + within`, or already would: `at` is the day it falls due
/// (its last use, or when it was made or counting began, plus the window). Protected keys
/// and keys of stores that keep no usage (or were not read) are left out.
pub fn unused(
    spec: &Spec,
    observed: &BTreeMap<String, Vec<LiveKey>>,
    seen: &Seen,
    now: DateTime<Utc>,
    within: Span,
) -> Vec<DueItem> {
    let horizon = now + within.to_chrono();
    let mut out = Vec::new();
    for (store, keys) in observed {
        for k in keys
            .iter()
            .filter(|k| k.status == KeyStatus::Active && k.is_managed())
        {
            let Some(d) = spec.key(store, &k.name) else {
                continue;
            };
            let Some(window) = spec.policy.unused_days(d) else {
                continue;
            };
            if d.protected || k.protected || d.state != crate::spec::DesiredState::Active {
                continue;
            }
            let (Some(at), Some(days)) = (
                seen.unused_due(store, k, window),
                seen.days_unused(store, k, now),
            ) else {
                continue;
            };
            if at > horizon {
                continue;
            }
            let last = seen.last_use(store, &k.id).and_then(|u| u.at);
            let todo = unused_todo(at <= now, window);
            out.push(DueItem {
                unused_days: Some(days),
                last_used: last,
                ..DueItem::of(DueKind::Unused, store, k, Some(d), at, now, todo)
            });
        }
    }
    out
}

/// What the owner of an unused key can do about the disable.
fn unused_todo(due: bool, window: i64) -> String {
    let keep = format!(
        "if it is still needed but used rarely, set `unused_after:` longer than {window}d (or `never`) on the key; \
         if it is not, set `state: revoked`"
    );
    if due {
        format!("the next `keyward apply` disables it (unused_after {window}d); {keep}")
    } else {
        format!("a call with it before then keeps it; {keep}")
    }
}

/// For a key in a console store whose scheduled rotation falls due: who rotates it, where,
/// and that the old value stops at once. None for every other store.
fn console_rotation_todo(spec: &Spec, store: &str, every: Span) -> Option<String> {
    use crate::console::preset::{Vendor, preset};
    let Some(crate::spec::StoreKind::Console(c)) = spec.stores.get(store).map(|s| &s.kind) else {
        return None;
    };
    let p = preset(Vendor::parse(&c.vendor).unwrap_or(Vendor::Generic));
    Some(format!(
        "an admin rotates it (rotation every {every}) with `keyward apply --store {store}` at a terminal, in {}: \
         recipients get the new value, and the old one stops working at once ({})",
        p.console, p.old_value
    ))
}

/// For a key in a console store: who does the renewal, and where.
fn console_todo(spec: &Spec, store: &str) -> String {
    use crate::console::preset::{Vendor, preset};
    let Some(crate::spec::StoreKind::Console(c)) = spec.stores.get(store).map(|s| &s.kind) else {
        return String::new();
    };
    let p = preset(Vendor::parse(&c.vendor).unwrap_or(Vendor::Generic));
    format!(
        "; once merged, an admin makes the new key in {} with `keyward apply --store {store}` at a terminal (it shows each step and reads the new value hidden)",
        p.console
    )
}

/// The reminder offset a key is inside of now: the smallest configured offset that is at
/// least the time left (so with 30/14/7/1 days, a key 7 days out is in the `7d` slot and a
/// key 10 days out in the `14d` slot). None when it is further out than every offset or
/// already expired.
pub fn reminder_slot(
    offsets: &[Span],
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Option<Span> {
    if expires_at <= now {
        return None;
    }
    let left = expires_at - now;
    offsets
        .iter()
        .copied()
        .filter(|o| o.to_chrono() >= left)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
    }

    #[test]
    fn reminder_slots_follow_the_offsets() {
        let offs = crate::spec::Policy::default_reminders();
        let at = |d: i64| now() + chrono::Duration::days(d);
        assert_eq!(reminder_slot(&offs, now(), at(40)), None);
        assert_eq!(reminder_slot(&offs, now(), at(30)), Some(Span::days(30)));
        assert_eq!(reminder_slot(&offs, now(), at(10)), Some(Span::days(14)));
        assert_eq!(reminder_slot(&offs, now(), at(7)), Some(Span::days(7)));
        assert_eq!(
            reminder_slot(&offs, now(), now() + chrono::Duration::hours(3)),
            Some(Span::days(1))
        );
        assert_eq!(reminder_slot(&offs, now(), at(-1)), None);
    }
}
