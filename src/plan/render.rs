//! Plan rendering: Terraform-like text (optionally coloured), JSON and Markdown.
//! Pure functions from a `Plan` to a `String`; must not decide what changes.

use super::Plan;
use crate::diff::{Action, Change};

/// ANSI styling, switched off for NO_COLOR and non-terminals.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn action(&self, a: Action, s: &str) -> String {
        let code = match a {
            Action::Create => "32",
            Action::Update | Action::Disable => "33",
            Action::Rotate => "36",
            Action::Replace => "35",
            Action::Revoke | Action::Delete => "31",
        };
        self.paint(code, s)
    }
    fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    fn warn(&self, s: &str) -> String {
        self.paint("1;33", s)
    }
}

/// What happens to a key, in words.
pub fn verb(a: Action) -> &'static str {
    match a {
        Action::Create => "will be created",
        Action::Update => "will be updated in place",
        Action::Rotate => "will be rotated (same id, new secret)",
        Action::Replace => "must be replaced",
        Action::Disable => "will be disabled",
        Action::Revoke => "will be revoked",
        Action::Delete => "will be deleted",
    }
}

/// Make a spec-supplied value safe to print on one line: newlines become `⏎`, tabs spaces,
/// other control characters (terminal escapes) and bidi overrides the replacement character.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' => '⏎',
            '\t' => ' ',
            c if c.is_control() => '\u{FFFD}',
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' => {
                '\u{FFFD}'
            }
            c => c,
        })
        .collect()
}

/// The one-line summary, Terraform style.
pub fn summary_line(plan: &Plan) -> String {
    let s = plan.summary();
    if s.total() == 0 {
        return "No changes. The live stores match the spec.".into();
    }
    format!(
        "Plan: {} to create, {} to update, {} to rotate, {} to replace, {} to disable, {} to revoke, {} to delete.",
        s.get(Action::Create),
        s.get(Action::Update),
        s.get(Action::Rotate),
        s.get(Action::Replace),
        s.get(Action::Disable),
        s.get(Action::Revoke),
        s.get(Action::Delete)
    )
}

fn render_change(out: &mut String, c: &Change, st: Style) {
    let sym = c.action.symbol();
    out.push_str(&format!(
        "  # {}/{} {} ({})\n",
        c.store,
        c.name,
        verb(c.action),
        clean(&c.reasons.join("; "))
    ));
    if let Some(id) = &c.key_id {
        out.push_str(&format!("  #   key id {id}\n"));
    }
    if !c.requested_by.is_empty() {
        out.push_str(&format!(
            "  #   requested by {}\n",
            clean(&c.requested_by.join(", "))
        ));
    } else if c.touched == Some(false) {
        out.push_str("  #   not edited by this change (the live store differs from the spec)\n");
    }
    out.push_str(&format!(
        "  {} key \"{}\" {{\n",
        st.action(c.action, sym),
        c.name
    ));
    let width = c.fields.iter().map(|f| f.field.len()).max().unwrap_or(0);
    for f in &c.fields {
        let (mark, value) = match (&f.before, &f.after) {
            (None, Some(a)) => ("+", clean(a)),
            (Some(b), None) => ("-", clean(b)),
            (Some(b), Some(a)) => ("~", format!("{} -> {}", clean(b), clean(a))),
            (None, None) => ("~", String::new()),
        };
        let forces = if f.forces_replacement {
            st.action(Action::Replace, " # forces replacement")
        } else {
            String::new()
        };
        out.push_str(&format!(
            "      {} {:width$} = {}{}\n",
            st.action(c.action, mark),
            f.field,
            value,
            forces,
            width = width
        ));
    }
    if c.unchanged_fields > 0
        && matches!(c.action, Action::Update | Action::Rotate | Action::Disable)
    {
        out.push_str(&format!(
            "        ({} unchanged fields hidden)\n",
            c.unchanged_fields
        ));
    }
    if !c.deliver_to.is_empty() {
        out.push_str(&format!(
            "        secret delivered to: {}\n",
            c.deliver_to.join(", ")
        ));
    }
    out.push_str("    }\n");
    for e in &c.escalations {
        out.push_str(&format!(
            "    {} {}\n",
            st.warn("⚠ escalation:"),
            clean(&e.to_string())
        ));
    }
    out.push('\n');
}

/// Where the plan's desired state comes from (and, with `--base`, who asks).
fn revision_lines(plan: &Plan) -> String {
    let mut out = format!("Desired revision: {}", plan.desired_revision.label());
    if let Some(r) = &plan.desired_revision.rev {
        out.push_str(&format!(" (--rev {})", clean(r)));
    }
    out.push('\n');
    if let Some(b) = &plan.base {
        out.push_str(&format!(
            "Change under review: {} commit(s) since {} ({}), {} key(s) edited\n",
            b.commits,
            clean(&b.rev),
            super::short(&b.commit),
            b.touched_keys.len()
        ));
        if !b.requesters.is_empty() {
            let names: Vec<String> = b.requesters.iter().map(|r| clean(&r.to_string())).collect();
            out.push_str(&format!("Requested by: {}\n", names.join(", ")));
        }
    }
    out
}

/// The warnings shown above a plan: `--only` in effect, guards apply will enforce.
fn warnings(plan: &Plan, st: Style) -> String {
    let mut out = String::new();
    if plan.filtered_out > 0 {
        out.push_str(&st.warn(&format!(
            "Warning: --only is in effect; {} change(s) outside the filter are NOT shown and will NOT be applied.",
            plan.filtered_out
        )));
        out.push_str("\n\n");
    }
    if !plan.guards.is_empty() {
        out.push_str(
            &st.warn("Warning: apply will refuse this plan without --force (safety thresholds):"),
        );
        out.push('\n');
        for g in &plan.guards {
            out.push_str(&format!("  - {}\n", g.message));
        }
        out.push('\n');
    }
    out
}

/// Terraform-like text plan.
pub fn text(plan: &Plan, st: Style) -> String {
    let mut out = warnings(plan, st);
    out.push_str(&revision_lines(plan));
    out.push('\n');
    if plan.actions.is_empty() {
        out.push_str(&st.bold(&summary_line(plan)));
        out.push('\n');
    } else {
        out.push_str("keyward will perform the following actions:\n\n");
        for c in &plan.actions {
            render_change(&mut out, c, st);
        }
        out.push_str(&st.bold(&summary_line(plan)));
        out.push('\n');
        let esc: usize = plan.actions.iter().map(|c| c.escalations.len()).sum();
        if esc > 0 {
            out.push_str(&st.warn(&format!("{esc} escalation(s) need a reviewer's attention.")));
            out.push('\n');
        }
    }
    for a in &plan.access_removed {
        out.push_str(&format!("{}\n", st.warn(&a.to_string())));
    }
    if !plan.warnings.is_empty() {
        out.push_str(&format!("\n{}\n", st.warn("Warnings:")));
        for n in &plan.warnings {
            out.push_str(&format!("  ⚠ {}/{}: {}\n", n.store, n.name, n.message));
        }
    }
    if !plan.notes.is_empty() {
        out.push_str("\nNotes:\n");
        for n in &plan.notes {
            out.push_str(&format!(
                "  - {}/{}: {}\n",
                n.store,
                n.name,
                clean(&n.message)
            ));
        }
    }
    out
}

/// The JSON plan (stable; `format_version`; documented by `schemas/plan.schema.json`).
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The Markdown plan for a pull-request comment (see `plan::markdown`).
pub fn markdown(plan: &Plan) -> String {
    super::markdown::markdown(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::sample_plan;

    #[test]
    fn the_sample_plan_as_text() {
        let t = text(&sample_plan(), Style { color: false });
        insta::assert_snapshot!(t);
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let mut p = sample_plan();
        p.actions[0].reasons = vec!["evil\x1b[2J\u{202E}".into()];
        let t = text(&p, Style { color: false });
        assert!(!t.contains('\x1b') && !t.contains('\u{202E}'));
    }

    #[test]
    fn every_format_flags_escalations() {
        let p = sample_plan();
        assert!(text(&p, Style { color: false }).contains("⚠ escalation: bibs: read -> write"));
        let j: serde_json::Value = serde_json::from_str(&json(&p)).unwrap();
        let esc = j["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "ill-lookup")
            .unwrap()["escalations"]
            .clone();
        assert_eq!(esc[0]["kind"], "level_raised", "{esc}");
        assert!(j["summary"]["escalations"].as_u64().unwrap() >= 2);
        assert!(markdown(&p).contains("bibs: read -&gt; write"));
    }
}
