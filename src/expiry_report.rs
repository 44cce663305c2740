//! The expiry report `keyward expiring` prints (the report a nightly job runs): what is due,
//! by owner, with what to do, as text, JSON or Markdown. Pure rendering: the decisions about
//! what is due live in `lifecycle`, sending lives in `notify`; must not do I/O. Console
//! stores add the steps an admin does by hand: each due console key carries the steps to
//! renew it, and the steps pending in consoles are listed after the keys. Keys the plan
//! disables for disuse (policy `unused_after`) are listed with the rest, and stores whose
//! usage is not visible are named.

use crate::lifecycle::{DueItem, DueKind};
use crate::report::ConsoleStep;
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
    #[serde(skip_serializing_if = "<[JsonStep]>::is_empty")]
    console_steps: &'a [JsonStep],
    /// Stores whose keys `unused_after` applies to but that keep no usage.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    usage_not_visible: Vec<String>,
}

/// A console step pending by hand, in the JSON report.
#[derive(Debug, Serialize)]
struct JsonStep {
    store: String,
    key: String,
    action: String,
    detail: String,
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
        (DueKind::Unused, d) => {
            let used = match i.last_used {
                Some(t) => format!("last used {}", t.format("%Y-%m-%d")),
                None => "never used".to_string(),
            };
            let days = i.unused_days.unwrap_or_default();
            if d <= 0 {
                format!("unused for {days} days ({used}): disabled by the next apply")
            } else {
                format!(
                    "unused for {days} days ({used}): disabled in {d} day(s) ({date}) unless used"
                )
            }
        }
    }
}

fn by_owner(items: &[DueItem]) -> BTreeMap<&str, Vec<&DueItem>> {
    let mut m: BTreeMap<&str, Vec<&DueItem>> = BTreeMap::new();
    for i in items {
        m.entry(i.owner.as_str()).or_default().push(i);
    }
    m
}

/// Render the report. `console`: the steps pending in vendor consoles (begun and not
/// recorded, or guided by the next apply), listed after the keys.
///
/// `blind`: the stores (with how many keys) whose keys `unused_after` applies to but that
/// keep no usage, said after the keys.
pub fn render(
    spec: &Spec,
    items: &[DueItem],
    console: &[ConsoleStep],
    blind: &[(String, usize)],
    within: Span,
    now: DateTime<Utc>,
    format: ReportFormat,
) -> String {
    match format {
        ReportFormat::Json => {
            let steps: Vec<JsonStep> = console
                .iter()
                .map(|c| JsonStep {
                    store: c.store.clone(),
                    key: c.key.clone(),
                    action: c.action.clone(),
                    detail: c.detail.clone(),
                })
                .collect();
            serde_json::to_string_pretty(&JsonReport {
                format_version: REPORT_FORMAT_VERSION,
                generated_at: now,
                within: within.to_string(),
                due: items,
                console_steps: &steps,
                usage_not_visible: blind.iter().map(|(s, _)| s.clone()).collect(),
            })
            .map(|s| s + "\n")
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}\n"))
        }
        ReportFormat::Text => {
            text(spec, items, within) + &text_console(console) + &blind_lines(spec, blind, "")
        }
        ReportFormat::Markdown => {
            markdown(spec, items, within, now)
                + &markdown_console(console)
                + &blind_lines(spec, blind, "> ")
        }
    }
}

fn text(spec: &Spec, items: &[DueItem], within: Span) -> String {
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
            if !i.console_steps.is_empty() {
                out.push_str("      steps in the console:\n");
                for (n, step) in i.console_steps.iter().enumerate() {
                    out.push_str(&format!("        {}. {step}\n", n + 1));
                }
            }
        }
    }
    out.push_str(&format!("\n{} key(s) need attention.\n", items.len()));
    out
}

fn text_console(console: &[ConsoleStep]) -> String {
    if console.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\nConsole steps pending (by hand, in the vendor console): {}\n",
        console.len()
    );
    for c in console {
        out.push_str(&format!(
            "  - {}/{}: {} — {}\n",
            c.store, c.key, c.action, c.detail
        ));
    }
    let stores: std::collections::BTreeSet<&str> =
        console.iter().map(|c| c.store.as_str()).collect();
    for s in stores {
        out.push_str(&format!(
            "  run `keyward apply --store {s}` at a terminal to be guided through them\n"
        ));
    }
    out
}

/// One line per store whose keys cannot be seen unused, each after `prefix`.
fn blind_lines(spec: &Spec, blind: &[(String, usize)], prefix: &str) -> String {
    let mut out = String::new();
    for (store, n) in blind {
        let console = spec
            .stores
            .get(store)
            .is_some_and(|c| matches!(c.kind, crate::spec::StoreKind::Console(_)));
        let why = if console {
            "usage not visible in the console"
        } else {
            "usage is not visible (it keeps no usage)"
        };
        out.push_str(&format!(
            "\n{prefix}store `{}`: {why}, so unused_after cannot tell whether its {n} key(s) are used\n",
            md_escape(store)
        ));
    }
    out
}

fn markdown(spec: &Spec, items: &[DueItem], within: Span, now: DateTime<Utc>) -> String {
    let mut out = format!("## keyward: keys due within {within}\n\n");
    if items.is_empty() {
        out.push_str("Nothing expires or is due for rotation.\n");
        return out;
    }
    for (owner, list) in by_owner(items) {
        out.push_str(&format!("### {}\n\n", md_escape(&owner_label(spec, owner))));
        out.push_str("| Key | Store | Due | Defined at | What to do |\n|---|---|---|---|---|\n");
        for i in list {
            let steps: String = i
                .console_steps
                .iter()
                .enumerate()
                .map(|(n, s)| format!(" {}. {}", n + 1, md_escape(s)))
                .collect();
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {}{} |\n",
                i.name,
                md_escape(&i.store),
                md_escape(&when(i)),
                i.defined_at
                    .as_deref()
                    .map(|l| format!("`{l}`"))
                    .unwrap_or_else(|| "—".into()),
                md_escape(&i.todo),
                if steps.is_empty() {
                    String::new()
                } else {
                    format!(". In the console:{steps}")
                }
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

fn markdown_console(console: &[ConsoleStep]) -> String {
    if console.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n### Console steps pending\n\nSteps an admin does by hand in a vendor console (`keyward apply --store STORE` at a terminal guides them).\n\n| Store | Key | Step | What to do |\n|---|---|---|---|\n",
    );
    for c in console {
        out.push_str(&format!(
            "| {} | `{}` | {} | {} |\n",
            md_escape(&c.store),
            md_escape(&c.key),
            md_escape(&c.action),
            md_escape(&c.detail)
        ));
    }
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
