//! The expiry report `keyward expiring` prints (the report a nightly job runs): what is due,
//! by owner, with what to do, as text, JSON or Markdown. Pure rendering: the decisions about
//! what is due live in `lifecycle`, sending lives in `notify`; must not do I/O.

use crate::lifecycle::{DueItem, DueKind};
use crate::spec::{Span, Spec};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// Output formats of `keyward expiring`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Text,
    Json,
    Markdown,
}

/// Version of the JSON expiry report.
pub const REPORT_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    format_version: u32,
    generated_at: DateTime<Utc>,
    within: String,
    due: &'a [DueItem],
}

fn owner_label(spec: &Spec, owner: &str) -> String {
    match spec.principals.get(owner) {
        Some(p) => match (&p.name, &p.email) {
            (Some(n), Some(e)) if n != owner => format!("{owner} ({n} <{e}>)"),
            (_, Some(e)) => format!("{owner} <{e}>"),
            _ => owner.to_string(),
        },
        None => format!("{owner} (not in people.yaml)"),
    }
}

fn when(i: &DueItem) -> String {
    let date = i.at.format("%Y-%m-%d");
    match (i.kind, i.days_left) {
        (DueKind::Expired, _) => format!("expired on {date}"),
        (DueKind::Expiring, 0) => format!("expires today ({date})"),
        (DueKind::Expiring, d) => format!("expires in {d} day(s) ({date})"),
        (DueKind::RotationDue, d) if d <= 0 => format!("rotation overdue since {date}"),
        (DueKind::RotationDue, d) => format!("rotation due in {d} day(s) ({date})"),
    }
}

fn by_owner(items: &[DueItem]) -> BTreeMap<&str, Vec<&DueItem>> {
    let mut m: BTreeMap<&str, Vec<&DueItem>> = BTreeMap::new();
    for i in items {
        m.entry(i.owner.as_str()).or_default().push(i);
    }
    m
}

/// Render the report.
pub fn render(
    spec: &Spec,
    items: &[DueItem],
    within: Span,
    now: DateTime<Utc>,
    format: ReportFormat,
) -> String {
    match format {
        ReportFormat::Json => serde_json::to_string_pretty(&JsonReport {
            format_version: REPORT_FORMAT_VERSION,
            generated_at: now,
            within: within.to_string(),
            due: items,
        })
        .map(|s| s + "\n")
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}\n")),
        ReportFormat::Text => {
            if items.is_empty() {
                return format!("Nothing expires or is due for rotation within {within}.\n");
            }
            let mut out = format!("Keys that need attention within {within}:\n");
            for (owner, list) in by_owner(items) {
                out.push_str(&format!("\n{}\n", owner_label(spec, owner)));
                for i in list {
                    let at = i
                        .defined_at
                        .as_deref()
                        .map(|l| format!("  [{l}]"))
                        .unwrap_or_default();
                    out.push_str(&format!(
                        "  {} {}/{}: {}{at}\n      -> {}\n",
                        if i.kind == DueKind::Expired {
                            "✗"
                        } else {
                            "⚠"
                        },
                        i.store,
                        i.name,
                        when(i),
                        i.todo
                    ));
                }
            }
            out.push_str(&format!("\n{} key(s) need attention.\n", items.len()));
            out
        }
        ReportFormat::Markdown => {
            let mut out = format!("## keyward: keys due within {within}\n\n");
            if items.is_empty() {
                out.push_str("Nothing expires or is due for rotation.\n");
                return out;
            }
            for (owner, list) in by_owner(items) {
                out.push_str(&format!("### {}\n\n", md_escape(&owner_label(spec, owner))));
                out.push_str(
                    "| Key | Store | Due | Defined at | What to do |\n|---|---|---|---|---|\n",
                );
                for i in list {
                    out.push_str(&format!(
                        "| `{}` | {} | {} | {} | {} |\n",
                        i.name,
                        md_escape(&i.store),
                        md_escape(&when(i)),
                        i.defined_at
                            .as_deref()
                            .map(|l| format!("`{l}`"))
                            .unwrap_or_else(|| "—".into()),
                        md_escape(&i.todo)
                    ));
                }
                out.push('\n');
            }
            out.push_str(&format!(
                "_{} key(s) need attention (generated {})._\n",
                items.len(),
                now.format("%Y-%m-%d %H:%M UTC")
            ));
            out
        }
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
