//! The Markdown plan for a pull-request comment: a hidden marker (so CI edits one comment),
//! a summary table per store, escalations and revocations first, each key's details folded,
//! and a hard size budget. Pure function of a `Plan`; must not decide what changes.

use super::text::{clean, summary_line, verb};
use super::{Plan, short};
use crate::diff::{Action, Change, Note};
use chrono::{DateTime, Utc};
use std::fmt::Write as _;

/// The hidden first line CI looks for to find (and edit) its one comment.
pub const MARKER: &str = "<!-- keyward-plan -->";

/// The hard budget, in characters (GitHub refuses comments over 65,536).
pub const BUDGET: usize = 60_000;

/// Room kept for the closing note and the footer.
const RESERVE: usize = 1_000;

/// Requesters named in the header before "and N more".
const MAX_REQUESTERS: usize = 20;

/// Escape text for inline Markdown/HTML (table cells, list items, `<summary>`): no markup,
/// no mentions, no line breaks, no control or bidi characters.
pub fn inline(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in clean(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '|' => out.push_str("&#124;"),
            '`' => out.push_str("&#96;"),
            // A zero-width space after `@` keeps GitHub from pinging people or teams.
            '@' => out.push_str("@\u{200B}"),
            '\\' | '*' | '_' | '[' | ']' | '#' | '~' | '!' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Inline code (`<code>`), escaped.
fn code(s: &str) -> String {
    format!("<code>{}</code>", inline(s))
}

fn key_ref(c: &Change) -> String {
    format!("{}/{}", c.store, c.name)
}

fn is_removal(c: &Change) -> bool {
    matches!(c.action, Action::Revoke | Action::Delete)
}

/// The Markdown plan, at most `BUDGET` characters.
pub fn markdown(plan: &Plan) -> String {
    markdown_with_budget(plan, BUDGET)
}

/// `--base`: the stores whose connection settings the pull request changes (never cut).
fn connection_caution(plan: &Plan, head: &mut String) {
    let moved: Vec<_> = plan
        .base
        .iter()
        .flat_map(|b| &b.connection_changes)
        .collect();
    if moved.is_empty() {
        return;
    }
    head.push_str("> [!CAUTION]\n> **Store connection settings change in this pull request.** Review where the token goes:\n");
    for c in moved {
        let _ = writeln!(head, "> - {}", inline(&c.describe()));
    }
    head.push('\n');
}

/// The Markdown plan within `budget` characters (the summary, the "access removed" lines and
/// the count of expiry warnings always stay; escalation, revocation and warning lines,
/// details and notes are cut, with a note saying how many).
pub fn markdown_with_budget(plan: &Plan, budget: usize) -> String {
    let mut head = String::new();
    head.push_str(MARKER);
    head.push('\n');
    let _ = writeln!(head, "### keyward plan\n");
    let _ = writeln!(head, "**{}**\n", inline(&summary_line(plan)));
    for s in &plan.settings {
        let _ = writeln!(head, "- ⚙️ {}", inline(&s.to_string()));
    }
    if !plan.settings.is_empty() {
        head.push('\n');
    }
    callouts(plan, &mut head);
    head.push_str(&revision_line(plan));
    head.push_str("\n\n");
    summary_table(plan, &mut head);

    let (body, cut) = fit(head.chars().count(), &sections(plan), budget);
    let mut out = head;
    out.push_str(&body);
    if !cut.is_empty() {
        let parts: Vec<String> = cut.iter().map(|(n, w)| format!("{n} {w}")).collect();
        let _ = writeln!(
            out,
            "> [!NOTE]\n> ✂️ Cut to stay under {budget} characters: {} left out. Run `keyward plan` (or read the JSON plan from CI) for the full plan.\n",
            parts.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "<sub>keyward {} · plan format {} · no secrets are ever part of a plan</sub>",
        inline(&plan.keyward_version),
        plan.format_version
    );
    // The head alone can only exceed the budget with absurdly many stores or guards.
    if out.chars().count() > budget {
        let mut cutoff: String = out.chars().take(budget.saturating_sub(80)).collect();
        cutoff.push_str("\n\n… (cut: the plan summary alone exceeds the comment budget)\n");
        return cutoff;
    }
    out
}

/// The call-outs under the summary line: escalations, guards, `--only`, access removed
/// (never cut) and the count of expiry warnings.
fn callouts(plan: &Plan, head: &mut String) {
    let summary = plan.summary();
    if summary.escalations > 0 {
        let keys = plan
            .actions
            .iter()
            .filter(|c| !c.escalations.is_empty())
            .count();
        let _ = writeln!(
            head,
            "> [!WARNING]\n> **{} escalation(s) on {} key(s)** widen what a key can do or who holds it; review them first.\n",
            summary.escalations, keys
        );
    }
    connection_caution(plan, head);
    if !plan.guards.is_empty() {
        head.push_str(
            "> [!CAUTION]\n> **`keyward apply` will refuse this plan without `--force`:**\n",
        );
        for g in &plan.guards {
            let _ = writeln!(head, "> - {}", inline(&g.message));
        }
        head.push('\n');
    }
    if plan.filtered_out > 0 {
        let _ = writeln!(
            head,
            "> [!WARNING]\n> `--only` is in effect: {} change(s) outside the filter are not shown and will **not** be applied.\n",
            plan.filtered_out
        );
    }
    // People who left people.yaml, as the text plan says it (never cut).
    if !plan.access_removed.is_empty() {
        head.push_str("> [!IMPORTANT]\n");
        for a in &plan.access_removed {
            let _ = writeln!(head, "> **{}**", inline(&a.to_string()));
        }
        head.push('\n');
    }
    // Console steps: nobody can apply them from CI.
    if !plan.console_steps.is_empty() {
        let mut stores: Vec<&str> = plan
            .console_steps
            .iter()
            .map(|s| s.store.as_str())
            .collect();
        stores.dedup();
        let runs: Vec<String> = stores
            .iter()
            .map(|s| code(&format!("keyward apply --store {s}")))
            .collect();
        let _ = writeln!(
            head,
            "> [!NOTE]\n> **{} step(s) to do by hand in vendor consoles** (see Console steps below): CI applies the other stores and leaves these pending; an admin runs {} at a terminal.\n",
            plan.console_steps.len(),
            runs.join(", ")
        );
    }
    // Expiry: the count stays in the head; the keys are listed in the warnings section.
    if !plan.warnings.is_empty() {
        let _ = writeln!(
            head,
            "> [!WARNING]\n> **{} key(s) expired or expire soon** and this plan does not renew them (see Warnings below).\n",
            plan.warnings.len()
        );
    }
}

/// Where the desired state comes from, and who asks for it.
fn revision_line(plan: &Plan) -> String {
    let rev = &plan.desired_revision;
    let mut line = format!("Desired revision {}", code(&rev.label()));
    let Some(b) = &plan.base else {
        return line;
    };
    let _ = write!(
        line,
        " · base {} ({}, {} commit(s), {} key(s) edited)",
        code(&b.rev),
        code(short(&b.commit)),
        b.commits,
        b.touched_keys.len()
    );
    if !b.requesters.is_empty() {
        let names: Vec<String> = b
            .requesters
            .iter()
            .take(MAX_REQUESTERS)
            .map(|r| inline(&r.to_string()))
            .collect();
        let more = b.requesters.len().saturating_sub(MAX_REQUESTERS);
        let _ = write!(line, " · requested by {}", names.join(", "));
        if more > 0 {
            let _ = write!(line, " and {more} more");
        }
    }
    line
}

/// The summary table: one row per store, a column per action and the escalations.
fn summary_table(plan: &Plan, head: &mut String) {
    if plan.stores.is_empty() {
        return;
    }
    head.push_str("| Store | Environment |");
    for a in Action::ALL {
        let _ = write!(head, " {} |", a.as_str());
    }
    head.push_str(" escalations |\n|---|---|");
    for _ in Action::ALL {
        head.push_str("--:|");
    }
    head.push_str("--:|\n");
    let cell = |n: usize, mark: &str| {
        if n == 0 {
            " · |".to_string()
        } else {
            format!(" {mark}**{n}** |")
        }
    };
    for (name, st) in &plan.stores {
        let _ = write!(head, "| {} | {} |", code(name), inline(&st.environment));
        let mine: Vec<&Change> = plan.actions.iter().filter(|c| &c.store == name).collect();
        for a in Action::ALL {
            head.push_str(&cell(mine.iter().filter(|c| c.action == a).count(), ""));
        }
        let e: usize = mine.iter().map(|c| c.escalations.len()).sum();
        head.push_str(&cell(e, "⚠️ "));
        head.push('\n');
    }
    head.push('\n');
}

/// One list of the body: what its items are called in the cut note, its title, its items.
type Section = (&'static str, &'static str, Vec<String>);

/// The lists below the head, in the order they are cut to the budget.
fn sections(plan: &Plan) -> Vec<Section> {
    let escalated: Vec<&Change> = plan
        .actions
        .iter()
        .filter(|c| !c.escalations.is_empty())
        .collect();
    let removals: Vec<&Change> = plan.actions.iter().filter(|c| is_removal(c)).collect();
    let mut detailed: Vec<&Change> = escalated.clone();
    detailed.extend(removals.iter().filter(|c| c.escalations.is_empty()));
    detailed.extend(
        plan.actions
            .iter()
            .filter(|c| c.escalations.is_empty() && !is_removal(c)),
    );
    let note_line = |n: &Note| match n.subject() {
        Some(key) => format!("- {}: {}\n", code(&key), inline(&n.message)),
        None => format!("- {}\n", inline(&n.message)),
    };
    vec![
        (
            "escalation line(s)",
            "#### ⚠️ Escalations\n\n",
            escalated.iter().map(|c| escalation_line(c)).collect(),
        ),
        (
            "revocation line(s)",
            "#### Revocations and deletions\n\n",
            removals
                .iter()
                .map(|c| removal_line(c, plan.created_at))
                .collect(),
        ),
        (
            "console step(s)",
            "#### Console steps (by hand, at a terminal)\n\n",
            plan.console_steps.iter().map(console_step).collect(),
        ),
        (
            "warning(s)",
            "#### ⚠️ Warnings\n\n",
            plan.warnings.iter().map(note_line).collect(),
        ),
        (
            "key detail(s)",
            "#### Details\n\n",
            detailed
                .iter()
                .map(|c| details(c, plan.created_at))
                .collect(),
        ),
        (
            "note(s)",
            "#### Notes\n\n",
            plan.notes.iter().map(note_line).collect(),
        ),
    ]
}

/// The body that fits after a head of `used` characters, and how many items of which list
/// were cut. Each list gets a share of what is left, so a flood of escalations cannot hide
/// every revocation or expiry warning; details and notes get the rest.
fn fit(
    mut used: usize,
    sections: &[Section],
    budget: usize,
) -> (String, Vec<(usize, &'static str)>) {
    let limit = budget.saturating_sub(RESERVE);
    let shares = [(1, 2), (2, 3), (2, 3), (2, 3), (1, 1), (1, 1)];
    let mut body = String::new();
    let mut cut = Vec::new();
    for ((what, title, items), (num, den)) in sections.iter().zip(shares) {
        if items.is_empty() {
            continue;
        }
        let cap = used + limit.saturating_sub(used) * num / den;
        let mut left = 0usize;
        let mut section = String::new();
        let mut section_len = title.chars().count() + 1;
        for item in items {
            let n = item.chars().count();
            if left > 0 || used + section_len + n > cap {
                left += 1;
                continue;
            }
            section.push_str(item);
            section_len += n;
        }
        if !section.is_empty() {
            body.push_str(title);
            body.push_str(&section);
            body.push('\n');
            used += section_len;
        }
        if left > 0 {
            cut.push((left, *what));
        }
    }
    (body, cut)
}

fn console_step(s: &crate::plan::ConsoleStep) -> String {
    let mut out = format!(
        "- {} **{}**{}\n",
        code(&format!("{}/{}", s.store, s.key)),
        s.action.as_str(),
        if s.begun {
            " (begun: made in the console, value not yet pasted)"
        } else {
            ""
        }
    );
    for (i, l) in s.steps.iter().enumerate() {
        let _ = writeln!(out, "  {}. {}", i + 1, inline(l));
    }
    out
}

fn escalation_line(c: &Change) -> String {
    let list: Vec<String> = c
        .escalations
        .iter()
        .map(|e| inline(&e.to_string()))
        .collect();
    format!(
        "- {} ({}): {}\n",
        code(&key_ref(c)),
        c.action.as_str(),
        list.join("; ")
    )
}

/// ` · last used ...` after a change that takes a key away, when its usage was read.
fn last_used(c: &Change, now: DateTime<Utc>) -> String {
    c.last_used
        .as_ref()
        .map(|u| format!(" · {}", inline(&crate::unused::describe(u, now))))
        .unwrap_or_default()
}

fn removal_line(c: &Change, now: DateTime<Utc>) -> String {
    format!(
        "- {} {} — {}{}{}\n",
        code(&format!("{} {}", c.action.symbol(), key_ref(c))),
        verb(c.action),
        inline(&c.reasons.join("; ")),
        if c.protected { " (protected)" } else { "" },
        last_used(c, now)
    )
}

fn details(c: &Change, now: DateTime<Utc>) -> String {
    let mut s = String::new();
    let flag = if c.escalations.is_empty() {
        ""
    } else {
        "⚠️ "
    };
    let _ = writeln!(
        s,
        "<details><summary>{flag}{} {} — {}</summary>\n",
        code(&format!("{} {}", c.action.symbol(), key_ref(c))),
        inline(verb(c.action)),
        inline(&c.reasons.join("; "))
    );
    if let Some(id) = &c.key_id {
        let _ = writeln!(s, "- key id {}", code(id));
    }
    if let Some(u) = &c.last_used {
        let _ = writeln!(s, "- {}", inline(&crate::unused::describe(u, now)));
    }
    let _ = writeln!(
        s,
        "- owner {} · environment {}",
        code(&c.owner),
        inline(&c.environment)
    );
    if !c.requested_by.is_empty() {
        let _ = writeln!(s, "- requested by {}", inline(&c.requested_by.join(", ")));
    } else if c.touched == Some(false) {
        s.push_str("- not edited by this change (the live store differs from the spec)\n");
    }
    for e in &c.escalations {
        let _ = writeln!(s, "- ⚠️ escalation: {}", inline(&e.to_string()));
    }
    if !c.deliver_to.is_empty() {
        let _ = writeln!(
            s,
            "- new secret delivered to: {}",
            inline(&c.deliver_to.join(", "))
        );
    }
    if let Some(g) = &c.grace {
        let _ = writeln!(s, "- {}", inline(&super::text::grace_line(g)));
    }
    if !c.fields.is_empty() {
        s.push_str("\n```diff\n");
        for f in &c.fields {
            let forces = if f.forces_replacement {
                "   # forces replacement"
            } else {
                ""
            };
            if let Some(b) = &f.before
                && f.after.as_ref() != Some(b)
            {
                let _ = writeln!(s, "- {} = {}", clean(&f.field), clean(b));
            }
            if let Some(a) = &f.after {
                let _ = writeln!(s, "+ {} = {}{forces}", clean(&f.field), clean(a));
            } else if f.before.is_none() {
                let _ = writeln!(s, "! {}{forces}", clean(&f.field));
            }
        }
        s.push_str("```\n");
    }
    if c.unchanged_fields > 0 && !matches!(c.action, Action::Create | Action::Replace) {
        let _ = writeln!(s, "\n{} unchanged field(s) not shown.", c.unchanged_fields);
    }
    s.push_str("\n</details>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::Escalation;
    use crate::plan::sample_plan;

    #[test]
    fn the_sample_plan_in_markdown() {
        let md = markdown(&sample_plan());
        assert!(md.starts_with(MARKER));
        insta::assert_snapshot!(md);
    }

    #[test]
    fn escalations_come_first_and_spec_text_cannot_inject_markup() {
        let md = markdown(&sample_plan());
        let esc = md.find("#### ⚠️ Escalations").unwrap();
        let rev = md.find("#### Revocations").unwrap();
        let det = md.find("#### Details").unwrap();
        assert!(esc < rev && rev < det, "{md}");
        // The first folded detail is the escalated key.
        let first = &md[det..];
        let first = &first[..first.find("</details>").unwrap()];
        assert!(first.contains("ill-lookup"), "{first}");
        // The purpose carried `|`, `<`, a mention, a newline and a code fence: inside the
        // fenced diff it stays on one line; outside fences nothing is raw.
        assert!(!md.contains("\n```injected"));
        let outside: String = md.split("```").step_by(2).collect::<Vec<_>>().join("");
        assert!(!outside.contains("<lookup>"), "{outside}");
        assert!(!outside.contains("@ill-team"), "{outside}");
        assert_eq!(md.matches(MARKER).count(), 1);
        assert!(md.contains("requested by Jane Requester"));
    }

    /// 5,000 changed keys (creates, escalating updates, revokes) stay within the budget:
    /// the summary stays whole and the cut is counted.
    #[test]
    fn five_thousand_changes_stay_under_the_budget() {
        let mut plan = sample_plan();
        let template = plan.actions.clone();
        plan.actions.clear();
        for i in 0..5_000 {
            let mut c = template[i % template.len()].clone();
            c.name = format!("{}-{i:04}", c.name);
            if i % 5 == 1 {
                c.escalations.push(Escalation::NewArea {
                    area: "users".into(),
                });
            }
            plan.actions.push(c);
        }
        let md = markdown(&plan);
        let chars = md.chars().count();
        assert!(chars <= BUDGET, "{chars} characters");
        assert!(
            chars > BUDGET / 2,
            "the budget is used, not wasted: {chars}"
        );
        assert!(md.starts_with(MARKER));
        assert!(md.contains("| <code>prod</code> | production |"));
        let note = md
            .lines()
            .find(|l| l.contains("Cut to stay under"))
            .expect("a cut note");
        let cut = |what: &str| -> usize {
            note.split([':', ','])
                .find(|p| p.contains(what))
                .and_then(|p| p.split_whitespace().next().and_then(|n| n.parse().ok()))
                .unwrap_or(0)
        };
        // Everything left out is counted: shown + cut = all.
        let shown_details = md.matches("<details>").count();
        assert!(shown_details > 0, "some details stay");
        assert_eq!(shown_details + cut("key detail(s)"), 5_000, "{note}");
        let escalated = plan
            .actions
            .iter()
            .filter(|c| !c.escalations.is_empty())
            .count();
        let esc_section = &md[md.find("#### ⚠️ Escalations").unwrap()..];
        let esc_section = &esc_section[..esc_section.find("\n\n####").unwrap()];
        let shown_esc = esc_section.lines().filter(|l| l.starts_with("- ")).count();
        assert_eq!(shown_esc + cut("escalation line(s)"), escalated, "{note}");
        assert!(
            md.contains("#### Revocations and deletions"),
            "revocations are not crowded out"
        );
    }

    #[test]
    fn a_tiny_budget_keeps_the_summary() {
        let md = markdown_with_budget(&sample_plan(), 3_000);
        assert!(md.chars().count() <= 3_000);
        assert!(md.contains("| Store |"));
        assert!(md.contains("Cut to stay under 3000 characters"), "{md}");
    }
}
