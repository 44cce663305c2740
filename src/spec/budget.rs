//! A store's `budget:` in keyward.yaml — `{ daily: 50000, alert_at: [80%, 95%], groups:
//! [{ label: team=ill, daily: 10000 }] }` — parsed into the `store::budget::Budget` that
//! apply writes into the store, with every problem reported at its line. Must not open a
//! store.

use super::pos::YPath;
use super::yaml::{Ctx, field};
use crate::diag::codes;
use crate::store::budget::{Budget, GroupBudget};
use serde_yaml::Value;

/// The store kinds that enforce a budget at verify.
pub const KINDS: &[&str] = &["sqlite", "http"];

const FIELDS: &[&str] = &["daily", "alert_at", "groups"];
const GROUP_FIELDS: &[&str] = &["label", "daily", "alert_at"];

/// `budget:` of a store of `kind`.
pub fn parse(ctx: &mut Ctx, store: &str, kind: &str, v: &Value, p: &YPath) -> Option<Budget> {
    if !KINDS.contains(&kind) {
        ctx.err(
            codes::INVALID_STORE,
            p,
            format!("`budget` does not apply to a {kind} store: it cannot refuse a call at verify"),
            "remove it; a shared budget is enforced by `keyward serve` (kind: http) and the embedded store (kind: sqlite)",
        );
        return None;
    }
    let fields = ctx.mapping(v, p, FIELDS)?;
    let daily = field(&fields, "daily").and_then(|d| daily(ctx, d, &p.key("daily")));
    let alert_at = match field(&fields, "alert_at") {
        Some(a) => alerts(ctx, a, &p.key("alert_at"))?,
        None => Vec::new(),
    };
    let groups = match field(&fields, "groups") {
        Some(g) => groups(ctx, g, &p.key("groups"))?,
        None => Vec::new(),
    };
    if daily.is_none() && groups.is_empty() {
        ctx.missing(
            p,
            "daily",
            "add `daily: 50000` (valid calls per UTC day for the whole store)",
        );
        return None;
    }
    Some(Budget {
        store: Some(store.to_owned()),
        daily,
        alert_at,
        groups,
    })
}

fn daily(ctx: &mut Ctx, v: &Value, p: &YPath) -> Option<u64> {
    let n = ctx.uint(v, p)?;
    if n == 0 {
        ctx.err(
            codes::INVALID_VALUE,
            p,
            "a daily budget of 0 refuses every call",
            "give the calls per day, e.g. `daily: 50000`, or disable the keys instead",
        );
        return None;
    }
    Some(n)
}

/// `alert_at: [80%, 95%]`: percentages between 1 and 99 (100% is always alerted).
fn alerts(ctx: &mut Ctx, v: &Value, p: &YPath) -> Option<Vec<u8>> {
    let items = ctx.seq(v, p)?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ip = p.idx(i);
        let text = match item {
            Value::String(s) => s.trim().to_owned(),
            Value::Number(n) => n.to_string(),
            other => {
                ctx.wrong_type(&ip, other, "a percentage such as `80%`");
                return None;
            }
        };
        let n = text
            .strip_suffix('%')
            .unwrap_or(&text)
            .trim()
            .parse::<u8>()
            .ok();
        match n {
            Some(n) if (1..=100).contains(&n) => out.push(n),
            _ => {
                ctx.err(
                    codes::INVALID_VALUE,
                    &ip,
                    format!("`{text}` is not a percentage between 1% and 100%"),
                    "e.g. `alert_at: [80%, 95%]` (an alert at 100% is always sent)",
                );
                return None;
            }
        }
    }
    Some(out)
}

fn groups(ctx: &mut Ctx, v: &Value, p: &YPath) -> Option<Vec<GroupBudget>> {
    let items = ctx.seq(v, p)?;
    let mut out: Vec<GroupBudget> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let gp = p.idx(i);
        let fields = ctx.mapping(item, &gp, GROUP_FIELDS)?;
        let Some(label) = field(&fields, "label") else {
            ctx.missing(
                &gp,
                "label",
                "add `label: team=ill` (the keys whose labels hold it)",
            );
            return None;
        };
        let label = ctx.string(label, &gp.key("label"))?;
        if label
            .split_once('=')
            .is_none_or(|(k, v)| k.trim().is_empty() || v.trim().is_empty())
        {
            ctx.err(
                codes::INVALID_VALUE,
                &gp.key("label"),
                format!("`{label}` is not a label as `name=value`"),
                "e.g. `label: team=ill`",
            );
            return None;
        }
        if out.iter().any(|g| g.label == label) {
            ctx.err(
                codes::INVALID_VALUE,
                &gp.key("label"),
                format!("label `{label}` has two budgets"),
                "keep one",
            );
            return None;
        }
        let Some(d) = field(&fields, "daily") else {
            ctx.missing(&gp, "daily", "add `daily: 10000`");
            return None;
        };
        let daily = daily(ctx, d, &gp.key("daily"))?;
        let alert_at = match field(&fields, "alert_at") {
            Some(a) => alerts(ctx, a, &gp.key("alert_at"))?,
            None => Vec::new(),
        };
        out.push(GroupBudget {
            label,
            daily,
            alert_at,
        });
    }
    Some(out)
}
