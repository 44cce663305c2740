//! How the usage report reads (`keyward usage`): the usage the stores keep, grouped by key,
//! owner or store, with calls per day and the top users first, as text or JSON. Pure: the
//! command reads the stores; this must not do I/O or read the clock.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::LiveKey;
use crate::store::VerifyReason;
use crate::store::usage::{NO_KEY, Usage};

/// What the rows of the report are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Key,
    Owner,
    Store,
}

/// The report's output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageFormat {
    Text,
    Json,
}

/// One row: a key, an owner or a store, with its calls in the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Group {
    pub store: String,
    /// The key's name (by key), `(no key)` for calls that named no key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The owner (by key and by owner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub valid: u64,
    pub refused: u64,
    /// Refused calls by reason.
    pub refused_by: BTreeMap<String, u64>,
    pub last_used: Option<DateTime<Utc>>,
    /// The store reports only the last use (an exec adapter without calls per day): `valid`
    /// and `refused` are not known, not zero.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_counted: bool,
}

/// Calls of one UTC day over every store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Day {
    pub day: String,
    pub valid: u64,
    pub refused: u64,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub since: String,
    pub by: GroupBy,
    /// Most valid calls first.
    pub groups: Vec<Group>,
    pub days: Vec<Day>,
    /// Stores that keep no usage (consoles, native stores, adapters without the capability).
    pub not_visible: Vec<String>,
    /// Of `not_visible`, the console stores (a vendor console shows keyward no calls).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consoles: Vec<String>,
    /// The shared daily budgets and what today spent of them, with who spent it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<BudgetLine>,
}

/// One budget scope today: its calls, how many the servers counted against it, and the keys
/// that spent the most of it (valid calls today, as the servers' usage flushes wrote them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetLine {
    pub store: String,
    /// `store`, or `label:name=value`.
    pub scope: String,
    pub day: String,
    pub daily: u64,
    pub spent: u64,
    /// (key name, owner, valid calls today), most first, at most five.
    pub top: Vec<(String, String, u64)>,
}

/// The budget lines of `store` on `day`: each scope of `budget` with its `spent` counter
/// and its top spenders from `usage` (keys are matched to scopes by their labels).
pub fn budget_lines(
    store: &str,
    budget: &crate::store::budget::Budget,
    spent: &[crate::store::budget::Spent],
    usage: Option<&Usage>,
    keys: &[LiveKey],
    day: &str,
) -> Vec<BudgetLine> {
    let today: Vec<_> = usage
        .map(|u| u.rows.iter().filter(|r| r.day == day).cloned().collect())
        .unwrap_or_default();
    let per_key = crate::store::usage::per_key(&today);
    budget
        .scopes()
        .iter()
        .map(|s| {
            let mut top: Vec<(String, String, u64)> = keys
                .iter()
                .filter(|k| budget.scopes_for(&k.labels).iter().any(|x| x.id == s.id))
                .filter_map(|k| {
                    let valid = per_key.get(&k.id).map_or(0, |u| u.valid);
                    (valid > 0).then(|| (k.name.clone(), k.owner.clone(), valid))
                })
                .collect();
            top.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
            top.truncate(5);
            BudgetLine {
                store: store.to_owned(),
                scope: s.id.to_string(),
                day: day.to_owned(),
                daily: s.daily,
                spent: spent
                    .iter()
                    .find(|x| x.scope == s.id)
                    .map_or(0, |x| x.calls),
                top,
            }
        })
        .collect()
}

/// Why a store's usage is not visible, by its `kind:` (`None`: not known), as `keys`,
/// `usage` and the plan say it.
pub fn not_visible_why(kind: Option<&str>) -> &'static str {
    match kind {
        Some("console") => "usage not visible in the console",
        _ => "usage not visible",
    }
}

/// The shown name of a key id in `store`: its name, or `(no key)` for `NO_KEY`, or the id
/// when the key is gone.
fn key_label(keys: &BTreeMap<&str, &LiveKey>, id: &str) -> (String, Option<String>) {
    if id == NO_KEY {
        return ("(no key)".into(), None);
    }
    match keys.get(id) {
        Some(k) => (k.name.clone(), Some(k.owner.clone())),
        None => (format!("(deleted {id})"), None),
    }
}

/// Build the report from each store's usage (`None`: keeps none) and live keys.
pub fn build(
    usage: &BTreeMap<String, Option<Usage>>,
    keys: &BTreeMap<String, Vec<LiveKey>>,
    since: &str,
    by: GroupBy,
) -> Report {
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    let mut days: BTreeMap<String, Day> = BTreeMap::new();
    let mut not_visible = Vec::new();
    for (store, u) in usage {
        let Some(u) = u else {
            not_visible.push(store.clone());
            continue;
        };
        let index: BTreeMap<&str, &LiveKey> = keys
            .get(store)
            .map(|ks| ks.iter().map(|k| (k.id.as_str(), k)).collect())
            .unwrap_or_default();
        for r in u.rows.iter().filter(|r| r.day.as_str() >= since) {
            let (name, owner) = key_label(&index, &r.key_id);
            let (slot, g) = match by {
                GroupBy::Key => (
                    r.key_id.clone(),
                    Group {
                        key: Some(name),
                        key_id: Some(r.key_id.clone()),
                        owner: Some(owner.unwrap_or_else(|| "-".into())),
                        ..Group::default()
                    },
                ),
                GroupBy::Owner => {
                    let o = owner.unwrap_or_else(|| "-".into());
                    (
                        o.clone(),
                        Group {
                            owner: Some(o),
                            ..Group::default()
                        },
                    )
                }
                GroupBy::Store => (String::new(), Group::default()),
            };
            let e = groups
                .entry((store.clone(), slot))
                .or_insert_with(|| Group {
                    store: store.clone(),
                    ..g
                });
            // A store reporting only last uses has no calls for the days table.
            let mut no_day = Day {
                day: r.day.clone(),
                valid: 0,
                refused: 0,
            };
            let d = if u.last_use_only {
                &mut no_day
            } else {
                days.entry(r.day.clone()).or_insert_with(|| no_day.clone())
            };
            e.not_counted |= u.last_use_only;
            if r.reason == VerifyReason::Ok {
                e.valid += r.calls;
                d.valid += r.calls;
                e.last_used = e.last_used.max(Some(r.last_at));
            } else {
                e.refused += r.calls;
                d.refused += r.calls;
                *e.refused_by.entry(r.reason.as_str().into()).or_default() += r.calls;
            }
        }
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by(|a, b| {
        (b.valid, b.refused)
            .cmp(&(a.valid, a.refused))
            .then_with(|| (&a.store, &a.key, &a.owner).cmp(&(&b.store, &b.key, &b.owner)))
    });
    Report {
        since: since.to_owned(),
        by,
        groups,
        days: days.into_values().collect(),
        not_visible,
        consoles: Vec::new(),
        budgets: Vec::new(),
    }
}

/// A time as the tables show it.
pub fn short_time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "never".into())
}

/// Render `r` as text (a table per section) or JSON.
pub fn render(r: &Report, format: UsageFormat) -> String {
    match format {
        UsageFormat::Json => serde_json::to_string_pretty(r).unwrap_or_default() + "\n",
        UsageFormat::Text => text(r),
    }
}

fn refused_text(g: &Group) -> String {
    if g.refused_by.is_empty() {
        return "0".into();
    }
    let parts: Vec<String> = g
        .refused_by
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    format!("{} ({})", g.refused, parts.join(", "))
}

fn text(r: &Report) -> String {
    let mut header: Vec<&str> = vec!["STORE"];
    match r.by {
        GroupBy::Key => header.extend(["KEY", "OWNER"]),
        GroupBy::Owner => header.push("OWNER"),
        GroupBy::Store => {}
    }
    header.extend(["VALID", "LAST USED", "REFUSED"]);
    let rows: Vec<Vec<String>> = r
        .groups
        .iter()
        .map(|g| {
            let mut row = vec![g.store.clone()];
            row.extend(g.key.clone());
            row.extend(g.owner.clone());
            if g.not_counted {
                row.extend(["-".into(), short_time(g.last_used), "-".into()]);
            } else {
                row.extend([
                    g.valid.to_string(),
                    short_time(g.last_used),
                    refused_text(g),
                ]);
            }
            row
        })
        .collect();
    let mut out = format!(
        "Verify calls since {} by {}, most valid calls first:\n",
        r.since,
        match r.by {
            GroupBy::Key => "key",
            GroupBy::Owner => "owner",
            GroupBy::Store => "store",
        }
    );
    if rows.is_empty() {
        out.push_str("  (no calls counted)\n");
    } else {
        out.push_str(&table(&header, &rows));
    }
    if !r.days.is_empty() {
        out.push_str("\nCalls per day (UTC):\n");
        let rows: Vec<Vec<String>> = r
            .days
            .iter()
            .map(|d| vec![d.day.clone(), d.valid.to_string(), d.refused.to_string()])
            .collect();
        out.push_str(&table(&["DAY", "VALID", "REFUSED"], &rows));
    }
    for b in &r.budgets {
        let pct = b.spent.saturating_mul(100) / b.daily.max(1);
        let what = match b.scope.strip_prefix("label:") {
            Some(l) => format!("store `{}`, keys labelled {l}", b.store),
            None => format!("store `{}`", b.store),
        };
        out.push_str(&format!(
            "\nBudget of {what} on {}: {} of {} calls spent ({pct}%)\n",
            b.day, b.spent, b.daily
        ));
        for (key, owner, calls) in &b.top {
            out.push_str(&format!("  {calls:>8}  {key} (owner {owner})\n"));
        }
    }
    if r.groups.iter().any(|g| g.not_counted) {
        out.push_str(
            "\n-: not counted (the store reports when each key was last used, not how often)\n",
        );
    }
    for s in &r.not_visible {
        if r.consoles.contains(s) {
            out.push_str(&format!(
                "\nstore `{s}`: usage not visible in the console (a vendor console does not tell keyward when its keys are used)\n"
            ));
        } else {
            out.push_str(&format!(
                "\nstore `{s}`: usage is not visible (this kind of store does not report who uses its keys)\n"
            ));
        }
    }
    out
}

/// Columns padded to their widest cell, the last left as is.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut l = String::new();
        for (i, (c, w)) in cells.into_iter().zip(&widths).enumerate() {
            if i + 1 == n {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$} "));
            }
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::usage::UsageRow;
    use chrono::TimeZone;

    fn key(id: &str, name: &str, owner: &str) -> LiveKey {
        let mut k: LiveKey = serde_json::from_value(serde_json::json!({
            "id": id, "name": name, "environment": "production", "owner": owner,
            "purpose": null, "scopes": [], "labels": {}, "status": "active",
            "issued_at": "2026-01-01T00:00:00Z", "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z", "expires_at": null, "lifetime": null,
            "version": 1, "generation": 1, "spec_generation": 1,
            "previous_valid_until": null, "recipients": {}, "quota_per_day": null,
            "protected": false, "managed_by": "keyward"
        }))
        .unwrap();
        k.owner = owner.into();
        k
    }

    fn row(id: &str, day: &str, reason: VerifyReason, calls: u64) -> UsageRow {
        UsageRow {
            key_id: id.into(),
            day: day.into(),
            reason,
            calls,
            last_at: Utc.with_ymd_and_hms(2026, 12, 3, 9, 30, 0).unwrap(),
        }
    }

    fn sample() -> (
        BTreeMap<String, Option<Usage>>,
        BTreeMap<String, Vec<LiveKey>>,
    ) {
        let usage = BTreeMap::from([
            (
                "alma".to_owned(),
                Some(Usage {
                    counting_since: None,
                    rows: vec![
                        row("a1", "2026-12-02", VerifyReason::Ok, 40),
                        row("a1", "2026-12-03", VerifyReason::Ok, 2),
                        row("b2", "2026-12-03", VerifyReason::Ok, 100),
                        row("b2", "2026-12-03", VerifyReason::QuotaExceeded, 3),
                        row("", "2026-12-03", VerifyReason::Malformed, 5),
                        row("a1", "2026-10-01", VerifyReason::Ok, 999),
                    ],
                    ..Default::default()
                }),
            ),
            ("console".to_owned(), None),
        ]);
        let keys = BTreeMap::from([(
            "alma".to_owned(),
            vec![
                key("a1", "ill-lookup", "jdoe"),
                key("b2", "discovery", "asmith"),
            ],
        )]);
        (usage, keys)
    }

    #[test]
    fn by_key_orders_top_users_first_and_says_what_is_not_visible() {
        let (u, k) = sample();
        let r = build(&u, &k, "2026-11-05", GroupBy::Key);
        let names: Vec<_> = r.groups.iter().map(|g| g.key.clone().unwrap()).collect();
        assert_eq!(names, ["discovery", "ill-lookup", "(no key)"]);
        assert_eq!(r.groups[0].refused_by["quota_exceeded"], 3);
        assert_eq!(
            r.groups[1].valid, 42,
            "the row before the window is left out"
        );
        assert_eq!(r.days.len(), 2);
        assert_eq!(r.not_visible, ["console"]);
        let t = render(&r, UsageFormat::Text);
        assert!(t.contains("discovery"), "{t}");
        assert!(t.contains("quota_exceeded 3"), "{t}");
        assert!(t.contains("store `console`: usage is not visible"), "{t}");
    }

    #[test]
    fn a_store_reporting_only_last_uses_shows_calls_as_not_counted_and_consoles_say_so() {
        let (mut u, k) = sample();
        u.insert(
            "gateway".into(),
            Some(Usage {
                rows: vec![row("g1", "2026-12-03", VerifyReason::Ok, 0)],
                last_use_only: true,
                ..Default::default()
            }),
        );
        let mut r = build(&u, &k, "2026-11-05", GroupBy::Key);
        r.consoles = vec!["console".into()];
        let g = r.groups.iter().find(|g| g.store == "gateway").unwrap();
        assert!(g.not_counted && g.last_used.is_some());
        assert_eq!(r.days.len(), 2, "no day of calls from the gateway");
        let t = render(&r, UsageFormat::Text);
        let line = t.lines().find(|l| l.starts_with("gateway")).unwrap();
        assert!(
            line.contains(" - ") && line.contains("2026-12-03 09:30"),
            "{t}"
        );
        assert!(line.trim_end().ends_with('-'), "{t}");
        assert!(t.contains("-: not counted"), "{t}");
        assert!(
            t.contains("store `console`: usage not visible in the console"),
            "{t}"
        );
        let j: serde_json::Value = serde_json::from_str(&render(&r, UsageFormat::Json)).unwrap();
        let g = j["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["store"] == "gateway")
            .unwrap();
        assert_eq!(g["not_counted"], true, "{j}");
        assert_eq!(j["consoles"], serde_json::json!(["console"]));
        assert_eq!(
            not_visible_why(Some("console")),
            "usage not visible in the console"
        );
        assert_eq!(not_visible_why(Some("redis-acl")), "usage not visible");
    }

    #[test]
    fn by_owner_and_by_store_sum_their_keys() {
        let (u, k) = sample();
        let r = build(&u, &k, "2026-11-05", GroupBy::Owner);
        let o: Vec<_> = r
            .groups
            .iter()
            .map(|g| (g.owner.clone().unwrap(), g.valid))
            .collect();
        assert_eq!(
            o,
            [("asmith".into(), 100), ("jdoe".into(), 42), ("-".into(), 0)]
        );
        let r = build(&u, &k, "2026-11-05", GroupBy::Store);
        assert_eq!(r.groups.len(), 1);
        assert_eq!((r.groups[0].valid, r.groups[0].refused), (142, 8));
        let j: serde_json::Value = serde_json::from_str(&render(&r, UsageFormat::Json)).unwrap();
        assert_eq!(j["groups"][0]["valid"], 142);
        assert_eq!(j["by"], "store");
    }
}
