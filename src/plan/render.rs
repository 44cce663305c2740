//! Plan rendering: Terraform-like text (optionally coloured), JSON and Markdown.
//! Pure functions from a `Plan` to a `String`; must not decide what changes.

use super::Plan;
pub use super::text::{clean, summary_line, verb};
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

fn render_change(out: &mut String, c: &Change, st: Style, now: chrono::DateTime<chrono::Utc>) {
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
    if let Some(u) = &c.last_used {
        out.push_str(&format!("  #   {}\n", crate::unused::describe(u, now)));
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
    if let Some(g) = &c.grace {
        out.push_str(&format!("        {}\n", super::text::grace_line(g)));
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
    let moved = plan.base.iter().flat_map(|b| &b.connection_changes);
    for c in moved {
        out.push_str(&st.warn(&format!("Warning: {}.", clean(&c.describe()))));
        out.push_str("\n\n");
    }
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

/// Terraform-like text plan; secret-shaped text (from a live store: a label edited by hand)
/// is redacted.
pub fn text(plan: &Plan, st: Style) -> String {
    crate::leak::redact(&text_unredacted(plan, st))
}

fn text_unredacted(plan: &Plan, st: Style) -> String {
    let mut out = warnings(plan, st);
    out.push_str(&revision_lines(plan));
    out.push('\n');
    if !plan.settings.is_empty() {
        out.push_str("Store settings:\n");
        for s in &plan.settings {
            out.push_str(&format!(
                "  {} {}\n",
                st.action(Action::Update, "~"),
                clean(&s.to_string())
            ));
        }
        out.push('\n');
    }
    if plan.actions.is_empty() {
        out.push_str(&st.bold(&summary_line(plan)));
        out.push('\n');
    } else {
        out.push_str("keyward will perform the following actions:\n\n");
        for c in &plan.actions {
            render_change(&mut out, c, st, plan.created_at);
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
            match n.subject() {
                Some(key) => out.push_str(&format!("  - {key}: {}\n", clean(&n.message))),
                None => out.push_str(&format!("  - {}\n", clean(&n.message))),
            }
        }
    }
    if !plan.console_steps.is_empty() {
        out.push_str(&console_steps(plan));
    }
    out
}

/// The changes an admin does by hand in a vendor console, one line each (the checklist
/// shows the full steps).
fn console_steps(plan: &Plan) -> String {
    let mut out = String::from("\nConsole steps (by hand, in the vendor console):\n");
    let mut stores: Vec<&str> = Vec::new();
    for s in &plan.console_steps {
        let begun = if s.begun {
            " (begun: made in the console, value not yet pasted)"
        } else {
            ""
        };
        out.push_str(&format!(
            "  - {}/{}: {}{begun}\n",
            clean(&s.store),
            clean(&s.key),
            s.action.as_str()
        ));
        if !stores.contains(&s.store.as_str()) {
            stores.push(&s.store);
        }
    }
    for st in stores {
        out.push_str(&format!(
            "  run `keyward apply --store {}` at a terminal to be guided through them\n",
            clean(st)
        ));
    }
    out
}

/// The JSON plan (stable; `format_version`; documented by `schemas/plan.schema.json`),
/// secret-shaped strings redacted.
pub fn json(plan: &Plan) -> String {
    crate::leak::to_json_pretty(plan).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The Markdown plan for a pull-request comment (see `plan::markdown`), redacted.
pub fn markdown(plan: &Plan) -> String {
    crate::leak::redact(&super::markdown::markdown(plan))
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

    /// A plan made by the diff with a key about to expire (not renewed) and a person who left
    /// people.yaml (a recipient of one key, the owner of another): the PR comment says both,
    /// as the text plan does.
    #[test]
    fn expiry_warnings_and_access_removed_appear_in_the_markdown() {
        use crate::diff::tests::{key, live_from, now, spec};
        use crate::spec::Expiry;
        use std::collections::BTreeMap;
        let ill = key("prod", "ill-lookup", &["bibs:read"]);
        let mut soon = key("prod", "expiring-soon", &["users:read"]);
        soon.expiry = Expiry::At(now() + chrono::Duration::days(5));
        let reports = key("prod", "reports", &["analytics:read"]);
        let s = spec(vec![ill.clone(), soon.clone(), reports.clone()]);
        let t0 = now() - chrono::Duration::days(10);
        let mut l_ill = live_from(&s, &ill, "ILLID0000000001", t0);
        l_ill
            .recipients
            .insert("mleft".into(), "sha256:0011223344556677".into());
        let l_ill = l_ill.recorded();
        let mut l_rep = live_from(&s, &reports, "REPID0000000002", t0);
        l_rep.owner = "mleft".into();
        let l_rep = l_rep.recorded();
        let l_soon = live_from(&s, &soon, "SOONID000000003", t0);
        let observed: BTreeMap<String, Vec<crate::model::LiveKey>> =
            [("prod".to_string(), vec![l_ill, l_rep, l_soon])].into();
        let plan = crate::plan::test_plan(crate::diff::diff(&s, &observed, now()), &observed, &s);
        assert_eq!(plan.access_removed.len(), 1, "{:?}", plan.access_removed);
        assert!(!plan.warnings.is_empty());
        let md = markdown(&plan);
        let text = text(&plan, Style { color: false });
        // The same line as the text plan, in the head (which is never cut).
        let line = plan.access_removed[0].to_string();
        assert_eq!(
            line,
            "access removed for mleft: 1 key(s) they could read get a new secret, \
             1 key(s) they owned move to a new owner"
        );
        assert!(text.contains(&line), "{text}");
        let summary_end = md.find("| Store |").expect("summary table");
        assert!(md[..summary_end].contains(&format!("> **{line}**")), "{md}");
        assert!(
            md[..summary_end].contains("1 key(s) expired or expire soon"),
            "{md}"
        );
        // Each warning the text plan shows is listed, before the details.
        let w = md.find("#### ⚠️ Warnings").expect("warnings section");
        assert!(w < md.find("#### Details").expect("details"), "{md}");
        for n in &plan.warnings {
            assert!(text.contains(&n.message), "{text}");
            assert!(
                md.contains(&crate::plan::markdown::inline(&n.message)),
                "{md}"
            );
        }
        insta::assert_snapshot!(md);
    }
}
