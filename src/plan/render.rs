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

fn verb(a: Action) -> &'static str {
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
        c.reasons.join("; ")
    ));
    if let Some(id) = &c.key_id {
        out.push_str(&format!("  #   key id {id}\n"));
    }
    out.push_str(&format!(
        "  {} key \"{}\" {{\n",
        st.action(c.action, sym),
        c.name
    ));
    let width = c.fields.iter().map(|f| f.field.len()).max().unwrap_or(0);
    for f in &c.fields {
        let (mark, value) = match (&f.before, &f.after) {
            (None, Some(a)) => ("+", a.clone()),
            (Some(b), None) => ("-", b.clone()),
            (Some(b), Some(a)) => ("~", format!("{b} -> {a}")),
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
        out.push_str(&format!("    {} {e}\n", st.warn("⚠ escalation:")));
    }
    out.push('\n');
}

/// Terraform-like text plan.
pub fn text(plan: &Plan, st: Style) -> String {
    let mut out = String::new();
    if plan.filtered_out > 0 {
        out.push_str(&st.warn(&format!(
            "Warning: --only is in effect; {} change(s) outside the filter are NOT shown and will NOT be applied.\n\n",
            plan.filtered_out
        )));
    }
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
    if !plan.warnings.is_empty() {
        out.push_str(&format!("\n{}\n", st.warn("Warnings:")));
        for n in &plan.warnings {
            out.push_str(&format!("  ⚠ {}/{}: {}\n", n.store, n.name, n.message));
        }
    }
    if !plan.notes.is_empty() {
        out.push_str("\nNotes:\n");
        for n in &plan.notes {
            out.push_str(&format!("  - {}/{}: {}\n", n.store, n.name, n.message));
        }
    }
    out
}

/// The JSON plan (stable; `format_version`).
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
